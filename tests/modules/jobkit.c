/*
 * jobkit.c — a module used only by the durable-jobs tests (tests/e2e/test_jobs.py).
 *
 * Routes enqueue a job (alone, or inside a transaction that then fails, so
 * the job must never exist) and tell whether a request is a job. Tasks record
 * every run in table jobkit_runs (created by the tests: this module has no
 * migrations of its own), then succeed, fail N times, always fail, sleep on
 * the thread pool past their timeout, wait in the database, or enqueue
 * another job.
 *
 * Config: jobkit.instance (a label stored with each run, to tell instances
 * apart), jobkit.periodic (register "jobkit.tick" every 1 s), jobkit.bad
 * ("dup", "schedule", "cron": register something invalid, to check that
 * start-up fails with a clear message).
 */
#include <rx.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static rx_module *self;

/* ---- tasks ---- */

typedef enum { K_OK, K_FLAKY, K_FAIL, K_SLEEP, K_TICK, K_CHAIN, K_WEEKDAY, K_DBSLEEP } kind;

static const char *kind_name(kind k)
{
    static const char *const names[] = {"jobkit.ok",      "jobkit.flaky",  "jobkit.fail",
                                        "jobkit.sleep",   "jobkit.tick",   "jobkit.chain",
                                        "jobkit.weekday", "jobkit.dbsleep"};
    return names[k];
}

static void finish_from_rows(rx_req *job, rx_rows *rows)
{
    rx_job_done(job, rx_rows_failed(rows) ? rx_rows_message(rows) : NULL);
}

static void sleep_work(void *arg)
{
    sleep((unsigned)*(int *)arg);
}

static void sleep_done(rx_req *job, void *arg)
{
    free(arg);
    rx_job_done(job, NULL); /* ignored by the kernel when the attempt timed out */
}

/* After the run is recorded: the task's behaviour. */
static void after_record(rx_req *job, rx_rows *rows, kind k)
{
    if (rx_rows_failed(rows)) {
        rx_job_done(job, rx_rows_message(rows));
        return;
    }
    json_t *p = rx_job_payload(job);
    int attempt = rx_job_attempt(job);
    char msg[96];
    switch (k) {
    case K_FLAKY: {
        json_int_t fails = json_integer_value(json_object_get(p, "fail_times"));
        if (attempt <= fails) {
            snprintf(msg, sizeof(msg), "flaky failure %d", attempt);
            rx_job_done(job, msg);
        } else {
            rx_job_done(job, NULL);
        }
        return;
    }
    case K_FAIL:
        snprintf(msg, sizeof(msg), "always fails (attempt %d)", attempt);
        rx_job_done(job, msg);
        return;
    case K_SLEEP: {
        int *secs = malloc(sizeof(int));
        json_t *s = json_object_get(p, "seconds");
        *secs = s ? (int)json_integer_value(s) : 10;
        if (rx_offload(job, sleep_work, sleep_done, secs) != 0) {
            free(secs);
            rx_job_done(job, "cannot offload");
        }
        return;
    }
    case K_DBSLEEP: {
        /* Waits in the database: a forced shutdown fails this query. */
        json_t *s = json_object_get(p, "seconds");
        int rc = rx_db(job, finish_from_rows, "SELECT pg_sleep($1::float8)",
                       RX_FLOAT(s ? json_number_value(s) : 2.0));
        if (rc != 0)
            rx_job_done(job, rx_strerror(rc));
        return;
    }
    case K_CHAIN: {
        /* A job may enqueue another: its request works like a handler's. */
        json_t *next = json_pack("{s:s}", "tag", "chained");
        int rc = rx_enqueue(job, "jobkit.ok", next, 0, finish_from_rows);
        json_decref(next);
        if (rc != 0)
            rx_job_done(job, rx_strerror(rc));
        return;
    }
    default:
        rx_job_done(job, NULL);
    }
}

#define AFTER(k)                                                                                   \
    static void after_##k(rx_req *job, rx_rows *rows)                                              \
    {                                                                                              \
        after_record(job, rows, k);                                                                \
    }
AFTER(K_OK)
AFTER(K_FLAKY)
AFTER(K_FAIL)
AFTER(K_SLEEP)
AFTER(K_TICK)
AFTER(K_CHAIN)
AFTER(K_WEEKDAY)
AFTER(K_DBSLEEP)

static void record(rx_req *job, kind k, rx_db_cb cb)
{
    json_t *p = rx_job_payload(job);
    int rc =
        rx_db(job, cb,
              "INSERT INTO jobkit_runs (task, job_id, attempt, instance, tag, slot, is_job)"
              " VALUES ($1, $2, $3, $4, $5, $6, $7)",
              RX_TEXT(kind_name(k)), RX_INT(rx_job_id(job)), RX_INT(rx_job_attempt(job)),
              RX_TEXT(rx_config_str(self, "instance", "-")),
              RX_TEXT(json_string_value(json_object_get(p, "tag"))),
              RX_TEXT(json_string_value(json_object_get(p, "slot"))), RX_BOOL(rx_req_is_job(job)));
    if (rc != 0)
        rx_job_done(job, rx_strerror(rc));
}

