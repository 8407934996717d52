/* revoke.c -- the revocation broadcast (evalbus.v1.auth.revoked, protobuf KeyRevoked).
 * Published after a key is revoked, a member's role changes or leaves, or a team's tier
 * changes; every auth replica and every service's auth cache drops the matching entries. */
#include "auth_int.h"
#include "auth_revoke.h"
#include "evalbus/bus.h"
#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <stdlib.h>
#include <sys/time.h>

eb_status auth_publish_revoked(natsConnection *nc, const char *team_id, const char *key_id,
                               const char *key_hash_hex, bool flush)
{
    Evalbus__V1__KeyRevoked msg = EVALBUS__V1__KEY_REVOKED__INIT;
    Evalbus__V1__Envelope env = EVALBUS__V1__ENVELOPE__INIT;
    char event_id[37];
    struct timeval tv;
    uint8_t *buf;
    size_t len;
    natsStatus s;

    eb_uuid_v4(event_id);
    gettimeofday(&tv, NULL);
    env.event_id = event_id;
    env.team_id = (char *)(team_id ? team_id : "");
    env.occurred_at_unix_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    env.schema_version = 1;
    msg.envelope = &env;
    msg.key_id = (char *)(key_id ? key_id : "");
    msg.key_hash_hex = (char *)(key_hash_hex ? key_hash_hex : "");
    len = evalbus__v1__key_revoked__get_packed_size(&msg);
    buf = eb_malloc(len);
    evalbus__v1__key_revoked__pack(&msg, buf);
    s = natsConnection_Publish(nc, AUTH_SUBJECT_REVOKED, buf, (int)len);
    if (s == NATS_OK && flush)
        s = natsConnection_Flush(nc);
    free(buf);
    if (s != NATS_OK)
        return eb_bus_error(s, "publishing the revocation");
    return EB_OK;
}
