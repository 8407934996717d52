/* crypto.c -- digests, MACs, randomness, base64 and UUIDs over OpenSSL 3.
 * Digests and HMAC go through OpenSSL one-shot calls (EVP_Digest, HMAC); SHA-256 uses one
 * algorithm fetched once, since a one-shot call with EVP_sha256() fetches it again, under
 * locks, on every call. Randomness comes from RAND_bytes, whose failure aborts (see crypto.h).
 * UUIDs draw from a per-thread block of RAND_bytes output (ingest makes one per record, and a
 * RAND_bytes call per UUID cost more than the rest of the UUID); a forked child discards the
 * block it inherited, so parent and child never hand out the same bytes. Secrets
 * (eb_random_bytes) always come straight from RAND_bytes. Base64 (RFC 4648 sections 4 and 5) is
 * written here: the decoders are strict -- no whitespace, no stray padding, and the unused low bits
 * of the last character must be zero -- so that every byte string has exactly one accepted
 * encoding, which keeps signed tokens from being malleable. Ownership: only the eb_buf outputs
 * grow, and the caller owns them; a failed decode leaves the buffer as it was. Threading: every
 * function is reentrant. */
#include "evalbus/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char hex_digits[] = "0123456789abcdef";
static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char b64std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void crypto_fatal(const char *what)
{
    fprintf(stderr, "evalbus: %s failed; cannot continue safely\n", what);
    abort();
}

void eb_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;

    /* RAND_bytes takes an int length; feed large requests in slices. */
    while (n > 0) {
        int chunk = n > (size_t)INT_MAX ? INT_MAX : (int)n;

        if (RAND_bytes(p, chunk) != 1)
            crypto_fatal("RAND_bytes");
        p += chunk;
        n -= (size_t)chunk;
    }
}

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void eb_sha256(const void *p, size_t n, unsigned char out[32])
{
    static const unsigned char empty = 0;
    unsigned int len = 0;

    pthread_once(&sha256_once, sha256_fetch);
    if (!sha256_md || EVP_Digest(p ? p : &empty, n, out, &len, sha256_md, NULL) != 1 || len != 32)
        crypto_fatal("SHA-256");
}

void eb_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];

    eb_sha256(p, n, md);
    eb_hex_encode(md, sizeof md, out);
}

void eb_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                    unsigned char out[32])
{
    /* HMAC() refuses a NULL key even when its length is zero; hand it a real address. */
    static const unsigned char empty = 0;
    unsigned int len = 0;

    if (klen > (size_t)INT_MAX)
        crypto_fatal("HMAC-SHA256 (key too long)");
    if (!HMAC(EVP_sha256(), key && klen ? key : &empty, (int)klen, msg ? msg : (const void *)&empty,
              mlen, out, &len) ||
        len != 32)
        crypto_fatal("HMAC-SHA256");
}

bool eb_ct_equal(const void *a, const void *b, size_t n)
{
    return n == 0 || CRYPTO_memcmp(a, b, n) == 0;
}

void eb_cleanse(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

int eb_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void eb_hex_encode(const void *in, size_t n, char *out)
{
    const unsigned char *p = in;

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[p[i] >> 4];
        out[2 * i + 1] = hex_digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Appends the base64 encoding of in under alphabet, padded with '=' when pad is set. */
static void b64_encode(const char *alphabet, bool pad, const void *in, size_t n, eb_buf *out)
{
    const unsigned char *p = in;
    size_t i = 0;

    eb_buf_reserve(out, (n + 2) / 3 * 4);
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        char q[4] = {alphabet[v >> 18], alphabet[(v >> 12) & 63], alphabet[(v >> 6) & 63],
                     alphabet[v & 63]};
        eb_buf_append(out, q, 4);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        char q[4] = {alphabet[v >> 18], alphabet[(v >> 12) & 63], '=', '='};
        eb_buf_append(out, q, pad ? 4 : 2);
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        char q[4] = {alphabet[v >> 18], alphabet[(v >> 12) & 63], alphabet[(v >> 6) & 63], '='};
        eb_buf_append(out, q, pad ? 4 : 3);
    }
}

/* Value of c in the alphabet (62 and 63 are the two alphabet-specific characters), or -1. */
static int b64_value(unsigned char c, char c62, char c63)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (unsigned char)c62)
        return 62;
    if (c == (unsigned char)c63)
        return 63;
    return -1;
}

