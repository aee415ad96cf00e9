"""test_auth — the auth module end to end, against the contract (../shared/API.md, "Auth").

Real rxd processes (`serve --migrate`, modules `notify auth`) on a private
PostgreSQL (pgtemp) and Redis (redistemp). OTP codes are read from the notify
log provider's outbox file, as a user reads an SMS. Every test makes its own
users. The flow classes run with ratelimit.enabled = false; RateLimits turns
limits on and gives each test its own client address (X-Forwarded-For from a
trusted 127.0.0.1) so per-IP buckets do not mix.
"""
import json
import os
import re
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgtemp import PgTemp  # noqa: E402
from redistemp import RedisTemp  # noqa: E402
from rxdtest import run_cli  # noqa: E402
import authflows as af  # noqa: E402
from authflows import (AuthServer, USER_FIELDS, UUID_RE, ISO_Z_RE, e164, new_email,  # noqa: E402
                       new_password, new_phone, jwt_make, jwt_parts, multipart, tiny_png, uid)

PG = None
REDIS = None

OTP_SENT_PHONE = {"message": "OTP sent successfully.", "detail": "Check your phone for the code."}
OTP_SENT_EMAIL = {"message": "OTP sent successfully.", "detail": "Check your email for the code."}
RESET_MESSAGE = {"message": "If an account exists with this email, you will receive reset instructions."}
RESET_DONE = {"message": "Password has been reset."}
LOGGED_OUT = {"message": "Logged out successfully."}
VERIFIED_MESSAGE = "OTP verified. Complete your registration."
BEARER_CHALLENGE = 'Bearer realm="api"'


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


def ident_body(ident):
    return {"email": ident} if "@" in ident else {"phone": ident}


def other_code(code):
    return "%06d" % ((int(code) + 1) % 1000000)


class AuthCase(unittest.TestCase):
    RATELIMIT = False
    REDIS_DB = 2
    ENV = {}

    @classmethod
    def setUpClass(cls):
        cls.secrets = set()
        cls.server = AuthServer(PG.url(), REDIS.url(db=cls.REDIS_DB), cls.RATELIMIT, cls.ENV)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    # -- HTTP ----------------------------------------------------------------

    def req(self, method, path, body=None, token=None, headers=None, ip=None, server=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if ip is not None:
            h["X-Forwarded-For"] = ip
        return (server or self.server).request(method, path, body=body, headers=h)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, body if body is not None else {}, **kw)

    def remember(self, *values):
        for v in values:
            if v:
                type(self).secrets.add(str(v))

    # -- assertions ----------------------------------------------------------

    def assertError(self, r, status, code, detail=None):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        body = r.json()
        self.assertEqual(body.get("code"), code, body)
        if detail is not None:
            self.assertEqual(body.get("detail"), detail, body)
        if status == 401:
            self.assertEqual(r.header("www-authenticate"), BEARER_CHALLENGE, r)
        if status == 429:
            ra = r.header("retry-after")
            self.assertIsNotNone(ra, r)
            self.assertGreaterEqual(int(ra), 1, r)
        return body

    def assertFieldError(self, r, field):
        self.assertEqual(r.status, 400, r)
        body = r.json()
        self.assertIn(field, body, body)
        self.assertIsInstance(body[field], list, body)
        self.assertTrue(all(isinstance(m, str) and m for m in body[field]), body)
        self.assertEqual(body.get("code"), "invalid", body)
        return body

    def assertUser(self, u, **expected):
        self.assertEqual(set(u), USER_FIELDS, "user fields differ from the contract: %r" % u)
        self.assertIsInstance(u["id"], int)
        self.assertIsInstance(u["username"], str)
        self.assertIn(u["role"], ("SUPER_ADMIN", "PHARMACY_ADMIN", "DOCTOR", "REGISTERED_USER"))
        self.assertIn(u["status"], ("ACTIVE", "INACTIVE", "LOCKED", "PENDING_VERIFICATION"))
        for k in ("role_display", "status_display"):
            self.assertIsInstance(u[k], str)
            self.assertTrue(u[k], u)
        self.assertIsInstance(u["email_verified"], bool)
        self.assertIsInstance(u["phone_verified"], bool)
        self.assertIsInstance(u["is_active"], bool)
        self.assertEqual(u["is_active"], u["status"] == "ACTIVE", u)
        self.assertRegex(u["created_at"], ISO_Z_RE)
        self.assertIsInstance(u["email"], str)
        self.assertIsInstance(u["phone"], str)
        self.assertIsInstance(u["address"], str)
        if u["phone"]:
            self.assertRegex(u["phone"], r"^\+\d{10,15}$")
        if u["profile_picture"] is not None:
            self.assertRegex(u["profile_picture"], r"^https?://[^/]+/media/")
        for k, v in expected.items():
            self.assertEqual(u[k], v, "user.%s: %r" % (k, u))
        return u

    def assertTokens(self, r):
        self.assertEqual(r.status, 200, r)
        body = r.json()
        for k in ("access", "refresh", "user"):
            self.assertIn(k, body, body)
        self.assertEqual(len(body["access"].split(".")), 3, body)
        self.assertEqual(len(body["refresh"].split(".")), 3, body)
        self.assertNotEqual(body["access"], body["refresh"])
        self.remember(body["access"], body["refresh"])
        self.assertUser(body["user"])
        return body

    # -- flows ---------------------------------------------------------------

    def request_code(self, ident, path="/api/auth/request-otp/", body=None, ip=None, server=None):
        """POST a code request and return (response, code read from the outbox)."""
        srv = server or self.server
        before = len(srv.messages_to(ident))
        r = self.post(path, body if body is not None else ident_body(ident), ip=ip, server=server)
        self.assertEqual(r.status, 200, r)
        code, _ = srv.wait_code(ident, before)
        self.remember(code)
        return r, code

    def verify(self, ident, code, ip=None, spelling=None):
        b = ident_body(spelling or ident)
        b["otp"] = code
        return self.post("/api/auth/verify-otp/", b, ip=ip)

    def registration_token(self, ident, ip=None):
        _, code = self.request_code(ident, ip=ip)
        r = self.verify(ident, code, ip=ip)
        self.assertEqual(r.status, 200, r)
        tok = r.json()["registration_token"]
        self.remember(tok)
        return tok

    def register_phone(self, phone=None, password=None, username=None, **extra):
        phone = phone or new_phone()
        password = password or new_password()
        self.remember(password)
        tok = self.registration_token(phone)
        body = {"registration_token": tok, "username": username or "User " + uid(),
                "password": password}
        body.update(extra)
        t = self.assertTokens(self.post("/api/auth/register/complete/", body))
        return {"phone": phone, "e164": e164(phone), "password": password, "access": t["access"],
                "refresh": t["refresh"], "user": t["user"]}

    def reset_token(self, email):
        """A password-reset registration_token for `email`: code requested, then verified."""
        _, code = self.request_code(email, path="/api/auth/password-reset/")
        r = self.verify(email, code)
        self.assertEqual(r.status, 200, r)
        tok = r.json()["registration_token"]
        self.remember(tok)
        return tok

    def register_email(self, email=None, password=None):
        email = email or new_email()
        password = password or new_password()
        self.remember(password)
        t = self.assertTokens(self.post("/api/auth/register/email/",
                                        {"email": email, "password": password}))
        return {"email": email, "password": password, "access": t["access"],
                "refresh": t["refresh"], "user": t["user"]}

    def login(self, ident, password, **kw):
        self.remember(password)
        b = ident_body(ident)
        b["password"] = password
        return self.post("/api/auth/login/", b, **kw)

    def me(self, access):
        return self.req("GET", "/api/auth/me/", token=access)

    # -- database ------------------------------------------------------------

    def sql(self, text):
        return PG.psql(text)

    def audit(self, action, user_id=None):
        """The metadata (text) of every audit row with this action (and user)."""
        where = "action = '%s'" % action
        if user_id is not None:
            where += " AND user_id = %d" % user_id
        out = self.sql("SELECT coalesce(metadata::text, '') FROM %s WHERE %s ORDER BY id"
                       % (af.AUDIT_TABLE, where))
        return out.splitlines() if out else []

    def audit_count(self, action):
        return int(self.sql("SELECT count(*) FROM %s WHERE action = '%s'" % (af.AUDIT_TABLE, action)))

    def audit_text(self):
        return self.sql("SELECT coalesce(string_agg(a::text, E'\\n'), '') FROM %s a" % af.AUDIT_TABLE)

    def logs_without_secrets(self):
        text = self.server.stdout() + "\n" + self.server.stderr()
        leaked = []
        for s in sorted(type(self).secrets):
            if re.fullmatch(r"\d{6}", s):  # a code: not as part of a longer number or a fraction
                if re.search(r"(?<![0-9A-Za-z.])%s(?![0-9A-Za-z])" % s, text):
                    leaked.append(s)
            elif s in text:
                leaked.append(s)
        return leaked


