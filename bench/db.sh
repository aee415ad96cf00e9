#!/usr/bin/env bash
# bench/db.sh — one primary-key read through rxd against `pgbench -S` (DESIGN.md §8:
# rxd ≥ 0.6× pgbench at the same client count), same host, same session, same data.
#
# Data: `pgbench -i -s 10` in a database rxd_bench (dropped and re-created) on the local
# PostgreSQL (scripts/services.sh start: reused when it runs, stopped again when this
# script started it).
# Reference: pgbench -S -M prepared -c 32 -j 2 -T 10 -n.
# rxd: build/rxd serve, RXD_MODULES=datakit (build/test-modules), 2 workers, access log
# off, GET /test/db/item/<random 1..1000000>/ under wrk -t2 -c32 -d10s --latency
# (bench/item.lua). 3 alternating rounds each; prints the medians: pgbench TPS, rxd req/s,
# the ratio, rxd p99. Then one wrk run per database.pool_size × database.pipeline
# (2 4 8 × 1 4) to show which is best.
# A benchmark, not a test: exits 0 whether or not the target is met, non-zero only when
# it could not measure. Everything it starts, it stops (Ctrl-C included).
#
#   bench/db.sh                       (needs build/rxd, build/test-modules, wrk, pgbench)
#   BENCH_SWEEP=0 bench/db.sh         (no pool/pipeline sweep)
#   BENCH_DURATION=2 BENCH_ROUNDS=1 BENCH_SWEEP=0 bench/db.sh   (smoke run)
# Knobs (environment): BENCH_RXD (build/rxd), BENCH_MODULES (build/test-modules),
# BENCH_DURATION (10, seconds), BENCH_ROUNDS (3), BENCH_THREADS (2), BENCH_CLIENTS (32),
# BENCH_SCALE (10), BENCH_DB_RXD_PORT (18001), BENCH_SWEEP (1), BENCH_POOLS ("2 4 8"),
# BENCH_PIPELINES ("1 4"), BENCH_KEEP_DB (0: drop rxd_bench at the end),
# RXD_PG_PORT (55432, as scripts/services.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

RXD=${BENCH_RXD:-build/rxd}
MODULES_DIR=${BENCH_MODULES:-build/test-modules}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CLIENTS=${BENCH_CLIENTS:-32}
SCALE=${BENCH_SCALE:-10}
RXD_PORT=${BENCH_DB_RXD_PORT:-18001}
SWEEP=${BENCH_SWEEP:-1}
POOLS=${BENCH_POOLS:-2 4 8}
PIPELINES=${BENCH_PIPELINES:-1 4}
KEEP_DB=${BENCH_KEEP_DB:-0}
PG_PORT=${RXD_PG_PORT:-55432}
REDIS_PORT=${RXD_REDIS_PORT:-56379}
PG_HOST=127.0.0.1
PG_BIN=/usr/lib/postgresql/15/bin
DB=rxd_bench
DB_URL=postgresql://rxd@$PG_HOST:$PG_PORT/$DB
OUT=$ROOT/var/bench
RXD_URL=http://127.0.0.1:$RXD_PORT
MAX_ID=$((SCALE * 100000))

die() { echo "bench/db: $*" >&2; exit 1; }

case "$DURATION$ROUNDS$SCALE$RXD_PORT" in *[!0-9]*) die "BENCH_DURATION, BENCH_ROUNDS, BENCH_SCALE, BENCH_DB_RXD_PORT are integers" ;; esac
for tool in wrk curl; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh --bench installs wrk)"
done
PGBENCH=$PG_BIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench) || die "pgbench not found (postgresql-15)"
PSQL=$PG_BIN/psql
[ -x "$PSQL" ] || PSQL=$(command -v psql) || die "psql not found"
[ -x "$RXD" ] || die "$RXD not built (make build)"
[ -f "$MODULES_DIR/datakit.so" ] || die "$MODULES_DIR/datakit.so not built (make build)"
[ -f bench/item.lua ] || die "bench/item.lua missing"

mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$OUT/db-result-$stamp.txt
RAW_LOG=$OUT/db-raw-$stamp.log
RXD_LOG=$OUT/db-rxd-$stamp.log
RXD_CONF=$OUT/db-rxd.conf
: >"$RAW_LOG"
echo "# Written by bench/db.sh: empty, everything comes from the environment." >"$RXD_CONF"

# rxd gets only the RXD_* variables set below, none inherited from the caller.
RXD_UNSET=()
while IFS= read -r v; do
    case "$v" in RXD_*) RXD_UNSET+=(-u "$v") ;; esac
done < <(compgen -e)

# ---------------------------------------------------------------- cleanup

