# bench/lib.sh — what the bench scripts share; sourced, never run.
#
#   cd "$(dirname "${BASH_SOURCE[0]}")/.."     # the checkout: everything here is relative to it
#   TAG=bench/db                               # prefix of die() and of the warnings
#   . bench/lib.sh
#
# It sets ROOT, OUT (var/bench), PG_HOST, PG_PORT (RXD_PG_PORT, 55432), REDIS_PORT
# (RXD_REDIS_PORT, 56379), PG_BIN and CLK, and defines:
#   die, need_tools, need_pg_tools (PGBENCH, PSQL), check_ints
#   bench_files NAME       stamp, REPORT, RAW_LOG, RXD_LOG and an empty RXD_CONF
#   rxd_unset_init         RXD_UNSET: `env` arguments dropping every inherited RXD_*
#   rxd_env_app MODULES    RXD_ENV for rxd with application modules (JWT secret, outbox)
#   bench_copy_bins RXD [DIR MODULE...]...
#                          a private copy of rxd (RXD) and of the named modules
#                          (BIN_DIR/modules), so that a rebuild during the run changes nothing
#   secret VALUE LABEL     VALUE is replaced by <LABEL> wherever the raw log would show it
#   rand_secret, rand_password
#   bench_header TITLE     the report's first lines (host with load average, commit, binary)
#   bench_wait_quiet       BENCH_WAIT_FILE / BENCH_WAIT_UNTIL: wait for the machine (QUIET)
#   bench_end              the report's "quiet ...; end ..., load average ..." line
#   services_start, services_stop   the local PostgreSQL/Redis, stopping only what it started
#   db_recreate DB..., drop_dbs, pgbench_init DB, psql_admin ARGS...
#   rxd_cli ARGS...        "${RXD_ENV[@]}" "$RXD" --config "$RXD_CONF" ARGS...
#   wait_http URL PID, port_free PORT, stop_pid PID SIGNAL
#   bg_run OUTVAR CMD...   a load generator as a child of this shell (LOAD_PID), logged
#   log_raw TITLE RC OUTPUT
#   run_pgbench DB SECONDS MODE [ARGS...]    sets TPS
#   wrk_figures [RPS_DECIMALS [P99_DECIMALS]]   "req/s p99_ms errors requests"
#   median, ratio, errnote, verdict, pg_pids, ticks, cpu_ms_per_req
#   bench_cleanup          the EXIT trap (installed here); a script adds its own steps in
#                          a function cleanup_extra, run first
# Globals the script may set: RXD_PID, LOAD_PID (stopped on exit), DBS (databases made
# and dropped), KEEP_DB, CLIENTS and THREADS (pgbench -c/-j).
# shellcheck shell=bash disable=SC2034 # the variables set here are the callers'

ROOT=$PWD
OUT=$ROOT/var/bench
PG_HOST=127.0.0.1
PG_PORT=${RXD_PG_PORT:-55432}
REDIS_PORT=${RXD_REDIS_PORT:-56379}
PG_BIN=/usr/lib/postgresql/15/bin
CLK=$(getconf CLK_TCK)
TAG=${TAG:-bench}
RXD_PID='' LOAD_PID='' BIN_DIR='' OUTBOX='' FILE_NAME='' STOP_PG=0 STOP_REDIS=0 DB_MADE=0 KEEP_DB=${KEEP_DB:-0}
DBS=() SECRETS=() SECRET_LABELS=() RXD_UNSET=()
QUIET=yes

die() { echo "$TAG: $*" >&2; exit 1; }

need_tools() { # tool...
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || die "$t not found (scripts/deps.sh --bench installs wrk)"
    done
}

need_pg_tools() { # sets PGBENCH and PSQL
    PGBENCH=$PG_BIN/pgbench
    [ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench) || die "pgbench not found (postgresql-15)"
    PSQL=$PG_BIN/psql
    [ -x "$PSQL" ] || PSQL=$(command -v psql) || die "psql not found"
}