# ==========================================================================
# Registration
# ==========================================================================

class Registration(AuthCase):
    REDIS_DB = 2

    def test_phone_three_step_flow(self):
        phone = new_phone()
        r, code = self.request_code(phone)
        self.assertEqual(r.json(), OTP_SENT_PHONE)
        r = self.verify(phone, code)
        self.assertEqual(r.status, 200, r)
        v = r.json()
        self.assertEqual(v["message"], VERIFIED_MESSAGE)
        self.assertRegex(v["registration_token"], UUID_RE)
        self.remember(v["registration_token"])
        self.assertEqual(v["verified_identifier_type"], "phone")
        self.assertEqual(v["verified_identifier_value"], e164(phone))
        self.assertEqual(v["phone"], e164(phone))
        self.assertEqual(v["expires_in"], 600)
        password, username = new_password(), "Rahim Uddin " + uid()
        self.remember(password)
        t = self.assertTokens(self.post("/api/auth/register/complete/", {
            "registration_token": v["registration_token"], "username": username,
            "password": password, "address": "House 1, Road 2, Dhaka", "full_name": "Ignored Name"}))
        u = self.assertUser(t["user"], username=username, email="", phone=e164(phone),
                            profile_picture=None, address="House 1, Road 2, Dhaka",
                            role="REGISTERED_USER", status="ACTIVE", email_verified=False,
                            phone_verified=True, date_of_birth=None, is_active=True, pharmacy=None)
        self.assertIn(u["gender"], (None, ""))
        for k in t["user"]:
            self.assertNotRegex(k, "password|hash|failed|locked|otp|secret", t["user"])
        r = self.me(t["access"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), u)
        self.assertEqual(self.sql("SELECT count(*) FROM %s WHERE phone = '%s'"
                                  % (af.USERS_TABLE, e164(phone))), "1")

    def test_register_complete_optional_email_is_stored_unverified(self):
        email = new_email()
        reg = self.register_phone(email=email)
        self.assertUser(reg["user"], email=email, email_verified=False, phone_verified=True)

    def test_register_complete_verified_second_identifier(self):
        email = new_email()
        _, code = self.request_code(email)
        r = self.verify(email, code)
        self.assertEqual(r.status, 200, r)
        self.remember(r.json()["registration_token"])
        reg = self.register_phone(email=email)
        self.assertUser(reg["user"], email=email, email_verified=True, phone_verified=True)

    def test_register_complete_multipart_with_picture(self):
        phone = new_phone()
        tok = self.registration_token(phone)
        password = new_password()
        self.remember(password)
        png = tiny_png()
        body, ctype = multipart({"registration_token": tok, "username": "Pic " + uid(),
                                 "password": password, "full_name": "X"},
                                {"profile_picture": ("me.png", "image/png", png)})
        t = self.assertTokens(self.server.request("POST", "/api/auth/register/complete/", body=body,
                                                  headers={"Content-Type": ctype}))
        url = t["user"]["profile_picture"]
        self.assertIsNotNone(url)
        self.assertTrue(url.startswith(self.server.base_url + "/media/"), url)
        got = self.server.get(url[len(self.server.base_url):])
        self.assertEqual(got.status, 200, got)
        self.assertEqual(got.body, png)

    def test_phone_spellings_find_the_same_user(self):
        local = new_phone()
        plain = e164(local)[1:]                         # 8801XXXXXXXXX
        _, code = self.request_code(plain)              # requested as 880...
        r = self.verify(local, code, spelling=e164(local))  # verified as +880...
        self.assertEqual(r.status, 200, r)
        tok = r.json()["registration_token"]
        password = new_password()
        self.remember(tok, password)
        t = self.assertTokens(self.post("/api/auth/register/complete/", {
            "registration_token": tok, "username": "Spell " + uid(), "password": password}))
        self.assertEqual(t["user"]["phone"], e164(local))
        for spelling in (local, plain, e164(local)):
            r = self.login(spelling, password)
            self.assertEqual(r.status, 200, (spelling, r))
            self.assertEqual(r.json()["user"]["id"], t["user"]["id"])
            self.assertEqual(r.json()["user"]["phone"], e164(local))

    def test_legacy_register_phone(self):
        n0 = self.audit_count("REGISTER_PHONE")
        phone = new_phone()
        _, code = self.request_code(phone, path="/api/auth/register/phone/")
        r = self.verify(phone, code)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["verified_identifier_type"], "phone")
        password = new_password()
        self.remember(password, r.json()["registration_token"])
        t = self.assertTokens(self.post("/api/auth/register/complete/", {
            "registration_token": r.json()["registration_token"], "username": "Legacy " + uid(),
            "password": password}))
        self.assertEqual(t["user"]["phone"], e164(phone))
        self.assertTrue(t["user"]["phone_verified"])
        self.assertGreater(self.audit_count("REGISTER_PHONE"), n0)

    def test_email_flow(self):
        email = new_email()
        r, code = self.request_code(email)
        self.assertEqual(r.json(), OTP_SENT_EMAIL)
        r = self.verify(email, code)
        self.assertEqual(r.status, 200, r)
        v = r.json()
        self.assertEqual(v["message"], VERIFIED_MESSAGE)
        self.assertRegex(v["registration_token"], UUID_RE)
        self.assertEqual(v["verified_identifier_type"], "email")
        self.assertEqual(v["verified_identifier_value"], email)
        self.assertEqual(v["email"], email)
        self.assertEqual(v["expires_in"], 600)
        password = new_password()
        self.remember(password, v["registration_token"])
        t = self.assertTokens(self.post("/api/auth/register/complete/", {
            "registration_token": v["registration_token"], "username": "Mail " + uid(),
            "password": password}))
        self.assertUser(t["user"], email=email, phone="", email_verified=True, phone_verified=False,
                        status="ACTIVE", role="REGISTERED_USER")
        self.assertEqual(self.login(email, password).status, 200)

    def test_request_otp_needs_exactly_one_identifier(self):
        self.assertEqual(self.post("/api/auth/request-otp/", {}).status, 400)
        r = self.post("/api/auth/request-otp/", {"phone": new_phone(), "email": new_email()})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.post("/api/auth/request-otp/", {"phone": "12345"}).status, 400)

    def test_register_email(self):
        email = new_email()
        reg = self.register_email(email)
        self.assertUser(reg["user"], email=email, status="ACTIVE", email_verified=False,
                        phone_verified=False, role="REGISTERED_USER", is_active=True, phone="")
        self.assertEqual(self.me(reg["access"]).status, 200)
        r = self.post("/api/auth/register/email/", {"email": email, "password": new_password()})
        self.assertFieldError(r, "email")
        self.assertEqual(len(self.audit("REGISTER_EMAIL", reg["user"]["id"])), 1)

    def test_wrong_otp(self):
        phone = new_phone()
        _, code = self.request_code(phone)
        self.assertError(self.verify(phone, other_code(code)), 400, "invalid_otp")
        r = self.verify(phone, code)  # one wrong try does not kill the code
        self.assertEqual(r.status, 200, r)
        self.remember(r.json()["registration_token"])

    def test_otp_expires(self):
        # The code lives 5 minutes: the Redis keys that name the phone expire within
        # 300 s (none lives longer than the 1-hour send window), and once they are
        # gone the code is refused.
        phone = new_phone()
        _, code = self.request_code(phone)
        keys = [k.decode() for k in REDIS.command("KEYS", "*%s*" % e164(phone), db=self.REDIS_DB)]
        ttls = {k: REDIS.command("TTL", k, db=self.REDIS_DB) for k in keys}
        self.assertTrue(any(0 < t <= 300 for t in ttls.values()), ttls)
        self.assertTrue(all(0 < t <= 3600 for t in ttls.values()), ttls)
        for k, t in ttls.items():
            if t <= 300:
                REDIS.command("PEXPIRE", k, 1, db=self.REDIS_DB)
        time.sleep(0.05)
        self.assertError(self.verify(phone, code), 400, "invalid_otp")

    def test_string_length_limits(self):
        r = self.post("/api/auth/register/email/", {"email": "a" * 250 + "@example.com",
                                                   "password": new_password()})
        self.assertFieldError(r, "email")
        tok = self.registration_token(new_phone())
        r = self.post("/api/auth/register/complete/", {"registration_token": tok, "username": "L " + uid(),
                                                      "password": new_password(), "address": "a" * 501})
        self.assertFieldError(r, "address")

    def test_registration_token_single_use_and_weak_password_keeps_it(self):
        phone = new_phone()
        tok = self.registration_token(phone)
        r = self.post("/api/auth/register/complete/", {
            "registration_token": tok, "username": "Weak " + uid(), "password": "weakpass"})
        self.assertFieldError(r, "password")
        good = new_password()
        self.remember(good)
        self.assertTokens(self.post("/api/auth/register/complete/", {
            "registration_token": tok, "username": "Strong " + uid(), "password": good}))
        r = self.post("/api/auth/register/complete/", {
            "registration_token": tok, "username": "Again " + uid(), "password": good})
        self.assertError(r, 400, "invalid_registration_token")

    def test_registration_token_garbage_unknown_and_expired(self):
        for bad in ("garbage", str(uuid.uuid4()), ""):
            r = self.post("/api/auth/register/complete/", {
                "registration_token": bad, "username": "G " + uid(), "password": new_password()})
            self.assertError(r, 400, "invalid_registration_token")
        # Expiry: the token lives 10 minutes in Redis; the key's TTL says so, and
        # once the key has expired (PEXPIRE 1) the token is refused.
        tok = self.registration_token(new_phone())
        keys = [k.decode() for k in REDIS.command("KEYS", "*%s*" % tok, db=self.REDIS_DB)]
        self.assertTrue(keys, "registration token not found in any Redis key")
        for k in keys:
            ttl = REDIS.command("TTL", k, db=self.REDIS_DB)
            self.assertTrue(0 < ttl <= 600, (k, ttl))
            REDIS.command("PEXPIRE", k, 1, db=self.REDIS_DB)
        time.sleep(0.05)
        r = self.post("/api/auth/register/complete/", {
            "registration_token": tok, "username": "Late " + uid(), "password": new_password()})
        self.assertError(r, 400, "invalid_registration_token")

    def test_password_rules(self):
        for bad in ("Aa1!aaa",          # 7 characters
                    "aa1!aaaaaa",       # no uppercase
                    "AA1!AAAAAA",       # no lowercase
                    "Aaa!aaaaaa",       # no digit
                    "Aa1aaaaaaa",       # no special character
                    "Aa1-aaaaaa"):      # '-' is not one of @$!%*?&#
            r = self.post("/api/auth/register/email/", {"email": new_email(), "password": bad})
            self.assertFieldError(r, "password")
        for ok in ("Aa1@aaaa", "Aa1$aaaa", "Aa1%aaaa", "Aa1*aaaa", "Aa1?aaaa", "Aa1&aaaa", "Aa1#aaaa"):
            r = self.post("/api/auth/register/email/", {"email": new_email(), "password": ok})
            self.assertEqual(r.status, 200, (ok, r))

    def test_username_rules(self):
        first = self.register_phone(username="Grace Hopper " + uid())
        tok = self.registration_token(new_phone())
        password = new_password()
        self.remember(password)

        def complete(name):
            return self.post("/api/auth/register/complete/", {
                "registration_token": tok, "username": name, "password": password})
        self.assertFieldError(complete("   "), "username")
        self.assertFieldError(complete(""), "username")
        self.assertFieldError(complete("x" * 151), "username")
        self.assertFieldError(complete(first["user"]["username"].upper()), "username")
        name = "Рахим উদ্দিন " + uid()
        t = self.assertTokens(complete("   " + name + "  "))
        self.assertEqual(t["user"]["username"], name)
        long_name = "y" * 149 + "z"
        r = self.req("PATCH", "/api/auth/me/", {"username": "  " + long_name + " "}, token=t["access"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["username"], long_name)

    def test_request_otp_for_existing_account_answers_the_same(self):
        reg = self.register_phone()
        r, code = self.request_code(reg["phone"])
        self.assertEqual(r.json(), OTP_SENT_PHONE)
        r = self.verify(reg["phone"], code)
        self.assertEqual(r.status, 200, r)
        tok = r.json()["registration_token"]
        self.remember(tok)
        r = self.post("/api/auth/register/complete/", {
            "registration_token": tok, "username": "Dup " + uid(), "password": new_password()})
        self.assertFieldError(r, "phone")
        # ... but it is good for a password reset
        new = new_password()
        self.remember(new)
        r = self.post("/api/auth/password-reset/confirm/", {"registration_token": tok, "new_password": new})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), RESET_DONE)
        self.assertEqual(self.login(reg["phone"], new).status, 200)

    def test_new_identifier_token_is_not_a_reset_token(self):
        tok = self.registration_token(new_phone())
        r = self.post("/api/auth/password-reset/confirm/",
                      {"registration_token": tok, "new_password": new_password()})
        self.assertEqual(r.status, 400, r)

    def test_ratelimit_disabled(self):
        phone = new_phone()
        for i in range(5):
            r = self.post("/api/auth/request-otp/", {"phone": phone})
            self.assertEqual(r.status, 200, (i, r))
        for i in range(7):
            r = self.login(new_email(), "Aa1!whatever")
            self.assertError(r, 401, "invalid_credentials")

    def test_zz_no_secrets_in_logs(self):
        self.register_phone()
        time.sleep(0.3)
        self.assertTrue(type(self).secrets)
        self.assertEqual(self.logs_without_secrets(), [])


