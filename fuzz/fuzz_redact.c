/* fuzz_redact.c -- libFuzzer target for redact_text() and redact_json_string().
 * The first input byte picks the entry point and whether team patterns are on; the rest is the
 * text. Checked beyond "no crash, leak or sanitizer report":
 *   - the output never exceeds redact_output_bound();
 *   - redact_json_string() always gives valid UTF-8, and redact_text() does whenever the input
 *     is valid UTF-8 (a replacement never splits a character);
 *   - with the built-in kinds only, the result does not depend on the call (same output twice)
 *     and an input without any of the bytes that can start a match comes back unchanged.
 * Team patterns: one simple, one with Unicode, one that backtracks (its match limit may be hit,
 * which must fail cleanly and leave the buffer as it was). */
#include "redact.h"

#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_key[] = "fuzz-team-key-0123456789abcdef";
static const redact_pattern fuzz_patterns[] = {
    {"ORD-[0-9]{4,8}", "ORDER"},
    {"(?i)zo[eë]\\b", "NAME"},
    {"(x+x+)+y", "SLOW"},
};

static redactor *fuzz_builtin, *fuzz_custom;

static redactor *fuzz_make(bool custom)
{
    redact_config cfg = {.key = fuzz_key, .key_len = sizeof fuzz_key - 1};
    redactor *r = NULL;
    if (custom) {
        cfg.patterns = fuzz_patterns;
        cfg.n_patterns = sizeof fuzz_patterns / sizeof fuzz_patterns[0];
    }
    if (redact_new(&cfg, &r) != EB_OK)
        abort();
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (!fuzz_builtin) {
        fuzz_builtin = fuzz_make(false);
        fuzz_custom = fuzz_make(true);
    }
    bool json = data[0] & 1, custom = data[0] & 2;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    redactor *r = custom ? fuzz_custom : fuzz_builtin;
    eb_buf out = {0}, again = {0};
    eb_status st;

    eb_buf_puts(&out, "x"); /* output is appended to what is there */
    st = json ? redact_json_string(r, in, len, &out, NULL) : redact_text(r, in, len, &out, NULL);
    if (st != EB_OK) {
        if (!custom || out.len != 1 || out.data[0] != 'x')
            abort();
        goto cleanup;
    }
    if (out.len - 1 > redact_output_bound(r, len))
        abort();
    if ((json || eb_utf8_valid(in, len)) && !eb_utf8_valid(out.data + 1, out.len - 1))
        abort();
    if (!custom) {
        st = json ? redact_json_string(r, in, len, &again, NULL)
                  : redact_text(r, in, len, &again, NULL);
        if (st != EB_OK || again.len != out.len - 1 || memcmp(again.data, out.data + 1, again.len))
            abort();
        /* nothing that can begin a match: no digit, letter, '@', '+', '(', ':' or '-' */
        bool plain = true;
        for (size_t k = 0; k < len && plain; k++) {
            unsigned c = (unsigned char)in[k];
            if (c && c < 0x80 &&
                (strchr("@+(:-_", (int)c) || (c | 0x20u) - 'a' < 26u || c - '0' < 10u))
                plain = false;
        }
        if (plain && !json && (out.len - 1 != len || memcmp(out.data + 1, in, len)))
            abort();
    }
cleanup:
    eb_buf_free(&out);
    eb_buf_free(&again);
    return 0;
}
