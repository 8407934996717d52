/* publish.c -- durable hand-off of accepted traces to the JetStream stream INGEST.
 *
 * Each trace becomes an IngestRecord published asynchronously on
 * evalbus.v1.ingest.records.<team slug> with the message id
 * "<team id>:<trace id>:<first 16 hex of SHA-256 of the record's trace>", so that a resend of
 * the same trace within the stream's duplicate window is stored once while a changed version
 * of a trace is a new record (the writer keeps the newest by stream sequence).
 *
 * Packing (ingest_record_pack: the record, the hash, the message with its Nats-Msg-Id header)
 * needs no publisher state, so the JSON batch API does it on its pool threads; handing the
 * messages to the library (ingest_publish_packed) happens on the loop thread, which drives the
 * NATS connection. The library keeps up to 1,000,000 publishes in flight (MaxPending): a batch
 * goes out without waiting for the acknowledgements of earlier ones.
 *
 * Acknowledgements arrive on a NATS thread through the context's ack handler, which finds the
 * batch of a message by its pointer in a small table, records the result, and when a batch is
 * complete queues it for the loop thread (event_active). A timer per batch bounds the wait: the
 * ack handler reports timeouts itself (jsPubOptions.MaxWait), the timer is a safety net.
 * Threading: ingest_publish, ingest_publish_packed and the done callbacks run on the loop
 * thread; ingest_record_pack on any thread. */
#include "evalbus/bus.h"
#include "evalbus/crypto.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

typedef struct pub_batch {
    struct pub_batch *next;
    ingest_publisher *p;
    size_t n;
    size_t remaining;
    eb_status *results;
    ingest_publish_done done;
    void *arg;
    struct event *timer;
    bool finished;
} pub_batch;

typedef struct inflight {
    natsMsg *msg; /* key: the message pointer handed to the library */
    pub_batch *batch;
    size_t index;
} inflight;

struct ingest_publisher {
    struct event_base *base;
    eb_bus *bus;
    jsCtx *js;
    long long timeout_ms;
    pthread_mutex_t mu;
    inflight *table; /* open addressing on msg pointer */
    size_t cap, used;
    pub_batch *ready;
    struct event *wake;
    atomic_bool full; /* the stream watch's verdict: refuse new records */
    size_t open;      /* batches handed over and not yet answered (loop thread) */
    bool closing;     /* shutting down: refuse new records (loop thread) */
};

static size_t ptr_slot(const ingest_publisher *p, const void *ptr)
{
    uintptr_t v = (uintptr_t)ptr;

    v ^= v >> 17;
    v *= 0x9E3779B97F4A7C15ULL;
    return (size_t)(v >> 7) & (p->cap - 1);
}

/* Caller holds mu. */
static void table_grow(ingest_publisher *p)
{
    inflight *old = p->table;
    size_t oldcap = p->cap;

    p->cap = oldcap ? oldcap * 2 : 4096;
    p->table = eb_calloc(p->cap, sizeof(inflight));
    p->used = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].msg) {
            size_t j = ptr_slot(p, old[i].msg);
            while (p->table[j].msg)
                j = (j + 1) & (p->cap - 1);
            p->table[j] = old[i];
            p->used++;
        }
    }
    free(old);
}

/* Caller holds mu. */
static void table_put(ingest_publisher *p, natsMsg *msg, pub_batch *b, size_t index)
{
    size_t j;

    if ((p->used + 1) * 2 > p->cap)
        table_grow(p);
    j = ptr_slot(p, msg);
    while (p->table[j].msg)
        j = (j + 1) & (p->cap - 1);
    p->table[j].msg = msg;
    p->table[j].batch = b;
    p->table[j].index = index;
    p->used++;
}

/* Caller holds mu. Removes msg; returns false if it is not there. Backward-shift deletion keeps
 * probe chains intact. */
static bool table_take(ingest_publisher *p, const natsMsg *msg, pub_batch **b, size_t *index)
{
    size_t j;

    if (!p->cap)
        return false;
    j = ptr_slot(p, msg);
    while (p->table[j].msg && p->table[j].msg != msg)
        j = (j + 1) & (p->cap - 1);
    if (!p->table[j].msg)
        return false;
    *b = p->table[j].batch;
    *index = p->table[j].index;
    p->table[j].msg = NULL;
    p->used--;
    for (size_t k = (j + 1) & (p->cap - 1); p->table[k].msg; k = (k + 1) & (p->cap - 1)) {
        inflight e = p->table[k];
        p->table[k].msg = NULL;
        p->used--;
        table_put(p, e.msg, e.batch, e.index);
    }
    return true;
}

/* Caller holds mu: record one result, queue the batch when complete. Returns true if the loop
 * must be woken. */
