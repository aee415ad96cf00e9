/*
 * inventory.c — the inventory module: configuration, registration, and the
 * field rules shared by every way an item or a sale comes in (HTTP, bulk,
 * webhook apply tasks), so all of them refuse the same values with DRF's
 * messages, word for word.
 *
 * Configuration (section [inventory]; also RXD_INVENTORY_<KEY>):
 *   low_stock_threshold  quantity at or below which inventory.low_stock is
 *                        emitted for items without their own threshold (default 5)
 */
#include "inventory.h"

#include "drf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

rx_module *inv_mod;
long long inv_low_stock_default = 5;

extern const rx_migration inventory_migrations[];

void inv_add_err(json_t *errs, const char *field, const char *msg)
{
    json_t *list = json_object_get(errs, field);
    if (list == NULL) {
        list = json_array();
        json_object_set_new(errs, field, list);
    }
    json_array_append_new(list, json_string(msg));
}

void inv_reply_not_found(rx_req *req)
{
    rx_reply_error(req, 404, "not_found", "Not found.");
}

void inv_reply_server_error(rx_req *req)
{
    rx_reply_error(req, 500, "error", "A server error occurred.");
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

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* A copy of s without surrounding whitespace, in the request arena. */
static char *trimmed(rx_req *req, const char *s)
{
    while (is_ws(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    char *t = rx_req_alloc(req, n + 1);
    if (t != NULL)
        memcpy(t, s, n);
    return t;
}

/* Python's repr of a float (the shortest text that reads back the same):
 * DRF turns a JSON number into text that way before parsing it, so 7.3
 * must stay "7.3", not "7.2999999999999998". */
bool inv_char(rx_req *req, json_t *obj, const char *field, size_t maxlen, bool required,
              json_t *errs, const char **out)
{
    *out = NULL;
    json_t *v = json_object_get(obj, field);
    if (v == NULL) {
        if (required)
            inv_add_err(errs, field, "This field is required.");
        return !required;
    }
    if (json_is_null(v)) {
        inv_add_err(errs, field, "This field may not be null.");
        return false;
    }
    char num[40];
    const char *s = drf_scalar_text(v, num, sizeof num);
    if (s == NULL) {
        inv_add_err(errs, field, "Not a valid string.");
        return false;
    }
    char *t = trimmed(req, s);
    if (t == NULL)
        return false;
    if (*t == '\0') {
        inv_add_err(errs, field, "This field may not be blank.");
        return false;
    }
    if (utf8_len(t) > maxlen) {
        char msg[80];
        snprintf(msg, sizeof msg, "Ensure this field has no more than %zu characters.", maxlen);
        inv_add_err(errs, field, msg);
        return false;
    }
    *out = t;
    return true;
}

/* DRF IntegerField: int(re.sub(r'\.0*\s*$', '', str(data))). */
bool inv_int(json_t *obj, const char *field, long long min, bool required, bool nullable,
             json_t *errs, int64_t *out, bool *present, bool *is_null)
{
    *present = false;
    if (is_null != NULL)
        *is_null = false;
    json_t *v = json_object_get(obj, field);
    if (v == NULL) {
        if (required)
            inv_add_err(errs, field, "This field is required.");
        return !required;
    }
    *present = true;
    if (json_is_null(v)) {
        if (!nullable) {
            inv_add_err(errs, field, "This field may not be null.");
            return false;
        }
        if (is_null != NULL)
            *is_null = true;
        return true;
    }
    long long val = 0;
    bool ok = false, overflow = false;
    if (json_is_integer(v)) {
        val = json_integer_value(v);
        ok = true;
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (isfinite(d) && d == floor(d)) {
            if (fabs(d) > 9e18)
                overflow = true;
            else
                val = (long long)d;
            ok = true;
        }
    } else if (json_is_string(v) && json_string_length(v) <= 1000) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", json_string_value(v));
        size_t n = strlen(buf);
        while (n > 0 && is_ws(buf[n - 1]))
            n--;
        buf[n] = '\0';
        /* drop a trailing ".000" as DRF does */
        char *dot = strrchr(buf, '.');
        if (dot != NULL && strspn(dot + 1, "0") == strlen(dot + 1))
            *dot = '\0';
        const char *p = buf;
        while (is_ws(*p))
            p++;
        const char *q = p;
        if (*q == '+' || *q == '-')
            q++;
        if (*q != '\0' && strspn(q, "0123456789") == strlen(q)) {
            errno = 0;
            val = strtoll(p, NULL, 10);
            overflow = errno == ERANGE;
            ok = true;
        }
    }
    if (!ok) {
        inv_add_err(errs, field, "A valid integer is required.");
        return false;
    }
    char msg[80];
    if (!overflow && val < min) {
        snprintf(msg, sizeof msg, "Ensure this value is greater than or equal to %lld.", min);
        inv_add_err(errs, field, msg);
        return false;
    }
    if (overflow || val > INV_INT_MAX) {
        snprintf(msg, sizeof msg, "Ensure this value is less than or equal to %lld.", INV_INT_MAX);
        inv_add_err(errs, field, msg);
        return false;
    }
    *out = val;
    return true;
}

bool inv_money(rx_req *req, json_t *obj, const char *field, bool required, json_t *errs,
               const char **out)
{
    static const char invalid[] = "A valid number is required.";
    *out = NULL;
    json_t *v = json_object_get(obj, field);
    if (v == NULL) {
        if (required)
            inv_add_err(errs, field, "This field is required.");
        return !required;
    }
    if (json_is_null(v)) {
        inv_add_err(errs, field, "This field may not be null.");
        return false;
    }
    if (json_is_string(v) && json_string_length(v) > 1000) {
        inv_add_err(errs, field, "String value too large.");
        return false;
    }
    char num[40];
    const char *s = drf_scalar_text(v, num, sizeof num);
    if (s == NULL) {
        inv_add_err(errs, field, invalid);
        return false;
    }
    char *t = trimmed(req, s);
    if (t == NULL)
        return false;
    /* Python's Decimal syntax: [sign] digits [. digits] [e [sign] digits]. */
    const char *p = t;
    if (*p == '+' || *p == '-')
        p++;
    const char *ip = p;
    size_t ni = strspn(p, "0123456789");
    p += ni;
    const char *fp = p;
    size_t nf = 0;
    if (*p == '.') {
        fp = ++p;
        nf = strspn(p, "0123456789");
        p += nf;
    }
    long exp = 0;
    if (ni + nf > 0 && (*p == 'e' || *p == 'E')) {
        p++;
        int esign = 1;
        if (*p == '+' || *p == '-')
            esign = *p++ == '-' ? -1 : 1;
        size_t ne = strspn(p, "0123456789");
        if (ne == 0 || ne > 6) {
            inv_add_err(errs, field,
                        ne == 0 ? invalid
                                : "Ensure that there are no more than 10 digits in total.");
            return false;
        }
        exp = esign * strtol(p, NULL, 10);
        p += ne;
    }
    if (ni + nf == 0 || *p != '\0') {
        inv_add_err(errs, field, invalid);
        return false;
    }
    /* The coefficient's digits without leading zeros (Decimal's digit tuple). */
    long lead = 0, ndig = (long)(ni + nf);
    for (long k = 0; k < ndig; k++) {
        char c = k < (long)ni ? ip[k] : fp[k - (long)ni];
        if (c != '0')
            break;
        lead++;
    }
    long digits = ndig - lead;
    if (digits == 0)
        digits = 1;
    long exponent = exp - (long)nf;
    long total, whole, decimals;
    if (exponent >= 0) {
        total = digits + exponent;
        whole = total;
        decimals = 0;
    } else if (digits > -exponent) {
        total = digits;
        whole = digits + exponent;
        decimals = -exponent;
    } else {
        total = -exponent;
        whole = 0;
        decimals = total;
    }
    if (total > 10) {
        inv_add_err(errs, field, "Ensure that there are no more than 10 digits in total.");
        return false;
    }
    if (decimals > 2) {
        inv_add_err(errs, field, "Ensure that there are no more than 2 decimal places.");
        return false;
    }
    if (whole > 8) {
        inv_add_err(errs, field,
                    "Ensure that there are no more than 8 digits before the decimal point.");
        return false;
    }
    *out = t; /* PostgreSQL's numeric input reads every form accepted above */
    return true;
}

bool inv_extra(json_t *obj, const char *field, json_t *errs, json_t **out, bool *present)
{
    *out = NULL;
    json_t *v = json_object_get(obj, field);
    *present = v != NULL;
    if (v == NULL || json_is_null(v))
        return true;
    if (!json_is_object(v)) {
        const char *t = json_is_array(v)     ? "list"
                        : json_is_string(v)  ? "str"
                        : json_is_integer(v) ? "int"
                        : json_is_real(v)    ? "float"
                                             : "bool";
        char msg[80];
        snprintf(msg, sizeof msg, "Expected a dictionary of items but got type \"%s\".", t);
        inv_add_err(errs, field, msg);
        return false;
    }
    /* The cap is on what would be stored, so measure the compact form. */
    size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT);
    if (n > INV_EXTRA_MAX) {
        inv_add_err(errs, field, "Ensure this field has no more than 65536 bytes when serialized.");
        return false;
    }
    *out = v;
    return true;
}

static bool digits_at(const char *s, int n, int *val)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *val = v;
    return true;
}

