"""Helpers for the ticket-core tests (outbox, events, attachments).

Built on kefutest: API tokens from `kefud admin create-token`, fixture rows
written with SQL (queues, agents, customers, tickets), JSON requests with a
Bearer token, and a small Server-Sent Events client that reads a chunked
stream from a raw socket with timeouts.
"""

import json
import secrets
import socket
import time

import kefutest as kt


def token(db, role, agent_login=None):
    """A new API token (Bearer) of role, optionally acting as agent_login."""
    args = ["admin", "create-token", "--role", role, "--name", "t-" + secrets.token_hex(4)]
    if agent_login:
        args += ["--agent", agent_login]
    cp = kt.run_kefud(args, env=db.kefud_env())
    if cp.returncode != 0:
        raise AssertionError("create-token failed\n" + kt.describe(cp))
    return cp.stdout.strip().splitlines()[-1].strip()


def sql_str(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def insert_id(db, sql):
    """Run an INSERT and return LAST_INSERT_ID() (same session)."""
    return int(db.query(sql + "; SELECT LAST_INSERT_ID()")[-1][0])


def make_queue(db, slug=None):
    slug = slug or "q-" + secrets.token_hex(4)
    return insert_id(db, "INSERT INTO queue (name, slug) VALUES (%s, %s)"
                     % (sql_str(slug), sql_str(slug)))


def make_agent(db, login=None, role="agent", queues=()):
    login = login or "a-" + secrets.token_hex(4)
    aid = insert_id(db, "INSERT INTO agent (login, display_name, email, role, password_hash) "
                        "VALUES (%s, %s, %s, %s, 'x')"
                    % (sql_str(login), sql_str(login), sql_str(login + "@example.com"),
                       sql_str(role)))
    for q in queues:
        db.query("INSERT INTO agent_queue (agent_id, queue_id) VALUES (%d, %d)" % (aid, q))
    return aid, login


def make_customer(db, name="Customer"):
    return insert_id(db, "INSERT INTO customer (name) VALUES (%s)" % sql_str(name))


def make_ticket(db, queue_id=None, subject="Help", customer_id=None):
    customer_id = customer_id or make_customer(db)
    return insert_id(db, "INSERT INTO ticket (subject, channel, customer_id, queue_id) "
                         "VALUES (%s, 'api', %d, %s)"
                     % (sql_str(subject), customer_id,
                        "NULL" if queue_id is None else str(int(queue_id))))


def add_event(db, ticket_id, kind, data=None):
    return insert_id(db, "INSERT INTO event (ticket_id, kind, data) VALUES (%s, %s, %s)"
                     % ("NULL" if ticket_id is None else str(int(ticket_id)), sql_str(kind),
                        sql_str(json.dumps(data or {}))))


def api(kefud, method, path, tok=None, body=None, headers=None, timeout=kt.HTTP_TIMEOUT):
    """(status, headers, parsed JSON or raw bytes)."""
    h = dict(headers or {})
    if tok:
        h["Authorization"] = "Bearer " + tok
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    status, hdrs, data = kefud.request(method, path, body=body, headers=h, timeout=timeout)
    ctype = hdrs.get("content-type", "")
    if "json" in ctype and data:
        return status, hdrs, json.loads(data)
    return status, hdrs, data


class SSEClient:
    """GET a text/event-stream over a raw socket and parse its events.

    events() returns what arrived so far; wait_for(pred, timeout) reads until
    an event satisfies pred.  Each event is a dict: id, event, data (parsed
    JSON when it is JSON), plus comments seen in self.comments.
    """

    def __init__(self, kefud, path, tok=None, headers=None, connect_timeout=10):
        self.sock = socket.create_connection((kefud.host, kefud.port), timeout=connect_timeout)
        lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (kefud.host, kefud.port),
                 "Accept: text/event-stream"]
        if tok:
            lines.append("Authorization: Bearer " + tok)
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""
        self.status = None
        self.headers = {}
        self.body = b""        # de-chunked body so far
        self.text = ""         # unparsed SSE text
        self.list = []
        self.comments = []
        self.closed = False
        self._read_head(connect_timeout)

    def _recv(self, timeout):
        self.sock.settimeout(max(0.01, timeout))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:  # reset by the server (a cut-off client)
            self.closed = True
            self.reset = True
            return False
        if not data:
            self.closed = True
            return False
        self.raw += data
        return True

    def _read_head(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            if time.monotonic() > deadline or self.closed:
                raise AssertionError("no response head: %r" % self.raw[:300])
            self._recv(deadline - time.monotonic())
        head, _, rest = self.raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.raw = rest
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self._dechunk()

    def _dechunk(self):
        if not self.chunked:
            self.body += self.raw
            self.text += self.raw.decode("utf-8", "replace")
            self.raw = b""
        else:
            while True:
                i = self.raw.find(b"\r\n")
                if i < 0:
                    break
                size = int(self.raw[:i].split(b";")[0], 16)
                if len(self.raw) < i + 2 + size + 2:
                    break
                chunk = self.raw[i + 2:i + 2 + size]
                self.raw = self.raw[i + 2 + size + 2:]
                if size == 0:
                    self.ended = True
                    self.closed = True
                    break
                self.body += chunk
                self.text += chunk.decode("utf-8", "replace")
        self._parse()

    def _parse(self):
        while "\n\n" in self.text:
            block, _, self.text = self.text.partition("\n\n")
            ev = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                if k == "data":
                    ev["data"] = ev["data"] + "\n" + v if "data" in ev else v
                elif k in ("id", "event", "retry"):
                    ev[k] = v
            if "data" in ev:
                try:
                    ev["data"] = json.loads(ev["data"])
                except ValueError:
                    pass
                self.list.append(ev)

    def pump(self, timeout):
        """Read for up to timeout seconds (returns early when data came)."""
        if self.closed:
            return False
        got = self._recv(timeout)
        if got:
            self._dechunk()
        return got

    def wait_for(self, pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.list:
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.pump(min(left, 0.5))

    def wait_closed(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.pump(min(0.5, deadline - time.monotonic()))
        return self.closed

    def ids(self):
        return [int(e["id"]) for e in self.list if "id" in e]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
