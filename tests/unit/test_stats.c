/* test_stats.c -- unit tests for services/export/stats.c.
 * Percentiles against known distributions (uniform, two-valued, geometric) within the stated
 * error; exact counts, tokens, cost and the start_time range; capped maps and "(other)"; the
 * distinct-table estimate past the name cap; merge == one pass; skip reasons and redactions;
 * and the small analysis helpers (code points, RFC 3339, text of input / output values). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "redact.h"
#include "stats.h"

#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double num(const cJSON *j, const char *path)
{
    char *copy = eb_strdup(path), *save = NULL;
    for (char *seg = strtok_r(copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save))
        j = cJSON_GetObjectItemCaseSensitive(j, seg);
    free(copy);
    if (!cJSON_IsNumber(j))
        fail_msg("%s is not a number", path);
    return j->valuedouble;
}

static const char *str(const cJSON *j, const char *path)
{
    char *copy = eb_strdup(path), *save = NULL;
    for (char *seg = strtok_r(copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save))
        j = cJSON_GetObjectItemCaseSensitive(j, seg);
    free(copy);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* A record whose input is a string of len 'a's (output: len/2 'b's). */
static cJSON *record_len(size_t len, char *scratch)
{
    cJSON *r = cJSON_CreateObject();
    memset(scratch, 'a', len);
    scratch[len] = '\0';
    cJSON_AddStringToObject(r, "input", scratch);
    scratch[len / 2] = '\0';
    memset(scratch, 'b', len / 2);
    cJSON_AddStringToObject(r, "output", scratch);
    return r;
}

static void assert_within(double got, double want, double rel)
{
    if (fabs(got - want) > rel * want + 0.5)
        fail_msg("got %.1f want %.1f (+-%.1f%%)", got, want, rel * 100);
}

static void test_percentiles(void **state)
{
    (void)state;
    char *scratch = eb_malloc(200001);
    static const struct {
        const char *name;
        size_t n;
    } dists[] = {{"uniform", 10000}, {"two-valued", 1000}, {"geometric", 2000}};

    for (size_t d = 0; d < 3; d++) {
        export_stats *s = export_stats_new();
        double *vals = eb_calloc(dists[d].n, sizeof *vals), sum = 0;
        for (size_t i = 0; i < dists[d].n; i++) {
            size_t len = d == 0   ? i + 1                                 /* 1..10000 */
                         : d == 1 ? (i % 10 == 9 ? 100000 : 10)           /* 90% 10, 10% 100000 */
                                  : (size_t)(10 * pow(1.004, (double)i)); /* 10..~29000 */
            cJSON *r = record_len(len, scratch);
            export_stats_add(s, r);
            cJSON_Delete(r);
            vals[i] = (double)len;
            sum += (double)len;
        }
        /* exact nearest-rank percentiles of the sorted values (generated in order) */
        size_t n = dists[d].n;
        double p50 = vals[(size_t)ceil(0.50 * (double)n) - 1];
        double p95 = vals[(size_t)ceil(0.95 * (double)n) - 1];
        if (d == 1) {
            p50 = 10;
            p95 = 100000;
        }
        cJSON *j = export_stats_json(s);
        printf("%s: p50 %.0f (exact %.0f) p95 %.0f (exact %.0f)\n", dists[d].name,
               num(j, "lengths/prompt/p50"), p50, num(j, "lengths/prompt/p95"), p95);
        assert_within(num(j, "lengths/prompt/p50"), p50, 0.01);
        assert_within(num(j, "lengths/prompt/p95"), p95, 0.01);
        assert_within(num(j, "lengths/prompt/mean"), sum / (double)n, 0.0001);
        assert_int_equal((size_t)num(j, "lengths/prompt/count"), n);
        assert_within(num(j, "lengths/response/p50"), p50 / 2, 0.01);
        assert_int_equal((size_t)num(j, "lengths/question/count"), 0);
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(
            cJSON_GetObjectItem(cJSON_GetObjectItem(j, "lengths"), "question"), "p50")));
        assert_string_equal(str(j, "lengths/unit"), "code_points");
        cJSON_Delete(j);
        free(vals);
        export_stats_free(s);
    }
    free(scratch);
}

