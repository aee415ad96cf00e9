/*
 * datakit.c — a module used only by the end-to-end tests and benchmarks of
 * the PostgreSQL layer: type conversions, slow queries (timeouts, pool
 * exhaustion), transactions, SQL errors, a primary-key read, list queries
 * (rx_list_*) on the table datakit_list the tests create and seed, and pairs
 * of routes answering the same SELECT through rx_rows_array (jansson) and
 * rx_reply_rows_page (JSON text written from the result), which must agree.
 */
#include <rx.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_rows(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    rx_reply_json(req, 200, rx_rows_array(rows));
}

#define TYPES_COLS                                                                                 \
    "'text'::text AS t, 42::int4 AS i4, 9007199254740993::int8 AS i8,"                             \
    " 7::int2 AS i2, 12.5::numeric(10,2) AS money, true AS yes, false AS no,"                      \
    " '{\"a\":[1,2]}'::jsonb AS jb, '[1,\"x\"]'::json AS js,"                                      \
    " '2026-11-22 10:00:00+06'::timestamptz AS ts,"                                                \
    " '2026-11-22 10:00:00.123456+00'::timestamptz AS ts_frac,"                                    \
    " 1.5::float8 AS f8, NULL::text AS nothing, NULL::int AS nothing_int,"                         \
    " 'it''s'::varchar AS quoted, '2026-01-31'::date AS d"

static void types(rx_req *req)
{
    rx_db_query(req, on_rows, "SELECT " TYPES_COLS, 0, NULL);
}

/* The same row as a one-item list page through rx_reply_rows_page. */
static void types_page(rx_req *req)
{
    rx_db_query(req, rx_reply_rows_page, "SELECT " TYPES_COLS ", (SELECT 1) AS total_count", 0,
                NULL);
}

/* Values that are hard to write as JSON text: every escape, non-ASCII, a
 * string longer than the page buffer's first 4096 bytes, timestamps with and
 * without fraction or zone, floats JSON has no number for, integer extremes,
 * NULLs of several types, jsonb holding quotes. */
#define HARD_SQL                                                                                   \
    "SELECT 'say \"hi\"'::text AS dquote, 'back\\slash'::text AS backslash,"                       \
    " E'a\\nb\\rc\\td'::text AS ws, 'x' || chr(1) || 'y' || chr(31) || 'z' AS ctrl,"               \
    " E'\\b\\f'::text AS bf, chr(127) AS del, 'żółć ✓ 日本 🙂'::text AS utf8, ''::text " \
    "AS "                                                                                          \
    "empty,"                                                                                       \
    " repeat('ab\"c\\', 1500) || repeat('é', 3000) AS long_esc, repeat('x', 9000) AS long_plain," \
    " '2026-11-22 10:00:00+00'::timestamptz AS tstz, '2026-11-22 10:00:00.5+03'::timestamptz AS "  \
    "tstz_frac,"                                                                                   \
    " '2026-11-22 10:00:00.000001+00'::timestamptz AS tstz_usec,"                                  \
    " '2026-11-22 10:00:00'::timestamp AS ts_plain, '2026-11-22 10:00:00.25'::timestamp AS "       \
    "ts_frac,"                                                                                     \
    " 'infinity'::timestamptz AS ts_inf,"                                                          \
    " 'NaN'::float8 AS f_nan, 'Infinity'::float8 AS f_inf, '-Infinity'::float8 AS f_ninf,"         \
    " -2.5::float8 AS f_neg, 1e300::float8 AS f_big, 1e-300::float8 AS f_small, 0.1::float4 AS "   \
    "f4,"                                                                                          \
    " -42::int4 AS i_neg, (-32768)::int2 AS i2_min, 9223372036854775807::int8 AS i8_max,"          \
    " (-9223372036854775808)::int8 AS i8_min, -0.5::numeric AS n_neg, 26::oid AS an_oid,"          \
    " NULL::text AS null_text, NULL::int8 AS null_int, NULL::float8 AS null_float,"                \
    " NULL::bool AS null_bool, NULL::jsonb AS null_jsonb, NULL::timestamptz AS null_ts,"           \
    " NULL::date AS null_date,"                                                                    \
    " '{\"q\": \"he said \\\"no\\\"\", \"n\": {\"b\\\\s\": [\"\\n\", \"\\u00e9\", null, "          \
    "-1.5]}}'::jsonb AS jb,"                                                                       \
    " '{\"k\": \"v\\\"w\"}'::json AS js, '\"just a string\"'::jsonb AS jb_str,"                    \
    " '00000000-0000-0000-0000-00000000002a'::uuid AS an_uuid, ARRAY[1,2] AS arr,"                 \
    " '{\"big\": 123456789012345678901234567890, \"one\": 1.0}'::jsonb AS jb_big,"                 \
    " 'a\"b'::text AS \"key \"\"quoted\"\"\", (SELECT 1) AS total_count"

