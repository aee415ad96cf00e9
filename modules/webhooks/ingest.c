/*
 * ingest.c — POST /api/webhook-events/: store an incoming event as received,
 * once per idempotency key and pharmacy, and queue its processing.
 *
 * The idempotency key is the Idempotency-Key header, else the payload's
 * `event_id` (a string or an integer); without either every delivery is a new
 * event. It is per pharmacy (unique index (pharmacy_id, idempotency_key)): the
 * same key from another pharmacy is another event.
 *
 * One statement decides and acts: INSERT ... ON CONFLICT DO NOTHING, the
 * processing job enqueued from the inserted row (so event and job commit
 * together, or neither), and otherwise the event stored first. A new event
 * answers 201; a repeat answers 200 with the first event and stores nothing
 * (so a sender can tell them apart, and a retry after a lost answer is safe).
 *
 * The one race the statement cannot settle: two deliveries of the same key at
 * the same moment. The second INSERT waits for the first to commit and then
 * does nothing, but its snapshot predates that commit, so its SELECT of the
 * existing row sees nothing. The statement is then run once more (a new
 * snapshot sees the committed row).
 */
#include "webhooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the statement needs, kept across the retry (request arena). */
typedef struct wh_ingest_ctx {
    int64_t pharmacy;
    const char *type;
    json_t *payload; /* borrowed from the request body */
    const char *key;
    int tries;
} wh_ingest_ctx;

static void ingest_run(rx_req *req, wh_ingest_ctx *c);

static void ingest_done(rx_req *req, rx_rows *rows)
{
    wh_ingest_ctx *c = rx_req_data(req);
    if (rx_rows_failed(rows)) {
        /* 23503: the pharmacy a super admin named does not exist. */
        if (rx_rows_error(rows) == RX_EDB && strcmp(rx_rows_sqlstate(rows), "23503") == 0) {
            rx_reply_invalid_field(req, "pharmacy", "Invalid pk \"%lld\" - object does not exist.",
                                   (long long)c->pharmacy);
            return;
        }
        /* 22P05: a \u0000 in the payload, which jsonb cannot store. */
        if (rx_rows_error(rows) == RX_EDB && strcmp(rx_rows_sqlstate(rows), "22P05") == 0) {
            rx_reply_invalid_field(req, "payload", "Null characters are not allowed.");
            return;
        }
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        if (c->tries < 2) { /* the concurrent-duplicate race (file comment) */
            ingest_run(req, c);
            return;
        }
        wh_reply_server_error(req);
        return;
    }
    bool created = false;
    rx_rows_bool(rows, 0, rx_rows_column(rows, "created"), &created);
    json_t *o = rx_rows_object(rows, 0);
    json_object_del(o, "created");
    json_object_del(o, "job_id");
    rx_reply_json(req, created ? 201 : 200, o);
}

static void ingest_run(rx_req *req, wh_ingest_ctx *c)
{
    c->tries++;
    /* NULL keys never conflict (NULLs are distinct in a unique index), so
     * keyless events always insert and the second branch finds nothing. */
    if (rx_db(
            req, ingest_done,
            "WITH ins AS ("
            "  INSERT INTO webhook_events AS w (pharmacy_id, event_type, payload, idempotency_key)"
            "  VALUES ($1, $2, $3::jsonb, $4)"
            "  ON CONFLICT (pharmacy_id, idempotency_key) DO NOTHING"
            "  RETURNING " WH_COLS ")"
            " SELECT ins.*, true AS created,"
            "        rx_enqueue('" WH_TASK_PROCESS "', jsonb_build_object('event_id', ins.id))"
            "          AS job_id"
            "   FROM ins"
            " UNION ALL"
            " SELECT " WH_COLS ", false, NULL::bigint FROM webhook_events w"
            "  WHERE w.pharmacy_id = $1 AND w.idempotency_key = $4"
            "    AND NOT EXISTS (SELECT 1 FROM ins)",
            RX_INT(c->pharmacy), RX_TEXT(c->type), RX_JSON(c->payload), RX_TEXT(c->key)) != 0)
        wh_reply_server_error(req);
}

void wh_ingest(rx_req *req)
{
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    wh_ingest_ctx *c = rx_req_alloc(req, sizeof *c);
    if (c == NULL) {
        wh_reply_server_error(req);
        return;
    }
    json_t *errs = json_object();
    wh_read_fields(req, body, 1, errs, &c->type, &c->payload);

    /* The pharmacy: a key or a pharmacy admin acts for its own (another one
     * named in the body -> 400, never stored elsewhere); a super admin (scope
     * ALL) must name it. */
    int64_t own = rx_scope_pharmacy(req);
    json_t *ph = json_object_get(body, "pharmacy");
    int64_t named = 0;
    if (ph != NULL && !json_is_null(ph)) {
        const char *t = json_string_value(ph);
        if (json_is_integer(ph) && json_integer_value(ph) > 0)
            named = (int64_t)json_integer_value(ph);
        else if (t != NULL && *t != '\0' && strlen(t) <= 18 &&
                 strspn(t, "0123456789") == strlen(t) && strtoll(t, NULL, 10) > 0)
            named = strtoll(t, NULL, 10); /* DRF's PrimaryKeyRelatedField takes "5" too */
        else
            wh_add_err(errs, "pharmacy", "Incorrect type. Expected pk value.");
    }
    if (own == RX_SCOPE_NONE) {
        /* rbac refuses these before the handler; stay deny-by-default anyway. */
        json_decref(errs);
        rx_reply_error(req, 403, "permission_denied",
                       "You do not have permission to perform this action.");
        return;
    }
    if (own == RX_SCOPE_ALL) {
        if (named == 0 && json_object_get(errs, "pharmacy") == NULL)
            wh_add_err(errs, "pharmacy", "This field is required.");
        c->pharmacy = named;
    } else {
        if (named != 0 && named != own)
            wh_add_err(errs, "pharmacy", "You may only send events for your own pharmacy.");
        c->pharmacy = own;
    }

    const char *hk = rx_req_header(req, "Idempotency-Key");
    if (hk != NULL && *hk != '\0') {
        c->key = hk;
    } else if (c->payload != NULL) {
        json_t *eid = json_object_get(c->payload, "event_id");
        if (json_is_string(eid) && json_string_length(eid) > 0)
            c->key = json_string_value(eid);
        else if (json_is_integer(eid))
            c->key = rx_req_sprintf(req, "%lld", (long long)json_integer_value(eid));
    }
    if (c->key != NULL && strlen(c->key) > 255) {
        wh_add_err(errs, "idempotency_key", "Ensure this field has no more than 255 characters.");
    }
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    rx_req_set_data(req, c);
    ingest_run(req, c);
}
