/*
 * test_router.c — unit tests of kernel/router.c: template validation,
 * conflicts, matching (priority, backtracking, 404 vs 405, HEAD via GET),
 * the Allow text, method names and percent-decoding.
 *
 * Each test gets a fresh router and a pool of zeroed routes; the fixture
 * owns the routes' paths (strdup'd here, as the registry would) and frees
 * their param_names with kn_route_free_params(), so the suite runs clean
 * under ASan/valgrind.
 */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn.h"

#define MAX_ROUTES 128
#define ALL_ALLOWED (KN_METHOD_ALL)

typedef struct fx {
    kn_router *r;
    kn_route routes[MAX_ROUTES];
    int n;
} fx;

static void handler_a(rx_req *req)
{
    (void)req;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->r = kn_router_new();
    if (!f->r) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kn_router_free(f->r);
    for (int i = 0; i < f->n; i++) {
        kn_route_free_params(&f->routes[i]);
        free(f->routes[i].path);
    }
    free(f);
    return 0;
}

/* A fresh route in the pool; path may be NULL to test that case. */
static kn_route *new_route(fx *f, unsigned methods, const char *path)
{
    assert_true(f->n < MAX_ROUTES);
    kn_route *rt = &f->routes[f->n++];
    rt->methods = methods;
    rt->path = path ? strdup(path) : NULL;
    if (path)
        assert_non_null(rt->path);
    rt->handler = handler_a;
    return rt;
}

static int add(fx *f, unsigned methods, const char *path, kn_route **out, kn_route **conflict)
{
    kn_route *rt = new_route(f, methods, path);
    if (out)
        *out = rt;
    kn_route *dummy;
    return kn_router_add(f->r, rt, conflict ? conflict : &dummy);
}

static kn_route *add_ok(fx *f, unsigned methods, const char *path)
{
    kn_route *rt, *conflict = NULL;
    int rc = add(f, methods, path, &rt, &conflict);
    if (rc != 0)
        fail_msg("adding %s failed: %d", path, rc);
    assert_null(conflict);
    return rt;
}

static int match(fx *f, unsigned method, const char *path, kn_match *m)
{
    /* poison, so a field the router forgot to set is caught */
    memset(m, 0xa5, sizeof(*m));
    return kn_router_match(f->r, method, path, strlen(path), m);
}

static void assert_param(const kn_match *m, int i, const char *name, const char *value)
{
    assert_true(i < m->nparams);
    assert_string_equal(m->params[i].name, name);
    assert_int_equal(m->params[i].len, strlen(value));
    assert_memory_equal(m->params[i].value, value, strlen(value));
}

static void assert_404(fx *f, unsigned method, const char *path)
{
    kn_match m;
    int rc = match(f, method, path, &m);
    if (rc != RX_ENOENT || m.allowed != 0 || m.route != NULL)
        fail_msg("%s: expected 404, got rc %d allowed %#x", path, rc, m.allowed);
}

/* ------------------------------------------------------------------ */

static void test_literal(void **state)
{
    fx *f = *state;
    kn_route *hz = add_ok(f, RX_GET, "/healthz");
    kn_route *inv = add_ok(f, RX_GET, "/api/inventory/");
    kn_match m;

    assert_int_equal(match(f, RX_GET, "/healthz", &m), 0);
    assert_ptr_equal(m.route, hz);
    assert_int_equal(m.nparams, 0);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_OPTIONS);

    assert_int_equal(match(f, RX_GET, "/api/inventory/", &m), 0);
    assert_ptr_equal(m.route, inv);
    assert_int_equal(m.nparams, 0);

    assert_404(f, RX_GET, "/api");
    assert_404(f, RX_GET, "/api/");
    assert_404(f, RX_GET, "/api/inventory");
    assert_404(f, RX_GET, "/healthz/");
    assert_404(f, RX_GET, "/healthzz");
    assert_404(f, RX_GET, "/health");
    assert_404(f, RX_GET, "/HEALTHZ");
    assert_404(f, RX_GET, "/api/inventory/x");
}

static void test_root(void **state)
{
    fx *f = *state;
    kn_route *root = add_ok(f, RX_GET, "/");
    kn_match m;
    assert_int_equal(match(f, RX_GET, "/", &m), 0);
    assert_ptr_equal(m.route, root);
    assert_404(f, RX_GET, "//");
    assert_404(f, RX_GET, "/x");
}

