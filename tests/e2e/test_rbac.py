"""test_rbac — roles, permissions, admin users, audit logs, pharmacies and API keys end to end,
against the contract (../shared/API.md: "Conventions", "Auth", "Roles and permissions",
"Connector", "Operator commands").

Real rxd processes (`serve --migrate`, modules `notify auth rbac pharmacies`) on a private
PostgreSQL (pgtemp) and Redis (redistemp). Every TestCase class has its own database and Redis
db, its own super admin (made with `rxd createsuperuser --password-stdin`), and its own server
(two for the cross-instance classes). Other users are made through the admin API; the database
is read with psql to check what really changed.
"""
import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgtemp import PgTemp  # noqa: E402
from redistemp import RedisTemp  # noqa: E402
from rxdtest import run_cli  # noqa: E402
import authflows as af  # noqa: E402
from authflows import (AuthServer, USER_FIELDS, ISO_Z_RE, jwt_parts, new_email, new_password,  # noqa: E402
                       uid)

MODULES = "notify auth rbac pharmacies"
BEARER_CHALLENGE = 'Bearer realm="api"'
DENIED = {"detail": "You do not have permission to perform this action.", "code": "permission_denied"}
BAD_KEY = {"detail": "Invalid or inactive API key", "code": "authentication_failed"}
PHARMACY_FIELDS = {"id", "name", "webhook_url", "is_active", "created_at", "updated_at"}
KEY_CREATED_FIELDS = {"id", "name", "prefix", "key", "created_at"}
ROLES = ("SUPER_ADMIN", "PHARMACY_ADMIN", "DOCTOR", "REGISTERED_USER")

PG = None
REDIS = None


def setUpModule():
    global PG, REDIS
    PG = PgTemp()
    try:
        REDIS = RedisTemp().start()
    except BaseException:
        PG.cleanup()
        raise


def tearDownModule():
    try:
        if REDIS is not None:
            REDIS.cleanup()
    finally:
        if PG is not None:
            PG.cleanup()


class RbacServer(AuthServer):
    """AuthServer with the rbac and pharmacies modules as well."""

    def __init__(self, pg_url, redis_url, workers=2, env=None):
        super().__init__(pg_url, redis_url, ratelimit=False, env=env, workers=workers)
        self.env["RXD_MODULES"] = MODULES


def poll(fn, pred, timeout):
    """Call fn() until pred(result) or timeout; returns (result, seconds elapsed)."""
    t0 = time.monotonic()
    while True:
        r = fn()
        if pred(r) or time.monotonic() - t0 > timeout:
            return r, time.monotonic() - t0
        time.sleep(0.05)


def until_refused(fn, timeout, streak=6):
    """Call fn() until it answers 401 `streak` times in a row (every request is a new
    connection, so the server's workers all get asked: one refusing worker is not enough);
    returns (last response, seconds from the start until the first 401 of that streak)."""
    t0 = time.monotonic()
    n, first = 0, None
    while True:
        r = fn()
        now = time.monotonic() - t0
        if r.status == 401:
            n, first = n + 1, (first if n else now)
        else:
            n, first = 0, None
        if n >= streak or now > timeout:
            return r, (first if n >= streak else now)
        time.sleep(0.02 if n else 0.05)


def warm(fn, times=6):
    """Ask several times (several connections, so every worker caches what it caches)."""
    return [fn().status for _ in range(times)]


class RbacCase(unittest.TestCase):
    DB = None          # database name (one per class)
    REDIS_DB = 1
    INSTANCES = 1      # servers started on the same PG + Redis
    WORKERS = 2        # of each server
    ENV = {}           # extra environment of each server

    @classmethod
    def setUpClass(cls):
        cls.pg_url = PG.create_database(cls.DB)
        cls.redis_url = REDIS.url(db=cls.REDIS_DB)
        cls.servers = []
        try:
            for _ in range(cls.INSTANCES):
                s = RbacServer(cls.pg_url, cls.redis_url, workers=cls.WORKERS, env=cls.ENV)
                cls.servers.append(s)
                s.start()
            cls.server = cls.servers[0]
            cls.admin_email, cls.admin_password = new_email(), new_password()
            r = cls.cli("createsuperuser", "--email", cls.admin_email, "--password-stdin",
                        stdin=cls.admin_password + "\n")
            if r.returncode != 0:
                raise AssertionError("createsuperuser failed: %s%s" % (r.stdout, r.stderr))
            r = cls.server.request("POST", "/api/auth/login/",
                                   {"email": cls.admin_email, "password": cls.admin_password})
            if r.status != 200:
                raise AssertionError("super admin login failed: %r" % r)
            cls.admin = r.json()["access"]
            cls.admin_id = r.json()["user"]["id"]
        except BaseException:
            for s in cls.servers:
                s.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            for s in cls.servers:
                s.stop()
        finally:
            for s in cls.servers:
                s.cleanup()

    @classmethod
    def cli(cls, *args, stdin=None, timeout=60):
        env = af.auth_env(cls.pg_url, cls.redis_url, ratelimit=False)
        return run_cli(*args, env=env, modules=MODULES, stdin=stdin, timeout=timeout)

    # -- HTTP ----------------------------------------------------------------

    def req(self, method, path, body=None, token=None, key=None, headers=None, server=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if key is not None:
            h["X-API-KEY"] = key
        return (server or self.server).request(method, path, body=body, headers=h)

    def login(self, email, password, server=None):
        r = self.req("POST", "/api/auth/login/", {"email": email, "password": password}, server=server)
        self.assertEqual(r.status, 200, r)
        return r.json()["access"]

    def make_user(self, role="REGISTERED_USER", pharmacy=None, prefix="/api/admin/users/", login=True, **extra):
        """A user made by the super admin through the admin API, logged in."""
        email, password = new_email(), new_password()
        body = {"username": "U " + uid(), "email": email, "password": password, "role": role}
        if pharmacy is not None:
            body["pharmacy"] = pharmacy
        body.update(extra)
        r = self.req("POST", prefix, body, token=self.admin)
        self.assertEqual(r.status, 201, r)
        u = r.json()
        self.assertUser(u, role=role, email=email, pharmacy=pharmacy)
        return {"id": u["id"], "email": email, "password": password, "user": u,
                "access": self.login(email, password) if login else None}

    def make_pharmacy(self, name=None, **extra):
        body = {"name": name or "Pharmacy " + uid()}
        body.update(extra)
        r = self.req("POST", "/api/pharmacies/", body, token=self.admin)
        self.assertEqual(r.status, 201, r)
        return r.json()

    def make_key(self, pharmacy_id, name=None, token=None):
        r = self.req("POST", "/api/pharmacies/%d/api-keys/" % pharmacy_id,
                     {"name": name or "key " + uid()}, token=token or self.admin)
        self.assertEqual(r.status, 201, r)
        k = r.json()
        self.assertEqual(set(k), KEY_CREATED_FIELDS, k)
        self.assertIsInstance(k["id"], int)
        self.assertIsInstance(k["key"], str)
        self.assertIsInstance(k["prefix"], str)
        self.assertTrue(k["prefix"], k)
        self.assertGreater(len(k["key"]), len(k["prefix"]), k)
        self.assertGreaterEqual(len(k["key"]), 20, "a key must be long enough not to be guessed: %r" % k)
        self.assertRegex(k["created_at"], ISO_Z_RE)
        return k

    # -- assertions ----------------------------------------------------------

    def assertError(self, r, status, code, detail=None):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        body = r.json()
        self.assertEqual(body.get("code"), code, body)
        self.assertIsInstance(body.get("detail"), str, body)
        if detail is not None:
            self.assertEqual(body["detail"], detail, body)
        if status == 401:
            self.assertIsNotNone(r.header("www-authenticate"), r)
        return body

    def assertDenied(self, r):
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json(), DENIED, r)

    def assertGuest(self, r):
        self.assertError(r, 401, "not_authenticated")
        self.assertEqual(r.header("www-authenticate"), BEARER_CHALLENGE, r)

    def assertBadKey(self, r):
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json(), BAD_KEY, r)
        self.assertRegex(r.header("www-authenticate", ""), r'^(Bearer|ApiKey) realm="api"$', r)

    def assertFieldError(self, r, field):
        self.assertEqual(r.status, 400, r)
        body = r.json()
        self.assertIn(field, body, body)
        self.assertIsInstance(body[field], list, body)
        self.assertTrue(body[field] and all(isinstance(m, str) and m for m in body[field]), body)
        self.assertEqual(body.get("code"), "invalid", body)
        return body

    def assertUser(self, u, **expected):
        self.assertEqual(set(u), USER_FIELDS, "user fields differ from the contract: %r" % u)
        self.assertIn(u["role"], ROLES)
        self.assertEqual(u["is_active"], u["status"] == "ACTIVE", u)
        for k in u:
            self.assertNotRegex(k, "password|hash|failed|locked|secret", u)
        for k, v in expected.items():
            self.assertEqual(u[k], v, "user.%s: %r" % (k, u))
        return u

    def assertPharmacy(self, p, **expected):
        # the contract's fields, all of them (extra fields do not break old clients)
        self.assertLessEqual(PHARMACY_FIELDS, set(p), "pharmacy fields missing: %r" % p)
        self.assertNotIn("key", p)
        self.assertIsInstance(p["id"], int)
        self.assertIsInstance(p["is_active"], bool)
        self.assertRegex(p["created_at"], ISO_Z_RE)
        self.assertRegex(p["updated_at"], ISO_Z_RE)
        for k, v in expected.items():
            self.assertEqual(p[k], v, "pharmacy.%s: %r" % (k, p))
        return p

    def assertEnvelope(self, r):
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIsInstance(body, dict, body)
        self.assertEqual(set(body), {"count", "next", "previous", "results"}, body)
        self.assertIsInstance(body["results"], list)
        self.assertIsInstance(body["count"], int)
        self.assertEqual(r.header("x-total-count"), str(body["count"]), r)
        return body

    # -- database ------------------------------------------------------------

    def sql(self, text):
        return PG.psql(text, dbname=self.DB)

    def table(self, *candidates, like=None):
        """The first existing public table among candidates (or the only one matching LIKE)."""
        names = set(self.sql("SELECT table_name FROM information_schema.tables "
                             "WHERE table_schema = 'public'").split())
        for c in candidates:
            if c in names:
                return c
        if like:
            found = sorted(n for n in names if re.search(like, n))
            if found:
                return found[0]
        self.fail("no table %r / %r among %r" % (candidates, like, sorted(names)))

    def pharmacy_row(self, pid):
        return self.sql("SELECT name, coalesce(webhook_url, '<null>'), is_active FROM %s WHERE id = %d"
                        % (self.table("pharmacies", "pharmacies_pharmacy"), pid))

    def user_row(self, uid_):
        return self.sql("SELECT role, status, coalesce(pharmacy_id::text, '<null>'), deleted_at IS NOT NULL"
                        " FROM %s WHERE id = %d" % (af.USERS_TABLE, uid_)).split("|")

    def audit_rows(self, action, user_id):
        out = self.sql("SELECT coalesce(actor::text, metadata->>'actor', ''), metadata::text FROM %s "
                       "WHERE action = '%s' AND user_id = %d ORDER BY id" % (af.AUDIT_TABLE, action, user_id))
        return out.splitlines() if out else []


