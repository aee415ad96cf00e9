/*
 * orders.c — the orders module: registration, validation of an order body
 * (DRF's messages, word for word), and the five DRF viewset routes of the
 * connector's Order (API.md, "Connector").
 *
 * Who may call a route is rbac's decision (permission orders.manage); which
 * rows they reach is the scope it sets, applied in every WHERE clause
 * (ORD_SCOPE), so a foreign id is simply not found (404, never 403).
 * One deliberate exception decided here: REGISTERED_USER holds orders.manage
 * for their *own* (customer) orders, which do not exist yet; they may list
 * and read (and see nothing), but creating, changing or deleting connector
 * orders needs a pharmacy, so they get 403 permission_denied.
 *
 * Money: in, a string or a JSON number as DRF's DecimalField(10, 2) reads it;
 * out, numeric(10,2) as text ("12.50"). Sums are computed in integer cents.
 */
#include "orders.h"

#include "drf.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

rx_module *ord_mod;

extern const rx_migration orders_migrations[];

const char ord_dup_msg[] = "Order with this order_reference already exists for this pharmacy.";

static const char order_schema[] =
    "{\"type\":\"object\",\"required\":[\"order_reference\",\"items\",\"total_amount\"],"
    "\"properties\":{"
    "\"id\":{\"type\":\"integer\",\"readOnly\":true},"
    "\"pharmacy\":{\"type\":\"integer\",\"description\":\"required for a super admin; "
    "otherwise the caller's own pharmacy\"},"
    "\"order_reference\":{\"type\":\"string\",\"maxLength\":100},"
    "\"status\":{\"type\":\"string\",\"enum\":[\"pending\",\"confirmed\",\"processing\","
    "\"ready\",\"completed\",\"cancelled\",\"rejected\"]},"
    "\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
    "\"required\":[\"sku\",\"name\",\"quantity\",\"price\"],\"properties\":{"
    "\"sku\":{\"type\":\"string\",\"maxLength\":100},"
    "\"name\":{\"type\":\"string\",\"maxLength\":255},"
    "\"quantity\":{\"type\":\"integer\",\"minimum\":1},"
    "\"price\":{\"type\":\"string\",\"format\":\"decimal\"}}}},"
    "\"total_amount\":{\"type\":\"string\",\"format\":\"decimal\","
    "\"description\":\"must equal the sum of quantity x price\"},"
    "\"user\":{\"type\":[\"integer\",\"null\"],\"readOnly\":true},"
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\",\"readOnly\":true},"
    "\"updated_at\":{\"type\":\"string\",\"format\":\"date-time\",\"readOnly\":true}}}";

/* ---- validation ---- */

void ord_add_err(json_t *errs, const char *field, const char *msg)
{
    json_t *list = json_object_get(errs, field);
    if (list == NULL) {
        list = json_array();
        json_object_set_new(errs, field, list);
    }
    json_array_append_new(list, json_string(msg));
}

void ord_bad_pk_msg(char *buf, size_t n, int64_t pk)
{
    snprintf(buf, n, "Invalid pk \"%" PRId64 "\" - object does not exist.", pk);
}

/* Python's type() name, for DRF's "got type" messages. */
static const char *py_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "dict";
    case JSON_ARRAY:
        return "list";
    case JSON_STRING:
        return "str";
    case JSON_INTEGER:
        return "int";
    case JSON_REAL:
        return "float";
    case JSON_TRUE:
    case JSON_FALSE:
        return "bool";
    default:
        return "NoneType";
    }
}

