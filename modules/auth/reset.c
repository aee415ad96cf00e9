/*
 * reset.c — passwords: password-reset/ (sends a code to an existing active
 * account, answers the same for any well-formed address), password-reset/
 * confirm/ (a registration token from verify-otp whose identifier has an
 * account) and password-change/ (signed in, with the old password). A reset
 * revokes every refresh token of the user and, by moving the session
 * generation (users.token_generation, with tokens_valid_after), every token
 * issued before it, even in the same second (tokens.c; after the commit the
 * user id goes out on "auth:sessions_ended" so every worker reads it at once,
 * else within auth.status_cache_ms); a change revokes the other sessions'
 * refresh tokens.
 */
#include "auth.h"

#include <stdlib.h>
#include <string.h>

/* ---- password-reset ---- */

static void reply_reset(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    rx_reply_json(req, 200,
                  json_pack("{s:s}", "message",
                            c->kind == AUTH_PHONE
                                ? "If an account exists with this phone number, you will receive "
                                  "reset instructions."
                                : "If an account exists with this email, you will receive reset "
                                  "instructions."));
}

static void reset_limited(rx_req *req, int err, const rx_ratelimit_result *res)
{
    auth_ctx *c = auth_ctx_get(req);
    /* Over the per-address limit: no code, same answer (no enumeration). */
    if (err != 0 || !res->allowed) {
        reply_reset(req);
        return;
    }
    c->template_name = "password_reset";
    auth_otp_send(req, c, "OTP_SENT", reply_reset);
}