/* Django's parse_datetime (and parse_date): YYYY-MM-DD[(T| )HH:MM[:SS[.f]]][Z|±HH[:MM]]. */
bool inv_iso_time(const char *s)
{
    int y, mo, d, h, mi, sec = 0, tz;
    if (strlen(s) < 10 || !digits_at(s, 4, &y) || s[4] != '-' || !digits_at(s + 5, 2, &mo) ||
        s[7] != '-' || !digits_at(s + 8, 2, &d) || y < 1 || mo < 1 || mo > 12 || d < 1)
        return false;
    /* The day must exist, or PostgreSQL would refuse the value (a 500, not a 400). */
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return false;
    s += 10;
    if (*s == '\0')
        return true;
    if (*s != 'T' && *s != 't' && *s != ' ')
        return false;
    s++;
    if (!digits_at(s, 2, &h) || s[2] != ':' || !digits_at(s + 3, 2, &mi) || h > 23 || mi > 59)
        return false;
    s += 5;
    if (*s == ':') {
        if (!digits_at(s + 1, 2, &sec) || sec > 59)
            return false;
        s += 3;
        if (*s == '.' || *s == ',') {
            size_t n = strspn(s + 1, "0123456789");
            if (n == 0 || n > 6)
                return false;
            s += 1 + n;
        }
    }
    if (*s == '\0')
        return true;
    if ((*s == 'Z' || *s == 'z') && s[1] == '\0')
        return true;
    if (*s != '+' && *s != '-')
        return false;
    s++;
    if (!digits_at(s, 2, &tz) || tz > 23)
        return false;
    s += 2;
    if (*s == ':')
        s++;
    if (*s == '\0')
        return true;
    return digits_at(s, 2, &tz) && tz <= 59 && s[2] == '\0';
}

