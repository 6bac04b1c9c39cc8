"""Backpressure: with the worker queue full, kefud answers 503 problem+json with
Retry-After at once instead of queueing without bound, and recovers afterwards."""

import os
import sys
import threading
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402


class Backpressure(unittest.TestCase):
    def test_queue_full_gets_503_with_retry_after(self):
        db = kefutest.fresh_db(self.addCleanup)
        # One worker, room for one waiting call: a third concurrent DB call is refused.
        k = kefutest.Kefud(db, env={"KEFU_DB_WORKERS": "1", "KEFU_WORK_QUEUE_MAX": "1"},
                           register=self.addCleanup).start()
        status, _, body = k.wait_status("/readyz", 200, timeout=30)
        self.assertEqual(status, 200, body)

        results = []
        lock = threading.Lock()

        def slow():
            r = k.request("GET", "/debug/sleep?ms=2000", timeout=60)
            with lock:
                results.append(r)

        busy = threading.Thread(target=slow, daemon=True)
        busy.start()
        kefutest.wait_for(lambda: (k.metrics().value("kefu_db_workers_busy") or 0) >= 1,
                          timeout=10, interval=0.05)
        queued = threading.Thread(target=slow, daemon=True)
        queued.start()
        kefutest.wait_for(lambda: (k.metrics().value("kefu_worker_queue_depth") or 0) >= 1,
                          timeout=10, interval=0.05)

        # Worker busy and queue full: refused now, not after the sleep.
        status, hdrs, body = k.request("GET", "/readyz", timeout=10)
        self.assertEqual(status, 503, body)
        self.assertEqual(hdrs.get("content-type"), "application/problem+json")
        self.assertEqual(hdrs.get("retry-after"), "1")
        self.assertEqual(kefutest.parse_json(body)["type"], "/problems/overloaded")
        # Inline routes (no worker) still answer while the pool is saturated.
        self.assertEqual(k.request("GET", "/healthz")[0], 200)

        busy.join(60)
        queued.join(60)
        self.assertEqual(sorted(r[0] for r in results), [200, 200])
        self.assertEqual(k.request("GET", "/readyz")[0], 200)
        self.assertEqual(k.stop(), 0, k.tail())


if __name__ == "__main__":
    kefutest.main(need_db=True)
