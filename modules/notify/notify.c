/*
 * notify.c — the notify module: SMS and e-mail delivery for other modules.
 *
 * Other modules never send anything themselves: in the same SQL statement as
 * the change that calls for a message, they enqueue the job
 *   SELECT rx_enqueue('notify.send', jsonb_build_object(
 *       'channel', 'sms',                 -- or 'email'
 *       'to', '+8801712345678',           -- or 'a@b.c'
 *       'template', 'otp',                -- otp, password_reset, or one from the config
 *       'vars', jsonb_build_object('code', '123456')));
 * and this module renders the template (templates.c) and hands the message to
 * the provider configured for the channel (provider_log.c, provider_http.c,
 * provider_smtp.c) on the thread pool, since providers block. Delivery is
 * keyed by the job id so a retry does not send twice where the provider
 * allows it; after a success (or the last failed attempt) the vars are
 * removed from rx_jobs so codes do not rest in the database.
 *
 * Logs carry channel, template, masked recipient, job id, provider and error;
 * never a body, a code, a key or a password.
 *
 * Config ([notify] section, every key also RXD_NOTIFY_...): see
 * conf/rxd.conf.example. Everything is read in init and read-only afterwards.
 */
#include "notify.h"

#include <ctype.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTIFY_TASK "notify.send"
#define NOTIFY_MAX_ATTEMPTS 5
#define NOTIFY_ERR_MAX 512

/* Removes the codes from the stored payload once they are no longer needed. */
static const char NOTIFY_SQL_SCRUB[] =
    "UPDATE rx_jobs SET payload = payload - 'vars' WHERE id = $1";

typedef enum { NOTIFY_P_LOG, NOTIFY_P_HTTP, NOTIFY_P_SMTP } notify_provider;

/* Set in init, read-only afterwards (worker and pool threads read it). */
static rx_module *self;
static notify_provider sms_provider, email_provider;
static notify_log_conf log_conf;
static notify_http_conf http_conf;
static notify_smtp_conf smtp_conf;
static bool curl_ready;

/* Built-in templates: an empty config must work, and auth relies on them. */
typedef struct notify_builtin {
    const char *key, *text;
} notify_builtin;
static const notify_builtin builtins[] = {
    {"template.otp.sms", "Your My Pharma code is {code}. It expires in 5 minutes."},
    {"template.otp.email.subject", "Your My Pharma code"},
    {"template.otp.email.body",
     "Your My Pharma verification code is {code}.\n\nIt expires in 5 minutes. If you did not "
     "ask for it, you can ignore this e-mail."},
    {"template.password_reset.sms",
     "Your My Pharma password reset code is {code}. It expires in 5 minutes."},
    {"template.password_reset.email.subject", "Reset your My Pharma password"},
    {"template.password_reset.email.body",
     "Your My Pharma password reset code is {code}.\n\nIt expires in 5 minutes. If you did not "
     "ask to reset your password, ignore this e-mail: your password stays unchanged."},
};

static const char *provider_name(notify_provider p)
{
    return p == NOTIFY_P_LOG ? "log" : p == NOTIFY_P_HTTP ? "http" : "smtp";
}

/* ------------------------------------------------------------------------ */
/* Recipients                                                               */
/* ------------------------------------------------------------------------ */

/* +8801712345678 or 01712345678: digits with an optional '+', 6..15 digits (E.164). */
static bool notify_phone_ok(const char *s)
{
    const char *p = s + (*s == '+');
    size_t n = strlen(p);
    if (n < 6 || n > 15)
        return false;
    for (; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    return true;
}

/* A deliberately plain address check: one '@', a dotted domain, and none of
 * the characters that could end an SMTP command or a header. */
static bool notify_email_ok(const char *s)
{
    const char *at = strchr(s, '@');
    size_t n = strlen(s);
    if (at == NULL || at == s || strchr(at + 1, '@') || n > 254 || strchr(at + 1, '.') == NULL ||
        at[1] == '.' || s[n - 1] == '.')
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f || strchr("<>\"(),;:\\[]", *p))
            return false;
    return true;
}

