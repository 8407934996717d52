/* worker.c -- export workers: take jobs from the JetStream work queue EXPORTS and run them.
 *
 * Each worker thread has its own NATS connection (pull consumer "export-worker", one message
 * at a time) and two PostgreSQL connections of its own: `data` runs the export's COPY, `ctl`
 * holds the job's lock and records progress while the COPY streams.
 *
 * One job runs on one worker at a time: the worker takes a session advisory lock on the job id
 * on ctl. A worker that dies loses its connections, PostgreSQL releases the lock, JetStream
 * redelivers the message after AckWait, and the next worker restarts the job cleanly: it aborts
 * the upload the dead attempt left (its id is recorded on the job) and starts again, so the
 * final object is always complete and exact and nothing partial is ever under the final name.
 * A worker that cannot take the lock (another one holds it) puts the message back for later.
 * While a job runs, a keep-alive thread tells JetStream every second that the message is in
 * progress (its AckWait never runs out under a live worker), and the pipeline's progress tick
 * reads the job's cancel flag about once a second; a cancel aborts the upload.
 *
 * Outcomes: succeeded (object completed, manifest written, result recorded, message acked);
 * failed (bad request such as an unknown field, or attempts used up); cancelled; or a
 * transient error (PostgreSQL, NATS or the object store away): the upload is aborted and the
 * message is put back with a delay.
 * Threading: each worker thread owns everything it touches; the only shared state is `stop`. */
#include "evalbus/clock.h"
#include "evalbus/crypto.h"
#include "evalbus/db.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "evalbus/v1/export.pb-c.h"
#include "export_int.h"

#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { MAX_WORKERS = 16 };

typedef struct worker {
    export_workers *ws;
    int index;
    pthread_t tid;
    eb_bus *bus;
    PGconn *ctl;
    PGconn *data;
} worker;

struct export_workers {
    export_ctx *ctx;
    atomic_bool stop;
    int n;
    worker w[MAX_WORKERS];
};

/* One attempt of one job. */
typedef struct job_run {
    worker *wk;
    natsMsg *msg;
    const export_config *cfg;
    char id[37];
    char team_id[37];
    char team_slug[64];
    eb_store *store;
    char *key;
    char *upload_id;
    eb_buf part;
    int part_no;
    uint64_t offset;
    eb_store_part *parts;
    char **etags;
    size_t nparts, cap;
    EVP_MD_CTX *sha;
    uint64_t total_rows;
    export_run *run; /* the pipeline's counts while it runs */
    long long started_ms;
    eb_status cancel; /* EB_ERR_CONFLICT once a cancel was seen */
} job_run;

