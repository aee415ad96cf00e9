/*
 * users.c — the user object as the My Pharma frontend reads it (API.md "User
 * object"), built from a row selected with AUTH_USER_COLS, and the DRF answer
 * to a unique-index violation on the users table.
 */
#include "auth.h"

#include <string.h>

static const char *display(const char *v, const char *const *map)
{
    for (int i = 0; map[i] != NULL; i += 2)
        if (strcmp(map[i], v) == 0)
            return map[i + 1];
    return v;
}

static const char *const roles[] = {"SUPER_ADMIN",     "Super Admin",     "PHARMACY_ADMIN",
                                    "Pharmacy Admin",  "DOCTOR",          "Doctor",
                                    "REGISTERED_USER", "Registered User", NULL};
static const char *const statuses[] = {"ACTIVE",
                                       "Active",
                                       "INACTIVE",
                                       "Inactive",
                                       "LOCKED",
                                       "Locked",
                                       "PENDING_VERIFICATION",
                                       "Pending Verification",
                                       NULL};
static const char *const genders[] = {"MALE", "Male", "FEMALE", "Female", "OTHER", "Other", NULL};

static const char *col(const rx_rows *r, int row, const char *name)
{
    int c = rx_rows_column(r, name);
    return c < 0 ? NULL : rx_rows_text(r, row, c);
}

/* The absolute URL clients load the picture from: rxd serves /media/. */
static json_t *picture_url(rx_req *req, const char *name)
{
    if (name == NULL || *name == '\0')
        return json_null();
    const char *host = rx_req_header(req, "host");
    if (host == NULL || strpbrk(host, "/\\ @") != NULL)
        host = "localhost";
    const char *proto = rx_req_header(req, "x-forwarded-proto");
    return json_sprintf("%s://%s/media/profile_pictures/%s",
                        proto && strcmp(proto, "https") == 0 ? "https" : "http", host, name);
}

json_t *auth_user_json(rx_req *req, const rx_rows *r, int row)
{
    const char *role = col(r, row, "role");
    const char *status = col(r, row, "status");
    const char *gender = col(r, row, "gender");
    int64_t id = 0, ph = 0;
    bool ev = false, pv = false;
    rx_rows_int(r, row, rx_rows_column(r, "id"), &id);
    bool has_ph = rx_rows_int(r, row, rx_rows_column(r, "pharmacy_id"), &ph) == 0;
    rx_rows_bool(r, row, rx_rows_column(r, "email_verified"), &ev);
    rx_rows_bool(r, row, rx_rows_column(r, "phone_verified"), &pv);
    const char *dob = col(r, row, "date_of_birth");
    bool g = gender != NULL && *gender != '\0';
    json_t *u = json_object();
    json_object_set_new(u, "id", json_integer(id));
    json_object_set_new(u, "username", json_string(col(r, row, "username")));
    json_object_set_new(u, "email", json_string(col(r, row, "email")));
    json_object_set_new(u, "phone", json_string(col(r, row, "phone")));
    json_object_set_new(u, "profile_picture", picture_url(req, col(r, row, "profile_picture")));
    json_object_set_new(u, "address", json_string(col(r, row, "address")));
    json_object_set_new(u, "role", json_string(role));
    json_object_set_new(u, "role_display", json_string(display(role, roles)));
    json_object_set_new(u, "status", json_string(status));
    json_object_set_new(u, "status_display", json_string(display(status, statuses)));
    json_object_set_new(u, "email_verified", json_boolean(ev));
    json_object_set_new(u, "phone_verified", json_boolean(pv));
    json_object_set_new(u, "created_at", rx_rows_value(r, row, rx_rows_column(r, "created_at")));
    json_object_set_new(u, "gender", g ? json_string(gender) : json_null());
    json_object_set_new(u, "gender_display",
                        g ? json_string(display(gender, genders)) : json_null());
    json_object_set_new(u, "date_of_birth", dob ? json_string(dob) : json_null());
    json_object_set_new(u, "is_active", json_boolean(strcmp(status, "ACTIVE") == 0));
    json_object_set_new(u, "pharmacy", has_ph && ph > 0 ? json_integer(ph) : json_null());
    return u;
}

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
