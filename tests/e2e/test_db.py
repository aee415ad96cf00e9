"""End-to-end tests of the PostgreSQL layer (kernel/db.c) through the datakit test module.

Each TestCase class gets a private throwaway PostgreSQL (pgtemp) and each test its own
`rxd serve` (RXD_MODULES=datakit, RXD_DATABASE_URL=<that server>), so a test that breaks
the pool or the database cannot leak into the next one. Every test's teardown stops rxd
and asserts that its stderr holds no sanitizer report ("AddressSanitizer",
"LeakSanitizer", "runtime error"): harmless for a plain build, the whole point for one
built with -DRXD_SANITIZE=ON:

    cmake -S . -B build-asan -DRXD_SANITIZE=ON -DRXD_WEB_ASSETS=OFF && cmake --build build-asan -j2
    cd tests/e2e && RXD_BIN=$PWD/../../build-asan/rxd \\
        RXD_TEST_MODULES=$PWD/../../build-asan/test-modules /usr/bin/python3 -m unittest -v test_db

What is covered: JSON conversion of every column type, parameters (no injection),
transactions (commit, rollback on a unique violation), SQL errors (500, nothing of the SQL
in the body, the SQLSTATE in the log), pool exhaustion (503 at once with Retry-After),
query timeouts, a database stopped and restarted under a running rxd, and a frozen
database (SIGSTOP), with readiness and recovery without restarting rxd.
"""
import os
import re
import signal
import threading
import time
import unittest
import urllib.parse

from pgtemp import PG_BIN, PgTemp
from rxdtest import TEST_MODULES, Server, run_cli

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error")
UNAVAILABLE = {"detail": "Service temporarily unavailable.", "code": "service_unavailable"}
SERVER_ERROR = {"detail": "A server error occurred.", "code": "error"}

# Client-side limit for any single request: far above every timeout configured here,
# so a request that "hangs" fails the test instead of hanging it.
CLIENT_TIMEOUT = 12.0
# Allowed lateness over a configured database timeout (the queue deadline is checked
# every 100 ms; the host may be busy, an ASan build is slower).
SLACK = 1.0


def assert_no_sanitizer_report(test, text, what="rxd stderr"):
    for marker in SANITIZER_MARKERS:
        if marker in text:
            i = text.index(marker)
            test.fail("%s holds a sanitizer report (%r):\n%s" %
                      (what, marker, text[max(0, i - 2000):i + 6000]))


