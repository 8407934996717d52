/* password.c -- scrypt password hashes in a self-describing string (format in password.h).
 * Derivation goes through OpenSSL 3's EVP_KDF "SCRYPT" with explicit OSSL_PARAMs. The cost
 * parameters are bounded both when hashing and when parsing a stored string (log2 N 10..20,
 * r 1..16, p 1..4, and 128 * r * N at most PASSWORD_MAX_MEM), so a corrupted or hostile row in
 * the database cannot make a login allocate gigabytes or spin for minutes. The parser accepts
 * exactly what password_hash() writes -- decimal numbers without sign or leading zeros, a salt
 * of 16 and a key of 32 bytes in canonical base64url -- and anything else never matches.
 * Ownership: password_hash() returns a string the caller frees; derived keys and copies of
 * secrets are wiped before their memory is released. Threading: reentrant. */
#include "password.h"

#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <stdint.h>
#include <string.h>

#define PASSWORD_SALT_LEN 16
#define PASSWORD_KEY_LEN 32
#define PASSWORD_LOG2_N_MIN 10
#define PASSWORD_LOG2_N_MAX 20
#define PASSWORD_R_MAX 16
#define PASSWORD_P_MAX 4
/* Cap on scrypt's main table (128 * r * N bytes), on top of the per-parameter bounds. */
#define PASSWORD_MAX_MEM ((uint64_t)256 << 20)
/* An encoded string is far shorter than this; longer input is refused before parsing. */
#define PASSWORD_ENCODED_MAX 256

static const char scrypt_tag[] = "$scrypt$";

static bool params_ok(password_params pp)
{
    if (pp.log2_n < PASSWORD_LOG2_N_MIN || pp.log2_n > PASSWORD_LOG2_N_MAX)
        return false;
    if (pp.r < 1 || pp.r > PASSWORD_R_MAX || pp.p < 1 || pp.p > PASSWORD_P_MAX)
        return false;
    return (uint64_t)128 * (uint64_t)pp.r * ((uint64_t)1 << pp.log2_n) <= PASSWORD_MAX_MEM;
}

/* Derives PASSWORD_KEY_LEN bytes into key. params must already be within bounds. */
static eb_status derive(const char *password, size_t plen, const unsigned char *salt,
                        password_params pp, unsigned char key[PASSWORD_KEY_LEN])
{
    eb_status st = EB_OK;
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *ctx = NULL;
    uint64_t n = (uint64_t)1 << pp.log2_n;
    uint32_t r = (uint32_t)pp.r;
    uint32_t p = (uint32_t)pp.p;
    uint64_t maxmem = (uint64_t)128 * r * n * p * 2 + ((uint64_t)1 << 20);
    OSSL_PARAM params[7];
    size_t i = 0;

    kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
    if (!kdf) {
        st = eb_error(EB_ERR_INTERNAL, "scrypt is not available from OpenSSL");
        goto cleanup;
    }
    ctx = EVP_KDF_CTX_new(kdf);
    if (!ctx) {
        st = eb_error(EB_ERR_INTERNAL, "EVP_KDF_CTX_new failed");
        goto cleanup;
    }
    params[i++] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)password, plen);
    params[i++] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, PASSWORD_SALT_LEN);
    params[i++] = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
    params[i++] = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
    params[i++] = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p);
    params[i++] = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
    params[i] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, key, PASSWORD_KEY_LEN, params) != 1) {
        st = eb_error(EB_ERR_INTERNAL, "scrypt derivation failed (ln=%d r=%d p=%d)", pp.log2_n,
                      pp.r, pp.p);
        goto cleanup;
    }
cleanup:
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return st;
}

