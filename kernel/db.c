/*
 * db.c — the per-worker PostgreSQL pool: non-blocking libpq connections
 * driven by the worker's libuv loop, no locks.
 *
 * Each connection runs in pipeline mode. A query is sent as
 * [Parse once per connection] + Bind/Execute + Sync, so a statement is
 * prepared the first time a connection sees its SQL and reused after; a
 * transaction (rx_db_tx) is several statements before one Sync, which the
 * server runs as one implicit transaction (rolled back on the first error).
 * With database.pipeline > 1 a connection takes the next queued query while
 * earlier ones are still in flight, once every connection is busy, so round
 * trips overlap. The default is 1: requests wait in the worker's one queue
 * and go to whichever connection frees first. Deeper pipelines gave 10-20 %
 * more reads per second but queued requests behind one backend, and a backend
 * held up (descheduled on a busy host) then held up all of them: the p99 of a
 * primary-key read went from 7-11 ms to 21-305 ms (bench/db.sh, bench/README).
 *
 * Timeouts are our own uv_timers (a frozen server never fires its own
 * statement_timeout, and libpq 15's PQcancel blocks): a query that waits in
 * the queue or runs longer than `database.timeout` fails with RX_ETIMEDOUT and
 * its connection is dropped and reconnected. While no connection is up,
 * queries fail at once with RX_EUNAVAIL (the handler answers 503), and the
 * pool keeps reconnecting with backoff, so service resumes by itself.
 */
#include "kn_data.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 256 /* prepared statements per connection */

typedef struct dbstmt {
    char *sql;
    int n;
    char **vals;
    int *lens;
    int *fmts;
} dbstmt;

typedef struct dbq {
    struct dbq *next;
    rx_req *req;
    rx_db_cb cb;
    int nstmts;
    dbstmt *stmts;
    uint64_t queued_ms;
    uint64_t sent_ms;
    /* outcome */
    PGresult *res; /* last result, or the first error */
    bool failed;
    int err;
    char *msg;
    int fresh_slot; /* statement cache slot this query prepares, or -1 */
    int nresults;   /* results seen so far (the first answers the Prepare) */
} dbq;

typedef enum { PC_DOWN, PC_CONNECTING, PC_UP, PC_CLOSING } pc_state;

typedef struct pconn {
    kn_db *db;
    int idx;
    PGconn *pg;
    pc_state state;
    uv_poll_t poll;
    bool poll_live;
    bool poll_closing;  /* uv_close() called, callback not yet run */
    PGconn *pg_closing; /* finished once the poll handle has closed */
    int poll_fd;
    int poll_events;
    uv_timer_t timer; /* connect / query deadline, reconnect backoff */
    int backoff_ms;
    dbq *head, *tail; /* in flight, in send order */
    int inflight;
    int handles; /* open libuv handles of this conn (timer, poll) */
    struct {
        uint64_t hash;
        char *sql;
        bool bad; /* its Prepare failed: prepare again under the same name */
    } cache[STMT_CACHE];
    int ncache;
} pconn;

struct kn_db {
    kn_worker *w;
    pconn *conns;
    int n;
    dbq *qhead, *qtail;
    int qlen;
    long long qmax, timeout_ms, pipeline;
    uv_timer_t tick;  /* queue wait deadlines */
    uv_timer_t defer; /* callbacks of queries that failed before being sent */
    dbq *dhead, *dtail;
    bool stopping;
    int live;
    int handles;
    unsigned seen_gen;
};

static void conn_connect(pconn *c);

static void kick_down_conns(kn_db *db)
{
    for (int i = 0; i < db->n; i++)
        if (db->conns[i].state == PC_DOWN) {
            uv_timer_stop(&db->conns[i].timer);
            conn_connect(&db->conns[i]);
        }
}

static atomic_int live_total; /* connections up, all workers: readiness */
/* Bumped whenever any worker's connection comes up: a worker whose own
 * connections are all waiting out a backoff learns that the database is back
 * and reconnects at once instead of failing requests until its timers fire. */
static atomic_uint up_gen;

static void pump(kn_db *db);
static void conn_connect(pconn *c);
static void conn_drop(pconn *c, int err, const char *why);

const char *kn_db_url(void)
{
    const char *u = kn_conf ? kn_config_get(kn_conf, "database.url") : NULL;
    return u && *u ? u : NULL;
}

