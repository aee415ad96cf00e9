/*
 * multipart.c — multipart/form-data bodies (RFC 7578), for uploads (profile
 * pictures, later prescriptions) and for the old frontend's forms. The body
 * is already in memory (bounded by the route's body limit), so parsing is a
 * single pass that points into an arena copy; nothing is streamed.
 */
#include "kn_http.h"

#include <string.h>
#include <strings.h>

static const char *ci_find(const char *hay, size_t hlen, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= hlen; i++)
        if (strncasecmp(hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

static const char *mem_find(const char *hay, size_t hlen, const char *needle, size_t n)
{
    if (n == 0 || hlen < n)
        return NULL;
    for (const char *p = hay; p + n <= hay + hlen; p++) {
        p = memchr(p, needle[0], (size_t)(hay + hlen - p));
        if (p == NULL || p + n > hay + hlen)
            return NULL;
        if (memcmp(p, needle, n) == 0)
            return p;
    }
    return NULL;
}

bool rx_req_is_multipart(const rx_req *req)
{
    const char *ct = rx_req_header(req, "content-type");
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    return strncasecmp(ct, "multipart/form-data", 19) == 0;
}

/* A parameter of a header value: name="value" or name=value. Arena copy. */
static char *param(rx_req *req, const char *h, size_t hlen, const char *name)
{
    size_t n = strlen(name);
    const char *p = h, *end = h + hlen;
    while ((p = ci_find(p, (size_t)(end - p), name)) != NULL) {
        /* must be a whole parameter name: preceded by ';' or space */
        bool start = p == h || p[-1] == ';' || p[-1] == ' ' || p[-1] == '\t';
        const char *v = p + n;
        p += n;
        if (!start || v >= end || *v != '=')
            continue;
        v++;
        if (v < end && *v == '"') {
            v++;
            const char *q = v;
            while (q < end && *q != '"')
                q += (*q == '\\' && q + 1 < end) ? 2 : 1;
            if (q >= end)
                return NULL;
            return kn_arena_strndup(&req->arena, v, (size_t)(q - v));
        }
        const char *q = v;
        while (q < end && *q != ';' && *q != ' ' && *q != '\t' && *q != '\r')
            q++;
        return kn_arena_strndup(&req->arena, v, (size_t)(q - v));
    }
    return NULL;
}

static int bad(rx_req *req, const char *why)
{
    rx_reply_error(req, 400, "parse_error", "Multipart form parse error - %s", why);
    return RX_EINVAL;
}

int rx_req_multipart(rx_req *req, const rx_part **parts, size_t *n)
{
    *parts = NULL;
    *n = 0;
    const char *ct = rx_req_header(req, "content-type");
    if (!rx_req_is_multipart(req)) {
        rx_reply_error(req, 415, "unsupported_media_type", "Unsupported media type \"%s\" in request.",
                       ct ? ct : "");
        return RX_EINVAL;
    }
    char *boundary = param(req, ct, strlen(ct), "boundary");
    if (boundary == NULL || *boundary == '\0' || strlen(boundary) > 70)
        return bad(req, "Invalid boundary in multipart: None");
    char *delim = rx_req_sprintf(req, "--%s", boundary);
    size_t dlen = strlen(delim);
    size_t blen;
    const char *body = rx_req_body(req, &blen);
    const char *end = body + blen;
    const char *p = mem_find(body, blen, delim, dlen);
    if (p == NULL)
        return bad(req, "no parts");
    size_t cap = 8;
    rx_part *out = rx_req_alloc(req, cap * sizeof(rx_part));
    if (out == NULL)
        return bad(req, "out of memory");
    for (;;) {
        p += dlen;
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            break; /* closing delimiter */
        /* transport padding, then CRLF */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return bad(req, "malformed delimiter line");
        p += 2;
        const char *hend = mem_find(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (hend == NULL)
            return bad(req, "part headers do not end");
        rx_part part = {0};
        /* headers of this part */
        const char *h = p;
        while (h < hend + 2) {
            const char *eol = mem_find(h, (size_t)(hend + 2 - h), "\r\n", 2);
            if (eol == NULL)
                break;
            size_t len = (size_t)(eol - h);
            if (len > 20 && strncasecmp(h, "content-disposition:", 20) == 0) {
                if (ci_find(h, len, "form-data") == NULL)
                    return bad(req, "part is not form-data");
                part.name = param(req, h + 20, len - 20, "name");
                part.filename = param(req, h + 20, len - 20, "filename");
            } else if (len > 13 && strncasecmp(h, "content-type:", 13) == 0) {
                const char *v = h + 13;
                while (v < eol && (*v == ' ' || *v == '\t'))
                    v++;
                part.content_type = kn_arena_strndup(&req->arena, v, (size_t)(eol - v));
            }
            h = eol + 2;
        }
        if (part.name == NULL)
            return bad(req, "part without a name");
        const char *data = hend + 4;
        char *next_delim = rx_req_sprintf(req, "\r\n%s", delim);
        const char *next = mem_find(data, (size_t)(end - data), next_delim, dlen + 2);
        if (next == NULL)
            return bad(req, "part does not end");
        part.data = kn_arena_strndup(&req->arena, data, (size_t)(next - data));
        part.len = (size_t)(next - data);
        if (part.data == NULL)
            return bad(req, "out of memory");
        if (*n == cap) {
            rx_part *grown = kn_arena_realloc(&req->arena, out, cap * sizeof(rx_part),
                                              cap * 2 * sizeof(rx_part));
            if (grown == NULL)
                return bad(req, "out of memory");
            out = grown;
            cap *= 2;
        }
        out[(*n)++] = part;
        p = next + 2;
    }
    *parts = out;
    return 0;
}

const rx_part *rx_part_get(const rx_part *parts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (parts[i].name && strcmp(parts[i].name, name) == 0)
            return &parts[i];
    return NULL;
}
