/*
 * kn_http.h — the request/connection/worker structures shared by http.c
 * (bytes in and out), req.c (the SDK's view of a request), dispatch.c (hook
 * phases, built-in routes) and server.c (workers and shutdown).
 */
#ifndef KN_HTTP_H
#define KN_HTTP_H

#include "kn.h"

#include <llhttp.h>
#include <stdatomic.h>
#include <time.h>
#include <uv.h>

/* ---- arena.c: request-scoped memory, freed in one go ---- */
typedef struct kn_arena_chunk kn_arena_chunk;
typedef struct kn_arena {
    kn_arena_chunk *head;
    char *ptr, *end;
} kn_arena;
void *kn_arena_alloc(kn_arena *a, size_t size); /* zeroed, 16-aligned; NULL on OOM */
void *kn_arena_realloc(kn_arena *a, void *old, size_t oldsize, size_t newsize);
char *kn_arena_strndup(kn_arena *a, const char *s, size_t n);
void kn_arena_free(kn_arena *a);

/* ---- settings read from the config once at start ---- */
typedef struct kn_settings {
    char listen_host[64];
    int listen_port;
    int workers;
    long long max_connections;
    long long shutdown_grace_ms;
    long long header_bytes, body_limit, json_depth;
    long long header_timeout_ms, body_timeout_ms, keepalive_timeout_ms;
    char **cors_origins;
    size_t ncors_origins;
    bool cors_credentials;
    long long cors_max_age;
    char *cors_allow_headers;  /* joined with ", " */
    char *cors_expose_headers; /* joined with ", " */
    char **trusted_proxies;
    size_t ntrusted_proxies;
    bool access_log;
    const char *web_root;
} kn_settings;

extern kn_settings kn_set;
extern kn_config *kn_conf;
/* Read kn_set from kn_conf; on error print what is wrong into err and return -1. */
int kn_settings_load(char *err, size_t errlen);
void kn_settings_free(void);

/* ---- metrics.c ---- */
#define KN_LAT_BUCKETS 12
typedef struct kn_route_stats {
    uint64_t status[24]; /* slot per common status, last = other */
    uint64_t lat[KN_LAT_BUCKETS + 1];
    uint64_t lat_sum_us;
    uint64_t count;
} kn_route_stats;

typedef struct kn_worker kn_worker;
int kn_metrics_init(kn_worker *w);
void kn_metrics_free(kn_worker *w);
void kn_metrics_record(kn_worker *w, const kn_route *route, int status, uint64_t dur_us);
/* Prometheus text of every worker's counters. Caller frees. */
char *kn_metrics_render(size_t *len);

/* ---- connections ---- */
typedef enum kn_conn_state {
    KN_IDLE,       /* between requests, waiting */
    KN_HEADERS,    /* reading a request's header block */
    KN_BODY,       /* reading its body */
    KN_HANDLING,   /* a complete request is with the dispatcher/handler */
    KN_CLOSING,
} kn_conn_state;

typedef struct kn_header {
    char *name, *value;
    size_t nlen, vlen;
} kn_header;

typedef struct kn_conn kn_conn;

struct rx_req {
    kn_conn *conn; /* NULL once the connection is gone */
    kn_worker *w;
    kn_arena arena;
    uint64_t start_ns;

    /* request line + headers */
    unsigned method;
    const char *method_name;
    char *url;
    size_t url_len, url_cap;
    char *path, *query; /* split from url; path raw (not decoded) */
    size_t path_len;
    kn_header *hdrs;
    size_t nhdrs, hdrs_cap;
    bool in_value; /* parser is inside a header value */
    bool headers_done; /* what follows are trailers */
    char *path_decoded;
    size_t header_bytes;
    bool chunked, keep_alive, expect_continue;
    char *body;
    size_t body_len, body_cap;
    size_t body_limit;

    /* routing */
    kn_match match;
    kn_route *route;
    char **params_decoded; /* lazily decoded capture values */
    const char *id;

    /* hooks */
    int phase;
    size_t hook_i;
    rx_principal principal;
    bool scoped;
    int64_t scope_pharmacy, scope_user;
    bool auth_denied;
    int fail_status;
    const char *fail_code, *fail_detail;

