/* test_format.c -- unit tests for services/export/format.c.
 * Each format against its contract in docs/export-formats.md: every output line parses; field
 * selection; the json document framing with 0, 1 and n records; csv read back by a small
 * RFC 4180 reader (quoting, CRLF, formula neutralization, include / exclude); the OpenAI chat and
 * preference rules and Bedrock alternation checked by validators written from the formats'
 * rules, over tables of conversations, with the skip reasons counted; sql-pairs extraction; and
 * redaction (tokens in, e-mail out, still JSON). Last, throughput on 100k synthetic ~2 KB
 * records (printed; asserted only against a floor that catches a pathology). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "format.h"
#include "redact.h"
#include "stats.h"

#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- helpers */

static const char base_trace[] =
    "{\"id\":\"t-1\",\"project\":\"support-bot\",\"name\":\"answer\",\"model\":\"gpt-4o\","
    "\"provider\":\"openai\",\"status\":\"ok\",\"status_message\":null,"
    "\"start_time\":\"2026-11-22T10:00:00Z\",\"end_time\":\"2026-11-22T10:00:01.200Z\","
    "\"latency_ms\":1200,\"usage\":{\"input_tokens\":120,\"output_tokens\":40,"
    "\"total_tokens\":160},\"cost_usd\":0.0012,"
    "\"input\":{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"What is 2+2?\"}]},"
    "\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"4\"}]},"
    "\"tool_calls\":null,\"metadata\":{\"customer_tier\":\"gold\"},\"tags\":[\"prod\",\"beta\"],"
    "\"session_id\":\"s-9\",\"user_id\":null,\"environment\":\"prod\",\"release\":\"1.2.3\","
    "\"review_state\":\"accepted\",\"source\":null,\"attributes\":null,"
    "\"observations\":[{\"id\":\"o1\",\"parent_id\":null,\"type\":\"generation\","
    "\"name\":\"llm\",\"model\":\"gpt-4o\",\"status\":\"ok\"}],\"reviews\":[],\"scores\":[]}";

static cJSON *parse(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    if (!j)
        fail_msg("test JSON does not parse: %s", text);
    return j;
}

/* The base trace with the members of overrides (a JSON object text, may be NULL) replaced. */
static cJSON *trace(const char *overrides)
{
    cJSON *t = parse(base_trace), *o, *m;
    if (!overrides)
        return t;
    o = parse(overrides);
    cJSON_ArrayForEach(m, o)
    {
        cJSON *copy = cJSON_Duplicate(m, true);
        if (cJSON_GetObjectItemCaseSensitive(t, m->string))
            cJSON_ReplaceItemInObjectCaseSensitive(t, m->string, copy);
        else
            cJSON_AddItemToObject(t, m->string, copy);
    }
    cJSON_Delete(o);
    return t;
}

static export_writer *writer(export_format f, const char *const *inc, size_t ni,
                             const char *const *exc, size_t ne, redactor *r)
{
    export_options opt = {.format = f,
                          .include = inc,
                          .n_include = ni,
                          .exclude = exc,
                          .n_exclude = ne,
                          .redact = r,
                          .exported_at = "2026-11-23T08:00:00Z"};
    export_writer *w = NULL;
    eb_status st = export_writer_new(&opt, &w);
    if (st != EB_OK)
        fail_msg("export_writer_new: %s", eb_error_message());
    return w;
}

/* Writes one record (freed here) with w; returns the bytes appended (caller frees). */
static char *one(export_writer *w, cJSON *record, export_stats *stats)
{
    eb_buf out = {0};
    assert_int_equal(export_writer_record(w, record, &out, stats), EB_OK);
    cJSON_Delete(record);
    return out.data ? eb_buf_steal(&out) : eb_strdup("");
}

/* The lines of a JSONL text as a cJSON array; fails unless every line parses and the text ends
 * with "\n". */
static cJSON *jsonl_lines(const char *text)
{
    cJSON *arr = cJSON_CreateArray();
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        char *line;
        cJSON *j;
        assert_non_null(nl);
        line = eb_strndup(p, (size_t)(nl - p));
        j = cJSON_Parse(line);
        if (!j)
            fail_msg("line does not parse: %s", line);
        assert_true(eb_utf8_valid(line, strlen(line)));
        cJSON_AddItemToArray(arr, j);
        free(line);
        p = nl + 1;
    }
    return arr;
}

/* One line of output, parsed (the output must be exactly one line). */
static cJSON *one_line(const char *text)
{
    cJSON *arr = jsonl_lines(text), *j;
    assert_int_equal(cJSON_GetArraySize(arr), 1);
    j = cJSON_DetachItemFromArray(arr, 0);
    cJSON_Delete(arr);
    return j;
}

static void assert_json_equal(const cJSON *got, const char *want_text)
{
    cJSON *want = parse(want_text);
    if (!cJSON_Compare(got, want, true)) {
        char *g = cJSON_PrintUnformatted(got);
        fail_msg("got %s\nwant %s", g, want_text);
    }
    cJSON_Delete(want);
}

