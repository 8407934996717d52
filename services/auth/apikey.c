/* apikey.c -- API key generation, shape check and hashing (format in apikey.h).
 * The prefix is APIKEY_PREFIX_LEN random base32 characters: each comes from one CSPRNG byte
 * masked to 5 bits, which is unbiased since 32 divides 256. The secret is 32 CSPRNG bytes in
 * base64url (43 characters, no padding). apikey_parse() checks the exact shape, including that
 * the secret decodes to 32 bytes canonically, so a key that could never have been issued is
 * refused before any database lookup. Only SHA-256 of the whole string is ever stored.
 * Ownership: callers provide every buffer. Threading: reentrant. */
#include "apikey.h"

#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <string.h>

#define APIKEY_TAG "eb_"
#define APIKEY_TAG_LEN 3
#define APIKEY_SECRET_BYTES 32

static const char base32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

_Static_assert(APIKEY_SECRET_LEN == (APIKEY_SECRET_BYTES * 4 + 2) / 3,
               "APIKEY_SECRET_LEN must be the unpadded base64url length of the secret");

static bool is_base32(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7');
}

void apikey_generate(char key[APIKEY_MAX], char prefix[APIKEY_PREFIX_LEN + 1])
{
    unsigned char rnd[APIKEY_PREFIX_LEN];
    unsigned char secret[APIKEY_SECRET_BYTES];
    eb_buf b = {0};

    eb_random_bytes(rnd, sizeof rnd);
    eb_random_bytes(secret, sizeof secret);
    for (size_t i = 0; i < APIKEY_PREFIX_LEN; i++)
        prefix[i] = base32_alphabet[rnd[i] & 31];
    prefix[APIKEY_PREFIX_LEN] = '\0';

    eb_buf_append(&b, APIKEY_TAG, APIKEY_TAG_LEN);
    eb_buf_append(&b, prefix, APIKEY_PREFIX_LEN);
    eb_buf_putc(&b, '_');
    eb_base64url_encode(secret, sizeof secret, &b);
    memcpy(key, b.data, APIKEY_MAX - 1);
    key[APIKEY_MAX - 1] = '\0';

    eb_cleanse(secret, sizeof secret);
    eb_cleanse(b.data, b.len);
    eb_buf_free(&b);
}

bool apikey_parse(const char *s, char prefix[APIKEY_PREFIX_LEN + 1])
{
    const char *p = s;
    eb_buf secret = {0};
    bool ok = false;

    if (!s || strnlen(s, APIKEY_MAX) != APIKEY_MAX - 1)
        goto cleanup;
    if (memcmp(p, APIKEY_TAG, APIKEY_TAG_LEN) != 0)
        goto cleanup;
    p += APIKEY_TAG_LEN;
    for (size_t i = 0; i < APIKEY_PREFIX_LEN; i++)
        if (!is_base32(p[i]))
            goto cleanup;
    if (p[APIKEY_PREFIX_LEN] != '_')
        goto cleanup;
    if (!eb_base64url_decode(p + APIKEY_PREFIX_LEN + 1, APIKEY_SECRET_LEN, &secret) ||
        secret.len != APIKEY_SECRET_BYTES)
        goto cleanup;
    if (prefix) {
        memcpy(prefix, p, APIKEY_PREFIX_LEN);
        prefix[APIKEY_PREFIX_LEN] = '\0';
    }
    ok = true;
cleanup:
    eb_cleanse(secret.data, secret.len);
    eb_buf_free(&secret);
    return ok;
}

void apikey_hash_hex(const char *key, char out[65])
{
    eb_sha256_hex(key, strlen(key), out);
}
