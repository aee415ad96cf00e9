/*
 * webhooks.c — the webhooks module: registration, and the WebhookEvent routes
 * other than create (ingest.c): list, detail, PUT/PATCH, DELETE, and replay
 * (POST /api/webhook-events/{id}/process/).
 *
 * As in every connector module, the route permission ("webhooks.manage") is
 * rbac's decision and the rows are limited by the scope it sets
 * (rx_scope_pharmacy) in every WHERE clause, so a foreign id is not found
 * (404, never 403).
 *
 * Replay answers 202 with the event: processing is asynchronous (a new
 * WH_TASK_PROCESS job, enqueued in the same statement that checks the event
 * is not yet processed). An event already processed -> 400 "Event already
 * processed." (code "already_processed"). PUT/PATCH change only `event_type`
 * and `payload`, and only while the event is unprocessed (else 400 with the
 * same body); they do not reprocess it: the sender replays when it wants to.
 */
#include "webhooks.h"

#include <string.h>
#include <strings.h>

rx_module *wh_mod;

extern const rx_migration webhooks_migrations[];

static const char event_schema[] =
    "{\"type\":\"object\",\"required\":[\"event_type\",\"payload\"],\"properties\":{"
    "\"id\":{\"type\":\"integer\",\"readOnly\":true},"
    "\"pharmacy\":{\"type\":\"integer\",\"description\":\"required for a super admin; "
    "others: their own pharmacy (another -> 400)\"},"
    "\"event_type\":{\"type\":\"string\",\"maxLength\":100},"
    "\"payload\":{\"type\":\"object\"},"
    "\"received_at\":{\"type\":\"string\",\"format\":\"date-time\",\"readOnly\":true},"
    "\"processed\":{\"type\":\"boolean\",\"readOnly\":true},"
    "\"processing_error\":{\"type\":[\"string\",\"null\"],\"readOnly\":true},"
    "\"idempotency_key\":{\"type\":[\"string\",\"null\"],\"readOnly\":true,"
    "\"description\":\"the Idempotency-Key header, else the payload's event_id\"}}}";

#define ALREADY_PROCESSED "Event already processed."

/* ---- shared helpers ---- */

void wh_reply_not_found(rx_req *req)
{
    rx_reply_error(req, 404, "not_found", "Not found.");
}

void wh_reply_server_error(rx_req *req)
{
    rx_reply_error(req, 500, "error", "A server error occurred.");
}

void wh_add_err(json_t *errs, const char *field, const char *msg)
{
    json_t *list = json_object_get(errs, field);
    if (list == NULL) {
        list = json_array();
        json_object_set_new(errs, field, list);
    }
    json_array_append_new(list, json_string(msg));
}

/* Length in characters, as Django counts them (code points, not bytes). */
static size_t utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

void wh_read_fields(rx_req *req, json_t *body, int required, json_t *errs, const char **type,
                    json_t **payload)
{
    (void)req;
    *type = NULL;
    *payload = NULL;
    json_t *t = json_object_get(body, "event_type");
    if (t == NULL) {
        if (required)
            wh_add_err(errs, "event_type", "This field is required.");
    } else if (json_is_null(t)) {
        wh_add_err(errs, "event_type", "This field may not be null.");
    } else if (!json_is_string(t)) {
        wh_add_err(errs, "event_type", "Not a valid string.");
    } else if (json_string_length(t) == 0) {
        wh_add_err(errs, "event_type", "This field may not be blank.");
    } else if (utf8_len(json_string_value(t)) > 100) {
        wh_add_err(errs, "event_type", "Ensure this field has no more than 100 characters.");
    } else if (strlen(json_string_value(t)) != json_string_length(t)) {
        /* A NUL inside would be cut by the database driver: refuse rather than store less. */
        wh_add_err(errs, "event_type", "Null characters are not allowed.");
    } else {
        *type = json_string_value(t);
    }
    json_t *p = json_object_get(body, "payload");
    if (p == NULL) {
        if (required)
            wh_add_err(errs, "payload", "This field is required.");
    } else if (json_is_null(p)) {
        wh_add_err(errs, "payload", "This field may not be null.");
    } else if (!json_is_object(p)) {
        /* Known types' payloads are the bodies of calls (objects), and
         * event_id is read from it: anything else is not an event. */
        wh_add_err(errs, "payload", "Expected a JSON object.");
    } else {
        *payload = p;
    }
}

static int64_t scope(const rx_req *req)
{
    return rx_scope_pharmacy(req);
}