static void hard(rx_req *req)
{
    rx_db_query(req, on_rows, HARD_SQL, 0, NULL);
}

static void hard_page(rx_req *req)
{
    rx_db_query(req, rx_reply_rows_page, HARD_SQL, 0, NULL);
}

/* Many rows of mixed values, so the page buffer grows many times over. */
#define MANY_SQL                                                                                   \
    "SELECT g AS id, 'row \"' || g || E'\"\\n\\\\' || repeat('ż', g % 7) AS s,"                   \
    " CASE WHEN g % 5 = 0 THEN NULL ELSE g / 3.0 END::float8 AS f,"                                \
    " CASE WHEN g % 50 = 7 THEN 'NaN'::float8 ELSE g END AS f_nan,"                                \
    " timestamptz '2026-01-01 00:00:00+00' + g * interval '1.5 second' AS ts,"                     \
    " jsonb_build_object('g', g, 'q', 'a\"' || g, 'l', jsonb_build_array(g, NULL)) AS jb,"         \
    " CASE WHEN g % 3 = 0 THEN NULL ELSE repeat(chr(1 + g % 31), g % 4) END AS ctrl,"              \
    " g % 2 = 0 AS even, g::int8 * -1000000007 AS big,"                                            \
    " count(*) OVER () AS total_count"                                                             \
    " FROM generate_series(1, $1::int) g ORDER BY g"

static const char *many_n(rx_req *req)
{
    const char *n = rx_req_query(req, "n");
    return n ? n : "500";
}

static void many(rx_req *req)
{
    rx_db(req, on_rows, MANY_SQL, RX_TEXT(many_n(req)));
}

static void many_page(rx_req *req)
{
    rx_db(req, rx_reply_rows_page, MANY_SQL, RX_TEXT(many_n(req)));
}

/* ---- rx_list_* on datakit_list(id, grp, name, tag) ----
 * Filters: ?grp= ?name= ?q= (name or tag contains, case-insensitive: one
 * parameter used twice) ?min_id= ?tagged=1 (no parameter). ?rev=1 adds them
 * in the reverse order, so every parameter gets another number. ?total=custom
 * counts with rx_list_total (1000 + the rows of the grp filter, ignoring the
 * other filters), so the test sees which statement gave X-Total-Count. */

static const rx_ordering list_orderings[] = {
    {"name", "name ASC, id ASC"},
    {"-name", "name DESC, id ASC"},
    {"id", "id ASC"},
    {"-id", "id DESC"},
};

static void list_fail(rx_req *req, int rc, const char *what)
{
    rx_reply_json(req, 500,
                  json_pack("{s:s, s:s, s:i, s:s}", "code", "list_error", "what", what, "rc", rc,
                            "error", rx_strerror(rc)));
}

