"""test_inventory — the connector's InventoryItem and Sale resources, bulk upsert and the
webhook apply tasks end to end, against the contract (../shared/API.md: "Conventions",
"Connector").

Real rxd processes (`serve --migrate`, modules `notify auth rbac pharmacies inventory webhooks`)
on a private PostgreSQL (pgtemp) and Redis (redistemp). Every TestCase class has its own
database, super admin, two pharmacies (A, B) with an API key each and a pharmacy admin of A.
The database is read with psql to check what really changed (and what did not).
"""
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgtemp import PgTemp  # noqa: E402
from redistemp import RedisTemp  # noqa: E402
from rxdtest import run_cli  # noqa: E402
import authflows as af  # noqa: E402
from authflows import AuthServer, ISO_Z_RE, new_email, new_password, uid  # noqa: E402

MODULES = "notify auth rbac pharmacies inventory webhooks"
ITEM_FIELDS = {"id", "pharmacy", "sku", "name", "quantity", "price", "extra_data", "updated_at"}
SALE_FIELDS = {"id", "pharmacy", "inventory_item", "quantity", "total_price", "sale_time",
               "extra_data", "created_at"}
NOT_FOUND = {"detail": "Not found.", "code": "not_found"}
DENIED = {"detail": "You do not have permission to perform this action.", "code": "permission_denied"}
DUP_SKU = "inventory item with this sku already exists."
MSG_NUMBER = "A valid number is required."
MSG_PLACES = "Ensure that there are no more than 2 decimal places."
MSG_DIGITS = "Ensure that there are no more than 10 digits in total."
MSG_WHOLE = "Ensure that there are no more than 8 digits before the decimal point."
MSG_REQUIRED = "This field is required."

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


class InvServer(AuthServer):
    def __init__(self, pg_url, redis_url, workers=4, spy=False):
        super().__init__(pg_url, redis_url, ratelimit=False, workers=workers)
        self.env["RXD_MODULES"] = MODULES + (" eventspy" if spy else "")
        # eventspy (tests/modules/eventspy.c, built next to the modules, never
        # installed) writes every inventory.updated / inventory.low_stock /
        # sale.created here.
        self.spy_path = os.path.join(self.dir.name, "events.jsonl")
        self.env["RXD_EVENTSPY_FILE"] = self.spy_path
        self.env["RXD_EVENTSPY_EVENTS"] = "inventory.updated inventory.low_stock sale.created"

    def events(self):
        try:
            with open(self.spy_path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []


def parallel(fns):
    """Run every fn at once (released together by a barrier); their results in order."""
    out = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i, fn):
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the assertions
            out[i] = e
    ts = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


class InvCase(unittest.TestCase):
    DB = None
    REDIS_DB = 2
    SPY = False

    @classmethod
    def setUpClass(cls):
        cls.pg_url = PG.create_database(cls.DB)
        cls.redis_url = REDIS.url(db=cls.REDIS_DB)
        cls.server = InvServer(cls.pg_url, cls.redis_url, spy=cls.SPY)
        try:
            cls.server.start()
            email, password = new_email(), new_password()
            env = af.auth_env(cls.pg_url, cls.redis_url, ratelimit=False)
            r = run_cli("createsuperuser", "--email", email, "--password-stdin", env=env,
                        modules=MODULES, stdin=password + "\n", timeout=60)
            if r.returncode != 0:
                raise AssertionError("createsuperuser failed: %s%s" % (r.stdout, r.stderr))
            r = cls.server.request("POST", "/api/auth/login/", {"email": email, "password": password})
            if r.status != 200:
                raise AssertionError("super admin login failed: %r" % r)
            cls.admin = r.json()["access"]
            cls.pa = cls._pharmacy()
            cls.pb = cls._pharmacy()
            cls.ka = cls._key(cls.pa)
            cls.kb = cls._key(cls.pb)
            e2, p2 = new_email(), new_password()
            r = cls.server.request("POST", "/api/admin/users/",
                                   {"username": "PA " + uid(), "email": e2, "password": p2,
                                    "role": "PHARMACY_ADMIN", "pharmacy": cls.pa},
                                   headers={"Authorization": "Bearer " + cls.admin})
            if r.status != 201:
                raise AssertionError("pharmacy admin: %r" % r)
            r = cls.server.request("POST", "/api/auth/login/", {"email": e2, "password": p2})
            cls.pa_admin = r.json()["access"]
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    @classmethod
    def _pharmacy(cls):
        r = cls.server.request("POST", "/api/pharmacies/", {"name": "Ph " + uid()},
                               headers={"Authorization": "Bearer " + cls.admin})
        if r.status != 201:
            raise AssertionError("pharmacy: %r" % r)
        return r.json()["id"]

    @classmethod
    def _key(cls, pid):
        r = cls.server.request("POST", "/api/pharmacies/%d/api-keys/" % pid, {"name": "k"},
                               headers={"Authorization": "Bearer " + cls.admin})
        if r.status != 201:
            raise AssertionError("key: %r" % r)
        return r.json()["key"]

    # -- HTTP ----------------------------------------------------------------

    def req(self, method, path, body=None, token=None, key=None, headers=None, timeout=20.0):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if key is not None:
            h["X-API-KEY"] = key
        return self.server.request(method, path, body=body, headers=h, timeout=timeout)

    def item(self, key=None, token=None, **fields):
        body = {"sku": "SKU-" + uid(), "name": "Item " + uid(), "quantity": 10, "price": "2.50"}
        body.update(fields)
        r = self.req("POST", "/api/inventory/", body, key=key if token is None else None, token=token)
        self.assertEqual(r.status, 201, r)
        return self.assertItem(r.json())

    # -- assertions ----------------------------------------------------------

    def assertItem(self, it, **expected):
        self.assertLessEqual(ITEM_FIELDS, set(it), it)
        self.assertIsInstance(it["id"], int)
        self.assertIsInstance(it["quantity"], int)
        self.assertIsInstance(it["price"], str)
        self.assertRegex(it["price"], r"^-?\d+\.\d\d$")
        self.assertRegex(it["updated_at"], ISO_Z_RE)
        for k, v in expected.items():
            self.assertEqual(it[k], v, "item.%s: %r" % (k, it))
        return it

    def assertSale(self, s, **expected):
        self.assertEqual(set(s), SALE_FIELDS, s)
        self.assertRegex(s["total_price"], r"^-?\d+\.\d\d$")
        self.assertRegex(s["sale_time"], ISO_Z_RE)
        self.assertRegex(s["created_at"], ISO_Z_RE)
        for k, v in expected.items():
            self.assertEqual(s[k], v, "sale.%s: %r" % (k, s))
        return s

    def assertInvalid(self, r, expected):
        """400 whose body is exactly expected plus "code": "invalid"."""
        self.assertEqual(r.status, 400, r)
        want = dict(expected)
        want["code"] = "invalid"
        self.assertEqual(r.json(), want, r)

    def assertNotFound(self, r):
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json(), NOT_FOUND, r)

    def sql(self, text):
        return PG.psql(text, dbname=self.DB)

    def stock(self, item_id):
        return int(self.sql("SELECT quantity FROM inventory_items WHERE id = %d" % item_id))

    def count(self, table, where="true"):
        return int(self.sql("SELECT count(*) FROM %s WHERE %s" % (table, where)))


# ==========================================================================
# Items
# ==========================================================================

