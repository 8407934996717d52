/* test_crypto.c -- unit tests for common/src/crypto.c.
 * Known-answer vectors for SHA-256 (FIPS 180-2 examples) and HMAC-SHA256 (RFC 4231 and the
 * GitHub webhook example), RFC 4648 base64 vectors in both alphabets, strict-decoder refusals,
 * constant-time equality, and UUID shape and uniqueness. Tables first, then the tests. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct sha_case {
    const char *msg;
    const char *hex;
};

static const struct sha_case sha_cases[] = {
    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
};

struct hmac_case {
    const char *name;
    unsigned char key[131];
    size_t klen;
    const char *msg;
    const char *hex;
};

static const struct hmac_case hmac_cases[] = {
    {"rfc4231 case 1",
     {0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b,
      0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b},
     20,
     "Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    {"rfc4231 case 2", "Jefe", 4, "what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {"github webhook", "It's a Secret to Everybody", 26, "Hello, World!",
     "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"},
    /* key 0xaa x 131 is filled in by the test (longer than the block: hashed first) */
    {"rfc4231 case 6",
     {0},
     131,
     "Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
};

struct b64_case {
    const char *raw;
    size_t rawlen;
    const char *url; /* unpadded base64url */
    const char *std; /* padded base64 */
};

static const struct b64_case b64_cases[] = {
    {"", 0, "", ""},
    {"f", 1, "Zg", "Zg=="},
    {"fo", 2, "Zm8", "Zm8="},
    {"foo", 3, "Zm9v", "Zm9v"},
    {"foob", 4, "Zm9vYg", "Zm9vYg=="},
    {"fooba", 5, "Zm9vYmE", "Zm9vYmE="},
    {"foobar", 6, "Zm9vYmFy", "Zm9vYmFy"},
    {"\xfb\xff", 2, "-_8", "+/8="},
    {"\x00\x00\x00", 3, "AAAA", "AAAA"},
    {"\xff\xff\xff\xff", 4, "_____w", "/////w=="},
};

static const char *const b64url_invalid[] = {
    "Z",        /* one character cannot carry a byte */
    "Zm9vY",    /* length 1 mod 4 */
    "Zg=",      /* padding is refused in base64url */
    "Zg==",     /* likewise */
    "Zh",       /* non-zero trailing bits (non-canonical) */
    "Zm9",      /* 'Zm8' is canonical for "fo"; '9' leaves bits set */
    "Zm9v Yg",  /* whitespace */
    "Zm9v\nYg", /* newline */
    "+_8",      /* standard alphabet character */
    "-/8",      /* standard alphabet character */
    "Zm9v*",    /* junk */
    "\xc3\xa9", /* non-ASCII */
};

static const char *const b64std_invalid[] = {
    "Zg",       /* missing padding */
    "Zg=",      /* short padding */
    "Z===",     /* too much padding */
    "====",     /* padding only */
    "Zh==",     /* non-canonical trailing bits */
    "Zg==Zg==", /* padding in the middle */
    "Zm=v",     /* padding in the middle */
    "-_8=",     /* url alphabet */
    "Zm9v\n",   /* newline */
};

static void hex_of(const char *hex, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char byte[3] = {hex[2 * i], hex[2 * i + 1], '\0'};
        out[i] = (unsigned char)strtoul(byte, NULL, 16);
    }
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof sha_cases / sizeof *sha_cases; i++) {
        unsigned char md[32], want[32];
        char hex[65];

        eb_sha256(sha_cases[i].msg, strlen(sha_cases[i].msg), md);
        hex_of(sha_cases[i].hex, want, sizeof want);
        assert_memory_equal(md, want, 32);
        eb_sha256_hex(sha_cases[i].msg, strlen(sha_cases[i].msg), hex);
        assert_string_equal(hex, sha_cases[i].hex);
    }
}

static void test_sha256_million_a(void **state)
{
    char *a = malloc(1000000);
    char hex[65];

    (void)state;
    assert_non_null(a);
    memset(a, 'a', 1000000);
    eb_sha256_hex(a, 1000000, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

static void test_hmac_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof hmac_cases / sizeof *hmac_cases; i++) {
        const struct hmac_case *c = &hmac_cases[i];
        unsigned char key[131];
        unsigned char mac[32];
        char hex[65];

        memcpy(key, c->key, sizeof key);
        if (strcmp(c->name, "rfc4231 case 6") == 0)
            memset(key, 0xaa, sizeof key);
        eb_hmac_sha256(key, c->klen, c->msg, strlen(c->msg), mac);
        eb_hex_encode(mac, sizeof mac, hex);
        if (strcmp(hex, c->hex) != 0)
            fail_msg("%s: got %s want %s", c->name, hex, c->hex);
    }
}

