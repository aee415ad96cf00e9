/*
 * redis.c — the per-worker Redis client: one command connection per worker
 * (rx_redis_command, rx_ratelimit, rx_publish) and, on workers of a process
 * where modules called rx_subscribe(), a second connection in subscribe mode.
 *
 * Built on hiredis 0.14's async API and its libuv adapter. hiredis 0.14 has
 * no timeouts of its own, so each connection has one uv_timer that enforces
 * the connect/handshake deadline and the deadline of the oldest command in
 * flight (replies come back in order, so the oldest one blocks the rest). A
 * command that misses `redis.timeout` fails with RX_ETIMEDOUT; the context is
 * freed (every other command in flight fails with RX_EUNAVAIL) and a new one
 * is made: a server that stopped answering never gets a second chance to
 * answer a stale command. Lost connections come back with exponential backoff
 * (100 ms doubling to 5 s; the first retry after losing a working connection
 * is immediate).
 *
 * Lifetimes, which is most of what can go wrong with hiredis:
 *  - redisAsyncFree() (ours, on timeout/stop) and hiredis' own teardown on a
 *    read error both call every pending callback with a NULL reply, then the
 *    disconnect callback, then free the context. So before we free a context
 *    we forget it (link->ac = NULL): callbacks that run meanwhile see a link
 *    with no context and never touch the dying one, and connect/disconnect
 *    callbacks compare the context they get with link->ac to ignore stale ones.
 *  - We never free a context from inside its own callbacks: a handshake error
 *    seen in a reply callback schedules the kill on the link's timer instead.
 *  - The event adapter's uv_poll handle is closed (and freed) by hiredis'
 *    cleanup hook. The adapter is ours, not hiredis 0.14's adapters/libuv.h:
 *    that one ignores libuv's error status (libuv reports POLLERR, e.g. a
 *    refused connect, as a status and stops the handle), so a connect to a
 *    stopped server hung until our timeout instead of failing at once.
 *  - A callback of ours always runs later, on the worker's loop, never inside
 *    rx_redis_command(): failures known at once go through a deferred list
 *    flushed by a zero-delay timer.
 *
 * Readiness counts the workers whose command connection finished its
 * handshake (an atomic, read from any thread).
 */
#include "kn_data.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define RL_PREFIX "rx:rl:"

/* ------------------------------------------------------------------ */
/* Configuration, read once for all workers                            */
/* ------------------------------------------------------------------ */

static struct {
    bool configured; /* redis.url set */
    bool valid;      /* ... and parsed */
    char why[160];   /* why not valid */
    char host[256];
    int port;
    char user[128];
    char pass[256];
    bool auth;
    long db;
    long long timeout_ms;
    bool rl_enabled;
    bool bad_timeout, bad_rl; /* malformed values, reported once at start */
} cfg;
static uv_once_t cfg_once = UV_ONCE_INIT;

/* Percent-decode src[0..n) into dst (size cap); false on a bad escape or overflow. */
static bool pct_decode(const char *src, size_t n, char *dst, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = src[i];
        if (ch == '%') {
            if (i + 2 >= n || !isxdigit((unsigned char)src[i + 1]) ||
                !isxdigit((unsigned char)src[i + 2]))
                return false;
            char hex[3] = {src[i + 1], src[i + 2], 0};
            ch = (char)strtol(hex, NULL, 16);
            i += 2;
        }
        if (o + 1 >= cap)
            return false;
        dst[o++] = ch;
    }
    dst[o] = '\0';
    return true;
}

/* redis://[user[:password]@]host[:port][/db] — the forms operators write. */
static bool parse_url(const char *url)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        snprintf(cfg.why, sizeof(cfg.why), "redis.url must start with redis://");
        return false;
    }
    const char *p = url + sizeof(scheme) - 1;
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    /* The password may contain '@' only percent-encoded; the last '@' ends it anyway. */
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        if (!pct_decode(p, (size_t)(uend - p), cfg.user, sizeof(cfg.user)) ||
            (colon && !pct_decode(colon + 1, (size_t)(at - colon - 1), cfg.pass, sizeof(cfg.pass)))) {
            snprintf(cfg.why, sizeof(cfg.why), "redis.url: bad credentials");
            return false;
        }
        cfg.auth = cfg.user[0] != '\0' || cfg.pass[0] != '\0';
        p = at + 1;
    }
    const char *hend;
    const char *portp = NULL;
    if (*p == '[') { /* [::1]:6379 */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (rb == NULL) {
            snprintf(cfg.why, sizeof(cfg.why), "redis.url: bad IPv6 address");
            return false;
        }
        p++;
        hend = rb;
        if (rb + 1 < end && rb[1] == ':')
            portp = rb + 2;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hend = colon ? colon : end;
        if (colon)
            portp = colon + 1;
    }
    size_t hl = (size_t)(hend - p);
    if (hl == 0 || hl >= sizeof(cfg.host)) {
        snprintf(cfg.why, sizeof(cfg.why), "redis.url: missing host");
        return false;
    }
    memcpy(cfg.host, p, hl);
    cfg.host[hl] = '\0';
    cfg.port = 6379;
    if (portp != NULL) {
        long v = 0;
        if (portp == end)
            v = -1;
        for (const char *q = portp; q < end && v >= 0; q++)
            v = (*q >= '0' && *q <= '9' && v < 100000) ? v * 10 + (*q - '0') : -1;
        if (v < 1 || v > 65535) {
            snprintf(cfg.why, sizeof(cfg.why), "redis.url: bad port");
            return false;
        }
        cfg.port = (int)v;
    }
    cfg.db = 0;
    if (slash != NULL && slash[1] != '\0' && slash[1] != '?') {
        long v = 0;
        const char *q = slash + 1;
        for (; *q && *q != '?' && v >= 0; q++)
            v = (*q >= '0' && *q <= '9' && v < 100000) ? v * 10 + (*q - '0') : -1;
        if (v < 0) {
            snprintf(cfg.why, sizeof(cfg.why), "redis.url: the path must be a database number");
            return false;
        }
        cfg.db = v;
    }
    return true;
}

