/* otlp_http.c -- POST /otlp/v1/traces: OTLP/HTTP with protobuf or JSON bodies (gzip allowed).
 * The request is decoded and mapped (otlp.c), every trace fragment is packed into a merge
 * record for the INGEST stream, and the answer (ExportTraceServiceResponse, in the request's
 * encoding) waits for JetStream. As with the JSON batch API, the loop thread only takes the
 * request, asks the project guard and answers: inflating, decoding, mapping and packing run on
 * a decode pool thread (decode_request), which frees the span trees once their records are
 * made, and the records go to the stream in slices (publish.c), so that a request of hundreds
 * of thousands of traces holds up no other. Spans that were refused are reported in
 * partial_success, as OTLP prescribes; when the stream cannot take the data the answer is 503 with
 * Retry-After, which OTLP exporters retry. Errors of this handler carry a google.rpc.Status in the
 * request's encoding, as OTLP/HTTP asks (those of the shared HTTP layer before it, such as 401 and
 * 429, keep the evalbus error body). */
#include "body.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"
#include "otlp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct otlp_state {
    eb_http_req *req;
    ingest_ctx *ctx;
    bool json;
    /* for the pool thread (decode_request): the request's body, its Content-Encoding and the
     * caller, taken on the loop thread; what it found: st, error */
    const char *body, *encoding;
    size_t body_len;
    eb_principal who;
    eb_status st;
    char *error;
    ingest_otlp_result res; /* its traces are freed on the pool thread, once packed */
    /* record i of the request for the stream: its packed message (NULL when it could not be
     * made: unmade[i] says why), the id of its trace and the trace's spans */
    natsMsg **msgs;
    eb_status *unmade;
    char **ids;
    long long *spans;
    size_t nsent;
    long long rejected; /* spans refused before publishing */
    eb_buf why;         /* the first reasons, the decoder's and ours */
    int nwhy;           /* how many: at most INGEST_OTLP_MAX_REASONS */
    long long more;     /* refused spans that no reason in why accounts for */
} otlp_state;

static void reply(otlp_state *s, long long rejected, const char *message)
{
    eb_buf b = {0};

    /* the response reports every refused span: the decoder's and ours; the message the first
     * reasons, then how many spans more */
    if (s->more > 0) {
        eb_buf_printf(&s->why, " (and %lld more)", s->more);
        message = s->why.data;
    }
    s->res.rejected_spans = rejected;
    free(s->res.error_message);
    s->res.error_message = rejected > 0 ? eb_strdup(message ? message : "") : NULL;
    if (s->json)
        ingest_otlp_response_json(&s->res, &b);
    else
        ingest_otlp_response_protobuf(&s->res, &b);
    eb_http_reply_raw(s->req, 200, s->json ? "application/json" : "application/x-protobuf", b.data,
                      b.len);
    eb_buf_free(&b);
}

/* google.rpc.Code of a status. */
static int rpc_code(eb_status st)
{
    switch (st) {
    case EB_ERR_INVALID:
        return 3; /* INVALID_ARGUMENT */
    case EB_ERR_NOT_FOUND:
        return 5;
    case EB_ERR_FORBIDDEN:
        return 7;
    case EB_ERR_RATE_LIMITED:
    case EB_ERR_TOO_LARGE:
        return 8; /* RESOURCE_EXHAUSTED */
    case EB_ERR_UNAVAILABLE:
        return 14;
    case EB_ERR_TIMEOUT:
        return 4; /* DEADLINE_EXCEEDED */
    case EB_ERR_UNAUTHENTICATED:
        return 16;
    default:
        return 13; /* INTERNAL */
    }
}

/* An error answer: the HTTP status of st, with a Status of msg in the request's encoding
 * (protobuf, or its JSON mapping {"code": 3, "message": "..."}). */
