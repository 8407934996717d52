/* auth_revoke.h -- NATS subjects of the auth service and the revocation broadcast, shared
 * with the CLI. */
#ifndef EVALBUS_AUTH_REVOKE_H
#define EVALBUS_AUTH_REVOKE_H

#include "evalbus/status.h"

#include <nats/nats.h>

#define AUTH_SUBJECT_VERIFY "evalbus.v1.auth.verify"
#define AUTH_SUBJECT_REVOKED "evalbus.v1.auth.revoked"
#define AUTH_QUEUE_GROUP "auth"

/* Publishes KeyRevoked: key_hash_hex set drops one key; empty drops every cached entry of
 * team_id. Flushes, so the message has left when it returns. */
eb_status auth_publish_revoked(natsConnection *nc, const char *team_id, const char *key_id,
                               const char *key_hash_hex);

#endif
