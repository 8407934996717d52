/* test_json.c -- strict UTF-8 and JSON object parsing, typed field access errors. */
#include "evalbus/json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef struct utf8_case {
    const char *bytes;
    size_t len;
    bool valid;
} utf8_case;

/* Quoting part of a name, and a message cut to its buffer, never end inside a character. */
static void test_utf8_cuts(void **state)
{
    char buf[16], big[600];
    const char *euro = "ab\xe2\x82\xac"; /* a, b, the euro sign (3 bytes) */

    (void)state;
    assert_int_equal(eb_utf8_prefix_len(euro, 2), 2);
    assert_int_equal(eb_utf8_prefix_len(euro, 3), 2); /* inside the euro sign: before it */
    assert_int_equal(eb_utf8_prefix_len(euro, 4), 2);
    assert_int_equal(eb_utf8_prefix_len(euro, 5), 5);
    assert_int_equal(eb_utf8_prefix_len(euro, 100), 5);
    for (size_t cut = 0; cut <= 5; cut++) {
        snprintf(buf, sizeof buf, "%.*s", (int)cut, euro);
        eb_utf8_trim_cut(buf);
        assert_true(eb_utf8_valid(buf, strlen(buf)));
        assert_int_equal(strlen(buf), cut < 5 ? (cut < 2 ? cut : 2) : 5);
    }
    strcpy(buf, "x\xf0\x9f\x98\x80"); /* a whole emoji stays */
    eb_utf8_trim_cut(buf);
    assert_int_equal(strlen(buf), 5);
    /* eb_error's buffer (512 bytes) ends inside a character: it is dropped */
    memset(big, 'a', 510);
    strcpy(big + 510, "\xe2\x82\xac tail");
    eb_error(EB_ERR_INVALID, "%s", big);
    assert_int_equal(strlen(eb_error_message()), 510);
    assert_true(eb_utf8_valid(eb_error_message(), strlen(eb_error_message())));
}

