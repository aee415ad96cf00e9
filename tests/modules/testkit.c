/*
 * testkit.c — a module used only by the end-to-end tests: routes that
 * exercise the SDK (params, query, JSON bodies, pages, offload, async hooks,
 * a fake bearer authenticate hook, an authorize hook, events, a slow route
 * for graceful shutdown). Not installed.
 */
#include <rx.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static rx_module *self;

static void echo(rx_req *req)
{
    size_t len;
    const char *body = rx_req_body(req, &len);
    const char *q = rx_req_query(req, "q");
    json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:s%, s:s?, s:s?, s:s}", "method",
                          rx_req_method_name(req), "path", rx_req_path(req), "route",
                          rx_req_route(req), "q", q, "body", body, len, "ct",
                          rx_req_header(req, "content-type"), "x_multi", rx_req_header(req, "x-multi"),
                          "ip", rx_req_client_ip(req));
    rx_reply_json(req, 200, o);
}

static void item(rx_req *req)
{
    int64_t id;
    if (rx_req_param_id(req, "id", &id) != 0) {
        rx_reply_error(req, 404, "not_found", "Not found.");
        return;
    }
    rx_reply_json(req, 200, json_pack("{s:I, s:s}", "id", (json_int_t)id, "name", rx_req_param(req, "name") ? rx_req_param(req, "name") : ""));
}

static void sub_item(rx_req *req)
{
    rx_reply_json(req, 200, json_pack("{s:s, s:s}", "id", rx_req_param(req, "id"), "name",
                                      rx_req_param(req, "name")));
}

static void post_json(rx_req *req)
{
    json_t *j = rx_req_json(req);
    if (j == NULL)
        return;
    if (!json_is_object(j)) {
        rx_reply_invalid_field(req, "non_field_errors", "Expected an object.");
        return;
    }
    json_t *name = json_object_get(j, "name");
    if (name != NULL && (!json_is_string(name) || json_string_length(name) > 255)) {
        rx_reply_invalid_field(req, "name", "Ensure this field has no more than 255 characters.");
        return;
    }
    rx_reply_json(req, 201, json_pack("{s:O, s:I}", "received", j, "bytes",
                                      (json_int_t)strlen(rx_req_body(req, NULL))));
}

static void upload(rx_req *req)
{
    size_t len;
    rx_req_body(req, &len);
    rx_reply_json(req, 200, json_pack("{s:I}", "received", (json_int_t)len));
}

static void list(rx_req *req)
{
    int64_t limit, offset;
    if (rx_page(req, &limit, &offset) != 0)
        return;
    int64_t total = 45;
    json_t *a = json_array();
    for (int64_t i = offset; i < offset + limit && i < total; i++)
        json_array_append_new(a, json_pack("{s:I}", "id", (json_int_t)(i + 1)));
    rx_reply_page(req, a, total);
}

/* Slow work on the thread pool: proves offload and graceful shutdown. */
static void sleep_work(void *arg)
{
    usleep((useconds_t)(*(int *)arg) * 1000);
}

static void sleep_done(rx_req *req, void *arg)
{
    int ms = *(int *)arg;
    free(arg);
    rx_reply_json(req, 200, json_pack("{s:i}", "slept_ms", ms));
}

static void slow(rx_req *req)
{
    const char *ms = rx_req_query(req, "ms");
    int *arg = malloc(sizeof(int));
    *arg = ms ? atoi(ms) : 1000;
    if (rx_offload(req, sleep_work, sleep_done, arg) != 0) {
        free(arg);
        rx_reply_error(req, 500, "error", "offload failed");
    }
}

/* Lists the parts of a multipart/form-data body. */
static void multipart(rx_req *req)
{
    const rx_part *parts;
    size_t n;
    if (rx_req_multipart(req, &parts, &n) != 0)
        return;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        /* Files are binary (not UTF-8): only their size is echoed. */
        json_t *o = json_pack("{s:s, s:s?, s:s?, s:I}", "name", parts[i].name, "filename",
                              parts[i].filename, "content_type", parts[i].content_type, "len",
                              (json_int_t)parts[i].len);
        if (parts[i].filename == NULL)
            json_object_set_new(o, "data", json_stringn(parts[i].data, parts[i].len));
        json_array_append_new(a, o);
    }
    const rx_part *f = rx_part_get(parts, n, "field");
    rx_reply_json(req, 200, json_pack("{s:o, s:s?}", "parts", a, "field", f ? f->data : NULL));
}

static void whoami(rx_req *req)
{
    const rx_principal *p = rx_req_principal(req);
    rx_reply_json(req, 200, json_pack("{s:i, s:I, s:s?}", "kind", (int)p->kind, "user_id",
                                      (json_int_t)p->user_id, "role", p->role));
}

static void noreply(rx_req *req)
{
    (void)req; /* a buggy handler: the kernel must answer 500 */
}

