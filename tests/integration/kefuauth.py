"""Helpers for tests that need agents, sessions and API tokens.

    import kefuauth
    admin = kefuauth.create_agent(db, "boss", role="admin")          # via `kefud admin`
    token = kefuauth.create_token(db, "admin")                       # Bearer token
    s = kefuauth.login(kefud, "boss", admin.password)                # Session (cookie + CSRF)
    status, hdrs, body = s.request("POST", "/api/v1/queues", {"name": "Q", "slug": "q"})

Every agent and token is made with the real admin command line, so these
helpers exercise it too.
"""

import http.client
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402


def run_admin(db, args, stdin_text=None, env=None, timeout=kefutest.CMD_TIMEOUT):
    """`kefud admin ARGS` against db; CompletedProcess (text).  stdin_text None = /dev/null."""
    e = dict(db.kefud_env()) if db is not None else {}
    if env:
        e.update(env)
    p = kefutest.spawn([kefutest.kefud_path(), "admin"] + list(args), env=kefutest.clean_env(e),
                       stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(stdin_text.encode() if stdin_text is not None else None,
                                 timeout=timeout)
    except subprocess.TimeoutExpired:
        kefutest.reap(p)
        raise AssertionError("kefud admin %s did not finish within %ss" % (" ".join(args), timeout))
    kefutest._live.discard(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


class Agent:
    def __init__(self, login, password, role, id=None):
        self.login, self.password, self.role, self.id = login, password, role, id


def create_agent(db, login, role="agent", password=None, name=None, email=None):
    """Create an agent with `kefud admin create-agent`; Agent with its password and id."""
    password = password or ("pw-" + login + "-0123456789")
    cp = run_admin(db, ["create-agent", "--login", login, "--name", name or login.title(),
                        "--email", email or "%s@example.com" % login, "--role", role],
                   stdin_text=password + "\n")
    if cp.returncode != 0:
        raise AssertionError("create-agent failed\n" + kefutest.describe(cp))
    agent_id = int(db.scalar("SELECT id FROM agent WHERE login = '%s'" % login))
    return Agent(login, password, role, agent_id)


def create_token(db, role, name=None, agent=None):
    """A new API token of role (optionally acting as agent login) made by the admin CLI."""
    args = ["create-token", "--role", role, "--name", name or ("test-" + role)]
    if agent:
        args += ["--agent", agent]
    cp = run_admin(db, args)
    if cp.returncode != 0:
        raise AssertionError("create-token failed\n" + kefutest.describe(cp))
    token = cp.stdout.strip()
    if len(token) != 43:
        raise AssertionError("create-token printed %r" % cp.stdout)
    return token


def request(kefud, method, path, body=None, headers=None, source=None, timeout=30.0,
            read_body=True):
    """(status, {lower-case header: value}, body bytes); source = local address to connect from.

    body may be bytes/str (sent as is) or any other value (sent as JSON).
    """
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(kefud.host, kefud.port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read() if read_body else b""
        out = {}
        for k, v in resp.getheaders():
            k = k.lower()
            out[k] = out[k] + ", " + v if k in out else v
        return resp.status, out, data
    finally:
        conn.close()


def bearer(token):
    return {"Authorization": "Bearer " + token}


class Session:
    """A logged-in agent: the cookie and CSRF token from POST /api/v1/session."""

    def __init__(self, kefud, cookie, csrf, body, set_cookie):
        self.kefud, self.cookie, self.csrf, self.body, self.set_cookie = (
            kefud, cookie, csrf, body, set_cookie)

    def headers(self, csrf=True):
        h = {"Cookie": "kefu_session=" + self.cookie}
        if csrf:
            h["X-CSRF-Token"] = self.csrf
        return h

    def request(self, method, path, body=None, headers=None, csrf=True, **kw):
        h = self.headers(csrf)
        h.update(headers or {})
        return request(self.kefud, method, path, body=body, headers=h, **kw)


def login_raw(kefud, login, password, source=None, headers=None):
    return request(kefud, "POST", "/api/v1/session", {"login": login, "password": password},
                   headers=headers, source=source)


def login(kefud, login_name, password, source=None):
    status, hdrs, body = login_raw(kefud, login_name, password, source=source)
    if status != 201:
        raise AssertionError("login %s -> %s %r" % (login_name, status, body[:500]))
    set_cookie = hdrs.get("set-cookie", "")
    first = set_cookie.split(";")[0]
    name, _, value = first.partition("=")
    if name.strip() != "kefu_session" or not value:
        raise AssertionError("no kefu_session cookie in %r" % set_cookie)
    data = json.loads(body)
    return Session(kefud, value, data["csrf_token"], data, set_cookie)


def problem(body):
    """The problem+json document of an error reply."""
    return kefutest.parse_json(body)
