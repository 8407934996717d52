/* test_config.c -- the settings loader: defaults, environment, *_FILE, flags, files, and the
 * errors for bad values (each must name the setting). */
#include "evalbus/config.h"
#include "evalbus/http.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* argv strings: -Wwrite-strings makes literals const */
#define S(x) ((char *)(x))

typedef struct cfg {
    char *name;
    long long port;
    bool flag;
    long long timeout_ms;
    long long body;
    double ratio;
    char *secret;
} cfg;

static const eb_setting tab[] = {
    {"name", "EBT_NAME", EB_SET_STRING, "svc", 0, 0, false, offsetof(cfg, name), "a name"},
    {"port", "EBT_PORT", EB_SET_INT, "8080", 1, 65535, false, offsetof(cfg, port), "a port"},
    {"flag", "EBT_FLAG", EB_SET_BOOL, "false", 0, 0, false, offsetof(cfg, flag), "a flag"},
    {"timeout", "EBT_TIMEOUT", EB_SET_DURATION, "2s", 0, 60000, false, offsetof(cfg, timeout_ms),
     "a duration"},
    {"body", "EBT_BODY", EB_SET_SIZE, "1MiB", 1, 1073741824.0, false, offsetof(cfg, body),
     "a size"},
    {"ratio", "EBT_RATIO", EB_SET_DOUBLE, "0.5", 0, 1, false, offsetof(cfg, ratio), "a ratio"},
    {"secret", "EBT_SECRET", EB_SET_STRING, NULL, 0, 0, true, offsetof(cfg, secret), "secret"},
};
#define NTAB (sizeof(tab) / sizeof(tab[0]))

static void clear_env(void)
{
    const char *vars[] = {"EBT_NAME",      "EBT_PORT",      "EBT_FLAG",   "EBT_TIMEOUT",
                          "EBT_BODY",      "EBT_RATIO",     "EBT_SECRET", "EBT_SECRET_FILE",
                          "EBT_PORT_FILE", "EVALBUS_CONFIG"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static void test_defaults(void **state)
{
    cfg c = {0};

    (void)state;
    assert_int_equal(eb_config_load(tab, NTAB, &c, 0, NULL, NULL), EB_OK);
    assert_string_equal(c.name, "svc");
    assert_int_equal(c.port, 8080);
    assert_false(c.flag);
    assert_int_equal(c.timeout_ms, 2000);
    assert_int_equal(c.body, 1048576);
    assert_true(c.ratio > 0.49 && c.ratio < 0.51);
    assert_string_equal(c.secret, "");
    eb_config_free(tab, NTAB, &c);
    assert_null(c.name);
}

static void test_env_then_flags(void **state)
{
    cfg c = {0};
    char *argv[] = {S("prog"), S("--port=9000"), S("--flag"), S("--name"), S("fromflag"), NULL};

    (void)state;
    setenv("EBT_PORT", "7000", 1);
    setenv("EBT_NAME", "fromenv", 1);
    setenv("EBT_TIMEOUT", "250ms", 1);
    assert_int_equal(eb_config_load(tab, NTAB, &c, 5, argv, NULL), EB_OK);
    assert_int_equal(c.port, 9000);          /* flag beats environment */
    assert_string_equal(c.name, "fromflag"); /* flag with a separate value */
    assert_true(c.flag);                     /* bare boolean flag */
    assert_int_equal(c.timeout_ms, 250);     /* environment beats default */
    eb_config_free(tab, NTAB, &c);
}

static void test_file_secret(void **state)
{
    cfg c = {0};
    char path[] = "/tmp/ebt_secretXXXXXX";
    int fd = mkstemp(path);

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "s3cr3t-value\n", 13), 13);
    close(fd);
    setenv("EBT_SECRET", "from-env", 1);
    setenv("EBT_SECRET_FILE", path, 1);
    assert_int_equal(eb_config_load(tab, NTAB, &c, 0, NULL, NULL), EB_OK);
    assert_string_equal(c.secret, "s3cr3t-value"); /* _FILE wins, trailing newline trimmed */
    eb_config_free(tab, NTAB, &c);
    unlink(path);
    assert_int_equal(eb_config_load(tab, NTAB, &c, 0, NULL, NULL), EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "secret"));
    eb_config_free(tab, NTAB, &c);
}

static void test_settings_file(void **state)
{
    cfg c = {0};
    char path[] = "/tmp/ebt_confXXXXXX";
    int fd = mkstemp(path);
    const char text[] = "# comment\nport = 1234\n\nbody = 64KiB\n";
    char *argv[] = {S("prog"), S("--config"), path, NULL};

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    assert_int_equal(eb_config_load(tab, NTAB, &c, 3, argv, NULL), EB_OK);
    assert_int_equal(c.port, 1234);
    assert_int_equal(c.body, 65536);
    eb_config_free(tab, NTAB, &c);
    unlink(path);
}

typedef struct bad_case {
    const char *env;
    const char *value;
    const char *must_mention;
} bad_case;

