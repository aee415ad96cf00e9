/*
 * rx.h — the rxd module SDK. The only public header of rxd.
 *
 * A module is a shared object that exports one descriptor (RX_MODULE below).
 * The kernel dlopen()s it, checks the descriptor's ABI version before it calls
 * anything, orders modules by their `requires`, then calls `init` once on the
 * main thread before any worker starts. In `init` a module registers routes,
 * hooks, event subscribers, readiness checks and CLI commands. After `init`
 * returns, registration is closed: the tables are read-only and shared by all
 * worker threads without locks.
 *
 * Threading: request handlers, hooks and event subscribers run on worker
 * threads (one libuv loop per worker, `workers = auto` of them). Everything a
 * handler receives belongs to the worker running it; never hand an rx_req to
 * another thread. Work that blocks or burns CPU goes through rx_offload().
 *
 * Memory, as every function below says:
 *   "request arena"   freed in one go after the reply has been written;
 *   "caller frees"    free() it;
 *   "reference stolen" (jansson) the kernel takes over your json_t reference;
 *   "borrowed"        valid as long as the object it came from, do not free.
 *
 * Errors: functions that can fail return an int, 0 on success or a negative
 * RX_E* code (rx_strerror() names it), and hand results through out-parameters.
 *
 * Build a module out of tree with:  cc -shared -fPIC $(pkg-config --cflags --libs rx-sdk)
 * (see sdk/examples/hello/).
 */
#ifndef RX_H
#define RX_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version of this header. The kernel loads a module when the module's
 * major equals the kernel's and the module's minor is <= the kernel's
 * (a module built against an older minor uses a subset of what the kernel has). */
#define RX_ABI_MAJOR 1
#define RX_ABI_MINOR 0

#if defined(__GNUC__)
#define RX_EXPORT __attribute__((visibility("default")))
#define RX_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define RX_EXPORT
#define RX_PRINTF(a, b)
#endif

/* ------------------------------------------------------------------------ */
/* Error codes                                                              */
/* ------------------------------------------------------------------------ */

enum {
    RX_OK = 0,
    RX_EINVAL = -1,    /* an argument is wrong (bad name, bad path pattern, ...) */
    RX_ENOMEM = -2,    /* out of memory */
    RX_EEXIST = -3,    /* already registered (duplicate route, command, ...) */
    RX_ENOENT = -4,    /* no such thing (parameter, header, config key) */
    RX_ERANGE = -5,    /* a number is out of range or not a number */
    RX_ESTATE = -6,    /* called at the wrong time (registration after init, reply after reply) */
    RX_EUNAVAIL = -7,  /* a dependency (database, Redis) is down */
    RX_ETIMEDOUT = -8, /* an operation took longer than its timeout */
};

/* The name of an RX_E* code, e.g. "RX_EEXIST: already exists". Static string. */
RX_EXPORT const char *rx_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Modules                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct rx_module rx_module; /* the kernel's handle for a loaded module */
typedef struct rx_req rx_req;       /* one HTTP request and its reply */

/* The descriptor every module exports as `rx_module_descriptor`.
 * The first six fields never change, whatever the ABI version: the kernel reads
 * them before anything else to decide whether it may use the rest. */
typedef struct rx_module_desc {
    uint32_t abi_major;          /* RX_ABI_MAJOR the module was built with */
    uint32_t abi_minor;          /* RX_ABI_MINOR the module was built with */
    uint32_t size;               /* sizeof(rx_module_desc) the module was built with */
    const char *name;            /* module name, [a-z0-9_]+, equal to the file name lib<name>.so / <name>.so */
    const char *version;         /* module version, free text (semver advised) */
    const char *const *requires; /* NULL-terminated list of module names, or NULL */
    /* --- ABI 1.0 --- */
    const char *summary;                     /* one line for `rxd check` / `rxd routes`, may be NULL */
    int (*init)(rx_module *m);               /* main thread, before workers; non-zero = refuse start */
    void (*stop)(rx_module *m);              /* main thread, after workers have stopped; may be NULL */
} rx_module_desc;

