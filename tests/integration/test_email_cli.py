"""`kefud admin mailbox put|list|delete`: what quickstart uses to create its demo mailbox."""

import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402


class MailboxCli(unittest.TestCase):
    def setUp(self):
        self.db = kefutest.fresh_db(self.addCleanup)
        self.env = self.db.kefud_env()
        for cmd in (["migrate"], ["demo"]):
            cp = kefutest.run_kefud(cmd, env=self.env)
            self.assertEqual(cp.returncode, 0, kefutest.describe(cp))

    def admin(self, *args):
        return kefutest.run_kefud(["admin", "mailbox"] + list(args), env=self.env)

    def test_put_list_delete(self):
        cp = self.admin("put", "--name", "support", "--address", "support@kefu.test",
                        "--display-name", "Kefu Support", "--queue", "general", "--ack")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertIn("created", cp.stdout)
        # The mailbox routes to its queue through channel_account, as the admin API does.
        rows = self.db.query("SELECT m.address, m.send_ack, q.slug FROM email_mailbox m "
                             "JOIN channel_account ca ON ca.channel='email' AND ca.account=m.name "
                             "JOIN queue q ON q.id = ca.default_queue_id WHERE m.name='support'")
        self.assertEqual([tuple(r) for r in rows], [("support@kefu.test", "1", "general")])
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM event WHERE kind='email.mailbox.created'"),
                         "1")

        cp = self.admin("put", "--name", "support", "--address", "help@kefu.test", "--queue", "billing")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertIn("updated", cp.stdout)
        cp = self.admin("list")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertIn("support\thelp@kefu.test\tqueue=billing\tack=0", cp.stdout)

        cp = self.admin("delete", "--name", "support")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM email_mailbox"), "0")
        cp = self.admin("delete", "--name", "support")
        self.assertEqual(cp.returncode, 1, kefutest.describe(cp))

    def test_errors(self):
        cp = self.admin("put", "--name", "x", "--address", "x@kefu.test", "--queue", "nope")
        self.assertEqual(cp.returncode, 1, kefutest.describe(cp))
        self.assertIn("no queue", cp.stderr)
        for bad in (["put", "--name", "bad name", "--address", "x@kefu.test"],
                    ["put", "--name", "ok", "--address", "not-an-address"],
                    ["put", "--name", "ok", "--address", "x@kefu.test", "--poll-interval", "1"],
                    ["frobnicate"], []):
            cp = self.admin(*bad)
            self.assertEqual(cp.returncode, 2, kefutest.describe(cp))
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM email_mailbox"), "0")


if __name__ == "__main__":
    kefutest.main(need_db=True)
