/* stream_watch.c -- keeps INGEST from filling up with records not yet stored, and makes room in
 * it by purging the stored ones.
 *
 * INGEST keeps records by limits (7 days, stream-max-bytes) and refuses new records when full
 * (discard new): a full stream never pushes out an old record, which could be one acknowledged
 * but not yet stored. Stored records stay for replay until room is needed. This thread, once a
 * second (at once again while a purge is unfinished), reads the stream's size and the writer
 * consumer's acknowledgement floor and backlog (records not yet delivered plus delivered but not
 * acknowledged). From stream-high-water - 10 percent of stream-max-bytes on, it purges the records
 * at or below the floor (stored, or dropped for good), in slices that each hold the stream only a
 * few milliseconds: what is left is then records not yet stored, and their bytes are the stream's
 * own. Above stream-high-water percent the publisher refuses new records (callers get 503 /
 * "unavailable" and retry, as OpenTelemetry exporters do), until the backlog is 10 points below the
 * mark again; should the stream fill before a check, JetStream's own refusal is a 503 too. Below
 * the purge mark the backlog's bytes are only estimated (backlog x the stream's mean record size),
 * for the metric. What was acknowledged stays until it is written; what is refused was never
 * acknowledged.
 *
 * The check runs on its own thread with its own NATS connection (the JetStream management
 * calls are synchronous). If the stream or the consumer cannot be read, the last verdict
 * stands. Threading: the thread only calls ingest_publisher_set_full (atomic) and metrics.
 *
 * Its connection also answers ingest_stream_position and ingest_writers_catch_up for the
 * deletions, on their API threads (a NATS connection may be used from any thread; mu, held for
 * reading by each request, keeps it from closing meanwhile without making requests queue). */
#include "evalbus/bus.h"
#include "evalbus/clock.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"

#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

struct ingest_watch {
    ingest_ctx *ctx;
    pthread_t tid;
    atomic_bool stop;
    bool full;
    /* a purge of the stored records under way (purge_stored): of the stream made at
     * purge_created, up to position purge_to (the floor when it began) */
    bool purging;
    uint64_t purge_to;
    int64_t purge_created;
    pthread_rwlock_t mu; /* read: a request on bus; write: bus set or closed */
    eb_bus *bus;         /* under mu: set once connected, NULL again when closed */
    sem_t started;       /* posted once the first connection attempt has ended */
};

/* A purge holds the stream while nats-server drops the records, and every publish to it waits
 * meanwhile: one purge of the 1.8 million stored records that fill 80 % of a 4 GiB stream took
 * over a second. So the stored records go in slices of stream-purge-slice records (5,000 take
 * about 5-15 ms), PURGE_PAUSE_MS apart so that waiting publishes go through,
 * PURGE_SLICES_PER_CHECK slices a check; a purge goes on at the next check, which comes at once,
 * until every record stored when it began is gone (also once the stream is below the mark
 * again): with the default slice, over 200,000 records a second, far more than the intake takes
 * in. */
#define PURGE_PAUSE_MS 5
#define PURGE_SLICES_PER_CHECK 40

/* Whether INGEST is still the stream made at created (not deleted and made again since, which
 * would start its positions anew); false, with why[] said, if not or if it cannot be read. */
static bool same_stream(eb_bus *bus, int64_t created, char *why, size_t len)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, eb_bus_js(bus), INGEST_STREAM, NULL, &jerr);
    bool same = s == NATS_OK && si->Created == created;

    if (s != NATS_OK)
        snprintf(why, len, "INGEST cannot be read (%s, %d)", natsStatus_GetText(s), (int)jerr);
    else if (!same)
        snprintf(why, len, "INGEST was deleted and made again meanwhile");
    jsStreamInfo_Destroy(si);
    return same;
}

/* The purge under way (w->purging): purges the records from first, the stream's first, to
 * w->purge_to (the writer consumer's acknowledgement floor when it began: every one of them
 * stored, or dropped for good) from INGEST in slices, to make room: the stream refuses new
 * records when full rather than push out old ones. True when some are left for the next
 * check. */
