/* test_record.c -- unit tests for services/export/record.c: records built from binary COPY rows.
 * A full row (every column kind: text, timestamps before and after 2000, float8, int8, jsonb,
 * json, text[] with a NULL element) gives the documented keys in order with the right values;
 * NULLs give null (and [] for observations / reviews / scores); a one-column row is parsed as
 * JSON text; an infinite timestamp is null; malformed rows (short, wrong column count, a length
 * past the end, bad jsonb version, wrong width of a number, JSON that does not parse) are refused,
 * never read past. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "record.h"

#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* ---- building binary COPY rows ---- */

static void put16(eb_buf *b, uint16_t v)
{
    v = htons(v);
    eb_buf_append(b, &v, 2);
}

static void put32(eb_buf *b, uint32_t v)
{
    v = htonl(v);
    eb_buf_append(b, &v, 4);
}

static void put64(eb_buf *b, uint64_t v)
{
    put32(b, (uint32_t)(v >> 32));
    put32(b, (uint32_t)v);
}

static void f_null(eb_buf *b)
{
    put32(b, 0xffffffffu);
}

static void f_text(eb_buf *b, const char *s)
{
    put32(b, (uint32_t)strlen(s));
    eb_buf_append(b, s, strlen(s));
}

static void f_jsonb(eb_buf *b, const char *s)
{
    put32(b, (uint32_t)strlen(s) + 1);
    eb_buf_putc(b, 1);
    eb_buf_append(b, s, strlen(s));
}

static void f_i64(eb_buf *b, int64_t v)
{
    put32(b, 8);
    put64(b, (uint64_t)v);
}

static void f_f8(eb_buf *b, double d)
{
    uint64_t u;

    memcpy(&u, &d, 8);
    put32(b, 8);
    put64(b, u);
}

/* text[] with one dimension; NULL in elems is a NULL element */
static void f_tags(eb_buf *b, const char *const *elems, int n)
{
    eb_buf a = {0};

    put32(&a, n ? 1 : 0);
    put32(&a, 0);
    put32(&a, 25); /* text */
    if (n) {
        put32(&a, (uint32_t)n);
        put32(&a, 1);
    }
    for (int i = 0; i < n; i++) {
        if (elems[i])
            f_text(&a, elems[i]);
        else
            f_null(&a);
    }
    put32(b, (uint32_t)a.len);
    eb_buf_append(b, a.data, a.len);
    eb_buf_free(&a);
}

/* 2026-11-22T10:00:01.250000Z in PostgreSQL's microseconds since 2000-01-01 */
static const int64_t T_2026 = (1795341601LL - 946684800LL) * 1000000LL + 250000;

static void full_row(eb_buf *b)
{
    static const char *const tags[] = {"prod", NULL, "a b"};

    put16(b, EXPORT_RECORD_NCOLS);
    f_text(b, "t-1");
    f_text(b, "support");
    f_text(b, "answer");
    f_text(b, "gpt-4o");
    f_text(b, "openai");
    f_text(b, "error");
    f_text(b, "it \"broke\"");
    f_i64(b, T_2026);
    f_i64(b, -1); /* 1999-12-31T23:59:59.999999Z */
    f_f8(b, 1234.5);
    f_i64(b, 120);
    f_i64(b, -3);
    f_null(b);
    f_f8(b, 0.0012);
    f_jsonb(b, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi \\u00e9\"}]}");
    f_jsonb(b, "\"plain\"");
    f_null(b);
    f_jsonb(b, "{\"k\": [1, 2.5, null]}");
    f_tags(b, tags, 3);
    f_text(b, "s-1");
    f_null(b);
    f_text(b, "prod");
    f_text(b, "1.2.3");
    f_text(b, "accepted");
    f_text(b, "otlp");
    f_null(b);
    f_text(b, "[{\"id\": \"o1\"}]"); /* json: text as it is */
    f_null(b);
    f_text(b, "[{\"name\": \"q\", \"value\": 1}]");
}

static cJSON *build(const eb_buf *b, eb_status *st)
{
    eb_buf scratch = {0};
    cJSON *rec = NULL;

    *st = export_record_from_row(b->data, b->len, &scratch, &rec);
    eb_buf_free(&scratch);
    return rec;
}

