/*
 * fuzz_router.c — libFuzzer target for kernel/router.c.
 *
 * Each input is used three ways: as a request path matched with every method
 * against a fixed router of representative routes (checking the match
 * invariants, not just "no crash"), as a string to percent-decode both ways,
 * and as a route template added to a fresh router (a template that is
 * accepted must then match its own text and refuse a second registration).
 *
 *   clang-14 -g -fsanitize=fuzzer,address,undefined -Ikernel -Isdk \
 *     $(pkg-config --cflags jansson) tests/fuzz/fuzz_router.c kernel/router.c
 */
#include "kn.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void handler(rx_req *req)
{
    (void)req;
}

static const struct {
    unsigned methods;
    const char *path;
} specs[] = {
    {RX_GET, "/healthz"},
    {RX_GET, "/readyz"},
    {RX_GET, "/"},
    {RX_GET, "/api/schema/"},
    {RX_GET | RX_POST, "/api/inventory/"},
    {RX_GET, "/api/inventory/export/"},
    {RX_GET | RX_PUT | RX_PATCH, "/api/inventory/{id}/"},
    {RX_DELETE, "/api/inventory/{pk}/"},
    {RX_GET | RX_POST, "/api/pharmacies/{id}/api-keys/"},
    {RX_DELETE, "/api/pharmacies/{id}/api-keys/{key_id}/"},
    {RX_GET, "/api/pharmacies/{id}/orders/{order_id}/items/{item_id}"},
    {RX_POST, "/api/auth/token/"},
    {RX_POST, "/api/auth/token/refresh/"},
    {RX_GET, "/api/{resource}/"},
    {RX_HEAD, "/api/{resource}/"},
    {RX_OPTIONS, "/api/cors/"},
    {RX_GET, "/a/b/c"},
    {RX_GET, "/a/{x}/d"},
};
#define NSPECS (sizeof(specs) / sizeof(specs[0]))

static kn_router *router;
static kn_route routes[NSPECS];

static void init(void)
{
    router = kn_router_new();
    if (!router)
        abort();
    for (size_t i = 0; i < NSPECS; i++) {
        routes[i].methods = specs[i].methods;
        routes[i].path = (char *)specs[i].path; /* never freed: lives for the process */
        routes[i].handler = handler;
        if (kn_router_add(router, &routes[i], NULL) != 0)
            abort();
    }
}

static void check_match(const char *path, size_t len)
{
    static const unsigned methods[] = {RX_GET,   RX_HEAD,   RX_POST,    RX_PUT,
                                       RX_PATCH, RX_DELETE, RX_OPTIONS};
    unsigned allowed = 0;
    for (size_t k = 0; k < sizeof(methods) / sizeof(methods[0]); k++) {
        unsigned meth = methods[k];
        kn_match m;
        int rc = kn_router_match(router, meth, path, len, &m);
        /* the path decides the allowed set, whatever the method */
        if (k == 0)
            allowed = m.allowed;
        else if (m.allowed != allowed)
            abort();
        if (m.allowed && !(m.allowed & RX_OPTIONS))
            abort();
        if (rc != 0) {
            if (rc != RX_ENOENT || m.route || m.nparams)
                abort();
            continue;
        }
        if (!m.route || !(m.allowed & meth))
            abort();
        if (!(m.route->methods & meth) && !(meth == RX_HEAD && (m.route->methods & RX_GET)))
            abort();
        if (m.nparams != m.route->nparams)
            abort();
        for (int i = 0; i < m.nparams; i++) {
            const char *v = m.params[i].value;
            size_t vl = m.params[i].len;
            if (m.params[i].name != m.route->param_names[i])
                abort();
            /* a capture is a whole, non-empty segment inside the path */
            if (vl == 0 || v <= path || v + vl > path + len || memchr(v, '/', vl))
                abort();
            if (v[-1] != '/' || (v + vl < path + len && v[vl] != '/'))
                abort();
        }
    }
}

static void check_decode(const uint8_t *data, size_t size, bool plus)
{
    char *s = malloc(size + 1);
    if (!s)
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    long n = kn_url_decode(s, size, plus);
    if (n != -1) {
        if (n < 0 || (size_t)n > size || memchr(s, '\0', (size_t)n))
            abort();
        if ((size_t)n < size && s[n] != '\0')
            abort();
    } else if (memcmp(s, data, size) != 0) {
        abort(); /* an error leaves the buffer as it was */
    }
    free(s);
}

static void check_add(const uint8_t *data, size_t size)
{
    char *pat = malloc(size + 1);
    if (!pat)
        return;
    memcpy(pat, data, size);
    pat[size] = '\0';
    kn_router *r = kn_router_new();
    if (!r)
        abort();
    kn_route rt = {.methods = RX_GET | RX_POST, .path = pat, .handler = handler};
    kn_route *conflict = NULL;
    int rc = kn_router_add(r, &rt, &conflict);
    if (rc == 0) {
        /* the template's own text matches it: literals are themselves and
         * "{name}" is a non-empty capture value */
        kn_match m;
        size_t len = strlen(pat);
        if (kn_router_match(r, RX_POST, pat, len, &m) != 0 || m.route != &rt ||
            m.nparams != rt.nparams)
            abort();
        kn_route again = {.methods = RX_POST, .path = pat, .handler = handler};
        if (kn_router_add(r, &again, &conflict) != RX_EEXIST || conflict != &rt)
            abort();
        kn_route_free_params(&again);
        kn_route other = {.methods = RX_DELETE, .path = pat, .handler = handler};
        if (kn_router_add(r, &other, &conflict) != 0 || conflict)
            abort();
        kn_route_free_params(&other);
    } else if (rc != RX_EINVAL || rt.nparams != 0 || conflict) {
        abort();
    }
    kn_route_free_params(&rt);
    kn_router_free(r);
    free(pat);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!router)
        init();
    check_match((const char *)data, size);
    check_decode(data, size, false);
    check_decode(data, size, true);
    check_add(data, size);
    return 0;
}
