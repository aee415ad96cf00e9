/*
 * kn.h — kernel internals shared between kernel files (never installed).
 *
 * The kernel is split by idea: config.c (the config file + env overrides),
 * router.c (radix tree over path segments), registry.c (what modules
 * registered), module.c (loading and ordering modules), server.c (workers,
 * listening sockets, shutdown), http.c (one connection: llhttp glue, limits,
 * timeouts, writing replies), req.c (rx_req_* accessors and replies),
 * dispatch.c (hook phases and built-in routes), openapi.c, metrics.c, log.c.
 */
#ifndef KN_H
#define KN_H

#include "rx.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KN_VERSION "0.1.0"

/* ------------------------------------------------------------------ */
/* config.c                                                            */
/* ------------------------------------------------------------------ */
/*
 * File format: UTF-8 text, one `key = value` per line; `#` or `;` start a
 * comment line (and ` #` a trailing comment); `[section]` prefixes the keys
 * that follow with "section."; values are taken verbatim after trimming, and
 * may be "double quoted" (then \" \\ \n \t escapes apply and # is literal).
 * Keys are [a-z0-9_.-]; a key given twice is an error (file:line of both).
 * Environment: at load time every RXD_* variable is captured; a lookup of key
 * k first looks for RXD_ + upper(k) with '.' and '-' replaced by '_'.
 */
typedef struct kn_config kn_config;

/* Parse `text` (len bytes, `name` used in error messages). On error returns
 * non-zero and writes "name:line: message" into err. *out is caller-freed. */
int kn_config_parse(kn_config **out, const char *text, size_t len, const char *name, char *err,
                    size_t errlen);
/* Read and parse a file. */
int kn_config_load(kn_config **out, const char *path, char *err, size_t errlen);
/* An empty config (only the environment). */
kn_config *kn_config_empty(void);
void kn_config_free(kn_config *c);

/* The value of key (environment first, then file), or NULL. Borrowed. */
const char *kn_config_get(const kn_config *c, const char *key);
/* Where the value comes from: "env RXD_X", "file:line", or NULL when unset. Static/borrowed. */
const char *kn_config_origin(const kn_config *c, const char *key, char *buf, size_t buflen);
/* Typed getters: return 0 and set *out (def when unset), or RX_ERANGE/RX_EINVAL
 * when the value is malformed (then *out is untouched). */
int kn_config_int(const kn_config *c, const char *key, long long def, long long *out);
int kn_config_bool(const kn_config *c, const char *key, bool def, bool *out);
/* Sizes: plain bytes or with k/K, m/M, g/G suffix (powers of 1024). */
int kn_config_size(const kn_config *c, const char *key, long long def, long long *out);
/* Durations in ms: plain number = seconds; suffixes ms, s, m, h ("500ms", "60s", "2m"). */
int kn_config_duration_ms(const kn_config *c, const char *key, long long def, long long *out);
/* The keys set in the file, in file order (for `rxd check`). */
size_t kn_config_file_count(const kn_config *c);
const char *kn_config_file_key(const kn_config *c, size_t i, int *line);
/* The path the config came from ("" for an empty config). Borrowed. */
const char *kn_config_path(const kn_config *c);

/* Split a space-separated list value into a NULL-terminated array
 * (caller frees with kn_strv_free). NULL value -> empty list. */
char **kn_split_list(const char *value, size_t *count);
void kn_strv_free(char **v);

/* ------------------------------------------------------------------ */
/* router.c                                                            */
/* ------------------------------------------------------------------ */

#define KN_MAX_PARAMS 16
#define KN_METHOD_ALL 0x7f

struct kn_module;
struct kn_route_metrics;

typedef struct kn_route {
    unsigned methods; /* rx_method bits */
    char *path;       /* template, e.g. "/api/x/{id}/" (owned) */
    rx_handler handler;
    rx_route_opts opts; /* strings owned (copied) */
    struct kn_module *module;
    int index;                   /* position in the registry, for metrics */
    int nparams;                 /* captures in the template */
    char *param_names[KN_MAX_PARAMS]; /* in template order (owned) */
} kn_route;

typedef struct kn_router kn_router;

typedef struct kn_match {
    kn_route *route; /* the route for the method, NULL if none */
    unsigned allowed; /* methods the path answers (GET implies HEAD), 0 = no such path */
    int nparams;
    struct {
        const char *name;  /* borrowed from the route */
        const char *value; /* points into the path given to match (not decoded) */
        size_t len;
    } params[KN_MAX_PARAMS];
} kn_match;

kn_router *kn_router_new(void);
/* Frees the tree only; routes belong to the registry. */
void kn_router_free(kn_router *r);
/* Parse route->path into the tree; fills route->nparams / param_names.
 * Pattern rules: must start with '/', segments are literals of
 * [A-Za-z0-9._~!$&'()*+,;=:@-] or exactly "{name}" with name [A-Za-z_][A-Za-z0-9_]*,
 * at most KN_MAX_PARAMS captures, no empty segment except a trailing slash, no
 * duplicate capture names. Returns 0, RX_EINVAL (bad pattern), or RX_EEXIST
 * with *conflict the registered route whose shape and methods overlap
 * (two captures at the same position are the same shape whatever their names). */
