/*
 * cli.c — `rxd apikey create --pharmacy ID [--name N] | list --pharmacy ID |
 * revoke KEY_ID`. Runs on the main thread without workers, so it blocks on
 * rx_db_run. Each change is one statement with its audit row.
 *
 * The CLI has no Redis connection to announce a revocation: workers that
 * cached the key keep accepting it until their entry expires
 * (pharmacies.apikey_cache_ttl_ms, 30 s by default). For an immediate
 * revocation use DELETE /api/pharmacies/{id}/api-keys/{key_id}/.
 */
#include "pharmacies.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] = "usage: rxd apikey create --pharmacy ID [--name N]\n"
                            "       rxd apikey list --pharmacy ID\n"
                            "       rxd apikey revoke KEY_ID\n";

static int parse_id(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1)
        return -1;
    *out = v;
    return 0;
}

static int db_failed(rx_rows *r, const char *what)
{
    if (!rx_rows_failed(r))
        return 0;
    fprintf(stderr, "apikey %s: database error: %s\n", what,
            rx_rows_error(r) == RX_EDB ? rx_rows_message(r) : rx_strerror(rx_rows_error(r)));
    rx_rows_free(r);
    return 1;
}

static int cmd_create(rx_module *m, int64_t pharmacy, const char *name)
{
    size_t n = 0;
    for (const char *p = name; *p; p++)
        if (((unsigned char)*p & 0xC0) != 0x80)
            n++;
    if (n > 100) {
        fprintf(stderr, "apikey create: --name has more than 100 characters\n");
        return 1;
    }
    char key[PHARM_KEY_LEN + 1], prefix[PHARM_PREFIX_LEN + 1], hash[PHARM_HASH_HEX + 1];
    for (int tries = 0;; tries++) {
        pharm_key_new(key, prefix, hash);
        rx_param ps[] = {RX_INT(pharmacy), RX_TEXT(name), RX_TEXT(prefix), RX_TEXT(hash)};
        rx_rows *r = rx_db_run(
            m,
            "WITH k AS (INSERT INTO api_keys (pharmacy_id, name, prefix, key_hash)"
            "   SELECT id, $2, $3, $4 FROM pharmacies WHERE id = $1"
            "   RETURNING id, pharmacy_id, name, prefix),"
            " a AS (INSERT INTO audit_logs (action, metadata)"
            "   SELECT 'API_KEY_CREATED', jsonb_build_object('pharmacy', k.pharmacy_id,"
            "          'key_id', k.id, 'prefix', k.prefix, 'name', k.name, 'source', 'cli') FROM k)"
            " SELECT id, prefix FROM k",
            4, ps);
        const char *st = rx_rows_failed(r) ? rx_rows_sqlstate(r) : NULL;
        if (st != NULL && strcmp(st, "23505") == 0 && tries < 3) {
            rx_rows_free(r); /* prefix collision: draw again */
            continue;
        }
        if (db_failed(r, "create")) {
            sodium_memzero(key, sizeof key);
            return 1;
        }
        if (rx_rows_count(r) != 1) {
            fprintf(stderr, "apikey create: no pharmacy with id %lld\n", (long long)pharmacy);
            rx_rows_free(r);
            sodium_memzero(key, sizeof key);
            return 1;
        }
        printf("Created API key %s (prefix %s) for pharmacy %lld.\n"
               "Store it now: it cannot be shown again.\n%s\n",
               rx_rows_text(r, 0, 0), prefix, (long long)pharmacy, key);
        rx_rows_free(r);
        sodium_memzero(key, sizeof key);
        return 0;
    }
}

