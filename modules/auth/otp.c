/*
 * otp.c — one-time codes: request-otp, the legacy register/phone, verify-otp,
 * and the send/check steps that password reset and the e-mail/phone change
 * of `me` reuse. A code is 6 digits from the CSPRNG, kept in Redis only as a
 * keyed hash (auth:otp:<identifier>, TTL auth.otp_ttl) with an attempt
 * counter (auth:otp_att:<identifier>); it leaves the server only inside the
 * notify.send job, enqueued in the same statement as its audit row.
 */
#include "auth.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void auth_otp_code(char out[8])
{
    snprintf(out, 8, "%06u", (unsigned)randombytes_uniform(1000000));
}

/* Redis keys use the identifier lower-cased: e-mail is case-insensitive. */
static const char *key_ident(rx_req *req, const auth_ctx *c)
{
    char *s = rx_req_strdup(req, c->ident);
    for (char *p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return s;
}

static void code_hash(const char *ident, const char *code, char hex[65])
{
    unsigned char h[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, auth_cfg.otp_key, sizeof auth_cfg.otp_key, sizeof h);
    crypto_generichash_update(&st, (const unsigned char *)ident, strlen(ident));
    crypto_generichash_update(&st, (const unsigned char *)"\n", 1);
    crypto_generichash_update(&st, (const unsigned char *)code, strlen(code));
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(hex, 65, h, sizeof h);
}

/* ---- sending ---- */

static void enqueued(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    auth_ctx *c = auth_ctx_get(req);
    c->next(req);
}

static void stored(rx_req *req, int err, const rx_redis_reply *r)
{
    if (auth_redis_failed(req, err, r))
        return;
    auth_ctx *c = auth_ctx_get(req);
    const char *action = c->extra;
    json_t *payload = json_pack(
        "{s:s, s:s, s:s, s:{s:s}}", "channel", c->kind == AUTH_PHONE ? "sms" : "email", "to",
        c->ident, "template", c->template_name ? c->template_name : "otp", "vars", "code", c->code);
    json_t *meta = auth_meta(c->kind, c->ident);
    /* The code is in the job payload only, never in the audit metadata. */
    rx_db(req, enqueued,
          "WITH a AS (" AUTH_AUDIT_INSERT "VALUES ($3, $4, $1, $2, $5::jsonb))"
          " SELECT rx_enqueue('notify.send', $6::jsonb) AS job",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)),
          c->user_id > 0 ? RX_INT(c->user_id) : RX_NULL, RX_TEXT(action), RX_JSON(meta),
          RX_JSON(payload));
    json_decref(meta);
    json_decref(payload);
    sodium_memzero(c->code, sizeof c->code);
}

void auth_otp_send(rx_req *req, auth_ctx *c, const char *audit_action, rx_handler done)
{
    char hex[65];
    const char *ki = key_ident(req, c);
    auth_otp_code(c->code);
    code_hash(ki, c->code, hex);
    c->extra = (void *)audit_action;
    c->next = done;
    /* A new code replaces the old one and gets fresh attempts. */
    int rc = rx_redis(req, stored, "EVAL",
                      "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])"
                      " redis.call('DEL', KEYS[2]) return 1",
                      "2", rx_req_sprintf(req, "auth:otp:%s", ki),
                      rx_req_sprintf(req, "auth:otp_att:%s", ki), hex,
                      rx_req_sprintf(req, "%lld", auth_cfg.otp_ttl));
    if (rc != 0)
        rx_reply_unavailable(req, 0);
}

/* ---- checking ---- */

static void checked(rx_req *req, int err, const rx_redis_reply *r)
{
    if (auth_redis_failed(req, err, r))
        return;
    auth_ctx *c = auth_ctx_get(req);
    if (rx_redis_reply_type(r) == RX_REDIS_INTEGER && rx_redis_reply_int(r) == -2) {
        rx_reply_throttled(req, (int)auth_cfg.otp_ttl, "otp_rate_limit",
                           "Too many failed attempts. Please request a new OTP.");
        return;
    }
    size_t n = 0;
    const char *stored_hash =
        rx_redis_reply_type(r) == RX_REDIS_STRING ? rx_redis_reply_str(r, &n) : NULL;
    char hex[65];
    code_hash(key_ident(req, c), c->otp, hex);
    if (stored_hash == NULL || n != 64 || sodium_memcmp(stored_hash, hex, 64) != 0) {
        rx_reply_error(req, 400, "invalid_otp", "Invalid or expired OTP.");
        return;
    }
    c->next(req);
}

void auth_otp_check(rx_req *req, auth_ctx *c, rx_handler on_ok)
{
    const char *ki = key_ident(req, c);
    c->next = on_ok;
    /* Counting happens before comparing, so a code is dead after
     * otp_max_attempts tries whatever they were. */
    int rc = rx_redis(req, checked, "EVAL",
                      "local h = redis.call('GET', KEYS[1])"
                      " if not h then return -1 end"
                      " local a = redis.call('INCR', KEYS[2])"
                      " if a == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end"
                      " if a > tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) return -2 end"
                      " return h",
                      "2", rx_req_sprintf(req, "auth:otp:%s", ki),
                      rx_req_sprintf(req, "auth:otp_att:%s", ki),
                      rx_req_sprintf(req, "%lld", auth_cfg.otp_max_attempts),
                      rx_req_sprintf(req, "%lld", auth_cfg.otp_ttl));
    if (rc != 0)
        rx_reply_unavailable(req, 0);
}

