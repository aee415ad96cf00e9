/*
 * auth.c — the auth module: configuration, routes and the authenticate hook.
 * Users, one-time codes, JWT sessions and profile pictures for the "My
 * Pharma" clients (API.md, "Auth"). Requires notify, which delivers codes
 * (job notify.send).
 *
 * Configuration (section [auth] unless written in full; every key also
 * RXD_<KEY> in the environment):
 *   jwt.secret               HS256 signing secret, used verbatim, >= 32 bytes (required;
 *                            RXD_JWT_SECRET)
 *   jwt.previous_secrets     comma-separated older secrets still accepted for
 *                            verification during key rotation (the token's kid picks one)
 *   auth.jwt_issuer          "iss" claim written and required (default "rxd")
 *   auth.jwt_audience        "aud" claim written and required (default "rxd")
 *   auth.access_ttl          access token lifetime, seconds (default 86400)
 *   auth.refresh_ttl         refresh token lifetime, seconds (default 604800)
 *   auth.otp_ttl             one-time code lifetime, seconds (default 300)
 *   auth.otp_max_attempts    verify attempts per code (default 5)
 *   auth.otp_sends_per_hour  codes sent per identifier per hour (default 3)
 *   auth.otp_key             key for the codes' keyed hash (default: derived from jwt.secret)
 *   auth.registration_token_ttl  seconds a registration token lives (default 600)
 *   auth.login_rate          logins per minute per IP (default 5)
 *   auth.verify_rate         verify-otp calls per minute per IP (default 10)
 *   auth.anon_rate           other anonymous POSTs per minute per IP (default 10)
 *   auth.lockout_failures    failed logins that lock an account (default 5)
 *   auth.lockout_minutes     how long the lock lasts (default 30)
 *   auth.argon2_opslimit     Argon2id cost (default crypto_pwhash_OPSLIMIT_INTERACTIVE)
 *   auth.argon2_memlimit     Argon2id memory, bytes (default crypto_pwhash_MEMLIMIT_INTERACTIVE)
 *   auth.picture_max_bytes   largest profile picture (default 5242880)
 *   auth.status_cache_ms     how long a worker trusts a user's standing (status, session
 *                            generation) before reading it again for a bearer request
 *                            (default 1000); ending a user's sessions drops it at once on
 *                            every worker through Redis, so this bounds the delay only
 *                            when Redis missed that message or the row changed by SQL
 *   media.root               where uploaded files live (default ./var/media)
 * ratelimit.enabled = false turns every limit off (handled by rx_ratelimit).
 */
#include "auth.h"

#include <stdlib.h>
#include <string.h>

auth_config auth_cfg;
rx_module *auth_mod;

extern const rx_migration auth_migrations[];

/* OpenAPI components (served at /api/schema/). */
static const char user_schema[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"id\":{\"type\":\"integer\"},\"username\":{\"type\":\"string\",\"maxLength\":150},"
    "\"email\":{\"type\":\"string\"},\"phone\":{\"type\":\"string\"},"
    "\"profile_picture\":{\"type\":[\"string\",\"null\"],\"format\":\"uri\"},"
    "\"address\":{\"type\":\"string\",\"maxLength\":500},"
    "\"role\":{\"enum\":[\"SUPER_ADMIN\",\"PHARMACY_ADMIN\",\"DOCTOR\",\"REGISTERED_USER\"]},"
    "\"role_display\":{\"type\":\"string\"},"
    "\"status\":{\"enum\":[\"ACTIVE\",\"INACTIVE\",\"LOCKED\",\"PENDING_VERIFICATION\"]},"
    "\"status_display\":{\"type\":\"string\"},\"email_verified\":{\"type\":\"boolean\"},"
    "\"phone_verified\":{\"type\":\"boolean\"},"
    "\"created_at\":{\"type\":\"string\",\"format\":\"date-time\"},"
    "\"gender\":{\"enum\":[\"MALE\",\"FEMALE\",\"OTHER\",null]},"
    "\"gender_display\":{\"type\":[\"string\",\"null\"]},"
    "\"date_of_birth\":{\"type\":[\"string\",\"null\"],\"format\":\"date\"},"
    "\"is_active\":{\"type\":\"boolean\"},\"pharmacy\":{\"type\":[\"integer\",\"null\"]}}}";
static const char tokens_schema[] =
    "{\"type\":\"object\",\"properties\":{\"access\":{\"type\":\"string\"},"
    "\"refresh\":{\"type\":\"string\"},\"user\":{\"$ref\":\"#/components/schemas/AuthUser\"}}}";
static const char message_schema[] =
    "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\"},"
    "\"detail\":{\"type\":\"string\"}}}";
static const char login_schema[] =
    "{\"type\":\"object\",\"required\":[\"password\"],\"properties\":{"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},\"phone\":{\"type\":\"string\"},"
    "\"password\":{\"type\":\"string\"}}}";
