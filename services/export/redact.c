/* export/redact.c -- pseudonymize PII and secrets in exported text.
 *
 * Finds e-mail addresses, phone numbers, card numbers (Luhn-checked), SSNs, IPv4 and IPv6
 * addresses, database names and passwords in connection strings, and credentials (provider API
 * keys, our eb_ keys, JWTs, Bearer values, PEM private keys), and replaces each with a stable
 * token <KIND_xxxxxxxx>: the first 8 hex digits of HMAC-SHA256(team key, KIND ":" normalized
 * value), so equal values stay equal across one team's exports and cannot be reversed without
 * the key. Teams add their own PCRE2 patterns, which win over the built-in kinds where they
 * overlap.
 *
 * How it works: one forward pass. A 256-entry class table splits bytes into word bytes
 * (A-Z a-z 0-9 _), trigger punctuation (@ + ( : -) and the rest, which is skipped. Detection is
 * tried only at the start of a word, dispatched on its first byte (digits: IPv4, SSN, card,
 * phone, IPv6; s/A/g/x/e/B/d/p: the credential and key=value shapes; any word followed by
 * "://": a URI), and at trigger bytes (e-mail around '@', looking back for the local part;
 * international phones at '+'; "(212)" phones at '('; "::" IPv6; PEM at "-----BEGIN "). The
 * rest of a word is skipped without a look. Every matcher is hand-written, checks its left and
 * right neighbours so that a match is never part of a longer token (a hash, a UUID, a version,
 * a date), and matches ASCII only, so a replaced span starts and ends on a character boundary.
 * Unchanged bytes are copied in runs, when the next replacement is written. Team patterns run
 * with PCRE2 (UTF mode, JIT when available): each pattern's next match is searched once and
 * kept until the scan passes it, so a text costs one pcre2_match() call per pattern plus one
 * per match.
 *
 * A connection string's database name is found at the scheme but lies further on: it is held
 * as a pending span (hold_s/hold_e) that the scan replaces when it gets there, so the host in
 * between is still scanned (an IP literal there is replaced too).
 *
 * Ownership: redact_text() appends to the caller's buffer; the redactor owns its compiled
 * patterns, match data and HMAC context. Nothing else is allocated per call.
 * Threading: a redactor is used by one thread at a time. */
#include "redact.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pcre2.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE SIZE_MAX

enum {
    C_WORD = 1, /* A-Z a-z 0-9 _ */
    C_HOT = 2,  /* a word starting with it may be a match: digits, s A g x e B b d D p P */
    C_TRIG = 4, /* @ + ( : - */
    TOKEN_HEX = 8,
    EMAIL_LOCAL_MAX = 64,
    EMAIL_DOMAIN_MAX = 253,
    VALUE_MAX = 256,       /* longest password / database name / quoted value taken */
    BEARER_MAX = 4096,     /* longest Bearer token taken */
    PEM_MAX = 64 * 1024,   /* how far to look for the end of a PEM block */
    URI_AUTH_MAX = 512,    /* longest user:password@host:port looked at */
    MATCH_LIMIT = 1000000, /* PCRE2 match limit per search (team patterns) */
    JIT_STACK_MAX = 1024 * 1024,
};

static const char *const builtin_names[] = {
    [REDACT_EMAIL] = "EMAIL",   [REDACT_PHONE] = "PHONE", [REDACT_CARD] = "CARD",
    [REDACT_SSN] = "SSN",       [REDACT_IP] = "IP",       [REDACT_DBNAME] = "DBNAME",
    [REDACT_SECRET] = "SECRET",
};
_Static_assert(sizeof builtin_names / sizeof builtin_names[0] == REDACT_BUILTIN_COUNT,
               "a name for every built-in kind");

typedef struct custom_pattern {
    pcre2_code *code;
    char label[REDACT_LABEL_MAX + 1];
} custom_pattern;

struct redactor {
    unsigned off; /* disabled built-in kinds */
    unsigned char cls[256];
    EVP_MAC *mac;
    EVP_MAC_CTX *mctx; /* keyed once; re-initialised (same key) for every token */
    size_t max_token;  /* longest token in bytes */
    size_t n_custom;
    custom_pattern custom[REDACT_MAX_PATTERNS];
    pcre2_match_data *md;
    pcre2_match_context *mcx;
    pcre2_jit_stack *jit;
    /* per call: the next match of each team pattern (start NONE: none left) */
    bool searched[REDACT_MAX_PATTERNS];
    size_t cs[REDACT_MAX_PATTERNS], ce[REDACT_MAX_PATTERNS];
};

typedef struct scan {
    redactor *r;
    const unsigned char *in;
    size_t len;
    eb_buf *out;
    bool json;
    size_t emitted;        /* in[0..emitted) is in out already */
    size_t floor;          /* e-mail local parts do not reach back before this */
    size_t hold_s, hold_e; /* a pending DBNAME span, hold_s NONE if none */
    redact_stats stats;    /* merged into the caller's on success */
} scan;

static void redact_fatal(const char *what)
{
    fprintf(stderr, "evalbus: redact: %s failed; cannot continue safely\n", what);
    abort();
}

/* ------------------------------------------------------------------ characters */

static inline bool is_digit(unsigned c)
{
    return c - '0' < 10u;
}
static inline bool is_alpha(unsigned c)
{
    return (c | 0x20u) - 'a' < 26u;
}
static inline bool is_upper(unsigned c)
{
    return c - 'A' < 26u;
}
static inline bool is_lower(unsigned c)
{
    return c - 'a' < 26u;
}
static inline bool is_alnum(unsigned c)
{
    return is_digit(c) || is_alpha(c);
}
static inline bool is_word(unsigned c)
{
    return is_alnum(c) || c == '_';
}
static inline bool is_hex(unsigned c)
{
    return is_digit(c) || (c | 0x20u) - 'a' < 6u;
}
static inline bool is_b64url(unsigned c)
{
    return is_alnum(c) || c == '-' || c == '_';
}
static inline unsigned lower(unsigned c)
{
    return c - 'A' < 26u ? c | 0x20u : c;
}
static inline bool on(const scan *st, redact_kind k)
{
    return !(st->r->off & (1u << k));
}

static size_t digits_at(const scan *st, size_t j)
{
    size_t k = j;
    while (k < st->len && is_digit(st->in[k]))
        k++;
    return k - j;
}

/* Copies the digits of in[s..e) to d (at most cap), returns how many. */
static size_t copy_digits(const unsigned char *in, size_t s, size_t e, char *d, size_t cap)
{
    size_t n = 0;
    for (size_t k = s; k < e && n < cap; k++)
        if (is_digit(in[k]))
            d[n++] = (char)in[k];
    return n;
}

/* Before a number: not inside a longer token, not an order number (#48213), a price ($12),
 * a negative or fractional number, an id with a prefix (INV-...) or a path segment. */
static bool num_left_ok(const scan *st, size_t s)
{
    if (s == 0)
        return true;
    switch (st->in[s - 1]) {
    case '.':
    case '-':
    case '_':
    case '#':
    case '$':
    case ',':
    case '+':
    case '@':
    case '/':
        return false;
    default:
        return !is_word(st->in[s - 1]);
    }
}

