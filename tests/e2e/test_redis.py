"""End-to-end: the kernel's Redis client as a client of rxd sees it, through the
rediskit test module (tests/modules/rediskit.c) and a private redis-server
(redistemp.py): commands, readiness, an outage and the recovery after it, the
command timeout, the rate limiter shared by two instances, pub/sub across
instances, and the ratelimit.enabled / not-configured switches.

Every rxd is stopped with SIGTERM and must exit 0 with no sanitizer report on
stderr (run with RXD_BIN/RXD_TEST_MODULES of a -DRXD_SANITIZE=ON build to get
ASan/UBSan/LSan checks)."""
import json
import os
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgtemp  # noqa: E402
from rxdtest import Server, free_port, run_cli  # noqa: E402
from redistemp import RedisTemp  # noqa: E402

UNAVAILABLE = {"detail": "Service temporarily unavailable.", "code": "service_unavailable"}
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


PG = None  # serve refuses to start without its (kernel) migrations checked


def setUpModule():
    global PG
    PG = pgtemp.PgTemp()
    try:
        r = run_cli("migrate", env={"RXD_DATABASE_URL": PG.url()}, modules="rediskit")
        if r.returncode != 0:
            raise AssertionError("rxd migrate failed:\n%s%s" % (r.stdout, r.stderr))
    except BaseException:
        PG.cleanup()
        raise


def tearDownModule():
    PG.cleanup()


def start_rxd(redis_url=None, env=None, workers=2):
    overrides = {"RXD_REDIS_TIMEOUT": "1s", "RXD_DATABASE_URL": PG.url()}
    if redis_url is not None:
        overrides["RXD_REDIS_URL"] = redis_url
    overrides.update(env or {})
    s = Server("", overrides, modules="rediskit", workers=workers)
    try:
        s.start()
    except BaseException:
        s.cleanup()
        raise
    return s


def stop_rxd(s):
    """SIGTERM; rxd must exit 0 and leave no sanitizer report."""
    try:
        s.stop()
        err = s.stderr()
        for marker in SANITIZER_MARKERS:
            if marker in err:
                raise AssertionError("sanitizer report in rxd's stderr:\n" + err)
    finally:
        s.cleanup()


def stop_all(servers, redis=None):
    """Stop every server (and then Redis) even when one of them fails; raise the first failure."""
    first = None
    for s in servers:
        if s is None:
            continue
        try:
            stop_rxd(s)
        except BaseException as e:  # keep stopping the others
            first = first or e
    if redis is not None:
        redis.cleanup()
    if first is not None:
        raise first


def uid():
    return uuid.uuid4().hex[:12]


class RedisCase(unittest.TestCase):
    def post(self, server, path, body=None, **kw):
        return server.request("POST", path, body=body, **kw)

    def assertUnavailable(self, r):
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json(), UNAVAILABLE)
        retry = r.header("retry-after")
        self.assertIsNotNone(retry, r)
        self.assertGreaterEqual(int(retry), 1)

    def redis_check(self, server):
        r = server.get("/readyz")
        return r, r.json()["checks"].get("redis")


