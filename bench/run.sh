#!/usr/bin/env bash
# bench/run.sh — rxd against nginx on the same host, in the same session (DESIGN.md §8).
#
# Throughput: wrk (-t2 -c32 -d10s --latency, keep-alive) against nginx `return 200`
# (2 workers) and rxd `/healthz` (2 workers, no modules), alternately, 3 rounds each;
# prints the median req/s and p99 of each and the ratio rxd/nginx.
# Memory: rxd's VmRSS just after start, then with 10,000 idle keep-alive connections
# open (bench/hold_conns.py), and the KiB per connection.
# A benchmark, not a test: it exits 0 whether or not the targets are met, non-zero
# only when it could not measure. Everything it starts, it stops (the local
# PostgreSQL and Redis too, if they were not running before).
#
#   make bench            (installs wrk + nginx, builds, runs this)
#   bench/run.sh          (if both are there already)
# Knobs (environment): BENCH_RXD (build/rxd), BENCH_CONFIG (conf/rxd.conf),
# BENCH_DURATION (10s), BENCH_ROUNDS (3), BENCH_THREADS (2), BENCH_CLIENTS (32),
# BENCH_CONNS (10000), BENCH_NGINX_PORT (18080), BENCH_RXD_PORT (18000),
# BENCH_WAIT_FILE / BENCH_WAIT_UNTIL (wait for a quiet machine: bench/lib.sh).
# rxd runs from a private copy of BENCH_RXD (a rebuild during the run changes nothing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TAG=bench
# shellcheck source=bench/lib.sh
. bench/lib.sh

RXD=${BENCH_RXD:-build/rxd}
CONFIG=${BENCH_CONFIG:-conf/rxd.conf}
DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CLIENTS=${BENCH_CLIENTS:-32}
CONNS=${BENCH_CONNS:-10000}
NGINX_PORT=${BENCH_NGINX_PORT:-18080}
RXD_PORT=${BENCH_RXD_PORT:-18000}
NGINX_URL=http://127.0.0.1:$NGINX_PORT/
RXD_URL=http://127.0.0.1:$RXD_PORT/healthz

need_tools wrk nginx curl python3
[ -f "$CONFIG" ] || die "$CONFIG not found"

mkdir -p "$OUT/nginx-tmp"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$OUT/result-$stamp.txt
RAW_LOG=$OUT/wrk-$stamp.log
: >"$RAW_LOG"
bench_copy_bins "$RXD"

# ---------------------------------------------------------------- cleanup

NGINX_PID='' HOLD_PID=''
cleanup_extra() {
    stop_pid "$HOLD_PID" TERM
    stop_pid "$NGINX_PID" QUIT
}

# ---------------------------------------------------------------- helpers

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Run wrk once; sets RPS, P99 (ms) and ERR (non-2xx + socket errors).
run_wrk() { # url duration
    local out
    bg_run out wrk "-t$THREADS" "-c$CLIENTS" "-d$2" --latency "$1" || die "wrk failed (log: $RAW_LOG)"
    read -r RPS P99 ERR _ < <(wrk_figures 0 3 <<<"$out")
}

# ---------------------------------------------------------------- header

exec > >(tee "$REPORT") 2>&1
bench_header "rxd bench"
echo "rxd      $("$RXD" version 2>&1 | head -n1)"
echo "nginx    $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "wrk      $(wrk --version 2>&1 | head -n1)"
echo "load     wrk -t$THREADS -c$CLIENTS -d$DURATION --latency, $ROUNDS rounds each, alternating"
bench_wait_quiet

# ---------------------------------------------------------------- start servers

# rxd checks its own migrations at start, so it needs the database even without
# modules: the local services (scripts/services.sh), unless the caller points
# RXD_DATABASE_URL / RXD_REDIS_URL elsewhere. Stopped again if this script started them.
services_start
eval "$(scripts/services.sh env)"

port_free "$NGINX_PORT" || die "127.0.0.1:$NGINX_PORT is in use (BENCH_NGINX_PORT)"
port_free "$RXD_PORT" || die "127.0.0.1:$RXD_PORT is in use (BENCH_RXD_PORT)"

cat >"$OUT/nginx.conf" <<EOF
# Written by bench/run.sh: the reference server, nothing but 'return 200'.
daemon off;
worker_processes 2;
pid $OUT/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 100000000;  # like rxd: never close a busy keep-alive connection
    client_body_temp_path $OUT/nginx-tmp/body;
    proxy_temp_path $OUT/nginx-tmp/proxy;
    fastcgi_temp_path $OUT/nginx-tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx-tmp/uwsgi;
    scgi_temp_path $OUT/nginx-tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200 "ok\n"; }
    }
}
EOF
nginx -p "$OUT/" -c "$OUT/nginx.conf" -e "$OUT/nginx-error.log" &
NGINX_PID=$!

RXD_LISTEN=127.0.0.1:$RXD_PORT RXD_LOG_ACCESS=off RXD_WORKERS=2 RXD_MODULES='' \
    "$RXD" serve --config "$CONFIG" >"$OUT/rxd.log" 2>&1 &
RXD_PID=$!

wait_http "$NGINX_URL" "$NGINX_PID" ||
    { tail -n 20 "$OUT/nginx-error.log" >&2; die "nginx did not come up on $NGINX_URL"; }
