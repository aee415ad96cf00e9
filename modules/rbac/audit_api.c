/*
 * audit_api.c — GET /api/admin/audit-logs/ and /api/admin/audit-logs/{id}/
 * for super admins (permission audit.view). Rows are written by the system
 * only, so only GET is registered: the kernel answers every other method 405
 * with Allow. Filters: ?user=, ?action=, ?created_after=, ?created_before=
 * (ISO 8601, inclusive; anything else is 400). Newest first.
 */
#include "rbac.h"

#include <stdlib.h>
#include <string.h>

#define AUDIT_COLS                                                                                 \
    "a.id, a.user_id AS \"user\", a.action, a.ip AS ip_address, a.user_agent, a.metadata,"         \
    " a.actor, a.created_at"

static json_t *row_json(const rx_rows *rows, int i)
{
    json_t *o = rx_rows_object(rows, i);
    json_object_del(o, "total");
    return o;
}

static void listed(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    json_t *items = json_array();
    int64_t total = 0;
    for (int i = 0; i < rx_rows_count(rows); i++)
        json_array_append_new(items, row_json(rows, i));
    if (rx_rows_count(rows) > 0)
        rx_rows_int(rows, 0, rx_rows_column(rows, "total"), &total);
    rx_reply_page(req, items, total);
}

/* A time filter: NULL when absent or empty; "garbage" adds an error. */
static const char *time_filter(rx_req *req, const char *name, json_t *errs)
{
    const char *v = rx_req_query(req, name);
    if (v == NULL || *v == '\0')
        return NULL;
    char iso[64];
    if (!rbac_iso_time(v, iso, sizeof iso)) {
        rbac_err(errs, name, "Enter a valid date/time.");
        return NULL;
    }
    return rx_req_strdup(req, iso);
}

static void audit_list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    json_t *errs = json_object();
    const char *user = rx_req_query(req, "user");
    int64_t uid = 0;
    if (user != NULL && *user != '\0') {
        char *end = NULL;
        long long v = strtoll(user, &end, 10);
        if (*end != '\0' || v <= 0 || strlen(user) > 18)
            rbac_err(errs, "user", "Enter a number.");
        else
            uid = v;
    }
    const char *action = rx_req_query(req, "action");
    if (action != NULL && *action == '\0')
        action = NULL;
    if (action != NULL && strlen(action) > 255)
        rbac_err(errs, "action", "Ensure this field has no more than 255 characters.");
    const char *after = time_filter(req, "created_after", errs);
    const char *before = time_filter(req, "created_before", errs);
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    /* PostgreSQL still range-checks what the ISO shape allowed (2026-02-31). */
    rx_db(req, listed,
          "SELECT " AUDIT_COLS ", count(*) OVER () AS total FROM audit_logs a"
          " WHERE ($1::bigint IS NULL OR a.user_id = $1::bigint)"
          "   AND ($2::text IS NULL OR a.action = $2::text)"
          "   AND ($3::timestamptz IS NULL OR a.created_at >= $3::timestamptz)"
          "   AND ($4::timestamptz IS NULL OR a.created_at <= $4::timestamptz)"
          " ORDER BY a.created_at DESC, a.id DESC LIMIT $5 OFFSET $6",
          uid > 0 ? RX_INT(uid) : RX_NULL, RX_TEXT(action), RX_TEXT(after), RX_TEXT(before),
          RX_INT(limit), RX_INT(offset));
}

static void got(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    rx_reply_json(req, 200, row_json(rows, 0));
}

static void audit_get(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    rx_db(req, got, "SELECT " AUDIT_COLS " FROM audit_logs a WHERE a.id = $1", RX_INT(id));
}

static const char audit_schema[] =
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},"
    "\"user\":{\"type\":[\"integer\",\"null\"]},\"action\":{\"type\":\"string\"},"
    "\"ip_address\":{\"type\":\"string\"},\"user_agent\":{\"type\":\"string\"},"
    "\"metadata\":{\"type\":\"object\"},\"actor\":{\"type\":[\"integer\",\"null\"]},"
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"}}}";

int rbac_audit_routes(rx_module *m)
{
    /* Every credential kind: an API key gets 403 from the matrix. */
    rx_route_opts o = {.perm = "audit.view",
                       .list_style = RX_LIST_ENVELOPE,
                       .tag = "admin",
                       .summary = "Audit log, newest first (super admin)",
                       .response_schema = "[]AuditLog"};
    int rc = rx_schema(m, "AuditLog", audit_schema);
    rc |= rx_route(m, RX_GET, "/api/admin/audit-logs/", audit_list, &o);
    o.summary = "One audit log entry (super admin)";
    o.response_schema = "AuditLog";
    rc |= rx_route(m, RX_GET, "/api/admin/audit-logs/{id}/", audit_get, &o);
    return rc;
}
