#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions invoked through trap
# deploy/quickstart.sh — build Kefu and run it locally with a private MariaDB.
#
#   deploy/quickstart.sh            then open http://127.0.0.1:8080/ ; Ctrl-C stops everything
#
# Environment:
#   KEFU_VAR   state directory (default ./var under the repository): MariaDB data, socket,
#              kefud.conf, secrets/ (db_password, demo-logins.txt), logs
#   KEFU_HTTP  address kefud listens on (default 127.0.0.1:8080)
#
# The first run installs missing Debian packages (apt-get, as root), builds build-release/,
# initialises MariaDB, creates the database and its user, applies migrations and loads the demo
# data. Later runs keep every row and start in seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"

VAR=${KEFU_VAR:-$ROOT/var}
VAR=$(kf_abs "$VAR")
HTTP=${KEFU_HTTP:-127.0.0.1:8080}
BUILD="$ROOT/build-release"
KEFUD="$BUILD/kefud"
CONF="$VAR/kefud.conf"

KEFUD_PID=""
DB_STARTED=0
CLEANED=0

cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    trap '' INT TERM
    if [[ -n $KEFUD_PID ]]; then
        kf_log "stopping kefud (pid $KEFUD_PID)"
        # shutdown_timeout defaults to 20 s; give it a little more before SIGKILL.
        kf_stop_pid "$KEFUD_PID" 30
        KEFUD_PID=""
        rm -f "$VAR/kefud.pid"
    fi
    if ((DB_STARTED)); then
        kf_db_stop "$VAR" || true
    fi
}
on_signal() {
    echo >&2
    kf_log "$1 received, shutting down"
    cleanup
    kf_log "stopped"
    exit 0
}
trap cleanup EXIT
trap 'on_signal SIGINT' INT
trap 'on_signal SIGTERM' TERM

mkdir -p "$VAR"
# One quickstart per state directory. fd 9 is closed for every long-running child (mariadbd,
# kefud) so that a leftover process never holds the lock.
exec 9>"$VAR/quickstart.lock"
if ! flock -n 9; then
    kf_die "another deploy/quickstart.sh is already running with $VAR"
    exit 1
fi

# 1. Packages (dpkg-query only, unless something is missing).
kf_install_packages

# 2. Release build (incremental).
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    kf_log "configuring $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKEFU_TESTS=OFF >/dev/null
fi
kf_log "building kefud"
cmake --build "$BUILD" -j2 -- --no-print-directory >"$VAR/build.log" 2>&1 || {
    tail -n 40 "$VAR/build.log" >&2
    kf_die "build failed (full log: $VAR/build.log)"
    exit 1
}
[[ -x $KEFUD ]] || { kf_die "build did not produce $KEFUD"; exit 1; }

# A kefud left behind by an earlier run that was killed (we start it in its own session).
if [[ -s $VAR/kefud.pid ]]; then
    old=$(tr -dc '0-9' <"$VAR/kefud.pid")
    if [[ -n $old && -r /proc/$old/cmdline ]] &&
        tr '\0' ' ' <"/proc/$old/cmdline" | grep -qF -- "--config $CONF "; then
        kf_log "stopping kefud pid $old left over from an earlier run"
        kf_stop_pid "$old" 30
    fi
    rm -f "$VAR/kefud.pid"
fi

# 3. Private MariaDB (reused when one from an earlier run is still up on our socket).
kf_db_init "$VAR" 9>&-
DB_STARTED=1
kf_db_start "$VAR" 9>&-
SOCK=$(kf_db_socket "$VAR")
kf_db_setup_app "$VAR" kefu kefu