wait_http "$RXD_URL" "$RXD_PID" ||
    { tail -n 20 "$OUT/rxd.log" >&2; die "rxd did not come up on $RXD_URL (log: $OUT/rxd.log)"; }

# ---------------------------------------------------------------- memory (fresh rxd)

sleep 1
rss_idle=$(rss_kib "$RXD_PID")
echo "rss      rxd idle $rss_idle KiB; opening $CONNS keep-alive connections"

# Its stdin is a FIFO we hold open: closing our end tells it to let go.
rm -f "$OUT/hold.in" "$OUT/hold.out"
mkfifo "$OUT/hold.in"
python3 bench/hold_conns.py --port "$RXD_PORT" -n "$CONNS" \
    <"$OUT/hold.in" >"$OUT/hold.out" 2>"$OUT/hold.err" &
HOLD_PID=$!
exec {hold_w}>"$OUT/hold.in"
for _ in $(seq 3000); do # up to 10 minutes
    grep -q '^ready' "$OUT/hold.out" && break
    kill -0 "$HOLD_PID" 2>/dev/null || break
    sleep 0.2
done
hold_line=$(head -n1 "$OUT/hold.out")
rss_conns=n/a per_conn=n/a
if [ "$hold_line" = "ready $CONNS" ]; then
    sleep 1
    kill -0 "$RXD_PID" 2>/dev/null || die "rxd died holding $CONNS connections (log: $OUT/rxd.log)"
    rss_conns=$(rss_kib "$RXD_PID")
    per_conn=$(awk -v a="$rss_conns" -v b="$rss_idle" -v n="$CONNS" \
        'BEGIN { printf "%.2f", (a - b) / n }')
fi
# EOF on its stdin: it checks the connections are still open, closes them and exits.
exec {hold_w}>&-
hold_rc=0
wait "$HOLD_PID" || hold_rc=$?
HOLD_PID=''
if [ "$hold_rc" != 0 ]; then
    sed 's/^/bench: /' "$OUT/hold.err"
    echo "bench: warning: holding $CONNS connections failed (above); no per-connection figure"
fi
kill -0 "$RXD_PID" 2>/dev/null || die "rxd died after the connection test (log: $OUT/rxd.log)"
echo "rss      rxd with $CONNS connections $rss_conns KiB"
sleep 1

# ---------------------------------------------------------------- throughput

echo "warmup   2s each"
run_wrk "$NGINX_URL" 2s
run_wrk "$RXD_URL" 2s

nginx_rps=() nginx_p99=() rxd_rps=() rxd_p99=() errors=0
for round in $(seq "$ROUNDS"); do
    run_wrk "$NGINX_URL" "$DURATION"
    rps=$RPS p99=$P99 err=$ERR
    nginx_rps+=("$rps") nginx_p99+=("$p99") errors=$((errors + err))
    [ "${rps:-0}" -gt 0 ] || die "wrk got nothing from $NGINX_URL (log: $RAW_LOG)"
    echo "round $round  nginx $rps req/s  p99 $p99 ms$(errnote "$err")"
    run_wrk "$RXD_URL" "$DURATION"
    rps=$RPS p99=$P99 err=$ERR
    rxd_rps+=("$rps") rxd_p99+=("$p99") errors=$((errors + err))
    [ "${rps:-0}" -gt 0 ] || die "wrk got nothing from $RXD_URL (log: $RAW_LOG)"
    echo "round $round  rxd   $rps req/s  p99 $p99 ms$(errnote "$err")"
done
kill -0 "$RXD_PID" 2>/dev/null || die "rxd died under load (log: $OUT/rxd.log)"

n_rps=$(median "${nginx_rps[@]}") n_p99=$(median "${nginx_p99[@]}")
r_rps=$(median "${rxd_rps[@]}") r_p99=$(median "${rxd_p99[@]}")
ratio=$(awk -v a="$r_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
idle_mib=$(awk -v k="$rss_idle" 'BEGIN { printf "%.1f", k / 1024 }')

# ---------------------------------------------------------------- summary

echo
echo "== results (medians of $ROUNDS rounds; wrk -t$THREADS -c$CLIENTS -d$DURATION)"
printf '%-22s %12s   %s\n' "nginx /" "$n_rps req/s" "p99 $n_p99 ms"
printf '%-22s %12s   %s\n' "rxd /healthz" "$r_rps req/s" "p99 $r_p99 ms"
printf '%-22s %12s   %-22s %s\n' "ratio rxd/nginx" "$ratio" "target >= 0.8" \
    "$(verdict "$ratio" ">=" 0.8)"
printf '%-22s %12s   %-22s %s\n' "rxd idle RSS" "$idle_mib MiB" "target <= 16 MiB" \
    "$(verdict "$idle_mib" "<=" 16)"
printf '%-22s %12s   %-22s %s\n' "rxd per idle conn" "$per_conn KiB" "target <= 5 KiB" \
    "$(verdict "$per_conn" "<=" 5)"
echo "(rxd RSS $rss_idle KiB idle, $rss_conns KiB with $CONNS connections)"
[ "$errors" -eq 0 ] || echo "$TAG: warning: $errors wrk errors (non-2xx or socket errors); figures suspect"
bench_end
echo "report   $REPORT"
echo "wrk      $RAW_LOG"