static const char ident_schema[] =
    "{\"type\":\"object\",\"properties\":{\"email\":{\"type\":\"string\",\"format\":\"email\"},"
    "\"phone\":{\"type\":\"string\"}}}";
static const char verify_schema[] =
    "{\"type\":\"object\",\"required\":[\"otp\"],\"properties\":{"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},\"phone\":{\"type\":\"string\"},"
    "\"otp\":{\"type\":\"string\",\"pattern\":\"^[0-9]{6}$\"}}}";
static const char refresh_schema[] = "{\"type\":\"object\",\"required\":[\"refresh\"],"
                                     "\"properties\":{\"refresh\":{\"type\":\"string\"}}}";

static long long cfg_int(rx_module *m, const char *key, long long def, int *bad)
{
    long long v = def;
    if (rx_config_int(m, key, def, &v) != 0 || v < 0) {
        rx_module_fail(m, "auth.%s: not a non-negative integer", key);
        *bad = 1;
    }
    return v;
}

static int read_config(rx_module *m)
{
    int bad = 0;
    if (auth_jwt_init(m) != 0)
        return -1;
    auth_cfg.issuer = rx_config_str(m, "jwt_issuer", "rxd");
    auth_cfg.audience = rx_config_str(m, "jwt_audience", "rxd");
    auth_cfg.access_ttl = cfg_int(m, "access_ttl", 86400, &bad);
    auth_cfg.refresh_ttl = cfg_int(m, "refresh_ttl", 7 * 86400, &bad);
    auth_cfg.otp_ttl = cfg_int(m, "otp_ttl", 300, &bad);
    auth_cfg.otp_max_attempts = cfg_int(m, "otp_max_attempts", 5, &bad);
    auth_cfg.otp_sends_per_hour = cfg_int(m, "otp_sends_per_hour", 3, &bad);
    auth_cfg.regtoken_ttl = cfg_int(m, "registration_token_ttl", 600, &bad);
    auth_cfg.login_per_min = cfg_int(m, "login_rate", 5, &bad);
    auth_cfg.verify_per_min = cfg_int(m, "verify_rate", 10, &bad);
    auth_cfg.anon_per_min = cfg_int(m, "anon_rate", 10, &bad);
    auth_cfg.lockout_failures = cfg_int(m, "lockout_failures", 5, &bad);
    auth_cfg.lockout_minutes = cfg_int(m, "lockout_minutes", 30, &bad);
    auth_cfg.opslimit =
        (unsigned long long)cfg_int(m, "argon2_opslimit", crypto_pwhash_OPSLIMIT_INTERACTIVE, &bad);
    auth_cfg.memlimit =
        (size_t)cfg_int(m, "argon2_memlimit", crypto_pwhash_MEMLIMIT_INTERACTIVE, &bad);
    auth_cfg.status_cache_ms = cfg_int(m, "status_cache_ms", 1000, &bad);
    auth_cfg.picture_max = cfg_int(m, "picture_max_bytes", 5 << 20, &bad);
    auth_cfg.media_root = rx_config_str(NULL, "media.root", "./var/media");
    if (bad)
        return -1;
    if (auth_cfg.opslimit < crypto_pwhash_OPSLIMIT_MIN ||
        auth_cfg.memlimit < crypto_pwhash_MEMLIMIT_MIN) {
        rx_module_fail(m, "auth.argon2_opslimit/argon2_memlimit below libsodium's minimum");
        return -1;
    }
    if (auth_cfg.access_ttl < 1 || auth_cfg.refresh_ttl < 1 || auth_cfg.otp_ttl < 1) {
        rx_module_fail(m, "auth: token and code lifetimes must be positive");
        return -1;
    }
    const char *ok = rx_config_str(m, "otp_key", NULL);
    if (ok != NULL && *ok)
        crypto_generichash(auth_cfg.otp_key, sizeof auth_cfg.otp_key, (const unsigned char *)ok,
                           strlen(ok), NULL, 0);
    else
        crypto_generichash(auth_cfg.otp_key, sizeof auth_cfg.otp_key,
                           (const unsigned char *)"rxd-otp-key", 11, auth_cfg.keys[0].bytes,
                           auth_cfg.keys[0].len > crypto_generichash_KEYBYTES_MAX
                               ? crypto_generichash_KEYBYTES_MAX
                               : auth_cfg.keys[0].len);
    return 0;
}

