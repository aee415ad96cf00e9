#!/usr/bin/env bash
# bench/apikey.sh — what the X-API-KEY check costs (DESIGN.md §8), same host, same session.
#
# Routes a, k and b each do exactly one primary-key SELECT (b's row and reply are larger:
# 9 columns, 243 bytes against 4 and 127); a and k differ in the key check only:
#   (a) GET /test/db/item/{id}/ (datakit test module, public route): one PK read of
#       pgbench_accounts, no credential sent, so no hook does any work;
#   (k) the same route with the X-API-KEY header: pharmacies' authenticate hook hashes
#       the key (keyed BLAKE2b) and finds it in the per-worker cache (a public route
#       runs the authenticate hooks but not the authorize hooks): the key check alone;
#   (b) GET /api/pharmacies/{id}/ with X-API-KEY: the key check from the per-worker
#       cache, rbac's authorize hook (role API_KEY, pharmacy scope) and one PK read of
#       pharmacies — the route of DESIGN.md §8;
#   (t) GET /test/items/{id}/ (testkit, public, no database): the ceiling without I/O,
#       for context.
# Reference: pgbench -S -M prepared -n -c32 -j2 -T10 on the same database.
# wrk -t2 -c32 -d10s --latency on each, 3 rounds alternating pgbench / a / k / b / t after
# a 2 s warm-up of each; prints the medians, p99s, and the ratios
#   b/a  (target >= 0.9: the key path costs under 10 % of throughput), k/a,
#   b/pgbench (target >= 0.6), and b scaled to the old Django host: b/pgbench x 45.9k
#   (there pgbench -S did 45.9k tx/s and Django served the pharmacy detail at 954
#   req/s; target >= 30 x 954 = 28,620).
#
# Data: database rxd_bench_keys (dropped and re-created, dropped at the end) on the local
# PostgreSQL (scripts/services.sh start: reused when running, stopped again when this
# script started it): `pgbench -i -s 1` (100,000 accounts), `rxd migrate` with
# RXD_MODULES="notify auth rbac pharmacies datakit testkit", a super admin
# (`rxd createsuperuser --password-stdin`, random password), one pharmacy (psql INSERT)
# and one key (`rxd apikey create --pharmacy ID`, the key is its last output line).
# rxd: build/rxd serve with only these settings (an empty config file, no RXD_* inherited):
# those modules from a temporary directory holding copies of build/modules/*.so and
# build/test-modules/{datakit,testkit}.so, RXD_WORKERS=2 RXD_LOG_ACCESS=off
# RXD_RATELIMIT_ENABLED=false RXD_JWT_SECRET=<48 random bytes> (the key's pepper is
# derived from it), on 127.0.0.1:18002.
# A benchmark, not a test: exits 0 whether or not the targets are met, non-zero only when
# it could not measure. Everything it starts, it stops (Ctrl-C included).
#
#   bench/apikey.sh                   (needs build/rxd, build/modules, build/test-modules,
#                                      wrk, pgbench, jq, redis-cli)
#   BENCH_DURATION=2 BENCH_ROUNDS=1 bench/apikey.sh   (smoke run)
#   BENCH_CALLGRIND=3000 bench/apikey.sh   (then a profile: see below)
# Profile (BENCH_CALLGRIND=N > 0): after the rounds, rxd is restarted under
# `valgrind --tool=callgrind` with one worker; after 200 warm-up requests of each route it
# sends N requests of each (one keep-alive connection, curl), dumping the counters after
# each route, and prints the instructions per request of rxd (PostgreSQL not counted) and
# the functions where b spends more than a. The dumps stay in var/bench/apikey-cg-<time>/.
# Knobs (environment): BENCH_RXD (build/rxd), BENCH_MODULE_PATH (build/modules),
# BENCH_TEST_MODULES (build/test-modules), BENCH_DURATION (10, seconds), BENCH_ROUNDS (3),
# BENCH_THREADS (2), BENCH_CLIENTS (32), BENCH_SCALE (1), BENCH_KEYS_RXD_PORT (18002;
# bench/auth.sh uses it too: do not run both at once), BENCH_KEEP_DB (0), BENCH_CALLGRIND (0),
# BENCH_WAIT_FILE / BENCH_WAIT_UNTIL (wait for a quiet machine: bench/lib.sh),
# RXD_PG_PORT (55432), RXD_REDIS_PORT (56379).
# rxd and the modules run from a private copy (a rebuild during the run changes nothing);
# the raw log never shows the key, the password or the JWT secret.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TAG=bench/apikey
# shellcheck source=bench/lib.sh
. bench/lib.sh

