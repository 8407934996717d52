/* publish.c -- durable hand-off of accepted traces to the JetStream stream INGEST.
 *
 * Each trace becomes an IngestRecord published on evalbus.v1.ingest.records.<team slug> with
 * the message id "<team id>:<trace id>:<first 16 hex of SHA-256 of the record's trace>", so
 * that a resend of the same trace within the stream's duplicate window is stored once while a
 * changed version of a trace is a new record (the writer keeps the newest by stream sequence).
 *
 * Packing (ingest_record_pack: the record, the hash, the message with its Nats-Msg-Id header
 * and its reply subject) needs no publisher state but an atomic counter, so every way in (JSON
 * batch API, OTLP, NATS TraceBatch) does it on the decode pool's threads; handing the messages
 * to the library (ingest_publish_packed) happens on the loop thread, which drives the NATS
 * connection. A batch goes out without waiting for the acknowledgements of earlier ones, and in
 * slices of PUBLISH_SLICE records, one per turn of the loop: a batch of hundreds of thousands
 * of records (an OTLP request of one-span traces) does not hold the loop, which serves other
 * requests, acknowledgements and /healthz between the slices and writes each slice out to NATS
 * before the next (the library buffers what the loop has not written yet). Slices of batches
 * handed over meanwhile go out between them, but for batches handed over in order (NATS
 * TraceBatches, whose order is the stream's): such a batch waits in p->sending until the one
 * in order before it (p->in_order_last) has handed over its last record.
 *
 * Acknowledgements: every record carries the reply subject "<inbox>.<n>", n a number of its
 * own, and JetStream answers there (a PubAck, or an error). The publisher's subscription to
 * "<inbox>.*" is synchronous and is drained on the loop thread right after the library has
 * read from the socket (eb_bus_set_read_hook), so an acknowledgement reaches its batch without
 * a delivery thread or a wake-up of the loop; a table maps n to the batch and the record's
 * place in it. A timer per batch, started once its last record is handed over, bounds the
 * wait (publish-timeout): what has not been acknowledged by then fails as a timeout (it may
 * still be stored, see ingest_publish_done).
 * Threading: everything here runs on the loop thread, but ingest_record_pack (any thread) and
 * ingest_publisher_set_full (any thread). */
#include "evalbus/clock.h"
#include "evalbus/bus.h"
#include "evalbus/crypto.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Records handed to the library per turn of the loop (a few milliseconds' work at most). */
#define PUBLISH_SLICE 256

typedef struct pub_batch {
    struct pub_batch *next;
    ingest_publisher *p;
    size_t n;
    size_t remaining;
    eb_status *results;
    uint64_t *seqs; /* each record's reply number; 0: not in the table */
    ingest_publish_done done;
    void *arg;
    struct event *timer;
    bool finished;
    /* while slices are left to send (in p->sending) */
    natsMsg **msgs;           /* the records from sent on, still to be handed over */
    eb_status *unmade;        /* why a NULL entry of msgs could not be made, or NULL */
    size_t sent;              /* records handed over (or failed) so far */
    struct event *more;       /* the next slice, on a later turn of the loop */
    struct pub_batch *snext;  /* the next batch in p->sending */
    struct pub_batch *behind; /* in order: the batch that waits until this one is handed over */
} pub_batch;

typedef struct inflight {
    uint64_t seq; /* key: the number in the record's reply subject; 0: a free slot */
    pub_batch *batch;
    size_t index;
} inflight;

