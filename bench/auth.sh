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
# uses 18001), BENCH_KEEP_DB (0), RXD_PG_PORT (55432), RXD_REDIS_PORT (56379).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

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
PG_PORT=${RXD_PG_PORT:-55432}
REDIS_PORT=${RXD_REDIS_PORT:-56379}
PG_HOST=127.0.0.1
PG_BIN=/usr/lib/postgresql/15/bin
DB=rxd_bench_auth
PGB_DB=rxd_bench_auth_pgb
DB_URL=postgresql://rxd@$PG_HOST:$PG_PORT/$DB
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/3
OUT=$ROOT/var/bench
RXD_URL=http://127.0.0.1:$RXD_PORT
EMAIL=bench@example.com
# Old Django host (DESIGN.md §8): pgbench -S 45.9k tx/s, me 1,117 req/s; target 30×.
OLD_PGBENCH=45900 OLD_ME=1117 OLD_FACTOR=30

die() { echo "bench/auth: $*" >&2; exit 1; }

case "$DURATION$ROUNDS$SCALE$RXD_PORT$CLIENTS$LOGIN_CLIENTS$THREADS" in
*[!0-9]*) die "BENCH_DURATION, BENCH_ROUNDS, BENCH_SCALE, BENCH_*CLIENTS, BENCH_THREADS, BENCH_AUTH_RXD_PORT are integers" ;;
esac
for tool in wrk curl jq redis-cli; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/deps.sh --bench installs wrk)"
done
PGBENCH=$PG_BIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench) || die "pgbench not found (postgresql-15)"
PSQL=$PG_BIN/psql
[ -x "$PSQL" ] || PSQL=$(command -v psql) || die "psql not found"
[ -x "$RXD" ] || die "$RXD not built (make build)"
[ -f "$MODULE_PATH/auth.so" ] && [ -f "$MODULE_PATH/notify.so" ] ||
    die "$MODULE_PATH/{auth,notify}.so not built (make build)"
[ -f bench/login.lua ] || die "bench/login.lua missing"

mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$OUT/auth-result-$stamp.txt
RAW_LOG=$OUT/auth-raw-$stamp.log
RXD_LOG=$OUT/auth-rxd-$stamp.log
RXD_CONF=$OUT/auth-rxd.conf
: >"$RAW_LOG"
echo "# Written by bench/auth.sh: empty, everything comes from the environment." >"$RXD_CONF"

# rxd gets only the RXD_* variables set below, none inherited from the caller.
RXD_UNSET=()
while IFS= read -r v; do
    case "$v" in RXD_*) RXD_UNSET+=(-u "$v") ;; esac
done < <(compgen -e)

JWT_SECRET=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
# Meets the password rules (upper, lower, digit, one of @$!%*?&#), random per run.
PASSWORD="Bb9!$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
RXD_ENV=(env "${RXD_UNSET[@]}" RXD_MODULES="notify auth" RXD_MODULE_PATH="$ROOT/$MODULE_PATH"
    RXD_DATABASE_URL="$DB_URL" RXD_REDIS_URL="$REDIS_URL" RXD_JWT_SECRET="$JWT_SECRET"
    RXD_NOTIFY_SMS_PROVIDER=log RXD_NOTIFY_EMAIL_PROVIDER=log
    RXD_NOTIFY_LOG_OUTBOX="$OUT/auth-outbox.jsonl")

# ---------------------------------------------------------------- cleanup