static void test_bad_request_paths(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/");
    add_ok(f, RX_GET, "/healthz");
    assert_404(f, RX_GET, "");
    assert_404(f, RX_GET, "healthz");
    assert_404(f, RX_OPTIONS, "*");
    kn_match m;
    memset(&m, 0xa5, sizeof(m));
    assert_int_equal(kn_router_match(f->r, RX_GET, NULL, 0, &m), RX_ENOENT);
    assert_int_equal(m.allowed, 0);
    assert_null(m.route);
}

static void test_len_is_respected(void **state)
{
    fx *f = *state;
    kn_route *hz = add_ok(f, RX_GET, "/healthz");
    kn_route *id = add_ok(f, RX_GET, "/i/{id}");
    const char *buf = "/healthz/more";
    kn_match m;
    assert_int_equal(kn_router_match(f->r, RX_GET, buf, 8, &m), 0);
    assert_ptr_equal(m.route, hz);
    assert_int_equal(kn_router_match(f->r, RX_GET, buf, 7, &m), RX_ENOENT);
    /* the capture stops at len, not at the NUL */
    const char *p = "/i/12345";
    assert_int_equal(kn_router_match(f->r, RX_GET, p, 5, &m), 0);
    assert_ptr_equal(m.route, id);
    assert_int_equal(m.params[0].len, 2);
    assert_ptr_equal(m.params[0].value, p + 3);
}

static void test_param(void **state)
{
    fx *f = *state;
    kn_route *rt = add_ok(f, RX_GET, "/api/inventory/{id}/");
    assert_int_equal(rt->nparams, 1);
    assert_string_equal(rt->param_names[0], "id");
    assert_null(rt->param_names[1]);

    kn_match m;
    const char *path = "/api/inventory/42/";
    assert_int_equal(match(f, RX_GET, path, &m), 0);
    assert_ptr_equal(m.route, rt);
    assert_int_equal(m.nparams, 1);
    assert_param(&m, 0, "id", "42");
    /* the value points into the path, it is not a copy */
    assert_ptr_equal(m.params[0].value, path + strlen("/api/inventory/"));
    /* names are borrowed from the route */
    assert_ptr_equal(m.params[0].name, rt->param_names[0]);

    /* not decoded */
    assert_int_equal(match(f, RX_GET, "/api/inventory/a%2Fb/", &m), 0);
    assert_param(&m, 0, "id", "a%2Fb");

    assert_404(f, RX_GET, "/api/inventory/42");
    assert_404(f, RX_GET, "/api/inventory/42/x/");
    assert_404(f, RX_GET, "/api/inventory/");
}

static void test_params_multiple(void **state)
{
    fx *f = *state;
    kn_route *rt = add_ok(f, RX_GET | RX_DELETE, "/api/pharmacies/{id}/api-keys/{key_id}/");
    assert_int_equal(rt->nparams, 2);
    assert_string_equal(rt->param_names[0], "id");
    assert_string_equal(rt->param_names[1], "key_id");

    kn_match m;
    assert_int_equal(match(f, RX_DELETE, "/api/pharmacies/7/api-keys/abc-9/", &m), 0);
    assert_ptr_equal(m.route, rt);
    assert_int_equal(m.nparams, 2);
    assert_param(&m, 0, "id", "7");
    assert_param(&m, 1, "key_id", "abc-9");

    assert_404(f, RX_GET, "/api/pharmacies/7/api-keys/");
    assert_404(f, RX_GET, "/api/pharmacies//api-keys/1/");
}

static void test_max_params(void **state)
{
    fx *f = *state;
    char pat[512] = "", path[512] = "";
    for (int i = 0; i < KN_MAX_PARAMS; i++) {
        char s[32];
        snprintf(s, sizeof(s), "/{p%d}", i);
        strcat(pat, s);
        snprintf(s, sizeof(s), "/v%d", i);
        strcat(path, s);
    }
    kn_route *rt = add_ok(f, RX_GET, pat);
    assert_int_equal(rt->nparams, KN_MAX_PARAMS);
    kn_match m;
    assert_int_equal(match(f, RX_GET, path, &m), 0);
    assert_int_equal(m.nparams, KN_MAX_PARAMS);
    assert_param(&m, 0, "p0", "v0");
    assert_param(&m, KN_MAX_PARAMS - 1, "p15", "v15");
}