# ==========================================================================
# Login, passwords, lockout
# ==========================================================================

class Login(AuthCase):
    REDIS_DB = 3

    def test_login_by_phone_and_by_email(self):
        p = self.register_phone()
        t = self.assertTokens(self.login(p["phone"], p["password"]))
        self.assertEqual(t["user"]["id"], p["user"]["id"])
        self.assertEqual(self.me(t["access"]).json()["id"], p["user"]["id"])
        e = self.register_email()
        t = self.assertTokens(self.login(e["email"], e["password"]))
        self.assertEqual(t["user"]["id"], e["user"]["id"])
        self.assertGreaterEqual(len(self.audit("LOGIN", p["user"]["id"])), 1)

    def test_login_needs_exactly_one_identifier(self):
        e = self.register_email()
        r = self.post("/api/auth/login/", {"email": e["email"], "phone": new_phone(),
                                           "password": e["password"]})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.post("/api/auth/login/", {"password": e["password"]}).status, 400)

    def test_wrong_password_and_unknown_user_look_the_same(self):
        e = self.register_email()
        a = self.login(e["email"], "Aa1!wrong" + uid())
        b = self.login(new_email(), e["password"])
        body = self.assertError(a, 401, "invalid_credentials")
        self.assertError(b, 401, "invalid_credentials")
        self.assertEqual(a.body, b.body)
        self.assertIsInstance(body.get("detail"), str)

    def test_lockout_after_five_failures_and_its_expiry(self):
        e = self.register_email()
        uid_ = e["user"]["id"]
        for i in range(5):
            self.assertError(self.login(e["email"], "Aa1!bad" + uid()), 401, "invalid_credentials")
        self.assertError(self.login(e["email"], e["password"]), 423, "account_locked")
        row = self.sql("SELECT status, locked_until > now() + interval '29 minutes',"
                       " locked_until <= now() + interval '30 minutes 5 seconds'"
                       " FROM %s WHERE id = %d" % (af.USERS_TABLE, uid_))
        self.assertEqual(row, "ACTIVE|t|t")
        self.assertGreaterEqual(len(self.audit("ACCOUNT_LOCKED", uid_)), 1)
        self.sql("UPDATE %s SET locked_until = now() - interval '1 minute' WHERE id = %d"
                 % (af.USERS_TABLE, uid_))
        self.assertTokens(self.login(e["email"], e["password"]))

    def test_inactive_and_locked_status(self):
        for status in ("INACTIVE", "LOCKED"):
            e = self.register_email()
            self.sql("UPDATE %s SET status = '%s' WHERE id = %d" % (af.USERS_TABLE, status, e["user"]["id"]))
            self.assertError(self.login(e["email"], "Aa1!bad" + uid()), 401, "invalid_credentials")
            self.assertError(self.login(e["email"], e["password"]), 403, "account_inactive",
                             "This account is inactive.")

    def test_soft_deleted_user(self):
        e = self.register_email()
        self.sql("UPDATE %s SET deleted_at = now() WHERE id = %d" % (af.USERS_TABLE, e["user"]["id"]))
        self.assertError(self.login(e["email"], "Aa1!bad" + uid()), 401, "invalid_credentials")
        self.assertError(self.login(e["email"], e["password"]), 403, "account_inactive",
                         "This account is inactive.")
        self.assertError(self.me(e["access"]), 401, "token_not_valid")

    def test_status_and_logout_reach_every_instance(self):
        second = AuthServer(PG.url(), REDIS.url(db=self.REDIS_DB), False)
        try:
            second.start()
            a, b = self.register_email(), self.register_email()
            self.assertEqual(self.req("GET", "/api/auth/me/", token=a["access"], server=second).status, 200)
            self.assertEqual(self.req("GET", "/api/auth/me/", token=b["access"], server=second).status, 200)
            self.sql("UPDATE %s SET status = 'INACTIVE' WHERE id = %d" % (af.USERS_TABLE, a["user"]["id"]))
            self.assertEqual(self.post("/api/auth/logout/", {"refresh": b["refresh"]}, token=b["access"]).status,
                             200)
            time.sleep(1.0)
            self.assertError(self.req("GET", "/api/auth/me/", token=a["access"], server=second), 401,
                             "token_not_valid")
            self.assertError(self.req("GET", "/api/auth/me/", token=b["access"], server=second), 401,
                             "token_not_valid")
            self.assertError(self.post("/api/auth/token/refresh/", {"refresh": b["refresh"]}, server=second),
                             401, "token_not_valid")
        finally:
            try:
                second.stop()
            finally:
                second.cleanup()

    def test_not_json_and_malformed_json(self):
        e = self.register_email()
        body = json.dumps({"email": e["email"], "password": e["password"]})
        r = self.server.request("POST", "/api/auth/login/", body=body, headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 415, r)
        r = self.server.request("POST", "/api/auth/login/", body=b'{"email": ',
                                headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.post("/api/auth/login/", {"email": e["email"], "password": e["password"],
                                                        "unknown_field": 1}).status, 200)

    def test_inactive_user_tokens_stop_within_a_second(self):
        e = self.register_email()
        self.assertEqual(self.me(e["access"]).status, 200)
        self.sql("UPDATE %s SET status = 'INACTIVE' WHERE id = %d" % (af.USERS_TABLE, e["user"]["id"]))
        deadline = time.monotonic() + 1.5
        while True:
            r = self.me(e["access"])
            if r.status == 401 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertError(r, 401, "token_not_valid")

    def test_password_reset_answer_is_the_same_for_everyone(self):
        e = self.register_email()
        unknown = new_email()
        r = self.post("/api/auth/password-reset/", {"email": unknown})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), RESET_MESSAGE)
        r, code = self.request_code(e["email"], path="/api/auth/password-reset/")
        self.assertEqual(r.json(), RESET_MESSAGE)
        time.sleep(1.5)
        self.assertEqual(self.server.messages_to(unknown), [])
        self.assertEqual(self.post("/api/auth/password-reset/", {"email": "not-an-email"}).status, 400)
        p = self.register_phone()
        r, code = self.request_code(p["phone"], path="/api/auth/password-reset/")
        self.assertIsInstance(r.json().get("message"), str, r)
        r = self.verify(p["phone"], code)
        self.assertEqual(r.status, 200, r)
        self.remember(r.json()["registration_token"])

    def test_password_reset_flow(self):
        e = self.register_email()
        other = self.assertTokens(self.login(e["email"], e["password"]))
        tok = self.reset_token(e["email"])
        self.assertFieldError(self.post("/api/auth/password-reset/confirm/",
                                        {"registration_token": tok, "new_password": "short"}),
                              "new_password")
        new = new_password()
        self.remember(new)
        r = self.post("/api/auth/password-reset/confirm/", {"registration_token": tok, "new_password": new})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), RESET_DONE)
        for refresh in (e["refresh"], other["refresh"]):
            self.assertError(self.post("/api/auth/token/refresh/", {"refresh": refresh}), 401,
                             "token_not_valid")
        self.assertError(self.login(e["email"], e["password"]), 401, "invalid_credentials")
        self.assertTokens(self.login(e["email"], new))
        r = self.post("/api/auth/password-reset/confirm/", {"registration_token": tok, "new_password": new})
        self.assertError(r, 400, "invalid_registration_token")
        uid_ = e["user"]["id"]
        self.assertGreaterEqual(len(self.audit("PASSWORD_RESET_COMPLETE", uid_)), 1)

    def test_password_reset_confirm_aliases(self):
        e = self.register_email()
        tok = self.reset_token(e["email"])
        new = new_password()
        self.remember(new)
        r = self.post("/api/auth/password-reset/confirm/", {"token": tok, "password": new})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), RESET_DONE)
        self.assertEqual(self.login(e["email"], new).status, 200)

    def test_password_change(self):
        e = self.register_email()
        s2 = self.assertTokens(self.login(e["email"], e["password"]))
        r = self.post("/api/auth/password-change/", {"old_password": "Aa1!nope" + uid(),
                                                      "new_password": new_password()}, token=e["access"])
        self.assertEqual(r.status, 400, r)
        r = self.post("/api/auth/password-change/", {"old_password": e["password"],
                                                      "new_password": "weak"}, token=e["access"])
        self.assertFieldError(r, "new_password")
        new = new_password()
        self.remember(new)
        r = self.post("/api/auth/password-change/", {"old_password": e["password"], "new_password": new},
                      token=e["access"])
        self.assertEqual(r.status, 200, r)
        self.assertError(self.post("/api/auth/token/refresh/", {"refresh": s2["refresh"]}), 401,
                         "token_not_valid")
        self.assertTokens(self.post("/api/auth/token/refresh/", {"refresh": e["refresh"]}))
        self.assertError(self.login(e["email"], e["password"]), 401, "invalid_credentials")
        self.assertTokens(self.login(e["email"], new))
        self.assertError(self.post("/api/auth/password-change/", {"old_password": new,
                                                                   "new_password": new_password()}),
                         401, "not_authenticated")

    def test_createsuperuser(self):
        email, password = new_email(), new_password()
        self.remember(password)
        env = af.auth_env(PG.url(), REDIS.url(db=self.REDIS_DB))
        r = run_cli("createsuperuser", "--email", email, "--password-stdin", env=env,
                    modules=af.MODULES, stdin=password + "\n", timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn(password, r.stdout + r.stderr)
        t = self.assertTokens(self.login(email, password))
        self.assertEqual(t["user"]["role"], "SUPER_ADMIN")
        self.assertEqual(t["user"]["email"], email)
        weak_email = new_email()
        r = run_cli("createsuperuser", "--email", weak_email, "--password-stdin", env=env,
                    modules=af.MODULES, stdin="weak\n", timeout=60)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue((r.stdout + r.stderr).strip())
        self.assertEqual(self.sql("SELECT count(*) FROM %s WHERE email = '%s'" % (af.USERS_TABLE, weak_email)), "0")

    def test_zz_no_secrets_in_logs(self):
        e = self.register_email()
        self.login(e["email"], "Aa1!bad" + uid())
        time.sleep(0.3)
        self.assertEqual(self.logs_without_secrets(), [])


# ==========================================================================
# Tokens, logout, me
# ==========================================================================

class Tokens(AuthCase):
    REDIS_DB = 4

    def test_refresh_rotation_and_reuse(self):
        e = self.register_email()
        r1 = e["refresh"]
        t2 = self.assertTokens(self.post("/api/auth/token/refresh/", {"refresh": r1}))
        self.assertNotEqual(t2["refresh"], r1)
        self.assertNotEqual(t2["access"], e["access"])
        self.assertEqual(t2["user"]["id"], e["user"]["id"])
        self.assertEqual(self.me(t2["access"]).status, 200)
        t3 = self.assertTokens(self.post("/api/auth/token/refresh/", {"refresh": t2["refresh"]}))
        # r1 again: reuse -> 401 and the whole family dies, the newest refresh too
        self.assertError(self.post("/api/auth/token/refresh/", {"refresh": r1}), 401, "token_not_valid")
        self.assertError(self.post("/api/auth/token/refresh/", {"refresh": t3["refresh"]}), 401,
                         "token_not_valid")
        self.assertGreaterEqual(len(self.audit("TOKEN_REUSE", e["user"]["id"])), 1)
        self.assertError(self.post("/api/auth/token/refresh/", {"refresh": "garbage"}), 401,
                         "token_not_valid")

    def test_logout_revokes_access_and_refresh(self):
        e = self.register_email()
        r = self.post("/api/auth/logout/", {"refresh": e["refresh"]}, token=e["access"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), LOGGED_OUT)
        self.assertError(self.me(e["access"]), 401, "token_not_valid")
        self.assertError(self.post("/api/auth/token/refresh/", {"refresh": e["refresh"]}), 401,
                         "token_not_valid")
        self.assertGreaterEqual(len(self.audit("LOGOUT", e["user"]["id"])), 1)

    def test_bare_logout_post(self):
        e = self.register_email()
        for extra in ({}, {"Content-Type": "text/plain"}):
            t = self.assertTokens(self.login(e["email"], e["password"]))
            with self.server.conn() as c:
                r = c.request("POST", "/api/auth/logout/",
                              headers=dict({"Authorization": "Bearer " + t["access"]}, **extra))
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json(), LOGGED_OUT)
            self.assertError(self.me(t["access"]), 401, "token_not_valid")

    def test_logout_needs_a_token(self):
        self.assertError(self.post("/api/auth/logout/", {}), 401, "not_authenticated")

    def test_me(self):
        self.assertError(self.req("GET", "/api/auth/me/"), 401, "not_authenticated")
        self.assertError(self.me("garbage"), 401, "token_not_valid")
        e = self.register_email()
        r = self.me(e["access"])
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), id=e["user"]["id"], email=e["email"])

    def test_patch_me(self):
        e = self.register_email()
        name = "New Name " + uid()
        r = self.req("PATCH", "/api/auth/me/", {
            "username": name, "address": "Road 7, Chattogram", "gender": "FEMALE",
            "date_of_birth": "1990-05-17", "role": "SUPER_ADMIN", "status": "INACTIVE", "pharmacy": 5,
            "email_verified": True}, token=e["access"])
        self.assertEqual(r.status, 200, r)
        u = self.assertUser(r.json(), username=name, address="Road 7, Chattogram", gender="FEMALE",
                            date_of_birth="1990-05-17", role="REGISTERED_USER", status="ACTIVE",
                            pharmacy=None, email_verified=False, is_active=True)
        self.assertIn("female", u["gender_display"].lower())
        self.assertEqual(self.me(e["access"]).json(), u)
        for g in ("MALE", "OTHER"):
            r = self.req("PATCH", "/api/auth/me/", {"gender": g}, token=e["access"])
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["gender"], g)
        r = self.req("PATCH", "/api/auth/me/", {"gender": "", "date_of_birth": ""}, token=e["access"])
        self.assertEqual(r.status, 200, r)
        self.assertIn(r.json()["gender"], (None, ""))
        self.assertIsNone(r.json()["date_of_birth"])
        self.assertEqual(r.json()["username"], name)
        self.assertFieldError(self.req("PATCH", "/api/auth/me/", {"gender": "X"}, token=e["access"]),
                              "gender")
        self.assertFieldError(self.req("PATCH", "/api/auth/me/", {"date_of_birth": "yesterday"},
                                       token=e["access"]), "date_of_birth")
        self.assertFieldError(self.req("PATCH", "/api/auth/me/", {"address": "a" * 501},
                                       token=e["access"]), "address")
        r = self.req("PUT", "/api/auth/me/", {"address": "Put Street"}, token=e["access"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["address"], "Put Street")
        self.assertEqual(r.json()["username"], name)
        self.assertEqual(self.sql("SELECT role || status FROM %s WHERE id = %d"
                                  % (af.USERS_TABLE, e["user"]["id"])), "REGISTERED_USERACTIVE")

    def test_patch_me_email_needs_a_code(self):
        p = self.register_phone()
        email = new_email()
        before = len(self.server.messages_to(email))
        r = self.req("PATCH", "/api/auth/me/", {"email": email}, token=p["access"])
        self.assertEqual(r.status, 200, r)
        b = r.json()
        self.assertIs(b.get("pending_verification"), True, b)
        for k in ("message", "detail", "identifier_masked"):
            self.assertIsInstance(b.get(k), str, b)
        self.assertNotEqual(b["identifier_masked"], email)
        self.assertNotIn(email.split("@")[0], b["identifier_masked"])
        self.assertEqual(b["user"]["email"], "")
        code, _ = self.server.wait_code(email, before)
        self.remember(code)
        self.assertEqual(self.me(p["access"]).json()["email"], "")
        r = self.req("PATCH", "/api/auth/me/", {"email": email, "otp": other_code(code)}, token=p["access"])
        self.assertError(r, 400, "invalid_otp")
        r = self.req("PATCH", "/api/auth/me/", {"email": email, "otp": code}, token=p["access"])
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), email=email, email_verified=True, phone=p["e164"])

    def test_patch_me_phone_needs_a_code(self):
        e = self.register_email()
        phone = new_phone()
        before = len(self.server.messages_to(phone))
        r = self.req("PATCH", "/api/auth/me/", {"phone": phone}, token=e["access"])
        self.assertEqual(r.status, 200, r)
        b = r.json()
        self.assertIs(b.get("pending_verification"), True, b)
        self.assertNotIn(phone[-8:], b["identifier_masked"])
        self.assertEqual(b["user"]["phone"], "")
        code, _ = self.server.wait_code(phone, before)
        self.remember(code)
        r = self.req("PATCH", "/api/auth/me/", {"phone": phone, "otp": code}, token=e["access"])
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), phone=e164(phone), phone_verified=True, email=e["email"])
        self.assertEqual(self.login(phone, e["password"]).status, 200)

    # -- PATCH me with e-mail/phone next to other fields (the old profile form) --

    def user_row(self, user_id):
        """username|email|phone|address|gender|date_of_birth|email_verified|phone_verified"""
        return self.sql("SELECT username, email, phone, address, coalesce(gender, ''),"
                        " coalesce(date_of_birth::text, ''), email_verified, phone_verified"
                        " FROM %s WHERE id = %d" % (af.USERS_TABLE, user_id)).split("|")

    def test_patch_me_form_with_current_identifiers_applies_the_rest(self):
        """The old frontend's profile form sends every field, the user's unchanged e-mail and
        phone included (any spelling, any case): no code, no pending answer, the rest applied."""
        email = "Form.%s@Example.com" % uid()
        p = self.register_phone(email=email)
        uid_ = p["user"]["id"]
        self.assertEqual(p["user"]["email"].lower(), email.lower())
        before_e = len(self.server.messages_to(email))
        before_p = len(self.server.messages_to(p["phone"]))
        name = "Form Name " + uid()
        for ident in ({"email": email.upper()}, {"phone": p["e164"][1:]},
                      {"email": email.lower(), "phone": p["phone"]}):
            body = {"username": name, "address": "Road 9, Sylhet", "gender": "MALE",
                    "date_of_birth": "1985-02-03"}
            body.update(ident)
            r = self.req("PATCH", "/api/auth/me/", body, token=p["access"])
            self.assertEqual(r.status, 200, r)
            self.assertNotIn("pending_verification", r.json(), r.json())
            self.assertUser(r.json(), username=name, address="Road 9, Sylhet", gender="MALE",
                            date_of_birth="1985-02-03", phone=p["e164"], phone_verified=True)
            self.assertEqual(r.json()["email"].lower(), email.lower())
            self.assertEqual(self.me(p["access"]).json(), r.json())
            name = "Form Name " + uid()
        r = self.req("PUT", "/api/auth/me/", {"username": name, "email": email, "phone": p["phone"],
                                             "address": "", "gender": "", "date_of_birth": ""},
                     token=p["access"])
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), username=name, address="", date_of_birth=None)
        row = self.user_row(uid_)
        self.assertEqual(row[0], name)
        self.assertEqual(row[2], p["e164"])
        # alone: the verified phone is no change either; the unverified e-mail still asks for a
        # code to prove it, as it always did
        r = self.req("PATCH", "/api/auth/me/", {"phone": p["e164"]}, token=p["access"])
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), username=name, phone=p["e164"])
        time.sleep(1.5)  # the notify job would have written a code by now
        self.assertEqual(len(self.server.messages_to(email)), before_e)
        self.assertEqual(len(self.server.messages_to(p["phone"])), before_p)
        r = self.req("PATCH", "/api/auth/me/", {"email": email}, token=p["access"])
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json().get("pending_verification"), True, r.json())
        code, _ = self.server.wait_code(email, before_e)
        self.remember(code)
        r = self.req("PATCH", "/api/auth/me/", {"email": email.lower(), "otp": code}, token=p["access"])
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), email_verified=True, username=name)

    def test_patch_me_new_email_with_other_fields_applies_them_and_sends_a_code(self):
        p = self.register_phone()
        email = new_email()
        before = len(self.server.messages_to(email))
        name = "Moved " + uid()
        # the whole form: the unchanged phone, a new e-mail, new other fields
        r = self.req("PATCH", "/api/auth/me/", {"email": email, "phone": p["phone"], "username": name,
                                               "address": "New Road 1", "gender": "OTHER"},
                     token=p["access"])
        self.assertEqual(r.status, 200, r)
        b = r.json()
        self.assertIs(b.get("pending_verification"), True, b)
        self.assertNotIn(email.split("@")[0], b["identifier_masked"])
        self.assertUser(b["user"], username=name, address="New Road 1", gender="OTHER", email="",
                        phone=p["e164"])
        code, _ = self.server.wait_code(email, before)
        self.remember(code)
        row = self.user_row(p["user"]["id"])
        self.assertEqual(row[:4], [name, "", p["e164"], "New Road 1"])
        self.assertEqual(self.me(p["access"]).json(), b["user"])
        # the code, again with other fields: everything applied together
        name2 = "Proven " + uid()
        r = self.req("PATCH", "/api/auth/me/", {"email": email, "otp": code, "username": name2,
                                               "date_of_birth": "2000-01-31"}, token=p["access"])
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("pending_verification", r.json(), r.json())
        self.assertUser(r.json(), email=email, email_verified=True, username=name2,
                        date_of_birth="2000-01-31", address="New Road 1", phone=p["e164"])
        self.assertEqual(self.user_row(p["user"]["id"])[:3], [name2, email, p["e164"]])

    def test_patch_me_new_phone_with_otp_and_other_fields(self):
        e = self.register_email()
        phone = new_phone()
        before = len(self.server.messages_to(phone))
        r = self.req("PATCH", "/api/auth/me/", {"phone": phone}, token=e["access"])
        self.assertIs(r.json().get("pending_verification"), True, r)
        code, _ = self.server.wait_code(phone, before)
        self.remember(code)
        name = "Phoned " + uid()
        # the form again: the unchanged e-mail, the new phone and its code, other fields
        r = self.req("PATCH", "/api/auth/me/", {"email": e["email"], "phone": phone, "otp": code,
                                               "username": name, "address": "Road 2"},
                     token=e["access"])
        self.assertEqual(r.status, 200, r)
        self.assertUser(r.json(), phone=e164(phone), phone_verified=True, username=name,
                        address="Road 2", email=e["email"])
        # a wrong code changes nothing, the other fields neither
        r = self.req("PATCH", "/api/auth/me/", {"phone": new_phone(), "otp": other_code(code),
                                               "username": "Not " + uid()}, token=e["access"])
        self.assertError(r, 400, "invalid_otp")
        self.assertEqual(self.user_row(e["user"]["id"])[:4], [name, e["email"], e164(phone), "Road 2"])

    def test_patch_me_taken_email_with_username_changes_nothing(self):
        other = self.register_email()
        p = self.register_phone()
        old_name = p["user"]["username"]
        row = self.user_row(p["user"]["id"])
        before = len(self.server.messages_to(other["email"]))
        r = self.req("PATCH", "/api/auth/me/", {"email": other["email"].upper(), "username": "Thief " + uid(),
                                               "address": "Elsewhere"}, token=p["access"])
        body = self.assertFieldError(r, "email")
        self.assertEqual(body["email"], ["user with this email already exists."])
        self.assertEqual(self.user_row(p["user"]["id"]), row)
        self.assertEqual(row[0], old_name)
        self.assertEqual(self.me(p["access"]).json()["username"], old_name)
        # a taken phone, and a bad one, likewise
        r = self.req("PATCH", "/api/auth/me/", {"phone": p["phone"], "username": "Thief " + uid()},
                     token=other["access"])
        self.assertFieldError(r, "phone")
        r = self.req("PATCH", "/api/auth/me/", {"phone": "12", "username": "Thief " + uid()},
                     token=other["access"])
        self.assertFieldError(r, "phone")
        self.assertEqual(self.me(other["access"]).json()["username"], other["user"]["username"])
        # two new identifiers at once: one code at a time, as before
        r = self.req("PATCH", "/api/auth/me/", {"phone": new_phone(), "email": new_email(),
                                               "username": "Two " + uid()}, token=p["access"])
        self.assertFieldError(r, "non_field_errors")
        self.assertEqual(self.user_row(p["user"]["id"]), row)
        time.sleep(1.0)
        self.assertEqual(len(self.server.messages_to(other["email"])), before)

    def test_profile_picture_upload(self):
        e = self.register_email()
        png = tiny_png()
        name = "Pictured " + uid()
        body, ctype = multipart({"username": name}, {"profile_picture": ("face.png", "image/png", png)})
        r = self.server.request("PATCH", "/api/auth/me/", body=body, headers={
            "Content-Type": ctype, "Authorization": "Bearer " + e["access"]})
        self.assertEqual(r.status, 200, r)
        url = r.json()["profile_picture"]
        self.assertEqual(r.json()["username"], name)
        self.assertIsInstance(url, str)
        self.assertTrue(url.startswith(self.server.base_url + "/media/"), url)
        self.assertEqual(self.me(e["access"]).json()["profile_picture"], url)
        got = self.server.get(url[len(self.server.base_url):])
        self.assertEqual(got.status, 200, got)
        self.assertEqual(got.body, png)
        self.assertEqual(got.header("content-type", "").split(";")[0].strip(), "image/png")
        body, ctype = multipart({}, {"profile_picture": ("evil.png", "image/png", b"just some text\n")})
        r = self.server.request("PATCH", "/api/auth/me/", body=body, headers={
            "Content-Type": ctype, "Authorization": "Bearer " + e["access"]})
        self.assertFieldError(r, "profile_picture")
        gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00," \
              b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
        body, ctype = multipart({}, {"profile_picture": ("anim.png", "image/png", gif)})
        r = self.server.request("PATCH", "/api/auth/me/", body=body, headers={
            "Content-Type": ctype, "Authorization": "Bearer " + e["access"]})
        self.assertFieldError(r, "profile_picture")
        self.assertEqual(self.me(e["access"]).json()["profile_picture"], url)

    def test_reset_ends_sessions_of_the_same_second_only(self):
        """A login just before a password reset loses its tokens, a login just
        after it keeps them, also when both happen within the same second (the
        tokens' iat is whole seconds; their session generation is not)."""
        same_second = 0
        for _ in range(10):
            e = self.register_email()
            tok = self.reset_token(e["email"])
            new = new_password()
            self.remember(new)
            t0 = time.time()
            old = self.assertTokens(self.login(e["email"], e["password"]))
            r = self.post("/api/auth/password-reset/confirm/", {"registration_token": tok, "new_password": new})
            self.assertEqual(r.status, 200, r)
            fresh = self.assertTokens(self.login(e["email"], new))
            t1 = time.time()
            _, po = jwt_parts(old["access"])
            _, pn = jwt_parts(fresh["access"])
            self.assertIsInstance(pn.get("gen"), int, pn)
            self.assertGreater(pn["gen"], po["gen"], (po, pn))
            if po["iat"] == pn["iat"] and t1 - t0 < 1.0:
                same_second += 1
            self.assertEqual(self.me(fresh["access"]).status, 200)
            self.assertError(self.me(old["access"]), 401, "token_not_valid")
            self.assertError(self.me(e["access"]), 401, "token_not_valid")
            self.assertEqual(self.me(fresh["access"]).status, 200)
            self.assertError(self.post("/api/auth/token/refresh/", {"refresh": old["refresh"]}), 401,
                             "token_not_valid")
            r = self.assertTokens(self.post("/api/auth/token/refresh/", {"refresh": fresh["refresh"]}))
            self.assertEqual(self.me(r["access"]).status, 200)
            if same_second >= 3:
                break
        self.assertGreaterEqual(same_second, 1, "no iteration issued both logins within one second")

    def test_tokens_without_generation_fall_back_to_whole_seconds(self):
        """Tokens signed by an older rxd carry no "gen": they are judged by iat
        against tokens_valid_after, and the second of the revocation itself is
        refused (the old rule let it through)."""
        e = self.register_email()
        header, payload = jwt_parts(e["access"])
        legacy = {k: v for k, v in payload.items() if k != "gen"}
        self.assertEqual(self.me(jwt_make(header, legacy)).status, 200)
        uid_ = e["user"]["id"]
        gen = int(self.sql("SELECT token_generation FROM %s WHERE id = %d" % (af.USERS_TABLE, uid_)).strip())
        # Set by hand, as an operator would: the generation moves with it.
        self.sql("UPDATE %s SET tokens_valid_after = to_timestamp(%d.5) WHERE id = %d"
                 % (af.USERS_TABLE, payload["iat"], uid_))
        self.assertEqual(int(self.sql("SELECT token_generation FROM %s WHERE id = %d"
                                      % (af.USERS_TABLE, uid_)).strip()), gen + 1)
        time.sleep(1.1)  # past auth.status_cache_ms
        self.assertError(self.me(e["access"]), 401, "token_not_valid")
        self.assertError(self.me(jwt_make(header, legacy)), 401, "token_not_valid")
        self.assertError(self.me(jwt_make(header, dict(legacy, iat=payload["iat"] - 1))), 401,
                         "token_not_valid")
        self.assertEqual(self.me(jwt_make(header, dict(legacy, iat=payload["iat"] + 1))).status, 200)
        # legacy refresh tokens follow the same rule
        rh, rp = jwt_parts(e["refresh"])
        rlegacy = {k: v for k, v in rp.items() if k != "gen"}
        self.assertError(self.post("/api/auth/token/refresh/", {"refresh": jwt_make(rh, rlegacy)}), 401,
                         "token_not_valid")
        fresh = self.assertTokens(self.login(e["email"], e["password"]))
        self.assertEqual(jwt_parts(fresh["access"])[1]["gen"], gen + 1)
        self.assertEqual(self.me(fresh["access"]).status, 200)

    def test_forged_and_misused_tokens(self):
        e = self.register_email()
        header, payload = jwt_parts(e["access"])
        self.assertEqual(header.get("alg"), "HS256")
        for claim in ("exp", "iat", "iss", "aud", "jti"):
            self.assertIn(claim, payload, payload)
        now = int(time.time())
        self.assertEqual(payload["exp"] - payload["iat"], 24 * 3600)           # access: 24 h
        _, rp = jwt_parts(e["refresh"])
        self.assertEqual(rp["exp"] - rp["iat"], 7 * 24 * 3600)                  # refresh: 7 days
        self.assertLessEqual(abs(payload["iat"] - now), 30)
        # Re-signing the real claims with the real key works: the forgeries below
        # are refused for what they change, not for how they are built.
        self.assertEqual(self.me(jwt_make(header, payload)).status, 200)

        def bad(tok, what):
            r = self.me(tok)
            self.assertEqual(r.status, 401, (what, r))
            self.assertError(r, 401, "token_not_valid")
        bad(jwt_make(header, payload, alg="HS512"), "HS512")
        bad(jwt_make(header, payload, alg="HS384"), "HS384")
        bad(jwt_make(header, payload, alg="none"), "alg none")
        bad(jwt_make(header, payload, alg="None"), "alg None")
        bad(jwt_make(header, payload, key="another-key-0123456789abcdefghijklmnop"), "wrong key")
        bad(jwt_make(header, dict(payload, exp=now - 60, iat=now - 3600)), "expired")
        bad(jwt_make(header, dict(payload, nbf=now + 3600)), "nbf in the future")
        aud = payload["aud"]
        bad(jwt_make(header, dict(payload, aud=["someone-else"] if isinstance(aud, list) else "someone-else")),
            "wrong audience")
        bad(jwt_make(header, dict(payload, iss="https://evil.example")), "wrong issuer")
        no_exp = dict(payload)
        del no_exp["exp"]
        bad(jwt_make(header, no_exp), "no exp")
        bad(e["access"][:-4] + ("AAAA" if not e["access"].endswith("AAAA") else "BBBB"), "tampered signature")
        # a refresh token is not an access token, and the other way round
        bad(e["refresh"], "refresh as access")
        self.assertError(self.post("/api/auth/token/refresh/", {"refresh": e["access"]}), 401,
                         "token_not_valid")

    def test_bad_token_on_public_route_is_ignored(self):
        e = self.register_email()
        for auth in ("Bearer garbage", "Bearer", "Bearer a b", "Basic dXNlcjpwYXNz",
                     "Bearer " + jwt_make(*jwt_parts(e["access"]), alg="none")):
            r = self.post("/api/auth/login/", {"email": e["email"], "password": e["password"]},
                          headers={"Authorization": auth})
            self.assertEqual(r.status, 200, (auth, r))
            r = self.post("/api/auth/password-reset/", {"email": new_email()}, headers={"Authorization": auth})
            self.assertEqual(r.status, 200, (auth, r))

    def test_audit_trail(self):
        n0 = {a: self.audit_count(a) for a in ("OTP_SENT", "OTP_VERIFIED", "REGISTER_COMPLETE",
                                               "PASSWORD_RESET_REQUEST")}
        p = self.register_phone()
        e = self.register_email()
        self.assertTokens(self.login(e["email"], e["password"]))
        self.post("/api/auth/logout/", {"refresh": e["refresh"]}, token=e["access"])
        tok = self.reset_token(e["email"])
        new = new_password()
        self.remember(new)
        self.assertEqual(self.post("/api/auth/password-reset/confirm/", {
            "registration_token": tok, "new_password": new}).status, 200)
        for i in range(5):
            self.login(p["phone"], "Aa1!bad" + uid())
        self.assertEqual(self.login(p["phone"], p["password"]).status, 423)
        for a in n0:
            self.assertGreater(self.audit_count(a), n0[a], a)
        self.assertEqual(len(self.audit("REGISTER_COMPLETE", p["user"]["id"])), 1)
        self.assertEqual(len(self.audit("REGISTER_EMAIL", e["user"]["id"])), 1)
        self.assertGreaterEqual(len(self.audit("LOGIN", e["user"]["id"])), 1)
        self.assertGreaterEqual(len(self.audit("LOGOUT", e["user"]["id"])), 1)
        self.assertGreaterEqual(len(self.audit("PASSWORD_RESET_COMPLETE", e["user"]["id"])), 1)
        self.assertGreaterEqual(len(self.audit("ACCOUNT_LOCKED", p["user"]["id"])), 1)
        masked = [m for a in ("OTP_SENT", "PASSWORD_RESET_REQUEST") for m in self.audit(a)]
        self.assertTrue(masked)
        self.assertTrue(any("*" in m for m in masked), masked)
        text = self.audit_text()
        for full in (p["e164"], p["phone"], p["e164"][1:], e["email"]):
            self.assertNotIn(full, text)
        for s in type(self).secrets:
            if re.fullmatch(r"\d{6}", s):
                self.assertNotRegex(text, r"(?<![0-9A-Za-z.])%s(?![0-9A-Za-z])" % s)
            else:
                self.assertNotIn(s, text)

    def test_zz_no_secrets_in_logs(self):
        e = self.register_email()
        self.post("/api/auth/logout/", {"refresh": e["refresh"]}, token=e["access"])
        time.sleep(0.3)
        self.assertEqual(self.logs_without_secrets(), [])