int kn_router_add(kn_router *r, kn_route *route, kn_route **conflict);
void kn_route_free_params(kn_route *route); /* frees param_names set by kn_router_add */
/* Match method + path (raw, without query; len bytes). Literal segments win
 * over captures, with backtracking. Returns 0 when a route matched, else
 * RX_ENOENT with m->allowed telling 404 (0) from 405 (non-zero). */
int kn_router_match(const kn_router *r, unsigned method, const char *path, size_t len,
                    kn_match *m);
/* The "GET, HEAD, POST" text for an Allow header; writes into buf. */
const char *kn_methods_text(unsigned methods, char *buf, size_t buflen);
/* "GET" -> RX_GET, 0 when unknown. */
unsigned kn_method_from_name(const char *name, size_t len);

/* Percent-decode in place; returns the new length or -1 on a bad escape.
 * plus_is_space: decode '+' as ' ' (query strings). */
long kn_url_decode(char *s, size_t len, bool plus_is_space);

/* ------------------------------------------------------------------ */
/* registry.c: everything the modules registered                       */
/* ------------------------------------------------------------------ */

typedef struct kn_hook {
    int priority;
    int seq; /* registration order, to keep sorting stable */
    struct kn_module *module;
    union {
        rx_hook_fn fn;
        rx_response_hook_fn resp;
    } u;
    void *data;
} kn_hook;

typedef struct kn_schema {
    char *name;
    char *json; /* JSON text */
    struct kn_module *module;
} kn_schema;

typedef struct kn_command {
    char *name;
    char *usage;
    rx_command_fn fn;
    struct kn_module *module;
} kn_command;

typedef struct kn_ready {
    char *name;
    rx_ready_fn fn;
    void *data;
    struct kn_module *module;
} kn_ready;

typedef struct kn_sub {
    char *event;
    rx_event_fn fn;
    void *ud;
    struct kn_module *module;
} kn_sub;

typedef struct kn_module {
    const rx_module_desc *desc;
    void *dl;       /* dlopen handle, NULL for built-in */
    char *path;     /* file loaded */
    char *fail_why; /* rx_module_fail() text */
    bool initialised;
} kn_module;

#define KN_VEC(T)                                                                                   \
    struct {                                                                                       \
        T *v;                                                                                      \
        size_t n, cap;                                                                             \
    }

typedef struct kn_registry {
    KN_VEC(kn_module *) modules; /* in dependency (init) order */
    KN_VEC(kn_route *) routes;
    KN_VEC(kn_schema) schemas;
    KN_VEC(kn_hook) hooks_request, hooks_authn, hooks_authz, hooks_response;
    KN_VEC(kn_command) commands;
    KN_VEC(kn_ready) ready;
    KN_VEC(kn_sub) subs;
    kn_router *router;
    bool open; /* registration allowed (during init) */
    /* first error while registering (duplicate route, ...), reported at start-up */
    char error[512];
} kn_registry;

extern kn_registry kn_reg;

/* Record a registration error for start-up to report (the first one wins:
 * later ones are often its consequences). */
void kn_reg_error(const char *fmt, ...) RX_PRINTF(1, 2);
/* Register a kernel route (module NULL = "kernel"). */
int kn_route_add(kn_module *m, unsigned methods, const char *path, rx_handler h,
                 const rx_route_opts *opts);
/* Sort hooks by priority (stable) after every init. */
void kn_registry_seal(void);
void kn_registry_free(void);

/* ------------------------------------------------------------------ */
/* module.c                                                            */
/* ------------------------------------------------------------------ */
/* Check a descriptor before anything of the module is used: ABI major equal,
 * minor not newer than ours, struct size at least ABI 1.0's, name equal to
 * the name it was loaded by, version set. 0 or -1 with a message in err. */
int kn_module_check_desc(const rx_module_desc *d, const char *expected_name, char *err,
                         size_t errlen);
/* Order modules so each comes after what it requires (stable: otherwise the
 * configured order). mods[i] are loaded modules; writes the order into out.
 * -1 with err for a missing requirement or a cycle. */
int kn_module_order(kn_module **mods, size_t n, kn_module **out, char *err, size_t errlen);
/* dlopen() each name from module_path, check, order, call init. */
int kn_modules_load(char **names, size_t n, const char *module_path, char *err, size_t errlen);
void kn_modules_stop(void);
void kn_modules_unload(void);

/* ------------------------------------------------------------------ */
/* openapi.c                                                           */
/* ------------------------------------------------------------------ */
/* The OpenAPI 3.1 document of every registered route as JSON text
 * (caller frees), or NULL with err set when a schema text is invalid. */
char *kn_openapi_build(const kn_registry *reg, char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* log.c                                                               */
/* ------------------------------------------------------------------ */
void kn_log(rx_log_level level, const char *module, const char *fmt, ...) RX_PRINTF(3, 4);
/* Write one already-formatted JSON line (adds '\n') atomically to stdout. */
void kn_log_line(const char *json, size_t len);
extern rx_log_level kn_log_min;
extern int kn_log_fd; /* where log lines go: stdout for serve/worker, else stderr */

#endif
