"""Configuration: --help documents every key; bad configuration exits 2 naming the key."""

import os
import re
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402

BAD_CONFIG_EXIT = 2


class Config(unittest.TestCase):
    def tmpdir(self):
        return kefutest.mktemp_dir("kefu-cfg-", self.addCleanup)

    def check_config(self, env=None, args=()):
        return kefutest.run_kefud(list(args) + ["check-config"], env=env, timeout=60)

    def assertBadConfig(self, cp, *needles):
        self.assertEqual(cp.returncode, BAD_CONFIG_EXIT, kefutest.describe(cp))
        for n in needles:
            self.assertIn(n.lower(), cp.stderr.lower(), "stderr does not name %r\n%s" % (n, kefutest.describe(cp)))

    # -- documentation

    def test_help_lists_every_key(self):
        cp = kefutest.run_kefud(["--help"], timeout=60)
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        text = cp.stdout + cp.stderr
        missing = [k for k in kefutest.CONFIG_KEYS if not re.search(r"(?<![A-Za-z0-9_])%s(?![A-Za-z0-9_])" % k, text)]
        self.assertEqual(missing, [], "keys missing from kefud --help:\n" + text)
        self.assertRegex(text, r"db_password_file|<key>_file|_file", "secret *_file form not documented")

    def test_help_shows_defaults(self):
        cp = kefutest.run_kefud(["--help"], timeout=60)
        text = cp.stdout + cp.stderr
        for default in ("127.0.0.1:8080", "10485760", "16384", "1024", "3306"):
            self.assertIn(default, text, "default %s not shown by --help" % default)

    def test_version(self):
        cp = kefutest.run_kefud(["--version"], timeout=60)
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        self.assertRegex(cp.stdout + cp.stderr, r"\d+\.\d+\.\d+")

    # -- check-config

    def test_check_config_defaults_ok(self):
        cp = self.check_config()
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))

    def test_io_threads_zero(self):
        self.assertBadConfig(self.check_config({"KEFU_IO_THREADS": "0"}), "io_threads")

    def test_listen_nonsense(self):
        self.assertBadConfig(self.check_config({"KEFU_LISTEN": "nonsense"}), "listen")

    def test_listen_bad_port(self):
        self.assertBadConfig(self.check_config({"KEFU_LISTEN": "127.0.0.1:99999"}), "listen")

    def test_not_a_number(self):
        self.assertBadConfig(self.check_config({"KEFU_DB_WORKERS": "lots"}), "db_workers")

    def test_unknown_key_in_file(self):
        d = self.tmpdir()
        path = os.path.join(d, "kefu.conf")
        with open(path, "w") as f:
            f.write("# kefu test configuration\n"
                    "listen = 127.0.0.1:0\n"
                    "\n"
                    "bogus_key_xyz = 1\n"
                    "io_threads = 1\n")
        cp = self.check_config(args=["--config", path])
        self.assertBadConfig(cp, "bogus_key_xyz", "%s:4" % path)

    def test_unknown_key_in_file_via_kefu_config(self):
        d = self.tmpdir()
        path = os.path.join(d, "kefu.conf")
        with open(path, "w") as f:
            f.write("bogus_key_abc = 1\n")
        cp = self.check_config(env={"KEFU_CONFIG": path})
        self.assertBadConfig(cp, "bogus_key_abc", "%s:1" % path)

    def test_bad_value_in_file(self):
        d = self.tmpdir()
        path = os.path.join(d, "kefu.conf")
        with open(path, "w") as f:
            f.write("# comment\nio_threads = 0\n")
        cp = self.check_config(args=["--config", path])
        self.assertBadConfig(cp, "io_threads", "%s:2" % path)

    def test_good_file_ok(self):
        d = self.tmpdir()
        path = os.path.join(d, "kefu.conf")
        with open(path, "w") as f:
            f.write("# comment\n"
                    "\n"
                    "listen = 127.0.0.1:0\n"
                    "  io_threads   =   3\n"
                    "log_level = debug\n")
        cp = self.check_config(args=["--config", path])
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))

    def test_missing_password_file(self):
        d = self.tmpdir()
        cp = self.check_config({"KEFU_DB_PASSWORD_FILE": os.path.join(d, "does-not-exist")})
        self.assertBadConfig(cp, "db_password")

    def test_serve_with_bad_config_exits_2(self):
        cp = kefutest.run_kefud(["serve"], env={"KEFU_IO_THREADS": "0", "KEFU_LISTEN": "127.0.0.1:0"}, timeout=60)
        self.assertBadConfig(cp, "io_threads")


if __name__ == "__main__":
    kefutest.main(need_db=False)
