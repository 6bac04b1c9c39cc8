"""Admin API: agents (CRUD, password, sessions, presence), queues and members, API tokens."""

import json
import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefuauth  # noqa: E402
from kefuauth import bearer, login, login_raw, problem, request  # noqa: E402


class AdminApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = kefutest.fresh_db(cls.addClassCleanup)
        cls.kefud = kefutest.Kefud(cls.db, register=cls.addClassCleanup).start()
        cls.root = kefuauth.create_agent(cls.db, "root", role="admin")
        cls.admin = login(cls.kefud, "root", cls.root.password)
        cls.admin_token = kefuauth.create_token(cls.db, "admin")
        cls.sup_token = kefuauth.create_token(cls.db, "supervisor")
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        assert cls.kefud.stop() == 0, "kefud did not exit 0 after SIGTERM"

    # -- helpers

    def api(self, method, path, body=None, token=None, **kw):
        """As the admin session (cookie + CSRF) unless a token is given."""
        if token:
            return request(self.kefud, method, path, body, headers=bearer(token), **kw)
        return self.admin.request(method, path, body, **kw)

    def ok(self, r, status=200):
        self.assertEqual(r[0], status, r[2][:800])
        return json.loads(r[2]) if r[2] else None

    def assertProblem(self, r, status, code=None, fields=None):
        self.assertEqual(r[0], status, r[2][:800])
        p = problem(r[2])
        if code:
            self.assertEqual(p["type"], "/problems/" + code, p)
        if fields is not None:
            self.assertEqual(sorted({e["field"] for e in p.get("errors", [])}), sorted(fields), p)
        return p

    def unique(self, prefix):
        AdminApi.n += 1
        return "%s%d" % (prefix, AdminApi.n)

    def new_agent(self, **kw):
        login_name = self.unique("ag")
        body = {"login": login_name, "display_name": "Agent " + login_name,
                "email": login_name + "@example.com", "password": "pw-" + login_name + "-secret"}
        body.update(kw)
        a = self.ok(self.api("POST", "/api/v1/agents", body), 201)
        a["password"] = body["password"]
        return a

    def new_queue(self, **kw):
        slug = self.unique("q")
        body = {"name": "Queue " + slug, "slug": slug}
        body.update(kw)
        return self.ok(self.api("POST", "/api/v1/queues", body), 201)

    # -- agents

    def test_agent_create_get_list(self):
        q = self.new_queue()
        r = self.api("POST", "/api/v1/agents", {
            "login": "ada.l", "display_name": "Ada Lovelace", "email": "ada@example.com",
            "role": "supervisor", "password": "analytical-engine", "capacity": 0,
            "skills": ["billing", "中文"], "queue_ids": [q["id"]]})
        a = self.ok(r, 201)
        self.assertEqual(r[1]["location"], "/api/v1/agents/%d" % a["id"])
        for k, v in {"login": "ada.l", "display_name": "Ada Lovelace", "email": "ada@example.com",
                     "role": "supervisor", "presence": "offline", "capacity": 0,
                     "skills": ["billing", "中文"], "active": True, "queue_ids": [q["id"]]}.items():
            self.assertEqual(a[k], v, k)
        self.assertNotIn("password", a)
        self.assertNotIn("password_hash", a)
        self.assertRegex(a["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertTrue(self.db.scalar("SELECT password_hash FROM agent WHERE id = %d" % a["id"])
                        .startswith("$argon2id$"))
        self.assertEqual(self.ok(self.api("GET", "/api/v1/agents/%d" % a["id"])), a)
        self.assertEqual(self.ok(self.api("GET", "/api/v1/agents/%d" % a["id"], token=self.sup_token)), a)
        # The new agent can log in.
        s = login(self.kefud, "ada.l", "analytical-engine")
        self.assertEqual(s.body["agent"]["role"], "supervisor")
        # Audited.
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM event WHERE kind = 'agent.created' AND "
                                        "JSON_VALUE(data, '$.agent_id') = %d AND actor_id = %d"
                                        % (a["id"], self.root.id)), "1")

    def test_agent_defaults(self):
        a = self.new_agent()
        self.assertEqual((a["role"], a["capacity"], a["skills"], a["active"], a["queue_ids"]),
                         ("agent", 10, [], True, []))

    def test_agent_duplicate_login(self):
        a = self.new_agent()
        body = {"login": a["login"].upper(), "display_name": "X", "email": "x@example.com",
                "password": "long-enough"}
        self.assertProblem(self.api("POST", "/api/v1/agents", body), 409, "conflict", ["login"])

    def test_agent_validation(self):
        p = self.assertProblem(self.api("POST", "/api/v1/agents", {
            "login": " bad login", "display_name": "", "email": "not-an-email", "role": "root",
            "password": "short", "capacity": -1, "skills": "billing", "active": "yes",
            "queue_ids": [0], "colour": "blue"}), 422, "validation",
            ["login", "display_name", "email", "role", "password", "capacity", "skills", "active",
             "queue_ids", "colour"])
        self.assertTrue(any(e["field"] == "colour" and "unknown" in e["detail"] for e in p["errors"]))
        self.assertProblem(self.api("POST", "/api/v1/agents", {}), 422, "validation",
                           ["login", "display_name", "email", "password"])
        self.assertProblem(self.api("POST", "/api/v1/agents", {
            "login": "x" * 65, "display_name": "d" * 201, "email": "a@" + "b" * 260,
            "password": "p" * 1025}), 422, "validation", ["login", "display_name", "email", "password"])
        self.assertProblem(self.api("POST", "/api/v1/agents", {
            "login": "dupskill", "display_name": "D", "email": "d@example.com", "password": "long-enough",
            "skills": ["a", "a"]}), 422, "validation", ["skills"])
        self.assertProblem(self.api("POST", "/api/v1/agents", b"[1,2]",
                                    headers={"Content-Type": "application/json"}), 400, "bad-json")
        self.assertProblem(self.api("POST", "/api/v1/agents", b'{"login":"a","login":"b"}',
                                    headers={"Content-Type": "application/json"}), 400, "bad-json")
        # Unknown queue: nothing is written.
        self.assertProblem(self.api("POST", "/api/v1/agents", {
            "login": "noqueue", "display_name": "N", "email": "n@example.com",
            "password": "long-enough", "queue_ids": [987654]}), 422, "validation", ["queue_ids"])
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM agent WHERE login = 'noqueue'"), "0")

    def test_agent_ids_in_path(self):
        self.assertProblem(self.api("GET", "/api/v1/agents/987654"), 404, "not-found")
        for bad in ("abc", "0", "-1", "99999999999999999999", "1.5"):
            self.assertProblem(self.api("GET", "/api/v1/agents/" + bad), 422, None, ["id"])
        self.assertProblem(self.api("PATCH", "/api/v1/agents/987654", {"capacity": 3}), 404)
        self.assertProblem(self.api("PUT", "/api/v1/agents/987654/password", {"password": "long-enough"}),
                           404)
        self.assertProblem(self.api("DELETE", "/api/v1/agents/987654/sessions"), 404)

    def test_agent_list_pagination_and_filters(self):
        made = [self.new_agent(role="supervisor")["id"] for _ in range(5)]
        seen, after, pages = [], None, 0
        while True:
            path = "/api/v1/agents?limit=2" + ("&after=" + after if after else "")
            page = self.ok(self.api("GET", path, token=self.sup_token))
            self.assertLessEqual(len(page["items"]), 2)
            seen += [a["id"] for a in page["items"]]
            pages += 1
            after = page["next"]
            if after is None:
                break
            self.assertIsInstance(after, str)
        self.assertEqual(seen, sorted(set(seen)))
        self.assertTrue(set(made) <= set(seen))
        self.assertEqual(len(seen), int(self.db.scalar("SELECT COUNT(*) FROM agent")))
        self.assertGreaterEqual(pages, 3)
        sups = self.ok(self.api("GET", "/api/v1/agents?role=supervisor&limit=200"))["items"]
        self.assertTrue(sups and all(a["role"] == "supervisor" for a in sups))
        self.assertTrue(set(made) <= {a["id"] for a in sups})
        inactive = self.ok(self.api("GET", "/api/v1/agents?active=false"))["items"]
        self.assertTrue(all(not a["active"] for a in inactive))
        self.assertProblem(self.api("GET", "/api/v1/agents?limit=0"), 422, None, ["limit"])
        self.assertProblem(self.api("GET", "/api/v1/agents?limit=201"), 422, None, ["limit"])
        self.assertProblem(self.api("GET", "/api/v1/agents?limit=x"), 422, None, ["limit"])
        self.assertProblem(self.api("GET", "/api/v1/agents?after=-5"), 422, None, ["after"])
        self.assertProblem(self.api("GET", "/api/v1/agents?role=root"), 422, None, ["role"])
        self.assertProblem(self.api("GET", "/api/v1/agents?active=maybe"), 422, None, ["active"])

    def test_agent_update(self):
        a = self.new_agent()
        q1, q2 = self.new_queue(), self.new_queue()
        b = self.ok(self.api("PATCH", "/api/v1/agents/%d" % a["id"], {
            "display_name": "Renamed", "email": "new@example.com", "role": "supervisor",
            "capacity": 25, "skills": ["vip"], "queue_ids": [q2["id"], q1["id"]]}))
        self.assertEqual((b["display_name"], b["email"], b["role"], b["capacity"], b["skills"]),
                         ("Renamed", "new@example.com", "supervisor", 25, ["vip"]))
        self.assertEqual(b["queue_ids"], sorted([q1["id"], q2["id"]]))
        self.assertEqual(b["login"], a["login"])
        # Untouched fields stay; an empty patch changes nothing.
        c = self.ok(self.api("PATCH", "/api/v1/agents/%d" % a["id"], {"capacity": 3}))
        self.assertEqual((c["display_name"], c["capacity"], c["queue_ids"]),
                         ("Renamed", 3, b["queue_ids"]))
        self.assertEqual(self.ok(self.api("PATCH", "/api/v1/agents/%d" % a["id"], {}))["capacity"], 3)
        self.assertProblem(self.api("PATCH", "/api/v1/agents/%d" % a["id"], {"login": "renamed"}),
                           422, "validation", ["login"])
        self.assertProblem(self.api("PATCH", "/api/v1/agents/%d" % a["id"], {"password": "x" * 10}),
                           422, "validation", ["password"])
        self.assertProblem(self.api("PATCH", "/api/v1/agents/%d" % a["id"], {"capacity": 1001}),
                           422, "validation", ["capacity"])
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM event WHERE kind = 'agent.updated' AND "
                                        "JSON_VALUE(data, '$.agent_id') = %d" % a["id"]), "2")

    def test_deactivation_revokes_sessions(self):
        a = self.new_agent()
        s = login(self.kefud, a["login"], a["password"])
        self.assertEqual(s.request("GET", "/api/v1/session/me")[0], 200)
        b = self.ok(self.api("PATCH", "/api/v1/agents/%d" % a["id"], {"active": False}))
        self.assertFalse(b["active"])
        self.assertEqual(s.request("GET", "/api/v1/session/me")[0], 401)
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM session WHERE agent_id = %d AND "
                                        "revoked_at IS NULL" % a["id"]), "0")
        self.assertEqual(login_raw(self.kefud, a["login"], a["password"])[0], 401)
        self.ok(self.api("PATCH", "/api/v1/agents/%d" % a["id"], {"active": True}))
        login(self.kefud, a["login"], a["password"])

    def test_last_admin_is_protected(self):
        admins = self.ok(self.api("GET", "/api/v1/agents?role=admin&active=true&limit=200"))["items"]
        self.assertEqual([x["id"] for x in admins], [self.root.id])
        self.assertProblem(self.api("PATCH", "/api/v1/agents/%d" % self.root.id, {"role": "agent"}),
                           409, "conflict", ["role"])
        self.assertProblem(self.api("PATCH", "/api/v1/agents/%d" % self.root.id, {"active": False}),
                           409, "conflict", ["active"])
        self.assertEqual(self.db.scalar("SELECT role FROM agent WHERE id = %d" % self.root.id), "admin")
        # With a second admin, the first may step down (and back).
        other = self.new_agent(role="admin")
        self.ok(self.api("PATCH", "/api/v1/agents/%d" % self.root.id, {"role": "supervisor"},
                         token=self.admin_token))
        self.ok(self.api("PATCH", "/api/v1/agents/%d" % self.root.id, {"role": "admin"},
                         token=self.admin_token))
        self.ok(self.api("PATCH", "/api/v1/agents/%d" % other["id"], {"active": False}))

    def test_set_password(self):
        a = self.new_agent()
        s = login(self.kefud, a["login"], a["password"])
        self.assertProblem(self.api("PUT", "/api/v1/agents/%d/password" % a["id"], {"password": "short"}),
                           422, "validation", ["password"])
        self.assertProblem(self.api("PUT", "/api/v1/agents/%d/password" % a["id"], {}),
                           422, "validation", ["password"])
        r = self.api("PUT", "/api/v1/agents/%d/password" % a["id"], {"password": "brand-new-password"})
        self.assertEqual(r[0], 204, r[2])
        self.assertEqual(s.request("GET", "/api/v1/session/me")[0], 401)
        self.assertEqual(login_raw(self.kefud, a["login"], a["password"], source="127.0.1.1")[0], 401)
        login(self.kefud, a["login"], "brand-new-password")

    def test_revoke_sessions(self):
        a = self.new_agent()
        s1 = login(self.kefud, a["login"], a["password"])
        s2 = login(self.kefud, a["login"], a["password"])
        self.assertEqual(self.ok(self.api("DELETE", "/api/v1/agents/%d/sessions" % a["id"])),
                         {"revoked": 2})
        for s in (s1, s2):
            self.assertEqual(s.request("GET", "/api/v1/session/me")[0], 401)
        self.assertEqual(self.ok(self.api("DELETE", "/api/v1/agents/%d/sessions" % a["id"])),
                         {"revoked": 0})

    def test_presence(self):
        a = self.new_agent()
        s = login(self.kefud, a["login"], a["password"])
        self.assertEqual(self.ok(s.request("PUT", "/api/v1/agents/me/presence", {"presence": "away"})),
                         {"agent_id": a["id"], "presence": "away"})
        self.assertEqual(self.ok(self.api("GET", "/api/v1/agents/%d" % a["id"]))["presence"], "away")
        self.assertProblem(s.request("PUT", "/api/v1/agents/me/presence", {"presence": "busy"}),
                           422, "validation", ["presence"])
        self.assertProblem(s.request("PUT", "/api/v1/agents/me/presence", {}), 422, "validation",
                           ["presence"])
        # A token not bound to an agent has no presence.
        self.assertProblem(self.api("PUT", "/api/v1/agents/me/presence", {"presence": "online"},
                                    token=self.admin_token), 400, "not-an-agent")
        # A token bound to an agent sets that agent's presence.
        t = kefuauth.create_token(self.db, "agent", agent=a["login"])
        self.ok(self.api("PUT", "/api/v1/agents/me/presence", {"presence": "online"}, token=t))
        self.assertEqual(self.db.scalar("SELECT presence FROM agent WHERE id = %d" % a["id"]), "online")

    def test_supervisor_reads_but_does_not_write(self):
        self.ok(self.api("GET", "/api/v1/agents", token=self.sup_token))
        self.ok(self.api("GET", "/api/v1/queues", token=self.sup_token))
        self.assertProblem(self.api("POST", "/api/v1/queues", {"name": "S", "slug": "sup-q"},
                                    token=self.sup_token), 403, "forbidden")
        self.assertProblem(self.api("GET", "/api/v1/tokens", token=self.sup_token), 403, "forbidden")
        agent_token = kefuauth.create_token(self.db, "agent")
        self.assertProblem(self.api("GET", "/api/v1/agents", token=agent_token), 403, "forbidden")

    # -- queues

    def test_queue_crud(self):
        r = self.api("POST", "/api/v1/queues", {"name": "VIP 客户", "slug": "vip", "description": "d"})
        q = self.ok(r, 201)
        self.assertEqual(r[1]["location"], "/api/v1/queues/%d" % q["id"])
        self.assertEqual((q["name"], q["slug"], q["description"], q["agent_ids"]),
                         ("VIP 客户", "vip", "d", []))
        self.assertEqual(self.ok(self.api("GET", "/api/v1/queues/%d" % q["id"], token=self.sup_token)), q)
        self.assertProblem(self.api("POST", "/api/v1/queues", {"name": "Other", "slug": "vip"}), 409,
                           "conflict", ["slug"])
        self.assertProblem(self.api("POST", "/api/v1/queues", {"name": "", "slug": "Bad Slug",
                                                               "owner": 1}), 422, "validation",
                           ["name", "slug", "owner"])
        u = self.ok(self.api("PATCH", "/api/v1/queues/%d" % q["id"], {"name": "VIP", "slug": "vip-2"}))
        self.assertEqual((u["name"], u["slug"], u["description"]), ("VIP", "vip-2", "d"))
        other = self.new_queue()
        self.assertProblem(self.api("PATCH", "/api/v1/queues/%d" % other["id"], {"slug": "vip-2"}),
                           409, "conflict", ["slug"])
        self.assertProblem(self.api("PATCH", "/api/v1/queues/987654", {"name": "x"}), 404)
        listed = self.ok(self.api("GET", "/api/v1/queues?limit=200"))["items"]
        self.assertIn(u, listed)
        self.assertEqual(self.api("DELETE", "/api/v1/queues/%d" % q["id"])[0], 204)
        self.assertProblem(self.api("GET", "/api/v1/queues/%d" % q["id"]), 404, "not-found")
        self.assertProblem(self.api("DELETE", "/api/v1/queues/%d" % q["id"]), 404, "not-found")
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM event WHERE kind LIKE 'queue.%%' AND "
                                        "JSON_VALUE(data, '$.queue_id') = %d" % q["id"]), "3")

    def test_queue_with_tickets_cannot_be_deleted(self):
        q = self.new_queue()
        self.db.query("INSERT INTO customer (name) VALUES ('Del Test'); "
                      "INSERT INTO ticket (subject, channel, customer_id, queue_id) "
                      "VALUES ('t', 'api', LAST_INSERT_ID(), %d)" % q["id"])
        self.assertProblem(self.api("DELETE", "/api/v1/queues/%d" % q["id"]), 409, "conflict")
        self.ok(self.api("GET", "/api/v1/queues/%d" % q["id"]))

    def test_queue_members(self):
        q = self.new_queue()
        a, b, c = self.new_agent(), self.new_agent(), self.new_agent()
        r = self.ok(self.api("PUT", "/api/v1/queues/%d/members" % q["id"], {"agent_ids": [b["id"], a["id"]]}))
        self.assertEqual(r["agent_ids"], sorted([a["id"], b["id"]]))
        self.assertEqual(self.ok(self.api("GET", "/api/v1/agents/%d" % a["id"]))["queue_ids"], [q["id"]])
        m = self.ok(self.api("GET", "/api/v1/queues/%d/members" % q["id"], token=self.sup_token))
        self.assertEqual([x["id"] for x in m["items"]], sorted([a["id"], b["id"]]))
        self.assertEqual(self.api("PUT", "/api/v1/queues/%d/members/%d" % (q["id"], c["id"]))[0], 204)
        self.assertEqual(self.api("PUT", "/api/v1/queues/%d/members/%d" % (q["id"], c["id"]))[0], 204)
        self.assertEqual(self.api("DELETE", "/api/v1/queues/%d/members/%d" % (q["id"], a["id"]))[0], 204)
        self.assertEqual(self.api("DELETE", "/api/v1/queues/%d/members/%d" % (q["id"], a["id"]))[0], 204)
        self.assertEqual(self.ok(self.api("GET", "/api/v1/queues/%d" % q["id"]))["agent_ids"],
                         sorted([b["id"], c["id"]]))
        self.assertProblem(self.api("PUT", "/api/v1/queues/%d/members/987654" % q["id"]), 404)
        self.assertProblem(self.api("PUT", "/api/v1/queues/987654/members/%d" % a["id"]), 404)
        self.assertProblem(self.api("PUT", "/api/v1/queues/%d/members" % q["id"], {"agent_ids": [987654]}),
                           422, "validation", ["agent_ids"])
        self.assertProblem(self.api("PUT", "/api/v1/queues/%d/members" % q["id"], {"agent_ids": "1"}),
                           422, "validation", ["agent_ids"])
        self.assertProblem(self.api("PUT", "/api/v1/queues/%d/members" % q["id"], {}), 422,
                           "validation", ["agent_ids"])
        self.assertProblem(self.api("PUT", "/api/v1/queues/987654/members", {"agent_ids": []}), 404)
        # Unchanged by the refused calls; an empty list empties the queue.
        self.assertEqual(self.ok(self.api("GET", "/api/v1/queues/%d" % q["id"]))["agent_ids"],
                         sorted([b["id"], c["id"]]))
        self.assertEqual(self.ok(self.api("PUT", "/api/v1/queues/%d/members" % q["id"],
                                          {"agent_ids": []}))["agent_ids"], [])

    # -- API tokens

    def test_token_lifecycle(self):
        r = self.api("POST", "/api/v1/tokens", {"name": "zapier", "role": "supervisor"})
        t = self.ok(r, 201)
        self.assertRegex(t["token"], r"^[A-Za-z0-9_-]{43}$")
        self.assertEqual(t["prefix"], t["token"][:8])
        self.assertEqual((t["name"], t["role"], t["agent_id"], t["status"], t["created_by"]),
                         ("zapier", "supervisor", None, "active", self.root.id))
        self.assertEqual(r[1]["location"], "/api/v1/tokens/%d" % t["id"])
        token = t.pop("token")
        # Usable at once, with its role.
        me = self.ok(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token)))
        self.assertEqual((me["auth"], me["role"]), ("token", "supervisor"))
        self.assertEqual(self.api("GET", "/api/v1/tokens", token=token)[0], 403)
        # Never shown again.
        got = self.ok(self.api("GET", "/api/v1/tokens/%d" % t["id"]))
        self.assertNotIn("token", got)
        self.assertEqual(got["last_used_at"] is not None, True)
        listed = self.ok(self.api("GET", "/api/v1/tokens?limit=200"))
        self.assertNotIn(token, json.dumps(listed))
        self.assertTrue(all("token" not in x and "token_hash" not in x for x in listed["items"]))
        self.assertIn(t["id"], [x["id"] for x in listed["items"]])
        # Revoke.
        self.assertEqual(self.api("DELETE", "/api/v1/tokens/%d" % t["id"])[0], 204)
        self.assertEqual(self.api("DELETE", "/api/v1/tokens/%d" % t["id"])[0], 204)
        self.assertEqual(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token))[0], 401)
        self.assertEqual(self.ok(self.api("GET", "/api/v1/tokens/%d" % t["id"]))["status"], "revoked")
        self.assertProblem(self.api("DELETE", "/api/v1/tokens/987654"), 404, "not-found")
        self.assertProblem(self.api("GET", "/api/v1/tokens/987654"), 404, "not-found")
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM event WHERE kind IN ('token.created', "
                                        "'token.revoked') AND JSON_VALUE(data, '$.api_token_id') = %d"
                                        % t["id"]), "2")

    def test_token_bound_to_agent_and_expiry(self):
        a = self.new_agent(role="supervisor")
        t = self.ok(self.api("POST", "/api/v1/tokens", {"name": "bot", "role": "agent",
                                                        "agent_id": a["id"], "expires_in": 3600}), 201)
        self.assertEqual(t["agent_id"], a["id"])
        self.assertIsNotNone(t["expires_at"])
        me = self.ok(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(t["token"])))
        self.assertEqual((me["role"], me["agent"]["id"]), ("agent", a["id"]))
        # A token never gets more than its agent has.
        self.assertProblem(self.api("POST", "/api/v1/tokens", {"name": "x", "role": "admin",
                                                               "agent_id": a["id"]}),
                           422, "validation", ["role"])
        self.assertProblem(self.api("POST", "/api/v1/tokens", {"name": "x", "role": "agent",
                                                               "agent_id": 987654}),
                           422, "validation", ["agent_id"])

    def test_token_validation(self):
        self.assertProblem(self.api("POST", "/api/v1/tokens", {}), 422, "validation", ["name", "role"])
        self.assertProblem(self.api("POST", "/api/v1/tokens", {
            "name": "n" * 101, "role": "god", "agent_id": -1, "expires_in": 0, "scope": "all"}),
            422, "validation", ["name", "role", "agent_id", "expires_in", "scope"])
        self.assertProblem(self.api("POST", "/api/v1/tokens", {"name": "x", "role": "agent",
                                                               "expires_in": 10 ** 12}),
                           422, "validation", ["expires_in"])
        before = self.db.scalar("SELECT COUNT(*) FROM api_token")
        self.assertProblem(self.api("POST", "/api/v1/tokens", {"name": "x", "role": "agent"},
                                    headers={"Content-Type": "text/plain"}), 415)
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM api_token"), before)


if __name__ == "__main__":
    kefutest.main()
