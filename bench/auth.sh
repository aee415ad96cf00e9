#!/usr/bin/env bash
# bench/auth.sh — the auth module under load (DESIGN.md §8), same host, same session.
#
# 1. GET /api/auth/me/ with a valid bearer token (JWT check + one primary-key read)
#    beside `pgbench -S -M prepared` at the same client count: wrk -t2 -c32 -d10s
#    --latency and pgbench -c32 -j2 -T10, alternately, 3 rounds each after a 2 s warm-up;
#    prints the medians, the ratio me/pgbench (target: close to 0.6) and me scaled to the
#    old Django host: me_rps / pgbench_tps × 45.9k (there, pgbench -S did 45.9k tx/s and
#    Django served me at 1,117 req/s; target ≥ 30 × 1,117 = 33,510), and me's p99 (< 20 ms).
# 2. Login with the production Argon2id cost (the module's defaults; nothing here sets
#    auth.argon2_*) must not stall the event loop: wrk -t2 -c32 on /healthz alone, then
#    /healthz again while a second wrk (-t1 -c8, bench/login.lua) drives successful
#    POST /api/auth/login/; 3 alternating rounds; prints both /healthz p99s, their ratio
#    (target ≤ 2) and logins/s.
#
# Data: database rxd_bench_auth (dropped and re-created; `rxd migrate` with
# RXD_MODULES="notify auth"; one user made by `rxd createsuperuser --password-stdin`
# with a random password) and rxd_bench_auth_pgb (`pgbench -i -s 10`), both dropped at
# the end, on the local PostgreSQL (scripts/services.sh start: reused when it runs,
# stopped again when this script started it).
# rxd: build/rxd serve with only these settings (an empty config file, no RXD_* inherited):
# RXD_MODULES="notify auth" RXD_MODULE_PATH=build/modules RXD_WORKERS=2 RXD_LOG_ACCESS=off
# RXD_RATELIMIT_ENABLED=false RXD_JWT_SECRET=<48 random bytes> on 127.0.0.1:18002.
# A benchmark, not a test: exits 0 whether or not the targets are met, non-zero only when
# it could not measure. Everything it starts, it stops (Ctrl-C included).
#
#   bench/auth.sh                     (needs build/rxd, build/modules, wrk, pgbench)
#   BENCH_DURATION=2 BENCH_ROUNDS=1 bench/auth.sh   (smoke run)
# Knobs (environment): BENCH_RXD (build/rxd), BENCH_MODULE_PATH (build/modules),
# BENCH_DURATION (10, seconds), BENCH_ROUNDS (3), BENCH_THREADS (2), BENCH_CLIENTS (32),
# BENCH_LOGIN_CLIENTS (8), BENCH_SCALE (10), BENCH_AUTH_RXD_PORT (18002; bench/db.sh
# uses 18001), BENCH_KEEP_DB (0), BENCH_WAIT_FILE / BENCH_WAIT_UNTIL (wait for a quiet
# machine: bench/lib.sh), RXD_PG_PORT (55432), RXD_REDIS_PORT (56379).
# rxd and the modules run from a private copy (a rebuild during the run changes nothing);
# the raw log never shows the token, the password or the JWT secret.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TAG=bench/auth
# shellcheck source=bench/lib.sh
. bench/lib.sh

RXD=${BENCH_RXD:-build/rxd}
MODULE_PATH=${BENCH_MODULE_PATH:-build/modules}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CLIENTS=${BENCH_CLIENTS:-32}
LOGIN_CLIENTS=${BENCH_LOGIN_CLIENTS:-8}
SCALE=${BENCH_SCALE:-10}
RXD_PORT=${BENCH_AUTH_RXD_PORT:-18002}
KEEP_DB=${BENCH_KEEP_DB:-0}
DB=rxd_bench_auth
PGB_DB=rxd_bench_auth_pgb
DB_URL=postgresql://rxd@$PG_HOST:$PG_PORT/$DB
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/3
RXD_URL=http://127.0.0.1:$RXD_PORT
EMAIL=bench@example.com
# Old Django host (DESIGN.md §8): pgbench -S 45.9k tx/s, me 1,117 req/s; target 30×.
OLD_PGBENCH=45900 OLD_ME=1117 OLD_FACTOR=30

check_ints "BENCH_DURATION, BENCH_ROUNDS, BENCH_SCALE, BENCH_*CLIENTS, BENCH_THREADS, BENCH_AUTH_RXD_PORT" \
    "$DURATION" "$ROUNDS" "$SCALE" "$RXD_PORT" "$CLIENTS" "$LOGIN_CLIENTS" "$THREADS"
need_tools wrk curl jq redis-cli
need_pg_tools
[ -f bench/login.lua ] || die "bench/login.lua missing"

bench_files auth
bench_copy_bins "$RXD" "$MODULE_PATH/" notify auth

PASSWORD=$(rand_password)
secret "$PASSWORD" password
rxd_env_app "notify auth"

# ---------------------------------------------------------------- cleanup

LOGIN_PID=''
cleanup_extra() {
    stop_pid "$LOGIN_PID" INT
}

# ---------------------------------------------------------------- helpers

