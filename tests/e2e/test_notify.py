"""test_notify — modules/notify end to end: the "notify.send" task with each
provider, against a private throwaway PostgreSQL (pgtemp) and local sinks
(sinks.py: an HTTP "SMS gateway" and an SMTP server).

Jobs are enqueued the way other modules do it, with the kernel's SQL function
rx_enqueue('notify.send', payload); then the tests read what the provider
produced (outbox line, gateway request, mail), the row in rx_jobs (state,
attempts, last_error, payload without vars) and rxd's own output, which must
never carry a code, an API key or a password.

Environment: RXD_BIN, RXD_MODULE_DIR (where notify.so is built, build/modules).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rxdtest  # noqa: E402
from pgtemp import PgTemp  # noqa: E402
from rxdtest import RXD_BIN, Server, run_cli  # noqa: E402
from sinks import HttpSink, SmtpSink  # noqa: E402

MODULE_DIR = os.path.abspath(os.environ.get("RXD_MODULE_DIR", os.path.join(rxdtest.BUILD_DIR, "modules")))
PG = None
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
PHONE = "+8801712345678"
PHONE_MASKED = "+880171****678"
API_KEY = "sk_live_Q7x9SECRETkey"
SMTP_PASSWORD = "pw-Very-SECRET-789"


def setUpModule():
    global PG
    PG = PgTemp()
    try:
        r = cli("migrate")
        if r.returncode != 0:
            raise RuntimeError("rxd migrate failed:\n%s%s" % (r.stdout, r.stderr))
    except BaseException:
        PG.cleanup()
        raise


def tearDownModule():
    if PG is not None:
        PG.cleanup()


def base_env(extra=None):
    e = {"RXD_DATABASE_URL": PG.url() if PG else "", "RXD_MODULE_PATH": MODULE_DIR,
         "RXD_JOBS_POLL_INTERVAL": "200ms", "RXD_NOTIFY_RETRY_BACKOFF_MS": "100"}
    e.update(extra or {})
    return e


def cli(*args, env=None, config="", timeout=60):
    r = run_cli(*args, config=config, env=base_env(env), modules="notify", timeout=timeout)
    for mark in SANITIZER_MARKS:
        if mark in r.stderr:
            raise AssertionError("sanitizer report from rxd %s:\n%s" % (args, r.stderr))
    return r


def q(sql):
    return PG.psql(sql)


def enqueue(payload):
    p = json.dumps(payload).replace("'", "''")
    return int(q("SELECT rx_enqueue('notify.send', '%s'::jsonb)" % p))


def job(job_id):
    """(state, attempts, last_error, payload as dict)"""
    out = q("SELECT state, attempts, coalesce(last_error, ''), payload::text FROM rx_jobs"
            " WHERE id = %d" % job_id)
    state, attempts, err, payload = out.split("|", 3)
    return state, int(attempts), err, json.loads(payload)


def wait_for(fn, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.05)


def wait_job(job_id, state, timeout=20.0):
    return wait_for(lambda: job(job_id)[0] == state and job(job_id), timeout,
                    "job %d to be %s (now %s)" % (job_id, state, job(job_id)[:3]))


class NotifyServer(Server):
    """rxd serve with modules = notify on the test database."""

    def __init__(self, config="", env=None):
        super().__init__(config, base_env(env), "notify", 2)
        self.outbox = os.path.join(self.dir.name, "outbox.jsonl")
        self.env.setdefault("RXD_NOTIFY_LOG_OUTBOX", self.outbox)

    def start(self, timeout=20.0):
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([RXD_BIN, "--config", self.config_path, "serve"],
                                     env=self.env, stdout=self._out, stderr=self._err,
                                     cwd=self.dir.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("rxd exited with %d at start-up:\n%s" %
                                     (self.proc.returncode, self.output()))
            if "jobs: runner" in self.stdout():
                return self
            time.sleep(0.02)
        self.kill()
        raise AssertionError("rxd did not start its job runner:\n%s" % self.output())

    def stop(self, timeout=20.0):
        """Stop (exit 0 asserted), then look for sanitizer reports written at exit
        (LeakSanitizer reports only then)."""
        try:
            super().stop(timeout)
        finally:
            for mark in SANITIZER_MARKS:
                if mark in self.stderr():
                    raise AssertionError("sanitizer report:\n%s" % self.stderr()[-6000:])

    def outbox_lines(self):
        try:
            with open(self.outbox) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def assert_no_secret(self, test, *secrets):
        text = self.stdout() + self.stderr()
        for s in secrets:
            test.assertNotIn(s, text, "secret %r leaked into rxd's output" % s)
        for mark in SANITIZER_MARKS:
            test.assertNotIn(mark, text)


class ServerCase(unittest.TestCase):
    CONFIG = ""
    ENV = {}

    @classmethod
    def setUpClass(cls):
        cls.server = NotifyServer(cls.CONFIG, cls.ENV)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop(timeout=20)
        finally:
            cls.server.cleanup()


# ---------------------------------------------------------------------------
# log provider (the default)
# ---------------------------------------------------------------------------

class LogProvider(ServerCase):
    CONFIG = """
