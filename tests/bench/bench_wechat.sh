#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions invoked through trap
# tests/bench/bench_wechat.sh — WeChat webhook pushes per second, plaintext and safe mode.
# Run on purpose (never by CI). Issue 6's target: >= 2,000 pushes/s with p99 well under 100 ms.
#
# Every request is a new, correctly signed push (safe mode: encrypted, fresh random) from one of
# BENCH_WECHAT_USERS followers; kefud checks it, ingests it (dedupe receipt, customer, threading
# onto the follower's ticket, message, events) and commits before answering "success" — the
# whole path WeChat waits 5 seconds for. wrk replays pushes pre-signed by wechat_gen.py.
#
#   tests/bench/bench_wechat.sh                        plain and safe, c=8 and 32, 10 s each
#   BENCH_DURATION=5 BENCH_CONCURRENCY="32" tests/bench/bench_wechat.sh
#
# Environment: BENCH_DURATION (seconds per run, default 10), BENCH_CONCURRENCY (default "8 32"),
# BENCH_MODES (default "plain safe"), BENCH_WECHAT_REQUESTS (distinct pushes generated per run,
# default 60000), BENCH_WECHAT_USERS (followers, default 1000), BENCH_BUILD (build directory,
# default build-release), BENCH_DB_WORKERS (kefud db_workers, default kefud's).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"

DURATION=${BENCH_DURATION:-10}
read -r -a CONCURRENCY <<<"${BENCH_CONCURRENCY:-8 32}"
read -r -a MODES <<<"${BENCH_MODES:-plain safe}"
NREQ=${BENCH_WECHAT_REQUESTS:-60000}
USERS=${BENCH_WECHAT_USERS:-1000}
BUILD=${BENCH_BUILD:-$ROOT/build-release}
KEFUD="$BUILD/kefud"

TMP=""
KEFUD_PID=""
CLEANED=0
cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    trap '' INT TERM
    [[ -n $KEFUD_PID ]] && kf_stop_pid "$KEFUD_PID" 30
    if [[ -n $TMP && -d $TMP ]]; then
        kf_db_stop "$TMP" || true
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'echo >&2; kf_log "interrupted"; cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

kf_install_packages

if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKEFU_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD" -j2 >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kefu-bench-wx.XXXXXX")
chmod 0700 "$TMP"

# Private MariaDB (default, durable settings) and kefud with default settings, access log off.
kf_db_init "$TMP"
kf_db_start "$TMP"
kf_db_setup_app "$TMP" kefu kefu
cat >"$TMP/kefud.conf" <<EOF
listen = 127.0.0.1:0
access_log = 0
db_socket = $(kf_db_socket "$TMP")
db_name = kefu
db_user = kefu
db_password_file = $TMP/secrets/db_password
${BENCH_DB_WORKERS:+db_workers = $BENCH_DB_WORKERS}
EOF
"$KEFUD" --config "$TMP/kefud.conf" migrate

# One account per mode, with its own token, key and AppID.
declare -A APPID=() TOKEN=() AESKEY=()
for mode in "${MODES[@]}"; do
    APPID[$mode]=wx$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
    TOKEN[$mode]=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-16)
    AESKEY[$mode]=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-43)
    "$KEFUD" --config "$TMP/kefud.conf" admin wechat-account add --account "b$mode" \
        --kind official --mode "$mode" --app-id "${APPID[$mode]}" --token "${TOKEN[$mode]}" \
        --aes-key "${AESKEY[$mode]}" 2>/dev/null
done

"$KEFUD" --config "$TMP/kefud.conf" serve 2>"$TMP/kefud.log" &
KEFUD_PID=$!
addr=""
for ((i = 0; i < 300; i++)); do
    addr=$(grep -o 'event=listening addr=[^ ]*' "$TMP/kefud.log" 2>/dev/null | head -n 1 || true)
    [[ -n $addr ]] && break
    kill -0 "$KEFUD_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -n $addr ]] || { tail -n 20 "$TMP/kefud.log" >&2; kf_die "kefud did not start"; exit 1; }
addr=${addr#event=listening addr=}
addr=${addr//\"/}

# to_ms VALUE: wrk's "812.00us" / "1.23ms" / "1.02s" -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

printf '\nwrk: %ss per run, %s cores, %s followers, kefud %s\n\n' "$DURATION" "$(nproc)" \
    "$USERS" "$addr"
fmt='%-6s %11s %12s %10s %10s %8s %8s\n'
# shellcheck disable=SC2059 # the format is a variable on purpose
printf "$fmt" mode concurrency pushes/s p50_ms p99_ms errors repeats
total=0
run=0
for mode in "${MODES[@]}"; do
    for c in "${CONCURRENCY[@]}"; do
        run=$((run + 1))
        t=$((c < 2 ? 1 : 2))
        # Signed now (the default timestamp window is 5 minutes), unique MsgIds per run.
        python3 "$ROOT/tests/bench/wechat_gen.py" "b$mode" "$mode" "${APPID[$mode]}" \
            "${TOKEN[$mode]}" "${AESKEY[$mode]}" "$NREQ" "$USERS" "run$run-$$" >"$TMP/reqs.txt"
        out=$(BENCH_WRK_THREADS=$t wrk -t"$t" -c"$c" -d"${DURATION}s" --latency \
            -s "$ROOT/tests/bench/wechat_push.lua" "http://$addr" -- "$TMP/reqs.txt")
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        wraps=$(awk '/^wrapped:/ {print $2}' <<<"$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
        sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
        errors=$((${non2xx:-0} + ${sockerr:-0}))
        repeats=0
        if ((${wraps:-0} > 0 && ${reqs:-0} > NREQ)); then repeats=$((reqs - NREQ)); fi
        total=$((total + ${reqs:-0} - repeats))
        # shellcheck disable=SC2059
        printf "$fmt" "$mode" "$c" "${rps:-?}" "$(to_ms "${p50:-0}")" "$(to_ms "${p99:-0}")" \
            "$errors" "$repeats"
    done
done

# Nothing lost: every distinct push answered 200 is a stored message (wrk may stop counting a
# few requests in flight that kefud still committed, so stored >= answered).
stored=$(kf_db_root "SELECT COUNT(*) FROM kefu.message WHERE channel = 'wechat'")
tickets=$(kf_db_root "SELECT COUNT(*) FROM kefu.ticket WHERE channel = 'wechat'")
echo
echo "distinct pushes answered: $total; WeChat messages stored: $stored in $tickets tickets"
if ((stored < total)); then
    kf_die "fewer messages stored than pushes answered"
    exit 1
fi
errs=$(grep -c 'level=err' "$TMP/kefud.log" || true)
echo "kefud error lines: $errs"