static double stat_num(const cJSON *stats, const char *path)
{
    const cJSON *v = stats;
    char *copy = eb_strdup(path), *save = NULL;
    for (char *seg = strtok_r(copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save))
        v = cJSON_GetObjectItemCaseSensitive(v, seg);
    free(copy);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* ---------------------------------------------------------------- names */

static void test_format_names(void **state)
{
    static const struct {
        const char *name;
        export_format f;
        const char *ext, *ctype;
    } cases[] = {
        {"jsonl", EXPORT_JSONL, "jsonl", "application/x-ndjson"},
        {"json", EXPORT_JSON, "json", "application/json"},
        {"csv", EXPORT_CSV, "csv", "text/csv; charset=utf-8"},
        {"openai-chat", EXPORT_OPENAI_CHAT, "jsonl", "application/x-ndjson"},
        {"openai-preference", EXPORT_OPENAI_PREFERENCE, "jsonl", "application/x-ndjson"},
        {"anthropic", EXPORT_ANTHROPIC, "jsonl", "application/x-ndjson"},
        {"sql-pairs", EXPORT_SQL_PAIRS, "jsonl", "application/x-ndjson"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        export_format f = EXPORT_FORMAT_COUNT;
        assert_int_equal(export_format_parse(cases[i].name, &f), EB_OK);
        assert_int_equal(f, cases[i].f);
        assert_string_equal(export_format_name(f), cases[i].name);
        assert_string_equal(export_format_extension(f), cases[i].ext);
        assert_string_equal(export_format_content_type(f), cases[i].ctype);
    }
    static const char *const bad[] = {"JSONL", "", "parquet", "openai", "csv "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        export_format f;
        assert_int_equal(export_format_parse(bad[i], &f), EB_ERR_INVALID);
        assert_non_null(strstr(eb_error_message(), "openai-preference"));
    }
    export_format f;
    assert_int_equal(export_format_parse(NULL, &f), EB_ERR_INVALID);
    assert_string_equal(export_format_name(EXPORT_FORMAT_COUNT), "");
}

/* ---------------------------------------------------------------- jsonl / json */

static void test_jsonl_round_trip(void **state)
{
    (void)state;
    export_writer *w = writer(EXPORT_JSONL, NULL, 0, NULL, 0, NULL);
    export_stats *stats = export_stats_new();
    eb_buf out = {0};
    static const char *const extra[] = {
        NULL,
        "{\"cost_usd\":0.1,\"latency_ms\":9007199254740993,\"metadata\":{\"neg\":-1.5,"
        "\"big\":1e300,\"tiny\":1e-7,\"z\":-0.0,\"t\":true,\"n\":null,\"s\":\"\\u00e9\\n\\\"\"}}",
        "{\"input\":\"plain text \\u2028 with\\ttab\",\"output\":null,\"tags\":[]}",
    };

    assert_int_equal(export_writer_begin(w, &out), EB_OK);
    assert_int_equal(out.len, 0);
    for (size_t i = 0; i < 3; i++) {
        cJSON *t = trace(extra[i]);
        cJSON *copy = cJSON_Duplicate(t, true);
        size_t before = out.len;
        cJSON *line;
        assert_int_equal(export_writer_record(w, t, &out, stats), EB_OK);
        line = one_line(out.data + before);
        assert_true(cJSON_Compare(line, copy, true));
        cJSON_Delete(line);
        cJSON_Delete(copy);
        cJSON_Delete(t);
    }
    assert_int_equal(export_writer_end(w, stats, &out), EB_OK);
    /* the exact text of numbers */
    assert_non_null(strstr(out.data, "\"cost_usd\":0.1,"));
    assert_non_null(strstr(out.data, "\"neg\":-1.5,"));
    assert_non_null(strstr(out.data, "\"big\":1e+300,"));
    assert_non_null(strstr(out.data, "\"tiny\":1e-07,"));
    assert_non_null(strstr(out.data, "\"latency_ms\":1200,"));
    assert_non_null(strstr(out.data, "\"latency_ms\":9007199254740992,")); /* a double */
    assert_int_equal(export_writer_count(w), 3);
    assert_int_equal(export_stats_records(stats), 3);
    eb_buf_free(&out);
    export_stats_free(stats);
    export_writer_free(w);
}

static void test_jsonl_field_selection(void **state)
{
    static const struct {
        const char *include[4], *exclude[4];
        const char *want;
    } cases[] = {
        {{"id", "metadata.customer_tier", "usage.input_tokens"},
         {NULL},
         "{\"id\":\"t-1\",\"metadata\":{\"customer_tier\":\"gold\"},\"usage\":{\"input_tokens\":"
         "120}}"},
        {{"metadata.missing", "user_id"},
         {NULL},
         "{\"metadata\":{\"missing\":null},\"user_id\":null}"},
        {{"attributes.x"}, {NULL}, "{\"attributes\":{\"x\":null}}"},
        {{"observations.model", "observations.id"},
         {NULL},
         "{\"observations\":[{\"model\":\"gpt-4o\",\"id\":\"o1\"}]}"},
        {{"usage"},
         {"usage.total_tokens"},
         "{\"usage\":{\"input_tokens\":120,\"output_tokens\":40}}"},
        {{"usage", "id"}, {"usage"}, "{\"id\":\"t-1\"}"},
        {{"input.messages.role"},
         {NULL},
         "{\"input\":{\"messages\":[{\"role\":\"system\"},{\"role\":\"user\"}]}}"},
        {{NULL},
         {"input", "output", "observations", "metadata.customer_tier"},
         NULL}, /* checked below */
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t ni = 0, ne = 0;
        while (ni < 4 && cases[i].include[ni])
            ni++;
        while (ne < 4 && cases[i].exclude[ne])
            ne++;
        export_writer *w = writer(EXPORT_JSONL, cases[i].include, ni, cases[i].exclude, ne, NULL);
        char *text = one(w, trace(NULL), NULL);
        cJSON *line = one_line(text);
        if (cases[i].want) {
            assert_json_equal(line, cases[i].want);
        } else {
            assert_null(cJSON_GetObjectItem(line, "input"));
            assert_null(cJSON_GetObjectItem(line, "output"));
            assert_null(cJSON_GetObjectItem(line, "observations"));
            assert_json_equal(cJSON_GetObjectItem(line, "metadata"), "{}");
            assert_non_null(cJSON_GetObjectItem(line, "reviews"));
            assert_int_equal(cJSON_GetArraySize(line), 24);
        }
        cJSON_Delete(line);
        free(text);
        export_writer_free(w);
    }
}

static void test_writer_option_errors(void **state)
{
    static const struct {
        export_format f;
        const char *include[3], *exclude[3];
        const char *filter;
        const char *message; /* a part of the error message */
    } cases[] = {
        {EXPORT_JSONL, {"nope"}, {NULL}, NULL, "'nope' is not a field"},
        {EXPORT_JSONL, {"metadata..x"}, {NULL}, NULL, "empty segment"},
        {EXPORT_JSONL, {"metadata."}, {NULL}, NULL, "empty segment"},
        {EXPORT_JSONL, {""}, {NULL}, NULL, "empty"},
        {EXPORT_JSON, {NULL}, {".id"}, NULL, "empty segment"},
        {EXPORT_JSON, {NULL}, {"idx"}, NULL, "'idx' is not a field"},
        {EXPORT_OPENAI_CHAT, {"id"}, {NULL}, NULL, "json, jsonl and csv"},
        {EXPORT_SQL_PAIRS, {NULL}, {"id"}, NULL, "json, jsonl and csv"},
        {EXPORT_CSV, {"id", "id"}, {NULL}, NULL, "'id' is listed twice"},
        {EXPORT_CSV, {"nope"}, {NULL}, NULL, "'nope' is not a field"},
        {EXPORT_CSV, {NULL}, {"input_tokenz"}, NULL, "'input_tokenz' is not a csv column"},
        {EXPORT_CSV, {"id"}, {"id"}, NULL, "no csv column"},
        {EXPORT_JSON, {NULL}, {NULL}, "{\"a\":", "filter_json"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t ni = 0, ne = 0;
        while (ni < 3 && cases[i].include[ni])
            ni++;
        while (ne < 3 && cases[i].exclude[ne])
            ne++;
        export_options opt = {.format = cases[i].f,
                              .include = cases[i].include,
                              .n_include = ni,
                              .exclude = cases[i].exclude,
                              .n_exclude = ne,
                              .filter_json = cases[i].filter};
        export_writer *w = (export_writer *)&opt; /* must be reset to NULL */
        assert_int_equal(export_writer_new(&opt, &w), EB_ERR_INVALID);
        assert_null(w);
        if (!strstr(eb_error_message(), cases[i].message))
            fail_msg("case %zu: message '%s' lacks '%s'", i, eb_error_message(), cases[i].message);
    }
}

static void test_json_document(void **state)
{
    (void)state;
    for (size_t n = 0; n <= 3; n++) {
        export_options opt = {.format = EXPORT_JSON,
                              .exported_at = "2026-11-23T08:00:00Z",
                              .filter_json = n == 1 ? NULL : "{ \"project\" : \"support-bot\" }"};
        export_writer *w = NULL;
        export_stats *stats = export_stats_new();
        eb_buf out = {0};
        cJSON *doc, *records;

        assert_int_equal(export_writer_new(&opt, &w), EB_OK);
        assert_int_equal(export_writer_begin(w, &out), EB_OK);
        for (size_t i = 0; i < n; i++) {
            cJSON *t = trace(NULL);
            cJSON_ReplaceItemInObject(t, "id", cJSON_CreateString(i == 1 ? "t-2" : "t-x"));
            assert_int_equal(export_writer_record(w, t, &out, stats), EB_OK);
            cJSON_Delete(t);
        }
        assert_int_equal(export_writer_end(w, stats, &out), EB_OK);
        doc = parse(out.data);
        assert_int_equal(cJSON_GetObjectItem(doc, "format_version")->valueint, 1);
        assert_string_equal(cJSON_GetObjectItem(doc, "exported_at")->valuestring,
                            "2026-11-23T08:00:00Z");
        if (n == 1)
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(doc, "filter")));
        else
            assert_json_equal(cJSON_GetObjectItem(doc, "filter"), "{\"project\":\"support-bot\"}");
        records = cJSON_GetObjectItem(doc, "records");
        assert_true(cJSON_IsArray(records));
        assert_int_equal(cJSON_GetArraySize(records), n);
        if (n >= 2)
            assert_string_equal(
                cJSON_GetObjectItem(cJSON_GetArrayItem(records, 1), "id")->valuestring, "t-2");
        assert_int_equal((int)stat_num(cJSON_GetObjectItem(doc, "statistics"), "records"), n);
        /* members in the documented order */
        assert_non_null(doc->child);
        assert_string_equal(doc->child->string, "format_version");
        assert_string_equal(cJSON_GetArrayItem(doc, 4)->string, "statistics");
        cJSON_Delete(doc);
        eb_buf_free(&out);
        export_stats_free(stats);
        export_writer_free(w);
    }
    /* no stats: statistics null */
    export_writer *w = writer(EXPORT_JSON, NULL, 0, NULL, 0, NULL);
    eb_buf out = {0};
    cJSON *doc;
    export_writer_begin(w, &out);
    export_writer_end(w, NULL, &out);
    doc = cJSON_Parse(out.data);
    assert_non_null(doc);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(doc, "statistics")));
    cJSON_Delete(doc);
    eb_buf_free(&out);
    export_writer_free(w);
}

/* ---------------------------------------------------------------- csv */

/* A strict RFC 4180 reader: rows (CRLF-terminated, the last one too) of cells, into a cJSON
 * array of arrays of strings. Fails the test on anything malformed. */
static cJSON *csv_read(const char *s)
{
    cJSON *rows = cJSON_CreateArray(), *row = cJSON_CreateArray();
    eb_buf cell = {0};

    while (*s) {
        eb_buf_reset(&cell);
        if (*s == '"') {
            s++;
            for (;;) {
                if (*s == '\0')
                    fail_msg("unterminated quoted cell");
                if (*s == '"' && s[1] == '"') {
                    eb_buf_putc(&cell, '"');
                    s += 2;
                } else if (*s == '"') {
                    s++;
                    break;
                } else {
                    eb_buf_putc(&cell, *s++);
                }
            }
        } else {
            while (*s && *s != ',' && *s != '\r') {
                if (*s == '"' || *s == '\n')
                    fail_msg("bare quote or LF in an unquoted cell");
                eb_buf_putc(&cell, *s++);
            }
        }
        cJSON_AddItemToArray(row, cJSON_CreateString(cell.data ? cell.data : ""));
        if (*s == ',') {
            s++;
        } else if (s[0] == '\r' && s[1] == '\n') {
            s += 2;
            cJSON_AddItemToArray(rows, row);
            row = cJSON_CreateArray();
        } else {
            fail_msg("a cell is not followed by ',' or CRLF: '%.20s'", s);
        }
    }
    assert_int_equal(cJSON_GetArraySize(row), 0); /* ended with CRLF */
    cJSON_Delete(row);
    eb_buf_free(&cell);
    return rows;
}

static const char *cell(const cJSON *rows, int r, int c)
{
    const cJSON *v = cJSON_GetArrayItem(cJSON_GetArrayItem(rows, r), c);
    assert_non_null(v);
    return v->valuestring;
}

static char *csv_export(const char *const *inc, size_t ni, const char *const *exc, size_t ne,
                        cJSON *record)
{
    export_writer *w = writer(EXPORT_CSV, inc, ni, exc, ne, NULL);
    eb_buf out = {0};
    assert_int_equal(export_writer_begin(w, &out), EB_OK);
    assert_int_equal(export_writer_record(w, record, &out, NULL), EB_OK);
    assert_int_equal(export_writer_end(w, NULL, &out), EB_OK);
    cJSON_Delete(record);
    export_writer_free(w);
    return eb_buf_steal(&out);
}

static void test_csv_default(void **state)
{
    (void)state;
    char *text = csv_export(
        NULL, 0, NULL, 0,
        trace("{\"name\":\"a, \\\"quoted\\\"\\r\\nname\",\"tags\":[\"prod\",\"=x\"],"
              "\"input\":{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is this?\"},"
              "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/a.png\"}}]}]},"
              "\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,"
              "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":"
              "\"lookup\",\"arguments\":\"{\\\"q\\\":1}\"}}]}]}}"));
    cJSON *rows = csv_read(text);
    static const char *const header[] = {
        "id",         "project",      "name",       "model",        "provider",      "status",
        "start_time", "end_time",     "latency_ms", "input_tokens", "output_tokens", "total_tokens",
        "cost_usd",   "review_state", "tags",       "input_text",   "output_text",   "metadata"};
    static const char *const row[] = {"t-1",
                                      "support-bot",
                                      "a, \"quoted\"\r\nname",
                                      "gpt-4o",
                                      "openai",
                                      "ok",
                                      "2026-11-22T10:00:00Z",
                                      "2026-11-22T10:00:01.200Z",
                                      "1200",
                                      "120",
                                      "40",
                                      "160",
                                      "0.0012",
                                      "accepted",
                                      "prod;=x",
                                      "system: Be brief.\nuser: What is this?\n[image_url]",
                                      "assistant: [tool_call lookup] {\"q\":1}",
                                      "{\"customer_tier\":\"gold\"}"};

    assert_int_equal(cJSON_GetArraySize(rows), 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetArrayItem(rows, 0)), 18);
    for (int i = 0; i < 18; i++) {
        assert_string_equal(cell(rows, 0, i), header[i]);
        assert_string_equal(cell(rows, 1, i), row[i]);
    }
    /* line ends are CRLF only: every LF in the text is inside quotes or after CR */
    assert_non_null(strstr(text, "metadata\r\n"));
    cJSON_Delete(rows);
    free(text);
}

