/*
 * req.c — the SDK's view of a request (rx_req_* accessors) and its reply
 * (rx_reply_*): DRF-shaped errors, pages with X-Total-Count and Link, JSON
 * bodies with API.md's rules, and the serialisation of the status line and
 * headers every reply carries (Server, Date, X-Request-Id, nosniff, CORS).
 */
#include "kn_http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

uint64_t kn_now_ns(void)
{
    return uv_hrtime();
}

/* ---- accessors ---- */

rx_method rx_req_method(const rx_req *req)
{
    return (rx_method)req->method;
}

const char *rx_req_method_name(const rx_req *req)
{
    return req->method_name;
}

const char *rx_req_path(const rx_req *req)
{
    rx_req *r = (rx_req *)req;
    if (r->path_decoded == NULL) {
        /* Routing matched the raw path; modules see it decoded. */
        char *d = kn_arena_strndup(&r->arena, r->path, strlen(r->path));
        long n = d ? kn_url_decode(d, strlen(d), false) : -1;
        if (n < 0)
            return r->path; /* a bad escape: the raw text is the honest answer */
        d[n] = '\0';
        r->path_decoded = d;
    }
    return r->path_decoded;
}

const char *rx_req_route(const rx_req *req)
{
    return req->route ? req->route->path : NULL;
}

void *rx_req_route_data(const rx_req *req)
{
    return req->route ? req->route->opts.data : NULL;
}

const char *rx_req_id(const rx_req *req)
{
    return req->id;
}

const char *rx_req_perm(const rx_req *req)
{
    return req->route ? req->route->opts.perm : NULL;
}

unsigned rx_req_auth_kinds(const rx_req *req)
{
    return req->route ? req->route->opts.auth : 0;
}

const rx_principal *rx_req_principal(const rx_req *req)
{
    return &req->principal;
}

void *rx_req_alloc(rx_req *req, size_t size)
{
    return kn_arena_alloc(&req->arena, size);
}

char *rx_req_strdup(rx_req *req, const char *s)
{
    return s ? kn_arena_strndup(&req->arena, s, strlen(s)) : NULL;
}

static char *vsprintf_arena(rx_req *req, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NULL;
    char *p = kn_arena_alloc(&req->arena, (size_t)n + 1);
    if (p != NULL)
        vsnprintf(p, (size_t)n + 1, fmt, ap);
    return p;
}

char *rx_req_sprintf(rx_req *req, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p = vsprintf_arena(req, fmt, ap);
    va_end(ap);
    return p;
}

void rx_req_set_data(rx_req *req, void *data)
{
    req->data = data;
}

void *rx_req_data(const rx_req *req)
{
    return req->data;
}

const char *rx_req_param(const rx_req *req, const char *name)
{
    rx_req *r = (rx_req *)req;
    for (int i = 0; i < r->match.nparams; i++) {
        if (strcmp(r->match.params[i].name, name) != 0)
            continue;
        if (r->params_decoded == NULL)
            r->params_decoded = kn_arena_alloc(&r->arena, sizeof(char *) * KN_MAX_PARAMS);
        if (r->params_decoded == NULL)
            return NULL;
        if (r->params_decoded[i] == NULL) {
            char *v = kn_arena_strndup(&r->arena, r->match.params[i].value, r->match.params[i].len);
            if (v == NULL)
                return NULL;
            long n = kn_url_decode(v, strlen(v), false);
            if (n < 0)
                return NULL;
            v[n] = '\0';
            r->params_decoded[i] = v;
        }
        return r->params_decoded[i];
    }
    return NULL;
}

int rx_req_param_id(const rx_req *req, const char *name, int64_t *out)
{
    const char *v = rx_req_param(req, name);
    if (v == NULL)
        return RX_ENOENT;
    if (*v == '\0' || strlen(v) > 19)
        return RX_ERANGE;
    int64_t n = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return RX_ERANGE;
        if (n > (INT64_MAX - (*p - '0')) / 10)
            return RX_ERANGE;
        n = n * 10 + (*p - '0');
    }
    if (n < 1)
        return RX_ERANGE;
    *out = n;
    return 0;
}

const char *rx_req_query_string(const rx_req *req)
{
    return req->query ? req->query : "";
}