static int init(rx_module *m)
{
    auth_mod = m;
    if (sodium_init() < 0) {
        rx_module_fail(m, "libsodium failed to initialise");
        return -1;
    }
    if (read_config(m) != 0)
        return -1;

    rx_route_opts anon = {.public_route = true, .tag = "auth"};
    rx_route_opts user = {.perm = RX_PERM_AUTHENTICATED, .auth = RX_AUTH_BEARER, .tag = "auth"};
    size_t upload = (size_t)auth_cfg.picture_max + (64 << 10);
    int rc = 0;
    rc |= rx_schema(m, "AuthUser", user_schema);
    rc |= rx_schema(m, "AuthTokens", tokens_schema);
    rc |= rx_schema(m, "AuthMessage", message_schema);
#define ROUTE(meth, path, fn, base, sum, reqs, resps)                                              \
    do {                                                                                           \
        rx_route_opts o = base;                                                                    \
        o.summary = sum;                                                                           \
        o.request_schema = reqs;                                                                   \
        o.response_schema = resps;                                                                 \
        rc |= rx_route(m, meth, path, fn, &o);                                                     \
    } while (0)
    ROUTE(RX_POST, "/api/auth/request-otp/", auth_request_otp, anon, "Send a one-time code",
          ident_schema, "AuthMessage");
    ROUTE(RX_POST, "/api/auth/register/phone/", auth_register_phone, anon,
          "Send a one-time code by SMS (legacy)", ident_schema, "AuthMessage");
    ROUTE(RX_POST, "/api/auth/verify-otp/", auth_verify_otp, anon,
          "Check a one-time code, get a registration token", verify_schema, NULL);
    rx_route_opts big = anon;
    big.body_limit = upload;
    ROUTE(RX_POST, "/api/auth/register/complete/", auth_register_complete, big,
          "Create the account of a verified identifier (JSON or multipart)", NULL, "AuthTokens");
    ROUTE(RX_POST, "/api/auth/register/email/", auth_register_email, anon,
          "Create an account with e-mail and password", login_schema, "AuthTokens");
    ROUTE(RX_POST, "/api/auth/login/", auth_login, anon, "Log in", login_schema, "AuthTokens");
    ROUTE(RX_POST, "/api/auth/token/refresh/", auth_refresh, anon,
          "Rotate the refresh token, get a new access token", refresh_schema, "AuthTokens");
    ROUTE(RX_POST, "/api/auth/logout/", auth_logout, user, "Log out", NULL, "AuthMessage");
    ROUTE(RX_POST, "/api/auth/password-reset/", auth_password_reset, anon,
          "Send a password reset code", ident_schema, "AuthMessage");
    ROUTE(RX_POST, "/api/auth/password-reset/confirm/", auth_password_reset_confirm, anon,
          "Set a new password with a registration token", NULL, "AuthMessage");
    ROUTE(RX_POST, "/api/auth/password-change/", auth_password_change, user, "Change the password",
          NULL, "AuthMessage");
    ROUTE(RX_GET, "/api/auth/me/", auth_me_get, user, "The current user", NULL, "AuthUser");
    rx_route_opts ubig = user;
    ubig.body_limit = upload;
    ROUTE(RX_PUT | RX_PATCH, "/api/auth/me/", auth_me_update, ubig,
          "Update the current user (JSON or multipart)", NULL, "AuthUser");
    ROUTE(RX_GET, "/media/profile_pictures/{file}", auth_media_get, anon, "A profile picture", NULL,
          NULL);
#undef ROUTE
    rc |= rx_hook_authenticate(m, 100, auth_authenticate, NULL);
    rc |= auth_sessions_subscribe(m);
    rc |= rx_migrations(m, auth_migrations);
    rc |= rx_command(m, "createsuperuser", auth_cli_createsuperuser,
                     "createsuperuser [--email E] [--phone P] [--username U] [--password-stdin]");
    if (rc != 0) {
        rx_module_fail(m, "registration failed");
        return -1;
    }
    return 0;
}

static void stop(rx_module *m)
{
    (void)m;
    for (int i = 0; i < auth_cfg.nkeys; i++) {
        sodium_memzero(auth_cfg.keys[i].bytes, auth_cfg.keys[i].len);
        free(auth_cfg.keys[i].bytes);
        auth_cfg.keys[i].bytes = NULL;
    }
    auth_cfg.nkeys = 0;
    auth_jwt_cache_stop();
}

RX_MODULE("auth", "1.0.0", .requires = RX_REQUIRES("notify"), .init = init, .stop = stop,
          .summary = "users, one-time codes, JWT sessions");