struct ingest_publisher {
    struct event_base *base;
    eb_bus *bus;
    long long timeout_ms;
    natsSubscription *acks; /* "<inbox>.*", synchronous, drained on the loop thread */
    char inbox[64];         /* immutable once made: ingest_record_pack reads it anywhere */
    atomic_ullong next_seq; /* the next reply number (from 1) */
    inflight *table;        /* open addressing on seq */
    size_t cap, used;
    pub_batch *ready;
    struct event *wake;
    atomic_bool full;            /* the stream watch's verdict: refuse new records */
    long long refusal_logged_ms; /* when a JetStream refusal was last logged (loop thread) */
    unsigned long refusals_unlogged;
    size_t open;              /* batches handed over and not yet answered */
    pub_batch *sending;       /* batches with records still to hand over, a slice per turn */
    pub_batch *in_order_last; /* the last in-order batch not yet handed over whole, or NULL */
    size_t refused;           /* "no responders" answers whose records are still in the table */
    bool closing;             /* shutting down: refuse new records */
};

static size_t seq_slot(const ingest_publisher *p, uint64_t seq)
{
    return (size_t)((seq * 0x9E3779B97F4A7C15ULL) >> 20) & (p->cap - 1);
}

static void table_grow(ingest_publisher *p)
{
    inflight *old = p->table;
    size_t oldcap = p->cap;

    p->cap = oldcap ? oldcap * 2 : 4096;
    p->table = eb_calloc(p->cap, sizeof(inflight));
    p->used = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].seq) {
            size_t j = seq_slot(p, old[i].seq);
            while (p->table[j].seq)
                j = (j + 1) & (p->cap - 1);
            p->table[j] = old[i];
            p->used++;
        }
    }
    free(old);
}

static void table_put(ingest_publisher *p, uint64_t seq, pub_batch *b, size_t index)
{
    size_t j;

    if ((p->used + 1) * 2 > p->cap)
        table_grow(p);
    j = seq_slot(p, seq);
    while (p->table[j].seq)
        j = (j + 1) & (p->cap - 1);
    p->table[j].seq = seq;
    p->table[j].batch = b;
    p->table[j].index = index;
    p->used++;
}

/* Removes seq; returns false if it is not there. Backward-shift deletion keeps probe chains
 * intact. */
static bool table_take(ingest_publisher *p, uint64_t seq, pub_batch **b, size_t *index)
{
    size_t j;

    if (!p->cap || !seq)
        return false;
    j = seq_slot(p, seq);
    while (p->table[j].seq && p->table[j].seq != seq)
        j = (j + 1) & (p->cap - 1);
    if (!p->table[j].seq)
        return false;
    *b = p->table[j].batch;
    *index = p->table[j].index;
    p->table[j].seq = 0;
    p->used--;
    for (size_t k = (j + 1) & (p->cap - 1); p->table[k].seq; k = (k + 1) & (p->cap - 1)) {
        inflight e = p->table[k];
        p->table[k].seq = 0;
        p->used--;
        table_put(p, e.seq, e.batch, e.index);
    }
    return true;
}

/* Records one result and queues the batch when it is complete. Returns true if the batch is
 * now ready (answered by on_wake). */
static bool record_result(ingest_publisher *p, pub_batch *b, size_t index, eb_status st)
{
    b->results[index] = st;
    b->seqs[index] = 0;
    if (--b->remaining > 0 || b->finished)
        return false;
    b->finished = true;
    b->next = p->ready;
    p->ready = b;
    return true;
}

static void batch_free(pub_batch *b)
{
    if (b->timer)
        event_free(b->timer);
    if (b->more)
        event_free(b->more);
    for (size_t i = b->sent; b->msgs && i < b->n; i++)
        natsMsg_Destroy(b->msgs[i]);
    free(b->msgs);
    free(b->unmade);
    free(b->results);
    free(b->seqs);
    free(b);
}

/* Takes b out of p->sending (where it may not be). */
static void sending_remove(ingest_publisher *p, pub_batch *b)
{
    for (pub_batch **q = &p->sending; *q; q = &(*q)->snext) {
        if (*q == b) {
            *q = b->snext;
            break;
        }
    }
    b->snext = NULL;
}