static void reply_error(eb_http_req *req, bool json, eb_status st, const char *msg)
{
    eb_buf b = {0};

    if (st == EB_ERR_DB || st == EB_ERR_INTERNAL || st == EB_ERR_IO) {
        eb_log_error(eb_http_req_id(req), "OTLP request failed: %s", msg);
        msg = "internal error; see the service log for this request id";
    }
    if (json) {
        eb_buf_printf(&b, "{\"code\":%d,\"message\":\"", rpc_code(st));
        eb_buf_json_escape(&b, msg);
        eb_buf_puts(&b, "\"}");
    } else {
        Evalbus__Otlp__V1__RpcStatus rs = EVALBUS__OTLP__V1__RPC_STATUS__INIT;
        size_t n;

        rs.code = rpc_code(st);
        rs.message = (char *)msg;
        n = evalbus__otlp__v1__rpc_status__get_packed_size(&rs);
        eb_buf_reserve(&b, n + 1);
        evalbus__otlp__v1__rpc_status__pack(&rs, (uint8_t *)b.data);
        b.len = n;
    }
    eb_http_reply_raw(req, eb_status_http(st), json ? "application/json" : "application/x-protobuf",
                      b.data, b.len);
    eb_buf_free(&b);
}

static void state_free(otlp_state *s)
{
    ingest_otlp_result_free(&s->res);
    for (size_t i = 0; i < s->nsent; i++) {
        natsMsg_Destroy(s->msgs[i]);
        free(s->ids[i]);
    }
    free(s->msgs);
    free(s->unmade);
    free(s->ids);
    free(s->spans);
    free(s->error);
    eb_buf_free(&s->why);
    free(s);
}

static bool reason(otlp_state *s, long long spans, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void on_published(void *arg, const eb_status *results, size_t n)
{
    otlp_state *s = arg;
    long long rejected = s->rejected, failed = 0, full = 0, too_large = 0, too_large_spans = 0;

    for (size_t i = 0; i < n; i++) {
        long long spans = s->spans[i]; /* 0 for the first fragment of a split trace alone */
        if (results[i] == EB_ERR_TOO_LARGE) {
            /* refused for good (a retry would meet the same limit): a partial success */
            rejected += spans;
            too_large++;
            too_large_spans += spans;
        } else if (results[i] != EB_OK) {
            failed++;
            full += results[i] == EB_ERR_RATE_LIMITED;
            rejected += spans;
        }
    }
    if (failed > 0) {
        /* OTLP exporters retry a 503 but never a partial success: ask for the whole request
         * again (what the stream already has is recognised by its message id, and fragments
         * merge idempotently) */
        char msg[160];

        if (full == failed)
            snprintf(msg, sizeof(msg),
                     "the ingest stream is full of traces not yet stored and did not take %lld "
                     "of %zu traces; retry in a few seconds",
                     failed, n);
        else
            snprintf(msg, sizeof(msg), "the ingest stream did not take %lld of %zu traces; retry",
                     failed, n);
        eb_http_add_header(s->req, "Retry-After", full == failed ? "5" : "1");
        reply_error(s->req, s->json, EB_ERR_UNAVAILABLE, msg);
    } else {
        if (too_large > 0) /* one reason for them all, counted as the others are */
            reason(s, too_large_spans, "%lld trace%s: %s", too_large, too_large == 1 ? "" : "s",
                   ingest_publish_message(EB_ERR_TOO_LARGE));
        eb_metrics_add("evalbus_ingest_spans_accepted_total", NULL,
                       (double)(s->res.spans - (rejected - s->res.rejected_spans)));
        eb_metrics_add("evalbus_ingest_spans_rejected_total", NULL, (double)rejected);
        reply(s, rejected, s->why.data);
    }
    state_free(s);
}

/* Appends one reason, which accounts for spans refused spans, to the partial success's error
 * message while it has fewer than INGEST_OTLP_MAX_REASONS; else counts them among the "(and N
 * more)". True if the reason was given. */
static bool reason(otlp_state *s, long long spans, const char *fmt, ...)
{
    va_list ap;

    if (s->nwhy >= INGEST_OTLP_MAX_REASONS) {
        s->more += spans;
        return false;
    }
    s->nwhy++;
    if (s->why.len)
        eb_buf_puts(&s->why, "; ");
    va_start(ap, fmt);
    eb_buf_vprintf(&s->why, fmt, ap);
    va_end(ap);
    return true;
}

/* True if the Content-Type value type is the media type want (any case; parameters such as
 * "; charset=utf-8" after it allowed, nothing else). */
static bool media_is(const char *type, const char *want)
{
    size_t n = strlen(want);

    if (!type || strncasecmp(type, want, n) != 0)
        return false;
    type += n;
    while (*type == ' ' || *type == '\t')
        type++;
    return *type == '\0' || *type == ';';
}

static void reply_415(eb_http_req *req, const char *type)
{
    eb_buf b = {0};

    eb_buf_puts(&b, "{\"error\":{\"code\":\"unsupported_media_type\",\"message\":\"Content-Type ");
    eb_buf_json_escape(&b, type ? type : "(none)");
    eb_buf_puts(&b, " is not supported: send application/x-protobuf or application/json\","
                    "\"request_id\":\"");
    eb_buf_json_escape(&b, eb_http_req_id(req));
    eb_buf_puts(&b, "\"}}");
    eb_http_reply_raw(req, 415, "application/json", b.data, b.len);
    eb_buf_free(&b);
}

/* The project t's resource names with evalbus.project (a copy), or NULL when its project only
 * comes from service.name or the default. */
static char *named_project(const Evalbus__V1__Trace *t)
{
    cJSON *a = NULL;
    const cJSON *p;
    char *named = NULL;

    if (t->attributes_json &&
        eb_json_parse_object(t->attributes_json, strlen(t->attributes_json), &a) == EB_OK) {
        p = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(a, "resource"),
                                             "evalbus.project");
        if (cJSON_IsString(p) && p->valuestring[0])
            named = eb_strdup(p->valuestring);
    }
    eb_error_clear();
    cJSON_Delete(a);
    return named;
}