static uint64_t now_ms(kn_db *db)
{
    return uv_now(&db->w->loop);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- queries: build and free ---- */

static void dbq_free(dbq *q)
{
    for (int i = 0; i < q->nstmts; i++) {
        dbstmt *s = &q->stmts[i];
        free(s->sql);
        for (int k = 0; k < s->n; k++)
            free(s->vals[k]);
        free(s->vals);
        free(s->lens);
        free(s->fmts);
    }
    free(q->stmts);
    if (q->res)
        PQclear(q->res);
    free(q->msg);
    free(q);
}

static char *param_text(const rx_param *p, int *len, int *fmt)
{
    char buf[64];
    *fmt = 0;
    switch (p->type) {
    case RX_P_NULL:
        return NULL;
    case RX_P_TEXT:
        return p->v.s ? strdup(p->v.s) : NULL;
    case RX_P_INT:
        snprintf(buf, sizeof(buf), "%lld", (long long)p->v.i);
        return strdup(buf);
    case RX_P_BOOL:
        return strdup(p->v.b ? "t" : "f");
    case RX_P_FLOAT:
        snprintf(buf, sizeof(buf), "%.17g", p->v.f);
        return strdup(buf);
    case RX_P_JSON:
        return p->v.j ? json_dumps(p->v.j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    case RX_P_BYTES: {
        char *b = malloc(p->len ? p->len : 1);
        if (b) {
            memcpy(b, p->v.s, p->len);
            *len = (int)p->len;
            *fmt = 1;
        }
        return b;
    }
    }
    return NULL;
}

static int stmt_fill(dbstmt *s, const char *sql, int n, const rx_param *params)
{
    s->sql = strdup(sql);
    s->n = n;
    if (n > 0) {
        s->vals = calloc((size_t)n, sizeof(char *));
        s->lens = calloc((size_t)n, sizeof(int));
        s->fmts = calloc((size_t)n, sizeof(int));
        if (!s->vals || !s->lens || !s->fmts)
            return RX_ENOMEM;
    }
    if (s->sql == NULL)
        return RX_ENOMEM;
    for (int i = 0; i < n; i++) {
        s->vals[i] = param_text(&params[i], &s->lens[i], &s->fmts[i]);
        if (s->vals[i] == NULL && params[i].type != RX_P_NULL &&
            !(params[i].type == RX_P_TEXT && params[i].v.s == NULL) &&
            !(params[i].type == RX_P_JSON && params[i].v.j == NULL))
            return RX_ENOMEM;
    }
    return 0;
}

/* ---- delivering outcomes ---- */

struct rx_rows {
    PGresult *res;
    int err;
    char *msg;
    bool owned; /* rx_rows_free frees (CLI) */
};

rx_rows *kn_rows_from_result(PGresult *res, int err, const char *msg)
{
    rx_rows *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        if (res)
            PQclear(res);
        return NULL;
    }
    r->res = res;
    r->err = err;
    if (err == 0 && res != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
            r->err = RX_EDB;
    }
    if (r->err == 0 && res == NULL)
        r->err = RX_EUNAVAIL;
    if (msg)
        r->msg = strdup(msg);
    else if (res && r->err == RX_EDB)
        r->msg = strdup(PQresultErrorMessage(res));
    r->owned = true;
    return r;
}

static void deliver(dbq *q)
{
    rx_req *req = q->req;
    rx_rows rows = {.res = q->res, .err = q->err, .msg = q->msg};
    if (rows.err == 0 && rows.res == NULL)
        rows.err = RX_EUNAVAIL;
    if (rows.err == 0 && rows.res != NULL) {
        ExecStatusType st = PQresultStatus(rows.res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            rows.err = RX_EDB;
            if (rows.msg == NULL)
                rows.msg = q->msg = strdup(PQresultErrorMessage(rows.res));
        }
    }
    q->cb(req, &rows);
    dbq_free(q);
    kn_req_async_done(req, "database callback");
}

static void on_defer(uv_timer_t *t);

/* Fail a query that never reached the server: its callback still runs later,
 * never inside rx_db_query(). */
static void fail_deferred(kn_db *db, dbq *q, int err, const char *msg)
{
    q->err = err;
    q->msg = msg ? strdup(msg) : NULL;
    q->next = NULL;
    if (db->dtail)
        db->dtail->next = q;
    else
        db->dhead = q;
    db->dtail = q;
    if (!uv_is_active((uv_handle_t *)&db->defer))
        uv_timer_start(&db->defer, on_defer, 0, 0);
}

static void on_defer(uv_timer_t *t)
{
    kn_db *db = t->data;
    dbq *q = db->dhead;
    db->dhead = db->dtail = NULL;
    while (q) {
        dbq *next = q->next;
        deliver(q);
        q = next;
    }
}

/* ---- the queue ---- */

static void on_tick(uv_timer_t *t)
{
    kn_db *db = t->data;
    uint64_t now = now_ms(db);
    /* The queue is in arrival order: expire from the front. */
    while (db->qhead && now - db->qhead->queued_ms >= (uint64_t)db->timeout_ms) {
        dbq *q = db->qhead;
        db->qhead = q->next;
        if (db->qhead == NULL)
            db->qtail = NULL;
        db->qlen--;
        fail_deferred(db, q, RX_ETIMEDOUT, "timed out waiting for a database connection");
    }
    if (db->qhead == NULL)
        uv_timer_stop(&db->tick);
}

static int submit(rx_req *req, dbq *q)
{
    kn_worker *w = req->w;
    kn_db *db = w ? w->db : NULL;
    q->req = req;
    req->pending++;
    if (db == NULL || db->stopping) {
        if (db == NULL) {
            /* No pool on this thread (CLI): nothing can run it. */
            req->pending--;
            dbq_free(q);
            return RX_ESTATE;
        }
        fail_deferred(db, q, RX_EUNAVAIL, "the server is shutting down");
        return 0;
    }
    if (db->n == 0) {
        fail_deferred(db, q, RX_EUNAVAIL, "database.url is not configured");
        return 0;
    }
    bool any = false;
    for (int i = 0; i < db->n && !any; i++)
        any = db->conns[i].state == PC_UP || db->conns[i].state == PC_CONNECTING;
    unsigned gen = atomic_load(&up_gen);
    if (!any && gen != db->seen_gen) {
        db->seen_gen = gen; /* another worker got through: try again now */
        kick_down_conns(db);
        any = true;
    }
    if (!any) {
        fail_deferred(db, q, RX_EUNAVAIL, "database unreachable");
        return 0;
    }
    if (db->qlen >= db->qmax) {
        fail_deferred(db, q, RX_EUNAVAIL, "database queue full");
        return 0;
    }
    q->queued_ms = now_ms(db);
    q->next = NULL;
    if (db->qtail)
        db->qtail->next = q;
    else
        db->qhead = q;
    db->qtail = q;
    db->qlen++;
    if (!uv_is_active((uv_handle_t *)&db->tick))
        uv_timer_start(&db->tick, on_tick, 100, 100);
    pump(db);
    return 0;
}

int rx_db_query(rx_req *req, rx_db_cb cb, const char *sql, int nparams, const rx_param *params)
{
    if (req == NULL || cb == NULL || sql == NULL || nparams < 0 || (nparams > 0 && !params) ||
        nparams > 65535)
        return RX_EINVAL;
    dbq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return RX_ENOMEM;
    q->cb = cb;
    q->nstmts = 1;
    q->stmts = calloc(1, sizeof(dbstmt));
    if (q->stmts == NULL || stmt_fill(&q->stmts[0], sql, nparams, params) != 0) {
        dbq_free(q);
        return RX_ENOMEM;
    }
    return submit(req, q);
}

int rx_db_tx(rx_req *req, rx_db_cb cb, int nstmts, const rx_stmt *stmts)
{
    if (req == NULL || cb == NULL || nstmts < 1 || stmts == NULL)
        return RX_EINVAL;
    for (int i = 0; i < nstmts; i++)
        if (stmts[i].sql == NULL || stmts[i].nparams < 0 ||
            (stmts[i].nparams > 0 && stmts[i].params == NULL))
            return RX_EINVAL;
    dbq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return RX_ENOMEM;
    q->cb = cb;
    q->nstmts = nstmts;
    q->stmts = calloc((size_t)nstmts, sizeof(dbstmt));
    if (q->stmts == NULL) {
        dbq_free(q);
        return RX_ENOMEM;
    }
    for (int i = 0; i < nstmts; i++)
        if (stmt_fill(&q->stmts[i], stmts[i].sql, stmts[i].nparams, stmts[i].params) != 0) {
            dbq_free(q);
            return RX_ENOMEM;
        }
    return submit(req, q);
}

/* ---- connections ---- */

static void poll_update(pconn *c, int events);

static void on_conn_timer(uv_timer_t *t)
{
    pconn *c = t->data;
    if (c->state == PC_DOWN) {
        conn_connect(c); /* backoff elapsed */
        return;
    }
    if (c->state == PC_CONNECTING) {
        conn_drop(c, RX_EUNAVAIL, "connect timed out");
        return;
    }
    if (c->state == PC_UP && c->head) {
        /* The server did not answer in time: give up on this connection
         * (cancelling would block), fail what it carried, reconnect. */
        conn_drop(c, RX_ETIMEDOUT, "query timed out");
    }
}

static void arm_query_deadline(pconn *c)
{
    if (c->head == NULL) {
        uv_timer_stop(&c->timer);
        return;
    }
    uint64_t now = now_ms(c->db);
    /* One budget for waiting and running: a caller gets its answer within
     * database.timeout of asking, however the time was spent. */
    uint64_t deadline = c->head->queued_ms + (uint64_t)c->db->timeout_ms;
    uv_timer_start(&c->timer, on_conn_timer, deadline > now ? deadline - now : 0, 0);
}

static void db_unref(kn_db *db);

/* The poll handle is closed asynchronously; libpq's socket must stay open
 * until it is (never close an fd under a uv_poll), so the PGconn it watched
 * waits in pg_closing. Meanwhile a new connection may already be starting:
 * it gets watched when the handle is free again. */
static void on_poll_closed(uv_handle_t *h)
{
    pconn *c = h->data;
    kn_db *db = c->db;
    c->handles--;
    c->poll_closing = false;
    if (c->pg_closing) {
        PQfinish(c->pg_closing);
        c->pg_closing = NULL;
    }
    if (c->pg && !db->stopping) {
        if (c->state == PC_CONNECTING)
            poll_update(c, UV_WRITABLE);
        else if (c->state == PC_UP)
            poll_update(c, UV_READABLE | UV_WRITABLE); /* flush() narrows it */
    }
    db_unref(db); /* last: may free c */
}

/* Stop watching; finish_pg: the connection itself is done for. */
static void poll_close(pconn *c, bool finish_pg)
{
    if (c->poll_live) {
        c->poll_live = false;
        c->poll_closing = true;
        if (finish_pg) {
            c->pg_closing = c->pg;
            c->pg = NULL;
        }
        uv_close((uv_handle_t *)&c->poll, on_poll_closed);
    } else if (finish_pg && c->pg) {
        PQfinish(c->pg); /* no handle watches its socket */
        c->pg = NULL;
    }
}

static void on_poll(uv_poll_t *p, int status, int events);

static void poll_update(pconn *c, int events)
{
    int fd = c->pg ? PQsocket(c->pg) : -1;
    if (fd < 0 || c->poll_closing)
        return; /* on_poll_closed re-arms */
    if (c->poll_live && c->poll_fd != fd) {
        poll_close(c, false); /* the socket changed during connect */
        return;
    }
    if (!c->poll_live) {
        if (uv_poll_init_socket(&c->db->w->loop, &c->poll, fd) != 0)
            return;
        c->poll.data = c;
        c->poll_live = true;
        c->poll_fd = fd;
        c->handles++;
        c->db->handles++;
        c->poll_events = 0;
    }
    if (events != c->poll_events) {
        uv_poll_start(&c->poll, events, on_poll);
        c->poll_events = events;
    }
}

static void fail_inflight(pconn *c, int err, const char *why)
{
    dbq *q = c->head;
    c->head = c->tail = NULL;
    c->inflight = 0;
    while (q) {
        dbq *next = q->next;
        if (q->res) {
            PQclear(q->res);
            q->res = NULL;
        }
        q->err = err;
        free(q->msg);
        q->msg = strdup(why);
        deliver(q);
        q = next;
    }
}

static void conn_drop(pconn *c, int err, const char *why)
{
    kn_db *db = c->db;
    bool was_up = c->state == PC_UP;
    if (was_up) {
        db->live--;
        atomic_fetch_sub(&live_total, 1);
        kn_log(RX_LOG_WARN, NULL, "database connection %d/%d lost: %s", db->w->id, c->idx, why);
    }
    c->state = PC_DOWN;
    poll_close(c, true);
    for (int i = 0; i < STMT_CACHE; i++) /* a hash table: any slot may be used */
        free(c->cache[i].sql);
    memset(c->cache, 0, sizeof(c->cache));
    c->ncache = 0;
    fail_inflight(c, err, why);
    if (db->stopping)
        return;
    if (db->live == 0) {
        /* Nothing can serve the queue now: fail it rather than let it wait. */
        bool connecting = false;
        for (int i = 0; i < db->n; i++)
            connecting |= db->conns[i].state == PC_CONNECTING;
        if (!connecting) {
            while (db->qhead) {
                dbq *q = db->qhead;
                db->qhead = q->next;
                db->qlen--;
                fail_deferred(db, q, RX_EUNAVAIL, "database unreachable");
            }
            db->qtail = NULL;
        }
    }
    if (err == RX_ETIMEDOUT && was_up) {
        /* The server answered before, only this query was slow: reconnect at
         * once so the next request queues on a connection being made instead
         * of failing for want of one. */
        conn_connect(c);
        return;
    }
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 100;
    if (c->backoff_ms > 5000)
        c->backoff_ms = 5000;
    uv_timer_start(&c->timer, on_conn_timer, (uint64_t)c->backoff_ms, 0);
}

static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    /* NOTICEs (e.g. "already exists, skipping") are not errors: debug only. */
    kn_log(RX_LOG_DEBUG, NULL, "database notice: %s", message);
}

