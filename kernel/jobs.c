/*
 * jobs.c — durable jobs in PostgreSQL (tables rx_jobs and rx_periodic,
 * kernel/migrations/001_jobs.sql): task registration (rx_task, rx_every),
 * the runner, rx_enqueue and `rxd jobs`.
 *
 * One runner per process, on worker 0, when some module registered a task
 * (config jobs.enabled, default true): a process without tasks adds no
 * connection and no query to the database. It claims due jobs of the tasks
 * this process knows with one UPDATE ... FOR UPDATE SKIP LOCKED statement
 * (so a mixed-version fleet never takes jobs it cannot run), at most
 * `jobs.concurrency` (8) at once, and runs each on worker 0's loop with a
 * request that has no client (kn_req_detached), so a task uses rx_db_*,
 * rx_redis_*, rx_offload like a handler. Every SQL statement of the runner goes through the
 * worker's pool too; only the LISTEN connection is its own (a pooled connection cannot stay
 * subscribed). Wake-ups: NOTIFY rx_jobs (sent by rx_enqueue() on commit), a timer at the next known
 * due time (retries, delayed jobs, expired leases), and a slow poll every `jobs.poll_interval` (5
 * s) in case a notification was lost while the LISTEN connection was down.
 *
 * Leases: a claim sets locked_until = now() + min(timeout_s + 5, 60) s. The
 * runner's own timer ends an attempt after timeout_s, so a live process
 * records the outcome well before its lease ends (the 5 s margin covers the
 * UPDATE); jobs whose timeout is longer than the lease get it renewed every
 * 20 s while they run. A row still 'running' past its lease belongs to a
 * process that died: the next claim anywhere takes it as a new attempt. So
 * work of a killed process resumes within a minute (DESIGN.md "Jobs").
 * Outcome updates match id, locked_by and the attempt number, so an attempt
 * whose lease expired and was claimed again elsewhere is never finished twice.
 *
 * Periodic tasks (rx_every) are tasks with max_attempts 1: every second the
 * runner computes each one's current slot (interval slots are aligned to the
 * Unix epoch; cron slots are the matching UTC minutes) and tries to move
 * rx_periodic.last_slot forward; the instance whose UPDATE moves it enqueues
 * the job in the same statement, so one instance fires each slot. An interval
 * slot fires late when no instance ran at its start (e.g. a "1d" task after a
 * deploy); a cron minute that passed with no instance up is skipped, as cron
 * does.
 */
#include "kn_data.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define LEASE_MARGIN_S 5 /* time for the outcome UPDATE after a timeout */
#define LEASE_MAX_S 60   /* DESIGN.md: a claimed job's lease is at most 60 s */
#define RENEW_EVERY_MS 20000
#define ERROR_MAX 2000 /* bytes of last_error kept */
#define PURGE_EVERY_MS 60000

/* ------------------------------------------------------------------------ */
/* Registry: tasks and periodic schedules (main thread, during init)        */
/* ------------------------------------------------------------------------ */

typedef struct cron_spec {
    uint64_t min;          /* bit per minute 0..59 */
    uint32_t hour;         /* 0..23 */
    uint32_t dom;          /* 1..31 */
    uint32_t mon;          /* 1..12 */
    uint32_t dow;          /* 0..6, Sunday = 0 (7 folds into 0) */
    bool dom_any, dow_any; /* field started with '*': see cron_day_matches */
} cron_spec;

typedef struct kn_task {
    char *name;
    rx_task_fn fn;
    const kn_module *module;
    int max_attempts, timeout_s, backoff_ms;
    bool periodic;
    long long every_s; /* interval in seconds; 0 = cron */
    cron_spec cron;
    char *schedule;
} kn_task;

static kn_task *tasks;
static size_t ntasks, tasks_cap;

static const char *mod_name(const kn_module *m)
{
    return m ? m->desc->name : "kernel";
}


/* Task names go into a text[] literal and log lines: a plain alphabet keeps
 * both safe without quoting rules ("notify.send", "orders:sync-1"). */
static bool valid_task_name(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 128)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.' || *s == ':' || *s == '-'))
            return false;
    return true;
}

static const kn_task *task_find(const char *name)
{
    for (size_t i = 0; i < ntasks; i++)
        if (strcmp(tasks[i].name, name) == 0)
            return &tasks[i];
    return NULL;
}

bool rx_task_exists(const char *name)
{
    return name != NULL && task_find(name) != NULL;
}

static int task_add(const kn_task *t)
{
    const kn_task *dup = task_find(t->name);
    if (dup != NULL) {
        kn_reg_error("task '%s' is registered twice: by module '%s' and by module '%s'", t->name,
                 mod_name(dup->module), mod_name(t->module));
        return RX_EEXIST;
    }
    if (ntasks == tasks_cap) {
        size_t nc = tasks_cap ? tasks_cap * 2 : 16;
        kn_task *nv = realloc(tasks, nc * sizeof(*nv));
        if (nv == NULL)
            return RX_ENOMEM;
        tasks = nv;
        tasks_cap = nc;
    }
    kn_task *n = &tasks[ntasks];
    *n = *t;
    n->name = strdup(t->name);
    n->schedule = t->schedule ? strdup(t->schedule) : NULL;
    if (n->name == NULL || (t->schedule && n->schedule == NULL)) {
        free(n->name);
        free(n->schedule);
        return RX_ENOMEM;
    }
    ntasks++;
    return 0;
}

int rx_task(rx_module *m, const char *name, rx_task_fn fn, const rx_task_opts *opts)
{
    const kn_module *km = (const kn_module *)m;
    if (!kn_reg.open)
        return RX_ESTATE;
    if (!valid_task_name(name) || fn == NULL) {
        kn_reg_error("module '%s': task '%s': %s", mod_name(km), name ? name : "(null)",
                 fn == NULL ? "no task function"
                            : "invalid name (1..128 characters of [A-Za-z0-9_.:-])");
        return RX_EINVAL;
    }
    rx_task_opts o = opts ? *opts : (rx_task_opts){0};
    if (o.max_attempts < 0 || o.max_attempts > 1000 || o.timeout_s < 0 || o.timeout_s > 86400 ||
        o.backoff_ms < 0 || o.backoff_ms > 86400000) {
        kn_reg_error("module '%s': task '%s': options out of range (max_attempts 1..1000, "
                 "timeout_s 1..86400, backoff_ms 1..86400000; 0 = default)",
                 mod_name(km), name);
        return RX_EINVAL;
    }
    kn_task t = {.name = (char *)name,
                 .fn = fn,
                 .module = km,
                 .max_attempts = o.max_attempts ? o.max_attempts : 5,
                 .timeout_s = o.timeout_s ? o.timeout_s : 30,
                 .backoff_ms = o.backoff_ms ? o.backoff_ms : 1000};
    return task_add(&t);
}

/* ---- schedules ---- */

static int parse_interval(const char *s, long long *out)
{
    if (*s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno != 0 || n <= 0 || end[0] == '\0' || end[1] != '\0')
        return -1;
    long long unit = end[0] == 's'   ? 1
                     : end[0] == 'm' ? 60
                     : end[0] == 'h' ? 3600
                     : end[0] == 'd' ? 86400
                                     : 0;
    if (unit == 0 || n > 366LL * 86400 / unit)
        return -1;
    *out = n * unit;
    return 0;
}

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

