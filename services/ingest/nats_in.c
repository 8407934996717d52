/* nats_in.c -- TraceBatch intake over NATS: evalbus.v1.ingest.traces.<team>.
 * Replicas share the subject as queue group "ingest". A message carries its API key in the
 * header Evalbus-Api-Key; it is verified like an HTTP credential (auth client with cache), must
 * belong to the team named in the subject and hold traces:write. Every trace is validated like a
 * JSON one; the valid ones go to the INGEST stream, and a reply subject gets an IngestAck once
 * JetStream has them. Messages that cannot be decoded or are not authorized are copied to
 * evalbus.v1.ingest.dead.<team> with the reason in the header Evalbus-Reason and counted;
 * nothing a publisher sends can stop or stall the intake. The reply subject is the publisher's
 * choice and the ack goes out with the service's NATS permissions: one of the server's ($...) or
 * evalbus's own subjects or inboxes (or a wildcard) is refused, never published to
 * (eb_bus_reply_allowed_outside).
 * Threading: the NATS callback only queues the message and wakes the loop (waiting first while
 * NATS_HELD_MAX batches are held: memory is bounded by the subscription's pending limits). The
 * loop checks the credential and answers; decoding, validating, canonicalising and packing a batch
 * (the CPU-heavy part: a 6 MB batch is hundreds of milliseconds of it) run on a decode pool thread
 * (decode_batch), so that no batch holds up the loop, which serves every other batch, HTTP
 * request and JetStream acknowledgement. Batches are decoded side by side but go on to the
 * project guard and the stream in the order their credentials were verified (ctx->nats_order),
 * as they did when they were decoded on the loop: of two versions of a trace sent one after the
 * other, the later one is the later record in the stream. A batch refused whole publishes
 * nothing to the stream and is answered as soon as it is decoded. At shutdown, main.c finishes
 * the pool: batches in it are decoded and answered (their records refused once the publisher
 * is closed). */
