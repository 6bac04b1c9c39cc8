"""A fake WeChat API for the tests: what kefud's "wechat" adapter talks to.

Implements, as documented by WeChat (research §8, §9):
    GET  /cgi-bin/token?grant_type=client_credential&appid=&secret=    Official Account token
    GET  /cgi-bin/gettoken?corpid=&corpsecret=                         WeCom token
    POST /cgi-bin/message/custom/send?access_token=                    customer-service message
    POST /cgi-bin/message/send?access_token=                           WeCom app message
    GET  /cgi-bin/media/get?access_token=&media_id=                    media download
    POST /cgi-bin/media/upload?access_token=&type=                     temporary media upload
A token is valid once issued until expire_tokens() or a newer one for the same
app (WeChat keeps the previous one for five minutes; here it is retired at
once unless grace=True, which makes races visible).  An unknown or retired
token gets 40001, an expired one 42001.

Every request is recorded (self.requests, dicts with method, path, query, json,
token).  Uploads (multipart/form-data, file field "media") are kept in
self.uploads (media_id -> dict type, filename, content_type, data) and
recorded in the request as rec["upload"]; type=image must be PNG/JPEG/GIF
bytes (else 40005), at most 10 MB (else 40009).  Sends take msgtype text,
image (both APIs) and file (WeCom's message/send only; custom/send answers
40008); image and file need a media_id this fake issued (else 40007).
Answers to sends can be scripted, consumed one per send:
    fake.script("send", [45015])            errcode 45015
    fake.script("send", [-1, "ok"])         busy, then success
    fake.script("send", ["hang"])           no answer until release() (or 60 s)
    fake.script("send", ["http500"])        an HTTP 500
    fake.script("token", [40001])           the token endpoint refuses once
    fake.script("upload", [-1, "ok"])       uploads: the same actions as sends

    fake = FakeWeChat(apps={"wx1": "secret"}, corps={"ww1": "csecret"}).start()
    ... fake.url ...
    fake.stop()

Listens on 127.0.0.1 on a port the kernel picks; stdlib only.  Run by hand:
    python3 fake_wechat.py --app wx1=secret   (prints the URL, Ctrl-C stops it)
"""

import argparse
import http.server
import json
import re
import secrets
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True