/* Answers the batches that are complete. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    ingest_publisher *p = arg;
    pub_batch *list = p->ready;

    (void)fd;
    (void)what;
    p->ready = NULL;
    while (list) {
        pub_batch *next = list->next;
        p->open--;
        list->done(list->arg, list->results, list->n);
        batch_free(list);
        list = next;
    }
}

/* What JetStream answered for one record: its PubAck ({"stream": ..., "seq": ...}, with
 * "duplicate" for a record already in the stream) or an error ({"error": {"code": ...,
 * "description": ...}}). */
static eb_status ack_status(ingest_publisher *p, natsMsg *m)
{
    const char *desc = NULL;
    eb_status st;
    cJSON *j, *err;

    j = cJSON_ParseWithLength(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    err = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (err) {
        bool full;
        desc = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "description"));
        /* full (discard new) before the stream watch's next check refused new records */
        full = desc && strstr(desc, "maximum bytes exceeded");
        st = eb_error(full ? EB_ERR_RATE_LIMITED : EB_ERR_UNAVAILABLE,
                      "JetStream refused the record: %s", desc ? desc : "no reason given");
        if (full)
            eb_metrics_add("evalbus_ingest_refused_stream_full_total", NULL, 1);
    } else if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "seq"))) {
        st = EB_OK;
    } else {
        st = eb_error(EB_ERR_UNAVAILABLE, "JetStream answered the record with %.*s",
                      natsMsg_GetDataLength(m) > 200 ? 200 : natsMsg_GetDataLength(m),
                      natsMsg_GetData(m));
    }
    cJSON_Delete(j);
    if (st != EB_OK) {
        /* a full stream refuses every record of a burst: one line a second says so */
        long long now = eb_monotonic_ms();
        if (now - p->refusal_logged_ms >= 1000) {
            if (p->refusals_unlogged)
                eb_log_warn(NULL, "%s (and %lu more refusals since the last such line)",
                            eb_error_message(), p->refusals_unlogged);
            else
                eb_log_warn(NULL, "%s", eb_error_message());
            p->refusal_logged_ms = now;
            p->refusals_unlogged = 0;
        } else {
            p->refusals_unlogged++;
        }
    }
    return st;
}

/* "No responders": the server found no stream for one record's subject and said so at once,
 * but the library keeps back which record (natsSubscription_NextMsg drops the answer). Records
 * a stream took are acknowledged later, so once every record still waiting is one of those
 * answered so, all of them were refused and fail at once; until then they wait, and what is
 * not acknowledged in time fails as a timeout (it may be stored). Meanwhile (p->refused > 0)
 * new batches are refused without being sent, so that records waiting for a timeout (lost
 * with a connection, say) do not keep every later batch waiting too. p->refused never counts
 * more than the records so answered that are still in the table, but for an answer that comes
 * after its own record timed out (a server stalled for longer than publish-timeout): a timeout,
 * which may take some of them out, sets it back to 0 (the others then time out too). */
static void fail_refused(ingest_publisher *p)
{
    size_t n = p->used;

    if (!p->refused || p->refused < p->used)
        return;
    for (size_t i = 0; i < p->cap; i++) {
        while (p->table[i].seq) { /* table_take shifts a later entry into slot i */
            pub_batch *b = NULL;
            size_t index = 0;
            if (table_take(p, p->table[i].seq, &b, &index))
                record_result(p, b, index, EB_ERR_UNAVAILABLE);
        }
    }
    p->refused = 0;
    eb_log_warn(NULL,
                "no JetStream stream takes the subject of %zu records (is INGEST "
                "missing?); they were refused",
                n);
}

/* The number n of a reply subject "<inbox>.<n>"; 0 when there is none. */
static uint64_t reply_seq(const char *subject)
{
    const char *dot = subject ? strrchr(subject, '.') : NULL;

    return dot ? strtoull(dot + 1, NULL, 10) : 0;
}

/* The read hook: takes the acknowledgements the library has queued (often one a read: JetStream
 * answers each record as it stores it). */