# wrk once (-t$THREADS -c$CLIENTS); sets RPS, P99 (ms), ERR.
run_wrk() { # seconds url [wrk args...]
    local out secs=$1 url=$2
    shift 2
    bg_run out wrk "-t$THREADS" "-c$CLIENTS" "-d${secs}s" --latency "$@" "$url" ||
        die "wrk failed (log: $RAW_LOG)"
    read -r RPS P99 ERR _ < <(wrk_figures 1 2 <<<"$out")
    RPS=${RPS%.*}
}

# The login load in the background: wrk -t1 -c$LOGIN_CLIENTS for the given seconds.
LOGIN_TMP=''
start_login_load() { # seconds
    LOGIN_TMP=$(mktemp)
    BENCH_EMAIL="$EMAIL" BENCH_PASSWORD="$PASSWORD" wrk -t1 "-c$LOGIN_CLIENTS" "-d${1}s" \
        --timeout 10s --latency -s bench/login.lua "$RXD_URL" >"$LOGIN_TMP" 2>&1 &
    LOGIN_PID=$!
}
# Wait for it; sets LRPS (logins/s, one decimal), LP99 (ms), LERR.
wait_login_load() {
    local out rc=0
    wait "$LOGIN_PID" || rc=$?
    LOGIN_PID=''
    out=$(cat "$LOGIN_TMP")
    rm -f "$LOGIN_TMP"
    log_raw "wrk -t1 -c$LOGIN_CLIENTS login.lua" "$rc" "$out"
    [ "$rc" = 0 ] || die "login wrk failed (log: $RAW_LOG)"
    read -r LRPS LP99 LERR _ < <(wrk_figures 1 2 <<<"$out")
}

# ---------------------------------------------------------------- header

exec > >(tee "$REPORT") 2>&1
bench_header "rxd auth bench"
echo "rxd      $("$RXD" version 2>&1 | head -n1)"
echo "pg       $("$PGBENCH" --version)"
echo "wrk      $(wrk --version 2>&1 | head -n1 | cut -c1-40)"
echo "load     pgbench -S -M prepared -n -c$CLIENTS -j$THREADS -T$DURATION;" \
     "wrk -t$THREADS -c$CLIENTS -d${DURATION}s --latency; login: wrk -t1 -c$LOGIN_CLIENTS" \
     "-s bench/login.lua; $ROUNDS rounds, alternating"
bench_wait_quiet

# ---------------------------------------------------------------- databases

services_start
port_free "$RXD_PORT" || die "127.0.0.1:$RXD_PORT is in use (BENCH_AUTH_RXD_PORT)"

db_recreate "$DB" "$PGB_DB"
echo "init     pgbench -i -s $SCALE $PGB_DB"
t0=$(date +%s)
pgbench_init "$PGB_DB"
echo "init     done in $(($(date +%s) - t0)) s"
rxd_cli migrate >>"$RAW_LOG" 2>&1 ||
    die "rxd migrate failed (log: $RAW_LOG)"
printf '%s\n' "$PASSWORD" |
    rxd_cli createsuperuser --email "$EMAIL" --password-stdin \
        >>"$RAW_LOG" 2>&1 || die "rxd createsuperuser failed (log: $RAW_LOG)"

# ---------------------------------------------------------------- rxd

"${RXD_ENV[@]}" RXD_LISTEN="127.0.0.1:$RXD_PORT" RXD_LOG_ACCESS=off RXD_WORKERS=2 \
    RXD_RATELIMIT_ENABLED=false "$RXD" --config "$RXD_CONF" serve >>"$RXD_LOG" 2>&1 &
RXD_PID=$!
wait_http "$RXD_URL/healthz" "$RXD_PID" ||
    { tail -n 20 "$RXD_LOG" >&2; die "rxd did not come up on $RXD_URL (log: $RXD_LOG)"; }

# A token (the pool connects in the background: retry a few times).
TOKEN=''
for _ in $(seq 50); do
    TOKEN=$(jq -n --arg e "$EMAIL" --arg p "$PASSWORD" '{email: $e, password: $p}' |
        curl -sS --max-time 5 -H 'Content-Type: application/json' --data-binary @- \
            "$RXD_URL/api/auth/login/" 2>/dev/null | jq -r '.access // empty' 2>/dev/null) || true
    [ -n "$TOKEN" ] && break
    sleep 0.2
done
[ -n "$TOKEN" ] || { tail -n 20 "$RXD_LOG" >&2; die "login failed (log: $RXD_LOG)"; }
secret "$TOKEN" token
AUTH_HDR="Authorization: Bearer $TOKEN"
me=$(curl -fsS --max-time 5 -H "$AUTH_HDR" "$RXD_URL/api/auth/me/") ||
    die "GET /api/auth/me/ failed with the token"
[ "$(jq -r .email <<<"$me")" = "$EMAIL" ] || die "GET /api/auth/me/ answered $me"
echo "user     $EMAIL (id $(jq -r .id <<<"$me")), token ${#TOKEN} bytes;" \
     "Argon2id: the module's defaults (no auth.argon2_* set)"

# ---------------------------------------------------------------- 1. me vs pgbench -S