check_ints() { # message value...: every value is a non-negative integer
    local msg=$1 v
    shift
    for v in "$@"; do
        case "$v" in '' | *[!0-9]*) die "$msg are integers" ;; esac
    done
}

bench_files() { # name: var/bench/<name>-{result,raw,rxd}-<UTC time>.*, <name>-rxd.conf
    mkdir -p "$OUT"
    FILE_NAME=$1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    REPORT=$OUT/$1-result-$stamp.txt
    RAW_LOG=$OUT/$1-raw-$stamp.log
    RXD_LOG=$OUT/$1-rxd-$stamp.log
    RXD_CONF=$OUT/$1-rxd.conf
    : >"$RAW_LOG"
    echo "# Written by bench/$1.sh: empty, everything comes from the environment." >"$RXD_CONF"
}

# rxd gets only the RXD_* variables a script sets, none inherited from the caller.
rxd_unset_init() {
    local v
    RXD_UNSET=()
    while IFS= read -r v; do
        case "$v" in RXD_*) RXD_UNSET+=(-u "$v") ;; esac
    done < <(compgen -e)
}

# The environment of an rxd running application modules: RXD_ENV (`env` with no inherited
# RXD_*, then the database, Redis, a random JWT secret, notifications to a log outbox).
# JWT_SECRET is redacted from the raw log; the outbox (OUTBOX) is removed on exit.
rxd_env_app() { # modules (needs DB_URL, REDIS_URL, BIN_DIR, after bench_files)
    rxd_unset_init
    JWT_SECRET=$(rand_secret)
    secret "$JWT_SECRET" jwt-secret
    OUTBOX=$OUT/$FILE_NAME-outbox.jsonl
    RXD_ENV=(env "${RXD_UNSET[@]}" RXD_MODULES="$1" RXD_MODULE_PATH="$BIN_DIR/modules"
        RXD_DATABASE_URL="$DB_URL" RXD_REDIS_URL="$REDIS_URL" RXD_JWT_SECRET="$JWT_SECRET"
        RXD_NOTIFY_SMS_PROVIDER=log RXD_NOTIFY_EMAIL_PROVIDER=log RXD_NOTIFY_LOG_OUTBOX="$OUTBOX")
}

# A private copy of the binaries: the checkout may be rebuilt while a script runs.
# Sets RXD (the copy), RXD_SRC (the original) and BIN_DIR (0700; removed on exit).
bench_copy_bins() { # rxd [dir module...]... ; a "dir" argument ends in "/"
    local name=${TAG#bench/} dir='' m
    [ "$name" != "$TAG" ] || name=run
    RXD_SRC=$1
    shift
    [ -x "$RXD_SRC" ] || die "$RXD_SRC not built (make build)"
    BIN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rxd-bench-$name.XXXXXX")
    chmod 700 "$BIN_DIR"
    mkdir "$BIN_DIR/modules"
    cp "$RXD_SRC" "$BIN_DIR/rxd"
    for m in "$@"; do
        case "$m" in */) dir=${m%/} ;; *)
            [ -f "$dir/$m.so" ] || die "$dir/$m.so not built (make build)"
            cp "$dir/$m.so" "$BIN_DIR/modules/" ;;
        esac
    done
    RXD=$BIN_DIR/rxd
}