class Commands(RedisCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = RedisTemp().start()
        try:
            cls.server = start_rxd(cls.redis.url(db=1))
        except BaseException:
            cls.redis.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        stop_all([cls.server], cls.redis)

    def test_set_get_incr_round_trip(self):
        key = "k-" + uid()
        r = self.post(self.server, "/test/redis/set/", {"key": key, "value": "caf\u00e9 au lait"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"ok": True})
        r = self.server.get("/test/redis/get/%s/" % key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"key": key, "value": "caf\u00e9 au lait"})
        # The URL's database (/1) was selected: the key is there, not in db 0.
        self.assertEqual(self.redis.command("GET", "rediskit:" + key, db=1), "caf\u00e9 au lait".encode())
        self.assertIsNone(self.redis.command("GET", "rediskit:" + key, db=0))
        counter = "n-" + uid()
        for expected in (1, 2, 3):
            r = self.post(self.server, "/test/redis/incr/%s/" % counter)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"value": expected})

    def test_set_with_ttl_expires(self):
        key = "t-" + uid()
        r = self.post(self.server, "/test/redis/set/", {"key": key, "value": "x", "ttl": 100})
        self.assertEqual(r.status, 200, r)
        pttl = self.redis.command("PTTL", "rediskit:" + key, db=1)
        self.assertGreater(pttl, 90000)
        self.assertLessEqual(pttl, 100000)

    def test_missing_key_is_404(self):
        r = self.server.get("/test/redis/get/missing-%s/" % uid())
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json(), {"detail": "Not found.", "code": "not_found"})

    def test_redis_error_reply_reaches_the_handler(self):
        key = "s-" + uid()
        self.assertEqual(self.post(self.server, "/test/redis/set/", {"key": key, "value": "abc"}).status, 200)
        r = self.post(self.server, "/test/redis/incr/%s/" % key)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json()["code"], "redis_error")
        self.assertIn("not an integer", r.json()["detail"])

    def test_readyz_reports_redis_ok(self):
        r, check = self.redis_check(self.server)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(check, {"status": "ok"})

    def test_sdk_refuses_late_subscribe_and_connection_state_commands(self):
        r = self.server.get("/test/redis/contract/")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertTrue(body["late_subscribe"].startswith("RX_ESTATE"), body)
        self.assertTrue(body["subscribe_command"].startswith("RX_EINVAL"), body)
        self.assertTrue(body["select_command"].startswith("RX_EINVAL"), body)

    def test_concurrent_increments_are_all_counted(self):
        key = "c-" + uid()
        statuses = []
        lock = threading.Lock()

        def worker():
            for _ in range(10):
                st = self.post(self.server, "/test/redis/incr/%s/" % key).status
                with lock:
                    statuses.append(st)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(statuses, [200] * 80)
        self.assertEqual(self.redis.command("GET", "rediskit:" + key, db=1), b"80")

    def test_command_timeout_answers_503_and_the_next_command_works(self):
        # One keep-alive connection: both requests are served by the same worker,
        # whose Redis connection the timeout tore down.
        with self.server.conn(timeout=10) as c:
            t0 = time.monotonic()
            r = c.request("GET", "/test/redis/block/")
            elapsed = time.monotonic() - t0
            self.assertUnavailable(r)
            self.assertEqual(r.header("x-redis-error"), "timeout")
            self.assertGreaterEqual(elapsed, 0.9)
            self.assertLess(elapsed, 2.5)
            key = "after-timeout-" + uid()
            r = c.request("POST", "/test/redis/incr/%s/" % key)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(json.loads(r.body), {"value": 1})
        self.assertIsNone(self.server.proc.poll())


class Outage(RedisCase):
    def setUp(self):
        self.redis = RedisTemp().start()
        try:
            self.server = start_rxd(self.redis.url(db=1))
        except BaseException:
            self.redis.cleanup()
            raise

    def tearDown(self):
        stop_all([self.server], self.redis)

    def redis_routes(self):
        b = "o-" + uid()
        return [("GET", "/test/redis/get/%s/" % b, None),
                ("POST", "/test/redis/incr/%s/" % b, None),
                ("POST", "/test/redis/set/", {"key": b, "value": "v"}),
                ("GET", "/test/ratelimit/%s/?limit=5&window=60" % b, None),
                ("POST", "/test/publish/rediskit/", b"during outage")]

    def test_outage_answers_503_quickly_and_service_resumes_by_itself(self):
        key = "before-" + uid()
        self.assertEqual(self.post(self.server, "/test/redis/set/", {"key": key, "value": "1"}).status, 200)

        self.redis.stop()
        for _ in range(3):  # several rounds: both workers, all kinds of calls
            for method, path, body in self.redis_routes():
                t0 = time.monotonic()
                r = self.server.request(method, path, body=body, timeout=5)
                # At once, not after redis.timeout (1 s): nothing waits on a dead server.
                self.assertLess(time.monotonic() - t0, 0.5, "%s %s hung" % (method, path))
                self.assertUnavailable(r)
        r, check = self.redis_check(self.server)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(check, {"status": "fail", "reason": "redis unreachable"})
        self.assertEqual(self.server.get("/healthz").status, 200)
        self.assertIsNone(self.server.proc.poll(), "rxd died during the outage")

        self.redis.start()  # same port, empty data
        deadline = time.monotonic() + 10
        ok_in_a_row = 0
        while ok_in_a_row < 10:  # fresh connections: every worker must be back
            self.assertLess(time.monotonic(), deadline, "Redis routes did not recover within 10 s")
            r = self.post(self.server, "/test/redis/set/", {"key": key, "value": "2"})
            if r.status == 200:
                ok_in_a_row += 1
            else:
                self.assertUnavailable(r)
                ok_in_a_row = 0
                time.sleep(0.1)
        r = self.server.get("/test/redis/get/%s/" % key)
        self.assertEqual(r.json(), {"key": key, "value": "2"})
        r, check = self.redis_check(self.server)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(check, {"status": "ok"})
        # Both workers subscribed again: a message is delivered once per worker.
        while True:
            probe = "back-" + uid()
            self.assertEqual(self.post(self.server, "/test/publish/rediskit/", probe.encode()).status, 202)
            time.sleep(0.2)
            got = [m for m in self.server.get("/test/messages/").json()["messages"] if m["message"] == probe]
            if len(got) == 2:
                break
            self.assertLess(time.monotonic(), deadline + 5, "subscriptions did not come back")
        self.assertIsNone(self.server.proc.poll())


