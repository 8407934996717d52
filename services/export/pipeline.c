/* pipeline.c -- one export run: rows out of PostgreSQL, through the format writer (which
 * redacts and counts statistics), through the compressor, into a sink.
 *
 * Rows come from COPY (SELECT <the record's columns> ...) TO STDOUT (FORMAT binary) inside one
 * REPEATABLE READ READ ONLY transaction, so the rows, the statistics and the total (counted on
 * a connection of its own in the same, exported, snapshot while the rows stream) describe one
 * snapshot, and memory holds a few batches of rows whatever the size of the export. Binary COPY
 * hands text over as raw UTF-8 (no unescaping) and the record is built here from the columns
 * (record.c), which spares the database the JSON work. Rows are formatted on a pool of
 * threads (format_pool.c; the json format on this thread), the output compressed in 256 KiB
 * steps (gzip through zlib, zstd through libzstd's streaming API, on a thread of their own) and
 * handed to the sink, which cuts parts and uploads them. About once a second the sink's tick
 * learns the counts (progress, cancellation).
 *
 * Ownership: the caller owns conn (a connection of its own: a COPY occupies it) and run; on
 * return run->statistics (when set) belongs to the caller. Threading: one run per thread. */
#include "evalbus/clock.h"
#include "evalbus/arena.h"
#include "evalbus/crypto.h"
#include "evalbus/db.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "export_int.h"
#include "format_pool.h"
#include "record.h"
#include "redact.h"
#include "stats.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
#include <zstd.h>

enum {
    FEED_STEP = 256 * 1024, /* formatted bytes collected before compressing */
    FORMAT_THREADS = 2,     /* threads formatting rows (formats whose records stand alone) */
    TICK_ROWS = 512,        /* rows between clock checks */
};

/* The compressor runs on a thread of its own, one step behind the formatting: while it
 * compresses step n, the calling thread formats step n+1 (as psql | gzip runs in two
 * processes). Every sink call stays on the calling thread. Without compression there is no
 * thread and the formatted bytes go straight to the sink. */
typedef struct compressor {
    int kind; /* 0 none, 1 gzip, 2 zstd */
    z_stream z;
    ZSTD_CStream *zs;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, busy, last, quit;
    eb_buf in;  /* the step being compressed (owned by the thread while busy) */
    eb_buf out; /* its compressed output (read by the caller once not busy) */
    eb_status st;
    char err[128];
} compressor;

/* Compresses c->in into c->out (finishing the stream when c->last). Compressor thread. */
static eb_status comp_step(compressor *c)
{
    if (c->kind == 1) {
        int flush = c->last ? Z_FINISH : Z_NO_FLUSH, zr;
        c->z.next_in = (Bytef *)c->in.data;
        c->z.avail_in = (uInt)c->in.len;
        do {
            eb_buf_reserve(&c->out, 65536);
            c->z.next_out = (Bytef *)c->out.data + c->out.len;
            c->z.avail_out = (uInt)(c->out.cap - c->out.len);
            zr = deflate(&c->z, flush);
            if (zr == Z_STREAM_ERROR) {
                snprintf(c->err, sizeof(c->err), "zlib: deflate failed");
                return EB_ERR_INTERNAL;
            }
            c->out.len = c->out.cap - c->z.avail_out;
        } while (c->z.avail_out == 0 || (c->last && zr != Z_STREAM_END));
    } else {
        ZSTD_inBuffer ib = {c->in.data, c->in.len, 0};
        size_t rem;
        do {
            ZSTD_outBuffer ob;
            eb_buf_reserve(&c->out, ZSTD_CStreamOutSize());
            ob.dst = c->out.data + c->out.len;
            ob.size = c->out.cap - c->out.len;
            ob.pos = 0;
            rem = ZSTD_compressStream2(c->zs, &ob, &ib, c->last ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(rem)) {
                snprintf(c->err, sizeof(c->err), "zstd: %s", ZSTD_getErrorName(rem));
                return EB_ERR_INTERNAL;
            }
            c->out.len += ob.pos;
        } while (ib.pos < ib.size || (c->last && rem != 0));
    }
    c->in.len = 0;
    return EB_OK;
}