/* A project-restricted key's spans go to its project, as a JSON trace without a project does,
 * unless the resource names another one with evalbus.project (service.name names a service, not
 * a project): true if t may be sent. */
static bool confine_project(otlp_state *s, const eb_principal *p, Evalbus__V1__Trace *t, bool *said)
{
    char *named;

    if (ingest_check_project(p, t->project) == EB_OK)
        return true;
    eb_error_clear();
    named = named_project(t);
    if (!named) {
        free(t->project);
        t->project = eb_strdup(p->project);
        return true;
    }
    /* said once, however many traces (while it could not be said, each counts among the more) */
    if (!*said)
        *said = reason(s, (long long)t->n_observations,
                       "this key may only write to project '%s', and the resource attribute"
                       " evalbus.project names '%s'",
                       p->project, named);
    free(named);
    return false;
}

/* Loop thread: the fragments of traces that a project-restricted key's team stores in another
 * project are refused (a partial success), the others go to the stream. */
static void on_guarded(void *arg, char *const *found)
{
    otlp_state *s = arg;
    size_t kept = 0;
    char *refused = NULL; /* the id refused last */
    bool said = false;    /* and whether its reason was given */

    for (size_t i = 0; i < s->nsent; i++) {
        if (found && found[i]) {
            s->rejected += s->spans[i];
            /* said once for the fragments of one split trace (they follow each other) */
            if (!refused || strcmp(s->ids[i], refused) != 0) {
                char *why = ingest_project_refusal(s->ids[i], found[i], s->who.project);
                said = reason(s, s->spans[i], "%s", why);
                free(why);
            } else if (!said) {
                s->more += s->spans[i];
            }
            natsMsg_Destroy(s->msgs[i]);
            free(refused);
            refused = s->ids[i];
            continue;
        }
        s->msgs[kept] = s->msgs[i];
        s->unmade[kept] = s->unmade[i];
        s->ids[kept] = s->ids[i];
        s->spans[kept++] = s->spans[i];
    }
    free(refused);
    s->nsent = kept;
    ingest_publish_packed(s->ctx->pub, s->msgs, s->nsent, s->unmade, false, on_published, s);
}

/* Packs t as the next record of the request (s's arrays grow to *cap as needed). One larger
 * than the NATS server takes is answered as a partial success (on_published). Pool thread. */
static void add_record(otlp_state *s, size_t *cap, const Evalbus__V1__Trace *t, long long now_ms,
                       long long max_payload)
{
    if (s->nsent == *cap) {
        *cap *= 2;
        s->msgs = eb_realloc(s->msgs, *cap * sizeof(*s->msgs));
        s->unmade = eb_realloc(s->unmade, *cap * sizeof(*s->unmade));
        s->ids = eb_realloc(s->ids, *cap * sizeof(*s->ids));
        s->spans = eb_realloc(s->spans, *cap * sizeof(*s->spans));
    }
    s->msgs[s->nsent] = NULL;
    s->unmade[s->nsent] = ingest_record_pack(s->ctx->pub, &s->who, "otlp", true, now_ms, t,
                                             max_payload, &s->msgs[s->nsent]);
    s->ids[s->nsent] = eb_strdup(t->id ? t->id : "");
    s->spans[s->nsent++] = (long long)t->n_observations;
}