static size_t utf8_len(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* A CharField: strings, and numbers as DRF turns them into text; trimmed.
 * Returns the length written to out, or -1 after adding a message. */
static int char_field(const json_t *v, size_t maxchars, bool allow_blank, char *out, size_t outsz,
                      json_t *errs, const char *field)
{
    if (json_is_null(v)) {
        ord_add_err(errs, field, "This field may not be null.");
        return -1;
    }
    char num[40];
    const char *s = drf_scalar_text(v, num, sizeof num);
    if (s == NULL) {
        ord_add_err(errs, field, "Not a valid string.");
        return -1;
    }
    size_t len = json_is_string(v) ? json_string_length(v) : strlen(s);
    while (len > 0 && is_ws(*s)) {
        s++;
        len--;
    }
    while (len > 0 && is_ws(s[len - 1]))
        len--;
    if (len == 0 && !allow_blank) {
        ord_add_err(errs, field, "This field may not be blank.");
        return -1;
    }
    if (utf8_len(s, len) > maxchars || len >= outsz) {
        char msg[80];
        snprintf(msg, sizeof msg, "Ensure this field has no more than %zu characters.", maxchars);
        ord_add_err(errs, field, msg);
        return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return (int)len;
}

/* DRF DecimalField(max_digits=10, decimal_places=2) on the text `s`: NULL and
 * the amount in cents, or the message. Digits are counted as Python's
 * Decimal.as_tuple() does (leading zeros dropped, trailing zeros kept). */
static const char *decimal_text(const char *s, int64_t *cents)
{
    static const char invalid[] = "A valid number is required.";
    while (is_ws(*s))
        s++;
    bool neg = false;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    char coef[64];
    size_t nc = 0, nfrac = 0, nd = 0;
    for (; isdigit((unsigned char)*s); s++, nd++)
        if (nc < sizeof coef - 1 && (nc > 0 || *s != '0'))
            coef[nc++] = *s;
        else if (nc >= sizeof coef - 1)
            return "Ensure that there are no more than 10 digits in total.";
    if (*s == '.') {
        for (s++; isdigit((unsigned char)*s); s++, nd++, nfrac++)
            if (nc < sizeof coef - 1 && (nc > 0 || *s != '0'))
                coef[nc++] = *s;
            else if (nc >= sizeof coef - 1)
                return "Ensure that there are no more than 10 digits in total.";
    }
    if (nd == 0)
        return invalid;
    long exp = 0;
    if (*s == 'e' || *s == 'E') {
        s++;
        bool eneg = false;
        if (*s == '+' || *s == '-')
            eneg = *s++ == '-';
        if (!isdigit((unsigned char)*s))
            return invalid;
        for (; isdigit((unsigned char)*s); s++)
            if (exp < 100000)
                exp = exp * 10 + (*s - '0');
        if (eneg)
            exp = -exp;
    }
    while (is_ws(*s))
        s++;
    if (*s != '\0')
        return invalid;
    exp -= (long)nfrac;
    if (nc == 0) /* zero: Decimal keeps one digit */
        coef[nc++] = '0';
    coef[nc] = '\0';
    long total, whole, places;
    if (exp >= 0) {
        total = (long)nc + exp;
        whole = total;
        places = 0;
    } else if ((long)nc > -exp) {
        total = (long)nc;
        whole = total + exp;
        places = -exp;
    } else {
        total = -exp;
        whole = 0;
        places = total;
    }
    if (total > 10)
        return "Ensure that there are no more than 10 digits in total.";
    if (places > 2)
        return "Ensure that there are no more than 2 decimal places.";
    if (whole > 8)
        return "Ensure that there are no more than 8 digits before the decimal point.";
    int64_t v = strtoll(coef, NULL, 10);
    for (long i = 0; i < exp + 2; i++)
        v *= 10;
    *cents = neg ? -v : v;
    return NULL;
}

static void cents_text(int64_t c, char *buf, size_t n)
{
    uint64_t a = c < 0 ? (uint64_t)(-(c + 1)) + 1 : (uint64_t)c;
    snprintf(buf, n, "%s%" PRIu64 ".%02" PRIu64, c < 0 ? "-" : "", a / 100, a % 100);
}

/* A DecimalField value (string or number). Returns false after a message. */
static bool money_field(const json_t *v, int64_t *cents, json_t *errs, const char *field)
{
    if (json_is_null(v)) {
        ord_add_err(errs, field, "This field may not be null.");
        return false;
    }
    char num[40];
    const char *s = drf_scalar_text(v, num, sizeof num);
    if (s == NULL) {
        ord_add_err(errs, field, "A valid number is required.");
        return false;
    }
    if (json_is_string(v) && strlen(s) > 1000) {
        ord_add_err(errs, field, "String value too large.");
        return false;
    }
    const char *msg = decimal_text(s, cents);
    if (msg != NULL) {
        ord_add_err(errs, field, msg);
        return false;
    }
    return true;
}

/* DRF IntegerField with min_value 1 and Django's IntegerField upper bound:
 * ints, integral floats, and strings int() reads once a ".0*" tail is cut. */
static bool quantity_field(const json_t *v, int64_t *out, json_t *errs, const char *field)
{
    static const char invalid[] = "A valid integer is required.";
    long long q = 0;
    bool big = false;
    if (json_is_null(v)) {
        ord_add_err(errs, field, "This field may not be null.");
        return false;
    }
    if (json_is_integer(v))
        q = json_integer_value(v);
    else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || d != floor(d)) {
            ord_add_err(errs, field, invalid);
            return false;
        }
        if (fabs(d) > 9e18) {
            big = true;
            q = d < 0 ? -1 : LLONG_MAX;
        } else
            q = (long long)d;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = strlen(s);
        while (n > 0 && is_ws(s[n - 1]))
            n--;
        size_t dot = n;
        while (dot > 0 && s[dot - 1] == '0')
            dot--;
        if (dot > 0 && s[dot - 1] == '.')
            n = dot - 1;
        while (n > 0 && is_ws(*s)) {
            s++;
            n--;
        }
        size_t i = 0;
        bool neg = false;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            neg = s[i++] == '-';
        if (i == n) {
            ord_add_err(errs, field, invalid);
            return false;
        }
        for (; i < n; i++) {
            if (!isdigit((unsigned char)s[i])) {
                ord_add_err(errs, field, invalid);
                return false;
            }
            if (q > 100000000000LL)
                big = true;
            else
                q = q * 10 + (s[i] - '0');
        }
        if (neg)
            q = -q;
    } else {
        ord_add_err(errs, field, invalid);
        return false;
    }
    if (q < 1) {
        ord_add_err(errs, field, "Ensure this value is greater than or equal to 1.");
        return false;
    }
    if (big || q > 2147483647LL) {
        ord_add_err(errs, field, "Ensure this value is less than or equal to 2147483647.");
        return false;
    }
    *out = q;
    return true;
}

