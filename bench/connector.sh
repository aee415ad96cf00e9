#!/usr/bin/env bash
# bench/connector.sh — the connector's hot routes with an API key (DESIGN.md §8):
#   list  GET /api/inventory/?page_size=50          (a page of 50 of the pharmacy's items)
#   sale  POST /api/sales/ {"inventory_item", "quantity": 1}   (stock decremented atomically)
# beside `pgbench -S` (reads) and `pgbench -N` (writes, WAL-bound: DESIGN.md compares the
# sale with it), same host, same session, same client count.
#
# Data: database rxd_bench_conn (dropped and re-created, dropped at the end) on the local
# PostgreSQL (scripts/services.sh start: reused when running, stopped again when this
# script started it): `rxd migrate` with RXD_MODULES="notify auth rbac pharmacies inventory
# orders webhooks", then 100 pharmacies × 10,000 items in one INSERT ... SELECT FROM
# generate_series (item ids (p-1)*10000+1 .. p*10000, quantity 1,000,000,000 so sales never
# run out), ANALYZE; BENCH_KEYS keys (`rxd apikey create --pharmacy ID`, last output line)
# of pharmacies spread over 1..100. pgbench runs on its own database rxd_bench_conn_pgb
# (`pgbench -i -s 10`).
# rxd: build/rxd serve (binaries copied first, so a rebuild during the run changes
# nothing; the raw log never shows a key or the JWT secret) with only: those modules, RXD_WORKERS=2 RXD_LOG_ACCESS=off
# RXD_RATELIMIT_ENABLED=false RXD_JWT_SECRET=<48 random bytes>, Redis db 5, on
# 127.0.0.1:18003 (no other bench script uses it).
# Load: wrk -t2 -c32 -d10s --latency --timeout 10s -s bench/connector.lua (keys rotate per request, each
# connection uses all of them); pgbench -M prepared -n -c32 -j2 -T10. 2 s warm-up of each,
# then 3 rounds alternating pgbench -S / list / pgbench -N / sale; medians. Around every
# wrk run the CPU time of rxd and of the PostgreSQL server is read from /proc, giving
# CPU ms per request on each side.
# pgbench's own p99 (from its sampled per-transaction log) is printed beside each
# route's: at -c32 on 2 cores PostgreSQL alone is near 20 ms for -N (WAL flush).
# Targets: list >= 3,000 req/s, sale >= 2,000 req/s (this 2-core host), p99 < 20 ms;
# scaled to the old Django host (pgbench -S 45.9k tx/s; list 403 req/s, sale 430):
# list >= 10x, sale >= 5x.
# Profile (BENCH_CALLGRIND=N, default 300; 0 = never): when a target is missed (or
# always with BENCH_CALLGRIND_ALWAYS=1), rxd is restarted under valgrind --tool=callgrind
# with one worker, gets 50 warm-up requests of each, then N list requests and N sale requests
# (curl, one keep-alive connection), the counters dumped after each; prints instructions
# per request (rxd only) and the costliest functions (inclusive).
# A benchmark, not a test: exits 0 whether or not the targets are met, non-zero only when
# it could not measure. Everything it starts, it stops (Ctrl-C included).
#
#   bench/connector.sh                                 (needs build/rxd, build/modules, wrk,
#                                                       pgbench, psql, jq, redis-cli)
#   BENCH_DURATION=2 BENCH_ROUNDS=1 BENCH_CALLGRIND=0 bench/connector.sh   (smoke run)
# Knobs: BENCH_RXD (build/rxd), BENCH_MODULE_PATH (build/modules), BENCH_DURATION (10),
# BENCH_ROUNDS (3), BENCH_THREADS (2), BENCH_CLIENTS (32), BENCH_KEYS (8), BENCH_SCALE (10,
# pgbench), BENCH_CONN_RXD_PORT (18003), BENCH_KEEP_DB (0), BENCH_CALLGRIND (300),
# BENCH_CALLGRIND_ALWAYS (0), BENCH_WAIT_FILE / BENCH_WAIT_UNTIL (see below),
# RXD_PG_PORT (55432), RXD_REDIS_PORT (56379).
# Shared machine: when BENCH_WAIT_FILE is set (e.g. /tmp/ci-run.log) the script waits,
# polling every 30 s, until that file has a line starting with "rc=", or until
# BENCH_WAIT_UNTIL (HH:MM UTC) and then measures anyway, saying so in the report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TAG=bench/connector
# shellcheck source=bench/lib.sh
. bench/lib.sh