/* Bytes that observation o adds to a packed trace (field 20: tag, length, message). */
static size_t obs_packed_size(const Evalbus__V1__Observation *o)
{
    size_t n = evalbus__v1__observation__get_packed_size(o), len = 1;

    for (size_t v = n; v > 0x7f; v >>= 7)
        len++;
    return 2 + len + n;
}

/* Clears t's trace-level input, output and tool calls (a shallow copy's: nothing is freed). */
static void clear_io(Evalbus__V1__Trace *t)
{
    t->n_input_messages = t->n_output_messages = t->n_tool_calls = 0;
    t->input_messages = t->output_messages = NULL;
    t->tool_calls = NULL;
    t->input_text = t->output_text = NULL;
}

/* t's spans make it larger than max-trace-bytes as one record (a long agent run, batched by a
 * Collector). Spans of one trace id already come as fragments that the writer merges (they
 * reach us in several requests), so t goes as several: the first carries the trace-level
 * fields, the others only what identifies the trace (its input, output, tool calls, usage,
 * metadata and attributes stay with the first; the writer sums usage from the spans), each with
 * as many spans as fit. Only a span too large for a record on its own is rejected. Records are
 * shallow copies of t, packed at once: t keeps ownership of everything. Pool thread. */
static void split_trace(otlp_state *s, size_t *cap, Evalbus__V1__Trace *t, long long now_ms,
                        long long max_payload)
{
    const size_t limit = s->ctx->limits.max_trace_bytes;
    Evalbus__V1__Trace head = *t, rest, frag;
    Evalbus__V1__Observation **picked;
    size_t size, base_rest, first = 0, n = 0, too_large = 0;
    bool sent = false; /* a fragment went: the first, with the trace-level fields */

    head.n_observations = 0;
    head.observations = NULL;
    if (evalbus__v1__trace__get_packed_size(&head) > limit / 2)
        /* its trace-level input, output or tool calls are what is large: the writer takes them
         * again from the spans (the root's, the generations'), which keep them */
        clear_io(&head);
    if (evalbus__v1__trace__get_packed_size(&head) > limit) {
        /* what no span holds (metadata, resource attributes, tags) is too large on its own */
        s->rejected += (long long)t->n_observations;
        reason(s, (long long)t->n_observations,
               "trace %s: its trace-level fields alone exceed max-trace-bytes (%zu)", t->id, limit);
        return;
    }
    /* the other fragments: what identifies the trace (its metadata and attributes, which are
     * merged, go with the first) */
    rest = head;
    clear_io(&rest);
    rest.metadata_json = rest.attributes_json = NULL;
    rest.has_input_tokens = rest.has_output_tokens = rest.has_total_tokens = false;
    rest.has_cost_usd = false;
    base_rest = evalbus__v1__trace__get_packed_size(&rest);
    picked = eb_malloc((t->n_observations + 1) * sizeof(*picked));
    frag = head;
    size = evalbus__v1__trace__get_packed_size(&frag);
    /* the fragment being filled holds picked[first..first+n) */
    for (size_t i = 0; i < t->n_observations; i++) {
        size_t add = obs_packed_size(t->observations[i]);

        if (base_rest + add > limit) {
            too_large++; /* alone too large: it goes, the spans before and after it stay */
            continue;
        }
        if (size + add > limit) {
            frag.observations = picked + first;
            frag.n_observations = n;
            add_record(s, cap, &frag, now_ms, max_payload);
            sent = true;
            first += n;
            n = 0;
            frag = rest;
            size = base_rest;
        }
        picked[first + n++] = t->observations[i];
        size += add;
    }
    /* the last fragment; the first one also when every span was too large */
    if (n > 0 || !sent) {
        frag.observations = picked + first;
        frag.n_observations = n;
        add_record(s, cap, &frag, now_ms, max_payload);
    }
    free(picked);
    if (too_large) {
        s->rejected += (long long)too_large;
        reason(s, (long long)too_large,
               "trace %s: %zu span(s) larger than max-trace-bytes (%zu) on their own", t->id,
               too_large, limit);
    }
}

