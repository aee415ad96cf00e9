"""End-to-end: the HTTP/1.1 behaviour of rxd as a client sees it, over the
testkit module (tests/modules/testkit.c): connections, limits, timeouts, the
API.md conventions (errors, JSON bodies, paging, CORS, headers), logs, metrics
and the OpenAPI document."""
import json
import os
import re
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rxdtest import Conn, Server, ServerTestCase, build_request, run_cli  # noqa: E402

ORIGIN = "https://app.example"
OTHER_ORIGIN = "https://admin.example"

# limits and timeouts small enough to reach quickly; CORS for two origins.
CONFIG = """\
[limits]
header_bytes = 4k
body = 1k

[timeouts]
header = 1s
keepalive = 1s

[cors]
allowed_origins = %s %s
allow_credentials = true
""" % (ORIGIN, OTHER_ORIGIN)

SANE_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def metric(text, name, **labels):
    """The value of one Prometheus sample, 0 when absent."""
    want = "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in labels.items()))
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


class Connections(ServerTestCase):
    CONFIG = CONFIG

    def test_keep_alive_serves_several_requests_on_one_connection(self):
        with self.server.conn() as c:
            port = c.sock.getsockname()[1]
            for i in range(1, 6):
                r = c.request("GET", "/test/items/%d/" % i)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json(), {"id": i, "name": ""})
                self.assertNotEqual((r.header("connection") or "").lower(), "close")
            self.assertEqual(c.sock.getsockname()[1], port)
            self.assertFalse(c.is_closed(timeout=0.2))

    def test_connection_close_is_honoured(self):
        with self.server.conn() as c:
            r = c.request("GET", "/test/items/1/", headers={"Connection": "close"})
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["id"], 1)
            self.assertEqual(c.wait_closed(timeout=3), b"")

    def test_http10_without_keep_alive_is_closed(self):
        with self.server.conn() as c:
            c.send(b"GET /test/items/2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.json()["id"], 2)
            self.assertEqual(c.wait_closed(timeout=3), b"")

    def test_pipelined_requests_answer_complete_and_in_order(self):
        reqs = [("GET", "/test/items/1/", b""),
                ("GET", "/test/slow/?ms=200", b""),
                ("GET", "/test/items/3/", b""),
                ("POST", "/test/echo/", b"pipelined body"),
                ("HEAD", "/test/items/5/", b""),
                ("GET", "/test/items/6/", b"")]
        wire = b"".join(build_request(m, p, {"Content-Type": "application/json"} if b else None, b)
                        for m, p, b in reqs)
        with self.server.conn() as c:
            c.send(wire)
            rs = c.read_responses([m for m, _, _ in reqs])
            self.assertEqual([r.status for r in rs], [200] * 6)
            self.assertEqual(rs[0].json()["id"], 1)
            self.assertEqual(rs[1].json(), {"slept_ms": 200})
            self.assertEqual(rs[2].json()["id"], 3)
            self.assertEqual(rs[3].json()["body"], "pipelined body")
            self.assertEqual(rs[3].json()["method"], "POST")
            self.assertEqual(rs[4].body, b"")
            self.assertEqual(rs[5].json()["id"], 6)
            # nothing extra was sent, and the connection is still usable
            self.assertEqual(c.buf, b"")
            self.assertEqual(c.request("GET", "/test/items/7/").json()["id"], 7)

    def test_chunked_request_body(self):
        with self.server.conn() as c:
            c.send(b"POST /test/upload/ HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            c.send(b"400\r\n" + b"a" * 0x400 + b"\r\n")
            c.send(b"7;ext=1\r\nabcdefg\r\n")
            c.send(b"0\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"received": 1031})
            # the connection goes on after a chunked body
            self.assertEqual(c.request("GET", "/test/items/8/").json()["id"], 8)

    def test_chunked_json_body_over_the_limit_is_413(self):
        body = json.dumps({"name": "x" * 2000}).encode()
        with self.server.conn() as c:
            c.send(b"POST /test/json/ HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for i in range(0, len(body), 500):
                    part = body[i:i + 500]
                    c.send(b"%x\r\n%s\r\n" % (len(part), part))
                c.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before the end
            r = c.read_response()
        self.assertError(r, 413, r.json().get("code"))

    def test_expect_100_continue(self):
        with self.server.conn() as c:
            c.send(b"POST /test/upload/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n"
                   b"Content-Type: application/octet-stream\r\nExpect: 100-continue\r\n\r\n")
            interim = c.read_head()
            self.assertEqual(interim.status, 100)
            self.assertEqual(interim.version, "HTTP/1.1")
            c.send(b"hello world")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), {"received": 11})

    def test_expect_100_continue_over_the_limit_is_413_without_the_body(self):
        with self.server.conn() as c:
            c.send(b"POST /test/json/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n"
                   b"Content-Type: application/json\r\nExpect: 100-continue\r\n\r\n")
            r = c.read_response()  # the final answer comes first, no 100
            self.assertError(r, 413, r.json().get("code"))

    def test_idle_keep_alive_connection_is_closed_silently(self):
        with self.server.conn() as c:
            self.assertEqual(c.request("GET", "/test/items/1/").status, 200)
            start = time.monotonic()
            self.assertTrue(c.is_closed(timeout=4), "idle connection still open after 4 s")
            self.assertLess(time.monotonic() - start, 3.5)

    def test_incomplete_header_block_times_out_with_408(self):
        with self.server.conn() as c:
            c.send(b"GET /test/items/1/ HTTP/1.1\r\nHost: loc")
            start = time.monotonic()
            c.sock.settimeout(5)
            r = c.read_response()
            self.assertEqual(r.status, 408, r)
            self.assertGreater(time.monotonic() - start, 0.5)
            self.assertEqual(c.wait_closed(timeout=3), b"")

    def test_malformed_request_line_is_400_and_closed(self):
        # a request line without target and version, a TLS ClientHello sent to
        # the plain port, a target with spaces, a bad version
        for raw in (b"GET\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                    b"GET /a b c HTTP/1.1\r\n\r\n", b"GET /test/items/1/ HTTX/1.1\r\n\r\n"):
            with self.subTest(raw=raw), self.server.conn() as c:
                c.send(raw)
                r = c.read_response()
                self.assertEqual(r.status, 400, r)
                self.assertIn("code", r.json())
                self.assertEqual(c.wait_closed(timeout=3), b"")

    def test_malformed_header_line_is_400_and_closed(self):
        with self.server.conn() as c:
            c.send(b"GET /test/items/1/ HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 400, r)
            self.assertEqual(c.wait_closed(timeout=3), b"")


class Limits(ServerTestCase):
    CONFIG = CONFIG

    def test_header_block_over_limit_is_431(self):
        with self.server.conn() as c:
            r = c.request("GET", "/test/items/1/", headers={"X-Big": "a" * 5000})
        self.assertEqual(r.status, 431, r)

    def test_many_headers_over_limit_is_431(self):
        headers = {"X-H%d" % i: "v" * 50 for i in range(100)}
        with self.server.conn() as c:
            r = c.request("GET", "/test/items/1/", headers=headers)
        self.assertEqual(r.status, 431, r)

    def test_header_block_under_limit_is_served(self):
        r = self.get("/test/items/1/", headers={"X-Big": "a" * 3000})
        self.assertEqual(r.status, 200, r)

    def test_json_body_over_limit_is_413_with_error_body(self):
        r = self.server.request("POST", "/test/json/", body={"name": "x" * 2000})
        self.assertError(r, 413, r.json().get("code"))
        self.assertTrue(r.json()["code"])

    def test_json_body_under_limit_is_accepted(self):
        r = self.server.request("POST", "/test/json/", body={"name": "x" * 200})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["received"], {"name": "x" * 200})

    def test_route_limit_overrides_the_default(self):
        body = os.urandom(2 << 20)  # 2 MiB: over limits.body, under the route's 4 MiB
        r = self.server.request("POST", "/test/upload/", body=body,
                                headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"received": 2 << 20})

    def test_route_limit_is_still_a_limit(self):
        with self.server.conn() as c:
            c.send(b"POST /test/upload/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
                   b"Content-Type: application/octet-stream\r\n\r\n" % ((4 << 20) + 1))
            r = c.read_response()
        self.assertError(r, 413, r.json().get("code"))


class MaxConnections(ServerTestCase):
    ENV = {"RXD_MAX_CONNECTIONS": "4"}
    WORKERS = 1

    def test_connections_over_the_limit_are_closed(self):
        conns = [self.server.conn() for _ in range(4)]
        extra = []
        try:
            for i, c in enumerate(conns):
                self.assertEqual(c.request("GET", "/test/items/%d/" % (i + 1)).status, 200)
            extra = [self.server.conn() for _ in range(2)]
            for n, c in enumerate(extra, start=5):
                try:
                    c.send(build_request("GET", "/test/items/9/", {"Connection": "close"}))
                    data = c.wait_closed(timeout=3)
                except (BrokenPipeError, ConnectionResetError):
                    continue
                self.assertFalse(data.startswith(b"HTTP/1.1 2"),
                                 "connection #%d over max_connections=4 was served: %r" % (n, data[:40]))
            for i, c in enumerate(conns):
                self.assertEqual(c.request("GET", "/test/items/%d/" % (i + 1)).status, 200)
            # a freed slot is usable again
            conns.pop().close()
            deadline = time.monotonic() + 3
            while True:
                try:
                    with self.server.conn() as c:
                        if c.request("GET", "/test/items/1/").status == 200:
                            break
                except (ConnectionError, OSError):
                    pass
                if time.monotonic() > deadline:
                    self.fail("a closed connection's slot was not reused")
                time.sleep(0.05)
        finally:
            for c in conns + extra:
                c.close()


class Routing(ServerTestCase):
    CONFIG = CONFIG

    def test_head_has_get_headers_and_no_body(self):
        g = self.get("/test/items/5/")
        with self.server.conn() as c:
            h = c.request("HEAD", "/test/items/5/")
            self.assertEqual(h.status, 200)
            self.assertEqual(h.body, b"")
            self.assertEqual(h.header("content-length"), str(len(g.body)))
            self.assertEqual(h.header("content-type"), g.header("content-type"))
            # no body bytes were sent: the next response parses cleanly
            self.assertEqual(c.request("GET", "/test/items/6/").json()["id"], 6)

    def test_unknown_path_is_404_json(self):
        r = self.get("/no/such/path/")
        self.assertError(r, 404, "not_found", "Not found.")

    def test_wrong_method_is_405_with_allow(self):
        r = self.server.request("DELETE", "/test/items/5/")
        self.assertError(r, 405, "method_not_allowed", 'Method "DELETE" not allowed.')
        allow = {m.strip() for m in r.header("allow", "").split(",")}
        self.assertIn("GET", allow)
        self.assertIn("HEAD", allow)
        self.assertNotIn("DELETE", allow)
        self.assertNotIn("POST", allow)

    def test_missing_trailing_slash_redirects_get(self):
        r = self.get("/test/items/5")
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header("location"), "/test/items/5/")

    def test_trailing_slash_redirect_keeps_the_query(self):
        r = self.get("/test/echo?q=1")
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header("location"), "/test/echo/?q=1")

    def test_missing_trailing_slash_on_post_is_404(self):
        r = self.server.request("POST", "/test/json", body={"name": "a"})
        self.assertError(r, 404, "not_found")

    def test_path_params_are_percent_decoded(self):
        r = self.get("/test/items/abc%20d/sub/caf%C3%A9%20au%20lait/")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"id": "abc d", "name": "caf\u00e9 au lait"})

    def test_non_integer_id_is_404(self):
        self.assertError(self.get("/test/items/abc/"), 404, "not_found")
        self.assertError(self.get("/test/items/0/"), 404, "not_found")

    def test_literal_route_is_served(self):
        r = self.get("/test/items/special/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["route"], "/test/items/special/")

    def test_query_decoding(self):
        r = self.get("/test/echo/?q=a+b%20c%2Bd")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["q"], "a b c+d")
        self.assertEqual(r.json()["path"], "/test/echo/")

    def test_handler_that_never_replies_is_500_json(self):
        r = self.get("/test/noreply/")
        self.assertError(r, 500, r.json().get("code"))
        # the connection-level state is sane afterwards
        self.assertEqual(self.get("/test/items/1/").status, 200)


