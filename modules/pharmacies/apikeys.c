/*
 * apikeys.c — pharmacy API keys: the create/list/revoke routes, the
 * authenticate hook for X-API-KEY, and the per-worker lookup cache.
 *
 * A key is "rxk_" + 32 random bytes in base64url. Only a keyed BLAKE2b hash
 * (pepper from config) is stored, with the 8 characters after "rxk_" as a
 * prefix that finds the row and names the key in lists and logs.
 *
 * Lookups must not cost a database round trip per request (DESIGN.md §4:
 * key routes never touch Redis per request either). Each worker keeps
 * prefix -> {hash, key id, pharmacy id, active, expiry}: a hit compares the
 * presented key's hash in constant time and answers without I/O; a miss is
 * one query. Unknown prefixes are remembered briefly as well, so a flood of
 * made-up keys costs one query per prefix per worker per negative TTL.
 * Because the cache is keyed by prefix and holds the database's hash, a
 * wrong secret sent with a real prefix can never evict or poison the real
 * key's entry.
 *
 * Invalidation (revoke, deactivation, deletion):
 *  - in this process at once: a process-wide epoch is bumped, and every
 *    worker treats entries of an older epoch as misses;
 *  - on other instances: PUBLISH rx:apikeys "k:<prefix>" | "p:<pharmacy id>";
 *    every worker of every instance drops the matching entries (well within
 *    a second). A hint that is lost (Redis down) still expires with the TTL.
 *  - `rxd apikey revoke` has no Redis connection: its revocations bite when
 *    the cached entries expire (pharmacies.apikey_cache_ttl_ms, 30 s).
 *
 * last_used_at is written at most once per touch interval per key per
 * worker, fire-and-forget, never on the request's critical path.
 */
#include "pharmacies.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- keys ---- */

void pharm_key_hash(const char *key, size_t len, char *hash_hex)
{
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)key, len, pharm_cfg.pepper,
                       sizeof pharm_cfg.pepper);
    sodium_bin2hex(hash_hex, PHARM_HASH_HEX + 1, h, sizeof h);
}

void pharm_key_new(char *key, char *prefix, char *hash_hex)
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    memcpy(key, PHARM_KEY_TAG, PHARM_KEY_TAG_LEN);
    sodium_bin2base64(key + PHARM_KEY_TAG_LEN, PHARM_KEY_BODY_LEN + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    memcpy(prefix, key + PHARM_KEY_TAG_LEN, PHARM_PREFIX_LEN);
    prefix[PHARM_PREFIX_LEN] = '\0';
    pharm_key_hash(key, PHARM_KEY_LEN, hash_hex);
}