static void take_acks(void *arg)
{
    ingest_publisher *p = arg;

    for (;;) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, p->acks, 0);

        if (s == NATS_NO_RESPONDERS) {
            if (p->used > 0) /* else a stale answer: nothing is waiting */
                p->refused++;
            continue;
        }
        if (s == NATS_SLOW_CONSUMER) {
            /* some were dropped (their batches time out); the others are still queued */
            eb_log_warn(NULL, "JetStream acknowledgements were dropped (slow consumer)");
            continue;
        }
        if (s != NATS_OK)
            break; /* none left (NATS_TIMEOUT), or the subscription is closed */
        pub_batch *b = NULL;
        size_t index = 0;
        if (table_take(p, reply_seq(natsMsg_GetSubject(m)), &b, &index))
            record_result(p, b, index, ack_status(p, m));
        /* else the batch timed out already */
        natsMsg_Destroy(m);
    }
    fail_refused(p);
    if (p->ready)
        on_wake(-1, 0, p);
}

/* A batch whose acknowledgements did not all come in time fails the rest as timeouts. */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    pub_batch *b = arg;
    ingest_publisher *p = b->p;

    (void)fd;
    (void)what;
    if (b->finished)
        return;
    p->refused = 0; /* see fail_refused */
    for (size_t i = 0; i < b->n; i++) {
        pub_batch *bb = NULL;
        size_t index = 0;
        if (b->seqs[i] && table_take(p, b->seqs[i], &bb, &index))
            record_result(p, bb, index, EB_ERR_TIMEOUT);
    }
    /* every record not yet answered was in the table: the batch is complete now */
    assert(b->finished);
    on_wake(-1, 0, p);
}

ingest_publisher *ingest_publisher_new(struct event_base *base, eb_bus *bus, long long timeout_ms,
                                       eb_status *st)
{
    ingest_publisher *p = eb_calloc(1, sizeof(*p));
    char subject[80], id[37];
    natsStatus s;

    p->base = base;
    p->bus = bus;
    p->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    atomic_init(&p->next_seq, 1);
    p->wake = event_new(base, -1, 0, on_wake, p);
    /* under evalbus's inbox prefix: none of a publisher's reply subjects can name it
     * (eb_bus_reply_allowed_outside) */
    eb_uuid_v4(id);
    snprintf(p->inbox, sizeof(p->inbox), EB_BUS_INBOX_PREFIX ".acks.%s", id);
    snprintf(subject, sizeof(subject), "%s.*", p->inbox);
    s = natsConnection_SubscribeSync(&p->acks, eb_bus_conn(bus), subject);
    if (s == NATS_OK) /* bounded by the records in flight */
        s = natsSubscription_SetPendingLimits(p->acks, -1, -1);
    if (s != NATS_OK) {
        *st = eb_bus_error(s, "subscribing to JetStream's acknowledgements");
        ingest_publisher_free(p);
        return NULL;
    }
    eb_bus_set_read_hook(bus, take_acks, p);
    *st = EB_OK;
    eb_metrics_describe("evalbus_ingest_refused_stream_full_total", "counter",
                        "records refused while the stream was full of records not yet stored"
                        " (by the stream watch's verdict, or by the stream itself)");
    eb_metrics_describe("evalbus_ingest_refused_nats_down_total", "counter",
                        "records refused while the connection to NATS was down");
    eb_metrics_describe("evalbus_ingest_refused_no_stream_total", "counter",
                        "records refused unsent while records no stream took were waiting");
    return p;
}

