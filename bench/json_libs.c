/* json_libs.c -- which JSON library should ingest use? Measured, not guessed.
 *
 * Builds a deterministic corpus in memory: 1000 LLM traces of about 2 KB each (nested objects,
 * message arrays whose long strings carry \n, \", \uXXXX escapes and raw UTF-8, numbers, a
 * metadata map, tool calls whose arguments are JSON inside a string), and the same traces as
 * 10 batch bodies of 100 ({"traces":[...]}, about 200 KB each). For each library -- cJSON, yajl
 * (tree API), json-c, jansson -- and two configurations that add the input checks ingest needs
 * (cJSON behind jl_precheck(), json-c with JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8),
 * and for each shape, one pass parses every document into a tree, walks the tree to pull the
 * fields ingest reads (so nothing is optimised away and a lazy parser would pay the same), and
 * frees it. Serialisation passes turn prebuilt trees back into compact text. Every figure is
 * the best of 3 runs of at least --run-seconds (default 0.34 s, so a case takes about 1 s)
 * after one warm-up pass. MB/s always counts the bytes of the input documents (10^6 bytes per
 * MB), traces/s the traces in them, so parse and serialise figures compare.
 *
 * Baselines, measured in the same run over the same bytes: parsing is compared with a byte
 * checksum loop (a plain pass that reads every byte), serialising with malloc + memcpy + free
 * of each document (the cheapest way to produce an owned copy of the bytes).
 *
 * Before anything is timed, the walk of every library must give, for every document, the
 * checksum the generator computed while writing it (decoded string lengths and last bytes,
 * numbers, counts), and every serialised document must parse back to the same checksum. A
 * library that gets the corpus wrong gets no figure and the program exits 1.
 *
 * It also probes how each library, called as ingest would call it, treats invalid UTF-8 and
 * other edge cases (lone surrogates, \u0000, big integers, duplicate keys, trailing bytes,
 * non-JSON extensions, nesting), and reports tree memory per input byte.
 *
 * The adapters live in json_libs_<library>.c (see json_libs_int.h for why they are apart).
 * Output: BENCH lines on stdout (DESIGN.md section 8); tables and progress on stderr.
 * Threading: single-threaded. Memory: everything allocated is freed before exit. */
#include "json_libs_int.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    CORPUS_TRACES = 1000, /* about 2 MB: bigger than L2, like a stream of fresh requests */
    BATCH_TRACES = 100,   /* traces per batch body */
    RUNS = 3,             /* best of */
    ERR_LEN = 256,
};

#define HASH_SEED UINT64_C(0xcbf29ce484222325)
#define MARK_NULL UINT64_C(0x6e756c6c) /* mixed in for a null or missing value */

/* ---------------------------------------------------------------- utilities */

static volatile uint64_t bench_sink; /* results land here so no pass can be optimised away */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "json_libs: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "json_libs: out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* A growable byte buffer, always NUL-terminated. */
typedef struct sbuf {
    char *data;
    size_t len;
    size_t cap;
} sbuf;

static void sbuf_append(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sbuf_puts(sbuf *b, const char *s)
{
    sbuf_append(b, s, strlen(s));
}

static void sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbuf_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        fprintf(stderr, "json_libs: sbuf_printf overflow\n");
        abort();
    }
    sbuf_append(b, tmp, (size_t)n);
}

