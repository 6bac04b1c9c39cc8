"""Outbox lanes: a hung peer holds up its own channel only.

A mail relay that accepts the connection and then says nothing keeps the
"email" lane's delivery waiting (smtp_timeout is long here); meanwhile a row
of the "debug" channel is sent by its own lane on another job thread, and the
mail row is still being delivered when it is.  Once the relay hangs up, the
mail row is retried (never lost).  With one outbox job for every channel (or
one job thread), the debug row would wait for the relay.
"""

import os
import socket
import sys
import threading
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coretest as ct  # noqa: E402
import kefutest as kt  # noqa: E402


class SilentRelay:
    """Accepts SMTP connections and never greets, until release()."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.done.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def release(self):
        self.done.set()
        for c in self.conns:
            c.close()
        self.sock.close()


def status(db, oid):
    return db.scalar("SELECT status FROM outbox WHERE id = %d" % oid)


class OutboxLanesTest(unittest.TestCase):
    def test_hung_relay_holds_up_mail_only(self):
        relay = SilentRelay()
        self.addCleanup(relay.release)
        db = kt.fresh_db(self.addCleanup)
        k = kt.Kefud(db, env={"KEFU_SMTP_HOST": "127.0.0.1", "KEFU_SMTP_PORT": str(relay.port),
                              "KEFU_SMTP_TIMEOUT": "120", "KEFU_JOB_THREADS": "2",
                              "KEFU_OUTBOX_PERIOD_MS": "100", "KEFU_OUTBOX_BACKOFF_BASE": "1",
                              "KEFU_OUTBOX_BACKOFF_MAX": "2", "KEFU_OUTBOX_LEASE": "300"},
                     register=self.addCleanup).start()
        db.query("INSERT INTO email_mailbox (name, address) VALUES ('support', 'support@kefu.test')")
        db.query("INSERT INTO outbox (kind, channel, channel_account, target, payload, dedupe_key) "
                 "VALUES ('notification', 'email', 'support', 'cust@example.com', "
                 "'{\"subject\": \"hello\", \"text\": \"x\"}', 'lanes-mail')")
        mail = int(db.scalar("SELECT id FROM outbox WHERE dedupe_key = 'lanes-mail'"))
        # the mail lane is now stuck on the relay
        self.assertTrue(kt.wait_for(lambda: relay.conns and status(db, mail) == "sending", 30, 0.05),
                        (status(db, mail), k.tail()))
        st, _, j = ct.api(k, "POST", "/debug/outbox", body={"mode": "ok"})
        self.assertEqual(st, 201, j)
        self.assertTrue(kt.wait_for(lambda: status(db, j["id"]) == "sent", 30, 0.05),
                        (status(db, j["id"]), k.tail()))
        self.assertEqual(status(db, mail), "sending")  # ...while the mail still waits
        # the relay hangs up: the mail row is retried, not lost
        relay.release()
        row = kt.wait_for(lambda: (lambda r: r if r[0] == "queued" and int(r[1]) >= 1 else None)(
            db.query("SELECT status, attempts, COALESCE(last_error, '') FROM outbox "
                     "WHERE id = %d" % mail)[0]), 30, 0.05)
        self.assertTrue(row, k.tail())
        self.assertIn("SMTP 127.0.0.1:%d" % relay.port, row[2])
        self.assertEqual(k.stop(), 0, k.tail())


if __name__ == "__main__":
    kt.main()
