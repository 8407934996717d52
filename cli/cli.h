/* cli.h -- shared pieces of the evalbus command-line tool. */
#ifndef EVALBUS_CLI_H
#define EVALBUS_CLI_H

#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <cjson/cJSON.h>
#include <stdbool.h>

/* Exit codes scripts can rely on (documented in docs/cli.md). */
enum {
    CLI_OK = 0,
    CLI_FAILURE = 1,
    CLI_USAGE = 2,
    CLI_CONFLICT = 3,
    CLI_NOT_FOUND = 4,
    CLI_DENIED = 5,
    CLI_UNAVAILABLE = 6,
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

int cmd_admin(const cli_env *env, int argc, char **argv);
int cmd_keys(const cli_env *env, int argc, char **argv);
int cmd_db(const cli_env *env, int argc, char **argv);
int cmd_whoami(const cli_env *env, int argc, char **argv);

/* True if argv has --help or -h. */
bool cli_wants_help(int argc, char **argv);

#endif
