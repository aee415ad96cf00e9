/*
 * apply.c — the webhook apply tasks this module owns:
 *   webhook.apply.inventory.upsert   payload: an item's fields, upserted by sku
 *   webhook.apply.inventory.adjust   payload: {sku, delta}, quantity += delta (floor 0)
 *   webhook.apply.sale.created       payload: a sale's fields; the item by
 *                                    "inventory_item" (id) or "sku"
 * Job payload: {"event_id", "pharmacy_id", "payload"} (module webhooks).
 *
 * Exactly once, even when a job is retried or runs twice: each change is one
 * statement that also calls rx_webhook_claim(event_id) (webhooks' migration)
 * and changes data only if the claim is won; the claim and the change commit
 * or roll back together. The claim is made only when the change can succeed
 * (the item row is locked first), so a refused change leaves the event
 * unprocessed and rx_webhook_fail() records why. Refusals (bad payloads,
 * unknown sku, short stock) finish the job: retrying cannot help them.
 */
#include "inventory.h"

#include <stdio.h>
#include <string.h>

typedef struct apply_ctx {
    int64_t event_id, pharmacy_id, item_id, quantity;
    const char *sku;
} apply_ctx;

static void fail_done(rx_req *job, rx_rows *rows)
{
    /* Only the database being away is worth another attempt. */
    rx_job_done(job, rx_rows_failed(rows) ? "database error recording the failure" : NULL);
}

/* Record `msg` on the event and finish the job. */
static void apply_fail(rx_req *job, int64_t event_id, const char *msg)
{
    rx_log(inv_mod, RX_LOG_INFO, "webhook event %lld not applied: %s", (long long)event_id, msg);
    if (rx_db(job, fail_done, "SELECT rx_webhook_fail($1, $2)", RX_INT(event_id), RX_TEXT(msg)) !=
        0)
        rx_job_done(job, "could not queue rx_webhook_fail");
}

/* The first message of a DRF error body, as "field: message". */
static const char *first_error(rx_req *job, json_t *errs)
{
    const char *k;
    json_t *v;
    json_object_foreach(errs, k, v)
    {
        json_t *m = json_array_get(v, 0);
        return rx_req_sprintf(job, "%s: %s", k,
                              json_is_string(m) ? json_string_value(m) : "invalid");
    }
    return "invalid payload";
}

/* The job's envelope; NULL (job finished) when it is unusable. */
static apply_ctx *read_job(rx_req *job, json_t **payload)
{
    json_t *jp = rx_job_payload(job);
    json_t *ev = json_object_get(jp, "event_id"), *ph = json_object_get(jp, "pharmacy_id");
    *payload = json_object_get(jp, "payload");
    if (!json_is_integer(ev) || !json_is_integer(ph)) {
        rx_log(inv_mod, RX_LOG_ERROR, "apply job %lld without event_id/pharmacy_id",
               (long long)rx_job_id(job));
        rx_job_done(job, NULL); /* no event to mark; retrying changes nothing */
        return NULL;
    }
    apply_ctx *c = rx_req_alloc(job, sizeof *c);
    if (c == NULL) {
        rx_job_done(job, "out of memory");
        return NULL;
    }
    c->event_id = json_integer_value(ev);
    c->pharmacy_id = json_integer_value(ph);
    rx_req_set_data(job, c);
    if (!json_is_object(*payload)) {
        apply_fail(job, c->event_id, "non_field_errors: Invalid data. Expected a dictionary.");
        return NULL;
    }
    return c;
}

/* ---- inventory.upsert ---- */

static void upsert_done(rx_req *job, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_job_done(job, rx_rows_message(rows) ? "database error" : "database unavailable");
        return;
    }
    /* No row: the claim was lost (applied before) or the pharmacy is gone. */
    if (rx_rows_count(rows) == 1) {
        json_t *item = rx_rows_object(rows, 0);
        inv_emit_item(job, item, true);
        json_decref(item);
    }
    rx_job_done(job, NULL);
}

