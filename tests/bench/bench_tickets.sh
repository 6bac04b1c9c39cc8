#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions invoked through trap
# tests/bench/bench_tickets.sh — ticket-core benchmark (issue 3): ticket creation and reads over
# the REST API with durable commits, MariaDB's bare single-row INSERT commit rate as the ceiling,
# and the list of a queue's open tickets with BENCH_SEED tickets in the database.
# Run on purpose (never by CI); see tests/bench/README.md.
#
# Environment: BENCH_DURATION (seconds per wrk / ceiling run, default 10), BENCH_CONCURRENCY
# (default "1 8 32 64"), BENCH_SEED (tickets in the database for the list measurement, default
# 1000000; 0 skips seeding and the list), BENCH_LIST_REQUESTS (timed list requests, default 200),
# BENCH_ROLE (role of the API token used: agent (default; bound to an agent who is a member of
# the bench queues), supervisor or admin), BENCH_QUEUES (queues created, default 4),
# BENCH_BUILD (build directory, default build-release).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/bench"
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"

DURATION=${BENCH_DURATION:-10}
read -r -a CONCURRENCY <<<"${BENCH_CONCURRENCY:-1 8 32 64}"
SEED=${BENCH_SEED:-1000000}
LIST_REQUESTS=${BENCH_LIST_REQUESTS:-200}
ROLE=${BENCH_ROLE:-agent}
NQUEUES=${BENCH_QUEUES:-4}
BUILD=${BENCH_BUILD:-$ROOT/build-release}
KEFUD="$BUILD/kefud"

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || kf_die "BENCH_DURATION must be a positive integer"
[[ $SEED =~ ^[0-9]+$ ]] || kf_die "BENCH_SEED must be a number"
[[ $LIST_REQUESTS =~ ^[1-9][0-9]*$ ]] || kf_die "BENCH_LIST_REQUESTS must be a positive integer"
[[ $NQUEUES =~ ^[1-9][0-9]?$ ]] || kf_die "BENCH_QUEUES must be 1..99"
case $ROLE in
    agent | supervisor | admin) ;;
    *) kf_die "BENCH_ROLE must be agent, supervisor or admin" ;;
esac
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

# Release build of kefud (shared with deploy/quickstart.sh and bench.sh).
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DKEFU_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD" -j2 >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kefu-bench.XXXXXX")
chmod 0700 "$TMP"

# Private MariaDB with the default, durable settings (innodb_flush_log_at_trx_commit=1): no
# KF_DB_EXTRA_ARGS relaxations here, whatever the caller's environment says.
unset KF_DB_EXTRA_ARGS
kf_db_init "$TMP"
kf_db_start "$TMP"
kf_db_setup_app "$TMP" kefu kefu
MYSQLD_PID=$(tr -dc '0-9' <"$TMP/mysqld.pid")
flush=$(kf_db_root "SELECT @@innodb_flush_log_at_trx_commit")
[[ $flush == 1 ]] || kf_die "innodb_flush_log_at_trx_commit is $flush, not 1"
cat >"$TMP/kefud.conf" <<EOF
listen = 127.0.0.1:0
access_log = false
db_socket = $(kf_db_socket "$TMP")
db_name = kefu
db_user = kefu
db_password_file = $TMP/secrets/db_password
EOF
"$KEFUD" --config "$TMP/kefud.conf" migrate
# Default settings (io_threads=2, db_workers=8, log_level=info) except the per-request access log.
"$KEFUD" --config "$TMP/kefud.conf" serve 2>"$TMP/kefud.log" &
KEFUD_PID=$!

KEFU_ADDR=""
for ((i = 0; i < 300; i++)); do
    KEFU_ADDR=$(grep -o 'event=listening addr=[^ ]*' "$TMP/kefud.log" 2>/dev/null |
        head -n 1 || true)
    [[ -n $KEFU_ADDR ]] && break
    kill -0 "$KEFUD_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $KEFU_ADDR ]]; then
    tail -n 20 "$TMP/kefud.log" >&2
    kf_die "kefud did not start"