static bool key_well_formed(const char *k)
{
    if (strncmp(k, PHARM_KEY_TAG, PHARM_KEY_TAG_LEN) != 0 || strlen(k) != PHARM_KEY_LEN)
        return false;
    for (const char *p = k + PHARM_KEY_TAG_LEN; *p; p++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* ---- the per-worker cache ---- */

#define SLOTS 4096 /* direct-mapped; a collision only costs a query */

enum { SLOT_EMPTY = 0, SLOT_ROW = 1, SLOT_NONE = 2 };

typedef struct key_slot {
    char prefix[PHARM_PREFIX_LEN + 1];
    uint8_t state;
    bool active; /* not revoked and the pharmacy is active */
    char hash[PHARM_HASH_HEX + 1];
    int64_t key_id, pharmacy_id;
    int64_t expires_ms, touched_ms;
    uint64_t epoch;
} key_slot;

static _Atomic uint64_t pharm_epoch = 1; /* bumped by local invalidations */
static __thread key_slot *cache;         /* this worker's slots, allocated on first use */
static __thread uint64_t worker_gen;     /* bumped by every invalidation message */
static pthread_key_t cache_key;          /* frees a worker's slots when it exits */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static key_slot *worker_cache(void)
{
    if (cache == NULL) {
        cache = calloc(SLOTS, sizeof *cache);
        if (cache != NULL)
            pthread_setspecific(cache_key, cache);
    }
    return cache;
}

static size_t slot_of(const char *prefix)
{
    uint32_t h = 2166136261u; /* FNV-1a: the prefix is random already */
    for (int i = 0; i < PHARM_PREFIX_LEN; i++)
        h = (h ^ (unsigned char)prefix[i]) * 16777619u;
    return h & (SLOTS - 1);
}

void pharm_invalidate(rx_req *req, const char *msg)
{
    atomic_fetch_add(&pharm_epoch, 1);
    int rc = rx_publish(req, PHARM_CHANNEL, msg, strlen(msg));
    if (rc != 0)
        rx_log(pharm_mod, RX_LOG_WARN,
               "API key invalidation '%s' not published (%s): other instances catch up "
               "when their cache entries expire",
               msg, rx_strerror(rc));
}

/* Runs on every worker of every instance. */
static void on_invalidate(const char *channel, const char *msg, size_t len, void *ud)
{
    (void)channel;
    (void)ud;
    worker_gen++;
    key_slot *c = cache;
    if (c == NULL || len < 1)
        return;
    if (len == 1 && msg[0] == '*') {
        memset(c, 0, SLOTS * sizeof *c);
    } else if (len == 2 + PHARM_PREFIX_LEN && msg[0] == 'k' && msg[1] == ':') {
        key_slot *s = &c[slot_of(msg + 2)];
        if (memcmp(s->prefix, msg + 2, PHARM_PREFIX_LEN) == 0)
            s->state = SLOT_EMPTY;
    } else if (len > 2 && len < 24 && msg[0] == 'p' && msg[1] == ':') {
        char num[24];
        memcpy(num, msg + 2, len - 2);
        num[len - 2] = '\0';
        int64_t id = strtoll(num, NULL, 10);
        for (size_t i = 0; i < SLOTS; i++)
            if (c[i].state == SLOT_ROW && c[i].pharmacy_id == id)
                c[i].state = SLOT_EMPTY;
    }
}

/* ---- the authenticate hook ---- */

typedef struct lookup {
    char prefix[PHARM_PREFIX_LEN + 1];
    char hash[PHARM_HASH_HEX + 1];
    uint64_t epoch, gen;
} lookup;

static void touch_done(rx_req *req, rx_rows *rows)
{
    (void)req;
    if (rx_rows_failed(rows))
        rx_log(pharm_mod, RX_LOG_WARN, "api key last_used_at not recorded: %s",
               rx_strerror(rx_rows_error(rows)));
}

static int deny(rx_req *req)
{
    rx_auth_fail(req, 401, "authentication_failed", "Invalid or inactive API key");
    return RX_DENIED;
}

static int decide(rx_req *req, key_slot *s, const char *hash)
{
    if (s->state != SLOT_ROW || !s->active || sodium_memcmp(s->hash, hash, PHARM_HASH_HEX) != 0)
        return deny(req);
    rx_principal p = {.kind = RX_PRINCIPAL_APIKEY,
                      .user_id = s->key_id,
                      .pharmacy_id = s->pharmacy_id,
                      .role = "API_KEY",
                      .subject = s->prefix};
    rx_req_set_principal(req, &p);
    int64_t now = now_ms();
    if (now - s->touched_ms >= pharm_cfg.touch_interval_ms || s->touched_ms == 0) {
        s->touched_ms = now;
        rx_db(req, touch_done, "UPDATE api_keys SET last_used_at = now() WHERE id = $1",
              RX_INT(s->key_id));
    }
    return RX_AUTHED;
}

/* Fail closed, as auth does: a protected route answers 503, a public one
 * serves the request anonymously. */
static int unavailable(rx_req *req)
{
    if (rx_req_perm(req) != NULL) {
        rx_reply_unavailable(req, 0);
        return RX_DONE;
    }
    return RX_DENIED;
}

static void looked_up(rx_req *req, rx_rows *rows)
{
    lookup *l = rx_req_data(req);
    rx_req_set_data(req, NULL); /* handlers get a clean slate */
    if (rx_rows_failed(rows)) {
        rx_resume(req, unavailable(req));
        return;
    }
    key_slot local = {0}, *s = &local;
    key_slot *c = worker_cache();
    /* Only cache what no invalidation overtook while the query ran. */
    if (c != NULL && l->epoch == atomic_load(&pharm_epoch) && l->gen == worker_gen)
        s = &c[slot_of(l->prefix)];
    memset(s, 0, sizeof *s);
    memcpy(s->prefix, l->prefix, sizeof s->prefix);
    s->epoch = l->epoch;
    int64_t now = now_ms();
    if (rx_rows_count(rows) == 1) {
        const char *h = rx_rows_text(rows, 0, 2);
        s->state = SLOT_ROW;
        rx_rows_int(rows, 0, 0, &s->key_id);
        rx_rows_int(rows, 0, 1, &s->pharmacy_id);
        snprintf(s->hash, sizeof s->hash, "%s", h ? h : "");
        rx_rows_bool(rows, 0, 3, &s->active);
        s->expires_ms = now + pharm_cfg.cache_ttl_ms;
    } else {
        s->state = SLOT_NONE;
        s->expires_ms = now + pharm_cfg.negative_ttl_ms;
    }
    if (strlen(s->hash) != PHARM_HASH_HEX)
        s->active = false;
    rx_resume(req, decide(req, s, l->hash));
}

static int pharm_authenticate(rx_req *req, void *data)
{
    (void)data;
    unsigned kinds = rx_req_auth_kinds(req);
    if (kinds != 0 && (kinds & RX_AUTH_APIKEY) == 0)
        return RX_NEXT;
    const char *key = rx_req_header(req, "x-api-key");
    if (key == NULL)
        return RX_NEXT;
    if (!key_well_formed(key))
        return deny(req);
    char hash[PHARM_HASH_HEX + 1];
    pharm_key_hash(key, PHARM_KEY_LEN, hash);
    const char *prefix = key + PHARM_KEY_TAG_LEN;
    key_slot *c = worker_cache();
    uint64_t epoch = atomic_load(&pharm_epoch);
    if (c != NULL) {
        key_slot *s = &c[slot_of(prefix)];
        if (s->state != SLOT_EMPTY && memcmp(s->prefix, prefix, PHARM_PREFIX_LEN) == 0 &&
            s->epoch == epoch && now_ms() < s->expires_ms)
            return decide(req, s, hash);
    }
    lookup *l = rx_req_alloc(req, sizeof *l);
    if (l == NULL)
        return unavailable(req);
    memcpy(l->prefix, prefix, PHARM_PREFIX_LEN);
    memcpy(l->hash, hash, sizeof l->hash);
    l->epoch = epoch;
    l->gen = worker_gen;
    rx_req_set_data(req, l);
    if (rx_db(req, looked_up,
              "SELECT k.id, k.pharmacy_id, k.key_hash, (k.revoked_at IS NULL AND p.is_active)"
              "  FROM api_keys k JOIN pharmacies p ON p.id = k.pharmacy_id WHERE k.prefix = $1",
              RX_TEXT(l->prefix)) != 0) {
        rx_req_set_data(req, NULL);
        return unavailable(req);
    }
    return RX_PENDING;
}

/* ---- routes ---- */

#define AUDIT_COLS "INSERT INTO audit_logs (action, ip, user_agent, metadata, actor) "

static const char apikey_schema[] =
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},"
    "\"name\":{\"type\":\"string\",\"maxLength\":100},"
    "\"prefix\":{\"type\":\"string\"},"
    "\"key\":{\"type\":\"string\",\"description\":\"the clear key, in the create answer only\"},"
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"},"
    "\"last_used_at\":{\"type\":[\"string\",\"null\"],\"format\":\"date-time\"}}}";
static const char apikey_in_schema[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":100}}}";

typedef struct create_ctx {
    int64_t pharmacy;
    const char *name;
    char key[PHARM_KEY_LEN + 1];
    char prefix[PHARM_PREFIX_LEN + 1];
    char hash[PHARM_HASH_HEX + 1];
    int tries;
} create_ctx;

static rx_param actor_param(const rx_req *req)
{
    const rx_principal *p = rx_req_principal(req);
    return p->kind == RX_PRINCIPAL_USER ? RX_INT(p->user_id) : RX_NULL;
}

static const char *user_agent(rx_req *req)
{
    const char *ua = rx_req_header(req, "user-agent");
    if (ua == NULL)
        return "";
    if (strlen(ua) <= 255)
        return ua;
    char *t = rx_req_strdup(req, ua);
    if (t != NULL)
        t[255] = '\0';
    return t ? t : "";
}

static int create_send(rx_req *req);

static void created(rx_req *req, rx_rows *rows)
{
    create_ctx *c = rx_req_data(req);
    if (rx_rows_failed(rows)) {
        /* A prefix collision (48 bits) is all but impossible; draw again once. */
        const char *st = rx_rows_sqlstate(rows);
        if (st != NULL && strcmp(st, "23505") == 0 && c->tries < 3 && create_send(req) == 0)
            return;
        sodium_memzero(c->key, sizeof c->key);
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        sodium_memzero(c->key, sizeof c->key);
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    json_t *o = rx_rows_object(rows, 0);
    json_object_set_new(o, "key", json_string(c->key));
    sodium_memzero(c->key, sizeof c->key);
    /* Drop any "unknown prefix" entry other workers may hold for it. */
    rx_publish(req, PHARM_CHANNEL, rx_req_sprintf(req, "k:%s", c->prefix), 2 + PHARM_PREFIX_LEN);
    rx_reply_json(req, 201, o);
}

static int create_send(rx_req *req)
{
    create_ctx *c = rx_req_data(req);
    c->tries++;
    pharm_key_new(c->key, c->prefix, c->hash);
    return rx_db(
        req, created,
        "WITH k AS (INSERT INTO api_keys (pharmacy_id, name, prefix, key_hash, created_by)"
        "   SELECT p.id, $3, $4, $5, $6 FROM pharmacies p"
        "    WHERE p.id = $1 AND ($2::bigint = 0 OR p.id = $2)"
        "   RETURNING id, pharmacy_id, name, prefix, created_at),"
        " a AS (" AUDIT_COLS
        "   SELECT 'API_KEY_CREATED', $7, $8, jsonb_build_object('pharmacy', k.pharmacy_id,"
        "          'key_id', k.id, 'prefix', k.prefix, 'name', k.name, 'actor', $6::bigint),"
        "          $6 FROM k)"
        " SELECT id, name, prefix, created_at FROM k",
        RX_INT(c->pharmacy), RX_INT(rx_scope_pharmacy(req)), RX_TEXT(c->name), RX_TEXT(c->prefix),
        RX_TEXT(c->hash), actor_param(req), RX_TEXT(rx_req_client_ip(req)),
        RX_TEXT(user_agent(req)));
}

static void apikey_create(rx_req *req)
{
    int64_t pid;
    if (rx_req_param_id(req, "id", &pid) != 0) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    const char *name = "";
    json_t *v = json_object_get(body, "name");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v)) {
            rx_reply_invalid_field(req, "name", "Not a valid string.");
            return;
        }
        name = json_string_value(v);
        size_t n = 0;
        for (const char *p = name; *p; p++)
            if (((unsigned char)*p & 0xC0) != 0x80)
                n++;
        if (n > 100) {
            rx_reply_invalid_field(req, "name",
                                   "Ensure this field has no more than 100 characters.");
            return;
        }
    }
    create_ctx *c = rx_req_alloc(req, sizeof *c);
    if (c == NULL) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    c->pharmacy = pid;
    c->name = name;
    rx_req_set_data(req, c);
    if (create_send(req) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static void listed(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    int n = rx_rows_count(rows);
    int64_t offset = (int64_t)(intptr_t)rx_req_data(req);
    if (n == 0 && offset == 0) { /* no such pharmacy, or not ours */
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    json_t *items = json_array();
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (rx_rows_isnull(rows, i, 0))
            continue; /* the pharmacy's own row when it has no keys */
        json_t *o = rx_rows_object(rows, i);
        if (i == 0)
            rx_rows_int(rows, 0, rx_rows_column(rows, "total_count"), &total);
        json_object_del(o, "total_count");
        json_array_append_new(items, o);
    }
    rx_reply_page(req, items, total);
}

static void apikey_list(rx_req *req)
{
    int64_t pid, limit, offset;
    if (rx_req_param_id(req, "id", &pid) != 0) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    if (rx_page(req, &limit, &offset) != 0)
        return;
    rx_req_set_data(req, (void *)(intptr_t)offset);
    /* LEFT JOIN from the pharmacy: an unknown or foreign one gives no row (404),
     * one without keys a single row of NULLs (an empty list). */
    if (rx_db(req, listed,
              "SELECT k.id, k.name, k.prefix, k.created_at, k.last_used_at,"
              "       count(k.id) OVER () AS total_count"
              "  FROM pharmacies p LEFT JOIN api_keys k"
              "    ON k.pharmacy_id = p.id AND k.revoked_at IS NULL"
              " WHERE p.id = $1 AND ($2::bigint = 0 OR p.id = $2)"
              " ORDER BY k.id LIMIT $3 OFFSET $4",
              RX_INT(pid), RX_INT(rx_scope_pharmacy(req)), RX_INT(limit), RX_INT(offset)) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static void revoked(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    const char *prefix = rx_rows_text(rows, 0, 1);
    pharm_invalidate(req, rx_req_sprintf(req, "k:%s", prefix ? prefix : ""));
    rx_reply(req, 204, NULL, NULL, 0);
}

static void apikey_revoke(rx_req *req)
{
    int64_t pid, kid;
    if (rx_req_param_id(req, "id", &pid) != 0 || rx_req_param_id(req, "key_id", &kid) != 0) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    if (rx_db(req, revoked,
              "WITH k AS (UPDATE api_keys SET revoked_at = now()"
              "   WHERE id = $1 AND pharmacy_id = $2 AND ($3::bigint = 0 OR pharmacy_id = $3)"
              "     AND revoked_at IS NULL RETURNING id, pharmacy_id, prefix, name),"
              " a AS (" AUDIT_COLS
              "   SELECT 'API_KEY_REVOKED', $5, $6, jsonb_build_object('pharmacy', k.pharmacy_id,"
              "          'key_id', k.id, 'prefix', k.prefix, 'name', k.name, 'actor', $4::bigint),"
              "          $4 FROM k)"
              " SELECT id, prefix FROM k",
              RX_INT(kid), RX_INT(pid), RX_INT(rx_scope_pharmacy(req)), actor_param(req),
              RX_TEXT(rx_req_client_ip(req)), RX_TEXT(user_agent(req))) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static void free_cache(void *p)
{
    free(p);
}

void pharm_apikeys_stop(void)
{
    /* Workers have exited (their destructors ran): nothing may call
     * free_cache into an unloaded module later. */
    pthread_key_delete(cache_key);
}

int pharm_apikeys_init(rx_module *m)
{
    int rc = 0;
    if (pthread_key_create(&cache_key, free_cache) != 0)
        return -1;
    rc |= rx_schema(m, "PharmacyApiKey", apikey_schema);
    rx_route_opts o = {.perm = "apikeys.manage", .list_style = RX_LIST_ARRAY, .tag = "pharmacies"};
    o.summary = "Create an API key for a pharmacy (the clear key is shown once)";
    o.request_schema = apikey_in_schema;
    o.response_schema = "PharmacyApiKey";
    o.success_status = 201;
    rc |= rx_route(m, RX_POST, "/api/pharmacies/{id}/api-keys/", apikey_create, &o);
    o.summary = "A pharmacy's active API keys (never the keys themselves)";
    o.request_schema = NULL;
    o.response_schema = "[]PharmacyApiKey";
    o.success_status = 200;
    rc |= rx_route(m, RX_GET, "/api/pharmacies/{id}/api-keys/", apikey_list, &o);
    o.summary = "Revoke an API key (it stops working at once on every instance)";
    o.response_schema = NULL;
    o.success_status = 204;
    rc |= rx_route(m, RX_DELETE, "/api/pharmacies/{id}/api-keys/{key_id}/", apikey_revoke, &o);
    /* After auth's bearer hook (100): a request carrying both is a person's. */
    rc |= rx_hook_authenticate(m, 110, pharm_authenticate, NULL);
    rc |= rx_subscribe(m, PHARM_CHANNEL, on_invalidate, NULL);
    return rc != 0 ? -1 : 0;
}