static void apply_upsert(rx_req *job)
{
    json_t *p;
    apply_ctx *c = read_job(job, &p);
    if (c == NULL)
        return;
    json_t *errs = json_object();
    inv_item_in in;
    inv_item_read(job, p, true, errs, &in);
    if (json_object_size(errs) > 0) {
        const char *msg = first_error(job, errs);
        json_decref(errs);
        apply_fail(job, c->event_id, msg);
        return;
    }
    json_decref(errs);
    if (rx_db(job, upsert_done,
              "WITH claim AS (SELECT rx_webhook_claim($1) AS ok)"
              " INSERT INTO inventory_items AS i"
              "  (pharmacy_id, sku, name, quantity, price, extra_data, low_stock_threshold)"
              " SELECT p.id, $3, $4, $5, $6::numeric, $7::jsonb, $8::integer"
              "   FROM pharmacies p WHERE p.id = $2 AND (SELECT ok FROM claim)"
              " ON CONFLICT (pharmacy_id, sku) DO UPDATE"
              "  SET name = EXCLUDED.name, quantity = EXCLUDED.quantity, price = EXCLUDED.price,"
              "      extra_data = CASE WHEN $9 THEN EXCLUDED.extra_data ELSE i.extra_data END,"
              "      low_stock_threshold = CASE WHEN $10 THEN EXCLUDED.low_stock_threshold"
              "                            ELSE i.low_stock_threshold END,"
              "      updated_at = now()"
              " RETURNING " INV_ITEM_COLS,
              RX_INT(c->event_id), RX_INT(c->pharmacy_id), RX_TEXT(in.sku), RX_TEXT(in.name),
              RX_INT(in.quantity), RX_TEXT(in.price), RX_JSON(in.extra),
              in.threshold < 0 ? RX_NULL : RX_INT(in.threshold), RX_BOOL(in.has_extra),
              RX_BOOL(in.has_threshold)) != 0)
        rx_job_done(job, "could not queue the upsert");
}

/* ---- inventory.adjust ---- */

static void adjust_done(rx_req *job, rx_rows *rows)
{
    apply_ctx *c = rx_req_data(job);
    if (rx_rows_failed(rows)) {
        rx_job_done(job, "database error");
        return;
    }
    bool found = false;
    if (rx_rows_count(rows) == 1)
        rx_rows_bool(rows, 0, rx_rows_column(rows, "found"), &found);
    if (!found) {
        apply_fail(job, c->event_id, rx_req_sprintf(job, "sku: No item with sku \"%s\".", c->sku));
        return;
    }
    int idc = rx_rows_column(rows, "id");
    if (!rx_rows_isnull(rows, 0, idc)) {
        json_t *item = rx_rows_object(rows, 0);
        json_object_del(item, "found");
        inv_emit_item(job, item, true);
        json_decref(item);
    }
    rx_job_done(job, NULL);
}

static void apply_adjust(rx_req *job)
{
    json_t *p;
    apply_ctx *c = read_job(job, &p);
    if (c == NULL)
        return;
    json_t *errs = json_object();
    int64_t delta = 0;
    bool present;
    inv_char(job, p, "sku", INV_SKU_MAX, true, errs, &c->sku);
    inv_int(p, "delta", -INV_INT_MAX, true, false, errs, &delta, &present, NULL);
    if (json_object_size(errs) > 0) {
        const char *msg = first_error(job, errs);
        json_decref(errs);
        apply_fail(job, c->event_id, msg);
        return;
    }
    json_decref(errs);
    /* The claim is made only for an existing sku, so an unknown one leaves
     * the event unprocessed with its error. Quantity stays in 0..int max. */
    if (rx_db(job, adjust_done,
              "WITH claim AS (SELECT rx_webhook_claim($1) AS ok WHERE EXISTS"
              "                (SELECT 1 FROM inventory_items x"
              "                  WHERE x.pharmacy_id = $2 AND x.sku = $3)),"
              " u AS (UPDATE inventory_items AS i"
              "        SET quantity = LEAST(GREATEST(i.quantity::bigint + $4::bigint, 0),"
              "                             2147483647)::integer, updated_at = now()"
              "       WHERE i.pharmacy_id = $2 AND i.sku = $3 AND (SELECT ok FROM claim)"
              "       RETURNING " INV_ITEM_COLS ")"
              " SELECT u.*, EXISTS (SELECT 1 FROM inventory_items x"
              "                      WHERE x.pharmacy_id = $2 AND x.sku = $3) AS found"
              "   FROM (SELECT 1) one LEFT JOIN u ON true",
              RX_INT(c->event_id), RX_INT(c->pharmacy_id), RX_TEXT(c->sku), RX_INT(delta)) != 0)
        rx_job_done(job, "could not queue the adjustment");
}

/* ---- sale.created ---- */