static void reset_found(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    auth_ctx *c = auth_ctx_get(req);
    if (rx_rows_count(rows) != 1) {
        reply_reset(req);
        return;
    }
    rx_rows_int(rows, 0, 0, &c->user_id);
    char key[300];
    snprintf(key, sizeof key, "auth:otp_send:%s", c->ident);
    for (char *p = key; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    if (rx_ratelimit(req, rx_req_strdup(req, key), (int)auth_cfg.otp_sends_per_hour, 3600,
                     reset_limited) != 0)
        reply_reset(req);
}

static void reset_step(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    if (auth_identifier(c, errs, false) != 0) {
        if (json_object_size(errs) == 0)
            auth_err(errs, "email", "This field is required.");
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    json_t *meta = auth_meta(c->kind, c->ident);
    rx_db(req, reset_found,
          "WITH u AS (SELECT id FROM users"
          "            WHERE status = 'ACTIVE' AND deleted_at IS NULL"
          "              AND CASE WHEN $4 = 'phone' THEN phone = $3"
          "                       ELSE email <> '' AND lower(email) = lower($3) END LIMIT 1),"
          " a AS (" AUTH_AUDIT_INSERT
          "  SELECT (SELECT id FROM u), 'PASSWORD_RESET_REQUEST', $1, $2, $5::jsonb)"
          " SELECT id FROM u",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_TEXT(c->ident),
          RX_TEXT(c->kind == AUTH_PHONE ? "phone" : "email"), RX_JSON(meta));
    json_decref(meta);
}

void auth_password_reset(rx_req *req)
{
    auth_limit_ip(req, "anon", auth_cfg.anon_per_min, reset_step);
}

/* ---- password-reset/confirm ---- */

static void invalid_token(rx_req *req)
{
    rx_reply_error(req, 400, "invalid_registration_token",
                   "Invalid or expired registration token.");
}

static void confirm_consumed(rx_req *req, int err, const rx_redis_reply *r)
{
    (void)err, (void)r;
    rx_reply_json(req, 200, json_pack("{s:s}", "message", "Password has been reset."));
}

static void consume_token(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (rx_redis(req, confirm_consumed, "DEL",
                 rx_req_sprintf(req, "auth:regtok:%s", c->regtoken)) != 0)
        confirm_consumed(req, 0, NULL);
}

static void confirm_saved(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        invalid_token(req);
        return;
    }
    int64_t id = 0;
    rx_rows_int(rows, 0, 0, &id);
    /* Committed: every worker forgets the user's cached standing. */
    auth_sessions_ended(req, id, consume_token);
}

static void new_hash_work(void *arg)
{
    auth_ctx *c = arg;
    c->ok = auth_pw_hash(c->new_password, c->hash) == 0;
}

static void confirm_hashed(rx_req *req, void *arg)
{
    auth_ctx *c = arg;
    if (!c->ok) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    json_t *meta = auth_meta(c->kind, c->ident);
    /* The code proved the address: it counts as verified from now on. */
    rx_db(req, confirm_saved,
          "WITH usr AS (UPDATE users SET password_hash = $5, failed_login_attempts = 0,"
          "                 tokens_valid_after = now(),"
          "                 token_generation = token_generation + 1,"
          "                 locked_until = NULL, updated_at = now(),"
          "                 phone_verified = phone_verified OR $4 = 'phone',"
          "                 email_verified = email_verified OR $4 = 'email'"
          "              WHERE deleted_at IS NULL"
          "                AND CASE WHEN $4 = 'phone' THEN phone = $3"
          "                         ELSE email <> '' AND lower(email) = lower($3) END"
          "              RETURNING id),"
          " r AS (UPDATE refresh_tokens SET revoked_at = now()"
          "        WHERE user_id IN (SELECT id FROM usr) AND revoked_at IS NULL),"
          " a AS (" AUTH_AUDIT_INSERT
          "SELECT id, 'PASSWORD_RESET_COMPLETE', $1, $2, $6::jsonb FROM usr)"
          " SELECT id FROM usr",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_TEXT(c->ident),
          RX_TEXT(c->kind == AUTH_PHONE ? "phone" : "email"), RX_TEXT(c->hash), RX_JSON(meta));
    json_decref(meta);
}

static void confirm_token(rx_req *req, int err, const rx_redis_reply *r)
{
    if (auth_redis_failed(req, err, r))
        return;
    auth_ctx *c = auth_ctx_get(req);
    size_t n = 0;
    const char *s = rx_redis_reply_type(r) == RX_REDIS_STRING ? rx_redis_reply_str(r, &n) : NULL;
    json_t *j = s ? json_loadb(s, n, 0, NULL) : NULL;
    const char *kind = json_string_value(json_object_get(j, "kind"));
    const char *value = json_string_value(json_object_get(j, "value"));
    const char *purpose = json_string_value(json_object_get(j, "purpose"));
    if (kind == NULL || value == NULL || purpose == NULL || strcmp(purpose, "reset") != 0) {
        json_decref(j);
        invalid_token(req);
        return;
    }
    c->kind = strcmp(kind, "phone") == 0 ? AUTH_PHONE : AUTH_EMAIL;
    snprintf(c->ident, sizeof c->ident, "%s", value);
    json_decref(j);
    if (rx_offload(req, new_hash_work, confirm_hashed, c) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static const char *alias(auth_ctx *c, json_t *errs, const char *name, const char *other, size_t max)
{
    const char *v = auth_str(c, name, errs, max);
    if (v == NULL && json_object_get(errs, name) == NULL)
        v = auth_str(c, other, errs, max);
    if ((v == NULL || *v == '\0') && json_object_get(errs, name) == NULL &&
        json_object_get(errs, other) == NULL)
        auth_err(errs, name, v ? "This field may not be blank." : "This field is required.");
    return v && *v ? v : NULL;
}

static void confirm_step(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    c->regtoken = auth_str(c, "registration_token", NULL, 0);
    if (c->regtoken == NULL)
        c->regtoken = auth_str(c, "token", NULL, 0);
    if (c->regtoken == NULL)
        auth_err(errs, "registration_token", "This field is required.");
    else if (*c->regtoken == '\0' || strlen(c->regtoken) > 64)
        c->regtoken = "-"; /* blank or absurd: simply not a valid token */
    c->new_password = alias(c, errs, "new_password", "password", 128);
    if (c->new_password != NULL)
        ident_password_rules(c->new_password, errs, "new_password");
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    if (rx_redis(req, confirm_token, "GET", rx_req_sprintf(req, "auth:regtok:%s", c->regtoken)) !=
        0)
        rx_reply_unavailable(req, 0);
}

void auth_password_reset_confirm(rx_req *req)
{
    auth_limit_ip(req, "anon", auth_cfg.anon_per_min, confirm_step);
}

/* ---- password-change ---- */

static void changed(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    rx_reply_json(req, 200, json_pack("{s:s}", "message", "Password changed successfully."));
}

static void change_work(void *arg)
{
    auth_ctx *c = arg;
    c->ok = auth_pw_verify(c->found ? c->hash2 : auth_pw_dummy(), c->password);
    if (c->ok)
        c->ok2 = auth_pw_hash(c->new_password, c->hash) == 0;
}

static void change_done(rx_req *req, void *arg)
{
    auth_ctx *c = arg;
    if (!c->found) {
        auth_reply_401(req, "token_not_valid", "Given token not valid for any token type");
        return;
    }
    if (!c->ok) {
        rx_reply_invalid_field(req, "old_password", "Old password is incorrect.");
        return;
    }
    if (!c->ok2) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    /* The session making the change (its family rides in the access
     * token) keeps its refresh token; every other session is cut. */
    rx_db(req, changed,
          "WITH usr AS (UPDATE users SET password_hash = $4, updated_at = now()"
          "              WHERE id = $3 RETURNING id),"
          " r AS (UPDATE refresh_tokens SET revoked_at = now()"
          "        WHERE user_id = $3 AND revoked_at IS NULL"
          "          AND family IS DISTINCT FROM $5::uuid)"
          " " AUTH_AUDIT_INSERT "SELECT id, 'PASSWORD_CHANGE', $1, $2, '{}'::jsonb FROM usr",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_INT(c->user_id), RX_TEXT(c->hash),
          RX_TEXT(c->fam[0] ? c->fam : NULL));
}

static void change_found(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    auth_ctx *c = auth_ctx_get(req);
    if (rx_rows_count(rows) == 1) {
        c->found = true;
        snprintf(c->hash2, sizeof c->hash2, "%s", rx_rows_text(rows, 0, 0));
    }
    if (rx_offload(req, change_work, change_done, c) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

void auth_password_change(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    c->password = auth_str(c, "old_password", errs, 128);
    if (c->password == NULL && json_object_get(errs, "old_password") == NULL)
        auth_err(errs, "old_password", "This field is required.");
    c->new_password = auth_str(c, "new_password", errs, 128);
    if (c->new_password == NULL && json_object_get(errs, "new_password") == NULL)
        auth_err(errs, "new_password", "This field is required.");
    else if (c->new_password != NULL)
        ident_password_rules(c->new_password, errs, "new_password");
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    const rx_principal *p = rx_req_principal(req);
    c->user_id = p->user_id;
    /* The family of this session, from the (already verified) token. */
    const char *h = rx_req_header(req, "authorization");
    auth_claims cl;
    if (h != NULL && strlen(h) > 7 && auth_jwt_verify(h + 7, "access", &cl) == 0)
        snprintf(c->fam, sizeof c->fam, "%s", cl.fam);
    rx_db(req, change_found, "SELECT password_hash FROM users WHERE id = $1 AND deleted_at IS NULL",
          RX_INT(p->user_id));
}
