/*
 * openapi.c — the OpenAPI 3.1 document of every registered route, served at
 * /api/schema/ (Swagger UI and Redoc read it) and printed by `rxd openapi`.
 *
 * The document is derived from the registry alone (routes, their opts, the
 * rx_schema() components), so it always describes what this process actually
 * serves with the modules it loaded. It is emitted as compact JSON with sorted
 * keys: the same registry always gives the same bytes, so the reply can be
 * cached and two builds can be diffed.
 *
 * Schema strings in rx_route_opts (request_schema / response_schema):
 *   "Name"   the name of a component registered with rx_schema()
 *            -> {"$ref": "#/components/schemas/Name"};
 *   "{...}"  anything else is inline JSON Schema text, embedded as is;
 *   "[]X"    a list of X, where X is either of the above. On a response this
 *            documents a paged list in the route's list_style (RX_LIST_ARRAY:
 *            a bare array; RX_LIST_ENVELOPE: {count, next, previous, results})
 *            plus ?page= / ?page_size= and the X-Total-Count / Link headers. A
 *            route answering several methods shares one opts, so the list shape
 *            applies to its GET only; its other methods answer one X (a list
 *            route that also takes POST creates one item). On a request body
 *            "[]X" is a plain JSON array of X (e.g. bulk upserts).
 */
#include "kn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_PREFIX "[]"
#define SCHEMA_REF "#/components/schemas/"

/* The methods that get an operation. HEAD is implied by GET and OPTIONS is the
 * kernel's own (CORS / Allow), so neither is documented. */
static const struct {
    unsigned bit;
    const char *key;  /* OpenAPI path item field */
    const char *name; /* for error messages and operationIds */
} methods[] = {
    {RX_GET, "get", "GET"},       {RX_POST, "post", "POST"},
    {RX_PUT, "put", "PUT"},       {RX_PATCH, "patch", "PATCH"},
    {RX_DELETE, "delete", "DELETE"},
};

typedef struct ctx {
    const kn_registry *reg;
    json_t *op_ids; /* operationIds handed out (used as a set) */
    json_t *tags;   /* tag name -> description (or null) for the top-level list */
    char *err;
    size_t errlen;
    bool failed; /* err was written */
    bool oom;    /* some jansson allocation failed; reported once at the end */
} ctx;

static void fail(ctx *c, const char *fmt, ...) RX_PRINTF(2, 3);

static void fail(ctx *c, const char *fmt, ...)
{
    /* Keep the first error: later ones are usually consequences of it. */
    if (c->failed)
        return;
    c->failed = true;
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
}

/* Setters that remember allocation failures instead of checking every call:
 * a NULL value (a failed json_* constructor upstream) counts as one too. */
static void put(ctx *c, json_t *obj, const char *key, json_t *val)
{
    if (!obj) {
        json_decref(val);
        c->oom = true;
    } else if (json_object_set_new(obj, key, val) != 0) { /* steals val, NULL included */
        c->oom = true;
    }
}

static void append(ctx *c, json_t *arr, json_t *val)
{
    if (!arr) {
        json_decref(val);
        c->oom = true;
    } else if (json_array_append_new(arr, val) != 0) {
        c->oom = true;
    }
}

static const char *module_name(const kn_module *m)
{
    return m && m->desc && m->desc->name ? m->desc->name : "kernel";
}

static const kn_schema *find_schema(const kn_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->schemas.n; i++)
        if (reg->schemas.v[i].name && strcmp(reg->schemas.v[i].name, name) == 0)
            return &reg->schemas.v[i];
    return NULL;
}

static json_t *ref(const char *component)
{
    return json_pack("{s:s+}", "$ref", SCHEMA_REF, component);
}

/* Component names end up in "$ref" URIs, where OpenAPI allows only these. */
static bool valid_component_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-' || *s == '_'))
            return false;
    return true;
}

/* Parse JSON Schema text. JSON Schema 2020-12 (the dialect of OpenAPI 3.1)
 * allows booleans as schemas, so true/false are accepted besides objects.
 * Returns NULL with *why set ("is not valid JSON", ...). */
static const char NOT_JSON[] = "is not valid JSON";

