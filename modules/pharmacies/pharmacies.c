/*
 * pharmacies.c — the pharmacies module: configuration, registration, and the
 * five DRF viewset routes of the connector's Pharmacy (API.md, "Connector").
 *
 * Who may see or change which pharmacy is decided twice, deliberately apart:
 * the route permission by rbac's authorize hook, the rows by the scope it
 * sets (rx_scope_pharmacy), applied in every WHERE clause, so a foreign id
 * is simply not found (404, never 403).
 *
 * Configuration (section [pharmacies]; also RXD_PHARMACIES_<KEY>):
 *   apikey_pepper        secret key of the API keys' stored hash (default: derived
 *                        from jwt.secret — set it explicitly in production, or
 *                        rotating jwt.secret invalidates every API key)
 *   apikey_cache_ttl_ms  how long a worker trusts a key lookup (default 30000);
 *                        also the longest a `rxd apikey revoke` takes to bite
 *   apikey_negative_ttl_ms  how long an unknown key prefix is remembered (default 5000)
 *   apikey_touch_interval_ms  last_used_at is written at most this often per key
 *                        per worker (default 60000)
 */
#include "pharmacies.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

pharm_config pharm_cfg;
rx_module *pharm_mod;

extern const rx_migration pharmacies_migrations[];

#define PHARM_COLS                                                                                 \
    "id, name, webhook_url, is_active, address, phone, license_number, created_at, updated_at"

static const char pharmacy_schema[] =
    "{\"type\":\"object\",\"required\":[\"name\"],\"properties\":{"
    "\"id\":{\"type\":\"integer\",\"readOnly\":true},"
    "\"name\":{\"type\":\"string\",\"maxLength\":255},"
    "\"webhook_url\":{\"type\":[\"string\",\"null\"],\"format\":\"uri\",\"maxLength\":255},"
    "\"is_active\":{\"type\":\"boolean\",\"default\":true},"
    "\"address\":{\"type\":\"string\",\"maxLength\":255},"
    "\"phone\":{\"type\":\"string\",\"maxLength\":32},"
    "\"license_number\":{\"type\":\"string\",\"maxLength\":100,"
    "\"description\":\"DGDA drug licence number\"},"
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\",\"readOnly\":true},"
    "\"updated_at\":{\"type\":\"string\",\"format\":\"date-time\",\"readOnly\":true}}}";

/* ---- validation (DRF's messages, word for word) ---- */

static void add_err(json_t *errs, const char *field, const char *msg)
{
    json_t *list = json_object_get(errs, field);
    if (list == NULL) {
        list = json_array();
        json_object_set_new(errs, field, list);
    }
    json_array_append_new(list, json_string(msg));
}

/* Length in characters, as Django counts them (code points, not bytes). */
static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

static bool host_label_ok(const char *s, size_t n)
{
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '-' || c >= 0x80))
            return false;
    }
    return true;
}

/* An http(s) URL the way Django's URLValidator sees it: a scheme, a host that
 * is localhost, an IPv4 or [IPv6] literal or a dotted name with a TLD, an
 * optional port, then anything without whitespace. Reachability (SSRF) is
 * checked when a delivery connects, not here (DESIGN.md §6). */
