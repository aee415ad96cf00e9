/*
 * module.c — loading modules. Each module is <module_path>/<name>.so and
 * exports `rx_module_descriptor`. The descriptor is read and checked before
 * anything else of the module is used (its first fields never change, so a
 * module built against any ABI can be judged); then modules are ordered by
 * `requires` and initialised one by one on the main thread.
 */
#include "kn_http.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Size of the ABI 1.0 descriptor: a module may not be smaller. */
#define DESC_1_0_SIZE (offsetof(rx_module_desc, stop) + sizeof(void (*)(rx_module *)))

static bool name_ok(const char *n)
{
    if (n == NULL || *n == '\0' || strlen(n) > 64)
        return false;
    for (; *n; n++)
        if (!((*n >= 'a' && *n <= 'z') || (*n >= '0' && *n <= '9') || *n == '_'))
            return false;
    return true;
}

int kn_module_check_desc(const rx_module_desc *d, const char *expected, char *err, size_t errlen)
{
    if (d->abi_major != RX_ABI_MAJOR) {
        snprintf(err, errlen,
                 "module '%s' was built for SDK ABI %u.%u, this rxd has ABI %d.%d (major "
                 "versions must match: rebuild the module against this rxd's rx.h)",
                 expected, d->abi_major, d->abi_minor, RX_ABI_MAJOR, RX_ABI_MINOR);
        return -1;
    }
    if (d->abi_minor > RX_ABI_MINOR) {
        snprintf(err, errlen,
                 "module '%s' needs SDK ABI %u.%u, newer than this rxd's %d.%d (upgrade rxd)",
                 expected, d->abi_major, d->abi_minor, RX_ABI_MAJOR, RX_ABI_MINOR);
        return -1;
    }
    if (d->size < DESC_1_0_SIZE) {
        snprintf(err, errlen, "module '%s': descriptor is %u bytes, smaller than ABI %d.0's %zu",
                 expected, d->size, RX_ABI_MAJOR, (size_t)DESC_1_0_SIZE);
        return -1;
    }
    if (d->name == NULL || strcmp(d->name, expected) != 0) {
        snprintf(err, errlen, "module file '%s' declares the name '%s' (they must be equal)",
                 expected, d->name ? d->name : "(null)");
        return -1;
    }
    if (d->version == NULL || d->version[0] == '\0') {
        snprintf(err, errlen, "module '%s' declares no version", expected);
        return -1;
    }
    if (d->init == NULL) {
        snprintf(err, errlen, "module '%s' has no init function", expected);
        return -1;
    }
    if (d->requires != NULL)
        for (const char *const *r = d->requires; *r; r++)
            if (!name_ok(*r)) {
                snprintf(err, errlen, "module '%s' requires an invalid module name '%s'",
                         expected, *r);
                return -1;
            }
    return 0;
}

static kn_module *find(kn_module **mods, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(mods[i]->desc->name, name) == 0)
            return mods[i];
    return NULL;
}

/* Depth-first: requirements before the module; mark 1 = visiting, 2 = done. */
static int visit(kn_module **mods, size_t n, size_t i, int *mark, kn_module **out, size_t *nout,
                 char *err, size_t errlen)
{
    if (mark[i] == 2)
        return 0;
    if (mark[i] == 1) {
        snprintf(err, errlen, "module '%s' is part of a dependency cycle", mods[i]->desc->name);
        return -1;
    }
    mark[i] = 1;
    const char *const *req = mods[i]->desc->requires;
    for (; req && *req; req++) {
        kn_module *dep = find(mods, n, *req);
        if (dep == NULL) {
            snprintf(err, errlen,
                     "module '%s' requires module '%s', which is not enabled (add it to "
                     "`modules` in the config)",
                     mods[i]->desc->name, *req);
            return -1;
        }
        size_t j = 0;
        while (mods[j] != dep)
            j++;
        if (visit(mods, n, j, mark, out, nout, err, errlen) != 0)
            return -1;
    }
    mark[i] = 2;
    out[(*nout)++] = mods[i];
    return 0;
}

