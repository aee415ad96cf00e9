/*
 * test_module.c — unit tests of kernel/module.c without dlopen():
 * kn_module_check_desc() (the checks made on a module's descriptor before
 * anything else of it is used) and kn_module_order() (requirements first,
 * configured order otherwise, missing requirements and cycles refused).
 *
 * The messages are compared in full: operators read them when rxd refuses
 * to start, so a change in wording is a change worth a failing test.
 */
#define _POSIX_C_SOURCE 200809L

#include "kn.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static int init_ok(rx_module *m)
{
    (void)m;
    return 0;
}

/* The ABI 1.0 descriptor size, as module.c computes it. */
#define DESC_1_0 (offsetof(rx_module_desc, stop) + sizeof(void (*)(rx_module *)))

/* A valid descriptor for "shop"; tests break one field at a time. */
static rx_module_desc good_desc(void)
{
    rx_module_desc d = {
        .abi_major = RX_ABI_MAJOR,
        .abi_minor = RX_ABI_MINOR,
        .size = sizeof(rx_module_desc),
        .name = "shop",
        .version = "1.2.3",
        .requires = NULL,
        .summary = "a shop",
        .init = init_ok,
    };
    return d;
}

/* check_desc must fail with exactly `want`. */
static void expect_refused(const rx_module_desc *d, const char *expected_name, const char *want)
{
    char err[512];
    memset(err, 'x', sizeof(err) - 1);
    err[sizeof(err) - 1] = '\0';
    assert_int_equal(kn_module_check_desc(d, expected_name, err, sizeof(err)), -1);
    assert_string_equal(err, want);
}

static void expect_accepted(const rx_module_desc *d, const char *expected_name)
{
    char err[512] = "untouched";
    int rc = kn_module_check_desc(d, expected_name, err, sizeof(err));
    if (rc != 0)
        fail_msg("refused (%d): %s", rc, err);
    assert_string_equal(err, "untouched"); /* no message on success */
}

/* ------------------------------------------------------------------ */
/* kn_module_check_desc                                                */
/* ------------------------------------------------------------------ */

static void test_desc_valid(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    expect_accepted(&d, "shop");
    /* RX_MODULE() fills the descriptor the same way. */
    static const char *const reqs[] = {"auth", "db_2", "x", NULL};
    d.requires = reqs;
    d.summary = NULL; /* optional */
    d.stop = NULL;    /* optional */
    expect_accepted(&d, "shop");
}

static void test_desc_major_mismatch(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    char want[512];

    d.abi_major = RX_ABI_MAJOR + 1;
    d.abi_minor = 0;
    snprintf(want, sizeof(want),
             "module 'shop' was built for SDK ABI %d.0, this rxd has ABI %d.%d (major versions "
             "must match: rebuild the module against this rxd's rx.h)",
             RX_ABI_MAJOR + 1, RX_ABI_MAJOR, RX_ABI_MINOR);
    expect_refused(&d, "shop", want);

    /* Older major too, and the major check comes before everything else
     * (a module of another major may have a different layout). */
    d.abi_major = RX_ABI_MAJOR - 1;
    d.abi_minor = 7;
    d.size = 4;
    d.name = "other";
    snprintf(want, sizeof(want),
             "module 'shop' was built for SDK ABI %d.7, this rxd has ABI %d.%d (major versions "
             "must match: rebuild the module against this rxd's rx.h)",
             RX_ABI_MAJOR - 1, RX_ABI_MAJOR, RX_ABI_MINOR);
    expect_refused(&d, "shop", want);
}

static void test_desc_newer_minor(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    char want[512];
    d.abi_minor = RX_ABI_MINOR + 1;
    snprintf(want, sizeof(want),
             "module 'shop' needs SDK ABI %d.%d, newer than this rxd's %d.%d (upgrade rxd)",
             RX_ABI_MAJOR, RX_ABI_MINOR + 1, RX_ABI_MAJOR, RX_ABI_MINOR);
    expect_refused(&d, "shop", want);

    d.abi_minor = 0xffffffffu; /* unsigned: no wrap-around into "older" */
    snprintf(want, sizeof(want),
             "module 'shop' needs SDK ABI %d.4294967295, newer than this rxd's %d.%d (upgrade rxd)",
             RX_ABI_MAJOR, RX_ABI_MAJOR, RX_ABI_MINOR);
    expect_refused(&d, "shop", want);
}