/* Declare a module:
 *   RX_MODULE("hello", "1.0.0", .init = init, .requires = RX_REQUIRES("auth"));  */
#define RX_REQUIRES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define RX_MODULE(mod_name, mod_version, ...)                                                      \
    RX_EXPORT const rx_module_desc rx_module_descriptor = {                                        \
        .abi_major = RX_ABI_MAJOR,                                                                 \
        .abi_minor = RX_ABI_MINOR,                                                                 \
        .size = sizeof(rx_module_desc),                                                            \
        .name = mod_name,                                                                          \
        .version = mod_version,                                                                    \
        __VA_ARGS__}

/* The module's name as in its descriptor. Borrowed (lives as long as the process). */
RX_EXPORT const char *rx_module_name(const rx_module *m);

/* Why init failed: `init` may call this before returning non-zero; the kernel
 * prints "module 'x': init failed: <reason>" and refuses to start. */
RX_EXPORT void rx_module_fail(rx_module *m, const char *fmt, ...) RX_PRINTF(2, 3);

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */
/*
 * The config file (conf/rxd.conf) is `key = value` lines with `[section]`
 * headers; a module's keys live in the section named after the module, so
 * `[auth]` + `otp_ttl = 300` is key "auth.otp_ttl". Every key can be
 * overridden by the environment: RXD_ + key upper-cased, dots as underscores
 * (RXD_AUTH_OTP_TTL=300). The environment always wins.
 *
 * With m != NULL, `key` is relative to the module's section ("otp_ttl");
 * with m == NULL it is absolute ("jwt.secret"). Values are read at any time
 * on any thread; they never change while the process runs.
 */

/* The value, or `def` when unset. Borrowed (lives as long as the process). */
RX_EXPORT const char *rx_config_str(const rx_module *m, const char *key, const char *def);

/* Integer value (decimal; suffixes k/m/g for 1024 multiples and s/ms are NOT accepted
 * here: the value is a plain integer). Unset -> def. Set but not an integer ->
 * RX_ERANGE and *out untouched. */
RX_EXPORT int rx_config_int(const rx_module *m, const char *key, long long def, long long *out);

/* Boolean: true/false, yes/no, on/off, 1/0. Unset -> def. Anything else -> RX_EINVAL. */
RX_EXPORT int rx_config_bool(const rx_module *m, const char *key, bool def, bool *out);

/* ------------------------------------------------------------------------ */
/* Routes                                                                   */
/* ------------------------------------------------------------------------ */

/* Methods, as a bit set: a route may answer several (RX_PUT | RX_PATCH).
 * RX_GET also answers HEAD (the kernel drops the body). OPTIONS is answered by
 * the kernel (CORS preflight and Allow). */
typedef enum rx_method {
    RX_GET = 1 << 0,
    RX_HEAD = 1 << 1,
    RX_POST = 1 << 2,
    RX_PUT = 1 << 3,
    RX_PATCH = 1 << 4,
    RX_DELETE = 1 << 5,
    RX_OPTIONS = 1 << 6,
} rx_method;

/* Credentials a route accepts (bit set); 0 means every kind. */
enum {
    RX_AUTH_BEARER = 1 << 0, /* Authorization: Bearer <JWT> (people) */
    RX_AUTH_APIKEY = 1 << 1, /* X-API-KEY (pharmacy systems) */
};

/* The permission every authenticated principal has. */
#define RX_PERM_AUTHENTICATED "authenticated"

/* List body shapes (API.md "Lists"). */
typedef enum rx_list_style {
    RX_LIST_ENVELOPE = 0, /* {"count","next","previous","results"}, default page size 20 */
    RX_LIST_ARRAY = 1,    /* bare JSON array (connector resources), default page size 100 */
} rx_list_style;

typedef void (*rx_handler)(rx_req *req);