static void test_empty_capture(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/a/{x}/");
    add_ok(f, RX_GET, "/b/{x}");
    assert_404(f, RX_GET, "/a//");
    assert_404(f, RX_GET, "/b/");
    kn_match m;
    assert_int_equal(match(f, RX_GET, "/a/1/", &m), 0);
    assert_int_equal(match(f, RX_GET, "/b/1", &m), 0);
}

static void test_literal_beats_capture(void **state)
{
    fx *f = *state;
    /* the capture first, so priority does not come from insertion order */
    kn_route *byid = add_ok(f, RX_GET, "/api/inventory/{id}/");
    kn_route *exp = add_ok(f, RX_GET, "/api/inventory/export/");
    kn_match m;

    assert_int_equal(match(f, RX_GET, "/api/inventory/export/", &m), 0);
    assert_ptr_equal(m.route, exp);
    assert_int_equal(m.nparams, 0);

    assert_int_equal(match(f, RX_GET, "/api/inventory/exports/", &m), 0);
    assert_ptr_equal(m.route, byid);
    assert_param(&m, 0, "id", "exports");
}

static void test_backtracking(void **state)
{
    fx *f = *state;
    kn_route *abc = add_ok(f, RX_GET, "/a/b/c");
    kn_route *axd = add_ok(f, RX_GET, "/a/{x}/d");
    kn_match m;

    assert_int_equal(match(f, RX_GET, "/a/b/c", &m), 0);
    assert_ptr_equal(m.route, abc);
    /* literal "b" leads nowhere for "d": back into {x} */
    assert_int_equal(match(f, RX_GET, "/a/b/d", &m), 0);
    assert_ptr_equal(m.route, axd);
    assert_param(&m, 0, "x", "b");
    assert_404(f, RX_GET, "/a/b/e");
}

static void test_backtracking_overwrites_params(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/a/b/{y}/e");
    kn_route *deep = add_ok(f, RX_GET, "/a/{x}/c/f");
    kn_match m;
    /* a/b/{y=c} is tried first and fails on "f"; {x} must then hold "b", not "c" */
    assert_int_equal(match(f, RX_GET, "/a/b/c/f", &m), 0);
    assert_ptr_equal(m.route, deep);
    assert_int_equal(m.nparams, 1);
    assert_param(&m, 0, "x", "b");
}

static void test_backtracking_from_routeless_node(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/a/b/c/");
    kn_route *ax = add_ok(f, RX_GET, "/a/{x}/");
    kn_match m;
    /* the literal node "/a/b/" exists (on the way to c) but has no route */
    assert_int_equal(match(f, RX_GET, "/a/b/", &m), 0);
    assert_ptr_equal(m.route, ax);
    assert_param(&m, 0, "x", "b");
}

static void test_first_node_with_routes_decides(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/x/export/");
    kn_route *del = add_ok(f, RX_DELETE, "/x/{id}/");
    kn_match m;
    /* DELETE /x/export/ is a 405 of the literal route, not DELETE of id "export" */
    assert_int_equal(match(f, RX_DELETE, "/x/export/", &m), RX_ENOENT);
    assert_null(m.route);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_OPTIONS);
    assert_int_equal(match(f, RX_DELETE, "/x/5/", &m), 0);
    assert_ptr_equal(m.route, del);
}

static void test_trailing_slash(void **state)
{
    fx *f = *state;
    kn_route *noslash = add_ok(f, RX_GET, "/a/b");
    kn_route *slash = add_ok(f, RX_POST, "/a/b/");
    add_ok(f, RX_GET, "/c/");
    kn_match m;

    assert_int_equal(match(f, RX_GET, "/a/b", &m), 0);
    assert_ptr_equal(m.route, noslash);
    assert_int_equal(match(f, RX_POST, "/a/b/", &m), 0);
    assert_ptr_equal(m.route, slash);
    assert_int_equal(match(f, RX_GET, "/a/b/", &m), RX_ENOENT);
    assert_int_equal(m.allowed, RX_POST | RX_OPTIONS);
    assert_int_equal(match(f, RX_POST, "/a/b", &m), RX_ENOENT);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_OPTIONS);
    assert_404(f, RX_GET, "/c");
    assert_404(f, RX_GET, "/c//");
}