fi
KEFU_ADDR=${KEFU_ADDR#event=listening addr=}
KEFU_ADDR=${KEFU_ADDR//\"/}
BASE="http://$KEFU_ADDR"

# admin ARGS...: `kefud admin ARGS...`; its messages go to a file, shown when it fails.
admin() {
    "$KEFUD" --config "$TMP/kefud.conf" admin "$@" 2>"$TMP/admin.err" && return 0
    cat "$TMP/admin.err" >&2
    kf_die "kefud admin $1 failed"
}

# Ready, then the fixtures: queues, an agent in all of them, tokens. The admin token (from the
# command line) is used for the set-up only; the runs use a BENCH_ROLE token.
ADMIN_TOKEN=$(admin create-token --role admin --name bench-admin)
python3 - "$BASE" "$ADMIN_TOKEN" "$NQUEUES" >"$TMP/fixtures" <<'PY'
import json, secrets, sys, time, urllib.request
base, token, nq = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(300):
    try:
        if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
            break
    except Exception:
        pass
    time.sleep(0.1)
else:
    sys.exit("kefud did not become ready")
def call(method, path, body):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)
queues = [call("POST", "/api/v1/queues", {"name": "Bench %d" % i, "slug": "bench-%d" % i})["id"]
          for i in range(1, nq + 1)]
call("POST", "/api/v1/agents", {"login": "bench-agent", "display_name": "Bench Agent",
                                "email": "bench-agent@bench.example", "role": "agent",
                                "password": secrets.token_urlsafe(18), "queue_ids": queues})
print(",".join(str(q) for q in queues))
PY
QUEUES=$(cat "$TMP/fixtures")
if [[ $ROLE == agent ]]; then
    TOKEN=$(admin create-token --role agent --name bench --agent bench-agent)
else
    TOKEN=$(admin create-token --role "$ROLE" --name bench)
fi

# to_ms VALUE: wrk's "812.00us" / "1.23ms" / "1.02s" -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

# cpu_ticks PID: user + system clock ticks the process has used so far.
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
HZ=$(getconf CLK_TCK)
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
questions() { kf_db_root "SHOW GLOBAL STATUS LIKE 'Questions'" | awk '{print $2}'; }

# children_cpu FILE: CPU seconds this shell's finished children (wrk, mariadb-slap) had used when
# `times` wrote FILE. `times` must run in this shell itself, never in a $(...) subshell.
children_cpu() {
    awk 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
        printf "%.3f", t }' "$1"
}

# meter_start / meter_stop REQUESTS: where the CPU went during a run, in % of one core (the
# five figures add up to about nproc x 100): kefud, mariadbd, the load generator (wrk or
# mariadb-slap, a child of this shell), everything else on the machine, and idle; then the
# statements MariaDB executed per request (its Questions counter). meter_stop sets METER to
# "kefud% mariadbd% client% other% idle% stmts/req".
meter_start() {
    M_K=$(cpu_ticks "$KEFUD_PID")
    M_M=$(cpu_ticks "$MYSQLD_PID")
    times >"$TMP/times.start"
    M_Q=$(questions)
    M_S=$(head -n 1 /proc/stat)
    M_T=$(now)
}
meter_stop() {
    local k m st q t
    st=$(head -n 1 /proc/stat)
    t=$(now)
    k=$(cpu_ticks "$KEFUD_PID")
    m=$(cpu_ticks "$MYSQLD_PID")
    times >"$TMP/times.stop"
    q=$(questions)
    METER=$(awk -v k0="$M_K" -v k1="$k" -v m0="$M_M" -v m1="$m" \
        -v c0="$(children_cpu "$TMP/times.start")" -v c1="$(children_cpu "$TMP/times.stop")" \
        -v t0="$M_T" -v t1="$t" -v hz="$HZ" -v q0="$M_Q" -v q1="$q" -v n="$1" \
        -v s0="$M_S" -v s1="$st" 'BEGIN {
            secs = t1 - t0
            split(s0, a); split(s1, b); tot = 0
            for (i = 2; i <= 9; i++) tot += b[i] - a[i]   # user..steal, not guest (in user)
            idle = (b[5] - a[5]) + (b[6] - a[6])           # idle + iowait
            kp = (k1 - k0) / hz / secs * 100; mp = (m1 - m0) / hz / secs * 100
            cp = (c1 - c0) / secs * 100; ip = idle / hz / secs * 100
            op = (tot - idle) / hz / secs * 100 - kp - mp - cp
            printf "%.0f %.0f %.0f %.0f %.0f %.1f", kp, mp, cp, (op > 0 ? op : 0), ip,
                   (n > 0 ? (q1 - q0 - 1) / n : 0) }')
}