#include "evalbus/arena.h"
#include "evalbus/bus.h"
#include "evalbus/clock.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"
#include "otlp.h"
#include "trace_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* At most so many batches, and so many bytes of them, are taken from the NATS client and not yet
 * answered (waiting for their credential, decoding, on the stream's acknowledgement): on_msg
 * waits for room, so that a publisher faster than the intake fills the subscription's pending
 * limits (and past them is dropped as a slow consumer) rather than this replica's memory. */
#define NATS_HELD_MAX 10000
#define NATS_HELD_BYTES_MAX (64 * 1024 * 1024)

typedef struct nats_item {
    struct nats_item *next;
    natsMsg *msg;
    size_t held_bytes; /* counted in ctx->nats_held_bytes until item_free */
    ingest_ctx *ctx;
    Evalbus__V1__TraceBatch *batch; /* unpacked into box: freed with it, never one by one */
    ingest_pb_box *box;
    eb_arena *arena; /* what is made for the batch afterwards */
    Evalbus__V1__Trace **valid;
    natsMsg **msgs;    /* the packed record of valid[i]; NULL when it could not be made: */
    eb_status *unmade; /* why */
    size_t nvalid;
    uint32_t *index;
    Evalbus__V1__IngestRejected **rejected;
    size_t nrejected;
    bool verified;    /* the key belongs to the subject's team */
    eb_principal who; /* once verified */
    /* on the decode pool (decode_batch): a refusal of the whole message, if any */
    eb_status refusal_st;
    char *refusal;
    const char *refusal_metric;
    bool decoded;
    struct nats_item *onext, *oprev; /* neighbours in ctx->nats_order */
} nats_item;

/* ctx->nats_order: the batches handed to the decode pool, in the order they were verified. */
static void order_push(ingest_ctx *ctx, nats_item *it)
{
    it->onext = NULL;
    it->oprev = ctx->nats_order_tail;
    if (it->oprev)
        it->oprev->onext = it;
    else
        ctx->nats_order = it;
    ctx->nats_order_tail = it;
}

static void order_remove(ingest_ctx *ctx, nats_item *it)
{
    if (it->oprev)
        it->oprev->onext = it->onext;
    else
        ctx->nats_order = it->onext;
    if (it->onext)
        it->onext->oprev = it->oprev;
    else
        ctx->nats_order_tail = it->oprev;
    it->onext = it->oprev = NULL;
}

static const char *subject_team(const natsMsg *msg)
{
    const char *s = natsMsg_GetSubject(msg);
    size_t n = strlen(INGEST_NATS_SUBJECT_PREFIX);

    return strncmp(s, INGEST_NATS_SUBJECT_PREFIX, n) == 0 ? s + n : "";
}

/* Bytes of a length-delimited field of n bytes (tag, length, contents). */
static size_t field_size(size_t n)
{
    size_t v = n, bytes = 2; /* a one-byte tag and at least one byte of length */

    while (v >= 128) {
        v >>= 7;
        bytes++;
    }
    return bytes + n;
}

/* Makes the IngestAck fit room bytes (the server's max_payload) by leaving out, from the last
 * rejection backwards, the rejections' messages, then their ids (index and code stay): what was
 * accepted is always listed in full (len: its packed size now). kept[] gets the shortened copies
 * that ack->rejected then points to. It may still be over room if the accepted ids and the
 * rejections' indexes and codes are. */
static void trim_ack(Evalbus__V1__IngestAck *ack, size_t len, size_t room,
                     Evalbus__V1__IngestRejected *kept, Evalbus__V1__IngestRejected **ptrs)
{
    for (size_t i = 0; i < ack->n_rejected; i++) {
        kept[i] = *ack->rejected[i];
        ptrs[i] = &kept[i];
    }
    ack->rejected = ptrs;
    for (int pass = 0; pass < 2 && len > room; pass++) {
        for (size_t i = ack->n_rejected; i-- > 0 && len > room;) {
            char **field = pass == 0 ? &kept[i].message : &kept[i].id;
            size_t before = evalbus__v1__ingest_rejected__get_packed_size(&kept[i]);
            if (!*field)
                continue;
            *field = NULL;
            len -= field_size(before) -
                   field_size(evalbus__v1__ingest_rejected__get_packed_size(&kept[i]));
        }
    }
}

static void reply_ack(ingest_ctx *ctx, natsMsg *msg, Evalbus__V1__IngestAck *ack)
{
    const char *reply = natsMsg_GetReply(msg);
    long long room;
    Evalbus__V1__IngestRejected *kept = NULL, **ptrs = NULL, **rejected = ack->rejected;
    uint8_t *buf;
    size_t len;
    natsStatus s;

    if (!reply || !*reply || !eb_bus_reply_allowed_outside(reply))
        return;
    len = evalbus__v1__ingest_ack__get_packed_size(ack);
    room = ingest_publisher_max_payload(ctx->pub);
    if (room > 0 && len > (size_t)room && ack->n_rejected > 0) {
        size_t full = len;
        kept = eb_malloc(ack->n_rejected * sizeof(*kept));
        ptrs = eb_malloc(ack->n_rejected * sizeof(*ptrs));
        trim_ack(ack, len, (size_t)room, kept, ptrs);
        len = evalbus__v1__ingest_ack__get_packed_size(ack); /* what pack writes */
        eb_log_info(NULL,
                    "IngestAck to %s shortened from %zu to %zu bytes (max_payload %lld): messages "
                    "or ids of rejections left out",
                    reply, full, len, room);
    }
    buf = eb_malloc(len ? len : 1);
    evalbus__v1__ingest_ack__pack(ack, buf);
    s = natsConnection_Publish(eb_bus_conn(ctx->svc.bus), reply, buf, (int)len);
    if (s != NATS_OK) /* the connection is gone, or even the trimmed ack is over max_payload */
        eb_log_warn(NULL, "IngestAck of %zu bytes to %s not sent: %s", len, reply,
                    natsStatus_GetText(s));
    free(buf);
    ack->rejected = rejected;
    free(ptrs);
    free(kept);
}

static void item_free(nats_item *it)
{
    for (size_t i = 0; i < it->nrejected; i++) {
        free(it->rejected[i]->message);
        free(it->rejected[i]);
    }
    free(it->rejected);
    for (size_t i = 0; it->msgs && i < it->nvalid; i++)
        natsMsg_Destroy(it->msgs[i]);
    free(it->msgs);
    free(it->unmade);
    free(it->refusal);
    free(it->valid);
    free(it->index);
    ingest_pb_release(it->box); /* the batch and everything in it */
    eb_arena_free(it->arena);
    natsMsg_Destroy(it->msg);
    pthread_mutex_lock(&it->ctx->nats_mu);
    it->ctx->nats_held--;
    it->ctx->nats_held_bytes -= it->held_bytes;
    pthread_cond_signal(&it->ctx->nats_room);
    pthread_mutex_unlock(&it->ctx->nats_mu);
    free(it);
}

/* Room left in a dead letter for its headers when its payload is cut to the server's
 * max_payload: the reason (an error message, at most a few hundred bytes), the stage, the
 * original subject and the cut's own header. */
#define DEAD_LETTER_HEADROOM 4096

bool ingest_dead_letter(natsConnection *nc, const char *subject, natsMsg *msg, const char *stage,
                        const char *reason, const char *orig_subject)
{
    const char *data = natsMsg_GetData(msg);
    int len = natsMsg_GetDataLength(msg), keep = len;
    natsStatus s = NATS_ERR;

    for (int attempt = 0; attempt < 2; attempt++) {
        natsMsg *dl = NULL;
        char whole[24];

        s = natsMsg_Create(&dl, subject, NULL, data, keep);
        if (s != NATS_OK)
            break;
        natsMsgHeader_Set(dl, "Evalbus-Reason", reason);
        natsMsgHeader_Set(dl, "Evalbus-Stage", stage);
        if (orig_subject)
            natsMsgHeader_Set(dl, "Evalbus-Subject", orig_subject);
        if (keep < len) {
            snprintf(whole, sizeof whole, "%d", len);
            natsMsgHeader_Set(dl, "Evalbus-Payload-Cut", whole);
        }
        s = natsConnection_PublishMsg(nc, dl);
        natsMsg_Destroy(dl);
        if (s != NATS_MAX_PAYLOAD)
            break;
        /* the payload fitted, with the headers added it does not: its first bytes go */
        {
            int64_t max = natsConnection_GetMaxPayload(nc);
            keep = max > DEAD_LETTER_HEADROOM && max - DEAD_LETTER_HEADROOM < (int64_t)len
                       ? (int)(max - DEAD_LETTER_HEADROOM)
                       : 0;
        }
    }
    if (s != NATS_OK)
        eb_log_warn(NULL, "dead letter of %d bytes to %s not published: %s", len, subject,
                    natsStatus_GetText(s));
    else if (keep < len)
        eb_log_warn(NULL,
                    "dead letter to %s carries the first %d of the payload's %d bytes "
                    "(Evalbus-Payload-Cut): with its headers it was over max_payload",
                    subject, keep, len);
    return s == NATS_OK;
}

/* Refuses the whole message: dead letter, counted, and an IngestAck with the error. */
static void refuse(nats_item *it, eb_status st, const char *reason, const char *metric_reason)
{
    ingest_ctx *ctx = it->ctx;
    Evalbus__V1__IngestAck ack = EVALBUS__V1__INGEST_ACK__INIT;
    char subject[200], labels[96];
    const char *team = subject_team(it->msg);

    /* before the key is verified the subject's team is only a claim: such messages go to
     * the operators' subject, never to a team that did not send them */
    snprintf(subject, sizeof(subject), INGEST_DEAD_PREFIX "%.100s",
             it->verified && *team ? team : "_unverified");
    ingest_dead_letter(eb_bus_conn(ctx->svc.bus), subject, it->msg, "nats-intake", reason,
                       natsMsg_GetSubject(it->msg));
    snprintf(labels, sizeof(labels), "stage=\"nats\",reason=\"%s\"", metric_reason);
    eb_metrics_add("evalbus_ingest_dead_letters_total", labels, 1);
    eb_log_warn(NULL, "NATS batch on %s refused: %s", natsMsg_GetSubject(it->msg), reason);
    ack.error = (char *)reason;
    ack.code = (char *)eb_status_str(st);
    reply_ack(ctx, it->msg, &ack);
    item_free(it);
}

/* Answers a batch that shutdown keeps from being taken: unavailable, to be sent again (it is
 * not the batch's fault, so no dead letter). */
static void answer_shutting_down(nats_item *it)
{
    Evalbus__V1__IngestAck ack = EVALBUS__V1__INGEST_ACK__INIT;

    ack.error = (char *)"the service is shutting down and did not take this batch; send it again";
    ack.code = (char *)eb_status_str(EB_ERR_UNAVAILABLE);
    reply_ack(it->ctx, it->msg, &ack);
    item_free(it);
}

/* Records why trace index (id) of the batch is refused, for the IngestAck. */
static void reject(nats_item *it, uint32_t index, char *id, eb_status st, const char *message)
{
    Evalbus__V1__IngestRejected *r = eb_malloc(sizeof(*r));

    evalbus__v1__ingest_rejected__init(r);
    r->has_index = 1;
    r->index = index;
    r->id = id;
    r->code = (char *)eb_status_str(st);
    r->message = eb_strdup(message);
    it->rejected = eb_realloc(it->rejected, (it->nrejected + 1) * sizeof(*it->rejected));
    it->rejected[it->nrejected++] = r;
}

static void on_published(void *arg, const eb_status *results, size_t n)
{
    nats_item *it = arg;
    Evalbus__V1__IngestAck ack = EVALBUS__V1__INGEST_ACK__INIT;
    char **accepted = eb_calloc(n ? n : 1, sizeof(char *));
    size_t nacc = 0;

    for (size_t i = 0; i < n; i++) {
        if (results[i] == EB_OK) {
            accepted[nacc++] = it->valid[i]->id;
        } else {
            reject(it, it->index[i], it->valid[i]->id,
                   results[i] == EB_ERR_TOO_LARGE ? EB_ERR_TOO_LARGE : EB_ERR_UNAVAILABLE,
                   ingest_publish_message(results[i]));
        }
    }
    eb_metrics_add("evalbus_ingest_traces_accepted_total", "source=\"nats\"", (double)nacc);
    ack.accepted_ids = accepted;
    ack.n_accepted_ids = nacc;
    ack.rejected = it->rejected;
    ack.n_rejected = it->nrejected;
    reply_ack(it->ctx, it->msg, &ack);
    free(accepted);
    item_free(it);
}

/* Loop thread: the records of traces that a project-restricted key's team stores in another
 * project are refused in the IngestAck, the others go to the stream. */
static void on_guarded(void *arg, char *const *found)
{
    nats_item *it = arg;
    size_t kept = 0;

    for (size_t i = 0; i < it->nvalid; i++) {
        if (found && found[i]) {
            char *why = ingest_project_refusal(it->valid[i]->id, found[i], it->who.project);
            reject(it, it->index[i], it->valid[i]->id, EB_ERR_FORBIDDEN, why);
            free(why);
            natsMsg_Destroy(it->msgs[i]);
            continue;
        }
        it->index[kept] = it->index[i];
        it->msgs[kept] = it->msgs[i];
        it->unmade[kept] = it->unmade[i];
        it->valid[kept++] = it->valid[i];
    }
    it->nvalid = kept;
    eb_metrics_add("evalbus_ingest_traces_rejected_total", "source=\"nats\"",
                   (double)it->nrejected);
    ingest_publish_packed(it->ctx->pub, it->msgs, it->nvalid, it->unmade, true, on_published, it);
}

/* Pool thread: the message -> TraceBatch -> checks per trace -> packed records. Touches
 * neither the loop nor the NATS connection; a refusal of the whole message is left in
 * it->refusal for on_decoded. */
static void decode_batch(void *arg)
{
    nats_item *it = arg;
    ingest_ctx *ctx = it->ctx;
    const eb_principal *p = &it->who;
    ProtobufCMessage *m = NULL;
    long long now_ms, max_payload;
    size_t n;
    eb_status st;

    /* checked and bounded as OTLP bodies are (a message full of empty traces must not cost
     * gigabytes; a NUL byte would cut a string short); the batch's hundreds of strings and
     * sub-messages come from one arena, not malloc */
    st = ingest_pb_unpack(&evalbus__v1__trace_batch__descriptor,
                          (const uint8_t *)natsMsg_GetData(it->msg),
                          (size_t)natsMsg_GetDataLength(it->msg), &it->box, &m);
    if (st != EB_OK) {
        it->refusal_st = st;
        it->refusal = eb_asprintf("%.299s", eb_error_message());
        it->refusal_metric = st == EB_ERR_TOO_LARGE ? "too_large" : "undecodable";
        return;
    }
    it->batch = (Evalbus__V1__TraceBatch *)m;
    it->arena = eb_arena_new();
    if (it->batch->n_traces > ctx->limits.max_batch_items) {
        it->refusal_st = EB_ERR_TOO_LARGE;
        it->refusal = eb_strdup("the batch holds more traces than max-batch-items");
        it->refusal_metric = "too_large";
        return;
    }
    n = it->batch->n_traces ? it->batch->n_traces : 1;
    it->valid = eb_calloc(n, sizeof(*it->valid));
    it->index = eb_calloc(n, sizeof(uint32_t));
    it->msgs = eb_calloc(n, sizeof(*it->msgs));
    it->unmade = eb_calloc(n, sizeof(*it->unmade));
    now_ms = ingest_now_ms();
    max_payload = ingest_publisher_max_payload(ctx->pub);
    for (size_t i = 0; i < it->batch->n_traces; i++) {
        Evalbus__V1__Trace *t = it->batch->traces[i];
        eb_status vs = ingest_trace_validate(t, &ctx->limits);
        if (vs == EB_OK && p->project[0] && (!t->project || !*t->project)) {
            /* a restricted key writes to its project (a copy in the batch's arena) */
            size_t len = strlen(p->project) + 1;
            t->project = memcpy(eb_arena_alloc(it->arena, len), p->project, len);
        }
        if (vs == EB_OK)
            vs = ingest_check_project(p, t->project);
        if (vs == EB_OK) {
            /* printed again, a text can grow ("1e15"): the limits hold for what is stored */
            ingest_trace_canonical_json(t, it->arena);
            vs = ingest_trace_validate(t, &ctx->limits);
        }
        if (vs != EB_OK) {
            reject(it, (uint32_t)i, t->id, vs, eb_error_message());
            continue;
        }
        /* one larger than the NATS server takes is answered too_large (on_published) */
        it->unmade[it->nvalid] = ingest_record_pack(ctx->pub, p, "nats", false, now_ms, t,
                                                    max_payload, &it->msgs[it->nvalid]);
        it->index[it->nvalid] = (uint32_t)i;
        it->valid[it->nvalid++] = t;
    }
}

/* Loop thread: a batch refused whole is answered now; the others go on to the guard and the
 * stream in the order they were verified, each once it and every batch before it are decoded. */
static void on_decoded(void *arg)
{
    nats_item *it = arg;
    ingest_ctx *ctx = it->ctx;

    it->decoded = true;
    if (it->refusal) {
        /* it publishes nothing to the stream: answered now, and the batches decoded behind it
         * go on below (they may have waited for it alone) */
        order_remove(ctx, it);
        refuse(it, it->refusal_st, it->refusal, it->refusal_metric);
    }
    while (ctx->nats_order && ctx->nats_order->decoded) {
        nats_item *head = ctx->nats_order;

        order_remove(ctx, head);
        ingest_guard_traces(ctx, &head->who, head->valid, head->nvalid, on_guarded, head);
    }
}

static void on_verified(eb_status st, const eb_principal *p, const char *reason, void *arg)
{
    nats_item *it = arg;
    ingest_ctx *ctx = it->ctx;
    int len = natsMsg_GetDataLength(it->msg);
    char why[300];

    if (st == EB_ERR_UNAVAILABLE && strcmp(reason, "shutting_down") == 0) {
        answer_shutting_down(it);
        return;
    }
    if (st != EB_OK) {
        snprintf(why, sizeof(why), "credential rejected: %s",
                 st == EB_ERR_UNAUTHENTICATED ? reason : "auth service unavailable");
        refuse(it, st == EB_ERR_UNAUTHENTICATED ? st : EB_ERR_UNAVAILABLE, why,
               st == EB_ERR_UNAUTHENTICATED ? "unauthenticated" : "unavailable");
        return;
    }
    if (strcmp(p->team_slug, subject_team(it->msg)) != 0) {
        refuse(it, EB_ERR_FORBIDDEN, "the key belongs to another team than the subject names",
               "wrong_team");
        return;
    }
    it->verified = true;
    if (!(p->scopes & EB_SCOPE_TRACES_WRITE) || p->role < EB_ROLE_MEMBER) {
        refuse(it, EB_ERR_FORBIDDEN, "the key lacks the traces:write scope", "forbidden");
        return;
    }
    if ((long long)len > ctx->cfg->svc.max_body) {
        refuse(it, EB_ERR_TOO_LARGE, "the message exceeds max-body", "too_large");
        return;
    }
    it->who = *p;
    order_push(ctx, it); /* in line behind the batches verified before it (on_decoded) */
    eb_pool_submit(ctx->pool, decode_batch, on_decoded, it);
}

/* How many Evalbus-Api-Key headers msg carries; *key gets the first one's value ("" if none). */
static int api_key(natsMsg *msg, const char **key)
{
    const char **values = NULL;
    int n = 0;

    *key = "";
    if (natsMsgHeader_Values(msg, "Evalbus-Api-Key", &values, &n) != NATS_OK || n <= 0) {
        free((void *)values);
        return 0;
    }
    *key = values[0] ? values[0] : "";
    free((void *)values);
    return n;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    ingest_ctx *ctx = arg;
    nats_item *list, *rev = NULL;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&ctx->nats_mu);
    list = ctx->nats_queue;
    ctx->nats_queue = NULL;
    pthread_mutex_unlock(&ctx->nats_mu);
    while (list) { /* restore arrival order */
        nats_item *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        nats_item *next = rev->next;
        const char *key = NULL;
        const char *reply = natsMsg_GetReply(rev->msg);
        int nkeys = api_key(rev->msg, &key);
        if (ctx->stopping)
            answer_shutting_down(rev); /* the stream may be closed already */
        else if (reply && *reply && !eb_bus_reply_allowed_outside(reply))
            refuse(rev, EB_ERR_INVALID,
                   "the reply subject is not one the service publishes to (a wildcard, a"
                   " subject of the NATS server's own ($...) or of evalbus (evalbus...., or"
                   " its inboxes " EB_BUS_INBOX_PREFIX "....))",
                   "bad_reply");
        else if (nkeys > 1) /* which one counts would be a guess (an empty one among them too) */
            refuse(rev, EB_ERR_UNAUTHENTICATED,
                   "header Evalbus-Api-Key given more than once; give one key", "unauthenticated");
        else if (nkeys == 0 || !*key)
            refuse(rev, EB_ERR_UNAUTHENTICATED, "missing header Evalbus-Api-Key", "no_key");
        else
            eb_authc_verify(ctx->authc, key, NULL, on_verified, rev);
        rev = next;
    }
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    ingest_ctx *ctx = closure;
    nats_item *it = eb_calloc(1, sizeof(*it));

    (void)nc;
    (void)sub;
    it->msg = msg;
    it->ctx = ctx;
    it->held_bytes = (size_t)natsMsg_GetDataLength(msg);
    pthread_mutex_lock(&ctx->nats_mu);
    /* a batch larger than the bound on its own goes in when it is the only one held */
    while (!ctx->nats_unbounded &&
           (ctx->nats_held >= NATS_HELD_MAX ||
            (ctx->nats_held > 0 && ctx->nats_held_bytes + it->held_bytes > NATS_HELD_BYTES_MAX))) {
        struct timespec until = eb_monotonic_after_ms(100);
        pthread_cond_timedwait(&ctx->nats_room, &ctx->nats_mu, &until);
    }
    ctx->nats_held++;
    ctx->nats_held_bytes += it->held_bytes;
    it->next = ctx->nats_queue;
    ctx->nats_queue = it;
    pthread_mutex_unlock(&ctx->nats_mu);
    event_active(ctx->nats_wake, EV_READ, 0);
}