static void test_404_vs_405(void **state)
{
    fx *f = *state;
    kn_route *getpost = add_ok(f, RX_GET | RX_POST, "/items/");
    kn_route *del = add_ok(f, RX_DELETE, "/items/");
    kn_match m;

    assert_int_equal(match(f, RX_PUT, "/items/", &m), RX_ENOENT);
    assert_null(m.route);
    assert_int_equal(m.nparams, 0);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_POST | RX_DELETE | RX_OPTIONS);

    assert_int_equal(match(f, RX_POST, "/items/", &m), 0);
    assert_ptr_equal(m.route, getpost);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_POST | RX_DELETE | RX_OPTIONS);
    assert_int_equal(match(f, RX_DELETE, "/items/", &m), 0);
    assert_ptr_equal(m.route, del);

    assert_404(f, RX_PUT, "/things/");
}

static void test_405_params_cleared(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/u/{id}/");
    kn_match m;
    assert_int_equal(match(f, RX_POST, "/u/3/", &m), RX_ENOENT);
    assert_int_equal(m.nparams, 0);
    assert_null(m.route);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_OPTIONS);
}

static void test_head_via_get(void **state)
{
    fx *f = *state;
    kn_route *get = add_ok(f, RX_GET, "/g/");
    kn_route *get2 = add_ok(f, RX_GET, "/h/");
    kn_route *head = add_ok(f, RX_HEAD, "/h/");
    add_ok(f, RX_POST, "/p/");
    kn_match m;

    assert_int_equal(match(f, RX_HEAD, "/g/", &m), 0);
    assert_ptr_equal(m.route, get);
    /* an explicit HEAD route is preferred to the GET one */
    assert_int_equal(match(f, RX_HEAD, "/h/", &m), 0);
    assert_ptr_equal(m.route, head);
    assert_int_equal(match(f, RX_GET, "/h/", &m), 0);
    assert_ptr_equal(m.route, get2);
    /* no GET: no HEAD */
    assert_int_equal(match(f, RX_HEAD, "/p/", &m), RX_ENOENT);
    assert_int_equal(m.allowed, RX_POST | RX_OPTIONS);
}

static void test_options(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/a/");
    kn_route *opt = add_ok(f, RX_OPTIONS, "/b/");
    kn_match m;
    /* OPTIONS is the kernel's unless a route registered it */
    assert_int_equal(match(f, RX_OPTIONS, "/a/", &m), RX_ENOENT);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_OPTIONS);
    assert_int_equal(match(f, RX_OPTIONS, "/b/", &m), 0);
    assert_ptr_equal(m.route, opt);
    assert_int_equal(m.allowed, RX_OPTIONS);
}

static void test_conflict_same_method(void **state)
{
    fx *f = *state;
    kn_route *first = add_ok(f, RX_GET, "/a/");
    kn_route *second, *conflict = NULL;
    assert_int_equal(add(f, RX_GET | RX_POST, "/a/", &second, &conflict), RX_EEXIST);
    assert_ptr_equal(conflict, first);
    /* the refused route was not inserted: POST stays unknown */
    kn_match m;
    assert_int_equal(match(f, RX_POST, "/a/", &m), RX_ENOENT);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_OPTIONS);
    assert_int_equal(second->nparams, 0);
}

static void test_conflict_capture_names(void **state)
{
    fx *f = *state;
    kn_route *byid = add_ok(f, RX_GET, "/u/{id}/");
    kn_route *pk, *conflict = NULL;
    assert_int_equal(add(f, RX_PUT | RX_GET, "/u/{pk}/", &pk, &conflict), RX_EEXIST);
    assert_ptr_equal(conflict, byid);
    /* a refused route gets no names */
    assert_int_equal(pk->nparams, 0);
    assert_null(pk->param_names[0]);

    /* same shape, other method: fine, and each route keeps its own names */
    kn_route *post = add_ok(f, RX_POST, "/u/{pk}/");
    kn_match m;
    assert_int_equal(match(f, RX_POST, "/u/5/", &m), 0);
    assert_ptr_equal(m.route, post);
    assert_param(&m, 0, "pk", "5");
    assert_int_equal(match(f, RX_GET, "/u/5/", &m), 0);
    assert_ptr_equal(m.route, byid);
    assert_param(&m, 0, "id", "5");
}