echo "warmup   2 s each"
run_pgbench "$PGB_DB" 2 -S
run_wrk 2 "$RXD_URL/api/auth/me/" -H "$AUTH_HDR"

pg_tps=() me_rps=() me_p99=() errors=0
for round in $(seq "$ROUNDS"); do
    run_pgbench "$PGB_DB" "$DURATION" -S
    pg_tps+=("$TPS")
    echo "round $round  pgbench -S   $TPS tps"
    run_wrk "$DURATION" "$RXD_URL/api/auth/me/" -H "$AUTH_HDR"
    [ "${RPS:-0}" -gt 0 ] || die "wrk got nothing from /api/auth/me/ (log: $RAW_LOG)"
    me_rps+=("$RPS") me_p99+=("$P99") errors=$((errors + ERR))
    echo "round $round  rxd me       $RPS req/s  p99 $P99 ms$(errnote "$ERR")"
done

# ---------------------------------------------------------------- 2. /healthz under logins

hz_url=$RXD_URL/healthz
run_wrk 2 "$hz_url"
hz_alone=() hz_alone_rps=() hz_login=() hz_login_rps=() logins=() login_p99=()
for round in $(seq "$ROUNDS"); do
    run_wrk "$DURATION" "$hz_url"
    hz_alone+=("$P99") hz_alone_rps+=("$RPS") errors=$((errors + ERR))
    echo "round $round  /healthz alone          $RPS req/s  p99 $P99 ms$(errnote "$ERR")"
    # The login load starts 1 s before and ends 1 s after the /healthz run.
    start_login_load $((DURATION + 2))
    sleep 1
    run_wrk "$DURATION" "$hz_url"
    hz_login+=("$P99") hz_login_rps+=("$RPS") errors=$((errors + ERR))
    wait_login_load
    logins+=("$LRPS") login_p99+=("$LP99") errors=$((errors + LERR))
    echo "round $round  /healthz with logins    $RPS req/s  p99 $P99 ms$(errnote "$ERR")"
    echo "round $round  login                   $LRPS logins/s  p99 $LP99 ms$(errnote "$LERR")"
done
kill -0 "$RXD_PID" 2>/dev/null || die "rxd died under load (log: $RXD_LOG)"

# ---------------------------------------------------------------- summary

m_tps=$(median "${pg_tps[@]}")
m_me=$(median "${me_rps[@]}")
m_me_p99=$(median "${me_p99[@]}")
ratio=$(ratio "$m_me" "$m_tps")
scaled=$(awk -v a="$m_me" -v b="$m_tps" -v o="$OLD_PGBENCH" 'BEGIN { printf "%.0f", (b > 0) ? a / b * o : 0 }')
target=$((OLD_FACTOR * OLD_ME))
times_old=$(awk -v s="$scaled" -v o="$OLD_ME" 'BEGIN { printf "%.1f", s / o }')
m_hz_alone=$(median "${hz_alone[@]}")
m_hz_login=$(median "${hz_login[@]}")
m_hz_alone_rps=$(median "${hz_alone_rps[@]}")
m_hz_login_rps=$(median "${hz_login_rps[@]}")
m_logins=$(median "${logins[@]}")
m_login_p99=$(median "${login_p99[@]}")
hz_ratio=$(ratio "$m_hz_login" "$m_hz_alone")

echo
echo "== results (medians of $ROUNDS rounds; -c$CLIENTS, ${DURATION} s each)"
printf '%-28s %14s\n' "pgbench -S -M prepared" "$m_tps tps"
printf '%-28s %14s   p99 %s ms   (target < 20 ms) %s\n' "rxd GET /api/auth/me/" "$m_me req/s" \
    "$m_me_p99" "$(verdict "$m_me_p99" "<=" 20)"
printf '%-28s %14s   target close to 0.6    %s\n' "ratio me/pgbench" "$ratio" \
    "$(verdict "$ratio" ">=" 0.6)"
printf '%-28s %14s   target >= %s (30 x 1,117) %s  (%s x Django)\n' "me scaled to 45.9k pgbench" \
    "$scaled req/s" "$target" "$(verdict "$scaled" ">=" "$target")" "$times_old"
printf '%-28s %14s   p99 %s ms\n' "/healthz alone" "$m_hz_alone_rps req/s" "$m_hz_alone"
printf '%-28s %14s   p99 %s ms\n' "/healthz during logins" "$m_hz_login_rps req/s" "$m_hz_login"
printf '%-28s %14s   target <= 2            %s\n' "p99 ratio (logins/alone)" "$hz_ratio" \
    "$(verdict "$hz_ratio" "<=" 2)"
printf '%-28s %14s   p99 %s ms (wrk -t1 -c%s; Argon2id defaults)\n' "POST /api/auth/login/" \
    "$m_logins /s" "$m_login_p99" "$LOGIN_CLIENTS"
[ "$errors" -eq 0 ] || echo "$TAG: warning: $errors wrk errors (non-2xx or socket errors); figures suspect"
bench_end
echo "report   $REPORT"
echo "raw      $RAW_LOG (wrk and pgbench output), rxd log $RXD_LOG"