void ingest_publisher_finish(ingest_publisher *p)
{
    struct timeval tick = {0, 50000};
    long long until;

    if (!p)
        return;
    p->closing = true;
    if (!p->open)
        return; /* nothing to answer: the loop is not run again */
    until = eb_monotonic_ms() + p->timeout_ms + 2000; /* every batch's timer fires before */
    eb_log_info(NULL, "waiting for JetStream to acknowledge %zu batches", p->open);
    /* the loop runs again for these answers; the HTTP server refuses what else comes in */
    while (p->open && eb_monotonic_ms() < until) {
        event_base_loopexit(p->base, &tick);
        event_base_dispatch(p->base);
    }
    /* a safety net, like the timers: fail what is still open, first the records of batches
     * not yet handed over (they are not sent now), then those waiting for JetStream */
    while (p->sending) {
        pub_batch *b = p->sending;

        sending_remove(p, b);
        evtimer_del(b->more);
        for (; b->sent < b->n; b->sent++) {
            natsMsg_Destroy(b->msgs[b->sent]);
            b->msgs[b->sent] = NULL;
            record_result(p, b, b->sent, EB_ERR_UNAVAILABLE);
        }
    }
    p->in_order_last = NULL;
    if (p->ready)
        on_wake(-1, 0, p);
    for (;;) {
        pub_batch *b = NULL;
        for (size_t i = 0; i < p->cap && !b; i++)
            b = p->table[i].seq ? p->table[i].batch : NULL;
        if (!b)
            break;
        on_timeout(-1, 0, b);
    }
    /* let the answers go out */
    event_base_loopexit(p->base, &tick);
    event_base_dispatch(p->base);
}

void ingest_publisher_free(ingest_publisher *p)
{
    if (!p)
        return;
    if (p->acks) {
        eb_bus_set_read_hook(p->bus, NULL, NULL);
        natsSubscription_Destroy(p->acks);
    }
    /* close the (shared) connection: nothing more is published or acknowledged through it.
     * eb_bus_close() closes it again, harmlessly. */
    natsConnection_Close(eb_bus_conn(p->bus));
    if (p->wake)
        event_free(p->wake);
    free(p->table);
    free(p);
}

long long ingest_now_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Room in a stream message for what is not the record: the Nats-Msg-Id header and the
 * protocol around it. */
#define RECORD_HEADROOM 1024

eb_status ingest_record_pack(ingest_publisher *p, const eb_principal *who, const char *source,
                             bool merge, long long now_ms, const Evalbus__V1__Trace *t,
                             long long max_payload, natsMsg **out)
{
    Evalbus__V1__IngestRecord rec = EVALBUS__V1__INGEST_RECORD__INIT;
    Evalbus__V1__Envelope env = EVALBUS__V1__ENVELOPE__INIT;
    char subject[160], reply[96], event_id[37], msg_id[256], hash[65];
    natsMsg *msg = NULL;
    uint8_t *buf;
    size_t len, tlen;
    natsStatus s;

    *out = NULL;
    snprintf(subject, sizeof(subject), INGEST_SUBJECT_PREFIX "%s", who->team_slug);
    eb_uuid_v4(event_id);
    env.event_id = event_id;
    env.team_id = (char *)who->team_id;
    env.project_id = t->project ? t->project : (char *)"";
    env.occurred_at_unix_ms = now_ms;
    env.schema_version = 1;
    rec.envelope = &env;
    rec.team_slug = (char *)who->team_slug;
    rec.source = (char *)source;
    rec.has_merge = 1;
    rec.merge = merge;
    rec.has_received_at_unix_ms = 1;
    rec.received_at_unix_ms = now_ms;
    rec.restricted_project = who->project[0] ? (char *)who->project : NULL;
    /* The trace is packed once: hashed for the message id (the trace alone, so envelope ids
     * and times do not defeat dedupe), then appended to the record as field 3 (a
     * length-delimited field may stand anywhere in a protobuf message). */
    tlen = evalbus__v1__trace__get_packed_size(t);
    len = evalbus__v1__ingest_record__get_packed_size(&rec);
    if (max_payload > 0 && len + 11 + tlen + RECORD_HEADROOM > (size_t)max_payload)
        return eb_error(EB_ERR_TOO_LARGE,
                        "the trace is %zu bytes as a stream record, more than the NATS server "
                        "takes (max_payload %lld bytes); text parts with members besides type "
                        "and text are kept whole beside their text, so they count more than once",
                        len + 11 + tlen, max_payload);
    buf = eb_malloc(len + 1 + 10 + tlen);
    evalbus__v1__ingest_record__pack(&rec, buf);
    buf[len++] = (3 << 3) | 2;
    for (size_t v = tlen;; v >>= 7) {
        buf[len++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f)
            break;
    }
    evalbus__v1__trace__pack(t, buf + len);
    eb_sha256_hex(buf + len, tlen, hash);
    len += tlen;
    {
        /* after a deletion of the team's traces, a resend is not a duplicate of what was
         * deleted (deletions.c) */
        long long epoch = ingest_deletion_epoch(who->team_id, now_ms);
        if (epoch)
            snprintf(msg_id, sizeof(msg_id), "%s:%.180s:%.16s:%lld", who->team_id,
                     t->id ? t->id : "", hash, epoch);
        else
            snprintf(msg_id, sizeof(msg_id), "%s:%.180s:%.16s", who->team_id, t->id ? t->id : "",
                     hash);
    }
    snprintf(reply, sizeof(reply), "%s.%llu", p->inbox,
             (unsigned long long)atomic_fetch_add(&p->next_seq, 1));
    s = natsMsg_Create(&msg, subject, reply, (const char *)buf, (int)len);
    free(buf);
    /* the header JetStream deduplicates by */
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "Nats-Msg-Id", msg_id);
    if (s != NATS_OK) {
        natsMsg_Destroy(msg);
        return eb_bus_error(s, "creating a record message");
    }
    *out = msg;
    return EB_OK;
}