/* A number or (for months and weekdays) a three-letter name; -1 if neither. */
static int cron_value(const char *s, size_t n, int lo, const char *const *names)
{
    if (n == 0)
        return -1;
    if (s[0] >= '0' && s[0] <= '9') {
        int v = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9' || v > 1000)
                return -1;
            v = v * 10 + (s[i] - '0');
        }
        return v;
    }
    for (int i = 0; names && names[i]; i++)
        if (n == 3 && strncasecmp(s, names[i], 3) == 0)
            return lo + i;
    return -1;
}

/* One field: comma-separated items of *, N, N-M, with an optional /STEP. */
static int cron_field(const char *f, int lo, int hi, const char *const *names, uint64_t *mask,
                      const char *what, char *why, size_t whylen)
{
    *mask = 0;
    const char *p = f;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *slash = memchr(p, '/', len);
        size_t blen = slash ? (size_t)(slash - p) : len;
        int a, b, step = 1;
        if (blen == 1 && p[0] == '*') {
            a = lo;
            b = hi;
        } else {
            const char *dash = memchr(p, '-', blen);
            a = cron_value(p, dash ? (size_t)(dash - p) : blen, lo, names);
            b = dash ? cron_value(dash + 1, blen - (size_t)(dash - p) - 1, lo, names)
                     : (slash ? hi : a); /* "5/15" means 5-max/15 */
            if (a < 0 || b < 0) {
                snprintf(why, whylen, "%s field '%s': '%.*s' is not a value", what, f, (int)len, p);
                return -1;
            }
        }
        if (slash) {
            step = cron_value(slash + 1, len - blen - 1, lo, NULL);
            if (step < 1 || step > hi) {
                snprintf(why, whylen, "%s field '%s': bad step in '%.*s'", what, f, (int)len, p);
                return -1;
            }
        }
        if (a < lo || b > hi || a > b) {
            snprintf(why, whylen, "%s field '%s': '%.*s' is outside %d-%d", what, f, (int)len, p,
                     lo, hi);
            return -1;
        }
        for (int v = a; v <= b; v += step)
            *mask |= 1ULL << v;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

static bool cron_day_matches(const cron_spec *c, const struct tm *tm)
{
    bool dom = (c->dom >> tm->tm_mday) & 1, dow = (c->dow >> tm->tm_wday) & 1;
    if (!((c->mon >> (tm->tm_mon + 1)) & 1))
        return false;
    /* Vixie cron: when both day fields are restricted, either may match. */
    if (!c->dom_any && !c->dow_any)
        return dom || dow;
    return dom && dow;
}

static int parse_cron(const char *s, cron_spec *c, char *why, size_t whylen)
{
    char buf[256];
    if (strlen(s) >= sizeof(buf)) {
        snprintf(why, whylen, "too long");
        return -1;
    }
    strcpy(buf, s);
    char *f[6];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, " \t", &save); tok;
         tok = strtok_r(NULL, " \t", &save)) {
        if (n == 6)
            break;
        f[n++] = tok;
    }
    if (n != 5) {
        snprintf(why, whylen,
                 "a cron expression has 5 fields (minute hour day-of-month month "
                 "day-of-week), this has %d",
                 n);
        return -1;
    }
    uint64_t m[5];
    if (cron_field(f[0], 0, 59, NULL, &m[0], "minute", why, whylen) != 0 ||
        cron_field(f[1], 0, 23, NULL, &m[1], "hour", why, whylen) != 0 ||
        cron_field(f[2], 1, 31, NULL, &m[2], "day-of-month", why, whylen) != 0 ||
        cron_field(f[3], 1, 12, month_names, &m[3], "month", why, whylen) != 0 ||
        cron_field(f[4], 0, 7, dow_names, &m[4], "day-of-week", why, whylen) != 0)
        return -1;
    c->min = m[0];
    c->hour = (uint32_t)m[1];
    c->dom = (uint32_t)m[2];
    c->mon = (uint32_t)m[3];
    c->dow = (uint32_t)((m[4] | (m[4] >> 7)) & 0x7f); /* 7 is Sunday too */
    c->dom_any = f[2][0] == '*';
    c->dow_any = f[4][0] == '*';
    /* "0 0 30 2 *" parses but never fires: say so now rather than never. */
    for (int64_t day = 0; day < 8 * 366; day++) {
        time_t t = (time_t)(946684800 + day * 86400); /* from 2000-01-01, leap years included */
        struct tm tm;
        gmtime_r(&t, &tm);
        if (cron_day_matches(c, &tm))
            return 0;
    }
    snprintf(why, whylen, "no day ever matches");
    return -1;
}

int rx_every(rx_module *m, const char *name, const char *schedule, rx_task_fn fn)
{
    const kn_module *km = (const kn_module *)m;
    if (!kn_reg.open)
        return RX_ESTATE;
    if (!valid_task_name(name) || fn == NULL || schedule == NULL) {
        kn_reg_error("module '%s': periodic task '%s': %s", mod_name(km), name ? name : "(null)",
                 fn == NULL         ? "no task function"
                 : schedule == NULL ? "no schedule"
                                    : "invalid name (1..128 characters of [A-Za-z0-9_.:-])");
        return RX_EINVAL;
    }
    kn_task t = {.name = (char *)name,
                 .fn = fn,
                 .module = km,
                 .max_attempts = 1,
                 .timeout_s = 30,
                 .backoff_ms = 1000,
                 .periodic = true,
                 .schedule = (char *)schedule};
    char why[200] = "";
    if (strchr(schedule, ' ') == NULL && strchr(schedule, '\t') == NULL) {
        if (parse_interval(schedule, &t.every_s) != 0)
            snprintf(why, sizeof(why),
                     "not an interval (a positive number with s, m, h or d, "
                     "at most 366d)");
    } else {
        parse_cron(schedule, &t.cron, why, sizeof(why));
    }
    if (why[0] != '\0') {
        kn_reg_error("module '%s': periodic task '%s': invalid schedule '%s': %s (expected \"30s\", "
                 "\"5m\", \"1h\", \"2d\" or a cron expression \"min hour dom month dow\" in UTC)",
                 mod_name(km), name, schedule, why);
        return RX_EINVAL;
    }
    return task_add(&t);
}

/* The start (Unix seconds) of t's slot containing `now`, or -1 when `now` is
 * in no slot (a cron minute that does not match). */
static int64_t task_slot(const kn_task *t, int64_t now)
{
    if (t->every_s > 0)
        return now - now % t->every_s;
    int64_t minute = now - now % 60;
    time_t tt = (time_t)minute;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (!((t->cron.min >> tm.tm_min) & 1) || !((t->cron.hour >> tm.tm_hour) & 1) ||
        !cron_day_matches(&t->cron, &tm))
        return -1;
    return minute;
}

/* ------------------------------------------------------------------------ */
/* SQL                                                                       */
/* ------------------------------------------------------------------------ */

/* $1 how many, $2 instance, $3 task names (text[]), $4 their lease seconds (int[]).
 * The MATERIALIZED pick runs once, so SKIP LOCKED cannot be re-evaluated by a
 * rescan. The last row (id NULL) tells when the next known job is due or the
 * next lease expires, so the runner can wake then instead of at the next poll. */