static void test_full_row(void **state)
{
    (void)state;
    eb_buf b = {0};
    eb_status st;
    cJSON *rec;
    char *text;
    static const char *const keys[] = {
        "id",       "project",        "name",       "model",      "provider",
        "status",   "status_message", "start_time", "end_time",   "latency_ms",
        "usage",    "cost_usd",       "input",      "output",     "tool_calls",
        "metadata", "tags",           "session_id", "user_id",    "environment",
        "release",  "review_state",   "source",     "attributes", "observations",
        "reviews",  "scores",
    };
    const cJSON *it;
    size_t k = 0;

    full_row(&b);
    rec = build(&b, &st);
    assert_int_equal(st, EB_OK);
    assert_non_null(rec);
    cJSON_ArrayForEach(it, rec)
    {
        assert_true(k < sizeof(keys) / sizeof(keys[0]));
        assert_string_equal(it->string, keys[k]);
        k++;
    }
    assert_int_equal(k, sizeof(keys) / sizeof(keys[0]));
    text = cJSON_PrintUnformatted(rec);
    assert_string_equal(
        text,
        "{\"id\":\"t-1\",\"project\":\"support\",\"name\":\"answer\",\"model\":\"gpt-4o\","
        "\"provider\":\"openai\",\"status\":\"error\",\"status_message\":\"it \\\"broke\\\"\","
        "\"start_time\":\"2026-11-22T10:00:01.250000Z\","
        "\"end_time\":\"1999-12-31T23:59:59.999999Z\",\"latency_ms\":1234.5,"
        "\"usage\":{\"input_tokens\":120,\"output_tokens\":-3,\"total_tokens\":null},"
        "\"cost_usd\":0.0012,\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"hi "
        "\xc3\xa9\"}]},\"output\":\"plain\",\"tool_calls\":null,"
        "\"metadata\":{\"k\":[1,2.5,null]},\"tags\":[\"prod\",null,\"a b\"],"
        "\"session_id\":\"s-1\",\"user_id\":null,\"environment\":\"prod\",\"release\":"
        "\"1.2.3\",\"review_state\":\"accepted\",\"source\":\"otlp\",\"attributes\":null,"
        "\"observations\":[{\"id\":\"o1\"}],\"reviews\":[],\"scores\":[{\"name\":\"q\","
        "\"value\":1}]}");
    free(text);
    cJSON_Delete(rec);
    eb_buf_free(&b);
}

static void test_one_column(void **state)
{
    (void)state;
    eb_buf b = {0};
    eb_status st;
    cJSON *rec;

    put16(&b, 1);
    f_text(&b, "{\"preferred\": {\"id\": \"a\"}, \"non_preferred\": {\"id\": \"r\"}}");
    rec = build(&b, &st);
    assert_int_equal(st, EB_OK);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rec, "preferred"), "id")
            ->valuestring,
        "a");
    cJSON_Delete(rec);
    b.len = 0;
    put16(&b, 1);
    f_text(&b, "{not json");
    assert_null(build(&b, &st));
    assert_int_equal(st, EB_ERR_INTERNAL);
    b.len = 0;
    put16(&b, 1);
    put32(&b, 100); /* longer than the row */
    eb_buf_append(&b, "{}", 2);
    assert_null(build(&b, &st));
    assert_int_equal(st, EB_ERR_INTERNAL);
    eb_buf_free(&b);
}

/* Replaces column col of a full row by the bytes that fn writes. */
static void row_with(eb_buf *b, int col, void (*fn)(eb_buf *))
{
    eb_buf full = {0};
    const unsigned char *p;
    size_t off = 2;

    full_row(&full);
    p = (const unsigned char *)full.data;
    b->len = 0;
    eb_buf_append(b, full.data, 2);
    for (int i = 0; i < EXPORT_RECORD_NCOLS; i++) {
        uint32_t l;
        size_t whole;
        memcpy(&l, p + off, 4);
        l = ntohl(l);
        whole = 4 + (l == 0xffffffffu ? 0 : l);
        if (i == col)
            fn(b);
        else
            eb_buf_append(b, full.data + off, whole);
        off += whole;
    }
    eb_buf_free(&full);
}

static void bad_jsonb_version(eb_buf *b)
{
    put32(b, 3);
    eb_buf_append(b, "\x02{}", 3);
}

static void short_number(eb_buf *b)
{
    put32(b, 4);
    put32(b, 7);
}