static int events_seen;
static void on_ping(rx_req *req, const char *event, json_t *data, void *ud)
{
    (void)req, (void)event, (void)data, (void)ud;
    __atomic_fetch_add(&events_seen, 1, __ATOMIC_RELAXED);
}

static void emit(rx_req *req)
{
    int n = rx_emit(req, "testkit.ping", NULL);
    rx_reply_json(req, 200, json_pack("{s:i, s:i}", "subscribers", n, "seen",
                                      __atomic_load_n(&events_seen, __ATOMIC_RELAXED)));
}

/* Bearer "user-<id>-<role>" is valid; any other bearer is denied. The work
 * is done on the thread pool to prove async hooks. */
typedef struct authjob {
    rx_req *req;
} authjob;

static int authn(rx_req *req, void *data)
{
    (void)data;
    const char *h = rx_req_header(req, "authorization");
    if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
        return RX_NEXT;
    const char *tok = h + 7;
    long id;
    char role[32];
    if (sscanf(tok, "user-%ld-%31s", &id, role) == 2 && id > 0) {
        rx_principal p = {.kind = RX_PRINCIPAL_USER, .user_id = id, .role = role};
        rx_req_set_principal(req, &p);
        return RX_AUTHED;
    }
    rx_auth_fail(req, 401, "token_not_valid", "Given token not valid for any token type");
    return RX_DENIED;
}

/* "testkit.admin" is allowed to role ADMIN only. */
static int authz(rx_req *req, void *data)
{
    (void)data;
    const char *perm = rx_req_perm(req);
    if (strcmp(perm, "testkit.admin") != 0)
        return RX_NEXT;
    return strcmp(rx_req_principal(req)->role, "ADMIN") == 0 ? RX_AUTHED : RX_DENIED;
}

static int init(rx_module *m)
{
    self = m;
    int rc = 0;
    rc |= rx_route(m, RX_GET | RX_POST | RX_PUT | RX_PATCH | RX_DELETE, "/test/echo/", echo,
                   &(rx_route_opts){.public_route = true, .summary = "Echo the request"});
    rc |= rx_route(m, RX_GET, "/test/items/{id}/", item, &(rx_route_opts){.public_route = true});
    rc |= rx_route(m, RX_GET, "/test/items/{id}/sub/{name}/", sub_item,
                   &(rx_route_opts){.public_route = true});
    rc |= rx_route(m, RX_GET, "/test/items/special/", echo, &(rx_route_opts){.public_route = true});
    rc |= rx_route(m, RX_POST, "/test/json/", post_json,
                   &(rx_route_opts){.public_route = true, .request_schema = "TestThing",
                                    .response_schema = "TestThing", .success_status = 201});
    rc |= rx_route(m, RX_POST, "/test/upload/", upload,
                   &(rx_route_opts){.public_route = true, .body_limit = 4 << 20});
    rc |= rx_route(m, RX_POST, "/test/multipart/", multipart,
                   &(rx_route_opts){.public_route = true, .body_limit = 1 << 20});
    rc |= rx_route(m, RX_GET, "/test/list/", list,
                   &(rx_route_opts){.public_route = true, .list_style = RX_LIST_ENVELOPE});
    rc |= rx_route(m, RX_GET, "/test/array/", list,
                   &(rx_route_opts){.public_route = true, .list_style = RX_LIST_ARRAY});
    rc |= rx_route(m, RX_GET, "/test/slow/", slow, &(rx_route_opts){.public_route = true});
    rc |= rx_route(m, RX_GET, "/test/public-whoami/", whoami, &(rx_route_opts){.public_route = true});
    rc |= rx_route(m, RX_GET, "/test/whoami/", whoami, &(rx_route_opts){.perm = RX_PERM_AUTHENTICATED});
    rc |= rx_route(m, RX_GET, "/test/admin/", whoami, &(rx_route_opts){.perm = "testkit.admin"});
    rc |= rx_route(m, RX_GET, "/test/nobody/", whoami, &(rx_route_opts){.perm = "testkit.nobody"});
    rc |= rx_route(m, RX_GET, "/test/keys-only/", whoami,
                   &(rx_route_opts){.perm = RX_PERM_AUTHENTICATED, .auth = RX_AUTH_APIKEY});
    rc |= rx_route(m, RX_GET, "/test/noreply/", noreply, &(rx_route_opts){.public_route = true});
    rc |= rx_route(m, RX_POST, "/test/emit/", emit, &(rx_route_opts){.public_route = true});
    rc |= rx_schema(m, "TestThing",
                    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\","
                    "\"maxLength\":255}}}");
    rc |= rx_hook_authenticate(m, 100, authn, NULL);
    rc |= rx_hook_authorize(m, 100, authz, NULL);
    rc |= rx_on(m, "testkit.ping", on_ping, NULL);
    return rc == 0 ? 0 : -1;
}

RX_MODULE("testkit", "1.0.0", .init = init, .summary = "routes for the end-to-end tests");