static void test_csv_neutralization(void **state)
{
    static const struct {
        const char *value_json; /* metadata.v */
        const char *want;       /* the cell, read back */
    } cases[] = {
        {"\"=1+1\"", "'=1+1"},
        {"\"+41 22\"", "'+41 22"},
        {"\"-1\"", "'-1"},
        {"\"@SUM(A1)\"", "'@SUM(A1)"},
        {"\"\\tx\"", "'\tx"},
        {"\"\\rx\"", "'\rx"},
        {"\"=HYPERLINK(\\\"http://x\\\",\\\"a,b\\\")\"", "'=HYPERLINK(\"http://x\",\"a,b\")"},
        {"\"a=b\"", "a=b"},
        {"\" =x\"", " =x"},
        {"-1.5", "-1.5"},
        {"-42", "-42"},
        {"true", "true"},
        {"null", ""},
        {"[\"=x\"]", "[\"=x\"]"},
        {"\"\"", ""},
        {"\"caf\\u00e9\"", "café"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        static const char *const inc[] = {"id", "metadata.v"};
        char over[256];
        snprintf(over, sizeof over, "{\"metadata\":{\"v\":%s}}", cases[i].value_json);
        char *text = csv_export(inc, 2, NULL, 0, trace(over));
        cJSON *rows = csv_read(text);
        assert_string_equal(cell(rows, 0, 1), "metadata.v");
        if (strcmp(cell(rows, 1, 1), cases[i].want))
            fail_msg("case %zu: got '%s' want '%s'", i, cell(rows, 1, 1), cases[i].want);
        cJSON_Delete(rows);
        free(text);
    }
}

static void test_csv_include_exclude(void **state)
{
    (void)state;
    static const char *const inc[] = {
        "output_text", "id", "usage.input_tokens", "metadata", "observations.0.name", "tags"};
    static const char *const exc[] = {"metadata"};
    char *text = csv_export(inc, 6, exc, 1, trace(NULL));
    cJSON *rows = csv_read(text);
    assert_json_equal(rows, "[[\"output_text\",\"id\",\"usage.input_tokens\","
                            "\"observations.0.name\",\"tags\"],"
                            "[\"assistant: 4\",\"t-1\",\"120\",\"llm\",\"prod;beta\"]]");
    cJSON_Delete(rows);
    free(text);

    static const char *const exc2[] = {"input_text", "output_text", "metadata", "tags"};
    text = csv_export(NULL, 0, exc2, 4, trace(NULL));
    rows = csv_read(text);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetArrayItem(rows, 0)), 14);
    assert_string_equal(cell(rows, 0, 13), "review_state");
    cJSON_Delete(rows);
    free(text);

    /* invalid UTF-8 in a string becomes U+FFFD; the row is still UTF-8 */
    cJSON *t = trace(NULL);
    cJSON_ReplaceItemInObject(t, "name", cJSON_CreateString("bad \xff\xfe end"));
    static const char *const inc3[] = {"name"};
    text = csv_export(inc3, 1, NULL, 0, t);
    assert_true(eb_utf8_valid(text, strlen(text)));
    rows = csv_read(text);
    assert_string_equal(cell(rows, 1, 0), "bad \xef\xbf\xbd\xef\xbf\xbd end");
    cJSON_Delete(rows);
    free(text);
}

/* ---------------------------------------------------------------- openai-chat */

static bool str_in(const char *s, const char *const *set)
{
    for (; s && *set; set++)
        if (!strcmp(s, *set))
            return true;
    return false;
}

/* The rules of OpenAI chat fine-tuning data, checked on one output line: known roles and keys;
 * content a string, or null only for an assistant with tool calls; every tool message answers an
 * open call of the assistant before it, once; every call is answered before the next message
 * that is not a tool message (the last message's calls may stay open). */
static void check_openai_conversation(const cJSON *msgs, bool need_assistant)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", NULL};
    static const char *const keys[] = {"role",         "content", "name", "tool_calls",
                                       "tool_call_id", "weight",  NULL};
    const cJSON *m, *k, *tc;
    const char *ids[32];
    size_t n_ids = 0, assistants = 0;

    assert_true(cJSON_IsArray(msgs));
    assert_true(cJSON_GetArraySize(msgs) > 0);
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = cJSON_GetStringValue(cJSON_GetObjectItem(m, "role"));
        const cJSON *content = cJSON_GetObjectItem(m, "content");
        assert_true(str_in(role, roles));
        cJSON_ArrayForEach(k, m)
        {
            assert_true(str_in(k->string, keys));
        }
        assert_true(cJSON_IsString(content) || cJSON_IsNull(content));
        if (strcmp(role, "tool"))
            assert_int_equal(n_ids, 0); /* the calls before were all answered */
        if (!strcmp(role, "assistant")) {
            assistants++;
            if (cJSON_IsNull(content))
                assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(m, "tool_calls")) > 0);
            cJSON_ArrayForEach(tc, cJSON_GetObjectItem(m, "tool_calls"))
            {
                const cJSON *fn = cJSON_GetObjectItem(tc, "function");
                assert_true(cJSON_IsString(cJSON_GetObjectItem(tc, "id")));
                assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(tc, "type")),
                                    "function");
                assert_true(cJSON_IsString(cJSON_GetObjectItem(fn, "name")));
                assert_true(cJSON_IsString(cJSON_GetObjectItem(fn, "arguments")));
                assert_true(n_ids < 32);
                ids[n_ids++] = cJSON_GetObjectItem(tc, "id")->valuestring;
            }
        } else if (!strcmp(role, "tool")) {
            const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(m, "tool_call_id"));
            bool found = false;
            assert_non_null(id);
            for (size_t i = 0; i < n_ids && !found; i++) {
                if ((found = !strcmp(ids[i], id)))
                    ids[i] = ids[--n_ids];
            }
            assert_true(found);
        } else {
            assert_true(cJSON_IsString(content));
            assert_null(cJSON_GetObjectItem(m, "tool_calls"));
        }
    }
    if (need_assistant)
        assert_true(assistants > 0);
}

typedef struct chat_case {
    const char *overrides; /* members of the trace */
    const char *reason;    /* NULL: exported */
    const char *want;      /* the "messages" expected, or NULL to skip the exact check */
} chat_case;

static const chat_case chat_cases[] = {
    {NULL, NULL,
     "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"What is "
     "2+2?\"},{\"role\":\"assistant\",\"content\":\"4\"}]"},
    {"{\"input\":\"hi\",\"output\":\"hello\"}", NULL,
     "[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}]"},
    {"{\"input\":{\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},{\"role\":\"user\","
     "\"content\":[{\"type\":\"text\",\"text\":\"a\"},\"b\",{\"type\":\"input_text\",\"text\":"
     "\"c\"}],\"name\":\"ann\"}]},\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":"
     "[{\"type\":\"output_text\",\"text\":\"x\"}]}],\"text\":\"ignored\"}}",
     NULL,
     "[{\"role\":\"system\",\"content\":\"d\"},{\"role\":\"user\",\"content\":\"a\\nb\\nc\","
     "\"name\":\"ann\"},{\"role\":\"assistant\",\"content\":\"x\"}]"},
    /* history: the input's assistant turn is not trained on */
    {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"q1\"},{\"role\":\"assistant\","
     "\"content\":\"a1\"},{\"role\":\"user\",\"content\":\"q2\"}]}}",
     NULL,
     "[{\"role\":\"user\",\"content\":\"q1\"},{\"role\":\"assistant\",\"content\":\"a1\","
     "\"weight\":0},{\"role\":\"user\",\"content\":\"q2\"},{\"role\":\"assistant\",\"content\":"
     "\"4\"}]"},
    /* a tool round trip in the output */
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
     "\"c1\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":"
     "1}\"},\"result\":\"42\"}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\","
     "\"name\":\"lookup\"},{\"role\":\"assistant\",\"content\":\"It is 42.\"}]}}",
     NULL,
     "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"What is "
     "2+2?\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
     "\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":1}\"}}]},"
     "{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"c1\"},{\"role\":\"assistant\","
     "\"content\":\"It is 42.\"}]"},
    /* the output ends with a call: training the model to call the tool */
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
     "\"c1\",\"function\":{\"name\":\"lookup\"}}]}]}}",
     NULL,
     "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"What is "
     "2+2?\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
     "\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{}\"}}]}]"},
    {"{\"status\":\"error\"}", "status_error", NULL},
    {"{\"input\":null}", "no_input", NULL},
    {"{\"input\":\"\"}", "no_input", NULL},
    {"{\"input\":{\"messages\":[]}}", "no_input", NULL},
    {"{\"output\":null}", "no_assistant_message", NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}", "no_assistant_message",
     NULL},
    {"{\"input\":{\"messages\":[{\"role\":\"function\",\"name\":\"f\",\"content\":\"x\"}]}}",
     "invalid_role", NULL},
    {"{\"input\":{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}}", "invalid_role", NULL},
    {"{\"input\":{\"messages\":[{\"content\":\"x\"}]}}", "invalid_role", NULL},
    {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
     "\"what\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/a.png\"}}]}]}}",
     "image_content", NULL},
    {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\","
     "\"input_audio\":{\"data\":\"AAA\"}}]}]}}",
     "non_text_content", NULL},
    {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":null}]}}", "empty_message", NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null}]}}", "empty_message",
     NULL},
    /* empty text is no text: OpenAI refuses a message whose content is "" */
    {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}}", "empty_message", NULL},
    /* ... but an empty system message says nothing: it is left out */
    {"{\"input\":{\"messages\":[{\"role\":\"system\",\"content\":\"\"},{\"role\":\"user\","
     "\"content\":\"q\"}]}}",
     NULL, "[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"4\"}]"},
    {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
     "\"\"},\"\"]}]}}",
     "empty_message", NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"\"}]}}", "empty_message",
     NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"c\",\"tool_calls\":[{\"id\":"
     "\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
     "\"tool_call_id\":\"c1\",\"content\":\"\"},{\"role\":\"assistant\",\"content\":\"x\"}]}}",
     "empty_message", NULL},
    /* the example ends with a tool result, another call of the same message unanswered */
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
     "\"c1\",\"function\":{\"name\":\"f\"}},{\"id\":\"c2\",\"function\":{\"name\":\"g\"}}]},"
     "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"1\"}]}}",
     "unanswered_tool_call", NULL},
    /* but an assistant message with tool calls needs none */
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":"
     "\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}}",
     NULL, NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"zz\",\"content\":\"1\"},"
     "{\"role\":\"assistant\",\"content\":\"x\"}]}}",
     "invalid_tool_message", NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"tool\",\"content\":\"1\"}]}}", "invalid_tool_message",
     NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
     "\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\","
     "\"tool_call_id\":\"c1\",\"content\":\"1\"},{\"role\":\"tool\",\"tool_call_id\":\"c1\","
     "\"content\":\"again\"},{\"role\":\"assistant\",\"content\":\"x\"}]}}",
     "invalid_tool_message", NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
     "\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"assistant\","
     "\"content\":\"x\"}]}}",
     "unanswered_tool_call", NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":[{"
     "\"function\":{\"name\":\"f\"}}]}]}}",
     "invalid_tool_call", NULL},
    {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":[{\"id\":"
     "\"c1\",\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]}]}}",
     "invalid_tool_call", NULL},
    {"{\"metadata\":{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"lookup\","
     "\"parameters\":{\"type\":\"object\"}}},{\"name\":\"bare\",\"description\":\"d\"}]}}",
     NULL, NULL},
    {"{\"metadata\":{\"tools\":[{\"type\":\"function\"}]}}", "invalid_tools", NULL},
    {"{\"metadata\":{\"tools\":\"lookup\"}}", "invalid_tools", NULL},
};

