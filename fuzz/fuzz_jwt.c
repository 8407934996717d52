/* fuzz_jwt.c -- libFuzzer target for jwt_verify_hs256().
 * Each input is verified twice under a fixed secret, issuer, audience and time:
 *   1. as a whole token, which exercises the length bound, splitting, base64url, the header
 *      checks and the signature comparison;
 *   2. as the claims JSON of a token this target signs itself with the verifier's secret --
 *      the fuzzer could never forge the HMAC, so without this the claims parser and checks
 *      would be out of its reach.
 * Any crash, leak or sanitizer report is a bug; beyond that only the contract is checked: a
 * refusal comes with a reason and success with none. */
#include "jwt.h"

#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_secret[] = "fuzz-secret-0123456789abcdef-0123456789";
static const char fuzz_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static void verify_one(const char *token)
{
    jwt_claims claims;
    const char *reason = NULL;
    eb_status st;

    st = jwt_verify_hs256(token, fuzz_secret, sizeof fuzz_secret - 1, "https://auth.evalbus.test",
                          "evalbus-api", 1700000000LL, 30, &claims, &reason);
    if ((st == EB_OK) != (reason == NULL))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *token = eb_strndup((const char *)data, size);
    unsigned char mac[32];
    eb_buf signed_tok = {0};

    verify_one(token);

    eb_base64url_encode(fuzz_header, sizeof fuzz_header - 1, &signed_tok);
    eb_buf_putc(&signed_tok, '.');
    eb_base64url_encode(data, size, &signed_tok);
    eb_hmac_sha256(fuzz_secret, sizeof fuzz_secret - 1, signed_tok.data, signed_tok.len, mac);
    eb_buf_putc(&signed_tok, '.');
    eb_base64url_encode(mac, sizeof mac, &signed_tok);
    verify_one(signed_tok.data);

    eb_buf_free(&signed_tok);
    free(token);
    return 0;
}
