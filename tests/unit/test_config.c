/*
 * test_config.c — unit tests for kernel/config.c: the config file syntax,
 * its error messages (operators read them), environment overrides, the typed
 * getters and list splitting.
 *
 * Tests that touch the environment use RXD_TESTCFG_* names and remove them
 * before returning, so their order does not matter.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "kn.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

extern char **environ;

static kn_config *parse_ok(const char *text)
{
    kn_config *c = NULL;
    char err[256] = "untouched";
    int rc = kn_config_parse(&c, text, strlen(text), "t.conf", err, sizeof err);
    if (rc != 0)
        fail_msg("parse failed (%d): %s", rc, err);
    assert_non_null(c);
    assert_string_equal(err, "");
    return c;
}

static void expect_error(const char *text, int want_rc, const char *want_err)
{
    kn_config *c = (kn_config *)&c; /* must be reset to NULL on error */
    char err[256] = "untouched";
    int rc = kn_config_parse(&c, text, strlen(text), "t.conf", err, sizeof err);
    assert_int_equal(rc, want_rc);
    assert_null(c);
    assert_string_equal(err, want_err);
}

/* ------------------------------------------------------------------ */
/* syntax                                                              */
/* ------------------------------------------------------------------ */

static void test_keys_and_sections(void **state)
{
    (void)state;
    kn_config *c = parse_ok("listen = 127.0.0.1:8000\n"
                            "workers = 4\n"
                            "[cors]\n"
                            "max_age = 600\n"
                            "[log]\n"
                            "level = info\n"
                            "[a.b-c_d]\n"
                            "x-y.z = 1\n");
    assert_string_equal(kn_config_get(c, "listen"), "127.0.0.1:8000");
    assert_string_equal(kn_config_get(c, "workers"), "4");
    assert_string_equal(kn_config_get(c, "cors.max_age"), "600");
    assert_string_equal(kn_config_get(c, "log.level"), "info");
    assert_string_equal(kn_config_get(c, "a.b-c_d.x-y.z"), "1");
    /* Keys are only reachable with their section. */
    assert_null(kn_config_get(c, "max_age"));
    assert_null(kn_config_get(c, "level"));
    assert_null(kn_config_get(c, "cors"));
    assert_null(kn_config_get(c, "nope"));
    assert_null(kn_config_get(c, NULL));

    assert_int_equal(kn_config_file_count(c), 5);
    const char *want[] = {"listen", "workers", "cors.max_age", "log.level", "a.b-c_d.x-y.z"};
    const int lines[] = {1, 2, 4, 6, 8};
    for (size_t i = 0; i < 5; i++) {
        int line = -1;
        assert_string_equal(kn_config_file_key(c, i, &line), want[i]);
        assert_int_equal(line, lines[i]);
    }
    assert_null(kn_config_file_key(c, 5, NULL));
    assert_string_equal(kn_config_path(c), "t.conf");
    kn_config_free(c);
}

static void test_section_switch_and_reopen(void **state)
{
    (void)state;
    kn_config *c = parse_ok("[a]\nx = 1\n[b]\nx = 2\n[a]\ny = 3\n[ spaced ]\nz = 4\n");
    assert_string_equal(kn_config_get(c, "a.x"), "1");
    assert_string_equal(kn_config_get(c, "b.x"), "2");
    assert_string_equal(kn_config_get(c, "a.y"), "3");
    assert_string_equal(kn_config_get(c, "spaced.z"), "4");
    assert_int_equal(kn_config_file_count(c), 4);
    kn_config_free(c);
}

static void test_comments(void **state)
{
    (void)state;
    kn_config *c = parse_ok("# full line\n"
                            "; also a comment = not a key\n"
                            "   # indented comment\n"
                            "\t; indented too\n"
                            "a = 1 # trailing\n"
                            "b = 2\t# after a tab\n"
                            "c = x#y\n"
                            "d = # only a comment\n"
                            "e = http://h/p;q=1 ; not a comment\n"
                            "f=#x\n"
                            "[s] # comment after a header\n"
                            "g = 1\n"
                            "[t] ; this one too\n"
                            "h = 2\n");
    assert_string_equal(kn_config_get(c, "a"), "1");
    assert_string_equal(kn_config_get(c, "b"), "2");
    assert_string_equal(kn_config_get(c, "c"), "x#y");
    assert_string_equal(kn_config_get(c, "d"), "");
    assert_string_equal(kn_config_get(c, "e"), "http://h/p;q=1 ; not a comment");
    assert_string_equal(kn_config_get(c, "f"), "#x");
    assert_string_equal(kn_config_get(c, "s.g"), "1");
    assert_string_equal(kn_config_get(c, "t.h"), "2");
    assert_null(kn_config_get(c, "also"));
    assert_int_equal(kn_config_file_count(c), 8);
    kn_config_free(c);
}