/* splitmix64: small, fast, and the same sequence on every machine. */
typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* A number in [lo, hi]. */
static unsigned rng_range(rng *r, unsigned lo, unsigned hi)
{
    return lo + (unsigned)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static bool rng_chance(rng *r, unsigned percent)
{
    return rng_next(r) % 100 < percent;
}

/* The trace checksum: the generator and every library's walk mix the same values in the same
 * order, so any library that decodes a string, a number or a nesting wrongly shows up. */
static uint64_t mix(uint64_t h, uint64_t x)
{
    h ^= x;
    h *= UINT64_C(0x100000001b3);
    return h ^ (h >> 32);
}

static uint64_t mix_bytes(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * UINT64_C(0x100000001b3);
    return mix(h, n);
}

/* Long strings are summarised by decoded length and last byte: reading the last byte makes a
 * lazy parser decode the whole string, hashing every byte would time the hash. */
static uint64_t mix_content(uint64_t h, size_t len, unsigned char last)
{
    h = mix(h, len);
    return len ? mix(h, last) : h;
}

/* ---------------------------------------------------------------- corpus */

/* A piece of message text as written in JSON and as it decodes. */
typedef struct piece {
    const char *json;
    const char *text;
} piece;

static const char *const k_words[] = {
    "the",      "order",   "refund", "policy",   "customer", "please",  "account",  "invoice",
    "shipping", "thanks",  "model",  "answer",   "question", "context", "document", "search",
    "result",   "timeout", "retry",  "function", "summary",  "ticket",  "support",  "billing",
    "upgrade",  "price",   "today",  "report",   "query",    "I",       "you",      "can",
    "will",     "not",     "is",     "and",      "of",       "to",      "for",      "with",
    "in",       "a",       "your",   "we",       "it",       "was",     "that",     "on",
};

/* Escapes, \u escapes (SDKs that write ASCII-only JSON) and raw UTF-8. */
static const piece k_specials[] = {
    {"\\n\\n", "\n\n"},
    {"\\\"", "\""},
    {"\\t", "\t"},
    {"\\\\", "\\"},
    {"\\u00e9", u8"é"},
    {"\\u2019", u8"’"},
    {"\\u00fc", u8"ü"},
    {"\\ud83d\\ude00", u8"😀"},
    {u8"café", u8"café"},
    {u8"Zürich", u8"Zürich"},
    {u8"naïve", u8"naïve"},
    {u8"日本語", u8"日本語"},
    {u8"Привет", u8"Привет"},
    {u8"—", u8"—"},
    {u8"€42", u8"€42"},
    {u8"🙂", u8"🙂"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

typedef struct text_info {
    size_t len;         /* decoded bytes */
    unsigned char last; /* last decoded byte */
} text_info;

static void text_add(sbuf *b, text_info *t, const char *json, const char *text)
{
    size_t n = strlen(text);
    sbuf_puts(b, json);
    t->len += n;
    t->last = (unsigned char)text[n - 1];
}

/* Appends the body of a JSON string (no quotes) that decodes to at least min_len bytes. */
static text_info gen_text(rng *r, sbuf *b, size_t min_len)
{
    text_info t = {0, 0};
    bool after_newline = true;
    while (t.len < min_len) {
        if (!after_newline)
            text_add(b, &t, " ", " ");
        unsigned roll = rng_range(r, 0, 99);
        after_newline = false;
        if (roll < 6) {
            text_add(b, &t, "\\n", "\n");
            after_newline = true;
        } else if (roll < 15) {
            const piece *p = &k_specials[rng_range(r, 0, COUNT(k_specials) - 1)];
            text_add(b, &t, p->json, p->text);
        } else if (roll < 18) {
            char num[16];
            snprintf(num, sizeof num, "%u", rng_range(r, 1, 99999));
            text_add(b, &t, num, num);
        } else {
            const char *w = k_words[rng_range(r, 0, COUNT(k_words) - 1)];
            text_add(b, &t, w, w);
        }
    }
    if (t.last == ' ' || t.last == '\n') /* end on a word, as text usually does */
        text_add(b, &t, "ok", "ok");
    return t;
}

typedef struct model {
    const char *name;
    const char *provider;
} model;

static const model k_models[] = {
    {"gpt-4o", "openai"},      {"gpt-4o-mini", "openai"},    {"claude-3-5-sonnet", "anthropic"},
    {"llama-3.1-70b", "meta"}, {"mistral-large", "mistral"},
};
static const char *const k_projects[] = {"support-bot", "search-rag", "code-assistant",
                                         "sales-agent"};
static const char *const k_names[] = {"answer", "retrieve", "summarize", "classify", "chat"};
static const char *const k_tiers[] = {"gold", "silver", "free", "enterprise"};
static const char *const k_tags[] = {"prod", "v2", "experiment-17", "eu", "beta"};
static const char *const k_tools[] = {"lookup_order", "search_docs", "create_ticket",
                                      "get_weather"};

/* Appends one message and mixes what the walk will read from it. */
static uint64_t gen_message(rng *r, sbuf *b, uint64_t h, const char *role, unsigned min_len,
                            unsigned max_len, unsigned tool_calls)
{
    sbuf_printf(b, "{\"role\":\"%s\",\"content\":", role);
    h = mix(h, (unsigned char)role[0]);
    if (tool_calls && rng_chance(r, 50)) { /* OpenAI style: content null beside tool calls */
        sbuf_puts(b, "null");
        h = mix(h, MARK_NULL);
    } else {
        sbuf_puts(b, "\"");
        text_info t = gen_text(r, b, rng_range(r, min_len, max_len));
        sbuf_puts(b, "\"");
        h = mix_content(h, t.len, t.last);
    }
    if (tool_calls) {
        sbuf_puts(b, ",\"tool_calls\":[");
        for (unsigned i = 0; i < tool_calls; i++) {
            const char *tool = k_tools[rng_range(r, 0, COUNT(k_tools) - 1)];
            sbuf_printf(b,
                        "%s{\"id\":\"call_%u\",\"type\":\"function\",\"function\":{\"name\":\"%s\","
                        "\"arguments\":\"{\\\"query\\\": \\\"refund policy %u\\\", "
                        "\\\"limit\\\": %u, \\\"filters\\\": {\\\"lang\\\": \\\"en\\\"}}\"}}",
                        i ? "," : "", rng_range(r, 1000, 9999), tool, rng_range(r, 1, 9999),
                        rng_range(r, 1, 20));
            h = mix_bytes(h, tool, strlen(tool));
        }
        sbuf_puts(b, "]");
    }
    sbuf_puts(b, "}");
    return mix(h, tool_calls);
}

/* Appends one trace; returns the checksum the walk of a correct parse must give. */
static uint64_t gen_trace(rng *r, sbuf *b, unsigned seq)
{
    uint64_t h = HASH_SEED;
    char id[48];
    snprintf(id, sizeof id, "t-%08x-%04x-%04x-%012llx", seq, rng_range(r, 0, 0xffff),
             rng_range(r, 0, 0xffff), (unsigned long long)(rng_next(r) & UINT64_C(0xffffffffffff)));
    const model *m = &k_models[rng_range(r, 0, COUNT(k_models) - 1)];
    bool ok = rng_chance(r, 95);
    unsigned sec = seq % 3600, ms = rng_range(r, 0, 999), latency = rng_range(r, 200, 30000);
    unsigned in_tok = rng_range(r, 20, 4000), out_tok = rng_range(r, 5, 1500);
    unsigned cost_micros = rng_range(r, 1, 999999);

    sbuf_printf(b,
                "{\"id\":\"%s\",\"project\":\"%s\",\"name\":\"%s\",\"model\":\"%s\","
                "\"provider\":\"%s\",\"status\":\"%s\",",
                id, k_projects[rng_range(r, 0, COUNT(k_projects) - 1)],
                k_names[rng_range(r, 0, COUNT(k_names) - 1)], m->name, m->provider,
                ok ? "ok" : "error");
    sbuf_printf(b,
                "\"start_time\":\"2026-11-22T10:%02u:%02u.%03uZ\","
                "\"end_time\":\"2026-11-22T10:%02u:%02u.%03uZ\",\"latency_ms\":%u,",
                sec / 60, sec % 60, ms, (sec + latency / 1000) / 60 % 60,
                (sec + latency / 1000) % 60, (ms + latency) % 1000, latency);
    sbuf_printf(b,
                "\"usage\":{\"input_tokens\":%u,\"output_tokens\":%u,\"total_tokens\":%u},"
                "\"cost_usd\":%g,",
                in_tok, out_tok, in_tok + out_tok, cost_micros / 1e6);
    sbuf_printf(b,
                "\"model_parameters\":{\"temperature\":%.1f,\"max_tokens\":%u,\"top_p\":1,"
                "\"stream\":%s,\"seed\":%llu},",
                rng_range(r, 0, 10) / 10.0, 256u << rng_range(r, 0, 4),
                rng_chance(r, 30) ? "true" : "false", (unsigned long long)(rng_next(r) >> 20));
    h = mix_bytes(h, id, strlen(id));
    h = mix_bytes(h, m->name, strlen(m->name));
    h = mix(h, in_tok);
    h = mix(h, out_tok);
    h = mix(h, cost_micros);

    sbuf_puts(b, "\"input\":{\"messages\":[");
    h = gen_message(r, b, h, "system", 120, 560, 0);
    if (rng_chance(r, 30)) { /* an earlier turn */
        sbuf_puts(b, ",");
        h = gen_message(r, b, h, "user", 20, 200, 0);
        sbuf_puts(b, ",");
        h = gen_message(r, b, h, "assistant", 40, 400, 0);
    }
    sbuf_puts(b, ",");
    h = gen_message(r, b, h, "user", 40, 700, 0);
    sbuf_puts(b, "]},\"output\":{\"messages\":[");
    h = gen_message(r, b, h, "assistant", 40, 700, rng_chance(r, 30) ? rng_range(r, 1, 2) : 0);
    sbuf_puts(b, "]}");
    if (!ok)
        sbuf_printf(b, ",\"error\":{\"type\":\"rate_limit\",\"message\":\"429 from %s\"}",
                    m->provider);

    const char *tier = k_tiers[rng_range(r, 0, COUNT(k_tiers) - 1)];
    sbuf_printf(b, ",\"metadata\":{\"customer_tier\":\"%s\",\"region\":\"eu-west-1\"", tier);
    h = mix_bytes(h, tier, strlen(tier));
    if (rng_chance(r, 60))
        sbuf_printf(b, ",\"session_id\":\"s-%08x\",\"user_id\":\"u-%u\"",
                    (unsigned)(rng_next(r) & 0xffffffffu), rng_range(r, 1, 100000));
    if (rng_chance(r, 20))
        sbuf_puts(b, ",\"experiment\":{\"name\":\"prompt-v7\",\"arm\":\"b\",\"weight\":0.5}");
    sbuf_puts(b, "},\"tags\":[");
    unsigned ntags = rng_range(r, 0, 3);
    for (unsigned i = 0; i < ntags; i++)
        sbuf_printf(b, "%s\"%s\"", i ? "," : "", k_tags[rng_range(r, 0, COUNT(k_tags) - 1)]);
    h = mix(h, ntags);

    sbuf_puts(b, "],\"observations\":[");
    unsigned nobs = rng_chance(r, 70) ? 0 : rng_range(r, 1, 3);
    for (unsigned i = 0; i < nobs; i++) {
        sbuf_printf(b,
                    "%s{\"id\":\"o-%u-%u\",\"type\":\"span\",\"name\":\"retrieve\","
                    "\"start_time\":\"2026-11-22T10:00:00.%03uZ\",\"input\":{\"query\":\"",
                    i ? "," : "", seq, i, rng_range(r, 0, 999));
        gen_text(r, b, rng_range(r, 10, 80));
        sbuf_printf(b, "\"},\"metadata\":{\"hits\":%u,\"score\":%.3f}}", rng_range(r, 0, 20),
                    rng_range(r, 0, 1000) / 1000.0);
    }
    sbuf_puts(b, "]}");
    return mix(h, nobs);
}

/* A set of documents, each NUL-terminated inside one block (yajl's tree API needs that). */
typedef struct shape {
    const char *id; /* BENCH name part */
    size_t count;
    char *block;
    size_t *off;
    size_t *len;
    uint64_t *expect; /* checksum of each document */
    size_t bytes;     /* sum of len */
    size_t traces;    /* traces in all documents */
    bool batch;       /* documents are {"traces":[...]} */
} shape;

static void shape_free(shape *s)
{
    free(s->block);
    free(s->off);
    free(s->len);
    free(s->expect);
}

static void build_corpus(shape *single, shape *batch)
{
    rng r = {UINT64_C(20261122)};
    sbuf one = {NULL, 0, 0}, sb = {NULL, 0, 0}, bb = {NULL, 0, 0};
    size_t nbatch = CORPUS_TRACES / BATCH_TRACES;

    *single = (shape){"single", CORPUS_TRACES, NULL, NULL, NULL, NULL, 0, CORPUS_TRACES, false};
    *batch = (shape){"batch", nbatch, NULL, NULL, NULL, NULL, 0, CORPUS_TRACES, true};
    single->off = xmalloc(CORPUS_TRACES * sizeof(size_t));
    single->len = xmalloc(CORPUS_TRACES * sizeof(size_t));
    single->expect = xmalloc(CORPUS_TRACES * sizeof(uint64_t));
    batch->off = xmalloc(nbatch * sizeof(size_t));
    batch->len = xmalloc(nbatch * sizeof(size_t));
    batch->expect = xmalloc(nbatch * sizeof(uint64_t));

    for (size_t i = 0; i < CORPUS_TRACES; i++) {
        size_t k = i / BATCH_TRACES;
        one.len = 0;
        uint64_t h = gen_trace(&r, &one, (unsigned)i);
        single->off[i] = sb.len;
        single->len[i] = one.len;
        single->expect[i] = h;
        single->bytes += one.len;
        sbuf_append(&sb, one.data, one.len + 1); /* keeps the NUL */
        if (i % BATCH_TRACES == 0) {
            batch->off[k] = bb.len;
            batch->expect[k] = 0;
            sbuf_puts(&bb, "{\"traces\":[");
        } else {
            sbuf_puts(&bb, ",");
        }
        sbuf_append(&bb, one.data, one.len);
        batch->expect[k] += h;
        if (i % BATCH_TRACES == BATCH_TRACES - 1) {
            sbuf_puts(&bb, "]}");
            batch->len[k] = bb.len - batch->off[k];
            batch->bytes += batch->len[k];
            sbuf_append(&bb, "", 1);
        }
    }
    single->block = sb.data;
    batch->block = bb.data;
    free(one.data);
}

static const char *doc_text(const shape *s, size_t i)
{
    return s->block + s->off[i];
}

/* ---------------------------------------------------------------- pre-check */

/* The length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF) that starts at s[0], a byte >= 0x80; 0 if there is none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xbf; /* lo, hi: bounds of the second byte */
    size_t more;
    if (c >= 0xc2 && c <= 0xdf) {
        more = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        more = 2;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        more = 3;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n <= more || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k <= more; k++)
        if ((s[k] & 0xc0) != 0x80)
            return 0;
    return more + 1;
}

#define BYTES8(c) (UINT64_C(0x0101010101010101) * (c))
/* Flag (bit 7) the bytes of w that are zero / below 0x20 / have bit 7 set. Only the lowest
 * flag is exact (a borrow can flag a byte above a true one), and only the lowest is used. */
#define ZERO_BYTES(w) (((w)-BYTES8(0x01)) & ~(w)&BYTES8(0x80))
#define CONTROL_BYTES(w) (((w)-BYTES8(0x20)) & ~(w)&BYTES8(0x80))
#define HIGH_BYTES(w) ((w)&BYTES8(0x80))

/* The index of the first flagged byte of a word loaded with memcpy; m is not 0. On a
 * big-endian machine a borrow runs towards earlier bytes, so it only says "look here". */
static size_t first_flagged(uint64_t m)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    (void)m;
    return 0;
#else
    return (size_t)__builtin_ctzll(m) / 8;
#endif
}

/* One pass over the body, tracking whether it is inside a string. Outside strings JSON is
 * ASCII, so checking every byte checks every string. Eight bytes at a time, jumping to the
 * first byte worth a look: a high bit, a quote, a backslash, a control byte inside a string. */
size_t jl_precheck(const unsigned char *s, size_t n, const char **why)
{
    bool in_string = false;
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            uint64_t m = HIGH_BYTES(w) | ZERO_BYTES(w ^ BYTES8('"')) | ZERO_BYTES(w ^ BYTES8('\\'));
            if (in_string)
                m |= CONTROL_BYTES(w);
            if (!m) {
                i += 8;
                continue;
            }
            i += first_flagged(m);
        }
        unsigned c = s[i];
        if (c >= 0x80) {
            size_t len = utf8_len(s + i, n - i);
            if (!len) {
                *why = "invalid UTF-8";
                return i;
            }
            i += len;
        } else if (c == '"') {
            in_string = !in_string;
            i++;
        } else if (in_string && c < 0x20) {
            *why = "control character in a string";
            return i;
        } else if (in_string && c == '\\') {
            if (n - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0) {
                *why = "\\u0000 in a string";
                return i;
            }
            i += 2; /* the escaped byte, which may be a quote; bad escapes are cJSON's to refuse */
        } else {
            i++;
        }
    }
    return n;
}