class FakeWeChat:
    def __init__(self, apps=None, corps=None, token_ttl=7200, token_delay=0.0, grace=False):
        self.apps = dict(apps or {})
        self.corps = dict(corps or {})
        self.token_ttl = token_ttl
        self.token_delay = token_delay
        self.grace = grace
        self.lock = threading.Lock()
        self.requests = []
        self.tokens = {}        # token -> {"app": id, "expires": t, "valid": bool}
        self.scripts = {"send": [], "token": [], "media": [], "upload": []}
        self.media = {}         # media_id -> (content_type, bytes)
        self.uploads = {}       # media_id -> {"type", "filename", "content_type", "data"}
        self.released = threading.Event()
        self.server = None
        self.thread = None

    # -- control

    def start(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def stop(self):
        self.released.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def script(self, kind, actions):
        with self.lock:
            self.scripts[kind].extend(actions)

    def release(self):
        """End every hanging request (they then answer errcode -1); later hangs end at once."""
        self.released.set()

    def expire_tokens(self):
        """Every token issued so far is now expired (sends get 42001)."""
        with self.lock:
            for t in self.tokens.values():
                t["expires"] = 0

    def calls(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def sends(self):
        """Accepted sends, in the order they were received."""
        with self.lock:
            return [r for r in self.requests if r.get("answer") == 0 and r["path"] in
                    ("/cgi-bin/message/custom/send", "/cgi-bin/message/send")]

    def accepted_uploads(self):
        return [r for r in self.calls("/cgi-bin/media/upload") if r.get("answer") == 0]

    def token_calls(self, app=None):
        rs = self.calls("/cgi-bin/token") + self.calls("/cgi-bin/gettoken")
        if app is not None:
            rs = [r for r in rs if r["query"].get("appid", r["query"].get("corpid")) == app]
        return rs

    # -- the server side

    def _next(self, kind):
        with self.lock:
            return self.scripts[kind].pop(0) if self.scripts[kind] else None

    def _reply(self, h, obj, status=200, ctype="application/json; encoding=utf-8", raw=None):
        data = raw if raw is not None else json.dumps(obj, ensure_ascii=False).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout we provoked)

    def _token_ok(self, tok):
        """0, or the errcode WeChat gives for this token."""
        with self.lock:
            t = self.tokens.get(tok)
            if t is None or not t["valid"]:
                return 40001
            if t["expires"] < time.time():
                return 42001
            return 0

    def _handle(self, h, method):
        u = urllib.parse.urlsplit(h.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        body = b""
        n = int(h.headers.get("Content-Length") or 0)
        if n:
            body = h.rfile.read(n)
        rec = {"method": method, "path": u.path, "query": q, "body": body, "time": time.time(),
               "token": q.get("access_token")}
        try:
            rec["json"] = json.loads(body) if body else None
        except ValueError:
            rec["json"] = None
        with self.lock:
            self.requests.append(rec)

        if u.path in ("/cgi-bin/token", "/cgi-bin/gettoken") and method == "GET":
            return self._token(h, u.path, q, rec)
        if u.path in ("/cgi-bin/message/custom/send", "/cgi-bin/message/send") and method == "POST":
            return self._send(h, u.path, q, rec)
        if u.path == "/cgi-bin/media/get" and method == "GET":
            return self._media(h, q, rec)
        if u.path == "/cgi-bin/media/upload" and method == "POST":
            return self._upload(h, q, rec)
        rec["answer"] = 404
        self._reply(h, {"errcode": 40066, "errmsg": "invalid url"}, status=404)

    def _token(self, h, path, q, rec):
        if self.token_delay:
            time.sleep(self.token_delay)
        scripted = self._next("token")
        if path == "/cgi-bin/token":
            app, sec, table = q.get("appid"), q.get("secret"), self.apps
            if q.get("grant_type") != "client_credential":
                rec["answer"] = 40002
                return self._reply(h, {"errcode": 40002, "errmsg": "invalid grant_type"})
        else:
            app, sec, table = q.get("corpid"), q.get("corpsecret"), self.corps
        if isinstance(scripted, int):
            rec["answer"] = scripted
            return self._reply(h, {"errcode": scripted, "errmsg": "scripted"})
        if app not in table:
            rec["answer"] = 40013
            return self._reply(h, {"errcode": 40013, "errmsg": "invalid appid"})
        if sec != table[app]:
            rec["answer"] = 40001
            return self._reply(h, {"errcode": 40001, "errmsg": "invalid credential, access_token "
                                   "is invalid or not latest"})
        tok = "TOKEN_" + secrets.token_urlsafe(24)
        with self.lock:
            if not self.grace:
                for t in self.tokens.values():
                    if t["app"] == app:
                        t["valid"] = False
            self.tokens[tok] = {"app": app, "expires": time.time() + self.token_ttl, "valid": True}
        rec["answer"] = 0
        rec["issued"] = tok
        self._reply(h, {"access_token": tok, "expires_in": self.token_ttl})

    def _send(self, h, path, q, rec):
        code = self._token_ok(q.get("access_token"))
        if code:
            rec["answer"] = code
            return self._reply(h, {"errcode": code, "errmsg": "access_token invalid" if code == 40001
                                   else "access_token expired"})
        j = rec["json"]
        mt = j.get("msgtype") if isinstance(j, dict) else None
        allowed = ("text", "image", "file") if path == "/cgi-bin/message/send" else \
            ("text", "image")
        if isinstance(j, dict) and j.get("touser") and mt in ("image", "file", "voice", "video") \
                and mt not in allowed:
            rec["answer"] = 40008
            return self._reply(h, {"errcode": 40008, "errmsg": "invalid message type"})
        if not isinstance(j, dict) or not j.get("touser") or mt not in allowed or \
                not isinstance(j.get(mt), dict) or \
                not j[mt].get("content" if mt == "text" else "media_id"):
            rec["answer"] = 44002
            return self._reply(h, {"errcode": 44002, "errmsg": "empty post data"})
        if mt != "text":
            with self.lock:
                up = self.uploads.get(j[mt]["media_id"])
            if up is None or (mt == "image" and up["type"] != "image"):
                rec["answer"] = 40007
                return self._reply(h, {"errcode": 40007, "errmsg": "invalid media_id"})
        if path == "/cgi-bin/message/send" and not isinstance(j.get("agentid"), int):
            rec["answer"] = 40056
            return self._reply(h, {"errcode": 40056, "errmsg": "invalid agentid"})
        action = self._next("send")
        if action == "hang":
            rec["answer"] = "hang"
            self.released.wait(60)
            return self._reply(h, {"errcode": -1, "errmsg": "system error"})
        if action == "http500":
            rec["answer"] = 500
            return self._reply(h, None, status=500, ctype="text/plain", raw=b"oops")
        if isinstance(action, int):
            rec["answer"] = action
            return self._reply(h, {"errcode": action, "errmsg": "scripted %d" % action})
        rec["answer"] = 0
        out = {"errcode": 0, "errmsg": "ok"}
        if path == "/cgi-bin/message/send":
            out.update({"invaliduser": "", "msgid": secrets.token_hex(8)})
        self._reply(h, out)

    def _scripted(self, h, kind, rec):
        """Play the next scripted action for kind: True when it answered."""
        action = self._next(kind)
        if action == "hang":
            rec["answer"] = "hang"
            self.released.wait(60)
            self._reply(h, {"errcode": -1, "errmsg": "system error"})
            return True
        if action == "http500":
            rec["answer"] = 500
            self._reply(h, None, status=500, ctype="text/plain", raw=b"oops")
            return True
        if isinstance(action, int):
            rec["answer"] = action
            self._reply(h, {"errcode": action, "errmsg": "scripted %d" % action})
            return True
        return False

    def _upload(self, h, q, rec):
        code = self._token_ok(q.get("access_token"))
        if code:
            rec["answer"] = code
            return self._reply(h, {"errcode": code, "errmsg": "access_token invalid"})
        mtype = q.get("type")
        if mtype not in ("image", "voice", "video", "thumb", "file"):
            rec["answer"] = 40004
            return self._reply(h, {"errcode": 40004, "errmsg": "invalid media type"})
        media = [p for p in parse_multipart(h.headers.get("Content-Type", ""), rec["body"])
                 if p["name"] == "media" and p["filename"]]
        if len(media) != 1:
            rec["answer"] = 41005
            return self._reply(h, {"errcode": 41005, "errmsg": "media data missing"})
        part = media[0]
        data = part["data"]
        rec["upload"] = {"type": mtype, "filename": part["filename"],
                         "content_type": part["content_type"], "data": data}
        if mtype == "image" and not data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff",
                                                     b"GIF87a", b"GIF89a")):
            rec["answer"] = 40005
            return self._reply(h, {"errcode": 40005, "errmsg": "invalid file type"})
        if mtype == "image" and len(data) > 10 * 1024 * 1024:
            rec["answer"] = 40009
            return self._reply(h, {"errcode": 40009, "errmsg": "invalid image size"})
        if self._scripted(h, "upload", rec):
            return
        mid = "MEDIA_" + secrets.token_urlsafe(24)
        with self.lock:
            self.uploads[mid] = dict(rec["upload"])
        rec["answer"] = 0
        rec["media_id"] = mid
        self._reply(h, {"type": mtype, "media_id": mid, "created_at": int(time.time())})

    def _media(self, h, q, rec):
        code = self._token_ok(q.get("access_token"))
        if code:
            rec["answer"] = code
            return self._reply(h, {"errcode": code, "errmsg": "access_token invalid"})
        m = self.media.get(q.get("media_id"))
        if m is None:
            rec["answer"] = 40007
            return self._reply(h, {"errcode": 40007, "errmsg": "invalid media_id"})
        rec["answer"] = 0
        ctype, data = m
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Disposition", 'attachment; filename="%s.bin"' % q["media_id"][:20])
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def parse_multipart(ctype, body):
    """The parts of a multipart/form-data body: dicts name, filename, content_type, data."""
    m = re.search(r'boundary="?([^";]+)"?', ctype or "")
    if not ctype.lower().startswith("multipart/form-data") or m is None:
        return []
    delim = b"\r\n--" + m.group(1).encode()
    segs = (b"\r\n" + body).split(delim)
    if len(segs) < 3 or not segs[-1].startswith(b"--"):
        return []  # no parts, or no closing delimiter
    parts = []
    for seg in segs[1:-1]:
        if not seg.startswith(b"\r\n"):
            return []
        head, sep, data = seg[2:].partition(b"\r\n\r\n")
        if not sep:
            return []
        hdrs = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        disp = hdrs.get("content-disposition", "")
        name = re.search(r'(?:^|;)\s*name="([^"]*)"', disp)
        fname = re.search(r'(?:^|;)\s*filename="([^"]*)"', disp)
        parts.append({"name": name.group(1) if name else None,
                      "filename": fname.group(1) if fname else None,
                      "content_type": hdrs.get("content-type"), "data": data})
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", action="append", default=[], help="APPID=SECRET (repeatable)")
    ap.add_argument("--corp", action="append", default=[], help="CORPID=SECRET (repeatable)")
    args = ap.parse_args()
    fake = FakeWeChat(apps=dict(a.split("=", 1) for a in args.app),
                      corps=dict(c.split("=", 1) for c in args.corp)).start()
    print(fake.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
