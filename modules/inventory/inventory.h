/*
 * inventory.h — internal header of the inventory module: the field rules
 * every entry point shares (HTTP create/update, bulk upsert, webhook apply
 * tasks validate the same way, with DRF's messages) and what each file offers
 * the others. Nothing here is part of the SDK.
 */
#ifndef INVENTORY_H
#define INVENTORY_H

#include <rx.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INV_SKU_MAX 100
#define INV_NAME_MAX 255
#define INV_EXTRA_MAX 65536 /* bytes of extra_data serialised */
#define INV_BULK_MAX 1000
#define INV_INT_MAX 2147483647LL /* PositiveIntegerField's upper bound */

/* The columns of an item as the API shows it, from table alias `i`. */
#define INV_ITEM_COLS                                                                              \
    "i.id, i.pharmacy_id AS pharmacy, i.sku, i.name, i.quantity, i.price, i.extra_data,"           \
    " i.low_stock_threshold, i.created_at, i.updated_at"
/* ... and of a sale, from alias `s`. */
#define INV_SALE_COLS                                                                              \
    "s.id, s.pharmacy_id AS pharmacy, s.inventory_item_id AS inventory_item, s.quantity,"          \
    " s.total_price, s.sale_time, s.extra_data, s.created_at"

/* Recording a sale, in one statement: the item's stock is decremented only
 * if enough is left (the row lock makes racing sales queue, and each re-reads
 * the quantity the previous one left, so exactly as many win as there are
 * units), and the sale is inserted only if that happened. PRE is extra
 * CTEs (" name AS (...),", after `ph` and `ref`) and COND an extra condition
 * both changes need (the webhook claim); plain HTTP passes "" and "true".
 * $1 pharmacy, $2 item id, $3 quantity, $4 total_price (NULL: item price x
 * quantity), $5 sale_time (NULL: now), $6 extra_data, $7 item sku (when no id).
 * The single row: the sale's columns (NULL when nothing was recorded), the
 * item after the decrement as item_*, `available` (the stock the statement
 * started from, NULL when the item reference matches nothing) and `ph_ok`. */
#define INV_SALE_SQL(PRE, COND)                                                                    \
    "WITH ph AS (SELECT p.id FROM pharmacies p WHERE p.id = $1),"                                  \
    " ref AS (SELECT COALESCE($2::bigint, (SELECT x.id FROM inventory_items x"                     \
    "                 WHERE x.pharmacy_id = $1 AND x.sku = $7::text)) AS id,"                      \
    "         ($2::bigint IS NOT NULL OR $7::text IS NOT NULL) AS wanted)," PRE                    \
    " it AS (UPDATE inventory_items i"                                                             \
    "        SET quantity = i.quantity - $3::integer, updated_at = now()"                          \
    "        WHERE i.id = (SELECT id FROM ref) AND i.pharmacy_id = $1"                             \
    "          AND i.quantity >= $3::integer AND " COND "        RETURNING " INV_ITEM_COLS "),"    \
    " s AS (INSERT INTO sales AS s"                                                                \
    "        (pharmacy_id, inventory_item_id, quantity, total_price, sale_time, extra_data)"       \
    "       SELECT ph.id, it.id, $3::integer, COALESCE($4::numeric, it.price * $3::integer),"      \
    "              COALESCE($5::timestamptz, now()), $6::jsonb"                                    \
    "         FROM ph LEFT JOIN it ON true"                                                        \
    "        WHERE (NOT (SELECT wanted FROM ref) OR it.id IS NOT NULL) AND " COND                  \
    "       RETURNING " INV_SALE_COLS ")"                                                          \
    " SELECT s.*, it.id AS item_id, it.pharmacy AS item_pharmacy, it.sku AS item_sku,"             \
    "        it.name AS item_name, it.quantity AS item_quantity, it.price AS item_price,"          \
    "        it.extra_data AS item_extra_data,"                                                    \
    "        it.low_stock_threshold AS item_low_stock_threshold,"                                  \
    "        it.created_at AS item_created_at, it.updated_at AS item_updated_at,"                  \
    "        (SELECT y.quantity FROM inventory_items y"                                            \
    "          WHERE y.id = (SELECT id FROM ref) AND y.pharmacy_id = $1) AS available,"            \
    "        EXISTS (SELECT 1 FROM ph) AS ph_ok"                                                   \
    "   FROM (SELECT 1) one LEFT JOIN s ON true LEFT JOIN it ON true"

