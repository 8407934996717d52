/* api.c -- the auth HTTP API: route table, shared transaction helpers, login, whoami, teams.
 * Every team-scoped handler runs in a transaction scoped to the caller's team (row-level
 * security), with the team taken from the credential only. Login, team creation and invitation
 * acceptance run as system transactions because no team scope exists yet. */
#include "auth_int.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "jwt.h"
#include "password.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* team administration: never with a project-restricted key (it could otherwise make itself an
 * unrestricted one) */
#define ADMIN EB_ROLE_ADMIN, EB_SCOPE_ADMIN, true
const eb_http_route auth_routes[] = {
    /* blocking: the handler waits on PostgreSQL, on the api threads (api-threads); login and
     * invitation acceptance go there after their rate limit check (eb_http_req_offload) */
    {"POST", "/api/v1/auth/login", api_login, true, EB_ROLE_NONE, 0, false, false, NULL},
    {"GET", "/api/v1/auth/whoami", api_whoami, false, EB_ROLE_VIEWER, 0, false, false, NULL},
    {"GET", "/api/v1/teams/current", api_team_current, false, EB_ROLE_VIEWER, 0, false, true, NULL},
    {"POST", "/api/v1/teams", api_team_create, false, EB_ROLE_VIEWER, 0, false, true, NULL},
    {"GET", "/api/v1/users", api_users_list, false, EB_ROLE_VIEWER, 0, true, true, NULL},
    {"PATCH", "/api/v1/users/{id}", api_user_update, false, ADMIN, true, NULL},
    {"DELETE", "/api/v1/users/{id}", api_user_remove, false, ADMIN, true, NULL},
    {"POST", "/api/v1/invitations/accept", api_invitation_accept, true, EB_ROLE_NONE, 0, false,
     false, NULL},
    {"POST", "/api/v1/invitations", api_invitation_create, false, ADMIN, true, NULL},
    {"GET", "/api/v1/invitations", api_invitations_list, false, ADMIN, true, NULL},
    {"DELETE", "/api/v1/invitations/{id}", api_invitation_delete, false, ADMIN, true, NULL},
    {"POST", "/api/v1/keys", api_key_create, false, ADMIN, true, NULL},
    {"GET", "/api/v1/keys", api_keys_list, false, ADMIN, true, NULL},
    {"DELETE", "/api/v1/keys/{id}", api_key_revoke, false, ADMIN, true, NULL},
    {"GET", "/api/v1/audit", api_audit_list, false, ADMIN, true, "limit cursor action"},
};
const size_t auth_nroutes = sizeof(auth_routes) / sizeof(auth_routes[0]);

/* Password attempts (login and invitation acceptance), per e-mail address and per client
 * address: a burst of LOGIN_BURST, then LOGIN_RATE per second. Every attempt takes a token. */
#define LOGIN_BURST AUTH_PASSWORD_BURST
#define LOGIN_RATE AUTH_PASSWORD_RATE

/* A fixed scrypt hash, verified against when the e-mail is unknown, so that an unknown address
 * costs as much time as a wrong password. */
static char *dummy_hash;

static cJSON *principal_json(const eb_principal *p)
{
    cJSON *o = cJSON_CreateObject(), *team, *scopes, *rl;

    team = cJSON_AddObjectToObject(o, "team");
    cJSON_AddStringToObject(team, "id", p->team_id);
    cJSON_AddStringToObject(team, "slug", p->team_slug);
    cJSON_AddStringToObject(team, "tier", p->tier);
    eb_json_add_str(o, "user_id", p->user_id, true);
    eb_json_add_str(o, "key_id", p->key_id, true);
    cJSON_AddStringToObject(o, "role", eb_role_str(p->role));
    scopes = cJSON_AddArrayToObject(o, "scopes");
    for (int i = 0; i < EB_SCOPE_COUNT; i++)
        if (p->scopes & (1u << i))
            cJSON_AddItemToArray(scopes, cJSON_CreateString(eb_scope_name(i)));
    eb_json_add_str(o, "project", p->project, true);
    rl = cJSON_AddObjectToObject(o, "rate_limit");
    cJSON_AddStringToObject(rl, "tier", p->tier);
    cJSON_AddNumberToObject(rl, "rate_per_sec", p->rate_per_sec);
    cJSON_AddNumberToObject(rl, "burst", p->burst);
    cJSON_AddBoolToObject(rl, "unlimited", p->unlimited);
    return o;
}

