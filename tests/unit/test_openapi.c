/*
 * test_openapi.c — kernel/openapi.c: the OpenAPI document built from a
 * registry assembled by hand (no module loading, no router), checked the way
 * Swagger UI and client generators read it: paths and methods, parameters,
 * security, x-permission, $refs into components, list shapes, and the errors
 * for schema text that is not JSON.
 */
#include "kn.h"

#include <setjmp.h> /* cmocka needs these before its header */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- the registry under test ------------------------------------------ */

static const rx_module_desc inventory_desc = {
    .abi_major = RX_ABI_MAJOR, .abi_minor = RX_ABI_MINOR, .size = sizeof(rx_module_desc),
    .name = "inventory", .version = "1.0.0", .summary = "Pharmacy stock"};
static const rx_module_desc auth_desc = {
    .abi_major = RX_ABI_MAJOR, .abi_minor = RX_ABI_MINOR, .size = sizeof(rx_module_desc),
    .name = "auth", .version = "1.0.0", .summary = "Accounts and tokens"};

static kn_module mod_inventory = {.desc = &inventory_desc};
static kn_module mod_auth = {.desc = &auth_desc};

#define ITEM_SCHEMA                                                                                \
    "{\"type\":\"object\",\"properties\":{\"sku\":{\"type\":\"string\",\"maxLength\":100}}}"
#define USER_SCHEMA "{\"type\":\"object\",\"properties\":{\"username\":{\"type\":\"string\"}}}"
#define LOGIN_SCHEMA "{\"type\":\"object\",\"properties\":{\"password\":{\"type\":\"string\"}}}"

static kn_route r_inv_list = {
    .methods = RX_GET, .path = "/api/inventory/", .module = &mod_inventory,
    .opts = {.perm = "inventory.manage", .list_style = RX_LIST_ARRAY,
             .response_schema = "[]InventoryItem", .summary = "List items"}};
static kn_route r_inv_create = {
    .methods = RX_POST, .path = "/api/inventory/", .module = &mod_inventory,
    .opts = {.perm = "inventory.manage", .request_schema = "InventoryItem",
             .response_schema = "InventoryItem", .success_status = 201}};
static kn_route r_inv_detail = {
    .methods = RX_GET | RX_HEAD | RX_PUT | RX_PATCH, .path = "/api/inventory/{id}/",
    .module = &mod_inventory, .nparams = 1, .param_names = {"id"},
    .opts = {.perm = "inventory.manage", .request_schema = "InventoryItem",
             .response_schema = "InventoryItem"}};
static kn_route r_inv_delete = {
    .methods = RX_DELETE, .path = "/api/inventory/{id}/", .module = &mod_inventory,
    .nparams = 1, .param_names = {"id"},
    .opts = {.perm = "inventory.manage", .response_schema = "InventoryItem",
             .success_status = 204}};
static kn_route r_bulk = {
    .methods = RX_POST, .path = "/api/inventory/bulk/", .module = &mod_inventory,
    .opts = {.perm = "inventory.manage", .request_schema = "[]InventoryItem",
             .auth = RX_AUTH_APIKEY}};
static kn_route r_login = {
    .methods = RX_POST, .path = "/api/auth/login/", .module = &mod_auth,
    .opts = {.public_route = true, .request_schema = LOGIN_SCHEMA, .response_schema = "User",
             .summary = "Log in", .description = "Exactly one of email/phone, plus password."}};
static kn_route r_me = {
    .methods = RX_GET, .path = "/api/auth/me/", .module = &mod_auth,
    .opts = {.perm = RX_PERM_AUTHENTICATED, .auth = RX_AUTH_BEARER, .response_schema = "User"}};
static kn_route r_admin_users = {
    .methods = RX_GET | RX_POST, .path = "/api/admin/users/", .module = &mod_auth,
    .opts = {.perm = "users.manage", .auth = RX_AUTH_BEARER, .list_style = RX_LIST_ENVELOPE,
             .tag = "admin", .request_schema = "User", .response_schema = "[]User"}};
static kn_route r_keys = {
    .methods = RX_DELETE, .path = "/api/pharmacies/{pharmacy_id}/api-keys/{key_name}/",
    .module = &mod_auth, .nparams = 2, .param_names = {"pharmacy_id", "key_name"},
    .opts = {.perm = "pharmacies.manage", .success_status = 204}};
static kn_route r_healthz = {
    .methods = RX_GET | RX_HEAD | RX_OPTIONS, .path = "/healthz", .module = NULL,
    .opts = {.public_route = true}};
