/* cmd_admin.c -- operator commands that talk to PostgreSQL directly (EVALBUS_DATABASE_URL):
 * bootstrap (first team, owner, API key) and set-tier. set-tier also broadcasts a cache drop on
 * NATS when EVALBUS_NATS_URL is set, so the new limits apply within a second. */
#include "auth_int.h"
#include "auth_revoke.h"
#include "cli.h"
#include "evalbus/bus.h"
#include "evalbus/db.h"
#include "password.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const eb_migration eb_migrations_auth[];
extern const size_t eb_migrations_auth_count;

static const char admin_usage[] =
    "usage: evalbus admin <command> [options]\n"
    "\n"
    "commands (use EVALBUS_DATABASE_URL):\n"
    "  bootstrap --team NAME --email EMAIL --password-file FILE [--tier TIER]\n"
    "      create a team, its owner and an owner API key; the key is printed once, as the\n"
    "      last line of standard output (exit 3 if the team exists)\n"
    "  set-tier --team NAME --tier free|pro|enterprise\n"
    "      change a team's rate-limit tier (exit 4 if there is no such team)\n";

static int read_password(const char *path, char **out)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    eb_buf b = {0};
    char chunk[1024];
    size_t n;

    if (!f) {
        fprintf(stderr, "evalbus: cannot read password file %s\n", path);
        return CLI_USAGE;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < 4096)
        eb_buf_append(&b, chunk, n);
    if (f != stdin)
        fclose(f);
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.data[--b.len] = '\0';
    *out = eb_buf_steal(&b);
    return CLI_OK;
}

static PGconn *connect_db(const cli_env *env, int *rc)
{
    PGconn *c;

    if (!env->database_url || !*env->database_url) {
        fprintf(stderr, "evalbus: set EVALBUS_DATABASE_URL (scripts/stack writes it to "
                        "var/stack.env)\n");
        *rc = CLI_USAGE;
        return NULL;
    }
    c = PQconnectdb(env->database_url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "evalbus: cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        *rc = CLI_UNAVAILABLE;
        return NULL;
    }
    return c;
}

static int bootstrap(const cli_env *env, int argc, char **argv)
{
    static const struct option opts[] = {{"team", required_argument, NULL, 't'},
                                         {"email", required_argument, NULL, 'e'},
                                         {"password-file", required_argument, NULL, 'p'},
                                         {"tier", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *team = NULL, *email = NULL, *pwfile = NULL;
    const char *tier = getenv("EVALBUS_DEFAULT_TIER");
    const char *cost_s = getenv("EVALBUS_PASSWORD_COST");
    char *password = NULL, *key = NULL, *team_id = NULL;
    int cost = cost_s ? atoi(cost_s) : 15;
    int o, rc = CLI_OK;
    PGconn *c = NULL;
    eb_status st;

    optind = 0;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 't':
            team = optarg;
            break;
        case 'e':
            email = optarg;
            break;
        case 'p':
            pwfile = optarg;
            break;
        case 'r':
            tier = optarg;
            break;
        case 'h':
            fputs(admin_usage, stdout);
            return CLI_OK;
        default:
            fputs(admin_usage, stderr);
            return CLI_USAGE;
        }
    }
    if (!team || !email || !pwfile || optind < argc) {
        fprintf(stderr, "evalbus: admin bootstrap needs --team, --email and --password-file\n");
        return CLI_USAGE;
    }
    if (cost < 10 || cost > 20)
        cost = 15;
    rc = read_password(pwfile, &password);
    if (rc != CLI_OK)
        goto cleanup;
    c = connect_db(env, &rc);
    if (!c)
        goto cleanup;
    st = eb_db_migrate(c, "auth", eb_migrations_auth, eb_migrations_auth_count, NULL);
    if (st == EB_OK)
        st = auth_admin_bootstrap(c, team, email, password, tier ? tier : "free", cost, &key,
                                  &team_id);
    if (st != EB_OK) {
        fprintf(stderr, "evalbus: %s\n", eb_error_message());
        rc = st == EB_ERR_INVALID ? CLI_USAGE : cli_exit_for(st);
        goto cleanup;
    }
    printf("team:  %s (%s)\nowner: %s\n", team, team_id, email);
    printf("The owner's API key follows; it is shown only this once. Store it now.\n%s\n", key);
cleanup:
    if (password)
        memset(password, 0, strlen(password));
    free(password);
    free(key);
    free(team_id);
    if (c)
        PQfinish(c);
    return rc;
}

static int set_tier(const cli_env *env, int argc, char **argv)
{
    static const struct option opts[] = {{"team", required_argument, NULL, 't'},
                                         {"tier", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *team = NULL, *tier = NULL;
    char team_id[41];
    int o, rc = CLI_OK;
    PGconn *c;
    eb_status st;

    optind = 0;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 't':
            team = optarg;
            break;
        case 'r':
            tier = optarg;
            break;
        case 'h':
            fputs(admin_usage, stdout);
            return CLI_OK;
        default:
            fputs(admin_usage, stderr);
            return CLI_USAGE;
        }
    }
    if (!team || !tier || optind < argc) {
        fprintf(stderr, "evalbus: admin set-tier needs --team and --tier\n");
        return CLI_USAGE;
    }
    if (!auth_tier_valid(tier)) {
        fprintf(stderr, "evalbus: tier '%s' is not one of free, pro, enterprise\n", tier);
        return CLI_USAGE;
    }
    c = connect_db(env, &rc);
    if (!c)
        return rc;
    st = auth_admin_set_tier(c, team, tier, team_id);
    PQfinish(c);
    if (st != EB_OK) {
        fprintf(stderr, "evalbus: %s\n", eb_error_message());
        return cli_exit_for(st);
    }
    if (env->nats_url && *env->nats_url) {
        eb_bus *bus = NULL;
        if (eb_bus_connect(NULL, env->nats_url, "evalbus-cli", 2000, &bus) == EB_OK &&
            auth_publish_revoked(eb_bus_conn(bus), team_id, NULL, NULL, true) == EB_OK)
            printf("caches told to reload team %s\n", team);
        else
            fprintf(stderr,
                    "evalbus: warning: could not broadcast the change on NATS (%s); it "
                    "applies when cached credentials expire\n",
                    eb_error_message());
        eb_bus_close(bus);
    }
    printf("team %s is now on the %s tier\n", team, tier);
    return CLI_OK;
}

int cmd_admin(const cli_env *env, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(admin_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "bootstrap") == 0)
        return bootstrap(env, argc - 1, argv + 1);
    if (strcmp(argv[1], "set-tier") == 0)
        return set_tier(env, argc - 1, argv + 1);
    fprintf(stderr, "evalbus: unknown admin command '%s'\n%s", argv[1], admin_usage);
    return CLI_USAGE;
}