fmt='%-19s %4s %9s %8s %8s %7s %7s %9s %7s %7s %6s %10s\n'
row() { # target c rate p50 p99 errors kefud% mariadbd% client% other% idle% stmts/req
    # shellcheck disable=SC2059 # the format is a variable on purpose
    printf "$fmt" "$@"
}
declare -A RATE=() P99=()

# wrk_run NAME C SCRIPT ARGS...: one wrk run; a table row; RATE/P99[NAME:C].
wrk_run() {
    local name=$1 c=$2 script=$3 t out rps p50 p99 non2xx sockerr nreq
    shift 3
    t=$((c < 2 ? 1 : 2))
    meter_start
    out=$(wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 10s --latency -s "$script" "$BASE" \
        -- "$@")
    nreq=$(awk '/ requests in / {print $1}' <<<"$out")
    meter_stop "${nreq:-0}"
    printf '%s\n' "$out" >>"$TMP/wrk.log"
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
    sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
    RATE[$name:$c]=${rps:-0}
    P99[$name:$c]=$(to_ms "${p99:-0}")
    # shellcheck disable=SC2086 # METER is six words
    row "$name" "$c" "${rps:-?}" "$(to_ms "${p50:-0}")" "${P99[$name:$c]}" \
        "$((${non2xx:-0} + ${sockerr:-0}))" $METER
    { grep '^status:' <<<"$out" || echo "status: ?"; } |
        sed "s|^status:|$name c=$c: HTTP|" >>"$TMP/status.log"
}

# slap NUMBER C: mariadb-slap, NUMBER autocommit single-row INSERTs from C connections; prints
# the average seconds it took.
slap() {
    local out secs
    out=$(mariadb-slap --no-defaults --socket="$KF_DB_SOCKET" -u"$KF_DB_ROOT_USER" \
        --create-schema=bench_ceiling --auto-generate-sql --auto-generate-sql-load-type=write \
        --auto-generate-sql-add-autoincrement --concurrency="$2" --number-of-queries="$1" \
        --iterations=1 2>&1) || true
    secs=$(awk '/Average number of seconds to run all queries:/ {print $(NF-1)}' <<<"$out")
    if [[ -z $secs ]]; then
        printf '%s\n' "$out" >&2
        kf_die "mariadb-slap failed"
        return 1
    fi
    printf '%s\n' "$secs"
}

# ceiling_run C: a short calibration, then about DURATION seconds of INSERTs.
ceiling_run() {
    local c=$1 n secs rate
    n=$((c * 100 > 1000 ? c * 100 : 1000))
    secs=$(slap "$n" "$c")
    n=$(awk -v n="$n" -v s="$secs" -v d="$DURATION" -v c="$c" \
        'BEGIN { r = (s > 0 ? n / s : 1000) * d; r = int(r / c) * c; print (r < c ? c : r) }')
    meter_start
    secs=$(slap "$n" "$c")
    meter_stop "$n"
    rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.2f", (s > 0 ? n / s : 0) }')
    RATE[ceiling:$c]=$rate
    # shellcheck disable=SC2086 # METER is six words
    row "INSERT ceiling" "$c" "$rate" - - - $METER
}

# db_table SQL: run SQL as the superuser in the kefu database; print the result as a table.
db_table() {
    mariadb --no-defaults --socket="$KF_DB_SOCKET" -u"$KF_DB_ROOT_USER" -B kefu -e "$1" |
        column -t -s $'\t' | sed 's/^/  /'
}

