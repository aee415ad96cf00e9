/*
 * config.c — the config file and its environment overrides.
 *
 * A kn_config is built once at start-up and never changes afterwards, so a
 * lookup only reads immutable data and is safe from any thread without locks.
 * The RXD_* environment is copied in when the config is parsed: what the
 * process was started with is what counts, and a later setenv() (which races
 * with getenv() on other threads anyway) cannot change answers mid-run.
 * Lookups sit on request paths, so the file keys and the environment each get
 * an open-addressing hash table, and a lookup allocates nothing.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "kn.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

typedef struct entry {
    char *key; /* file: full key ("cors.max_age"); env: the name after "RXD_" */
    char *value;
    int line; /* file entries only */
} entry;

typedef struct table {
    entry *v; /* in insertion order, which is file order for `rxd check` */
    size_t n, cap;
    uint32_t *slots; /* index into v + 1; 0 marks an empty slot */
    size_t nslots;   /* a power of two, kept at least twice n */
} table;

struct kn_config {
    char *path;
    table file;
    table env;
};

/* ------------------------------------------------------------------ */
/* hash tables                                                         */
/* ------------------------------------------------------------------ */

/* The environment spelling of one key character. ASCII only on purpose:
 * toupper() would depend on the locale. */
static unsigned char env_char(unsigned char ch)
{
    if (ch == '.' || ch == '-')
        return '_';
    if (ch >= 'a' && ch <= 'z')
        return (unsigned char)(ch - 'a' + 'A');
    return ch;
}

/* FNV-1a. With as_env the key is hashed as if already spelled the
 * environment way, so "cors.max_age" finds "CORS_MAX_AGE" without building
 * that string. */
static uint64_t hash_key(const char *s, bool as_env)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        h ^= as_env ? env_char(ch) : ch;
        h *= 1099511628211ULL;
    }
    return h;
}

static bool key_eq(const char *stored, const char *key, bool as_env)
{
    for (;; stored++, key++) {
        unsigned char a = (unsigned char)*stored, b = (unsigned char)*key;
        if (as_env)
            b = env_char(b);
        if (a != b)
            return false;
        if (!a)
            return true;
    }
}

static const entry *table_find(const table *t, const char *key, bool as_env)
{
    if (!t->nslots)
        return NULL;
    size_t mask = t->nslots - 1;
    for (size_t i = (size_t)hash_key(key, as_env) & mask;; i = (i + 1) & mask) {
        uint32_t s = t->slots[i];
        if (!s)
            return NULL;
        if (key_eq(t->v[s - 1].key, key, as_env))
            return &t->v[s - 1];
    }
}

static void table_place(uint32_t *slots, size_t nslots, const char *key, uint32_t idx1)
{
    size_t mask = nslots - 1;
    size_t i = (size_t)hash_key(key, false) & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = idx1;
}

/* Takes ownership of key and value on success only. */
static int table_add(table *t, char *key, char *value, int line)
{
    if (t->n >= UINT32_MAX - 1)
        return RX_ENOMEM;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        entry *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return RX_ENOMEM;
        t->v = v;
        t->cap = cap;
    }
    if ((t->n + 1) * 2 > t->nslots) {
        size_t nslots = t->nslots ? t->nslots * 2 : 32;
        uint32_t *slots = calloc(nslots, sizeof *slots);
        if (!slots)
            return RX_ENOMEM;
        for (size_t i = 0; i < t->n; i++)
            table_place(slots, nslots, t->v[i].key, (uint32_t)(i + 1));
        free(t->slots);
        t->slots = slots;
        t->nslots = nslots;
    }
    t->v[t->n] = (entry){key, value, line};
    table_place(t->slots, t->nslots, key, (uint32_t)(t->n + 1));
    t->n++;
    return 0;
}

static void table_free(table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].key);
        free(t->v[i].value);
    }
    free(t->v);
    free(t->slots);
}

