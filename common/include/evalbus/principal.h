/* principal.h -- who a caller is: team, user or key, role, scopes, rate-limit tier.
 * Shared by the auth service (which produces principals) and every service (which receives
 * them over NATS in evalbus.v1.Principal and checks roles and scopes). */
#ifndef EVALBUS_PRINCIPAL_H
#define EVALBUS_PRINCIPAL_H

#include "evalbus/status.h"
#include "evalbus/v1/auth.pb-c.h"

#include <stdbool.h>

typedef enum eb_role {
    EB_ROLE_NONE = 0,
    EB_ROLE_VIEWER,
    EB_ROLE_MEMBER,
    EB_ROLE_ADMIN,
    EB_ROLE_OWNER,
} eb_role;

enum {
    EB_SCOPE_TRACES_WRITE = 1u << 0,
    EB_SCOPE_TRACES_READ = 1u << 1,
    EB_SCOPE_EXPORTS_WRITE = 1u << 2,
    EB_SCOPE_EXPORTS_READ = 1u << 3,
    EB_SCOPE_ANALYTICS_READ = 1u << 4,
    EB_SCOPE_ADMIN = 1u << 5,
    EB_SCOPE_COUNT = 6,
};

typedef struct eb_principal {
    char team_id[41];
    char team_slug[64];
    char user_id[41];
    char key_id[41];
    char project[128];
    char tier[16];
    eb_role role;
    unsigned scopes;
    double rate_per_sec;
    double burst;
    bool unlimited;
    long long expires_at_ms;
} eb_principal;

const char *eb_role_str(eb_role role);
/* EB_ROLE_NONE for an unknown name. */
eb_role eb_role_parse(const char *name);
/* The scope bit for a name ("traces:read"), 0 if unknown. */
unsigned eb_scope_parse(const char *name);
/* Name of the i-th scope bit (0 <= i < EB_SCOPE_COUNT). */
const char *eb_scope_name(int i);
/* The most a role may hold. */
unsigned eb_role_scopes(eb_role role);

/* The result of authenticating a credential: st EB_OK with p set, or EB_ERR_UNAUTHENTICATED
 * with a reason code ("unknown_key", "revoked", "expired", "bad_signature", ...), or
 * EB_ERR_UNAVAILABLE / EB_ERR_TIMEOUT when the verifier could not be asked. p and reason are
 * valid only during the call. */
typedef void (*eb_auth_done)(eb_status st, const eb_principal *p, const char *reason, void *arg);

/* An authenticator: checks credential and calls done exactly once (possibly before returning),
 * on the caller's loop thread. impl is the authenticator's own state. */
typedef void (*eb_authenticate_fn)(void *impl, const char *credential, const char *request_id,
                                   eb_auth_done done, void *arg);

/* Conversion to and from the wire message. eb_principal_to_pb fills pb (initialised by the
 * caller) with pointers into p and into scratch, an array of EB_SCOPE_COUNT string pointers:
 * p and scratch must outlive the packing of pb. */
void eb_principal_to_pb(const eb_principal *p, Evalbus__V1__Principal *pb,
                        Evalbus__V1__RateLimit *rl, char **scratch);
void eb_principal_from_pb(const Evalbus__V1__Principal *pb, eb_principal *p);

#endif