/* ---- request-otp / register/phone ---- */

static void sent(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    rx_reply_json(req, 200,
                  json_pack("{s:s, s:s}", "message", "OTP sent successfully.", "detail",
                            c->kind == AUTH_PHONE ? "Check your phone for the code."
                                                  : "Check your email for the code."));
}

static void send_otp_step(rx_req *req)
{
    auth_otp_send(req, auth_ctx_get(req), "OTP_SENT", sent);
}

static void send_register_phone_step(rx_req *req)
{
    auth_otp_send(req, auth_ctx_get(req), "REGISTER_PHONE", sent);
}

static void limit_sends(rx_req *req, auth_ctx *c, rx_handler next)
{
    auth_limit(req, rx_req_sprintf(req, "auth:otp_send:%s", key_ident(req, c)),
               auth_cfg.otp_sends_per_hour, 3600, "otp_rate_limit",
               "Too many OTP requests. Please try again later.", next);
}

void auth_request_otp(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    if (auth_identifier(c, errs, true) != 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    limit_sends(req, c, send_otp_step);
}

void auth_register_phone(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    const char *phone = auth_str(c, "phone", errs, 255);
    if (phone == NULL || *phone == '\0') {
        if (json_object_size(errs) == 0)
            auth_err(errs, "phone",
                     phone ? "This field may not be blank." : "This field is required.");
    } else if (ident_norm_phone(phone, c->ident, sizeof c->ident) != 0) {
        auth_err(errs, "phone", "Enter a valid phone number.");
    }
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    c->kind = AUTH_PHONE;
    limit_sends(req, c, send_register_phone_step);
}

/* ---- verify-otp ---- */

static void token_stored(rx_req *req, int err, const rx_redis_reply *r)
{
    if (auth_redis_failed(req, err, r))
        return;
    auth_ctx *c = auth_ctx_get(req);
    const char *t = c->kind == AUTH_PHONE ? "phone" : "email";
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "message",
                  "OTP verified. Complete your registration.", "registration_token", c->regtoken,
                  "verified_identifier_type", t, "verified_identifier_value", c->ident, t, c->ident,
                  "expires_in", (json_int_t)auth_cfg.regtoken_ttl);
    rx_reply_json(req, 200, body);
}

static void looked_up(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    auth_ctx *c = auth_ctx_get(req);
    /* What the token may do is decided now: an existing account may only
     * reset its password, a new identifier may only register. */
    bool exists = rx_rows_count(rows) > 0;
    char uuid[37];
    auth_uuid(uuid);
    c->regtoken = rx_req_strdup(req, uuid);
    const char *ki = key_ident(req, c);
    json_t *v = json_pack("{s:s, s:s, s:s}", "kind", c->kind == AUTH_PHONE ? "phone" : "email",
                          "value", c->ident, "purpose", exists ? "reset" : "register");
    char *vs = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    const char *val = rx_req_strdup(req, vs ? vs : "{}");
    free(vs);
    int rc = rx_redis(req, token_stored, "EVAL",
                      "redis.call('DEL', KEYS[1], KEYS[2])"
                      " redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2])"
                      " redis.call('SET', KEYS[4], '1', 'EX', ARGV[2]) return 1",
                      "4", rx_req_sprintf(req, "auth:otp:%s", ki),
                      rx_req_sprintf(req, "auth:otp_att:%s", ki),
                      rx_req_sprintf(req, "auth:regtok:%s", c->regtoken),
                      rx_req_sprintf(req, "auth:verified:%s", ki), val,
                      rx_req_sprintf(req, "%lld", auth_cfg.regtoken_ttl));
    if (rc != 0)
        rx_reply_unavailable(req, 0);
}

static void verified(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    json_t *meta = auth_meta(c->kind, c->ident);
    rx_db(req, looked_up,
          "WITH u AS (SELECT id FROM users"
          "            WHERE CASE WHEN $4 = 'phone' THEN phone = $3"
          "                       ELSE email <> '' AND lower(email) = lower($3) END LIMIT 1),"
          " a AS (" AUTH_AUDIT_INSERT
          "  SELECT (SELECT id FROM u), 'OTP_VERIFIED', $1, $2, $5::jsonb)"
          " SELECT id FROM u",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_TEXT(c->ident),
          RX_TEXT(c->kind == AUTH_PHONE ? "phone" : "email"), RX_JSON(meta));
    json_decref(meta);
}

static void verify_step(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    auth_identifier(c, errs, true);
    c->otp = auth_str(c, "otp", errs, 255);
    if (c->otp == NULL && json_object_get(errs, "otp") == NULL)
        auth_err(errs, "otp", "This field is required.");
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    auth_otp_check(req, c, verified);
}

void auth_verify_otp(rx_req *req)
{
    auth_limit_ip(req, "verify", auth_cfg.verify_per_min, verify_step);
}