RXD=${BENCH_RXD:-build/rxd}
MODULE_PATH=${BENCH_MODULE_PATH:-build/modules}
TEST_MODULES=${BENCH_TEST_MODULES:-build/test-modules}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CLIENTS=${BENCH_CLIENTS:-32}
SCALE=${BENCH_SCALE:-1}
RXD_PORT=${BENCH_KEYS_RXD_PORT:-18002}
KEEP_DB=${BENCH_KEEP_DB:-0}
CALLGRIND=${BENCH_CALLGRIND:-0}
DB=rxd_bench_keys
DB_URL=postgresql://rxd@$PG_HOST:$PG_PORT/$DB
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/4
RXD_URL=http://127.0.0.1:$RXD_PORT
EMAIL=bench-keys@example.com
MODULES="notify auth rbac pharmacies datakit testkit"
# Old Django host (DESIGN.md §8): pgbench -S 45.9k tx/s, pharmacy detail 954 req/s; 30×.
OLD_PGBENCH=45900 OLD_DETAIL=954 OLD_FACTOR=30

check_ints "BENCH_DURATION, BENCH_ROUNDS, BENCH_SCALE, BENCH_CLIENTS, BENCH_THREADS, BENCH_KEYS_RXD_PORT, BENCH_CALLGRIND" \
    "$DURATION" "$ROUNDS" "$SCALE" "$RXD_PORT" "$CLIENTS" "$THREADS" "$CALLGRIND"
MAX_ID=$((SCALE * 100000))
[ "$CALLGRIND" = 0 ] || [ "$CALLGRIND" -le "$MAX_ID" ] || die "BENCH_CALLGRIND is at most $MAX_ID"
if [ "$CALLGRIND" != 0 ]; then
    for tool in valgrind callgrind_control callgrind_annotate; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install valgrind)"
    done
fi
need_tools wrk curl jq redis-cli
need_pg_tools
[ -f bench/item.lua ] || die "bench/item.lua missing"

bench_files apikey
# module_path takes one directory: the real modules and the two test modules, copied.
bench_copy_bins "$RXD" "$MODULE_PATH/" notify auth rbac pharmacies "$TEST_MODULES/" datakit testkit

PASSWORD=$(rand_password)
secret "$PASSWORD" password
rxd_env_app "$MODULES"
KEY=''

# ---------------------------------------------------------------- helpers

# wrk once (-t$THREADS -c$CLIENTS) on one of the measured routes; sets RPS, P99 (ms), ERR.
run_route() { # seconds a|k|b|t
    local out secs=$1 args=()
    case "$2" in
    a) args=(-s bench/item.lua "$RXD_URL") ;;
    k) args=(-s bench/item.lua -H "X-API-KEY: $KEY" "$RXD_URL") ;;
    b) args=(-H "X-API-KEY: $KEY" "$RXD_URL/api/pharmacies/$PHARMACY/") ;;
    t) args=("$RXD_URL/test/items/7/") ;;
    esac
    bg_run out env BENCH_ITEM_MAX="$MAX_ID" wrk "-t$THREADS" "-c$CLIENTS" "-d${secs}s" --latency \
        "${args[@]}" || die "wrk failed (log: $RAW_LOG)"
    read -r RPS P99 ERR _ < <(wrk_figures 0 2 <<<"$out")
    [ "${RPS:-0}" -gt 0 ] || die "wrk got nothing from route $2 (log: $RAW_LOG)"
}

# ---------------------------------------------------------------- header

exec > >(tee "$REPORT") 2>&1
bench_header "rxd API-key bench"
echo "rxd      $("$RXD" version 2>&1 | head -n1)"
echo "pg       $("$PGBENCH" --version)"
echo "wrk      $(wrk --version 2>&1 | head -n1 | cut -c1-40)"
echo "load     pgbench -S -M prepared -n -c$CLIENTS -j$THREADS -T$DURATION;" \
     "wrk -t$THREADS -c$CLIENTS -d${DURATION}s --latency; $ROUNDS rounds, alternating"
bench_wait_quiet

# ---------------------------------------------------------------- database

services_start
port_free "$RXD_PORT" || die "127.0.0.1:$RXD_PORT is in use (BENCH_KEYS_RXD_PORT)"

db_recreate "$DB"
echo "init     pgbench -i -s $SCALE $DB ($MAX_ID accounts)"
pgbench_init "$DB"
rxd_cli migrate >>"$RAW_LOG" 2>&1 ||
    die "rxd migrate failed (log: $RAW_LOG)"
