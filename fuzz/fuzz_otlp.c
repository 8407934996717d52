/* fuzz_otlp.c -- libFuzzer target for the OTLP/HTTP decoders and the span mapping.
 * Each input is decoded twice: as an ExportTraceServiceRequest in protobuf and as OTLP JSON,
 * under small limits so that the limit paths are reached too. Any crash, leak or sanitizer
 * report is a bug; beyond that only the contract is checked: on success every trace is a
 * well-formed tree (it packs and unpacks), error_message is set exactly when spans were
 * rejected, and the response encoders accept the result. */
#include "otlp.h"

#include "evalbus/mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ingest_limits fuzz_limits = {100, 4096, 64, 16, 8, 4, 4096, 65536};

static void check(eb_status st, ingest_otlp_result *r)
{
    eb_buf b = {0};

    if (st == EB_OK) {
        if ((r->rejected_spans > 0) != (r->error_message != NULL))
            abort();
        for (size_t i = 0; i < r->ntraces; i++) {
            size_t n = evalbus__v1__trace__get_packed_size(r->traces[i]);
            uint8_t *buf = eb_malloc(n + 1);
            Evalbus__V1__Trace *t;

            evalbus__v1__trace__pack(r->traces[i], buf);
            t = evalbus__v1__trace__unpack(NULL, n, buf);
            if (!t || !t->id || strlen(t->id) != 32 || t->n_observations == 0)
                abort();
            evalbus__v1__trace__free_unpacked(t, NULL);
            free(buf);
        }
        ingest_otlp_response_protobuf(r, &b);
        ingest_otlp_response_json(r, &b);
    }
    eb_buf_free(&b);
    ingest_otlp_result_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ingest_otlp_result r;

    check(ingest_otlp_decode_protobuf(data, size, &fuzz_limits, &r), &r);
    check(ingest_otlp_decode_json((const char *)data, size, &fuzz_limits, &r), &r);
    return 0;
}
