/* test_jwt.c -- unit tests for services/auth/jwt.c.
 * Tokens from jwt_sign_hs256() check the happy path and time handling; forged tokens, built here
 * from raw header and claims JSON and signed (or not) with the test secret, check every refusal:
 * algorithm confusion, forbidden header parameters, tampering, structure, claim shapes. The time
 * is fixed (NOW) so every case is deterministic. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "jwt.h"
#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1700000000LL
#define LEEWAY 30
#define ISS "https://auth.evalbus.test"
#define AUD "evalbus-api"
#define SUB "6f1c1c52-2b8e-4a53-9d7e-6a7f3d1f0c11"
#define TEAM "0b9f8a4e-53a1-4bf4-8c37-1e5d0a8b2c77"

static const char secret[] = "test-secret-0123456789abcdef-0123456789";
static const char other_secret[] = "another-secret-0123456789abcdef-012345";

#define HDR_OK "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
/* iat NOW, exp NOW + 1h */
#define CLAIMS_OK                                                                                  \
    "{\"sub\":\"" SUB "\",\"team\":\"" TEAM "\",\"role\":\"admin\",\"iss\":\"" ISS                 \
    "\",\"aud\":\"" AUD "\",\"iat\":1700000000,\"exp\":1700003600,\"jti\":\"j1\"}"
#define CLAIMS_WITH(extra)                                                                         \
    "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"iat\":1700000000," extra "}"

enum sig_mode {
    SIG_SECRET, /* HMAC-SHA256 with the verifier's secret */
    SIG_OTHER,  /* HMAC-SHA256 with another secret */
    SIG_EMPTY,  /* no signature at all ("alg":"none" style) */
};

/* "<b64url(hdr)>.<b64url(claims)>.<sig>"; the caller frees. */
static char *forge(const char *hdr, const char *claims, enum sig_mode mode)
{
    eb_buf b = {0};
    unsigned char mac[32];

    eb_base64url_encode(hdr, strlen(hdr), &b);
    eb_buf_putc(&b, '.');
    eb_base64url_encode(claims, strlen(claims), &b);
    if (mode != SIG_EMPTY) {
        const char *key = mode == SIG_SECRET ? secret : other_secret;
        eb_hmac_sha256(key, strlen(key), b.data, b.len, mac);
    }
    eb_buf_putc(&b, '.');
    if (mode != SIG_EMPTY)
        eb_base64url_encode(mac, sizeof mac, &b);
    return eb_buf_steal(&b);
}

/* Signs "<p1>.<p2>" taken verbatim (already encoded, possibly invalid); the caller frees. */
static char *sign_raw(const char *p1, const char *p2)
{
    eb_buf b = {0};
    unsigned char mac[32];

    eb_buf_printf(&b, "%s.%s", p1, p2);
    eb_hmac_sha256(secret, strlen(secret), b.data, b.len, mac);
    eb_buf_putc(&b, '.');
    eb_base64url_encode(mac, sizeof mac, &b);
    return eb_buf_steal(&b);
}

static const char *verify(const char *token, jwt_claims *out)
{
    const char *reason = "unset";
    eb_status st =
        jwt_verify_hs256(token, secret, strlen(secret), ISS, AUD, NOW, LEEWAY, out, &reason);

    if (st == EB_OK) {
        assert_null(reason);
        return NULL;
    }
    assert_int_equal(st, EB_ERR_UNAUTHENTICATED);
    assert_non_null(reason);
    return reason;
}

static void assert_reason(const char *token, const char *want, const char *name)
{
    jwt_claims c;
    const char *got;

    memset(&c, 0x7f, sizeof c);
    got = verify(token, &c);
    if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0))
        fail_msg("%s: got %s, want %s", name, got ? got : "OK", want ? want : "OK");
    if (got) { /* nothing leaks out of a refused token */
        assert_string_equal(c.sub, "");
        assert_int_equal(c.exp, 0);
    }
}

static jwt_claims base_claims(void)
{
    jwt_claims c;

    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "%s", SUB);
    snprintf(c.team_id, sizeof c.team_id, "%s", TEAM);
    snprintf(c.role, sizeof c.role, "%s", "member");
    snprintf(c.iss, sizeof c.iss, "%s", ISS);
    snprintf(c.aud, sizeof c.aud, "%s", AUD);
    snprintf(c.jti, sizeof c.jti, "%s", "jti-1");
    c.iat = NOW;
    c.exp = NOW + 900;
    return c;
}