static void cfg_load(void)
{
    const char *url = kn_conf ? kn_config_get(kn_conf, "redis.url") : NULL;
    cfg.configured = url != NULL && *url != '\0';
    cfg.valid = cfg.configured && parse_url(url);
    cfg.timeout_ms = 5000;
    if (kn_conf && (kn_config_duration_ms(kn_conf, "redis.timeout", 5000, &cfg.timeout_ms) != 0 ||
                    cfg.timeout_ms < 1)) {
        cfg.timeout_ms = 5000;
        cfg.bad_timeout = true;
    }
    cfg.rl_enabled = true;
    if (kn_conf && kn_config_bool(kn_conf, "ratelimit.enabled", true, &cfg.rl_enabled) != 0) {
        cfg.rl_enabled = true; /* fail safe: a typo must not switch limits off */
        cfg.bad_rl = true;
    }
}

/* ------------------------------------------------------------------ */
/* Subscriptions registered at init (read-only once workers run)       */
/* ------------------------------------------------------------------ */

typedef struct sub_reg {
    char *channel;
    rx_message_fn fn;
    void *ud;
} sub_reg;
static sub_reg *subs;
static size_t nsubs, subs_cap;

int rx_subscribe(rx_module *m, const char *channel, rx_message_fn fn, void *ud)
{
    (void)m;
    if (!kn_reg.open)
        return RX_ESTATE;
    if (channel == NULL || channel[0] == '\0' || fn == NULL)
        return RX_EINVAL;
    if (nsubs == subs_cap) {
        size_t nc = subs_cap ? subs_cap * 2 : 8;
        sub_reg *nv = realloc(subs, nc * sizeof(*nv));
        if (nv == NULL)
            return RX_ENOMEM;
        subs = nv;
        subs_cap = nc;
    }
    char *copy = strdup(channel);
    if (copy == NULL)
        return RX_ENOMEM;
    subs[nsubs++] = (sub_reg){copy, fn, ud};
    return 0;
}

void kn_redis_free(void)
{
    for (size_t i = 0; i < nsubs; i++)
        free(subs[i].channel);
    free(subs);
    subs = NULL;
    nsubs = subs_cap = 0;
}

/* ------------------------------------------------------------------ */
/* hiredis <-> libuv                                                   */
/* ------------------------------------------------------------------ */

typedef struct uvev {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
} uvev;

