#!/usr/bin/env python3
"""Email channel benchmark (issue 5): LMTP ingest messages/s at concurrency 1,
8 and 32 (target: >= 500 at c=1 and c=8), IMAP ingest messages/s from a
private Dovecot, and outbound SMTP sends/s to a local SMTP server.  Run on
purpose, never by CI.

    KEFUD=build-release/kefud KEFU_SOURCE_DIR=$PWD python3 tests/bench/bench_email.py
    BENCH_LMTP_WORKERS="1 4" BENCH_IMAP=0 BENCH_SMTP=0 ... bench_email.py   # LMTP only

Environment: KEFUD, KEFU_SOURCE_DIR (as for the integration tests);
BENCH_MESSAGES (LMTP messages per concurrency, default 2000),
BENCH_CONCURRENCY (LMTP client sessions, default "1 8 32"),
BENCH_LMTP_WORKERS (lmtp_workers of kefud, default "4"; several values run
the LMTP part once each, on a fresh kefud), BENCH_IMAP (messages in the IMAP
run, default 1000; 0 skips it), BENCH_SMTP (outbound mails, default 500).
"errors" counts messages whose replies were not all 250 (451 4.3.2 when
the ingest queue, 8 waiting per worker, was full: expect them at c=32 with
one worker); LMTP msg/s counts the accepted ones only.  It starts its own
MariaDB (kefutest.PrivateMariaDB), kefud, Dovecot and SMTP peer on
127.0.0.1 and stops them all at the end.
"""

import os
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import kefutest as kt  # noqa: E402
import smtppeer  # noqa: E402
import test_email_imap  # noqa: E402  (the Dovecot helper)

N = int(os.environ.get("BENCH_MESSAGES", "2000"))
N_IMAP = int(os.environ.get("BENCH_IMAP", "1000"))
N_SMTP = int(os.environ.get("BENCH_SMTP", "500"))
CONCURRENCY = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1 8 32").split()]
LMTP_WORKERS = os.environ.get("BENCH_LMTP_WORKERS", "4").split()


