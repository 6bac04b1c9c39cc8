"""The LMTP ingest worker pool (lmtp.c): the listener parses, lmtp_workers
threads ingest, the replies come back in order.

- 8 concurrent sessions, each delivering messages to two recipients with the
  next transaction pipelined behind every end of data: one reply per
  recipient, in recipient order, before the pipelined commands are answered;
  every message a ticket exactly once per mailbox, with the ticket id the
  reply named;
- a client that sends DATA and goes away while its message is being
  ingested: no crash, the listener serves others meanwhile, the message is
  stored once, and a redelivery of the same Message-ID is a 250 duplicate;
  likewise a client cut by the write timeout while its job is in flight
  (the session is freed only when the job is back: ASan checks that);
- the bounded queue (8 per worker): with one worker held on a table lock,
  exactly the messages beyond the queue get 451 4.3.2 at once (no hang), the
  queued ones 250 once the lock goes; a retry of a refused one is accepted;
- shutdown with a message in flight: idle sessions get 421, the message in
  flight still gets its 250, then 421, and kefud exits 0.

The worker is held by a mariadb client session that holds LOCK TABLES
email_message_id WRITE (only ingest touches that table here); the test sees
the worker waiting in the processlist, so nothing depends on timing.
"""

import os
import re
import select
import socket
import subprocess
import sys
import threading
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kefutest as kt  # noqa: E402
from lmtp_kit import Lmtp  # noqa: E402

QUEUE_PER_WORKER = 8  # lmtp.c


def mail(msgid, frm="cust@example.com", subject=None):
    return ("From: %s\r\nTo: support@kefu.test\r\nSubject: %s\r\nMessage-ID: <%s>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nHello.\r\n.leading dot\r\n"
            % (frm, subject or "pool " + msgid, msgid)).replace("\r\n.", "\r\n..").encode() \
        + b".\r\n"


ENVELOPE = ("MAIL FROM:<cust@example.com>\r\nRCPT TO:<support@kefu.test>\r\n"
            "RCPT TO:<sales@kefu.test>\r\nDATA\r\n")
ENVELOPE1 = "MAIL FROM:<cust@example.com>\r\nRCPT TO:<support@kefu.test>\r\nDATA\r\n"


