/*
 * tokens.c — sessions: issuing the access/refresh pair, the authenticate hook
 * for `Authorization: Bearer`, refresh with rotation and reuse detection, and
 * logout. Refresh tokens live in the refresh_tokens table (one family per
 * login); revoked access tokens live in Redis (auth:deny:<jti>) until they
 * expire, next to auth:user_off:<id>, which other modules set when a user is
 * deactivated or deleted, so the hook costs one Redis round trip.
 *
 * Revocation (password reset, admin change of role, pharmacy, status or
 * password, deletion) adds one to users.token_generation in the statement
 * that makes the change; the statement that issues tokens reads the
 * generation and both tokens carry it (claim "gen"). A token is current while
 * its generation is not older than the user's: one issued by a statement that
 * did not see the revocation is refused, one issued after it is accepted,
 * even within the same second (iat is whole seconds, and comparing the
 * server's clock with the database's to the microsecond would be no better).
 * Tokens signed before the claim existed fall back to iat against the whole
 * second of tokens_valid_after and are refused when issued in that second or
 * before (the old rule let that second through: this one is only stricter).
 * Refresh tokens get the same test in the rotation statement, so a login
 * racing a revocation cannot keep a refresh token whose access token died.
 *
 * Each worker remembers each user's standing (status, generation) for at most
 * auth.status_cache_ms. So that a revocation does not wait for that: every
 * statement that moves token_generation is followed, after it committed, by
 * a PUBLISH of the user's id (decimal, nothing else) on the Redis channel
 * "auth:sessions_ended" (AUTH_SESSIONS_CHANNEL; modules/rbac publishes there
 * too, by that name, without including this module's headers: the channel
 * and the message are the contract). Every worker of every instance drops
 * the user's slot and asks the database on the next request. The publisher
 * waits for Redis' answer before replying, so the message is on its way to
 * every subscriber before the client can send its next request. With Redis
 * down the message is lost (logged, the request succeeds) and the cache
 * interval bounds the delay, as before.
 */
#include "auth.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void auth_session_new(auth_ctx *c, const char *family)
{
    auth_uuid(c->jti);
    if (family != NULL)
        snprintf(c->fam, sizeof c->fam, "%s", family);
    else
        auth_uuid(c->fam);
    c->iat = (int64_t)time(NULL);
}

/* Sign both tokens for the user in `row` (the refresh token's row was
 * recorded by the same statement): {"access","refresh","user"}, or NULL. */
json_t *auth_tokens_body(rx_req *req, auth_ctx *c, const rx_rows *rows, int row)
{
    auth_claims a = {0}, r = {0};
    int64_t ph = 0;
    rx_rows_int(rows, row, rx_rows_column(rows, "id"), &a.user_id);
    rx_rows_int(rows, row, rx_rows_column(rows, "pharmacy_id"), &ph);
    /* A token without its generation would be judged by the old whole-second
     * rule: an issuing statement that forgot the column is a bug, not a
     * reason to issue weaker tokens. */
    if (rx_rows_int(rows, row, rx_rows_column(rows, "token_generation"), &a.gen) != 0 ||
        a.gen < 0) {
        rx_log(auth_mod, RX_LOG_ERROR, "token issued without token_generation");
        return NULL;
    }
    const char *role = rx_rows_text(rows, row, rx_rows_column(rows, "role"));
    snprintf(a.role, sizeof a.role, "%s", role ? role : "REGISTERED_USER");
    a.pharmacy_id = ph;
    a.iat = c->iat;
    snprintf(a.fam, sizeof a.fam, "%s", c->fam);
    r = a;
    auth_uuid(a.jti);
    strcpy(a.typ, "access");
    a.exp = a.iat + auth_cfg.access_ttl;
    strcpy(r.jti, c->jti);
    strcpy(r.typ, "refresh");
    r.exp = r.iat + auth_cfg.refresh_ttl;
    char *at = auth_jwt_sign(&a), *rt = auth_jwt_sign(&r);
    if (at == NULL || rt == NULL) {
        free(at);
        free(rt);
        return NULL;
    }
    json_t *body = json_pack("{s:s, s:s, s:o}", "access", at, "refresh", rt, "user",
                             ident_user_json(req, rows, row));
    free(at);
    free(rt);
    return body;
}

void auth_reply_tokens(rx_req *req, auth_ctx *c, const rx_rows *rows, int row)
{
    json_t *body = auth_tokens_body(req, c, rows, row);
    if (body == NULL)
        rx_reply_error(req, 500, "error", "A server error occurred.");
    else
        rx_reply_json(req, 200, body);
}

/* ---- the authenticate hook ---- */

