/*
 * jwt.c — HS256 tokens through libjwt 1.10, which checks no claim, accepts a
 * NULL key and trusts the token's "alg". So: the header is read first to pick
 * the key by "kid" and to refuse anything but HS256, a key is always given,
 * the algorithm is checked again after decoding, and every claim (exp, nbf,
 * iat, iss, aud, jti, typ) is checked here; "gen" (the session generation,
 * absent from tokens signed before it existed) is read for tokens.c. The bearer hook goes through a
 * per-worker cache of tokens already verified (auth_jwt_verify_cached, below).
 */
#include "auth.h"

#include <jwt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void add_key(const char *secret)
{
    auth_key *k = &auth_cfg.keys[auth_cfg.nkeys++];
    k->len = strlen(secret);
    k->bytes = (unsigned char *)strdup(secret);
    unsigned char h[8];
    crypto_generichash(h, sizeof h, (const unsigned char *)secret, k->len,
                       (const unsigned char *)"rxd-jwt-kid", 11);
    sodium_bin2hex(k->kid, sizeof k->kid, h, sizeof h);
}

int auth_jwt_init(rx_module *m)
{
    const char *secret = rx_config_str(NULL, "jwt.secret", NULL);
    if (secret == NULL || *secret == '\0') {
        rx_module_fail(m, "jwt.secret is not set (config [jwt] secret or RXD_JWT_SECRET)");
        return -1;
    }
    if (strlen(secret) < 32) {
        rx_module_fail(m, "jwt.secret is shorter than 32 bytes");
        return -1;
    }
    add_key(secret);
    if (auth_jwt_cache_start() != 0) {
        rx_module_fail(m, "auth: cannot create the verified-token cache key");
        return -1;
    }
    /* Comma-separated older secrets still verify tokens they signed. */
    const char *prev = rx_config_str(NULL, "jwt.previous_secrets", "");
    char *copy = strdup(prev), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t != NULL && auth_cfg.nkeys < AUTH_MAX_KEYS;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        if (strlen(t) >= 32)
            add_key(t);
    }
    free(copy);
    return 0;
}

char *auth_jwt_sign(const auth_claims *c)
{
    jwt_t *j = NULL;
    char *out = NULL;
    const auth_key *k = &auth_cfg.keys[0];
    if (jwt_new(&j) != 0)
        return NULL;
    int rc = jwt_set_alg(j, JWT_ALG_HS256, k->bytes, (int)k->len);
    rc |= jwt_add_header(j, "kid", k->kid);
    rc |= jwt_add_grant(j, "token_type", c->typ);
    rc |= jwt_add_grant(j, "typ", c->typ);
    rc |= jwt_add_grant(j, "jti", c->jti);
    rc |= jwt_add_grant(j, "iss", auth_cfg.issuer);
    rc |= jwt_add_grant(j, "aud", auth_cfg.audience);
    rc |= jwt_add_grant_int(j, "iat", (long)c->iat);
    rc |= jwt_add_grant_int(j, "nbf", (long)c->iat);
    rc |= jwt_add_grant_int(j, "exp", (long)c->exp);
    rc |= jwt_add_grant_int(j, "user_id", (long)c->user_id);
    rc |= jwt_add_grant(j, "role", c->role);
    if (c->pharmacy_id > 0)
        rc |= jwt_add_grant_int(j, "pharmacy_id", (long)c->pharmacy_id);
    if (c->fam[0])
        rc |= jwt_add_grant(j, "fam", c->fam);
    if (c->gen >= 0)
        rc |= jwt_add_grant_int(j, "gen", (long)c->gen);
    if (rc == 0)
        out = jwt_encode_str(j);
    jwt_free(j);
    return out;
}

