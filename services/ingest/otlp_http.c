/* otlp_http.c -- POST /otlp/v1/traces: OTLP/HTTP with protobuf or JSON bodies (gzip allowed).
 * The request is decoded and mapped (otlp.c), every trace fragment is handed to the INGEST
 * stream as a merge record, and the answer (ExportTraceServiceResponse, in the request's
 * encoding) waits for JetStream. Spans that were refused are reported in partial_success, as
 * OTLP prescribes; when the stream cannot take the data the answer is 503 with Retry-After, which
 * OTLP exporters retry. */
#include "body.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"
#include "otlp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct otlp_state {
    eb_http_req *req;
    bool json;
    ingest_otlp_result res;
    Evalbus__V1__Trace **sent;
    size_t nsent;
    long long rejected; /* spans refused before publishing */
    eb_buf why;
} otlp_state;

static void reply(otlp_state *s, long long rejected, const char *message)
{
    eb_buf b = {0};

    /* the response reports every refused span: the decoder's and ours */
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

static void state_free(otlp_state *s)
{
    ingest_otlp_result_free(&s->res);
    free(s->sent);
    eb_buf_free(&s->why);
    free(s);
}

static void on_published(void *arg, const eb_status *results, size_t n)
{
    otlp_state *s = arg;
    long long rejected = s->rejected, failed = 0;

    for (size_t i = 0; i < n; i++) {
        if (results[i] != EB_OK) {
            failed++;
            rejected += (long long)(s->sent[i]->n_observations ? s->sent[i]->n_observations : 1);
        }
    }
    if (failed > 0) {
        /* OTLP exporters retry a 503 but never a partial success: ask for the whole request
         * again (what the stream already has is recognised by its message id, and fragments
         * merge idempotently) */
        eb_http_add_header(s->req, "Retry-After", "1");
        eb_http_reply_error(s->req, EB_ERR_UNAVAILABLE,
                            "the ingest stream did not take %lld of "
                            "%zu traces; retry",
                            failed, n);
    } else {
        eb_metrics_add("evalbus_ingest_spans_accepted_total", NULL,
                       (double)(s->res.spans - (rejected - s->res.rejected_spans)));
        eb_metrics_add("evalbus_ingest_spans_rejected_total", NULL, (double)rejected);
        reply(s, rejected, s->why.data);
    }
    state_free(s);
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

void api_otlp_post(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *type = eb_http_req_header(req, "Content-Type");
    const char *data;
    size_t len;
    char *owned = NULL;
    otlp_state *s;
    eb_status st;

    if (!type || (strncasecmp(type, "application/x-protobuf", 22) != 0 &&
                  strncasecmp(type, "application/protobuf", 20) != 0 &&
                  strncasecmp(type, "application/json", 16) != 0)) {
        reply_415(req, type);
        return;
    }
    s = eb_calloc(1, sizeof(*s));
    s->req = req;
    s->json = strncasecmp(type, "application/json", 16) == 0;
    st = ingest_body(req, (size_t)ctx->cfg->svc.max_body, &data, &len, &owned);
    if (st == EB_OK)
        st = s->json
                 ? ingest_otlp_decode_json(data, len, &ctx->limits, &s->res)
                 : ingest_otlp_decode_protobuf((const uint8_t *)data, len, &ctx->limits, &s->res);
    free(owned);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        state_free(s);
        return;
    }
    s->rejected = s->res.rejected_spans;
    if (s->res.error_message)
        eb_buf_puts(&s->why, s->res.error_message);
    s->sent = eb_calloc(s->res.ntraces ? s->res.ntraces : 1, sizeof(*s->sent));
    for (size_t i = 0; i < s->res.ntraces; i++) {
        Evalbus__V1__Trace *t = s->res.traces[i];
        if (ingest_check_project(p, t->project) != EB_OK) {
            s->rejected += (long long)t->n_observations;
            if (s->why.len)
                eb_buf_puts(&s->why, "; ");
            eb_buf_printf(&s->why, "this key may only write to project '%s'", p->project);
            continue;
        }
        s->sent[s->nsent++] = t;
    }
    ingest_publish(ctx->pub, p, "otlp", true, s->sent, s->nsent, on_published, s);
}
