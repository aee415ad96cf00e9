/*
 * templates.c — message templates of modules/notify.
 *
 * A template is config text with {name} placeholders filled from the job
 * payload's "vars" (`[notify]` template.otp.sms = Your code is {code}.).
 * "{{" and "}}" stand for literal braces. The syntax is checked at init, so
 * a typo in the config refuses the start instead of failing every job; a
 * placeholder the payload does not fill fails the job (that is a bug in the
 * module that enqueued it, and retrying will not fix it, but the error must
 * be visible in rx_jobs.last_error).
 *
 * Errors name the placeholder, never a value: values are codes.
 */
#include "notify.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOTIFY_NAME_MAX 64

/* Length of a placeholder name at s ([A-Za-z0-9_]+), 0 when none. */
static size_t name_len(const char *s)
{
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '_')
        n++;
    return n;
}

int notify_template_check(const char *text, char *err, size_t errlen)
{
    for (const char *p = text; *p; p++) {
        if (p[0] == '{' && p[1] == '{') {
            p++;
            continue;
        }
        if (p[0] == '}' && p[1] == '}') {
            p++;
            continue;
        }
        if (*p == '}') {
            snprintf(err, errlen, "a lone '}' at offset %zu (write '}}' for a brace)",
                     (size_t)(p - text));
            return -1;
        }
        if (*p != '{')
            continue;
        size_t n = name_len(p + 1);
        if (n == 0 || n > NOTIFY_NAME_MAX || p[1 + n] != '}') {
            snprintf(err, errlen,
                     "bad placeholder at offset %zu: use {name} with letters, digits and _ "
                     "(write '{{' for a brace)",
                     (size_t)(p - text));
            return -1;
        }
        p += n + 1;
    }
    return 0;
}

/* A growing buffer; on allocation failure `s` becomes NULL and stays so. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *ns = realloc(b->s, cap);
        if (ns == NULL) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

char *notify_render(const char *text, const json_t *vars, bool oneline, char *err, size_t errlen)
{
    sbuf b = {0};
    sb_add(&b, "", 0);
    for (const char *p = text; *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            sb_add(&b, p, 1);
            p += 2;
            continue;
        }
        if (*p != '{') {
            size_t n = strcspn(p, "{}");
            if (n == 0)
                n = 1; /* a lone '}' (refused at init; kept verbatim if it got here) */
            sb_add(&b, p, n);
            p += n;
            continue;
        }
        size_t n = name_len(p + 1);
        if (n == 0 || n > NOTIFY_NAME_MAX || p[1 + n] != '}') {
            snprintf(err, errlen, "bad placeholder syntax in the template");
            free(b.s);
            return NULL;
        }
        char name[NOTIFY_NAME_MAX + 1];
        memcpy(name, p + 1, n);
        name[n] = '\0';
        const json_t *v = json_is_object(vars) ? json_object_get(vars, name) : NULL;
        char num[64];
        if (json_is_string(v)) {
            sb_add(&b, json_string_value(v), json_string_length(v));
        } else if (json_is_integer(v)) {
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            sb_add(&b, num, strlen(num));
        } else if (v == NULL) {
            snprintf(err, errlen, "unknown placeholder {%s}: the payload's vars have no \"%s\"",
                     name, name);
            free(b.s);
            return NULL;
        } else {
            snprintf(err, errlen, "vars.%s must be a string or an integer", name);
            free(b.s);
            return NULL;
        }
        p += n + 2;
    }
    if (b.oom) {
        snprintf(err, errlen, "out of memory");
        free(b.s);
        return NULL;
    }
    if (memchr(b.s, '\0', b.len) != NULL || (oneline && strpbrk(b.s, "\r\n") != NULL)) {
        snprintf(err, errlen, "a value would break the message (NUL%s)",
                 oneline ? " or a line break in a one-line field" : "");
        free(b.s);
        return NULL;
    }
    return b.s;
}

void notify_redact(char *buf, size_t buflen, const char *secret)
{
    if (secret == NULL || *secret == '\0' || buflen == 0)
        return;
    char *out = malloc(buflen);
    if (out == NULL) {
        /* Cannot prove the text is clean: withhold it rather than leak. */
        snprintf(buf, buflen, "(error text withheld)");
        return;
    }
    size_t sl = strlen(secret), o = 0;
    for (const char *p = buf; *p && o + 1 < buflen;) {
        if (strncmp(p, secret, sl) == 0) {
            for (int k = 0; k < 3 && o + 1 < buflen; k++)
                out[o++] = '*';
            p += sl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    memcpy(buf, out, o + 1);
    free(out);
}