const char *rx_req_query(const rx_req *req, const char *name)
{
    const char *q = rx_req_query_string(req);
    size_t nlen = strlen(name);
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        /* Names are compared decoded: copy and decode the key. */
        char kbuf[128];
        if (klen < sizeof(kbuf)) {
            memcpy(kbuf, q, klen);
            long kl = kn_url_decode(kbuf, klen, true);
            if (kl >= 0 && (size_t)kl == nlen && memcmp(kbuf, name, nlen) == 0) {
                const char *vs = eq ? eq + 1 : q + len;
                size_t vl = (size_t)(q + len - vs);
                char *v = kn_arena_strndup(&((rx_req *)req)->arena, vs, vl);
                if (v == NULL)
                    return NULL;
                long n = kn_url_decode(v, vl, true);
                if (n < 0)
                    return NULL;
                v[n] = '\0';
                return v;
            }
        }
        q += len;
        if (*q == '&')
            q++;
    }
    return NULL;
}

const char *rx_req_header(const rx_req *req, const char *name)
{
    const char *found = NULL;
    char *joined = NULL;
    for (size_t i = 0; i < req->nhdrs; i++) {
        if (strcasecmp(req->hdrs[i].name, name) != 0)
            continue;
        const char *v = req->hdrs[i].value ? req->hdrs[i].value : "";
        if (found == NULL) {
            found = v;
        } else {
            joined = rx_req_sprintf((rx_req *)req, "%s, %s", joined ? joined : found, v);
        }
    }
    return joined ? joined : found;
}

const char *rx_req_body(const rx_req *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body ? req->body : "";
}

static int json_depth(json_t *j, int depth, int max)
{
    if (depth > max)
        return depth;
    int deepest = depth;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            int d = json_depth(v, depth + 1, max);
            if (d > deepest)
                deepest = d;
            if (deepest > max)
                break;
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            int d = json_depth(v, depth + 1, max);
            if (d > deepest)
                deepest = d;
            if (deepest > max)
                break;
        }
    }
    return deepest;
}

static bool is_json_type(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    if (strncasecmp(ct, "application/json", n) != 0)
        return false;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

json_t *rx_req_json(rx_req *req)
{
    if (req->json_done)
        return req->json;
    if (req->body_len == 0 && !req->chunked) {
        /* API.md: a POST with no body at all reads as {} whatever its headers. */
        req->json = json_object();
        req->json_done = true;
        return req->json;
    }
    const char *ct = rx_req_header(req, "content-type");
    if (!is_json_type(ct)) {
        rx_reply_error(req, 415, "unsupported_media_type", "Unsupported media type \"%s\" in request.",
                       ct ? ct : "");
        return NULL;
    }
    if (req->body_len == 0) {
        req->json = json_object();
        req->json_done = true;
        return req->json;
    }
    json_error_t e;
    json_t *j = json_loadb(req->body, req->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (j == NULL) {
        rx_reply_error(req, 400, "parse_error", "JSON parse error - %s", e.text);
        return NULL;
    }
    if (json_depth(j, 1, (int)kn_set.json_depth) > kn_set.json_depth) {
        json_decref(j);
        rx_reply_error(req, 400, "parse_error", "JSON parse error - nesting deeper than %lld",
                       kn_set.json_depth);
        return NULL;
    }
    req->json = j;
    req->json_done = true;
    return j;
}

/* Python's name of a JSON value's type, as DRF's messages print it. */
static const char *py_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "dict";
    case JSON_ARRAY: return "list";
    case JSON_STRING: return "str";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_TRUE:
    case JSON_FALSE: return "bool";
    default: return "NoneType";
    }
}

json_t *rx_req_json_object(rx_req *req)
{
    json_t *body = rx_req_json(req);
    if (body == NULL || json_is_object(body))
        return body;
    rx_reply_invalid_field(req, "non_field_errors",
                           "Invalid data. Expected a dictionary, but got %s.", py_type(body));
    return NULL;
}

static bool ip_trusted(const char *ip)
{
    for (size_t i = 0; i < kn_set.ntrusted_proxies; i++)
        if (strcmp(kn_set.trusted_proxies[i], ip) == 0)
            return true;
    return false;
}