static char *sign(const jwt_claims *c)
{
    char *tok = NULL;

    assert_int_equal(jwt_sign_hs256(c, secret, strlen(secret), &tok), EB_OK);
    assert_non_null(tok);
    return tok;
}

static void test_sign_verify_round_trip(void **state)
{
    jwt_claims in = base_claims(), out;
    char *tok = sign(&in);
    eb_buf hdr = {0};
    const char *dot = strchr(tok, '.');

    (void)state;
    assert_null(verify(tok, &out));
    assert_string_equal(out.sub, SUB);
    assert_string_equal(out.team_id, TEAM);
    assert_string_equal(out.role, "member");
    assert_string_equal(out.iss, ISS);
    assert_string_equal(out.aud, AUD);
    assert_string_equal(out.jti, "jti-1");
    assert_int_equal(out.iat, NOW);
    assert_int_equal(out.exp, NOW + 900);
    assert_int_equal(out.nbf, 0);

    /* the header is exactly the pinned one */
    assert_non_null(dot);
    assert_true(eb_base64url_decode(tok, (size_t)(dot - tok), &hdr));
    assert_string_equal(hdr.data, HDR_OK);
    eb_buf_free(&hdr);

    /* reason may be NULL */
    assert_int_equal(jwt_verify_hs256(tok, secret, strlen(secret), ISS, AUD, NOW, 0, &out, NULL),
                     EB_OK);
    assert_int_equal(jwt_verify_hs256("x", secret, strlen(secret), ISS, AUD, NOW, 0, &out, NULL),
                     EB_ERR_UNAUTHENTICATED);
    free(tok);
}

static void test_sign_with_nbf_and_large_times(void **state)
{
    jwt_claims in = base_claims(), out;
    char *tok;

    (void)state;
    in.nbf = NOW - 5;
    in.exp = 4102444800LL; /* 2100-01-01: past 32-bit time */
    tok = sign(&in);
    assert_null(verify(tok, &out));
    assert_int_equal(out.nbf, NOW - 5);
    assert_int_equal(out.exp, 4102444800LL);
    free(tok);
}

static void test_sign_optional_claims_omitted(void **state)
{
    jwt_claims in = base_claims(), out;
    char *tok;

    (void)state;
    in.team_id[0] = in.role[0] = in.jti[0] = '\0';
    tok = sign(&in);
    assert_null(verify(tok, &out));
    assert_string_equal(out.team_id, "");
    assert_string_equal(out.role, "");
    assert_string_equal(out.jti, "");
    free(tok);
}

static void test_sign_refuses_bad_input(void **state)
{
    jwt_claims c = base_claims();
    char *tok = NULL;

    (void)state;
    assert_int_equal(jwt_sign_hs256(&c, "short", 5, &tok), EB_ERR_INVALID);
    assert_null(tok);
    c.sub[0] = '\0';
    assert_int_equal(jwt_sign_hs256(&c, secret, strlen(secret), &tok), EB_ERR_INVALID);
    c = base_claims();
    memset(c.role, 'r', sizeof c.role); /* not NUL-terminated */
    assert_int_equal(jwt_sign_hs256(&c, secret, strlen(secret), &tok), EB_ERR_INVALID);
    c = base_claims();
    c.exp = -1;
    assert_int_equal(jwt_sign_hs256(&c, secret, strlen(secret), &tok), EB_ERR_INVALID);
    assert_null(tok);
}

struct time_case {
    const char *name;
    long long exp_delta; /* exp - NOW */
    long long nbf_delta; /* nbf - NOW, 0 = absent */
    const char *want;
};

static const struct time_case time_cases[] = {
    {"fresh", 900, 0, NULL},
    {"expired", -100, 0, "expired"},
    {"expired within leeway", -LEEWAY + 1, 0, NULL},
    {"expired exactly at leeway", -LEEWAY, 0, NULL},
    {"expired one past leeway", -LEEWAY - 1, 0, "expired"},
    {"nbf in the past", 900, -60, NULL},
    {"nbf in the future", 900, 100, "not_yet_valid"},
    {"nbf within leeway", 900, LEEWAY, NULL},
    {"nbf one past leeway", 900, LEEWAY + 1, "not_yet_valid"},
};

static void test_time_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof time_cases / sizeof *time_cases; i++) {
        jwt_claims c = base_claims();
        char *tok;

        c.iat = NOW - 1000;
        c.exp = NOW + time_cases[i].exp_delta;
        c.nbf = time_cases[i].nbf_delta ? NOW + time_cases[i].nbf_delta : 0;
        tok = sign(&c);
        assert_reason(tok, time_cases[i].want, time_cases[i].name);
        free(tok);
    }
}

