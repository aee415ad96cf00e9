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
#define RX_ABI_MINOR 1 /* 1.1: rx_list_* */

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

/* One part of a multipart/form-data body (RFC 7578). Strings live in the
 * request arena; `data` is NUL-terminated for convenience (len excludes it). */
typedef struct rx_part {
    const char *name;         /* the form field name */
    const char *filename;     /* NULL for plain fields */
    const char *content_type; /* NULL when the part gives none */
    const char *data;
    size_t len;
} rx_part;

/* Parse a multipart/form-data body. Returns 0 with the parts in *parts
 * (request arena) and their count in *n. A body that is not multipart -> 415,
 * malformed -> 400: then the error reply has ALREADY been sent and RX_EINVAL
 * is returned: just return. */
RX_EXPORT int rx_req_multipart(rx_req *req, const rx_part **parts, size_t *n);
/* The first part named `name`, or NULL. */
RX_EXPORT const rx_part *rx_part_get(const rx_part *parts, size_t n, const char *name);
/* True when the request's Content-Type is multipart/form-data. */
RX_EXPORT bool rx_req_is_multipart(const rx_req *req);

/* rx_req_json() for endpoints whose body must be a JSON object: anything
 * else -> 400 {"non_field_errors": ["Invalid data. Expected a dictionary, but
 * got list."], "code": "invalid"} (DRF's text, with the Python type name).
 * NULL means the error reply has ALREADY been sent. Borrowed, as rx_req_json. */
RX_EXPORT json_t *rx_req_json_object(rx_req *req);

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

/* Row scope: which rows this principal may touch, decided by the access
 * policy (module rbac sets it from its authorize hook) and applied by
 * handlers in SQL, so object-level checks live in WHERE clauses:
 *     WHERE ($1::bigint = 0 OR pharmacy_id = $1)       -- RX_INT(rx_scope_pharmacy(req))
 *     WHERE ($2::bigint = 0 OR user_id = $2)           -- RX_INT(rx_scope_user(req))
 * RX_SCOPE_ALL (0) means every row; RX_SCOPE_NONE (-1) matches no row (a
 * request nobody scoped sees nothing: deny by default). */
#define RX_SCOPE_ALL 0
#define RX_SCOPE_NONE (-1)
RX_EXPORT void rx_req_set_scope(rx_req *req, int64_t pharmacy_id, int64_t user_id);
/* The pharmacy rows may belong to: a pharmacy id, RX_SCOPE_ALL or RX_SCOPE_NONE. */
RX_EXPORT int64_t rx_scope_pharmacy(const rx_req *req);
/* The user rows may belong to ("own rows only"): a user id, RX_SCOPE_ALL or RX_SCOPE_NONE. */
RX_EXPORT int64_t rx_scope_user(const rx_req *req);

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
/* PostgreSQL                                                               */
/* ------------------------------------------------------------------------ */
/*
 * Every worker has its own pool of non-blocking connections (config
 * `database.url`, `database.pool_size`, `database.queue_size`,
 * `database.timeout`). A query is sent with parameters only (never build SQL
 * from input), and its callback runs later on the same worker thread, exactly
 * once, also when it fails: check rx_rows_failed() first.
 *
 * Failures: the database unreachable, the pool's wait queue full, or a query
 * that waited or ran longer than `database.timeout` (default 5 s) fail with
 * RX_EUNAVAIL / RX_ETIMEDOUT and rx_reply_db_error() answers 503 with
 * Retry-After; an SQL error (constraint, syntax) fails with RX_EDB and the
 * SQLSTATE is readable (rx_rows_sqlstate: "23505" unique violation, ...).
 *
 * Values come back as text, readable with typed getters or converted to JSON
 * by column type: int2/4/8 -> integer, numeric -> string ("12.50"), bool ->
 * true/false, json/jsonb -> JSON, timestamptz -> "2026-11-22T10:00:00Z"
 * (UTC, fraction kept when present), float -> real, NULL -> null, anything
 * else -> string. Sessions run with TimeZone=UTC.
 */

