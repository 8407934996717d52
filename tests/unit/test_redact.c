/* test_redact.c -- unit tests for services/export/redact.c.
 * Tables first: true positives of every kind (input and the expected output with each token
 * masked to <KIND>, so the exact replaced span is checked), look-alikes that must come through
 * byte for byte, and Luhn cases. Then token properties (value = first 8 hex of
 * HMAC-SHA256(key, KIND ":" normalized value); equal within a team, different across teams;
 * normalization), UTF-8 neighbours, the JSON-string contract, team patterns, counts and the
 * output bound. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "redact.h"

#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char team_a_key[] = "team-a-secret-key-0123456789abcdef";
static const char team_b_key[] = "team-b-secret-key-0123456789abcdef";

/* ---------------------------------------------------------------- helpers */

static redactor *make(const char *key, const redact_pattern *pats, size_t n, unsigned off)
{
    redact_config cfg = {
        .key = key, .key_len = strlen(key), .patterns = pats, .n_patterns = n, .off = off};
    redactor *r = NULL;
    assert_int_equal(redact_new(&cfg, &r), EB_OK);
    assert_non_null(r);
    return r;
}

/* Redacts s (redact_text); the caller frees the result. */
static char *red(redactor *r, const char *s, redact_stats *stats)
{
    eb_buf out = {0};
    assert_int_equal(redact_text(r, s, strlen(s), &out, stats), EB_OK);
    if (!out.data)
        return eb_strdup("");
    assert_true(out.len <= redact_output_bound(r, strlen(s)));
    return eb_buf_steal(&out);
}

/* Length of a token <KIND_xxxxxxxx> at p (label [A-Z][A-Z0-9_]*, 8 lower-case hex), 0 if
 * there is none; *label_len gets the label's length. */