class Items(InvCase):
    DB = "inv_items"

    def test_create_defaults_get_and_row(self):
        sku = "A-" + uid()
        r = self.req("POST", "/api/inventory/",
                     {"sku": sku, "name": "Napa 500", "quantity": 12, "price": "7.5",
                      "id": 999999, "updated_at": "2000-01-01T00:00:00Z"}, key=self.ka)
        self.assertEqual(r.status, 201, r)
        it = self.assertItem(r.json(), sku=sku, name="Napa 500", quantity=12, price="7.50",
                             extra_data=None, pharmacy=self.pa)
        self.assertNotEqual(it["id"], 999999)
        self.assertFalse(it["updated_at"].startswith("2000"), it)
        g = self.req("GET", "/api/inventory/%d/" % it["id"], key=self.ka)
        self.assertEqual(g.status, 200, g)
        self.assertEqual(g.json(), it)
        self.assertEqual(self.sql("SELECT pharmacy_id, sku, quantity, price, extra_data IS NULL"
                                  " FROM inventory_items WHERE id = %d" % it["id"]),
                         "%d|%s|12|7.50|t" % (self.pa, sku))

    def test_money_in_and_out(self):
        for given, out in (("7.5", "7.50"), (14.5, "14.50"), (10, "10.00"), ("0.1", "0.10"),
                           (" 3 ", "3.00"), ("12345678.99", "12345678.99"), ("1e2", "100.00"),
                           (0.07, "0.07"), ("-1.5", "-1.50")):
            it = self.item(key=self.ka, price=given)
            self.assertEqual(it["price"], out, given)
        for given, msg in (("1.234", MSG_PLACES), (1.234, MSG_PLACES),
                           ("123456789.00", MSG_DIGITS), ("123456789", MSG_WHOLE),
                           (123456789, MSG_WHOLE), ("abc", MSG_NUMBER), ("", MSG_NUMBER),
                           (True, MSG_NUMBER), ([1], MSG_NUMBER), ("NaN", MSG_NUMBER),
                           (None, "This field may not be null.")):
            before = self.count("inventory_items")
            r = self.req("POST", "/api/inventory/", {"sku": "M-" + uid(), "name": "m",
                                                      "quantity": 1, "price": given}, key=self.ka)
            self.assertInvalid(r, {"price": [msg]})
            self.assertEqual(self.count("inventory_items"), before)

    def test_required_and_field_rules(self):
        r = self.req("POST", "/api/inventory/", {}, key=self.ka)
        self.assertInvalid(r, {f: [MSG_REQUIRED] for f in ("sku", "name", "quantity", "price")})
        base = {"sku": "F-" + uid(), "name": "n", "quantity": 1, "price": "1.00"}
        cases = (
            ({"sku": "x" * 101}, "sku", "Ensure this field has no more than 100 characters."),
            ({"name": "x" * 256}, "name", "Ensure this field has no more than 255 characters."),
            ({"sku": "  "}, "sku", "This field may not be blank."),
            ({"name": None}, "name", "This field may not be null."),
            ({"sku": {"a": 1}}, "sku", "Not a valid string."),
            ({"quantity": -1}, "quantity", "Ensure this value is greater than or equal to 0."),
            ({"quantity": "abc"}, "quantity", "A valid integer is required."),
            ({"quantity": 1.5}, "quantity", "A valid integer is required."),
            ({"quantity": True}, "quantity", "A valid integer is required."),
            ({"quantity": 2147483648}, "quantity",
             "Ensure this value is less than or equal to 2147483647."),
            ({"extra_data": [1, 2]}, "extra_data",
             'Expected a dictionary of items but got type "list".'),
            ({"extra_data": {"blob": "x" * 66000}}, "extra_data",
             "Ensure this field has no more than 65536 bytes when serialized."),
        )
        for patch, field, msg in cases:
            body = dict(base, **patch)
            r = self.req("POST", "/api/inventory/", body, key=self.ka)
            self.assertInvalid(r, {field: [msg]})
        self.assertEqual(self.count("inventory_items", "sku = '%s'" % base["sku"]), 0)
        # accepted spellings
        it = self.item(key=self.ka, quantity="5", sku="  S-%s " % uid())
        self.assertEqual(it["quantity"], 5)
        self.assertFalse(it["sku"].startswith(" ") or it["sku"].endswith(" "), it)
        it = self.item(key=self.ka, quantity=0, sku="x" * 100, name="y" * 255)
        self.assertEqual(it["quantity"], 0)
        big = {"blob": "x" * 60000, "nested": {"a": [1, 2, {"b": None}]}}
        it = self.item(key=self.ka, extra_data=big)
        self.assertEqual(self.req("GET", "/api/inventory/%d/" % it["id"], key=self.ka).json()["extra_data"], big)
        it = self.item(key=self.ka, extra_data=None)
        self.assertIsNone(it["extra_data"])

    def test_body_shapes(self):
        r = self.req("POST", "/api/inventory/", [{"sku": "x"}], key=self.ka)
        self.assertInvalid(r, {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]})
        r = self.req("POST", "/api/inventory/", b'{"sku": ', key=self.ka,
                     headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        r = self.req("POST", "/api/inventory/", b"sku=x", key=self.ka,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 415, r)

    def test_duplicate_sku(self):
        it = self.item(key=self.ka)
        before = self.count("inventory_items")
        r = self.req("POST", "/api/inventory/", {"sku": it["sku"], "name": "other", "quantity": 1,
                                                  "price": 1}, key=self.ka)
        self.assertInvalid(r, {"sku": [DUP_SKU]})
        self.assertEqual(self.count("inventory_items"), before)
        # the same sku in another pharmacy is another item
        other = self.item(key=self.kb, sku=it["sku"])
        self.assertEqual(other["pharmacy"], self.pb)
        # renaming onto an existing sku
        it2 = self.item(key=self.ka)
        r = self.req("PATCH", "/api/inventory/%d/" % it2["id"], {"sku": it["sku"]}, key=self.ka)
        self.assertInvalid(r, {"sku": [DUP_SKU]})
        self.assertEqual(self.sql("SELECT sku FROM inventory_items WHERE id = %d" % it2["id"]), it2["sku"])

    def test_pharmacy_in_create_body(self):
        before = self.count("inventory_items")
        for cred in ({"key": self.ka}, {"token": self.pa_admin}):
            r = self.req("POST", "/api/inventory/", {"sku": "P-" + uid(), "name": "n", "quantity": 1,
                                                      "price": 1, "pharmacy": self.pb}, **cred)
            self.assertInvalid(r, {"pharmacy": ['Invalid pk "%d" - object does not exist.' % self.pb]})
        self.assertEqual(self.count("inventory_items"), before)
        it = self.item(key=self.ka, pharmacy=self.pa)
        self.assertEqual(it["pharmacy"], self.pa)
        it = self.item(token=self.pa_admin)
        self.assertEqual(it["pharmacy"], self.pa)
        # a super admin must say where
        body = {"sku": "P-" + uid(), "name": "n", "quantity": 1, "price": 1}
        r = self.req("POST", "/api/inventory/", body, token=self.admin)
        self.assertInvalid(r, {"pharmacy": [MSG_REQUIRED]})
        r = self.req("POST", "/api/inventory/", dict(body, pharmacy=987654), token=self.admin)
        self.assertInvalid(r, {"pharmacy": ['Invalid pk "987654" - object does not exist.']})
        r = self.req("POST", "/api/inventory/", dict(body, pharmacy=self.pb), token=self.admin)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["pharmacy"], self.pb)

    def test_put_patch(self):
        it = self.item(key=self.ka, extra_data={"a": 1})
        path = "/api/inventory/%d/" % it["id"]
        r = self.req("PATCH", path, {"name": "Renamed", "pharmacy": self.pb, "id": 1}, key=self.ka)
        self.assertEqual(r.status, 200, r)
        self.assertItem(r.json(), name="Renamed", quantity=10, price="2.50", sku=it["sku"],
                        pharmacy=self.pa, id=it["id"], extra_data={"a": 1})
        r = self.req("PUT", path, {"name": "Full"}, key=self.ka)
        self.assertInvalid(r, {f: [MSG_REQUIRED] for f in ("sku", "quantity", "price")})
        r = self.req("PUT", path, {"sku": it["sku"], "name": "Full", "quantity": 3, "price": 9.99,
                                   "extra_data": None}, key=self.ka)
        self.assertEqual(r.status, 200, r)
        self.assertItem(r.json(), name="Full", quantity=3, price="9.99", extra_data=None)
        r = self.req("PATCH", path, {"quantity": -5}, key=self.ka)
        self.assertInvalid(r, {"quantity": ["Ensure this value is greater than or equal to 0."]})
        r = self.req("PATCH", path, {"price": "1.001"}, key=self.ka)
        self.assertInvalid(r, {"price": [MSG_PLACES]})
        self.assertEqual(self.sql("SELECT quantity, price, pharmacy_id FROM inventory_items WHERE id = %d"
                                  % it["id"]), "3|9.99|%d" % self.pa)

    def test_delete(self):
        it = self.item(key=self.ka)
        path = "/api/inventory/%d/" % it["id"]
        r = self.req("DELETE", path, key=self.ka)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b"")
        self.assertNotFound(self.req("GET", path, key=self.ka))
        self.assertNotFound(self.req("DELETE", path, key=self.ka))
        self.assertNotFound(self.req("GET", "/api/inventory/abc/", key=self.ka))
        self.assertNotFound(self.req("GET", "/api/inventory/0/", key=self.ka))

    def test_cross_pharmacy(self):
        theirs = self.item(key=self.kb, quantity=7, extra_data={"k": "v"})
        path = "/api/inventory/%d/" % theirs["id"]
        row = "SELECT sku, name, quantity, price, extra_data::text FROM inventory_items WHERE id = %d" % theirs["id"]
        before = self.sql(row)
        for cred in ({"key": self.ka}, {"token": self.pa_admin}):
            self.assertNotFound(self.req("GET", path, **cred))
            self.assertNotFound(self.req("PATCH", path, {"quantity": 0, "name": "x"}, **cred))
            self.assertNotFound(self.req("PUT", path, {"sku": "s", "name": "x", "quantity": 0,
                                                       "price": 1}, **cred))
            self.assertNotFound(self.req("DELETE", path, **cred))
            listed = self.req("GET", "/api/inventory/?page_size=1000&pharmacy=%d" % self.pb, **cred)
            self.assertEqual(listed.status, 200, listed)
            self.assertNotIn(theirs["id"], [x["id"] for x in listed.json()])
            self.assertTrue(all(x["pharmacy"] == self.pa for x in listed.json()), listed)
        self.assertEqual(self.sql(row), before)
        r = self.req("GET", path, token=self.admin)
        self.assertEqual(r.status, 200, r)

    def test_auth(self):
        r = self.req("GET", "/api/inventory/")
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["code"], "not_authenticated")
        r = self.req("GET", "/api/inventory/", key="rxk_" + "x" * 43)
        self.assertEqual(r.status, 401, r)
        email, password = new_email(), new_password()
        r = self.req("POST", "/api/auth/register/email/", {"email": email, "password": password})
        self.assertEqual(r.status, 200, r)
        user = r.json()["access"]
        for method, path in (("GET", "/api/inventory/"), ("POST", "/api/inventory/"),
                             ("GET", "/api/sales/"), ("POST", "/api/inventory/bulk/")):
            r = self.req(method, path, {} if method == "POST" else None, token=user)
            self.assertEqual(r.status, 403, r)
            self.assertEqual(r.json(), DENIED)

    def test_list_filters_ordering_paging(self):
        pc = self._pharmacy()
        kc = self._key(pc)
        a = self.item(key=kc, sku="ZZ-1", name="Alpha tab", quantity=5, price="3.00")
        # names and skus of one case: ordering follows the database's collation
        b = self.item(key=kc, sku="AA-2", name="Beta syrup", quantity=1, price="10.00")
        c = self.item(key=kc, sku="MM-ALP", name="Gamma", quantity=9, price="1.00")
        ids = lambda r: [x["id"] for x in r.json()]  # noqa: E731
        r = self.req("GET", "/api/inventory/", key=kc)
        self.assertEqual(r.status, 200, r)
        self.assertIsInstance(r.json(), list)
        self.assertEqual(ids(r), [a["id"], b["id"], c["id"]])
        self.assertEqual(r.header("x-total-count"), "3")
        self.assertEqual(r.json()[0], a)
        self.assertEqual(ids(self.req("GET", "/api/inventory/?sku=AA-2", key=kc)), [b["id"]])
        self.assertEqual(ids(self.req("GET", "/api/inventory/?sku=aa-2", key=kc)), [])
        self.assertEqual(ids(self.req("GET", "/api/inventory/?sku=AA", key=kc)), [])
        self.assertEqual(ids(self.req("GET", "/api/inventory/?search=ALP", key=kc)), [a["id"], c["id"]])
        self.assertEqual(ids(self.req("GET", "/api/inventory/?search=SYR", key=kc)), [b["id"]])
        for order, want in (("name", [a, b, c]), ("-name", [c, b, a]), ("sku", [b, c, a]),
                            ("-sku", [a, c, b]), ("quantity", [b, a, c]), ("-quantity", [c, a, b]),
                            ("price", [c, a, b]), ("-price", [b, a, c]), ("updated_at", [a, b, c]),
                            ("-updated_at", [c, b, a])):
            r = self.req("GET", "/api/inventory/?ordering=" + order, key=kc)
            self.assertEqual(ids(r), [x["id"] for x in want], order)
        r = self.req("GET", "/api/inventory/?updated_since=2000-01-01T00:00:00Z", key=kc)
        self.assertEqual(ids(r), [a["id"], b["id"], c["id"]])
        r = self.req("GET", "/api/inventory/?updated_since=2999-01-01", key=kc)
        self.assertEqual(r.json(), [])
        r = self.req("GET", "/api/inventory/?updated_since=2024-02-29T10:00:00%2B06:00", key=kc)
        self.assertEqual(ids(r), [a["id"], b["id"], c["id"]])
        since = self.sql("SELECT to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                         " FROM inventory_items WHERE id = %d" % b["id"])
        r = self.req("GET", "/api/inventory/?updated_since=" + since, key=kc)
        self.assertEqual(ids(r), [b["id"], c["id"]])
        for bad in ("yesterday", "2026-13-01", "2026-01-01T25:00", "2026-02-29", "2026-04-31T00:00:00Z",
                    "0000-01-01", "2026-01-01T10:00:00+25:00", "2026-01-01X"):
            r = self.req("GET", "/api/inventory/?updated_since=" + bad, key=kc)
            self.assertInvalid(r, {"updated_since": ["Enter a valid date/time."]})
        r = self.req("GET", "/api/inventory/?page_size=2", key=kc)
        self.assertEqual(ids(r), [a["id"], b["id"]])
        self.assertEqual(r.header("x-total-count"), "3")
        self.assertIn('rel="next"', r.header("link", ""))
        r = self.req("GET", "/api/inventory/?page_size=2&page=2", key=kc)
        self.assertEqual(ids(r), [c["id"]])
        self.assertIn('rel="prev"', r.header("link", ""))
        r = self.req("GET", "/api/inventory/?page_size=2&page=3", key=kc)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json(), {"detail": "Invalid page.", "code": "not_found"})
        # a super admin narrows by pharmacy; a key's ?pharmacy= is ignored
        r = self.req("GET", "/api/inventory/?pharmacy=%d" % pc, token=self.admin)
        self.assertEqual(ids(r), [a["id"], b["id"], c["id"]])
        r = self.req("GET", "/api/inventory/?pharmacy=%d" % self.pa, key=kc)
        self.assertEqual(ids(r), [a["id"], b["id"], c["id"]])
        r = self.req("GET", "/api/inventory/?page_size=1000", token=self.admin)
        self.assertGreater(len(r.json()), 3)