RXD=${BENCH_RXD:-build/rxd}
MODULE_SRC=${BENCH_MODULE_PATH:-build/modules}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CLIENTS=${BENCH_CLIENTS:-32}
NKEYS=${BENCH_KEYS:-8}
SCALE=${BENCH_SCALE:-10}
RXD_PORT=${BENCH_CONN_RXD_PORT:-18003}
KEEP_DB=${BENCH_KEEP_DB:-0}
CALLGRIND=${BENCH_CALLGRIND:-300}
CG_ALWAYS=${BENCH_CALLGRIND_ALWAYS:-0}
DB=rxd_bench_conn
PGB_DB=rxd_bench_conn_pgb
DB_URL=postgresql://rxd@$PG_HOST:$PG_PORT/$DB
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/5
RXD_URL=http://127.0.0.1:$RXD_PORT
PHARMACIES=100 ITEMS=10000
MODULES="notify auth rbac pharmacies inventory orders webhooks"
# Old Django host (DESIGN.md §8): pgbench -S 45.9k tx/s; page of 50 at 403 req/s, sale 430.
OLD_PGBENCH=45900 OLD_LIST=403 OLD_SALE=430 LIST_FACTOR=10 SALE_FACTOR=5
LIST_TARGET=3000 SALE_TARGET=2000 P99_TARGET=20

check_ints "BENCH_DURATION, BENCH_ROUNDS, BENCH_CLIENTS, BENCH_THREADS, BENCH_KEYS, BENCH_SCALE, BENCH_CONN_RXD_PORT, BENCH_CALLGRIND" \
    "$DURATION" "$ROUNDS" "$RXD_PORT" "$CLIENTS" "$THREADS" "$CALLGRIND" "$NKEYS" "$SCALE"
if [ "$NKEYS" -lt 1 ] || [ "$NKEYS" -gt "$PHARMACIES" ]; then die "BENCH_KEYS is 1..$PHARMACIES"; fi
need_tools wrk curl jq redis-cli
if [ "$CALLGRIND" != 0 ]; then
    for tool in valgrind callgrind_control callgrind_annotate; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install valgrind, or BENCH_CALLGRIND=0)"
    done
fi
need_pg_tools
[ -f bench/connector.lua ] || die "bench/connector.lua missing"

bench_files connector
# shellcheck disable=SC2086 # the module names split
bench_copy_bins "$RXD" "$MODULE_SRC/" $MODULES
BIN_NOTE=", inventory.so $(date -u -r "$MODULE_SRC/inventory.so" +%H:%M:%SZ)"
KEYS_FILE=$BIN_DIR/keys.txt

rxd_env_app "$MODULES"

# ---------------------------------------------------------------- helpers