enum { RX_EDB = -20 }; /* the database answered with an SQL error */

typedef enum rx_param_type {
    RX_P_NULL = 0,
    RX_P_TEXT,
    RX_P_INT,
    RX_P_BOOL,
    RX_P_FLOAT,
    RX_P_JSON,
    RX_P_BYTES
} rx_param_type;

/* One query parameter. Build them with the macros below; strings and JSON are
 * copied when the query is queued, so temporaries are fine. */
typedef struct rx_param {
    rx_param_type type;
    union {
        const char *s;
        int64_t i;
        bool b;
        double f;
        const json_t *j;
    } v;
    size_t len; /* RX_P_BYTES only */
} rx_param;

#define RX_NULL ((rx_param){.type = RX_P_NULL})
#define RX_TEXT(x) ((rx_param){.type = RX_P_TEXT, .v.s = (x)})   /* NULL -> SQL NULL */
#define RX_INT(x) ((rx_param){.type = RX_P_INT, .v.i = (int64_t)(x)})
#define RX_BOOL(x) ((rx_param){.type = RX_P_BOOL, .v.b = (x)})
#define RX_FLOAT(x) ((rx_param){.type = RX_P_FLOAT, .v.f = (x)})
#define RX_JSON(x) ((rx_param){.type = RX_P_JSON, .v.j = (x)})   /* borrowed; NULL -> SQL NULL */
#define RX_BYTES(p, n) ((rx_param){.type = RX_P_BYTES, .v.s = (const char *)(p), .len = (n)})

typedef struct rx_rows rx_rows; /* a query's outcome; valid during its callback only */
typedef void (*rx_db_cb)(rx_req *req, rx_rows *rows);

/* Queue `sql` with `nparams` parameters ($1..$n) on this worker's pool; `cb`
 * runs later with the result (the statement is prepared once per connection
 * and reused). Returns 0, or RX_EINVAL for bad arguments (then cb never runs).
 * `req` may be a job (see Jobs). */
RX_EXPORT int rx_db_query(rx_req *req, rx_db_cb cb, const char *sql, int nparams,
                          const rx_param *params);
/* rx_db(req, cb, "SELECT ... WHERE id = $1", RX_INT(id)) — at least one parameter;
 * for none call rx_db_query(req, cb, sql, 0, NULL). */
#define rx_db(req, cb, sql, ...)                                                                   \
    rx_db_query(req, cb, sql, (int)(sizeof((rx_param[]){__VA_ARGS__}) / sizeof(rx_param)),        \
                (rx_param[]){__VA_ARGS__})

/* Several statements in one transaction on one connection, sent in one round
 * trip (pipeline): BEGIN; stmts...; COMMIT. If one fails, the transaction is
 * rolled back and cb gets that statement's failure; otherwise cb gets the
 * rows of the LAST statement. For the rare case one statement (CTEs, an SQL
 * function) cannot do it. */
typedef struct rx_stmt {
    const char *sql;
    int nparams;
    const rx_param *params;
} rx_stmt;
RX_EXPORT int rx_db_tx(rx_req *req, rx_db_cb cb, int nstmts, const rx_stmt *stmts);

RX_EXPORT bool rx_rows_failed(const rx_rows *r);
/* 0, RX_EUNAVAIL, RX_ETIMEDOUT or RX_EDB. */
RX_EXPORT int rx_rows_error(const rx_rows *r);
/* For RX_EDB: the five-character SQLSTATE ("23505"), the constraint name if
 * any, and the server's message (for logs: never send it to a client). */