const char *rx_req_client_ip(const rx_req *req)
{
    const char *peer = req->conn ? req->conn->peer : "";
    if (kn_set.ntrusted_proxies == 0 || !ip_trusted(peer))
        return peer;
    const char *xff = rx_req_header(req, "x-forwarded-for");
    if (xff == NULL)
        return peer;
    /* Walk from the right: the first hop we do not trust is the client. */
    char *copy = rx_req_strdup((rx_req *)req, xff);
    if (copy == NULL)
        return peer;
    char *end = copy + strlen(copy);
    while (end > copy) {
        char *comma = end;
        while (comma > copy && comma[-1] != ',')
            comma--;
        char *s = comma;
        while (*s == ' ' || *s == '\t')
            s++;
        char *e = end;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        *e = '\0';
        if (*s != '\0' && !ip_trusted(s))
            return s;
        end = comma > copy ? comma - 1 : copy;
        if (comma == copy)
            break;
    }
    return peer;
}

void rx_req_set_scope(rx_req *req, int64_t pharmacy_id, int64_t user_id)
{
    req->scoped = true;
    req->scope_pharmacy = pharmacy_id;
    req->scope_user = user_id;
}

int64_t rx_scope_pharmacy(const rx_req *req)
{
    return req->scoped ? req->scope_pharmacy : RX_SCOPE_NONE;
}

int64_t rx_scope_user(const rx_req *req)
{
    return req->scoped ? req->scope_user : RX_SCOPE_NONE;
}

void rx_req_set_principal(rx_req *req, const rx_principal *p)
{
    req->principal = *p;
    req->principal.role = rx_req_strdup(req, p->role);
    req->principal.subject = rx_req_strdup(req, p->subject);
    req->principal.token_id = rx_req_strdup(req, p->token_id);
}

void rx_auth_fail(rx_req *req, int status, const char *code, const char *detail)
{
    req->fail_status = status;
    req->fail_code = rx_req_strdup(req, code);
    req->fail_detail = rx_req_strdup(req, detail);
}

/* ---- replies ---- */

const char *kn_status_text(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

void kn_reply_header_raw(rx_req *req, const char *name, const char *value)
{
    if (req->nrhdrs == req->rhdrs_cap) {
        size_t nc = req->rhdrs_cap ? req->rhdrs_cap * 2 : 8;
        kn_header *nh = kn_arena_realloc(&req->arena, req->rhdrs, req->rhdrs_cap * sizeof(kn_header),
                                         nc * sizeof(kn_header));
        if (nh == NULL)
            return;
        req->rhdrs = nh;
        req->rhdrs_cap = nc;
    }
    kn_header *h = &req->rhdrs[req->nrhdrs++];
    h->name = rx_req_strdup(req, name);
    h->value = rx_req_strdup(req, value);
    h->nlen = strlen(name);
    h->vlen = strlen(value);
}

static bool header_value_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return false;
    return true;
}

int rx_reply_header(rx_req *req, const char *name, const char *value)
{
    static const char *reserved[] = {"content-length", "date", "server", "connection",
                                     "transfer-encoding", NULL};
    if (req->replied)
        return RX_ESTATE;
    if (name == NULL || value == NULL || *name == '\0' || !header_value_ok(name) ||
        !header_value_ok(value) || strchr(name, ':') != NULL)
        return RX_EINVAL;
    for (int i = 0; reserved[i]; i++)
        if (strcasecmp(reserved[i], name) == 0)
            return RX_EINVAL;
    kn_reply_header_raw(req, name, value);
    return 0;
}

static const char *http_date(kn_worker *w)
{
    time_t now = time(NULL);
    if (now != w->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_at = now;
    }
    return w->date;
}

static void add_cors(rx_req *req)
{
    if (kn_set.ncors_origins == 0)
        return;
    const char *origin = rx_req_header(req, "origin");
    if (origin == NULL)
        return;
    bool any = false, listed = false;
    for (size_t i = 0; i < kn_set.ncors_origins; i++) {
        if (strcmp(kn_set.cors_origins[i], "*") == 0)
            any = true;
        else if (strcmp(kn_set.cors_origins[i], origin) == 0)
            listed = true;
    }
    if (!any && !listed)
        return;
    /* "*" is never combined with credentials: echo the origin instead. */
    kn_reply_header_raw(req, "Access-Control-Allow-Origin",
                        (any && !listed && !kn_set.cors_credentials) ? "*" : origin);
    kn_reply_header_raw(req, "Vary", "Origin");
    if (kn_set.cors_credentials)
        kn_reply_header_raw(req, "Access-Control-Allow-Credentials", "true");
    if (kn_set.cors_expose_headers && *kn_set.cors_expose_headers)
        kn_reply_header_raw(req, "Access-Control-Expose-Headers", kn_set.cors_expose_headers);
}

