/* api_members.c -- team members and invitations.
 * Role rules: admins manage members up to admin; only an owner grants, changes or removes the
 * owner role; the last owner can be neither demoted nor removed. A change of role or
 * membership drops the team's cached sessions everywhere (NATS broadcast).
 * Invitations carry a one-time token (shown once, stored as SHA-256) that a new or existing
 * user redeems with a password. */
#include "auth_int.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"
#include "password.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_users_list(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *params[1] = {p->team_id};
    PGconn *c = eb_req_db_begin(ctx->svc.db, req, false);
    PGresult *r = NULL;
    eb_status st;
    cJSON *root, *users;

    if (!c)
        return;
    st = eb_db_exec(c,
                    "SELECT u.id, u.email, m.role, auth.iso(m.created_at) FROM auth.memberships m"
                    " JOIN auth.users u ON u.id = m.user_id WHERE m.team_id = $1::uuid"
                    " ORDER BY m.created_at, u.id",
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
    users = cJSON_AddArrayToObject(root, "users");
    for (int i = 0; i < PQntuples(r); i++) {
        cJSON *u = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "id", eb_db_val(r, i, 0));
        cJSON_AddStringToObject(u, "email", eb_db_val(r, i, 1));
        cJSON_AddStringToObject(u, "role", eb_db_val(r, i, 2));
        cJSON_AddStringToObject(u, "joined_at", eb_db_val(r, i, 3));
        cJSON_AddItemToArray(users, u);
    }
    PQclear(r);
    eb_http_reply_json(req, 200, root);
}

/* Locks the target membership and the team's owner count. Answers 404 itself and returns false
 * when the user is not in the caller's team. The team's owner rows are locked first, so two
 * changes that each take an owner away (two owners demoting each other at once) run one after
 * the other, and the second counts the owners the first left. */
static bool load_member(auth_ctx *ctx, eb_http_req *req, PGconn *c, const char *user_id,
                        eb_role *role, char *email, size_t email_len, int *owners)
{
    const eb_principal *p = eb_http_req_principal(req);
    const char *params[2] = {p->team_id, user_id};
    PGresult *r = NULL;
    eb_status st;

    st = eb_db_exec(c,
                    "SELECT 1 FROM auth.memberships WHERE team_id = $1::uuid AND role = 'owner'"
                    " FOR UPDATE",
                    1, params, NULL);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return false;
    }
    st = eb_db_exec(c,
                    "SELECT m.role, u.email, (SELECT count(*) FROM auth.memberships o"
                    "  WHERE o.team_id = $1::uuid AND o.role = 'owner')"
                    " FROM auth.memberships m JOIN auth.users u ON u.id = m.user_id"
                    " WHERE m.team_id = $1::uuid AND m.user_id = $2::uuid FOR UPDATE OF m",
                    2, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return false;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        eb_db_rollback(c);
        eb_db_put(ctx->svc.db, c);
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such member in your team");
        return false;
    }
    *role = eb_role_parse(eb_db_val(r, 0, 0));
    snprintf(email, email_len, "%s", eb_db_val(r, 0, 1));
    *owners = atoi(eb_db_val(r, 0, 2));
    PQclear(r);
    return true;
}

void api_user_update(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    cJSON *body, *d, *o;
    const char *role_s = NULL;
    eb_role role, old;
    char email[330];
    int owners = 0;
    PGconn *c;
    eb_status st;

    if (!eb_uuid_valid(id)) {
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such member in your team");
        return;
    }
    body = eb_http_req_json(req);
    if (!body)
        return;
    st = eb_json_string(body, "role", true, 16, &role_s);
    if (st == EB_OK && (role = eb_role_parse(role_s)) == EB_ROLE_NONE)
        st = eb_error(EB_ERR_INVALID, "role '%s' is not one of viewer, member, admin, owner",
                      role_s);
    if (st != EB_OK) {
        cJSON_Delete(body);
        eb_http_reply_status(req, st);
        return;
    }
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c || !load_member(ctx, req, c, id, &old, email, sizeof(email), &owners)) {
        cJSON_Delete(body);
        return;
    }
    if ((old == EB_ROLE_OWNER || role == EB_ROLE_OWNER) && p->role != EB_ROLE_OWNER) {
        st = eb_error(EB_ERR_FORBIDDEN, "only an owner can grant or change the owner role");
    } else if (old == EB_ROLE_OWNER && role != EB_ROLE_OWNER && owners <= 1) {
        st = eb_error(EB_ERR_CONFLICT, "the team's last owner cannot be demoted; make another "
                                       "member owner first");
    } else {
        const char *params[3] = {p->team_id, id, eb_role_str(role)};
        st = eb_db_exec(c,
                        "UPDATE auth.memberships SET role = $3 WHERE team_id = $1::uuid"
                        " AND user_id = $2::uuid",
                        3, params, NULL);
    }
    if (st == EB_OK && old != role) {
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "email", email);
        cJSON_AddStringToObject(d, "from", eb_role_str(old));
        cJSON_AddStringToObject(d, "to", eb_role_str(role));
        st = audit_write(c, p->team_id, p, "role_changed", id, d, eb_http_req_id(req));
        cJSON_Delete(d);
    }
    cJSON_Delete(body);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        return;
    if (old != role)
        auth_broadcast_revoked(ctx, p->team_id, NULL, NULL);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "email", email);
    cJSON_AddStringToObject(o, "role", eb_role_str(role));
    eb_http_reply_json(req, 200, o);
}

