/* test_cli_export.c -- the pure helpers of `evalbus export` and `evalbus stats`: --since /
 * --until values, filter options into the API's filter object and the statistics query string,
 * the progress line, and the choice of the downloaded file's name. */
#include "cli.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define NOW ((time_t)1700000000) /* 2023-11-14T22:13:20Z */

typedef struct time_case {
    const char *arg;
    const char *want; /* NULL: refused */
} time_case;

static void test_time_arg(void **state)
{
    static const time_case cases[] = {
        {"7d", "2023-11-07T22:13:20Z"},
        {"24h", "2023-11-13T22:13:20Z"},
        {"30m", "2023-11-14T21:43:20Z"},
        {"90s", "2023-11-14T22:11:50Z"},
        {"2w", "2023-10-31T22:13:20Z"},
        {"0m", "2023-11-14T22:13:20Z"},
        {"36500d", "1923-12-09T22:13:20Z"},
        {"2024-05-01", "2024-05-01T00:00:00Z"},
        {"2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"},
        {"2024-05-01T12:00:00.5+02:00", "2024-05-01T12:00:00.5+02:00"}, /* kept as written */
        {"", NULL},
        {"7", NULL},
        {"d", NULL},
        {"7x", NULL},
        {"7D", NULL},
        {"-7d", NULL},
        {"7dd", NULL},
        {"7 d", NULL},
        {"99999999999d", NULL}, /* 11 digits */
        {"40000d", NULL},       /* beyond a century */
        {"2024-13-01", NULL},
        {"2024-05-01T12:00:00", NULL}, /* no offset */
        {"yesterday", NULL},
    };
    char out[CLI_TIME_LEN];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool ok = cli_time_arg(cases[i].arg, NOW, out);
        if (ok != (cases[i].want != NULL))
            fail_msg("'%s': expected %s", cases[i].arg, cases[i].want ? "accepted" : "refused");
        if (ok && strcmp(out, cases[i].want) != 0)
            fail_msg("'%s': got %s, want %s", cases[i].arg, out, cases[i].want);
    }
}

typedef struct opt_arg {
    int opt;
    const char *arg;
} opt_arg;

typedef struct filter_case {
    opt_arg opts[8];   /* ends at opt 0 */
    int rc;            /* of the last option */
    const char *json;  /* the filter object, when rc is CLI_OK */
    const char *query; /* cli_filter_query(filter, format) */
    const char *format;
} filter_case;