/* Only HEAD and OPTIONS: nothing to document, so no path item at all. */
static kn_route r_head_only = {
    .methods = RX_HEAD | RX_OPTIONS, .path = "/head-only/", .module = NULL,
    .opts = {.public_route = true}};

static kn_module *modules[] = {&mod_auth, &mod_inventory};
static kn_route *routes[] = {&r_inv_list, &r_inv_create, &r_inv_detail, &r_inv_delete,
                             &r_bulk,     &r_login,      &r_me,         &r_admin_users,
                             &r_keys,     &r_healthz,    &r_head_only};
static kn_schema schemas[] = {
    {.name = "InventoryItem", .json = ITEM_SCHEMA, .module = &mod_inventory},
    {.name = "User", .json = USER_SCHEMA, .module = &mod_auth},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static kn_registry make_registry(void)
{
    kn_registry reg;
    memset(&reg, 0, sizeof reg);
    reg.modules.v = modules;
    reg.modules.n = reg.modules.cap = COUNT(modules);
    reg.routes.v = routes;
    reg.routes.n = reg.routes.cap = COUNT(routes);
    reg.schemas.v = schemas;
    reg.schemas.n = reg.schemas.cap = COUNT(schemas);
    return reg;
}

/* ---- helpers ----------------------------------------------------------- */

/* Build, check it is one compact line of JSON, parse it. */
static json_t *build(const kn_registry *reg)
{
    char err[256] = "untouched";
    char *text = kn_openapi_build(reg, err, sizeof err);
    if (!text)
        fail_msg("kn_openapi_build failed: %s", err);
    assert_null(strchr(text, '\n'));
    json_error_t je;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        fail_msg("output is not JSON: %s", je.text);
    free(text);
    return doc;
}

/* Walk objects by key and arrays by "#<index>"; NULL as soon as a step is missing. */
static json_t *at(json_t *j, ...)
{
    va_list ap;
    va_start(ap, j);
    for (const char *k = va_arg(ap, const char *); k && j; k = va_arg(ap, const char *))
        j = k[0] == '#' ? json_array_get(j, strtoul(k + 1, NULL, 10)) : json_object_get(j, k);
    va_end(ap);
    return j;
}
#define AT(...) at(__VA_ARGS__, (const char *)NULL)

static void assert_str(json_t *j, const char *want)
{
    if (!json_is_string(j))
        fail_msg("expected the string \"%s\", got %s", want, j ? "another type" : "nothing");
    assert_string_equal(json_string_value(j), want);
}

static void assert_json(json_t *got, const char *want_text)
{
    json_t *want = json_loads(want_text, JSON_DECODE_ANY, NULL);
    assert_non_null(want);
    if (!json_equal(got, want)) {
        char *g = got ? json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        print_error("got  %s\nwant %s\n", g ? g : "(nothing)", want_text);
        free(g);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

/* The error text of a build that must fail. */
static void assert_build_fails(const kn_registry *reg, const char *want_err)
{
    char err[256] = "";
    char *text = kn_openapi_build(reg, err, sizeof err);
    if (text) {
        free(text);
        fail_msg("build succeeded, expected: %s", want_err);
    }
    assert_string_equal(err, want_err);
}

/* ---- tests ------------------------------------------------------------- */

static void test_document_header(void **state)
{
    (void)state;
    kn_registry reg = make_registry();
    json_t *doc = build(&reg);
    assert_str(AT(doc, "openapi"), "3.1.0");
    assert_str(AT(doc, "info", "title"), "rxd");
    assert_str(AT(doc, "info", "version"), KN_VERSION);
    assert_json(AT(doc, "components", "securitySchemes", "bearerAuth", "type"), "\"http\"");
    assert_json(AT(doc, "components", "securitySchemes", "bearerAuth", "scheme"), "\"bearer\"");
    assert_json(AT(doc, "components", "securitySchemes", "bearerAuth", "bearerFormat"), "\"JWT\"");
    assert_json(AT(doc, "components", "securitySchemes", "apiKey", "type"), "\"apiKey\"");
    assert_json(AT(doc, "components", "securitySchemes", "apiKey", "in"), "\"header\"");
    assert_json(AT(doc, "components", "securitySchemes", "apiKey", "name"), "\"X-API-KEY\"");
    json_decref(doc);
}

static void test_paths_and_methods(void **state)
{
    (void)state;
    kn_registry reg = make_registry();
    json_t *doc = build(&reg);
    json_t *paths = AT(doc, "paths");
    assert_int_equal(json_object_size(paths), 8);
    assert_non_null(AT(paths, "/api/inventory/", "get"));
    assert_non_null(AT(paths, "/api/inventory/", "post"));
    assert_null(AT(paths, "/head-only/"));

    /* Two routes on one template merge into one path item; HEAD is implied
     * by GET and OPTIONS is the kernel's, so neither is an operation. */
    json_t *detail = AT(paths, "/api/inventory/{id}/");
    const char *want[] = {"delete", "get", "parameters", "patch", "put"};
    assert_int_equal(json_object_size(detail), COUNT(want));
    for (size_t i = 0; i < COUNT(want); i++)
        if (!json_object_get(detail, want[i]))
            fail_msg("/api/inventory/{id}/ lacks %s", want[i]);
    assert_int_equal(json_object_size(AT(paths, "/healthz")), 1);
    assert_non_null(AT(paths, "/healthz", "get"));
    json_decref(doc);
}

static void test_parameters(void **state)
{
    (void)state;
    kn_registry reg = make_registry();
    json_t *doc = build(&reg);
    assert_json(AT(doc, "paths", "/api/inventory/{id}/", "parameters"),
                "[{\"name\":\"id\",\"in\":\"path\",\"required\":true,"
                "\"schema\":{\"type\":\"integer\",\"format\":\"int64\",\"minimum\":1}}]");
    json_t *p = AT(doc, "paths", "/api/pharmacies/{pharmacy_id}/api-keys/{key_name}/", "parameters");
    assert_int_equal(json_array_size(p), 2);
    assert_str(AT(p, "#0", "name"), "pharmacy_id");
    assert_str(AT(p, "#0", "schema", "type"), "integer");
    assert_str(AT(p, "#1", "name"), "key_name");
    assert_str(AT(p, "#1", "in"), "path");
    assert_json(AT(p, "#1", "required"), "true");
    assert_str(AT(p, "#1", "schema", "type"), "string");
    /* No captures, no path parameters. */
    assert_null(AT(doc, "paths", "/api/auth/me/", "parameters"));
    assert_null(AT(doc, "paths", "/api/auth/me/", "get", "parameters"));
    json_decref(doc);
}

static void test_security_and_permission(void **state)
{
    (void)state;
    kn_registry reg = make_registry();
    json_t *doc = build(&reg);
    json_t *paths = AT(doc, "paths");
    /* Public: an explicit empty list, not a missing key (which would inherit). */
    assert_json(AT(paths, "/api/auth/login/", "post", "security"), "[]");
    assert_json(AT(paths, "/healthz", "get", "security"), "[]");
    assert_null(AT(paths, "/api/auth/login/", "post", "x-permission"));
    assert_null(AT(paths, "/healthz", "get", "x-permission"));
    /* auth 0: either credential. */
    assert_json(AT(paths, "/api/inventory/", "get", "security"),
                "[{\"bearerAuth\":[]},{\"apiKey\":[]}]");
    assert_json(AT(paths, "/api/auth/me/", "get", "security"), "[{\"bearerAuth\":[]}]");
    assert_json(AT(paths, "/api/inventory/bulk/", "post", "security"), "[{\"apiKey\":[]}]");
    assert_str(AT(paths, "/api/inventory/", "get", "x-permission"), "inventory.manage");
    assert_str(AT(paths, "/api/auth/me/", "get", "x-permission"), RX_PERM_AUTHENTICATED);
    assert_str(AT(paths, "/api/admin/users/", "post", "x-permission"), "users.manage");
    json_decref(doc);
}

static void test_refs_and_bodies(void **state)
{
    (void)state;
    kn_registry reg = make_registry();
    json_t *doc = build(&reg);
    json_t *paths = AT(doc, "paths");
    json_t *create = AT(paths, "/api/inventory/", "post");
    assert_json(AT(create, "requestBody", "content", "application/json", "schema"),
                "{\"$ref\":\"#/components/schemas/InventoryItem\"}");
    assert_json(AT(create, "requestBody", "required"), "true");
    assert_null(AT(create, "responses", "200"));
    assert_json(AT(create, "responses", "201", "content", "application/json", "schema"),
                "{\"$ref\":\"#/components/schemas/InventoryItem\"}");
    /* Every $ref'd component is there, parsed (not a string). */
    assert_json(AT(doc, "components", "schemas", "InventoryItem"), ITEM_SCHEMA);
    assert_json(AT(doc, "components", "schemas", "User"), USER_SCHEMA);
    assert_str(AT(doc, "components", "schemas", "Error", "properties", "detail", "type"), "string");
    assert_str(AT(doc, "components", "schemas", "Error", "properties", "code", "type"), "string");
    assert_non_null(AT(doc, "components", "schemas", "ValidationError"));

    /* Inline JSON Schema text is embedded as is. */
    json_t *login = AT(paths, "/api/auth/login/", "post");
    assert_json(AT(login, "requestBody", "content", "application/json", "schema"), LOGIN_SCHEMA);
    assert_str(AT(login, "summary"), "Log in");
    assert_str(AT(login, "description"), "Exactly one of email/phone, plus password.");

    /* GET carries no body even when the route's opts name one. */
    assert_null(AT(paths, "/api/inventory/{id}/", "get", "requestBody"));
    assert_non_null(AT(paths, "/api/inventory/{id}/", "patch", "requestBody"));
    /* A "[]X" request body is an array of X. */
    assert_json(AT(paths, "/api/inventory/bulk/", "post", "requestBody", "content",
                   "application/json", "schema"),
                "{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/InventoryItem\"}}");
    /* 204 has no content even with a response_schema; no schema, no content. */
    json_t *del = AT(paths, "/api/inventory/{id}/", "delete", "responses", "204");
    assert_non_null(AT(del, "description"));
    assert_null(AT(del, "content"));
    assert_non_null(AT(paths, "/healthz", "get", "responses", "200", "description"));
    assert_null(AT(paths, "/healthz", "get", "responses", "200", "content"));
    json_decref(doc);
}

static void test_list_shapes(void **state)
{
    (void)state;
    kn_registry reg = make_registry();
    json_t *doc = build(&reg);
    json_t *paths = AT(doc, "paths");

    json_t *arr = AT(paths, "/api/inventory/", "get");
    assert_json(AT(arr, "responses", "200", "content", "application/json", "schema"),
                "{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/InventoryItem\"}}");
    assert_str(AT(arr, "parameters", "#0", "name"), "page");
    assert_str(AT(arr, "parameters", "#0", "in"), "query");
    assert_str(AT(arr, "parameters", "#1", "name"), "page_size");
    assert_json(AT(arr, "parameters", "#1", "schema", "default"), "100");
    assert_json(AT(arr, "parameters", "#1", "schema", "maximum"), "1000");
    assert_non_null(AT(arr, "responses", "200", "headers", "X-Total-Count"));
    assert_non_null(AT(arr, "responses", "200", "headers", "Link"));

    json_t *env = AT(paths, "/api/admin/users/", "get");
    json_t *schema = AT(env, "responses", "200", "content", "application/json", "schema");
    assert_str(AT(schema, "type"), "object");
    assert_json(AT(schema, "required"), "[\"count\",\"next\",\"previous\",\"results\"]");
    assert_str(AT(schema, "properties", "count", "type"), "integer");
    assert_json(AT(schema, "properties", "next", "type"), "[\"string\",\"null\"]");
    assert_json(AT(schema, "properties", "previous", "type"), "[\"string\",\"null\"]");
    assert_json(AT(schema, "properties", "results"),
                "{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/User\"}}");
    assert_json(AT(env, "parameters", "#1", "schema", "default"), "20");
    assert_str(AT(env, "tags", "#0"), "admin");

    /* The same route's POST answers one item, not a page. */
    json_t *post = AT(paths, "/api/admin/users/", "post");
    assert_json(AT(post, "responses", "200", "content", "application/json", "schema"),
                "{\"$ref\":\"#/components/schemas/User\"}");
    assert_null(AT(post, "parameters"));
    json_decref(doc);
}

static void test_error_responses(void **state)
{
    (void)state;
    kn_registry reg = make_registry();
    json_t *doc = build(&reg);
    json_t *paths = AT(doc, "paths");
    json_t *detail_get = AT(paths, "/api/inventory/{id}/", "get", "responses");
    assert_json(AT(detail_get, "401"), "{\"$ref\":\"#/components/responses/Unauthorized\"}");
    assert_json(AT(detail_get, "403"), "{\"$ref\":\"#/components/responses/Forbidden\"}");
    assert_json(AT(detail_get, "404"), "{\"$ref\":\"#/components/responses/NotFound\"}");
    assert_null(AT(detail_get, "400")); /* no body */
    assert_json(AT(AT(paths, "/api/inventory/{id}/", "put", "responses"), "400"),
                "{\"$ref\":\"#/components/responses/BadRequest\"}");

    json_t *login = AT(paths, "/api/auth/login/", "post", "responses");
    assert_null(AT(login, "401"));
    assert_null(AT(login, "403"));
    assert_null(AT(login, "404"));
    assert_non_null(AT(login, "400"));
    assert_non_null(AT(login, "429"));
    assert_non_null(AT(login, "503"));
    json_t *me = AT(paths, "/api/auth/me/", "get", "responses");
    assert_null(AT(me, "404")); /* no capture, not a list */
    assert_non_null(AT(AT(paths, "/api/inventory/", "get", "responses"), "404")); /* page past end */

    /* The references resolve, to DRF-shaped bodies. */
    json_t *comp = AT(doc, "components", "responses");
    assert_json(AT(comp, "BadRequest", "content", "application/json", "schema"),
                "{\"$ref\":\"#/components/schemas/ValidationError\"}");
    const char *generic[] = {"Unauthorized", "Forbidden", "NotFound", "TooManyRequests",
                             "ServiceUnavailable"};
    for (size_t i = 0; i < COUNT(generic); i++) {
        assert_non_null(AT(comp, generic[i], "description"));
        assert_json(AT(comp, generic[i], "content", "application/json", "schema"),
                    "{\"$ref\":\"#/components/schemas/Error\"}");
    }
    assert_non_null(AT(comp, "TooManyRequests", "headers", "Retry-After"));
    assert_non_null(AT(comp, "ServiceUnavailable", "headers", "Retry-After"));
    assert_non_null(AT(comp, "Unauthorized", "headers", "WWW-Authenticate"));
    json_decref(doc);
}

static void test_operation_ids_and_tags(void **state)
{
    (void)state;
    /* "/x-y/" and "/x_y/" sanitise to the same id: the second gets a suffix. */
    kn_route a = {.methods = RX_GET, .path = "/x-y/", .opts = {.public_route = true}};
    kn_route b = {.methods = RX_GET, .path = "/x_y/", .opts = {.public_route = true}};
    kn_route *extra[COUNT(routes) + 2];
    memcpy(extra, routes, sizeof routes);
    extra[COUNT(routes)] = &a;
    extra[COUNT(routes) + 1] = &b;
    kn_registry reg = make_registry();
    reg.routes.v = extra;
    reg.routes.n = reg.routes.cap = COUNT(extra);
    json_t *doc = build(&reg);
    json_t *paths = AT(doc, "paths");

    assert_str(AT(paths, "/api/inventory/{id}/", "get", "operationId"),
               "inventory_get_api_inventory_id");
    assert_str(AT(paths, "/healthz", "get", "operationId"), "kernel_get_healthz");
    assert_str(AT(paths, "/x-y/", "get", "operationId"), "kernel_get_x_y");
    assert_str(AT(paths, "/x_y/", "get", "operationId"), "kernel_get_x_y_2");

    json_t *seen = json_object();
    size_t ops = 0;
    const char *path, *method;
    json_t *item, *op;
    json_object_foreach(paths, path, item)
    {
        json_object_foreach(item, method, op)
        {
            if (strcmp(method, "parameters") == 0)
                continue;
            const char *id = json_string_value(json_object_get(op, "operationId"));
            if (!id)
                fail_msg("%s %s has no operationId", method, path);
            if (json_object_get(seen, id))
                fail_msg("operationId %s used twice", id);
            json_object_set_new(seen, id, json_true());
            ops++;
        }
    }
    assert_int_equal(ops, 15);
    json_decref(seen);

    /* Tags: opts.tag, else the module name, else "kernel"; the list is
     * sorted and describes module tags with the module summary. */
    assert_json(AT(paths, "/api/inventory/", "get", "tags"), "[\"inventory\"]");
    assert_json(AT(paths, "/api/auth/me/", "get", "tags"), "[\"auth\"]");
    assert_json(AT(paths, "/healthz", "get", "tags"), "[\"kernel\"]");
    assert_json(AT(doc, "tags"), "[{\"name\":\"admin\"},"
                                 "{\"name\":\"auth\",\"description\":\"Accounts and tokens\"},"
                                 "{\"name\":\"inventory\",\"description\":\"Pharmacy stock\"},"
                                 "{\"name\":\"kernel\"}]");
    json_decref(doc);
}

static void test_deterministic_sorted_output(void **state)
{
    (void)state;
    kn_registry reg = make_registry();
    char err[64];
    char *one = kn_openapi_build(&reg, err, sizeof err);
    char *two = kn_openapi_build(&reg, err, sizeof err);
    assert_non_null(one);
    assert_non_null(two);
    assert_string_equal(one, two);
    /* Sorted keys: "components" is the first top-level key, compact separators. */
    assert_memory_equal(one, "{\"components\":{", 15);
    assert_null(strstr(one, "\": "));
    free(one);
    free(two);
}

static void test_empty_registry(void **state)
{
    (void)state;
    kn_registry reg;
    memset(&reg, 0, sizeof reg);
    json_t *doc = build(&reg);
    assert_json(AT(doc, "paths"), "{}");
    assert_json(AT(doc, "tags"), "[]");
    assert_int_equal(json_object_size(AT(doc, "components", "schemas")), 2);
    assert_non_null(AT(doc, "components", "schemas", "Error"));
    assert_non_null(AT(doc, "components", "schemas", "ValidationError"));
    json_decref(doc);
}

static void test_invalid_request_schema(void **state)
{
    (void)state;
    kn_route bad = {.methods = RX_GET | RX_PATCH, .path = "/api/bad/{id}/", .nparams = 1,
                    .param_names = {"id"},
                    .opts = {.perm = "x", .request_schema = "{\"type\": \"object\""}};
    kn_route *rs[] = {&r_inv_list, &bad};
    kn_registry reg = make_registry();
    reg.routes.v = rs;
    reg.routes.n = reg.routes.cap = COUNT(rs);
    assert_build_fails(&reg, "route PATCH /api/bad/{id}/: request_schema is not valid JSON");

    /* A name that is not registered reads as (bad) JSON; the error says which name. */
    bad.opts.request_schema = "InventoryItm";
    assert_build_fails(&reg, "route PATCH /api/bad/{id}/: request_schema is not valid JSON "
                             "(no schema named \"InventoryItm\" is registered)");
    /* Valid JSON that cannot be a schema. */
    bad.opts.request_schema = "42";
    assert_build_fails(&reg, "route PATCH /api/bad/{id}/: request_schema is not a JSON Schema "
                             "(an object or a boolean)");
}

static void test_invalid_response_schema(void **state)
{
    (void)state;
    kn_route bad = {.methods = RX_GET, .path = "/api/bad/",
                    .opts = {.public_route = true, .response_schema = "[]{nope"}};
    kn_route *rs[] = {&bad};
    kn_registry reg = make_registry();
    reg.routes.v = rs;
    reg.routes.n = reg.routes.cap = COUNT(rs);
    assert_build_fails(&reg, "route GET /api/bad/: response_schema is not valid JSON");
    /* With no err buffer the build still fails, without writing anywhere. */
    assert_null(kn_openapi_build(&reg, NULL, 0));
}

static void test_invalid_component_schema(void **state)
{
    (void)state;
    kn_schema bad[] = {
        {.name = "InventoryItem", .json = ITEM_SCHEMA, .module = &mod_inventory},
        {.name = "Broken", .json = "{\"type\":", .module = &mod_auth},
    };
    kn_registry reg = make_registry();
    reg.routes.n = 0;
    reg.schemas.v = bad;
    reg.schemas.n = reg.schemas.cap = COUNT(bad);
    assert_build_fails(&reg, "module auth: schema Broken is not valid JSON");

    /* The built-in names cannot be taken: a $ref to them would be ambiguous. */
    bad[1].name = "Error";
    bad[1].json = USER_SCHEMA;
    assert_build_fails(&reg, "module auth: schema Error is defined twice");

    bad[1].name = "has space";
    assert_build_fails(&reg, "module auth: schema \"has space\": a name is [A-Za-z0-9._-]+");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document_header),
        cmocka_unit_test(test_paths_and_methods),
        cmocka_unit_test(test_parameters),
        cmocka_unit_test(test_security_and_permission),
        cmocka_unit_test(test_refs_and_bodies),
        cmocka_unit_test(test_list_shapes),
        cmocka_unit_test(test_error_responses),
        cmocka_unit_test(test_operation_ids_and_tags),
        cmocka_unit_test(test_deterministic_sorted_output),
        cmocka_unit_test(test_empty_registry),
        cmocka_unit_test(test_invalid_request_schema),
        cmocka_unit_test(test_invalid_response_schema),
        cmocka_unit_test(test_invalid_component_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