void api_user_remove(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    eb_role old;
    char email[330];
    int owners = 0;
    PGconn *c;
    eb_status st;
    cJSON *d, *o;

    if (!eb_uuid_valid(id)) {
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such member in your team");
        return;
    }
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c || !load_member(ctx, req, c, id, &old, email, sizeof(email), &owners))
        return;
    if (old == EB_ROLE_OWNER && p->role != EB_ROLE_OWNER) {
        st = eb_error(EB_ERR_FORBIDDEN, "only an owner can remove an owner");
    } else if (old == EB_ROLE_OWNER && owners <= 1) {
        st = eb_error(EB_ERR_CONFLICT, "the team's last owner cannot be removed");
    } else {
        const char *params[2] = {p->team_id, id};
        st = eb_db_exec(c,
                        "DELETE FROM auth.memberships WHERE team_id = $1::uuid"
                        " AND user_id = $2::uuid",
                        2, params, NULL);
    }
    if (st == EB_OK) {
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "email", email);
        cJSON_AddStringToObject(d, "role", eb_role_str(old));
        st = audit_write(c, p->team_id, p, "member_removed", id, d, eb_http_req_id(req));
        cJSON_Delete(d);
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        return;
    auth_broadcast_revoked(ctx, p->team_id, NULL, NULL);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    eb_http_reply_json(req, 200, o);
}

/* --- invitations --- */

#define INVITATION_COLUMNS                                                                         \
    "id, email, role, auth.iso(created_at), auth.iso(expires_at), auth.iso(accepted_at),"          \
    " CASE WHEN accepted_at IS NOT NULL THEN 'accepted' WHEN revoked_at IS NOT NULL THEN"          \
    " 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'pending' END"

static cJSON *invitation_json(const PGresult *r, int i)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "id", eb_db_val(r, i, 0));
    cJSON_AddStringToObject(o, "email", eb_db_val(r, i, 1));
    cJSON_AddStringToObject(o, "role", eb_db_val(r, i, 2));
    cJSON_AddStringToObject(o, "created_at", eb_db_val(r, i, 3));
    cJSON_AddStringToObject(o, "expires_at", eb_db_val(r, i, 4));
    eb_json_add_str(o, "accepted_at", eb_db_val(r, i, 5), true);
    cJSON_AddStringToObject(o, "status", eb_db_val(r, i, 6));
    return o;
}

void api_invitation_create(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    cJSON *body = eb_http_req_json(req), *o, *d;
    const char *email = NULL, *role_s = NULL;
    eb_role role = EB_ROLE_MEMBER;
    unsigned char raw[32];
    eb_buf token = {0};
    char thash[65], ttl[32];
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!body)
        return;
    if ((st = eb_json_string(body, "email", true, 320, &email)) == EB_OK &&
        (st = eb_json_string(body, "role", false, 16, &role_s)) == EB_OK) {
        if (!auth_email_valid(email))
            st = eb_error(EB_ERR_INVALID, "field 'email' is not a valid e-mail address");
        else if (role_s && (role = eb_role_parse(role_s)) == EB_ROLE_NONE)
            st = eb_error(EB_ERR_INVALID, "role '%s' is not one of viewer, member, admin, owner",
                          role_s);
        else if (role > p->role || (role == EB_ROLE_OWNER && p->role != EB_ROLE_OWNER))
            st = eb_error(EB_ERR_FORBIDDEN, "you cannot invite with role %s", eb_role_str(role));
    }
    if (st != EB_OK) {
        cJSON_Delete(body);
        eb_http_reply_status(req, st);
        return;
    }
    eb_random_bytes(raw, sizeof(raw));
    eb_buf_puts(&token, "ebinv_");
    eb_base64url_encode(raw, sizeof(raw), &token);
    eb_sha256_hex(token.data, token.len, thash);
    snprintf(ttl, sizeof(ttl), "%lld milliseconds", ctx->cfg->invitation_ttl_ms);
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c) {
        cJSON_Delete(body);
        eb_buf_free(&token);
        return;
    }
    {
        const char *params[6] = {
            p->team_id, email, eb_role_str(role), thash, p->user_id[0] ? p->user_id : NULL, ttl};
        st = eb_db_exec(c,
                        "INSERT INTO auth.invitations (team_id, email, role, token_hash,"
                        " created_by, expires_at) VALUES ($1::uuid, $2, $3, $4, $5::uuid,"
                        " now() + $6::interval) RETURNING " INVITATION_COLUMNS,
                        6, params, &r);
    }
    if (st == EB_OK) {
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "email", email);
        cJSON_AddStringToObject(d, "role", eb_role_str(role));
        st = audit_write(c, p->team_id, p, "invitation_created", eb_db_val(r, 0, 0), d,
                         eb_http_req_id(req));
        cJSON_Delete(d);
    }
    cJSON_Delete(body);
    if (st != EB_OK) {
        PQclear(r);
        eb_buf_free(&token);
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        PQclear(r);
        eb_buf_free(&token);
        return;
    }
    o = invitation_json(r, 0);
    cJSON_AddStringToObject(o, "token", token.data);
    PQclear(r);
    eb_buf_free(&token);
    eb_http_reply_json(req, 201, o);
}