static void list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    rx_list *l = rx_list_new(req, "id, grp, name, tag", "datakit_list");
    struct {
        const char *q, *cond;
        bool is_int;
    } f[] = {
        {"grp", "grp = $?", true},
        {"name", "name = $?", false},
        {"q", "(strpos(lower(name), lower($?)) > 0 OR strpos(lower(tag), lower($?)) > 0)", false},
        {"min_id", "id >= $?", true},
        {"tagged", "tag IS NOT NULL", false},
    };
    int nf = (int)(sizeof(f) / sizeof(f[0]));
    bool rev = rx_req_query(req, "rev") != NULL;
    int grp_param = 0;
    for (int k = 0; k < nf; k++) {
        int i = rev ? nf - 1 - k : k;
        const char *v = rx_req_query(req, f[i].q);
        if (v == NULL)
            continue;
        rx_param p = strstr(f[i].cond, "$?") == NULL ? RX_NULL
                     : f[i].is_int                   ? RX_INT(strtoll(v, NULL, 10))
                                                     : RX_TEXT(v);
        int n = rx_list_where(l, f[i].cond, p);
        if (i == 0)
            grp_param = n;
    }
    const char *total = rx_req_query(req, "total");
    if (total != NULL && strcmp(total, "custom") == 0 && grp_param > 0)
        rx_list_total(l, rx_req_sprintf(req,
                                        "SELECT 1000 + count(*) FROM datakit_list"
                                        " WHERE grp = $%d",
                                        grp_param));
    rx_list_order(l, list_orderings, sizeof(list_orderings) / sizeof(list_orderings[0]), "id ASC");
    int rc = rx_list_run(l, rx_reply_rows_page, limit, offset);
    if (rc != 0)
        list_fail(req, rc, "run");
}

/* The builder's refusals, one ?case= each. The route, not the kernel, decides
 * the reply: 500 with the code rx_list_run returned (and what the calls before
 * it returned), or the page when the run was accepted. */
static void list_errors(rx_req *req)
{
    const char *c = rx_req_query(req, "case");
    c = c ? c : "";
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    json_t *calls = json_array();
    rx_list *l =
        rx_list_new(req, strcmp(c, "null_cols") == 0 ? NULL : "id, grp, name, tag", "datakit_list");
    if (strcmp(c, "null_cols") == 0) {
        json_array_append_new(calls, json_boolean(l == NULL));
        json_array_append_new(calls, json_integer(rx_list_where(l, "grp = $?", RX_INT(1))));
        rx_list_total(l, "SELECT 1");
        rx_list_order(l, list_orderings, 1, "id ASC");
    } else if (strcmp(c, "params") == 0 || strcmp(c, "params_over") == 0) {
        /* ?n= conditions "id <> $?" excluding ids 101, 102, ... (no such
         * rows) then "id <= 5": 14 take every slot LIMIT and OFFSET leave. */
        const char *ns = rx_req_query(req, "n");
        int n = ns ? atoi(ns) : 14;
        for (int i = 0; i < n; i++)
            json_array_append_new(calls,
                                  json_integer(rx_list_where(l, "id <> $?", RX_INT(101 + i))));
        json_array_append_new(calls, json_integer(rx_list_where(l, "id <= 5", RX_NULL)));
        rx_list_order(l, NULL, 0, "id ASC");
    } else if (strcmp(c, "conds") == 0) {
        /* ?n= conditions without a parameter */
        const char *ns = rx_req_query(req, "n");
        int n = ns ? atoi(ns) : 16;
        for (int i = 0; i < n; i++)
            json_array_append_new(
                calls,
                json_integer(rx_list_where(l, rx_req_sprintf(req, "id <> %d", 101 + i), RX_NULL)));
        rx_list_order(l, NULL, 0, "id ASC");
    } else if (strcmp(c, "empty_cond") == 0 || strcmp(c, "null_cond") == 0) {
        json_array_append_new(calls, json_integer(rx_list_where(
                                         l, strcmp(c, "null_cond") == 0 ? NULL : "", RX_INT(1))));
        /* a later good call does not clear the kept error */
        json_array_append_new(calls, json_integer(rx_list_where(l, "grp = $?", RX_INT(1))));
        rx_list_order(l, NULL, 0, "id ASC");
    } else if (strcmp(c, "empty_total") == 0) {
        rx_list_total(l, "");
        rx_list_order(l, NULL, 0, "id ASC");
    } else if (strcmp(c, "no_order") == 0) {
        /* rx_list_order never called */
    } else if (strcmp(c, "no_default") == 0) {
        rx_list_order(l, list_orderings, 1, NULL);
    } else if (strcmp(c, "null_cb") == 0) {
        rx_list_order(l, NULL, 0, "id ASC");
    } else if (strcmp(c, "run_null") == 0) {
        l = NULL;
    } else {
        json_decref(calls);
        rx_reply_error(req, 404, "not_found", "No such case.");
        return;
    }
    int rc = rx_list_run(l, strcmp(c, "null_cb") == 0 ? NULL : rx_reply_rows_page, limit, offset);
    if (rc != 0) {
        rx_reply_json(req, 500,
                      json_pack("{s:s, s:i, s:s, s:o}", "code", "list_error", "rc", rc, "error",
                                rx_strerror(rc), "calls", calls));
        return;
    }
    json_decref(calls);
}