/* One item of `items`: its errors go into an object of its own, kept in
 * errs only when something was wrong. Returns the normalised item or NULL. */
static json_t *parse_item(const json_t *it, json_t *item_errs, int64_t *line_cents, bool *overflow)
{
    if (!json_is_object(it)) {
        char msg[96];
        snprintf(msg, sizeof msg, "Invalid data. Expected a dictionary, but got %s.", py_type(it));
        ord_add_err(item_errs, "non_field_errors", msg);
        return NULL;
    }
    char sku[ORD_REF_MAX * 4 + 1], name[255 * 4 + 1];
    int64_t qty = 0, price = 0;
    bool ok = true;
    const json_t *v = json_object_get(it, "sku");
    if (v == NULL) {
        ord_add_err(item_errs, "sku", "This field is required.");
        ok = false;
    } else if (char_field(v, 100, false, sku, sizeof sku, item_errs, "sku") < 0)
        ok = false;
    v = json_object_get(it, "name");
    if (v == NULL) {
        ord_add_err(item_errs, "name", "This field is required.");
        ok = false;
    } else if (char_field(v, 255, true, name, sizeof name, item_errs, "name") < 0)
        ok = false;
    v = json_object_get(it, "quantity");
    if (v == NULL) {
        ord_add_err(item_errs, "quantity", "This field is required.");
        ok = false;
    } else if (!quantity_field(v, &qty, item_errs, "quantity"))
        ok = false;
    v = json_object_get(it, "price");
    if (v == NULL) {
        ord_add_err(item_errs, "price", "This field is required.");
        ok = false;
    } else if (!money_field(v, &price, item_errs, "price"))
        ok = false;
    if (!ok)
        return NULL;
    /* 2^31 x 10^10 cents does not fit in int64: such a line can match no
     * total of 10 digits anyway, so it is only flagged. */
    if (__builtin_mul_overflow(qty, price, line_cents))
        *overflow = true;
    char ptext[ORD_MONEY_LEN];
    cents_text(price, ptext, sizeof ptext);
    return json_pack("{s:s,s:s,s:I,s:s}", "sku", sku, "name", name, "quantity", (json_int_t)qty,
                     "price", ptext);
}