long long ingest_publisher_max_payload(ingest_publisher *p)
{
    return p ? (long long)natsConnection_GetMaxPayload(eb_bus_conn(p->bus)) : 0;
}

/* While the connection is down the library would keep what is published in its reconnect
 * buffer and send it after reconnecting: by then the batch has been answered 503 after the
 * publish timeout, and a client that sends it again (an id-less trace gets a new id) would have
 * it stored twice. So nothing is handed over unless the connection is up: a refusal comes at
 * once, and what is refused is never sent. */
static bool nats_up(ingest_publisher *p)
{
    return natsConnection_Status(eb_bus_conn(p->bus)) == NATS_CONN_STATUS_CONNECTED;
}

void ingest_publisher_set_full(ingest_publisher *p, bool full)
{
    if (p)
        atomic_store(&p->full, full);
}

/* Hands the next slice of b's records to the library, then either schedules the slice after it
 * for a later turn of the loop or, after the last one, starts the wait for the
 * acknowledgements. */
static void send_slice(pub_batch *b)
{
    static const struct timeval next_turn = {0, 0};
    ingest_publisher *p = b->p;
    natsConnection *nc = eb_bus_conn(p->bus);
    size_t end = b->n - b->sent > PUBLISH_SLICE ? b->sent + PUBLISH_SLICE : b->n;
    struct timeval tv;
    bool wake = false;

    /* Acknowledgements taken between slices cannot complete the batch: the records not yet
     * handed over are still to be answered. */
    for (; b->sent < end; b->sent++) {
        size_t i = b->sent;
        natsMsg *msg = b->msgs[i];
        uint64_t seq = msg ? reply_seq(natsMsg_GetReply(msg)) : 0;
        natsStatus s;

        b->msgs[i] = NULL;
        if (!msg || !seq) {
            /* it could not be made */
            natsMsg_Destroy(msg);
            wake |= record_result(
                p, b, i, b->unmade && b->unmade[i] != EB_OK ? b->unmade[i] : EB_ERR_UNAVAILABLE);
            continue;
        }
        /* checked again for every message: the connection may drop while a batch goes out */
        bool up = nats_up(p);
        s = up ? natsConnection_PublishMsg(nc, msg) : NATS_CONNECTION_DISCONNECTED;
        natsMsg_Destroy(msg);
        if (s == NATS_OK) {
            b->seqs[i] = seq;
            table_put(p, seq, b, i);
        } else {
            /* not sent, whatever the status says */
            if (!up)
                eb_metrics_add("evalbus_ingest_refused_nats_down_total", NULL, 1);
            wake |= record_result(p, b, i,
                                  eb_error(EB_ERR_UNAVAILABLE, "publishing to INGEST: %s",
                                           up ? natsStatus_GetText(s) : "not connected to NATS"));
        }
    }
    if (b->sent < b->n) {
        /* a timer due at once runs after the loop has polled its sockets again (an activated
         * event would run in this same pass) */
        evtimer_add(b->more, &next_turn);
        return;
    }
    sending_remove(p, b);
    if (p->in_order_last == b)
        p->in_order_last = NULL;
    if (b->behind) /* the next in-order batch goes out from the next turn on */
        evtimer_add(b->behind->more, &next_turn);
    if (!b->finished) {
        tv.tv_sec = p->timeout_ms / 1000;
        tv.tv_usec = (p->timeout_ms % 1000) * 1000;
        evtimer_add(b->timer, &tv);
    }
    if (wake) /* answered on the next turn of the loop, not inside the caller's call */
        event_active(p->wake, EV_READ, 0);
}