# ==========================================================================
# List totals: kept per pharmacy (migration 003), exact after every write
# ==========================================================================

class Totals(InvCase):
    DB = "inv_totals"

    def total(self, key=None, token=None, query=""):
        r = self.req("GET", "/api/inventory/?page_size=1" + query, key=key, token=token)
        self.assertEqual(r.status, 200, r)
        return int(r.header("x-total-count"))

    def assertKeptCountsExact(self):
        """The kept table equals a real count for every pharmacy that has items."""
        kept = self.sql("SELECT coalesce(string_agg(pharmacy_id || ':' || items, ',' ORDER BY pharmacy_id), '')"
                        " FROM inventory_item_counts WHERE items > 0")
        real = self.sql("SELECT coalesce(string_agg(pharmacy_id || ':' || n, ',' ORDER BY pharmacy_id), '')"
                        " FROM (SELECT pharmacy_id, count(*) AS n FROM inventory_items GROUP BY 1) c")
        self.assertEqual(kept, real)

    def test_every_write_keeps_the_total(self):
        pid = self._pharmacy()
        key = self._key(pid)
        self.assertEqual(self.total(key), 0)
        a = self.item(key=key)
        b = self.item(key=key)
        self.assertEqual(self.total(key), 2)
        r = self.req("POST", "/api/inventory/", {"sku": a["sku"], "name": "dup", "quantity": 1, "price": "1.00"},
                     key=key)
        self.assertInvalid(r, {"sku": [DUP_SKU]})
        self.assertEqual(self.total(key), 2)
        prefix = "T" + uid()
        rows = [{"sku": "%s-%d" % (prefix, i), "name": "Bulk", "quantity": 1, "price": "1.00"} for i in range(5)]
        rows.append({"sku": a["sku"], "name": "renamed", "quantity": 4, "price": "1.00"})
        r = self.req("POST", "/api/inventory/bulk/", rows, key=key)
        self.assertEqual(r.json(), {"created": 5, "updated": 1}, r)
        self.assertEqual(self.total(key), 7)
        self.assertEqual(self.req("DELETE", "/api/inventory/%d/" % b["id"], key=key).status, 204)
        self.assertNotFound(self.req("DELETE", "/api/inventory/%d/" % b["id"], key=key))
        self.assertEqual(self.total(key), 6)
        # sales and updates leave the number of items alone
        r = self.req("POST", "/api/sales/", {"inventory_item": a["id"], "quantity": 1}, key=key)
        self.assertEqual(r.status, 201, r)
        r = self.req("PATCH", "/api/inventory/%d/" % a["id"], {"quantity": 50, "name": "x"}, key=key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.total(key), 6)
        # another pharmacy's key sees its own total; filters count what matches
        self.assertEqual(self.total(self.kb), self.count("inventory_items", "pharmacy_id = %d" % self.pb))
        self.assertEqual(self.total(key, query="&search=" + prefix), 5)
        self.assertEqual(self.total(key, query="&sku=%s-3" % prefix), 1)
        self.assertEqual(self.total(key, query="&updated_since=2999-01-01"), 0)
        # a super admin: one pharmacy with ?pharmacy=, every pharmacy without
        self.assertEqual(self.total(token=self.admin, query="&pharmacy=%d" % pid), 6)
        self.assertEqual(self.total(token=self.admin), self.count("inventory_items"))
        self.assertKeptCountsExact()

    def test_parallel_creates_and_deletes(self):
        pid = self._pharmacy()
        key = self._key(pid)

        def create(i):
            return lambda: self.req("POST", "/api/inventory/",
                                    {"sku": "PAR-%d" % i, "name": "p", "quantity": 1, "price": "1.00"},
                                    key=key).status
        # 20 different skus and 5 repeats of one: the repeats lose with 400
        statuses = parallel([create(i) for i in range(20)] + [create(0) for _ in range(5)])
        self.assertEqual(sorted(statuses), [201] * 20 + [400] * 5, statuses)
        self.assertEqual(self.total(key), 20)
        ids = [int(x) for x in self.sql("SELECT id FROM inventory_items WHERE pharmacy_id = %d ORDER BY id"
                                        % pid).split()]
        self.assertEqual(len(ids), 20)

        def delete(i):
            return lambda: self.req("DELETE", "/api/inventory/%d/" % i, key=key).status
        # every one of the first ten deleted twice at once: one 204 and one 404 each
        statuses = parallel([delete(i) for i in ids[:10]] * 2)
        self.assertEqual(sorted(statuses), [204] * 10 + [404] * 10, statuses)
        self.assertEqual(self.total(key), 10)
        self.assertKeptCountsExact()

    def test_deleted_pharmacy_leaves_no_count(self):
        pid = self._pharmacy()
        key = self._key(pid)
        for _ in range(3):
            self.item(key=key)
        self.assertEqual(self.total(key), 3)
        r = self.req("DELETE", "/api/pharmacies/%d/" % pid, token=self.admin)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.count("inventory_item_counts", "pharmacy_id = %d" % pid), 0)
        self.assertEqual(self.total(token=self.admin), self.count("inventory_items"))
        self.assertEqual(self.total(token=self.admin, query="&pharmacy=%d" % pid), 0)
        self.assertKeptCountsExact()

    def test_operator_sql_keeps_counts(self):
        """Writes outside the API (an operator's psql) go through the same triggers."""
        pid, other = self._pharmacy(), self._pharmacy()
        key = self._key(pid)
        it = self.item(key=key)
        self.item(key=key)
        self.sql("UPDATE inventory_items SET pharmacy_id = %d WHERE id = %d" % (other, it["id"]))
        self.assertEqual(self.total(key), 1)
        self.assertEqual(self.total(token=self.admin, query="&pharmacy=%d" % other), 1)
        self.sql("INSERT INTO inventory_items (pharmacy_id, sku, name, quantity, price)"
                 " SELECT %d, 'OPS-' || g, 'ops', 1, 1 FROM generate_series(1, 30) g" % pid)
        self.assertEqual(self.total(key), 31)
        self.sql("DELETE FROM inventory_items WHERE pharmacy_id = %d AND sku LIKE 'OPS-%%'" % pid)
        self.assertEqual(self.total(key), 1)
        self.assertKeptCountsExact()


