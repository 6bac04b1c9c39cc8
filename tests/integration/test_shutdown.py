"""Graceful shutdown: in-flight requests finish, then kefud exits 0."""

import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402


class Shutdown(unittest.TestCase):
    def start(self):
        db = kefutest.fresh_db(self.addCleanup)
        k = kefutest.Kefud(db, register=self.addCleanup).start()
        status, _, body = k.wait_status("/readyz", 200, timeout=30)
        self.assertEqual(status, 200, "kefud not ready: %r\n%s" % (body[:300], k.tail()))
        return k

    def in_flight_sleep_survives(self, sig):
        k = self.start()
        result = {}

        def call():
            try:
                result["r"] = k.request("GET", "/debug/sleep?ms=1500", timeout=60)
            except Exception as e:  # noqa: BLE001
                result["e"] = e

        t = threading.Thread(target=call, daemon=True)
        t.start()
        time.sleep(0.3)
        # Only a synchronisation aid, so the signal does not race the request's
        # arrival on a slow machine: wait (bounded) until a DB worker is busy.
        kefutest.wait_for(lambda: (k.metrics().value("kefu_db_workers_busy") or 0) >= 1, timeout=10,
                          interval=0.05)
        k.signal(sig)
        t.join(60)
        self.assertFalse(t.is_alive(), "the in-flight request did not finish within 60 s\n" + k.tail())
        self.assertNotIn("e", result, "in-flight request failed during shutdown: %r\n%s"
                         % (result.get("e"), k.tail()))
        status, hdrs, body = result["r"]
        self.assertEqual(status, 200, "in-flight /debug/sleep: %s %r\n%s" % (status, body[:300], k.tail()))
        self.assertEqual(kefutest.parse_json(body), {"slept_ms": 1500})

        rc = k.wait()
        self.assertEqual(rc, 0, "exit code after %s\n%s" % (sig.name, k.tail()))
        with self.assertRaises(ConnectionRefusedError, msg="connection accepted after shutdown"):
            socket.create_connection((k.host, k.port), timeout=5).close()
        self.assertRegex(k.log(), r"\bevent=stopped\b", k.tail())

    def test_sigterm_drains_in_flight_request(self):
        self.in_flight_sleep_survives(signal.SIGTERM)

    def test_sigint_drains_in_flight_request(self):
        self.in_flight_sleep_survives(signal.SIGINT)


if __name__ == "__main__":
    kefutest.main(need_db=True)