static void access_log(rx_req *req, uint64_t dur_us)
{
    if (!kn_set.access_log)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tsb[64];
    snprintf(tsb, sizeof(tsb), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    const char *ua = rx_req_header(req, "user-agent");
    /* The path without its query string; never credentials or bodies. */
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:i, s:I, s:f, s:s, s:s?}", "ts",
                          tsb, "level", "info", "type", "access", "rid", req->id ? req->id : "-",
                          "method", req->method_name ? req->method_name : "-", "path",
                          req->path ? req->path : "-", "route",
                          req->route ? req->route->path : NULL, "status", req->status, "bytes",
                          (json_int_t)req->rbody_len, "dur_ms", (double)dur_us / 1000.0, "ip",
                          rx_req_client_ip(req), "ua", ua);
    if (o == NULL)
        return;
    char buf[2048];
    size_t n = json_dumpb(o, buf, sizeof(buf),
                          JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (n > 0 && n <= sizeof(buf)) {
        kn_log_line(buf, n);
    } else {
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        if (s) {
            kn_log_line(s, strlen(s));
            free(s);
        }
    }
    json_decref(o);
}

/* Serialise and send. The body is already in req->rbody. */
static void commit(rx_req *req, int status, const char *content_type)
{
    req->status = status;
    for (size_t i = 0; i < kn_reg.hooks_response.n; i++) {
        kn_hook *h = &kn_reg.hooks_response.v[i];
        h->u.resp(req, status, h->data);
    }
    add_cors(req);
    if (req->w != NULL && req->w->draining)
        req->close_after = true;
    bool close = req->close_after || !req->keep_alive;
    bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
    size_t cap = 256 + (content_type ? strlen(content_type) : 0) + (req->id ? strlen(req->id) : 0);
    for (size_t i = 0; i < req->nrhdrs; i++)
        cap += req->rhdrs[i].nlen + req->rhdrs[i].vlen + 4;
    char *h = kn_arena_alloc(&req->arena, cap);
    if (h == NULL) {
        req->rhead = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        req->rhead_len = strlen(req->rhead);
        req->close_after = true;
    } else {
        int n = snprintf(h, cap, "HTTP/1.1 %d %s\r\nServer: rxd\r\nDate: %s\r\n", status,
                         kn_status_text(status), http_date(req->w));
        size_t off = (size_t)n;
        if (!no_body) {
            if (content_type != NULL)
                off += (size_t)snprintf(h + off, cap - off, "Content-Type: %s\r\n", content_type);
            off += (size_t)snprintf(h + off, cap - off, "Content-Length: %zu\r\n", req->rbody_len);
        }
        if (req->id)
            off += (size_t)snprintf(h + off, cap - off, "X-Request-Id: %s\r\n", req->id);
        off += (size_t)snprintf(h + off, cap - off, "X-Content-Type-Options: nosniff\r\n");
        for (size_t i = 0; i < req->nrhdrs; i++)
            off += (size_t)snprintf(h + off, cap - off, "%s: %s\r\n", req->rhdrs[i].name,
                                    req->rhdrs[i].value);
        if (close)
            off += (size_t)snprintf(h + off, cap - off, "Connection: close\r\n");
        else if (req->conn && req->conn->parser.http_minor == 0)
            off += (size_t)snprintf(h + off, cap - off, "Connection: keep-alive\r\n");
        off += (size_t)snprintf(h + off, cap - off, "\r\n");
        req->rhead = h;
        req->rhead_len = off;
    }
    if (no_body || req->method == RX_HEAD) {
        /* HEAD keeps GET's Content-Length but sends no body. */
        if (req->rbody_free)
            free(req->rbody);
        req->rbody = NULL;
        req->rbody_free = false;
        req->rbody_len = 0;
    }
    uint64_t dur_us = (kn_now_ns() - req->start_ns) / 1000;
    kn_metrics_record(req->w, req->route, status, dur_us);
    access_log(req, dur_us);
    kn_http_send(req);
}

static bool begin_reply(rx_req *req)
{
    if (req->replied) {
        kn_log(RX_LOG_WARN, req->route && req->route->module ? req->route->module->desc->name : NULL,
               "second reply to %s %s ignored", req->method_name, req->path);
        return false;
    }
    req->replied = true;
    if (req->conn == NULL)
        return false; /* the client is gone: nothing to send */
    return true;
}