/* +8801712345678 -> +880171****678, asif@example.com -> a***@example.com:
 * enough for an operator to tell deliveries apart, not enough to contact anyone. */
static void notify_mask(const char *to, char *out, size_t outlen)
{
    const char *at = strchr(to, '@');
    size_t n = strlen(to);
    if (at != NULL)
        snprintf(out, outlen, "%c***%s", to[0], at);
    else if (n >= 11)
        snprintf(out, outlen, "%.7s****%s", to, to + n - 3);
    else if (n >= 5)
        snprintf(out, outlen, "%.2s****%s", to, to + n - 2);
    else
        snprintf(out, outlen, "****");
}

/* ------------------------------------------------------------------------ */
/* One delivery: payload -> rendered message -> provider                    */
/* ------------------------------------------------------------------------ */

typedef struct notify_delivery {
    notify_msg msg;
    notify_provider provider;
    char *to, *tmpl, *subject, *body; /* owned */
    char masked[96];
    int rc;
    bool skipped;
    char err[NOTIFY_ERR_MAX];
} notify_delivery;

static void notify_delivery_free(notify_delivery *d)
{
    if (d == NULL)
        return;
    free(d->to);
    free(d->tmpl);
    free(d->subject);
    /* The body holds a code: do not leave it in freed memory. */
    if (d->body)
        memset(d->body, 0, strlen(d->body));
    free(d->body);
    free(d);
}

/* The text of template `name` for `part` ("sms", "email.subject", "email.body"):
 * the config's, else the built-in one, else NULL. Borrowed. */
static const char *notify_template(const char *name, const char *part)
{
    char key[160];
    snprintf(key, sizeof(key), "template.%s.%s", name, part);
    const char *def = NULL;
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++)
        if (strcmp(builtins[i].key, key) == 0)
            def = builtins[i].text;
    const char *v = rx_config_str(self, key, def);
    return v && *v ? v : NULL;
}

static bool notify_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

/* Validate the payload and render the message. Returns the delivery
 * (caller frees with notify_delivery_free) or NULL with the reason in err:
 * those reasons are permanent (a bug of the enqueuing module or the config). */
static notify_delivery *notify_prepare(const json_t *p, int64_t job_id, char *err, size_t errlen)
{
    if (!json_is_object(p)) {
        snprintf(err, errlen, "invalid payload: expected a JSON object");
        return NULL;
    }
    const char *channel = json_string_value(json_object_get(p, "channel"));
    const char *to = json_string_value(json_object_get(p, "to"));
    const char *tmpl = json_string_value(json_object_get(p, "template"));
    json_t *vars = json_object_get(p, "vars");
    bool sms = channel && strcmp(channel, "sms") == 0;
    bool email = channel && strcmp(channel, "email") == 0;
    if (!sms && !email) {
        snprintf(err, errlen, "invalid payload: \"channel\" must be \"sms\" or \"email\"");
        return NULL;
    }
    if (to == NULL || (sms && !notify_phone_ok(to)) || (email && !notify_email_ok(to))) {
        snprintf(err, errlen, "invalid payload: \"to\" must be %s",
                 sms ? "a phone number: 6 to 15 digits, optionally after a '+'"
                     : "an e-mail address");
        return NULL;
    }
    if (tmpl == NULL || !notify_name_ok(tmpl)) {
        snprintf(err, errlen, "invalid payload: \"template\" must be a template name ([a-z0-9_])");
        return NULL;
    }
    if (vars != NULL && !json_is_object(vars)) {
        snprintf(err, errlen, "invalid payload: \"vars\" must be an object");
        return NULL;
    }
    const char *tbody = notify_template(tmpl, sms ? "sms" : "email.body");
    const char *tsubj = email ? notify_template(tmpl, "email.subject") : NULL;
    if (tbody == NULL || (email && tsubj == NULL)) {
        snprintf(err, errlen,
                 "unknown template '%s' for %s: set notify.template.%s.%s in the config", tmpl,
                 channel, tmpl, tbody == NULL ? (sms ? "sms" : "email.body") : "email.subject");
        return NULL;
    }
    notify_delivery *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char rerr[256];
    d->to = strdup(to);
    d->tmpl = strdup(tmpl);
    d->body = notify_render(tbody, vars, false, rerr, sizeof(rerr));
    if (d->body != NULL && email)
        d->subject = notify_render(tsubj, vars, true, rerr, sizeof(rerr));
    if (d->body == NULL || (email && d->subject == NULL)) {
        snprintf(err, errlen, "template '%s' (%s%s): %s", tmpl, channel,
                 d->body == NULL ? "" : " subject", rerr);
        notify_delivery_free(d);
        return NULL;
    }
    if (d->to == NULL || d->tmpl == NULL) {
        snprintf(err, errlen, "out of memory");
        notify_delivery_free(d);
        return NULL;
    }
    d->provider = sms ? sms_provider : email_provider;
    d->msg = (notify_msg){.channel = sms ? "sms" : "email",
                          .to = d->to,
                          .tmpl = d->tmpl,
                          .subject = d->subject,
                          .body = d->body,
                          .job_id = job_id};
    notify_mask(to, d->masked, sizeof(d->masked));
    return d;
}