count_tickets() { kf_db_root "SELECT COUNT(*) FROM kefu.ticket"; }

printf '\nkefud %s (%s), MariaDB %s, innodb_flush_log_at_trx_commit=%s, token role %s\n' \
    "$("$KEFUD" --version 2>/dev/null | head -n 1)" "$BUILD" \
    "$(kf_db_root 'SELECT VERSION()')" "$flush" "$ROLE"
printf '%s cores, load average at start: %s\n' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
cat <<EOF
wrk: ${DURATION}s per run. CPU columns: % of one core used during the run by kefud, mariadbd,
the load generator (wrk / mariadb-slap), everything else (kernel network work, other users of
the machine: it may be shared) and left idle; they add up to about $(($(nproc) * 100)).
stmts/req: statements MariaDB executed per request (its Questions counter).

EOF
row target c per_s p50_ms p99_ms errors kefud% mariadbd% client% other% idle% stmts/req

# 1. Creation, with the ceiling measured next to it at each concurrency.
RUN_TAG="r$(date +%s)-$$"
before=$(count_tickets)
for c in "${CONCURRENCY[@]}"; do
    ceiling_run "$c"
    wrk_run "POST /tickets" "$c" "$HERE/tickets_post.lua" "$TOKEN" "$RUN_TAG-c$c" "$QUEUES"
done
created=$(($(count_tickets) - before))

# 2. Reads of the tickets just created (each has its one message).
kf_db_root "SELECT id FROM kefu.ticket ORDER BY id LIMIT 200000" >"$TMP/ids"
for c in "${CONCURRENCY[@]}"; do
    wrk_run "GET /tickets/{id}" "$c" "$HERE/tickets_get.lua" "$TOKEN" "$TMP/ids"
done
echo
echo "POST runs created $created tickets. HTTP status counts per run:"
sed 's/^/  /' "$TMP/status.log"

