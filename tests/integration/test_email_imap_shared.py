"""IMAP polling by two kefud instances on one database and one mailbox, with
imap_done_folder set (a private Dovecot, see dovecot_kit.py):

- the lease "imap:<mailbox>" lets one instance poll at a time: across both
  instances' logs every message is fetched exactly once (event=imap-polled
  fetched=N adds up to the batch), and no MOVE ever fails;
- every message becomes a ticket once and is moved, after its commit, to the
  done folder: INBOX ends empty, the folder holds the batch;
- messages delivered while one instance is stopped are taken by the other.
A Dovecot that cannot start fails the test (never a skip).
"""

import os
import re
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefu_api  # noqa: E402
import kefutest as kt  # noqa: E402
from dovecot_kit import Dovecot, msg  # noqa: E402

DONE = "Processed"


class SharedImapTest(unittest.TestCase):
    def setUp(self):
        self.dov = Dovecot(self.addCleanup).start()
        m = self.dov.connect()
        typ, data = m.create(DONE)
        m.logout()
        self.assertEqual(typ, "OK", data)
        secrets = os.path.join(kt.mktemp_dir("secrets-", self.addCleanup), "secrets")
        with open(secrets, "w") as f:
            f.write("imap_support = imap-secret\n")
        os.chmod(secrets, 0o600)
        self.env = {"KEFU_SECRETS_FILE": secrets, "KEFU_SHUTDOWN_TIMEOUT": "10",
                    "KEFU_OUTBOX_PERIOD_MS": "60000", "KEFU_JOB_THREADS": "2"}
        self.w = kefu_api.World(self.addCleanup, env=self.env)
        self.w.db.query(
            "INSERT INTO email_mailbox (name, address, imap_url, imap_user, imap_secret_ref, "
            "imap_done_folder, poll_interval) VALUES ('support', 'support@kefu.test', "
            "'imap://127.0.0.1:%d/INBOX', 'support', 'imap_support', '%s', 1)"
            % (self.dov.port, DONE))
        self.w.db.query("INSERT INTO channel_account (channel, account, default_queue_id) "
                        "VALUES ('email', 'support', %d)" % self.w.q1)
        self.k2 = kt.Kefud(self.w.db, env=self.env, register=self.addCleanup).start()

    def ingested(self, tag):
        return self.w.count("message", "external_id LIKE '%s-%%'" % tag)

    def wait_ingested(self, tag, n, timeout=120):
        ok = kt.wait_for(lambda: self.ingested(tag) >= n, timeout, 0.2)
        self.assertTrue(ok, "only %d of %d ingested\n%s\n%s\n%s"
                        % (self.ingested(tag), n, self.w.k.tail(), self.k2.tail(), self.dov.log()))

    def folder_count(self, folder):
        m = self.dov.connect()
        typ, data = m.select(folder, readonly=True)
        m.logout()
        self.assertEqual(typ, "OK", data)
        return int(data[0])

    @staticmethod
    def fetched(log):
        return sum(int(n) for n in re.findall(r"event=imap-polled mailbox=\"support\" fetched=(\d+)",
                                              log))

    def test_two_instances_one_mailbox(self):
        total = 300
        for i in range(total):
            self.dov.deliver(msg(i, "shared"))
        self.wait_ingested("shared", total)
        ok = kt.wait_for(lambda: self.folder_count("INBOX") == 0, 60, 0.2)
        self.assertTrue(ok, "INBOX still holds %d" % self.folder_count("INBOX"))
        self.assertEqual(self.folder_count(DONE), total)
        self.assertEqual(self.ingested("shared"), total)
        self.assertEqual(self.w.count("ticket", "subject LIKE 'shared %'"), total)
        logs = self.w.k.log() + self.k2.log()
        self.assertEqual(self.fetched(logs), total, "each message fetched exactly once")
        self.assertNotIn("event=imap-flag-failed", logs)
        self.assertEqual(self.w.db.scalar("SELECT COALESCE(imap_error, '') FROM email_mailbox "
                                          "WHERE name = 'support'"), "")

        # one instance gone: the other takes over the mailbox
        self.assertEqual(self.w.k.stop(), 0, self.w.k.tail())
        for i in range(20):
            self.dov.deliver(msg(i, "after"))
        self.wait_ingested("after", 20, timeout=60)
        ok = kt.wait_for(lambda: self.folder_count("INBOX") == 0, 60, 0.2)
        self.assertTrue(ok)
        self.assertEqual(self.folder_count(DONE), total + 20)
        self.assertEqual(self.k2.stop(), 0, self.k2.tail())


if __name__ == "__main__":
    kt.main()