static bool record_result(ingest_publisher *p, pub_batch *b, size_t index, eb_status st)
{
    b->results[index] = st;
    if (--b->remaining > 0 || b->finished)
        return false;
    b->finished = true;
    b->next = p->ready;
    p->ready = b;
    return true;
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    ingest_publisher *p = closure;
    pub_batch *b = NULL;
    size_t index = 0;
    bool wake = false;
    eb_status st = EB_OK;

    (void)js;
    if (!pa) {
        /* a timeout: the record was sent and may still be stored; otherwise refused */
        st = pae && pae->Err == NATS_TIMEOUT ? EB_ERR_TIMEOUT : EB_ERR_UNAVAILABLE;
        eb_log_warn(NULL, "JetStream %s a record: %s",
                    st == EB_ERR_TIMEOUT ? "did not acknowledge" : "refused",
                    pae && pae->ErrText ? pae->ErrText : "no acknowledgement");
    }
    pthread_mutex_lock(&p->mu);
    if (table_take(p, msg, &b, &index) && b) /* b is NULL when the batch already timed out */
        wake = record_result(p, b, index, st);
    pthread_mutex_unlock(&p->mu);
    if (wake)
        event_active(p->wake, EV_READ, 0);
    natsMsg_Destroy(msg);
}

static void batch_free(pub_batch *b)
{
    if (b->timer)
        event_free(b->timer);
    free(b->results);
    free(b);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    ingest_publisher *p = arg;
    pub_batch *list;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&p->mu);
    list = p->ready;
    p->ready = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {
        pub_batch *next = list->next;
        p->open--;
        list->done(list->arg, list->results, list->n);
        batch_free(list);
        list = next;
    }
}

/* Safety net: a batch whose acknowledgements did not all come in time fails the rest. */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    pub_batch *b = arg;
    ingest_publisher *p = b->p;
    bool wake = false;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&p->mu);
    if (!b->finished) {
        for (size_t i = 0; i < p->cap; i++) {
            if (p->table[i].msg && p->table[i].batch == b) {
                /* leave the entry: on_ack will find no batch once it is gone */
                p->table[i].batch = NULL;
            }
        }
        for (size_t i = 0; i < b->n; i++)
            if (b->results[i] == EB_ERR_INTERNAL)
                b->results[i] = EB_ERR_TIMEOUT;
        b->remaining = 0;
        b->finished = true;
        b->next = p->ready;
        p->ready = b;
        wake = true;
    }
    pthread_mutex_unlock(&p->mu);
    if (wake)
        on_wake(-1, 0, p);
}