static void conn_ready(pconn *c)
{
    kn_db *db = c->db;
    PQsetNoticeProcessor(c->pg, quiet_notices, NULL);
    PQsetnonblocking(c->pg, 1);
    if (PQenterPipelineMode(c->pg) != 1) {
        conn_drop(c, RX_EUNAVAIL, "cannot enter pipeline mode");
        return;
    }
    uv_timer_stop(&c->timer);
    if (c->backoff_ms > 0)
        kn_log(RX_LOG_INFO, NULL, "database connection %d/%d is back", db->w->id, c->idx);
    c->state = PC_UP;
    c->backoff_ms = 0;
    db->live++;
    atomic_fetch_add(&live_total, 1);
    db->seen_gen = atomic_fetch_add(&up_gen, 1) + 1;
    if (db->live == 1)
        kick_down_conns(db); /* the database is back: no need to wait out backoffs */
    poll_update(c, UV_READABLE);
    pump(db);
}

static void connect_step(pconn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        poll_update(c, UV_READABLE);
        break;
    case PGRES_POLLING_WRITING:
        poll_update(c, UV_WRITABLE);
        break;
    case PGRES_POLLING_OK:
        conn_ready(c);
        break;
    default: {
        char why[256];
        snprintf(why, sizeof(why), "connect failed: %s", PQerrorMessage(c->pg));
        char *nl = strchr(why, '\n');
        if (nl)
            *nl = '\0';
        if (c->backoff_ms == 0)
            kn_log(RX_LOG_WARN, NULL, "database %d/%d: %s", c->db->w->id, c->idx, why);
        conn_drop(c, RX_EUNAVAIL, why);
    }
    }
}

