"""A private Dovecot (Debian's dovecot-imapd) for the IMAP tests: a generated
config, passwd-file users (password "imap-secret") and temporary Maildirs,
listening on 127.0.0.1 and free ports.

    dov = Dovecot(self.addCleanup).start()                     # clear text, port dov.port
    dov = Dovecot(self.addCleanup, users=("a", "b"),
                  tls=(cert, key), ca=ca_pem).start()          # ssl = required:
        # STARTTLS on dov.port (imap://), implicit TLS on dov.imaps_port (imaps://)
    dov.deliver(raw, user="a");  dov.flags(user="a") -> {uid: {flags}};  dov.logins()

With tls, Dovecot refuses every login that is not over TLS (ssl = required,
disable_plaintext_auth = yes), and its log says how each login was secured.
A Dovecot that cannot start raises AssertionError with its log (never a skip).
"""

import imaplib
import os
import re
import ssl
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest as kt  # noqa: E402

DOVECOT = "/usr/sbin/dovecot"
PASSWORD = "imap-secret"


class Dovecot:
    def __init__(self, register, users=("support",), tls=None, ca=None):
        self.dir = kt.mktemp_dir("dovecot-", register)
        os.chmod(self.dir, 0o755)
        self.users = tuple(users)
        self.tls = tls
        self.ca = ca
        self.port = kt.free_port()
        self.imaps_port = kt.free_port() if tls else 0
        self.uid, self.gid = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())
        for u in self.users:
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(self.maildir(u), sub))
        os.makedirs(os.path.join(self.dir, "run"))
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            for u in self.users:
                f.write("%s:{PLAIN}%s\n" % (u, PASSWORD))
        if tls:
            ssl_conf = ("ssl = required\nssl_cert = <%s\nssl_key = <%s\n"
                        "disable_plaintext_auth = yes\n" % tls)
        else:
            ssl_conf = "ssl = no\ndisable_plaintext_auth = no\n"
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write("""base_dir = {d}/run
state_dir = {d}/run
log_path = {d}/dovecot.log
instance_name = kefutest{port}
listen = 127.0.0.1
protocols = imap
{ssl_conf}auth_mechanisms = plain login
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
""".format(d=self.dir, port=self.port, imaps_port=self.imaps_port, uid=self.uid,
                gid=self.gid, ssl_conf=ssl_conf))
        self.conf = conf
        self.proc = None
        self.n = 0
        register(self.stop)

    def maildir(self, user):
        return os.path.join(self.dir, "mail", user)

    def chown(self):
        if os.getuid() == 0:
            for root, dirs, files in os.walk(os.path.join(self.dir, "mail")):
                for x in dirs + files:
                    os.chown(os.path.join(root, x), self.uid, self.gid)
            os.chown(os.path.join(self.dir, "mail"), self.uid, self.gid)

    def start(self):
        if not os.path.exists(DOVECOT):
            raise AssertionError("%s missing: apt-get install dovecot-imapd" % DOVECOT)
        self.chown()
        self.proc = kt.spawn([DOVECOT, "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = kt.wait_for(self._login_ok, 30, 0.1)
        if not ok:
            raise AssertionError("dovecot did not start\n" + self.log())
        return self

    def connect(self, user=None, timeout=30):
        """A logged-in imaplib connection (over implicit TLS when tls is set)."""
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.ca)
            m = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=ctx, timeout=timeout)
        else:
            m = imaplib.IMAP4("127.0.0.1", self.port, timeout=timeout)
        m.login(user or self.users[0], PASSWORD)
        return m

    def _login_ok(self):
        if self.proc.poll() is not None:
            raise AssertionError("dovecot exited\n" + self.log())
        try:
            self.connect(timeout=5).logout()
            return True
        except (OSError, imaplib.IMAP4.error):
            return False

    def log(self):
        try:
            with open(os.path.join(self.dir, "dovecot.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def logins(self, user):
        """The imap-login "Login:" lines of user, in full."""
        try:
            with open(os.path.join(self.dir, "dovecot.log"), errors="replace") as f:
                text = f.read()
        except OSError:
            return []
        return [l for l in text.splitlines()
                if "imap-login: " in l and "Login: user=<%s>," % user in l]

    def deliver(self, raw, user=None):
        self.n += 1
        md = self.maildir(user or self.users[0])
        name = "%d.M%dP%d.kefutest" % (time.time(), self.n, os.getpid())
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(raw)
        if os.getuid() == 0:
            os.chown(tmp, self.uid, self.gid)
        os.rename(tmp, os.path.join(md, "new", name))

    def flags(self, user=None):
        """{uid: set(flags)} of the user's INBOX."""
        m = self.connect(user)
        m.select("INBOX", readonly=True)
        typ, data = m.uid("FETCH", "1:*", "(FLAGS)")
        m.logout()
        out = {}
        for d in data:
            if not d:
                continue
            s = d.decode() if isinstance(d, bytes) else d[0].decode()
            mm = re.search(r"UID (\d+) FLAGS \(([^)]*)\)", s) or re.search(
                r"FLAGS \(([^)]*)\) UID (\d+)", s)
            if mm is None:
                continue
            if s.find("UID") < s.find("FLAGS"):
                out[int(mm.group(1))] = set(mm.group(2).split())
            else:
                out[int(mm.group(2))] = set(mm.group(1).split())
        return out

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            kt.reap(self.proc, 30)
        self.proc = None


def msg(i, tag):
    return ("From: sender%d@example.com\r\nTo: support@kefu.test\r\nSubject: %s %d\r\n"
            "Message-ID: <%s-%d@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "message %d\r\n" % (i % 7, tag, i, tag, i, i)).encode()