class Headers(ServerTestCase):
    CONFIG = CONFIG

    def test_request_id_is_echoed_when_sane(self):
        r = self.get("/test/items/1/", headers={"X-Request-Id": "abc-123_X.y"})
        self.assertEqual(r.header("x-request-id"), "abc-123_X.y")

    def test_request_id_is_generated_when_absent(self):
        a = self.get("/test/items/1/").header("x-request-id")
        b = self.get("/test/items/1/").header("x-request-id")
        self.assertRegex(a, SANE_RID)
        self.assertRegex(b, SANE_RID)
        self.assertNotEqual(a, b)

    def test_insane_request_id_is_replaced(self):
        for bad in ("a" * 200, "has space", "semi;colon", "<script>"):
            rid = self.get("/test/items/1/", headers={"X-Request-Id": bad}).header("x-request-id")
            self.assertNotEqual(rid, bad)
            self.assertRegex(rid, SANE_RID)

    def test_early_error_reply_echoes_the_request_id(self):
        # the header block is complete when the body is refused: the id is known
        with self.server.conn() as c:
            c.send(b"POST /test/json/ HTTP/1.1\r\nHost: x\r\nX-Request-Id: early-413\r\n"
                   b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 413)
        self.assertEqual(r.header("x-request-id"), "early-413")
        self.server.wait_access_log(lambda l: l.get("rid") == "early-413")

    def test_early_error_replies_get_distinct_generated_ids(self):
        ids = []
        for raw in (build_request("GET", "/test/items/1/", {"X-Big": "a" * 5000}),
                    build_request("GET", "/test/items/1/", {"X-Big": "b" * 5000}),
                    b"GET /a b c HTTP/1.1\r\n\r\n"):
            with self.server.conn() as c:
                c.send(raw)
                r = c.read_response()
                self.assertIn(r.status, (400, 431), r)
                ids.append(r.header("x-request-id", ""))
        for rid in ids:
            self.assertRegex(rid, SANE_RID)
        self.assertEqual(len(set(ids)), len(ids), "request ids are not unique: %r" % ids)

    def test_request_id_is_in_the_access_log(self):
        self.get("/test/items/42/", headers={"X-Request-Id": "log-me-please-42"})
        line = self.server.wait_access_log(lambda l: l.get("rid") == "log-me-please-42")
        self.assertEqual(line["status"], 200)
        self.assertEqual(line["method"], "GET")
        self.assertEqual(line["path"], "/test/items/42/")

    def test_security_headers_on_every_response(self):
        responses = [self.get("/test/items/1/"), self.get("/no/such/"),
                     self.server.request("DELETE", "/test/items/1/"), self.get("/test/noreply/"),
                     self.server.request("POST", "/test/json/", body=b"x",
                                         headers={"Content-Type": "text/plain"}),
                     self.get("/test/items/1"), self.get("/healthz")]
        for r in responses:
            self.assertEqual(r.header("x-content-type-options"), "nosniff", r)
            self.assertEqual(r.header("server"), "rxd", r)
            self.assertNotIn("x-powered-by", r.headers)
            self.assertRegex(r.header("x-request-id", ""), SANE_RID)
            self.assertIsNotNone(r.header("date"), r)

    def test_access_log_has_no_query_and_no_authorization_value(self):
        self.get("/test/echo/?secret=querysecret123&q=1", headers={"X-Request-Id": "nolog-query"})
        self.get("/test/whoami/", headers={"X-Request-Id": "nolog-auth",
                                           "Authorization": "Bearer user-7-sekrittokenvalue"})
        self.get("/test/whoami/", headers={"X-Request-Id": "nolog-bad",
                                           "Authorization": "Bearer garbagesekritvalue"})
        q = self.server.wait_access_log(lambda l: l.get("rid") == "nolog-query")
        self.assertEqual(q["path"], "/test/echo/")
        self.server.wait_access_log(lambda l: l.get("rid") == "nolog-auth")
        self.server.wait_access_log(lambda l: l.get("rid") == "nolog-bad")
        out = self.server.stdout()
        self.assertNotIn("querysecret123", out)
        self.assertNotIn("sekrittokenvalue", out)
        self.assertNotIn("garbagesekritvalue", out)