static json_t *parse_schema(const char *text, const char **why)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        *why = NOT_JSON;
        return NULL;
    }
    if (!json_is_object(j) && !json_is_boolean(j)) {
        json_decref(j);
        *why = "is not a JSON Schema (an object or a boolean)";
        return NULL;
    }
    return j;
}

/* A schema string of a route (see the top of the file) as a JSON Schema, with
 * any "[]" prefix stripped and reported in *list. `field` is the opts field
 * name, for the error. Returns NULL after fail() or on allocation failure. */
static json_t *route_schema(ctx *c, const kn_route *r, const char *method, const char *field,
                            const char *text, bool *list)
{
    *list = strncmp(text, LIST_PREFIX, strlen(LIST_PREFIX)) == 0;
    if (*list)
        text += strlen(LIST_PREFIX);
    if (find_schema(c->reg, text))
        return ref(text);
    const char *why = NULL;
    json_t *j = parse_schema(text, &why);
    if (!j) {
        /* The common mistake is a misspelt component name: say so. */
        if (why == NOT_JSON && valid_component_name(text))
            fail(c, "route %s %s: %s %s (no schema named \"%s\" is registered)", method, r->path,
                 field, why, text);
        else
            fail(c, "route %s %s: %s %s", method, r->path, field, why);
    }
    return j;
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    default: return "Success";
    }
}

/* "inventory_get_api_inventory_id": readable in generated clients, unique
 * across modules because the module name leads. Anything but [A-Za-z0-9]
 * becomes one '_', so distinct paths can collide ("/a-b/" vs "/a_b/"): a
 * counter suffix keeps the ids unique, in registration order. */
static json_t *operation_id(ctx *c, const kn_route *r, const char *method_key)
{
    size_t cap = strlen(module_name(r->module)) + strlen(method_key) + strlen(r->path) + 24;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    size_t n = (size_t)snprintf(buf, cap, "%s_%s_%s", module_name(r->module), method_key, r->path);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = buf[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (alnum)
            buf[w++] = ch;
        else if (w > 0 && buf[w - 1] != '_')
            buf[w++] = '_';
    }
    while (w > 0 && buf[w - 1] == '_')
        w--;
    buf[w] = '\0';
    for (int k = 2; json_object_get(c->op_ids, buf); k++)
        snprintf(buf + w, cap - w, "_%d", k);
    put(c, c->op_ids, buf, json_true());
    json_t *s = json_string(buf);
    free(buf);
    return s;
}

/* Path captures: ids are integers everywhere in the API (API.md "Ids are
 * integers"), by the naming convention "id" / "<thing>_id"; the rest are strings. */
static json_t *path_parameter(const char *name)
{
    size_t len = strlen(name);
    bool is_id = strcmp(name, "id") == 0 || (len > 3 && strcmp(name + len - 3, "_id") == 0);
    json_t *schema = is_id ? json_pack("{s:s, s:s, s:i}", "type", "integer", "format", "int64",
                                       "minimum", 1)
                           : json_pack("{s:s}", "type", "string");
    return json_pack("{s:s, s:s, s:b, s:o}", "name", name, "in", "path", "required", 1, "schema",
                     schema);
}

static json_t *query_parameter(const char *name, const char *description, json_int_t def,
                               json_int_t max)
{
    json_t *schema = json_pack("{s:s, s:i, s:I}", "type", "integer", "minimum", 1, "default", def);
    if (schema && max > 0 && json_object_set_new(schema, "maximum", json_integer(max)) != 0) {
        json_decref(schema);
        schema = NULL;
    }
    return json_pack("{s:s, s:s, s:b, s:s, s:o}", "name", name, "in", "query", "required", 0,
                     "description", description, "schema", schema);
}

static json_t *error_ref(const char *name)
{
    return json_pack("{s:s+}", "$ref", "#/components/responses/", name);
}

/* The body of a list reply in the route's style (API.md "Lists"). */
static json_t *list_schema(const kn_route *r, json_t *item)
{
    if (r->opts.list_style == RX_LIST_ARRAY)
        return json_pack("{s:s, s:o}", "type", "array", "items", item);
    return json_pack("{s:s, s:[ssss], s:{s:{s:s, s:i}, s:{s:[ss], s:s}, s:{s:[ss], s:s}, "
                     "s:{s:s, s:o}}}",
                     "type", "object", "required", "count", "next", "previous", "results",
                     "properties",
                     "count", "type", "integer", "minimum", 0,
                     "next", "type", "string", "null", "format", "uri",
                     "previous", "type", "string", "null", "format", "uri",
                     "results", "type", "array", "items", item);
}