typedef struct rx_route_opts {
    /* Access. Exactly one of `perm` and `public_route` must be given: a route
     * with neither is refused at start-up (deny by default).
     *  - public_route: anyone; credentials that fail to verify are ignored and
     *    the request is served as anonymous.
     *  - perm: a principal is required (401 without one) and the `authorize`
     *    hooks decide (403 when they refuse; with no authorize hook registered
     *    every permission other than RX_PERM_AUTHENTICATED is refused). */
    const char *perm;
    bool public_route;
    unsigned auth;            /* RX_AUTH_* kinds accepted; 0 = all */
    size_t body_limit;        /* bytes; 0 = config limits.body (1 MiB); over it -> 413 */
    rx_list_style list_style; /* for rx_reply_page() and the page size default */
    /* Documentation, assembled into OpenAPI 3.1 at /api/schema/. */
    const char *summary;
    const char *description;
    const char *tag;             /* default: the module name */
    /* Schemas: "Name" of a component registered with rx_schema(), or inline
     * JSON Schema text "{...}", or "[]X" for a list of X. A "[]X" response on
     * a GET documents a paged list in the route's list_style (with ?page=,
     * ?page_size=, X-Total-Count, Link); its other methods answer one X. A
     * "[]X" request body is a plain JSON array of X (bulk endpoints). */
    const char *request_schema;
    const char *response_schema;
    int success_status;          /* documented success status; default 200 (201 for POST is not assumed) */
    void *data;                  /* returned by rx_req_route_data() */
} rx_route_opts;

/* Register `handler` for `methods` on `path`, e.g. "/api/inventory/{id}/".
 * Path segments are literals or `{name}` captures (a whole segment). A path
 * ending in '/' matches only with the slash (API.md's URLs all have one).
 * Registering the same method + path shape twice is RX_EEXIST; start-up then
 * fails naming both modules. Only callable from init. */
RX_EXPORT int rx_route(rx_module *m, unsigned methods, const char *path, rx_handler handler,
                       const rx_route_opts *opts);

/* Register a named JSON Schema component (JSON text, copied) usable in route
 * opts by name and listed under components.schemas of the OpenAPI document.
 * Invalid JSON is RX_EINVAL. Only callable from init. */
RX_EXPORT int rx_schema(rx_module *m, const char *name, const char *json_schema);

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */
/* ------------------------------------------------------------------------ */

RX_EXPORT rx_method rx_req_method(const rx_req *req);
/* "GET", "POST", ... Static string. */
RX_EXPORT const char *rx_req_method_name(const rx_req *req);
/* The decoded path, without the query string. Request arena. */
RX_EXPORT const char *rx_req_path(const rx_req *req);
/* The route template that matched, e.g. "/api/inventory/{id}/". Borrowed. */
RX_EXPORT const char *rx_req_route(const rx_req *req);
/* opts.data of the matched route. */
RX_EXPORT void *rx_req_route_data(const rx_req *req);
/* The request id: the client's X-Request-Id when it is sane (≤ 64 chars of
 * [A-Za-z0-9._-]), else a generated one. Echoed in the reply and logged. Request arena. */
RX_EXPORT const char *rx_req_id(const rx_req *req);

/* A `{name}` path capture, percent-decoded, or NULL. Request arena. */
RX_EXPORT const char *rx_req_param(const rx_req *req, const char *name);
/* A capture as a positive 64-bit integer; RX_ENOENT if absent, RX_ERANGE if it
 * is not a decimal integer in 1..INT64_MAX (handlers answer 404 then). */
RX_EXPORT int rx_req_param_id(const rx_req *req, const char *name, int64_t *out);

/* The first value of query parameter `name` (percent- and '+'-decoded), or NULL. Request arena. */
RX_EXPORT const char *rx_req_query(const rx_req *req, const char *name);
/* The raw query string without '?', "" when none. Request arena. */
RX_EXPORT const char *rx_req_query_string(const rx_req *req);