static size_t token_len(const char *p, size_t *label_len)
{
    const char *gt = p[0] == '<' ? memchr(p, '>', strnlen(p, 40)) : NULL;
    if (!gt || gt - p < 11 || gt[-9] != '_' || !(p[1] >= 'A' && p[1] <= 'Z'))
        return 0;
    for (const char *q = gt - 8; q < gt; q++)
        if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f')))
            return 0;
    for (const char *q = p + 1; q < gt - 9; q++)
        if (!((*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_'))
            return 0;
    *label_len = (size_t)(gt - 9 - (p + 1));
    return (size_t)(gt - p) + 1;
}

/* s with every token <KIND_xxxxxxxx> turned into <KIND>; the caller frees. */
static char *mask(const char *s)
{
    eb_buf b = {0};
    for (const char *p = s; *p;) {
        size_t ll = 0, tl = token_len(p, &ll);
        if (tl) {
            eb_buf_putc(&b, '<');
            eb_buf_append(&b, p + 1, ll);
            eb_buf_putc(&b, '>');
            p += tl;
        } else {
            eb_buf_putc(&b, *p++);
        }
    }
    if (!b.data)
        return eb_strdup("");
    return eb_buf_steal(&b);
}

/* The token that key gives value under label: <LABEL_first 8 hex of HMAC>. */
static void expected_token(const char *key, const char *label, const char *value, char *out,
                           size_t cap)
{
    char *msg = eb_asprintf("%s:%s", label, value);
    unsigned char mac[32];
    char hex[65];
    eb_hmac_sha256(key, strlen(key), msg, strlen(msg), mac);
    eb_hex_encode(mac, 4, hex);
    snprintf(out, cap, "<%s_%.8s>", label, hex);
    free(msg);
}

/* The first token in s, copied to out ("" if none). */
static void first_token(const char *s, char *out, size_t cap)
{
    out[0] = '\0';
    for (const char *p = s; *p; p++) {
        size_t ll = 0, tl = token_len(p, &ll);
        if (tl) {
            snprintf(out, cap, "%.*s", (int)tl, p);
            return;
        }
    }
}

/* ---------------------------------------------------------------- true positives */

struct tp_case {
    const char *in;
    const char *want; /* masked */
};

#define GHP                                                                                        \
    "ghp_"                                                                                         \
    "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
#define EBKEY                                                                                      \
    "eb_abcdefgh23_"                                                                               \
    "Q2hhbmdlTWVQbGVhc2UtMDEyMzQ1Njc4OWFiY2Rl_-x"
#define JWT                                                                                        \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."         \
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"

static const struct tp_case tp_cases[] = {
    /* e-mail */
    {"mail ana@example.com today", "mail <EMAIL> today"},
    {"Contact: John.Smith+tag@sub.example.co.uk.", "Contact: <EMAIL>."},
    {"(bob_o-neil@mail.example.org)", "(<EMAIL>)"},
    {"mailto:ANA@EXAMPLE.COM", "mailto:<EMAIL>"},
    {"<ana@x.io>", "<<EMAIL>>"},
    {"escribe a josé@correo.es", "escribe a <EMAIL>"},
    {"ana@xn--bcher-kva.ch, bo@b.example", "<EMAIL>, <EMAIL>"},
    {"\"ana.maria@example.com\"", "\"<EMAIL>\""},
    /* phone */
    {"call (212) 555-0187 now", "call <PHONE> now"},
    {"415-555-0134", "<PHONE>"},
    {"+44 20 7946 0958", "<PHONE>"},
    {"+1 (415) 555-0134", "<PHONE>"},
    {"dial +1-415-555-0134.", "dial <PHONE>."},
    {"1-800-555-0199", "<PHONE>"},
    {"212.555.0187", "<PHONE>"},
    {"+33 1 23 45 67 89", "<PHONE>"},
    {"+49 30 12345678", "<PHONE>"},
    {"+14155550134", "<PHONE>"},
    {"+44 (0)20 7946 0958", "<PHONE>"},
    {"020 7946 0958", "<PHONE>"},
    {"01 23 45 67 89", "<PHONE>"},
    {"(030) 1234 5678", "<PHONE>"},
    {"tel:+81 3-1234-5678", "tel:<PHONE>"},
    {"phone=415 555 0134;", "phone=<PHONE>;"},
    /* card */
    {"4111 1111 1111 1111", "<CARD>"},
    {"card 4111-1111-1111-1111 exp 12/27", "card <CARD> exp 12/27"},
    {"5500000000000004", "<CARD>"},
    {"amex 378282246310005.", "amex <CARD>."},
    {"3782 822463 10005", "<CARD>"},
    {"6011000990139424", "<CARD>"},
    {"2223000048400011", "<CARD>"},
    {"diners 30569309025904", "diners <CARD>"},
    /* SSN */
    {"SSN 123-45-6789.", "SSN <SSN>."},
    {"ssn: 078-05-1120", "ssn: <SSN>"},
    /* IP */
    {"from 192.168.1.10 via", "from <IP> via"},
    {"10.0.0.1:5432", "<IP>:5432"},
    {"http://203.0.113.7/path", "http://<IP>/path"},
    {"0.0.0.0 and 255.255.255.255", "<IP> and <IP>"},
    {"2001:db8::1", "<IP>"},
    {"[2001:db8:85a3::8a2e:370:7334]:443", "[<IP>]:443"},
    {"2001:0db8:85a3:0000:0000:8a2e:0370:7334", "<IP>"},
    {"bind ::1 only", "bind <IP> only"},
    {"fe80::1ff:fe23:4567:890a%eth0", "<IP>%eth0"},
    {"::ffff:192.0.2.128", "<IP>"},
    {"2001:DB8::", "<IP>"},
    /* connection strings */
    {"postgres://app:s3cret@db.internal:5432/orders?sslmode=require",
     "postgres://app:<SECRET>@db.internal:5432/<DBNAME>?sslmode=require"},
    {"mysql://root@10.1.2.3/shop", "mysql://root@<IP>/<DBNAME>"},
    {"mongodb+srv://u:p4ss@cluster0.example.net/analytics",
     "mongodb+srv://u:<SECRET>@cluster0.example.net/<DBNAME>"},
    {"host=localhost port=5432 dbname=billing user=app password=hunter2",
     "host=localhost port=5432 dbname=<DBNAME> user=app password=<SECRET>"},
    {"https://user:pa55@example.com/x", "https://user:<SECRET>@example.com/x"},
    {"jdbc:postgresql://db:5432/payroll", "jdbc:postgresql://db:5432/<DBNAME>"},
    {"Server=db;Database='crm prod';Pwd=x1", "Server=db;Database='<DBNAME>';Pwd=<SECRET>"},
    {"DATABASE_URL=postgresql+psycopg2://svc:pw@[2001:db8::5]:5432/metrics",
     "DATABASE_URL=postgresql+psycopg2://svc:<SECRET>@[<IP>]:5432/<DBNAME>"},
    /* secrets */
    {"key sk-proj-abc123DEF456ghi789JKL012mno345 ok", "key <SECRET> ok"},
    {"sk-ant-api03-AbCdEf0123456789xyzXYZ-_abcQ", "<SECRET>"},
    {"sk-1234567890abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL", "<SECRET>"},
    {"aws AKIAIOSFODNN7EXAMPLE", "aws <SECRET>"},
    {"ASIAY34FZKBOKMUTVV7A,", "<SECRET>,"},
    {"token " GHP, "token <SECRET>"},
    {"gho_16C7e42F292c6912E7710c838347Ae178B4a", "<SECRET>"},
    {"github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW",
     "<SECRET>"},
    {"xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "<SECRET>"},
    {"EVALBUS_API_KEY=" EBKEY, "EVALBUS_API_KEY=<SECRET>"},
    {"jwt " JWT ".", "jwt <SECRET>."},
    {"Authorization: Bearer abc123def456ghi789", "Authorization: Bearer <SECRET>"},
    {"authorization: bearer " JWT, "authorization: bearer <SECRET>"},
    {"key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\nabcdEFGH+/==\n"
     "-----END RSA PRIVATE KEY-----\nend",
     "key:\n<SECRET>\nend"},
    {"-----BEGIN OPENSSH PRIVATE KEY-----\r\nb3BlbnNzaC1rZXktdjEAAAAA\r\n"
     "-----END OPENSSH PRIVATE KEY-----",
     "<SECRET>"},
    {"truncated -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
     "truncated <SECRET>\n"},
};

static void test_true_positives(void **state)
{
    (void)state;
    redactor *r = make(team_a_key, NULL, 0, 0);
    int bad = 0;
    for (size_t k = 0; k < sizeof tp_cases / sizeof tp_cases[0]; k++) {
        char *out = red(r, tp_cases[k].in, NULL);
        char *m = mask(out);
        if (strcmp(m, tp_cases[k].want)) {
            print_error("case %zu: %s\n  got  %s\n  want %s\n", k, tp_cases[k].in, m,
                        tp_cases[k].want);
            bad++;
        }
        free(m);
        free(out);
    }
    redact_free(r);
    assert_int_equal(bad, 0);
}

/* ---------------------------------------------------------------- look-alikes */

static const char *const lookalikes[] = {
    /* order numbers and ids */
    "Order #48213 shipped",
    "order 48213, invoice INV-2024-000123, ticket ORD-4155550134",
    "unix time 1732269600, ms 1732269600123, id 98765432109876543",
    "snowflake 1234567812345670 and 9000000000000001", /* Luhn-valid, but not a card network */
    "call 555-0134 ext 12",
    "123-456-7890", /* no area code starts with 1 */
    "isbn 978-3-16-148410-0",
    /* versions */
    "version 1.2.3, v2.4.1, 10.0.19045.2364, libfoo 2.4.1-rc1, Python 3.11",
    "node v18.17.0 and openssl 3.0.11",
    /* timestamps and dates */
    "2026-11-22T10:00:00Z",
    "2026-11-22 and 2026-11-22 10:30:45 and 10:30:45.123 and 12:30",
    "2024/11/22, 22.11.2026, 11/22/2026, 20241022",
    "at 2026-11-22T10:00:00.123456+05:30",
    /* UUIDs and hashes */
    "550e8400-e29b-41d4-a716-446655440000",
    "550E8400-E29B-41D4-A716-446655440000",
    "12345678-1234-5678-1234-567812345678",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 (a1b2c3d)",
    /* model names with dates */
    "claude-3-5-sonnet-20241022, gpt-4o-2024-08-06, claude-3-opus-20240229",
    "gemini-1.5-pro-002 and llama-3.1-405b-instruct",
    /* prices and numbers */
    "$1,299.00 or 1,299.00 USD or 1.299,00 EUR or $4111.11",
    "score 0.95, pi 3.14159, eps 1e-9, 16:9, 1080p, -12.5, +20%",
    "temperature=0.7 top_p=0.9 max_tokens=1024",
    "UTC+05:30 and +1.5",
    /* card-like numbers failing Luhn */
    "4111 1111 1111 1112",
    "4111111111111112 and 4242-4242-4242-4241",
    "1234567812345678",
    /* invalid SSNs */
    "000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000",
    /* IP look-alikes */
    "999.999.999.999 256.1.1.1 1.2.3 01.02.03.04",
    "MAC 00:1a:2b:3c:4d:5e and 00-1A-2B-3C-4D-5E",
    "std::vector<int> a::b Foo::Bar x[::2] y[::-1] abc::def",
    /* not e-mail addresses */
    "user@localhost, @mention, foo@bar, a@b.c, name@123.45",
    /* not secrets */
    "sk-learn and sk-short123 and scikit-learn",
    "Bearer token, bearer bonds",
    "password reset and the database is slow",
    "password: see the vault",
    "AKIA is a prefix",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    /* URLs without credentials or database */
    "https://example.com/path?q=1 and http://localhost:8080/",
    /* plain prose and code */
    "The quick brown fox jumps over the lazy dog.",
    "for (int i = 0; i < 10; i++) { x += a[i] - b[i]; }",
    "café naïve 東京 😀",
};

static void test_lookalikes(void **state)
{
    (void)state;
    redactor *r = make(team_a_key, NULL, 0, 0);
    int bad = 0;
    for (size_t k = 0; k < sizeof lookalikes / sizeof lookalikes[0]; k++) {
        redact_stats stats = {0};
        char *out = red(r, lookalikes[k], &stats);
        if (strcmp(out, lookalikes[k]) || stats.total) {
            print_error("look-alike %zu changed:\n  in  %s\n  out %s\n", k, lookalikes[k], out);
            bad++;
        }
        free(out);
    }
    redact_free(r);
    assert_int_equal(bad, 0);
}

/* ---------------------------------------------------------------- Luhn */

struct luhn_case {
    const char *number;
    bool card;
};

static const struct luhn_case luhn_cases[] = {
    {"4111111111111111", true},      {"4012888888881881", true},     {"4242424242424242", true},
    {"5105105105105100", true},      {"3530111333300000", true},     {"6011111111111117", true},
    {"6200000000000005", true},      {"378282246310005", true},      {"4111111111111112", false},
    {"4242424242424241", false},     {"5105105105105101", false},    {"378282246310006", false},
    {"4111 1111 1111 1111", true},   {"4111 1111 1111 1113", false}, {"4111-1111-1111-1111", true},
    {"4111-1111-1111-1110", false},  {"4111 1111-1111 1111", false}, /* mixed separators */
    {"41111111111111111111", false},                                 /* 20 digits */
    {"411111111111", false},                                         /* 12 digits */
};

static void test_luhn(void **state)
{
    (void)state;
    redactor *r = make(team_a_key, NULL, 0, 0);
    for (size_t k = 0; k < sizeof luhn_cases / sizeof luhn_cases[0]; k++) {
        char *in = eb_asprintf("pay with %s today", luhn_cases[k].number);
        redact_stats stats = {0};
        char *out = red(r, in, &stats);
        char *m = mask(out);
        if (luhn_cases[k].card)
            assert_string_equal(m, "pay with <CARD> today");
        else
            assert_int_equal(stats.count[REDACT_CARD], 0);
        free(m);
        free(out);
        free(in);
    }
    redact_free(r);
}

/* ---------------------------------------------------------------- tokens */

struct token_case {
    const char *in; /* one value */
    const char *label;
    const char *normalized;
};

static const struct token_case token_cases[] = {
    {"Ana.Maria@Example.COM", "EMAIL", "ana.maria@example.com"},
    {"(415) 555-0134", "PHONE", "14155550134"},
    {"+1 415 555 0134", "PHONE", "14155550134"},
    {"+44 20 7946 0958", "PHONE", "442079460958"},
    {"+44 (0)20 7946 0958", "PHONE", "442079460958"},
    {"4111-1111-1111-1111", "CARD", "4111111111111111"},
    {"123-45-6789", "SSN", "123456789"},
    {"10.0.0.1", "IP", "10.0.0.1"},
    {"2001:DB8::1", "IP", "2001:0db8:0000:0000:0000:0000:0000:0001"},
    {"::ffff:192.0.2.128", "IP", "0000:0000:0000:0000:0000:ffff:c000:0280"},
    {"AKIAIOSFODNN7EXAMPLE", "SECRET", "AKIAIOSFODNN7EXAMPLE"},
    {"dbname=billing", "DBNAME", "billing"},
};

static void test_token_value(void **state)
{
    (void)state;
    redactor *r = make(team_a_key, NULL, 0, 0);
    for (size_t k = 0; k < sizeof token_cases / sizeof token_cases[0]; k++) {
        char want[64], got[64];
        char *out = red(r, token_cases[k].in, NULL);
        expected_token(team_a_key, token_cases[k].label, token_cases[k].normalized, want,
                       sizeof want);
        first_token(out, got, sizeof got);
        if (strcmp(got, want))
            print_error("%s: got %s, want %s\n", token_cases[k].in, got, want);
        assert_string_equal(got, want);
        free(out);
    }
    redact_free(r);
}

/* Pairs that must give the same token within a team. */
static const char *const same_pairs[][2] = {
    {"ana@x.com", "ANA@X.COM"},
    {"ana@x.com", "Ana@x.Com"},
    {"+1 (415) 555-0134", "415.555.0134"},
    {"1-415-555-0134", "(415) 555-0134"},
    {"4111 1111 1111 1111", "4111111111111111"},
    {"2001:db8::1", "2001:0db8:0:0:0:0:0:1"},
    {"::1", "0:0:0:0:0:0:0:1"},
    /* letters beyond ASCII are lower-cased too */
    {"JOS\xc3\x89@example.com", "jos\xc3\xa9@example.com"},
    {"\xc5\x81UKASZ@example.pl", "\xc5\x82ukasz@example.pl"},
    {"\xce\x91\xce\x9d\xce\x9d\xce\x91@example.gr", "\xce\xb1\xce\xbd\xce\xbd\xce\xb1@example.gr"},
    {"\xd0\x98\xd0\x92\xd0\x90\xd0\x9d@example.ru", "\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd@example.ru"},
    /* the trunk 0 in brackets is not dialed from abroad: the same number */
    {"+44 (0)20 7946 0958", "+44 20 7946 0958"},
    {"+49 (0)30 1234 5678", "+49-30-1234-5678"},
};

static void test_token_stability(void **state)
{
    (void)state;
    redactor *a = make(team_a_key, NULL, 0, 0);
    redactor *a2 = make(team_a_key, NULL, 0, 0);
    redactor *b = make(team_b_key, NULL, 0, 0);

    for (size_t k = 0; k < sizeof same_pairs / sizeof same_pairs[0]; k++) {
        char *x = red(a, same_pairs[k][0], NULL), *y = red(a, same_pairs[k][1], NULL);
        char *z = red(a2, same_pairs[k][0], NULL), *w = red(b, same_pairs[k][0], NULL);
        assert_non_null(strchr(x, '<'));
        assert_string_equal(x, y);     /* normalization */
        assert_string_equal(x, z);     /* same key, another redactor: same token */
        assert_string_not_equal(x, w); /* another team */
        free(x), free(y), free(z), free(w);
    }

    /* equal values in one text: equal tokens; different values: different tokens */
    char *out = red(a, "ana@x.com wrote to bo@x.com and ana@x.com", NULL);
    char t1[64], t2[64], t3[64];
    first_token(out, t1, sizeof t1);
    first_token(strstr(out, "to ") + 3, t2, sizeof t2);
    first_token(strstr(out, "and ") + 4, t3, sizeof t3);
    assert_string_equal(t1, t3);
    assert_string_not_equal(t1, t2);
    free(out);

    /* the same text as two kinds gives two different tokens (the kind is in the MAC) */
    char e[64], p[64];
    expected_token(team_a_key, "EMAIL", "x", e, sizeof e);
    expected_token(team_a_key, "PHONE", "x", p, sizeof p);
    assert_string_not_equal(e + 7, p + 7);

    redact_free(a);
    redact_free(a2);
    redact_free(b);
}

/* ---------------------------------------------------------------- UTF-8 */

static const struct tp_case utf8_cases[] = {
    {"café ana@x.com naïve", "café <EMAIL> naïve"},
    {"電話 +81 3-1234-5678です", "電話 <PHONE>です"},
    {"Zoë's IP 10.0.0.7—ok", "Zoë's IP <IP>—ok"},
    {"カード4111111111111111番", "カード<CARD>番"},
    {"«ana@x.com»", "«<EMAIL>»"},
    {"naïve@x.com", "<EMAIL>"},
    {"ключ sk-proj-abc123DEF456ghi789JKL012mno345…", "ключ <SECRET>…"},
};

static void test_utf8_neighbours(void **state)
{
    (void)state;
    redactor *r = make(team_a_key, NULL, 0, 0);
    for (size_t k = 0; k < sizeof utf8_cases / sizeof utf8_cases[0]; k++) {
        char *out = red(r, utf8_cases[k].in, NULL);
        char *m = mask(out);
        assert_true(eb_utf8_valid(out, strlen(out)));
        if (strcmp(m, utf8_cases[k].want))
            print_error("utf8 case %zu: got %s want %s\n", k, m, utf8_cases[k].want);
        assert_string_equal(m, utf8_cases[k].want);
        free(m);
        free(out);
    }
    redact_free(r);
}

/* ---------------------------------------------------------------- JSON strings */

static void test_json_round_trip(void **state)
{
    (void)state;
    /* escapes of every sort around and next to the values */
    static const char doc[] =
        "{\"prompt\":\"Contact: ana@x.com\\nPhone: \\\"415-555-0134\\\"\\tcaf\\u00e9 "
        "\\u00e9ana@x.com\\u00e9 C:\\\\path\\\\10.0.0.1\\\\x \\ud83d\\ude00 "
        "Bearer abc123def456ghi789\\r\\n\\u0041KIAIOSFODNN7EXAMPLE\"}";
    redactor *r = make(team_a_key, NULL, 0, 0);
    cJSON *obj = NULL, *back = NULL;
    eb_buf red_value = {0}, json = {0};
    redact_stats stats = {0};

    assert_int_equal(eb_json_parse_object(doc, sizeof doc - 1, &obj), EB_OK);
    const char *value = cJSON_GetObjectItem(obj, "prompt")->valuestring;
    assert_int_equal(redact_json_string(r, value, strlen(value), &red_value, &stats), EB_OK);

    eb_buf_puts(&json, "{\"prompt\":\"");
    eb_buf_json_escape(&json, red_value.data);
    eb_buf_puts(&json, "\"}");
    assert_int_equal(eb_json_parse_object(json.data, json.len, &back), EB_OK);
    assert_string_equal(cJSON_GetObjectItem(back, "prompt")->valuestring, red_value.data);

    char *m = mask(red_value.data);
    assert_string_equal(m, "Contact: <EMAIL>\nPhone: \"<PHONE>\"\tcafé <EMAIL>é "
                           "C:\\path\\<IP>\\x 😀 Bearer <SECRET>\r\n<SECRET>");
    assert_int_equal(stats.count[REDACT_EMAIL], 2);
    assert_int_equal(stats.count[REDACT_SECRET], 2);
    assert_int_equal(stats.total, 6);
    free(m);

    /* the decoded text and plain redact_text agree on valid input */
    eb_buf plain = {0};
    assert_int_equal(redact_text(r, value, strlen(value), &plain, NULL), EB_OK);
    assert_string_equal(plain.data, red_value.data);

    eb_buf_free(&plain);
    eb_buf_free(&red_value);
    eb_buf_free(&json);
    cJSON_Delete(obj);
    cJSON_Delete(back);
    redact_free(r);
}

static void test_json_invalid_utf8(void **state)
{
    (void)state;
    static const char in[] = "bad \xC3 byte \xED\xA0\x80 ana@x.com \xF4\x90\x80\x80 end \xE2\x82";
    redactor *r = make(team_a_key, NULL, 0, 0);
    eb_buf out = {0}, text = {0};

    assert_int_equal(redact_json_string(r, in, sizeof in - 1, &out, NULL), EB_OK);
    assert_true(eb_utf8_valid(out.data, out.len));
    char *m = mask(out.data);
    assert_string_equal(m, "bad \xEF\xBF\xBD byte \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD <EMAIL> "
                           "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD end "
                           "\xEF\xBF\xBD\xEF\xBF\xBD");
    free(m);
    /* redact_text copies what it does not replace byte for byte */
    assert_int_equal(redact_text(r, in, sizeof in - 1, &text, NULL), EB_OK);
    assert_non_null(memmem(text.data, text.len, "bad \xC3 byte", 10));
    assert_true(out.len <= redact_output_bound(r, sizeof in - 1));

    eb_buf_free(&out);
    eb_buf_free(&text);
    redact_free(r);
}

/* redact_text() over the escaped body of a JSON string (not the contract, but a mistake it
 * survives): no replacement starts inside an escape, so the JSON stays valid. */
static void test_escaped_text_stays_json(void **state)
{
    (void)state;
    static const char doc[] =
        "{\"p\":\"to:\\nana@x.com \\u00e9bo@x.com\\t\\u0041KIAIOSFODNN7EXAMPLE "
        "\\\\10.0.0.1 \\b2001:db8::1 -----BEGIN PRIVATE KEY-----\\nMIIE\\n\"}";
    redactor *r = make(team_a_key, NULL, 0, 0);
    eb_buf out = {0};
    cJSON *obj = NULL;

    assert_int_equal(redact_text(r, doc, sizeof doc - 1, &out, NULL), EB_OK);
    assert_int_equal(eb_json_parse_object(out.data, out.len, &obj), EB_OK);
    char *m = mask(out.data);
    assert_string_equal(
        m, "{\"p\":\"to:\\n<EMAIL> \\u00e9<EMAIL>\\t\\u0041KIAIOSFODNN7EXAMPLE "
           "\\\\<IP> \\b2001:db8::1 <SECRET>\"}"); /* the \\n after a truncated key goes too */
    free(m);
    cJSON_Delete(obj);
    eb_buf_free(&out);
    redact_free(r);
}

/* ---------------------------------------------------------------- team patterns */

static const redact_pattern team_patterns[] = {
    {"ORD-[0-9]{6}", "ORDER"},
    {"\\bE[0-9]{5}\\b", "EMPLOYEE"},
    {"(?i)zoë", "NAME"},
    {"[a-z]+@corp\\.example", "CORP_MAIL"},
};

static void test_custom_patterns(void **state)
{
    (void)state;
    redactor *r = make(team_a_key, team_patterns, 4, 0);
    redact_stats stats = {0};

    assert_int_equal(redact_kind_count(r), REDACT_BUILTIN_COUNT + 4);
    assert_string_equal(redact_kind_name(r, REDACT_EMAIL), "EMAIL");
    assert_string_equal(redact_kind_name(r, REDACT_BUILTIN_COUNT + 1), "EMPLOYEE");
    assert_null(redact_kind_name(r, REDACT_BUILTIN_COUNT + 4));

    char *out = red(r,
                    "ORD-123456 for E12345 (ZOË, zoë) by ana@corp.example, cc bo@x.com, "
                    "E123456 ORD-12345 ORD-654321",
                    &stats);
    char *m = mask(out);
    assert_string_equal(m, "<ORDER> for <EMPLOYEE> (<NAME>, <NAME>) by <CORP_MAIL>, cc <EMAIL>, "
                           "E123456 ORD-12345 <ORDER>");
    assert_int_equal(stats.count[REDACT_BUILTIN_COUNT + 0], 2);
    assert_int_equal(stats.count[REDACT_BUILTIN_COUNT + 1], 1);
    assert_int_equal(stats.count[REDACT_BUILTIN_COUNT + 2], 2);
    assert_int_equal(stats.count[REDACT_BUILTIN_COUNT + 3], 1);
    assert_int_equal(stats.count[REDACT_EMAIL], 1);
    assert_int_equal(stats.total, 7);

    char want[64], got[64];
    expected_token(team_a_key, "ORDER", "ORD-123456", want, sizeof want);
    first_token(out, got, sizeof got);
    assert_string_equal(got, want);
    free(m);
    free(out);

    /* a team pattern inside a built-in match wins over it; text after it is scanned again */
    static const redact_pattern inner[] = {{"555", "FIVES"}};
    redactor *r2 = make(team_a_key, inner, 1, 0);
    out = red(r2, "415-555-0134 then 212-555-0187", NULL);
    m = mask(out);
    assert_string_equal(m, "415-<FIVES>-0134 then 212-<FIVES>-0187");
    free(m);
    free(out);
    redact_free(r2);
    redact_free(r);
}

struct bad_config {
    const char *regex;
    const char *label;
    const char *message_part;
};

static const struct bad_config bad_configs[] = {
    {"(", "ORDER", "ORDER"},
    {"x", "order", "label"},
    {"x", "EMAIL", "already in use"},
    {"x", "1ABC", "label"},
    {"x", "", "label"},
    {"x", "A_VERY_LONG_LABEL_OVER_24_CHARS", "label"},
    {"a*", "EMPTY", "empty string"},
    {"", "EMPTY", "regex"},
};

static void test_custom_pattern_errors(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof bad_configs / sizeof bad_configs[0]; k++) {
        redact_pattern p = {bad_configs[k].regex, bad_configs[k].label};
        redact_config cfg = {
            .key = team_a_key, .key_len = strlen(team_a_key), .patterns = &p, .n_patterns = 1};
        redactor *r = (redactor *)&cfg; /* must be reset to NULL */
        assert_int_equal(redact_new(&cfg, &r), EB_ERR_INVALID);
        assert_null(r);
        if (!strstr(eb_error_message(), bad_configs[k].message_part))
            print_error("case %zu: message %s\n", k, eb_error_message());
        assert_non_null(strstr(eb_error_message(), bad_configs[k].message_part));
    }
    /* two patterns with one label */
    redact_pattern two[] = {{"a", "DUP"}, {"b", "DUP"}};
    redact_config cfg = {
        .key = team_a_key, .key_len = strlen(team_a_key), .patterns = two, .n_patterns = 2};
    redactor *r = NULL;
    assert_int_equal(redact_new(&cfg, &r), EB_ERR_INVALID);
    /* a short key, no key, too many patterns */
    cfg = (redact_config){.key = "short", .key_len = 5};
    assert_int_equal(redact_new(&cfg, &r), EB_ERR_INVALID);
    cfg = (redact_config){.key = NULL, .key_len = 32};
    assert_int_equal(redact_new(&cfg, &r), EB_ERR_INVALID);
    cfg = (redact_config){.key = team_a_key,
                          .key_len = strlen(team_a_key),
                          .patterns = two,
                          .n_patterns = REDACT_MAX_PATTERNS + 1};
    assert_int_equal(redact_new(&cfg, &r), EB_ERR_INVALID);
    assert_null(r);
}

static void test_custom_pattern_match_limit(void **state)
{
    (void)state;
    static const redact_pattern evil[] = {{"(a+)+$", "EVIL"}};
    redactor *r = make(team_a_key, evil, 1, 0);
    eb_buf out = {0};
    redact_stats stats = {0};
    char in[64];

    memset(in, 'a', 40);
    memcpy(in + 40, "b ana@x.com", 12);
    eb_buf_puts(&out, "kept");
    assert_int_equal(redact_text(r, in, strlen(in), &out, &stats), EB_ERR_INVALID);
    assert_string_equal(out.data, "kept"); /* nothing half-redacted is left behind */
    assert_int_equal(out.len, 4);
    assert_int_equal(stats.total, 0);
    assert_non_null(strstr(eb_error_message(), "EVIL"));
    /* the redactor stays usable */
    eb_buf_reset(&out);
    assert_int_equal(redact_text(r, "xaaa", 4, &out, NULL), EB_OK);
    assert_non_null(strstr(out.data, "<EVIL_"));
    eb_buf_free(&out);
    redact_free(r);
}

/* ---------------------------------------------------------------- counts, switches, bounds */

static void test_counts(void **state)
{
    (void)state;
    static const char text[] =
        "ana@x.com and bo@y.org called +44 20 7946 0958 from 10.0.0.1 and 2001:db8::7, "
        "paid 4111 1111 1111 1111, ssn 123-45-6789, key AKIAIOSFODNN7EXAMPLE, "
        "postgres://u:pw@h/db";
    redactor *r = make(team_a_key, NULL, 0, 0);
    redact_stats stats = {0};
    char *out = red(r, text, &stats);

    assert_int_equal(stats.count[REDACT_EMAIL], 2);
    assert_int_equal(stats.count[REDACT_PHONE], 1);
    assert_int_equal(stats.count[REDACT_IP], 2);
    assert_int_equal(stats.count[REDACT_CARD], 1);
    assert_int_equal(stats.count[REDACT_SSN], 1);
    assert_int_equal(stats.count[REDACT_SECRET], 2);
    assert_int_equal(stats.count[REDACT_DBNAME], 1);
    assert_int_equal(stats.total, 10);
    free(out);
    /* counts add up over calls */
    out = red(r, text, &stats);
    assert_int_equal(stats.total, 20);
    assert_int_equal(stats.count[REDACT_EMAIL], 4);
    free(out);
    /* NULL stats and empty input */
    out = red(r, "", NULL);
    assert_string_equal(out, "");
    free(out);
    redact_free(r);
}

static void test_kinds_off(void **state)
{
    (void)state;
    redactor *r = make(team_a_key, NULL, 0, 1u << REDACT_EMAIL | 1u << REDACT_IP);
    char *out = red(r, "ana@x.com 10.0.0.1 415-555-0134", NULL);
    char *m = mask(out);
    assert_string_equal(m, "ana@x.com 10.0.0.1 <PHONE>");
    free(m);
    free(out);
    redact_free(r);
}

static void test_output_bound(void **state)
{
    (void)state;
    static const redact_pattern one[] = {{"[0-9]", "A_LONG_LABEL_FOR_DIGITS"}};
    redactor *r = make(team_a_key, one, 1, 0);
    char *out = red(r, "0123456789", NULL);
    assert_int_equal(strlen(out), 10 * strlen("<A_LONG_LABEL_FOR_DIGITS_01234567>"));
    assert_true(strlen(out) <= redact_output_bound(r, 10));
    assert_int_equal(redact_output_bound(r, 0), 0);
    free(out);
    redact_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_true_positives),
        cmocka_unit_test(test_lookalikes),
        cmocka_unit_test(test_luhn),
        cmocka_unit_test(test_token_value),
        cmocka_unit_test(test_token_stability),
        cmocka_unit_test(test_utf8_neighbours),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_json_invalid_utf8),
        cmocka_unit_test(test_escaped_text_stays_json),
        cmocka_unit_test(test_custom_patterns),
        cmocka_unit_test(test_custom_pattern_errors),
        cmocka_unit_test(test_custom_pattern_match_limit),
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_kinds_off),
        cmocka_unit_test(test_output_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
