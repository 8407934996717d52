/* cmd_keys.c -- API keys through the HTTP API (EVALBUS_URL, EVALBUS_API_KEY), and whoami. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char keys_usage[] =
    "usage: evalbus keys <command> [options]\n"
    "\n"
    "commands (use EVALBUS_URL and EVALBUS_API_KEY; the key needs the admin role):\n"
    "  create --name NAME --scopes S1,S2 [--role ROLE] [--project P] [--expires-at RFC3339]\n"
    "      create a key; the key is printed once, as the last line of standard output.\n"
    "      scopes: traces:write traces:read exports:write exports:read analytics:read admin\n"
    "      roles: viewer member (default) admin owner\n"
    "  list      list the team's keys (never their secrets)\n"
    "  revoke ID revoke a key; every service refuses it within a second\n"
    "\n"
    "options: --json prints the server's JSON answer\n";

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(it) ? it->valuestring : "-";
}

static void print_json(const cJSON *o)
{
    char *s = cJSON_Print(o);
    puts(s ? s : "null");
    free(s);
}

static int keys_create(const cli_env *env, int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"scopes", required_argument, NULL, 's'},
                                         {"role", required_argument, NULL, 'r'},
                                         {"project", required_argument, NULL, 'p'},
                                         {"expires-at", required_argument, NULL, 'x'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *name = NULL, *scopes = NULL, *role = NULL, *project = NULL, *expires = NULL;
    cJSON *body, *arr, *out = NULL;
    char *copy, *tok, *save = NULL;
    int o, rc;

    optind = 0;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'n':
            name = optarg;
            break;
        case 's':
            scopes = optarg;
            break;
        case 'r':
            role = optarg;
            break;
        case 'p':
            project = optarg;
            break;
        case 'x':
            expires = optarg;
            break;
        case 'h':
            fputs(keys_usage, stdout);
            return CLI_OK;
        default:
            fputs(keys_usage, stderr);
            return CLI_USAGE;
        }
    }
    if (!name || !scopes || optind < argc) {
        fprintf(stderr, "evalbus: keys create needs --name and --scopes\n");
        return CLI_USAGE;
    }
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    arr = cJSON_AddArrayToObject(body, "scopes");
    copy = eb_strdup(scopes);
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (*tok)
            cJSON_AddItemToArray(arr, cJSON_CreateString(tok));
    free(copy);
    if (role)
        cJSON_AddStringToObject(body, "role", role);
    if (project)
        cJSON_AddStringToObject(body, "project", project);
    if (expires)
        cJSON_AddStringToObject(body, "expires_at", expires);
    rc = cli_api(env, "POST", "/api/v1/keys", body, &out);
    cJSON_Delete(body);
    if (rc != CLI_OK)
        return rc;
    if (env->json) {
        print_json(out);
    } else {
        printf("id:      %s\nname:    %s\nrole:    %s\nprefix:  %s\nexpires: %s\n", str(out, "id"),
               str(out, "name"), str(out, "role"), str(out, "prefix"), str(out, "expires_at"));
        printf("The API key follows; it is shown only this once. Store it now.\n%s\n",
               str(out, "key"));
    }
    cJSON_Delete(out);
    return CLI_OK;
}

static int keys_list(const cli_env *env)
{
    cJSON *out = NULL;
    const cJSON *keys, *k;
    int rc = cli_api(env, "GET", "/api/v1/keys", NULL, &out);

    if (rc != CLI_OK)
        return rc;
    if (env->json) {
        print_json(out);
        cJSON_Delete(out);
        return CLI_OK;
    }
    printf("%-36s  %-10s  %-7s  %-24s  %-8s  %s\n", "ID", "PREFIX", "ROLE", "NAME", "STATE",
           "SCOPES");
    keys = cJSON_GetObjectItemCaseSensitive(out, "keys");
    cJSON_ArrayForEach(k, keys)
    {
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(k, "scopes"), *s;
        eb_buf scopes = {0};
        cJSON_ArrayForEach(s, sc)
        {
            if (scopes.len)
                eb_buf_putc(&scopes, ',');
            eb_buf_puts(&scopes, cJSON_IsString(s) ? s->valuestring : "?");
        }
        printf("%-36s  %-10s  %-7s  %-24.24s  %-8s  %s\n", str(k, "id"), str(k, "prefix"),
               str(k, "role"), str(k, "name"), str(k, "state"), scopes.data ? scopes.data : "");
        eb_buf_free(&scopes);
    }
    cJSON_Delete(out);
    return CLI_OK;
}

static int keys_revoke(const cli_env *env, const char *id)
{
    cJSON *out = NULL;
    char *path = eb_asprintf("/api/v1/keys/%s", id);
    int rc;

    for (const char *p = id; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || *p == '-')) {
            free(path);
            fprintf(stderr, "evalbus: '%s' is not a key id (see evalbus keys list)\n", id);
            return CLI_USAGE;
        }
    }
    rc = cli_api(env, "DELETE", path, NULL, &out);
    free(path);
    if (rc != CLI_OK)
        return rc;
    if (env->json)
        print_json(out);
    else
        printf("key %s revoked at %s\n", id, str(out, "revoked_at"));
    cJSON_Delete(out);
    return CLI_OK;
}

int cmd_keys(const cli_env *env, int argc, char **argv)
{
    if (argc < 2) {
        fputs(keys_usage, stderr);
        return CLI_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(keys_usage, stdout);
        return CLI_OK;
    }
    if (strcmp(argv[1], "create") == 0)
        return keys_create(env, argc - 1, argv + 1);
    if (cli_wants_help(argc, argv)) {
        fputs(keys_usage, stdout);
        return CLI_OK;
    }
    if (strcmp(argv[1], "list") == 0 && argc == 2)
        return keys_list(env);
    if (strcmp(argv[1], "revoke") == 0 && argc == 3)
        return keys_revoke(env, argv[2]);
    fprintf(stderr, "evalbus: bad keys command\n%s", keys_usage);
    return CLI_USAGE;
}

int cmd_whoami(const cli_env *env, int argc, char **argv)
{
    cJSON *out = NULL;
    int rc;

    if (cli_wants_help(argc, argv)) {
        puts("usage: evalbus whoami\n\nshows the team, role, scopes and rate limit of "
             "EVALBUS_API_KEY");
        return CLI_OK;
    }
    rc = cli_api(env, "GET", "/api/v1/auth/whoami", NULL, &out);
    if (rc == CLI_OK)
        print_json(out);
    cJSON_Delete(out);
    return rc;
}
