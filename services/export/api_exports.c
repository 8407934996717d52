/* api_exports.c -- the export HTTP API: create, list, read, cancel and download export jobs,
 * follow their progress as server-sent events, and the team's export settings.
 * Jobs are rows of export.jobs (team-scoped, row-level security) plus one message on the
 * JetStream work queue EXPORTS. Creation takes a transaction-level advisory lock on the team so
 * that two concurrent requests cannot both pass the limit of active jobs; the message is
 * published before COMMIT, so a job the caller sees always has its message (a message whose job
 * did not commit is dropped by the worker).
 * Every request, download and cancellation is audited through the auth service.
 * Threading: every route here is a blocking route: its queries run on the API threads (pooled
 * connections; creation also waits for the EXPORTS stream on queue_bus), touching no loop state.
 * A download of a local file and an event stream then go on on the loop thread
 * (eb_http_req_on_loop), which sends the file or keeps the stream and its timer; the stream's
 * reads run on the API threads again. A download's file is checked against the job's result
 * before it is handed to the loop, and carries its attachment name only when it is actually
 * sent (eb_http_reply_file): an error never comes as an attachment. The loop keeps the open
 * event streams in a list, and ends them all when shutdown begins (export_events_stop). */
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/v1/export.pb-c.h"
#include "export_int.h"
#include "redact.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void audit(export_ctx *ctx, eb_http_req *req, const char *action, const char *target,
                  const cJSON *detail)
{
    eb_audit_send(ctx->svc.bus, eb_http_req_principal(req), eb_http_req_id(req), "export", action,
                  target, detail);
}

eb_status export_job_enqueue(eb_bus *bus, const char *team_id, const char *team_slug,
                             const char *job_id)
{
    Evalbus__V1__ExportJobQueued q = EVALBUS__V1__EXPORT_JOB_QUEUED__INIT;
    Evalbus__V1__Envelope env = EVALBUS__V1__ENVELOPE__INIT;
    jsPubOptions po;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    char subject[160], eid[37];
    uint8_t *buf;
    size_t len;
    natsStatus s;

    eb_uuid_v4(eid);
    env.event_id = eid;
    env.team_id = (char *)team_id;
    env.occurred_at_unix_ms = (int64_t)time(NULL) * 1000;
    env.schema_version = 1;
    q.envelope = &env;
    q.job_id = (char *)job_id;
    len = evalbus__v1__export_job_queued__get_packed_size(&q);
    buf = eb_malloc(len ? len : 1);
    evalbus__v1__export_job_queued__pack(&q, buf);
    snprintf(subject, sizeof(subject), "%s%s", EXPORTS_SUBJECT_PREFIX, team_slug);
    jsPubOptions_Init(&po);
    po.MsgId = job_id;
    po.MaxWait = 2000;
    s = js_Publish(&ack, eb_bus_js(bus), subject, buf, (int)len, &po, &jerr);
    free(buf);
    jsPubAck_Destroy(ack);
    if (s != NATS_OK)
        return eb_error(EB_ERR_UNAVAILABLE, "the export queue (NATS JetStream) is unavailable: %s",
                        natsStatus_GetText(s));
    return EB_OK;
}

eb_status export_job_insert(PGconn *conn, const eb_principal *p, const export_spec *spec,
                            const char *schedule_id, char id_out[37])
{
    char *filter = eb_json_print(spec->filter), *fields = eb_json_print(spec->fields);
    const char *params[11];
    eb_status st;

    eb_uuid_v4(id_out);
    params[0] = p->team_id;
    params[1] = id_out;
    params[2] = p->team_slug;
    params[3] = export_format_name(spec->format);
    params[4] = spec->compression;
    params[5] = spec->anonymize ? "true" : "false";
    params[6] = filter;
    params[7] = fields;
    params[8] = spec->destination;
    params[9] = p->user_id[0] ? p->user_id : NULL;
    params[10] = p->key_id[0] ? p->key_id : NULL;
    st = eb_db_exec(conn,
                    "INSERT INTO export.jobs (team_id, id, team_slug, format, compression,"
                    " anonymize, filter, fields, destination, created_by_user, created_by_key,"
                    " schedule_id) VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6::boolean,"
                    " $7::jsonb, $8::jsonb, $9, $10::uuid, $11::uuid, NULL)",
                    11, params, NULL);
    if (st == EB_OK && schedule_id) {
        const char *sp[3] = {p->team_id, id_out, schedule_id};
        st = eb_db_exec(conn,
                        "UPDATE export.jobs SET schedule_id = $3::uuid WHERE team_id = $1::uuid"
                        " AND id = $2::uuid",
                        3, sp, NULL);
    }
    free(filter);
    free(fields);
    return st;
}

