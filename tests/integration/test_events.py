"""The event log over HTTP: GET /api/v1/events paging (keyset by id, scoped
to what the caller may see, holding back ids that may still commit) and
GET /api/v1/events/stream (Server-Sent Events: live events, Last-Event-ID
resume, events written through a second kefud on the same database, agent
scope, heartbeats, the client cap, slow clients cut off, and a graceful
stop with streams open).
"""

import json
import signal
import socket
import threading
import time
import unittest

import coretest as ct
import kefutest as kt

ENV = {"KEFU_SSE_HEARTBEAT": "1", "KEFU_IO_THREADS": "2"}


class EventsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = kt.fresh_db(cls.addClassCleanup)
        cls.kefud = kt.Kefud(cls.db, env=ENV, register=cls.addClassCleanup).start()
        db = cls.db
        cls.q1, cls.q2 = ct.make_queue(db), ct.make_queue(db)
        cls.sup = ct.token(db, "supervisor")
        _, login1 = ct.make_agent(db, queues=[cls.q1])
        _, login2 = ct.make_agent(db, queues=[cls.q2])
        cls.agent1 = ct.token(db, "agent", login1)
        cls.agent2 = ct.token(db, "agent", login2)
        cls.unbound_agent = ct.token(db, "agent")
        cls.t1 = ct.make_ticket(db, cls.q1, "in queue 1")
        cls.t2 = ct.make_ticket(db, cls.q2, "in queue 2")
        cls.t3 = ct.make_ticket(db, None, "no queue")

    @classmethod
    def tearDownClass(cls):
        assert cls.kefud.stop() == 0, cls.kefud.tail()

    def head(self):
        return int(self.db.scalar("SELECT COALESCE(MAX(id), 0) FROM event"))

    def page_all(self, tok, after, limit):
        items, cursor, pages = [], str(after), 0
        while cursor is not None:
            status, _, j = ct.api(self.kefud, "GET", "/api/v1/events?after=%s&limit=%d"
                                  % (cursor, limit), tok)
            self.assertEqual(status, 200, j)
            items += j["items"]
            cursor = j["next"]
            last = j["last_id"]
            pages += 1
            self.assertLess(pages, 100)
        return items, last, pages

    # ---- paging ----

    def test_paging_by_id(self):
        base = self.head()
        mine = []
        for i in range(7):
            mine.append(ct.add_event(self.db, self.t1, "test.paging", {"i": i}))
            ct.add_event(self.db, self.t2, "test.other", {"i": i})
        ct.add_event(self.db, None, "test.system")
        items, last, pages = self.page_all(self.sup, base, 3)
        self.assertEqual(pages, 5)  # 15 events, 3 a page; the last page knows it is the last
        self.assertEqual(len(items), 15)
        ids = [e["id"] for e in items]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(last, ids[-1])
        first = items[0]
        self.assertEqual(first["kind"], "test.paging")
        self.assertEqual(first["ticket_id"], self.t1)
        self.assertEqual(first["data"], {"i": 0})
        self.assertEqual(first["actor"], {"kind": "system", "id": None})
        self.assertRegex(first["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

        # an agent sees the events of tickets in their queues only
        items, last, _ = self.page_all(self.agent1, base, 2)
        self.assertEqual([e["id"] for e in items], mine)
        self.assertEqual(last, ids[-1])  # but the cursor moves past the rest
        items, _, _ = self.page_all(self.unbound_agent, base, 50)
        self.assertEqual(items, [])

    def test_paging_errors(self):
        for q in ("after=-1", "after=abc", "limit=0", "limit=501", "after=99999999999999999999"):
            status, _, j = ct.api(self.kefud, "GET", "/api/v1/events?" + q, self.sup)
            self.assertEqual(status, 422, (q, j))
            self.assertTrue(j["errors"], j)
        status, _, _ = ct.api(self.kefud, "GET", "/api/v1/events")
        self.assertEqual(status, 401)

    def test_young_gap_is_held_back(self):
        # id N+1 is skipped (as if its transaction were still open): N+2 waits a grace period
        base = self.head()
        gap_id = base + 2
        self.db.query("INSERT INTO event (id, ticket_id, kind) VALUES (%d, %d, 'test.gap')"
                      % (gap_id, self.t1))
        status, _, j = ct.api(self.kefud, "GET", "/api/v1/events?after=%d" % base, self.sup)
        self.assertEqual(status, 200, j)
        self.assertEqual(j["items"], [])
        self.assertEqual(j["last_id"], base)
        time.sleep(2.2)
        status, _, j = ct.api(self.kefud, "GET", "/api/v1/events?after=%d" % base, self.sup)
        self.assertEqual([e["id"] for e in j["items"]], [gap_id])

    # ---- streams ----

    def stream(self, tok, **kw):
        s = ct.SSEClient(self.kefud, kw.pop("path", "/api/v1/events/stream"), tok, **kw)
        self.addCleanup(s.close)
        return s

    def test_stream_receives_events(self):
        s = self.stream(self.sup)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.headers["content-type"].startswith("text/event-stream"), s.headers)
        self.assertEqual(s.headers.get("cache-control"), "no-store")
        self.assertEqual(s.headers.get("x-content-type-options"), "nosniff")
        self.assertEqual(s.headers.get("transfer-encoding"), "chunked")
        s.pump(0.5)
        eid = ct.add_event(self.db, self.t1, "test.live", {"hello": "世界"})
        ev = s.wait_for(lambda e: e.get("event") == "test.live")
        self.assertIsNotNone(ev, s.list)
        self.assertEqual(int(ev["id"]), eid)
        self.assertEqual(ev["data"]["id"], eid)
        self.assertEqual(ev["data"]["ticket_id"], self.t1)
        self.assertEqual(ev["data"]["data"], {"hello": "世界"})
        # only events after the stream began (none of the older ones)
        self.assertTrue(all(int(e["id"]) >= eid for e in s.list), s.ids())

    def test_heartbeat_comments(self):
        s = self.stream(self.sup)
        deadline = time.monotonic() + 4
        while "ping" not in s.comments and time.monotonic() < deadline:
            s.pump(0.5)
        self.assertIn("ping", s.comments)

    def test_resume_with_last_event_id(self):
        base = self.head()
        ids = [ct.add_event(self.db, self.t1, "test.resume", {"n": n}) for n in range(4)]
        s = self.stream(self.sup, headers={"Last-Event-ID": str(ids[0])})
        self.assertIsNotNone(s.wait_for(lambda e: int(e["id"]) == ids[-1]), s.list)
        got = [i for i in s.ids() if i in ids]
        self.assertEqual(got, ids[1:])  # in order, nothing twice, nothing before the cursor
        # ?after= works the same; the header wins over it
        s2 = self.stream(self.sup, path="/api/v1/events/stream?after=%d" % base)
        self.assertIsNotNone(s2.wait_for(lambda e: int(e["id"]) == ids[-1]))
        self.assertEqual([i for i in s2.ids() if i in ids], ids)
        s3 = self.stream(self.sup, path="/api/v1/events/stream?after=%d" % base,
                         headers={"Last-Event-ID": str(ids[2])})
        self.assertIsNotNone(s3.wait_for(lambda e: int(e["id"]) == ids[-1]))
        self.assertEqual([i for i in s3.ids() if i in ids], ids[3:])

    def test_resume_from_far_back_catches_up_without_starving_others(self):
        base = self.head()
        many = [ct.add_event(self.db, self.t1, "test.bulk") for _ in range(3)]
        self.db.query("INSERT INTO event (ticket_id, kind) SELECT %d, 'test.bulk' FROM "
                      "seq_1_to_1200" % self.t1)
        top = self.head()
        live = self.stream(self.sup)
        old = self.stream(self.sup, headers={"Last-Event-ID": str(base)})
        eid = ct.add_event(self.db, self.t1, "test.after-bulk")
        self.assertIsNotNone(live.wait_for(lambda e: int(e["id"]) == eid, 10), live.list[-3:])
        self.assertIsNotNone(old.wait_for(lambda e: int(e["id"]) == eid, 30))
        got = old.ids()
        self.assertEqual(got, sorted(got))
        self.assertEqual(len(got), len(set(got)))
        self.assertEqual(got[0], many[0])
        n = int(self.db.scalar("SELECT COUNT(*) FROM event WHERE id > %d AND id <= %d"
                               % (base, top)))
        self.assertEqual(len([i for i in got if base < i <= top]), n)

    def test_agent_stream_is_scoped(self):
        s = self.stream(self.agent1)
        s.pump(0.3)
        hidden = [ct.add_event(self.db, self.t2, "test.scope"),
                  ct.add_event(self.db, self.t3, "test.scope"),
                  ct.add_event(self.db, None, "test.scope")]
        shown = ct.add_event(self.db, self.t1, "test.scope")
        self.assertIsNotNone(s.wait_for(lambda e: int(e["id"]) == shown), s.list)
        # events arrive in id order, so the hidden ones were passed over
        self.assertFalse(set(hidden) & set(s.ids()), s.ids())
        self.assertTrue(all(e["data"]["ticket_id"] == self.t1 for e in s.list), s.list)

    def test_stream_errors(self):
        s = self.stream(None)
        self.assertEqual(s.status, 401)
        s = self.stream(self.sup, headers={"Last-Event-ID": "not-a-number"})
        self.assertEqual(s.status, 400)
        s = self.stream(self.sup, path="/api/v1/events/stream?after=x")
        self.assertEqual(s.status, 422)

    def test_event_from_a_second_instance(self):
        s = self.stream(self.sup)
        other = kt.Kefud(self.db, env=ENV, register=self.addCleanup).start()
        # an API call on the second instance that writes an event: requeue a dead row
        oid = ct.insert_id(self.db, "INSERT INTO outbox (kind, channel, target, payload, status, "
                                    "dedupe_key, ticket_id) VALUES ('x', 'nowhere', 't', '{}', "
                                    "'dead', 'second-%d', %d)" % (time.time_ns(), self.t1))
        status, _, j = ct.api(other, "POST", "/api/v1/outbox/%d/retry" % oid, self.sup)
        self.assertEqual(status, 200, j)
        ev = s.wait_for(lambda e: e.get("event") == "outbox.requeued"
                        and e["data"]["data"].get("outbox_id") == oid)
        self.assertIsNotNone(ev, s.list)
        self.assertEqual(ev["data"]["ticket_id"], self.t1)
        self.assertIn("route=\"/api/v1/outbox/{id}/retry\"", other.log())
        self.assertNotIn("/api/v1/outbox/%d/retry" % oid, self.kefud.log())
        self.assertEqual(other.stop(), 0)


class StreamLimitsTest(unittest.TestCase):
    def test_client_cap_and_release_on_disconnect(self):
        db = kt.fresh_db(self.addCleanup)
        k = kt.Kefud(db, env={"KEFU_SSE_MAX_CLIENTS": "1"}, register=self.addCleanup).start()
        sup = ct.token(db, "supervisor")
        a = ct.SSEClient(k, "/api/v1/events/stream", sup)
        self.assertEqual(a.status, 200)
        b = ct.SSEClient(k, "/api/v1/events/stream", sup)
        self.assertEqual(b.status, 503)
        self.assertIn("retry-after", b.headers)
        b.close()
        a.close()  # the hang-up is noticed without any write
        self.assertTrue(kt.wait_for(lambda: "reason=client-gone" in k.log(), 10), k.tail())
        c = ct.SSEClient(k, "/api/v1/events/stream", sup)
        self.assertEqual(c.status, 200)
        c.close()
        self.assertEqual(k.stop(), 0)

    def test_slow_client_is_cut_off(self):
        db = kt.fresh_db(self.addCleanup)
        k = kt.Kefud(db, env={"KEFU_SSE_MAX_BUFFER": "65536", "KEFU_SSE_HEARTBEAT": "1",
                              "KEFU_HTTP_TIMEOUT": "300"}, register=self.addCleanup).start()
        sup = ct.token(db, "supervisor")
        t = ct.make_ticket(db, None)
        fast = ct.SSEClient(k, "/api/v1/events/stream", sup)
        slow = ct.SSEClient(k, "/api/v1/events/stream", sup)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        got = {}

        def read_fast():
            got["end"] = fast.wait_for(lambda e: e.get("event") == "test.end", 120)

        reader = threading.Thread(target=read_fast)
        reader.start()
        big = json.dumps({"pad": "x" * 8000})
        for _ in range(6):  # 600 x 8 KB: far more than socket buffers and sse_max_buffer hold
            db.query("INSERT INTO event (ticket_id, kind, data) SELECT %d, 'test.big', '%s' "
                     "FROM seq_1_to_100" % (t, big))
        ct.add_event(db, t, "test.end")
        reader.join(150)
        # the client that reads gets everything, in order, although it fell behind on the way
        self.assertIsNotNone(got.get("end"), "fast client did not get to the end")
        bigs = [e for e in fast.list if e.get("event") == "test.big"]
        self.assertEqual(len(bigs), 600)
        self.assertEqual(fast.ids(), sorted(fast.ids()))
        # the one that does not read is cut off once it stalls
        self.assertTrue(kt.wait_for(lambda: "reason=slow-client" in k.log(), 30), k.tail())
        self.assertEqual(k.log().count("reason=slow-client"), 1)
        self.assertTrue(slow.wait_closed(30))
        self.assertNotIn("req=%s" % fast.headers["x-request-id"],
                         [l for l in k.log().splitlines() if "stream-end" in l])
        fast.close()
        slow.close()
        self.assertEqual(k.stop(), 0)

    def test_graceful_stop_with_open_streams(self):
        db = kt.fresh_db(self.addCleanup)
        k = kt.Kefud(db, env={"KEFU_IO_THREADS": "2"}, register=self.addCleanup).start()
        sup = ct.token(db, "supervisor")
        streams = [ct.SSEClient(k, "/api/v1/events/stream", sup) for _ in range(4)]
        for s in streams:
            self.assertEqual(s.status, 200)
        time.sleep(0.3)
        t0 = time.monotonic()
        k.signal(signal.SIGTERM)
        for s in streams:
            self.assertTrue(s.wait_closed(10))
            self.assertTrue(getattr(s, "ended", False), "the stream ended with its last chunk")
        self.assertEqual(k.wait(), 0)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertIn("reason=shutdown", k.log())


if __name__ == "__main__":
    kt.main()
