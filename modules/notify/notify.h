/*
 * notify.h — private to modules/notify: the shapes its files share.
 *
 * notify.c owns the module (config, the "notify.send" task, `rxd notify-test`);
 * templates.c renders messages; provider_*.c deliver one rendered message.
 * Providers run on a libuv pool thread (rx_offload) or on the main thread
 * (the CLI command): they block, and they touch no rx_req.
 */
#ifndef NOTIFY_H
#define NOTIFY_H

#include <rx.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One rendered message, ready for a provider. Borrowed: the strings belong
 * to whoever built it (notify.c's notify_delivery, freed after the send). */
typedef struct notify_msg {
    const char *channel; /* "sms" or "email" */
    const char *to;      /* E.164-ish phone, or an e-mail address */
    const char *tmpl;    /* template name, for logs */
    const char *subject; /* email only, NULL for sms */
    const char *body;
    int64_t job_id; /* 0 from `rxd notify-test`: no idempotency key then */
} notify_msg;

/* Provider settings, read once in init and read-only afterwards. */
typedef struct notify_log_conf {
    const char *outbox; /* path of the JSON-lines file */
} notify_log_conf;

typedef struct notify_http_conf {
    const char *url, *method, *format; /* format: "json" or "form" */
    const char *api_key;               /* secret: never logged */
    const char *api_key_field;         /* body field for the key ("" = none) */
    const char *api_key_header;        /* header for the key ("" = none), e.g. X-API-KEY */
    const char *to_field, *message_field;
    const char *fields;                                 /* extra static fields "k=v k2=v2" */
    const char *idempotency_header, *idempotency_field; /* "" = not sent */
    long timeout_ms, connect_timeout_ms;
} notify_http_conf;

typedef struct notify_smtp_conf {
    const char *url;             /* smtp://host:587 or smtps://host:465 */
    const char *from;            /* bare address for MAIL FROM */
    const char *from_name;       /* display name in the From header, may be "" */
    const char *user, *password; /* secrets: never logged; "" = no AUTH */
    const char *tls;             /* "try" (STARTTLS when offered), "require", "none" */
    long timeout_ms, connect_timeout_ms;
} notify_smtp_conf;

/* Providers: 0 on success, -1 with a secret-free reason in err. */
int notify_log_send(const notify_log_conf *c, const notify_msg *m, bool *skipped, char *err,
                    size_t errlen);
int notify_http_send(const notify_http_conf *c, const notify_msg *m, char *err, size_t errlen);
/* 0 when notify.sms.http.fields ("k=v k2=v2") is well formed, -1 otherwise. */
int notify_http_fields_check(const char *spec);
int notify_smtp_send(const notify_smtp_conf *c, const notify_msg *m, char *err, size_t errlen);

/* Templates (templates.c). The text uses {name} placeholders; "{{" and "}}"
 * are literal braces. */

/* Syntax check at init: 0, or -1 with the problem in err. */
int notify_template_check(const char *text, char *err, size_t errlen);
/* Render `text` with `vars` (a JSON object of strings / numbers). Returns a
 * malloc'ed string (caller frees), or NULL with the problem in err (an unknown
 * placeholder names itself, never a value). `oneline` refuses CR/LF in the
 * result (an e-mail Subject must not inject headers). */
char *notify_render(const char *text, const json_t *vars, bool oneline, char *err, size_t errlen);

/* Replace every occurrence of `secret` (when non-empty) in buf with "***":
 * providers pass error texts through it so a key echoed by a library or a
 * gateway never reaches a log or rx_jobs.last_error. */
void notify_redact(char *buf, size_t buflen, const char *secret);

#endif
