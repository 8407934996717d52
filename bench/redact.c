/* redact.c -- how fast does export redaction (services/export/redact.c) run?
 *
 * Builds a deterministic corpus in memory: 20000 prompt-like rows (about 32 MB, 150 B to 3 KB
 * each) made of English prose, code, JSON fragments, log lines and the look-alikes that must
 * survive (dates, timestamps, versions, UUIDs, hashes, model names with dates, prices, order
 * numbers). 30% of the rows also carry 1 to 4 values to redact (e-mail addresses, phone numbers,
 * cards, SSNs, IP addresses, connection strings, API keys, JWTs), each inserted between spaces.
 * Before anything is timed, one pass must count exactly the inserted values per kind: a
 * redactor that misses one or replaces a look-alike gets no figure and the program exits 1.
 *
 * Each pass calls redact_text() once per row into a reused buffer, as an export worker does.
 * The baseline is memcpy of the same rows into a buffer, in the same loop. Figures are the best
 * of 3 runs of at least --run-seconds (default 0.3) after a warm-up pass; MB = 10^6 bytes of
 * input. Printed: BENCH name=redact_text (all rows, built-in kinds) on stdout; on stderr a table
 * with the clean rows only, the PII rows only, the same corpus with 4 team patterns (PCRE2) and
 * redact_json_string().
 * Threading: single-threaded. Memory: everything is freed before exit. */
#include "redact.h"

#include "evalbus/mem.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    ROWS = 20000,
    PII_PERCENT = 30,
    RUNS = 3,
};

static volatile uint64_t bench_sink;
static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32) % n;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- corpus */

static const char *const prose[] = {
    "You are a helpful assistant that answers questions about our billing system. ",
    "Summarize the following support ticket in three bullet points and suggest a next step. ",
    "The customer reports that the export job stalls at 87% after about 20 minutes. ",
    "Please rewrite this paragraph so that it reads more naturally, keeping the meaning. ",
    "Explain the difference between a left join and an inner join with a short example. ",
    "I tried restarting the service twice, but the error keeps coming back every morning. ",
    "Translate to French: the meeting has been moved to Thursday afternoon, room 4. ",
    "Can you check whether the refund was processed? It has been a week already. ",
    "Write a haiku about distributed systems and eventual consistency. ",
    "The café on the corner serves a naïve but charming crème brûlée, says the review. ",
    "Étape suivante : vérifier les journaux du serveur et relancer la tâche échouée. ",
    "東京のオフィスから送信されたレポートを要約してください。 ",
    "Our quarterly revenue grew by 12.5% compared to the previous quarter. ",
    "Generate a SQL query that lists the ten most active users in the last 30 days. ",
};

static const char *const lookalikes[] = {
    "Order #48213 shipped on 2026-11-22. ",
    "Deployed version 1.2.3 (v2.4.1 for the worker) at 2026-11-22T10:00:00Z. ",
    "Request 550e8400-e29b-41d4-a716-446655440000 took 10:30:45.123 to finish. ",
    "Model claude-3-5-sonnet-20241022 vs gpt-4o-2024-08-06, temperature=0.7 top_p=0.9. ",
    "Artifact sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ok. ",
    "Total: $1,299.00 for 3 seats; invoice INV-2024-000123, commit a1b2c3d. ",
    "unix time 1732269600, latency p95 245 ms, 16:9 frames at 1080p. ",
    "Ticket ORD-4155550134 refers to card 4111 1111 1111 1112 (fails the check). ",
};

static const char *const code[] = {
    "```python\nfor i, row in enumerate(rows):\n    total += row['amount'] * rate\n```\n",
    "```c\nstatic int parse(const char *s, size_t n) { return n > 0 && s[0] == '{'; }\n```\n",
    "{\"role\": \"user\", \"content\": \"list the open incidents\", \"max_tokens\": 1024}\n",
    "2026-11-22 10:00:01 INFO worker-3 processed batch 8812 in 412 ms (rows=5000)\n",
    "SELECT user_id, count(*) FROM events WHERE ts > now() - interval '7 days' GROUP BY 1;\n",
};

struct pii {
    const char *text;
    redact_kind kind;
    int count; /* replacements it gives */
};