static void test_openai_chat(void **state)
{
    (void)state;
    export_writer *w = writer(EXPORT_OPENAI_CHAT, NULL, 0, NULL, 0, NULL);
    export_stats *stats = export_stats_new();
    cJSON *want_skips = cJSON_CreateObject(), *sj;
    size_t exported = 0;

    for (size_t i = 0; i < sizeof chat_cases / sizeof chat_cases[0]; i++) {
        const chat_case *c = &chat_cases[i];
        uint64_t skipped = export_stats_skipped(stats);
        char *text = one(w, trace(c->overrides), stats);

        if (c->reason) {
            if (text[0])
                fail_msg("case %zu: exported, expected skip '%s': %s", i, c->reason, text);
            assert_int_equal(export_stats_skipped(stats), skipped + 1);
            cJSON *n = cJSON_GetObjectItem(want_skips, c->reason);
            if (n)
                cJSON_SetNumberValue(n, n->valuedouble + 1);
            else
                cJSON_AddNumberToObject(want_skips, c->reason, 1);
        } else {
            cJSON *line;
            if (!text[0])
                fail_msg("case %zu: skipped", i);
            line = one_line(text);
            exported++;
            check_openai_conversation(cJSON_GetObjectItem(line, "messages"), true);
            if (c->want)
                assert_json_equal(cJSON_GetObjectItem(line, "messages"), c->want);
            if (c->overrides && strstr(c->overrides, "\"tools\"")) {
                assert_json_equal(cJSON_GetObjectItem(line, "tools"),
                                  "[{\"type\":\"function\",\"function\":{\"name\":\"lookup\","
                                  "\"parameters\":{\"type\":\"object\"}}},{\"type\":\"function\","
                                  "\"function\":{\"name\":\"bare\",\"description\":\"d\"}}]");
            } else {
                assert_null(cJSON_GetObjectItem(line, "tools"));
            }
            cJSON_Delete(line);
        }
        free(text);
    }
    sj = export_stats_json(stats);
    char *want_text = eb_json_print(want_skips);
    assert_json_equal(cJSON_GetObjectItem(sj, "skipped_by_reason"), want_text);
    free(want_text);
    assert_int_equal((size_t)stat_num(sj, "records"), exported);
    assert_int_equal(export_writer_count(w), exported);
    cJSON_Delete(sj);
    cJSON_Delete(want_skips);
    export_stats_free(stats);
    export_writer_free(w);
}

/* ---------------------------------------------------------------- openai-preference */

static cJSON *pair(const char *pref_over, const char *non_over)
{
    cJSON *p = cJSON_CreateObject();
    cJSON *non = trace(non_over ? non_over : "{\"output\":\"5\",\"review_state\":\"rejected\"}");
    cJSON_AddItemToObject(p, "preferred", trace(pref_over));
    cJSON_AddItemToObject(p, "non_preferred", non);
    return p;
}

static void test_openai_preference(void **state)
{
    (void)state;
    export_writer *w = writer(EXPORT_OPENAI_PREFERENCE, NULL, 0, NULL, 0, NULL);
    export_stats *stats = export_stats_new();
    char *text = one(w, pair("{\"metadata\":{\"tools\":[{\"name\":\"calc\"}]}}", NULL), stats);
    cJSON *line = one_line(text), *sj;

    assert_json_equal(line,
                      "{\"input\":{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                      "{\"role\":\"user\",\"content\":\"What is 2+2?\"}],\"tools\":[{\"type\":"
                      "\"function\",\"function\":{\"name\":\"calc\"}}]},"
                      "\"preferred_output\":[{\"role\":\"assistant\",\"content\":\"4\"}],"
                      "\"non_preferred_output\":[{\"role\":\"assistant\",\"content\":\"5\"}]}");
    check_openai_conversation(cJSON_GetObjectItem(cJSON_GetObjectItem(line, "input"), "messages"),
                              false);
    cJSON_Delete(line);
    free(text);

    /* the last assistant message of a multi-message output */
    text = one(w,
               pair("{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"thinking\"},"
                    "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"4\"}]}]}}",
                    NULL),
               stats);
    line = one_line(text);
    assert_json_equal(cJSON_GetObjectItem(line, "preferred_output"),
                      "[{\"role\":\"assistant\",\"content\":\"4\"}]");
    cJSON_Delete(line);
    free(text);

    static const struct {
        const char *pref, *non, *reason;
    } skips[] = {
        {"{\"output\":\"5\"}", NULL, "identical_outputs"},
        {"{\"status\":\"error\"}", NULL, "status_error"},
        {"{\"input\":null}", NULL, "no_input"},
        {"{\"output\":null}", NULL, "no_preferred_output"},
        {NULL, "{\"output\":{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}",
         "no_non_preferred_output"},
        {NULL,
         "{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":"
         "\"image_url\",\"image_url\":{\"url\":\"u\"}}]}]}}",
         "image_content"},
        {NULL, "{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"\"}]}}",
         "empty_message"},
    };
    for (size_t i = 0; i < sizeof skips / sizeof skips[0]; i++) {
        text = one(w, pair(skips[i].pref, skips[i].non), stats);
        assert_string_equal(text, "");
        free(text);
    }
    /* a record that is not a pair */
    text = one(w, trace(NULL), stats);
    assert_string_equal(text, "");
    free(text);

    sj = export_stats_json(stats);
    assert_int_equal((int)stat_num(sj, "records"), 2);
    assert_int_equal((int)stat_num(sj, "skipped"), 8);
    assert_int_equal((int)stat_num(sj, "skipped_by_reason/empty_message"), 1);
    assert_int_equal((int)stat_num(sj, "skipped_by_reason/identical_outputs"), 1);
    assert_int_equal((int)stat_num(sj, "skipped_by_reason/invalid_pair"), 1);
    /* pairs are counted with the preferred trace's fields */
    assert_int_equal((int)stat_num(sj, "by_review_state/accepted"), 2);
    assert_int_equal((int)stat_num(sj, "tokens/input"), 240);
    cJSON_Delete(sj);
    export_stats_free(stats);
    export_writer_free(w);
}

/* Tools as the Responses API records them, flat with "type": wrapped without a "type" inside the
 * function definition (a function has name, description, parameters, strict). */
static void test_openai_tools_flat(void **state)
{
    (void)state;
    static const export_format fmts[] = {EXPORT_OPENAI_CHAT, EXPORT_OPENAI_PREFERENCE};
    const char *over = "{\"metadata\":{\"tools\":[{\"type\":\"function\",\"name\":\"lookup\","
                       "\"description\":\"d\",\"parameters\":{\"type\":\"object\"},\"strict\":"
                       "true},{\"name\":\"bare\"}]}}";
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        export_writer *w = writer(fmts[f], NULL, 0, NULL, 0, NULL);
        cJSON *rec = fmts[f] == EXPORT_OPENAI_CHAT ? trace(over) : pair(over, NULL);
        char *text = one(w, rec, NULL);
        cJSON *line = one_line(text);
        const cJSON *tools = cJSON_GetObjectItem(
            fmts[f] == EXPORT_OPENAI_CHAT ? line : cJSON_GetObjectItem(line, "input"), "tools");
        assert_json_equal(tools, "[{\"type\":\"function\",\"function\":{\"name\":\"lookup\","
                                 "\"description\":\"d\",\"parameters\":{\"type\":\"object\"},"
                                 "\"strict\":true}},{\"type\":\"function\",\"function\":{"
                                 "\"name\":\"bare\"}}]");
        cJSON_Delete(line);
        free(text);
        /* a flat tool of another type is not a function definition */
        rec = trace("{\"metadata\":{\"tools\":[{\"type\":\"web_search\",\"name\":\"s\"}]}}");
        if (fmts[f] == EXPORT_OPENAI_PREFERENCE) {
            cJSON *p = cJSON_CreateObject();
            cJSON_AddItemToObject(p, "preferred", rec);
            cJSON_AddItemToObject(p, "non_preferred", trace("{\"output\":\"5\"}"));
            rec = p;
        }
        text = one(w, rec, NULL);
        assert_string_equal(text, "");
        free(text);
        export_writer_free(w);
    }
}

/* ---------------------------------------------------------------- anthropic */

/* Bedrock Claude fine-tuning rules on one line. */
static void check_bedrock(const cJSON *line)
{
    const cJSON *msgs = cJSON_GetObjectItem(line, "messages"), *m, *k;
    const char *prev = NULL;

    cJSON_ArrayForEach(k, line)
    {
        assert_true(!strcmp(k->string, "system") || !strcmp(k->string, "messages"));
    }
    if (cJSON_GetObjectItem(line, "system"))
        assert_true(cJSON_IsString(cJSON_GetObjectItem(line, "system")));
    assert_true(cJSON_GetArraySize(msgs) >= 2);
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = cJSON_GetStringValue(cJSON_GetObjectItem(m, "role"));
        const char *content = cJSON_GetStringValue(cJSON_GetObjectItem(m, "content"));
        assert_int_equal(cJSON_GetArraySize(m), 2);
        assert_non_null(role);
        assert_non_null(content);
        assert_true(content[0] != '\0');
        assert_string_equal(role,
                            prev == NULL || !strcmp(prev, "assistant") ? "user" : "assistant");
        prev = role;
    }
    assert_string_equal(prev, "assistant");
}