void ingest_nats_drain(ingest_ctx *ctx)
{
    if (ctx->nats_sub)
        natsSubscription_Drain(eb_sub_nats(ctx->nats_sub));
}

eb_status ingest_nats_start(ingest_ctx *ctx)
{
    natsStatus s;
    eb_status st;

    pthread_mutex_init(&ctx->nats_mu, NULL);
    eb_cond_init_monotonic(&ctx->nats_room);
    ctx->nats_wake = event_new(ctx->svc.base, -1, 0, on_wake, ctx);
    eb_metrics_describe("evalbus_ingest_dead_letters_total", "counter",
                        "Messages moved to evalbus.v1.ingest.dead.<team>, by stage and reason");
    st = eb_sub_open(ctx->svc.bus, INGEST_NATS_SUBJECT_PREFIX "*", "ingest", on_msg, ctx,
                     &ctx->nats_sub);
    if (st != EB_OK)
        return st;
    s = natsSubscription_SetPendingLimits(eb_sub_nats(ctx->nats_sub), 100000, 512 * 1024 * 1024);
    return s == NATS_OK ? EB_OK : eb_bus_error(s, "limits of " INGEST_NATS_SUBJECT_PREFIX "*");
}

void ingest_nats_finish(ingest_ctx *ctx)
{
    if (ctx->nats_wake) { /* what the drain hands over is answered below, without waiting */
        pthread_mutex_lock(&ctx->nats_mu);
        ctx->nats_unbounded = true;
        pthread_cond_broadcast(&ctx->nats_room);
        pthread_mutex_unlock(&ctx->nats_mu);
    }
    if (ctx->nats_sub) {
        /* the drain (begun at the stop signal) hands over what the library still holds; once
         * closed, on_msg queues nothing more */
        natsSubscription_WaitForDrainCompletion(eb_sub_nats(ctx->nats_sub), 500);
        ctx->nats_handler_on = !eb_sub_close(ctx->nats_sub, 1000);
        ctx->nats_sub = NULL;
    }
    ctx->stopping = true;
    if (ctx->nats_wake)
        on_wake(-1, 0, ctx); /* not taken: told so at once, rather than left to time out */
    /* a safety net: with the decode pool finished, every batch in line went on (on_decoded);
     * one decoded and still here is answered rather than left to time out (one not decoded is
     * still the pool's) */
    for (nats_item *it = ctx->nats_order, *next; it; it = next) {
        next = it->onext;
        if (it->decoded) {
            order_remove(ctx, it);
            answer_shutting_down(it);
        }
    }
}

void ingest_nats_stop(ingest_ctx *ctx)
{
    ingest_nats_finish(ctx);
    if (ctx->nats_wake && !ctx->nats_handler_on) { /* else on_msg may still use them */
        event_free(ctx->nats_wake);
        ctx->nats_wake = NULL;
        pthread_mutex_destroy(&ctx->nats_mu);
        pthread_cond_destroy(&ctx->nats_room);
    }
}