static PGconn *connect_pg(const export_config *cfg, const char *what)
{
    PGconn *c = PQconnectdb(cfg->svc.database_url);

    if (PQstatus(c) != CONNECTION_OK) {
        eb_log_warn(NULL, "export worker: cannot connect to PostgreSQL (%s): %s", what,
                    PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static bool ensure_pg(worker *wk)
{
    const export_config *cfg = wk->ws->ctx->cfg;

    if (wk->ctl && PQstatus(wk->ctl) != CONNECTION_OK) {
        PQfinish(wk->ctl);
        wk->ctl = NULL;
    }
    if (wk->data && PQstatus(wk->data) != CONNECTION_OK) {
        PQfinish(wk->data);
        wk->data = NULL;
    }
    if (!wk->ctl)
        wk->ctl = connect_pg(cfg, "control");
    if (!wk->data)
        wk->data = connect_pg(cfg, "data");
    return wk->ctl && wk->data;
}

/* Runs sql on ctl in the job's team (set for the session while the job runs). */
static eb_status ctl_exec(job_run *jr, const char *sql, int n, const char *const *p, PGresult **r)
{
    return eb_db_exec(jr->wk->ctl, sql, n, p, r);
}

static void publish_progress(job_run *jr, const char *state, uint64_t rows, uint64_t bytes,
                             double rate, const char *error)
{
    Evalbus__V1__ExportProgress pm = EVALBUS__V1__EXPORT_PROGRESS__INIT;
    Evalbus__V1__Envelope env = EVALBUS__V1__ENVELOPE__INIT;
    char subject[96], eid[37];
    uint8_t *buf;
    size_t len;

    eb_uuid_v4(eid);
    env.event_id = eid;
    env.team_id = jr->team_id;
    env.occurred_at_unix_ms = (int64_t)time(NULL) * 1000;
    env.schema_version = 1;
    pm.envelope = &env;
    pm.job_id = jr->id;
    pm.state = (char *)state;
    pm.rows = rows;
    pm.bytes = bytes;
    pm.total_rows = jr->total_rows;
    pm.percent = jr->total_rows ? fmin(100.0, 100.0 * (double)rows / (double)jr->total_rows)
                                : (strcmp(state, "succeeded") == 0 ? 100 : 0);
    pm.rows_per_second = rate;
    pm.eta_seconds =
        rate > 0 && jr->total_rows >= rows ? (double)(jr->total_rows - rows) / rate : -1;
    pm.error_message = (char *)(error ? error : "");
    len = evalbus__v1__export_progress__get_packed_size(&pm);
    buf = eb_malloc(len ? len : 1);
    evalbus__v1__export_progress__pack(&pm, buf);
    snprintf(subject, sizeof(subject), "%s%s", EXPORTS_PROGRESS_PREFIX, jr->id);
    natsConnection_Publish(eb_bus_conn(jr->wk->bus), subject, buf, (int)len);
    free(buf);
}

/* Uploads the part buffer as the next part and records it. */
static eb_status flush_part(job_run *jr)
{
    char *etag = NULL;
    char no[16], bytes[32];
    const char *p[5];
    eb_status st;

    if (jr->part.len == 0)
        return EB_OK;
    jr->part_no++;
    st = eb_store_upload_part(jr->store, jr->key, jr->upload_id, jr->part_no, jr->offset,
                              jr->part.data, jr->part.len, &etag);
    if (st != EB_OK)
        return st;
    EVP_DigestUpdate(jr->sha, jr->part.data, jr->part.len);
    snprintf(no, sizeof(no), "%d", jr->part_no);
    snprintf(bytes, sizeof(bytes), "%zu", jr->part.len);
    p[0] = jr->team_id;
    p[1] = jr->id;
    p[2] = no;
    p[3] = etag;
    p[4] = bytes;
    st = ctl_exec(jr,
                  "INSERT INTO export.job_parts (team_id, job_id, part_no, etag, bytes) VALUES"
                  " ($1::uuid, $2::uuid, $3::int, $4, $5::bigint) ON CONFLICT (team_id, job_id,"
                  " part_no) DO UPDATE SET etag = EXCLUDED.etag, bytes = EXCLUDED.bytes",
                  5, p, NULL);
    if (jr->nparts == jr->cap) {
        jr->cap = jr->cap ? jr->cap * 2 : 16;
        jr->parts = eb_realloc(jr->parts, jr->cap * sizeof(*jr->parts));
        jr->etags = eb_realloc(jr->etags, jr->cap * sizeof(*jr->etags));
    }
    jr->etags[jr->nparts] = etag;
    jr->parts[jr->nparts].part_no = jr->part_no;
    jr->parts[jr->nparts].etag = etag;
    jr->nparts++;
    jr->offset += jr->part.len;
    jr->part.len = 0;
    return st;
}

static eb_status sink_write(void *arg, const void *data, size_t len)
{
    job_run *jr = arg;
    const char *p = data;
    size_t part_size = (size_t)jr->cfg->part_size;

    while (len > 0) {
        size_t take = part_size - jr->part.len < len ? part_size - jr->part.len : len;
        eb_buf_append(&jr->part, p, take);
        p += take;
        len -= take;
        if (jr->part.len >= part_size) {
            eb_status st = flush_part(jr);
            if (st != EB_OK)
                return st;
        }
    }
    return EB_OK;
}

static eb_status sink_tick(void *arg, uint64_t rows, uint64_t bytes)
{
    job_run *jr = arg;
    char srows[32], sbytes[32], stotal[32], srate[48];
    const char *p[6];
    double secs = (double)(eb_monotonic_ms() - jr->started_ms) / 1000.0;
    double rate = secs > 0.5 ? (double)rows / secs : 0;
    PGresult *r = NULL;
    eb_status st;

    if (jr->run)
        jr->total_rows = jr->run->total_rows;
    if (atomic_load(&jr->wk->ws->stop))
        return eb_error(EB_ERR_UNAVAILABLE, "the worker is shutting down");
    snprintf(srows, sizeof(srows), "%llu", (unsigned long long)rows);
    snprintf(sbytes, sizeof(sbytes), "%llu", (unsigned long long)bytes);
    snprintf(stotal, sizeof(stotal), "%llu", (unsigned long long)jr->total_rows);
    snprintf(srate, sizeof(srate), "%.3f", rate);
    p[0] = jr->team_id;
    p[1] = jr->id;
    p[2] = srows;
    p[3] = sbytes;
    p[4] = stotal;
    p[5] = srate;
    st = ctl_exec(jr,
                  "UPDATE export.jobs SET rows_done = $3::bigint, bytes_done = $4::bigint,"
                  " total_rows = $5::bigint, rate_rows = $6::float8, heartbeat_at = now()"
                  " WHERE team_id = $1::uuid AND id = $2::uuid RETURNING cancel_requested",
                  6, p, &r);
    if (st == EB_OK && PQntuples(r) == 1 && eb_db_val(r, 0, 0)[0] == 't')
        jr->cancel = eb_error(EB_ERR_CONFLICT, "the export was cancelled");
    else if (st == EB_OK && PQntuples(r) == 0)
        jr->cancel = eb_error(EB_ERR_CONFLICT, "the export is gone");
    PQclear(r);
    if (st != EB_OK)
        return st;
    publish_progress(jr, "running", rows, bytes, rate, NULL);
    return jr->cancel;
}

static void free_parts(job_run *jr)
{
    for (size_t i = 0; i < jr->nparts; i++)
        free(jr->etags[i]);
    free(jr->etags);
    free(jr->parts);
    jr->etags = NULL;
    jr->parts = NULL;
    jr->nparts = jr->cap = 0;
}

/* Aborts the upload of this or an earlier attempt and forgets its parts. */
static void abort_upload(job_run *jr, eb_store *store, const char *key, const char *upload_id)
{
    const char *p[2] = {jr->team_id, jr->id};

    if (store && key && upload_id && upload_id[0]) {
        eb_status st = eb_store_upload_abort(store, key, upload_id);
        if (st != EB_OK)
            eb_log_warn(NULL, "export %s: aborting upload %s failed: %s", jr->id, upload_id,
                        eb_error_message());
    }
    ctl_exec(jr,
             "UPDATE export.jobs SET upload_id = NULL WHERE team_id = $1::uuid AND id = $2::uuid",
             2, p, NULL);
    ctl_exec(jr, "DELETE FROM export.job_parts WHERE team_id = $1::uuid AND job_id = $2::uuid", 2,
             p, NULL);
}

static void audit(job_run *jr, const PGresult *job, const char *action, const cJSON *detail)
{
    eb_principal who = {0};

    snprintf(who.team_id, sizeof(who.team_id), "%s", jr->team_id);
    snprintf(who.team_slug, sizeof(who.team_slug), "%s", jr->team_slug);
    if (!eb_db_isnull(job, 0, 3))
        snprintf(who.user_id, sizeof(who.user_id), "%s", eb_db_val(job, 0, 3));
    if (!eb_db_isnull(job, 0, 4))
        snprintf(who.key_id, sizeof(who.key_id), "%s", eb_db_val(job, 0, 4));
    eb_audit_send(jr->wk->bus, &who, NULL, "export", action, jr->id, detail);
}

static const char *compression_ext(const char *c)
{
    return strcmp(c, "gzip") == 0 ? ".gz" : strcmp(c, "zstd") == 0 ? ".zst" : "";
}

static const char *compression_type(const char *c, const char *plain)
{
    return strcmp(c, "gzip") == 0   ? "application/gzip"
           : strcmp(c, "zstd") == 0 ? "application/zstd"
                                    : plain;
}

/* Runs an attempt: export, upload, manifest. On success fills *result. */
static eb_status run_attempt(job_run *jr, const PGresult *job, cJSON **result)
{
    const export_config *cfg = jr->cfg;
    export_run run = {0};
    export_sink sink = {sink_write, sink_tick, jr};
    cJSON *filter = NULL, *fields = NULL, *res = NULL, *manifest = NULL;
    const char *compression = eb_db_val(job, 0, 7);
    const char *p[4];
    char date[16], hexsum[65], *mkey = NULL, *mtext = NULL, *url = NULL, *fname = NULL;
    unsigned char sum[32];
    unsigned int sumlen = 0;
    time_t t = time(NULL);
    struct tm tm;
    eb_status st;

    (void)export_format_parse(eb_db_val(job, 0, 5), &run.format);
    filter = cJSON_Parse(eb_db_val(job, 0, 8));
    fields = cJSON_Parse(eb_db_val(job, 0, 9));
    run.team_id = jr->team_id;
    run.filter = filter;
    run.fields = fields;
    run.compression = compression;
    run.level = (int)(strcmp(compression, "zstd") == 0 ? cfg->zstd_level : cfg->gzip_level);
    run.anonymize = eb_db_val(job, 0, 6)[0] == 't';

    st =
        export_store_open(cfg, eb_db_isnull(job, 0, 10) ? NULL : eb_db_val(job, 0, 10), &jr->store);
    if (st != EB_OK)
        goto cleanup;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y-%m-%d", &tm);
    fname = eb_asprintf("%s-%s.%s%s", export_format_name(run.format), jr->id,
                        export_format_extension(run.format), compression_ext(compression));
    jr->key = eb_asprintf("%s/%s/%s", jr->team_slug, date, fname);
    st = eb_store_upload_begin(
        jr->store, jr->key, compression_type(compression, export_format_content_type(run.format)),
        &jr->upload_id);
    if (st != EB_OK)
        goto cleanup;
    p[0] = jr->team_id;
    p[1] = jr->id;
    p[2] = jr->key;
    p[3] = jr->upload_id;
    st = ctl_exec(jr,
                  "UPDATE export.jobs SET object_key = $3, upload_id = $4 WHERE team_id ="
                  " $1::uuid AND id = $2::uuid",
                  4, p, NULL);
    if (st != EB_OK)
        goto cleanup;
    jr->sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(jr->sha, EVP_sha256(), NULL);
    jr->started_ms = eb_monotonic_ms();
    jr->run = &run;

    /* tick sees total_rows through run once the count (running alongside) has it */
    run.count_rows = true;
    st = export_pipeline_run(jr->wk->data, &run, cfg, &sink);
    jr->total_rows = run.total_rows;
    jr->run = NULL;
    if (st == EB_OK && jr->cancel != EB_OK)
        st = jr->cancel;
    if (st != EB_OK)
        goto cleanup;
    if (jr->nparts == 0 && jr->part.len == 0) {
        /* nothing at all (no rows, no compression): an empty object */
        eb_store_upload_abort(jr->store, jr->key, jr->upload_id);
        st = eb_store_put(jr->store, jr->key, export_format_content_type(run.format), "", 0);
    } else {
        st = flush_part(jr);
        if (st == EB_OK)
            st = eb_store_upload_complete(jr->store, jr->key, jr->upload_id, jr->parts, jr->nparts);
    }
    if (st != EB_OK)
        goto cleanup;
    free(jr->upload_id);
    jr->upload_id = NULL;
    EVP_DigestFinal_ex(jr->sha, sum, &sumlen);
    eb_hex_encode(sum, 32, hexsum);
    eb_store_url(jr->store, jr->key, &url);

    res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "url", url ? url : jr->key);
    cJSON_AddStringToObject(res, "key", jr->key);
    cJSON_AddStringToObject(res, "file_name", fname);
    cJSON_AddStringToObject(res, "content_type",
                            compression_type(compression, export_format_content_type(run.format)));
    cJSON_AddNumberToObject(res, "rows", (double)run.records);
    cJSON_AddNumberToObject(res, "rows_read", (double)run.rows);
    cJSON_AddNumberToObject(res, "bytes", (double)run.bytes_out);
    cJSON_AddNumberToObject(res, "uncompressed_bytes", (double)run.bytes_raw);
    cJSON_AddStringToObject(res, "sha256", hexsum);
    cJSON_AddNumberToObject(res, "parts", (double)jr->nparts);
    cJSON_AddNumberToObject(res, "seconds", (double)(eb_monotonic_ms() - jr->started_ms) / 1000.0);
    cJSON_AddItemToObject(res, "statistics", run.statistics);
    run.statistics = NULL;

    /* the manifest beside the file: what it holds and how it was made */
    manifest = cJSON_CreateObject();
    cJSON_AddStringToObject(manifest, "job_id", jr->id);
    cJSON_AddStringToObject(manifest, "format", eb_db_val(job, 0, 5));
    cJSON_AddStringToObject(manifest, "compression", compression);
    cJSON_AddBoolToObject(manifest, "anonymize", run.anonymize);
    cJSON_AddItemToObject(manifest, "filter", cJSON_Duplicate(filter, true));
    cJSON_AddItemToObject(manifest, "fields", cJSON_Duplicate(fields, true));
    cJSON_AddItemToObject(manifest, "result", cJSON_Duplicate(res, true));
    mtext = eb_json_print(manifest);
    mkey = eb_asprintf("%s/%s/%s-%s.manifest.json", jr->team_slug, date,
                       export_format_name(run.format), jr->id);
    st = eb_store_put(jr->store, mkey, "application/json", mtext, strlen(mtext));
    if (st != EB_OK)
        goto cleanup;
    cJSON_AddStringToObject(res, "manifest_key", mkey);
    *result = res;
    res = NULL;
cleanup:
    if (run.statistics)
        cJSON_Delete(run.statistics);
    cJSON_Delete(filter);
    cJSON_Delete(fields);
    cJSON_Delete(res);
    cJSON_Delete(manifest);
    free(mkey);
    free(mtext);
    free(url);
    free(fname);
    return st;
}

static bool transient(eb_status st)
{
    return st == EB_ERR_UNAVAILABLE || st == EB_ERR_TIMEOUT || st == EB_ERR_IO || st == EB_ERR_DB;
}

static void finish(job_run *jr, const char *state, const cJSON *result, const cJSON *error)
{
    char *rj = result ? eb_json_print(result) : NULL, *ej = error ? eb_json_print(error) : NULL;
    const char *p[5] = {jr->team_id, jr->id, state, rj, ej};

    ctl_exec(jr,
             "UPDATE export.jobs SET state = $3, result = $4::jsonb, error = $5::jsonb,"
             " finished_at = now(), heartbeat_at = now(), upload_id = NULL,"
             " rows_done = coalesce(($4::jsonb->>'rows_read')::bigint, rows_done),"
             " total_rows = coalesce(($4::jsonb->>'rows_read')::bigint, total_rows),"
             " bytes_done = coalesce(($4::jsonb->>'bytes')::bigint, bytes_done)"
             " WHERE team_id = $1::uuid AND id = $2::uuid",
             5, p, NULL);
    ctl_exec(jr, "DELETE FROM export.job_parts WHERE team_id = $1::uuid AND job_id = $2::uuid", 2,
             p, NULL);
    free(rj);
    free(ej);
}

static cJSON *error_json(eb_status st, const char *message)
{
    cJSON *e = cJSON_CreateObject();

    cJSON_AddStringToObject(e, "code", eb_status_str(st));
    cJSON_AddStringToObject(e, "message", message);
    return e;
}

/* While a job runs, a small thread tells JetStream every second that its message is in
 * progress, whatever the pipeline is doing (a long count or sort before the first row, a slow
 * part upload): the message's AckWait never runs out under a live worker. */
typedef struct keepalive {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    natsMsg *msg;
    bool running, stop;
} keepalive;

static void *keepalive_main(void *arg)
{
    keepalive *ka = arg;
    struct timespec until;

    pthread_mutex_lock(&ka->mu);
    while (!ka->stop) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&ka->cv, &ka->mu, &until);
        if (!ka->stop)
            natsMsg_InProgress(ka->msg, NULL);
    }
    pthread_mutex_unlock(&ka->mu);
    return NULL;
}

