/*
 * test_auth_units.c — unit tests of the auth module's pure parts: phone and
 * e-mail normalisation, masking, the password rules, Argon2id round trip, and
 * the JWT wrapper's refusals (tampering, alg "none", unknown kid, expiry,
 * wrong issuer/audience/type) that libjwt 1.10 alone would let through, and
 * that the per-worker cache of verified tokens refuses all the same.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <pthread.h>
#include <unistd.h>

#include "../auth.h"

#include <jwt.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

auth_config auth_cfg;
rx_module *auth_mod;

static void phones(void **state)
{
    (void)state;
    char out[32];
    const char *same[] = {"01712345678", "8801712345678", "+8801712345678", "+880 1712-345678",
                          "1712345678"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        assert_int_equal(ident_norm_phone(same[i], out, sizeof out), 0);
        assert_string_equal(out, "+8801712345678");
    }
    const char *bad[] = {"12345",           "",
                         "abc01712345678",  "+0123456789",
                         "0171234567",      "+88017123456789",
                         "++8801712345678", "+8800712345678"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_not_equal(ident_norm_phone(bad[i], out, sizeof out), 0);
    assert_int_equal(ident_norm_phone("+14155550123", out, sizeof out), 0);
    assert_string_equal(out, "+14155550123");
}

static void emails(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(ident_norm_email("Rahim@Example.COM", out, sizeof out), 0);
    assert_string_equal(out, "Rahim@example.com");
    const char *bad[] = {"",      "plain",           "@example.com",   "a@",
                         "a@b",   "a b@example.com", "a@@example.com", "a@example..com",
                         "a@.com"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_not_equal(ident_norm_email(bad[i], out, sizeof out), 0);
}

static void masking(void **state)
{
    (void)state;
    char out[64];
    auth_mask(AUTH_EMAIL, "rahim@example.com", out, sizeof out);
    assert_string_equal(out, "r***@example.com");
    auth_mask(AUTH_PHONE, "+8801712345678", out, sizeof out);
    assert_string_equal(out, "+880*****678");
    assert_null(strstr(out, "12345"));
}

static void password_rules(void **state)
{
    (void)state;
    const char *bad[] = {"Aa1!aaa", "aaaaaaa1!", "AAAAAAA1!", "Aaaaaaaa!", "Aaaaaaaa1", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *e = json_object();
        assert_false(ident_password_rules(bad[i], e, "password"));
        assert_true(json_array_size(json_object_get(e, "password")) > 0);
        json_decref(e);
    }
    json_t *e = json_object();
    assert_true(ident_password_rules("Str0ng@pass", e, "password"));
    assert_int_equal(json_object_size(e), 0);
    json_decref(e);
}

static void argon2(void **state)
{
    (void)state;
    char h[crypto_pwhash_STRBYTES];
    assert_int_equal(auth_pw_hash("Str0ng@pass", h), 0);
    assert_non_null(strstr(h, "$argon2id$"));
    assert_true(auth_pw_verify(h, "Str0ng@pass"));
    assert_false(auth_pw_verify(h, "Str0ng@pasS"));
    assert_false(auth_pw_verify("", "Str0ng@pass"));
    assert_true(auth_pw_dummy()[0] != '\0');
}

static char *b64(const char *s)
{
    size_t n = sodium_base64_ENCODED_LEN(strlen(s), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(n);
    sodium_bin2base64(out, n, (const unsigned char *)s, strlen(s),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

static auth_claims claims(const char *typ)
{
    auth_claims c = {0};
    strcpy(c.jti, "11111111-2222-4333-8444-555555555555");
    strcpy(c.typ, typ);
    strcpy(c.role, "REGISTERED_USER");
    c.user_id = 7;
    c.pharmacy_id = 3;
    c.iat = (int64_t)time(NULL);
    c.exp = c.iat + 60;
    return c;
}

static void jwt_round_trip_and_refusals(void **state)
{
    (void)state;
    auth_claims c = claims("access"), out;
    char *t = auth_jwt_sign(&c);
    assert_non_null(t);
    assert_int_equal(auth_jwt_verify(t, "access", &out), 0);
    assert_int_equal(out.user_id, 7);
    assert_int_equal(out.pharmacy_id, 3);
    assert_string_equal(out.role, "REGISTERED_USER");
    assert_string_equal(out.jti, c.jti);
    /* the type is pinned */
    assert_int_not_equal(auth_jwt_verify(t, "refresh", &out), 0);
    /* a flipped signature byte */
    char *bad = strdup(t);
    bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'A' ? 'B' : 'A';
    assert_int_not_equal(auth_jwt_verify(bad, "access", &out), 0);
    free(bad);
    /* alg none with the same payload, with and without a kid */
    const char *dot = strchr(t, '.');
    const char *dot2 = strchr(dot + 1, '.');
    char payload[2048];
    snprintf(payload, sizeof payload, "%.*s", (int)(dot2 - dot - 1), dot + 1);
    char hdr[128];
    snprintf(hdr, sizeof hdr, "{\"alg\":\"none\",\"kid\":\"%s\",\"typ\":\"JWT\"}",
             auth_cfg.keys[0].kid);
    char *h = b64(hdr), tok[4096];
    snprintf(tok, sizeof tok, "%s.%s.", h, payload);
    assert_int_not_equal(auth_jwt_verify(tok, "access", &out), 0);
    free(h);
    /* HS512 header over a valid HS256 signature: refused before libjwt */
    snprintf(hdr, sizeof hdr, "{\"alg\":\"HS512\",\"kid\":\"%s\",\"typ\":\"JWT\"}",
             auth_cfg.keys[0].kid);
    h = b64(hdr);
    snprintf(tok, sizeof tok, "%s.%s.%s", h, payload, dot2 + 1);
    assert_int_not_equal(auth_jwt_verify(tok, "access", &out), 0);
    free(h);
    /* unknown kid */
    h = b64("{\"alg\":\"HS256\",\"kid\":\"0000000000000000\",\"typ\":\"JWT\"}");
    snprintf(tok, sizeof tok, "%s.%s.%s", h, payload, dot2 + 1);
    assert_int_not_equal(auth_jwt_verify(tok, "access", &out), 0);
    free(h);
    free(t);
    /* expired, not yet valid, wrong issuer, wrong audience */
    c.exp = (int64_t)time(NULL) - 1;
    t = auth_jwt_sign(&c);
    assert_int_not_equal(auth_jwt_verify(t, "access", &out), 0);
    free(t);
    c = claims("access");
    c.iat += 3600;
    c.exp += 7200;
    t = auth_jwt_sign(&c);
    assert_int_not_equal(auth_jwt_verify(t, "access", &out), 0);
    free(t);
    c = claims("access");
    t = auth_jwt_sign(&c);
    auth_cfg.issuer = "someone-else";
    assert_int_not_equal(auth_jwt_verify(t, "access", &out), 0);
    auth_cfg.issuer = "rxd";
    auth_cfg.audience = "other";
    assert_int_not_equal(auth_jwt_verify(t, "access", &out), 0);
    auth_cfg.audience = "rxd";
    assert_int_equal(auth_jwt_verify(t, "access", &out), 0);
    free(t);
    assert_int_not_equal(auth_jwt_verify("", "access", &out), 0);
    assert_int_not_equal(auth_jwt_verify("a.b.c", "access", &out), 0);
    assert_int_not_equal(auth_jwt_verify(NULL, "access", &out), 0);
}