/* Reads one job of the caller's team on conn; NULL result rows when it does not exist. */
static eb_status read_job(PGconn *conn, const char *team_id, const char *id, PGresult **r)
{
    const char *p[2] = {team_id, id};

    return eb_db_exec(conn,
                      "SELECT " EXPORT_JOB_COLS " FROM export.jobs WHERE team_id = $1::uuid AND"
                      " id = $2::uuid",
                      2, p, r);
}

static bool valid_id(eb_http_req *req, const char *id)
{
    if (eb_uuid_valid(id))
        return true;
    eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such export");
    return false;
}

/* Reads job id of the caller's team in a transaction of the request. Returns the row, or NULL
 * when it has answered already (404 for a malformed or unknown id, or the database's error). */
static PGresult *load_job(export_ctx *ctx, eb_http_req *req, const char *id)
{
    const eb_principal *p = eb_http_req_principal(req);
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!valid_id(req, id))
        return NULL;
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return NULL;
    st = read_job(c, p->team_id, id, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return NULL;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c)) {
        PQclear(r);
        return NULL;
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such export");
        return NULL;
    }
    return r;
}

void api_exports_create(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    cJSON *body = eb_http_req_json(req), *detail = NULL, *job = NULL;
    export_spec spec = {0};
    PGconn *c = NULL;
    PGresult *r = NULL;
    const char *params[1] = {p->team_id};
    char id[37];
    eb_status st;

    if (!body)
        return;
    st = export_spec_parse(body, ctx->cfg, &spec);
    cJSON_Delete(body);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        return;
    }
    if (!spec.anonymize && p->role < EB_ROLE_ADMIN) {
        audit(ctx, req, "export_denied", "anonymize", NULL);
        eb_http_reply_error(req, EB_ERR_FORBIDDEN,
                            "turning anonymization off needs the admin role");
        goto cleanup;
    }
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        goto cleanup;
    st = eb_db_exec(c, "SELECT pg_advisory_xact_lock(hashtextextended($1, 11))", 1, params, NULL);
    if (st == EB_OK)
        st = eb_db_exec(c,
                        "SELECT count(*) FROM export.jobs WHERE team_id = $1::uuid AND state IN"
                        " ('queued', 'running')",
                        1, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        goto cleanup;
    }
    if (atoll(eb_db_val(r, 0, 0)) >= ctx->cfg->max_active_jobs) {
        eb_error(EB_ERR_RATE_LIMITED,
                 "the team has %lld exports queued or running; the limit (max-active-jobs) is %lld",
                 atoll(eb_db_val(r, 0, 0)), ctx->cfg->max_active_jobs);
        eb_http_add_header(req, "Retry-After", "10");
        eb_req_db_fail(ctx->svc.db, req, c, EB_ERR_RATE_LIMITED);
        goto cleanup;
    }
    PQclear(r);
    r = NULL;
    st = export_job_insert(c, p, &spec, NULL, id);
    if (st == EB_OK)
        st = read_job(c, p->team_id, id, &r);
    if (st == EB_OK)
        st = export_job_enqueue(ctx->queue_bus, p->team_id, p->team_slug, id);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    job = export_job_json(r, 0);
    detail = cJSON_CreateObject();
    cJSON_AddStringToObject(detail, "format", export_format_name(spec.format));
    cJSON_AddItemToObject(detail, "filter", cJSON_Duplicate(spec.filter, true));
    cJSON_AddBoolToObject(detail, "anonymize", spec.anonymize);
    cJSON_AddStringToObject(detail, "compression", spec.compression);
    audit(ctx, req, "export_requested", id, detail);
    {
        char loc[64];
        snprintf(loc, sizeof(loc), "/api/v1/exports/%s", id);
        eb_http_add_header(req, "Location", loc);
    }
    eb_http_reply_json(req, 202, job);
cleanup:
    cJSON_Delete(detail);
    PQclear(r);
    export_spec_clear(&spec);
}

void api_exports_get(eb_http_req *req, void *vctx)
{
    PGresult *r = load_job(vctx, req, eb_http_req_param(req, "id"));

    if (!r)
        return;
    eb_http_reply_json(req, 200, export_job_json(r, 0));
    PQclear(r);
}