/* Headers every list reply carries, documented once per list operation. */
static json_t *list_headers(void)
{
    return json_pack("{s:{s:s, s:{s:s}}, s:{s:s, s:{s:s}}}",
                     "X-Total-Count", "description", "Number of matching items, all pages",
                     "schema", "type", "integer",
                     "Link", "description", "RFC 8288 links, rel=\"next\" and rel=\"prev\"",
                     "schema", "type", "string");
}

static json_t *json_content(json_t *schema)
{
    return json_pack("{s:{s:o}}", "application/json", "schema", schema);
}

/* One operation of route r for method m; NULL after fail() or on OOM. */
static json_t *operation(ctx *c, const kn_route *r, size_t m)
{
    const rx_route_opts *o = &r->opts;
    const char *mname = methods[m].name;
    bool is_get = methods[m].bit == RX_GET;
    bool has_body_method = methods[m].bit & (RX_POST | RX_PUT | RX_PATCH);
    json_t *op = json_object();
    if (!op)
        return NULL;

    put(c, op, "operationId", operation_id(c, r, methods[m].key));
    if (o->summary)
        put(c, op, "summary", json_string(o->summary));
    if (o->description)
        put(c, op, "description", json_string(o->description));
    const char *tag = o->tag ? o->tag : module_name(r->module);
    put(c, op, "tags", json_pack("[s]", tag));
    if (!json_object_get(c->tags, tag))
        put(c, c->tags, tag, json_null());

    /* Access: an empty list is how OpenAPI says "no credentials needed";
     * several entries are alternatives (either credential kind will do). */
    bool protected_route = !o->public_route;
    json_t *security = json_array();
    if (protected_route) {
        /* 0 means every kind; unknown bits alone must not read as "public". */
        unsigned kinds = o->auth & (RX_AUTH_BEARER | RX_AUTH_APIKEY);
        if (!kinds)
            kinds = RX_AUTH_BEARER | RX_AUTH_APIKEY;
        if (kinds & RX_AUTH_BEARER)
            append(c, security, json_pack("{s:[]}", "bearerAuth"));
        if (kinds & RX_AUTH_APIKEY)
            append(c, security, json_pack("{s:[]}", "apiKey"));
        if (o->perm)
            put(c, op, "x-permission", json_string(o->perm));
    }
    put(c, op, "security", security);

    bool list = false;
    json_t *resp_schema = NULL;
    if (o->response_schema) {
        resp_schema = route_schema(c, r, mname, "response_schema", o->response_schema, &list);
        if (!resp_schema)
            goto fail;
    }
    bool paged = list && is_get;

    if (paged) {
        bool array = o->list_style == RX_LIST_ARRAY;
        json_t *params = json_array();
        append(c, params, query_parameter("page", "Page number, from 1", 1, 0));
        append(c, params, query_parameter("page_size", "Items per page (at most 1000)",
                                          array ? 100 : 20, 1000));
        put(c, op, "parameters", params);
    }

    bool body = false;
    if (has_body_method && o->request_schema) {
        bool req_list = false;
        json_t *rs = route_schema(c, r, mname, "request_schema", o->request_schema, &req_list);
        if (!rs) {
            json_decref(resp_schema);
            goto fail;
        }
        if (req_list)
            rs = json_pack("{s:s, s:o}", "type", "array", "items", rs);
        put(c, op, "requestBody", json_pack("{s:b, s:o}", "required", 1, "content",
                                            json_content(rs)));
        body = true;
    }

    json_t *responses = json_object();
    int status = o->success_status ? o->success_status : 200;
    char code[16];
    snprintf(code, sizeof code, "%d", status);
    json_t *ok = json_pack("{s:s}", "description", reason(status));
    if (status == 204 || !resp_schema) {
        /* 204 has no body by definition (RFC 9110), whatever was declared. */
        json_decref(resp_schema);
    } else if (paged) {
        put(c, ok, "content", json_content(list_schema(r, resp_schema)));
        put(c, ok, "headers", list_headers());
    } else {
        put(c, ok, "content", json_content(resp_schema));
    }
    put(c, responses, code, ok);

    if (body)
        put(c, responses, "400", error_ref("BadRequest"));
    if (protected_route) {
        put(c, responses, "401", error_ref("Unauthorized"));
        put(c, responses, "403", error_ref("Forbidden"));
    }
    /* A capture names a row that may not exist; a page past the end is 404 too. */
    if (r->nparams > 0 || paged)
        put(c, responses, "404", error_ref("NotFound"));
    put(c, responses, "429", error_ref("TooManyRequests"));
    put(c, responses, "503", error_ref("ServiceUnavailable"));
    put(c, op, "responses", responses);
    return op;

fail:
    json_decref(op);
    return NULL;
}