static const char SQL_CLAIM[] =
    "WITH pick AS MATERIALIZED ("
    "  SELECT q.id FROM rx_jobs AS q"
    "   WHERE q.task = ANY($3::text[])"
    "     AND ((q.state = 'queued' AND q.run_at <= now())"
    "          OR (q.state = 'running' AND q.locked_until < now()))"
    "   ORDER BY q.run_at LIMIT $1 FOR UPDATE SKIP LOCKED),"
    " c AS ("
    "  UPDATE rx_jobs AS j"
    "     SET state = 'running', attempts = j.attempts + 1,"
    "         locked_until = now() + make_interval(secs => t.lease), locked_by = $2,"
    "         updated_at = now()"
    "    FROM unnest($3::text[], $4::int[]) AS t(name, lease)"
    "   WHERE j.task = t.name AND j.id IN (SELECT id FROM pick)"
    "  RETURNING j.id, j.task, j.payload, j.attempts, j.max_attempts)"
    " SELECT id, task, payload, attempts, max_attempts, NULL::float8 AS next_in FROM c"
    " UNION ALL"
    " SELECT NULL, NULL, NULL, NULL, NULL, extract(epoch FROM least("
    "   (SELECT min(run_at) FROM rx_jobs"
    "     WHERE state = 'queued' AND run_at > now() AND task = ANY($3::text[])),"
    "   (SELECT min(locked_until) FROM rx_jobs"
    "     WHERE state = 'running' AND locked_until >= now() AND task = ANY($3::text[]))"
    "   ) - now())::float8";

/* Outcomes: $1 id, $2 instance, $3 the attempt this runner claimed. */
static const char SQL_DONE[] =
    "UPDATE rx_jobs SET state = 'done', finished_at = now(), updated_at = now(),"
    " locked_until = NULL"
    " WHERE id = $1 AND locked_by = $2 AND state = 'running' AND attempts = $3";
static const char SQL_RETRY[] = /* $4 delay seconds, $5 error */
    "UPDATE rx_jobs SET state = 'queued', run_at = now() + make_interval(secs => $4::float8),"
    " last_error = $5, updated_at = now(), locked_until = NULL"
    " WHERE id = $1 AND locked_by = $2 AND state = 'running' AND attempts = $3";
static const char SQL_DEAD[] = /* $4 error */
    "UPDATE rx_jobs SET state = 'dead', finished_at = now(), last_error = $4, updated_at = now(),"
    " locked_until = NULL"
    " WHERE id = $1 AND locked_by = $2 AND state = 'running' AND attempts = $3";

/* $1 ids (bigint[]), $2 lease seconds (int[]), $3 instance. */
static const char SQL_RENEW[] =
    "UPDATE rx_jobs AS j SET locked_until = now() + make_interval(secs => l.lease),"
    " updated_at = now()"
    " FROM unnest($1::bigint[], $2::int[]) AS l(id, lease)"
    " WHERE j.id = l.id AND j.locked_by = $3 AND j.state = 'running'";

/* $1 name, $2 slot start (Unix seconds), $3 the slot as ISO text for the payload. */
static const char SQL_PERIODIC[] =
    "WITH s AS ("
    "  INSERT INTO rx_periodic AS p (name, last_slot) VALUES ($1, to_timestamp($2::float8))"
    "  ON CONFLICT (name) DO UPDATE SET last_slot = EXCLUDED.last_slot"
    "   WHERE p.last_slot < EXCLUDED.last_slot"
    "  RETURNING p.name)"
    " SELECT rx_enqueue(s.name, jsonb_build_object('slot', $3::text)) AS id FROM s";

static const char SQL_COUNTS[] =
    "SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'running'),"
    " count(*) FILTER (WHERE state = 'dead')"
    " FROM rx_jobs WHERE state IN ('queued', 'running', 'dead')";

/* $1 retention in seconds. Batches, so one purge never holds many locks. */
static const char SQL_PURGE[] =
    "DELETE FROM rx_jobs WHERE id IN (SELECT id FROM rx_jobs"
    " WHERE state = 'done' AND finished_at < now() - make_interval(secs => $1::float8)"
    " ORDER BY finished_at LIMIT 5000)";

static const char SQL_ENQUEUE[] =
    "SELECT rx_enqueue($1::text, $2::jsonb, now() + make_interval(secs => $3::float8)) AS id";

/* ------------------------------------------------------------------------ */
/* The runner (worker 0)                                                     */
/* ------------------------------------------------------------------------ */

typedef enum { J_RUNNING, J_FINISHING, J_GONE } job_state;

/* A job lives in its request's arena: it must stay readable for as long as
 * the task may still call rx_job_done() with that request, which is exactly
 * as long as the request lives. Its timer is malloc()ed because a handle
 * must outlive its own uv_close(). */
typedef struct job {
    rx_req *req;
    const kn_task *t;
    int64_t id;
    int attempt, max_attempts;
    job_state st;
    bool timed_out;
    uv_timer_t *timer;
    uint64_t started_ms;
    int requeue_ms; /* set when the outcome is a retry: wake when it is due */
    struct job *prev, *next;
} job;

typedef enum { L_DOWN, L_CONNECTING, L_UP } listen_state;

typedef struct lpoll {
    uv_poll_t h;
    PGconn *pg; /* finished once the handle let go of its socket */
} lpoll;

/* One per process: static, so callbacks that arrive after the worker
 * stopped (failed queries delivered by the pool's shutdown) stay safe. */
struct kn_jobs {
    kn_worker *w;
    bool live, stopping;
    char instance[160];
    char *names_lit, *leases_lit; /* the text[] / int[] of the tasks we run */
    long long concurrency, poll_ms, retention_ms, connect_ms;
    bool want, claiming;
    long long asked;
    int inflight; /* the runner's own queries */
    job *jobs;
    int njobs;
    uv_timer_t poll_timer, due_timer, tick_timer, renew_timer, listen_timer;
    listen_state lst;
    PGconn *pg;
    lpoll *lp;
    int lp_fd, lp_events, lbackoff_ms;
    long long claim_backoff_ms;
    bool lwarned, claim_warned, periodic_warned;
    /* At most one of each background query at a time: while the database
     * is frozen they would otherwise pile up and take the pool's slots. */
    bool counting, renewing, purging;
    int firing;
    uint64_t last_purge_ms;
    int64_t *last_slot; /* per task index: the slot last tried */
    uint64_t rng;
};

static struct kn_jobs R;
/* /metrics reads these from any worker; the runner writes them. */
static atomic_llong m_queued, m_running, m_dead;
static atomic_bool m_valid;

static void claim_maybe(void);

static uint64_t now_ms(void)
{
    return uv_now(&R.w->loop);
}

static double rand01(void)
{
    R.rng ^= R.rng << 13;
    R.rng ^= R.rng >> 7;
    R.rng ^= R.rng << 17;
    return (double)(R.rng >> 11) / (double)(1ULL << 53);
}