# 4. Configuration.
LMTP=${KEFU_LMTP:-127.0.0.1:2424}
SMTP=${KEFU_SMTP:-127.0.0.1:2525}
cat >"$CONF.tmp" <<EOF
# Written by deploy/quickstart.sh on every start; KEFU_<KEY> environment variables override it.
listen = $HTTP
db_socket = $SOCK
db_name = kefu
db_user = kefu
db_password_file = $VAR/secrets/db_password
# Email: LMTP in (an MTA or swaks delivers here), SMTP out (outbound mail stays queued, with
# the reason shown, while nothing listens there).
lmtp_listen = $LMTP
smtp_host = ${SMTP%:*}
smtp_port = ${SMTP##*:}
webform_mailbox = support
EOF
mv -f "$CONF.tmp" "$CONF"

# 5. Schema and demo data.
kf_log "applying migrations"
"$KEFUD" --config "$CONF" migrate 9>&-
demo_out=$("$KEFUD" --config "$CONF" demo 9>&-)
LOGINS="$VAR/secrets/demo-logins.txt"
if grep -q 'login=.*password=' <<<"$demo_out"; then
    (umask 077 && grep 'login=.*password=' <<<"$demo_out" >"$LOGINS.tmp")
    mv -f "$LOGINS.tmp" "$LOGINS"
    chmod 0600 "$LOGINS"
elif [[ -n $demo_out ]]; then
    printf '%s\n' "$demo_out" >&2
fi

# ---- WeChat demo account (issue 6; channels/wechat) -------------------------------------------
# A demo Official Account "demo" in safe mode, so a WeChat test tool can be pointed at
# http://<addr>/hooks/wechat/demo. The defaults are for local trial only (the EncodingAESKey is
# WeChat's published sample key); set KEFU_WECHAT_TOKEN, KEFU_WECHAT_AESKEY (43 letters and
# digits) and KEFU_WECHAT_APPID to use your own. The timestamp window is off for this account so
# recorded sample requests can be replayed; `kefud admin wechat-account help` for the rest.
WECHAT_TOKEN=${KEFU_WECHAT_TOKEN:-kefudemo}
WECHAT_AESKEY=${KEFU_WECHAT_AESKEY:-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG}
WECHAT_APPID=${KEFU_WECHAT_APPID:-wxkefudemo00000000}
if ! "$KEFUD" --config "$CONF" admin wechat-account put --account demo --kind official \
        --name "Demo Official Account" --app-id "$WECHAT_APPID" --token "$WECHAT_TOKEN" \
        --aes-key "$WECHAT_AESKEY" --mode safe --timestamp-window 0 9>&- 2>"$VAR/wechat-demo.log"; then
    cat "$VAR/wechat-demo.log" >&2
    kf_die "could not set up the WeChat demo account (check KEFU_WECHAT_TOKEN, KEFU_WECHAT_AESKEY, KEFU_WECHAT_APPID)"
    exit 1
fi
# ---- end of the WeChat demo account ---------------------------------------------------------------

# Demo mailbox support@kefu.test on the first queue, acknowledging new requests.
if ! "$KEFUD" --config "$CONF" admin mailbox put --name support --address support@kefu.test \
        --display-name "Kefu Support" --queue general --ack 9>&- >"$VAR/mailbox-demo.log" 2>&1; then
    cat "$VAR/mailbox-demo.log" >&2
    kf_die "could not set up the demo mailbox"
    exit 1
fi

# 6. Serve. kefud runs in its own session so that Ctrl-C reaches only this script, which then
# stops kefud (SIGTERM, graceful) and MariaDB in that order. Its log goes to the terminal and
# to VAR/kefud.log.
LOG="$VAR/kefud.log"
: >>"$LOG"
log_start=$(wc -l <"$LOG")
setsid "$KEFUD" --config "$CONF" serve 9>&- </dev/null \
    2> >(trap '' INT TERM; exec tee -a "$LOG" >&2) &
KEFUD_PID=$!
echo "$KEFUD_PID" >"$VAR/kefud.pid"

addr=""
for ((i = 0; i < 600; i++)); do
    addr=$(tail -n +"$((log_start + 1))" "$LOG" | grep -o 'event=listening addr=[^ ]*' | head -n 1 || true)
    addr=${addr#event=listening addr=}
    addr=${addr//\"/}
    [[ -n $addr ]] && break
    kill -0 "$KEFUD_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $addr ]]; then
    if kf_wait_gone "$KEFUD_PID" 0; then
        KEFUD_PID=""
        rm -f "$VAR/kefud.pid"
        kf_die "kefud exited before listening (see $LOG)"
        exit 1
    fi
    addr=$HTTP # still starting: fall back to the configured address
fi
case $addr in
    0.0.0.0:*) addr="127.0.0.1:${addr#0.0.0.0:}" ;;
    \[::\]:*) addr="[::1]:${addr#\[::\]:}" ;;
esac

{
    echo
    echo "Kefu is running (kefud pid $KEFUD_PID, state in $VAR)"
    echo "  http://$addr/support/new            customer support form (English / 简体中文)"
    echo "  http://$addr/api/v1/openapi.json    the REST API (log in: POST /api/v1/session)"
    echo "  http://$addr/healthz  http://$addr/readyz  http://$addr/metrics"
    if [[ -s $LOGINS ]]; then
        echo "Demo logins (also in $LOGINS):"
        sed 's/^/  /' "$LOGINS"
    fi
    # WeChat demo account (issue 6)
    echo "WeChat demo Official Account (safe mode, local trial): http://$addr/hooks/wechat/demo"
    echo "  Token=$WECHAT_TOKEN EncodingAESKey=$WECHAT_AESKEY AppID=$WECHAT_APPID"
    echo "  (set KEFU_WECHAT_TOKEN / KEFU_WECHAT_AESKEY / KEFU_WECHAT_APPID to change them)"
    echo "Email: mailbox support@kefu.test; LMTP in on $LMTP, SMTP out to $SMTP (KEFU_LMTP, KEFU_SMTP)"
    echo "  swaks --protocol LMTP --server ${LMTP%:*} --port ${LMTP##*:} --to support@kefu.test \\"
    echo "        --from you@example.com --header 'Subject: Hello' --body 'My first mail to Kefu'"
    echo "Press Ctrl-C to stop kefud and MariaDB."
    echo
} >&2

rc=0
wait "$KEFUD_PID" || rc=$?
# kefud ended by itself (not through our trap, which exits).
KEFUD_PID=""
rm -f "$VAR/kefud.pid"
kf_log "kefud exited with status $rc"
exit "$rc"
