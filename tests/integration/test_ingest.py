"""Idempotent ingest through the API: 8 concurrent identical POST /api/v1/tickets
with one external_id make exactly one ticket and all 8 answers carry its id;
8 concurrent tickets for one new e-mail address make one customer; routing
by the channel account's default queue; the acknowledgement outbox row."""

import os
import sys
import threading
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefu_api  # noqa: E402


class Ingest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # 8 workers so that the 8 requests really run at the same time.
        cls.w = kefu_api.World(cls.addClassCleanup, env={"KEFU_DB_WORKERS": "8",
                                                          "KEFU_IO_THREADS": "2"})

    @classmethod
    def tearDownClass(cls):
        assert cls.w.stop() == 0, cls.w.k.tail()

    def concurrently(self, bodies, who="admin"):
        barrier = threading.Barrier(len(bodies))
        results = [None] * len(bodies)

        def go(i):
            barrier.wait()
            results[i] = self.w.api("POST", "/api/v1/tickets", bodies[i], who=who)

        th = [threading.Thread(target=go, args=(i,)) for i in range(len(bodies))]
        for t in th:
            t.start()
        for t in th:
            t.join(120)
        return results

    def test_eight_identical_submissions_make_one_ticket(self):
        w = self.w
        for round_ in range(5):
            ext = "idem-%d-%d" % (os.getpid(), round_)
            email = "idem%d@example.org" % round_
            body = {"subject": "Same", "text": "one request, sent 8 times",
                    "customer": {"email": email, "name": "Idem"}, "external_id": ext}
            before = w.counts()
            res = self.concurrently([body] * 8)
            statuses = sorted(r[0] for r in res)
            self.assertEqual(statuses, [200] * 7 + [201], [(r[0], r[2]) for r in res])
            ids = {r[2]["id"] for r in res}
            self.assertEqual(len(ids), 1, res)
            self.assertEqual(len({r[2]["message_id"] for r in res}), 1)
            self.assertEqual(sum(1 for r in res if not r[2]["duplicate"]), 1)
            after = w.counts()
            self.assertEqual(after["ticket"], before["ticket"] + 1)
            self.assertEqual(after["message"], before["message"] + 1)
            self.assertEqual(after["customer"], before["customer"] + 1)
            self.assertEqual(after["inbound_receipt"], before["inbound_receipt"] + 1)
            self.assertEqual(after["event"], before["event"] + 2)
            self.assertEqual(w.count("ticket", "id = %d" % ids.pop()), 1)
        self.assertNotIn("event=internal-error", w.k.log())

    def test_eight_tickets_one_new_customer(self):
        w = self.w
        email = "crowd-%d@example.org" % os.getpid()
        bodies = [{"subject": "Crowd %d" % i, "text": "t", "customer": {"email": email},
                   "external_id": "crowd-%d-%d" % (os.getpid(), i)} for i in range(8)]
        before = w.counts()
        res = self.concurrently(bodies)
        self.assertEqual([r[0] for r in res], [201] * 8, [(r[0], r[2]) for r in res])
        self.assertEqual(len({r[2]["id"] for r in res}), 8)
        self.assertEqual(len({r[2]["customer"]["id"] for r in res}), 1)
        after = w.counts()
        self.assertEqual(after["customer"], before["customer"] + 1)
        self.assertEqual(after["customer_identity"], before["customer_identity"] + 1)

    def test_routing_and_ack(self):
        w = self.w
        w.db.query("INSERT INTO channel_account (channel, account, default_queue_id) "
                   "VALUES ('api', '', %d)" % w.q2)
        try:
            st, _, t = w.api("POST", "/api/v1/tickets",
                             {"subject": "Routed", "text": "where?", "send_ack": True,
                              "customer": {"email": "routed@example.org"}})
            self.assertEqual(st, 201, t)
            self.assertEqual(t["queue_id"], w.q2)
            rows = w.db.query("SELECT kind, target, dedupe_key FROM outbox WHERE ticket_id = %d"
                              % t["id"])
            self.assertEqual(rows, [("ack", "routed@example.org", "ack:%d" % t["message_id"])])
            # carol (q2) sees it, alice (q1) does not.
            self.assertEqual(w.api("GET", "/api/v1/tickets/%d" % t["id"], who="carol")[0], 200)
            self.assertEqual(w.api("GET", "/api/v1/tickets/%d" % t["id"], who="alice")[0], 404)
            # An explicit queue wins over the default.
            st, _, t = w.api("POST", "/api/v1/tickets",
                             {"subject": "Explicit", "text": "here", "queue_id": w.q1,
                              "customer": {"email": "routed@example.org"}})
            self.assertEqual((st, t["queue_id"]), (201, w.q1))
            self.assertEqual(w.count("outbox", "ticket_id = %d" % t["id"]), 0)
        finally:
            w.db.query("DELETE FROM channel_account WHERE channel = 'api'")


if __name__ == "__main__":
    kefutest.main(need_db=True)
