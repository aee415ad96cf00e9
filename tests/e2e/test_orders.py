"""test_orders — the connector's Order (/api/orders/) end to end, against the contract
(../shared/API.md "Conventions", "Connector", "Roles and permissions") and the orders issue:
CRUD, validation texts, list filters and ordering, status transitions (also in parallel),
scoping (a key of pharmacy A on B's orders), registered users, and the webhook apply tasks
(webhook.apply.order.created / order.status_changed) with exactly-once claims.

One real rxd (`serve --migrate`, modules notify auth rbac pharmacies orders webhooks — the
webhooks migration provides rx_webhook_claim / rx_webhook_fail — and the test-only eventspy)
on a private PostgreSQL and Redis. The database is read with psql to check what really changed.
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

CLI_MODULES = "notify auth rbac pharmacies orders webhooks"
# eventspy (tests/modules/eventspy.c, built next to the modules, never installed) records
# the emitted events.
MODULES = CLI_MODULES + " eventspy"
DB = "orders_e2e"
DENIED = {"detail": "You do not have permission to perform this action.", "code": "permission_denied"}
NOT_FOUND = {"detail": "Not found.", "code": "not_found"}
ORDER_FIELDS = {"id", "pharmacy", "order_reference", "status", "items", "total_amount", "user",
                "created_at", "updated_at"}
OPEN = ("pending", "confirmed", "processing", "ready")
NEXT = {"pending": "confirmed", "confirmed": "processing", "processing": "ready", "ready": "completed"}
ALLOWED = {"pending": "confirmed, cancelled, rejected", "confirmed": "processing, cancelled, rejected",
           "processing": "ready, cancelled, rejected", "ready": "completed, cancelled, rejected",
           "completed": "none", "cancelled": "none", "rejected": "none"}
SUM_MSG = "Ensure total_amount equals the sum of quantity \u00d7 price of the items (%s)."
DUP_MSG = "Order with this order_reference already exists for this pharmacy."

PG = None
REDIS = None
S = None  # the shared state: server, tokens, keys, pharmacies


def invalid(field, msg):
    return {field: [msg], "code": "invalid"}


def item(sku="SKU-1", name="Paracetamol", quantity=1, price="10.00"):
    return {"sku": sku, "name": name, "quantity": quantity, "price": price}


class Shared:
    pass


def sql(text):
    return PG.psql(text, dbname=DB)


def setUpModule():
    global PG, REDIS, S
    PG = PgTemp()
    try:
        REDIS = RedisTemp().start()
        S = Shared()
        S.pg_url = PG.create_database(DB)
        S.redis_url = REDIS.url(db=3)
        S.server = AuthServer(S.pg_url, S.redis_url, ratelimit=False)
        S.server.env["RXD_MODULES"] = MODULES
        S.events_path = os.path.join(S.server.dir.name, "events.jsonl")
        S.server.env["RXD_EVENTSPY_FILE"] = S.events_path
        S.server.env["RXD_EVENTSPY_EVENTS"] = "order.created order.status_changed"
        S.server.start()
        email, password = new_email(), new_password()
        r = run_cli("createsuperuser", "--email", email, "--password-stdin",
                    env=af.auth_env(S.pg_url, S.redis_url, ratelimit=False), modules=CLI_MODULES,
                    stdin=password + "\n", timeout=60)
        if r.returncode != 0:
            raise AssertionError("createsuperuser failed: %s%s" % (r.stdout, r.stderr))
        S.admin = login(email, password)
        S.pa = make_pharmacy()
        S.pb = make_pharmacy()
        S.ka = make_key(S.pa)
        S.kb = make_key(S.pb)
        S.admin_a = make_user("PHARMACY_ADMIN", pharmacy=S.pa)
        S.user = make_user("REGISTERED_USER")
        S.user_id = S.user_id_last
        S.doctor = make_user("DOCTOR")
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    try:
        if S is not None and getattr(S, "server", None) is not None:
            try:
                S.server.stop()
            finally:
                S.server.cleanup()
    finally:
        try:
            if REDIS is not None:
                REDIS.cleanup()
        finally:
            if PG is not None:
                PG.cleanup()


def call(method, path, body=None, token=None, key=None, raw=None, headers=None):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if key is not None:
        h["X-API-KEY"] = key
    if raw is not None:
        h.setdefault("Content-Type", "application/json")
        return S.server.request(method, path, body=raw, headers=h)
    return S.server.request(method, path, body=body, headers=h)


def login(email, password):
    r = call("POST", "/api/auth/login/", {"email": email, "password": password})
    if r.status != 200:
        raise AssertionError("login failed: %r" % r)
    return r.json()["access"]


def make_pharmacy():
    r = call("POST", "/api/pharmacies/", {"name": "Pharmacy " + uid()}, token=S.admin)
    if r.status != 201:
        raise AssertionError("pharmacy: %r" % r)
    return r.json()["id"]


def make_key(pharmacy):
    r = call("POST", "/api/pharmacies/%d/api-keys/" % pharmacy, {"name": "k " + uid()}, token=S.admin)
    if r.status != 201:
        raise AssertionError("key: %r" % r)
    return r.json()["key"]


def make_user(role, pharmacy=None):
    email, password = new_email(), new_password()
    body = {"username": "U " + uid(), "email": email, "password": password, "role": role}
    if pharmacy is not None:
        body["pharmacy"] = pharmacy
    r = call("POST", "/api/admin/users/", body, token=S.admin)
    if r.status != 201:
        raise AssertionError("user: %r" % r)
    S.user_id_last = r.json()["id"]
    return login(email, password)


def events(about=None):
    """The events recorded so far (optionally only those about order id `about`)."""
    try:
        with open(S.events_path) as f:
            out = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        out = []
    if about is None:
        return out
    return [e for e in out if (e["data"].get("order") or e["data"]).get("id") == about]


class OrdersCase(unittest.TestCase):
    def order_body(self, **over):
        b = {"order_reference": "REF-" + uid(), "items": [item(quantity=2, price="12.50")],
             "total_amount": "25.00"}
        b.update(over)
        return b

    def create(self, key=None, token=None, **over):
        if key is None and token is None:
            key = S.ka
        r = call("POST", "/api/orders/", self.order_body(**over), key=key, token=token)
        self.assertEqual(r.status, 201, r)
        return self.assertOrder(r.json())

    def assertOrder(self, o, **expected):
        self.assertEqual(set(o), ORDER_FIELDS, o)
        self.assertIsInstance(o["id"], int)
        self.assertRegex(o["created_at"], ISO_Z_RE)
        self.assertRegex(o["updated_at"], ISO_Z_RE)
        self.assertRegex(o["total_amount"], r"^-?\d+\.\d\d$")
        for k, v in expected.items():
            self.assertEqual(o[k], v, "order.%s: %r" % (k, o))
        return o

    def assertInvalid(self, r, expected):
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json(), expected, r)

    def row(self, oid):
        return sql("SELECT pharmacy_id, order_reference, status, items::text, total_amount, "
                   "updated_at FROM orders WHERE id = %d" % oid)

    def set_status(self, oid, to, key=None):
        return call("PATCH", "/api/orders/%d/" % oid, {"status": to}, key=key or S.ka)


class CrudTest(OrdersCase):
    def test_create_detail_and_row(self):
        ref = "REF-" + uid()
        r = call("POST", "/api/orders/", {"order_reference": ref, "items": [
            item("A1", "Napa", 2, "12.50"), item("B2", "Seclo", 1, 7.5)], "total_amount": "32.50",
            "status": "pending", "user": 5, "id": 999999, "created_at": "2000-01-01T00:00:00Z"},
            key=S.ka)
        self.assertEqual(r.status, 201, r)
        o = self.assertOrder(r.json(), pharmacy=S.pa, order_reference=ref, status="pending",
                             total_amount="32.50", user=None)
        self.assertNotEqual(o["id"], 999999)
        self.assertFalse(o["created_at"].startswith("2000"), o)
        self.assertEqual(o["items"], [item("A1", "Napa", 2, "12.50"), item("B2", "Seclo", 1, "7.50")])
        g = call("GET", "/api/orders/%d/" % o["id"], key=S.ka)
        self.assertEqual(g.status, 200, g)
        self.assertEqual(g.json(), o)
        self.assertEqual(sql("SELECT pharmacy_id, order_reference, status, total_amount, user_id "
                             "IS NULL FROM orders WHERE id = %d" % o["id"]),
                         "%d|%s|pending|32.50|t" % (S.pa, ref))
        # The same through a pharmacy admin and a super admin.
        self.assertEqual(call("GET", "/api/orders/%d/" % o["id"], token=S.admin_a).json(), o)
        self.assertEqual(call("GET", "/api/orders/%d/" % o["id"], token=S.admin).json(), o)

    def test_money_forms(self):
        cases = [("7.5", "7.50"), (14.5, "14.50"), (3, "3.00"), ("  2.25 ", "2.25"),
                 ("12345678.99", "12345678.99"), ("1e2", "100.00"), ("0.10", "0.10")]
        for given, out in cases:
            o = self.create(items=[item(price=given)], total_amount=given)
            self.assertEqual(o["total_amount"], out, given)
            self.assertEqual(o["items"][0]["price"], out, given)

    def test_money_errors(self):
        cases = [("1.234", "Ensure that there are no more than 2 decimal places."),
                 (1.234, "Ensure that there are no more than 2 decimal places."),
                 ("123456789.00", "Ensure that there are no more than 10 digits in total."),
                 ("123456789", "Ensure that there are no more than 8 digits before the decimal point."),
                 ("abc", "A valid number is required."), ("", "A valid number is required."),
                 ("NaN", "A valid number is required."), (True, "A valid number is required."),
                 ([1], "A valid number is required."), (None, "This field may not be null."),
                 ("1.230", "Ensure that there are no more than 2 decimal places.")]
        for given, msg in cases:
            r = call("POST", "/api/orders/", self.order_body(total_amount=given), key=S.ka)
            self.assertInvalid(r, invalid("total_amount", msg))
            r = call("POST", "/api/orders/", self.order_body(items=[item(price=given)],
                                                             total_amount="1.00"), key=S.ka)
            self.assertInvalid(r, {"items": {"0": {"price": [msg]}}, "code": "invalid"})

    def test_item_errors_name_the_index(self):
        good = item()
        cases = [
            ({"sku": "", "name": "n", "quantity": 1, "price": "1.00"}, {"sku": ["This field may not be blank."]}),
            ({"name": "n", "quantity": 1, "price": "1.00"}, {"sku": ["This field is required."]}),
            ({"sku": None, "name": "n", "quantity": 1, "price": "1.00"}, {"sku": ["This field may not be null."]}),
            ({"sku": "s" * 101, "name": "n", "quantity": 1, "price": "1.00"},
             {"sku": ["Ensure this field has no more than 100 characters."]}),
            ({"sku": ["x"], "name": "n", "quantity": 1, "price": "1.00"}, {"sku": ["Not a valid string."]}),
            ({"sku": "s", "name": "n" * 256, "quantity": 1, "price": "1.00"},
             {"name": ["Ensure this field has no more than 255 characters."]}),
            ({"sku": "s", "quantity": 1, "price": "1.00"}, {"name": ["This field is required."]}),
            ({"sku": "s", "name": "n", "quantity": 0, "price": "1.00"},
             {"quantity": ["Ensure this value is greater than or equal to 1."]}),
            ({"sku": "s", "name": "n", "quantity": -3, "price": "1.00"},
             {"quantity": ["Ensure this value is greater than or equal to 1."]}),
            ({"sku": "s", "name": "n", "quantity": 2147483648, "price": "1.00"},
             {"quantity": ["Ensure this value is less than or equal to 2147483647."]}),
            ({"sku": "s", "name": "n", "quantity": "x", "price": "1.00"},
             {"quantity": ["A valid integer is required."]}),
            ({"sku": "s", "name": "n", "quantity": 1.5, "price": "1.00"},
             {"quantity": ["A valid integer is required."]}),
            ({"sku": "s", "name": "n", "price": "1.00"}, {"quantity": ["This field is required."]}),
            ({"sku": "s", "name": "n", "quantity": 1}, {"price": ["This field is required."]}),
            ("text", {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}),
            ({}, {"sku": ["This field is required."], "name": ["This field is required."],
                  "quantity": ["This field is required."], "price": ["This field is required."]}),
        ]
        for bad, errs in cases:
            r = call("POST", "/api/orders/", self.order_body(items=[good, good, bad],
                                                             total_amount="20.00"), key=S.ka)
            self.assertInvalid(r, {"items": {"2": errs}, "code": "invalid"})
        # Two bad items: both indexes named.
        r = call("POST", "/api/orders/", self.order_body(items=[dict(good, quantity=0), good,
                                                                dict(good, sku="")]), key=S.ka)
        self.assertInvalid(r, {"items": {
            "0": {"quantity": ["Ensure this value is greater than or equal to 1."]},
            "2": {"sku": ["This field may not be blank."]}}, "code": "invalid"})
        # Quantity as DRF reads it: "3" and 3.0 are 3.
        o = self.create(items=[item(quantity="3", price="1.00"), item(quantity=2.0, price="1.00")],
                        total_amount="5.00")
        self.assertEqual([i["quantity"] for i in o["items"]], [3, 2])

    def test_items_and_fields(self):
        self.assertInvalid(call("POST", "/api/orders/", self.order_body(items={"a": 1}), key=S.ka),
                           invalid("items", 'Expected a list of items but got type "dict".'))
        self.assertInvalid(call("POST", "/api/orders/", self.order_body(items=None), key=S.ka),
                           invalid("items", "This field may not be null."))
        self.assertInvalid(call("POST", "/api/orders/", {}, key=S.ka),
                           {"order_reference": ["This field is required."],
                            "items": ["This field is required."],
                            "total_amount": ["This field is required."], "code": "invalid"})
        self.assertInvalid(call("POST", "/api/orders/", self.order_body(order_reference="r" * 101), key=S.ka),
                           invalid("order_reference", "Ensure this field has no more than 100 characters."))
        self.assertInvalid(call("POST", "/api/orders/", self.order_body(order_reference="  "), key=S.ka),
                           invalid("order_reference", "This field may not be blank."))
        o = self.create(order_reference="r" * 100)
        self.assertEqual(o["order_reference"], "r" * 100)
        o = self.create(order_reference="  trimmed-" + uid() + " ")
        self.assertFalse(o["order_reference"].startswith(" ") or o["order_reference"].endswith(" "))
        # An empty list is a valid order of 0.00.
        self.assertEqual(self.create(items=[], total_amount="0")["total_amount"], "0.00")
        r = call("POST", "/api/orders/", raw=b"[1, 2]", key=S.ka)
        self.assertInvalid(r, invalid("non_field_errors", "Invalid data. Expected a dictionary, but got list."))
        r = call("POST", "/api/orders/", raw=b"{bad json", key=S.ka)
        self.assertEqual(r.status, 400, r)
        r = call("POST", "/api/orders/", raw=b"{}", key=S.ka, headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 415, r)

    def test_total_must_match_items(self):
        r = call("POST", "/api/orders/", self.order_body(total_amount="25.01"), key=S.ka)
        self.assertInvalid(r, invalid("total_amount", SUM_MSG % "25.00"))
        r = call("POST", "/api/orders/", self.order_body(
            items=[item(quantity=3, price="0.10"), item(quantity=1, price=99.99)], total_amount="99"),
            key=S.ka)
        self.assertInvalid(r, invalid("total_amount", SUM_MSG % "100.29"))
        self.assertEqual(self.create(items=[item(quantity=3, price="0.10"), item(quantity=1, price=99.99)],
                                     total_amount=100.29)["total_amount"], "100.29")
        # A sum no numeric(10,2) holds (2147483647 x 99999999.99 overflows int64 cents too).
        r = call("POST", "/api/orders/", self.order_body(items=[
            item(quantity=2147483647, price="99999999.99"), item(quantity=2147483647, price="99999999.99")],
            total_amount="1.00"), key=S.ka)
        self.assertInvalid(r, invalid("total_amount", "Ensure total_amount equals the sum of quantity "
                                                      "\u00d7 price of the items."))
        before = sql("SELECT count(*) FROM orders")
        r = call("POST", "/api/orders/", self.order_body(total_amount="1.00"), key=S.ka)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(sql("SELECT count(*) FROM orders"), before)

    def test_status_on_create(self):
        for st in ("confirmed", "completed", "cancelled"):
            r = call("POST", "/api/orders/", self.order_body(status=st), key=S.ka)
            self.assertInvalid(r, invalid("status", 'A new order starts as "pending", not "%s".' % st))
        r = call("POST", "/api/orders/", self.order_body(status="shipped"), key=S.ka)
        self.assertInvalid(r, invalid("status", '"shipped" is not a valid choice.'))
        r = call("POST", "/api/orders/", self.order_body(status=5), key=S.ka)
        self.assertInvalid(r, invalid("status", '"5" is not a valid choice.'))
        r = call("POST", "/api/orders/", self.order_body(status="s" * 300), key=S.ka)
        self.assertInvalid(r, invalid("status", '"%s" is not a valid choice.' % ("s" * 300)))
        self.assertEqual(self.create(status="pending")["status"], "pending")

    def test_duplicate_reference_per_pharmacy(self):
        ref = "DUP-" + uid()
        a = self.create(order_reference=ref)
        r = call("POST", "/api/orders/", self.order_body(order_reference=ref), key=S.ka)
        self.assertInvalid(r, invalid("order_reference", DUP_MSG))
        b = self.create(key=S.kb, order_reference=ref)  # another pharmacy: a different order
        self.assertEqual((a["pharmacy"], b["pharmacy"]), (S.pa, S.pb))
        # Renaming onto an existing reference is refused the same way.
        c = self.create()
        r = call("PATCH", "/api/orders/%d/" % c["id"], {"order_reference": ref}, key=S.ka)
        self.assertInvalid(r, invalid("order_reference", DUP_MSG))
        self.assertEqual(sql("SELECT count(*) FROM orders WHERE order_reference = '%s'" % ref), "2")

    def test_pharmacy_field(self):
        # key / pharmacy admin: their own, or 400 (another one reads as unknown).
        r = call("POST", "/api/orders/", self.order_body(pharmacy=S.pb), key=S.ka)
        self.assertInvalid(r, invalid("pharmacy", 'Invalid pk "%d" - object does not exist.' % S.pb))
        r = call("POST", "/api/orders/", self.order_body(pharmacy=S.pb), token=S.admin_a)
        self.assertInvalid(r, invalid("pharmacy", 'Invalid pk "%d" - object does not exist.' % S.pb))
        self.assertEqual(self.create(pharmacy=S.pa)["pharmacy"], S.pa)
        self.assertEqual(self.create(token=S.admin_a)["pharmacy"], S.pa)
        r = call("POST", "/api/orders/", self.order_body(pharmacy="x"), key=S.ka)
        self.assertInvalid(r, invalid("pharmacy", "Incorrect type. Expected pk value, received str."))
        # super admin: required and must exist.
        r = call("POST", "/api/orders/", self.order_body(), token=S.admin)
        self.assertInvalid(r, invalid("pharmacy", "This field is required."))
        r = call("POST", "/api/orders/", self.order_body(pharmacy=987654321), token=S.admin)
        self.assertInvalid(r, invalid("pharmacy", 'Invalid pk "987654321" - object does not exist.'))
        self.assertEqual(self.create(token=S.admin, pharmacy=S.pb)["pharmacy"], S.pb)
        # An order never moves: a key naming another pharmacy on update is refused,
        # a super admin's pharmacy on update is ignored.
        o = self.create()
        r = call("PATCH", "/api/orders/%d/" % o["id"], {"pharmacy": S.pb}, key=S.ka)
        self.assertInvalid(r, invalid("pharmacy", 'Invalid pk "%d" - object does not exist.' % S.pb))
        r = call("PATCH", "/api/orders/%d/" % o["id"], {"pharmacy": S.pb}, token=S.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["pharmacy"], S.pa)
        self.assertEqual(sql("SELECT pharmacy_id FROM orders WHERE id = %d" % o["id"]), str(S.pa))

    def test_put_and_patch(self):
        o = self.create()
        oid = o["id"]
        r = call("PATCH", "/api/orders/%d/" % oid, {"order_reference": "NEW-" + str(oid)}, key=S.ka)
        self.assertEqual(r.status, 200, r)
        self.assertOrder(r.json(), order_reference="NEW-%d" % oid, total_amount="25.00", status="pending")
        # Items alone must agree with the stored total; total alone with the stored items.
        r = call("PATCH", "/api/orders/%d/" % oid, {"items": [item(quantity=1, price="5.00")]}, key=S.ka)
        self.assertInvalid(r, invalid("total_amount", SUM_MSG % "5.00"))
        r = call("PATCH", "/api/orders/%d/" % oid, {"total_amount": "26.00"}, key=S.ka)
        self.assertInvalid(r, invalid("total_amount", SUM_MSG % "25.00"))
        self.assertIn("|25.00|", self.row(oid))
        r = call("PATCH", "/api/orders/%d/" % oid, {"items": [item(quantity=1, price="5.00")],
                                                    "total_amount": 5}, key=S.ka)
        self.assertEqual(r.status, 200, r)
        self.assertOrder(r.json(), total_amount="5.00", items=[item(quantity=1, price="5.00")])
        self.assertGreaterEqual(r.json()["updated_at"], o["updated_at"])
        # PUT needs the whole order.
        r = call("PUT", "/api/orders/%d/" % oid, {"order_reference": "X"}, key=S.ka)
        self.assertInvalid(r, {"items": ["This field is required."],
                               "total_amount": ["This field is required."], "code": "invalid"})
        r = call("PUT", "/api/orders/%d/" % oid, {"order_reference": "PUT-%d" % oid, "items": [
            item(quantity=4, price="2.50")], "total_amount": "10.00", "status": "confirmed"}, key=S.ka)
        self.assertEqual(r.status, 200, r)
        self.assertOrder(r.json(), order_reference="PUT-%d" % oid, total_amount="10.00", status="confirmed")
        self.assertEqual(call("GET", "/api/orders/%d/" % oid, key=S.ka).json(), r.json())
        # A rejected PATCH changes nothing.
        before = self.row(oid)
        r = call("PATCH", "/api/orders/%d/" % oid, {"order_reference": "Z", "status": "pending"}, key=S.ka)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.row(oid), before)

    def test_delete(self):
        o = self.create()
        r = call("DELETE", "/api/orders/%d/" % o["id"], key=S.ka)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b"")
        self.assertEqual(sql("SELECT count(*) FROM orders WHERE id = %d" % o["id"]), "0")
        self.assertEqual(call("GET", "/api/orders/%d/" % o["id"], key=S.ka).json(), NOT_FOUND)
        self.assertEqual(call("DELETE", "/api/orders/%d/" % o["id"], key=S.ka).status, 404)
        for bad in ("0", "abc", "99999999999999999999"):
            self.assertEqual(call("GET", "/api/orders/%s/" % bad, key=S.ka).status, 404, bad)

    def test_openapi_documents_the_routes(self):
        r = call("GET", "/api/schema/")
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(set(doc["paths"]["/api/orders/"]) & {"get", "post"}, {"get", "post"})
        self.assertEqual(set(doc["paths"]["/api/orders/{id}/"]) & {"get", "put", "patch", "delete"},
                         {"get", "put", "patch", "delete"})
        self.assertIn("Order", doc["components"]["schemas"])

    def test_auth_required(self):
        r = call("GET", "/api/orders/")
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["code"], "not_authenticated")
        r = call("GET", "/api/orders/", key="rxk_" + "x" * 43)
        self.assertEqual(r.status, 401, r)
        r = call("POST", "/api/orders/", self.order_body())
        self.assertEqual(r.status, 401, r)
        # A doctor has no orders.manage.
        self.assertEqual(call("GET", "/api/orders/", token=S.doctor).json(), DENIED)
        self.assertEqual(call("POST", "/api/orders/", self.order_body(), token=S.doctor).json(), DENIED)


class ListTest(OrdersCase):
    @classmethod
    def setUpClass(cls):
        cls.pc = make_pharmacy()
        cls.kc = make_key(cls.pc)
        cls.orders = []
        for n, price in enumerate(("30.00", "10.00", "20.00", "5.00")):
            r = call("POST", "/api/orders/", {"order_reference": "L-%d" % n, "items": [item(price=price)],
                                              "total_amount": price}, key=cls.kc)
            assert r.status == 201, r
            cls.orders.append(r.json())
            time.sleep(0.01)
        # L-1 is confirmed, L-3 cancelled.
        for oid, st in ((cls.orders[1]["id"], "confirmed"), (cls.orders[3]["id"], "cancelled")):
            r = call("PATCH", "/api/orders/%d/" % oid, {"status": st}, key=cls.kc)
            assert r.status == 200, r
            time.sleep(0.01)

    def refs(self, path, key=None, token=None):
        r = call("GET", path, key=key if key or token else self.kc, token=token)
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIsInstance(body, list, body)
        return [o["order_reference"] for o in body], r

    def test_list_is_a_bare_array_of_own_orders(self):
        refs, r = self.refs("/api/orders/")
        self.assertEqual(refs, ["L-0", "L-1", "L-2", "L-3"])
        self.assertEqual(r.header("x-total-count"), "4")
        for o in r.json():
            self.assertOrder(o, pharmacy=self.pc)
        self.assertEqual(r.json()[0], self.orders[0])

    def test_filters(self):
        self.assertEqual(self.refs("/api/orders/?status=pending")[0], ["L-0", "L-2"])
        self.assertEqual(self.refs("/api/orders/?status=confirmed")[0], ["L-1"])
        self.assertEqual(self.refs("/api/orders/?status=nope")[0], [])
        self.assertEqual(self.refs("/api/orders/?order_reference=L-2")[0], ["L-2"])
        self.assertEqual(self.refs("/api/orders/?order_reference=L-2&status=confirmed")[0], [])
        refs, r = self.refs("/api/orders/?status=pending&ordering=-id")
        self.assertEqual(refs, ["L-2", "L-0"])
        self.assertEqual(r.header("x-total-count"), "2")
        refs, r = self.refs("/api/orders/?pharmacy=%d&status=pending" % self.pc, token=S.admin)
        self.assertEqual(refs, ["L-0", "L-2"])
        self.assertEqual(r.header("x-total-count"), "2")
        refs, r = self.refs("/api/orders/?pharmacy=%d&order_reference=L-3" % self.pc, token=S.admin)
        self.assertEqual(refs, ["L-3"])
        self.assertEqual(r.header("x-total-count"), "1")
        refs, r = self.refs("/api/orders/?status=nope")
        self.assertEqual(r.header("x-total-count"), "0")

    def test_ordering(self):
        self.assertEqual(self.refs("/api/orders/?ordering=total_amount")[0], ["L-3", "L-1", "L-2", "L-0"])
        self.assertEqual(self.refs("/api/orders/?ordering=-total_amount")[0], ["L-0", "L-2", "L-1", "L-3"])
        self.assertEqual(self.refs("/api/orders/?ordering=created_at")[0], ["L-0", "L-1", "L-2", "L-3"])
        self.assertEqual(self.refs("/api/orders/?ordering=-created_at")[0], ["L-3", "L-2", "L-1", "L-0"])
        self.assertEqual(self.refs("/api/orders/?ordering=updated_at")[0], ["L-0", "L-2", "L-1", "L-3"])
        self.assertEqual(self.refs("/api/orders/?ordering=-updated_at")[0], ["L-3", "L-1", "L-2", "L-0"])
        self.assertEqual(self.refs("/api/orders/?ordering=bogus")[0], ["L-0", "L-1", "L-2", "L-3"])
        self.assertEqual(self.refs("/api/orders/?ordering=-id")[0], ["L-3", "L-2", "L-1", "L-0"])
        self.assertEqual(self.refs("/api/orders/?ordering=id")[0], ["L-0", "L-1", "L-2", "L-3"])
        self.assertEqual(self.refs("/api/orders/?ordering=bogus,-id")[0], ["L-0", "L-1", "L-2", "L-3"])
        refs, r = self.refs("/api/orders/?ordering=-total_amount,created_at&page_size=2&page=2")
        self.assertEqual(refs, ["L-1", "L-3"])
        self.assertEqual(r.header("x-total-count"), "4")

    def test_ordering_ties_by_id(self):
        pd = make_pharmacy()
        kd = make_key(pd)
        ids = []
        for n, price in enumerate(("7.00", "7.00", "3.00", "7.00")):
            r = call("POST", "/api/orders/", {"order_reference": "T-%d" % n, "items": [item(price=price)],
                                              "total_amount": price}, key=kd)
            self.assertEqual(r.status, 201, r)
            ids.append(r.json()["id"])
        # T-3 first in time, T-0 and T-2 at the same moment, T-1 last
        sql("UPDATE orders SET created_at = '2026-01-02T00:00:00Z', updated_at = '2026-01-02T00:00:00Z'"
            " WHERE id IN (%d, %d)" % (ids[0], ids[2]))
        sql("UPDATE orders SET created_at = '2026-01-01T00:00:00Z', updated_at = '2026-01-03T00:00:00Z'"
            " WHERE id = %d" % ids[3])
        sql("UPDATE orders SET created_at = '2026-01-03T00:00:00Z', updated_at = '2026-01-02T00:00:00Z'"
            " WHERE id = %d" % ids[1])
        for ordering, expected in (("total_amount", ["T-2", "T-0", "T-1", "T-3"]),
                                   ("-total_amount", ["T-0", "T-1", "T-3", "T-2"]),
                                   ("created_at", ["T-3", "T-0", "T-2", "T-1"]),
                                   ("-created_at", ["T-1", "T-0", "T-2", "T-3"]),
                                   ("updated_at", ["T-0", "T-1", "T-2", "T-3"]),
                                   ("-updated_at", ["T-3", "T-0", "T-1", "T-2"])):
            refs, r = self.refs("/api/orders/?ordering=" + ordering, key=kd)
            self.assertEqual(refs, expected, ordering)
            self.assertEqual(r.header("x-total-count"), "4", ordering)

    def test_paging(self):
        refs, r = self.refs("/api/orders/?page_size=3")
        self.assertEqual(refs, ["L-0", "L-1", "L-2"])
        self.assertEqual(r.header("x-total-count"), "4")
        self.assertIn('rel="next"', r.header("link", ""))
        refs, r = self.refs("/api/orders/?page_size=3&page=2")
        self.assertEqual(refs, ["L-3"])
        self.assertIn('rel="prev"', r.header("link", ""))
        r = call("GET", "/api/orders/?page_size=3&page=3", key=self.kc)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json(), {"detail": "Invalid page.", "code": "not_found"})

    def test_pharmacy_filter(self):
        refs, r = self.refs("/api/orders/?pharmacy=%d" % self.pc, token=S.admin)
        self.assertEqual(refs, ["L-0", "L-1", "L-2", "L-3"])
        all_refs, _ = self.refs("/api/orders/?page_size=1000", token=S.admin)
        self.assertGreater(len(all_refs), 4)
        # Ignored for everyone else: a key of A asking for C still sees only A's.
        refs, _ = self.refs("/api/orders/?pharmacy=%d&page_size=1000" % self.pc, key=S.ka)
        self.assertFalse(set(refs) & {"L-0", "L-1", "L-2", "L-3"}, refs)
        # digits are accepted as they are; no pharmacy 0 has orders
        refs, r = self.refs("/api/orders/?pharmacy=0", token=S.admin)
        self.assertEqual(refs, [])
        self.assertEqual(r.header("x-total-count"), "0")
        r = call("GET", "/api/orders/?pharmacy=abc", token=S.admin)
        self.assertInvalid(r, invalid("pharmacy", "Select a valid choice. That choice is not one of "
                                                  "the available choices."))


class TransitionTest(OrdersCase):
    def test_every_allowed_transition(self):
        o = self.create()
        path = ["pending", "confirmed", "processing", "ready", "completed"]
        for frm, to in zip(path, path[1:]):
            r = self.set_status(o["id"], to)
            self.assertEqual(r.status, 200, r)
            self.assertOrder(r.json(), status=to)
            self.assertEqual(sql("SELECT status FROM orders WHERE id = %d" % o["id"]), to)
        for state in OPEN:
            for end in ("cancelled", "rejected"):
                o = self.create()
                for step in path[1:path.index(state) + 1]:
                    self.assertEqual(self.set_status(o["id"], step).status, 200)
                r = self.set_status(o["id"], end)
                self.assertEqual(r.status, 200, (state, end, r))
                self.assertEqual(r.json()["status"], end)
        # PUT moves the status too.
        o = self.create()
        r = call("PUT", "/api/orders/%d/" % o["id"], dict(self.order_body(
            order_reference=o["order_reference"]), status="confirmed"), key=S.ka)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "confirmed")

    def reach(self, state):
        o = self.create()
        if state in ("cancelled", "rejected"):
            self.assertEqual(self.set_status(o["id"], state).status, 200)
            return o
        chain = ["pending", "confirmed", "processing", "ready", "completed"]
        for step in chain[1:chain.index(state) + 1]:
            self.assertEqual(self.set_status(o["id"], step).status, 200)
        return o

    def test_forbidden_transitions(self):
        cases = [("ready", "pending"), ("pending", "pending"), ("pending", "processing"),
                 ("pending", "completed"), ("confirmed", "confirmed"), ("confirmed", "ready"),
                 ("processing", "confirmed"), ("ready", "ready"), ("completed", "cancelled"),
                 ("completed", "pending"), ("cancelled", "confirmed"), ("cancelled", "cancelled"),
                 ("rejected", "pending"), ("rejected", "cancelled")]
        for frm, to in cases:
            o = self.reach(frm)
            before = self.row(o["id"])
            r = self.set_status(o["id"], to)
            self.assertInvalid(r, invalid("status", 'Cannot change status from "%s" to "%s". Allowed: %s.'
                                          % (frm, to, ALLOWED[frm])))
            self.assertEqual(self.row(o["id"]), before, (frm, to))
        o = self.create()
        self.assertInvalid(self.set_status(o["id"], "lost"), invalid("status", '"lost" is not a valid choice.'))
        self.assertInvalid(self.set_status(o["id"], None), invalid("status", "This field may not be null."))

    def test_parallel_transitions_one_wins(self):
        def race(oid, targets):
            barrier = threading.Barrier(len(targets))
            out = [None] * len(targets)

            def go(i):
                barrier.wait()
                out[i] = self.set_status(oid, targets[i])
            ts = [threading.Thread(target=go, args=(i,)) for i in range(len(targets))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return out
        for _ in range(5):
            o = self.create()
            res = race(o["id"], ["confirmed", "confirmed"])
            self.assertEqual(sorted(r.status for r in res), [200, 400], res)
            loser = [r for r in res if r.status == 400][0]
            self.assertEqual(loser.json(), invalid("status", 'Cannot change status from "confirmed" to '
                                                   '"confirmed". Allowed: %s.' % ALLOWED["confirmed"]))
        for _ in range(3):
            o = self.create()
            # Both end states are terminal: whatever the interleaving, one request wins.
            targets = ["cancelled", "rejected", "cancelled", "rejected", "cancelled", "rejected"]
            res = race(o["id"], targets)
            wins = [targets[i] for i, r in enumerate(res) if r.status == 200]
            self.assertEqual(len(wins), 1, res)
            self.assertEqual(sorted(r.status for r in res), [200] + [400] * 5, res)
            self.assertEqual(sql("SELECT status FROM orders WHERE id = %d" % o["id"]), wins[0])


class ScopeTest(OrdersCase):
    def test_key_of_a_on_b_orders(self):
        b = self.create(key=S.kb)
        before = self.row(b["id"])
        path = "/api/orders/%d/" % b["id"]
        self.assertEqual(call("GET", path, key=S.ka).json(), NOT_FOUND)
        for method, body in (("PATCH", {"status": "confirmed"}), ("PATCH", {"order_reference": "stolen"}),
                             ("PUT", self.order_body(status="cancelled")), ("DELETE", None)):
            r = call(method, path, body, key=S.ka)
            self.assertEqual(r.status, 404, (method, r))
            self.assertEqual(r.json(), NOT_FOUND)
        r = call("PATCH", path, {"status": "confirmed"}, token=S.admin_a)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.row(b["id"]), before)
        refs = [o["id"] for o in call("GET", "/api/orders/?page_size=1000", key=S.ka).json()]
        self.assertNotIn(b["id"], refs)
        self.assertEqual(call("GET", "/api/orders/?order_reference=%s" % b["order_reference"], key=S.ka).json(), [])
        # B itself still can.
        self.assertEqual(call("GET", path, key=S.kb).status, 200)
        self.assertEqual(call("GET", path, token=S.admin).status, 200)

    def test_registered_user(self):
        r = call("GET", "/api/orders/", token=S.user)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), [])
        self.assertEqual(r.header("x-total-count"), "0")
        self.assertEqual(call("POST", "/api/orders/", self.order_body(pharmacy=S.pa), token=S.user).json(), DENIED)
        o = self.create()
        path = "/api/orders/%d/" % o["id"]
        self.assertEqual(call("GET", path, token=S.user).json(), NOT_FOUND)
        for method, body in (("PATCH", {"status": "confirmed"}), ("PUT", self.order_body()), ("DELETE", None)):
            r = call(method, path, body, token=S.user)
            self.assertEqual(r.status, 403, r)
            self.assertEqual(r.json(), DENIED)
        self.assertEqual(sql("SELECT status FROM orders WHERE id = %d" % o["id"]), "pending")
        # "own only": an order of theirs (a later customer order, made here by hand) is theirs to see.
        own = sql("INSERT INTO orders (user_id, order_reference, total_amount) VALUES (%d, 'CUST-%s', 0) "
                  "RETURNING id" % (S.user_id, uid())).splitlines()[0]
        r = call("GET", "/api/orders/", token=S.user)
        self.assertEqual([x["id"] for x in r.json()], [int(own)])
        self.assertEqual(r.json()[0]["user"], S.user_id)
        self.assertEqual(r.header("x-total-count"), "1")
        r = call("GET", "/api/orders/?status=pending&ordering=-id", token=S.user)
        self.assertEqual([x["id"] for x in r.json()], [int(own)])
        self.assertEqual(call("GET", "/api/orders/?status=confirmed", token=S.user).json(), [])
        # their ?pharmacy= is ignored (a pharmacy scope of none is not "all")
        r = call("GET", "/api/orders/?pharmacy=%d" % S.pa, token=S.user)
        self.assertEqual([x["id"] for x in r.json()], [int(own)])
        self.assertEqual(call("GET", "/api/orders/%s/" % own, token=S.user).status, 200)
        # and nobody's pharmacy scope reaches it
        self.assertEqual(call("GET", "/api/orders/%s/" % own, key=S.ka).status, 404)
        sql("DELETE FROM orders WHERE id = %s" % own)


class EventsTest(OrdersCase):
    def test_created_and_status_changed(self):
        o = self.create()
        self.assertEqual(events(o["id"]), [{"event": "order.created", "data": o}])
        r = self.set_status(o["id"], "confirmed")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(events(o["id"])[1:], [{"event": "order.status_changed", "data": {
            "order": r.json(), "from": "pending", "to": "confirmed"}}])
        # No status in the body, a refused transition, a refused body: no status event.
        self.assertEqual(call("PATCH", "/api/orders/%d/" % o["id"], {"order_reference": "EV-" + uid()},
                              key=S.ka).status, 200)
        self.assertEqual(self.set_status(o["id"], "pending").status, 400)
        self.assertEqual(call("POST", "/api/orders/", self.order_body(total_amount="0.01"), key=S.ka).status, 400)
        self.assertEqual(len(events(o["id"])), 2, events(o["id"]))
        r = self.set_status(o["id"], "rejected")
        self.assertEqual(events(o["id"])[-1]["data"]["from"], "confirmed")
        self.assertEqual(events(o["id"])[-1]["data"]["to"], "rejected")
        self.assertEqual(events(o["id"])[-1]["data"]["order"], r.json())


class ApplyTest(OrdersCase):
    def event(self, pharmacy, etype, payload):
        return int(sql("INSERT INTO webhook_events (pharmacy_id, event_type, payload) VALUES (%d, '%s', "
                       "'%s'::jsonb) RETURNING id" % (pharmacy, etype, json.dumps(payload).replace("'", "''"))
                       ).splitlines()[0])

    def enqueue(self, etype, event_id, pharmacy, payload):
        job = {"event_id": event_id, "pharmacy_id": pharmacy, "payload": payload}
        return int(sql("SELECT rx_enqueue('webhook.apply.%s', '%s'::jsonb)" %
                       (etype, json.dumps(job).replace("'", "''"))).splitlines()[0])

    def wait_job(self, job_id, timeout=20):
        """Wait until the job is finished; it must have succeeded (validation failures too)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = sql("SELECT state, coalesce(last_error, '') FROM rx_jobs WHERE id = %d" % job_id)
            if st.startswith("done|") or st.startswith("dead|"):
                self.assertEqual(st, "done|", "job %d" % job_id)
                return
            time.sleep(0.1)
        self.fail("job %d not finished: %s" % (job_id, sql("SELECT * FROM rx_jobs WHERE id = %d" % job_id)))

    def event_state(self, eid):
        return sql("SELECT processed, coalesce(processing_error, '') FROM webhook_events WHERE id = %d" % eid)

    def test_order_created_applies_once(self):
        ref = "WH-" + uid()
        payload = self.order_body(order_reference=ref)
        eid = self.event(S.pa, "order.created", payload)
        self.wait_job(self.enqueue("order.created", eid, S.pa, payload))
        self.assertEqual(self.event_state(eid), "t|")
        self.assertEqual(sql("SELECT pharmacy_id, status, total_amount FROM orders WHERE order_reference = '%s'"
                             % ref), "%d|pending|25.00" % S.pa)
        # A retry of the same event (even with another body) changes nothing.
        other = self.order_body(order_reference=ref + "-again")
        self.wait_job(self.enqueue("order.created", eid, S.pa, other))
        self.assertEqual(sql("SELECT count(*) FROM orders WHERE order_reference LIKE '%s%%'" % ref), "1")
        listed = call("GET", "/api/orders/?order_reference=%s" % ref, key=S.ka).json()
        self.assertEqual(len(listed), 1, listed)
        self.assertEqual(listed[0]["status"], "pending")
        # The job emitted order.created once, with the order as the API shows it.
        self.assertEqual(events(listed[0]["id"]), [{"event": "order.created", "data": listed[0]}])

    def test_order_created_invalid_is_recorded(self):
        ref = "WHBAD-" + uid()
        payload = self.order_body(order_reference=ref, total_amount="1.00")
        eid = self.event(S.pa, "order.created", payload)
        self.wait_job(self.enqueue("order.created", eid, S.pa, payload))
        self.assertEqual(self.event_state(eid), "f|" + json.dumps(
            {"total_amount": [SUM_MSG % "25.00"]}, separators=(",", ":"), ensure_ascii=False))
        self.assertEqual(sql("SELECT count(*) FROM orders WHERE order_reference = '%s'" % ref), "0")
        # A duplicate reference is a validation failure too.
        dup = self.create()
        payload = self.order_body(order_reference=dup["order_reference"])
        eid = self.event(S.pa, "order.created", payload)
        self.wait_job(self.enqueue("order.created", eid, S.pa, payload))
        self.assertEqual(self.event_state(eid), "f|" + json.dumps({"order_reference": [DUP_MSG]},
                                                                   separators=(",", ":")))
        # Another pharmacy in the body is refused, never lands elsewhere.
        payload = self.order_body(pharmacy=S.pb)
        eid = self.event(S.pa, "order.created", payload)
        self.wait_job(self.enqueue("order.created", eid, S.pa, payload))
        self.assertTrue(self.event_state(eid).startswith('f|{"pharmacy"'), self.event_state(eid))
        self.assertEqual(sql("SELECT count(*) FROM orders WHERE order_reference = '%s'"
                             % payload["order_reference"]), "0")

    def test_status_changed(self):
        o = self.create()
        ref = o["order_reference"]
        p = {"order_reference": ref, "status": "confirmed"}
        eid = self.event(S.pa, "order.status_changed", p)
        self.wait_job(self.enqueue("order.status_changed", eid, S.pa, p))
        self.assertEqual(self.event_state(eid), "t|")
        self.assertEqual(sql("SELECT status FROM orders WHERE id = %d" % o["id"]), "confirmed")
        # Applied once: the retried job does not move it again, nor record an error.
        self.wait_job(self.enqueue("order.status_changed", eid, S.pa, {"order_reference": ref,
                                                                      "status": "cancelled"}))
        self.assertEqual(sql("SELECT status FROM orders WHERE id = %d" % o["id"]), "confirmed")
        self.assertEqual(self.event_state(eid), "t|")
        changed = [e["data"] for e in events(o["id"]) if e["event"] == "order.status_changed"]
        self.assertEqual([(d["from"], d["to"], d["order"]["status"]) for d in changed],
                         [("pending", "confirmed", "confirmed")])
        # A refused transition is recorded, nothing changes.
        p = {"order_reference": ref, "status": "pending"}
        eid = self.event(S.pa, "order.status_changed", p)
        self.wait_job(self.enqueue("order.status_changed", eid, S.pa, p))
        self.assertEqual(self.event_state(eid), "f|" + json.dumps({"status": [
            'Cannot change status from "confirmed" to "pending". Allowed: %s.' % ALLOWED["confirmed"]]},
            separators=(",", ":")))
        self.assertEqual(sql("SELECT status FROM orders WHERE id = %d" % o["id"]), "confirmed")
        # Another pharmacy's event cannot reach A's order.
        p = {"order_reference": ref, "status": "cancelled"}
        eid = self.event(S.pb, "order.status_changed", p)
        self.wait_job(self.enqueue("order.status_changed", eid, S.pb, p))
        self.assertEqual(self.event_state(eid), 'f|{"order_reference":["Not found."]}')
        self.assertEqual(sql("SELECT status FROM orders WHERE id = %d" % o["id"]), "confirmed")
        # Bad fields.
        p = {"order_reference": ref, "status": "lost"}
        eid = self.event(S.pa, "order.status_changed", p)
        self.wait_job(self.enqueue("order.status_changed", eid, S.pa, p))
        self.assertEqual(self.event_state(eid), 'f|{"status":["\\"lost\\" is not a valid choice."]}')