static int lease_s(const kn_task *t)
{
    int l = t->timeout_s + LEASE_MARGIN_S;
    return l > LEASE_MAX_S ? LEASE_MAX_S : l;
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* A query of the runner itself, on a request of its own. */
static int runner_query(rx_db_cb cb, void *data, const char *sql, int n, const rx_param *p)
{
    rx_req *req = kn_req_detached(R.w);
    if (req == NULL)
        return RX_ENOMEM;
    req->method_name = "JOBS";
    req->data = data;
    int rc = rx_db_query(req, cb, sql, n, p);
    if (rc != 0) {
        kn_req_detached_end(req);
        return rc;
    }
    R.inflight++;
    return 0;
}

static void runner_query_end(rx_req *req)
{
    R.inflight--;
    kn_req_detached_end(req);
}

/* Wake at a known due time (a retry, a delayed job, a lease that ends);
 * anything later than the next poll is left to the poll. */
static void on_due(uv_timer_t *t)
{
    (void)t;
    R.want = true;
    claim_maybe();
}

static void arm_due(double ms)
{
    if (!R.live || ms > (double)R.poll_ms)
        return;
    uint64_t due = ms < 0 ? 0 : (uint64_t)ms + 10; /* just after, not just before */
    if (uv_is_active((uv_handle_t *)&R.due_timer) && uv_timer_get_due_in(&R.due_timer) <= due)
        return;
    uv_timer_start(&R.due_timer, on_due, due, 0);
}

/* ---- running jobs ---- */

static void job_unlink(job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        R.jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
    R.njobs--;
}

/* The runner's part of a job is over: drop our hold on its request (which
 * lives on while the task still has work in flight). */
static void job_release(job *j)
{
    job_unlink(j);
    j->st = J_GONE;
    kn_req_detached_end(j->req); /* may free j */
}

static void on_finished(rx_req *req, rx_rows *rows)
{
    job *j = req->job;
    if (j->st == J_GONE)
        return; /* abandoned at shutdown: already released */
    if (rx_rows_failed(rows))
        kn_log(RX_LOG_WARN, mod_name(j->t->module),
               "job %lld (%s): cannot record the outcome of attempt %d: %s; it runs again when "
               "its lease expires",
               (long long)j->id, j->t->name, j->attempt, rx_rows_message(rows));
    else if (rx_rows_affected(rows) == 0)
        kn_log(RX_LOG_WARN, mod_name(j->t->module),
               "job %lld (%s): outcome of attempt %d not recorded: its lease had expired and "
               "another runner took it",
               (long long)j->id, j->t->name, j->attempt);
    else if (j->requeue_ms >= 0)
        arm_due(j->requeue_ms);
    job_release(j);
    claim_maybe(); /* a slot is free */
}

/* Keep what PostgreSQL accepts as text (valid UTF-8) and a bounded size. */
static char *clean_error(rx_req *req, const char *s)
{
    size_t n = strlen(s);
    if (n > ERROR_MAX)
        n = ERROR_MAX;
    char *out = rx_req_alloc(req, n + 1);
    if (out == NULL)
        return (char *)"(out of memory)";
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] >> 6) == 2;
        if (!ok) {
            out[o++] = '?';
            i++;
            continue;
        }
        memcpy(out + o, s + i, len);
        o += len;
        i += len;
    }
    out[o] = '\0';
    return out;
}

static void job_finish(job *j, const char *error)
{
    rx_req *req = j->req;
    j->st = J_FINISHING;
    j->requeue_ms = -1;
    if (j->timer) {
        uv_close((uv_handle_t *)j->timer, free_handle);
        j->timer = NULL;
    }
    const char *mn = mod_name(j->t->module);
    int rc;
    if (error == NULL) {
        kn_log(RX_LOG_DEBUG, mn, "job %lld (%s) done, attempt %d", (long long)j->id, j->t->name,
               j->attempt);
        rc = rx_db(req, on_finished, SQL_DONE, RX_INT(j->id), RX_TEXT(R.instance),
                   RX_INT(j->attempt));
    } else if (j->attempt < j->max_attempts) {
        /* backoff * 2^(attempt-1), capped at a day, plus up to 25% jitter so
         * a burst of failures does not come back as a burst. */
        int shift = j->attempt - 1 > 20 ? 20 : j->attempt - 1;
        double ms = (double)j->t->backoff_ms * (double)(1LL << shift);
        if (ms > 86400000.0)
            ms = 86400000.0;
        ms *= 1.0 + 0.25 * rand01();
        j->requeue_ms = (int)ms;
        kn_log(RX_LOG_WARN, mn, "job %lld (%s) attempt %d/%d failed: %s; retry in %.1f s",
               (long long)j->id, j->t->name, j->attempt, j->max_attempts, error, ms / 1000.0);
        rc = rx_db(req, on_finished, SQL_RETRY, RX_INT(j->id), RX_TEXT(R.instance),
                   RX_INT(j->attempt), RX_FLOAT(ms / 1000.0), RX_TEXT(clean_error(req, error)));
    } else {
        kn_log(RX_LOG_ERROR, mn, "job %lld (%s) dead after attempt %d/%d: %s", (long long)j->id,
               j->t->name, j->attempt, j->max_attempts, error);
        rc = rx_db(req, on_finished, SQL_DEAD, RX_INT(j->id), RX_TEXT(R.instance),
                   RX_INT(j->attempt), RX_TEXT(clean_error(req, error)));
    }
    if (rc != 0) {
        kn_log(RX_LOG_ERROR, mn, "job %lld (%s): cannot record the outcome: %s", (long long)j->id,
               j->t->name, rx_strerror(rc));
        job_release(j);
    }
}

static void on_job_timeout(uv_timer_t *t)
{
    job *j = t->data;
    if (j->st != J_RUNNING)
        return;
    j->timed_out = true;
    char msg[64];
    snprintf(msg, sizeof(msg), "timed out after %ds", j->t->timeout_s);
    job_finish(j, msg);
}

static void job_start(const kn_task *t, int64_t id, int attempt, int max_attempts, json_t *payload)
{
    rx_req *req = kn_req_detached(R.w);
    job *j = req ? rx_req_alloc(req, sizeof(*j)) : NULL;
    if (j == NULL) {
        /* Out of memory: leave it claimed; its lease expires and it runs again. */
        if (req)
            kn_req_detached_end(req);
        json_decref(payload);
        return;
    }
    req->method_name = "JOB";
    req->path = rx_req_strdup(req, t->name);
    req->job = j;
    /* The payload is the job's "body": rx_req_json() returns it too, and
     * the request frees it. */
    req->json = payload;
    req->json_done = true;
    j->req = req;
    j->t = t;
    j->id = id;
    j->attempt = attempt;
    j->max_attempts = max_attempts;
    j->st = J_RUNNING;
    j->started_ms = now_ms();
    j->next = R.jobs;
    if (R.jobs)
        R.jobs->prev = j;
    R.jobs = j;
    R.njobs++;
    if (attempt > max_attempts) {
        /* Claimed again after its lease expired: the process running its last
         * attempt died. That attempt counts. */
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "attempt %d of %d did not finish (its process stopped before "
                 "the lease expired)",
                 attempt - 1, max_attempts);
        j->attempt = attempt; /* the row holds the claimed count */
        job_finish(j, msg);
        return;
    }
    j->timer = malloc(sizeof(uv_timer_t));
    if (j->timer) {
        uv_timer_init(&R.w->loop, j->timer);
        j->timer->data = j;
        uv_timer_start(j->timer, on_job_timeout, (uint64_t)t->timeout_s * 1000, 0);
    }
    kn_log(RX_LOG_DEBUG, mod_name(t->module), "job %lld (%s) attempt %d/%d started", (long long)id,
           t->name, attempt, max_attempts);
    /* A second hold while the task runs, so that j stays valid for the check
     * below even if the task finished synchronously and its outcome could
     * not even be queued (which releases the first hold). */
    req->pending++;
    t->fn(req);
    /* Only our holds left and no outcome: nothing will ever call rx_job_done. */
    if (j->st == J_RUNNING && req->pending == 2)
        job_finish(j, "the task returned without calling rx_job_done() or starting async work");
    kn_req_detached_end(req);
}