void api_exports_list(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *state = eb_http_req_query(req, "state"), *lim = eb_http_req_query(req, "limit");
    const char *cursor = eb_http_req_query(req, "cursor");
    const char *params[5] = {p->team_id, state, NULL, NULL, NULL};
    char limbuf[24];
    long limit = 50;
    eb_buf raw = {0};
    char *bar;
    PGconn *c;
    PGresult *r = NULL;
    cJSON *root, *arr;
    eb_status st;
    int n;

    if (lim) {
        long long v;
        if (!eb_http_parse_count(lim, 1, 200, &v)) {
            eb_http_reply_error(req, EB_ERR_INVALID, "limit must be an integer from 1 to 200");
            return;
        }
        limit = (long)v;
    }
    if (state && strcmp(state, "queued") && strcmp(state, "running") &&
        strcmp(state, "succeeded") && strcmp(state, "failed") && strcmp(state, "cancelled")) {
        eb_http_reply_error(req, EB_ERR_INVALID,
                            "state must be queued, running, succeeded, failed or cancelled");
        return;
    }
    if (cursor) {
        if (!eb_base64url_decode(cursor, strlen(cursor), &raw) ||
            (bar = memchr(raw.data, '|', raw.len)) == NULL || !eb_uuid_valid(bar + 1)) {
            eb_buf_free(&raw);
            eb_http_reply_error(req, EB_ERR_INVALID, "cursor is not one this API returned");
            return;
        }
        *bar = '\0';
        params[2] = raw.data;
        params[3] = bar + 1;
    }
    snprintf(limbuf, sizeof(limbuf), "%ld", limit + 1);
    params[4] = limbuf;
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        goto cleanup;
    st = eb_db_exec(c,
                    "SELECT " EXPORT_JOB_COLS " FROM export.jobs WHERE team_id ="
                    " $1::uuid AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR"
                    " (created_at, id) < ($3::timestamptz, $4::uuid)) ORDER BY created_at DESC,"
                    " id DESC LIMIT $5::int",
                    5, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    root = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(root, "exports");
    n = PQntuples(r);
    for (int i = 0; i < n && i < limit; i++)
        cJSON_AddItemToArray(arr, export_job_json(r, i));
    if (n > limit) {
        eb_buf cur = {0}, enc = {0};
        /* column 8: created_at as EXPORT_JOB_TIME writes it (microseconds, UTC) */
        eb_buf_printf(&cur, "%s|%s", eb_db_val(r, (int)limit - 1, 8),
                      eb_db_val(r, (int)limit - 1, 0));
        eb_base64url_encode(cur.data, cur.len, &enc);
        cJSON_AddStringToObject(root, "next_cursor", enc.data);
        eb_buf_free(&cur);
        eb_buf_free(&enc);
    } else {
        cJSON_AddNullToObject(root, "next_cursor");
    }
    eb_http_reply_json(req, 200, root);
cleanup:
    eb_buf_free(&raw);
    PQclear(r);
}

void api_exports_cancel(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    const char *params[2] = {p->team_id, id};
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!valid_id(req, id))
        return;
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        return;
    st = eb_db_exec(c,
                    "UPDATE export.jobs SET cancel_requested = true,"
                    " state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,"
                    " finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END"
                    " WHERE team_id = $1::uuid AND id = $2::uuid AND state IN ('queued',"
                    " 'running') RETURNING id",
                    2, params, &r);
    if (st == EB_OK) {
        bool changed = PQntuples(r) == 1;
        PQclear(r);
        r = NULL;
        st = read_job(c, p->team_id, id, &r);
        if (st == EB_OK && PQntuples(r) == 1 && !changed) {
            eb_error(EB_ERR_CONFLICT, "the export has already %s", eb_db_val(r, 0, 1));
            st = EB_ERR_CONFLICT;
        }
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    if (PQntuples(r) != 1) {
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such export");
        goto cleanup;
    }
    audit(ctx, req, "export_cancelled", id, NULL);
    eb_http_reply_json(req, 200, export_job_json(r, 0));
cleanup:
    PQclear(r);
}

/* A local store's file, opened on the API thread and sent from the loop. */
typedef struct download_file {
    int fd;
    size_t size;
    char *content_type;
    char *file_name;
} download_file;

static void download_send(eb_http_req *req, void *arg)
{
    download_file *f = arg;

    /* the attachment header goes out with the file only, never with an error instead of it */
    eb_http_reply_file(req, 200, f->content_type, f->file_name, f->fd, f->size);
    free(f->content_type);
    free(f->file_name);
    free(f);
}

/* Opens the file of key in a local store, checked against what the export wrote (a regular file
 * of result.bytes, when the result says). Returns the descriptor, or -1 when it has answered
 * (404 when the file is gone, else 500 io_error). */
static int open_local_file(eb_http_req *req, eb_store *store, const char *key, const cJSON *bytes,
                           struct stat *sb)
{
    char *path = NULL;
    int fd = -1, err;
    bool ok = false;
    eb_status st;

    st = eb_store_local_path(store, key, &path);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        goto cleanup;
    }
    /* O_NONBLOCK: a FIFO in its place is refused below instead of holding the thread */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 || fstat(fd, sb) != 0) {
        err = errno;
        eb_log_write(err == ENOENT ? EB_LOG_WARN : EB_LOG_ERROR, eb_http_req_id(req), NULL,
                     "cannot open the export's file %s: %s", path, strerror(err));
        eb_http_reply_error(req, err == ENOENT ? EB_ERR_NOT_FOUND : EB_ERR_IO,
                            err == ENOENT ? "the export's file is not in the store any more"
                                          : "the export's file cannot be read");
        goto cleanup;
    }
    if (!S_ISREG(sb->st_mode))
        eb_log_error(eb_http_req_id(req), "the export's file %s is not a regular file", path);
    else if (cJSON_IsNumber(bytes) && (double)sb->st_size != bytes->valuedouble)
        eb_log_error(eb_http_req_id(req),
                     "the export's file %s has %lld bytes; the export wrote %.0f", path,
                     (long long)sb->st_size, bytes->valuedouble);
    else
        ok = true;
    if (!ok)
        eb_http_reply_error(req, EB_ERR_IO,
                            "the export's file in the store is not the one the export wrote;"
                            " export again");
