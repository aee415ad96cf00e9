/*
 * registry.c — what modules registered during init: routes, schemas, hooks,
 * event subscribers, readiness checks and CLI commands. Registration is open
 * only while modules initialise on the main thread; afterwards every table is
 * read-only and shared by the workers without locks.
 */
#include "kn_http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kn_registry kn_reg;
static int hook_seq;

#define VEC_PUSH(vec, item)                                                                        \
    ({                                                                                             \
        int ok_ = 0;                                                                               \
        if ((vec).n == (vec).cap) {                                                                \
            size_t nc_ = (vec).cap ? (vec).cap * 2 : 8;                                            \
            void *nv_ = realloc((vec).v, nc_ * sizeof(*(vec).v));                                  \
            if (nv_ == NULL)                                                                       \
                ok_ = RX_ENOMEM;                                                                   \
            else {                                                                                 \
                (vec).v = nv_;                                                                     \
                (vec).cap = nc_;                                                                   \
            }                                                                                      \
        }                                                                                          \
        if (ok_ == 0)                                                                              \
            (vec).v[(vec).n++] = (item);                                                           \
        ok_;                                                                                       \
    })

const char *rx_strerror(int err)
{
    switch (err) {
    case RX_OK: return "RX_OK: success";
    case RX_EINVAL: return "RX_EINVAL: invalid argument";
    case RX_ENOMEM: return "RX_ENOMEM: out of memory";
    case RX_EEXIST: return "RX_EEXIST: already exists";
    case RX_ENOENT: return "RX_ENOENT: no such entry";
    case RX_ERANGE: return "RX_ERANGE: value out of range or not a number";
    case RX_ESTATE: return "RX_ESTATE: called at the wrong time";
    case RX_EUNAVAIL: return "RX_EUNAVAIL: service unavailable";
    case RX_ETIMEDOUT: return "RX_ETIMEDOUT: timed out";
    default: return "unknown error";
    }
}

const char *rx_module_name(const rx_module *m)
{
    const kn_module *k = (const kn_module *)m;
    return k ? k->desc->name : "kernel";
}

void rx_module_fail(rx_module *m, const char *fmt, ...)
{
    kn_module *k = (kn_module *)m;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    free(k->fail_why);
    k->fail_why = strdup(buf);
}

static const char *modname(const kn_module *m)
{
    return m ? m->desc->name : "kernel";
}

void kn_reg_error(const char *fmt, ...)
{
    if (kn_reg.error[0] != '\0')
        return; /* keep the first: later ones are often consequences */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kn_reg.error, sizeof(kn_reg.error), fmt, ap);
    va_end(ap);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void route_free(kn_route *r)
{
    if (r == NULL)
        return;
    free(r->path);
    free((char *)r->opts.perm);
    free((char *)r->opts.summary);
    free((char *)r->opts.description);
    free((char *)r->opts.tag);
    free((char *)r->opts.request_schema);
    free((char *)r->opts.response_schema);
    for (int i = 0; i < r->nparams; i++)
        free(r->param_names[i]);
    free(r);
}

int kn_route_add(kn_module *m, unsigned methods, const char *path, rx_handler h,
                 const rx_route_opts *opts)
{
    static const rx_route_opts none;
    if (!kn_reg.open)
        return RX_ESTATE;
    if (opts == NULL)
        opts = &none;
    if (path == NULL || h == NULL || methods == 0 || (methods & ~(unsigned)KN_METHOD_ALL)) {
        kn_reg_error("module '%s': route %s: invalid arguments", modname(m), path ? path : "(null)");
        return RX_EINVAL;
    }
    if (opts->perm != NULL && opts->public_route) {
        kn_reg_error("module '%s': route %s declares both a permission and public_route",
                  modname(m), path);
        return RX_EINVAL;
    }
    if (opts->perm == NULL && !opts->public_route) {
        kn_reg_error("module '%s': route %s declares neither a permission nor public_route "
                  "(deny by default: say who may call it)",
                  modname(m), path);
        return RX_EINVAL;
    }
    kn_route *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return RX_ENOMEM;
    r->methods = methods;
    r->path = strdup(path);
    r->handler = h;
    r->opts = *opts;
    r->opts.perm = dup_or_null(opts->perm);
    r->opts.summary = dup_or_null(opts->summary);
    r->opts.description = dup_or_null(opts->description);
    r->opts.tag = dup_or_null(opts->tag);
    r->opts.request_schema = dup_or_null(opts->request_schema);
    r->opts.response_schema = dup_or_null(opts->response_schema);
    r->module = m;
    kn_route *conflict = NULL;
    int rc = kn_router_add(kn_reg.router, r, &conflict);
    if (rc == RX_EEXIST) {
        char a[64], b[64];
        kn_reg_error("duplicate route: module '%s' registers %s %s, already registered by module "
                  "'%s' as %s %s",
                  modname(m), kn_methods_text(methods & conflict->methods, a, sizeof(a)), path,
                  modname(conflict->module), kn_methods_text(conflict->methods, b, sizeof(b)),
                  conflict->path);
        route_free(r);
        return rc;
    }
    if (rc != 0) {
        kn_reg_error("module '%s': invalid route pattern '%s'", modname(m), path);
        route_free(r);
        return rc;
    }
    r->index = (int)kn_reg.routes.n;
    if (VEC_PUSH(kn_reg.routes, r) != 0)
        return RX_ENOMEM;
    return 0;
}