bool pharm_valid_url(const char *u)
{
    const char *p;
    if (strncasecmp(u, "http://", 7) == 0)
        p = u + 7;
    else if (strncasecmp(u, "https://", 8) == 0)
        p = u + 8;
    else
        return false;
    for (const char *q = u; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f)
            return false;
    size_t alen = strcspn(p, "/?#");
    const char *end = p + alen;
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    const char *host = at ? at + 1 : p;
    const char *hend = end;
    if (host < end && *host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (rb == NULL || rb - host < 3)
            return false;
        for (const char *q = host + 1; q < rb; q++)
            if (!(isxdigit((unsigned char)*q) || *q == ':' || *q == '.'))
                return false;
        hend = rb + 1;
        if (hend < end && *hend != ':')
            return false;
    } else {
        const char *colon = memchr(host, ':', (size_t)(end - host));
        if (colon != NULL)
            hend = colon;
    }
    if (hend < end) { /* port */
        const char *d = hend + 1;
        if (d == end || end - d > 5)
            return false;
        for (; d < end; d++)
            if (!isdigit((unsigned char)*d))
                return false;
    }
    size_t hlen = (size_t)(hend - host);
    if (hlen == 0)
        return false;
    if (*host == '[')
        return true;
    if (hlen == 9 && strncasecmp(host, "localhost", 9) == 0)
        return true;
    /* a trailing dot (fully qualified) is fine */
    if (host[hlen - 1] == '.')
        hlen--;
    bool all_digits = true;
    int labels = 0;
    const char *last = host;
    size_t lastlen = 0;
    for (const char *s = host; s <= host + hlen;) {
        const char *dot = memchr(s, '.', (size_t)(host + hlen - s));
        size_t n = dot ? (size_t)(dot - s) : (size_t)(host + hlen - s);
        if (!host_label_ok(s, n))
            return false;
        for (size_t i = 0; i < n; i++)
            if (!isdigit((unsigned char)s[i]))
                all_digits = false;
        labels++;
        last = s;
        lastlen = n;
        if (dot == NULL)
            break;
        s = dot + 1;
    }
    if (all_digits) { /* IPv4: four numbers 0..255 */
        if (labels != 4)
            return false;
        for (const char *s = host; s < host + hlen;) {
            long v = strtol(s, NULL, 10);
            if (v > 255)
                return false;
            const char *dot = memchr(s, '.', (size_t)(host + hlen - s));
            if (dot == NULL)
                break;
            s = dot + 1;
        }
        return true;
    }
    if (labels < 2 || lastlen < 2)
        return false;
    /* the TLD is letters (or an IDN "xn--" label) */
    if (strncasecmp(last, "xn--", 4) == 0)
        return true;
    for (size_t i = 0; i < lastlen; i++)
        if (isdigit((unsigned char)last[i]) || last[i] == '-')
            return false;
    return true;
}

/* What a create or update body says; NULL / -1 = absent. */
typedef struct pharm_in {
    const char *name, *url, *address, *phone, *license;
    bool has_url; /* webhook_url given (url NULL then means "set null") */
    int is_active;
} pharm_in;

