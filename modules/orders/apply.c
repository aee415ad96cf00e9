/*
 * apply.c — the webhook apply tasks the webhooks module dispatches to
 * ("webhook.apply.<event type>", payload {"event_id", "pharmacy_id",
 * "payload"}): order.created (the payload is a create body) and
 * order.status_changed ({order_reference, status}).
 *
 * Exactly once under retries: the change is made in the same statement as
 * rx_webhook_claim(event_id) (webhooks' migration), and only when the claim
 * is true, so a retried job finds the event processed and changes nothing.
 * The claim is taken only when the change will succeed (no duplicate
 * reference; an allowed transition on the locked row), because
 * rx_webhook_fail() records a reason only on an unprocessed event.
 * A validation failure is not a job failure: it is recorded with
 * rx_webhook_fail() and the job finishes successfully (retrying cannot help).
 */
#include "orders.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t payload_int(rx_req *job, const char *key)
{
    json_t *v = json_object_get(rx_job_payload(job), key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static void fail_done(rx_req *job, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_job_done(job, "rx_webhook_fail failed");
        return;
    }
    rx_job_done(job, NULL);
}

/* Record why the event was not applied, then finish the job. */
static void record_failure(rx_req *job, json_t *errs)
{
    char *text = json_dumps(errs, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(errs);
    int rc = rx_db(job, fail_done, "SELECT rx_webhook_fail($1, $2)",
                   RX_INT(payload_int(job, "event_id")), RX_TEXT(text ? text : "invalid"));
    free(text);
    if (rc != 0)
        rx_job_done(job, "could not queue rx_webhook_fail");
}

/* A job without the ids webhooks always sends is a bug upstream: fail it
 * (retries then dead, visible in `rxd jobs`) rather than guess. */
static bool job_ids_ok(rx_req *job)
{
    if (payload_int(job, "event_id") <= 0 || payload_int(job, "pharmacy_id") <= 0 ||
        !json_is_object(json_object_get(rx_job_payload(job), "payload"))) {
        rx_job_done(job, "payload needs event_id, pharmacy_id and an object payload");
        return false;
    }
    return true;
}

/* ---- order.created ---- */

static void created_done(rx_req *job, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        const char *state = rx_rows_sqlstate(rows);
        /* A parallel insert of the same reference, or the pharmacy deleted:
         * the statement rolled back (claim included), so record why. */
        if (rx_rows_error(rows) == RX_EDB && state != NULL &&
            (strcmp(state, "23505") == 0 || strcmp(state, "23503") == 0)) {
            record_failure(job, strcmp(state, "23505") == 0
                                    ? json_pack("{s:[s]}", "order_reference", ord_dup_msg)
                                    : json_pack("{s:[s]}", "pharmacy", "Pharmacy not found."));
            return;
        }
        rx_job_done(job, "database error");
        return;
    }
    bool free_ref = false, claimed = false;
    rx_rows_bool(rows, 0, rx_rows_column(rows, "free_ref"), &free_ref);
    rx_rows_bool(rows, 0, rx_rows_column(rows, "claimed"), &claimed);
    if (claimed) {
        json_t *o = rx_rows_object(rows, 0);
        json_object_del(o, "free_ref");
        json_object_del(o, "claimed");
        rx_emit(job, "order.created", o);
        json_decref(o);
        rx_job_done(job, NULL);
        return;
    }
    if (!free_ref) { /* a duplicate (or a retry of an applied event: fail is then a no-op) */
        record_failure(job, json_pack("{s:[s]}", "order_reference", ord_dup_msg));
        return;
    }
    rx_job_done(job, NULL); /* already processed by an earlier attempt */
}

static void apply_created(rx_req *job)
{
    if (!job_ids_ok(job))
        return;
    int64_t pharmacy = payload_int(job, "pharmacy_id");
    json_t *errs = json_object();
    ord_in in;
    ord_parse(json_object_get(rx_job_payload(job), "payload"), true, &in, errs);
    char msg[160];
    if (in.has_pharmacy && in.pharmacy != pharmacy) {
        ord_bad_pk_msg(msg, sizeof msg, in.pharmacy);
        ord_add_err(errs, "pharmacy", msg);
    }
    if (in.status != NULL && strcmp(in.status, "pending") != 0) {
        snprintf(msg, sizeof msg, "A new order starts as \"pending\", not \"%s\".", in.status);
        ord_add_err(errs, "status", msg);
    }
    if (json_object_size(errs) > 0) {
        ord_in_free(&in);
        record_failure(job, errs);
        return;
    }
    json_decref(errs);
    int rc = rx_db(
        job, created_done,
        "WITH pre AS (SELECT NOT EXISTS (SELECT 1 FROM orders"
        "   WHERE pharmacy_id = $2 AND order_reference = $3) AS free_ref),"
        " claim AS (SELECT CASE WHEN (SELECT free_ref FROM pre) THEN rx_webhook_claim($1)"
        "   ELSE false END AS ok),"
        " ins AS (INSERT INTO orders AS o (pharmacy_id, order_reference, status, items,"
        "   total_amount) SELECT $2, $3, 'pending', $4::jsonb, $5::numeric"
        "   WHERE (SELECT ok FROM claim) RETURNING " ORD_COLS ")"
        " SELECT (SELECT free_ref FROM pre) AS free_ref, (SELECT ok FROM claim) AS claimed, ins.*"
        " FROM (SELECT 1) AS one LEFT JOIN ins ON true",
        RX_INT(payload_int(job, "event_id")), RX_INT(pharmacy), RX_TEXT(in.ref), RX_JSON(in.items),
        RX_TEXT(in.total));
    ord_in_free(&in);
    if (rc != 0)
        rx_job_done(job, "could not queue the insert");
}

/* ---- order.status_changed ---- */

static void status_done(rx_req *job, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_job_done(job, "database error");
        return;
    }
    json_t *body = json_object_get(rx_job_payload(job), "payload");
    const char *to = ord_status_lookup(json_string_value(json_object_get(body, "status")));
    bool claimed = false;
    rx_rows_bool(rows, 0, rx_rows_column(rows, "claimed"), &claimed);
    const char *from = rx_rows_text(rows, 0, rx_rows_column(rows, "cur_status"));
    if (claimed) {
        json_t *o = rx_rows_object(rows, 0);
        json_object_del(o, "cur_status");
        json_object_del(o, "claimed");
        json_t *ev =
            json_pack("{s:o,s:s,s:s}", "order", o, "from", from ? from : "", "to", to ? to : "");
        rx_emit(job, "order.status_changed", ev);
        json_decref(ev);
        rx_job_done(job, NULL);
        return;
    }
    /* Not claimed: no such order, a refused transition, or an event an
     * earlier attempt applied (then rx_webhook_fail changes nothing). */
    if (from == NULL) {
        record_failure(job, json_pack("{s:[s]}", "order_reference", "Not found."));
        return;
    }
    char msg[200];
    ord_transition_msg(msg, sizeof msg, from, to);
    record_failure(job, json_pack("{s:[s]}", "status", msg));
}