void inv_item_read(rx_req *req, json_t *body, bool full, json_t *errs, inv_item_in *in)
{
    memset(in, 0, sizeof *in);
    bool is_null;
    inv_char(req, body, "sku", INV_SKU_MAX, full, errs, &in->sku);
    inv_char(req, body, "name", INV_NAME_MAX, full, errs, &in->name);
    inv_int(body, "quantity", 0, full, false, errs, &in->quantity, &in->has_quantity, NULL);
    inv_money(req, body, "price", full, errs, &in->price);
    inv_extra(body, "extra_data", errs, &in->extra, &in->has_extra);
    in->threshold = -1;
    if (inv_int(body, "low_stock_threshold", 0, false, true, errs, &in->threshold,
                &in->has_threshold, &is_null) &&
        is_null)
        in->threshold = -1;
}

const char inv_bad_time[] = "Datetime has wrong format. Use one of these formats instead: "
                            "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].";

int64_t inv_pk(json_t *v, const char *field, json_t *errs)
{
    char msg[160];
    if (json_is_integer(v)) {
        if (json_integer_value(v) > 0)
            return json_integer_value(v);
        snprintf(msg, sizeof msg, "Invalid pk \"%lld\" - object does not exist.",
                 (long long)json_integer_value(v));
    } else if (json_is_string(v) && *json_string_value(v) != '\0' &&
               strspn(json_string_value(v), "0123456789") == json_string_length(v)) {
        const char *s = json_string_value(v);
        long long id = strlen(s) < 19 ? strtoll(s, NULL, 10) : 0;
        if (id > 0)
            return id;
        snprintf(msg, sizeof msg, "Invalid pk \"%.60s\" - object does not exist.", s);
    } else {
        snprintf(msg, sizeof msg, "Incorrect type. Expected pk value, received %s.",
                 json_is_object(v)   ? "dict"
                 : json_is_array(v)  ? "list"
                 : json_is_string(v) ? "str"
                 : json_is_real(v)   ? "float"
                                     : "bool");
    }
    inv_add_err(errs, field, msg);
    return 0;
}

