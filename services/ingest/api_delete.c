/* api_delete.c -- deleting traces (admins): one by id, or every trace matching a filter, and
 * per-project retention settings. A deleted trace leaves every later query and export: its
 * trace, observations, reviews, scores and key row go in one transaction. Each deletion is
 * written to the audit log through the auth service (evalbus.v1.auth.audit). */
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/v1/auth.pb-c.h"
#include "ingest_int.h"
#include "trace_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sends an audit event to the auth service (fire and forget: the deletion is done). */
static void audit(ingest_ctx *ctx, eb_http_req *req, const char *action, const char *target,
                  const cJSON *detail)
{
    eb_audit_send(ctx->svc.bus, eb_http_req_principal(req), eb_http_req_id(req), "ingest", action,
                  target, detail);
}

/* The deletion of the traces selected by sel, a CTE "sel" (columns team_id, part_time, id): the
 * trace, its observations, reviews, scores and key row go, and the statement returns their
 * number. Each deleted trace leaves a tombstone with the stream position in parameter
 * $seq_param, so that the writer stores none of the records of it that the stream took before
 * the deletion (migration 006, writer.c drop_deleted), or with the position of the record that
 * stored what is deleted when that is later (a trace first stored between the keys' lock,
 * which found no key of it, and this statement): a delivery of that record again must not
 * bring it back either. */
static char *deletion_sql(const char *sel, int seq_param)
{
    return eb_asprintf(
        "WITH sel AS (%s),"
        " t AS (DELETE FROM ingest.traces t USING sel WHERE t.team_id = sel.team_id AND"
        "  t.part_time = sel.part_time AND t.id = sel.id RETURNING t.team_id, t.id,"
        "  t.stream_seq),"
        " x AS (INSERT INTO ingest.trace_tombstones AS x (team_id, id, deleted_seq)"
        "  SELECT team_id, id, greatest($%d::bigint, max(stream_seq)) FROM t GROUP BY team_id, id"
        "  ON CONFLICT (team_id, id) DO UPDATE"
        "  SET deleted_seq = greatest(x.deleted_seq, excluded.deleted_seq), deleted_at = now()),"
        " o AS (DELETE FROM ingest.observations o USING sel WHERE o.team_id = sel.team_id AND"
        "  o.part_time = sel.part_time AND o.trace_id = sel.id),"
        " rv AS (DELETE FROM ingest.reviews r USING sel WHERE r.team_id = sel.team_id AND"
        "  r.trace_id = sel.id),"
        " sc AS (DELETE FROM ingest.scores s USING sel WHERE s.team_id = sel.team_id AND"
        "  s.trace_id = sel.id),"
        " k AS (DELETE FROM ingest.trace_keys k USING sel WHERE k.team_id = sel.team_id AND"
        "  k.id = sel.id)"
        " SELECT count(*) FROM sel",
        sel, seq_param);
}

/* Waits until the writers have stored every record the stream took before the request
 * (delete-wait at most, api-threads - 1 deletions at a time; else 503 and nothing is deleted),
 * so that the deletion finds a trace accepted before it even if none of its records was stored
 * yet. Then runs lock (a statement
 * locking the keys of the traces to delete, with the first n_lock of params), then the deletion of
 * the traces sel selects (deletion_sql, with n params; params has room for one more, the stream
 * position), in one transaction. The deletion is a statement of its own after the lock: its
 * snapshot is taken once the keys are locked, so it sees every review and score that held a key
 * (FOR KEY SHARE) until its commit, and deletes them with their trace instead of leaving them
 * behind; and a writer storing a record of one of these traces either committed before the lock
 * (the deletion takes what it stored) or reads the tombstone after this commit (drop_deleted). A
 * deletion is not cut off by query-timeout (a large one, by filter, must be able to finish): only
 * its waits for locks are (lock_timeout; 503, try again). The stream position is read once the keys
 * are locked: every record the stream took before then is at or below it, also one a writer stored
 * while the lock waited (which the deletion removes, and which a delivery again must not bring
 * back); without it (NATS away) the deletion answers 503 and deletes nothing. */
