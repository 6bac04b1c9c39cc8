"""IMAP polling against a real Dovecot (Debian's dovecot-imapd), run here as a
private instance on 127.0.0.1 and a free port with a generated config, a
passwd-file user and a temporary Maildir:

- a batch of messages becomes tickets, each flagged \\Seen (after its commit),
  the UID cursor and UIDVALIDITY kept in email_mailbox;
- an unparseable message is quarantined with an event and the poller moves on;
- kill -9 of kefud in the middle of a 500-message batch, restart: exactly 500
  messages ingested, none twice, all flagged.
A Dovecot that cannot start fails the test (never a skip).
"""

import os
import signal
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefu_api  # noqa: E402
import kefutest as kt  # noqa: E402
from dovecot_kit import Dovecot, msg  # noqa: E402


class ImapTest(unittest.TestCase):
    def setUp(self):
        self.dov = Dovecot(self.addCleanup).start()
        secrets = os.path.join(kt.mktemp_dir("secrets-", self.addCleanup), "secrets")
        with open(secrets, "w") as f:
            f.write("# test\nimap_support = imap-secret\n")
        os.chmod(secrets, 0o600)
        self.env = {"KEFU_SECRETS_FILE": secrets, "KEFU_SHUTDOWN_TIMEOUT": "10",
                    "KEFU_OUTBOX_PERIOD_MS": "60000"}
        self.w = kefu_api.World(self.addCleanup, env=self.env)
        self.w.db.query(
            "INSERT INTO email_mailbox (name, address, imap_url, imap_user, imap_secret_ref, "
            "poll_interval) VALUES ('support', 'support@kefu.test', 'imap://127.0.0.1:%d/INBOX', "
            "'support', 'imap_support', 1)" % self.dov.port)
        self.w.db.query("INSERT INTO channel_account (channel, account, default_queue_id) "
                        "VALUES ('email', 'support', %d)" % self.w.q1)

    def ingested(self, tag):
        return self.w.count("message", "external_id LIKE '%s-%%'" % tag)

    def wait_ingested(self, tag, n, timeout=120):
        ok = kt.wait_for(lambda: self.ingested(tag) >= n, timeout, 0.2)
        self.assertTrue(ok, "only %d of %d ingested\n%s\n%s"
                        % (self.ingested(tag), n, self.w.k.tail(), self.dov.log()))

    def test_poll_flags_and_quarantine(self):
        for i in range(20):
            self.dov.deliver(msg(i, "batch"))
        self.dov.deliver(b"this is not a mail message at all\r\n")  # uid 21: poison
        self.dov.deliver(msg(99, "after"))                            # uid 22
        self.wait_ingested("batch", 20)
        self.wait_ingested("after", 1)
        self.assertEqual(self.w.count("email_quarantine", "source = 'imap'"), 1)
        self.assertGreaterEqual(self.w.count("event", "kind = 'email.quarantined'"), 1)
        flags = kt.wait_for(lambda: (lambda f: f if len(f) == 22 and
                                     all("\\Seen" in v for v in f.values()) else None)(
            self.dov.flags()), 30, 0.2)
        self.assertTrue(flags, self.dov.flags())
        row = self.w.db.query("SELECT imap_last_uid, imap_uidvalidity IS NOT NULL, "
                              "COALESCE(imap_error, '') FROM email_mailbox WHERE name = 'support'")[0]
        self.assertEqual(row, ("22", "1", ""))
        # senders became customers; subjects are the tickets'
        self.assertEqual(self.w.count("ticket", "subject LIKE 'batch %'"), 20)
        self.assertEqual(self.w.stop(), 0, self.w.k.tail())

    def test_kill9_mid_batch(self):
        total = 500
        for i in range(total):
            self.dov.deliver(msg(i, "crash"))
        ok = kt.wait_for(lambda: self.ingested("crash") >= 5, 120, 0.05)
        self.assertTrue(ok, self.w.k.tail())
        self.w.k.signal(signal.SIGKILL)
        self.w.k.wait(30)
        first = self.ingested("crash")
        self.w.k = kt.Kefud(self.w.db, env=self.env, register=self.addCleanup).start()
        self.wait_ingested("crash", total, timeout=240)
        time.sleep(1.5)  # a poll or two more: still nothing doubled
        self.assertEqual(self.ingested("crash"), total)
        self.assertEqual(int(self.w.db.scalar(
            "SELECT COUNT(DISTINCT external_id) FROM message WHERE external_id LIKE 'crash-%'")), total)
        flags = kt.wait_for(lambda: (lambda f: f if len(f) == total and
                                     all("\\Seen" in v for v in f.values()) else None)(
            self.dov.flags()), 60, 0.5)
        self.assertTrue(flags, "not all flagged")
        sys.stderr.write("kill -9 after %d of %d messages\n" % (first, total))
        self.assertEqual(self.w.k.stop(), 0, self.w.k.tail())


if __name__ == "__main__":
    kt.main()