static void key_rotation(void **state)
{
    (void)state;
    auth_claims c = claims("refresh"), out;
    char *t = auth_jwt_sign(&c); /* signed with keys[0] */
    auth_key old = auth_cfg.keys[0];
    auth_cfg.keys[0] = auth_cfg.keys[1]; /* a new current key, old one still known */
    auth_cfg.keys[1] = old;
    assert_int_equal(auth_jwt_verify(t, "refresh", &out), 0);
    auth_cfg.nkeys = 1; /* the old key retired */
    assert_int_not_equal(auth_jwt_verify(t, "refresh", &out), 0);
    auth_cfg.keys[1] = auth_cfg.keys[0];
    auth_cfg.keys[0] = old;
    auth_cfg.nkeys = 2;
    free(t);
}

static void *verify_in_thread(void *arg)
{
    auth_claims out;
    return (void *)(intptr_t)auth_jwt_verify_cached(arg, "access", &out);
}

static void jwt_cache(void **state)
{
    (void)state;
    auth_claims c = claims("access"), out;
    char *t = auth_jwt_sign(&c);
    assert_non_null(t);
    /* a miss verifies and remembers, a hit gives the same claims */
    for (int i = 0; i < 3; i++) {
        memset(&out, 0x5a, sizeof out);
        assert_int_equal(auth_jwt_verify_cached(t, "access", &out), 0);
        assert_int_equal(out.user_id, 7);
        assert_int_equal(out.pharmacy_id, 3);
        assert_int_equal(out.iat, c.iat);
        assert_int_equal(out.exp, c.exp);
        assert_string_equal(out.role, "REGISTERED_USER");
        assert_string_equal(out.jti, c.jti);
        assert_string_equal(out.typ, "access");
    }
    /* cached, yet the type is still pinned */
    assert_int_not_equal(auth_jwt_verify_cached(t, "refresh", &out), 0);
    assert_int_equal(auth_jwt_verify_cached(t, "access", &out), 0);
    /* one signature byte changed, one byte more, one byte less: full check, refused */
    size_t n = strlen(t);
    char *bad = strdup(t);
    bad[n - 2] = bad[n - 2] == 'A' ? 'B' : 'A';
    assert_int_not_equal(auth_jwt_verify_cached(bad, "access", &out), 0);
    free(bad);
    bad = malloc(n + 2);
    snprintf(bad, n + 2, "%sA", t);
    assert_int_not_equal(auth_jwt_verify_cached(bad, "access", &out), 0);
    bad[n - 1] = '\0';
    assert_int_not_equal(auth_jwt_verify_cached(bad, "access", &out), 0);
    free(bad);
    assert_int_equal(auth_jwt_verify_cached(t, "access", &out), 0);
    assert_int_not_equal(auth_jwt_verify_cached("", "access", &out), 0);
    assert_int_not_equal(auth_jwt_verify_cached(NULL, "access", &out), 0);
    /* another thread has its own cache (freed by the key's destructor at exit) */
    pthread_t th;
    void *rc = NULL;
    assert_int_equal(pthread_create(&th, NULL, verify_in_thread, t), 0);
    assert_int_equal(pthread_join(th, &rc), 0);
    assert_int_equal((intptr_t)rc, 0);
    free(t);
    /* a refresh token is cached as one and never passes as an access token */
    c = claims("refresh");
    t = auth_jwt_sign(&c);
    assert_int_equal(auth_jwt_verify_cached(t, "refresh", &out), 0);
    assert_int_not_equal(auth_jwt_verify_cached(t, "access", &out), 0);
    assert_int_equal(auth_jwt_verify_cached(t, "refresh", &out), 0);
    free(t);
    /* a cached token stops working when it expires */
    c = claims("access");
    c.exp = (int64_t)time(NULL) + 2;
    t = auth_jwt_sign(&c);
    assert_int_equal(auth_jwt_verify_cached(t, "access", &out), 0);
    assert_int_equal(auth_jwt_verify_cached(t, "access", &out), 0);
    while ((int64_t)time(NULL) < c.exp)
        usleep(50 * 1000);
    assert_int_not_equal(auth_jwt_verify_cached(t, "access", &out), 0);
    assert_int_not_equal(auth_jwt_verify_cached(t, "access", &out), 0);
    free(t);
    /* more distinct tokens than slots: every one still verifies, nothing leaks */
    for (int i = 0; i < 5000; i++) {
        c = claims("access");
        c.user_id = 100 + i;
        t = auth_jwt_sign(&c);
        assert_int_equal(auth_jwt_verify_cached(t, "access", &out), 0);
        assert_int_equal(out.user_id, 100 + i);
        free(t);
    }
}

