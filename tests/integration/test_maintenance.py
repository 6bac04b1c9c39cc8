"""The maintenance job purges what nobody needs any more, and nothing else:
portal links idle past portal_token_idle (or revoked over a day ago),
sign-in links a day past their expiry, rate-limit windows long over, the
e-mail loop brake's counts of past days, instances gone a day.  The first
run comes within a second of start-up.
"""

import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coretest as ct  # noqa: E402
import kefutest as kt  # noqa: E402


class MaintenanceTest(unittest.TestCase):
    def test_purges_old_rows_only(self):
        db = kt.fresh_db(self.addCleanup)
        cp = kt.run_kefud(["migrate"], env=db.kefud_env())
        self.assertEqual(cp.returncode, 0, kt.describe(cp))
        cust = ct.make_customer(db)
        q = db.query
        q("INSERT INTO portal_token (token_hash, kind, customer_id, last_used_at, revoked_at) VALUES "
          "(REPEAT('a', 64), 'session', %d, NOW(6) - INTERVAL 2 HOUR, NULL), "     # idle: gone
          "(REPEAT('b', 64), 'session', %d, NOW(6) - INTERVAL 10 MINUTE, NULL), "  # in use: kept
          "(REPEAT('c', 64), 'session', %d, NOW(6), NOW(6) - INTERVAL 2 DAY), "    # revoked: gone
          "(REPEAT('d', 64), 'session', %d, NOW(6), NOW(6))"                       # just revoked
          % (cust, cust, cust, cust))
        q("INSERT INTO portal_magic (token_hash, customer_id, email, expires_at) VALUES "
          "(REPEAT('e', 64), %d, 'a@example.com', NOW(6) - INTERVAL 2 DAY), "
          "(REPEAT('f', 64), %d, 'a@example.com', NOW(6) + INTERVAL 10 MINUTE)" % (cust, cust))
        q("INSERT INTO webform_rate (k, hits, window_start) VALUES "
          "('new:ip:old', 3, NOW(6) - INTERVAL 3 HOUR), ('new:ip:now', 3, NOW(6))")
        q("INSERT INTO email_auto_reply (address, day, sent) VALUES "
          "('old@example.com', CURRENT_DATE - INTERVAL 3 DAY, 5), "
          "('new@example.com', CURRENT_DATE, 1), ('new@example.com', CURRENT_DATE - INTERVAL 1 DAY, 2)")
        k = kt.Kefud(db, env={"KEFU_PORTAL_TOKEN_IDLE": "3600", "KEFU_WEBFORM_RATE_WINDOW": "3600"},
                     register=self.addCleanup).start()
        ok = kt.wait_for(lambda: db.scalar("SELECT COUNT(*) FROM webform_rate") == "1", 30, 0.1)
        self.assertTrue(ok, k.tail())
        ok = kt.wait_for(lambda: db.scalar("SELECT COUNT(*) FROM email_auto_reply") == "2", 30, 0.1)
        self.assertTrue(ok, k.tail())
        self.assertEqual([r[0] for r in q("SELECT LEFT(token_hash, 1) FROM portal_token "
                                          "ORDER BY token_hash")], ["b", "d"])
        self.assertEqual([r[0] for r in q("SELECT LEFT(token_hash, 1) FROM portal_magic")], ["f"])
        self.assertEqual([r[0] for r in q("SELECT k FROM webform_rate")], ["new:ip:now"])
        self.assertEqual(db.scalar("SELECT COUNT(*) FROM email_auto_reply WHERE address = "
                                   "'old@example.com'"), "0")
        self.assertIn("event=purged what=portal_tokens rows=2", k.log())
        self.assertEqual(k.stop(), 0, k.tail())


if __name__ == "__main__":
    kt.main()
