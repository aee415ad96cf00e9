#!/usr/bin/env bash
# services.sh — the local PostgreSQL 15 and Redis 7 that `make run` and `make test` use.
#
# Both live under ./var of the checkout (var/pg data, var/pg-sock socket, var/redis,
# var/log, var/run), listen on 127.0.0.1 only, on their own ports so they never clash
# with a system-wide server:
#   PostgreSQL  RXD_PG_PORT     (default 55432)  role rxd, trust auth, databases rxd, rxd_test
#   Redis       RXD_REDIS_PORT  (default 56379)  no persistence; db 0 for run, db 1 for tests
# Every command is idempotent: `start` reuses a server already answering on the port.
#
#   scripts/services.sh start | stop | status | env | psql [db]
#   eval "$(scripts/services.sh env)"   # export the RXD_* URLs (and a dev JWT secret) the caller has not set
#
# PostgreSQL refuses to run as root: as root the data dir belongs to user postgres and
# initdb/pg_ctl run through `runuser -u postgres`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VAR=$ROOT/var
PGDATA_DIR=$VAR/pg
PGSOCK_DIR=$VAR/pg-sock
REDIS_DIR=$VAR/redis
LOG_DIR=$VAR/log
RUN_DIR=$VAR/run
PG_LOG=$LOG_DIR/postgresql.log
REDIS_LOG=$LOG_DIR/redis.log
REDIS_PID=$RUN_DIR/redis.pid
REDIS_CONF=$REDIS_DIR/redis.conf

PG_PORT=${RXD_PG_PORT:-55432}
REDIS_PORT=${RXD_REDIS_PORT:-56379}
PG_BIN=/usr/lib/postgresql/15/bin
HOST=127.0.0.1

die() { echo "services.sh: $*" >&2; exit 1; }
say() { echo "services.sh: $*"; }

case "$PG_PORT$REDIS_PORT" in *[!0-9]*) die "RXD_PG_PORT and RXD_REDIS_PORT must be numbers" ;; esac

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a PostgreSQL server-side tool as the user who owns the data dir. Without the
# lock's fd: a server that inherited it would hold the lock for its whole life.
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@" 9>&-)
    else
        "$@" 9>&-
    fi
}

# Connection string for psql on our server, any database.
pg_url() { echo "postgresql://rxd@$HOST:$PG_PORT/$1"; }

pg_psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

pg_up() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