RX_EXPORT const char *rx_rows_sqlstate(const rx_rows *r);
RX_EXPORT const char *rx_rows_constraint(const rx_rows *r);
RX_EXPORT const char *rx_rows_message(const rx_rows *r);
RX_EXPORT int rx_rows_count(const rx_rows *r);   /* rows returned */
RX_EXPORT int64_t rx_rows_affected(const rx_rows *r); /* rows inserted/updated/deleted */
RX_EXPORT int rx_rows_columns(const rx_rows *r);
RX_EXPORT const char *rx_rows_column_name(const rx_rows *r, int col);
RX_EXPORT int rx_rows_column(const rx_rows *r, const char *name); /* index, or -1 */
RX_EXPORT bool rx_rows_isnull(const rx_rows *r, int row, int col);
/* Text of a value, NULL for SQL NULL. Borrowed (valid during the callback). */
RX_EXPORT const char *rx_rows_text(const rx_rows *r, int row, int col);
/* Typed getters: 0, RX_ENOENT for NULL or out of range, RX_ERANGE if not that type. */
RX_EXPORT int rx_rows_int(const rx_rows *r, int row, int col, int64_t *out);
RX_EXPORT int rx_rows_bool(const rx_rows *r, int row, int col, bool *out);
/* JSON of one value / one row as an object (column names as keys) / all rows
 * as an array of objects, converted by column type. New references.
 * Conversions: bool -> true/false; int2/int4/int8/oid -> integer; float4/8 ->
 * real (NaN and +-Infinity -> null); json/jsonb -> the document (one holding
 * an integer beyond int64, which only SQL can store, with its numbers as
 * reals); timestamptz -> "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" (timestamp: the same,
 * read as UTC); numeric (money stays exact), text, date, uuid, arrays and
 * anything else -> its PostgreSQL text as a string; SQL NULL -> null. */
RX_EXPORT json_t *rx_rows_value(const rx_rows *r, int row, int col);
RX_EXPORT json_t *rx_rows_object(const rx_rows *r, int row);
RX_EXPORT json_t *rx_rows_array(const rx_rows *r);

/* Reply to a failed query: 503 service_unavailable with Retry-After when the
 * database is down, busy or slow; otherwise 500 (the SQL error is logged with
 * the request id, never sent). */
RX_EXPORT void rx_reply_db_error(rx_req *req, const rx_rows *rows);

/* A list page straight from a query, usable as the query's callback (the
 * usual one for rx_list_run below, which adds the column):
 *     rx_db(req, rx_reply_rows_page,
 *           "SELECT id, name, (SELECT count(*) FROM things) AS total_count FROM things"
 *           " ORDER BY id LIMIT $1 OFFSET $2", RX_INT(limit), RX_INT(offset));
 * every row becomes an object in the page (its JSON text is written straight
 * from the result); the column "total_count" (the count of all matching rows)
 * is left out of the objects and gives X-Total-Count. A failed query is
 * answered with rx_reply_db_error. */
RX_EXPORT void rx_reply_rows_page(rx_req *req, rx_rows *rows);

/* List queries (ABI 1.1). A list route's SELECT assembled from the filters the
 * request really gave, so that every combination is its own prepared statement
 * with a plain WHERE: PostgreSQL can then use an index and a cached generic
 * plan, which a catch-all "($1 IS NULL OR col = $1)" text defeats. Every
 * condition and ordering text comes from the module, never from the request;
 * values travel as parameters.
 *
 *     rx_list *l = rx_list_new(req, "i.id, i.name", "inventory_items i");
 *     if (scope != RX_SCOPE_ALL)
 *         rx_list_where(l, "i.pharmacy_id = $?", RX_INT(scope));
 *     if (search != NULL)
 *         rx_list_where(l, "(strpos(lower(i.name), lower($?)) > 0"
 *                          " OR strpos(lower(i.sku), lower($?)) > 0)", RX_TEXT(search));
 *     rx_list_order(l, orderings, n, "i.id ASC");
 *     if (rx_list_run(l, rx_reply_rows_page, limit, offset) != 0)
 *         ... 500 ...
 *
 * runs "SELECT <cols>, (<total>) AS total_count FROM <from> WHERE c1 AND c2
 * ORDER BY <order> LIMIT $n OFFSET $n+1", whose <total> is by default
 * "SELECT count(*) FROM <from> WHERE c1 AND c2" (an uncorrelated subquery: run
 * once, unlike count(*) OVER (), which reads every matching row in full). A
 * module that keeps its own counts names the statement with rx_list_total().
 * Errors (bad argument, out of memory, more than RX_LIST_MAX_PARAMS values)
 * are kept and returned by rx_list_run(); the calls in between need no checks.
 * Everything lives in the request arena. */