void rx_reply(rx_req *req, int status, const char *content_type, const void *body, size_t len)
{
    if (!begin_reply(req))
        return;
    if (len > 0) {
        req->rbody = malloc(len);
        if (req->rbody == NULL) {
            len = 0;
            status = 500;
        } else {
            memcpy(req->rbody, body, len);
            req->rbody_free = true;
        }
    }
    req->rbody_len = len;
    commit(req, status, content_type);
}

void kn_reply_static(rx_req *req, int status, const char *content_type, const void *body, size_t len)
{
    if (!begin_reply(req))
        return;
    req->rbody = (char *)body;
    req->rbody_len = len;
    req->rbody_free = false;
    commit(req, status, content_type);
}

void rx_reply_json(rx_req *req, int status, json_t *body)
{
    if (!begin_reply(req)) {
        json_decref(body);
        return;
    }
    if (body != NULL) {
        req->rbody = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        json_decref(body);
        if (req->rbody == NULL) {
            status = 500;
            req->rbody_len = 0;
        } else {
            req->rbody_len = strlen(req->rbody);
            req->rbody_free = true;
        }
    }
    commit(req, status, body ? "application/json" : NULL);
}

void rx_reply_error(rx_req *req, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char detail[1024];
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    rx_reply_json(req, status, json_pack("{s:s, s:s}", "detail", detail, "code", code));
}

void rx_reply_invalid(rx_req *req, json_t *errors)
{
    if (errors == NULL || !json_is_object(errors)) {
        json_decref(errors);
        errors = json_object();
    }
    if (json_object_get(errors, "code") == NULL)
        json_object_set_new(errors, "code", json_string("invalid"));
    rx_reply_json(req, 400, errors);
}

void rx_reply_invalid_field(rx_req *req, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rx_reply_invalid(req, json_pack("{s:[s]}", field, msg));
}

void rx_reply_unavailable(rx_req *req, int retry_after_s)
{
    char b[16];
    snprintf(b, sizeof(b), "%d", retry_after_s > 0 ? retry_after_s : 5);
    kn_reply_header_raw(req, "Retry-After", b);
    rx_reply_error(req, 503, "service_unavailable", "Service temporarily unavailable.");
}

void kn_reply_early(rx_req *req, int status, const char *code, const char *detail)
{
    if (req->method_name == NULL)
        req->method_name = "-";
    if (req->path == NULL) {
        req->path = "-";
        req->query = "";
    }
    if (req->id == NULL)
        kn_req_assign_id(req); /* the client's, when its headers arrived */
    req->close_after = true;
    rx_reply_error(req, status, code, "%s", detail);
}

/* ---- pages ---- */

static int64_t default_page_size(const rx_req *req)
{
    return req->route && req->route->opts.list_style == RX_LIST_ARRAY ? 100 : 20;
}

static bool parse_pos_int(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 18)
        return false;
    int64_t n = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s))
            return false;
        n = n * 10 + (*s - '0');
    }
    if (n < 1)
        return false;
    *out = n;
    return true;
}

static void page_params(rx_req *req, int64_t *page, int64_t *size, bool *ok)
{
    const char *p = rx_req_query(req, "page");
    const char *ps = rx_req_query(req, "page_size");
    *page = 1;
    *ok = true;
    if (p != NULL && !parse_pos_int(p, page)) {
        /* DRF also accepts "last"; nobody here sends it. */
        *ok = false;
    }
    *size = default_page_size(req);
    int64_t s;
    if (ps != NULL && parse_pos_int(ps, &s))
        *size = s > 1000 ? 1000 : s; /* DRF: max_page_size clamps, garbage means default */
}

int rx_page(rx_req *req, int64_t *limit, int64_t *offset)
{
    int64_t page, size;
    bool ok;
    page_params(req, &page, &size, &ok);
    if (!ok || page > INT64_MAX / size) {
        rx_reply_error(req, 404, "not_found", "Invalid page.");
        return RX_EINVAL;
    }
    *limit = size;
    *offset = (page - 1) * size;
    return 0;
}

