/*
 * list.c — rx_list_*: a list route's SELECT assembled from the filters a
 * request really gave (sdk/rx.h, "List queries").
 *
 * Why: a single catch-all text ("($1 = 0 OR pharmacy_id = $1) AND ...") is one
 * prepared statement for every request, but PostgreSQL must plan it for the
 * worst case: no index on an OR with a parameter, and a fresh custom plan per
 * execution. One text per combination of present filters keeps each statement
 * plain; there are few combinations, and db.c prepares each once per
 * connection. The builder only concatenates texts the module wrote; request
 * values go in parameters.
 */
#include "kn.h"

#include <stdio.h>
#include <string.h>

struct rx_list {
    rx_req *req;
    const char *cols, *from, *total, *order;
    const char *conds[RX_LIST_MAX_CONDS]; /* "$?" already numbered */
    int nconds;
    rx_param params[RX_LIST_MAX_PARAMS];
    int nparams;
    int err; /* first error, 0 if none */
};

rx_list *rx_list_new(rx_req *req, const char *cols, const char *from)
{
    if (req == NULL || cols == NULL || from == NULL)
        return NULL;
    rx_list *l = rx_req_alloc(req, sizeof(*l));
    if (l == NULL)
        return NULL;
    memset(l, 0, sizeof(*l));
    l->req = req;
    l->cols = cols;
    l->from = from;
    return l;
}

static int fail(rx_list *l, int err)
{
    if (l->err == 0)
        l->err = err;
    return err;
}

/* cond with every "$?" replaced by "$<n>", in the request arena. */
static char *number(rx_req *req, const char *cond, int n)
{
    size_t holes = 0;
    for (const char *p = cond; (p = strstr(p, "$?")) != NULL; p += 2)
        holes++;
    size_t len = strlen(cond) + holes * 4 + 1; /* "$?" -> "$" + up to 5 digits */
    char *out = rx_req_alloc(req, len);
    if (out == NULL)
        return NULL;
    char *o = out;
    for (const char *p = cond; *p != '\0';) {
        if (p[0] == '$' && p[1] == '?') {
            o += snprintf(o, len - (size_t)(o - out), "$%d", n);
            p += 2;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

int rx_list_where(rx_list *l, const char *cond, rx_param p)
{
    if (l == NULL)
        return RX_ENOMEM;
    if (cond == NULL || *cond == '\0')
        return fail(l, RX_EINVAL);
    if (l->nconds == RX_LIST_MAX_CONDS)
        return fail(l, RX_EINVAL);
    int n = 0;
    if (strstr(cond, "$?") != NULL) {
        /* two slots stay free for LIMIT and OFFSET */
        if (l->nparams >= RX_LIST_MAX_PARAMS - 2)
            return fail(l, RX_EINVAL);
        l->params[l->nparams++] = p;
        n = l->nparams;
        cond = number(l->req, cond, n);
        if (cond == NULL)
            return fail(l, RX_ENOMEM);
    }
    l->conds[l->nconds++] = cond;
    return n;
}

void rx_list_total(rx_list *l, const char *sql)
{
    if (l == NULL)
        return;
    if (sql == NULL || *sql == '\0')
        fail(l, RX_EINVAL);
    else
        l->total = sql;
}

void rx_list_order(rx_list *l, const rx_ordering *table, size_t n, const char *def)
{
    if (l == NULL)
        return;
    l->order = def;
    const char *q = rx_req_query(l->req, "ordering");
    if (q != NULL) {
        size_t len = strcspn(q, ",");
        for (size_t k = 0; k < n; k++)
            if (strlen(table[k].param) == len && strncmp(table[k].param, q, len) == 0) {
                l->order = table[k].sql;
                break;
            }
    }
    if (l->order == NULL || *l->order == '\0')
        fail(l, RX_EINVAL);
}

/* " WHERE c1 AND c2 ...", or "" without conditions. */
static char *where_text(rx_list *l)
{
    size_t len = 1;
    for (int i = 0; i < l->nconds; i++)
        len += strlen(l->conds[i]) + 7;
    char *w = rx_req_alloc(l->req, len);
    if (w == NULL)
        return NULL;
    char *o = w;
    *o = '\0';
    for (int i = 0; i < l->nconds; i++) {
        const char *kw = i == 0 ? " WHERE " : " AND ";
        size_t k = strlen(kw), c = strlen(l->conds[i]);
        memcpy(o, kw, k);
        memcpy(o + k, l->conds[i], c);
        o += k + c;
        *o = '\0';
    }
    return w;
}

int rx_list_run(rx_list *l, rx_db_cb cb, int64_t limit, int64_t offset)
{
    if (l == NULL)
        return RX_ENOMEM;
    if (l->err != 0)
        return l->err;
    if (cb == NULL || l->order == NULL)
        return RX_EINVAL;
    char *where = where_text(l);
    if (where == NULL)
        return RX_ENOMEM;
    int n = l->nparams;
    l->params[n] = RX_INT(limit);
    l->params[n + 1] = RX_INT(offset);
    char *sql =
        l->total != NULL
            ? rx_req_sprintf(l->req,
                             "SELECT %s, (%s) AS total_count FROM %s%s ORDER BY %s"
                             " LIMIT $%d OFFSET $%d",
                             l->cols, l->total, l->from, where, l->order, n + 1, n + 2)
            : rx_req_sprintf(l->req,
                             "SELECT %s, (SELECT count(*) FROM %s%s) AS total_count"
                             " FROM %s%s ORDER BY %s LIMIT $%d OFFSET $%d",
                             l->cols, l->from, where, l->from, where, l->order, n + 1, n + 2);
    if (sql == NULL)
        return RX_ENOMEM;
    return rx_db_query(l->req, cb, sql, n + 2, l->params);
}
