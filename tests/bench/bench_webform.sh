#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions invoked through trap
# tests/bench/bench_webform.sh — web form submissions per second through
# POST /api/v1/public/requests (JSON, a new customer and ticket each), against ticket creation
# through the agent API (POST /api/v1/tickets) on the same kefud and database, at each
# concurrency; target: the form at >= 80% of the API's rate.  The form's rate limits and minimum
# fill time are lifted by configuration (webform_rate_ip = webform_rate_email = 0,
# webform_min_fill = 0); everything else the form does (form token, honeypot, validation,
# ingest, portal link, acknowledgement in the outbox) runs as in production.
# Run on purpose (never by CI); see tests/bench/README.md.
#
# Environment: BENCH_DURATION (seconds per run, default 10), BENCH_CONCURRENCY (default "8 32"),
# BENCH_BUILD (build directory, default build-release).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/bench"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"

DURATION=${BENCH_DURATION:-10}
read -r -a CONCURRENCY <<<"${BENCH_CONCURRENCY:-8 32}"
BUILD=${BENCH_BUILD:-$ROOT/build-release}
KEFUD="$BUILD/kefud"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || kf_die "BENCH_DURATION must be a positive integer"
for c in "${CONCURRENCY[@]}"; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || kf_die "BENCH_CONCURRENCY: bad value $c"
done

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

# Release build of kefud (shared with deploy/quickstart.sh and the other benchmarks).
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKEFU_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD" -j2 >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kefu-bench-wf.XXXXXX")
chmod 0700 "$TMP"

# Private MariaDB with the default, durable settings (one fsync per commit), as in production.
unset KF_DB_EXTRA_ARGS
kf_db_init "$TMP"
kf_db_start "$TMP"
kf_db_setup_app "$TMP" kefu kefu
cat >"$TMP/kefud.conf" <<CONF
listen = 127.0.0.1:0
access_log = false
db_socket = $(kf_db_socket "$TMP")
db_name = kefu
db_user = kefu
db_password_file = $TMP/secrets/db_password
webform_categories = general:General support
webform_rate_ip = 0
webform_rate_email = 0
webform_min_fill = 0
CONF
"$KEFUD" --config "$TMP/kefud.conf" migrate
kf_db_root "INSERT INTO kefu.queue (name, slug) VALUES ('General', 'general')"
"$KEFUD" --config "$TMP/kefud.conf" admin create-token --role admin --name bench \
    >"$TMP/token" 2>"$TMP/admin.err" || { cat "$TMP/admin.err" >&2; kf_die "create-token failed"; }
TOKEN=$(tail -n 1 "$TMP/token")
TOKEN=${TOKEN##* }
# Default settings (io_threads=2, db_workers=8, log_level=info) except the per-request access log.
"$KEFUD" --config "$TMP/kefud.conf" serve 2>"$TMP/kefud.log" &
KEFUD_PID=$!

ADDR=""
for ((i = 0; i < 300; i++)); do
    ADDR=$(grep -o 'event=listening addr=[^ ]*' "$TMP/kefud.log" 2>/dev/null | head -n 1 || true)
    [[ -n $ADDR ]] && break
    kill -0 "$KEFUD_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -n $ADDR ]] || { tail -n 20 "$TMP/kefud.log" >&2; kf_die "kefud did not start"; }
ADDR=${ADDR#event=listening addr=}
BASE="http://${ADDR//\"/}"

FORM_TOKEN=$(python3 - "$BASE" <<'PY'
import json, sys, time, urllib.request
base = sys.argv[1]
for _ in range(300):
    try:
        if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
            break
    except Exception:
        pass
    time.sleep(0.1)
else:
    sys.exit("kefud did not become ready")
with urllib.request.urlopen(base + "/api/v1/public/form", timeout=10) as r:
    print(json.load(r)["form_token"])
PY
)

# to_ms VALUE: wrk's "812.00us" / "1.23ms" / "1.02s" -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

declare -A RPS=()
printf '\nwrk: %ss per run, %s cores; new customer + ticket per request; durable commits\n\n' \
    "$DURATION" "$(nproc)"
fmt='%-8s %11s %11s %9s %9s %8s  %s\n'
# shellcheck disable=SC2059 # the format is a variable on purpose
printf "$fmt" target concurrency requests/s p50_ms p99_ms errors statuses
run=0
for c in "${CONCURRENCY[@]}"; do
    for target in api form; do
        run=$((run + 1))
        t=$((c < 2 ? 1 : 2))
        if [[ $target == api ]]; then tok=$TOKEN; else tok=$FORM_TOKEN; fi
        out=$(wrk -t"$t" -c"$c" -d"${DURATION}s" --latency -s "$HERE/webform_post.lua" "$BASE" \
            -- "$target" "$tok" "r$run-$$")
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
        sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
        st=$(awk '/^status:/ {sub(/^status: /, ""); print}' <<<"$out")
        RPS[$target:$c]=${rps:-0}
        # shellcheck disable=SC2059
        printf "$fmt" "$target" "$c" "${rps:-?}" "$(to_ms "${p50:-0}")" "$(to_ms "${p99:-0}")" \
            "$((${non2xx:-0} + ${sockerr:-0}))" "$st"
    done
done
echo
for c in "${CONCURRENCY[@]}"; do
    awk -v f="${RPS[form:$c]}" -v a="${RPS[api:$c]}" -v c="$c" 'BEGIN {
        r = a > 0 ? f / a * 100 : 0
        printf "c=%s: form/API = %.0f%% (target >= 80%%): %s\n", c, r, r >= 80 ? "met" : "NOT met" }'
done
tickets=$(kf_db_root "SELECT COUNT(*) FROM kefu.ticket")
acks=$(kf_db_root "SELECT COUNT(*) FROM kefu.outbox WHERE kind = 'ack' AND channel = 'email'")
echo "tickets made: $tickets; web form acknowledgements queued: $acks"