int kn_module_order(kn_module **mods, size_t n, kn_module **out, char *err, size_t errlen)
{
    int *mark = calloc(n ? n : 1, sizeof(int));
    if (mark == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t nout = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = visit(mods, n, i, mark, out, &nout, err, errlen);
    free(mark);
    return rc;
}

static void unload(kn_module *m)
{
    if (m->dl)
        dlclose(m->dl);
    free(m->path);
    free(m->fail_why);
    free(m);
}

static int load_one(const char *name, const char *dir, kn_module **out, char *err, size_t errlen)
{
    if (!name_ok(name)) {
        snprintf(err, errlen, "invalid module name '%s' (use [a-z0-9_])", name);
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.so", dir, name);
    /* Lazy first: the descriptor is checked before any symbol is bound, so
     * a module built for another ABI gets a clear message, not a dlerror. */
    void *dl = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (dl == NULL) {
        snprintf(err, errlen, "module '%s': cannot load %s: %s", name, path, dlerror());
        return -1;
    }
    const rx_module_desc *d = dlsym(dl, "rx_module_descriptor");
    if (d == NULL) {
        snprintf(err, errlen, "module '%s': %s is not an rxd module (no rx_module_descriptor)",
                 name, path);
        dlclose(dl);
        return -1;
    }
    if (kn_module_check_desc(d, name, err, errlen) != 0) {
        dlclose(dl);
        return -1;
    }
    /* Now bind everything, so a missing rx_* symbol fails here, not mid-request. */
    if (dlopen(path, RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL) == NULL) {
        snprintf(err, errlen, "module '%s': %s", name, dlerror());
        dlclose(dl);
        return -1;
    }
    dlclose(dl); /* drop the NOLOAD reference */
    kn_module *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        dlclose(dl);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->desc = d;
    m->dl = dl;
    m->path = strdup(path);
    *out = m;
    return 0;
}

int kn_modules_load(char **names, size_t n, const char *dir, char *err, size_t errlen)
{
    kn_module **mods = calloc(n ? n : 1, sizeof(*mods));
    kn_module **order = calloc(n ? n : 1, sizeof(*order));
    if (mods == NULL || order == NULL) {
        free(mods);
        free(order);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t loaded = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) {
                snprintf(err, errlen, "module '%s' is listed twice in `modules`", names[i]);
                rc = -1;
            }
        if (rc == 0 && (rc = load_one(names[i], dir, &mods[loaded], err, errlen)) == 0)
            loaded++;
    }
    if (rc == 0)
        rc = kn_module_order(mods, loaded, order, err, errlen);
    if (rc != 0) {
        for (size_t i = 0; i < loaded; i++)
            unload(mods[i]);
        free(mods);
        free(order);
        return -1;
    }
    free(mods);
    /* Registered in init order: kn_reg.modules owns them from here. */
    for (size_t i = 0; i < loaded; i++) {
        kn_module *m = order[i];
        if (kn_reg.modules.n == kn_reg.modules.cap) {
            size_t nc = kn_reg.modules.cap ? kn_reg.modules.cap * 2 : 8;
            kn_module **nv = realloc(kn_reg.modules.v, nc * sizeof(*nv));
            if (nv == NULL) {
                snprintf(err, errlen, "out of memory");
                for (size_t k = i; k < loaded; k++)
                    unload(order[k]);
                free(order);
                return -1;
            }
            kn_reg.modules.v = nv;
            kn_reg.modules.cap = nc;
        }
        kn_reg.modules.v[kn_reg.modules.n++] = m;
    }
    free(order);
    for (size_t i = 0; i < kn_reg.modules.n; i++) {
        kn_module *m = kn_reg.modules.v[i];
        kn_reg.error[0] = '\0';
        int irc = m->desc->init((rx_module *)m);
        if (irc != 0) {
            snprintf(err, errlen, "module '%s': init failed: %s", m->desc->name,
                     m->fail_why ? m->fail_why
                     : kn_reg.error[0] ? kn_reg.error
                                       : "init returned an error without saying why");
            return -1;
        }
        m->initialised = true;
        if (kn_reg.error[0] != '\0') {
            /* init ignored a failed registration: still refuse to start. */
            snprintf(err, errlen, "%s", kn_reg.error);
            return -1;
        }
    }
    return 0;
}

void kn_modules_stop(void)
{
    for (size_t i = kn_reg.modules.n; i-- > 0;) {
        kn_module *m = kn_reg.modules.v[i];
        if (m->initialised && m->desc->stop)
            m->desc->stop((rx_module *)m);
        m->initialised = false;
    }
}

void kn_modules_unload(void)
{
    for (size_t i = 0; i < kn_reg.modules.n; i++)
        unload(kn_reg.modules.v[i]);
    free(kn_reg.modules.v);
    kn_reg.modules.v = NULL;
    kn_reg.modules.n = kn_reg.modules.cap = 0;
}