class Cors(ServerTestCase):
    CONFIG = CONFIG

    def preflight(self, origin):
        return self.server.request("OPTIONS", "/test/echo/", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})

    def test_preflight_from_allowed_origin(self):
        for origin in (ORIGIN, OTHER_ORIGIN):
            r = self.preflight(origin)
            self.assertIn(r.status, (200, 204), r)
            self.assertEqual(r.header("access-control-allow-origin"), origin)
            self.assertEqual(r.header("access-control-allow-credentials"), "true")
            methods = {m.strip() for m in r.header("access-control-allow-methods", "").split(",")}
            self.assertTrue({"GET", "POST"} <= methods, methods)
            hdrs = {h.strip().lower() for h in r.header("access-control-allow-headers", "").split(",")}
            self.assertTrue({"content-type", "authorization"} <= hdrs, hdrs)
            self.assertGreater(int(r.header("access-control-max-age", "0")), 0)
            self.assertIn("origin", r.header("vary", "").lower())

    def test_preflight_from_unlisted_origin_gets_no_cors(self):
        r = self.preflight("https://evil.example")
        self.assertNotIn("access-control-allow-origin", r.headers)
        self.assertNotIn("access-control-allow-credentials", r.headers)

    def test_get_from_allowed_origin(self):
        r = self.get("/test/items/1/", headers={"Origin": ORIGIN})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("access-control-allow-origin"), ORIGIN)
        self.assertEqual(r.header("access-control-allow-credentials"), "true")
        self.assertIn("origin", r.header("vary", "").lower())
        exposed = {h.strip().lower() for h in r.header("access-control-expose-headers", "").split(",")}
        self.assertTrue({"x-request-id", "x-total-count", "link"} <= exposed, exposed)

    def test_get_from_unlisted_origin(self):
        r = self.get("/test/items/1/", headers={"Origin": "https://app.example.evil.example"})
        self.assertEqual(r.status, 200)
        self.assertNotIn("access-control-allow-origin", r.headers)

    def test_errors_carry_cors_too(self):
        r = self.get("/no/such/", headers={"Origin": ORIGIN})
        self.assertEqual(r.status, 404)
        self.assertEqual(r.header("access-control-allow-origin"), ORIGIN)