typedef struct rx_list rx_list;

/* Parameters one list query can carry, LIMIT and OFFSET included (so 14
 * conditions with "$?"), and conditions it can have, with or without one. */
#define RX_LIST_MAX_PARAMS 16
#define RX_LIST_MAX_CONDS 16

/* An accepted value of ?ordering= and the ORDER BY text it selects. */
typedef struct rx_ordering {
    const char *param; /* "name", "-name" */
    const char *sql;   /* "i.name DESC, i.id ASC": end with a unique column */
} rx_ordering;

/* `cols` and `from` are SQL texts (kept by pointer: static strings or request
 * arena). NULL only when out of memory, and then every rx_list_* call below
 * accepts the NULL and rx_list_run() returns RX_ENOMEM. */
RX_EXPORT rx_list *rx_list_new(rx_req *req, const char *cols, const char *from);

/* Adds "AND <cond>". Each "$?" in cond stands for `p` (one parameter however
 * often it appears); a cond without "$?" ignores p (pass RX_NULL). Returns the
 * parameter's number (for rx_list_total), 0 when cond has none, or a negative
 * error (also kept for rx_list_run). Strings in p are copied at run. */
RX_EXPORT int rx_list_where(rx_list *l, const char *cond, rx_param p);

/* Replaces the default count with `sql`, a scalar SELECT that may use the
 * parameter numbers rx_list_where() returned (e.g. "SELECT n FROM counts
 * WHERE pharmacy_id = $1"). NULL from an empty COALESCE counts as 0. */
RX_EXPORT void rx_list_total(rx_list *l, const char *sql);

/* ORDER BY from the first term of ?ordering= (DRF's OrderingFilter: a term not
 * in `table` is ignored): the matching entry's sql, else `def`. */
RX_EXPORT void rx_list_order(rx_list *l, const rx_ordering *table, size_t n, const char *def);

/* Queues the query with `cb` (rx_reply_rows_page, or a callback of the
 * module's that reads the "total_count" column). Returns 0, or RX_EINVAL /
 * RX_ENOMEM from any earlier call (then cb never runs and nothing is sent). */
RX_EXPORT int rx_list_run(rx_list *l, rx_db_cb cb, int64_t limit, int64_t offset);

/* The answer to a query for one object, usable as the query's callback: 200
 * with the first row as an object (rx_rows_object), 404 {"detail": "Not
 * found."} when no row came back (unknown or out of scope: never 403),
 * rx_reply_db_error when the query failed. */
RX_EXPORT void rx_reply_row(rx_req *req, rx_rows *rows);

/* The answer to a DELETE ... RETURNING, usable as the query's callback: 204
 * when a row came back, 404 {"detail": "Not found."} when none did (unknown
 * or out of scope: never 403), rx_reply_db_error when the query failed. */
RX_EXPORT void rx_reply_deleted(rx_req *req, rx_rows *rows);

/* For CLI commands only (main thread, no workers): run one statement and
 * block until it finishes. Returns the rows (caller frees with
 * rx_rows_free) — never NULL; check rx_rows_failed(). */
RX_EXPORT rx_rows *rx_db_run(rx_module *m, const char *sql, int nparams, const rx_param *params);
RX_EXPORT void rx_rows_free(rx_rows *r);

/* ------------------------------------------------------------------------ */
/* Migrations                                                               */
/* ------------------------------------------------------------------------ */
/* A module's migrations/NNN_name.sql files are embedded in its .so at build
 * time (CMake: rxd_module(name ... MIGRATIONS migrations) generates the array
 * `const rx_migration <name>_migrations[]`). `rxd migrate` applies pending
 * ones in module dependency order, each in its own transaction, under an
 * advisory lock; a changed checksum of an applied one is an error. `serve`
 * refuses to start with pending migrations unless given --migrate. */