/* A token signed with keys[0] whose "gen" grant is the JSON text `gen`. */
static char *sign_with_gen(const auth_claims *c, const char *gen)
{
    jwt_t *j = NULL;
    char *out = NULL, grants[256];
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(
        jwt_set_alg(j, JWT_ALG_HS256, auth_cfg.keys[0].bytes, (int)auth_cfg.keys[0].len), 0);
    jwt_add_header(j, "kid", auth_cfg.keys[0].kid);
    snprintf(grants, sizeof grants,
             "{\"typ\":\"%s\",\"jti\":\"%s\",\"iss\":\"rxd\",\"aud\":\"rxd\","
             "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld,\"user_id\":%lld,\"role\":\"%s\","
             "\"gen\":%s}",
             c->typ, c->jti, (long long)c->iat, (long long)c->iat, (long long)c->exp,
             (long long)c->user_id, c->role, gen);
    assert_int_equal(jwt_add_grants_json(j, grants), 0);
    out = jwt_encode_str(j);
    jwt_free(j);
    assert_non_null(out);
    return out;
}

static void session_generation(void **state)
{
    (void)state;
    auth_claims c = claims("access"), out;
    /* carried and read back, through the cache too */
    c.gen = 5;
    char *t = auth_jwt_sign(&c);
    assert_non_null(t);
    assert_int_equal(auth_jwt_verify(t, "access", &out), 0);
    assert_int_equal(out.gen, 5);
    for (int i = 0; i < 2; i++) {
        memset(&out, 0, sizeof out);
        assert_int_equal(auth_jwt_verify_cached(t, "access", &out), 0);
        assert_int_equal(out.gen, 5);
    }
    free(t);
    /* generation 0 is a generation, not "absent" */
    c.gen = 0;
    t = auth_jwt_sign(&c);
    assert_int_equal(auth_jwt_verify(t, "access", &out), 0);
    assert_int_equal(out.gen, 0);
    free(t);
    /* a token from before the claim: no "gen" grant, read as -1 */
    c.gen = -1;
    t = auth_jwt_sign(&c);
    assert_null(strstr(t, "gen")); /* (base64 of the payload cannot spell it by chance here) */
    assert_int_equal(auth_jwt_verify(t, "access", &out), 0);
    assert_int_equal(out.gen, -1);
    free(t);
    /* a validly signed but malformed generation is refused, not taken as old */
    const char *bad[] = {"-1", "\"7\"", "1.5", "null", "[1]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        t = sign_with_gen(&c, bad[i]);
        if (auth_jwt_verify(t, "access", &out) == 0)
            fail_msg("gen %s accepted", bad[i]);
        free(t);
    }
    t = sign_with_gen(&c, "12");
    assert_int_equal(auth_jwt_verify(t, "access", &out), 0);
    assert_int_equal(out.gen, 12);
    free(t);

    /* the rule: a generation not older than the user's; else iat after the
     * whole second of tokens_valid_after (that second itself refused) */
    auth_claims n = claims("access");
    n.gen = 3;
    assert_true(auth_token_current(&n, 3, 0));
    assert_true(auth_token_current(&n, 2, 0));
    assert_false(auth_token_current(&n, 4, 0));
    /* a current generation wins whatever the seconds say */
    assert_true(auth_token_current(&n, 3, n.iat + 10));
    auth_claims o = claims("access");
    o.gen = -1;
    assert_true(auth_token_current(&o, 99, 0));
    assert_true(auth_token_current(&o, 99, o.iat - 1));
    assert_false(auth_token_current(&o, 0, o.iat));
    assert_false(auth_token_current(&o, 0, o.iat + 1));
}

