"""Shared helpers for kefud's black-box integration tests.

The tests drive the real `kefud` binary against a real MariaDB.  They are run
by ctest (see CMakeLists.txt here) but can be run by hand too:

    KEFUD=build/kefud KEFU_SOURCE_DIR=$PWD KEFU_TEST_DB_SOCKET=/run/mysqld/mysqld.sock \
        python3 tests/integration/test_http_basics.py

Environment:
    KEFUD                   path to the kefud binary (required)
    KEFU_SOURCE_DIR         the source tree, for sql/*.sql (required)
    KEFU_TEST_DB_SOCKET     unix socket of a MariaDB the tests may create
                            databases and users on (required by the tests that
                            use the shared server)
    KEFU_TEST_DB_ROOT_USER  administrative user on that socket (default root,
                            authenticated by unix_socket)
    KEFU_IT_KEEP=1          keep temporary directories (logs) for debugging

A missing variable or an unreachable database is a hard failure (exit 1),
never a skip: a green run must mean the tests really ran.

Every process started here is killed when the test that started it ends
(addCleanup), again at interpreter exit (atexit), and by the kernel if the
test process itself dies (PR_SET_PDEATHSIG), so nothing is left behind.
"""

import atexit
import ctypes
import glob
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True

STARTUP_TIMEOUT = 30.0  # seconds to wait for `event=listening`
STOP_TIMEOUT = 30.0     # seconds to wait for exit after SIGTERM
CMD_TIMEOUT = 120.0     # one-shot commands (migrate, check-config, mariadb client)
HTTP_TIMEOUT = 30.0

# Every config key of INTERFACE.md ("Configuration").
CONFIG_KEYS = [
    "listen", "io_threads", "db_workers", "job_threads", "work_queue_max",
    "http_max_headers", "http_max_body", "http_timeout", "shutdown_timeout",
    "reuseport", "debug_routes",
    "db_host", "db_port", "db_socket", "db_name", "db_user", "db_password",
    "db_connect_timeout", "db_rw_timeout", "db_tx_retries",
    "sql_dir", "web_dir", "migrate_on_start", "log_level", "log_format",
]

# Privileges of the application user (INTERFACE.md, "Database").
APP_GRANTS = ("SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES, "
              "CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, TRIGGER")


class SetupError(Exception):
    """The test environment is unusable (not a kefud failure)."""


def _fatal(msg):
    bar = "=" * 72
    sys.stderr.write("\n%s\nINTEGRATION TEST SETUP FAILURE: %s\n%s\n" % (bar, msg, bar))
    sys.stderr.flush()
    sys.exit(1)


# --------------------------------------------------------------------------
# environment


def env_required(name):
    v = os.environ.get(name, "")
    if not v:
        raise SetupError("environment variable %s is not set" % name)
    return v


def kefud_path():
    p = env_required("KEFUD")
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        raise SetupError("KEFUD=%s is not an executable file" % p)
    return p


def source_dir():
    p = env_required("KEFU_SOURCE_DIR")
    if not os.path.isdir(p):
        raise SetupError("KEFU_SOURCE_DIR=%s is not a directory" % p)
    return p


def sql_files():
    """Sorted list of the migration files sql/*.sql in the source tree."""
    return sorted(glob.glob(os.path.join(source_dir(), "sql", "*.sql")))


def migration_versions():
    """{version: path} from sql/NNNN_name.sql."""
    out = {}
    for p in sql_files():
        m = re.match(r"^(\d+)_", os.path.basename(p))
        if not m:
            raise SetupError("migration file without NNNN_ prefix: %s" % p)
        out[int(m.group(1))] = p
    return out


def db_socket():
    return env_required("KEFU_TEST_DB_SOCKET")


def db_root_user():
    return os.environ.get("KEFU_TEST_DB_ROOT_USER") or "root"


