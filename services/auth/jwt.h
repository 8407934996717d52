/* jwt.h -- session tokens: compact JWS with HS256 (RFC 7519, RFC 8725).
 * Verification pins the algorithm: the header must say {"alg":"HS256"} (typ JWT optional); "none",
 * any other algorithm, a "jku"/"jwk"/"x5u"/"kid"-driven key choice, or a malformed part is refused.
 * exp and iat are required, nbf is checked when present, iss and aud must match exactly (aud may
 * be a string or an array containing the audience), all with a leeway in seconds. */
#ifndef EVALBUS_AUTH_JWT_H
#define EVALBUS_AUTH_JWT_H

#include "evalbus/status.h"

#include <stddef.h>

/* HS256 keys shorter than the hash output are refused (RFC 7518 section 3.2). */
#define JWT_MIN_SECRET_LEN 32
/* Tokens longer than this are refused before any parsing. */
#define JWT_MAX_TOKEN_LEN 8192

typedef struct jwt_claims {
    char sub[64];     /* user id (UUID) */
    char team_id[64]; /* "team" claim: team id (UUID) */
    char role[16];    /* "role": viewer | member | admin | owner */
    char iss[128];
    char aud[128];
    char jti[64];
    long long iat, exp, nbf; /* seconds since the epoch; nbf 0 = absent */
} jwt_claims;

/* Signs claims with HS256 under secret (at least JWT_MIN_SECRET_LEN bytes); *out gets the compact
 * token (caller frees). sub, iss and aud are required; team_id, role and jti are emitted when
 * non-empty, nbf when non-zero. EB_ERR_INVALID for a short secret or out-of-range claims. */
eb_status jwt_sign_hs256(const jwt_claims *claims, const void *secret, size_t secret_len,
                         char **out);

/* Verifies token. On success fills *out and returns EB_OK. On failure returns
 * EB_ERR_UNAUTHENTICATED and sets *reason (static string, may be NULL) to one of:
 * "malformed", "bad_algorithm", "bad_signature", "expired", "not_yet_valid", "wrong_issuer",
 * "wrong_audience", "missing_claim". sub, iss, aud, exp and iat are required; a string claim
 * longer than its field is "malformed". A secret shorter than JWT_MIN_SECRET_LEN or a NULL
 * issuer/audience is a configuration fault: every token then fails with "bad_signature". */
eb_status jwt_verify_hs256(const char *token, const void *secret, size_t secret_len,
                           const char *issuer, const char *audience, long long now, int leeway_s,
                           jwt_claims *out, const char **reason);

#endif