static void test_quoting(void **state)
{
    (void)state;
    kn_config *c = parse_ok("a = \"with # hash\"\n"
                            "b = \"q\\\"uote\\\\slash\\nnl\\ttab\"\n"
                            "c = \"  padded  \"   # comment\n"
                            "d = \"\"\n"
                            "e = \"x\"#tight comment\n"
                            "f = not \"quoted\"\n"
                            "g = \"caf\xc3\xa9\"\n"
                            "h = \xe2\x82\xac 5 \xf0\x9f\x92\x8a\n");
    assert_string_equal(kn_config_get(c, "a"), "with # hash");
    assert_string_equal(kn_config_get(c, "b"), "q\"uote\\slash\nnl\ttab");
    assert_string_equal(kn_config_get(c, "c"), "  padded  ");
    assert_string_equal(kn_config_get(c, "d"), "");
    assert_string_equal(kn_config_get(c, "e"), "x");
    assert_string_equal(kn_config_get(c, "f"), "not \"quoted\"");
    assert_string_equal(kn_config_get(c, "g"), "caf\xc3\xa9");
    /* Three- and four-byte UTF-8 (euro sign, pill emoji) are valid text. */
    assert_string_equal(kn_config_get(c, "h"), "\xe2\x82\xac 5 \xf0\x9f\x92\x8a");
    kn_config_free(c);
}

static void test_quoting_errors(void **state)
{
    (void)state;
    expect_error("a = 1\nb = \"open\n", RX_EINVAL, "t.conf:2: unterminated quote");
    expect_error("b = \"ends in backslash\\\n", RX_EINVAL, "t.conf:1: unterminated quote");
    expect_error("b = \"x\\q\"\n", RX_EINVAL,
                 "t.conf:1: unknown escape '\\q' (use \\\" \\\\ \\n \\t)");
    expect_error("b = \"x\\\xc3\xa9\"\n", RX_EINVAL,
                 "t.conf:1: unknown escape '\\xc3' (use \\\" \\\\ \\n \\t)");
    expect_error("b = \"x\" y\n", RX_EINVAL, "t.conf:1: unexpected text after closing quote");
    expect_error("b = \"x\" ; not a comment here\n", RX_EINVAL,
                 "t.conf:1: unexpected text after closing quote");
}

static void test_whitespace(void **state)
{
    (void)state;
    kn_config *c = parse_ok("  a=1\n"
                            "b\t=\t2\t\n"
                            "c   =   x   y   \n"
                            "d = 4\r\n"
                            "\n"
                            "   \t  \n"
                            "\r\n"
                            "e =\n"
                            "f = last, no newline");
    assert_string_equal(kn_config_get(c, "a"), "1");
    assert_string_equal(kn_config_get(c, "b"), "2");
    assert_string_equal(kn_config_get(c, "c"), "x   y");
    assert_string_equal(kn_config_get(c, "d"), "4");
    assert_string_equal(kn_config_get(c, "e"), "");
    assert_string_equal(kn_config_get(c, "f"), "last, no newline");
    int line = 0;
    assert_string_equal(kn_config_file_key(c, 5, &line), "f");
    assert_int_equal(line, 9);
    kn_config_free(c);
}

static void test_bom_and_empty_input(void **state)
{
    (void)state;
    kn_config *c = parse_ok("\xef\xbb\xbf"
                            "a = 1\n");
    assert_string_equal(kn_config_get(c, "a"), "1");
    kn_config_free(c);

    c = parse_ok("");
    assert_int_equal(kn_config_file_count(c), 0);
    kn_config_free(c);

    c = NULL;
    assert_int_equal(kn_config_parse(&c, NULL, 0, "none", NULL, 0), 0);
    assert_non_null(c);
    assert_int_equal(kn_config_file_count(c), 0);
    kn_config_free(c);
}