# ==========================================================================
# Sales
# ==========================================================================

class Sales(InvCase):
    DB = "inv_sales"

    def sale(self, key, **fields):
        r = self.req("POST", "/api/sales/", fields, key=key)
        self.assertEqual(r.status, 201, r)
        return self.assertSale(r.json())

    def test_sale_decrements_stock(self):
        it = self.item(key=self.ka, quantity=10, price="2.50")
        s = self.sale(self.ka, inventory_item=it["id"], quantity=3)
        self.assertSale(s, inventory_item=it["id"], quantity=3, total_price="7.50",
                        pharmacy=self.pa, extra_data=None)
        self.assertEqual(self.stock(it["id"]), 7)
        g = self.req("GET", "/api/inventory/%d/" % it["id"], key=self.ka)
        self.assertEqual(g.json()["quantity"], 7)
        s2 = self.sale(self.ka, inventory_item=str(it["id"]), quantity=2, total_price=4.5,
                       extra_data={"till": 3}, sale_time="2026-01-02T03:04:05+06:00")
        self.assertSale(s2, total_price="4.50", extra_data={"till": 3}, inventory_item=it["id"],
                        sale_time="2026-01-01T21:04:05Z")
        self.assertEqual(self.stock(it["id"]), 5)
        self.assertEqual(self.req("GET", "/api/sales/%d/" % s2["id"], key=self.ka).json(), s2)

    def test_short_stock_changes_nothing(self):
        it = self.item(key=self.ka, quantity=2)
        before = self.count("sales")
        r = self.req("POST", "/api/sales/", {"inventory_item": it["id"], "quantity": 3}, key=self.ka)
        self.assertInvalid(r, {"quantity": ["Insufficient stock: 2 available."]})
        self.assertEqual(self.stock(it["id"]), 2)
        self.assertEqual(self.count("sales"), before)
        self.sale(self.ka, inventory_item=it["id"], quantity=2)
        self.assertEqual(self.stock(it["id"]), 0)
        r = self.req("POST", "/api/sales/", {"inventory_item": it["id"], "quantity": 1}, key=self.ka)
        self.assertInvalid(r, {"quantity": ["Insufficient stock: 0 available."]})
        self.assertEqual(self.stock(it["id"]), 0)

    def test_sale_without_item(self):
        r = self.req("POST", "/api/sales/", {"quantity": 1}, key=self.ka)
        self.assertInvalid(r, {"total_price": [MSG_REQUIRED]})
        s = self.sale(self.ka, quantity=4, total_price="10")
        self.assertSale(s, inventory_item=None, total_price="10.00", quantity=4)

    def test_sale_validation(self):
        it = self.item(key=self.ka, quantity=100)
        cases = (
            ({}, {"quantity": [MSG_REQUIRED]}),
            ({"quantity": 0}, {"quantity": ["Ensure this value is greater than or equal to 1."]}),
            ({"quantity": "x"}, {"quantity": ["A valid integer is required."]}),
            ({"quantity": 1, "total_price": "1.234"}, {"total_price": [MSG_PLACES]}),
            ({"quantity": 1, "total_price": "abc"}, {"total_price": [MSG_NUMBER]}),
            ({"quantity": 1, "sale_time": "not a time"},
             {"sale_time": ["Datetime has wrong format. Use one of these formats instead: "
                            "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."]}),
            ({"quantity": 1, "extra_data": "str"},
             {"extra_data": ['Expected a dictionary of items but got type "str".']}),
            ({"quantity": 1, "inventory_item": "abc"},
             {"inventory_item": ["Incorrect type. Expected pk value, received str."]}),
            ({"quantity": 1, "inventory_item": 0},
             {"inventory_item": ['Invalid pk "0" - object does not exist.']}),
            ({"quantity": 1, "inventory_item": 99999999},
             {"inventory_item": ['Invalid pk "99999999" - object does not exist.']}),
        )
        before = self.count("sales")
        for body, errors in cases:
            b = dict(body)
            if "inventory_item" not in b:
                b["inventory_item"] = it["id"]
            r = self.req("POST", "/api/sales/", b, key=self.ka)
            self.assertInvalid(r, errors)
        self.assertEqual(self.count("sales"), before)
        self.assertEqual(self.stock(it["id"]), 100)
        r = self.req("POST", "/api/sales/", {"quantity": 1, "total_price": 1}, token=self.admin)
        self.assertInvalid(r, {"pharmacy": [MSG_REQUIRED]})
        r = self.req("POST", "/api/sales/", {"quantity": 1, "total_price": 1, "pharmacy": self.pb},
                     key=self.ka)
        self.assertInvalid(r, {"pharmacy": ['Invalid pk "%d" - object does not exist.' % self.pb]})
        # price x quantity beyond numeric(10,2)
        dear = self.item(key=self.ka, quantity=1000, price="99999999.00")
        r = self.req("POST", "/api/sales/", {"inventory_item": dear["id"], "quantity": 100}, key=self.ka)
        self.assertInvalid(r, {"total_price": [MSG_DIGITS]})
        self.assertEqual(self.stock(dear["id"]), 1000)

    def test_cross_pharmacy(self):
        theirs = self.item(key=self.kb, quantity=5)
        their_sale = self.sale(self.kb, inventory_item=theirs["id"], quantity=1)
        sales_before = self.count("sales")
        # selling B's item with A's key: as if it did not exist, B's stock untouched
        r = self.req("POST", "/api/sales/", {"inventory_item": theirs["id"], "quantity": 1}, key=self.ka)
        self.assertInvalid(r, {"inventory_item": ['Invalid pk "%d" - object does not exist.' % theirs["id"]]})
        self.assertEqual(self.stock(theirs["id"]), 4)
        path = "/api/sales/%d/" % their_sale["id"]
        row = "SELECT total_price, extra_data IS NULL FROM sales WHERE id = %d" % their_sale["id"]
        before = self.sql(row)
        for cred in ({"key": self.ka}, {"token": self.pa_admin}):
            self.assertNotFound(self.req("GET", path, **cred))
            self.assertNotFound(self.req("PATCH", path, {"total_price": "0.01"}, **cred))
            self.assertNotFound(self.req("PUT", path, {"total_price": "0.01"}, **cred))
            self.assertNotFound(self.req("DELETE", path, **cred))
            r = self.req("GET", "/api/sales/?page_size=1000", **cred)
            self.assertNotIn(their_sale["id"], [x["id"] for x in r.json()])
        self.assertEqual(self.sql(row), before)
        self.assertEqual(self.count("sales"), sales_before)

    def test_update_and_delete(self):
        it = self.item(key=self.ka, quantity=10)
        s = self.sale(self.ka, inventory_item=it["id"], quantity=2)
        path = "/api/sales/%d/" % s["id"]
        r = self.req("PATCH", path, {"total_price": "9.9", "extra_data": {"x": 1},
                                     "sale_time": "2026-05-01T10:00:00Z", "quantity": 9,
                                     "inventory_item": None}, key=self.ka)
        self.assertEqual(r.status, 200, r)
        self.assertSale(r.json(), total_price="9.90", extra_data={"x": 1},
                        sale_time="2026-05-01T10:00:00Z", quantity=2, inventory_item=it["id"])
        self.assertEqual(self.stock(it["id"]), 8)
        r = self.req("PUT", path, {"total_price": "1.234"}, key=self.ka)
        self.assertInvalid(r, {"total_price": [MSG_PLACES]})
        r = self.req("DELETE", path, key=self.ka)
        self.assertEqual(r.status, 204, r)
        self.assertNotFound(self.req("GET", path, key=self.ka))
        self.assertEqual(self.stock(it["id"]), 8)
        # deleting the item keeps its sales, without the item
        s2 = self.sale(self.ka, inventory_item=it["id"], quantity=1)
        self.assertEqual(self.req("DELETE", "/api/inventory/%d/" % it["id"], key=self.ka).status, 204)
        self.assertIsNone(self.req("GET", "/api/sales/%d/" % s2["id"], key=self.ka).json()["inventory_item"])

    def test_list_filters(self):
        pc = self._pharmacy()
        kc = self._key(pc)
        i1 = self.item(key=kc, quantity=100)
        i2 = self.item(key=kc, quantity=100)
        s1 = self.sale(kc, inventory_item=i1["id"], quantity=1, sale_time="2026-01-01T10:00:00Z")
        s2 = self.sale(kc, inventory_item=i2["id"], quantity=1, sale_time="2026-02-01T10:00:00Z")
        s3 = self.sale(kc, inventory_item=i1["id"], quantity=1, sale_time="2026-03-01T10:00:00Z")
        ids = lambda r: [x["id"] for x in r.json()]  # noqa: E731
        r = self.req("GET", "/api/sales/", key=kc)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(ids(r), [s1["id"], s2["id"], s3["id"]])
        self.assertEqual(r.header("x-total-count"), "3")
        self.assertEqual(r.json()[1], s2)
        self.assertEqual(ids(self.req("GET", "/api/sales/?inventory_item=%d" % i1["id"], key=kc)),
                         [s1["id"], s3["id"]])
        self.assertEqual(ids(self.req("GET", "/api/sales/?sale_time_after=2026-01-15T00:00:00Z",
                                      key=kc)), [s2["id"], s3["id"]])
        self.assertEqual(ids(self.req("GET", "/api/sales/?sale_time_before=2026-02-01T10:00:00Z",
                                      key=kc)), [s1["id"], s2["id"]])
        self.assertEqual(ids(self.req("GET", "/api/sales/?sale_time_after=2026-01-15"
                                      "&sale_time_before=2026-02-15", key=kc)), [s2["id"]])
        self.assertEqual(ids(self.req("GET", "/api/sales/?ordering=-sale_time", key=kc)),
                         [s3["id"], s2["id"], s1["id"]])
        for name in ("sale_time_after", "sale_time_before"):
            r = self.req("GET", "/api/sales/?%s=garbage" % name, key=kc)
            self.assertInvalid(r, {name: ["Enter a valid date/time."]})
        r = self.req("GET", "/api/sales/?inventory_item=x", key=kc)
        self.assertEqual(r.status, 400, r)
        self.assertIn("inventory_item", r.json())
        self.assertEqual(ids(self.req("GET", "/api/sales/?pharmacy=%d" % pc, token=self.admin)),
                         [s1["id"], s2["id"], s3["id"]])
        self.assertEqual(ids(self.req("GET", "/api/sales/?pharmacy=%d" % self.pb, key=kc)),
                         [s1["id"], s2["id"], s3["id"]])
        # every ordering both ways, ties broken by id ascending; only the first
        # term counts, and an unknown one means id order
        s4 = self.sale(kc, quantity=3, total_price="1.00", sale_time="2026-02-01T10:00:00Z")
        s5 = self.sale(kc, inventory_item=i2["id"], quantity=3, total_price="9.00",
                       sale_time="2026-01-01T10:00:00Z")
        n1, n2, n3, n4, n5 = (x["id"] for x in (s1, s2, s3, s4, s5))
        for ordering, expected in (
                ("sale_time", [n1, n5, n2, n4, n3]),
                ("-sale_time", [n3, n2, n4, n1, n5]),
                ("total_price", [n4, n1, n2, n3, n5]),
                ("-total_price", [n5, n1, n2, n3, n4]),
                ("quantity", [n1, n2, n3, n4, n5]),
                ("-quantity", [n4, n5, n1, n2, n3]),
                ("-quantity,sale_time", [n4, n5, n1, n2, n3]),
                ("-id", [n5, n4, n3, n2, n1]),
                ("id", [n1, n2, n3, n4, n5]),
                ("bogus,-id", [n1, n2, n3, n4, n5]),
                ("", [n1, n2, n3, n4, n5])):
            r = self.req("GET", "/api/sales/?ordering=" + ordering, key=kc)
            self.assertEqual(ids(r), expected, ordering)
            self.assertEqual(r.header("x-total-count"), "5", ordering)
        r = self.req("GET", "/api/sales/?inventory_item=%d&ordering=-sale_time" % i2["id"], key=kc)
        self.assertEqual(ids(r), [n2, n5])
        self.assertEqual(r.header("x-total-count"), "2")
        r = self.req("GET", "/api/sales/?sale_time_before=2026-01-31&ordering=-total_price", key=kc)
        self.assertEqual(ids(r), [n5, n1])
        self.assertEqual(r.header("x-total-count"), "2")
        r = self.req("GET", "/api/sales/?pharmacy=%d&inventory_item=%d&sale_time_after=2026-01-15"
                     % (pc, i2["id"]), token=self.admin)
        self.assertEqual(ids(r), [n2])
        self.assertEqual(r.header("x-total-count"), "1")
        r = self.req("GET", "/api/sales/?page_size=2&page=2&ordering=-id", key=kc)
        self.assertEqual(ids(r), [n3, n2])
        self.assertEqual(r.header("x-total-count"), "5")
        self.assertIn('rel="next"', r.header("link", ""))
        self.assertIn('rel="prev"', r.header("link", ""))
        r = self.req("GET", "/api/sales/?page_size=2&page=3&ordering=-id", key=kc)
        self.assertEqual(ids(r), [n1])
        r = self.req("GET", "/api/sales/?page_size=2&page=4", key=kc)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json(), {"detail": "Invalid page.", "code": "not_found"})
        # a super admin's ?pharmacy= of a pharmacy without sales: an empty page
        r = self.req("GET", "/api/sales/?pharmacy=%d" % self._pharmacy(), token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), [])
        self.assertEqual(r.header("x-total-count"), "0")


