"""test_webhooks — incoming webhook events end to end (../shared/API.md "Connector":
WebhookEvent, idempotency per pharmacy, payloads of known types).

Real rxd (`serve --migrate`, modules `notify auth rbac pharmacies webhooks`, plus `inventory`
and `orders` when their .so files are in RXD_MODULE_DIR) on a private PostgreSQL and Redis.
The tests of applied types (TestAppliedInventory, TestAppliedOrders) need those modules: they
FAIL, never skip, when a module is missing. The database is read with psql to check what
really changed, and extra jobs are enqueued with psql to prove that a retried or duplicated
job changes data once.
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

HAVE_INVENTORY = os.path.exists(os.path.join(af.MODULE_DIR, "inventory.so"))
HAVE_ORDERS = os.path.exists(os.path.join(af.MODULE_DIR, "orders.so"))
MODULES = "notify auth rbac pharmacies webhooks"
if HAVE_INVENTORY:
    MODULES += " inventory"
if HAVE_ORDERS:
    MODULES += " orders"

EVENT_FIELDS = {"id", "pharmacy", "event_type", "payload", "received_at", "processed",
                "processing_error", "idempotency_key"}
ALREADY = {"detail": "Event already processed.", "code": "already_processed"}
NOT_FOUND = {"detail": "Not found.", "code": "not_found"}
WAIT = 20.0  # seconds a job may take (poll interval is 200 ms, NOTIFY usually wakes sooner)

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


class WebhookServer(AuthServer):
    def __init__(self, pg_url, redis_url):
        super().__init__(pg_url, redis_url, ratelimit=False,
                         env={"RXD_JOBS_POLL_INTERVAL": "200ms"})
        self.env["RXD_MODULES"] = MODULES


class WebhookCase(unittest.TestCase):
    DB = None
    REDIS_DB = 1

    @classmethod
    def setUpClass(cls):
        cls.pg_url = PG.create_database(cls.DB)
        cls.redis_url = REDIS.url(db=cls.REDIS_DB)
        cls.server = WebhookServer(cls.pg_url, cls.redis_url)
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
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    # -- helpers -------------------------------------------------------------

    def req(self, method, path, body=None, token=None, key=None, headers=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if key is not None:
            h["X-API-KEY"] = key
        return self.server.request(method, path, body=body, headers=h)

    def sql(self, text):
        return PG.psql(text, dbname=self.DB)

    def make_pharmacy(self):
        r = self.req("POST", "/api/pharmacies/", {"name": "Pharmacy " + uid()}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        ph = r.json()
        r = self.req("POST", "/api/pharmacies/%d/api-keys/" % ph["id"], {"name": "k"}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        return ph["id"], r.json()["key"]

    def send(self, key, event_type, payload, idem=None, expect=201, **extra):
        body = {"event_type": event_type, "payload": payload}
        body.update(extra)
        r = self.req("POST", "/api/webhook-events/", body, key=key,
                     headers={"Idempotency-Key": idem} if idem is not None else None)
        self.assertEqual(r.status, expect, r)
        ev = r.json()
        self.assertEqual(set(ev), EVENT_FIELDS, ev)
        return ev

    def get(self, key, event_id):
        r = self.req("GET", "/api/webhook-events/%d/" % event_id, key=key)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def jobs(self, event_id, task="webhooks.process"):
        """States of the jobs of `task` for an event, in id order."""
        out = self.sql("SELECT state FROM rx_jobs WHERE task = '%s' AND payload->>'event_id' = '%d'"
                       " ORDER BY id" % (task, event_id))
        return out.split() if out else []

    def wait_jobs_finished(self, event_id, at_least=1):
        """Until every job naming the event (any task) is done or dead; returns the states."""
        deadline = time.monotonic() + WAIT
        while True:
            out = self.sql("SELECT task || ':' || state FROM rx_jobs"
                           " WHERE payload->>'event_id' = '%d' ORDER BY id" % event_id)
            states = out.split() if out else []
            if len(states) >= at_least and all(s.endswith(":done") or s.endswith(":dead") for s in states):
                return states
            if time.monotonic() > deadline:
                self.fail("jobs of event %d not finished in %.0f s: %r\n%s" %
                          (event_id, WAIT, states, self.server.output()[-3000:]))
            time.sleep(0.1)

    def wait_event(self, key, event_id, pred, what):
        deadline = time.monotonic() + WAIT
        while True:
            ev = self.get(key, event_id)
            if pred(ev):
                return ev
            if time.monotonic() > deadline:
                self.fail("event %d never became %s: %r\n%s" %
                          (event_id, what, ev, self.server.output()[-3000:]))
            time.sleep(0.1)

    def assertError(self, r, status, body):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.json(), body, r)


# ---------------------------------------------------------------------------


class TestIngestion(WebhookCase):
    DB = "wh_ingest"

    def setUp(self):
        self.ph, self.key = self.make_pharmacy()

    def test_stored_as_received(self):
        payload = {"a": 1, "nested": {"list": [1, "two", None, 3.5], "t": True},
                   "text": "নাপা ৫০০ mg \u00e9"}
        ev = self.send(self.key, "custom.thing", payload)
        self.assertIsInstance(ev["id"], int)
        self.assertEqual(ev["pharmacy"], self.ph)
        self.assertEqual(ev["event_type"], "custom.thing")
        self.assertEqual(ev["payload"], payload)
        self.assertRegex(ev["received_at"], ISO_Z_RE)
        self.assertIs(ev["processed"], False)
        self.assertIsNone(ev["processing_error"])
        self.assertIsNone(ev["idempotency_key"])
        self.assertEqual(self.get(self.key, ev["id"]), ev)
        row = self.sql("SELECT pharmacy_id, event_type, payload::text FROM webhook_events"
                       " WHERE id = %d" % ev["id"]).split("|", 2)
        self.assertEqual(int(row[0]), self.ph)
        self.assertEqual(row[1], "custom.thing")
        self.assertEqual(json.loads(row[2]), payload)
        # stored and its processing job committed with it
        self.assertEqual(len(self.jobs(ev["id"])), 1)

    def test_without_key_every_delivery_is_new(self):
        a = self.send(self.key, "custom.thing", {"x": 1})
        b = self.send(self.key, "custom.thing", {"x": 1})
        self.assertNotEqual(a["id"], b["id"])

    def test_same_idempotency_key_twice_is_one_event(self):
        k = "idem-" + uid()
        first = self.send(self.key, "custom.thing", {"n": 1}, idem=k, expect=201)
        self.assertEqual(first["idempotency_key"], k)
        again = self.send(self.key, "custom.thing", {"n": 2}, idem=k, expect=200)
        self.assertEqual(again["id"], first["id"])
        self.assertEqual(again["payload"], {"n": 1}, "a repeat must not overwrite the first event")
        self.assertEqual(self.sql("SELECT count(*) FROM webhook_events WHERE pharmacy_id = %d"
                                  " AND idempotency_key = '%s'" % (self.ph, k)), "1")
        self.assertEqual(len(self.jobs(first["id"])), 1, "a repeat must not queue processing again")

    def test_same_key_other_pharmacy_is_another_event(self):
        k = "idem-" + uid()
        ph2, key2 = self.make_pharmacy()
        a = self.send(self.key, "custom.thing", {"n": 1}, idem=k, expect=201)
        b = self.send(key2, "custom.thing", {"n": 1}, idem=k, expect=201)
        self.assertNotEqual(a["id"], b["id"])
        self.assertEqual(b["pharmacy"], ph2)
        self.assertEqual(self.sql("SELECT count(*) FROM webhook_events WHERE idempotency_key = '%s'" % k), "2")

    def test_payload_event_id_is_the_key(self):
        eid = "evt_" + uid()
        a = self.send(self.key, "custom.thing", {"event_id": eid, "v": 1}, expect=201)
        self.assertEqual(a["idempotency_key"], eid)
        b = self.send(self.key, "custom.thing", {"event_id": eid, "v": 2}, expect=200)
        self.assertEqual(b["id"], a["id"])
        n = int(time.time() * 1000)
        c = self.send(self.key, "custom.thing", {"event_id": n}, expect=201)
        self.assertEqual(c["idempotency_key"], str(n))
        self.send(self.key, "custom.thing", {"event_id": n}, expect=200)
        # the header wins over the payload's event_id
        h = "hdr-" + uid()
        d = self.send(self.key, "custom.thing", {"event_id": eid}, idem=h, expect=201)
        self.assertEqual(d["idempotency_key"], h)

    def test_concurrent_duplicates_make_one_event(self):
        k = "race-" + uid()
        results = []

        def one():
            r = self.server.request("POST", "/api/webhook-events/",
                                    {"event_type": "custom.race", "payload": {"k": k}},
                                    headers={"X-API-KEY": self.key, "Idempotency-Key": k})
            results.append(r)
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(r.status for r in results), [200] * 7 + [201], results)
        self.assertEqual(len({r.json()["id"] for r in results}), 1, results)
        self.assertEqual(self.sql("SELECT count(*) FROM webhook_events WHERE idempotency_key = '%s'" % k), "1")

    def test_validation(self):
        r = self.req("POST", "/api/webhook-events/", {}, key=self.key)
        self.assertError(r, 400, {"event_type": ["This field is required."],
                                  "payload": ["This field is required."], "code": "invalid"})
        r = self.req("POST", "/api/webhook-events/", {"event_type": "x", "payload": [1]}, key=self.key)
        self.assertEqual(r.status, 400, r)
        self.assertIn("payload", r.json())
        r = self.req("POST", "/api/webhook-events/", {"event_type": "x" * 101, "payload": {}}, key=self.key)
        self.assertError(r, 400, {"event_type": ["Ensure this field has no more than 100 characters."],
                                  "code": "invalid"})
        self.send(self.key, "x" * 100, {})
        r = self.req("POST", "/api/webhook-events/", {"event_type": "", "payload": {}}, key=self.key)
        self.assertEqual(r.status, 400, r)
        r = self.req("POST", "/api/webhook-events/", [1], key=self.key)
        self.assertEqual(r.status, 400, r)
        r = self.req("POST", "/api/webhook-events/", {"event_type": "x", "payload": {"s": "a\u0000b"}},
                     key=self.key)
        self.assertError(r, 400, {"payload": ["Null characters are not allowed."], "code": "invalid"})
        r = self.req("POST", "/api/webhook-events/", {"event_type": "x", "payload": {}},
                     key=self.key, headers={"Idempotency-Key": "k" * 256})
        self.assertEqual(r.status, 400, r)

    def test_pharmacy_in_body(self):
        ph2, _ = self.make_pharmacy()
        # a key names its own pharmacy: fine; another: 400, nothing stored
        ev = self.send(self.key, "custom.thing", {}, pharmacy=self.ph)
        self.assertEqual(ev["pharmacy"], self.ph)
        before = self.sql("SELECT count(*) FROM webhook_events")
        r = self.req("POST", "/api/webhook-events/",
                     {"event_type": "custom.thing", "payload": {}, "pharmacy": ph2}, key=self.key)
        self.assertEqual(r.status, 400, r)
        self.assertIn("pharmacy", r.json())
        self.assertEqual(self.sql("SELECT count(*) FROM webhook_events"), before)
        # a super admin must name it, and it must exist
        r = self.req("POST", "/api/webhook-events/", {"event_type": "t", "payload": {}}, token=self.admin)
        self.assertError(r, 400, {"pharmacy": ["This field is required."], "code": "invalid"})
        r = self.req("POST", "/api/webhook-events/",
                     {"event_type": "t", "payload": {}, "pharmacy": 987654321}, token=self.admin)
        self.assertEqual(r.status, 400, r)
        self.assertIn("pharmacy", r.json())
        r = self.req("POST", "/api/webhook-events/",
                     {"event_type": "t", "payload": {}, "pharmacy": ph2}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["pharmacy"], ph2)
        r = self.req("POST", "/api/webhook-events/",
                     {"event_type": "t", "payload": {}, "pharmacy": str(ph2)}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["pharmacy"], ph2)

    def test_no_credentials(self):
        r = self.req("POST", "/api/webhook-events/", {"event_type": "t", "payload": {}})
        self.assertEqual(r.status, 401, r)
        r = self.req("GET", "/api/webhook-events/", key="rxk_" + "x" * 43)
        self.assertEqual(r.status, 401, r)


class TestRoutes(WebhookCase):
    DB = "wh_routes"

    def setUp(self):
        self.ph, self.key = self.make_pharmacy()
        self.ph2, self.key2 = self.make_pharmacy()

    def test_unknown_type_stored_unprocessed(self):
        ev = self.send(self.key, "nobody.handles." + uid(), {"x": 1})
        states = self.wait_jobs_finished(ev["id"])
        self.assertEqual(states, ["webhooks.process:done"])
        got = self.get(self.key, ev["id"])
        self.assertIs(got["processed"], False)
        self.assertIsNone(got["processing_error"])
        self.assertEqual(got["payload"], {"x": 1})

    def test_cross_pharmacy_is_404(self):
        ev = self.send(self.key, "custom.thing", {"x": 1})
        p = "/api/webhook-events/%d/" % ev["id"]
        self.assertError(self.req("GET", p, key=self.key2), 404, NOT_FOUND)
        self.assertError(self.req("PATCH", p, {"payload": {"y": 2}}, key=self.key2), 404, NOT_FOUND)
        self.assertError(self.req("PUT", p, {"event_type": "a", "payload": {}}, key=self.key2), 404, NOT_FOUND)
        self.assertError(self.req("DELETE", p, key=self.key2), 404, NOT_FOUND)
        self.assertError(self.req("POST", p + "process/", key=self.key2), 404, NOT_FOUND)
        r = self.req("GET", "/api/webhook-events/", key=self.key2)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(ev["id"], [e["id"] for e in r.json()])
        # a key's ?pharmacy= does not widen its view
        r = self.req("GET", "/api/webhook-events/?pharmacy=%d" % self.ph, key=self.key2)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(ev["id"], [e["id"] for e in r.json()])
        # untouched, and the super admin sees it
        self.assertEqual(self.get(self.key, ev["id"])["payload"], {"x": 1})
        r = self.req("GET", p, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.req("GET", "/api/webhook-events/abc/", key=self.key).status, 404)

    def test_list_filters(self):
        t1, t2 = "list.a." + uid(), "list.b." + uid()
        a = self.send(self.key, t1, {"i": 1})
        b = self.send(self.key, t1, {"i": 2})
        c = self.send(self.key, t2, {"i": 3})
        other = self.send(self.key2, t1, {"i": 4})
        self.assertEqual(self.sql("SELECT rx_webhook_claim(%d)" % b["id"]), "t")

        r = self.req("GET", "/api/webhook-events/", key=self.key)
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIsInstance(body, list, body)
        self.assertEqual(r.header("x-total-count"), str(len(body)))
        self.assertEqual({e["id"] for e in body}, {a["id"], b["id"], c["id"]})
        for e in body:
            self.assertEqual(set(e), EVENT_FIELDS, e)

        def ids(q, **kw):
            rr = self.req("GET", "/api/webhook-events/" + q, **kw)
            self.assertEqual(rr.status, 200, rr)
            return [e["id"] for e in rr.json()]
        self.assertEqual(ids("?event_type=" + t1, key=self.key), [a["id"], b["id"]])
        self.assertEqual(ids("?event_type=" + t2, key=self.key), [c["id"]])
        self.assertEqual(ids("?processed=true", key=self.key), [b["id"]])
        self.assertEqual(ids("?processed=false", key=self.key), [a["id"], c["id"]])
        self.assertEqual(ids("?processed=false&event_type=" + t1, key=self.key), [a["id"]])
        r = self.req("GET", "/api/webhook-events/?processed=maybe", key=self.key)
        self.assertEqual(r.status, 400, r)
        self.assertIn("processed", r.json())
        # super admin: everything, or one pharmacy
        self.assertEqual(ids("?event_type=" + t1, token=self.admin), [a["id"], b["id"], other["id"]])
        self.assertEqual(ids("?event_type=%s&pharmacy=%d" % (t1, self.ph2), token=self.admin), [other["id"]])
        self.assertEqual(self.req("GET", "/api/webhook-events/?pharmacy=x", token=self.admin).status, 400)
        # paging
        r = self.req("GET", "/api/webhook-events/?page_size=2", key=self.key)
        self.assertEqual(len(r.json()), 2, r)
        self.assertEqual(r.header("x-total-count"), "3")
        self.assertEqual(self.req("GET", "/api/webhook-events/?page=9", key=self.key).status, 404)
        r = self.req("GET", "/api/webhook-events/?page_size=2&page=2", key=self.key)
        self.assertEqual([e["id"] for e in r.json()], [c["id"]])
        self.assertEqual(r.header("x-total-count"), "3")
        self.assertIn('rel="prev"', r.header("link", ""))
        # always in arrival order: there is no ?ordering= here
        self.assertEqual(ids("", key=self.key), [a["id"], b["id"], c["id"]])
        self.assertEqual(ids("?ordering=-id", key=self.key), [a["id"], b["id"], c["id"]])
        self.assertEqual(ids("?processed=1", key=self.key), [b["id"]])
        self.assertEqual(ids("?processed=FALSE&ordering=-id", key=self.key), [a["id"], c["id"]])
        r = self.req("GET", "/api/webhook-events/?processed=false", key=self.key)
        self.assertEqual(r.header("x-total-count"), "2")
        r = self.req("GET", "/api/webhook-events/?processed=0&pharmacy=%d" % self.ph, token=self.admin)
        self.assertEqual([e["id"] for e in r.json()], [a["id"], c["id"]])
        self.assertEqual(r.header("x-total-count"), "2")
        # a key's ?pharmacy= is ignored
        self.assertEqual(ids("?pharmacy=%d" % self.ph2, key=self.key), [a["id"], b["id"], c["id"]])

    def test_update(self):
        ev = self.send(self.key, "custom.thing", {"x": 1})
        p = "/api/webhook-events/%d/" % ev["id"]
        r = self.req("PATCH", p, {"payload": {"x": 2}, "processed": True, "pharmacy": self.ph2}, key=self.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["payload"], {"x": 2})
        self.assertEqual(r.json()["event_type"], "custom.thing")
        self.assertIs(r.json()["processed"], False, "read-only fields are ignored")
        self.assertEqual(r.json()["pharmacy"], self.ph)
        r = self.req("PUT", p, {"payload": {"x": 3}}, key=self.key)
        self.assertError(r, 400, {"event_type": ["This field is required."], "code": "invalid"})
        r = self.req("PUT", p, {"event_type": "custom.other", "payload": {"x": 3}}, key=self.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json()["event_type"], r.json()["payload"]), ("custom.other", {"x": 3}))
        self.assertEqual(self.sql("SELECT payload->>'x' FROM webhook_events WHERE id = %d" % ev["id"]), "3")
        self.assertEqual(self.sql("SELECT rx_webhook_claim(%d)" % ev["id"]), "t")
        r = self.req("PATCH", p, {"payload": {"x": 4}}, key=self.key)
        self.assertError(r, 400, ALREADY)
        self.assertEqual(self.sql("SELECT payload->>'x' FROM webhook_events WHERE id = %d" % ev["id"]), "3")

    def test_delete(self):
        ev = self.send(self.key, "custom.thing", {"x": 1})
        p = "/api/webhook-events/%d/" % ev["id"]
        r = self.req("DELETE", p, key=self.key)
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.req("GET", p, key=self.key).status, 404)
        self.assertEqual(self.sql("SELECT count(*) FROM webhook_events WHERE id = %d" % ev["id"]), "0")
        self.assertEqual(self.req("DELETE", p, key=self.key).status, 404)

    def test_replay(self):
        ev = self.send(self.key, "replay.unknown." + uid(), {"x": 1})
        self.wait_jobs_finished(ev["id"])
        r = self.req("POST", "/api/webhook-events/%d/process/" % ev["id"], key=self.key)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(set(r.json()), EVENT_FIELDS, r)
        self.assertEqual(r.json()["id"], ev["id"])
        self.assertEqual(len(self.jobs(ev["id"])), 2, "replay queues processing again")
        self.assertEqual(self.wait_jobs_finished(ev["id"], at_least=2),
                         ["webhooks.process:done", "webhooks.process:done"])
        # an event with a processing error can be replayed too
        self.sql("SELECT rx_webhook_fail(%d, 'boom')" % ev["id"])
        self.assertEqual(self.get(self.key, ev["id"])["processing_error"], "boom")
        r = self.req("POST", "/api/webhook-events/%d/process/" % ev["id"], key=self.key)
        self.assertEqual(r.status, 202, r)
        self.assertEqual(len(self.jobs(ev["id"])), 3)
        # processed: refused, nothing queued
        self.sql("SELECT rx_webhook_claim(%d)" % ev["id"])
        r = self.req("POST", "/api/webhook-events/%d/process/" % ev["id"], key=self.key)
        self.assertError(r, 400, ALREADY)
        self.assertEqual(len(self.jobs(ev["id"])), 3)
        self.assertEqual(self.req("POST", "/api/webhook-events/987654321/process/", key=self.key).status, 404)

    def test_claim_and_fail_contract(self):
        ev = self.send(self.key, "contract." + uid(), {})
        i = ev["id"]
        self.sql("SELECT rx_webhook_fail(%d, 'bad sku')" % i)
        got = self.get(self.key, i)
        self.assertEqual((got["processed"], got["processing_error"]), (False, "bad sku"))
        self.assertEqual(self.sql("SELECT rx_webhook_claim(%d)" % i), "t")
        self.assertEqual(self.sql("SELECT rx_webhook_claim(%d)" % i), "f", "only the first claim wins")
        got = self.get(self.key, i)
        self.assertEqual((got["processed"], got["processing_error"]), (True, None))
        self.sql("SELECT rx_webhook_fail(%d, 'late')" % i)
        self.assertIsNone(self.get(self.key, i)["processing_error"], "a processed event keeps no error")
        self.assertEqual(self.sql("SELECT rx_webhook_claim(987654321)"), "f")
        self.assertEqual(self.sql("SELECT processed_at IS NOT NULL FROM webhook_events WHERE id = %d" % i), "t")


class TestAppliedInventory(WebhookCase):
    """inventory.adjust applied by the inventory module through rx_webhook_claim."""
    DB = "wh_inventory"

    def setUp(self):
        self.assertTrue(HAVE_INVENTORY, "these tests need inventory.so in %s" % af.MODULE_DIR)
        self.ph, self.key = self.make_pharmacy()
        self.sku = "SKU-" + uid()
        r = self.req("POST", "/api/inventory/", {"sku": self.sku, "name": "Napa", "quantity": 10,
                                                 "price": "2.50"}, key=self.key)
        self.assertEqual(r.status, 201, r)
        self.item = r.json()["id"]

    def quantity(self):
        r = self.req("GET", "/api/inventory/%d/" % self.item, key=self.key)
        self.assertEqual(r.status, 200, r)
        return r.json()["quantity"]

    def test_adjust_applied_exactly_once(self):
        ev = self.send(self.key, "inventory.adjust", {"sku": self.sku, "delta": 5})
        # duplicate the apply job three times before it has had a chance to run
        self.sql("SELECT rx_enqueue('webhook.apply.inventory.adjust', jsonb_build_object("
                 "'event_id', id, 'pharmacy_id', pharmacy_id, 'payload', payload))"
                 " FROM webhook_events, generate_series(1, 3) WHERE id = %d" % ev["id"])
        self.wait_event(self.key, ev["id"], lambda e: e["processed"], "processed")
        self.wait_jobs_finished(ev["id"], at_least=5)
        self.assertEqual(self.quantity(), 15)
        # a retried processing job and another apply job after the fact change nothing
        self.sql("SELECT rx_enqueue('webhooks.process', jsonb_build_object('event_id', %d))" % ev["id"])
        self.sql("SELECT rx_enqueue('webhook.apply.inventory.adjust', jsonb_build_object("
                 "'event_id', id, 'pharmacy_id', pharmacy_id, 'payload', payload))"
                 " FROM webhook_events WHERE id = %d" % ev["id"])
        self.wait_jobs_finished(ev["id"], at_least=7)
        self.assertEqual(self.quantity(), 15)
        got = self.get(self.key, ev["id"])
        self.assertEqual((got["processed"], got["processing_error"]), (True, None))
        self.assertError(self.req("POST", "/api/webhook-events/%d/process/" % ev["id"], key=self.key),
                         400, ALREADY)

    def test_failing_validation_keeps_it_unprocessed(self):
        ev = self.send(self.key, "inventory.adjust", {"sku": "NO-SUCH-" + uid(), "delta": 1})
        got = self.wait_event(self.key, ev["id"], lambda e: e["processing_error"], "failed")
        self.assertIs(got["processed"], False)
        self.assertIsInstance(got["processing_error"], str)
        ev2 = self.send(self.key, "inventory.adjust", {"sku": self.sku, "delta": "lots"})
        got = self.wait_event(self.key, ev2["id"], lambda e: e["processing_error"], "failed")
        self.assertIs(got["processed"], False)
        self.assertEqual(self.quantity(), 10)
        r = self.req("GET", "/api/webhook-events/?processed=false&event_type=inventory.adjust", key=self.key)
        self.assertEqual({e["id"] for e in r.json()}, {ev["id"], ev2["id"]})


class TestAppliedOrders(WebhookCase):
    """order.created / order.status_changed applied by the orders module."""
    DB = "wh_orders"

    def setUp(self):
        self.assertTrue(HAVE_ORDERS, "these tests need orders.so in %s" % af.MODULE_DIR)
        self.ph, self.key = self.make_pharmacy()

    def orders(self, ref):
        r = self.req("GET", "/api/orders/?order_reference=" + ref, key=self.key)
        self.assertEqual(r.status, 200, r)
        return [o for o in r.json() if o["order_reference"] == ref]

    def test_order_created_once_then_status_changed(self):
        ref = "ORD-" + uid()
        ev = self.send(self.key, "order.created",
                       {"order_reference": ref, "status": "pending",
                        "items": [{"sku": "A", "name": "Napa", "quantity": 2, "price": "5.00"}],
                        "total_amount": "10.00"})
        self.sql("SELECT rx_enqueue('webhook.apply.order.created', jsonb_build_object("
                 "'event_id', id, 'pharmacy_id', pharmacy_id, 'payload', payload))"
                 " FROM webhook_events, generate_series(1, 2) WHERE id = %d" % ev["id"])
        self.wait_event(self.key, ev["id"], lambda e: e["processed"], "processed")
        self.wait_jobs_finished(ev["id"], at_least=4)
        got = self.orders(ref)
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["status"], "pending")
        self.assertEqual(got[0]["pharmacy"], self.ph)

        ev2 = self.send(self.key, "order.status_changed", {"order_reference": ref, "status": "confirmed"})
        self.wait_event(self.key, ev2["id"], lambda e: e["processed"], "processed")
        self.assertEqual(self.orders(ref)[0]["status"], "confirmed")
        # a transition the status machine refuses (confirmed -> completed) is not applied:
        # the event stays unprocessed with a reason, the order keeps its status
        ev3 = self.send(self.key, "order.status_changed", {"order_reference": ref, "status": "completed"})
        got3 = self.wait_event(self.key, ev3["id"], lambda e: e["processing_error"], "failed")
        self.assertIs(got3["processed"], False)
        self.assertIsInstance(got3["processing_error"], str)
        self.assertEqual(self.orders(ref)[0]["status"], "confirmed")


if __name__ == "__main__":
    unittest.main(verbosity=2)