class TwoInstances(RedisCase):
    """Two rxd processes on one Redis, as behind a load balancer."""

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisTemp().start()
        cls.a = cls.b = None
        try:
            cls.a = start_rxd(cls.redis.url(db=1))
            cls.b = start_rxd(cls.redis.url(db=1))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        stop_all([cls.a, cls.b], cls.redis)

    def limit(self, server, bucket, limit=5, window=60):
        return server.get("/test/ratelimit/%s/?limit=%d&window=%d" % (bucket, limit, window))

    def test_rate_limit_is_shared_by_both_instances(self):
        bucket = "shared-" + uid()
        order = [self.a, self.b, self.a, self.b, self.a]
        for i, server in enumerate(order):
            r = self.limit(server, bucket)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"allowed": True, "remaining": 4 - i, "retry_after": 0})
        for server in (self.b, self.a):
            r = self.limit(server, bucket)
            self.assertEqual(r.status, 429, r)
            body = r.json()
            self.assertEqual(body["code"], "throttled")
            self.assertIsInstance(body["detail"], str)
            retry = int(r.header("retry-after"))
            self.assertGreaterEqual(retry, 1)
            self.assertLessEqual(retry, 60)
        # Expiry equals the window: an idle bucket leaves nothing behind.
        pttl = self.redis.command("PTTL", "rx:rl:rediskit:" + bucket, db=1)
        self.assertGreater(pttl, 0)
        self.assertLessEqual(pttl, 60000)

    def test_sliding_window_frees_a_slot_after_the_window(self):
        bucket = "slide-" + uid()
        self.assertEqual(self.limit(self.a, bucket, 2, 1).status, 200)
        self.assertEqual(self.limit(self.b, bucket, 2, 1).status, 200)
        r = self.limit(self.a, bucket, 2, 1)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.header("retry-after"), "1")
        time.sleep(1.1)
        r = self.limit(self.b, bucket, 2, 1)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json()["allowed"])

    def test_flushed_script_cache_is_survived(self):
        # EVALSHA answers NOSCRIPT after SCRIPT FLUSH: the limiter falls back to EVAL.
        bucket = "flush-" + uid()
        self.assertEqual(self.redis.command("SCRIPT", "FLUSH"), "OK")
        for server, remaining in ((self.a, 2), (self.b, 1), (self.a, 0)):
            r = self.limit(server, bucket, 3, 60)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["remaining"], remaining)
        self.assertEqual(self.limit(self.b, bucket, 3, 60).status, 429)

    def test_bad_limit_is_refused(self):
        r = self.a.get("/test/ratelimit/x/?limit=0&window=60")
        self.assertEqual(r.status, 400, r)

    def messages(self, server, text):
        r = server.get("/test/messages/")
        self.assertEqual(r.status, 200, r)
        return [m for m in r.json()["messages"] if m == {"channel": "rediskit", "message": text}]

    def publish(self, server, text):
        r = self.post(server, "/test/publish/rediskit/", text.encode())
        self.assertEqual(r.status, 202, r)
        self.assertEqual(r.json(), {"published": True})

    def wait_delivered(self, text, timeout):
        """Until each instance got `text` once per worker (2); returns the counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = (len(self.messages(self.a, text)), len(self.messages(self.b, text)))
            if counts == (2, 2) or time.monotonic() > deadline:
                return counts
            time.sleep(0.05)

    def test_publish_reaches_every_worker_of_both_instances(self):
        # Subscriptions are made when workers start: wait until all four are live.
        deadline = time.monotonic() + 5
        while True:
            probe = "probe-" + uid()
            self.publish(self.a, probe)
            if self.wait_delivered(probe, 0.5) == (2, 2):
                break
            self.assertLess(time.monotonic(), deadline, "subscribers never became ready")
        text = "h\u00e9llo from A " + uid()
        self.publish(self.a, text)
        self.assertEqual(self.wait_delivered(text, 3), (2, 2))
        text = "and from B " + uid()
        self.publish(self.b, text)
        self.assertEqual(self.wait_delivered(text, 3), (2, 2))
        # Other channels are not delivered to the "rediskit" subscriber.
        other = "elsewhere-" + uid()
        r = self.post(self.a, "/test/publish/other/", other.encode())
        self.assertEqual(r.status, 202, r)
        time.sleep(0.2)
        self.assertEqual(self.messages(self.a, other) + self.messages(self.b, other), [])


class Auth(RedisCase):
    """A Redis with a password: redis://:pw@host and redis://user:pw@host log in;
    a wrong password is a readiness failure, and no password ever reaches a log."""
    PASSWORD = "s3cret-" + uid()

    @classmethod
    def setUpClass(cls):
        cls.redis = RedisTemp(password=cls.PASSWORD).start()
        cls.servers = []
        try:
            port = cls.redis.port
            for url in ("redis://:%s@127.0.0.1:%d/2" % (cls.PASSWORD, port),
                        "redis://default:%s@127.0.0.1:%d/2" % (cls.PASSWORD, port),
                        "redis://:wrong-%s@127.0.0.1:%d/2" % (cls.PASSWORD, port)):
                cls.servers.append(start_rxd(url))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        stop_all(cls.servers, cls.redis)

    def test_right_password_works(self):
        for server in self.servers[:2]:
            key = "auth-" + uid()
            r = self.post(server, "/test/redis/set/", {"key": key, "value": "ok"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(self.redis.command("GET", "rediskit:" + key, db=2), b"ok")
            r, check = self.redis_check(server)
            self.assertEqual(check, {"status": "ok"})

    def test_wrong_password_is_unavailable_and_not_ready(self):
        bad = self.servers[2]
        self.assertUnavailable(bad.get("/test/redis/get/x/"))
        r, check = self.redis_check(bad)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(check["status"], "fail")
        self.assertTrue(any("handshake refused" in l.get("msg", "") for l in bad.log_lines()),
                        bad.stdout())

    def test_no_password_in_logs(self):
        for s in self.servers:
            self.assertNotIn(self.PASSWORD, s.stdout() + s.stderr())


class Shutdown(RedisCase):
    def test_sigterm_with_a_command_in_flight_exits_cleanly(self):
        # The grace period ends while BLPOP still waits (redis.timeout 5 s): the
        # worker closes the client, fails the command and closes its handles.
        with RedisTemp() as redis:
            server = start_rxd(redis.url(db=1), env={"RXD_REDIS_TIMEOUT": "5s",
                                                    "RXD_SHUTDOWN_GRACE": "300ms"})
            try:
                c = server.conn(timeout=10)
                c.send(b"GET /test/redis/block/ HTTP/1.1\r\nHost: x\r\n\r\n")
                time.sleep(0.3)
                t0 = time.monotonic()
                server.signal()
                self.assertEqual(c.wait_closed(timeout=5), b"")
                c.close()
                self.assertEqual(server.wait(timeout=5), 0, server.output())
                self.assertLess(time.monotonic() - t0, 3)
                err = server.stderr()
                for marker in SANITIZER_MARKERS:
                    self.assertNotIn(marker, err)
            finally:
                server.kill()
                server.cleanup()


class RateLimitDisabled(RedisCase):
    """ratelimit.enabled = false: everything allowed without Redis (here: none)."""

    @classmethod
    def setUpClass(cls):
        cls.server = start_rxd("redis://127.0.0.1:%d/1" % free_port(),
                               env={"RXD_RATELIMIT_ENABLED": "false"})

    @classmethod
    def tearDownClass(cls):
        stop_rxd(cls.server)

    def test_every_event_is_allowed(self):
        for _ in range(10):
            r = self.server.get("/test/ratelimit/off/?limit=1&window=60")
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.json()["allowed"])

    def test_redis_really_is_unreachable(self):
        self.assertUnavailable(self.server.get("/test/redis/get/x/"))
        r, check = self.redis_check(self.server)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(check["status"], "fail")


class NotConfigured(RedisCase):
    """No redis.url: what needs Redis answers 503; readiness is not affected."""

    @classmethod
    def setUpClass(cls):
        cls.server = start_rxd(None)

    @classmethod
    def tearDownClass(cls):
        stop_rxd(cls.server)

    def test_redis_routes_answer_503(self):
        self.assertUnavailable(self.server.get("/test/redis/get/x/"))
        self.assertUnavailable(self.server.get("/test/ratelimit/x/?limit=5&window=60"))
        self.assertUnavailable(self.post(self.server, "/test/publish/rediskit/", b"x"))

    def test_ready_and_logged_once(self):
        r, check = self.redis_check(self.server)
        self.assertEqual(check, {"status": "ok"})
        lines = [l for l in self.server.log_lines() if "redis: not configured" in l.get("msg", "")]
        self.assertEqual(len(lines), 1, self.server.stdout())


if __name__ == "__main__":
    unittest.main()