static json_t *error_schema(void)
{
    return json_pack("{s:s, s:s, s:[ss], s:{s:{s:s}, s:{s:s}}}",
                     "type", "object",
                     "description", "General error, as Django REST Framework writes it",
                     "required", "detail", "code",
                     "properties", "detail", "type", "string", "code", "type", "string");
}

static json_t *validation_error_schema(void)
{
    /* {"field": ["message", ...], "code": "invalid"}; nested objects appear for
     * list bodies ({"items": {"3": {"price": [...]}}}), hence the object case. */
    return json_pack("{s:s, s:s, s:[s], s:{s:{s:s, s:s}, s:{s:s, s:{s:s}}}, "
                     "s:{s:[ss], s:{s:s}}}",
                     "type", "object",
                     "description", "Validation error: messages by field name "
                                    "(non_field_errors for the others)",
                     "required", "code",
                     "properties",
                     "code", "type", "string", "const", "invalid",
                     "non_field_errors", "type", "array", "items", "type", "string",
                     "additionalProperties", "type", "array", "object", "items", "type",
                     "string");
}

static json_t *header(const char *description, const char *type)
{
    return json_pack("{s:s, s:{s:s}}", "description", description, "schema", "type", type);
}

static json_t *error_response(ctx *c, const char *description, const char *schema,
                              bool retry_after, bool www_authenticate)
{
    json_t *r = json_pack("{s:s, s:o}", "description", description, "content",
                          json_content(ref(schema)));
    if (retry_after || www_authenticate) {
        json_t *headers = json_object();
        if (retry_after)
            put(c, headers, "Retry-After", header("Seconds to wait before retrying", "integer"));
        if (www_authenticate)
            put(c, headers, "WWW-Authenticate",
                header("Bearer realm=\"api\" (ApiKey where only a key is accepted)", "string"));
        put(c, r, "headers", headers);
    }
    return r;
}