static void set_key(int i, const char *secret, const char *kid)
{
    auth_cfg.keys[i].bytes = (unsigned char *)strdup(secret);
    auth_cfg.keys[i].len = strlen(secret);
    snprintf(auth_cfg.keys[i].kid, sizeof auth_cfg.keys[i].kid, "%s", kid);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    auth_cfg.opslimit = crypto_pwhash_OPSLIMIT_MIN;
    auth_cfg.memlimit = crypto_pwhash_MEMLIMIT_MIN;
    auth_cfg.issuer = "rxd";
    auth_cfg.audience = "rxd";
    set_key(0, "0123456789abcdef0123456789abcdef-unit", "aaaaaaaaaaaaaaaa");
    set_key(1, "fedcba9876543210fedcba9876543210-next", "bbbbbbbbbbbbbbbb");
    auth_cfg.nkeys = 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(phones),
        cmocka_unit_test(emails),
        cmocka_unit_test(masking),
        cmocka_unit_test(password_rules),
        cmocka_unit_test(argon2),
        cmocka_unit_test(jwt_round_trip_and_refusals),
        cmocka_unit_test(key_rotation),
        cmocka_unit_test(jwt_cache),
        cmocka_unit_test(session_generation),
    };
    if (auth_jwt_cache_start() != 0)
        return 1;
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    auth_jwt_cache_stop();
    free(auth_cfg.keys[0].bytes);
    free(auth_cfg.keys[1].bytes);
    return rc;
}