static void task_ok(rx_req *job)
{
    record(job, K_OK, after_K_OK);
}
static void task_flaky(rx_req *job)
{
    record(job, K_FLAKY, after_K_FLAKY);
}
static void task_fail(rx_req *job)
{
    record(job, K_FAIL, after_K_FAIL);
}
static void task_sleep(rx_req *job)
{
    record(job, K_SLEEP, after_K_SLEEP);
}
static void task_tick(rx_req *job)
{
    record(job, K_TICK, after_K_TICK);
}
static void task_chain(rx_req *job)
{
    record(job, K_CHAIN, after_K_CHAIN);
}
static void task_weekday(rx_req *job)
{
    record(job, K_WEEKDAY, after_K_WEEKDAY);
}
/* Returns without an outcome or async work: the kernel must notice. */
static void task_forget(rx_req *job)
{
    (void)job;
}
static void task_dbsleep(rx_req *job)
{
    record(job, K_DBSLEEP, after_K_DBSLEEP);
}

/* ---- routes ---- */

static void on_enqueued(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    rx_reply_json(req, 201, rx_rows_object(rows, 0));
}

/* POST {task, payload, delay} */
static void enqueue(rx_req *req)
{
    json_t *b = rx_req_json(req);
    if (b == NULL)
        return;
    const char *task = json_string_value(json_object_get(b, "task"));
    json_t *payload = json_object_get(b, "payload");
    int delay = (int)json_integer_value(json_object_get(b, "delay"));
    int rc = rx_enqueue(req, task, payload, delay, on_enqueued);
    if (rc != 0)
        rx_reply_error(req, 400, "invalid", "rx_enqueue: %s", rx_strerror(rc));
}

static void on_rolled_back(rx_req *req, rx_rows *rows)
{
    if (!rx_rows_failed(rows)) {
        rx_reply_error(req, 500, "error", "the failing statement succeeded");
        return;
    }
    rx_reply_json(req, 200,
                  json_pack("{s:b, s:s}", "rolled_back", 1, "sqlstate", rx_rows_sqlstate(rows)));
}

/* POST {task, payload}: enqueue, then fail in the same transaction. */
static void enqueue_rollback(rx_req *req)
{
    json_t *b = rx_req_json(req);
    if (b == NULL)
        return;
    const char *task = json_string_value(json_object_get(b, "task"));
    json_t *payload = json_object_get(b, "payload");
    rx_param p[] = {RX_TEXT(task), RX_JSON(payload)};
    rx_stmt stmts[] = {{"SELECT rx_enqueue($1, $2::jsonb)", 2, p}, {"SELECT 1 / 0", 0, NULL}};
    rx_db_tx(req, on_rolled_back, 2, stmts);
}

static void is_job(rx_req *req)
{
    rx_reply_json(req, 200,
                  json_pack("{s:b, s:I, s:i, s:b}", "is_job", rx_req_is_job(req), "id",
                            (json_int_t)rx_job_id(req), "attempt", rx_job_attempt(req), "payload",
                            rx_job_payload(req) != NULL));
}

static int init(rx_module *m)
{
    self = m;
    int rc = 0;
    rc |= rx_route(m, RX_POST, "/test/jobs/enqueue/", enqueue,
                   &(rx_route_opts){.public_route = true, .summary = "Enqueue a job"});
    rc |= rx_route(
        m, RX_POST, "/test/jobs/enqueue-rollback/", enqueue_rollback,
        &(rx_route_opts){.public_route = true, .summary = "Enqueue in a transaction that fails"});
    rc |= rx_route(m, RX_GET, "/test/jobs/is-job/", is_job,
                   &(rx_route_opts){.public_route = true, .summary = "A request is not a job"});
    rc |= rx_task(m, "jobkit.ok", task_ok, NULL);
    rc |= rx_task(m, "jobkit.flaky", task_flaky,
                  &(rx_task_opts){.max_attempts = 5, .backoff_ms = 100});
    rc |=
        rx_task(m, "jobkit.fail", task_fail, &(rx_task_opts){.max_attempts = 3, .backoff_ms = 100});
    rc |= rx_task(m, "jobkit.sleep", task_sleep,
                  &(rx_task_opts){.max_attempts = 3, .timeout_s = 2, .backoff_ms = 100});
    rc |= rx_task(m, "jobkit.chain", task_chain, NULL);
    rc |= rx_task(m, "jobkit.dbsleep", task_dbsleep, &(rx_task_opts){.timeout_s = 5});
    rc |= rx_task(m, "jobkit.forget", task_forget, &(rx_task_opts){.max_attempts = 1});
    /* A weekday cron that parses with names, ranges and steps. */
    rc |= rx_every(m, "jobkit.weekday", "*/30 3-5 * jan-dec mon-fri", task_weekday);
    bool periodic = false;
    rx_config_bool(m, "periodic", false, &periodic);
    if (periodic)
        rc |= rx_every(m, "jobkit.tick", "1s", task_tick);
    const char *bad = rx_config_str(m, "bad", "");
    if (strcmp(bad, "dup") == 0)
        rc |= rx_task(m, "jobkit.ok", task_ok, NULL);
    else if (strcmp(bad, "schedule") == 0)
        rc |= rx_every(m, "jobkit.bad", "every minute", task_tick);
    else if (strcmp(bad, "cron") == 0)
        rc |= rx_every(m, "jobkit.bad", "0 0 30 2 *", task_tick);
    else if (strcmp(bad, "range") == 0)
        rc |= rx_every(m, "jobkit.bad", "61 * * * *", task_tick);
    return rc != 0 ? -1 : 0;
}

RX_MODULE("jobkit", "1.0.0", .init = init, .summary = "durable jobs test module");
