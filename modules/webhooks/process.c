/*
 * process.c — the WH_TASK_PROCESS job: look at a stored event and hand it to
 * the module that owns its data.
 *
 * webhooks never touches inventory's or orders' tables. A known type is one
 * for which some module registered the task WH_APPLY_PREFIX "<event type>"
 * (rx_task_exists); this job enqueues that task with {"event_id",
 * "pharmacy_id", "payload"}, and the owner applies the change and marks the
 * event in the same statement through rx_webhook_claim (true only once per
 * event, so a retried or duplicated apply job changes the data once) or
 * records a validation failure with rx_webhook_fail (processed stays false,
 * the sender reads processing_error). An unknown type is left as stored:
 * unprocessed, processing_error null, ready for a replay once an owner exists.
 *
 * Two statements (load, then enqueue) because the dispatch decision is made
 * in C (rx_task_exists). That is safe: the enqueue re-checks NOT processed,
 * and the owner's claim is the only thing that decides "applied".
 */
#include "webhooks.h"

#include <string.h>

static void enqueued(rx_req *job, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_job_done(job, rx_rows_message(rows) ? rx_rows_message(rows) : "enqueue failed");
        return;
    }
    rx_job_done(job, NULL);
}

static void loaded(rx_req *job, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        /* Retried with backoff by the runner: the database may be back then. */
        rx_job_done(job, rx_rows_message(rows) ? rx_rows_message(rows) : "load failed");
        return;
    }
    if (rx_rows_count(rows) != 1) { /* deleted meanwhile: nothing to do */
        rx_job_done(job, NULL);
        return;
    }
    bool processed = false;
    rx_rows_bool(rows, 0, rx_rows_column(rows, "processed"), &processed);
    if (processed) {
        rx_job_done(job, NULL);
        return;
    }
    const char *type = rx_rows_text(rows, 0, rx_rows_column(rows, "event_type"));
    const char *task = rx_req_sprintf(job, WH_APPLY_PREFIX "%s", type ? type : "");
    if (task == NULL) {
        rx_job_done(job, "out of memory");
        return;
    }
    if (!rx_task_exists(task)) {
        rx_log(wh_mod, RX_LOG_INFO, "webhook event of unknown type %s left unprocessed", type);
        rx_job_done(job, NULL);
        return;
    }
    int64_t id = 0;
    rx_rows_int(rows, 0, rx_rows_column(rows, "id"), &id);
    if (rx_db(job, enqueued,
              "SELECT rx_enqueue($1::text, jsonb_build_object('event_id', id,"
              "        'pharmacy_id', pharmacy_id, 'payload', payload)) AS job_id"
              "  FROM webhook_events WHERE id = $2 AND NOT processed",
              RX_TEXT(task), RX_INT(id)) != 0)
        rx_job_done(job, "enqueue failed");
}

void wh_process(rx_req *job)
{
    json_t *id = json_object_get(rx_job_payload(job), "event_id");
    if (!json_is_integer(id) || json_integer_value(id) <= 0) {
        /* A malformed job never becomes valid: finish it instead of retrying. */
        rx_log(wh_mod, RX_LOG_WARN, "webhooks.process job %lld without a valid event_id",
               (long long)rx_job_id(job));
        rx_job_done(job, NULL);
        return;
    }
    if (rx_db(job, loaded, "SELECT id, event_type, processed FROM webhook_events WHERE id = $1",
              RX_INT(json_integer_value(id))) != 0)
        rx_job_done(job, "load failed");
}
