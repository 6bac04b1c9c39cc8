"""The WeChat webhook end to end: the real kefud, a real MariaDB and a fake WeChat API.

An Official Account in each mode (plain, compat, safe) and a WeCom app:
  * URL verification echoes exactly (decrypted for WeCom); a forged one is refused;
  * a push becomes a ticket, a retried push (new random, new ciphertext) does not
    duplicate it, two messages in the same second stay two;
  * compat mode uses only the encrypted copy;
  * the agent's reply reaches the fake API with a valid token, for the OpenID / UserID;
  * follow-ups thread onto the customer's ticket, a closed ticket gets a follow-up;
  * subscribe answers the welcome message (encrypted like the push), CLICK its menu
    reply, unsubscribe is recorded, each once however often WeChat retries;
  * an image push gets its picture fetched into an attachment after the answer;
  * bad signature, wrong AppID, bad padding, stale timestamp, plaintext to a safe
    account: 403 and nothing stored; DOCTYPE/billion laughs 400; oversize 413;
  * a published request (vector easywechat-mp-decrypt) replayed byte for byte.
"""

import os
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefu_api  # noqa: E402
import wechat_kit as wx  # noqa: E402
from fake_wechat import FakeWeChat  # noqa: E402

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")


class WeChatWebhook(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.plain = wx.Account("mpplain", mode="plain")
        cls.compat = wx.Account("mpcompat", mode="compat")
        cls.safe = wx.Account("mpsafe", mode="safe")
        cls.corp = wx.Account("corp", kind="wecom")
        accts = (cls.plain, cls.compat, cls.safe, cls.corp)
        cls.fake = FakeWeChat(apps={a.app_id: "sec-" + a.key for a in accts if a.kind == "official"},
                              corps={cls.corp.app_id: "sec-corp"}).start()
        cls.addClassCleanup(cls.fake.stop)
        tmp = kefutest.mktemp_dir("kefu-wx-", cls.addClassCleanup)
        cls.secrets = os.path.join(tmp, "secrets")
        fd = os.open(cls.secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# AppSecrets\n")
            for a in accts:
                f.write("%s = sec-%s\n" % (a.key, a.key))
        cls.w = kefu_api.World(cls.addClassCleanup, env={
            "KEFU_SECRETS_FILE": cls.secrets,
            "KEFU_OUTBOX_PERIOD_MS": "100",
            "KEFU_OUTBOX_BACKOFF_BASE": "1",
        })
        cls.k = cls.w.k
        for a in accts:
            extra = {"secret_ref": a.key, "api_base": cls.fake.url, "default_queue_id": cls.w.q1}
            if a is cls.safe:
                extra.update(welcome_message="欢迎 Welcome!", menu_replies={"HOURS": "9-18"},
                             auto_reply="Got it: {number}")
            st, _, body = cls.w.api("POST", "/api/v1/wechat/accounts", a.api_body(**extra))
            assert st == 201, (st, body)

    @classmethod
    def tearDownClass(cls):
        assert cls.k.stop() == 0, cls.k.tail()

    # -- helpers

    def q(self, sql):
        return self.w.db.query(sql)

    def count(self, sql):
        return int(self.w.db.scalar(sql))

    def user(self, prefix="o"):
        return prefix + wx.secrets.token_hex(10)

    def tickets_of(self, identity):
        return [int(r[0]) for r in self.q(
            "SELECT t.id FROM ticket t JOIN customer_identity i ON i.customer_id = t.customer_id "
            "WHERE i.kind = 'wechat_openid' AND i.value = '%s' ORDER BY t.id" % identity)]

    def messages(self, ticket_id):
        # (one line per row: newlines in the text come back as " | ")
        return [r[0] for r in self.q("SELECT REPLACE(body_text, CHAR(10), ' | ') FROM message "
                                     "WHERE ticket_id = %d AND direction = 'in' ORDER BY id"
                                     % ticket_id)]

    def totals(self):
        return (self.count("SELECT COUNT(*) FROM ticket"), self.count("SELECT COUNT(*) FROM message"),
                self.count("SELECT COUNT(*) FROM wechat_event"),
                self.count("SELECT COUNT(*) FROM customer"))

    def ok_push(self, acct, xml, **kw):
        st, hdrs, body = wx.push(self.k, acct, xml, **kw)
        self.assertEqual(st, 200, body[:300])
        return body

    # -- URL verification

    def test_verify_url(self):
        for a in (self.plain, self.safe, self.corp):
            st, body, want = wx.verify_url(self.k, a)
            self.assertEqual((st, body), (200, want), a.key)
            st, body, want = wx.verify_url(self.k, a, bad=True)
            self.assertEqual(st, 403, a.key)
            self.assertNotIn(want, body)
        # WeCom's echostr arrives percent-encoded (%2B, %2F, %3D): '+' must stay '+'.
        for _ in range(5):
            st, body, want = wx.verify_url(self.k, self.corp)
            self.assertEqual((st, body), (200, want))

    # -- pushes become tickets, once

    def test_push_each_mode_becomes_one_ticket(self):
        for a in (self.plain, self.compat, self.safe, self.corp):
            user = self.user("zhangsan" if a.kind == "wecom" else "o")
            msg_id = 6054768590064713728 + int(time.time() * 1000) % 100000  # > 2^53
            xml = wx.text_message(a, user, "你好 from %s" % a.key, msg_id)
            before = self.totals()
            body = self.ok_push(a, xml)
            if a is not self.safe:
                self.assertEqual(body, b"success")
            # WeChat retries (safe/compat/WeCom: new random, so a new ciphertext).
            self.ok_push(a, xml)
            self.ok_push(a, xml, nonce="123")
            after = self.totals()
            self.assertEqual((after[0] - before[0], after[1] - before[1]), (1, 1), a.key)
            ident = user if a.kind == "official" else "%s-%s" % (a.app_id, user)
            tids = self.tickets_of(ident)
            self.assertEqual(len(tids), 1, a.key)
            self.assertEqual(self.messages(tids[0]), ["你好 from %s" % a.key])
            row = self.q("SELECT channel, channel_account, queue_id FROM ticket WHERE id = %d"
                         % tids[0])[0]
            self.assertEqual(row, ("wechat", a.key, str(self.w.q1)))
            ext = self.w.db.scalar("SELECT external_id FROM message WHERE ticket_id = %d" % tids[0])
            self.assertEqual(ext, str(msg_id))  # 64-bit MsgId kept exactly

    def test_same_second_distinct_messages_both_kept(self):
        user, now = self.user(), int(time.time())
        self.ok_push(self.plain, wx.text_message(self.plain, user, "one", 9001, create_time=now))
        self.ok_push(self.plain, wx.text_message(self.plain, user, "two", 9002, create_time=now))
        tids = self.tickets_of(user)
        self.assertEqual(len(tids), 1)
        self.assertEqual(self.messages(tids[0]), ["one", "two"])

    def test_compat_uses_only_the_encrypted_copy(self):
        user = self.user()
        real = wx.text_message(self.compat, user, "the real text", 7001)
        forged = wx.text_message(self.compat, "o_attacker", "FORGED", 7001)
        self.ok_push(self.compat, real, compat_plain=forged)
        self.assertEqual(self.messages(self.tickets_of(user)[0]), ["the real text"])
        self.assertEqual(self.tickets_of("o_attacker"), [])

    def test_message_types(self):
        user = self.user()
        a = self.plain
        self.ok_push(a, wx.message(a, user, "voice", None, 8101, MediaId="m_v", Format="amr",
                                   Recognition="语音识别"))
        self.ok_push(a, wx.message(a, user, "location", None, 8102, Location_X="23.13",
                                   Location_Y="113.26", Scale=20, Label="Guangzhou"))
        self.ok_push(a, wx.message(a, user, "link", None, 8103, Title="T", Description="D",
                                   Url="http://x.example/"))
        self.ok_push(a, wx.message(a, user, "miniprogrampage", None, 8104))
        texts = self.messages(self.tickets_of(user)[0])
        self.assertEqual(texts[0], "[voice] 语音识别")
        self.assertIn("Guangzhou", texts[1])
        self.assertEqual(texts[2], "[link] T | D | http://x.example/")
        self.assertEqual(texts[3], "[miniprogrampage message]")

    # -- threading

    def test_threading_and_follow_up(self):
        user = self.user()
        self.ok_push(self.safe, wx.text_message(self.safe, user, "first", 5001))
        self.ok_push(self.safe, wx.text_message(self.safe, user, "second", 5002))
        tids = self.tickets_of(user)
        self.assertEqual(len(tids), 1)
        self.assertEqual(self.messages(tids[0]), ["first", "second"])
        self.q("UPDATE ticket SET status = 'closed', closed_at = NOW(6) WHERE id = %d" % tids[0])
        self.ok_push(self.safe, wx.text_message(self.safe, user, "third", 5003))
        tids2 = self.tickets_of(user)
        self.assertEqual(len(tids2), 2)
        self.assertEqual(self.messages(tids2[1]), ["third"])
        self.assertEqual(self.w.db.scalar("SELECT follow_up_of_id FROM ticket WHERE id = %d"
                                          % tids2[1]), str(tids[0]))

    # -- passive replies and events

    def test_auto_reply_is_encrypted_and_repeated_on_retry(self):
        user = self.user()
        xml = wx.text_message(self.safe, user, "hello", 4001)
        r1 = wx.open_reply(self.safe, self.ok_push(self.safe, xml))
        r2 = wx.open_reply(self.safe, self.ok_push(self.safe, xml))
        tid = self.tickets_of(user)[0]
        want = "Got it: KF-%06d" % tid
        for r in (r1, r2):
            self.assertEqual(r["Content"], want)
            self.assertEqual((r["ToUserName"], r["FromUserName"], r["MsgType"]),
                             (user, self.safe.gh, "text"))

    def test_events(self):
        user, a = self.user(), self.safe
        now = int(time.time())
        sub = wx.event_message(a, user, "subscribe", create_time=now)
        before = self.totals()
        for _ in range(3):  # WeChat's retries
            r = wx.open_reply(a, self.ok_push(a, sub))
            self.assertEqual(r["Content"], "欢迎 Welcome!")
        click = wx.event_message(a, user, "CLICK", key="HOURS", create_time=now)
        self.assertEqual(wx.open_reply(a, self.ok_push(a, click))["Content"], "9-18")
        view = wx.event_message(a, user, "VIEW", key="http://x.example/", create_time=now)
        self.assertIsNone(wx.open_reply(a, self.ok_push(a, view)))
        loc = wx.message(a, user, "event", now, None, Event="LOCATION", Latitude="1", Longitude="2")
        self.assertIsNone(wx.open_reply(a, self.ok_push(a, loc)))
        unsub = wx.event_message(a, user, "unsubscribe", create_time=now + 1)
        self.assertIsNone(wx.open_reply(a, self.ok_push(a, unsub)))
        self.ok_push(a, unsub)
        after = self.totals()
        # No tickets; three kept events (subscribe, CLICK, VIEW) + unsubscribe; one customer.
        self.assertEqual(after[0] - before[0], 0)
        self.assertEqual(after[2] - before[2], 4)
        self.assertEqual(after[3] - before[3], 1)
        self.assertEqual(self.w.db.scalar("SELECT subscribed FROM wechat_user WHERE user_id = '%s'"
                                          % user), "0")
        kinds = [r[0] for r in self.q(
            "SELECT e.kind FROM event e JOIN customer_identity i ON i.customer_id = e.actor_id "
            "WHERE i.value = '%s' AND e.kind LIKE 'wechat.%%' ORDER BY e.id" % user)]
        self.assertEqual(kinds, ["wechat.subscribed", "wechat.event", "wechat.event",
                                 "wechat.unsubscribed"])

    # -- outbound

    def test_agent_reply_reaches_the_customer(self):
        for a in (self.safe, self.corp):
            user = self.user("lisi" if a.kind == "wecom" else "o")
            self.ok_push(a, wx.text_message(a, user, "help please", 3001))
            ident = user if a.kind == "official" else "%s-%s" % (a.app_id, user)
            tid = self.tickets_of(ident)[0]
            st, _, body = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                                     {"text": "我们来帮你 — here to help"}, who="alice")
            self.assertEqual(st, 201, body)
            got = kefutest.wait_for(
                lambda: [r for r in self.fake.sends() if r["json"]["touser"] == user], 20)
            self.assertEqual(len(got), 1, self.fake.requests[-5:])
            j = got[0]["json"]
            self.assertEqual(j["text"]["content"], "我们来帮你 — here to help")
            self.assertEqual(got[0]["path"], "/cgi-bin/message/send" if a.kind == "wecom"
                             else "/cgi-bin/message/custom/send")
            if a.kind == "wecom":
                self.assertEqual(j["agentid"], a.agent_id)
            # Raw UTF-8 on the wire, never \\u escapes (WeChat's 40033).
            self.assertIn("我们来帮你".encode(), got[0]["body"])
            self.assertEqual(self.fake._token_ok(got[0]["token"]), 0)
            st = kefutest.wait_for(lambda: self.w.db.scalar(
                "SELECT status FROM outbox WHERE ticket_id = %d AND kind = 'reply'" % tid) == "sent",
                10)
            self.assertTrue(st)

    def test_linked_to_an_email_customer(self):
        """The agent links the follower to their e-mail customer (core merge API); replies on
        the WeChat ticket still reach the OpenID, and the follower's next message threads on."""
        user = self.user()
        self.ok_push(self.safe, wx.text_message(self.safe, user, "wechat side", 3101))
        tid = self.tickets_of(user)[0]
        wx_customer = int(self.w.db.scalar("SELECT customer_id FROM ticket WHERE id = %d" % tid))
        st, _, t = self.w.api("POST", "/api/v1/tickets", {
            "subject": "mail side", "text": "hello by mail", "queue_id": self.w.q1,
            "customer": {"email": "%s@mail.example" % user, "name": "Wang"}}, who="alice")
        self.assertEqual(st, 201, t)
        mail_customer = t["customer"]["id"]
        st, _, m = self.w.api("POST", "/api/v1/customers/%d/merge" % mail_customer,
                              {"from_id": wx_customer}, who="sam")
        self.assertEqual(st, 200, m)
        self.assertEqual(self.w.db.scalar("SELECT customer_id FROM ticket WHERE id = %d" % tid),
                         str(mail_customer))
        st, _, body = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                                 {"text": "after the merge"}, who="alice")
        self.assertEqual(st, 201, body)
        got = kefutest.wait_for(
            lambda: [r for r in self.fake.sends() if r["json"]["touser"] == user], 20)
        self.assertEqual([r["json"]["text"]["content"] for r in got], ["after the merge"])
        self.ok_push(self.safe, wx.text_message(self.safe, user, "wechat again", 3102))
        self.assertEqual(self.messages(tid), ["wechat side", "wechat again"])

    def test_image_is_fetched_into_an_attachment(self):
        user = self.user()
        self.fake.media["MEDIA_IMG_1"] = ("image/png", PNG)
        body = self.ok_push(self.plain, wx.message(self.plain, user, "image", None, 2001,
                                                   PicUrl="http://mmbiz.example/x",
                                                   MediaId="MEDIA_IMG_1"))
        self.assertEqual(body, b"success")  # answered before the fetch
        tid = self.tickets_of(user)[0]
        ok = kefutest.wait_for(lambda: self.count(
            "SELECT COUNT(*) FROM attachment WHERE ticket_id = %d" % tid) == 1, 20)
        self.assertTrue(ok, self.k.tail())
        row = self.q("SELECT a.content_type, a.size, a.message_id = m.id FROM attachment a "
                     "JOIN message m ON m.ticket_id = a.ticket_id WHERE a.ticket_id = %d" % tid)[0]
        self.assertEqual(row, ("image/png", str(len(PNG)), "1"))
        self.assertEqual(self.w.db.scalar("SELECT status FROM wechat_media WHERE media_id = "
                                          "'MEDIA_IMG_1'"), "done")
        # A medium WeChat does not know (40007) is given up at once, the message stays.
        self.ok_push(self.plain, wx.message(self.plain, user, "voice", None, 2002,
                                            MediaId="MEDIA_GONE", Format="amr"))
        ok = kefutest.wait_for(lambda: self.w.db.scalar(
            "SELECT status FROM wechat_media WHERE media_id = 'MEDIA_GONE'") == "failed", 20)
        self.assertTrue(ok, self.k.tail())
        self.assertIn("40007", self.w.db.scalar("SELECT last_error FROM wechat_media WHERE "
                                                "media_id = 'MEDIA_GONE'"))
        self.assertEqual(self.messages(tid)[-1], "[voice message]")

    # -- refusals: nothing stored

    def assert_refused(self, status, acct, xml=None, raw=None, query=None, **kw):
        before = self.totals()
        if raw is not None:
            st, _, body = self.k.request("POST", "/hooks/wechat/%s?%s" % (acct.key, query),
                                         body=raw, headers={"Content-Type": "text/xml"})
        else:
            st, _, body = wx.push(self.k, acct, xml, **kw)
        self.assertEqual(st, status, body[:300])
        self.assertNotEqual(body, b"success")
        self.assertEqual(self.totals(), before)

    def test_refusals(self):
        user = self.user()
        xml = wx.text_message(self.safe, user, "x", 1)
        # Bad signature (plain), tampered msg_signature, wrong AppID, bad padding.
        qs, body = wx.signed_push(self.plain, wx.text_message(self.plain, user, "x", 1))
        self.assert_refused(403, self.plain, raw=body, query=qs.replace("signature=", "signature=0"))
        qs, body = wx.signed_push(self.safe, xml)
        self.assert_refused(403, self.safe, raw=body,
                            query=qs.replace("msg_signature=", "msg_signature=f"))
        other = wx.Account("mpsafe", mode="safe", token=self.safe.token, aes=self.safe.aes,
                           app_id="wx0000000000000000")
        self.assert_refused(403, other, wx.text_message(other, user, "x", 1))
        # 16-byte PKCS#7 instead of 32 (an implementation bug WeChat never makes): refused.
        enc16 = wx.encrypt(self.safe.aes, "x" * 3, self.safe.app_id, pad_to=16)
        if len(wx.base64.b64decode(enc16)) % 32:
            ts, nonce = str(int(time.time())), "77"
            q = "timestamp=%s&nonce=%s&encrypt_type=aes&msg_signature=%s" % (
                ts, nonce, wx.signature(self.safe.token, ts, nonce, enc16))
            self.assert_refused(403, self.safe, raw=("<xml><Encrypt>%s</Encrypt></xml>" % enc16)
                                .encode(), query=q)
        wrong_key = wx.Account("mpsafe", token=self.safe.token, app_id=self.safe.app_id)
        self.assert_refused(403, wrong_key, wx.text_message(wrong_key, user, "x", 1))
        # A stale timestamp (the default window is 300 s), a plaintext push to safe mode.
        self.assert_refused(403, self.safe, xml, timestamp=time.time() - 3600)
        self.assert_refused(403, self.safe, xml, encrypted=False)
        # XML attacks: 400, quickly.
        for doc in ('<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><Content>&x;'
                    '</Content></xml>',
                    '<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">' + "".join(
                        '<!ENTITY a%d "%s">' % (i, ("&a%d;" % (i - 1) if i else "&a;") * 10)
                        for i in range(9)) + ']><xml><Content>&a8;</Content></xml>'):
            t0 = time.monotonic()
            self.assert_refused(400, self.plain, doc)
            self.assertLess(time.monotonic() - t0, 5)
        # Oversize: 413 (wechat_max_body defaults to 64 KiB).
        big = wx.text_message(self.plain, user, "x" * 70000, 2)
        self.assert_refused(413, self.plain, big)
        # Unknown account.
        st, _, _ = self.k.request("POST", "/hooks/wechat/nosuch?timestamp=1&nonce=1", body=b"<xml/>")
        self.assertEqual(st, 404)

    # -- a published request, byte for byte

    def test_replay_published_vector(self):
        v = wx.vector("aes", "easywechat-mp-decrypt")
        st, _, body = self.w.api("POST", "/api/v1/wechat/accounts", {
            "account": "vec", "kind": "official", "app_id": v["receive_id"], "token": v["token"],
            "encoding_aes_key": v["encoding_aes_key"], "mode": "safe", "timestamp_window": 0})
        self.assertEqual(st, 201, body)
        req = v["http_request"]
        qs = wx.urllib.parse.urlencode(req["query"])
        st, _, body = self.k.request("POST", "/hooks/wechat/vec?" + qs, body=req["body"].encode(),
                                     headers={"Content-Type": "text/xml"})
        self.assertEqual((st, body), (200, b"success"))
        tids = self.tickets_of("asdasdasdsadasd")
        self.assertEqual(len(tids), 1)
        self.assertEqual(self.messages(tids[0]), ["hello"])
        # The same request again (WeChat's retry): nothing new.
        st, _, body = self.k.request("POST", "/hooks/wechat/vec?" + qs, body=req["body"].encode())
        self.assertEqual(st, 200)
        self.assertEqual(len(self.messages(tids[0])), 1)
        # The official docs' own examples: a JSON plaintext push and a safe-mode event push
        # (both debug_demo events: acknowledged, nothing kept).
        for vid, section, mode in (("official-doc-plain-post", "plain_signature", "plain"),
                                   ("official-oplatform-push", "aes", "safe")):
            v2 = wx.vector(section, vid)
            key = "doc" + mode
            st, _, body = self.w.api("POST", "/api/v1/wechat/accounts", {
                "account": key, "kind": "official", "token": v2["token"], "mode": mode,
                "app_id": v2.get("receive_id", "wx134c8103faa5a59e"), "timestamp_window": 0,
                "encoding_aes_key": v2.get("encoding_aes_key")})
            self.assertEqual(st, 201, body)
            if mode == "plain":
                q2 = {"signature": v2["signature"], "timestamp": v2["timestamp"],
                      "nonce": v2["nonce"], "openid": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY"}
                raw = v2["body_in_source"]
            else:
                q2, raw = v2["http_request"]["query"], v2["http_request"]["body"]
            before = self.totals()
            st, _, body = self.k.request("POST", "/hooks/wechat/%s?%s" % (
                key, wx.urllib.parse.urlencode(q2)), body=raw.encode())
            self.assertEqual((st, body), (200, b"success"), vid)
            self.assertEqual(self.totals(), before)
        # With the default window the 2016 timestamp is refused.
        self.w.api("PATCH", "/api/v1/wechat/accounts/vec", {"timestamp_window": None})
        st, _, _ = self.k.request("POST", "/hooks/wechat/vec?" + qs, body=req["body"].encode())
        self.assertEqual(st, 403)


if __name__ == "__main__":
    kefutest.main(need_db=True)