static void test_bad_values(void **state)
{
    static const bad_case cases[] = {
        {"EBT_PORT", "99999", "port"},     {"EBT_PORT", "80x", "port"},
        {"EBT_PORT", "", "port"},          {"EBT_PORT", "0", "port"},
        {"EBT_FLAG", "maybe", "flag"},     {"EBT_TIMEOUT", "5 s", "timeout"},
        {"EBT_TIMEOUT", "-1s", "timeout"}, {"EBT_TIMEOUT", "2m", "timeout"},
        {"EBT_BODY", "10XB", "body"},      {"EBT_BODY", "0", "body"},
        {"EBT_RATIO", "1.5", "ratio"},     {"EBT_RATIO", "nan", "ratio"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cfg c = {0};
        clear_env();
        setenv(cases[i].env, cases[i].value, 1);
        assert_int_equal(eb_config_load(tab, NTAB, &c, 0, NULL, NULL), EB_ERR_INVALID);
        if (!strstr(eb_error_message(), cases[i].must_mention) ||
            !strstr(eb_error_message(), cases[i].env))
            fail_msg("%s=%s: message does not name the setting: %s", cases[i].env, cases[i].value,
                     eb_error_message());
        eb_config_free(tab, NTAB, &c);
    }
}

static void test_secret_not_echoed(void **state)
{
    static const eb_setting stab[] = {
        {"pw", "EBT_PORT", EB_SET_INT, "1", 0, 0, true, offsetof(cfg, port), "secret int"},
    };
    cfg c = {0};

    (void)state;
    setenv("EBT_PORT", "hunter2", 1);
    assert_int_equal(eb_config_load(stab, 1, &c, 0, NULL, NULL), EB_ERR_INVALID);
    assert_null(strstr(eb_error_message(), "hunter2"));
    assert_non_null(strstr(eb_error_message(), "pw"));
}

static void test_unknown_flag_and_help(void **state)
{
    cfg c = {0};
    char *bad[] = {S("prog"), S("--nope=1"), NULL};
    char *help[] = {S("prog"), S("--help"), NULL};
    char *positional[] = {S("prog"), S("stray"), NULL};
    bool h = false;

    (void)state;
    assert_int_equal(eb_config_load(tab, NTAB, &c, 2, bad, NULL), EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "nope"));
    eb_config_free(tab, NTAB, &c);
    assert_int_equal(eb_config_load(tab, NTAB, &c, 2, help, &h), EB_OK);
    assert_true(h);
    eb_config_free(tab, NTAB, &c);
    assert_int_equal(eb_config_load(tab, NTAB, &c, 2, positional, NULL), EB_ERR_INVALID);
    eb_config_free(tab, NTAB, &c);
}

static void test_parsers(void **state)
{
    long long v = 0;

    (void)state;
    assert_true(eb_parse_duration_ms("1.5s", &v) && v == 1500);
    assert_true(eb_parse_duration_ms("3", &v) && v == 3);
    assert_true(eb_parse_duration_ms("1h", &v) && v == 3600000);
    assert_true(eb_parse_duration_ms("7d", &v) && v == 604800000);
    assert_false(eb_parse_duration_ms("s", &v));
    assert_false(eb_parse_duration_ms("1w", &v));
    assert_true(eb_parse_size("10MiB", &v) && v == 10485760);
    assert_true(eb_parse_size("2GB", &v) && v == 2000000000);
    assert_false(eb_parse_size("-1", &v));
    assert_false(eb_parse_size("1e30GiB", &v));
    /* query parameter counts: digits only, in range */
    assert_true(eb_http_parse_count("500", 1, 500, &v) && v == 500);
    assert_true(eb_http_parse_count("0007", 1, 500, &v) && v == 7);
    assert_true(eb_http_parse_count("9223372036854775807", 1, LLONG_MAX, &v) && v == LLONG_MAX);
    assert_false(eb_http_parse_count("9223372036854775808", 1, LLONG_MAX, &v));
    assert_false(eb_http_parse_count("501", 1, 500, &v));
    assert_false(eb_http_parse_count("0", 1, 500, &v));
    assert_false(eb_http_parse_count(" 5", 1, 500, &v));
    assert_false(eb_http_parse_count("+5", 1, 500, &v));
    assert_false(eb_http_parse_count("-5", 1, 500, &v));
    assert_false(eb_http_parse_count("5 ", 1, 500, &v));
    assert_false(eb_http_parse_count("", 1, 500, &v));
    assert_false(eb_http_parse_count(NULL, 1, 500, &v));
}

/* The items of a comma-separated list, joined with '|' ("" when there is none). */
static void list_items(const char *list, char *out, size_t outlen)
{
    const char *item;
    size_t len, used = 0;
    bool first = true;

    out[0] = '\0';
    for (const char *p = list && *list ? list : NULL; p; first = false) {
        p = eb_list_item(p, &item, &len);
        used +=
            (size_t)snprintf(out + used, outlen - used, "%s%.*s", first ? "" : "|", (int)len, item);
    }
}

static void test_list_items(void **state)
{
    static const char *const cases[][2] = {
        {"", ""},
        {"a", "a"},
        {" a ,\tb\t", "a|b"},
        {"a,", "a|"},
        {",a", "|a"},
        {"a,,b", "a||b"},
        {" ", ""},
        {"10.0.0.0/8, ::1", "10.0.0.0/8|::1"},
    };
    char out[64];

    (void)state;
    list_items(NULL, out, sizeof out);
    assert_string_equal(out, "");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        list_items(cases[i][0], out, sizeof out);
        if (strcmp(out, cases[i][1]) != 0)
            fail_msg("'%s': got '%s', want '%s'", cases[i][0], out, cases[i][1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_env_then_flags, setup),
        cmocka_unit_test_setup(test_file_secret, setup),
        cmocka_unit_test_setup(test_settings_file, setup),
        cmocka_unit_test_setup(test_bad_values, setup),
        cmocka_unit_test_setup(test_secret_not_echoed, setup),
        cmocka_unit_test_setup(test_unknown_flag_and_help, setup),
        cmocka_unit_test_setup(test_parsers, setup),
        cmocka_unit_test(test_list_items),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
