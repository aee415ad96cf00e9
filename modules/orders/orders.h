/*
 * orders.h — internal header of the orders module: the parsed form of an
 * order body, the status machine, and what each file offers the others.
 * Nothing here is part of the SDK.
 */
#ifndef ORDERS_H
#define ORDERS_H

#include <rx.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An Order as the API shows it, from table alias `o`. */
#define ORD_COLS                                                                                   \
    "o.id, o.pharmacy_id AS pharmacy, o.order_reference, o.status, o.items, o.total_amount,"       \
    " o.user_id AS \"user\", o.created_at, o.updated_at"

/* Which rows a request may touch, with $p = rx_scope_pharmacy and $u =
 * rx_scope_user: super admins all; pharmacy admins and keys their pharmacy;
 * people without a pharmacy scope (registered users) only rows with their
 * user id ("own only"); an unscoped request nothing. */
#define ORD_SCOPE(p, u)                                                                            \
    "((" p "::bigint = 0 OR o.pharmacy_id = " p "::bigint OR (" p "::bigint = -1 AND " u           \
    "::bigint > 0)) AND (" u "::bigint = 0 OR o.user_id = " u "::bigint))"

#define ORD_REF_MAX 100
#define ORD_MONEY_LEN 24 /* "-12345678.90" and room to spare */

/* What a create/update body (or a webhook payload) says, validated. */
typedef struct ord_in {
    bool has_ref;
    char ref[ORD_REF_MAX * 4 + 1]; /* trimmed, <= 100 characters of UTF-8 */
    json_t *items;                 /* normalised list (owned), NULL = absent */
    char items_sum[ORD_MONEY_LEN]; /* sum(quantity x price) of `items` */
    bool has_total;
    char total[ORD_MONEY_LEN]; /* canonical "12.50" */
    const char *status;        /* a name from the status set (static), NULL = absent */
    bool has_pharmacy;
    int64_t pharmacy;
} ord_in;

/* orders.c */
extern rx_module *ord_mod;
/* Append msg to errs[field] (a DRF validation error body). */
void ord_add_err(json_t *errs, const char *field, const char *msg);
/* Validate `body`; full = create or PUT (order_reference, items and
 * total_amount required). Messages go to errs; when both items and
 * total_amount are given their agreement is checked here, otherwise in SQL.
 * The caller frees in->items with ord_in_free(). */
void ord_parse(json_t *body, bool full, ord_in *in, json_t *errs);
void ord_in_free(ord_in *in);
/* The message of a duplicate order_reference. */
extern const char ord_dup_msg[];
/* A pk that does not exist (or is not the caller's: never reveal which). */
void ord_bad_pk_msg(char *buf, size_t n, int64_t pk);

/* status.c */
/* The canonical name of a status, or NULL when it is not one. */
const char *ord_status_lookup(const char *s);
/* The PostgreSQL text[] literal of the statuses `to` may be reached from
 * ("{}" for pending: nothing goes back to it). */
const char *ord_allowed_from(const char *to);
/* DRF-style message of a refused transition into buf. */
void ord_transition_msg(char *buf, size_t n, const char *from, const char *to);

/* apply.c: registers the webhook.apply.order.* tasks. */
int ord_apply_init(rx_module *m);

#endif