static void not_json(eb_buf *b)
{
    f_jsonb(b, "{\"a\": ");
}

static void truncated_tags(eb_buf *b)
{
    put32(b, 20);
    put32(b, 1);
    put32(b, 0);
    put32(b, 25);
    put32(b, 5); /* five elements announced, none present */
    put32(b, 1);
}

static void test_malformed(void **state)
{
    (void)state;
    eb_buf b = {0};
    eb_status st;
    struct {
        int col;
        void (*fn)(eb_buf *);
    } cases[] = {
        {14, bad_jsonb_version}, /* input */
        {9, short_number},       /* latency_ms */
        {7, short_number},       /* start_time */
        {17, not_json},          /* metadata */
        {18, truncated_tags},    /* tags */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        row_with(&b, cases[i].col, cases[i].fn);
        assert_null(build(&b, &st));
        assert_int_equal(st, EB_ERR_INTERNAL);
    }
    /* every prefix of a good row is refused (none is read past its end) */
    full_row(&b);
    for (size_t cut = 0; cut < b.len; cut++) {
        char *copy = malloc(cut ? cut : 1);
        eb_buf scratch = {0};
        cJSON *rec = NULL;
        memcpy(copy, b.data, cut);
        st = export_record_from_row(copy, cut, &scratch, &rec);
        assert_int_not_equal(st, EB_OK);
        assert_null(rec);
        free(copy);
        eb_buf_free(&scratch);
    }
    /* a column count that is neither 1 nor the record's */
    b.len = 0;
    put16(&b, 3);
    f_text(&b, "a");
    f_text(&b, "b");
    f_text(&b, "c");
    assert_null(build(&b, &st));
    assert_int_equal(st, EB_ERR_INTERNAL);
    eb_buf_free(&b);
}

static void infinity_time(eb_buf *b)
{
    f_i64(b, INT64_MAX); /* 'infinity' */
}

static void test_infinite_time(void **state)
{
    (void)state;
    eb_buf b = {0};
    eb_status st;
    cJSON *rec;

    row_with(&b, 8, infinity_time);
    rec = build(&b, &st);
    assert_int_equal(st, EB_OK);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rec, "end_time")));
    cJSON_Delete(rec);
    eb_buf_free(&b);
}

/* EXPORT_RECORD_COLUMNS names as many columns as the table in record.c reads. */
static void test_column_list(void **state)
{
    (void)state;
    const char *cols = EXPORT_RECORD_COLUMNS;
    int n = 1;

    for (const char *p = cols; *p; p++)
        n += *p == ',';
    assert_int_equal(n, EXPORT_RECORD_NCOLS);
}

/* text[] structures that cannot be: an element count past the bytes, another element type,
 * bytes after the last element */
static void huge_tags(eb_buf *b)
{
    put32(b, 28);
    put32(b, 2);
    put32(b, 0);
    put32(b, 25);
    put32(b, 0x10000); /* 65536 x 65536 elements */
    put32(b, 1);
    put32(b, 0x10000);
    put32(b, 1);
}

static void int_tags(eb_buf *b)
{
    put32(b, 24);
    put32(b, 1);
    put32(b, 0);
    put32(b, 23); /* int4 */
    put32(b, 1);
    put32(b, 1);
    put32(b, 0xffffffffu);
}

static void extra_tags(eb_buf *b)
{
    put32(b, 25);
    put32(b, 1);
    put32(b, 0);
    put32(b, 25);
    put32(b, 1);
    put32(b, 1);
    put32(b, 0xffffffffu);
    eb_buf_putc(b, 'x');
}

static void test_bad_arrays(void **state)
{
    (void)state;
    void (*cases[])(eb_buf *) = {huge_tags, int_tags, extra_tags};
    eb_buf b = {0};
    eb_status st;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        row_with(&b, 18, cases[i]);
        assert_null(build(&b, &st));
        assert_int_equal(st, EB_ERR_INTERNAL);
    }
    /* a whole row with a byte after its last column */
    full_row(&b);
    eb_buf_putc(&b, 0);
    assert_null(build(&b, &st));
    assert_int_equal(st, EB_ERR_INTERNAL);
    eb_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_row),    cmocka_unit_test(test_one_column),
        cmocka_unit_test(test_malformed),   cmocka_unit_test(test_infinite_time),
        cmocka_unit_test(test_column_list), cmocka_unit_test(test_bad_arrays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
