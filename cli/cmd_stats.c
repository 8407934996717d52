/* cmd_stats.c -- `evalbus stats`: statistics of the data set a filter selects, from
 * GET /api/v1/datasets/statistics. The filter options are export's (cmd_export.c), sent as query
 * parameters; the answer's "statistics" object is printed as an indented tree of names and
 * values (its members are the server's to choose), or as JSON with --json.
 * Ownership: the filter and the answer are freed here. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NAME_WIDTH = 28 }; /* column of the values */

static const char stats_usage[] =
    "usage: evalbus stats [filters] [--format FMT]\n"
    "\n"
    "Statistics of the traces a filter selects (EVALBUS_URL, EVALBUS_API_KEY with scope\n"
    "exports:read): counts, skipped records by reason, and more, as an export of FMT would see\n"
    "them.\n"
    "\n"
    "filters (lists repeat the option: --model a --model b):\n"
    "  --since T, --until T   7d, 24h, 30m, 90s, 2w (back from now), YYYY-MM-DD, or RFC 3339\n"
    "  --project P  --model M  --provider P  --tag T\n"
    "  --status ok|error  --review accepted|rejected|needs_review|unreviewed\n"
    "  --successful-only\n"
    "options: --format jsonl|json|csv|openai-chat|openai-preference|anthropic|sql-pairs\n"
    "         --json prints the server's answer\n";

static void print_scalar(const cJSON *v)
{
    if (cJSON_IsString(v))
        fputs(v->valuestring, stdout);
    else if (cJSON_IsBool(v))
        fputs(cJSON_IsTrue(v) ? "true" : "false", stdout);
    else if (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble)
        printf("%lld", (long long)v->valuedouble);
    else if (cJSON_IsNumber(v))
        printf("%g", v->valuedouble);
    else
        fputs("-", stdout);
}

static bool is_scalar(const cJSON *v)
{
    return !cJSON_IsObject(v) && !cJSON_IsArray(v);
}

/* True if every member of o is a scalar (printed on one line). */
static bool flat(const cJSON *o)
{
    const cJSON *m;

    cJSON_ArrayForEach(m, o)
    {
        if (!is_scalar(m))
            return false;
    }
    return true;
}

static void print_tree(const char *name, const cJSON *v, int depth)
{
    int pad = NAME_WIDTH - 2 * depth;
    const cJSON *m;

    if (is_scalar(v)) {
        printf("%*s%-*s ", 2 * depth, "", pad > 0 ? pad : 0, name);
        print_scalar(v);
        putchar('\n');
        return;
    }
    if (cJSON_IsArray(v) && flat(v)) { /* a list of values: one line */
        printf("%*s%-*s ", 2 * depth, "", pad > 0 ? pad : 0, name);
        cJSON_ArrayForEach(m, v)
        {
            if (m != v->child)
                fputs(", ", stdout);
            print_scalar(m);
        }
        putchar('\n');
        return;
    }
    printf("%*s%s\n", 2 * depth, "", name);
    cJSON_ArrayForEach(m, v)
    {
        if (cJSON_IsObject(v)) {
            print_tree(m->string, m, depth + 1);
        } else if (cJSON_IsObject(m) && flat(m)) { /* a row: "- name: value, name: value" */
            const cJSON *f;
            printf("%*s- ", 2 * (depth + 1), "");
            cJSON_ArrayForEach(f, m)
            {
                printf("%s%s: ", f == m->child ? "" : ", ", f->string);
                print_scalar(f);
            }
            putchar('\n');
        } else {
            print_tree("-", m, depth + 1);
        }
    }
}

int cmd_stats(const cli_env *env, int argc, char **argv)
{
    static const struct option opts[] = {CLI_FILTER_OPTIONS,
                                         {"format", required_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    cJSON *filter = cJSON_CreateObject(), *answer = NULL;
    const cJSON *stats, *m;
    const char *format = NULL;
    char *query = NULL, *path = NULL;
    time_t now = time(NULL);
    int o, rc = CLI_OK;

    optind = 0;
    while (rc == CLI_OK && (o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == CLI_OPT_SCORE) {
            fprintf(stderr, "evalbus: stats does not filter by --score\n");
            rc = CLI_USAGE;
        } else if (o >= CLI_OPT_SINCE && o < CLI_OPT_FILTER_END) {
            rc = cli_filter_option(filter, o, optarg, now);
        } else if (o == 'f') {
            format = optarg;
            if (!cli_export_format_valid(format)) {
                fprintf(stderr, "evalbus: unknown format '%s'\n%s", format, stats_usage);
                rc = CLI_USAGE;
            }
        } else if (o == 'h') {
            fputs(stats_usage, stdout);
            goto cleanup;
        } else {
            fputs(stats_usage, stderr);
            rc = CLI_USAGE;
        }
    }
    if (rc != CLI_OK)
        goto cleanup;
    if (optind < argc) {
        fprintf(stderr, "evalbus: unexpected argument '%s'\n%s", argv[optind], stats_usage);
        rc = CLI_USAGE;
        goto cleanup;
    }
    query = cli_filter_query(filter, format);
    path = eb_asprintf("/api/v1/datasets/statistics%s%s", *query ? "?" : "", query);
    rc = cli_api(env, "GET", path, NULL, &answer);
    if (rc != CLI_OK)
        goto cleanup;
    if (env->json) {
        char *s = cJSON_Print(answer);
        puts(s ? s : "null");
        free(s);
        goto cleanup;
    }
    stats = cJSON_GetObjectItemCaseSensitive(answer, "statistics");
    if (!cJSON_IsObject(stats)) {
        fprintf(stderr, "evalbus: the answer has no statistics object\n");
        rc = CLI_FAILURE;
        goto cleanup;
    }
    cJSON_ArrayForEach(m, stats)
    {
        print_tree(m->string, m, 0);
    }
cleanup:
    cJSON_Delete(filter);
    cJSON_Delete(answer);
    free(query);
    free(path);
    return rc;
}
