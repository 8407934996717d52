/* main.c -- evalbus-auth: teams, users, roles, API keys, sessions, rate-limit tiers, audit.
 * Start-up: settings, the shared service skeleton (loop, NATS, PostgreSQL, Redis, HTTP),
 * migrations of the auth schema (retried until PostgreSQL answers, so the service can start
 * before its database), the verifier cache, the NATS responders, then the HTTP API. The HTTP
 * API authenticates its own callers in process (same verifier, no NATS hop).
 * Shutdown (SIGTERM): NATS responders leave the queue group first, so other replicas take the
 * traffic, then HTTP drains. */
#include "auth_int.h"
#include "auth_revoke.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const eb_migration eb_migrations_auth[];
extern const size_t eb_migrations_auth_count;

#define T auth_config
static const eb_setting settings[] = {
    EB_SERVICE_SETTINGS(auth_config, svc, "8085", "64KiB", "6"),
    EB_DB_IDLE_TX_SETTING(auth_config, svc, "60s"),
    EB_QUERY_TIMEOUT_SETTING(auth_config, svc, "30s",
                             "longest a statement of the API's endpoints may run, lock waits"
                             " included (504 timeout after it; 0: no limit)"),
    EB_API_THREADS_SETTING(auth_config, svc, "2",
                           "threads that run the API's queries and password hashes (login, "
                           "invitations), so that the loop thread does not wait on them; each "
                           "takes one of db-pool's connections while it runs"),
    {"jwt-secret", "EVALBUS_JWT_SECRET", EB_SET_STRING, NULL, 0, 0, true, offsetof(T, jwt_secret),
     "HS256 key for session tokens, at least 32 characters (required)"},
    {"jwt-issuer", "EVALBUS_JWT_ISSUER", EB_SET_STRING, "evalbus", 0, 0, false,
     offsetof(T, jwt_issuer), "iss of session tokens"},
    {"jwt-audience", "EVALBUS_JWT_AUDIENCE", EB_SET_STRING, "evalbus-api", 0, 0, false,
     offsetof(T, jwt_audience), "aud of session tokens"},
    {"session-ttl", "EVALBUS_SESSION_TTL", EB_SET_DURATION, "8h", 60000, 2592000000.0, false,
     offsetof(T, session_ttl_ms), "lifetime of a session token"},
    {"jwt-leeway", "EVALBUS_JWT_LEEWAY", EB_SET_DURATION, "30s", 0, 300000, false,
     offsetof(T, jwt_leeway_ms), "clock skew tolerated on exp / nbf"},
    {"default-tier", "EVALBUS_DEFAULT_TIER", EB_SET_STRING, "free", 0, 0, false,
     offsetof(T, default_tier), "tier of new teams: free | pro | enterprise"},
    {"rate-free", "EVALBUS_RATE_FREE", EB_SET_DOUBLE, "20", 0, 1e9, false, offsetof(T, free_rate),
     "free tier: requests per second (0 = unlimited)"},
    {"burst-free", "EVALBUS_BURST_FREE", EB_SET_DOUBLE, "100", 0, 1e9, false,
     offsetof(T, free_burst), "free tier: burst"},
    {"rate-pro", "EVALBUS_RATE_PRO", EB_SET_DOUBLE, "200", 0, 1e9, false, offsetof(T, pro_rate),
     "pro tier: requests per second (0 = unlimited)"},
    {"burst-pro", "EVALBUS_BURST_PRO", EB_SET_DOUBLE, "1000", 0, 1e9, false, offsetof(T, pro_burst),
     "pro tier: burst"},
    {"rate-enterprise", "EVALBUS_RATE_ENTERPRISE", EB_SET_DOUBLE, "0", 0, 1e9, false,
     offsetof(T, enterprise_rate), "enterprise tier: requests per second (0 = unlimited)"},
    {"burst-enterprise", "EVALBUS_BURST_ENTERPRISE", EB_SET_DOUBLE, "0", 0, 1e9, false,
     offsetof(T, enterprise_burst), "enterprise tier: burst"},
    {"verify-cache-ttl", "EVALBUS_VERIFY_CACHE_TTL", EB_SET_DURATION, "30s", 0, 3600000, false,
     offsetof(T, cache_ttl_ms), "how long a verified credential is cached (0 disables)"},
    {"verify-cache-size", "EVALBUS_VERIFY_CACHE_SIZE", EB_SET_INT, "32768", 16, 10000000, false,
     offsetof(T, cache_size), "cache slots (half of them fill before the cache is cleared)"},
    {"verify-workers", "EVALBUS_VERIFY_WORKERS", EB_SET_INT, "2", 1, AUTH_MAX_VERIFY_WORKERS, false,
     offsetof(T, verify_workers), "NATS verify subscriptions (threads) per replica"},
    {"password-cost", "EVALBUS_PASSWORD_COST", EB_SET_INT, "15", 10, 20, false,
     offsetof(T, password_cost), "scrypt cost for new passwords, log2(N)"},
    {"invitation-ttl", "EVALBUS_INVITATION_TTL", EB_SET_DURATION, "7d", 60000, 31536000000.0, false,
     offsetof(T, invitation_ttl_ms), "how long an invitation can be accepted"},
};
#undef T

/* A credential of the HTTP API, verified on an API thread: a lookup on a cache miss (and the
 * audit row of a refused key) may wait on PostgreSQL, which the loop thread must not. */