/* After a number: it does not go on as a longer number (1.5, 10:30, 2024-11, 1,299, 1/2). */
static bool num_right_ok(const scan *st, size_t j)
{
    if (j >= st->len)
        return true;
    unsigned c = st->in[j];
    if (is_word(c) || c == '@')
        return false;
    if ((c == '.' || c == ',' || c == ':' || c == '-' || c == '/') && j + 1 < st->len &&
        is_digit(st->in[j + 1]))
        return false;
    return true;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, surrogates, > U+10FFFF),
 * 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4)
        return 0;
    size_t k = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0) || (c == 0xF0 && p[1] < 0x90) ||
        (c == 0xF4 && p[1] >= 0x90))
        return 0;
    return k;
}

/* Appends p[0..n) with each byte of an invalid UTF-8 sequence replaced by U+FFFD. */
static void append_utf8_clean(eb_buf *out, const unsigned char *p, size_t n)
{
    size_t i = 0, run = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (k) {
            i += k;
            continue;
        }
        eb_buf_append(out, p + run, i - run);
        eb_buf_append(out, "\xEF\xBF\xBD", 3);
        run = ++i;
    }
    eb_buf_append(out, p + run, n - run);
}

/* ------------------------------------------------------------------ tokens */

static const char *kind_label(const redactor *r, size_t kind)
{
    return kind < REDACT_BUILTIN_COUNT ? builtin_names[kind]
                                       : r->custom[kind - REDACT_BUILTIN_COUNT].label;
}

/* Copies in[emitted..upto) to the output. */
static void pass(scan *st, size_t upto)
{
    if (upto <= st->emitted)
        return;
    if (st->json)
        append_utf8_clean(st->out, st->in + st->emitted, upto - st->emitted);
    else
        eb_buf_append(st->out, st->in + st->emitted, upto - st->emitted);
    st->emitted = upto;
}

static void mac_begin(redactor *r, size_t kind)
{
    const char *label = kind_label(r, kind);
    if (!EVP_MAC_init(r->mctx, NULL, 0, NULL) ||
        !EVP_MAC_update(r->mctx, (const unsigned char *)label, strlen(label)) ||
        !EVP_MAC_update(r->mctx, (const unsigned char *)":", 1))
        redact_fatal("HMAC-SHA256");
}

static void mac_update(redactor *r, const void *p, size_t n)
{
    if (n && !EVP_MAC_update(r->mctx, p, n))
        redact_fatal("HMAC-SHA256");
}

/* Finishes the MAC begun by mac_begin() and replaces in[s..e) with the token. */
static void token_end(scan *st, size_t s, size_t e, size_t kind)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mlen = 0;
    const char *label = kind_label(st->r, kind);
    size_t llen = strlen(label);
    char tok[REDACT_LABEL_MAX + TOKEN_HEX + 4];

    if (!EVP_MAC_final(st->r->mctx, mac, &mlen, sizeof mac) || mlen < TOKEN_HEX / 2)
        redact_fatal("HMAC-SHA256");
    pass(st, s);
    tok[0] = '<';
    memcpy(tok + 1, label, llen);
    tok[1 + llen] = '_';
    for (size_t k = 0; k < TOKEN_HEX / 2; k++) {
        tok[2 + llen + 2 * k] = hex[mac[k] >> 4];
        tok[3 + llen + 2 * k] = hex[mac[k] & 15];
    }
    tok[2 + llen + TOKEN_HEX] = '>';
    eb_buf_append(st->out, tok, 3 + llen + TOKEN_HEX);
    st->emitted = e;
    st->stats.count[kind]++;
    st->stats.total++;
}

/* Replaces in[s..e) with the token of value v (the normalized form of the match). */
static void put_token(scan *st, size_t s, size_t e, size_t kind, const void *v, size_t vlen)
{
    mac_begin(st->r, kind);
    mac_update(st->r, v, vlen);
    token_end(st, s, e, kind);
}

/* ------------------------------------------------------------------ numbers */

static bool luhn_ok(const char *d, size_t n)
{
    unsigned sum = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned v = (unsigned)(d[n - 1 - k] - '0');
        if (k & 1) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    return sum % 10 == 0;
}

/* Parses a dotted quad at j (octets 0-255, no leading zeros); returns its end or 0. */
static size_t parse_ipv4(const scan *st, size_t j, unsigned char oct[4])
{
    for (int k = 0; k < 4; k++) {
        if (k) {
            if (j >= st->len || st->in[j] != '.')
                return 0;
            j++;
        }
        size_t n = digits_at(st, j);
        if (n == 0 || n > 3 || (n > 1 && st->in[j] == '0'))
            return 0;
        unsigned v = 0;
        for (size_t q = 0; q < n; q++)
            v = v * 10 + (unsigned)(st->in[j + q] - '0');
        if (v > 255)
            return 0;
        oct[k] = (unsigned char)v;
        j += n;
    }
    return j;
}

static size_t det_ipv4(scan *st, size_t s, size_t lim)
{
    unsigned char oct[4];
    if (s > 0 && st->in[s - 1] == '.')
        return 0;
    size_t e = parse_ipv4(st, s, oct);
    if (!e || e > lim)
        return 0;
    if (e < st->len) {
        unsigned c = st->in[e];
        if (is_word(c) || c == '@' || (c == '.' && e + 1 < st->len && is_alnum(st->in[e + 1])))
            return 0;
    }
    put_token(st, s, e, REDACT_IP, st->in + s, e - s);
    return e;
}

/* AAA-GG-SSSS; never area 000, 666 or 9xx, group 00 or serial 0000 (never issued). */
static size_t det_ssn(scan *st, size_t s, size_t lim)
{
    const unsigned char *p = st->in + s;
    if (s + 11 > st->len || digits_at(st, s) != 3 || p[3] != '-' || digits_at(st, s + 4) != 2 ||
        p[6] != '-' || digits_at(st, s + 7) != 4)
        return 0;
    if (!memcmp(p, "000", 3) || !memcmp(p, "666", 3) || p[0] == '9' || !memcmp(p + 4, "00", 2) ||
        !memcmp(p + 7, "0000", 4))
        return 0;
    if (s + 11 > lim || !num_right_ok(st, s + 11))
        return 0;
    char d[9];
    copy_digits(st->in, s, s + 11, d, sizeof d);
    put_token(st, s, s + 11, REDACT_SSN, d, sizeof d);
    return s + 11;
}

/* 13-19 digits, unbroken or in groups (a first group of 4, then groups of 3-6) split by one
 * kind of separator (space or '-'); first digit 2-6 (the card networks' major industry
 * identifiers); Luhn-valid. The longest candidate that fits wins. */
static size_t det_card(scan *st, size_t s, size_t lim)
{
    char d[20];
    size_t nd = 0, ends[8], totals[8];
    int nc = 0;
    size_t n0 = digits_at(st, s);

    if (n0 >= 13) {
        if (n0 > 19)
            return 0;
        nd = copy_digits(st->in, s, s + n0, d, sizeof d);
        ends[0] = s + n0;
        totals[0] = nd;
        nc = 1;
    } else if (n0 == 4 && s + 4 < st->len && (st->in[s + 4] == ' ' || st->in[s + 4] == '-')) {
        unsigned char sep = st->in[s + 4];
        size_t j = s + 4;
        nd = copy_digits(st->in, s, j, d, sizeof d);
        while (j < st->len && st->in[j] == sep && nc < 8) {
            size_t g = digits_at(st, j + 1);
            if (g < 3 || g > 6 || nd + g > 19)
                break;
            nd += copy_digits(st->in, j + 1, j + 1 + g, d + nd, sizeof d - nd);
            j += 1 + g;
            if (nd >= 13) {
                ends[nc] = j;
                totals[nc++] = nd;
            }
        }
    } else {
        return 0;
    }
    if (nc == 0 || d[0] < '2' || d[0] > '6')
        return 0;
    for (int c = nc - 1; c >= 0; c--) {
        if (ends[c] <= lim && num_right_ok(st, ends[c]) && luhn_ok(d, totals[c])) {
            put_token(st, s, ends[c], REDACT_CARD, d, totals[c]);
            return ends[c];
        }
    }
    return 0;
}

