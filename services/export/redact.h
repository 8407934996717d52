/* redact.h -- pseudonymization of personal data and secrets in exported text.
 * A redactor finds e-mail addresses, phone numbers, card numbers, SSNs, IP addresses, database
 * names and credentials (plus a team's own PCRE2 patterns) and replaces each with a token
 * <KIND_xxxxxxxx>, where xxxxxxxx is the first 8 hex digits of
 * HMAC-SHA256(team key, KIND ":" normalized value). See docs/export-redaction.md.
 * Threading: a redactor holds scratch state (HMAC context, PCRE2 match data); use it from one
 * thread at a time, or give each worker thread its own. */
#ifndef EVALBUS_EXPORT_REDACT_H
#define EVALBUS_EXPORT_REDACT_H

#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <stddef.h>
#include <stdint.h>

/* Built-in kinds; the token of each carries its upper-case name. */
typedef enum redact_kind {
    REDACT_EMAIL,
    REDACT_PHONE,
    REDACT_CARD,
    REDACT_SSN,
    REDACT_IP,
    REDACT_DBNAME,
    REDACT_SECRET,
    REDACT_BUILTIN_COUNT
} redact_kind;

enum {
    REDACT_KEY_MIN = 16,      /* shortest accepted team key, in bytes (32 random bytes advised) */
    REDACT_MAX_PATTERNS = 32, /* team patterns per redactor */
    REDACT_LABEL_MAX = 24,    /* label: [A-Z][A-Z0-9_]*, at most this many characters */
    REDACT_REGEX_MAX = 1024,  /* bytes of regex source per team pattern */
    REDACT_KIND_MAX = REDACT_BUILTIN_COUNT + REDACT_MAX_PATTERNS,
};

/* A team pattern: PCRE2 source (compiled in UTF mode) and the label its tokens carry. */
typedef struct redact_pattern {
    const char *regex;
    const char *label;
} redact_pattern;

/* Zero-initialise, then set key (required) and whatever else is needed. */
typedef struct redact_config {
    const void *key; /* the team's secret; kept only in the HMAC state, wiped on free */
    size_t key_len;  /* >= REDACT_KEY_MIN */
    unsigned off;    /* bit (1u << kind) turns a built-in kind off; 0 keeps them all on */
    const redact_pattern *patterns; /* may be NULL when n_patterns is 0; copied */
    size_t n_patterns;              /* <= REDACT_MAX_PATTERNS */
} redact_config;

/* Replacements counted per kind: count[k] for built-in kind k, count[REDACT_BUILTIN_COUNT + i]
 * for team pattern i. Calls add to it (zero it to start), so one value can sum a whole export. */
typedef struct redact_stats {
    uint64_t count[REDACT_KIND_MAX];
    uint64_t total;
} redact_stats;

typedef struct redactor redactor;

/* Creates a redactor. EB_ERR_INVALID (with a message naming the pattern) for a short key, too
 * many patterns, a bad label, a regex that does not compile or one that can match the empty
 * string. *out is freed with redact_free(). */
eb_status redact_new(const redact_config *cfg, redactor **out);
/* Frees r and wipes its copy of the key. NULL is ignored. */
void redact_free(redactor *r);

/* Appends in[0..len) to out with every detected value replaced by its token, and adds the
 * replacements to stats (may be NULL). Bytes that are not replaced are copied unchanged, and every
 * replaced span starts and ends on a character boundary, so valid UTF-8 in gives valid UTF-8 out.
 * in need not be NUL-terminated and may hold any bytes.
 * Errors: EB_ERR_INVALID when a team pattern exceeds its match limit (a pattern that backtracks
 * catastrophically): the text is not exported half-redacted; out is left as it was and stats are
 * untouched. */
eb_status redact_text(redactor *r, const char *in, size_t len, eb_buf *out, redact_stats *stats);

/* The variant for values that go into JSON strings. Contract:
 *   - in is the DECODED value (what a JSON parser returns: "\n" is one newline byte, "\u00e9"
 *     is the two bytes of U+00E9), never the escaped text between the quotes;
 *   - out receives the redacted value, still decoded: the caller escapes it again when it writes
 *     the JSON (eb_buf_json_escape). Tokens are plain ASCII (<, >, letters, digits, _), so no
 *     replacement can split an escape sequence or a UTF-8 sequence;
 *   - unlike redact_text(), the output is always valid UTF-8: each byte of an invalid sequence in
 *     the input becomes U+FFFD, so the re-escaped string is valid JSON whatever came in.
 *   - a NUL byte in the input is copied through; escape with a length-aware escaper if the value
 *     can hold one (values from cJSON cannot).
 * Errors as redact_text(). */
eb_status redact_json_string(redactor *r, const char *in, size_t len, eb_buf *out,
                             redact_stats *stats);

/* An upper bound of the bytes redact_text() or redact_json_string() append for len input bytes. */
size_t redact_output_bound(const redactor *r, size_t len);

/* Number of kinds of r (built-in + team patterns), and the name of kind k ("EMAIL", "ORDER", or
 * NULL when k is out of range). The name lives as long as r. */
size_t redact_kind_count(const redactor *r);
const char *redact_kind_name(const redactor *r, size_t k);

#endif
