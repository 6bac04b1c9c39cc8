"""Agent replies through WeChat's customer-service API, against the scripted fake API.

  * a stale token (42001) or a refused one (40001) is refreshed once and the send retried;
  * two kefud instances on one database share one token: with both racing to refresh
    it, WeChat's token endpoint is called exactly once per refresh;
  * 45015 (the 48-hour window is closed) dead-letters the reply at once, with an
    outbox.dead event the agent sees;
  * -1 (busy) and HTTP 500 are retried with backoff until the send goes through;
  * a hanging API times out (wechat_api_timeout) and the send is retried;
  * a wrong AppSecret never loops on the token endpoint (cool-down);
  * files on replies: an Official Account sends images (media/upload, then msgtype image
    after the text) and refuses anything else with 422 before anything is written; WeCom
    sends images and other files (msgtype file); a failure between the parts retries only
    the parts WeChat has not accepted (wechat_sent_part), so each goes out exactly once.
Each test uses its own Official Account (own AppID, own token row) on one shared
database; two kefud instances serve it.
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

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00"
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\n"

ENV = {
    "KEFU_OUTBOX_PERIOD_MS": "100",
    "KEFU_OUTBOX_BACKOFF_BASE": "1",
    "KEFU_OUTBOX_BACKOFF_MAX": "2",
    "KEFU_WECHAT_API_TIMEOUT": "2",
    "KEFU_OUTBOX_BATCH": "1",  # one row per claim: both instances send at the same time
}


class WeChatOutbound(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeWeChat(token_delay=0.3).start()
        cls.addClassCleanup(cls.fake.stop)
        tmp = kefutest.mktemp_dir("kefu-wxo-", cls.addClassCleanup)
        cls.secrets = os.path.join(tmp, "secrets")
        fd = os.open(cls.secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        env = dict(ENV, KEFU_SECRETS_FILE=cls.secrets)
        cls.w = kefu_api.World(cls.addClassCleanup, env=env)
        cls.k1 = cls.w.k
        e2 = {"KEFU_DB_WORKERS": "2"}
        e2.update(env)
        cls.k2 = kefutest.Kefud(cls.w.db, env=e2, register=cls.addClassCleanup).start()

    @classmethod
    def tearDownClass(cls):
        cls.fake.release()
        assert cls.k1.stop() == 0, cls.k1.tail()
        assert cls.k2.stop() == 0, cls.k2.tail()

    # -- helpers

    def account(self, key, secret_ok=True, kind="official"):
        a = wx.Account(key, kind=kind, mode="safe")
        (self.fake.corps if kind == "wecom" else self.fake.apps)[a.app_id] = "sec-" + key
        with open(self.secrets, "a") as f:
            f.write("%s = %s\n" % (key, "sec-" + key if secret_ok else "wrong"))
        st, _, body = self.w.api("POST", "/api/v1/wechat/accounts", a.api_body(
            secret_ref=key, api_base=self.fake.url, default_queue_id=self.w.q1))
        self.assertEqual(st, 201, body)
        return a

    def ticket(self, a, user):
        """A customer writes in (through kefud 1); the new ticket's id."""
        st, _, body = wx.push(self.k1, a, wx.text_message(a, user, "hi", int(time.time() * 1e6)))
        self.assertEqual(st, 200, body)
        ident = "%s-%s" % (a.app_id, user) if a.kind == "wecom" else user
        return int(self.w.db.scalar(
            "SELECT t.id FROM ticket t JOIN customer_identity i ON i.customer_id = t.customer_id "
            "WHERE i.value = '%s' ORDER BY t.id DESC LIMIT 1" % ident))

    def attach(self, tid, filename, data):
        """Upload a file to the ticket (not yet on a message); its attachment id."""
        b = "kefu-b-" + wx.secrets.token_hex(8)
        body = (("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n" % (b, filename)).encode() +
                data + ("\r\n--%s--\r\n" % b).encode())
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/attachments" % tid, raw=body, who="alice",
                              headers={"Content-Type": "multipart/form-data; boundary=" + b})
        self.assertEqual(st, 201, r)
        return r["items"][0]["id"]

    def reply_files(self, tid, text, aids):
        return self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                          {"text": text, "attachment_ids": aids}, who="alice")

    def sent_parts(self, oid):
        return [(int(r[0]), r[1]) for r in self.w.db.query(
            "SELECT part, msgtype FROM wechat_sent_part WHERE outbox_id = %d ORDER BY part" % oid)]

    def sent_media(self, r):
        """(msgtype, filename, bytes, upload type) of an accepted image/file send."""
        mt = r["json"]["msgtype"]
        up = self.fake.uploads[r["json"][mt]["media_id"]]
        return mt, up["filename"], up["data"], up["type"]

    def reply(self, tid, text):
        st, _, body = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid, {"text": text},
                                 who="alice")
        self.assertEqual(st, 201, body)
        return body["outbox_id"]

    def outbox(self, oid):
        r = self.w.db.query("SELECT status, attempts, COALESCE(last_error, '') FROM outbox "
                            "WHERE id = %d" % oid)[0]
        return r[0], int(r[1]), r[2]

    def wait_status(self, oid, want, timeout=30):
        got = kefutest.wait_for(lambda: self.outbox(oid)[0] == want, timeout)
        self.assertTrue(got, "outbox %d: %r, want %s\n%s" % (oid, self.outbox(oid), want,
                                                              self.k1.tail(3000)))
        return self.outbox(oid)

    def delivered(self, a, user):
        return [r for r in self.fake.sends()
                if r["json"]["touser"] == user and self.fake.tokens[r["token"]]["app"] == a.app_id]

    # -- tests

    def test_files_are_refused_not_dropped(self):
        # An Official Account carries images only: a PDF or a text file is refused whole
        # (422 naming it, nothing written, nothing sent); the files still go into a note.
        a = self.account("wxfiles")
        user = "o-files-" + wx.secrets.token_hex(4)
        tid = self.ticket(a, user)
        png = self.attach(tid, "ok.png", PNG)
        pdf = self.attach(tid, "report.pdf", PDF)
        txt = self.attach(tid, "log.txt", b"some log\n")
        sends, uploads = len(self.fake.sends()), len(self.fake.calls("/cgi-bin/media/upload"))
        for aids, bad in (([pdf], ["report.pdf"]), ([txt], ["log.txt"]),
                          ([png, pdf, txt], ["report.pdf", "log.txt"])):
            before = self.w.counts()
            st, _, r = self.reply_files(tid, "see the file", aids)
            self.assertEqual(st, 422, r)
            self.assertEqual(r["errors"][0]["field"], "attachment_ids")
            self.assertIn("images only", r["detail"])
            for name in bad:
                self.assertIn(name, r["detail"])
            self.assertNotIn("ok.png", r["detail"])
            self.assertEqual(self.w.counts(), before)
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/notes" % tid,
                              {"text": "the files", "attachment_ids": [pdf, txt]}, who="alice")
        self.assertEqual(st, 201, r)
        self.assertEqual(len(self.fake.sends()), sends)
        self.assertEqual(len(self.fake.calls("/cgi-bin/media/upload")), uploads)

    def test_official_image_over_10mb_refused(self):
        a = self.account("wxbig")
        tid = self.ticket(a, "o-big-" + wx.secrets.token_hex(4))
        big = self.attach(tid, "huge.png", PNG + b"\0" * (10 * 1000 * 1000 + 1 - len(PNG)))
        before = self.w.counts()
        st, _, r = self.reply_files(tid, "too big", [big])
        self.assertEqual(st, 422, r)
        self.assertIn("huge.png", r["detail"])
        self.assertIn("10 MB", r["detail"])
        self.assertEqual(self.w.counts(), before)

    def test_official_image_goes_out_after_the_text(self):
        a = self.account("wximg")
        user = "o-img-" + wx.secrets.token_hex(4)
        tid = self.ticket(a, user)
        png = PNG + os.urandom(3000) + b"\r\n--kefu\r\n" + os.urandom(100)
        aid = self.attach(tid, "照片 1.png", png)
        st, _, r = self.reply_files(tid, "see the photo", [aid])
        self.assertEqual(st, 201, r)
        oid = r["outbox_id"]
        self.wait_status(oid, "sent")
        got = self.delivered(a, user)
        self.assertEqual([g["json"]["msgtype"] for g in got], ["text", "image"])
        self.assertEqual(got[0]["json"]["text"]["content"], "see the photo")
        self.assertEqual(self.sent_media(got[1]), ("image", "照片 1.png", png, "image"))
        self.assertEqual(got[1]["path"], "/cgi-bin/message/custom/send")
        ups = [u for u in self.fake.accepted_uploads() if u["media_id"] ==
               got[1]["json"]["image"]["media_id"]]
        self.assertEqual(len(ups), 1)
        self.assertEqual(ups[0]["query"]["type"], "image")
        self.assertEqual(self.fake._token_ok(ups[0]["token"]), 0)
        self.assertGreater(ups[0]["time"], got[0]["time"])  # uploaded after the text went out
        self.assertEqual(self.sent_parts(oid), [(0, "text"), (1, "image")])

    def uploads_of(self, a):
        tokens = self.fake.tokens
        return [r for r in self.fake.calls("/cgi-bin/media/upload")
                if r["token"] in tokens and tokens[r["token"]]["app"] == a.app_id]

    def test_failed_part_is_retried_alone(self):
        # Attempt 1: the text goes out, image 1 is uploaded but its send is busy (-1).
        # Attempt 2: image 1 is sent with the same media_id (not uploaded again), image 2's
        # upload fails (HTTP 500).  Attempt 3: image 2.  Each part exactly once, in order.
        a = self.account("wxpart")
        user = "o-part-" + wx.secrets.token_hex(4)
        tid = self.ticket(a, user)
        self.wait_status(self.reply(tid, "warm-up"), "sent")  # a token exists
        p1, p2 = PNG + os.urandom(500), GIF + os.urandom(700)
        aids = [self.attach(tid, "one.png", p1), self.attach(tid, "two.gif", p2)]
        self.fake.script("send", ["ok", -1])
        self.fake.script("upload", ["ok", "http500"])
        st, _, r = self.reply_files(tid, "two photos", aids)
        self.assertEqual(st, 201, r)
        oid = r["outbox_id"]
        st, attempts, _ = self.wait_status(oid, "sent")
        self.assertEqual(attempts, 3)
        got = self.delivered(a, user)[1:]
        self.assertEqual([g["json"]["msgtype"] for g in got], ["text", "image", "image"])
        self.assertEqual(got[0]["json"]["text"]["content"], "two photos")
        self.assertEqual(self.sent_media(got[1])[1:3], ("one.png", p1))
        self.assertEqual(self.sent_media(got[2])[1:3], ("two.gif", p2))
        # the busy send and the failed upload happened (the script was used up)
        self.assertEqual(self.fake.scripts["send"], [])
        self.assertEqual(self.fake.scripts["upload"], [])
        ups = self.uploads_of(a)
        self.assertEqual([(u["upload"]["filename"], u["answer"]) for u in ups],
                         [("one.png", 0), ("two.gif", 500), ("two.gif", 0)])
        self.assertEqual(got[1]["json"]["image"]["media_id"], ups[0]["media_id"])
        self.assertEqual(self.sent_parts(oid), [(0, "text"), (1, "image"), (2, "image")])

    def test_expired_media_is_uploaded_again(self):
        # WeChat no longer knows the media_id (40007): uploaded again once, same attempt.
        a = self.account("wxexpired")
        user = "o-exp-" + wx.secrets.token_hex(4)
        tid = self.ticket(a, user)
        png = PNG + os.urandom(64)
        aid = self.attach(tid, "again.png", png)
        self.fake.script("send", ["ok", 40007])
        st, _, r = self.reply_files(tid, "hello", [aid])
        self.assertEqual(st, 201, r)
        st, attempts, _ = self.wait_status(r["outbox_id"], "sent")
        self.assertEqual(attempts, 1)
        got = self.delivered(a, user)
        self.assertEqual([g["json"]["msgtype"] for g in got], ["text", "image"])
        ups = self.uploads_of(a)
        self.assertEqual(len(ups), 2)
        self.assertEqual(got[1]["json"]["image"]["media_id"], ups[1]["media_id"])
        self.assertEqual(self.sent_media(got[1])[1:3], ("again.png", png))

    def test_wecom_sends_images_and_files(self):
        a = self.account("wcfiles", kind="wecom")
        user = "wang" + wx.secrets.token_hex(3)
        tid = self.ticket(a, user)
        pdf_data, png, gif = PDF + os.urandom(200), PNG + os.urandom(300), GIF + os.urandom(50)
        aids = [self.attach(tid, "report.pdf", pdf_data), self.attach(tid, "p.png", png),
                self.attach(tid, "anim.gif", gif)]
        # a file of 5 bytes or less is refused (WeCom's minimum), naming it
        tiny = self.attach(tid, "tiny.txt", b"abcd\n")
        before = self.w.counts()
        st, _, r = self.reply_files(tid, "x", aids + [tiny])
        self.assertEqual(st, 422, r)
        self.assertIn("tiny.txt", r["detail"])
        self.assertNotIn("report.pdf", r["detail"])
        self.assertEqual(self.w.counts(), before)
        st, _, r = self.reply_files(tid, "the documents", aids)
        self.assertEqual(st, 201, r)
        oid = r["outbox_id"]
        self.wait_status(oid, "sent")
        got = [g for g in self.fake.sends() if g["json"]["touser"] == user]
        self.assertEqual([g["path"] for g in got], ["/cgi-bin/message/send"] * 4)
        self.assertEqual([g["json"]["agentid"] for g in got], [a.agent_id] * 4)
        self.assertEqual(got[0]["json"]["text"]["content"], "the documents")
        self.assertEqual([self.sent_media(g) for g in got[1:]],
                         [("file", "report.pdf", pdf_data, "file"),
                          ("image", "p.png", png, "image"),
                          ("file", "anim.gif", gif, "file")])  # WeCom images: JPEG, PNG only
        self.assertEqual(self.sent_parts(oid), [(0, "text"), (1, "file"), (2, "image"),
                                                (3, "file")])

    def test_expired_token_refreshed_once_and_retried(self):
        a = self.account("acc_exp")
        user = "o_exp_" + wx.secrets.token_hex(4)
        tid = self.ticket(a, user)
        self.wait_status(self.reply(tid, "first"), "sent")
        self.assertEqual(len(self.fake.token_calls(a.app_id)), 1)
        self.fake.expire_tokens()  # the next send gets 42001
        st, attempts, _ = self.wait_status(self.reply(tid, "second"), "sent")
        self.assertEqual(attempts, 1)  # refreshed and retried inside the same attempt
        self.assertEqual(len(self.fake.token_calls(a.app_id)), 2)
        self.assertEqual([r["json"]["text"]["content"] for r in self.delivered(a, user)],
                         ["first", "second"])

    def test_two_instances_share_one_refresh(self):
        a = self.account("acc_race")
        users = ["o_race_%d_%s" % (i, wx.secrets.token_hex(3)) for i in range(6)]
        tids = [self.ticket(a, u) for u in users]
        # Both instances start without a token and race for it (the fake takes 0.3 s).
        oids = [self.reply(t, "one") for t in tids]
        for o in oids:
            self.wait_status(o, "sent")
        self.assertEqual(len(self.fake.token_calls(a.app_id)), 1)
        # Every token retired at once (another tool fetched one): both instances get
        # 40001 and race again; one refresh.
        tok = self.w.db.scalar("SELECT access_token FROM wechat_token WHERE account_key = "
                               "'acc_race'")
        with self.fake.lock:
            self.fake.tokens[tok]["valid"] = False
        oids = [self.reply(t, "two") for t in tids]
        for o in oids:
            self.wait_status(o, "sent")
        self.assertEqual(len(self.fake.token_calls(a.app_id)), 2)
        used = {r["token"] for u in users for r in self.delivered(a, u)}
        self.assertEqual(len(used), 2)  # the old token, then the one new token
        refused = [r for r in self.fake.calls("/cgi-bin/message/custom/send")
                   if r["token"] == tok and r.get("answer") == 40001]
        self.assertGreaterEqual(len(refused), 1)

    def test_45015_dead_letters_with_an_event(self):
        a = self.account("acc_45015")
        user = "o_late_" + wx.secrets.token_hex(4)
        tid = self.ticket(a, user)
        self.fake.script("send", [45015])
        since = int(self.w.db.scalar("SELECT COALESCE(MAX(id), 0) FROM event"))
        st, attempts, err = self.wait_status(self.reply(tid, "too late"), "dead")
        self.assertEqual(attempts, 1)  # never retried
        self.assertIn("45015", err)
        self.assertIn("48 hours", err)
        # The agent (queue q1) sees it in the event feed.
        st, _, body = self.w.api("GET", "/api/v1/events?after=%d&limit=500" % since, who="alice")
        self.assertEqual(st, 200, body)
        dead = [e for e in body["items"] if e["kind"] == "outbox.dead" and e["ticket_id"] == tid]
        self.assertEqual(len(dead), 1, body)
        self.assertEqual(dead[0]["data"]["reason"], "rejected")
        self.assertIn("45015", dead[0]["data"]["last_error"])

    def test_45047_rejected(self):
        a = self.account("acc_45047")
        tid = self.ticket(a, "o_q_" + wx.secrets.token_hex(4))
        self.fake.script("send", [45047])
        st, attempts, err = self.wait_status(self.reply(tid, "x"), "dead")
        self.assertEqual(attempts, 1)
        self.assertIn("45047", err)

    def test_busy_and_5xx_are_retried(self):
        a = self.account("acc_busy")
        user = "o_busy_" + wx.secrets.token_hex(4)
        tid = self.ticket(a, user)
        self.fake.script("send", [-1, "http500"])
        st, attempts, _ = self.wait_status(self.reply(tid, "eventually"), "sent")
        self.assertEqual(attempts, 3)
        self.assertEqual([r["json"]["text"]["content"] for r in self.delivered(a, user)],
                         ["eventually"])

    def test_hang_times_out_and_is_retried(self):
        a = self.account("acc_hang")
        user = "o_hang_" + wx.secrets.token_hex(4)
        tid = self.ticket(a, user)
        self.wait_status(self.reply(tid, "warm-up"), "sent")  # a token exists
        self.fake.script("send", ["hang"])
        oid = self.reply(tid, "after a hang")
        st, attempts, _ = self.wait_status(oid, "sent", timeout=60)
        self.assertEqual(attempts, 2)
        self.assertIn("after a hang", [r["json"]["text"]["content"]
                                       for r in self.delivered(a, user)])
        hung = [r for r in self.fake.calls("/cgi-bin/message/custom/send")
                if r.get("answer") == "hang"]
        self.assertEqual(len(hung), 1)

    def test_wrong_secret_does_not_hammer_the_token_endpoint(self):
        a = self.account("acc_badsecret", secret_ok=False)
        tid = self.ticket(a, "o_bad_" + wx.secrets.token_hex(4))
        oid = self.reply(tid, "x")
        # Attempts come every ~1-2 s (backoff); the cool-down allows one fetch per 30 s.
        ok = kefutest.wait_for(lambda: self.outbox(oid)[1] >= 3, 30)
        self.assertTrue(ok, self.outbox(oid))
        self.assertIn("40001", self.outbox(oid)[2])
        self.assertEqual(len(self.fake.token_calls(a.app_id)), 1)


if __name__ == "__main__":
    kefutest.main(need_db=True)
