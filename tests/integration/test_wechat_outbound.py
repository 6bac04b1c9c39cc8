"""Agent replies through WeChat's customer-service API, against the scripted fake API.

  * a stale token (42001) or a refused one (40001) is refreshed once and the send retried;
  * two kefud instances on one database share one token: with both racing to refresh
    it, WeChat's token endpoint is called exactly once per refresh;
  * 45015 (the 48-hour window is closed) dead-letters the reply at once, with an
    outbox.dead event the agent sees;
  * -1 (busy) and HTTP 500 are retried with backoff until the send goes through;
  * a hanging API times out (wechat_api_timeout) and the send is retried;
  * a wrong AppSecret never loops on the token endpoint (cool-down).
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

    def account(self, key, secret_ok=True):
        a = wx.Account(key, mode="safe")
        self.fake.apps[a.app_id] = "sec-" + key
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
        return int(self.w.db.scalar(
            "SELECT t.id FROM ticket t JOIN customer_identity i ON i.customer_id = t.customer_id "
            "WHERE i.value = '%s' ORDER BY t.id DESC LIMIT 1" % user))

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
        # WeChat answers carry text only: a reply with files is refused whole (422, nothing
        # written), the same files go into an internal note
        a = self.account("wxfiles")
        tid = self.ticket(a, "o-files-user")
        b = "kefu-b"
        body = ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"log.txt\"\r\n\r\n"
                "some log\r\n--%s--\r\n" % (b, b)).encode()
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/attachments" % tid, raw=body, who="alice",
                              headers={"Content-Type": "multipart/form-data; boundary=" + b})
        self.assertEqual(st, 201, r)
        aid = r["items"][0]["id"]
        before = self.w.counts()
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                              {"text": "see the file", "attachment_ids": [aid]}, who="alice")
        self.assertEqual(st, 422, r)
        self.assertEqual(r["errors"][0]["field"], "attachment_ids")
        self.assertIn("wechat", r["detail"])
        self.assertEqual(self.w.counts(), before)
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/notes" % tid,
                              {"text": "the file", "attachment_ids": [aid]}, who="alice")
        self.assertEqual(st, 201, r)

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
