/*
 * items.c — the InventoryItem resource: the five DRF viewset routes at
 * /api/inventory/ and their list filters (API.md, "Connector").
 *
 * Every statement carries the principal's row scope ($n = 0 OR pharmacy_id =
 * $n), so a foreign id is simply not found (404, never 403), and a create
 * decides in the same INSERT ... SELECT whether the pharmacy exists.
 */
#include "inventory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char item_schema[] =
    "{\"type\":\"object\",\"required\":[\"sku\",\"name\",\"quantity\",\"price\"],\"properties\":{"
    "\"id\":{\"type\":\"integer\",\"readOnly\":true},"
    "\"pharmacy\":{\"type\":\"integer\",\"description\":\"set from the API key / pharmacy admin;"
    " required for a super admin\"},"
    "\"sku\":{\"type\":\"string\",\"maxLength\":100},"
    "\"name\":{\"type\":\"string\",\"maxLength\":255},"
    "\"quantity\":{\"type\":\"integer\",\"minimum\":0},"
    "\"price\":{\"type\":\"string\",\"format\":\"decimal\",\"example\":\"12.50\"},"
    "\"extra_data\":{\"type\":[\"object\",\"null\"]},"
    "\"low_stock_threshold\":{\"type\":[\"integer\",\"null\"],\"minimum\":0},"
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\",\"readOnly\":true},"
    "\"updated_at\":{\"type\":\"string\",\"format\":\"date-time\",\"readOnly\":true}}}";

static const char dup_sku[] = "inventory item with this sku already exists.";

static rx_param threshold_param(const inv_item_in *in)
{
    return in->threshold < 0 ? RX_NULL : RX_INT(in->threshold);
}

/* ---- list ---- */

static void inv_list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    int64_t scope = rx_scope_pharmacy(req);
    /* ?pharmacy= narrows a super admin's view; for anyone else it is
     * ignored (their scope already fixes the pharmacy). */
    int64_t pharmacy = 0;
    const char *pq = rx_req_query(req, "pharmacy");
    if (scope == RX_SCOPE_ALL && pq != NULL && *pq != '\0') {
        char *end;
        long long v = strtoll(pq, &end, 10);
        if (*end != '\0' || v <= 0) {
            rx_reply_invalid_field(req, "pharmacy",
                                   "Select a valid choice. That choice is not one of the"
                                   " available choices.");
            return;
        }
        pharmacy = v;
    }
    const char *sku = rx_req_query(req, "sku");
    if (sku != NULL && *sku == '\0')
        sku = NULL; /* django-filter: an empty value means no filter */
    const char *search = rx_req_query(req, "search");
    if (search != NULL && *search == '\0')
        search = NULL;
    const char *since = rx_req_query(req, "updated_since");
    if (since != NULL && *since == '\0')
        since = NULL;
    if (since != NULL && !inv_iso_time(since)) {
        rx_reply_invalid_field(req, "updated_since", "Enter a valid date/time.");
        return;
    }
    /* ?ordering=a,b: the first term decides, id breaks ties; unknown terms
     * fall back to id, as DRF's OrderingFilter ignores invalid fields. One
     * prepared statement per ordering, each free to use an index (a CASE
     * over a parameter would sort every matching row). */
    static const rx_ordering orderings[] = {
        {"name", "i.name ASC, i.id ASC"},
        {"-name", "i.name DESC, i.id ASC"},
        {"sku", "i.sku ASC, i.id ASC"},
        {"-sku", "i.sku DESC, i.id ASC"},
        {"quantity", "i.quantity ASC, i.id ASC"},
        {"-quantity", "i.quantity DESC, i.id ASC"},
        {"price", "i.price ASC, i.id ASC"},
        {"-price", "i.price DESC, i.id ASC"},
        {"updated_at", "i.updated_at ASC, i.id ASC"},
        {"-updated_at", "i.updated_at DESC, i.id ASC"},
        {"-id", "i.id DESC"},
    };
    rx_list *l = rx_list_new(req, INV_ITEM_COLS, "inventory_items i");
    /* The scope, or a super admin's ?pharmacy=: at most one of them. */
    int64_t only = scope != RX_SCOPE_ALL ? scope : pharmacy;
    int ph = only != 0 ? rx_list_where(l, "i.pharmacy_id = $?", RX_INT(only)) : 0;
    bool filtered = false;
    if (sku != NULL) {
        rx_list_where(l, "i.sku = $?", RX_TEXT(sku));
        filtered = true;
    }
    if (search != NULL) {
        rx_list_where(l,
                      "(strpos(lower(i.name), lower($?)) > 0"
                      " OR strpos(lower(i.sku), lower($?)) > 0)",
                      RX_TEXT(search));
        filtered = true;
    }
    if (since != NULL) {
        rx_list_where(l, "i.updated_at >= $?::timestamptz", RX_TEXT(since));
        filtered = true;
    }
    /* Unfiltered: the total is the kept count (migration 003), not a count
     * of the pharmacy's items on every page. */
    if (!filtered && ph > 0)
        rx_list_total(l, rx_req_sprintf(req,
                                        "SELECT COALESCE((SELECT items FROM inventory_item_counts"
                                        " WHERE pharmacy_id = $%d), 0)",
                                        ph));
    else if (!filtered)
        rx_list_total(l, "SELECT COALESCE(sum(items), 0)::bigint FROM inventory_item_counts");
    rx_list_order(l, orderings, sizeof(orderings) / sizeof(orderings[0]), "i.id ASC");
    if (rx_list_run(l, rx_reply_rows_page, limit, offset) != 0)
        inv_reply_server_error(req);
}

