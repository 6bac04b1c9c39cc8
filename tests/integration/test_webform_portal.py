"""The customer portal: the per-ticket link (public conversation only, never
internal notes; replies with attachments; "this is solved"; attachments as
downloads), wrong, expired and revoked links (404, the same page for all,
nothing leaked), XSS payloads in every field rendered inert, and "My
requests" through a sign-in link (usable once, for 15 minutes) listing the
customer's tickets of every channel.
"""

import re
import secrets
import unittest

import kefutest as kt
import webform_kit as wk

XSS = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


class PortalTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = wk.Site(cls.addClassCleanup)

    @classmethod
    def tearDownClass(cls):
        assert cls.site.stop() == 0, cls.site.k.tail()

    def new_request(self, **over):
        st, _, j = self.site.post_json(self.site.fields(**over))
        self.assertEqual(st, 201, j)
        return int(j["number"][3:]), wk.portal_path(j["portal_url"]), j

    def messages(self, tid):
        rows = self.site.db.query("SELECT kind, direction, REPLACE(body_text, CHAR(10), '|') "
                                  "FROM message WHERE ticket_id = %d ORDER BY id" % tid)
        return rows

    def status(self, tid):
        st, _, j = self.site.api("GET", "/api/v1/tickets/%d" % tid)
        self.assertEqual(st, 200, j)
        return j["status"]

    # -- the ticket page, replies, solved

    def test_conversation_reply_solve(self):
        site = self.site
        tid, path, _ = self.new_request(subject="Where is my parcel?")
        st, _, j = site.api("POST", "/api/v1/tickets/%d/replies" % tid,
                            {"text": "It left the warehouse today."})
        self.assertEqual(st, 201, j)
        st, _, j = site.api("POST", "/api/v1/tickets/%d/notes" % tid,
                            {"text": "INTERNAL-ONLY: customer is grumpy"})
        self.assertEqual(st, 201, j)
        st, hdrs, html = site.get(path)
        self.assertEqual(st, 200)
        self.assertIn("It left the warehouse today.", html)
        self.assertNotIn("INTERNAL-ONLY", html)
        self.assertIn('id="ticket-status">In progress<', html)

        # Reply with text and a file, as the page's form does.
        tok = wk.hidden(html)
        st, hdrs, raw = site.post_multipart({"form_token": tok, "lang": "en",
                                             "text": "Thanks! Photo attached."},
                                            [("attachments", "parcel.png", wk.PNG)],
                                            path=path + "/reply")
        self.assertEqual(st, 303, raw[:300])
        self.assertTrue(hdrs["location"].startswith(path + "?sent=1"), hdrs["location"])
        rows = self.messages(tid)
        self.assertEqual(rows[-1], ("public", "in", "Thanks! Photo attached."))
        st, _, html = site.get(path + "?sent=1")
        self.assertIn("Your reply has been sent.", html)
        href = re.search(r'href="(%s/attachments/\d+)" download>parcel.png<' % re.escape(path),
                         html).group(1)
        st, hdrs, data = site.request("GET", href)
        self.assertEqual(st, 200)
        self.assertEqual(data, wk.PNG)
        self.assertTrue(hdrs["content-disposition"].startswith("attachment;"), hdrs)
        self.assertEqual(hdrs["content-type"], "image/png")
        self.assertIn("sandbox", hdrs["content-security-policy"])
        # An attachment of another ticket is not reachable through this link.
        tid2, path2, _ = self.new_request()
        aid = href.rsplit("/", 1)[1]
        st, _, _ = site.request("GET", "%s/attachments/%s" % (path2, aid))
        self.assertEqual(st, 404)

        # An empty reply is refused next to the box.
        st, _, raw = site.post_urlencoded({"form_token": tok, "text": "  "}, path=path + "/reply")
        self.assertEqual(st, 422)
        self.assertIn(b"Write a message or attach a file.", raw)

        # A token from another ticket's page is no good here.
        other = wk.hidden(site.get(path2)[2])
        st, _, _ = site.post_urlencoded({"form_token": other, "text": "x"}, path=path + "/reply")
        self.assertEqual(st, 403)
        st, _, _ = site.post_urlencoded({"form_token": "1.2.3", "text": "x"}, path=path + "/reply")
        self.assertEqual(st, 403)

        # "This is solved", then writing again reopens it.
        st, _, html = site.get(path)
        solve_tok = wk.hidden(html, index=1)
        st, hdrs, _ = site.post_urlencoded({"form_token": solve_tok}, path=path + "/solve")
        self.assertEqual(st, 303)
        self.assertEqual(self.status(tid), "solved")
        ev = site.db.query("SELECT actor_kind FROM event WHERE ticket_id = %d AND kind = "
                           "'ticket.updated' ORDER BY id DESC LIMIT 1" % tid)
        self.assertEqual(ev[0][0], "customer")
        st, _, html = site.get(path + "?solved=1")
        self.assertNotIn('id="solve-button"', html)
        st, _, _ = site.post_urlencoded({"form_token": wk.hidden(html), "text": "One more thing"},
                                        path=path + "/reply")
        self.assertEqual(st, 303)
        self.assertEqual(self.status(tid), "open")

    def test_closed_ticket_takes_no_reply(self):
        tid, path, _ = self.new_request()
        st, _, html = self.site.get(path)
        tok = wk.hidden(html)
        self.site.db.query("UPDATE ticket SET status = 'closed' WHERE id = %d" % tid)
        n = len(self.messages(tid))
        st, _, raw = self.site.post_urlencoded({"form_token": tok, "text": "hello?"},
                                               path=path + "/reply")
        self.assertEqual(st, 409)
        self.assertEqual(len(self.messages(tid)), n)
        st, _, html = self.site.get(path)
        self.assertNotIn('action="%s/reply"' % path, html)

    # -- links that do not work

    def test_wrong_expired_revoked_links_are_the_same_404(self):
        site = self.site
        tid, path, _ = self.new_request(subject="Secret subject 4711")
        unknown = "/support/t/" + wk.b64url(secrets.token_bytes(32))
        bodies = set()
        for p in (unknown, "/support/t/short", "/support/t/" + "%3Cx%3E" * 7):
            st, hdrs, html = site.get(p)
            self.assertEqual(st, 404, p)
            bodies.add(html)
        # Expired: unused for longer than portal_token_idle (90 days by default).
        token = path.rsplit("/", 1)[1]
        import hashlib
        h = hashlib.sha256(token.encode()).hexdigest()
        site.db.query("UPDATE portal_token SET last_used_at = NOW(6) - INTERVAL 91 DAY "
                      "WHERE token_hash = '%s'" % h)
        st, _, html = site.get(path)
        self.assertEqual(st, 404)
        bodies.add(html)
        for sub in ("/submitted", "/attachments/1"):
            st, _, html = site.get(path + sub)
            self.assertEqual(st, 404)
            bodies.add(html)
        st, _, raw = site.post_urlencoded({"form_token": "x", "text": "y"}, path=path + "/reply")
        self.assertEqual(st, 404)
        bodies.add(raw.decode())
        # Revoked by an agent: a fresh link works, then no link of the ticket does.
        st, _, j = site.api("POST", "/api/v1/tickets/%d/portal-links" % tid)
        self.assertEqual(st, 201, j)
        fresh = wk.portal_path(j["url"])
        self.assertEqual(site.get(fresh)[0], 200)
        st, _, j = site.api("DELETE", "/api/v1/tickets/%d/portal-links" % tid)
        self.assertEqual(st, 200, j)
        self.assertGreaterEqual(j["revoked"], 2)
        st, _, html = site.get(fresh)
        self.assertEqual(st, 404)
        bodies.add(html)
        self.assertEqual(len(bodies), 1, "the 404 pages differ")
        page = bodies.pop()
        self.assertNotIn("4711", page)
        self.assertNotIn("KF-", page)
        # Tickets the agent API cannot see are 404 there too.
        st, _, _ = site.api("POST", "/api/v1/tickets/999999/portal-links")
        self.assertEqual(st, 404)

    # -- XSS

    def test_xss_payloads_are_inert(self):
        site = self.site
        name_payload = "Mallory " + XSS
        tid, path, _ = self.new_request(name=name_payload, subject="S" + XSS[:60],
                                        description="D" + XSS)
        st, _, raw = site.post_multipart(site.fields(description="with file"),
                                         [("attachments", "<img src=x onerror=alert(3)>.png", wk.PNG)])
        j = __import__("json").loads(raw)
        path2 = wk.portal_path(j["portal_url"])
        site.api("POST", "/api/v1/tickets/%d/replies" % tid, {"text": "Agent " + XSS})
        for p in (path, path2, path + "/submitted"):
            st, hdrs, html = site.get(p)
            self.assertEqual(st, 200, p)
            self.assertNotIn("<script>alert", html, p)
            self.assertNotIn("<img src=x", html, p)
            self.assertNotRegex(html, r"<img[^>]*onerror", p)
            self.assertNotRegex(html, r"<script(?![^>]*\bsrc=)", p)
        st, _, html = site.get(path)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", html)
        self.assertIn("Agent &quot;&gt;&lt;script&gt;", html)
        st, _, html = site.get(path2)
        self.assertIn("&lt;img src=x onerror=alert(3)&gt;.png", html)
        # The customer's name goes into the outbox as data (the mail adapter escapes it).
        ack = site.outbox("ticket_id = %d" % tid)[0]
        self.assertEqual(ack["payload"]["customer_name"], name_payload)

    # -- My requests

    def test_my_requests_sign_in_link(self):
        site = self.site
        email = "mine-%s@example.org" % secrets.token_hex(3)
        tid_web, path_web, _ = self.new_request(email=email, subject="Via the form")
        st, _, t = site.api("POST", "/api/v1/tickets", {
            "subject": "Via the phone", "text": "called", "customer": {"email": email}})
        self.assertEqual(st, 201, t)
        tid_other, _, _ = self.new_request(subject="Someone else's")

        st, _, html = site.get("/support/requests")
        self.assertEqual(st, 200)
        self.assertIn('action="/support/signin"', html)
        tok = wk.hidden(html)
        before = len(site.outbox("kind = 'signin'"))
        st, _, raw = site.post_urlencoded({"form_token": tok, "email": "nobody-%s@example.org"
                                           % secrets.token_hex(3)}, path="/support/signin")
        unknown_page = raw.decode()
        self.assertEqual(st, 200)
        self.assertEqual(len(site.outbox("kind = 'signin'")), before)
        st, _, raw = site.post_urlencoded({"form_token": tok, "email": email.upper()},
                                          path="/support/signin")
        self.assertEqual(st, 200)
        strip = lambda s: re.sub(r'name="form_token" value="[^"]*"', "", s)  # noqa: E731
        self.assertEqual(strip(raw.decode()), strip(unknown_page), "known and unknown differ")
        rows = site.outbox("kind = 'signin'")
        self.assertEqual(len(rows), before + 1)
        self.assertEqual(rows[-1]["channel"], "email")
        self.assertEqual(rows[-1]["target"], email)
        url = rows[-1]["payload"]["signin_url"]
        self.assertTrue(url.startswith(wk.BASE_URL + "/support/signin/"), url)
        link = url[len(wk.BASE_URL):]

        st, _, html = site.get(link)  # a GET (a mail scanner) does not use it up
        self.assertEqual(st, 200)
        st, _, html = site.get(link)
        self.assertEqual(st, 200)
        st, hdrs, _ = site.post_urlencoded({"form_token": wk.hidden(html)}, path=link)
        self.assertEqual(st, 303)
        self.assertEqual(hdrs["location"], "/support/requests")
        self.assertIn("HttpOnly", hdrs["set-cookie"])
        self.assertIn("SameSite=Lax", hdrs["set-cookie"])
        session = wk.cookie_from(hdrs, "kefu_portal")
        self.assertTrue(session)
        # Used once: no more.
        st, _, _ = site.get(link)
        self.assertEqual(st, 404)
        st, _, _ = site.post_urlencoded({"form_token": wk.hidden(html)}, path=link)
        self.assertEqual(st, 404)

        cookie = {"Cookie": "kefu_portal=" + session}
        st, _, html = site.get("/support/requests", headers=cookie)
        self.assertEqual(st, 200)
        self.assertIn("Via the form", html)
        self.assertIn("Via the phone", html)
        self.assertNotIn("Someone else", html)
        st, _, html = site.get("/support/requests/%d" % t["id"], headers=cookie)
        self.assertEqual(st, 200)
        self.assertIn("called", html)
        # Reply through the session, with its own form token.
        st, _, raw = site.post_urlencoded({"form_token": wk.hidden(html), "text": "via session"},
                                          path="/support/requests/%d/reply" % t["id"],
                                          headers=cookie)
        self.assertEqual(st, 303, raw[:300])
        # The link's page token is no good with the session (bound to another secret).
        link_tok = wk.hidden(site.get(path_web)[2])
        st, _, _ = site.post_urlencoded({"form_token": link_tok, "text": "x"},
                                        path="/support/requests/%d/reply" % tid_web,
                                        headers=cookie)
        self.assertEqual(st, 403)
        # Someone else's ticket, no session, a bad session: 404.
        self.assertEqual(site.get("/support/requests/%d" % tid_other, headers=cookie)[0], 404)
        self.assertEqual(site.get("/support/requests/%d" % tid_web)[0], 404)
        self.assertEqual(site.get("/support/requests/%d" % tid_web,
                                  headers={"Cookie": "kefu_portal=" + "A" * 43})[0], 404)
        # Sign out: the cookie stops working.
        st, _, html = site.get("/support/requests", headers=cookie)
        st, hdrs, _ = site.post_urlencoded({"form_token": wk.hidden(html)},
                                           path="/support/signout", headers=cookie)
        self.assertEqual(st, 303)
        st, _, html = site.get("/support/requests", headers=cookie)
        self.assertIn('action="/support/signin"', html)

    def test_sign_in_link_expires(self):
        site = self.site
        email = "late-%s@example.org" % secrets.token_hex(3)
        self.new_request(email=email)
        tok = wk.hidden(site.get("/support/requests")[2])
        site.post_urlencoded({"form_token": tok, "email": email}, path="/support/signin")
        url = site.outbox("kind = 'signin' AND target = '%s'" % email)[-1]["payload"]["signin_url"]
        link = url[len(wk.BASE_URL):]
        self.assertEqual(site.get(link)[0], 200)
        self.assertEqual(site.db.scalar(
            "SELECT TIMESTAMPDIFF(SECOND, created_at, expires_at) FROM portal_magic "
            "WHERE email = '%s'" % email), "900")
        site.db.query("UPDATE portal_magic SET expires_at = NOW(6) - INTERVAL 1 SECOND "
                      "WHERE email = '%s'" % email)
        self.assertEqual(site.get(link)[0], 404)


if __name__ == "__main__":
    kt.main(need_db=True)