# ==========================================================================
# The permission matrix and pharmacy scoping
# ==========================================================================

class Matrix(RbacCase):
    DB = "rbac_matrix"
    REDIS_DB = 1

    def setUp(self):
        if not hasattr(type(self), "A"):
            t = type(self)
            t.A = self.make_pharmacy("Pharmacy A " + uid())
            t.B = self.make_pharmacy("Pharmacy B " + uid(), webhook_url="https://b.example.com/hook")
            t.pa = self.make_user("PHARMACY_ADMIN", pharmacy=t.A["id"])
            t.doctor = self.make_user("DOCTOR")
            t.ru = self.make_user("REGISTERED_USER")
            t.key_a = self.make_key(t.A["id"])["key"]

    def principals(self):
        t = type(self)
        return {"SUPER_ADMIN": {"token": self.admin}, "PHARMACY_ADMIN": {"token": t.pa["access"]},
                "DOCTOR": {"token": t.doctor["access"]}, "REGISTERED_USER": {"token": t.ru["access"]},
                "guest": {}, "api_key": {"key": t.key_a}}

    def test_matrix(self):
        a = type(self).A["id"]
        routes = [
            # (method, path, body, expected status per principal)
            ("GET", "/api/admin/users/", None,
             {"SUPER_ADMIN": 200, "PHARMACY_ADMIN": 403, "DOCTOR": 403, "REGISTERED_USER": 403,
              "guest": 401, "api_key": 403}),
            ("GET", "/api/admin/audit-logs/", None,
             {"SUPER_ADMIN": 200, "PHARMACY_ADMIN": 403, "DOCTOR": 403, "REGISTERED_USER": 403,
              "guest": 401, "api_key": 403}),
            ("GET", "/api/pharmacies/", None,
             {"SUPER_ADMIN": 200, "PHARMACY_ADMIN": 200, "DOCTOR": 403, "REGISTERED_USER": 403,
              "guest": 401, "api_key": 200}),
            ("POST", "/api/pharmacies/", "NEWPHARMACY",
             {"SUPER_ADMIN": 201, "PHARMACY_ADMIN": 403, "DOCTOR": 403, "REGISTERED_USER": 403,
              "guest": 401, "api_key": 403}),
            ("PATCH", "/api/pharmacies/%d/" % a, "PATCH",
             {"SUPER_ADMIN": 200, "PHARMACY_ADMIN": 200, "DOCTOR": 403, "REGISTERED_USER": 403,
              "guest": 401, "api_key": 200}),
            ("POST", "/api/pharmacies/%d/api-keys/" % a, "KEY",
             {"SUPER_ADMIN": 201, "PHARMACY_ADMIN": 403, "DOCTOR": 403, "REGISTERED_USER": 403,
              "guest": 401, "api_key": 403}),
        ]
        ph_table = self.table("pharmacies", "pharmacies_pharmacy")
        failures = []
        for method, path, body, expect in routes:
            for who, cred in self.principals().items():
                tag = uid()
                if body == "NEWPHARMACY":
                    b = {"name": "Matrix " + tag}
                elif body == "PATCH":
                    b = {"webhook_url": "https://a.example.com/%s" % tag}
                elif body == "KEY":
                    b = {"name": "matrix " + tag}
                else:
                    b = None
                r = self.req(method, path, b, **cred)
                want = expect[who]
                try:
                    self.assertEqual(r.status, want, r)
                    if want == 401:
                        self.assertGuest(r)
                    elif want == 403:
                        self.assertDenied(r)
                    elif body == "NEWPHARMACY":
                        self.assertPharmacy(r.json(), name=b["name"])
                    elif body == "PATCH":
                        self.assertPharmacy(r.json(), id=a, webhook_url=b["webhook_url"])
                    elif body == "KEY":
                        self.assertEqual(set(r.json()), KEY_CREATED_FIELDS, r)
                    # nothing was written when refused
                    if want in (401, 403) and body == "NEWPHARMACY":
                        self.assertEqual(self.sql("SELECT count(*) FROM %s WHERE name = '%s'"
                                                  % (ph_table, b["name"])), "0")
                    if want in (401, 403) and body == "PATCH":
                        self.assertNotIn(tag, self.pharmacy_row(a))
                except AssertionError as e:
                    failures.append("%s %s as %s: %s" % (method, path, who, str(e)[:300]))
        self.assertEqual(failures, [], "\n".join(failures))

    def test_bad_bearer_on_protected_route(self):
        for route in ("/api/admin/users/", "/api/pharmacies/"):
            r = self.req("GET", route, token="not.a.jwt")
            self.assertError(r, 401, "token_not_valid")
            self.assertEqual(r.header("www-authenticate"), BEARER_CHALLENGE, r)

    def _foreign_attempts(self, cred):
        t = type(self)
        b = t.B["id"]
        before = self.pharmacy_row(b)
        self.assertTrue(before)
        for method, body in (("GET", None), ("PATCH", {"name": "Hijacked " + uid()}),
                             ("PUT", {"name": "Hijacked " + uid(), "webhook_url": None, "is_active": False}),
                             ("PATCH", {"is_active": False})):
            r = self.req(method, "/api/pharmacies/%d/" % b, body, **cred)
            self.assertError(r, 404, "not_found")
            self.assertEqual(self.pharmacy_row(b), before)
        # DELETE: refused exactly as for an id that does not exist (reveals nothing), never done.
        r = self.req("DELETE", "/api/pharmacies/%d/" % b, **cred)
        r0 = self.req("DELETE", "/api/pharmacies/99999999/", **cred)
        self.assertIn(r.status, (403, 404), r)
        self.assertEqual((r.status, r.json()), (r0.status, r0.json()))
        self.assertEqual(self.pharmacy_row(b), before)
        # its keys: neither listed nor created
        r = self.req("GET", "/api/pharmacies/%d/api-keys/" % b, **cred)
        self.assertIn(r.status, (403, 404), r)
        n = self.sql("SELECT count(*) FROM %s" % self.table("api_keys", "pharmacy_api_keys", like="api_?key"))
        r = self.req("POST", "/api/pharmacies/%d/api-keys/" % b, {"name": "x"}, **cred)
        self.assertIn(r.status, (403, 404), r)
        self.assertEqual(self.sql("SELECT count(*) FROM %s"
                                  % self.table("api_keys", "pharmacy_api_keys", like="api_?key")), n)
        # the list holds A only
        r = self.req("GET", "/api/pharmacies/", **cred)
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIsInstance(body, list, body)
        self.assertEqual([p["id"] for p in body], [t.A["id"]], body)
        self.assertEqual(r.header("x-total-count"), "1", r)
        # ?pharmacy= is ignored for everyone but a super admin
        r = self.req("GET", "/api/pharmacies/?pharmacy=%d" % b, **cred)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(b, [p["id"] for p in r.json()])
        # own detail works
        r = self.req("GET", "/api/pharmacies/%d/" % t.A["id"], **cred)
        self.assertEqual(r.status, 200, r)
        self.assertPharmacy(r.json(), id=t.A["id"])

    def test_pharmacy_admin_is_scoped_to_own_pharmacy(self):
        self._foreign_attempts({"token": type(self).pa["access"]})

    def test_api_key_is_scoped_to_own_pharmacy(self):
        self._foreign_attempts({"key": type(self).key_a})

    def test_own_pharmacy_cannot_be_deleted_by_pharmacy_admin_or_key(self):
        a = type(self).A["id"]
        before = self.pharmacy_row(a)
        for cred in ({"token": type(self).pa["access"]}, {"key": type(self).key_a}):
            self.assertDenied(self.req("DELETE", "/api/pharmacies/%d/" % a, **cred))
            self.assertEqual(self.pharmacy_row(a), before)

    def test_super_admin_sees_all_and_list_is_bare_array(self):
        t = type(self)
        r = self.req("GET", "/api/pharmacies/?page_size=1000", token=self.admin)
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIsInstance(body, list, body)
        ids = [p["id"] for p in body]
        self.assertIn(t.A["id"], ids)
        self.assertIn(t.B["id"], ids)
        total = self.sql("SELECT count(*) FROM %s" % self.table("pharmacies", "pharmacies_pharmacy"))
        self.assertEqual(r.header("x-total-count"), total, r)
        self.assertEqual(len(body), int(total))
        for p in body:
            self.assertPharmacy(p)
        r = self.req("GET", "/api/pharmacies/?page_size=1", token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.json()), 1, r)
        self.assertEqual(r.header("x-total-count"), total, r)
        self.assertIn('rel="next"', r.header("link", ""), r)
        r = self.req("GET", "/api/pharmacies/?page=9999", token=self.admin)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json(), {"detail": "Invalid page.", "code": "not_found"})
        r = self.req("GET", "/api/pharmacies/%d/" % t.B["id"], token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertPharmacy(r.json(), id=t.B["id"], webhook_url="https://b.example.com/hook")
        # filters and orderings, on this test's own pharmacies (found by ?search=)
        tag = uid()
        n1 = self.make_pharmacy("B %s" % tag)["id"]
        n2 = self.make_pharmacy("A %s" % tag, is_active=False)["id"]
        n3 = self.make_pharmacy("C %s" % tag)["id"]
        n4 = self.make_pharmacy("A %s" % tag)["id"]
        tbl = self.table("pharmacies", "pharmacies_pharmacy")
        for when, ids_ in (("2026-01-01T00:00:00Z", (n4,)), ("2026-01-02T00:00:00Z", (n1, n3)),
                           ("2026-01-03T00:00:00Z", (n2,))):
            self.sql("UPDATE %s SET created_at = '%s' WHERE id IN (%s)"
                     % (tbl, when, ", ".join(str(i) for i in ids_)))

        def listed(query):
            r = self.req("GET", "/api/pharmacies/?search=%s%s" % (tag.upper(), query), token=self.admin)
            self.assertEqual(r.status, 200, r)
            return [p["id"] for p in r.json()], r.header("x-total-count")
        for query, expected in (("", [n1, n2, n3, n4]),
                                ("&ordering=name", [n2, n4, n1, n3]),
                                ("&ordering=-name", [n3, n1, n2, n4]),
                                ("&ordering=-name,id", [n3, n1, n2, n4]),
                                ("&ordering=created_at", [n4, n1, n3, n2]),
                                ("&ordering=-created_at", [n2, n1, n3, n4]),
                                ("&ordering=-id", [n4, n3, n2, n1]),
                                ("&ordering=id", [n1, n2, n3, n4]),
                                ("&ordering=bogus,-name", [n1, n2, n3, n4]),
                                ("&is_active=maybe", [n1, n2, n3, n4])):
            self.assertEqual(listed(query), (expected, "4"), query)
        self.assertEqual(listed("&is_active=false"), ([n2], "1"))
        self.assertEqual(listed("&is_active=0"), ([n2], "1"))
        self.assertEqual(listed("&is_active=TRUE&ordering=-name"), ([n3, n1, n4], "3"))
        self.assertEqual(listed("&is_active=1&ordering=name&page_size=2&page=2"), ([n3], "3"))
        r = self.req("GET", "/api/pharmacies/?search=%s&page_size=2&page=3" % tag, token=self.admin)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(listed("x-none"), ([], "0"))
        # a pharmacy admin's filters apply within their own pharmacy only
        r = self.req("GET", "/api/pharmacies/?search=%s" % tag, token=t.pa["access"])
        self.assertEqual((r.json(), r.header("x-total-count")), ([], "0"))
        r = self.req("GET", "/api/pharmacies/?is_active=true&ordering=-id", token=t.pa["access"])
        self.assertEqual([p["id"] for p in r.json()], [t.A["id"]])
        r = self.req("GET", "/api/pharmacies/?is_active=false", key=t.key_a)
        self.assertEqual(r.json(), [])

    def test_pharmacy_create_validation_and_defaults(self):
        ph = self.table("pharmacies", "pharmacies_pharmacy")
        n = self.sql("SELECT count(*) FROM %s" % ph)
        self.assertFieldError(self.req("POST", "/api/pharmacies/", {}, token=self.admin), "name")
        self.assertFieldError(self.req("POST", "/api/pharmacies/", {"name": ""}, token=self.admin), "name")
        self.assertFieldError(self.req("POST", "/api/pharmacies/", {"name": "x" * 256}, token=self.admin),
                              "name")
        self.assertFieldError(self.req("POST", "/api/pharmacies/", {"name": "Ok " + uid(), "webhook_url": "not a url"},
                                       token=self.admin), "webhook_url")
        self.assertFieldError(self.req("POST", "/api/pharmacies/", {"name": "Ok " + uid(), "webhook_url": "x" * 300},
                                       token=self.admin), "webhook_url")
        self.assertEqual(self.sql("SELECT count(*) FROM %s" % ph), n)
        name = "N" * 255
        r = self.req("POST", "/api/pharmacies/", {"name": name, "id": 987654, "created_at": "2000-01-01T00:00:00Z",
                                                  "unknown": 1}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        p = self.assertPharmacy(r.json(), name=name, webhook_url=None, is_active=True)
        self.assertNotEqual(p["id"], 987654)
        self.assertFalse(p["created_at"].startswith("2000"), p)
        self.assertEqual(self.pharmacy_row(p["id"]), "%s|<null>|t" % name)
        r = self.req("POST", "/api/pharmacies/", {"name": "Hooked " + uid(), "webhook_url": "https://h.example.com/x",
                                                  "is_active": False}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        self.assertPharmacy(r.json(), webhook_url="https://h.example.com/x", is_active=False)
        r = self.server.request("POST", "/api/pharmacies/", body=json.dumps({"name": "x"}),
                                headers={"Authorization": "Bearer " + self.admin, "Content-Type": "text/plain"})
        self.assertEqual(r.status, 415, r)

    def test_super_admin_deletes_pharmacy(self):
        p = self.make_pharmacy()
        r = self.req("DELETE", "/api/pharmacies/%d/" % p["id"], token=self.admin)
        self.assertEqual(r.status, 204, r)
        self.assertError(self.req("GET", "/api/pharmacies/%d/" % p["id"], token=self.admin), 404, "not_found")


# ==========================================================================
# API keys, and what happens across two instances
# ==========================================================================

class KeysAndSessions(RbacCase):
    DB = "rbac_keys"
    REDIS_DB = 2
    INSTANCES = 2

    def keys_table(self):
        return self.table("api_keys", "pharmacy_api_keys", like="api_?key")

    def test_bad_keys(self):
        for bad in ("nope", "x" * 64, "rxd_" + "0" * 40):
            self.assertBadKey(self.req("GET", "/api/pharmacies/", key=bad))
        # a real key with one character changed
        p = self.make_pharmacy()
        k = self.make_key(p["id"])["key"]
        self.assertEqual(self.req("GET", "/api/pharmacies/", key=k).status, 200)
        flipped = k[:-1] + ("A" if k[-1] != "A" else "B")
        self.assertBadKey(self.req("GET", "/api/pharmacies/", key=flipped))

    def test_inactive_or_deleted_pharmacy_key_stops_at_once(self):
        p = self.make_pharmacy()
        k = self.make_key(p["id"])["key"]
        for s in self.servers:  # valid everywhere, and cached by every worker that caches
            self.assertEqual(warm(lambda: self.req("GET", "/api/pharmacies/", key=k, server=s)), [200] * 6)
        r = self.req("PATCH", "/api/pharmacies/%d/" % p["id"], {"is_active": False}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertPharmacy(r.json(), is_active=False)
        for s in self.servers:
            r, took = until_refused(lambda: self.req("GET", "/api/pharmacies/", key=k, server=s), 3.0)
            self.assertBadKey(r)
            self.assertLessEqual(took, 1.2)
        # reactivated: works again; deleted: stops
        self.assertEqual(self.req("PATCH", "/api/pharmacies/%d/" % p["id"], {"is_active": True},
                                  token=self.admin).status, 200)
        for s in self.servers:
            r, _ = poll(lambda: self.req("GET", "/api/pharmacies/", key=k, server=s), lambda r: r.status == 200, 1.5)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(warm(lambda: self.req("GET", "/api/pharmacies/", key=k, server=s)), [200] * 6)
        self.assertEqual(self.req("DELETE", "/api/pharmacies/%d/" % p["id"], token=self.admin).status, 204)
        for s in self.servers:
            r, took = until_refused(lambda: self.req("GET", "/api/pharmacies/", key=k, server=s), 3.0)
            self.assertBadKey(r)
            self.assertLessEqual(took, 1.2)

    def test_rotation_and_revocation_across_instances(self):
        p = self.make_pharmacy()
        pid = p["id"]
        k1 = self.make_key(pid, name="old")
        k2 = self.make_key(pid, name="new")
        self.assertNotEqual(k1["key"], k2["key"])
        self.assertNotEqual(k1["id"], k2["id"])
        # both valid at once, on both instances (this also warms any cache)
        for s in self.servers:
            for k in (k1, k2):
                r = self.req("GET", "/api/pharmacies/%d/" % pid, key=k["key"], server=s)
                self.assertEqual(r.status, 200, r)
                self.assertPharmacy(r.json(), id=pid)
                self.assertEqual(warm(lambda: self.req("GET", "/api/pharmacies/", key=k["key"], server=s)), [200] * 6)
        r = self.req("GET", "/api/pharmacies/%d/api-keys/" % pid, token=self.admin)
        self.assertEqual(r.status, 200, r)
        listed = r.json()
        if isinstance(listed, dict):
            listed = listed["results"]
        self.assertEqual(sorted(x["id"] for x in listed), sorted([k1["id"], k2["id"]]), listed)
        for x in listed:
            self.assertNotIn("key", x, x)
        for k in (k1, k2):
            self.assertNotIn(k["key"], r.body.decode())
        # revoke the old one on instance 1; instance 2 refuses it within a second
        r = self.req("DELETE", "/api/pharmacies/%d/api-keys/%d/" % (pid, k1["id"]), token=self.admin)
        self.assertEqual(r.status, 204, r)
        r, took = until_refused(lambda: self.req("GET", "/api/pharmacies/%d/" % pid, key=k1["key"], server=self.servers[1]), 3.0)
        self.assertBadKey(r)
        self.assertLessEqual(took, 1.0)
        r, took = until_refused(lambda: self.req("GET", "/api/pharmacies/%d/" % pid, key=k1["key"],
                                                 server=self.servers[0]), 3.0)
        self.assertBadKey(r)
        self.assertLessEqual(took, 0.5)
        for s in self.servers:  # the other key still works, on every worker
            self.assertEqual(warm(lambda: self.req("GET", "/api/pharmacies/%d/" % pid, key=k2["key"], server=s)),
                             [200] * 6)
        r = self.req("GET", "/api/pharmacies/%d/api-keys/" % pid, token=self.admin)
        listed = r.json()
        if isinstance(listed, dict):
            listed = listed["results"]
        self.assertNotIn(k1["id"], [x["id"] for x in listed if not x.get("revoked_at") and x.get("is_active", True)])
        # a key of another pharmacy through this one → 404
        other = self.make_pharmacy()
        self.assertEqual(self.req("DELETE", "/api/pharmacies/%d/api-keys/%d/" % (other["id"], k2["id"]),
                                  token=self.admin).status, 404)
        self.assertEqual(self.req("GET", "/api/pharmacies/%d/" % pid, key=k2["key"]).status, 200)
        # audit
        self.assertGreaterEqual(int(self.sql("SELECT count(*) FROM %s WHERE action = 'API_KEY_CREATED'"
                                             % af.AUDIT_TABLE)), 2)
        self.assertGreaterEqual(int(self.sql("SELECT count(*) FROM %s WHERE action = 'API_KEY_REVOKED'"
                                             % af.AUDIT_TABLE)), 1)

    def test_clear_key_never_shown_again_nor_stored(self):
        p = self.make_pharmacy()
        k = self.make_key(p["id"], name="secret-holder")
        seen = []
        for path in ("/api/pharmacies/", "/api/pharmacies/%d/" % p["id"], "/api/pharmacies/%d/api-keys/" % p["id"],
                     "/api/pharmacies/%d/api-keys/%d/" % (p["id"], k["id"]), "/api/admin/audit-logs/?page_size=1000"):
            for cred in ({"token": self.admin}, {"key": k["key"]}):
                r = self.req("GET", path, **cred)
                seen.append((path, r.status))
                self.assertNotIn(k["key"], r.body.decode(errors="replace"), path)
        dump = self.sql("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM %s t" % self.keys_table())
        self.assertNotIn(k["key"], dump)
        self.assertNotIn(k["key"], self.sql("SELECT coalesce(string_agg(a::text, E'\\n'), '') FROM %s a"
                                            % af.AUDIT_TABLE))
        time.sleep(0.2)
        for s in self.servers:
            self.assertNotIn(k["key"], s.stdout() + s.stderr())
        self.assertEqual(seen[0][1], 200, seen)

    def test_key_name_limit(self):
        p = self.make_pharmacy()
        self.assertFieldError(self.req("POST", "/api/pharmacies/%d/api-keys/" % p["id"], {"name": "k" * 101},
                                       token=self.admin), "name")
        self.make_key(p["id"], name="k" * 100)
        r = self.req("POST", "/api/pharmacies/99999999/api-keys/", {"name": "x"}, token=self.admin)
        self.assertError(r, 404, "not_found")

    def test_deactivated_user_token_stops_on_both_instances(self):
        u = self.make_user("DOCTOR")
        for s in self.servers:
            self.assertEqual(warm(lambda: self.req("GET", "/api/auth/me/", token=u["access"], server=s)), [200] * 6)
        r = self.req("PATCH", "/api/admin/users/%d/" % u["id"], {"is_active": False}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), status="INACTIVE", is_active=False)
        for s in reversed(self.servers):
            r, took = until_refused(lambda: self.req("GET", "/api/auth/me/", token=u["access"], server=s), 3.0)
            self.assertError(r, 401, "token_not_valid")
            self.assertLessEqual(took, 1.2)
        self.assertEqual(self.user_row(u["id"])[1], "INACTIVE")
        r = self.req("POST", "/api/auth/login/", {"email": u["email"], "password": u["password"]})
        self.assertError(r, 403, "account_inactive")

    def test_deleted_user_token_stops_on_both_instances(self):
        u = self.make_user("REGISTERED_USER")
        for s in self.servers:
            self.assertEqual(warm(lambda: self.req("GET", "/api/auth/me/", token=u["access"], server=s)), [200] * 6)
        self.assertEqual(self.req("DELETE", "/api/admin/users/%d/" % u["id"], token=self.admin,
                                  server=self.servers[1]).status, 204)
        for s in self.servers:
            r, took = until_refused(lambda: self.req("GET", "/api/auth/me/", token=u["access"], server=s), 3.0)
            self.assertError(r, 401, "token_not_valid")
            self.assertLessEqual(took, 1.2)


class SessionsEndOnEveryWorker(RbacCase):
    """Ending a user's sessions reaches every worker of every instance at once (auth's
    per-worker status cache is dropped by a Redis message), not when the cache expires: the
    cache is made to last 30 s here, so a worker that kept its entry would still accept."""
    DB = "rbac_sessions"
    REDIS_DB = 6
    INSTANCES = 2
    WORKERS = 4
    ENV = {"RXD_AUTH_STATUS_CACHE_MS": "30000"}

    def old_token_refused_everywhere(self, token, n=20):
        t0 = time.monotonic()
        got = [self.req("GET", "/api/auth/me/", token=token, server=self.servers[i % len(self.servers)])
               for i in range(n)]
        took = time.monotonic() - t0
        self.assertEqual([r.status for r in got], [401] * n, "old token accepted after its sessions ended")
        for r in got:
            self.assertError(r, 401, "token_not_valid")
        return took

    def warm_everywhere(self, token, n=24):
        # every request is a new connection: the workers of both instances cache the user
        for s in self.servers:
            self.assertEqual(warm(lambda: self.req("GET", "/api/auth/me/", token=token, server=s), n),
                             [200] * n)

    def test_role_change_ends_old_tokens_on_every_worker_at_once(self):
        u = self.make_user("DOCTOR")
        self.warm_everywhere(u["access"])
        r = self.req("PATCH", "/api/admin/users/%d/" % u["id"], {"role": "REGISTERED_USER"}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), role="REGISTERED_USER")
        self.old_token_refused_everywhere(u["access"])
        # a new login works at once, on every worker, with the new role
        fresh = self.login(u["email"], u["password"], server=self.servers[1])
        for s in self.servers:
            got = warm(lambda: self.req("GET", "/api/auth/me/", token=fresh, server=s), 8)
            self.assertEqual(got, [200] * 8)
        self.assertEqual(self.req("GET", "/api/auth/me/", token=fresh).json()["role"], "REGISTERED_USER")

    def test_admin_password_and_pharmacy_changes_end_old_tokens_at_once(self):
        u = self.make_user("DOCTOR")
        self.warm_everywhere(u["access"])
        new = new_password()
        r = self.req("PATCH", "/api/admin/users/%d/" % u["id"], {"password": new}, token=self.admin,
                     server=self.servers[1])
        self.assertEqual(r.status, 200, r)
        self.old_token_refused_everywhere(u["access"])
        p = self.make_pharmacy()
        token = self.login(u["email"], new)
        self.warm_everywhere(token)
        r = self.req("PATCH", "/api/admin/users/%d/" % u["id"], {"role": "PHARMACY_ADMIN", "pharmacy": p["id"]},
                     token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.old_token_refused_everywhere(token)

    def test_cli_set_role_ends_old_tokens_at_once(self):
        u = self.make_user("DOCTOR")
        self.warm_everywhere(u["access"])
        r = self.cli("users", "set-role", u["email"], "REGISTERED_USER")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("Redis unreachable", r.stderr)
        self.old_token_refused_everywhere(u["access"])


# ==========================================================================
# Admin users and the audit log
# ==========================================================================

class AdminUsers(RbacCase):
    DB = "rbac_admin"
    REDIS_DB = 3

    def list(self, query="", prefix="/api/admin/users/"):
        r = self.req("GET", prefix + query, token=self.admin)
        return self.assertEnvelope(r)

    def test_create_validation(self):
        ph = self.make_pharmacy()
        # a pharmacy admin must have a pharmacy
        r = self.req("POST", "/api/admin/users/", {"username": "U " + uid(), "email": new_email(),
                                                   "password": new_password(), "role": "PHARMACY_ADMIN"},
                     token=self.admin)
        self.assertFieldError(r, "pharmacy")
        # an unknown pharmacy, a bad role, a weak password, a duplicate email
        r = self.req("POST", "/api/admin/users/", {"username": "U " + uid(), "email": new_email(),
                                                   "password": new_password(), "role": "PHARMACY_ADMIN",
                                                   "pharmacy": 99999999}, token=self.admin)
        self.assertFieldError(r, "pharmacy")
        r = self.req("POST", "/api/admin/users/", {"username": "U " + uid(), "email": new_email(),
                                                   "password": new_password(), "role": "KING"}, token=self.admin)
        self.assertFieldError(r, "role")
        r = self.req("POST", "/api/admin/users/", {"username": "U " + uid(), "email": new_email(),
                                                   "password": "weak", "role": "DOCTOR"}, token=self.admin)
        self.assertFieldError(r, "password")
        r = self.req("POST", "/api/admin/users/", {"username": "U " + uid(), "email": self.admin_email.upper(),
                                                   "password": new_password(), "role": "DOCTOR"}, token=self.admin)
        self.assertFieldError(r, "email")
        # other roles: no pharmacy (refused, or cleared — never kept)
        r = self.req("POST", "/api/admin/users/", {"username": "U " + uid(), "email": new_email(),
                                                   "password": new_password(), "role": "DOCTOR",
                                                   "pharmacy": ph["id"]}, token=self.admin)
        if r.status == 201:
            self.assertUser(r.json(), pharmacy=None)
            self.assertEqual(self.user_row(r.json()["id"])[2], "<null>")
        else:
            self.assertFieldError(r, "pharmacy")
        u = self.make_user("PHARMACY_ADMIN", pharmacy=ph["id"])
        self.assertEqual(self.user_row(u["id"])[:3], ["PHARMACY_ADMIN", "ACTIVE", str(ph["id"])])
        r = self.req("GET", "/api/auth/me/", token=u["access"])
        self.assertUser(r.json(), role="PHARMACY_ADMIN", pharmacy=ph["id"])

    def test_list_filters_envelope_and_paging(self):
        tag = uid()
        d = self.make_user("DOCTOR", username="Doc %s" % tag)
        ru = self.make_user("REGISTERED_USER", username="Reg %s" % tag)
        inactive = self.make_user("REGISTERED_USER", username="Off %s" % tag)
        self.assertEqual(self.req("PATCH", "/api/admin/users/%d/" % inactive["id"], {"status": "INACTIVE"},
                                  token=self.admin).status, 200)
        body = self.list("?role=DOCTOR&page_size=1000")
        self.assertTrue(body["results"])
        self.assertTrue(all(u["role"] == "DOCTOR" for u in body["results"]), body)
        self.assertIn(d["id"], [u["id"] for u in body["results"]])
        self.assertEqual(body["count"], int(self.sql("SELECT count(*) FROM users WHERE role = 'DOCTOR' "
                                                      "AND deleted_at IS NULL")))
        body = self.list("?status=INACTIVE&page_size=1000")
        self.assertTrue(all(u["status"] == "INACTIVE" for u in body["results"]), body)
        self.assertIn(inactive["id"], [u["id"] for u in body["results"]])
        body = self.list("?search=%s" % tag)
        self.assertEqual(sorted(u["id"] for u in body["results"]), sorted([d["id"], ru["id"], inactive["id"]]))
        for u in body["results"]:
            self.assertUser(u)
        body = self.list("?search=%s" % ru["email"].split("@")[0].upper())
        self.assertEqual([u["id"] for u in body["results"]], [ru["id"]])
        body = self.list("?search=%s&role=REGISTERED_USER&status=ACTIVE" % tag)
        self.assertEqual([u["id"] for u in body["results"]], [ru["id"]])
        body = self.list("?search=nobody-%s" % uid())
        self.assertEqual((body["count"], body["results"], body["next"], body["previous"]), (0, [], None, None))
        # paging
        body = self.list("?search=%s&page_size=1" % tag)
        self.assertEqual(body["count"], 3)
        self.assertEqual(len(body["results"]), 1)
        self.assertIsNotNone(body["next"])
        self.assertIsNone(body["previous"])
        self.assertIn("page=2", body["next"])
        body = self.list("?search=%s&page_size=1&page=2" % tag)
        self.assertIsNotNone(body["previous"])
        r = self.req("GET", "/api/admin/users/?search=%s&page=5" % tag, token=self.admin)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json(), {"detail": "Invalid page.", "code": "not_found"})
        # the default page size is 20
        for _ in range(max(0, 21 - int(self.sql("SELECT count(*) FROM users WHERE deleted_at IS NULL")))):
            self.make_user("REGISTERED_USER", login=False)
        body = self.list("")
        self.assertEqual(len(body["results"]), 20)
        self.assertGreaterEqual(body["count"], 21)

    def test_soft_delete_and_restore(self, prefix="/api/admin/users/"):
        u = self.make_user("DOCTOR")
        r = self.req("DELETE", "%s%d/" % (prefix, u["id"]), token=self.admin)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.user_row(u["id"])[3], "t")
        self.assertNotIn(u["id"], [x["id"] for x in self.list("?page_size=1000", prefix)["results"]])
        self.assertNotIn(u["id"], [x["id"] for x in self.list("?search=%s" % u["email"], prefix)["results"]])
        self.assertIn(u["id"], [x["id"] for x in self.list("?deleted=true&page_size=1000", prefix)["results"]])
        self.assertError(self.req("POST", "/api/auth/login/", {"email": u["email"], "password": u["password"]}),
                         403, "account_inactive")
        r = self.req("POST", "%s%d/restore/" % (prefix, u["id"]), token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), id=u["id"])
        self.assertEqual(self.user_row(u["id"])[3], "f")
        self.assertIn(u["id"], [x["id"] for x in self.list("?page_size=1000", prefix)["results"]])
        self.login(u["email"], u["password"])
        self.assertEqual(len(self.audit_rows("USER_DELETED", u["id"])), 1)
        self.assertEqual(len(self.audit_rows("USER_RESTORED", u["id"])), 1)
        self.assertEqual(self.audit_rows("USER_DELETED", u["id"])[0].split("|")[0], str(self.admin_id))

    def test_changes_end_sessions_of_the_same_second_only(self):
        """A change that ends a user's sessions (role, password, deactivation)
        kills a token issued just before it and spares one issued just after,
        within the same second too (tokens carry a session generation; iat is
        whole seconds)."""
        # A fresh user for every change: a worker that served one of the user's
        # tokens remembers the user's standing for auth.status_cache_ms, and
        # this test is about the tokens, not about that interval.
        same_second = 0
        for _ in range(4):
            pw2 = new_password()
            for body in ({"role": "DOCTOR"}, {"password": pw2}, {"status": "INACTIVE"}):
                u = self.make_user("REGISTERED_USER", login=False)
                before_pw, after_pw = u["password"], body.get("password", u["password"])
                t0 = time.time()
                old = self.login(u["email"], before_pw)
                r = self.req("PATCH", "/api/admin/users/%d/" % u["id"], body, token=self.admin)
                self.assertEqual(r.status, 200, (body, r))
                if body.get("status") == "INACTIVE":
                    r = self.req("PATCH", "/api/admin/users/%d/" % u["id"], {"is_active": True},
                                 token=self.admin)
                    self.assertEqual(r.status, 200, r)
                new = self.login(u["email"], after_pw)
                t1 = time.time()
                po, pn = jwt_parts(old)[1], jwt_parts(new)[1]
                self.assertGreater(pn["gen"], po["gen"], (body, po, pn))
                if po["iat"] == pn["iat"] and t1 - t0 < 1.0:
                    same_second += 1
                r = self.req("GET", "/api/auth/me/", token=new)
                self.assertEqual(r.status, 200, (body, r))
                self.assertEqual(r.json()["role"], self.user_row(u["id"])[0], r)
                r = self.req("GET", "/api/auth/me/", token=old)
                self.assertEqual(r.status, 401, (body, r))
                self.assertEqual(r.json().get("code"), "token_not_valid", r)
        self.assertGreaterEqual(same_second, 1, "no change happened within one second of both logins")

    def test_old_admin_panel_paths(self):
        prefix = "/api/auth/admin/users/"
        u = self.make_user("REGISTERED_USER", prefix=prefix)
        r = self.req("GET", "%s%d/" % (prefix, u["id"]), token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), self.req("GET", "/api/admin/users/%d/" % u["id"], token=self.admin).json())
        r = self.req("PATCH", "%s%d/" % (prefix, u["id"]), {"role": "DOCTOR"}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), role="DOCTOR")
        self.assertEqual(self.user_row(u["id"])[0], "DOCTOR")
        r = self.req("PUT", "%s%d/" % (prefix, u["id"]), {"role": "REGISTERED_USER", "is_active": True},
                     token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.user_row(u["id"])[0], "REGISTERED_USER")
        self.assertIn(u["id"], [x["id"] for x in self.list("?search=%s" % u["email"], prefix)["results"]])
        self.test_soft_delete_and_restore(prefix)
        # and they are just as closed to others: u's token from before the role
        # changes is dead, a login right after them (often the same second) is
        # a registered user's
        r = self.req("GET", prefix, token=u["access"])
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json().get("code"), "token_not_valid", r)
        self.assertDenied(self.req("GET", prefix, token=self.login(u["email"], u["password"])))
        self.assertGuest(self.req("GET", prefix))

    def test_changes_are_audited(self):
        ph1, ph2 = self.make_pharmacy(), self.make_pharmacy()
        u = self.make_user("REGISTERED_USER")
        uid_ = u["id"]
        steps = [({"role": "PHARMACY_ADMIN", "pharmacy": ph1["id"]}, ("ROLE_CHANGED", "PHARMACY_CHANGED")),
                 ({"pharmacy": ph2["id"]}, ("PHARMACY_CHANGED",)),
                 ({"status": "LOCKED"}, ("STATUS_CHANGED",)),
                 ({"is_active": True}, ("STATUS_CHANGED",)),
                 ({"role": "DOCTOR", "pharmacy": None}, ("ROLE_CHANGED", "PHARMACY_CHANGED"))]
        expected = {}
        for body, actions in steps:
            r = self.req("PATCH", "/api/admin/users/%d/" % uid_, body, token=self.admin)
            self.assertEqual(r.status, 200, (body, r))
            for a in actions:
                expected[a] = expected.get(a, 0) + 1
        self.assertEqual(self.user_row(uid_)[:3], ["DOCTOR", "ACTIVE", "<null>"])
        # a PATCH that changes nothing records nothing
        self.assertEqual(self.req("PATCH", "/api/admin/users/%d/" % uid_, {"role": "DOCTOR"},
                                  token=self.admin).status, 200)
        self.assertEqual(self.req("DELETE", "/api/admin/users/%d/" % uid_, token=self.admin).status, 204)
        self.assertEqual(self.req("POST", "/api/admin/users/%d/restore/" % uid_, token=self.admin).status, 200)
        expected["USER_DELETED"] = 1
        expected["USER_RESTORED"] = 1
        for action, n in expected.items():
            rows = self.audit_rows(action, uid_)
            self.assertEqual(len(rows), n, (action, rows))
            for row in rows:
                self.assertEqual(row.split("|")[0], str(self.admin_id), (action, row))
            r = self.req("GET", "/api/admin/audit-logs/?action=%s&user=%d" % (action, uid_), token=self.admin)
            body = self.assertEnvelope(r)
            self.assertEqual(body["count"], n, (action, body))
            for row in body["results"]:
                self.assertEqual(row["action"], action, row)
            r = self.req("GET", "/api/admin/audit-logs/?action=%s&page_size=1000" % action, token=self.admin)
            body = self.assertEnvelope(r)
            self.assertEqual(body["count"], int(self.sql("SELECT count(*) FROM %s WHERE action = '%s'"
                                                         % (af.AUDIT_TABLE, action))))
            self.assertTrue(all(x["action"] == action for x in body["results"]), body)
        # key events
        k = self.make_key(ph1["id"])
        self.assertEqual(self.req("DELETE", "/api/pharmacies/%d/api-keys/%d/" % (ph1["id"], k["id"]),
                                  token=self.admin).status, 204)
        for action in ("API_KEY_CREATED", "API_KEY_REVOKED"):
            rows = self.sql("SELECT coalesce(actor::text, ''), metadata::text FROM %s WHERE action = '%s'"
                            % (af.AUDIT_TABLE, action)).splitlines()
            self.assertEqual(len(rows), 1, (action, rows))
            self.assertNotIn(k["key"], rows[0])
            body = self.assertEnvelope(self.req("GET", "/api/admin/audit-logs/?action=%s" % action, token=self.admin))
            self.assertEqual(body["count"], 1, body)
            self.assertEqual(body["results"][0]["action"], action)
        # detail and time filters
        body = self.assertEnvelope(self.req("GET", "/api/admin/audit-logs/?action=ROLE_CHANGED", token=self.admin))
        one = body["results"][0]
        r = self.req("GET", "/api/admin/audit-logs/%d/" % one["id"], token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), one)
        self.assertError(self.req("GET", "/api/admin/audit-logs/99999999/", token=self.admin), 404, "not_found")
        body = self.assertEnvelope(self.req("GET", "/api/admin/audit-logs/?action=ROLE_CHANGED"
                                            "&created_after=2999-01-01T00:00:00Z", token=self.admin))
        self.assertEqual(body["count"], 0)
        body = self.assertEnvelope(self.req("GET", "/api/admin/audit-logs/?action=ROLE_CHANGED"
                                            "&created_before=2999-01-01T00:00:00Z", token=self.admin))
        self.assertGreaterEqual(body["count"], 2)
        self.assertEqual(self.req("GET", "/api/admin/audit-logs/?created_after=garbage",
                                  token=self.admin).status, 400)

    def test_audit_logs_are_read_only(self):
        self.make_user("DOCTOR")  # at least one row
        n = self.sql("SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || "
                     "coalesce(md5(string_agg(a::text, ',' ORDER BY id)), '') FROM %s a" % af.AUDIT_TABLE)
        some = int(self.sql("SELECT max(id) FROM %s" % af.AUDIT_TABLE))
        body = {"action": "LOGIN", "user": self.admin_id, "metadata": {}}
        for path in ("/api/admin/audit-logs/", "/api/admin/audit-logs/%d/" % some):
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                r = self.req(method, path, None if method == "DELETE" else body, token=self.admin)
                self.assertEqual(r.status, 405, (method, path, r))
                allow = [m.strip().upper() for m in (r.header("allow") or "").split(",")]
                self.assertIn("GET", allow, r)
                for m in ("POST", "PUT", "PATCH", "DELETE"):
                    self.assertNotIn(m, allow, r)
        self.assertEqual(self.sql("SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || "
                                  "coalesce(md5(string_agg(a::text, ',' ORDER BY id)), '') FROM %s a"
                                  % af.AUDIT_TABLE), n)

    def test_password_set_by_admin(self):
        u = self.make_user("DOCTOR")
        new = new_password()
        self.assertEqual(self.req("PATCH", "/api/admin/users/%d/" % u["id"], {"password": ""},
                                  token=self.admin).status, 200)
        self.login(u["email"], u["password"])
        r = self.req("PATCH", "/api/admin/users/%d/" % u["id"], {"password": new}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        r, _ = until_refused(lambda: self.req("GET", "/api/auth/me/", token=u["access"]), 3.0)
        self.assertError(r, 401, "token_not_valid")
        self.login(u["email"], new)
        r = self.req("POST", "/api/auth/login/", {"email": u["email"], "password": u["password"]})
        self.assertError(r, 401, "invalid_credentials")
        self.assertFieldError(self.req("PATCH", "/api/admin/users/%d/" % u["id"], {"password": "weak"},
                                       token=self.admin), "password")

    def test_unknown_user_is_404(self):
        for method in ("GET", "PATCH", "DELETE"):
            r = self.req(method, "/api/admin/users/99999999/", {} if method == "PATCH" else None, token=self.admin)
            self.assertError(r, 404, "not_found")
        self.assertError(self.req("POST", "/api/admin/users/99999999/restore/", token=self.admin), 404, "not_found")


class LastSuperAdmin(RbacCase):
    DB = "rbac_last"
    REDIS_DB = 4

    def test_last_active_super_admin_is_protected(self):
        me = "/api/admin/users/%d/" % self.admin_id

        def refused(r):
            self.assertError(r, 409, "last_super_admin")
            self.assertEqual(self.user_row(self.admin_id)[:2], ["SUPER_ADMIN", "ACTIVE"])
            self.assertEqual(self.user_row(self.admin_id)[3], "f")

        self.assertEqual(self.sql("SELECT count(*) FROM users WHERE role = 'SUPER_ADMIN'"), "1")
        refused(self.req("PATCH", me, {"role": "DOCTOR"}, token=self.admin))
        refused(self.req("PATCH", me, {"is_active": False}, token=self.admin))
        refused(self.req("PATCH", me, {"status": "INACTIVE"}, token=self.admin))
        refused(self.req("PATCH", me, {"status": "LOCKED"}, token=self.admin))
        refused(self.req("PUT", me, {"role": "REGISTERED_USER"}, token=self.admin))
        refused(self.req("DELETE", me, token=self.admin))
        refused(self.req("PATCH", "/api/auth/admin/users/%d/" % self.admin_id, {"role": "DOCTOR"}, token=self.admin))
        # an inactive or deleted second super admin does not count
        s2 = self.make_user("SUPER_ADMIN")
        self.assertEqual(self.req("PATCH", "/api/admin/users/%d/" % s2["id"], {"is_active": False},
                                  token=self.admin).status, 200)
        refused(self.req("PATCH", me, {"role": "DOCTOR"}, token=self.admin))
        self.assertEqual(self.req("PATCH", "/api/admin/users/%d/" % s2["id"], {"is_active": True},
                                  token=self.admin).status, 200)
        self.assertEqual(self.req("DELETE", "/api/admin/users/%d/" % s2["id"], token=self.admin).status, 204)
        refused(self.req("DELETE", me, token=self.admin))
        self.assertEqual(self.req("POST", "/api/admin/users/%d/restore/" % s2["id"], token=self.admin).status, 200)
        # with another active super admin, each can be demoted, deactivated or deleted
        s2_token = self.login(s2["email"], s2["password"])
        r = self.req("PATCH", me, {"role": "DOCTOR"}, token=s2_token)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.user_row(self.admin_id)[0], "DOCTOR")
        # now s2 is the last one
        r = self.req("PATCH", "/api/admin/users/%d/" % s2["id"], {"role": "DOCTOR"}, token=s2_token)
        self.assertError(r, 409, "last_super_admin")
        self.assertError(self.req("DELETE", "/api/admin/users/%d/" % s2["id"], token=s2_token), 409,
                         "last_super_admin")
        self.assertEqual(self.user_row(s2["id"])[:2], ["SUPER_ADMIN", "ACTIVE"])
        r = self.req("PATCH", me, {"role": "SUPER_ADMIN"}, token=s2_token)
        self.assertEqual(r.status, 200, r)
        admin = self.login(self.admin_email, self.admin_password)
        r = self.req("PATCH", "/api/admin/users/%d/" % s2["id"], {"is_active": False}, token=admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.req("PATCH", "/api/admin/users/%d/" % s2["id"], {"is_active": True},
                                  token=admin).status, 200)
        self.assertEqual(self.req("DELETE", "/api/admin/users/%d/" % s2["id"], token=admin).status, 204)
        self.assertEqual(self.user_row(s2["id"])[3], "t")
        self.assertError(self.req("DELETE", me, token=admin), 409, "last_super_admin")
        self.assertEqual(len(self.audit_rows("ROLE_CHANGED", self.admin_id)), 2)