static void test_no_conflict_different_methods(void **state)
{
    fx *f = *state;
    kn_route *get = add_ok(f, RX_GET, "/a/{id}/");
    kn_route *post, *conflict = get; /* must be reset to NULL */
    assert_int_equal(add(f, RX_POST | RX_PATCH, "/a/{id}/", &post, &conflict), 0);
    assert_null(conflict);
    kn_match m;
    assert_int_equal(match(f, RX_PATCH, "/a/1/", &m), 0);
    assert_ptr_equal(m.route, post);
    assert_int_equal(m.allowed, RX_GET | RX_HEAD | RX_POST | RX_PATCH | RX_OPTIONS);
}

static void test_no_conflict_other_shapes(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/a/{x}/");
    add_ok(f, RX_GET, "/a/b/");
    add_ok(f, RX_GET, "/a/{x}");
    add_ok(f, RX_GET, "/a/{x}/{y}/");
    add_ok(f, RX_GET, "/{x}/b/");
    kn_route *conflict = NULL;
    assert_int_equal(add(f, RX_GET, "/{z}/b/", NULL, &conflict), RX_EEXIST);
    assert_non_null(conflict);
    assert_string_equal(conflict->path, "/{x}/b/");
}

static void test_conflict_null_out(void **state)
{
    fx *f = *state;
    add_ok(f, RX_GET, "/a/");
    kn_route *rt = new_route(f, RX_GET, "/a/");
    /* conflict out-parameter is optional */
    assert_int_equal(kn_router_add(f->r, rt, NULL), RX_EEXIST);
}

static void test_bad_patterns(void **state)
{
    fx *f = *state;
    static const char *const bad[] = {
        "",         "a/b",       "//",         "/a//b",   "/a//",    "/{}",     "/{1id}",
        "/{id-x}",  "/{id}x",    "/x{id}",     "/{id}/{id}/", "/a b", "/a%20b", "/{id",
        "/id}",     "/{{id}}",   "/{i d}",     "/a/{x}/b/{x}", "/\x01", "/a/b?c", "/a#b",
        "/é",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kn_route *rt, *conflict = NULL;
        int rc = add(f, RX_GET, bad[i], &rt, &conflict);
        if (rc != RX_EINVAL)
            fail_msg("pattern \"%s\": expected RX_EINVAL, got %d", bad[i], rc);
        assert_null(conflict);
        assert_int_equal(rt->nparams, 0);
        assert_null(rt->param_names[0]);
    }
    /* nothing of them reached the tree */
    assert_404(f, RX_GET, "/a/b");
    assert_404(f, RX_GET, "/{id}");
    assert_404(f, RX_GET, "/x");

    kn_route *rt;
    assert_int_equal(add(f, RX_GET, NULL, &rt, NULL), RX_EINVAL);
}

static void test_too_many_params(void **state)
{
    fx *f = *state;
    char pat[512] = "";
    for (int i = 0; i <= KN_MAX_PARAMS; i++) {
        char s[32];
        snprintf(s, sizeof(s), "/{p%d}", i);
        strcat(pat, s);
    }
    kn_route *rt;
    assert_int_equal(add(f, RX_GET, pat, &rt, NULL), RX_EINVAL);
    assert_int_equal(rt->nparams, 0);
    assert_null(rt->param_names[0]);
}

static void test_bad_methods(void **state)
{
    fx *f = *state;
    assert_int_equal(add(f, 0, "/a/", NULL, NULL), RX_EINVAL);
    assert_int_equal(add(f, RX_GET | 0x80, "/a/", NULL, NULL), RX_EINVAL);
    assert_404(f, RX_GET, "/a/");
}

static void test_literal_charset(void **state)
{
    fx *f = *state;
    const char *pat = "/a.b_c~d!$&'()*+,;=:@-/Z9/";
    kn_route *rt = add_ok(f, RX_GET, pat);
    kn_match m;
    assert_int_equal(match(f, RX_GET, pat, &m), 0);
    assert_ptr_equal(m.route, rt);
    add_ok(f, RX_GET, "/{_a1}/{B}/");
}

