/* main.c -- the evalbus command-line tool: global options, then one command.
 * Settings come from the environment (EVALBUS_URL, EVALBUS_API_KEY, EVALBUS_DATABASE_URL,
 * EVALBUS_NATS_URL) and may be overridden by global flags before the command. Exit codes are
 * listed in cli.h and docs/cli.md. */
#include "cli.h"
#include "evalbus/log.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: evalbus [--url URL] [--api-key KEY] [--json] <command> [args]\n"
    "\n"
    "commands:\n"
    "  admin bootstrap|set-tier   operator commands (EVALBUS_DATABASE_URL)\n"
    "  keys create|list|revoke    API keys (EVALBUS_URL, EVALBUS_API_KEY)\n"
    "  db migrate|health          database schema and health (EVALBUS_DATABASE_URL)\n"
    "  whoami                     who the API key is\n"
    "  export --format FMT ...    export traces as a data set (EVALBUS_URL, EVALBUS_API_KEY)\n"
    "  export list|status|cancel|download   manage exports\n"
    "  stats                      statistics of the traces a filter selects\n"
    "\n"
    "environment: EVALBUS_URL (default http://127.0.0.1:8080), EVALBUS_API_KEY,\n"
    "  EVALBUS_DATABASE_URL, EVALBUS_NATS_URL\n"
    "exit codes: 0 ok, 1 failure, 2 usage, 3 conflict, 4 not found, 5 unauthenticated or\n"
    "  forbidden, 6 unavailable, 130 interrupted (Ctrl-C)\n"
    "`evalbus <command> --help` describes each command.\n";

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    cli_env env = {0};
    const char *url = getenv("EVALBUS_URL");
    int i = 1, rc;
    char *trimmed = NULL;

    /* --json may stand anywhere: take it out before the commands parse their options. */
    for (int k = 1; k < argc; k++) {
        if (strcmp(argv[k], "--json") == 0) {
            env.json = true;
            for (int m = k; m < argc - 1; m++)
                argv[m] = argv[m + 1];
            argc--;
            k--;
        }
    }
    eb_log_init("evalbus", "error"); /* library warnings (e.g. NATS reconnects) stay quiet */
    env.api_key = getenv("EVALBUS_API_KEY");
    env.database_url = getenv("EVALBUS_DATABASE_URL");
    env.nats_url = getenv("EVALBUS_NATS_URL");
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            fputs(usage, stdout);
            return CLI_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            puts("evalbus 0.1.0");
            return CLI_OK;
        } else if (strcmp(argv[i], "--json") == 0) {
            env.json = true;
        } else if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) {
            url = argv[++i];
        } else if (strcmp(argv[i], "--api-key") == 0 && i + 1 < argc) {
            env.api_key = argv[++i];
        } else {
            fprintf(stderr, "evalbus: unknown option %s\n%s", argv[i], usage);
            return CLI_USAGE;
        }
    }
    if (i >= argc) {
        fputs(usage, stderr);
        return CLI_USAGE;
    }
    trimmed = eb_strdup(url && *url ? url : "http://127.0.0.1:8080");
    while (*trimmed && trimmed[strlen(trimmed) - 1] == '/')
        trimmed[strlen(trimmed) - 1] = '\0';
    env.url = trimmed;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (strcmp(argv[i], "admin") == 0)
        rc = cmd_admin(&env, argc - i, argv + i);
    else if (strcmp(argv[i], "keys") == 0)
        rc = cmd_keys(&env, argc - i, argv + i);
    else if (strcmp(argv[i], "db") == 0)
        rc = cmd_db(&env, argc - i, argv + i);
    else if (strcmp(argv[i], "whoami") == 0)
        rc = cmd_whoami(&env, argc - i, argv + i);
    else if (strcmp(argv[i], "export") == 0)
        rc = cmd_export(&env, argc - i, argv + i);
    else if (strcmp(argv[i], "stats") == 0)
        rc = cmd_stats(&env, argc - i, argv + i);
    else {
        fprintf(stderr, "evalbus: unknown command '%s'\n%s", argv[i], usage);
        rc = CLI_USAGE;
    }
    curl_global_cleanup();
    free(trimmed);
    return rc;
}
