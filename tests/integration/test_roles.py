"""Every route refuses what its role class does not allow (walks the live `kefud routes` table).

For each non-public route and method ({param} replaced by 1):
  * no credentials, a garbage Bearer token or a garbage cookie -> 401;
  * each role below the route's class -> 403, with an API token of that role
    and with a session cookie (plus its CSRF token) of an agent of that role;
  * token-only routes with a session cookie, even an admin's -> 403;
  * GET routes answer the roles they allow with something other than 401/403.
Refused requests must not reach the handler, so nothing is written: the test
checks that the data tables are unchanged afterwards.
"""

import os
import re
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefuauth  # noqa: E402
from kefuauth import bearer, login, request  # noqa: E402

RANK = {"agent": 1, "supervisor": 2, "admin": 3}
CLASS_RANK = {"agent": 1, "supervisor": 2, "admin": 3, "token": 1}
SKIP_METHODS = {"HEAD", "OPTIONS"}


def routes():
    cp = kefutest.run_kefud(["routes"], env={"KEFU_DEBUG_ROUTES": "1"})
    if cp.returncode != 0:
        raise AssertionError("kefud routes failed\n" + kefutest.describe(cp))
    out = []
    for line in cp.stdout.splitlines():
        parts = line.split()
        if len(parts) != 4:
            raise AssertionError("unexpected `kefud routes` line: %r" % line)
        methods, pattern, role, max_body = parts
        if role not in CLASS_RANK and role != "public":
            raise AssertionError("unknown role class %r in %r" % (role, line))
        # (`kefud routes` prints "PUT,,DELETE" for "PUT, DELETE": skip empty pieces.)
        for m in filter(None, methods.split(",")):
            if m not in SKIP_METHODS:
                out.append((m, pattern, role, int(max_body)))
    return out


def concrete(pattern):
    return re.sub(r"\{[^}/]+\}", "1", pattern)


class Roles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.routes = routes()
        cls.db = kefutest.fresh_db(cls.addClassCleanup)
        cls.kefud = kefutest.Kefud(cls.db, register=cls.addClassCleanup).start()
        cls.tokens, cls.sessions = {}, {}
        for role in RANK:
            cls.tokens[role] = kefuauth.create_token(cls.db, role, name="roles-" + role)
            agent = kefuauth.create_agent(cls.db, "roles-" + role, role=role)
            cls.sessions[role] = login(cls.kefud, agent.login, agent.password)

    @classmethod
    def tearDownClass(cls):
        assert cls.kefud.stop() == 0, "kefud did not exit 0 after SIGTERM"

    def call(self, method, path, headers, read_body=True):
        try:
            return request(self.kefud, method, path, headers=headers, timeout=10,
                           read_body=read_body)
        except OSError as e:  # a streaming reply that never ends: headers were fine
            raise AssertionError("%s %s: %r" % (method, path, e))

    def check(self, failures, method, path, headers, want, what):
        st, hdrs, body = self.call(method, path, headers)
        if st != want:
            failures.append("%s %s %s: %s, want %s: %s" % (what, method, path, st, want, body[:200]))
        elif not hdrs.get("content-type", "").startswith("application/problem+json"):
            failures.append("%s %s %s: %s without problem+json" % (what, method, path, st))

    def snapshot(self):
        tables = ("agent", "queue", "agent_queue", "api_token", "customer", "ticket", "message",
                  "event", "outbox", "attachment")
        out = {}
        for t in tables:
            try:
                out[t] = self.db.scalar("SELECT COUNT(*) FROM `%s`" % t)
            except AssertionError:
                out[t] = None
        out["agents"] = self.db.query("SELECT id, role, active, presence, password_hash FROM agent "
                                      "ORDER BY id")
        out["tokens"] = self.db.query("SELECT id, revoked_at FROM api_token ORDER BY id")
        out["queues"] = self.db.query("SELECT id, name, slug FROM queue ORDER BY id")
        return out

    def test_route_table_is_sane(self):
        self.assertGreater(len(self.routes), 10)
        keys = {(m, p) for m, p, _, _ in self.routes}
        for m, p in (("POST", "/api/v1/session"), ("GET", "/api/v1/session/me"),
                     ("GET", "/api/v1/agents"), ("POST", "/api/v1/tokens")):
            self.assertIn((m, p), keys)
        self.assertEqual(dict(((m, p), r) for m, p, r, _ in self.routes)[("POST", "/api/v1/session")],
                         "public")

    def test_every_route_refuses_lower_roles(self):
        # Seed a queue (id 1) so refused writes would have something to change.
        st, _, body = request(self.kefud, "POST", "/api/v1/queues", {"name": "One", "slug": "one"},
                              headers=bearer(self.tokens["admin"]))
        self.assertEqual(st, 201, body)
        before = self.snapshot()
        failures, checked = [], 0
        for method, pattern, role, _ in self.routes:
            if role == "public":
                continue
            path = concrete(pattern)
            checked += 1
            self.check(failures, method, path, {}, 401, "anonymous")
            self.check(failures, method, path, bearer("x" * 43), 401, "bad token")
            self.check(failures, method, path, {"Cookie": "kefu_session=" + "y" * 43,
                                                "X-CSRF-Token": "z" * 43}, 401, "bad cookie")
            for r, rank in RANK.items():
                if rank >= CLASS_RANK[role]:
                    continue
                self.check(failures, method, path, bearer(self.tokens[r]), 403, r + " token")
                self.check(failures, method, path, self.sessions[r].headers(), 403, r + " session")
            if role == "token":
                for r in RANK:
                    self.check(failures, method, path, self.sessions[r].headers(), 403,
                               r + " session on a token-only route")
        self.assertGreater(checked, 10)
        self.assertEqual(failures, [], "\n" + "\n".join(failures))
        self.assertEqual(self.snapshot(), before, "a refused request changed data")

    def test_allowed_roles_get_past_authentication(self):
        failures = []
        for method, pattern, role, _ in self.routes:
            if method != "GET" or role == "public":
                continue
            path = concrete(pattern)
            for r, rank in RANK.items():
                if rank < CLASS_RANK[role]:
                    continue
                creds = [("token", bearer(self.tokens[r]))]
                if role != "token":
                    creds.append(("session", self.sessions[r].headers(csrf=False)))
                for kind, h in creds:
                    # Headers only: a streaming route (SSE) never ends its body.
                    st, _, _ = self.call(method, path, h, read_body=False)
                    if st in (401, 403):
                        failures.append("%s %s %s: refused with %s" % (r, kind, path, st))
        self.assertEqual(failures, [], "\n" + "\n".join(failures))


if __name__ == "__main__":
    kefutest.main()