/* The key named by the header's kid, after checking alg is HS256. */
static const auth_key *header_key(const char *tok)
{
    const char *dot = strchr(tok, '.');
    if (dot == NULL || dot == tok || dot - tok > 512)
        return NULL;
    unsigned char buf[400];
    size_t n = 0;
    if (sodium_base642bin(buf, sizeof buf, tok, (size_t)(dot - tok), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return NULL;
    json_t *h = json_loadb((const char *)buf, n, 0, NULL);
    if (h == NULL)
        return NULL;
    const auth_key *k = NULL;
    const char *alg = json_string_value(json_object_get(h, "alg"));
    const char *kid = json_string_value(json_object_get(h, "kid"));
    if (alg != NULL && strcmp(alg, "HS256") == 0 && kid != NULL)
        for (int i = 0; i < auth_cfg.nkeys; i++)
            if (strcmp(auth_cfg.keys[i].kid, kid) == 0)
                k = &auth_cfg.keys[i];
    json_decref(h);
    return k;
}

static bool copy_grant(jwt_t *j, const char *name, char *out, size_t outlen)
{
    const char *v = jwt_get_grant(j, name);
    if (v == NULL || strlen(v) >= outlen)
        return false;
    strcpy(out, v);
    return true;
}

/* The full check; *nbf_out gets the token's nbf, which the cache re-checks. */
static int verify(const char *tok, const char *typ, auth_claims *out, int64_t *nbf_out)
{
    memset(out, 0, sizeof *out);
    if (tok == NULL || strlen(tok) > 4096)
        return -1;
    const auth_key *k = header_key(tok);
    if (k == NULL)
        return -1;
    jwt_t *j = NULL;
    if (jwt_decode(&j, tok, k->bytes, (int)k->len) != 0 || j == NULL)
        return -1;
    int rc = -1;
    long now = (long)time(NULL);
    const char *iss = jwt_get_grant(j, "iss");
    const char *aud = jwt_get_grant(j, "aud");
    long exp = jwt_get_grant_int(j, "exp");
    long nbf = jwt_get_grant_int(j, "nbf");
    long iat = jwt_get_grant_int(j, "iat");
    long uid = jwt_get_grant_int(j, "user_id");
    if (jwt_get_alg(j) != JWT_ALG_HS256 || iss == NULL || strcmp(iss, auth_cfg.issuer) != 0 ||
        aud == NULL || strcmp(aud, auth_cfg.audience) != 0)
        goto out;
    if (exp <= now || nbf > now + 30 || iat > now + 30 || uid <= 0)
        goto out;
    if (!copy_grant(j, "typ", out->typ, sizeof out->typ) || strcmp(out->typ, typ) != 0)
        goto out;
    if (!copy_grant(j, "jti", out->jti, sizeof out->jti) || strlen(out->jti) != 36)
        goto out;
    if (!copy_grant(j, "role", out->role, sizeof out->role))
        goto out;
    copy_grant(j, "fam", out->fam, sizeof out->fam);
    long ph = jwt_get_grant_int(j, "pharmacy_id");
    out->pharmacy_id = ph > 0 ? ph : 0;
    /* A present generation must be a JSON integer >= 0: anything else is
     * refused rather than read as "older token" (libjwt's int getter reads
     * some non-integers as numbers, so the JSON is checked here). */
    char *gtxt = jwt_get_grants_json(j, "gen");
    int64_t gen = -1;
    if (gtxt != NULL) {
        json_t *g = json_loads(gtxt, JSON_DECODE_ANY, NULL);
        bool good = json_is_integer(g) && json_integer_value(g) >= 0;
        gen = good ? (int64_t)json_integer_value(g) : -1;
        json_decref(g);
        free(gtxt);
        if (!good)
            goto out;
    }
    out->gen = gen;
    out->user_id = uid;
    out->iat = iat;
    out->exp = exp;
    *nbf_out = nbf;
    rc = 0;
out:
    jwt_free(j);
    return rc;
}

int auth_jwt_verify(const char *tok, const char *typ, auth_claims *out)
{
    int64_t nbf;
    return verify(tok, typ, out, &nbf);
}

/* tokens.c explains the generation; the fallback for older tokens refuses
 * the whole second of the revocation, which the old rule (iat >= that
 * second) let through. */
bool auth_token_current(const auth_claims *cl, int64_t gen, int64_t valid_after_s)
{
    if (cl->gen >= 0)
        return cl->gen >= gen;
    return cl->iat > valid_after_s;
}

/* ---- per-worker cache of verified tokens ----
 *
 * A client sends the same access token with every request for its whole
 * lifetime, and checking it (libjwt's two JSON parses, the HMAC, the header
 * read for the kid) was over half of the work of a simple authenticated GET.
 * So each worker thread remembers the claims of tokens it has verified, keyed
 * by the whole token string: a hit skips only the signature check and the
 * claim parsing. What follows verification in the hook (the Redis denylist
 * and user_off look-up, the user's status and session generation, or
 * tokens_valid_after for a token without one) still runs on every request,
 * so revocation is as quick as before: the cached claims include the
 * token's generation, which never changes for a given token string.
 *
 * Why the cache cannot outlive a check:
 * - An entry is made only after verify() accepted the token, and a hit needs
 *   the identical string (length and every byte), so a token differing in one
 *   byte, signature included, is a miss and gets the full check.
 * - The time claims are checked again on every hit: exp > now, and nbf and
 *   iat not more than 30 s ahead (the clock may have been set back).
 * - The keys, issuer and audience come from the configuration, which is fixed
 *   for the life of the process: an entry made with a key that is no longer
 *   configured cannot exist (rotation means a restart, which starts empty).
 * - The type is stored and compared, so a refresh token never passes as an
 *   access token.
 * The slot is picked by SipHash under a random per-process key and the bytes
 * are compared in constant time, so a client can neither aim its tokens at a
 * chosen slot nor learn a cached token by timing the comparison.
 *
 * Bounded: VCACHE_SLOTS slots per worker, direct-mapped, a newcomer replaces
 * whatever held its slot (at most ~2 MiB per worker when full). Thread-local
 * (workers are threads: no locks); the pthread key's destructor frees a
 * worker's entries when it exits. */
#define VCACHE_SLOTS 4096

typedef struct vcache_entry {
    auth_claims claims;
    int64_t nbf;
    size_t len;
    char tok[]; /* NUL-terminated */
} vcache_entry;

typedef struct vcache {
    vcache_entry *slot[VCACHE_SLOTS];
} vcache;

static pthread_key_t vcache_key;
static bool vcache_live;
static unsigned char vcache_hkey[crypto_shorthash_KEYBYTES];

static void vcache_free(void *p)
{
    vcache *c = p;
    if (c == NULL)
        return;
    for (size_t i = 0; i < VCACHE_SLOTS; i++)
        free(c->slot[i]);
    free(c);
}

int auth_jwt_cache_start(void)
{
    if (vcache_live)
        return 0;
    if (pthread_key_create(&vcache_key, vcache_free) != 0)
        return -1;
    randombytes_buf(vcache_hkey, sizeof vcache_hkey);
    vcache_live = true;
    return 0;
}

void auth_jwt_cache_stop(void)
{
    if (!vcache_live)
        return;
    /* Workers have exited and their destructors ran; the calling thread's
     * destructor would never run after the key is deleted (nor may it run
     * into an unloaded module), so free its cache here. */
    vcache_free(pthread_getspecific(vcache_key));
    pthread_setspecific(vcache_key, NULL);
    pthread_key_delete(vcache_key);
    vcache_live = false;
}

static vcache *vcache_get(void)
{
    if (!vcache_live)
        return NULL;
    vcache *c = pthread_getspecific(vcache_key);
    if (c == NULL) {
        c = calloc(1, sizeof *c);
        if (c != NULL && pthread_setspecific(vcache_key, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

int auth_jwt_verify_cached(const char *tok, const char *typ, auth_claims *out)
{
    if (tok == NULL)
        return auth_jwt_verify(tok, typ, out);
    size_t len = strlen(tok);
    vcache *c = len <= 4096 ? vcache_get() : NULL;
    if (c == NULL)
        return auth_jwt_verify(tok, typ, out);
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)tok, len, vcache_hkey);
    uint32_t idx = ((uint32_t)h[0] | (uint32_t)h[1] << 8) & (VCACHE_SLOTS - 1);
    vcache_entry *e = c->slot[idx];
    if (e != NULL && e->len == len && sodium_memcmp(e->tok, tok, len) == 0) {
        int64_t now = (int64_t)time(NULL);
        if (e->claims.exp > now && e->nbf <= now + 30 && e->claims.iat <= now + 30 &&
            strcmp(e->claims.typ, typ) == 0) {
            *out = e->claims;
            return 0;
        }
        /* Expired (or the clock went back): drop it and decide afresh. */
        free(e);
        c->slot[idx] = NULL;
    }
    int64_t nbf = 0;
    if (verify(tok, typ, out, &nbf) != 0)
        return -1;
    vcache_entry *n = malloc(sizeof *n + len + 1);
    if (n == NULL)
        return 0; /* verified; only not remembered */
    n->claims = *out;
    n->nbf = nbf;
    n->len = len;
    memcpy(n->tok, tok, len + 1);
    free(c->slot[idx]);
    c->slot[idx] = n;
    return 0;
}