static void parse_items(const json_t *v, ord_in *in, json_t *errs, int64_t *sum, bool *sum_ok)
{
    if (json_is_null(v)) {
        ord_add_err(errs, "items", "This field may not be null.");
        return;
    }
    if (!json_is_array(v)) {
        char msg[96];
        snprintf(msg, sizeof msg, "Expected a list of items but got type \"%s\".", py_type(v));
        ord_add_err(errs, "items", msg);
        return;
    }
    json_t *out = json_array();
    json_t *by_index = json_object();
    bool overflow = false;
    *sum = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *ie = json_object();
        int64_t line = 0;
        json_t *item = parse_item(json_array_get(v, i), ie, &line, &overflow);
        if (item == NULL) {
            char idx[24];
            snprintf(idx, sizeof idx, "%zu", i);
            json_object_set_new(by_index, idx, ie);
            continue;
        }
        json_decref(ie);
        json_array_append_new(out, item);
        /* A sum beyond int64 can equal no total of 10 digits: flag it. */
        if (__builtin_add_overflow(*sum, line, sum))
            overflow = true;
    }
    if (json_object_size(by_index) > 0) {
        json_object_set_new(errs, "items", by_index);
        json_decref(out);
        return;
    }
    json_decref(by_index);
    in->items = out;
    *sum_ok = !overflow && *sum < 10000000000LL && *sum > -10000000000LL;
    if (*sum_ok)
        cents_text(*sum, in->items_sum, sizeof in->items_sum);
}

void ord_parse(json_t *body, bool full, ord_in *in, json_t *errs)
{
    memset(in, 0, sizeof *in);
    const json_t *v = json_object_get(body, "order_reference");
    if (v == NULL) {
        if (full)
            ord_add_err(errs, "order_reference", "This field is required.");
    } else if (char_field(v, ORD_REF_MAX, false, in->ref, sizeof in->ref, errs,
                          "order_reference") >= 0)
        in->has_ref = true;

    int64_t sum = 0;
    bool sum_ok = false;
    v = json_object_get(body, "items");
    if (v == NULL) {
        if (full)
            ord_add_err(errs, "items", "This field is required.");
    } else
        parse_items(v, in, errs, &sum, &sum_ok);

    v = json_object_get(body, "total_amount");
    int64_t total = 0;
    if (v == NULL) {
        if (full)
            ord_add_err(errs, "total_amount", "This field is required.");
    } else if (money_field(v, &total, errs, "total_amount")) {
        in->has_total = true;
        cents_text(total, in->total, sizeof in->total);
    }
    if (in->items != NULL && in->has_total && (!sum_ok || sum != total)) {
        char msg[160];
        if (sum_ok)
            snprintf(msg, sizeof msg,
                     "Ensure total_amount equals the sum of quantity \xc3\x97 price of the items "
                     "(%s).",
                     in->items_sum);
        else
            snprintf(msg, sizeof msg,
                     "Ensure total_amount equals the sum of quantity \xc3\x97 price of the "
                     "items.");
        ord_add_err(errs, "total_amount", msg);
        in->has_total = false;
    }
    if (in->items != NULL && !sum_ok && !in->has_total && v == NULL) {
        /* Items alone (PATCH) whose sum no numeric(10,2) can hold. */
        ord_add_err(errs, "total_amount",
                    "Ensure total_amount equals the sum of quantity \xc3\x97 price of the items.");
    }

    v = json_object_get(body, "status");
    if (v != NULL) {
        if (json_is_null(v))
            ord_add_err(errs, "status", "This field may not be null.");
        else {
            in->status = json_is_string(v) ? ord_status_lookup(json_string_value(v)) : NULL;
            if (in->status == NULL) {
                /* DRF echoes str(value), whole, whatever its length. */
                char num[40] = "";
                const char *shown = num;
                if (json_is_string(v))
                    shown = json_string_value(v);
                else if (json_is_integer(v))
                    snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                else if (json_is_boolean(v))
                    shown = json_is_true(v) ? "True" : "False";
                size_t n = strlen(shown) + 32;
                char *msg = malloc(n);
                if (msg != NULL) {
                    snprintf(msg, n, "\"%s\" is not a valid choice.", shown);
                    ord_add_err(errs, "status", msg);
                    free(msg);
                }
            }
        }
    }

    v = json_object_get(body, "pharmacy");
    if (v != NULL) {
        char msg[96];
        if (json_is_null(v))
            ord_add_err(errs, "pharmacy", "This field may not be null.");
        else if (json_is_integer(v)) {
            in->has_pharmacy = true;
            in->pharmacy = json_integer_value(v);
        } else if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < 19 &&
                   strspn(json_string_value(v), "0123456789") == json_string_length(v)) {
            in->has_pharmacy = true;
            in->pharmacy = strtoll(json_string_value(v), NULL, 10);
        } else {
            snprintf(msg, sizeof msg, "Incorrect type. Expected pk value, received %s.",
                     py_type(v));
            ord_add_err(errs, "pharmacy", msg);
        }
    }
}