# pgbench once; sets TPS (bench/lib.sh's run_pgbench).
# Also sets PGP99: the p99 latency (ms) of pgbench's own transactions, from its
# per-transaction log (-l, one in five sampled): the floor under the routes' p99
# at this client count (the sale cannot commit faster than pgbench -N does).
run_pgbench_p99() { # seconds -S|-N
    rm -f "$BIN_DIR"/pgb.*
    run_pgbench "$PGB_DB" "$1" "$2" -l --sampling-rate=0.2 --log-prefix="$BIN_DIR/pgb"
    PGP99=$(cat "$BIN_DIR"/pgb.* | awk '{ print $3 }' | sort -n |
        awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f\n", (NR ? v[i] / 1000 : 0) }')
}

# wrk once on list|sale; sets RPS, P99 (ms), ERR, and CPU ms per request of rxd and PG.
run_wrk() { # seconds list|sale
    local out n r0 p0 r1 p1 pids
    mapfile -t pids < <(pg_pids)
    r0=$(ticks "$RXD_PID") p0=$(ticks "${pids[@]}")
    bg_run out env BENCH_CONN_MODE="$2" BENCH_CONN_KEYS="$KEYS_FILE" BENCH_CONN_ITEMS="$ITEMS" \
        wrk "-t$THREADS" "-c$CLIENTS" "-d${1}s" --latency --timeout 10s -s bench/connector.lua "$RXD_URL" ||
        die "wrk failed (log: $RAW_LOG)"
    r1=$(ticks "$RXD_PID") p1=$(ticks "${pids[@]}")
    read -r RPS P99 ERR n < <(wrk_figures 0 2 <<<"$out")
    grep -q '^Requests/sec:' <<<"$out" || die "wrk printed no figures for $2 (log: $RAW_LOG)"
    # (0 req/s is a figure, not a failure: a route slower than the run still gets reported)
    CPU_RXD=$(cpu_ms_per_req "$r0" "$r1" "$n")
    CPU_PG=$(cpu_ms_per_req "$p0" "$p1" "$n")
}

# ---------------------------------------------------------------- header

exec > >(tee "$REPORT") 2>&1
bench_header "rxd connector bench"
echo "pg       $("$PGBENCH" --version)"
echo "wrk      $(wrk --version 2>&1 | head -n1 | cut -c1-40)"
echo "load     pgbench -S|-N -M prepared -n -c$CLIENTS -j$THREADS -T$DURATION;" \
     "wrk -t$THREADS -c$CLIENTS -d${DURATION}s --latency --timeout 10s -s bench/connector.lua; $ROUNDS rounds, alternating"

# ---------------------------------------------------------------- wait for a quiet machine

bench_wait_quiet

# ---------------------------------------------------------------- databases

services_start
port_free "$RXD_PORT" || die "127.0.0.1:$RXD_PORT is in use (BENCH_CONN_RXD_PORT)"

db_recreate "$DB" "$PGB_DB"
echo "init     pgbench -i -s $SCALE $PGB_DB"
pgbench_init "$PGB_DB"
rxd_cli migrate >>"$RAW_LOG" 2>&1 ||
    die "rxd migrate failed (log: $RAW_LOG)"
t0=$(date +%s)
"$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DB_URL" >>"$RAW_LOG" 2>&1 <<SQL || die "seeding failed (log: $RAW_LOG)"
INSERT INTO pharmacies (id, name, address, phone, license_number)
SELECT p, 'Bench Pharmacy ' || p, p || ' Bench Road, Dhaka', '+88017' || lpad(p::text, 8, '0'),
       'DGDA-BENCH-' || p
  FROM generate_series(1, $PHARMACIES) p;
SELECT setval('pharmacies_id_seq', $PHARMACIES);
INSERT INTO inventory_items (id, pharmacy_id, sku, name, quantity, price, extra_data)
SELECT (p - 1) * $ITEMS + i, p, 'SKU-' || lpad(i::text, 6, '0'),
       'Medicine ' || i || ' ' || (ARRAY['Tablet 500 mg', 'Syrup 100 ml', 'Capsule 20 mg',
                                         'Injection 1 ml'])[1 + i % 4],
       1000000000, (1 + (i * 7919) % 50000) / 100.0,
       CASE WHEN i % 3 = 0 THEN jsonb_build_object('batch', 'B' || i, 'rx', i % 2 = 0) END
  FROM generate_series(1, $PHARMACIES) p, generate_series(1, $ITEMS) i;
SELECT setval('inventory_items_id_seq', $((PHARMACIES * ITEMS)));
ANALYZE;
SQL
echo "seed     $PHARMACIES pharmacies x $ITEMS items in $(($(date +%s) - t0)) s (one INSERT ... SELECT, ANALYZE)"

# Keys of NKEYS pharmacies spread over 1..PHARMACIES.
: >"$KEYS_FILE"
chmod 600 "$KEYS_FILE"
key_ph=()
for k in $(seq 0 $((NKEYS - 1))); do
    p=$((1 + k * PHARMACIES / NKEYS))
    key_out=$(rxd_cli apikey create --pharmacy "$p" \
        --name bench 2>>"$RAW_LOG") || die "rxd apikey create --pharmacy $p failed (log: $RAW_LOG)"
    key=$(tail -n 1 <<<"$key_out")
    case "$key" in rxk_*) ;; *) die "rxd apikey create printed no key" ;; esac
    secret "$key" "key-$p"
    echo "$p $key" >>"$KEYS_FILE"
    key_ph+=("$p")
done
echo "keys     $NKEYS keys, pharmacies ${key_ph[*]}; rotated per request over all $CLIENTS connections"

# ---------------------------------------------------------------- rxd

