/*
 * users.c — the user object as the My Pharma frontend reads it (API.md "User
 * object"), built from a row selected with AUTH_USER_COLS, and the DRF answer
 * to a unique-index violation on the users table.
 */
#include "auth.h"

#include <string.h>


/* 23505 on one of the users' unique indexes -> 400 on that field, as DRF's
 * UniqueValidator words it; anything else -> the SDK's answer. */
void auth_reply_unique(rx_req *req, const rx_rows *rows)
{
    const char *st = rx_rows_sqlstate(rows);
    const char *cn = rx_rows_constraint(rows);
    if (rx_rows_error(rows) == RX_EDB && st && strcmp(st, "23505") == 0 && cn) {
        if (strcmp(cn, "users_email_key") == 0) {
            rx_reply_invalid_field(req, "email", "user with this email already exists.");
            return;
        }
        if (strcmp(cn, "users_phone_key") == 0) {
            rx_reply_invalid_field(req, "phone", "user with this phone already exists.");
            return;
        }
        if (strcmp(cn, "users_username_key") == 0) {
            rx_reply_invalid_field(req, "username", "A user with that username already exists.");
            return;
        }
    }
    rx_reply_db_error(req, rows);
}