static void keepalive_start(keepalive *ka, natsMsg *msg)
{
    ka->msg = msg;
    pthread_mutex_init(&ka->mu, NULL);
    pthread_cond_init(&ka->cv, NULL);
    ka->running = pthread_create(&ka->tid, NULL, keepalive_main, ka) == 0;
}

static void keepalive_stop(keepalive *ka)
{
    if (!ka->running)
        return;
    pthread_mutex_lock(&ka->mu);
    ka->stop = true;
    pthread_cond_signal(&ka->cv);
    pthread_mutex_unlock(&ka->mu);
    pthread_join(ka->tid, NULL);
    pthread_mutex_destroy(&ka->mu);
    pthread_cond_destroy(&ka->cv);
    ka->running = false;
}

/* How long ago JetStream stored msg (0 when unknown). */
static long long message_age_ms(natsMsg *msg)
{
    jsMsgMetaData *meta = NULL;
    long long age = 0;

    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        age = ((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec - meta->Timestamp) / 1000000;
        jsMsgMetaData_Destroy(meta);
    }
    return age;
}

/* Handles one work-queue message. */
static void handle(worker *wk, natsMsg *msg)
{
    export_ctx *ctx = wk->ws->ctx;
    Evalbus__V1__ExportJobQueued *q = NULL;
    job_run jr = {0};
    PGresult *job = NULL, *lr = NULL, *started = NULL;
    keepalive ka = {0};
    const char *p[2];
    cJSON *result = NULL, *err = NULL;
    eb_store *old_store = NULL;
    bool locked = false;
    eb_status st;

    q = evalbus__v1__export_job_queued__unpack(NULL, (size_t)natsMsg_GetDataLength(msg),
                                               (const uint8_t *)natsMsg_GetData(msg));
    if (!q || !q->envelope || !eb_uuid_valid(q->job_id) || !eb_uuid_valid(q->envelope->team_id)) {
        eb_log_error(NULL, "export worker: dropping an undecodable work-queue message");
        natsMsg_Term(msg, NULL);
        goto cleanup;
    }
    jr.wk = wk;
    jr.msg = msg;
    jr.cfg = ctx->cfg;
    snprintf(jr.id, sizeof(jr.id), "%s", q->job_id);
    snprintf(jr.team_id, sizeof(jr.team_id), "%s", q->envelope->team_id);
    if (!ensure_pg(wk)) {
        natsMsg_NakWithDelay(msg, 2000, NULL);
        goto cleanup;
    }
    p[0] = jr.team_id;
    p[1] = jr.id;
    st = eb_db_exec(wk->ctl, "SELECT pg_try_advisory_lock(hashtextextended($1, 7))", 1, p + 1, &lr);
    if (st != EB_OK) {
        eb_log_warn(NULL, "export %s: cannot lock the job, retrying: %s", jr.id,
                    eb_error_message());
        natsMsg_NakWithDelay(msg, 2000, NULL);
        goto cleanup;
    }
    if (eb_db_val(lr, 0, 0)[0] != 't') {
        /* Another worker holds the job. It keeps the message alive while it works, so this
         * delivery means it went quiet: come back later; once its lock is gone (the worker
         * died) or the job is finished, a later delivery settles it. */
        natsMsg_NakWithDelay(msg, ctx->cfg->job_ack_wait_ms, NULL);
        goto cleanup;
    }
    locked = true;
    st = eb_db_exec(wk->ctl, "SELECT set_config('evalbus.team_id', $1, false)", 1, p, NULL);
    if (st == EB_OK)
        st = eb_db_exec(wk->ctl,
                        "SELECT state, cancel_requested, attempts, created_by_user,"
                        " created_by_key, format, anonymize, compression, filter::text,"
                        " fields::text, destination, team_slug, object_key, upload_id"
                        " FROM export.jobs WHERE team_id = $1::uuid AND id = $2::uuid",
                        2, p, &job);
    if (st != EB_OK) {
        eb_log_warn(NULL, "export %s: cannot read the job, retrying: %s", jr.id,
                    eb_error_message());
        natsMsg_NakWithDelay(msg, 2000, NULL);
        goto cleanup;
    }
    if (PQntuples(job) != 1) {
        /* The API publishes before it commits: a young message may be ahead of its row. */
        if (message_age_ms(msg) < 60000) {
            natsMsg_NakWithDelay(msg, 500, NULL);
            goto cleanup;
        }
        eb_log_warn(NULL, "export worker: job %s of team %s does not exist; dropped", jr.id,
                    jr.team_id);
        natsMsg_Ack(msg, NULL);
        goto cleanup;
    }
    snprintf(jr.team_slug, sizeof(jr.team_slug), "%s", eb_db_val(job, 0, 11));
    if (strcmp(eb_db_val(job, 0, 0), "queued") != 0 && strcmp(eb_db_val(job, 0, 0), "running")) {
        natsMsg_Ack(msg, NULL); /* finished already */
        goto cleanup;
    }
    /* an earlier attempt died: its upload goes, the job starts over */
    if (!eb_db_isnull(job, 0, 13)) {
        if (export_store_open(ctx->cfg, eb_db_isnull(job, 0, 10) ? NULL : eb_db_val(job, 0, 10),
                              &old_store) == EB_OK)
            abort_upload(&jr, old_store, eb_db_val(job, 0, 12), eb_db_val(job, 0, 13));
    }
    if (eb_db_val(job, 0, 1)[0] == 't') {
        finish(&jr, "cancelled", NULL, NULL);
        publish_progress(&jr, "cancelled", 0, 0, 0, NULL);
        natsMsg_Ack(msg, NULL);
        goto cleanup;
    }
    if (atoi(eb_db_val(job, 0, 2)) >= ctx->cfg->max_attempts) {
        err = error_json(EB_ERR_UNAVAILABLE, "gave up after the attempts allowed (max-attempts)");
        finish(&jr, "failed", NULL, err);
        publish_progress(&jr, "failed", 0, 0, 0, "gave up");
        natsMsg_Ack(msg, NULL);
        goto cleanup;
    }
    st = eb_db_exec(wk->ctl,
                    "UPDATE export.jobs SET state = 'running', attempts = attempts + 1,"
                    " started_at = coalesce(started_at, now()), heartbeat_at = now(),"
                    " rows_done = 0, bytes_done = 0 WHERE team_id = $1::uuid AND id = $2::uuid"
                    " AND state IN ('queued', 'running') AND NOT cancel_requested RETURNING id",
                    2, p, &started);
    if (st != EB_OK) {
        eb_log_warn(NULL, "export %s: cannot start, retrying: %s", jr.id, eb_error_message());
        natsMsg_NakWithDelay(msg, 2000, NULL);
        goto cleanup;
    }
    if (PQntuples(started) != 1) {
        /* cancelled (or finished) between the read above and now */
        finish(&jr, "cancelled", NULL, NULL);
        natsMsg_Ack(msg, NULL);
        goto cleanup;
    }
    keepalive_start(&ka, msg);
    eb_log_info(NULL, "export %s: running (%s, team %s)", jr.id, eb_db_val(job, 0, 5),
                jr.team_slug);
    st = run_attempt(&jr, job, &result);
    keepalive_stop(&ka); /* before the message is acknowledged or put back */
    if (st == EB_OK) {
        cJSON *detail = cJSON_CreateObject();
        cJSON *rows = cJSON_GetObjectItemCaseSensitive(result, "rows");
        finish(&jr, "succeeded", result, NULL);
        publish_progress(&jr, "succeeded", (uint64_t)(rows ? rows->valuedouble : 0),
                         (uint64_t)cJSON_GetObjectItemCaseSensitive(result, "bytes")->valuedouble,
                         0, NULL);
        cJSON_AddStringToObject(detail, "format", eb_db_val(job, 0, 5));
        cJSON_AddNumberToObject(detail, "rows", rows ? rows->valuedouble : 0);
        cJSON_AddStringToObject(detail, "object", jr.key);
        audit(&jr, job, "export_completed", detail);
        cJSON_Delete(detail);
        eb_metrics_add("evalbus_export_jobs_total", "state=\"succeeded\"", 1);
        eb_log_info(NULL, "export %s: succeeded", jr.id);
        natsMsg_Ack(msg, NULL);
        goto cleanup;
    }
    /* something stopped the attempt: nothing partial stays behind */
    {
        char *message = eb_strdup(eb_error_message());
        abort_upload(&jr, jr.store, jr.key, jr.upload_id);
        if (st == EB_ERR_CONFLICT && jr.cancel != EB_OK) {
            finish(&jr, "cancelled", NULL, NULL);
            publish_progress(&jr, "cancelled", 0, 0, 0, NULL);
            eb_metrics_add("evalbus_export_jobs_total", "state=\"cancelled\"", 1);
            eb_log_info(NULL, "export %s: cancelled", jr.id);
            natsMsg_Ack(msg, NULL);
        } else if (transient(st) || atomic_load(&wk->ws->stop)) {
            eb_log_warn(NULL, "export %s: attempt stopped, will retry: %s", jr.id, message);
            natsMsg_NakWithDelay(msg, atomic_load(&wk->ws->stop) ? 0 : 5000, NULL);
        } else {
            err = error_json(st, message);
            finish(&jr, "failed", NULL, err);
            publish_progress(&jr, "failed", 0, 0, 0, message);
            eb_metrics_add("evalbus_export_jobs_total", "state=\"failed\"", 1);
            eb_log_error(NULL, "export %s: failed: %s", jr.id, message);
            natsMsg_Ack(msg, NULL);
        }
        free(message);
    }
cleanup:
    keepalive_stop(&ka);
    PQclear(started);
    if (locked && wk->ctl && PQstatus(wk->ctl) == CONNECTION_OK) {
        p[1] = jr.id;
        eb_db_exec(wk->ctl, "SELECT pg_advisory_unlock(hashtextextended($1, 7))", 1, p + 1, NULL);
        eb_db_exec(wk->ctl, "SELECT set_config('evalbus.team_id', '', false)", 0, NULL, NULL);
    }
    if (jr.sha)
        EVP_MD_CTX_free(jr.sha);
    free_parts(&jr);
    eb_buf_free(&jr.part);
    free(jr.key);
    free(jr.upload_id);
    eb_store_free(jr.store);
    eb_store_free(old_store);
    cJSON_Delete(result);
    cJSON_Delete(err);
    PQclear(job);
    PQclear(lr);
    if (q)
        evalbus__v1__export_job_queued__free_unpacked(q, NULL);
}