static void ev_poll_cb(uv_poll_t *h, int status, int events)
{
    uvev *e = h->data;
    if (status < 0 && e->ac != NULL) {
        /* A socket error: let hiredis find it (SO_ERROR on a connect, a
         * failing read otherwise) and tear the context down its usual way. */
        events = (e->ac->c.flags & REDIS_CONNECTED) ? UV_READABLE : UV_WRITABLE;
    }
    if (e->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
}

static void ev_set(uvev *e, int events)
{
    e->events = events;
    if (uv_is_closing((uv_handle_t *)&e->poll))
        return;
    if (events)
        uv_poll_start(&e->poll, events, ev_poll_cb);
    else
        uv_poll_stop(&e->poll);
}

static void ev_add_read(void *p)
{
    uvev *e = p;
    ev_set(e, e->events | UV_READABLE);
}

static void ev_del_read(void *p)
{
    uvev *e = p;
    ev_set(e, e->events & ~UV_READABLE);
}

static void ev_add_write(void *p)
{
    uvev *e = p;
    ev_set(e, e->events | UV_WRITABLE);
}

static void ev_del_write(void *p)
{
    uvev *e = p;
    ev_set(e, e->events & ~UV_WRITABLE);
}

static void ev_closed(uv_handle_t *h)
{
    free(h->data);
}

static void ev_cleanup(void *p)
{
    uvev *e = p;
    e->ac = NULL;
    if (!uv_is_closing((uv_handle_t *)&e->poll))
        uv_close((uv_handle_t *)&e->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    uvev *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return REDIS_ERR;
    if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
        free(e);
        return REDIS_ERR;
    }
    e->poll.data = e;
    e->ac = ac;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return REDIS_OK;
}

/* ------------------------------------------------------------------ */
/* Per-worker state                                                    */
/* ------------------------------------------------------------------ */

typedef enum op_kind { OP_CMD, OP_RATELIMIT, OP_PUBLISH } op_kind;

typedef struct op op;
typedef struct link link;
typedef struct kn_redis kn_redis;

struct op {
    op *prev, *next; /* a link's in-flight list, or the deferred list */
    link *link;
    rx_req *req; /* NULL for publish */
    op_kind kind;
    union {
        rx_redis_cb cmd;
        rx_ratelimit_cb rl;
    } cb;
    uint64_t deadline; /* loop ms */
    int err;           /* decided before a teardown: RX_ETIMEDOUT or RX_EUNAVAIL */
    /* rate limit */
    bool rl_bypass;    /* ratelimit.enabled = false: allowed without Redis */
    bool rl_eval_sent; /* already fell back from EVALSHA to EVAL */
    int rl_limit;
    char *rl_args[4]; /* key, limit, window ms, member (inside this allocation) */
};

typedef enum link_state { L_IDLE, L_RESOLVING, L_CONNECTING, L_READY } link_state;

struct link {
    kn_redis *r;
    bool sub;               /* the subscriber connection */
    redisAsyncContext *ac;  /* NULL when there is no live context */
    link_state state;
    bool up;                /* handshake done since the last connect */
    bool kill_pending;      /* a kill was asked from inside a hiredis callback */
    bool fail_logged;       /* a failure was logged since the last success */
    bool ever_up;
    uv_timer_t timer;       /* connect/handshake and command deadlines; backoff */
    uv_getaddrinfo_t gai;
    uint64_t connect_deadline;
    uint64_t backoff_ms;
    int hs_left;            /* handshake replies still expected */
    size_t subs_confirmed;  /* subscriber: channels confirmed */
    op *head, *tail;        /* commands in flight, oldest first */
};

struct kn_redis {
    kn_worker *w;
    bool stopping;
    bool dead; /* everything closed: calls now fail synchronously */
    link cmd, sub;
    bool has_sub;
    op *dhead, *dtail; /* failures/results to deliver on the next loop turn */
    uv_timer_t defer;
    bool defer_closing;
    int handles;     /* open uv handles of ours */
    int gai_pending; /* uv_getaddrinfo requests not yet called back */
    int inflight;
    uint64_t seq;
    char sha[41]; /* the rate-limit script's SHA1, from SCRIPT LOAD */
    const char **channels; /* distinct subscribed channels (borrowed from subs) */
    size_t nchannels;
};

static atomic_int workers_live; /* workers whose Redis state exists */
static atomic_int links_up;     /* command connections with their handshake done */
static atomic_bool start_logged;

/* The rate limiter: one atomic script so concurrent instances never race.
 * A sorted set of event times (ms from Redis' own clock, so instances with
 * skewed clocks agree); events older than the window are dropped first. */
static const char rl_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local key = KEYS[1]\n"
    "local limit = tonumber(ARGV[1])\n"
    "local window = tonumber(ARGV[2])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)\n"
    "local count = redis.call('ZCARD', key)\n"
    "if count < limit then\n"
    "  redis.call('ZADD', key, now, ARGV[3])\n"
    "  redis.call('PEXPIRE', key, window)\n"
    "  return {1, limit - count - 1, 0}\n"
    "end\n"
    "local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')\n"
    "local wait = window\n"
    "if oldest[2] then wait = tonumber(oldest[2]) + window - now end\n"
    "local secs = math.ceil(wait / 1000)\n"
    "if secs < 1 then secs = 1 end\n"
    "return {0, 0, secs}\n";

static void link_connect(link *l);
static void link_timer_cb(uv_timer_t *t);
static void defer_cb(uv_timer_t *t);

static const char *link_name(const link *l)
{
    return l->sub ? "subscriber" : "connection";
}

/* ---- op lists ---- */

static void list_push(link *l, op *o)
{
    o->link = l;
    o->next = NULL;
    o->prev = l->tail;
    if (l->tail)
        l->tail->next = o;
    else
        l->head = o;
    l->tail = o;
    l->r->inflight++;
}

static void list_remove(link *l, op *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        l->head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        l->tail = o->prev;
    o->prev = o->next = NULL;
    l->r->inflight--;
}

/* ---- completing an operation ---- */

/* The request part of a completion, as dispatch.c does for rx_offload: the
 * op's pending count holds the request while the callback runs; a live HTTP
 * request that nothing will answer any more gets a 500. */
static void release_req(rx_req *req)
{
    if (req->conn != NULL && !req->replied && req->pending == 1) {
        kn_log(RX_LOG_ERROR, NULL, "redis callback for %s %s finished without replying",
               req->method_name, req->path);
        rx_reply_error(req, 500, "error", "A server error occurred.");
    }
    req->pending--;
    kn_req_maybe_free(req);
}

static void complete(op *o, int err, redisReply *reply)
{
    rx_req *req = o->req;
    switch (o->kind) {
    case OP_CMD:
        o->cb.cmd(req, err, err ? NULL : (const rx_redis_reply *)reply);
        break;
    case OP_RATELIMIT: {
        /* Callers that forget to check err still see "refused", never NULL. */
        rx_ratelimit_result res = {false, 0, 1};
        if (o->rl_bypass) {
            res = (rx_ratelimit_result){true, o->rl_limit, 0};
        } else if (err == 0) {
            if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
                reply->element[0]->type == REDIS_REPLY_INTEGER &&
                reply->element[1]->type == REDIS_REPLY_INTEGER &&
                reply->element[2]->type == REDIS_REPLY_INTEGER) {
                res.allowed = reply->element[0]->integer == 1;
                res.remaining = (int)reply->element[1]->integer;
                res.retry_after_s = (int)reply->element[2]->integer;
                if (!res.allowed && res.retry_after_s < 1)
                    res.retry_after_s = 1;
            } else {
                kn_log(RX_LOG_ERROR, NULL, "redis: rate-limit script failed (%s)",
                       reply->type == REDIS_REPLY_ERROR ? "error reply" : "unexpected reply");
                err = RX_EUNAVAIL;
            }
        }
        o->cb.rl(req, err, &res);
        break;
    }
    case OP_PUBLISH:
        if (err != 0 || (reply && reply->type == REDIS_REPLY_ERROR))
            kn_log(RX_LOG_DEBUG, NULL, "redis: publish failed (%s)",
                   err ? rx_strerror(err) : "error reply");
        break;
    }
    free(o);
    if (req != NULL)
        release_req(req);
}

