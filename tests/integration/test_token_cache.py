"""The per-worker cache of Bearer-token lookups (server/auth.c).

On GET /api/v1/tickets/{id} and POST /api/v1/tickets a worker that has seen
a token before takes its id, role and agent from its cache and checks that
the token is still valid inside the handler's own first statement.  These
tests warm every worker's cache, then prove that:

  - revoking a token (API, CLI, expiry, deactivating its agent) takes effect
    on the very next request, on every worker, on both routes and on every
    path through them (bad input, bad path id, unknown ticket, no queue),
    with nothing written;
  - a wrong token is never accepted, however close to a cached one;
  - two tokens cached side by side never lend each other their principal.
"""

import hashlib
import json
import os
import secrets
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefu_api  # noqa: E402

WORKERS = 3
ROUNDS = 8 * WORKERS  # requests per check: enough to reach every worker


class TokenCache(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = kefu_api.World(cls.addClassCleanup, env={"KEFU_DB_WORKERS": str(WORKERS)})

    @classmethod
    def tearDownClass(cls):
        assert cls.w.stop() == 0, cls.w.k.tail()

    # -- helpers

    def req(self, method, path, token, body=None):
        h = {"Authorization": "Bearer " + token}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        st, hdrs, b = self.w.k.request(method, path, body=data, headers=h)
        try:
            parsed = json.loads(b) if b else None
        except ValueError:
            parsed = None
        return st, hdrs, parsed

    def new_token(self, role="agent", agent="alice"):
        return kefu_api.create_token(self.w.db, role, "tc-" + secrets.token_hex(4), agent)

    def token_id(self, token):
        return int(self.w.db.scalar("SELECT id FROM api_token WHERE token_hash = SHA2('%s', 256)"
                                    % token))

    def ticket(self, queue="q1"):
        return self.w.new_ticket(who="sam", email="tc-%s@example.org" % secrets.token_hex(4),
                                 queue_id=getattr(self.w, queue))["id"]

    def create_body(self, queue=True):
        body = {"subject": "Cache", "text": "Hello",
                "customer": {"email": "tc-%s@example.org" % secrets.token_hex(4)}}
        if queue:
            body["queue_id"] = self.w.q1
        return body

    def warm(self, token, tid):
        """Use token on both cached routes until every worker has it cached."""
        for _ in range(ROUNDS):
            st, _, b = self.req("GET", "/api/v1/tickets/%d" % tid, token)
            self.assertEqual(st, 200, b)
        for queue in (True, False):
            st, _, b = self.req("POST", "/api/v1/tickets", token, self.create_body(queue))
            self.assertEqual(st, 201, b)

    def assert401(self, r, what):
        st, hdrs, b = r
        self.assertEqual(st, 401, "%s: %s %r" % (what, st, b))
        self.assertEqual(b["type"], "/problems/unauthorized", what)
        self.assertEqual(b["detail"], "The API token is invalid, expired or revoked.", what)
        self.assertIn("bearer", hdrs.get("www-authenticate", "").lower(), what)

    def assert_refused_everywhere(self, token, tid):
        """Every path through the two cached routes answers 401, nothing written."""
        before = self.w.counts()
        for i in range(ROUNDS):
            self.assert401(self.req("GET", "/api/v1/tickets/%d" % tid, token), "GET %d" % i)
            self.assert401(self.req("POST", "/api/v1/tickets", token, self.create_body(i % 2 == 0)),
                           "POST %d" % i)
        # Paths that reply before any ticket statement.
        self.assert401(self.req("GET", "/api/v1/tickets/abc", token), "bad id")
        self.assert401(self.req("GET", "/api/v1/tickets/987654321", token), "unknown ticket")
        self.assert401(self.req("POST", "/api/v1/tickets", token, {"subject": 5}), "bad body")
        body = self.create_body()
        body["queue_id"] = self.w.q2  # not alice's queue
        self.assert401(self.req("POST", "/api/v1/tickets", token, body), "foreign queue")
        self.assertEqual(self.w.counts(), before)

    # -- revocation

    def test_revoked_through_the_api_refused_at_once(self):
        token, tid = self.new_token(), self.ticket()
        self.warm(token, tid)
        st, _, b = self.w.api("DELETE", "/api/v1/tokens/%d" % self.token_id(token))
        self.assertEqual(st, 204, b)
        self.assert_refused_everywhere(token, tid)

    def test_revoked_by_the_cli_refused_at_once(self):
        token, tid = self.new_token(), self.ticket()
        self.warm(token, tid)
        cp = kefutest.run_kefud(["admin", "revoke-token", "--id", str(self.token_id(token))],
                                env=self.w.db.kefud_env())
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assert_refused_everywhere(token, tid)

    def test_expired_refused_at_once_and_back_when_extended(self):
        token, tid = self.new_token(), self.ticket()
        self.warm(token, tid)
        self.w.db.query("UPDATE api_token SET expires_at = NOW(6) - INTERVAL 1 SECOND WHERE id = %d"
                        % self.token_id(token))
        self.assert_refused_everywhere(token, tid)
        self.w.db.query("UPDATE api_token SET expires_at = NULL WHERE id = %d" % self.token_id(token))
        self.warm(token, tid)

    def test_deactivated_agent_refused_at_once(self):
        self.w.db.query("INSERT INTO agent (login, display_name, email, role, password_hash) "
                        "VALUES ('tc-dora', 'Dora', 'dora@kefu.example', 'agent', '')")
        aid = int(self.w.db.scalar("SELECT id FROM agent WHERE login = 'tc-dora'"))
        self.w.db.query("INSERT INTO agent_queue (agent_id, queue_id) VALUES (%d, %d)"
                        % (aid, self.w.q1))
        token, tid = self.new_token(agent="tc-dora"), self.ticket()
        self.warm(token, tid)
        self.w.db.query("UPDATE agent SET active = 0 WHERE id = %d" % aid)
        self.assert_refused_everywhere(token, tid)
        self.w.db.query("UPDATE agent SET active = 1 WHERE id = %d" % aid)
        self.warm(token, tid)

    def test_revoked_supervisor_token_refused_at_once(self):
        token, tid = self.new_token("supervisor", "sam"), self.ticket("q2")
        self.warm(token, tid)
        self.w.db.query("UPDATE api_token SET revoked_at = NOW(6) WHERE id = %d"
                        % self.token_id(token))
        self.assert_refused_everywhere(token, tid)

    # -- wrong tokens

    def test_wrong_token_never_accepted(self):
        token, tid = self.new_token(), self.ticket()
        self.warm(token, tid)
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        wrong = set()
        for pos in (0, len(token) // 2, len(token) - 1):  # one character off
            for ch in alphabet[:6]:
                if token[pos] != ch:
                    wrong.add(token[:pos] + ch + token[pos + 1:])
        wrong |= {token[:-1], token + "A", token.upper(), token.lower(),
                  secrets.token_urlsafe(32)}
        # Tokens whose SHA-256 falls in the same cache slot as the real one
        # (server/auth.c: token_slot()), so only the full comparison of the
        # hash stands between them and the cached principal.
        def slot(t):
            h = hashlib.sha256(t.encode()).digest()
            return (h[0] | h[1] << 8) % 64
        same = []
        while len(same) < 8:
            t = secrets.token_urlsafe(32)
            if slot(t) == slot(token):
                same.append(t)
        wrong |= set(same)
        wrong.discard(token)
        before = self.w.counts()
        for bad in sorted(wrong):
            self.assert401(self.req("GET", "/api/v1/tickets/%d" % tid, bad), "GET " + bad)
            self.assert401(self.req("POST", "/api/v1/tickets", bad, self.create_body()),
                           "POST " + bad)
        self.assertEqual(self.w.counts(), before)
        # The right one still works, on every worker.
        self.warm(token, tid)

    def test_cached_tokens_keep_their_own_principal(self):
        """alice (q1) and carol (q2) alternate: each always sees what she may see."""
        alice, carol = self.new_token(agent="alice"), self.new_token(agent="carol")
        t1, t2 = self.ticket("q1"), self.ticket("q2")
        for _ in range(ROUNDS):
            self.assertEqual(self.req("GET", "/api/v1/tickets/%d" % t1, alice)[0], 200)
            self.assertEqual(self.req("GET", "/api/v1/tickets/%d" % t1, carol)[0], 404)
            self.assertEqual(self.req("GET", "/api/v1/tickets/%d" % t2, carol)[0], 200)
            self.assertEqual(self.req("GET", "/api/v1/tickets/%d" % t2, alice)[0], 404)
            st, _, b = self.req("POST", "/api/v1/tickets", carol, self.create_body())
            self.assertEqual(st, 422, b)  # q1 is not carol's
            self.assertEqual([e["field"] for e in b["errors"]], ["queue_id"])
        st, _, b = self.req("POST", "/api/v1/tickets", alice, self.create_body())
        self.assertEqual(st, 201, b)
        self.assertEqual(self.w.db.scalar("SELECT actor_id FROM event WHERE ticket_id = %d AND "
                                          "kind = 'ticket.created'" % b["id"]),
                         str(self.w.agent_id["alice"]))


if __name__ == "__main__":
    kefutest.main()