start_rxd() { # workers [wrapper...]
    local workers=$1 _
    shift
    "${RXD_ENV[@]}" RXD_LISTEN="127.0.0.1:$RXD_PORT" RXD_LOG_ACCESS=off RXD_WORKERS="$workers" \
        RXD_RATELIMIT_ENABLED=false "$@" "$RXD" --config "$RXD_CONF" serve >>"$RXD_LOG" 2>&1 &
    RXD_PID=$!
    read -r P1 K1 <"$KEYS_FILE"
    for _ in $(seq 600); do
        kill -0 "$RXD_PID" 2>/dev/null || break
        if curl -fsS -o /dev/null --max-time 2 -H "X-API-KEY: $K1" \
            "$RXD_URL/api/inventory/?page_size=1" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 20 "$RXD_LOG" >&2
    die "rxd did not serve $RXD_URL/api/inventory/ (log: $RXD_LOG)"
}
start_rxd 2

# Each route answers what it should.
# (connector lists: a bare JSON array, the total in X-Total-Count)
hdrs=$(curl -fsS --max-time 5 -D - -o "$BIN_DIR/page.json" -H "X-API-KEY: $K1" \
    "$RXD_URL/api/inventory/?page_size=50") || die "list failed"
page=$(cat "$BIN_DIR/page.json")
[ "$(jq 'length' <<<"$page")" = 50 ] || die "list: not 50 rows: ${page:0:200}"
total=$(sed -n 's/^[Xx]-[Tt]otal-[Cc]ount: *\([0-9]*\).*/\1/p' <<<"$hdrs")
[ "$total" = "$ITEMS" ] || die "list: X-Total-Count is '$total', not $ITEMS"
[ "$(jq "[.[].pharmacy] | unique == [$P1]" <<<"$page")" = true ] ||
    die "list: rows of another pharmacy"
item=$(((P1 - 1) * ITEMS + 1))
sale=$(curl -sS --max-time 5 -w '\n%{http_code}' -H "X-API-KEY: $K1" -H 'Content-Type: application/json' \
    -d "{\"inventory_item\":$item,\"quantity\":1}" "$RXD_URL/api/sales/")
[ "$(tail -n1 <<<"$sale")" = 201 ] || die "sale: not 201: ${sale:0:300}"
sale=$(sed '$d' <<<"$sale")
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-KEY: $K1" \
    -H 'Content-Type: application/json' -d "{\"inventory_item\":$((item + ITEMS * 50)),\"quantity\":1}" \
    "$RXD_URL/api/sales/")
case "$code" in 2*) die "sale of another pharmacy's item answered $code" ;; esac
echo "check    list 200 (${#page} bytes, 50 of $ITEMS, own pharmacy), sale 201 (${#sale} bytes)," \
     "another pharmacy's item $code"

# ---------------------------------------------------------------- rounds

declare -A RPS_OF=() P99_OF=() CR_OF=() CP_OF=()
echo "warmup   2 s each"
run_pgbench_p99 2 -S
run_wrk 2 list
run_pgbench_p99 2 -N
run_wrk 2 sale

pgs=() pgn=() pgs99=() pgn99=() errors=0
for round in $(seq "$ROUNDS"); do
    run_pgbench_p99 "$DURATION" -S
    pgs+=("$TPS") pgs99+=("$PGP99")
    printf 'round %s  %-34s %7s tps    p99 %s ms\n' "$round" "pgbench -S" "$TPS" "$PGP99"
    run_wrk "$DURATION" list
    RPS_OF[list]+="$RPS " P99_OF[list]+="$P99 " CR_OF[list]+="$CPU_RXD " CP_OF[list]+="$CPU_PG "
    errors=$((errors + ERR))
    printf 'round %s  %-34s %7s req/s  p99 %s ms  cpu/req rxd %s ms pg %s ms%s\n' "$round" \
        "GET /api/inventory/?page_size=50" "$RPS" "$P99" "$CPU_RXD" "$CPU_PG" "$(errnote "$ERR")"
    run_pgbench_p99 "$DURATION" -N
    pgn+=("$TPS") pgn99+=("$PGP99")
    printf 'round %s  %-34s %7s tps    p99 %s ms\n' "$round" "pgbench -N" "$TPS" "$PGP99"
    run_wrk "$DURATION" sale
    RPS_OF[sale]+="$RPS " P99_OF[sale]+="$P99 " CR_OF[sale]+="$CPU_RXD " CP_OF[sale]+="$CPU_PG "
    errors=$((errors + ERR))
    printf 'round %s  %-34s %7s req/s  p99 %s ms  cpu/req rxd %s ms pg %s ms%s\n' "$round" \
        "POST /api/sales/" "$RPS" "$P99" "$CPU_RXD" "$CPU_PG" "$(errnote "$ERR")"