static void test_desc_older_minor_ok(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    /* Minor 0 is the oldest of this major: always loadable. */
    d.abi_minor = 0;
    expect_accepted(&d, "shop");
    /* The kernel's own minor, and (when there is one) the one before. */
    d.abi_minor = RX_ABI_MINOR;
    expect_accepted(&d, "shop");
#if RX_ABI_MINOR > 0
    d.abi_minor = RX_ABI_MINOR - 1;
    expect_accepted(&d, "shop");
#endif
    /* An older module's descriptor may be exactly 1.0's size. */
    d.size = (uint32_t)DESC_1_0;
    expect_accepted(&d, "shop");
    /* A newer one (same minor claimed, larger struct) is accepted too:
     * only the prefix the kernel knows is read. */
    d.size = (uint32_t)sizeof(rx_module_desc) + 64;
    expect_accepted(&d, "shop");
}

static void test_desc_size_too_small(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    char want[512];
    d.size = (uint32_t)DESC_1_0 - 1;
    snprintf(want, sizeof(want), "module 'shop': descriptor is %zu bytes, smaller than ABI %d.0's %zu",
             (size_t)DESC_1_0 - 1, RX_ABI_MAJOR, (size_t)DESC_1_0);
    expect_refused(&d, "shop", want);

    /* Only the six fixed fields: no init/stop to read. */
    d.size = (uint32_t)offsetof(rx_module_desc, summary);
    snprintf(want, sizeof(want), "module 'shop': descriptor is %zu bytes, smaller than ABI %d.0's %zu",
             offsetof(rx_module_desc, summary), RX_ABI_MAJOR, (size_t)DESC_1_0);
    expect_refused(&d, "shop", want);

    d.size = 0;
    snprintf(want, sizeof(want), "module 'shop': descriptor is 0 bytes, smaller than ABI %d.0's %zu",
             RX_ABI_MAJOR, (size_t)DESC_1_0);
    expect_refused(&d, "shop", want);
}

static void test_desc_name_mismatch(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    expect_refused(&d, "shops",
                   "module file 'shops' declares the name 'shop' (they must be equal)");
    expect_refused(&d, "Shop", "module file 'Shop' declares the name 'shop' (they must be equal)");
    expect_refused(&d, "sho", "module file 'sho' declares the name 'shop' (they must be equal)");
    d.name = NULL;
    expect_refused(&d, "shop", "module file 'shop' declares the name '(null)' (they must be equal)");
    d.name = "";
    expect_refused(&d, "shop", "module file 'shop' declares the name '' (they must be equal)");
}

static void test_desc_no_version(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    d.version = NULL;
    expect_refused(&d, "shop", "module 'shop' declares no version");
    d.version = "";
    expect_refused(&d, "shop", "module 'shop' declares no version");
    d.version = " "; /* free text: anything non-empty */
    expect_accepted(&d, "shop");
}

static void test_desc_no_init(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    d.init = NULL;
    expect_refused(&d, "shop", "module 'shop' has no init function");
}