RXD_PID='' LOAD_PID='' LOGIN_PID='' STOP_PG=0 STOP_REDIS=0 DB_MADE=0
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
drop_dbs() {
    local d
    for d in "$DB" "$PGB_DB"; do
        PGOPTIONS="-c client_min_messages=warning" "$PSQL" -X -q \
            -d "postgresql://rxd@$PG_HOST:$PG_PORT/postgres" -c "DROP DATABASE IF EXISTS $d" \
            >/dev/null 2>&1 || true
    done
}
cleanup() {
    stop_pid "$LOGIN_PID" INT
    stop_pid "$LOAD_PID" INT
    stop_pid "$RXD_PID" TERM
    if [ "$DB_MADE" = 1 ] && [ "$KEEP_DB" != 1 ]; then drop_dbs; fi
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

log_raw() { # title rc output
    printf '### %s  %s (rc %d)\n%s\n\n' "$(date -u +%T)" "$1" "$2" "$3" >>"$RAW_LOG"
}

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
    local title="$*"
    [ -z "${TOKEN:-}" ] || title=${title//"$TOKEN"/<token>}
    log_raw "$title" "$rc" "$_out"
    return "$rc"
}

# "req_per_s p99_ms errors" from wrk's output (errors: non-2xx + socket errors).
wrk_figures() {
    awk '
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
        END { printf "%.1f %.2f %d\n", rps, p99, err }'
}

# pgbench once; sets TPS. (No $(...) around these: the load generator must stay a
# child of this shell, so the trap can stop it.)
run_pgbench() { # seconds
    local out
    bg_run out "$PGBENCH" -S -M prepared -n -c "$CLIENTS" -j "$THREADS" -T "$1" \
        -h "$PG_HOST" -p "$PG_PORT" -U rxd "$PGB_DB" || die "pgbench failed (log: $RAW_LOG)"
    TPS=$(awk '/^tps = / { tps = $3 } END { printf "%.0f\n", tps }' <<<"$out")
}

# wrk once (-t$THREADS -c$CLIENTS); sets RPS, P99 (ms), ERR.
run_wrk() { # seconds url [wrk args...]
    local out secs=$1 url=$2
    shift 2
    bg_run out wrk "-t$THREADS" "-c$CLIENTS" "-d${secs}s" --latency "$@" "$url" ||
        die "wrk failed (log: $RAW_LOG)"
    read -r RPS P99 ERR < <(wrk_figures <<<"$out")
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
    read -r LRPS LP99 LERR < <(wrk_figures <<<"$out")
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

errnote() { if [ "$1" -gt 0 ]; then echo "  ($1 errors)"; fi; }

verdict() { # value op target -> "ok" / "MISS" / "n/a"
    case "$1" in '' | *[!0-9.]*) echo n/a; return ;; esac
    awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {
        ok = (op == ">=") ? (v >= t) : (v <= t); print ok ? "ok" : "MISS" }'
}

# ---------------------------------------------------------------- header

exec > >(tee "$REPORT") 2>&1
echo "== rxd auth bench $stamp"
echo "host     $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)," \
     "$(uname -sr)"
echo "commit   $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
echo "rxd      $("$RXD" version 2>&1 | head -n1)"
echo "pg       $("$PGBENCH" --version)"
echo "wrk      $(wrk --version 2>&1 | head -n1 | cut -c1-40)"
echo "load     pgbench -S -M prepared -n -c$CLIENTS -j$THREADS -T$DURATION;" \
     "wrk -t$THREADS -c$CLIENTS -d${DURATION}s --latency; login: wrk -t1 -c$LOGIN_CLIENTS" \
     "-s bench/login.lua; $ROUNDS rounds, alternating"

# ---------------------------------------------------------------- databases

"$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1 || STOP_PG=1
[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || STOP_REDIS=1
scripts/services.sh start >/dev/null
port_free "$RXD_PORT" || die "127.0.0.1:$RXD_PORT is in use (BENCH_AUTH_RXD_PORT)"

admin=(-X -q -v ON_ERROR_STOP=1 -d "postgresql://rxd@$PG_HOST:$PG_PORT/postgres")
DB_MADE=1
drop_dbs
"$PSQL" "${admin[@]}" -c "CREATE DATABASE $DB" >/dev/null
"$PSQL" "${admin[@]}" -c "CREATE DATABASE $PGB_DB" >/dev/null
echo "init     pgbench -i -s $SCALE $PGB_DB"
t0=$(date +%s)
"$PGBENCH" -i -s "$SCALE" -q -h "$PG_HOST" -p "$PG_PORT" -U rxd "$PGB_DB" >>"$RAW_LOG" 2>&1 ||
    die "pgbench -i failed (log: $RAW_LOG)"
echo "init     done in $(($(date +%s) - t0)) s"
"${RXD_ENV[@]}" "$RXD" --config "$RXD_CONF" migrate >>"$RAW_LOG" 2>&1 ||
    die "rxd migrate failed (log: $RAW_LOG)"
printf '%s\n' "$PASSWORD" |
    "${RXD_ENV[@]}" "$RXD" --config "$RXD_CONF" createsuperuser --email "$EMAIL" --password-stdin \
        >>"$RAW_LOG" 2>&1 || die "rxd createsuperuser failed (log: $RAW_LOG)"

# ---------------------------------------------------------------- rxd

"${RXD_ENV[@]}" RXD_LISTEN="127.0.0.1:$RXD_PORT" RXD_LOG_ACCESS=off RXD_WORKERS=2 \
    RXD_RATELIMIT_ENABLED=false "$RXD" --config "$RXD_CONF" serve >>"$RXD_LOG" 2>&1 &
RXD_PID=$!
for _ in $(seq 100); do
    kill -0 "$RXD_PID" 2>/dev/null || break
    curl -fsS -o /dev/null --max-time 1 "$RXD_URL/healthz" 2>/dev/null && break
    sleep 0.1
done
curl -fsS -o /dev/null --max-time 1 "$RXD_URL/healthz" 2>/dev/null ||
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
AUTH_HDR="Authorization: Bearer $TOKEN"
me=$(curl -fsS --max-time 5 -H "$AUTH_HDR" "$RXD_URL/api/auth/me/") ||
    die "GET /api/auth/me/ failed with the token"
[ "$(jq -r .email <<<"$me")" = "$EMAIL" ] || die "GET /api/auth/me/ answered $me"
echo "user     $EMAIL (id $(jq -r .id <<<"$me")), token ${#TOKEN} bytes;" \
     "Argon2id: the module's defaults (no auth.argon2_* set)"

# ---------------------------------------------------------------- 1. me vs pgbench -S

echo "warmup   2 s each"
run_pgbench 2
run_wrk 2 "$RXD_URL/api/auth/me/" -H "$AUTH_HDR"

pg_tps=() me_rps=() me_p99=() errors=0
for round in $(seq "$ROUNDS"); do
    run_pgbench "$DURATION"
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
ratio=$(awk -v a="$m_me" -v b="$m_tps" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
scaled=$(awk -v a="$m_me" -v b="$m_tps" -v o="$OLD_PGBENCH" 'BEGIN { printf "%.0f", (b > 0) ? a / b * o : 0 }')
target=$((OLD_FACTOR * OLD_ME))
times_old=$(awk -v s="$scaled" -v o="$OLD_ME" 'BEGIN { printf "%.1f", s / o }')
m_hz_alone=$(median "${hz_alone[@]}")
m_hz_login=$(median "${hz_login[@]}")
m_hz_alone_rps=$(median "${hz_alone_rps[@]}")
m_hz_login_rps=$(median "${hz_login_rps[@]}")
m_logins=$(median "${logins[@]}")
m_login_p99=$(median "${login_p99[@]}")
hz_ratio=$(awk -v a="$m_hz_login" -v b="$m_hz_alone" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')

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
[ "$errors" -eq 0 ] || echo "bench/auth: warning: $errors wrk errors (non-2xx or socket errors); figures suspect"
echo "report   $REPORT"
echo "raw      $RAW_LOG (wrk and pgbench output), rxd log $RXD_LOG"