static const char *const conn_keys[] = {"dbname", "application_name", "options", NULL};

/* Session settings of a pool connection: the text forms rx_rows_value reads,
 * and database.plan_cache_mode (checked at start, server.c). Generic plans by
 * default: statements are prepared once per connection, and with the
 * planner's custom plan per execution a page of 50 rows spent more time
 * planning than running (PostgreSQL 15 rejects the generic plan of anything
 * with LIMIT $n, costing the limit as 10 % of the rows). Our statements are
 * plain (rx_list builds one text per combination of filters; lookups go by
 * primary key), so one plan fits every parameter. */
static void conn_options(char *buf, size_t len)
{
    const char *mode = kn_conf ? kn_config_get(kn_conf, "database.plan_cache_mode") : NULL;
    if (mode == NULL || *mode == '\0')
        mode = "force_generic_plan";
    snprintf(buf, len,
             "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c plan_cache_mode=%s",
             mode);
}

static void conn_connect(pconn *c)
{
    const char *url = kn_db_url();
    char opts[192];
    conn_options(opts, sizeof opts);
    const char *vals[] = {url, "rxd", opts, NULL};
    c->pg = PQconnectStartParams(conn_keys, vals, 1);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
        c->state = PC_DOWN;
        if (c->pg) {
            PQfinish(c->pg);
            c->pg = NULL;
        }
        c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 100;
        if (c->backoff_ms > 5000)
            c->backoff_ms = 5000;
        uv_timer_start(&c->timer, on_conn_timer, (uint64_t)c->backoff_ms, 0);
        return;
    }
    c->state = PC_CONNECTING;
    uv_timer_start(&c->timer, on_conn_timer, (uint64_t)c->db->timeout_ms, 0);
    poll_update(c, UV_WRITABLE);
}

/* ---- sending and receiving ---- */

/* The slot of `sql` in the connection's statement cache (adding it when
 * new: then *fresh says it must be prepared first), or -1 when the cache is
 * full and the statement runs unnamed. */
static int stmt_slot(pconn *c, const char *sql, bool *fresh)
{
    uint64_t h = fnv1a(sql);
    size_t slot = h % STMT_CACHE;
    for (size_t i = 0; i < STMT_CACHE; i++) {
        size_t k = (slot + i) % STMT_CACHE;
        if (c->cache[k].sql == NULL) {
            if (c->ncache >= STMT_CACHE * 3 / 4)
                return -1;
            c->cache[k].sql = strdup(sql);
            if (c->cache[k].sql == NULL)
                return -1;
            c->cache[k].hash = h;
            c->ncache++;
            *fresh = true;
            return (int)k;
        }
        if (c->cache[k].hash == h && strcmp(c->cache[k].sql, sql) == 0) {
            *fresh = c->cache[k].bad;
            c->cache[k].bad = false;
            return (int)k;
        }
    }
    return -1;
}