/* Decodes n unpadded characters; appends to out only if the whole input is valid. */
static bool b64_decode_unpadded(const char *in, size_t n, char c62, char c63, eb_buf *out)
{
    size_t start = out->len;
    size_t tail = n % 4;
    uint32_t v = 0;
    int bits = 0;
    bool ok = false;

    if (tail == 1)
        goto cleanup; /* one character carries 6 bits: no whole byte */
    eb_buf_reserve(out, n / 4 * 3 + 2);
    for (size_t i = 0; i < n; i++) {
        int d = b64_value((unsigned char)in[i], c62, c63);
        if (d < 0)
            goto cleanup;
        v = (v << 6 | (uint32_t)d) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            eb_buf_putc(out, (char)((v >> bits) & 0xff));
        }
    }
    /* Left-over bits (2 or 4) must be zero, or two encodings would decode alike. */
    if (bits > 0 && (v & ((1u << bits) - 1)) != 0)
        goto cleanup;
    ok = true;
cleanup:
    if (!ok) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
    }
    return ok;
}

void eb_base64url_encode(const void *in, size_t n, eb_buf *out)
{
    b64_encode(b64url_alphabet, false, in, n, out);
}

bool eb_base64url_decode(const char *in, size_t n, eb_buf *out)
{
    return b64_decode_unpadded(in, n, '-', '_', out);
}

void eb_base64_encode(const void *in, size_t n, eb_buf *out)
{
    b64_encode(b64std_alphabet, true, in, n, out);
}

bool eb_base64_decode(const char *in, size_t n, eb_buf *out)
{
    size_t body = n;

    if (n % 4 != 0)
        return false;
    /* Up to two '=' and only at the very end; what precedes them must be a valid unpadded
     * string, whose length (2 or 3 mod 4) then matches the padding. */
    if (body > 0 && in[body - 1] == '=')
        body--;
    if (body > 0 && in[body - 1] == '=')
        body--;
    return b64_decode_unpadded(in, body, '+', '/', out);
}

/* Bumped in a forked child: a thread's block of random bytes is only used in the process
 * generation that drew it. */
static atomic_uint fork_generation = 1;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
}

static void fork_hook(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

/* 16 random bytes for a UUID from the thread's block, refilled by one RAND_bytes call. */
static void uuid_random(unsigned char b[16])
{
    static _Thread_local unsigned char block[4096];
    static _Thread_local size_t used = sizeof block;
    static _Thread_local unsigned generation;
    unsigned now;

    pthread_once(&fork_once, fork_hook);
    now = atomic_load(&fork_generation);
    if (generation != now || used + 16 > sizeof block) {
        eb_random_bytes(block, sizeof block);
        used = 0;
        generation = now;
    }
    memcpy(b, block + used, 16);
    memset(block + used, 0, 16); /* handed out once */
    used += 16;
}

void eb_uuid_v4(char out[37])
{
    unsigned char b[16];
    size_t o = 0;

    uuid_random(b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex_digits[b[i] >> 4];
        out[o++] = hex_digits[b[i] & 15];
    }
    out[o] = '\0';
}

bool eb_uuid_valid(const char *s)
{
    /* Canonical means lowercase: ids are compared as strings (cache keys, JWT claims). */
    if (!s)
        return false;
    for (size_t i = 0; i < 36; i++) {
        char c = s[i];

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false; /* also stops at an early NUL */
        }
    }
    return s[36] == '\0';
}