/* A CharField: strings, and numbers as DRF turns them into text. */
static const char *char_field(rx_req *req, json_t *body, const char *field, size_t maxlen,
                              bool required, bool allow_null, bool allow_blank, json_t *errs,
                              bool *present)
{
    json_t *v = json_object_get(body, field);
    *present = v != NULL;
    if (v == NULL) {
        if (required)
            add_err(errs, field, "This field is required.");
        return NULL;
    }
    if (json_is_null(v)) {
        if (!allow_null)
            add_err(errs, field, "This field may not be null.");
        return NULL;
    }
    const char *s;
    if (json_is_string(v))
        s = json_string_value(v);
    else if (json_is_integer(v))
        s = rx_req_sprintf(req, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        s = rx_req_sprintf(req, "%g", json_real_value(v));
    else {
        add_err(errs, field, "Not a valid string.");
        return NULL;
    }
    if (s == NULL)
        return NULL;
    /* DRF trims surrounding whitespace before checking. */
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    char *t = rx_req_alloc(req, n + 1);
    if (t == NULL)
        return NULL;
    memcpy(t, s, n);
    if (n == 0 && !allow_blank) {
        add_err(errs, field, "This field may not be blank.");
        return NULL;
    }
    if (utf8_len(t) > maxlen) {
        char msg[80];
        snprintf(msg, sizeof msg, "Ensure this field has no more than %zu characters.", maxlen);
        add_err(errs, field, msg);
        return NULL;
    }
    return t;
}

static int bool_field(json_t *body, const char *field, json_t *errs)
{
    json_t *v = json_object_get(body, field);
    if (v == NULL)
        return -1;
    if (json_is_boolean(v))
        return json_is_true(v);
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
        return (int)json_integer_value(v);
    if (json_is_string(v)) {
        static const char *const t[] = {"true", "True", "TRUE", "1",  "yes", "Yes", "YES",
                                        "y",    "Y",    "on",   "On", "ON",  "t",   "T"};
        static const char *const f[] = {"false", "False", "FALSE", "0",   "no",  "No", "NO",
                                        "n",     "N",     "off",   "Off", "OFF", "f",  "F"};
        for (size_t i = 0; i < sizeof t / sizeof *t; i++)
            if (strcmp(json_string_value(v), t[i]) == 0)
                return 1;
        for (size_t i = 0; i < sizeof f / sizeof *f; i++)
            if (strcmp(json_string_value(v), f[i]) == 0)
                return 0;
    }
    add_err(errs, field,
            json_is_null(v) ? "This field may not be null." : "Must be a valid boolean.");
    return -2;
}

/* Parse a body; full = create or PUT (name required). Replies 400 itself and
 * returns -1 when something is wrong. Unknown and read-only fields are ignored. */
static int read_body(rx_req *req, bool full, pharm_in *in)
{
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return -1;
    json_t *errs = json_object();
    bool present;
    memset(in, 0, sizeof *in);
    in->name = char_field(req, body, "name", 255, full, false, false, errs, &present);
    const char *url = char_field(req, body, "webhook_url", 255, false, true, true, errs, &present);
    in->has_url = present;
    if (url != NULL && *url != '\0') {
        if (!pharm_valid_url(url) && json_object_get(errs, "webhook_url") == NULL)
            add_err(errs, "webhook_url", "Enter a valid URL.");
        in->url = url;
    }
    in->is_active = bool_field(body, "is_active", errs);
    in->address = char_field(req, body, "address", 255, false, true, true, errs, &present);
    if (present && in->address == NULL)
        in->address = "";
    in->phone = char_field(req, body, "phone", 32, false, true, true, errs, &present);
    if (present && in->phone == NULL)
        in->phone = "";
    in->license = char_field(req, body, "license_number", 100, false, true, true, errs, &present);
    if (present && in->license == NULL)
        in->license = "";
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return -1;
    }
    json_decref(errs);
    return 0;
}

static void reply_not_found(rx_req *req)
{
    rx_reply_error(req, 404, "not_found", "Not found.");
}

static rx_param bool_param(int v)
{
    return v < 0 ? RX_NULL : RX_BOOL(v != 0);
}

/* ---- list ---- */

static void pharm_list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    /* django-filter's BooleanWidget: anything but true/false/1/0 means no filter. */
    int active = -1;
    const char *a = rx_req_query(req, "is_active");
    if (a != NULL) {
        if (strcasecmp(a, "true") == 0 || strcmp(a, "1") == 0)
            active = 1;
        else if (strcasecmp(a, "false") == 0 || strcmp(a, "0") == 0)
            active = 0;
    }
    const char *search = rx_req_query(req, "search");
    if (search != NULL && *search == '\0')
        search = NULL;
    /* ?ordering=a,b: the first term decides, id breaks ties; unknown terms
     * fall back to id, as DRF's OrderingFilter ignores invalid fields. */
    static const rx_ordering orderings[] = {
        {"name", "name ASC, id ASC"},
        {"-name", "name DESC, id ASC"},
        {"created_at", "created_at ASC, id ASC"},
        {"-created_at", "created_at DESC, id ASC"},
        {"-id", "id DESC"},
    };
    rx_list *l = rx_list_new(req, PHARM_COLS, "pharmacies");
    int64_t scope = rx_scope_pharmacy(req);
    if (scope != RX_SCOPE_ALL)
        rx_list_where(l, "id = $?", RX_INT(scope));
    if (active >= 0)
        rx_list_where(l, "is_active = $?", RX_BOOL(active == 1));
    if (search != NULL)
        rx_list_where(l, "strpos(lower(name), lower($?::text)) > 0", RX_TEXT(search));
    rx_list_order(l, orderings, sizeof(orderings) / sizeof(orderings[0]), "id ASC");
    if (rx_list_run(l, rx_reply_rows_page, limit, offset) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

/* ---- one row back ---- */

static void one_done(rx_req *req, rx_rows *rows, int status)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        reply_not_found(req);
        return;
    }
    rx_reply_json(req, status, rx_rows_object(rows, 0));
}