void api_invitations_list(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *params[1] = {p->team_id};
    PGconn *c = eb_req_db_begin(ctx->svc.db, req, false);
    PGresult *r = NULL;
    eb_status st;
    cJSON *root, *arr;

    if (!c)
        return;
    st = eb_db_exec(c,
                    "SELECT " INVITATION_COLUMNS " FROM auth.invitations"
                    " WHERE team_id = $1::uuid AND revoked_at IS NULL"
                    " ORDER BY created_at DESC LIMIT 1000",
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
    arr = cJSON_AddArrayToObject(root, "invitations");
    for (int i = 0; i < PQntuples(r); i++)
        cJSON_AddItemToArray(arr, invitation_json(r, i));
    PQclear(r);
    eb_http_reply_json(req, 200, root);
}

void api_invitation_delete(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;
    cJSON *o;

    if (!eb_uuid_valid(id)) {
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such invitation");
        return;
    }
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return;
    {
        const char *params[2] = {p->team_id, id};
        st = eb_db_exec(c,
                        "UPDATE auth.invitations SET revoked_at = coalesce(revoked_at, now())"
                        " WHERE team_id = $1::uuid AND id = $2::uuid AND accepted_at IS NULL"
                        " RETURNING id",
                        2, params, &r);
    }
    if (st == EB_OK && PQntuples(r) == 0)
        st = eb_error(EB_ERR_NOT_FOUND, "no such pending invitation");
    PQclear(r);
    if (st == EB_OK)
        st = audit_write(c, p->team_id, p, "invitation_revoked", id, NULL, eb_http_req_id(req));
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        return;
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    eb_http_reply_json(req, 200, o);
}

static void accept_continue(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    cJSON *body = eb_http_req_json(req), *o, *t, *d;
    const char *token = NULL, *password = NULL;
    char thash[65], team_id[41] = "", inv_id[41] = "", email[330] = "", role[16] = "",
                    slug[64] = "", user_id[41] = "";
    char *phash = NULL;
    password_params pp = PASSWORD_DEFAULT_PARAMS;
    PGconn *c = NULL;
    PGresult *r = NULL;
    eb_status st;
    eb_principal actor = {0};

    if (!body)
        return;
    if ((st = eb_json_string(body, "token", true, 200, &token)) != EB_OK ||
        (st = eb_json_string(body, "password", true, 1024, &password)) != EB_OK) {
        eb_http_reply_status(req, st);
        goto cleanup;
    }
    eb_sha256_hex(token, strlen(token), thash);
    c = eb_req_db_begin(ctx->svc.db, req, true); /* query-timeout bounds its statements */
    if (!c)
        goto cleanup;
    {
        const char *params[1] = {thash};
        st = eb_db_exec(c,
                        "SELECT i.team_id, i.id, i.email, i.role, t.slug FROM auth.invitations i"
                        " JOIN auth.teams t ON t.id = i.team_id WHERE i.token_hash = $1"
                        " AND i.accepted_at IS NULL AND i.revoked_at IS NULL"
                        " AND i.expires_at > now() FOR UPDATE OF i",
                        1, params, &r);
    }
    if (st == EB_OK && PQntuples(r) == 0)
        st = eb_error(EB_ERR_NOT_FOUND, "no such invitation, or it was used, revoked or expired");
    if (st != EB_OK)
        goto fail;
    snprintf(team_id, sizeof(team_id), "%s", eb_db_val(r, 0, 0));
    snprintf(inv_id, sizeof(inv_id), "%s", eb_db_val(r, 0, 1));
    snprintf(email, sizeof(email), "%s", eb_db_val(r, 0, 2));
    snprintf(role, sizeof(role), "%s", eb_db_val(r, 0, 3));
    snprintf(slug, sizeof(slug), "%s", eb_db_val(r, 0, 4));
    PQclear(r);
    r = NULL;
    {
        const char *params[1] = {email};
        st = eb_db_exec(c,
                        "SELECT id, password_hash FROM auth.users WHERE lower(email) ="
                        " lower($1)",
                        1, params, &r);
    }
    if (st != EB_OK)
        goto fail;
    if (PQntuples(r) > 0) {
        if (!password_verify(password, eb_db_val(r, 0, 1))) {
            st = eb_error(EB_ERR_CONFLICT, "an account with this e-mail exists; accept with its "
                                           "password");
            goto fail;
        }
        snprintf(user_id, sizeof(user_id), "%s", eb_db_val(r, 0, 0));
    } else {
        const char *params[2] = {email, NULL};
        pp.log2_n = (int)ctx->cfg->password_cost;
        st = password_hash(password, pp, &phash);
        if (st != EB_OK)
            goto fail;
        params[1] = phash;
        PQclear(r);
        r = NULL;
        st = eb_db_exec(c,
                        "INSERT INTO auth.users (email, password_hash) VALUES ($1, $2)"
                        " RETURNING id",
                        2, params, &r);
        if (st != EB_OK)
            goto fail;
        snprintf(user_id, sizeof(user_id), "%s", eb_db_val(r, 0, 0));
    }
    PQclear(r);
    r = NULL;
    {
        const char *params[3] = {team_id, user_id, role};
        st = eb_db_exec(c,
                        "INSERT INTO auth.memberships (team_id, user_id, role)"
                        " VALUES ($1::uuid, $2::uuid, $3)",
                        3, params, NULL);
        if (st == EB_ERR_CONFLICT)
            st = eb_error(EB_ERR_CONFLICT, "you are already a member of this team");
    }
    if (st == EB_OK) {
        const char *params[2] = {team_id, inv_id};
        st = eb_db_exec(c,
                        "UPDATE auth.invitations SET accepted_at = now() WHERE"
                        " team_id = $1::uuid AND id = $2::uuid",
                        2, params, NULL);
    }
    if (st == EB_OK) {
        snprintf(actor.user_id, sizeof(actor.user_id), "%s", user_id);
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "email", email);
        cJSON_AddStringToObject(d, "role", role);
        st = audit_write(c, team_id, &actor, "invitation_accepted", inv_id, d, eb_http_req_id(req));
        cJSON_Delete(d);
    }
    if (st != EB_OK)
        goto fail;
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        c = NULL;
        goto cleanup;
    }
    c = NULL;
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "user_id", user_id);
    t = cJSON_AddObjectToObject(o, "team");
    cJSON_AddStringToObject(t, "id", team_id);
    cJSON_AddStringToObject(t, "slug", slug);
    cJSON_AddStringToObject(o, "role", role);
    eb_http_reply_json(req, 200, o);
    goto cleanup;
