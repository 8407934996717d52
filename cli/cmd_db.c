/* cmd_db.c -- database maintenance: apply every service's migrations, check health. */
#include "cli.h"
#include "evalbus/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const eb_migration eb_migrations_auth[];
extern const size_t eb_migrations_auth_count;

typedef struct schema_migrations {
    const char *schema;
    const eb_migration *list;
    const size_t *count;
} schema_migrations;

static const schema_migrations all_schemas[] = {
    {"auth", eb_migrations_auth, &eb_migrations_auth_count},
};

static const char db_usage[] =
    "usage: evalbus db <command>\n"
    "\n"
    "commands (use EVALBUS_DATABASE_URL):\n"
    "  migrate   apply every service's pending migrations (safe to run any time; replicas\n"
    "            starting at the same moment wait for each other)\n"
    "  health    connect, run a query and count each schema's applied migrations (exit 6 if\n"
    "            unreachable)\n";

int cmd_db(const cli_env *env, int argc, char **argv)
{
    PGconn *c;
    int rc = CLI_OK;

    if (argc < 2 || cli_wants_help(argc, argv)) {
        fputs(db_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "migrate") != 0 && strcmp(argv[1], "health") != 0) {
        fprintf(stderr, "evalbus: unknown db command '%s'\n%s", argv[1], db_usage);
        return CLI_USAGE;
    }
    if (!env->database_url || !*env->database_url) {
        fprintf(stderr, "evalbus: set EVALBUS_DATABASE_URL\n");
        return CLI_USAGE;
    }
    c = PQconnectdb(env->database_url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "evalbus: cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        return CLI_UNAVAILABLE;
    }
    for (size_t i = 0; i < sizeof(all_schemas) / sizeof(all_schemas[0]); i++) {
        const schema_migrations *s = &all_schemas[i];
        if (strcmp(argv[1], "migrate") == 0) {
            int applied = 0;
            eb_status st = eb_db_migrate(c, s->schema, s->list, *s->count, &applied);
            if (st != EB_OK) {
                fprintf(stderr, "evalbus: %s\n", eb_error_message());
                rc = cli_exit_for(st);
                break;
            }
            printf("%-10s %d applied, %zu in total\n", s->schema, applied, *s->count);
        } else {
            char *sql = eb_asprintf("SELECT count(*) FROM %s.schema_migrations", s->schema);
            PGresult *r = PQexec(c, sql);
            free(sql);
            if (PQresultStatus(r) != PGRES_TUPLES_OK)
                printf("%-10s not migrated (run: evalbus db migrate)\n", s->schema);
            else
                printf("%-10s %s of %zu migrations applied\n", s->schema, PQgetvalue(r, 0, 0),
                       *s->count);
            PQclear(r);
        }
    }
    if (rc == CLI_OK && strcmp(argv[1], "health") == 0) {
        PGresult *r = PQexec(c, "SELECT version()");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            printf("postgres   ok: %.60s\n", PQgetvalue(r, 0, 0));
        else
            rc = CLI_UNAVAILABLE;
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}
