"""rxdtest — a small harness for the end-to-end tests (standard library only).

It starts a real `rxd serve` on a free loopback port with a temporary config
file and RXD_* environment overrides, waits for /healthz, and stops it with
SIGTERM. The helpers speak HTTP/1.1 over raw sockets (to control exactly what
goes on the wire: pipelining, partial requests, 100-continue) or through
http.client for plain requests.

The environment the tests read (set by ctest, see tests/CMakeLists.txt):
  RXD_BIN            the rxd binary
  RXD_TEST_MODULES   directory holding testkit.so, badabi.so, ...
  RXD_SOURCE_DIR     the checkout
  RXD_BUILD_DIR      the build directory
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get("RXD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("RXD_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
RXD_BIN = os.path.abspath(os.environ.get("RXD_BIN", os.path.join(BUILD_DIR, "rxd")))
TEST_MODULES = os.path.abspath(os.environ.get("RXD_TEST_MODULES", os.path.join(BUILD_DIR, "test-modules")))

HOST = "127.0.0.1"


def free_port():
    """A port nothing listens on right now (bound with port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def clean_env(overrides=None, modules="testkit"):
    """The process environment without any inherited RXD_* variable, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RXD_")}
    env["RXD_MODULE_PATH"] = TEST_MODULES
    if modules is not None:
        env["RXD_MODULES"] = modules
    env.update({k: str(v) for k, v in (overrides or {}).items()})
    return env


def write_config(text, directory):
    path = os.path.join(directory, "rxd.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def run_cli(*args, config="", env=None, modules="testkit", stdin=None, timeout=20):
    """Run `rxd --config <tmp> ARGS...`; returns subprocess.CompletedProcess (text).
    config=None runs without --config (rxd then looks for its defaults)."""
    with tempfile.TemporaryDirectory(prefix="rxd-cli-") as d:
        cmd = [RXD_BIN]
        if config is not None:
            cmd += ["--config", write_config(config, d)]
        cmd += list(args)
        return subprocess.run(cmd, env=clean_env(env, modules), input=stdin, capture_output=True,
                              text=True, timeout=timeout, cwd=d)


# --------------------------------------------------------------------------
# HTTP/1.1 responses over raw sockets
# --------------------------------------------------------------------------

class Response:
    """One parsed response: status, reason, headers {lowercase name: [values]}, body bytes."""

    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status, self.reason, self.headers, self.body, self.version = \
            status, reason, headers, body, version

    def header(self, name, default=None):
        """The first value of a header (case-insensitive), or default."""
        v = self.headers.get(name.lower())
        return v[0] if v else default

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %s %r %r>" % (self.status, self.reason, self.headers, self.body[:200])


class Conn:
    """A raw client connection with a receive buffer."""

    def __init__(self, port, host=HOST, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server (buffered: %r)" % self.buf[:200])
        self.buf += chunk

    def _read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        """Status line and headers only (e.g. an interim 100 Continue)."""
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return Response(int(status), reason[0] if reason else "", headers, b"", version)

    def read_response(self, method="GET"):
        """One complete final response. HEAD, 1xx, 204 and 304 have no body."""
        r = self.read_head()
        if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            return r
        te = r.header("transfer-encoding", "")
        if "chunked" in te.lower():
            body = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")  # no trailers expected
                    break
                body += self._read_exact(size)
                self._read_exact(2)
            r.body = body
        elif r.header("content-length") is not None:
            r.body = self._read_exact(int(r.header("content-length")))
        else:  # body until close
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            r.body, self.buf = self.buf, b""
        return r

    def read_responses(self, methods):
        return [self.read_response(m) for m in methods]

    def request(self, method, path, headers=None, body=b"", host="localhost"):
        """Send one request (Content-Length added when there is a body) and read the reply."""
        self.send(build_request(method, path, headers, body, host))
        return self.read_response(method)

    def is_closed(self, timeout=2.0):
        """True when the server closes the connection (EOF or reset) within timeout,
        with nothing more sent; False when it stays open. Data received is an error."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        if data:
            raise AssertionError("expected a silent close, got %r" % data[:200])
        return True

    def wait_closed(self, timeout=5.0):
        """Read whatever arrives until EOF; returns the bytes, or raises on timeout."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            return data


def build_request(method, path, headers=None, body=b"", host="localhost"):
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
    hdrs = dict(headers or {})
    names = {k.lower() for k in hdrs}
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hdrs["Content-Length"] = str(len(body))
    lines += ["%s: %s" % (k, v) for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------

class Server:
    """One rxd process. `config` is the config file text; `env` are RXD_* overrides."""

    def __init__(self, config="", env=None, modules="testkit", workers=2):
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="rxd-e2e-")
        self.config_path = write_config(config, self.dir.name)
        self.env = clean_env({"RXD_LISTEN": "%s:%d" % (HOST, self.port), "RXD_WORKERS": workers,
                              **(env or {})}, modules)
        self.stdout_path = os.path.join(self.dir.name, "stdout.log")
        self.stderr_path = os.path.join(self.dir.name, "stderr.log")
        self.proc = None
        self.returncode = None

    # -- process ---------------------------------------------------------

    def start(self, timeout=10.0):
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([RXD_BIN, "--config", self.config_path, "serve"],
                                     env=self.env, stdout=self._out, stderr=self._err,
                                     cwd=self.dir.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("rxd exited with %d at start-up:\n%s" %
                                     (self.proc.returncode, self.output()))
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return self
                c.close()
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise AssertionError("rxd did not answer /healthz within %.0f s:\n%s" % (timeout, self.output()))

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=10.0):
        """Wait for the process to exit; kill it after timeout (then fail)."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("rxd did not exit within %.0f s:\n%s" % (timeout, self.output()))
        finally:
            self._out.close()
            self._err.close()
        return self.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout=10.0):
        """SIGTERM, wait, and assert a clean exit (0)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        self.proc = None
        if rc != 0:
            raise AssertionError("rxd exited with %d:\n%s" % (rc, self.output()))

    def cleanup(self):
        """Stop if still running (assert nothing), remove the temp dir."""
        self.kill()
        self.dir.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.stop()
        finally:
            self.cleanup()

    # -- logs ------------------------------------------------------------

    def stdout(self):
        with open(self.stdout_path, "r", errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.stderr_path, "r", errors="replace") as f:
            return f.read()

    def output(self):
        return "--- stdout ---\n%s--- stderr ---\n%s" % (self.stdout(), self.stderr())

    def log_lines(self):
        """Every JSON line of stdout, parsed (non-JSON lines are skipped)."""
        out = []
        for line in self.stdout().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def access_log_lines(self):
        return [l for l in self.log_lines() if l.get("type") == "access"]

    def wait_access_log(self, pred, timeout=3.0):
        """The first access log line for which pred(line) is true (the log is written
        after the reply, so it may lag a little)."""
        deadline = time.monotonic() + timeout
        while True:
            for l in self.access_log_lines():
                if pred(l):
                    return l
            if time.monotonic() > deadline:
                raise AssertionError("no matching access log line:\n%s" % self.stdout()[-4000:])
            time.sleep(0.02)

    # -- clients ---------------------------------------------------------

    @property
    def base_url(self):
        return "http://%s:%d" % (HOST, self.port)

    def conn(self, timeout=5.0):
        return Conn(self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        """One request on a fresh http.client connection; returns a Response.
        A dict/list body is sent as JSON."""
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            hdrs = {}
            for k, v in r.getheaders():
                hdrs.setdefault(k.lower(), []).append(v)
            return Response(r.status, r.reason, hdrs, r.read())
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)


class ServerTestCase(unittest.TestCase):
    """A TestCase sharing one server per class: set CONFIG / ENV / MODULES / WORKERS."""
    CONFIG = ""
    ENV = {}
    MODULES = "testkit"
    WORKERS = 2

    @classmethod
    def setUpClass(cls):
        cls.server = Server(cls.CONFIG, cls.ENV, cls.MODULES, cls.WORKERS)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    def get(self, path, **kw):
        return self.server.request("GET", path, **kw)

    def assertError(self, r, status, code, detail=None):
        """A DRF general error body {"detail", "code"}."""
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        body = r.json()
        self.assertEqual(body.get("code"), code, body)
        self.assertIsInstance(body.get("detail"), str, body)
        if detail is not None:
            self.assertEqual(body["detail"], detail)