static void test_many_siblings(void **state)
{
    fx *f = *state;
    /* inserted out of order so the sorted insert and binary search both work */
    kn_route *rts[100];
    for (int k = 0; k < 100; k++) {
        int i = (k * 37) % 100;
        char p[32];
        snprintf(p, sizeof(p), "/r%d/", i);
        rts[i] = add_ok(f, RX_GET, p);
    }
    add_ok(f, RX_GET, "/r/");
    kn_match m;
    for (int i = 0; i < 100; i++) {
        char p[32];
        snprintf(p, sizeof(p), "/r%d/", i);
        assert_int_equal(match(f, RX_GET, p, &m), 0);
        assert_ptr_equal(m.route, rts[i]);
    }
    assert_int_equal(match(f, RX_GET, "/r/", &m), 0);
    assert_404(f, RX_GET, "/r100/");
    assert_404(f, RX_GET, "/r1");
}

static void test_route_in_two_routers(void **state)
{
    fx *f = *state;
    kn_route *rt = add_ok(f, RX_GET, "/a/{id}/");
    kn_router *r2 = kn_router_new();
    assert_non_null(r2);
    /* old names are freed and replaced, not leaked (ASan/valgrind check this) */
    assert_int_equal(kn_router_add(r2, rt, NULL), 0);
    assert_int_equal(rt->nparams, 1);
    assert_string_equal(rt->param_names[0], "id");
    kn_match m;
    assert_int_equal(kn_router_match(r2, RX_GET, "/a/1/", 5, &m), 0);
    assert_ptr_equal(m.route, rt);
    kn_router_free(r2);
}

static void test_route_free_params(void **state)
{
    fx *f = *state;
    kn_route *rt = add_ok(f, RX_GET, "/a/{x}/{y}/");
    assert_int_equal(rt->nparams, 2);
    kn_route_free_params(rt);
    assert_int_equal(rt->nparams, 0);
    assert_null(rt->param_names[0]);
    assert_null(rt->param_names[1]);
    kn_route_free_params(rt); /* idempotent */
    kn_route_free_params(NULL);
}