void ord_in_free(ord_in *in)
{
    json_decref(in->items);
    in->items = NULL;
}

/* ---- helpers ---- */

static void reply_not_found(rx_req *req)
{
    rx_reply_error(req, 404, "not_found", "Not found.");
}

static void reply_server_error(rx_req *req)
{
    rx_reply_error(req, 500, "error", "A server error occurred.");
}

/* Connector orders are written by a pharmacy: its key, its admin, or a super
 * admin. A registered user's orders.manage is for their own customer orders
 * (not served by this module yet), so writes are refused, not scoped away. */
static bool may_write(rx_req *req)
{
    const rx_principal *p = rx_req_principal(req);
    if (rx_scope_pharmacy(req) == RX_SCOPE_NONE)
        return false;
    if (p->kind == RX_PRINCIPAL_APIKEY)
        return true;
    return p->kind == RX_PRINCIPAL_USER && p->role != NULL &&
           (strcmp(p->role, "SUPER_ADMIN") == 0 || strcmp(p->role, "PHARMACY_ADMIN") == 0);
}

static void reply_denied(rx_req *req)
{
    rx_reply_error(req, 403, "permission_denied",
                   "You do not have permission to perform this action.");
}

/* The order of a row, without the helper columns a statement added. */
static json_t *order_object(const rx_rows *rows, int row)
{
    static const char *const extra[] = {"total_count", "cur_status", "status_ok", "total_ok",
                                        "items_sum"};
    json_t *o = rx_rows_object(rows, row);
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
        json_object_del(o, extra[i]);
    return o;
}

/* ---- list ---- */

static void list_done(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    json_t *items = json_array();
    int64_t total = 0;
    int tc = rx_rows_column(rows, "total_count");
    for (int i = 0; i < rx_rows_count(rows); i++) {
        if (i == 0)
            rx_rows_int(rows, 0, tc, &total);
        json_array_append_new(items, order_object(rows, i));
    }
    rx_reply_page(req, items, total);
}

static void ord_list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    const char *status = rx_req_query(req, "status");
    if (status != NULL && *status == '\0')
        status = NULL;
    const char *ref = rx_req_query(req, "order_reference");
    if (ref != NULL && *ref == '\0')
        ref = NULL;
    /* ?pharmacy= narrows a super admin's view; everyone else is scoped already. */
    int64_t sp = rx_scope_pharmacy(req), su = rx_scope_user(req);
    bool has_pharmacy = false;
    int64_t pharmacy = 0;
    const char *ph = rx_req_query(req, "pharmacy");
    if (ph != NULL && *ph != '\0' && sp == RX_SCOPE_ALL) {
        size_t n = strlen(ph);
        if (n > 18 || strspn(ph, "0123456789") != n) {
            rx_reply_invalid_field(
                req, "pharmacy",
                "Select a valid choice. That choice is not one of the available choices.");
            return;
        }
        has_pharmacy = true;
        pharmacy = strtoll(ph, NULL, 10);
    }
    /* ?ordering=a,b: the first term decides, id breaks ties; unknown terms
     * fall back to id, as DRF's OrderingFilter ignores invalid fields. */
    static const rx_ordering orderings[] = {
        {"created_at", "o.created_at ASC, o.id ASC"},
        {"-created_at", "o.created_at DESC, o.id ASC"},
        {"updated_at", "o.updated_at ASC, o.id ASC"},
        {"-updated_at", "o.updated_at DESC, o.id ASC"},
        {"total_amount", "o.total_amount ASC, o.id ASC"},
        {"-total_amount", "o.total_amount DESC, o.id ASC"},
        {"-id", "o.id DESC"},
    };
    rx_list *l = rx_list_new(req, ORD_COLS, "orders o");
    /* ORD_SCOPE, one condition per restriction: no pharmacy scope (NONE)
     * with a user scope means "own rows only", decided by the user alone;
     * otherwise any scope but ALL restricts the pharmacy (NONE: no row). */
    if (sp != RX_SCOPE_ALL && !(sp == RX_SCOPE_NONE && su > 0))
        rx_list_where(l, "o.pharmacy_id = $?", RX_INT(sp));
    if (su != RX_SCOPE_ALL)
        rx_list_where(l, "o.user_id = $?", RX_INT(su));
    if (status != NULL)
        rx_list_where(l, "o.status = $?", RX_TEXT(status));
    if (ref != NULL)
        rx_list_where(l, "o.order_reference = $?", RX_TEXT(ref));
    if (has_pharmacy)
        rx_list_where(l, "o.pharmacy_id = $?", RX_INT(pharmacy));
    rx_list_order(l, orderings, sizeof(orderings) / sizeof(orderings[0]), "o.id ASC");
    if (rx_list_run(l, list_done, limit, offset) != 0)
        reply_server_error(req);
}