static const struct pii pii_values[] = {
    {"ana.maria@example.com", REDACT_EMAIL, 1},
    {"John.Smith+billing@sub.example.co.uk", REDACT_EMAIL, 1},
    {"(212) 555-0187", REDACT_PHONE, 1},
    {"+44 20 7946 0958", REDACT_PHONE, 1},
    {"415-555-0134", REDACT_PHONE, 1},
    {"4111 1111 1111 1111", REDACT_CARD, 1},
    {"5500000000000004", REDACT_CARD, 1},
    {"123-45-6789", REDACT_SSN, 1},
    {"192.168.1.10", REDACT_IP, 1},
    {"2001:db8::8a2e:370:7334", REDACT_IP, 1},
    {"sk-proj-abc123DEF456ghi789JKL012mno345", REDACT_SECRET, 1},
    {"AKIAIOSFODNN7EXAMPLE", REDACT_SECRET, 1},
    {"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
     "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
     REDACT_SECRET, 1},
    {"Bearer abc123def456ghi789", REDACT_SECRET, 1},
    /* two replacements: the password and the database name */
    {"postgres://app:s3cret@db.internal:5432/orders", REDACT_DBNAME, 2},
};

typedef struct corpus {
    char **rows;
    size_t *lens;
    bool *has_pii;
    size_t n, bytes, clean_bytes, pii_bytes;
    uint64_t expect_total;
} corpus;

static void pick(eb_buf *b, const char *const *list, size_t n)
{
    eb_buf_puts(b, list[rnd((uint32_t)n)]);
}

static void build_corpus(corpus *c)
{
    c->n = ROWS;
    c->rows = eb_calloc(ROWS, sizeof *c->rows);
    c->lens = eb_calloc(ROWS, sizeof *c->lens);
    c->has_pii = eb_calloc(ROWS, sizeof *c->has_pii);
    for (size_t r = 0; r < ROWS; r++) {
        eb_buf b = {0};
        size_t target = 150 + rnd(2850);
        bool pii = rnd(100) < PII_PERCENT;
        int n_pii = pii ? 1 + (int)rnd(4) : 0;
        while (b.len < target) {
            uint32_t what = rnd(10);
            if (what < 5)
                pick(&b, prose, sizeof prose / sizeof prose[0]);
            else if (what < 7)
                pick(&b, lookalikes, sizeof lookalikes / sizeof lookalikes[0]);
            else
                pick(&b, code, sizeof code / sizeof code[0]);
            if (n_pii > 0 && rnd(3) == 0) {
                const struct pii *p = &pii_values[rnd(sizeof pii_values / sizeof pii_values[0])];
                eb_buf_printf(&b, "Contact %s now. ", p->text);
                c->expect_total += (uint64_t)p->count;
                n_pii--;
            }
        }
        while (n_pii-- > 0) {
            const struct pii *p = &pii_values[rnd(sizeof pii_values / sizeof pii_values[0])];
            eb_buf_printf(&b, "Contact %s now. ", p->text);
            c->expect_total += (uint64_t)p->count;
        }
        c->lens[r] = b.len;
        c->rows[r] = eb_buf_steal(&b);
        c->has_pii[r] = pii;
        c->bytes += c->lens[r];
        if (pii)
            c->pii_bytes += c->lens[r];
        else
            c->clean_bytes += c->lens[r];
    }
}

static void free_corpus(corpus *c)
{
    for (size_t r = 0; r < c->n; r++)
        free(c->rows[r]);
    free(c->rows);
    free(c->lens);
    free(c->has_pii);
}

/* ---------------------------------------------------------------- passes */

enum mode { MODE_MEMCPY, MODE_TEXT, MODE_JSON };
enum subset { ALL_ROWS, CLEAN_ROWS, PII_ROWS };

static bool wanted(const corpus *c, size_t r, enum subset s)
{
    return s == ALL_ROWS || (s == PII_ROWS) == c->has_pii[r];
}

/* One pass; returns the input bytes it covered. */
static size_t one_pass(const corpus *c, redactor *red, enum mode m, enum subset s, eb_buf *out,
                       char *copy, redact_stats *stats)
{
    size_t bytes = 0;
    for (size_t r = 0; r < c->n; r++) {
        if (!wanted(c, r, s))
            continue;
        if (m == MODE_MEMCPY) {
            memcpy(copy, c->rows[r], c->lens[r]);
            bench_sink += (unsigned char)copy[c->lens[r] / 2];
        } else {
            eb_buf_reset(out);
            eb_status st = m == MODE_TEXT
                               ? redact_text(red, c->rows[r], c->lens[r], out, stats)
                               : redact_json_string(red, c->rows[r], c->lens[r], out, stats);
            if (st != EB_OK) {
                fprintf(stderr, "redact: row %zu: redaction failed\n", r);
                exit(1);
            }
            bench_sink += out->len;
        }
        bytes += c->lens[r];
    }
    return bytes;
}