static void test_duplicates(void **state)
{
    (void)state;
    expect_error("a = 1\n\n# x\na = 2\n", RX_EEXIST, "t.conf:4: 'a' already set at line 1");
    expect_error("[s]\nx = 1\n[t]\ny = 1\n[s]\nx = 2\n", RX_EEXIST,
                 "t.conf:6: 's.x' already set at line 2");
    /* A dotted top-level key and a section key are the same key. */
    expect_error("s.x = 1\n[s]\nx = 2\n", RX_EEXIST, "t.conf:3: 's.x' already set at line 1");
    /* The same name in different sections is fine. */
    kn_config *c = parse_ok("[s]\nx = 1\n[t]\nx = 2\n");
    assert_string_equal(kn_config_get(c, "s.x"), "1");
    assert_string_equal(kn_config_get(c, "t.x"), "2");
    kn_config_free(c);
}

static void test_bad_lines(void **state)
{
    (void)state;
    const char *syntax = "expected 'key = value', '[section]' or a comment";
    char want[256];
    snprintf(want, sizeof want, "t.conf:2: %s", syntax);
    expect_error("a = 1\njust words\n", RX_EINVAL, want);
    expect_error("= 1\n", RX_EINVAL, "t.conf:1: missing key before '='");
    expect_error("Listen = 1\n", RX_EINVAL, "t.conf:1: bad key 'Listen': use a-z 0-9 _ . -");
    expect_error("a b = 1\n", RX_EINVAL, "t.conf:1: bad key 'a b': use a-z 0-9 _ . -");
    expect_error("a/b = 1\n", RX_EINVAL, "t.conf:1: bad key 'a/b': use a-z 0-9 _ . -");
    expect_error(".a = 1\n", RX_EINVAL, "t.conf:1: bad key '.a': use a-z 0-9 _ . -");
    expect_error("a. = 1\n", RX_EINVAL, "t.conf:1: bad key 'a.': use a-z 0-9 _ . -");
    expect_error("a..b = 1\n", RX_EINVAL, "t.conf:1: bad key 'a..b': use a-z 0-9 _ . -");
    expect_error("caf\xc3\xa9 = 1\n", RX_EINVAL,
                 "t.conf:1: bad key 'caf\xc3\xa9': use a-z 0-9 _ . -");

    expect_error("[cors\n", RX_EINVAL, "t.conf:1: bad section header: missing ']'");
    expect_error("[]\n", RX_EINVAL, "t.conf:1: bad section header '[]': use a-z 0-9 _ . -");
    expect_error("[ ]\n", RX_EINVAL, "t.conf:1: bad section header '[ ]': use a-z 0-9 _ . -");
    expect_error("[Cors]\n", RX_EINVAL, "t.conf:1: bad section header '[Cors]': use a-z 0-9 _ . -");
    expect_error("[a..b]\n", RX_EINVAL, "t.conf:1: bad section header '[a..b]': use a-z 0-9 _ . -");
    expect_error("[a] b\n", RX_EINVAL, "t.conf:1: bad section header: unexpected text after ']'");
    expect_error("[a]]\n", RX_EINVAL, "t.conf:1: bad section header: unexpected text after ']'");

    expect_error("a = x\x01y\n", RX_EINVAL, "t.conf:1: control character in line");
    expect_error("a = 1\nb = x\x7f\n", RX_EINVAL, "t.conf:2: control character in line");
    expect_error("a = \xff\n", RX_EINVAL, "t.conf:1: invalid UTF-8");
    expect_error("a = \xc3\n", RX_EINVAL, "t.conf:1: invalid UTF-8");
    expect_error("a = \xc0\xaf\n", RX_EINVAL, "t.conf:1: invalid UTF-8");         /* overlong */
    expect_error("a = \xe0\x80\xaf\n", RX_EINVAL, "t.conf:1: invalid UTF-8");     /* overlong */
    expect_error("a = \xf4\x90\x80\x80\n", RX_EINVAL, "t.conf:1: invalid UTF-8"); /* > U+10FFFF */
    expect_error("a = \xed\xa0\x80\n", RX_EINVAL, "t.conf:1: invalid UTF-8");     /* surrogate */
    /* A lone CR in the middle of a line is not a line break. */
    expect_error("a = 1\rb = 2\n", RX_EINVAL, "t.conf:1: control character in line");

    /* NUL bytes cannot be seen by strlen, so give the length explicitly. */
    kn_config *c = (kn_config *)&c;
    char err[128];
    assert_int_equal(kn_config_parse(&c, "a = 1\nb = x\0y\n", 13, "n.conf", err, sizeof err),
                     RX_EINVAL);
    assert_null(c);
    assert_string_equal(err, "n.conf:2: control character in line");
}