/* The absolute URL of this list with page=N (DRF builds them from Host). */
static char *page_url(rx_req *req, int64_t page)
{
    const char *host = rx_req_header(req, "host");
    const char *scheme = "http";
    const char *peer = req->conn ? req->conn->peer : "";
    if (kn_set.ntrusted_proxies > 0 && ip_trusted(peer)) {
        const char *proto = rx_req_header(req, "x-forwarded-proto");
        if (proto && strcasecmp(proto, "https") == 0)
            scheme = "https";
    }
    /* Keep every other query parameter as sent; replace page. */
    const char *q = rx_req_query_string(req);
    size_t cap = strlen(q) + 32;
    char *nq = rx_req_alloc(req, cap);
    if (nq == NULL)
        return NULL;
    size_t off = 0;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        bool is_page = (len >= 5 && strncmp(q, "page=", 5) == 0) || (len == 4 && strncmp(q, "page", 4) == 0);
        if (!is_page && len > 0) {
            memcpy(nq + off, q, len);
            off += len;
            nq[off++] = '&';
        }
        q += len;
        if (*q == '&')
            q++;
    }
    if (page > 1)
        off += (size_t)snprintf(nq + off, cap - off, "page=%lld", (long long)page);
    else if (off > 0)
        off--; /* drop the trailing '&' */
    nq[off] = '\0';
    return rx_req_sprintf(req, "%s://%s%s%s%s", scheme, host ? host : "localhost", req->path,
                          off ? "?" : "", nq);
}

/* The paging part of a list reply: checks the page, adds X-Total-Count and
 * Link, and gives the next/previous URLs. false when it has replied 404. */
static bool page_begin(rx_req *req, size_t nitems, int64_t total, char **next, char **prev)
{
    int64_t page, size;
    bool ok;
    page_params(req, &page, &size, &ok);
    if (!ok || (nitems == 0 && page > 1)) {
        rx_reply_error(req, 404, "not_found", "Invalid page.");
        return false;
    }
    *next = page * size < total ? page_url(req, page + 1) : NULL;
    *prev = page > 1 ? page_url(req, page - 1) : NULL;
    char tc[24];
    snprintf(tc, sizeof(tc), "%lld", (long long)total);
    kn_reply_header_raw(req, "X-Total-Count", tc);
    if (*next || *prev) {
        char *link = rx_req_sprintf(req, "%s%s%s%s%s", *next ? "<" : "", *next ? *next : "",
                                    *next ? ">; rel=\"next\"" : "", (*next && *prev) ? ", " : "",
                                    *prev ? rx_req_sprintf(req, "<%s>; rel=\"prev\"", *prev) : "");
        if (link)
            kn_reply_header_raw(req, "Link", link);
    }
    return true;
}

static bool list_is_array(const rx_req *req)
{
    return req->route && req->route->opts.list_style == RX_LIST_ARRAY;
}

void rx_reply_page(rx_req *req, json_t *items, int64_t total)
{
    if (!json_is_array(items)) {
        json_decref(items);
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    char *next, *prev;
    if (!page_begin(req, json_array_size(items), total, &next, &prev)) {
        json_decref(items);
        return;
    }
    if (list_is_array(req)) {
        rx_reply_json(req, 200, items);
        return;
    }
    json_t *env = json_pack("{s:I, s:s?, s:s?, s:o}", "count", (json_int_t)total, "next", next,
                            "previous", prev, "results", items);
    rx_reply_json(req, 200, env);
}

void kn_reply_page_text(rx_req *req, char *array, size_t len, size_t nitems, int64_t total)
{
    char *next, *prev;
    if (!page_begin(req, nitems, total, &next, &prev)) {
        free(array);
        return;
    }
    if (!list_is_array(req)) {
        /* {"count","next","previous","results"} around the array text. */
        json_t *n = next ? json_string(next) : json_null();
        json_t *pv = prev ? json_string(prev) : json_null();
        char *ns = json_dumps(n, JSON_ENCODE_ANY), *ps = json_dumps(pv, JSON_ENCODE_ANY);
        json_decref(n);
        json_decref(pv);
        size_t cap = len + (ns ? strlen(ns) : 4) + (ps ? strlen(ps) : 4) + 96;
        char *env = malloc(cap);
        if (env == NULL || ns == NULL || ps == NULL) {
            free(env);
            free(ns);
            free(ps);
            free(array);
            rx_reply_error(req, 500, "error", "A server error occurred.");
            return;
        }
        int h = snprintf(env, cap, "{\"count\":%lld,\"next\":%s,\"previous\":%s,\"results\":",
                         (long long)total, ns, ps);
        memcpy(env + h, array, len);
        env[h + (int)len] = '}';
        free(ns);
        free(ps);
        free(array);
        array = env;
        len = (size_t)h + len + 1;
    }
    if (!begin_reply(req)) {
        free(array);
        return;
    }
    req->rbody = array;
    req->rbody_len = len;
    req->rbody_free = true;
    commit(req, 200, "application/json");
}