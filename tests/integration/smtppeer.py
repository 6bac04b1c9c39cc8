"""A real SMTP server for the email tests, on 127.0.0.1 and a free port, in a
thread of the test process: it speaks RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA
with dot-unstuffing, RSET, NOOP, QUIT), records every message it accepts, and
can be told to answer the next transactions with 4xx/5xx.

    peer = SmtpPeer().start();  peer.fail_next("451 4.3.0 try later")
    ...;  peer.messages  -> [(mail_from, [rcpt], raw bytes)];  peer.stop()
"""

import socket
import socketserver
import threading


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30
    # Replies to pipelined commands go out at once, as a real MTA's do: with
    # Nagle on, the second reply waits for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def send(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        peer = self.server.peer
        self.send("220 smtppeer ESMTP")
        mail_from, rcpts = None, []
        while True:
            line = self.rfile.readline(10000)
            if not line:
                return
            cmd = line.decode("latin-1").rstrip("\r\n")
            up = cmd.upper()
            peer.commands.append(cmd)
            if up.startswith("EHLO"):
                self.wfile.write(b"250-smtppeer\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 SIZE 50000000\r\n")
                self.wfile.flush()
            elif up.startswith("HELO"):
                self.send("250 smtppeer")
            elif up.startswith("MAIL FROM:"):
                mail_from, rcpts = cmd[10:].strip().split(" ")[0].strip("<>"), []
                self.send("250 2.1.0 OK")
            elif up.startswith("RCPT TO:"):
                rcpts.append(cmd[8:].strip().split(" ")[0].strip("<>"))
                self.send("250 2.1.5 OK")
            elif up == "DATA":
                self.send("354 go ahead")
                data = []
                while True:
                    l = self.rfile.readline(1 << 20)
                    if not l or l in (b".\r\n", b".\n"):
                        break
                    if l.startswith(b".."):
                        l = l[1:]
                    data.append(l)
                reply = peer._next_reply()
                if reply.startswith("2"):
                    peer.messages.append((mail_from, rcpts, b"".join(data)))
                self.send(reply)
            elif up == "RSET":
                mail_from, rcpts = None, []
                self.send("250 2.0.0 OK")
            elif up == "NOOP":
                self.send("250 2.0.0 OK")
            elif up == "QUIT":
                self.send("221 2.0.0 bye")
                return
            else:
                self.send("502 5.5.2 unknown")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SmtpPeer:
    def __init__(self):
        self.messages = []
        self.commands = []
        self.replies = []
        self.lock = threading.Lock()
        self.server = None

    def _next_reply(self):
        with self.lock:
            return self.replies.pop(0) if self.replies else "250 2.0.0 queued"

    def fail_next(self, *replies):
        with self.lock:
            self.replies.extend(replies)

    def start(self):
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.peer = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        # prove it answers before anyone relies on it
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if not s.recv(100).startswith(b"220"):
            raise AssertionError("SMTP peer did not greet")
        s.sendall(b"QUIT\r\n")
        s.recv(100)
        s.close()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
