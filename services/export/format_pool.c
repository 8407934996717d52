/* format_pool.c -- format (and redact, and count) rows on several threads, output in row order.
 *
 * Formatting a row (parse, pseudonymize every string, write the format, add to the statistics)
 * is the expensive step of an export; PostgreSQL and the compressor keep up with one such
 * thread, so a pool of them takes the export to the speed of the rest. Only formats whose
 * records stand alone (one line each: every format but json) go through the pool.
 *
 * A ring of slots carries batches of rows: the caller fills slot k % S with rows and submits
 * it; thread k % n formats it into the slot's output; the caller takes the outputs back strictly
 * in submission order (k, k+1, ...), so the file's rows keep the query's order. With the ring
 * full, the caller waits for the oldest batch, which bounds memory to S batches.
 * Each thread has its own writer, redactor (not thread-safe), statistics (merged at the end) and
 * cJSON arena. One mutex and one condition variable guard the ring's states.
 * Ownership: the pool owns its threads, writers and statistics; the caller owns the redactors it
 * passes (one per thread) and the output buffer. Threading: the caller's calls come from one
 * thread. */
#include "evalbus/arena.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "format_pool.h"
#include "record.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    POOL_MAX_THREADS = 8,
    BATCH_BYTES = 128 * 1024, /* rows' text per batch */
    BATCH_ROWS = 256,
};

typedef enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_DONE } slot_state;

typedef struct slot {
    slot_state state;
    unsigned long long seq;
    eb_buf in; /* rows: 4-byte length, then the binary COPY row, repeated */
    size_t rows;
    eb_buf out; /* formatted */
    eb_status st;
    char err[256];
} slot;

typedef struct worker {
    format_pool *pool;
    int index;
    pthread_t tid;
    export_writer *w;
    export_stats *stats;
    eb_arena *arena;
    eb_buf scratch; /* export_record_from_row's working space */
} worker;

struct format_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;      /* threads */
    int nslots; /* 2 per thread */
    slot *slots;
    worker workers[POOL_MAX_THREADS];
    unsigned long long fill; /* sequence number of the batch being filled */
    unsigned long long take; /* oldest batch not yet taken back */
    bool discard;            /* statistics only: outputs are dropped */
    bool quit;
};

eb_status export_format_row(export_writer *w, eb_arena *arena, eb_buf *scratch, const char *row,
                            size_t len, bool discard, eb_buf *out, export_stats *stats)
{
    size_t before = out->len;
    cJSON *rec;
    eb_status st;

    eb_arena_cjson_bind(arena);
    st = export_record_from_row(row, len, scratch, &rec);
    if (st == EB_OK)
        st = export_writer_record(w, rec, out, stats);
    if (discard)
        out->len = before;
    eb_arena_cjson_bind(NULL);
    eb_arena_reset(arena); /* the record's tree with it: no cJSON_Delete walk per row */
    return st;
}

static void format_batch(worker *wk, slot *s)
{
    const char *p = s->in.data, *end = s->in.data + s->in.len;

    s->st = EB_OK;
    while (p < end) {
        uint32_t len;
        memcpy(&len, p, 4);
        p += 4;
        s->st = export_format_row(wk->w, wk->arena, &wk->scratch, p, len, wk->pool->discard,
                                  &s->out, wk->stats);
        if (s->st != EB_OK) {
            snprintf(s->err, sizeof(s->err), "%s", eb_error_message());
            break;
        }
        p += len;
    }
}

static void *worker_main(void *arg)
{
    worker *wk = arg;
    format_pool *pool = wk->pool;
    unsigned long long seq = (unsigned long long)wk->index;

    pthread_mutex_lock(&pool->mu);
    for (;;) {
        slot *s = &pool->slots[seq % (unsigned long long)pool->nslots];
        while (!pool->quit && !(s->state == SLOT_QUEUED && s->seq == seq))
            pthread_cond_wait(&pool->cv, &pool->mu);
        if (pool->quit)
            break;
        pthread_mutex_unlock(&pool->mu);
        format_batch(wk, s);
        pthread_mutex_lock(&pool->mu);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&pool->cv);
        seq += (unsigned long long)pool->n;
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

eb_status format_pool_new(int nthreads, const export_options *opt, redactor *const *redactors,
                          bool discard, format_pool **out)
{
    format_pool *pool = eb_calloc(1, sizeof(*pool));
    eb_status st = EB_OK;

    *out = NULL;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > POOL_MAX_THREADS)
        nthreads = POOL_MAX_THREADS;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    pool->n = nthreads;
    pool->nslots = 2 * nthreads;
    pool->slots = eb_calloc((size_t)pool->nslots, sizeof(slot));
    pool->discard = discard;
    for (int i = 0; i < nthreads; i++) {
        worker *wk = &pool->workers[i];
        export_options o = *opt;
        o.redact = redactors ? redactors[i] : NULL;
        wk->pool = pool;
        wk->index = i;
        wk->arena = eb_arena_new();
        wk->stats = export_stats_new();
        st = export_writer_new(&o, &wk->w);
        if (st != EB_OK)
            break;
        if (pthread_create(&wk->tid, NULL, worker_main, wk) != 0) {
            export_writer_free(wk->w);
            wk->w = NULL;
            st = eb_error(EB_ERR_INTERNAL, "cannot start a format thread");
            break;
        }
    }
    if (st != EB_OK) {
        format_pool_free(pool);
        return st;
    }
    *out = pool;
    return EB_OK;
}

