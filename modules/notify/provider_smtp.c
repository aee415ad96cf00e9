/*
 * provider_smtp.c — e-mail over SMTP with libcurl: smtp://host:587 (STARTTLS
 * when the server offers it with notify.email.smtp.tls = try, the default;
 * `require` refuses to send in clear, `none` never upgrades) or
 * smtps://host:465 (TLS from the first byte). AUTH when a user is configured
 * (libcurl picks the mechanism the server offers: PLAIN, LOGIN, ...).
 *
 * The message is plain text, UTF-8. Its Message-ID is derived from the job
 * id, so a receiving system that deduplicates by Message-ID sees a retry as
 * the same message (SMTP itself cannot promise not to deliver twice).
 *
 * Runs on a pool thread (or the main thread for `rxd notify-test`); error
 * texts never carry the password (notify_redact).
 */
#include "notify.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct notify_upload {
    const char *data;
    size_t len, off;
} notify_upload;

static size_t notify_read(char *buf, size_t size, size_t n, void *ud)
{
    notify_upload *u = ud;
    size_t room = size * n, left = u->len - u->off;
    size_t k = left < room ? left : room;
    memcpy(buf, u->data + u->off, k);
    u->off += k;
    return k;
}

static bool notify_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* RFC 2047 "=?UTF-8?B?...?=" for a header value that is not plain ASCII. */
static char *notify_header_word(const char *s)
{
    if (notify_ascii(s))
        return strdup(s);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s);
    char *out = malloc(12 + (n + 2) / 3 * 4 + 3);
    if (out == NULL)
        return NULL;
    char *o = out + sprintf(out, "=?UTF-8?B?");
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    strcpy(o, "?=");
    return out;
}

/* The From display name: quoted when ASCII (init refuses '"' and '\\' in
 * it, so nothing needs escaping), an encoded word otherwise. "" stays "". */
static char *notify_display_name(const char *s)
{
    if (*s == '\0' || !notify_ascii(s))
        return notify_header_word(s);
    char *out = malloc(strlen(s) + 3);
    if (out != NULL)
        sprintf(out, "\"%s\"", s);
    return out;
}

/* The body with every line ending as CRLF (SMTP's line ending; libcurl
 * escapes a leading '.' itself). */
static char *notify_crlf(const char *s)
{
    size_t n = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++)
        extra += s[i] == '\n';
    char *out = malloc(n + extra + 3);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r')
            continue;
        if (s[i] == '\n')
            out[o++] = '\r';
        out[o++] = s[i];
    }
    out[o++] = '\r';
    out[o++] = '\n';
    out[o] = '\0';
    return out;
}

int notify_smtp_send(const notify_smtp_conf *c, const notify_msg *m, char *err, size_t errlen)
{
    char date[64], msgid[160];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    const char *domain = strchr(c->from, '@');
    domain = domain ? domain + 1 : "localhost";
    if (m->job_id)
        snprintf(msgid, sizeof(msgid), "<rxd-notify-%" PRId64 "@%s>", m->job_id, domain);
    else
        snprintf(msgid, sizeof(msgid), "<rxd-notify-test-%lld@%s>", (long long)now, domain);

    char *subj = notify_header_word(m->subject ? m->subject : "");
    char *name = notify_display_name(c->from_name);
    char *body = notify_crlf(m->body);
    char *mail = NULL;
    int out = -1;
    if (subj == NULL || name == NULL || body == NULL) {
        snprintf(err, errlen, "smtp provider: out of memory");
        goto done;
    }
    const char *enc = notify_ascii(m->body) ? "7bit" : "8bit";
    size_t cap = strlen(subj) + strlen(name) + strlen(body) + strlen(c->from) + strlen(m->to) + 512;
    mail = malloc(cap);
    if (mail == NULL) {
        snprintf(err, errlen, "smtp provider: out of memory");
        goto done;
    }
    int len = snprintf(mail, cap,
                       "Date: %s\r\n"
                       "From: %s%s<%s>\r\n"
                       "To: <%s>\r\n"
                       "Subject: %s\r\n"
                       "Message-ID: %s\r\n"
                       "MIME-Version: 1.0\r\n"
                       "Content-Type: text/plain; charset=UTF-8\r\n"
                       "Content-Transfer-Encoding: %s\r\n"
                       "\r\n%s",
                       date, name, *name ? " " : "", c->from, m->to, subj, msgid, enc, body);

    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        snprintf(err, errlen, "smtp provider: curl_easy_init failed");
        goto done;
    }
    char from[512];
    snprintf(from, sizeof(from), "<%s>", c->from);
    char rcpt_s[512];
    snprintf(rcpt_s, sizeof(rcpt_s), "<%s>", m->to);
    struct curl_slist *rcpt = curl_slist_append(NULL, rcpt_s);
    notify_upload up = {.data = mail, .len = (size_t)len};
    char ebuf[CURL_ERROR_SIZE] = "";
    long ssl = strcmp(c->tls, "require") == 0 ? (long)CURLUSESSL_ALL
               : strcmp(c->tls, "none") == 0  ? (long)CURLUSESSL_NONE
                                              : (long)CURLUSESSL_TRY;
    curl_easy_setopt(curl, CURLOPT_URL, c->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(curl, CURLOPT_USE_SSL, ssl);
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, notify_read);
    curl_easy_setopt(curl, CURLOPT_READDATA, &up);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE, (long)len);
    if (*c->user) {
        curl_easy_setopt(curl, CURLOPT_USERNAME, c->user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, c->password);
    }
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode cc = curl_easy_perform(curl);
    if (cc == CURLE_OK) {
        out = 0;
    } else {
        long code = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
        snprintf(err, errlen, "smtp provider: %s%s%s", curl_easy_strerror(cc), *ebuf ? ": " : "",
                 ebuf);
        if (code > 0) {
            size_t l = strlen(err);
            snprintf(err + l, errlen - l, " (server said %ld)", code);
        }
        notify_redact(err, errlen, c->password);
    }
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(curl);
done:
    free(mail);
    free(subj);
    free(name);
    free(body);
    return out;
}
