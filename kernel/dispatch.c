/*
 * dispatch.c — what happens to a complete request: routing answers (404,
 * 405 with Allow, OPTIONS and CORS preflight), then the hook phases
 * (request -> authenticate -> access check -> handler), each of which may go
 * async and come back through rx_resume(). Also the kernel's own routes:
 * /healthz, /readyz, /metrics, the OpenAPI document and its viewers, and
 * rx_offload().
 */
#include "kn_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { PH_REQUEST, PH_AUTHN, PH_ACCESS, PH_AUTHZ, PH_HANDLER, PH_DONE };

static void run(rx_req *req);

/* While the kernel runs code for a request (a phase, a callback), the request
 * must outlive a reply sent from inside it: the reply may finish and detach
 * the request. A hold counts as pending work; release frees a detached one. */
static void hold(rx_req *req)
{
    req->pending++;
}

static void release(rx_req *req)
{
    req->pending--;
    kn_req_maybe_free(req);
}

static const char *valid_request_id(rx_req *req)
{
    const char *id = rx_req_header(req, "x-request-id");
    if (id == NULL)
        return NULL;
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return NULL;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return NULL;
    return id;
}

void kn_req_assign_id(rx_req *req)
{
    const char *id = valid_request_id(req);
    if (id != NULL) {
        req->id = id;
        return;
    }
    kn_worker *w = req->w;
    req->id = rx_req_sprintf(req, "%016llx%08llx", (unsigned long long)w->rid_base,
                             (unsigned long long)++w->rid_seq);
}

static void not_found(rx_req *req)
{
    rx_reply_error(req, 404, "not_found", "Not found.");
}

static void method_not_allowed(rx_req *req)
{
    char allow[96];
    kn_methods_text(req->match.allowed, allow, sizeof(allow));
    kn_reply_header_raw(req, "Allow", allow);
    rx_reply_error(req, 405, "method_not_allowed", "Method \"%s\" not allowed.", req->method_name);
}

/* OPTIONS: CORS preflight for allowed origins, else the Allow list. */
static void options(rx_req *req)
{
    char allow[96];
    kn_methods_text(req->match.allowed, allow, sizeof(allow));
    kn_reply_header_raw(req, "Allow", allow);
    const char *origin = rx_req_header(req, "origin");
    const char *want = rx_req_header(req, "access-control-request-method");
    if (origin != NULL && want != NULL) {
        bool ok = false;
        for (size_t i = 0; i < kn_set.ncors_origins; i++)
            if (strcmp(kn_set.cors_origins[i], "*") == 0 || strcmp(kn_set.cors_origins[i], origin) == 0)
                ok = true;
        if (ok) {
            kn_reply_header_raw(req, "Access-Control-Allow-Methods", allow);
            /* The configured list, not an echo of Access-Control-Request-Headers. */
            kn_reply_header_raw(req, "Access-Control-Allow-Headers", kn_set.cors_allow_headers);
            char age[24];
            snprintf(age, sizeof(age), "%lld", kn_set.cors_max_age);
            kn_reply_header_raw(req, "Access-Control-Max-Age", age);
        }
    }
    rx_reply(req, 204, NULL, NULL, 0);
}

/* Django's APPEND_SLASH: GET /api/x -> 301 /api/x/ when that exists. */
static bool slash_redirect(rx_req *req)
{
    if (req->method != RX_GET && req->method != RX_HEAD)
        return false;
    if (req->path_len == 0 || req->path[req->path_len - 1] == '/')
        return false;
    char *p = rx_req_sprintf(req, "%s/", req->path);
    kn_match m;
    if (p == NULL || kn_router_match(kn_reg.router, req->method, p, req->path_len + 1, &m) != 0)
        return false;
    const char *q = rx_req_query_string(req);
    kn_reply_header_raw(req, "Location", *q ? rx_req_sprintf(req, "%s?%s", p, q) : p);
    rx_reply(req, 301, NULL, NULL, 0);
    return true;
}

void kn_dispatch(rx_req *req)
{
    kn_req_assign_id(req);
    hold(req);
    if (req->route == NULL) {
        if (req->method == RX_OPTIONS && req->match.allowed)
            options(req);
        else if (req->match.allowed == 0) {
            if (!slash_redirect(req))
                not_found(req);
        } else
            method_not_allowed(req);
    } else {
        req->phase = PH_REQUEST;
        req->hook_i = 0;
        run(req);
    }
    release(req);
}

static void unauthorized(rx_req *req)
{
    const kn_route *r = req->route;
    kn_reply_header_raw(req, "WWW-Authenticate",
                        r->opts.auth == RX_AUTH_APIKEY ? "ApiKey realm=\"api\"" : "Bearer realm=\"api\"");
    if (req->auth_denied && req->fail_code != NULL)
        rx_reply_error(req, 401, req->fail_code, "%s",
                       req->fail_detail ? req->fail_detail : "Invalid credentials.");
    else
        rx_reply_error(req, 401, "not_authenticated",
                       "Authentication credentials were not provided.");
}