/* A request header (case-insensitive name); repeated headers are joined with
 * ", " as RFC 9110 allows. NULL if absent. Request arena. */
RX_EXPORT const char *rx_req_header(const rx_req *req, const char *name);

/* The raw body; *len gets its size. Never NULL (an empty body is ""). Request arena. */
RX_EXPORT const char *rx_req_body(const rx_req *req, size_t *len);

/* The body parsed as JSON, following API.md: no body at all reads as {};
 * a body whose Content-Type is not application/json -> 415; malformed JSON ->
 * 400; nesting deeper than 64 or a body over the route limit -> 413/400.
 * Returns the parsed value (borrowed: owned by the request, freed with it) or
 * NULL, in which case the error reply has ALREADY been sent: just return. */
RX_EXPORT json_t *rx_req_json(rx_req *req);

/* The client's address as text. With `trusted_proxies` configured and the peer
 * one of them, the right-most X-Forwarded-For entry that is not a trusted
 * proxy. Request arena. */
RX_EXPORT const char *rx_req_client_ip(const rx_req *req);

/* Request arena allocation: zeroed, aligned for any type, freed with the
 * request. NULL only when out of memory. */
RX_EXPORT void *rx_req_alloc(rx_req *req, size_t size);
RX_EXPORT char *rx_req_strdup(rx_req *req, const char *s);
RX_EXPORT char *rx_req_sprintf(rx_req *req, const char *fmt, ...) RX_PRINTF(2, 3);

/* One pointer of handler state carried with the request (e.g. across async steps). */
RX_EXPORT void rx_req_set_data(rx_req *req, void *data);
RX_EXPORT void *rx_req_data(const rx_req *req);

/* ------------------------------------------------------------------------ */
/* The principal: who is calling                                            */
/* ------------------------------------------------------------------------ */

typedef enum rx_principal_kind {
    RX_PRINCIPAL_NONE = 0, /* anonymous */
    RX_PRINCIPAL_USER = 1, /* a person, from a bearer token */
    RX_PRINCIPAL_APIKEY = 2, /* a pharmacy system, from an API key */
} rx_principal_kind;

typedef struct rx_principal {
    rx_principal_kind kind;
    int64_t user_id;     /* USER: the user's id; APIKEY: the key's id */
    int64_t pharmacy_id; /* the pharmacy the principal acts for, 0 if none */
    const char *role;    /* "SUPER_ADMIN", ...; for keys "API_KEY". Copied into the request arena. */
    const char *subject; /* free text for logs (username, key prefix); copied, may be NULL */
    const char *token_id; /* the access token's jti, NULL for keys; copied */
    int64_t expires_at;   /* unix seconds when the credential stops being valid, 0 if n/a */
} rx_principal;

/* The principal of this request; kind NONE when anonymous. Borrowed (request). */
RX_EXPORT const rx_principal *rx_req_principal(const rx_req *req);

/* ------------------------------------------------------------------------ */
/* Replies                                                                  */
/* ------------------------------------------------------------------------ */
/*
 * Exactly one reply per request. A second reply is ignored (and logged). A
 * handler that returns without replying and without async work in flight
 * (rx_offload, a pending hook, data-layer calls) gets a 500 from the kernel,
 * logged with the route; likewise an async callback that finishes the last
 * pending work without replying. The request stays valid until the handler
 * or callback that replied returns; after that, do not touch it.
 * Every reply gets Server, Date, X-Request-Id, X-Content-Type-Options: nosniff,
 * CORS headers when the Origin is allowed, and Content-Length.
 */

/* Add a response header for the coming reply (copied). Content-Length, Date,
 * Server and Connection are the kernel's and are refused (RX_EINVAL). */
RX_EXPORT int rx_reply_header(rx_req *req, const char *name, const char *value);

/* Reply with `body` serialised as JSON (reference stolen; NULL = no body). */
RX_EXPORT void rx_reply_json(rx_req *req, int status, json_t *body);