typedef struct local_auth {
    auth_ctx *ctx;
    char *credential;
    char *request_id;
    eb_auth_done done;
    void *arg;
    eb_status st;
    eb_principal p;
    const char *reason;
} local_auth;

static void local_auth_work(void *arg)
{
    local_auth *a = arg;
    char denied_team[41];

    a->st = auth_verify(a->ctx->verifier, a->credential, &a->p, &a->reason, &(bool){false},
                        denied_team);
    if (a->st != EB_OK && denied_team[0]) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "reason", a->reason);
        cJSON_AddStringToObject(d, "via", "http");
        audit_write_now(a->ctx->svc.db, denied_team, NULL, "denied", a->p.key_id, d, a->request_id);
        cJSON_Delete(d);
    }
}

/* Back on the loop: the request goes on (or is refused). */
static void local_auth_done(void *arg)
{
    local_auth *a = arg;

    a->done(a->st, a->st == EB_OK ? &a->p : NULL, a->reason, a->arg);
    free(a->credential);
    free(a->request_id);
    free(a);
}

static void authenticate_local(void *impl, const char *credential, const char *request_id,
                               eb_auth_done done, void *arg)
{
    auth_ctx *ctx = impl;
    local_auth *a = eb_calloc(1, sizeof(*a));

    a->ctx = ctx;
    a->credential = eb_strdup(credential ? credential : "");
    a->request_id = eb_strdup(request_id ? request_id : "");
    a->done = done;
    a->arg = arg;
    eb_pool_submit(ctx->svc.api, local_auth_work, local_auth_done, a);
}

static void on_denied(void *arg, const eb_principal *p, const char *method, const char *path,
                      const char *request_id, const char *why)
{
    auth_ctx *ctx = arg;
    cJSON *d = cJSON_CreateObject();

    cJSON_AddStringToObject(d, "method", method);
    cJSON_AddStringToObject(d, "path", path);
    cJSON_AddStringToObject(d, "missing", why);
    audit_write_now(ctx->svc.db, p->team_id, p, "denied", path, d, request_id);
    cJSON_Delete(d);
}

void auth_broadcast_revoked(auth_ctx *ctx, const char *team_id, const char *key_id,
                            const char *key_hash_hex)
{
    if (key_hash_hex && *key_hash_hex)
        auth_verifier_drop_key(ctx->verifier, key_hash_hex);
    else
        auth_verifier_drop_team(ctx->verifier, team_id);
    if (auth_publish_revoked(eb_bus_conn(ctx->svc.bus), team_id, key_id, key_hash_hex, false) !=
        EB_OK)
        eb_log_error(NULL,
                     "revocation for team %s not broadcast (caches expire within the "
                     "verify-cache-ttl): %s",
                     team_id, eb_error_message());
}

static void on_stop(void *arg)
{
    auth_nats_drain(arg);
}

int main(int argc, char **argv)
{
    auth_config cfg = {0};
    auth_ctx ctx = {0};
    int rc = 1;
    eb_status st;

    eb_service_load_config("evalbus-auth", settings, sizeof(settings) / sizeof(settings[0]), &cfg,
                           argc, argv);
    if (!cfg.jwt_secret || strlen(cfg.jwt_secret) < 32) {
        fprintf(stderr, "evalbus-auth: setting jwt-secret (EVALBUS_JWT_SECRET or "
                        "EVALBUS_JWT_SECRET_FILE) must be at least 32 characters\n");
        goto cleanup;
    }
    if (!auth_tier_valid(cfg.default_tier)) {
        fprintf(stderr,
                "evalbus-auth: setting default-tier (EVALBUS_DEFAULT_TIER): '%s' is not "
                "one of free, pro, enterprise\n",
                cfg.default_tier);
        goto cleanup;
    }
    ctx.cfg = &cfg;
    st = eb_service_init(&ctx.svc, "auth", &cfg.svc, auth_routes, auth_nroutes, &ctx);
    if (st != EB_OK) {
        fprintf(stderr, "evalbus-auth: %s\n", eb_error_message());
        goto cleanup;
    }
    st =
        eb_db_migrate_wait(ctx.svc.db, "auth", eb_migrations_auth, eb_migrations_auth_count, 60000);
    if (st != EB_OK) {
        eb_log_error(NULL, "migrations failed: %s", eb_error_message());
        goto cleanup;
    }
    ctx.verifier = auth_verifier_new(&cfg, ctx.svc.db);
    auth_login_prepare(&cfg);
    st = auth_nats_start(&ctx);
    if (st != EB_OK) {
        eb_log_error(NULL, "%s", eb_error_message());
        goto cleanup;
    }
    eb_http_set_authenticator(ctx.svc.http, authenticate_local, &ctx);
    eb_http_set_denied_hook(ctx.svc.http, on_denied, &ctx);
    ctx.svc.on_stop = on_stop;
    ctx.svc.on_stop_arg = &ctx;
    rc = eb_service_run(&ctx.svc);
    /* requests still on the api threads are answered before the NATS side stops */
    eb_pool_finish(ctx.svc.api);
    eb_service_flush(&ctx.svc, 1000);
cleanup:
    auth_nats_stop(&ctx);
    eb_service_cleanup(&ctx.svc);
    auth_verifier_free(ctx.verifier);
    eb_config_free(settings, sizeof(settings) / sizeof(settings[0]), &cfg);
    return rc;
}