/* ------------------------------------------------------------------ */
/* construction                                                        */
/* ------------------------------------------------------------------ */

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int capture_env(table *t)
{
    if (!environ)
        return 0;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "RXD_", 4) != 0)
            continue;
        const char *name = *e + 4;
        const char *eq = strchr(name, '=');
        if (!eq || eq == name)
            continue;
        char *key = dup_n(name, (size_t)(eq - name));
        if (!key)
            return RX_ENOMEM;
        /* A name listed twice in environ: keep the first, as getenv() does. */
        if (table_find(t, key, false)) {
            free(key);
            continue;
        }
        char *value = strdup(eq + 1);
        if (!value || table_add(t, key, value, 0) != 0) {
            free(key);
            free(value);
            return RX_ENOMEM;
        }
    }
    return 0;
}

static kn_config *config_new(const char *path)
{
    kn_config *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->path = strdup(path);
    if (!c->path || capture_env(&c->env) != 0) {
        kn_config_free(c);
        return NULL;
    }
    return c;
}

kn_config *kn_config_empty(void)
{
    return config_new("");
}

void kn_config_free(kn_config *c)
{
    if (!c)
        return;
    table_free(&c->file);
    table_free(&c->env);
    free(c->path);
    free(c);
}

/* ------------------------------------------------------------------ */
/* parsing                                                             */
/* ------------------------------------------------------------------ */

typedef struct parser {
    kn_config *c;
    const char *name;
    int line;
    char *section; /* "cors" while inside [cors], NULL before any header */
    char *err;
    size_t errlen;
} parser;

static int fail(parser *p, int rc, const char *fmt, ...) RX_PRINTF(3, 4);

