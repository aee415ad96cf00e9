/*
 * datakit.c — a module used only by the end-to-end tests and benchmarks of
 * the PostgreSQL layer: type conversions, slow queries (timeouts, pool
 * exhaustion), transactions, SQL errors, and a primary-key read.
 */
#include <rx.h>

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

static void types(rx_req *req)
{
    rx_db_query(req, on_rows,
                "SELECT 'text'::text AS t, 42::int4 AS i4, 9007199254740993::int8 AS i8,"
                " 7::int2 AS i2, 12.5::numeric(10,2) AS money, true AS yes, false AS no,"
                " '{\"a\":[1,2]}'::jsonb AS jb, '[1,\"x\"]'::json AS js,"
                " '2026-11-22 10:00:00+06'::timestamptz AS ts,"
                " '2026-11-22 10:00:00.123456+00'::timestamptz AS ts_frac,"
                " 1.5::float8 AS f8, NULL::text AS nothing, NULL::int AS nothing_int,"
                " 'it''s'::varchar AS quoted, '2026-01-31'::date AS d",
                0, NULL);
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
    rx_db(req, on_rows, "SELECT aid AS id, bid, abalance, filler FROM pgbench_accounts WHERE aid = $1",
          RX_INT(id));
}

static void on_tx(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        if (rx_rows_error(rows) == RX_EDB) {
            rx_reply_json(req, 409, json_pack("{s:s, s:s}", "code", "conflict", "sqlstate",
                                              rx_rows_sqlstate(rows)));
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

static void bad_sql(rx_req *req)
{
    rx_db_query(req, on_rows, "SELECT * FROM no_such_table_here", 0, NULL);
}

static int init(rx_module *m)
{
    rx_route_opts pub = {.public_route = true};
    int rc = 0;
    rc |= rx_route(m, RX_GET, "/test/db/types/", types, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/params/", echo_params, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/sleep/", sleep_q, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/item/{id}/", item, &pub);
    rc |= rx_route(m, RX_POST, "/test/db/tx/", tx, &pub);
    rc |= rx_route(m, RX_GET, "/test/db/error/", bad_sql, &pub);
    return rc == 0 ? 0 : -1;
}

RX_MODULE("datakit", "1.0.0", .init = init, .summary = "database routes for tests and benchmarks");
