"""The email channel's TLS against real peers on 127.0.0.1, with a throw-away
CA made here (tlsca.py) and a second, unrelated CA:

IMAP (a private Dovecot with ssl = required: no login without TLS):
- an imaps:// mailbox and an imap:// mailbox with imap_starttls=require poll
  messages in (tickets, \\Seen), and Dovecot logged every login as TLS;
- imap_starttls=require against a Dovecot that offers no STARTTLS: the poll
  fails (imap_error), nothing is ingested, nothing flagged, no login;
- tls_ca_bundle naming the other CA: both mailboxes fail with a certificate
  error in imap_error, nothing ingested or flagged, no login.
SMTP (aiosmtpd, STARTTLS offered and required by the server):
- smtp_starttls=require and the CA trusted: an agent reply arrives, over TLS;
- the other CA: the row stays queued and is retried, "certificate verify
  failed" in its last error, nothing reaches the server;
- a trusted certificate for another name: the same, with the name mismatch,
  for smtp_host an IP address and a DNS name (which also works when right);
- smtp_starttls=require against a server without STARTTLS: retried with the
  reason, and no MAIL command was ever sent in clear.
A peer that cannot start fails the test (never a skip).
"""

import email
import email.policy
import os
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefu_api  # noqa: E402
import kefutest as kt  # noqa: E402
import tlsca  # noqa: E402
from smtppeer import SmtpPeer  # noqa: E402
from dovecot_kit import Dovecot, msg  # noqa: E402

BASE_ENV = {
    "KEFU_SHUTDOWN_TIMEOUT": "10",
    "KEFU_SMTP_HOST": "127.0.0.1",
    "KEFU_SMTP_TIMEOUT": "5",
    "KEFU_OUTBOX_PERIOD_MS": "100",
    "KEFU_OUTBOX_BACKOFF_BASE": "1",
    "KEFU_OUTBOX_BACKOFF_MAX": "1",
    "KEFU_IMAP_STARTTLS": "require",
}


class EmailTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        reg = cls.addClassCleanup
        d = kt.mktemp_dir("tlsca-", reg)
        cls.ca = tlsca.CA(os.path.join(d, "good"), "Kefu Test CA")
        cls.other = tlsca.CA(os.path.join(d, "other"), "Some Other CA")
        cert = cls.ca.server_cert("server")
        wrong_name = cls.ca.server_cert("elsewhere", dns=("mail.example.com",), ips=())

        cls.dov = Dovecot(reg, users=("imaps", "starttls", "badimaps", "badstarttls"),
                          tls=cert, ca=cls.ca.pem).start()
        cls.cleardov = Dovecot(reg, users=("clear",)).start()

        cls.smtp = SmtpPeer(tls=cert).start()
        reg(cls.smtp.stop)
        cls.smtp_clear = SmtpPeer().start()
        reg(cls.smtp_clear.stop)
        cls.smtp_wrong = SmtpPeer(tls=wrong_name).start()
        reg(cls.smtp_wrong.stop)
        cls.smtp_auth = SmtpPeer(tls=cert, auth=("kefu-out", "s3cret pass")).start()
        reg(cls.smtp_auth.stop)

        cls.secrets = os.path.join(kt.mktemp_dir("secrets-", reg), "secrets")
        with open(cls.secrets, "w") as f:
            f.write("imap_secret = imap-secret\n")
        os.chmod(cls.secrets, 0o600)
        cls.base_env = dict(BASE_ENV, KEFU_SECRETS_FILE=cls.secrets)

        env = dict(cls.base_env, KEFU_TLS_CA_BUNDLE=cls.ca.pem, KEFU_SMTP_PORT=str(cls.smtp.port))
        cls.w = kefu_api.World(reg, env=env)
        cls.w.db.query("INSERT INTO email_mailbox (name, address) VALUES ('support', "
                       "'support@kefu.test')")
        cls.w.db.query("INSERT INTO channel_account (channel, account, default_queue_id) "
                       "VALUES ('email', 'support', %d)" % cls.w.q1)
        sys.stderr.write("setup: %.1fs\n" % (time.monotonic() - t0))

    @classmethod
    def tearDownClass(cls):
        if cls.w.k.alive():
            assert cls.w.stop() == 0, cls.w.k.tail()

    def setUp(self):
        # mailboxes of another test stop polling
        self.w.db.query("UPDATE email_mailbox SET enabled = 0 WHERE imap_url IS NOT NULL")
        self.t0 = time.monotonic()

    def tearDown(self):
        sys.stderr.write("%s: %.1fs\n" % (self.id().rsplit(".", 1)[-1], time.monotonic() - self.t0))

    # -- helpers

    def restart(self, **env):
        """kefud again (it must exit 0: no leaks under ASan), with BASE_ENV + env."""
        if self.w.k.alive():
            self.assertEqual(self.w.k.stop(), 0, self.w.k.tail())
        self.w.k = kt.Kefud(self.w.db, env=dict(self.base_env, **env),
                            register=self.addCleanup).start()

    def mailbox(self, name, url, user):
        self.w.db.query(
            "INSERT INTO email_mailbox (name, address, imap_url, imap_user, imap_secret_ref, "
            "poll_interval) VALUES ('%s', '%s@kefu.test', '%s', '%s', 'imap_secret', 1)"
            % (name, name, url, user))
        self.w.db.query("INSERT INTO channel_account (channel, account, default_queue_id) "
                        "VALUES ('email', '%s', %d)" % (name, self.w.q1))

    def box(self, name):
        """(imap_error or '', imap_polled_at or '', imap_last_uid) of a mailbox."""
        return self.w.db.query("SELECT COALESCE(imap_error, ''), COALESCE(imap_polled_at, ''), "
                               "imap_last_uid FROM email_mailbox WHERE name = '%s'" % name)[0]

    def ingested(self, tag):
        return self.w.count("message", "external_id LIKE '%s-%%'" % tag)

    def all_seen(self, dov, user, n):
        f = dov.flags(user)
        return len(f) == n and all("\\Seen" in v for v in f.values())

    def unseen(self, dov, user, n):
        f = dov.flags(user)
        self.assertEqual(len(f), n, f)
        self.assertFalse(any("\\Seen" in v for v in f.values()), f)

    def wait_failed_polls(self, names, polls=2, timeout=20):
        """Wait until each mailbox has failed `polls` times in a row (imap_polled_at
        moved on with an error); their errors."""
        seen = {n: set() for n in names}

        def done():
            for n in names:
                err, at, _ = self.box(n)
                if err:
                    seen[n].add(at)
            return all(len(s) >= polls for s in seen.values())
        self.assertTrue(kt.wait_for(done, timeout, 0.2),
                        "polls did not fail: %r\n%s" % ({n: self.box(n) for n in names},
                                                        self.w.k.tail()))
        return {n: self.box(n)[0] for n in names}

    def reply(self, tag):
        """A ticket from an inbound mail, and an agent's reply to it: the outbox id."""
        raw = ("From: cust-%s@example.com\r\nTo: support@kefu.test\r\nSubject: tls %s\r\n"
               "Message-ID: <%s@cust.example>\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
               % (tag, tag, tag)).encode()
        st, _, r = self.w.api("POST", "/api/v1/inbound/email/support", raw=raw,
                              headers={"Content-Type": "message/rfc822"})
        self.assertEqual(st, 202, r)
        st, _, r = self.w.api("POST", "/api/v1/tickets/%d/replies" % r["ticket_id"],
                              {"text": "over TLS, %s" % tag}, who="alice")
        self.assertEqual(st, 201, r)
        return int(self.w.db.scalar("SELECT id FROM outbox WHERE dedupe_key = 'reply:%d'"
                                    % r["message_id"]))

    def outbox_row(self, oid):
        return self.w.db.query("SELECT status, attempts, COALESCE(last_error, ''), "
                               "COALESCE(peer_reply, '') FROM outbox WHERE id = %d" % oid)[0]

    def retried(self, oid, attempts=2, timeout=20):
        """Wait for the row to have failed `attempts` times and still be queued."""
        row = kt.wait_for(lambda: (lambda r: r if int(r[1]) >= attempts and r[0] == "queued"
                                   else None)(self.outbox_row(oid)), timeout, 0.1)
        self.assertTrue(row, "row %d: %r\n%s" % (oid, self.outbox_row(oid), self.w.k.tail()))
        return row

    def retire(self, oid):
        """kefud stopped: the row of a failure case can never go out later."""
        self.assertEqual(self.w.k.stop(), 0, self.w.k.tail())
        self.w.db.query("UPDATE outbox SET status = 'dead' WHERE id = %d" % oid)

    # -- IMAP

    def test_imap_tls_trusted(self):
        self.restart(KEFU_TLS_CA_BUNDLE=self.ca.pem)
        clear0 = self.cleardov.logins("clear")  # Dovecot's start-up probe
        for i in range(3):
            self.dov.deliver(msg(i, "imaps"), user="imaps")
            self.dov.deliver(msg(i, "starttls"), user="starttls")
            self.cleardov.deliver(msg(i, "clear"), user="clear")
        self.mailbox("imaps", "imaps://127.0.0.1:%d/INBOX" % self.dov.imaps_port, "imaps")
        self.mailbox("starttls", "imap://127.0.0.1:%d/INBOX" % self.dov.port, "starttls")
        self.mailbox("clear", "imap://127.0.0.1:%d/INBOX" % self.cleardov.port, "clear")

        ok = kt.wait_for(lambda: self.ingested("imaps") == 3 and self.ingested("starttls") == 3,
                         30, 0.2)
        self.assertTrue(ok, "imaps %d, starttls %d of 3 ingested; %r %r\n%s\n%s"
                        % (self.ingested("imaps"), self.ingested("starttls"), self.box("imaps"),
                           self.box("starttls"), self.w.k.tail(), self.dov.log()))
        for user in ("imaps", "starttls"):
            self.assertTrue(kt.wait_for(lambda: self.all_seen(self.dov, user, 3), 20, 0.2),
                            self.dov.flags(user))
            self.assertEqual(self.box(user)[0], "")
            self.assertEqual(self.box(user)[2], "3")
            self.assertEqual(self.w.count("ticket", "subject LIKE '%s %%' AND channel_account = "
                                          "'%s'" % (user, user)), 3)
            # every login of the poller was over TLS (ssl = required refuses others anyway)
            logins = self.dov.logins(user)
            self.assertTrue(logins, self.dov.log())
            for line in logins:
                self.assertRegex(line, r"\bTLS\b", line)
                self.assertNotIn("secured", line)

        # STARTTLS required, not offered: no login in clear, nothing ingested or flagged
        errs = self.wait_failed_polls(["clear"])
        self.assertIn("SSL", errs["clear"])
        self.assertEqual(self.cleardov.logins("clear"), clear0)  # before our own look at the flags
        self.assertEqual(self.ingested("clear"), 0)
        self.unseen(self.cleardov, "clear", 3)
        self.assertEqual(self.w.k.stop(), 0, self.w.k.tail())

    def test_imap_untrusted_ca(self):
        self.restart(KEFU_TLS_CA_BUNDLE=self.other.pem)
        logins0 = {n: self.dov.logins(n) for n in ("badimaps", "badstarttls")}
        for i in range(2):
            self.dov.deliver(msg(i, "badimaps"), user="badimaps")
            self.dov.deliver(msg(i, "badstarttls"), user="badstarttls")
        self.mailbox("badimaps", "imaps://127.0.0.1:%d/INBOX" % self.dov.imaps_port, "badimaps")
        self.mailbox("badstarttls", "imap://127.0.0.1:%d/INBOX" % self.dov.port, "badstarttls")
        errs = self.wait_failed_polls(["badimaps", "badstarttls"])
        for name, err in errs.items():
            self.assertRegex(err, r"(?i)certificate", "%s: %s" % (name, err))
            self.assertIn("unable to get local issuer certificate", err, name)
            self.assertEqual(self.dov.logins(name), logins0[name])  # before our own look
            self.assertEqual(self.ingested(name), 0)
            self.assertEqual(self.box(name)[2], "0")
            self.unseen(self.dov, name, 2)
        self.assertEqual(self.w.k.stop(), 0, self.w.k.tail())

    # -- SMTP

    def test_smtp_starttls_trusted(self):
        self.restart(KEFU_TLS_CA_BUNDLE=self.ca.pem, KEFU_SMTP_STARTTLS="require",
                     KEFU_SMTP_PORT=str(self.smtp.port))
        oid = self.reply("good")
        mid = b"kf.%d.out@kefu.test" % oid
        got = kt.wait_for(lambda: [m for m in self.smtp.messages if mid in m[2]], 20, 0.05)
        self.assertTrue(got, "nothing arrived: %r\n%s" % (self.outbox_row(oid), self.w.k.tail()))
        frm, rcpts, raw, over_tls = got[0]
        self.assertTrue(over_tls)
        self.assertEqual((frm, rcpts), ("support@kefu.test", ["cust-good@example.com"]))
        body = email.message_from_bytes(raw, policy=email.policy.default).get_body(
            preferencelist=("plain",)).get_content()
        self.assertEqual(body.strip(), "over TLS, good")
        self.assertTrue(all(tls for _, tls in self.smtp.mails), self.smtp.mails)
        self.assertTrue(kt.wait_for(lambda: self.outbox_row(oid)[0] == "sent", 10, 0.1),
                        self.outbox_row(oid))
        self.assertEqual(self.outbox_row(oid)[1], "1")  # no stalled first session (TLS 1.3)
        self.assertEqual(self.w.k.stop(), 0, self.w.k.tail())

    def test_smtp_auth_over_starttls(self):
        # AUTH (PLAIN or LOGIN) with the password from smtp_password_file, only after STARTTLS
        pw = os.path.join(kt.mktemp_dir("smtp-pw-", self.addCleanup), "pw")
        with open(pw, "w") as f:
            f.write("s3cret pass\n")
        os.chmod(pw, 0o600)
        self.restart(KEFU_TLS_CA_BUNDLE=self.ca.pem, KEFU_SMTP_STARTTLS="require",
                     KEFU_SMTP_PORT=str(self.smtp_auth.port), KEFU_SMTP_USER="kefu-out",
                     KEFU_SMTP_PASSWORD_FILE=pw)
        oid = self.reply("auth")
        mid = b"kf.%d.out@kefu.test" % oid
        got = kt.wait_for(lambda: [m for m in self.smtp_auth.messages if mid in m[2]], 20, 0.05)
        self.assertTrue(got, "nothing arrived: %r\n%s" % (self.outbox_row(oid), self.w.k.tail()))
        self.assertEqual([l[1:] for l in self.smtp_auth.logins], [("kefu-out", True, True)])
        self.assertIn(self.smtp_auth.logins[0][0], ("PLAIN", "LOGIN"))
        self.assertTrue(kt.wait_for(lambda: self.outbox_row(oid)[0] == "sent", 10, 0.1))
        # a wrong password: not the message's fault, so retried (never dead) with the
        # server's words; nothing sent
        with open(pw, "w") as f:
            f.write("wrong\n")
        self.restart(KEFU_TLS_CA_BUNDLE=self.ca.pem, KEFU_SMTP_STARTTLS="require",
                     KEFU_SMTP_PORT=str(self.smtp_auth.port), KEFU_SMTP_USER="kefu-out",
                     KEFU_SMTP_PASSWORD_FILE=pw)
        before = len(self.smtp_auth.messages)
        oid = self.reply("badauth")
        row = self.retried(oid)
        self.assertIn(("kefu-out", False, True), [l[1:] for l in self.smtp_auth.logins])
        self.assertIn("authentication as smtp_user failed: 530 5.7.0 Authentication required",
                      row[2])
        self.assertEqual(len(self.smtp_auth.messages), before)
        self.retire(oid)

    def test_smtp_untrusted_ca(self):
        self.restart(KEFU_TLS_CA_BUNDLE=self.other.pem, KEFU_SMTP_STARTTLS="require",
                     KEFU_SMTP_PORT=str(self.smtp.port))
        before = (len(self.smtp.mails), len(self.smtp.messages))
        oid = self.reply("untrusted")
        row = self.retried(oid)
        self.assertIn("SMTP 127.0.0.1:%d: STARTTLS failed: certificate verify failed"
                      % self.smtp.port, row[2])
        self.assertIn("unable to get local issuer certificate", row[2])
        self.assertEqual((len(self.smtp.mails), len(self.smtp.messages)), before)
        self.retire(oid)

    def test_smtp_wrong_name(self):
        self.restart(KEFU_TLS_CA_BUNDLE=self.ca.pem, KEFU_SMTP_STARTTLS="require",
                     KEFU_SMTP_PORT=str(self.smtp_wrong.port))
        oid = self.reply("wrongname")
        row = self.retried(oid)
        self.assertIn("STARTTLS failed: certificate verify failed", row[2])
        self.assertIn("IP address mismatch", row[2])
        self.assertEqual((self.smtp_wrong.mails, self.smtp_wrong.messages), ([], []))
        self.retire(oid)

    def test_smtp_by_host_name(self):
        """smtp_host a DNS name: checked against the certificate's DNS names."""
        self.restart(KEFU_TLS_CA_BUNDLE=self.ca.pem, KEFU_SMTP_STARTTLS="require",
                     KEFU_SMTP_HOST="localhost", KEFU_SMTP_PORT=str(self.smtp_wrong.port))
        oid = self.reply("wrongdns")
        row = self.retried(oid)
        self.assertIn("SMTP localhost:%d: STARTTLS failed: certificate verify failed"
                      % self.smtp_wrong.port, row[2])
        self.assertIn("hostname mismatch", row[2])
        self.assertEqual((self.smtp_wrong.mails, self.smtp_wrong.messages), ([], []))
        self.retire(oid)

        self.restart(KEFU_TLS_CA_BUNDLE=self.ca.pem, KEFU_SMTP_STARTTLS="require",
                     KEFU_SMTP_HOST="localhost", KEFU_SMTP_PORT=str(self.smtp.port))
        oid = self.reply("gooddns")
        mid = b"kf.%d.out@kefu.test" % oid
        got = kt.wait_for(lambda: [m for m in self.smtp.messages if mid in m[2]], 20, 0.05)
        self.assertTrue(got, "nothing arrived: %r\n%s" % (self.outbox_row(oid), self.w.k.tail()))
        self.assertTrue(got[0][3])
        self.assertTrue(kt.wait_for(lambda: self.outbox_row(oid)[0] == "sent", 10, 0.1),
                        self.outbox_row(oid))
        self.assertEqual(self.outbox_row(oid)[1], "1")
        self.assertEqual(self.w.k.stop(), 0, self.w.k.tail())

    def test_smtp_require_without_starttls(self):
        self.restart(KEFU_TLS_CA_BUNDLE=self.ca.pem, KEFU_SMTP_STARTTLS="require",
                     KEFU_SMTP_PORT=str(self.smtp_clear.port))
        oid = self.reply("clear")
        row = self.retried(oid)
        self.assertIn("STARTTLS required but not offered", row[2])
        # not even MAIL FROM was sent in clear
        self.assertEqual((self.smtp_clear.mails, self.smtp_clear.messages), ([], []))
        self.retire(oid)


if __name__ == "__main__":
    kt.main()
