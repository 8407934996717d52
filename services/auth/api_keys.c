/* api_keys.c -- API keys: create (the only time the secret is shown), list, revoke.
 * A key's role may not exceed its creator's, its scopes must be allowed for its role and held
 * by its creator. Revocation commits, then drops the key from every cache through the NATS
 * broadcast. */
#include "apikey.h"
#include "auth_int.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_COLUMNS                                                                                \
    "id, prefix, name, role, array_to_json(scopes)::text, project, auth.iso(created_at),"          \
    " auth.iso(expires_at), auth.iso(revoked_at), auth.iso(last_used_at),"                         \
    " CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired'"     \
    " ELSE 'active' END"

static cJSON *key_json(const PGresult *r, int i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *scopes = cJSON_Parse(eb_db_val(r, i, 4));

    cJSON_AddStringToObject(o, "id", eb_db_val(r, i, 0));
    cJSON_AddStringToObject(o, "prefix", eb_db_val(r, i, 1));
    cJSON_AddStringToObject(o, "name", eb_db_val(r, i, 2));
    cJSON_AddStringToObject(o, "role", eb_db_val(r, i, 3));
    cJSON_AddItemToObject(o, "scopes", scopes ? scopes : cJSON_CreateArray());
    eb_json_add_str(o, "project", eb_db_val(r, i, 5), true);
    cJSON_AddStringToObject(o, "created_at", eb_db_val(r, i, 6));
    eb_json_add_str(o, "expires_at", eb_db_val(r, i, 7), true);
    eb_json_add_str(o, "revoked_at", eb_db_val(r, i, 8), true);
    eb_json_add_str(o, "last_used_at", eb_db_val(r, i, 9), true);
    cJSON_AddStringToObject(o, "state", eb_db_val(r, i, 10));
    return o;
}

void api_key_create(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    cJSON *body = eb_http_req_json(req), *out = NULL, *d;
    const char *name = NULL, *role_s = NULL, *project = NULL, *expires = NULL;
    const cJSON *scopes = NULL, *e;
    eb_role role = EB_ROLE_MEMBER;
    unsigned bits = 0;
    eb_buf arr = {0};
    char key[APIKEY_MAX], prefix[APIKEY_PREFIX_LEN + 1], khash[65];
    PGconn *c = NULL;
    PGresult *r = NULL;
    eb_status st;

    if (!body)
        return;
    if ((st = eb_json_string(body, "name", true, 200, &name)) != EB_OK ||
        (st = eb_json_string_array(body, "scopes", true, 16, 64, &scopes)) != EB_OK ||
        (st = eb_json_string(body, "role", false, 16, &role_s)) != EB_OK ||
        (st = eb_json_string(body, "project", false, 128, &project)) != EB_OK ||
        (st = eb_json_string(body, "expires_at", false, 64, &expires)) != EB_OK)
        goto fail;
    if (role_s && (role = eb_role_parse(role_s)) == EB_ROLE_NONE) {
        st = eb_error(EB_ERR_INVALID, "role '%s' is not one of viewer, member, admin, owner",
                      role_s);
        goto fail;
    }
    if (role > p->role) {
        st = eb_error(EB_ERR_FORBIDDEN, "you cannot create a key with role %s (yours is %s)",
                      eb_role_str(role), eb_role_str(p->role));
        goto fail;
    }
    if (expires && !eb_rfc3339_valid(expires)) {
        st = eb_error(EB_ERR_INVALID, "field 'expires_at' must be an RFC 3339 timestamp such as "
                                      "2027-01-31T00:00:00Z");
        goto fail;
    }
    eb_buf_putc(&arr, '{');
    cJSON_ArrayForEach(e, scopes)
    {
        unsigned bit = eb_scope_parse(e->valuestring);
        if (!bit) {
            st = eb_error(EB_ERR_INVALID,
                          "unknown scope '%s' (known: traces:write, traces:read, "
                          "exports:write, exports:read, analytics:read, admin)",
                          e->valuestring);
            goto fail;
        }
        if (!(eb_role_scopes(role) & bit)) {
            st = eb_error(EB_ERR_INVALID, "scope %s is not allowed for role %s", e->valuestring,
                          eb_role_str(role));
            goto fail;
        }
        if (!(p->scopes & bit)) {
            st = eb_error(EB_ERR_FORBIDDEN, "you cannot grant scope %s, which you do not hold",
                          e->valuestring);
            goto fail;
        }
        if (!(bits & bit)) {
            if (arr.len > 1)
                eb_buf_putc(&arr, ',');
            eb_buf_puts(&arr, e->valuestring);
        }
        bits |= bit;
    }
    eb_buf_putc(&arr, '}');
    if (!bits) {
        st = eb_error(EB_ERR_INVALID, "field 'scopes' must name at least one scope");
        goto fail;
    }
    apikey_generate(key, prefix);
    apikey_hash_hex(key, khash);
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        goto cleanup;
    if (expires) {
        const char *params[1] = {expires};
        st = eb_db_exec(c, "SELECT $1::timestamptz > now()", 1, params, &r);
        if (st != EB_OK)
            st = eb_error(EB_ERR_INVALID, "expires_at is not an RFC 3339 timestamp");
        else if (strcmp(eb_db_val(r, 0, 0), "t") != 0)
            st = eb_error(EB_ERR_INVALID, "expires_at must be in the future");
        PQclear(r);
        r = NULL;
        if (st != EB_OK) {
            eb_db_rollback(c);
            eb_db_put(ctx->svc.db, c);
            c = NULL;
            goto fail;
        }
    }
    {
        const char *params[9] = {p->team_id,
                                 name,
                                 prefix,
                                 khash,
                                 eb_role_str(role),
                                 arr.data,
                                 project && *project ? project : NULL,
                                 p->user_id[0] ? p->user_id : NULL,
                                 expires};
        st = eb_db_exec(c,
                        "INSERT INTO auth.api_keys (team_id, name, prefix, key_hash, role, scopes,"
                        " project, created_by, expires_at) VALUES ($1::uuid, $2, $3, $4, $5,"
                        " $6::text[], $7, $8::uuid, $9::timestamptz) RETURNING " KEY_COLUMNS,
                        9, params, &r);
    }
    if (st == EB_OK) {
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "name", name);
        cJSON_AddStringToObject(d, "prefix", prefix);
        cJSON_AddStringToObject(d, "role", eb_role_str(role));
        cJSON_AddItemToObject(d, "scopes", cJSON_Duplicate(scopes, true));
        st = audit_write(c, p->team_id, p, "key_created", eb_db_val(r, 0, 0), d,
                         eb_http_req_id(req));
        cJSON_Delete(d);
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    out = key_json(r, 0);
    cJSON_AddStringToObject(out, "key", key);
    eb_http_reply_json(req, 201, out);
    goto cleanup;
fail:
    eb_http_reply_status(req, st);
cleanup:
    eb_cleanse(key, sizeof(key));
    PQclear(r);
    eb_buf_free(&arr);
    cJSON_Delete(body);
}