fail:
    eb_req_db_fail(ctx->svc.db, req, c, st);
    c = NULL;
cleanup:
    PQclear(r);
    free(phash);
    cJSON_Delete(body);
}

/* Acceptance checks a password (for an existing account), so it shares the per-address limit
 * of password attempts with login. */
static void on_accept_limit(bool allowed, long long retry_after_ms, void *arg)
{
    eb_http_req *req = arg;

    if (!allowed) {
        char secs[32];
        snprintf(secs, sizeof(secs), "%lld", (retry_after_ms + 999) / 1000);
        eb_http_add_header(req, "Retry-After", secs);
        eb_http_reply_error(req, EB_ERR_RATE_LIMITED,
                            "too many password attempts from this address; retry after %s s", secs);
        return;
    }
    /* a password hash: on the api threads, as are the queries */
    eb_http_req_offload(req, accept_continue, eb_http_req_get_data(req));
}

void api_invitation_accept(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    char bucket[96];
    const char *buckets[1] = {bucket};

    snprintf(bucket, sizeof(bucket), "password-ip:%s", eb_http_req_remote(req));
    eb_http_req_set_data(req, ctx);
    eb_ratelimit_check(ctx->svc.rl, buckets, 1, AUTH_PASSWORD_RATE, AUTH_PASSWORD_BURST,
                       on_accept_limit, req);
}
