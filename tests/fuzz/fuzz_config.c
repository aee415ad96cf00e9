/*
 * fuzz_config.c — libFuzzer target for the config parser.
 *
 * The config file is operator input, but `rxd check` and start-up must never
 * crash or leak on a broken one, and every value that does parse must be safe
 * to hand to every typed getter. So: parse arbitrary bytes, then read every
 * key the file set through every getter, and split every value as a list.
 */
#include "kn.h"

#include <assert.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kn_config *c = NULL;
    char err[256];
    int rc = kn_config_parse(&c, (const char *)data, size, "fuzz.conf", err, sizeof err);
    if (rc) {
        /* Every failure explains itself, starting with the file name. */
        assert(c == NULL);
        assert(strncmp(err, "fuzz.conf:", 10) == 0);
        return 0;
    }
    assert(c != NULL);
    size_t n = kn_config_file_count(c);
    for (size_t i = 0; i < n; i++) {
        int line = 0;
        const char *key = kn_config_file_key(c, i, &line);
        assert(key && line > 0);
        const char *v = kn_config_get(c, key);
        assert(v != NULL);
        char buf[64];
        assert(kn_config_origin(c, key, buf, sizeof buf) != NULL);

        long long ll = 0;
        bool b = false;
        (void)kn_config_int(c, key, 0, &ll);
        (void)kn_config_bool(c, key, false, &b);
        (void)kn_config_size(c, key, 0, &ll);
        (void)kn_config_duration_ms(c, key, 0, &ll);

        size_t count = 0;
        char **list = kn_split_list(v, &count);
        if (list) {
            for (size_t j = 0; j < count; j++)
                assert(list[j] && list[j][0]);
            assert(list[count] == NULL);
            kn_strv_free(list);
        }
    }
    assert(kn_config_file_key(c, n, NULL) == NULL);
    kn_config_free(c);
    return 0;
}
