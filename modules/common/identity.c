/*
 * identity.c — see identity.h: identifier normalisation and password rules
 * shared by the auth and rbac modules.
 */
#include "identity.h"

#include <ctype.h>
#include <stdio.h>
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
