/* admin.c -- operator commands that run straight against PostgreSQL (the evalbus CLI uses
 * them): bootstrap a team with its owner and first key, change a team's tier. They run in
 * system transactions since no team credential exists yet. */
#include "apikey.h"
#include "auth_int.h"
#include "evalbus/crypto.h"
#include "evalbus/mem.h"
#include "password.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

eb_status auth_admin_bootstrap(PGconn *conn, const char *slug, const char *email,
                               const char *password, const char *default_tier, int password_cost,
                               char **key_out, char **team_id_out)
{
    eb_status st;
    char *phash = NULL;
    char key[APIKEY_MAX], prefix[APIKEY_PREFIX_LEN + 1], khash[65];
    char team_id[41] = "", user_id[41] = "", key_id[41] = "";
    PGresult *r = NULL;
    password_params pp = PASSWORD_DEFAULT_PARAMS;
    cJSON *detail = NULL;
    eb_principal actor = {0};

    *key_out = NULL;
    if (team_id_out)
        *team_id_out = NULL;
    if (!auth_slug_valid(slug))
        return eb_error(EB_ERR_INVALID,
                        "team name '%s' is not valid: use 1-63 lowercase letters,"
                        " digits and '-', not starting with '-'",
                        slug);
    if (!auth_email_valid(email))
        return eb_error(EB_ERR_INVALID, "'%s' is not a valid e-mail address", email);
    if (!auth_tier_valid(default_tier))
        return eb_error(EB_ERR_INVALID, "tier '%s' is not one of free, pro, enterprise",
                        default_tier);
    pp.log2_n = password_cost;
    st = password_hash(password, pp, &phash);
    if (st != EB_OK)
        return st;
    apikey_generate(key, prefix);
    apikey_hash_hex(key, khash);

    st = eb_db_begin_system(conn);
    if (st != EB_OK)
        goto cleanup;
    {
        const char *p[3] = {slug, slug, default_tier};
        st = eb_db_exec(conn,
                        "INSERT INTO auth.teams (slug, name, tier) VALUES ($1, $2, $3)"
                        " RETURNING id",
                        3, p, &r);
        if (st == EB_ERR_CONFLICT)
            st = eb_error(EB_ERR_CONFLICT, "team '%s' already exists", slug);
        if (st != EB_OK)
            goto cleanup;
        snprintf(team_id, sizeof(team_id), "%s", eb_db_val(r, 0, 0));
        PQclear(r);
        r = NULL;
    }
    {
        /* An existing user (same e-mail) becomes the owner; the password must match. */
        const char *p[1] = {email};
        st = eb_db_exec(conn,
                        "SELECT id, password_hash FROM auth.users WHERE lower(email) ="
                        " lower($1)",
                        1, p, &r);
        if (st != EB_OK)
            goto cleanup;
        if (PQntuples(r) > 0) {
            if (!password_verify(password, eb_db_val(r, 0, 1))) {
                st = eb_error(EB_ERR_CONFLICT, "user %s exists with another password", email);
                goto cleanup;
            }
            snprintf(user_id, sizeof(user_id), "%s", eb_db_val(r, 0, 0));
        }
        PQclear(r);
        r = NULL;
    }
    if (!user_id[0]) {
        const char *p[2] = {email, phash};
        st = eb_db_exec(conn,
                        "INSERT INTO auth.users (email, password_hash) VALUES ($1, $2)"
                        " RETURNING id",
                        2, p, &r);
        if (st != EB_OK)
            goto cleanup;
        snprintf(user_id, sizeof(user_id), "%s", eb_db_val(r, 0, 0));
        PQclear(r);
        r = NULL;
    }
    {
        const char *p[2] = {team_id, user_id};
        st = eb_db_exec(conn,
                        "INSERT INTO auth.memberships (team_id, user_id, role)"
                        " VALUES ($1::uuid, $2::uuid, 'owner')",
                        2, p, NULL);
        if (st != EB_OK)
            goto cleanup;
    }
    {
        const char *p[4] = {team_id, prefix, khash, user_id};
        st = eb_db_exec(conn,
                        "INSERT INTO auth.api_keys (team_id, name, prefix, key_hash, role, scopes,"
                        " created_by) VALUES ($1::uuid, 'bootstrap', $2, $3, 'owner',"
                        " ARRAY['traces:write','traces:read','exports:write','exports:read',"
                        "'analytics:read','admin'], $4::uuid) RETURNING id",
                        4, p, &r);
        if (st != EB_OK)
            goto cleanup;
        snprintf(key_id, sizeof(key_id), "%s", eb_db_val(r, 0, 0));
        PQclear(r);
        r = NULL;
    }
    snprintf(actor.user_id, sizeof(actor.user_id), "%s", user_id);
    detail = cJSON_CreateObject();
    cJSON_AddStringToObject(detail, "team", slug);
    cJSON_AddStringToObject(detail, "owner", email);
    cJSON_AddStringToObject(detail, "via", "evalbus admin bootstrap");
    st = audit_write(conn, team_id, &actor, "team_created", slug, detail, NULL);
    if (st != EB_OK)
        goto cleanup;
    cJSON_DeleteItemFromObject(detail, "owner");
    cJSON_AddStringToObject(detail, "prefix", prefix);
    st = audit_write(conn, team_id, &actor, "key_created", key_id, detail, NULL);
    if (st != EB_OK)
        goto cleanup;
    st = eb_db_commit(conn);
    if (st != EB_OK)
        goto cleanup;
    *key_out = eb_strdup(key);
    if (team_id_out)
        *team_id_out = eb_strdup(team_id);
cleanup:
    if (st != EB_OK)
        eb_db_rollback(conn);
    PQclear(r);
    cJSON_Delete(detail);
    free(phash);
    memset(key, 0, sizeof(key));
    return st;
}

eb_status auth_admin_set_tier(PGconn *conn, const char *slug, const char *tier,
                              char team_id_out[41])
{
    const char *p[2] = {slug, tier};
    PGresult *r = NULL;
    eb_status st;
    cJSON *detail = NULL;

    team_id_out[0] = '\0';
    if (!auth_tier_valid(tier))
        return eb_error(EB_ERR_INVALID, "tier '%s' is not one of free, pro, enterprise", tier);
    st = eb_db_begin_system(conn);
    if (st != EB_OK)
        return st;
    st = eb_db_exec(conn, "UPDATE auth.teams SET tier = $2 WHERE slug = $1 RETURNING id", 2, p, &r);
    if (st != EB_OK)
        goto cleanup;
    if (PQntuples(r) == 0) {
        st = eb_error(EB_ERR_NOT_FOUND, "no team named '%s'", slug);
        goto cleanup;
    }
    snprintf(team_id_out, 41, "%s", eb_db_val(r, 0, 0));
    detail = cJSON_CreateObject();
    cJSON_AddStringToObject(detail, "tier", tier);
    cJSON_AddStringToObject(detail, "via", "evalbus admin set-tier");
    st = audit_write(conn, team_id_out, NULL, "tier_changed", slug, detail, NULL);
    if (st == EB_OK)
        st = eb_db_commit(conn);
cleanup:
    if (st != EB_OK)
        eb_db_rollback(conn);
    cJSON_Delete(detail);
    PQclear(r);
    return st;
}