static void test_desc_bad_requires(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();

    static const char *const upper[] = {"auth", "Auth", NULL};
    d.requires = upper;
    expect_refused(&d, "shop", "module 'shop' requires an invalid module name 'Auth'");

    static const char *const empty[] = {"", NULL};
    d.requires = empty;
    expect_refused(&d, "shop", "module 'shop' requires an invalid module name ''");

    static const char *const dash[] = {"auth-jwt", NULL};
    d.requires = dash;
    expect_refused(&d, "shop", "module 'shop' requires an invalid module name 'auth-jwt'");

    static const char *const path[] = {"../evil", NULL};
    d.requires = path;
    expect_refused(&d, "shop", "module 'shop' requires an invalid module name '../evil'");

    /* 64 characters is the longest name; 65 is refused. */
    static const char n64[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    static const char n65[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_int_equal(strlen(n64), 64);
    assert_int_equal(strlen(n65), 65);
    static const char *const long_ok[] = {n64, NULL};
    d.requires = long_ok;
    expect_accepted(&d, "shop");
    static const char *const too_long[] = {n65, NULL};
    d.requires = too_long;
    char want[512];
    snprintf(want, sizeof(want), "module 'shop' requires an invalid module name '%s'", n65);
    expect_refused(&d, "shop", want);

    /* An empty list is fine. */
    static const char *const none[] = {NULL};
    d.requires = none;
    expect_accepted(&d, "shop");
}

/* Checks run in a fixed order: the first problem is the one reported. */
static void test_desc_check_order(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    static const char *const bad[] = {"BAD", NULL};
    d.abi_minor = RX_ABI_MINOR + 1;
    d.size = 1;
    d.name = "x";
    d.version = NULL;
    d.init = NULL;
    d.requires = bad;
    char want[512];
    snprintf(want, sizeof(want),
             "module 'shop' needs SDK ABI %d.%d, newer than this rxd's %d.%d (upgrade rxd)",
             RX_ABI_MAJOR, RX_ABI_MINOR + 1, RX_ABI_MAJOR, RX_ABI_MINOR);
    expect_refused(&d, "shop", want);
    d.abi_minor = RX_ABI_MINOR;
    snprintf(want, sizeof(want), "module 'shop': descriptor is 1 bytes, smaller than ABI %d.0's %zu",
             RX_ABI_MAJOR, (size_t)DESC_1_0);
    expect_refused(&d, "shop", want);
    d.size = sizeof(rx_module_desc);
    expect_refused(&d, "shop", "module file 'shop' declares the name 'x' (they must be equal)");
    d.name = "shop";
    expect_refused(&d, "shop", "module 'shop' declares no version");
    d.version = "1";
    expect_refused(&d, "shop", "module 'shop' has no init function");
    d.init = init_ok;
    expect_refused(&d, "shop", "module 'shop' requires an invalid module name 'BAD'");
    d.requires = NULL;
    expect_accepted(&d, "shop");
}

/* A short buffer truncates the message (and stays terminated). */
static void test_desc_short_err_buffer(void **state)
{
    (void)state;
    rx_module_desc d = good_desc();
    d.init = NULL;
    char err[16];
    memset(err, 'x', sizeof(err));
    assert_int_equal(kn_module_check_desc(&d, "shop", err, 8), -1);
    assert_string_equal(err, "module ");
    assert_int_equal(err[8], 'x'); /* nothing written past errlen */
}

/* ------------------------------------------------------------------ */
/* kn_module_order                                                     */
/* ------------------------------------------------------------------ */

#define MAXM 8

typedef struct mset {
    rx_module_desc desc[MAXM];
    kn_module mod[MAXM];
    kn_module *in[MAXM];
    kn_module *out[MAXM + 1]; /* +1: a guard slot that must stay untouched */
    size_t n;
} mset;

static void mset_add(mset *s, const char *name, const char *const *requires)
{
    assert_true(s->n < MAXM);
    size_t i = s->n++;
    s->desc[i] = good_desc();
    s->desc[i].name = name;
    s->desc[i].requires = requires;
    memset(&s->mod[i], 0, sizeof(s->mod[i]));
    s->mod[i].desc = &s->desc[i];
    s->in[i] = &s->mod[i];
}

/* Order the set; on success compare the names with the space-separated `want`. */
static int order(mset *s, char *err, size_t errlen)
{
    kn_module *guard = (kn_module *)&guard;
    for (size_t i = 0; i <= MAXM; i++)
        s->out[i] = guard;
    int rc = kn_module_order(s->in, s->n, s->out, err, errlen);
    assert_ptr_equal(s->out[s->n], guard); /* never writes past n */
    return rc;
}

static void expect_order(mset *s, const char *want)
{
    char err[512] = "untouched";
    int rc = order(s, err, sizeof(err));
    if (rc != 0)
        fail_msg("order failed (%d): %s", rc, err);
    assert_string_equal(err, "untouched");
    char got[256] = "";
    for (size_t i = 0; i < s->n; i++) {
        if (i)
            strcat(got, " ");
        strcat(got, s->out[i]->desc->name);
    }
    assert_string_equal(got, want);
    /* Each input exactly once. */
    for (size_t i = 0; i < s->n; i++) {
        int seen = 0;
        for (size_t j = 0; j < s->n; j++)
            seen += s->out[j] == s->in[i];
        assert_int_equal(seen, 1);
    }
}

static void expect_order_error(mset *s, const char *want)
{
    char err[512] = "untouched";
    assert_int_equal(order(s, err, sizeof(err)), -1);
    assert_string_equal(err, want);
}

static void test_order_empty(void **state)
{
    (void)state;
    mset s = {0};
    expect_order(&s, "");
}

static void test_order_stable_without_requires(void **state)
{
    (void)state;
    mset s = {0};
    mset_add(&s, "zeta", NULL);
    mset_add(&s, "alpha", NULL);
    mset_add(&s, "mid", NULL);
    static const char *const none[] = {NULL};
    mset_add(&s, "beta", none);
    expect_order(&s, "zeta alpha mid beta"); /* configured order, not sorted */
}

static void test_order_dependencies_first(void **state)
{
    (void)state;
    mset s = {0};
    static const char *const need_auth[] = {"auth", NULL};
    static const char *const need_db[] = {"db", NULL};
    mset_add(&s, "shop", need_auth);
    mset_add(&s, "auth", need_db);
    mset_add(&s, "other", NULL);
    mset_add(&s, "db", NULL);
    expect_order(&s, "db auth shop other");
}

static void test_order_dependencies_stable(void **state)
{
    (void)state;
    /* Modules already in a good order keep it; unrelated ones keep their place
     * relative to each other. */
    mset s = {0};
    static const char *const need_a[] = {"a", NULL};
    mset_add(&s, "a", NULL);
    mset_add(&s, "x", NULL);
    mset_add(&s, "b", need_a);
    mset_add(&s, "y", NULL);
    expect_order(&s, "a x b y");
}

static void test_order_diamond(void **state)
{
    (void)state;
    mset s = {0};
    static const char *const need_bc[] = {"b", "c", NULL};
    static const char *const need_a[] = {"a", NULL};
    mset_add(&s, "d", need_bc);
    mset_add(&s, "c", need_a);
    mset_add(&s, "b", need_a);
    mset_add(&s, "a", NULL);
    expect_order(&s, "a b c d"); /* requirements in their listed order */
}

static void test_order_repeated_requirement(void **state)
{
    (void)state;
    mset s = {0};
    static const char *const twice[] = {"base", "base", NULL};
    mset_add(&s, "top", twice);
    mset_add(&s, "base", NULL);
    expect_order(&s, "base top");
}

static void test_order_missing(void **state)
{
    (void)state;
    mset s = {0};
    static const char *const reqs[] = {"testkit", "nosuchmodule", NULL};
    mset_add(&s, "testkit", NULL);
    mset_add(&s, "needy", reqs);
    expect_order_error(&s, "module 'needy' requires module 'nosuchmodule', which is not enabled "
                           "(add it to `modules` in the config)");
}

static void test_order_missing_deep(void **state)
{
    (void)state;
    /* The message names the module that has the requirement, not its dependant. */
    mset s = {0};
    static const char *const need_mid[] = {"mid", NULL};
    static const char *const need_gone[] = {"gone", NULL};
    mset_add(&s, "top", need_mid);
    mset_add(&s, "mid", need_gone);
    expect_order_error(&s, "module 'mid' requires module 'gone', which is not enabled (add it "
                           "to `modules` in the config)");
}

static void test_order_cycle(void **state)
{
    (void)state;
    mset s = {0};
    static const char *const need_b[] = {"b", NULL};
    static const char *const need_c[] = {"c", NULL};
    static const char *const need_a[] = {"a", NULL};
    mset_add(&s, "a", need_b);
    mset_add(&s, "b", need_c);
    mset_add(&s, "c", need_a);
    expect_order_error(&s, "module 'a' is part of a dependency cycle");
}

static void test_order_cycle_not_at_start(void **state)
{
    (void)state;
    mset s = {0};
    static const char *const need_x[] = {"x", NULL};
    static const char *const need_y[] = {"y", NULL};
    mset_add(&s, "free", NULL);
    mset_add(&s, "top", need_x);
    mset_add(&s, "x", need_y);
    mset_add(&s, "y", need_x);
    expect_order_error(&s, "module 'x' is part of a dependency cycle");
}

static void test_order_self_cycle(void **state)
{
    (void)state;
    mset s = {0};
    static const char *const self[] = {"narcissus", NULL};
    mset_add(&s, "narcissus", self);
    expect_order_error(&s, "module 'narcissus' is part of a dependency cycle");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_desc_valid),
        cmocka_unit_test(test_desc_major_mismatch),
        cmocka_unit_test(test_desc_newer_minor),
        cmocka_unit_test(test_desc_older_minor_ok),
        cmocka_unit_test(test_desc_size_too_small),
        cmocka_unit_test(test_desc_name_mismatch),
        cmocka_unit_test(test_desc_no_version),
        cmocka_unit_test(test_desc_no_init),
        cmocka_unit_test(test_desc_bad_requires),
        cmocka_unit_test(test_desc_check_order),
        cmocka_unit_test(test_desc_short_err_buffer),
        cmocka_unit_test(test_order_empty),
        cmocka_unit_test(test_order_stable_without_requires),
        cmocka_unit_test(test_order_dependencies_first),
        cmocka_unit_test(test_order_dependencies_stable),
        cmocka_unit_test(test_order_diamond),
        cmocka_unit_test(test_order_repeated_requirement),
        cmocka_unit_test(test_order_missing),
        cmocka_unit_test(test_order_missing_deep),
        cmocka_unit_test(test_order_cycle),
        cmocka_unit_test(test_order_cycle_not_at_start),
        cmocka_unit_test(test_order_self_cycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