    /* handler state */
    json_t *json;
    bool json_done;
    void *data;
    int pending; /* async operations in flight (offload, db, hooks) */
    bool detached; /* no client ever: a job or internal work (kn_req_detached) */
    void *job;     /* jobs.c: the job this context runs */

    /* reply */
    bool replied;
    int status;
    kn_header *rhdrs;
    size_t nrhdrs, rhdrs_cap;
    char *rbody;        /* malloc()ed (rbody_free) or static/mmap()ed */
    size_t rbody_len;
    bool rbody_free;
    char *rhead;        /* serialised status line + headers (arena) */
    size_t rhead_len;
    bool close_after;
};

struct kn_conn {
    uv_tcp_t tcp; /* first: the handle's address is the connection's */
    uv_timer_t timer;
    llhttp_t parser;
    kn_worker *w;
    rx_req *req;
    kn_conn_state state;
    int handles; /* open libuv handles; freed when 0 */
    char *pending; /* bytes read but not parsed while a request is in flight */
    size_t pending_len;
    int err_status; /* set by a parser callback to answer 413/431 */
    bool reading;
    bool writing;
    bool dispatching; /* kn_dispatch() is on the stack for this connection */
    bool close_after_write;
    uv_write_t wreq;
    kn_conn *prev, *next; /* the worker's list, for shutdown */
    char peer[48];
};

struct kn_worker {
    int id;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;
    uv_timer_t drain_timer;
    struct kn_db *db;       /* db.c */
    struct kn_redis *redis; /* redis.c */
    struct kn_jobs *jobs;   /* jobs.c */
    uv_thread_t thread;
    int listen_fd;
    bool listening;
    atomic_int cmd; /* 1 = drain, 2 = force close */
    bool draining;
    kn_conn *conns;
    long long nconns;
    time_t date_at;
    char date[40];
    uint64_t rid_base, rid_seq;
    kn_route_stats *stats; /* per route + 1 for unmatched */
    atomic_llong open_conns;
    atomic_ullong total_conns;
    char readbuf[65536];
};

extern kn_worker **kn_workers;
extern atomic_llong kn_open_total;
extern int kn_nworkers;

/* http.c */
void kn_on_connection(uv_stream_t *server, int status);
/* Serve an already connected stream socket on w's loop (tests, fuzzing). */
int kn_http_adopt(kn_worker *w, int fd);
/* Serialise and write req's reply (called by req.c after rx_reply*). */
void kn_http_send(rx_req *req);
/* A request with no connection any more: free it when nothing is pending. */
void kn_req_maybe_free(rx_req *req);
/* server.c asks a worker's connections to finish (drain) or close now. */
void kn_http_drain(kn_worker *w, bool force);

/* dispatch.c */
/* An async operation of req finished and its callback has run: if that was
 * the last work of a live request and nobody replied, answer 500 (naming
 * `what` in the log); then drop the operation's hold (may free req). */
void kn_req_async_done(rx_req *req, const char *what);
void kn_dispatch(rx_req *req);
/* Take the client's X-Request-Id when sane, else generate one. */
void kn_req_assign_id(rx_req *req);
/* Answer an error before routing (parser errors, limits). */
void kn_reply_early(rx_req *req, int status, const char *code, const char *detail);
int kn_builtin_routes(void);
int kn_openapi_prepare(char *err, size_t errlen);
void kn_dispatch_free(void);

/* static.c: files of web_root (Swagger UI, Redoc) */
void kn_static_serve(rx_req *req, const char *file);
void kn_static_free(void);

/* req.c */
uint64_t kn_now_ns(void);
/* Add a header to the reply without the SDK's checks (kernel use). */
void kn_reply_header_raw(rx_req *req, const char *name, const char *value);
const char *kn_status_text(int status);
/* A list page whose items are already JSON array text (malloc()ed, taken
 * over): the same paging, headers and body shape as rx_reply_page(). */
void kn_reply_page_text(rx_req *req, char *array, size_t len, size_t nitems, int64_t total);
/* Reply with a body the kernel owns (mmap()ed file, static text): no copy. */
void kn_reply_static(rx_req *req, int status, const char *content_type, const void *body,
                     size_t len);

/* server.c */
/* Run workers until SIGTERM/SIGINT; http false = jobs only (`rxd worker`). */
int kn_serve(bool http);
int kn_readiness(char *buf, size_t buflen, bool *ready); /* JSON report into buf */

#endif
