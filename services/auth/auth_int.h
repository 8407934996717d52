/* auth_int.h -- private interfaces between the files of the auth service. */
#ifndef EVALBUS_AUTH_INT_H
#define EVALBUS_AUTH_INT_H

#include "evalbus/db.h"
#include "evalbus/principal.h"
#include "evalbus/service.h"

#include <cjson/cJSON.h>
#include <nats/nats.h>
#include <stdbool.h>

#define AUTH_MAX_VERIFY_WORKERS 8
/* Password attempts (login, invitation acceptance) per e-mail address and per client address:
 * a burst of AUTH_PASSWORD_BURST, then AUTH_PASSWORD_RATE per second. */
#define AUTH_PASSWORD_BURST 20
#define AUTH_PASSWORD_RATE 0.5

typedef struct auth_config {
    eb_service_config svc;
    char *jwt_secret;
    char *jwt_issuer;
    char *jwt_audience;
    long long session_ttl_ms;
    long long jwt_leeway_ms;
    char *default_tier;
    double free_rate, free_burst;
    double pro_rate, pro_burst;
    double enterprise_rate, enterprise_burst;
    long long cache_ttl_ms;
    long long cache_size;
    long long verify_workers;
    long long password_cost;
    long long invitation_ttl_ms;
} auth_config;

/* --- tiers (policy.c) --- */
/* True if name is free, pro or enterprise. */
bool auth_tier_valid(const char *name);
/* Fills p->tier and its rate limit from the settings. */
void auth_tier_apply(const auth_config *cfg, const char *tier, eb_principal *p);

/* --- verification with an in-process cache (verify.c); thread-safe --- */
typedef struct auth_verifier auth_verifier;

auth_verifier *auth_verifier_new(const auth_config *cfg, eb_db *db);
void auth_verifier_free(auth_verifier *v);
/* Verifies an API key or a session JWT. EB_OK with *out, or EB_ERR_UNAUTHENTICATED with a
 * reason code, or EB_ERR_UNAVAILABLE when PostgreSQL is needed and down. *cache_hit tells
 * whether the answer came from the cache. When a known key is refused (revoked, expired),
 * *denied_team (41 bytes) gets its team id so the caller can audit it; else it is "". */
eb_status auth_verify(auth_verifier *v, const char *credential, eb_principal *out,
                      const char **reason, bool *cache_hit, char *denied_team);
/* Drops cached entries: one key (by SHA-256 hex), or every entry of a team. */
void auth_verifier_drop_key(auth_verifier *v, const char *key_hash_hex);
void auth_verifier_drop_team(auth_verifier *v, const char *team_id);

/* --- the service (main.c) --- */
typedef struct auth_ctx {
    auth_config *cfg;
    eb_service svc;
    auth_verifier *verifier;
    natsSubscription *verify_subs[AUTH_MAX_VERIFY_WORKERS];
    natsSubscription *revoked_sub;
    natsSubscription *audit_sub;
} auth_ctx;

/* Drops the cache entries here and tells every replica and every service cache to drop them:
 * key_hash_hex set: one key; else every entry of team_id. */
void auth_broadcast_revoked(auth_ctx *ctx, const char *team_id, const char *key_id,
                            const char *key_hash_hex);

/* --- NATS verify responder (nats_verify.c) --- */
eb_status auth_nats_start(auth_ctx *ctx);
/* Leaves the verify queue group: requests already delivered here are still answered, new ones
 * go to other replicas. The revocation listener stays until auth_nats_stop(). */
void auth_nats_drain(auth_ctx *ctx);
void auth_nats_stop(auth_ctx *ctx);

/* --- audit log (audit.c) --- */
/* Appends an event in the current transaction (which must be scoped to team_id or be a system
 * transaction). detail is borrowed and may be NULL. */
eb_status audit_write(PGconn *conn, const char *team_id, const eb_principal *actor,
                      const char *action, const char *target, const cJSON *detail,
                      const char *request_id);
/* Appends an event in its own short transaction (used for denials and failed logins). */
void audit_write_now(eb_db *db, const char *team_id, const eb_principal *actor, const char *action,
                     const char *target, const cJSON *detail, const char *request_id);

/* --- HTTP API (api_*.c) --- */
extern const eb_http_route auth_routes[];
extern const size_t auth_nroutes;

/* Handlers, by file. */
/* Makes the hash an unknown e-mail's login is verified against (as long as a real one takes);
 * at start-up, before the first login. */
void auth_login_prepare(const auth_config *cfg);
void api_login(eb_http_req *req, void *ctx);
void api_whoami(eb_http_req *req, void *ctx);
void api_team_current(eb_http_req *req, void *ctx);
void api_team_create(eb_http_req *req, void *ctx);
void api_users_list(eb_http_req *req, void *ctx);
void api_user_update(eb_http_req *req, void *ctx);
void api_user_remove(eb_http_req *req, void *ctx);
void api_invitation_create(eb_http_req *req, void *ctx);
void api_invitations_list(eb_http_req *req, void *ctx);
void api_invitation_delete(eb_http_req *req, void *ctx);
void api_invitation_accept(eb_http_req *req, void *ctx);
void api_key_create(eb_http_req *req, void *ctx);
void api_keys_list(eb_http_req *req, void *ctx);
void api_key_revoke(eb_http_req *req, void *ctx);
void api_audit_list(eb_http_req *req, void *ctx);

/* --- operator commands shared with the CLI (admin.c) --- */
/* Creates team slug (tier default_tier), its owner email with password, and an owner API key
 * with every scope. *key_out gets the key (caller frees). EB_ERR_CONFLICT if the team exists. */
eb_status auth_admin_bootstrap(PGconn *conn, const char *slug, const char *email,
                               const char *password, const char *default_tier, int password_cost,
                               char **key_out, char **team_id_out);
/* Changes a team's tier. EB_ERR_NOT_FOUND for an unknown team, EB_ERR_INVALID for a bad tier.
 * *team_id_out (41 bytes) gets the team's id. */
eb_status auth_admin_set_tier(PGconn *conn, const char *slug, const char *tier,
                              char team_id_out[41]);
/* True if slug is a valid team slug (lowercase letters, digits, '-', 1..63, not leading '-'). */
bool auth_slug_valid(const char *slug);
/* Plausible e-mail address check (one '@', non-empty parts, no spaces or controls). */
bool auth_email_valid(const char *email);

#endif