static void test_methods_text(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(kn_methods_text(KN_METHOD_ALL, buf, sizeof(buf)),
                        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    assert_string_equal(kn_methods_text(RX_OPTIONS | RX_GET | RX_DELETE, buf, sizeof(buf)),
                        "GET, DELETE, OPTIONS");
    assert_string_equal(kn_methods_text(RX_PATCH, buf, sizeof(buf)), "PATCH");
    assert_string_equal(kn_methods_text(RX_PUT | RX_POST, buf, sizeof(buf)), "POST, PUT");
    assert_string_equal(kn_methods_text(0, buf, sizeof(buf)), "");
    assert_ptr_equal(kn_methods_text(RX_GET, buf, sizeof(buf)), buf);

    /* exactly 45 bytes hold everything; one less drops the last name */
    char b45[45];
    assert_string_equal(kn_methods_text(ALL_ALLOWED, b45, sizeof(b45)),
                        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    assert_string_equal(kn_methods_text(ALL_ALLOWED, b45, 44), "GET, HEAD, POST, PUT, PATCH, DELETE");
    /* too small: whole names only */
    char small[10];
    assert_string_equal(kn_methods_text(RX_GET | RX_HEAD | RX_POST, small, 10), "GET, HEAD");
    assert_string_equal(kn_methods_text(RX_GET | RX_HEAD | RX_POST, small, 9), "GET");
    assert_string_equal(kn_methods_text(RX_GET, small, 3), "");
    memcpy(small, "untouched", 10);
    assert_string_equal(kn_methods_text(RX_GET, small, 0), "");
    assert_string_equal(small, "untouched");
}

static void test_method_from_name(void **state)
{
    (void)state;
    assert_int_equal(kn_method_from_name("GET", 3), RX_GET);
    assert_int_equal(kn_method_from_name("HEAD", 4), RX_HEAD);
    assert_int_equal(kn_method_from_name("POST", 4), RX_POST);
    assert_int_equal(kn_method_from_name("PUT", 3), RX_PUT);
    assert_int_equal(kn_method_from_name("PATCH", 5), RX_PATCH);
    assert_int_equal(kn_method_from_name("DELETE", 6), RX_DELETE);
    assert_int_equal(kn_method_from_name("OPTIONS", 7), RX_OPTIONS);
    assert_int_equal(kn_method_from_name("GETX", 3), RX_GET); /* len, not NUL, ends it */
    assert_int_equal(kn_method_from_name("GETX", 4), 0);
    assert_int_equal(kn_method_from_name("GE", 2), 0);
    assert_int_equal(kn_method_from_name("get", 3), 0);
    assert_int_equal(kn_method_from_name("CONNECT", 7), 0);
    assert_int_equal(kn_method_from_name("", 0), 0);
}

/* Decode a copy of `in` (strlen) and compare with `want` (wlen bytes), or -1. */
static void check_decode(const char *in, bool plus, const char *want)
{
    char buf[128];
    size_t len = strlen(in);
    assert_true(len < sizeof(buf));
    memcpy(buf, in, len + 1);
    long n = kn_url_decode(buf, len, plus);
    if (!want) {
        if (n != -1)
            fail_msg("decode \"%s\": expected -1, got %ld", in, n);
        /* on error the input is left as it was */
        assert_string_equal(buf, in);
        return;
    }
    if (n != (long)strlen(want))
        fail_msg("decode \"%s\": expected length %zu, got %ld", in, strlen(want), n);
    assert_memory_equal(buf, want, (size_t)n);
    /* a NUL-terminated input stays NUL-terminated */
    assert_int_equal(buf[n], '\0');
}

static void test_url_decode(void **state)
{
    (void)state;
    check_decode("", false, "");
    check_decode("abc", false, "abc");
    check_decode("a%20b", false, "a b");
    check_decode("%2f%2F", false, "//");
    check_decode("%41%61", false, "Aa");
    check_decode("%e2%82%AC", false, "\xe2\x82\xac");
    check_decode("%ff", false, "\xff");
    check_decode("a+b", false, "a+b");
    check_decode("a+b", true, "a b");
    check_decode("%2B+", true, "+ "); /* an escaped plus stays a plus */
    check_decode("100%25", false, "100%");
    check_decode("%2525", false, "%25"); /* decoded once, not twice */

    check_decode("%", false, NULL);
    check_decode("%2", false, NULL);
    check_decode("ab%2", false, NULL);
    check_decode("%41%", false, NULL);
    check_decode("%zz", false, NULL);
    check_decode("%g0", false, NULL);
    check_decode("%0g", false, NULL);
    check_decode("% 1", false, NULL);
    check_decode("%00", false, NULL);
    check_decode("1%00junk", false, NULL);
    check_decode("%+1", true, NULL);

    /* a raw NUL inside len is refused too */
    char raw[] = {'a', '\0', 'b'};
    assert_int_equal(kn_url_decode(raw, sizeof(raw), false), -1);
    /* len bounds the input; nothing past it is read or written */
    char part[] = "a%41%zz";
    assert_int_equal(kn_url_decode(part, 4, false), 2);
    assert_memory_equal(part, "aA", 2);
    assert_string_equal(part + 3, "1%zz");
    /* no terminator is written when the length did not change */
    char same[] = {'x', 'y', '!'};
    assert_int_equal(kn_url_decode(same, 2, false), 2);
    assert_int_equal(same[2], '!');
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_literal),
        T(test_root),
        T(test_bad_request_paths),
        T(test_len_is_respected),
        T(test_param),
        T(test_params_multiple),
        T(test_max_params),
        T(test_empty_capture),
        T(test_literal_beats_capture),
        T(test_backtracking),
        T(test_backtracking_overwrites_params),
        T(test_backtracking_from_routeless_node),
        T(test_first_node_with_routes_decides),
        T(test_trailing_slash),
        T(test_404_vs_405),
        T(test_405_params_cleared),
        T(test_head_via_get),
        T(test_options),
        T(test_conflict_same_method),
        T(test_conflict_capture_names),
        T(test_no_conflict_different_methods),
        T(test_no_conflict_other_shapes),
        T(test_conflict_null_out),
        T(test_bad_patterns),
        T(test_too_many_params),
        T(test_bad_methods),
        T(test_literal_charset),
        T(test_many_siblings),
        T(test_route_in_two_routers),
        T(test_route_free_params),
        cmocka_unit_test(test_methods_text),
        cmocka_unit_test(test_method_from_name),
        cmocka_unit_test(test_url_decode),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
