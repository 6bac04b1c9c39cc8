"""A real SMTP server for the email tests: Debian's python3-aiosmtpd, on
127.0.0.1 and a free port, in a thread of the test process.  It records every
MAIL command and every message it accepts, can be told to answer the next
transactions with 4xx/5xx, and optionally offers (and requires) STARTTLS and
AUTH.

    peer = SmtpPeer().start();  peer.fail_next("451 4.3.0 try later")
    peer = SmtpPeer(tls=(cert, key), auth=("user", "password")).start()
    ...
    peer.messages -> [(mail_from, [rcpt], raw bytes, over TLS)]
    peer.mails    -> [(mail_from, over TLS)]     every MAIL command
    peer.logins   -> [(mechanism, login, accepted, over TLS)]
    peer.stop()

A server that cannot start raises AssertionError (tests fail, never skip).
"""

import logging
import os
import socket
import ssl
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest as kt  # noqa: E402

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:
    # Debian's python3-aiosmtpd, when python3 is not Debian's own (pyenv, venv)
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword
    except ImportError as e:
        Controller = None
        IMPORT_ERROR = "aiosmtpd missing (apt-get install python3-aiosmtpd): %s" % e

logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # refused handshakes are expected


class SmtpPeer:
    def __init__(self, tls=None, auth=None):
        """tls=(cert, key): STARTTLS offered and required before MAIL; auth=(user,
        password): AUTH required (after STARTTLS when tls is set)."""
        self.tls = tls
        self.auth = auth
        self.messages = []
        self.mails = []
        self.logins = []
        self.replies = []
        self.lock = threading.Lock()
        self.ctl = None

    def fail_next(self, *replies):
        """Answer the next transactions' end of data with these replies, in turn."""
        with self.lock:
            self.replies.extend(replies)

    def _next_reply(self):
        with self.lock:
            return self.replies.pop(0) if self.replies else "250 2.0.0 queued"

    # -- aiosmtpd handler hooks

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails.append((address, session.ssl is not None))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self._next_reply()
        if reply.startswith("2"):
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  envelope.original_content or envelope.content,
                                  session.ssl is not None))
        return reply

    def _authenticate(self, server, session, envelope, mechanism, data):
        ok = (isinstance(data, LoginPassword) and
              (data.login.decode(), data.password.decode()) == self.auth)
        self.logins.append((mechanism, data.login.decode() if isinstance(data, LoginPassword)
                            else None, ok, session.ssl is not None))
        return AuthResult(success=ok, handled=False)

    # -- life

    def start(self):
        if Controller is None:
            raise AssertionError(IMPORT_ERROR)
        ctx = None
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
        extra = {}
        if self.auth:
            extra = dict(authenticator=self._authenticate, auth_required=True,
                         auth_require_tls=ctx is not None)
        self.port = kt.free_port()
        self.ctl = Controller(self, hostname="127.0.0.1", port=self.port, tls_context=ctx,
                              require_starttls=ctx is not None, server_hostname="smtp.kefu.test",
                              **extra)
        try:
            self.ctl.start()
        except Exception as e:  # noqa: BLE001 - any failure to start fails the test
            raise AssertionError("aiosmtpd did not start on 127.0.0.1:%d: %r" % (self.port, e))
        # prove it answers before anyone relies on it
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        greeting = s.recv(100)
        s.sendall(b"QUIT\r\n")
        s.recv(100)
        s.close()
        if not greeting.startswith(b"220"):
            raise AssertionError("SMTP peer did not greet: %r" % greeting)
        return self

    def stop(self):
        if self.ctl is not None:
            self.ctl.stop()
            self.ctl = None
