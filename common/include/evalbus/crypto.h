/* crypto.h -- small wrappers over OpenSSL used across services.
 * Randomness comes from the OpenSSL CSPRNG (RAND_bytes); a failure of the CSPRNG aborts, since no
 * caller could continue safely. Nothing here allocates except the eb_buf outputs, which the
 * caller owns. */
#ifndef EVALBUS_CRYPTO_H
#define EVALBUS_CRYPTO_H

#include "evalbus/mem.h"

#include <stdbool.h>
#include <stddef.h>

/* Fills buf with n bytes from the CSPRNG; aborts if it fails. */
void eb_random_bytes(void *buf, size_t n);
void eb_sha256(const void *p, size_t n, unsigned char out[32]);
/* Lowercase hex of SHA-256; out gets 64 characters and a NUL. */
void eb_sha256_hex(const void *p, size_t n, char out[65]);
void eb_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                    unsigned char out[32]);
/* Constant-time comparison of two equal-length buffers. */
bool eb_ct_equal(const void *a, const void *b, size_t n);
/* Overwrites n bytes at p with zeros in a way the compiler cannot drop (for secrets). NULL ok
 * when n is 0. */
void eb_cleanse(void *p, size_t n);
/* Lowercase hex of n bytes; out must hold 2n+1. */
void eb_hex_encode(const void *in, size_t n, char *out);
/* The value of hex digit c (either case), or -1 when it is none. */
int eb_hex_digit(char c);
/* Base64url without padding (RFC 4648 section 5). eb_base64url_encode appends to out.
 * eb_base64url_decode appends the decoded bytes and returns false on any invalid character or
 * impossible length (padding '=' is refused). */
void eb_base64url_encode(const void *in, size_t n, eb_buf *out);
bool eb_base64url_decode(const char *in, size_t n, eb_buf *out);
/* Standard base64 with padding (RFC 4648 section 4), for formats that need it. */
void eb_base64_encode(const void *in, size_t n, eb_buf *out);
bool eb_base64_decode(const char *in, size_t n, eb_buf *out);
/* A random (version 4) UUID in canonical lowercase form; out gets 36 characters and a NUL.
 * Thread-safe and fork-safe: drawn from a per-thread block of RAND_bytes output. */
void eb_uuid_v4(char out[37]);
/* True if s is a canonical UUID (8-4-4-4-12 hex). */
bool eb_uuid_valid(const char *s);

#endif
