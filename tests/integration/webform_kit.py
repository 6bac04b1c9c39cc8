"""Helpers for the web form and portal tests (test_webform*.py).

    site = webform_kit.Site(self.addClassCleanup, env={...})   # db + queues + kefud
    st, hdrs, j = site.post_json({...})                        # POST /api/v1/public/requests
    st, hdrs, html = site.get("/support/new")

Form tokens are the server's HMAC tokens (channels/webform/form_token.c);
mint() makes one with the key the server keeps in kefu_meta, so a test can
state exactly when a form was "shown" instead of sleeping.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest as kt  # noqa: E402

BASE_URL = "http://kefu.test"
CATEGORIES = "general:General support,billing:Billing"
DEFAULT_ENV = {
    "KEFU_WEBFORM_CATEGORIES": CATEGORIES,
    "KEFU_WEBFORM_MIN_FILL": "0",
    "KEFU_WEBFORM_RATE_IP": "0",
    "KEFU_WEBFORM_RATE_EMAIL": "0",
    "KEFU_PUBLIC_BASE_URL": BASE_URL,
    "KEFU_ATTACHMENT_MAX_BYTES": "102400",
    "KEFU_ATTACHMENT_MAX_COUNT": "2",
    "KEFU_WEBFORM_CORS_ORIGINS": "https://shop.example",
    "KEFU_WEBFORM_FRAME_ANCESTORS": "'self' https://shop.example",
}
TABLES = ("ticket", "message", "customer", "customer_identity", "attachment", "outbox",
          "portal_token", "inbound_receipt")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def multipart(fields, files=(), boundary=None):
    """fields: [(name, value)], files: [(name, filename, bytes)] -> (body, content type)."""
    boundary = boundary or "kefu-wf-" + secrets.token_hex(8)
    out = b""
    for name, value in fields:
        out += b"--" + boundary.encode() + b"\r\n"
        out += ('Content-Disposition: form-data; name="%s"\r\n\r\n' % name).encode()
        out += value.encode("utf-8") + b"\r\n"
    for name, filename, data in files:
        out += b"--" + boundary.encode() + b"\r\n"
        out += ('Content-Disposition: form-data; name="%s"; filename="%s"\r\n' % (name, filename)
                ).encode("utf-8")
        out += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return out, "multipart/form-data; boundary=" + boundary


def hidden(html, name="form_token", index=0):
    found = re.findall(r'name="%s" value="([^"]*)"' % re.escape(name), html)
    if len(found) <= index:
        raise AssertionError("no hidden %s #%d in the page:\n%s" % (name, index, html[:3000]))
    return found[index]


class Site:
    def __init__(self, register, env=None, queues=("general", "billing")):
        self.db = kt.fresh_db(register)
        cp = kt.run_kefud(["migrate"], env=self.db.kefud_env())
        if cp.returncode != 0:
            raise AssertionError("migrate failed\n" + kt.describe(cp))
        self.queue = {}
        for slug in queues:
            self.db.query("INSERT INTO queue (name, slug) VALUES ('%s', '%s')" % (slug.title(), slug))
            self.queue[slug] = int(self.db.scalar("SELECT id FROM queue WHERE slug = '%s'" % slug))
        cp = kt.run_kefud(["admin", "create-token", "--role", "admin", "--name", "wf-admin"],
                          env=self.db.kefud_env())
        if cp.returncode != 0:
            raise AssertionError("create-token failed\n" + kt.describe(cp))
        self.admin = cp.stdout.strip().splitlines()[-1].split()[-1]
        e = dict(DEFAULT_ENV)
        e["KEFU_DB_WORKERS"] = "4"
        e.update(env or {})
        self.env = e
        self.k = kt.Kefud(self.db, env=e, register=register).start()
        self._key = None

    # -- HTTP

    def request(self, method, path, body=None, headers=None):
        st, hdrs, data = self.k.request(method, path, body=body, headers=headers or {})
        return st, hdrs, data

    def get(self, path, headers=None):
        st, hdrs, data = self.request("GET", path, headers=headers)
        return st, hdrs, data.decode("utf-8", errors="replace")

    def api(self, method, path, body=None):
        h = {"Authorization": "Bearer " + self.admin}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        st, hdrs, raw = self.request(method, path, body=data, headers=h)
        return st, hdrs, (json.loads(raw) if raw and "json" in hdrs.get("content-type", "") else raw)

    def form_token(self, lang=None):
        st, _, j = self.api("GET", "/api/v1/public/form" + ("?lang=" + lang if lang else ""))
        if st != 200:
            raise AssertionError("GET /api/v1/public/form -> %s %r" % (st, j))
        return j["form_token"]

    def fields(self, **over):
        f = {"name": "Ann Customer", "email": "ann-%s@example.org" % secrets.token_hex(3),
             "subject": "Printer on fire", "category": "general",
             "description": "It smokes.\nWhat now?", "form_token": self.form_token()}
        f.update(over)
        return {k: v for k, v in f.items() if v is not None}

    def post_json(self, fields, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        st, hdrs, raw = self.request("POST", "/api/v1/public/requests",
                                     body=json.dumps(fields).encode(), headers=h)
        return st, hdrs, _json(raw)

    def post_urlencoded(self, fields, path="/api/v1/public/requests", headers=None):
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(headers or {})
        st, hdrs, raw = self.request("POST", path, body=urllib.parse.urlencode(fields).encode(),
                                     headers=h)
        return st, hdrs, raw

    def post_multipart(self, fields, files=(), path="/api/v1/public/requests", headers=None):
        body, ctype = multipart(list(fields.items()), files)
        h = {"Content-Type": ctype}
        h.update(headers or {})
        return self.request("POST", path, body=body, headers=h)

    # -- database

    def counts(self):
        return {t: int(self.db.scalar("SELECT COUNT(*) FROM %s" % t)) for t in TABLES}

    def outbox(self, where="1=1"):
        rows = self.db.query("SELECT id, kind, channel, target, payload, ticket_id, status "
                             "FROM outbox WHERE %s ORDER BY id" % where)
        return [{"id": int(r[0]), "kind": r[1], "channel": r[2], "target": r[3],
                 "payload": json.loads(r[4]), "ticket_id": None if r[5] == "NULL" else int(r[5]),
                 "status": r[6]} for r in rows]

    def key(self):
        if self._key is None:
            self.get("/support/new")  # the server makes the key when it first needs it
            self._key = bytes.fromhex(self.db.scalar(
                "SELECT v FROM kefu_meta WHERE k = 'webform_form_key'"))
        return self._key

    def mint(self, purpose="new", binding="", issued=None, nonce=None):
        """A form token as the server makes it, issued at `issued` (Unix time)."""
        issued = int(time.time()) if issued is None else int(issued)
        nonce = nonce or b64url(secrets.token_bytes(12))
        msg = ("kefu-form-v1|%s|%s|%d|%s" % (purpose, binding, issued, nonce)).encode()
        mac = b64url(hmac.new(self.key(), msg, hashlib.sha256).digest())
        return "%d.%s.%s" % (issued, nonce, mac)

    def stop(self):
        return self.k.stop()


def _json(raw):
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


def portal_path(url):
    """The path of a portal URL (the links carry BASE_URL)."""
    if not url.startswith(BASE_URL + "/support/t/"):
        raise AssertionError("portal URL %r does not start with %s/support/t/" % (url, BASE_URL))
    return url[len(BASE_URL):]


def cookie_from(hdrs, name):
    for part in hdrs.get("set-cookie", "").split(", "):
        m = re.match(r"\s*%s=([^;]*)" % re.escape(name), part)
        if m:
            return m.group(1)
    return None
