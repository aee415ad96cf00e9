"""pgtemp — a throwaway PostgreSQL 15 for the end-to-end tests (standard library only).

    pg = PgTemp()                 # initdb + start + CREATE DATABASE rxd
    pg.url()                      # postgresql://rxd@127.0.0.1:PORT/rxd
    pg.psql("SELECT 1")           # -> "1" (unaligned, tuples only); raises on SQL errors
    pg.create_database("other")   # a fresh database on the same server
    pg.stop(); pg.start()         # an outage and a recovery on the SAME port
    pg.freeze(); pg.thaw()        # a server that accepts nothing and answers nothing
    pg.cleanup()                  # stop and remove everything

Everything lives in one directory under /tmp: the cluster (initdb -A trust,
superuser "rxd", fsync off: nothing here must survive a crash), the Unix
socket and the server log. PostgreSQL refuses to run as root, so when the
tests run as root the server processes run as user "postgres" (subprocess
user=/group=, no wrapper process in between, so signals reach the postmaster
itself) and the directory is handed to that user.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("RXD_PG_BIN", "/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
SUPERUSER = "rxd"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _psql_bin():
    p = os.path.join(PG_BIN, "psql")
    return p if os.path.exists(p) else "/usr/bin/psql"


class PgTemp:
    def __init__(self, dbname="rxd", port=None, start=True):
        self.dbname = dbname
        self.port = port or _free_port()
        self.proc = None
        self._as_root = os.geteuid() == 0
        self._user = {}
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            # No supplementary groups: root's would otherwise leak into the server.
            self._user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.base = tempfile.mkdtemp(prefix="rxd-pg-", dir="/tmp")
        # mkdtemp makes it 0700: the postgres user must be able to enter it.
        os.chmod(self.base, 0o755)
        if self._as_root:
            os.chown(self.base, self._user["user"], self._user["group"])
        self.data = os.path.join(self.base, "data")
        self.sockdir = self.base
        self.log_path = os.path.join(self.base, "postgres.log")
        try:
            self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-A", "trust", "-U",
                       SUPERUSER, "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"])
            if start:
                self.start()
                self.create_database(dbname)
        except BaseException:
            self.cleanup()
            raise

    # -- processes ---------------------------------------------------------

    def _env(self):
        # Inherited PG* variables (PGHOST, PGDATABASE...) would redirect psql.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._as_root:
            env["HOME"] = self.base
        return env

    def _run(self, cmd, check=True, timeout=60, **kw):
        r = subprocess.run(cmd, env=self._env(), capture_output=True, text=True, timeout=timeout,
                           cwd=self.base, **self._user, **kw)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s%s" % (cmd[0], r.returncode, r.stdout, r.stderr))
        return r

    def start(self, timeout=30.0):
        """Start the server (again) on self.port; returns when it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [os.path.join(PG_BIN, "postgres"), "-D", self.data, "-p", str(self.port),
                 "-k", self.sockdir, "-c", "listen_addresses=" + HOST, "-c", "fsync=off",
                 "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                 "-c", "max_connections=200"],
                env=self._env(), stdout=log, stderr=log, cwd=self.base, **self._user)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited with %d at start-up:\n%s" %
                                   (self.proc.returncode, self.log()))
            r = subprocess.run([os.path.join(PG_BIN, "pg_isready"), "-q", "-h", HOST, "-p",
                                str(self.port), "-U", SUPERUSER, "-d", "postgres"],
                               env=self._env(), capture_output=True, timeout=10)
            if r.returncode == 0:
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("postgres did not accept connections within %.0f s:\n%s" %
                           (timeout, self.log()))

    def stop(self, mode="fast", timeout=30.0):
        """Stop the server: "fast" (SIGINT: disconnect clients, clean shutdown),
        "immediate" (SIGQUIT: crash-like). The port stays ours for start()."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.thaw()  # a stopped postmaster would never see the signal
            self.proc.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def _pids(self):
        """The postmaster and every process it forked (backends, walwriter...)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        parents = {self.proc.pid}
        found = True
        while found:
            found = False
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) in parents:
                    continue
                try:
                    with open("/proc/%s/stat" % name) as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid in parents:
                    parents.add(int(name))
                    found = True
        return sorted(parents)

    @staticmethod
    def _stopped(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
        except (OSError, IndexError):
            return True  # gone: nothing left to answer

    def freeze(self, timeout=5.0):
        """SIGSTOP the whole server: connections stay open, nothing answers
        (what a hung host looks like to a client). Returns only once every
        process really is stopped and no new one appeared meanwhile: SIGSTOP
        lands asynchronously, and the postmaster may fork a backend between
        listing its children and stopping it."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self._pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            if all(self._stopped(pid) for pid in pids) and self._pids() == pids:
                return
            if time.monotonic() > deadline:
                raise AssertionError("PostgreSQL did not stop within %.0f s" % timeout)
            time.sleep(0.01)

    def thaw(self):
        for pid in self._pids():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def cleanup(self):
        try:
            self.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    # -- using it ------------------------------------------------------------

    def url(self, dbname=None):
        return "postgresql://%s@%s:%d/%s" % (SUPERUSER, HOST, self.port, dbname or self.dbname)

    def psql_run(self, sql, dbname=None, timeout=30):
        """Run sql through psql; returns the CompletedProcess (never raises on SQL errors)."""
        return subprocess.run(
            [_psql_bin(), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p",
             str(self.port), "-U", SUPERUSER, "-d", dbname or self.dbname, "-c", sql],
            env=self._env(), capture_output=True, text=True, timeout=timeout)

    def psql(self, sql, dbname=None, timeout=30):
        """The output of sql (unaligned, tuples only, '|' between columns), stripped.
        Raises RuntimeError with psql's message when the SQL fails."""
        r = self.psql_run(sql, dbname, timeout)
        if r.returncode != 0:
            raise RuntimeError("psql failed (%d): %s\nSQL: %s" % (r.returncode, r.stderr.strip(), sql))
        return r.stdout.strip()

    def create_database(self, name):
        # Identifiers cannot be parameters: accept only plain names.
        if not name.replace("_", "").isalnum():
            raise ValueError("database name must be [A-Za-z0-9_]: %r" % name)
        self.psql('CREATE DATABASE "%s"' % name, dbname="postgres")
        return self.url(name)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