static void test_utf8(void **state)
{
    static const utf8_case cases[] = {
        {"plain ascii", 11, true},
        {"caf\xc3\xa9", 5, true},
        {"\xe2\x82\xac", 3, true},      /* euro sign */
        {"\xf0\x9f\x98\x80", 4, true},  /* emoji */
        {"\xc3", 1, false},             /* truncated */
        {"\xc0\xaf", 2, false},         /* overlong '/' */
        {"\xe0\x80\xaf", 3, false},     /* overlong */
        {"\xed\xa0\x80", 3, false},     /* surrogate */
        {"\xf4\x90\x80\x80", 4, false}, /* above U+10FFFF */
        {"\xff", 1, false},
        {"\x80", 1, false}, /* lone continuation */
        {"ok\xe2\x82", 4, false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (eb_utf8_valid(cases[i].bytes, cases[i].len) != cases[i].valid)
            fail_msg("case %zu: expected %s", i, cases[i].valid ? "valid" : "invalid");
    /* long ASCII runs (read eight bytes at a time) with a bad or good sequence at every offset
     * and every alignment, and bytes past n never read */
    for (size_t at = 0; at < 40; at++) {
        for (size_t start = 0; start < 8; start++) {
            char buf[64];
            memset(buf, 'a', sizeof(buf));
            buf[start + at] = (char)0xff;
            if (eb_utf8_valid(buf + start, 48))
                fail_msg("0xff at %zu (start %zu) passed", at, start);
            if (!eb_utf8_valid(buf + start, at))
                fail_msg("the %zu ASCII bytes before it failed", at);
            memcpy(buf + start + at, "\xc3\xa9", 2);
            if (!eb_utf8_valid(buf + start, 48))
                fail_msg("e-acute at %zu (start %zu) failed", at, start);
            buf[start + at + 1] = 'a'; /* truncated sequence */
            if (eb_utf8_valid(buf + start, 48))
                fail_msg("a truncated sequence at %zu passed", at);
        }
    }
}

typedef struct parse_case {
    const char *body;
    eb_status st;
    const char *mention;
} parse_case;

static void test_parse_object(void **state)
{
    static const parse_case cases[] = {
        {"{\"a\":1}", EB_OK, NULL},
        {"  {\"a\":1}  \n", EB_OK, NULL},
        {"", EB_ERR_INVALID, "empty"},
        {"[1,2]", EB_ERR_INVALID, "object"},
        {"\"s\"", EB_ERR_INVALID, "object"},
        {"{\"a\":", EB_ERR_INVALID, "malformed"},
        {"{\"a\":1} {}", EB_ERR_INVALID, "after"},
        {"{\"a\":\"\xff\"}", EB_ERR_INVALID, "UTF-8"},
        {"{\"a\":\"x\\u0000y\"}", EB_ERR_INVALID, "NUL"},
        {"{\"a\":\"x\\\\u0000y\"}", EB_OK, NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *o = NULL;
        eb_status st = eb_json_parse_object(cases[i].body, strlen(cases[i].body), &o);
        if (st != cases[i].st)
            fail_msg("case %zu: status %s", i, eb_status_str(st));
        if (cases[i].mention && !strstr(eb_error_message(), cases[i].mention))
            fail_msg("case %zu: message '%s' lacks '%s'", i, eb_error_message(), cases[i].mention);
        if (st == EB_OK)
            assert_non_null(o);
        else
            assert_null(o);
        cJSON_Delete(o);
    }
}

/* An escaped surrogate that is not half of a pair (a string cut inside an emoji, as
 * JSON.stringify writes it) becomes U+FFFD; pairs, escaped backslashes before "u", other
 * escapes and the rest of the text stay as they are. */
static void test_lone_surrogates(void **state)
{
    static const struct {
        const char *body, *want;
    } cases[] = {
        {"{\"a\":\"Sure! \\ud83d\"}", "Sure! \xef\xbf\xbd"},
        {"{\"a\":\"\\udc00x\"}", "\xef\xbf\xbdx"},
        {"{\"a\":\"\\ud83d\\u0041\"}", "\xef\xbf\xbd"
                                       "A"},
        {"{\"a\":\"\\ud83d\\ud83d\\ude00\"}", "\xef\xbf\xbd\xf0\x9f\x98\x80"},
        {"{\"a\":\"\\uD83D\\uDE00 ok\"}", "\xf0\x9f\x98\x80 ok"},
        {"{\"a\":\"\\\\ud83d\"}", "\\ud83d"},
        {"{\"a\":\"\\ude00\\ud83d\"}", "\xef\xbf\xbd\xef\xbf\xbd"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *o = NULL;
        eb_status st = eb_json_parse_object(cases[i].body, strlen(cases[i].body), &o);
        const cJSON *a;

        if (st != EB_OK)
            fail_msg("case %zu: %s", i, eb_error_message());
        a = cJSON_GetObjectItemCaseSensitive(o, "a");
        assert_true(cJSON_IsString(a));
        if (strcmp(a->valuestring, cases[i].want) != 0)
            fail_msg("case %zu: '%s', want '%s'", i, a->valuestring, cases[i].want);
        cJSON_Delete(o);
    }
    /* the rewrite does not hide an escaped NUL after it, nor a number out of range */
    {
        cJSON *o = NULL;
        const char nul[] = "{\"a\":\"\\ud83d\",\"b\":\"\\u0000\"}";
        const char big[] = "{\"a\":\"\\ud83d\",\"b\":1e999999}";

        assert_int_equal(eb_json_parse_object(nul, strlen(nul), &o), EB_ERR_INVALID);
        assert_non_null(strstr(eb_error_message(), "NUL"));
        assert_int_equal(eb_json_parse_object(big, strlen(big), &o), EB_ERR_INVALID);
        assert_non_null(strstr(eb_error_message(), "out of range"));
        assert_null(o);
    }
}

static void test_nul_inside_body(void **state)
{
    const char body[] = "{\"a\":1}\0junk";
    cJSON *o = NULL;

    (void)state;
    assert_int_equal(eb_json_parse_object(body, sizeof(body) - 1, &o), EB_ERR_INVALID);
}

/* Nesting beyond what cJSON takes is named as such, not called malformed; "[" inside strings does
 * not count. */
static void test_too_deep(void **state)
{
    enum { DEEP = 1500 };
    char body[2 * DEEP + 64];
    size_t n = 0;
    cJSON *o = NULL;

    (void)state;
    n += (size_t)snprintf(body, sizeof body, "{\"s\":\"[[[[{{\",\"a\":");
    for (int i = 0; i < DEEP; i++)
        body[n++] = '[';
    for (int i = 0; i < DEEP; i++)
        body[n++] = ']';
    body[n++] = '}';
    assert_int_equal(eb_json_parse_object(body, n, &o), EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "nests deeper than 1000"));
    assert_int_equal(eb_json_parse_object("{\"s\":\"[[[[\",", strlen("{\"s\":\"[[[[\","), &o),
                     EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "malformed JSON"));
    n = (size_t)snprintf(body, sizeof body, "{\"s\":\"[[[[{{\",\"a\":");
    for (int i = 0; i < 500; i++)
        body[n++] = '[';
    for (int i = 0; i < 500; i++)
        body[n++] = ']';
    body[n++] = '}';
    assert_int_equal(eb_json_parse_object(body, n, &o), EB_OK);
    cJSON_Delete(o);
}

static void test_fields(void **state)
{
    cJSON *o = cJSON_Parse("{\"s\":\"abc\",\"n\":3,\"f\":1.5,\"e\":\"\",\"arr\":[\"x\",\"y\"],"
                           "\"bad\":[1],\"nul\":null}");
    const char *s = NULL;
    const cJSON *arr = NULL;
    double d = 0;

    (void)state;
    assert_int_equal(eb_json_string(o, "s", true, 10, &s), EB_OK);
    assert_string_equal(s, "abc");
    assert_int_equal(eb_json_string(o, "s", true, 2, &s), EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "'s'"));
    assert_int_equal(eb_json_string(o, "n", true, 10, &s), EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "must be a string"));
    assert_int_equal(eb_json_string(o, "missing", true, 10, &s), EB_ERR_INVALID);
    assert_int_equal(eb_json_string(o, "missing", false, 10, &s), EB_OK);
    assert_null(s);
    assert_int_equal(eb_json_string(o, "nul", false, 10, &s), EB_OK);
    assert_null(s);
    assert_int_equal(eb_json_string(o, "e", true, 10, &s), EB_ERR_INVALID);
    assert_int_equal(eb_json_string_array(o, "arr", true, 5, 5, &arr), EB_OK);
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    assert_int_equal(eb_json_string_array(o, "arr", true, 1, 5, &arr), EB_ERR_INVALID);
    assert_int_equal(eb_json_string_array(o, "bad", true, 5, 5, &arr), EB_ERR_INVALID);
    assert_int_equal(eb_json_number(o, "n", true, true, 0, 10, &d), EB_OK);
    assert_true(d == 3);
    assert_int_equal(eb_json_number(o, "f", true, true, 0, 10, &d), EB_ERR_INVALID);
    assert_int_equal(eb_json_number(o, "n", true, false, 4, 10, &d), EB_ERR_INVALID);
    assert_int_equal(eb_json_number(o, "s", true, false, 0, 10, &d), EB_ERR_INVALID);
    cJSON_Delete(o);
}

