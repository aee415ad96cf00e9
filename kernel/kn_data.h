/*
 * kn_data.h — the data layer's kernel side: the per-worker PostgreSQL pool
 * (db.c), the per-worker Redis connection (redis.c), migrations (migrate.c)
 * and durable jobs (jobs.c). Each part hooks into a worker's life with a
 * start function (called on the worker's thread before its loop runs) and a
 * stop function (called on that thread when the worker drains: it closes
 * every handle it owns and fails what is still queued).
 */
#ifndef KN_DATA_H
#define KN_DATA_H

#include "kn_http.h"

#include <libpq-fe.h>

/* ---- db.c ---- */
typedef struct kn_db kn_db;
int kn_db_worker_start(kn_worker *w);
void kn_db_worker_stop(kn_worker *w);
/* No query running or queued on this worker. */
bool kn_db_idle(const kn_worker *w);
/* Readiness: at least one worker has a live connection, or no database is configured. */
int kn_db_ready(char *why, size_t len, void *data);
/* The database URL (config database.url), or NULL when none is configured. */
const char *kn_db_url(void);
/* A blocking connection for CLI commands and migrations, with the session
 * settings every rxd connection has (TimeZone UTC). NULL with err set. */
PGconn *kn_db_connect_blocking(char *err, size_t errlen);
/* Wrap a finished PGresult (ownership taken; NULL = connection failure). */
rx_rows *kn_rows_from_result(PGresult *res, int err, const char *msg);
/* Close rx_db_run()'s connection (at exit). */
void kn_db_cli_close(void);

/* ---- requests without a client (jobs, internal work) ---- */
/* A request context on worker w with no connection, held (pending = 1) until
 * kn_req_detached_end(). Its arena and data work as for a request. */
rx_req *kn_req_detached(kn_worker *w);
void kn_req_detached_end(rx_req *req);

/* ---- redis.c ---- */
int kn_redis_worker_start(kn_worker *w);
void kn_redis_worker_stop(kn_worker *w);
bool kn_redis_idle(const kn_worker *w);
int kn_redis_ready(char *why, size_t len, void *data);
void kn_redis_free(void); /* registrations (subscriptions) at exit */

/* ---- migrate.c ---- */
/* `rxd migrate [--status]`. */
int kn_migrate_command(int argc, char **argv);
/* 0 when every migration of the loaded modules is applied; 1 with a list of
 * pending ones in err; -1 when the database cannot be read. */
int kn_migrate_pending(char *err, size_t errlen);
/* Apply pending migrations (serve --migrate). 0 or -1 with err. */
int kn_migrate_apply(char *err, size_t errlen);
int kn_migrate_ready(char *why, size_t len, void *data);
void kn_migrate_free(void);

/* ---- jobs.c ---- */
int kn_jobs_worker_start(kn_worker *w);
void kn_jobs_worker_stop(kn_worker *w);
bool kn_jobs_idle(const kn_worker *w);
int kn_jobs_command(int argc, char **argv); /* `rxd jobs` */
/* Prometheus text of the rxd_jobs{state=queued|running|dead} gauges; 0 bytes
 * until the runner has counted (it counts in the background, never per scrape). */
int kn_jobs_metrics(char *buf, size_t len);
void kn_jobs_free(void);

#endif
