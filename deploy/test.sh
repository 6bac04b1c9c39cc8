#!/usr/bin/env bash
# shellcheck disable=SC2317 # functions invoked through trap
# deploy/test.sh — build Kefu twice (build/ and build-asan/ with ASan+UBSan) and run every test
# against a private, throw-away MariaDB. This is what .ci/run calls.
#
# Environment:
#   KEFU_TEST_FILTER   regex passed to ctest -R (run only matching tests)
#   KEFU_TEST_NO_ASAN  set to 1 to skip the sanitizer build and run (quicker local iterations)
#   KEFU_TEST_NO_FUZZ  set to 1 to skip the clang libFuzzer build and its smoke runs
#   CTEST_PARALLEL_LEVEL  honoured by ctest as usual (default: tests run one at a time)
#
# Exported to the tests:
#   KEFU_TEST_DB_SOCKET     unix socket of the private MariaDB
#   KEFU_TEST_DB_ROOT_USER  superuser on that socket (unix_socket auth, no password): tests create
#                           and drop their own databases and users through it
#   KEFU_TEST_TMPDIR        scratch directory removed at exit
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib.sh
. "$ROOT/deploy/lib.sh"
cd "$ROOT"

VAR=""
CTEST_PID=""
CLEANED=0
cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    trap '' INT TERM
    if [[ -n $CTEST_PID ]]; then
        # ctest runs in its own process group (see run_ctest): stop it and every test process.
        kill -TERM -- "-$CTEST_PID" 2>/dev/null || true
        kf_wait_gone "$CTEST_PID" 10 || true
        kill -KILL -- "-$CTEST_PID" 2>/dev/null || true
        CTEST_PID=""
    fi
    if [[ -n $VAR && -d $VAR ]]; then
        kf_db_stop "$VAR" || true
        rm -rf "$VAR"
    fi
}
trap cleanup EXIT
trap 'echo >&2; kf_log "interrupted"; cleanup; exit 130' INT
trap 'kf_log "terminated"; cleanup; exit 143' TERM

section() { printf '\n==== %s ====\n' "$*"; }

section "packages"
kf_install_packages

section "browser test dependencies (tests/e2e)"
# playwright-core, exactly as the lockfile says; node_modules/ is not in git.  Reinstalled when
# missing or older than the lockfile (npm ci writes node_modules/.package-lock.json).
if [[ ! -f tests/e2e/node_modules/.package-lock.json ||
      tests/e2e/package-lock.json -nt tests/e2e/node_modules/.package-lock.json ]]; then
    npm ci --prefix tests/e2e --no-audit --no-fund
fi

section "build (build/, RelWithDebInfo)"
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEFU_TESTS=ON
cmake --build "$ROOT/build" -j2

ASAN=1
[[ ${KEFU_TEST_NO_ASAN:-0} == 1 ]] && ASAN=0
if ((ASAN)); then
    section "build (build-asan/, Debug, ASan+UBSan)"
    cmake -S "$ROOT" -B "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug -DKEFU_SANITIZE=ON -DKEFU_TESTS=ON
    cmake --build "$ROOT/build-asan" -j2
fi

FUZZ=1
[[ ${KEFU_TEST_NO_FUZZ:-0} == 1 ]] && FUZZ=0
if ((FUZZ)); then
    # libFuzzer targets for every parser; ctest runs each briefly over its seed corpus.
    section "build (build-fuzz/, clang, libFuzzer+ASan+UBSan)"
    CC=clang cmake -S "$ROOT" -B "$ROOT/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DKEFU_FUZZ=ON
    cmake --build "$ROOT/build-fuzz" -j2
fi

section "private MariaDB"
VAR=$(mktemp -d "${TMPDIR:-/tmp}/kefu-test.XXXXXX")
chmod 0700 "$VAR"
# Throw-away data: trade durability for speed.
export KF_DB_EXTRA_ARGS="--innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0"
kf_db_init "$VAR"
kf_db_start "$VAR"
KEFU_TEST_DB_SOCKET=$(kf_db_socket "$VAR")
KEFU_TEST_DB_ROOT_USER=$KF_DB_ROOT_USER
KEFU_TEST_TMPDIR="$VAR/tmp"
mkdir -p "$KEFU_TEST_TMPDIR"
export KEFU_TEST_DB_SOCKET KEFU_TEST_DB_ROOT_USER KEFU_TEST_TMPDIR
echo "MariaDB $(kf_db_root 'SELECT VERSION()') on $KEFU_TEST_DB_SOCKET (user $KEFU_TEST_DB_ROOT_USER)"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

ctest_args=(--output-on-failure --timeout 600)
[[ -n ${KEFU_TEST_FILTER:-} ]] && ctest_args+=(-R "$KEFU_TEST_FILTER")

declare -a summaries=()
total_pass=0
total_fail=0
failed=0

# run_ctest NAME DIR: run ctest, keep its output in VAR, remember its summary line.
run_ctest() {
    local name=$1 dir=$2 rc=0 log="$VAR/ctest-$1.log" line pct nfail ntotal
    section "tests: $name"
    # ctest runs in the background, in a process group of its own, so that a SIGTERM to this
    # script is handled at once (bash runs traps only between foreground commands) and the trap
    # can stop ctest together with every test it started.
    # shellcheck disable=SC2016 # expanded by the inner bash
    setsid bash -c 'ctest "$@" 2>&1 | tee "$0"; exit "${PIPESTATUS[0]}"' \
        "$log" --test-dir "$dir" "${ctest_args[@]}" </dev/null &
    CTEST_PID=$!
    wait "$CTEST_PID" || rc=$?
    CTEST_PID=""
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
    if [[ -n $line ]]; then
        read -r pct _ _ nfail _ _ _ _ ntotal <<<"$line"
        : "$pct"
        total_fail=$((total_fail + nfail))
        total_pass=$((total_pass + ntotal - nfail))
        summaries+=("$name: $line")
    elif grep -q 'No tests were found' "$log"; then
        summaries+=("$name: no tests were found")
    else
        summaries+=("$name: ctest gave no summary (exit $rc)")
        ((rc != 0)) || rc=1
    fi
    ((rc == 0)) || failed=1
}

run_ctest build "$ROOT/build"
if ((ASAN)); then
    run_ctest build-asan "$ROOT/build-asan"
fi
if ((FUZZ)); then
    run_ctest build-fuzz "$ROOT/build-fuzz"
fi

# Stop MariaDB and remove the scratch directory now, so the summary is the last thing printed.
cleanup 2>/dev/null

section "summary"
printf '%s\n' "${summaries[@]}"
if ((total_pass + total_fail == 0)); then
    echo "error: no test was run"
    failed=1
fi
echo "total: $total_pass passed, $total_fail failed"
if ((failed)); then
    exit 1
fi