int rx_route(rx_module *m, unsigned methods, const char *path, rx_handler handler,
             const rx_route_opts *opts)
{
    return kn_route_add((kn_module *)m, methods, path, handler, opts);
}

int rx_schema(rx_module *m, const char *name, const char *json_schema)
{
    if (!kn_reg.open)
        return RX_ESTATE;
    if (name == NULL || json_schema == NULL)
        return RX_EINVAL;
    json_error_t e;
    json_t *j = json_loads(json_schema, 0, &e);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        kn_reg_error("module '%s': schema '%s' is not a JSON object: %s", modname((kn_module *)m),
                  name, e.text);
        return RX_EINVAL;
    }
    json_decref(j);
    for (size_t i = 0; i < kn_reg.schemas.n; i++)
        if (strcmp(kn_reg.schemas.v[i].name, name) == 0) {
            kn_reg_error("module '%s': schema '%s' already registered by module '%s'",
                      modname((kn_module *)m), name, modname(kn_reg.schemas.v[i].module));
            return RX_EEXIST;
        }
    kn_schema s = {strdup(name), strdup(json_schema), (kn_module *)m};
    return VEC_PUSH(kn_reg.schemas, s);
}

static int hook_add(void *vec, rx_module *m, int priority, void *fn, void *data, bool resp)
{
    if (!kn_reg.open)
        return RX_ESTATE;
    if (fn == NULL)
        return RX_EINVAL;
    KN_VEC(kn_hook) *v = vec;
    kn_hook h = {.priority = priority, .seq = hook_seq++, .module = (kn_module *)m, .data = data};
    if (resp)
        h.u.resp = (rx_response_hook_fn)fn;
    else
        h.u.fn = (rx_hook_fn)fn;
    return VEC_PUSH(*v, h);
}

int rx_hook_request(rx_module *m, int priority, rx_hook_fn fn, void *data)
{
    return hook_add(&kn_reg.hooks_request, m, priority, (void *)fn, data, false);
}
int rx_hook_authenticate(rx_module *m, int priority, rx_hook_fn fn, void *data)
{
    return hook_add(&kn_reg.hooks_authn, m, priority, (void *)fn, data, false);
}
int rx_hook_authorize(rx_module *m, int priority, rx_hook_fn fn, void *data)
{
    return hook_add(&kn_reg.hooks_authz, m, priority, (void *)fn, data, false);
}
int rx_hook_response(rx_module *m, int priority, rx_response_hook_fn fn, void *data)
{
    return hook_add(&kn_reg.hooks_response, m, priority, (void *)fn, data, true);
}

int rx_command(rx_module *m, const char *name, rx_command_fn fn, const char *usage)
{
    static const char *reserved[] = {"serve", "check", "routes", "openapi", "version", "help",
                                     "migrate", "worker", "jobs", NULL};
    if (!kn_reg.open)
        return RX_ESTATE;
    if (name == NULL || fn == NULL || name[0] == '\0' || name[0] == '-')
        return RX_EINVAL;
    for (int i = 0; reserved[i]; i++)
        if (strcmp(reserved[i], name) == 0) {
            kn_reg_error("module '%s': command '%s' is reserved by the kernel", modname((kn_module *)m),
                      name);
            return RX_EEXIST;
        }
    for (size_t i = 0; i < kn_reg.commands.n; i++)
        if (strcmp(kn_reg.commands.v[i].name, name) == 0) {
            kn_reg_error("module '%s': command '%s' already registered by module '%s'",
                      modname((kn_module *)m), name, modname(kn_reg.commands.v[i].module));
            return RX_EEXIST;
        }
    kn_command c = {strdup(name), strdup(usage ? usage : ""), fn, (kn_module *)m};
    return VEC_PUSH(kn_reg.commands, c);
}

