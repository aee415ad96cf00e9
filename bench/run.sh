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
# BENCH_CONNS (10000), BENCH_NGINX_PORT (18080), BENCH_RXD_PORT (18000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

RXD=${BENCH_RXD:-build/rxd}
CONFIG=${BENCH_CONFIG:-conf/rxd.conf}
DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
CLIENTS=${BENCH_CLIENTS:-32}
CONNS=${BENCH_CONNS:-10000}
NGINX_PORT=${BENCH_NGINX_PORT:-18080}
RXD_PORT=${BENCH_RXD_PORT:-18000}
OUT=$ROOT/var/bench
NGINX_URL=http://127.0.0.1:$NGINX_PORT/
RXD_URL=http://127.0.0.1:$RXD_PORT/healthz

die() { echo "bench: $*" >&2; exit 1; }

for tool in wrk nginx curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (make bench installs it: scripts/deps.sh --bench)"
done
[ -x "$RXD" ] || die "$RXD not built (make build)"
[ -f "$CONFIG" ] || die "$CONFIG not found"

mkdir -p "$OUT/nginx-tmp"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
REPORT=$OUT/result-$stamp.txt
WRK_LOG=$OUT/wrk-$stamp.log
: >"$WRK_LOG"

# ---------------------------------------------------------------- cleanup

NGINX_PID='' RXD_PID='' HOLD_PID=''
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
STOP_SERVICES=0
cleanup() {
    stop_pid "$HOLD_PID" TERM
    stop_pid "$RXD_PID" TERM
    stop_pid "$NGINX_PID" QUIT
    if [ "$STOP_SERVICES" = 1 ]; then scripts/services.sh stop >/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers

port_free() { # nothing answers on 127.0.0.1:$1
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_http() { # url pid name
    local _
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || return 1
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# Run wrk once; print "req_per_s p99_ms errors" (errors: non-2xx + socket errors).
run_wrk() { # url duration
    local out
    out=$(wrk "-t$THREADS" "-c$CLIENTS" "-d$2" --latency "$1")
    printf '### %s %s\n%s\n\n' "$1" "$(date -u +%T)" "$out" >>"$WRK_LOG"
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
        END { printf "%.0f %.3f %d\n", rps, p99, err }' <<<"$out"
}

median() { # numbers...
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
echo "== rxd bench $stamp"
echo "host     $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)," \
     "$(uname -sr)"
echo "commit   $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
echo "rxd      $("$RXD" version 2>&1 | head -n1)"
echo "nginx    $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "wrk      $(wrk --version 2>&1 | head -n1)"
echo "load     wrk -t$THREADS -c$CLIENTS -d$DURATION --latency, $ROUNDS rounds each, alternating"

# ---------------------------------------------------------------- start servers

# rxd checks its own migrations at start, so it needs the database even without
# modules: the local services (scripts/services.sh), unless the caller points
# RXD_DATABASE_URL / RXD_REDIS_URL elsewhere. Stopped again if this script started them.
scripts/services.sh status >/dev/null 2>&1 || STOP_SERVICES=1
scripts/services.sh start >/dev/null
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
run_wrk "$NGINX_URL" 2s >/dev/null
run_wrk "$RXD_URL" 2s >/dev/null

nginx_rps=() nginx_p99=() rxd_rps=() rxd_p99=() errors=0
for round in $(seq "$ROUNDS"); do
    read -r rps p99 err < <(run_wrk "$NGINX_URL" "$DURATION")
    nginx_rps+=("$rps") nginx_p99+=("$p99") errors=$((errors + err))
    [ "${rps:-0}" -gt 0 ] || die "wrk got nothing from $NGINX_URL (log: $WRK_LOG)"
    echo "round $round  nginx $rps req/s  p99 $p99 ms$(errnote "$err")"
    read -r rps p99 err < <(run_wrk "$RXD_URL" "$DURATION")
    rxd_rps+=("$rps") rxd_p99+=("$p99") errors=$((errors + err))
    [ "${rps:-0}" -gt 0 ] || die "wrk got nothing from $RXD_URL (log: $WRK_LOG)"
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
[ "$errors" -eq 0 ] || echo "bench: warning: $errors wrk errors (non-2xx or socket errors); figures suspect"
echo "report   $REPORT"
echo "wrk      $WRK_LOG"
