/*
 * bulk.c — POST /api/inventory/bulk/: up to 1,000 items upserted by
 * (pharmacy, sku) in one statement (API.md, "Connector").
 *
 * Every row is validated in C before anything is sent, so one bad row means
 * nothing is written; the rows then travel as one jsonb parameter and a
 * single INSERT ... ON CONFLICT writes them all (atomic, one round trip).
 * Each upserted item then emits inventory.updated (and inventory.low_stock
 * when at or below its threshold), as a single create or update does.
 */
#include "inventory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INV_BULK_BODY_LIMIT (8u << 20) /* 1,000 rows with room for their extra_data */

static const char *type_name(const json_t *v)
{
    return json_is_object(v)    ? "dict"
           : json_is_array(v)   ? "list"
           : json_is_string(v)  ? "str"
           : json_is_integer(v) ? "int"
           : json_is_real(v)    ? "float"
           : json_is_null(v)    ? "NoneType"
                                : "bool";
}

static void bulk_done(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    /* One row per upserted item, or a single row of NULLs (ph_ok false) when
     * the pharmacy does not exist. */
    bool ph_ok = false;
    int n = rx_rows_count(rows);
    if (n > 0)
        rx_rows_bool(rows, 0, rx_rows_column(rows, "ph_ok"), &ph_ok);
    if (!ph_ok) {
        int64_t *ph = rx_req_data(req);
        rx_reply_invalid_field(req, "pharmacy", "Invalid pk \"%lld\" - object does not exist.",
                               (long long)(ph ? *ph : 0));
        return;
    }
    int cc = rx_rows_column(rows, "created");
    int64_t created = 0;
    for (int i = 0; i < n; i++) {
        bool c = false;
        rx_rows_bool(rows, i, cc, &c);
        created += c;
        /* The same events as one item's create or update: subscribers (a
         * low-stock alert, say) see a POS's sync too. */
        json_t *item = rx_rows_object(rows, i);
        json_object_del(item, "created");
        json_object_del(item, "ph_ok");
        inv_emit_item(req, item, true);
        json_decref(item);
    }
    rx_reply_json(req, 200,
                  json_pack("{s:I,s:I}", "created", (json_int_t)created, "updated",
                            (json_int_t)(n - created)));
}

