/* scheduler.c -- scheduled exports: the API (POST/GET/DELETE /api/v1/export-schedules) and the
 * timer that turns due schedules into ordinary export jobs.
 *
 * A schedule holds an export request (`export`, as POST /api/v1/exports takes it) and how often
 * it runs (hourly, daily, weekly). Each run exports the traces that were stored since the last
 * successful run (its `watermark`) up to the time of the run: the job's filter gets
 * stored_since = watermark and stored_until = now less a moment, or earlier while an ingest
 * transaction is still open (run_bound()) -- the time a trace was stored, so a trace that arrives
 * late, with an old start time, is still taken by the next run. The watermark moves only when the
 * previous job succeeded, so a failed or cancelled run is covered by the next one. While a
 * schedule's previous job is still queued or running, the schedule waits. Any number of replicas
 * run the timer: due rows are taken with FOR UPDATE SKIP LOCKED, so each due schedule starts one
 * job. Threading: the timer fires on the loop thread and hands its pass to an API thread (its
 * queries and the publications of its jobs), re-arming once the pass is over, so one pass runs
 * at a time; the API handlers are blocking routes, on the API threads too. */
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "export_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *interval_sql(const char *every)
{
    return strcmp(every, "hourly") == 0  ? "1 hour"
           : strcmp(every, "daily") == 0 ? "1 day"
                                         : "7 days";
}

/* The application name ingest's connections report to PostgreSQL (its service name). */
#define INGEST_APP_NAME "ingest"
/* How far a run's upper bound stays behind the clock at least: a transaction takes its start
 * time a moment before pg_stat_activity shows it. */
#define SETTLE_MARGIN "2 seconds"
/* ... and when some of ingest's sessions cannot be seen. */
#define BLIND_MARGIN "60 seconds"
/* ingest's sessions ($2): each one's open transaction start, and whether it is hidden from the
 * export role (another role without pg_read_all_stats, or track_activities off). A session still
 * connecting has no state yet and counts as neither. */
#define SESSIONS_SQL                                                                               \
    "SELECT pid, state, xact_start, state = 'disabled' OR query = '<insufficient privilege>' AS"   \
    " hidden FROM pg_stat_activity WHERE datname = current_database() AND application_name = $2"
/* $1: the clock. The bound, from h (whether a session is hidden) and o (the oldest open
 * transaction). */
#define BOUND_EXPR                                                                                 \
    "least($1::timestamptz - CASE WHEN h.hidden THEN interval '" BLIND_MARGIN                      \
    "' ELSE interval '" SETTLE_MARGIN "' END, o.xact_start)"
/* An ingest transaction open longer than $3 ms (schedule-stuck-after) holds the bound back. */
#define STUCK_EXPR "o.xact_start < $1::timestamptz - $3::bigint * interval '1 millisecond'"
/* The bound; whether a session was hidden; then the oldest open transaction: whether it is stuck,
 * its pid, state and start. */
#define BOUND_SQL                                                                                  \
    "WITH s AS (" SESSIONS_SQL "), o AS (SELECT pid, state, xact_start FROM s WHERE xact_start IS" \
    " NOT NULL ORDER BY xact_start LIMIT 1), h AS (SELECT coalesce(bool_or(hidden), false) AS"     \
    " hidden FROM s) SELECT " EXPORT_JOB_TIME(                                                     \
        BOUND_EXPR) ", h.hidden, " STUCK_EXPR ", o.pid,"                                           \
                    " o.state, " EXPORT_JOB_TIME("o.xact_start") " FROM h LEFT JOIN o ON true"

/* The upper bound (stored_until) of the runs started in this tick, on PostgreSQL's clock, into
 * out (RFC 3339, UTC, microseconds). A trace's stored time is the start of the ingest transaction
 * that stored it (created_at DEFAULT now()), and that transaction may commit after a run has
 * read: with "now" as the bound, a trace committed late would fall before the bound, unseen by
 * this run, and the next run (which starts at the bound) would never take it. So the bound is the
 * clock, read before looking at the sessions, less SETTLE_MARGIN, or the start of the oldest open
 * transaction of ingest, whichever is earlier: every trace stored before the bound is committed
 * when the run reads. The export role must see ingest's sessions in pg_stat_activity (the same
 * role, or pg_read_all_stats); when it cannot, the bound stays BLIND_MARGIN behind the clock and
 * a warning says so (once). Any transaction of ingest holds the bound back, so one open longer
 * than schedule-stuck-after is named in a warning (every tick until it ends). */