int rx_ready_check(rx_module *m, const char *name, rx_ready_fn fn, void *data)
{
    if (!kn_reg.open)
        return RX_ESTATE;
    if (name == NULL || fn == NULL)
        return RX_EINVAL;
    kn_ready r = {strdup(name), fn, data, (kn_module *)m};
    return VEC_PUSH(kn_reg.ready, r);
}

int rx_on(rx_module *m, const char *event, rx_event_fn fn, void *ud)
{
    if (!kn_reg.open)
        return RX_ESTATE;
    if (event == NULL || fn == NULL || event[0] == '\0')
        return RX_EINVAL;
    kn_sub s = {strdup(event), fn, ud, (kn_module *)m};
    return VEC_PUSH(kn_reg.subs, s);
}

int rx_emit(rx_req *req, const char *event, json_t *data)
{
    int n = 0;
    for (size_t i = 0; i < kn_reg.subs.n; i++) {
        kn_sub *s = &kn_reg.subs.v[i];
        if (strcmp(s->event, event) == 0) {
            s->fn(req, event, data, s->ud);
            n++;
        }
    }
    return n;
}

static int hook_cmp(const void *a, const void *b)
{
    const kn_hook *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void sort_hooks(kn_hook *v, size_t n)
{
    if (n > 1) /* qsort(NULL, 0, ...) is undefined */
        qsort(v, n, sizeof(kn_hook), hook_cmp);
}

void kn_registry_seal(void)
{
    sort_hooks(kn_reg.hooks_request.v, kn_reg.hooks_request.n);
    sort_hooks(kn_reg.hooks_authn.v, kn_reg.hooks_authn.n);
    sort_hooks(kn_reg.hooks_authz.v, kn_reg.hooks_authz.n);
    sort_hooks(kn_reg.hooks_response.v, kn_reg.hooks_response.n);
    kn_reg.open = false;
}

void kn_registry_free(void)
{
    for (size_t i = 0; i < kn_reg.routes.n; i++)
        route_free(kn_reg.routes.v[i]);
    free(kn_reg.routes.v);
    for (size_t i = 0; i < kn_reg.schemas.n; i++) {
        free(kn_reg.schemas.v[i].name);
        free(kn_reg.schemas.v[i].json);
    }
    free(kn_reg.schemas.v);
    free(kn_reg.hooks_request.v);
    free(kn_reg.hooks_authn.v);
    free(kn_reg.hooks_authz.v);
    free(kn_reg.hooks_response.v);
    for (size_t i = 0; i < kn_reg.commands.n; i++) {
        free(kn_reg.commands.v[i].name);
        free(kn_reg.commands.v[i].usage);
    }
    free(kn_reg.commands.v);
    for (size_t i = 0; i < kn_reg.ready.n; i++)
        free(kn_reg.ready.v[i].name);
    free(kn_reg.ready.v);
    for (size_t i = 0; i < kn_reg.subs.n; i++)
        free(kn_reg.subs.v[i].event);
    free(kn_reg.subs.v);
    if (kn_reg.router)
        kn_router_free(kn_reg.router);
    /* Modules are unloaded after this (module.c): keep their list. */
    __typeof__(kn_reg.modules) mods = kn_reg.modules;
    memset(&kn_reg, 0, sizeof(kn_reg));
    kn_reg.modules = mods;
}

/* ---- module configuration (SDK glue over config.c) ---- */

static const char *conf_key(const rx_module *m, const char *key, char *buf, size_t len)
{
    if (m == NULL)
        return key;
    snprintf(buf, len, "%s.%s", rx_module_name(m), key);
    return buf;
}

const char *rx_config_str(const rx_module *m, const char *key, const char *def)
{
    char buf[256];
    const char *v = kn_conf ? kn_config_get(kn_conf, conf_key(m, key, buf, sizeof(buf))) : NULL;
    return v ? v : def;
}

int rx_config_int(const rx_module *m, const char *key, long long def, long long *out)
{
    char buf[256];
    if (kn_conf == NULL) {
        *out = def;
        return 0;
    }
    return kn_config_int(kn_conf, conf_key(m, key, buf, sizeof(buf)), def, out);
}

int rx_config_bool(const rx_module *m, const char *key, bool def, bool *out)
{
    char buf[256];
    if (kn_conf == NULL) {
        *out = def;
        return 0;
    }
    return kn_config_bool(kn_conf, conf_key(m, key, buf, sizeof(buf)), def, out);
}