void api_whoami(eb_http_req *req, void *vctx)
{
    (void)vctx;
    eb_http_reply_json(req, 200, principal_json(eb_http_req_principal(req)));
}

/* --- login --- */

typedef struct login_state {
    auth_ctx *ctx;
    cJSON *body;
} login_state;

static void login_fail_audit(auth_ctx *ctx, PGconn *c, const char *user_id, const char *email,
                             const char *request_id)
{
    const char *p[1] = {user_id};
    PGresult *r = NULL;
    cJSON *d;

    if (eb_db_exec(c, "SELECT team_id FROM auth.memberships WHERE user_id = $1::uuid", 1, p, &r) !=
        EB_OK)
        return;
    d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "email", email);
    cJSON_AddStringToObject(d, "reason", "wrong password");
    for (int i = 0; i < PQntuples(r); i++) {
        eb_principal actor = {0};
        snprintf(actor.user_id, sizeof(actor.user_id), "%s", user_id);
        (void)ctx;
        if (audit_write(c, eb_db_val(r, i, 0), &actor, "login_failed", email, d, request_id) !=
            EB_OK) {
            eb_log_error(request_id, "login_failed audit not written: %s", eb_error_message());
            break;
        }
    }
    cJSON_Delete(d);
    PQclear(r);
}

static void login_continue(eb_http_req *req, void *arg)
{
    login_state *ls = arg;
    auth_ctx *ctx = ls->ctx;
    const char *email = NULL, *password = NULL, *team = NULL;
    PGconn *c = NULL;
    PGresult *r = NULL;
    eb_status st;
    char user_id[41] = "", hash[512] = "";
    jwt_claims cl = {0};
    char *token = NULL;
    cJSON *out, *t, *d;
    time_t now = time(NULL), exp;
    struct tm tm;
    char expires[40];
    eb_principal actor = {0};

    if ((st = eb_json_string(ls->body, "email", true, 320, &email)) != EB_OK ||
        (st = eb_json_string(ls->body, "password", true, 1024, &password)) != EB_OK ||
        (st = eb_json_string(ls->body, "team", false, 63, &team)) != EB_OK) {
        eb_http_reply_status(req, st);
        goto cleanup;
    }
    c = eb_req_db_begin(ctx->svc.db, req, true);
    if (!c)
        goto cleanup;
    {
        const char *p[1] = {email};
        st = eb_db_exec(
            c, "SELECT id, password_hash FROM auth.users WHERE lower(email) = lower($1)", 1, p, &r);
        if (st != EB_OK) {
            eb_req_db_fail(ctx->svc.db, req, c, st);
            c = NULL;
            goto cleanup;
        }
        if (PQntuples(r) == 1) {
            snprintf(user_id, sizeof(user_id), "%s", eb_db_val(r, 0, 0));
            snprintf(hash, sizeof(hash), "%s", eb_db_val(r, 0, 1));
        }
        PQclear(r);
        r = NULL;
    }
    if (!user_id[0]) {
        password_verify(password, dummy_hash);
        eb_log_info(eb_http_req_id(req), "login failed: unknown e-mail");
        eb_db_rollback(c);
        eb_db_put(ctx->svc.db, c);
        c = NULL;
        eb_http_reply_error(req, EB_ERR_UNAUTHENTICATED, "invalid e-mail or password");
        goto cleanup;
    }
    if (!password_verify(password, hash)) {
        login_fail_audit(ctx, c, user_id, email, eb_http_req_id(req));
        if (eb_req_db_commit(ctx->svc.db, req, c))
            eb_http_reply_error(req, EB_ERR_UNAUTHENTICATED, "invalid e-mail or password");
        c = NULL;
        goto cleanup;
    }
    {
        const char *p[2] = {user_id, team};
        st = eb_db_exec(c,
                        "SELECT m.team_id, t.slug, m.role FROM auth.memberships m"
                        " JOIN auth.teams t ON t.id = m.team_id WHERE m.user_id = $1::uuid"
                        " AND ($2::text IS NULL OR t.slug = $2) ORDER BY m.created_at LIMIT 1",
                        2, p, &r);
        if (st != EB_OK) {
            eb_req_db_fail(ctx->svc.db, req, c, st);
            c = NULL;
            goto cleanup;
        }
        if (PQntuples(r) == 0) {
            eb_db_rollback(c);
            eb_db_put(ctx->svc.db, c);
            c = NULL;
            eb_http_reply_error(req, EB_ERR_FORBIDDEN, "you are not a member of %s",
                                team ? "that team" : "any team");
            goto cleanup;
        }
    }
    snprintf(cl.sub, sizeof(cl.sub), "%s", user_id);
    snprintf(cl.team_id, sizeof(cl.team_id), "%s", eb_db_val(r, 0, 0));
    snprintf(cl.role, sizeof(cl.role), "%s", eb_db_val(r, 0, 2));
    snprintf(cl.iss, sizeof(cl.iss), "%s", ctx->cfg->jwt_issuer);
    snprintf(cl.aud, sizeof(cl.aud), "%s", ctx->cfg->jwt_audience);
    eb_uuid_v4(cl.jti);
    cl.iat = now;
    exp = now + (time_t)(ctx->cfg->session_ttl_ms / 1000);
    cl.exp = exp;
    st = jwt_sign_hs256(&cl, ctx->cfg->jwt_secret, strlen(ctx->cfg->jwt_secret), &token);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        c = NULL;
        goto cleanup;
    }
    snprintf(actor.user_id, sizeof(actor.user_id), "%s", user_id);
    d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "email", email);
    st = audit_write(c, cl.team_id, &actor, "login", email, d, eb_http_req_id(req));
    cJSON_Delete(d);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        c = NULL;
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        c = NULL;
        goto cleanup;
    }
    c = NULL;
    gmtime_r(&exp, &tm);
    strftime(expires, sizeof(expires), "%Y-%m-%dT%H:%M:%SZ", &tm);
    out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "token", token);
    cJSON_AddStringToObject(out, "token_type", "Bearer");
    cJSON_AddStringToObject(out, "expires_at", expires);
    cJSON_AddStringToObject(out, "user_id", user_id);
    t = cJSON_AddObjectToObject(out, "team");
    cJSON_AddStringToObject(t, "id", cl.team_id);
    cJSON_AddStringToObject(t, "slug", eb_db_val(r, 0, 1));
    cJSON_AddStringToObject(out, "role", cl.role);
    eb_http_reply_json(req, 200, out);