/* Reply with raw bytes (copied). content_type may be NULL for no body. */
RX_EXPORT void rx_reply(rx_req *req, int status, const char *content_type, const void *body,
                        size_t len);

/* DRF general error: {"detail": <formatted>, "code": code}. */
RX_EXPORT void rx_reply_error(rx_req *req, int status, const char *code, const char *detail_fmt,
                              ...) RX_PRINTF(4, 5);

/* DRF validation error, 400: `errors` is {"field": ["message", ...], ...}
 * (reference stolen); "code": "invalid" is added when missing. */
RX_EXPORT void rx_reply_invalid(rx_req *req, json_t *errors);

/* Shortcut for one field: 400 {"field": ["message"], "code": "invalid"}. */
RX_EXPORT void rx_reply_invalid_field(rx_req *req, const char *field, const char *fmt, ...)
    RX_PRINTF(3, 4);

/* 503 {"detail": "Service temporarily unavailable.", "code": "service_unavailable"}
 * with Retry-After: retry_after_s (0 = 5). */
RX_EXPORT void rx_reply_unavailable(rx_req *req, int retry_after_s);

/* Paging (API.md "Lists"): ?page= from 1 and ?page_size= up to 1000, default by
 * the route's list_style. rx_page() parses them; on a bad value it has already
 * replied 404 {"detail": "Invalid page."} and returns RX_EINVAL. */
RX_EXPORT int rx_page(rx_req *req, int64_t *limit, int64_t *offset);

/* Reply with one page: `items` is a JSON array (reference stolen), `total` the
 * count of all matching rows. Adds X-Total-Count and Link (rel="next"/"prev")
 * and shapes the body by the route's list_style. A page past the end (no
 * items, page > 1) answers 404 {"detail": "Invalid page.", "code": "not_found"}. */
RX_EXPORT void rx_reply_page(rx_req *req, json_t *items, int64_t total);

/* ------------------------------------------------------------------------ */
/* Hooks                                                                    */
/* ------------------------------------------------------------------------ */
/*
 * Order of a request: request hooks -> authenticate chain -> access check
 * (public / perm, authorize hooks) -> handler -> response hooks -> write.
 * Hooks run in ascending priority (ties: registration order). A hook returns:
 *   RX_NEXT     continue with the next hook / phase;
 *   RX_DONE     it replied (request hooks: short-circuit, e.g. 429);
 *   RX_PENDING  it started async work and will call rx_resume() exactly once.
 * authenticate hooks return, besides those:
 *   RX_AUTHED   it recognised valid credentials and called rx_req_set_principal();
 *   RX_DENIED   it recognised the credential kind but the credential is bad; it
 *               called rx_auth_fail() to say why. On a protected route the kernel
 *               answers 401 with that code; on a public route it is ignored.
 * authorize hooks return RX_NEXT (no opinion), RX_AUTHED (allowed) or RX_DENIED
 * (403 permission_denied, or what rx_auth_fail() said).
 */
enum { RX_NEXT = 0, RX_DONE = 1, RX_PENDING = 2, RX_AUTHED = 3, RX_DENIED = 4 };

typedef int (*rx_hook_fn)(rx_req *req, void *data);
/* Response hooks observe the reply about to be written (status, headers may be added). */
typedef void (*rx_response_hook_fn)(rx_req *req, int status, void *data);

RX_EXPORT int rx_hook_request(rx_module *m, int priority, rx_hook_fn fn, void *data);
RX_EXPORT int rx_hook_authenticate(rx_module *m, int priority, rx_hook_fn fn, void *data);
RX_EXPORT int rx_hook_authorize(rx_module *m, int priority, rx_hook_fn fn, void *data);
RX_EXPORT int rx_hook_response(rx_module *m, int priority, rx_response_hook_fn fn, void *data);

/* Continue a request after a hook returned RX_PENDING; `rc` is what the hook
 * would have returned. Must run on the request's worker thread. */
RX_EXPORT void rx_resume(rx_req *req, int rc);

