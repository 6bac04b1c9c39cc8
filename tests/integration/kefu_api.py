"""A small world for the ticket/customer API tests (test_tickets.py,
test_customers.py, test_ingest.py): one database, one kefud, two queues,
staff with API tokens, and a JSON request helper.

    w = kefu_api.World(self.addClassCleanup)     # in setUpClass
    st, hdrs, body = w.api("POST", "/api/v1/tickets", {...}, who="alice")

Staff (all with tokens bound to the agent, except "admin" and "bot"):
    alice, bob   agents in queue q1
    carol        agent in queue q2
    sam          supervisor (no queue membership needed)
    admin        admin token bound to no agent
    bot          agent-role token bound to no agent (sees no tickets)
"""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402


def create_token(db, role, name, agent=None):
    args = ["admin", "create-token", "--role", role, "--name", name]
    if agent:
        args += ["--agent", agent]
    cp = kefutest.run_kefud(args, env=db.kefud_env())
    if cp.returncode != 0:
        raise AssertionError("create-token failed\n" + kefutest.describe(cp))
    lines = [l.strip() for l in cp.stdout.splitlines() if l.strip()]
    if not lines:
        raise AssertionError("create-token printed no token\n" + kefutest.describe(cp))
    return lines[0].split()[-1]


class World:
    def __init__(self, register, env=None):
        self.db = kefutest.fresh_db(register)
        cp = kefutest.run_kefud(["migrate"], env=self.db.kefud_env())
        if cp.returncode != 0:
            raise AssertionError("migrate failed\n" + kefutest.describe(cp))
        q = self.db.query
        q("INSERT INTO queue (name, slug) VALUES ('Queue one', 'q1'), ('Queue two', 'q2')")
        self.q1 = int(self.db.scalar("SELECT id FROM queue WHERE slug = 'q1'"))
        self.q2 = int(self.db.scalar("SELECT id FROM queue WHERE slug = 'q2'"))
        staff = [("alice", "agent", [self.q1]), ("bob", "agent", [self.q1]),
                 ("carol", "agent", [self.q2]), ("sam", "supervisor", [])]
        self.agent_id = {}
        for login, role, queues in staff:
            q("INSERT INTO agent (login, display_name, email, role, password_hash) "
              "VALUES ('%s', '%s', '%s@kefu.example', '%s', '')" % (login, login.title(), login, role))
            aid = int(self.db.scalar("SELECT id FROM agent WHERE login = '%s'" % login))
            self.agent_id[login] = aid
            for qid in queues:
                q("INSERT INTO agent_queue (agent_id, queue_id) VALUES (%d, %d)" % (aid, qid))
        self.tokens = {login: create_token(self.db, role, "tok-" + login, login)
                       for login, role, _ in staff}
        self.tokens["admin"] = create_token(self.db, "admin", "tok-admin")
        self.tokens["bot"] = create_token(self.db, "agent", "tok-bot")
        e = {"KEFU_DB_WORKERS": "4"}
        e.update(env or {})
        self.k = kefutest.Kefud(self.db, env=e, register=register).start()

    def api(self, method, path, body=None, who="admin", headers=None, raw=None):
        """(status, headers, parsed JSON or None).  raw: bytes sent as is."""
        h = {"Authorization": "Bearer " + self.tokens[who]}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        st, hdrs, b = self.k.request(method, path, body=data, headers=h)
        try:
            parsed = json.loads(b) if b else None
        except ValueError:
            parsed = None
        return st, hdrs, parsed

    def count(self, table, where="1=1"):
        return int(self.db.scalar("SELECT COUNT(*) FROM %s WHERE %s" % (table, where)))

    def counts(self):
        """Row counts of everything a request could write."""
        return {t: self.count(t) for t in ("ticket", "message", "customer", "customer_identity",
                                           "event", "outbox", "inbound_receipt", "ticket_tag",
                                           "attachment")}

    def new_ticket(self, who="admin", email="someone@example.org", **fields):
        body = {"subject": "Subject", "text": "Text", "customer": {"email": email}}
        body.update(fields)
        st, hdrs, b = self.api("POST", "/api/v1/tickets", body, who=who)
        if st != 201:
            raise AssertionError("create ticket -> %s %r" % (st, b))
        return b

    def stop(self):
        return self.k.stop()
