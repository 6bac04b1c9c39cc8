"""WeChat accounts for admins: /api/v1/wechat/accounts and `kefud admin wechat-account`.

  * create, read, list, change, delete through the API; secrets are never read back;
  * validation (422 with errors[]): key, AppID, token, EncodingAESKey (43 letters and
    digits), the AES key being required outside plain mode and for WeCom, WeCom only in
    safe mode, an unknown queue, unknown fields; a duplicate key is 409;
  * only admins (agents get 403);
  * the CLI does the same with the same rules; `put` creates or updates (the quickstart);
  * the default queue routes the account's tickets; changing the AppID forgets the token;
  * an audit event per change.
"""

import json
import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402
import kefu_api  # noqa: E402
import wechat_kit as wx  # noqa: E402

AES = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


class WeChatAdmin(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = kefu_api.World(cls.addClassCleanup)
        cls.k = cls.w.k

    @classmethod
    def tearDownClass(cls):
        assert cls.k.stop() == 0, cls.k.tail()

    def cli(self, *args, stdin=None):
        return kefutest.run_kefud(["admin", "wechat-account"] + list(args),
                                  env=self.w.db.kefud_env())

    def test_api_crud(self):
        body = {"account": "shop", "kind": "official", "name": "Shop", "app_id": "wx1234567890abcdef",
                "token": "pamtest", "encoding_aes_key": AES, "mode": "safe",
                "secret_ref": "shop_secret", "api_base": "http://127.0.0.1:9/",
                "default_queue_id": self.w.q2, "welcome_message": "hi", "menu_replies": {"K": "v"}}
        st, _, a = self.w.api("POST", "/api/v1/wechat/accounts", body)
        self.assertEqual(st, 201, a)
        self.assertEqual(a["webhook_path"], "/hooks/wechat/shop")
        self.assertEqual(a["api_base"], "http://127.0.0.1:9")
        self.assertTrue(a["token_set"] and a["encoding_aes_key_set"])
        self.assertFalse(a["previous_aes_key_set"])
        self.assertEqual(a["default_queue_id"], self.w.q2)
        self.assertEqual(a["menu_replies"], {"K": "v"})
        self.assertNotIn("pamtest", json.dumps(a))
        self.assertNotIn(AES, json.dumps(a))
        self.assertEqual(self.w.db.scalar("SELECT default_queue_id FROM channel_account WHERE "
                                          "channel = 'wechat' AND account = 'shop'"), str(self.w.q2))
        st, _, again = self.w.api("POST", "/api/v1/wechat/accounts", body)
        self.assertEqual(st, 409, again)

        st, _, got = self.w.api("GET", "/api/v1/wechat/accounts/shop")
        self.assertEqual((st, got["app_id"], got["mode"]), (200, "wx1234567890abcdef", "safe"))
        st, _, lst = self.w.api("GET", "/api/v1/wechat/accounts")
        self.assertIn("shop", [x["account"] for x in lst["items"]])

        # A token row exists; a new AppID forgets it.
        self.w.db.query("INSERT INTO wechat_token (account_key, access_token, expires_at) VALUES "
                        "('shop', 'T', NOW() + INTERVAL 1 HOUR)")
        st, _, p = self.w.api("PATCH", "/api/v1/wechat/accounts/shop",
                              {"app_id": "wx0000000000000001", "mode": "plain",
                               "encoding_aes_key": None, "timestamp_window": 0,
                               "default_queue_id": None})
        self.assertEqual(st, 200, p)
        self.assertEqual((p["mode"], p["encoding_aes_key_set"], p["timestamp_window"],
                          p["default_queue_id"], p["name"]), ("plain", False, 0, None, "Shop"))
        self.assertEqual(self.w.db.scalar("SELECT COUNT(*) FROM wechat_token WHERE "
                                          "account_key = 'shop'"), "0")
        kinds = [r[0] for r in self.w.db.query(
            "SELECT kind FROM event WHERE kind LIKE 'wechat_account.%' ORDER BY id")]
        self.assertIn("wechat_account.created", kinds)
        self.assertIn("wechat_account.updated", kinds)

        st, _, _ = self.w.api("DELETE", "/api/v1/wechat/accounts/shop")
        self.assertEqual(st, 204)
        st, _, _ = self.w.api("GET", "/api/v1/wechat/accounts/shop")
        self.assertEqual(st, 404)
        st, _, _ = self.w.api("DELETE", "/api/v1/wechat/accounts/shop")
        self.assertEqual(st, 404)
        # The webhook of a deleted account is gone too.
        st, _, _ = self.k.request("GET", "/hooks/wechat/shop?timestamp=1&nonce=1&echostr=1")
        self.assertEqual(st, 404)

    def test_api_validation(self):
        base = {"account": "v1", "app_id": "wx1", "token": "abc", "encoding_aes_key": AES}
        cases = [
            ({"account": "bad key!"}, "account"),
            ({"app_id": "wx 1"}, "app_id"),
            ({"token": "ab"}, "token"),
            ({"token": "has-dash"}, "token"),
            ({"encoding_aes_key": AES[:-1]}, "encoding_aes_key"),
            ({"encoding_aes_key": AES[:-1] + "+"}, "encoding_aes_key"),
            ({"encoding_aes_key": None}, "encoding_aes_key"),       # safe mode needs it
            ({"kind": "wecom", "mode": "plain"}, "mode"),
            ({"mode": "secret"}, "mode"),
            ({"default_queue_id": 999999}, "default_queue_id"),
            ({"api_base": "ftp://x"}, "api_base"),
            ({"timestamp_window": -1}, "timestamp_window"),
            ({"menu_replies": ["x"]}, "menu_replies"),
            ({"surprise": 1}, "surprise"),
        ]
        for change, field in cases:
            body = dict(base, **change)
            st, _, b = self.w.api("POST", "/api/v1/wechat/accounts", body)
            self.assertEqual(st, 422, (change, b))
            self.assertIn(field, [e["field"] for e in b["errors"]], (change, b))
        st, _, b = self.w.api("POST", "/api/v1/wechat/accounts",
                              dict(base, mode="plain", encoding_aes_key=None))
        self.assertEqual(st, 201, b)
        st, _, b = self.w.api("PATCH", "/api/v1/wechat/accounts/v1", {"kind": "wecom"})
        self.assertEqual(st, 422, b)
        st, _, b = self.w.api("PATCH", "/api/v1/wechat/accounts/v1", {"mode": "safe"})
        self.assertEqual(st, 422, b)  # no EncodingAESKey yet
        st, _, b = self.w.api("PATCH", "/api/v1/wechat/accounts/nosuch", {"name": "x"})
        self.assertEqual(st, 404, b)

    def test_only_admins(self):
        for who in ("alice", "sam"):
            st, _, _ = self.w.api("GET", "/api/v1/wechat/accounts", who=who)
            self.assertEqual(st, 403, who)
            st, _, _ = self.w.api("POST", "/api/v1/wechat/accounts",
                                  {"account": "x", "app_id": "wx", "token": "abc",
                                   "mode": "plain"}, who=who)
            self.assertEqual(st, 403, who)

    def test_cli(self):
        cp = self.cli("add", "--account", "cli1", "--app-id", "wx55", "--token", "tok123",
                      "--aes-key", AES, "--mode", "compat", "--queue", "q1", "--welcome", "hello")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertIn("/hooks/wechat/cli1", cp.stderr)
        cp = self.cli("add", "--account", "cli1", "--app-id", "wx55", "--token", "tok123")
        self.assertEqual(cp.returncode, 1, kefutest.describe(cp))
        cp = self.cli("show", "--account", "cli1")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        shown = json.loads(cp.stdout)
        self.assertEqual((shown["mode"], shown["welcome_message"], shown["default_queue_id"]),
                         ("compat", "hello", self.w.q1))
        self.assertNotIn("tok123", cp.stdout)
        cp = self.cli("set", "--account", "cli1", "--welcome", "", "--enabled", "false")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        shown = json.loads(self.cli("show", "--account", "cli1").stdout)
        self.assertEqual((shown["welcome_message"], shown["enabled"]), (None, False))
        # Invalid input is exit 2 with the field named; a missing account exit 1.
        cp = self.cli("set", "--account", "cli1", "--aes-key", "short")
        self.assertEqual(cp.returncode, 2, kefutest.describe(cp))
        self.assertIn("encoding_aes_key", cp.stderr)
        cp = self.cli("set", "--account", "nosuch", "--name", "x")
        self.assertEqual(cp.returncode, 1, kefutest.describe(cp))
        cp = self.cli("add", "--account", "cli2", "--bogus", "1")
        self.assertEqual(cp.returncode, 2, kefutest.describe(cp))
        # put: create, then update, idempotently (what deploy/quickstart.sh runs).
        for token in ("first1", "second2"):
            cp = self.cli("put", "--account", "demo", "--kind", "official", "--app-id", "wxdemo",
                          "--token", token, "--aes-key", AES, "--mode", "safe",
                          "--timestamp-window", "0")
            self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertEqual(self.w.db.scalar("SELECT token FROM wechat_account WHERE account_key = "
                                          "'demo'"), "second2")
        cp = self.cli("list")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertEqual({"cli1", "demo"} - {a["account"] for a in json.loads(cp.stdout)}, set())
        cp = self.cli("delete", "--account", "cli1")
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        cp = self.cli("delete", "--account", "cli1")
        self.assertEqual(cp.returncode, 1, kefutest.describe(cp))
        cp = kefutest.run_kefud(["admin", "wechat-account", "help"], env=self.w.db.kefud_env())
        self.assertEqual(cp.returncode, 0)
        self.assertIn("put", cp.stdout)

    def test_default_queue_routes_tickets(self):
        a = wx.Account("routed", mode="plain")
        st, _, b = self.w.api("POST", "/api/v1/wechat/accounts",
                              a.api_body(default_queue_id=self.w.q2))
        self.assertEqual(st, 201, b)
        user = "o_routed_" + wx.secrets.token_hex(4)
        st, _, body = wx.push(self.k, a, wx.text_message(a, user, "hi", 1))
        self.assertEqual((st, body), (200, b"success"))
        self.assertEqual(self.w.db.scalar("SELECT queue_id FROM ticket WHERE channel_account = "
                                          "'routed'"), str(self.w.q2))


if __name__ == "__main__":
    kefutest.main(need_db=True)