static void test_anthropic(void **state)
{
    static const struct {
        const char *overrides, *reason, *want;
    } cases[] = {
        {NULL, NULL,
         "{\"system\":\"Be brief.\",\"messages\":[{\"role\":\"user\",\"content\":\"What is 2+2?\"},"
         "{\"role\":\"assistant\",\"content\":\"4\"}]}"},
        {"{\"input\":{\"messages\":[{\"role\":\"system\",\"content\":\"s1\"},{\"role\":"
         "\"developer\",\"content\":\"s2\"},{\"role\":\"user\",\"content\":\"a\"},{\"role\":"
         "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"b\"},{\"type\":\"text\",\"text\":"
         "\"c\"}]}]},\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"},"
         "{\"role\":\"assistant\",\"content\":\"y\"}]}}",
         NULL,
         "{\"system\":\"s1\\ns2\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\nb\\nc\"},"
         "{\"role\":\"assistant\",\"content\":\"x\\ny\"}]}"},
        /* empty system messages say nothing: no "system" member, no blank line in it */
        {"{\"input\":{\"messages\":[{\"role\":\"system\",\"content\":\"\"},{\"role\":"
         "\"user\",\"content\":\"a\"}]},\"output\":\"b\"}",
         NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
         "\"content\":\"b\"}]}"},
        {"{\"input\":{\"messages\":[{\"role\":\"system\",\"content\":\"\"},{\"role\":"
         "\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"a\"}]},\"output\":"
         "\"b\"}",
         NULL,
         "{\"system\":\"s\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":"
         "\"assistant\",\"content\":\"b\"}]}"},
        {"{\"input\":\"hi\",\"output\":\"hello\"}", NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\","
         "\"content\":\"hello\"}]}"},
        {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"q1\"},{\"role\":\"assistant\","
         "\"content\":\"a1\"},{\"role\":\"user\",\"content\":\"q2\"}]}}",
         NULL,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"q1\"},{\"role\":\"assistant\","
         "\"content\":\"a1\"},{\"role\":\"user\",\"content\":\"q2\"},{\"role\":\"assistant\","
         "\"content\":\"4\"}]}"},
        {"{\"input\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"hi\"},{\"role\":\"user\","
         "\"content\":\"q\"}]}}",
         "invalid_turn_order", NULL},
        /* system, then the assistant: no user turn */
        {"{\"input\":{\"messages\":[{\"role\":\"system\",\"content\":\"s\"}]}}",
         "invalid_turn_order", NULL},
        {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{"
         "\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}}",
         "tool_use_unsupported", NULL},
        {"{\"output\":{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"},{\"role\":"
         "\"assistant\",\"content\":\"y\"}]}}",
         "tool_use_unsupported", NULL},
        {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"},{\"role\":\"user\","
         "\"content\":\"more?\"}]}}",
         "invalid_turn_order", NULL},
        {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"\"}]}}", "empty_message",
         NULL},
        {"{\"status\":\"error\"}", "status_error", NULL},
        {"{\"output\":null}", "no_assistant_message", NULL},
        {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
         "\"image_url\":{\"url\":\"u\"}}]}]}}",
         "image_content", NULL},
    };
    (void)state;
    export_writer *w = writer(EXPORT_ANTHROPIC, NULL, 0, NULL, 0, NULL);
    export_stats *stats = export_stats_new();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = one(w, trace(cases[i].overrides), stats);
        const char *reason = cases[i].reason;
        if (reason) {
            if (text[0])
                fail_msg("case %zu: exported, expected '%s': %s", i, reason, text);
        } else {
            cJSON *line = one_line(text);
            check_bedrock(line);
            if (cases[i].want)
                assert_json_equal(line, cases[i].want);
            cJSON_Delete(line);
        }
        free(text);
    }
    cJSON *sj = export_stats_json(stats);
    assert_int_equal((int)stat_num(sj, "records"), 6);
    assert_int_equal((int)stat_num(sj, "skipped_by_reason/invalid_turn_order"), 3);
    assert_int_equal((int)stat_num(sj, "skipped_by_reason/tool_use_unsupported"), 2);
    cJSON_Delete(sj);
    export_stats_free(stats);
    export_writer_free(w);
}

/* ---------------------------------------------------------------- sql-pairs */

static void test_sql_pairs(void **state)
{
    static const struct {
        const char *overrides;
        const char *want; /* the line, or NULL when skipped */
        const char *reason;
    } cases[] = {
        {"{\"metadata\":{\"sql\":\"SELECT name FROM customers c JOIN orders o ON o.cid = c.id\","
         "\"question\":\"Who ordered?\",\"database_type\":\"postgresql\",\"database\":"
         "\"orders\"}}",
         "{\"question\":\"Who ordered?\",\"sql\":\"SELECT name FROM customers c JOIN orders o ON "
         "o.cid = c.id\",\"database_type\":\"postgresql\",\"database_hash\":\"HASH\","
         "\"tables\":[\"customers\",\"orders\"],\"success\":true,\"execution_ms\":null,"
         "\"query_type\":\"SELECT\",\"trace_id\":\"t-1\"}",
         NULL},
        /* metadata.sql object; question from the last user message */
        {"{\"status\":\"error\",\"metadata\":{\"sql\":{\"query\":\"delete from "
         "public.\\\"Carts\\\" "
         "where id = 1\",\"database_type\":\"mysql\",\"database\":\"orders\",\"execution_ms\":12.5,"
         "\"success\":true}},\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"first\"},"
         "{\"role\":\"assistant\",\"content\":\"?\"},{\"role\":\"user\",\"content\":[{\"type\":"
         "\"text\",\"text\":\"drop cart\"},{\"type\":\"text\",\"text\":\"1\"}]}]}}",
         "{\"question\":\"drop cart\\n1\",\"sql\":\"delete from public.\\\"Carts\\\" where id = "
         "1\","
         "\"database_type\":\"mysql\",\"database_hash\":\"HASH\",\"tables\":[\"public.carts\"],"
         "\"success\":false,\"execution_ms\":12.5,\"query_type\":\"DELETE\",\"trace_id\":\"t-1\"}",
         NULL},
        /* a trace-level tool call with times and an error result */
        {"{\"input\":\"How many users?\",\"metadata\":{\"db_system\":\"sqlite\"},\"tool_calls\":["
         "{\"id\":\"c0\",\"type\":\"function\",\"function\":{\"name\":\"web_search\",\"arguments\":"
         "\"{\\\"query\\\":\\\"SELECT tips\\\"}\"}},"
         "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"run_sql\",\"arguments\":"
         "\"{\\\"sql\\\":\\\"SELECT count(*) FROM users\\\"}\"},\"result\":"
         "\"{\\\"error\\\":\\\"no such table\\\"}\",\"start_time\":\"2026-11-22T10:00:00.500Z\","
         "\"end_time\":\"2026-11-22T10:00:00.750Z\"}]}",
         "{\"question\":\"How many users?\",\"sql\":\"SELECT count(*) FROM users\","
         "\"database_type\":\"sqlite\",\"database_hash\":null,\"tables\":[\"users\"],\"success\":"
         "false,\"execution_ms\":250,\"query_type\":\"SELECT\",\"trace_id\":\"t-1\"}",
         NULL},
        /* a tool call of an output message ("query" argument) */
        {"{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{"
         "\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"QueryDatabase\","
         "\"arguments\":\"{\\\"query\\\":\\\"WITH t AS (SELECT 1) INSERT INTO log SELECT * FROM "
         "t\\\"}\"}}]}]}}",
         "{\"question\":\"What is 2+2?\",\"sql\":\"WITH t AS (SELECT 1) INSERT INTO log SELECT * "
         "FROM t\",\"database_type\":null,\"database_hash\":null,\"tables\":[\"log\"],\"success\":"
         "true,\"execution_ms\":null,\"query_type\":\"INSERT\",\"trace_id\":\"t-1\"}",
         NULL},
        /* an observation of type tool */
        {"{\"observations\":[{\"id\":\"o2\",\"type\":\"tool\",\"name\":\"sql_query\",\"status\":"
         "\"error\",\"input\":\"{\\\"sql\\\":\\\"UPDATE accounts SET x = 1\\\"}\",\"start_time\":"
         "\"2026-11-22T10:00:00Z\",\"end_time\":\"2026-11-22T10:00:01Z\"}]}",
         "{\"question\":\"What is 2+2?\",\"sql\":\"UPDATE accounts SET x = 1\",\"database_type\":"
         "null,\"database_hash\":null,\"tables\":[\"accounts\"],\"success\":false,\"execution_ms\":"
         "1000,\"query_type\":\"UPDATE\",\"trace_id\":\"t-1\"}",
         NULL},
        {NULL, NULL, "no_sql"},
        /* a search tool's "query" is not SQL */
        {"{\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":"
         "\"search_query\",\"arguments\":\"{\\\"query\\\":\\\"weather in Paris\\\"}\"}}]}",
         NULL, "no_sql"},
        {"{\"metadata\":{\"sql\":\"SELECT 1\"},\"input\":null}", NULL, "no_question"},
    };
    (void)state;
    char hex[65];
    eb_sha256_hex("orders", 6, hex);
    hex[16] = '\0';
    export_writer *w = writer(EXPORT_SQL_PAIRS, NULL, 0, NULL, 0, NULL);
    export_stats *stats = export_stats_new();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = one(w, trace(cases[i].overrides), stats);
        if (!cases[i].want) {
            if (text[0])
                fail_msg("case %zu: exported, expected '%s': %s", i, cases[i].reason, text);
        } else {
            cJSON *line = one_line(text);
            eb_buf want = {0};
            const char *p = cases[i].want, *h;
            while ((h = strstr(p, "HASH")) != NULL) {
                eb_buf_append(&want, p, (size_t)(h - p));
                eb_buf_puts(&want, hex);
                p = h + 4;
            }
            eb_buf_puts(&want, p);
            assert_json_equal(line, want.data);
            eb_buf_free(&want);
            cJSON_Delete(line);
        }
        free(text);
    }
    cJSON *sj = export_stats_json(stats);
    assert_int_equal((int)stat_num(sj, "records"), 5);
    assert_int_equal((int)stat_num(sj, "skipped_by_reason/no_sql"), 2);
    assert_int_equal((int)stat_num(sj, "skipped_by_reason/no_question"), 1);
    assert_int_equal((int)stat_num(sj, "sql/records"), 5);
    assert_int_equal((int)stat_num(sj, "sql/by_query_type/SELECT"), 2);
    assert_int_equal((int)stat_num(sj, "sql/by_query_type/INSERT"), 1);
    assert_int_equal((int)stat_num(sj, "sql/by_query_type/UPDATE"), 1);
    assert_int_equal((int)stat_num(sj, "sql/by_query_type/DELETE"), 1);
    assert_int_equal((int)stat_num(sj, "sql/by_database_type/postgresql"), 1);
    assert_int_equal((int)stat_num(sj, "sql/by_database_type/(none)"), 2);
    assert_int_equal((int)stat_num(sj, "sql/tables/distinct"), 6);
    assert_json_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(sj, "sql"), "tables"), "names"),
        "[\"accounts\",\"customers\",\"log\",\"orders\",\"public.carts\",\"users\"]");
    cJSON_Delete(sj);
    export_stats_free(stats);
    export_writer_free(w);
}