static eb_status run_bound(export_ctx *ctx, PGconn *c, char out[40])
{
    PGresult *clock = NULL, *r = NULL;
    char stuck_ms[24];
    const char *p[3] = {NULL, INGEST_APP_NAME, stuck_ms};
    eb_status st = eb_db_exec(c, "SELECT clock_timestamp()", 0, NULL, &clock);

    if (st == EB_OK) {
        p[0] = eb_db_val(clock, 0, 0);
        /* pg_stat_activity is read once per transaction: this is the tick's first look */
        snprintf(stuck_ms, sizeof(stuck_ms), "%lld", ctx->cfg->schedule_stuck_after_ms);
        st = eb_db_exec(c, BOUND_SQL, 3, p, &r);
    }
    if (st == EB_OK) {
        snprintf(out, 40, "%s", eb_db_val(r, 0, 0));
        if (eb_db_val(r, 0, 1)[0] == 't' && !ctx->warned_blind) {
            ctx->warned_blind = true;
            eb_log_warn(
                NULL, "export scheduler: some of ingest's sessions are not visible in"
                      " pg_stat_activity (grant pg_read_all_stats to the export role, and keep"
                      " track_activities on); scheduled runs take traces stored until " BLIND_MARGIN
                      " ago");
        }
        if (eb_db_val(r, 0, 2)[0] == 't')
            eb_log_warn(NULL,
                        "export scheduler: ingest session %s (%s) has had a transaction open since"
                        " %s; scheduled runs take only traces stored before it",
                        eb_db_val(r, 0, 3), eb_db_val(r, 0, 4), eb_db_val(r, 0, 5));
    }
    PQclear(clock);
    PQclear(r);
    return st;
}

/* Starts the job of one due schedule (row i of r) in the open system transaction of c, for the
 * traces stored before bound (run_bound()). */
static eb_status run_schedule(export_ctx *ctx, PGconn *c, const PGresult *r, int i,
                              const char *bound)
{
    const char *team = eb_db_val(r, i, 0), *id = eb_db_val(r, i, 1);
    cJSON *body = cJSON_Parse(eb_db_val(r, i, 3)), *filter;
    export_spec spec = {0};
    eb_principal who = {0};
    PGresult *last = NULL;
    char job_id[37];
    const char *watermark = eb_db_isnull(r, i, 5) ? NULL : eb_db_val(r, i, 5);
    const char *p[5];
    eb_status st = EB_OK;

    if (!eb_db_isnull(r, i, 6)) {
        const char *lp[2] = {team, eb_db_val(r, i, 6)};
        st = eb_db_exec(c,
                        "SELECT state, filter->>'stored_until' FROM export.jobs WHERE team_id ="
                        " $1::uuid AND id = $2::uuid",
                        2, lp, &last);
        if (st != EB_OK)
            goto cleanup;
        if (PQntuples(last) == 1) {
            const char *state = eb_db_val(last, 0, 0);
            if (strcmp(state, "queued") == 0 || strcmp(state, "running") == 0)
                goto cleanup; /* the previous run is not done yet */
            if (strcmp(state, "succeeded") == 0 && !eb_db_isnull(last, 0, 1))
                watermark = eb_db_val(last, 0, 1);
        }
    }
    filter = cJSON_GetObjectItemCaseSensitive(body, "filter");
    if (!filter)
        filter = cJSON_AddObjectToObject(body, "filter");
    cJSON_DeleteItemFromObjectCaseSensitive(filter, "stored_since");
    cJSON_DeleteItemFromObjectCaseSensitive(filter, "stored_until");
    if (watermark)
        cJSON_AddStringToObject(filter, "stored_since", watermark);
    /* never before the watermark: such a run takes nothing and the next one goes on from it */
    if (watermark && strcmp(bound, watermark) < 0) {
        eb_log_warn(NULL,
                    "schedule %s: the bound %s is before the last run's end %s (ingest's sessions"
                    " turned invisible, or an ingest transaction older than that run is still"
                    " open: traces it stores may fall between runs)",
                    id, bound, watermark);
        bound = watermark;
    }
    cJSON_AddStringToObject(filter, "stored_until", bound);
    st = export_spec_parse(body, ctx->cfg, &spec);
    if (st != EB_OK)
        goto cleanup;
    snprintf(who.team_id, sizeof(who.team_id), "%s", team);
    snprintf(who.team_slug, sizeof(who.team_slug), "%s", eb_db_val(r, i, 2));
    if (!eb_db_isnull(r, i, 7))
        snprintf(who.user_id, sizeof(who.user_id), "%s", eb_db_val(r, i, 7));
    if (!eb_db_isnull(r, i, 8))
        snprintf(who.key_id, sizeof(who.key_id), "%s", eb_db_val(r, i, 8));
    st = export_job_insert(c, &who, &spec, id, job_id);
    if (st == EB_OK)
        st = export_job_enqueue(ctx->queue_bus, team, who.team_slug, job_id);
    if (st != EB_OK)
        goto cleanup;
    p[0] = team;
    p[1] = id;
    p[2] = job_id;
    p[3] = watermark;
    p[4] = interval_sql(eb_db_val(r, i, 4));
    st = eb_db_exec(c,
                    "UPDATE export.schedules SET last_job_id = $3::uuid, watermark ="
                    " $4::timestamptz, next_run_at = greatest(next_run_at + $5::interval, now())"
                    " WHERE team_id = $1::uuid AND id = $2::uuid",
                    5, p, NULL);
    eb_log_info(NULL, "schedule %s: started export %s", id, job_id);
cleanup:
    PQclear(last);
    export_spec_clear(&spec);
    cJSON_Delete(body);
    return st;
}

