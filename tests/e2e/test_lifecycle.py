"""End-to-end: the life of an rxd process — graceful shutdown, start-up errors
from modules, the operator commands, the authenticate/authorize hooks and
events through testkit, and several workers under concurrent load."""
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rxdtest import HOST, SOURCE_DIR, TEST_MODULES, Server, ServerTestCase, build_request, run_cli  # noqa: E402

TESTKIT_PATHS = ["/test/echo/", "/test/items/{id}/", "/test/items/{id}/sub/{name}/",
                 "/test/items/special/", "/test/json/", "/test/upload/", "/test/list/",
                 "/test/array/", "/test/slow/", "/test/public-whoami/", "/test/whoami/",
                 "/test/admin/", "/test/nobody/", "/test/keys-only/", "/test/noreply/",
                 "/test/emit/"]


def refused(port, timeout=1.0):
    """True when a new connection is refused, or accepted and closed unserved."""
    try:
        s = socket.create_connection((HOST, port), timeout=timeout)
    except ConnectionRefusedError:
        return True
    try:
        s.sendall(build_request("GET", "/healthz", {"Connection": "close"}))
        data = s.recv(100)
        return not data.startswith(b"HTTP/1.1 200")
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


class GracefulShutdown(unittest.TestCase):
    def test_in_flight_request_completes_and_new_connections_are_refused(self):
        s = Server()
        try:
            s.start()
            c = s.conn(timeout=10)
            self.addCleanup(c.close)
            # The slow reply leaves room for a loaded machine (CI runs suites in parallel,
            # under ASan): refusal must still come well before the reply.
            c.send(build_request("GET", "/test/slow/?ms=4000"))
            time.sleep(0.3)  # the request is now sleeping on the pool
            signalled = time.monotonic()
            s.signal(signal.SIGTERM)
            deadline = time.monotonic() + 2.5
            while not refused(s.port):
                self.assertLess(time.monotonic(), deadline, "new connections still served after SIGTERM")
                time.sleep(0.02)
            self.assertLess(time.monotonic() - signalled, 3.0)  # well before the slow reply
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"slept_ms": 4000})
            self.assertEqual(c.wait_closed(timeout=3), b"")
            self.assertEqual(s.wait(timeout=5), 0, s.output())
            self.assertLess(time.monotonic() - signalled, 4.0)
        finally:
            s.cleanup()

    def test_idle_connections_do_not_hold_up_shutdown(self):
        s = Server()
        try:
            s.start()
            c = s.conn()
            self.addCleanup(c.close)
            self.assertEqual(c.request("GET", "/test/items/1/").status, 200)
            signalled = time.monotonic()
            s.signal(signal.SIGTERM)
            self.assertEqual(c.wait_closed(timeout=3), b"")
            self.assertEqual(s.wait(timeout=5), 0, s.output())
            self.assertLess(time.monotonic() - signalled, 2.0)
        finally:
            s.cleanup()

    def test_grace_exceeded_still_exits_0_promptly(self):
        s = Server(env={"RXD_SHUTDOWN_GRACE": "500ms"})
        try:
            s.start()
            c = s.conn(timeout=10)
            self.addCleanup(c.close)
            c.send(build_request("GET", "/test/slow/?ms=3000"))
            time.sleep(0.2)
            signalled = time.monotonic()
            s.signal(signal.SIGTERM)
            self.assertEqual(s.wait(timeout=10), 0, s.output())
            took = time.monotonic() - signalled
            self.assertLess(took, 2.0, "exit took %.1f s with shutdown_grace=500ms" % took)
            data = c.wait_closed(timeout=3)
            self.assertFalse(data.startswith(b"HTTP/1.1 200"), data)
        finally:
            s.cleanup()