printf '%s\n' "$PASSWORD" |
    rxd_cli createsuperuser --email "$EMAIL" --password-stdin \
        >>"$RAW_LOG" 2>&1 || die "rxd createsuperuser failed (log: $RAW_LOG)"
PHARMACY=$("$PSQL" -X -q -t -A -v ON_ERROR_STOP=1 -d "$DB_URL" -c \
    "INSERT INTO pharmacies (name, address, phone, license_number)
     VALUES ('Bench Pharmacy', '1 Bench Road, Dhaka', '+8801700000000', 'DGDA-BENCH-1')
     RETURNING id") || die "pharmacy INSERT failed"
key_out=$(rxd_cli apikey create --pharmacy "$PHARMACY" \
    --name bench 2>>"$RAW_LOG") || die "rxd apikey create failed (log: $RAW_LOG)"
KEY=$(tail -n 1 <<<"$key_out")
case "$KEY" in rxk_*) ;; *) die "rxd apikey create printed no key" ;; esac
secret "$KEY" key
log_raw "rxd apikey create --pharmacy $PHARMACY" 0 "$(head -n 1 <<<"$key_out")"
echo "data     pharmacy $PHARMACY, one key (prefix ${KEY:4:8}), super admin $EMAIL"

# ---------------------------------------------------------------- rxd

"${RXD_ENV[@]}" RXD_LISTEN="127.0.0.1:$RXD_PORT" RXD_LOG_ACCESS=off RXD_WORKERS=2 \
    RXD_RATELIMIT_ENABLED=false "$RXD" --config "$RXD_CONF" serve >>"$RXD_LOG" 2>&1 &
RXD_PID=$!
wait_http "$RXD_URL/healthz" "$RXD_PID" ||
    { tail -n 20 "$RXD_LOG" >&2; die "rxd did not come up on $RXD_URL (log: $RXD_LOG)"; }

# Each route answers what it should (the pool connects in the background: retry).
detail=''
for _ in $(seq 50); do
    detail=$(curl -fsS --max-time 2 -H "X-API-KEY: $KEY" "$RXD_URL/api/pharmacies/$PHARMACY/" \
        2>/dev/null) && [ "$(jq -r .id <<<"$detail" 2>/dev/null)" = "$PHARMACY" ] && break
    detail=''
    sleep 0.2
done
[ -n "$detail" ] || { tail -n 20 "$RXD_LOG" >&2; die "GET /api/pharmacies/$PHARMACY/ with the key failed"; }
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "$RXD_URL/api/pharmacies/$PHARMACY/")
[ "$code" = 401 ] || die "GET /api/pharmacies/$PHARMACY/ without a key answered $code, not 401"
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 -H "X-API-KEY: ${KEY%?}x" \
    "$RXD_URL/api/pharmacies/$PHARMACY/")
[ "$code" = 401 ] || die "GET /api/pharmacies/$PHARMACY/ with a wrong key answered $code, not 401"
curl -fsS --max-time 2 "$RXD_URL/test/db/item/1/" | grep -q '"id":1' ||
    die "GET /test/db/item/1/ failed"
curl -fsS --max-time 2 -H "X-API-KEY: $KEY" "$RXD_URL/test/db/item/1/" | grep -q '"id":1' ||
    die "GET /test/db/item/1/ with the key failed"
curl -fsS -o /dev/null --max-time 2 "$RXD_URL/test/items/7/" || die "GET /test/items/7/ failed"
echo "check    detail with key 200 (${#detail} bytes), without key 401, wrong key 401;" \
     "item $(curl -fsS --max-time 2 "$RXD_URL/test/db/item/1/" | wc -c) bytes"

# ---------------------------------------------------------------- rounds

NAMES=(a k b t)
declare -A LABEL=(
    [a]="(a) /test/db/item/{id}/"
    [k]="(k) item + X-API-KEY"
    [b]="(b) /api/pharmacies/{id}/ key"
    [t]="(t) /test/items/{id}/ no db"
)
declare -A RPS_OF=() P99_OF=()
echo "warmup   2 s each"
run_pgbench "$DB" 2 -S
for r in "${NAMES[@]}"; do run_route 2 "$r"; done