static void *worker_main(void *arg)
{
    worker *wk = arg;
    export_workers *ws = wk->ws;
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsErrCode jerr = 0;
    natsStatus s;
    char name[64];

    snprintf(name, sizeof(name), "evalbus-export-worker-%d", wk->index);
    while (!atomic_load(&ws->stop) &&
           eb_bus_connect(NULL, ws->ctx->cfg->svc.nats_url, name, 0, &wk->bus) != EB_OK)
        sleep(1);
    jsSubOptions_Init(&so);
    so.Stream = EXPORTS_STREAM;
    so.Consumer = EXPORTS_WORKER_DURABLE;
    while (!atomic_load(&ws->stop) && wk->bus) {
        s = js_PullSubscribe(&sub, eb_bus_js(wk->bus), EXPORTS_SUBJECT_PREFIX ">",
                             EXPORTS_WORKER_DURABLE, NULL, &so, &jerr);
        if (s == NATS_OK)
            break;
        eb_log_warn(NULL, "export worker %d: cannot bind to %s/%s yet: %s", wk->index,
                    EXPORTS_STREAM, EXPORTS_WORKER_DURABLE, natsStatus_GetText(s));
        sleep(1);
    }
    while (!atomic_load(&ws->stop)) {
        natsMsgList list = {0};
        s = natsSubscription_Fetch(&list, sub, 1, 500, &jerr);
        if (s == NATS_OK) {
            for (int i = 0; i < list.Count; i++)
                handle(wk, list.Msgs[i]);
        } else if (s != NATS_TIMEOUT) {
            usleep(200000);
        }
        natsMsgList_Destroy(&list);
    }
    if (sub) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
    PQfinish(wk->ctl);
    PQfinish(wk->data);
    wk->ctl = wk->data = NULL;
    eb_bus_close(wk->bus);
    wk->bus = NULL;
    return NULL;
}

export_workers *export_workers_start(export_ctx *ctx)
{
    export_workers *ws = eb_calloc(1, sizeof(*ws));

    ws->ctx = ctx;
    ws->n = (int)ctx->cfg->workers;
    if (ws->n > MAX_WORKERS)
        ws->n = MAX_WORKERS;
    eb_metrics_describe("evalbus_export_jobs_total", "counter", "Export jobs finished, by state");
    for (int i = 0; i < ws->n; i++) {
        ws->w[i].ws = ws;
        ws->w[i].index = i;
        pthread_create(&ws->w[i].tid, NULL, worker_main, &ws->w[i]);
    }
    return ws;
}

void export_workers_stop(export_workers *ws)
{
    if (!ws)
        return;
    atomic_store(&ws->stop, true);
    for (int i = 0; i < ws->n; i++)
        pthread_join(ws->w[i].tid, NULL);
    free(ws);
}
