/*
 * register.c — account creation: register/email/ (e-mail + password, an
 * ACTIVE user with email_verified false) and register/complete/ (after
 * verify-otp: the registration token names the verified identifier). Both
 * answer with a session, as login does, and create the user, its first
 * refresh token and the audit row in one statement.
 */
#include "auth.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ---- register/email ---- */

static void email_created(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        auth_reply_unique(req, rows);
        return;
    }
    auth_reply_tokens(req, auth_ctx_get(req), rows, 0);
}

static void hash_work(void *arg)
{
    auth_ctx *c = arg;
    c->ok = auth_pw_hash(c->password, c->hash) == 0;
    if (c->ok && c->picture != NULL)
        c->ok2 = auth_picture_store(c) == 0;
}

static void email_hashed(rx_req *req, void *arg)
{
    auth_ctx *c = arg;
    if (!c->ok) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    auth_session_new(c, NULL);
    json_t *meta = auth_meta(AUTH_EMAIL, c->ident);
    /* The username defaults to the address, unique ignoring case like it. */
    rx_db(req, email_created,
          "WITH usr AS (INSERT INTO users AS u (username, email, password_hash)"
          "             VALUES (left($3, 150), $3, $4) RETURNING " AUTH_SESSION_COLS "),"
          " ins AS (INSERT INTO refresh_tokens (jti, user_id, family, expires_at)"
          "         SELECT $5::uuid, id, $6::uuid, to_timestamp($7) FROM usr),"
          " a AS (" AUTH_AUDIT_INSERT "SELECT id, 'REGISTER_EMAIL', $1, $2, $8::jsonb FROM usr)"
          " SELECT * FROM usr",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_TEXT(c->ident), RX_TEXT(c->hash),
          RX_TEXT(c->jti), RX_TEXT(c->fam), RX_INT(c->iat + auth_cfg.refresh_ttl), RX_JSON(meta));
    json_decref(meta);
}

static void required(json_t *errs, auth_ctx *c, const char *name, const char **out, size_t max)
{
    *out = auth_str(c, name, errs, max);
    if (*out == NULL && json_object_get(errs, name) == NULL)
        auth_err(errs, name, "This field is required.");
    else if (*out != NULL && **out == '\0') {
        auth_err(errs, name, "This field may not be blank.");
        *out = NULL;
    }
}