/* SQL written by a model often comes in a Markdown code fence: the pair holds the statement. */
static void test_sql_fences(void **state)
{
    static const struct {
        const char *overrides, *sql, *type, *tables;
    } cases[] = {
        {"{\"metadata\":{\"sql\":\"```sql\\nSELECT id FROM orders\\n```\"}}",
         "SELECT id FROM orders", "SELECT", "[\"orders\"]"},
        {"{\"metadata\":{\"sql\":{\"query\":\"  ```postgresql\\r\\nDELETE FROM "
         "carts;\\r\\n```\\n\"}}}",
         "DELETE FROM carts;", "DELETE", "[\"carts\"]"},
        /* a tool call's argument: found although it does not start with a keyword */
        {"{\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"run_sql\","
         "\"arguments\":\"{\\\"sql\\\":\\\"```\\\\nUPDATE t SET a = 1\\\\n```\\\"}\"}}]}",
         "UPDATE t SET a = 1", "UPDATE", "[\"t\"]"},
        /* no closing fence */
        {"{\"metadata\":{\"sql\":\"```sql\\nINSERT INTO log VALUES (1)\"}}",
         "INSERT INTO log VALUES (1)", "INSERT", "[\"log\"]"},
        /* a fence with nothing inside: no SQL */
        {"{\"metadata\":{\"sql\":\"```sql\\n\\n```\"}}", NULL, NULL, NULL},
    };
    (void)state;
    export_writer *w = writer(EXPORT_SQL_PAIRS, NULL, 0, NULL, 0, NULL);
    export_stats *stats = export_stats_new();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = one(w, trace(cases[i].overrides), stats);
        if (!cases[i].sql) {
            if (text[0])
                fail_msg("case %zu: exported, expected no_sql: %s", i, text);
        } else {
            cJSON *line;
            if (!text[0])
                fail_msg("case %zu: skipped", i);
            line = one_line(text);
            assert_string_equal(cJSON_GetObjectItem(line, "sql")->valuestring, cases[i].sql);
            assert_string_equal(cJSON_GetObjectItem(line, "query_type")->valuestring,
                                cases[i].type);
            assert_json_equal(cJSON_GetObjectItem(line, "tables"), cases[i].tables);
            cJSON_Delete(line);
        }
        free(text);
    }
    cJSON *sj = export_stats_json(stats);
    assert_int_equal((int)stat_num(sj, "records"), 4);
    assert_int_equal((int)stat_num(sj, "skipped_by_reason/no_sql"), 1);
    assert_int_equal((int)stat_num(sj, "sql/by_query_type/OTHER"), 0);
    /* lengths count the statement, not the fence */
    assert_int_equal((int)stat_num(sj, "lengths/sql/min"), 18);
    cJSON_Delete(sj);
    export_stats_free(stats);
    export_writer_free(w);
}

static void test_sql_tables(void **state)
{
    static const struct {
        const char *sql, *tables; /* tables: "a,b" */
        export_query_type type;
    } cases[] = {
        {"SELECT * FROM users", "users", EXPORT_QUERY_SELECT},
        {"select a from Sales.Orders o, \"Public\".\"Line\"\"Items\" li where o.id = li.oid",
         "sales.orders,public.line\"items", EXPORT_QUERY_SELECT},
        {"SELECT EXTRACT(YEAR FROM created_at), substring(x from 2) FROM events", "events",
         EXPORT_QUERY_SELECT},
        {"SELECT * FROM a LEFT OUTER JOIN b USING (id) CROSS JOIN LATERAL (SELECT 1) x "
         "INNER JOIN `db`.`c` ON true",
         "a,b,db.c", EXPORT_QUERY_SELECT},
        {"SELECT * FROM (SELECT * FROM inner_t) sub JOIN [dbo].[Outer] o ON 1=1",
         "inner_t,dbo.outer", EXPORT_QUERY_SELECT},
        {"-- FROM comment_t\nSELECT 'FROM literal_t', $$ FROM dollar_t $$ /* JOIN c_t */ FROM t1",
         "t1", EXPORT_QUERY_SELECT},
        {"WITH recent AS (SELECT * FROM orders WHERE d > now()), big(x) AS (SELECT 1 FROM items) "
         "SELECT * FROM recent JOIN big ON true JOIN customers ON true",
         "orders,items,customers", EXPORT_QUERY_SELECT},
        {"WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT n+1 FROM r) SELECT * FROM r", "",
         EXPORT_QUERY_SELECT},
        {"with x as (delete from old returning *) insert into archive select * from x",
         "old,archive", EXPORT_QUERY_INSERT},
        {"INSERT INTO logs (a, b) VALUES (1, 2) ON CONFLICT (a) DO UPDATE SET b = 3", "logs",
         EXPORT_QUERY_INSERT},
        {"UPDATE ONLY inventory SET qty = qty - 1 FROM orders WHERE inventory.id = orders.iid",
         "inventory,orders", EXPORT_QUERY_UPDATE},
        {"DELETE FROM sessions USING users WHERE sessions.uid = users.id", "sessions,users",
         EXPORT_QUERY_DELETE},
        {"SELECT * FROM generate_series(1, 10) g, t2", "", EXPORT_QUERY_SELECT},
        {"SELECT a IS DISTINCT FROM b FROM t3 FOR UPDATE OF t3", "t3", EXPORT_QUERY_SELECT},
        {"(SELECT 1 FROM a) UNION (SELECT 2 FROM b)", "a,b", EXPORT_QUERY_SELECT},
        {"SELECT * FROM users u JOIN users v ON u.id = v.id", "users", EXPORT_QUERY_SELECT},
        {"MERGE INTO target t USING source s ON t.id = s.id", "target,source", EXPORT_QUERY_OTHER},
        {"CREATE TABLE x (id int)", "", EXPORT_QUERY_OTHER},
        {"EXPLAIN SELECT * FROM t", "t", EXPORT_QUERY_OTHER},
        {"", "", EXPORT_QUERY_OTHER},
        {"SELECT 'unterminated FROM x", "", EXPORT_QUERY_SELECT},
        {"SELECT * FROM \"unterminated", "unterminated", EXPORT_QUERY_SELECT},
        {"SELECT * FROM s.order", "s.order", EXPORT_QUERY_SELECT},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eb_buf names = {0}, joined = {0};
        size_t n = export_sql_tables(cases[i].sql, &names);
        const char *p = names.data;
        for (size_t k = 0; k < n; k++, p += strlen(p) + 1) {
            if (k)
                eb_buf_putc(&joined, ',');
            eb_buf_puts(&joined, p);
        }
        if (strcmp(joined.data ? joined.data : "", cases[i].tables))
            fail_msg("case %zu: tables '%s' want '%s'", i, joined.data ? joined.data : "",
                     cases[i].tables);
        if (export_sql_query_type(cases[i].sql) != cases[i].type)
            fail_msg("case %zu: query type %s want %s", i,
                     export_query_type_name(export_sql_query_type(cases[i].sql)),
                     export_query_type_name(cases[i].type));
        eb_buf_free(&names);
        eb_buf_free(&joined);
    }
    /* at most EXPORT_SQL_TABLES_MAX names, each cut to EXPORT_SQL_NAME_MAX bytes */
    eb_buf sql = {0}, names = {0};
    eb_buf_puts(&sql, "SELECT * FROM ");
    for (int i = 0; i < 100; i++)
        eb_buf_printf(&sql, "%st%d", i ? ", " : "", i);
    eb_buf_puts(&sql, " JOIN ");
    for (int i = 0; i < 400; i++)
        eb_buf_putc(&sql, 'x');
    assert_int_equal(export_sql_tables(sql.data, &names), EXPORT_SQL_TABLES_MAX);
    eb_buf_reset(&names);
    assert_int_equal(export_sql_tables(sql.data + sql.len - 406, &names), 1);
    assert_int_equal(strlen(names.data), EXPORT_SQL_NAME_MAX);
    eb_buf_free(&sql);
    eb_buf_free(&names);
}

/* ---------------------------------------------------------------- redaction */

static const char team_key[] = "team-a-secret-key-0123456789abcdef";

static redactor *make_redactor(const redact_pattern *pats, size_t n)
{
    redact_config cfg = {
        .key = team_key, .key_len = strlen(team_key), .patterns = pats, .n_patterns = n};
    redactor *r = NULL;
    assert_int_equal(redact_new(&cfg, &r), EB_OK);
    return r;
}