/* ---- detail ---- */

static void get_done(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        reply_not_found(req);
        return;
    }
    rx_reply_json(req, 200, order_object(rows, 0));
}

static void ord_get(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        reply_not_found(req);
        return;
    }
    if (rx_db(req, get_done,
              "SELECT " ORD_COLS " FROM orders o WHERE o.id = $1 AND " ORD_SCOPE("$2", "$3"),
              RX_INT(id), RX_INT(rx_scope_pharmacy(req)), RX_INT(rx_scope_user(req))) != 0)
        reply_server_error(req);
}

/* ---- create ---- */

/* A write refused by a constraint: 400 on the field it is about, or 500. */
static void reply_write_error(rx_req *req, const rx_rows *rows, int64_t pharmacy)
{
    const char *state = rx_rows_sqlstate(rows);
    if (rx_rows_error(rows) == RX_EDB && state != NULL && strcmp(state, "23505") == 0) {
        rx_reply_invalid_field(req, "order_reference", "%s", ord_dup_msg);
        return;
    }
    if (rx_rows_error(rows) == RX_EDB && state != NULL && strcmp(state, "23503") == 0) {
        char msg[96];
        ord_bad_pk_msg(msg, sizeof msg, pharmacy);
        rx_reply_invalid_field(req, "pharmacy", "%s", msg);
        return;
    }
    rx_reply_db_error(req, rows);
}

static void created_done(rx_req *req, rx_rows *rows)
{
    int64_t *pharmacy = rx_req_data(req);
    if (rx_rows_failed(rows)) {
        reply_write_error(req, rows, pharmacy ? *pharmacy : 0);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        reply_server_error(req);
        return;
    }
    json_t *o = order_object(rows, 0);
    rx_emit(req, "order.created", o);
    rx_reply_json(req, 201, o);
}