/* A user set INACTIVE/LOCKED or deleted must lose access within a second on
 * every instance, also when the row was changed by SQL and no module set
 * auth:user_off. So each worker remembers each user's standing for at most
 * auth.status_cache_ms and asks the database (a primary-key read) after that:
 * at most one query per user per worker per interval. A message on
 * AUTH_SESSIONS_CHANNEL drops the slot at once (header comment). */
#define STATUS_SLOTS 1024
typedef struct status_slot {
    int64_t user_id, checked_ms;
    int64_t gen;         /* users.token_generation */
    int64_t valid_after; /* whole unix seconds of tokens_valid_after, or 0 */
    bool ok;
} status_slot;
static __thread status_slot status_cache[STATUS_SLOTS];
/* Bumped by every message on AUTH_SESSIONS_CHANNEL this worker handled: a
 * database read that a message overtook answers its request but is not
 * remembered (it may predate the change the message announced). */
static __thread uint64_t status_epoch;

/* What the authenticate hook keeps in rx_req_data while it waits. */
typedef struct authn_state {
    auth_claims cl; /* first: rx_req_data is read as auth_claims too */
    uint64_t epoch; /* status_epoch when the database read started */
} authn_state;

/* Runs on every worker of every instance (rx_subscribe). */
static void on_sessions_ended(const char *channel, const char *msg, size_t len, void *ud)
{
    (void)channel;
    (void)ud;
    status_epoch++;
    char num[24];
    if (len == 0 || len >= sizeof num)
        return;
    memcpy(num, msg, len);
    num[len] = '\0';
    char *end = NULL;
    long long id = strtoll(num, &end, 10);
    if (end == NULL || *end != '\0' || id <= 0)
        return;
    status_slot *s = &status_cache[(uint64_t)id % STATUS_SLOTS];
    if (s->user_id == id)
        s->user_id = 0;
}

int auth_sessions_subscribe(rx_module *m)
{
    return rx_subscribe(m, AUTH_SESSIONS_CHANNEL, on_sessions_ended, NULL);
}

static void sessions_published(rx_req *req, int err, const rx_redis_reply *r)
{
    auth_ctx *c = auth_ctx_get(req);
    if (err != 0 || rx_redis_reply_type(r) == RX_REDIS_ERROR)
        rx_log(auth_mod, RX_LOG_WARN,
               "end of user %lld's sessions not published (%s): other workers notice within "
               "auth.status_cache_ms",
               (long long)c->user_id, err ? rx_strerror(err) : "redis error");
    c->next(req);
}

