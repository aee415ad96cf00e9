/*
 * server.c — workers and their lifetime. `workers` threads each run a libuv
 * loop with its own listening socket on the same address (SO_REUSEPORT: the
 * OS spreads connections; libuv 1.44 has no flag for it, so the socket is
 * made here and handed to uv_tcp_open). The main thread only waits for
 * signals: SIGTERM/SIGINT stop accepting, let in-flight requests finish up
 * to `shutdown_grace`, then close what is left and exit 0.
 */
#include "kn_data.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

kn_settings kn_set;
kn_config *kn_conf;
kn_worker **kn_workers;
int kn_nworkers;

static char *join_list(const char *value)
{
    size_t n;
    char **v = kn_split_list(value, &n);
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 2;
    char *s = calloc(1, len);
    for (size_t i = 0; s && i < n; i++) {
        if (i)
            strcat(s, ", ");
        strcat(s, v[i]);
    }
    kn_strv_free(v);
    return s;
}

#define GET(fn, key, def, out)                                                                     \
    do {                                                                                           \
        if (fn(kn_conf, key, def, out) != 0) {                                                     \
            char o_[128];                                                                          \
            const char *w_ = kn_config_origin(kn_conf, key, o_, sizeof(o_));                       \
            snprintf(err, errlen, "config %s (%s): invalid value '%s'", key, w_ ? w_ : "?",        \
                     kn_config_get(kn_conf, key));                                                 \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

int kn_settings_load(char *err, size_t errlen)
{
    kn_settings *s = &kn_set;
    memset(s, 0, sizeof(*s));
    const char *listen = kn_config_get(kn_conf, "listen");
    if (listen == NULL || *listen == '\0')
        listen = "127.0.0.1:8000";
    const char *colon = strrchr(listen, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || *end != '\0' || port < 0 || port > 65535 ||
        (size_t)(colon - listen) >= sizeof(s->listen_host)) {
        snprintf(err, errlen, "config listen: '%s' is not HOST:PORT", listen);
        return -1;
    }
    memcpy(s->listen_host, listen, (size_t)(colon - listen));
    s->listen_host[colon - listen] = '\0';
    if (s->listen_host[0] == '[') { /* [::1]:8000 */
        size_t l = strlen(s->listen_host);
        memmove(s->listen_host, s->listen_host + 1, l);
        if (l >= 2 && s->listen_host[l - 2] == ']')
            s->listen_host[l - 2] = '\0';
    }
    s->listen_port = (int)port;

    const char *workers = kn_config_get(kn_conf, "workers");
    if (workers == NULL || *workers == '\0' || strcmp(workers, "auto") == 0) {
        s->workers = (int)uv_available_parallelism();
    } else {
        long long w;
        GET(kn_config_int, "workers", 1, &w);
        if (w < 1 || w > 256) {
            snprintf(err, errlen, "config workers: %lld is out of range (1..256 or auto)", w);
            return -1;
        }
        s->workers = (int)w;
    }
    GET(kn_config_int, "max_connections", 10000, &s->max_connections);
    GET(kn_config_duration_ms, "shutdown_grace", 30000, &s->shutdown_grace_ms);
    GET(kn_config_size, "limits.header_bytes", 32768, &s->header_bytes);
    GET(kn_config_size, "limits.body", 1048576, &s->body_limit);
    GET(kn_config_int, "limits.json_depth", 64, &s->json_depth);
    GET(kn_config_duration_ms, "timeouts.header", 60000, &s->header_timeout_ms);
    GET(kn_config_duration_ms, "timeouts.body", 60000, &s->body_timeout_ms);
    GET(kn_config_duration_ms, "timeouts.keepalive", 75000, &s->keepalive_timeout_ms);
    if (s->max_connections < 1 || s->header_bytes < 1024 || s->body_limit < 1 ||
        s->json_depth < 1 || s->header_timeout_ms < 1 || s->body_timeout_ms < 1 ||
        s->keepalive_timeout_ms < 1) {
        snprintf(err, errlen, "config: limits and timeouts must be positive (header_bytes >= 1k)");
        return -1;
    }
    s->cors_origins =
        kn_split_list(kn_config_get(kn_conf, "cors.allowed_origins"), &s->ncors_origins);
    GET(kn_config_bool, "cors.allow_credentials", true, &s->cors_credentials);
    for (size_t i = 0; i < s->ncors_origins; i++)
        if (strcmp(s->cors_origins[i], "*") == 0 && s->cors_credentials) {
            /* Echoing every origin with credentials would let any site act as the user. */
            snprintf(err, errlen,
                     "config cors.allowed_origins: '*' cannot be combined with "
                     "cors.allow_credentials = true; list the origins");
            return -1;
        }
    GET(kn_config_int, "cors.max_age", 600, &s->cors_max_age);
    const char *ah = kn_config_get(kn_conf, "cors.allowed_headers");
    s->cors_allow_headers =
        join_list(ah ? ah : "Authorization Content-Type X-API-KEY X-Request-Id Idempotency-Key");
    const char *eh = kn_config_get(kn_conf, "cors.expose_headers");
    s->cors_expose_headers = join_list(eh ? eh : "X-Request-Id X-Total-Count Link Retry-After");
    s->trusted_proxies =
        kn_split_list(kn_config_get(kn_conf, "trusted_proxies"), &s->ntrusted_proxies);
    const char *pcm = kn_config_get(kn_conf, "database.plan_cache_mode");
    if (pcm != NULL && *pcm != '\0' && strcmp(pcm, "auto") != 0 &&
        strcmp(pcm, "force_generic_plan") != 0 && strcmp(pcm, "force_custom_plan") != 0) {
        snprintf(err, errlen,
                 "config database.plan_cache_mode: '%s' is not force_generic_plan, auto or"
                 " force_custom_plan",
                 pcm);
        return -1;
    }
    GET(kn_config_bool, "log.access", true, &s->access_log);
    const char *lvl = kn_config_get(kn_conf, "log.level");
    if (lvl == NULL || strcmp(lvl, "info") == 0)
        kn_log_min = RX_LOG_INFO;
    else if (strcmp(lvl, "debug") == 0)
        kn_log_min = RX_LOG_DEBUG;
    else if (strcmp(lvl, "warn") == 0)
        kn_log_min = RX_LOG_WARN;
    else if (strcmp(lvl, "error") == 0)
        kn_log_min = RX_LOG_ERROR;
    else {
        snprintf(err, errlen, "config log.level: '%s' is not one of debug info warn error", lvl);
        return -1;
    }
    s->web_root = kn_config_get(kn_conf, "web_root");
    if (s->web_root == NULL || *s->web_root == '\0')
        s->web_root = RXD_DEFAULT_WEB_ROOT;
    return 0;
}

void kn_settings_free(void)
{
    kn_strv_free(kn_set.cors_origins);
    kn_strv_free(kn_set.trusted_proxies);
    free(kn_set.cors_allow_headers);
    free(kn_set.cors_expose_headers);
    memset(&kn_set, 0, sizeof(kn_set));
}

int kn_readiness(char *buf, size_t buflen, bool *ready)
{
    json_t *checks = json_object();
    *ready = true;
    for (size_t i = 0; i < kn_reg.ready.n; i++) {
        kn_ready *r = &kn_reg.ready.v[i];
        char why[256] = "";
        int rc = r->fn(why, sizeof(why), r->data);
        if (rc != 0)
            *ready = false;
        json_object_set_new(checks, r->name,
                            rc == 0 ? json_pack("{s:s}", "status", "ok")
                                    : json_pack("{s:s, s:s}", "status", "fail", "reason", why));
    }
    json_t *o = json_pack("{s:s, s:o}", "status", *ready ? "ok" : "unavailable", "checks", checks);
    size_t n = json_dumpb(o, buf, buflen - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (n >= buflen - 1)
        n = 0;
    buf[n] = '\0';
    return 0;
}

/* ---- listening ---- */

static int make_socket(const struct sockaddr *sa, socklen_t slen, char *err, size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (bind(fd, sa, slen) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", kn_set.listen_host, kn_set.listen_port,
                 strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, 4096) != 0) {
        snprintf(err, errlen, "listen: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int open_listeners(char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    char port[16];
    snprintf(port, sizeof(port), "%d", kn_set.listen_port);
    int rc = getaddrinfo(kn_set.listen_host[0] ? kn_set.listen_host : NULL, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "listen: cannot resolve '%s': %s", kn_set.listen_host,
                 gai_strerror(rc));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t slen = (socklen_t)ai->ai_addrlen;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    for (int i = 0; i < kn_nworkers; i++) {
        int fd = make_socket((struct sockaddr *)&ss, slen, err, errlen);
        if (fd < 0)
            return -1;
        kn_workers[i]->listen_fd = fd;
        if (i == 0 && kn_set.listen_port == 0) {
            /* Port 0: every worker must share the port the first one got. */
            socklen_t l = sizeof(ss);
            getsockname(fd, (struct sockaddr *)&ss, &l);
            kn_set.listen_port =
                ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    return 0;
}

/* ---- workers ---- */

static uv_async_t main_wake;
static atomic_int workers_done;

static void on_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* While draining: once no client connection is left (and, unless forced,
 * no job is running), stop the data services so the loop can end. */
static void drain_tick(uv_timer_t *t)
{
    kn_worker *w = t->data;
    bool force = atomic_load(&w->cmd) >= 2;
    if (w->nconns > 0 || (!force && !kn_jobs_idle(w)))
        return;
    kn_jobs_worker_stop(w);
    kn_redis_worker_stop(w);
    kn_db_worker_stop(w);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_close((uv_handle_t *)&w->wake, NULL);
}

static void worker_wake(uv_async_t *a)
{
    kn_worker *w = a->data;
    int cmd = atomic_load(&w->cmd);
    if (cmd >= 1 && !w->draining) {
        w->draining = true;
        if (w->listening) {
            uv_close((uv_handle_t *)&w->listener, NULL);
            w->listening = false;
        }
        kn_http_drain(w, false);
        uv_timer_init(&w->loop, &w->drain_timer);
        w->drain_timer.data = w;
        uv_timer_start(&w->drain_timer, drain_tick, 0, 20);
    }
    if (cmd >= 2)
        kn_http_drain(w, true);
}

static void worker_main(void *arg)
{
    kn_worker *w = arg;
    /* Data services belong to the worker's loop: start them on its thread. */
    if (kn_db_worker_start(w) != 0 || kn_redis_worker_start(w) != 0 || kn_jobs_worker_start(w) != 0)
        kn_log(RX_LOG_ERROR, NULL, "worker %d: cannot start data services", w->id);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Anything still open (a timer a module left) closes now. */
    uv_walk(&w->loop, on_walk_close, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    atomic_fetch_add(&workers_done, 1);
    uv_async_send(&main_wake);
}

static int worker_start(kn_worker *w, char *err, size_t errlen)
{
    uv_loop_init(&w->loop);
    w->loop.data = w;
    uint64_t r;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint64_t)uv_hrtime();
    w->rid_base = r;
    if (kn_metrics_init(w) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (w->listen_fd >= 0) {
        uv_tcp_init(&w->loop, &w->listener);
        w->listener.data = w;
        if (uv_tcp_open(&w->listener, w->listen_fd) != 0 ||
            uv_listen((uv_stream_t *)&w->listener, 4096, kn_on_connection) != 0) {
            snprintf(err, errlen, "cannot listen: %s", strerror(errno));
            return -1;
        }
        w->listening = true;
    }
    uv_async_init(&w->loop, &w->wake, worker_wake);
    w->wake.data = w;
    if (uv_thread_create(&w->thread, worker_main, w) != 0) {
        snprintf(err, errlen, "cannot start worker thread");
        return -1;
    }
    return 0;
}

static uv_signal_t sig_term, sig_int;
static uv_timer_t grace_timer;
static bool stopping;
static int started; /* workers whose loop and wake handle exist */

static void tell_workers(int cmd)
{
    for (int i = 0; i < started; i++) {
        atomic_store(&kn_workers[i]->cmd, cmd);
        uv_async_send(&kn_workers[i]->wake);
    }
}

static void on_hard_stop(uv_timer_t *t)
{
    (void)t;
    /* Thread-pool work cannot be interrupted; the grace period is a promise
     * to the operator, so leave without it. */
    kn_log(RX_LOG_WARN, NULL,
           "%d workers still busy with offloaded work after the grace period: exiting",
           kn_nworkers - atomic_load(&workers_done));
    _exit(0);
}

static void on_grace(uv_timer_t *t)
{
    kn_log(RX_LOG_WARN, NULL, "shutdown grace period over: closing remaining connections");
    tell_workers(2);
    uv_timer_start(t, on_hard_stop, 1000, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    if (stopping) {
        if (signum == SIGINT)
            tell_workers(2); /* a second Ctrl-C: stop now */
        return;
    }
    stopping = true;
    kn_log(RX_LOG_INFO, NULL, "received %s: stopping (grace %lld ms)",
           signum == SIGTERM ? "SIGTERM" : "SIGINT", kn_set.shutdown_grace_ms);
    tell_workers(1);
    uv_timer_start(&grace_timer, on_grace, (uint64_t)kn_set.shutdown_grace_ms, 0);
}

static void on_main_wake(uv_async_t *a)
{
    if (atomic_load(&workers_done) == kn_nworkers) {
        uv_close((uv_handle_t *)a, NULL);
        uv_close((uv_handle_t *)&sig_term, NULL);
        uv_close((uv_handle_t *)&sig_int, NULL);
        uv_close((uv_handle_t *)&grace_timer, NULL);
    }
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (long long)rl.rlim_cur < kn_set.max_connections + 64)
        kn_log(RX_LOG_WARN, NULL,
               "open file limit %llu is below max_connections %lld: raise `ulimit -n`",
               (unsigned long long)rl.rlim_cur, kn_set.max_connections);
}

int kn_serve(bool http)
{
    char err[512];
    raise_nofile();
    if (kn_openapi_prepare(err, sizeof(err)) != 0) {
        fprintf(stderr, "rxd: openapi: %s\n", err);
        return 1;
    }
    kn_nworkers = kn_set.workers;
    kn_workers = calloc((size_t)kn_nworkers, sizeof(*kn_workers));
    for (int i = 0; i < kn_nworkers; i++) {
        kn_workers[i] = calloc(1, sizeof(kn_worker));
        kn_workers[i]->id = i;
        kn_workers[i]->listen_fd = -1;
    }
    int rc = http ? open_listeners(err, sizeof(err)) : 0;
    uv_loop_t *main_loop = uv_default_loop();
    uv_async_init(main_loop, &main_wake, on_main_wake);
    uv_signal_init(main_loop, &sig_term);
    uv_signal_init(main_loop, &sig_int);
    uv_timer_init(main_loop, &grace_timer);
    uv_unref((uv_handle_t *)&grace_timer);
    signal(SIGPIPE, SIG_IGN);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    started = 0;
    if (rc == 0) {
        for (int i = 0; i < kn_nworkers && rc == 0; i++) {
            rc = worker_start(kn_workers[i], err, sizeof(err));
            if (rc == 0)
                started++;
        }
    }
    if (rc != 0) {
        fprintf(stderr, "rxd: %s\n", err);
        for (int i = 0; i < kn_nworkers; i++)
            if (kn_workers[i]->listen_fd >= 0 && i >= started)
                close(kn_workers[i]->listen_fd);
        stopping = true;
        tell_workers(2);
        /* Workers that never started count as done. */
        atomic_fetch_add(&workers_done, kn_nworkers - started);
        uv_async_send(&main_wake);
    } else {
        if (http)
            kn_log(RX_LOG_INFO, NULL, "listening on %s:%d with %d workers, %zu modules, %zu routes",
                   kn_set.listen_host, kn_set.listen_port, kn_nworkers, kn_reg.modules.n,
                   kn_reg.routes.n);
        else
            kn_log(RX_LOG_INFO, NULL, "job worker running with %d workers, %zu modules",
                   kn_nworkers, kn_reg.modules.n);
    }
    uv_run(main_loop, UV_RUN_DEFAULT);
    for (int i = 0; i < started; i++)
        uv_thread_join(&kn_workers[i]->thread);
    for (int i = 0; i < kn_nworkers; i++) {
        if (i < started)
            uv_loop_close(&kn_workers[i]->loop);
        kn_metrics_free(kn_workers[i]);
        free(kn_workers[i]);
    }
    free(kn_workers);
    kn_workers = NULL;
    kn_nworkers = 0;
    uv_loop_close(main_loop);
    if (rc == 0)
        kn_log(RX_LOG_INFO, NULL, "stopped");
    return rc == 0 ? 0 : 1;
}