static void apply_status(rx_req *job)
{
    if (!job_ids_ok(job))
        return;
    json_t *body = json_object_get(rx_job_payload(job), "payload");
    json_t *errs = json_object();
    ord_in in;
    /* Only the two fields this event carries are read. */
    json_t *sub = json_object();
    json_t *v;
    if ((v = json_object_get(body, "order_reference")) != NULL)
        json_object_set(sub, "order_reference", v);
    else
        ord_add_err(errs, "order_reference", "This field is required.");
    if ((v = json_object_get(body, "status")) != NULL)
        json_object_set(sub, "status", v);
    else
        ord_add_err(errs, "status", "This field is required.");
    ord_parse(sub, false, &in, errs);
    json_decref(sub);
    if (json_object_size(errs) > 0) {
        ord_in_free(&in);
        record_failure(job, errs);
        return;
    }
    json_decref(errs);
    /* cur locks the order so the claim is decided on its latest status and
     * the update that follows cannot miss. */
    int rc =
        rx_db(job, status_done,
              "WITH cur AS (SELECT o.id, o.status FROM orders o"
              "   WHERE o.pharmacy_id = $2 AND o.order_reference = $3 FOR UPDATE),"
              " claim AS (SELECT CASE WHEN (SELECT status FROM cur) = ANY($5::text[])"
              "   THEN rx_webhook_claim($1) ELSE false END AS ok),"
              " upd AS (UPDATE orders o SET status = $4, updated_at = now() FROM cur"
              "   WHERE o.id = cur.id AND (SELECT ok FROM claim) RETURNING " ORD_COLS ")"
              " SELECT (SELECT status FROM cur) AS cur_status, (SELECT ok FROM claim) AS claimed,"
              " upd.* FROM (SELECT 1) AS one LEFT JOIN upd ON true",
              RX_INT(payload_int(job, "event_id")), RX_INT(payload_int(job, "pharmacy_id")),
              RX_TEXT(in.ref), RX_TEXT(in.status), RX_TEXT(ord_allowed_from(in.status)));
    ord_in_free(&in);
    if (rc != 0)
        rx_job_done(job, "could not queue the update");
}

int ord_apply_init(rx_module *m)
{
    int rc = 0;
    rc |= rx_task(m, "webhook.apply.order.created", apply_created, NULL);
    rc |= rx_task(m, "webhook.apply.order.status_changed", apply_status, NULL);
    return rc;
}
