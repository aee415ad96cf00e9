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
# BENCH_WAIT_FILE / BENCH_WAIT_UNTIL (wait for a quiet machine: bench/lib.sh),
# RXD_PG_PORT (55432, as scripts/services.sh).
# rxd and datakit.so run from a private copy (a rebuild during the run changes nothing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TAG=bench/db
# shellcheck source=bench/lib.sh
. bench/lib.sh

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
DB=rxd_bench
DB_URL=postgresql://rxd@$PG_HOST:$PG_PORT/$DB
RXD_URL=http://127.0.0.1:$RXD_PORT

check_ints "BENCH_DURATION, BENCH_ROUNDS, BENCH_SCALE, BENCH_DB_RXD_PORT" \
    "$DURATION" "$ROUNDS" "$SCALE" "$RXD_PORT"
MAX_ID=$((SCALE * 100000))
need_tools wrk curl redis-cli
need_pg_tools
[ -f bench/item.lua ] || die "bench/item.lua missing"

bench_files db
rxd_unset_init
bench_copy_bins "$RXD" "$MODULES_DIR/" datakit
RXD_ENV=(env "${RXD_UNSET[@]}" RXD_MODULES=datakit RXD_MODULE_PATH="$BIN_DIR/modules"
    RXD_DATABASE_URL="$DB_URL")

# ---------------------------------------------------------------- helpers

# wrk once on the item route; sets RPS, P99 (ms) and ERR (non-2xx + socket errors).
run_wrk() { # seconds
    local out
    bg_run out env BENCH_ITEM_MAX="$MAX_ID" wrk "-t$THREADS" "-c$CLIENTS" "-d${1}s" --latency \
        -s bench/item.lua "$RXD_URL" || die "wrk failed (log: $RAW_LOG)"
    read -r RPS P99 ERR _ < <(wrk_figures 0 2 <<<"$out")
}

start_rxd() { # pool pipeline ("" = rxd's default)
    local extra=()
    [ -z "$1" ] || extra+=("RXD_DATABASE_POOL_SIZE=$1")
    [ -z "$2" ] || extra+=("RXD_DATABASE_PIPELINE=$2")
    echo "--- rxd pool_size=${1:-default} pipeline=${2:-default}" >>"$RXD_LOG"
    "${RXD_ENV[@]}" RXD_LISTEN="127.0.0.1:$RXD_PORT" RXD_LOG_ACCESS=off RXD_WORKERS=2 \
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
bench_header "rxd database bench"
echo "rxd      $("$RXD" version 2>&1 | head -n1)"
echo "pg       $("$PGBENCH" --version)"
echo "wrk      $(wrk --version 2>&1 | head -n1 | cut -c1-40)"
echo "load     pgbench -S -M prepared -n -c$CLIENTS -j$THREADS -T$DURATION;" \
     "wrk -t$THREADS -c$CLIENTS -d${DURATION}s --latency -s bench/item.lua; $ROUNDS rounds, alternating"
bench_wait_quiet

# ---------------------------------------------------------------- database

services_start
port_free "$RXD_PORT" || die "127.0.0.1:$RXD_PORT is in use (BENCH_DB_RXD_PORT)"

db_recreate "$DB"
echo "init     pgbench -i -s $SCALE $DB ($MAX_ID accounts)"
t0=$(date +%s)
pgbench_init "$DB"
echo "init     done in $(($(date +%s) - t0)) s"
# rxd checks migrations at start: datakit has none, apply whatever the kernel has.
rxd_cli migrate >>"$RAW_LOG" 2>&1 ||
    die "rxd migrate failed (log: $RAW_LOG)"

# ---------------------------------------------------------------- main comparison

start_rxd "" ""
echo "warmup   2 s each"
run_pgbench "$DB" 2 -S
run_wrk 2

pg_tps=() rxd_rps=() rxd_p99=() errors=0
for round in $(seq "$ROUNDS"); do
    run_pgbench "$DB" "$DURATION" -S
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
verdict=$(verdict "$ratio" ">=" 0.6)

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
[ "$errors" -eq 0 ] || echo "$TAG: warning: $errors wrk errors (non-2xx or socket errors); figures suspect"
bench_end
echo "report   $REPORT"
echo "raw      $RAW_LOG (wrk and pgbench output), rxd log $RXD_LOG"
