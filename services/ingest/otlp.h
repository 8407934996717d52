/* otlp.h -- OTLP/HTTP trace requests (protobuf and JSON) -> evalbus.v1.Trace.
 *
 * Spans are grouped by trace id; each group becomes one Trace whose id is the 32-hex trace id
 * and whose observations are the spans (generation when the span carries GenAI or
 * OpenInference model attributes, tool for tool spans, span otherwise). Trace-level fields come
 * from the root span when the request holds it and are otherwise left unset, because the spans
 * of one trace may arrive in several requests: the writer merges fragments. Mapping rules:
 * docs/api/otlp.md. Attributes that map to no field are kept in attributes_json.
 * Trees are heap trees (free with evalbus__v1__trace__free_unpacked(t, NULL)). */
#ifndef EVALBUS_INGEST_OTLP_H
#define EVALBUS_INGEST_OTLP_H

#include "evalbus/mem.h"
#include "evalbus/otlp/v1/otlp.pb-c.h"
#include "evalbus/status.h"
#include "evalbus/v1/trace.pb-c.h"
#include "ingest_limits.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ingest_otlp_result {
    Evalbus__V1__Trace **traces;
    size_t ntraces;
    long long spans;          /* spans accepted */
    long long rejected_spans; /* spans refused (bad ids, over limits, ...) */
    char *error_message;      /* why (the first few reasons), or NULL */
    int nreasons;             /* reasons in error_message, at most INGEST_OTLP_MAX_REASONS */
    size_t reasons_len;       /* bytes of them, before the "(and N more)" that may follow */
} ingest_otlp_result;

/* Reasons a partial success's error_message gives at most; "(and N more)" counts the rest. */
#define INGEST_OTLP_MAX_REASONS 3

/* Unpacks data[0..len) as a message of type desc with the OTLP decoder's guards: the wire
 * format is checked first (well formed, nesting bounded, no NUL byte in a string field, which
 * protobuf-c would cut the string at), and the message is decoded into an arena capped at a
 * multiple of len (a body full of empty messages cannot cost gigabytes). On success *msg lives
 * in *box until ingest_pb_release(*box); else EB_ERR_INVALID or EB_ERR_TOO_LARGE with a
 * message, and nothing to release. Any thread. */
typedef struct ingest_pb_box ingest_pb_box;
eb_status ingest_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                           ingest_pb_box **box, ProtobufCMessage **msg);
/* Accepts NULL. */
void ingest_pb_release(ingest_pb_box *box);

/* Decode an ExportTraceServiceRequest. EB_ERR_INVALID when the body cannot be decoded at all
 * (answered 400); individual bad spans are counted in rejected_spans instead. The caller frees
 * out with ingest_otlp_result_free(), also after an error. */
eb_status ingest_otlp_decode_protobuf(const uint8_t *data, size_t len, const ingest_limits *lim,
                                      ingest_otlp_result *out);
eb_status ingest_otlp_decode_json(const char *data, size_t len, const ingest_limits *lim,
                                  ingest_otlp_result *out);
void ingest_otlp_result_free(ingest_otlp_result *r);

/* Maps a decoded request (from either decoder, or built by a caller) to traces, appending to
 * out (zero it first). The request stays the caller's; out owns copies of everything it keeps.
 * Per-span problems are counted in out->rejected_spans; this never fails as a whole.
 * nul[0..nnul), ascending, numbers spans (0-based, in the order of the request's arrays) that
 * the protobuf decoder found a NUL byte in (strings of the span, its resource or its scope):
 * they are rejected. */
void ingest_otlp_map(const Evalbus__Otlp__V1__ExportTraceServiceRequest *req,
                     const ingest_limits *lim, const size_t *nul, size_t nnul,
                     ingest_otlp_result *out);

/* The ExportTraceServiceResponse for r, appended to out: protobuf (an empty message on full
 * success) or JSON ({} or {"partialSuccess":{"rejectedSpans":"2","errorMessage":"..."}}). */
void ingest_otlp_response_protobuf(const ingest_otlp_result *r, eb_buf *out);
void ingest_otlp_response_json(const ingest_otlp_result *r, eb_buf *out);

#endif