/* North American numbers: [1 sep] (NXX) NXX-XXXX | NXX sep NXX sep XXXX, sep one of " -." used
 * the same way twice. Normalized with the country code: 1NXXNXXXXXX, like +1 numbers. */
static size_t det_phone_nanp(scan *st, size_t s, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len, j = s, area, exch, line;
    unsigned char sep1 = 0;
    bool paren = false;

    if (in[j] == '1' && j + 2 < len && (in[j + 1] == ' ' || in[j + 1] == '-' || in[j + 1] == '.') &&
        (is_digit(in[j + 2]) || in[j + 2] == '('))
        j += 2;
    if (j < len && in[j] == '(') {
        if (j + 5 > len || digits_at(st, j + 1) != 3 || in[j + 4] != ')')
            return 0;
        area = j + 1;
        paren = true;
        j += 5;
        if (j < len && (in[j] == ' ' || in[j] == '-'))
            j++;
    } else {
        if (digits_at(st, j) != 3)
            return 0;
        area = j;
        j += 3;
        if (j >= len || !(in[j] == ' ' || in[j] == '-' || in[j] == '.'))
            return 0;
        sep1 = in[j++];
    }
    if (digits_at(st, j) != 3)
        return 0;
    exch = j;
    j += 3;
    if (j >= len)
        return 0;
    if (paren ? !(in[j] == ' ' || in[j] == '-' || in[j] == '.') : in[j] != sep1)
        return 0;
    j++;
    if (digits_at(st, j) != 4)
        return 0;
    line = j;
    j += 4;
    if (in[area] < '2' || in[exch] < '2' || j > lim || !num_right_ok(st, j))
        return 0;
    char d[11] = {'1'};
    memcpy(d + 1, in + area, 3);
    memcpy(d + 4, in + exch, 3);
    memcpy(d + 7, in + line, 4);
    put_token(st, s, j, REDACT_PHONE, d, sizeof d);
    return j;
}

/* National numbers with a trunk prefix 0 (020 7946 0958, 01 23 45 67 89, 06-12345678,
 * (030) 1234 5678): a first group of 2-5 digits starting with one 0, then groups of 2-8 split by
 * one kind of separator, 10 or 11 digits in all. */
static size_t det_phone_trunk(scan *st, size_t s, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len, j = s, g, nd = 0, best = 0, bestnd = 0;
    unsigned char sep = 0;
    bool need_sep = true;
    char d[16];

    if (in[j] == '(') {
        g = digits_at(st, j + 1);
        if (g < 2 || g > 5 || j + 2 + g >= len || in[j + 1 + g] != ')' || in[j + 2 + g] != ' ')
            return 0;
        nd = copy_digits(in, j + 1, j + 1 + g, d, sizeof d);
        j += g + 3;
        need_sep = false;
    } else {
        g = digits_at(st, j);
        if (g < 2 || g > 5)
            return 0;
        nd = copy_digits(in, j, j + g, d, sizeof d);
        j += g;
    }
    if (d[0] != '0' || d[1] == '0')
        return 0;
    for (;;) {
        size_t k = j;
        if (need_sep) {
            if (k + 1 >= len || !(in[k] == ' ' || in[k] == '-' || in[k] == '.') ||
                (sep && in[k] != sep) || !is_digit(in[k + 1]))
                break;
            sep = in[k++];
        }
        need_sep = true;
        g = digits_at(st, k);
        if (g < 2 || g > 8 || nd + g > 11)
            break;
        nd += copy_digits(in, k, k + g, d + nd, sizeof d - nd);
        j = k + g;
        if (nd >= 10 && j <= lim && num_right_ok(st, j)) {
            best = j;
            bestnd = nd;
        }
    }
    if (!best)
        return 0;
    put_token(st, s, best, REDACT_PHONE, d, bestnd);
    return best;
}

/* International numbers: '+', a country code and groups split by " -." or "(0)" style groups,
 * 8 to 15 digits in all (E.164). Normalized to the digits. */
static size_t det_phone_intl(scan *st, size_t s, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len, j = s + 1, nd = 0, best = 0, bestnd = 0;
    char d[16];

    if (s > 0 && (is_word(in[s - 1]) || in[s - 1] == '.' || in[s - 1] == ')'))
        return 0;
    if (j >= len || in[j] < '1' || in[j] > '9')
        return 0;
    for (;;) {
        if (j < len && is_digit(in[j])) {
            size_t g = digits_at(st, j);
            if (nd + g > 15)
                break;
            nd += copy_digits(in, j, j + g, d + nd, sizeof d - nd);
            j += g;
        } else if (j < len && in[j] == '(') {
            size_t g = digits_at(st, j + 1);
            if (g == 0 || g > 4 || j + 1 + g >= len || in[j + 1 + g] != ')' || nd + g > 15)
                break;
            /* "(0)": the trunk prefix, not dialed from abroad, so not part of the number */
            if (!(g == 1 && in[j + 1] == '0'))
                nd += copy_digits(in, j + 1, j + 1 + g, d + nd, sizeof d - nd);
            j += g + 2;
        } else {
            break;
        }
        if (nd >= 8 && j <= lim && in[j - 1] != ')' && num_right_ok(st, j)) {
            best = j;
            bestnd = nd;
        }
        if (j + 1 < len && (in[j] == ' ' || in[j] == '-' || in[j] == '.') &&
            (is_digit(in[j + 1]) || in[j + 1] == '('))
            j++;
        else if (!(j < len && (in[j] == '(' || (in[j - 1] == ')' && is_digit(in[j])))))
            break;
    }
    if (!best)
        return 0;
    put_token(st, s, best, REDACT_PHONE, d, bestnd);
    return best;
}

/* ------------------------------------------------------------------ IPv6 */

/* Full form (8 groups) or compressed with one "::", optionally ending in a dotted quad. To spare
 * C++/Rust paths (a::b), slices ([::2]), times (10:30:45) and MAC addresses (6 groups), a
 * compressed form needs a decimal digit and either 3+ groups, a 4-digit group, a dotted quad,
 * or to be exactly ::1. Normalized to the 8 expanded lower-case groups. */