static void echo_params(rx_req *req)
{
    json_t *j = json_pack("{s:i}", "k", 1);
    rx_db(req, on_rows,
          "SELECT $1::text AS t, $2::int8 AS i, $3::bool AS b, $4::jsonb AS j, $5::text AS n,"
          " $6::float8 AS f",
          RX_TEXT(rx_req_query(req, "t") ? rx_req_query(req, "t") : "x'; DROP TABLE y; --"),
          RX_INT(-5), RX_BOOL(true), RX_JSON(j), RX_NULL, RX_FLOAT(0.25));
    json_decref(j);
}

static void sleep_q(rx_req *req)
{
    const char *s = rx_req_query(req, "s");
    rx_db(req, on_rows, "SELECT pg_sleep($1::float8) IS NULL AS slept", RX_TEXT(s ? s : "1"));
}

static void item(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    rx_db(req, on_rows,
          "SELECT aid AS id, bid, abalance, filler FROM pgbench_accounts WHERE aid = $1",
          RX_INT(id));
}

static void on_tx(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        if (rx_rows_error(rows) == RX_EDB) {
            rx_reply_json(
                req, 409,
                json_pack("{s:s, s:s}", "code", "conflict", "sqlstate", rx_rows_sqlstate(rows)));
            return;
        }
        rx_reply_db_error(req, rows);
        return;
    }
    rx_reply_json(req, 200, rx_rows_array(rows));
}

/* Two inserts and a count in one transaction; ?fail=1 makes the second
 * insert violate the primary key so nothing of it may stay. */
static void tx(rx_req *req)
{
    const char *tag = rx_req_query(req, "tag");
    bool fail = rx_req_query(req, "fail") != NULL;
    if (tag == NULL) {
        rx_reply_invalid_field(req, "tag", "This field is required.");
        return;
    }
    rx_param p1[] = {RX_TEXT(tag)};
    rx_param p2[] = {RX_TEXT(fail ? tag : rx_req_sprintf(req, "%s-2", tag))};
    rx_stmt st[] = {
        {"CREATE TABLE IF NOT EXISTS datakit_tx (tag text PRIMARY KEY)", 0, NULL},
        {"INSERT INTO datakit_tx (tag) VALUES ($1)", 1, p1},
        {"INSERT INTO datakit_tx (tag) VALUES ($1)", 1, p2},
        {"SELECT count(*) AS n FROM datakit_tx WHERE tag LIKE $1 || '%'", 1, p1},
    };
    rx_db_tx(req, on_tx, 4, st);
}

/* The session settings of the pool connection that runs the query. */
static void settings(rx_req *req)
{
    rx_db_query(req, on_rows,
                "SELECT current_setting('plan_cache_mode') AS plan_cache_mode,"
                " current_setting('TimeZone') AS timezone",
                0, NULL);
}

static void bad_sql(rx_req *req)
{
    rx_db_query(req, on_rows, "SELECT * FROM no_such_table_here", 0, NULL);
}

static int init(rx_module *m)
{
    rx_route_opts pub = {.public_route = true};
    int rc = 0;
    rc |= rx_route(m, RX_GET, "/test/db/types/", types, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/types/page/", types_page, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/hard/", hard, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/hard/page/", hard_page, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/many/", many, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/many/page/", many_page, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/list/", list, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/list/errors/", list_errors, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/params/", echo_params, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/sleep/", sleep_q, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/item/{id}/", item, &pub);
    rc |= rx_route(m, RX_POST, "/test/db/tx/", tx, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/error/", bad_sql, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/settings/", settings, &pub);
    return rc == 0 ? 0 : -1;
}

RX_MODULE("datakit", "1.0.0", .init = init, .summary = "database routes for tests and benchmarks");
