/*
 * auth.h — internal header of the auth module: configuration, the per-request
 * context shared by the multi-step handlers, and the functions each file
 * offers the others. Nothing here is part of the SDK.
 */
#ifndef AUTH_H
#define AUTH_H

#include <rx.h>

#include "identity.h"
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>

#define AUTH_MAX_KEYS 8

typedef struct auth_key {
    char kid[17];         /* hex of a hash of the secret: never reveals it */
    unsigned char *bytes; /* the secret, used verbatim */
    size_t len;
} auth_key;

typedef struct auth_config {
    auth_key keys[AUTH_MAX_KEYS]; /* [0] signs; all verify (rotation) */
    int nkeys;
    const char *issuer, *audience;
    long long access_ttl, refresh_ttl;
    long long otp_ttl, otp_max_attempts, otp_sends_per_hour, regtoken_ttl;
    long long login_per_min, verify_per_min, anon_per_min;
    long long lockout_failures, lockout_minutes;
    unsigned long long opslimit;
    size_t memlimit;
    long long picture_max;
    long long status_cache_ms;
    const char *media_root;
    unsigned char otp_key[crypto_generichash_KEYBYTES];
} auth_config;

extern auth_config auth_cfg;
extern rx_module *auth_mod;

/* Identifier kinds. */
enum { AUTH_NONE = 0, AUTH_PHONE = 1, AUTH_EMAIL = 2 };

/* State carried across the async steps of one request (request arena). */
typedef struct auth_ctx {
    rx_handler next;      /* what runs after a rate-limit check passed */
    json_t *body;         /* JSON body (borrowed from the request) or NULL */
    const rx_part *parts; /* multipart body, or NULL */
    size_t nparts;
    const rx_part *picture; /* uploaded profile picture part, or NULL */
    int kind;               /* AUTH_PHONE / AUTH_EMAIL */
    char ident[256];        /* normalised identifier */
    int other_kind;
    char other[256];
    bool other_verified;
    const char *username, *password, *new_password, *address, *gender, *dob, *otp;
    const char *regtoken;
    char purpose[16]; /* "register" / "reset" */
    char code[8];     /* a fresh OTP, never logged */
    char hash[crypto_pwhash_STRBYTES];
    char hash2[crypto_pwhash_STRBYTES];
    bool ok, ok2, found, fail;
    int64_t user_id;
    char picture_name[64]; /* stored file name */
    char jti[37], fam[37]; /* the refresh token about to be recorded */
    int64_t iat;
    const char *template_name;
    json_t *pending; /* extra fields for a reply (owned) */
    /* me.c: both identifiers a body carried, normalised ("" when absent),
     * and whether a code goes to c->ident once the other fields are written. */
    char email[256], phone[256];
    bool send_code;
    void *extra;
} auth_ctx;

/* audit.c */
int auth_audit(rx_req *req, rx_db_cb cb, const char *action, int64_t user_id, const json_t *meta);

/* util.c */
auth_ctx *auth_ctx_get(rx_req *req);
void auth_uuid(char out[37]);
void auth_mask(int kind, const char *ident, char *out, size_t outlen);
json_t *auth_meta(int kind, const char *ident);
int auth_read_body(rx_req *req, auth_ctx *c, bool multipart_ok);
const char *auth_str(auth_ctx *c, const char *name, json_t *errs, size_t maxlen);
void auth_err(json_t *errs, const char *field, const char *msg);
int auth_identifier(auth_ctx *c, json_t *errs, bool required);
void auth_limit(rx_req *req, const char *key, long long limit, int window_s, const char *code,
                const char *detail, rx_handler next);
void auth_limit_ip(rx_req *req, const char *what, long long per_min, rx_handler next);
const char *auth_ip(rx_req *req);
void auth_reply_401(rx_req *req, const char *code, const char *fmt, ...) RX_PRINTF(3, 4);
const char *auth_ua(rx_req *req);
bool auth_redis_failed(rx_req *req, int err, const rx_redis_reply *r);

/* users.c */
#define AUTH_USER_COLS                                                                             \
    "u.id, u.username, u.email, u.phone, u.profile_picture, u.address, u.role, u.status,"          \
    " u.email_verified, u.phone_verified, u.created_at, u.gender, u.date_of_birth, u.pharmacy_id"