/* Split INV_SALE_SQL's row into the sale and the item (NULL when no item
 * was decremented); both new references. */
void inv_sale_row(rx_rows *rows, json_t **sale, json_t **item);

extern rx_module *inv_mod;
extern long long inv_low_stock_default; /* config inventory.low_stock_threshold */

/* Item fields as read from a body; NULL / has_* false = absent. */
typedef struct inv_item_in {
    const char *sku, *name;
    const char *price; /* validated decimal text, PostgreSQL reads it as numeric */
    int64_t quantity;  /* valid when has_quantity */
    bool has_quantity;
    json_t *extra; /* borrowed; NULL with has_extra = set null */
    bool has_extra;
    int64_t threshold; /* low_stock_threshold, -1 = null; valid when has_threshold */
    bool has_threshold;
} inv_item_in;

/* Append `msg` to errs[field] (a DRF validation error body). */
void inv_add_err(json_t *errs, const char *field, const char *msg);

/* Field readers: each adds DRF's message to errs and returns false when the
 * value is wrong; absent values leave *present false (and add "This field is
 * required." when required). Strings land in the request arena (`req` may be
 * a job). */
bool inv_char(rx_req *req, json_t *obj, const char *field, size_t maxlen, bool required,
              json_t *errs, const char **out);
bool inv_int(json_t *obj, const char *field, long long min, bool required, bool nullable,
             json_t *errs, int64_t *out, bool *present, bool *is_null);
/* DecimalField(10, 2): a string or a JSON number -> decimal text in out. */
bool inv_money(rx_req *req, json_t *obj, const char *field, bool required, json_t *errs,
               const char **out);
/* extra_data: a JSON object or null, at most INV_EXTRA_MAX bytes serialised. */
bool inv_extra(json_t *obj, const char *field, json_t *errs, json_t **out, bool *present);
/* A primary key as DRF's PrimaryKeyRelatedField reads it (an integer or its
 * text); 0 with DRF's message added when it is not one. */
int64_t inv_pk(json_t *v, const char *field, json_t *errs);
/* DRF's DateTimeField message for a sale_time it cannot read. */
extern const char inv_bad_time[];
/* An ISO 8601 date-time (or date) as django-filter / DRF read it. */
bool inv_iso_time(const char *s);

/* Read the fields of an item; full = create / PUT (sku, name, quantity,
 * price required). Adds to errs. */
void inv_item_read(rx_req *req, json_t *body, bool full, json_t *errs, inv_item_in *in);

/* The pharmacy a create lands in: the principal's own (a `pharmacy` in the
 * body must then equal it), or for a super admin the one the body names.
 * Returns the id, or 0 with an error added to errs. */
int64_t inv_create_pharmacy(rx_req *req, json_t *body, int64_t scope, json_t *errs);

/* Events after a change: inventory.updated with the item, and
 * inventory.low_stock when its quantity is at or below its threshold. */
void inv_emit_item(rx_req *req, json_t *item, bool check_low);

/* One of the module's routes: permission inventory.manage, bare-array lists,
 * documented under `tag`. rx_route's result. */
int inv_route(rx_module *m, const char *tag, unsigned methods, const char *path, rx_handler fn,
              const char *summary, const char *request_schema, const char *response_schema,
              int success_status);

/* The {id} of the path; false after answering 404 when it is not one. */
bool inv_path_id(rx_req *req, int64_t *id);

void inv_reply_not_found(rx_req *req);
void inv_reply_server_error(rx_req *req);

/* Routes and tasks of each file. */
int inv_items_init(rx_module *m);
int inv_sales_init(rx_module *m);
int inv_bulk_init(rx_module *m);
int inv_apply_init(rx_module *m);

#endif