cleanup:
    if (!ok && fd >= 0) {
        close(fd);
        fd = -1;
    }
    free(path);
    return fd;
}

void api_exports_download(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const char *id = eb_http_req_param(req, "id");
    PGresult *r = load_job(ctx, req, id);
    cJSON *job = NULL, *res, *key, *fname, *ctype;
    eb_store *store = NULL;
    char *url = NULL;
    struct stat sb;
    download_file *f;
    int fd;
    eb_status st;

    if (!r)
        return;
    job = export_job_json(r, 0);
    res = cJSON_GetObjectItemCaseSensitive(job, "result");
    key = cJSON_GetObjectItemCaseSensitive(res, "key");
    fname = cJSON_GetObjectItemCaseSensitive(res, "file_name");
    ctype = cJSON_GetObjectItemCaseSensitive(res, "content_type");
    if (strcmp(eb_db_val(r, 0, 1), "succeeded") != 0 || !cJSON_IsString(key)) {
        eb_http_reply_error(req, EB_ERR_CONFLICT, "the export has not succeeded (it is %s)",
                            eb_db_val(r, 0, 1));
        goto cleanup;
    }
    st = export_store_open(ctx->cfg, eb_db_isnull(r, 0, 7) ? NULL : eb_db_val(r, 0, 7), &store);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        goto cleanup;
    }
    audit(ctx, req, "export_downloaded", id, NULL);
    if (strcmp(eb_store_scheme(store), "s3") == 0) {
        st = eb_store_presign_get(store, key->valuestring,
                                  (int)(ctx->cfg->presign_expiry_ms / 1000), &url);
        if (st != EB_OK) {
            eb_http_reply_status(req, st);
            goto cleanup;
        }
        eb_http_add_header(req, "Location", url);
        eb_http_reply_json(req, 302, NULL);
        goto cleanup;
    }
    fd = open_local_file(req, store, key->valuestring,
                         cJSON_GetObjectItemCaseSensitive(res, "bytes"), &sb);
    if (fd < 0)
        goto cleanup;
    f = eb_malloc(sizeof(*f));
    f->fd = fd;
    f->size = (size_t)sb.st_size;
    f->content_type =
        eb_strdup(cJSON_IsString(ctype) ? ctype->valuestring : "application/octet-stream");
    f->file_name = eb_strdup(cJSON_IsString(fname) ? fname->valuestring : "export");
    eb_http_req_on_loop(req, download_send, f);
cleanup:
    cJSON_Delete(job);
    eb_store_free(store);
    free(url);
    PQclear(r);
}

