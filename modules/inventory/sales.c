/*
 * sales.c — the Sale resource: the five DRF viewset routes at /api/sales/
 * (API.md, "Connector"). Recording a sale that names an item decrements the
 * item's stock in the same statement (INV_SALE_SQL), so stock is never sold
 * twice and never goes negative, whatever runs at the same time.
 *
 * A sale's quantity and inventory_item are fixed once it is recorded (they
 * moved stock); an update may change total_price, sale_time and extra_data.
 * Deleting a sale deletes the record only: stock is not put back.
 */
#include "inventory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char sale_schema[] =
    "{\"type\":\"object\",\"required\":[\"quantity\"],\"properties\":{"
    "\"id\":{\"type\":\"integer\",\"readOnly\":true},"
    "\"pharmacy\":{\"type\":\"integer\",\"description\":\"set from the API key / pharmacy admin;"
    " required for a super admin\"},"
    "\"inventory_item\":{\"type\":[\"integer\",\"null\"],\"description\":\"its stock is"
    " decremented by quantity in the same statement (400 when short)\"},"
    "\"quantity\":{\"type\":\"integer\",\"minimum\":1},"
    "\"total_price\":{\"type\":\"string\",\"format\":\"decimal\",\"description\":\"default:"
    " the item's price x quantity; required without an item\"},"
    "\"sale_time\":{\"type\":\"string\",\"format\":\"date-time\",\"description\":\"default: now\"},"
    "\"extra_data\":{\"type\":[\"object\",\"null\"]},"
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\",\"readOnly\":true}}}";

void inv_sale_row(rx_rows *rows, json_t **sale, json_t **item)
{
    json_t *all = rx_rows_object(rows, 0);
    json_t *s = json_object(), *it = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(all, k, v)
    {
        if (strncmp(k, "item_", 5) == 0)
            json_object_set(it, k + 5, v);
        else if (strcmp(k, "available") != 0 && strcmp(k, "ph_ok") != 0)
            json_object_set(s, k, v);
    }
    json_decref(all);
    if (json_is_null(json_object_get(it, "id"))) {
        json_decref(it);
        it = NULL;
    }
    *sale = s;
    *item = it;
}

