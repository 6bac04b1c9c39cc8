"""Playing WeChat against kefud: signatures, WXBizMsgCrypt and signed pushes.

Python's standard library has no AES, so AES-256-CBC comes from the system's
libcrypto through ctypes (libssl3 is a dependency of libcurl, always there).
Everything else is stdlib.  Used by test_wechat*.py and tests/bench/bench_wechat.sh.

    acct = Account("mpsafe", kind="official", mode="safe", app_id="wx...", token="...",
                   aes="<43 chars>")
    st, hdrs, body = push(kefud, acct, text_message("o_user", "hello", msg_id=1))
    reply = open_reply(acct, body)          # dict of the (decrypted) passive reply
"""

import base64
import ctypes
import ctypes.util
import hashlib
import json
import os
import secrets
import struct
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "data", "wechat", "vectors.json")


def vectors():
    with open(VECTORS, encoding="utf-8") as f:
        return json.load(f)


def vector(section, vid):
    for v in vectors()[section]:
        if v["id"] == vid:
            return v
    raise KeyError(vid)


# --------------------------------------------------------------------------
# AES-256-CBC without padding, from libcrypto


def _libcrypto():
    for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so"):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                pass
    raise RuntimeError("libcrypto not found (install libssl3)")


_c = _libcrypto()
_c.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
_c.EVP_aes_256_cbc.restype = ctypes.c_void_p
_c.EVP_CipherInit_ex.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
_c.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
_c.EVP_CipherUpdate.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                ctypes.c_char_p, ctypes.c_int]
_c.EVP_CipherFinal_ex.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
_c.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]


def aes_cbc(encrypt, key, data):
    assert len(key) == 32 and len(data) % 16 == 0
    ctx = _c.EVP_CIPHER_CTX_new()
    try:
        out = ctypes.create_string_buffer(len(data) + 32)
        n1, n2 = ctypes.c_int(0), ctypes.c_int(0)
        ok = (_c.EVP_CipherInit_ex(ctx, _c.EVP_aes_256_cbc(), None, key, key[:16],
                                   1 if encrypt else 0) == 1
              and _c.EVP_CIPHER_CTX_set_padding(ctx, 0) == 1
              and _c.EVP_CipherUpdate(ctx, out, ctypes.byref(n1), data, len(data)) == 1
              and _c.EVP_CipherFinal_ex(ctx, ctypes.cast(ctypes.addressof(out) + n1.value,
                                                         ctypes.c_char_p),
                                        ctypes.byref(n2)) == 1)
        if not ok:
            raise ValueError("AES failed")
        return out.raw[:n1.value + n2.value]
    finally:
        _c.EVP_CIPHER_CTX_free(ctx)


# --------------------------------------------------------------------------
# WXBizMsgCrypt


def aes_key(encoding_aes_key):
    """32-byte key of a 43-character EncodingAESKey (non-canonical bits ignored)."""
    return base64.b64decode(encoding_aes_key + "=")[:32]


def signature(*parts):
    """hex(sha1(concatenation of the parts sorted byte-wise))."""
    bs = sorted(p.encode() if isinstance(p, str) else p for p in parts)
    return hashlib.sha1(b"".join(bs)).hexdigest()


def encrypt(encoding_aes_key, msg, receive_id, random16=None, pad_to=32):
    if isinstance(msg, str):
        msg = msg.encode()
    rnd = random16 if random16 is not None else secrets.token_bytes(16)
    full = rnd + struct.pack(">I", len(msg)) + msg + receive_id.encode()
    pad = pad_to - len(full) % pad_to
    return base64.b64encode(aes_cbc(True, aes_key(encoding_aes_key),
                                    full + bytes([pad]) * pad)).decode()


def decrypt(encoding_aes_key, b64, receive_id):
    raw = base64.b64decode(b64, validate=True)
    if not raw or len(raw) % 32:
        raise ValueError("ciphertext is not whole 32-byte blocks")
    plain = aes_cbc(False, aes_key(encoding_aes_key), raw)
    pad = plain[-1]
    if not 1 <= pad <= 32 or plain[-pad:] != bytes([pad]) * pad:
        raise ValueError("bad padding %d" % pad)
    plain = plain[:-pad]
    (n,) = struct.unpack(">I", plain[16:20])
    msg, rid = plain[20:20 + n], plain[20 + n:]
    if rid != receive_id.encode():
        raise ValueError("receive id %r" % rid)
    return msg


# --------------------------------------------------------------------------
# accounts and messages


class Account:
    def __init__(self, key, kind="official", mode="safe", app_id=None, token=None, aes=None,
                 agent_id=None):
        self.key = key
        self.kind = kind
        self.mode = "safe" if kind == "wecom" else mode
        self.app_id = app_id or ("ww" if kind == "wecom" else "wx") + secrets.token_hex(8)
        self.token = token or "tok" + secrets.token_hex(6)
        self.aes = aes or base64.b64encode(secrets.token_bytes(32)).decode()[:43].replace(
            "+", "A").replace("/", "B")
        self.agent_id = agent_id or (1000002 if kind == "wecom" else None)
        self.gh = "gh_" + secrets.token_hex(6)   # the Official Account's original id

    def api_body(self, **extra):
        b = {"account": self.key, "kind": self.kind, "app_id": self.app_id, "token": self.token,
             "encoding_aes_key": self.aes, "mode": self.mode}
        if self.agent_id:
            b["agent_id"] = self.agent_id
        b.update(extra)
        return b

    @property
    def to_user(self):
        return self.app_id if self.kind == "wecom" else self.gh