/* Appends the oldest batch's output to out once it is done (waiting when wait). Caller holds
 * the lock. Returns the batch's status; *took tells whether one was taken. */
static eb_status take_one(format_pool *pool, eb_buf *out, bool wait, bool *took)
{
    slot *s;
    eb_status st;

    *took = false;
    if (pool->take == pool->fill)
        return EB_OK;
    s = &pool->slots[pool->take % (unsigned long long)pool->nslots];
    while (wait && s->state != SLOT_DONE)
        pthread_cond_wait(&pool->cv, &pool->mu);
    if (s->state != SLOT_DONE)
        return EB_OK;
    st = s->st;
    if (st != EB_OK)
        eb_error(st, "%s", s->err);
    else if (s->out.len)
        eb_buf_append(out, s->out.data, s->out.len);
    s->out.len = 0;
    s->in.len = 0;
    s->rows = 0;
    s->state = SLOT_FREE;
    pool->take++;
    *took = true;
    return st;
}

/* Submits the batch being filled (if it has rows), then takes back whatever is done in order,
 * waiting for the oldest while the ring is full. */
static eb_status submit(format_pool *pool, eb_buf *out)
{
    slot *s = &pool->slots[pool->fill % (unsigned long long)pool->nslots];
    eb_status st = EB_OK;
    bool took = true;

    pthread_mutex_lock(&pool->mu);
    if (s->rows > 0) {
        s->seq = pool->fill;
        s->state = SLOT_QUEUED;
        pool->fill++;
        pthread_cond_broadcast(&pool->cv);
    }
    while (st == EB_OK && took)
        st =
            take_one(pool, out, pool->fill - pool->take >= (unsigned long long)pool->nslots, &took);
    pthread_mutex_unlock(&pool->mu);
    return st;
}

eb_status format_pool_add(format_pool *pool, const char *row, size_t len, eb_buf *out)
{
    slot *s = &pool->slots[pool->fill % (unsigned long long)pool->nslots];
    uint32_t l = (uint32_t)len;

    /* the slot being filled is free: submit() took it back before moving on to it */
    eb_buf_append(&s->in, &l, 4);
    eb_buf_append(&s->in, row, len);
    s->rows++;
    if (s->in.len >= BATCH_BYTES || s->rows >= BATCH_ROWS)
        return submit(pool, out);
    return EB_OK;
}

eb_status format_pool_finish(format_pool *pool, eb_buf *out)
{
    eb_status st = submit(pool, out);
    bool took = true;

    pthread_mutex_lock(&pool->mu);
    while (st == EB_OK && pool->take < pool->fill)
        st = take_one(pool, out, true, &took);
    pthread_mutex_unlock(&pool->mu);
    return st;
}

void format_pool_merge_stats(format_pool *pool, export_stats *dst)
{
    for (int i = 0; i < pool->n; i++)
        if (pool->workers[i].stats)
            export_stats_merge(dst, pool->workers[i].stats);
}

void format_pool_free(format_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->quit = true;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n; i++) {
        worker *wk = &pool->workers[i];
        if (wk->w) /* its thread was started */
            pthread_join(wk->tid, NULL);
        export_writer_free(wk->w);
        export_stats_free(wk->stats);
        eb_arena_free(wk->arena);
        eb_buf_free(&wk->scratch);
    }
    for (int i = 0; i < pool->nslots; i++) {
        eb_buf_free(&pool->slots[i].in);
        eb_buf_free(&pool->slots[i].out);
    }
    free(pool->slots);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool);
}
