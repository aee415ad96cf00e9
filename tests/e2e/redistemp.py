"""redistemp — a throwaway redis-server for the end-to-end tests (standard library only).

    with RedisTemp() as redis:          # started on a free loopback port
        url = redis.url(db=1)           # redis://127.0.0.1:<port>/1
        redis.stop(); redis.start()     # an outage, then the same port again
        redis.command("PTTL", "k", db=1)

Nothing is persisted (--save '' --appendonly no) and the working directory is
a temporary one, removed by cleanup().
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RedisError(Exception):
    """An error reply (-ERR ...)."""


def _encode(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError("bad RESP line %r" % line)


class RedisTemp:
    """One redis-server process on a loopback port that stays the same across stop()/start()."""

    def __init__(self, port=None, args=(), password=None):
        """args: extra redis-server options; password: --requirepass (and used by command())."""
        self.args = list(args) + (["--requirepass", password] if password else [])
        self.password = password
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="rxd-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None

    def url(self, db=1, password=None):
        auth = ":%s@" % password if password else ""
        return "redis://%s%s:%d/%d" % (auth, HOST, self.port, db)

    def start(self, timeout=5.0):
        """Start (or restart) on self.port; returns once it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", self.dir] + self.args,
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %d:\n%s" % (self.proc.returncode, self.log()))
            try:
                if self.command("PING", timeout=0.5) == "PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within %.0f s:\n%s" % (timeout, self.log()))

    def stop(self, timeout=5.0):
        """Stop the server (SIGTERM, then SIGKILL); the port is free again afterwards."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._log.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def command(self, *args, db=None, timeout=2.0):
        """Run one command (after SELECT db when given) and return its reply;
        an error reply raises RedisError."""
        with socket.create_connection((HOST, self.port), timeout=timeout) as s:
            pre = ([["AUTH", self.password]] if self.password else []) + \
                  ([["SELECT", db]] if db is not None else [])
            s.sendall(b"".join(_encode(p) for p in pre) + _encode(args))
            r = _Reader(s)
            for _ in pre:
                rep = r.reply()
                if isinstance(rep, RedisError):
                    raise rep
            rep = r.reply()
            if isinstance(rep, RedisError):
                raise rep
            return rep

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
