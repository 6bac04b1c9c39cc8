#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions invoked through trap
# tests/bench/bench.sh — HTTP throughput/latency of kefud against a bare libevent baseline.
# Run on purpose (never by CI); see tests/bench/README.md.
#
# Environment: BENCH_DURATION (seconds per run, default 10), BENCH_CONCURRENCY (default "1 8 64"),
# BENCH_LOG_LEVEL (kefud log_level; default: kefud's default, info), BENCH_ACCESS_LOG (1 = keep
# kefud's per-request access log lines; default 0).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"

DURATION=${BENCH_DURATION:-10}
read -r -a CONCURRENCY <<<"${BENCH_CONCURRENCY:-1 8 64}"
BUILD="$ROOT/build-release"
KEFUD="$BUILD/kefud"

TMP=""
HELLO_PID=""
KEFUD_PID=""
CLEANED=0
cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    trap '' INT TERM
    [[ -n $HELLO_PID ]] && kf_stop_pid "$HELLO_PID" 10
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

# Release build of kefud (shared with deploy/quickstart.sh).
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKEFU_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD" -j2 >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kefu-bench.XXXXXX")
chmod 0700 "$TMP"

# Baseline server.
# shellcheck disable=SC2046 # pkg-config output is a list of flags
cc -O2 -o "$TMP/hello" "$ROOT/tests/bench/hello.c" $(pkg-config --cflags --libs libevent)
"$TMP/hello" 127.0.0.1 0 >"$TMP/hello.out" 2>&1 &
HELLO_PID=$!

# Private MariaDB + kefud on a free port.
kf_db_init "$TMP"
kf_db_start "$TMP"
kf_db_setup_app "$TMP" kefu kefu
LISTEN=127.0.0.1:0
if [[ -n ${BENCH_LOG_LEVEL:-} ]]; then
    # The event=listening line may not be logged at that level: pick a free port beforehand.
    LISTEN=127.0.0.1:$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
cat >"$TMP/kefud.conf" <<EOF
listen = $LISTEN
${BENCH_LOG_LEVEL:+log_level = $BENCH_LOG_LEVEL}
access_log = ${BENCH_ACCESS_LOG:-0}
db_socket = $(kf_db_socket "$TMP")
db_name = kefu
db_user = kefu
db_password_file = $TMP/secrets/db_password
EOF
"$KEFUD" --config "$TMP/kefud.conf" migrate
# Default settings (log_level=info, io_threads=2, db_workers=8) except the per-request access
# log, off unless BENCH_ACCESS_LOG=1: one write(2) per request measures the log, not the server.
"$KEFUD" --config "$TMP/kefud.conf" serve 2>"$TMP/kefud.log" &
KEFUD_PID=$!

# wait_addr FILE PATTERN PID: print the address a server announced.
wait_addr() {
    local file=$1 pat=$2 pid=$3 a i
    for ((i = 0; i < 300; i++)); do
        a=$(grep -o "${pat}[^ ]*" "$file" 2>/dev/null | head -n 1 || true)
        if [[ -n $a ]]; then
            a=${a#"$pat"}
            printf '%s\n' "${a//\"/}"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kf_log "no address from pid $pid; its output:"
    tail -n 20 "$file" >&2
    return 1
}
HELLO_ADDR=$(wait_addr "$TMP/hello.out" 'listening ' "$HELLO_PID")
if [[ -n ${BENCH_LOG_LEVEL:-} ]]; then
    KEFU_ADDR=$LISTEN
else
    KEFU_ADDR=$(wait_addr "$TMP/kefud.log" 'event=listening addr=' "$KEFUD_PID")
fi

# Wait until kefud is ready (DB connected, migrations current).
python3 - "http://$KEFU_ADDR/readyz" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200:
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit("kefud did not become ready: " + sys.argv[1])
PY

lines_before=$(wc -l <"$TMP/kefud.log")

# to_ms VALUE: wrk's "812.00us" / "1.23ms" / "1.02s" -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

declare -A RPS=()
printf '\nwrk: %ss per run, %s cores\n\n' "$DURATION" "$(nproc)"
fmt='%-14s %11s %13s %10s %10s %8s\n'
# shellcheck disable=SC2059 # the format is a variable on purpose
printf "$fmt" target concurrency requests/s p50_ms p99_ms errors
for target in hello healthz readyz; do
    case $target in
        hello) url="http://$HELLO_ADDR/" ;;
        healthz) url="http://$KEFU_ADDR/healthz" ;;
        readyz) url="http://$KEFU_ADDR/readyz" ;;
    esac
    for c in "${CONCURRENCY[@]}"; do
        t=$((c < 2 ? 1 : 2))
        out=$(wrk -t"$t" -c"$c" -d"${DURATION}s" --latency "$url")
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
        sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
        errors=$((${non2xx:-0} + ${sockerr:-0}))
        RPS[$target:$c]=${rps:-0}
        # shellcheck disable=SC2059
        printf "$fmt" "$target" "$c" "${rps:-?}" "$(to_ms "${p50:-0}")" "$(to_ms "${p99:-0}")" "$errors"
    done
done

echo
for c in "${CONCURRENCY[@]}"; do
    awk -v c="$c" -v k="${RPS[healthz:$c]}" -v h="${RPS[hello:$c]}" \
        'BEGIN { printf "healthz/hello at concurrency %s: %.2f\n", c, (h > 0 ? k / h : 0) }'
done

logged=$(($(wc -l <"$TMP/kefud.log") - lines_before))
echo
echo "kefud wrote $logged log lines during the runs (log_level ${BENCH_LOG_LEVEL:-default})."