# ==========================================================================
# Operator commands
# ==========================================================================

class OperatorCommands(RbacCase):
    DB = "rbac_cli"
    REDIS_DB = 5

    def test_users_list_and_set_role(self):
        ph = self.make_pharmacy()
        u = self.make_user("REGISTERED_USER")
        r = self.cli("users", "list")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(u["email"], r.stdout)
        self.assertIn(self.admin_email, r.stdout)
        r = self.cli("users", "list", "--role", "SUPER_ADMIN")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(self.admin_email, r.stdout)
        self.assertNotIn(u["email"], r.stdout)
        # a pharmacy admin needs --pharmacy
        r = self.cli("users", "set-role", u["email"], "PHARMACY_ADMIN")
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue((r.stdout + r.stderr).strip())
        self.assertEqual(self.user_row(u["id"])[:3], ["REGISTERED_USER", "ACTIVE", "<null>"])
        r = self.cli("users", "set-role", u["email"], "PHARMACY_ADMIN", "--pharmacy", "99999999")
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.user_row(u["id"])[0], "REGISTERED_USER")
        r = self.cli("users", "set-role", u["email"], "PHARMACY_ADMIN", "--pharmacy", str(ph["id"]))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.user_row(u["id"])[:3], ["PHARMACY_ADMIN", "ACTIVE", str(ph["id"])])
        r = self.cli("users", "list", "--role", "PHARMACY_ADMIN")
        self.assertIn(u["email"], r.stdout)
        # applies from the next login
        t = self.login(u["email"], u["password"])
        r = self.req("GET", "/api/auth/me/", token=t)
        self.assertUser(r.json(), role="PHARMACY_ADMIN", pharmacy=ph["id"])
        r = self.req("GET", "/api/pharmacies/", token=t)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([p["id"] for p in r.json()], [ph["id"]])
        # other roles clear the pharmacy; bad role / unknown user → non-zero
        r = self.cli("users", "set-role", u["email"], "DOCTOR")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.user_row(u["id"])[:3], ["DOCTOR", "ACTIVE", "<null>"])
        r = self.cli("users", "set-role", u["email"], "KING")
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.user_row(u["id"])[0], "DOCTOR")
        r = self.cli("users", "set-role", new_email(), "DOCTOR")
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertGreaterEqual(len(self.audit_rows("ROLE_CHANGED", u["id"])), 2)

    def test_apikey_create_list_revoke(self):
        ph = self.make_pharmacy()
        r = self.cli("apikey", "create", "--pharmacy", str(ph["id"]), "--name", "pos")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = [l for l in r.stdout.splitlines() if l.strip()]
        self.assertTrue(lines, r.stdout)
        key = lines[-1]
        self.assertEqual(key, key.strip())
        self.assertNotIn(" ", key)
        self.assertNotIn(key, r.stderr)
        r = self.req("GET", "/api/pharmacies/%d/" % ph["id"], key=key)
        self.assertEqual(r.status, 200, r)
        self.assertPharmacy(r.json(), id=ph["id"])
        # listed, by the API and the CLI, without the clear key
        r = self.req("GET", "/api/pharmacies/%d/api-keys/" % ph["id"], token=self.admin)
        self.assertEqual(r.status, 200, r)
        listed = r.json()
        if isinstance(listed, dict):
            listed = listed["results"]
        self.assertEqual(len(listed), 1, listed)
        self.assertEqual(listed[0]["name"], "pos")
        self.assertNotIn(key, r.body.decode())
        key_id = listed[0]["id"]
        r = self.cli("apikey", "list", "--pharmacy", str(ph["id"]))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(str(key_id), r.stdout)
        self.assertNotIn(key, r.stdout + r.stderr)
        self.assertGreaterEqual(int(self.sql("SELECT count(*) FROM %s WHERE action = 'API_KEY_CREATED'"
                                             % af.AUDIT_TABLE)), 1)
        # a pharmacy that does not exist
        r = self.cli("apikey", "create", "--pharmacy", "99999999")
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        # revoke: the CLI publishes the revocation like the API does, so every
        # worker that cached the key refuses it at once (not after the cache TTL)
        self.assertEqual(warm(lambda: self.req("GET", "/api/pharmacies/", key=key)), [200] * 6)
        r = self.cli("apikey", "revoke", str(key_id))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("unreachable", r.stdout)
        r, took = until_refused(lambda: self.req("GET", "/api/pharmacies/", key=key), 5)
        self.assertBadKey(r)
        self.assertLessEqual(took, 1.5)
        self.assertGreaterEqual(int(self.sql("SELECT count(*) FROM %s WHERE action = 'API_KEY_REVOKED'"
                                             % af.AUDIT_TABLE)), 1)
        r = self.cli("apikey", "revoke", "99999999")
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