static int fail(parser *p, int rc, const char *fmt, ...)
{
    if (!p->err || !p->errlen)
        return rc;
    int n = snprintf(p->err, p->errlen, "%s:%d: ", p->name, p->line);
    if (n >= 0 && (size_t)n < p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Control characters would end up in logs and JSON; the quoted escapes are
 * the way to put a newline or tab into a value. Invalid UTF-8 is refused
 * here rather than when jansson chokes on it far from the config file. */
static const char *check_text(const char *s, const char *end)
{
    const unsigned char *u = (const unsigned char *)s, *e = (const unsigned char *)end;
    while (u < e) {
        unsigned char b = *u;
        if (b < 0x80) {
            if ((b < 0x20 && b != '\t') || b == 0x7f)
                return "control character in line";
            u++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if (b >= 0xc2 && b <= 0xdf) {
            n = 1, cp = b & 0x1f, min = 0x80;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 2, cp = b & 0x0f, min = 0x800;
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 3, cp = b & 0x07, min = 0x10000;
        } else {
            return "invalid UTF-8";
        }
        if ((size_t)(e - u) <= n)
            return "invalid UTF-8";
        for (size_t i = 1; i <= n; i++) {
            if ((u[i] & 0xc0) != 0x80)
                return "invalid UTF-8";
            cp = (cp << 6) | (u[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return "invalid UTF-8";
        u += n + 1;
    }
    return NULL;
}

/* [a-z0-9_.-] with no empty dot-separated part, so every key has exactly one
 * spelling and "a..b" or ".a" cannot sneak in. */
static bool name_ok(const char *s, size_t n)
{
    if (!n || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' ||
                  ch == '.';
        if (!ok || (ch == '.' && s[i + 1] == '.'))
            return false;
    }
    return true;
}

static int parse_section(parser *p, const char *s, const char *end)
{
    const char *close = memchr(s, ']', (size_t)(end - s));
    if (!close)
        return fail(p, RX_EINVAL, "bad section header: missing ']'");
    const char *a = s + 1, *b = close;
    while (a < b && is_blank(*a))
        a++;
    while (b > a && is_blank(b[-1]))
        b--;
    if (!name_ok(a, (size_t)(b - a)))
        return fail(p, RX_EINVAL, "bad section header '%.*s': use a-z 0-9 _ . -",
                    (int)(close + 1 - s), s);
    const char *rest = close + 1;
    while (rest < end && is_blank(*rest))
        rest++;
    if (rest < end && *rest != '#' && *rest != ';')
        return fail(p, RX_EINVAL, "bad section header: unexpected text after ']'");
    char *section = dup_n(a, (size_t)(b - a));
    if (!section)
        return fail(p, RX_ENOMEM, "out of memory");
    free(p->section);
    p->section = section;
    return 0;
}

/* A "quoted value": s points at the opening quote. */
static int parse_quoted(parser *p, const char *s, const char *end, char **out)
{
    char *buf = malloc((size_t)(end - s));
    if (!buf)
        return fail(p, RX_ENOMEM, "out of memory");
    size_t n = 0;
    const char *q = s + 1;
    for (;;) {
        if (q >= end) {
            free(buf);
            return fail(p, RX_EINVAL, "unterminated quote");
        }
        char ch = *q++;
        if (ch == '"')
            break;
        if (ch == '\\') {
            if (q >= end) {
                free(buf);
                return fail(p, RX_EINVAL, "unterminated quote");
            }
            char esc = *q++;
            switch (esc) {
            case '"':
            case '\\':
                ch = esc;
                break;
            case 'n':
                ch = '\n';
                break;
            case 't':
                ch = '\t';
                break;
            default:
                free(buf);
                /* The byte may start a multi-byte character; show it as hex. */
                if ((unsigned char)esc >= 0x80)
                    return fail(p, RX_EINVAL, "unknown escape '\\x%02x' (use \\\" \\\\ \\n \\t)",
                                (unsigned char)esc);
                return fail(p, RX_EINVAL, "unknown escape '\\%c' (use \\\" \\\\ \\n \\t)", esc);
            }
        }
        buf[n++] = ch;
    }
    while (q < end && is_blank(*q))
        q++;
    if (q < end && *q != '#') {
        free(buf);
        return fail(p, RX_EINVAL, "unexpected text after closing quote");
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

static int parse_pair(parser *p, const char *s, const char *end)
{
    const char *eq = memchr(s, '=', (size_t)(end - s));
    if (!eq)
        return fail(p, RX_EINVAL, "expected 'key = value', '[section]' or a comment");
    const char *kend = eq;
    while (kend > s && is_blank(kend[-1]))
        kend--;
    if (kend == s)
        return fail(p, RX_EINVAL, "missing key before '='");
    if (!name_ok(s, (size_t)(kend - s)))
        return fail(p, RX_EINVAL, "bad key '%.*s': use a-z 0-9 _ . -", (int)(kend - s), s);

    size_t klen = (size_t)(kend - s);
    size_t slen = p->section ? strlen(p->section) + 1 : 0;
    char *key = malloc(slen + klen + 1);
    if (!key)
        return fail(p, RX_ENOMEM, "out of memory");
    if (slen) {
        memcpy(key, p->section, slen - 1);
        key[slen - 1] = '.';
    }
    memcpy(key + slen, s, klen);
    key[slen + klen] = '\0';

    const entry *prev = table_find(&p->c->file, key, false);
    if (prev) {
        int rc = fail(p, RX_EEXIST, "'%s' already set at line %d", key, prev->line);
        free(key);
        return rc;
    }

    const char *v = eq + 1;
    while (v < end && is_blank(*v))
        v++;
    char *value = NULL;
    if (v < end && *v == '"') {
        int rc = parse_quoted(p, v, end, &value);
        if (rc) {
            free(key);
            return rc;
        }
    } else {
        /* A trailing comment needs blank before '#', so "a#b" and URL
         * fragments stay intact. The scan starts right after '=' so that
         * "key = # note" is an empty value. */
        const char *vend = end;
        for (const char *q = eq + 2; q < end; q++) {
            if (*q == '#' && is_blank(q[-1])) {
                vend = q;
                break;
            }
        }
        while (vend > v && is_blank(vend[-1]))
            vend--;
        if (vend < v)
            vend = v;
        value = dup_n(v, (size_t)(vend - v));
        if (!value) {
            free(key);
            return fail(p, RX_ENOMEM, "out of memory");
        }
    }
    if (table_add(&p->c->file, key, value, p->line) != 0) {
        free(key);
        free(value);
        return fail(p, RX_ENOMEM, "out of memory");
    }
    return 0;
}

static int parse_line(parser *p, const char *s, const char *end)
{
    if (end > s && end[-1] == '\r')
        end--;
    const char *bad = check_text(s, end);
    if (bad)
        return fail(p, RX_EINVAL, "%s", bad);
    while (s < end && is_blank(*s))
        s++;
    while (end > s && is_blank(end[-1]))
        end--;
    if (s == end || *s == '#' || *s == ';')
        return 0;
    if (*s == '[')
        return parse_section(p, s, end);
    return parse_pair(p, s, end);
}

int kn_config_parse(kn_config **out, const char *text, size_t len, const char *name, char *err,
                    size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return RX_EINVAL;
    *out = NULL;
    parser p = {.name = name ? name : "config", .err = err, .errlen = errlen};
    if (!text && len)
        return fail(&p, RX_EINVAL, "no text");
    if (!text)
        text = ""; /* NULL + 0 is undefined behaviour */
    p.c = config_new(name ? name : "");
    if (!p.c)
        return fail(&p, RX_ENOMEM, "out of memory");

    const char *s = text, *end = text + len;
    /* Editors on some systems save UTF-8 with a byte order mark. */
    if (len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
        s += 3;
    int rc = 0;
    while (s < end) {
        if (p.line == INT_MAX) {
            rc = fail(&p, RX_EINVAL, "too many lines");
            break;
        }
        p.line++;
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        rc = parse_line(&p, s, le);
        if (rc)
            break;
        s = nl ? nl + 1 : end;
    }
    free(p.section);
    if (rc) {
        kn_config_free(p.c);
        return rc;
    }
    *out = p.c;
    return 0;
}

int kn_config_load(kn_config **out, const char *path, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return RX_EINVAL;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        return e == ENOENT ? RX_ENOENT : e == ENOMEM ? RX_ENOMEM : RX_EINVAL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nbuf = realloc(buf, ncap);
            if (!nbuf) {
                rc = RX_ENOMEM;
                if (err && errlen)
                    snprintf(err, errlen, "%s: out of memory", path);
                break;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                /* e.g. EISDIR: fopen() of a directory succeeds on Linux. */
                rc = RX_EINVAL;
                if (err && errlen)
                    snprintf(err, errlen, "%s: %s", path, strerror(errno));
            }
            break;
        }
    }
    fclose(f);
    if (!rc)
        rc = kn_config_parse(out, buf, len, path, err, errlen);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ */
/* lookups                                                             */
/* ------------------------------------------------------------------ */

const char *kn_config_get(const kn_config *c, const char *key)
{
    if (!c || !key)
        return NULL;
    const entry *e = table_find(&c->env, key, true);
    if (!e)
        e = table_find(&c->file, key, false);
    return e ? e->value : NULL;
}

const char *kn_config_origin(const kn_config *c, const char *key, char *buf, size_t buflen)
{
    if (!c || !key)
        return NULL;
    const entry *e = table_find(&c->env, key, true);
    if (e) {
        if (!buf || !buflen)
            return "env";
        snprintf(buf, buflen, "env RXD_%s", e->key);
        return buf;
    }
    e = table_find(&c->file, key, false);
    if (e) {
        if (!buf || !buflen)
            return "file";
        snprintf(buf, buflen, "%s:%d", c->path, e->line);
        return buf;
    }
    return NULL;
}

size_t kn_config_file_count(const kn_config *c)
{
    return c ? c->file.n : 0;
}

const char *kn_config_file_key(const kn_config *c, size_t i, int *line)
{
    if (!c || i >= c->file.n)
        return NULL;
    if (line)
        *line = c->file.v[i].line;
    return c->file.v[i].key;
}

const char *kn_config_path(const kn_config *c)
{
    return c ? c->path : "";
}

/* ------------------------------------------------------------------ */
/* typed getters                                                       */
/* ------------------------------------------------------------------ */

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* The value trimmed to [*s, *e). False when unset; an empty value counts as
 * unset too, so `RXD_X=` or `x =` falls back to the default the way an
 * operator clearing a setting expects. */
static bool typed_value(const kn_config *c, const char *key, const char **s, const char **e)
{
    const char *v = kn_config_get(c, key);
    if (!v)
        return false;
    const char *end = v + strlen(v);
    while (v < end && is_space(*v))
        v++;
    while (end > v && is_space(end[-1]))
        end--;
    *s = v;
    *e = end;
    return v < end;
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Decimal digits at s (with an optional sign when signed_ok); *rest is set
 * past them. Every malformation is RX_ERANGE: "not a number" is the same
 * error as "too big" for callers (rx.h). */
static int parse_number(const char *s, const char *e, bool signed_ok, long long *v,
                        const char **rest)
{
    const char *d = s;
    if (signed_ok && d < e && (*d == '+' || *d == '-'))
        d++;
    const char *q = d;
    while (q < e && is_digit(*q))
        q++;
    if (q == d)
        return RX_ERANGE;
    /* strtoll stops at the first non-digit, which is q (or the NUL/space
     * after the trimmed end), so no copy is needed. */
    char *endp;
    errno = 0;
    long long n = strtoll(s, &endp, 10);
    if (errno == ERANGE || endp != q)
        return RX_ERANGE;
    *v = n;
    *rest = q;
    return 0;
}

static bool word_eq(const char *s, const char *e, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(e - s) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != word[i])
            return false;
    }
    return true;
}

int kn_config_int(const kn_config *c, const char *key, long long def, long long *out)
{
    const char *s, *e, *rest;
    long long v;
    if (!typed_value(c, key, &s, &e)) {
        v = def;
    } else {
        int rc = parse_number(s, e, true, &v, &rest);
        if (rc)
            return rc;
        if (rest != e)
            return RX_ERANGE;
    }
    if (out)
        *out = v;
    return 0;
}

int kn_config_bool(const kn_config *c, const char *key, bool def, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    const char *s, *e;
    bool v = def;
    if (typed_value(c, key, &s, &e)) {
        bool found = false;
        for (size_t i = 0; i < sizeof yes / sizeof yes[0] && !found; i++) {
            if (word_eq(s, e, yes[i]))
                v = true, found = true;
            else if (word_eq(s, e, no[i]))
                v = false, found = true;
        }
        if (!found)
            return RX_EINVAL;
    }
    if (out)
        *out = v;
    return 0;
}

typedef struct unit {
    const char *suffix;
    long long mult;
} unit;

/* A non-negative number followed by an optional unit from `units` (the first
 * entry is the empty suffix). */
static int parse_with_unit(const kn_config *c, const char *key, long long def, long long *out,
                           const unit *units, size_t nunits)
{
    const char *s, *e, *rest;
    long long v;
    if (!typed_value(c, key, &s, &e)) {
        v = def;
    } else {
        int rc = parse_number(s, e, false, &v, &rest);
        if (rc)
            return rc;
        while (rest < e && is_blank(*rest))
            rest++;
        size_t i = 0;
        while (i < nunits && !word_eq(rest, e, units[i].suffix))
            i++;
        if (i == nunits || v > LLONG_MAX / units[i].mult)
            return RX_ERANGE;
        v *= units[i].mult;
    }
    if (out)
        *out = v;
    return 0;
}

int kn_config_size(const kn_config *c, const char *key, long long def, long long *out)
{
    static const unit units[] = {
        {"", 1},          {"b", 1},          {"k", 1LL << 10}, {"kb", 1LL << 10},
        {"m", 1LL << 20}, {"mb", 1LL << 20}, {"g", 1LL << 30}, {"gb", 1LL << 30},
    };
    return parse_with_unit(c, key, def, out, units, sizeof units / sizeof units[0]);
}

int kn_config_duration_ms(const kn_config *c, const char *key, long long def, long long *out)
{
    static const unit units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000},
    };
    return parse_with_unit(c, key, def, out, units, sizeof units / sizeof units[0]);
}

/* ------------------------------------------------------------------ */
/* lists                                                               */
/* ------------------------------------------------------------------ */

char **kn_split_list(const char *value, size_t *count)
{
    size_t n = 0;
    for (const char *s = value; s && *s;) {
        while (*s && is_space(*s))
            s++;
        if (!*s)
            break;
        n++;
        while (*s && !is_space(*s))
            s++;
    }
    char **v = calloc(n + 1, sizeof *v);
    if (!v)
        return NULL;
    size_t i = 0;
    for (const char *s = value; i < n;) {
        while (is_space(*s))
            s++;
        const char *w = s;
        while (*s && !is_space(*s))
            s++;
        v[i] = dup_n(w, (size_t)(s - w));
        if (!v[i]) {
            kn_strv_free(v);
            return NULL;
        }
        i++;
    }
    if (count)
        *count = n;
    return v;
}

void kn_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}
