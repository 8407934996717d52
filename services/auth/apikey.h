/* apikey.h -- API key format, generation and hashing.
 * A key reads  eb_<prefix>_<secret>:  "eb_", a public prefix of APIKEY_PREFIX_LEN lowercase
 * base32 characters (a-z2-7) that identifies the key in listings and logs, "_", then 43
 * base64url characters carrying 32 bytes (256 bits) from the CSPRNG. Only SHA-256 of the whole
 * key string is stored. */
#ifndef EVALBUS_AUTH_APIKEY_H
#define EVALBUS_AUTH_APIKEY_H

#include <stdbool.h>
#include <stddef.h>

#define APIKEY_PREFIX_LEN 10
#define APIKEY_SECRET_LEN 43
/* "eb_" + prefix + "_" + secret + NUL */
#define APIKEY_MAX (3 + APIKEY_PREFIX_LEN + 1 + APIKEY_SECRET_LEN + 1)

/* Writes a new key into key (APIKEY_MAX bytes) and its prefix into prefix
 * (APIKEY_PREFIX_LEN + 1 bytes). */
void apikey_generate(char key[APIKEY_MAX], char prefix[APIKEY_PREFIX_LEN + 1]);

/* True if s has the exact shape of a key; on success copies the prefix out (may be NULL). */
bool apikey_parse(const char *s, char prefix[APIKEY_PREFIX_LEN + 1]);

/* SHA-256 of the whole key string, as 64 lowercase hex characters. */
void apikey_hash_hex(const char *key, char out[65]);

#endif