static void test_hmac_empty_key_and_message(void **state)
{
    unsigned char mac[32];
    char hex[65];

    (void)state;
    eb_hmac_sha256(NULL, 0, NULL, 0, mac);
    eb_hex_encode(mac, sizeof mac, hex);
    assert_string_equal(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

static void test_hex_encode(void **state)
{
    char out[9];

    (void)state;
    eb_hex_encode("\x00\x01\xab\xff", 4, out);
    assert_string_equal(out, "0001abff");
    eb_hex_encode("", 0, out);
    assert_string_equal(out, "");
}

static void test_base64_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof b64_cases / sizeof *b64_cases; i++) {
        const struct b64_case *c = &b64_cases[i];
        eb_buf b = {0};

        eb_base64url_encode(c->raw, c->rawlen, &b);
        assert_int_equal(b.len, strlen(c->url));
        assert_memory_equal(b.data, c->url, b.len);
        eb_buf_reset(&b);
        assert_true(eb_base64url_decode(c->url, strlen(c->url), &b));
        assert_int_equal(b.len, c->rawlen);
        if (c->rawlen)
            assert_memory_equal(b.data, c->raw, c->rawlen);
        eb_buf_free(&b);

        /* into a new buffer: its text is NUL-terminated even when empty */
        eb_base64_encode(c->raw, c->rawlen, &b);
        assert_int_equal(b.len, strlen(c->std));
        assert_string_equal(b.data ? b.data : "", c->std);
        eb_buf_reset(&b);
        assert_true(eb_base64_decode(c->std, strlen(c->std), &b));
        assert_int_equal(b.len, c->rawlen);
        if (c->rawlen)
            assert_memory_equal(b.data, c->raw, c->rawlen);
        eb_buf_free(&b);
    }
}

static void test_base64_appends(void **state)
{
    eb_buf b = {0};

    (void)state;
    eb_buf_puts(&b, "x.");
    eb_base64url_encode("foo", 3, &b);
    assert_string_equal(b.data, "x.Zm9v");
    assert_true(eb_base64url_decode("YmFy", 4, &b));
    assert_string_equal(b.data, "x.Zm9vbar");
    eb_buf_free(&b);
}

static void test_base64url_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof b64url_invalid / sizeof *b64url_invalid; i++) {
        eb_buf b = {0};

        eb_buf_puts(&b, "keep");
        if (eb_base64url_decode(b64url_invalid[i], strlen(b64url_invalid[i]), &b))
            fail_msg("accepted invalid base64url \"%s\"", b64url_invalid[i]);
        /* a failed decode leaves the buffer as it was */
        assert_int_equal(b.len, 4);
        assert_string_equal(b.data, "keep");
        eb_buf_free(&b);
    }
}

static void test_base64url_embedded_nul(void **state)
{
    eb_buf b = {0};

    (void)state;
    assert_false(eb_base64url_decode("Zm\0v", 4, &b));
    assert_int_equal(b.len, 0);
    eb_buf_free(&b);
}

static void test_base64std_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof b64std_invalid / sizeof *b64std_invalid; i++) {
        eb_buf b = {0};

        if (eb_base64_decode(b64std_invalid[i], strlen(b64std_invalid[i]), &b))
            fail_msg("accepted invalid base64 \"%s\"", b64std_invalid[i]);
        assert_int_equal(b.len, 0);
        eb_buf_free(&b);
    }
}

static void test_base64_random_round_trip(void **state)
{
    unsigned char raw[200];

    (void)state;
    for (size_t n = 0; n <= sizeof raw; n++) {
        eb_buf enc = {0}, dec = {0};

        eb_random_bytes(raw, n);
        eb_base64url_encode(raw, n, &enc);
        assert_int_equal(enc.len, (n * 4 + 2) / 3);
        assert_null(memchr(enc.data, '=', enc.len));
        assert_true(eb_base64url_decode(enc.data, enc.len, &dec));
        assert_int_equal(dec.len, n);
        if (n)
            assert_memory_equal(dec.data, raw, n);

        eb_buf_reset(&enc);
        eb_buf_reset(&dec);
        eb_base64_encode(raw, n, &enc);
        assert_int_equal(enc.len % 4, 0);
        assert_true(eb_base64_decode(enc.data, enc.len, &dec));
        assert_int_equal(dec.len, n);
        if (n)
            assert_memory_equal(dec.data, raw, n);
        eb_buf_free(&enc);
        eb_buf_free(&dec);
    }
}