/* Blocking: a pool thread, or the main thread for `rxd notify-test`. */
static void notify_deliver(void *arg)
{
    notify_delivery *d = arg;
    switch (d->provider) {
    case NOTIFY_P_LOG:
        d->rc = notify_log_send(&log_conf, &d->msg, &d->skipped, d->err, sizeof(d->err));
        break;
    case NOTIFY_P_HTTP:
        d->rc = notify_http_send(&http_conf, &d->msg, d->err, sizeof(d->err));
        break;
    case NOTIFY_P_SMTP:
        d->rc = notify_smtp_send(&smtp_conf, &d->msg, d->err, sizeof(d->err));
        break;
    }
}

/* ------------------------------------------------------------------------ */
/* The task                                                                 */
/* ------------------------------------------------------------------------ */

/* After the scrub: finish the job with the error kept in the request data
 * (NULL: success). A failed scrub is logged, not fatal: the message is out,
 * and failing the job now would send it again. */
static void notify_on_scrubbed(rx_req *job, rx_rows *rows)
{
    if (rx_rows_failed(rows))
        rx_log(self, RX_LOG_WARN, "job %" PRId64 ": could not remove vars from rx_jobs: %s",
               rx_job_id(job), rx_strerror(rx_rows_error(rows)));
    rx_job_done(job, rx_req_data(job));
}

/* Scrub the vars, then finish with `error` (NULL = success). */
static void notify_finish(rx_req *job, const char *error)
{
    rx_req_set_data(job, error ? rx_req_strdup(job, error) : NULL);
    if (rx_db(job, notify_on_scrubbed, NOTIFY_SQL_SCRUB, RX_INT(rx_job_id(job))) != 0)
        rx_job_done(job, error);
}

/* A failure: the vars stay for the retry, except after the last attempt. */
static void notify_fail(rx_req *job, const char *error)
{
    if (rx_job_attempt(job) >= NOTIFY_MAX_ATTEMPTS)
        notify_finish(job, error);
    else
        rx_job_done(job, error);
}

static void notify_delivered(rx_req *job, void *arg)
{
    notify_delivery *d = arg;
    if (d->rc == 0) {
        rx_log(self, RX_LOG_INFO, "%s '%s' to %s via %s: %s (job %" PRId64 ", attempt %d)",
               d->msg.channel, d->tmpl, d->masked, provider_name(d->provider),
               d->skipped ? "already delivered by an earlier attempt, not sent again" : "sent",
               rx_job_id(job), rx_job_attempt(job));
        notify_delivery_free(d);
        notify_finish(job, NULL);
        return;
    }
    rx_log(self, RX_LOG_WARN, "%s '%s' to %s via %s failed (job %" PRId64 ", attempt %d): %s",
           d->msg.channel, d->tmpl, d->masked, provider_name(d->provider), rx_job_id(job),
           rx_job_attempt(job), d->err);
    char *error = rx_req_strdup(job, d->err);
    notify_delivery_free(d);
    notify_fail(job, error ? error : "delivery failed");
}