static void ord_create(rx_req *req)
{
    if (!may_write(req)) {
        reply_denied(req);
        return;
    }
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    json_t *errs = json_object();
    ord_in in;
    ord_parse(body, true, &in, errs);
    int64_t scope = rx_scope_pharmacy(req);
    int64_t pharmacy = scope;
    char msg[160];
    if (scope == RX_SCOPE_ALL) {
        if (!in.has_pharmacy && json_object_get(errs, "pharmacy") == NULL)
            ord_add_err(errs, "pharmacy", "This field is required.");
        pharmacy = in.pharmacy;
    } else if (in.has_pharmacy && in.pharmacy != scope) {
        /* Another pharmacy's id reads as unknown: its existence is not told. */
        ord_bad_pk_msg(msg, sizeof msg, in.pharmacy);
        ord_add_err(errs, "pharmacy", msg);
    }
    if (in.status != NULL && strcmp(in.status, "pending") != 0) {
        snprintf(msg, sizeof msg, "A new order starts as \"pending\", not \"%s\".", in.status);
        ord_add_err(errs, "status", msg);
    }
    if (json_object_size(errs) > 0) {
        ord_in_free(&in);
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    int64_t *keep = rx_req_alloc(req, sizeof *keep);
    if (keep != NULL)
        *keep = pharmacy;
    rx_req_set_data(req, keep);
    int rc = rx_db(req, created_done,
                   "INSERT INTO orders AS o (pharmacy_id, order_reference, status, items,"
                   " total_amount) VALUES ($1, $2, 'pending', $3::jsonb, $4::numeric)"
                   " RETURNING " ORD_COLS,
                   RX_INT(pharmacy), RX_TEXT(in.ref), RX_JSON(in.items), RX_TEXT(in.total));
    ord_in_free(&in);
    if (rc != 0)
        reply_server_error(req);
}

/* ---- update (PUT / PATCH), with the status transition ---- */

typedef struct upd_ctx {
    const char *to; /* requested status or NULL */
} upd_ctx;

static void updated_done(rx_req *req, rx_rows *rows)
{
    upd_ctx *c = rx_req_data(req);
    if (rx_rows_failed(rows)) {
        reply_write_error(req, rows, 0);
        return;
    }
    if (rx_rows_count(rows) != 1) { /* no row in scope with that id */
        reply_not_found(req);
        return;
    }
    const char *from = rx_rows_text(rows, 0, rx_rows_column(rows, "cur_status"));
    if (rx_rows_isnull(rows, 0, rx_rows_column(rows, "id"))) {
        bool status_ok = false, total_ok = false;
        rx_rows_bool(rows, 0, rx_rows_column(rows, "status_ok"), &status_ok);
        rx_rows_bool(rows, 0, rx_rows_column(rows, "total_ok"), &total_ok);
        char msg[200];
        if (!status_ok) {
            ord_transition_msg(msg, sizeof msg, from, c->to);
            rx_reply_invalid_field(req, "status", "%s", msg);
        } else {
            const char *sum = rx_rows_text(rows, 0, rx_rows_column(rows, "items_sum"));
            snprintf(msg, sizeof msg,
                     "Ensure total_amount equals the sum of quantity \xc3\x97 price of the items "
                     "(%s).",
                     sum ? sum : "0.00");
            rx_reply_invalid_field(req, "total_amount", "%s", msg);
        }
        return;
    }
    json_t *o = order_object(rows, 0);
    if (c->to != NULL) {
        json_t *ev = json_pack("{s:O,s:s,s:s}", "order", o, "from", from ? from : "", "to", c->to);
        rx_emit(req, "order.status_changed", ev);
        json_decref(ev);
    }
    rx_reply_json(req, 200, o);
}

/* The sum of an order's stored items, in SQL (prices are normalised text). */
#define ORD_ITEMS_SUM(items)                                                                       \
    "(SELECT COALESCE(sum((i->>'quantity')::numeric * (i->>'price')::numeric), 0)"                 \
    " FROM jsonb_array_elements(" items ") i)"

static void ord_update(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        reply_not_found(req);
        return;
    }
    if (!may_write(req)) {
        reply_denied(req);
        return;
    }
    json_t *body = rx_req_json_object(req);
    if (body == NULL)
        return;
    json_t *errs = json_object();
    ord_in in;
    ord_parse(body, rx_req_method(req) == RX_PUT, &in, errs);
    int64_t scope = rx_scope_pharmacy(req);
    /* An order never moves: a scoped caller naming another pharmacy is told
     * so; a super admin's `pharmacy` is read-only here and ignored. */
    if (scope != RX_SCOPE_ALL && in.has_pharmacy && in.pharmacy != scope) {
        char msg[96];
        ord_bad_pk_msg(msg, sizeof msg, in.pharmacy);
        ord_add_err(errs, "pharmacy", msg);
    }
    if (json_object_size(errs) > 0) {
        ord_in_free(&in);
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    upd_ctx *c = rx_req_alloc(req, sizeof *c);
    if (c == NULL) {
        ord_in_free(&in);
        reply_server_error(req);
        return;
    }
    c->to = in.status;
    rx_req_set_data(req, c);
    /* One statement: lock the row in scope (FOR UPDATE, so the checks see the
     * latest committed status), check the transition and the total against
     * it, update only when both hold, and say why not otherwise. */
    int rc = rx_db(
        req, updated_done,
        "WITH cur AS (SELECT o.id, o.status, o.total_amount, o.items FROM orders o"
        "   WHERE o.id = $1 AND " ORD_SCOPE(
            "$2",
            "$3") " FOR UPDATE),"
                  " chk AS (SELECT cur.id AS cid, cur.status AS cur_status,"
                  "   ($4::text IS NULL OR cur.status = ANY($5::text[])) AS status_ok,"
                  "   COALESCE($8::numeric, cur.total_amount) ="
                  "     COALESCE($9::numeric, " ORD_ITEMS_SUM(
                      "cur.items") ") AS total_ok,"
                                   "   COALESCE($9::numeric, " ORD_ITEMS_SUM(
                                       "cur.items") ")::numeric(12,2)::text AS items_sum"
                                                    "   FROM cur),"
                                                    " upd AS (UPDATE orders o SET order_reference "
                                                    "= COALESCE($6::text, o.order_reference),"
                                                    "   items = COALESCE($7::jsonb, o.items),"
                                                    "   total_amount = COALESCE($8::numeric, "
                                                    "o.total_amount),"
                                                    "   status = COALESCE($4::text, o.status), "
                                                    "updated_at = now()"
                                                    "   FROM chk WHERE o.id = chk.cid AND "
                                                    "chk.status_ok AND chk.total_ok"
                                                    "   RETURNING " ORD_COLS ")"
                                                    " SELECT chk.cur_status, chk.status_ok, "
                                                    "chk.total_ok, chk.items_sum, upd.*"
                                                    " FROM chk LEFT JOIN upd ON true",
        RX_INT(id), RX_INT(scope), RX_INT(rx_scope_user(req)), RX_TEXT(in.status),
        RX_TEXT(ord_allowed_from(in.status)), RX_TEXT(in.has_ref ? in.ref : NULL),
        RX_JSON(in.items), RX_TEXT(in.has_total ? in.total : NULL),
        RX_TEXT(in.items != NULL ? in.items_sum : NULL));
    ord_in_free(&in);
    if (rc != 0)
        reply_server_error(req);
}

/* ---- delete ---- */

static void ord_delete(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        reply_not_found(req);
        return;
    }
    if (!may_write(req)) {
        reply_denied(req);
        return;
    }
    if (rx_db(req, rx_reply_deleted,
              "DELETE FROM orders o WHERE o.id = $1 AND " ORD_SCOPE("$2", "$3") " RETURNING o.id",
              RX_INT(id), RX_INT(rx_scope_pharmacy(req)), RX_INT(rx_scope_user(req))) != 0)
        reply_server_error(req);
}