static void test_ct_equal(void **state)
{
    unsigned char a[32], b[32];

    (void)state;
    eb_random_bytes(a, sizeof a);
    memcpy(b, a, sizeof a);
    assert_true(eb_ct_equal(a, b, sizeof a));
    assert_true(eb_ct_equal(a, b, 0));
    b[0] ^= 1;
    assert_false(eb_ct_equal(a, b, sizeof a));
    b[0] ^= 1;
    b[31] ^= 0x80;
    assert_false(eb_ct_equal(a, b, sizeof a));
    assert_true(eb_ct_equal(a, b, 31));
}

static void test_random_bytes_differ(void **state)
{
    unsigned char a[32] = {0}, b[32] = {0};

    (void)state;
    eb_random_bytes(a, sizeof a);
    eb_random_bytes(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
    eb_random_bytes(a, 0); /* a no-op, not a failure */
}

static void test_cleanse(void **state)
{
    unsigned char a[16];

    (void)state;
    memset(a, 0x5a, sizeof a);
    eb_cleanse(a, sizeof a);
    for (size_t i = 0; i < sizeof a; i++)
        assert_int_equal(a[i], 0);
    eb_cleanse(NULL, 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_uuid_v4_shape_and_uniqueness(void **state)
{
    enum { N = 1000 };
    char(*ids)[37] = calloc(N, sizeof *ids);

    (void)state;
    assert_non_null(ids);
    for (size_t i = 0; i < N; i++) {
        eb_uuid_v4(ids[i]);
        assert_int_equal(strlen(ids[i]), 36);
        assert_true(eb_uuid_valid(ids[i]));
        assert_int_equal(ids[i][14], '4');
        assert_non_null(strchr("89ab", ids[i][19]));
    }
    qsort(ids, N, sizeof *ids, cmp_str);
    for (size_t i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    free(ids);
}

/* UUIDs come from a per-thread block of random bytes: a forked child must not hand out the
 * bytes its parent hands out next. */
static void test_uuid_v4_fork(void **state)
{
    char parent_next[37], child_next[37] = {0}, first[37];
    int fds[2];
    pid_t pid;
    int status = 0;

    (void)state;
    eb_uuid_v4(first); /* the block is drawn, the next UUIDs are already decided */
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char id[37];
        eb_uuid_v4(id);
        _exit(write(fds[1], id, sizeof id) == (ssize_t)sizeof id ? 0 : 1);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], child_next, sizeof child_next), (ssize_t)sizeof child_next);
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    eb_uuid_v4(parent_next);
    assert_true(eb_uuid_valid(child_next));
    assert_string_not_equal(child_next, parent_next);
    assert_string_not_equal(child_next, first);
}

struct uuid_case {
    const char *s;
    bool valid;
};

static const struct uuid_case uuid_cases[] = {
    {"123e4567-e89b-42d3-a456-426614174000", true},
    {"00000000-0000-0000-0000-000000000000", true},
    {"123E4567-E89B-42D3-A456-426614174000", false}, /* uppercase is not canonical */
    {"123e4567e89b42d3a456426614174000", false},
    {"123e4567-e89b-42d3-a456-42661417400", false},
    {"123e4567-e89b-42d3-a456-4266141740000", false},
    {"123e4567-e89b-42d3-a456_426614174000", false},
    {"123e4567-e89b-42d3-a456-42661417400g", false},
    {"{123e4567-e89b-42d3-a456-426614174000}", false},
    {"", false},
    {NULL, false},
};

static void test_uuid_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof uuid_cases / sizeof *uuid_cases; i++)
        if (eb_uuid_valid(uuid_cases[i].s) != uuid_cases[i].valid)
            fail_msg("eb_uuid_valid(\"%s\") != %d", uuid_cases[i].s ? uuid_cases[i].s : "(null)",
                     uuid_cases[i].valid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_million_a),
        cmocka_unit_test(test_hmac_vectors),
        cmocka_unit_test(test_hmac_empty_key_and_message),
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_appends),
        cmocka_unit_test(test_base64url_invalid),
        cmocka_unit_test(test_base64url_embedded_nul),
        cmocka_unit_test(test_base64std_invalid),
        cmocka_unit_test(test_base64_random_round_trip),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_random_bytes_differ),
        cmocka_unit_test(test_cleanse),
        cmocka_unit_test(test_uuid_v4_shape_and_uniqueness),
        cmocka_unit_test(test_uuid_v4_fork),
        cmocka_unit_test(test_uuid_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
