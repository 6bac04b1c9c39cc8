"""The email channel end to end, against real peers started here on 127.0.0.1:

- raw MIME over HTTP (POST /api/v1/inbound/email/{mailbox}): the corpus of
  tests/data/email becomes tickets with the right subjects and senders;
  duplicates change nothing; unparseable mail is quarantined with an event;
- outbound through the "email" adapter to a real SMTP server (aiosmtpd, smtppeer.py):
  headers, RFC 2047 subject, [KF-...] token, Message-ID/In-Reply-To/References,
  Auto-Submitted on acknowledgements, 451 then 250 (retried, sent once), 550
  (dead, the server's words on the row);
- threading of replies by In-Reply-To and by subject token (only from the
  ticket's customer); auto-replies never acknowledged; a DSN bounce marks the
  outbound row dead instead of opening a ticket;
- the LMTP listener over a raw socket: LHLO capabilities, pipelining, unknown
  recipient 550, per-recipient replies after commit, SIZE 552, oversize DATA
  552, sequence errors, the session cap; and kefud still exits 0.
"""

import email
import email.policy
import os
import re
import subprocess
import shutil
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefu_api  # noqa: E402
import kefutest as kt  # noqa: E402
import smtppeer  # noqa: E402
from lmtp_kit import Lmtp  # noqa: E402

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "email")
MAX_SIZE = 200000


def eml(name):
    with open(os.path.join(CORPUS, name), "rb") as f:
        return f.read()