/* One pass over the due schedules, on an API thread. */
static void schedule_pass(void *arg)
{
    export_ctx *ctx = arg;
    PGconn *c = eb_db_get(ctx->svc.db);
    PGresult *r = NULL;
    char bound[40];
    eb_status st;

    if (!c)
        goto done;
    st = eb_db_begin_system(c);
    if (st == EB_OK)
        st = eb_db_exec(c,
                        "SELECT team_id, id, team_slug, spec::text, every, " EXPORT_JOB_TIME(
                            "watermark") ", last_job_id,"
                                         " created_by_user, created_by_key FROM export.schedules "
                                         "WHERE enabled AND"
                                         " next_run_at <= now() ORDER BY next_run_at LIMIT 20"
                                         " FOR UPDATE SKIP LOCKED",
                        0, NULL, &r);
    if (st == EB_OK && PQntuples(r) > 0)
        st = run_bound(ctx, c, bound);
    for (int i = 0; st == EB_OK && i < PQntuples(r); i++) {
        st = run_schedule(ctx, c, r, i, bound);
        if (st == EB_ERR_INVALID) {
            /* the request no longer validates (e.g. the store changed): stop the schedule */
            const char *p[2] = {eb_db_val(r, i, 0), eb_db_val(r, i, 1)};
            eb_log_error(NULL, "schedule %s disabled: %s", p[1], eb_error_message());
            st = eb_db_exec(c,
                            "UPDATE export.schedules SET enabled = false WHERE team_id = $1::uuid"
                            " AND id = $2::uuid",
                            2, p, NULL);
        }
    }
    if (st == EB_OK)
        st = eb_db_commit(c);
    else
        eb_db_rollback(c);
    if (st != EB_OK)
        eb_log_warn(NULL, "export scheduler: %s", eb_error_message());
    eb_db_put(ctx->svc.db, c);
done:
    PQclear(r);
}

/* Back on the loop: the next pass after schedule-interval (none once shutdown freed the timer). */
static void schedule_pass_done(void *arg)
{
    export_ctx *ctx = arg;
    struct timeval tv = {ctx->cfg->schedule_interval_ms / 1000,
                         (ctx->cfg->schedule_interval_ms % 1000) * 1000};

    if (ctx->schedule_timer)
        event_add(ctx->schedule_timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    export_ctx *ctx = arg;

    (void)fd;
    (void)what;
    eb_pool_submit(ctx->svc.api, schedule_pass, schedule_pass_done, ctx);
}

void export_scheduler_start(export_ctx *ctx)
{
    struct timeval tv = {1, 0};

    ctx->schedule_timer = evtimer_new(ctx->svc.base, on_timer, ctx);
    event_add(ctx->schedule_timer, &tv);
}

/* ---- API ---- */

static cJSON *schedule_json(const PGresult *r, int i)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "id", eb_db_val(r, i, 0));
    cJSON_AddStringToObject(o, "every", eb_db_val(r, i, 1));
    cJSON_AddItemToObject(o, "export", cJSON_Parse(eb_db_val(r, i, 2)));
    cJSON_AddBoolToObject(o, "enabled", eb_db_val(r, i, 3)[0] == 't');
    cJSON_AddStringToObject(o, "next_run_at", eb_db_val(r, i, 4));
    if (eb_db_isnull(r, i, 5))
        cJSON_AddNullToObject(o, "last_job_id");
    else
        cJSON_AddStringToObject(o, "last_job_id", eb_db_val(r, i, 5));
    return o;
}