RXD_PID='' LOAD_PID='' STOP_PG=0 STOP_REDIS=0 DB_MADE=0
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
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
cleanup() {
    stop_pid "$LOAD_PID" INT
    stop_pid "$RXD_PID" TERM
    if [ "$DB_MADE" = 1 ] && [ "$KEEP_DB" != 1 ]; then
        "$PSQL" -X -q -d "postgresql://rxd@$PG_HOST:$PG_PORT/postgres" \
            -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    fi
    if [ "$STOP_PG" = 1 ] && [ "$STOP_REDIS" = 1 ]; then
        scripts/services.sh stop >/dev/null 2>&1 || true
    elif [ "$STOP_PG" = 1 ]; then # only what we started: Redis was running before
        as_pg "$PG_BIN/pg_ctl" -D "$ROOT/var/pg" -m fast -w stop >/dev/null 2>&1 || true
    elif [ "$STOP_REDIS" = 1 ]; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Run a load generator in the background (so a signal reaches the trap at once).
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
    printf '### %s  %s (rc %d)\n%s\n\n' "$(date -u +%T)" "$*" "$rc" "$_out" >>"$RAW_LOG"
    return "$rc"
}

# pgbench once; sets TPS. (No $(...) around these: the load generator must stay a
# child of this shell, so the trap can stop it.)
run_pgbench() { # seconds
    local out
    bg_run out "$PGBENCH" -S -M prepared -n -c "$CLIENTS" -j "$THREADS" -T "$1" \
        -h "$PG_HOST" -p "$PG_PORT" -U rxd "$DB" || die "pgbench failed (log: $RAW_LOG)"
    TPS=$(awk '/^tps = / { tps = $3 } END { printf "%.0f\n", tps }' <<<"$out")
}

