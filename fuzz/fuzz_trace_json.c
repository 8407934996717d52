/* fuzz_trace_json.c -- libFuzzer target for the JSON batch API's trace format.
 * Each input is parsed as a JSON object (eb_json_parse_object, the strict pre-check ingest
 * uses) and mapped with ingest_trace_from_json() under small limits, so that the limit paths
 * are reached with short inputs. A trace that is accepted must then:
 *   - pass ingest_trace_validate() (the protobuf rules are the same rules), also after a
 *     protobuf pack / unpack round trip;
 *   - render, part by part (messages, tool calls, each observation) and whole, as text that is
 *     valid UTF-8 and parses back as JSON with nothing after it;
 *   - give the same rendering when the rendered trace is parsed again as input.
 * A refusal must come with a message. Any crash, leak or sanitizer report is a bug. */
#include "trace_json.h"

#include "evalbus/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ingest_limits fuzz_limits = {.max_batch_items = 10,
                                          .max_field_bytes = 512,
                                          .max_id_bytes = 40, /* >= 36: assigned ids are UUIDs */
                                          .max_messages = 8,
                                          .max_observations = 8,
                                          .max_tags = 4,
                                          .max_metadata_bytes = 256,
                                          .max_trace_bytes = 8192};

/* Aborts unless out is one JSON value and valid UTF-8; resets out. */
static void check_json(eb_buf *out)
{
    const char *end = NULL;
    cJSON *v;

    if (!eb_utf8_valid(out->data, out->len))
        abort();
    v = cJSON_ParseWithLengthOpts(out->data, out->len, &end, false);
    if (!v || end != out->data + out->len)
        abort();
    cJSON_Delete(v);
    eb_buf_reset(out);
}

static void render_parts(const Evalbus__V1__Trace *t, eb_buf *out)
{
    ingest_messages_json(t->input_messages, t->n_input_messages, out);
    check_json(out);
    ingest_messages_json(t->output_messages, t->n_output_messages, out);
    check_json(out);
    ingest_tool_calls_json(t->tool_calls, t->n_tool_calls, out);
    check_json(out);
    for (size_t i = 0; i < t->n_observations; i++) {
        ingest_observation_json(t->observations[i], out);
        check_json(out);
    }
}

static void check_pack_roundtrip(const Evalbus__V1__Trace *t)
{
    size_t n = evalbus__v1__trace__get_packed_size(t);
    uint8_t *buf = malloc(n ? n : 1);
    Evalbus__V1__Trace *d;

    evalbus__v1__trace__pack(t, buf);
    d = evalbus__v1__trace__unpack(NULL, n, buf);
    if (!d)
        abort();
    /* max_trace_bytes counts JSON text for JSON input and packed bytes for protobuf; the JSON
     * text of an accepted trace is not always the larger, so only the other rules must hold */
    {
        ingest_limits lim = fuzz_limits;
        lim.max_trace_bytes = (size_t)-1;
        if (ingest_trace_validate(d, &lim) != EB_OK)
            abort();
    }
    evalbus__v1__trace__free_unpacked(d, NULL);
    free(buf);
}

/* "attributes" in the output are not input fields: sent back, they would be kept as unknown
 * fields inside attributes, so such traces do not render the same twice. */
static bool has_attributes(const Evalbus__V1__Trace *t)
{
    if (t->attributes_json)
        return true;
    for (size_t i = 0; i < t->n_observations; i++)
        if (t->observations[i]->attributes_json)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *doc = NULL, *again_doc = NULL;
    Evalbus__V1__Trace *t = NULL, *again = NULL;
    eb_buf out = {0}, first = {0};
    eb_status st;

    if (eb_json_parse_object((const char *)data, size, &doc) != EB_OK)
        goto cleanup;
    st = ingest_trace_from_json(doc, &fuzz_limits, &t);
    if (st != EB_OK) {
        if (t || !eb_error_message()[0])
            abort();
        goto cleanup;
    }
    check_pack_roundtrip(t);
    render_parts(t, &out);
    ingest_trace_json(t, &first);
    eb_buf_append(&out, first.data, first.len);
    check_json(&out);

    /* the rendering is input again ("attributes" is output only) and renders the same */
    if (eb_json_parse_object(first.data, first.len, &again_doc) != EB_OK)
        abort();
    cJSON_DeleteItemFromObjectCaseSensitive(again_doc, "attributes");
    if (!has_attributes(t) && ingest_trace_from_json(again_doc, &fuzz_limits, &again) == EB_OK) {
        ingest_trace_json(again, &out);
        if (out.len != first.len || memcmp(out.data, first.data, out.len) != 0)
            abort();
    }
cleanup:
    evalbus__v1__trace__free_unpacked(again, NULL);
    evalbus__v1__trace__free_unpacked(t, NULL);
    cJSON_Delete(again_doc);
    cJSON_Delete(doc);
    eb_buf_free(&first);
    eb_buf_free(&out);
    return 0;
}