static void forbidden(rx_req *req)
{
    if (req->fail_status == 403 && req->fail_code != NULL)
        rx_reply_error(req, 403, req->fail_code, "%s", req->fail_detail ? req->fail_detail : "");
    else
        rx_reply_error(req, 403, "permission_denied",
                       "You do not have permission to perform this action.");
}

static bool kind_accepted(const rx_req *req)
{
    unsigned kinds = req->route->opts.auth;
    if (kinds == 0)
        return true;
    if (req->principal.kind == RX_PRINCIPAL_USER)
        return (kinds & RX_AUTH_BEARER) != 0;
    if (req->principal.kind == RX_PRINCIPAL_APIKEY)
        return (kinds & RX_AUTH_APIKEY) != 0;
    return false;
}

/* Apply a hook's answer for the current phase; returns false to stop. */
static bool step(rx_req *req, int rc)
{
    switch (req->phase) {
    case PH_REQUEST:
        if (rc == RX_DONE || req->replied)
            return false;
        req->hook_i++;
        return true;
    case PH_AUTHN:
        if (rc == RX_AUTHED) {
            req->phase = PH_ACCESS;
            return true;
        }
        if (rc == RX_DENIED) {
            req->auth_denied = true;
            req->phase = PH_ACCESS;
            return true;
        }
        if (rc == RX_DONE || req->replied)
            return false;
        req->hook_i++;
        return true;
    case PH_AUTHZ:
        if (rc == RX_AUTHED) {
            req->phase = PH_HANDLER;
            return true;
        }
        if (rc == RX_DENIED) {
            if (req->fail_status == 401)
                unauthorized(req);
            else
                forbidden(req);
            return false;
        }
        if (rc == RX_DONE || req->replied)
            return false;
        req->hook_i++;
        return true;
    default:
        return false;
    }
}

static void run(rx_req *req)
{
    for (;;) {
        if (req->replied)
            return;
        switch (req->phase) {
        case PH_REQUEST:
            if (req->hook_i >= kn_reg.hooks_request.n) {
                req->phase = PH_AUTHN;
                req->hook_i = 0;
                continue;
            }
            break;
        case PH_AUTHN:
            if (req->hook_i >= kn_reg.hooks_authn.n) {
                req->phase = PH_ACCESS;
                continue;
            }
            break;
        case PH_ACCESS: {
            const kn_route *r = req->route;
            if (r->opts.public_route) {
                if (req->auth_denied) {
                    /* API.md: a bad credential on a public route is ignored. */
                    memset(&req->principal, 0, sizeof(req->principal));
                    req->fail_status = 0;
                    req->fail_code = req->fail_detail = NULL;
                }
                req->phase = PH_HANDLER;
                continue;
            }
            if (req->principal.kind == RX_PRINCIPAL_NONE) {
                unauthorized(req);
                return;
            }
            if (!kind_accepted(req)) {
                forbidden(req);
                return;
            }
            if (strcmp(r->opts.perm, RX_PERM_AUTHENTICATED) == 0) {
                req->phase = PH_HANDLER;
                continue;
            }
            req->phase = PH_AUTHZ;
            req->hook_i = 0;
            continue;
        }
        case PH_AUTHZ:
            if (req->hook_i >= kn_reg.hooks_authz.n) {
                forbidden(req); /* nobody allowed it: deny by default */
                return;
            }
            break;
        case PH_HANDLER:
            req->phase = PH_DONE;
            req->route->handler(req);
            /* pending == 1: only our own hold, so nothing will ever reply. */
            if (!req->replied && req->pending == 1) {
                kn_log(RX_LOG_ERROR, req->route->module ? req->route->module->desc->name : NULL,
                       "handler for %s %s returned without replying or starting async work",
                       req->method_name, req->route->path);
                rx_reply_error(req, 500, "error", "A server error occurred.");
            }
            return;
        default:
            return;
        }
        kn_hook *h = req->phase == PH_REQUEST ? &kn_reg.hooks_request.v[req->hook_i]
                     : req->phase == PH_AUTHN ? &kn_reg.hooks_authn.v[req->hook_i]
                                              : &kn_reg.hooks_authz.v[req->hook_i];
        int rc = h->u.fn(req, h->data);
        if (rc == RX_PENDING) {
            req->pending++;
            return;
        }
        if (!step(req, rc))
            return;
    }
}

void rx_resume(rx_req *req, int rc)
{
    /* The hook's pending count becomes our hold for the rest of the run. */
    if (req->conn != NULL && step(req, rc))
        run(req);
    release(req);
}

/* ---- rx_offload ---- */

typedef struct offload {
    uv_work_t work;
    rx_req *req;
    rx_work_fn fn;
    rx_done_fn done;
    void *arg;
} offload;

static void offload_work(uv_work_t *w)
{
    offload *o = w->data;
    o->fn(o->arg);
}

