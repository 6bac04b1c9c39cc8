# shellcheck shell=bash
# deploy/lib.sh — helpers sourced by deploy/quickstart.sh, deploy/test.sh and tests/bench/bench.sh.
#
# Everything here runs a *private* MariaDB: its own data directory under VARDIR, a unix socket,
# no TCP (--skip-networking), no system service and no /etc/mysql configuration (--no-defaults).
# Safe under `set -euo pipefail`.
#
#   kf_install_packages [extra-pkg...]     install missing Debian packages (apt-get only when needed)
#   kf_db_socket VARDIR                    print the socket path for VARDIR
#   kf_db_init VARDIR                      mariadb-install-db into VARDIR/mysql (once)
#   kf_db_start VARDIR                     start mariadbd (or reuse a running one), wait until it answers
#   kf_db_stop VARDIR                      clean shutdown, kill after 30 s
#   kf_db_root [SQL...]                    run SQL as the DB superuser (stdin when no SQL given)
#   kf_db_setup_app VARDIR DBNAME DBUSER   database + least-privilege user, password in VARDIR/secrets
#
# Variables: KF_DB_SOCKET (set by kf_db_init/kf_db_start, used by kf_db_root),
# KF_DB_ROOT_USER (the MariaDB account authenticated by unix_socket: root when run as root),
# KF_DB_EXTRA_ARGS (extra mariadbd options, word-split; test.sh uses it to relax fsync).

# Debian 12 packages needed to build, run and test kefud.
KF_PACKAGES=(build-essential cmake pkg-config libevent-dev libmariadb-dev libjansson-dev
             libcmocka-dev libsodium-dev libcurl4-openssl-dev mariadb-server mariadb-client
             python3 wrk clang libclang-rt-14-dev libexpat1-dev libssl-dev
             libgmime-3.0-dev libgumbo-dev libesmtp-dev dovecot-imapd
             chromium nodejs fonts-noto-cjk swaks openssl python3-aiosmtpd)
# npm: Debian's package, unless the installed Node.js already brings its own (NodeSource's
# nodejs conflicts with Debian's npm, so asking for it there would fail).
command -v npm >/dev/null 2>&1 || KF_PACKAGES+=(npm)

if [[ $(id -u) -eq 0 ]]; then
    KF_DB_ROOT_USER=${KF_DB_ROOT_USER:-root}
else
    KF_DB_ROOT_USER=${KF_DB_ROOT_USER:-$(id -un)}
fi
KF_DB_SOCKET=${KF_DB_SOCKET:-}

kf_log() { printf '%s\n' "kefu: $*" >&2; }
kf_die() { printf '%s\n' "kefu: error: $*" >&2; return 1; }

# kf_install_packages [extra...]: apt-get update + install only if a package is missing.
# shellcheck disable=SC2120 # extra packages are optional
kf_install_packages() {
    local -a want=("${KF_PACKAGES[@]}" "$@") missing=()
    local p st
    for p in "${want[@]}"; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [[ $st == installed ]] || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    kf_log "installing missing Debian packages: ${missing[*]}"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || kf_die "need root (or sudo) to install: ${missing[*]}" || return 1
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update || kf_die "apt-get update failed" || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" \
        || kf_die "apt-get install failed: ${missing[*]}" || return 1
}

# kf_abs PATH: absolute path (the path need not exist yet).
kf_abs() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/${1#./}" ;;
    esac
}