static void test_error_buffer_edges(void **state)
{
    (void)state;
    kn_config *c = (kn_config *)&c;
    char err[8];
    memset(err, 'X', sizeof err);
    assert_int_equal(kn_config_parse(&c, "oops\n", 5, "t.conf", err, sizeof err), RX_EINVAL);
    assert_null(c);
    assert_string_equal(err, "t.conf:");

    char err2[16];
    memset(err2, 'X', sizeof err2);
    assert_int_equal(kn_config_parse(&c, "oops\n", 5, "t.conf", err2, sizeof err2), RX_EINVAL);
    assert_string_equal(err2, "t.conf:1: expec");

    /* No buffer at all is allowed. */
    assert_int_equal(kn_config_parse(&c, "oops\n", 5, "t.conf", NULL, 0), RX_EINVAL);
    assert_null(c);
    /* An unnamed text still gets a name in messages. */
    assert_int_equal(kn_config_parse(&c, "oops\n", 5, NULL, err2, sizeof err2), RX_EINVAL);
    assert_string_equal(err2, "config:1: expec");
}

static void test_many_keys(void **state)
{
    (void)state;
    /* Enough keys to make the hash table grow several times. */
    size_t n = 3000, cap = n * 32, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "[s%zu]\nk%zu = v%zu\n", i % 7, i, i);
    kn_config *c = NULL;
    char err[128];
    assert_int_equal(kn_config_parse(&c, text, len, "big", err, sizeof err), 0);
    assert_int_equal(kn_config_file_count(c), n);
    for (size_t i = 0; i < n; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "s%zu.k%zu", i % 7, i);
        snprintf(val, sizeof val, "v%zu", i);
        assert_string_equal(kn_config_get(c, key), val);
        int line = 0;
        assert_string_equal(kn_config_file_key(c, i, &line), key);
        assert_int_equal(line, (int)(2 * i + 2));
    }
    assert_null(kn_config_get(c, "s0.k1"));
    kn_config_free(c);
    free(text);
}

/* ------------------------------------------------------------------ */
/* environment                                                         */
/* ------------------------------------------------------------------ */

static void test_env_wins_and_is_captured_once(void **state)
{
    (void)state;
    assert_int_equal(setenv("RXD_TESTCFG_CORS_ALLOWED_ORIGINS", "https://a https://b", 1), 0);
    assert_int_equal(setenv("RXD_TESTCFG_ONLY_ENV", "from env", 1), 0);
    assert_int_equal(setenv("RXD_TESTCFG_DASHED_KEY", "dash", 1), 0);
    unsetenv("RXD_TESTCFG_LATE");

    kn_config *c = parse_ok("[testcfg]\n"
                            "cors.allowed_origins = https://file\n"
                            "late = file value\n"
                            "plain = 7\n");
    assert_string_equal(kn_config_get(c, "testcfg.cors.allowed_origins"), "https://a https://b");
    assert_string_equal(kn_config_get(c, "testcfg.only_env"), "from env");
    assert_string_equal(kn_config_get(c, "testcfg.dashed-key"), "dash");
    assert_string_equal(kn_config_get(c, "testcfg.late"), "file value");
    assert_string_equal(kn_config_get(c, "testcfg.plain"), "7");
    /* The file still lists only its own keys. */
    assert_int_equal(kn_config_file_count(c), 3);

    char buf[64];
    assert_string_equal(kn_config_origin(c, "testcfg.cors.allowed_origins", buf, sizeof buf),
                        "env RXD_TESTCFG_CORS_ALLOWED_ORIGINS");
    assert_string_equal(kn_config_origin(c, "testcfg.only_env", buf, sizeof buf),
                        "env RXD_TESTCFG_ONLY_ENV");
    assert_string_equal(kn_config_origin(c, "testcfg.late", buf, sizeof buf), "t.conf:3");
    assert_null(kn_config_origin(c, "testcfg.absent", buf, sizeof buf));

    /* Changes after parsing are not seen: the environment was captured. */
    assert_int_equal(setenv("RXD_TESTCFG_CORS_ALLOWED_ORIGINS", "https://changed", 1), 0);
    assert_int_equal(setenv("RXD_TESTCFG_LATE", "too late", 1), 0);
    assert_int_equal(unsetenv("RXD_TESTCFG_ONLY_ENV"), 0);
    assert_string_equal(kn_config_get(c, "testcfg.cors.allowed_origins"), "https://a https://b");
    assert_string_equal(kn_config_get(c, "testcfg.late"), "file value");
    assert_string_equal(kn_config_get(c, "testcfg.only_env"), "from env");
    kn_config_free(c);

    /* A new parse does see the new environment (the test above could pass
     * by never reading it at all). */
    c = parse_ok("[testcfg]\nlate = file value\n");
    assert_string_equal(kn_config_get(c, "testcfg.late"), "too late");
    assert_string_equal(kn_config_get(c, "testcfg.cors.allowed_origins"), "https://changed");
    assert_null(kn_config_get(c, "testcfg.only_env"));
    kn_config_free(c);

    unsetenv("RXD_TESTCFG_CORS_ALLOWED_ORIGINS");
    unsetenv("RXD_TESTCFG_DASHED_KEY");
    unsetenv("RXD_TESTCFG_LATE");
}