static void sale_done(rx_req *job, rx_rows *rows)
{
    apply_ctx *c = rx_req_data(job);
    if (rx_rows_failed(rows)) {
        if (rx_rows_error(rows) == RX_EDB && strcmp(rx_rows_sqlstate(rows), "22003") == 0) {
            apply_fail(job, c->event_id,
                       "total_price: Ensure that there are no more than 10 digits in total.");
            return;
        }
        rx_job_done(job, "database error");
        return;
    }
    if (rx_rows_count(rows) != 1) {
        rx_job_done(job, "unexpected result");
        return;
    }
    if (!rx_rows_isnull(rows, 0, rx_rows_column(rows, "id"))) {
        json_t *sale, *item;
        inv_sale_row(rows, &sale, &item);
        rx_emit(job, "sale.created", sale);
        if (item != NULL) {
            inv_emit_item(job, item, true);
            json_decref(item);
        }
        json_decref(sale);
        rx_job_done(job, NULL);
        return;
    }
    bool ph_ok = false;
    rx_rows_bool(rows, 0, rx_rows_column(rows, "ph_ok"), &ph_ok);
    int av = rx_rows_column(rows, "available");
    bool wanted = c->item_id > 0 || c->sku != NULL;
    if (!ph_ok) {
        rx_job_done(job, NULL); /* the pharmacy is gone, and its events with it */
        return;
    }
    if (wanted && rx_rows_isnull(rows, 0, av)) {
        apply_fail(job, c->event_id,
                   c->sku ? rx_req_sprintf(job, "sku: No item with sku \"%s\".", c->sku)
                          : rx_req_sprintf(job,
                                           "inventory_item: Invalid pk \"%lld\" - object does"
                                           " not exist.",
                                           (long long)c->item_id));
        return;
    }
    int64_t available = 0;
    if (!wanted || (rx_rows_int(rows, 0, av, &available) == 0 && available >= c->quantity)) {
        rx_job_done(job, NULL); /* the claim was lost: applied before */
        return;
    }
    apply_fail(
        job, c->event_id,
        rx_req_sprintf(job, "quantity: Insufficient stock: %lld available.", (long long)available));
}

static void apply_sale(rx_req *job)
{
    json_t *p;
    apply_ctx *c = read_job(job, &p);
    if (c == NULL)
        return;
    json_t *errs = json_object();
    bool present;
    int64_t qty = 0;
    json_t *ref = json_object_get(p, "inventory_item");
    if (json_is_string(ref) &&
        strspn(json_string_value(ref), "0123456789") != strlen(json_string_value(ref))) {
        /* a non-numeric reference is a sku */
        inv_char(job, p, "inventory_item", INV_SKU_MAX, true, errs, &c->sku);
    } else {
        if (ref != NULL && !json_is_null(ref))
            c->item_id = inv_pk(ref, "inventory_item", errs);
        if (c->item_id == 0 && json_object_get(p, "sku") != NULL)
            inv_char(job, p, "sku", INV_SKU_MAX, true, errs, &c->sku);
    }
    inv_int(p, "quantity", 1, true, false, errs, &qty, &present, NULL);
    c->quantity = qty;
    const char *total = NULL, *when = NULL;
    bool wanted = c->item_id > 0 || c->sku != NULL;
    inv_money(job, p, "total_price", !wanted, errs, &total);
    json_t *t = json_object_get(p, "sale_time");
    if (t != NULL &&
        !(json_is_string(t) && json_string_length(t) > 10 && inv_iso_time(json_string_value(t))))
        inv_add_err(errs, "sale_time", inv_bad_time);
    else if (t != NULL)
        when = json_string_value(t);
    json_t *extra;
    inv_extra(p, "extra_data", errs, &extra, &present);
    if (json_object_size(errs) > 0) {
        const char *msg = first_error(job, errs);
        json_decref(errs);
        apply_fail(job, c->event_id, msg);
        return;
    }
    json_decref(errs);
    /* lk locks the item before the claim, so the stock the claim is decided
     * on is the stock the decrement sees. */
    if (rx_db(job, sale_done,
              INV_SALE_SQL(
                  " lk AS (SELECT l.quantity FROM inventory_items l"
                  "         WHERE l.id = (SELECT id FROM ref) AND l.pharmacy_id = $1"
                  "         FOR UPDATE),"
                  " claim AS (SELECT rx_webhook_claim($8) AS ok"
                  "            WHERE EXISTS (SELECT 1 FROM ph)"
                  "              AND (NOT (SELECT wanted FROM ref) OR EXISTS"
                  "                   (SELECT 1 FROM lk WHERE lk.quantity >= $3::integer))),",
                  "(SELECT ok FROM claim)"),
              RX_INT(c->pharmacy_id), c->item_id > 0 ? RX_INT(c->item_id) : RX_NULL, RX_INT(qty),
              RX_TEXT(total), RX_TEXT(when), RX_JSON(extra), RX_TEXT(c->sku),
              RX_INT(c->event_id)) != 0)
        rx_job_done(job, "could not queue the sale");
}

int inv_apply_init(rx_module *m)
{
    rx_task_opts o = {.max_attempts = 5};
    int rc = 0;
    rc |= rx_task(m, "webhook.apply.inventory.upsert", apply_upsert, &o);
    rc |= rx_task(m, "webhook.apply.inventory.adjust", apply_adjust, &o);
    rc |= rx_task(m, "webhook.apply.sale.created", apply_sale, &o);
    return rc;
}
