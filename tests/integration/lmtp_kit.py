"""A minimal LMTP client for the tests (RFC 2033 over a raw socket), so each
test controls pipelining and timing itself:

    c = Lmtp(port);  code, lines = c.reply();  c.send("LHLO x\\r\\n")
    c.cmd("MAIL FROM:<a@b>") -> code;  c.close()
"""

import socket


class Lmtp:
    def __init__(self, port, timeout=60):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.s.makefile("rb")

    def reply(self):
        """One (possibly multi-line) reply: (code, [lines])."""
        lines = []
        while True:
            l = self.f.readline().decode()
            if not l:
                raise AssertionError("LMTP connection closed; got %r" % lines)
            lines.append(l.rstrip("\r\n"))
            if len(l) < 4 or l[3] != "-":
                return int(l[:3]), lines

    def send(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())

    def cmd(self, line):
        """Send one command line; its reply code."""
        self.send(line.encode() + b"\r\n")
        return self.reply()[0]

    def close(self):
        try:
            self.f.close()
            self.s.close()
        except OSError:
            pass
