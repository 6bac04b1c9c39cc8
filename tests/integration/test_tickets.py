"""Ticket API against the real kefud and MariaDB: create, get (messages,
notes, attachment metadata), list (filters, keyset pages, queue scope),
PATCH with If-Match (two concurrent updates with one version: one 409),
status times, role rules, replies (outbox, first response), notes, a
customer writing again (solved reopens, closed starts a follow-up), merges,
404 for tickets an agent may not see, and a table of bad input that must
answer 400/413/422 naming the field with nothing written."""

import json
import os
import re
import sys
import threading
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefu_api  # noqa: E402

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Tickets(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = kefu_api.World(cls.addClassCleanup)

    @classmethod
    def tearDownClass(cls):
        assert cls.w.stop() == 0, cls.w.k.tail()

    def api(self, *a, **kw):
        return self.w.api(*a, **kw)

    # -- create and get

    def test_create_and_get(self):
        w = self.w
        st, hdrs, t = self.api("POST", "/api/v1/tickets", {
            "subject": "Printer on fire", "text": "Please help.\nSecond line.",
            "customer": {"email": "Fire@Example.org", "name": "Fay Fire", "locale": "en-GB"},
            "priority": "high", "queue_id": w.q1, "tags": ["Hardware", "urgent-ish"]},
            who="alice")
        self.assertEqual(st, 201, t)
        self.assertEqual(hdrs["location"], "/api/v1/tickets/%d" % t["id"])
        self.assertEqual(hdrs["etag"], '"1"')
        self.assertEqual(t["number"], "KF-%06d" % t["id"])
        self.assertEqual((t["subject"], t["status"], t["priority"], t["channel"]),
                         ("Printer on fire", "new", "high", "api"))
        self.assertEqual(t["queue_id"], w.q1)
        self.assertEqual(t["tags"], ["hardware", "urgent-ish"])
        self.assertEqual(t["customer"]["email"], "fire@example.org")
        self.assertEqual(t["customer"]["name"], "Fay Fire")
        self.assertEqual(t["version"], 1)
        for k in ("created_at", "updated_at"):
            self.assertRegex(t[k], ISO)
        for k in ("first_response_at", "solved_at", "closed_at", "assignee_id", "merged_into_id",
                  "follow_up_of_id"):
            self.assertIsNone(t[k], k)
        # Events and the identity were written with it.
        kinds = [r[0] for r in w.db.query("SELECT kind FROM event WHERE ticket_id = %d ORDER BY id"
                                          % t["id"])]
        self.assertEqual(kinds, ["ticket.created", "message.received"])
        self.assertEqual(w.db.scalar("SELECT actor_id FROM event WHERE ticket_id = %d LIMIT 1"
                                     % t["id"]), str(w.agent_id["alice"]))
        self.assertEqual(w.count("customer_identity", "value = 'fire@example.org'"), 1)
        self.assertEqual(w.count("ticket_tag", "ticket_id = %d" % t["id"]), 2)

        # A note and an attachment (metadata only here; bytes are tested in C).
        st, _, _ = self.api("POST", "/api/v1/tickets/%d/notes" % t["id"], {"text": "internal"},
                            who="bob")
        self.assertEqual(st, 201)
        mid = int(w.db.scalar("SELECT MIN(id) FROM message WHERE ticket_id = %d" % t["id"]))
        w.db.query("INSERT INTO attachment (ticket_id, message_id, filename, content_type, size, "
                   "sha256) VALUES (%d, %d, 'a.txt', 'text/plain', 3, '%s')"
                   % (t["id"], mid, "ab" * 32))
        st, hdrs, g = self.api("GET", "/api/v1/tickets/%d" % t["id"], who="bob")
        self.assertEqual(st, 200, g)
        self.assertEqual(hdrs["etag"], '"%d"' % g["version"])
        msgs = g["messages"]
        self.assertEqual([(m["direction"], m["kind"]) for m in msgs],
                         [("in", "public"), ("out", "internal")])
        self.assertEqual(msgs[0]["text"], "Please help.\nSecond line.")
        self.assertEqual(msgs[0]["author"], {"kind": "customer", "id": t["customer"]["id"]})
        self.assertEqual(msgs[1]["author"]["id"], w.agent_id["bob"])
        self.assertEqual(msgs[1]["author"]["name"], "Bob")
        self.assertEqual(msgs[0]["attachments"][0]["filename"], "a.txt")
        self.assertEqual(msgs[0]["attachments"][0]["size"], 3)
        self.assertEqual(msgs[0]["attachments"][0]["sha256"], "ab" * 32)

    def test_create_for_known_customer_and_idempotent_repeat(self):
        first = self.w.new_ticket(email="known@example.org")
        cid = first["customer"]["id"]
        body = {"subject": "Again", "text": "x", "customer": {"id": cid}, "external_id": "req-77"}
        st, _, a = self.api("POST", "/api/v1/tickets", body)
        self.assertEqual(st, 201, a)
        self.assertEqual(a["customer"]["id"], cid)
        before = self.w.counts()
        st, hdrs, b = self.api("POST", "/api/v1/tickets", dict(body, text="different"))
        self.assertEqual(st, 200, b)
        self.assertEqual(hdrs.get("idempotent-replayed"), "true")
        self.assertEqual(b["id"], a["id"])
        self.assertTrue(b["duplicate"])
        self.assertEqual(self.w.counts(), before)

    def test_agent_cannot_file_into_foreign_queue(self):
        before = self.w.counts()
        st, _, p = self.api("POST", "/api/v1/tickets",
                            {"subject": "s", "text": "t", "customer": {"email": "q@example.org"},
                             "queue_id": self.w.q2}, who="alice")
        self.assertEqual(st, 422, p)
        self.assertEqual(p["errors"][0]["field"], "queue_id")
        self.assertEqual(self.w.counts(), before)

    # -- visibility

    def test_invisible_tickets_are_404(self):
        w = self.w
        t = w.new_ticket(queue_id=w.q1)
        tid = t["id"]
        for who in ("carol", "bot"):
            self.assertEqual(self.api("GET", "/api/v1/tickets/%d" % tid, who=who)[0], 404, who)
            self.assertEqual(self.api("PATCH", "/api/v1/tickets/%d" % tid, {"priority": "low"},
                                      who=who, headers={"If-Match": '"1"'})[0], 404, who)
            self.assertEqual(self.api("POST", "/api/v1/tickets/%d/replies" % tid, {"text": "x"},
                                      who=who)[0], 404, who)
            self.assertEqual(self.api("POST", "/api/v1/tickets/%d/notes" % tid, {"text": "x"},
                                      who=who)[0], 404, who)
            self.assertEqual(self.api("POST", "/api/v1/tickets/%d/messages" % tid, {"text": "x"},
                                      who=who)[0], 404, who)
            st, _, lst = self.api("GET", "/api/v1/tickets?limit=200", who=who)
            self.assertEqual(st, 200)
            self.assertNotIn(tid, [i["id"] for i in lst["items"]])
        # A ticket in no queue: supervisors only.
        nq = w.new_ticket()
        self.assertIsNone(nq["queue_id"])
        self.assertEqual(self.api("GET", "/api/v1/tickets/%d" % nq["id"], who="alice")[0], 404)
        self.assertEqual(self.api("GET", "/api/v1/tickets/%d" % nq["id"], who="sam")[0], 200)
        self.assertEqual(self.api("GET", "/api/v1/tickets/99999999", who="sam")[0], 404)
        # Nothing leaked by a failed write.
        self.assertEqual(w.count("message", "ticket_id = %d" % tid), 1)

    # -- list

    def test_list_filters_and_pages(self):
        w = self.w
        tag = "pg-%d" % os.getpid()
        made = [w.new_ticket(queue_id=w.q1, tags=[tag], priority=p, email="lister@example.org")
                for p in ("low", "normal", "high", "urgent", "normal", "low", "high")]
        ids = [t["id"] for t in made]
        # Pages of 3 cover everything once, newest first.
        seen, after, pages = [], None, 0
        while True:
            path = "/api/v1/tickets?tag=%s&limit=3" % tag + ("&after=" + after if after else "")
            st, _, page = self.api("GET", path, who="alice")
            self.assertEqual(st, 200, page)
            seen += [i["id"] for i in page["items"]]
            pages += 1
            after = page["next"]
            if after is None:
                break
        self.assertEqual(pages, 3)
        self.assertEqual(seen, sorted(ids, reverse=True))
        # Touching the oldest moves it to the front.
        st, _, _ = self.api("PATCH", "/api/v1/tickets/%d" % ids[0], {"status": "pending"},
                            headers={"If-Match": '"1"'}, who="alice")
        self.assertEqual(st, 200)
        _, _, page = self.api("GET", "/api/v1/tickets?tag=%s" % tag, who="alice")
        self.assertEqual(page["items"][0]["id"], ids[0])
        # Filters.
        def listed(q, who="alice"):
            st, _, page = self.api("GET", "/api/v1/tickets?tag=%s&%s" % (tag, q), who=who)
            self.assertEqual(st, 200, page)
            return sorted(i["id"] for i in page["items"])
        self.assertEqual(listed("priority=low"), sorted([ids[0], ids[5]]))
        self.assertEqual(listed("status=pending"), [ids[0]])
        self.assertEqual(listed("status=new,pending"), sorted(ids))
        self.assertEqual(listed("status=new&status=pending"), sorted(ids))
        self.assertEqual(listed("status=solved"), [])
        self.assertEqual(listed("queue_id=%d" % w.q1), sorted(ids))
        self.assertEqual(listed("queue_id=%d" % w.q2), [])
        self.assertEqual(listed("customer_id=%d" % made[0]["customer"]["id"]), sorted(ids))
        self.assertEqual(listed("updated_since=2000-01-01T00:00:00Z"), sorted(ids))
        self.assertEqual(listed("updated_since=2999-01-01"), [])
        self.assertEqual(listed("assignee_id=none"), sorted(ids))
        self.assertEqual(listed("assignee_id=me"), [])
        st, _, _ = self.api("PATCH", "/api/v1/tickets/%d" % ids[1],
                            {"assignee_id": w.agent_id["alice"]}, headers={"If-Match": '"1"'},
                            who="alice")
        self.assertEqual(st, 200)
        self.assertEqual(listed("assignee_id=me"), [ids[1]])
        self.assertEqual(listed("assignee_id=%d" % w.agent_id["alice"], who="sam"), [ids[1]])
        self.assertEqual(listed("", who="carol"), [])  # not carol's queue
        self.assertEqual(listed("", who="bot"), [])

    def test_list_bad_parameters(self):
        before = self.w.counts()
        for q, field in [("queue_id=-1", "queue_id"), ("queue_id=abc", "queue_id"),
                         ("queue_id=99999999999999999999", "queue_id"), ("limit=0", "limit"),
                         ("limit=201", "limit"), ("status=bogus", "status"),
                         ("status=open,", "status"), ("priority=meh", "priority"),
                         ("assignee_id=someone", "assignee_id"), ("frobnicate=1", "frobnicate"),
                         ("after=not-a-cursor", "after"), ("updated_since=yesterday",
                                                           "updated_since"),
                         ("limit=5&limit=6", "limit"), ("tag=%ff", "tag"), ("tag=", "tag"),
                         ("customer_id=0", "customer_id")]:
            st, hdrs, p = self.api("GET", "/api/v1/tickets?" + q)
            self.assertEqual(st, 422, (q, p))
            self.assertEqual(hdrs["content-type"], "application/problem+json")
            self.assertIn(field, [e["field"] for e in p["errors"]], q)
        st, _, p = self.api("GET", "/api/v1/tickets?assignee_id=me")  # admin token: no agent
        self.assertEqual(st, 422, p)
        self.assertEqual(self.w.counts(), before)

    # -- update

    def test_patch_versions_and_status_times(self):
        w = self.w
        t = w.new_ticket(queue_id=w.q1)
        path = "/api/v1/tickets/%d" % t["id"]
        st, _, p = self.api("PATCH", path, {"priority": "low"}, who="alice")
        self.assertEqual(st, 428, p)
        st, _, p = self.api("PATCH", path, {"priority": "low"}, who="alice",
                            headers={"If-Match": "garbage"})
        self.assertEqual(st, 400, p)
        st, hdrs, u = self.api("PATCH", path, {"status": "solved", "priority": "low"},
                               who="alice", headers={"If-Match": '"1"'})
        self.assertEqual(st, 200, u)
        self.assertEqual(hdrs["etag"], '"2"')
        self.assertEqual((u["status"], u["priority"], u["version"]), ("solved", "low", 2))
        self.assertRegex(u["solved_at"], ISO)
        # Stale version: 409 naming the current one, nothing changed.
        st, _, p = self.api("PATCH", path, {"priority": "urgent"}, who="alice",
                            headers={"If-Match": '"1"'})
        self.assertEqual(st, 409, p)
        self.assertEqual(p["type"], "/problems/version-conflict")
        self.assertIn("version 2", p["detail"])
        # Version in the body works too; reopening clears solved_at.
        st, _, u = self.api("PATCH", path, {"status": "open", "version": 2}, who="alice")
        self.assertEqual(st, 200, u)
        self.assertIsNone(u["solved_at"])
        st, _, p = self.api("PATCH", path, {"status": "new", "version": 3}, who="alice")
        self.assertEqual(st, 422, p)
        st, _, u = self.api("PATCH", path, {"status": "closed", "version": 3}, who="alice")
        self.assertEqual(st, 200, u)
        self.assertRegex(u["closed_at"], ISO)
        st, _, p = self.api("PATCH", path, {"status": "open", "version": 4}, who="alice")
        self.assertEqual(st, 409, p)
        # A no-op PATCH changes nothing (no version step, no event).
        events = w.count("event", "ticket_id = %d" % t["id"])
        st, _, u = self.api("PATCH", path, {"status": "closed"}, who="alice",
                            headers={"If-Match": 'W/"4"'})
        self.assertEqual(st, 200, u)
        self.assertEqual(u["version"], 4)
        self.assertEqual(w.count("event", "ticket_id = %d" % t["id"]), events)
        changes = [json.loads(r[0])["changes"] for r in w.db.query(
            "SELECT data FROM event WHERE ticket_id = %d AND kind = 'ticket.updated' ORDER BY id"
            % t["id"])]
        self.assertEqual(changes[0]["status"], {"from": "new", "to": "solved"})
        self.assertEqual(changes[0]["priority"], {"from": "normal", "to": "low"})

    def test_two_concurrent_patches_one_conflict(self):
        w = self.w
        for round_ in range(3):
            t = w.new_ticket(queue_id=w.q1)
            barrier = threading.Barrier(2)
            results = []

            def patch(who, prio):
                barrier.wait()
                results.append(self.api("PATCH", "/api/v1/tickets/%d" % t["id"],
                                        {"priority": prio}, who=who,
                                        headers={"If-Match": '"1"'})[0])

            th = [threading.Thread(target=patch, args=("alice", "high")),
                  threading.Thread(target=patch, args=("bob", "urgent"))]
            for x in th:
                x.start()
            for x in th:
                x.join(60)
            self.assertEqual(sorted(results), [200, 409], round_)
            self.assertEqual(w.db.scalar("SELECT version FROM ticket WHERE id = %d" % t["id"]),
                             "2")

    def test_roles_queue_and_assignee(self):
        w = self.w
        t = w.new_ticket(queue_id=w.q1)
        path = "/api/v1/tickets/%d" % t["id"]
        # Agents may not move tickets between queues.
        st, _, p = self.api("PATCH", path, {"queue_id": w.q2, "version": 1}, who="alice")
        self.assertEqual(st, 403, p)
        self.assertEqual(p["errors"][0]["field"], "queue_id")
        # Take it, then bob cannot take it away; a supervisor can.
        st, _, u = self.api("PATCH", path, {"assignee_id": w.agent_id["alice"], "version": 1},
                            who="alice")
        self.assertEqual(st, 200, u)
        st, _, p = self.api("PATCH", path, {"assignee_id": w.agent_id["bob"], "version": 2},
                            who="bob")
        self.assertEqual(st, 403, p)
        st, _, p = self.api("PATCH", path, {"assignee_id": w.agent_id["carol"], "version": 2},
                            who="sam")
        self.assertEqual(st, 422, p)  # carol is not in q1
        self.assertEqual(p["errors"][0]["field"], "assignee_id")
        st, _, p = self.api("PATCH", path, {"assignee_id": 987654, "version": 2}, who="sam")
        self.assertEqual(st, 422, p)
        st, _, u = self.api("PATCH", path, {"queue_id": w.q2, "assignee_id": w.agent_id["carol"],
                                            "version": 2}, who="sam")
        self.assertEqual(st, 200, u)
        self.assertEqual((u["queue_id"], u["assignee_id"]), (w.q2, w.agent_id["carol"]))
        # Now carol sees it and alice does not; carol may give it up.
        self.assertEqual(self.api("GET", path, who="alice")[0], 404)
        st, _, u = self.api("PATCH", path, {"assignee_id": None, "tags": ["a", "b"],
                                            "version": 3}, who="carol")
        self.assertEqual(st, 200, u)
        self.assertIsNone(u["assignee_id"])
        self.assertEqual(u["tags"], ["a", "b"])
        st, _, u = self.api("PATCH", path, {"tags": [], "version": 4}, who="carol")
        self.assertEqual(u["tags"], [])
        self.assertEqual(w.count("ticket_tag", "ticket_id = %d" % t["id"]), 0)

    # -- replies, notes, customer messages

    def test_reply_and_note(self):
        w = self.w
        t = w.new_ticket(queue_id=w.q1, email="replyto@example.org")
        tid = t["id"]
        st, hdrs, r = self.api("POST", "/api/v1/tickets/%d/replies" % tid, {"text": "Hello!"},
                               who="alice")
        self.assertEqual(st, 201, r)
        self.assertEqual(r["status"], "open")  # first answer opens a new ticket
        self.assertRegex(r["first_response_at"], ISO)
        self.assertEqual(hdrs["etag"], '"%d"' % r["version"])
        row = w.db.query("SELECT kind, channel, target, status, dedupe_key, message_id FROM outbox "
                         "WHERE ticket_id = %d" % tid)
        self.assertEqual(len(row), 1)
        self.assertEqual(row[0][:5], ("reply", "email", "replyto@example.org", "queued",
                                      "reply:%d" % r["message_id"]))
        self.assertEqual(w.db.scalar("SELECT direction FROM message WHERE id = %d"
                                     % r["message_id"]), "out")
        first = r["first_response_at"]
        st, _, r2 = self.api("POST", "/api/v1/tickets/%d/replies" % tid,
                             {"text": "More", "status": "pending"}, who="bob")
        self.assertEqual(st, 201, r2)
        self.assertEqual(r2["first_response_at"], first)  # set once
        self.assertEqual(r2["status"], "pending")
        st, _, n = self.api("POST", "/api/v1/tickets/%d/notes" % tid, {"text": "psst"}, who="bob")
        self.assertEqual(st, 201, n)
        self.assertEqual(w.count("outbox", "ticket_id = %d" % tid), 2)  # the note sent nothing
        kinds = [r[0] for r in w.db.query("SELECT kind FROM event WHERE ticket_id = %d ORDER BY id"
                                          % tid)]
        self.assertEqual(kinds.count("message.replied"), 2)
        self.assertEqual(kinds.count("note.added"), 1)
        # Closed: no replies (notes still fine).
        self.api("PATCH", "/api/v1/tickets/%d" % tid, {"status": "closed", "version": n["version"]},
                 who="bob")
        st, _, p = self.api("POST", "/api/v1/tickets/%d/replies" % tid, {"text": "late"}, who="bob")
        self.assertEqual(st, 409, p)
        self.assertEqual(self.api("POST", "/api/v1/tickets/%d/notes" % tid, {"text": "ok"},
                                  who="bob")[0], 201)

    def test_customer_writes_again(self):
        w = self.w
        t = w.new_ticket(queue_id=w.q1)
        tid = t["id"]
        w.api("PATCH", "/api/v1/tickets/%d" % tid, {"status": "solved", "version": 1})
        st, _, r = self.api("POST", "/api/v1/tickets/%d/messages" % tid, {"text": "still broken"},
                            who="alice")
        self.assertEqual(st, 201, r)
        self.assertEqual((r["id"], r["status"], r["reopened"], r["created_ticket"]),
                         (tid, "open", True, False))
        self.assertEqual(w.count("event", "ticket_id = %d AND kind = 'ticket.reopened'" % tid), 1)
        w.api("PATCH", "/api/v1/tickets/%d" % tid, {"status": "closed", "version": r["version"]})
        st, _, f = self.api("POST", "/api/v1/tickets/%d/messages" % tid,
                            {"text": "new problem", "external_id": "cw-1"}, who="alice")
        self.assertEqual(st, 201, f)
        self.assertNotEqual(f["id"], tid)
        self.assertEqual((f["follow_up_of_id"], f["follow_up_of"], f["created_ticket"]),
                         (tid, tid, True))
        self.assertEqual(f["subject"], t["subject"])
        self.assertEqual(f["customer"]["id"], t["customer"]["id"])
        # Repeating the same external id: the same result, nothing new.
        before = w.counts()
        st, _, again = self.api("POST", "/api/v1/tickets/%d/messages" % tid,
                                {"text": "new problem", "external_id": "cw-1"}, who="alice")
        self.assertEqual(st, 200, again)
        self.assertEqual(again["id"], f["id"])
        self.assertEqual(w.counts(), before)

    # -- merge

    def test_merge(self):
        w = self.w
        a = w.new_ticket(queue_id=w.q1, email="merge-a@example.org")
        b = w.new_ticket(queue_id=w.q1, email="merge-b@example.org")
        c = w.new_ticket(queue_id=w.q2)
        self.api("POST", "/api/v1/tickets/%d/notes" % a["id"], {"text": "note on a"}, who="alice")
        st, _, p = self.api("POST", "/api/v1/tickets/%d/merge" % a["id"], {"into_id": a["id"]},
                            who="alice")
        self.assertEqual(st, 422, p)
        # alice cannot see c: as a target it does not exist for her.
        st, _, p = self.api("POST", "/api/v1/tickets/%d/merge" % a["id"], {"into_id": c["id"]},
                            who="alice")
        self.assertEqual(st, 422, p)
        self.assertEqual(p["errors"][0]["field"], "into_id")
        st, _, p = self.api("POST", "/api/v1/tickets/%d/merge" % a["id"], {"into_id": 99999999},
                            who="alice")
        self.assertEqual(st, 422, p)
        st, _, m = self.api("POST", "/api/v1/tickets/%d/merge" % a["id"], {"into_id": b["id"]},
                            who="alice")
        self.assertEqual(st, 200, m)
        self.assertEqual((m["id"], m["merged_from_id"], m["messages_moved"]),
                         (b["id"], a["id"], 2))
        _, _, src = self.api("GET", "/api/v1/tickets/%d" % a["id"], who="alice")
        self.assertEqual((src["status"], src["merged_into_id"]), ("closed", b["id"]))
        self.assertEqual(src["messages"], [])
        _, _, dst = self.api("GET", "/api/v1/tickets/%d" % b["id"], who="alice")
        self.assertEqual(len(dst["messages"]), 3)
        self.assertEqual(w.count("event", "ticket_id = %d AND kind = 'ticket.merged'" % a["id"]), 1)
        self.assertEqual(w.count("event", "ticket_id = %d AND kind = 'ticket.merged_in'"
                                 % b["id"]), 1)
        st, _, p = self.api("POST", "/api/v1/tickets/%d/merge" % a["id"], {"into_id": b["id"]},
                            who="alice")
        self.assertEqual(st, 409, p)
        # Writing to a merged ticket is refused; a customer message goes to the survivor.
        self.assertEqual(self.api("POST", "/api/v1/tickets/%d/replies" % a["id"], {"text": "x"},
                                  who="alice")[0], 409)
        st, _, r = self.api("POST", "/api/v1/tickets/%d/messages" % a["id"], {"text": "hi"},
                            who="alice")
        self.assertEqual((st, r["id"]), (201, b["id"]))

    # -- bad input

    def test_bad_input_table(self):
        w = self.w
        t = w.new_ticket(queue_id=w.q1)
        tp = "/api/v1/tickets/%d" % t["id"]
        ok = {"subject": "s", "text": "t", "customer": {"email": "bad-input@example.org"}}
        big = b'{"subject":"s","text":"' + b"x" * (1024 * 1024 + 10) + b'","customer":{"id":1}}'
        cases = [
            # (method, path, body dict or raw bytes, status, field or None)
            ("POST", "/api/v1/tickets", b"{not json", 400, None),
            ("POST", "/api/v1/tickets", b"[1,2]", 400, None),
            ("POST", "/api/v1/tickets", b"", 400, None),
            ("POST", "/api/v1/tickets", b'{"subject":"\xc3\x28","text":"t"}', 400, None),
            ("POST", "/api/v1/tickets", b'{"subject":"a","subject":"b"}', 400, None),
            ("POST", "/api/v1/tickets", big, 413, None),
            ("POST", "/api/v1/tickets", dict(ok, subject="x" * 256), 422, "subject"),
            ("POST", "/api/v1/tickets", dict(ok, subject="é" * 128), 422, "subject"),
            ("POST", "/api/v1/tickets", dict(ok, subject=""), 422, "subject"),
            ("POST", "/api/v1/tickets", dict(ok, subject=5), 422, "subject"),
            ("POST", "/api/v1/tickets", dict(ok, text=None), 422, "text"),
            ("POST", "/api/v1/tickets", dict(ok, text="a\u0000b"), 400, None),  # jansson: no NUL
            ("POST", "/api/v1/tickets", dict(ok, priority="asap"), 422, "priority"),
            ("POST", "/api/v1/tickets", dict(ok, queue_id=-1), 422, "queue_id"),
            ("POST", "/api/v1/tickets", dict(ok, queue_id=0), 422, "queue_id"),
            ("POST", "/api/v1/tickets", dict(ok, queue_id="1"), 422, "queue_id"),
            ("POST", "/api/v1/tickets", dict(ok, queue_id=1.5), 422, "queue_id"),
            ("POST", "/api/v1/tickets", b'{"subject":"s","text":"t","customer":{"id":1},'
                                        b'"queue_id":99999999999999999999999}', 400, None),
            ("POST", "/api/v1/tickets", dict(ok, tags="vip"), 422, "tags"),
            ("POST", "/api/v1/tickets", dict(ok, tags=["a b"]), 422, "tags"),
            ("POST", "/api/v1/tickets", dict(ok, tags=["x" * 65]), 422, "tags"),
            ("POST", "/api/v1/tickets", dict(ok, tags=["a", "A"]), 422, "tags"),
            ("POST", "/api/v1/tickets", dict(ok, tags=["t%d" % i for i in range(33)]), 422, "tags"),
            ("POST", "/api/v1/tickets", dict(ok, external_id=""), 422, "external_id"),
            ("POST", "/api/v1/tickets", dict(ok, external_id="e" * 256), 422, "external_id"),
            ("POST", "/api/v1/tickets", dict(ok, send_ack="yes"), 422, "send_ack"),
            ("POST", "/api/v1/tickets", dict(ok, bogus=1), 422, "bogus"),
            ("POST", "/api/v1/tickets", dict(ok, customer=None), 422, "customer"),
            ("POST", "/api/v1/tickets", dict(ok, customer="a@b.c"), 422, "customer"),
            ("POST", "/api/v1/tickets", dict(ok, customer={}), 422, "customer.email"),
            ("POST", "/api/v1/tickets", dict(ok, customer={"email": "nope"}), 422,
             "customer.email"),
            ("POST", "/api/v1/tickets", dict(ok, customer={"email": "a@b.c", "id": 1}), 422,
             "customer.id"),
            ("POST", "/api/v1/tickets", dict(ok, customer={"id": 99999999}), 422, "customer.id"),
            ("POST", "/api/v1/tickets", dict(ok, customer={"email": "a@b.c", "shoe": 9}), 422,
             "customer.shoe"),
            ("POST", "/api/v1/tickets", dict(ok, customer={"email": "a@b.c", "name": "n" * 201}),
             422, "customer.name"),
            ("POST", "/api/v1/tickets", dict(ok, customer={"email": "a@b.c", "locale": "x y"}),
             422, "customer.locale"),
            ("GET", "/api/v1/tickets/-1", None, 422, "id"),
            ("GET", "/api/v1/tickets/0", None, 422, "id"),
            ("GET", "/api/v1/tickets/abc", None, 422, "id"),
            ("GET", "/api/v1/tickets/99999999999999999999", None, 422, "id"),
            ("GET", "/api/v1/tickets/9223372036854775808", None, 422, "id"),
            ("PATCH", tp, {"status": "sleeping", "version": 1}, 422, "status"),
            ("PATCH", tp, {"priority": 3, "version": 1}, 422, "priority"),
            ("PATCH", tp, {"assignee_id": -4, "version": 1}, 422, "assignee_id"),
            ("PATCH", tp, {"queue_id": "two", "version": 1}, 422, "queue_id"),
            ("PATCH", tp, {"subject": "no", "version": 1}, 422, "subject"),
            ("PATCH", tp, {"version": -1}, 422, "version"),
            ("PATCH", tp, {"version": 4294967296}, 422, "version"),
            ("PATCH", tp, b'{"version":1,}', 400, None),
            ("POST", tp + "/replies", {"text": ""}, 422, "text"),
            ("POST", tp + "/replies", {"text": "x" * 1000001}, 422, "text"),
            ("POST", tp + "/replies", {"text": "x", "status": "gone"}, 422, "status"),
            ("POST", tp + "/replies", {"text": "x", "cc": "boss"}, 422, "cc"),
            ("POST", tp + "/notes", {"text": "x", "status": "open"}, 422, "status"),
            ("POST", tp + "/notes", {"body": "x"}, 422, "text"),
            ("POST", tp + "/messages", {"text": "x", "external_id": ""}, 422, "external_id"),
            ("POST", tp + "/merge", {"into_id": "7"}, 422, "into_id"),
            ("POST", tp + "/merge", {}, 422, "into_id"),
        ]
        before = w.counts()
        for method, path, body, want, field in cases:
            if isinstance(body, bytes):
                st, hdrs, p = w.api(method, path, raw=body, who="alice")
            else:
                st, hdrs, p = w.api(method, path, body, who="alice")
            self.assertEqual(st, want, (method, path, str(body)[:80], p))
            self.assertEqual(hdrs.get("content-type"), "application/problem+json", path)
            self.assertEqual(p["status"], want)
            if field is not None:
                self.assertIn(field, [e["field"] for e in p.get("errors", [])],
                              (path, str(body)[:80], p))
        st, _, p = w.api("POST", "/api/v1/tickets", ok, who="alice",
                         headers={"Content-Type": "text/plain"})
        self.assertEqual(st, 415, p)
        self.assertEqual(w.counts(), before)


if __name__ == "__main__":
    kefutest.main(need_db=True)