static void test_counts(void **state)
{
    (void)state;
    static const char *const records[] = {
        "{\"id\":\"1\",\"project\":\"p\",\"model\":\"gpt-4o\",\"provider\":\"openai\",\"status\":"
        "\"ok\",\"review_state\":\"accepted\",\"start_time\":\"2026-11-22T10:00:00.500Z\","
        "\"usage\":{\"input_tokens\":100,\"output_tokens\":20,\"total_tokens\":120},"
        "\"cost_usd\":0.1,\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"ab\"},{\"type\":\"image_"
        "url\","
        "\"image_url\":{\"url\":\"https://x\"}}]}]},\"output\":\"\\ud83d\\ude00!\"}",
        "{\"id\":\"2\",\"project\":\"p\",\"model\":\"gpt-4o\",\"provider\":\"openai\",\"status\":"
        "\"error\",\"review_state\":\"rejected\",\"start_time\":\"2026-11-22T10:00:00Z\","
        "\"usage\":{\"input_tokens\":5,\"output_tokens\":1,\"total_tokens\":null},\"cost_usd\":0."
        "2}",
        "{\"id\":\"3\",\"project\":null,\"model\":\"claude\",\"provider\":\"anthropic\",\"status\":"
        "\"unset\",\"start_time\":\"2026-11-23T00:00:00.000000001Z\",\"usage\":null,"
        "\"cost_usd\":null,\"metadata\":{\"sql\":\"SELECT * FROM "
        "t\",\"database_type\":\"duckdb\"}}",
    };
    export_stats *s = export_stats_new();
    for (size_t i = 0; i < 3; i++) {
        cJSON *r = cJSON_Parse(records[i]);
        assert_non_null(r);
        export_stats_add(s, r);
        cJSON_Delete(r);
    }
    export_stats_skip(s, "no_sql");
    export_stats_skip(s, "no_sql");
    export_stats_skip(s, "status_error");
    cJSON *j = export_stats_json(s);
    assert_int_equal(num(j, "records"), 3);
    assert_int_equal(num(j, "skipped"), 3);
    assert_int_equal(num(j, "skipped_by_reason/no_sql"), 2);
    assert_int_equal(num(j, "successful"), 2);
    assert_int_equal(num(j, "failed"), 1);
    assert_int_equal(num(j, "by_status/unset"), 1);
    assert_int_equal(num(j, "by_model/gpt-4o"), 2);
    assert_int_equal(num(j, "by_project/(none)"), 1);
    assert_int_equal(num(j, "by_review_state/(none)"), 1);
    /* maps are ordered by count */
    assert_string_equal(cJSON_GetObjectItem(j, "by_model")->child->string, "gpt-4o");
    assert_int_equal(num(j, "tokens/input"), 105);
    assert_int_equal(num(j, "tokens/output"), 21);
    assert_int_equal(num(j, "tokens/total"), 126); /* 120 + (5 + 1) */
    assert_true(fabs(num(j, "cost_usd") - 0.3) < 1e-12);
    /* 10:00:00Z is earlier than 10:00:00.500Z (not a string comparison) */
    assert_string_equal(str(j, "start_time/min"), "2026-11-22T10:00:00Z");
    assert_string_equal(str(j, "start_time/max"), "2026-11-23T00:00:00.000000001Z");
    /* prompt: "héllo" + "ab" = 7 code points (the image has no text); response: 2 */
    assert_int_equal(num(j, "lengths/prompt/count"), 1);
    assert_int_equal(num(j, "lengths/prompt/max"), 7);
    assert_int_equal(num(j, "lengths/response/max"), 2);
    assert_int_equal(num(j, "sql/records"), 1);
    assert_int_equal(num(j, "sql/by_query_type/SELECT"), 1);
    assert_int_equal(num(j, "sql/by_query_type/DELETE"), 0);
    assert_int_equal(num(j, "sql/by_database_type/duckdb"), 1);
    assert_int_equal(num(j, "sql/tables/distinct"), 1);
    assert_int_equal(num(j, "lengths/sql/max"), 15);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "sql"), "tables"), "estimated")));
    assert_int_equal(num(j, "redactions/total"), 0);
    cJSON_Delete(j);

    /* empty statistics */
    export_stats *e = export_stats_new();
    j = export_stats_json(e);
    assert_int_equal(num(j, "records"), 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "start_time"), "min")));
    cJSON_Delete(j);
    export_stats_free(e);
    export_stats_free(s);
    export_stats_free(NULL);

    /* a cost too large to round to 1e-9 (ingest takes any finite amount) is still a number */
    e = export_stats_new();
    cJSON *big = cJSON_Parse("{\"status\":\"ok\",\"cost_usd\":1e300}");
    export_stats_add(e, big);
    export_stats_add(e, big);
    cJSON_Delete(big);
    j = export_stats_json(e);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(j, "cost_usd")));
    assert_true(num(j, "cost_usd") == 2e300);
    cJSON_Delete(j);
    export_stats_free(e);
}