static bool purge_stored(ingest_watch *w, eb_bus *bus, uint64_t first)
{
    uint64_t from = first, floor = w->purge_to;
    uint64_t slice = (uint64_t)w->ctx->cfg->stream_purge_slice;
    int slices = 0;

    while (from <= floor && slices < PURGE_SLICES_PER_CHECK && !atomic_load(&w->stop)) {
        uint64_t to = floor + 1 - from > slice ? from + slice : floor + 1;
        jsOptions o;
        jsErrCode jerr = 0;
        natsStatus s;

        if (slices > 0) {
            usleep(PURGE_PAUSE_MS * 1000);
            /* the positions are those of the stream the floor was read from (this narrows the
             * window in which a stream made again by hand would lose records to milliseconds
             * before a slice; JetStream has no purge on condition) */
            char why[160];
            if (!same_stream(bus, w->purge_created, why, sizeof why)) {
                eb_log_warn(NULL, "INGEST: a purge of the records stored stops: %s", why);
                break;
            }
        }
        jsOptions_Init(&o);
        o.Stream.Purge.Sequence = to; /* up to, not including */
        s = js_PurgeStream(eb_bus_js(bus), INGEST_STREAM, &o, &jerr);
        if (s != NATS_OK) {
            eb_log_warn(NULL, "INGEST: purging the records stored failed: %s (%d)",
                        natsStatus_GetText(s), (int)jerr);
            break;
        }
        slices++;
        from = to;
    }
    if (slices > 0)
        eb_log_info(NULL,
                    "INGEST: the records stored from position %llu to %llu purged to make room,"
                    " in %d slice%s%s",
                    (unsigned long long)first, (unsigned long long)from - 1, slices,
                    slices == 1 ? "" : "s", from <= floor ? "; the rest next" : "");
    if (from > floor) /* done: every record stored when the mark was passed is gone */
        eb_metrics_add("evalbus_ingest_stream_purges_total", NULL, 1);
    return slices == PURGE_SLICES_PER_CHECK && from <= floor;
}

/* Bytes of records in the stream that the writer has not stored yet; false if unknown. Once
 * the stream holds purge_share percent of its size or more, the stored records go first
 * (purge_stored; what one check leaves, the next purges): once they are gone, every record
 * left is above the floor, and their bytes are the stream's own (at most a few acknowledged
 * out of order counted too). Below that mark the figure is an
 * estimate (the backlog at the stream's mean record size), which only the metric shows: the
 * high water is above the mark. */
static bool unwritten_bytes(ingest_watch *w, eb_bus *bus, double purge_share, double *bytes,
                            int64_t *max_bytes, bool *more)
{
    jsStreamInfo *si = NULL;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    bool ok = false;

    if (js_GetStreamInfo(&si, eb_bus_js(bus), INGEST_STREAM, NULL, &jerr) == NATS_OK &&
        js_GetConsumerInfo(&ci, eb_bus_js(bus), INGEST_STREAM, INGEST_WRITER_DURABLE, NULL,
                           &jerr) == NATS_OK) {
        uint64_t floor = ci->AckFloor.Stream;
        double backlog, msgs;

        *max_bytes = si->Config ? si->Config->MaxBytes : -1;
        /* a purge under way goes on below the mark too, until every record stored when it
         * began is gone; one of a stream since made again ends */
        if (w->purging && (si->Created != w->purge_created || w->purge_to < si->State.FirstSeq))
            w->purging = false;
        if (!w->purging && *max_bytes > 0 && floor >= si->State.FirstSeq && si->State.Msgs > 0 &&
            100.0 * (double)si->State.Bytes >= purge_share * (double)*max_bytes) {
            w->purging = true;
            w->purge_to = floor;
            w->purge_created = si->Created;
        }
        if (w->purging) {
            w->purging = purge_stored(w, bus, si->State.FirstSeq);
            *more = w->purging;
            jsStreamInfo_Destroy(si);
            si = NULL;
            if (js_GetStreamInfo(&si, eb_bus_js(bus), INGEST_STREAM, NULL, &jerr) != NATS_OK)
                goto cleanup;
        }
        backlog = (double)ci->NumPending + (double)(ci->NumAckPending > 0 ? ci->NumAckPending : 0);
        msgs = (double)si->State.Msgs;
        if (si->State.FirstSeq > floor || backlog >= msgs)
            *bytes = (double)si->State.Bytes; /* no stored record left in it */
        else
            *bytes = msgs > 0 ? (double)si->State.Bytes * backlog / msgs : 0;
        ok = true;
    }
cleanup:
    jsStreamInfo_Destroy(si);
    jsConsumerInfo_Destroy(ci);
    return ok;
}