typedef struct rx_migration {
    int version;      /* NNN */
    const char *name; /* "create_users" */
    const char *sql;
} rx_migration;
/* `list` ends with an entry whose version is 0. Only callable from init. */
RX_EXPORT int rx_migrations(rx_module *m, const rx_migration *list);

/* ------------------------------------------------------------------------ */
/* Redis                                                                    */
/* ------------------------------------------------------------------------ */
/*
 * One async connection per worker (config `redis.url`, `redis.timeout`,
 * default 5 s). A command that does not answer in time, or Redis down, calls
 * back with RX_ETIMEDOUT / RX_EUNAVAIL (reply 503 with rx_reply_unavailable).
 * rx_redis_command and rx_ratelimit return 0 and then call back exactly once,
 * later, on the worker's thread; RX_EINVAL, RX_ENOMEM or RX_ESTATE (worker
 * stopping) mean the callback never runs. `err` is only about the connection
 * (0, RX_EUNAVAIL, RX_ETIMEDOUT): an error answered by Redis arrives with
 * err 0 and type RX_REDIS_ERROR. Connection-state commands (SUBSCRIBE and
 * friends, MONITOR, SELECT, QUIT, RESET) are refused with RX_EINVAL: use
 * rx_subscribe, and the database number of redis.url.
 */
typedef struct rx_redis_reply rx_redis_reply; /* valid during the callback only */
typedef enum rx_redis_type {
    RX_REDIS_NIL = 0,
    RX_REDIS_STRING,
    RX_REDIS_INTEGER,
    RX_REDIS_ARRAY,
    RX_REDIS_STATUS,
    RX_REDIS_ERROR
} rx_redis_type;
typedef void (*rx_redis_cb)(rx_req *req, int err, const rx_redis_reply *reply);

/* Send one command, argv[i] with argvlen[i] bytes (argvlen NULL: strlen). */
RX_EXPORT int rx_redis_command(rx_req *req, rx_redis_cb cb, int argc, const char *const *argv,
                               const size_t *argvlen);
/* rx_redis(req, cb, "SET", key, value) — NUL-terminated string arguments. */
#define rx_redis(req, cb, ...)                                                                     \
    rx_redis_command(req, cb,                                                                      \
                     (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),         \
                     (const char *const[]){__VA_ARGS__}, NULL)

RX_EXPORT rx_redis_type rx_redis_reply_type(const rx_redis_reply *r);
RX_EXPORT int64_t rx_redis_reply_int(const rx_redis_reply *r);
/* STRING, STATUS, ERROR: bytes and length. Borrowed. */
RX_EXPORT const char *rx_redis_reply_str(const rx_redis_reply *r, size_t *len);
RX_EXPORT size_t rx_redis_reply_len(const rx_redis_reply *r); /* ARRAY elements */
RX_EXPORT const rx_redis_reply *rx_redis_reply_elem(const rx_redis_reply *r, size_t i);

/* Rate limiting shared by every instance (one atomic Redis script, sliding
 * window). `key` names the bucket ("login:ip:1.2.3.4"); `limit` events per
 * `window_s` seconds. The callback learns whether this event is allowed, how
 * many remain, and after how many seconds to retry. With config
 * `ratelimit.enabled = false` every event is allowed without touching Redis. */
typedef struct rx_ratelimit_result {
    bool allowed;
    int remaining;
    int retry_after_s;
} rx_ratelimit_result;
/* `res` is never NULL; when err != 0 it says refused, retry after 1 s. */
typedef void (*rx_ratelimit_cb)(rx_req *req, int err, const rx_ratelimit_result *res);
RX_EXPORT int rx_ratelimit(rx_req *req, const char *key, int limit, int window_s,
                           rx_ratelimit_cb cb);
/* 429 {"detail": ..., "code": code} with Retry-After. code NULL = "throttled";
 * detail NULL = DRF's "Request was throttled. Expected available in N seconds." */