done
kill -0 "$RXD_PID" 2>/dev/null || die "rxd died under load (log: $RXD_LOG)"
# Non-2xx replies of the two routes over the whole run (warm-ups included), from /metrics.
non2xx=$(curl -fsS --max-time 5 "$RXD_URL/metrics" 2>/dev/null |
    grep -E '^rxd_http_requests_total\{route="/api/(inventory|sales)/",status="[^2]' |
    sed -E 's/^rxd_http_requests_total\{route="([^"]*)",status="([0-9]+)"\} ([0-9]+)/\1 \2: \3/' |
    awk '$NF > 0' | tr '\n' ';' || true)
stop_pid "$RXD_PID" TERM
RXD_PID=''
nsales=$("$PSQL" -X -q -t -A -d "$DB_URL" -c "SELECT count(*) FROM sales")
minq=$("$PSQL" -X -q -t -A -d "$DB_URL" -c "SELECT min(quantity) FROM inventory_items")

# ---------------------------------------------------------------- summary

m_pgs=$(median "${pgs[@]}")
m_pgn=$(median "${pgn[@]}")
m_pgs99=$(median "${pgs99[@]}")
m_pgn99=$(median "${pgn99[@]}")
declare -A M=() MP=() MCR=() MCP=()
for r in list sale; do
    # shellcheck disable=SC2086 # word splitting intended
    M[$r]=$(median ${RPS_OF[$r]})
    # shellcheck disable=SC2086
    MP[$r]=$(median ${P99_OF[$r]})
    # shellcheck disable=SC2086
    MCR[$r]=$(median ${CR_OF[$r]})
    # shellcheck disable=SC2086
    MCP[$r]=$(median ${CP_OF[$r]})
done
scaled() { awk -v a="$1" -v b="$m_pgs" -v o="$OLD_PGBENCH" 'BEGIN { printf "%.0f", (b > 0) ? a / b * o : 0 }'; }
s_list=$(scaled "${M[list]}")
s_sale=$(scaled "${M[sale]}")
x_list=$(awk -v s="$s_list" -v o="$OLD_LIST" 'BEGIN { printf "%.1f", s / o }')
x_sale=$(awk -v s="$s_sale" -v o="$OLD_SALE" 'BEGIN { printf "%.1f", s / o }')
V=()
V+=("$(verdict "${M[list]}" ">=" "$LIST_TARGET")" "$(verdict "${M[sale]}" ">=" "$SALE_TARGET")")
V+=("$(verdict "${MP[list]}" "<" "$P99_TARGET")" "$(verdict "${MP[sale]}" "<" "$P99_TARGET")")
V+=("$(verdict "$x_list" ">=" "$LIST_FACTOR")" "$(verdict "$x_sale" ">=" "$SALE_FACTOR")")

echo
echo "== results (medians of $ROUNDS rounds; -c$CLIENTS, ${DURATION} s each)"
printf '%-34s %12s   p99 %7s ms\n' "pgbench -S -M prepared" "$m_pgs tps" "$m_pgs99"
printf '%-34s %12s   p99 %7s ms\n' "pgbench -N -M prepared" "$m_pgn tps" "$m_pgn99"
printf '%-34s %12s   p99 %7s ms  cpu/req rxd %s ms, pg %s ms\n' "list GET /api/inventory/?page_size=50" \
    "${M[list]} req/s" "${MP[list]}" "${MCR[list]}" "${MCP[list]}"
printf '%-34s %12s   p99 %7s ms  cpu/req rxd %s ms, pg %s ms\n' "sale POST /api/sales/" \
    "${M[sale]} req/s" "${MP[sale]}" "${MCR[sale]}" "${MCP[sale]}"
printf '%-34s %12s   target >= %-6s %s\n' "list req/s" "${M[list]}" "$LIST_TARGET" "${V[0]}"
printf '%-34s %12s   target >= %-6s %s\n' "sale req/s" "${M[sale]}" "$SALE_TARGET" "${V[1]}"
printf '%-34s %12s   target < %-7s %s\n' "list p99 (ms)" "${MP[list]}" "$P99_TARGET" "${V[2]}"
printf '%-34s %12s   target < %-7s %s\n' "sale p99 (ms)" "${MP[sale]}" "$P99_TARGET" "${V[3]}"
printf '%-34s %12s   (list / pgbench -S)\n' "ratio list/pgbench -S" "$(ratio "${M[list]}" "$m_pgs")"
printf '%-34s %12s   (sale / pgbench -N)\n' "ratio sale/pgbench -N" "$(ratio "${M[sale]}" "$m_pgn")"
printf '%-34s %12s   (list p99 / pgbench -S p99)\n' "ratio p99 list/pgbench -S" "$(ratio "${MP[list]}" "$m_pgs99")"
printf '%-34s %12s   (sale p99 / pgbench -N p99)\n' "ratio p99 sale/pgbench -N" "$(ratio "${MP[sale]}" "$m_pgn99")"
printf '%-34s %12s   = %sx Django (403)  target >= %sx  %s\n' "list scaled to 45.9k pgbench -S" \
    "$s_list req/s" "$x_list" "$LIST_FACTOR" "${V[4]}"
