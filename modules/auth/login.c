/*
 * login.c — POST /api/auth/login/. One answer and one cost for an unknown
 * user and a wrong password (the dummy hash is verified for unknown users);
 * the failure counter and the 30-minute lock live in the users row; an
 * inactive, LOCKED or deleted account is refused only after the right
 * password, so the answer tells a guesser nothing.
 */
#include "auth.h"

#include <string.h>

typedef struct login_state {
    bool locked, active;
} login_state;

static void failed_recorded(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    auth_reply_401(req, "invalid_credentials", "Invalid credentials.");
}

static void logged_in(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        auth_reply_401(req, "invalid_credentials", "Invalid credentials.");
        return;
    }
    auth_reply_tokens(req, auth_ctx_get(req), rows, 0);
}

static void verify_work(void *arg)
{
    auth_ctx *c = arg;
    c->ok = auth_pw_verify(c->found ? c->hash : auth_pw_dummy(), c->password);
}

static void verify_done(rx_req *req, void *arg)
{
    auth_ctx *c = arg;
    login_state *ls = c->extra;
    if (!c->found) {
        /* Recorded like a wrong password (a write, then 401), so both cost
         * the same; the audit row helps spot address probing. */
        json_t *m = auth_meta(c->kind, c->ident);
        json_object_set_new(m, "success", json_false());
        if (auth_audit(req, failed_recorded, "LOGIN", 0, m) != 0)
            auth_reply_401(req, "invalid_credentials", "Invalid credentials.");
        json_decref(m);
        return;
    }
    if (ls->locked) {
        rx_reply_error(req, 423, "account_locked",
                       "Account is locked due to too many failed login attempts. Try again later.");
        return;
    }
    json_t *meta = auth_meta(c->kind, c->ident);
    if (!c->ok) {
        /* The failure that reaches the threshold locks the account and
         * restarts the count; its audit row says so. */
        json_object_set_new(meta, "success", json_false());
        rx_db(req, failed_recorded,
              "WITH f AS (UPDATE users SET"
              "   failed_login_attempts = CASE WHEN failed_login_attempts + 1 >= $4 THEN 0"
              "                                ELSE failed_login_attempts + 1 END,"
              "   locked_until = CASE WHEN failed_login_attempts + 1 >= $4"
              "                       THEN now() + make_interval(mins => $5::int)"
              "                       ELSE locked_until END"
              "   WHERE id = $3"
              "   RETURNING failed_login_attempts = 0 AND locked_until > now() AS locked),"
              " a AS (" AUTH_AUDIT_INSERT "SELECT $3, 'LOGIN', $1, $2, $6::jsonb),"
              " l AS (" AUTH_AUDIT_INSERT "SELECT $3, 'ACCOUNT_LOCKED', $1, $2, $6::jsonb"
              "        FROM f WHERE f.locked)"
              " SELECT locked FROM f",
              RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_INT(c->user_id),
              RX_INT(auth_cfg.lockout_failures), RX_INT(auth_cfg.lockout_minutes), RX_JSON(meta));
        json_decref(meta);
        return;
    }
    if (!ls->active) {
        json_decref(meta);
        rx_reply_error(req, 403, "account_inactive", "This account is inactive.");
        return;
    }
    auth_session_new(c, NULL);
    json_object_set_new(meta, "success", json_true());
    /* The tokens carry the session generation this UPDATE returns, which
     * waits for (and then sees) a revocation committing meanwhile; the
     * password_hash test keeps a password that a reset replaced since it was
     * verified from getting a session of the new generation. */
    rx_db(req, logged_in,
          "WITH usr AS (UPDATE users u SET failed_login_attempts = 0, locked_until = NULL,"
          "                               last_login = now()"
          "              WHERE u.id = $3 AND u.status = 'ACTIVE' AND u.deleted_at IS NULL"
          "                AND u.password_hash = $8"
          "              RETURNING " AUTH_SESSION_COLS "),"
          " ins AS (INSERT INTO refresh_tokens (jti, user_id, family, expires_at)"
          "         SELECT $4::uuid, id, $5::uuid, to_timestamp($6) FROM usr),"
          " a AS (" AUTH_AUDIT_INSERT "SELECT id, 'LOGIN', $1, $2, $7::jsonb FROM usr)"
          " SELECT * FROM usr",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_INT(c->user_id), RX_TEXT(c->jti),
          RX_TEXT(c->fam), RX_INT(c->iat + auth_cfg.refresh_ttl), RX_JSON(meta), RX_TEXT(c->hash));
    json_decref(meta);
}

static void found_user(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    auth_ctx *c = auth_ctx_get(req);
    login_state *ls = rx_req_alloc(req, sizeof *ls);
    c->extra = ls;
    if (rx_rows_count(rows) == 1) {
        const char *h = rx_rows_text(rows, 0, rx_rows_column(rows, "password_hash"));
        c->found = true;
        snprintf(c->hash, sizeof c->hash, "%s", h ? h : "");
        rx_rows_int(rows, 0, rx_rows_column(rows, "id"), &c->user_id);
        rx_rows_bool(rows, 0, rx_rows_column(rows, "locked"), &ls->locked);
        rx_rows_bool(rows, 0, rx_rows_column(rows, "active"), &ls->active);
    }
    if (rx_offload(req, verify_work, verify_done, c) != 0)
        rx_reply_error(req, 500, "error", "A server error occurred.");
}

static void login_step(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    auth_identifier(c, errs, true);
    c->password = auth_str(c, "password", errs, 255);
    if (c->password == NULL && json_object_get(errs, "password") == NULL)
        auth_err(errs, "password", "This field is required.");
    else if (c->password != NULL && *c->password == '\0')
        auth_err(errs, "password", "This field may not be blank.");
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    rx_db(req, found_user,
          "SELECT u.id, u.password_hash,"
          "       u.locked_until IS NOT NULL AND u.locked_until > now() AS locked,"
          "       u.status = 'ACTIVE' AND u.deleted_at IS NULL AS active"
          "  FROM users u"
          " WHERE CASE WHEN $2 = 'phone' THEN u.phone = $1"
          "            ELSE u.email <> '' AND lower(u.email) = lower($1) END",
          RX_TEXT(c->ident), RX_TEXT(c->kind == AUTH_PHONE ? "phone" : "email"));
}

void auth_login(rx_req *req)
{
    auth_limit_ip(req, "login", auth_cfg.login_per_min, login_step);
}
