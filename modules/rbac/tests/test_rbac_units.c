/*
 * test_rbac_units.c — unit tests of the rbac module's pure parts: the strict
 * ISO 8601 reading of the audit-log time filters (PostgreSQL alone would
 * accept "yesterday"), and the copies of auth's identifier and password rules
 * (they must keep answering as auth does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "../rbac.h"

#include <string.h>

rx_module *rbac_mod;
unsigned long long rbac_opslimit;
size_t rbac_memlimit;

static void iso_times(void **state)
{
    (void)state;
    char out[64];
    static const char *const good[][2] = {
        {"2026-11-22", "2026-11-22T00:00:00Z"},
        {"2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z"},
        {"2026-11-22T10:00Z", "2026-11-22T10:00Z"},
        {"2026-11-22 10:00:00", "2026-11-22T10:00:00Z"},
        {"2026-11-22T10:00:00.123456Z", "2026-11-22T10:00:00.123456Z"},
        {"2026-11-22T10:00:00+06:00", "2026-11-22T10:00:00+06:00"},
        {"2026-11-22T10:00:00 06:00", "2026-11-22T10:00:00+06:00"}, /* '+' read as ' ' */
        {"2026-11-22T10:00:00-0530", "2026-11-22T10:00:00-05:30"},
        {"2026-11-22T10:00:00+06", "2026-11-22T10:00:00+06:00"},
        {"2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        assert_true(rbac_iso_time(good[i][0], out, sizeof out));
        assert_string_equal(out, good[i][1]);
    }
    static const char *const bad[] = {
        "garbage",
        "yesterday",
        "now",
        "epoch",
        "",
        "2026-13-01",
        "2026-02-30",
        "2025-02-29",
        "2026-11-22T25:00:00Z",
        "2026-11-22T10:60:00Z",
        "2026-11-22T10:00:00ZZ",
        "2026-11-22T10:00:00+6",
        "2026-11-22X10:00",
        "20261122",
        "2026-11-22T10:00:00+06:00:00",
        "2026-11-22T10:00:00.Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(rbac_iso_time(bad[i], out, sizeof out));
}

static void identifiers(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(ident_norm_phone("01712345678", out, sizeof out), 0);
    assert_string_equal(out, "+8801712345678");
    assert_int_equal(ident_norm_phone("8801712345678", out, sizeof out), 0);
    assert_string_equal(out, "+8801712345678");
    assert_int_not_equal(ident_norm_phone("12345", out, sizeof out), 0);
    assert_int_equal(ident_norm_email("Ann@Example.COM", out, sizeof out), 0);
    assert_string_equal(out, "Ann@example.com");
    assert_int_not_equal(ident_norm_email("no-at-sign", out, sizeof out), 0);
    assert_int_not_equal(ident_norm_email("a@b", out, sizeof out), 0);
}

static void password_rules(void **state)
{
    (void)state;
    json_t *errs = json_object();
    assert_true(ident_password_rules("Passw0rd!", errs, "password"));
    assert_int_equal(json_object_size(errs), 0);
    assert_false(ident_password_rules("weak", errs, "password"));
    assert_int_equal(json_array_size(json_object_get(errs, "password")), 4);
    json_decref(errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(iso_times),
        cmocka_unit_test(identifiers),
        cmocka_unit_test(password_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