int64_t inv_create_pharmacy(rx_req *req, json_t *body, int64_t scope, json_t *errs)
{
    (void)req;
    json_t *v = json_object_get(body, "pharmacy");
    if (scope < 0) { /* nobody scoped this request: it may land nowhere */
        inv_add_err(errs, "pharmacy", "This field is required.");
        return 0;
    }
    if (scope > 0) {
        if (v == NULL || json_is_null(v))
            return scope;
        int64_t id = inv_pk(v, "pharmacy", errs);
        if (id == 0)
            return 0;
        if (id != scope) {
            /* Another pharmacy: the same answer as an unknown one, so a key
             * learns nothing about which ids exist. */
            char msg[80];
            snprintf(msg, sizeof msg, "Invalid pk \"%lld\" - object does not exist.",
                     (long long)id);
            inv_add_err(errs, "pharmacy", msg);
            return 0;
        }
        return scope;
    }
    if (v == NULL) {
        inv_add_err(errs, "pharmacy", "This field is required.");
        return 0;
    }
    if (json_is_null(v)) {
        inv_add_err(errs, "pharmacy", "This field may not be null.");
        return 0;
    }
    return inv_pk(v, "pharmacy", errs); /* existence is decided by the INSERT's SELECT */
}

int inv_route(rx_module *m, const char *tag, unsigned methods, const char *path, rx_handler fn,
              const char *summary, const char *request_schema, const char *response_schema,
              int success_status)
{
    rx_route_opts o = {.perm = "inventory.manage",
                       .list_style = RX_LIST_ARRAY,
                       .tag = tag,
                       .summary = summary,
                       .request_schema = request_schema,
                       .response_schema = response_schema,
                       .success_status = success_status};
    return rx_route(m, methods, path, fn, &o);
}

bool inv_path_id(rx_req *req, int64_t *id)
{
    if (rx_req_param_id(req, "id", id) != 0) {
        inv_reply_not_found(req);
        return false;
    }
    return true;
}

void inv_emit_item(rx_req *req, json_t *item, bool check_low)
{
    rx_emit(req, "inventory.updated", item);
    if (!check_low)
        return;
    json_t *q = json_object_get(item, "quantity");
    json_t *t = json_object_get(item, "low_stock_threshold");
    long long thr = json_is_integer(t) ? json_integer_value(t) : inv_low_stock_default;
    if (json_is_integer(q) && json_integer_value(q) <= thr)
        rx_emit(req, "inventory.low_stock", item);
}

static int init(rx_module *m)
{
    inv_mod = m;
    if (rx_config_int(m, "low_stock_threshold", 5, &inv_low_stock_default) != 0 ||
        inv_low_stock_default < 0) {
        rx_module_fail(m, "inventory.low_stock_threshold: not a non-negative integer");
        return -1;
    }
    int rc = 0;
    rc |= inv_items_init(m);
    rc |= inv_sales_init(m);
    rc |= inv_bulk_init(m);
    rc |= inv_apply_init(m);
    rc |= rx_migrations(m, inventory_migrations);
    if (rc != 0) {
        rx_module_fail(m, "registration failed");
        return -1;
    }
    return 0;
}

RX_MODULE("inventory", "1.0.0", .requires = RX_REQUIRES("pharmacies"), .init = init,
          .summary = "inventory items, sales (atomic stock), bulk upsert, webhook apply tasks");