void api_keys_list(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *params[1] = {p->team_id};
    PGconn *c = eb_req_db_begin(ctx->svc.db, req, false);
    PGresult *r = NULL;
    eb_status st;
    cJSON *root, *keys;

    if (!c)
        return;
    st = eb_db_exec(c,
                    "SELECT " KEY_COLUMNS " FROM auth.api_keys WHERE team_id = $1::uuid"
                    " ORDER BY created_at DESC, id LIMIT 1000",
                    1, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        PQclear(r);
        return;
    }
    root = cJSON_CreateObject();
    keys = cJSON_AddArrayToObject(root, "keys");
    for (int i = 0; i < PQntuples(r); i++)
        cJSON_AddItemToArray(keys, key_json(r, i));
    PQclear(r);
    eb_http_reply_json(req, 200, root);
}

void api_key_revoke(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;
    char hash[65], revoked_at[40];
    bool newly;
    cJSON *o;

    if (!eb_uuid_valid(id)) {
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such key");
        return;
    }
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return;
    {
        const char *params[2] = {p->team_id, id};
        st = eb_db_exec(c,
                        "WITH old AS (SELECT revoked_at FROM auth.api_keys"
                        "  WHERE team_id = $1::uuid AND id = $2::uuid FOR UPDATE)"
                        " UPDATE auth.api_keys k SET revoked_at = coalesce(k.revoked_at, now())"
                        " FROM old WHERE k.team_id = $1::uuid AND k.id = $2::uuid"
                        " RETURNING k.key_hash, auth.iso(k.revoked_at), old.revoked_at IS NULL",
                        2, params, &r);
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        eb_db_rollback(c);
        eb_db_put(ctx->svc.db, c);
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such key");
        return;
    }
    snprintf(hash, sizeof(hash), "%s", eb_db_val(r, 0, 0));
    snprintf(revoked_at, sizeof(revoked_at), "%s", eb_db_val(r, 0, 1));
    newly = strcmp(eb_db_val(r, 0, 2), "t") == 0;
    PQclear(r);
    if (newly) {
        st = audit_write(c, p->team_id, p, "key_revoked", id, NULL, eb_http_req_id(req));
        if (st != EB_OK) {
            eb_req_db_fail(ctx->svc.db, req, c, st);
            return;
        }
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        return;
    auth_broadcast_revoked(ctx, p->team_id, id, hash);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "revoked_at", revoked_at);
    eb_http_reply_json(req, 200, o);
}