# ==========================================================================
# Concurrency
# ==========================================================================

class Concurrency(InvCase):
    DB = "inv_race"

    def post_sale(self, item_id, qty=1):
        return lambda: self.req("POST", "/api/sales/", {"inventory_item": item_id, "quantity": qty},
                                key=self.ka, timeout=30).status

    def test_last_units(self):
        it = self.item(key=self.ka, quantity=5)
        statuses = parallel([self.post_sale(it["id"]) for _ in range(20)])
        self.assertEqual(sorted(statuses), [201] * 5 + [400] * 15, statuses)
        self.assertEqual(self.stock(it["id"]), 0)
        self.assertEqual(self.count("sales", "inventory_item_id = %d" % it["id"]), 5)

    def test_sales_and_patches_of_other_fields(self):
        it = self.item(key=self.ka, quantity=100)
        path = "/api/inventory/%d/" % it["id"]
        fns = [self.post_sale(it["id"], 2) for _ in range(25)]
        fns += [(lambda n=n: self.req("PATCH", path, {"name": "N%d" % n, "price": "%d.00" % n},
                                      key=self.ka, timeout=30).status) for n in range(10)]
        statuses = parallel(fns)
        self.assertEqual(statuses, [201] * 25 + [200] * 10, statuses)
        self.assertEqual(self.stock(it["id"]), 50)

    def test_sales_and_quantity_patch(self):
        it = self.item(key=self.ka, quantity=20)
        path = "/api/inventory/%d/" % it["id"]
        fns = [self.post_sale(it["id"]) for _ in range(30)]
        fns.insert(15, lambda: self.req("PATCH", path, {"quantity": 1000}, key=self.ka, timeout=30).status)
        statuses = parallel(fns)
        self.assertEqual(statuses[15], 200)
        sold = [s for i, s in enumerate(statuses) if i != 15]
        ok = sold.count(201)
        self.assertEqual(ok + sold.count(400), 30, statuses)
        self.assertEqual(self.count("sales", "inventory_item_id = %d" % it["id"]), ok)
        final = self.stock(it["id"])
        # every sale is counted either before the PATCH (20 - before >= 0) or after it
        after = 1000 - final
        before = ok - after
        self.assertTrue(0 <= after <= ok and 0 <= before <= 20, (final, ok))
        self.assertGreaterEqual(final, 0)