static bool send_query(pconn *c, dbq *q)
{
    q->fresh_slot = -1;
    for (int i = 0; i < q->nstmts; i++) {
        dbstmt *s = &q->stmts[i];
        bool fresh = false;
        /* A transaction's statements run unnamed: after an error the rest of
         * its pipeline is skipped, Prepares included, which would leave the
         * cache believing in statements the server never saw. */
        int slot = q->nstmts == 1 ? stmt_slot(c, s->sql, &fresh) : -1;
        if (slot < 0) {
            if (!PQsendQueryParams(c->pg, s->sql, s->n, NULL, (const char *const *)s->vals, s->lens,
                                   s->fmts, 0))
                return false;
            continue;
        }
        char nm[24];
        snprintf(nm, sizeof(nm), "rx%d", slot);
        if (fresh) {
            if (!PQsendPrepare(c->pg, nm, s->sql, s->n, NULL))
                return false;
            q->fresh_slot = slot;
        }
        if (!PQsendQueryPrepared(c->pg, nm, s->n, (const char *const *)s->vals, s->lens, s->fmts,
                                 0))
            return false;
    }
    return PQpipelineSync(c->pg) == 1;
}

static void flush(pconn *c)
{
    int r = PQflush(c->pg);
    if (r < 0)
        conn_drop(c, RX_EUNAVAIL, "send failed");
    else
        poll_update(c, r == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE);
}

static void pump(kn_db *db)
{
    while (db->qhead) {
        /* An idle connection first; else the shortest pipeline. */
        pconn *best = NULL;
        for (int i = 0; i < db->n; i++) {
            pconn *c = &db->conns[i];
            if (c->state != PC_UP || c->inflight >= db->pipeline)
                continue;
            if (best == NULL || c->inflight < best->inflight)
                best = c;
            if (c->inflight == 0)
                break;
        }
        if (best == NULL)
            return;
        dbq *q = db->qhead;
        db->qhead = q->next;
        if (db->qhead == NULL)
            db->qtail = NULL;
        db->qlen--;
        q->next = NULL;
        q->sent_ms = now_ms(db);
        if (best->tail)
            best->tail->next = q;
        else
            best->head = q;
        best->tail = q;
        best->inflight++;
        if (!send_query(best, q)) {
            char why[256];
            snprintf(why, sizeof(why), "send failed: %s", PQerrorMessage(best->pg));
            conn_drop(best, RX_EUNAVAIL, why);
            continue;
        }
        if (best->head == q)
            arm_query_deadline(best);
        flush(best);
    }
}

static void take_result(pconn *c, PGresult *res)
{
    dbq *q = c->head;
    if (q == NULL) {
        PQclear(res);
        return;
    }
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_PIPELINE_SYNC) {
        PQclear(res);
        c->head = q->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->inflight--;
        q->next = NULL;
        arm_query_deadline(c);
        deliver(q);
        return;
    }
    if (q->nresults++ == 0 && q->fresh_slot >= 0 && st != PGRES_COMMAND_OK)
        c->cache[q->fresh_slot].bad = true; /* the server has no such statement */
    if (st == PGRES_PIPELINE_ABORTED) {
        PQclear(res);
        return;
    }
    if (q->failed) {
        PQclear(res); /* keep the first error */
        return;
    }
    if (q->res)
        PQclear(q->res);
    q->res = res;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        q->failed = true;
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    pconn *c = p->data;
    if (c->state == PC_CONNECTING) {
        connect_step(c);
        return;
    }
    if (c->state != PC_UP)
        return;
    if (status < 0) {
        conn_drop(c, RX_EUNAVAIL, "socket error");
        return;
    }
    if (events & UV_WRITABLE) {
        flush(c);
        if (c->state != PC_UP)
            return;
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(c->pg)) {
            char why[256];
            snprintf(why, sizeof(why), "connection lost: %s", PQerrorMessage(c->pg));
            char *nl = strchr(why, '\n');
            if (nl)
                *nl = '\0';
            conn_drop(c, RX_EUNAVAIL, why);
            return;
        }
        while (c->state == PC_UP && !PQisBusy(c->pg)) {
            PGresult *res = PQgetResult(c->pg);
            if (res == NULL) {
                /* End of one statement's results; more may follow. */
                if (c->head == NULL || PQisBusy(c->pg))
                    break;
                res = PQgetResult(c->pg);
                if (res == NULL)
                    break;
            }
            take_result(c, res);
        }
        if (c->state == PC_UP && PQstatus(c->pg) == CONNECTION_BAD)
            conn_drop(c, RX_EUNAVAIL, "connection lost");
        else if (c->state == PC_UP)
            pump(c->db);
    }
}

/* ---- worker life ---- */

/* The pool is freed when its last libuv handle has closed. */
static void db_unref(kn_db *db)
{
    if (--db->handles == 0) {
        free(db->conns);
        free(db);
    }
}

static void on_db_handle_closed(uv_handle_t *h)
{
    db_unref(h->data);
}

static void on_conn_timer_closed(uv_handle_t *h)
{
    pconn *c = h->data;
    c->handles--;
    db_unref(c->db);
}

int kn_db_worker_start(kn_worker *w)
{
    kn_db *db = calloc(1, sizeof(*db));
    if (db == NULL)
        return RX_ENOMEM;
    db->w = w;
    w->db = db;
    long long pool = 4;
    if (kn_config_int(kn_conf, "database.pool_size", 4, &pool) != 0 || pool < 1 || pool > 256)
        pool = 4;
    if (kn_config_int(kn_conf, "database.queue_size", 1024, &db->qmax) != 0 || db->qmax < 0)
        db->qmax = 1024;
    if (kn_config_duration_ms(kn_conf, "database.timeout", 5000, &db->timeout_ms) != 0 ||
        db->timeout_ms < 1)
        db->timeout_ms = 5000;
    if (kn_config_int(kn_conf, "database.pipeline", 1, &db->pipeline) != 0 || db->pipeline < 1)
        db->pipeline = 1;
    uv_timer_init(&w->loop, &db->tick);
    db->tick.data = db;
    uv_timer_init(&w->loop, &db->defer);
    db->defer.data = db;
    db->handles = 2;
    if (kn_db_url() == NULL)
        return 0;
    db->n = (int)pool;
    db->conns = calloc((size_t)db->n, sizeof(pconn));
    if (db->conns == NULL) {
        db->n = 0;
        return RX_ENOMEM;
    }
    for (int i = 0; i < db->n; i++) {
        pconn *c = &db->conns[i];
        c->db = db;
        c->idx = i;
        uv_timer_init(&w->loop, &c->timer);
        c->timer.data = c;
        c->handles = 1;
        db->handles++;
        conn_connect(c);
    }
    return 0;
}