/* ---- progress as server-sent events: the job row, read once a second on an API thread, sent
 * from the loop when it changes; the stream ends with the job (event "done"), after an hour, or
 * when the service shuts down (export_events_stop).
 * The watch belongs to the loop, and is listed in ctx->watches from its start to its end; while
 * its read runs (reading), the read's fields (st, r) are the API thread's, and the watch is ended
 * by the read's return only. ---- */

struct sse_watch {
    export_ctx *ctx;
    eb_http_req *req;
    struct event *timer;
    LIST_ENTRY(sse_watch) link; /* ctx->watches */
    char team_id[41];
    char id[37];
    char *last;
    int ticks;
    bool gone;
    bool reading;
    /* the read's result (API thread, then the loop) */
    eb_status st;
    PGresult *r;
};

/* Ends the stream (a client still there gets its terminating chunk) and frees the watch. */
static void sse_end(sse_watch *w)
{
    LIST_REMOVE(w, link);
    eb_http_stream_end(w->req);
    event_free(w->timer);
    free(w->last);
    free(w);
}

static void sse_closed(void *arg)
{
    sse_watch *w = arg;

    w->gone = true;
}

static void sse_read(void *arg)
{
    sse_watch *w = arg;
    PGconn *c = eb_db_get(w->ctx->svc.db);

    w->st = EB_ERR_UNAVAILABLE;
    w->r = NULL;
    if (!c)
        return;
    w->st = eb_db_begin_team(c, w->team_id);
    if (w->st == EB_OK)
        w->st = read_job(c, w->team_id, w->id, &w->r);
    if (w->st == EB_OK)
        w->st = eb_db_commit(c);
    else
        eb_db_rollback(c);
    eb_db_put(w->ctx->svc.db, c);
}

static void sse_read_done(void *arg)
{
    sse_watch *w = arg;
    PGresult *r = w->r;
    bool done = false;
    struct timeval one = {1, 0};

    w->r = NULL;
    w->reading = false;
    if (w->gone) {
        PQclear(r);
        sse_end(w);
        return;
    }
    if (w->st == EB_OK && PQntuples(r) == 1) {
        cJSON *job = export_job_json(r, 0);
        char *s = eb_json_print(job);
        const char *state = eb_db_val(r, 0, 1);
        done = strcmp(state, "queued") != 0 && strcmp(state, "running") != 0;
        if (!w->last || strcmp(s, w->last) != 0 || done) {
            eb_buf ev = {0};
            eb_buf_printf(&ev, "event: %s\ndata: %s\n\n", done ? "done" : "progress", s);
            eb_http_stream_write(w->req, ev.data, ev.len);
            eb_buf_free(&ev);
            free(w->last);
            w->last = s;
            s = NULL;
        } else if (w->ticks % 15 == 0) {
            eb_http_stream_write(w->req, ": keep-alive\n\n", 14);
        }
        free(s);
        cJSON_Delete(job);
    } else if (w->st == EB_OK) {
        done = true; /* deleted meanwhile */
    }
    PQclear(r);
    /* stopping: the read ran into the shutdown (export_events_stop left the watch to it) */
    if (done || w->ctx->stopping || ++w->ticks > 3600) {
        sse_end(w);
        return;
    }
    event_add(w->timer, &one);
}

static void sse_tick(evutil_socket_t fd, short what, void *arg)
{
    sse_watch *w = arg;

    (void)fd;
    (void)what;
    if (w->gone) {
        sse_end(w);
        return;
    }
    w->reading = true;
    eb_pool_submit(w->ctx->svc.api, sse_read, sse_read_done, w);
}

/* On the loop, once the job is known to be the caller's: the stream starts, the first read now.
 * Once the service is shutting down, the stream ends at once instead, without an event, as the
 * open ones did (export_events_stop): the client connects again, to another replica. (Not a 503:
 * a browser's EventSource gives up on an error status, but reconnects after a stream's end.) */
static void sse_start(eb_http_req *req, void *arg)
{
    sse_watch *w = arg;
    export_ctx *ctx = w->ctx;
    struct timeval now = {0, 0};

    eb_http_add_header(req, "X-Accel-Buffering", "no");
    if (ctx->stopping) {
        free(w);
        eb_http_stream_start(req, 200, "text/event-stream", NULL, NULL);
        eb_http_stream_end(req);
        return;
    }
    w->timer = evtimer_new(ctx->svc.base, sse_tick, w);
    LIST_INSERT_HEAD(&ctx->watches, w, link);
    eb_http_stream_start(req, 200, "text/event-stream", sse_closed, w);
    event_add(w->timer, &now);
}