/* From authenticate hooks: set who is calling (copied into the request). */
RX_EXPORT void rx_req_set_principal(rx_req *req, const rx_principal *p);
/* From authenticate/authorize hooks: why the credential was refused, e.g.
 * (401, "token_not_valid", "Given token not valid for any token type"). */
RX_EXPORT void rx_auth_fail(rx_req *req, int status, const char *code, const char *detail);
/* The permission the matched route declared (NULL for public routes). Borrowed. */
RX_EXPORT const char *rx_req_perm(const rx_req *req);
/* The RX_AUTH_* kinds the matched route accepts (0 = all). */
RX_EXPORT unsigned rx_req_auth_kinds(const rx_req *req);

/* ------------------------------------------------------------------------ */
/* Events                                                                   */
/* ------------------------------------------------------------------------ */
/*
 * Named events ("order.created") delivered synchronously, in priority order,
 * to in-process subscribers on the emitting thread. A subscriber that must not
 * lose an event enqueues a durable job (data layer). `data` is borrowed for the
 * call; take a reference (json_incref) to keep it. `req` is the request that
 * caused the event, or NULL (jobs, CLI).
 */
typedef void (*rx_event_fn)(rx_req *req, const char *event, json_t *data, void *ud);
RX_EXPORT int rx_on(rx_module *m, const char *event, rx_event_fn fn, void *ud);
/* Returns the number of subscribers called. `data` borrowed. */
RX_EXPORT int rx_emit(rx_req *req, const char *event, json_t *data);

/* ------------------------------------------------------------------------ */
/* Offload: blocking or CPU-heavy work on the thread pool                   */
/* ------------------------------------------------------------------------ */
/* `work(arg)` runs on a libuv pool thread (it must not touch `req` nor reply);
 * then `done(req, arg)` runs on the request's worker thread, where it replies.
 * A client that disconnects meanwhile does not cancel the work; done still runs
 * and its reply is dropped. */
typedef void (*rx_work_fn)(void *arg);
typedef void (*rx_done_fn)(rx_req *req, void *arg);
RX_EXPORT int rx_offload(rx_req *req, rx_work_fn work, rx_done_fn done, void *arg);

/* ------------------------------------------------------------------------ */
/* Operations: readiness, commands, logging                                 */
/* ------------------------------------------------------------------------ */

/* A readiness check for /readyz and `rxd check`: return 0 when ready, else
 * non-zero and write a short reason into why (at most why_len bytes).
 * Called on worker threads and the main thread: it must be thread safe and fast. */
typedef int (*rx_ready_fn)(char *why, size_t why_len, void *data);
RX_EXPORT int rx_ready_check(rx_module *m, const char *name, rx_ready_fn fn, void *data);

/* A CLI command: `rxd <name> args...`. argv[0] is the command name. Runs on
 * the main thread after every module's init, without workers; returns the
 * process exit code. */
typedef int (*rx_command_fn)(rx_module *m, int argc, char **argv);
RX_EXPORT int rx_command(rx_module *m, const char *name, rx_command_fn fn, const char *usage);

/* Log one JSON line {"ts","level","module","msg",...}. Never log secrets. */
typedef enum rx_log_level { RX_LOG_DEBUG, RX_LOG_INFO, RX_LOG_WARN, RX_LOG_ERROR } rx_log_level;
RX_EXPORT void rx_log(const rx_module *m, rx_log_level level, const char *fmt, ...) RX_PRINTF(3, 4);

/* ------------------------------------------------------------------------ */
/* Reserved for the data layer (ABI 1.x minor additions):                   */
/*   rx_db_*     async PostgreSQL (pool per worker), rx_rows accessors        */
/*   rx_redis_*  async Redis, rate limiter, publish/subscribe                 */
/*   rx_task / rx_enqueue / rx_every   durable jobs                           */
/*   rx_migrations   embedded migrations                                      */
/* ------------------------------------------------------------------------ */

#ifdef __cplusplus
}
#endif
#endif /* RX_H */