static void on_more(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_slice(arg);
}

void ingest_publish_packed(ingest_publisher *p, natsMsg **msgs, size_t n, const eb_status *unmade,
                           bool in_order, ingest_publish_done done, void *arg)
{
    pub_batch *b = eb_calloc(1, sizeof(*b));

    b->p = p;
    b->n = n;
    b->remaining = n;
    b->results = eb_calloc(n ? n : 1, sizeof(eb_status));
    b->seqs = eb_calloc(n ? n : 1, sizeof(uint64_t));
    b->done = done;
    b->arg = arg;
    for (size_t i = 0; i < n; i++)
        b->results[i] = EB_ERR_INTERNAL; /* not yet acknowledged */
    bool full = atomic_load(&p->full), no_stream = p->refused > 0;

    if (n == 0 || p->closing || full || no_stream || !nats_up(p)) {
        /* refused while shutting down, while the stream is nearly full of records not yet
         * stored, while records are waiting that no stream took (fail_refused), or while the
         * connection to NATS is down: nothing was sent */
        for (size_t i = 0; i < n; i++) {
            natsMsg_Destroy(msgs[i]);
            msgs[i] = NULL;
            b->results[i] = full && !p->closing ? EB_ERR_RATE_LIMITED : EB_ERR_UNAVAILABLE;
        }
        if (n && !p->closing)
            eb_metrics_add(full        ? "evalbus_ingest_refused_stream_full_total"
                           : no_stream ? "evalbus_ingest_refused_no_stream_total"
                                       : "evalbus_ingest_refused_nats_down_total",
                           NULL, (double)n);
        done(arg, b->results, n);
        batch_free(b);
        return;
    }
    p->open++;
    b->timer = evtimer_new(p->base, on_timeout, b);
    /* the batch takes the messages */
    b->msgs = eb_malloc(n * sizeof(*b->msgs));
    memcpy(b->msgs, msgs, n * sizeof(*msgs));
    memset(msgs, 0, n * sizeof(*msgs));
    if (unmade) {
        b->unmade = eb_malloc(n * sizeof(*b->unmade));
        memcpy(b->unmade, unmade, n * sizeof(*unmade));
    }
    /* an in-order batch behind one still being handed over waits for it whole: its records
     * must not go out between that one's slices */
    bool waits = in_order && p->in_order_last;

    if (n > PUBLISH_SLICE || waits) {
        b->more = evtimer_new(p->base, on_more, b);
        b->snext = p->sending;
        p->sending = b;
    }
    if (in_order) {
        if (waits)
            p->in_order_last->behind = b; /* started by send_slice of that one */
        p->in_order_last = b;
    }
    if (!waits)
        send_slice(b);
}
