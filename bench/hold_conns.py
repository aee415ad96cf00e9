#!/usr/bin/env python3
"""Open N keep-alive connections to an HTTP server and hold them, for bench/run.sh.

Each connection sends one `GET <path> HTTP/1.1` and reads the whole response, so
the server has parsed a request on it and keeps it as an idle keep-alive
connection. When all N are open the script prints `ready N` on stdout, then
holds them until stdin reaches EOF or SIGTERM/SIGINT arrives, and closes them.

    python3 bench/hold_conns.py [--host 127.0.0.1] [--port 18000] [--path /healthz] [-n 10000]

Standard library only. Exit status 1 (with the count reached) if the server
refuses, closes or fails to answer a connection.
"""

import argparse
import os
import resource
import signal
import socket
import sys


def raise_nofile(need):
    """Raise RLIMIT_NOFILE to at least `need` if the hard limit (or privilege) allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        want_hard = hard if hard == resource.RLIM_INFINITY or hard >= need else need
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, want_hard))
        except (ValueError, OSError):
            # Unprivileged: the soft limit can go up to the hard limit, no further.
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        sys.exit(f"hold_conns: RLIMIT_NOFILE is {soft}, {need} needed (raise the hard limit)")


def read_response(sock):
    """Read one complete response with a Content-Length body (or none)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[1].startswith(b"2"):
        raise ConnectionError(f"unexpected status line {lines[0]!r}")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"connection" and b"close" in value.lower():
            raise ConnectionError("server answered Connection: close")
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed in the response body")
        body += chunk


class Stop(Exception):
    pass


def on_signal(*_):
    raise Stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--path", default="/healthz")
    ap.add_argument("-n", type=int, default=10000, help="connections to hold")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per connection")
    args = ap.parse_args()

    raise_nofile(args.n + 64)
    request = f"GET {args.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    # One at a time: a burst of connects would overflow the listen backlog and turn
    # into SYN retries of a second each; sequential round trips on loopback are quick.
    conns = []
    try:
        for _ in range(args.n):
            s = socket.create_connection((args.host, args.port), timeout=args.timeout)
            conns.append(s)
            s.sendall(request)
            read_response(s)
    except (OSError, ValueError) as e:
        sys.exit(f"hold_conns: failed after {len(conns)} of {args.n} connections: {e}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"ready {len(conns)}", flush=True)
    try:
        while os.read(0, 4096):
            pass
    except (Stop, OSError):
        pass

    # Are they all still open? A server that dropped them early is a finding too.
    dropped = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                dropped += 1
        except BlockingIOError:
            pass
        except OSError:
            dropped += 1
        s.close()
    if dropped:
        print(f"hold_conns: {dropped} of {len(conns)} connections were closed by the server "
              "while held", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