cleanup:
    PQclear(r);
    free(token);
    cJSON_Delete(ls->body);
    free(ls);
}

static void on_login_limit(bool allowed, long long retry_after_ms, void *arg)
{
    eb_http_req *req = arg;
    login_state *ls = eb_http_req_get_data(req);

    if (!allowed) {
        char secs[32];
        snprintf(secs, sizeof(secs), "%lld", (retry_after_ms + 999) / 1000);
        eb_http_add_header(req, "Retry-After", secs);
        eb_http_reply_error(req, EB_ERR_RATE_LIMITED,
                            "too many login attempts for this address; retry after %s s", secs);
        cJSON_Delete(ls->body);
        free(ls);
        return;
    }
    /* the password hash and the queries run on the api threads */
    eb_http_req_offload(req, login_continue, ls);
}

void auth_login_prepare(const auth_config *cfg)
{
    password_params pp = PASSWORD_DEFAULT_PARAMS;

    pp.log2_n = (int)cfg->password_cost;
    if (!dummy_hash && password_hash("not-a-real-password", pp, &dummy_hash) != EB_OK)
        dummy_hash = eb_strdup("$scrypt$invalid");
}

void api_login(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    cJSON *body = eb_http_req_json(req);
    const cJSON *email;
    login_state *ls;
    char bucket[400], ip_bucket[96];
    const char *buckets[2] = {bucket, ip_bucket};

    if (!body)
        return;
    ls = eb_calloc(1, sizeof(*ls));
    ls->ctx = ctx;
    ls->body = body;
    eb_http_req_set_data(req, ls);
    email = cJSON_GetObjectItemCaseSensitive(body, "email");
    if (!cJSON_IsString(email) || strlen(email->valuestring) > 320) {
        login_continue(req, ls); /* answers the validation error */
        return;
    }
    snprintf(bucket, sizeof(bucket), "login:");
    for (size_t i = 0, n = strlen(bucket); email->valuestring[i] && n + 1 < sizeof(bucket); i++)
        bucket[n++] = (char)(email->valuestring[i] >= 'A' && email->valuestring[i] <= 'Z'
                                 ? email->valuestring[i] + 32
                                 : email->valuestring[i]),
        bucket[n] = '\0';
    snprintf(ip_bucket, sizeof(ip_bucket), "password-ip:%s", eb_http_req_remote(req));
    eb_ratelimit_check(ctx->svc.rl, buckets, 2, LOGIN_RATE, LOGIN_BURST, on_login_limit, req);
}