void kn_db_worker_stop(kn_worker *w)
{
    kn_db *db = w->db;
    if (db == NULL || db->stopping)
        return;
    db->stopping = true;
    for (int i = 0; i < db->n; i++) {
        pconn *c = &db->conns[i];
        if (c->state == PC_UP) {
            db->live--;
            atomic_fetch_sub(&live_total, 1);
        }
        c->state = PC_CLOSING;
        fail_inflight(c, RX_EUNAVAIL, "the server is shutting down");
        poll_close(c, true);
        for (int k = 0; k < STMT_CACHE; k++)
            free(c->cache[k].sql);
        uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
    }
    while (db->qhead) {
        dbq *q = db->qhead;
        db->qhead = q->next;
        q->err = RX_EUNAVAIL;
        q->msg = strdup("the server is shutting down");
        deliver(q);
    }
    db->qtail = NULL;
    on_defer(&db->defer);
    w->db = NULL;
    uv_close((uv_handle_t *)&db->tick, on_db_handle_closed);
    uv_close((uv_handle_t *)&db->defer, on_db_handle_closed);
}

bool kn_db_idle(const kn_worker *w)
{
    const kn_db *db = w->db;
    if (db == NULL)
        return true;
    if (db->qhead || db->dhead)
        return false;
    for (int i = 0; i < db->n; i++)
        if (db->conns[i].head)
            return false;
    return true;
}

int kn_db_ready(char *why, size_t len, void *data)
{
    (void)data;
    if (kn_db_url() == NULL)
        return 0;
    if (atomic_load(&live_total) > 0)
        return 0;
    snprintf(why, len, "database unreachable");
    return -1;
}

/* ---- blocking use (CLI, migrations) ---- */

PGconn *kn_db_connect_blocking(char *err, size_t errlen)
{
    const char *url = kn_db_url();
    if (url == NULL) {
        snprintf(err, errlen, "database.url is not set (RXD_DATABASE_URL)");
        return NULL;
    }
    char opts[192];
    conn_options(opts, sizeof opts);
    const char *vals[] = {url, "rxd", opts, NULL};
    PGconn *pg = PQconnectdbParams(conn_keys, vals, 1);
    if (pg != NULL && PQstatus(pg) == CONNECTION_OK)
        PQsetNoticeProcessor(pg, quiet_notices, NULL);
    if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the database: %s",
                 pg ? PQerrorMessage(pg) : "out of memory");
        char *nl = strchr(err, '\n');
        if (nl)
            *nl = '\0';
        if (pg)
            PQfinish(pg);
        return NULL;
    }
    return pg;
}

static PGconn *cli_pg;

rx_rows *rx_db_run(rx_module *m, const char *sql, int nparams, const rx_param *params)
{
    (void)m;
    char err[512];
    if (cli_pg == NULL || PQstatus(cli_pg) != CONNECTION_OK) {
        if (cli_pg)
            PQfinish(cli_pg);
        cli_pg = kn_db_connect_blocking(err, sizeof(err));
        if (cli_pg == NULL)
            return kn_rows_from_result(NULL, RX_EUNAVAIL, err);
    }
    dbstmt s = {0};
    if (stmt_fill(&s, sql, nparams, params) != 0) {
        free(s.sql);
        for (int k = 0; k < s.n; k++)
            free(s.vals ? s.vals[k] : NULL);
        free(s.vals);
        free(s.lens);
        free(s.fmts);
        return kn_rows_from_result(NULL, RX_ENOMEM, "out of memory");
    }
    PGresult *res =
        PQexecParams(cli_pg, s.sql, s.n, NULL, (const char *const *)s.vals, s.lens, s.fmts, 0);
    free(s.sql);
    for (int k = 0; k < s.n; k++)
        free(s.vals[k]);
    free(s.vals);
    free(s.lens);
    free(s.fmts);
    return kn_rows_from_result(res, res ? 0 : RX_EUNAVAIL, res ? NULL : PQerrorMessage(cli_pg));
}

void rx_rows_free(rx_rows *r)
{
    if (r == NULL || !r->owned)
        return;
    if (r->res)
        PQclear(r->res);
    free(r->msg);
    free(r);
}

void kn_db_cli_close(void)
{
    if (cli_pg) {
        PQfinish(cli_pg);
        cli_pg = NULL;
    }
}

/* ---- rows ---- */

bool rx_rows_failed(const rx_rows *r)
{
    return r->err != 0;
}

int rx_rows_error(const rx_rows *r)
{
    return r->err;
}