# kf_db_socket VARDIR: VARDIR/mysqld.sock, or a short path under /tmp when that would exceed the
# unix socket path limit (108 bytes on Linux).
kf_db_socket() {
    local var sock
    var=$(kf_abs "$1")
    sock="$var/mysqld.sock"
    if ((${#sock} > 100)); then
        sock="/tmp/kefu-mysqld-$(printf '%s' "$var" | sha256sum | cut -c1-16).sock"
    fi
    printf '%s\n' "$sock"
}

kf__user_opt() {
    if [[ $(id -u) -eq 0 ]]; then printf '%s\n' --user=root; fi
}

# kf_db_init VARDIR: create the data directory VARDIR/mysql unless it is already initialised.
kf_db_init() {
    local var datadir
    var=$(kf_abs "${1:?kf_db_init VARDIR}")
    datadir="$var/mysql"
    KF_DB_SOCKET=$(kf_db_socket "$var")
    mkdir -p "$var"
    if [[ -d $datadir/mysql ]]; then
        return 0
    fi
    kf_log "initialising MariaDB data directory $datadir"
    # A half-made directory from an interrupted run would make install-db fail: start again.
    rm -rf "$datadir"
    mkdir -p "$datadir"
    chmod 0700 "$datadir"
    local -a uopt=()
    mapfile -t uopt < <(kf__user_opt)
    if ! mariadb-install-db --no-defaults --datadir="$datadir" \
            --auth-root-authentication-method=socket --skip-test-db \
            "${uopt[@]}" >"$var/mariadb-install-db.log" 2>&1; then
        tail -n 30 "$var/mariadb-install-db.log" >&2 || true
        rm -rf "$datadir"
        kf_die "mariadb-install-db failed (log: $var/mariadb-install-db.log)"
        return 1
    fi
}

kf__admin() { # kf__admin SOCKET args...
    local sock=$1
    shift
    mariadb-admin --no-defaults --socket="$sock" -u"$KF_DB_ROOT_USER" --connect-timeout=2 "$@"
}

kf__ping() { kf__admin "$1" ping >/dev/null 2>&1; }

# kf__pid_of VARDIR: pid from VARDIR/mysqld.pid when that process is alive and is a mariadbd
# using VARDIR/mysql, else nothing.
kf__pid_of() {
    local var=$1 pid cmd
    [[ -s $var/mysqld.pid ]] || return 0
    pid=$(tr -dc '0-9' <"$var/mysqld.pid")
    [[ -n $pid ]] || return 0
    [[ -r /proc/$pid/cmdline ]] || return 0
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    case $cmd in
        *mariadbd*"--datadir=$var/mysql "* | *mysqld*"--datadir=$var/mysql "*) printf '%s\n' "$pid" ;;
    esac
}

# kf_wait_gone PID SECONDS: 0 once PID has exited (a zombie counts as exited; a child of this
# shell is reaped), 1 if it is still running after SECONDS.
kf_wait_gone() {
    local pid=$1 n=$(($2 * 10)) st
    while :; do
        kill -0 "$pid" 2>/dev/null || break
        st=$(cut -d')' -f2 "/proc/$pid/stat" 2>/dev/null | cut -c2 || true)
        [[ $st == Z ]] && break
        ((n-- > 0)) || return 1
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
    return 0
}

# kf_stop_pid PID SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL.
kf_stop_pid() {
    local pid=$1 secs=${2:-30}
    kill -TERM "$pid" 2>/dev/null || return 0
    if ! kf_wait_gone "$pid" "$secs"; then
        kf_log "pid $pid did not exit within ${secs}s after SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        kf_wait_gone "$pid" 5 || true
    fi
}

# kf_db_start VARDIR: start the private mariadbd in the background (in its own session, so a
# Ctrl-C on the terminal does not reach it: the caller stops it with kf_db_stop) and wait for it.
# A server already answering on the socket (e.g. left over from a crashed run) is reused.
kf_db_start() {
    local var datadir sock pid
    var=$(kf_abs "${1:?kf_db_start VARDIR}")
    datadir="$var/mysql"
    sock=$(kf_db_socket "$var")
    KF_DB_SOCKET=$sock
    export KF_DB_SOCKET
    [[ -d $datadir/mysql ]] || kf_die "$datadir is not initialised (run kf_db_init)" || return 1

    if kf__ping "$sock"; then
        kf_log "reusing MariaDB already running on $sock"
        return 0
    fi
    # Our mariadbd may still be alive but not answering (starting up, shutting down, hung).
    pid=$(kf__pid_of "$var")
    if [[ -n $pid ]]; then
        kf_log "MariaDB pid $pid for $datadir is alive but not answering; waiting for it"
        local i
        for ((i = 0; i < 100; i++)); do
            if kf__ping "$sock"; then
                kf_log "reusing MariaDB pid $pid on $sock"
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kf_log "stopping unresponsive MariaDB pid $pid"
            kf_stop_pid "$pid" 30
        fi
    fi
    rm -f "$sock" "$sock.lock" "$var/mysqld.pid"

    local -a uopt=() extra=()
    mapfile -t uopt < <(kf__user_opt)
    # shellcheck disable=SC2206 # deliberate word splitting of extra options
    extra=(${KF_DB_EXTRA_ARGS:-})
    local errlog="$var/mysqld.err"
    local -a args=(--no-defaults --datadir="$datadir" --socket="$sock" --skip-networking
        --pid-file="$var/mysqld.pid" --log-error="$errlog" "${uopt[@]}"
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_520_ci
        --innodb-buffer-pool-size=128M --innodb-log-file-size=48M
        --max-connections=300 --max-allowed-packet=64M
        --default-time-zone=+00:00 "${extra[@]}")
    local errlines=0
    [[ -f $errlog ]] && errlines=$(wc -l <"$errlog")
    kf_log "starting MariaDB (datadir $datadir, socket $sock)"
    # setsid: own session and process group (no terminal signals); stdin from /dev/null.
    setsid mariadbd "${args[@]}" </dev/null >/dev/null 2>&1 &
    local mpid=$!
    local i
    for ((i = 0; i < 600; i++)); do
        if kf__ping "$sock"; then
            return 0
        fi
        if ! kill -0 "$mpid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    kf_log "MariaDB did not come up; last lines of $errlog:"
    tail -n +"$((errlines + 1))" "$errlog" 2>/dev/null | tail -n 30 >&2 || true
    if kill -0 "$mpid" 2>/dev/null; then
        kf_stop_pid "$mpid" 10
    fi
    kf_die "MariaDB failed to start"
}

# kf_db_stop VARDIR: clean shutdown; SIGTERM/SIGKILL if it does not exit within 30 s.
# Does nothing when no server is running for VARDIR.
kf_db_stop() {
    local var sock pid
    var=$(kf_abs "${1:?kf_db_stop VARDIR}")
    sock=$(kf_db_socket "$var")
    pid=$(kf__pid_of "$var")
    if [[ -z $pid ]] && ! kf__ping "$sock"; then
        return 0
    fi
    kf_log "stopping MariaDB${pid:+ pid $pid}"
    kf__admin "$sock" --shutdown-timeout=25 shutdown >/dev/null 2>&1 || true
    if [[ -n $pid ]] && ! kf_wait_gone "$pid" 30; then
        kf_log "MariaDB pid $pid did not exit in 30 s after shutdown"
        kf_stop_pid "$pid" 5
    fi
    return 0
}

# kf_db_root [SQL...]: run SQL as the superuser over KF_DB_SOCKET (batch mode, no column names).
# Without arguments the SQL is read from stdin.
# shellcheck disable=SC2120 # arguments are optional
kf_db_root() {
    [[ -n ${KF_DB_SOCKET:-} ]] || kf_die "KF_DB_SOCKET is not set (call kf_db_start first)" || return 1
    if (($# > 0)); then
        mariadb --no-defaults --socket="$KF_DB_SOCKET" -u"$KF_DB_ROOT_USER" -N -B -e "$*"
    else
        mariadb --no-defaults --socket="$KF_DB_SOCKET" -u"$KF_DB_ROOT_USER" -N -B
    fi
}

kf__random_password() {
    # 48 random bytes -> 64 base64 chars -> keep alphanumerics (no quoting issues), 32 of them.
    head -c 48 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | cut -c1-32
}

# kf_db_setup_app VARDIR DBNAME DBUSER: create the database (utf8mb4) and the app user with only
# the privileges it needs on that database. The password lives in VARDIR/secrets/db_password
# (0600, directory 0700); an existing password file is kept and (re)applied to the user.
kf_db_setup_app() {
    local var db user secrets pwfile pw
    var=$(kf_abs "${1:?kf_db_setup_app VARDIR DBNAME DBUSER}")
    db=${2:?database name}
    user=${3:?user name}
    [[ $db =~ ^[A-Za-z0-9_]{1,64}$ ]] || kf_die "bad database name: $db" || return 1
    [[ $user =~ ^[A-Za-z0-9_]{1,80}$ ]] || kf_die "bad user name: $user" || return 1
    KF_DB_SOCKET=$(kf_db_socket "$var")
    secrets="$var/secrets"
    pwfile="$secrets/db_password"
    (umask 077 && mkdir -p "$secrets")
    chmod 0700 "$secrets"
    if [[ -s $pwfile ]]; then
        pw=$(head -n 1 "$pwfile")
    else
        pw=$(kf__random_password)
        [[ ${#pw} -ge 24 ]] || kf_die "could not generate a password" || return 1
        (umask 077 && printf '%s\n' "$pw" >"$pwfile.tmp")
        mv -f "$pwfile.tmp" "$pwfile"
    fi
    chmod 0600 "$pwfile"
    [[ -n $pw && $pw != *[\'\\]* ]] || kf_die "$pwfile: empty or contains ' or \\" || return 1
    kf_db_root <<SQL
CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci;
CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$pw';
ALTER USER '$user'@'localhost' IDENTIFIED BY '$pw';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES,
      CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, TRIGGER
      ON \`$db\`.* TO '$user'@'localhost';
SQL
}