static void notify_send_task(rx_req *job)
{
    char err[NOTIFY_ERR_MAX];
    notify_delivery *d = notify_prepare(rx_job_payload(job), rx_job_id(job), err, sizeof(err));
    if (d == NULL) {
        /* The kernel logs the error with the job id; it names no recipient. */
        notify_fail(job, err);
        return;
    }
    int rc = rx_offload(job, notify_deliver, notify_delivered, d);
    if (rc != 0) {
        notify_delivery_free(d);
        rx_job_done(job, rx_strerror(rc));
    }
}

/* ------------------------------------------------------------------------ */
/* rxd notify-test --channel sms|email --to X                               */
/* ------------------------------------------------------------------------ */

static int notify_cmd_test(rx_module *m, int argc, char **argv)
{
    (void)m;
    const char *channel = NULL, *to = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--channel") == 0 && i + 1 < argc)
            channel = argv[++i];
        else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            to = argv[++i];
        else {
            channel = NULL;
            break;
        }
    }
    if (channel == NULL || to == NULL) {
        fprintf(stderr, "usage: rxd notify-test --channel sms|email --to RECIPIENT\n");
        return 1;
    }
    json_t *p = json_pack("{s:s, s:s, s:s, s:{s:s}}", "channel", channel, "to", to, "template",
                          "otp", "vars", "code", "000000");
    char err[NOTIFY_ERR_MAX];
    notify_delivery *d = p ? notify_prepare(p, 0, err, sizeof(err)) : NULL;
    json_decref(p);
    if (d == NULL) {
        fprintf(stderr, "rxd notify-test: %s\n", p ? err : "out of memory");
        return 1;
    }
    notify_deliver(d); /* synchronous: the operator waits for the verdict */
    int rc = d->rc == 0 ? 0 : 1;
    if (rc == 0)
        printf("notify-test: %s to %s sent via the %s provider%s\n", d->msg.channel, d->masked,
               provider_name(d->provider),
               d->provider == NOTIFY_P_LOG ? " (written to the outbox, not really sent)" : "");
    else
        fprintf(stderr, "rxd notify-test: %s to %s via %s failed: %s\n", d->msg.channel, d->masked,
                provider_name(d->provider), d->err);
    notify_delivery_free(d);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Init: read and check the whole config, refuse to start when it cannot work */
/* ------------------------------------------------------------------------ */

static bool notify_conf_str(rx_module *m, const char *key, const char *def, const char **out)
{
    *out = rx_config_str(m, key, def);
    return *out != NULL;
}

/* A duration in seconds (plain integer), 1..3600, into milliseconds. */
static int notify_conf_secs(rx_module *m, const char *key, long long def, long *out_ms)
{
    long long v;
    if (rx_config_int(m, key, def, &v) != 0 || v < 1 || v > 3600) {
        rx_module_fail(m, "notify.%s must be a number of seconds between 1 and 3600", key);
        return -1;
    }
    *out_ms = (long)(v * 1000);
    return 0;
}

static int notify_conf_provider(rx_module *m, const char *key, const char *other,
                                notify_provider other_p, notify_provider *out)
{
    const char *v = rx_config_str(m, key, "log");
    if (strcmp(v, "log") == 0)
        *out = NOTIFY_P_LOG;
    else if (strcmp(v, other) == 0)
        *out = other_p;
    else {
        rx_module_fail(m, "notify.%s: unknown provider '%s' (log or %s)", key, v, other);
        return -1;
    }
    return 0;
}