/* ---- one row back ---- */

/* rx_req_data carries what the callback must know about the request. */
typedef struct item_ctx {
    int status;     /* 200 or 201 */
    bool check_low; /* quantity was set: see whether it is low now */
    bool create;    /* no row = the pharmacy does not exist (400), not 404 */
    int64_t pharmacy;
} item_ctx;

static void item_done(rx_req *req, rx_rows *rows)
{
    item_ctx *c = rx_req_data(req);
    if (rx_rows_failed(rows)) {
        if (rx_rows_error(rows) == RX_EDB && strcmp(rx_rows_sqlstate(rows), "23505") == 0) {
            rx_reply_invalid_field(req, "sku", "%s", dup_sku);
            return;
        }
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        if (c->create)
            rx_reply_invalid_field(req, "pharmacy", "Invalid pk \"%lld\" - object does not exist.",
                                   (long long)c->pharmacy);
        else
            inv_reply_not_found(req);
        return;
    }
    json_t *item = rx_rows_object(rows, 0);
    inv_emit_item(req, item, c->check_low);
    rx_reply_json(req, c->status, item);
}

static void inv_create(rx_req *req)
{
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    json_t *errs = json_object();
    inv_item_in in;
    int64_t pharmacy = inv_create_pharmacy(req, body, rx_scope_pharmacy(req), errs);
    inv_item_read(req, body, true, errs, &in);
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    item_ctx *c = rx_req_alloc(req, sizeof *c);
    if (c == NULL) {
        inv_reply_server_error(req);
        return;
    }
    *c = (item_ctx){.status = 201, .check_low = true, .create = true, .pharmacy = pharmacy};
    rx_req_set_data(req, c);
    if (rx_db(req, item_done,
              "INSERT INTO inventory_items AS i"
              " (pharmacy_id, sku, name, quantity, price, extra_data, low_stock_threshold)"
              " SELECT p.id, $2, $3, $4, $5::numeric, $6::jsonb, $7::integer"
              " FROM pharmacies p WHERE p.id = $1"
              " RETURNING " INV_ITEM_COLS,
              RX_INT(pharmacy), RX_TEXT(in.sku), RX_TEXT(in.name), RX_INT(in.quantity),
              RX_TEXT(in.price), RX_JSON(in.extra), threshold_param(&in)) != 0)
        inv_reply_server_error(req);
}