static bool run_delete_on(ingest_ctx *ctx, eb_http_req *req, const char *lock, int n_lock,
                          const char *sel, int n, const char **params, long long *count)
{
    PGconn *c;
    PGresult *r = NULL;
    char ms[32], position_s[24], *sql;
    const char *limits[1] = {ms};
    unsigned long long position = 0;
    eb_status st;

    /* before a database connection is taken: the wait holds none */
    if (ctx->cfg->delete_wait_ms > 0 &&
        (st = ingest_writers_catch_up(ctx, ctx->cfg->delete_wait_ms)) != EB_OK) {
        eb_http_reply_status(req, st);
        return false;
    }
    if (!(c = eb_req_db_begin(ctx->svc.db, req, false)))
        return false;
    snprintf(ms, sizeof(ms), "%lld", ctx->cfg->svc.query_timeout_ms);
    st = eb_db_exec(c,
                    "SELECT set_config('statement_timeout', '0', true), set_config('lock_timeout',"
                    " $1, true)",
                    1, limits, NULL);
    if (st == EB_OK)
        st = eb_db_exec(c, lock, n_lock, params, NULL);
    if (st == EB_OK)
        st = ingest_stream_position(ctx, &position);
    snprintf(position_s, sizeof(position_s), "%llu", position);
    params[n] = position_s;
    sql = deletion_sql(sel, n + 1);
    if (st == EB_OK)
        st = eb_db_exec(c, sql, n + 1, params, &r);
    free(sql);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return false;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        PQclear(r);
        return false;
    }
    *count = atoll(eb_db_val(r, 0, 0));
    PQclear(r);
    return true;
}

/* run_delete_on, on one of the API threads that deletions may hold: a deletion holds its
 * thread through the wait for the writers and its statements (which no query-timeout cuts
 * off), so at most api-threads - 1 of them (one when there is one thread) run at a time and a
 * further one answers 503 at once: queries, reviews and scores keep a thread. */
static bool run_delete(ingest_ctx *ctx, eb_http_req *req, const char *lock, int n_lock,
                       const char *sel, int n, const char **params, long long *count)
{
    int slots = ctx->cfg->svc.api_threads > 1 ? (int)ctx->cfg->svc.api_threads - 1 : 1;
    bool done;

    if (atomic_fetch_add(&ctx->deleting, 1) >= slots) {
        atomic_fetch_sub(&ctx->deleting, 1);
        eb_http_reply_status(req, eb_error(EB_ERR_UNAVAILABLE,
                                           "%d deletions are under way, as many as run at a time "
                                           "(api-threads - 1); nothing was deleted, try again",
                                           slots));
        return false;
    }
    done = run_delete_on(ctx, req, lock, n_lock, sel, n, params, count);
    atomic_fetch_sub(&ctx->deleting, 1);
    return done;
}

void api_trace_delete(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    const char *params[4] = {p->team_id, id, p->project[0] ? p->project : NULL};
    /* a project-restricted key finds the traces of its project only */
    const char *sel = "SELECT k.team_id, k.part_time, k.id FROM ingest.trace_keys k WHERE"
                      " k.team_id = $1::uuid AND k.id = $2 AND ($3::text IS NULL OR EXISTS"
                      " (SELECT 1 FROM ingest.traces t WHERE t.team_id = k.team_id AND"
                      " t.part_time = k.part_time AND t.id = k.id AND t.project = $3))"
                      " FOR UPDATE OF k";
    long long n = 0;
    cJSON *o;

    if (run_delete(ctx, req,
                   "SELECT count(*) FROM (SELECT 1 FROM ingest.trace_keys WHERE"
                   " team_id = $1::uuid AND id = $2 FOR UPDATE) x",
                   2, sel, 3, params, &n)) {
        if (n == 0) {
            eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such trace");
        } else {
            ingest_deletions_announce(ctx, p, id);
            audit(ctx, req, "trace_deleted", id, NULL);
            o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "id", id);
            cJSON_AddBoolToObject(o, "deleted", true);
            eb_http_reply_json(req, 200, o);
        }
    }
}