static int notify_conf_http(rx_module *m)
{
    notify_http_conf *c = &http_conf;
    notify_conf_str(m, "sms.http.url", "", &c->url);
    notify_conf_str(m, "sms.http.method", "POST", &c->method);
    notify_conf_str(m, "sms.http.format", "json", &c->format);
    notify_conf_str(m, "sms.http.api_key", "", &c->api_key);
    notify_conf_str(m, "sms.http.api_key_field", "api_key", &c->api_key_field);
    notify_conf_str(m, "sms.http.api_key_header", "", &c->api_key_header);
    notify_conf_str(m, "sms.http.to_field", "to", &c->to_field);
    notify_conf_str(m, "sms.http.message_field", "message", &c->message_field);
    notify_conf_str(m, "sms.http.fields", "", &c->fields);
    notify_conf_str(m, "sms.http.idempotency_header", "", &c->idempotency_header);
    notify_conf_str(m, "sms.http.idempotency_field", "", &c->idempotency_field);
    if (notify_conf_secs(m, "sms.http.timeout", 10, &c->timeout_ms) != 0 ||
        notify_conf_secs(m, "sms.http.connect_timeout", 5, &c->connect_timeout_ms) != 0)
        return -1;
    if (sms_provider != NOTIFY_P_HTTP)
        return 0;
    if (*c->url == '\0') {
        rx_module_fail(m, "notify.sms.http.url is required with notify.sms.provider = http");
        return -1;
    }
    if (strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0) {
        rx_module_fail(m, "notify.sms.http.url must start with http:// or https://");
        return -1;
    }
    if (strcmp(c->method, "POST") != 0 && strcmp(c->method, "PUT") != 0) {
        rx_module_fail(m, "notify.sms.http.method must be POST or PUT");
        return -1;
    }
    if (strcmp(c->format, "json") != 0 && strcmp(c->format, "form") != 0) {
        rx_module_fail(m, "notify.sms.http.format must be json or form");
        return -1;
    }
    if (*c->to_field == '\0' || *c->message_field == '\0') {
        rx_module_fail(
            m, "notify.sms.http.to_field and notify.sms.http.message_field must not be empty");
        return -1;
    }
    if ((*c->api_key_field || *c->api_key_header) && *c->api_key == '\0') {
        rx_module_fail(m, "notify.sms.http.api_key is empty (set RXD_NOTIFY_SMS_HTTP_API_KEY, or "
                          "empty notify.sms.http.api_key_field for a gateway without a key)");
        return -1;
    }
    if (strlen(c->api_key) > 512 || strlen(c->api_key_header) > 128 ||
        strlen(c->idempotency_header) > 128) {
        /* provider_http.c builds header lines in a 1 KiB buffer. */
        rx_module_fail(m, "notify.sms.http.api_key (512 bytes) or a header name (128) is too long");
        return -1;
    }
    if (strpbrk(c->api_key, "\r\n") || strpbrk(c->api_key_header, "\r\n: ") ||
        strpbrk(c->idempotency_header, "\r\n: ")) {
        rx_module_fail(m, "notify.sms.http.api_key / api_key_header / idempotency_header: "
                          "no line breaks, and header names without ':' or spaces");
        return -1;
    }
    if (notify_http_fields_check(c->fields) != 0) {
        rx_module_fail(m, "notify.sms.http.fields must be space-separated name=value pairs");
        return -1;
    }
    return 0;
}

static int notify_conf_smtp(rx_module *m)
{
    notify_smtp_conf *c = &smtp_conf;
    notify_conf_str(m, "email.smtp.url", "", &c->url);
    notify_conf_str(m, "email.smtp.from", "", &c->from);
    notify_conf_str(m, "email.smtp.from_name", "My Pharma", &c->from_name);
    notify_conf_str(m, "email.smtp.user", "", &c->user);
    notify_conf_str(m, "email.smtp.password", "", &c->password);
    notify_conf_str(m, "email.smtp.tls", "try", &c->tls);
    if (notify_conf_secs(m, "email.smtp.timeout", 20, &c->timeout_ms) != 0 ||
        notify_conf_secs(m, "email.smtp.connect_timeout", 10, &c->connect_timeout_ms) != 0)
        return -1;
    if (email_provider != NOTIFY_P_SMTP)
        return 0;
    if (strncmp(c->url, "smtp://", 7) != 0 && strncmp(c->url, "smtps://", 8) != 0) {
        rx_module_fail(m, "notify.email.smtp.url is required with notify.email.provider = smtp "
                          "(smtp://host:587 or smtps://host:465)");
        return -1;
    }
    if (!notify_email_ok(c->from)) {
        rx_module_fail(m, "notify.email.smtp.from is required with notify.email.provider = smtp "
                          "(an address such as no-reply@example.com)");
        return -1;
    }
    if (strpbrk(c->from_name, "\r\n\"\\")) {
        rx_module_fail(m, "notify.email.smtp.from_name must not contain line breaks, '\"' or '\\'");
        return -1;
    }
    if (strcmp(c->tls, "try") != 0 && strcmp(c->tls, "require") != 0 &&
        strcmp(c->tls, "none") != 0) {
        rx_module_fail(m, "notify.email.smtp.tls must be try, require or none");
        return -1;
    }
    if (*c->user && *c->password == '\0') {
        rx_module_fail(m, "notify.email.smtp.password is empty while notify.email.smtp.user is set "
                          "(set RXD_NOTIFY_EMAIL_SMTP_PASSWORD)");
        return -1;
    }
    return 0;
}