class StartupErrors(unittest.TestCase):
    def serve_fails(self, modules, env=None):
        r = run_cli("serve", modules=modules, env=env)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertNotIn("listening", r.stdout)
        return r.stderr

    def test_wrong_abi(self):
        err = self.serve_fails("badabi")
        self.assertIn("'badabi'", err)
        with open(os.path.join(SOURCE_DIR, "sdk", "rx.h")) as f:
            header = f.read()
        major = int(re.search(r"#define RX_ABI_MAJOR (\d+)", header).group(1))
        minor = int(re.search(r"#define RX_ABI_MINOR (\d+)", header).group(1))
        self.assertIn("built for SDK ABI %d.0" % (major + 1), err)  # the module's ABI
        self.assertIn("this rxd has ABI %d.%d" % (major, minor), err)  # rxd's ABI

    def test_missing_requirement(self):
        for modules in ("testkit needy", "needy testkit"):
            err = self.serve_fails(modules)
            self.assertRegex(err, r"'needy' requires (module )?'nosuchmodule'.*not enabled")

    def test_missing_shared_object(self):
        err = self.serve_fails("testkit nosuchfile")
        self.assertIn("'nosuchfile'", err)
        self.assertIn(os.path.join(TEST_MODULES, "nosuchfile.so"), err)

    def test_init_failure_gives_the_reason(self):
        err = self.serve_fails("failinit")
        self.assertIn("'failinit'", err)
        self.assertIn("init failed", err)
        self.assertIn("failinit.mode is 'fail'; this module always fails", err)

    def test_duplicate_route_names_both_modules(self):
        err = self.serve_fails("testkit failinit", env={"RXD_FAILINIT_MODE": "dup"})
        self.assertIn("duplicate route", err)
        self.assertIn("'failinit'", err)
        self.assertIn("'testkit'", err)
        self.assertIn("/test/echo/", err)


class Commands(unittest.TestCase):
    def test_check_good_config(self):
        r = run_cli("check", config="workers = 2\n[cors]\nallowed_origins = https://a.example\n")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("ok", r.stdout)
        self.assertIn("testkit", r.stdout)

    def test_check_unknown_key_names_file_and_line(self):
        r = run_cli("check", config="workers = 2\n\n[limits]\nbodyy = 1k\n")
        self.assertNotEqual(r.returncode, 0, r)
        self.assertRegex(r.stderr, r"rxd\.conf:4\b")
        self.assertIn("bodyy", r.stderr)

    def test_check_bad_value(self):
        r = run_cli("check", env={"RXD_WORKERS": "abc"})
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn("RXD_WORKERS", r.stderr)
        self.assertIn("abc", r.stderr)
        r = run_cli("check", config="[timeouts]\nheader = soon\n")
        self.assertNotEqual(r.returncode, 0, r)
        self.assertRegex(r.stderr, r"rxd\.conf:2\b")
        self.assertIn("soon", r.stderr)

    def test_routes_lists_testkit_under_its_heading(self):
        r = run_cli("routes")
        self.assertEqual(r.returncode, 0, r)
        sections = {}
        for block in r.stdout.strip().split("\n\n"):
            head, *lines = block.splitlines()
            sections[head.split()[0]] = "\n".join(lines)
        self.assertIn("testkit", sections, r.stdout)
        for path in TESTKIT_PATHS:
            self.assertRegex(sections["testkit"], r"\s%s\s" % re.escape(path))
        self.assertNotIn("/healthz", sections["testkit"])
        self.assertRegex(sections["testkit"], r"/test/admin/\s+testkit\.admin")

    def test_openapi_prints_the_served_document(self):
        r = run_cli("openapi")
        self.assertEqual(r.returncode, 0, r)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["openapi"], "3.1.0")
        self.assertIn("/test/json/", doc["paths"])
        with Server() as s:
            self.assertEqual(s.get("/api/schema/").json(), doc)

    def test_version(self):
        r = run_cli("version", config=None)
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout.splitlines()[0], r"^rxd \d+\.\d+\.\d+")

    def test_unknown_command(self):
        r = run_cli("frobnicate")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("frobnicate", r.stderr)
        self.assertIn("usage:", r.stderr)