pg_tps=() errors=0
for round in $(seq "$ROUNDS"); do
    run_pgbench "$DB" "$DURATION" -S
    pg_tps+=("$TPS")
    printf 'round %s  %-32s %7s tps\n' "$round" "pgbench -S" "$TPS"
    for r in "${NAMES[@]}"; do
        run_route "$DURATION" "$r"
        RPS_OF[$r]+="$RPS " P99_OF[$r]+="$P99 " errors=$((errors + ERR))
        printf 'round %s  %-32s %7s req/s  p99 %s ms%s\n' "$round" "${LABEL[$r]}" "$RPS" "$P99" \
            "$(errnote "$ERR")"
    done
done
kill -0 "$RXD_PID" 2>/dev/null || die "rxd died under load (log: $RXD_LOG)"

# ---------------------------------------------------------------- summary

m_tps=$(median "${pg_tps[@]}")
declare -A M=() MP=()
for r in "${NAMES[@]}"; do
    # shellcheck disable=SC2086 # word splitting intended
    M[$r]=$(median ${RPS_OF[$r]})
    # shellcheck disable=SC2086
    MP[$r]=$(median ${P99_OF[$r]})
done
r_ba=$(ratio "${M[b]}" "${M[a]}")
r_ka=$(ratio "${M[k]}" "${M[a]}")
r_bp=$(ratio "${M[b]}" "$m_tps")
scaled=$(awk -v a="${M[b]}" -v b="$m_tps" -v o="$OLD_PGBENCH" 'BEGIN { printf "%.0f", (b > 0) ? a / b * o : 0 }')
target=$((OLD_FACTOR * OLD_DETAIL))
times_old=$(awk -v s="$scaled" -v o="$OLD_DETAIL" 'BEGIN { printf "%.1f", s / o }')

echo
echo "== results (medians of $ROUNDS rounds; -c$CLIENTS, ${DURATION} s each)"
printf '%-32s %12s\n' "pgbench -S -M prepared" "$m_tps tps"
for r in "${NAMES[@]}"; do
    printf '%-32s %12s   p99 %s ms\n' "${LABEL[$r]}" "${M[$r]} req/s" "${MP[$r]}"
done
printf '%-32s %12s   target >= 0.9          %s\n' "ratio b/a (key path)" "$r_ba" \
    "$(verdict "$r_ba" ">=" 0.9)"
printf '%-32s %12s   (key check alone)\n' "ratio k/a" "$r_ka"
printf '%-32s %12s   target >= 0.6          %s\n' "ratio b/pgbench" "$r_bp" \
    "$(verdict "$r_bp" ">=" 0.6)"
printf '%-32s %12s   target >= %s (30 x 954) %s  (%s x Django)\n' "b scaled to 45.9k pgbench" \
    "$scaled req/s" "$target" "$(verdict "$scaled" ">=" "$target")" "$times_old"
printf '%-32s %12s   target < 20 ms         %s\n' "p99 of b" "${MP[b]} ms" \
    "$(verdict "${MP[b]}" "<=" 20)"
[ "$errors" -eq 0 ] || echo "$TAG: warning: $errors wrk errors (non-2xx or socket errors); figures suspect"

# ---------------------------------------------------------------- profile (BENCH_CALLGRIND)