static int init(rx_module *m)
{
    self = m;
    if (notify_conf_provider(m, "sms.provider", "http", NOTIFY_P_HTTP, &sms_provider) != 0 ||
        notify_conf_provider(m, "email.provider", "smtp", NOTIFY_P_SMTP, &email_provider) != 0)
        return -1;
    notify_conf_str(m, "log.outbox", "var/notify/outbox.jsonl", &log_conf.outbox);
    if (*log_conf.outbox == '\0') {
        rx_module_fail(m, "notify.log.outbox must not be empty");
        return -1;
    }
    if (notify_conf_http(m) != 0 || notify_conf_smtp(m) != 0)
        return -1;

    /* Built-in templates must exist (they have defaults, so only an explicit
     * empty value removes one) and every template must parse. */
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        const char *v = rx_config_str(m, builtins[i].key, builtins[i].text);
        char err[256];
        if (*v == '\0') {
            rx_module_fail(m, "notify.%s is empty: the built-in template is required",
                           builtins[i].key);
            return -1;
        }
        if (notify_template_check(v, err, sizeof(err)) != 0) {
            rx_module_fail(m, "notify.%s: %s", builtins[i].key, err);
            return -1;
        }
    }

    long long backoff;
    if (rx_config_int(m, "retry_backoff_ms", 1000, &backoff) != 0 || backoff < 10 ||
        backoff > 3600000) {
        rx_module_fail(m, "notify.retry_backoff_ms must be an integer between 10 and 3600000");
        return -1;
    }

    /* Main thread, before any worker: curl's global state is not thread safe to set up. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rx_module_fail(m, "curl_global_init failed");
        return -1;
    }
    curl_ready = true;

    /* The attempt must outlive the provider's own timeout, or a slow but
     * successful send would be retried (and sent twice). */
    long slowest =
        http_conf.timeout_ms > smtp_conf.timeout_ms ? http_conf.timeout_ms : smtp_conf.timeout_ms;
    int timeout_s = (int)(slowest / 1000) + 10;
    if (rx_task(m, NOTIFY_TASK, notify_send_task,
                &(rx_task_opts){.max_attempts = NOTIFY_MAX_ATTEMPTS,
                                .timeout_s = timeout_s < 30 ? 30 : timeout_s,
                                .backoff_ms = (int)backoff}) != 0 ||
        rx_command(m, "notify-test", notify_cmd_test,
                   "--channel sms|email --to RECIPIENT: send the otp template (code 000000) now") !=
            0)
        return -1;

    if (sms_provider == NOTIFY_P_LOG || email_provider == NOTIFY_P_LOG)
        rx_log(m, RX_LOG_WARN,
               "the log provider does not really send messages: %s%s%s messages are written to %s "
               "(development only; configure notify.sms.provider / notify.email.provider)",
               sms_provider == NOTIFY_P_LOG ? "sms" : "",
               sms_provider == NOTIFY_P_LOG && email_provider == NOTIFY_P_LOG ? " and " : "",
               email_provider == NOTIFY_P_LOG ? "email" : "", log_conf.outbox);
    return 0;
}

static void stop(rx_module *m)
{
    (void)m;
    if (curl_ready)
        curl_global_cleanup();
    curl_ready = false;
}

RX_MODULE(
    "notify", "1.0.0",
    .summary = "SMS and e-mail delivery as jobs (task notify.send): log, http, smtp providers",
    .init = init, .stop = stop);
