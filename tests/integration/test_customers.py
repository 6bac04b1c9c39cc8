"""Customer API against the real kefud and MariaDB: profile with identities and
every ticket across channels (only those the caller may see), search by name
prefix / e-mail / identity with keyset pages, update with validation,
identities (409 when someone else has it), and merge (supervisor+):
identities, tickets and messages move, the source is marked merged, events
record it, and later mail from the source's address reaches the survivor."""

import json
import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefu_api  # noqa: E402


class Customers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = kefu_api.World(cls.addClassCleanup)

    @classmethod
    def tearDownClass(cls):
        assert cls.w.stop() == 0, cls.w.k.tail()

    def api(self, *a, **kw):
        return self.w.api(*a, **kw)

    def email_ticket(self, customer_id, queue_id, subject):
        """A ticket that came in by e-mail (inserted directly: no mail channel yet)."""
        self.w.db.query("INSERT INTO ticket (subject, channel, channel_account, customer_id, "
                        "queue_id) VALUES ('%s', 'email', 'support@kefu.example', %d, %d)"
                        % (subject, customer_id, queue_id))
        return int(self.w.db.scalar("SELECT MAX(id) FROM ticket"))

    def test_profile_with_tickets_across_channels(self):
        w = self.w
        t = w.new_ticket(queue_id=w.q1, email="Profile@Example.org")
        cid = t["customer"]["id"]
        mail_t = self.email_ticket(cid, w.q1, "By mail")
        other_q = self.email_ticket(cid, w.q2, "Other queue")
        st, _, c = self.api("GET", "/api/v1/customers/%d" % cid, who="sam")
        self.assertEqual(st, 200, c)
        self.assertEqual((c["id"], c["primary_email"], c["locale"], c["tier"]),
                         (cid, "profile@example.org", "en", "standard"))
        self.assertIsNone(c["merged_into_id"])
        self.assertEqual([(i["kind"], i["value"]) for i in c["identities"]],
                         [("email", "profile@example.org")])
        self.assertEqual(sorted((x["id"], x["channel"]) for x in c["tickets"]),
                         sorted([(t["id"], "api"), (mail_t, "email"), (other_q, "email")]))
        self.assertIsNone(c["tickets_next"])
        # An agent sees the profile but only the tickets of their queues.
        st, _, c = self.api("GET", "/api/v1/customers/%d" % cid, who="alice")
        self.assertEqual(st, 200)
        self.assertEqual(sorted(x["id"] for x in c["tickets"]), sorted([t["id"], mail_t]))
        st, _, c = self.api("GET", "/api/v1/customers/%d" % cid, who="bot")
        self.assertEqual((st, c["tickets"]), (200, []))
        self.assertEqual(self.api("GET", "/api/v1/customers/99999999")[0], 404)
        st, _, p = self.api("GET", "/api/v1/customers/-3")
        self.assertEqual(st, 422, p)

    def test_search(self):
        w = self.w
        made = []
        for i in range(5):
            t = w.new_ticket(email="zed%d@search.example" % i, customer={
                "email": "zed%d@search.example" % i, "name": "Zebedee %d" % i})
            made.append(t["customer"]["id"])
        st, _, c = self.api("POST", "/api/v1/customers/%d/identities" % made[2],
                            {"kind": "wechat_openid", "value": "oZED_OPENID"})
        self.assertEqual(st, 201, c)

        def search(q, who="alice"):
            st, _, page = self.api("GET", "/api/v1/customers?" + q, who=who)
            self.assertEqual(st, 200, page)
            return page

        self.assertEqual([c["id"] for c in search("q=zebedee")["items"]], made)
        self.assertEqual([c["id"] for c in search("q=Zebedee%203")["items"]], [made[3]])
        self.assertEqual([c["id"] for c in search("q=zed4%40search.example")["items"]], [made[4]])
        self.assertEqual([c["id"] for c in search("q=oZED_OPENID")["items"]], [made[2]])
        self.assertEqual(search("q=%25")["items"], [])  # a literal %, not a wildcard
        self.assertEqual(search("q=_")["items"], [])
        # Pages of 2 through the five, in id order, no repeats.
        seen, after = [], None
        while True:
            page = search("q=zebedee&limit=2" + ("&after=" + after if after else ""))
            seen += [c["id"] for c in page["items"]]
            after = page["next"]
            if after is None:
                break
        self.assertEqual(seen, made)
        everyone = search("limit=200")["items"]
        self.assertTrue(set(made) <= {c["id"] for c in everyone})
        for q, field in [("q=" + "x" * 255, "q"), ("limit=0", "limit"), ("limit=x", "limit"),
                         ("after=bogus", "after"), ("name=zed", "name"), ("q=a&q=b", "q"),
                         ("q=%ff", "q")]:
            st, _, p = self.api("GET", "/api/v1/customers?" + q)
            self.assertEqual(st, 422, (q, p))
            self.assertIn(field, [e["field"] for e in p["errors"]], q)

    def test_update(self):
        w = self.w
        t = w.new_ticket(email="upd@example.org")
        cid = t["customer"]["id"]
        path = "/api/v1/customers/%d" % cid
        st, _, c = self.api("PATCH", path, {
            "name": "Ursula Update", "phone": "+86 138 0000 0000", "locale": "zh-CN",
            "tier": "gold", "tags": ["VIP"], "notes": "Prefers WeChat.",
            "primary_email": "ursula@example.org"}, who="alice")
        self.assertEqual(st, 200, c)
        self.assertEqual((c["name"], c["phone"], c["locale"], c["tier"], c["tags"], c["notes"],
                          c["primary_email"]),
                         ("Ursula Update", "+86 138 0000 0000", "zh-CN", "gold", ["vip"],
                          "Prefers WeChat.", "ursula@example.org"))
        st, _, c = self.api("PATCH", path, {"phone": None}, who="alice")
        self.assertEqual((st, c["phone"], c["name"]), (200, None, "Ursula Update"))
        ev = w.db.query("SELECT data FROM event WHERE kind = 'customer.updated' ORDER BY id DESC "
                        "LIMIT 1")
        d = json.loads(ev[0][0])
        self.assertEqual((d["customer_id"], d["fields"]), (cid, ["phone"]))
        before = w.counts()
        updated = w.db.scalar("SELECT updated_at FROM customer WHERE id = %d" % cid)
        for body, field in [({"name": "n" * 201}, "name"), ({"name": 7}, "name"),
                            ({"primary_email": "not-mail"}, "primary_email"),
                            ({"phone": "call me"}, "phone"), ({"locale": ""}, "locale"),
                            ({"locale": "en US"}, "locale"), ({"tier": "t" * 33}, "tier"),
                            ({"tags": "vip"}, "tags"), ({"notes": "n" * 65536}, "notes"),
                            ({"id": 5}, "id"), ({"merged_into_id": 1}, "merged_into_id")]:
            st, _, p = self.api("PATCH", path, body, who="alice")
            self.assertEqual(st, 422, (body, p))
            self.assertIn(field, [e["field"] for e in p["errors"]], body)
        self.assertEqual(self.api("PATCH", path, raw=b"{", who="alice")[0], 400)
        self.assertEqual(self.api("PATCH", "/api/v1/customers/99999999", {"name": "x"})[0], 404)
        self.assertEqual(w.counts(), before)
        self.assertEqual(w.db.scalar("SELECT updated_at FROM customer WHERE id = %d" % cid),
                         updated)

    def test_identities(self):
        w = self.w
        a = w.new_ticket(email="ident-a@example.org")["customer"]["id"]
        b = w.new_ticket(email="ident-b@example.org")["customer"]["id"]
        path = "/api/v1/customers/%d/identities" % a
        st, _, c = self.api("POST", path, {"kind": "wechat_openid", "value": "oIDENT_A"})
        self.assertEqual(st, 201, c)
        self.assertIn(("wechat_openid", "oIDENT_A"),
                      [(i["kind"], i["value"]) for i in c["identities"]])
        self.assertEqual(self.api("POST", path, {"kind": "wechat_openid", "value": "oIDENT_A"})[0],
                         200)
        st, _, p = self.api("POST", "/api/v1/customers/%d/identities" % b,
                            {"kind": "wechat_openid", "value": "oIDENT_A"})
        self.assertEqual(st, 409, p)
        self.assertEqual(p["errors"][0]["field"], "value")
        st, _, p = self.api("POST", "/api/v1/customers/%d/identities" % b,
                            {"kind": "email", "value": "IDENT-A@example.org"})
        self.assertEqual(st, 409, p)  # addresses compare case-insensitively
        before = w.counts()
        for body, field in [({"kind": "fax", "value": "1"}, "kind"),
                            ({"kind": "email", "value": "no"}, "value"),
                            ({"kind": "phone", "value": "abc"}, "value"),
                            ({"kind": "wechat_openid", "value": "has space"}, "value"),
                            ({"kind": "web", "value": ""}, "value"),
                            ({"kind": "web", "value": "v" * 255}, "value"),
                            ({"kind": "web"}, "value"), ({"value": "x"}, "kind"),
                            ({"kind": "web", "value": "x", "extra": 1}, "extra")]:
            st, _, p = self.api("POST", path, body)
            self.assertEqual(st, 422, (body, p))
            self.assertIn(field, [e["field"] for e in p["errors"]], body)
        self.assertEqual(self.api("POST", "/api/v1/customers/99999999/identities",
                                  {"kind": "web", "value": "x"})[0], 404)
        self.assertEqual(w.counts(), before)

    def test_merge_moves_everything(self):
        w = self.w
        keep = w.new_ticket(queue_id=w.q1, email="keep@example.org",
                            customer={"email": "keep@example.org", "name": "Keeper"})
        gone = w.new_ticket(queue_id=w.q1, email="gone@example.org",
                            customer={"email": "gone@example.org", "name": "Goner"})
        into, frm = keep["customer"]["id"], gone["customer"]["id"]
        self.api("POST", "/api/v1/customers/%d/identities" % frm,
                 {"kind": "wechat_openid", "value": "oGONE"})
        self.api("PATCH", "/api/v1/customers/%d" % frm, {"phone": "+1 555 0100", "tags": ["old"],
                                                          "notes": "from gone"})
        self.api("PATCH", "/api/v1/customers/%d" % into, {"tags": ["new"], "notes": "keeper"})
        mail_t = self.email_ticket(frm, w.q2, "Gone by mail")
        path = "/api/v1/customers/%d/merge" % into

        # Role: agents may not merge customers.
        st, _, p = self.api("POST", path, {"from_id": frm}, who="alice")
        self.assertEqual(st, 403, p)
        for body, want, field in [({"from_id": into}, 422, "from_id"),
                                  ({"from_id": 99999999}, 422, "from_id"),
                                  ({"from_id": "x"}, 422, "from_id"), ({}, 422, "from_id"),
                                  ({"from_id": frm, "x": 1}, 422, "x")]:
            st, _, p = self.api("POST", path, body, who="sam")
            self.assertEqual(st, want, (body, p))
            self.assertIn(field, [e["field"] for e in p["errors"]])
        self.assertEqual(self.api("POST", "/api/v1/customers/99999999/merge", {"from_id": frm},
                                  who="sam")[0], 404)

        st, _, c = self.api("POST", path, {"from_id": frm}, who="sam")
        self.assertEqual(st, 200, c)
        self.assertEqual(c["merged"], {"from_id": frm, "identities_moved": 2, "tickets_moved": 2,
                                       "messages_moved": 1})
        self.assertEqual(sorted((i["kind"], i["value"]) for i in c["identities"]),
                         [("email", "gone@example.org"), ("email", "keep@example.org"),
                          ("wechat_openid", "oGONE")])
        self.assertEqual(sorted(t["id"] for t in c["tickets"]),
                         sorted([keep["id"], gone["id"], mail_t]))
        self.assertEqual((c["name"], c["phone"], c["tags"], c["notes"]),
                         ("Keeper", "+1 555 0100", ["new", "old"], "keeper\n\nfrom gone"))
        self.assertEqual(w.count("ticket", "customer_id = %d" % frm), 0)
        self.assertEqual(w.count("customer_identity", "customer_id = %d" % frm), 0)
        self.assertEqual(w.count("message", "author_customer_id = %d" % frm), 0)
        # The source stays, marked; events record the merge and each moved ticket.
        st, _, src = self.api("GET", "/api/v1/customers/%d" % frm)
        self.assertEqual((st, src["merged_into_id"], src["identities"], src["tickets"]),
                         (200, into, [], []))
        ev = w.db.query("SELECT data FROM event WHERE kind = 'customer.merged' ORDER BY id DESC "
                        "LIMIT 1")
        d = json.loads(ev[0][0])
        self.assertEqual((d["into_id"], d["from_id"], d["tickets_moved"]), (into, frm, 2))
        self.assertEqual(w.count("event", "kind = 'ticket.customer_changed' AND ticket_id IN "
                                          "(%d, %d)" % (gone["id"], mail_t)), 2)
        _, _, g = self.api("GET", "/api/v1/tickets/%d" % gone["id"])
        self.assertEqual(g["customer"]["id"], into)
        self.assertEqual(g["version"], 2)
        # The merged customer is out of search results; merging it again is a conflict.
        st, _, page = self.api("GET", "/api/v1/customers?q=Goner")
        self.assertEqual(page["items"], [])
        st, _, p = self.api("POST", path, {"from_id": frm}, who="sam")
        self.assertEqual(st, 409, p)
        st, _, p = self.api("POST", "/api/v1/customers/%d/merge" % frm, {"from_id": into},
                            who="sam")
        self.assertEqual(st, 409, p)
        self.assertEqual(self.api("PATCH", "/api/v1/customers/%d" % frm, {"name": "x"})[0], 409)
        # New mail from the old address lands on the survivor; so does a ticket by old id.
        t = w.new_ticket(email="gone@example.org")
        self.assertEqual(t["customer"]["id"], into)
        st, _, t = self.api("POST", "/api/v1/tickets", {"subject": "s", "text": "t",
                                                        "customer": {"id": frm}})
        self.assertEqual((st, t["customer"]["id"]), (201, into))


if __name__ == "__main__":
    kefutest.main(need_db=True)
