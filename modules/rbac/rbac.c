/*
 * rbac.c — the rbac module: the permission matrix of API.md ("Roles and
 * permissions") as data, the authorize hook that applies it, and the row
 * scope every protected request gets. Requires auth, whose authenticate hook
 * sets the principal (kind USER with user_id, role and pharmacy_id; the
 * pharmacies module sets kind APIKEY with role "API_KEY").
 *
 * Deny by default: a permission nobody granted is refused, also for a super
 * admin (a third-party module's new permission is granted in config).
 * The qualifiers of the matrix ("own pharmacy", "own only") are not decided
 * here but in SQL by the handlers, through the scope set for every request:
 *   SUPER_ADMIN                  (RX_SCOPE_ALL, RX_SCOPE_ALL)
 *   PHARMACY_ADMIN, API keys     (their pharmacy or RX_SCOPE_NONE, RX_SCOPE_ALL)
 *   REGISTERED_USER, DOCTOR      (RX_SCOPE_NONE, their own user id)
 *   anything else                (RX_SCOPE_NONE, RX_SCOPE_NONE)
 *
 * Configuration (section [rbac]; environment RXD_RBAC_GRANT_<ROLE>):
 *   rbac.grant.<ROLE> = perm1 perm2   adds permissions to a role (SUPER_ADMIN,
 *                                     PHARMACY_ADMIN, DOCTOR, REGISTERED_USER,
 *                                     API_KEY); users.manage and audit.view
 *                                     can never be granted below SUPER_ADMIN.
 */
#include "rbac.h"

#include <stdlib.h>
#include <string.h>

rx_module *rbac_mod;
unsigned long long rbac_opslimit;
size_t rbac_memlimit;

extern const rx_migration rbac_migrations[];

enum { R_SUPER, R_PHARMACY, R_DOCTOR, R_USER, R_APIKEY, R_COUNT };

#define RBAC_MAX_PERMS 64

typedef struct rbac_role {
    const char *name;
    const char *base; /* the contract's permissions, space separated */
    const char *perms[RBAC_MAX_PERMS];
    int n;
} rbac_role;

/* The matrix. Read-only after init, so workers share it without locks. */
static rbac_role roles[R_COUNT] = {
    [R_SUPER] = {.name = "SUPER_ADMIN",
                 .base = "users.manage audit.view products.manage prescriptions.verify"
                         " inventory.manage orders.manage consultations.manage"
                         " consultations.request cms.manage pharmacies.manage pharmacies.view"
                         " pharmacies.update apikeys.manage webhooks.manage"},
    [R_PHARMACY] = {.name = "PHARMACY_ADMIN",
                    .base = "products.manage prescriptions.verify inventory.manage orders.manage"
                            " cms.manage pharmacies.view pharmacies.update"},
    [R_DOCTOR] = {.name = "DOCTOR", .base = "consultations.manage"},
    [R_USER] = {.name = "REGISTERED_USER",
                .base = "orders.manage consultations.request products.purchase"
                        " prescriptions.upload"},
    [R_APIKEY] = {.name = "API_KEY",
                  .base = "inventory.manage orders.manage pharmacies.view pharmacies.update"
                          " webhooks.manage"},
};

/* Kept for stop(): the strdup'd words of the config grants. */
static char *grant_copies[R_COUNT];

bool rbac_role_valid(const char *role)
{
    for (int i = R_SUPER; i <= R_USER; i++)
        if (strcmp(roles[i].name, role) == 0)
            return true;
    return false;
}

static bool perm_name_ok(const char *p)
{
    if (*p == '\0' || strlen(p) > 100)
        return false;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' ||
              *p == '-'))
            return false;
    return true;
}

static bool has(const rbac_role *r, const char *perm)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->perms[i], perm) == 0)
            return true;
    return false;
}

/* Split `words` (modified in place) into the role's list. */
static int add_words(rx_module *m, rbac_role *r, char *words, const char *key)
{
    for (char *save = NULL, *w = strtok_r(words, " \t,", &save); w != NULL;
         w = strtok_r(NULL, " \t,", &save)) {
        if (!perm_name_ok(w)) {
            rx_module_fail(m, "%s: '%s' is not a permission name ([a-z0-9._-]+)", key, w);
            return -1;
        }
        if (r != &roles[R_SUPER] &&
            (strcmp(w, "users.manage") == 0 || strcmp(w, "audit.view") == 0)) {
            rx_module_fail(m, "%s: '%s' can only belong to SUPER_ADMIN", key, w);
            return -1;
        }
        if (has(r, w))
            continue;
        if (r->n >= RBAC_MAX_PERMS) {
            rx_module_fail(m, "%s: more than %d permissions for %s", key, RBAC_MAX_PERMS, r->name);
            return -1;
        }
        r->perms[r->n++] = w;
    }
    return 0;
}

