/*
 * passwords.c — the contract's password rules and Argon2id hashing.
 * Hashing costs tens of milliseconds and memory by design, so callers run
 * auth_pw_hash/auth_pw_verify on the thread pool (rx_offload), never on a
 * worker's event loop; only the CLI calls them directly.
 */
#include "auth.h"

#include <ctype.h>
#include <pthread.h>
#include <string.h>


int auth_pw_hash(const char *pw, char out[crypto_pwhash_STRBYTES])
{
    return crypto_pwhash_str(out, pw, strlen(pw), auth_cfg.opslimit, auth_cfg.memlimit);
}

bool auth_pw_verify(const char *hash, const char *pw)
{
    if (hash == NULL || *hash == '\0')
        return false;
    return crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
}

/* A hash of a random password, verified for unknown users so that "no such
 * user" takes as long as "wrong password". Made once, on first use, on a
 * pool thread: commands such as `rxd migrate` never pay for it. */
static char dummy_hash[crypto_pwhash_STRBYTES];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void make_dummy(void)
{
    char pw[33];
    unsigned char r[16];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(pw, sizeof pw, r, sizeof r);
    if (auth_pw_hash(pw, dummy_hash) != 0)
        dummy_hash[0] = '\0';
}

const char *auth_pw_dummy(void)
{
    pthread_once(&dummy_once, make_dummy);
    return dummy_hash;
}
