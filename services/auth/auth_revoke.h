/* auth_revoke.h -- NATS subjects of the auth service and the revocation broadcast, shared
 * with the CLI. */
#ifndef EVALBUS_AUTH_REVOKE_H
#define EVALBUS_AUTH_REVOKE_H

#include "evalbus/status.h"

#include <nats/nats.h>
#include <stdbool.h>

#define AUTH_SUBJECT_VERIFY "evalbus.v1.auth.verify"
#define AUTH_SUBJECT_REVOKED "evalbus.v1.auth.revoked"
#define AUTH_SUBJECT_AUDIT "evalbus.v1.auth.audit"
#define AUTH_QUEUE_GROUP "auth"

/* Publishes KeyRevoked: key_hash_hex set drops one key; empty drops every cached entry of
 * team_id. flush waits until the server has it: only for connections without an event loop
 * (the CLI); on a service's loop thread it would block the loop that has to read the answer. */
eb_status auth_publish_revoked(natsConnection *nc, const char *team_id, const char *key_id,
                               const char *key_hash_hex, bool flush);

#endif