class SessionsEndOnEveryWorker(AuthCase):
    """A password reset ends the user's sessions on every worker at once: the workers' cache of
    the user's standing is dropped through Redis, not left to expire (30 s here, so a worker
    that kept its entry would still accept the old token)."""
    REDIS_DB = 6
    ENV = {"RXD_AUTH_STATUS_CACHE_MS": "30000"}

    def test_password_reset_ends_old_tokens_at_once(self):
        e = self.register_email()
        # new connections each time: both workers cache the user
        self.assertEqual([self.me(e["access"]).status for _ in range(16)], [200] * 16)
        tok = self.reset_token(e["email"])
        new = new_password()
        self.remember(new)
        r = self.post("/api/auth/password-reset/confirm/", {"registration_token": tok, "new_password": new})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), RESET_DONE)
        got = [self.me(e["access"]) for _ in range(20)]
        self.assertEqual([g.status for g in got], [401] * 20, "old token accepted after a password reset")
        for g in got:
            self.assertError(g, 401, "token_not_valid")
        fresh = self.assertTokens(self.login(e["email"], new))
        self.assertEqual([self.me(fresh["access"]).status for _ in range(8)], [200] * 8)


# ==========================================================================
# Rate limits (on), each test from its own client address
# ==========================================================================

_ip = [0]


