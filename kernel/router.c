/*
 * router.c — maps (method, raw path) to a registered route.
 *
 * A radix tree over path segments: a path "/a/b/" is the segments "a", "b",
 * "" (a trailing slash is a final empty segment, so "/a/b" and "/a/b/" are
 * different routes). Each node has literal children in a sorted array
 * (binary search; no allocation while matching, since match runs on every
 * request on every worker) and at most one capture child shared by every
 * "{name}" at that position, so two templates with captures at the same
 * positions end at the same node whatever the capture names are: that is
 * how "same shape" is detected. A node lists the routes registered at it;
 * several routes (different methods, maybe from different modules) may share
 * a node.
 *
 * Ownership: the tree never owns routes. route->path is set and owned by the
 * caller (the registry). route->param_names are strdup'd by kn_router_add and
 * belong to the route: freeing them is the route owner's job, with
 * kn_route_free_params().
 *
 * Also here, because they are about request lines and paths: method names
 * <-> bits, the Allow header text and percent-decoding.
 */
#define _POSIX_C_SOURCE 200809L

#include "kn.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct node node;
struct node {
    node **lit; /* literal children, sorted by (bytes, length) */
    size_t nlit, caplit;
    node *cap; /* the capture child, or NULL */
    kn_route **routes;
    size_t nroutes, caproutes;
    unsigned methods; /* union of routes[i]->methods, so match need not loop for allowed */
    size_t seglen;
    char seg[]; /* the literal segment this node stands for (empty for root/capture) */
};

struct kn_router {
    node *root;
};

/* ------------------------------------------------------------------ */
/* Tree helpers                                                        */
/* ------------------------------------------------------------------ */

static node *node_new(const char *seg, size_t len)
{
    node *n = calloc(1, sizeof(*n) + len + 1);
    if (!n)
        return NULL;
    if (len)
        memcpy(n->seg, seg, len);
    n->seglen = len;
    return n;
}

/* Recursion depth is the depth of the tree, i.e. the segment count of the
 * longest template, which the registry controls (not request data). */
static void node_free(node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nlit; i++)
        node_free(n->lit[i]);
    node_free(n->cap);
    free(n->lit);
    free(n->routes);
    free(n);
}

/* Order for the literal children: byte-wise, a prefix sorts first. */
static int seg_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t min = alen < blen ? alen : blen;
    int c = min ? memcmp(a, b, min) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* Binary search; *pos receives the insertion point when not found. */
static node *find_lit(const node *n, const char *seg, size_t len, size_t *pos)
{
    size_t lo = 0, hi = n->nlit;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const node *c = n->lit[mid];
        int cmp = seg_cmp(seg, len, c->seg, c->seglen);
        if (cmp == 0) {
            if (pos)
                *pos = mid;
            return n->lit[mid];
        }
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

static node *add_lit(node *n, const char *seg, size_t len)
{
    size_t pos;
    node *c = find_lit(n, seg, len, &pos);
    if (c)
        return c;
    if (n->nlit == n->caplit) {
        size_t cap = n->caplit ? n->caplit * 2 : 4;
        node **v = realloc(n->lit, cap * sizeof(*v));
        if (!v)
            return NULL;
        n->lit = v;
        n->caplit = cap;
    }
    c = node_new(seg, len);
    if (!c)
        return NULL;
    memmove(n->lit + pos + 1, n->lit + pos, (n->nlit - pos) * sizeof(*n->lit));
    n->lit[pos] = c;
    n->nlit++;
    return c;
}

/* ------------------------------------------------------------------ */
/* Pattern parsing                                                     */
/* ------------------------------------------------------------------ */

/* RFC 3986 pchar minus pct-encoded: a template literal is compared with the
 * raw request path byte for byte, so '%' would never mean what it says. */
static bool lit_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("._~!$&'()*+,;=:@-", c) != NULL;
}