static void test_rfc3339(void **state)
{
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"2026-11-22T10:00:00Z", true},
        {"2026-11-22T10:00:01.25Z", true},
        {"2026-11-22t10:00:00z", true},
        {"2026-11-22T10:00:00+05:30", true},
        {"2026-11-22T10:00:00-08:00", true},
        {"2026-11-22T10:00:00+14:00", true},
        {"2026-11-22T10:00:00-15:59", true},
        {"2026-11-22T10:00:00+16:00", false},
        {"2026-11-22T10:00:00-23:59", false},
        {"tomorrow", false},
        {"2026-11-22", false},
        {"2026-11-22 10:00:00Z", false},
        {"2026-13-01T00:00:00Z", false},
        {"2026-11-22T24:00:00Z", false},
        {"2026-11-22T10:00:00", false},
        {"2026-11-22T10:00:00.Z", false},
        {"2026-11-22T10:00:00+0530", false},
        {"2026-11-22T10:00:00Zjunk", false},
        {"2024-02-29T00:00:00Z", true},
        {"2000-02-29T00:00:00Z", true},
        {"2026-02-29T00:00:00Z", false},
        {"1900-02-29T00:00:00Z", false},
        {"2024-02-30T00:00:00Z", false},
        {"2026-04-31T00:00:00Z", false},
        {"2026-12-31T23:59:59Z", true},
        {"0000-01-01T00:00:00Z", false},
        {"2026-11-22T10:00:60Z", false}, /* no leap seconds: PostgreSQL would make it 10:01 */
        /* any number of fraction digits (finer ones are cut off), up to 64 characters */
        {"2026-11-22T10:00:00.123456789012345678901234567890123456789Z", true},
        {"2026-11-22T10:00:00.1234567890123456789012345678901234567890123456+01:00", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (eb_rfc3339_valid(cases[i].s) != cases[i].ok)
            fail_msg("'%s' should be %s", cases[i].s, cases[i].ok ? "valid" : "invalid");
}