/* ---- claiming ---- */

static void on_claimed(rx_req *req, rx_rows *rows)
{
    R.claiming = false;
    if (R.stopping) {
        runner_query_end(req);
        return;
    }
    if (rx_rows_failed(rows)) {
        /* Retry with backoff (0.5 s doubling up to 5 s, the pool's own
         * reconnect backoff): soon after the database is back, never a tight
         * loop while it is down. */
        if (!R.claim_warned)
            kn_log(RX_LOG_WARN, NULL, "jobs: cannot claim jobs: %s", rx_rows_message(rows));
        R.claim_warned = true;
        R.claim_backoff_ms = R.claim_backoff_ms ? R.claim_backoff_ms * 2 : 500;
        if (R.claim_backoff_ms > 5000)
            R.claim_backoff_ms = 5000;
        arm_due((double)R.claim_backoff_ms);
        runner_query_end(req);
        return;
    }
    if (R.claim_warned)
        kn_log(RX_LOG_INFO, NULL, "jobs: claiming works again");
    R.claim_warned = false;
    R.claim_backoff_ms = 0;
    int n = rx_rows_count(rows), got = 0;
    for (int i = 0; i < n; i++) {
        if (rx_rows_isnull(rows, i, 0)) {
            const char *next = rx_rows_text(rows, i, 5);
            if (next)
                arm_due(strtod(next, NULL) * 1000.0);
            continue;
        }
        int64_t id = 0, attempts = 1, max = 0;
        rx_rows_int(rows, i, 0, &id);
        rx_rows_int(rows, i, 3, &attempts);
        const kn_task *t = task_find(rx_rows_text(rows, i, 1));
        got++;
        if (t == NULL)
            continue; /* cannot happen: the claim asks only for our tasks */
        if (rx_rows_int(rows, i, 4, &max) != 0 || max < 1)
            max = t->max_attempts;
        json_t *payload = rx_rows_value(rows, i, 2);
        if (payload == NULL || json_is_null(payload)) {
            json_decref(payload);
            payload = json_object();
        }
        job_start(t, id, (int)attempts, (int)max, payload);
    }
    if (got >= R.asked)
        R.want = true; /* a full batch: there may be more */
    runner_query_end(req);
    claim_maybe();
}

static void claim_maybe(void)
{
    if (!R.live || R.stopping || R.w->draining || R.claiming || !R.want || R.names_lit == NULL)
        return;
    long long n = R.concurrency - R.njobs;
    if (n <= 0)
        return; /* R.want stays set: a finishing job calls us again */
    R.want = false;
    R.asked = n;
    if (runner_query(on_claimed, NULL, SQL_CLAIM, 4,
                     (rx_param[]){RX_INT(n), RX_TEXT(R.instance), RX_TEXT(R.names_lit),
                                  RX_TEXT(R.leases_lit)}) == 0)
        R.claiming = true;
}

/* ---- lease renewal for jobs whose timeout outlasts the lease ---- */

static void on_renewed(rx_req *req, rx_rows *rows)
{
    R.renewing = false;
    if (rx_rows_failed(rows) && !R.stopping)
        kn_log(RX_LOG_WARN, NULL, "jobs: cannot renew leases: %s", rx_rows_message(rows));
    runner_query_end(req);
}

static void on_renew_timer(uv_timer_t *t)
{
    (void)t;
    size_t cap = (size_t)R.njobs * 24 + 3;
    char *ids = malloc(cap), *leases = malloc(cap);
    size_t ni = 0, nl = 0;
    int n = 0;
    if (ids && leases) {
        ids[ni++] = '{';
        leases[nl++] = '{';
        for (job *j = R.jobs; j; j = j->next) {
            if (j->st != J_RUNNING || j->t->timeout_s + LEASE_MARGIN_S <= lease_s(j->t) ||
                now_ms() - j->started_ms < 15000)
                continue; /* its timeout ends it before the first lease does */
            ni += (size_t)snprintf(ids + ni, cap - ni, "%s%lld", n ? "," : "", (long long)j->id);
            nl += (size_t)snprintf(leases + nl, cap - nl, "%s%d", n ? "," : "", lease_s(j->t));
            n++;
        }
        snprintf(ids + ni, cap - ni, "}");
        snprintf(leases + nl, cap - nl, "}");
        if (n > 0 && !R.renewing)
            R.renewing =
                runner_query(on_renewed, NULL, SQL_RENEW, 3,
                             (rx_param[]){RX_TEXT(ids), RX_TEXT(leases), RX_TEXT(R.instance)}) == 0;
    }
    free(ids);
    free(leases);
}

/* ---- periodic tasks ---- */

static void on_fired(rx_req *req, rx_rows *rows)
{
    size_t i = (size_t)(uintptr_t)req->data;
    R.firing--;
    if (rx_rows_failed(rows)) {
        if (!R.stopping) {
            if (!R.periodic_warned)
                kn_log(RX_LOG_WARN, NULL, "jobs: periodic task '%s': cannot fire: %s",
                       tasks[i].name, rx_rows_message(rows));
            R.periodic_warned = true;
            R.last_slot[i] = -1; /* try this slot again at the next tick */
        }
    } else {
        R.periodic_warned = false;
        if (rx_rows_count(rows) > 0) {
            kn_log(RX_LOG_DEBUG, mod_name(tasks[i].module), "periodic task '%s' fired: job %s",
                   tasks[i].name, rx_rows_text(rows, 0, 0));
            R.want = true;
        }
    }
    runner_query_end(req);
    claim_maybe();
}

static void on_tick(uv_timer_t *t);

static void arm_tick(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* Just after the next second boundary: a slot's first moment. */
    uint64_t ms = 1000 - (uint64_t)(ts.tv_nsec / 1000000) + 5;
    uv_timer_start(&R.tick_timer, on_tick, ms, 0);
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (!R.w->draining && R.firing == 0) {
        for (size_t i = 0; i < ntasks; i++) {
            if (!tasks[i].periodic)
                continue;
            int64_t slot = task_slot(&tasks[i], (int64_t)ts.tv_sec);
            if (slot < 0 || slot == R.last_slot[i])
                continue;
            R.last_slot[i] = slot;
            char iso[32];
            time_t st = (time_t)slot;
            struct tm tm;
            gmtime_r(&st, &tm);
            strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
            if (runner_query(on_fired, (void *)(uintptr_t)i, SQL_PERIODIC, 3,
                             (rx_param[]){RX_TEXT(tasks[i].name), RX_INT(slot), RX_TEXT(iso)}) != 0)
                R.last_slot[i] = -1;
            else
                R.firing++;
        }
    }
    arm_tick();
}

/* ---- counts for /metrics, purge of old finished jobs ---- */

