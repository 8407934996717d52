/* test_password.c -- unit tests for services/auth/password.c.
 * Hashing uses the cheapest accepted cost (ln=10, r=1) to stay fast. Covers the round trip, the
 * encoded format, salting, length limits, parameter bounds, and a table of malformed or
 * out-of-bound stored strings that must never match (none of them may cost real work). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "password.h"
#include "evalbus/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAST ((password_params){10, 1, 1})
#define PW "correct horse battery staple"

static void test_round_trip(void **state)
{
    char *enc = NULL;

    (void)state;
    assert_int_equal(password_hash(PW, FAST, &enc), EB_OK);
    assert_non_null(enc);
    assert_true(password_verify(PW, enc));
    assert_false(password_verify("correct horse battery stapler", enc));
    assert_false(password_verify("Correct horse battery staple", enc));
    assert_false(password_verify("", enc));
    free(enc);
}

static void test_encoded_format(void **state)
{
    char *enc = NULL;
    char salt[64], key[64];
    int ln, r, p, used = 0;

    (void)state;
    assert_int_equal(password_hash(PW, (password_params){11, 2, 1}, &enc), EB_OK);
    assert_int_equal(sscanf(enc, "$scrypt$ln=%d,r=%d,p=%d$%63[A-Za-z0-9_-]$%63[A-Za-z0-9_-]%n", &ln,
                            &r, &p, salt, key, &used),
                     5);
    assert_int_equal((size_t)used, strlen(enc));
    assert_int_equal(ln, 11);
    assert_int_equal(r, 2);
    assert_int_equal(p, 1);
    assert_int_equal(strlen(salt), 22); /* 16 bytes */
    assert_int_equal(strlen(key), 43);  /* 32 bytes */
    assert_true(password_verify(PW, enc));
    free(enc);
}

static void test_salted(void **state)
{
    char *a = NULL, *b = NULL;

    (void)state;
    assert_int_equal(password_hash(PW, FAST, &a), EB_OK);
    assert_int_equal(password_hash(PW, FAST, &b), EB_OK);
    assert_string_not_equal(a, b);
    assert_true(password_verify(PW, a));
    assert_true(password_verify(PW, b));
    free(a);
    free(b);
}

static void test_length_limits(void **state)
{
    char *enc = NULL;
    char *long_pw = malloc(PASSWORD_MAX_LEN + 2);

    (void)state;
    assert_non_null(long_pw);
    assert_int_equal(password_hash("1234567", FAST, &enc), EB_ERR_INVALID); /* 7 bytes */
    assert_null(enc);
    assert_int_equal(password_hash("", FAST, &enc), EB_ERR_INVALID);
    assert_int_equal(password_hash(NULL, FAST, &enc), EB_ERR_INVALID);

    memset(long_pw, 'x', PASSWORD_MAX_LEN + 1);
    long_pw[PASSWORD_MAX_LEN + 1] = '\0';
    assert_int_equal(password_hash(long_pw, FAST, &enc), EB_ERR_INVALID);
    assert_null(enc);

    long_pw[PASSWORD_MAX_LEN] = '\0'; /* exactly the maximum */
    assert_int_equal(password_hash(long_pw, FAST, &enc), EB_OK);
    assert_true(password_verify(long_pw, enc));
    long_pw[PASSWORD_MAX_LEN] = 'x'; /* one byte over never verifies */
    assert_false(password_verify(long_pw, enc));
    free(enc);
    enc = NULL;

    assert_int_equal(password_hash("12345678", FAST, &enc), EB_OK); /* exactly the minimum */
    assert_true(password_verify("12345678", enc));
    free(enc);
    free(long_pw);
}

static const password_params bad_params[] = {
    {9, 1, 1},   {21, 1, 1}, {0, 1, 1},  {-1, 1, 1},  {10, 0, 1}, {10, 17, 1},
    {10, -8, 1}, {10, 1, 0}, {10, 1, 5}, {20, 16, 1}, /* 2 GiB table: over the memory cap */
};

static void test_params_bounds(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_params / sizeof *bad_params; i++) {
        char *enc = NULL;

        if (password_hash(PW, bad_params[i], &enc) != EB_ERR_INVALID)
            fail_msg("params ln=%d r=%d p=%d accepted", bad_params[i].log2_n, bad_params[i].r,
                     bad_params[i].p);
        assert_null(enc);
    }
}

/* Stored strings that must never match. SALT and KEY are well-formed pieces (22 and 43
 * characters); each case breaks one thing. */