#define SCHEDULE_COLS                                                                              \
    "id, every, spec::text, enabled, to_char(next_run_at AT TIME ZONE 'UTC',"                      \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), last_job_id"

void api_schedules_create(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    cJSON *body = eb_http_req_json(req), *exp;
    const char *every = NULL;
    export_spec spec = {0};
    char id[37], *spec_text = NULL;
    const char *params[7];
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!body)
        return;
    st = eb_json_string(body, "every", true, 16, &every);
    if (st == EB_OK && strcmp(every, "hourly") && strcmp(every, "daily") && strcmp(every, "weekly"))
        st = eb_error(EB_ERR_INVALID, "every must be hourly, daily or weekly");
    exp = cJSON_GetObjectItemCaseSensitive(body, "export");
    if (st == EB_OK && !cJSON_IsObject(exp))
        st = eb_error(EB_ERR_INVALID, "export must be an object: the request POST /api/v1/exports"
                                      " takes");
    if (st == EB_OK)
        st = export_spec_parse(exp, ctx->cfg, &spec);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        goto cleanup;
    }
    if (!spec.anonymize && p->role < EB_ROLE_ADMIN) {
        eb_http_reply_error(req, EB_ERR_FORBIDDEN,
                            "turning anonymization off needs the admin role");
        goto cleanup;
    }
    eb_uuid_v4(id);
    spec_text = eb_json_print(exp);
    params[0] = p->team_id;
    params[1] = id;
    params[2] = p->team_slug;
    params[3] = every;
    params[4] = spec_text;
    params[5] = p->user_id[0] ? p->user_id : NULL;
    params[6] = p->key_id[0] ? p->key_id : NULL;
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        goto cleanup;
    st = eb_db_exec(c,
                    "INSERT INTO export.schedules (team_id, id, team_slug, every, spec,"
                    " next_run_at, created_by_user, created_by_key) VALUES ($1::uuid, $2::uuid,"
                    " $3, $4, $5::jsonb, now(), $6::uuid, $7::uuid) RETURNING " SCHEDULE_COLS,
                    7, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    eb_audit_send(ctx->svc.bus, p, eb_http_req_id(req), "export", "export_schedule_created", id,
                  body);
    eb_http_reply_json(req, 201, schedule_json(r, 0));
cleanup:
    free(spec_text);
    export_spec_clear(&spec);
    PQclear(r);
    cJSON_Delete(body);
}

void api_schedules_list(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *params[1] = {p->team_id};
    PGconn *c;
    PGresult *r = NULL;
    cJSON *root, *arr;
    eb_status st;

    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return;
    st = eb_db_exec(c,
                    "SELECT " SCHEDULE_COLS " FROM export.schedules WHERE team_id = $1::uuid"
                    " ORDER BY created_at, id LIMIT 1000",
                    1, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    root = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(root, "schedules");
    for (int i = 0; i < PQntuples(r); i++)
        cJSON_AddItemToArray(arr, schedule_json(r, i));
    eb_http_reply_json(req, 200, root);
cleanup:
    PQclear(r);
}

void api_schedules_delete(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    const char *params[2] = {p->team_id, id};
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!eb_uuid_valid(id)) {
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such schedule");
        return;
    }
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return;
    st = eb_db_exec(c,
                    "DELETE FROM export.schedules WHERE team_id = $1::uuid AND id = $2::uuid"
                    " RETURNING id",
                    2, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    if (PQntuples(r) != 1) {
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such schedule");
        goto cleanup;
    }
    eb_audit_send(ctx->svc.bus, p, eb_http_req_id(req), "export", "export_schedule_deleted", id,
                  NULL);
    eb_http_reply_json(req, 204, NULL);
cleanup:
    PQclear(r);
}