[notify]
template.welcome.sms = Hello {name}, {{braces}} stay. Code {code}.
template.greet.sms = Hi {name}
"""

    def lines_of(self, job_id):
        return [l for l in self.server.outbox_lines() if l.get("job_id") == job_id]

    def test_startup_warning_says_nothing_is_sent(self):
        warns = [l for l in self.server.log_lines()
                 if l.get("level") == "warn" and "does not really send" in l.get("msg", "")]
        self.assertEqual(len(warns), 1, self.server.stdout())
        self.assertIn("sms and email", warns[0]["msg"])
        self.assertIn(self.server.outbox, warns[0]["msg"])

    def test_sms_otp_writes_the_exact_json_line(self):
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "otp",
                          "vars": {"code": "731904"}})
        wait_job(job_id, "done")
        lines = self.lines_of(job_id)
        self.assertEqual(len(lines), 1)
        line = lines[0]
        self.assertEqual(list(line), ["channel", "to", "subject", "body", "created_at", "job_id"])
        self.assertEqual(line["channel"], "sms")
        self.assertEqual(line["to"], PHONE)
        self.assertIsNone(line["subject"])
        self.assertEqual(line["body"], "Your My Pharma code is 731904. It expires in 5 minutes.")
        self.assertRegex(line["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(job(job_id)[:3], ("done", 1, ""))
        # rxd's log says what happened, masked, and never the code.
        self.assertTrue(wait_for(lambda: "sms 'otp' to %s via log: sent (job %d" % (PHONE_MASKED, job_id)
                                 in self.server.stdout(), what="the delivery log line"))
        self.server.assert_no_secret(self, "731904", PHONE)

    def test_email_otp_and_password_reset_have_defaults(self):
        a = enqueue({"channel": "email", "to": "asif@example.com", "template": "otp",
                     "vars": {"code": "118822"}})
        b = enqueue({"channel": "email", "to": "asif@example.com", "template": "password_reset",
                     "vars": {"code": "228833"}})
        wait_job(a, "done")
        wait_job(b, "done")
        la, lb = self.lines_of(a)[0], self.lines_of(b)[0]
        self.assertEqual((la["channel"], la["to"], la["subject"]),
                         ("email", "asif@example.com", "Your My Pharma code"))
        self.assertIn("118822", la["body"])
        self.assertEqual(lb["subject"], "Reset your My Pharma password")
        self.assertIn("228833", lb["body"])
        self.assertIn("a***@example.com", self.server.stdout())
        self.server.assert_no_secret(self, "118822", "228833", "asif@example.com")

    def test_templates_from_config_with_literal_braces(self):
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "welcome",
                          "vars": {"name": "Asif", "code": 4242}})
        wait_job(job_id, "done")
        self.assertEqual(self.lines_of(job_id)[0]["body"], "Hello Asif, {braces} stay. Code 4242.")

    def test_vars_are_scrubbed_after_success(self):
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "otp",
                          "vars": {"code": "555111"}})
        _, _, _, payload = wait_job(job_id, "done")
        self.assertEqual(payload, {"channel": "sms", "to": PHONE, "template": "otp"})
        self.assertEqual(q("SELECT count(*) FROM rx_jobs WHERE payload::text LIKE '%%555111%%'"), "0")

    def test_a_retry_after_success_does_not_send_twice(self):
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "otp",
                          "vars": {"code": "909090"}})
        wait_job(job_id, "done")
        self.assertEqual(len(self.lines_of(job_id)), 1)
        # As if the process had died after delivering, before recording the
        # outcome: the same job (vars and all) is claimed again.
        q("UPDATE rx_jobs SET state = 'queued', run_at = now(), finished_at = NULL,"
          " payload = payload || '{\"vars\": {\"code\": \"909090\"}}' WHERE id = %d;"
          " NOTIFY rx_jobs" % job_id)
        _, attempts, _, payload = wait_job(job_id, "done")
        self.assertEqual(attempts, 2)
        self.assertNotIn("vars", payload)
        self.assertEqual(len(self.lines_of(job_id)), 1)
        wait_for(lambda: "already delivered by an earlier attempt" in self.server.stdout(),
                 what="the skip log line")

    def test_unknown_placeholder_fails_with_a_clear_error(self):
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "greet",
                          "vars": {"code": "343434"}})
        state, attempts, err, payload = wait_job(job_id, "dead")
        self.assertEqual(attempts, 5)
        self.assertEqual(err, "template 'greet' (sms): unknown placeholder {name}: "
                              "the payload's vars have no \"name\"")
        self.assertNotIn("vars", payload)  # the last attempt scrubs too
        self.assertEqual(self.lines_of(job_id), [])

    def test_unknown_template_fails_with_a_clear_error(self):
        job_id = enqueue({"channel": "email", "to": "a@b.co", "template": "nope", "vars": {}})
        _, _, err, _ = wait_job(job_id, "dead")
        self.assertEqual(err, "unknown template 'nope' for email: set "
                              "notify.template.nope.email.body in the config")

    def test_bad_payloads_fail_with_clear_errors(self):
        cases = [
            ({"channel": "fax", "to": PHONE, "template": "otp"},
             'invalid payload: "channel" must be "sms" or "email"'),
            ({"channel": "sms", "to": "12ab", "template": "otp"},
             'invalid payload: "to" must be a phone number: 6 to 15 digits, optionally after a \'+\''),
            ({"channel": "email", "to": "a@b.co\r\nRCPT TO:<x@y.z>", "template": "otp"},
             'invalid payload: "to" must be an e-mail address'),
            ({"channel": "sms", "to": PHONE, "template": "../otp"},
             'invalid payload: "template" must be a template name ([a-z0-9_])'),
            ({"channel": "sms", "to": PHONE, "template": "otp", "vars": [1]},
             'invalid payload: "vars" must be an object'),
            ({"channel": "sms", "to": PHONE, "template": "otp", "vars": {"code": {"x": 1}}},
             "template 'otp' (sms): vars.code must be a string or an integer"),
        ]
        ids = [(enqueue(p), e) for p, e in cases]
        for job_id, expected in ids:
            _, attempts, err, _ = wait_job(job_id, "dead")
            self.assertEqual(err, expected)
            self.assertEqual(self.lines_of(job_id), [])


# ---------------------------------------------------------------------------
# http provider (SMS gateway)
# ---------------------------------------------------------------------------

class HttpJson(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = HttpSink()
        cls.server = NotifyServer(env={
            "RXD_NOTIFY_SMS_PROVIDER": "http",
            "RXD_NOTIFY_SMS_HTTP_URL": cls.sink.url("/api/v1/sms/send"),
            "RXD_NOTIFY_SMS_HTTP_API_KEY": API_KEY,
            "RXD_NOTIFY_SMS_HTTP_API_KEY_FIELD": "apikey",
            "RXD_NOTIFY_SMS_HTTP_TO_FIELD": "msisdn",
            "RXD_NOTIFY_SMS_HTTP_MESSAGE_FIELD": "sms",
            "RXD_NOTIFY_SMS_HTTP_FIELDS": "sender_id=MyPharma type=text",
            "RXD_NOTIFY_SMS_HTTP_IDEMPOTENCY_HEADER": "Idempotency-Key",
        })
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            cls.sink.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop(timeout=20)
        finally:
            cls.server.cleanup()
            cls.sink.close()

    def setUp(self):
        self.sink.clear()

    def test_posts_the_configured_json_shape(self):
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "otp",
                          "vars": {"code": "602211"}})
        wait_job(job_id, "done")
        reqs = self.sink.wait(1)
        self.assertEqual(len(reqs), 1)
        r = reqs[0]
        self.assertEqual((r["method"], r["path"]), ("POST", "/api/v1/sms/send"))
        self.assertEqual(r["headers"]["content-type"], "application/json")
        self.assertEqual(r["headers"]["idempotency-key"], "rxd-notify-%d" % job_id)
        self.assertEqual(json.loads(r["body"]), {
            "sender_id": "MyPharma", "type": "text", "msisdn": PHONE,
            "sms": "Your My Pharma code is 602211. It expires in 5 minutes.", "apikey": API_KEY})
        # Email still goes to the log provider: only that is warned about.
        self.assertIn("does not really send messages: email messages are written", self.server.stdout())
        self.server.assert_no_secret(self, "602211", API_KEY)

    def test_retries_after_two_500s_and_sends_once(self):
        self.sink.set_statuses([500, 500])
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "otp",
                          "vars": {"code": "713355"}})
        state, attempts, err, payload = wait_job(job_id, "done")
        self.assertEqual(attempts, 3)
        self.assertEqual(err, "http provider: the gateway answered HTTP 500")
        self.assertNotIn("vars", payload)
        reqs = self.sink.wait(3)
        time.sleep(0.3)
        self.assertEqual([r["status"] for r in self.sink.requests], [500, 500, 200])
        self.assertEqual({r["headers"]["idempotency-key"] for r in reqs}, {"rxd-notify-%d" % job_id})
        self.server.assert_no_secret(self, "713355", API_KEY)

    def test_gives_up_after_max_attempts(self):
        self.sink.set_statuses([503] * 10)
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "otp",
                          "vars": {"code": "824466"}})
        state, attempts, err, payload = wait_job(job_id, "dead", timeout=30)
        self.assertEqual(attempts, 5)
        self.assertEqual(err, "http provider: the gateway answered HTTP 503")
        self.assertNotIn(API_KEY, err)
        self.assertNotIn("vars", payload)
        self.assertEqual(len(self.sink.requests), 5)
        self.server.assert_no_secret(self, "824466", API_KEY)


class HttpForm(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = HttpSink()
        cls.server = NotifyServer(env={
            "RXD_NOTIFY_SMS_PROVIDER": "http",
            "RXD_NOTIFY_SMS_HTTP_URL": cls.sink.url("/send?route=otp"),
            "RXD_NOTIFY_SMS_HTTP_FORMAT": "form",
            "RXD_NOTIFY_SMS_HTTP_API_KEY": API_KEY,
            "RXD_NOTIFY_SMS_HTTP_API_KEY_FIELD": "",
            "RXD_NOTIFY_SMS_HTTP_API_KEY_HEADER": "X-API-KEY",
            "RXD_NOTIFY_SMS_HTTP_TO_FIELD": "number",
            "RXD_NOTIFY_SMS_HTTP_FIELDS": "senderid=8809612345678",
            "RXD_NOTIFY_SMS_HTTP_IDEMPOTENCY_FIELD": "client_ref",
        })
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            cls.sink.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop(timeout=20)
        finally:
            cls.server.cleanup()
            cls.sink.close()

    def test_posts_the_configured_form_shape(self):
        job_id = enqueue({"channel": "sms", "to": PHONE, "template": "otp",
                          "vars": {"code": "390017"}})
        wait_job(job_id, "done")
        r = self.sink.wait(1)[0]
        self.assertEqual((r["method"], r["path"]), ("POST", "/send?route=otp"))
        self.assertEqual(r["headers"]["content-type"], "application/x-www-form-urlencoded")
        self.assertEqual(r["headers"]["x-api-key"], API_KEY)
        self.assertNotIn("idempotency-key", r["headers"])
        form = urllib.parse.parse_qs(r["body"].decode(), strict_parsing=True)
        self.assertEqual(form, {
            "senderid": ["8809612345678"], "number": [PHONE],
            "message": ["Your My Pharma code is 390017. It expires in 5 minutes."],
            "client_ref": ["rxd-notify-%d" % job_id]})
        self.server.assert_no_secret(self, "390017", API_KEY)


# ---------------------------------------------------------------------------
# smtp provider
# ---------------------------------------------------------------------------

class Smtp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sink = SmtpSink(auth=True)
        cls.server = NotifyServer(env={
            "RXD_NOTIFY_EMAIL_PROVIDER": "smtp",
            "RXD_NOTIFY_EMAIL_SMTP_URL": cls.sink.url(),
            "RXD_NOTIFY_EMAIL_SMTP_FROM": "no-reply@mypharma.test",
            "RXD_NOTIFY_EMAIL_SMTP_USER": "mailer",
            "RXD_NOTIFY_EMAIL_SMTP_PASSWORD": SMTP_PASSWORD,
        })
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            cls.sink.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop(timeout=20)
        finally:
            cls.server.cleanup()
            cls.sink.close()

    def test_delivers_to_the_smtp_server(self):
        job_id = enqueue({"channel": "email", "to": "rahim@example.com", "template": "otp",
                          "vars": {"code": "271828"}})
        _, attempts, _, payload = wait_job(job_id, "done")
        self.assertEqual(attempts, 1)
        self.assertNotIn("vars", payload)
        msgs = self.sink.wait(1)
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertEqual(m["mail_from"], "no-reply@mypharma.test")
        self.assertEqual(m["rcpt_to"], ["rahim@example.com"])
        self.assertEqual(m["auth"][1:], ("mailer", SMTP_PASSWORD))
        self.assertEqual(m["headers"]["subject"], "Your My Pharma code")
        self.assertEqual(m["headers"]["from"], "\"My Pharma\" <no-reply@mypharma.test>")
        self.assertEqual(m["headers"]["to"], "<rahim@example.com>")
        self.assertEqual(m["headers"]["message-id"], "<rxd-notify-%d@mypharma.test>" % job_id)
        self.assertIn("Your My Pharma verification code is 271828.", m["body"])
        self.assertIn("r***@example.com", self.server.stdout())
        self.server.assert_no_secret(self, "271828", SMTP_PASSWORD, "rahim@example.com")


# ---------------------------------------------------------------------------
# start-up refusals and the operator command
# ---------------------------------------------------------------------------

class Misconfiguration(unittest.TestCase):
    def refused(self, env, expected, config=""):
        r = cli("serve", env=env, config=config, timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("module 'notify': init failed: " + expected, r.stderr)
        self.assertNotIn("listening", r.stdout)

    def test_http_without_url(self):
        self.refused({"RXD_NOTIFY_SMS_PROVIDER": "http", "RXD_NOTIFY_SMS_HTTP_API_KEY": API_KEY},
                     "notify.sms.http.url is required with notify.sms.provider = http")

    def test_http_without_api_key(self):
        self.refused({"RXD_NOTIFY_SMS_PROVIDER": "http", "RXD_NOTIFY_SMS_HTTP_URL": "http://x.test/"},
                     "notify.sms.http.api_key is empty")

    def test_smtp_without_url(self):
        self.refused({"RXD_NOTIFY_EMAIL_PROVIDER": "smtp",
                      "RXD_NOTIFY_EMAIL_SMTP_FROM": "a@b.co"},
                     "notify.email.smtp.url is required with notify.email.provider = smtp")

    def test_smtp_without_from(self):
        self.refused({"RXD_NOTIFY_EMAIL_PROVIDER": "smtp",
                      "RXD_NOTIFY_EMAIL_SMTP_URL": "smtp://127.0.0.1:25"},
                     "notify.email.smtp.from is required with notify.email.provider = smtp")

    def test_unknown_provider(self):
        self.refused({"RXD_NOTIFY_SMS_PROVIDER": "carrier-pigeon"},
                     "notify.sms.provider: unknown provider 'carrier-pigeon' (log or http)")

    def test_builtin_template_emptied(self):
        self.refused({}, "notify.template.otp.sms is empty: the built-in template is required",
                     config="[notify]\ntemplate.otp.sms =\n")

    def test_template_syntax(self):
        self.refused({"RXD_NOTIFY_TEMPLATE_PASSWORD_RESET_EMAIL_BODY": "Code {code"},
                     "notify.template.password_reset.email.body: bad placeholder at offset 5")

    def test_an_empty_config_starts(self):
        r = cli("check")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("module notify ", r.stdout)
        self.assertNotIn("init failed", r.stderr)


class NotifyTestCommand(unittest.TestCase):
    def test_log_provider(self):
        with tempfile.TemporaryDirectory() as d:
            outbox = os.path.join(d, "sub", "outbox.jsonl")
            r = cli("notify-test", "--channel", "sms", "--to", PHONE,
                    env={"RXD_NOTIFY_LOG_OUTBOX": outbox})
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("notify-test: sms to %s sent via the log provider" % PHONE_MASKED, r.stdout)
            with open(outbox) as f:
                lines = [json.loads(l) for l in f]
            self.assertEqual(len(lines), 1)
            self.assertEqual(lines[0]["body"], "Your My Pharma code is 000000. It expires in 5 minutes.")
            self.assertIsNone(lines[0]["job_id"])

    def test_http_provider(self):
        sink = HttpSink()
        try:
            r = cli("notify-test", "--channel", "sms", "--to", PHONE, env={
                "RXD_NOTIFY_SMS_PROVIDER": "http", "RXD_NOTIFY_SMS_HTTP_URL": sink.url("/s"),
                "RXD_NOTIFY_SMS_HTTP_API_KEY": API_KEY})
            self.assertEqual(r.returncode, 0, r.stderr)
            body = json.loads(sink.wait(1)[0]["body"])
            self.assertEqual(body, {"to": PHONE, "api_key": API_KEY,
                                    "message": "Your My Pharma code is 000000. It expires in 5 minutes."})
            sink.set_statuses([502])
            r = cli("notify-test", "--channel", "sms", "--to", PHONE, env={
                "RXD_NOTIFY_SMS_PROVIDER": "http", "RXD_NOTIFY_SMS_HTTP_URL": sink.url("/s"),
                "RXD_NOTIFY_SMS_HTTP_API_KEY": API_KEY})
            self.assertEqual(r.returncode, 1)
            self.assertIn("the gateway answered HTTP 502", r.stderr)
            self.assertNotIn(API_KEY, r.stdout + r.stderr)
        finally:
            sink.close()

    def test_smtp_provider(self):
        sink = SmtpSink()
        try:
            env = {"RXD_NOTIFY_EMAIL_PROVIDER": "smtp", "RXD_NOTIFY_EMAIL_SMTP_URL": sink.url(),
                   "RXD_NOTIFY_EMAIL_SMTP_FROM": "ops@mypharma.test"}
            r = cli("notify-test", "--channel", "email", "--to", "ops@example.com", env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            m = sink.wait(1)[0]
            self.assertIsNone(m["auth"])
            self.assertEqual(m["rcpt_to"], ["ops@example.com"])
            self.assertIn("000000", m["body"])
        finally:
            sink.close()
        # The sink is gone: the same command now fails, without the password.
        env.update({"RXD_NOTIFY_EMAIL_SMTP_USER": "u", "RXD_NOTIFY_EMAIL_SMTP_PASSWORD": SMTP_PASSWORD,
                    "RXD_NOTIFY_EMAIL_SMTP_CONNECT_TIMEOUT": "2"})
        r = cli("notify-test", "--channel", "email", "--to", "ops@example.com", env=env)
        self.assertEqual(r.returncode, 1)
        self.assertIn("rxd notify-test: email to o***@example.com via smtp failed: smtp provider:",
                      r.stderr)
        self.assertNotIn(SMTP_PASSWORD, r.stdout + r.stderr)

    def test_bad_arguments(self):
        r = cli("notify-test", "--channel", "sms")
        self.assertEqual(r.returncode, 1)
        self.assertIn("usage: rxd notify-test --channel sms|email --to RECIPIENT", r.stderr)
        r = cli("notify-test", "--channel", "fax", "--to", PHONE)
        self.assertEqual(r.returncode, 1)
        self.assertIn('"channel" must be "sms" or "email"', r.stderr)


if __name__ == "__main__":
    unittest.main()