static void *comp_main(void *arg)
{
    compressor *c = arg;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->busy && !c->quit)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->quit)
            break;
        pthread_mutex_unlock(&c->mu);
        eb_status st = c->st == EB_OK ? comp_step(c) : EB_OK;
        pthread_mutex_lock(&c->mu);
        if (st != EB_OK)
            c->st = st;
        c->busy = false;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static eb_status comp_init(compressor *c, const char *name, int level)
{
    memset(c, 0, sizeof(*c));
    if (strcmp(name, "gzip") == 0) {
        c->kind = 1;
        if (deflateInit2(&c->z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return eb_error(EB_ERR_INTERNAL, "zlib: deflateInit2 failed");
    } else if (strcmp(name, "zstd") == 0) {
        c->kind = 2;
        c->zs = ZSTD_createCStream();
        if (!c->zs || ZSTD_isError(ZSTD_initCStream(c->zs, level)))
            return eb_error(EB_ERR_INTERNAL, "zstd: cannot start a stream");
    }
    if (c->kind) {
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
        if (pthread_create(&c->tid, NULL, comp_main, c) != 0)
            return eb_error(EB_ERR_INTERNAL, "cannot start the compression thread");
        c->started = true;
    }
    return EB_OK;
}

/* Waits until the thread is idle; passes its output to the sink. */
static eb_status comp_drain(compressor *c, const export_sink *sink, uint64_t *bytes_out)
{
    eb_status st;

    pthread_mutex_lock(&c->mu);
    while (c->busy)
        pthread_cond_wait(&c->cv, &c->mu);
    st = c->st;
    pthread_mutex_unlock(&c->mu);
    if (st != EB_OK)
        return eb_error(st, "%s", c->err);
    if (c->out.len) {
        st = sink->write(sink->arg, c->out.data, c->out.len);
        *bytes_out += c->out.len;
        c->out.len = 0;
    }
    return st;
}

static void comp_free(compressor *c)
{
    if (c->started) {
        pthread_mutex_lock(&c->mu);
        while (c->busy)
            pthread_cond_wait(&c->cv, &c->mu);
        c->quit = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->tid, NULL);
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
    }
    if (c->kind == 1)
        deflateEnd(&c->z);
    ZSTD_freeCStream(c->zs);
    eb_buf_free(&c->in);
    eb_buf_free(&c->out);
}

/* Hands the formatted bytes in *buf to the compressor (swapping buffers: *buf comes back empty)
 * after passing the previous step's output to the sink; with last, also waits for the final
 * output. Without compression, writes *buf to the sink. */
static eb_status comp_feed(compressor *c, eb_buf *buf, bool last, const export_sink *sink,
                           uint64_t *bytes_out)
{
    eb_status st = EB_OK;
    eb_buf t;

    if (c->kind == 0) {
        if (buf->len)
            st = sink->write(sink->arg, buf->data, buf->len);
        *bytes_out += buf->len;
        buf->len = 0;
        return st;
    }
    st = comp_drain(c, sink, bytes_out);
    if (st != EB_OK)
        return st;
    pthread_mutex_lock(&c->mu);
    t = c->in;
    c->in = *buf;
    *buf = t;
    buf->len = 0;
    c->last = last;
    c->busy = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return last ? comp_drain(c, sink, bytes_out) : EB_OK;
}

/* Rows are parsed into cJSON trees that live for one row: while a row is handled, this thread's
 * cJSON allocations come from an arena (common/src/arena.c) that is reset after the row,
 * instead of hundreds of malloc/free pairs per row. Nothing allocated during a row outlives it
 * (the writer and the statistics copy what they keep). */
void export_pipeline_init(void)
{
    eb_arena_cjson_init();
}

/* Finds the row in a binary COPY data message (from its field count on): skips the file header
 * in the first message; *done on the trailer. */
static eb_status copy_row(const char *msg, int n, bool *first, const char **row, size_t *len,
                          bool *done)
{
    static const char sig[11] = "PGCOPY\n\377\r\n";
    size_t off = 0;
    uint16_t nf;

    *done = false;
    if (*first) {
        uint32_t ext;
        if (n < 19 || memcmp(msg, sig, 11) != 0)
            return eb_error(EB_ERR_INTERNAL, "COPY: no binary header");
        memcpy(&ext, msg + 15, 4);
        off = 19 + (size_t)ntohl(ext);
        *first = false;
    }
    if ((size_t)n < off + 2)
        return eb_error(EB_ERR_INTERNAL, "COPY: short row");
    memcpy(&nf, msg + off, 2);
    if (ntohs(nf) == 0xffff) {
        *done = true;
        return EB_OK;
    }
    *row = msg + off;
    *len = (size_t)n - off;
    return EB_OK;
}

eb_status export_team_redactors(PGconn *conn, const char *team_id, redactor **out, size_t n)
{
    PGresult *r = NULL, *rp = NULL;
    const char *params[2] = {team_id, NULL};
    char hex[65];
    unsigned char key[32];
    eb_buf kb = {0};
    redact_pattern *pats = NULL;
    redact_config rc = {0};
    eb_status st;
    int np = 0;

    for (size_t i = 0; i < n; i++)
        out[i] = NULL;
    eb_random_bytes(key, sizeof(key));
    eb_hex_encode(key, sizeof(key), hex);
    params[1] = hex;
    st = eb_db_begin_team(conn, team_id);
    if (st == EB_OK)
        st = eb_db_exec(conn,
                        "INSERT INTO export.team_keys (team_id, key) VALUES ($1::uuid,"
                        " decode($2, 'hex')) ON CONFLICT (team_id) DO NOTHING",
                        2, params, NULL);
    if (st == EB_OK)
        st = eb_db_exec(conn,
                        "SELECT encode(key, 'base64') FROM export.team_keys WHERE team_id ="
                        " $1::uuid",
                        1, params, &r);
    if (st == EB_OK)
        st = eb_db_exec(conn,
                        "SELECT label, regex FROM export.team_patterns WHERE team_id = $1::uuid"
                        " ORDER BY label",
                        1, params, &rp);
    if (st == EB_OK)
        st = eb_db_commit(conn);
    else
        eb_db_rollback(conn);
    eb_cleanse(key, sizeof(key));
    eb_cleanse(hex, sizeof(hex));
    if (st != EB_OK)
        goto cleanup;
    if (PQntuples(r) != 1 ||
        !eb_base64_decode(eb_db_val(r, 0, 0), strlen(eb_db_val(r, 0, 0)), &kb)) {
        st = eb_error(EB_ERR_INTERNAL, "no pseudonymization key for the team");
        goto cleanup;
    }
    np = PQntuples(rp);
    if (np > REDACT_MAX_PATTERNS)
        np = REDACT_MAX_PATTERNS;
    pats = eb_calloc((size_t)np + 1, sizeof(*pats));
    for (int i = 0; i < np; i++) {
        pats[i].label = eb_db_val(rp, i, 0);
        pats[i].regex = eb_db_val(rp, i, 1);
    }
    rc.key = kb.data;
    rc.key_len = kb.len;
    rc.patterns = pats;
    rc.n_patterns = (size_t)np;
    for (size_t i = 0; i < n && st == EB_OK; i++)
        st = redact_new(&rc, &out[i]);
    if (st != EB_OK) {
        for (size_t i = 0; i < n; i++) {
            redact_free(out[i]);
            out[i] = NULL;
        }
    }
cleanup:
    if (kb.data)
        eb_cleanse(kb.data, kb.len);
    eb_buf_free(&kb);
    free(pats);
    PQclear(r);
    PQclear(rp);
    return st;
}

/* Stops a COPY in progress and brings the connection back to idle (rolled back). */
static void abandon_copy(PGconn *conn)
{
    PGcancel *cn = PQgetCancel(conn);
    char err[256];
    char *buf = NULL;
    PGresult *r;

    if (cn) {
        PQcancel(cn, err, sizeof(err));
        PQfreeCancel(cn);
    }
    while (PQgetCopyData(conn, &buf, 0) > 0) {
        PQfreemem(buf);
        buf = NULL;
    }
    while ((r = PQgetResult(conn)) != NULL)
        PQclear(r);
    eb_db_rollback(conn);
}

/* The number of rows an export will write, counted on a connection of its own in the export's
 * own snapshot (exported by the exporting transaction), while the rows already stream: the
 * progress knows the total without the export waiting for a count first. */
typedef struct row_counter {
    pthread_t tid;
    bool started;
    const char *conninfo;
    const char *team_id;
    char snapshot[64];
    char *sql;
    _Atomic long long total; /* -1 until counted (or when counting failed) */
} row_counter;

static void *counter_main(void *arg)
{
    row_counter *rc = arg;
    PGconn *c = PQconnectdb(rc->conninfo);
    const char *p2[1] = {rc->team_id};
    PGresult *r = NULL;
    eb_status st = EB_ERR_UNAVAILABLE;

    if (PQstatus(c) == CONNECTION_OK) {
        char *set = eb_asprintf("SET TRANSACTION SNAPSHOT '%s'", rc->snapshot);
        st = eb_db_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL);
        if (st == EB_OK)
            st = eb_db_exec(c, set, 0, NULL, NULL);
        if (st == EB_OK)
            st = eb_db_exec(c, "SELECT set_config('evalbus.team_id', $1, true)", 1, p2, NULL);
        if (st == EB_OK)
            st = eb_db_exec(c, rc->sql, 0, NULL, &r);
        if (st == EB_OK)
            atomic_store(&rc->total, strtoll(eb_db_val(r, 0, 0), NULL, 10));
        eb_db_rollback(c);
        free(set);
    }
    if (st != EB_OK)
        eb_log_warn(NULL, "export: counting the rows failed (progress shows no total): %s",
                    eb_error_message());
    PQclear(r);
    PQfinish(c);
    return NULL;
}