# ==========================================================================
# Bulk upsert
# ==========================================================================

class Bulk(InvCase):
    DB = "inv_bulk"

    def rows(self, n, prefix, qty=1, price="1.00"):
        return [{"sku": "%s-%04d" % (prefix, i), "name": "Bulk %d" % i, "quantity": qty,
                 "price": price} for i in range(n)]

    def test_thousand_rows_then_update(self):
        prefix = "B" + uid()
        rows = self.rows(1000, prefix)
        rows[7]["extra_data"] = {"keep": True}
        r = self.req("POST", "/api/inventory/bulk/", rows, key=self.ka, timeout=60)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"created": 1000, "updated": 0})
        like = "pharmacy_id = %d AND sku LIKE '%s-%%'" % (self.pa, prefix)
        self.assertEqual(self.count("inventory_items", like), 1000)
        changed = self.rows(1000, prefix, qty=9, price=3.5)
        r = self.req("POST", "/api/inventory/bulk/", {"items": changed}, key=self.ka, timeout=60)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"created": 0, "updated": 1000})
        self.assertEqual(self.sql("SELECT count(*), min(quantity), max(quantity), min(price), max(price)"
                                  " FROM inventory_items WHERE " + like), "1000|9|9|3.50|3.50")
        # extra_data left out keeps the stored one
        self.assertEqual(self.sql("SELECT extra_data::text FROM inventory_items WHERE sku = '%s-0007'"
                                  % prefix), '{"keep": true}')
        mixed = [dict(changed[0], quantity=1), {"sku": prefix + "-new", "name": "n", "quantity": 1,
                                                "price": "1"}]
        r = self.req("POST", "/api/inventory/bulk/", mixed, key=self.ka)
        self.assertEqual(r.json(), {"created": 1, "updated": 1})

    def test_invalid_row_writes_nothing(self):
        prefix = "I" + uid()
        rows = self.rows(10, prefix)
        rows[3]["price"] = "1.234"
        rows[5]["quantity"] = -1
        del rows[6]["name"]
        rows[8] = 5
        before = self.count("inventory_items")
        r = self.req("POST", "/api/inventory/bulk/", rows, key=self.ka)
        self.assertInvalid(r, {"items": {
            "3": {"price": [MSG_PLACES]},
            "5": {"quantity": ["Ensure this value is greater than or equal to 0."]},
            "6": {"name": [MSG_REQUIRED]},
            "8": {"non_field_errors": ["Invalid data. Expected a dictionary, but got int."]}}})
        self.assertEqual(self.count("inventory_items"), before)
        rows = self.rows(3, prefix)
        rows[1]["extra_data"] = {"blob": "x" * 70000}
        r = self.req("POST", "/api/inventory/bulk/", rows, key=self.ka)
        self.assertInvalid(r, {"items": {"1": {"extra_data": [
            "Ensure this field has no more than 65536 bytes when serialized."]}}})
        self.assertEqual(self.count("inventory_items"), before)

    def test_duplicates_and_sizes(self):
        prefix = "D" + uid()
        rows = self.rows(4, prefix)
        rows[2]["sku"] = rows[0]["sku"]
        before = self.count("inventory_items")
        r = self.req("POST", "/api/inventory/bulk/", rows, key=self.ka)
        self.assertInvalid(r, {"items": {"2": {"sku": ["Duplicate sku in this request (first at index 0)."]}}})
        self.assertEqual(self.count("inventory_items"), before)
        r = self.req("POST", "/api/inventory/bulk/", [], key=self.ka)
        self.assertInvalid(r, {"items": ["This list may not be empty."]})
        r = self.req("POST", "/api/inventory/bulk/", {"items": []}, key=self.ka)
        self.assertInvalid(r, {"items": ["This list may not be empty."]})
        r = self.req("POST", "/api/inventory/bulk/", self.rows(1001, prefix), key=self.ka, timeout=60)
        self.assertInvalid(r, {"items": ["Ensure this field has no more than 1000 elements."]})
        r = self.req("POST", "/api/inventory/bulk/", {"items": {"sku": "x"}}, key=self.ka)
        self.assertInvalid(r, {"items": ['Expected a list of items but got type "dict".']})
        r = self.req("POST", "/api/inventory/bulk/", {"rows": []}, key=self.ka)
        self.assertInvalid(r, {"items": [MSG_REQUIRED]})
        self.assertEqual(self.count("inventory_items"), before)

    def test_pharmacy(self):
        prefix = "P" + uid()
        r = self.req("POST", "/api/inventory/bulk/", self.rows(2, prefix), token=self.admin)
        self.assertInvalid(r, {"pharmacy": [MSG_REQUIRED]})
        r = self.req("POST", "/api/inventory/bulk/?pharmacy=%d" % self.pb, self.rows(2, prefix),
                     token=self.admin)
        self.assertEqual(r.json(), {"created": 2, "updated": 0})
        r = self.req("POST", "/api/inventory/bulk/", {"pharmacy": 987654, "items": self.rows(2, prefix)},
                     token=self.admin)
        self.assertInvalid(r, {"pharmacy": ['Invalid pk "987654" - object does not exist.']})
        # the same skus from A's key land in A, B's rows are untouched
        r = self.req("POST", "/api/inventory/bulk/", self.rows(2, prefix, qty=4), key=self.ka)
        self.assertEqual(r.json(), {"created": 2, "updated": 0})
        r = self.req("POST", "/api/inventory/bulk/", {"pharmacy": self.pb, "items": self.rows(2, prefix)},
                     key=self.ka)
        self.assertInvalid(r, {"pharmacy": ['Invalid pk "%d" - object does not exist.' % self.pb]})
        self.assertEqual(self.sql("SELECT string_agg(pharmacy_id || ':' || quantity, ',' ORDER BY pharmacy_id)"
                                  " FROM inventory_items WHERE sku = '%s-0000'" % prefix),
                         "%d:4,%d:1" % (self.pa, self.pb))


