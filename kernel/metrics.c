/*
 * metrics.c — Prometheus text metrics. Each worker counts into its own
 * arrays (no locks, no shared cache lines on the request path); a scrape
 * sums every worker's counters with relaxed atomic loads.
 */
#include "kn_data.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int status_slots[] = {200, 201, 204, 301, 304, 400, 401, 403, 404, 405, 408, 409,
                                   413, 415, 423, 429, 431, 500, 501, 502, 503, 504, 417};
#define NSLOTS (sizeof(status_slots) / sizeof(status_slots[0]))
/* upper bounds in microseconds */
static const uint64_t lat_us[KN_LAT_BUCKETS] = {500,    1000,   2500,   5000,    10000,   25000,
                                                50000,  100000, 250000, 500000,  1000000, 5000000};
static const char *lat_le[KN_LAT_BUCKETS] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
                                             "0.05",   "0.1",   "0.25",   "0.5",   "1",    "5"};

int kn_metrics_init(kn_worker *w)
{
    w->stats = calloc(kn_reg.routes.n + 1, sizeof(kn_route_stats));
    return w->stats ? 0 : RX_ENOMEM;
}

void kn_metrics_free(kn_worker *w)
{
    free(w->stats);
    w->stats = NULL;
}

static inline void bump(uint64_t *p, uint64_t by)
{
    /* Only this worker writes; readers use relaxed loads. No lock prefix needed. */
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + by, __ATOMIC_RELAXED);
}

void kn_metrics_record(kn_worker *w, const kn_route *route, int status, uint64_t dur_us)
{
    if (w == NULL || w->stats == NULL)
        return;
    kn_route_stats *s = &w->stats[route ? (size_t)route->index : kn_reg.routes.n];
    size_t slot = NSLOTS;
    for (size_t i = 0; i < NSLOTS; i++)
        if (status_slots[i] == status) {
            slot = i;
            break;
        }
    bump(&s->status[slot], 1);
    size_t b = 0;
    while (b < KN_LAT_BUCKETS && dur_us > lat_us[b])
        b++;
    bump(&s->lat[b], 1);
    bump(&s->lat_sum_us, dur_us);
    bump(&s->count, 1);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) RX_PRINTF(2, 3);
static void put(sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, nc);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

static uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

char *kn_metrics_render(size_t *len)
{
    sbuf b = {malloc(8192), 0, 8192, false};
    if (b.p == NULL)
        return NULL;
    size_t nr = kn_reg.routes.n + 1;
    put(&b, "# HELP rxd_http_requests_total HTTP requests answered, by route template and status.\n"
            "# TYPE rxd_http_requests_total counter\n");
    for (size_t r = 0; r < nr; r++) {
        const char *tmpl = r < kn_reg.routes.n ? kn_reg.routes.v[r]->path : "unmatched";
        for (size_t s = 0; s <= NSLOTS; s++) {
            uint64_t n = 0;
            for (int w = 0; w < kn_nworkers; w++)
                n += ld(&kn_workers[w]->stats[r].status[s]);
            if (n == 0)
                continue;
            if (s < NSLOTS)
                put(&b, "rxd_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", tmpl,
                    status_slots[s], (unsigned long long)n);
            else
                put(&b, "rxd_http_requests_total{route=\"%s\",status=\"other\"} %llu\n", tmpl,
                    (unsigned long long)n);
        }
    }
    put(&b, "# HELP rxd_http_request_duration_seconds Time from the first byte of a request to its "
            "reply, by route template.\n"
            "# TYPE rxd_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r < nr; r++) {
        const char *tmpl = r < kn_reg.routes.n ? kn_reg.routes.v[r]->path : "unmatched";
        uint64_t count = 0, sum = 0, cum = 0;
        for (int w = 0; w < kn_nworkers; w++) {
            count += ld(&kn_workers[w]->stats[r].count);
            sum += ld(&kn_workers[w]->stats[r].lat_sum_us);
        }
        if (count == 0)
            continue;
        for (size_t k = 0; k <= KN_LAT_BUCKETS; k++) {
            for (int w = 0; w < kn_nworkers; w++)
                cum += ld(&kn_workers[w]->stats[r].lat[k]);
            put(&b, "rxd_http_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} %llu\n", tmpl,
                k < KN_LAT_BUCKETS ? lat_le[k] : "+Inf", (unsigned long long)cum);
        }
        put(&b, "rxd_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", tmpl,
            (double)sum / 1e6);
        put(&b, "rxd_http_request_duration_seconds_count{route=\"%s\"} %llu\n", tmpl,
            (unsigned long long)count);
    }
    long long open = 0;
    unsigned long long total = 0;
    for (int w = 0; w < kn_nworkers; w++) {
        open += atomic_load_explicit(&kn_workers[w]->open_conns, memory_order_relaxed);
        total += atomic_load_explicit(&kn_workers[w]->total_conns, memory_order_relaxed);
    }
    put(&b, "# HELP rxd_http_connections_open Client connections open now.\n"
            "# TYPE rxd_http_connections_open gauge\n"
            "rxd_http_connections_open %lld\n"
            "# HELP rxd_http_connections_total Client connections accepted.\n"
            "# TYPE rxd_http_connections_total counter\n"
            "rxd_http_connections_total %llu\n"
            "# HELP rxd_workers Worker threads serving HTTP.\n"
            "# TYPE rxd_workers gauge\n"
            "rxd_workers %d\n",
        open, total, kn_nworkers);
    char jb[512];
    if (kn_jobs_metrics(jb, sizeof(jb)) > 0)
        put(&b, "%s", jb);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