secret() { # value label: never written to the raw log
    [ -n "$1" ] || return 0
    SECRETS+=("$1") SECRET_LABELS+=("$2")
}
redact() { # text -> text with every registered secret replaced
    local s=$1 i
    for i in "${!SECRETS[@]}"; do s=${s//"${SECRETS[$i]}"/<${SECRET_LABELS[$i]}>}; done
    printf '%s' "$s"
}
rand_secret() { head -c 48 /dev/urandom | base64 | tr -d '\n'; }
# Meets the password rules (upper, lower, digit, one of @$!%*?&#), random per run.
rand_password() { echo "Bb9!$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

bench_header() { # title
    echo "== $1 $stamp"
    echo "host     $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)," \
         "$(uname -sr), load average $(loadavg)"
    echo "commit   $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null ||
        echo " (dirty: $(git diff --name-only HEAD | tr '\n' ' '))")"
    if [ -n "${RXD_SRC:-}" ]; then
        echo "binary   $RXD_SRC built $(date -u -r "$RXD_SRC" +%H:%M:%SZ)${BIN_NOTE:-} (copied)"
    fi
}

# Shared machine: with BENCH_WAIT_FILE set (e.g. /tmp/ci-run.log), wait, polling every
# 30 s, until that file has a line starting with "rc=", or until BENCH_WAIT_UNTIL (HH:MM
# UTC), then measure anyway. Sets QUIET and prints it, then the start time and load.
bench_wait_quiet() {
    local file=${BENCH_WAIT_FILE:-} until=${BENCH_WAIT_UNTIL:-} now
    QUIET=yes
    if [ -n "$file" ]; then
        while ! grep -q '^rc=' "$file" 2>/dev/null; do
            now=$(date -u +%H:%M)
            if [ -n "$until" ] && { [ "$now" \> "$until" ] || [ "$now" = "$until" ]; }; then
                QUIET="no: gave up waiting for 'rc=' in $file at $now UTC"
                break
            fi
            echo "wait     $(date -u +%T): $file has no 'rc=' line yet (load $(cut -d' ' -f1 /proc/loadavg))"
            sleep 30
        done
        [ "$QUIET" != yes ] || QUIET="yes: $file finished ($(grep -m1 '^rc=' "$file"))"
        echo "quiet    $QUIET"
    fi
    echo "start    $(date -u +%T), load average $(loadavg)"
}
bench_end() { echo "quiet    ${QUIET}; end $(date -u +%T), load average $(loadavg)"; }

# ---------------------------------------------------------------- services and databases

# The local PostgreSQL and Redis (scripts/services.sh); whichever was not running is
# stopped again on exit, and only that one.
services_start() {
    "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1 || STOP_PG=1
    [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || STOP_REDIS=1
    scripts/services.sh start >/dev/null
}
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
services_stop() {
    if [ "$STOP_PG" = 1 ] && [ "$STOP_REDIS" = 1 ]; then
        scripts/services.sh stop >/dev/null 2>&1 || true
    elif [ "$STOP_PG" = 1 ]; then # only what we started: Redis was running before
        as_pg "$PG_BIN/pg_ctl" -D "$ROOT/var/pg" -m fast -w stop >/dev/null 2>&1 || true
    elif [ "$STOP_REDIS" = 1 ]; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    fi
    STOP_PG=0 STOP_REDIS=0
}

psql_admin() { # args...: psql on the postgres database, stopping at the first error
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "postgresql://rxd@$PG_HOST:$PG_PORT/postgres" "$@"
}
drop_dbs() {
    local d
    for d in "${DBS[@]}"; do
        PGOPTIONS="-c client_min_messages=warning" psql_admin -c "DROP DATABASE IF EXISTS $d" \
            >/dev/null 2>&1 || true
    done
}
db_recreate() { # db...: dropped if there, created; dropped again on exit unless BENCH_KEEP_DB=1
    local d
    DBS=("$@")
    DB_MADE=1
    drop_dbs
    for d in "$@"; do psql_admin -c "CREATE DATABASE $d" >/dev/null; done
}
pgbench_init() { # db
    "$PGBENCH" -i -s "$SCALE" -q -h "$PG_HOST" -p "$PG_PORT" -U rxd "$1" >>"$RAW_LOG" 2>&1 ||
        die "pgbench -i failed (log: $RAW_LOG)"
}

rxd_cli() { "${RXD_ENV[@]}" "$RXD" --config "$RXD_CONF" "$@"; }

# ---------------------------------------------------------------- processes

port_free() { # nothing answers on 127.0.0.1:$1
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_http() { # url pid: up to 10 s for a 2xx, while pid lives
    local _
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

stop_pid() { # pid signal: signal, wait up to 10 s, then SIGKILL
    local pid=$1 sig=$2 _
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
    stop_pid "$LOAD_PID" INT
    stop_pid "$RXD_PID" TERM
    [ -z "$BIN_DIR" ] || rm -rf "$BIN_DIR"
    [ -z "$OUTBOX" ] || rm -f "$OUTBOX"
    if [ "$DB_MADE" = 1 ] && [ "$KEEP_DB" != 1 ]; then drop_dbs; fi
    services_stop
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

log_raw() { # title rc output: appended to RAW_LOG, every secret redacted
    printf '### %s  %s (rc %d)\n%s\n\n' "$(date -u +%T)" "$(redact "$1")" "$2" "$(redact "$3")" \
        >>"$RAW_LOG"
}

# Run a load generator in the background (so a signal reaches the trap at once). No
# $(...) around callers: the load generator must stay a child of this shell.
bg_run() { # outvar cmd...
    local -n _out=$1
    shift
    local tmp rc=0
    tmp=$(mktemp)
    "$@" >"$tmp" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=''
    _out=$(cat "$tmp")
    rm -f "$tmp"
    log_raw "$*" "$rc" "$_out"
    return "$rc"
}

# pgbench once (-M prepared -n -c$CLIENTS -j$THREADS); sets TPS, leaves its output in PGB_OUT.
run_pgbench() { # db seconds -S|-N [args...]
    local db=$1 secs=$2 mode=$3
    shift 3
    bg_run PGB_OUT "$PGBENCH" "$mode" -M prepared -n -c "$CLIENTS" -j "$THREADS" -T "$secs" "$@" \
        -h "$PG_HOST" -p "$PG_PORT" -U rxd "$db" || die "pgbench $mode failed (log: $RAW_LOG)"
    TPS=$(awk '/^tps = / { tps = $3 } END { printf "%.0f\n", tps }' <<<"$PGB_OUT")
}

# "req_per_s p99_ms errors requests" from wrk's output on stdin (errors: non-2xx + socket errors).
wrk_figures() { # [req/s decimals (0)] [p99 decimals (2)]
    awk -v rd="${1:-0}" -v pd="${2:-2}" '
        function ms(v) {
            if (v ~ /us$/) return v * 0.001
            if (v ~ /ms$/) return v + 0
            if (v ~ /m$/)  return v * 60000
            if (v ~ /s$/)  return v * 1000
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        /^ +99%/ { p99 = ms($2) }
        / requests in / { n = $1 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
        END { printf "%.*f %.*f %d %d\n", rd, rps, pd, p99, err, n }'
}

# ---------------------------------------------------------------- figures

median() { # numbers...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
errnote() { if [ "$1" -gt 0 ]; then echo "  ($1 errors)"; fi; }
verdict() { # value op target -> "ok" / "MISS" / "n/a" (no number); op: >= <= < >
    case "$1" in '' | *[!0-9.]*) echo n/a; return ;; esac
    awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
        if (op == ">=") ok = v >= t; else if (op == "<=") ok = v <= t
        else if (op == "<") ok = v < t; else ok = v > t
        print ok ? "ok" : "MISS" }'
}

# CPU ticks (utime + stime, all threads) of rxd, and of the PostgreSQL server (postmaster
# and its children: the backends of rxd's pool live through the run).
pg_pids() {
    local pm
    pm=$(head -n1 "$ROOT/var/pg/postmaster.pid" 2>/dev/null) || return 0
    echo "$pm"
    pgrep -P "$pm" 2>/dev/null || true
}
ticks() { # pids... -> "pid utime+stime" lines
    local p t
    for p in "$@"; do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || continue
        echo "$p ${t:-0}"
    done
}
cpu_ms_per_req() { # before after requests: CPU ms per request of the processes in both
    awk -v n="$3" -v c="$CLK" 'NR == FNR { t0[$1] = $2; next }
        ($1 in t0) { d += $2 - t0[$1] }
        END { printf "%.3f", n ? d / c * 1000 / n : 0 }' <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}