class Auth(ServerTestCase):
    def test_admin_role_is_allowed(self):
        r = self.get("/test/admin/", headers={"Authorization": "Bearer user-3-ADMIN"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"kind": 1, "user_id": 3, "role": "ADMIN"})

    def test_other_role_is_403(self):
        r = self.get("/test/admin/", headers={"Authorization": "Bearer user-3-USER"})
        self.assertError(r, 403, "permission_denied", "You do not have permission to perform this action.")

    def test_no_credential_is_401(self):
        r = self.get("/test/whoami/")
        self.assertError(r, 401, "not_authenticated", "Authentication credentials were not provided.")
        self.assertEqual(r.header("www-authenticate"), 'Bearer realm="api"')

    def test_bad_token_is_401(self):
        r = self.get("/test/whoami/", headers={"Authorization": "Bearer not-a-token"})
        self.assertError(r, 401, "token_not_valid", "Given token not valid for any token type")
        self.assertEqual(r.header("www-authenticate"), 'Bearer realm="api"')

    def test_good_token_on_protected_route(self):
        r = self.get("/test/whoami/", headers={"Authorization": "Bearer user-8-USER"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"kind": 1, "user_id": 8, "role": "USER"})

    def test_bad_token_on_public_route_is_anonymous(self):
        r = self.get("/test/public-whoami/", headers={"Authorization": "Bearer not-a-token"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["kind"], 0)
        r = self.get("/test/public-whoami/", headers={"Authorization": "Bearer user-5-USER"})
        self.assertEqual(r.json()["kind"], 1)
        self.assertEqual(r.json()["user_id"], 5)

    def test_permission_no_hook_allows_is_denied(self):
        r = self.get("/test/nobody/", headers={"Authorization": "Bearer user-3-ADMIN"})
        self.assertError(r, 403, "permission_denied")

    def test_keys_only_route_refuses_bearer(self):
        r = self.get("/test/keys-only/", headers={"Authorization": "Bearer user-3-ADMIN"})
        self.assertEqual(r.status, 403, r)

    def test_keys_only_route_without_credential(self):
        r = self.get("/test/keys-only/")
        self.assertError(r, 401, "not_authenticated")
        self.assertTrue(r.header("www-authenticate", "").startswith("ApiKey"), r)

    def test_events_reach_the_subscriber(self):
        a = self.server.request("POST", "/test/emit/").json()
        b = self.server.request("POST", "/test/emit/").json()
        self.assertEqual(a["subscribers"], 1)
        self.assertEqual(b["subscribers"], 1)
        self.assertEqual(b["seen"], a["seen"] + 1)


class Workers(ServerTestCase):
    WORKERS = 2

    def test_two_workers_share_one_port(self):
        self.assertRegex(self.server.stdout(), r"with 2 workers")
        for i in range(50):
            r = self.get("/test/items/%d/" % (i + 1))
            self.assertEqual((r.status, r.json()["id"]), (200, i + 1))
        metrics = self.get("/metrics").body.decode()
        self.assertRegex(metrics, r"(?m)^rxd_workers 2$")

    def test_200_connections_with_20_keep_alive_requests_each(self):
        errors = []
        ok = [0]
        lock = threading.Lock()
        start = threading.Barrier(200, timeout=20)

        def client(n):
            try:
                with self.server.conn(timeout=20) as c:
                    start.wait()
                    for i in range(20):
                        if i % 4 == 3:
                            body = b'{"n":%d,"i":%d}' % (n, i)
                            r = c.request("POST", "/test/echo/", {"Content-Type": "application/json"},
                                          body)
                            good = r.status == 200 and r.json()["body"] == body.decode()
                        else:
                            r = c.request("GET", "/test/items/%d/" % (n * 100 + i + 1))
                            good = r.status == 200 and r.json()["id"] == n * 100 + i + 1
                        if not good:
                            raise AssertionError("client %d request %d: %r" % (n, i, r))
                        with lock:
                            ok[0] += 1
            except Exception as e:  # collected and reported below
                with lock:
                    errors.append("client %d: %r" % (n, e))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(ok[0], 200 * 20)


if __name__ == "__main__":
    unittest.main()
