/*
 * rbac.h — internal header of the rbac module: the permission matrix, the
 * shared SQL of a user change (used by the admin API and `rxd users`), and
 * the small helpers the files share. Nothing here is part of the SDK.
 */
#ifndef RBAC_H
#define RBAC_H

#include <rx.h>

#include "identity.h"
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>

extern rx_module *rbac_mod;

/* Argon2id cost: the same config keys (and defaults) as the auth module, so a
 * password set by an admin verifies exactly like one set at registration. */
extern unsigned long long rbac_opslimit;
extern size_t rbac_memlimit;

/* rbac.c */
bool rbac_role_valid(const char *role); /* one of the four user roles */
int rbac_authorize(rx_req *req, void *data);

/* users_admin.c */
int rbac_users_routes(rx_module *m);
/* The columns of the user object (auth's users.c shape). */
/* auth's channel of "this user's sessions ended": the user id, published
 * after the commit so every worker drops its cached standing of the user
 * (users_admin.c's header comment). */
#define SESSIONS_ENDED_CHANNEL "auth:sessions_ended"

#define RBAC_USER_COLS                                                                             \
    "u.id, u.username, u.email, u.phone, u.profile_picture, u.address, u.role, u.status,"          \
    " u.email_verified, u.phone_verified, u.created_at, u.gender, u.date_of_birth,"                \
    " u.pharmacy_id"
/* One user change in one statement (see users_admin.c for its parameters). */
extern const char rbac_update_sql[];

/* audit_api.c */
int rbac_audit_routes(rx_module *m);

/* cli.c */
int rbac_cli_users(rx_module *m, int argc, char **argv);

/* util.c */
void rbac_err(json_t *errs, const char *field, const char *msg);
const char *rbac_ip(rx_req *req);
const char *rbac_ua(rx_req *req);
bool rbac_iso_time(const char *in, char *out, size_t outlen);

#endif