static void test_caps(void **state)
{
    (void)state;
    export_stats *s = export_stats_new();
    cJSON *r = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(r, "metadata");
    cJSON *model = cJSON_AddStringToObject(r, "model", "m"), *sql;
    char text[64];
    int other = 0;

    sql = cJSON_AddStringToObject(meta, "sql", "SELECT 1");
    for (int i = 0; i < 20000; i++) {
        other += i % 1500 >= 1000;
        snprintf(text, sizeof text, "model-%d", i % 1500);
        cJSON_SetValuestring(model, text);
        snprintf(text, sizeof text, "SELECT * FROM table_%05d", i % 5000);
        cJSON_SetValuestring(sql, text);
        export_stats_add(s, r);
    }
    cJSON *j = export_stats_json(s);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "by_model")), 1001);
    /* the first 1000 models seen are kept, the 500 others summed */
    assert_int_equal(num(j, "by_model/(other)"), other);
    const cJSON *tables = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "sql"), "tables");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(tables, "estimated")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(tables, "names")), 1000);
    printf("distinct tables: estimated %.0f (exact 5000)\n", num(tables, "distinct"));
    assert_within(num(tables, "distinct"), 5000, 0.05);
    /* names are sorted */
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(tables, "names"), 0)->valuestring,
                        "table_00000");
    cJSON_Delete(j);
    cJSON_Delete(r);
    export_stats_free(s);
}

static void test_merge(void **state)
{
    (void)state;
    export_stats *all = export_stats_new(), *a = export_stats_new(), *b = export_stats_new();
    char *scratch = eb_malloc(5001);

    for (int i = 0; i < 3000; i++) {
        cJSON *r = record_len((size_t)(i * 7 % 5000), scratch);
        char text[64];
        snprintf(text, sizeof text, "m%d", i % 13);
        cJSON_AddStringToObject(r, "model", text);
        snprintf(text, sizeof text, "2026-%02d-01T00:00:00Z", i % 12 + 1);
        cJSON_AddStringToObject(r, "start_time", text);
        cJSON_AddNumberToObject(r, "cost_usd", 0.001 * i);
        cJSON_AddItemToObject(r, "metadata", cJSON_Parse("{\"sql\":\"UPDATE x SET a = 1\"}"));
        export_stats_add(all, r);
        export_stats_add(i % 3 ? a : b, r);
        if (i % 100 == 0) {
            export_stats_skip(all, "x");
            export_stats_skip(i % 3 ? a : b, "x");
        }
        cJSON_Delete(r);
    }
    export_stats_merge(a, b);
    cJSON *ja = export_stats_json(a), *jall = export_stats_json(all);
    /* cost sums may differ in the last bits; compare it apart */
    assert_true(fabs(num(ja, "cost_usd") - num(jall, "cost_usd")) < 1e-9);
    cJSON_DeleteItemFromObject(ja, "cost_usd");
    cJSON_DeleteItemFromObject(jall, "cost_usd");
    if (!cJSON_Compare(ja, jall, true)) {
        char *x = cJSON_PrintUnformatted(ja), *y = cJSON_PrintUnformatted(jall);
        fail_msg("merged %s\none pass %s", x, y);
    }
    cJSON_Delete(ja);
    cJSON_Delete(jall);
    export_stats_free(all);
    export_stats_free(a);
    export_stats_free(b);
    free(scratch);
}

static void test_redactions(void **state)
{
    (void)state;
    static const char key[] = "team-a-secret-key-0123456789abcdef";
    static const redact_pattern pats[] = {{"ORD-[0-9]{4}", "ORDER"}};
    redact_config cfg = {.key = key, .key_len = strlen(key), .patterns = pats, .n_patterns = 1};
    redactor *r = NULL;
    redact_stats rs = {0};
    eb_buf out = {0};
    static const char text[] = "ana@x.com bo@y.org ORD-1234 10.0.0.1";

    assert_int_equal(redact_new(&cfg, &r), EB_OK);
    assert_int_equal(redact_text(r, text, strlen(text), &out, &rs), EB_OK);
    export_stats *s = export_stats_new();
    export_stats_add_redactions(s, &rs, r);
    export_stats_add_redactions(s, &rs, r);
    cJSON *j = export_stats_json(s);
    assert_int_equal(num(j, "redactions/total"), 8);
    assert_int_equal(num(j, "redactions/by_kind/EMAIL"), 4);
    assert_int_equal(num(j, "redactions/by_kind/ORDER"), 2);
    assert_int_equal(num(j, "redactions/by_kind/IP"), 2);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "redactions"), "by_kind")->child->string,
        "EMAIL");
    cJSON_Delete(j);
    export_stats_free(s);
    eb_buf_free(&out);
    redact_free(r);
}