# ==========================================================================
# Webhook apply tasks (module webhooks stores the event and dispatches it)
# ==========================================================================

class Apply(InvCase):
    DB = "inv_apply"

    def event(self, event_type, payload, key=None):
        r = self.req("POST", "/api/webhook-events/", {"event_type": event_type, "payload": payload},
                     key=key or self.ka)
        self.assertEqual(r.status, 201, r)
        return r.json()["id"]

    def settle(self, event_id, timeout=20.0):
        """Wait until every job about this event is finished; the event's row then."""
        deadline = time.monotonic() + timeout
        q = ("SELECT count(*) FROM rx_jobs WHERE (payload->>'event_id')::bigint = %d"
             " AND state NOT IN ('done', 'dead')" % event_id)
        applied = ("SELECT count(*) FROM rx_jobs WHERE task LIKE 'webhook.apply.%%'"
                   " AND (payload->>'event_id')::bigint = %d" % event_id)
        while True:
            if int(self.sql(applied)) > 0 and int(self.sql(q)) == 0:
                break
            if time.monotonic() > deadline:
                self.fail("jobs of event %d not finished: %s\n%s" % (
                    event_id, self.sql("SELECT task, state, attempts, last_error FROM rx_jobs"),
                    self.server.output()[-3000:]))
            time.sleep(0.1)
        row = self.sql("SELECT processed, coalesce(processing_error, '') FROM webhook_events"
                       " WHERE id = %d" % event_id).split("|", 1)
        return row[0] == "t", row[1]

    def apply_jobs(self, event_id):
        return self.sql("SELECT state || ':' || attempts FROM rx_jobs WHERE task LIKE 'webhook.apply.%%'"
                        " AND (payload->>'event_id')::bigint = %d ORDER BY id" % event_id).split()

    def rerun(self, event_id, task):
        """Run the apply job of an event once more (what a retry after a lost ack does)."""
        payload = self.sql("SELECT payload::text FROM rx_jobs WHERE task = '%s' AND"
                           " (payload->>'event_id')::bigint = %d ORDER BY id LIMIT 1" % (task, event_id))
        self.assertTrue(payload)
        self.sql("SELECT rx_enqueue('%s', '%s'::jsonb)" % (task, payload.replace("'", "''")))
        deadline = time.monotonic() + 20
        while int(self.sql("SELECT count(*) FROM rx_jobs WHERE task = '%s' AND state <> 'done' AND"
                           " (payload->>'event_id')::bigint = %d" % (task, event_id))):
            self.assertLess(time.monotonic(), deadline, self.apply_jobs(event_id))
            time.sleep(0.1)

    def test_upsert(self):
        sku = "W-" + uid()
        ev = self.event("inventory.upsert", {"sku": sku, "name": "Hook", "quantity": 8, "price": "4.5",
                                              "extra_data": {"src": "pos"}})
        self.assertEqual(self.settle(ev), (True, ""))
        row = "SELECT pharmacy_id, name, quantity, price, extra_data::text FROM inventory_items WHERE sku = '%s'" % sku
        self.assertEqual(self.sql(row), '%d|Hook|8|4.50|{"src": "pos"}' % self.pa)
        ev2 = self.event("inventory.upsert", {"sku": sku, "name": "Hook 2", "quantity": 3, "price": 1})
        self.assertEqual(self.settle(ev2), (True, ""))
        self.assertEqual(self.sql(row), '%d|Hook 2|3|1.00|{"src": "pos"}' % self.pa)
        # applied once: running the job again changes nothing
        self.sql("UPDATE inventory_items SET quantity = 77 WHERE sku = '%s'" % sku)
        self.rerun(ev2, "webhook.apply.inventory.upsert")
        self.assertEqual(self.sql("SELECT quantity FROM inventory_items WHERE sku = '%s'" % sku), "77")

    def test_upsert_invalid_is_recorded_not_retried(self):
        before = self.count("inventory_items")
        ev = self.event("inventory.upsert", {"name": "x", "quantity": 1, "price": "1.00"})
        self.assertEqual(self.settle(ev), (False, "sku: This field is required."))
        self.assertEqual(self.apply_jobs(ev), ["done:1"])
        ev = self.event("inventory.upsert", {"sku": "q" + uid(), "name": "x", "quantity": 1, "price": "1.234"})
        self.assertEqual(self.settle(ev), (False, "price: " + MSG_PLACES))
        self.assertEqual(self.count("inventory_items"), before)

    def test_adjust_exactly_once(self):
        it = self.item(key=self.ka, quantity=10)
        ev = self.event("inventory.adjust", {"sku": it["sku"], "delta": -3})
        self.assertEqual(self.settle(ev), (True, ""))
        self.assertEqual(self.stock(it["id"]), 7)
        self.rerun(ev, "webhook.apply.inventory.adjust")
        self.rerun(ev, "webhook.apply.inventory.adjust")
        self.assertEqual(self.stock(it["id"]), 7)
        ev = self.event("inventory.adjust", {"sku": it["sku"], "delta": 5})
        self.settle(ev)
        self.assertEqual(self.stock(it["id"]), 12)
        ev = self.event("inventory.adjust", {"sku": it["sku"], "delta": -100})
        self.assertEqual(self.settle(ev), (True, ""))
        self.assertEqual(self.stock(it["id"]), 0)
        ev = self.event("inventory.adjust", {"sku": "nope-" + uid(), "delta": 1})
        processed, err = self.settle(ev)
        self.assertFalse(processed)
        self.assertTrue(err.startswith("sku: No item with sku"), err)
        ev = self.event("inventory.adjust", {"sku": it["sku"]})
        self.assertEqual(self.settle(ev), (False, "delta: This field is required."))
        self.assertEqual(self.stock(it["id"]), 0)

    def test_adjust_is_scoped_to_the_key(self):
        theirs = self.item(key=self.kb, quantity=10)
        ev = self.event("inventory.adjust", {"sku": theirs["sku"], "delta": -4}, key=self.ka)
        processed, err = self.settle(ev)
        self.assertFalse(processed)
        self.assertTrue(err.startswith("sku: No item"), err)
        self.assertEqual(self.stock(theirs["id"]), 10)

    def test_sale_created(self):
        it = self.item(key=self.ka, quantity=5, price="2.00")
        sales = self.count("sales")
        ev = self.event("sale.created", {"inventory_item": it["sku"], "quantity": 2})
        self.assertEqual(self.settle(ev), (True, ""))
        self.assertEqual(self.stock(it["id"]), 3)
        self.assertEqual(self.sql("SELECT pharmacy_id, inventory_item_id, quantity, total_price FROM sales"
                                  " ORDER BY id DESC LIMIT 1"), "%d|%d|2|4.00" % (self.pa, it["id"]))
        self.rerun(ev, "webhook.apply.sale.created")
        self.assertEqual(self.stock(it["id"]), 3)
        self.assertEqual(self.count("sales"), sales + 1)
        ev = self.event("sale.created", {"inventory_item": it["id"], "quantity": 1, "total_price": "9"})
        self.assertEqual(self.settle(ev), (True, ""))
        self.assertEqual(self.stock(it["id"]), 2)
        ev = self.event("sale.created", {"sku": it["sku"], "quantity": 1})
        self.assertEqual(self.settle(ev), (True, ""))
        self.assertEqual(self.stock(it["id"]), 1)
        ev = self.event("sale.created", {"inventory_item": it["id"], "quantity": 2})
        self.assertEqual(self.settle(ev), (False, "quantity: Insufficient stock: 1 available."))
        self.assertEqual(self.stock(it["id"]), 1)
        self.assertEqual(self.count("sales"), sales + 3)