void auth_sessions_ended(rx_req *req, int64_t user_id, rx_handler next)
{
    auth_ctx *c = auth_ctx_get(req);
    c->user_id = user_id;
    c->next = next;
    int rc = rx_redis(req, sessions_published, "PUBLISH", AUTH_SESSIONS_CHANNEL,
                      rx_req_sprintf(req, "%lld", (long long)user_id));
    if (rc != 0)
        sessions_published(req, rc, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Fail closed: a protected route answers 503, a public one serves anonymously. */
static void authn_unavailable(rx_req *req)
{
    rx_req_set_data(req, NULL);
    if (rx_req_perm(req) != NULL) {
        rx_reply_unavailable(req, 0);
        rx_resume(req, RX_DONE);
        return;
    }
    rx_resume(req, RX_DENIED);
}

static void authn_finish(rx_req *req, bool ok)
{
    auth_claims *cl = rx_req_data(req);
    /* Handlers get a clean slate: rx_req_data belongs to them. */
    rx_req_set_data(req, NULL);
    if (!ok) {
        rx_auth_fail(req, 401, "token_not_valid", "Given token not valid for any token type");
        rx_resume(req, RX_DENIED);
        return;
    }
    rx_principal p = {.kind = RX_PRINCIPAL_USER,
                      .user_id = cl->user_id,
                      .pharmacy_id = cl->pharmacy_id,
                      .role = cl->role,
                      .token_id = cl->jti,
                      .expires_at = cl->exp};
    rx_req_set_principal(req, &p);
    rx_resume(req, RX_AUTHED);
}

static void status_read(rx_req *req, rx_rows *rows)
{
    authn_state *st = rx_req_data(req);
    auth_claims *cl = &st->cl;
    if (rx_rows_failed(rows)) {
        authn_unavailable(req);
        return;
    }
    bool ok = false;
    int64_t after = 0, gen = 0;
    if (rx_rows_count(rows) == 1) {
        rx_rows_bool(rows, 0, 0, &ok);
        rx_rows_int(rows, 0, 1, &after);
        rx_rows_int(rows, 0, 2, &gen);
    }
    status_slot local, *s = &local;
    if (st->epoch == status_epoch)
        s = &status_cache[(uint64_t)cl->user_id % STATUS_SLOTS];
    s->user_id = cl->user_id;
    s->checked_ms = now_ms();
    s->ok = ok;
    s->valid_after = after;
    s->gen = gen;
    authn_finish(req, ok && auth_token_current(cl, gen, after));
}

static void authn_checked(rx_req *req, int err, const rx_redis_reply *r)
{
    auth_claims *cl = rx_req_data(req);
    if (err != 0 || rx_redis_reply_type(r) != RX_REDIS_INTEGER) {
        authn_unavailable(req);
        return;
    }
    if (rx_redis_reply_int(r) != 0) {
        authn_finish(req, false);
        return;
    }
    /* A token newer than the remembered generation proves the slot stale
     * (the user's sessions were ended since): ask again rather than judge
     * the user's other tokens by it for the rest of the interval. */
    const status_slot *s = &status_cache[(uint64_t)cl->user_id % STATUS_SLOTS];
    if (s->user_id == cl->user_id && now_ms() - s->checked_ms < auth_cfg.status_cache_ms &&
        cl->gen <= s->gen) {
        authn_finish(req, s->ok && auth_token_current(cl, s->gen, s->valid_after));
        return;
    }
    ((authn_state *)cl)->epoch = status_epoch;
    if (rx_db(req, status_read,
              "SELECT status = 'ACTIVE' AND deleted_at IS NULL,"
              "       COALESCE(floor(extract(epoch FROM tokens_valid_after)), 0)::bigint,"
              "       token_generation"
              "  FROM users WHERE id = $1",
              RX_INT(cl->user_id)) != 0)
        authn_unavailable(req);
}

int auth_authenticate(rx_req *req, void *data)
{
    (void)data;
    unsigned kinds = rx_req_auth_kinds(req);
    if (kinds != 0 && (kinds & RX_AUTH_BEARER) == 0)
        return RX_NEXT;
    const char *h = rx_req_header(req, "authorization");
    if (h == NULL)
        return RX_NEXT;
    bool bearer = strncasecmp(h, "Bearer", 6) == 0 && (h[6] == ' ' || h[6] == '\0');
    /* Another scheme next to an API key is the key's business. */
    if (!bearer && rx_req_header(req, "x-api-key") != NULL)
        return RX_NEXT;
    const char *tok = bearer ? h + 6 : NULL;
    while (tok != NULL && *tok == ' ')
        tok++;
    authn_state *st = rx_req_alloc(req, sizeof *st);
    auth_claims *cl = st ? &st->cl : NULL;
    /* Cached: a token seen before by this worker skips the signature check and
     * claim parsing (jwt.c says why that is safe); the denylist, user_off and
     * status checks below run on every request all the same. */
    if (tok == NULL || *tok == '\0' || strpbrk(tok, " ,\t") != NULL || cl == NULL ||
        auth_jwt_verify_cached(tok, "access", cl) != 0) {
        rx_auth_fail(req, 401, "token_not_valid", "Given token not valid for any token type");
        return RX_DENIED;
    }
    rx_req_set_data(req, st);
    int rc = rx_redis(req, authn_checked, "EXISTS", rx_req_sprintf(req, "auth:deny:%s", cl->jti),
                      rx_req_sprintf(req, "auth:user_off:%lld", (long long)cl->user_id));
    if (rc != 0) {
        rx_req_set_data(req, NULL);
        if (rx_req_perm(req) != NULL) {
            rx_reply_unavailable(req, 0);
            return RX_DONE;
        }
        return RX_DENIED;
    }
    return RX_PENDING;
}

/* ---- refresh ---- */

static void refreshed(rx_req *req, rx_rows *rows)
{
    auth_ctx *c = auth_ctx_get(req);
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    if (rx_rows_count(rows) != 1) {
        auth_reply_401(req, "token_not_valid", "Token is invalid or expired");
        return;
    }
    const char *fam = rx_rows_text(rows, 0, rx_rows_column(rows, "family"));
    snprintf(c->fam, sizeof c->fam, "%s", fam ? fam : "");
    auth_reply_tokens(req, c, rows, 0);
}

static void refresh_step(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    json_t *errs = json_object();
    const char *tok = auth_str(c, "refresh", errs, 4096);
    if (tok == NULL && json_object_size(errs) == 0)
        auth_err(errs, "refresh", "This field is required.");
    else if (tok != NULL && *tok == '\0')
        auth_err(errs, "refresh", "This field may not be blank.");
    if (json_object_size(errs) > 0) {
        rx_reply_invalid(req, errs);
        return;
    }
    json_decref(errs);
    auth_claims cl;
    if (auth_jwt_verify(tok, "refresh", &cl) != 0) {
        auth_reply_401(req, "token_not_valid", "Token is invalid or expired");
        return;
    }
    auth_session_new(c, NULL);
    /* Rotation and reuse detection in one statement: a used token revokes its
     * family and leaves a TOKEN_REUSE audit row. A token older than the
     * user's last revocation (auth_token_current's rule, $7 its generation or
     * NULL, $8 its iat) is refused like a revoked row, without counting as
     * reuse; the new pair carries the generation read here. */
    rx_db(req, refreshed,
          "WITH old AS ("
          "  UPDATE refresh_tokens SET used_at = now()"
          "   WHERE jti = $3::uuid AND user_id = $6 AND used_at IS NULL AND revoked_at IS NULL"
          "     AND expires_at > now()"
          "     AND EXISTS (SELECT 1 FROM users u WHERE u.id = $6 AND CASE"
          "           WHEN $7::bigint IS NULL THEN $8::bigint >"
          "                COALESCE(floor(extract(epoch FROM u.tokens_valid_after)), 0)"
          "           ELSE $7::bigint >= u.token_generation END)"
          "  RETURNING user_id, family),"
          " prev AS (SELECT user_id, family FROM refresh_tokens"
          "           WHERE jti = $3::uuid AND used_at IS NOT NULL),"
          " kill AS (UPDATE refresh_tokens SET revoked_at = now()"
          "           WHERE family IN (SELECT family FROM prev) AND revoked_at IS NULL"
          "             AND NOT EXISTS (SELECT 1 FROM old) RETURNING 1),"
          " reuse AS (" AUTH_AUDIT_INSERT
          "  SELECT user_id, 'TOKEN_REUSE', $1, $2, jsonb_build_object('family', family)"
          "    FROM prev WHERE NOT EXISTS (SELECT 1 FROM old)),"
          " usr AS (SELECT " AUTH_SESSION_COLS " FROM users u JOIN old ON u.id = old.user_id"
          "          WHERE u.status = 'ACTIVE' AND u.deleted_at IS NULL),"
          " ins AS (INSERT INTO refresh_tokens (jti, user_id, family, expires_at)"
          "  SELECT $4::uuid, usr.id, old.family, to_timestamp($5) FROM usr, old"
          "  RETURNING family)"
          " SELECT usr.*, ins.family::text AS family FROM usr, ins",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_TEXT(cl.jti), RX_TEXT(c->jti),
          RX_INT(c->iat + auth_cfg.refresh_ttl), RX_INT(cl.user_id),
          cl.gen >= 0 ? RX_INT(cl.gen) : RX_NULL, RX_INT(cl.iat));
}

void auth_refresh(rx_req *req)
{
    auth_limit_ip(req, "anon", auth_cfg.anon_per_min, refresh_step);
}

/* ---- logout ---- */

static void logged_out(rx_req *req, rx_rows *rows)
{
    if (rx_rows_failed(rows)) {
        rx_reply_db_error(req, rows);
        return;
    }
    rx_reply_json(req, 200, json_pack("{s:s}", "message", "Logged out successfully."));
}

static void denied(rx_req *req, int err, const rx_redis_reply *r)
{
    if (auth_redis_failed(req, err, r))
        return;
    auth_ctx *c = auth_ctx_get(req);
    const rx_principal *p = rx_req_principal(req);
    rx_db(req, logged_out,
          "WITH r AS (UPDATE refresh_tokens SET revoked_at = now()"
          "            WHERE jti = $3::uuid AND user_id = $4 AND revoked_at IS NULL RETURNING 1)"
          " " AUTH_AUDIT_INSERT
          "VALUES ($4, 'LOGOUT', $1, $2, jsonb_build_object('refresh_revoked',"
          " (SELECT count(*) > 0 FROM r)))",
          RX_TEXT(auth_ip(req)), RX_TEXT(auth_ua(req)), RX_TEXT(c->jti[0] ? c->jti : NULL),
          RX_INT(p->user_id));
}

void auth_logout(rx_req *req)
{
    auth_ctx *c = auth_ctx_get(req);
    if (auth_read_body(req, c, false) != 0)
        return;
    const rx_principal *p = rx_req_principal(req);
    const char *tok = auth_str(c, "refresh", NULL, 4096);
    auth_claims cl;
    /* A refresh token that does not verify is simply not revoked: the client
     * is logging out either way and its access token is denylisted. */
    if (tok != NULL && auth_jwt_verify(tok, "refresh", &cl) == 0 && cl.user_id == p->user_id)
        strcpy(c->jti, cl.jti);
    long long ttl = p->expires_at - (long long)time(NULL);
    int rc = rx_redis(req, denied, "SET", rx_req_sprintf(req, "auth:deny:%s", p->token_id), "1",
                      "EX", rx_req_sprintf(req, "%lld", ttl > 0 ? ttl : 1));
    if (rc != 0)
        rx_reply_unavailable(req, 0);
}