/* sale_time: a date-time (a date alone is not one, as for DRF). */
static bool read_time(json_t *body, json_t *errs, const char **out)
{
    *out = NULL;
    json_t *v = json_object_get(body, "sale_time");
    if (v == NULL)
        return true;
    if (json_is_null(v)) {
        inv_add_err(errs, "sale_time", "This field may not be null.");
        return false;
    }
    if (!json_is_string(v) || json_string_length(v) <= 10 || !inv_iso_time(json_string_value(v))) {
        inv_add_err(errs, "sale_time", inv_bad_time);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

/* ---- list ---- */

/* A positive id in a query parameter; 0 when absent, -1 (after a 400) when bad. */
static int64_t query_id(rx_req *req, const char *name)
{
    const char *q = rx_req_query(req, name);
    if (q == NULL || *q == '\0')
        return 0;
    char *end;
    long long v = strtoll(q, &end, 10);
    if (*end != '\0' || v <= 0) {
        rx_reply_invalid_field(req, name,
                               "Select a valid choice. That choice is not one of the available"
                               " choices.");
        return -1;
    }
    return v;
}

/* A time bound in a query parameter; NULL when absent; *bad after a 400. */
static const char *query_time(rx_req *req, const char *name, bool *bad)
{
    const char *q = rx_req_query(req, name);
    if (q == NULL || *q == '\0')
        return NULL;
    if (!inv_iso_time(q)) {
        rx_reply_invalid_field(req, name, "Enter a valid date/time.");
        *bad = true;
    }
    return q;
}

static void sale_list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    int64_t scope = rx_scope_pharmacy(req);
    int64_t pharmacy = 0;
    if (scope == RX_SCOPE_ALL && (pharmacy = query_id(req, "pharmacy")) < 0)
        return;
    int64_t item = query_id(req, "inventory_item");
    if (item < 0)
        return;
    bool bad = false;
    const char *after = query_time(req, "sale_time_after", &bad);
    if (bad)
        return;
    const char *before = query_time(req, "sale_time_before", &bad);
    if (bad)
        return;
    /* ?ordering=a,b: the first term decides, id breaks ties; unknown terms
     * fall back to id, as DRF's OrderingFilter ignores invalid fields. */
    static const rx_ordering orderings[] = {
        {"sale_time", "s.sale_time ASC, s.id ASC"},
        {"-sale_time", "s.sale_time DESC, s.id ASC"},
        {"total_price", "s.total_price ASC, s.id ASC"},
        {"-total_price", "s.total_price DESC, s.id ASC"},
        {"quantity", "s.quantity ASC, s.id ASC"},
        {"-quantity", "s.quantity DESC, s.id ASC"},
        {"-id", "s.id DESC"},
    };
    rx_list *l = rx_list_new(req, INV_SALE_COLS, "sales s");
    /* The scope, or a super admin's ?pharmacy=: at most one of them. */
    int64_t only = scope != RX_SCOPE_ALL ? scope : pharmacy;
    if (only != 0)
        rx_list_where(l, "s.pharmacy_id = $?", RX_INT(only));
    if (item != 0)
        rx_list_where(l, "s.inventory_item_id = $?", RX_INT(item));
    if (after != NULL)
        rx_list_where(l, "s.sale_time >= $?::timestamptz", RX_TEXT(after));
    if (before != NULL)
        rx_list_where(l, "s.sale_time <= $?::timestamptz", RX_TEXT(before));
    rx_list_order(l, orderings, sizeof(orderings) / sizeof(orderings[0]), "s.id ASC");
    if (rx_list_run(l, rx_reply_rows_page, limit, offset) != 0)
        inv_reply_server_error(req);
}

/* ---- create ---- */

typedef struct sale_ctx {
    int64_t pharmacy, item, quantity;
} sale_ctx;

static void created_done(rx_req *req, rx_rows *rows)
{
    sale_ctx *c = rx_req_data(req);
    if (rx_rows_failed(rows)) {
        /* item price x quantity beyond numeric(10,2) */
        if (rx_rows_error(rows) == RX_EDB && strcmp(rx_rows_sqlstate(rows), "22003") == 0) {
            rx_reply_invalid_field(req, "total_price",
                                   "Ensure that there are no more than 10 digits in total.");
            return;
        }
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        inv_reply_server_error(req);
        return;
    }
    int idc = rx_rows_column(rows, "id");
    if (rx_rows_isnull(rows, 0, idc)) {
        bool ph_ok = false;
        rx_rows_bool(rows, 0, rx_rows_column(rows, "ph_ok"), &ph_ok);
        int av = rx_rows_column(rows, "available");
        if (!ph_ok)
            rx_reply_invalid_field(req, "pharmacy", "Invalid pk \"%lld\" - object does not exist.",
                                   (long long)c->pharmacy);
        else if (rx_rows_isnull(rows, 0, av))
            /* unknown or another pharmacy's item: the same answer */
            rx_reply_invalid_field(req, "inventory_item",
                                   "Invalid pk \"%lld\" - object does not exist.",
                                   (long long)c->item);
        else
            rx_reply_invalid_field(req, "quantity", "Insufficient stock: %s available.",
                                   rx_rows_text(rows, 0, av));
        return;
    }
    json_t *sale, *item;
    inv_sale_row(rows, &sale, &item);
    rx_emit(req, "sale.created", sale);
    if (item != NULL) {
        inv_emit_item(req, item, true);
        json_decref(item);
    }
    rx_reply_json(req, 201, sale);
}

static void sale_create(rx_req *req)
{
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    json_t *errs = json_object();
    int64_t pharmacy = inv_create_pharmacy(req, body, rx_scope_pharmacy(req), errs);
    int64_t item = 0, qty = 0;
    bool present;
    json_t *ref = json_object_get(body, "inventory_item");
    if (ref != NULL && !json_is_null(ref))
        item = inv_pk(ref, "inventory_item", errs);
    inv_int(body, "quantity", 1, true, false, errs, &qty, &present, NULL);
    const char *total = NULL, *when = NULL;
    inv_money(req, body, "total_price",
              item == 0 && json_object_get(errs, "inventory_item") == NULL, errs, &total);
    read_time(body, errs, &when);
    json_t *extra;
    inv_extra(body, "extra_data", errs, &extra, &present);
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    sale_ctx *c = rx_req_alloc(req, sizeof *c);
    if (c == NULL) {
        inv_reply_server_error(req);
        return;
    }
    *c = (sale_ctx){.pharmacy = pharmacy, .item = item, .quantity = qty};
    rx_req_set_data(req, c);
    if (rx_db(req, created_done, INV_SALE_SQL("", "true"), RX_INT(pharmacy),
              item > 0 ? RX_INT(item) : RX_NULL, RX_INT(qty), RX_TEXT(total), RX_TEXT(when),
              RX_JSON(extra), RX_NULL) != 0)
        inv_reply_server_error(req);
}

/* ---- one sale ---- */

static void sale_get(rx_req *req)
{
    int64_t id;
    if (!inv_path_id(req, &id))
        return;
    if (rx_db(req, rx_reply_row,
              "SELECT " INV_SALE_COLS " FROM sales s"
              " WHERE s.id = $1 AND ($2::bigint = 0 OR s.pharmacy_id = $2)",
              RX_INT(id), RX_INT(rx_scope_pharmacy(req))) != 0)
        inv_reply_server_error(req);
}

static void sale_update(rx_req *req)
{
    int64_t id;
    if (!inv_path_id(req, &id))
        return;
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    json_t *errs = json_object();
    const char *total = NULL, *when = NULL;
    json_t *extra;
    bool has_extra;
    inv_money(req, body, "total_price", false, errs, &total);
    read_time(body, errs, &when);
    inv_extra(body, "extra_data", errs, &extra, &has_extra);
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    if (rx_db(req, rx_reply_row,
              "UPDATE sales AS s SET total_price = COALESCE($3::numeric, s.total_price),"
              "  sale_time = COALESCE($4::timestamptz, s.sale_time),"
              "  extra_data = CASE WHEN $5 THEN $6::jsonb ELSE s.extra_data END"
              " WHERE s.id = $1 AND ($2::bigint = 0 OR s.pharmacy_id = $2)"
              " RETURNING " INV_SALE_COLS,
              RX_INT(id), RX_INT(rx_scope_pharmacy(req)), RX_TEXT(total), RX_TEXT(when),
              RX_BOOL(has_extra), RX_JSON(extra)) != 0)
        inv_reply_server_error(req);
}

static void sale_delete(rx_req *req)
{
    int64_t id;
    if (!inv_path_id(req, &id))
        return;
    if (rx_db(req, rx_reply_deleted,
              "DELETE FROM sales s WHERE s.id = $1 AND ($2::bigint = 0 OR s.pharmacy_id = $2)"
              " RETURNING s.id",
              RX_INT(id), RX_INT(rx_scope_pharmacy(req))) != 0)
        inv_reply_server_error(req);
}

int inv_sales_init(rx_module *m)
{
    int rc = rx_schema(m, "Sale", sale_schema);
    rc |= inv_route(
        m, "sales", RX_GET, "/api/sales/", sale_list,
        "List sales (?inventory_item=, ?sale_time_after=, ?sale_time_before=, ?ordering=, super"
        " admin ?pharmacy=)",
        NULL, "[]Sale", 200);
    rc |= inv_route(m, "sales", RX_POST, "/api/sales/", sale_create,
                    "Record a sale (decrements the item's stock atomically; 400 when short)",
                    "Sale", "Sale", 201);
    rc |= inv_route(m, "sales", RX_GET, "/api/sales/{id}/", sale_get, "A sale", NULL, "Sale", 200);
    rc |= inv_route(
        m, "sales", RX_PUT | RX_PATCH, "/api/sales/{id}/", sale_update,
        "Update a sale's total_price, sale_time, extra_data (quantity and item are fixed)", "Sale",
        "Sale", 200);
    rc |= inv_route(m, "sales", RX_DELETE, "/api/sales/{id}/", sale_delete,
                    "Delete a sale record (stock unchanged)", NULL, NULL, 204);
    return rc;
}
