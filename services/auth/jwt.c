/* jwt.c -- HS256 compact JWS session tokens (RFC 7515, RFC 7519, hardened per RFC 8725).
 * Verification runs in a fixed order and stops at the first failure:
 *   1. length bound (JWT_MAX_TOKEN_LEN) and exactly three '.'-separated parts;
 *   2. strict base64url of the header, which must be a JSON object with "alg" exactly "HS256",
 *      an optional "typ" of "JWT", and none of the parameters that pick or carry keys or demand
 *      extensions ("jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit");
 *   3. HMAC-SHA256 over "<header>.<payload>" compared in constant time with the signature --
 *      nothing in the payload is decoded before this succeeds;
 *   4. the claims: a JSON object, exp and iat required, nbf checked when present, iss and aud
 *      matched exactly, string claims copied only if they fit their fields.
 * The algorithm is never taken from the token, so "none" or RS/HS confusion cannot apply. A "kid"
 * is ignored: the key is always the one the caller passes. Objects with duplicate member names
 * are refused, so a reader that keeps the last duplicate cannot disagree with us.
 * Ownership: jwt_sign_hs256() returns a string the caller frees; jwt_verify_hs256() writes only
 * into the caller's struct, and only on success. Threading: reentrant. */
#include "jwt.h"

#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <cjson/cJSON.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Largest NumericDate we accept (year ~33658); keeps conversions and additions in range. */
#define JWT_MAX_TIME 1000000000000LL
/* Members per JSON object; our tokens carry at most nine. */
#define JWT_MAX_MEMBERS 32