static void test_redaction(void **state)
{
    (void)state;
    redactor *r = make_redactor(NULL, 0);
    static const export_format fmts[] = {EXPORT_JSONL, EXPORT_OPENAI_CHAT, EXPORT_ANTHROPIC,
                                         EXPORT_CSV, EXPORT_JSON};
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        export_writer *w = writer(fmts[f], NULL, 0, NULL, 0, r);
        export_stats *stats = export_stats_new();
        eb_buf out = {0};
        cJSON *t = trace("{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"Mail "
                         "ana@example.com \\\"now\\\"\\n, from 10.0.0.1\"}]},"
                         "\"metadata\":{\"contact\":\"ana@example.com\"}}");
        cJSON *sj;
        /* a string holding invalid UTF-8 comes out as U+FFFD */
        cJSON_ReplaceItemInObject(cJSON_GetObjectItem(t, "metadata"), "contact",
                                  cJSON_CreateString("ana@example.com \xc3"));
        export_writer_begin(w, &out);
        assert_int_equal(export_writer_record(w, t, &out, stats), EB_OK);
        export_writer_end(w, stats, &out);
        cJSON_Delete(t);
        assert_null(strstr(out.data, "ana@example.com"));
        assert_non_null(strstr(out.data, "<EMAIL_"));
        assert_true(eb_utf8_valid(out.data, out.len));
        if (fmts[f] == EXPORT_CSV) {
            cJSON *rows = csv_read(out.data);
            assert_non_null(strstr(cell(rows, 1, 15), "user: Mail <EMAIL_"));
            cJSON_Delete(rows);
        } else if (fmts[f] == EXPORT_JSON) {
            cJSON *doc = cJSON_Parse(out.data);
            assert_non_null(doc);
            cJSON_Delete(doc);
        } else {
            cJSON *line = one_line(out.data);
            cJSON_Delete(line);
        }
        sj = export_stats_json(stats);
        /* replacements count over the whole record, exported fields or not */
        assert_int_equal((int)stat_num(sj, "redactions/by_kind/EMAIL"), 2);
        assert_int_equal((int)stat_num(sj, "redactions/by_kind/IP"), 1);
        assert_int_equal((int)stat_num(sj, "redactions/total"), 3);
        cJSON_Delete(sj);
        eb_buf_free(&out);
        export_stats_free(stats);
        export_writer_free(w);
    }
    redact_free(r);

    /* a team pattern past its match limit: an error, nothing appended, nothing counted */
    static const redact_pattern slow[] = {{"(a+)+$", "SLOW"}};
    r = make_redactor(slow, 1);
    export_writer *w = writer(EXPORT_JSONL, NULL, 0, NULL, 0, r);
    export_stats *stats = export_stats_new();
    eb_buf out = {0};
    eb_buf_puts(&out, "previous\n");
    char bomb[64];
    memset(bomb, 'a', 40);
    strcpy(bomb + 40, "!");
    cJSON *t = trace(NULL);
    cJSON_ReplaceItemInObject(t, "input", cJSON_CreateString(bomb));
    assert_int_equal(export_writer_record(w, t, &out, stats), EB_ERR_INVALID);
    assert_string_equal(out.data, "previous\n");
    assert_int_equal(export_stats_records(stats), 0);
    assert_int_equal(export_stats_skipped(stats), 0);
    cJSON_Delete(t);
    eb_buf_free(&out);
    export_stats_free(stats);
    export_writer_free(w);
    redact_free(r);
}

/* A string that holds JSON text (tool-call arguments, a tool result) has its strings
 * pseudonymized at their decoded values: an escape before a value ("\n415-555-0134") does not
 * hide it, a value with an escape inside ("jos\u00e9@...") gets the token of its decoded form,
 * and the arguments stay a JSON text with their numbers as they were. */
static void test_redaction_json_text(void **state)
{
    (void)state;
    redactor *r = make_redactor(NULL, 0);
    static const export_format fmts[] = {EXPORT_JSONL, EXPORT_OPENAI_CHAT};
    /* the tokens the same values get as plain text */
    const char *plain[] = {"415-555-0134", "123-45-6789", "jos\xc3\xa9@example.com",
                           "4111 1111 1111 1111"};
    char tokens[4][32];
    for (size_t i = 0; i < 4; i++) {
        eb_buf b = {0};
        assert_int_equal(redact_json_string(r, plain[i], strlen(plain[i]), &b, NULL), EB_OK);
        assert_true(b.len < sizeof tokens[i] && b.data[0] == '<');
        memcpy(tokens[i], b.data, b.len + 1);
        eb_buf_free(&b);
    }
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        export_writer *w = writer(fmts[f], NULL, 0, NULL, 0, r);
        export_stats *stats = export_stats_new();
        cJSON *t = trace(
            "{\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{"
            "\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"notify\",\"arguments\":"
            "\"{\\\"body\\\": \\\"Call:\\\\n415-555-0134\\\\tSSN\\\\t123-45-6789\\\", "
            "\\\"to\\\": [\\\"jos\\\\u00e9@example.com\\\"], \\\"card\\\": \\\"x\\\\r4111 1111 "
            "1111 "
            "1111\\\", \\\"n\\\": 12345678901234567890}\"}}]}]}}");
        char *text = one(w, t, stats);
        cJSON *line = one_line(text), *m, *args, *sj;
        for (size_t i = 0; i < 4; i++)
            assert_null(strstr(text, plain[i]));
        assert_null(strstr(text, "example.com"));
        assert_null(strstr(text, "jos"));
        m = cJSON_GetArrayItem(
            cJSON_GetObjectItem(
                fmts[f] == EXPORT_JSONL ? cJSON_GetObjectItem(line, "output") : line, "messages"),
            fmts[f] == EXPORT_JSONL ? 0 : 2);
        m = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(m, "tool_calls"), 0),
                                "function");
        assert_true(cJSON_IsString(cJSON_GetObjectItem(m, "arguments")));
        args = parse(cJSON_GetObjectItem(m, "arguments")->valuestring);
        {
            char want[256];
            snprintf(want, sizeof want, "Call:\n%s\tSSN\t%s", tokens[0], tokens[1]);
            assert_string_equal(cJSON_GetObjectItem(args, "body")->valuestring, want);
        }
        assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(args, "to"), 0)->valuestring,
                            tokens[2]);
        {
            char want[64];
            snprintf(want, sizeof want, "x\r%s", tokens[3]);
            assert_string_equal(cJSON_GetObjectItem(args, "card")->valuestring, want);
        }
        assert_non_null(
            strstr(cJSON_GetObjectItem(m, "arguments")->valuestring, "\"n\":12345678901234567890"));
        cJSON_Delete(args);
        sj = export_stats_json(stats);
        assert_int_equal((int)stat_num(sj, "redactions/by_kind/PHONE"), 1);
        assert_int_equal((int)stat_num(sj, "redactions/by_kind/SSN"), 1);
        assert_int_equal((int)stat_num(sj, "redactions/by_kind/EMAIL"), 1);
        assert_int_equal((int)stat_num(sj, "redactions/by_kind/CARD"), 1);
        assert_int_equal((int)stat_num(sj, "redactions/total"), 4);
        cJSON_Delete(sj);
        cJSON_Delete(line);
        free(text);
        export_stats_free(stats);
        export_writer_free(w);
    }
    redact_free(r);
}

/* Numbers in the application's own JSON (metadata, attributes, messages, tool calls) are
 * pseudonymized as their text would be, and become the token's string; the record's typed
 * numbers (usage, cost, latency) never are, and other numbers stay numbers. */
static void test_redaction_numbers(void **state)
{
    (void)state;
    static const redact_pattern team[] = {{"\\b4242\\b", "CODE"}};
    redactor *builtin = make_redactor(NULL, 0), *custom = make_redactor(team, 1);
    char card[32];
    {
        eb_buf b = {0};
        assert_int_equal(redact_json_string(builtin, "4111111111111111", 16, &b, NULL), EB_OK);
        assert_true(b.len < sizeof card && b.data[0] == '<');
        memcpy(card, b.data, b.len + 1);
        eb_buf_free(&b);
    }
    for (int k = 0; k < 2; k++) {
        export_writer *w = writer(EXPORT_JSONL, NULL, 0, NULL, 0, k ? custom : builtin);
        export_stats *stats = export_stats_new();
        cJSON *t = trace("{\"metadata\":{\"card\":4111111111111111,\"n\":4242,\"ms\":"
                         "1732269600123,\"deep\":[{\"c\":4111111111111111}]},"
                         "\"attributes\":{\"card\":4111111111111111},"
                         "\"usage\":{\"input_tokens\":4111111111111111},\"latency_ms\":4242}");
        char *text = one(w, t, stats);
        cJSON *line = one_line(text), *md = cJSON_GetObjectItem(line, "metadata");
        assert_null(strstr(text, "4111111111111111,"));
        assert_string_equal(cJSON_GetObjectItem(md, "card")->valuestring, card);
        assert_string_equal(
            cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(md, "deep"), 0), "c")
                ->valuestring,
            card);
        assert_string_equal(
            cJSON_GetObjectItem(cJSON_GetObjectItem(line, "attributes"), "card")->valuestring,
            card);
        /* a timestamp in milliseconds is no card */
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(md, "ms")));
        assert_true(cJSON_GetObjectItem(md, "ms")->valuedouble == 1732269600123.0);
        if (k) /* the team pattern matches 4242 in the metadata */
            assert_non_null(strstr(cJSON_GetObjectItem(md, "n")->valuestring, "<CODE_"));
        else
            assert_true(cJSON_IsNumber(cJSON_GetObjectItem(md, "n")));
        /* the typed fields stay numbers */
        assert_true(
            cJSON_GetObjectItem(cJSON_GetObjectItem(line, "usage"), "input_tokens")->valuedouble ==
            4111111111111111.0);
        assert_true(cJSON_GetObjectItem(line, "latency_ms")->valuedouble == 4242.0);
        cJSON_Delete(line);
        free(text);
        export_stats_free(stats);
        export_writer_free(w);
    }
    redact_free(builtin);
    redact_free(custom);
}

/* Timestamps and the format's words are never replaced by the built-in kinds (and not scanned);
 * a team pattern still applies to them. */
static void test_redaction_plain_values(void **state)
{
    (void)state;
    static const redact_pattern team[] = {{"assist[a-z]+", "ROLE"}};
    redactor *builtin = make_redactor(NULL, 0), *custom = make_redactor(team, 1);
    const char *rec = "{\"start_time\":\"2026-11-22T08:00:00.519000Z\",\"status\":\"ok\","
                      "\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"call "
                      "+1 415 555 0134\"}]}}";
    for (int k = 0; k < 2; k++) {
        export_writer *w = writer(EXPORT_JSONL, NULL, 0, NULL, 0, k ? custom : builtin);
        char *text = one(w, trace(rec), NULL);
        assert_non_null(strstr(text, "\"2026-11-22T08:00:00.519000Z\""));
        assert_non_null(strstr(text, "<PHONE_"));
        if (k == 0)
            assert_non_null(strstr(text, "\"role\":\"assistant\""));
        else
            assert_non_null(strstr(text, "\"role\":\"<ROLE_"));
        free(text);
        export_writer_free(w);
    }
    redact_free(builtin);
    redact_free(custom);
}