static void test_env_empty_value_and_typed(void **state)
{
    (void)state;
    assert_int_equal(setenv("RXD_TESTCFG_EMPTY", "", 1), 0);
    assert_int_equal(setenv("RXD_TESTCFG_NUM", "42", 1), 0);
    assert_int_equal(setenv("RXD_TESTCFG_FLAG", "off", 1), 0);
    assert_int_equal(setenv("RXD_TESTCFG_WAIT", "250ms", 1), 0);
    kn_config *c = parse_ok("testcfg.empty = from file\n"
                            "testcfg.num = 1\n"
                            "testcfg.flag = on\n"
                            "testcfg.wait = 9s\n");
    /* An empty environment value still wins: it is how to clear a list. */
    assert_string_equal(kn_config_get(c, "testcfg.empty"), "");
    long long v = 0;
    bool b = true;
    assert_int_equal(kn_config_int(c, "testcfg.num", 0, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(kn_config_bool(c, "testcfg.flag", true, &b), 0);
    assert_false(b);
    assert_int_equal(kn_config_duration_ms(c, "testcfg.wait", 0, &v), 0);
    assert_int_equal(v, 250);
    /* ...and a typed getter reads an empty value as "use the default". */
    assert_int_equal(kn_config_int(c, "testcfg.empty", -3, &v), 0);
    assert_int_equal(v, -3);
    kn_config_free(c);
    unsetenv("RXD_TESTCFG_EMPTY");
    unsetenv("RXD_TESTCFG_NUM");
    unsetenv("RXD_TESTCFG_FLAG");
    unsetenv("RXD_TESTCFG_WAIT");
}

static void test_env_names_are_exact(void **state)
{
    (void)state;
    /* Lower-case and unprefixed names are not overrides. */
    assert_int_equal(setenv("rxd_testcfg_lower", "x", 1), 0);
    assert_int_equal(setenv("TESTCFG_NOPREFIX", "x", 1), 0);
    assert_int_equal(setenv("ABC_TESTCFG_OTHER", "x", 1), 0);
    assert_int_equal(setenv("RXD_TESTCFG_A_B", "ab", 1), 0);
    kn_config *c = kn_config_empty();
    assert_non_null(c);
    assert_null(kn_config_get(c, "testcfg.lower"));
    assert_null(kn_config_get(c, "testcfg_noprefix"));
    assert_null(kn_config_get(c, "noprefix"));
    assert_null(kn_config_get(c, "testcfg.other"));
    assert_null(kn_config_get(c, "cfg.noprefix"));
    /* '.', '-' and '_' all spell '_'. */
    assert_string_equal(kn_config_get(c, "testcfg.a.b"), "ab");
    assert_string_equal(kn_config_get(c, "testcfg.a-b"), "ab");
    assert_string_equal(kn_config_get(c, "testcfg_a_b"), "ab");
    assert_null(kn_config_get(c, "testcfg.a.b.c"));
    assert_null(kn_config_get(c, "testcfg.a"));
    assert_null(kn_config_get(c, ""));
    assert_string_equal(kn_config_path(c), "");
    assert_int_equal(kn_config_file_count(c), 0);
    assert_null(kn_config_file_key(c, 0, NULL));
    kn_config_free(c);
    unsetenv("rxd_testcfg_lower");
    unsetenv("TESTCFG_NOPREFIX");
    unsetenv("ABC_TESTCFG_OTHER");
    unsetenv("RXD_TESTCFG_A_B");
}

static void test_env_duplicate_names(void **state)
{
    (void)state;
    /* environ can hold a name twice (execve() does not stop it); the first
     * one is what getenv() answers, so it is what the config must answer. */
    char a[] = "RXD_TESTCFG_TWICE=first", b[] = "RXD_TESTCFG_TWICE=second";
    char c1[] = "RXD_=nameless", c2[] = "RXD_TESTCFG_NOEQ";
    char *fake[] = {c1, a, c2, b, NULL};
    char **saved = environ;
    environ = fake;
    kn_config *c = kn_config_empty();
    environ = saved;
    assert_non_null(c);
    assert_string_equal(kn_config_get(c, "testcfg.twice"), "first");
    assert_null(kn_config_get(c, "testcfg.noeq"));
    assert_null(kn_config_get(c, ""));
    kn_config_free(c);
}

/* ------------------------------------------------------------------ */
/* typed getters                                                       */
/* ------------------------------------------------------------------ */

static void test_int(void **state)
{
    (void)state;
    kn_config *c = parse_ok("a = 42\n"
                            "b = -17\n"
                            "c = +5\n"
                            "max = 9223372036854775807\n"
                            "min = -9223372036854775808\n"
                            "over = 9223372036854775808\n"
                            "under = -9223372036854775809\n"
                            "huge = 99999999999999999999999999\n"
                            "trail = 12abc\n"
                            "hex = 0x10\n"
                            "frac = 1.5\n"
                            "word = ten\n"
                            "sign = -\n"
                            "spaced = 1 2\n"
                            "empty =\n"
                            "quoted = \" 8 \"\n"
                            "zero = 007\n");
    long long v;
    v = 0, assert_int_equal(kn_config_int(c, "a", 0, &v), 0), assert_int_equal(v, 42);
    v = 0, assert_int_equal(kn_config_int(c, "b", 0, &v), 0), assert_int_equal(v, -17);
    v = 0, assert_int_equal(kn_config_int(c, "c", 0, &v), 0), assert_int_equal(v, 5);
    v = 0, assert_int_equal(kn_config_int(c, "max", 0, &v), 0);
    assert_true(v == LLONG_MAX);
    v = 0, assert_int_equal(kn_config_int(c, "min", 0, &v), 0);
    assert_true(v == LLONG_MIN);
    v = 0, assert_int_equal(kn_config_int(c, "quoted", 0, &v), 0), assert_int_equal(v, 8);
    v = 0, assert_int_equal(kn_config_int(c, "zero", 0, &v), 0), assert_int_equal(v, 7);
    v = 0, assert_int_equal(kn_config_int(c, "unset", 99, &v), 0), assert_int_equal(v, 99);
    v = 0, assert_int_equal(kn_config_int(c, "empty", -1, &v), 0), assert_int_equal(v, -1);

    const char *bad[] = {"over", "under", "huge", "trail", "hex", "frac", "word", "sign", "spaced"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 1234;
        if (kn_config_int(c, bad[i], 0, &v) != RX_ERANGE)
            fail_msg("key %s: expected RX_ERANGE", bad[i]);
        assert_int_equal(v, 1234); /* untouched */
    }
    kn_config_free(c);
}

static void test_bool(void **state)
{
    (void)state;
    kn_config *c = parse_ok("t1 = true\nt2 = YES\nt3 = On\nt4 = 1\n"
                            "f1 = FALSE\nf2 = no\nf3 = oFF\nf4 = 0\n"
                            "b1 = maybe\nb2 = 2\nb3 = truee\nb4 = y\nb5 = tru\nempty =\n");
    const char *t[] = {"t1", "t2", "t3", "t4"};
    const char *f[] = {"f1", "f2", "f3", "f4"};
    for (size_t i = 0; i < 4; i++) {
        bool b = false;
        assert_int_equal(kn_config_bool(c, t[i], false, &b), 0);
        assert_true(b);
        b = true;
        assert_int_equal(kn_config_bool(c, f[i], true, &b), 0);
        assert_false(b);
    }
    const char *bad[] = {"b1", "b2", "b3", "b4", "b5"};
    for (size_t i = 0; i < 5; i++) {
        bool b = true;
        assert_int_equal(kn_config_bool(c, bad[i], false, &b), RX_EINVAL);
        assert_true(b);
        b = false;
        assert_int_equal(kn_config_bool(c, bad[i], true, &b), RX_EINVAL);
        assert_false(b);
    }
    bool b = false;
    assert_int_equal(kn_config_bool(c, "unset", true, &b), 0);
    assert_true(b);
    b = true;
    assert_int_equal(kn_config_bool(c, "empty", false, &b), 0);
    assert_false(b);
    kn_config_free(c);
}

static void test_size(void **state)
{
    (void)state;
    kn_config *c = parse_ok("plain = 100\n"
                            "b = 100b\n"
                            "k = 32k\n"
                            "kb = 64kb\n"
                            "kup = 2K\n"
                            "kbup = 2KB\n"
                            "m = 1m\n"
                            "mb = 3MB\n"
                            "g = 2g\n"
                            "gb = 1Gb\n"
                            "space = 4 k\n"
                            "zero = 0\n"
                            "max = 9223372036854775807\n"
                            "gmax = 8589934591g\n"
                            "gover = 8589934592g\n"
                            "over = 9223372036854775808\n"
                            "neg = -1\n"
                            "negk = -1k\n"
                            "plus = +1\n"
                            "suffix = 5x\n"
                            "kk = 5kk\n"
                            "kib = 5kib\n"
                            "only = k\n"
                            "frac = 1.5m\n"
                            "empty =\n");
    struct {
        const char *key;
        long long want;
    } ok[] = {
        {"plain", 100},      {"b", 100},
        {"k", 32768},        {"kb", 65536},
        {"kup", 2048},       {"kbup", 2048},
        {"m", 1048576},      {"mb", 3145728},
        {"g", 2147483648LL}, {"gb", 1073741824},
        {"space", 4096},     {"zero", 0},
        {"max", LLONG_MAX},  {"gmax", 8589934591LL * 1073741824LL},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        long long v = -1;
        if (kn_config_size(c, ok[i].key, 0, &v) != 0 || v != ok[i].want)
            fail_msg("key %s: got %lld, want %lld", ok[i].key, v, ok[i].want);
    }
    const char *bad[] = {"gover",  "over", "neg", "negk", "plus",
                         "suffix", "kk",   "kib", "only", "frac"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long long v = 1234;
        if (kn_config_size(c, bad[i], 0, &v) != RX_ERANGE)
            fail_msg("key %s: expected RX_ERANGE", bad[i]);
        assert_int_equal(v, 1234);
    }
    long long v = 0;
    assert_int_equal(kn_config_size(c, "unset", 1 << 20, &v), 0);
    assert_int_equal(v, 1 << 20);
    assert_int_equal(kn_config_size(c, "empty", 7, &v), 0);
    assert_int_equal(v, 7);
    kn_config_free(c);
}

static void test_duration(void **state)
{
    (void)state;
    kn_config *c = parse_ok("bare = 60\n"
                            "ms = 500ms\n"
                            "s = 30s\n"
                            "m = 2m\n"
                            "h = 1h\n"
                            "up = 5S\n"
                            "upms = 5MS\n"
                            "space = 3 s\n"
                            "zero = 0ms\n"
                            "maxms = 9223372036854775807ms\n"
                            "over = 9223372036854775807s\n"
                            "hover = 2562047788016h\n"
                            "neg = -5s\n"
                            "frac = 1.5s\n"
                            "day = 1d\n"
                            "sm = 5sm\n"
                            "only = ms\n"
                            "empty =\n");
    struct {
        const char *key;
        long long want;
    } ok[] = {
        {"bare", 60000}, {"ms", 500}, {"s", 30000},    {"m", 120000}, {"h", 3600000},
        {"up", 5000},    {"upms", 5}, {"space", 3000}, {"zero", 0},   {"maxms", LLONG_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        long long v = -1;
        if (kn_config_duration_ms(c, ok[i].key, 0, &v) != 0 || v != ok[i].want)
            fail_msg("key %s: got %lld, want %lld", ok[i].key, v, ok[i].want);
    }
    const char *bad[] = {"over", "hover", "neg", "frac", "day", "sm", "only"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long long v = 1234;
        if (kn_config_duration_ms(c, bad[i], 0, &v) != RX_ERANGE)
            fail_msg("key %s: expected RX_ERANGE", bad[i]);
        assert_int_equal(v, 1234);
    }
    long long v = 0;
    assert_int_equal(kn_config_duration_ms(c, "unset", 75000, &v), 0);
    assert_int_equal(v, 75000);
    assert_int_equal(kn_config_duration_ms(c, "empty", 5, &v), 0);
    assert_int_equal(v, 5);
    kn_config_free(c);
}

/* ------------------------------------------------------------------ */
/* lists                                                               */
/* ------------------------------------------------------------------ */

static void check_list(const char *value, const char *const *want, size_t nwant)
{
    size_t n = 999;
    char **v = kn_split_list(value, &n);
    assert_non_null(v);
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < nwant; i++)
        assert_string_equal(v[i], want[i]);
    assert_null(v[nwant]);
    kn_strv_free(v);
}

static void test_split_list(void **state)
{
    (void)state;
    check_list(NULL, NULL, 0);
    check_list("", NULL, 0);
    check_list("  \t \n ", NULL, 0);
    const char *one[] = {"auth"};
    check_list("auth", one, 1);
    check_list("   auth\t", one, 1);
    const char *three[] = {"notify", "auth", "rbac"};
    check_list("notify auth rbac", three, 3);
    check_list("  notify   auth\t\trbac  ", three, 3);
    check_list("notify\tauth \t rbac\n", three, 3);
    const char *urls[] = {"https://a.example", "https://b.example:8443"};
    check_list("https://a.example https://b.example:8443", urls, 2);

    /* count is optional. */
    char **v = kn_split_list("a b", NULL);
    assert_non_null(v);
    assert_string_equal(v[0], "a");
    assert_string_equal(v[1], "b");
    assert_null(v[2]);
    kn_strv_free(v);
    kn_strv_free(NULL);
}

/* ------------------------------------------------------------------ */
/* files                                                               */
/* ------------------------------------------------------------------ */

static void test_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_config_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/rxd.conf", dir);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("listen = 0.0.0.0:9000\n[limits]\nbody = 2m\n", f);
    fclose(f);

    kn_config *c = NULL;
    char err[512] = "untouched";
    assert_int_equal(kn_config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(kn_config_path(c), path);
    assert_string_equal(kn_config_get(c, "listen"), "0.0.0.0:9000");
    long long v = 0;
    assert_int_equal(kn_config_size(c, "limits.body", 0, &v), 0);
    assert_int_equal(v, 2 << 20);
    char buf[300], want[300];
    snprintf(want, sizeof want, "%s:3", path);
    assert_string_equal(kn_config_origin(c, "limits.body", buf, sizeof buf), want);
    kn_config_free(c);

    /* Parse errors name the file. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("a = 1\na = 2\n", f);
    fclose(f);
    c = (kn_config *)&c;
    assert_int_equal(kn_config_load(&c, path, err, sizeof err), RX_EEXIST);
    assert_null(c);
    snprintf(want, sizeof want, "%s:2: 'a' already set at line 1", path);
    assert_string_equal(err, want);

    /* A directory is not a config file. */
    c = (kn_config *)&c;
    assert_int_equal(kn_config_load(&c, dir, err, sizeof err), RX_EINVAL);
    assert_null(c);
    snprintf(want, sizeof want, "%s: Is a directory", dir);
    assert_string_equal(err, want);

    assert_int_equal(unlink(path), 0);
    c = (kn_config *)&c;
    assert_int_equal(kn_config_load(&c, path, err, sizeof err), RX_ENOENT);
    assert_null(c);
    snprintf(want, sizeof want, "%s: No such file or directory", path);
    assert_string_equal(err, want);
    assert_int_equal(rmdir(dir), 0);
}

static void test_load_large_file(void **state)
{
    (void)state;
    /* Bigger than one read buffer, to cover the growing read loop. */
    char path[] = "/tmp/test_config_big_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    for (int i = 0; i < 2000; i++)
        fprintf(f, "key%d = %0100d\n", i, i);
    fclose(f);
    kn_config *c = NULL;
    char err[256];
    assert_int_equal(kn_config_load(&c, path, err, sizeof err), 0);
    assert_int_equal(kn_config_file_count(c), 2000);
    long long v = 0;
    assert_int_equal(kn_config_int(c, "key1999", 0, &v), 0);
    assert_int_equal(v, 1999);
    kn_config_free(c);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_and_sections),
        cmocka_unit_test(test_section_switch_and_reopen),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_quoting_errors),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_bom_and_empty_input),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_error_buffer_edges),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_env_wins_and_is_captured_once),
        cmocka_unit_test(test_env_empty_value_and_typed),
        cmocka_unit_test(test_env_names_are_exact),
        cmocka_unit_test(test_env_duplicate_names),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_split_list),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_load_large_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