/* Numbers a double cannot hold exactly print as they were written; others as before. */
static void test_exact_numbers(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"{\"id\":1234567890123456789}", "{\"id\":1234567890123456789}"},
        {"{\"n\":-9007199254740993,\"m\":9007199254740993.5}",
         "{\"n\":-9007199254740993,\"m\":9007199254740993.5}"},
        {"{\"p\":3.14159265358979323846264338327950288}",
         "{\"p\":3.14159265358979323846264338327950288}"},
        {"{\"big\":1e330,\"tiny\":2.5E-320,\"z\":0e-20000}",
         "{\"big\":1e330,\"tiny\":2.5E-320,\"z\":0}"},
        /* the magnitude counts the digits before the exponent */
        {"{\"a\":100000000000e300,\"b\":0.00000000001e-300}",
         "{\"a\":100000000000e300,\"b\":0.00000000001e-300}"},
        /* a string holding digits, escaped quotes before numbers, numbers in nested arrays */
        {"{\"s\":\"12345678901234567890 \\\"\",\"a\":[1,[2.50,12345678901234567890],"
         "{\"k\":true}],\"z\":0.1}",
         "{\"s\":\"12345678901234567890 \\\"\",\"a\":[1,[2.5,12345678901234567890],"
         "{\"k\":true}],\"z\":0.1}"},
        /* up to 15 significant digits: read into the double, printed from it */
        {"{\"x\":1.50,\"y\":000.000000000000000000001e0}", "{\"x\":1.5,\"y\":1e-21}"},
        {"{\"x\":123456789012345}", "{\"x\":123456789012345}"},
        {"{\"x\":-0.0000000000000000000012345678901234567}",
         "{\"x\":-0.0000000000000000000012345678901234567}"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *o = NULL;
        char *printed;
        eb_status st = eb_json_parse_object(cases[i].in, strlen(cases[i].in), &o);

        if (st != EB_OK) {
            fail_msg("%s: %s", cases[i].in, eb_error_message());
        }
        printed = eb_json_print(o);
        if (strcmp(printed, cases[i].out) != 0)
            fail_msg("%s printed as %s, expected %s", cases[i].in, printed, cases[i].out);
        free(printed);
        cJSON_Delete(o);
    }
}