static bool name_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool name_char(unsigned char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

typedef struct seg_it {
    const char *p, *end; /* p: start of the next segment */
    bool done;
} seg_it;

/* Next segment [*s, *s + *len) of a path that starts with '/'. */
static bool seg_next(seg_it *it, const char **s, size_t *len)
{
    if (it->done)
        return false;
    const char *e = memchr(it->p, '/', (size_t)(it->end - it->p));
    if (!e) {
        e = it->end;
        it->done = true;
    }
    *s = it->p;
    *len = (size_t)(e - it->p);
    it->p = e + (e < it->end);
    return true;
}

static void seg_begin(seg_it *it, const char *path, size_t len)
{
    it->p = path + 1; /* past the leading '/' */
    it->end = path + len;
    it->done = false;
}

static bool is_capture(const char *s, size_t len)
{
    return len >= 2 && s[0] == '{' && s[len - 1] == '}';
}

/* Check the whole template before touching the tree, so a bad pattern leaves
 * no trace. names[i] point into the pattern (not terminated); lens[i] their length. */
static int parse_pattern(const char *path, const char *names[], size_t lens[], int *nparams)
{
    if (!path || path[0] != '/')
        return RX_EINVAL;
    size_t plen = strlen(path);
    seg_it it;
    seg_begin(&it, path, plen);
    const char *s;
    size_t len;
    int np = 0;
    while (seg_next(&it, &s, &len)) {
        if (len == 0) {
            if (!it.done) /* empty segment in the middle: "//" */
                return RX_EINVAL;
            continue;
        }
        if (is_capture(s, len)) {
            const char *nm = s + 1;
            size_t nl = len - 2;
            if (nl == 0 || !name_start((unsigned char)nm[0]))
                return RX_EINVAL;
            for (size_t i = 1; i < nl; i++)
                if (!name_char((unsigned char)nm[i]))
                    return RX_EINVAL;
            if (np == KN_MAX_PARAMS)
                return RX_EINVAL;
            for (int i = 0; i < np; i++)
                if (lens[i] == nl && memcmp(names[i], nm, nl) == 0)
                    return RX_EINVAL;
            names[np] = nm;
            lens[np] = nl;
            np++;
            continue;
        }
        /* A literal; '{' and '}' are not literal characters, so "{id}x" and
         * "x{id}" fail here rather than silently matching the text "{id}x". */
        for (size_t i = 0; i < len; i++)
            if (!lit_char((unsigned char)s[i]))
                return RX_EINVAL;
    }
    *nparams = np;
    return 0;
}

/* The node a (valid) template ends at, or NULL if it is not in the tree. */
static node *find_node(node *n, const char *path)
{
    seg_it it;
    seg_begin(&it, path, strlen(path));
    const char *s;
    size_t len;
    while (n && seg_next(&it, &s, &len))
        n = is_capture(s, len) ? n->cap : find_lit(n, s, len, NULL);
    return n;
}

/* Like find_node, creating what is missing. Nodes created before an
 * allocation failure stay: a node without routes never matches anything. */
static node *make_node(node *n, const char *path)
{
    seg_it it;
    seg_begin(&it, path, strlen(path));
    const char *s;
    size_t len;
    while (n && seg_next(&it, &s, &len)) {
        if (is_capture(s, len)) {
            if (!n->cap)
                n->cap = node_new(NULL, 0);
            n = n->cap;
        } else {
            n = add_lit(n, s, len);
        }
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Public                                                              */
/* ------------------------------------------------------------------ */

kn_router *kn_router_new(void)
{
    kn_router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->root = node_new(NULL, 0);
    if (!r->root) {
        free(r);
        return NULL;
    }
    return r;
}

void kn_router_free(kn_router *r)
{
    if (!r)
        return;
    node_free(r->root);
    free(r);
}

void kn_route_free_params(kn_route *route)
{
    if (!route)
        return;
    for (int i = 0; i < KN_MAX_PARAMS; i++) {
        free(route->param_names[i]);
        route->param_names[i] = NULL;
    }
    route->nparams = 0;
}

int kn_router_add(kn_router *r, kn_route *route, kn_route **conflict)
{
    if (conflict)
        *conflict = NULL;
    if (!r || !route)
        return RX_EINVAL;
    /* A route answering nothing, or unknown bits, is a programming error
     * that would otherwise only show up as a mysterious 404/405. */
    if (route->methods == 0 || (route->methods & ~(unsigned)KN_METHOD_ALL))
        return RX_EINVAL;

    const char *names[KN_MAX_PARAMS];
    size_t lens[KN_MAX_PARAMS];
    int np = 0;
    int rc = parse_pattern(route->path, names, lens, &np);
    if (rc)
        return rc;

    node *n = find_node(r->root, route->path);
    if (n) {
        for (size_t i = 0; i < n->nroutes; i++) {
            if (n->routes[i]->methods & route->methods) {
                if (conflict)
                    *conflict = n->routes[i];
                return RX_EEXIST;
            }
        }
    }

    /* Allocate everything before changing anything, so failure leaves both
     * the route and the tree as they were. */
    char *dup[KN_MAX_PARAMS] = {0};
    for (int i = 0; i < np; i++) {
        dup[i] = malloc(lens[i] + 1);
        if (!dup[i])
            goto nomem;
        memcpy(dup[i], names[i], lens[i]);
        dup[i][lens[i]] = '\0';
    }
    if (!n)
        n = make_node(r->root, route->path);
    if (!n)
        goto nomem;
    if (n->nroutes == n->caproutes) {
        size_t cap = n->caproutes ? n->caproutes * 2 : 2;
        kn_route **v = realloc(n->routes, cap * sizeof(*v));
        if (!v)
            goto nomem;
        n->routes = v;
        n->caproutes = cap;
    }

    /* A route added to a second router (a rebuilt tree) gets fresh names. */
    kn_route_free_params(route);
    for (int i = 0; i < np; i++)
        route->param_names[i] = dup[i];
    route->nparams = np;
    n->routes[n->nroutes++] = route;
    n->methods |= route->methods;
    return 0;

nomem:
    for (int i = 0; i < np; i++)
        free(dup[i]);
    return RX_ENOMEM;
}

/* Depth-first: literal child first, then the capture child. Each call is on
 * a distinct tree node, so the cost is bounded by the tree size, never
 * exponential. Capture values go straight into m->params[ncap]; a failed
 * branch is simply overwritten by the next one. m->nparams is left alone:
 * the matched route says how many captures there are. */
static const node *walk(const node *n, const char *s, const char *end, kn_match *m, int ncap)
{
    const char *e = memchr(s, '/', (size_t)(end - s));
    bool last = e == NULL;
    if (last)
        e = end;
    size_t len = (size_t)(e - s);

    const node *c = find_lit(n, s, len, NULL);
    if (c) {
        const node *hit = last ? (c->nroutes ? c : NULL) : walk(c, e + 1, end, m, ncap);
        if (hit)
            return hit;
    }
    /* An empty segment ("/a//") is not a value: a capture needs one byte. */
    if (n->cap && len > 0 && ncap < KN_MAX_PARAMS) {
        m->params[ncap].value = s;
        m->params[ncap].len = len;
        c = n->cap;
        const node *hit = last ? (c->nroutes ? c : NULL) : walk(c, e + 1, end, m, ncap + 1);
        if (hit)
            return hit;
    }
    return NULL;
}

/* The first node with any route decides the path, even if it lacks the
 * method: "/x/export/" (GET) makes DELETE /x/export/ a 405 rather than
 * falling back to "/x/{id}/". */
int kn_router_match(const kn_router *r, unsigned method, const char *path, size_t len,
                    kn_match *m)
{
    m->route = NULL;
    m->allowed = 0;
    m->nparams = 0;
    if (!r || !path || len == 0 || path[0] != '/')
        return RX_ENOENT;

    const node *n = walk(r->root, path + 1, path + len, m, 0);
    if (!n)
        return RX_ENOENT;

    m->allowed = n->methods | RX_OPTIONS;
    if (n->methods & RX_GET)
        m->allowed |= RX_HEAD;

    kn_route *hit = NULL;
    for (size_t i = 0; i < n->nroutes && !hit; i++)
        if (n->routes[i]->methods & method)
            hit = n->routes[i];
    /* An explicit HEAD route wins (above); otherwise GET answers HEAD. */
    if (!hit && method == RX_HEAD)
        for (size_t i = 0; i < n->nroutes && !hit; i++)
            if (n->routes[i]->methods & RX_GET)
                hit = n->routes[i];
    if (!hit) /* 405, or OPTIONS for the kernel; nparams stays 0 without a route */
        return RX_ENOENT;

    m->route = hit;
    /* Every route at a node has the same capture count; names are per route. */
    m->nparams = hit->nparams;
    for (int i = 0; i < hit->nparams; i++)
        m->params[i].name = hit->param_names[i];
    return 0;
}

static const struct {
    unsigned bit;
    const char *name;
    size_t len;
} methods[] = {
    {RX_GET, "GET", 3},       {RX_HEAD, "HEAD", 4},     {RX_POST, "POST", 4},
    {RX_PUT, "PUT", 3},       {RX_PATCH, "PATCH", 5},   {RX_DELETE, "DELETE", 6},
    {RX_OPTIONS, "OPTIONS", 7},
};

/* 45 bytes hold all seven ("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS").
 * A name that does not fit is left off whole rather than cut in half. */
const char *kn_methods_text(unsigned bits, char *buf, size_t buflen)
{
    if (!buf || buflen == 0)
        return "";
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (!(bits & methods[i].bit))
            continue;
        size_t sep = o ? 2 : 0;
        if (o + sep + methods[i].len + 1 > buflen)
            break;
        if (sep) {
            memcpy(buf + o, ", ", 2);
            o += 2;
        }
        memcpy(buf + o, methods[i].name, methods[i].len);
        o += methods[i].len;
        buf[o] = '\0';
    }
    return buf;
}

/* Method names are case-sensitive (RFC 9110 9.1): "get" is not GET. */
unsigned kn_method_from_name(const char *name, size_t len)
{
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (methods[i].len == len && memcmp(methods[i].name, name, len) == 0)
            return methods[i].bit;
    return 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Validates first and decodes second, so on error the buffer is unchanged.
 * A NUL byte, escaped or raw, is refused: the result is used as a C string
 * and an embedded NUL would silently cut it (e.g. "1%00junk" reading as "1").
 * When the result is shorter than len, s[result] is set to '\0', so a
 * NUL-terminated input stays NUL-terminated; nothing is written past s[len - 1]. */
long kn_url_decode(char *s, size_t len, bool plus_is_space)
{
    if (len == 0)
        return 0;
    if (!s || len > (size_t)LONG_MAX) /* the result must fit the return type */
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0')
            return -1;
        if (s[i] != '%')
            continue;
        if (len - i < 3)
            return -1;
        int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return -1;
        i += 2;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            c = (char)(hexval((unsigned char)s[i + 1]) << 4 | hexval((unsigned char)s[i + 2]));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        s[o++] = c;
    }
    if (o < len)
        s[o] = '\0';
    return (long)o;
}