def check_env(need_db=True):
    """Raise SetupError unless the environment is usable."""
    kefud_path()
    source_dir()
    if need_db:
        sock = db_socket()
        try:
            mariadb_sql(sock, "SELECT 1", timeout=20)
        except Exception as e:  # noqa: BLE001 - any failure is fatal here
            raise SetupError("MariaDB on KEFU_TEST_DB_SOCKET=%s does not answer as %s: %s"
                             % (sock, db_root_user(), e))


def main(need_db=True):
    """Entry point of every test script: check the environment, run unittest.

    Exits 1 with a loud message when the environment is unusable; otherwise
    the exit code is unittest's verdict.
    """
    try:
        check_env(need_db)
    except SetupError as e:
        _fatal(str(e))
    # Terminated (ctest timeout, user): kill our children first, then unwind
    # like Ctrl-C (unittest swallows SystemExit inside a test, not this).
    def on_term(*_):
        _kill_all()
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    unittest.main(verbosity=2, buffer=False)


# --------------------------------------------------------------------------
# processes


def _pdeathsig():
    """preexec_fn: the child gets SIGKILL if the test process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


_live = set()          # processes started by spawn() and not reaped yet
_dbs = set()           # databases not dropped yet
_db_droppers = []      # their drop functions
_dir_removers = []     # temporary directories' removers


def _kill_all():
    for p in list(_live):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(10)
            except Exception:  # noqa: BLE001
                pass
        _live.discard(p)


def _drop_leftover_dbs():
    for f in reversed(_db_droppers):
        f()


def _rm_leftover_dirs():
    for f in reversed(_dir_removers):
        f()


# Safety net for interrupted runs (atexit is LIFO): kill processes, drop
# databases, then remove directories.  Each step is a no-op when the test's
# own cleanups already ran.
atexit.register(_rm_leftover_dirs)
atexit.register(_drop_leftover_dbs)
atexit.register(_kill_all)


def spawn(argv, **kw):
    p = subprocess.Popen(argv, preexec_fn=_pdeathsig, **kw)
    _live.add(p)
    return p


def reap(p, timeout=10):
    """Make sure p is gone (SIGKILL if needed)."""
    if p is None:
        return
    if p.poll() is None:
        try:
            p.kill()
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    _live.discard(p)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (for peers that need a fixed one)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mktemp_dir(prefix, register=None):
    # Short paths under /tmp: unix socket paths are limited to 107 bytes.
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o700)

    done = []

    def rm():
        if done or not os.path.exists(d):
            return
        done.append(1)
        if os.environ.get("KEFU_IT_KEEP"):
            sys.stderr.write("[kefutest] keeping %s\n" % d)
        else:
            shutil.rmtree(d, ignore_errors=True)

    if register is not None:
        register(rm)
    _dir_removers.append(rm)  # also at exit, when a run is interrupted before its cleanups
    return d


def clean_env(extra=None):
    """os.environ without any KEFU_* variable, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def run_kefud(args, env=None, timeout=CMD_TIMEOUT):
    """Run a one-shot kefud command; CompletedProcess with text stdout/stderr.

    env is added to a clean environment (no inherited KEFU_* variables).
    """
    p = spawn([kefud_path()] + list(args), env=clean_env(env), stdin=subprocess.DEVNULL,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        reap(p)
        out, err = p.communicate()
        raise AssertionError("kefud %s did not finish within %ss\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(args), timeout, out.decode(errors="replace"),
                                err.decode(errors="replace")))
    _live.discard(p)
    return subprocess.CompletedProcess(p.args, p.returncode, out.decode(errors="replace"),
                                       err.decode(errors="replace"))


def describe(cp):
    """Text for assertion messages about a CompletedProcess."""
    return "command: %s\nexit: %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        " ".join(cp.args), cp.returncode, cp.stdout[-4000:], cp.stderr[-4000:])


# --------------------------------------------------------------------------
# MariaDB


