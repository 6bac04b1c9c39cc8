"""The outbox sender: delivery through the fake "debug" channel (debug_routes=1),
retries with exponential backoff, dead-lettering after N attempts (event +
visible in GET /api/v1/outbox), the retry endpoint, rows without an adapter,
and a kill -9 in the middle of a delivery losing nothing.
"""

import re
import signal
import time
import unittest

import coretest as ct
import kefutest as kt

FAST = {
    "KEFU_OUTBOX_BACKOFF_BASE": "1",
    "KEFU_OUTBOX_BACKOFF_MAX": "60",
    "KEFU_OUTBOX_PERIOD_MS": "100",
    "KEFU_OUTBOX_MAX_ATTEMPTS": "3",
    "KEFU_OUTBOX_LEASE": "5",
}


def row(db, oid):
    r = db.query("SELECT status, attempts, "
                 "TIMESTAMPDIFF(MICROSECOND, NOW(6), next_attempt_at), "
                 "COALESCE(last_error, ''), COALESCE(lease_owner, ''), sent_at IS NOT NULL, "
                 "UNIX_TIMESTAMP(next_attempt_at) "
                 "FROM outbox WHERE id = %d" % oid)[0]
    return {"status": r[0], "attempts": int(r[1]), "due_in_us": int(r[2]), "last_error": r[3],
            "lease_owner": r[4], "sent": r[5] == "1", "next_at": float(r[6])}


def wait_row(db, oid, pred, timeout=20.0):
    r = kt.wait_for(lambda: (lambda x: x if pred(x) else None)(row(db, oid)), timeout, 0.05)
    if not r:
        raise AssertionError("outbox row %d never matched; now %r" % (oid, row(db, oid)))
    return r


def deliveries(kefud, oid):
    return len(re.findall(r"event=debug-deliver id=%d " % oid, kefud.log()))


class OutboxTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = kt.fresh_db(cls.addClassCleanup)
        cls.kefud = kt.Kefud(cls.db, env=FAST, register=cls.addClassCleanup).start()
        cls.sup = ct.token(cls.db, "supervisor")
        cls.queue = ct.make_queue(cls.db)
        cls.agent_id, cls.agent_login = ct.make_agent(cls.db, queues=[cls.queue])
        cls.agent = ct.token(cls.db, "agent", cls.agent_login)

    @classmethod
    def tearDownClass(cls):
        assert cls.kefud.stop() == 0, cls.kefud.tail()

    def add(self, **body):
        status, _, j = ct.api(self.kefud, "POST", "/debug/outbox", body=body)
        self.assertEqual(status, 201, j)
        return j["id"]

    def test_ok_row_is_sent_exactly_once(self):
        oid = self.add(mode="ok")
        r = wait_row(self.db, oid, lambda x: x["status"] == "sent")
        self.assertEqual(r["attempts"], 1)
        self.assertTrue(r["sent"])
        self.assertEqual(r["lease_owner"], "")
        time.sleep(1.0)  # ten more sender ticks: nothing sends it again
        self.assertEqual(deliveries(self.kefud, oid), 1)
        self.assertEqual(row(self.db, oid)["status"], "sent")

    def test_failing_row_backs_off_then_dies(self):
        ticket = ct.make_ticket(self.db, self.queue)
        oid = self.add(mode="fail", ticket_id=ticket)
        t0 = time.monotonic()
        r1 = wait_row(self.db, oid, lambda x: x["attempts"] == 1 and x["status"] == "queued")
        self.assertIn("temporary failure", r1["last_error"])
        # backoff_base=1: the first retry waits about 1 s (0.8 .. 1.2 with jitter)
        self.assertGreater(r1["due_in_us"], 0, r1)
        self.assertLess(r1["due_in_us"], 1200000, r1)
        r2 = wait_row(self.db, oid, lambda x: x["attempts"] == 2 and x["status"] == "queued")
        t2 = time.monotonic()
        self.assertGreater(t2 - t0, 0.7)
        # the second waits about 2 s: next_attempt_at moved on by the first wait plus the second
        self.assertGreater(r2["due_in_us"], 0, r2)
        self.assertLess(r2["due_in_us"], 2400000, r2)
        self.assertGreater(r2["next_at"] - r1["next_at"], 1.5, (r1, r2))
        r3 = wait_row(self.db, oid, lambda x: x["status"] == "dead")
        self.assertGreater(time.monotonic() - t2, 1.2)
        self.assertEqual(r3["attempts"], 3)
        self.assertIn("gave up after 3 attempts", r3["last_error"])
        self.assertEqual(deliveries(self.kefud, oid), 3)

        # an outbox.dead event on the ticket
        ev = self.db.query("SELECT kind, JSON_VALUE(data, '$.outbox_id'), "
                           "JSON_VALUE(data, '$.reason') FROM event "
                           "WHERE ticket_id = %d AND kind = 'outbox.dead'" % ticket)
        self.assertEqual(ev, [("outbox.dead", str(oid), "max-attempts")])

        # visible in the API
        status, _, j = ct.api(self.kefud, "GET", "/api/v1/outbox?status=dead&limit=200", self.sup)
        self.assertEqual(status, 200, j)
        mine = [x for x in j["items"] if x["id"] == oid]
        self.assertEqual(len(mine), 1)
        self.assertEqual(mine[0]["status"], "dead")
        self.assertEqual(mine[0]["attempts"], 3)
        self.assertEqual(mine[0]["ticket_id"], ticket)
        self.assertEqual(mine[0]["payload"], {"mode": "fail", "ms": 0})

        # retry: back in the queue with attempts reset, and dies again after 3 more tries
        status, _, j = ct.api(self.kefud, "POST", "/api/v1/outbox/%d/retry" % oid, self.sup)
        self.assertEqual(status, 200, j)
        self.assertEqual(j["status"], "queued")
        self.assertEqual(j["attempts"], 0)
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM event WHERE ticket_id = %d AND "
                                        "kind = 'outbox.requeued'" % ticket), "1")
        wait_row(self.db, oid, lambda x: x["attempts"] >= 1)
        r = wait_row(self.db, oid, lambda x: x["status"] == "dead", timeout=30)
        self.assertEqual(r["attempts"], 3)
        self.assertEqual(deliveries(self.kefud, oid), 6)

    def test_rejected_row_dies_at_once(self):
        oid = self.add(mode="reject")
        r = wait_row(self.db, oid, lambda x: x["status"] == "dead")
        self.assertEqual(r["attempts"], 1)
        self.assertIn("rejected", r["last_error"])
        self.assertEqual(self.db.scalar(
            "SELECT COUNT(*) FROM event WHERE ticket_id IS NULL AND kind = 'outbox.dead' AND "
            "JSON_VALUE(data, '$.outbox_id') = %d AND JSON_VALUE(data, '$.reason') = 'rejected'"
            % oid), "1")

    def test_row_without_adapter_stays_queued(self):
        oid = self.add(mode="ok", channel="carrier-pigeon")
        r = wait_row(self.db, oid, lambda x: x["last_error"] != "")
        self.assertEqual(r["last_error"], "no adapter for channel carrier-pigeon")
        self.assertEqual(r["status"], "queued")
        self.assertEqual(r["attempts"], 0)
        self.assertGreater(r["due_in_us"], 0)
        time.sleep(2.5)  # parked again after the backoff: still no attempt counted
        r = row(self.db, oid)
        self.assertEqual((r["status"], r["attempts"]), ("queued", 0))
        self.assertEqual(deliveries(self.kefud, oid), 0)

    def test_retry_refuses_rows_that_are_not_dead(self):
        oid = self.add(mode="ok")
        wait_row(self.db, oid, lambda x: x["status"] == "sent")
        status, _, j = ct.api(self.kefud, "POST", "/api/v1/outbox/%d/retry" % oid, self.sup)
        self.assertEqual(status, 409, j)
        self.assertEqual(j["type"], "/problems/outbox-not-dead")
        status, _, j = ct.api(self.kefud, "POST", "/api/v1/outbox/999999999/retry", self.sup)
        self.assertEqual(status, 404, j)

    def test_roles(self):
        status, _, _ = ct.api(self.kefud, "GET", "/api/v1/outbox")
        self.assertEqual(status, 401)
        status, _, j = ct.api(self.kefud, "GET", "/api/v1/outbox", self.agent)
        self.assertEqual(status, 403, j)
        status, _, j = ct.api(self.kefud, "POST", "/api/v1/outbox/1/retry", self.agent)
        self.assertEqual(status, 403, j)

    def test_list_keyset_pagination(self):
        # ten dead rows with distinct and equal next_attempt_at values
        ids = []
        for i in range(10):
            ids.append(ct.insert_id(
                self.db, "INSERT INTO outbox (kind, channel, target, payload, status, attempts, "
                         "next_attempt_at, dedupe_key) VALUES ('x', 'debug', 't', '{}', 'dead', 3, "
                         "'2001-01-01 00:00:%02d', 'page-%d-%d')" % (i // 2, i, time.time_ns())))
        seen, cursor, pages = [], None, 0
        while True:
            path = "/api/v1/outbox?status=dead&limit=3"
            if cursor:
                path += "&after=" + cursor
            status, _, j = ct.api(self.kefud, "GET", path, self.sup)
            self.assertEqual(status, 200, j)
            seen += [x["id"] for x in j["items"]]
            pages += 1
            cursor = j["next"]
            if not cursor:
                break
            self.assertLess(pages, 50)
        mine = [i for i in seen if i in ids]
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(mine, sorted(ids, reverse=True))  # newest first, no duplicates

        for bad in ("status=lost", "limit=0", "limit=201", "after=x", "after=bm90LWEtY3Vyc29y"):
            status, _, j = ct.api(self.kefud, "GET", "/api/v1/outbox?" + bad, self.sup)
            self.assertEqual(status, 422, (bad, j))

    def test_explain_uses_the_status_index(self):
        plan = self.db.query("EXPLAIN SELECT id FROM outbox WHERE status = 'dead' "
                             "ORDER BY next_attempt_at DESC, id DESC LIMIT 51")
        self.assertEqual(plan[0][5], "ix_outbox_due", plan)  # key
        self.assertNotIn("filesort", plan[0][9], plan)     # Extra


class OutboxCrashTest(unittest.TestCase):
    """kill -9 while a row is being delivered: after a restart every row ends sent."""

    def test_kill9_mid_delivery_loses_nothing(self):
        db = kt.fresh_db(self.addCleanup)
        k1 = kt.Kefud(db, env=FAST, register=self.addCleanup).start()
        slow = ct.api(k1, "POST", "/debug/outbox", body={"mode": "sleep", "ms": 2500})[2]["id"]
        quick = [ct.api(k1, "POST", "/debug/outbox", body={"mode": "ok"})[2]["id"]
                 for _ in range(3)]
        # wait until the slow row is in the adapter, then kill the process
        self.assertTrue(kt.wait_for(lambda: "event=debug-deliver id=%d " % slow in k1.log(), 10),
                        k1.tail())
        time.sleep(0.3)
        k1.signal(signal.SIGKILL)
        killed = time.monotonic()
        self.assertEqual(k1.wait(), -signal.SIGKILL)
        self.assertEqual(row(db, slow)["status"], "sending")  # caught mid-delivery

        # more work queued while nobody runs
        later = [ct.insert_id(db, "INSERT INTO outbox (kind, channel, target, payload, dedupe_key) "
                                  "VALUES ('x', 'debug', 't', '{\"mode\": \"ok\"}', 'later-%d-%d')"
                              % (i, time.time_ns())) for i in range(2)]
        every = [slow] + quick + later
        k2 = kt.Kefud(db, env=FAST, register=self.addCleanup).start()
        # the lease of the dead instance is respected first: no second delivery at once
        if time.monotonic() - killed < 3.5:
            self.assertEqual(row(db, slow)["status"], "sending")
        for oid in every:
            wait_row(db, oid, lambda x: x["status"] == "sent", timeout=30)
        counts = db.query("SELECT status, COUNT(*) FROM outbox WHERE id IN (%s) GROUP BY status"
                          % ",".join(map(str, every)))
        self.assertEqual(counts, [("sent", str(len(every)))])
        self.assertEqual(row(db, slow)["attempts"], 2)  # the interrupted attempt counts
        self.assertIn("event=leases-expired", k2.log())
        self.assertEqual(deliveries(k2, slow), 1)
        self.assertEqual(k2.stop(), 0)

    def test_sigterm_during_delivery_exits_cleanly(self):
        db = kt.fresh_db(self.addCleanup)
        k = kt.Kefud(db, env=dict(FAST, KEFU_OUTBOX_LEASE="120"), register=self.addCleanup).start()
        oid = ct.api(k, "POST", "/debug/outbox", body={"mode": "sleep", "ms": 20000})[2]["id"]
        self.assertTrue(kt.wait_for(lambda: "event=debug-deliver id=%d " % oid in k.log(), 10))
        t0 = time.monotonic()
        self.assertEqual(k.stop(), 0)
        self.assertLess(time.monotonic() - t0, 10)
        r = row(db, oid)
        self.assertEqual(r["status"], "queued")  # handed back, not stuck in sending
        self.assertEqual(r["lease_owner"], "")


if __name__ == "__main__":
    kt.main()