static size_t det_ipv6(scan *st, size_t s, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len, j = s, ng = 0, maxlen = 0;
    unsigned grp[8];
    int dbl = -1;
    bool digit = false, v4 = false;

    if (s > 0) {
        unsigned c = in[s - 1];
        if (is_word(c) || c == ':' || c == '.' || c == '-')
            return 0;
    }
    if (in[j] == ':') {
        if (j + 1 >= len || in[j + 1] != ':')
            return 0;
        dbl = 0;
        j += 2;
    }
    for (;;) {
        size_t h = 0;
        while (j + h < len && h < 5 && is_hex(in[j + h]))
            h++;
        if (h == 0)
            break;
        if (h == 5)
            return 0;
        if (j + h < len && in[j + h] == '.') {
            unsigned char oct[4];
            size_t e4;
            if (ng > 6 || !(e4 = parse_ipv4(st, j, oct)))
                return 0;
            grp[ng++] = (unsigned)oct[0] << 8 | oct[1];
            grp[ng++] = (unsigned)oct[2] << 8 | oct[3];
            j = e4;
            v4 = digit = true;
            break;
        }
        if (ng == 8)
            return 0;
        unsigned v = 0;
        for (size_t q = 0; q < h; q++) {
            unsigned c = in[j + q];
            digit |= is_digit(c);
            v = v << 4 | (is_digit(c) ? c - '0' : (c | 0x20u) - 'a' + 10);
        }
        grp[ng++] = v;
        if (h > maxlen)
            maxlen = h;
        j += h;
        if (j + 1 < len && in[j] == ':' && in[j + 1] == ':') {
            if (dbl >= 0)
                return 0;
            dbl = (int)ng;
            j += 2;
            continue;
        }
        if (j + 1 < len && in[j] == ':' && is_hex(in[j + 1])) {
            j++;
            continue;
        }
        break;
    }
    if (ng == 0)
        return 0;
    if (dbl < 0) {
        if (ng != 8)
            return 0;
    } else {
        if (ng > 7 || !digit)
            return 0;
        if (dbl == 0 && ng == 1 && !v4) {
            if (grp[0] != 1)
                return 0;
        } else if (ng <= 2 && !v4 && maxlen < 4) {
            return 0;
        }
    }
    if (j < len) {
        unsigned c = in[j];
        if (is_word(c) || c == '@' ||
            (c == ':' && j + 1 < len && (is_hex(in[j + 1]) || in[j + 1] == ':')) ||
            (c == '.' && j + 1 < len && is_alnum(in[j + 1])))
            return 0;
    }
    if (j > lim)
        return 0;

    unsigned full[8] = {0};
    if (dbl < 0) {
        memcpy(full, grp, sizeof full);
    } else {
        size_t tail = ng - (size_t)dbl;
        memcpy(full, grp, (size_t)dbl * sizeof grp[0]);
        memcpy(full + 8 - tail, grp + dbl, tail * sizeof grp[0]);
    }
    static const char hex[] = "0123456789abcdef";
    char norm[40];
    for (int k = 0; k < 8; k++) {
        for (int q = 0; q < 4; q++)
            norm[5 * k + q] = hex[(full[k] >> (12 - 4 * q)) & 15];
        norm[5 * k + 4] = ':';
    }
    put_token(st, s, j, REDACT_IP, norm, 39);
    return j;
}

/* ------------------------------------------------------------------ e-mail */

/* In escaped text, the end of the escape whose letter is at s (after a backslash): \uXXXX or
 * one letter, at most up to lim. */
static size_t escape_end(const scan *st, size_t s, size_t lim)
{
    size_t e = s + 1;
    if (st->in[s] == 'u')
        while (e < lim && e < s + 5 && is_hex(st->in[e]))
            e++;
    return e < lim ? e : lim;
}