static void test_helpers(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool ok;
        int64_t ns;
    } times[] = {
        {"1970-01-01T00:00:01Z", true, 1000000000},
        {"2026-11-22T10:00:00Z", true, 1795341600000000000},
        {"2026-11-22T10:00:00.5Z", true, 1795341600500000000},
        {"2026-11-22T11:00:00+01:00", true, 1795341600000000000},
        {"2026-11-22T05:30:00.123456789-04:30", true, 1795341600123456789},
        {"2024-02-29T00:00:00z", true, 1709164800000000000},
        {"2026-02-29T00:00:00Z", false, 0},
        {"2026-11-22 10:00:00Z", false, 0},
        {"2026-11-22T10:00:00", false, 0},
        {"2026-11-22T10:00:00.Z", false, 0},
        {"2026-11-22T10:00:00Zx", false, 0},
        {"1969-12-31T23:59:59Z", false, 0},
        {"", false, 0},
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        int64_t ns = -1;
        bool ok = export_time_ns(times[i].text, &ns);
        if (ok != times[i].ok || (ok && ns != times[i].ns))
            fail_msg("%s: ok %d ns %lld", times[i].text, ok, (long long)ns);
    }
    assert_false(export_time_ns(NULL, &(int64_t){0}));

    assert_int_equal(export_utf8_length("h\xc3\xa9llo \xf0\x9f\x98\x80", 11), 7);
    assert_int_equal(export_utf8_length("", 0), 0);

    static const struct {
        const char *io;
        bool has;
        uint64_t len;
    } ios[] = {
        {"null", false, 0},
        {"\"abc\"", true, 3},
        {"{\"text\":\"abcd\"}", true, 4},
        {"{\"messages\":[],\"text\":\"ab\"}", true, 2},
        {"{\"messages\":[]}", false, 0},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"ab\"},{\"role\":\"assistant\","
         "\"content\":null,\"tool_calls\":[]},{\"role\":\"user\",\"content\":[\"c\",{\"type\":"
         "\"text\",\"text\":\"d\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"xyz\"}}]}],"
         "\"text\":\"ignored\"}",
         true, 4},
        {"[{\"role\":\"user\",\"content\":\"abc\"}]", true, 3},
        {"42", false, 0},
    };
    for (size_t i = 0; i < sizeof ios / sizeof ios[0]; i++) {
        cJSON *v = cJSON_Parse(ios[i].io);
        uint64_t len = 99;
        assert_non_null(v);
        assert_int_equal(export_io_text_length(v, &len), ios[i].has);
        assert_int_equal(len, ios[i].len);
        cJSON_Delete(v);
    }
    assert_string_equal(export_query_type_name(EXPORT_QUERY_DELETE), "DELETE");
    assert_string_equal(export_query_type_name(EXPORT_QUERY_TYPE_COUNT), "OTHER");

    /* export_sql_find: metadata first, then tools; info reused */
    export_sql_info info = {0};
    cJSON *rec = cJSON_Parse("{\"metadata\":{\"sql\":{\"query\":\"SELECT 1\",\"error\":\"boom\","
                             "\"database\":\"db1\"},\"question\":\"q?\"}}");
    assert_true(export_sql_find(rec, &info));
    assert_string_equal(info.sql, "SELECT 1");
    assert_string_equal(info.question, "q?");
    assert_string_equal(info.database, "db1");
    assert_true(info.failed);
    cJSON_Delete(rec);
    rec = cJSON_Parse("{\"input\":\"plain\",\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":"
                      "\"sql\",\"arguments\":\"not json\"}},{\"name\":\"execute_sql\","
                      "\"arguments\":\"{\\\"sql\\\":\\\"select 2\\\"}\",\"result\":\"ERROR: "
                      "relation does not exist\"}]}");
    assert_true(export_sql_find(rec, &info));
    assert_string_equal(info.sql, "select 2");
    assert_string_equal(info.question, "plain");
    assert_true(info.failed);
    assert_false(info.has_execution_ms);
    cJSON_Delete(rec);
    rec = cJSON_Parse("{\"metadata\":{\"sql\":\"\"}}");
    assert_false(export_sql_find(rec, &info));
    assert_null(info.sql);
    assert_null(info.question);
    cJSON_Delete(rec);
    export_sql_info_release(&info);
    export_sql_info_release(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentiles), cmocka_unit_test(test_counts),
        cmocka_unit_test(test_caps),        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_redactions),  cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