eb_status password_hash(const char *password, password_params params, char **out)
{
    eb_status st = EB_OK;
    unsigned char salt[PASSWORD_SALT_LEN];
    unsigned char key[PASSWORD_KEY_LEN];
    size_t plen;
    eb_buf b = {0};

    *out = NULL;
    if (!password) {
        st = eb_error(EB_ERR_INVALID, "password is missing");
        goto cleanup;
    }
    plen = strnlen(password, PASSWORD_MAX_LEN + 1);
    if (plen < PASSWORD_MIN_LEN || plen > PASSWORD_MAX_LEN) {
        st = eb_error(EB_ERR_INVALID, "password must be %d to %d bytes long", PASSWORD_MIN_LEN,
                      PASSWORD_MAX_LEN);
        goto cleanup;
    }
    if (!params_ok(params)) {
        st = eb_error(EB_ERR_INVALID, "scrypt parameters out of range (ln=%d r=%d p=%d)",
                      params.log2_n, params.r, params.p);
        goto cleanup;
    }
    eb_random_bytes(salt, sizeof salt);
    st = derive(password, plen, salt, params, key);
    if (st != EB_OK)
        goto cleanup;
    eb_buf_printf(&b, "%sln=%d,r=%d,p=%d$", scrypt_tag, params.log2_n, params.r, params.p);
    eb_base64url_encode(salt, sizeof salt, &b);
    eb_buf_putc(&b, '$');
    eb_base64url_encode(key, sizeof key, &b);
    *out = eb_buf_steal(&b);
cleanup:
    eb_cleanse(key, sizeof key);
    eb_buf_free(&b);
    return st;
}

/* Reads "<name>=<decimal>" at *p, a number without sign or leading zero of at most 2 digits,
 * followed by the character end; advances *p past end. */
static bool parse_field(const char **p, const char *name, char end, int *value)
{
    size_t nlen = strlen(name);
    const char *s = *p;
    int v = 0;
    int digits = 0;

    if (strncmp(s, name, nlen) != 0 || s[nlen] != '=')
        return false;
    s += nlen + 1;
    if (s[0] == '0')
        return false; /* no zero, no leading zeros: every bound starts at 1 or more */
    while (*s >= '0' && *s <= '9') {
        if (++digits > 2)
            return false;
        v = v * 10 + (*s - '0');
        s++;
    }
    if (digits == 0 || *s != end)
        return false;
    *value = v;
    *p = s + 1;
    return true;
}

/* Decodes a base64url field of exactly want bytes ending at the next '$' or at the end. */
static bool parse_b64(const char **p, char end, size_t want, unsigned char *dst)
{
    const char *s = *p;
    const char *stop = end ? strchr(s, end) : s + strlen(s);
    eb_buf b = {0};
    bool ok = false;

    if (!stop || !eb_base64url_decode(s, (size_t)(stop - s), &b) || b.len != want)
        goto cleanup;
    memcpy(dst, b.data, want);
    *p = end ? stop + 1 : stop;
    ok = true;
cleanup:
    eb_cleanse(b.data, b.len);
    eb_buf_free(&b);
    return ok;
}

bool password_verify(const char *password, const char *encoded)
{
    password_params pp = {0, 0, 0};
    unsigned char salt[PASSWORD_SALT_LEN];
    unsigned char want[PASSWORD_KEY_LEN];
    unsigned char got[PASSWORD_KEY_LEN];
    const char *p = encoded;
    size_t plen;
    bool ok = false;

    memset(want, 0, sizeof want);
    memset(got, 0, sizeof got);
    if (!password || !encoded || strnlen(encoded, PASSWORD_ENCODED_MAX) >= PASSWORD_ENCODED_MAX)
        goto cleanup;
    plen = strnlen(password, PASSWORD_MAX_LEN + 1);
    if (plen > PASSWORD_MAX_LEN)
        goto cleanup;
    if (strncmp(p, scrypt_tag, sizeof scrypt_tag - 1) != 0)
        goto cleanup;
    p += sizeof scrypt_tag - 1;
    if (!parse_field(&p, "ln", ',', &pp.log2_n) || !parse_field(&p, "r", ',', &pp.r) ||
        !parse_field(&p, "p", '$', &pp.p) || !params_ok(pp))
        goto cleanup;
    if (!parse_b64(&p, '$', sizeof salt, salt) || !parse_b64(&p, '\0', sizeof want, want))
        goto cleanup;
    if (derive(password, plen, salt, pp, got) != EB_OK)
        goto cleanup;
    ok = eb_ct_equal(got, want, sizeof got);
cleanup:
    eb_cleanse(got, sizeof got);
    eb_cleanse(want, sizeof want);
    return ok;
}
