"""HTTP basics of kefud: health, readiness, metrics, errors, limits, request ids."""

import os
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402

PROBLEM_CT = "application/problem+json"

METRIC_FAMILIES = [
    "kefu_http_requests_total",
    "kefu_http_request_duration_seconds",
    "kefu_worker_queue_depth",
    "kefu_db_workers_busy",
    "kefu_db_workers_total",
    "kefu_http_inflight",
    "kefu_job_runs_total",
    "kefu_job_failures_total",
]


def media_type(headers):
    return headers.get("content-type", "").split(";")[0].strip().lower()


class HttpBasics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.db = kefutest.fresh_db(cls.addClassCleanup)
        cls.k = kefutest.Kefud(cls.db, register=cls.addClassCleanup).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.k.stop()
        if rc != 0:
            raise AssertionError("shared kefud exited with %s after SIGTERM (ASan leak or crash?)\n%s"
                                 % (rc, cls.k.tail()))

    def assertProblem(self, status, headers, body, want_status, want_code):
        self.assertEqual(status, want_status, body[:500])
        self.assertEqual(media_type(headers), PROBLEM_CT, "content-type: %r" % headers.get("content-type"))
        doc = kefutest.parse_json(body)
        for key in ("type", "title", "status", "detail"):
            self.assertIn(key, doc, "problem document lacks %r: %r" % (key, doc))
        self.assertEqual(doc["status"], want_status, doc)
        self.assertEqual(doc["type"], "/problems/" + want_code, doc)
        self.assertIsInstance(doc["title"], str)
        return doc

    # -- health / readiness

    def test_healthz(self):
        status, hdrs, doc = self.k.get_json("/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(media_type(hdrs), "application/json", hdrs)
        self.assertEqual(doc.get("status"), "ok", doc)

    def test_readyz_reports_all_migrations(self):
        n = len(kefutest.sql_files())
        # Migrations run at start; poll in case kefud listens before they finish.
        status, hdrs, body = self.k.wait_status("/readyz", 200, timeout=30)
        self.assertEqual(status, 200, body[:500])
        doc = kefutest.parse_json(body)
        self.assertEqual(doc.get("status"), "ready", doc)
        self.assertEqual(doc.get("migrations"), n,
                         "readyz migrations=%r but sql/ holds %d files" % (doc.get("migrations"), n))

    # -- metrics

    def test_metrics_families(self):
        status, hdrs, body = self.k.request("GET", "/metrics")
        self.assertEqual(status, 200)
        ct = hdrs.get("content-type", "")
        self.assertEqual(media_type(hdrs), "text/plain", ct)
        self.assertIn("version=0.0.4", ct.replace(" ", ""))
        m = kefutest.parse_metrics(body.decode())
        missing = [f for f in METRIC_FAMILIES if not m.has_family(f)
                   and not (f.endswith("_seconds") and m.has_family(f + "_bucket"))]
        self.assertEqual(missing, [], "metric families missing from /metrics:\n" + m.text)
        for suffix in ("_bucket", "_sum", "_count"):
            self.assertTrue(m.has_family("kefu_http_request_duration_seconds" + suffix),
                            "no kefu_http_request_duration_seconds%s samples:\n%s" % (suffix, m.text))
        self.assertGreaterEqual(m.value("kefu_db_workers_total"), 1, m.text)

    def test_metrics_count_healthz(self):
        def count():
            return kefutest.parse_metrics(self.k.request("GET", "/metrics")[2].decode()) \
                .value("kefu_http_requests_total", route="/healthz", status="200") or 0

        before = count()
        for _ in range(3):
            self.assertEqual(self.k.request("GET", "/healthz")[0], 200)
        # The counter may be bumped just after the response is written: poll briefly.
        deadline = time.monotonic() + 10
        after = count()
        while after < before + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
            after = count()
        self.assertGreaterEqual(after, before + 3,
                                'kefu_http_requests_total{route="/healthz",status="200"} went %s -> %s '
                                "after 3 calls" % (before, after))
        m = self.k.metrics()
        self.assertGreaterEqual(m.value("kefu_http_request_duration_seconds_count", route="/healthz") or 0,
                                3, m.text)
        self.assertIsNotNone(m.value("kefu_http_request_duration_seconds_bucket", route="/healthz", le="+Inf"),
                             m.text)

    # -- errors

    def test_unknown_route_404_problem(self):
        status, hdrs, body = self.k.request("GET", "/no/such/route")
        self.assertProblem(status, hdrs, body, 404, "not-found")

    def test_problem_has_instance_and_request_id(self):
        status, hdrs, body = self.k.request("GET", "/no/such/route", headers={"X-Request-Id": "it-problem-1"})
        doc = self.assertProblem(status, hdrs, body, 404, "not-found")
        self.assertEqual(doc.get("instance"), "/no/such/route", doc)
        self.assertEqual(doc.get("request_id"), "it-problem-1", doc)

    def test_wrong_method_405(self):
        status, hdrs, body = self.k.request("POST", "/healthz")
        self.assertProblem(status, hdrs, body, 405, "method-not-allowed")
        allow = [m.strip().upper() for m in hdrs.get("allow", "").split(",")]
        self.assertIn("GET", allow, "Allow header: %r" % hdrs.get("allow"))

    def test_echo_body_over_limit_413(self):
        status, hdrs, body = self.k.request("POST", "/debug/echo", body=b"x" * 2000,
                                            headers={"Content-Type": "application/octet-stream"})
        self.assertProblem(status, hdrs, body, 413, "payload-too-large")
        # and the server is fine afterwards
        self.assertEqual(self.k.request("GET", "/healthz")[0], 200)

    def test_echo_small_body(self):
        status, hdrs, body = self.k.request("POST", "/debug/echo", body=b"0123456789",
                                            headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 200, body[:500])
        self.assertEqual(kefutest.parse_json(body), {"bytes": 10})

    # -- request ids

    def test_request_id_echoed(self):
        for path in ("/healthz", "/no/such/route"):
            status, hdrs, _ = self.k.request("GET", path, headers={"X-Request-Id": "it-rid-0123456789abcdef"})
            self.assertEqual(hdrs.get("x-request-id"), "it-rid-0123456789abcdef", (path, status, hdrs))

    def test_request_id_generated(self):
        ids = set()
        for path in ("/healthz", "/healthz", "/no/such/route"):
            status, hdrs, _ = self.k.request("GET", path)
            rid = hdrs.get("x-request-id", "")
            self.assertTrue(rid.strip(), "no X-Request-Id on %s (%s): %r" % (path, status, hdrs))
            ids.add(rid)
        self.assertEqual(len(ids), 3, "generated request ids are not unique: %r" % ids)

    def test_malformed_query_400(self):
        for path in ("/healthz?x=%zz", "/readyz?a=1&b=%4", "/healthz?n%00=1", "/debug/sleep?ms=%"):
            status, hdrs, body = self.k.request("GET", path)
            doc = self.assertProblem(status, hdrs, body, 400, "bad-query")
            self.assertIn("percent-encoding", doc["detail"])
        # Well-formed encodings are fine, '+' and UTF-8 included.
        status, _, _ = self.k.request("GET", "/healthz?q=a+b&z=%E5%AE%A2")
        self.assertEqual(status, 200)

    # -- robustness

    def test_garbage_request_does_not_crash(self):
        junk = [
            b"GARBAGE\r\n\r\n",
            b"\x00\xff\xfe\x16\x03\x01 nonsense \x7f\r\n\r\n",
            b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"b" * 40000 + b"\r\n\r\n",
            b"GET /heal",  # truncated, then the client goes away
        ]
        for data in junk:
            s = self.k.connect(timeout=10)
            try:
                try:
                    s.sendall(data)
                    s.shutdown(1)
                    while s.recv(65536):
                        pass
                except OSError:
                    pass  # a reset or a timeout is an acceptable reaction to junk
            finally:
                s.close()
            self.assertTrue(self.k.alive(), "kefud died after %r\n%s" % (data[:60], self.k.tail()))
        status, _, _ = self.k.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertTrue(self.k.alive())


class CleanExit(unittest.TestCase):
    def test_sigterm_exits_0(self):
        db = kefutest.fresh_db(self.addCleanup)
        k = kefutest.Kefud(db, register=self.addCleanup).start()
        self.assertEqual(k.request("GET", "/healthz")[0], 200)
        rc = k.stop()
        self.assertEqual(rc, 0, "exit code after SIGTERM\n" + k.tail())
        self.assertRegex(k.log(), r"\bevent=stopped\b", k.tail())

    def test_password_file_trailing_newline(self):
        # config.h: a <key>_file value has its trailing newline stripped.
        db = kefutest.fresh_db(self.addCleanup)
        with open(db.password_file, "w") as f:
            f.write(db.password + "\n")
        k = kefutest.Kefud(db, register=self.addCleanup).start()
        status, _, body = k.wait_status("/readyz", 200, timeout=30)
        self.assertEqual(status, 200, "readyz with a password file ending in a newline: %r\n%s"
                         % (body[:300], k.tail()))
        self.assertEqual(k.stop(), 0, k.tail())


if __name__ == "__main__":
    kefutest.main(need_db=True)