printf '%-34s %12s   = %sx Django (430)  target >= %sx  %s\n' "sale scaled to 45.9k pgbench -S" \
    "$s_sale req/s" "$x_sale" "$SALE_FACTOR" "${V[5]}"
echo "sales    $nsales rows recorded; lowest item quantity $minq (never ran out)"
echo "non-2xx  by rxd's /metrics over the run, the check's one 400 included: ${non2xx:-none}"
[ "$errors" -eq 0 ] || echo "$TAG: warning: $errors wrk errors (non-2xx or socket errors); figures suspect"
bench_end

# ---------------------------------------------------------------- profile

missed=0
for v in "${V[@]}"; do [ "$v" = ok ] || missed=1; done
cg_requests() { # n list|sale
    local n=$1 ok args
    if [ "$2" = list ]; then
        args=("$RXD_URL/api/inventory/?page_size=50&n=[1-$n]")
    else
        args=(-H 'Content-Type: application/json' -d "{\"inventory_item\":$item,\"quantity\":1}"
            "$RXD_URL/api/sales/?n=[1-$n]")
    fi
    ok=$(curl -s --max-time 900 -H "X-API-KEY: $K1" -w '\n%{http_code}\n' "${args[@]}" |
        grep -cE '^20[01]$') || true
    [ "$ok" = "$n" ] || die "callgrind: $2 answered $ok of $n requests with 2xx"
}
cg_dump() {
    callgrind_control --dump="$1" "$RXD_PID" >>"$RAW_LOG" 2>&1 || die "callgrind_control failed"
}
if [ "$CALLGRIND" -gt 0 ] && { [ "$missed" = 1 ] || [ "$CG_ALWAYS" = 1 ]; }; then
    CG_DIR=$OUT/connector-cg-$stamp
    mkdir -p "$CG_DIR"
    echo
    echo "== profile: valgrind --tool=callgrind, 1 worker, $CALLGRIND requests of each" \
         "(50 warm-up), one keep-alive connection, one key"
    start_rxd 1 valgrind --tool=callgrind --callgrind-out-file="$CG_DIR/callgrind.out"
    cg_requests 50 list
    cg_requests 50 sale
    cg_dump warmup
    cg_requests "$CALLGRIND" list
    cg_dump list
    cg_requests "$CALLGRIND" sale
    cg_dump sale
    stop_pid "$RXD_PID" TERM
    RXD_PID=''
    i=2
    for r in list sale; do
        f=$CG_DIR/callgrind.out.$i
        [ -f "$f" ] || die "callgrind: no dump $f"
        ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
        printf '%-6s %9.0f instructions/request (rxd only, PostgreSQL not counted)\n' "$r" \
            "$(awk -v t="$ir" -v n="$CALLGRIND" 'BEGIN { print t / n }')"
        echo "   inclusive instructions per request, costliest functions:"
        callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$f" 2>/dev/null |
            grep '\[' | sed -E 's/\( *[0-9.]+%\)//' |
            awk -v n="$CALLGRIND" '$1 ~ /^[0-9,]+$/ { v = $1; gsub(",", "", v); $1 = "";
                sub(/^ +/, ""); printf "%10.0f  %s\n", v / n, $0 }' |
            grep -vE 'clone|start_thread|uv_run|uv__io_poll|uv__run|worker_main|:on_read |:conn_feed |:on_poll |\?\?\?' |
            sed -E 's# \[[^]]*/([^/]+)\]$# [\1]#' | head -n 30 || true # (head closes the pipe)
        i=$((i + 1))
    done
    echo "dumps    $CG_DIR (callgrind_annotate --inclusive=yes callgrind.out.2 / .3)"
fi
echo "report   $REPORT"
echo "raw      $RAW_LOG (wrk and pgbench output), rxd log $RXD_LOG"