static void on_counts(rx_req *req, rx_rows *rows)
{
    R.counting = false;
    int64_t q, r, d;
    if (!rx_rows_failed(rows) && rx_rows_int(rows, 0, 0, &q) == 0 &&
        rx_rows_int(rows, 0, 1, &r) == 0 && rx_rows_int(rows, 0, 2, &d) == 0) {
        atomic_store(&m_queued, q);
        atomic_store(&m_running, r);
        atomic_store(&m_dead, d);
        atomic_store(&m_valid, true);
    }
    runner_query_end(req);
}

static void on_purged(rx_req *req, rx_rows *rows)
{
    R.purging = false;
    if (rx_rows_failed(rows) && !R.stopping)
        kn_log(RX_LOG_WARN, NULL, "jobs: cannot purge old finished jobs: %s",
               rx_rows_message(rows));
    else if (rx_rows_affected(rows) > 0)
        kn_log(RX_LOG_INFO, NULL, "jobs: purged %lld finished jobs older than jobs.retention",
               (long long)rx_rows_affected(rows));
    runner_query_end(req);
}

static void on_poll_timer(uv_timer_t *t)
{
    (void)t;
    if (R.w->draining)
        return;
    R.want = true;
    claim_maybe();
    if (!R.counting && runner_query(on_counts, NULL, SQL_COUNTS, 0, NULL) == 0)
        R.counting = true;
    if (R.retention_ms > 0 && !R.purging && now_ms() - R.last_purge_ms >= PURGE_EVERY_MS) {
        R.last_purge_ms = now_ms();
        R.purging = runner_query(on_purged, NULL, SQL_PURGE, 1,
                                 (rx_param[]){RX_FLOAT((double)R.retention_ms / 1000.0)}) == 0;
    }
}

/* ---- the LISTEN connection ---- */

static void listen_connect(void);

static void on_lp_closed(uv_handle_t *h)
{
    lpoll *p = (lpoll *)h;
    /* The socket is libpq's: finish only after the poll handle let go of it. */
    if (p->pg)
        PQfinish(p->pg);
    free(p);
}

static void listen_close(void)
{
    if (R.lp) {
        R.lp->pg = R.pg;
        uv_close((uv_handle_t *)&R.lp->h, on_lp_closed);
        R.lp = NULL;
    } else if (R.pg) {
        PQfinish(R.pg);
    }
    R.pg = NULL;
    R.lst = L_DOWN;
}

static void on_listen_timer(uv_timer_t *t)
{
    (void)t;
    if (R.lst == L_CONNECTING) {
        R.lbackoff_ms = R.lbackoff_ms ? R.lbackoff_ms : 250;
        if (!R.lwarned)
            kn_log(RX_LOG_WARN, NULL,
                   "jobs: LISTEN connection: connect timed out (retrying; "
                   "polling every %lld ms meanwhile)",
                   R.poll_ms);
        R.lwarned = true;
        listen_close();
        uv_timer_start(&R.listen_timer, on_listen_timer, (uint64_t)R.lbackoff_ms, 0);
    } else if (R.lst == L_DOWN && !R.stopping) {
        listen_connect();
    }
}

static void listen_fail(const char *why)
{
    if (!R.lwarned) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", why);
        char *nl = strchr(msg, '\n');
        if (nl)
            *nl = '\0';
        kn_log(RX_LOG_WARN, NULL,
               "jobs: LISTEN connection: %s (retrying; polling every %lld ms "
               "meanwhile)",
               msg, R.poll_ms);
    }
    R.lwarned = true;
    listen_close();
    if (R.stopping)
        return;
    R.lbackoff_ms = R.lbackoff_ms ? R.lbackoff_ms * 2 : 250;
    if (R.lbackoff_ms > 10000)
        R.lbackoff_ms = 10000;
    uv_timer_start(&R.listen_timer, on_listen_timer, (uint64_t)R.lbackoff_ms, 0);
}

static void on_lp(uv_poll_t *h, int status, int events);

static void listen_watch(int events)
{
    int fd = PQsocket(R.pg);
    if (fd < 0) {
        listen_fail("no socket");
        return;
    }
    if (R.lp && R.lp_fd != fd) {
        /* libpq moved to another socket (next host/address): watch that one. */
        R.lp->pg = NULL;
        uv_close((uv_handle_t *)&R.lp->h, on_lp_closed);
        R.lp = NULL;
    }
    if (R.lp == NULL) {
        lpoll *p = calloc(1, sizeof(*p));
        if (p == NULL || uv_poll_init_socket(&R.w->loop, &p->h, fd) != 0) {
            free(p);
            listen_fail("cannot watch the socket");
            return;
        }
        R.lp = p;
        R.lp_fd = fd;
        R.lp_events = 0;
    }
    if (events != R.lp_events) {
        uv_poll_start(&R.lp->h, events, on_lp);
        R.lp_events = events;
    }
}

static void listen_ready(void)
{
    PQsetnonblocking(R.pg, 1);
    if (!PQsendQuery(R.pg, "LISTEN rx_jobs")) {
        listen_fail(PQerrorMessage(R.pg));
        return;
    }
    R.lst = L_UP;
    uv_timer_stop(&R.listen_timer);
    if (R.lwarned)
        kn_log(RX_LOG_INFO, NULL, "jobs: LISTEN connection is back");
    R.lwarned = false;
    R.lbackoff_ms = 0;
    int r = PQflush(R.pg);
    if (r < 0) {
        listen_fail(PQerrorMessage(R.pg));
        return;
    }
    listen_watch(r == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE);
    /* Whatever was enqueued while nobody listened. */
    R.want = true;
    claim_maybe();
}

static void listen_step(void)
{
    switch (PQconnectPoll(R.pg)) {
    case PGRES_POLLING_READING:
        listen_watch(UV_READABLE);
        break;
    case PGRES_POLLING_WRITING:
        listen_watch(UV_WRITABLE);
        break;
    case PGRES_POLLING_OK:
        listen_ready();
        break;
    default:
        listen_fail(PQerrorMessage(R.pg));
    }
}

static void on_lp(uv_poll_t *h, int status, int events)
{
    (void)h;
    if (R.lst == L_CONNECTING) {
        listen_step();
        return;
    }
    if (R.lst != L_UP)
        return;
    if (status < 0) {
        listen_fail("socket error");
        return;
    }
    if (events & UV_WRITABLE) {
        int r = PQflush(R.pg);
        if (r < 0) {
            listen_fail(PQerrorMessage(R.pg));
            return;
        }
        listen_watch(r == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE);
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(R.pg)) {
            listen_fail(PQerrorMessage(R.pg));
            return;
        }
        while (!PQisBusy(R.pg)) {
            PGresult *res = PQgetResult(R.pg);
            if (res == NULL)
                break;
            bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
            if (!ok) {
                listen_fail(PQerrorMessage(R.pg));
                return;
            }
        }
        bool got = false;
        PGnotify *n;
        while ((n = PQnotifies(R.pg)) != NULL) {
            got = true;
            PQfreemem(n);
        }
        if (PQstatus(R.pg) == CONNECTION_BAD) {
            listen_fail("connection lost");
            return;
        }
        if (got) {
            R.want = true;
            claim_maybe();
        }
    }
}

static void listen_connect(void)
{
    static const char *const keys[] = {"dbname", "application_name", "options", NULL};
    const char *vals[] = {kn_db_url(), "rxd-jobs", "-c TimeZone=UTC", NULL};
    R.pg = PQconnectStartParams(keys, vals, 1);
    if (R.pg == NULL || PQstatus(R.pg) == CONNECTION_BAD) {
        listen_fail(R.pg ? PQerrorMessage(R.pg) : "out of memory");
        return;
    }
    R.lst = L_CONNECTING;
    uv_timer_start(&R.listen_timer, on_listen_timer, (uint64_t)R.connect_ms, 0);
    listen_watch(UV_WRITABLE);
}