RX_EXPORT void rx_reply_throttled(rx_req *req, int retry_after_s, const char *code,
                                  const char *detail);

/* Publish to every instance; subscribers registered at init get the message
 * on every worker of every instance (cache invalidation, fan-out).
 * rx_publish has no callback: RX_EUNAVAIL at once when Redis is down. From a
 * CLI command (no workers) pass req = NULL: it then publishes over a short
 * blocking connection and returns 0 once Redis accepted the message.
 * Handlers run on every worker thread at the same time (`ud` must be thread
 * safe); messages published while a subscriber reconnects are lost, so use
 * pub/sub for hints (invalidate, refresh), never as the only copy of data. */
typedef void (*rx_message_fn)(const char *channel, const char *msg, size_t len, void *ud);
RX_EXPORT int rx_publish(rx_req *req, const char *channel, const char *msg, size_t len);
RX_EXPORT int rx_subscribe(rx_module *m, const char *channel, rx_message_fn fn, void *ud);

/* ------------------------------------------------------------------------ */
/* Jobs                                                                     */
/* ------------------------------------------------------------------------ */
/*
 * Durable jobs in PostgreSQL (table rx_jobs). A job runs on a worker's event
 * loop with an rx_req that has no client: every rx_db_*, rx_redis_*,
 * rx_offload, rx_emit call works with it; rx_reply_* does not. The task
 * function must eventually call rx_job_done() exactly once. A job that fails
 * (or times out, or whose process dies) is retried with exponential backoff
 * and jitter up to max_attempts, then marked dead with its last error.
 *
 * Enqueue in the same statement as the change that causes it, so both commit
 * or neither does:  WITH o AS (INSERT ... RETURNING id)
 *                   SELECT rx_enqueue('orders.notify', jsonb_build_object('id', o.id)) FROM o;
 * SQL: rx_enqueue(task text, payload jsonb [, run_at timestamptz]) returns the job id.
 */
typedef struct rx_task_opts {
    int max_attempts; /* default 5 */
    int timeout_s;    /* per attempt, default 30; the lease is min(timeout_s + 5, 60) s, renewed while it runs */
    int backoff_ms;   /* first retry delay, doubled each attempt (+jitter); default 1000 */
} rx_task_opts;

typedef void (*rx_task_fn)(rx_req *job);
/* Register task `name` (unique across modules, e.g. "notify.send"). Only from init. */
RX_EXPORT int rx_task(rx_module *m, const char *name, rx_task_fn fn, const rx_task_opts *opts);
/* Periodic task: `schedule` is an interval ("30s", "5m", "1h") or a 5-field
 * cron expression in UTC ("*\/5 * * * *"). Fires once per slot across all
 * instances. Only from init. */
RX_EXPORT int rx_every(rx_module *m, const char *name, const char *schedule, rx_task_fn fn);

/* Whether a task of that name is registered in this process (by any module):
 * lets a module dispatch work to tasks other modules own without knowing them
 * (e.g. webhooks -> "webhook.apply.<event type>"). Thread safe after init. */
RX_EXPORT bool rx_task_exists(const char *name);

/* From a task: the payload (borrowed), the job id, and this attempt (1..). */
RX_EXPORT json_t *rx_job_payload(rx_req *job);
RX_EXPORT int64_t rx_job_id(const rx_req *job);
RX_EXPORT int rx_job_attempt(const rx_req *job);
RX_EXPORT bool rx_req_is_job(const rx_req *req);
/* Finish the job: error NULL = success; otherwise retried or dead. */
RX_EXPORT void rx_job_done(rx_req *job, const char *error);

/* Enqueue from C (its own statement). delay_s 0 = now. `cb` may be NULL. */
RX_EXPORT int rx_enqueue(rx_req *req, const char *task, const json_t *payload, int delay_s,
                         rx_db_cb cb);

#ifdef __cplusplus
}
#endif
#endif /* RX_H */