static void test_filters(void **state)
{
    static const filter_case cases[] = {
        {{{0, NULL}}, CLI_OK, "{}", "", NULL},
        {{{0, NULL}}, CLI_OK, "{}", "format=openai-chat", "openai-chat"},
        {{{CLI_OPT_SINCE, "7d"}, {CLI_OPT_UNTIL, "2023-11-14"}, {0, NULL}},
         CLI_OK,
         "{\"since\":\"2023-11-07T22:13:20Z\",\"until\":\"2023-11-14T00:00:00Z\"}",
         "since=2023-11-07T22%3A13%3A20Z&until=2023-11-14T00%3A00%3A00Z",
         NULL},
        {{{CLI_OPT_SINCE, "7d"}, {CLI_OPT_SINCE, "1h"}, {0, NULL}}, /* the last one counts */
         CLI_OK,
         "{\"since\":\"2023-11-14T21:13:20Z\"}",
         "since=2023-11-14T21%3A13%3A20Z",
         NULL},
        {{{CLI_OPT_MODEL, "gpt-4o"},
          {CLI_OPT_MODEL, "claude 3/opus"},
          {CLI_OPT_MODEL, "gpt-4o"}, /* twice: once */
          {CLI_OPT_PROJECT, "web&app"},
          {CLI_OPT_STATUS, "error"},
          {CLI_OPT_REVIEW, "needs_review"},
          {CLI_OPT_TAG, "a=b"},
          {0, NULL}},
         CLI_OK,
         "{\"models\":[\"gpt-4o\",\"claude 3/opus\"],\"projects\":[\"web&app\"],\"statuses\":["
         "\"error\"],\"review_states\":[\"needs_review\"],\"tags\":[\"a=b\"]}",
         "project=web%26app&model=gpt-4o&model=claude%203%2Fopus&status=error&review_state="
         "needs_review&tag=a%3Db&format=csv",
         "csv"},
        {{{CLI_OPT_PROVIDER, "openai"}, {CLI_OPT_SUCCESSFUL_ONLY, NULL}, {0, NULL}},
         CLI_OK,
         "{\"providers\":[\"openai\"],\"successful_only\":true}",
         "provider=openai&successful_only=true",
         NULL},
        {{{CLI_OPT_SCORE, "quality:0.8:"}, {0, NULL}},
         CLI_OK,
         "{\"score\":{\"name\":\"quality\",\"min\":0.8}}",
         "", /* not a statistics parameter */
         NULL},
        {{{CLI_OPT_SCORE, "quality::0.25"}, {0, NULL}},
         CLI_OK,
         "{\"score\":{\"name\":\"quality\",\"max\":0.25}}",
         "",
         NULL},
        {{{CLI_OPT_SCORE, "eval:helpful:-1:1e2"}, {0, NULL}}, /* a name with a colon */
         CLI_OK,
         "{\"score\":{\"name\":\"eval:helpful\",\"min\":-1,\"max\":100}}",
         "",
         NULL},
        {{{CLI_OPT_SCORE, "q:1:1"}, {0, NULL}},
         CLI_OK,
         "{\"score\":{\"name\":\"q\",\"min\":1,\"max\":1}}",
         "",
         NULL},
        {{{CLI_OPT_SCORE, "q::"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_SCORE, ":0:1"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_SCORE, "q:2:1"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_SCORE, "q:x:1"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_SCORE, "q:inf:"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_SCORE, "q:0.5"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_SCORE, "q"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_SCORE, "a:0:"}, {CLI_OPT_SCORE, "b:0:"}, {0, NULL}},
         CLI_USAGE,
         NULL,
         NULL,
         NULL},
        {{{CLI_OPT_STATUS, "failed"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_REVIEW, "approved"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_PROJECT, ""}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
        {{{CLI_OPT_SINCE, "last week"}, {0, NULL}}, CLI_USAGE, NULL, NULL, NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const filter_case *c = &cases[i];
        cJSON *filter = cJSON_CreateObject();
        int rc = CLI_OK;
        char *json, *query;

        for (const opt_arg *o = c->opts; o->opt && rc == CLI_OK; o++)
            rc = cli_filter_option(filter, o->opt, o->arg, NOW);
        if (rc != c->rc)
            fail_msg("case %zu: rc %d, want %d", i, rc, c->rc);
        if (rc == CLI_OK) {
            json = cJSON_PrintUnformatted(filter);
            query = cli_filter_query(filter, c->format);
            if (strcmp(json, c->json) != 0)
                fail_msg("case %zu: filter %s\n want %s", i, json, c->json);
            if (strcmp(query, c->query) != 0)
                fail_msg("case %zu: query %s\n want %s", i, query, c->query);
            free(json);
            free(query);
        }
        cJSON_Delete(filter);
    }
}

static void test_formats(void **state)
{
    static const char *const good[] = {
        "jsonl", "json", "csv", "openai-chat", "openai-preference", "anthropic", "sql-pairs"};
    static const char *const bad[] = {"", "JSONL", "parquet", "openai", "jsonl "};

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(cli_export_format_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(cli_export_format_valid(bad[i]));
}

typedef struct progress_case {
    const char *job;
    int width;
    const char *want; /* NULL: only check the width */
} progress_case;

static void test_progress_line(void **state)
{
    static const char running[] =
        "{\"state\":\"running\",\"progress\":{\"rows\":1234567,\"bytes\":123400000,"
        "\"total_rows\":2469134,\"percent\":50,\"rows_per_second\":12345.4,\"eta_seconds\":"
        "65}}";
    static const progress_case cases[] = {
        {running, 0, "running: 50.0%, 1,234,567 rows, 123.4 MB, 12,345 rows/s, ETA 1m05s"},
        {running, 120, /* bars of 30, 20, 15 or 10 */
         "[===============>              ]   50.0%  1,234,567 rows  123.4 MB  12,345 rows/s  "
         "ETA 1m05s"},
        {running, 90,
         "[==========>         ]   50.0%  1,234,567 rows  123.4 MB  12,345 rows/s  ETA 1m05s"},
        {running, 80,
         "[=======>       ]   50.0%  1,234,567 rows  123.4 MB  12,345 rows/s  ETA 1m05s"},
        {running, 70, /* no room for a bar of 10 */
         "running   50.0%  1,234,567 rows  123.4 MB  12,345 rows/s  ETA 1m05s"},
        {running, 60, "running   50.0%  1,234,567 rows  123.4 MB  12,345 rows/s  E"}, /* cut */
        {running, 20, NULL},
        {running, 1, ""},
        /* percent missing: from rows and total_rows; ETA -1 is unknown */
        {"{\"state\":\"running\",\"progress\":{\"rows\":25,\"bytes\":999,\"total_rows\":100,"
         "\"eta_seconds\":-1}}",
         0, "running: 25.0%, 25 rows, 999 B"},
        /* no total: no percent, no bar */
        {"{\"state\":\"running\",\"progress\":{\"rows\":0,\"bytes\":0}}", 80,
         "running  0 rows  0 B"},
        {"{\"state\":\"running\",\"progress\":{\"rows\":10,\"percent\":100}}", 40,
         "[====================]  100.0%  10 rows"},
        {"{\"state\":\"running\",\"progress\":{\"rows\":0,\"percent\":0}}", 40,
         "[>                   ]    0.0%  0 rows"},
        {"{\"state\":\"running\",\"progress\":{\"percent\":250}}", 0, "running: 100.0%"},
        {"{\"state\":\"queued\",\"progress\":{\"rows\":0,\"bytes\":0}}", 0, "queued"},
        {"{\"state\":\"queued\",\"progress\":{\"rows\":0,\"bytes\":0}}", 80, "queued"},
        {"{\"state\":\"succeeded\",\"progress\":{\"rows\":1000,\"bytes\":4500000000,"
         "\"percent\":100,\"rows_per_second\":9,\"eta_seconds\":0}}",
         0, "succeeded: 1,000 rows, 4.5 GB"},
        {"{\"state\":\"running\",\"progress\":{\"rows\":1,\"eta_seconds\":7322}}", 0,
         "running: 1 rows, ETA 2h02m"},
        {"{\"state\":\"running\",\"progress\":{\"rows\":1,\"eta_seconds\":190000}}", 0,
         "running: 1 rows, ETA 2d04h"},
        {"{\"state\":\"running\",\"progress\":{\"bytes\":999960}}", 0, "running: 1.0 MB"},
        {"{\"state\":\"running\",\"progress\":{\"rows\":-5,\"bytes\":\"x\"}}", 0,
         "running: ? rows"},
        {"{\"progress\":null}", 0, "?"},
    };
    char out[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *job = cJSON_Parse(cases[i].job);

        assert_non_null(job);
        cli_export_progress_line(job, cases[i].width, out, sizeof(out));
        if (cases[i].want && strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: got  '%s'\n want '%s'", i, out, cases[i].want);
        if (cases[i].width > 0 && strlen(out) > (size_t)cases[i].width - 1)
            fail_msg("case %zu: '%s' is wider than %d", i, out, cases[i].width - 1);
        cJSON_Delete(job);
    }
    /* a small buffer is never overrun */
    {
        cJSON *job = cJSON_Parse(running);
        char small[8];
        cli_export_progress_line(job, 0, small, sizeof(small));
        assert_string_equal(small, "running");
        cJSON_Delete(job);
    }
}

typedef struct target_case {
    const char *out;
    bool is_dir;
    const char *job;
    const char *want;
} target_case;

static void test_target_path(void **state)
{
#define ID "0d7f6f5e-8a55-4f5e-a3f6-1a1e2b9e7c11"
    static const target_case cases[] = {
        {"data.jsonl.gz", false, "{\"result\":{\"file_name\":\"x.jsonl.gz\"}}", "data.jsonl.gz"},
        {"out", true, "{\"result\":{\"file_name\":\"traces-2025.jsonl.gz\"}}",
         "out/traces-2025.jsonl.gz"},
        {"out/", true, "{\"result\":{\"file_name\":\"t.csv\"}}", "out/t.csv"},
        {"/", true, "{\"result\":{\"file_name\":\"t.csv\"}}", "/t.csv"},
        /* missing or unsafe names: generated from id, format and compression */
        {".", true, "{\"id\":\"" ID "\",\"format\":\"openai-chat\",\"compression\":\"gzip\"}",
         "./export-" ID ".jsonl.gz"},
        {".", true,
         "{\"id\":\"" ID "\",\"format\":\"csv\",\"compression\":\"zstd\",\"result\":{\"file_"
         "name\":\"../../etc/passwd\"}}",
         "./export-" ID ".csv.zst"},
        {".", true,
         "{\"id\":\"" ID "\",\"format\":\"json\",\"compression\":\"none\",\"result\":{\"file_"
         "name\":\".bashrc\"}}",
         "./export-" ID ".json"},
        {"d", true,
         "{\"id\":\"" ID "\",\"format\":\"jsonl\",\"compression\":\"gzip\",\"result\":{\"file_"
         "name\":\"a\\nb\"}}",
         "d/export-" ID ".jsonl.gz"},
        {"d", true, "{\"id\":\"../x\",\"format\":\"?\",\"result\":{\"file_name\":\"\"}}",
         "d/export-unknown"},
        {"d", true, "{\"result\":{\"file_name\":\"a\\\\b\"}}", "d/export-unknown"},
    };
#undef ID

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *job = cJSON_Parse(cases[i].job);
        char *path;

        assert_non_null(job);
        path = cli_export_target_path(cases[i].out, cases[i].is_dir, job);
        if (strcmp(path, cases[i].want) != 0)
            fail_msg("case %zu: got %s, want %s", i, path, cases[i].want);
        free(path);
        cJSON_Delete(job);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_arg),    cmocka_unit_test(test_filters),
        cmocka_unit_test(test_formats),     cmocka_unit_test(test_progress_line),
        cmocka_unit_test(test_target_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
