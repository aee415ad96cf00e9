/*
 * cli.c — `rxd users list [--role R]` and `rxd users set-role EMAIL ROLE
 * [--pharmacy ID]`, for operators (API.md "Operator commands"). Runs on the
 * main thread without workers, so it blocks on rx_db_run. set-role uses the
 * admin API's statement (users_admin.c): the last active super admin is
 * protected, the change is audited (actor null: no admin acted through the
 * API) and the user's sessions end, so the new role applies from their next
 * login.
 */
#include "rbac.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: rxd users list [--role ROLE]\n"
                    "       rxd users set-role EMAIL ROLE [--pharmacy ID]\n"
                    "roles: SUPER_ADMIN PHARMACY_ADMIN DOCTOR REGISTERED_USER\n");
    return 2;
}

static void db_failed(const char *what, const rx_rows *r)
{
    fprintf(stderr, "users %s: database error: %s\n", what,
            rx_rows_error(r) == RX_EDB ? rx_rows_message(r) : rx_strerror(rx_rows_error(r)));
}

static const char *text(const rx_rows *r, int row, const char *name)
{
    const char *s = rx_rows_text(r, row, rx_rows_column(r, name));
    return s && *s ? s : "-";
}

static int cmd_list(rx_module *m, int argc, char **argv)
{
    const char *role = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--role") == 0 && i + 1 < argc)
            role = argv[++i];
        else
            return usage();
    }
    if (role != NULL && !rbac_role_valid(role)) {
        fprintf(stderr, "users list: unknown role '%s'\n", role);
        return usage();
    }
    rx_param p[] = {RX_TEXT(role)};
    rx_rows *r = rx_db_run(m,
                           "SELECT u.id, u.email, u.phone, u.username, u.role, u.status,"
                           "       u.pharmacy_id FROM users u"
                           " WHERE u.deleted_at IS NULL AND ($1::text IS NULL OR u.role = $1::text)"
                           " ORDER BY u.id",
                           1, p);
    if (rx_rows_failed(r)) {
        db_failed("list", r);
        rx_rows_free(r);
        return 1;
    }
    printf("%-8s %-32s %-16s %-16s %-8s %-8s %s\n", "ID", "EMAIL", "PHONE", "ROLE", "STATUS",
           "PHARMACY", "USERNAME");
    for (int i = 0; i < rx_rows_count(r); i++)
        printf("%-8s %-32s %-16s %-16s %-8s %-8s %s\n", text(r, i, "id"), text(r, i, "email"),
               text(r, i, "phone"), text(r, i, "role"), text(r, i, "status"),
               text(r, i, "pharmacy_id"), text(r, i, "username"));
    rx_rows_free(r);
    return 0;
}

static bool flag(const rx_rows *r, const char *name)
{
    bool v = false;
    rx_rows_bool(r, 0, rx_rows_column(r, name), &v);
    return v;
}

static int cmd_set_role(rx_module *m, int argc, char **argv)
{
    const char *email = NULL, *role = NULL, *pharmacy = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--pharmacy") == 0 && i + 1 < argc)
            pharmacy = argv[++i];
        else if (argv[i][0] == '-')
            return usage();
        else if (email == NULL)
            email = argv[i];
        else if (role == NULL)
            role = argv[i];
        else
            return usage();
    }
    if (email == NULL || role == NULL)
        return usage();
    char ne[256];
    if (ident_norm_email(email, ne, sizeof ne) != 0) {
        fprintf(stderr, "users set-role: '%s' is not a valid email address\n", email);
        return 1;
    }
    if (!rbac_role_valid(role)) {
        fprintf(stderr,
                "users set-role: unknown role '%s' (SUPER_ADMIN, PHARMACY_ADMIN, DOCTOR,"
                " REGISTERED_USER)\n",
                role);
        return 1;
    }
    bool pa = strcmp(role, "PHARMACY_ADMIN") == 0;
    long long ph = 0;
    if (pharmacy != NULL) {
        char *end = NULL;
        ph = strtoll(pharmacy, &end, 10);
        if (*pharmacy == '\0' || *end != '\0' || ph <= 0) {
            fprintf(stderr, "users set-role: --pharmacy needs a pharmacy id, not '%s'\n", pharmacy);
            return 1;
        }
    }
    if (pa && pharmacy == NULL) {
        fprintf(stderr, "users set-role: a PHARMACY_ADMIN needs --pharmacy ID\n");
        return 1;
    }
    if (!pa && pharmacy != NULL) {
        fprintf(stderr, "users set-role: --pharmacy is only for PHARMACY_ADMIN (other roles have"
                        " no pharmacy)\n");
        return 1;
    }
    rx_param p[] = {RX_TEXT(""),   RX_TEXT("rxd users set-role"),
                    RX_NULL,       RX_NULL,
                    RX_NULL,       RX_NULL,
                    RX_NULL,       RX_NULL,
                    RX_TEXT(role), RX_NULL,
                    RX_BOOL(true), pa ? RX_INT(ph) : RX_NULL,
                    RX_TEXT(ne)};
    rx_rows *r = rx_db_run(m, rbac_update_sql, (int)(sizeof p / sizeof p[0]), p);
    int rc = 1;
    if (rx_rows_failed(r)) {
        const char *st = rx_rows_sqlstate(r);
        if (st != NULL && strcmp(st, "23503") == 0)
            fprintf(stderr, "users set-role: pharmacy %lld does not exist\n", ph);
        else
            db_failed("set-role", r);
    } else if (rx_rows_count(r) != 1) {
        fprintf(stderr, "users set-role: no user with email %s\n", ne);
    } else if (flag(r, "last_sa")) {
        fprintf(stderr,
                "users set-role: %s is the last active super admin; promote another user"
                " first\n",
                ne);
    } else if (!flag(r, "done")) {
        fprintf(stderr, "users set-role: refused (pharmacy or identifiers inconsistent)\n");
    } else {
        const char *id = rx_rows_text(r, 0, rx_rows_column(r, "id"));
        /* The user's sessions ended with the change: tell every worker now
         * (without Redis, auth.status_cache_ms bounds it). */
        if (id != NULL && rx_publish(NULL, SESSIONS_ENDED_CHANNEL, id, strlen(id)) != 0)
            fprintf(stderr,
                    "users set-role: Redis unreachable; running servers refuse the user's old"
                    " tokens within auth.status_cache_ms\n");
        if (pa)
            printf("User %s (id %s) is now PHARMACY_ADMIN of pharmacy %lld.\n", ne, id ? id : "?",
                   ph);
        else
            printf("User %s (id %s) is now %s.\n", ne, id ? id : "?", role);
        rc = 0;
    }
    rx_rows_free(r);
    return rc;
}

int rbac_cli_users(rx_module *m, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return cmd_list(m, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "set-role") == 0)
        return cmd_set_role(m, argc, argv);
    return usage();
}