# Our own server (the one on var/pg) is running, whatever its port.
pg_ours() {
    [ -f "$PGDATA_DIR/postmaster.pid" ] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

pg_pid() { head -n1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true; }

redis_up() {
    [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

# Pid of our own Redis (from var/run/redis.pid), if that process is alive and is redis.
redis_ours_pid() {
    local pid
    pid=$(cat "$REDIS_PID" 2>/dev/null) || return 1
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/comm" ] && [[ "$(cat "/proc/$pid/comm")" == redis-server* ]] || return 1
    echo "$pid"
}

check_installed() {
    if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/psql" ]; then
        die "PostgreSQL 15 is not installed ($PG_BIN); run scripts/deps.sh"
    fi
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        die "redis-server/redis-cli not installed; run scripts/deps.sh"
    fi
}

# Serialise concurrent start/stop (e.g. two make targets in parallel).
lock() {
    mkdir -p "$VAR"
    exec 9>"$VAR/.services.lock"
    flock 9
}

# ---------------------------------------------------------------- PostgreSQL

pg_init() {
    if is_root; then
        id -u postgres >/dev/null 2>&1 ||
            die "user postgres does not exist (it comes with the postgresql-15 package)"
        # The data dir is postgres's, so postgres must be able to reach it.
        runuser -u postgres -- test -x "$VAR" ||
            die "user postgres cannot reach $VAR: a parent directory is not searchable by others;" \
                "make it so (e.g. chmod o+x on each parent) or use a checkout under a world-searchable path"
    fi
    mkdir -p "$PGDATA_DIR" "$PGSOCK_DIR" "$LOG_DIR"
    touch "$PG_LOG"
    if is_root; then
        # Whole tree only when ownership is wrong (first run, or created by another user).
        [ "$(stat -c %U "$PGDATA_DIR")" = postgres ] || chown -R postgres:postgres "$PGDATA_DIR"
        chown postgres:postgres "$PGSOCK_DIR" "$PG_LOG"
    fi
    chmod 700 "$PGDATA_DIR"

    if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
        [ -z "$(ls -A "$PGDATA_DIR")" ] ||
            die "$PGDATA_DIR is neither empty nor a PostgreSQL data dir; move it away"
        say "initdb $PGDATA_DIR"
        # C.UTF-8: code-point collation (fast, stable across hosts) with Unicode-aware
        # lower()/upper()/ILIKE, which a C ctype would not give for non-ASCII names.
        if ! as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U rxd -A trust -E UTF8 --locale=C.UTF-8 \
            >"$LOG_DIR/initdb.log" 2>&1; then
            cat "$LOG_DIR/initdb.log" >&2
            die "initdb failed (log: $LOG_DIR/initdb.log)"
        fi
        echo "include_if_exists = 'rxd.conf'" >>"$PGDATA_DIR/postgresql.conf"
    fi

    # Rewritten on every start, so RXD_PG_PORT can change between runs.
    local sock=$PGSOCK_DIR
    if [ $((${#sock} + 20)) -gt 107 ]; then
        # A Unix socket path is limited to 107 bytes; TCP is all rxd and these scripts use.
        say "note: $PGSOCK_DIR is too long for a Unix socket; PostgreSQL listens on TCP only"
        sock=
    fi
    local conf=$PGDATA_DIR/rxd.conf
    cat >"$conf" <<EOF
# Written by scripts/services.sh on each start; edit that script, not this file.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '${sock//\'/\'\'}'
max_connections = 200
EOF
    is_root && chown postgres:postgres "$conf"
    return 0
}

pg_start() {
    if pg_ours; then
        pg_up || die "our PostgreSQL (pid $(pg_pid)) runs but does not answer on $HOST:$PG_PORT" \
            "(port changed? run: $0 stop)"
        say "postgres: already running (pid $(pg_pid), $HOST:$PG_PORT)"
    elif pg_up; then
        say "postgres: reusing the server already answering on $HOST:$PG_PORT (not under var/)"
    else
        pg_init
        if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t 60 start >/dev/null 2>&1; then
            tail -n 20 "$PG_LOG" >&2
            die "PostgreSQL did not start (log: $PG_LOG)"
        fi
        say "postgres: started (pid $(pg_pid), $HOST:$PG_PORT)"
    fi

    local db exists
    for db in rxd rxd_test; do
        exists=$(pg_psql -d "$(pg_url postgres)" -tA \
            -c "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>&1) ||
            die "cannot connect to PostgreSQL on $HOST:$PG_PORT as rxd: $exists"
        if [ "$exists" != 1 ]; then
            # Another start may win the race: accept "already exists".
            pg_psql -d "$(pg_url postgres)" -c "CREATE DATABASE $db" 2>/dev/null ||
                [ "$(pg_psql -d "$(pg_url postgres)" -tA \
                    -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ] ||
                die "cannot create database $db"
            say "postgres: created database $db"
        fi
    done
}

pg_stop() {
    if pg_ours; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null
        say "postgres: stopped"
    elif pg_up; then
        say "postgres: not ours (a server on $HOST:$PG_PORT not under var/), left alone"
    else
        say "postgres: not running"
    fi
}

# ---------------------------------------------------------------- Redis

redis_start() {
    if redis_up; then
        local pid
        if pid=$(redis_ours_pid); then
            say "redis: already running (pid $pid, $HOST:$REDIS_PORT)"
        else
            say "redis: reusing the server already answering on $HOST:$REDIS_PORT (not under var/)"
        fi
        return 0
    fi
    mkdir -p "$REDIS_DIR" "$LOG_DIR" "$RUN_DIR"
    cat >"$REDIS_CONF" <<EOF
# Written by scripts/services.sh on each start; edit that script, not this file.
bind $HOST
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile "$REDIS_PID"
logfile "$REDIS_LOG"
dir "$REDIS_DIR"
save ""
appendonly no
EOF
    redis-server "$REDIS_CONF" 9>&- || die "redis-server failed to start (log: $REDIS_LOG)"
    local _
    for _ in $(seq 100); do
        redis_up && break
        sleep 0.1
    done
    if ! redis_up; then
        tail -n 20 "$REDIS_LOG" >&2
        die "Redis did not answer on $HOST:$REDIS_PORT (log: $REDIS_LOG)"
    fi
    say "redis: started (pid $(redis_ours_pid || echo '?'), $HOST:$REDIS_PORT)"
}

redis_stop() {
    local pid _
    if pid=$(redis_ours_pid); then
        kill -TERM "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && die "redis (pid $pid) did not stop"
        rm -f "$REDIS_PID"
        say "redis: stopped"
    elif redis_up; then
        say "redis: not ours (a server on $HOST:$REDIS_PORT not under var/), left alone"
    else
        say "redis: not running"
    fi
}

# ---------------------------------------------------------------- commands

cmd_status() {
    local rc=0 pid
    if pg_ours && pg_up; then
        say "postgres: running (pid $(pg_pid), $HOST:$PG_PORT, data $PGDATA_DIR)"
    elif pg_ours; then
        say "postgres: running (pid $(pg_pid)) but not answering on $HOST:$PG_PORT"; rc=3
    elif pg_up; then
        say "postgres: a server not under var/ answers on $HOST:$PG_PORT"
    else
        say "postgres: not running ($HOST:$PG_PORT)"; rc=3
    fi
    if pid=$(redis_ours_pid) && redis_up; then
        say "redis: running (pid $pid, $HOST:$REDIS_PORT)"
    elif redis_up; then
        say "redis: a server not under var/ answers on $HOST:$REDIS_PORT"
    else
        say "redis: not running ($HOST:$REDIS_PORT)"; rc=3
    fi
    return $rc
}

# Print `export NAME=value` for each URL the caller has not set (set but empty counts as set).
# A development JWT signing key, made once per checkout (var/jwt-secret, mode
# 0600): `make run` needs one and a secret never belongs in conf/. Production
# sets RXD_JWT_SECRET itself.
dev_jwt_secret() {
    local f=$VAR/jwt-secret
    if [ ! -s "$f" ]; then
        mkdir -p "$VAR"
        (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > "$f")
    fi
    cat "$f"
}

cmd_env() {
    local name value
    while read -r name value; do
        [ -n "${!name+x}" ] || echo "export $name=$value"
    done <<EOF
RXD_DATABASE_URL $(pg_url rxd)
RXD_REDIS_URL redis://$HOST:$REDIS_PORT/0
RXD_TEST_DATABASE_URL $(pg_url rxd_test)
RXD_TEST_REDIS_URL redis://$HOST:$REDIS_PORT/1
RXD_JWT_SECRET $(dev_jwt_secret)
EOF
}

usage() {
    echo "usage: $0 start|stop|status|env|psql [db]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
case "$1" in
start)
    check_installed
    lock
    pg_start
    redis_start
    ;;
stop)
    check_installed
    lock
    pg_stop
    redis_stop
    ;;
status)
    check_installed
    cmd_status
    ;;
env)
    cmd_env
    ;;
psql)
    check_installed
    exec "$PG_BIN/psql" "$(pg_url "${2:-rxd}")"
    ;;
*)
    usage
    ;;
esac