static void offload_done(uv_work_t *w, int status)
{
    (void)status;
    offload *o = w->data;
    rx_req *req = o->req;
    /* The offload's pending count is the hold while done() runs. */
    o->done(req, o->arg);
    free(o);
    kn_req_async_done(req, "offload");
}

void kn_req_async_done(rx_req *req, const char *what)
{
    if (req->conn != NULL && !req->replied && req->pending == 1) {
        kn_log(RX_LOG_ERROR, req->route && req->route->module ? req->route->module->desc->name : NULL,
               "%s for %s %s finished the request's async work without replying", what,
               req->method_name, req->path);
        rx_reply_error(req, 500, "error", "A server error occurred.");
    }
    release(req);
}

rx_req *kn_req_detached(kn_worker *w)
{
    kn_arena a = {0};
    rx_req *req = kn_arena_alloc(&a, sizeof(*req));
    if (req == NULL)
        return NULL;
    req->arena = a;
    req->w = w;
    req->start_ns = kn_now_ns();
    req->body = "";
    req->method_name = "-";
    req->path = "-";
    req->query = "";
    req->detached = true;
    req->pending = 1;
    req->id = rx_req_sprintf(req, "%016llx%08llx", (unsigned long long)w->rid_base,
                             (unsigned long long)++w->rid_seq);
    return req;
}

void kn_req_detached_end(rx_req *req)
{
    release(req);
}

int rx_offload(rx_req *req, rx_work_fn work, rx_done_fn done, void *arg)
{
    if (req == NULL || work == NULL || done == NULL)
        return RX_EINVAL;
    offload *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return RX_ENOMEM;
    o->work.data = o;
    o->req = req;
    o->fn = work;
    o->done = done;
    o->arg = arg;
    if (uv_queue_work(&req->w->loop, &o->work, offload_work, offload_done) != 0) {
        free(o);
        return RX_ENOMEM;
    }
    req->pending++;
    return 0;
}

/* ---- kernel routes ---- */

static void healthz(rx_req *req)
{
    static const char body[] = "{\"status\":\"ok\"}";
    kn_reply_header_raw(req, "Cache-Control", "no-store");
    rx_reply(req, 200, "application/json", body, sizeof(body) - 1);
}

static void readyz(rx_req *req)
{
    char buf[4096];
    bool ready;
    kn_readiness(buf, sizeof(buf), &ready);
    kn_reply_header_raw(req, "Cache-Control", "no-store");
    rx_reply(req, ready ? 200 : 503, "application/json", buf, strlen(buf));
}

static void metrics(rx_req *req)
{
    size_t len;
    char *text = kn_metrics_render(&len);
    if (text == NULL) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    kn_reply_header_raw(req, "Cache-Control", "no-store");
    rx_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static char *openapi_doc;
static size_t openapi_len;

/* Built once on the main thread before workers start: registrations are final. */
int kn_openapi_prepare(char *err, size_t errlen)
{
    free(openapi_doc);
    openapi_doc = kn_openapi_build(&kn_reg, err, errlen);
    if (openapi_doc == NULL)
        return -1;
    openapi_len = strlen(openapi_doc);
    return 0;
}

static void schema(rx_req *req)
{
    if (openapi_doc == NULL) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    kn_reply_header_raw(req, "Cache-Control", "no-cache");
    kn_reply_static(req, 200, "application/json", openapi_doc, openapi_len);
}

static void swagger_page(rx_req *req)
{
    kn_static_serve(req, "swagger.html");
}

static void redoc_page(rx_req *req)
{
    kn_static_serve(req, "redoc.html");
}

static void asset(rx_req *req)
{
    kn_static_serve(req, rx_req_param(req, "file"));
}

int kn_builtin_routes(void)
{
    struct {
        const char *path;
        rx_handler h;
        const char *summary;
    } routes[] = {
        {"/healthz", healthz, "Liveness: the process answers"},
        {"/readyz", readyz, "Readiness: dependencies reachable, migrations applied"},
        {"/metrics", metrics, "Prometheus metrics"},
        {"/api/schema/", schema, "OpenAPI 3.1 document of the enabled modules"},
        {"/api/schema/swagger/", swagger_page, "Swagger UI"},
        {"/api/schema/redoc/", redoc_page, "Redoc"},
        {"/swagger/", swagger_page, "Swagger UI (connector's old address)"},
        {"/redoc/", redoc_page, "Redoc (connector's old address)"},
        {"/api/schema/swagger/{file}", asset, "Swagger UI asset"},
        {"/api/schema/redoc/{file}", asset, "Redoc asset"},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = kn_route_add(NULL, RX_GET, routes[i].path, routes[i].h,
                              &(rx_route_opts){.public_route = true,
                                               .summary = routes[i].summary,
                                               .tag = "ops"});
        if (rc != 0)
            return rc;
    }
    return 0;
}

void kn_dispatch_free(void)
{
    free(openapi_doc);
    openapi_doc = NULL;
}
