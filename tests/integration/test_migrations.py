"""`kefud migrate`: concurrent starters, idempotence, checksum verification, charset."""

import hashlib
import os
import re
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest  # noqa: E402


def migrate_async(db):
    """Start `kefud migrate` against db; (Popen, stderr path, stdout path)."""
    tmp = kefutest.mktemp_dir("kefu-mig-")
    out_p, err_p = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        p = kefutest.spawn([kefutest.kefud_path(), "migrate"], env=kefutest.clean_env(db.kefud_env()),
                           stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return p, out_p, err_p


def finish(p, out_p, err_p, timeout=kefutest.CMD_TIMEOUT):
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        kefutest.reap(p)
        rc = "timeout after %ss" % timeout
    kefutest.reap(p)
    with open(out_p, errors="replace") as f:
        out = f.read()
    with open(err_p, errors="replace") as f:
        err = f.read()
    return subprocess.CompletedProcess(p.args, rc, out, err)


class Migrations(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.versions = kefutest.migration_versions()
        cls.db = kefutest.fresh_db(cls.addClassCleanup)
        # Two starters at the same time on an empty database: GET_LOCK must serialise them.
        a = migrate_async(cls.db)
        b = migrate_async(cls.db)
        cls.first = [finish(*a), finish(*b)]

    def applied(self, db=None):
        rows = (db or self.db).query("SELECT version, checksum FROM schema_migrations ORDER BY version")
        return [(int(v), c) for v, c in rows]

    def test_1_concurrent_migrate_both_exit_0(self):
        for cp in self.first:
            self.assertEqual(cp.returncode, 0, kefutest.describe(cp))

    def test_2_each_version_once(self):
        self.assertGreaterEqual(len(self.versions), 1, "no sql/*.sql migrations in the source tree")
        applied = self.applied()
        versions = [v for v, _ in applied]
        dups = self.db.query("SELECT version, COUNT(*) FROM schema_migrations GROUP BY version HAVING COUNT(*) > 1")
        self.assertEqual(dups, [], "versions recorded more than once")
        self.assertEqual(len(versions), len(kefutest.sql_files()), applied)
        self.assertEqual(sorted(versions), sorted(self.versions), applied)

    def test_3_checksums_are_sha256_of_files(self):
        for v, checksum in self.applied():
            self.assertRegex(checksum, r"^[0-9a-f]{64}$", "version %d" % v)
            with open(self.versions[v], "rb") as f:
                want = hashlib.sha256(f.read()).hexdigest()
            self.assertEqual(checksum, want, "schema_migrations.checksum of version %d is not "
                                             "sha256(%s)" % (v, self.versions[v]))

    def test_4_rerun_is_noop(self):
        before = self.db.query("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
        cp = kefutest.run_kefud(["migrate"], env=self.db.kefud_env())
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        after = self.db.query("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
        self.assertEqual(before, after, "a second migrate changed schema_migrations")

    def test_5_tables_are_utf8mb4(self):
        rows = kefutest.mariadb_sql(
            self.db.socket,
            "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = '%s' AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME" % self.db.name)
        names = [r[0] for r in rows]
        self.assertIn("schema_migrations", names)
        bad = [r for r in rows if not r[1].startswith("utf8mb4")]
        self.assertEqual(bad, [], "tables not in a utf8mb4 collation")

    def test_5b_utf8mb4_without_relying_on_database_default(self):
        # Beyond the letter of INTERFACE.md: the migrations must declare utf8mb4 themselves, so
        # tables are right even in a database created with another default (Chinese text!).
        db = kefutest.fresh_db(self.addCleanup, charset="latin1 COLLATE latin1_swedish_ci")
        cp = kefutest.run_kefud(["migrate"], env=db.kefud_env())
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        rows = db.query("SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME")
        bad = [r for r in rows if not r[1].startswith("utf8mb4")]
        self.assertEqual(bad, [], "tables that inherited the database's latin1 default")

    def test_6_checksum_mismatch_fails(self):
        # A database of its own so the other checks do not depend on test order.
        self.assertIn(1, self.versions, "the tamper test needs a migration with version 1")
        db = kefutest.fresh_db(self.addCleanup)
        cp = kefutest.run_kefud(["migrate"], env=db.kefud_env())
        self.assertEqual(cp.returncode, 0, kefutest.describe(cp))
        db.query("UPDATE schema_migrations SET checksum = REPEAT('0', 64) WHERE version = 1")
        self.assertEqual(db.scalar("SELECT checksum FROM schema_migrations WHERE version = 1"), "0" * 64)
        cp = kefutest.run_kefud(["migrate"], env=db.kefud_env())
        # non-zero, but a normal exit: a crash (negative = signal) is not an error report
        self.assertGreater(cp.returncode, 0, kefutest.describe(cp))
        self.assertTrue(re.search(r"checksum mismatch", cp.stderr), kefutest.describe(cp))


if __name__ == "__main__":
    kefutest.main(need_db=True)