class TableLock:
    """A mariadb client session that holds LOCK TABLES <table> WRITE until release()."""

    def __init__(self, db, table, register):
        self.p = kt.spawn(["mariadb", "--no-defaults", "--socket=" + db.socket, "-u",
                           kt.db_root_user(), "--batch", "--skip-column-names", "--unbuffered",
                           db.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
        register(self.kill)
        self.p.stdin.write(b"LOCK TABLES %s WRITE; SELECT 'locked';\n" % table.encode())
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if line.strip() != b"locked":
            raise AssertionError("could not lock %s: %r" % (table, line))

    def release(self):
        if self.p.poll() is None:
            self.p.stdin.write(b"UNLOCK TABLES;\n")
            self.p.stdin.close()
            self.p.wait(30)

    def kill(self):
        if self.p.poll() is None:
            kt.reap(self.p)


def waiting_on_lock(db):
    """kefud connections stuck on the metadata lock of email_message_id (an ingest in flight)."""
    return int(db.scalar(
        "SELECT COUNT(*) FROM information_schema.processlist WHERE user = '%s' AND "
        "state LIKE '%%metadata lock%%' AND info LIKE '%%email_message_id%%'" % db.user))


class LmtpPoolTest(unittest.TestCase):
    def start(self, workers, sessions=32, extra=None):
        db = kt.fresh_db(self.addCleanup)
        cp = kt.run_kefud(["migrate"], env=db.kefud_env())
        self.assertEqual(cp.returncode, 0, kt.describe(cp))
        db.query("INSERT INTO queue (name, slug) VALUES ('Q', 'q')")
        db.query("INSERT INTO email_mailbox (name, address) VALUES "
                 "('support', 'support@kefu.test'), ('sales', 'sales@kefu.test')")
        db.query("INSERT INTO channel_account (channel, account, default_queue_id) "
                 "SELECT 'email', 'support', id FROM queue UNION ALL "
                 "SELECT 'email', 'sales', id FROM queue")
        env = {"KEFU_LMTP_LISTEN": "127.0.0.1:0", "KEFU_LMTP_WORKERS": str(workers),
               "KEFU_LMTP_MAX_SESSIONS": str(sessions), "KEFU_SHUTDOWN_TIMEOUT": "60"}
        env.update(extra or {})
        k = kt.Kefud(db, env=env, register=self.addCleanup).start()
        m = re.search(r"event=lmtp-listening addr=127\.0\.0\.1:(\d+)", k.log())
        self.assertIsNotNone(m, k.tail())
        self.assertIn("workers=%d queue=%d" % (workers, workers * QUEUE_PER_WORKER), k.log())
        return k, db, int(m.group(1))

    def session(self, port):
        c = Lmtp(port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        c.send("LHLO pool.test\r\n")
        self.assertEqual(c.reply()[0], 250)
        return c

    def count(self, db, msgid):
        return int(db.scalar("SELECT COUNT(*) FROM message WHERE external_id = '%s'" % msgid))

    def deliver(self, port, msgid):
        c = self.session(port)
        c.send(ENVELOPE1)
        self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
        c.send(mail(msgid))
        r = c.reply()
        c.send("QUIT\r\n")
        self.assertEqual(c.reply()[0], 221)
        c.close()
        return r

    def test_concurrent_sessions_in_order(self):
        k, db, port = self.start(workers=4)
        conc, n = 8, 12
        tickets, errors = {}, []
        lock = threading.Lock()

        def run(j):
            try:
                c = Lmtp(port)
                try:
                    assert c.reply()[0] == 220
                    c.send("LHLO pool.test\r\n" + ENVELOPE)
                    got = [c.reply()[0] for _ in range(5)]
                    assert got == [250, 250, 250, 250, 354], got
                    for i in range(n):
                        msgid = "pool-%d-%d@example.com" % (j, i)
                        # the next transaction (or QUIT) pipelined behind the end of data
                        nxt = ENVELOPE if i < n - 1 else "QUIT\r\n"
                        c.send(mail(msgid, "c%d-%d@example.com" % (j, i)) + nxt.encode())
                        r1, r2 = c.reply(), c.reply()
                        m1 = re.match(r"250 2\.0\.0 <support> delivered ticket (\d+)$", r1[1][0])
                        m2 = re.match(r"250 2\.0\.0 <sales> delivered ticket (\d+)$", r2[1][0])
                        assert m1 and m2, (msgid, r1, r2)
                        with lock:
                            tickets[(msgid, "support")] = int(m1.group(1))
                            tickets[(msgid, "sales")] = int(m2.group(1))
                        if i < n - 1:
                            rest = [c.reply()[1][0] for _ in range(4)]
                            assert [l[:9] for l in rest] == ["250 2.1.0", "250 2.1.5",
                                                             "250 2.1.5", "354 End d"], rest
                        else:
                            assert c.reply()[0] == 221
                finally:
                    c.close()
            except Exception as e:  # noqa: BLE001 - reported by the main thread
                with lock:
                    errors.append("session %d: %r" % (j, e))

        threads = [threading.Thread(target=run, args=(j,)) for j in range(conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        self.assertEqual(errors, [], k.tail())
        self.assertEqual(len(tickets), conc * n * 2)
        rows = db.query("SELECT m.external_id, t.channel_account, t.id FROM message m "
                        "JOIN ticket t ON t.id = m.ticket_id WHERE m.external_id LIKE 'pool-%'")
        stored = {}
        for mid, account, tid in rows:
            self.assertNotIn((mid, account), stored, "stored twice: %s %s" % (mid, account))
            stored[(mid, account)] = int(tid)
        self.assertEqual(stored, tickets)  # every message once per mailbox, the ticket replied
        self.assertEqual(len(set(tickets.values())), conc * n * 2)
        self.assertTrue(k.alive(), k.tail())
        self.assertEqual(k.stop(), 0, k.tail())

    def test_client_gone_while_in_flight(self):
        k, db, port = self.start(workers=2)
        lock = TableLock(db, "email_message_id", self.addCleanup)
        c = self.session(port)
        c.send(ENVELOPE1)
        self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
        c.send(mail("gone-1@example.com"))
        self.assertTrue(kt.wait_for(lambda: waiting_on_lock(db) == 1, 30, 0.1), k.tail())
        c.close()  # gone before the reply
        # The listener is not held up by the ingest in flight.
        other = self.session(port)
        other.send("NOOP\r\nQUIT\r\n")
        self.assertEqual([other.reply()[0] for _ in range(2)], [250, 221])
        self.assertEqual(self.count(db, "gone-1@example.com"), 0)
        lock.release()
        # The job still finishes: stored once.
        self.assertTrue(kt.wait_for(lambda: self.count(db, "gone-1@example.com") == 1, 30),
                        k.tail())
        # More clients that hang up right after the end of data, without a lock.
        for i in range(10):
            q = self.session(port)
            q.send(ENVELOPE1)
            self.assertEqual([q.reply()[0] for _ in range(3)], [250, 250, 354])
            q.send(mail("gone-q%d@example.com" % i))
            q.close()
        for i in range(10):
            mid = "gone-q%d@example.com" % i
            self.assertTrue(kt.wait_for(lambda: self.count(db, mid) == 1, 30), (mid, k.tail()))
        # The MTA retries: 250, a duplicate, still one message and one ticket.
        for mid in ["gone-1@example.com"] + ["gone-q%d@example.com" % i for i in range(10)]:
            code, lines = self.deliver(port, mid)
            self.assertEqual(code, 250, lines)
            self.assertIn("duplicate", lines[0])
            self.assertEqual(self.count(db, mid), 1)
        self.assertEqual(int(db.scalar("SELECT COUNT(*) FROM ticket")), 11)
        self.assertTrue(k.alive(), k.tail())
        self.assertEqual(k.stop(), 0, k.tail())

    def test_stuck_client_cut_while_in_flight(self):
        # A client that never reads: its replies fill the socket buffers, so the
        # write timeout (lmtp_timeout) cuts the session while its message is being
        # ingested; the session must outlive the cut until the job is back.
        k, db, port = self.start(workers=1, extra={"KEFU_LMTP_TIMEOUT": "1"})
        lock = TableLock(db, "email_message_id", self.addCleanup)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(60)
        s.connect(("127.0.0.1", port))
        # ~85 bytes of reply per 8-byte LHLO: more than the kernel buffers hold.
        s.sendall(b"LHLO x\r\n" * 60000 + ENVELOPE1.encode() + mail("stuck-1@example.com"))
        self.assertTrue(kt.wait_for(lambda: waiting_on_lock(db) == 1, 30, 0.1), k.tail())
        self.assertTrue(kt.wait_for(lambda: "event=lmtp-client-gone" in k.log(), 30, 0.1),
                        k.tail())
        lock.release()
        self.assertTrue(kt.wait_for(lambda: self.count(db, "stuck-1@example.com") == 1, 30),
                        k.tail())
        self.assertTrue(k.alive(), k.tail())
        code, lines = self.deliver(port, "stuck-1@example.com")
        self.assertEqual(code, 250, lines)
        self.assertIn("duplicate", lines[0])
        self.assertEqual(self.count(db, "stuck-1@example.com"), 1)
        self.assertEqual(k.stop(), 0, k.tail())

    def test_queue_full_is_451(self):
        k, db, port = self.start(workers=1, sessions=32)
        cap, extra = QUEUE_PER_WORKER, 4
        lock = TableLock(db, "email_message_id", self.addCleanup)
        first = self.session(port)
        first.send(ENVELOPE1)
        self.assertEqual([first.reply()[0] for _ in range(3)], [250, 250, 354])
        first.send(mail("full-first@example.com"))
        # The only worker has taken that message and waits for the lock.
        self.assertTrue(kt.wait_for(lambda: waiting_on_lock(db) == 1, 30, 0.1), k.tail())
        others = []
        for i in range(cap + extra):
            c = self.session(port)
            c.send(ENVELOPE1)
            self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
            others.append((c, "full-%d@example.com" % i))
        for c, mid in others:
            c.send(mail(mid))
        # Exactly `extra` of them are refused at once, whatever order they were read in.
        refused, pending = [], {c.s.fileno(): (c, mid) for c, mid in others}
        while len(refused) < extra:
            ready, _, _ = select.select(list(pending), [], [], 30)
            self.assertTrue(ready, "no 451 while the queue is full (hang?)\n" + k.tail())
            for fd in ready:
                c, mid = pending.pop(fd)
                code, lines = c.reply()
                self.assertRegex(lines[0], r"^451 4\.3\.2 <support> ", lines)
                refused.append(mid)
        self.assertEqual(len(refused), extra)
        self.assertEqual(len(pending), cap)
        lock.release()
        # The queued ones and the first are then accepted, in turn.
        for c, mid in [(first, "full-first@example.com")] + list(pending.values()):
            code, lines = c.reply()
            self.assertEqual(code, 250, (mid, lines, k.tail()))
            self.assertEqual(self.count(db, mid), 1)
        for mid in refused:
            self.assertEqual(self.count(db, mid), 0)
            code, lines = self.deliver(port, mid)  # the MTA's retry
            self.assertEqual(code, 250, lines)
            self.assertIn("delivered", lines[0])
        self.assertEqual(int(db.scalar("SELECT COUNT(*) FROM message WHERE external_id "
                                       "LIKE 'full-%'")), cap + extra + 1)
        self.assertIn("event=lmtp-queue-full", k.log())
        self.assertEqual(k.stop(), 0, k.tail())

    def test_shutdown_waits_for_job_in_flight(self):
        k, db, port = self.start(workers=1)
        lock = TableLock(db, "email_message_id", self.addCleanup)
        busy = self.session(port)
        idle = self.session(port)
        busy.send(ENVELOPE1)
        self.assertEqual([busy.reply()[0] for _ in range(3)], [250, 250, 354])
        busy.send(mail("stop-1@example.com") + b"NOOP\r\n")
        self.assertTrue(kt.wait_for(lambda: waiting_on_lock(db) == 1, 30, 0.1), k.tail())
        k.signal()
        code, lines = idle.reply()
        self.assertEqual(code, 421, lines)  # the idle session is told at once
        self.assertTrue(k.alive(), k.tail())
        lock.release()
        code, lines = busy.reply()
        self.assertEqual(code, 250, (lines, k.tail()))  # the message in flight is answered
        self.assertEqual(busy.reply()[0], 421)  # then the session ends (the NOOP is not run)
        self.assertEqual(k.wait(), 0, k.tail())
        self.assertEqual(self.count(db, "stop-1@example.com"), 1)
        self.assertIn("event=lmtp-stopped", k.log())


if __name__ == "__main__":
    kt.main()
