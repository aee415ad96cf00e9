/*
 * provider_http.c — SMS through an HTTP gateway (libcurl), the way Bangladeshi
 * SMS gateways take it: one POST of JSON or a form to a URL, with an API key
 * as a body field and/or a header, the recipient and the text under field
 * names the gateway chooses, plus static fields (sender id, type...):
 *   [notify]
 *   sms.provider = http
 *   sms.http.url = https://gateway.example/api/send
 *   sms.http.format = form
 *   sms.http.to_field = number
 *   sms.http.message_field = message
 *   sms.http.api_key_field = api_key      (the key itself: RXD_NOTIFY_SMS_HTTP_API_KEY)
 *   sms.http.fields = senderid=MyPharma type=text
 * Any 2xx answer is a success; anything else, or a transport error, fails the
 * attempt and the job is retried. When configured, the job id goes out as an
 * idempotency header or field so a gateway that deduplicates never sends a
 * retry twice.
 *
 * Runs on a pool thread: blocking is fine here, and CURLOPT_NOSIGNAL keeps
 * libcurl's resolver timeouts from raising signals in a threaded process.
 * Error texts never carry the key (they pass through notify_redact).
 */
#include "notify.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Split "k=v k2=v2" and call add() for each pair; -1 on a malformed item. */
static int notify_each_field(const char *spec, int (*add)(void *ud, const char *k, const char *v),
                             void *ud)
{
    char *copy = strdup(spec ? spec : "");
    if (copy == NULL)
        return -1;
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " \t", &save); tok && rc == 0;
         tok = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(tok, '=');
        if (eq == NULL || eq == tok) {
            rc = -1;
            break;
        }
        *eq = '\0';
        rc = add(ud, tok, eq + 1);
    }
    free(copy);
    return rc;
}

static int notify_json_add(void *ud, const char *k, const char *v)
{
    return json_object_set_new((json_t *)ud, k, json_string(v));
}

typedef struct notify_form {
    CURL *curl;
    char *s;
    size_t len;
} notify_form;

static int notify_form_add(void *ud, const char *k, const char *v)
{
    notify_form *f = ud;
    char *ek = curl_easy_escape(f->curl, k, 0), *ev = curl_easy_escape(f->curl, v, 0);
    int rc = -1;
    if (ek && ev) {
        size_t add = strlen(ek) + strlen(ev) + 2;
        char *ns = realloc(f->s, f->len + add + 1);
        if (ns) {
            f->s = ns;
            f->len +=
                (size_t)snprintf(f->s + f->len, add + 1, "%s%s=%s", f->len ? "&" : "", ek, ev);
            rc = 0;
        }
    }
    curl_free(ek);
    curl_free(ev);
    return rc;
}

/* Only the start of the answer is kept, for the status line in an error. */
static size_t notify_discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

int notify_http_fields_check(const char *spec)
{
    json_t *o = json_object();
    int rc = notify_each_field(spec, notify_json_add, o);
    json_decref(o);
    return rc;
}

int notify_http_send(const notify_http_conf *c, const notify_msg *m, char *err, size_t errlen)
{
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        snprintf(err, errlen, "http provider: curl_easy_init failed");
        return -1;
    }
    char idem[64];
    snprintf(idem, sizeof(idem), "rxd-notify-%" PRId64, m->job_id);
    bool use_idem = m->job_id != 0;

    /* The body: static fields first, so the message's own fields win a clash. */
    char *body = NULL;
    const char *ctype;
    int rc = 0;
    if (strcmp(c->format, "form") == 0) {
        notify_form f = {.curl = curl};
        rc = notify_each_field(c->fields, notify_form_add, &f);
        if (rc == 0)
            rc = notify_form_add(&f, c->to_field, m->to);
        if (rc == 0)
            rc = notify_form_add(&f, c->message_field, m->body);
        if (rc == 0 && *c->api_key_field)
            rc = notify_form_add(&f, c->api_key_field, c->api_key);
        if (rc == 0 && use_idem && *c->idempotency_field)
            rc = notify_form_add(&f, c->idempotency_field, idem);
        body = f.s;
        ctype = "Content-Type: application/x-www-form-urlencoded";
    } else {
        json_t *o = json_object();
        rc = notify_each_field(c->fields, notify_json_add, o);
        json_object_set_new(o, c->to_field, json_string(m->to));
        json_object_set_new(o, c->message_field, json_string(m->body));
        if (*c->api_key_field)
            json_object_set_new(o, c->api_key_field, json_string(c->api_key));
        if (use_idem && *c->idempotency_field)
            json_object_set_new(o, c->idempotency_field, json_string(idem));
        body = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        ctype = "Content-Type: application/json";
    }
    if (rc != 0 || body == NULL) {
        snprintf(err, errlen, "http provider: cannot build the request body");
        free(body);
        curl_easy_cleanup(curl);
        return -1;
    }

    struct curl_slist *h = curl_slist_append(NULL, ctype);
    h = curl_slist_append(h, "Accept: application/json");
    char line[1024];
    if (*c->api_key_header) {
        snprintf(line, sizeof(line), "%s: %s", c->api_key_header, c->api_key);
        h = curl_slist_append(h, line);
    }
    if (use_idem && *c->idempotency_header) {
        snprintf(line, sizeof(line), "%s: %s", c->idempotency_header, idem);
        h = curl_slist_append(h, line);
    }
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */

    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, c->url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, c->method);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION,
                     0L); /* a redirect would re-POST the key elsewhere */
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "rxd-notify/1");
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, notify_discard);

    CURLcode cc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    int out = 0;
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "http provider: %s%s%s", curl_easy_strerror(cc), *ebuf ? ": " : "",
                 ebuf);
        out = -1;
    } else if (status < 200 || status > 299) {
        snprintf(err, errlen, "http provider: the gateway answered HTTP %ld", status);
        out = -1;
    }
    if (out != 0)
        notify_redact(err, errlen, c->api_key);
    curl_slist_free_all(h);
    free(body);
    curl_easy_cleanup(curl);
    return out;
}
