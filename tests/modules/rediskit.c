/*
 * rediskit.c — a module used only by the end-to-end tests of the kernel's
 * Redis client (tests/e2e/test_redis.py): plain commands, the shared rate
 * limiter, publish/subscribe across instances, and a command that blocks in
 * Redis longer than redis.timeout (the timeout path). Every Redis failure
 * answers 503 through rx_reply_unavailable(). Not installed.
 */
#include <rx.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static rx_module *self;

/* Keys live under one prefix so the tests never touch anything else. */
#define KEY_PREFIX "rediskit:"

/* ---- messages received on channel "rediskit" ---- */

/* Every worker of the process delivers each message: a ring shared by all
 * of them, hence the mutex. */
#define RING 512
static struct {
    char *channel, *msg;
    size_t len;
} ring[RING];
static size_t ring_next, ring_count;
static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_message(const char *channel, const char *msg, size_t len, void *ud)
{
    (void)ud;
    char *c = strdup(channel);
    char *m = malloc(len + 1);
    if (c == NULL || m == NULL) {
        free(c);
        free(m);
        return;
    }
    memcpy(m, msg, len);
    m[len] = '\0';
    pthread_mutex_lock(&ring_lock);
    free(ring[ring_next].channel);
    free(ring[ring_next].msg);
    ring[ring_next].channel = c;
    ring[ring_next].msg = m;
    ring[ring_next].len = len;
    ring_next = (ring_next + 1) % RING;
    if (ring_count < RING)
        ring_count++;
    pthread_mutex_unlock(&ring_lock);
}

static void messages(rx_req *req)
{
    json_t *list = json_array();
    pthread_mutex_lock(&ring_lock);
    size_t start = (ring_next + RING - ring_count) % RING;
    for (size_t i = 0; i < ring_count; i++) {
        size_t k = (start + i) % RING;
        json_t *m = json_stringn(ring[k].msg, ring[k].len);
        if (m != NULL)
            json_array_append_new(list, json_pack("{s:s, s:o}", "channel", ring[k].channel,
                                                  "message", m));
    }
    pthread_mutex_unlock(&ring_lock);
    rx_reply_json(req, 200, json_pack("{s:o}", "messages", list));
}

/* ---- commands ---- */

static bool failed(rx_req *req, int err)
{
    if (err == 0)
        return false;
    rx_log(self, RX_LOG_INFO, "redis command failed: %s", rx_strerror(err));
    rx_reply_unavailable(req, 0);
    return true;
}

static void reply_redis_error(rx_req *req, const rx_redis_reply *r)
{
    size_t n;
    const char *s = rx_redis_reply_str(r, &n);
    rx_reply_error(req, 400, "redis_error", "%.*s", (int)n, s ? s : "");
}