# ==========================================================================
# Events (seen through the test-only eventspy module)
# ==========================================================================

class Events(InvCase):
    DB = "inv_events"
    SPY = True

    def new_events(self, since, timeout=10.0):
        """Events after the first `since`, once they stop arriving."""
        deadline = time.monotonic() + timeout
        last = -1
        while True:
            evs = self.server.events()[since:]
            if evs and len(evs) == last:
                return evs
            if time.monotonic() > deadline:
                return evs
            last = len(evs)
            time.sleep(0.3)

    def mark(self):
        return len(self.server.events())

    def names(self, evs, item_id=None):
        return [e["event"] for e in evs
                if item_id is None or e["data"].get("id") == item_id
                or e["data"].get("inventory_item") == item_id]

    def test_item_and_sale_events(self):
        m = self.mark()
        it = self.item(key=self.ka, quantity=10)
        evs = self.new_events(m)
        self.assertEqual(self.names(evs), ["inventory.updated"])
        self.assertEqual(evs[0]["data"], it)
        m = self.mark()
        s = self.req("POST", "/api/sales/", {"inventory_item": it["id"], "quantity": 4}, key=self.ka).json()
        evs = self.new_events(m)
        self.assertEqual(self.names(evs), ["sale.created", "inventory.updated"])  # 6 > 5
        self.assertEqual(evs[0]["data"], s)
        self.assertEqual(evs[1]["data"]["quantity"], 6)
        m = self.mark()
        self.req("POST", "/api/sales/", {"inventory_item": it["id"], "quantity": 1}, key=self.ka)
        evs = self.new_events(m)
        self.assertEqual(self.names(evs), ["sale.created", "inventory.updated", "inventory.low_stock"])
        self.assertEqual(evs[2]["data"]["quantity"], 5)
        # a refused sale emits nothing
        m = self.mark()
        r = self.req("POST", "/api/sales/", {"inventory_item": it["id"], "quantity": 50}, key=self.ka)
        self.assertEqual(r.status, 400, r)
        time.sleep(0.5)
        self.assertEqual(self.server.events()[m:], [])

    def test_bulk_upsert_events(self):
        it = self.item(key=self.ka, quantity=10)
        prefix = "EV" + uid()
        rows = [{"sku": prefix + "-a", "name": "plenty", "quantity": 10, "price": "1.00"},
                {"sku": prefix + "-b", "name": "few", "quantity": 2, "price": "1.00"},
                {"sku": it["sku"], "name": it["name"], "quantity": 1, "price": it["price"]}]
        m = self.mark()
        r = self.req("POST", "/api/inventory/bulk/", rows, key=self.ka)
        self.assertEqual(r.json(), {"created": 2, "updated": 1}, r)
        evs = self.new_events(m)
        updated = {e["data"]["sku"]: e["data"] for e in evs if e["event"] == "inventory.updated"}
        low = sorted(e["data"]["sku"] for e in evs if e["event"] == "inventory.low_stock")
        self.assertEqual(len(evs), 5, evs)
        self.assertEqual(set(updated), {prefix + "-a", prefix + "-b", it["sku"]})
        self.assertEqual(low, sorted([prefix + "-b", it["sku"]]))
        # each event carries the item as the API shows it
        for sku, data in updated.items():
            got = self.req("GET", "/api/inventory/%d/" % data["id"], key=self.ka).json()
            self.assertEqual(data, got, sku)
        self.assertEqual(updated[it["sku"]]["quantity"], 1)
        # a refused bulk emits nothing
        m = self.mark()
        r = self.req("POST", "/api/inventory/bulk/", rows + [{"sku": "x"}], key=self.ka)
        self.assertEqual(r.status, 400, r)
        time.sleep(0.5)
        self.assertEqual(self.server.events()[m:], [])

    def test_threshold_per_item_and_patch(self):
        it = self.item(key=self.ka, quantity=10, low_stock_threshold=2)
        self.assertEqual(it["low_stock_threshold"], 2)
        path = "/api/inventory/%d/" % it["id"]
        m = self.mark()
        self.req("PATCH", path, {"quantity": 3}, key=self.ka)
        self.assertEqual(self.names(self.new_events(m)), ["inventory.updated"])
        m = self.mark()
        self.req("PATCH", path, {"quantity": 2}, key=self.ka)
        self.assertEqual(self.names(self.new_events(m)), ["inventory.updated", "inventory.low_stock"])
        m = self.mark()
        self.req("PATCH", path, {"name": "renamed"}, key=self.ka)
        evs = self.new_events(m)
        self.assertEqual(self.names(evs), ["inventory.updated"])
        self.assertEqual(evs[0]["data"]["name"], "renamed")
        # back to the configured default (5)
        m = self.mark()
        self.req("PATCH", path, {"low_stock_threshold": None, "quantity": 5}, key=self.ka)
        self.assertEqual(self.names(self.new_events(m)), ["inventory.updated", "inventory.low_stock"])
        m = self.mark()
        r = self.req("PATCH", path, {"low_stock_threshold": -1}, key=self.ka)
        self.assertInvalid(r, {"low_stock_threshold": ["Ensure this value is greater than or equal to 0."]})
        self.assertEqual(self.server.events()[m:], [])

    def test_webhook_apply_emits(self):
        it = self.item(key=self.ka, quantity=10)
        m = self.mark()
        r = self.req("POST", "/api/webhook-events/",
                     {"event_type": "inventory.adjust", "payload": {"sku": it["sku"], "delta": -8}},
                     key=self.ka)
        self.assertEqual(r.status, 201, r)
        deadline = time.monotonic() + 20
        while "inventory.low_stock" not in self.names(self.server.events()[m:]):
            self.assertLess(time.monotonic(), deadline, self.server.events()[m:])
            time.sleep(0.1)
        evs = self.new_events(m)
        self.assertEqual(self.names(evs), ["inventory.updated", "inventory.low_stock"])
        self.assertEqual(evs[0]["data"]["quantity"], 2)


if __name__ == "__main__":
    unittest.main()
