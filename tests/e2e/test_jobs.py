"""test_jobs — durable jobs end to end (kernel/jobs.c, kernel/migrations/001_jobs.sql).

Real rxd processes with the `jobkit` test module against a private, throwaway
PostgreSQL (pgtemp). jobkit's tasks record every run in jobkit_runs, so the
tests read what ran, how often, on which instance and in which attempt:
outbox semantics (a rolled-back enqueue never runs), retries with backoff,
dead jobs, a process killed mid-job (another instance takes it over when the
lease expires), periodic tasks firing once per slot across two instances,
LISTEN/NOTIFY wake-ups, `rxd worker` (jobs without HTTP) and `rxd jobs`.

Every rxd's stderr is checked for sanitizer reports, so running this file with
an ASan build (RXD_BIN=build-asan/rxd RXD_TEST_MODULES=build-asan/test-modules)
checks memory too.
"""
import os
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rxdtest  # noqa: E402
from pgtemp import PgTemp  # noqa: E402
from rxdtest import HOST, RXD_BIN, Server, run_cli  # noqa: E402

PG = None
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

RUNS_TABLE = ("CREATE TABLE IF NOT EXISTS jobkit_runs (id bigserial PRIMARY KEY, task text,"
              " job_id bigint, attempt int, instance text, tag text, slot text, is_job bool,"
              " ts timestamptz NOT NULL DEFAULT clock_timestamp())")


def setUpModule():
    global PG
    PG = PgTemp()
    try:
        r = cli("migrate")
        if r.returncode != 0:
            raise RuntimeError("rxd migrate failed:\n%s%s" % (r.stdout, r.stderr))
        PG.psql(RUNS_TABLE)
    except BaseException:
        PG.cleanup()
        raise


def tearDownModule():
    if PG is not None:
        PG.cleanup()


def assert_no_sanitizer(text, who):
    for mark in SANITIZER_MARKS:
        if mark in text:
            raise AssertionError("sanitizer report from %s:\n%s" % (who, text[-6000:]))


def cli(*args, env=None, modules="jobkit"):
    e = {"RXD_DATABASE_URL": PG.url()}
    e.update(env or {})
    r = run_cli(*args, env=e, modules=modules, timeout=60)
    assert_no_sanitizer(r.stderr, "rxd " + " ".join(args))
    return r