/* ---- worker life ---- */

static char *array_literal(bool names)
{
    size_t cap = 3;
    for (size_t i = 0; i < ntasks; i++)
        cap += strlen(tasks[i].name) + 16;
    char *s = malloc(cap);
    if (s == NULL)
        return NULL;
    size_t n = 0;
    s[n++] = '{';
    for (size_t i = 0; i < ntasks; i++) {
        if (names) /* quoted: a task named "null" must not read as NULL */
            n += (size_t)snprintf(s + n, cap - n, "%s\"%s\"", i ? "," : "", tasks[i].name);
        else
            n += (size_t)snprintf(s + n, cap - n, "%s%d", i ? "," : "", lease_s(&tasks[i]));
    }
    snprintf(s + n, cap - n, "}");
    return s;
}

static long long conf_num(const char *key, long long def, long long lo, long long hi, bool dur)
{
    long long v = def;
    int rc =
        dur ? kn_config_duration_ms(kn_conf, key, def, &v) : kn_config_int(kn_conf, key, def, &v);
    if (rc != 0 || v < lo || v > hi) {
        kn_log(RX_LOG_ERROR, NULL, "config %s: invalid value '%s' (using %lld)", key,
               kn_config_get(kn_conf, key), def);
        v = def;
    }
    return v;
}

int kn_jobs_worker_start(kn_worker *w)
{
    if (w->id != 0)
        return 0; /* one runner per process */
    bool enabled = true;
    if (kn_config_bool(kn_conf, "jobs.enabled", true, &enabled) != 0) {
        kn_log(RX_LOG_ERROR, NULL, "config jobs.enabled: invalid value '%s' (using true)",
               kn_config_get(kn_conf, "jobs.enabled"));
        enabled = true;
    }
    if (!enabled) {
        kn_log(RX_LOG_INFO, NULL, "jobs: runner disabled (jobs.enabled = false)");
        return 0;
    }
    if (ntasks == 0)
        return 0; /* nothing to run: no LISTEN, no queries taking pool slots */
    if (kn_db_url() == NULL) {
        kn_log(RX_LOG_WARN, NULL, "jobs: database.url is not set: no job runs");
        return 0;
    }
    free(R.names_lit);
    free(R.leases_lit);
    free(R.last_slot);
    memset(&R, 0, sizeof(R));
    R.w = w;
    R.concurrency = conf_num("jobs.concurrency", 8, 1, 1024, false);
    R.poll_ms = conf_num("jobs.poll_interval", 5000, 100, 3600000, true);
    R.retention_ms = conf_num("jobs.retention", 7LL * 86400000, 0, 3650LL * 86400000, true);
    R.connect_ms = conf_num("database.timeout", 5000, 1, 3600000, true);
    char host[64] = "localhost";
    gethostname(host, sizeof(host) - 1);
    uint32_t rnd;
    if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
        rnd = (uint32_t)uv_hrtime();
    R.rng = ((uint64_t)rnd << 32) ^ uv_hrtime() ^ 0x9e3779b97f4a7c15ULL;
    /* Host and pid for the operator; the random part because pids repeat
     * (containers) and a restarted process must not look like its predecessor. */
    snprintf(R.instance, sizeof(R.instance), "%s:%ld:%08x", host, (long)getpid(), rnd);
    R.names_lit = array_literal(true);
    R.leases_lit = array_literal(false);
    R.last_slot = calloc(ntasks, sizeof(int64_t));
    if (R.names_lit == NULL || R.leases_lit == NULL || R.last_slot == NULL)
        return RX_ENOMEM;
    bool periodic = false;
    for (size_t i = 0; i < ntasks; i++) {
        R.last_slot[i] = -1;
        periodic |= tasks[i].periodic;
    }
    uv_loop_t *loop = &w->loop;
    uv_timer_init(loop, &R.poll_timer);
    uv_timer_init(loop, &R.due_timer);
    uv_timer_init(loop, &R.tick_timer);
    uv_timer_init(loop, &R.renew_timer);
    uv_timer_init(loop, &R.listen_timer);
    R.live = true;
    w->jobs = &R;
    uv_timer_start(&R.poll_timer, on_poll_timer, (uint64_t)R.poll_ms, (uint64_t)R.poll_ms);
    uv_timer_start(&R.renew_timer, on_renew_timer, RENEW_EVERY_MS, RENEW_EVERY_MS);
    if (periodic)
        arm_tick();
    listen_connect();
    R.want = true;
    claim_maybe();
    if (runner_query(on_counts, NULL, SQL_COUNTS, 0, NULL) == 0)
        R.counting = true;
    kn_log(RX_LOG_INFO, NULL, "jobs: runner %s started: %zu tasks, concurrency %lld", R.instance,
           ntasks, R.concurrency);
    return 0;
}

void kn_jobs_worker_stop(kn_worker *w)
{
    if (w->jobs != &R || !R.live)
        return;
    R.stopping = true;
    R.live = false;
    uv_close((uv_handle_t *)&R.poll_timer, NULL);
    uv_close((uv_handle_t *)&R.due_timer, NULL);
    uv_close((uv_handle_t *)&R.tick_timer, NULL);
    uv_close((uv_handle_t *)&R.renew_timer, NULL);
    uv_close((uv_handle_t *)&R.listen_timer, NULL);
    listen_close();
    /* Forced shutdown: whatever still runs is abandoned. Its lease expires
     * and a runner (here after a restart, or another instance) runs it again. */
    int abandoned = 0;
    while (R.jobs) {
        job *j = R.jobs;
        if (j->timer) {
            uv_close((uv_handle_t *)j->timer, free_handle);
            j->timer = NULL;
        }
        abandoned += j->st == J_RUNNING;
        job_release(j);
    }
    if (abandoned > 0)
        kn_log(RX_LOG_WARN, NULL,
               "jobs: %d running jobs abandoned at shutdown: they run again "
               "when their leases expire",
               abandoned);
    atomic_store(&m_valid, false);
    w->jobs = NULL;
}

bool kn_jobs_idle(const kn_worker *w)
{
    if (w->jobs != &R)
        return true;
    return R.jobs == NULL && R.inflight == 0;
}

/* The rxd_jobs gauges as Prometheus text for metrics.c (kn_data.h). */
int kn_jobs_metrics(char *buf, size_t len)
{
    if (!atomic_load(&m_valid) || len == 0)
        return 0;
    int n = snprintf(buf, len,
                     "# HELP rxd_jobs Jobs by state in the shared queue (refreshed every "
                     "jobs.poll_interval).\n"
                     "# TYPE rxd_jobs gauge\n"
                     "rxd_jobs{state=\"queued\"} %lld\n"
                     "rxd_jobs{state=\"running\"} %lld\n"
                     "rxd_jobs{state=\"dead\"} %lld\n",
                     (long long)atomic_load(&m_queued), (long long)atomic_load(&m_running),
                     (long long)atomic_load(&m_dead));
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return 0;
    }
    return n;
}