struct forged_case {
    const char *name;
    const char *hdr;
    const char *claims;
    enum sig_mode sig;
    const char *want; /* NULL: accepted */
};

static const struct forged_case forged_cases[] = {
    {"valid forged with the secret", HDR_OK, CLAIMS_OK, SIG_SECRET, NULL},
    {"typ omitted", "{\"alg\":\"HS256\"}", CLAIMS_OK, SIG_SECRET, NULL},
    {"kid is ignored", "{\"alg\":\"HS256\",\"kid\":\"../../etc/passwd\"}", CLAIMS_OK, SIG_SECRET,
     NULL},
    {"header whitespace", " { \"alg\" : \"HS256\" } ", CLAIMS_OK, SIG_SECRET, NULL},

    /* algorithm pinning */
    {"alg none, empty signature", "{\"alg\":\"none\",\"typ\":\"JWT\"}", CLAIMS_OK, SIG_EMPTY,
     "bad_algorithm"},
    {"alg None, empty signature", "{\"alg\":\"None\"}", CLAIMS_OK, SIG_EMPTY, "bad_algorithm"},
    {"alg NONE, signed", "{\"alg\":\"NONE\"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"alg none, signed", "{\"alg\":\"none\"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"RS256 with an HMAC signature (HS/RS confusion)", "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
     CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"ES256", "{\"alg\":\"ES256\"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"EdDSA", "{\"alg\":\"EdDSA\"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"HS384", "{\"alg\":\"HS384\"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"hs256 lowercase", "{\"alg\":\"hs256\"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"HS256 with trailing space", "{\"alg\":\"HS256 \"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"alg missing", "{\"typ\":\"JWT\"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"alg not a string", "{\"alg\":256}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"alg null", "{\"alg\":null}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"alg in an array", "{\"alg\":[\"HS256\"]}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"ALG key case", "{\"ALG\":\"HS256\"}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"duplicate alg", "{\"alg\":\"HS256\",\"alg\":\"none\"}", CLAIMS_OK, SIG_SECRET, "malformed"},

    /* key-selecting and critical header parameters */
    {"jku", "{\"alg\":\"HS256\",\"jku\":\"https://evil.test/jwks\"}", CLAIMS_OK, SIG_SECRET,
     "bad_algorithm"},
    {"jwk", "{\"alg\":\"HS256\",\"jwk\":{\"kty\":\"oct\",\"k\":\"AAAA\"}}", CLAIMS_OK, SIG_SECRET,
     "bad_algorithm"},
    {"x5u", "{\"alg\":\"HS256\",\"x5u\":\"https://evil.test/cert\"}", CLAIMS_OK, SIG_SECRET,
     "bad_algorithm"},
    {"x5c", "{\"alg\":\"HS256\",\"x5c\":[\"MIIB\"]}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"crit", "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", CLAIMS_OK, SIG_SECRET, "bad_algorithm"},
    {"typ not JWT", "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", CLAIMS_OK, SIG_SECRET, "malformed"},

    /* JSON shape of the header */
    {"header array", "[\"HS256\"]", CLAIMS_OK, SIG_SECRET, "malformed"},
    {"header string", "\"HS256\"", CLAIMS_OK, SIG_SECRET, "malformed"},
    {"header number", "256", CLAIMS_OK, SIG_SECRET, "malformed"},
    {"header null", "null", CLAIMS_OK, SIG_SECRET, "malformed"},
    {"header empty", "", CLAIMS_OK, SIG_SECRET, "malformed"},
    {"header truncated", "{\"alg\":\"HS256\"", CLAIMS_OK, SIG_SECRET, "malformed"},
    {"header trailing garbage", "{\"alg\":\"HS256\"}x", CLAIMS_OK, SIG_SECRET, "malformed"},
    {"header two objects", "{\"alg\":\"HS256\"}{}", CLAIMS_OK, SIG_SECRET, "malformed"},

    /* signatures */
    {"wrong secret", HDR_OK, CLAIMS_OK, SIG_OTHER, "bad_signature"},
    {"HS256 with empty signature", HDR_OK, CLAIMS_OK, SIG_EMPTY, "bad_signature"},

    /* JSON shape of the claims (correctly signed) */
    {"claims array", HDR_OK, "[1,2]", SIG_SECRET, "malformed"},
    {"claims string", HDR_OK, "\"sub\"", SIG_SECRET, "malformed"},
    {"claims empty", HDR_OK, "", SIG_SECRET, "malformed"},
    {"claims trailing garbage", HDR_OK, CLAIMS_OK "]", SIG_SECRET, "malformed"},
    {"claims duplicate sub", HDR_OK, CLAIMS_WITH("\"exp\":1700003600,\"sub\":\"other\""),
     SIG_SECRET, "malformed"},
    {"missing exp", HDR_OK, CLAIMS_WITH("\"jti\":\"x\""), SIG_SECRET, "missing_claim"},
    {"missing iat", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":1700003600}", SIG_SECRET,
     "missing_claim"},
    {"missing sub", HDR_OK,
     "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"iat\":1700000000,\"exp\":1700003600}", SIG_SECRET,
     "missing_claim"},
    {"missing iss", HDR_OK,
     "{\"sub\":\"" SUB "\",\"aud\":\"" AUD "\",\"iat\":1700000000,\"exp\":1700003600}", SIG_SECRET,
     "missing_claim"},
    {"missing aud", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"iat\":1700000000,\"exp\":1700003600}", SIG_SECRET,
     "missing_claim"},
    {"exp as string", HDR_OK, CLAIMS_WITH("\"exp\":\"1700003600\""), SIG_SECRET, "malformed"},
    {"exp negative", HDR_OK, CLAIMS_WITH("\"exp\":-1"), SIG_SECRET, "malformed"},
    {"exp huge", HDR_OK, CLAIMS_WITH("\"exp\":1e300"), SIG_SECRET, "malformed"},
    {"exp fractional", HDR_OK, CLAIMS_WITH("\"exp\":1700003600.5"), SIG_SECRET, NULL},
    {"nbf as string", HDR_OK, CLAIMS_WITH("\"exp\":1700003600,\"nbf\":\"0\""), SIG_SECRET,
     "malformed"},
    {"sub not a string", HDR_OK,
     "{\"sub\":42,\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "malformed"},
    {"role not a string", HDR_OK, CLAIMS_WITH("\"exp\":1700003600,\"role\":[\"owner\"]"),
     SIG_SECRET, "malformed"},
    {"sub of 63 characters fits", HDR_OK,
     "{\"sub\":\"012345678901234567890123456789012345678901234567890123456789012\",\"iss\":\"" ISS
     "\",\"aud\":\"" AUD "\",\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, NULL},
    {"sub of 64 characters", HDR_OK,
     "{\"sub\":\"0123456789012345678901234567890123456789012345678901234567890123\",\"iss\":\"" ISS
     "\",\"aud\":\"" AUD "\",\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "malformed"},
    {"role too long", HDR_OK, CLAIMS_WITH("\"exp\":1700003600,\"role\":\"administrator-owner\""),
     SIG_SECRET, "malformed"},

    /* issuer and audience */
    {"wrong iss", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"https://evil.test\",\"aud\":\"" AUD
     "\",\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "wrong_issuer"},
    {"iss prefix", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "x\",\"aud\":\"" AUD
     "\",\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "wrong_issuer"},
    {"wrong aud", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS
     "\",\"aud\":\"other-api\",\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "wrong_audience"},
    {"aud array containing it", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":[\"other-api\",\"" AUD
     "\"],\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, NULL},
    {"aud array without it", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS
     "\",\"aud\":[\"other-api\"],\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "wrong_audience"},
    {"aud empty array", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":[],\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "wrong_audience"},
    {"aud array with a number", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":[\"" AUD
     "\",7],\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "malformed"},
    {"aud object", HDR_OK,
     "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":{\"" AUD
     "\":true},\"iat\":1700000000,\"exp\":1700003600}",
     SIG_SECRET, "malformed"},
};

static void test_forged_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof forged_cases / sizeof *forged_cases; i++) {
        const struct forged_case *c = &forged_cases[i];
        char *tok = forge(c->hdr, c->claims, c->sig);

        assert_reason(tok, c->want, c->name);
        free(tok);
    }
}

static void test_aud_array_reports_audience(void **state)
{
    jwt_claims out;
    char *tok = forge(HDR_OK,
                      "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":[\"a\",\"" AUD
                      "\"],\"iat\":1700000000,\"exp\":1700003600}",
                      SIG_SECRET);

    (void)state;
    assert_null(verify(tok, &out));
    assert_string_equal(out.aud, AUD);
    free(tok);
}

static void test_tampered_payload(void **state)
{
    jwt_claims c = base_claims();
    char *tok = sign(&c);
    char *evil = forge(HDR_OK,
                       "{\"sub\":\"" SUB "\",\"role\":\"owner\",\"iss\":\"" ISS "\",\"aud\":\"" AUD
                       "\",\"iat\":1700000000,\"exp\":1700003600}",
                       SIG_SECRET);
    eb_buf spliced = {0};
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    const char *e1 = strchr(evil, '.'), *e2 = strrchr(evil, '.');

    (void)state;
    /* the original header and signature around another (valid-looking) payload */
    eb_buf_append(&spliced, tok, (size_t)(d1 - tok) + 1);
    eb_buf_append(&spliced, e1 + 1, (size_t)(e2 - e1 - 1));
    eb_buf_puts(&spliced, d2);
    assert_reason(spliced.data, "bad_signature", "spliced payload");

    /* one character of the payload changed */
    eb_buf_reset(&spliced);
    eb_buf_puts(&spliced, tok);
    spliced.data[(d1 - tok) + 5] = spliced.data[(d1 - tok) + 5] == 'A' ? 'B' : 'A';
    assert_reason(spliced.data, "bad_signature", "flipped payload character");
    eb_buf_free(&spliced);
    free(tok);
    free(evil);
}

static void test_tampered_signature(void **state)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    jwt_claims c = base_claims();
    char *tok = sign(&c);
    size_t n = strlen(tok);
    char *sig = strrchr(tok, '.') + 1;
    char saved = sig[0];
    size_t v;
    eb_buf longer = {0};

    (void)state;
    assert_reason(tok, NULL, "untouched");
    sig[0] = saved == 'A' ? 'B' : 'A';
    assert_reason(tok, "bad_signature", "first signature character");
    sig[0] = saved;

    /* The last of 43 characters carries 2 unused bits, which a canonical encoder leaves zero.
     * Setting one spells the same 32 bytes differently; it must still be refused. */
    saved = tok[n - 1];
    v = (size_t)(strchr(alphabet, saved) - alphabet);
    assert_int_equal(v & 3, 0);
    tok[n - 1] = alphabet[v | 1];
    assert_reason(tok, "bad_signature", "non-canonical last signature character");
    tok[n - 1] = saved;
    assert_reason(tok, NULL, "restored");

    tok[n - 1] = '\0';
    assert_reason(tok, "bad_signature", "truncated signature");
    tok[n - 1] = saved;

    eb_buf_puts(&longer, tok);
    eb_buf_puts(&longer, "AAAA");
    assert_reason(longer.data, "bad_signature", "extended signature");
    eb_buf_free(&longer);
    free(tok);
}

static void test_wrong_secret(void **state)
{
    jwt_claims c = base_claims(), out;
    char *tok = sign(&c);
    const char *reason = NULL;

    (void)state;
    assert_int_equal(jwt_verify_hs256(tok, other_secret, strlen(other_secret), ISS, AUD, NOW,
                                      LEEWAY, &out, &reason),
                     EB_ERR_UNAUTHENTICATED);
    assert_string_equal(reason, "bad_signature");
    /* a verifier misconfigured with a short secret accepts nothing */
    assert_int_equal(jwt_verify_hs256(tok, "short", 5, ISS, AUD, NOW, LEEWAY, &out, &reason),
                     EB_ERR_UNAUTHENTICATED);
    free(tok);
}

struct shape_case {
    const char *name;
    const char *token;
};

static const struct shape_case shape_cases[] = {
    {"empty", ""},
    {"one part", "eyJhbGciOiJIUzI1NiJ9"},
    {"two parts", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0"},
    {"two parts, trailing dot only", "eyJhbGciOiJIUzI1NiJ9."},
    {"dots only", ".."},
    {"three dots", "..."},
    {"header with padding", "eyJhbGciOiJIUzI1NiJ9=.eyJzdWIiOiJ4In0.AAAA"},
    {"header in standard base64", "eyJhbGciOiJIUzI1NiJ9+.eyJzdWIiOiJ4In0.AAAA"},
    {"header with a space", "eyJhbGciOiJIUz I1NiJ9.eyJzdWIiOiJ4In0.AAAA"},
};

static void test_shape_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof shape_cases / sizeof *shape_cases; i++)
        assert_reason(shape_cases[i].token, "malformed", shape_cases[i].name);
}

static void test_part_count(void **state)
{
    jwt_claims c = base_claims();
    char *tok = sign(&c);
    eb_buf b = {0};

    (void)state;
    /* 4 parts: a valid token with one more segment */
    eb_buf_printf(&b, "%s.%s", tok, "AAAA");
    assert_reason(b.data, "malformed", "four parts");
    eb_buf_reset(&b);
    eb_buf_printf(&b, "%s.", tok);
    assert_reason(b.data, "malformed", "trailing dot");
    eb_buf_reset(&b);
    /* 2 parts: the signature dropped */
    eb_buf_append(&b, tok, (size_t)(strrchr(tok, '.') - tok));
    assert_reason(b.data, "malformed", "two parts");
    eb_buf_free(&b);
    free(tok);
}

static void test_invalid_base64_payload(void **state)
{
    eb_buf hdr = {0};
    char *tok;

    (void)state;
    eb_base64url_encode(HDR_OK, strlen(HDR_OK), &hdr);
    /* correctly signed over text that is not base64url: refused after the signature */
    tok = sign_raw(hdr.data, "eyJzdWIiOiJ4In0*");
    assert_reason(tok, "malformed", "payload with '*'");
    free(tok);
    tok = sign_raw(hdr.data, "eyJzdWIiOiJ4In0=");
    assert_reason(tok, "malformed", "payload with padding");
    free(tok);
    tok = sign_raw(hdr.data, "e");
    assert_reason(tok, "malformed", "payload of one character");
    free(tok);
    tok = sign_raw(hdr.data, "");
    assert_reason(tok, "malformed", "empty payload");
    free(tok);
    tok = sign_raw("", "eyJzdWIiOiJ4In0");
    assert_reason(tok, "malformed", "empty header");
    free(tok);
    eb_buf_free(&hdr);
}

static void test_oversized_token(void **state)
{
    eb_buf claims = {0};
    char *tok;

    (void)state;
    /* correctly signed and otherwise valid, but larger than JWT_MAX_TOKEN_LEN */
    eb_buf_puts(&claims, "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":\"" AUD
                         "\",\"iat\":1700000000,\"exp\":1700003600,\"pad\":\"");
    for (int i = 0; i < JWT_MAX_TOKEN_LEN; i++)
        eb_buf_putc(&claims, 'x');
    eb_buf_puts(&claims, "\"}");
    tok = forge(HDR_OK, claims.data, SIG_SECRET);
    assert_true(strlen(tok) > JWT_MAX_TOKEN_LEN);
    assert_reason(tok, "malformed", "oversized");
    free(tok);

    /* the same padding, small enough, is accepted: the refusal above is the size alone */
    eb_buf_reset(&claims);
    eb_buf_puts(&claims, "{\"sub\":\"" SUB "\",\"iss\":\"" ISS "\",\"aud\":\"" AUD
                         "\",\"iat\":1700000000,\"exp\":1700003600,\"pad\":\"");
    for (int i = 0; i < 4096; i++)
        eb_buf_putc(&claims, 'x');
    eb_buf_puts(&claims, "\"}");
    tok = forge(HDR_OK, claims.data, SIG_SECRET);
    assert_reason(tok, NULL, "large but within the limit");
    free(tok);
    eb_buf_free(&claims);
}

static void test_null_arguments(void **state)
{
    jwt_claims c = base_claims(), out;
    char *tok = sign(&c);
    const char *reason = NULL;

    (void)state;
    assert_int_equal(
        jwt_verify_hs256(NULL, secret, strlen(secret), ISS, AUD, NOW, 0, &out, &reason),
        EB_ERR_UNAUTHENTICATED);
    assert_string_equal(reason, "malformed");
    assert_int_equal(
        jwt_verify_hs256(tok, secret, strlen(secret), NULL, AUD, NOW, 0, &out, &reason),
        EB_ERR_UNAUTHENTICATED);
    assert_int_equal(
        jwt_verify_hs256(tok, secret, strlen(secret), ISS, NULL, NOW, 0, &out, &reason),
        EB_ERR_UNAUTHENTICATED);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verify_round_trip),
        cmocka_unit_test(test_sign_with_nbf_and_large_times),
        cmocka_unit_test(test_sign_optional_claims_omitted),
        cmocka_unit_test(test_sign_refuses_bad_input),
        cmocka_unit_test(test_time_table),
        cmocka_unit_test(test_forged_table),
        cmocka_unit_test(test_aud_array_reports_audience),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_tampered_signature),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_shape_table),
        cmocka_unit_test(test_part_count),
        cmocka_unit_test(test_invalid_base64_payload),
        cmocka_unit_test(test_oversized_token),
        cmocka_unit_test(test_null_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
