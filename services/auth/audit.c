/* audit.c -- the append-only audit log (auth.audit_log).
 * Rows are written inside the caller's transaction when the event is part of a change (a key
 * created and its audit row commit together), or in a transaction of their own for events that
 * change nothing (denials, failed logins). Secrets never go into detail. */
#include "auth_int.h"
#include "evalbus/json.h"
#include "evalbus/log.h"

#include <stdio.h>
#include <stdlib.h>

eb_status audit_write(PGconn *conn, const char *team_id, const eb_principal *actor,
                      const char *action, const char *target, const cJSON *detail,
                      const char *request_id)
{
    char *dj = detail ? eb_json_print(detail) : NULL;
    const char *params[7] = {
        team_id,
        action,
        actor && actor->user_id[0] ? actor->user_id : NULL,
        actor && actor->key_id[0] ? actor->key_id : NULL,
        target,
        dj ? dj : "{}",
        request_id,
    };
    eb_status st = eb_db_exec(conn,
                              "INSERT INTO auth.audit_log (team_id, action, actor_user_id,"
                              " actor_key_id, target, detail, request_id)"
                              " VALUES ($1::uuid, $2, $3::uuid, $4::uuid, $5, $6::jsonb, $7)",
                              7, params, NULL);
    free(dj);
    return st;
}

void audit_write_now(eb_db *db, const char *team_id, const eb_principal *actor, const char *action,
                     const char *target, const cJSON *detail, const char *request_id)
{
    PGconn *c = eb_db_get(db);
    eb_status st;

    if (!c) {
        eb_log_error(request_id, "audit event %s for team %s not written: %s", action, team_id,
                     eb_error_message());
        return;
    }
    st = eb_db_begin_team(c, team_id);
    if (st == EB_OK)
        st = audit_write(c, team_id, actor, action, target, detail, request_id);
    if (st == EB_OK)
        st = eb_db_commit(c);
    if (st != EB_OK)
        eb_log_error(request_id, "audit event %s for team %s not written: %s", action, team_id,
                     eb_error_message());
    eb_db_put(db, c);
}
