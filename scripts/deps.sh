#!/usr/bin/env bash
# deps.sh — install the Debian 12 packages rxd needs to build, test and run locally.
#
# Fast no-op when everything is present (one dpkg-query call); otherwise one
# `apt-get update` + `apt-get install --no-install-recommends` of what is missing.
# Runs apt-get directly as root, through sudo otherwise.
#
#   scripts/deps.sh            build, test and dev-service packages
#   scripts/deps.sh --bench    also what bench/run.sh needs (wrk, nginx, procps)
set -euo pipefail

usage() { echo "usage: $0 [--bench]" >&2; exit 2; }

bench=0
for arg in "$@"; do
    case "$arg" in
    --bench) bench=1 ;;
    -h | --help) usage ;;
    *) echo "deps.sh: unknown argument '$arg'" >&2; usage ;;
    esac
done

pkgs=(
    build-essential cmake pkg-config git
    libuv1-dev libpq-dev libhiredis-dev libjansson-dev libjwt-dev libsodium-dev
    libcurl4-openssl-dev libssl-dev libwslay-dev node-llhttp libcmocka-dev
    postgresql-15 postgresql-client-15 redis-server redis-tools
    curl python3 clang-14 libclang-rt-14-dev valgrind
    chromium  # tests/e2e/test_docs_render.py renders Swagger UI and Redoc
)
if [ "$bench" = 1 ]; then
    pkgs+=(wrk nginx-light procps)
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "deps.sh: no dpkg/apt-get here; this script knows Debian 12 only." >&2
    echo "deps.sh: install the equivalents of: ${pkgs[*]} nodejs npm" >&2
    exit 0
fi

# Node and npm may come from elsewhere (NodeSource, nvm, a tarball). Debian's npm
# conflicts with NodeSource's nodejs, so only ask for the Debian packages when
# the command is missing altogether.
if ! command -v node >/dev/null 2>&1 && ! command -v nodejs >/dev/null 2>&1; then
    pkgs+=(nodejs)
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
elif ! command -v npm >/dev/null 2>&1; then
    node_bin=$(readlink -f "$(command -v node || command -v nodejs)")
    node_ver=$(dpkg-query -W -f='${Version}' nodejs 2>/dev/null || true)
    if dpkg-query -S "$node_bin" >/dev/null 2>&1 && [[ "$node_ver" != *nodesource* ]]; then
        pkgs+=(npm) # Debian's own nodejs: Debian's npm goes with it
    else
        echo "deps.sh: warning: node ($node_bin) is not Debian's and has no npm;" \
             "install npm with the same tool that installed node." >&2
    fi
fi

# One dpkg-query for all: lines "<name> <status abbrev>", "ii " when installed.
missing=()
installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${pkgs[@]}" 2>/dev/null || true)
for p in "${pkgs[@]}"; do
    if ! grep -qE "^${p//+/\\+} ii" <<<"$installed"; then
        missing+=("$p")
    fi
done

[ "${#missing[@]}" -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "deps.sh: need root to install packages (no sudo here); as root run:" >&2
    echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -y \
    -o Dpkg::Use-Pty=0 --no-install-recommends install "${missing[@]}" >/dev/null
echo "deps.sh: done" >&2
