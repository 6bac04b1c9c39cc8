"""LMTP while the database is away: the MTA is told 451 (so it keeps the mail
and retries) both for RCPT and for DATA of a transaction begun while the
database was up; once MariaDB is back the same message is accepted, and
stored exactly once.  Runs its own mariadbd (stopped and restarted here).
The DATA 451 comes from an LMTP ingest worker (two here, each with its own
connection), the RCPT 451 from the listener's own connection.
"""

import os
import re
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest as kt  # noqa: E402
from lmtp_kit import Lmtp  # noqa: E402


MSG = (b"From: cust@example.com\r\nTo: support@kefu.test\r\nSubject: db down\r\n"
       b"Message-ID: <dbdown-1@example.com>\r\n\r\nplease keep me\r\n.\r\n")


class LmtpDatabaseDown(unittest.TestCase):
    def test_tempfail_then_accept(self):
        mdb = kt.PrivateMariaDB(register=self.addCleanup)
        mdb.install()
        mdb.start()
        db = kt.fresh_db(self.addCleanup, sock=mdb.socket, drop=False)
        cp = kt.run_kefud(["migrate"], env=db.kefud_env())
        self.assertEqual(cp.returncode, 0, kt.describe(cp))
        db.query("INSERT INTO queue (name, slug) VALUES ('Q', 'q')")
        db.query("INSERT INTO email_mailbox (name, address) VALUES ('support', 'support@kefu.test')")
        db.query("INSERT INTO channel_account (channel, account, default_queue_id) "
                 "SELECT 'email', 'support', id FROM queue WHERE slug = 'q'")
        k = kt.Kefud(db, env={"KEFU_LMTP_LISTEN": "127.0.0.1:0", "KEFU_DB_CONNECT_TIMEOUT": "2",
                              "KEFU_LMTP_WORKERS": "2",
                              "KEFU_SHUTDOWN_TIMEOUT": "10"},
                     register=self.addCleanup).start()
        port = int(re.search(r"event=lmtp-listening addr=127\.0\.0\.1:(\d+)", k.log()).group(1))

        c = Lmtp(port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd("LHLO mta"), 250)
        self.assertEqual(c.cmd("MAIL FROM:<cust@example.com>"), 250)
        self.assertEqual(c.cmd("RCPT TO:<support@kefu.test>"), 250)

        mdb.stop()
        self.assertEqual(c.cmd("DATA"), 354)
        c.s.sendall(MSG)
        self.assertEqual(c.reply()[0], 451, k.tail())
        self.assertEqual(c.cmd("MAIL FROM:<cust@example.com>"), 250)
        self.assertEqual(c.cmd("RCPT TO:<support@kefu.test>"), 451, k.tail())
        self.assertEqual(c.cmd("QUIT"), 221)
        self.assertTrue(k.alive(), k.tail())

        mdb.start()
        def deliver():
            d = Lmtp(port)
            try:
                d.reply()
                d.cmd("LHLO mta")
                d.cmd("MAIL FROM:<cust@example.com>")
                if d.cmd("RCPT TO:<support@kefu.test>") != 250:
                    return False
                if d.cmd("DATA") != 354:
                    return False
                d.s.sendall(MSG)
                return d.reply()[0] == 250
            finally:
                d.close()
        self.assertTrue(kt.wait_for(deliver, 60, 0.5), k.tail())
        self.assertTrue(deliver())  # a redelivery is a duplicate, still 250
        self.assertEqual(int(db.scalar("SELECT COUNT(*) FROM message WHERE external_id = "
                                       "'dbdown-1@example.com'")), 1)
        self.assertEqual(k.stop(), 0, k.tail())


if __name__ == "__main__":
    kt.main(need_db=False)