/* Pool thread: inflates, decodes and maps the request (the CPU-heavy part: a large request must
 * not hold up the loop, which serves every other request), keeps the traces the caller may
 * write and that fit one stream message, and packs their records. Reads only what
 * api_otlp_post took for it. */
static void decode_request(void *arg)
{
    otlp_state *s = arg;
    const ingest_ctx *ctx = s->ctx;
    const char *data;
    size_t len, cap;
    char *owned = NULL;
    bool wrong_project = false;
    long long now_ms, max_payload;

    s->st = ingest_body_decode(s->body, s->body_len, s->encoding, (size_t)ctx->cfg->svc.max_body,
                               &data, &len, &owned);
    if (s->st == EB_OK && s->json)
        s->st = ingest_body_json_fits(data, len);
    if (s->st == EB_OK)
        s->st = s->json ? ingest_otlp_decode_json(data, len, &ctx->limits, &s->res)
                        : ingest_otlp_decode_protobuf((const uint8_t *)data, len, &ctx->limits,
                                                      &s->res);
    free(owned);
    if (s->st != EB_OK) {
        s->error = eb_strdup(eb_error_message());
        return;
    }
    s->rejected = s->res.rejected_spans;
    if (s->res.error_message) { /* its reasons; reply() says how many more there are */
        eb_buf_append(&s->why, s->res.error_message, s->res.reasons_len);
        s->nwhy = s->res.nreasons;
        s->more = s->res.rejected_spans - s->res.nreasons; /* one span a reason */
    }
    cap = s->res.ntraces ? s->res.ntraces : 1;
    s->msgs = eb_calloc(cap, sizeof(*s->msgs));
    s->unmade = eb_calloc(cap, sizeof(*s->unmade));
    s->ids = eb_calloc(cap, sizeof(*s->ids));
    s->spans = eb_calloc(cap, sizeof(*s->spans));
    now_ms = ingest_now_ms();
    max_payload = ingest_publisher_max_payload(ctx->pub);
    for (size_t i = 0; i < s->res.ntraces; i++) {
        Evalbus__V1__Trace *t = s->res.traces[i];

        if (!confine_project(s, &s->who, t, &wrong_project)) {
            s->rejected += (long long)t->n_observations;
            continue;
        }
        /* a trace travels as one NATS message: one larger than max-trace-bytes goes as several
         * fragments (split_trace) */
        if (evalbus__v1__trace__get_packed_size(t) > ctx->limits.max_trace_bytes)
            split_trace(s, &cap, t, now_ms, max_payload);
        else
            add_record(s, &cap, t, now_ms, max_payload);
    }
    /* the records hold what is sent: the trees are not needed while the request waits for
     * JetStream, and are freed here rather than on the loop thread */
    for (size_t i = 0; i < s->res.ntraces; i++)
        if (s->res.traces[i])
            evalbus__v1__trace__free_unpacked(s->res.traces[i], NULL);
    free(s->res.traces);
    s->res.traces = NULL;
    s->res.ntraces = 0;
}

/* Loop thread: answers a request that could not be decoded, or hands its packed records to the
 * guard and then the stream. */
static void on_decoded(void *arg)
{
    otlp_state *s = arg;

    if (s->st != EB_OK) {
        /* the detail recorded on the pool thread, as this thread's own */
        eb_status st = eb_error(s->st, "%s", s->error ? s->error : "");
        reply_error(s->req, s->json, st, eb_error_message());
        state_free(s);
        return;
    }
    ingest_guard_projects(s->ctx, &s->who, (const char *const *)s->ids, s->nsent, on_guarded, s);
}

void api_otlp_post(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const char *type = eb_http_req_header(req, "Content-Type");
    otlp_state *s;

    if (!media_is(type, "application/x-protobuf") && !media_is(type, "application/protobuf") &&
        !media_is(type, "application/json")) {
        reply_415(req, type);
        return;
    }
    s = eb_calloc(1, sizeof(*s));
    s->req = req;
    s->ctx = ctx;
    s->json = media_is(type, "application/json");
    s->who = *eb_http_req_principal(req);
    s->body = eb_http_req_body(req, &s->body_len);
    s->encoding = eb_http_req_header(req, "Content-Encoding");
    eb_pool_submit(ctx->pool, decode_request, on_decoded, s);
}
