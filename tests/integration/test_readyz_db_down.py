"""/readyz follows the database: 503 while MariaDB is down, 200 again after it is back.

This test runs its own mariadbd (it stops and restarts it), so it does not
need KEFU_TEST_DB_SOCKET.
"""

import os
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402


def media_type(headers):
    return headers.get("content-type", "").split(";")[0].strip().lower()


class ReadyzFollowsDatabase(unittest.TestCase):
    def test_readyz_db_down_and_back(self):
        mdb = kefutest.PrivateMariaDB(register=self.addCleanup)
        k = None
        try:
            mdb.install()
            mdb.start()
            db = kefutest.fresh_db(self.addCleanup, sock=mdb.socket, drop=False)
            k = kefutest.Kefud(db, register=self.addCleanup).start()

            status, _, body = k.wait_status("/readyz", 200, timeout=30)
            self.assertEqual(status, 200, "readyz with the database up: %r\n%s" % (body[:300], k.tail()))

            # -- database goes away
            mdb.stop()
            status, hdrs, body = k.wait_status("/readyz", 503, timeout=20)
            self.assertEqual(status, 503, "readyz with the database down: %s %r\n%s"
                             % (status, body[:300], k.tail()))
            self.assertEqual(media_type(hdrs), "application/problem+json", hdrs)
            doc = kefutest.parse_json(body)
            self.assertEqual(doc.get("type"), "/problems/not-ready", doc)
            self.assertEqual(doc.get("status"), 503, doc)

            status, _, body = k.request("GET", "/healthz")
            self.assertEqual(status, 200, "healthz must not depend on the database: %r" % body[:300])
            # stays down (and kefud stays up) for a while, not a one-off
            for _ in range(5):
                time.sleep(0.2)
                self.assertEqual(k.request("GET", "/readyz")[0], 503)
            self.assertTrue(k.alive(), "kefud exited while the database was down\n" + k.tail())

            # -- database comes back on the same datadir/socket
            mdb.start()
            status, _, body = k.wait_status("/readyz", 200, timeout=30)
            self.assertEqual(status, 200, "readyz did not recover after the database came back: %s %r\n%s"
                             % (status, body[:300], k.tail()))
            self.assertEqual(kefutest.parse_json(body).get("status"), "ready")
            self.assertTrue(k.alive())
            # and DB-backed work runs again
            for i in range(4):
                status, _, body = k.request("GET", "/debug/sleep?ms=10", timeout=60)
                self.assertEqual(status, 200, "debug/sleep #%d after recovery: %r\n%s"
                                 % (i + 1, body[:300], k.tail()))

            rc = k.stop()
            self.assertEqual(rc, 0, "exit code after SIGTERM\n" + k.tail())
        finally:
            if k is not None:
                k.kill()
            mdb.kill()


if __name__ == "__main__":
    kefutest.main(need_db=False)