static inline bool is_local(unsigned c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

/* If the UTF-8 character that ends at in[ls] (exclusive) is a Latin, Greek or Cyrillic letter
 * (U+00C0-U+024F but for the signs x and /, U+0370-U+052F), returns where it starts, else ls.
 * These count as local-part characters (josé@...); other scripts, and punctuation such as
 * guillemets, end the local part, so "連絡先はana@x.com" gives ana@x.com. */
static size_t prev_letter(const scan *st, size_t floor, size_t ls)
{
    const unsigned char *in = st->in;
    size_t b = ls;
    while (b > floor && ls - b < 4 && (in[b - 1] & 0xC0) == 0x80)
        b--;
    if (b == floor || b == ls || ls - b > 2 || utf8_seq(in + b - 1, ls - b + 1) != ls - b + 1)
        return ls;
    b--;
    unsigned cp = (in[b] & 0x1Fu) << 6 | (in[b + 1] & 0x3Fu); /* 2-byte sequences only */
    if ((in[b] & 0xE0) != 0xC0 || cp == 0xD7 || cp == 0xF7)
        return ls;
    return (cp >= 0xC0 && cp <= 0x24F) || (cp >= 0x370 && cp <= 0x52F) ? b : ls;
}

/* The lower-case form of a Latin-1, Latin Extended-A, Greek or Cyrillic capital (the letters an
 * e-mail local part may hold), so that JOSÉ@ and josé@ are one address, as ANA@ and ana@ are;
 * any other code point as it is. Each result has the same UTF-8 length. */
static unsigned lower_letter(unsigned cp)
{
    if ((cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) || (cp >= 0x391 && cp <= 0x3AB && cp != 0x3A2) ||
        (cp >= 0x410 && cp <= 0x42F))
        return cp + 0x20;
    if (cp >= 0x400 && cp <= 0x40F)
        return cp + 0x50;
    if (((cp >= 0x100 && cp <= 0x137 && cp != 0x130) || (cp >= 0x14A && cp <= 0x177) ||
         (cp >= 0x460 && cp <= 0x481) || (cp >= 0x48A && cp <= 0x4BF) ||
         (cp >= 0x4D0 && cp <= 0x52F)) &&
        cp % 2 == 0)
        return cp + 1;
    if (((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E) ||
         (cp >= 0x4C1 && cp <= 0x4CE)) &&
        cp % 2 == 1)
        return cp + 1;
    return cp;
}

/* At '@': a local part of up to 64 bytes before it (ASCII atoms or UTF-8), a domain of 2+
 * labels after it whose last label is alphabetic (2+ letters) or punycode. Lower-cased. */
static size_t det_email(scan *st, size_t at, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len;
    size_t floor = st->emitted > st->floor ? st->emitted : st->floor;
    size_t ls = at;

    while (ls > floor && at - ls < EMAIL_LOCAL_MAX) {
        if (is_local(in[ls - 1])) {
            ls--;
            continue;
        }
        size_t b = in[ls - 1] >= 0x80 ? prev_letter(st, floor, ls) : ls;
        if (b == ls)
            break;
        ls = b;
    }
    if (ls > floor &&
        (is_local(in[ls - 1]) || (in[ls - 1] >= 0x80 && prev_letter(st, floor, ls) != ls)))
        return 0; /* longer than a local part can be */
    if (!st->json && ls > 0 && in[ls - 1] == '\\' && ls < at)
        ls = escape_end(st, ls, at); /* "\nana@x.com" in escaped text: the local part is "ana" */
    while (ls < at && in[ls] == '.')
        ls++;
    if (ls == at || in[at - 1] == '.')
        return 0;

    size_t j = at + 1, labels = 0, best = 0;
    for (;;) {
        size_t k = j;
        while (k < len && (is_alnum(in[k]) || in[k] == '-') && k - j <= 63)
            k++;
        if (k == j || k - j > 63 || in[j] == '-' || in[k - 1] == '-')
            break;
        if (k - (at + 1) > EMAIL_DOMAIN_MAX)
            break;
        labels++;
        bool alpha = true;
        for (size_t q = j; q < k && alpha; q++)
            alpha = is_alpha(in[q]);
        if (labels >= 2 && ((alpha && k - j >= 2) || (k - j > 4 && !memcmp(in + j, "xn--", 4))))
            best = k;
        if (k + 1 < len && in[k] == '.' && is_alnum(in[k + 1])) {
            j = k + 1;
            continue;
        }
        break;
    }
    if (!best || best > lim || (best < len && (in[best] == '_' || in[best] == '@')))
        return 0;

    char norm[EMAIL_LOCAL_MAX + 1 + EMAIL_DOMAIN_MAX + 8];
    size_t n = best - ls;
    for (size_t q = 0; q < n; q++) {
        unsigned cp;
        norm[q] = (char)lower(in[ls + q]);
        if ((in[ls + q] & 0xE0) != 0xC0 || q + 1 >= n || (in[ls + q + 1] & 0xC0) != 0x80)
            continue;
        /* a letter of the local part (prev_letter: 2-byte sequences) lower-cased too */
        cp = lower_letter((in[ls + q] & 0x1Fu) << 6 | (in[ls + q + 1] & 0x3Fu));
        norm[q] = (char)(0xC0 | cp >> 6);
        norm[++q] = (char)(0x80 | (cp & 0x3F));
    }
    put_token(st, ls, best, REDACT_EMAIL, norm, n);
    return best;
}

/* ------------------------------------------------------------------ credentials */

/* Counts character classes (upper, lower, digit) in in[s..e). */
static int classes(const unsigned char *in, size_t s, size_t e)
{
    bool u = false, l = false, d = false;
    for (size_t k = s; k < e; k++) {
        u |= is_upper(in[k]);
        l |= is_lower(in[k]);
        d |= is_digit(in[k]);
    }
    return u + l + d;
}

static bool has_digit(const unsigned char *in, size_t s, size_t e)
{
    for (size_t k = s; k < e; k++)
        if (is_digit(in[k]))
            return true;
    return false;
}

static size_t secret(scan *st, size_t s, size_t e, size_t lim)
{
    if (e > lim)
        return 0;
    put_token(st, s, e, REDACT_SECRET, st->in + s, e - s);
    return e;
}

/* sk-... (OpenAI, sk-proj-..., sk-ant-... for Anthropic): 20+ key characters of 2+ classes. */
static size_t det_sk(scan *st, size_t s, size_t we, size_t lim)
{
    size_t e = we + 1;
    while (e < st->len && e - we <= VALUE_MAX && is_b64url(st->in[e]))
        e++;
    if (e - (we + 1) < 20 || e - we > VALUE_MAX || classes(st->in, we + 1, e) < 2)
        return 0;
    return secret(st, s, e, lim);
}

/* AWS access key ids: AKIA or ASIA and 16 of [0-9A-Z], a word of its own. */
static size_t det_aws(scan *st, size_t s, size_t we, size_t lim)
{
    const unsigned char *in = st->in;
    if (we - s != 20 || !(!memcmp(in + s, "AKIA", 4) || !memcmp(in + s, "ASIA", 4)))
        return 0;
    for (size_t k = s + 4; k < we; k++)
        if (!(is_digit(in[k]) || is_upper(in[k])))
            return 0;
    return secret(st, s, we, lim);
}

/* GitHub: gh[pousr]_ and 30+ alphanumerics; github_pat_ and 22+ of [A-Za-z0-9_]. */
static size_t det_github(scan *st, size_t s, size_t we, size_t lim)
{
    const unsigned char *in = st->in;
    size_t wl = we - s;
    if (wl >= 41 && !memcmp(in + s, "github_pat_", 11) && wl <= VALUE_MAX)
        return secret(st, s, we, lim);
    if (wl < 34 || wl > VALUE_MAX || in[s + 1] != 'h' || in[s + 3] != '_' ||
        !strchr("pousr", in[s + 2]))
        return 0;
    for (size_t k = s + 4; k < we; k++)
        if (!is_alnum(in[k]))
            return 0;
    return secret(st, s, we, lim);
}

/* Slack: xox[abprs]- and 10+ of [A-Za-z0-9-] with a digit. */
static size_t det_slack(scan *st, size_t s, size_t we, size_t lim)
{
    const unsigned char *in = st->in;
    if (we - s != 4 || memcmp(in + s, "xox", 3) || !strchr("abprs", in[s + 3]) || we >= st->len ||
        in[we] != '-')
        return 0;
    size_t e = we + 1;
    while (e < st->len && e - we <= VALUE_MAX && (is_alnum(in[e]) || in[e] == '-'))
        e++;
    if (e - we < 11 || e - we > VALUE_MAX || !has_digit(in, we, e))
        return 0;
    return secret(st, s, e, lim);
}

/* Our API keys: eb_ + 10 base32 (a-z2-7) + _ + 43 base64url (services/auth/apikey.h). */
static size_t det_ebkey(scan *st, size_t s, size_t lim)
{
    const unsigned char *in = st->in;
    size_t e = s + 3 + 10 + 1 + 43;
    if (e > st->len || in[s + 13] != '_' || (e < st->len && is_b64url(in[e])))
        return 0;
    for (size_t k = s + 3; k < s + 13; k++)
        if (!(is_lower(in[k]) || (in[k] >= '2' && in[k] <= '7')))
            return 0;
    for (size_t k = s + 14; k < e; k++)
        if (!is_b64url(in[k]))
            return 0;
    return secret(st, s, e, lim);
}

/* JWT (and JWE): eyJ..., 3 or 5 base64url parts split by dots. */
static size_t det_jwt(scan *st, size_t s, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len, j = s, parts = 0, plen[5] = {0};
    for (;;) {
        size_t k = j;
        while (k < len && is_b64url(in[k]))
            k++;
        plen[parts++] = k - j;
        j = k;
        if (parts < 5 && j + 1 < len && in[j] == '.' && (is_b64url(in[j + 1]) || parts == 2)) {
            j++;
            continue;
        }
        break;
    }
    if (!(parts == 3 || parts == 5) || plen[0] < 10 || plen[1] < 2)
        return 0;
    if (j < len && (in[j] == '=' || (in[j] == '.' && j + 1 < len && is_b64url(in[j + 1]))))
        return 0;
    return secret(st, s, j, lim);
}

static inline bool is_bearer_char(unsigned c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' ||
           c == '=';
}

/* Bearer <token>: the token only (8+ characters with a digit, or 20+). */
static size_t det_bearer(scan *st, size_t s, size_t we, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len, j = we;
    if (we - s != 6 || !(!memcmp(in + s, "Bearer", 6) || !memcmp(in + s, "bearer", 6) ||
                         !memcmp(in + s, "BEARER", 6)))
        return 0;
    while (j < len && j - we < 4 && (in[j] == ' ' || in[j] == '\t'))
        j++;
    if (j == we)
        return 0;
    size_t ts = j, te = j;
    while (te < len && te - ts <= BEARER_MAX && is_bearer_char(in[te]))
        te++;
    while (te > ts && in[te - 1] == '.')
        te--;
    if (te - ts < 8 || te - ts > BEARER_MAX || (te - ts < 20 && !has_digit(in, ts, te)))
        return 0;
    return secret(st, ts, te, lim);
}

/* -----BEGIN ... PRIVATE KEY----- to the matching -----END ...-----, or, when the end is
 * missing (a truncated text), to the end of the base64 body. Normalized without whitespace. */
static size_t det_pem(scan *st, size_t s, size_t lim)
{
    static const char begin[] = "-----BEGIN ";
    const unsigned char *in = st->in;
    size_t len = st->len;
    if (len - s < sizeof begin - 1 + 16 || memcmp(in + s, begin, sizeof begin - 1))
        return 0;
    size_t h = s + sizeof begin - 1, hend = h;
    while (hend < len && hend - h < 80 && (is_alnum(in[hend]) || in[hend] == ' '))
        hend++;
    if (hend + 5 > len || memcmp(in + hend, "-----", 5) ||
        !memmem(in + h, hend - h, "PRIVATE KEY", 11))
        return 0;
    size_t body = hend + 5, e = 0;
    size_t window = len - body < PEM_MAX ? len - body : PEM_MAX;
    const unsigned char *q = memmem(in + body, window, "-----END ", 9);
    if (q) {
        size_t k = (size_t)(q - in) + 9;
        while (k < len && k - (size_t)(q - in) < 90 && (is_alnum(in[k]) || in[k] == ' '))
            k++;
        if (k + 5 <= len && !memcmp(in + k, "-----", 5))
            e = k + 5;
    }
    if (!e) {
        e = body;
        while (e < len && e - body < PEM_MAX &&
               (is_alnum(in[e]) || in[e] == '+' || in[e] == '/' || in[e] == '=' || in[e] == '\\' ||
                in[e] == ' ' || in[e] == '\n' || in[e] == '\r' || in[e] == '\t'))
            e++;
        while (e > body && (in[e - 1] == ' ' || in[e - 1] == '\n' || in[e - 1] == '\r' ||
                            in[e - 1] == '\t' || in[e - 1] == '\\'))
            e--; /* never end inside an escape of escaped text */
    }
    if (e > lim)
        return 0;
    mac_begin(st->r, REDACT_SECRET);
    for (size_t k = s; k < e;) {
        size_t r = k;
        while (r < e && in[r] > ' ')
            r++;
        mac_update(st->r, in + k, r - k);
        k = r;
        while (k < e && in[k] <= ' ')
            k++;
    }
    token_end(st, s, e, REDACT_SECRET);
    return e;
}

/* ------------------------------------------------------------------ connection strings */

static bool word_is(const unsigned char *p, size_t n, const char *lc)
{
    if (strlen(lc) != n)
        return false;
    for (size_t k = 0; k < n; k++)
        if (lower(p[k]) != (unsigned char)lc[k])
            return false;
    return true;
}

static inline bool value_stop(unsigned c)
{
    return c <= ' ' || strchr(";&,\"'()[]{}<>`\\=", (int)c) != NULL;
}

/* libpq / ODBC style key=value: dbname, database, pgdatabase (DBNAME); password, passwd, pwd,
 * pgpassword (SECRET). The value is taken bare or between quotes. */
static size_t det_keyword(scan *st, size_t s, size_t we, size_t lim)
{
    static const char *const db_keys[] = {"dbname", "database", "pgdatabase"};
    static const char *const pw_keys[] = {"password", "passwd", "pwd", "pgpassword"};
    const unsigned char *in = st->in;
    size_t len = st->len, wl = we - s, j = we, vs, ve;
    int kind = -1;

    if (wl < 3 || wl > 10 || we >= len || (in[we] != '=' && in[we] != ' '))
        return 0;
    for (size_t k = 0; k < sizeof db_keys / sizeof db_keys[0] && kind < 0; k++)
        if (word_is(in + s, wl, db_keys[k]))
            kind = REDACT_DBNAME;
    for (size_t k = 0; k < sizeof pw_keys / sizeof pw_keys[0] && kind < 0; k++)
        if (word_is(in + s, wl, pw_keys[k]))
            kind = REDACT_SECRET;
    if (kind < 0 || !on(st, (redact_kind)kind))
        return 0;
    while (j < len && j - we < 3 && in[j] == ' ')
        j++;
    if (j >= len || in[j] != '=')
        return 0;
    j++;
    for (size_t n = 0; j < len && n < 3 && in[j] == ' '; n++)
        j++;
    if (j < len && (in[j] == '\'' || in[j] == '"')) {
        vs = j + 1;
        size_t window = len - vs < VALUE_MAX ? len - vs : VALUE_MAX;
        const unsigned char *q = memchr(in + vs, in[j], window);
        if (!q)
            return 0;
        ve = (size_t)(q - in);
    } else {
        vs = ve = j;
        while (ve < len && ve - vs < VALUE_MAX && !value_stop(in[ve]))
            ve++;
    }
    if (ve == vs || ve > lim)
        return 0;
    put_token(st, vs, ve, (size_t)kind, in + vs, ve - vs);
    return ve;
}

static bool db_scheme(const unsigned char *p, size_t n)
{
    static const char *const schemes[] = {
        "postgres",   "postgresql", "mysql",   "mariadb",     "mongodb",   "redis",
        "rediss",     "sqlserver",  "mssql",   "oracle",      "cockroach", "cockroachdb",
        "clickhouse", "cassandra",  "couchdb", "neo4j",       "snowflake", "db2",
        "timescale",  "vertica",    "memsql",  "singlestore", "tidb",      "yugabyte"};
    const unsigned char *plus = memchr(p, '+', n);
    if (plus)
        n = (size_t)(plus - p); /* mongodb+srv, postgresql+psycopg2 */
    for (size_t k = 0; k < sizeof schemes / sizeof schemes[0]; k++)
        if (word_is(p, n, schemes[k]))
            return true;
    return false;
}

static inline bool auth_stop(unsigned c)
{
    return c <= ' ' || c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c == '<' ||
           c == '>' || c == '`' || c == '\\';
}

/* scheme://[user[:password]@]host[:port][/dbname]: the password of any URI (SECRET) and, for
 * database schemes, the database name (DBNAME, held until the scan reaches it). Returns where
 * the scan goes on, 0 when there is nothing to do. */
static size_t det_uri(scan *st, size_t ws, size_t we, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len, floor = st->emitted, ss = ws;
    while (ss > floor &&
           (is_alnum(in[ss - 1]) || in[ss - 1] == '+' || in[ss - 1] == '.' || in[ss - 1] == '-'))
        ss--;
    while (ss < ws && !is_alpha(in[ss]))
        ss++;
    bool is_db = on(st, REDACT_DBNAME) && db_scheme(in + ss, we - ss);

    size_t p = we + 3, a = p, at = NONE, pw_s = NONE, ds = NONE, de = NONE;
    while (a < len && a - p < URI_AUTH_MAX && !auth_stop(in[a])) {
        if (in[a] == '@')
            at = a;
        a++;
    }
    if (a - p >= URI_AUTH_MAX)
        return 0;
    if (at != NONE && on(st, REDACT_SECRET)) {
        const unsigned char *colon = memchr(in + p, ':', at - p);
        if (colon && (size_t)(colon - in) + 1 < at)
            pw_s = (size_t)(colon - in) + 1;
    }
    if (is_db && a < len && in[a] == '/') {
        ds = de = a + 1;
        while (de < len && de - ds < VALUE_MAX && !(auth_stop(in[de]) || strchr(",;)]}", in[de])))
            de++;
        if (de == ds || de - ds >= VALUE_MAX)
            ds = NONE;
    }
    if (pw_s == NONE && ds == NONE)
        return 0;
    if ((ds != NONE ? de : at) > lim)
        return 0; /* a team pattern comes first */
    if (at != NONE)
        st->floor = at + 1; /* user@host is not an e-mail address */
    size_t next = we;
    if (pw_s != NONE) {
        put_token(st, pw_s, at, REDACT_SECRET, in + pw_s, at - pw_s);
        next = at;
    }
    if (ds != NONE) {
        st->hold_s = ds;
        st->hold_e = de;
    }
    return next;
}

/* ------------------------------------------------------------------ dispatch */

/* At the start of the word in[s..we). Returns where the scan goes on, 0 for no match. */
static size_t try_word(scan *st, size_t s, size_t we, size_t lim)
{
    const unsigned char *in = st->in;
    size_t len = st->len, wl = we - s, e;
    unsigned c = in[s];

    /* in escaped text (redact_text on a JSON body), a word right after a backslash may begin
     * with the escape's letter (\b \f \n \r \t \uXXXX): a match there would split it */
    if (!st->json && s > 0 && in[s - 1] == '\\' && strchr("bfnrtu", (int)c))
        return 0;
    if (we + 2 < len && in[we] == ':' && in[we + 1] == '/' && in[we + 2] == '/' && is_alpha(c) &&
        (e = det_uri(st, s, we, lim)))
        return e;
    if (is_digit(c)) {
        size_t d = digits_at(st, s);
        if (d <= 3 && s + d < len && in[s + d] == '.' && on(st, REDACT_IP) &&
            (e = det_ipv4(st, s, lim)))
            return e;
        if (num_left_ok(st, s)) {
            if (d == 3 && on(st, REDACT_SSN) && (e = det_ssn(st, s, lim)))
                return e;
            if ((d >= 13 || d == 4) && on(st, REDACT_CARD) && (e = det_card(st, s, lim)))
                return e;
            if (on(st, REDACT_PHONE) && (d == 3 || d == 1) && (e = det_phone_nanp(st, s, lim)))
                return e;
            if (on(st, REDACT_PHONE) && c == '0' && (e = det_phone_trunk(st, s, lim)))
                return e;
        }
        if (wl <= 4 && we < len && in[we] == ':' && on(st, REDACT_IP))
            return det_ipv6(st, s, lim);
        return 0;
    }
    if (on(st, REDACT_SECRET)) {
        switch (c) {
        case 's':
            if (wl == 2 && in[s + 1] == 'k' && we < len && in[we] == '-')
                return det_sk(st, s, we, lim);
            break;
        case 'A':
            if (wl == 20)
                return det_aws(st, s, we, lim);
            break;
        case 'g':
            if (wl >= 34)
                return det_github(st, s, we, lim);
            break;
        case 'x':
            if (wl == 4)
                return det_slack(st, s, we, lim);
            break;
        case 'e':
            if (wl >= 3 && in[s + 1] == 'b' && in[s + 2] == '_')
                return det_ebkey(st, s, lim);
            if (wl >= 10 && in[s + 1] == 'y' && in[s + 2] == 'J')
                return det_jwt(st, s, lim);
            break;
        case 'B':
        case 'b':
            if (wl == 6 && (e = det_bearer(st, s, we, lim)))
                return e;
            break;
        default:
            break;
        }
    }
    if (c == 'd' || c == 'D' || c == 'p' || c == 'P') {
        if ((e = det_keyword(st, s, we, lim)))
            return e;
    }
    if (wl <= 4 && we < len && in[we] == ':' && is_hex(c) && on(st, REDACT_IP))
        return det_ipv6(st, s, lim);
    return 0;
}

/* At a trigger byte in[s]. Returns where the scan goes on, 0 for no match. */
static size_t try_trigger(scan *st, size_t s, size_t lim)
{
    const unsigned char *in = st->in;
    size_t e;
    switch (in[s]) {
    case '@':
        return on(st, REDACT_EMAIL) ? det_email(st, s, lim) : 0;
    case '+':
        return on(st, REDACT_PHONE) ? det_phone_intl(st, s, lim) : 0;
    case '(':
        if (!on(st, REDACT_PHONE) || s + 1 >= st->len || !is_digit(in[s + 1]) ||
            (s > 0 && is_word(in[s - 1])))
            return 0;
        if ((e = det_phone_nanp(st, s, lim)))
            return e;
        return det_phone_trunk(st, s, lim);
    case ':':
        if (on(st, REDACT_IP) && s + 1 < st->len && in[s + 1] == ':')
            return det_ipv6(st, s, lim);
        return 0;
    case '-':
        if (on(st, REDACT_SECRET) && s + 1 < st->len && in[s + 1] == '-')
            return det_pem(st, s, lim);
        return 0;
    default:
        return 0;
    }
}

/* After a replacement that ended inside a word, the rest of the word is not a word start. */
static size_t skip_mid_word(const scan *st, size_t i, size_t lim)
{
    if (i == 0 || i >= lim || !is_word(st->in[i - 1]))
        return i;
    while (i < lim && is_word(st->in[i]))
        i++;
    return i;
}

/* Scans in[i..lim) for built-in kinds. Returns lim, or earlier when a detector set a hold. */
static size_t scan_range(scan *st, size_t i, size_t lim)
{
    const unsigned char *in = st->in;
    const unsigned char *cls = st->r->cls;

    i = skip_mid_word(st, i, lim);
    while (i < lim) {
        unsigned k = cls[in[i]];
        size_t e;
        if (k == 0) {
            i++;
            continue;
        }
        if (k & C_WORD) {
            size_t we = i + 1;
            while (we < st->len && (cls[in[we]] & C_WORD))
                we++;
            /* most words cannot start a match: only a few first letters can, or a word
             * followed by ':' (a URI scheme, an IPv6 group) */
            e = (k & C_HOT) || (we < st->len && in[we] == ':') ? try_word(st, i, we, lim) : 0;
            if (!e) {
                i = we < lim ? we : lim;
                continue;
            }
        } else {
            e = try_trigger(st, i, lim);
            if (!e) {
                i++;
                continue;
            }
        }
        i = e;
        if (st->hold_s != NONE)
            return i;
        i = skip_mid_word(st, i, lim);
    }
    return i;
}

/* The next match of team pattern k at or after pos (cs[k] NONE if none). False on a PCRE2
 * error (match limit), recorded with eb_error(). */
static bool custom_search(scan *st, size_t k, size_t pos)
{
    redactor *r = st->r;
    size_t from = pos;
    r->searched[k] = true;
    while (from <= st->len) {
        int rc = pcre2_match(r->custom[k].code, st->in, st->len, from, 0, r->md, r->mcx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc == PCRE2_ERROR_BADUTFOFFSET) {
            from++;
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof msg);
            eb_error(EB_ERR_INVALID, "redaction pattern %s: %s (from byte %zu)", r->custom[k].label,
                     (const char *)msg, from);
            return false;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
        if (ov[1] > ov[0] && ov[0] >= pos) {
            r->cs[k] = ov[0];
            r->ce[k] = ov[1];
            return true;
        }
        /* an empty match (only through \K or lookarounds): step past it */
        from = (ov[0] >= from ? ov[0] : from) + 1;
        while (from < st->len && (st->in[from] & 0xC0) == 0x80)
            from++;
    }
    r->cs[k] = r->ce[k] = NONE;
    return true;
}

static eb_status run(redactor *r, const char *text, size_t len, eb_buf *out, redact_stats *stats,
                     bool json)
{
    scan st = {.r = r,
               .in = (const unsigned char *)text,
               .len = len,
               .out = out,
               .json = json,
               .hold_s = NONE,
               .hold_e = NONE};
    size_t orig = out->len, i = 0;

    eb_buf_reserve(out, len + 16);
    out->data[out->len] = '\0'; /* stays a string when nothing is appended */
    for (size_t k = 0; k < r->n_custom; k++)
        r->searched[k] = false;
    while (i < len) {
        size_t lim = len;
        long which = -1; /* -1: none, -2: the hold, k >= 0: team pattern k */
        for (size_t k = 0; k < r->n_custom; k++) {
            if ((!r->searched[k] || (r->cs[k] != NONE && r->cs[k] < i)) &&
                !custom_search(&st, k, i)) {
                out->len = orig;
                if (out->data)
                    out->data[orig] = '\0';
                return EB_ERR_INVALID;
            }
            if (r->cs[k] < lim) {
                lim = r->cs[k];
                which = (long)k;
            }
        }
        if (st.hold_s != NONE && st.hold_s < lim) {
            lim = st.hold_s;
            which = -2;
        }
        i = scan_range(&st, i, lim);
        if (i < lim)
            continue; /* a hold was set: recompute the limit */
        if (which == -1)
            break;
        if (which == -2) {
            put_token(&st, st.hold_s, st.hold_e, REDACT_DBNAME, st.in + st.hold_s,
                      st.hold_e - st.hold_s);
            i = st.hold_e;
        } else {
            size_t k = (size_t)which;
            put_token(&st, r->cs[k], r->ce[k], REDACT_BUILTIN_COUNT + k, st.in + r->cs[k],
                      r->ce[k] - r->cs[k]);
            i = r->ce[k];
        }
        if (st.hold_s != NONE && st.hold_s < i)
            st.hold_s = st.hold_e = NONE;
        if (which == -2)
            st.hold_s = st.hold_e = NONE;
    }
    pass(&st, len);
    if (stats) {
        for (size_t k = 0; k < REDACT_KIND_MAX; k++)
            stats->count[k] += st.stats.count[k];
        stats->total += st.stats.total;
    }
    return EB_OK;
}

eb_status redact_text(redactor *r, const char *in, size_t len, eb_buf *out, redact_stats *stats)
{
    return run(r, in, len, out, stats, false);
}

eb_status redact_json_string(redactor *r, const char *in, size_t len, eb_buf *out,
                             redact_stats *stats)
{
    return run(r, in, len, out, stats, true);
}

/* ------------------------------------------------------------------ set-up */

static bool label_ok(const char *label)
{
    size_t n = label ? strlen(label) : 0;
    if (n == 0 || n > REDACT_LABEL_MAX || !(label[0] >= 'A' && label[0] <= 'Z'))
        return false;
    for (size_t k = 0; k < n; k++)
        if (!((label[k] >= 'A' && label[k] <= 'Z') || is_digit((unsigned char)label[k]) ||
              label[k] == '_'))
            return false;
    return true;
}

eb_status redact_new(const redact_config *cfg, redactor **out)
{
    eb_status st = EB_OK;
    redactor *r = NULL;
    char digest[] = "SHA256";

    *out = NULL;
    if (!cfg || !cfg->key || cfg->key_len < REDACT_KEY_MIN) {
        st = eb_error(EB_ERR_INVALID, "redaction key must have at least %d bytes", REDACT_KEY_MIN);
        goto cleanup;
    }
    if (cfg->n_patterns > REDACT_MAX_PATTERNS || (cfg->n_patterns && !cfg->patterns)) {
        st = eb_error(EB_ERR_INVALID, "at most %d redaction patterns", REDACT_MAX_PATTERNS);
        goto cleanup;
    }
    r = eb_calloc(1, sizeof *r);
    r->off = cfg->off;
    for (unsigned c = 0; c < 256; c++)
        r->cls[c] = is_word(c) ? C_WORD : c && strchr("@+(:-", (int)c) ? C_TRIG : 0;
    for (const char *h = "0123456789sAgxeBbdDpP"; *h; h++)
        r->cls[(unsigned char)*h] |= C_HOT;

    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    r->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    r->mctx = r->mac ? EVP_MAC_CTX_new(r->mac) : NULL;
    if (!r->mctx || !EVP_MAC_init(r->mctx, cfg->key, cfg->key_len, params))
        redact_fatal("HMAC-SHA256 set-up");

    r->max_token = 0;
    for (size_t k = 0; k < REDACT_BUILTIN_COUNT; k++)
        if (strlen(builtin_names[k]) > r->max_token)
            r->max_token = strlen(builtin_names[k]);
    for (size_t k = 0; k < cfg->n_patterns; k++) {
        const redact_pattern *p = &cfg->patterns[k];
        int err = 0;
        PCRE2_SIZE off = 0;
        size_t minlen = 0;

        if (!label_ok(p->label)) {
            st = eb_error(EB_ERR_INVALID,
                          "redaction pattern %zu: label must be 1-%d of A-Z, 0-9, _ starting "
                          "with a letter",
                          k + 1, REDACT_LABEL_MAX);
            goto cleanup;
        }
        for (size_t q = 0; q < REDACT_BUILTIN_COUNT + k; q++) {
            if (!strcmp(q < REDACT_BUILTIN_COUNT ? builtin_names[q]
                                                 : r->custom[q - REDACT_BUILTIN_COUNT].label,
                        p->label)) {
                st = eb_error(EB_ERR_INVALID, "redaction pattern %s: label already in use",
                              p->label);
                goto cleanup;
            }
        }
        if (!p->regex || !*p->regex || strlen(p->regex) > REDACT_REGEX_MAX) {
            st = eb_error(EB_ERR_INVALID, "redaction pattern %s: regex must have 1-%d bytes",
                          p->label, REDACT_REGEX_MAX);
            goto cleanup;
        }
        pcre2_code *code = pcre2_compile((PCRE2_SPTR)p->regex, PCRE2_ZERO_TERMINATED,
                                         PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &err, &off, NULL);
        if (!code) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(err, msg, sizeof msg);
            st = eb_error(EB_ERR_INVALID, "redaction pattern %s: %s at offset %zu", p->label,
                          (const char *)msg, (size_t)off);
            goto cleanup;
        }
        r->custom[r->n_custom].code = code;
        memcpy(r->custom[r->n_custom].label, p->label, strlen(p->label) + 1);
        r->n_custom++;
        if (pcre2_pattern_info(code, PCRE2_INFO_MINLENGTH, &minlen) != 0 || minlen == 0) {
            st = eb_error(EB_ERR_INVALID, "redaction pattern %s: can match the empty string",
                          p->label);
            goto cleanup;
        }
        (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* the interpreter if no JIT */
        if (strlen(p->label) > r->max_token)
            r->max_token = strlen(p->label);
    }
    r->max_token += 3 + TOKEN_HEX; /* < _ hex > */
    if (r->n_custom) {
        r->md = pcre2_match_data_create(1, NULL);
        r->mcx = pcre2_match_context_create(NULL);
        r->jit = pcre2_jit_stack_create(32 * 1024, JIT_STACK_MAX, NULL);
        if (!r->md || !r->mcx || !r->jit)
            redact_fatal("PCRE2 allocation");
        pcre2_set_match_limit(r->mcx, MATCH_LIMIT);
        pcre2_jit_stack_assign(r->mcx, NULL, r->jit);
    }
    *out = r;
    r = NULL;
cleanup:
    redact_free(r);
    return st;
}

void redact_free(redactor *r)
{
    if (!r)
        return;
    EVP_MAC_CTX_free(r->mctx); /* wipes the keyed state */
    EVP_MAC_free(r->mac);
    for (size_t k = 0; k < r->n_custom; k++)
        pcre2_code_free(r->custom[k].code);
    pcre2_match_data_free(r->md);
    pcre2_match_context_free(r->mcx);
    pcre2_jit_stack_free(r->jit);
    free(r);
}

size_t redact_output_bound(const redactor *r, size_t len)
{
    size_t per = r->max_token > 3 ? r->max_token : 3; /* a token per byte, or U+FFFD per byte */
    return len > SIZE_MAX / per ? SIZE_MAX : len * per;
}

size_t redact_kind_count(const redactor *r)
{
    return REDACT_BUILTIN_COUNT + r->n_custom;
}

const char *redact_kind_name(const redactor *r, size_t k)
{
    return k < REDACT_BUILTIN_COUNT + r->n_custom ? kind_label(r, k) : NULL;
}