class CorsWildcard(unittest.TestCase):
    def test_star_with_credentials_is_refused_at_start_up(self):
        # Echoing every origin with credentials would let any site act as the user.
        r = run_cli("check", env={"RXD_CORS_ALLOWED_ORIGINS": "*",
                                  "RXD_CORS_ALLOW_CREDENTIALS": "true"})
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn("cors.allowed_origins", r.stderr)
        self.assertIn("allow_credentials", r.stderr)

    def test_star_without_credentials_sends_star(self):
        with Server(env={"RXD_CORS_ALLOWED_ORIGINS": "*",
                         "RXD_CORS_ALLOW_CREDENTIALS": "false"}) as s:
            r = s.get("/test/items/1/", headers={"Origin": "https://x.example"})
            self.assertEqual(r.header("access-control-allow-origin"), "*", r)
            self.assertIsNone(r.header("access-control-allow-credentials"), r)
            r = s.request("OPTIONS", "/test/echo/", headers={
                "Origin": "https://x.example", "Access-Control-Request-Method": "GET"})
            self.assertEqual(r.status, 204, r)
            self.assertIn("GET", r.header("access-control-allow-methods"), r)


class JsonBodies(ServerTestCase):
    CONFIG = CONFIG

    def test_text_plain_body_is_415(self):
        r = self.server.request("POST", "/test/json/", body=b'{"name":"a"}',
                                headers={"Content-Type": "text/plain"})
        self.assertError(r, 415, "unsupported_media_type",
                         'Unsupported media type "text/plain" in request.')

    def test_body_without_content_type_is_415(self):
        with self.server.conn() as c:
            r = c.request("POST", "/test/json/", body=b'{"name":"a"}')
        self.assertEqual(r.status, 415, r)

    def test_malformed_json_is_400(self):
        r = self.server.request("POST", "/test/json/", body=b'{"name": ',
                                headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        self.assertIn("detail", r.json())
        self.assertIn("code", r.json())

    def test_json_with_charset_is_accepted(self):
        r = self.server.request("POST", "/test/json/", body=b'{"name":"caf\xc3\xa9"}',
                                headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["received"], {"name": "caf\u00e9"})

    def test_post_without_body_reads_as_empty_object(self):
        with self.server.conn() as c:
            r = c.request("POST", "/test/json/", headers={"Authorization": "Bearer user-1-USER",
                                                           "Content-Type": "text/plain"})
            self.assertEqual(r.status, 201, r)
            self.assertEqual(r.json()["received"], {})
            r = c.request("POST", "/test/json/", headers={"Content-Length": "0"})
            self.assertEqual(r.status, 201, r)
            self.assertEqual(r.json()["received"], {})

    def test_content_type_on_get_is_ignored(self):
        r = self.get("/test/items/3/", headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["id"], 3)

    def test_deep_nesting_is_refused(self):
        r = self.server.request("POST", "/test/json/", body=b"[" * 100 + b"]" * 100,
                                headers={"Content-Type": "application/json"})
        self.assertIn(r.status, (400, 413), r)
        self.assertIn("code", r.json())

    def test_unknown_fields_are_ignored(self):
        r = self.server.request("POST", "/test/json/", body={"name": "a", "extra": 1})
        self.assertEqual(r.status, 201, r)


class Paging(ServerTestCase):
    CONFIG = CONFIG

    def links(self, r):
        out = {}
        for part in (r.header("link") or "").split(","):
            m = re.match(r'\s*<([^>]*)>\s*;\s*rel="(\w+)"', part)
            if m:
                out[m.group(2)] = m.group(1)
        return out

    def query(self, url):
        u = urllib.parse.urlsplit(url)
        return u, dict(urllib.parse.parse_qsl(u.query))

    def test_envelope_first_page(self):
        r = self.get("/test/list/", headers={"Host": "api.example:8443"})
        self.assertEqual(r.status, 200)
        b = r.json()
        self.assertEqual(set(b), {"count", "next", "previous", "results"})
        self.assertEqual(b["count"], 45)
        self.assertEqual([x["id"] for x in b["results"]], list(range(1, 21)))
        self.assertIsNone(b["previous"])
        u, q = self.query(b["next"])
        self.assertEqual((u.scheme, u.netloc, u.path), ("http", "api.example:8443", "/test/list/"))
        self.assertEqual(q.get("page"), "2")
        self.assertEqual(r.header("x-total-count"), "45")
        links = self.links(r)
        self.assertEqual(links.get("next"), b["next"])
        self.assertNotIn("prev", links)

    def test_envelope_middle_and_last_page(self):
        r = self.get("/test/list/?page=2&page_size=10")
        b = r.json()
        self.assertEqual([x["id"] for x in b["results"]], list(range(11, 21)))
        _, nq = self.query(b["next"])
        self.assertEqual((nq.get("page"), nq.get("page_size")), ("3", "10"))
        _, pq = self.query(b["previous"])
        self.assertIn(pq.get("page"), (None, "1"))
        self.assertEqual(pq.get("page_size"), "10")
        links = self.links(r)
        self.assertEqual(links.get("next"), b["next"])
        self.assertEqual(links.get("prev"), b["previous"])

        r = self.get("/test/list/?page=5&page_size=10")
        b = r.json()
        self.assertEqual([x["id"] for x in b["results"]], list(range(41, 46)))
        self.assertIsNone(b["next"])
        self.assertIsNotNone(b["previous"])
        self.assertNotIn("next", self.links(r))
        self.assertIn("prev", self.links(r))

    def test_page_size_is_clamped_to_1000(self):
        for size in (1000, 5000):
            r = self.get("/test/list/?page_size=%d" % size)
            self.assertEqual(r.status, 200, r)
            b = r.json()
            self.assertEqual(len(b["results"]), 45)
            self.assertIsNone(b["next"])

    def test_page_past_the_end_is_404(self):
        self.assertError(self.get("/test/list/?page=4"), 404, "not_found", "Invalid page.")
        self.assertEqual(self.get("/test/list/?page=3").status, 200)  # the last page exists

    def test_bad_page_is_404(self):
        for bad in ("abc", "0", "-1"):
            self.assertError(self.get("/test/list/?page=" + bad), 404, "not_found", "Invalid page.")

    def test_array_style(self):
        r = self.get("/test/array/")
        self.assertEqual(r.status, 200)
        self.assertEqual([x["id"] for x in r.json()], list(range(1, 46)))  # default 100
        self.assertEqual(r.header("x-total-count"), "45")
        self.assertEqual(self.links(r), {})

        r = self.get("/test/array/?page=2&page_size=10")
        self.assertEqual([x["id"] for x in r.json()], list(range(11, 21)))
        self.assertEqual(r.header("x-total-count"), "45")
        links = self.links(r)
        self.assertEqual(self.query(links["next"])[1].get("page"), "3")
        self.assertIn("prev", links)
        self.assertError(self.get("/test/array/?page=6&page_size=10"), 404, "not_found",
                         "Invalid page.")


class Operations(ServerTestCase):
    CONFIG = CONFIG

    def test_metrics_count_requests_by_route_and_status(self):
        before = metric(self.get("/metrics").body.decode(), "rxd_http_requests_total",
                        route="/test/items/{id}/", status="200")
        for i in range(7):
            self.assertEqual(self.get("/test/items/%d/" % (i + 1)).status, 200)
        deadline = time.monotonic() + 2
        while True:
            r = self.get("/metrics")
            after = metric(r.body.decode(), "rxd_http_requests_total",
                           route="/test/items/{id}/", status="200")
            if after >= before + 7 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("content-type", "").startswith("text/plain"), r)
        self.assertIn("# TYPE rxd_http_requests_total counter", r.body.decode())
        self.assertEqual(after, before + 7)

    def test_metrics_count_errors_by_status(self):
        before = metric(self.get("/metrics").body.decode(), "rxd_http_requests_total",
                        route="/test/items/{id}/", status="404")
        self.assertEqual(self.get("/test/items/abc/").status, 404)
        time.sleep(0.05)
        after = metric(self.get("/metrics").body.decode(), "rxd_http_requests_total",
                       route="/test/items/{id}/", status="404")
        self.assertEqual(after, before + 1)

    def test_readyz(self):
        r = self.get("/readyz")
        self.assertEqual(r.status, 200, r)

    def test_healthz(self):
        r = self.get("/healthz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json().get("status"), "ok")

    def test_openapi_schema(self):
        r = self.get("/api/schema/")
        self.assertEqual(r.status, 200)
        doc = r.json()
        self.assertEqual(doc["openapi"], "3.1.0")
        op = doc["paths"]["/test/json/"]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        self.assertEqual(ref, "#/components/schemas/TestThing")
        self.assertIn("TestThing", doc["components"]["schemas"])
        self.assertIn("201", op["responses"])
        self.assertEqual(op.get("security"), [])
        self.assertEqual(doc["paths"]["/test/items/{id}/"]["get"].get("security"), [])
        protected = doc["paths"]["/test/whoami/"]["get"]
        self.assertTrue(protected.get("security", doc.get("security")), protected)
        schemes = doc["components"]["securitySchemes"]
        self.assertEqual(schemes["bearerAuth"]["type"], "http")
        self.assertEqual(schemes["bearerAuth"]["scheme"].lower(), "bearer")
        self.assertEqual(schemes["apiKey"]["type"], "apiKey")
        self.assertEqual(schemes["apiKey"]["in"], "header")
        self.assertEqual(schemes["apiKey"]["name"], "X-API-KEY")


if __name__ == "__main__":
    unittest.main()


class Multipart(ServerTestCase):
    """rx_req_multipart: RFC 7578 bodies as browsers and the old frontend send them."""
    CONFIG = CONFIG

    def post(self, body, boundary="XyZ123"):
        return self.server.request("POST", "/test/multipart/", body=body, headers={
            "Content-Type": "multipart/form-data; boundary=%s" % boundary})

    def test_fields_and_files(self):
        png = b"\x89PNG\r\n\x1a\n\x00\x01binary\r\n--not-a-boundary"
        body = (b"--XyZ123\r\n"
                b'Content-Disposition: form-data; name="field"\r\n\r\n'
                b"hello world\r\n"
                b"--XyZ123\r\n"
                b'Content-Disposition: form-data; name="pic"; filename="me.png"\r\n'
                b"Content-Type: image/png\r\n\r\n" + png + b"\r\n"
                b"--XyZ123--\r\n")
        r = self.post(body)
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["field"], "hello world")
        self.assertEqual([p["name"] for p in j["parts"]], ["field", "pic"])
        pic = j["parts"][1]
        self.assertEqual(pic["filename"], "me.png")
        self.assertEqual(pic["content_type"], "image/png")
        self.assertEqual(pic["len"], len(png))

    def test_quoted_boundary(self):
        body = (b'--a b\r\nContent-Disposition: form-data; name="field"\r\n\r\nx\r\n--a b--\r\n')
        r = self.post(body, boundary='"a b"')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["field"], "x")

    def test_not_multipart_is_415(self):
        r = self.server.request("POST", "/test/multipart/", body=b'{"a":1}',
                                headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 415, r)
        self.assertEqual(r.json()["code"], "unsupported_media_type")

    def test_malformed_bodies_are_400(self):
        for body in (b"garbage without delimiters",
                     b"--XyZ123\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nno end",
                     b"--XyZ123\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ123--\r\n"):
            r = self.post(body)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.json()["code"], "parse_error", r)

    def test_missing_boundary_is_400(self):
        r = self.server.request("POST", "/test/multipart/", body=b"--x\r\n",
                                headers={"Content-Type": "multipart/form-data"})
        self.assertEqual(r.status, 400, r)