static const char jwt_header_json[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* Header parameters that select or embed keys, or demand extensions we do not implement. */
static const char *const jwt_refused_header_params[] = {
    "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit",
};

/* Adds a string member; false if cJSON could not allocate. */
static bool add_string(cJSON *obj, const char *name, const char *value)
{
    return cJSON_AddStringToObject(obj, name, value) != NULL;
}

static bool add_time(cJSON *obj, const char *name, long long t)
{
    return cJSON_AddNumberToObject(obj, name, (double)t) != NULL;
}

/* True if s is a non-empty string shorter than cap (i.e. NUL-terminated inside its field). */
static bool field_set(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    return n > 0 && n < cap;
}

static bool field_ok(const char *s, size_t cap)
{
    return strnlen(s, cap) < cap;
}

eb_status jwt_sign_hs256(const jwt_claims *claims, const void *secret, size_t secret_len,
                         char **out)
{
    eb_status st = EB_OK;
    cJSON *obj = NULL;
    char *payload = NULL;
    unsigned char mac[32];
    eb_buf b = {0};
    bool ok;

    *out = NULL;
    if (!secret || secret_len < JWT_MIN_SECRET_LEN) {
        st = eb_error(EB_ERR_INVALID, "JWT secret must be at least %d bytes", JWT_MIN_SECRET_LEN);
        goto cleanup;
    }
    if (!field_set(claims->sub, sizeof claims->sub) ||
        !field_set(claims->iss, sizeof claims->iss) ||
        !field_set(claims->aud, sizeof claims->aud) ||
        !field_ok(claims->team_id, sizeof claims->team_id) ||
        !field_ok(claims->role, sizeof claims->role) ||
        !field_ok(claims->jti, sizeof claims->jti)) {
        st = eb_error(EB_ERR_INVALID, "JWT claims: sub, iss and aud are required, and every "
                                      "string must be NUL-terminated in its field");
        goto cleanup;
    }
    if (claims->iat <= 0 || claims->iat > JWT_MAX_TIME || claims->exp <= 0 ||
        claims->exp > JWT_MAX_TIME || claims->nbf < 0 || claims->nbf > JWT_MAX_TIME) {
        st = eb_error(EB_ERR_INVALID, "JWT claims: iat, exp or nbf out of range");
        goto cleanup;
    }

    obj = cJSON_CreateObject();
    ok = obj && add_string(obj, "sub", claims->sub);
    if (ok && claims->team_id[0])
        ok = add_string(obj, "team", claims->team_id);
    if (ok && claims->role[0])
        ok = add_string(obj, "role", claims->role);
    ok = ok && add_string(obj, "iss", claims->iss) && add_string(obj, "aud", claims->aud) &&
         add_time(obj, "iat", claims->iat) && add_time(obj, "exp", claims->exp);
    if (ok && claims->nbf)
        ok = add_time(obj, "nbf", claims->nbf);
    if (ok && claims->jti[0])
        ok = add_string(obj, "jti", claims->jti);
    if (ok)
        payload = cJSON_PrintUnformatted(obj);
    if (!payload) {
        st = eb_error(EB_ERR_INTERNAL, "out of memory building JWT claims");
        goto cleanup;
    }

    eb_base64url_encode(jwt_header_json, sizeof jwt_header_json - 1, &b);
    eb_buf_putc(&b, '.');
    eb_base64url_encode(payload, strlen(payload), &b);
    eb_hmac_sha256(secret, secret_len, b.data, b.len, mac);
    eb_buf_putc(&b, '.');
    eb_base64url_encode(mac, sizeof mac, &b);
    *out = eb_buf_steal(&b);
cleanup:
    cJSON_free(payload);
    cJSON_Delete(obj);
    eb_buf_free(&b);
    return st;
}

/* Parses data[0..n) as exactly one JSON object (surrounding whitespace allowed) with at most
 * JWT_MAX_MEMBERS members and no duplicate names. NULL otherwise; the caller deletes. */
static cJSON *parse_object(const char *data, size_t n)
{
    cJSON *obj = NULL;
    const char *end = NULL;
    int count = 0;
    bool ok = false;

    if (n == 0)
        goto cleanup;
    obj = cJSON_ParseWithLengthOpts(data, n, &end, 0);
    if (!obj || !cJSON_IsObject(obj) || !end)
        goto cleanup;
    while (end < data + n && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end != data + n)
        goto cleanup;
    for (const cJSON *a = obj->child; a; a = a->next) {
        if (++count > JWT_MAX_MEMBERS || !a->string)
            goto cleanup;
        for (const cJSON *b = obj->child; b != a; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                goto cleanup;
    }
    ok = true;
cleanup:
    if (!ok) {
        cJSON_Delete(obj);
        obj = NULL;
    }
    return obj;
}

/* Reads a NumericDate member: 1 found and valid, 0 absent, -1 present but not a usable number. */
static int get_time(const cJSON *obj, const char *name, long long *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    double d;

    if (!it)
        return 0;
    if (!cJSON_IsNumber(it))
        return -1;
    d = it->valuedouble;
    if (!(d >= 0 && d <= (double)JWT_MAX_TIME)) /* also refuses NaN */
        return -1;
    *out = (long long)d;
    return 1;
}

/* Copies a string member into dst[cap]: 1 copied, 0 absent, -1 not a string or too long. */
static int get_string(const cJSON *obj, const char *name, char *dst, size_t cap)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    size_t n;

    if (!it)
        return 0;
    if (!cJSON_IsString(it) || !it->valuestring)
        return -1;
    n = strlen(it->valuestring);
    if (n >= cap)
        return -1;
    memcpy(dst, it->valuestring, n + 1);
    return 1;
}

/* Checks the header; returns NULL if acceptable, else the reason. */
static const char *check_header(const char *part, size_t n)
{
    const char *why = "malformed";
    eb_buf raw = {0};
    cJSON *hdr = NULL;
    const cJSON *alg;
    const cJSON *typ;

    if (!eb_base64url_decode(part, n, &raw))
        goto cleanup;
    hdr = parse_object(raw.data, raw.len);
    if (!hdr)
        goto cleanup;
    why = "bad_algorithm";
    alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
    if (!cJSON_IsString(alg) || !alg->valuestring || strcmp(alg->valuestring, "HS256") != 0)
        goto cleanup;
    for (size_t i = 0; i < sizeof jwt_refused_header_params / sizeof *jwt_refused_header_params;
         i++)
        if (cJSON_GetObjectItemCaseSensitive(hdr, jwt_refused_header_params[i]))
            goto cleanup;
    why = "malformed";
    typ = cJSON_GetObjectItemCaseSensitive(hdr, "typ");
    if (typ && (!cJSON_IsString(typ) || !typ->valuestring || strcmp(typ->valuestring, "JWT") != 0))
        goto cleanup;
    why = NULL;
cleanup:
    cJSON_Delete(hdr);
    eb_buf_free(&raw);
    return why;
}

/* True if aud (a string, or an array of strings) names audience; *why is set when malformed. */
static bool audience_matches(const cJSON *aud, const char *audience, const char **why)
{
    bool found = false;

    if (cJSON_IsString(aud))
        return aud->valuestring && strcmp(aud->valuestring, audience) == 0;
    if (!cJSON_IsArray(aud)) {
        *why = "malformed";
        return false;
    }
    for (const cJSON *it = aud->child; it; it = it->next) {
        if (!cJSON_IsString(it) || !it->valuestring) {
            *why = "malformed";
            return false;
        }
        if (strcmp(it->valuestring, audience) == 0)
            found = true;
    }
    return found;
}

/* Validates the (already authenticated) claims into *c; returns NULL or the reason. */
static const char *check_claims(const char *part, size_t n, const char *issuer,
                                const char *audience, long long now, long long leeway,
                                jwt_claims *c)
{
    const char *why = "malformed";
    eb_buf raw = {0};
    cJSON *obj = NULL;
    const cJSON *aud;

    if (!eb_base64url_decode(part, n, &raw))
        goto cleanup;
    obj = parse_object(raw.data, raw.len);
    if (!obj)
        goto cleanup;

    /* Shapes first: every claim we read must have the right type and fit its field. */
    if (get_time(obj, "exp", &c->exp) < 0 || get_time(obj, "iat", &c->iat) < 0 ||
        get_time(obj, "nbf", &c->nbf) < 0 || get_string(obj, "sub", c->sub, sizeof c->sub) < 0 ||
        get_string(obj, "team", c->team_id, sizeof c->team_id) < 0 ||
        get_string(obj, "role", c->role, sizeof c->role) < 0 ||
        get_string(obj, "jti", c->jti, sizeof c->jti) < 0 ||
        get_string(obj, "iss", c->iss, sizeof c->iss) < 0)
        goto cleanup;
    why = "missing_claim";
    aud = cJSON_GetObjectItemCaseSensitive(obj, "aud");
    if (!cJSON_GetObjectItemCaseSensitive(obj, "exp") ||
        !cJSON_GetObjectItemCaseSensitive(obj, "iat") || !c->sub[0] || !c->iss[0] || !aud)
        goto cleanup;

    /* Then meaning. */
    if (now > c->exp + leeway) {
        why = "expired";
        goto cleanup;
    }
    if (c->nbf && now + leeway < c->nbf) {
        why = "not_yet_valid";
        goto cleanup;
    }
    if (strcmp(c->iss, issuer) != 0) {
        why = "wrong_issuer";
        goto cleanup;
    }
    why = "wrong_audience";
    if (!audience_matches(aud, audience, &why))
        goto cleanup;
    snprintf(c->aud, sizeof c->aud, "%s", audience);
    why = NULL;
cleanup:
    cJSON_Delete(obj);
    eb_buf_free(&raw);
    return why;
}

eb_status jwt_verify_hs256(const char *token, const void *secret, size_t secret_len,
                           const char *issuer, const char *audience, long long now, int leeway_s,
                           jwt_claims *out, const char **reason)
{
    const char *why = "malformed";
    const char *dot1, *dot2;
    size_t len;
    eb_buf sig = {0};
    unsigned char mac[32];
    jwt_claims c;
    long long leeway = leeway_s > 0 ? leeway_s : 0;

    memset(&c, 0, sizeof c);
    if (out)
        memset(out, 0, sizeof *out);
    if (!token || !out)
        goto cleanup;
    if (!secret || secret_len < JWT_MIN_SECRET_LEN || !issuer || !audience ||
        now > JWT_MAX_TIME * 2 || now < 0) {
        /* A configuration fault, not the token's: record it for whoever logs the failure. */
        why = "bad_signature";
        eb_error(EB_ERR_INTERNAL, "jwt_verify_hs256: secret, issuer, audience or now invalid");
        goto cleanup;
    }
    len = strnlen(token, JWT_MAX_TOKEN_LEN + 1);
    if (len > JWT_MAX_TOKEN_LEN)
        goto cleanup;
    dot1 = memchr(token, '.', len);
    if (!dot1)
        goto cleanup;
    dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        goto cleanup;

    why = check_header(token, (size_t)(dot1 - token));
    if (why)
        goto cleanup;

    why = "bad_signature";
    if (!eb_base64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), &sig) ||
        sig.len != sizeof mac)
        goto cleanup;
    eb_hmac_sha256(secret, secret_len, token, (size_t)(dot2 - token), mac);
    if (!eb_ct_equal(mac, sig.data, sizeof mac))
        goto cleanup;

    why = check_claims(dot1 + 1, (size_t)(dot2 - dot1 - 1), issuer, audience, now, leeway, &c);
    if (why)
        goto cleanup;
    *out = c;
cleanup:
    eb_cleanse(mac, sizeof mac);
    eb_buf_free(&sig);
    if (reason)
        *reason = why;
    return why ? EB_ERR_UNAUTHENTICATED : EB_OK;
}