void export_events_stop(export_ctx *ctx)
{
    sse_watch *w = LIST_FIRST(&ctx->watches), *next;

    ctx->stopping = true;
    for (; w; w = next) {
        next = LIST_NEXT(w, link);
        if (!w->reading) /* else its read's return ends it (sse_read_done) */
            sse_end(w);
    }
}

void api_exports_events(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    PGresult *r = load_job(ctx, req, id);
    sse_watch *w;

    if (!r)
        return;
    PQclear(r);
    w = eb_calloc(1, sizeof(*w));
    w->ctx = ctx;
    w->req = req;
    snprintf(w->team_id, sizeof(w->team_id), "%s", p->team_id);
    snprintf(w->id, sizeof(w->id), "%s", id);
    eb_http_req_on_loop(req, sse_start, w);
}

/* ---- the team's export settings: its own redaction patterns ---- */

void api_export_settings_get(eb_http_req *req, void *vctx)
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
                    "SELECT label, regex FROM export.team_patterns WHERE team_id = $1::uuid"
                    " ORDER BY label",
                    1, params, &r);
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        return;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    root = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(root, "patterns");
    for (int i = 0; i < PQntuples(r); i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "label", eb_db_val(r, i, 0));
        cJSON_AddStringToObject(o, "regex", eb_db_val(r, i, 1));
        cJSON_AddItemToArray(arr, o);
    }
    eb_http_reply_json(req, 200, root);
cleanup:
    PQclear(r);
}

void api_export_settings_put(eb_http_req *req, void *vctx)
{
    export_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    cJSON *body = eb_http_req_json(req);
    const cJSON *arr, *it;
    redact_pattern pats[REDACT_MAX_PATTERNS];
    redact_config rc = {0};
    redactor *probe = NULL;
    static const unsigned char dummy[REDACT_KEY_MIN] = {1};
    size_t n = 0;
    PGconn *c;
    const char *params[3] = {p->team_id, NULL, NULL};
    eb_status st;

    if (!body)
        return;
    arr = cJSON_GetObjectItemCaseSensitive(body, "patterns");
    if (!cJSON_IsArray(arr)) {
        eb_http_reply_error(req, EB_ERR_INVALID,
                            "patterns must be an array of {\"label\", \"regex\"} objects");
        goto cleanup;
    }
    if (cJSON_GetArraySize(arr) > REDACT_MAX_PATTERNS) {
        eb_http_reply_error(req, EB_ERR_INVALID, "at most %d patterns", REDACT_MAX_PATTERNS);
        goto cleanup;
    }
    cJSON_ArrayForEach(it, arr)
    {
        const char *label = NULL, *regex = NULL;
        st = eb_json_string(it, "label", true, REDACT_LABEL_MAX, &label);
        if (st == EB_OK)
            st = eb_json_string(it, "regex", true, REDACT_REGEX_MAX, &regex);
        if (st != EB_OK) {
            eb_http_reply_error(req, EB_ERR_INVALID, "patterns[%zu]: %s", n, eb_error_message());
            goto cleanup;
        }
        pats[n].label = label;
        pats[n].regex = regex;
        n++;
    }
    /* compile them now: a bad pattern is refused here, not in the middle of an export */
    rc.key = dummy;
    rc.key_len = sizeof(dummy);
    rc.patterns = pats;
    rc.n_patterns = n;
    st = redact_new(&rc, &probe);
    redact_free(probe);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        goto cleanup;
    }
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        goto cleanup;
    st =
        eb_db_exec(c, "DELETE FROM export.team_patterns WHERE team_id = $1::uuid", 1, params, NULL);
    for (size_t i = 0; i < n && st == EB_OK; i++) {
        params[1] = pats[i].label;
        params[2] = pats[i].regex;
        st = eb_db_exec(c,
                        "INSERT INTO export.team_patterns (team_id, label, regex) VALUES"
                        " ($1::uuid, $2, $3)",
                        3, params, NULL);
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st == EB_ERR_CONFLICT ? EB_ERR_INVALID : st);
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    audit(ctx, req, "export_patterns_changed", "patterns", body);
    eb_http_reply_json(req, 200, cJSON_Duplicate(body, true));
cleanup:
    cJSON_Delete(body);
}
