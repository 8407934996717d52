/* test_apikey.c -- unit tests for services/auth/apikey.c.
 * Generated keys: shape, prefix alphabet, a secret that decodes to 32 bytes, uniqueness over a
 * thousand keys. apikey_parse(): a table of near-miss shapes that must be refused. Hashing: a
 * fixed vector and agreement with SHA-256 of the whole string. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "apikey.h"
#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <stdlib.h>
#include <string.h>

#define A43 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define VALID_KEY "eb_abcdefgh23_" A43

static void test_generate_shape(void **state)
{
    (void)state;
    for (int n = 0; n < 100; n++) {
        char key[APIKEY_MAX], prefix[APIKEY_PREFIX_LEN + 1], parsed[APIKEY_PREFIX_LEN + 1];
        eb_buf secret = {0};

        apikey_generate(key, prefix);
        assert_int_equal(strlen(key), APIKEY_MAX - 1);
        assert_int_equal(strlen(prefix), APIKEY_PREFIX_LEN);
        assert_memory_equal(key, "eb_", 3);
        assert_memory_equal(key + 3, prefix, APIKEY_PREFIX_LEN);
        assert_int_equal(key[3 + APIKEY_PREFIX_LEN], '_');
        for (size_t i = 0; i < APIKEY_PREFIX_LEN; i++)
            assert_non_null(strchr("abcdefghijklmnopqrstuvwxyz234567", prefix[i]));
        assert_true(eb_base64url_decode(key + 4 + APIKEY_PREFIX_LEN, APIKEY_SECRET_LEN, &secret));
        assert_int_equal(secret.len, 32);
        eb_buf_free(&secret);

        assert_true(apikey_parse(key, parsed));
        assert_string_equal(parsed, prefix);
        assert_true(apikey_parse(key, NULL));
    }
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_generate_unique(void **state)
{
    enum { N = 1000 };
    char(*keys)[APIKEY_MAX] = calloc(N, sizeof *keys);
    char(*prefixes)[APIKEY_PREFIX_LEN + 1] = calloc(N, sizeof *prefixes);

    (void)state;
    assert_non_null(keys);
    assert_non_null(prefixes);
    for (size_t i = 0; i < N; i++)
        apikey_generate(keys[i], prefixes[i]);
    qsort(keys, N, sizeof *keys, cmp_key);
    for (size_t i = 1; i < N; i++)
        assert_string_not_equal(keys[i - 1], keys[i]);
    /* 50 bits of prefix: a collision among 1000 would mean a broken generator. */
    qsort(prefixes, N, sizeof *prefixes, cmp_key);
    for (size_t i = 1; i < N; i++)
        assert_string_not_equal(prefixes[i - 1], prefixes[i]);
    free(keys);
    free(prefixes);
}

struct parse_case {
    const char *name;
    const char *key;
    bool ok;
};

static const struct parse_case parse_cases[] = {
    {"valid", VALID_KEY, true},
    {"valid, last char carries zero bits",
     "eb_abcdefgh23_"
     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE",
     true},
    {"empty", "", false},
    {"tag missing", "abcdefgh23_" A43, false},
    {"wrong tag", "ek_abcdefgh23_" A43, false},
    {"uppercase tag", "EB_abcdefgh23_" A43, false},
    {"uppercase prefix", "eb_Abcdefgh23_" A43, false},
    {"prefix digit 1", "eb_abcdefgh21_" A43, false},
    {"prefix digit 8", "eb_abcdefgh28_" A43, false},
    {"prefix digit 0", "eb_0bcdefgh23_" A43, false},
    {"short prefix, long secret", "eb_abcdefgh2_" A43 "A", false},
    {"long prefix, short secret", "eb_abcdefgh234_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
     false},
    {"wrong separator", "eb_abcdefgh23-" A43, false},
    {"secret too short", "eb_abcdefgh23_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false},
    {"secret too long", "eb_abcdefgh23_" A43 "A", false},
    {"secret with '+'", "eb_abcdefgh23_+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false},
    {"secret with '='", "eb_abcdefgh23_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", false},
    {"secret not canonical", "eb_abcdefgh23_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", false},
    {"trailing newline", VALID_KEY "\n", false},
    {"leading space", " " VALID_KEY, false},
    {"bearer prefix", "Bearer " VALID_KEY, false},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof *parse_cases; i++) {
        const struct parse_case *c = &parse_cases[i];
        char prefix[APIKEY_PREFIX_LEN + 1] = "untouched";

        if (apikey_parse(c->key, prefix) != c->ok)
            fail_msg("%s: apikey_parse(\"%s\") should be %s", c->name, c->key,
                     c->ok ? "accepted" : "refused");
        if (c->ok)
            assert_string_equal(prefix, "abcdefgh23");
        else
            assert_string_equal(prefix, "untouched");
    }
    assert_false(apikey_parse(NULL, NULL));
}

static void test_hash(void **state)
{
    char out[65], want[65];
    char key[APIKEY_MAX], prefix[APIKEY_PREFIX_LEN + 1];

    (void)state;
    apikey_hash_hex(VALID_KEY, out);
    assert_string_equal(out, "f5cd77c8e1339e24b770411cc94726d2368cdc22342f33b6a2781288da4a2a1c");

    apikey_generate(key, prefix);
    apikey_hash_hex(key, out);
    eb_sha256_hex(key, strlen(key), want);
    assert_string_equal(out, want);
    assert_int_equal(strlen(out), 64);
    assert_null(strpbrk(out, "ABCDEF"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_shape),
        cmocka_unit_test(test_generate_unique),
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