static void bulk_upsert(rx_req *req)
{
    json_t *body = rx_req_json(req);
    if (body == NULL)
        return;
    json_t *list = body;
    json_t *errs = json_object();
    if (json_is_object(body)) {
        list = json_object_get(body, "items");
        if (list == NULL) {
            inv_add_err(errs, "items", "This field is required.");
            rx_reply_invalid(req, errs);
            return;
        }
    }
    /* The pharmacy: a key's or pharmacy admin's own; a super admin names it
     * in {"pharmacy": P, "items": [...]} or, with a bare array, ?pharmacy=P. */
    json_t *phsrc = json_is_object(body) ? body : json_object();
    if (!json_is_object(body) && rx_scope_pharmacy(req) == RX_SCOPE_ALL) {
        const char *q = rx_req_query(req, "pharmacy");
        if (q != NULL)
            json_object_set_new(phsrc, "pharmacy", json_string(q));
    }
    int64_t pharmacy = inv_create_pharmacy(req, phsrc, rx_scope_pharmacy(req), errs);
    if (phsrc != body)
        json_decref(phsrc);
    if (!json_is_array(list)) {
        char msg[96];
        snprintf(msg, sizeof msg, "Expected a list of items but got type \"%s\".", type_name(list));
        inv_add_err(errs, "items", msg);
    } else if (json_array_size(list) == 0) {
        inv_add_err(errs, "items", "This list may not be empty.");
    } else if (json_array_size(list) > INV_BULK_MAX) {
        inv_add_err(errs, "items", "Ensure this field has no more than 1000 elements.");
    }
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    size_t n = json_array_size(list);
    const char **skus = rx_req_alloc(req, n * sizeof *skus);
    json_t *rows = json_array();
    json_t *rowerrs = json_object();
    if (skus == NULL || rows == NULL || rowerrs == NULL) {
        json_decref(rows);
        json_decref(rowerrs);
        json_decref(errs);
        inv_reply_server_error(req);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *row = json_array_get(list, i);
        json_t *e = json_object();
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        if (!json_is_object(row)) {
            char msg[96];
            snprintf(msg, sizeof msg, "Invalid data. Expected a dictionary, but got %s.",
                     type_name(row));
            inv_add_err(e, "non_field_errors", msg);
            json_object_set_new(rowerrs, idx, e);
            continue;
        }
        inv_item_in in;
        inv_item_read(req, row, true, e, &in);
        skus[i] = in.sku;
        /* Two rows for one sku would make ON CONFLICT touch a row twice:
         * the later one is the mistake. */
        for (size_t j = 0; in.sku != NULL && j < i; j++)
            if (skus[j] != NULL && strcmp(skus[j], in.sku) == 0) {
                char msg[96];
                snprintf(msg, sizeof msg, "Duplicate sku in this request (first at index %zu).", j);
                inv_add_err(e, "sku", msg);
                break;
            }
        if (json_object_size(e) > 0) {
            json_object_set_new(rowerrs, idx, e);
            continue;
        }
        json_decref(e);
        json_array_append_new(
            rows, json_pack("{s:s,s:s,s:I,s:s,s:O,s:b}", "sku", in.sku, "name", in.name, "quantity",
                            (json_int_t)in.quantity, "price", in.price, "extra_data",
                            in.extra ? in.extra : json_null(), "has_extra", in.has_extra));
    }
    if (json_object_size(rowerrs) > 0) {
        json_decref(rows);
        json_object_set_new(errs, "items", rowerrs);
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(rowerrs);
    json_decref(errs);
    int64_t *ph = rx_req_alloc(req, sizeof *ph);
    if (ph != NULL)
        *ph = pharmacy;
    rx_req_set_data(req, ph);
    /* extra_data left out of a row keeps the stored one (read in the same
     * statement); (xmax = 0) tells an inserted row from an updated one. */
    int rc = rx_db(req, bulk_done,
                   "WITH r AS (SELECT * FROM jsonb_to_recordset($2::jsonb)"
                   "             AS r(sku text, name text, quantity integer, price numeric,"
                   "                  extra_data jsonb, has_extra boolean)),"
                   " up AS (INSERT INTO inventory_items AS i"
                   "          (pharmacy_id, sku, name, quantity, price, extra_data)"
                   "        SELECT p.id, r.sku, r.name, r.quantity, r.price,"
                   "               CASE WHEN r.has_extra THEN r.extra_data"
                   "                    ELSE (SELECT e.extra_data FROM inventory_items e"
                   "                           WHERE e.pharmacy_id = p.id AND e.sku = r.sku) END"
                   "          FROM r, pharmacies p WHERE p.id = $1"
                   "        ON CONFLICT (pharmacy_id, sku) DO UPDATE"
                   "          SET name = EXCLUDED.name, quantity = EXCLUDED.quantity,"
                   "              price = EXCLUDED.price, extra_data = EXCLUDED.extra_data,"
                   "              updated_at = now()"
                   "        RETURNING " INV_ITEM_COLS ", (i.xmax = 0) AS created)"
                   " SELECT up.*, EXISTS (SELECT 1 FROM pharmacies WHERE id = $1) AS ph_ok"
                   "   FROM (SELECT 1) AS one LEFT JOIN up ON true ORDER BY up.id",
                   RX_INT(pharmacy), RX_JSON(rows));
    json_decref(rows);
    if (rc != 0)
        inv_reply_server_error(req);
}

int inv_bulk_init(rx_module *m)
{
    rx_route_opts o = {.perm = "inventory.manage",
                       .list_style = RX_LIST_ARRAY,
                       .tag = "inventory",
                       .body_limit = INV_BULK_BODY_LIMIT,
                       .summary = "Upsert up to 1,000 items by sku in one statement",
                       .description = "Body: a JSON array of {sku, name, quantity, price,"
                                      " extra_data?} (or {\"items\": [...]}; a super admin adds"
                                      " \"pharmacy\" or ?pharmacy=). Any invalid row -> 400"
                                      " naming its index, and nothing is written.",
                       .request_schema = "[]InventoryItem",
                       .response_schema = "{\"type\":\"object\",\"properties\":{"
                                          "\"created\":{\"type\":\"integer\"},"
                                          "\"updated\":{\"type\":\"integer\"}}}",
                       .success_status = 200};
    return rx_route(m, RX_POST, "/api/inventory/bulk/", bulk_upsert, &o);
}