/* Stored text: any value, exact numbers, whitespace around it; nothing after it; by length. */
static void test_parse_text(void **state)
{
    static const struct {
        const char *in, *out; /* out NULL: not JSON */
    } cases[] = {
        {" {\"id\": 1234567890123456789}\n", "{\"id\":1234567890123456789}"},
        {"[1, 2.50]", "[1,2.5]"},
        {"\"text\"", "\"text\""},
        {"12345678901234567890", "12345678901234567890"},
        {"null", "null"},
        {"\f[1]\v", "[1]"}, /* cJSON skips any byte up to 0x20 before a value: after it too */
        {"{\"a\":1} x", NULL},
        {"{\"a\":1}{}", NULL},
        {"{\"a\":", NULL},
        {"", NULL},
    };
    cJSON *v;
    char *printed;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        v = eb_json_parse_text(cases[i].in, strlen(cases[i].in));
        if (!cases[i].out) {
            if (v)
                fail_msg("'%s' was taken as JSON", cases[i].in);
            continue;
        }
        if (!v)
            fail_msg("'%s' was not taken as JSON", cases[i].in);
        printed = eb_json_print(v);
        if (strcmp(printed, cases[i].out) != 0)
            fail_msg("'%s' printed as %s, expected %s", cases[i].in, printed, cases[i].out);
        free(printed);
        cJSON_Delete(v);
    }
    /* only text[0..n) is read: what follows (no NUL, here) is not part of it */
    v = eb_json_parse_text("{\"n\":12345678901234567890}garbage", 26);
    assert_non_null(v);
    printed = eb_json_print(v);
    assert_string_equal(printed, "{\"n\":12345678901234567890}");
    free(printed);
    cJSON_Delete(v);
}

/* Numbers beyond the limits are refused, naming where they are; zero is never out of range. */
static void test_numbers_out_of_range(void **state)
{
    static const char *const refused[] = {
        "{\"a\":1e331}",
        "{\"a\":-1E+331}",
        "{\"a\":1e-331}",
        "{\"a\":[1,{\"b\":1000e328}]}",
        "{\"a\":0.0001e-327}",
        "{\"a\":1.e400}", /* a form cJSON takes */
        "{\"a\":1e99999999999999}",
    };
    char digits[1100];
    cJSON *o = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        o = NULL;
        if (eb_json_parse_object(refused[i], strlen(refused[i]), &o) != EB_ERR_INVALID)
            fail_msg("%s was taken", refused[i]);
        assert_null(o);
        assert_non_null(strstr(eb_error_message(), "out of range"));
    }
    o = NULL;
    assert_int_equal(eb_json_parse_object("{\"s\":\"x\",\"a\":1e331}", 19, &o), EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "at byte 13"));
    /* 1000 significant digits are kept, 1001 are not: 7.77...7 */
    memcpy(digits, "{\"a\":7.", 7);
    memset(digits + 7, '7', 999);
    memcpy(digits + 1006, "}", 2);
    assert_int_equal(eb_json_parse_object(digits, strlen(digits), &o), EB_OK);
    {
        char *printed = eb_json_print(o);
        assert_string_equal(printed, digits);
        free(printed);
    }
    cJSON_Delete(o);
    memcpy(digits + 1006, "7}", 3);
    assert_int_equal(eb_json_parse_object(digits, strlen(digits), &o), EB_ERR_INVALID);
    assert_int_equal(eb_json_parse_object("{\"a\":0e-99999,\"b\":-0.000}", 25, &o), EB_OK);
    cJSON_Delete(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_utf8_cuts),
        cmocka_unit_test(test_parse_object),
        cmocka_unit_test(test_nul_inside_body),
        cmocka_unit_test(test_lone_surrogates),
        cmocka_unit_test(test_too_deep),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_exact_numbers),
        cmocka_unit_test(test_parse_text),
        cmocka_unit_test(test_numbers_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
