"""`kefud admin ...`: agents, passwords, tokens, configuration export/import; exit codes 0/1/2."""

import json
import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefuauth  # noqa: E402
from kefuauth import bearer, login, login_raw, request, run_admin  # noqa: E402

OK, FAILED, USAGE = 0, 1, 2


class AdminCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = kefutest.fresh_db(cls.addClassCleanup)
        cls.kefud = kefutest.Kefud(cls.db, register=cls.addClassCleanup).start()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        assert cls.kefud.stop() == 0, "kefud did not exit 0 after SIGTERM"

    def admin(self, args, stdin=None, want=OK, db=None, env=None):
        cp = run_admin(db or self.db, args, stdin_text=stdin, env=env)
        self.assertEqual(cp.returncode, want, kefutest.describe(cp))
        return cp

    def unique(self, prefix="cli"):
        AdminCli.n += 1
        return "%s%d" % (prefix, AdminCli.n)

    def create(self, login_name, role="agent", password="cli-password-1", extra=()):
        args = ["create-agent", "--login", login_name, "--name", "CLI " + login_name,
                "--email", login_name + "@example.com", "--role", role] + list(extra)
        return self.admin(args, stdin=password + "\n" if password is not None else None)

    # -- usage

    def test_help_and_usage_errors(self):
        cp = self.admin(["help"])
        for cmd in ("create-agent", "set-password", "create-token", "list-tokens", "revoke-token",
                    "export-config", "import-config"):
            self.assertIn(cmd, cp.stdout)
        self.assertIn("unknown command", self.admin(["frobnicate"], want=USAGE).stderr)
        self.admin([], want=USAGE)
        self.assertIn("--email", self.admin(["create-agent", "--login", "x", "--name", "X"],
                                            want=USAGE).stderr)
        self.assertIn("unknown option", self.admin(["list-tokens", "--bogus"], want=USAGE).stderr)
        self.admin(["create-agent", "--login", "x", "--name", "X", "--email", "x@example.com",
                    "--role", "root"], want=USAGE)
        self.admin(["create-agent", "--login", "bad login", "--name", "X", "--email",
                    "x@example.com"], want=USAGE)
        self.admin(["create-agent", "--login", "x", "--name", "X", "--email", "nope"], want=USAGE)
        self.admin(["create-agent", "--login", "x", "--name", "X", "--email", "x@example.com",
                    "--password", "short"], want=USAGE)
        self.admin(["create-agent", "--login", "x", "--login", "y", "--name", "X", "--email",
                    "x@example.com"], want=USAGE)
        self.admin(["create-token", "--role", "agent"], want=USAGE)
        self.admin(["revoke-token"], want=USAGE)
        self.admin(["revoke-token", "--id", "abc"], want=USAGE)
        self.admin(["revoke-token", "--id", "-3"], want=USAGE)
        self.admin(["set-password"], want=USAGE)
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM agent WHERE login IN ('x', 'y')"), "0")

    def test_database_unreachable_is_exit_1(self):
        env = {"KEFU_DB_SOCKET": "/nonexistent/mysqld.sock", "KEFU_DB_CONNECT_TIMEOUT": "2"}
        for args in (["list-tokens"], ["create-token", "--role", "agent", "--name", "n"],
                     ["export-config"]):
            cp = self.admin(args, env=env, want=FAILED)
            self.assertIn("database", cp.stderr)

    # -- agents and passwords

    def test_create_agent_with_password_from_stdin(self):
        name = self.unique()
        cp = self.create(name, role="supervisor", password="stdin-password-1")
        self.assertEqual(cp.stdout, "")
        self.assertIn("login=" + name, cp.stderr)
        s = login(self.kefud, name, "stdin-password-1")
        self.assertEqual(s.body["agent"]["role"], "supervisor")
        self.assertEqual(self.db.scalar("SELECT CONCAT(display_name, '|', email) FROM agent WHERE login = '%s'"
                                        % name), "CLI %s|%s@example.com" % (name, name))

    def test_create_agent_with_password_option(self):
        name = self.unique()
        cp = self.create(name, password=None, extra=["--password", "option-password"])
        self.assertEqual(cp.stdout, "")
        login(self.kefud, name, "option-password")

    def test_create_agent_generates_a_password(self):
        name = self.unique()
        cp = self.create(name, password=None)  # stdin is /dev/null: nothing to read
        generated = cp.stdout.strip()
        self.assertRegex(generated, r"^[A-Za-z0-9]{20}$")
        self.assertIn("generated", cp.stderr)
        login(self.kefud, name, generated)
        self.assertNotIn(generated, self.db.scalar("SELECT password_hash FROM agent WHERE login = '%s'"
                                                   % name))

    def test_create_agent_duplicate_is_exit_1(self):
        name = self.unique()
        self.create(name)
        for login_name in (name, name.upper()):
            self.assertIn("already exists", self.admin(
                ["create-agent", "--login", login_name, "--name", "N", "--email", "n@example.com",
                 "--password", "long-enough"], want=FAILED).stderr)
        self.assertEqual(self.db.scalar("SELECT COUNT(*) FROM agent WHERE login = '%s'" % name), "1")

    def test_set_password(self):
        name = self.unique()
        self.create(name, password="first-password")
        s = login(self.kefud, name, "first-password")
        cp = self.admin(["set-password", "--login", name], stdin="second-password\n")
        self.assertEqual(cp.stdout, "")
        self.assertIn("1 session(s) ended", cp.stderr)
        self.assertEqual(s.request("GET", "/api/v1/session/me")[0], 401)
        self.assertEqual(login_raw(self.kefud, name, "first-password", source="127.0.2.1")[0], 401)
        login(self.kefud, name, "second-password")
        generated = self.admin(["set-password", "--login", name]).stdout.strip()
        self.assertRegex(generated, r"^[A-Za-z0-9]{20}$")
        login(self.kefud, name, generated)
        self.assertIn("no agent", self.admin(["set-password", "--login", "nobody-at-all"],
                                             stdin="whatever-password\n", want=FAILED).stderr)
        self.admin(["set-password", "--login", name], stdin="short\n", want=USAGE)
        login(self.kefud, name, generated)

    # -- tokens

    def test_tokens(self):
        agent = self.unique()
        self.create(agent)
        cp = self.admin(["create-token", "--role", "agent", "--name", "cli token", "--agent", agent])
        token = cp.stdout.strip()
        self.assertRegex(token, r"^[A-Za-z0-9_-]{43}$")
        self.assertIn("shown once", cp.stderr)
        self.assertEqual(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token))[0], 200)
        self.admin(["create-token", "--role", "agent", "--name", "x", "--agent", "nobody-at-all"],
                   want=FAILED)

        table = self.admin(["list-tokens"]).stdout
        self.assertNotIn(token, table)
        self.assertTrue(table.startswith("ID\tNAME\tROLE\tAGENT\tPREFIX\tSTATUS"), table)
        row = [line for line in table.splitlines() if "\tcli token\t" in line]
        self.assertEqual(len(row), 1, table)
        cols = row[0].split("\t")
        self.assertEqual((cols[2], cols[3], cols[4], cols[5]), ("agent", agent, token[:8], "active"))
        tid = cols[0]

        items = json.loads(self.admin(["list-tokens", "--json"]).stdout)
        mine = [t for t in items if str(t["id"]) == tid]
        self.assertEqual(len(mine), 1)
        self.assertEqual((mine[0]["prefix"], mine[0]["agent"], mine[0]["status"]),
                         (token[:8], agent, "active"))
        self.assertNotIn(token, json.dumps(items))

        self.assertIn("revoked", self.admin(["revoke-token", "--id", tid]).stderr)
        self.assertIn("already", self.admin(["revoke-token", "--id", tid]).stderr)
        self.assertEqual(request(self.kefud, "GET", "/api/v1/session/me", headers=bearer(token))[0], 401)
        self.assertIn("no API token", self.admin(["revoke-token", "--id", "987654"], want=FAILED).stderr)
        items = json.loads(self.admin(["list-tokens", "--json"]).stdout)
        self.assertEqual([t["status"] for t in items if str(t["id"]) == tid], ["revoked"])

    # -- configuration

    def seed(self, db):
        q = kefuauth.create_token(db, "admin")
        for body in ({"name": "General", "slug": "general", "description": "Everything else"},
                     {"name": "账单", "slug": "billing"}):
            st, _, b = request(self.kefud, "POST", "/api/v1/queues", body, headers=bearer(q))
            self.assertEqual(st, 201, b)

    def test_export_import_round_trip(self):
        db = self.db
        self.seed(db)
        sup = self.unique("sup")
        self.create(sup, role="supervisor")
        qid = int(db.scalar("SELECT id FROM queue WHERE slug = 'billing'"))
        db.query("UPDATE agent SET skills = '[\"vip\"]', capacity = 7 WHERE login = '%s'; "
                 "INSERT INTO agent_queue (agent_id, queue_id) SELECT id, %d FROM agent WHERE login = '%s'; "
                 "INSERT INTO channel_account (channel, account, name, default_queue_id, settings) "
                 "VALUES ('email', 'support@example.com', 'Support', %d, '{\"poll\": 60}')"
                 % (sup, qid, sup, qid))
        cp = self.admin(["export-config"])
        conf = json.loads(cp.stdout)
        self.assertEqual((conf["format"], conf["version"]), ("kefu-config", 1))
        self.assertNotIn("argon2", cp.stdout)
        self.assertNotIn("password", cp.stdout)
        slugs = [q["slug"] for q in conf["queues"]]
        self.assertEqual(slugs, sorted(slugs))
        self.assertTrue({"billing", "general"} <= set(slugs), slugs)
        self.assertIn({"slug": "billing", "name": "账单", "description": ""}, conf["queues"])
        a = [x for x in conf["agents"] if x["login"] == sup][0]
        self.assertEqual((a["role"], a["skills"], a["capacity"], a["queues"], a["active"]),
                         ("supervisor", ["vip"], 7, ["billing"], True))
        self.assertEqual(conf["channel_accounts"], [{
            "channel": "email", "account": "support@example.com", "name": "Support",
            "default_queue": "billing", "settings": {"poll": 60}}])

        # Import into an empty database, export again: the same document.
        other = kefutest.fresh_db(self.addCleanup)
        self.assertEqual(kefutest.run_kefud(["migrate"], env=other.kefud_env()).returncode, 0)
        path = os.path.join(kefutest.mktemp_dir("kefu-conf-", self.addCleanup), "conf.json")
        self.admin(["export-config", "--output", path])
        with open(path) as f:
            self.assertEqual(json.load(f), conf)
        cp = self.admin(["import-config", "--file", path], db=other)
        self.assertIn("agents %d new" % len(conf["agents"]), cp.stderr)
        self.assertIn("has no password yet", cp.stderr)
        again = json.loads(self.admin(["export-config"], db=other).stdout)
        self.assertEqual(again, conf)
        # Imported agents cannot log in until they get a password.
        self.assertEqual(other.scalar("SELECT COUNT(*) FROM agent WHERE password_hash <> ''"), "0")

        # Importing the same document again changes nothing (upsert by login/slug).
        cp = self.admin(["import-config"], stdin=json.dumps(conf), db=other)
        self.assertIn("agents 0 new, 0 updated", cp.stderr)
        self.assertEqual(json.loads(self.admin(["export-config"], db=other).stdout), conf)

        # An edit is applied; fields left out keep their values; passwords are untouched.
        self.admin(["set-password", "--login", sup], stdin="imported-password\n", db=other)
        edit = {"agents": [{"login": sup, "display_name": "Renamed", "email": "r@example.com",
                            "queues": ["general"]}],
                "queues": [{"slug": "general", "name": "General support"}]}
        cp = self.admin(["import-config"], stdin=json.dumps(edit), db=other)
        self.assertIn("agents 0 new, 1 updated", cp.stderr)
        b = [x for x in json.loads(self.admin(["export-config"], db=other).stdout)["agents"]
             if x["login"] == sup][0]
        self.assertEqual((b["display_name"], b["email"], b["role"], b["skills"], b["capacity"], b["queues"]),
                         ("Renamed", "r@example.com", "supervisor", ["vip"], 7, ["general"]))
        self.assertTrue(other.scalar("SELECT password_hash FROM agent WHERE login = '%s'" % sup)
                        .startswith("$argon2id$"))

    def test_import_rejects_bad_input_and_writes_nothing(self):
        other = kefutest.fresh_db(self.addCleanup)
        self.assertEqual(kefutest.run_kefud(["migrate"], env=other.kefud_env()).returncode, 0)
        self.assertIn("not valid JSON", self.admin(["import-config"], stdin="{oops", db=other,
                                                   want=USAGE).stderr)
        self.admin(["import-config"], stdin="", db=other, want=USAGE)
        self.admin(["import-config", "--file", "/nonexistent/conf.json"], db=other, want=USAGE)
        bad = {"queues": [{"slug": "Bad Slug", "name": "x"}],
               "agents": [{"login": "ok", "display_name": "OK", "email": "nope", "role": "god",
                           "pets": 1}],
               "channel_accounts": [{"channel": "fax", "account": "1"}],
               "extra": True}
        err = self.admin(["import-config"], stdin=json.dumps(bad), db=other, want=USAGE).stderr
        for needle in ("extra: unknown field",):
            self.assertIn(needle, err)
        bad.pop("extra")
        err = self.admin(["import-config"], stdin=json.dumps(bad), db=other, want=USAGE).stderr
        for needle in ("queues[0].slug", "agents[0].email", "agents[0].role", "agents[0].pets",
                       "channel_accounts[0].channel", "nothing imported"):
            self.assertIn(needle, err)
        # Valid shape, but a queue that does not exist: refused as a whole (exit 1).
        doc = {"queues": [{"slug": "fine", "name": "Fine"}],
               "agents": [{"login": "ok", "display_name": "OK", "email": "ok@example.com",
                           "queues": ["fine", "missing"]}]}
        err = self.admin(["import-config"], stdin=json.dumps(doc), db=other, want=FAILED).stderr
        self.assertIn('no queue with slug "missing"', err)
        for table in ("queue", "agent", "agent_queue", "channel_account"):
            self.assertEqual(other.scalar("SELECT COUNT(*) FROM %s" % table), "0", table)


if __name__ == "__main__":
    kefutest.main()