/* One check; true when stored records are left to purge (the next check then comes at
 * once). */
static bool check(ingest_watch *w, eb_bus *bus)
{
    const ingest_config *cfg = w->ctx->cfg;
    double bytes = 0, share;
    int64_t max_bytes = -1;
    bool more = false;

    /* the stored records go 10 points below the high water (the bytes above the mark are
     * then exact) */
    if (!unwritten_bytes(w, bus, (double)(cfg->stream_high_water - 10), &bytes, &max_bytes, &more))
        return false;
    eb_metrics_set("evalbus_ingest_stream_unstored_bytes", NULL, bytes);
    if (max_bytes <= 0)
        return more; /* no size limit: nothing is pushed out by size */
    share = 100.0 * bytes / (double)max_bytes;
    if (!w->full && share >= (double)cfg->stream_high_water) {
        w->full = true;
        eb_log_warn(NULL,
                    "INGEST holds %.0f bytes of records not yet stored (%.0f%% of "
                    "stream-max-bytes, high water %lld%%): new records are refused until the "
                    "writer catches up",
                    bytes, share, cfg->stream_high_water);
    } else if (w->full && share < (double)cfg->stream_high_water - 10.0) {
        w->full = false;
        eb_log_info(NULL, "INGEST backlog down to %.0f%% of stream-max-bytes: accepting again",
                    share);
    }
    eb_metrics_set("evalbus_ingest_stream_full", NULL, w->full ? 1 : 0);
    ingest_publisher_set_full(w->ctx->pub, w->full);
    return more;
}

static void *watch_main(void *arg)
{
    ingest_watch *w = arg;
    eb_bus *bus = NULL;

    /* named before connecting: nats.c's threads for this connection inherit the name */
    pthread_setname_np(pthread_self(), "stream-watch");
    /* eb_bus_connect makes one attempt at once and, should it fail, goes on trying in the
     * background; it fails itself only on bad options */
    while (!atomic_load(&w->stop) && eb_bus_connect(NULL, w->ctx->cfg->svc.nats_url,
                                                    "evalbus-ingest-watch", 0, &bus) != EB_OK) {
        sem_post(&w->started);
        sleep(1);
    }
    pthread_rwlock_wrlock(&w->mu);
    w->bus = bus;
    pthread_rwlock_unlock(&w->mu);
    sem_post(&w->started);
    while (!atomic_load(&w->stop)) {
        if (check(w, bus))
            continue;
        for (int i = 0; i < 10 && !atomic_load(&w->stop); i++)
            usleep(100000);
    }
    pthread_rwlock_wrlock(&w->mu);
    w->bus = NULL;
    pthread_rwlock_unlock(&w->mu);
    eb_bus_close(bus);
    return NULL;
}

ingest_watch *ingest_watch_start(ingest_ctx *ctx)
{
    ingest_watch *w = eb_calloc(1, sizeof(*w));

    w->ctx = ctx;
    pthread_rwlock_init(&w->mu, NULL);
    sem_init(&w->started, 0, 0);
    eb_metrics_describe("evalbus_ingest_stream_unstored_bytes", "gauge",
                        "bytes of records in INGEST not yet stored (estimated below the purge "
                        "mark, stream-high-water - 10 percent)");
    eb_metrics_describe("evalbus_ingest_stream_purges_total", "counter",
                        "purges of the stored records from INGEST, to make room, done (each in "
                        "slices, over one check or more)");
    eb_metrics_describe(
        "evalbus_ingest_stream_full", "gauge",
        "1 while new records are refused: unstored records above stream-high-water");
    if (pthread_create(&w->tid, NULL, watch_main, w) != 0) {
        eb_log_error(NULL, "cannot start the stream watch thread");
        pthread_rwlock_destroy(&w->mu);
        sem_destroy(&w->started);
        free(w);
        return NULL;
    }
    /* before the service answers anything: a deletion right after start-up finds the watch's
     * connection (ingest_stream_position) instead of a 503. The attempt ends within the NATS
     * connect timeout; should NATS be unreachable, the wait ends there and the watch connects
     * later in the background (deletions meanwhile answer 503, as while NATS is away). */
    while (sem_wait(&w->started) != 0)
        ;
    return w;
}

