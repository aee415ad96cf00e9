/*
 * identity.c — see identity.h: identifier normalisation, password rules and
 * the user object, shared by the auth and rbac modules.
 */
#include "identity.h"

#include <ctype.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

static void ident_err(json_t *errs, const char *field, const char *msg)
{
    json_t *l = json_object_get(errs, field);
    if (l == NULL) {
        l = json_array();
        json_object_set_new(errs, field, l);
    }
    json_array_append_new(l, json_string(msg));
}

/* Bangladesh spellings (01712345678, 8801712345678, +8801712345678) and any
 * E.164 number become "+<digits>", so every spelling finds the same user. */
int ident_norm_phone(const char *in, char *out, size_t outlen)
{
    char d[32];
    size_t n = 0;
    bool plus = false;
    for (const char *p = in; *p; p++) {
        if (*p == ' ' || *p == '-' || *p == '(' || *p == ')')
            continue;
        if (*p == '+' && n == 0 && !plus) {
            plus = true;
            continue;
        }
        if (!isdigit((unsigned char)*p) || n + 1 >= sizeof d)
            return -1;
        d[n++] = *p;
    }
    d[n] = '\0';
    if (n < 10)
        return -1;
    if (plus) {
        if (n > 15 || d[0] == '0')
            return -1;
        snprintf(out, outlen, "+%s", d);
    } else if (n == 13 && strncmp(d, "880", 3) == 0) {
        snprintf(out, outlen, "+%s", d);
    } else if (n == 11 && d[0] == '0') {
        snprintf(out, outlen, "+88%s", d);
    } else if (n == 10 && d[0] == '1') {
        snprintf(out, outlen, "+880%s", d);
    } else {
        return -1;
    }
    if (strncmp(out, "+880", 4) == 0 && (strlen(out) != 14 || out[4] != '1'))
        return -1;
    return 0;
}

/* Django's EmailValidator, roughly: local@domain.tld, no spaces; the domain
 * is lower-cased as Django's normalize_email does. */
int ident_norm_email(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in);
    if (n == 0 || n > 254 || n + 1 > outlen)
        return -1;
    const char *at = strrchr(in, '@');
    if (at == NULL || at == in || strchr(in, '@') != at)
        return -1;
    const char *dom = at + 1;
    const char *dot = strrchr(dom, '.');
    if (*dom == '\0' || dot == NULL || dot == dom || dot[1] == '\0' || dom[0] == '-')
        return -1;
    for (const char *p = in; *p; p++)
        if (isspace((unsigned char)*p) || (unsigned char)*p < 0x21 || *p == ',' || *p == ';' ||
            *p == '<' || *p == '>' || *p == '"')
            return -1;
    if (strstr(dom, "..") != NULL)
        return -1;
    memcpy(out, in, n + 1);
    for (char *p = out + (dom - in); *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return 0;
}

bool ident_password_rules(const char *pw, json_t *errs, const char *field)
{
    bool up = false, low = false, dig = false, spec = false;
    size_t n = strlen(pw);
    for (const char *p = pw; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        up |= isupper(ch) != 0;
        low |= islower(ch) != 0;
        dig |= isdigit(ch) != 0;
        spec |= strchr("@$!%*?&#", ch) != NULL && ch != 0;
    }
    size_t before = json_array_size(json_object_get(errs, field));
    if (n < 8)
        ident_err(errs, field, "Password must be at least 8 characters long.");
    if (!up)
        ident_err(errs, field, "Password must contain at least one uppercase letter.");
    if (!low)
        ident_err(errs, field, "Password must contain at least one lowercase letter.");
    if (!dig)
        ident_err(errs, field, "Password must contain at least one digit.");
    if (!spec)
        ident_err(errs, field, "Password must contain at least one special character (@$!%*?&#).");
    return json_array_size(json_object_get(errs, field)) == before;
}

static const char *display(const char *v, const char *const *map)
{
    for (int i = 0; v != NULL && map[i] != NULL; i += 2)
        if (strcmp(map[i], v) == 0)
            return map[i + 1];
    return v;
}

static const char *const role_names[] = {"SUPER_ADMIN",     "Super Admin",     "PHARMACY_ADMIN",
                                         "Pharmacy Admin",  "DOCTOR",          "Doctor",
                                         "REGISTERED_USER", "Registered User", NULL};
static const char *const status_names[] = {"ACTIVE",
                                           "Active",
                                           "INACTIVE",
                                           "Inactive",
                                           "LOCKED",
                                           "Locked",
                                           "PENDING_VERIFICATION",
                                           "Pending Verification",
                                           NULL};
static const char *const gender_names[] = {"MALE",  "Male",  "FEMALE", "Female",
                                           "OTHER", "Other", NULL};

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
    const char *host = req ? rx_req_header(req, "host") : NULL;
    if (host == NULL || strpbrk(host, "/\\ @") != NULL)
        host = "localhost";
    const char *proto = req ? rx_req_header(req, "x-forwarded-proto") : NULL;
    return json_sprintf("%s://%s/media/profile_pictures/%s",
                        proto && strcmp(proto, "https") == 0 ? "https" : "http", host, name);
}

/* The user object (API.md "User object"), exactly its fields: clients
 * compare the set. The row comes from a SELECT of the users table's columns. */
json_t *ident_user_json(rx_req *req, const rx_rows *r, int row)
{
    const char *role = col(r, row, "role");
    const char *status = col(r, row, "status");
    const char *gender = col(r, row, "gender");
    const char *dob = col(r, row, "date_of_birth");
    int64_t id = 0, ph = 0;
    bool ev = false, pv = false;
    rx_rows_int(r, row, rx_rows_column(r, "id"), &id);
    bool has_ph = rx_rows_int(r, row, rx_rows_column(r, "pharmacy_id"), &ph) == 0;
    rx_rows_bool(r, row, rx_rows_column(r, "email_verified"), &ev);
    rx_rows_bool(r, row, rx_rows_column(r, "phone_verified"), &pv);
    bool g = gender != NULL && *gender != '\0';
    json_t *u = json_object();
    json_object_set_new(u, "id", json_integer(id));
    json_object_set_new(u, "username", json_string(col(r, row, "username")));
    json_object_set_new(u, "email", json_string(col(r, row, "email")));
    json_object_set_new(u, "phone", json_string(col(r, row, "phone")));
    json_object_set_new(u, "profile_picture", picture_url(req, col(r, row, "profile_picture")));
    json_object_set_new(u, "address", json_string(col(r, row, "address")));
    json_object_set_new(u, "role", json_string(role));
    json_object_set_new(u, "role_display", json_string(display(role, role_names)));
    json_object_set_new(u, "status", json_string(status));
    json_object_set_new(u, "status_display", json_string(display(status, status_names)));
    json_object_set_new(u, "email_verified", json_boolean(ev));
    json_object_set_new(u, "phone_verified", json_boolean(pv));
    json_object_set_new(u, "created_at", rx_rows_value(r, row, rx_rows_column(r, "created_at")));
    json_object_set_new(u, "gender", g ? json_string(gender) : json_null());
    json_object_set_new(u, "gender_display",
                        g ? json_string(display(gender, gender_names)) : json_null());
    json_object_set_new(u, "date_of_birth", dob ? json_string(dob) : json_null());
    json_object_set_new(u, "is_active", json_boolean(status && strcmp(status, "ACTIVE") == 0));
    json_object_set_new(u, "pharmacy", has_ph && ph > 0 ? json_integer(ph) : json_null());
    return u;
}