/* What a statement that issues tokens returns: the user and the session
 * generation the tokens will carry, read in the statement that records the
 * refresh token (auth_tokens_body refuses a row without it). */
#define AUTH_SESSION_COLS AUTH_USER_COLS ", u.token_generation"
void auth_reply_unique(rx_req *req, const rx_rows *rows);

/* passwords.c */
int auth_pw_hash(const char *pw, char out[crypto_pwhash_STRBYTES]);
bool auth_pw_verify(const char *hash, const char *pw);
const char *auth_pw_dummy(void); /* thread pool only: may hash */

/* jwt.c */
typedef struct auth_claims {
    char jti[37], fam[37], typ[8], role[32];
    int64_t user_id, pharmacy_id, iat, exp;
    /* The user's session generation when the token was issued (claim "gen",
     * migration 003), or -1 for a token signed before it existed. */
    int64_t gen;
} auth_claims;
int auth_jwt_init(rx_module *m);
char *auth_jwt_sign(const auth_claims *c); /* caller frees */
int auth_jwt_verify(const char *tok, const char *typ, auth_claims *out);
/* auth_jwt_verify through this worker's cache of tokens it verified before
 * (jwt.c explains why that is safe); for tokens presented again and again. */
int auth_jwt_verify_cached(const char *tok, const char *typ, auth_claims *out);
/* Whether a token outlives the user's last revocation: its generation is not
 * older than the user's (gen), or, for a token without one, its iat is after
 * the whole second of tokens_valid_after (valid_after_s, 0 if never set). */
bool auth_token_current(const auth_claims *cl, int64_t gen, int64_t valid_after_s);
int auth_jwt_cache_start(void); /* at init, before workers start */
void auth_jwt_cache_stop(void); /* at stop, after workers exited */

/* tokens.c */
void auth_session_new(auth_ctx *c, const char *family);
json_t *auth_tokens_body(rx_req *req, auth_ctx *c, const rx_rows *rows, int row);
void auth_reply_tokens(rx_req *req, auth_ctx *c, const rx_rows *rows, int row);
int auth_authenticate(rx_req *req, void *data);
/* Channel of "this user's sessions ended" hints: the message is the user id
 * in decimal. modules/rbac publishes on it by name (it must not include this
 * header): renaming it breaks that contract. */
#define AUTH_SESSIONS_CHANNEL "auth:sessions_ended"
int auth_sessions_subscribe(rx_module *m); /* at init */
/* After a committed statement that moved user_id's token_generation: tell
 * every worker of every instance, then run next (also when Redis is down:
 * logged, and the status cache interval bounds the delay). Uses c->user_id
 * and c->next of the request's auth_ctx. */
void auth_sessions_ended(rx_req *req, int64_t user_id, rx_handler next);
void auth_refresh(rx_req *req);
void auth_logout(rx_req *req);

/* otp.c */
void auth_otp_code(char out[8]);
void auth_otp_send(rx_req *req, auth_ctx *c, const char *audit_action, rx_handler done);
void auth_otp_check(rx_req *req, auth_ctx *c, rx_handler on_ok);
void auth_request_otp(rx_req *req);
void auth_register_phone(rx_req *req);
void auth_verify_otp(rx_req *req);

/* register.c */
void auth_register_complete(rx_req *req);
void auth_register_email(rx_req *req);

/* login.c */
void auth_login(rx_req *req);

/* reset.c */
void auth_password_reset(rx_req *req);
void auth_password_reset_confirm(rx_req *req);
void auth_password_change(rx_req *req);

/* me.c */
void auth_me_get(rx_req *req);
void auth_me_update(rx_req *req);

/* media.c */
const char *auth_picture_check(const rx_part *p); /* NULL if fine, else the error text */
int auth_picture_store(auth_ctx *c);              /* thread pool: writes c->picture */
void auth_picture_remove(const char *name);
void auth_media_get(rx_req *req);

/* cli.c */
int auth_cli_createsuperuser(rx_module *m, int argc, char **argv);

/* SQL fragment: an audit row; $1 ip, $2 user agent are always the first two
 * parameters of statements that audit. */
#define AUTH_AUDIT_INSERT "INSERT INTO audit_logs (user_id, action, ip, user_agent, metadata) "

#endif
