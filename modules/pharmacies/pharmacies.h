/*
 * pharmacies.h — internal header of the pharmacies module: configuration and
 * what each file offers the others. Nothing here is part of the SDK.
 */
#ifndef PHARMACIES_H
#define PHARMACIES_H

#include <rx.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>

/* "rxk_" + 43 characters of base64url (32 random bytes, no padding). */
#define PHARM_KEY_TAG "rxk_"
#define PHARM_KEY_TAG_LEN 4
#define PHARM_KEY_BODY_LEN 43
#define PHARM_KEY_LEN (PHARM_KEY_TAG_LEN + PHARM_KEY_BODY_LEN)
#define PHARM_PREFIX_LEN 8
#define PHARM_HASH_HEX 64 /* hex of a 32-byte keyed hash */

/* Channel of cache invalidation hints: "k:<prefix>", "p:<pharmacy id>" or "*". */
#define PHARM_CHANNEL "rx:apikeys"

typedef struct pharm_config {
    unsigned char pepper[crypto_generichash_KEYBYTES]; /* key of the keys' hash */
    long long cache_ttl_ms;                            /* how long a worker trusts a key lookup */
    long long negative_ttl_ms;                         /* ... and an unknown prefix */
    long long touch_interval_ms;                       /* last_used_at write interval per key */
} pharm_config;

extern pharm_config pharm_cfg;
extern rx_module *pharm_mod;

/* pharmacies.c: an http(s) URL as Django's URLValidator accepts it. */
bool pharm_valid_url(const char *u);

/* apikeys.c */
int pharm_apikeys_init(rx_module *m);
void pharm_apikeys_stop(void);
/* Forget cached lookups in this process at once (all workers) and tell the
 * other instances through Redis. `msg` is "k:<prefix>", "p:<id>" or "*". */
void pharm_invalidate(rx_req *req, const char *msg);
/* A new clear key (PHARM_KEY_LEN + 1 bytes), its prefix (PHARM_PREFIX_LEN + 1)
 * and its stored hash (PHARM_HASH_HEX + 1). */
void pharm_key_new(char *key, char *prefix, char *hash_hex);
void pharm_key_hash(const char *key, size_t len, char *hash_hex);

/* cli.c */
int pharm_cli_apikey(rx_module *m, int argc, char **argv);

#endif