/* ---------------------------------------------------------------- adapter helpers */

void jl_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

size_t jl_skip_space(const char *text, size_t pos, size_t len)
{
    while (pos < len &&
           (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r'))
        pos++;
    return pos;
}

static const json_ops *const k_libs[] = {
    &jl_cjson_ops, &jl_cjson_checked_ops, &jl_yajl_ops,
    &jl_jsonc_ops, &jl_jsonc_strict_ops,  &jl_jansson_ops,
};
#define NLIBS COUNT(k_libs)

/* ---------------------------------------------------------------- the walk */

typedef struct walk_ctx {
    const json_ops *ops;
    uint64_t h;
} walk_ctx;

static void *field(const json_ops *ops, void *obj, const char *key)
{
    return obj ? ops->get(obj, key) : NULL;
}

static size_t each(const json_ops *ops, void *arr, jl_each_fn fn, void *ctx)
{
    return arr ? ops->each(arr, fn, ctx) : 0;
}

static uint64_t mix_string_field(const json_ops *ops, uint64_t h, void *obj, const char *key)
{
    size_t n = 0;
    void *v = field(ops, obj, key);
    const char *s = v ? ops->str(v, &n) : NULL;
    return s ? mix_bytes(h, s, n) : mix(h, MARK_NULL);
}

static uint64_t mix_number_field(const json_ops *ops, uint64_t h, void *obj, const char *key,
                                 double scale)
{
    double d;
    void *v = field(ops, obj, key);
    if (!v || !ops->num(v, &d))
        return mix(h, MARK_NULL);
    return mix(h, (uint64_t)llround(d * scale));
}

static void walk_tool_call(void *item, void *ctx)
{
    walk_ctx *w = ctx;
    w->h = mix_string_field(w->ops, w->h, field(w->ops, item, "function"), "name");
}

static void walk_message(void *item, void *ctx)
{
    walk_ctx *w = ctx;
    const json_ops *ops = w->ops;
    size_t n = 0;
    void *v = field(ops, item, "role");
    const char *s = v ? ops->str(v, &n) : NULL;
    w->h = mix(w->h, s && n ? (unsigned char)s[0] : MARK_NULL);
    v = field(ops, item, "content");
    s = v ? ops->str(v, &n) : NULL;
    w->h = s ? mix_content(w->h, n, n ? (unsigned char)s[n - 1] : 0) : mix(w->h, MARK_NULL);
    size_t calls = each(ops, field(ops, item, "tool_calls"), walk_tool_call, w);
    w->h = mix(w->h, calls);
}

/* The fields ingest reads from a trace, folded into the checksum gen_trace() computed. */
static uint64_t walk_trace(const json_ops *ops, void *t)
{
    walk_ctx w = {ops, HASH_SEED};
    w.h = mix_string_field(ops, w.h, t, "id");
    w.h = mix_string_field(ops, w.h, t, "model");
    void *usage = field(ops, t, "usage");
    w.h = mix_number_field(ops, w.h, usage, "input_tokens", 1);
    w.h = mix_number_field(ops, w.h, usage, "output_tokens", 1);
    w.h = mix_number_field(ops, w.h, t, "cost_usd", 1e6);
    each(ops, field(ops, field(ops, t, "input"), "messages"), walk_message, &w);
    each(ops, field(ops, field(ops, t, "output"), "messages"), walk_message, &w);
    w.h = mix_string_field(ops, w.h, field(ops, t, "metadata"), "customer_tier");
    w.h = mix(w.h, each(ops, field(ops, t, "tags"), NULL, NULL));
    return mix(w.h, each(ops, field(ops, t, "observations"), NULL, NULL));
}

typedef struct batch_ctx {
    const json_ops *ops;
    uint64_t sum;
} batch_ctx;

static void walk_batch_item(void *item, void *ctx)
{
    batch_ctx *b = ctx;
    b->sum += walk_trace(b->ops, item);
}

static uint64_t walk_doc(const json_ops *ops, void *tree, bool batch)
{
    if (!batch)
        return walk_trace(ops, tree);
    batch_ctx b = {ops, 0};
    each(ops, field(ops, tree, "traces"), walk_batch_item, &b);
    return b.sum;
}

/* ---------------------------------------------------------------- timed passes */

typedef struct pass_arg {
    const json_ops *ops;
    const shape *shape;
    void **trees; /* for serialisation: one prebuilt tree per document */
} pass_arg;

typedef uint64_t (*pass_fn)(const pass_arg *a);

static uint64_t pass_parse(const pass_arg *a)
{
    const shape *s = a->shape;
    uint64_t sum = 0;
    char err[ERR_LEN];
    for (size_t i = 0; i < s->count; i++) {
        void *tree = a->ops->parse(doc_text(s, i), s->len[i], err, sizeof err);
        if (!tree) {
            fprintf(stderr, "json_libs: %s rejected %s document %zu: %s\n", a->ops->label, s->id, i,
                    err);
            abort(); /* cannot happen after verify_parse() */
        }
        sum += walk_doc(a->ops, tree, s->batch);
        a->ops->release(tree);
    }
    return sum;
}

static void touch_sink(const char *s, size_t n, void *ctx)
{
    *(uint64_t *)ctx += n + (unsigned char)s[n / 2] + (unsigned char)s[n - 1];
}

static uint64_t pass_serialize(const pass_arg *a)
{
    uint64_t acc = 0;
    for (size_t i = 0; i < a->shape->count; i++)
        a->ops->serialize(a->trees[i], touch_sink, &acc);
    return acc;
}

/* Baseline for parsing: a checksum loop over the same documents, one call per document. */
static uint64_t byte_sum(const unsigned char *p, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += p[i];
    return sum;
}

static uint64_t pass_checksum(const pass_arg *a)
{
    const shape *s = a->shape;
    uint64_t sum = 0;
    for (size_t i = 0; i < s->count; i++)
        sum += byte_sum((const unsigned char *)doc_text(s, i), s->len[i]);
    return sum;
}

/* The check ingest needs in front of cJSON, on its own. */
static uint64_t pass_precheck(const pass_arg *a)
{
    const shape *s = a->shape;
    uint64_t sum = 0;
    const char *why = NULL;
    for (size_t i = 0; i < s->count; i++)
        sum += jl_precheck((const unsigned char *)doc_text(s, i), s->len[i], &why);
    return sum;
}

/* Baseline for serialising: an owned copy of each document. Called through a volatile
 * pointer so the compiler cannot drop the copy. */
static void *(*volatile copy_bytes)(void *, const void *, size_t) = memcpy;

static uint64_t pass_copy(const pass_arg *a)
{
    const shape *s = a->shape;
    uint64_t acc = 0;
    for (size_t i = 0; i < s->count; i++) {
        char *p = xmalloc(s->len[i] + 1);
        copy_bytes(p, doc_text(s, i), s->len[i] + 1);
        acc += (unsigned char)p[s->len[i] / 2];
        free(p);
    }
    return acc;
}

typedef struct rate {
    double mbps;
    double traces_per_s;
} rate;

/* Best of RUNS runs, each repeating whole passes until run_s has passed. */
static rate measure(pass_fn pass, const pass_arg *a, double run_s)
{
    double best = 0;
    bench_sink += pass(a); /* warm-up: caches, allocator arenas */
    for (int r = 0; r < RUNS; r++) {
        double t0 = now_seconds(), t;
        size_t passes = 0;
        do {
            bench_sink += pass(a);
            passes++;
            t = now_seconds();
        } while (t - t0 < run_s);
        double mbps = (double)passes * (double)a->shape->bytes / (t - t0) / 1e6;
        if (mbps > best)
            best = mbps;
    }
    return (rate){best, best * 1e6 / (double)a->shape->bytes * (double)a->shape->traces};
}

static void print_bench(const char *name, const char *unit, double value, double baseline,
                        int decimals)
{
    printf("BENCH name=%s value=%.*f unit=%s baseline=%.*f ratio=%.4f\n", name, decimals, value,
           unit, decimals, baseline, value / baseline);
    fflush(stdout);
}

static void report(const char *kind, const json_ops *ops, const shape *s, rate got, rate base)
{
    char name[96];
    snprintf(name, sizeof name, "json_%s_%s_%s", kind, ops->id, s->id);
    print_bench(name, "MB/s", got.mbps, base.mbps, 1);
    snprintf(name, sizeof name, "json_%s_%s_%s_traces", kind, ops->id, s->id);
    print_bench(name, "traces/s", got.traces_per_s, base.traces_per_s, 0);
}

/* ---------------------------------------------------------------- verification */

/* Every document must parse and walk to the generator's checksum. */
static bool verify_parse(const json_ops *ops, const shape *s)
{
    char err[ERR_LEN];
    for (size_t i = 0; i < s->count; i++) {
        void *tree = ops->parse(doc_text(s, i), s->len[i], err, sizeof err);
        if (!tree) {
            fprintf(stderr, "json_libs: FAIL %s rejects %s document %zu: %s\n", ops->label, s->id,
                    i, err);
            return false;
        }
        uint64_t h = walk_doc(ops, tree, s->batch);
        ops->release(tree);
        if (h != s->expect[i]) {
            fprintf(stderr, "json_libs: FAIL %s reads %s document %zu wrongly\n", ops->label, s->id,
                    i);
            return false;
        }
    }
    return true;
}

typedef struct roundtrip_ctx {
    const json_ops *ops;
    bool batch;
    uint64_t h;
    size_t out_bytes;
    bool parsed;
} roundtrip_ctx;

static void roundtrip_sink(const char *s, size_t n, void *ctx)
{
    roundtrip_ctx *rt = ctx;
    char err[ERR_LEN];
    char *copy = xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    void *tree = rt->ops->parse(copy, n, err, sizeof err);
    rt->out_bytes += n;
    rt->parsed = tree != NULL;
    rt->h = tree ? walk_doc(rt->ops, tree, rt->batch) : 0;
    if (tree)
        rt->ops->release(tree);
    free(copy);
}

/* Every serialised document must parse back (same library) to the same checksum. Sets
 * *out_bytes to the total size of the output. */
static bool verify_roundtrip(const json_ops *ops, const shape *s, void **trees, size_t *out_bytes)
{
    roundtrip_ctx rt = {ops, s->batch, 0, 0, false};
    for (size_t i = 0; i < s->count; i++) {
        ops->serialize(trees[i], roundtrip_sink, &rt);
        if (!rt.parsed || rt.h != s->expect[i]) {
            fprintf(stderr, "json_libs: FAIL %s output of %s document %zu does not read back\n",
                    ops->label, s->id, i);
            return false;
        }
    }
    *out_bytes = rt.out_bytes;
    return true;
}

/* ---------------------------------------------------------------- probes */

typedef enum probe_kind { PROBE_STRING, PROBE_INT, PROBE_DOC } probe_kind;

typedef struct probe {
    const char *name;
    const char *json;
    probe_kind kind; /* what to show when accepted: member "s", member "n", or just ok */
    bool show_err;   /* show the error texts: ingest reports these to callers */
    unsigned depth;  /* if not 0, json is ignored: depth '[' then depth ']' */
} probe;

static const probe k_probes[] = {
    {"valid UTF-8 and \\u", "{\"s\":\"caf\\u00e9 \xe6\x97\xa5 \\ud83d\\ude00\"}", PROBE_STRING,
     false, 0},
    {"byte 0xFF",
     "{\"s\":\"a\xff"
     "b\"}",
     PROBE_STRING, true, 0},
    {"truncated sequence", "{\"s\":\"a\xe6\x97\"}", PROBE_STRING, true, 0},
    {"overlong C0 AF", "{\"s\":\"\xc0\xaf\"}", PROBE_STRING, true, 0},
    {"encoded surrogate", "{\"s\":\"\xed\xa0\x80\"}", PROBE_STRING, true, 0},
    {"above U+10FFFF", "{\"s\":\"\xf4\x90\x80\x80\"}", PROBE_STRING, true, 0},
    {"0xFF in a key", "{\"\xff\":1}", PROBE_DOC, true, 0},
    {"lone \\ud800", "{\"s\":\"a\\ud800b\"}", PROBE_STRING, true, 0},
    {"\\u0000", "{\"s\":\"a\\u0000b\"}", PROBE_STRING, false, 0},
    {"2^53+1", "{\"n\":9007199254740993}", PROBE_INT, false, 0},
    {"2^64", "{\"n\":18446744073709551616}", PROBE_INT, false, 0},
    {"duplicate key", "{\"n\":1,\"n\":2}", PROBE_INT, false, 0},
    {"trailing bytes", "{\"n\":1} x", PROBE_DOC, false, 0},
    {"comment", "{\"n\":1 /* c */}", PROBE_DOC, false, 0},
    {"trailing comma", "{\"n\":[1,2,]}", PROBE_DOC, false, 0},
    {"single quotes", "{'n':1}", PROBE_DOC, false, 0},
    {"NaN", "{\"n\":NaN}", PROBE_DOC, false, 0},
    {"raw tab in string", "{\"s\":\"a\tb\"}", PROBE_STRING, false, 0},
    {"leading zero", "{\"n\":012}", PROBE_DOC, false, 0},
    {"nesting 40", NULL, PROBE_DOC, false, 40},
    {"nesting 20000", NULL, PROBE_DOC, false, 20000},
};

static void show_string(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, cap - o, "\"");
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    snprintf(out + o, cap - o, "\"");
}

static void run_probe(const json_ops *ops, const probe *p, char *cell, size_t cap, char *err,
                      size_t errlen)
{
    size_t len = p->depth ? 2 * (size_t)p->depth : strlen(p->json);
    char *text = xmalloc(len + 1); /* its own copy, so reading past the end shows in ASan */
    if (p->depth) {
        memset(text, '[', p->depth);
        memset(text + p->depth, ']', p->depth);
        text[len] = '\0';
    } else {
        memcpy(text, p->json, len + 1);
    }
    err[0] = '\0';
    void *tree = ops->parse(text, len, err, errlen);
    free(text);
    if (!tree) {
        snprintf(cell, cap, "reject");
        return;
    }
    void *v = ops->get(tree, p->kind == PROBE_INT ? "n" : "s");
    size_t n = 0;
    const char *s;
    if (p->kind == PROBE_STRING && v && (s = ops->str(v, &n)) != NULL)
        show_string(s, n, cell, cap);
    else if (p->kind == PROBE_INT && v)
        ops->describe_int(v, cell, cap);
    else
        snprintf(cell, cap, "accept");
    ops->release(tree);
}

static void run_probes(void)
{
    enum { CELL = 22 };
    char cell[64], err[ERR_LEN];
    fprintf(stderr,
            "\nEdge cases, each library called as ingest would call it (reject / what a "
            "caller reads):\n%-20s",
            "input");
    for (size_t l = 0; l < NLIBS; l++)
        fprintf(stderr, " %-*s", CELL, k_libs[l]->label);
    fprintf(stderr, "\n");
    for (size_t i = 0; i < COUNT(k_probes); i++) {
        fprintf(stderr, "%-20s", k_probes[i].name);
        for (size_t l = 0; l < NLIBS; l++) {
            run_probe(k_libs[l], &k_probes[i], cell, sizeof cell, err, sizeof err);
            fprintf(stderr, " %-*.*s", CELL, CELL, cell);
        }
        fprintf(stderr, "\n");
    }
    fprintf(stderr, "\nError texts for bad Unicode:\n");
    for (size_t i = 0; i < COUNT(k_probes); i++) {
        if (!k_probes[i].show_err)
            continue;
        for (size_t l = 0; l < NLIBS; l++) {
            run_probe(k_libs[l], &k_probes[i], cell, sizeof cell, err, sizeof err);
            if (strcmp(cell, "reject") == 0)
                fprintf(stderr, "  %-20s %-14s %s\n", k_probes[i].name, k_libs[l]->label, err);
        }
    }
}

/* ---------------------------------------------------------------- main */

typedef struct lib_result {
    rate parse[2];
    rate ser[2];
    double heap_per_byte[2];
    double out_ratio[2];
} lib_result;

static int parse_args(int argc, char **argv, double *run_s)
{
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--run-seconds") == 0 && i + 1 < argc) {
            errno = 0;
            double v = strtod(argv[++i], &end);
            if (errno || *end || !(v >= 0.01 && v <= 10)) {
                fprintf(stderr, "json_libs: --run-seconds wants 0.01 to 10\n");
                return -1;
            }
            *run_s = v;
        } else {
            fprintf(stderr, "usage: json_libs [--run-seconds S]   (S per run, 3 runs per case; "
                            "default 0.34)\n");
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    double run_s = 0.34;
    int rc = 1;
    shape shapes[2];
    lib_result res[NLIBS];
    rate base_sum[2], base_copy[2], precheck[2];
    double t_start = now_seconds();
    size_t lo = SIZE_MAX, hi = 0;

    memset(shapes, 0, sizeof shapes);
    memset(res, 0, sizeof res);
    if (parse_args(argc, argv, &run_s) != 0) {
        rc = 2;
        goto cleanup;
    }
    build_corpus(&shapes[0], &shapes[1]);
    for (size_t l = 0; l < NLIBS; l++) {
        if (k_libs[l]->init && !k_libs[l]->init()) {
            fprintf(stderr, "json_libs: cannot set up %s\n", k_libs[l]->label);
            goto cleanup;
        }
    }

    for (size_t i = 0; i < shapes[0].count; i++) {
        lo = shapes[0].len[i] < lo ? shapes[0].len[i] : lo;
        hi = shapes[0].len[i] > hi ? shapes[0].len[i] : hi;
    }
    fprintf(stderr, "json_libs:");
    for (size_t l = 0; l < NLIBS; l++)
        if (k_libs[l]->serialize) /* base libraries only, not their variants */
            fprintf(stderr, " %s %s;", k_libs[l]->label, k_libs[l]->version());
    fprintf(stderr,
            "\njson_libs: %d traces, %.2f MB, mean %.0f bytes (%zu..%zu); "
            "%zu batch bodies of %d traces, mean %.1f KB\n",
            CORPUS_TRACES, (double)shapes[0].bytes / 1e6, (double)shapes[0].bytes / CORPUS_TRACES,
            lo, hi, shapes[1].count, BATCH_TRACES,
            (double)shapes[1].bytes / (double)shapes[1].count / 1e3);

    for (size_t l = 0; l < NLIBS; l++)
        for (int k = 0; k < 2; k++)
            if (!verify_parse(k_libs[l], &shapes[k]))
                goto cleanup;
    fprintf(stderr, "json_libs: all libraries read every document as generated\n");

    for (int k = 0; k < 2; k++) {
        pass_arg a = {NULL, &shapes[k], NULL};
        base_sum[k] = measure(pass_checksum, &a, run_s);
        base_copy[k] = measure(pass_copy, &a, run_s);
    }
    for (int k = 0; k < 2; k++) {
        pass_arg a = {NULL, &shapes[k], NULL};
        char name[64];
        precheck[k] = measure(pass_precheck, &a, run_s);
        snprintf(name, sizeof name, "json_precheck_%s", shapes[k].id);
        print_bench(name, "MB/s", precheck[k].mbps, base_sum[k].mbps, 1);
    }

    for (size_t l = 0; l < NLIBS; l++) {
        const json_ops *ops = k_libs[l];
        for (int k = 0; k < 2; k++) {
            pass_arg a = {ops, &shapes[k], NULL};
            res[l].parse[k] = measure(pass_parse, &a, run_s);
            report("parse", ops, &shapes[k], res[l].parse[k], base_sum[k]);
        }
    }

    for (size_t l = 0; l < NLIBS; l++) {
        const json_ops *ops = k_libs[l];
        for (int k = 0; k < 2; k++) {
            const shape *s = &shapes[k];
            void **trees = xmalloc(s->count * sizeof(void *));
            char err[ERR_LEN];
            size_t before = heap_in_use(), out_bytes = 0;
            for (size_t i = 0; i < s->count; i++)
                trees[i] = ops->parse(doc_text(s, i), s->len[i], err, sizeof err);
            res[l].heap_per_byte[k] = (double)(heap_in_use() - before) / (double)s->bytes;
            bool ok = true;
            if (ops->serialize) {
                ok = verify_roundtrip(ops, s, trees, &out_bytes);
                res[l].out_ratio[k] = (double)out_bytes / (double)s->bytes;
                if (ok) {
                    pass_arg a = {ops, s, trees};
                    res[l].ser[k] = measure(pass_serialize, &a, run_s);
                    report("serialize", ops, s, res[l].ser[k], base_copy[k]);
                }
            }
            for (size_t i = 0; i < s->count; i++)
                ops->release(trees[i]);
            free(trees);
            if (!ok)
                goto cleanup;
        }
    }

    fprintf(stderr,
            "\nJSON libraries, best of %d runs of >= %.2f s; MB/s of input documents (10^6 B); "
            "ratio = value / baseline\n"
            "%-14s %-24s %-24s %-24s %-24s %-9s %s\n",
            RUNS, run_s, "library", "parse 2KB MB/s tr/s", "parse 200KB MB/s tr/s",
            "serialize 2KB MB/s ratio", "serialize 200KB MB/s ratio", "heap/byte", "out/in bytes");
    fprintf(stderr, "%-14s %7.1f %8.0f %7s %7.1f %8.0f %7s %7.1f %16s %7.1f\n", "baseline",
            base_sum[0].mbps, base_sum[0].traces_per_s, "", base_sum[1].mbps,
            base_sum[1].traces_per_s, "", base_copy[0].mbps, "", base_copy[1].mbps);
    for (size_t l = 0; l < NLIBS; l++) {
        fprintf(stderr, "%-14s %7.1f %8.0f %7.4f %7.1f %8.0f %7.4f", k_libs[l]->label,
                res[l].parse[0].mbps, res[l].parse[0].traces_per_s,
                res[l].parse[0].mbps / base_sum[0].mbps, res[l].parse[1].mbps,
                res[l].parse[1].traces_per_s, res[l].parse[1].mbps / base_sum[1].mbps);
        if (k_libs[l]->serialize)
            fprintf(stderr, " %7.1f %7.4f %8s %7.1f %7.4f %8s %5.1f/%-5.1f %.3f/%.3f\n",
                    res[l].ser[0].mbps, res[l].ser[0].mbps / base_copy[0].mbps, "",
                    res[l].ser[1].mbps, res[l].ser[1].mbps / base_copy[1].mbps, "",
                    res[l].heap_per_byte[0], res[l].heap_per_byte[1], res[l].out_ratio[0],
                    res[l].out_ratio[1]);
        else
            fprintf(stderr, " %7s %7s %8s %7s %7s %8s %5.1f/%-5.1f\n", "-", "", "", "-", "", "",
                    res[l].heap_per_byte[0], res[l].heap_per_byte[1]);
    }
    fprintf(stderr, "(heap/byte: live heap bytes of the trees per input byte, 2KB/200KB; "
                    "out/in: compact output size over input size)\n");
    fprintf(stderr,
            "precheck alone (UTF-8, control bytes, \\u0000): %.1f MB/s 2KB, %.1f MB/s 200KB\n",
            precheck[0].mbps, precheck[1].mbps);

    run_probes();
    fprintf(stderr, "\njson_libs: done in %.1f s\n", now_seconds() - t_start);
    rc = 0;
cleanup:
    for (size_t l = 0; l < NLIBS; l++)
        if (k_libs[l]->fini)
            k_libs[l]->fini();
    shape_free(&shapes[0]);
    shape_free(&shapes[1]);
    return rc;
}