/* Deliver o's outcome on a later loop turn (never inside the caller). */
static void defer(kn_redis *r, op *o, int err)
{
    o->err = err;
    o->next = NULL;
    o->prev = r->dtail;
    if (r->dtail)
        r->dtail->next = o;
    else
        r->dhead = o;
    r->dtail = o;
    if (!r->defer_closing && !uv_is_active((uv_handle_t *)&r->defer))
        uv_timer_start(&r->defer, defer_cb, 0, 0);
}

static void flush_deferred(kn_redis *r)
{
    /* Completions may defer more: they are picked up by this same loop. */
    while (r->dhead != NULL) {
        op *o = r->dhead;
        r->dhead = o->next;
        if (r->dhead == NULL)
            r->dtail = NULL;
        complete(o, o->err, NULL);
    }
}

static void defer_cb(uv_timer_t *t)
{
    flush_deferred(t->data);
}

/* ---- freeing the worker state once every handle is closed ---- */

static void maybe_free(kn_redis *r)
{
    if (!r->stopping || r->handles > 0 || r->gai_pending > 0)
        return;
    r->w->redis = NULL;
    free(r->channels);
    free(r);
    atomic_fetch_sub(&workers_live, 1);
}

static void on_timer_closed(uv_handle_t *h)
{
    link *l = h->data;
    l->r->handles--;
    maybe_free(l->r);
}

static void on_defer_closed(uv_handle_t *h)
{
    kn_redis *r = h->data;
    /* Last chance to deliver what was deferred while stopping. */
    flush_deferred(r);
    r->dead = true;
    r->handles--;
    maybe_free(r);
}

/* ---- connection state ---- */

static bool link_usable(const link *l)
{
    return !l->r->stopping && l->ac != NULL && !l->kill_pending &&
           (l->state == L_CONNECTING || l->state == L_READY);
}

/* The connection is gone (or never came): schedule the next attempt. */
static void link_down(link *l)
{
    kn_redis *r = l->r;
    bool was_up = l->up;
    l->ac = NULL;
    l->state = L_IDLE;
    l->kill_pending = false;
    l->hs_left = 0;
    l->subs_confirmed = 0;
    if (was_up) {
        l->up = false;
        if (!l->sub)
            atomic_fetch_sub(&links_up, 1);
    }
    if (r->stopping) {
        uv_timer_stop(&l->timer);
        return;
    }
    /* A connection that worked is retried at once (a timed-out command or a
     * restarted server); repeated failures back off. */
    uint64_t delay = 0;
    if (!was_up) {
        delay = l->backoff_ms;
        l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
    }
    uv_timer_start(&l->timer, link_timer_cb, delay, 0);
}

/* Free the context now (not from inside its callbacks): every command in
 * flight fails with its err (default RX_EUNAVAIL). */
static void link_kill(link *l)
{
    redisAsyncContext *ac = l->ac;
    if (ac == NULL)
        return;
    for (op *o = l->head; o; o = o->next)
        if (o->err == 0)
            o->err = RX_EUNAVAIL;
    l->ac = NULL; /* callbacks run by the free below must not use it */
    redisAsyncFree(ac);
    link_down(l);
}

/* From inside a hiredis callback: kill on the next loop turn. */
static void link_kill_later(link *l)
{
    if (l->ac == NULL || l->kill_pending)
        return;
    l->kill_pending = true;
    uv_timer_start(&l->timer, link_timer_cb, 0, 0);
}

static void link_arm(link *l, uint64_t deadline)
{
    uint64_t now = uv_now(l->timer.loop);
    uv_timer_start(&l->timer, link_timer_cb, deadline > now ? deadline - now : 0, 0);
}

static void link_up(link *l)
{
    l->state = L_READY;
    l->up = true;
    l->backoff_ms = BACKOFF_MIN_MS;
    if (!l->sub)
        atomic_fetch_add(&links_up, 1);
    if (!l->ever_up || l->fail_logged)
        kn_log(RX_LOG_INFO, NULL, "redis: worker %d %s %s", l->r->w->id, link_name(l),
               l->ever_up ? "restored" : "established");
    l->ever_up = true;
    l->fail_logged = false;
}

/* Log the first failure of a streak only: an outage is one line per
 * connection, not one per retry. */
static void link_fail_log(link *l, const char *what, const char *detail)
{
    if (l->fail_logged)
        return;
    l->fail_logged = true;
    kn_log(RX_LOG_WARN, NULL, "redis: worker %d %s %s%s%s%s", l->r->w->id, link_name(l), what,
           detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
}

static void link_timer_cb(uv_timer_t *t)
{
    link *l = t->data;
    if (l->r->stopping)
        return;
    if (l->kill_pending) {
        l->kill_pending = false;
        link_kill(l);
        return;
    }
    if (l->ac == NULL) {
        if (l->state == L_IDLE)
            link_connect(l); /* backoff elapsed */
        return;
    }
    uint64_t now = uv_now(t->loop);
    if (l->state == L_CONNECTING && now >= l->connect_deadline) {
        link_fail_log(l, "handshake timed out", NULL);
        link_kill(l);
        return;
    }
    if (l->head != NULL && now >= l->head->deadline) {
        for (op *o = l->head; o && now >= o->deadline; o = o->next)
            o->err = RX_ETIMEDOUT;
        kn_log(RX_LOG_WARN, NULL, "redis: worker %d: a command got no answer within %lld ms: "
               "reconnecting", l->r->w->id, cfg.timeout_ms);
        l->fail_logged = true; /* the reconnect logs "restored" */
        link_kill(l);
        return;
    }
    /* Not due yet: wait for whichever deadline comes first. */
    uint64_t next = UINT64_MAX;
    if (l->state == L_CONNECTING)
        next = l->connect_deadline;
    if (l->head != NULL && l->head->deadline < next)
        next = l->head->deadline;
    if (next != UINT64_MAX)
        link_arm(l, next);
}

/* ---- hiredis callbacks ---- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    link *l = ac->data;
    if (l->ac != ac || status == REDIS_OK)
        return; /* stale, or TCP up: the handshake replies decide */
    /* hiredis frees the context after this returns (no disconnect callback). */
    link_fail_log(l, "cannot connect", ac->errstr);
    l->ac = NULL;
    link_down(l);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    link *l = ac->data;
    if (l->ac != ac)
        return; /* one we freed ourselves */
    if (status != REDIS_OK || l->up)
        link_fail_log(l, l->up ? "lost" : "closed during handshake", ac->errstr);
    l->ac = NULL;
    link_down(l);
}

