/* api_audit.c -- GET /api/v1/audit: the team's audit log, newest first, keyset-paginated by
 * event id (cursor = the last id seen), optionally filtered by action. Admins only. */
#include "auth_int.h"
#include "evalbus/json.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

void api_audit_list(eb_http_req *req, void *vctx)
{
    auth_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *limit_s = eb_http_req_query(req, "limit");
    const char *before = eb_http_req_query(req, "cursor");
    const char *action = eb_http_req_query(req, "action");
    long limit = 100;
    char limit_buf[24];
    const char *params[4];
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;
    cJSON *root, *events;
    int n;

    if (limit_s) {
        long long v;
        if (!eb_http_parse_count(limit_s, 1, 1000, &v)) {
            eb_http_reply_error(req, EB_ERR_INVALID, "limit must be an integer from 1 to 1000");
            return;
        }
        limit = (long)v;
    }
    if (before) {
        long long b;
        if (!eb_http_parse_count(before, 1, LLONG_MAX, &b)) {
            eb_http_reply_error(req, EB_ERR_INVALID, "cursor is not valid");
            return;
        }
    }
    snprintf(limit_buf, sizeof(limit_buf), "%ld", limit + 1);
    params[0] = p->team_id;
    params[1] = before;
    params[2] = action;
    params[3] = limit_buf;
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return;
    st = eb_db_exec(c,
                    "SELECT id, auth.iso(at),"
                    " action, actor_user_id, actor_key_id, target, detail::text, request_id"
                    " FROM auth.audit_log WHERE team_id = $1::uuid"
                    " AND ($2::bigint IS NULL OR id < $2::bigint)"
                    " AND ($3::text IS NULL OR action = $3)"
                    " ORDER BY id DESC LIMIT $4::int",
                    4, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        PQclear(r);
        return;
    }
    root = cJSON_CreateObject();
    events = cJSON_AddArrayToObject(root, "events");
    n = PQntuples(r);
    for (int i = 0; i < n && i < limit; i++) {
        cJSON *e = cJSON_CreateObject(), *actor;
        cJSON *detail = cJSON_Parse(eb_db_val(r, i, 6));
        cJSON_AddNumberToObject(e, "id", atof(eb_db_val(r, i, 0)));
        cJSON_AddStringToObject(e, "at", eb_db_val(r, i, 1));
        cJSON_AddStringToObject(e, "action", eb_db_val(r, i, 2));
        actor = cJSON_AddObjectToObject(e, "actor");
        eb_json_add_str(actor, "user_id", eb_db_val(r, i, 3), true);
        eb_json_add_str(actor, "key_id", eb_db_val(r, i, 4), true);
        eb_json_add_str(e, "target", eb_db_val(r, i, 5), true);
        cJSON_AddItemToObject(e, "detail", detail ? detail : cJSON_CreateObject());
        eb_json_add_str(e, "request_id", eb_db_val(r, i, 7), true);
        cJSON_AddItemToArray(events, e);
    }
    if (n > limit)
        cJSON_AddStringToObject(root, "next_cursor", eb_db_val(r, (int)limit - 1, 0));
    else
        cJSON_AddNullToObject(root, "next_cursor");
    PQclear(r);
    eb_http_reply_json(req, 200, root);
}