/* ---- list ---- */

/* A positive id in decimal, or -1. */
static int64_t parse_id(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 18)
        return -1;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v > 0 ? v : -1;
}

static void wh_list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    json_t *errs = json_object();
    /* ?processed= is a boolean filter: garbage is refused rather than ignored,
     * so a typo never silently returns every event. */
    int processed = -1;
    const char *pq = rx_req_query(req, "processed");
    if (pq != NULL && *pq != '\0') {
        if (strcasecmp(pq, "true") == 0 || strcmp(pq, "1") == 0)
            processed = 1;
        else if (strcasecmp(pq, "false") == 0 || strcmp(pq, "0") == 0)
            processed = 0;
        else
            wh_add_err(errs, "processed", "Must be a valid boolean.");
    }
    const char *type = rx_req_query(req, "event_type");
    if (type != NULL && *type == '\0')
        type = NULL;
    /* ?pharmacy= narrows a super admin's view; for everyone else the scope
     * already fixes the pharmacy, so it is ignored (API.md). */
    int64_t pharmacy = 0;
    const char *ph = rx_req_query(req, "pharmacy");
    if (scope(req) == RX_SCOPE_ALL && ph != NULL && *ph != '\0') {
        pharmacy = parse_id(ph);
        if (pharmacy < 0)
            wh_add_err(errs, "pharmacy",
                       "Select a valid choice. That choice is not one of the "
                       "available choices.");
    }
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    rx_list *l = rx_list_new(req, WH_COLS, "webhook_events w");
    /* The scope, or a super admin's ?pharmacy=: at most one of them. */
    int64_t only = scope(req) != RX_SCOPE_ALL ? scope(req) : pharmacy;
    if (only != 0)
        rx_list_where(l, "w.pharmacy_id = $?", RX_INT(only));
    if (processed >= 0)
        rx_list_where(l, "w.processed = $?", RX_BOOL(processed == 1));
    if (type != NULL)
        rx_list_where(l, "w.event_type = $?", RX_TEXT(type));
    /* Always in arrival order: this list has no ?ordering=. */
    rx_list_order(l, NULL, 0, "w.id ASC");
    if (rx_list_run(l, rx_reply_rows_page, limit, offset) != 0)
        wh_reply_server_error(req);
}

/* ---- one event ---- */

static void wh_get(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        wh_reply_not_found(req);
        return;
    }
    if (rx_db(req, rx_reply_row,
              "SELECT " WH_COLS " FROM webhook_events w"
              " WHERE w.id = $1 AND ($2::bigint = 0 OR w.pharmacy_id = $2)",
              RX_INT(id), RX_INT(scope(req))) != 0)
        wh_reply_server_error(req);
}

/* Rows of update and replay: no row = not found; `was_processed` true = the
 * event was processed before this statement, nothing changed; else the event
 * (with the column `job_id` of replay dropped). */
static void guarded_done(rx_req *req, rx_rows *rows, int status)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        wh_reply_not_found(req);
        return;
    }
    bool was = false;
    rx_rows_bool(rows, 0, rx_rows_column(rows, "was_processed"), &was);
    if (was) {
        rx_reply_error(req, 400, "already_processed", ALREADY_PROCESSED);
        return;
    }
    json_t *o = rx_rows_object(rows, 0);
    json_object_del(o, "was_processed");
    json_object_del(o, "job_id");
    rx_reply_json(req, status, o);
}

static void updated_done(rx_req *req, rx_rows *rows)
{
    /* 22P05: a \u0000 in the payload, which jsonb cannot store. */
    if (rx_rows_failed(rows) && rx_rows_error(rows) == RX_EDB &&
        strcmp(rx_rows_sqlstate(rows), "22P05") == 0) {
        rx_reply_invalid_field(req, "payload", "Null characters are not allowed.");
        return;
    }
    guarded_done(req, rows, 200);
}

static void wh_update(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        wh_reply_not_found(req);
        return;
    }
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    json_t *errs = json_object();
    const char *type;
    json_t *payload;
    wh_read_fields(req, body, rx_req_method(req) == RX_PUT, errs, &type, &payload);
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    /* The row lock of `t` makes "unprocessed" and the change one decision:
     * a claim by an owner cannot slip in between. */
    if (rx_db(req, updated_done,
              "WITH t AS (SELECT id, processed FROM webhook_events"
              "           WHERE id = $1 AND ($2::bigint = 0 OR pharmacy_id = $2) FOR UPDATE),"
              " u AS (UPDATE webhook_events w SET event_type = COALESCE($3, w.event_type),"
              "              payload = COALESCE($4::jsonb, w.payload)"
              "         FROM t WHERE w.id = t.id AND NOT t.processed"
              "       RETURNING " WH_COLS ")"
              " SELECT t.processed AS was_processed, u.* FROM t LEFT JOIN u ON true",
              RX_INT(id), RX_INT(scope(req)), RX_TEXT(type), RX_JSON(payload)) != 0)
        wh_reply_server_error(req);
}