def mariadb_sql(sock, sql, database=None, timeout=CMD_TIMEOUT, user=None):
    """Run sql with the mariadb client as the admin user; rows as tuples of str."""
    argv = ["mariadb", "--no-defaults", "--socket=" + sock, "-u", user or db_root_user(),
            "--batch", "--skip-column-names", "--raw", "-e", sql]
    if database:
        argv.append(database)
    try:
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("mariadb client timed out after %ss running: %s" % (timeout, sql))
    if cp.returncode != 0:
        raise AssertionError("mariadb client failed (exit %d) running: %s\n%s"
                             % (cp.returncode, sql, cp.stderr.decode(errors="replace")))
    text = cp.stdout.decode(errors="replace")
    return [tuple(line.split("\t")) for line in text.splitlines()]


class TestDB:
    """A database plus an application user that only has rights on it."""

    def __init__(self, sock, name, user, password, password_file):
        self.socket = sock
        self.name = name
        self.user = user
        self.password = password
        self.password_file = password_file

    def query(self, sql):
        """Run sql as the admin user in this database; list of tuples of str."""
        return mariadb_sql(self.socket, sql, database=self.name)

    def scalar(self, sql):
        rows = self.query(sql)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise AssertionError("expected one value from %r, got %r" % (sql, rows))
        return rows[0][0]

    def kefud_env(self):
        return {
            "KEFU_DB_SOCKET": self.socket,
            "KEFU_DB_NAME": self.name,
            "KEFU_DB_USER": self.user,
            "KEFU_DB_PASSWORD_FILE": self.password_file,
        }

    def drop(self):
        mariadb_sql(self.socket, "DROP DATABASE IF EXISTS `%s`; DROP USER IF EXISTS '%s'@'localhost'"
                    % (self.name, self.user), timeout=60)


def fresh_db(register=None, sock=None, drop=True, charset="utf8mb4 COLLATE utf8mb4_unicode_ci"):
    """Create kefu_it_<random> and an app user with a random password.

    The password is written (0600) to a file for KEFU_DB_PASSWORD_FILE.
    register (e.g. self.addCleanup / cls.addClassCleanup; default atexit)
    receives the function that drops both again (drop=False: the caller
    throws the whole server away instead).
    """
    sock = sock or db_socket()
    register = register or atexit.register
    suffix = secrets.token_hex(6)
    name = "kefu_it_" + suffix
    user = "kefu_it_" + suffix
    password = secrets.token_hex(16)
    tmp = mktemp_dir("kefu-db-", register)
    pwfile = os.path.join(tmp, "db_password")
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    db = TestDB(sock, name, user, password, pwfile)

    def drop_it():
        if db not in _dbs:
            return
        _dbs.discard(db)
        try:
            db.drop()
        except Exception as e:  # noqa: BLE001 - cleanup must not mask the real failure
            sys.stderr.write("[kefutest] could not drop %s: %s\n" % (name, e))

    if drop:  # registered first: a half-done CREATE is cleaned up too
        _dbs.add(db)
        register(drop_it)
        _db_droppers.append(drop_it)
    mariadb_sql(sock,
                "CREATE DATABASE `%s` CHARACTER SET %s; "
                "CREATE USER '%s'@'localhost' IDENTIFIED BY '%s'; "
                "GRANT %s ON `%s`.* TO '%s'@'localhost'"
                % (name, charset, user, password, APP_GRANTS, name, user))
    return db


