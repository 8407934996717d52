/* cli.h -- shared pieces of the evalbus command-line tool. */
#ifndef EVALBUS_CLI_H
#define EVALBUS_CLI_H

#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Exit codes scripts can rely on (documented in docs/cli.md). */
enum {
    CLI_OK = 0,
    CLI_FAILURE = 1,
    CLI_USAGE = 2,
    CLI_CONFLICT = 3,
    CLI_NOT_FOUND = 4,
    CLI_DENIED = 5,
    CLI_UNAVAILABLE = 6,
    CLI_INTERRUPTED = 130, /* Ctrl-C (SIGINT), as a shell reports a process it killed */
};

typedef struct cli_env {
    const char *url;          /* EVALBUS_URL */
    const char *api_key;      /* EVALBUS_API_KEY */
    const char *database_url; /* EVALBUS_DATABASE_URL */
    const char *nats_url;     /* EVALBUS_NATS_URL (optional) */
    bool json;                /* --json: print raw JSON answers */
} cli_env;

/* Exit code for an eb_status. */
int cli_exit_for(eb_status st);
/* Exit code for an HTTP status. */
int cli_exit_for_http(long code);

/* Calls the API: method path with an optional JSON body. On a 2xx *out gets the parsed answer
 * (may be NULL for an empty body). On an error prints "evalbus: <message>" to stderr and returns
 * the exit code. */
int cli_api(const cli_env *env, const char *method, const char *path, const cJSON *body,
            cJSON **out);
/* Prints an error answer of the API to stderr, as cli_api does: "evalbus: <message> (<status>
 * <code>)" for a JSON error body, else "evalbus: the server answered <status>". */
void cli_print_api_error(long code, const char *body, size_t len);
/* Sets a function cli_api and cli_print_api_error call before printing an error, so a command
 * drawing a progress line on stderr can end the line first; NULL for none. */
void cli_set_error_hook(void (*hook)(void));

int cmd_admin(const cli_env *env, int argc, char **argv);
int cmd_keys(const cli_env *env, int argc, char **argv);
int cmd_db(const cli_env *env, int argc, char **argv);
int cmd_whoami(const cli_env *env, int argc, char **argv);
int cmd_export(const cli_env *env, int argc, char **argv);
int cmd_stats(const cli_env *env, int argc, char **argv);

/* Dataset filter options, shared by export and stats (cmd_export.c). CLI_FILTER_OPTIONS gives
 * their getopt_long entries (include <getopt.h>); getopt_long returns the CLI_OPT_* values. */
enum {
    CLI_OPT_SINCE = 0x100,
    CLI_OPT_UNTIL,
    CLI_OPT_PROJECT,
    CLI_OPT_MODEL,
    CLI_OPT_PROVIDER,
    CLI_OPT_STATUS,
    CLI_OPT_REVIEW,
    CLI_OPT_TAG,
    CLI_OPT_SCORE,
    CLI_OPT_SUCCESSFUL_ONLY,
    CLI_OPT_FILTER_END,
};
/* clang-format off */
#define CLI_FILTER_OPTIONS                                        \
    {"since", required_argument, NULL, CLI_OPT_SINCE},            \
    {"until", required_argument, NULL, CLI_OPT_UNTIL},            \
    {"project", required_argument, NULL, CLI_OPT_PROJECT},        \
    {"model", required_argument, NULL, CLI_OPT_MODEL},            \
    {"provider", required_argument, NULL, CLI_OPT_PROVIDER},      \
    {"status", required_argument, NULL, CLI_OPT_STATUS},          \
    {"review", required_argument, NULL, CLI_OPT_REVIEW},          \
    {"tag", required_argument, NULL, CLI_OPT_TAG},                \
    {"score", required_argument, NULL, CLI_OPT_SCORE},            \
    {"successful-only", no_argument, NULL, CLI_OPT_SUCCESSFUL_ONLY}
/* clang-format on */

/* Room for an RFC 3339 date-time and its NUL. */
#define CLI_TIME_LEN 41
/* Reads a --since / --until value: a duration back from now (7d, 24h, 30m, 90s, 2w), a date
 * (YYYY-MM-DD, midnight UTC) or an RFC 3339 date-time (kept as written). False if it is none. */
bool cli_time_arg(const char *arg, time_t now, char out[CLI_TIME_LEN]);
/* Adds one filter option (opt in [CLI_OPT_SINCE, CLI_OPT_FILTER_END)) to the filter object of
 * the export API. CLI_OK, or CLI_USAGE after printing why the value is wrong. */
int cli_filter_option(cJSON *filter, int opt, const char *arg, time_t now);
/* The query string (no '?') of GET /api/v1/datasets/statistics for filter and format (NULL for
 * none), lists as repeated parameters. The caller frees. */
char *cli_filter_query(const cJSON *filter, const char *format);
/* True if format is an export format (jsonl, json, csv, openai-chat, ...). */
bool cli_export_format_valid(const char *format);

/* Pure helpers of `export`, declared for tests/unit/test_cli_export.c. */
/* The progress of a job object as one line: with width > 0, for a terminal of that many columns
 * (a bar, at most width - 1 characters); with width 0, plain text. Writes at most cap bytes. */
void cli_export_progress_line(const cJSON *job, int width, char *out, size_t cap);
/* Where to save a succeeded job's file: out itself, or when out_is_dir the job's
 * result.file_name inside out (a generated name if the server's is missing or unsafe). The
 * caller frees. */
char *cli_export_target_path(const char *out, bool out_is_dir, const cJSON *job);

/* True if argv has --help or -h. */
bool cli_wants_help(int argc, char **argv);

#endif
