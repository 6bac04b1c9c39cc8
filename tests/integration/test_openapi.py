"""The OpenAPI document is served, is valid JSON of version 3.1, and lists every
route of the live route table (`kefud routes`) with each of its methods."""

import json
import os
import re
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402


def routes():
    out = subprocess.run([kefutest.kefud_path(), "routes"], capture_output=True, text=True,
                         env=kefutest.clean_env({}), timeout=30, check=True).stdout
    for line in out.splitlines():
        methods, pattern, role, _limit = line.split()
        yield methods.split(","), pattern, role


class OpenAPI(unittest.TestCase):
    def test_document_covers_every_route(self):
        db = kefutest.fresh_db(self.addCleanup)
        k = kefutest.Kefud(db, register=self.addCleanup).start()
        status, hdrs, body = k.request("GET", "/api/v1/openapi.json")
        self.assertEqual(status, 200, body[:300])
        self.assertTrue(hdrs.get("content-type", "").startswith("application/json"))
        doc = json.loads(body)
        self.assertTrue(doc["openapi"].startswith("3.1"), doc.get("openapi"))
        self.assertIn("title", doc["info"])
        paths = doc["paths"]
        missing = []
        n = 0
        for methods, pattern, role in routes():
            n += 1
            item = paths.get(pattern)
            for m in methods:
                if m == "HEAD":
                    continue
                if item is None or m.lower() not in item:
                    missing.append("%s %s" % (m, pattern))
                    continue
                op = item[m.lower()]
                self.assertTrue(op.get("summary"), "%s %s has no summary" % (m, pattern))
                # Protected operations say how to authenticate.
                if role != "public":
                    self.assertTrue(op.get("security") or doc.get("security"),
                                    "%s %s (%s) declares no security" % (m, pattern, role))
        self.assertGreater(n, 3)
        self.assertEqual(missing, [], "routes missing from openapi.json")
        # And nothing documented that the server does not serve.
        served = {p for _, p, _ in routes()}
        extra = sorted(p for p in paths if p not in served)
        self.assertEqual(extra, [], "paths in openapi.json that no route serves")
        # Parameters named in a path template are declared.
        for p, item in paths.items():
            for name in re.findall(r"{(\w+)}", p):
                declared = {x["name"] for x in item.get("parameters", [])}
                for m, op in item.items():
                    if m == "parameters":
                        continue
                    declared |= {x.get("name") for x in op.get("parameters", [])}
                self.assertIn(name, declared, "path parameter {%s} of %s not declared" % (name, p))
        # Every $ref points at something in the document.
        def refs(o):
            if isinstance(o, dict):
                for key, v in o.items():
                    if key == "$ref":
                        yield v
                    else:
                        yield from refs(v)
            elif isinstance(o, list):
                for v in o:
                    yield from refs(v)
        for r in set(refs(doc)):
            cur = doc
            for part in r.lstrip("#/").split("/"):
                cur = cur.get(part) if isinstance(cur, dict) else None
            self.assertIsNotNone(cur, "unresolved $ref " + r)
        self.assertEqual(k.stop(), 0, k.tail())


if __name__ == "__main__":
    kefutest.main(need_db=True)