static void wh_delete(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        wh_reply_not_found(req);
        return;
    }
    if (rx_db(req, rx_reply_deleted,
              "DELETE FROM webhook_events WHERE id = $1 AND ($2::bigint = 0 OR pharmacy_id = $2)"
              " RETURNING id",
              RX_INT(id), RX_INT(scope(req))) != 0)
        wh_reply_server_error(req);
}

static void replayed_done(rx_req *req, rx_rows *rows)
{
    guarded_done(req, rows, 202);
}

static void wh_replay(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        wh_reply_not_found(req);
        return;
    }
    /* The check and the enqueue are one statement: the job exists iff the
     * answer says 202. The scalar subquery is what makes `j` run (a SELECT in
     * WITH that nothing reads is never executed). */
    if (rx_db(req, replayed_done,
              "WITH e AS (SELECT " WH_COLS " FROM webhook_events w"
              "           WHERE w.id = $1 AND ($2::bigint = 0 OR w.pharmacy_id = $2)),"
              " j AS (SELECT rx_enqueue('" WH_TASK_PROCESS
              "', jsonb_build_object('event_id', e.id))"
              "              AS job_id FROM e WHERE NOT e.processed)"
              " SELECT e.*, e.processed AS was_processed, (SELECT job_id FROM j) AS job_id FROM e",
              RX_INT(id), RX_INT(scope(req))) != 0)
        wh_reply_server_error(req);
}

/* ---- module ---- */

static int init(rx_module *m)
{
    wh_mod = m;
    int rc = 0;
    rc |= rx_schema(m, "WebhookEvent", event_schema);
#define ROUTE(meth, path, fn, sum, reqs, resps, st)                                                \
    do {                                                                                           \
        rx_route_opts o = {.perm = "webhooks.manage",                                              \
                           .list_style = RX_LIST_ARRAY,                                            \
                           .tag = "webhooks",                                                      \
                           .summary = sum,                                                         \
                           .request_schema = reqs,                                                 \
                           .response_schema = resps,                                               \
                           .success_status = st};                                                  \
        rc |= rx_route(m, meth, path, fn, &o);                                                     \
    } while (0)
    ROUTE(RX_GET, "/api/webhook-events/", wh_list,
          "List webhook events (?event_type=, ?processed=true|false, super admin ?pharmacy=)", NULL,
          "[]WebhookEvent", 200);
    ROUTE(RX_POST, "/api/webhook-events/", wh_ingest,
          "Receive an event: 201 stored (and queued for processing); a repeated Idempotency-Key "
          "(or payload event_id) of the same pharmacy -> 200 with the first event, nothing stored",
          "WebhookEvent", "WebhookEvent", 201);
    ROUTE(RX_GET, "/api/webhook-events/{id}/", wh_get, "A webhook event", NULL, "WebhookEvent",
          200);
    ROUTE(RX_PUT | RX_PATCH, "/api/webhook-events/{id}/", wh_update,
          "Change event_type/payload of an unprocessed event (processed -> 400)", "WebhookEvent",
          "WebhookEvent", 200);
    ROUTE(RX_DELETE, "/api/webhook-events/{id}/", wh_delete, "Delete a webhook event", NULL, NULL,
          204);
    ROUTE(RX_POST, "/api/webhook-events/{id}/process/", wh_replay,
          "Process the event again (202 with the event; already processed -> 400)", NULL,
          "WebhookEvent", 202);
#undef ROUTE
    rx_task_opts topts = {.max_attempts = 5, .timeout_s = 30, .backoff_ms = 1000};
    rc |= rx_task(m, WH_TASK_PROCESS, wh_process, &topts);
    rc |= rx_migrations(m, webhooks_migrations);
    if (rc != 0) {
        rx_module_fail(m, "registration failed");
        return -1;
    }
    return 0;
}

RX_MODULE(
    "webhooks", "1.0.0", .requires = RX_REQUIRES("pharmacies"), .init = init,
    .summary = "incoming webhook events: idempotent ingestion, processing by the data's owner");