void api_traces_delete_by_filter(eb_http_req *req, void *vctx)
{
    static const char *const members[] = {"project", "from", "to", "model", "tag", "status"};
    ingest_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    cJSON *body = eb_http_req_json(req), *o;
    const cJSON *filter;
    const char *project = NULL, *from = NULL, *to = NULL, *model = NULL, *tag = NULL,
               *status = NULL;
    const char *params[8];
    long long n = 0;
    eb_status st;

    if (!body)
        return;
    filter = cJSON_GetObjectItemCaseSensitive(body, "filter");
    if (!cJSON_IsObject(filter) || cJSON_GetArraySize(body) != 1) {
        cJSON_Delete(body);
        eb_http_reply_error(req, EB_ERR_INVALID, "the body must be {\"filter\": {...}} alone");
        return;
    }
    /* a member this endpoint does not know must not be dropped: the deletion would be wider
     * than the caller meant */
    if ((st = eb_json_known_members(filter, members, sizeof(members) / sizeof(members[0]))) !=
            EB_OK ||
        (st = eb_json_string(filter, "project", false, 256, &project)) != EB_OK ||
        (st = eb_json_string(filter, "from", false, 64, &from)) != EB_OK ||
        (st = eb_json_string(filter, "to", false, 64, &to)) != EB_OK ||
        (st = eb_json_string(filter, "model", false, 256, &model)) != EB_OK ||
        (st = eb_json_string(filter, "tag", false, 256, &tag)) != EB_OK ||
        (st = eb_json_string(filter, "status", false, 16, &status)) != EB_OK) {
        cJSON_Delete(body);
        eb_http_reply_status(req, st);
        return;
    }
    if (!ingest_window_ok(req, from, to)) {
        cJSON_Delete(body);
        return;
    }
    if (status && strcmp(status, "ok") && strcmp(status, "error") && strcmp(status, "unset")) {
        cJSON_Delete(body);
        eb_http_reply_error(req, EB_ERR_INVALID, "status must be ok, error or unset");
        return;
    }
    if (!project && !from && !to && !model && !tag && !status) {
        cJSON_Delete(body);
        eb_http_reply_error(req, EB_ERR_INVALID,
                            "the filter is empty; name at least one of project, from, to, model,"
                            " tag, status (to delete every trace, say so with"
                            " {\"from\": \"1970-01-01T00:00:00Z\"})");
        return;
    }
    if (!ingest_project_scope(req, &project, "delete in")) {
        cJSON_Delete(body);
        return;
    }
    params[0] = p->team_id;
    params[1] = project;
    params[2] = from;
    params[3] = to;
    params[4] = model;
    params[5] = tag;
    params[6] = status;
#define FILTER_SQL                                                                                 \
    " WHERE t.team_id = $1::uuid AND " INGEST_PROJECT_WINDOW_SQL                                   \
    " AND ($5::text IS NULL OR t.model = $5) AND ($6::text IS NULL OR t.tags @> ARRAY[$6::text])"  \
    " AND ($7::text IS NULL OR t.status = $7)"
    if (run_delete(
            ctx, req,
            "SELECT count(*) FROM (SELECT 1 FROM ingest.traces t JOIN ingest.trace_keys k"
            " ON k.team_id = t.team_id AND k.id = t.id" FILTER_SQL " FOR UPDATE OF k) x",
            7, "SELECT t.team_id, t.part_time, t.id FROM ingest.traces t" FILTER_SQL " FOR UPDATE",
            7, params, &n)) {
        cJSON *detail = cJSON_CreateObject();
        if (n > 0)
            ingest_deletions_announce(ctx, p, NULL);
        cJSON_AddItemToObject(detail, "filter", cJSON_Duplicate(filter, true));
        if (p->project[0]) /* the project a restricted key implies */
            cJSON_AddStringToObject(detail, "key_project", p->project);
        cJSON_AddNumberToObject(detail, "deleted", (double)n);
        audit(ctx, req, "traces_deleted", "filter", detail);
        cJSON_Delete(detail);
        o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "deleted", (double)n);
        eb_http_reply_json(req, 200, o);
    }
    cJSON_Delete(body);
}
#undef FILTER_SQL

