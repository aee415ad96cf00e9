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
import json
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


class TestSessionSettings(DbTestCase):
    """Pool connections plan each prepared statement once (database.plan_cache_mode,
    default force_generic_plan) and read times in UTC."""

    def settings(self, srv):
        r = srv.get("/test/db/settings/", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        return r.json()[0]

    def test_default_is_generic_plans(self):
        self.assertEqual(self.settings(self.server),
                         {"plan_cache_mode": "force_generic_plan", "timezone": "UTC"})

    def test_configured_mode(self):
        for mode in ("auto", "force_custom_plan"):
            srv = self.start_server(env={"RXD_DATABASE_PLAN_CACHE_MODE": mode}, workers=1)
            self.assertEqual(self.settings(srv)["plan_cache_mode"], mode)

    def test_bad_mode_refuses_to_start(self):
        r = run_cli("serve", modules="datakit",
                    env={"RXD_DATABASE_URL": self.pg.url(), "RXD_DATABASE_PLAN_CACHE_MODE": "sometimes"})
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn("database.plan_cache_mode: 'sometimes' is not force_generic_plan, auto or"
                      " force_custom_plan", r.stderr)


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


class TestPipelinedConnection(DbTestCase):
    """database.pipeline > 1 (the default is 1): one worker, one connection, several
    queries in flight on it at once; each answer reaches its own request, and a failing
    statement in the middle of the pipeline fails only its own request."""
    WORKERS = 1
    ENV = {"RXD_DATABASE_POOL_SIZE": "1", "RXD_DATABASE_PIPELINE": "8", "RXD_JOBS_ENABLED": "false"}

    def test_answers_reach_their_own_requests(self):
        paths = []
        for i in range(24):
            paths.append("/test/db/error/" if i % 6 == 5 else "/test/db/params/?t=req-%d" % i)
        for rnd in range(3):
            outs = self.concurrent_gets(paths)
            for i, (r, _dt) in enumerate(outs):
                self.assertNotIsInstance(r, Exception, r)
                if i % 6 == 5:
                    self.assertEqual((r.status, r.json()), (500, SERVER_ERROR), (rnd, i))
                else:
                    self.assertEqual(r.status, 200, (rnd, i, r))
                    self.assertEqual(r.json()[0]["t"], "req-%d" % i, (rnd, i))


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


# ==========================================================================
# List queries (rx_list_*) and list pages written as JSON text
# ==========================================================================

# sdk/rx.h error codes, and what rx_strerror() calls them
RX_EINVAL, RX_ENOMEM = -1, -2
EINVAL_TEXT = "RX_EINVAL: invalid argument"
ENOMEM_TEXT = "RX_ENOMEM: out of memory"
LIST_PARAM_SLOTS = 16 - 2     # RX_LIST_MAX_PARAMS less LIMIT and OFFSET


def strict_json(body):
    """json.loads that refuses NaN/Infinity literals (Python accepts them; JSON does not)
    and raw control characters in strings."""
    def no_constant(name):
        raise ValueError("not JSON: %s" % name)
    return json.loads(body.decode("utf-8"), parse_constant=no_constant, strict=True)


def same_json(a, b):
    """JSON equality: booleans are not numbers, 3 and 3.0 are the same number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# datakit_list: names are lowercase ASCII only, so ORDER BY name is the same in every
# collation; "eci" is in the tag of 3 and 17 and in the name of 29.
LIST_NAMES = ["kilo", "alpha", "juliet", "bravo", "india", "charlie", "hotel", "delta", "golf",
              "echo", "foxtrot", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
              "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber",
              "azure", "precious", "gamma"]


def list_row(i):
    tag = None if i % 4 == 0 else ("special" if i in (3, 17) else "plain%d" % (i % 5))
    return {"id": i, "grp": i % 3, "name": LIST_NAMES[i - 1], "tag": tag}


LIST_ROWS = [list_row(i) for i in range(1, 31)]


def list_filter(rows, f):
    """What datakit's /test/db/list/ filters mean, in Python."""
    out = []
    for r in rows:
        if "grp" in f and r["grp"] != int(f["grp"]):
            continue
        if "name" in f and r["name"] != f["name"]:
            continue
        if "q" in f:
            q = f["q"].lower()
            if q not in r["name"].lower() and q not in (r["tag"] or "\0").lower():
                continue
        if "min_id" in f and r["id"] < int(f["min_id"]):
            continue
        if "tagged" in f and r["tag"] is None:
            continue
        out.append(r)
    return out


class TestListQueries(DbTestCase):
    """rx_list_* through datakit's /test/db/list/: the WHERE built from the filters given,
    parameter numbering, ordering, totals, paging, and the builder's refusals."""
    WORKERS = 1

    def setUp(self):
        # each test its own rows (the table may have been dropped or changed by another)
        values = ", ".join("(%d, %d, '%s', %s)" % (r["id"], r["grp"], r["name"],
                                                  "NULL" if r["tag"] is None else "'%s'" % r["tag"])
                           for r in LIST_ROWS)
        self.pg.psql("DROP TABLE IF EXISTS datakit_list;"
                     " CREATE TABLE datakit_list (id int PRIMARY KEY, grp int, name text, tag text);"
                     " INSERT INTO datakit_list VALUES " + values)
        super().setUp()

    def get_list(self, params, path="/test/db/list/"):
        r = self.server.get(path + "?" + urllib.parse.urlencode(params), timeout=CLIENT_TIMEOUT)
        self.assertNotIsInstance(r, BaseException)
        return r

    def page(self, params, path="/test/db/list/"):
        """(results, count, response) of a 200 page."""
        r = self.get_list(params, path)
        self.assertEqual(r.status, 200, r)
        body = strict_json(r.body)
        self.assertEqual(set(body), {"count", "next", "previous", "results"}, body)
        self.assertEqual(r.header("x-total-count"), str(body["count"]), r)
        return body["results"], body["count"], r

    def list_error(self, params):
        r = self.get_list(params, "/test/db/list/errors/")
        self.assertEqual(r.status, 500, r)
        body = strict_json(r.body)
        self.assertEqual(body["code"], "list_error", body)
        self.assertIsNone(r.header("x-total-count"), r)
        return body

    # -- conditions ---------------------------------------------------------

    def test_no_condition_is_every_row(self):
        rows, count, r = self.page({"page_size": 100})
        self.assertEqual(rows, LIST_ROWS)
        self.assertEqual(count, 30)
        self.assertIsNone(r.header("link"), r)

    def test_one_condition(self):
        for f, n in (({"grp": 1}, 10), ({"name": "golf"}, 1), ({"min_id": 26}, 5),
                     ({"name": "nosuch"}, 0)):
            with self.subTest(filters=f):
                rows, count, _ = self.page(dict(f, page_size=100))
                self.assertEqual(rows, list_filter(LIST_ROWS, f))
                self.assertEqual(len(rows), n)
                self.assertEqual(count, n)

    def test_condition_without_parameter(self):
        rows, count, _ = self.page({"tagged": 1, "page_size": 100})
        self.assertEqual(rows, [r for r in LIST_ROWS if r["tag"] is not None])
        self.assertEqual(count, 23)

    def test_one_parameter_used_twice(self):
        # "(strpos(lower(name), lower($n)) > 0 OR strpos(lower(tag), lower($n)) > 0)"
        for q in ("eci", "ECI", "eCi"):
            rows, count, _ = self.page({"q": q, "page_size": 100})
            self.assertEqual([r["id"] for r in rows], [3, 17, 29], q)
            self.assertEqual(count, 3)

    def test_several_conditions_in_either_order(self):
        combos = [
            {"grp": 2, "q": "eci"},
            {"grp": 0, "min_id": 10, "tagged": 1},
            {"q": "a", "min_id": 25},
            {"name": "precious", "q": "ECI", "grp": 2},
            {"grp": 1, "q": "o", "min_id": 5, "tagged": 1},
            {"grp": 2, "name": "precious", "q": "eci", "min_id": 29, "tagged": 1},
            {"grp": 1, "name": "precious", "q": "eci", "min_id": 1, "tagged": 1},  # none
            {"grp": 2, "q": "plain2"},
        ]
        for f in combos:
            expected = list_filter(LIST_ROWS, f)
            for rev in (False, True):
                with self.subTest(filters=f, reverse=rev):
                    params = dict(f, page_size=100)
                    if rev:
                        params["rev"] = 1
                    rows, count, _ = self.page(params)
                    self.assertEqual(rows, expected)
                    self.assertEqual(count, len(expected))
        # the combinations are not trivially empty or full
        self.assertEqual([r["id"] for r in list_filter(LIST_ROWS, combos[0])], [17, 29])
        self.assertEqual([r["id"] for r in list_filter(LIST_ROWS, combos[5])], [29])

    def test_filter_value_is_never_sql(self):
        evil = ["x'; DROP TABLE datakit_list; --", "' OR '1'='1", "1; DELETE FROM datakit_list",
                "$1", "%' OR name LIKE '%"]
        for v in evil:
            with self.subTest(value=v):
                rows, count, _ = self.page({"name": v})
                self.assertEqual((rows, count), ([], 0))
                rows, count, _ = self.page({"q": v, "grp": 1, "rev": 1})
                self.assertEqual((rows, count), ([], 0))
        self.assertEqual(self.pg.psql("SELECT count(*) FROM datakit_list"), "30")
        rows, count, _ = self.page({"page_size": 100})
        self.assertEqual(count, 30)

    # -- ordering -----------------------------------------------------------

    def test_ordering(self):
        by_name = sorted(LIST_ROWS, key=lambda r: r["name"])
        cases = [
            ("name", by_name),
            ("-name", by_name[::-1]),
            ("name,id", by_name),               # the first term decides
            ("-name,name", by_name[::-1]),
            ("-id", LIST_ROWS[::-1]),
            ("bogus", LIST_ROWS),               # unknown: the default, id ASC
            ("bogus,-id", LIST_ROWS),           # only the first term counts
            ("", LIST_ROWS),
            ("nam", LIST_ROWS),                 # a prefix is not a match
            ("names", LIST_ROWS),
        ]
        for ordering, expected in cases:
            with self.subTest(ordering=ordering):
                rows, _, _ = self.page({"ordering": ordering, "page_size": 100})
                self.assertEqual([r["id"] for r in rows], [r["id"] for r in expected])
        self.assertNotEqual(by_name, LIST_ROWS)

    def test_ordering_with_filters_and_pages(self):
        f = {"grp": 1, "ordering": "-name", "page_size": 3}
        expected = sorted(list_filter(LIST_ROWS, f), key=lambda r: r["name"], reverse=True)
        got = []
        for page in (1, 2, 3, 4):
            rows, count, _ = self.page(dict(f, page=page))
            self.assertEqual(count, 10)
            got += rows
        self.assertEqual(got, expected)

    # -- paging ---------------------------------------------------------------

    def test_pages_links_and_past_the_end(self):
        rows, count, r = self.page({"grp": 1})           # default page size 20
        self.assertEqual((len(rows), count), (10, 10))
        self.assertIsNone(r.header("link"))
        rows, count, r = self.page({})
        self.assertEqual((rows, count), (LIST_ROWS[:20], 30))
        link = r.header("link", "")
        self.assertRegex(link, r'^<http://[^>]*/test/db/list/\?page=2>; rel="next"$')
        rows, count, r = self.page({"page": 2})
        self.assertEqual((rows, count), (LIST_ROWS[20:], 30))
        self.assertRegex(r.header("link", ""), r'^<http://[^>]*/test/db/list/>; rel="prev"$')
        # filters stay in the links
        rows, count, r = self.page({"grp": 2, "page_size": 4, "page": 2})
        self.assertEqual(rows, list_filter(LIST_ROWS, {"grp": 2})[4:8])
        self.assertEqual(count, 10)
        link = r.header("link", "")
        self.assertIn("grp=2", link)
        self.assertIn('page=3>; rel="next"', link)
        self.assertIn('page_size=4>; rel="prev"', link)
        for params in ({"page": 3}, {"grp": 1, "page": 2}, {"name": "nosuch", "page": 2}):
            with self.subTest(params=params):
                r = self.get_list(params)
                self.assertEqual(r.status, 404, r)
                self.assertEqual(strict_json(r.body),
                                 {"detail": "Invalid page.", "code": "not_found"})
        # an empty first page is a page, not an error
        rows, count, _ = self.page({"name": "nosuch"})
        self.assertEqual((rows, count), ([], 0))

    # -- totals ---------------------------------------------------------------

    def test_custom_total_uses_the_returned_parameter_number(self):
        # total = 1000 + rows of the grp filter only (rx_list_total with grp's $n)
        for params in ({"grp": 1}, {"grp": 1, "min_id": 20}, {"grp": 1, "min_id": 20, "rev": 1},
                       {"grp": 1, "q": "o", "tagged": 1, "min_id": 3, "rev": 1},
                       {"grp": 1, "q": "o", "name": "kilo"}):
            with self.subTest(params=params):
                rows, count, r = self.page(dict(params, total="custom", page_size=100))
                self.assertEqual(rows, list_filter(LIST_ROWS, params))
                self.assertEqual(count, 1010)
                self.assertEqual(r.header("x-total-count"), "1010")
        # with grp=2 in the filters the custom total changes with it
        _, count, _ = self.page({"grp": 2, "tagged": 1, "rev": 1, "total": "custom"})
        self.assertEqual(count, 1010)
        self.pg.psql("DELETE FROM datakit_list WHERE id IN (2, 5)")   # two of grp 2
        _, count, _ = self.page({"grp": 2, "min_id": 25, "rev": 1, "total": "custom"})
        self.assertEqual(count, 1008)
        # without it: the default count of the filtered rows
        _, count, _ = self.page({"grp": 2, "min_id": 25, "rev": 1})
        self.assertEqual(count, 2)

    def test_custom_total_drives_links(self):
        rows, count, r = self.page({"grp": 1, "total": "custom", "page_size": 10})
        self.assertEqual((len(rows), count), (10, 1010))
        self.assertIn('page=2>; rel="next"', r.header("link", ""))

    # -- refusals -------------------------------------------------------------

    def test_every_parameter_slot_can_be_used(self):
        rows, count, _ = self.page({"case": "params", "n": LIST_PARAM_SLOTS},
                                   "/test/db/list/errors/")
        self.assertEqual([r["id"] for r in rows], [1, 2, 3, 4, 5])
        self.assertEqual(count, 5)

    def test_one_parameter_too_many_is_einval(self):
        body = self.list_error({"case": "params", "n": LIST_PARAM_SLOTS + 1})
        self.assertEqual(body["rc"], RX_EINVAL, body)
        self.assertEqual(body["error"], EINVAL_TEXT)
        # rx_list_where numbered 1..14, refused the 15th; a later condition without
        # parameter is still accepted, but the kept error wins at run
        self.assertEqual(body["calls"], list(range(1, LIST_PARAM_SLOTS + 1)) + [RX_EINVAL, 0])
        body = self.list_error({"case": "params", "n": 20})
        self.assertEqual(body["rc"], RX_EINVAL, body)

    def test_conditions_without_parameters_take_no_slot(self):
        rows, count, _ = self.page({"case": "conds", "n": 16, "page_size": 100},
                                   "/test/db/list/errors/")
        self.assertEqual((rows, count), (LIST_ROWS, 30))
        # kernel/list.c holds 16 conditions (MAX_CONDS); a 17th is refused
        body = self.list_error({"case": "conds", "n": 17})
        self.assertEqual(body["rc"], RX_EINVAL, body)
        self.assertEqual(body["calls"], [0] * 16 + [RX_EINVAL])

    def test_bad_arguments_are_einval(self):
        for case, calls in (("empty_cond", [RX_EINVAL, 1]), ("null_cond", [RX_EINVAL, 1]),
                            ("empty_total", []), ("no_order", []), ("no_default", []),
                            ("null_cb", [])):
            with self.subTest(case=case):
                body = self.list_error({"case": case})
                self.assertEqual(body["rc"], RX_EINVAL, body)
                self.assertEqual(body["error"], EINVAL_TEXT)
                self.assertEqual(body["calls"], calls)

    def test_null_list_is_enomem(self):
        body = self.list_error({"case": "null_cols"})
        # rx_list_new(req, NULL, ...) gave NULL; rx_list_where(NULL, ...) said RX_ENOMEM
        self.assertEqual(body["calls"], [True, RX_ENOMEM])
        self.assertEqual(body["rc"], RX_ENOMEM, body)
        self.assertEqual(body["error"], ENOMEM_TEXT)
        body = self.list_error({"case": "run_null"})
        self.assertEqual(body["rc"], RX_ENOMEM, body)
        # the server is fine afterwards
        rows, count, _ = self.page({"grp": 0})
        self.assertEqual(count, 10)


class TestRowsPageText(DbTestCase):
    """rx_reply_rows_page writes JSON text from the result itself; it must give exactly
    the values rx_rows_array (jansson) gives for the same SELECT."""
    WORKERS = 1

    def both(self, path, query=""):
        """(rows through jansson, page response, page rows) for the same SELECT."""
        r = self.server.get(path + query, timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        ref = strict_json(r.body)
        self.assertIsInstance(ref, list)
        p = self.server.get(path + "page/" + query, timeout=CLIENT_TIMEOUT)
        self.assertEqual(p.status, 200, p)
        self.assertTrue(p.header("content-type", "").startswith("application/json"), p)
        page = strict_json(p.body)
        self.assertEqual(set(page), {"count", "next", "previous", "results"}, page)
        return ref, p, page

    def assertSameRow(self, got, want, where=""):
        """Key by key, each its own subTest so that one difference hides no other."""
        for k in sorted(set(got) | set(want)):
            with self.subTest(row=where, column=k):
                self.assertTrue(k in got, "%s: missing from the first (the second has %r)"
                                % (k, want.get(k)))
                self.assertTrue(k in want, "%s: missing from the second (the first has %r)"
                                % (k, got[k]))
                self.assertTrue(same_json(got[k], want[k]), "%s: %r != %r" % (k, got[k], want[k]))

    def test_types_row_same_as_jansson(self):
        ref, p, page = self.both("/test/db/types/")
        self.assertEqual(page["count"], 1)
        self.assertEqual(p.header("x-total-count"), "1")
        self.assertEqual(len(page["results"]), 1)
        self.assertEqual(ref, [TestTypes.EXPECTED])
        self.assertSameRow(page["results"][0], ref[0])
        # exact JSON types as well (True is not 1, 12.50 stays a string)
        for k, v in TestTypes.EXPECTED.items():
            self.assertIs(type(page["results"][0][k]), type(v), k)
        self.assertRegex(p.body.decode(), r'"i8":9007199254740993[,}]')

    HARD = {
        "dquote": 'say "hi"',
        "backslash": "back\\slash",
        "ws": "a\nb\rc\td",
        "ctrl": "x\x01y\x1fz",
        "bf": "\b\f",
        "del": "\x7f",
        "utf8": "żółć ✓ 日本 🙂",
        "empty": "",
        "long_esc": 'ab"c\\' * 1500 + "é" * 3000,
        "long_plain": "x" * 9000,
        "tstz": "2026-11-22T10:00:00Z",
        "tstz_frac": "2026-11-22T07:00:00.5Z",
        "tstz_usec": "2026-11-22T10:00:00.000001Z",
        "ts_plain": "2026-11-22T10:00:00Z",
        "ts_frac": "2026-11-22T10:00:00.25Z",
        "ts_inf": "infinity",
        "f_nan": None,
        "f_inf": None,
        "f_ninf": None,
        "f_neg": -2.5,
        "f_big": 1e300,
        "f_small": 1e-300,
        "f4": 0.1,
        "i_neg": -42,
        "i2_min": -32768,
        "i8_max": 9223372036854775807,
        "i8_min": -9223372036854775808,
        "n_neg": "-0.5",
        "an_oid": 26,
        "null_text": None, "null_int": None, "null_float": None, "null_bool": None,
        "null_jsonb": None, "null_ts": None, "null_date": None,
        "jb": {"q": 'he said "no"', "n": {"b\\s": ["\n", "é", None, -1.5]}},
        "js": {"k": 'v"w'},
        "jb_str": "just a string",
        "an_uuid": "00000000-0000-0000-0000-00000000002a",
        "arr": "{1,2}",
        "jb_big": {"big": 123456789012345678901234567890, "one": 1.0},
        'key "quoted"': 'a"b',
    }

    def test_hard_values_page(self):
        p = self.server.get("/test/db/hard/page/", timeout=CLIENT_TIMEOUT)
        self.assertEqual(p.status, 200, p)
        page = strict_json(p.body)
        self.assertEqual(page["count"], 1)
        row = page["results"][0]
        self.assertSameRow(row, self.HARD, "page")
        # the escapes are JSON's, the UTF-8 is passed through
        body = p.body.decode("utf-8")
        self.assertIn('"dquote":"say \\"hi\\""', body)
        self.assertIn('"utf8":"żółć ✓ 日本 🙂"', body)
        self.assertNotRegex(body, r"[\x00-\x1f]")

    def assertLossyBig(self, jb):
        """jansson holds no integer beyond int64: rx_rows_value gives that jsonb with
        its numbers as reals (sdk/rx.h), still a document; the page copies it exactly."""
        self.assertEqual(set(jb), {"big", "one"}, jb)
        self.assertIs(type(jb["big"]), float, jb)
        self.assertAlmostEqual(jb["big"] / 123456789012345678901234567890, 1.0, places=12)
        self.assertEqual(jb["one"], 1.0)

    def test_hard_values_jansson(self):
        r = self.server.get("/test/db/hard/", timeout=CLIENT_TIMEOUT)
        self.assertEqual(r.status, 200, r)
        ref = strict_json(r.body)
        self.assertEqual(len(ref), 1)
        self.assertEqual(ref[0].pop("total_count"), 1)
        self.assertLossyBig(ref[0].pop("jb_big"))
        want = dict(self.HARD)
        del want["jb_big"]
        self.assertSameRow(ref[0], want, "jansson")

    def test_hard_values_same_as_jansson(self):
        ref, p, page = self.both("/test/db/hard/")
        self.assertEqual(page["count"], 1)
        self.assertEqual(ref[0].pop("total_count"), 1)
        self.assertLossyBig(ref[0].pop("jb_big"))
        row = dict(page["results"][0])
        self.assertEqual(row.pop("jb_big"), self.HARD["jb_big"])
        self.assertSameRow(row, ref[0])

    def test_many_rows_same_as_jansson(self):
        for n in (500, 1, 37):
            with self.subTest(n=n):
                ref, p, page = self.both("/test/db/many/", "?page_size=1000&n=%d" % n)
                self.assertEqual(len(ref), n)
                self.assertEqual(page["count"], n)
                self.assertEqual(p.header("x-total-count"), str(n))
                rows = page["results"]
                self.assertEqual(len(rows), n)
                for i, (got, want) in enumerate(zip(rows, ref)):
                    self.assertEqual(want.pop("total_count"), n)
                    self.assertEqual(got["id"], i + 1)
                    self.assertSameRow(got, want, "row %d" % (i + 1))
                if n >= 100:
                    self.assertGreater(len(p.body), 50000)  # far past the first 4096-byte buffer
        # a spot check that does not rely on jansson
        _, _, page = self.both("/test/db/many/", "?page_size=1000&n=500")
        r = page["results"][99]     # g = 100
        self.assertEqual(r["s"], 'row "100"\n\\' + "ż" * (100 % 7))
        self.assertEqual(r["f"], None)                # 100 % 5 == 0
        self.assertEqual(r["ts"], "2026-01-01T00:02:30Z")
        self.assertEqual(r["jb"], {"g": 100, "q": 'a"100', "l": [100, None]})
        self.assertEqual(r["big"], -100000000700)
        self.assertIs(r["even"], True)
        self.assertIsNone(page["results"][6]["f_nan"])   # g = 7
        self.assertEqual(page["results"][1]["ctrl"], "\x03\x03")   # g = 2

    def test_empty_result_is_an_empty_page(self):
        ref, p, page = self.both("/test/db/many/", "?n=0")
        self.assertEqual(ref, [])
        self.assertEqual(page, {"count": 0, "next": None, "previous": None, "results": []})
        self.assertEqual(p.header("x-total-count"), "0")


if __name__ == "__main__":
    unittest.main()
