/*
 * util.c — small helpers shared by the auth handlers: the per-request
 * context, identifiers (phone normalised to E.164, e-mail), masking for audit
 * metadata, reading JSON or multipart bodies with DRF's error texts, and the
 * rate-limit step that precedes most anonymous endpoints.
 */
#include "auth.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

auth_ctx *auth_ctx_get(rx_req *req)
{
    auth_ctx *c = rx_req_data(req);
    if (c == NULL) {
        c = rx_req_alloc(req, sizeof *c);
        rx_req_set_data(req, c);
    }
    return c;
}

void auth_uuid(char out[37])
{
    unsigned char b[16];
    randombytes_buf(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}



void auth_mask(int kind, const char *s, char *out, size_t outlen)
{
    size_t n = strlen(s);
    if (kind == AUTH_EMAIL) {
        const char *at = strchr(s, '@');
        size_t local = at ? (size_t)(at - s) : n;
        snprintf(out, outlen, "%.*s***%s", local > 0 ? 1 : 0, s, at ? at : "");
    } else {
        snprintf(out, outlen, "%.*s*****%s", n > 7 ? 4 : 0, s, n > 7 ? s + n - 3 : "");
    }
}

json_t *auth_meta(int kind, const char *ident)
{
    char m[300];
    auth_mask(kind, ident, m, sizeof m);
    return json_pack("{s:s}", kind == AUTH_EMAIL ? "email" : "phone", m);
}

int auth_read_body(rx_req *req, auth_ctx *c, bool multipart_ok)
{
    if (multipart_ok && rx_req_is_multipart(req)) {
        if (rx_req_multipart(req, &c->parts, &c->nparts) != 0)
            return -1;
        if (c->parts == NULL)
            c->parts = rx_req_alloc(req, sizeof(rx_part));
        return 0;
    }
    /* Routes that take uploads have a larger body limit; JSON keeps 1 MiB. */
    size_t len = 0;
    rx_req_body(req, &len);
    if (len > (1u << 20)) {
        rx_reply_error(req, 413, "request_too_large", "Request body is too large.");
        return -1;
    }
    c->body = rx_req_json_object(req);
    return c->body == NULL ? -1 : 0;
}

void auth_err(json_t *errs, const char *field, const char *msg)
{
    json_t *l = json_object_get(errs, field);
    if (l == NULL) {
        l = json_array();
        json_object_set_new(errs, field, l);
    }
    json_array_append_new(l, json_string(msg));
}

/* A string field: NULL when absent or null. A wrong type or an over-long
 * value adds DRF's error for the field and returns NULL. */
const char *auth_str(auth_ctx *c, const char *name, json_t *errs, size_t maxlen)
{
    const char *s = NULL;
    if (c->parts != NULL) {
        const rx_part *p = rx_part_get(c->parts, c->nparts, name);
        if (p == NULL || p->filename != NULL)
            return NULL;
        s = p->data;
    } else {
        json_t *v = json_object_get(c->body, name);
        if (v == NULL || json_is_null(v))
            return NULL;
        if (json_is_string(v))
            s = json_string_value(v);
        else {
            if (errs != NULL)
                auth_err(errs, name, "Not a valid string.");
            return NULL;
        }
    }
    if (maxlen > 0 && strlen(s) > maxlen) {
        if (errs != NULL) {
            char m[96];
            snprintf(m, sizeof m, "Ensure this field has no more than %zu characters.", maxlen);
            auth_err(errs, name, m);
        }
        return NULL;
    }
    return s;
}

/* Exactly one of phone/email, normalised into c->kind / c->ident.
 * Returns 0 when found and valid. */
int auth_identifier(auth_ctx *c, json_t *errs, bool required)
{
    const char *phone = auth_str(c, "phone", errs, 255);
    const char *email = auth_str(c, "email", errs, 255);
    if (phone != NULL && *phone == '\0')
        phone = NULL;
    if (email != NULL && *email == '\0')
        email = NULL;
    if (phone != NULL && email != NULL) {
        auth_err(errs, "non_field_errors", "Provide either phone or email, not both.");
        return -1;
    }
    if (phone == NULL && email == NULL) {
        if (required && json_object_size(errs) == 0)
            auth_err(errs, "non_field_errors", "Either phone or email is required.");
        return -1;
    }
    if (phone != NULL) {
        c->kind = AUTH_PHONE;
        if (ident_norm_phone(phone, c->ident, sizeof c->ident) != 0) {
            auth_err(errs, "phone", "Enter a valid phone number.");
            return -1;
        }
    } else {
        c->kind = AUTH_EMAIL;
        if (ident_norm_email(email, c->ident, sizeof c->ident) != 0) {
            auth_err(errs, "email", "Enter a valid email address.");
            return -1;
        }
    }
    return 0;
}

const char *auth_ip(rx_req *req)
{
    const char *ip = rx_req_client_ip(req);
    return ip ? ip : "";
}

const char *auth_ua(rx_req *req)
{
    const char *ua = rx_req_header(req, "user-agent");
    if (ua == NULL)
        return "";
    if (strlen(ua) > 255)
        return rx_req_sprintf(req, "%.255s", ua);
    return ua;
}

bool auth_redis_failed(rx_req *req, int err, const rx_redis_reply *r)
{
    if (err != 0) {
        rx_reply_unavailable(req, 0);
        return true;
    }
    if (rx_redis_reply_type(r) == RX_REDIS_ERROR) {
        size_t n;
        const char *s = rx_redis_reply_str(r, &n);
        rx_log(auth_mod, RX_LOG_ERROR, "redis error: %.*s", (int)n, s ? s : "");
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return true;
    }
    return false;
}

typedef struct limit_state {
    const char *code, *detail;
} limit_state;

static void limited(rx_req *req, int err, const rx_ratelimit_result *res)
{
    auth_ctx *c = auth_ctx_get(req);
    limit_state *ls = c->extra;
    if (err != 0) {
        rx_reply_unavailable(req, 0);
        return;
    }
    if (!res->allowed) {
        rx_reply_throttled(req, res->retry_after_s > 0 ? res->retry_after_s : 1, ls->code,
                           ls->detail);
        return;
    }
    c->extra = NULL;
    c->next(req);
}

void auth_limit(rx_req *req, const char *key, long long limit, int window_s, const char *code,
                const char *detail, rx_handler next)
{
    auth_ctx *c = auth_ctx_get(req);
    limit_state *ls = rx_req_alloc(req, sizeof *ls);
    ls->code = code;
    ls->detail = detail;
    c->extra = ls;
    c->next = next;
    int rc = rx_ratelimit(req, key, (int)limit, window_s, limited);
    if (rc != 0)
        rx_reply_unavailable(req, 0);
}

void auth_limit_ip(rx_req *req, const char *what, long long per_min, rx_handler next)
{
    auth_limit(req, rx_req_sprintf(req, "auth:%s:ip:%s", what, auth_ip(req)), per_min, 60, NULL,
               NULL, next);
}

/* Every 401 carries the Bearer challenge (API.md), also those a handler
 * writes itself (login, refresh) rather than the kernel. */
void auth_reply_401(rx_req *req, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rx_reply_header(req, "WWW-Authenticate", "Bearer realm=\"api\"");
    rx_reply_error(req, 401, code, "%s", msg);
}