# 3. The list of one queue's open tickets with SEED tickets in the database.
if ((SEED > 0)); then
    echo
    s0=$(now)
    "$HERE/seed_tickets.sh" "$SEED" --no-defaults --socket="$KF_DB_SOCKET" \
        -u"$KF_DB_ROOT_USER" kefu
    seed_secs=$(elapsed "$s0" "$(now)")
    Q1=${QUEUES%%,*}
    total=$(count_tickets)
    open_q=$(kf_db_root "SELECT COUNT(*) FROM kefu.ticket
        WHERE queue_id = $Q1 AND status = 'open'")
    in_q=$(kf_db_root "SELECT COUNT(*) FROM kefu.ticket WHERE queue_id = $Q1")
    printf '\nlist: %s tickets in the database, %s in queue %s, %s of them open' \
        "$total" "$in_q" "$Q1" "$open_q"
    printf ' (seeding took %s s)\n' "$seed_secs"

    # Capture the statement kefud executes (general log, one request), for EXPLAIN below.
    kf_db_root "SET GLOBAL log_output = 'TABLE'; TRUNCATE TABLE mysql.general_log;
        SET GLOBAL general_log = 1"
    curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" \
        "$BASE/api/v1/tickets?queue_id=$Q1&status=open&limit=50"
    kf_db_root "SET GLOBAL general_log = 0"
    list_sql=$(kf_db_root "SELECT argument FROM mysql.general_log
        WHERE command_type = 'Execute'
          AND argument LIKE 'SELECT %FROM ticket t %ORDER BY t.updated_at DESC%'
        ORDER BY event_time DESC LIMIT 1")
    kf_db_root "TRUNCATE TABLE mysql.general_log"

    python3 - "$BASE" "$TOKEN" "$Q1" "$LIST_REQUESTS" "$TMP/list.out" <<'PY'
import http.client, json, sys, time, urllib.parse
base, token, queue, result = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5]
n = int(sys.argv[4])
netloc = urllib.parse.urlsplit(base).netloc
conn = http.client.HTTPConnection(netloc, timeout=30)
headers = {"Authorization": "Bearer " + token, "Accept": "application/json"}
last_size = 0
def get(path, fresh=False):
    global conn, last_size
    if fresh:
        conn.close()
        conn = http.client.HTTPConnection(netloc, timeout=30)
    t0 = time.perf_counter()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    dt = (time.perf_counter() - t0) * 1000
    last_size = len(body)
    if r.status != 200:
        sys.exit("list: %s -> %d %s" % (path, r.status, body[:300]))
    return dt, json.loads(body)
first = "/api/v1/tickets?queue_id=%s&status=open&limit=50" % queue
_, page = get(first)
if len(page["items"]) != 50 or page["next"] is None:
    print("list: warning: the first page has %d items, next %r"
          % (len(page["items"]), page["next"]))
second = first + "&after=" + urllib.parse.quote(page["next"] or "")
for _ in range(20):  # warm up
    get(first)
    get(second)
def run(path, fresh):
    ts = sorted(get(path, fresh)[0] for _ in range(n))
    pick = lambda q: ts[min(len(ts) - 1, int(q * len(ts)))]
    return pick(0.50), pick(0.99), ts[-1]
out = open(result, "w")
for key, label, path, fresh in (
        ("first", "first page", first, False),
        ("second", "second page (after=)", second, False),
        ("fresh", "first page, new connection each", first, True)):
    p50, p99, mx = run(path, fresh)
    print("list %-33s %d requests, %d-byte replies: p50 %.3f ms, p99 %.3f ms, max %.3f ms"
          % (label + ":", n, last_size, p50, p99, mx))
    out.write("%s %.3f %.3f\n" % (key, p50, p99))
PY

    echo
    if [[ -n $list_sql ]]; then
        echo "The list statement kefud executed (from the general log):"
        printf '  %s\n\nEXPLAIN:\n' "$list_sql"
        db_table "EXPLAIN $list_sql"
        echo
        echo "ANALYZE (the statement run once more; r_rows = rows actually read):"
        db_table "ANALYZE $list_sql"
    else
        echo "(could not find kefud's list statement in the general log; no EXPLAIN)"
    fi
fi

# Summary against the issue's targets.
echo
echo "Summary (issue 3 targets):"
# verdict VALUE TARGET OP: "met" when VALUE OP TARGET (OP is >= or <), else "NOT met".
verdict() {
    awk -v v="$1" -v t="$2" -v op="$3" \
        'BEGIN { ok = (op == ">=" ? v >= t : v < t); print (ok ? "met" : "NOT met") }'
}
best_get=0
for c in "${CONCURRENCY[@]}"; do
    best_get=$(awk -v a="$best_get" -v b="${RATE[GET /tickets/{id}:$c]:-0}" \
        'BEGIN { print (b > a ? b : a) }')
done
if [[ -n ${RATE[POST /tickets:32]:-} ]]; then
    printf '  creation at c=32: %s tickets/s (target >= 2500: %s; ceiling %s commits/s)\n' \
        "${RATE[POST /tickets:32]}" "$(verdict "${RATE[POST /tickets:32]}" 2500 '>=')" \
        "${RATE[ceiling:32]}"
fi
if [[ -n ${P99[POST /tickets:8]:-} ]]; then
    printf '  creation p99 at c=8: %s ms (target < 25: %s)\n' \
        "${P99[POST /tickets:8]}" "$(verdict "${P99[POST /tickets:8]}" 25 '<')"
fi
printf '  reads, best concurrency: %s/s (target >= 10000: %s)\n' \
    "$best_get" "$(verdict "$best_get" 10000 '>=')"
if ((SEED > 0)) && [[ -s $TMP/list.out ]]; then
    read -r _ lp50 lp99 < <(grep '^first ' "$TMP/list.out")
    read -r _ fp50 fp99 < <(grep '^fresh ' "$TMP/list.out")
    printf "  list of a queue's open tickets, %s tickets: p50 %s ms, p99 %s ms on a keep-alive\n" \
        "$total" "$lp50" "$lp99"
    printf '    connection (target < 10: %s); p50 %s ms, p99 %s ms with a new connection each\n' \
        "$(verdict "$lp99" 10 '<')" "$fp50" "$fp99"
fi
printf '  load average at end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