eb_status export_pipeline_run(PGconn *conn, export_run *run, const export_config *cfg,
                              const export_sink *sink)
{
    redactor *rd[FORMAT_THREADS] = {0}; /* one per formatting thread (json: one thread) */
    format_pool *pool = NULL;
    export_writer *w = NULL;
    export_stats *stats = NULL;
    export_options opt = {0};
    compressor comp = {0};
    eb_buf sql = {0}, out = {0}, scratch = {0};
    PGresult *r = NULL;
    const char *params[1] = {run->team_id};
    char stamp[32];
    char *filter_json = NULL;
    bool in_copy = false, in_tx = false, first = true;
    eb_arena *arena = eb_arena_new();
    row_counter counter = {.total = -1};
    long long last_tick = eb_monotonic_ms();
    eb_status st;
    time_t t = time(NULL);
    struct tm tm;

    run->rows = run->bytes_out = run->bytes_raw = 0;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (run->anonymize) { /* the team's key and patterns read once */
        st = export_team_redactors(conn, run->team_id, rd,
                                   run->format == EXPORT_JSON ? 1 : FORMAT_THREADS);
        if (st != EB_OK)
            goto cleanup;
    }
    filter_json = run->filter ? eb_json_print(run->filter) : NULL;
    opt.format = run->format;
    export_options_set_fields(&opt, run->fields);
    opt.redact = run->format == EXPORT_JSON ? rd[0] : NULL; /* the pool's: rd[i] each */
    opt.exported_at = stamp;
    opt.filter_json = filter_json;
    st = export_writer_new(&opt, &w);
    if (st != EB_OK)
        goto cleanup;
    stats = export_stats_new();
    if (run->format != EXPORT_JSON) {
        /* records stand alone: format them on a pool of threads (each its own redactor) */
        st = format_pool_new(FORMAT_THREADS, &opt, rd, run->stats_only, &pool);
        if (st != EB_OK)
            goto cleanup;
    }
    st = comp_init(&comp, run->compression ? run->compression : "none", run->level);
    if (st != EB_OK)
        goto cleanup;

    st = eb_db_exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL);
    if (st != EB_OK)
        goto cleanup;
    in_tx = true;
    st = eb_db_exec(conn, "SELECT set_config('evalbus.team_id', $1, true)", 1, params, NULL);
    if (st != EB_OK)
        goto cleanup;
    if (!run->stats_only && run->count_rows) {
        /* the snapshot's id only contains safe characters ([0-9A-F-]); it is checked anyway */
        st = eb_db_exec(conn, "SELECT pg_export_snapshot()", 0, NULL, &r);
        if (st != EB_OK)
            goto cleanup;
        snprintf(counter.snapshot, sizeof(counter.snapshot), "%s", eb_db_val(r, 0, 0));
        PQclear(r);
        r = NULL;
        if (strspn(counter.snapshot, "0123456789ABCDEFabcdef-") == strlen(counter.snapshot)) {
            st = export_query_sql(conn, run->team_id, run->format, run->filter, true, &sql);
            if (st != EB_OK)
                goto cleanup;
            counter.sql = eb_buf_steal(&sql);
            counter.conninfo = cfg->svc.database_url;
            counter.team_id = run->team_id;
            counter.started = pthread_create(&counter.tid, NULL, counter_main, &counter) == 0;
        }
        if (sink->tick && (st = sink->tick(sink->arg, 0, 0)) != EB_OK)
            goto cleanup;
    }
    eb_buf_reset(&sql);
    eb_buf_puts(&sql, "COPY (");
    st = export_query_sql(conn, run->team_id, run->format, run->filter, false, &sql);
    if (st != EB_OK)
        goto cleanup;
    if (run->max_rows)
        eb_buf_printf(&sql, " LIMIT %llu", (unsigned long long)run->max_rows);
    eb_buf_puts(&sql, ") TO STDOUT (FORMAT binary)");
    r = PQexec(conn, sql.data);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        st = eb_error(EB_ERR_DB, "export query failed: %s", PQerrorMessage(conn));
        goto cleanup;
    }
    PQclear(r);
    r = NULL;
    in_copy = true;
    if (!run->stats_only)
        st = export_writer_begin(w, &out);
    for (;;) {
        char *msg = NULL;
        const char *row = NULL;
        size_t rlen = 0;
        bool done = false;
        int n = PQgetCopyData(conn, &msg, 0);
        if (n == -1)
            break;
        if (n < 0) {
            st = eb_error(EB_ERR_DB, "reading export rows: %s", PQerrorMessage(conn));
            goto cleanup;
        }
        st = copy_row(msg, n, &first, &row, &rlen, &done);
        if (st == EB_OK && !done && pool) {
            st = format_pool_add(pool, row, rlen, &out);
            run->rows++;
        } else if (st == EB_OK && !done) {
            st = export_format_row(w, arena, &scratch, row, rlen, run->stats_only, &out, stats);
            if (st == EB_OK)
                run->rows++;
        }
        PQfreemem(msg);
        if (st != EB_OK)
            goto cleanup;
        if (out.len >= FEED_STEP) {
            run->bytes_raw += out.len;
            st = comp_feed(&comp, &out, false, sink, &run->bytes_out);
            if (st != EB_OK)
                goto cleanup;
        }
        if (run->rows % TICK_ROWS == 0 && sink->tick && eb_monotonic_ms() - last_tick >= 1000) {
            long long total = atomic_load(&counter.total);
            if (total >= 0)
                run->total_rows = run->max_rows && (uint64_t)total > run->max_rows
                                      ? run->max_rows
                                      : (uint64_t)total;
            last_tick = eb_monotonic_ms();
            st = sink->tick(sink->arg, run->rows, run->bytes_out);
            if (st != EB_OK)
                goto cleanup;
        }
    }
    in_copy = false;
    while ((r = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            st = eb_error(EB_ERR_DB, "export query failed: %s", PQresultErrorMessage(r));
            goto cleanup;
        }
        PQclear(r);
    }
    if (pool) {
        st = format_pool_finish(pool, &out);
        if (st != EB_OK)
            goto cleanup;
        format_pool_merge_stats(pool, stats);
    }
    if (!run->stats_only)
        st = export_writer_end(w, stats, &out);
    if (st != EB_OK)
        goto cleanup;
    run->bytes_raw += out.len;
    if (!run->stats_only) {
        st = comp_feed(&comp, &out, true, sink, &run->bytes_out);
        if (st != EB_OK)
            goto cleanup;
    }
    if (counter.started) { /* the snapshot must outlive the count: join before COMMIT */
        pthread_join(counter.tid, NULL);
        counter.started = false;
    }
    run->total_rows = run->rows; /* exact now */
    st = eb_db_commit(conn);
    in_tx = false;
    if (st != EB_OK)
        goto cleanup;
    run->records = export_stats_records(stats);
    run->statistics = export_stats_json(stats);
cleanup:
    eb_arena_cjson_bind(NULL);
    eb_arena_free(arena);
    if (counter.started) /* before the transaction (and its snapshot) ends */
        pthread_join(counter.tid, NULL);
    free(counter.sql);
    if (in_copy)
        abandon_copy(conn);
    else if (in_tx)
        eb_db_rollback(conn);
    PQclear(r);
    format_pool_free(pool);
    comp_free(&comp);
    export_writer_free(w);
    for (int i = 0; i < FORMAT_THREADS; i++) /* after the writers that use them */
        redact_free(rd[i]);
    export_stats_free(stats);
    export_options_clear_fields(&opt);
    free(filter_json);
    eb_buf_free(&sql);
    eb_buf_free(&out);
    eb_buf_free(&scratch);
    return st;
}
