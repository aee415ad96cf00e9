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
    rx_list *l = rx_list_new(req, AUDIT_COLS, "audit_logs a");
    if (uid > 0)
        rx_list_where(l, "a.user_id = $?", RX_INT(uid));
    if (action != NULL)
        rx_list_where(l, "a.action = $?::text", RX_TEXT(action));
    if (after != NULL)
        rx_list_where(l, "a.created_at >= $?::timestamptz", RX_TEXT(after));
    if (before != NULL)
        rx_list_where(l, "a.created_at <= $?::timestamptz", RX_TEXT(before));
    rx_list_order(l, NULL, 0, "a.created_at DESC, a.id DESC");
    if (rx_list_run(l, rx_reply_rows_page, limit, offset) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
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
    rx_reply_json(req, 200, rx_rows_object(rows, 0));
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