static void set_done(rx_req *req, int err, const rx_redis_reply *r)
{
    if (failed(req, err))
        return;
    if (rx_redis_reply_type(r) != RX_REDIS_STATUS) {
        reply_redis_error(req, r);
        return;
    }
    rx_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void set_key(rx_req *req)
{
    json_t *j = rx_req_json(req);
    if (j == NULL)
        return;
    const char *key = json_string_value(json_object_get(j, "key"));
    const char *value = json_string_value(json_object_get(j, "value"));
    json_t *ttl = json_object_get(j, "ttl");
    if (key == NULL || *key == '\0') {
        rx_reply_invalid_field(req, "key", "This field is required.");
        return;
    }
    if (value == NULL) {
        rx_reply_invalid_field(req, "value", "This field is required.");
        return;
    }
    if (ttl != NULL && (!json_is_integer(ttl) || json_integer_value(ttl) < 1)) {
        rx_reply_invalid_field(req, "ttl", "A positive integer is required.");
        return;
    }
    const char *k = rx_req_sprintf(req, KEY_PREFIX "%s", key);
    int rc;
    if (ttl != NULL)
        rc = rx_redis(req, set_done, "SET", k, value, "EX",
                      rx_req_sprintf(req, "%lld", (long long)json_integer_value(ttl)));
    else
        rc = rx_redis(req, set_done, "SET", k, value);
    if (rc != 0)
        rx_reply_error(req, 500, "error", "rx_redis: %s", rx_strerror(rc));
}

static void get_done(rx_req *req, int err, const rx_redis_reply *r)
{
    if (failed(req, err))
        return;
    if (rx_redis_reply_type(r) == RX_REDIS_NIL) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    size_t n;
    const char *s = rx_redis_reply_str(r, &n);
    if (rx_redis_reply_type(r) != RX_REDIS_STRING) {
        reply_redis_error(req, r);
        return;
    }
    rx_reply_json(req, 200, json_pack("{s:s, s:s%}", "key", rx_req_param(req, "key"), "value", s,
                                      n));
}

static void get_key(rx_req *req)
{
    int rc = rx_redis(req, get_done, "GET", rx_req_sprintf(req, KEY_PREFIX "%s", rx_req_param(req, "key")));
    if (rc != 0)
        rx_reply_error(req, 500, "error", "rx_redis: %s", rx_strerror(rc));
}

static void incr_done(rx_req *req, int err, const rx_redis_reply *r)
{
    if (failed(req, err))
        return;
    if (rx_redis_reply_type(r) != RX_REDIS_INTEGER) {
        reply_redis_error(req, r);
        return;
    }
    rx_reply_json(req, 200, json_pack("{s:I}", "value", (json_int_t)rx_redis_reply_int(r)));
}

static void incr_key(rx_req *req)
{
    int rc = rx_redis(req, incr_done, "INCR", rx_req_sprintf(req, KEY_PREFIX "%s", rx_req_param(req, "key")));
    if (rc != 0)
        rx_reply_error(req, 500, "error", "rx_redis: %s", rx_strerror(rc));
}

/* BLPOP on a key nobody pushes to: Redis holds the answer for 10 s, longer
 * than the test's redis.timeout, so the kernel's own timeout must answer. */
static void block_done(rx_req *req, int err, const rx_redis_reply *r)
{
    if (err != 0) {
        rx_reply_header(req, "X-Redis-Error", err == RX_ETIMEDOUT ? "timeout" : "unavailable");
        failed(req, err);
        return;
    }
    rx_reply_json(req, 200, json_pack("{s:b}", "nil", rx_redis_reply_type(r) == RX_REDIS_NIL));
}

static void block(rx_req *req)
{
    int rc = rx_redis(req, block_done, "BLPOP",
                      rx_req_sprintf(req, KEY_PREFIX "block:%s", rx_req_id(req)), "10");
    if (rc != 0)
        rx_reply_error(req, 500, "error", "rx_redis: %s", rx_strerror(rc));
}

/* ---- rate limit ---- */

static void limited(rx_req *req, int err, const rx_ratelimit_result *res)
{
    if (failed(req, err))
        return;
    if (!res->allowed) {
        rx_reply_throttled(req, res->retry_after_s, "throttled", NULL);
        return;
    }
    rx_reply_json(req, 200, json_pack("{s:b, s:i, s:i}", "allowed", res->allowed, "remaining",
                                      res->remaining, "retry_after", res->retry_after_s));
}

static int query_int(rx_req *req, const char *name, int def)
{
    const char *v = rx_req_query(req, name);
    if (v == NULL)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    return *v && *end == '\0' && n > 0 && n < 1000000 ? (int)n : -1;
}

static void ratelimit(rx_req *req)
{
    int limit = query_int(req, "limit", 5), window = query_int(req, "window", 60);
    if (limit < 1 || window < 1) {
        rx_reply_invalid_field(req, "limit", "limit and window must be positive integers.");
        return;
    }
    int rc = rx_ratelimit(req, rx_req_sprintf(req, "rediskit:%s", rx_req_param(req, "bucket")),
                          limit, window, limited);
    if (rc != 0)
        rx_reply_error(req, 500, "error", "rx_ratelimit: %s", rx_strerror(rc));
}

/* ---- publish ---- */

static void publish(rx_req *req)
{
    size_t len;
    const char *body = rx_req_body(req, &len);
    int rc = rx_publish(req, rx_req_param(req, "channel"), body, len);
    if (rc == RX_EUNAVAIL) {
        rx_reply_unavailable(req, 0);
        return;
    }
    if (rc != 0) {
        rx_reply_error(req, 500, "error", "rx_publish: %s", rx_strerror(rc));
        return;
    }
    rx_reply_json(req, 202, json_pack("{s:b}", "published", 1));
}

/* ---- SDK contract checks ---- */

static void ignore_reply(rx_req *req, int err, const rx_redis_reply *r)
{
    (void)err, (void)r;
    rx_reply_error(req, 500, "error", "a refused command called back");
}

/* Registration after init and pub/sub commands on the shared connection
 * are refused synchronously. */
static void contract(rx_req *req)
{
    int late = rx_subscribe(self, "rediskit", on_message, NULL);
    int sub = rx_redis(req, ignore_reply, "SUBSCRIBE", "rediskit");
    int select = rx_redis(req, ignore_reply, "select", "2");
    rx_reply_json(req, 200, json_pack("{s:s, s:s, s:s}", "late_subscribe", rx_strerror(late),
                                      "subscribe_command", rx_strerror(sub), "select_command",
                                      rx_strerror(select)));
}

static int init(rx_module *m)
{
    self = m;
    struct {
        unsigned methods;
        const char *path;
        rx_handler h;
    } routes[] = {
        {RX_POST, "/test/redis/set/", set_key},
        {RX_GET, "/test/redis/get/{key}/", get_key},
        {RX_POST, "/test/redis/incr/{key}/", incr_key},
        {RX_GET, "/test/redis/block/", block},
        {RX_GET, "/test/redis/contract/", contract},
        {RX_GET, "/test/ratelimit/{bucket}/", ratelimit},
        {RX_POST, "/test/publish/{channel}/", publish},
        {RX_GET, "/test/messages/", messages},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (rx_route(m, routes[i].methods, routes[i].path, routes[i].h,
                     &(rx_route_opts){.public_route = true, .summary = "rediskit test route"}) != 0)
            return 1;
    if (rx_subscribe(m, "rediskit", on_message, NULL) != 0) {
        rx_module_fail(m, "rx_subscribe failed");
        return 1;
    }
    return 0;
}

static void stop(rx_module *m)
{
    (void)m;
    for (size_t i = 0; i < RING; i++) {
        free(ring[i].channel);
        free(ring[i].msg);
        ring[i].channel = ring[i].msg = NULL;
    }
    ring_count = ring_next = 0;
}

RX_MODULE("rediskit", "1.0.0", .summary = "test module for the Redis client", .init = init,
          .stop = stop);