void ingest_watch_stop(ingest_watch *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, true);
    pthread_join(w->tid, NULL);
    pthread_rwlock_destroy(&w->mu);
    sem_destroy(&w->started);
    free(w);
}

/* On the watch's connection: the stream's last position into *last, if last; the writer
 * consumer's acknowledgement floor into *floor, if floor: every record at or below it is stored
 * or dropped (with none pending, whatever it delivered; with nothing left to deliver either, the
 * stream's end). */
static eb_status read_positions(ingest_ctx *ctx, unsigned long long *last,
                                unsigned long long *floor)
{
    ingest_watch *w = ctx->watch;
    jsStreamInfo *si = NULL;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = NATS_OK;
    bool connected = false;
    eb_status st = EB_OK;

    if (w) {
        pthread_rwlock_rdlock(&w->mu);
        connected = w->bus != NULL;
        if (connected && last)
            s = js_GetStreamInfo(&si, eb_bus_js(w->bus), INGEST_STREAM, NULL, &jerr);
        if (connected && floor && s == NATS_OK)
            s = js_GetConsumerInfo(&ci, eb_bus_js(w->bus), INGEST_STREAM, INGEST_WRITER_DURABLE,
                                   NULL, &jerr);
        pthread_rwlock_unlock(&w->mu);
    }
    if (!connected || s != NATS_OK) {
        st = eb_error(EB_ERR_UNAVAILABLE,
                      "the ingest stream's position cannot be read (NATS: %s); try again",
                      connected ? natsStatus_GetText(s) : "not connected");
    } else {
        if (last)
            *last = (unsigned long long)si->State.LastSeq;
        if (floor) {
            *floor = (unsigned long long)ci->AckFloor.Stream;
            if (ci->NumAckPending <= 0 && ci->Delivered.Stream > *floor)
                *floor = (unsigned long long)ci->Delivered.Stream;
            /* nothing pending and nothing left to deliver: whatever the stream holds is done
             * (also past a gap at the stream's end, which Delivered does not reach); the
             * server keeps NumPending incrementally, and a late count only delays a deletion
             * until the next read */
            if (ci->NumAckPending <= 0 && ci->NumPending == 0)
                *floor = ULLONG_MAX;
        }
    }
    jsStreamInfo_Destroy(si);
    jsConsumerInfo_Destroy(ci);
    return st;
}

eb_status ingest_stream_position(ingest_ctx *ctx, unsigned long long *seq)
{
    return read_positions(ctx, seq, NULL);
}

eb_status ingest_writers_catch_up(ingest_ctx *ctx, long long wait_ms)
{
    long long deadline = eb_monotonic_ms() + wait_ms, left;
    unsigned long long last = 0, floor = 0;
    useconds_t pause = 5000;
    /* the stream's end first, then the floor (both in one read of the watch's connection) */
    eb_status st = read_positions(ctx, &last, &floor);

    if (st != EB_OK || floor >= last)
        return st;
    do {
        if ((left = deadline - eb_monotonic_ms()) <= 0) {
            st = eb_error(EB_ERR_UNAVAILABLE,
                          "the writers have not stored every record accepted before this deletion "
                          "within delete-wait (%lld ms; still to store: %llu); nothing was "
                          "deleted, try again",
                          wait_ms, last - floor);
            break;
        }
        /* the writers commit a batch in milliseconds when they keep up: look again soon, then
         * less often */
        usleep(pause < (useconds_t)left * 1000 ? pause : (useconds_t)left * 1000);
        pause = pause < 50000 ? pause * 2 : 100000;
    } while ((st = read_positions(ctx, NULL, &floor)) == EB_OK && floor < last);
    return st;
}