static int cmd_list(rx_module *m, int64_t pharmacy)
{
    rx_param ps[] = {RX_INT(pharmacy)};
    rx_rows *p = rx_db_run(m, "SELECT name FROM pharmacies WHERE id = $1", 1, ps);
    if (db_failed(p, "list"))
        return 1;
    int found = rx_rows_count(p);
    rx_rows_free(p);
    if (found != 1) {
        fprintf(stderr, "apikey list: no pharmacy with id %lld\n", (long long)pharmacy);
        return 1;
    }
    rx_rows *r = rx_db_run(m,
                           "SELECT id, prefix, name, created_at, last_used_at, revoked_at"
                           "  FROM api_keys WHERE pharmacy_id = $1 ORDER BY id",
                           1, ps);
    if (db_failed(r, "list"))
        return 1;
    printf("%-8s %-12s %-24s %-28s %-28s %s\n", "ID", "PREFIX", "NAME", "CREATED", "LAST USED",
           "REVOKED");
    for (int i = 0; i < rx_rows_count(r); i++) {
        const char *v[6];
        for (int c = 0; c < 6; c++) {
            v[c] = rx_rows_text(r, i, c);
            if (v[c] == NULL)
                v[c] = "-";
        }
        printf("%-8s rxk_%-8s %-24s %-28s %-28s %s\n", v[0], v[1], v[2], v[3], v[4], v[5]);
    }
    rx_rows_free(r);
    return 0;
}

static int cmd_revoke(rx_module *m, int64_t key_id)
{
    rx_param ps[] = {RX_INT(key_id)};
    rx_rows *r = rx_db_run(
        m,
        "WITH k AS (UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
        "   RETURNING id, pharmacy_id, prefix, name),"
        " a AS (INSERT INTO audit_logs (action, metadata)"
        "   SELECT 'API_KEY_REVOKED', jsonb_build_object('pharmacy', k.pharmacy_id,"
        "          'key_id', k.id, 'prefix', k.prefix, 'name', k.name, 'source', 'cli') FROM k)"
        " SELECT id, prefix FROM k",
        1, ps);
    if (db_failed(r, "revoke"))
        return 1;
    if (rx_rows_count(r) != 1) {
        fprintf(stderr, "apikey revoke: no active API key with id %lld\n", (long long)key_id);
        rx_rows_free(r);
        return 1;
    }
    /* Tell every running server to drop the key from its cache now, as the
     * DELETE route does; if Redis cannot be reached the cache TTL still ends it. */
    const char *prefix = rx_rows_text(r, 0, 1);
    char msg[64];
    snprintf(msg, sizeof(msg), "k:%s", prefix);
    if (rx_publish(NULL, PHARM_CHANNEL, msg, strlen(msg)) == 0) {
        printf("Revoked API key %lld (prefix %s).\n", (long long)key_id, prefix);
    } else {
        long long ttl = (pharm_cfg.cache_ttl_ms + 999) / 1000;
        printf("Revoked API key %lld (prefix %s). Redis is unreachable: servers that cached it "
               "accept it for at most %lld more seconds.\n",
               (long long)key_id, prefix, ttl);
    }
    rx_rows_free(r);
    return 0;
}

int pharm_cli_apikey(rx_module *m, int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *sub = argv[1];
    int64_t pharmacy = 0, id = 0;
    const char *name = "";
    const char *positional = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--pharmacy") == 0 && i + 1 < argc) {
            if (parse_id(argv[++i], &pharmacy) != 0) {
                fprintf(stderr, "apikey: --pharmacy needs a positive integer id\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) {
            name = argv[++i];
        } else if (argv[i][0] != '-' && positional == NULL) {
            positional = argv[i];
        } else {
            fputs(usage, stderr);
            return 2;
        }
    }
    if (strcmp(sub, "create") == 0 && pharmacy > 0 && positional == NULL)
        return cmd_create(m, pharmacy, name);
    if (strcmp(sub, "list") == 0 && pharmacy > 0 && positional == NULL)
        return cmd_list(m, pharmacy);
    if (strcmp(sub, "revoke") == 0 && positional != NULL && pharmacy == 0) {
        if (parse_id(positional, &id) != 0) {
            fprintf(stderr, "apikey revoke: KEY_ID must be a positive integer\n");
            return 2;
        }
        return cmd_revoke(m, id);
    }
    fputs(usage, stderr);
    return 2;
}