class WebhookFlowTest(OrdersCase):
    """Through the real webhooks module: POST /api/webhook-events/ with a key, its process
    job dispatches to our apply tasks."""

    def wait_processed(self, eid, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = sql("SELECT processed, coalesce(processing_error, '') FROM webhook_events "
                     "WHERE id = %d" % eid)
            if st != "f|":
                return st
            time.sleep(0.1)
        self.fail("event %d not processed" % eid)

    def post_event(self, etype, payload, key=None):
        r = call("POST", "/api/webhook-events/", {"event_type": etype, "payload": payload},
                 key=key or S.ka)
        self.assertEqual(r.status, 201, r)
        return r.json()["id"]

    def test_created_then_status_changed(self):
        ref = "FLOW-" + uid()
        eid = self.post_event("order.created", self.order_body(order_reference=ref))
        self.assertEqual(self.wait_processed(eid), "t|")
        self.assertEqual(sql("SELECT pharmacy_id, status, total_amount FROM orders "
                             "WHERE order_reference = '%s'" % ref), "%d|pending|25.00" % S.pa)
        eid = self.post_event("order.status_changed", {"order_reference": ref, "status": "ready"})
        self.assertEqual(self.wait_processed(eid), "f|" + json.dumps({"status": [
            'Cannot change status from "pending" to "ready". Allowed: %s.' % ALLOWED["pending"]]},
            separators=(",", ":")))
        eid = self.post_event("order.status_changed", {"order_reference": ref, "status": "confirmed"})
        self.assertEqual(self.wait_processed(eid), "t|")
        self.assertEqual(sql("SELECT status FROM orders WHERE order_reference = '%s' AND "
                             "pharmacy_id = %d" % (ref, S.pa)), "confirmed")
        # B's key cannot move A's order through an event.
        eid = self.post_event("order.status_changed", {"order_reference": ref, "status": "cancelled"},
                              key=S.kb)
        self.assertEqual(self.wait_processed(eid), 'f|{"order_reference":["Not found."]}')
        self.assertEqual(sql("SELECT status FROM orders WHERE order_reference = '%s' AND "
                             "pharmacy_id = %d" % (ref, S.pa)), "confirmed")


if __name__ == "__main__":
    unittest.main()