def mail(frm, subject, body="Hello", msgid=None, extra=""):
    h = "From: %s\r\nTo: support@kefu.test\r\nSubject: %s\r\n" % (frm, subject)
    if msgid:
        h += "Message-ID: <%s>\r\n" % msgid
    return (h + extra + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


class EmailTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.smtp = smtppeer.SmtpPeer().start()
        cls.addClassCleanup(cls.smtp.stop)
        env = {
            "KEFU_LMTP_LISTEN": "127.0.0.1:0",
            "KEFU_LMTP_MAX_SIZE": str(MAX_SIZE),
            "KEFU_LMTP_MAX_SESSIONS": "4",
            "KEFU_SMTP_HOST": "127.0.0.1",
            "KEFU_SMTP_PORT": str(cls.smtp.port),
            "KEFU_SMTP_TIMEOUT": "10",
            "KEFU_OUTBOX_PERIOD_MS": "100",
            "KEFU_OUTBOX_BACKOFF_BASE": "1",
            "KEFU_OUTBOX_BACKOFF_MAX": "2",
            "KEFU_SHUTDOWN_TIMEOUT": "10",
            "KEFU_REPLY_ATTACHMENTS_MAX_BYTES": "300000",
        }
        cls.w = kefu_api.World(cls.addClassCleanup, env=env)
        q = cls.w.db.query
        q("INSERT INTO email_mailbox (name, address, display_name, send_ack) VALUES "
          "('support', 'support@kefu.test', '客服 Support', 1), ('sales', 'sales@kefu.test', '', 0)")
        q("INSERT INTO channel_account (channel, account, default_queue_id) VALUES "
          "('email', 'support', %d), ('email', 'sales', %d)" % (cls.w.q1, cls.w.q2))
        m = re.search(r"event=lmtp-listening addr=127\.0\.0\.1:(\d+)", cls.w.k.log())
        if not m:
            raise AssertionError("no lmtp-listening line\n" + cls.w.k.tail())
        cls.lmtp_port = int(m.group(1))

    @classmethod
    def tearDownClass(cls):
        assert cls.w.stop() == 0, cls.w.k.tail()

    # -- helpers

    def post(self, raw, mailbox="support", who="admin"):
        return self.w.api("POST", "/api/v1/inbound/email/" + mailbox, raw=raw, who=who,
                          headers={"Content-Type": "message/rfc822"})

    def ticket(self, tid):
        r = self.w.db.query("SELECT subject, customer_id, channel, channel_account, queue_id "
                            "FROM ticket WHERE id = %d" % tid)[0]
        return r

    def wait_smtp(self, pred, timeout=30):
        got = kt.wait_for(lambda: [m for m in self.smtp.messages if pred(m)], timeout, 0.05)
        if not got:
            raise AssertionError("no matching mail reached the SMTP peer; it has %d; log:\n%s"
                                 % (len(self.smtp.messages), self.w.k.tail()))
        return got

    def outbox_row(self, oid):
        return self.w.db.query("SELECT status, attempts, COALESCE(last_error,''), "
                               "COALESCE(peer_reply,'') FROM outbox WHERE id = %d" % oid)[0]

    def reply(self, tid, text):
        queue = int(self.w.db.scalar("SELECT queue_id FROM ticket WHERE id = %d" % tid))
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid, {"text": text},
                              who="alice" if queue == self.w.q1 else "carol")
        self.assertEqual(st, 201, r)
        oid = int(self.w.db.scalar("SELECT id FROM outbox WHERE dedupe_key = 'reply:%d'"
                                   % r["message_id"]))
        return oid

    # -- inbound over HTTP

    def test_corpus_over_http(self):
        want = {
            "gbk_subject.eml": ("咨询：朱镕基的订单", "zhang.san@example.cn", "张三"),
            "big5.eml": ("繁體中文測試", "chan@example.hk", "陳大文"),
            "iso2022jp.eml": ("日本語のテスト", "tanaka@example.jp", None),
            "mixed_words.eml": ("订单问题 about café and naïve", "wang@example.org", "Wang, Wu"),
            "rfc2231.eml": ("quote attached", "buyer@example.com", None),
            "html_xss.eml": ("look", "attacker@example.com", None),
            "inline_image.eml": ("screenshot", "pic@example.com", None),
        }
        for name, (subject, sender, cname) in want.items():
            with self.subTest(name=name):
                st, _, r = self.post(eml(name))
                self.assertEqual(st, 202, r)
                self.assertFalse(r["duplicate"])
                tid = r["ticket_id"]
                t = self.ticket(tid)
                self.assertEqual(t[0], subject)
                self.assertEqual((t[2], t[3], int(t[4])), ("email", "support", self.w.q1))
                ident = self.w.db.scalar("SELECT value FROM customer_identity WHERE customer_id = %s "
                                         "AND kind = 'email'" % t[1])
                self.assertEqual(ident, sender)
                if cname:
                    self.assertEqual(self.w.db.scalar("SELECT name FROM customer WHERE id = %s"
                                                      % t[1]), cname)
                # the same message again: nothing changes
                before = self.w.counts()
                st, _, r2 = self.post(eml(name))
                self.assertEqual(st, 200, r2)
                self.assertTrue(r2["duplicate"])
                self.assertEqual(r2["ticket_id"], tid)
                self.assertEqual(self.w.counts(), before)
        # attachments kept, RFC 2231 names decoded
        names = [r[0] for r in self.w.db.query(
            "SELECT a.filename FROM attachment a JOIN message m ON m.id = a.message_id "
            "WHERE m.external_id = 'rfc2231-1@example.com' ORDER BY a.id")]
        self.assertEqual(names, ["报价单.pdf", "很长的名字.txt"])
        # sanitized HTML stored; cid: rewritten to the attachment URL
        html = self.w.db.scalar("SELECT REPLACE(body_html, CHAR(10), ' ') FROM message "
                                "WHERE external_id = 'xss-1@example.com'")
        for bad in ("script", "onerror", "javascript", "iframe", "evil.example"):
            self.assertNotIn(bad, html.lower())
        html = self.w.db.scalar("SELECT REPLACE(body_html, CHAR(10), ' ') FROM message "
                                "WHERE external_id = 'inline-1@example.com'")
        aid = self.w.db.scalar("SELECT a.id FROM attachment a JOIN message m ON m.id = a.message_id "
                               "WHERE m.external_id = 'inline-1@example.com'")
        self.assertIn('src="/api/v1/attachments/%s"' % aid, html)

    def test_http_refusals_and_quarantine(self):
        st, _, r = self.post(eml("big5.eml"), mailbox="nope")
        self.assertEqual(st, 404, r)
        st, _, _ = self.w.k.request("POST", "/api/v1/inbound/email/support", body=eml("big5.eml"))
        self.assertEqual(st, 401)
        st, _, r = self.post(b"")
        self.assertEqual(st, 400, r)
        q0 = self.w.count("email_quarantine")
        t0 = self.w.count("ticket")
        st, _, r = self.post(eml("no_from.eml"))
        self.assertEqual(st, 202, r)
        self.assertTrue(r["quarantined"])
        st, _, r = self.post(eml("deep_nesting.eml"))
        self.assertTrue(r["quarantined"])
        self.assertEqual(self.w.count("email_quarantine"), q0 + 2)
        self.assertEqual(self.w.count("ticket"), t0)
        self.assertGreaterEqual(self.w.count("event", "kind = 'email.quarantined'"), 2)
        raw = self.w.db.scalar("SELECT error FROM email_quarantine ORDER BY id DESC LIMIT 1")
        self.assertIn("nested", raw)

    # -- outbound, threading, loops, bounces

    def test_ack_and_auto_reply(self):
        st, _, r = self.post(mail("newcust@example.com", "Need help", msgid="ack-1@example.com"))
        self.assertEqual(st, 202, r)
        tid = r["ticket_id"]
        got = self.wait_smtp(lambda m: "newcust@example.com" in m[1])
        msg = email.message_from_bytes(got[0][2], policy=email.policy.default)
        self.assertEqual(msg["Auto-Submitted"], "auto-replied")
        self.assertIn("[KF-%06d]" % tid, str(msg["Subject"]))
        self.assertEqual(msg["In-Reply-To"], "<ack-1@example.com>")
        self.assertEqual(got[0][0], "support@kefu.test")
        # an auto-reply opens (or joins) a ticket but is never answered
        st, _, r = self.post(eml("auto_reply.eml"))
        self.assertEqual(st, 202, r)
        self.assertEqual(self.w.count("outbox", "ticket_id = %d AND kind = 'ack'" % r["ticket_id"]), 0)
        st, _, r = self.post(eml("bulk.eml"))
        self.assertEqual(self.w.count("outbox", "ticket_id = %d AND kind = 'ack'" % r["ticket_id"]), 0)

    def test_other_modules_mail(self):
        """The web form's sign-in mail: its template rendered, sent from the first mailbox."""
        self.w.db.query(
            "INSERT INTO outbox (kind, channel, channel_account, target, payload, dedupe_key) "
            "VALUES ('signin', 'email', 'no-such-box', 'portal@example.com', JSON_OBJECT("
            "'template', 'portal-signin', 'locale', 'en', 'signin_url', "
            "'https://kefu.test/support/signin/abc', 'expires_in_minutes', 15), 'it-signin-1')")
        got = self.wait_smtp(lambda m: "portal@example.com" in m[1])
        msg = email.message_from_bytes(got[0][2], policy=email.policy.default)
        self.assertEqual(str(msg["Subject"]), "Your sign-in link")
        self.assertEqual(msg["Auto-Submitted"], "auto-generated")
        self.assertIn("support@kefu.test", str(msg["From"]))
        self.assertIn("https://kefu.test/support/signin/abc",
                      msg.get_body(preferencelist=("plain",)).get_content())

    def test_reply_threading_and_bounce(self):
        st, _, r = self.post(mail("cust1@example.com", "Printer broken", msgid="t1@cust.example"),
                             mailbox="sales")
        self.assertEqual(st, 202, r)
        tid = r["ticket_id"]
        oid = self.reply(tid, "Please restart it.\n请重启。")
        got = self.wait_smtp(lambda m: "cust1@example.com" in m[1] and b"KF-%06d" % tid in m[2])
        msg = email.message_from_bytes(got[0][2], policy=email.policy.default)
        mid = "<kf.%d.out@kefu.test>" % oid
        self.assertEqual(msg["Message-ID"], mid)
        self.assertEqual(msg["From"].addresses[0].addr_spec, "sales@kefu.test")
        self.assertEqual(msg["Reply-To"].addresses[0].addr_spec, "sales@kefu.test")
        self.assertEqual(msg["In-Reply-To"], "<t1@cust.example>")
        self.assertIn("<t1@cust.example>", msg["References"])
        self.assertEqual(str(msg["Subject"]), "Re: [KF-%06d] Printer broken" % tid)
        self.assertIsNone(msg["Auto-Submitted"])
        # multipart/alternative: the text as sent, and an HTML part with it escaped.
        self.assertEqual(msg.get_content_type(), "multipart/alternative")
        self.assertEqual(msg.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n"),
                         "Please restart it.\n请重启。")
        html = msg.get_body(preferencelist=("html",)).get_content()
        self.assertIn("Please restart it.<br>", html)
        self.assertIn("请重启。", html)
        self.assertEqual(self.outbox_row(oid)[0], "sent")

        # the customer answers our mail: same ticket, whatever the subject
        st, _, r = self.post(mail("cust1@example.com", "other words", msgid="t2@cust.example",
                                  body="Fixed now.\r\n\r\nOn Mon, 4 Mar 2024, Kefu wrote:\r\n> old",
                                  extra="In-Reply-To: %s\r\nReferences: <t1@cust.example> %s\r\n"
                                  % (mid, mid)), mailbox="sales")
        self.assertEqual(r["ticket_id"], tid)
        self.assertEqual(self.w.db.scalar("SELECT quote_offset FROM email_message_id "
                                          "WHERE message_id_hdr = 't2@cust.example'"), "12")
        # the API shows the new text folded apart from the history; text keeps the whole
        st, _, t = self.w.api("GET", "/api/v1/tickets/%d" % tid, who="carol")
        m = [x for x in t["messages"] if x["external_id"] == "t2@cust.example"][0]
        self.assertEqual(m["text_new"], "Fixed now.\n\n")
        self.assertTrue(m["text"].startswith("Fixed now.\n\nOn Mon, 4 Mar 2024, Kefu wrote:"), m)
        first = [x for x in t["messages"] if x["external_id"] == "t1@cust.example"][0]
        self.assertIsNone(first["text_new"])
        # a subject token alone joins only for the ticket's own customer
        st, _, r = self.post(mail("cust1@example.com", "Re: [KF-%06d] again" % tid,
                                  msgid="t3@cust.example"), mailbox="sales")
        self.assertEqual(r["ticket_id"], tid)
        st, _, r = self.post(mail("stranger@example.com", "Re: [KF-%06d] hijack" % tid,
                                  msgid="t4@evil.example"), mailbox="sales")
        self.assertNotEqual(r["ticket_id"], tid)
        # ...or from a known CC: an address copied on the ticket's incoming mail
        st, _, r = self.post(mail("cust1@example.com", "Re: [KF-%06d] looping in a colleague" % tid,
                                  msgid="t5@cust.example", extra="Cc: Colleague <Colleague@Cust.Example>\r\n"),
                             mailbox="sales")
        self.assertEqual(r["ticket_id"], tid)
        st, _, r = self.post(mail("colleague@cust.example", "Re: [KF-%06d] from the colleague" % tid,
                                  msgid="t6@cust.example"), mailbox="sales")
        self.assertEqual(r["ticket_id"], tid)
        st, _, r = self.post(mail("stranger@example.com", "Re: [KF-%06d] still not you" % tid,
                                  msgid="t7@evil.example"), mailbox="sales")
        self.assertNotEqual(r["ticket_id"], tid)

        # the mail bounces later: the row is dead with the reason, no ticket is opened
        dsn = eml("dsn_bounce.eml").replace(b"<kf.5.out@kefu.test>", mid.encode())
        dsn = dsn.replace(b"dsn-1@mx.example.net", b"dsn-%d@mx.example.net" % oid)
        t0 = self.w.count("ticket")
        st, _, r = self.post(dsn, mailbox="sales")
        self.assertEqual(st, 202, r)
        self.assertTrue(r["bounce"])
        self.assertEqual(self.w.count("ticket"), t0)
        row = self.outbox_row(oid)
        self.assertEqual(row[0], "dead")
        self.assertIn("550 5.1.1", row[2])
        self.assertEqual(self.w.count("event", "kind = 'outbox.bounced' AND ticket_id = %d" % tid), 1)

    def test_smtp_tempfail_then_ok_and_reject(self):
        st, _, r = self.post(eml("gbk_subject.eml").replace(b"gbk-1@", b"gbk-retry@"),
                             mailbox="sales")
        tid = r["ticket_id"]
        self.smtp.fail_next("451 4.3.0 try again later")
        oid = self.reply(tid, "已处理")
        mid = b"kf.%d.out@kefu.test" % oid
        got = self.wait_smtp(lambda m: mid in m[2])
        row = kt.wait_for(lambda: (lambda x: x if x[0] == "sent" else None)(self.outbox_row(oid)), 30)
        self.assertTrue(row, self.outbox_row(oid))
        self.assertEqual(int(row[1]), 2)  # one 451, then accepted
        time.sleep(0.5)
        self.assertEqual(len([m for m in self.smtp.messages if mid in m[2]]), 1)
        msg = email.message_from_bytes(got[0][2], policy=email.policy.default)
        self.assertIn(b"=?UTF-8?B?", got[0][2].split(b"\r\n\r\n")[0])  # encoded, not raw UTF-8
        self.assertEqual(str(msg["Subject"]), "Re: [KF-%06d] 咨询：朱镕基的订单" % tid)
        self.assertEqual(str(msg["To"]), "zhang.san@example.cn")

        self.smtp.fail_next("550 5.1.1 mailbox unavailable")
        oid = self.reply(tid, "second")
        row = kt.wait_for(lambda: (lambda x: x if x[0] == "dead" else None)(self.outbox_row(oid)), 30)
        self.assertTrue(row, self.outbox_row(oid))
        self.assertIn("550 5.1.1 mailbox unavailable", row[2] + row[3])

    # -- outbound attachments

    def upload(self, tid, files, who):
        """POST files [(filename, bytes)] to the ticket; the attachment ids."""
        b = "kefu-test-boundary-7f3a"
        body = b""
        for name, data in files:
            body += ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n" % (b, name)).encode() + data + b"\r\n"
        body += ("--%s--\r\n" % b).encode()
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/attachments" % tid, raw=body, who=who,
                              headers={"Content-Type": "multipart/form-data; boundary=" + b})
        self.assertEqual(st, 201, r)
        return [a["id"] for a in r["items"]]

    def test_reply_with_attachments(self):
        st, _, r = self.post(mail("files@example.com", "Need the invoice", msgid="att1@cust.example"),
                             mailbox="sales")
        tid = r["ticket_id"]
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40 + b"\x00\xff" * 7
        cn_name = "报价单（2026 年第四季度）— 最终版本，请查收并回复确认。" * 2 + ".txt"
        cn_text = "价格：¥1,280\n数量：3\n".encode() * 50
        ids = self.upload(tid, [("screen shot.png", png), (cn_name, cn_text)], who="carol")
        self.assertEqual(len(ids), 2)
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                              {"text": "Attached: the invoice.\n附件是发票。", "attachment_ids": ids},
                              who="carol")
        self.assertEqual(st, 201, r)
        msg_id = r["message_id"]
        oid = int(self.w.db.scalar("SELECT id FROM outbox WHERE dedupe_key = 'reply:%d'" % msg_id))
        # the files now belong to the reply's message, in the ticket's history
        st, _, t = self.w.api("GET", "/api/v1/tickets/%d" % tid, who="carol")
        mine = [m for m in t["messages"] if m["id"] == msg_id][0]
        self.assertEqual(sorted(a["id"] for a in mine["attachments"]), sorted(ids))
        # ...and arrive as multipart/mixed: the alternative body, then each file, bytes intact
        got = self.wait_smtp(lambda m: b"kf.%d.out@" % oid in m[2])
        raw = got[0][2]
        self.assertTrue(all(len(l) <= 998 for l in raw.split(b"\r\n")))  # RFC 5322 line limit
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(msg.get_content_type(), "multipart/mixed")
        parts = list(msg.iter_parts())
        self.assertEqual(parts[0].get_content_type(), "multipart/alternative")
        self.assertEqual(msg.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n"),
                         "Attached: the invoice.\n附件是发票。")
        files = [(a.get_filename(), a.get_content_type(), a.get_payload(decode=True))
                 for a in msg.iter_attachments()]
        self.assertEqual(files, [("screen shot.png", "image/png", png),
                                 (cn_name, "text/plain", cn_text)])
        self.assertEqual(self.outbox_row(oid)[0], "sent")

        # each file goes out once: a second reply may not take it again
        before = self.w.counts()
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                              {"text": "again", "attachment_ids": [ids[0]]}, who="carol")
        self.assertEqual(st, 422, r)
        self.assertEqual([e["field"] for e in r["errors"]], ["attachment_ids[0]"])
        self.assertEqual(self.w.counts(), before)  # nothing half-written: no message, no outbox row
        # bad shapes
        for bad, field in (("x", "attachment_ids"), ([1, 1], "attachment_ids[1]"),
                           ([0], "attachment_ids[0]"), (list(range(1, 40)), "attachment_ids")):
            st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                                  {"text": "bad", "attachment_ids": bad}, who="carol")
            self.assertEqual(st, 422, (bad, r))
            self.assertIn(field, [e["field"] for e in r["errors"]], (bad, r))
        # a file of another ticket is refused, and stays where it was
        st, _, r2 = self.post(mail("other@example.com", "Other", msgid="att2@cust.example"),
                              mailbox="sales")
        other = self.upload(r2["ticket_id"], [("other.txt", b"other ticket\n")], who="carol")
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                              {"text": "not yours", "attachment_ids": other}, who="carol")
        self.assertEqual(st, 422, r)
        self.assertEqual(self.w.count("attachment", "id = %d AND message_id IS NULL" % other[0]), 1)
        # together over reply_attachments_max_bytes (300000 here): 413, nothing taken
        big = self.upload(tid, [("a.bin", b"\x01" * 160000), ("b.bin", b"\x02" * 160000)], who="carol")
        before = self.w.counts()
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                              {"text": "too much", "attachment_ids": big}, who="carol")
        self.assertEqual(st, 413, r)
        self.assertEqual(r["errors"][0]["field"], "attachment_ids")
        self.assertEqual(self.w.counts(), before)
        self.assertEqual(self.w.count("attachment", "id IN (%d, %d) AND message_id IS NULL" % tuple(big)), 2)
        # an internal note takes files too, and sends nothing
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/notes" % tid,
                              {"text": "the logs", "attachment_ids": big[:1]}, who="carol")
        self.assertEqual(st, 201, r)
        self.assertEqual(int(self.w.db.scalar("SELECT message_id FROM attachment WHERE id = %d" % big[0])),
                         r["message_id"])
        self.assertEqual(self.w.count("outbox", "message_id = %d" % r["message_id"]), 0)

    def test_reply_keeps_the_ccs(self):
        # the customer copied a colleague (and our own address): the answer goes to the
        # customer, Cc the colleague, never to our mailbox
        st, _, r = self.post(mail("lead@cust.example", "Order 77", msgid="cc1@cust.example",
                                  extra="Cc: Colleague <Mate@Cust.Example>, support@kefu.test\r\n"),
                             mailbox="sales")
        self.assertEqual(st, 202, r)
        tid = r["ticket_id"]
        oid = self.reply(tid, "On its way.")
        got = self.wait_smtp(lambda m: b"kf.%d.out@" % oid in m[2])
        self.assertEqual(sorted(got[0][1]), ["lead@cust.example", "mate@cust.example"])
        msg = email.message_from_bytes(got[0][2], policy=email.policy.default)
        self.assertEqual([a.addr_spec for a in msg["Cc"].addresses], ["mate@cust.example"])
        # the agent sets the Cc: exactly those (they become known CCs: their mail threads)
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                              {"text": "Looping in your boss.",
                               "cc": ["boss@cust.example", "Sales@Kefu.Test"]},
                              who="carol")
        self.assertEqual(st, 201, r)
        oid = int(self.w.db.scalar("SELECT id FROM outbox WHERE dedupe_key = 'reply:%d'"
                                   % r["message_id"]))
        got = self.wait_smtp(lambda m: b"kf.%d.out@" % oid in m[2])
        self.assertEqual(sorted(got[0][1]), ["boss@cust.example", "lead@cust.example"])
        # our own mailbox is never copied, nor made a known CC
        self.assertEqual(self.w.count("ticket_cc", "ticket_id = %d AND address LIKE '%%kefu.test'"
                                      % tid), 0)
        st, _, r = self.post(mail("boss@cust.example", "Re: [KF-%06d] thanks" % tid,
                                  msgid="cc2@cust.example"), mailbox="sales")
        self.assertEqual(r["ticket_id"], tid)
        # "cc": [] sends to the customer alone; bad addresses are refused, nothing written
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                              {"text": "Just you.", "cc": []}, who="carol")
        self.assertEqual(st, 201, r)
        oid = int(self.w.db.scalar("SELECT id FROM outbox WHERE dedupe_key = 'reply:%d'"
                                   % r["message_id"]))
        got = self.wait_smtp(lambda m: b"kf.%d.out@" % oid in m[2])
        self.assertEqual(got[0][1], ["lead@cust.example"])
        self.assertIsNone(email.message_from_bytes(got[0][2], policy=email.policy.default)["Cc"])
        before = self.w.counts()
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % tid,
                              {"text": "x", "cc": ["ok@example.com", "not an address"]}, who="carol")
        self.assertEqual(st, 422, r)
        self.assertEqual([e["field"] for e in r["errors"]], ["cc[1]"])
        self.assertEqual(self.w.counts(), before)

    def test_merge_moves_the_mail_thread(self):
        # two mails about one thing; merged, a reply to the first thread (by In-Reply-To,
        # or a known CC's subject token) joins the ticket it was merged into
        st, _, r1 = self.post(mail("twice@cust.example", "Router dead", msgid="mg1@cust.example",
                                   extra="Cc: helper@cust.example\r\n"), mailbox="sales")
        st, _, r2 = self.post(mail("twice@cust.example", "Router still dead",
                                   msgid="mg2@cust.example"), mailbox="sales")
        src, dst = r1["ticket_id"], r2["ticket_id"]
        self.assertNotEqual(src, dst)
        st, _, m = self.w.api("POST", "/api/v1/tickets/%d/merge" % src, {"into_id": dst},
                              who="carol")
        self.assertEqual(st, 200, m)
        st, _, r = self.post(mail("twice@cust.example", "Re: Router dead", msgid="mg3@cust.example",
                                  extra="In-Reply-To: <mg1@cust.example>\r\n"), mailbox="sales")
        self.assertEqual(r["ticket_id"], dst)
        st, _, r = self.post(mail("helper@cust.example", "Re: [KF-%06d] me too" % dst,
                                  msgid="mg4@cust.example"), mailbox="sales")
        self.assertEqual(r["ticket_id"], dst)

    def test_api_ticket_answered_by_mail(self):
        # a ticket filed through the API (or the web form) has no mail thread of its own:
        # the answer is mailed to the customer from the mailbox of the ticket's queue
        # (support routes to q1, sales to q2)
        for queue, agent, box in ((self.w.q1, "alice", "support"), (self.w.q2, "carol", "sales")):
            st, _, t = self.w.api("POST", "/api/v1/tickets", {
                "subject": "Filed by phone", "text": "x", "queue_id": queue,
                "customer": {"email": "caller@example.net"}}, who=agent)
            self.assertEqual(st, 201, t)
            oid = self.reply(t["id"], "We called you back.")
            got = self.wait_smtp(lambda m: b"kf.%d.out@" % oid in m[2])
            self.assertEqual(got[0][1], ["caller@example.net"])
            msg = email.message_from_bytes(got[0][2], policy=email.policy.default)
            self.assertEqual(str(msg["Subject"]), "Re: [KF-%06d] Filed by phone" % t["id"])
            self.assertEqual(msg["From"].addresses[0].addr_spec, box + "@kefu.test")
            self.assertEqual(msg["Reply-To"].addresses[0].addr_spec, box + "@kefu.test")
            self.assertEqual(self.w.db.scalar("SELECT channel FROM outbox WHERE id = %d" % oid),
                             "email")

    # -- admin API

    def test_mailbox_admin(self):
        path = "/api/v1/email/mailboxes/billing"
        body = {"address": "billing@kefu.test", "queue_id": self.w.q2, "display_name": "Billing"}
        st, _, r = self.w.api("PUT", path, body)
        self.assertEqual((st, r["created"]), (201, True), r)
        st, _, r = self.w.api("PUT", path, body)
        self.assertEqual((st, r["created"]), (200, False), r)
        st, _, r = self.w.api("GET", "/api/v1/email/mailboxes")
        self.assertEqual(st, 200, r)
        mb = [m for m in r["items"] if m["name"] == "billing"]
        self.assertEqual(len(mb), 1)
        self.assertEqual((mb[0]["address"], mb[0]["queue_id"]), ("billing@kefu.test", self.w.q2))
        # refusals
        st, _, r = self.w.api("PUT", "/api/v1/email/mailboxes/other", {"address": "support@kefu.test"})
        self.assertEqual(st, 409, r)
        for bad in ({"address": "Not An Address"}, {"address": "x@kefu.test", "bogus": 1},
                    {"address": "x@kefu.test", "queue_id": 987654},
                    {"address": "x@kefu.test", "imap_url": "http://x/"},
                    {"address": "x@kefu.test", "imap_url": "imap://h/INBOX"}):
            st, _, r = self.w.api("PUT", "/api/v1/email/mailboxes/other", bad)
            self.assertEqual(st, 422, (bad, r))
        st, _, r = self.w.api("PUT", path, body, who="alice")
        self.assertEqual(st, 403, r)
        # the new mailbox takes mail
        c = self.lmtp()
        c.send("LHLO x\r\nMAIL FROM:<payer@example.com>\r\nRCPT TO:<billing@kefu.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        c.send(mail("payer@example.com", "invoice", msgid="billing-1@example.com") + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(int(self.w.db.scalar(
            "SELECT t.queue_id FROM ticket t JOIN message m ON m.ticket_id = t.id "
            "WHERE m.external_id = 'billing-1@example.com'")), self.w.q2)
        st, _, _ = self.w.api("DELETE", path)
        self.assertEqual(st, 204)
        st, _, _ = self.w.api("DELETE", path)
        self.assertEqual(st, 404)
        c.send("MAIL FROM:<payer@example.com>\r\nRCPT TO:<billing@kefu.test>\r\n")
        self.assertEqual([c.reply()[0] for _ in range(2)], [250, 550])
        self.assertEqual(self.w.count("event", "kind LIKE 'email.mailbox.%'"), 3)
        st, _, r = self.w.api("GET", "/api/v1/email/quarantine")
        self.assertEqual(st, 200, r)
        self.assertIsInstance(r["items"], list)

    # -- LMTP

    def lmtp(self):
        c = Lmtp(self.lmtp_port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        return c

    def test_lmtp_pipelined_delivery(self):
        c = self.lmtp()
        c.send("LHLO mta.test\r\nMAIL FROM:<cust9@example.com> SIZE=500 BODY=8BITMIME\r\n"
               "RCPT TO:<support@kefu.test>\r\nRCPT TO:<nobody@kefu.test>\r\n"
               "RCPT TO:<Sales@Kefu.Test>\r\nDATA\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 250)
        caps = [l[4:] for l in lines]
        self.assertIn("PIPELINING", caps)
        self.assertIn("8BITMIME", caps)
        self.assertIn("SIZE %d" % MAX_SIZE, caps)
        self.assertEqual([c.reply()[0] for _ in range(5)], [250, 250, 550, 250, 354])
        body = mail("cust9@example.com", "Via LMTP", "line\r\n.leading dot\r\nend",
                    msgid="lmtp-1@example.com")
        stuffed = body.replace(b"\r\n.", b"\r\n..")  # the client's dot-stuffing
        c.send(stuffed + b".\r\n")
        r1, r2 = c.reply(), c.reply()
        self.assertEqual((r1[0], r2[0]), (250, 250), (r1, r2))
        rows = self.w.db.query("SELECT t.channel_account, LOCATE(CONCAT(CHAR(10), '.leading dot', CHAR(10)), m.body_text) "
                               "FROM message m "
                               "JOIN ticket t ON t.id = m.ticket_id WHERE m.external_id = "
                               "'lmtp-1@example.com' ORDER BY t.channel_account")
        self.assertEqual([r[0] for r in rows], ["sales", "support"])
        self.assertTrue(all(int(r[1]) > 0 for r in rows), rows)  # dot-unstuffed
        # the same message again: acknowledged, not duplicated
        c.send("MAIL FROM:<cust9@example.com>\r\nRCPT TO:<support@kefu.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
        c.send(stuffed + b".\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 250)
        self.assertIn("duplicate", lines[0])
        self.assertEqual(self.w.count("message", "external_id = 'lmtp-1@example.com'"), 2)
        c.send("QUIT\r\n")
        self.assertEqual(c.reply()[0], 221)

    def swaks(self, *args, stdin=None):
        # swaks is a real LMTP/SMTP client (Debian package swaks): no stand-in for the MTA side.
        if shutil.which("swaks") is None:
            raise AssertionError("swaks is not installed (deploy/lib.sh installs it)")
        cp = subprocess.run(["swaks", "--protocol", "LMTP", "--server", "127.0.0.1",
                             "--port", str(self.lmtp_port), "--timeout", "30"] + list(args),
                            input=stdin, capture_output=True, text=True, timeout=120)
        return cp

    def test_lmtp_with_swaks(self):
        # A delivery: swaks pipelines (it sees PIPELINING in LHLO) and reads each reply.
        cp = self.swaks("--pipeline", "--from", "swaks1@example.com", "--to", "support@kefu.test",
                        "--header", "Subject: Delivered by swaks", "--header",
                        "Message-Id: <swaks-1@example.com>", "--body", "Hello from a real client")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertRegex(cp.stdout, r"<- +250 2\.0\.0 <support> delivered")
        rows = self.w.db.query("SELECT t.subject, t.channel_account FROM message m JOIN ticket t "
                               "ON t.id = m.ticket_id WHERE m.external_id = 'swaks-1@example.com'")
        self.assertEqual([tuple(r) for r in rows], [("Delivered by swaks", "support")])
        # An unknown recipient: 550, and swaks reports the failure.
        cp = self.swaks("--from", "swaks2@example.com", "--to", "nobody@kefu.test",
                        "--header", "Message-Id: <swaks-2@example.com>")
        self.assertNotEqual(cp.returncode, 0, cp.stdout)
        self.assertRegex(cp.stdout, r"<\*\* *550 ")
        # An oversize message: 552 after DATA, nothing stored.
        cp = self.swaks("--from", "swaks3@example.com", "--to", "support@kefu.test",
                        "--header", "Message-Id: <swaks-3@example.com>",
                        "--body", "-", stdin=("z" * 900 + "\n") * (MAX_SIZE // 900 + 2))
        self.assertNotEqual(cp.returncode, 0, cp.stdout)
        self.assertRegex(cp.stdout, r"<\*\* *552 ")
        self.assertEqual(self.w.count("message", "external_id = 'swaks-3@example.com'"), 0)

    def test_lmtp_refusals(self):
        c = self.lmtp()
        c.send("MAIL FROM:<a@b.c>\r\n")
        self.assertEqual(c.reply()[0], 503)  # LHLO first
        c.send("HELO x\r\n")
        self.assertEqual(c.reply()[0], 500)
        c.send("LHLO x\r\n")
        self.assertEqual(c.reply()[0], 250)
        c.send("DATA\r\n")
        self.assertEqual(c.reply()[0], 503)
        c.send("MAIL FROM:<a@b.c> SIZE=%d\r\n" % (MAX_SIZE + 1))
        self.assertEqual(c.reply()[0], 552)
        c.send("MAIL FROM:<a@b.c>\r\nRCPT TO:<nobody@kefu.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(3)], [250, 550, 503])
        c.send("RSET\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<support@kefu.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 250, 354])
        t0 = self.w.count("ticket")
        big = mail("big@example.com", "big", "x" * 100 + ("\r\n" + "y" * 998) * 300,
                   msgid="big-1@example.com")
        self.assertGreater(len(big), MAX_SIZE)
        c.send(big + b".\r\n")
        self.assertEqual(c.reply()[0], 552)
        self.assertEqual(self.w.count("ticket"), t0)
        # the session goes on after a refusal
        c.send("NOOP\r\nQUIT\r\n")
        self.assertEqual([c.reply()[0] for _ in range(2)], [250, 221])

    def test_lmtp_session_cap(self):
        conns = [self.lmtp() for _ in range(4)]
        extra = Lmtp(self.lmtp_port)
        self.addCleanup(extra.close)
        self.assertEqual(extra.reply()[0], 421)
        for c in conns:
            c.send("QUIT\r\n")
            self.assertEqual(c.reply()[0], 221)
        # slots free again once they are gone
        ok = kt.wait_for(lambda: self._greets(), 10)
        self.assertTrue(ok)

    def _greets(self):
        c = Lmtp(self.lmtp_port)
        try:
            return c.reply()[0] == 220
        finally:
            c.close()


if __name__ == "__main__":
    kt.main()