ingest_publisher *ingest_publisher_new(struct event_base *base, eb_bus *bus, long long timeout_ms,
                                       eb_status *st)
{
    ingest_publisher *p = eb_calloc(1, sizeof(*p));
    jsOptions o;
    natsStatus s;

    p->base = base;
    p->bus = bus;
    p->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    pthread_mutex_init(&p->mu, NULL);
    p->wake = event_new(base, -1, 0, on_wake, p);
    jsOptions_Init(&o);
    o.PublishAsync.AckHandler = on_ack;
    o.PublishAsync.AckHandlerClosure = p;
    o.PublishAsync.MaxPending = 1000000;
    s = natsConnection_JetStream(&p->js, eb_bus_conn(bus), &o);
    if (s != NATS_OK) {
        *st = eb_bus_error(s, "JetStream context for publishing");
        ingest_publisher_free(p);
        return NULL;
    }
    *st = EB_OK;
    eb_metrics_describe("evalbus_ingest_refused_stream_full_total", "counter",
                        "records refused while the stream was full of records not yet stored");
    eb_metrics_describe("evalbus_ingest_refused_nats_down_total", "counter",
                        "records refused while the connection to NATS was down");
    return p;
}

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ingest_publisher_finish(ingest_publisher *p)
{
    struct timeval tick = {0, 50000};
    long long until;

    if (!p)
        return;
    p->closing = true;
    if (!p->open)
        return;                               /* nothing to answer: the loop is not run again */
    until = mono_ms() + p->timeout_ms + 2000; /* every batch's timer fires before */
    eb_log_info(NULL, "waiting for JetStream to acknowledge %zu batches", p->open);
    /* the loop runs again for these answers; the HTTP server refuses what else comes in */
    while (p->open && mono_ms() < until) {
        event_base_loopexit(p->base, &tick);
        event_base_dispatch(p->base);
    }
    for (;;) { /* a safety net, like the timers: fail what is still open */
        pub_batch *b = NULL;
        pthread_mutex_lock(&p->mu);
        for (size_t i = 0; i < p->cap && !b; i++)
            b = p->table[i].msg ? p->table[i].batch : NULL;
        pthread_mutex_unlock(&p->mu);
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
    jsPubOptions po;

    if (!p)
        return;
    /* The acknowledgement handler uses p, on a delivery thread of its own. Wait until the
     * library has no publish pending (it counts one as done once its handler has returned;
     * after ingest_publisher_finish its own timeouts have normally fired already), then close
     * the (shared) connection, so that no handler runs after p is gone. eb_bus_close() closes
     * it again, harmlessly. */
    jsPubOptions_Init(&po);
    po.MaxWait = 1000;
    if (p->js)
        (void)js_PublishAsyncComplete(p->js, &po);
    natsConnection_Close(eb_bus_conn(p->bus));
    jsCtx_Destroy(p->js);
    if (p->wake)
        event_free(p->wake);
    pthread_mutex_destroy(&p->mu);
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

eb_status ingest_record_pack(const eb_principal *who, const char *source, bool merge,
                             long long now_ms, const Evalbus__V1__Trace *t, long long max_payload,
                             natsMsg **out)
{
    Evalbus__V1__IngestRecord rec = EVALBUS__V1__INGEST_RECORD__INIT;
    Evalbus__V1__Envelope env = EVALBUS__V1__ENVELOPE__INIT;
    char subject[160], event_id[37], msg_id[256], hash[65];
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
    s = natsMsg_Create(&msg, subject, NULL, (const char *)buf, (int)len);
    free(buf);
    /* the header js_PublishMsgAsync would set from jsPubOptions.MsgId */
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "Nats-Msg-Id", msg_id);
    if (s != NATS_OK) {
        natsMsg_Destroy(msg);
        return eb_bus_error(s, "creating a record message");
    }
    *out = msg;
    return EB_OK;
}

void ingest_publish(ingest_publisher *p, const eb_principal *who, const char *source, bool merge,
                    Evalbus__V1__Trace *const *traces, size_t n, ingest_publish_done done,
                    void *arg)
{
    natsMsg **msgs = eb_calloc(n ? n : 1, sizeof(*msgs));
    eb_status *unmade = eb_calloc(n ? n : 1, sizeof(*unmade));
    long long now_ms = ingest_now_ms(), max_payload = ingest_publisher_max_payload(p);

    for (size_t i = 0; i < n; i++)
        unmade[i] =
            ingest_record_pack(who, source, merge, now_ms, traces[i], max_payload, &msgs[i]);
    ingest_publish_packed(p, msgs, n, unmade, done, arg);
    free(unmade);
    free(msgs);
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

void ingest_publish_packed(ingest_publisher *p, natsMsg **msgs, size_t n, const eb_status *unmade,
                           ingest_publish_done done, void *arg)
{
    pub_batch *b = eb_calloc(1, sizeof(*b));
    struct timeval tv;
    jsPubOptions po;

    b->p = p;
    b->n = n;
    b->remaining = n;
    b->results = eb_calloc(n ? n : 1, sizeof(eb_status));
    b->done = done;
    b->arg = arg;
    for (size_t i = 0; i < n; i++)
        b->results[i] = EB_ERR_INTERNAL; /* not yet acknowledged */
    bool full = atomic_load(&p->full);

    if (n == 0 || p->closing || full || !nats_up(p)) {
        /* refused while shutting down, while the stream is nearly full of records not yet
         * stored, or while the connection to NATS is down: nothing was sent */
        for (size_t i = 0; i < n; i++) {
            natsMsg_Destroy(msgs[i]);
            msgs[i] = NULL;
            b->results[i] = EB_ERR_UNAVAILABLE;
        }
        if (n && !p->closing)
            eb_metrics_add(full ? "evalbus_ingest_refused_stream_full_total"
                                : "evalbus_ingest_refused_nats_down_total",
                           NULL, (double)n);
        done(arg, b->results, n);
        batch_free(b);
        return;
    }
    p->open++;
    tv.tv_sec = (p->timeout_ms + 1000) / 1000;
    tv.tv_usec = ((p->timeout_ms + 1000) % 1000) * 1000;
    b->timer = evtimer_new(p->base, on_timeout, b);
    evtimer_add(b->timer, &tv);
    jsPubOptions_Init(&po);
    po.MaxWait = p->timeout_ms;

    /* Every message goes into the table before the first publish: no acknowledgement can then
     * complete the batch while later messages are still being handed over. */
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++)
        if (msgs[i])
            table_put(p, msgs[i], b, i);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++) {
        natsMsg *msg = msgs[i], *key = msgs[i];
        natsStatus s;
        bool wake = false;

        msgs[i] = NULL;
        if (!msg) {
            pthread_mutex_lock(&p->mu);
            /* it could not be made */
            wake = record_result(p, b, i,
                                 unmade && unmade[i] != EB_OK ? unmade[i] : EB_ERR_UNAVAILABLE);
            pthread_mutex_unlock(&p->mu);
            if (wake)
                event_active(p->wake, EV_READ, 0);
            continue;
        }
        /* checked again for every message: the connection may drop while a batch goes out */
        bool up = nats_up(p);
        s = up ? js_PublishMsgAsync(p->js, &msg, &po) : NATS_CONNECTION_DISCONNECTED;
        if (s != NATS_OK) {
            pub_batch *bb = NULL;
            size_t idx = 0;
            /* not sent, whatever the status says (a stalled publish times out) */
            eb_status why = eb_error(EB_ERR_UNAVAILABLE, "publishing to INGEST: %s",
                                     up ? natsStatus_GetText(s) : "not connected to NATS");
            pthread_mutex_lock(&p->mu);
            if (table_take(p, key, &bb, &idx) && bb)
                wake = record_result(p, bb, idx, why);
            pthread_mutex_unlock(&p->mu);
            natsMsg_Destroy(msg);
            if (wake)
                event_active(p->wake, EV_READ, 0);
        }
    }
}