const char *rx_rows_sqlstate(const rx_rows *r)
{
    const char *s = r->res ? PQresultErrorField(r->res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

const char *rx_rows_constraint(const rx_rows *r)
{
    const char *s = r->res ? PQresultErrorField(r->res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    return s ? s : "";
}

const char *rx_rows_message(const rx_rows *r)
{
    return r->msg ? r->msg : "";
}

int rx_rows_count(const rx_rows *r)
{
    return r->err == 0 && r->res ? PQntuples(r->res) : 0;
}

int64_t rx_rows_affected(const rx_rows *r)
{
    const char *t = r->err == 0 && r->res ? PQcmdTuples(r->res) : "";
    return *t ? strtoll(t, NULL, 10) : 0;
}

int rx_rows_columns(const rx_rows *r)
{
    return r->err == 0 && r->res ? PQnfields(r->res) : 0;
}

const char *rx_rows_column_name(const rx_rows *r, int col)
{
    if (col < 0 || col >= rx_rows_columns(r))
        return NULL;
    return PQfname(r->res, col);
}

int rx_rows_column(const rx_rows *r, const char *name)
{
    if (rx_rows_columns(r) == 0)
        return -1;
    for (int i = 0; i < PQnfields(r->res); i++)
        if (strcmp(PQfname(r->res, i), name) == 0)
            return i;
    return -1;
}

static bool in_range(const rx_rows *r, int row, int col)
{
    return row >= 0 && col >= 0 && row < rx_rows_count(r) && col < rx_rows_columns(r);
}

bool rx_rows_isnull(const rx_rows *r, int row, int col)
{
    return !in_range(r, row, col) || PQgetisnull(r->res, row, col);
}

const char *rx_rows_text(const rx_rows *r, int row, int col)
{
    if (rx_rows_isnull(r, row, col))
        return NULL;
    return PQgetvalue(r->res, row, col);
}

int rx_rows_int(const rx_rows *r, int row, int col, int64_t *out)
{
    const char *t = rx_rows_text(r, row, col);
    if (t == NULL)
        return RX_ENOENT;
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (errno != 0 || end == t || *end != '\0')
        return RX_ERANGE;
    *out = v;
    return 0;
}

int rx_rows_bool(const rx_rows *r, int row, int col, bool *out)
{
    const char *t = rx_rows_text(r, row, col);
    if (t == NULL)
        return RX_ENOENT;
    if (strcmp(t, "t") == 0)
        *out = true;
    else if (strcmp(t, "f") == 0)
        *out = false;
    else
        return RX_ERANGE;
    return 0;
}

/* "2026-11-22 10:00:00.123+00" -> "2026-11-22T10:00:00.123Z" */
static json_t *iso_time(const char *t, bool with_tz)
{
    char buf[64];
    size_t n = strlen(t);
    if (n >= sizeof(buf) - 2)
        return json_string(t);
    memcpy(buf, t, n + 1);
    char *sp = strchr(buf, ' ');
    if (sp)
        *sp = 'T';
    if (with_tz) {
        size_t l = strlen(buf);
        if (l > 3 && strcmp(buf + l - 3, "+00") == 0)
            strcpy(buf + l - 3, "Z");
    } else {
        strcat(buf, "Z");
    }
    return json_string(buf);
}

json_t *rx_rows_value(const rx_rows *r, int row, int col)
{
    if (!in_range(r, row, col))
        return NULL;
    if (PQgetisnull(r->res, row, col))
        return json_null();
    const char *t = PQgetvalue(r->res, row, col);
    switch (PQftype(r->res, col)) {
    case 16: /* bool */
        return json_boolean(t[0] == 't');
    case 20: /* int8 */
    case 21: /* int2 */
    case 23: /* int4 */
    case 26: /* oid */
        return json_integer(strtoll(t, NULL, 10));
    case 700:   /* float4 */
    case 701: { /* float8: NaN and Infinity are not JSON numbers */
        double d = strtod(t, NULL);
        return isfinite(d) ? json_real(d) : json_null();
    }
    case 114:    /* json */
    case 3802: { /* jsonb */
        json_t *j = json_loads(t, JSON_DECODE_ANY, NULL);
        /* An integer beyond int64 (only SQL can store one: request bodies go
         * through jansson too) keeps the document a document, its numbers
         * as reals; rx_reply_rows_page copies the text exactly. */
        if (j == NULL)
            j = json_loads(t, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
        return j ? j : json_string(t);
    }
    case 1184: /* timestamptz */
        return iso_time(t, true);
    case 1114: /* timestamp: stored as UTC by convention */
        return iso_time(t, false);
    default: /* text, varchar, numeric (money stays a string), date, uuid, ... */
        return json_string(t);
    }
}

json_t *rx_rows_object(const rx_rows *r, int row)
{
    if (row < 0 || row >= rx_rows_count(r))
        return NULL;
    json_t *o = json_object();
    for (int c = 0; c < PQnfields(r->res); c++)
        json_object_set_new(o, PQfname(r->res, c), rx_rows_value(r, row, c));
    return o;
}

json_t *rx_rows_array(const rx_rows *r)
{
    json_t *a = json_array();
    for (int i = 0; i < rx_rows_count(r); i++)
        json_array_append_new(a, rx_rows_object(r, i));
    return a;
}

/* ---- rows straight to JSON text (list pages) ----
 * A page of 50 rows through a jansson tree cost ~2.5M instructions (building,
 * dumping and freeing 50 objects): bench/connector.sh. Lists write the text
 * from the result directly, with the same conversions as rx_rows_value(). */

typedef struct tbuf {
    char *p;
    size_t len, cap;
    bool oom;
} tbuf;

/* Room for n more bytes (and a NUL); false once out of memory. */
static bool tb_grow(tbuf *b, size_t n)
{
    if (b->oom)
        return false;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + n + 1)
        nc *= 2;
    char *np = realloc(b->p, nc);
    if (np == NULL) {
        b->oom = true;
        return false;
    }
    b->p = np;
    b->cap = nc;
    return true;
}

static inline void tb_put(tbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap && !tb_grow(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void tb_str(tbuf *b, const char *s, size_t n)
{
    /* the common case, nothing to escape: one copy */
    size_t k = 0;
    while (k < n && (unsigned char)s[k] >= 0x20 && s[k] != '"' && s[k] != '\\')
        k++;
    if (b->len + n + 3 > b->cap && !tb_grow(b, n + 2))
        return;
    b->p[b->len++] = '"';
    memcpy(b->p + b->len, s, k);
    b->len += k;
    const char *run = s + k;
    for (s += k; k < n; k++, s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        tb_put(b, run, (size_t)(s - run));
        char esc[8];
        switch (ch) {
        case '"':
            tb_put(b, "\\\"", 2);
            break;
        case '\\':
            tb_put(b, "\\\\", 2);
            break;
        case '\n':
            tb_put(b, "\\n", 2);
            break;
        case '\r':
            tb_put(b, "\\r", 2);
            break;
        case '\t':
            tb_put(b, "\\t", 2);
            break;
        default:
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            tb_put(b, esc, 6);
        }
        run = s + 1;
    }
    tb_put(b, run, (size_t)(s - run));
    tb_put(b, "\"", 1);
}

/* A JSON number as PostgreSQL prints it: digits, '-', '.', 'e' only. */
static bool json_number_text(const char *t)
{
    if (*t == '-')
        t++;
    if (*t < '0' || *t > '9')
        return false;
    for (; *t; t++)
        if (!((*t >= '0' && *t <= '9') || *t == '.' || *t == 'e' || *t == 'E' || *t == '+' ||
              *t == '-'))
            return false;
    return true;
}

/* "2026-01-02 03:04:05.123+00" -> "2026-01-02T03:04:05.123Z" (timestamptz);
 * a timestamp without zone gets the Z appended. */
static void tb_time(tbuf *b, const char *t, size_t n, bool with_tz)
{
    char buf[64];
    if (n >= sizeof(buf) - 2) {
        tb_str(b, t, n);
        return;
    }
    memcpy(buf, t, n + 1);
    char *sp = memchr(buf, ' ', n);
    if (sp)
        *sp = 'T';
    if (!with_tz)
        buf[n++] = 'Z';
    else if (n > 3 && memcmp(buf + n - 3, "+00", 3) == 0)
        buf[(n -= 2) - 1] = 'Z';
    tb_str(b, buf, n);
}

static void tb_value(tbuf *b, const PGresult *res, int row, int col, Oid type)
{
    if (PQgetisnull(res, row, col)) {
        tb_put(b, "null", 4);
        return;
    }
    const char *t = PQgetvalue(res, row, col);
    size_t n = (size_t)PQgetlength(res, row, col);
    switch (type) {
    case 16: /* bool */
        tb_put(b, t[0] == 't' ? "true" : "false", t[0] == 't' ? 4 : 5);
        return;
    case 20:  /* int8 */
    case 21:  /* int2 */
    case 23:  /* int4 */
    case 26:  /* oid */
    case 700: /* float4 */
    case 701: /* float8: NaN and Infinity are not JSON numbers */
        if (json_number_text(t))
            tb_put(b, t, n);
        else
            tb_put(b, "null", 4);
        return;
    case 114:  /* json */
    case 3802: /* jsonb: PostgreSQL's text is valid JSON */
        tb_put(b, t, n);
        return;
    case 1184:
        tb_time(b, t, n, true);
        return;
    case 1114:
        tb_time(b, t, n, false);
        return;
    default:
        tb_str(b, t, n);
    }
}

void rx_reply_rows_page(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    const PGresult *res = rows->res;
    int n = rx_rows_count(rows), ncol = rx_rows_columns(rows);
    int tc = rx_rows_column(rows, "total_count");
    int64_t total = n;
    if (n > 0 && tc >= 0)
        rx_rows_int(rows, 0, tc, &total);
    /* Per column, once: its type and its key text ("name": with the comma
     * before it), so a row is only values and copies. */
    tbuf keys = {0};
    size_t *key_at = calloc((size_t)ncol + 1, sizeof(*key_at));
    Oid *types = calloc((size_t)ncol + 1, sizeof(*types));
    bool first = true;
    for (int c = 0; c < ncol && key_at != NULL && types != NULL; c++) {
        key_at[c] = keys.len;
        if (c == tc)
            continue;
        if (!first)
            tb_put(&keys, ",", 1);
        first = false;
        const char *name = PQfname(res, c);
        tb_str(&keys, name, strlen(name));
        tb_put(&keys, ":", 1);
        types[c] = PQftype(res, c);
    }
    if (key_at != NULL)
        key_at[ncol] = keys.len;
    tbuf b = {0};
    if (key_at != NULL && types != NULL && tb_grow(&b, (size_t)n * (keys.len + 64) + 2)) {
        tb_put(&b, "[", 1);
        for (int i = 0; i < n; i++) {
            tb_put(&b, i ? ",{" : "{", i ? 2 : 1);
            for (int c = 0; c < ncol; c++) {
                if (c == tc)
                    continue;
                tb_put(&b, keys.p + key_at[c], key_at[c + 1] - key_at[c]);
                tb_value(&b, res, i, c, types[c]);
            }
            tb_put(&b, "}", 1);
        }
        tb_put(&b, "]", 1);
    } else {
        b.oom = true;
    }
    bool oom = b.oom || keys.oom;
    free(keys.p);
    free(key_at);
    free(types);
    if (oom) {
        free(b.p);
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    kn_reply_page_text(req, b.p, b.len, (size_t)n, total);
}

void rx_reply_row(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) == 0) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    rx_reply_json(req, 200, rx_rows_object(rows, 0));
}

void rx_reply_deleted(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) == 0) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    rx_reply(req, 204, NULL, NULL, 0);
}

void rx_reply_db_error(rx_req *req, const rx_rows *rows)
{
    if (rows->err == RX_EUNAVAIL || rows->err == RX_ETIMEDOUT) {
        kn_log(RX_LOG_WARN, NULL, "request %s: database unavailable: %s", req->id ? req->id : "-",
               rx_rows_message(rows));
        rx_reply_unavailable(req, 5);
        return;
    }
    kn_log(RX_LOG_ERROR, NULL, "request %s: database error %s: %s", req->id ? req->id : "-",
           rx_rows_sqlstate(rows), rx_rows_message(rows));
    rx_reply_error(req, 500, "error", "A server error occurred.");
}