static void handshake_step(link *l)
{
    if (--l->hs_left == 0 && !l->sub)
        link_up(l);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    link *l = privdata;
    redisReply *rep = reply;
    if (rep == NULL || l->ac != ac)
        return; /* the context is going away; its disconnect is handled */
    if (rep->type == REDIS_REPLY_ERROR) {
        /* Wrong password, no such database: Redis' text names no values. */
        link_fail_log(l, "handshake refused", rep->str);
        link_kill_later(l);
        return;
    }
    handshake_step(l);
}

static void on_script_loaded(redisAsyncContext *ac, void *reply, void *privdata)
{
    link *l = privdata;
    redisReply *rep = reply;
    if (rep != NULL && l->ac == ac && rep->type == REDIS_REPLY_STRING && rep->len == 40)
        memcpy(l->r->sha, rep->str, 41);
    on_handshake(ac, reply, privdata);
}

static void on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    link *l = privdata;
    redisReply *rep = reply;
    if (rep == NULL || l->ac != ac || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str;
    if (strcasecmp(kind, "subscribe") == 0) {
        if (++l->subs_confirmed == l->r->nchannels && !l->up)
            link_up(l);
        return;
    }
    if (strcasecmp(kind, "message") != 0 || rep->element[2]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *ch = rep->element[1], *msg = rep->element[2];
    for (size_t i = 0; i < nsubs; i++)
        if (strlen(subs[i].channel) == ch->len && memcmp(subs[i].channel, ch->str, ch->len) == 0)
            subs[i].fn(subs[i].channel, msg->str, msg->len, subs[i].ud);
}

static bool send_ratelimit(link *l, op *o, bool eval);

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    op *o = privdata;
    link *l = o->link;
    redisReply *rep = reply;
    list_remove(l, o);
    if (rep == NULL) {
        complete(o, o->err ? o->err : RX_EUNAVAIL, NULL);
        return;
    }
    /* The script cache was flushed (or Redis restarted between SCRIPT LOAD
     * and now): send the script itself, once. */
    if (o->kind == OP_RATELIMIT && rep->type == REDIS_REPLY_ERROR && !o->rl_eval_sent &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0 && l->ac == ac && link_usable(l)) {
        if (send_ratelimit(l, o, true))
            return;
        complete(o, RX_EUNAVAIL, NULL);
        return;
    }
    complete(o, 0, rep);
}

/* ---- connecting ---- */

static bool hs_send(link *l, redisCallbackFn *fn, int argc, const char **argv)
{
    if (redisAsyncCommandArgv(l->ac, fn, l, argc, argv, NULL) != REDIS_OK)
        return false;
    l->hs_left++;
    return true;
}