class PrivateMariaDB:
    """A throw-away mariadbd in its own datadir, reachable by unix socket only.

    Used by tests that stop and restart the database, and handy for running
    the suite locally (see run_local() below).
    """

    def __init__(self, register=None):
        self.dir = mktemp_dir("kefu-mdb-", register)
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "mysqld.sock")
        self.pidfile = os.path.join(self.dir, "mysqld.pid")
        self.errlog = os.path.join(self.dir, "mysqld.err")
        self.proc = None
        self.root = os.geteuid() == 0
        (register or atexit.register)(self.kill)

    def install(self):
        argv = ["mariadb-install-db", "--no-defaults", "--datadir=" + self.datadir,
                "--auth-root-authentication-method=socket", "--skip-test-db"]
        if self.root:
            argv.append("--user=root")
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=300)
        if cp.returncode != 0:
            raise AssertionError("mariadb-install-db failed (exit %d):\n%s"
                                 % (cp.returncode, cp.stdout.decode(errors="replace")[-4000:]))

    def start(self, timeout=120):
        assert self.proc is None or self.proc.poll() is not None, "mariadbd already running"
        argv = ["mariadbd", "--no-defaults", "--datadir=" + self.datadir,
                "--socket=" + self.socket, "--skip-networking", "--pid-file=" + self.pidfile,
                "--log-error=" + self.errlog, "--innodb-buffer-pool-size=64M"]
        if self.root:
            argv.append("--user=root")
        self.proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("mariadbd exited with %s during startup:\n%s"
                                     % (self.proc.returncode, self.log_tail()))
            if self.ping():
                return
            if time.monotonic() > deadline:
                raise AssertionError("mariadbd did not answer ping within %ss:\n%s"
                                     % (timeout, self.log_tail()))
            time.sleep(0.2)

    def ping(self):
        try:
            cp = subprocess.run(["mariadb-admin", "--no-defaults", "--socket=" + self.socket,
                                 "-u", "root", "--connect-timeout=2", "ping"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return cp.returncode == 0

    def stop(self, timeout=60):
        """mariadb-admin shutdown, then wait for the process to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run(["mariadb-admin", "--no-defaults", "--socket=" + self.socket, "-u", "root",
                        "shutdown"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            reap(self.proc)
            raise AssertionError("mariadbd did not exit within %ss after shutdown" % timeout)
        _live.discard(self.proc)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=30)
            except Exception:  # noqa: BLE001
                pass
        reap(self.proc)

    def log_tail(self, n=4000):
        try:
            with open(self.errlog, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return "(no error log)"


# --------------------------------------------------------------------------
# kefud


LISTENING_RE = re.compile(r"\bevent=listening\b.*?\baddr=(\S+)")


class Kefud:
    """One `kefud` server process.

    kefud = Kefud(db, register=self.addCleanup).start()
    status, headers, body = kefud.request("GET", "/healthz")
    self.assertEqual(kefud.stop(), 0)
    """

    def __init__(self, db=None, env=None, args=(), register=None):
        self.dir = mktemp_dir("kefud-", register)
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.args = list(args)
        e = {
            "KEFU_LISTEN": "127.0.0.1:0",
            "KEFU_DEBUG_ROUTES": "1",
            "KEFU_DB_WORKERS": "2",
            "KEFU_IO_THREADS": "1",
        }
        if db is not None:
            e.update(db.kefud_env())
        if env:
            e.update(env)
        self.env = clean_env(e)
        self.proc = None
        self.host = None
        self.port = None
        self._stopped_cleanly = False
        (register or atexit.register)(self.kill)

    # -- lifecycle

    def start(self, timeout=STARTUP_TIMEOUT):
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = spawn([kefud_path()] + self.args, env=self.env, stdin=subprocess.DEVNULL,
                          stdout=self._out, stderr=self._err)
        deadline = time.monotonic() + timeout
        while True:
            m = LISTENING_RE.search(self.log())
            if m:
                addr = m.group(1).strip('"')
                host, _, port = addr.rpartition(":")
                self.host = host.strip("[]")
                self.port = int(port)
                if self.port <= 0:
                    raise AssertionError("event=listening with a bad port: %r\n%s"
                                         % (addr, self.tail()))
                return self
            if self.proc.poll() is not None:
                raise AssertionError("kefud exited with %s before event=listening\n%s"
                                     % (self.proc.returncode, self.tail()))
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("no event=listening log line within %ss\n%s"
                                     % (timeout, self.tail()))
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=STOP_TIMEOUT):
        """Wait for exit; the exit code (negative: killed by that signal)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("kefud did not exit within %ss\n%s" % (timeout, self.tail()))
        _live.discard(self.proc)
        self._close_files()
        if rc != 0:
            sys.stderr.write("[kefutest] kefud exited with %s; log tail:\n%s\n" % (rc, self.tail()))
        else:
            self._stopped_cleanly = True
        return rc

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait (bounded), return the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self):
        """Cleanup: make sure the process is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            reap(self.proc)
            sys.stderr.write("[kefutest] killed kefud still running at cleanup; log tail:\n%s\n"
                             % self.tail())
        _live.discard(self.proc)
        self._close_files()

    def _close_files(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()

    # -- logs

    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, n=6000):
        return "--- kefud stderr (tail) ---\n%s\n--- end ---" % self.log()[-n:]

    # -- HTTP

    def connect(self, timeout=HTTP_TIMEOUT):
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
        """(status, {lower-case header: value}, body bytes) over a new connection."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {}
            for k, v in resp.getheaders():
                k = k.lower()
                hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
            return resp.status, hdrs, data
        finally:
            conn.close()

    def get_json(self, path, **kw):
        status, hdrs, body = self.request("GET", path, **kw)
        return status, hdrs, parse_json(body)

    def wait_status(self, path, want, timeout=20.0, interval=0.2):
        """Poll GET path until it answers want (bounded); the last (status, headers, body)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = self.request("GET", path, timeout=10)
            except OSError as e:
                r = (None, {}, repr(e).encode())
            if r[0] == want or time.monotonic() > deadline:
                return r
            time.sleep(interval)

    def metrics(self):
        status, hdrs, body = self.request("GET", "/metrics")
        if status != 200:
            raise AssertionError("GET /metrics -> %s %r" % (status, body[:500]))
        return parse_metrics(body.decode())


def parse_json(body):
    try:
        return json.loads(body)
    except ValueError:
        raise AssertionError("response body is not JSON: %r" % body[:500])


# --------------------------------------------------------------------------
# Prometheus text format


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


class Metrics:
    def __init__(self, samples, typed, text):
        self.samples = samples  # list of (name, {label: value}, float)
        self.typed = typed      # {family: type} from # TYPE lines
        self.text = text

    def has_family(self, name):
        if name in self.typed:
            return True
        return any(s[0] == name for s in self.samples)

    def value(self, name, **labels):
        """Sum of the samples of name whose labels include labels (None if none)."""
        found = [v for n, l, v in self.samples
                 if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
        return sum(found) if found else None


def parse_metrics(text):
    samples, typed = [], {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                typed[parts[2]] = parts[3]
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError("malformed metrics line: %r" % line)
        labels = {}
        if m.group(3):
            for lm in _LABEL_RE.finditer(m.group(3)):
                labels[lm.group(1)] = re.sub(r"\\(.)", lambda x: {"n": "\n"}.get(x.group(1), x.group(1)),
                                             lm.group(2))
        v = m.group(4)
        value = float("inf") if v == "+Inf" else float("-inf") if v == "-Inf" else float(v)
        samples.append((m.group(1), labels, value))
    return Metrics(samples, typed, text)


# --------------------------------------------------------------------------
# misc


def wait_for(pred, timeout, interval=0.2):
    """Poll pred() until it returns a truthy value or timeout; that value (or the last)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def run_local():
    """python3 kefutest.py: start a private MariaDB and print its socket (for manual runs)."""
    db = PrivateMariaDB()
    db.install()
    db.start()
    print("KEFU_TEST_DB_SOCKET=%s (Ctrl-C stops it)" % db.socket, flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while db.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        db.kill()


if __name__ == "__main__":
    run_local()