static void inv_get(rx_req *req)
{
    int64_t id;
    if (!inv_path_id(req, &id))
        return;
    if (rx_db(req, rx_reply_row,
              "SELECT " INV_ITEM_COLS " FROM inventory_items i"
              " WHERE i.id = $1 AND ($2::bigint = 0 OR i.pharmacy_id = $2)",
              RX_INT(id), RX_INT(rx_scope_pharmacy(req))) != 0)
        inv_reply_server_error(req);
}

static void inv_update(rx_req *req)
{
    int64_t id;
    if (!inv_path_id(req, &id))
        return;
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    json_t *errs = json_object();
    inv_item_in in;
    /* `pharmacy` in an update body is ignored: an item never moves. */
    inv_item_read(req, body, rx_req_method(req) == RX_PUT, errs, &in);
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    item_ctx *c = rx_req_alloc(req, sizeof *c);
    if (c == NULL) {
        inv_reply_server_error(req);
        return;
    }
    *c = (item_ctx){.status = 200, .check_low = in.has_quantity};
    rx_req_set_data(req, c);
    /* Only the fields sent are written: a PATCH of the name never writes a
     * quantity read earlier back over a concurrent sale's decrement. */
    if (rx_db(req, item_done,
              "UPDATE inventory_items AS i SET sku = COALESCE($3, i.sku),"
              "  name = COALESCE($4, i.name),"
              "  quantity = CASE WHEN $5 THEN $6::integer ELSE i.quantity END,"
              "  price = COALESCE($7::numeric, i.price),"
              "  extra_data = CASE WHEN $8 THEN $9::jsonb ELSE i.extra_data END,"
              "  low_stock_threshold = CASE WHEN $10 THEN $11::integer"
              "                        ELSE i.low_stock_threshold END,"
              "  updated_at = now()"
              " WHERE i.id = $1 AND ($2::bigint = 0 OR i.pharmacy_id = $2)"
              " RETURNING " INV_ITEM_COLS,
              RX_INT(id), RX_INT(rx_scope_pharmacy(req)), RX_TEXT(in.sku), RX_TEXT(in.name),
              RX_BOOL(in.has_quantity), RX_INT(in.quantity), RX_TEXT(in.price),
              RX_BOOL(in.has_extra), RX_JSON(in.extra), RX_BOOL(in.has_threshold),
              threshold_param(&in)) != 0)
        inv_reply_server_error(req);
}

static void inv_delete(rx_req *req)
{
    int64_t id;
    if (!inv_path_id(req, &id))
        return;
    if (rx_db(req, rx_reply_deleted,
              "DELETE FROM inventory_items i"
              " WHERE i.id = $1 AND ($2::bigint = 0 OR i.pharmacy_id = $2) RETURNING i.id",
              RX_INT(id), RX_INT(rx_scope_pharmacy(req))) != 0)
        inv_reply_server_error(req);
}

int inv_items_init(rx_module *m)
{
    int rc = rx_schema(m, "InventoryItem", item_schema);
    rc |= inv_route(
        m, "inventory", RX_GET, "/api/inventory/", inv_list,
        "List inventory items (?sku=, ?search=, ?updated_since=, ?ordering=name|sku|quantity|"
        "price|updated_at, super admin ?pharmacy=)",
        NULL, "[]InventoryItem", 200);
    rc |= inv_route(m, "inventory", RX_POST, "/api/inventory/", inv_create,
                    "Create an inventory item", "InventoryItem", "InventoryItem", 201);
    rc |= inv_route(m, "inventory", RX_GET, "/api/inventory/{id}/", inv_get, "An inventory item",
                    NULL, "InventoryItem", 200);
    rc |= inv_route(
        m, "inventory", RX_PUT | RX_PATCH, "/api/inventory/{id}/", inv_update,
        "Update an inventory item (PUT needs sku, name, quantity, price; PATCH is partial)",
        "InventoryItem", "InventoryItem", 200);
    rc |=
        inv_route(m, "inventory", RX_DELETE, "/api/inventory/{id}/", inv_delete,
                  "Delete an inventory item (its sales keep inventory_item null)", NULL, NULL, 204);
    return rc;
}