static void test_null_arguments(void **state)
{
    (void)state;
    export_writer *w = writer(EXPORT_JSONL, NULL, 0, NULL, 0, NULL);
    eb_buf out = {0};
    cJSON *t = trace(NULL);
    assert_int_equal(export_writer_record(w, NULL, &out, NULL), EB_ERR_INVALID);
    assert_int_equal(export_writer_record(NULL, t, &out, NULL), EB_ERR_INVALID);
    assert_int_equal(export_writer_record(w, t, NULL, NULL), EB_ERR_INVALID);
    /* a record that is not an object is skipped */
    export_stats *stats = export_stats_new();
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(export_writer_record(w, arr, &out, stats), EB_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(export_stats_skipped(stats), 1);
    cJSON_Delete(arr);
    cJSON_Delete(t);
    export_stats_free(stats);
    export_writer_free(w);
    export_writer_free(NULL);
}

/* ---------------------------------------------------------------- odd shapes */

/* Records that break the documented shape (wrong types everywhere) go through every format:
 * no crash (the sanitizer builds watch), and whatever is written is still valid output. */
static void test_odd_shapes(void **state)
{
    static const char *const odd[] = {
        "{}",
        "{\"id\":5,\"status\":[],\"input\":{\"messages\":\"x\"},\"output\":{\"messages\":{}}}",
        "{\"input\":{\"messages\":[1,null,\"s\",[]]},\"output\":[{\"role\":\"assistant\","
        "\"content\":5}]}",
        "{\"input\":[{\"role\":\"user\",\"content\":[null,1,{\"type\":5}]}],\"output\":\"ok\"}",
        "{\"input\":\"q\",\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"a\","
        "\"tool_calls\":{\"id\":\"x\"}}]},\"tool_calls\":\"none\",\"metadata\":[1]}",
        "{\"input\":\"q\",\"output\":\"a\",\"metadata\":{\"sql\":5,\"question\":[]},"
        "\"observations\":[{\"type\":\"tool\",\"name\":\"sql\",\"input\":{\"sql\":1}}],"
        "\"tool_calls\":[{\"function\":\"run_sql\"},{\"function\":{\"name\":\"sql\","
        "\"arguments\":\"[\\\"SELECT 1\\\"]\"}},5]}",
        "{\"input\":\"q\",\"output\":\"a\",\"metadata\":{\"sql\":{\"query\":\"SELECT (((\","
        "\"database\":7,\"execution_ms\":-3}},\"tags\":[1,{\"a\":\"=b\"},null],"
        "\"usage\":{\"input_tokens\":-5,\"output_tokens\":1e308,\"total_tokens\":\"x\"},"
        "\"start_time\":\"yesterday\",\"cost_usd\":\"free\"}",
        "{\"preferred\":{\"input\":\"q\",\"output\":\"a\"},\"non_preferred\":\"b\"}",
        "{\"preferred\":{\"input\":{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"c\","
        "\"content\":\"x\"}]},\"output\":\"a\"},\"non_preferred\":{\"output\":[]}}",
    };
    static const char *const inc[] = {"id", "metadata.sql.query", "tags", "input.messages.role"};
    (void)state;
    for (int f = 0; f < EXPORT_FORMAT_COUNT; f++) {
        bool sel = f == EXPORT_JSONL || f == EXPORT_JSON || f == EXPORT_CSV;
        for (int with_sel = 0; with_sel <= (sel ? 1 : 0); with_sel++) {
            export_writer *w =
                writer((export_format)f, with_sel ? inc : NULL, with_sel ? 4 : 0, NULL, 0, NULL);
            export_stats *stats = export_stats_new();
            eb_buf out = {0};
            export_writer_begin(w, &out);
            for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
                cJSON *r = parse(odd[i]);
                assert_int_equal(export_writer_record(w, r, &out, stats), EB_OK);
                cJSON_Delete(r);
            }
            export_writer_end(w, stats, &out);
            assert_int_equal(export_stats_records(stats) + export_stats_skipped(stats),
                             sizeof odd / sizeof odd[0]);
            if (f == EXPORT_CSV) {
                cJSON_Delete(csv_read(out.data));
            } else if (f == EXPORT_JSON) {
                cJSON *doc = cJSON_Parse(out.data);
                assert_non_null(doc);
                cJSON_Delete(doc);
            } else if (out.data) {
                cJSON_Delete(jsonl_lines(out.data));
            }
            cJSON *sj = export_stats_json(stats);
            char *text = eb_json_print(sj);
            assert_non_null(text);
            free(text);
            cJSON_Delete(sj);
            eb_buf_free(&out);
            export_stats_free(stats);
            export_writer_free(w);
        }
    }
    /* random bytes as SQL */
    unsigned seed = 12345;
    eb_buf sql = {0}, names = {0};
    static const char alphabet[] = "SELECT FROM JOIN INTO UPDATE WITH AS ( ) , . \"`[]'$-/*\n a b";
    for (int round = 0; round < 2000; round++) {
        eb_buf_reset(&sql);
        for (int i = 0; i < 80; i++) {
            seed = seed * 1103515245u + 12345u;
            if ((seed >> 16) % 5 == 0)
                eb_buf_putc(&sql, (char)((seed >> 8) % 255 + 1));
            else
                eb_buf_putc(&sql, alphabet[(seed >> 16) % (sizeof alphabet - 1)]);
        }
        eb_buf_reset(&names);
        size_t n = export_sql_tables(sql.data, &names);
        assert_true(n <= EXPORT_SQL_TABLES_MAX);
        (void)export_sql_query_type(sql.data);
    }
    eb_buf_free(&sql);
    eb_buf_free(&names);
}

/* ---------------------------------------------------------------- throughput */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ~2 KB trace records, 64 variants. */
static cJSON **synthetic(size_t n_variants, size_t *avg_bytes)
{
    static const char *const words[] = {"the",  "order", "shipped", "customer",  "refund",
                                        "café", "délai", "because", "warehouse", "\"quoted\""};
    cJSON **v = eb_calloc(n_variants, sizeof *v);
    size_t total = 0;
    for (size_t i = 0; i < n_variants; i++) {
        eb_buf in = {0}, out = {0};
        char over[4096];
        for (size_t k = 0; in.len < 1200; k++)
            eb_buf_printf(&in, "%s%s", k ? " " : "", words[(i * 7 + k * 3) % 10]);
        for (size_t k = 0; out.len < 300; k++)
            eb_buf_printf(&out, "%s%s", k ? " " : "", words[(i + k * 5) % 10]);
        cJSON *t = trace(NULL);
        cJSON *msgs = cJSON_GetObjectItem(cJSON_GetObjectItem(t, "input"), "messages");
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(msgs, 1), "content",
                                  cJSON_CreateString(in.data));
        msgs = cJSON_GetObjectItem(cJSON_GetObjectItem(t, "output"), "messages");
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(msgs, 0), "content",
                                  cJSON_CreateString(out.data));
        snprintf(over, sizeof over, "m-%zu", i % 5);
        cJSON_ReplaceItemInObject(t, "model", cJSON_CreateString(over));
        cJSON_ReplaceItemInObject(t, "cost_usd", cJSON_CreateNumber(0.000123 * (double)i));
        v[i] = t;
        char *p = cJSON_PrintUnformatted(t);
        total += strlen(p);
        free(p);
        eb_buf_free(&in);
        eb_buf_free(&out);
    }
    *avg_bytes = total / n_variants;
    return v;
}

static void test_throughput(void **state)
{
    static const export_format fmts[] = {EXPORT_JSONL, EXPORT_CSV, EXPORT_OPENAI_CHAT,
                                         EXPORT_ANTHROPIC, EXPORT_JSONL};
    const size_t n_fmts = sizeof fmts / sizeof fmts[0], rows = 100000, nv = 64;
    size_t avg = 0;
    cJSON **v = synthetic(nv, &avg);
    redactor *r = make_redactor(NULL, 0);
    (void)state;

    for (size_t f = 0; f < n_fmts; f++) {
        bool redacting = f == n_fmts - 1; /* the last run: jsonl with redaction */
        export_writer *w = writer(fmts[f], NULL, 0, NULL, 0, redacting ? r : NULL);
        export_stats *stats = export_stats_new();
        eb_buf out = {0};
        size_t bytes = 0;
        double t0 = now_s(), dt;
        for (size_t i = 0; i < rows; i++) {
            assert_int_equal(export_writer_record(w, v[i % nv], &out, stats), EB_OK);
            if (out.len > (1u << 20)) { /* as a worker would flush a part */
                bytes += out.len;
                eb_buf_reset(&out);
            }
        }
        dt = now_s() - t0;
        bytes += out.len;
        assert_int_equal(export_stats_records(stats), rows);
        printf("BENCH format=%s redact=%s rows=%zu record_bytes=%zu rows_per_s=%.0f "
               "out_MB_per_s=%.1f\n",
               export_format_name(fmts[f]), redacting ? "on" : "off", rows, avg, (double)rows / dt,
               (double)bytes / dt / 1e6);
        /* a floor that still holds under sanitizers; the target (50k rows/s) is for -O2 */
        assert_true((double)rows / dt > 5000);
        eb_buf_free(&out);
        export_stats_free(stats);
        export_writer_free(w);
    }
    for (size_t i = 0; i < nv; i++)
        cJSON_Delete(v[i]);
    free(v);
    redact_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_redaction_plain_values),
        cmocka_unit_test(test_jsonl_round_trip),
        cmocka_unit_test(test_jsonl_field_selection),
        cmocka_unit_test(test_writer_option_errors),
        cmocka_unit_test(test_json_document),
        cmocka_unit_test(test_csv_default),
        cmocka_unit_test(test_csv_neutralization),
        cmocka_unit_test(test_csv_include_exclude),
        cmocka_unit_test(test_openai_chat),
        cmocka_unit_test(test_openai_preference),
        cmocka_unit_test(test_openai_tools_flat),
        cmocka_unit_test(test_anthropic),
        cmocka_unit_test(test_sql_pairs),
        cmocka_unit_test(test_sql_tables),
        cmocka_unit_test(test_sql_fences),
        cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_redaction_json_text),
        cmocka_unit_test(test_redaction_numbers),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_odd_shapes),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
