"""End-to-end tests of schema migrations: `rxd migrate [--status]`, serve's
refusal to start with pending migrations, `serve --migrate`, the advisory
lock, checksums and a failing migration. Uses the test module migkit (two
migrations: 001_create_widgets, 002_add_color) and a private PostgreSQL
(pgtemp), one fresh database per test so the tests do not depend on each other.
"""
import hashlib
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtemp  # noqa: E402
import rxdtest  # noqa: E402

# The key migrate.c locks ("rxmigrat" as a big-endian 64-bit integer).
LOCK_KEY = 8248463017003606388
APPLIED_RE = r"^module migkit: applied %s$"


class MigrateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pgtemp.PgTemp()
        cls.counter = 0

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def setUp(self):
        MigrateTest.counter += 1
        self.dbname = "mig%d" % MigrateTest.counter
        self.url = self.pg.create_database(self.dbname)
        self.tmp = tempfile.TemporaryDirectory(prefix="rxd-mig-")
        self.config = rxdtest.write_config("", self.tmp.name)
        self.addCleanup(self.tmp.cleanup)

    # -- helpers -------------------------------------------------------------

    def env(self, url=True, modules="migkit", **extra):
        over = dict(extra)
        if url:
            over["RXD_DATABASE_URL"] = self.url if url is True else url
        # clean_env drops every inherited RXD_* variable first.
        return rxdtest.clean_env(over, modules=modules)

    def cmd(self, *args):
        return [rxdtest.RXD_BIN, "--config", self.config] + list(args)

    def rxd(self, *args, url=True, modules="migkit", timeout=30, **extra):
        return subprocess.run(self.cmd(*args), env=self.env(url, modules, **extra),
                              capture_output=True, text=True, timeout=timeout, cwd=self.tmp.name)

    def sql(self, q):
        return self.pg.psql(q, dbname=self.dbname)

    def migkit_rows(self):
        if self.sql("SELECT to_regclass('rx_schema_migrations') IS NULL") == "t":
            return []
        out = self.sql("SELECT version || ':' || name FROM rx_schema_migrations"
                       " WHERE module = 'migkit' ORDER BY version")
        return out.split("\n") if out else []

    def widget_columns(self):
        return self.sql("SELECT string_agg(column_name, ',' ORDER BY column_name)"
                        " FROM information_schema.columns WHERE table_name = 'widgets'")

    def status_lines(self):
        r = self.rxd("migrate", "--status")
        self.assertEqual(r.returncode, 0, r.stderr)
        return r, [l for l in r.stdout.splitlines() if l.startswith("migkit ")]

    def serve(self, *extra):
        """Start `rxd serve EXTRA`; returns (proc, port, log path) once /healthz is 200."""
        port = rxdtest.free_port()
        log = os.path.join(self.tmp.name, "serve.log")
        with open(log, "wb") as f:
            proc = subprocess.Popen(self.cmd("serve", *extra),
                                    env=self.env(RXD_LISTEN="127.0.0.1:%d" % port, RXD_WORKERS=1),
                                    stdout=f, stderr=subprocess.STDOUT, cwd=self.tmp.name)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.fail("rxd serve exited with %d:\n%s" % (proc.returncode, open(log).read()))
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/healthz")
                status = c.getresponse().status
                c.close()
                if status == 200:
                    return proc, port, log
            except OSError:
                pass
            time.sleep(0.05)
        self.fail("rxd serve did not answer /healthz:\n" + open(log).read())

    def get(self, port, path):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, body

    # -- tests ---------------------------------------------------------------

    def test_status_lists_pending_then_serve_refuses(self):
        r, lines = self.status_lines()
        self.assertRegex(r.stdout, r"(?m)^MODULE\s+VERSION\s+NAME\s+STATE\s+APPLIED AT$")
        self.assertEqual(len(lines), 2, r.stdout)
        self.assertRegex(lines[0], r"^migkit\s+001\s+create_widgets\s+pending$")
        self.assertRegex(lines[1], r"^migkit\s+002\s+add_color\s+pending$")
        # --status only reads: it does not even create the tracking table.
        self.assertEqual(self.sql("SELECT to_regclass('rx_schema_migrations') IS NULL"), "t")

        r = self.rxd("serve", RXD_LISTEN="127.0.0.1:%d" % rxdtest.free_port(), timeout=20)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("pending migrations", r.stderr)
        self.assertIn("migkit 001_create_widgets", r.stderr)
        self.assertIn("migkit 002_add_color", r.stderr)
        self.assertIn("rxd migrate", r.stderr)
        self.assertEqual(self.migkit_rows(), [])
        self.assertEqual(self.widget_columns(), "")

    def test_concurrent_migrate_applies_each_once(self):
        # Hold the migration lock from another session so both rxd processes
        # are blocked on it at the same time, then release it: they race.
        holder = subprocess.Popen(
            [pgtemp._psql_bin(), "-X", "-q", "-d", self.url, "-c",
             "SELECT pg_advisory_lock(%d)" % LOCK_KEY, "-c", "SELECT pg_sleep(2.5)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.pg._env())
        self.addCleanup(lambda: holder.poll() is None and (holder.kill(), holder.wait()))
        deadline = time.monotonic() + 10
        while self.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") != "1":
            self.assertLess(time.monotonic(), deadline, "the lock holder never got the lock")
            time.sleep(0.05)
        procs = [subprocess.Popen(self.cmd("migrate"), env=self.env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=self.tmp.name)
                 for _ in range(2)]
        time.sleep(1.0)
        # Still waiting on the lock: nothing applied yet.
        self.assertEqual([p.poll() for p in procs], [None, None])
        self.assertEqual(self.migkit_rows(), [])
        outs = [p.communicate(timeout=30) for p in procs]
        holder.wait(timeout=10)
        for p, (out, err) in zip(procs, outs):
            self.assertEqual(p.returncode, 0, out + err)
        stdout = "".join(o for o, _ in outs)
        self.assertEqual(len(re.findall(APPLIED_RE % "001_create_widgets", stdout, re.M)), 1, stdout)
        self.assertEqual(len(re.findall(APPLIED_RE % "002_add_color", stdout, re.M)), 1, stdout)
        self.assertIn("nothing to apply", stdout)
        self.assertEqual(self.migkit_rows(), ["1:create_widgets", "2:add_color"])
        self.assertEqual(self.widget_columns(), "color,id,name")
        self.assertEqual(self.sql("SELECT to_regclass('widgets_name_idx') IS NOT NULL"), "t")

        # --status: both applied, with an ISO 8601 UTC time.
        r, lines = self.status_lines()
        self.assertEqual(len(lines), 2, r.stdout)
        self.assertRegex(lines[0], r"^migkit\s+001\s+create_widgets\s+applied\s+"
                                   r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertRegex(lines[1], r"^migkit\s+002\s+add_color\s+applied\s+\d{4}-")

        # Again: nothing to do, nothing recorded twice.
        r = self.rxd("migrate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("applied 0", r.stdout)
        # (The kernel's own migrations count too: only the form is fixed.)
        self.assertRegex(r.stdout, r"^nothing to apply: all \d+ migrations are applied$")
        self.assertEqual(self.migkit_rows(), ["1:create_widgets", "2:add_color"])
        # The recorded checksum is the SHA-256 of the file, byte for byte.
        src = os.path.join(rxdtest.SOURCE_DIR, "tests", "modules", "migkit_migrations",
                           "002_add_color.sql")
        with open(src, "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(self.sql("SELECT checksum FROM rx_schema_migrations"
                                  " WHERE module = 'migkit' AND version = 2"), want)

        # Now serve starts (no pending migrations) and is ready.
        proc, port, _ = self.serve()
        status, body = self.get(port, "/readyz")
        self.assertEqual(status, 200, body)
        self.assertIn('"migrations":{"status":"ok"}', body)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=15), 0)

    def test_changed_checksum_is_an_error(self):
        r = self.rxd("migrate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.sql("UPDATE rx_schema_migrations SET checksum = 'x' WHERE module = 'migkit' AND version = 2")
        r = self.rxd("migrate")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("module 'migkit' migration 002_add_color: checksum changed since it was "
                      "applied on ", r.stderr)
        self.assertIn("applied migrations must never be edited", r.stderr)
        r = self.rxd("migrate", "--status")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertRegex(r.stdout, r"(?m)^migkit\s+002\s+add_color\s+CHANGED\s")
        r = self.rxd("serve", RXD_LISTEN="127.0.0.1:%d" % rxdtest.free_port(), timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("002_add_color: checksum changed", r.stderr)

    def test_applied_migration_the_module_lost_is_an_error(self):
        r = self.rxd("migrate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.sql("INSERT INTO rx_schema_migrations (module, version, name, checksum)"
                 " VALUES ('migkit', 9, 'dropped_later', 'abc')")
        r = self.rxd("migrate")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("module 'migkit' migration 009_dropped_later was applied on", r.stderr)
        self.assertIn("no longer has it", r.stderr)
        r = self.rxd("migrate", "--status")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stdout, r"(?m)^migkit\s+009\s+dropped_later\s+MISSING\s")

    def test_failing_migration_is_rolled_back_and_not_recorded(self):
        # An index named like 001's makes its second statement fail, after its
        # first one (CREATE TABLE widgets) succeeded: the whole migration must
        # roll back, and neither it nor 002 may be recorded.
        self.sql("CREATE TABLE squatter (n text); CREATE INDEX widgets_name_idx ON squatter (n)")
        r = self.rxd("migrate")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("module 'migkit' migration 001_create_widgets failed", r.stderr)
        self.assertIn('relation "widgets_name_idx" already exists', r.stderr)
        self.assertNotIn("module migkit: applied", r.stdout)
        self.assertEqual(self.migkit_rows(), [])
        self.assertEqual(self.widget_columns(), "")
        # A conflicting table fails its first statement, with the same report.
        self.sql("DROP TABLE squatter; CREATE TABLE widgets (x int)")
        r = self.rxd("migrate")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("module 'migkit' migration 001_create_widgets failed", r.stderr)
        self.assertIn('relation "widgets" already exists', r.stderr)
        self.assertEqual(self.migkit_rows(), [])
        self.assertEqual(self.widget_columns(), "x")  # 002 never ran either
        # Once the conflict is gone, the same migrations apply.
        self.sql("DROP TABLE widgets")
        r = self.rxd("migrate")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.migkit_rows(), ["1:create_widgets", "2:add_color"])

    def test_serve_migrate_applies_then_serves(self):
        proc, port, log = self.serve("--migrate")
        self.assertEqual(self.migkit_rows(), ["1:create_widgets", "2:add_color"])
        self.assertEqual(self.widget_columns(), "color,id,name")
        status, _ = self.get(port, "/healthz")
        self.assertEqual(status, 200)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=15), 0)
        with open(log) as f:
            text = f.read()
        self.assertIn("module migkit: applied migration 001_create_widgets", text)
        self.assertIn("module migkit: applied migration 002_add_color", text)

    def test_no_database_url(self):
        r = self.rxd("migrate", url=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("database.url is not set (RXD_DATABASE_URL)", r.stderr)
        r = self.rxd("migrate", "--status", url=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("database.url is not set (RXD_DATABASE_URL)", r.stderr)
        r = self.rxd("serve", url=False, RXD_LISTEN="127.0.0.1:%d" % rxdtest.free_port(), timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("database.url is not set (RXD_DATABASE_URL)", r.stderr)
        # Without a database and without module migrations there is nothing to
        # do (the kernel's own tables only matter with a database).
        r = self.rxd("migrate", url=False, modules="testkit")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("nothing to migrate", r.stdout)
        r = self.rxd("migrate", "--status", url=False, modules="testkit")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_unreachable_database(self):
        dead = "postgresql://rxd@127.0.0.1:%d/rxd?connect_timeout=3" % rxdtest.free_port()
        r = self.rxd("migrate", url=dead)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("cannot connect to the database", r.stderr)

    def test_unknown_option(self):
        r = self.rxd("migrate", "--frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown option '--frobnicate'", r.stderr)
        self.assertEqual(self.migkit_rows(), [])


if __name__ == "__main__":
    unittest.main()