static void do_connect(link *l, const char *ip)
{
    kn_redis *r = l->r;
    redisAsyncContext *ac = redisAsyncConnect(ip, cfg.port);
    if (ac == NULL) {
        link_fail_log(l, "cannot connect", "out of memory");
        link_down(l);
        return;
    }
    if (ac->err) {
        link_fail_log(l, "cannot connect", ac->errstr);
        redisAsyncFree(ac);
        link_down(l);
        return;
    }
    if (ev_attach(ac, &r->w->loop) != REDIS_OK) {
        link_fail_log(l, "cannot connect", "event loop");
        redisAsyncFree(ac);
        link_down(l);
        return;
    }
    ac->data = l;
    l->ac = ac;
    l->state = L_CONNECTING;
    l->hs_left = 0;
    l->subs_confirmed = 0;
    l->connect_deadline = uv_now(&r->w->loop) + (uint64_t)cfg.timeout_ms;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* The handshake is pipelined ahead of anything else sent on this context. */
    bool ok = true;
    if (cfg.auth) {
        const char *a[] = {"AUTH", cfg.user, cfg.pass};
        ok = cfg.user[0] ? hs_send(l, on_handshake, 3, a)
                         : hs_send(l, on_handshake, 2, (const char *[]){"AUTH", cfg.pass});
    }
    if (l->sub) {
        const char **argv = malloc((r->nchannels + 1) * sizeof(char *));
        if (ok && argv != NULL) {
            argv[0] = "SUBSCRIBE";
            memcpy(argv + 1, r->channels, r->nchannels * sizeof(char *));
            /* Subscribe callbacks are not counted in hs_left: confirmations are. */
            ok = redisAsyncCommandArgv(ac, on_message, l, (int)r->nchannels + 1, argv, NULL) ==
                 REDIS_OK;
        } else {
            ok = false;
        }
        free(argv);
    } else {
        char db[24];
        snprintf(db, sizeof(db), "%ld", cfg.db);
        if (ok && cfg.db != 0)
            ok = hs_send(l, on_handshake, 2, (const char *[]){"SELECT", db});
        if (ok)
            ok = hs_send(l, on_script_loaded, 3, (const char *[]){"SCRIPT", "LOAD", rl_script});
    }
    if (!ok) {
        link_fail_log(l, "cannot connect", "out of memory");
        link_kill(l);
        return;
    }
    link_arm(l, l->connect_deadline);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    link *l = req->data;
    kn_redis *r = l->r;
    r->gai_pending--;
    if (r->stopping) {
        uv_freeaddrinfo(res);
        maybe_free(r);
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (status == 0 && res != NULL) {
        const void *a = res->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
        inet_ntop(res->ai_family, a, ip, sizeof(ip));
    }
    uv_freeaddrinfo(res);
    if (ip[0] == '\0') {
        link_fail_log(l, "cannot resolve the host", status ? uv_strerror(status) : NULL);
        link_down(l);
        return;
    }
    do_connect(l, ip);
}

static void link_connect(link *l)
{
    kn_redis *r = l->r;
    unsigned char buf[sizeof(struct in6_addr)];
    /* Addresses connect at once; names are resolved on the thread pool so a
     * slow DNS never blocks the worker's loop. */
    if (inet_pton(AF_INET, cfg.host, buf) == 1 || inet_pton(AF_INET6, cfg.host, buf) == 1) {
        do_connect(l, cfg.host);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    l->gai.data = l;
    if (uv_getaddrinfo(&r->w->loop, &l->gai, on_resolved, cfg.host, NULL, &hints) != 0) {
        link_fail_log(l, "cannot resolve the host", NULL);
        link_down(l);
        return;
    }
    r->gai_pending++;
    l->state = L_RESOLVING;
}

static void link_init(kn_redis *r, link *l, bool sub)
{
    l->r = r;
    l->sub = sub;
    l->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(&r->w->loop, &l->timer);
    l->timer.data = l;
    r->handles++;
}

/* ------------------------------------------------------------------ */
/* Worker life                                                         */
/* ------------------------------------------------------------------ */

int kn_redis_worker_start(kn_worker *w)
{
    uv_once(&cfg_once, cfg_load);
    if (!atomic_exchange(&start_logged, true)) {
        if (!cfg.configured)
            kn_log(RX_LOG_INFO, NULL, "redis: not configured (redis.url unset): features that "
                                      "need it answer 503");
        else if (!cfg.valid)
            kn_log(RX_LOG_ERROR, NULL, "redis: %s", cfg.why);
        if (cfg.bad_timeout)
            kn_log(RX_LOG_WARN, NULL, "redis: invalid redis.timeout, using 5s");
        if (cfg.bad_rl)
            kn_log(RX_LOG_WARN, NULL, "redis: invalid ratelimit.enabled, rate limits stay on");
    }
    kn_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -1;
    r->w = w;
    w->redis = r;
    atomic_fetch_add(&workers_live, 1);
    uv_timer_init(&w->loop, &r->defer);
    r->defer.data = r;
    r->handles++;
    link_init(r, &r->cmd, false);
    if (!cfg.valid)
        return 0;
    /* Distinct channels, in registration order. */
    if (nsubs > 0) {
        r->channels = calloc(nsubs, sizeof(char *));
        if (r->channels != NULL) {
            for (size_t i = 0; i < nsubs; i++) {
                bool seen = false;
                for (size_t j = 0; j < r->nchannels && !seen; j++)
                    seen = strcmp(r->channels[j], subs[i].channel) == 0;
                if (!seen)
                    r->channels[r->nchannels++] = subs[i].channel;
            }
            r->has_sub = true;
            link_init(r, &r->sub, true);
        } else {
            kn_log(RX_LOG_ERROR, NULL, "redis: worker %d: out of memory: no subscriptions", w->id);
        }
    }
    link_connect(&r->cmd);
    if (r->has_sub)
        link_connect(&r->sub);
    return 0;
}

static void link_stop(link *l)
{
    link_kill(l); /* fails what is in flight */
    if (l->state == L_RESOLVING)
        uv_cancel((uv_req_t *)&l->gai); /* on_resolved still runs, with stopping set */
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, on_timer_closed);
}

void kn_redis_worker_stop(kn_worker *w)
{
    kn_redis *r = w->redis;
    if (r == NULL || r->stopping)
        return;
    r->stopping = true;
    link_stop(&r->cmd);
    if (r->has_sub)
        link_stop(&r->sub);
    /* Its close callback delivers whatever is still deferred. */
    r->defer_closing = true;
    uv_timer_stop(&r->defer);
    uv_close((uv_handle_t *)&r->defer, on_defer_closed);
}

bool kn_redis_idle(const kn_worker *w)
{
    const kn_redis *r = w->redis;
    return r == NULL || (r->inflight == 0 && r->dhead == NULL);
}

/* For CLI commands (no worker runs): a short blocking probe. */
static int probe_blocking(char *why, size_t len)
{
    struct timeval tv = {(time_t)(cfg.timeout_ms / 1000), (long)(cfg.timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(cfg.host, cfg.port, tv);
    redisReply *rep = NULL;
    int rc = 1;
    if (c == NULL || c->err) {
        snprintf(why, len, "redis unreachable");
        goto out;
    }
    redisSetTimeout(c, tv);
    if (cfg.auth) {
        rep = cfg.user[0] ? redisCommand(c, "AUTH %s %s", cfg.user, cfg.pass)
                          : redisCommand(c, "AUTH %s", cfg.pass);
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
            snprintf(why, len, "redis refused the credentials");
            goto out;
        }
        freeReplyObject(rep);
        rep = NULL;
    }
    rep = cfg.db ? redisCommand(c, "SELECT %ld", cfg.db) : redisCommand(c, "PING");
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        snprintf(why, len, rep ? "redis refused the database" : "redis unreachable");
        goto out;
    }
    rc = 0;
out:
    if (rep != NULL)
        freeReplyObject(rep);
    if (c != NULL)
        redisFree(c);
    return rc;
}

int kn_redis_ready(char *why, size_t len, void *data)
{
    (void)data;
    uv_once(&cfg_once, cfg_load);
    if (!cfg.configured)
        return 0; /* not configured is a choice, not a failure */
    if (!cfg.valid) {
        snprintf(why, len, "%s", cfg.why);
        return 1;
    }
    if (atomic_load(&workers_live) == 0)
        return probe_blocking(why, len);
    if (atomic_load(&links_up) > 0)
        return 0;
    snprintf(why, len, "redis unreachable");
    return 1;
}

/* ------------------------------------------------------------------ */
/* SDK                                                                 */
/* ------------------------------------------------------------------ */

/* Commands that would change the shared connection's state for everyone
 * (pub/sub mode, another database, a closed socket). */
static bool forbidden(const char *name, size_t len)
{
    static const char *const bad[] = {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE",
                                      "PUNSUBSCRIBE", "SUNSUBSCRIBE", "MONITOR", "SELECT",
                                      "QUIT", "RESET", NULL};
    for (int i = 0; bad[i]; i++)
        if (strlen(bad[i]) == len && strncasecmp(bad[i], name, len) == 0)
            return true;
    return false;
}

static kn_redis *worker_redis(rx_req *req)
{
    return req && req->w ? req->w->redis : NULL;
}

static op *op_new(rx_req *req, op_kind kind, size_t extra)
{
    op *o = calloc(1, sizeof(*o) + extra);
    if (o == NULL)
        return NULL;
    o->req = req;
    o->kind = kind;
    return o;
}

/* Hand o to the command connection, or fail it on the next loop turn. */
static void submit(kn_redis *r, op *o, int argc, const char **argv, const size_t *argvlen)
{
    link *l = &r->cmd;
    if (o->req != NULL)
        o->req->pending++;
    if (!link_usable(l) ||
        redisAsyncCommandArgv(l->ac, on_reply, o, argc, argv, argvlen) != REDIS_OK) {
        defer(r, o, RX_EUNAVAIL);
        return;
    }
    o->deadline = uv_now(&r->w->loop) + (uint64_t)cfg.timeout_ms;
    bool first = l->head == NULL;
    list_push(l, o);
    /* An active timer is due no later than this deadline (connect deadline
     * or an older command's); it re-arms for the rest when it fires. */
    if (first && !uv_is_active((uv_handle_t *)&l->timer))
        link_arm(l, o->deadline);
}

int rx_redis_command(rx_req *req, rx_redis_cb cb, int argc, const char *const *argv,
                     const size_t *argvlen)
{
    if (req == NULL || cb == NULL || argc < 1 || argv == NULL)
        return RX_EINVAL;
    for (int i = 0; i < argc; i++)
        if (argv[i] == NULL)
            return RX_EINVAL;
    if (forbidden(argv[0], argvlen ? argvlen[0] : strlen(argv[0])))
        return RX_EINVAL;
    kn_redis *r = worker_redis(req);
    if (r == NULL || r->dead)
        return RX_ESTATE; /* the worker has stopped: cb never runs */
    op *o = op_new(req, OP_CMD, 0);
    if (o == NULL)
        return RX_ENOMEM;
    o->cb.cmd = cb;
    submit(r, o, argc, (const char **)argv, argvlen);
    return 0;
}

static bool send_ratelimit(link *l, op *o, bool eval)
{
    kn_redis *r = l->r;
    const char *argv[] = {eval ? "EVAL" : "EVALSHA", eval ? rl_script : r->sha, "1",
                          o->rl_args[0], o->rl_args[1], o->rl_args[2], o->rl_args[3]};
    if (redisAsyncCommandArgv(l->ac, on_reply, o, 7, argv, NULL) != REDIS_OK)
        return false;
    o->rl_eval_sent = eval;
    o->deadline = uv_now(&r->w->loop) + (uint64_t)cfg.timeout_ms;
    bool first = l->head == NULL;
    list_push(l, o);
    if (first && !uv_is_active((uv_handle_t *)&l->timer))
        link_arm(l, o->deadline);
    return true;
}

int rx_ratelimit(rx_req *req, const char *key, int limit, int window_s, rx_ratelimit_cb cb)
{
    if (req == NULL || key == NULL || key[0] == '\0' || cb == NULL || limit < 1 || window_s < 1)
        return RX_EINVAL;
    kn_redis *r = worker_redis(req);
    if (r == NULL || r->dead)
        return RX_ESTATE;
    size_t klen = strlen(key);
    /* key, limit, window ms, member: one allocation with the op. */
    size_t extra = sizeof(RL_PREFIX) + klen + 24 + 24 + 64;
    op *o = op_new(req, OP_RATELIMIT, extra);
    if (o == NULL)
        return RX_ENOMEM;
    o->cb.rl = cb;
    o->rl_limit = limit;
    char *p = (char *)(o + 1);
    o->rl_args[0] = p;
    p += sprintf(p, "%s%s", RL_PREFIX, key) + 1;
    o->rl_args[1] = p;
    p += sprintf(p, "%d", limit) + 1;
    o->rl_args[2] = p;
    p += sprintf(p, "%lld", (long long)window_s * 1000) + 1;
    o->rl_args[3] = p;
    /* Unique per event across instances: the worker's random base + a counter. */
    sprintf(p, "%016llx-%d-%llu", (unsigned long long)r->w->rid_base, r->w->id,
            (unsigned long long)++r->seq);
    req->pending++;
    if (!cfg.rl_enabled) {
        o->rl_bypass = true;
        defer(r, o, 0);
        return 0;
    }
    link *l = &r->cmd;
    if (!link_usable(l) || !send_ratelimit(l, o, r->sha[0] == '\0'))
        defer(r, o, RX_EUNAVAIL);
    return 0;
}

void rx_reply_throttled(rx_req *req, int retry_after_s, const char *code, const char *detail)
{
    if (retry_after_s < 1)
        retry_after_s = 1;
    char b[16];
    snprintf(b, sizeof(b), "%d", retry_after_s);
    kn_reply_header_raw(req, "Retry-After", b);
    if (code == NULL || code[0] == '\0')
        code = "throttled";
    if (detail != NULL)
        rx_reply_error(req, 429, code, "%s", detail);
    else
        rx_reply_error(req, 429, code, "Request was throttled. Expected available in %d second%s.",
                       retry_after_s, retry_after_s == 1 ? "" : "s");
}

/* rx_publish(NULL, ...) from a CLI command: no worker, so one blocking
 * connection (redis.timeout bounds every step). */
static int publish_blocking(const char *channel, const char *msg, size_t len)
{
    uv_once(&cfg_once, cfg_load);
    if (!cfg.configured || !cfg.valid)
        return RX_EUNAVAIL;
    struct timeval tv = {(time_t)(cfg.timeout_ms / 1000), (long)(cfg.timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(cfg.host, cfg.port, tv);
    redisReply *rep = NULL;
    int rc = RX_EUNAVAIL;
    if (c == NULL || c->err)
        goto out;
    redisSetTimeout(c, tv);
    if (cfg.auth) {
        rep = cfg.user[0] ? redisCommand(c, "AUTH %s %s", cfg.user, cfg.pass)
                          : redisCommand(c, "AUTH %s", cfg.pass);
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
            goto out;
        freeReplyObject(rep);
    }
    /* PUBLISH reaches subscribers of every database: no SELECT needed. */
    rep = redisCommand(c, "PUBLISH %s %b", channel, msg ? msg : "", len);
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER)
        rc = 0;
out:
    if (rep != NULL)
        freeReplyObject(rep);
    if (c != NULL)
        redisFree(c);
    return rc;
}

int rx_publish(rx_req *req, const char *channel, const char *msg, size_t len)
{
    if (channel == NULL || channel[0] == '\0' || (msg == NULL && len > 0))
        return RX_EINVAL;
    if (req == NULL)
        return publish_blocking(channel, msg, len);
    kn_redis *r = worker_redis(req);
    if (r == NULL || r->dead)
        return RX_ESTATE;
    link *l = &r->cmd;
    if (!link_usable(l))
        return RX_EUNAVAIL;
    op *o = op_new(NULL, OP_PUBLISH, 0);
    if (o == NULL)
        return RX_ENOMEM;
    const char *argv[] = {"PUBLISH", channel, msg ? msg : ""};
    size_t lens[] = {7, strlen(channel), len};
    submit(r, o, 3, argv, lens);
    return 0;
}

/* ---- replies: the opaque rx_redis_reply is hiredis' own redisReply ---- */

static const redisReply *rep_of(const rx_redis_reply *r)
{
    return (const redisReply *)r;
}

rx_redis_type rx_redis_reply_type(const rx_redis_reply *r)
{
    if (r == NULL)
        return RX_REDIS_NIL;
    switch (rep_of(r)->type) {
    case REDIS_REPLY_STRING: return RX_REDIS_STRING;
    case REDIS_REPLY_INTEGER: return RX_REDIS_INTEGER;
    case REDIS_REPLY_ARRAY: return RX_REDIS_ARRAY;
    case REDIS_REPLY_STATUS: return RX_REDIS_STATUS;
    case REDIS_REPLY_ERROR: return RX_REDIS_ERROR;
    default: return RX_REDIS_NIL;
    }
}

int64_t rx_redis_reply_int(const rx_redis_reply *r)
{
    return r && rep_of(r)->type == REDIS_REPLY_INTEGER ? (int64_t)rep_of(r)->integer : 0;
}

const char *rx_redis_reply_str(const rx_redis_reply *r, size_t *len)
{
    if (r == NULL || (rep_of(r)->type != REDIS_REPLY_STRING && rep_of(r)->type != REDIS_REPLY_STATUS &&
                      rep_of(r)->type != REDIS_REPLY_ERROR)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = rep_of(r)->len;
    return rep_of(r)->str;
}

size_t rx_redis_reply_len(const rx_redis_reply *r)
{
    return r && rep_of(r)->type == REDIS_REPLY_ARRAY ? rep_of(r)->elements : 0;
}

const rx_redis_reply *rx_redis_reply_elem(const rx_redis_reply *r, size_t i)
{
    if (r == NULL || rep_of(r)->type != REDIS_REPLY_ARRAY || i >= rep_of(r)->elements)
        return NULL;
    return (const rx_redis_reply *)rep_of(r)->element[i];
}
