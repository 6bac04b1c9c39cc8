"""The web form channel: POST /api/v1/public/requests in all three encodings
(JSON, urlencoded, multipart with attachments), the HTML form posted the way
a browser without JavaScript does, the acknowledgement in the outbox with
the portal link, identity unification with the customer's other tickets,
CORS, form tokens (forged -> 403, expired -> 403, too fast -> rejected),
the honeypot, oversize attachments (413, nothing stored), rate limits (429
with a friendly page, nothing created), languages and catalogues, and the
security headers of every page.
"""

import json
import os
import re
import secrets
import time
import unittest

import kefutest as kt
import webform_kit as wk

WEB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "server", "web")


class WebformTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = wk.Site(cls.addClassCleanup)

    @classmethod
    def tearDownClass(cls):
        assert cls.site.stop() == 0, cls.site.k.tail()

    # -- the JSON endpoint, three encodings

    def check_created(self, st, j, email, category="general", files=0):
        site = self.site
        self.assertEqual(st, 201, j)
        self.assertRegex(j["number"], r"^KF-\d{6}$")
        tid = int(j["number"][3:])
        path = wk.portal_path(j["portal_url"])
        row = site.db.query("SELECT t.channel, t.queue_id, t.status, c.name, ci.value "
                            "FROM ticket t JOIN customer c ON c.id = t.customer_id "
                            "JOIN customer_identity ci ON ci.customer_id = c.id AND ci.kind = 'email' "
                            "WHERE t.id = %d" % tid)[0]
        self.assertEqual(row[0], "web")
        self.assertEqual(int(row[1]), site.queue[category])
        self.assertEqual(row[2], "new")
        self.assertEqual(row[4], email.lower())
        # The acknowledgement: for the e-mail channel, to the customer, with the portal link.
        acks = site.outbox("ticket_id = %d AND kind = 'ack'" % tid)
        self.assertEqual(len(acks), 1, acks)
        ack = acks[0]
        self.assertEqual(ack["channel"], "email")
        self.assertEqual(ack["target"], email.lower())
        self.assertEqual(ack["payload"]["portal_url"], j["portal_url"])
        self.assertEqual(ack["payload"]["number"], j["number"])
        self.assertEqual(ack["payload"]["attachments"], files)
        # The link opens the ticket.
        st, _, html = site.get(path)
        self.assertEqual(st, 200, html[:500])
        self.assertIn(j["number"], html)
        return tid

    def test_json(self):
        f = self.site.fields(category="billing")
        st, _, j = self.site.post_json(f)
        tid = self.check_created(st, j, f["email"], "billing")
        text = self.site.db.scalar("SELECT REPLACE(body_text, CHAR(10), '|') FROM message "
                                   "WHERE ticket_id = %d" % tid)
        self.assertEqual(text, "It smokes.|What now?")

    def test_urlencoded(self):
        f = self.site.fields(subject="你好，打印机坏了", lang="zh-CN")
        st, hdrs, raw = self.site.post_urlencoded(f)
        j = json.loads(raw)
        tid = self.check_created(st, j, f["email"])
        self.assertEqual(self.site.db.scalar("SELECT subject FROM ticket WHERE id = %d" % tid),
                         "你好，打印机坏了")
        ack = self.site.outbox("ticket_id = %d" % tid)[0]
        self.assertEqual(ack["payload"]["locale"], "zh-CN")

    def test_multipart_with_attachments(self):
        f = self.site.fields()
        st, _, raw = self.site.post_multipart(
            f, [("attachments", "screen shot.png", wk.PNG),
                ("attachments", "../../etc/notes.txt", "第一行\n".encode())])
        j = json.loads(raw)
        tid = self.check_created(st, j, f["email"], files=2)
        rows = self.site.db.query("SELECT filename, content_type, size FROM attachment "
                                  "WHERE ticket_id = %d ORDER BY id" % tid)
        self.assertEqual([r[0] for r in rows], ["screen shot.png", "notes.txt"])
        self.assertEqual(rows[0][1], "image/png")  # sniffed from the bytes
        self.assertTrue(rows[1][1].startswith("text/plain"))

    def test_json_base64_attachment(self):
        import base64
        f = self.site.fields(attachments=[{"filename": "a.png",
                                           "content_base64": base64.b64encode(wk.PNG).decode()}])
        st, _, j = self.site.post_json(f)
        tid = self.check_created(st, j, f["email"], files=1)
        self.assertEqual(self.site.db.scalar("SELECT content_type FROM attachment "
                                             "WHERE ticket_id = %d" % tid), "image/png")

    def test_same_customer_as_other_channels(self):
        email = "Unified-%s@Example.org" % secrets.token_hex(3)
        st, _, t = self.site.api("POST", "/api/v1/tickets", {
            "subject": "By mail earlier", "text": "x", "customer": {"email": email.lower()}})
        self.assertEqual(st, 201, t)
        st, _, j = self.site.post_json(self.site.fields(email=email))
        self.assertEqual(st, 201, j)
        a = self.site.db.scalar("SELECT customer_id FROM ticket WHERE id = %d" % t["id"])
        b = self.site.db.scalar("SELECT customer_id FROM ticket WHERE id = %d" % int(j["number"][3:]))
        self.assertEqual(a, b)

    def test_idempotency_key(self):
        f = self.site.fields()
        key = "retry-" + secrets.token_hex(4)
        st1, _, j1 = self.site.post_json(f, headers={"Idempotency-Key": key})
        st2, _, j2 = self.site.post_json(f, headers={"Idempotency-Key": key})
        self.assertEqual((st1, st2), (201, 200), (j1, j2))
        self.assertEqual(j1["number"], j2["number"])
        self.assertTrue(j2["duplicate"])
        self.assertEqual(len(self.site.outbox("ticket_id = %d" % int(j1["number"][3:]))), 1)

    def test_validation(self):
        before = self.site.counts()
        st, _, j = self.site.post_json(self.site.fields(
            name="", email="not-an-address", subject="x" * 81, category="nope", description=" "))
        self.assertEqual(st, 422, j)
        fields = {e["field"] for e in j["errors"]}
        self.assertEqual(fields, {"name", "email", "subject", "category", "description"})
        st, _, j = self.site.post_json(dict(self.site.fields(), extra="x"))
        self.assertEqual(st, 422, j)
        self.assertEqual(j["errors"][0]["field"], "extra")
        st, _, j = self.site.post_json(dict(self.site.fields(), name=5))
        self.assertEqual(st, 422, j)
        st, _, raw = self.site.post_urlencoded({"a": "1"}, headers={"Content-Type": "text/plain"})
        self.assertEqual(st, 415, raw)
        st, _, j = self.site.request("POST", "/api/v1/public/requests", body=b"{bad json",
                                     headers={"Content-Type": "application/json"})
        self.assertEqual(st, 400, j)
        st, _, raw = self.site.post_urlencoded({"name": "a"})
        self.assertEqual(st, 403, raw)  # no form token
        self.assertEqual(self.site.counts(), before)

    # -- form tokens (CSRF), honeypot, minimum fill time

    def test_forged_missing_and_expired_tokens(self):
        site = self.site
        before = site.counts()
        good = site.form_token()
        issued, nonce, mac = good.split(".")
        forged = [
            None, "", "x", "%s.%s.%s" % (issued, nonce, mac[:-1] + ("A" if mac[-1] != "A" else "B")),
            "%d.%s.%s" % (int(issued) + 1, nonce, mac),
            site.mint(purpose="signin"),            # a token of another form
        ]
        for tok in forged:
            st, _, j = site.post_json(site.fields(form_token=tok))
            self.assertEqual(st, 403, (tok, j))
            self.assertEqual(j["type"], "/problems/bad-form-token")
            # The HTML form: a 403 page.
            f = site.fields(form_token=tok)
            st, hdrs, raw = site.post_urlencoded(f, path="/support/new")
            self.assertEqual(st, 403, (tok, raw[:300]))
            self.assertTrue(hdrs["content-type"].startswith("text/html"))
        old = site.mint(issued=time.time() - 25 * 3600)
        st, _, j = site.post_json(site.fields(form_token=old))
        self.assertEqual(st, 403, j)
        self.assertEqual(j["type"], "/problems/form-token-expired")
        # An expired page form comes back filled in, with a fresh token and a notice.
        st, _, raw = site.post_urlencoded(site.fields(form_token=old, subject="Keep me"),
                                          path="/support/new")
        html = raw.decode()
        self.assertEqual(st, 403)
        self.assertIn('value="Keep me"', html)
        self.assertNotEqual(wk.hidden(html), old)
        self.assertEqual(site.counts(), before)

    def test_honeypot(self):
        before = self.site.counts()
        st, _, j = self.site.post_json(self.site.fields(website="http://spam.example"))
        self.assertEqual(st, 422, j)
        self.assertEqual(j["type"], "/problems/rejected")
        st, hdrs, raw = self.site.post_multipart(self.site.fields(website="x"), path="/support/new")
        self.assertEqual(st, 400, raw[:300])
        self.assertIn(b"could not be accepted", raw)
        self.assertEqual(self.site.counts(), before)

    # -- attachments over the limits

    def test_oversize_attachments(self):
        site = self.site
        before = site.counts()
        big = os.urandom(102401)
        st, _, raw = site.post_multipart(site.fields(), [("attachments", "big.bin", big)])
        self.assertEqual(st, 413, raw[:300])
        j = json.loads(raw)
        self.assertEqual(j["type"], "/problems/payload-too-large")
        self.assertIn("100 KB", j["detail"])
        st, _, raw = site.post_multipart(site.fields(), [("attachments", "%d.txt" % i, b"x")
                                                         for i in range(3)])
        self.assertEqual(st, 413, raw[:300])
        import base64
        st, _, j = site.post_json(site.fields(attachments=[
            {"filename": "big.bin", "content_base64": base64.b64encode(big).decode()}]))
        self.assertEqual(st, 413, j)
        # The page form: 413 and the form again, saying why, next to the field.
        st, hdrs, raw = site.post_multipart(site.fields(subject="Big file"),
                                            [("attachments", "big.bin", big)], path="/support/new")
        html = raw.decode()
        self.assertEqual(st, 413, html[:300])
        self.assertIn('id="f-attachments-error" aria-live="polite">Each file may be at most 100 KB',
                      html)
        self.assertIn('value="Big file"', html)
        self.assertEqual(site.counts(), before)

    # -- the page form, as a browser without JavaScript posts it

    def test_page_form_without_javascript(self):
        site = self.site
        st, hdrs, html = site.get("/support/new", headers={"Accept-Language": "en"})
        self.assertEqual(st, 200)
        tok = wk.hidden(html)
        email = "nojs-%s@example.org" % secrets.token_hex(3)
        f = {"form_token": tok, "lang": "en", "name": "No Script", "email": email,
             "category": "billing", "subject": "Plain HTML", "description": "Posted", "website": ""}
        st, hdrs, raw = site.post_multipart(f, [("attachments", "", b"")], path="/support/new")
        self.assertEqual(st, 303, raw[:500])
        loc = hdrs["location"]
        self.assertRegex(loc, r"^/support/t/[A-Za-z0-9_-]{43}/submitted$")
        st, _, page = site.get(loc)
        self.assertEqual(st, 200)
        number = re.search(r'id="ticket-number">(KF-\d{6})<', page).group(1)
        self.assertIn('href="%s"' % loc[:-len("/submitted")], page)
        tid = int(number[3:])
        self.assertEqual(site.db.scalar("SELECT COUNT(*) FROM attachment WHERE ticket_id = %d" % tid),
                         "0")  # the empty file input is no attachment
        # The same form posted twice (a double click) is one ticket.
        st, hdrs2, _ = site.post_multipart(f, path="/support/new")
        self.assertEqual(st, 303)
        self.assertEqual(site.db.scalar("SELECT COUNT(*) FROM ticket t JOIN customer_identity ci "
                                        "ON ci.customer_id = t.customer_id WHERE ci.value = '%s'"
                                        % email), "1")
        # Errors come back next to their fields, values kept, all escaped.
        f = {"form_token": wk.hidden(html), "lang": "en", "name": "<b>Bold</b>", "email": "",
             "category": "", "subject": "", "description": ""}
        st, _, raw = site.post_urlencoded(f, path="/support/new")
        page = raw.decode()
        self.assertEqual(st, 422)
        self.assertIn('<p class="field-error" id="f-email-error" aria-live="polite">Please fill in '
                      'this field.</p>', page)
        self.assertIn('aria-invalid="true"', page)
        self.assertIn('value="&lt;b&gt;Bold&lt;/b&gt;"', page)
        self.assertNotIn("<b>Bold</b>", page)
        self.assertIn('role="alert"', page)

    def test_too_fast(self):
        site = wk.Site(self.addCleanup, env={"KEFU_WEBFORM_MIN_FILL": "5"})
        before = site.counts()
        st, _, j = site.post_json(site.fields(form_token=site.mint()))
        self.assertEqual(st, 422, j)
        self.assertEqual(j["type"], "/problems/rejected")
        st, _, raw = site.post_urlencoded(site.fields(form_token=site.mint()), path="/support/new")
        self.assertEqual(st, 422)
        self.assertIn(b"That was very quick", raw)
        self.assertEqual(site.counts(), before)
        # A form shown ten seconds ago is fine.
        st, _, j = site.post_json(site.fields(form_token=site.mint(issued=time.time() - 10)))
        self.assertEqual(st, 201, j)
        self.assertEqual(site.stop(), 0, site.k.tail())

    # -- rate limits

    def test_rate_limits(self):
        # Every attempt counts, refused ones too: 2 + 1 refused + 1 = 4 from this address.
        site = wk.Site(self.addCleanup, env={"KEFU_WEBFORM_RATE_IP": "4",
                                             "KEFU_WEBFORM_RATE_EMAIL": "2"})
        email = "busy-%s@example.org" % secrets.token_hex(3)
        for _ in range(2):
            st, _, j = site.post_json(site.fields(email=email))
            self.assertEqual(st, 201, j)
        before = site.counts()
        st, hdrs, j = site.post_json(site.fields(email=email.upper()))
        self.assertEqual(st, 429, j)
        self.assertGreater(int(hdrs["retry-after"]), 0)
        self.assertEqual(site.counts(), before)
        # Another address: allowed once more, then this client address is over its limit.
        st, _, j = site.post_json(site.fields())
        self.assertEqual(st, 201, j)
        before = site.counts()
        st, hdrs, raw = site.post_urlencoded(site.fields(), path="/support/new")
        self.assertEqual(st, 429)
        self.assertTrue(hdrs["content-type"].startswith("text/html"))
        self.assertIn(b"Please wait a moment", raw)
        self.assertIn("retry-after", hdrs)
        self.assertEqual(site.counts(), before)
        self.assertEqual(site.stop(), 0, site.k.tail())

    # -- CORS

    def test_cors(self):
        site = self.site
        st, hdrs, _ = site.request("OPTIONS", "/api/v1/public/requests", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
        self.assertEqual(st, 204)
        self.assertEqual(hdrs["access-control-allow-origin"], "https://shop.example")
        self.assertIn("POST", hdrs["access-control-allow-methods"])
        st, hdrs, j = site.post_json(site.fields(), headers={"Origin": "https://shop.example"})
        self.assertEqual(st, 201, j)
        self.assertEqual(hdrs["access-control-allow-origin"], "https://shop.example")
        before = site.counts()
        st, hdrs, j = site.post_json(site.fields(), headers={"Origin": "https://evil.example"})
        self.assertEqual(st, 403, j)
        self.assertNotIn("access-control-allow-origin", hdrs)
        st, _, _ = site.request("OPTIONS", "/api/v1/public/form",
                                headers={"Origin": "https://evil.example"})
        self.assertEqual(st, 403)
        st, hdrs, raw = site.post_urlencoded(site.fields(), path="/support/new",
                                             headers={"Origin": "https://evil.example"})
        self.assertEqual(st, 403)
        self.assertEqual(site.counts(), before)
        st, hdrs, raw = site.request("GET", "/api/v1/public/kb/suggest?q=printer",
                                     headers={"Origin": "https://shop.example"})
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(raw), {"q": "printer", "items": []})
        self.assertEqual(hdrs["access-control-allow-origin"], "https://shop.example")

    # -- languages, catalogues, headers

    def test_languages(self):
        site = self.site
        st, hdrs, html = site.get("/support/new", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        self.assertEqual(st, 200)
        self.assertEqual(hdrs["content-language"], "zh-CN")
        self.assertIn('<html lang="zh-CN">', html)
        self.assertIn("联系客服", html)
        st, hdrs, html = site.get("/support/new?lang=en", headers={"Accept-Language": "zh-CN"})
        self.assertEqual(hdrs["content-language"], "en")
        self.assertIn("Contact support", html)
        self.assertIn("kefu_lang=en", hdrs.get("set-cookie", ""))
        st, hdrs, html = site.get("/support/new", headers={"Accept-Language": "zh-CN",
                                                           "Cookie": "kefu_lang=en"})
        self.assertEqual(hdrs["content-language"], "en")
        st, hdrs, html = site.get("/support/new?lang=%3Cscript%3E")
        self.assertEqual(hdrs["content-language"], "en")
        self.assertNotIn("<script>", html)
        j = site.api("GET", "/api/v1/public/form?lang=zh-CN")[2]
        self.assertEqual([c["label"] for c in j["categories"]], ["一般咨询", "账单与付款"])

    def test_catalogues_complete_and_templates_text_free(self):
        cats = {}
        for lang in ("en", "zh-CN"):
            with open(os.path.join(WEB, "i18n", lang + ".json"), encoding="utf-8") as f:
                cats[lang] = json.load(f)
        self.assertEqual(set(cats["en"]), set(cats["zh-CN"]))
        for key, value in cats["en"].items():
            self.assertEqual(re.findall(r"\{(\w+)\}", value),
                             re.findall(r"\{(\w+)\}", cats["zh-CN"][key]), key)
        tdir = os.path.join(WEB, "support")
        for name in os.listdir(tdir):
            if not name.endswith(".html"):
                continue
            with open(os.path.join(tdir, name), encoding="utf-8") as f:
                text = f.read()
            for key in re.findall(r"\{\{t\.([\w.-]+)\}\}", text):
                self.assertIn(key, cats["en"], "%s uses a missing catalogue key %s" % (name, key))
            # Every string a person reads comes from the catalogue: outside tags and
            # {{...}}, no letters remain.
            bare = re.sub(r"\{\{[^}]*\}\}", "", text)
            bare = re.sub(r"<[^>]*>", "", bare)
            self.assertIsNone(re.search(r"[^\W\d_]", bare), "%s has text outside the catalogue: %r"
                              % (name, re.search(r".{0,20}[^\W\d_].{0,20}", bare)))
            self.assertNotRegex(text, r"<script(?![^>]*\bsrc=)", name + " has an inline script")
            self.assertNotRegex(text, r"\sstyle=", name + " has an inline style")
            self.assertNotRegex(text, r"\son[a-z]+=", name + " has an inline event handler")

    def test_security_headers(self):
        site = self.site
        st, hdrs, html = site.get("/support/new")
        csp = hdrs["content-security-policy"]
        self.assertIn("default-src 'none'", csp)
        self.assertIn("script-src 'self'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertIn("frame-ancestors 'self' https://shop.example", csp)
        self.assertEqual(hdrs["x-content-type-options"], "nosniff")
        self.assertEqual(hdrs["referrer-policy"], "same-origin")
        self.assertNotRegex(html, r"<script(?![^>]*\bsrc=)")
        st, _, j = site.post_json(site.fields())
        st, hdrs, _ = site.get(wk.portal_path(j["portal_url"]))
        self.assertIn("frame-ancestors 'none'", hdrs["content-security-policy"])
        for path, ctype in (("/support/static/portal.css", "text/css"),
                            ("/support/static/form.js", "text/javascript"),
                            ("/support/embed.js", "text/javascript")):
            st, hdrs, _ = site.request("GET", path)
            self.assertEqual(st, 200, path)
            self.assertTrue(hdrs["content-type"].startswith(ctype), hdrs)
            self.assertEqual(hdrs["x-content-type-options"], "nosniff")
        st, _, _ = site.request("GET", "/support/static/..%2F..%2Fopenapi.json")
        self.assertEqual(st, 404)
        st, _, _ = site.request("GET", "/support/static/new.html")
        self.assertEqual(st, 404)


if __name__ == "__main__":
    kt.main(need_db=True)