/* The project of a settings path names a project as traces do (docs/api/traces.md): 1 to
 * max-id-bytes bytes of UTF-8 without control characters. Else answers 400 and returns false. */
static bool project_name_ok(ingest_ctx *ctx, eb_http_req *req, const char *project)
{
    size_t n = strlen(project);

    if (n == 0 || n > ctx->limits.max_id_bytes || !eb_utf8_valid(project, n) ||
        ingest_has_control(project, n)) {
        eb_http_reply_error(req, EB_ERR_INVALID,
                            "the project must be 1 to %zu bytes of UTF-8 without control "
                            "characters, as in a trace",
                            ctx->limits.max_id_bytes);
        return false;
    }
    return true;
}

static const char *const settings_members[] = {"retention_days"};

void api_project_settings_put(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const char *project = eb_http_req_param(req, "project");
    cJSON *body = eb_http_req_json(req), *o;
    double days = 0;
    char days_s[16];
    PGconn *c;
    eb_status st;

    if (!body)
        return;
    if (!project_name_ok(ctx, req, project) || !ingest_project_scope(req, &project, "change")) {
        cJSON_Delete(body);
        return;
    }
    /* another member (a misspelt setting, a "project" naming another project than the path)
     * is refused, not dropped */
    st = eb_json_known_members(body, settings_members,
                               sizeof(settings_members) / sizeof(settings_members[0]));
    if (st == EB_OK)
        st = eb_json_number(body, "retention_days", true, true, 1, 36500, &days);
    cJSON_Delete(body);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        return;
    }
    snprintf(days_s, sizeof(days_s), "%d", (int)days);
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return;
    {
        const char *params[3] = {eb_http_req_principal(req)->team_id, project, days_s};
        st = eb_db_exec(c,
                        "INSERT INTO ingest.project_settings (team_id, project,"
                        " retention_days) VALUES ($1::uuid, $2, $3::int) ON CONFLICT"
                        " (team_id, project) DO UPDATE SET retention_days ="
                        " EXCLUDED.retention_days",
                        3, params, NULL);
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        return;
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "project", project);
    cJSON_AddNumberToObject(o, "retention_days", days);
    {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "retention_days", days);
        audit(ctx, req, "retention_changed", project, d);
        cJSON_Delete(d);
    }
    eb_http_reply_json(req, 200, o);
}

void api_project_settings_get(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const char *project = eb_http_req_param(req, "project");
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;
    cJSON *o;

    if (!project_name_ok(ctx, req, project) || !ingest_project_scope(req, &project, "read"))
        return;
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return;
    {
        const char *params[2] = {eb_http_req_principal(req)->team_id, project};
        st = eb_db_exec(c,
                        "SELECT retention_days FROM ingest.project_settings WHERE team_id ="
                        " $1::uuid AND project = $2",
                        2, params, &r);
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        PQclear(r);
        return;
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "project", project);
    /* a project without its own setting has the service's default (retention-days) */
    cJSON_AddNumberToObject(o, "retention_days",
                            PQntuples(r) ? atof(eb_db_val(r, 0, 0))
                                         : (double)ctx->cfg->retention_days);
    cJSON_AddBoolToObject(o, "default", PQntuples(r) == 0);
    PQclear(r);
    eb_http_reply_json(req, 200, o);
}