/* Best MB/s of RUNS runs of at least run_seconds each. */
static double measure(const corpus *c, redactor *red, enum mode m, enum subset s,
                      double run_seconds, eb_buf *out, char *copy)
{
    double best = 0;
    one_pass(c, red, m, s, out, copy, NULL); /* warm-up */
    for (int run = 0; run < RUNS; run++) {
        double t0 = now_seconds(), t;
        size_t bytes = 0;
        do {
            bytes += one_pass(c, red, m, s, out, copy, NULL);
            t = now_seconds() - t0;
        } while (t < run_seconds);
        double mbs = (double)bytes / 1e6 / t;
        if (mbs > best)
            best = mbs;
    }
    return best;
}

static redactor *make_redactor(bool team_patterns)
{
    static const char key[] = "bench-team-key-0123456789abcdef!";
    static const redact_pattern pats[] = {
        {"ORD-[0-9]{6}\\b", "ORDER"},
        {"\\bE[0-9]{5}\\b", "EMPLOYEE"},
        {"(?i)project\\s+falcon", "CODENAME"},
        {"\\b[A-Z]{2}[0-9]{2}(?: ?[0-9A-Z]{4}){3,7}\\b", "IBAN"},
    };
    redact_config cfg = {.key = key, .key_len = sizeof key - 1};
    redactor *r = NULL;
    if (team_patterns) {
        cfg.patterns = pats;
        cfg.n_patterns = sizeof pats / sizeof pats[0];
    }
    if (redact_new(&cfg, &r) != EB_OK) {
        fprintf(stderr, "redact: redact_new failed\n");
        exit(1);
    }
    return r;
}

int main(int argc, char **argv)
{
    double run_seconds = 0.3;
    for (int k = 1; k < argc; k++) {
        if (!strcmp(argv[k], "--run-seconds") && k + 1 < argc) {
            run_seconds = atof(argv[++k]);
        } else {
            fprintf(stderr, "usage: redact [--run-seconds S]\n");
            return 2;
        }
    }

    corpus c = {0};
    build_corpus(&c);
    redactor *plain = make_redactor(false), *team = make_redactor(true);
    eb_buf out = {0};
    size_t max_len = 0;
    for (size_t r = 0; r < c.n; r++)
        if (c.lens[r] > max_len)
            max_len = c.lens[r];
    char *copy = eb_malloc(max_len);

    /* correctness first: exactly the inserted values are replaced */
    redact_stats stats = {0};
    one_pass(&c, plain, MODE_TEXT, ALL_ROWS, &out, copy, &stats);
    fprintf(stderr,
            "redact: corpus %zu rows, %.1f MB (%.1f MB with PII), %llu values inserted, "
            "%llu replaced\n",
            c.n, (double)c.bytes / 1e6, (double)c.pii_bytes / 1e6,
            (unsigned long long)c.expect_total, (unsigned long long)stats.total);
    if (stats.total != c.expect_total) {
        fprintf(stderr, "redact: replacement count differs from the corpus: no figure\n");
        return 1;
    }

    double base = measure(&c, plain, MODE_MEMCPY, ALL_ROWS, run_seconds, &out, copy);
    double all = measure(&c, plain, MODE_TEXT, ALL_ROWS, run_seconds, &out, copy);
    double clean = measure(&c, plain, MODE_TEXT, CLEAN_ROWS, run_seconds, &out, copy);
    double pii = measure(&c, plain, MODE_TEXT, PII_ROWS, run_seconds, &out, copy);
    double json = measure(&c, plain, MODE_JSON, ALL_ROWS, run_seconds, &out, copy);
    double custom = measure(&c, team, MODE_TEXT, ALL_ROWS, run_seconds, &out, copy);

    fprintf(stderr, "%-44s %10s\n", "case", "MB/s");
    fprintf(stderr, "%-44s %10.1f\n", "memcpy (baseline)", base);
    fprintf(stderr, "%-44s %10.1f\n", "redact_text, all rows", all);
    fprintf(stderr, "%-44s %10.1f\n", "redact_text, rows without PII", clean);
    fprintf(stderr, "%-44s %10.1f\n", "redact_text, rows with PII", pii);
    fprintf(stderr, "%-44s %10.1f\n", "redact_json_string, all rows", json);
    fprintf(stderr, "%-44s %10.1f\n", "redact_text + 4 team patterns (PCRE2)", custom);
    printf("BENCH name=redact_text value=%.1f unit=MB/s baseline=%.1f ratio=%.4f\n", all, base,
           all / base);

    free(copy);
    eb_buf_free(&out);
    redact_free(plain);
    redact_free(team);
    free_corpus(&c);
    return 0;
}