class DbTestCase(unittest.TestCase):
    """One pgtemp per class, one rxd per test (started in setUp, stopped in tearDown)."""
    ENV = {}        # RXD_* overrides for this class's servers
    WORKERS = 2

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(os.path.join(PG_BIN, "initdb")):
            raise unittest.SkipTest("PostgreSQL 15 server binaries not found in %s" % PG_BIN)
        if not os.path.exists(os.path.join(TEST_MODULES, "datakit.so")):
            raise unittest.SkipTest("datakit.so not built in %s" % TEST_MODULES)
        cls.pg = PgTemp()
        try:
            r = run_cli("migrate", env={"RXD_DATABASE_URL": cls.pg.url()}, modules="datakit",
                        timeout=60)
            if r.returncode != 0:
                raise AssertionError("rxd migrate failed (%d):\n%s%s" %
                                     (r.returncode, r.stdout, r.stderr))
            for marker in SANITIZER_MARKERS:
                if marker in r.stderr:
                    raise AssertionError("rxd migrate: sanitizer report:\n%s" % r.stderr)
        except BaseException:
            cls.pg.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.pg.thaw()  # never leave a frozen server behind, whatever happened
        cls.pg.cleanup()

    def setUp(self):
        self.server = self.start_server()

    def start_server(self, env=None, workers=None):
        overrides = {"RXD_DATABASE_URL": self.pg.url(),
                     # bounded, so a stuck request cannot stretch a stop to 30 s
                     "RXD_SHUTDOWN_GRACE": "5s"}
        overrides.update(self.ENV)
        overrides.update(env or {})
        srv = Server("", overrides, modules="datakit",
                     workers=self.WORKERS if workers is None else workers)
        try:
            srv.start(timeout=20)
        except BaseException:
            srv.cleanup()
            raise
        self.addCleanup(self.stop_server, srv)
        return srv

    def stop_server(self, srv):
        """SIGTERM, wait, then: no sanitizer report on stderr, exit status 0."""
        if srv.proc is None:
            srv.cleanup()
            return
        try:
            self.pg.thaw()  # a frozen database must not be what keeps rxd from stopping
            if srv.proc.poll() is None:
                srv.signal(signal.SIGTERM)
            try:
                rc = srv.wait(timeout=15)
            except AssertionError:
                assert_no_sanitizer_report(self, srv.stderr())
                raise
            srv.proc = None
            assert_no_sanitizer_report(self, srv.stderr())
            self.assertEqual(rc, 0, "rxd exited with %d:\n%s" % (rc, srv.output()[-6000:]))
        finally:
            srv.cleanup()

    # -- helpers -----------------------------------------------------------

    def timed_get(self, path, srv=None, timeout=CLIENT_TIMEOUT):
        """(Response or the exception, seconds taken)."""
        srv = srv or self.server
        t0 = time.monotonic()
        try:
            r = srv.get(path, timeout=timeout)
        except OSError as e:  # socket.timeout, refused, reset
            r = e
        return r, time.monotonic() - t0

    def assertOk(self, r):
        self.assertNotIsInstance(r, BaseException, "request failed: %r" % (r,))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def assertUnavailable(self, r):
        """503 with Retry-After (a positive integer) and the DRF body."""
        self.assertNotIsInstance(r, BaseException, "request failed: %r" % (r,))
        self.assertEqual(r.status, 503, r)
        ra = r.header("retry-after")
        self.assertIsNotNone(ra, "503 without Retry-After: %r" % r)
        self.assertRegex(ra, r"^[1-9][0-9]*$")
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        self.assertEqual(r.json(), UNAVAILABLE)

    def assertRunning(self, srv=None):
        srv = srv or self.server
        self.assertIsNone(srv.proc.poll(), "rxd exited:\n%s" % srv.output()[-6000:])
        r, dt = self.timed_get("/healthz", srv, timeout=5)
        self.assertOk(r)

    def wait_ok(self, path, timeout=15.0, srv=None):
        """Poll until path answers 200; returns (body, seconds waited). Each attempt must
        itself answer (any status) within the client timeout: never a hang."""
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            r, _ = self.timed_get(path, srv, timeout=CLIENT_TIMEOUT)
            self.assertNotIsInstance(r, BaseException, "request failed: %r" % (r,))
            if r.status == 200:
                return r.json(), time.monotonic() - t0
            last = r
            time.sleep(0.2)
        self.fail("%s did not answer 200 within %.0f s (last: %r)\n%s" %
                  (path, timeout, last, (srv or self.server).stdout()[-4000:]))

    def concurrent_gets(self, paths, srv=None):
        """Send every path at the same moment (one connection each); [(Response|exc, s)]."""
        out = [None] * len(paths)
        barrier = threading.Barrier(len(paths))

        def go(i):
            barrier.wait()
            out[i] = self.timed_get(paths[i], srv)

        threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(len(paths))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CLIENT_TIMEOUT + 5)
        self.assertTrue(all(o is not None for o in out), "a client thread never finished")
        return out


# ==========================================================================
# Values in and out
# ==========================================================================