static void created_done(rx_req *req, rx_rows *rows)
{
    one_done(req, rows, 201);
}

static void ok_done(rx_req *req, rx_rows *rows)
{
    one_done(req, rows, 200);
}

static void pharm_create(rx_req *req)
{
    pharm_in in;
    if (read_body(req, true, &in) != 0)
        return;
    if (rx_db(
            req, created_done,
            "INSERT INTO pharmacies (name, webhook_url, is_active, address, phone, license_number)"
            " VALUES ($1, $2, COALESCE($3, true), COALESCE($4, ''), COALESCE($5, ''),"
            "         COALESCE($6, '')) RETURNING " PHARM_COLS,
            RX_TEXT(in.name), RX_TEXT(in.url), bool_param(in.is_active), RX_TEXT(in.address),
            RX_TEXT(in.phone), RX_TEXT(in.license)) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static void pharm_get(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        reply_not_found(req);
        return;
    }
    if (rx_db(req, ok_done,
              "SELECT " PHARM_COLS " FROM pharmacies WHERE id = $1 AND ($2::bigint = 0 OR id = $2)",
              RX_INT(id), RX_INT(rx_scope_pharmacy(req))) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static void updated_done(rx_req *req, rx_rows *rows)
{
    /* Deactivation must stop the pharmacy's keys at once, everywhere;
     * reactivation must not wait for a cached refusal to expire. */
    if (!rx_rows_failed(rows) && rx_rows_count(rows) == 1 && rx_req_data(req) != NULL) {
        const char *id = rx_rows_text(rows, 0, rx_rows_column(rows, "id"));
        pharm_invalidate(req, rx_req_sprintf(req, "p:%s", id ? id : "0"));
    }
    one_done(req, rows, 200);
}

static void pharm_update(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        reply_not_found(req);
        return;
    }
    pharm_in in;
    if (read_body(req, rx_req_method(req) == RX_PUT, &in) != 0)
        return;
    /* rx_req_data flags "is_active was sent" for updated_done. */
    rx_req_set_data(req, in.is_active >= 0 ? (void *)req : NULL);
    if (rx_db(req, updated_done,
              "UPDATE pharmacies SET name = COALESCE($3, name),"
              "  webhook_url = CASE WHEN $4 THEN $5 ELSE webhook_url END,"
              "  is_active = COALESCE($6, is_active),"
              "  address = COALESCE($7, address), phone = COALESCE($8, phone),"
              "  license_number = COALESCE($9, license_number), updated_at = now()"
              " WHERE id = $1 AND ($2::bigint = 0 OR id = $2) RETURNING " PHARM_COLS,
              RX_INT(id), RX_INT(rx_scope_pharmacy(req)), RX_TEXT(in.name), RX_BOOL(in.has_url),
              RX_TEXT(in.url), bool_param(in.is_active), RX_TEXT(in.address), RX_TEXT(in.phone),
              RX_TEXT(in.license)) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static void deleted_done(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        reply_not_found(req);
        return;
    }
    const char *id = rx_rows_text(rows, 0, 0);
    pharm_invalidate(req, rx_req_sprintf(req, "p:%s", id ? id : "0"));
    rx_reply(req, 204, NULL, NULL, 0);
}

static void pharm_delete(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        reply_not_found(req);
        return;
    }
    if (rx_db(req, deleted_done,
              "DELETE FROM pharmacies WHERE id = $1 AND ($2::bigint = 0 OR id = $2) RETURNING id",
              RX_INT(id), RX_INT(rx_scope_pharmacy(req))) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

/* ---- module ---- */

static long long cfg_ms(rx_module *m, const char *key, long long def, int *bad)
{
    long long v = def;
    if (rx_config_int(m, key, def, &v) != 0 || v < 0) {
        rx_module_fail(m, "pharmacies.%s: not a non-negative integer", key);
        *bad = 1;
    }
    return v;
}

static int read_config(rx_module *m)
{
    int bad = 0;
    pharm_cfg.cache_ttl_ms = cfg_ms(m, "apikey_cache_ttl_ms", 30000, &bad);
    pharm_cfg.negative_ttl_ms = cfg_ms(m, "apikey_negative_ttl_ms", 5000, &bad);
    pharm_cfg.touch_interval_ms = cfg_ms(m, "apikey_touch_interval_ms", 60000, &bad);
    if (bad)
        return -1;
    const char *pepper = rx_config_str(m, "apikey_pepper", NULL);
    if (pepper != NULL && *pepper != '\0') {
        crypto_generichash(pharm_cfg.pepper, sizeof pharm_cfg.pepper, (const unsigned char *)pepper,
                           strlen(pepper), NULL, 0);
        return 0;
    }
    const char *secret = rx_config_str(NULL, "jwt.secret", NULL);
    if (secret == NULL || strlen(secret) < 32) {
        rx_module_fail(m, "pharmacies.apikey_pepper is unset and jwt.secret is missing or "
                          "shorter than 32 bytes: API keys need a server secret");
        return -1;
    }
    /* A domain-separated derivation: the pepper never equals the JWT key. */
    static const char label[] = "rxd-apikey-pepper-v1";
    crypto_generichash(pharm_cfg.pepper, sizeof pharm_cfg.pepper, (const unsigned char *)secret,
                       strlen(secret), (const unsigned char *)label, sizeof label - 1);
    return 0;
}

static int init(rx_module *m)
{
    pharm_mod = m;
    if (sodium_init() < 0) {
        rx_module_fail(m, "libsodium failed to initialise");
        return -1;
    }
    if (read_config(m) != 0)
        return -1;
    int rc = 0;
    rc |= rx_schema(m, "Pharmacy", pharmacy_schema);
#define ROUTE(meth, path, fn, permission, sum, reqs, resps, st)                                    \
    do {                                                                                           \
        rx_route_opts o = {.perm = permission,                                                     \
                           .list_style = RX_LIST_ARRAY,                                            \
                           .tag = "pharmacies",                                                    \
                           .summary = sum,                                                         \
                           .request_schema = reqs,                                                 \
                           .response_schema = resps,                                               \
                           .success_status = st};                                                  \
        rc |= rx_route(m, meth, path, fn, &o);                                                     \
    } while (0)
    ROUTE(RX_GET, "/api/pharmacies/", pharm_list, "pharmacies.view",
          "List pharmacies (?is_active=, ?search=, ?ordering=name|created_at|id)", NULL,
          "[]Pharmacy", 200);
    ROUTE(RX_POST, "/api/pharmacies/", pharm_create, "pharmacies.manage", "Create a pharmacy",
          "Pharmacy", "Pharmacy", 201);
    ROUTE(RX_GET, "/api/pharmacies/{id}/", pharm_get, "pharmacies.view", "A pharmacy", NULL,
          "Pharmacy", 200);
    ROUTE(RX_PUT | RX_PATCH, "/api/pharmacies/{id}/", pharm_update, "pharmacies.update",
          "Update a pharmacy (PUT needs name; PATCH is partial)", "Pharmacy", "Pharmacy", 200);
    ROUTE(RX_DELETE, "/api/pharmacies/{id}/", pharm_delete, "pharmacies.manage",
          "Delete a pharmacy (its API keys stop working at once)", NULL, NULL, 204);
#undef ROUTE
    rc |= pharm_apikeys_init(m);
    rc |= rx_migrations(m, pharmacies_migrations);
    rc |= rx_command(m, "apikey", pharm_cli_apikey,
                     "apikey create --pharmacy ID [--name N] | list --pharmacy ID | revoke KEY_ID");
    if (rc != 0) {
        rx_module_fail(m, "registration failed");
        return -1;
    }
    return 0;
}

static void stop(rx_module *m)
{
    (void)m;
    pharm_apikeys_stop();
    sodium_memzero(pharm_cfg.pepper, sizeof pharm_cfg.pepper);
}

RX_MODULE("pharmacies", "1.0.0", .requires = RX_REQUIRES("auth", "rbac"), .init = init,
          .stop = stop, .summary = "pharmacies and their API keys (X-API-KEY)");