def cdata(v):
    return "<![CDATA[%s]]>" % str(v).replace("]]>", "]]]]><![CDATA[>")


def xml_doc(fields):
    """<xml> of fields (ints plain, everything else as CDATA), in the given order."""
    parts = []
    for k, v in fields.items():
        parts.append("<%s>%s</%s>" % (k, v if isinstance(v, int) else cdata(v), k))
    return "<xml>" + "\n".join(parts) + "</xml>"


def message(acct, user, msg_type, create_time=None, msg_id=None, **fields):
    d = {"ToUserName": acct.to_user, "FromUserName": user,
         "CreateTime": int(create_time or time.time()), "MsgType": msg_type}
    d.update(fields)
    if msg_id is not None:
        d["MsgId"] = int(msg_id)
    if acct.kind == "wecom":
        d["AgentID"] = acct.agent_id
    return xml_doc(d)


def text_message(acct, user, content, msg_id, create_time=None):
    return message(acct, user, "text", create_time, msg_id, Content=content)


def event_message(acct, user, event, key=None, create_time=None):
    f = {"Event": event}
    if key is not None:
        f["EventKey"] = key
    return message(acct, user, "event", create_time, None, **f)


def signed_push(acct, plain_xml, timestamp=None, nonce=None, encrypted=None, compat_plain=None,
                random16=None):
    """(query string, body bytes) exactly as WeChat sends a push for acct."""
    ts = str(int(timestamp if timestamp is not None else time.time()))
    nonce = nonce or str(secrets.randbelow(10 ** 9))
    if encrypted is None:
        encrypted = acct.kind == "wecom" or acct.mode in ("compat", "safe")
    q = {"timestamp": ts, "nonce": nonce}
    if acct.kind != "wecom":
        q["signature"] = signature(acct.token, ts, nonce)
        q["openid"] = "o_ignored"
    if not encrypted:
        return urllib.parse.urlencode(q), plain_xml.encode()
    enc = encrypt(acct.aes, plain_xml, acct.app_id, random16)
    q["msg_signature"] = signature(acct.token, ts, nonce, enc)
    if acct.kind != "wecom":
        q["encrypt_type"] = "aes"
    if acct.kind == "wecom":
        body = "<xml><ToUserName>%s</ToUserName><Encrypt>%s</Encrypt><AgentID>%s</AgentID></xml>" % (
            cdata(acct.app_id), cdata(enc), cdata(acct.agent_id))
    elif acct.mode == "compat":
        # Compatible mode: the plaintext fields AND the ciphertext (only the latter counts).
        inner = (compat_plain or plain_xml)[len("<xml>"):-len("</xml>")]
        body = "<xml>%s<Encrypt>%s</Encrypt></xml>" % (inner, cdata(enc))
    else:
        body = "<xml>\n    <ToUserName>%s</ToUserName>\n    <Encrypt>%s</Encrypt>\n</xml>\n" % (
            cdata(acct.to_user), cdata(enc))
    return urllib.parse.urlencode(q), body.encode()


def push(kefud, acct, plain_xml, **kw):
    """POST a signed push to /hooks/wechat/<key>; (status, headers, body)."""
    qs, body = signed_push(acct, plain_xml, **kw)
    return kefud.request("POST", "/hooks/wechat/%s?%s" % (acct.key, qs), body=body,
                         headers={"Content-Type": "text/xml"})


def verify_url(kefud, acct, echostr=None, bad=False):
    """WeChat's GET URL verification; (status, body, expected echo)."""
    ts = str(int(time.time()))
    nonce = str(secrets.randbelow(10 ** 9))
    want = echostr or str(secrets.randbelow(10 ** 18))
    if acct.kind == "wecom":
        enc = encrypt(acct.aes, want, acct.app_id)
        sig = signature(acct.token, ts, nonce, enc)
        q = {"msg_signature": sig if not bad else "0" * 40, "timestamp": ts, "nonce": nonce,
             "echostr": enc}
    else:
        sig = signature(acct.token, ts, nonce)
        q = {"signature": sig if not bad else "0" * 40, "timestamp": ts, "nonce": nonce,
             "echostr": want}
    st, _, body = kefud.request("GET", "/hooks/wechat/%s?%s" % (acct.key, urllib.parse.urlencode(q)))
    return st, body, want.encode()


def fields(xml_bytes):
    root = ET.fromstring(xml_bytes)
    return {child.tag: (child.text or "") for child in root}


def open_reply(acct, body):
    """The passive reply's fields: b"success" -> None; encrypted envelopes are checked and opened."""
    if body in (b"success", b""):
        return None
    f = fields(body)
    if "Encrypt" not in f:
        return f
    want = signature(acct.token, f["TimeStamp"], f["Nonce"], f["Encrypt"])
    if want != f["MsgSignature"]:
        raise AssertionError("reply MsgSignature %s, want %s" % (f["MsgSignature"], want))
    return fields(decrypt(acct.aes, f["Encrypt"], acct.app_id))