# wrk once on the item route; sets RPS, P99 (ms) and ERR (non-2xx + socket errors).
run_wrk() { # seconds
    local out
    bg_run out env BENCH_ITEM_MAX="$MAX_ID" wrk "-t$THREADS" "-c$CLIENTS" "-d${1}s" --latency \
        -s bench/item.lua "$RXD_URL" || die "wrk failed (log: $RAW_LOG)"
    read -r RPS P99 ERR < <(awk '
        function ms(v) {
            if (v ~ /us$/) return v * 0.001
            if (v ~ /ms$/) return v + 0
            if (v ~ /m$/)  return v * 60000
            if (v ~ /s$/)  return v * 1000
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i + 0 }
        END { printf "%.0f %.2f %d\n", rps, p99, err }' <<<"$out")
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

errnote() { if [ "$1" -gt 0 ]; then echo "  ($1 errors)"; fi; }

start_rxd() { # pool pipeline ("" = rxd's default)
    local extra=()
    [ -z "$1" ] || extra+=("RXD_DATABASE_POOL_SIZE=$1")
    [ -z "$2" ] || extra+=("RXD_DATABASE_PIPELINE=$2")
    echo "--- rxd pool_size=${1:-default} pipeline=${2:-default}" >>"$RXD_LOG"
    env "${RXD_UNSET[@]}" RXD_LISTEN="127.0.0.1:$RXD_PORT" RXD_LOG_ACCESS=off RXD_WORKERS=2 \
        RXD_MODULES=datakit RXD_MODULE_PATH="$ROOT/$MODULES_DIR" RXD_DATABASE_URL="$DB_URL" \
        "${extra[@]}" "$RXD" --config "$RXD_CONF" serve >>"$RXD_LOG" 2>&1 &
    RXD_PID=$!
    local _
    for _ in $(seq 100); do
        kill -0 "$RXD_PID" 2>/dev/null || break
        if curl -fsS -o /dev/null --max-time 1 "$RXD_URL/healthz" 2>/dev/null; then
            # the pool connects in the background: wait for a real read
            for _ in $(seq 50); do
                curl -fsS --max-time 2 "$RXD_URL/test/db/item/1/" 2>/dev/null | grep -q '"id":1' &&
                    return 0
                sleep 0.1
            done
            break
        fi
        sleep 0.1
    done
    tail -n 20 "$RXD_LOG" >&2
    die "rxd did not serve $RXD_URL/test/db/item/1/ (log: $RXD_LOG)"
}

stop_rxd() {
    kill -0 "$RXD_PID" 2>/dev/null || die "rxd died under load (log: $RXD_LOG)"
    stop_pid "$RXD_PID" TERM
    RXD_PID=''
}

# ---------------------------------------------------------------- header

exec > >(tee "$REPORT") 2>&1
echo "== rxd database bench $stamp"
echo "host     $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)," \
     "$(uname -sr)"
echo "commit   $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
echo "rxd      $("$RXD" version 2>&1 | head -n1)"
echo "pg       $("$PGBENCH" --version)"
echo "wrk      $(wrk --version 2>&1 | head -n1 | cut -c1-40)"
echo "load     pgbench -S -M prepared -n -c$CLIENTS -j$THREADS -T$DURATION;" \
     "wrk -t$THREADS -c$CLIENTS -d${DURATION}s --latency -s bench/item.lua; $ROUNDS rounds, alternating"

# ---------------------------------------------------------------- database

"$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1 || STOP_PG=1
[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || STOP_REDIS=1
scripts/services.sh start >/dev/null
port_free "$RXD_PORT" || die "127.0.0.1:$RXD_PORT is in use (BENCH_DB_RXD_PORT)"

admin=(-X -q -v ON_ERROR_STOP=1 -d "postgresql://rxd@$PG_HOST:$PG_PORT/postgres")
PGOPTIONS="-c client_min_messages=warning" "$PSQL" "${admin[@]}" -c "DROP DATABASE IF EXISTS $DB" >/dev/null
"$PSQL" "${admin[@]}" -c "CREATE DATABASE $DB" >/dev/null
DB_MADE=1
echo "init     pgbench -i -s $SCALE $DB ($MAX_ID accounts)"
t0=$(date +%s)
"$PGBENCH" -i -s "$SCALE" -q -h "$PG_HOST" -p "$PG_PORT" -U rxd "$DB" >>"$RAW_LOG" 2>&1 ||
    die "pgbench -i failed (log: $RAW_LOG)"
echo "init     done in $(($(date +%s) - t0)) s"
# rxd checks migrations at start: datakit has none, apply whatever the kernel has.
env "${RXD_UNSET[@]}" RXD_MODULES=datakit RXD_MODULE_PATH="$ROOT/$MODULES_DIR" \
    RXD_DATABASE_URL="$DB_URL" "$RXD" --config "$RXD_CONF" migrate >>"$RAW_LOG" 2>&1 ||
    die "rxd migrate failed (log: $RAW_LOG)"

# ---------------------------------------------------------------- main comparison

start_rxd "" ""
echo "warmup   2 s each"
run_pgbench 2
run_wrk 2

pg_tps=() rxd_rps=() rxd_p99=() errors=0
for round in $(seq "$ROUNDS"); do
    run_pgbench "$DURATION"
    pg_tps+=("$TPS")
    echo "round $round  pgbench -S  $TPS tps"
    run_wrk "$DURATION"
    [ "${RPS:-0}" -gt 0 ] || die "wrk got nothing from rxd (log: $RAW_LOG)"
    rxd_rps+=("$RPS") rxd_p99+=("$P99") errors=$((errors + ERR))
    echo "round $round  rxd item    $RPS req/s  p99 $P99 ms$(errnote "$ERR")"
done
stop_rxd

m_tps=$(median "${pg_tps[@]}")
m_rps=$(median "${rxd_rps[@]}")
m_p99=$(median "${rxd_p99[@]}")
ratio=$(awk -v a="$m_rps" -v b="$m_tps" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.6) ? "ok" : "MISS" }')

# ---------------------------------------------------------------- pool / pipeline sweep

sweep=()
if [ "$SWEEP" = 1 ]; then
    echo "sweep    one ${DURATION} s wrk run per setting (after a 2 s warm-up)"
    for pool in $POOLS; do
        for pipe in $PIPELINES; do
            start_rxd "$pool" "$pipe"
            run_wrk 2
            run_wrk "$DURATION"
            stop_rxd
            sweep+=("$pool $pipe $RPS $P99 $ERR")
            echo "sweep    pool_size=$pool pipeline=$pipe  $RPS req/s  p99 $P99 ms$(errnote "$ERR")"
            errors=$((errors + ERR))
        done
    done
fi

# ---------------------------------------------------------------- summary

echo
echo "== results (medians of $ROUNDS rounds; -c$CLIENTS, ${DURATION} s each; rxd with its defaults:" \
     "2 workers, database.pool_size and database.pipeline unset)"
printf '%-24s %14s\n' "pgbench -S -M prepared" "$m_tps tps"
printf '%-24s %14s   p99 %s ms\n' "rxd /test/db/item/{id}/" "$m_rps req/s" "$m_p99"
printf '%-24s %14s   target >= 0.6  %s\n' "ratio rxd/pgbench" "$ratio" "$verdict"
if [ "${#sweep[@]}" -gt 0 ]; then
    echo "-- sweep (one run each; 2 workers; req/s, p99)"
    best=''
    for s in "${sweep[@]}"; do
        read -r pool pipe rps p99 err <<<"$s"
        printf '   pool_size=%-2s pipeline=%-2s %8s req/s  p99 %7s ms  (%.2f of pgbench)%s\n' \
            "$pool" "$pipe" "$rps" "$p99" "$(awk -v a="$rps" -v b="$m_tps" 'BEGIN { print (b > 0) ? a / b : 0 }')" \
            "$(errnote "$err")"
        if [ -z "$best" ] || [ "$rps" -gt "${best##* }" ]; then best="pool_size=$pool pipeline=$pipe $rps"; fi
    done
    echo "   best: ${best% *} (${best##* } req/s)"
fi
[ "$errors" -eq 0 ] || echo "bench/db: warning: $errors wrk errors (non-2xx or socket errors); figures suspect"
echo "report   $REPORT"
echo "raw      $RAW_LOG (wrk and pgbench output), rxd log $RXD_LOG"
