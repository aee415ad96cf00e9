/*
 * util.c — helpers of the rbac module. The user object, identifier
 * normalisation and password rules repeat the auth module's (users.c,
 * util.c, passwords.c) because modules share only the SDK, not symbols: keep
 * both in step. Also the strict ISO 8601 check the audit-log filters use.
 */
#include "rbac.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


void rbac_err(json_t *errs, const char *field, const char *msg)
{
    json_t *l = json_object_get(errs, field);
    if (l == NULL) {
        l = json_array();
        json_object_set_new(errs, field, l);
    }
    json_array_append_new(l, json_string(msg));
}




const char *rbac_ip(rx_req *req)
{
    const char *ip = rx_req_client_ip(req);
    return ip ? ip : "";
}

const char *rbac_ua(rx_req *req)
{
    const char *ua = rx_req_header(req, "user-agent");
    if (ua == NULL)
        return "";
    if (strlen(ua) > 255)
        return rx_req_sprintf(req, "%.255s", ua);
    return ua;
}

static bool digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* ISO 8601 only: YYYY-MM-DD, optionally [T ]HH:MM[:SS[.frac]] and Z or
 * ±HH[:MM]. PostgreSQL alone would also take "yesterday" or "epoch", which
 * the contract calls garbage. A '+' of an offset arrives as ' ' when the
 * client did not percent-encode it (form decoding), so " 06:00" after a time
 * reads as "+06:00". The result (ISO, fit for ::timestamptz) goes to out;
 * a date alone means its midnight UTC. */
bool rbac_iso_time(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in);
    if (n < 10 || n > 40 || !digits(in, 4) || in[4] != '-' || !digits(in + 5, 2) || in[7] != '-' ||
        !digits(in + 8, 2))
        return false;
    int mo = (in[5] - '0') * 10 + in[6] - '0', d = (in[8] - '0') * 10 + in[9] - '0';
    int y = atoi(in);
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || y < 1)
        return false;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return false;
    if (n == 10) {
        snprintf(out, outlen, "%sT00:00:00Z", in);
        return true;
    }
    const char *p = in + 10;
    if ((*p != 'T' && *p != 't' && *p != ' ') || !digits(p + 1, 2) || p[3] != ':' ||
        !digits(p + 4, 2))
        return false;
    int hh = (p[1] - '0') * 10 + p[2] - '0', mm = (p[4] - '0') * 10 + p[5] - '0';
    if (hh > 23 || mm > 59)
        return false;
    p += 6;
    if (*p == ':') {
        if (!digits(p + 1, 2) || (p[1] - '0') * 10 + p[2] - '0' > 59)
            return false;
        p += 3;
        if (*p == '.' || *p == ',') {
            p++;
            if (!isdigit((unsigned char)*p))
                return false;
            while (isdigit((unsigned char)*p))
                p++;
        }
    }
    size_t head = (size_t)(p - in);
    char tz[8] = "";
    if (*p == 'Z' || *p == 'z') {
        if (p[1] != '\0')
            return false;
        strcpy(tz, "Z");
    } else if (*p == '+' || *p == '-' || *p == ' ') {
        char sign = *p == '-' ? '-' : '+';
        p++;
        if (!digits(p, 2) || (p[0] - '0') * 10 + p[1] - '0' > 14)
            return false;
        const char *q = p + 2;
        if (*q == ':')
            q++;
        if (*q != '\0' && (!digits(q, 2) || q[2] != '\0'))
            return false;
        snprintf(tz, sizeof tz, "%c%.2s:%.2s", sign, p, *q ? q : "00");
    } else if (*p != '\0') {
        return false;
    } else {
        strcpy(tz, "Z"); /* no offset: UTC, as the server's times are */
    }
    snprintf(out, outlen, "%.10sT%.*s%s", in, (int)(head - 11), in + 11, tz);
    return true;
}