void kn_jobs_free(void)
{
    for (size_t i = 0; i < ntasks; i++) {
        free(tasks[i].name);
        free(tasks[i].schedule);
    }
    free(tasks);
    tasks = NULL;
    ntasks = tasks_cap = 0;
    free(R.names_lit);
    free(R.leases_lit);
    free(R.last_slot);
    R.names_lit = R.leases_lit = NULL;
    R.last_slot = NULL;
}

/* ------------------------------------------------------------------------ */
/* The SDK's job accessors and rx_enqueue                                     */
/* ------------------------------------------------------------------------ */

json_t *rx_job_payload(rx_req *req)
{
    return req && req->job ? req->json : NULL;
}

int64_t rx_job_id(const rx_req *req)
{
    return req && req->job ? ((const job *)req->job)->id : 0;
}

int rx_job_attempt(const rx_req *req)
{
    return req && req->job ? ((const job *)req->job)->attempt : 0;
}

bool rx_req_is_job(const rx_req *req)
{
    return req != NULL && req->detached && req->job != NULL;
}

void rx_job_done(rx_req *req, const char *error)
{
    job *j = req ? req->job : NULL;
    if (j == NULL) {
        kn_log(RX_LOG_WARN, NULL, "rx_job_done() called with a request that is not a job: ignored");
        return;
    }
    if (j->st != J_RUNNING) {
        if (j->timed_out)
            kn_log(RX_LOG_INFO, mod_name(j->t->module),
                   "job %lld (%s) attempt %d finished after its %ds timeout: result ignored",
                   (long long)j->id, j->t->name, j->attempt, j->t->timeout_s);
        else if (!R.stopping)
            kn_log(RX_LOG_WARN, mod_name(j->t->module),
                   "job %lld (%s): rx_job_done() called twice: ignored", (long long)j->id,
                   j->t->name);
        return;
    }
    job_finish(j, error);
}

static void on_enqueued_log(rx_req *req, rx_rows *rows)
{
    (void)req;
    if (rx_rows_failed(rows))
        kn_log(RX_LOG_ERROR, NULL, "rx_enqueue failed: %s", rx_rows_message(rows));
}

int rx_enqueue(rx_req *req, const char *task, const json_t *payload, int delay_s, rx_db_cb cb)
{
    if (req == NULL || task == NULL || *task == '\0' || delay_s < 0)
        return RX_EINVAL;
    json_t *empty = payload ? NULL : json_object();
    int rc = rx_db(req, cb ? cb : on_enqueued_log, SQL_ENQUEUE, RX_TEXT(task),
                   RX_JSON(payload ? payload : empty), RX_FLOAT((double)delay_s));
    json_decref(empty);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* `rxd jobs`                                                                */
/* ------------------------------------------------------------------------ */

static const char SQL_CLI_TASKS[] =
    "WITH k AS (SELECT unnest($1::text[]) AS task),"
    " c AS (SELECT task,"
    "   count(*) FILTER (WHERE state = 'queued' AND run_at <= now()) AS due,"
    "   count(*) FILTER (WHERE state = 'queued' AND run_at > now()) AS delayed,"
    "   count(*) FILTER (WHERE state = 'running') AS running,"
    "   count(*) FILTER (WHERE state = 'done') AS done,"
    "   count(*) FILTER (WHERE state = 'dead') AS dead,"
    "   floor(extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'queued'"
    "         AND run_at <= now())))::bigint AS oldest"
    "  FROM rx_jobs"
    "  WHERE state IN ('queued', 'running', 'dead')"
    "     OR (state = 'done' AND finished_at > now() - interval '24 hours')"
    "  GROUP BY task)"
    " SELECT task, coalesce(due, 0), coalesce(delayed, 0), coalesce(running, 0),"
    " coalesce(done, 0), coalesce(dead, 0), oldest"
    " FROM c FULL JOIN k USING (task) ORDER BY task";

static const char SQL_CLI_DEAD[] =
    "SELECT id, task, attempts, to_char(finished_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " coalesce(last_error, '')"
    " FROM rx_jobs WHERE state = 'dead' ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT 10";

static void fmt_age(char *buf, size_t len, const char *secs)
{
    if (secs == NULL) {
        snprintf(buf, len, "-");
        return;
    }
    long long s = strtoll(secs, NULL, 10);
    if (s < 60)
        snprintf(buf, len, "%llds", s);
    else if (s < 3600)
        snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, len, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

int kn_jobs_command(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "usage: rxd jobs\n  show the job queue per task (due, delayed, running, "
                        "done in the last 24 h, dead, age of the oldest due job) and the newest "
                        "dead jobs with their last error\n");
        return 2;
    }
    (void)argv;
    char err[512];
    PGconn *pg = kn_db_connect_blocking(err, sizeof(err));
    if (pg == NULL) {
        fprintf(stderr, "rxd jobs: %s\n", err);
        return 1;
    }
    char *names = array_literal(true);
    const char *params[1] = {names ? names : "{}"};
    PGresult *r = PQexecParams(pg, SQL_CLI_TASKS, 1, NULL, params, NULL, NULL, 0);
    free(names);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "42P01") == 0)
            fprintf(stderr, "rxd jobs: the job tables do not exist: run `rxd migrate`\n");
        else
            fprintf(stderr, "rxd jobs: %s", PQerrorMessage(pg));
        PQclear(r);
        PQfinish(pg);
        return 1;
    }
    printf("%-32s %8s %8s %8s %9s %8s  %s\n", "TASK", "DUE", "DELAYED", "RUNNING", "DONE 24H",
           "DEAD", "OLDEST DUE");
    long long tot[5] = {0};
    for (int i = 0; i < PQntuples(r); i++) {
        long long v[5];
        for (int k = 0; k < 5; k++) {
            v[k] = strtoll(PQgetvalue(r, i, k + 1), NULL, 10);
            tot[k] += v[k];
        }
        char age[32];
        fmt_age(age, sizeof(age), PQgetisnull(r, i, 6) ? NULL : PQgetvalue(r, i, 6));
        printf("%-32s %8lld %8lld %8lld %9lld %8lld  %s\n", PQgetvalue(r, i, 0), v[0], v[1], v[2],
               v[3], v[4], age);
    }
    printf("%-32s %8lld %8lld %8lld %9lld %8lld\n", "(all)", tot[0], tot[1], tot[2], tot[3],
           tot[4]);
    PQclear(r);
    r = PQexec(pg, SQL_CLI_DEAD);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "rxd jobs: %s", PQerrorMessage(pg));
        PQclear(r);
        PQfinish(pg);
        return 1;
    }
    if (PQntuples(r) == 0) {
        printf("\nno dead jobs\n");
    } else {
        printf("\ndead jobs (newest %d):\n%-10s %-32s %8s  %-20s  %s\n", PQntuples(r), "ID", "TASK",
               "ATTEMPTS", "DIED AT", "LAST ERROR");
        for (int i = 0; i < PQntuples(r); i++) {
            /* One line per job: an error message may hold newlines. */
            char e[201];
            snprintf(e, sizeof(e), "%s", PQgetvalue(r, i, 4));
            for (char *p = e; *p; p++)
                if (*p == '\n' || *p == '\r' || *p == '\t')
                    *p = ' ';
            printf("%-10s %-32s %8s  %-20s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                   PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), e);
        }
    }
    PQclear(r);
    PQfinish(pg);
    return 0;
}
