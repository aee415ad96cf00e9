/*
 * jwt.c — HS256 tokens through libjwt 1.10, which checks no claim, accepts a
 * NULL key and trusts the token's "alg". So: the header is read first to pick
 * the key by "kid" and to refuse anything but HS256, a key is always given,
 * the algorithm is checked again after decoding, and every claim (exp, nbf,
 * iat, iss, aud, jti, typ) is checked here.
 */
#include "auth.h"

#include <jwt.h>
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

int auth_jwt_verify(const char *tok, const char *typ, auth_claims *out)
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
    out->user_id = uid;
    out->iat = iat;
    out->exp = exp;
    rc = 0;
out:
    jwt_free(j);
    return rc;
}