static int load_matrix(rx_module *m)
{
    static char base_copies[R_COUNT][512];
    for (int i = 0; i < R_COUNT; i++) {
        rbac_role *r = &roles[i];
        r->n = 0;
        snprintf(base_copies[i], sizeof base_copies[i], "%s", r->base);
        if (add_words(m, r, base_copies[i], "rbac matrix") != 0)
            return -1;
        char key[64];
        snprintf(key, sizeof key, "grant.%s", r->name);
        const char *extra = rx_config_str(m, key, NULL);
        if (extra == NULL || *extra == '\0')
            continue;
        grant_copies[i] = strdup(extra);
        if (grant_copies[i] == NULL) {
            rx_module_fail(m, "out of memory");
            return -1;
        }
        snprintf(key, sizeof key, "rbac.grant.%s", r->name);
        if (add_words(m, r, grant_copies[i], key) != 0)
            return -1;
    }
    return 0;
}

static int read_argon2(rx_module *m)
{
    long long ops = crypto_pwhash_OPSLIMIT_INTERACTIVE, mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
    if (rx_config_int(NULL, "auth.argon2_opslimit", ops, &ops) != 0 ||
        rx_config_int(NULL, "auth.argon2_memlimit", mem, &mem) != 0 ||
        ops < (long long)crypto_pwhash_OPSLIMIT_MIN ||
        mem < (long long)crypto_pwhash_MEMLIMIT_MIN) {
        rx_module_fail(m, "auth.argon2_opslimit/argon2_memlimit: not valid Argon2id costs");
        return -1;
    }
    rbac_opslimit = (unsigned long long)ops;
    rbac_memlimit = (size_t)mem;
    return 0;
}

int rbac_authorize(rx_req *req, void *data)
{
    (void)data;
    const rx_principal *p = rx_req_principal(req);
    const char *perm = rx_req_perm(req);
    const rbac_role *r = NULL;
    /* The scope is set before the decision, so no request reaches a handler
     * unscoped, whatever another authorize hook later says. */
    rx_req_set_scope(req, RX_SCOPE_NONE, RX_SCOPE_NONE);
    if (p->kind == RX_PRINCIPAL_APIKEY) {
        /* A key is a key whatever role text it carries. */
        r = &roles[R_APIKEY];
        rx_req_set_scope(req, p->pharmacy_id > 0 ? p->pharmacy_id : RX_SCOPE_NONE, RX_SCOPE_ALL);
    } else if (p->kind == RX_PRINCIPAL_USER && p->role != NULL) {
        for (int i = R_SUPER; i <= R_USER; i++)
            if (strcmp(roles[i].name, p->role) == 0)
                r = &roles[i];
        if (r == &roles[R_SUPER])
            rx_req_set_scope(req, RX_SCOPE_ALL, RX_SCOPE_ALL);
        else if (r == &roles[R_PHARMACY])
            rx_req_set_scope(req, p->pharmacy_id > 0 ? p->pharmacy_id : RX_SCOPE_NONE,
                             RX_SCOPE_ALL);
        else if (r != NULL && p->user_id > 0)
            rx_req_set_scope(req, RX_SCOPE_NONE, p->user_id);
    }
    if (r == NULL || perm == NULL || !has(r, perm))
        return RX_DENIED;
    return RX_AUTHED;
}

static int init(rx_module *m)
{
    rbac_mod = m;
    if (sodium_init() < 0) {
        rx_module_fail(m, "libsodium failed to initialise");
        return -1;
    }
    if (load_matrix(m) != 0 || read_argon2(m) != 0)
        return -1;
    int rc = 0;
    rc |= rx_hook_authorize(m, 100, rbac_authorize, NULL);
    rc |= rx_migrations(m, rbac_migrations);
    rc |= rbac_users_routes(m);
    rc |= rbac_audit_routes(m);
    rc |= rx_command(m, "users", rbac_cli_users,
                     "users list [--role R] | users set-role EMAIL ROLE [--pharmacy ID]");
    if (rc != 0) {
        rx_module_fail(m, "registration failed");
        return -1;
    }
    return 0;
}

static void stop(rx_module *m)
{
    (void)m;
    for (int i = 0; i < R_COUNT; i++) {
        roles[i].n = 0;
        free(grant_copies[i]);
        grant_copies[i] = NULL;
    }
}

RX_MODULE("rbac", "1.0.0", .requires = RX_REQUIRES("auth"), .init = init, .stop = stop,
          .summary = "roles and permissions, user administration, audit log");