#define SALT "AAAAAAAAAAAAAAAAAAAAAA"
#define KEY "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static const char *const bad_encoded[] = {
    "",
    "$scrypt$",
    "$argon2id$v=19$m=65536,t=3,p=4$" SALT "$" KEY,
    "$scrypt$ln=10,r=1,p=1$" SALT,
    "$scrypt$ln=10,r=1,p=1$" SALT "$",
    "$scrypt$ln=10,r=1,p=1$$" KEY,
    "$scrypt$ln=10,r=1,p=1$" SALT "$" KEY "$",
    "$scrypt$ln=10,r=1,p=1$" SALT "$" KEY "A",
    "$scrypt$ln=10,r=1,p=1$" SALT "A$" KEY,
    "$scrypt$ln=10,r=1,p=1$" SALT "$" KEY "==",
    "$scrypt$ln=10,r=1,p=1$" SALT "$" KEY " ",
    "$scrypt$ln=10,r=1$" SALT "$" KEY,
    "$scrypt$r=1,ln=10,p=1$" SALT "$" KEY,
    "$scrypt$ln=010,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=+10,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=10 ,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=9,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=21,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=64,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=4294967306,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=10,r=0,p=1$" SALT "$" KEY,
    "$scrypt$ln=10,r=17,p=1$" SALT "$" KEY,
    "$scrypt$ln=10,r=-1,p=1$" SALT "$" KEY,
    "$scrypt$ln=10,r=1,p=5$" SALT "$" KEY,
    "$scrypt$ln=10,r=1,p=0$" SALT "$" KEY,
    "$scrypt$ln=20,r=16,p=4$" SALT "$" KEY, /* in per-field bounds, over the memory cap */
    "$SCRYPT$ln=10,r=1,p=1$" SALT "$" KEY,
    "$scrypt$ln=10,r=1,p=1$" SALT "$" KEY "\n",
};

static void test_malformed_never_match(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_encoded / sizeof *bad_encoded; i++)
        if (password_verify(PW, bad_encoded[i]))
            fail_msg("matched malformed \"%s\"", bad_encoded[i]);
    assert_false(password_verify(PW, NULL));
    assert_false(password_verify(NULL, "$scrypt$ln=10,r=1,p=1$" SALT "$" KEY));
}

/* Lax-parser traps: variants of a real hash for PW that a forgiving parser would still match. */
static void test_variants_of_real_hash_never_match(void **state)
{
    char *enc = NULL;
    const char *rest;
    char buf[512];

    (void)state;
    assert_int_equal(password_hash(PW, FAST, &enc), EB_OK);
    assert_true(password_verify(PW, enc));
    rest = enc + strlen("$scrypt$ln=10,r=1,p=1$"); /* "<salt>$<key>" */

    /* {text before, text after} the whole encoded string */
    const char *const wraps[][2] = {{"", "\n"}, {"", "$"}, {"", "="},
                                    {" ", ""},  {"", " "}, {"", "\t"}};
    for (size_t i = 0; i < sizeof wraps / sizeof *wraps; i++) {
        snprintf(buf, sizeof buf, "%s%s%s", wraps[i][0], enc, wraps[i][1]);
        if (password_verify(PW, buf))
            fail_msg("matched variant \"%s\"", buf);
    }
    /* other spellings of the same parameters in front of the real "<salt>$<key>" */
    const char *const param_forms[] = {
        "$scrypt$ln=010,r=1,p=1$", "$scrypt$ln=10,r=01,p=1$", "$scrypt$ln=10,r=1,p=1,$",
        "$scrypt$ln=10,p=1,r=1$",  "$scrypt$ln=10,r=1,p=1$$", "$scrypt$$ln=10,r=1,p=1$",
        "$scrypt$ln=10;r=1;p=1$",  "scrypt$ln=10,r=1,p=1$",   "$scrypt$ln=10,r=1,p=01$",
    };
    for (size_t i = 0; i < sizeof param_forms / sizeof *param_forms; i++) {
        snprintf(buf, sizeof buf, "%s%s", param_forms[i], rest);
        if (password_verify(PW, buf))
            fail_msg("matched variant \"%s\"", buf);
    }
    snprintf(buf, sizeof buf, "$scrypt$ln=10,r=1,p=1$%s", rest); /* control: same text matches */
    assert_true(password_verify(PW, buf));
    free(enc);
}

static void test_tampered_hash_fails(void **state)
{
    char *enc = NULL;
    size_t key_at, salt_at = strlen("$scrypt$ln=10,r=1,p=1$") + 3;
    char saved;

    (void)state;
    assert_int_equal(password_hash(PW, FAST, &enc), EB_OK);
    key_at = strlen(enc) - 5;
    /* change a character of the derived key, then of the salt, then raise the cost */
    saved = enc[key_at];
    enc[key_at] = saved == 'A' ? 'B' : 'A';
    assert_false(password_verify(PW, enc));
    enc[key_at] = saved;
    assert_true(password_verify(PW, enc));
    saved = enc[salt_at];
    enc[salt_at] = saved == 'A' ? 'B' : 'A';
    assert_false(password_verify(PW, enc));
    enc[salt_at] = saved;
    assert_true(password_verify(PW, enc));
    enc[strlen("$scrypt$ln=1")] = '1'; /* ln=10 -> ln=11 */
    assert_false(password_verify(PW, enc));
    free(enc);
}

static void test_overlong_encoded(void **state)
{
    char *enc = malloc(4096);

    (void)state;
    assert_non_null(enc);
    snprintf(enc, 4096, "$scrypt$ln=10,r=1,p=1$%s$%s", SALT, KEY);
    memset(enc + strlen(enc), 'A', 4096 - strlen(enc) - 1);
    enc[4095] = '\0';
    assert_false(password_verify(PW, enc));
    free(enc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encoded_format),
        cmocka_unit_test(test_salted),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_params_bounds),
        cmocka_unit_test(test_malformed_never_match),
        cmocka_unit_test(test_variants_of_real_hash_never_match),
        cmocka_unit_test(test_tampered_hash_fails),
        cmocka_unit_test(test_overlong_encoded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