/* --- teams --- */

void api_team_current(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *params[1] = {p->team_id};
    PGconn *c = eb_req_db_begin(ctx->svc.db, req, false);
    PGresult *r = NULL;
    eb_status st;
    cJSON *o;

    if (!c)
        return;
    st = eb_db_exec(c,
                    "SELECT id, slug, name, tier, auth.iso(created_at) FROM auth.teams"
                    " WHERE id = $1::uuid",
                    1, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        PQclear(r);
        return;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "team not found");
        return;
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", eb_db_val(r, 0, 0));
    cJSON_AddStringToObject(o, "slug", eb_db_val(r, 0, 1));
    cJSON_AddStringToObject(o, "name", eb_db_val(r, 0, 2));
    cJSON_AddStringToObject(o, "tier", eb_db_val(r, 0, 3));
    cJSON_AddStringToObject(o, "created_at", eb_db_val(r, 0, 4));
    PQclear(r);
    eb_http_reply_json(req, 200, o);
}

void api_team_create(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    cJSON *body, *o, *d;
    const char *slug = NULL, *name = NULL;
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;
    char team_id[41];

    if (!p->user_id[0]) {
        eb_http_reply_error(req, EB_ERR_FORBIDDEN,
                            "an API key cannot create teams; log in as a user and use the session");
        return;
    }
    body = eb_http_req_json(req);
    if (!body)
        return;
    if ((st = eb_json_string(body, "slug", true, 63, &slug)) != EB_OK ||
        (st = eb_json_string(body, "name", false, 200, &name)) != EB_OK) {
        cJSON_Delete(body);
        eb_http_reply_status(req, st);
        return;
    }
    if (!auth_slug_valid(slug)) {
        cJSON_Delete(body);
        eb_http_reply_error(req, EB_ERR_INVALID,
                            "slug must be 1-63 lowercase letters, digits or "
                            "'-', not starting with '-'");
        return;
    }
    c = eb_req_db_begin(ctx->svc.db, req, true);
    if (!c) {
        cJSON_Delete(body);
        return;
    }
    {
        const char *params[3] = {slug, name && *name ? name : slug, ctx->cfg->default_tier};
        st = eb_db_exec(c,
                        "INSERT INTO auth.teams (slug, name, tier) VALUES ($1, $2, $3)"
                        " RETURNING id, slug, name, tier, auth.iso(created_at)",
                        3, params, &r);
    }
    if (st == EB_ERR_CONFLICT)
        st = eb_error(EB_ERR_CONFLICT, "a team named '%s' already exists", slug);
    if (st == EB_OK) {
        const char *params[2] = {eb_db_val(r, 0, 0), p->user_id};
        snprintf(team_id, sizeof(team_id), "%s", eb_db_val(r, 0, 0));
        st = eb_db_exec(c,
                        "INSERT INTO auth.memberships (team_id, user_id, role)"
                        " VALUES ($1::uuid, $2::uuid, 'owner')",
                        2, params, NULL);
    }
    if (st == EB_OK) {
        eb_principal actor = {0};
        snprintf(actor.user_id, sizeof(actor.user_id), "%s", p->user_id);
        d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "team", slug);
        st = audit_write(c, team_id, &actor, "team_created", slug, d, eb_http_req_id(req));
        cJSON_Delete(d);
    }
    cJSON_Delete(body);
    if (st != EB_OK) {
        PQclear(r);
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        PQclear(r);
        return;
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", eb_db_val(r, 0, 0));
    cJSON_AddStringToObject(o, "slug", eb_db_val(r, 0, 1));
    cJSON_AddStringToObject(o, "name", eb_db_val(r, 0, 2));
    cJSON_AddStringToObject(o, "tier", eb_db_val(r, 0, 3));
    cJSON_AddStringToObject(o, "created_at", eb_db_val(r, 0, 4));
    cJSON_AddStringToObject(o, "role", "owner");
    PQclear(r);
    eb_http_reply_json(req, 201, o);
}
