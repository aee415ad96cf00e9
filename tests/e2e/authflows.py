"""authflows — helpers for test_auth.py (standard library only).

An rxd running `notify auth` against a private PostgreSQL and Redis, the notify
log provider's outbox (one JSON line per message) to read OTP codes from,
identities that never collide, JWTs built by hand (hmac/hashlib/base64), a tiny
valid PNG and a multipart/form-data encoder.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import struct
import subprocess
import time
import uuid
import zlib

from rxdtest import RXD_BIN, SOURCE_DIR, BUILD_DIR, Server, Response  # noqa: F401

MODULE_DIR = os.path.abspath(os.environ.get("RXD_MODULE_DIR", os.path.join(BUILD_DIR, "modules")))
MODULES = "notify auth"
JWT_SECRET = "e2e-secret-0123456789abcdefghijklmnopqrstuvwxyz"  # >= 32 bytes

# How the implementation names its knobs (adapt here if it spells them differently).
AUTH_ENV = {
    "RXD_AUTH_ARGON2_OPSLIMIT": "1",
    "RXD_AUTH_ARGON2_MEMLIMIT": "8192",
    "RXD_JOBS_POLL_INTERVAL": "1s",
}
OUTBOX_ENVS = ("RXD_NOTIFY_LOG_OUTBOX", "RXD_NOTIFY_OUTBOX")  # notify.log.outbox
USERS_TABLE = "users"
AUDIT_TABLE = "audit_logs"

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_Z_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
CODE_RE = re.compile(r"(?<!\d)(\d{6})(?!\d)")

USER_FIELDS = {"id", "username", "email", "phone", "profile_picture", "address", "role",
               "role_display", "status", "status_display", "email_verified", "phone_verified",
               "created_at", "gender", "gender_display", "date_of_birth", "is_active", "pharmacy"}


# --------------------------------------------------------------------------
# identities
# --------------------------------------------------------------------------

_counter = [0]


def uid():
    return uuid.uuid4().hex[:10]


def new_phone():
    """A Bangladesh mobile number in local spelling, 017XXXXXXXX, unique in this run."""
    _counter[0] += 1
    n = (int(time.time() * 1000) * 7 + os.getpid() * 131 + _counter[0] * 7919) % 100000000
    return "017%08d" % n


def e164(local):
    digits = re.sub(r"\D", "", local)
    if digits.startswith("880"):
        return "+" + digits
    if digits.startswith("0"):
        return "+88" + digits
    raise ValueError(local)


def new_email():
    return "u%s@example.com" % uid()


def new_password():
    return "Aa1!" + uid()


def digits(s):
    return re.sub(r"\D", "", s or "")


# --------------------------------------------------------------------------
# JWT by hand
# --------------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    s = s + "=" * (-len(s) % 4)
    return base64.urlsafe_b64decode(s.encode())


def jwt_parts(token):
    h, p, _ = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p))


def jwt_make(header, payload, key=JWT_SECRET, alg=None):
    """Sign header+payload. alg overrides header['alg']: HS256/HS384/HS512 or none."""
    header = dict(header)
    if alg is not None:
        header["alg"] = alg
    a = header["alg"]
    signing = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
               b64url(json.dumps(payload, separators=(",", ":")).encode()))
    if a.lower() == "none":
        return signing + "."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[a]
    key = key.encode() if isinstance(key, str) else key
    sig = hmac.new(key, signing.encode(), digest).digest()
    return signing + "." + b64url(sig)


# --------------------------------------------------------------------------
# payloads
# --------------------------------------------------------------------------

def tiny_png():
    """A valid 1x1 RGB PNG."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def multipart(fields=None, files=None):
    """fields {name: str}, files {name: (filename, content_type, bytes)} -> (body, content-type)."""
    boundary = "----rxdE2E" + uuid.uuid4().hex
    out = b""
    for k, v in (fields or {}).items():
        out += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n" % (boundary, k)).encode()
        out += str(v).encode() + b"\r\n"
    for k, (fname, ctype, data) in (files or {}).items():
        out += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                "Content-Type: %s\r\n\r\n" % (boundary, k, fname, ctype)).encode()
        out += data + b"\r\n"
    out += ("--%s--\r\n" % boundary).encode()
    return out, "multipart/form-data; boundary=%s" % boundary


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------

def auth_env(pg_url, redis_url, ratelimit=True, extra=None):
    e = {"RXD_MODULE_PATH": MODULE_DIR, "RXD_DATABASE_URL": pg_url, "RXD_REDIS_URL": redis_url,
         "RXD_JWT_SECRET": JWT_SECRET, "RXD_RATELIMIT_ENABLED": "true" if ratelimit else "false",
         "RXD_SHUTDOWN_GRACE": "5s"}
    e.update(AUTH_ENV)
    e.update(extra or {})
    return e


class AuthServer(Server):
    """`rxd serve --migrate` with notify + auth; the outbox lives in the server's temp dir."""

    def __init__(self, pg_url, redis_url, ratelimit=True, env=None, workers=2):
        super().__init__("", auth_env(pg_url, redis_url, ratelimit, env), MODULES, workers)
        self.outbox_path = os.path.join(self.dir.name, "outbox.jsonl")
        for k in OUTBOX_ENVS:
            self.env[k] = self.outbox_path

    def start(self, timeout=30.0):
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([RXD_BIN, "--config", self.config_path, "serve", "--migrate"],
                                     env=self.env, stdout=self._out, stderr=self._err,
                                     cwd=self.dir.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("rxd exited with %d at start-up:\n%s" %
                                     (self.proc.returncode, self.output()))
            try:
                if self.get("/healthz", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError("rxd did not answer /healthz within %.0f s:\n%s" % (timeout, self.output()))

    def kill(self):
        super().kill()
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()

    def stop(self, timeout=15.0):
        try:
            super().stop(timeout)
        finally:
            err = self.stderr()
            for mark in SANITIZER_MARKS:
                if mark in err:
                    raise AssertionError("sanitizer report in rxd's stderr:\n" + err[-6000:])

    # -- outbox ----------------------------------------------------------

    def outbox(self):
        try:
            with open(self.outbox_path, "r", errors="replace") as f:
                text = f.read()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def messages_to(self, ident):
        """Outbox lines for a phone (any spelling: the last 10 digits) or an email."""
        if "@" in ident:
            return [m for m in self.outbox() if str(m.get("to", "")).lower() == ident.lower()]
        d = digits(ident)[-10:]
        return [m for m in self.outbox()
                if "@" not in str(m.get("to", "")) and digits(str(m.get("to", "")))[-10:] == d]

    def wait_code(self, ident, before, timeout=15.0):
        """The 6-digit code of the first message to ident after the first `before` ones."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages_to(ident)
            if len(msgs) > before:
                m = msgs[before]
                found = CODE_RE.search(str(m.get("body", "")))
                if not found:
                    raise AssertionError("no 6-digit code in the message to %s: %r" % (ident, m))
                return found.group(1), m
            if time.monotonic() > deadline:
                raise AssertionError("no message to %s within %.0f s (outbox: %r)\n%s" %
                                     (ident, timeout, self.outbox()[-5:], self.output()[-3000:]))
            time.sleep(0.05)