def fresh_ip():
    _ip[0] += 1
    return "203.0.113.%d" % _ip[0]


class RateLimits(AuthCase):
    RATELIMIT = True
    REDIS_DB = 5
    ENV = {"RXD_TRUSTED_PROXIES": "127.0.0.1"}

    def limited(self, r, codes=("throttled", "otp_rate_limit"), max_retry=None):
        self.assertEqual(r.status, 429, r)
        body = self.assertError(r, 429, r.json().get("code"))
        self.assertIn(body["code"], codes, body)
        self.assertIsInstance(body.get("detail"), str, body)
        if max_retry is not None:
            self.assertLessEqual(int(r.header("retry-after")), max_retry, r)

    def test_patch_me_new_email_over_the_send_limit_changes_nothing(self):
        mine, pw = new_email(), new_password()
        self.remember(pw)
        t = self.assertTokens(self.post("/api/auth/register/email/", {"email": mine, "password": pw},
                                        ip=fresh_ip()))
        e = {"email": mine, "access": t["access"], "user": t["user"]}
        email = new_email()
        for _ in range(3):
            self.assertEqual(self.post("/api/auth/request-otp/", {"email": email}, ip=fresh_ip()).status, 200)
        r = self.req("PATCH", "/api/auth/me/", {"email": email, "username": "Limited " + uid(),
                                               "address": "Limited Road"}, token=e["access"])
        self.limited(r, ("otp_rate_limit",), 3600)
        u = self.me(e["access"]).json()
        self.assertEqual((u["username"], u["address"], u["email"]),
                         (e["user"]["username"], e["user"]["address"], e["email"]))

    def test_request_otp_three_per_hour_per_identifier(self):
        local = new_phone()
        for spelling in (local, e164(local)[1:], e164(local)):   # every spelling counts for one phone
            r = self.post("/api/auth/request-otp/", {"phone": spelling}, ip=fresh_ip())
            self.assertEqual(r.status, 200, r)
        r = self.post("/api/auth/request-otp/", {"phone": local}, ip=fresh_ip())
        self.limited(r, ("otp_rate_limit",), 3600)
        self.assertEqual(self.post("/api/auth/request-otp/", {"phone": new_phone()}, ip=fresh_ip()).status, 200)
        email = new_email()
        for i in range(3):
            self.assertEqual(self.post("/api/auth/request-otp/", {"email": email}, ip=fresh_ip()).status, 200)
        self.limited(self.post("/api/auth/request-otp/", {"email": email}, ip=fresh_ip()),
                     ("otp_rate_limit",), 3600)

    def test_legacy_register_phone_three_per_hour(self):
        phone = new_phone()
        for i in range(3):
            self.assertEqual(self.post("/api/auth/register/phone/", {"phone": phone}, ip=fresh_ip()).status, 200)
        self.limited(self.post("/api/auth/register/phone/", {"phone": phone}, ip=fresh_ip()),
                     ("otp_rate_limit",), 3600)

    def test_login_five_per_minute_per_ip(self):
        ip = fresh_ip()
        for i in range(5):
            self.assertError(self.login(new_email(), "Aa1!whatever", ip=ip), 401, "invalid_credentials")
        self.limited(self.login(new_email(), "Aa1!whatever", ip=ip), max_retry=60)
        self.assertError(self.login(new_email(), "Aa1!whatever", ip=fresh_ip()), 401, "invalid_credentials")

    def test_verify_otp_ten_per_minute_per_ip(self):
        ip = fresh_ip()
        for i in range(10):
            r = self.post("/api/auth/verify-otp/", {"phone": new_phone(), "otp": "000000"}, ip=ip)
            self.assertNotEqual(r.status, 429, (i, r))
            self.assertEqual(r.status, 400, (i, r))
        self.limited(self.post("/api/auth/verify-otp/", {"phone": new_phone(), "otp": "000000"}, ip=ip),
                     max_retry=60)
        r = self.post("/api/auth/verify-otp/", {"phone": new_phone(), "otp": "000000"}, ip=fresh_ip())
        self.assertEqual(r.status, 400, r)

    def test_anonymous_posts_ten_per_minute_per_ip(self):
        ip = fresh_ip()
        for i in range(10):
            pw = new_password()
            self.remember(pw)
            r = self.post("/api/auth/register/email/", {"email": new_email(), "password": pw}, ip=ip)
            self.assertEqual(r.status, 200, (i, r))
            self.remember(r.json()["access"], r.json()["refresh"])
        self.limited(self.post("/api/auth/register/email/", {"email": new_email(), "password": new_password()},
                               ip=ip), max_retry=60)
        r = self.post("/api/auth/register/email/", {"email": new_email(), "password": new_password()},
                      ip=fresh_ip())
        self.assertEqual(r.status, 200, r)
        self.remember(r.json()["access"], r.json()["refresh"])

    def test_dead_otp_after_five_wrong_attempts(self):
        ip = fresh_ip()
        phone = new_phone()
        _, code = self.request_code(phone, ip=ip)
        for i in range(4):
            self.assertError(self.verify(phone, other_code(code), ip=ip), 400, "invalid_otp")
        r = self.verify(phone, other_code(code), ip=ip)
        self.assertIn((r.status, r.json().get("code")), ((400, "invalid_otp"), (429, "otp_rate_limit")), r)
        self.limited(self.verify(phone, code, ip=ip), ("otp_rate_limit",))

    def test_limits_are_shared_by_two_instances(self):
        second = AuthServer(PG.url(), REDIS.url(db=self.REDIS_DB), True, self.ENV)
        try:
            second.start()
            phone = new_phone()
            self.assertEqual(self.post("/api/auth/request-otp/", {"phone": phone}).status, 200)
            self.assertEqual(self.post("/api/auth/request-otp/", {"phone": phone}, server=second).status, 200)
            self.assertEqual(self.post("/api/auth/request-otp/", {"phone": phone}).status, 200)
            self.limited(self.post("/api/auth/request-otp/", {"phone": phone}, server=second), ("otp_rate_limit",))
            ip = fresh_ip()
            for i in range(5):
                srv = second if i % 2 else None
                self.assertError(self.login(new_email(), "Aa1!whatever", ip=ip, server=srv), 401,
                                 "invalid_credentials")
            self.limited(self.login(new_email(), "Aa1!whatever", ip=ip, server=second))
            self.limited(self.login(new_email(), "Aa1!whatever", ip=ip))
        finally:
            try:
                second.stop()
            finally:
                second.cleanup()

    def test_zz_no_secrets_in_logs(self):
        time.sleep(0.3)
        self.assertTrue(type(self).secrets)
        self.assertEqual(self.logs_without_secrets(), [])


if __name__ == "__main__":
    unittest.main()