def lmtp_worker(port, start, count, errors):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    f = s.makefile("rb")

    def reply():
        while True:
            l = f.readline()
            if not l:
                raise RuntimeError("closed")
            if l[3:4] != b"-":
                return int(l[:3])

    reply()
    s.sendall(b"LHLO bench\r\n")
    reply()
    for i in range(start, start + count):
        body = ("From: c%d@example.com\r\nTo: support@kefu.test\r\nSubject: bench %d\r\n"
                "Message-ID: <bench-%d@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "\r\nHello, message %d.\r\n.\r\n" % (i % 50, i, i, i)).encode()
        s.sendall(b"MAIL FROM:<c@example.com>\r\nRCPT TO:<support@kefu.test>\r\nDATA\r\n")
        codes = [reply(), reply(), reply()]
        s.sendall(body)
        codes.append(reply())
        if codes != [250, 250, 354, 250]:
            errors.append(codes)
    s.sendall(b"QUIT\r\n")
    s.close()


def start_kefud(db, reg, peer, secrets, workers):
    return kt.Kefud(db, env={"KEFU_LMTP_LISTEN": "127.0.0.1:0", "KEFU_LMTP_MAX_SESSIONS": "64",
                             "KEFU_LMTP_WORKERS": str(workers),
                             "KEFU_SMTP_PORT": str(peer.port), "KEFU_SECRETS_FILE": secrets,
                             "KEFU_DB_WORKERS": "4",
                             "KEFU_OUTBOX_PERIOD_MS": "50"}, register=reg).start()


def main():
    cleanups = []
    reg = cleanups.append
    try:
        mdb = kt.PrivateMariaDB(register=reg)
        mdb.install()
        mdb.start()
        db = kt.fresh_db(reg, sock=mdb.socket, drop=False)
        cp = kt.run_kefud(["migrate"], env=db.kefud_env())
        assert cp.returncode == 0, kt.describe(cp)
        db.query("INSERT INTO queue (name, slug) VALUES ('Q', 'q')")
        peer = smtppeer.SmtpPeer().start()
        reg(peer.stop)
        dov = test_email_imap.Dovecot(reg).start() if N_IMAP else None
        secrets = os.path.join(kt.mktemp_dir("secrets-", reg), "s")
        with open(secrets, "w") as f:
            f.write("imap = imap-secret\n")
        os.chmod(secrets, 0o600)
        db.query("INSERT INTO email_mailbox (name, address) VALUES ('support', 'support@kefu.test')")
        db.query("INSERT INTO channel_account (channel, account, default_queue_id) "
                 "SELECT 'email', 'support', id FROM queue")
        results = []
        base = 0
        for wi, workers in enumerate(LMTP_WORKERS):
            k = start_kefud(db, reg, peer, secrets, workers)
            port = int(re.search(r"event=lmtp-listening addr=127\.0\.0\.1:(\d+)",
                                 k.log()).group(1))
            for conc in CONCURRENCY:
                errors = []
                per = N // conc
                threads = [threading.Thread(target=lmtp_worker,
                                            args=(port, base + j * per, per, errors))
                           for j in range(conc)]
                t0 = time.monotonic()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                dt = time.monotonic() - t0
                base += per * conc
                # msg/s of LMTP counts accepted messages only (a 451 is not ingest).
                results.append(("LMTP w=%s c=%d" % (workers, conc), per * conc, dt, len(errors),
                                per * conc - len(errors)))
            if wi < len(LMTP_WORKERS) - 1:
                assert k.stop() == 0, k.tail()
        if dov:
            db.query("UPDATE email_mailbox SET imap_url = 'imap://127.0.0.1:%d/INBOX', "
                     "imap_user = 'support', imap_secret_ref = 'imap', poll_interval = 1 "
                     "WHERE name = 'support'" % dov.port)
            for i in range(N_IMAP):
                dov.deliver(test_email_imap.msg(i, "imapbench"))
            # timed from the first message in (the poll starts within poll_interval + 1 s
            # of the update; that wait is not the poller's speed)
            count = lambda: int(db.scalar("SELECT COUNT(*) FROM message WHERE external_id "  # noqa: E731
                                          "LIKE 'imapbench-%'"))
            kt.wait_for(lambda: count() >= 1, 60, 0.01)
            t0 = time.monotonic()
            ok = kt.wait_for(lambda: count() >= N_IMAP, 600, 0.01)
            results.append(("IMAP poll", N_IMAP, time.monotonic() - t0, 0 if ok else 1, N_IMAP))
        if N_SMTP:
            # N_SMTP notifications (not tied to tickets, so any N works): MariaDB's
            # Sequence engine gives the numbers
            db.query("INSERT INTO outbox (kind, channel, channel_account, target, payload, "
                     "dedupe_key) SELECT 'notification', 'email', 'support', "
                     "CONCAT('c', seq, '@example.com'), JSON_OBJECT('subject', 'hi', 'text', 'x'), "
                     "CONCAT('bench:', seq) FROM seq_1_to_%d" % N_SMTP)
            t0 = time.monotonic()
            ok = kt.wait_for(lambda: len(peer.messages) >= N_SMTP, 600, 0.05)
            results.append(("SMTP out", N_SMTP, time.monotonic() - t0, 0 if ok else 1, N_SMTP))
        print("%-16s %8s %8s %10s %6s" % ("path", "messages", "seconds", "msg/s", "errors"))
        for name, n, dt, err, ok_n in results:
            print("%-16s %8d %8.2f %10.1f %6d" % (name, n, dt, ok_n / dt, err))
        assert k.stop() == 0, k.tail()
    finally:
        for c in reversed(cleanups):
            try:
                c()
            except Exception as e:  # noqa: BLE001
                sys.stderr.write("cleanup: %s\n" % e)


if __name__ == "__main__":
    kt.check_env(need_db=False)
    main()