class TestTypes(DbTestCase):
    WORKERS = 2

    EXPECTED = {
        "t": "text",
        "i4": 42,
        "i8": 9007199254740993,           # 2^53 + 1: not representable as a double
        "i2": 7,
        "money": "12.50",                 # numeric: a decimal string, never a float
        "yes": True,
        "no": False,
        "jb": {"a": [1, 2]},              # jsonb: embedded JSON, not a string
        "js": [1, "x"],                   # json
        "ts": "2026-11-22T04:00:00Z",     # '2026-11-22 10:00:00+06' in UTC
        "ts_frac": "2026-11-22T10:00:00.123456Z",
        "f8": 1.5,
        "nothing": None,
        "nothing_int": None,
        "quoted": "it's",
        "d": "2026-01-31",                # date: a string
    }

    def test_every_type_conversion(self):
        r = self.server.get("/test/db/types/", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        rows = r.json()
        self.assertIsInstance(rows, list)
        self.assertEqual(len(rows), 1, rows)
        row = rows[0]
        self.assertEqual(set(row), set(self.EXPECTED), row)
        for k, v in self.EXPECTED.items():
            with self.subTest(column=k):
                self.assertEqual(row[k], v)
                # True == 1 in Python: compare the JSON types too.
                self.assertIs(type(row[k]), type(v), "%s: %r" % (k, row[k]))

    def test_int8_beyond_2_53_is_an_exact_json_integer(self):
        body = self.server.get("/test/db/types/", timeout=CLIENT_TIMEOUT).body.decode()
        # the literal digits, not a rounded double (…992), an exponent, or a string
        self.assertRegex(body, r'"i8":\s*9007199254740993[,}]')
        self.assertRegex(body, r'"money":\s*"12\.50"')
        self.assertRegex(body, r'"f8":\s*1\.5[,}]')
        self.assertRegex(body, r'"nothing":\s*null')

    def test_same_answer_on_every_connection(self):
        # The statement is prepared once per connection: later runs (Bind/Execute of the
        # cached statement, possibly pipelined) must convert exactly the same way.
        outs = self.concurrent_gets(["/test/db/types/"] * 16)
        for r, _ in outs:
            self.assertEqual(self.assertOk(r), [self.EXPECTED])
        for _ in range(5):
            r, _ = self.timed_get("/test/db/types/")
            self.assertEqual(self.assertOk(r), [self.EXPECTED])


class TestParams(DbTestCase):
    WORKERS = 1

    OTHERS = {"i": -5, "b": True, "j": {"k": 1}, "n": None, "f": 0.25}

    def echo(self, text):
        r = self.server.get("/test/db/params/?t=" + urllib.parse.quote(text, safe=""),
                            timeout=CLIENT_TIMEOUT)
        rows = self.assertOk(r)
        self.assertEqual(len(rows), 1, rows)
        return rows[0]

    def test_default_parameter_is_sql_looking_text(self):
        r = self.server.get("/test/db/params/", timeout=CLIENT_TIMEOUT)
        rows = self.assertOk(r)
        self.assertEqual(rows, [dict(t="x'; DROP TABLE y; --", **self.OTHERS)])

    def test_text_comes_back_unchanged(self):
        self.pg.psql("CREATE TABLE canary (id int); INSERT INTO canary VALUES (1)")
        samples = [
            "plain",
            "it's",
            "''",
            "a\"b",
            "back\\slash \\' \\\\",
            "'; DROP TABLE canary; --",
            "x' OR '1'='1",
            "1; DELETE FROM canary",
            "$1 $2 ::text %s %% ? :name",
            "Robert'); DROP TABLE canary;--",
            "/* comment */ -- comment",
            "Ünïcødé ✓ 日本語 العربية 🙂",
            "line1\nline2\ttab\r",
            "{\"json\": [1, 2]}",
            "a+b=c&d",
            " leading and trailing ",
            "",
            "é" * 500,
            "x" * 3000,
        ]
        for s in samples:
            with self.subTest(text=s[:40]):
                row = self.echo(s)
                self.assertEqual(row["t"], s)
                for k, v in self.OTHERS.items():
                    self.assertEqual(row[k], v, k)
                    self.assertIs(type(row[k]), type(v), k)
        # none of it ran as SQL
        self.assertEqual(self.pg.psql("SELECT count(*) FROM canary"), "1")


# ==========================================================================
# Transactions and SQL errors
# ==========================================================================

class TestTransactions(DbTestCase):
    WORKERS = 2

    def tags(self, prefix):
        out = self.pg.psql("SELECT string_agg(tag, ',' ORDER BY tag) FROM datakit_tx "
                           "WHERE tag LIKE '%s%%'" % prefix)
        return out.split(",") if out else []

    def table_exists(self):
        return self.pg.psql("SELECT to_regclass('public.datakit_tx') IS NOT NULL") == "t"

    def test_1_failed_transaction_leaves_nothing_even_ddl(self):
        # The first statement of the transaction creates the table: on a fresh database
        # a rolled-back call must not even leave the table behind.
        fresh = not self.table_exists()
        r = self.server.request("POST", "/test/db/tx/?tag=first&fail=1", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json().get("sqlstate"), "23505", r)
        if fresh:
            self.assertFalse(self.table_exists(), "the CREATE TABLE of a rolled-back tx remains")
        else:
            self.assertEqual(self.tags("first"), [])

    def test_2_commit_both_rows(self):
        r = self.server.request("POST", "/test/db/tx/?tag=alpha", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), [{"n": 2}])
        self.assertEqual(self.tags("alpha"), ["alpha", "alpha-2"])

    def test_3_unique_violation_rolls_back_everything(self):
        r = self.server.request("POST", "/test/db/tx/?tag=beta", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        before = self.pg.psql("SELECT count(*) FROM datakit_tx")
        # The second insert repeats the first: 23505 → 409, and the FIRST insert of
        # that call (which succeeded on its own) must be rolled back too.
        r = self.server.request("POST", "/test/db/tx/?tag=gamma&fail=1", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json().get("sqlstate"), "23505", r)
        self.assertEqual(self.tags("gamma"), [])
        self.assertEqual(self.pg.psql("SELECT count(*) FROM datakit_tx"), before)
        self.assertEqual(self.tags("beta"), ["beta", "beta-2"])
        # the connection is usable afterwards (no aborted transaction left open on it)
        for _ in range(6):
            r = self.server.request("POST", "/test/db/tx/?tag=delta%d" % _, timeout=CLIENT_TIMEOUT)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), [{"n": 2}])
            r, _t = self.timed_get("/test/db/types/")
            self.assertOk(r)

    def test_4_conflict_on_an_existing_row(self):
        r = self.server.request("POST", "/test/db/tx/?tag=eps", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        # same tag again: the FIRST insert conflicts now
        r = self.server.request("POST", "/test/db/tx/?tag=eps", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json().get("sqlstate"), "23505", r)
        self.assertEqual(self.tags("eps"), ["eps", "eps-2"])

    def test_5_missing_tag_is_a_validation_error(self):
        r = self.server.request("POST", "/test/db/tx/", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 400, r)
        self.assertIn("tag", r.json())


class TestStatementCacheAfterErrors(DbTestCase):
    """One worker, one connection: every request runs on the same PostgreSQL session,
    whose prepared statements the pool caches by SQL text. A statement whose Parse the
    server skipped (after an earlier error in the same pipeline) or rejected must not be
    remembered as prepared."""
    WORKERS = 1
    ENV = {"RXD_DATABASE_POOL_SIZE": "1", "RXD_JOBS_ENABLED": "false"}

    def error_sqlstates(self):
        out = []
        for l in self.server.log_lines():
            m = re.search(r"database error (\w{5})", str(l.get("msg", "")))
            if l.get("level") == "error" and m:
                out.append(m.group(1))
        return out

    def test_failed_transaction_does_not_poison_the_connection(self):
        # First transaction on a fresh connection fails at its third statement: the
        # Parse of the fourth (the SELECT) never runs on the server.
        r = self.server.request("POST", "/test/db/tx/?tag=p1&fail=1", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.json().get("sqlstate"), "23505", r)
        for i in range(3):
            r = self.server.request("POST", "/test/db/tx/?tag=p2x%d" % i, timeout=CLIENT_TIMEOUT)
            self.assertEqual((r.status, r.json()), (200, [{"n": 2}]),
                             "a valid transaction after a failed one: %r" % r)

    def test_same_sql_error_every_time(self):
        for _ in range(3):
            r, _t = self.timed_get("/test/db/error/")
            self.assertEqual(r.status, 500, r)
            self.assertEqual(r.json(), SERVER_ERROR)
        deadline = time.monotonic() + 3
        while len(self.error_sqlstates()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        # 42P01 (undefined table) each time, not 26000 (prepared statement does not
        # exist) from the second time on
        self.assertEqual(self.error_sqlstates(), ["42P01"] * 3, self.server.stdout()[-3000:])

    def test_statement_works_once_its_table_exists(self):
        # A query that failed at Parse (missing table) must work once the table is
        # there, on the same connection, without a reconnect.
        self.pg.psql("DROP TABLE IF EXISTS pgbench_accounts")
        r, _t = self.timed_get("/test/db/item/1/")
        self.assertEqual(r.status, 500, r)
        self.pg.psql("CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, "
                     "abalance int, filler char(84)); "
                     "INSERT INTO pgbench_accounts VALUES (1, 1, 0, 'x')")
        try:
            r, _t = self.timed_get("/test/db/item/1/")
            self.assertEqual(self.assertOk(r),
                             [{"id": 1, "bid": 1, "abalance": 0, "filler": "x" + " " * 83}])
        finally:
            self.pg.psql("DROP TABLE IF EXISTS pgbench_accounts")


class TestSqlError(DbTestCase):
    WORKERS = 1

    def test_sql_error_is_a_bare_500_and_logged_with_sqlstate(self):
        r = self.server.get("/test/db/error/", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 500, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        self.assertEqual(r.json(), SERVER_ERROR)
        low = r.body.decode().lower()
        for leak in ("no_such_table", "select", "42p01", "relation", "postgres", "line 1"):
            self.assertNotIn(leak, low)
        rid = r.header("x-request-id")
        self.assertTrue(rid, r)
        # the log line carries the request id and the SQLSTATE
        deadline = time.monotonic() + 3
        while True:
            lines = [l for l in self.server.log_lines()
                     if l.get("level") == "error" and rid in str(l.get("msg", ""))]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertTrue(lines, "no error log line for request %s:\n%s" %
                        (rid, self.server.stdout()[-3000:]))
        self.assertIn("42P01", lines[0]["msg"])

    def test_connection_still_works_after_errors(self):
        for _ in range(10):
            r, _t = self.timed_get("/test/db/error/")
            self.assertEqual(r.status, 500, r)
            r, _t = self.timed_get("/test/db/types/")
            self.assertOk(r)
        self.assertEqual(self.assertOk(self.timed_get("/readyz")[0])["status"], "ok")


# ==========================================================================
# Pool exhaustion and timeouts
# ==========================================================================

class TestPoolExhaustion(DbTestCase):
    WORKERS = 1
    ENV = {"RXD_DATABASE_POOL_SIZE": "1", "RXD_DATABASE_PIPELINE": "1",
           "RXD_DATABASE_QUEUE_SIZE": "2", "RXD_DATABASE_TIMEOUT": "2s",
           # the job runner's polls would share the one connection: keep it exact
           "RXD_JOBS_ENABLED": "false"}

    def test_overflow_answers_503_at_once(self):
        # One connection, one in flight, two waiting: of six 1.5 s queries, one runs,
        # two wait (the second of those would start after 3 s > timeout), three do not
        # fit and must be refused at once.
        outs = self.concurrent_gets(["/test/db/sleep/?s=1.5"] * 6)
        summary = [(getattr(r, "status", repr(r)), round(dt, 2)) for r, dt in outs]
        for r, dt in outs:
            self.assertNotIsInstance(r, BaseException, "a request hung or failed: %s" % summary)
            self.assertIn(r.status, (200, 503), summary)
        ok = [dt for r, dt in outs if r.status == 200]
        unavailable = [(r, dt) for r, dt in outs if r.status == 503]
        self.assertGreaterEqual(len(ok), 1, summary)
        self.assertGreaterEqual(len(unavailable), 3, summary)
        for r, _dt in unavailable:
            self.assertUnavailable(r)
        fast = [dt for _r, dt in unavailable if dt < 1.0]
        self.assertGreaterEqual(len(fast), 3, "the overflow must be refused at once: %s" % summary)
        # none waited beyond the timeout plus the run of the query that got in
        for dt in (d for _r, d in unavailable):
            self.assertLess(dt, 2.0 + SLACK, summary)
        for dt in ok:
            self.assertLess(dt, 2 * 2.0 + SLACK, summary)
        self.assertRunning()
        # the pool is fine afterwards
        r, _ = self.timed_get("/test/db/types/")
        self.assertOk(r)

    def test_repeated_bursts(self):
        for _ in range(2):
            outs = self.concurrent_gets(["/test/db/sleep/?s=0.5"] * 8)
            summary = [(getattr(r, "status", repr(r)), round(dt, 2)) for r, dt in outs]
            for r, dt in outs:
                self.assertNotIsInstance(r, BaseException, summary)
                self.assertIn(r.status, (200, 503), summary)
                if r.status == 503:
                    self.assertUnavailable(r)
                self.assertLess(dt, 2.0 + 1.0, summary)
            self.assertGreaterEqual(sum(1 for r, _ in outs if r.status == 200), 1, summary)
        r, _ = self.timed_get("/test/db/types/")
        self.assertOk(r)


class TestQueryTimeout(DbTestCase):
    WORKERS = 1
    ENV = {"RXD_DATABASE_TIMEOUT": "1s"}   # default pool (4) and pipeline

    def test_slow_query_answers_503_in_timeout(self):
        r, dt = self.timed_get("/test/db/sleep/?s=3")
        self.assertUnavailable(r)
        self.assertGreater(dt, 0.8)
        self.assertLess(dt, 1.0 + SLACK)
        # the next query works (another connection of the pool, or the reconnected one)
        r, _ = self.timed_get("/test/db/types/")
        self.assertOk(r)
        body, waited = self.wait_ok("/test/db/sleep/?s=0.1")
        self.assertEqual(body, [{"slept": False}])  # pg_sleep() returns void, not NULL

    def test_fast_query_under_the_timeout(self):
        r, dt = self.timed_get("/test/db/sleep/?s=0.5")
        self.assertEqual(self.assertOk(r), [{"slept": False}])

    def test_several_slow_queries_at_once(self):
        # More slow queries than connections: every one of them answers 503 within
        # about the timeout (in flight: query deadline; queued: queue deadline).
        outs = self.concurrent_gets(["/test/db/sleep/?s=3"] * 10)
        summary = [(getattr(r, "status", repr(r)), round(dt, 2)) for r, dt in outs]
        for r, dt in outs:
            self.assertUnavailable(r)
            self.assertLess(dt, 2 * 1.0 + SLACK, summary)
        self.assertRunning()
        self.wait_ok("/test/db/types/", timeout=15)


class TestQueryTimeoutSingleConnection(DbTestCase):
    """The same with one connection per worker: the one that timed out is dropped and
    reconnected; the database itself is fine, so the next request must not fail."""
    WORKERS = 1
    ENV = {"RXD_DATABASE_TIMEOUT": "1s", "RXD_DATABASE_POOL_SIZE": "1",
           "RXD_JOBS_ENABLED": "false"}

    def test_next_query_after_a_timeout_works(self):
        r, dt = self.timed_get("/test/db/sleep/?s=3")
        self.assertUnavailable(r)
        self.assertLess(dt, 1.0 + SLACK)
        r, dt = self.timed_get("/test/db/types/")
        self.assertNotIsInstance(r, BaseException, r)
        self.assertEqual(r.status, 200,
                         "the query right after a timeout failed (%r) though the database "
                         "is up: the pool's only connection was being re-established" % r)
        self.assertLess(dt, 1.0 + SLACK)


# ==========================================================================
# The database goes away
# ==========================================================================

class TestDatabaseStopped(DbTestCase):
    WORKERS = 2
    ENV = {"RXD_DATABASE_TIMEOUT": "2s"}
    TIMEOUT = 2.0

    def outage(self, mode):
        self.assertOk(self.timed_get("/test/db/types/")[0])
        self.pg.stop(mode=mode)
        t_end = time.monotonic() + 6.0   # long enough for the reconnect backoff to grow
        n = 0
        while time.monotonic() < t_end or n < 5:
            r, dt = self.timed_get("/test/db/types/")
            self.assertUnavailable(r)
            self.assertLess(dt, self.TIMEOUT + SLACK)
            n += 1
            time.sleep(0.3)
        r, dt = self.timed_get("/readyz")
        self.assertNotIsInstance(r, BaseException, r)
        self.assertEqual(r.status, 503, r)
        body = r.json()
        self.assertEqual(body["status"], "unavailable", body)
        self.assertEqual(body["checks"]["database"]["status"], "fail", body)
        self.assertRunning()
        self.assertLess(self.timed_get("/healthz")[1], 1.0)

        self.pg.start()
        body, waited = self.wait_ok("/test/db/types/", timeout=15)
        self.assertEqual(body, [TestTypes.EXPECTED])
        # steady again: every request succeeds, readiness is back
        for r, _dt in self.concurrent_gets(["/test/db/types/"] * 12):
            self.assertOk(r)
        ready, _w = self.wait_ok("/readyz", timeout=5)
        self.assertEqual(ready["checks"]["database"]["status"], "ok", ready)
        return waited

    def test_stop_and_restart_fast(self):
        self.outage("fast")
        self.assertRunning()

    def test_stop_and_restart_immediate_twice(self):
        self.outage("immediate")
        self.outage("fast")
        self.assertRunning()

    def test_requests_in_flight_when_the_database_stops(self):
        # Slow queries running when the server goes away get 503, not a hang.
        results = []

        def slow():
            results.append(self.timed_get("/test/db/sleep/?s=5"))

        threads = [threading.Thread(target=slow, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        self.pg.stop(mode="fast")
        for t in threads:
            t.join(CLIENT_TIMEOUT + 5)
        self.assertEqual(len(results), 4)
        for r, dt in results:
            self.assertUnavailable(r)
            self.assertLess(dt, 0.5 + self.TIMEOUT + SLACK)
        self.assertRunning()
        self.pg.start()
        self.wait_ok("/test/db/types/", timeout=15)


class TestDatabaseFrozen(DbTestCase):
    WORKERS = 1      # one event loop: a blocking call anywhere would stall /healthz too
    ENV = {"RXD_DATABASE_TIMEOUT": "1s"}
    TIMEOUT = 1.0

    def freeze(self):
        self.addCleanup(self.pg.thaw)   # SIGCONT whatever happens
        self.pg.freeze()

    def test_frozen_database_503_within_timeout_then_recovers(self):
        self.assertOk(self.timed_get("/test/db/types/")[0])
        self.freeze()
        for _ in range(6):
            r, dt = self.timed_get("/test/db/types/")
            self.assertUnavailable(r)
            self.assertLess(dt, self.TIMEOUT + SLACK)
        self.assertRunning()
        self.pg.thaw()
        body, _w = self.wait_ok("/test/db/types/", timeout=15)
        self.assertEqual(body, [TestTypes.EXPECTED])
        for r, _dt in self.concurrent_gets(["/test/db/types/"] * 8):
            self.assertOk(r)

    def test_frozen_burst_and_event_loop_stays_free(self):
        self.assertOk(self.timed_get("/test/db/types/")[0])
        self.freeze()
        results = []

        def burst():
            results.extend(self.concurrent_gets(["/test/db/types/"] * 10))

        t = threading.Thread(target=burst, daemon=True)
        t.start()
        # while ten queries wait on a dead server, the worker still serves other routes
        time.sleep(0.2)
        for _ in range(5):
            r, dt = self.timed_get("/healthz", timeout=5)
            self.assertOk(r)
            self.assertLess(dt, 1.0)
            time.sleep(0.1)
        t.join(CLIENT_TIMEOUT + 10)
        self.assertEqual(len(results), 10)
        summary = [(getattr(r, "status", repr(r)), round(dt, 2)) for r, dt in results]
        for r, dt in results:
            self.assertUnavailable(r)
            self.assertLess(dt, 2 * self.TIMEOUT + SLACK, summary)
        # stays frozen a while (reconnects to a frozen server time out too)
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            r, dt = self.timed_get("/test/db/types/")
            self.assertUnavailable(r)
            self.assertLess(dt, self.TIMEOUT + SLACK)
        self.assertRunning()
        self.pg.thaw()
        self.wait_ok("/test/db/types/", timeout=15)
        ready, _w = self.wait_ok("/readyz", timeout=5)
        self.assertEqual(ready["checks"]["database"]["status"], "ok", ready)

    def test_stop_while_frozen(self):
        # SIGTERM while queries wait on a frozen server: rxd still stops in time
        # (the queries fail within the timeout; nothing blocks the shutdown).
        self.assertOk(self.timed_get("/test/db/types/")[0])
        self.freeze()
        results = []

        def one():
            results.append(self.timed_get("/test/db/types/"))

        threads = [threading.Thread(target=one, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        self.server.signal(signal.SIGTERM)
        rc = self.server.wait(timeout=10)
        took = time.monotonic() - t0
        for t in threads:
            t.join(CLIENT_TIMEOUT)
        self.assertEqual(rc, 0, self.server.output()[-4000:])
        self.assertLess(took, self.TIMEOUT + 2.0)
        for r, dt in results:
            self.assertUnavailable(r)
        assert_no_sanitizer_report(self, self.server.stderr())


if __name__ == "__main__":
    unittest.main()