static json_t *components(ctx *c)
{
    json_t *schemas = json_object();
    put(c, schemas, "Error", error_schema());
    put(c, schemas, "ValidationError", validation_error_schema());
    for (size_t i = 0; i < c->reg->schemas.n && !c->failed; i++) {
        const kn_schema *s = &c->reg->schemas.v[i];
        const char *mod = module_name(s->module);
        if (!valid_component_name(s->name)) {
            fail(c, "module %s: schema \"%s\": a name is [A-Za-z0-9._-]+", mod,
                 s->name ? s->name : "");
            break;
        }
        if (json_object_get(schemas, s->name)) {
            /* Built-in names, or two modules defining the same one: either way a
             * $ref could not say which is meant. */
            fail(c, "module %s: schema %s is defined twice", mod, s->name);
            break;
        }
        const char *why = NULL;
        json_t *j = parse_schema(s->json ? s->json : "", &why);
        if (!j) {
            fail(c, "module %s: schema %s %s", mod, s->name, why);
            break;
        }
        put(c, schemas, s->name, j);
    }

    json_t *responses = json_object();
    put(c, responses, "BadRequest",
        json_pack("{s:s, s:o}", "description", "Invalid body (or malformed JSON)", "content",
                  json_content(ref("ValidationError"))));
    put(c, responses, "Unauthorized",
        error_response(c, "No credentials, or credentials that failed to verify", "Error", false,
                       true));
    put(c, responses, "Forbidden", error_response(c, "Not allowed", "Error", false, false));
    put(c, responses, "NotFound", error_response(c, "No such object or page", "Error", false, false));
    put(c, responses, "TooManyRequests", error_response(c, "Rate limited", "Error", true, false));
    put(c, responses, "ServiceUnavailable",
        error_response(c, "A dependency (database, Redis) is down", "Error", true, false));

    json_t *security = json_pack(
        "{s:{s:s, s:s, s:s, s:s}, s:{s:s, s:s, s:s, s:s}}",
        "bearerAuth", "type", "http", "scheme", "bearer", "bearerFormat", "JWT", "description",
        "Access token from /api/auth/login/ (people)",
        "apiKey", "type", "apiKey", "in", "header", "name", "X-API-KEY", "description",
        "A pharmacy's API key (pharmacy systems)");

    json_t *comp = json_object();
    put(c, comp, "schemas", schemas);
    put(c, comp, "responses", responses);
    put(c, comp, "securitySchemes", security);
    return comp;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Top-level tags: every tag an operation uses, described by the summary of the
 * module of that name, sorted so the UI groups come in a stable order. */
static json_t *tag_list(ctx *c)
{
    for (size_t i = 0; i < c->reg->modules.n; i++) {
        const kn_module *m = c->reg->modules.v[i];
        if (m && m->desc && m->desc->name && m->desc->summary &&
            json_object_get(c->tags, m->desc->name))
            put(c, c->tags, m->desc->name, json_string(m->desc->summary));
    }
    size_t n = json_object_size(c->tags);
    const char **names = calloc(n ? n : 1, sizeof *names);
    json_t *list = json_array();
    if (!names || !list) {
        free(names);
        json_decref(list);
        return NULL;
    }
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(c->tags, key, val)
    {
        names[k++] = key;
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_pack("{s:s}", "name", names[i]);
        json_t *d = json_object_get(c->tags, names[i]);
        if (t && json_is_string(d))
            put(c, t, "description", json_incref(d));
        append(c, list, t);
    }
    free(names);
    return list;
}

char *kn_openapi_build(const kn_registry *reg, char *err, size_t errlen)
{
    ctx c = {.reg = reg, .err = err, .errlen = errlen};
    if (err && errlen)
        err[0] = '\0';
    c.op_ids = json_object();
    c.tags = json_object();
    json_t *paths = json_object();
    json_t *doc = NULL;
    char *out = NULL;

    for (size_t i = 0; i < reg->routes.n && !c.failed; i++) {
        const kn_route *r = reg->routes.v[i];
        if (!r || !r->path)
            continue;
        for (size_t m = 0; m < sizeof methods / sizeof methods[0] && !c.failed; m++) {
            if (!(r->methods & methods[m].bit))
                continue;
            json_t *item = json_object_get(paths, r->path);
            if (!item) {
                item = json_object();
                put(&c, paths, r->path, item);
                if (c.oom)
                    goto done;
                if (r->nparams > 0) {
                    json_t *params = json_array();
                    for (int p = 0; p < r->nparams && p < KN_MAX_PARAMS; p++)
                        append(&c, params, path_parameter(r->param_names[p]));
                    put(&c, item, "parameters", params);
                }
            }
            /* The router refuses a second route for the same method and shape,
             * so a duplicate here is a hand-built registry: the first wins, as
             * it would when serving. */
            if (json_object_get(item, methods[m].key))
                continue;
            json_t *op = operation(&c, r, m);
            if (!op && !c.failed)
                c.oom = true;
            if (op)
                put(&c, item, methods[m].key, op);
        }
    }
    if (c.failed)
        goto done;

    json_t *comp = components(&c);
    if (c.failed) {
        json_decref(comp);
        goto done;
    }
    doc = json_pack("{s:s, s:{s:s, s:s, s:s}, s:o, s:o}", "openapi", "3.1.0", "info", "title",
                    "rxd", "version", KN_VERSION, "description",
                    "Pharmacy platform API: the routes of the modules this server loaded.",
                    "paths", paths, "components", comp);
    paths = NULL; /* stolen by json_pack, even when it fails */
    if (!doc) {
        c.oom = true;
        goto done;
    }
    put(&c, doc, "tags", tag_list(&c));
    if (!c.oom)
        out = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);

done:
    if (!out && !c.failed)
        fail(&c, "OpenAPI document: out of memory");
    json_decref(paths);
    json_decref(doc);
    json_decref(c.op_ids);
    json_decref(c.tags);
    return out;
}
