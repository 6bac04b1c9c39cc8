"""Agent sessions and API tokens: login, cookie flags, CSRF, logout, expiry, throttling.

Throttled logins are counted per account and per client address; the tests
connect from different 127.0.0.x source addresses so that they do not share
an address budget (Linux routes all of 127/8 to the loopback interface).
"""

import json
import os
import re
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefuauth  # noqa: E402
from kefuauth import bearer, login, login_raw, problem, request  # noqa: E402

MAX_FAILURES = 3
LOCKOUT = 120
SESSION_TTL = 3600

_ip = [10]


def new_ip():
    """A fresh loopback source address for one test's login attempts."""
    _ip[0] += 1
    return "127.0.%d.%d" % (_ip[0] // 250, 1 + _ip[0] % 250)


class Auth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = kefutest.fresh_db(cls.addClassCleanup)
        cls.kefud = kefutest.Kefud(cls.db, register=cls.addClassCleanup, env={
            "KEFU_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
            "KEFU_LOGIN_WINDOW": "600",
            "KEFU_LOGIN_LOCKOUT": str(LOCKOUT),
            "KEFU_SESSION_TTL": str(SESSION_TTL),
            "KEFU_DB_WORKERS": "6",  # parallel logins really run in parallel
        }).start()
        cls.admin = kefuauth.create_agent(cls.db, "root", role="admin")
        cls.admin_token = kefuauth.create_token(cls.db, "admin")
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        assert cls.kefud.stop() == 0, "kefud did not exit 0 after SIGTERM"

    def agent(self, role="agent"):
        Auth.n += 1
        return kefuauth.create_agent(self.db, "user%d" % Auth.n, role=role)

    def assertProblem(self, r, status, code=None):
        st, hdrs, body = r
        self.assertEqual(st, status, body[:500])
        self.assertTrue(hdrs.get("content-type", "").startswith("application/problem+json"), hdrs)
        p = problem(body)
        if code:
            self.assertEqual(p["type"], "/problems/" + code, p)
        return p

    # -- login

    def test_login_ok_cookie_flags_and_me(self):
        a = self.agent("supervisor")
        st, hdrs, body = login_raw(self.kefud, a.login, a.password, source=new_ip())
        self.assertEqual(st, 201, body)
        data = json.loads(body)
        self.assertEqual(data["agent"], {"id": a.id, "login": a.login, "display_name": a.login.title(),
                                         "role": "supervisor"})
        self.assertRegex(data["csrf_token"], r"^[A-Za-z0-9_-]{43}$")
        self.assertRegex(data["expires_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertNotIn("password", body.decode())
        self.assertNotIn("argon2", body.decode())
        cookie = hdrs["set-cookie"]
        attrs = [x.strip() for x in cookie.split(";")]
        self.assertRegex(attrs[0], r"^kefu_session=[A-Za-z0-9_-]{43}$")
        self.assertIn("HttpOnly", attrs)
        self.assertIn("SameSite=Lax", attrs)
        self.assertIn("Path=/", attrs)
        self.assertIn("Max-Age=%d" % SESSION_TTL, attrs)
        self.assertNotIn("Secure", attrs)
        self.assertEqual(hdrs.get("cache-control"), "no-store")
        # Only the SHA-256 of the session token is stored.
        token = attrs[0].split("=", 1)[1]
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM session WHERE token_hash = SHA2('%s', 256)"
                                        % token), "1")
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM session WHERE token_hash = '%s'" % token), "0")

        st, _, body = request(self.kefud, "GET", "/api/v1/session/me",
                              headers={"Cookie": "kefu_session=" + token})
        self.assertEqual(st, 200, body)
        me = json.loads(body)
        self.assertEqual(me["auth"], "session")
        self.assertEqual(me["role"], "supervisor")
        self.assertEqual(me["agent"]["id"], a.id)
        self.assertEqual(me["agent"]["login"], a.login)
        self.assertEqual(me["csrf_token"], data["csrf_token"])
        self.assertEqual(me["expires_at"], data["expires_at"])
        self.assertNotIn("password_hash", me["agent"])

    def test_login_is_case_insensitive_on_login_name(self):
        a = self.agent()
        s = login(self.kefud, a.login.upper(), a.password, source=new_ip())
        self.assertEqual(s.body["agent"]["login"], a.login)

    def test_secure_cookie_when_configured(self):
        k = kefutest.Kefud(self.db, register=self.addCleanup,
                           env={"KEFU_COOKIE_SECURE": "1", "KEFU_MIGRATE_ON_START": "0"}).start()
        a = self.agent()
        st, hdrs, body = login_raw(k, a.login, a.password, source=new_ip())
        self.assertEqual(st, 201, body)
        self.assertIn("Secure", [x.strip() for x in hdrs["set-cookie"].split(";")])
        self.assertEqual(k.stop(), 0)

    def test_wrong_password_and_unknown_login_look_the_same(self):
        a = self.agent()
        t0 = time.monotonic()
        r1 = login_raw(self.kefud, a.login, "wrong-password", source=new_ip())
        t1 = time.monotonic()
        r2 = login_raw(self.kefud, "nobody-here", "wrong-password", source=new_ip())
        t2 = time.monotonic()
        p1 = self.assertProblem(r1, 401, "invalid-credentials")
        p2 = self.assertProblem(r2, 401, "invalid-credentials")
        for p in (p1, p2):
            p.pop("request_id", None)
        self.assertEqual(p1, p2)
        self.assertEqual(r1[1].get("www-authenticate"), r2[1].get("www-authenticate"))
        # An unknown login is checked against a dummy hash: no fast path.
        wrong, unknown = t1 - t0, t2 - t1
        self.assertGreater(unknown, wrong * 0.4, "unknown login answered much faster (%.3fs vs %.3fs)"
                           % (unknown, wrong))
        # Still logs in afterwards (one failure is below the limit).
        login(self.kefud, a.login, a.password, source=new_ip())

    def test_inactive_agent_cannot_log_in(self):
        a = self.agent()
        s = login(self.kefud, a.login, a.password, source=new_ip())
        st, _, body = request(self.kefud, "PATCH", "/api/v1/agents/%d" % a.id, {"active": False},
                              headers=bearer(self.admin_token))
        self.assertEqual(st, 200, body)
        self.assertProblem(s.request("GET", "/api/v1/session/me"), 401)
        self.assertProblem(login_raw(self.kefud, a.login, a.password, source=new_ip()), 401,
                           "invalid-credentials")

    def test_login_validation(self):
        ip = new_ip()
        p = self.assertProblem(request(self.kefud, "POST", "/api/v1/session", {"login": "x"},
                                       source=ip), 422, "validation")
        self.assertEqual([e["field"] for e in p["errors"]], ["password"])
        p = self.assertProblem(request(self.kefud, "POST", "/api/v1/session",
                                       {"login": "x", "password": "y", "remember": True}, source=ip),
                               422, "validation")
        self.assertIn("remember", [e["field"] for e in p["errors"]])
        p = self.assertProblem(request(self.kefud, "POST", "/api/v1/session",
                                       {"login": 5, "password": "y"}, source=ip), 422)
        self.assertIn("login", [e["field"] for e in p["errors"]])
        self.assertProblem(request(self.kefud, "POST", "/api/v1/session", b"{nope",
                                   headers={"Content-Type": "application/json"}, source=ip), 400,
                           "bad-json")
        self.assertProblem(request(self.kefud, "POST", "/api/v1/session",
                                   {"login": "x", "password": "y" * 5000}, source=ip), 413)
        # None of that counted as a failed login.
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM login_throttle WHERE k = 'ip:%s'" % ip), "0")

    # -- CSRF

    def test_csrf_required_for_cookie_writes_only(self):
        a = self.agent()
        s = login(self.kefud, a.login, a.password, source=new_ip())
        self.assertEqual(s.request("GET", "/api/v1/session/me", csrf=False)[0], 200)
        self.assertProblem(s.request("PUT", "/api/v1/agents/me/presence", {"presence": "online"},
                                     csrf=False), 403, "csrf")
        self.assertProblem(s.request("PUT", "/api/v1/agents/me/presence", {"presence": "online"},
                                     headers={"X-CSRF-Token": "A" * 43}), 403, "csrf")
        self.assertProblem(s.request("PUT", "/api/v1/agents/me/presence", {"presence": "online"},
                                     headers={"X-CSRF-Token": ""}), 403, "csrf")
        self.assertEqual(self.db.scalar("SELECT presence FROM agent WHERE id = %d" % a.id), "offline")
        st, _, body = s.request("PUT", "/api/v1/agents/me/presence", {"presence": "online"})
        self.assertEqual(st, 200, body)
        self.assertEqual(self.db.scalar("SELECT presence FROM agent WHERE id = %d" % a.id), "online")
        # Another session's CSRF token does not work either.
        s2 = login(self.kefud, a.login, a.password, source=new_ip())
        self.assertProblem(s.request("PUT", "/api/v1/agents/me/presence", {"presence": "away"},
                                     headers={"X-CSRF-Token": s2.csrf}), 403, "csrf")

    def test_bearer_needs_no_csrf(self):
        st, _, body = request(self.kefud, "POST", "/api/v1/queues", {"name": "CSRF-free", "slug": "csrf-free"},
                              headers=bearer(self.admin_token))
        self.assertEqual(st, 201, body)

    def test_bearer_wins_over_cookie(self):
        a = self.agent("admin")
        s = login(self.kefud, a.login, a.password, source=new_ip())
        agent_token = kefuauth.create_token(self.db, "agent")
        h = s.headers()
        h.update(bearer(agent_token))
        st, _, body = request(self.kefud, "GET", "/api/v1/session/me", headers=h)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["auth"], "token")
        self.assertEqual(json.loads(body)["role"], "agent")

    def test_login_again_with_a_live_cookie_needs_no_csrf(self):
        a = self.agent()
        s = login(self.kefud, a.login, a.password, source=new_ip())
        st, _, body = login_raw(self.kefud, a.login, a.password, source=new_ip(),
                                headers=s.headers(csrf=False))
        self.assertEqual(st, 201, body)

    def test_token_only_routes(self):
        # /debug/auth/token-only exists (debug_routes=1) to exercise the token-only class.
        a = self.agent("admin")
        s = login(self.kefud, a.login, a.password, source=new_ip())
        self.assertProblem(request(self.kefud, "GET", "/debug/auth/token-only"), 401)
        self.assertProblem(s.request("GET", "/debug/auth/token-only"), 403, "forbidden")
        self.assertProblem(s.request("POST", "/debug/auth/token-only"), 403, "forbidden")
        self.assertProblem(s.request("POST", "/debug/auth/token-only", csrf=False), 403, "csrf")
        t = kefuauth.create_token(self.db, "agent")
        for m in ("GET", "POST"):
            st, _, body = request(self.kefud, m, "/debug/auth/token-only", headers=bearer(t))
            self.assertEqual(st, 200, body)
            self.assertEqual(json.loads(body)["role"], "agent")

    def test_public_routes_ignore_bad_credentials(self):
        a = self.agent()
        bad = {"Authorization": "Bearer " + "q" * 43, "Cookie": "kefu_session=" + "q" * 43}
        self.assertEqual(request(self.kefud, "GET", "/readyz", headers=bad)[0], 200)
        self.assertEqual(request(self.kefud, "GET", "/readyz",
                                 headers={"Cookie": "kefu_session=" + "q" * 43})[0], 200)
        st, _, body = login_raw(self.kefud, a.login, a.password, source=new_ip(), headers=bad)
        self.assertEqual(st, 201, body)

    # -- logout, expiry, revocation

    def test_logout_revokes_the_session(self):
        a = self.agent()
        s = login(self.kefud, a.login, a.password, source=new_ip())
        self.assertProblem(s.request("DELETE", "/api/v1/session", csrf=False), 403, "csrf")
        st, hdrs, body = s.request("DELETE", "/api/v1/session")
        self.assertEqual(st, 204, body)
        attrs = [x.strip() for x in hdrs["set-cookie"].split(";")]
        self.assertEqual(attrs[0], "kefu_session=")
        self.assertIn("Max-Age=0", attrs)
        self.assertIn("HttpOnly", attrs)
        self.assertProblem(s.request("GET", "/api/v1/session/me"), 401, "unauthorized")
        self.assertProblem(s.request("DELETE", "/api/v1/session"), 401)
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM session WHERE agent_id = %d AND "
                                        "revoked_at IS NOT NULL" % a.id), "1")

    def test_logout_with_a_token_is_refused(self):
        self.assertProblem(request(self.kefud, "DELETE", "/api/v1/session",
                                   headers=bearer(self.admin_token)), 400, "not-a-session")

    def test_expired_session_refused(self):
        a = self.agent()
        s = login(self.kefud, a.login, a.password, source=new_ip())
        self.assertEqual(s.request("GET", "/api/v1/session/me")[0], 200)
        self.db.query("UPDATE session SET expires_at = NOW(6) - INTERVAL 1 SECOND "
                      "WHERE token_hash = SHA2('%s', 256)" % s.cookie)
        self.assertProblem(s.request("GET", "/api/v1/session/me"), 401, "unauthorized")

    def test_idle_session_refused(self):
        a = self.agent()
        s = login(self.kefud, a.login, a.password, source=new_ip())
        self.assertEqual(s.request("GET", "/api/v1/session/me")[0], 200)
        # session_idle defaults to 7200 s.
        self.db.query("UPDATE session SET last_seen_at = NOW(6) - INTERVAL 7201 SECOND "
                      "WHERE token_hash = SHA2('%s', 256)" % s.cookie)
        self.assertProblem(s.request("GET", "/api/v1/session/me"), 401, "unauthorized")

    def test_activity_keeps_a_session_alive(self):
        a = self.agent()
        s = login(self.kefud, a.login, a.password, source=new_ip())
        self.db.query("UPDATE session SET last_seen_at = NOW(6) - INTERVAL 7000 SECOND "
                      "WHERE token_hash = SHA2('%s', 256)" % s.cookie)
        self.assertEqual(s.request("GET", "/api/v1/session/me")[0], 200)
        self.assertEqual(self.db.scalar("SELECT last_seen_at > NOW(6) - INTERVAL 60 SECOND FROM session "
                                        "WHERE token_hash = SHA2('%s', 256)" % s.cookie), "1")

    def test_revoked_session_refused(self):
        a = self.agent()
        s = login(self.kefud, a.login, a.password, source=new_ip())
        self.db.query("UPDATE session SET revoked_at = NOW(6) WHERE token_hash = SHA2('%s', 256)"
                      % s.cookie)
        self.assertProblem(s.request("GET", "/api/v1/session/me"), 401)

    def test_garbage_cookie_and_token(self):
        for h in ({"Cookie": "kefu_session=" + "x" * 43}, {"Cookie": "kefu_session=%%%"},
                  {"Cookie": "kefu_session="}, bearer("x" * 43), bearer(""), bearer("a b c"),
                  {"Authorization": "Basic cm9vdDpyb290"}):
            self.assertProblem(request(self.kefud, "GET", "/api/v1/session/me", headers=h), 401)

    def test_role_change_applies_to_live_sessions(self):
        a = self.agent("supervisor")
        s = login(self.kefud, a.login, a.password, source=new_ip())
        self.assertEqual(s.request("GET", "/api/v1/agents")[0], 200)
        st, _, body = request(self.kefud, "PATCH", "/api/v1/agents/%d" % a.id, {"role": "agent"},
                              headers=bearer(self.admin_token))
        self.assertEqual(st, 200, body)
        self.assertProblem(s.request("GET", "/api/v1/agents"), 403, "forbidden")

    # -- API tokens

    def test_token_me_revoked_and_expired(self):
        token = kefuauth.create_token(self.db, "supervisor", name="me-test")
        st, _, body = request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token))
        self.assertEqual(st, 200, body)
        me = json.loads(body)
        self.assertEqual((me["auth"], me["role"], me["agent"]), ("token", "supervisor", None))
        self.assertEqual(me["token"]["name"], "me-test")
        self.assertEqual(me["token"]["prefix"], token[:8])
        # Only the hash is stored.
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM api_token WHERE token_hash = SHA2('%s', 256)"
                                        % token), "1")
        tid = me["token"]["id"]
        self.db.query("UPDATE api_token SET expires_at = NOW(6) - INTERVAL 1 SECOND WHERE id = %d" % tid)
        self.assertProblem(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token)), 401)
        self.db.query("UPDATE api_token SET expires_at = NULL WHERE id = %d" % tid)
        self.assertEqual(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token))[0], 200)
        cp = kefuauth.run_admin(self.db, ["revoke-token", "--id", str(tid)])
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertProblem(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token)), 401)

    def test_token_of_inactive_agent_refused(self):
        a = self.agent()
        token = kefuauth.create_token(self.db, "agent", agent=a.login)
        st, _, body = request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token))
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["agent"]["id"], a.id)
        self.db.query("UPDATE agent SET active = 0 WHERE id = %d" % a.id)
        self.assertProblem(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token)), 401)

    # -- throttling

    def fail(self, login_name, source, want=401):
        r = login_raw(self.kefud, login_name, "definitely-wrong", source=source)
        self.assertEqual(r[0], want, r[2][:300])
        return r

    def assertLocked(self, r):
        p = self.assertProblem(r, 429, "too-many-attempts")
        ra = r[1].get("retry-after")
        self.assertIsNotNone(ra, r[1])
        self.assertTrue(re.match(r"^\d+$", ra), ra)
        self.assertTrue(1 <= int(ra) <= LOCKOUT, ra)
        return p

    def test_throttle_per_account(self):
        a, b = self.agent(), self.agent()
        for _ in range(MAX_FAILURES):
            self.fail(a.login, new_ip())
        # Locked: refused even with the right password, from any address.
        self.assertLocked(login_raw(self.kefud, a.login, a.password, source=new_ip()))
        self.assertLocked(login_raw(self.kefud, a.login.upper(), a.password, source=new_ip()))
        # Other accounts are unaffected.
        login(self.kefud, b.login, b.password, source=new_ip())
        # When the lockout ends, the right password works again.
        self.db.query("UPDATE login_throttle SET locked_until = NOW(6) - INTERVAL 1 SECOND "
                      "WHERE k = 'login:%s'" % a.login)
        login(self.kefud, a.login, a.password, source=new_ip())

    def test_throttle_per_ip(self):
        b = self.agent()
        ip = new_ip()
        for i in range(MAX_FAILURES):
            self.fail("ghost%d-%s" % (i, ip), ip)
        self.assertLocked(login_raw(self.kefud, b.login, b.password, source=ip))
        self.assertLocked(login_raw(self.kefud, "ghost-other", "x" * 8, source=ip))
        login(self.kefud, b.login, b.password, source=new_ip())

    def test_failures_slow_down(self):
        a = self.agent()
        ip = new_ip()
        took = []
        for _ in range(MAX_FAILURES):
            t0 = time.monotonic()
            self.fail(a.login, ip)
            took.append(time.monotonic() - t0)
        # 100 ms per failure counted: the third answer comes ~200 ms later than the first.
        self.assertGreater(took[2], took[0] + 0.1, took)
        self.assertGreater(took[2], 0.3, took)

    def test_success_resets_the_account_counter(self):
        a = self.agent()
        for _ in range(MAX_FAILURES - 1):
            self.fail(a.login, new_ip())
        login(self.kefud, a.login, a.password, source=new_ip())
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM login_throttle WHERE k = 'login:%s'"
                                        % a.login), "0")
        for _ in range(MAX_FAILURES - 1):
            self.fail(a.login, new_ip())
        login(self.kefud, a.login, a.password, source=new_ip())

    def test_parallel_guesses_cannot_pass_the_limit(self):
        a = self.agent()
        results = []
        lock = threading.Lock()

        def guess(ip):
            r = login_raw(self.kefud, a.login, "parallel-wrong", source=ip)
            with lock:
                results.append(r[0])

        ips = [new_ip() for _ in range(8)]
        threads = [threading.Thread(target=guess, args=(ip,)) for ip in ips]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(len(results), 8)
        self.assertLessEqual(results.count(401), MAX_FAILURES, results)
        self.assertEqual(results.count(401) + results.count(429), 8, results)
        self.assertLocked(login_raw(self.kefud, a.login, a.password, source=new_ip()))


if __name__ == "__main__":
    kefutest.main()