static void register_email_step(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    const char *email;
    required(errs, c, "email", &email, 254);
    if (email != NULL && ident_norm_email(email, c->ident, sizeof c->ident) != 0)
        auth_err(errs, "email", "Enter a valid email address.");
    required(errs, c, "password", &c->password, 128);
    if (c->password != NULL)
        ident_password_rules(c->password, errs, "password");
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    c->kind = AUTH_EMAIL;
    if (rx_offload(req, hash_work, email_hashed, c) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

void auth_register_email(rx_req *req)
{
    auth_limit_ip(req, "anon", auth_cfg.anon_per_min, register_email_step);
}

/* ---- register/complete ---- */

static void token_consumed(rx_req *req, int err, const rx_redis_reply *r)
{
    (void)err, (void)r; /* the user exists: the answer is the same either way */
    auth_ctx *c = auth_ctx_get(req);
    json_t *body = c->pending;
    c->pending = NULL;
    rx_reply_json(req, 200, body);
}

static void completed(rx_req *req, rx_rows *rows)
{
    auth_ctx *c = auth_ctx_get(req);
    if (rx_rows_failed(rows)) {
        if (c->picture_name[0])
            auth_picture_remove(c->picture_name);
        auth_reply_unique(req, rows);
        return;
    }
    c->pending = auth_tokens_body(req, c, rows, 0);
    if (c->pending == NULL) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    /* Consumed only now: a call that failed left the token usable. */
    if (rx_redis(req, token_consumed, "DEL", rx_req_sprintf(req, "auth:regtok:%s", c->regtoken)) !=
        0)
        token_consumed(req, 0, NULL);
}

static void complete_hashed(rx_req *req, void *arg)
{
    auth_ctx *c = arg;
    if (!c->ok || (c->picture != NULL && !c->ok2)) {
        rx_reply_error(req, 500, "error", "A server error occurred.");
        return;
    }
    auth_session_new(c, NULL);
    const char *phone =
        c->kind == AUTH_PHONE ? c->ident : (c->other_kind == AUTH_PHONE ? c->other : "");
    const char *email =
        c->kind == AUTH_EMAIL ? c->ident : (c->other_kind == AUTH_EMAIL ? c->other : "");
    bool pv = c->kind == AUTH_PHONE || (c->other_kind == AUTH_PHONE && c->other_verified);
    bool ev = c->kind == AUTH_EMAIL || (c->other_kind == AUTH_EMAIL && c->other_verified);
    json_t *meta = auth_meta(c->kind, c->ident);
    rx_db(req, completed,
          "WITH usr AS (INSERT INTO users AS u (username, email, phone, password_hash, address,"
          "                                   email_verified, phone_verified, profile_picture)"
          "             VALUES ($3, $4, $5, $6, $7, $8, $9, $10) RETURNING " AUTH_SESSION_COLS "),"
          " ins AS (INSERT INTO refresh_tokens (jti, user_id, family, expires_at)"
          "         SELECT $11::uuid, id, $12::uuid, to_timestamp($13) FROM usr),"
          " a AS (" AUTH_AUDIT_INSERT "SELECT id, 'REGISTER_COMPLETE', $1, $2, $14::jsonb FROM usr)"
          " SELECT * FROM usr",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_TEXT(c->username), RX_TEXT(email),
          RX_TEXT(phone), RX_TEXT(c->hash), RX_TEXT(c->address ? c->address : ""), RX_BOOL(ev),
          RX_BOOL(pv), RX_TEXT(c->picture_name[0] ? c->picture_name : NULL), RX_TEXT(c->jti),
          RX_TEXT(c->fam), RX_INT(c->iat + auth_cfg.refresh_ttl), RX_JSON(meta));
    json_decref(meta);
}

static void token_read(rx_req *req, int err, const rx_redis_reply *r)
{
    if (auth_redis_failed(req, err, r))
        return;
    auth_ctx *c = auth_ctx_get(req);
    const rx_redis_reply *t = rx_redis_reply_elem(r, 0), *v = rx_redis_reply_elem(r, 1);
    size_t n = 0;
    const char *s =
        t && rx_redis_reply_type(t) == RX_REDIS_STRING ? rx_redis_reply_str(t, &n) : NULL;
    json_t *j = s ? json_loadb(s, n, 0, NULL) : NULL;
    const char *kind = json_string_value(json_object_get(j, "kind"));
    const char *value = json_string_value(json_object_get(j, "value"));
    const char *purpose = json_string_value(json_object_get(j, "purpose"));
    if (kind == NULL || value == NULL || purpose == NULL) {
        json_decref(j);
        rx_reply_error(req, 400, "invalid_registration_token",
                       "Invalid or expired registration token.");
        return;
    }
    c->kind = strcmp(kind, "phone") == 0 ? AUTH_PHONE : AUTH_EMAIL;
    snprintf(c->ident, sizeof c->ident, "%s", value);
    bool reset = strcmp(purpose, "register") != 0;
    json_decref(j);
    if (reset) {
        rx_reply_invalid_field(req, c->kind == AUTH_PHONE ? "phone" : "email",
                               c->kind == AUTH_PHONE ? "This phone number is already registered."
                                                     : "This email is already registered.");
        return;
    }
    /* The token's identifier wins over a body field of the same kind. */
    const char *other = c->kind == AUTH_PHONE ? c->dob : (const char *)c->extra;
    if (c->kind == AUTH_PHONE)
        v = rx_redis_reply_elem(r, 2);
    if (other != NULL && *other) {
        c->other_kind = c->kind == AUTH_PHONE ? AUTH_EMAIL : AUTH_PHONE;
        snprintf(c->other, sizeof c->other, "%s", other);
        c->other_verified = v && rx_redis_reply_type(v) == RX_REDIS_STRING;
    }
    c->extra = NULL;
    c->dob = NULL;
    if (rx_offload(req, hash_work, complete_hashed, c) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static void complete_step(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, true) != 0)
        return;
    json_t *errs = json_object();
    /* A blank or absurd token is just an invalid one (400 invalid_registration_token). */
    c->regtoken = auth_str(c, "registration_token", NULL, 0);
    if (c->regtoken == NULL)
        auth_err(errs, "registration_token", "This field is required.");
    else if (*c->regtoken == '\0' || strlen(c->regtoken) > 64)
        c->regtoken = "-";
    const char *username;
    required(errs, c, "username", &username, 400);
    if (username != NULL) {
        while (isspace((unsigned char)*username))
            username++;
        size_t n = strlen(username);
        while (n > 0 && isspace((unsigned char)username[n - 1]))
            n--;
        if (n == 0)
            auth_err(errs, "username", "This field may not be blank.");
        else if (n > 150)
            auth_err(errs, "username", "Ensure this field has no more than 150 characters.");
        else
            c->username = rx_req_sprintf(req, "%.*s", (int)n, username);
    }
    required(errs, c, "password", &c->password, 128);
    if (c->password != NULL)
        ident_password_rules(c->password, errs, "password");
    c->address = auth_str(c, "address", errs, 500);
    const char *phone = auth_str(c, "phone", errs, 255), *email = auth_str(c, "email", errs, 255);
    char *pn = rx_req_alloc(req, 256), *en = rx_req_alloc(req, 256);
    if (phone != NULL && *phone && ident_norm_phone(phone, pn, 256) != 0)
        auth_err(errs, "phone", "Enter a valid phone number.");
    if (email != NULL && *email && ident_norm_email(email, en, 256) != 0)
        auth_err(errs, "email", "Enter a valid email address.");
    c->extra = pn;
    c->dob = en; /* the e-mail candidate; this handler has no date of birth */
    if (c->parts != NULL) {
        const rx_part *p = rx_part_get(c->parts, c->nparts, "profile_picture");
        if (p != NULL && p->filename != NULL && p->len > 0) {
            const char *why = auth_picture_check(p);
            if (why != NULL)
                auth_err(errs, "profile_picture", why);
            else
                c->picture = p;
        }
    }
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    /* The second identifier counts as verified if it passed verify-otp in
     * the last 10 minutes; which one is "second" depends on the token. */
    char pk[300], ek[300];
    snprintf(pk, sizeof pk, "auth:verified:%s", *(char *)c->extra ? (char *)c->extra : "-");
    snprintf(ek, sizeof ek, "auth:verified:%s", *c->dob ? c->dob : "-");
    for (char *p = ek; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (rx_redis(req, token_read, "MGET", rx_req_sprintf(req, "auth:regtok:%s", c->regtoken),
                 rx_req_strdup(req, pk), rx_req_strdup(req, ek)) != 0)
        rx_reply_unavailable(req, 0);
}

void auth_register_complete(rx_req *req)
{
    auth_limit_ip(req, "anon", auth_cfg.anon_per_min, complete_step);
}
