"""Attachments: multipart upload to a ticket and download, with the type
sniffed from the bytes, chunked storage, SHA-256, safe filenames (Chinese
ones too) in Content-Disposition, limits (413, nothing stored), malformed
multipart (400), and queue scope (404 for tickets an agent may not see).
"""

import hashlib
import os
import unittest
import urllib.parse

import coretest as ct
import kefutest as kt

MAX_BYTES = 1048576
ENV = {"KEFU_ATTACHMENT_MAX_BYTES": str(MAX_BYTES), "KEFU_ATTACHMENT_MAX_COUNT": "3"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(64)


def multipart(parts, boundary="kefu-test-boundary-7MA4YWxkTrZu0gW"):
    """parts: (name, filename or None, content type or None, bytes) or raw header bytes."""
    out = b""
    for p in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        if isinstance(p, bytes):
            out += p
            continue
        name, filename, ctype, data = p
        cd = 'Content-Disposition: form-data; name="%s"' % name
        if filename is not None:
            cd += "; " + filename if filename.startswith("filename*=") else \
                '; filename="%s"' % filename
        out += cd.encode("utf-8") + b"\r\n"
        if ctype:
            out += b"Content-Type: " + ctype.encode() + b"\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return out, "multipart/form-data; boundary=" + boundary


class AttachmentsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = kt.fresh_db(cls.addClassCleanup)
        cls.kefud = kt.Kefud(cls.db, env=ENV, register=cls.addClassCleanup).start()
        db = cls.db
        cls.q1, cls.q2 = ct.make_queue(db), ct.make_queue(db)
        _, l1 = ct.make_agent(db, queues=[cls.q1])
        _, l2 = ct.make_agent(db, queues=[cls.q2])
        cls.agent1, cls.agent2 = ct.token(db, "agent", l1), ct.token(db, "agent", l2)
        cls.sup = ct.token(db, "supervisor")
        cls.ticket = ct.make_ticket(db, cls.q1)

    @classmethod
    def tearDownClass(cls):
        assert cls.kefud.stop() == 0, cls.kefud.tail()

    def upload(self, body_ctype, tok=None, ticket=None):
        body, ctype = body_ctype
        return ct.api(self.kefud, "POST", "/api/v1/tickets/%d/attachments"
                      % (ticket or self.ticket), tok or self.agent1, body=body,
                      headers={"Content-Type": ctype})

    def count(self):
        return (int(self.db.scalar("SELECT COUNT(*) FROM attachment")),
                int(self.db.scalar("SELECT COUNT(*) FROM attachment_chunk")))

    def test_round_trip(self):
        binary = os.urandom(300000) + b"\x00" * 1000 + os.urandom(299000)  # 3 chunks of 256 KiB
        text = "第一行\nsecond line\n".encode("utf-8")
        status, _, j = self.upload(multipart([
            ("file", "报告 2026.bin", "text/plain", binary),
            ("file", "filename*=UTF-8''%E4%B8%AD%E6%96%87%20notes.txt", None, text),
            ("file", "pixel.png", "text/html", PNG),   # the client's type is not trusted
        ]))
        self.assertEqual(status, 201, j)
        items = j["items"]
        self.assertEqual([i["filename"] for i in items], ["报告 2026.bin", "中文 notes.txt",
                                                          "pixel.png"])
        self.assertEqual([i["content_type"] for i in items],
                         ["application/octet-stream", "text/plain; charset=utf-8", "image/png"])
        self.assertEqual([i["size"] for i in items], [len(binary), len(text), len(PNG)])
        self.assertEqual(items[0]["sha256"], hashlib.sha256(binary).hexdigest())
        self.assertEqual(items[0]["ticket_id"], self.ticket)
        self.assertEqual(int(self.db.scalar("SELECT COUNT(*) FROM attachment_chunk "
                                            "WHERE attachment_id = %d" % items[0]["id"])), 3)
        self.assertEqual(int(self.db.scalar(
            "SELECT COUNT(*) FROM event WHERE ticket_id = %d AND kind = 'attachment.added' AND "
            "JSON_VALUE(data, '$.attachment_id') IN (%s)"
            % (self.ticket, ",".join(str(i["id"]) for i in items)))), 3)

        for item, data in zip(items, (binary, text, PNG)):
            status, h, got = self.kefud.request("GET", item["url"], headers={
                "Authorization": "Bearer " + self.agent1})
            self.assertEqual(status, 200)
            self.assertEqual(got, data)
            self.assertEqual(h["content-type"], item["content_type"])
            self.assertEqual(h["x-content-type-options"], "nosniff")
            self.assertEqual(h["etag"], '"%s"' % item["sha256"])
            cd = h["content-disposition"]
            self.assertTrue(cd.startswith("attachment; "), cd)
            star = cd.split("filename*=UTF-8''", 1)[1]
            self.assertEqual(urllib.parse.unquote(star), item["filename"])
            fallback = cd.split('filename="', 1)[1].split('"', 1)[0]
            self.assertTrue(all(32 <= ord(ch) < 127 for ch in fallback), cd)
        # a supervisor may download too
        status, _, _ = self.kefud.request("GET", items[0]["url"],
                                          headers={"Authorization": "Bearer " + self.sup})
        self.assertEqual(status, 200)

    def test_filenames_are_cleaned(self):
        status, _, j = self.upload(multipart([
            ("a", "../../etc/passwd", None, b"x"),
            ("b", "C:\\Users\\me\\evil.exe", None, b"x"),
            ("c", "..", None, b"x"),
        ]))
        self.assertEqual(status, 201, j)
        self.assertEqual([i["filename"] for i in j["items"]], ["passwd", "evil.exe", "attachment"])
        # control characters and a right-to-left override become '_'
        status, _, j = self.upload(multipart([
            ("d", "filename*=UTF-8''bad%01%E2%80%AEgpj.exe", None, b"x")]))
        self.assertEqual(status, 201, j)
        self.assertEqual(j["items"][0]["filename"], "bad__gpj.exe")
        # a raw control character inside the quoted header is malformed
        status, _, j = self.upload(multipart([("e", "evil\x7f.exe", None, b"x")]))
        self.assertEqual(status, 400, j)

    def test_limits_store_nothing(self):
        before = self.count()
        status, h, j = self.upload(multipart([("file", "big.bin", None, b"a" * (MAX_BYTES + 1))]))
        self.assertEqual(status, 413, j)
        self.assertEqual(h["content-type"], "application/problem+json")
        self.assertEqual(j["type"], "/problems/payload-too-large")
        status, _, j = self.upload(multipart([("f%d" % i, "f%d.txt" % i, None, b"x")
                                              for i in range(4)]))
        self.assertEqual(status, 413, j)
        # one good file and one too big: none is stored
        status, _, j = self.upload(multipart([("a", "ok.txt", None, b"ok"),
                                              ("b", "big.bin", None, b"a" * (MAX_BYTES + 1))]))
        self.assertEqual(status, 413, j)
        self.assertEqual(self.count(), before)

    def test_bad_multipart(self):
        before = self.count()
        good, ctype = multipart([("file", "a.txt", None, b"hello")])
        cases = [
            (good[:-8], ctype),                                    # no close delimiter
            (b"preamble\r\n" + good, ctype),                       # preamble
            (good, "multipart/form-data"),                         # no boundary
            (good, "multipart/form-data; boundary=\"a b \""),      # ends with a space
            (good, "multipart/form-data; boundary=" + "x" * 71),   # too long
            (good.replace(b"Content-Disposition", b"Content-Dispositon"), ctype),
            (good.replace(b"form-data;", b"attachment;"), ctype),
            (good.replace(b'name="file"; ', b""), ctype),          # no name
            (multipart([b"Content-Disposition: form-data;\r\n name=\"x\"\r\n\r\nv\r\n"])),
            (multipart([("file", "a.txt", None, b"x\r\n--kefu-test-boundary-7MA4YWxkTrZu0gWX")])),
        ]
        for body, ct_ in cases:
            status, _, j = self.upload((body, ct_))
            self.assertEqual(status, 400, (body[:120], ct_, j))
            self.assertEqual(j["type"], "/problems/bad-multipart", j)
        status, _, j = self.upload((b'{"file": "x"}', "application/json"))
        self.assertEqual(status, 415, j)
        status, _, j = self.upload(multipart([("note", None, None, b"just a field")]))
        self.assertEqual(status, 422, j)
        self.assertEqual({e["field"] for e in j["errors"]}, {"note", "file"})
        status, _, j = self.upload(multipart([("file", "a.txt", None, b"x"),
                                              ("message_id", None, None, b"12x")]))
        self.assertEqual(status, 422, j)
        status, _, j = self.upload(multipart([("file", "a.txt", None, b"x"),
                                              ("message_id", None, None, b"999999")]))
        self.assertEqual(status, 422, j)
        self.assertEqual(self.count(), before)

    def test_scope(self):
        status, _, j = self.upload(multipart([("file", "s.txt", None, b"scoped")]))
        self.assertEqual(status, 201, j)
        url = j["items"][0]["url"]
        # another queue's agent: neither upload nor download, and no hint the ticket exists
        status, _, j = self.upload(multipart([("file", "s.txt", None, b"x")]), tok=self.agent2)
        self.assertEqual(status, 404, j)
        status, _, _ = self.kefud.request("GET", url,
                                          headers={"Authorization": "Bearer " + self.agent2})
        self.assertEqual(status, 404)
        status, _, _ = self.kefud.request("GET", url)
        self.assertEqual(status, 401)
        status, _, _ = self.kefud.request("GET", "/api/v1/attachments/987654321",
                                          headers={"Authorization": "Bearer " + self.sup})
        self.assertEqual(status, 404)
        status, _, j = self.upload(multipart([("file", "s.txt", None, b"x")]), ticket=987654321)
        self.assertEqual(status, 404, j)


if __name__ == "__main__":
    kt.main()