def wait_for(fn, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def q(sql):
    return PG.psql(sql)


def rows(sql):
    out = q(sql)
    return [line.split("|") for line in out.splitlines()] if out else []


def enqueue_sql(task, payload="{}", delay_s=0):
    """Enqueue through SQL (psql), as a module's CTE would; returns the job id."""
    p = payload.replace("'", "''")
    return int(q("SELECT rx_enqueue('%s', '%s'::jsonb, now() + interval '%d seconds')"
                 % (task, p, delay_s)))


def job_state(job_id):
    out = q("SELECT state, attempts, coalesce(last_error, ''), finished_at IS NOT NULL,"
            " locked_until IS NULL FROM rx_jobs WHERE id = %d" % job_id)
    return out.split("|") if out else None


def runs_of(job_id):
    """[(attempt, instance, is_job)] in run order."""
    return [(int(a), i, b) for a, i, b in
            rows("SELECT attempt, instance, is_job FROM jobkit_runs WHERE job_id = %d ORDER BY id"
                 % job_id)]


def reset():
    q("TRUNCATE rx_jobs, rx_periodic, jobkit_runs")


class JobServer(Server):
    """rxd with jobkit on the test database: `serve --migrate` or `worker --migrate`."""

    def __init__(self, args=("serve", "--migrate"), env=None, workers=2):
        e = {"RXD_DATABASE_URL": PG.url(), "RXD_SHUTDOWN_GRACE": "15s"}
        e.update(env or {})
        super().__init__("", e, "jobkit", workers)
        self.args = list(args)

    def start(self, timeout=20.0):
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([RXD_BIN, "--config", self.config_path] + self.args,
                                     env=self.env, stdout=self._out, stderr=self._err,
                                     cwd=self.dir.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("rxd exited with %d at start-up:\n%s" %
                                     (self.proc.returncode, self.output()))
            # Up when the runner logged its start (and, for serve, HTTP answers).
            if "jobs: runner" in self.stdout() and (self.args[0] != "serve" or self._healthy()):
                return self
            time.sleep(0.02)
        self.kill()
        raise AssertionError("rxd did not start its job runner within %.0f s:\n%s" %
                             (timeout, self.output()))

    def _healthy(self):
        try:
            return self.get("/healthz", timeout=1).status == 200
        except OSError:
            return False

    def kill(self):
        super().kill()
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None:
                f.close()

    def stop(self, timeout=20.0):
        try:
            super().stop(timeout)
        finally:
            assert_no_sanitizer(self.stderr(), "rxd " + " ".join(self.args))


class Jobs(unittest.TestCase):
    """One server for the behaviours that need no special set-up."""

    @classmethod
    def setUpClass(cls):
        cls.server = JobServer(env={"RXD_JOBKIT_INSTANCE": "main"}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    def setUp(self):
        reset()

    def enqueue(self, task, payload=None, delay=0):
        r = self.server.request("POST", "/test/jobs/enqueue/",
                                {"task": task, "payload": payload or {}, "delay": delay})
        self.assertEqual(r.status, 201, r)
        return r.json()["id"]

    def wait_state(self, job_id, state, timeout=10.0):
        return wait_for(lambda: (job_state(job_id) or [None])[0] == state and job_state(job_id),
                        timeout, what="job %d to be %s (now %s)" % (job_id, state,
                                                                     job_state(job_id)))

    def test_enqueue_from_a_request_runs_once(self):
        job_id = self.enqueue("jobkit.ok", {"tag": "route"})
        st = self.wait_state(job_id, "done")
        self.assertEqual(st, ["done", "1", "", "t", "t"])
        self.assertEqual(runs_of(job_id), [(1, "main", "t")])  # is_job true inside the task
        self.assertEqual(q("SELECT tag FROM jobkit_runs WHERE job_id = %d" % job_id), "route")

    def test_a_request_is_not_a_job(self):
        r = self.server.get("/test/jobs/is-job/")
        self.assertEqual(r.json(), {"is_job": False, "id": 0, "attempt": 0, "payload": False})

    def test_enqueue_in_a_rolled_back_transaction_never_runs(self):
        r = self.server.request("POST", "/test/jobs/enqueue-rollback/",
                                {"task": "jobkit.ok", "payload": {"tag": "rolled-back"}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"rolled_back": True, "sqlstate": "22012"})
        q("BEGIN; SELECT rx_enqueue('jobkit.ok', '{\"tag\": \"rolled-back\"}'); ROLLBACK;")
        # A job enqueued after both has run: had the others existed, they would have too.
        marker = enqueue_sql("jobkit.ok", '{"tag": "marker"}')
        self.wait_state(marker, "done")
        time.sleep(0.3)
        self.assertEqual(q("SELECT count(*) FROM jobkit_runs WHERE tag = 'rolled-back'"), "0")
        self.assertEqual(q("SELECT count(*) FROM rx_jobs"), "1")

    def test_fails_twice_then_succeeds_runs_exactly_three_times(self):
        job_id = self.enqueue("jobkit.flaky", {"fail_times": 2})
        st = self.wait_state(job_id, "done")
        self.assertEqual(st[:2], ["done", "3"])
        self.assertEqual(st[2], "flaky failure 2")  # the last error stays for the record
        time.sleep(0.3)
        self.assertEqual([a for a, _, _ in runs_of(job_id)], [1, 2, 3])
        # Exponential backoff: 100 ms, then 200 ms (plus jitter) between attempts.
        gaps = [float(g) for g in q(
            "SELECT extract(epoch FROM ts - lag(ts) OVER (ORDER BY id)) FROM jobkit_runs"
            " WHERE job_id = %d ORDER BY id OFFSET 1" % job_id).split()]
        self.assertGreaterEqual(gaps[0], 0.1, gaps)
        self.assertGreaterEqual(gaps[1], 0.2, gaps)
        self.assertLess(gaps[1], 3.0, gaps)

    def test_always_failing_job_ends_dead_with_its_last_error(self):
        job_id = self.enqueue("jobkit.fail")
        st = self.wait_state(job_id, "dead")
        self.assertEqual(st, ["dead", "3", "always fails (attempt 3)", "t", "t"])
        time.sleep(0.5)
        self.assertEqual([a for a, _, _ in runs_of(job_id)], [1, 2, 3])
        r = cli("jobs")
        self.assertEqual(r.returncode, 0, r.stderr)
        line = [l for l in r.stdout.splitlines() if l.startswith("jobkit.fail ")][0]
        self.assertEqual(line.split()[1:6], ["0", "0", "0", "0", "1"], r.stdout)
        self.assertIn("dead jobs (newest 1)", r.stdout)
        dead = [l for l in r.stdout.splitlines() if l.startswith("%d " % job_id)]
        self.assertEqual(len(dead), 1, r.stdout)
        self.assertIn("always fails (attempt 3)", dead[0])

    def test_task_that_returns_without_an_outcome_fails_at_once(self):
        job_id = enqueue_sql("jobkit.forget")
        st = self.wait_state(job_id, "dead", timeout=5)  # not after its 30 s timeout
        self.assertEqual(st[1], "1")
        self.assertIn("returned without calling rx_job_done()", st[2])

    def test_delayed_job_waits_then_runs_without_waiting_for_a_poll(self):
        t0 = time.monotonic()
        job_id = self.enqueue("jobkit.ok", {"tag": "delayed"}, delay=2)
        time.sleep(1.2)
        self.assertEqual(runs_of(job_id), [])
        self.wait_state(job_id, "done", timeout=10)
        # Default poll interval is 5 s: the runner woke at the due time instead.
        self.assertLess(time.monotonic() - t0, 4.5)
        self.assertGreaterEqual(float(q(
            "SELECT extract(epoch FROM r.ts - j.created_at) FROM jobkit_runs r"
            " JOIN rx_jobs j ON j.id = r.job_id WHERE r.job_id = %d" % job_id)), 1.9)

    def test_a_job_can_enqueue_another(self):
        job_id = self.enqueue("jobkit.chain")
        self.wait_state(job_id, "done")
        wait_for(lambda: q("SELECT count(*) FROM jobkit_runs WHERE tag = 'chained'") == "1",
                 what="the chained job")

    def test_jobs_of_unknown_tasks_are_left_for_others(self):
        # A mixed-version fleet: a task this process does not know stays queued.
        other = enqueue_sql("other.module_task")
        marker = enqueue_sql("jobkit.ok")
        self.wait_state(marker, "done")
        time.sleep(0.3)
        self.assertEqual(job_state(other)[:2], ["queued", "0"])
        r = cli("jobs")
        self.assertEqual(r.returncode, 0, r.stderr)
        line = [l for l in r.stdout.splitlines() if l.startswith("other.module_task ")][0]
        cols = line.split()
        self.assertEqual(cols[1:6], ["1", "0", "0", "0", "0"], r.stdout)
        self.assertRegex(cols[6], r"^\d+s$")  # age of the oldest due job
        ok = [l for l in r.stdout.splitlines() if l.startswith("jobkit.ok ")][0]
        self.assertEqual(ok.split()[4], "1", r.stdout)  # done in the last 24 h
        self.assertIn("no dead jobs", r.stdout)

    def test_bad_enqueue_arguments(self):
        r = self.server.request("POST", "/test/jobs/enqueue/", {"payload": {}})
        self.assertEqual(r.status, 400, r)
        r = self.server.request("POST", "/test/jobs/enqueue/", {"task": "jobkit.ok", "delay": -1})
        self.assertEqual(r.status, 400, r)

    def test_metrics_export_queue_depth(self):
        enqueue_sql("other.module_task")
        enqueue_sql("other.module_task")

        def gauges():
            body = self.server.get("/metrics").body.decode()
            return {l.split()[0]: l.split()[1] for l in body.splitlines()
                    if l.startswith("rxd_jobs{")}
        g = wait_for(lambda: gauges().get('rxd_jobs{state="queued"}') == "2" and gauges(),
                     timeout=12, what="rxd_jobs gauges")
        self.assertEqual(g['rxd_jobs{state="dead"}'], "0")


class Wakeups(unittest.TestCase):
    """LISTEN/NOTIFY: with a 30 s poll, only a notification can wake the runner fast."""

    @classmethod
    def setUpClass(cls):
        cls.server = JobServer(env={"RXD_JOBS_POLL_INTERVAL": "30s",
                                    "RXD_JOBKIT_INSTANCE": "notify"}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    def setUp(self):
        reset()

    def test_notify_wakes_the_runner(self):
        first = enqueue_sql("jobkit.ok")
        wait_for(lambda: runs_of(first), timeout=5, what="the first job")
        time.sleep(0.5)
        t0 = time.monotonic()
        job_id = enqueue_sql("jobkit.ok", '{"tag": "notified"}')
        wait_for(lambda: runs_of(job_id), timeout=5, what="the notified job")
        self.assertLess(time.monotonic() - t0, 2.0)

    def test_a_burst_larger_than_the_concurrency_drains(self):
        # 30 jobs in one transaction: one NOTIFY, batches of 8 claimed in turn.
        q("SELECT rx_enqueue('jobkit.ok', jsonb_build_object('tag', 'burst')) FROM generate_series(1, 30)")
        wait_for(lambda: q("SELECT count(*) FROM rx_jobs WHERE state = 'done'") == "30",
                 timeout=8, what="30 jobs done")
        self.assertEqual(q("SELECT count(*), count(DISTINCT job_id) FROM jobkit_runs"), "30|30")

    def test_runner_recovers_after_a_database_restart(self):
        PG.stop()
        time.sleep(2.0)  # long enough for the pool's reconnect backoff to grow
        PG.start()
        # Back without a poll (30 s): the LISTEN connection and the pool reconnect
        # by themselves and the notification of this job wakes the runner.
        t0 = time.monotonic()
        job_id = wait_for(lambda: self._try_enqueue(), timeout=10, what="enqueue after restart")
        try:
            wait_for(lambda: runs_of(job_id), timeout=20, what="a job after the restart")
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.server.stdout()[-5000:]))
        self.assertLess(time.monotonic() - t0, 12)  # pool and claim backoffs are at most 5 s
        wait_for(lambda: "jobs: LISTEN connection is back" in self.server.stdout(), timeout=15,
                 what="the LISTEN connection to come back")
        self.assertIsNone(self.server.proc.poll())

    @staticmethod
    def _try_enqueue():
        try:
            return enqueue_sql("jobkit.ok", '{"tag": "after-restart"}')
        except RuntimeError:
            return None


class KilledProcess(unittest.TestCase):
    def setUp(self):
        reset()

    def test_job_of_a_killed_process_runs_again_when_its_lease_expires(self):
        a = JobServer(env={"RXD_JOBKIT_INSTANCE": "A"}).start()
        b = None
        try:
            job_id = enqueue_sql("jobkit.sleep", '{"seconds": 10}')  # timeout_s 2
            wait_for(lambda: runs_of(job_id), timeout=5, what="attempt 1 on A")
            a.kill()  # SIGKILL mid-run: no outcome is ever written
            self.assertEqual(job_state(job_id)[:2], ["running", "1"])
            b = JobServer(env={"RXD_JOBKIT_INSTANCE": "B"}).start()
            wait_for(lambda: len(runs_of(job_id)) >= 2, timeout=20, what="attempt 2 on B")
            self.assertEqual(runs_of(job_id)[:2], [(1, "A", "t"), (2, "B", "t")])
            # Not before the lease (timeout 2 s + 5 s margin) expired.
            gap = float(q("SELECT extract(epoch FROM max(ts) FILTER (WHERE attempt = 2)"
                          " - min(ts)) FROM jobkit_runs WHERE job_id = %d" % job_id))
            self.assertGreaterEqual(gap, 6.5)
            self.assertLess(gap, 15)
            # B's own attempts time out (10 s sleep, 2 s timeout): dead after 3.
            st = wait_for(lambda: job_state(job_id)[0] == "dead" and job_state(job_id),
                          timeout=15, what="dead after timeouts")
            self.assertEqual(st[1:3], ["3", "timed out after 2s"])
            self.assertIn("finished after its 2s timeout", wait_for(
                lambda: "finished after its" in b.stdout() and b.stdout(), timeout=15,
                what="late rx_job_done ignored"))
            b.stop(timeout=30)
        finally:
            a.cleanup()
            if b is not None:
                b.cleanup()

    def test_sigterm_waits_for_running_jobs(self):
        s = JobServer(env={"RXD_JOBKIT_INSTANCE": "graceful"}).start()
        try:
            # 1 s in the database (timeout 5 s): the pool must stay up until it is done.
            job_id = enqueue_sql("jobkit.dbsleep", '{"seconds": 1}')
            wait_for(lambda: runs_of(job_id), timeout=5, what="the job to start")
            s.stop(timeout=20)  # asserts exit 0
            self.assertEqual(job_state(job_id)[:3], ["done", "1", ""], s.stdout()[-3000:])
        finally:
            s.cleanup()


    def test_forced_shutdown_abandons_running_jobs(self):
        s = JobServer(env={"RXD_JOBKIT_INSTANCE": "forced", "RXD_SHUTDOWN_GRACE": "300ms"}).start()
        try:
            job_id = enqueue_sql("jobkit.dbsleep", '{"seconds": 3}')
            wait_for(lambda: runs_of(job_id), timeout=5, what="the job to start")
            s.stop(timeout=20)  # asserts exit 0 (and no sanitizer report)
            self.assertIn("running jobs abandoned at shutdown", s.stdout())
            # No outcome written: its lease expires and a runner takes it again.
            self.assertEqual(job_state(job_id)[:2], ["running", "1"])
        finally:
            s.cleanup()


class Periodic(unittest.TestCase):
    def setUp(self):
        reset()

    def test_two_instances_fire_each_slot_once(self):
        env = {"RXD_JOBKIT_PERIODIC": "true"}
        p1 = JobServer(env=dict(env, RXD_JOBKIT_INSTANCE="P1")).start()
        try:
            p2 = JobServer(env=dict(env, RXD_JOBKIT_INSTANCE="P2")).start()
            try:
                time.sleep(4.5)
            finally:
                p2.stop()
                p2.cleanup()
        finally:
            p1.stop()
            p1.cleanup()
        slots = rows("SELECT slot, count(*) FROM jobkit_runs WHERE task = 'jobkit.tick'"
                     " GROUP BY slot ORDER BY slot")
        self.assertGreaterEqual(len(slots), 4, slots)
        self.assertEqual([s for s, n in slots if n != "1"], [], slots)
        self.assertTrue(all(s.endswith("Z") for s, _ in slots), slots)
        self.assertEqual(q("SELECT count(*) FROM rx_jobs WHERE task = 'jobkit.tick'"),
                         str(len(slots)))
        self.assertEqual(q("SELECT count(*) FROM rx_periodic WHERE name = 'jobkit.tick'"), "1")


class Worker(unittest.TestCase):
    def setUp(self):
        reset()

    def test_worker_runs_jobs_without_http(self):
        w = JobServer(args=("worker", "--migrate"), env={"RXD_JOBKIT_INSTANCE": "worker"})
        w.start()
        try:
            job_id = enqueue_sql("jobkit.ok")
            wait_for(lambda: runs_of(job_id), timeout=5, what="the job on `rxd worker`")
            self.assertEqual(runs_of(job_id), [(1, "worker", "t")])
            with self.assertRaises(OSError):
                socket.create_connection((HOST, w.port), timeout=1).close()
            self.assertNotIn("listening on", w.stdout())
            w.stop()
        finally:
            w.cleanup()


class Registration(unittest.TestCase):
    def check_fails(self, bad, *expected):
        r = cli("check", env={"RXD_JOBKIT_BAD": bad})
        self.assertNotEqual(r.returncode, 0, r.stdout)
        for e in expected:
            self.assertIn(e, r.stderr)

    def test_duplicate_task_names_both_modules(self):
        self.check_fails("dup", "task 'jobkit.ok' is registered twice",
                         "by module 'jobkit' and by module 'jobkit'")

    def test_invalid_interval(self):
        self.check_fails("schedule", "periodic task 'jobkit.bad'", "invalid schedule 'every minute'")

    def test_cron_that_never_fires(self):
        self.check_fails("cron", "invalid schedule '0 0 30 2 *'", "no day ever matches")

    def test_cron_out_of_range(self):
        self.check_fails("range", "minute field '61'", "outside 0-59")


class Cli(unittest.TestCase):
    def test_database_unreachable(self):
        r = cli("jobs", env={"RXD_DATABASE_URL": "postgresql://rxd@127.0.0.1:%d/none"
                             % rxdtest.free_port()})
        self.assertEqual(r.returncode, 1)
        self.assertIn("rxd jobs: cannot connect to the database", r.stderr)

    def test_before_migrations(self):
        url = PG.create_database("jobs_fresh")
        r = cli("jobs", env={"RXD_DATABASE_URL": url})
        self.assertEqual(r.returncode, 1)
        self.assertIn("run `rxd migrate`", r.stderr)

    def test_usage(self):
        r = cli("jobs", "--what")
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: rxd jobs", r.stderr)


if __name__ == "__main__":
    unittest.main()