# N sequential requests of one route on one keep-alive connection; fails unless all are 200.
cg_requests() { # n a|k|b|t
    local n=$1 url hdr=() ok
    case "$2" in
    a) url="$RXD_URL/test/db/item/[1-$n]/" ;;
    k) url="$RXD_URL/test/db/item/[1-$n]/" hdr=(-H "X-API-KEY: $KEY") ;;
    b) url="$RXD_URL/api/pharmacies/$PHARMACY/?n=[1-$n]" hdr=(-H "X-API-KEY: $KEY") ;;
    t) url="$RXD_URL/test/items/[1-$n]/" ;;
    esac
    ok=$(curl -s --max-time 600 "${hdr[@]}" -w '\n%{http_code}\n' "$url" | grep -c '^200$') || true
    [ "$ok" = "$n" ] || die "callgrind: route $2 answered $ok of $n requests with 200"
}
cg_dump() { # name: dump the counters since the last dump (and zero them)
    callgrind_control --dump="$1" "$RXD_PID" >>"$RAW_LOG" 2>&1 || die "callgrind_control failed"
}
if [ "$CALLGRIND" -gt 0 ]; then
    CG_DIR=$OUT/apikey-cg-$stamp
    mkdir -p "$CG_DIR"
    stop_pid "$RXD_PID" TERM
    RXD_PID=''
    echo
    echo "== profile: valgrind --tool=callgrind, 1 worker, $CALLGRIND requests per route" \
         "(200 warm-up), one connection"
    "${RXD_ENV[@]}" RXD_LISTEN="127.0.0.1:$RXD_PORT" RXD_LOG_ACCESS=off RXD_WORKERS=1 \
        RXD_RATELIMIT_ENABLED=false valgrind --tool=callgrind \
        --callgrind-out-file="$CG_DIR/callgrind.out" "$RXD" --config "$RXD_CONF" serve \
        >>"$RXD_LOG" 2>&1 &
    RXD_PID=$!
    for _ in $(seq 600); do
        kill -0 "$RXD_PID" 2>/dev/null || break
        curl -fsS -o /dev/null --max-time 2 -H "X-API-KEY: $KEY" \
            "$RXD_URL/api/pharmacies/$PHARMACY/" 2>/dev/null && break
        sleep 0.2
    done
    for r in "${NAMES[@]}"; do cg_requests 200 "$r"; done
    cg_dump warmup
    for r in "${NAMES[@]}"; do
        cg_requests "$CALLGRIND" "$r"
        cg_dump "route-$r"
    done
    stop_pid "$RXD_PID" TERM
    RXD_PID=''
    # Dumps are numbered in order: .1 warm-up, .2 a, .3 k, .4 b, .5 t (the last, at exit).
    declare -A IR=()
    i=2
    for r in "${NAMES[@]}"; do
        f=$CG_DIR/callgrind.out.$i
        [ -f "$f" ] || die "callgrind: no dump $f"
        IR[$r]=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
        printf '%-32s %9.0f instructions/request (rxd only)\n' "${LABEL[$r]}" \
            "$(awk -v t="${IR[$r]}" -v n="$CALLGRIND" 'BEGIN { print t / n }')"
        i=$((i + 1))
    done
    printf '%-32s %9.0f instructions/request = %.1f %% of a\n' "b - a" \
        "$(awk -v b="${IR[b]}" -v a="${IR[a]}" -v n="$CALLGRIND" 'BEGIN { print (b - a) / n }')" \
        "$(awk -v b="${IR[b]}" -v a="${IR[a]}" 'BEGIN { print (b - a) / a * 100 }')"
    printf '%-32s %9.0f instructions/request = %.1f %% of a\n' "k - a (key check)" \
        "$(awk -v b="${IR[k]}" -v a="${IR[a]}" -v n="$CALLGRIND" 'BEGIN { print (b - a) / n }')" \
        "$(awk -v b="${IR[k]}" -v a="${IR[a]}" 'BEGIN { print (b - a) / a * 100 }')"
    # Inclusive instructions per function and request, to show where a difference goes.
    incl() { # dump-number -> "per_request<TAB>function [object]" lines
        callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$CG_DIR/callgrind.out.$1" \
            2>/dev/null | grep '\[' | sed -E 's/\( *[0-9.]+%\)//' |
            awk -v n="$CALLGRIND" '$1 ~ /^[0-9,]+$/ { v = $1; gsub(",", "", v); $1 = "";
                sub(/^ +/, ""); printf "%.0f\t%s\n", v / n, $0 }'
    }
    incl 2 >"$CG_DIR/incl-a.tsv"
    incl 3 >"$CG_DIR/incl-k.tsv"
    incl 4 >"$CG_DIR/incl-b.tsv"
    cg_diff() { # base other: functions whose inclusive cost grew by >= 100 per request
        # (without the frames every request passes through: thread start, libuv, read, poll)
        awk -F'\t' 'NR == FNR { base[$2] = $1; next }
            $2 ~ /clone|start_thread|uv_run|worker_main|libuv|:on_read |:conn_feed |:on_poll |dispatch.c:run / { next }
            { d = $1 - base[$2]; if (d >= 100) printf "   %+7d  %7d  %s\n", d, $1, $2 }' "$1" "$2" |
            sed -E 's# \[[^]]*/([^/]+)\]$# [\1]#' | sort -k1,1gr | head -n 12
    }
    echo "-- k - a, inclusive instructions per request (difference, k's total, function):"
    cg_diff "$CG_DIR/incl-a.tsv" "$CG_DIR/incl-k.tsv"
    echo "-- b - k (same key check; authorize hook, handler and reply differ):"
    cg_diff "$CG_DIR/incl-k.tsv" "$CG_DIR/incl-b.tsv"
    echo "dumps    $CG_DIR (callgrind_annotate --inclusive=yes callgrind.out.4)"
fi
bench_end
echo "report   $REPORT"
echo "raw      $RAW_LOG (wrk and pgbench output), rxd log $RXD_LOG"