/* ---- module ---- */

static int init(rx_module *m)
{
    ord_mod = m;
    int rc = 0;
    rc |= rx_schema(m, "Order", order_schema);
#define ROUTE(meth, path, fn, sum, reqs, resps, st)                                                \
    do {                                                                                           \
        rx_route_opts o = {.perm = "orders.manage",                                                \
                           .list_style = RX_LIST_ARRAY,                                            \
                           .tag = "orders",                                                        \
                           .summary = sum,                                                         \
                           .request_schema = reqs,                                                 \
                           .response_schema = resps,                                               \
                           .success_status = st};                                                  \
        rc |= rx_route(m, meth, path, fn, &o);                                                     \
    } while (0)
    ROUTE(RX_GET, "/api/orders/", ord_list,
          "List orders (?status=, ?order_reference=, ?ordering=created_at|updated_at|"
          "total_amount, super admin ?pharmacy=)",
          NULL, "[]Order", 200);
    ROUTE(RX_POST, "/api/orders/", ord_create, "Create an order (starts as pending)", "Order",
          "Order", 201);
    ROUTE(RX_GET, "/api/orders/{id}/", ord_get, "An order", NULL, "Order", 200);
    ROUTE(RX_PUT | RX_PATCH, "/api/orders/{id}/", ord_update,
          "Update an order; a status change must be an allowed transition", "Order", "Order", 200);
    ROUTE(RX_DELETE, "/api/orders/{id}/", ord_delete, "Delete an order", NULL, NULL, 204);
#undef ROUTE
    rc |= ord_apply_init(m);
    rc |= rx_migrations(m, orders_migrations);
    if (rc != 0) {
        rx_module_fail(m, "registration failed");
        return -1;
    }
    return 0;
}

RX_MODULE("orders", "1.0.0", .requires = RX_REQUIRES("pharmacies"), .init = init,
          .summary = "the connector's orders (/api/orders/) and their status machine");
