/* password.h -- password hashing with scrypt (OpenSSL EVP_KDF "SCRYPT").
 * Encoded form (self-describing, so the cost can be raised later without breaking old hashes):
 *   $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt base64url>$<hash base64url>
 * with a 16-byte random salt and a 32-byte derived key. */
#ifndef EVALBUS_AUTH_PASSWORD_H
#define EVALBUS_AUTH_PASSWORD_H

#include "evalbus/status.h"

#include <stdbool.h>

typedef struct password_params {
    int log2_n; /* CPU/memory cost: N = 2^log2_n (default 15: 32 MiB with r = 8) */
    int r;      /* block size (default 8) */
    int p;      /* parallelism (default 1) */
} password_params;

#define PASSWORD_DEFAULT_PARAMS ((password_params){15, 8, 1})
#define PASSWORD_MIN_LEN 8
#define PASSWORD_MAX_LEN 1024

/* Hashes password into *out (caller frees). EB_ERR_INVALID if the password is shorter than
 * PASSWORD_MIN_LEN or longer than PASSWORD_MAX_LEN bytes, or params are out of range. */
eb_status password_hash(const char *password, password_params params, char **out);

/* True if password matches encoded (constant-time comparison of the derived keys). A malformed
 * encoded string never matches. */
bool password_verify(const char *password, const char *encoded);

#endif
