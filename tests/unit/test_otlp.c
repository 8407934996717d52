/* test_otlp.c -- OTLP/HTTP decoding (protobuf and JSON) and the span -> trace mapping.
 * Each case is a request, built in C with the generated protobuf-c structs and packed, or
 * written as OTLP JSON, plus the expected counts and a check of the mapped traces. A request
 * builder (tb_*) allocates everything it hands out and frees it in one call. */
#include "otlp.h"
#include "trace_json.h"

#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef Evalbus__Otlp__V1__Span otlp_span;
typedef Evalbus__Otlp__V1__Span__Event otlp_event;
typedef Evalbus__Otlp__V1__KeyValue otlp_kv;
typedef Evalbus__Otlp__V1__AnyValue otlp_any;
typedef Evalbus__V1__Observation eb_obs;
typedef Evalbus__V1__Trace eb_trace;

enum { TB_MAX_ITEMS = 64, TB_MAX_ALLOCS = 4096 };

#define T0 1700000000000000000ULL /* 2023-11-14T22:13:20Z */

/* ---------------------------------------------------------------------------------------- */
/* request builder                                                                           */

typedef struct tb {
    Evalbus__Otlp__V1__ExportTraceServiceRequest req;
    Evalbus__Otlp__V1__ResourceSpans *rs; /* the current resource */
    Evalbus__Otlp__V1__ScopeSpans *ss;    /* its scope */
    void *allocs[TB_MAX_ALLOCS];
    size_t nallocs;
} tb;

static void *tb_alloc(tb *b, size_t n)
{
    void *p = eb_calloc(1, n);

    assert_true(b->nallocs < TB_MAX_ALLOCS);
    b->allocs[b->nallocs++] = p;
    return p;
}

static char *tb_str(tb *b, const char *s)
{
    char *p = tb_alloc(b, strlen(s) + 1);

    memcpy(p, s, strlen(s) + 1);
    return p;
}

static void tb_free(tb *b)
{
    for (size_t i = 0; i < b->nallocs; i++)
        free(b->allocs[i]);
    b->nallocs = 0;
}

/* Starts a new ResourceSpans with one scope; service may be NULL. */
static void tb_resource(tb *b, const char *service)
{
    Evalbus__Otlp__V1__Resource *res = tb_alloc(b, sizeof *res);
    Evalbus__Otlp__V1__InstrumentationScope *scope = tb_alloc(b, sizeof *scope);

    if (!b->req.resource_spans) {
        b->req = (Evalbus__Otlp__V1__ExportTraceServiceRequest)
            EVALBUS__OTLP__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
        b->req.resource_spans = tb_alloc(b, TB_MAX_ITEMS * sizeof *b->req.resource_spans);
    }
    b->rs = tb_alloc(b, sizeof *b->rs);
    *b->rs = (Evalbus__Otlp__V1__ResourceSpans)EVALBUS__OTLP__V1__RESOURCE_SPANS__INIT;
    *res = (Evalbus__Otlp__V1__Resource)EVALBUS__OTLP__V1__RESOURCE__INIT;
    res->attributes = tb_alloc(b, TB_MAX_ITEMS * sizeof *res->attributes);
    b->rs->resource = res;
    b->rs->scope_spans = tb_alloc(b, sizeof *b->rs->scope_spans);
    b->ss = tb_alloc(b, sizeof *b->ss);
    *b->ss = (Evalbus__Otlp__V1__ScopeSpans)EVALBUS__OTLP__V1__SCOPE_SPANS__INIT;
    *scope =
        (Evalbus__Otlp__V1__InstrumentationScope)EVALBUS__OTLP__V1__INSTRUMENTATION_SCOPE__INIT;
    scope->name = tb_str(b, "evalbus-test");
    b->ss->scope = scope;
    b->ss->spans = tb_alloc(b, TB_MAX_ITEMS * sizeof *b->ss->spans);
    b->rs->scope_spans[0] = b->ss;
    b->rs->n_scope_spans = 1;
    b->req.resource_spans[b->req.n_resource_spans++] = b->rs;
    if (service) {
        otlp_kv *kv = tb_alloc(b, sizeof *kv);
        otlp_any *v = tb_alloc(b, sizeof *v);

        *kv = (otlp_kv)EVALBUS__OTLP__V1__KEY_VALUE__INIT;
        *v = (otlp_any)EVALBUS__OTLP__V1__ANY_VALUE__INIT;
        v->value_case = EVALBUS__OTLP__V1__ANY_VALUE__VALUE_STRING_VALUE;
        v->string_value = tb_str(b, service);
        kv->key = tb_str(b, "service.name");
        kv->value = v;
        res->attributes[res->n_attributes++] = kv;
    }
}

static ProtobufCBinaryData tb_hex(tb *b, const char *hex)
{
    ProtobufCBinaryData d = {0, NULL};
    size_t n = hex ? strlen(hex) / 2 : 0;

    if (!n)
        return d;
    d.data = tb_alloc(b, n);
    d.len = n;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        d.data[i] = (uint8_t)v;
    }
    return d;
}

static otlp_span *tb_span(tb *b, const char *trace, const char *span, const char *parent,
                          const char *name, uint64_t start, uint64_t end)
{
    otlp_span *s = tb_alloc(b, sizeof *s);

    *s = (otlp_span)EVALBUS__OTLP__V1__SPAN__INIT;
    s->trace_id = tb_hex(b, trace);
    s->span_id = tb_hex(b, span);
    s->parent_span_id = tb_hex(b, parent);
    s->name = tb_str(b, name);
    s->start_time_unix_nano = start;
    s->end_time_unix_nano = end;
    s->attributes = tb_alloc(b, TB_MAX_ITEMS * sizeof *s->attributes);
    s->events = tb_alloc(b, TB_MAX_ITEMS * sizeof *s->events);
    b->ss->spans[b->ss->n_spans++] = s;
    return s;
}

static otlp_any *tb_any(tb *b, Evalbus__Otlp__V1__AnyValue__ValueCase c)
{
    otlp_any *v = tb_alloc(b, sizeof *v);

    *v = (otlp_any)EVALBUS__OTLP__V1__ANY_VALUE__INIT;
    v->value_case = c;
    return v;
}

static otlp_any *tb_sv(tb *b, const char *s)
{
    otlp_any *v = tb_any(b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE_STRING_VALUE);

    v->string_value = tb_str(b, s);
    return v;
}

static otlp_any *tb_iv(tb *b, int64_t i)
{
    otlp_any *v = tb_any(b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE_INT_VALUE);

    v->int_value = i;
    return v;
}

static otlp_kv *tb_kv(tb *b, const char *key, otlp_any *v)
{
    otlp_kv *kv = tb_alloc(b, sizeof *kv);

    *kv = (otlp_kv)EVALBUS__OTLP__V1__KEY_VALUE__INIT;
    kv->key = tb_str(b, key);
    kv->value = v;
    return kv;
}

/* An array of the given values (NULL-terminated). */
static otlp_any *tb_array(tb *b, ...)
{
    otlp_any *v = tb_any(b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE_ARRAY_VALUE);
    Evalbus__Otlp__V1__ArrayValue *a = tb_alloc(b, sizeof *a);
    va_list ap;
    otlp_any *e;

    *a = (Evalbus__Otlp__V1__ArrayValue)EVALBUS__OTLP__V1__ARRAY_VALUE__INIT;
    a->values = tb_alloc(b, TB_MAX_ITEMS * sizeof *a->values);
    va_start(ap, b);
    while ((e = va_arg(ap, otlp_any *)))
        a->values[a->n_values++] = e;
    va_end(ap);
    v->array_value = a;
    return v;
}

/* A kvlist of the given key/values (NULL-terminated). */
static otlp_any *tb_kvlist(tb *b, ...)
{
    otlp_any *v = tb_any(b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE_KVLIST_VALUE);
    Evalbus__Otlp__V1__KeyValueList *l = tb_alloc(b, sizeof *l);
    va_list ap;
    otlp_kv *e;

    *l = (Evalbus__Otlp__V1__KeyValueList)EVALBUS__OTLP__V1__KEY_VALUE_LIST__INIT;
    l->values = tb_alloc(b, TB_MAX_ITEMS * sizeof *l->values);
    va_start(ap, b);
    while ((e = va_arg(ap, otlp_kv *)))
        l->values[l->n_values++] = e;
    va_end(ap);
    v->kvlist_value = l;
    return v;
}

static void tb_attr(tb *b, otlp_span *s, const char *key, otlp_any *v)
{
    assert_true(s->n_attributes < TB_MAX_ITEMS);
    s->attributes[s->n_attributes++] = tb_kv(b, key, v);
}

static void tb_attr_s(tb *b, otlp_span *s, const char *key, const char *val)
{
    tb_attr(b, s, key, tb_sv(b, val));
}

static void tb_attr_i(tb *b, otlp_span *s, const char *key, int64_t val)
{
    tb_attr(b, s, key, tb_iv(b, val));
}

static otlp_event *tb_event(tb *b, otlp_span *s, const char *name, uint64_t t)
{
    otlp_event *e = tb_alloc(b, sizeof *e);

    *e = (otlp_event)EVALBUS__OTLP__V1__SPAN__EVENT__INIT;
    e->name = tb_str(b, name);
    e->time_unix_nano = t;
    e->attributes = tb_alloc(b, TB_MAX_ITEMS * sizeof *e->attributes);
    s->events[s->n_events++] = e;
    return e;
}

static void tb_event_attr(tb *b, otlp_event *e, const char *key, otlp_any *v)
{
    e->attributes[e->n_attributes++] = tb_kv(b, key, v);
}

static void tb_status(tb *b, otlp_span *s, int code, const char *message)
{
    Evalbus__Otlp__V1__Status *st = tb_alloc(b, sizeof *st);

    *st = (Evalbus__Otlp__V1__Status)EVALBUS__OTLP__V1__STATUS__INIT;
    st->code = (Evalbus__Otlp__V1__Status__StatusCode)code;
    st->message = tb_str(b, message);
    s->status = st;
}

/* Packs the request; the caller frees. */
static uint8_t *tb_pack(tb *b, size_t *len)
{
    uint8_t *buf;

    *len = evalbus__otlp__v1__export_trace_service_request__get_packed_size(&b->req);
    buf = eb_malloc(*len + 1);
    evalbus__otlp__v1__export_trace_service_request__pack(&b->req, buf);
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* checks                                                                                    */

static const eb_obs *find_obs(const ingest_otlp_result *r, const char *id)
{
    for (size_t i = 0; i < r->ntraces; i++)
        for (size_t k = 0; k < r->traces[i]->n_observations; k++)
            if (!strcmp(r->traces[i]->observations[k]->id, id))
                return r->traces[i]->observations[k];
    fail_msg("no observation %s", id);
    return NULL;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!hay || !strstr(hay, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, hay ? hay : "(null)");
}

static void assert_lacks(const char *hay, const char *needle)
{
    if (hay && strstr(hay, needle))
        fail_msg("did not expect \"%s\" in \"%s\"", needle, hay);
}

#define assert_str(a, b) assert_string_equal((a) ? (a) : "(null)", (b))

/* ---------------------------------------------------------------------------------------- */
/* cases                                                                                     */

#define TRACE_A "4bf92f3577b34da6a3ce929d0e0e4736"
#define TRACE_B "0af7651916cd43dd8448eb211c80319c"
#define SPAN_1 "00f067aa0ba902b7"
#define SPAN_2 "b7ad6b7169203331"
#define SPAN_3 "53995c3f42cd8ad8"

/* GenAI chat span, current conventions: system_instructions, input/output messages. */
static void build_genai_chat(tb *b)
{
    otlp_span *s;

    tb_resource(b, "support-bot");
    s = tb_span(b, TRACE_A, SPAN_1, NULL, "chat gpt-4o", T0, T0 + 1200000000ULL);
    tb_attr_s(b, s, "gen_ai.operation.name", "chat");
    tb_attr_s(b, s, "gen_ai.provider.name", "openai");
    tb_attr_s(b, s, "gen_ai.request.model", "gpt-4o");
    tb_attr_s(b, s, "gen_ai.response.model", "gpt-4o-2024-08-06");
    tb_attr_i(b, s, "gen_ai.usage.input_tokens", 120);
    tb_attr_i(b, s, "gen_ai.usage.output_tokens", 40);
    tb_attr_s(b, s, "gen_ai.system_instructions",
              "[{\"type\":\"text\",\"content\":\"You are helpful.\"}]");
    tb_attr_s(b, s, "gen_ai.input.messages",
              "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"Weather in "
              "Paris?\"}]},"
              "{\"role\":\"assistant\",\"parts\":[{\"type\":\"tool_call\",\"id\":\"call_1\","
              "\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}]},"
              "{\"role\":\"tool\",\"parts\":[{\"type\":\"tool_call_response\",\"id\":\"call_1\","
              "\"response\":\"rainy, 57F\"}]}]");
    tb_attr_s(b, s, "gen_ai.output.messages",
              "[{\"role\":\"assistant\",\"parts\":[{\"type\":\"text\",\"content\":\"It is "
              "rainy.\"}],\"finish_reason\":\"stop\"}]");
    tb_attr_s(b, s, "server.address", "api.openai.com");
    tb_status(b, s, 1, "");
    s->kind = EVALBUS__OTLP__V1__SPAN__SPAN_KIND__SPAN_KIND_CLIENT;
}

static void check_genai_chat(const ingest_otlp_result *r)
{
    const eb_trace *t = r->traces[0];
    const eb_obs *o = t->observations[0];

    assert_str(t->id, TRACE_A);
    assert_str(t->project, "support-bot");
    assert_str(t->name, "chat gpt-4o");
    assert_str(t->status, "ok");
    assert_str(t->model, "gpt-4o-2024-08-06");
    assert_str(t->provider, "openai");
    assert_true(t->has_start_time_unix_nano && t->start_time_unix_nano == (int64_t)T0);
    assert_true(t->has_latency_ms && t->latency_ms > 1199.9 && t->latency_ms < 1200.1);
    assert_false(t->has_input_tokens); /* the writer sums observations */
    assert_str(t->attributes_json, "{\"resource\":{\"service.name\":\"support-bot\"}}");
    assert_int_equal(t->n_input_messages, 4);
    assert_int_equal(t->n_output_messages, 1);

    assert_str(o->type, "generation");
    assert_null(o->parent_id);
    assert_str(o->model, "gpt-4o-2024-08-06");
    assert_str(o->provider, "openai");
    assert_true(o->has_input_tokens && o->input_tokens == 120);
    assert_true(o->has_output_tokens && o->output_tokens == 40);
    assert_int_equal(o->n_input_messages, 4);
    assert_str(o->input_messages[0]->role, "system");
    assert_str(o->input_messages[0]->content, "You are helpful.");
    assert_str(o->input_messages[1]->role, "user");
    assert_str(o->input_messages[1]->content, "Weather in Paris?");
    assert_int_equal(o->input_messages[1]->n_parts, 0);
    assert_str(o->input_messages[2]->role, "assistant");
    assert_null(o->input_messages[2]->content);
    assert_int_equal(o->input_messages[2]->n_tool_calls, 1);
    assert_str(o->input_messages[2]->tool_calls[0]->id, "call_1");
    assert_str(o->input_messages[2]->tool_calls[0]->type, "function");
    assert_str(o->input_messages[2]->tool_calls[0]->name, "get_weather");
    assert_str(o->input_messages[2]->tool_calls[0]->arguments, "{\"city\":\"Paris\"}");
    assert_str(o->input_messages[3]->role, "tool");
    assert_str(o->input_messages[3]->tool_call_id, "call_1");
    assert_str(o->input_messages[3]->content, "rainy, 57F");
    assert_str(o->output_messages[0]->role, "assistant");
    assert_str(o->output_messages[0]->content, "It is rainy.");
    /* the request model differs from the response model: it stays an attribute */
    assert_str(o->attributes_json,
               "{\"gen_ai.operation.name\":\"chat\",\"gen_ai.request.model\":\"gpt-4o\","
               "\"server.address\":\"api.openai.com\",\"otel.scope.name\":\"evalbus-test\","
               "\"otel.span.kind\":\"client\"}");
}

/* GenAI, older conventions: gen_ai.prompt.N / gen_ai.completion.N with tool calls. */
static const char json_genai_old[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
    "{\"stringValue\":\"rag\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"openllmetry\"},"
    "\"spans\":[{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_1 "\",\"parentSpanId\":\"\","
    "\"name\":\"openai.chat\",\"kind\":3,\"startTimeUnixNano\":\"1700000000000000000\","
    "\"endTimeUnixNano\":\"1700000000500000000\",\"attributes\":["
    "{\"key\":\"gen_ai.system\",\"value\":{\"stringValue\":\"openai\"}},"
    "{\"key\":\"gen_ai.request.model\",\"value\":{\"stringValue\":\"gpt-4o-mini\"}},"
    "{\"key\":\"gen_ai.usage.prompt_tokens\",\"value\":{\"intValue\":\"31\"}},"
    "{\"key\":\"gen_ai.usage.completion_tokens\",\"value\":{\"intValue\":9}},"
    "{\"key\":\"gen_ai.prompt.0.role\",\"value\":{\"stringValue\":\"system\"}},"
    "{\"key\":\"gen_ai.prompt.0.content\",\"value\":{\"stringValue\":\"Be brief.\"}},"
    "{\"key\":\"gen_ai.prompt.1.role\",\"value\":{\"stringValue\":\"user\"}},"
    "{\"key\":\"gen_ai.prompt.1.content\",\"value\":{\"stringValue\":\"Find order 7\"}},"
    "{\"key\":\"gen_ai.completion.0.role\",\"value\":{\"stringValue\":\"assistant\"}},"
    "{\"key\":\"gen_ai.completion.0.finish_reason\",\"value\":{\"stringValue\":\"tool_calls\"}},"
    "{\"key\":\"gen_ai.completion.0.tool_calls.0.id\",\"value\":{\"stringValue\":\"c9\"}},"
    "{\"key\":\"gen_ai.completion.0.tool_calls.0.name\",\"value\":{\"stringValue\":\"lookup\"}},"
    "{\"key\":\"gen_ai.completion.0.tool_calls.0.arguments\",\"value\":{\"stringValue\":"
    "\"{\\\"order\\\":7}\"}}"
    "],\"status\":{\"code\":2,\"message\":\"rate limited\"}}]}]}]}";

static void check_genai_old(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_str(r->traces[0]->project, "rag");
    assert_str(o->type, "generation");
    assert_str(o->provider, "openai");
    assert_str(o->model, "gpt-4o-mini");
    assert_str(o->status, "error");
    assert_str(o->status_message, "rate limited");
    assert_str(r->traces[0]->status, "error");
    assert_true(o->has_input_tokens && o->input_tokens == 31);
    assert_true(o->has_output_tokens && o->output_tokens == 9);
    assert_true(o->has_end_time_unix_nano && o->end_time_unix_nano == 1700000000500000000LL);
    assert_int_equal(o->n_input_messages, 2);
    assert_str(o->input_messages[0]->role, "system");
    assert_str(o->input_messages[0]->content, "Be brief.");
    assert_str(o->input_messages[1]->role, "user");
    assert_str(o->input_messages[1]->content, "Find order 7");
    assert_int_equal(o->n_output_messages, 1);
    assert_str(o->output_messages[0]->role, "assistant");
    assert_int_equal(o->output_messages[0]->n_tool_calls, 1);
    assert_str(o->output_messages[0]->tool_calls[0]->id, "c9");
    assert_str(o->output_messages[0]->tool_calls[0]->name, "lookup");
    assert_str(o->output_messages[0]->tool_calls[0]->arguments, "{\"order\":7}");
    /* finish_reason has no field: kept */
    assert_str(o->attributes_json,
               "{\"gen_ai.completion.0.finish_reason\":\"tool_calls\","
               "\"otel.scope.name\":\"openllmetry\",\"otel.span.kind\":\"client\"}");
}

/* GenAI span events: system/user messages in, gen_ai.choice out, other events kept. */
static void build_genai_events(tb *b)
{
    otlp_span *s;
    otlp_event *e;

    tb_resource(b, NULL);
    s = tb_span(b, TRACE_A, SPAN_1, NULL, "chat", T0, T0 + 1000);
    tb_attr_s(b, s, "gen_ai.system", "anthropic");
    tb_attr_s(b, s, "gen_ai.request.model", "claude-3-5-sonnet");
    e = tb_event(b, s, "gen_ai.system.message", T0);
    tb_event_attr(b, e, "gen_ai.system", tb_sv(b, "anthropic"));
    tb_event_attr(b, e, "content", tb_sv(b, "Answer in French."));
    e = tb_event(b, s, "gen_ai.user.message", T0);
    tb_event_attr(b, e, "gen_ai.event.content", tb_sv(b, "{\"content\":\"Hello\"}"));
    e = tb_event(b, s, "gen_ai.choice", T0 + 900);
    tb_event_attr(b, e, "index", tb_iv(b, 0));
    tb_event_attr(b, e, "finish_reason", tb_sv(b, "stop"));
    tb_event_attr(b, e, "message",
                  tb_kvlist(b, tb_kv(b, "role", tb_sv(b, "assistant")),
                            tb_kv(b, "content", tb_sv(b, "Bonjour")), NULL));
    e = tb_event(b, s, "exception", T0 + 950);
    tb_event_attr(b, e, "exception.type", tb_sv(b, "Timeout"));
}

static void check_genai_events(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_str(r->traces[0]->project, "default");
    assert_null(r->traces[0]->attributes_json); /* no resource attributes */
    assert_str(o->type, "generation");
    assert_str(o->provider, "anthropic");
    assert_str(o->model, "claude-3-5-sonnet");
    assert_int_equal(o->n_input_messages, 2);
    assert_str(o->input_messages[0]->role, "system");
    assert_str(o->input_messages[0]->content, "Answer in French.");
    assert_str(o->input_messages[1]->role, "user");
    assert_str(o->input_messages[1]->content, "Hello");
    assert_int_equal(o->n_output_messages, 1);
    assert_str(o->output_messages[0]->role, "assistant");
    assert_str(o->output_messages[0]->content, "Bonjour");
    /* the choice's index and finish_reason filled nothing: kept, without its message; the
     * system message's gen_ai.system names the span's provider again: used up */
    assert_str(o->attributes_json,
               "{\"otel.events\":[{\"name\":\"gen_ai.choice\",\"time_unix_nano\":"
               "\"1700000000000000900\",\"attributes\":{\"index\":0,\"finish_reason\":\"stop\"}},"
               "{\"name\":\"exception\",\"time_unix_nano\":"
               "\"1700000000000000950\",\"attributes\":{\"exception.type\":\"Timeout\"}}],"
               "\"otel.scope.name\":\"evalbus-test\"}");
}

/* GenAI events as SDKs send them: event attributes hold only simple values, so a choice's
 * message and an assistant message's tool_calls come as JSON text. */
static void build_genai_events_text(tb *b)
{
    otlp_span *s;
    otlp_event *e;

    tb_resource(b, "weather");
    s = tb_span(b, TRACE_A, SPAN_1, NULL, "chat", T0, T0 + 1000);
    tb_attr_s(b, s, "gen_ai.request.model", "gpt-4o");
    e = tb_event(b, s, "gen_ai.user.message", T0);
    tb_event_attr(b, e, "content", tb_sv(b, "Weather in Paris?"));
    e = tb_event(b, s, "gen_ai.assistant.message", T0 + 1);
    tb_event_attr(b, e, "tool_calls",
                  tb_sv(b, "[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":"
                           "\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]"));
    e = tb_event(b, s, "gen_ai.tool.message", T0 + 2);
    tb_event_attr(b, e, "id", tb_sv(b, "call_1"));
    tb_event_attr(b, e, "content", tb_sv(b, "rainy, 57F"));
    e = tb_event(b, s, "gen_ai.choice", T0 + 3);
    tb_event_attr(b, e, "index", tb_iv(b, 0));
    tb_event_attr(b, e, "finish_reason", tb_sv(b, "stop"));
    tb_event_attr(b, e, "message",
                  tb_sv(b, "{\"role\":\"assistant\",\"content\":\"It is rainy\"}"));

    /* tool_calls text that is not a list of calls: not read, so the event keeps it */
    s = tb_span(b, TRACE_A, SPAN_2, SPAN_1, "chat", T0, T0 + 1000);
    tb_attr_s(b, s, "gen_ai.request.model", "gpt-4o");
    e = tb_event(b, s, "gen_ai.assistant.message", T0);
    tb_event_attr(b, e, "content", tb_sv(b, "calling"));
    tb_event_attr(b, e, "tool_calls", tb_sv(b, "not json"));
    /* a choice whose message is plain text: the text is the content */
    e = tb_event(b, s, "gen_ai.choice", T0 + 3);
    tb_event_attr(b, e, "message", tb_sv(b, "Sunny"));
}

static void check_genai_events_text(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_int_equal(o->n_input_messages, 3);
    assert_str(o->input_messages[0]->role, "user");
    assert_str(o->input_messages[0]->content, "Weather in Paris?");
    assert_str(o->input_messages[1]->role, "assistant");
    assert_int_equal(o->input_messages[1]->n_tool_calls, 1);
    assert_str(o->input_messages[1]->tool_calls[0]->id, "call_1");
    assert_str(o->input_messages[1]->tool_calls[0]->type, "function");
    assert_str(o->input_messages[1]->tool_calls[0]->name, "get_weather");
    assert_str(o->input_messages[1]->tool_calls[0]->arguments, "{\"city\":\"Paris\"}");
    assert_str(o->input_messages[2]->role, "tool");
    assert_str(o->input_messages[2]->tool_call_id, "call_1");
    assert_str(o->input_messages[2]->content, "rainy, 57F");
    assert_int_equal(o->n_output_messages, 1);
    assert_str(o->output_messages[0]->role, "assistant");
    assert_str(o->output_messages[0]->content, "It is rainy");
    assert_str(o->attributes_json,
               "{\"otel.events\":[{\"name\":\"gen_ai.choice\",\"time_unix_nano\":"
               "\"1700000000000000003\",\"attributes\":{\"index\":0,\"finish_reason\":\"stop\"}}],"
               "\"otel.scope.name\":\"evalbus-test\"}");
    assert_str(r->traces[0]->output_messages[0]->content, "It is rainy");

    o = find_obs(r, SPAN_2);
    assert_int_equal(o->n_input_messages, 1);
    assert_str(o->input_messages[0]->content, "calling");
    assert_int_equal(o->input_messages[0]->n_tool_calls, 0);
    assert_int_equal(o->n_output_messages, 1);
    assert_str(o->output_messages[0]->content, "Sunny");
    assert_str(o->attributes_json,
               "{\"otel.events\":[{\"name\":\"gen_ai.assistant.message\",\"time_unix_nano\":"
               "\"1700000000000000000\",\"attributes\":{\"tool_calls\":\"not json\"}}],"
               "\"otel.scope.name\":\"evalbus-test\"}");
}

/* A trace whose spans come from two resources (two services in one request): the trace keeps
 * the root's, the other span keeps its own as otel.resource; scope attributes are kept. */
static void build_two_resources(tb *b)
{
    otlp_span *s;
    Evalbus__Otlp__V1__InstrumentationScope *scope;

    tb_resource(b, "backend");
    b->rs->resource->attributes[b->rs->resource->n_attributes++] =
        tb_kv(b, "host.name", tb_sv(b, "db-1"));
    scope = b->ss->scope;
    scope->attributes = tb_alloc(b, 2 * sizeof *scope->attributes);
    scope->attributes[scope->n_attributes++] = tb_kv(b, "library.lang", tb_sv(b, "python"));
    tb_span(b, TRACE_A, SPAN_2, SPAN_1, "query", T0 + 10, T0 + 20);
    tb_resource(b, "frontend");
    tb_span(b, TRACE_A, SPAN_1, NULL, "request", T0, T0 + 100);
    /* a span of the same resource content as the root's, in a ResourceSpans of its own */
    tb_resource(b, "frontend");
    tb_span(b, TRACE_A, SPAN_3, SPAN_1, "render", T0 + 30, T0 + 40);
    /* a span that already has an otel.resource attribute keeps its own */
    tb_resource(b, "other");
    s = tb_span(b, TRACE_A, "1111111111111111", SPAN_1, "x", T0, T0 + 1);
    tb_attr_s(b, s, "otel.resource", "mine");
}

static void check_two_resources(const ingest_otlp_result *r)
{
    const eb_trace *t = r->traces[0];

    assert_str(t->id, TRACE_A);
    assert_str(t->project, "frontend");
    assert_str(t->attributes_json, "{\"resource\":{\"service.name\":\"frontend\"}}");
    assert_str(find_obs(r, SPAN_1)->attributes_json, "{\"otel.scope.name\":\"evalbus-test\"}");
    assert_str(find_obs(r, SPAN_3)->attributes_json, "{\"otel.scope.name\":\"evalbus-test\"}");
    assert_str(find_obs(r, SPAN_2)->attributes_json,
               "{\"otel.scope.name\":\"evalbus-test\","
               "\"otel.scope.attributes\":{\"library.lang\":\"python\"},"
               "\"otel.resource\":{\"service.name\":\"backend\",\"host.name\":\"db-1\"}}");
    assert_str(find_obs(r, "1111111111111111")->attributes_json,
               "{\"otel.resource\":\"mine\",\"otel.scope.name\":\"evalbus-test\"}");
}

/* Labels with control characters and roles outside the JSON API's: a project that no trace
 * could have rejects its resource's spans; other labels are stored with spaces for the
 * control characters; known role names of SDKs are mapped. */
static void build_labels(tb *b)
{
    otlp_span *s;

    tb_resource(b, "bad\nproject");
    tb_span(b, TRACE_B, SPAN_1, NULL, "x", T0, T0 + 1);
    tb_resource(b, "good");
    s = tb_span(b, TRACE_A, SPAN_1, NULL, "chat\tgpt", T0, T0 + 1);
    tb_attr_s(b, s, "gen_ai.request.model", "gpt\x7f-4o");
    tb_attr_s(b, s, "tag.tags", "[\"a\\nb\", \"c\\u0085d\"]");
    tb_attr_s(b, s, "session.id", "s\r1");
    tb_attr_s(b, s, "gen_ai.input.messages",
              "[{\"role\":\"Human\",\"content\":\"hi\"},{\"role\":\"model\",\"content\":\"yo\"},"
              "{\"role\":\"critic\",\"content\":\"meh\"},"
              "{\"role\":\"judge\",\"name\":\"j\\n1\",\"content\":\"ok\"}]");
    tb_attr_s(b, s, "gen_ai.output.messages",
              "[{\"role\":\"model\",\"parts\":[{\"type\":\"text\",\"content\":\"done\"}]}]");
}

static void check_labels(const ingest_otlp_result *r)
{
    const eb_trace *t = r->traces[0];
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_contains(r->error_message, "must not contain control characters");
    assert_str(t->project, "good");
    assert_str(t->name, "chat gpt");
    assert_str(o->name, "chat gpt");
    assert_str(o->model, "gpt -4o");
    assert_int_equal(t->n_tags, 2);
    assert_str(t->tags[0], "a b");
    assert_str(t->tags[1], "c d");
    assert_str(t->session_id, "s 1");
    assert_int_equal(o->n_input_messages, 4);
    assert_str(o->input_messages[0]->role, "user");
    assert_str(o->input_messages[1]->role, "assistant");
    assert_str(o->input_messages[2]->role, "user"); /* the side's default */
    assert_str(o->input_messages[2]->name, "critic");
    assert_str(o->input_messages[3]->role, "user");
    assert_str(o->input_messages[3]->name, "j 1");
    assert_str(o->output_messages[0]->role, "assistant");
    const ingest_limits def = INGEST_LIMITS_DEFAULT;

    for (size_t i = 0; i < r->ntraces; i++)
        if (ingest_trace_validate(r->traces[i], &def) != EB_OK)
            fail_msg("trace %zu: %s", i, eb_error_message());
}

/* OpenInference LLM span with messages, content parts and tool calls; root-level session,
 * user, tags and metadata. */
static const char json_openinference[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
    "{\"stringValue\":\"svc\"}},{\"key\":\"evalbus.project\",\"value\":{\"stringValue\":"
    "\"agents\"}}]},\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_B "\",\"spanId\":\"" SPAN_2
    "\",\"name\":\"ChatOpenAI\",\"startTimeUnixNano\":1700000000000000000,"
    "\"endTimeUnixNano\":\"1700000002000000000\",\"attributes\":["
    "{\"key\":\"openinference.span.kind\",\"value\":{\"stringValue\":\"LLM\"}},"
    "{\"key\":\"llm.model_name\",\"value\":{\"stringValue\":\"gpt-4o\"}},"
    "{\"key\":\"llm.provider\",\"value\":{\"stringValue\":\"openai\"}},"
    "{\"key\":\"llm.token_count.prompt\",\"value\":{\"intValue\":\"50\"}},"
    "{\"key\":\"llm.token_count.completion\",\"value\":{\"intValue\":\"7\"}},"
    "{\"key\":\"llm.token_count.total\",\"value\":{\"intValue\":\"57\"}},"
    "{\"key\":\"llm.input_messages.0.message.role\",\"value\":{\"stringValue\":\"system\"}},"
    "{\"key\":\"llm.input_messages.0.message.content\",\"value\":{\"stringValue\":\"Sys\"}},"
    "{\"key\":\"llm.input_messages.1.message.role\",\"value\":{\"stringValue\":\"user\"}},"
    "{\"key\":\"llm.input_messages.1.message.contents.0.message_content.type\",\"value\":"
    "{\"stringValue\":\"text\"}},"
    "{\"key\":\"llm.input_messages.1.message.contents.0.message_content.text\",\"value\":"
    "{\"stringValue\":\"What is this?\"}},"
    "{\"key\":\"llm.input_messages.1.message.contents.1.message_content.type\",\"value\":"
    "{\"stringValue\":\"image\"}},"
    "{\"key\":\"llm.input_messages.1.message.contents.1.message_content.image.image.url\","
    "\"value\":{\"stringValue\":\"https://example.com/cat.png\"}},"
    "{\"key\":\"llm.output_messages.0.message.role\",\"value\":{\"stringValue\":"
    "\"assistant\"}},"
    "{\"key\":\"llm.output_messages.0.message.tool_calls.0.tool_call.id\",\"value\":"
    "{\"stringValue\":\"t1\"}},"
    "{\"key\":\"llm.output_messages.0.message.tool_calls.0.tool_call.function.name\","
    "\"value\":{\"stringValue\":\"classify\"}},"
    "{\"key\":\"llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments\","
    "\"value\":{\"stringValue\":\"{\\\"kind\\\":\\\"cat\\\"}\"}},"
    "{\"key\":\"llm.output_messages.0.message.tool_calls.1.tool_call.function.name\","
    "\"value\":{\"stringValue\":\"second\"}},"
    "{\"key\":\"input.value\",\"value\":{\"stringValue\":\"What is this?\"}},"
    "{\"key\":\"input.mime_type\",\"value\":{\"stringValue\":\"text/plain\"}},"
    "{\"key\":\"output.value\",\"value\":{\"stringValue\":\"a cat\"}},"
    "{\"key\":\"metadata\",\"value\":{\"stringValue\":\"{\\\"tier\\\": \\\"gold\\\"}\"}},"
    "{\"key\":\"session.id\",\"value\":{\"stringValue\":\"sess-1\"}},"
    "{\"key\":\"user.id\",\"value\":{\"stringValue\":\"u-9\"}},"
    "{\"key\":\"tag.tags\",\"value\":{\"arrayValue\":{\"values\":[{\"stringValue\":\"prod\"},"
    "{\"stringValue\":\"beta\"}]}}}"
    "]}]}]}]}";

static void check_openinference(const ingest_otlp_result *r)
{
    const eb_trace *t = r->traces[0];
    const eb_obs *o = t->observations[0];
    const Evalbus__V1__Message *m;

    assert_str(t->id, TRACE_B);
    assert_str(t->project, "agents");
    assert_str(t->session_id, "sess-1");
    assert_str(t->user_id, "u-9");
    assert_int_equal(t->n_tags, 2);
    assert_str(t->tags[0], "prod");
    assert_str(t->tags[1], "beta");
    assert_str(t->metadata_json, "{\"tier\":\"gold\"}");
    assert_str(t->model, "gpt-4o");
    assert_true(t->start_time_unix_nano == (int64_t)T0);

    assert_str(o->type, "generation");
    assert_str(o->model, "gpt-4o");
    assert_str(o->provider, "openai");
    assert_true(o->has_input_tokens && o->input_tokens == 50);
    assert_true(o->has_output_tokens && o->output_tokens == 7);
    assert_str(o->input_text, "What is this?");
    assert_str(o->output_text, "a cat");
    assert_str(o->metadata_json, "{\"tier\":\"gold\"}");
    assert_int_equal(o->n_input_messages, 2);
    assert_str(o->input_messages[0]->role, "system");
    assert_str(o->input_messages[0]->content, "Sys");
    m = o->input_messages[1];
    assert_str(m->role, "user");
    assert_null(m->content); /* not only text */
    assert_int_equal(m->n_parts, 2);
    assert_str(m->parts[0]->type, "text");
    assert_str(m->parts[0]->text, "What is this?");
    assert_str(m->parts[1]->type, "image");
    assert_str(m->parts[1]->url, "https://example.com/cat.png");
    m = o->output_messages[0];
    assert_int_equal(o->n_output_messages, 1);
    assert_int_equal(m->n_tool_calls, 2);
    assert_str(m->tool_calls[0]->id, "t1");
    assert_str(m->tool_calls[0]->name, "classify");
    assert_str(m->tool_calls[0]->arguments, "{\"kind\":\"cat\"}");
    assert_str(m->tool_calls[1]->name, "second");
    /* the trace's input/output come from the root's own input.value / output.value */
    assert_str(t->input_text, "What is this?");
    assert_str(t->output_text, "a cat");
    /* the span kind and mime type are kept, the total (= sum) is not */
    assert_str(o->attributes_json,
               "{\"openinference.span.kind\":\"LLM\",\"input.mime_type\":\"text/plain\"}");
}

/* Tool spans: GenAI execute_tool (protobuf) and OpenInference TOOL (JSON). */
static void build_tool(tb *b)
{
    otlp_span *s;

    tb_resource(b, "tools");
    s = tb_span(b, TRACE_A, SPAN_3, SPAN_1, "execute_tool get_weather", T0 + 10, T0 + 20);
    tb_attr_s(b, s, "gen_ai.operation.name", "execute_tool");
    tb_attr_s(b, s, "gen_ai.tool.name", "get_weather");
    tb_attr_s(b, s, "gen_ai.tool.call.id", "call_1");
    tb_attr_s(b, s, "gen_ai.tool.call.arguments", "{\"city\":\"Paris\"}");
    tb_attr_s(b, s, "gen_ai.tool.call.result", "rainy");
    tb_attr_s(b, s, "gen_ai.tool.type", "function");
}

static void check_tool(const ingest_otlp_result *r)
{
    const eb_trace *t = r->traces[0];
    const eb_obs *o = find_obs(r, SPAN_3);
    const Evalbus__V1__ToolCall *tc;

    assert_null(t->name); /* no root in this request: trace fields stay unset */
    assert_null(t->status);
    assert_false(t->has_start_time_unix_nano);
    assert_str(t->project, "tools");
    assert_str(o->type, "tool");
    assert_str(o->parent_id, SPAN_1);
    assert_int_equal(o->n_tool_calls, 1);
    tc = o->tool_calls[0];
    assert_str(tc->id, "call_1");
    assert_str(tc->name, "get_weather");
    assert_str(tc->arguments, "{\"city\":\"Paris\"}");
    assert_str(tc->result, "rainy");
    assert_true(tc->has_start_time_unix_nano && tc->start_time_unix_nano == (int64_t)T0 + 10);
    assert_true(tc->has_end_time_unix_nano && tc->end_time_unix_nano == (int64_t)T0 + 20);
    assert_str(o->attributes_json,
               "{\"gen_ai.operation.name\":\"execute_tool\",\"gen_ai.tool.type\":\"function\","
               "\"otel.scope.name\":\"evalbus-test\"}");
}

static const char json_oi_tool[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
    "\",\"spanId\":\"" SPAN_3 "\",\"parentSpanId\":\"" SPAN_1 "\",\"name\":\"search\","
    "\"attributes\":[{\"key\":\"openinference.span.kind\",\"value\":{\"stringValue\":\"TOOL\"}},"
    "{\"key\":\"tool.name\",\"value\":{\"stringValue\":\"search\"}},"
    "{\"key\":\"tool.description\",\"value\":{\"stringValue\":\"web search\"}},"
    "{\"key\":\"input.value\",\"value\":{\"stringValue\":\"{\\\"q\\\":\\\"cats\\\"}\"}},"
    "{\"key\":\"output.value\",\"value\":{\"stringValue\":\"3 results\"}}]}]}]}]}";

static void check_oi_tool(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_3);

    assert_str(o->type, "tool");
    assert_int_equal(o->n_tool_calls, 1);
    assert_str(o->tool_calls[0]->name, "search");
    assert_str(o->tool_calls[0]->arguments, "{\"q\":\"cats\"}");
    assert_str(o->tool_calls[0]->result, "3 results");
    assert_str(o->input_text, "{\"q\":\"cats\"}");
    assert_str(o->output_text, "3 results");
    assert_false(o->has_start_time_unix_nano);
    assert_str(o->attributes_json,
               "{\"openinference.span.kind\":\"TOOL\",\"tool.description\":\"web search\"}");
}

/* A root (agent, error status) and a child generation, the child first as exporters send. */
static void build_two_spans(tb *b)
{
    otlp_span *root, *child;

    tb_resource(b, "agent-svc");
    child = tb_span(b, TRACE_A, SPAN_2, SPAN_1, "chat", T0 + 100, T0 + 900);
    tb_attr_s(b, child, "gen_ai.request.model", "gpt-4o");
    tb_attr_s(b, child, "gen_ai.system", "openai");
    tb_attr_s(b, child, "gen_ai.input.messages",
              "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"hi\"}]}]");
    tb_attr_s(b, child, "gen_ai.output.messages",
              "[{\"role\":\"assistant\",\"parts\":[{\"type\":\"text\",\"content\":\"hello\"}]}]");
    tb_attr_s(b, child, "session.id", "not-root"); /* only the root's is the trace's */
    root = tb_span(b, TRACE_A, SPAN_1, NULL, "agent run", T0, T0 + 1000000);
    tb_attr_s(b, root, "gen_ai.operation.name", "invoke_agent");
    tb_attr_s(b, root, "gen_ai.conversation.id", "conv-7");
    tb_status(b, root, 2, "tool failed");
}

static void check_two_spans(const ingest_otlp_result *r)
{
    const eb_trace *t = r->traces[0];
    const eb_obs *root = find_obs(r, SPAN_1), *child = find_obs(r, SPAN_2);

    assert_int_equal(t->n_observations, 2);
    assert_str(t->name, "agent run");
    assert_str(t->status, "error");
    assert_str(t->status_message, "tool failed");
    assert_true(t->has_end_time_unix_nano && t->end_time_unix_nano == (int64_t)T0 + 1000000);
    assert_str(t->session_id, "conv-7");
    assert_str(t->model, "gpt-4o");
    assert_str(t->provider, "openai");
    /* the root has no input of its own: the first generation's */
    assert_int_equal(t->n_input_messages, 1);
    assert_str(t->input_messages[0]->content, "hi");
    assert_int_equal(t->n_output_messages, 1);
    assert_str(t->output_messages[0]->content, "hello");
    assert_str(root->type, "span");
    assert_null(root->parent_id);
    assert_str(child->type, "generation");
    assert_str(child->parent_id, SPAN_1);
    assert_contains(child->attributes_json, "\"session.id\":\"not-root\"");
    assert_lacks(root->attributes_json, "conversation");
}

/* Two traces in one request, in two resources; upper-case ids are folded to lower case. */
static const char json_two_traces[] =
    "{\"resource_spans\":[{\"resource\":{\"attributes\":[{\"key\":\"evalbus.project\",\"value\":"
    "{\"stringValue\":\"p1\"}}]},\"scope_spans\":[{\"spans\":["
    "{\"trace_id\":\"0AF7651916CD43DD8448EB211C80319C\",\"span_id\":\"B7AD6B7169203331\","
    "\"name\":\"second\"}]}]},"
    "{\"resource\":{},\"scopeSpans\":[{\"spans\":["
    "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"first\"},"
    "{\"traceId\":\"0af7651916cd43dd8448eb211c80319c\",\"spanId\":\"" SPAN_3 "\","
    "\"parentSpanId\":\"B7AD6B7169203331\",\"name\":\"child\"}]}]}]}";

static void check_two_traces(const ingest_otlp_result *r)
{
    assert_str(r->traces[0]->id, TRACE_B); /* in order of first appearance */
    assert_str(r->traces[0]->project, "p1");
    assert_str(r->traces[0]->name, "second");
    assert_int_equal(r->traces[0]->n_observations, 2);
    assert_str(r->traces[0]->observations[0]->id, SPAN_2);
    assert_str(r->traces[0]->observations[1]->parent_id, SPAN_2);
    assert_str(r->traces[1]->id, TRACE_A);
    assert_str(r->traces[1]->project, "default");
    assert_str(r->traces[1]->name, "first");
    assert_str(r->traces[1]->observations[0]->status, "unset");
}

/* Unknown attributes of every type are kept, with their types. */
static void build_unknown(tb *b)
{
    otlp_span *s;
    otlp_any *d = tb_any(b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE_DOUBLE_VALUE);
    otlp_any *t = tb_any(b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE_BOOL_VALUE);
    otlp_any *by = tb_any(b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE_BYTES_VALUE);
    static uint8_t bytes[] = {0, 1, 2};

    d->double_value = 1.5;
    t->bool_value = 1;
    by->bytes_value.data = bytes;
    by->bytes_value.len = 3;
    tb_resource(b, "svc");
    s = tb_span(b, TRACE_A, SPAN_1, NULL, "work", T0, T0 + 1);
    tb_attr_s(b, s, "s", "x\"y");
    tb_attr_i(b, s, "i", -42);
    tb_attr_i(b, s, "big", 1152921504606846976LL); /* 2^60: a string */
    tb_attr(b, s, "d", d);
    tb_attr(b, s, "b", t);
    tb_attr(b, s, "arr", tb_array(b, tb_sv(b, "a"), tb_iv(b, 1), NULL));
    tb_attr(b, s, "kv",
            tb_kvlist(b, tb_kv(b, "k", tb_sv(b, "v")), tb_kv(b, "n", tb_iv(b, 2)), NULL));
    tb_attr(b, s, "raw", by);
    tb_attr(b, s, "empty", tb_any(b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE__NOT_SET));
    /* a token count that is not a number has no field to go to: kept */
    tb_attr_s(b, s, "gen_ai.usage.input_tokens", "many");
    /* messages that are not JSON cannot be mapped: kept */
    tb_attr_s(b, s, "gen_ai.input.messages", "[not json");
}

static void check_unknown(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_str(o->type, "span");
    assert_false(o->has_input_tokens);
    assert_str(o->attributes_json,
               "{\"s\":\"x\\\"y\",\"i\":-42,\"big\":\"1152921504606846976\",\"d\":1.5,"
               "\"b\":true,\"arr\":[\"a\",1],\"kv\":{\"k\":\"v\",\"n\":2},\"raw\":\"AAEC\","
               "\"empty\":null,\"gen_ai.usage.input_tokens\":\"many\","
               "\"gen_ai.input.messages\":\"[not json\","
               "\"otel.scope.name\":\"evalbus-test\"}");
}

/* The same in JSON, with intValue as a string and as a number, and a doubleValue string. */
static const char json_unknown[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
    "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"work\",\"attributes\":["
    "{\"key\":\"i\",\"value\":{\"intValue\":\"-42\"}},"
    "{\"key\":\"j\",\"value\":{\"intValue\":7}},"
    "{\"key\":\"big\",\"value\":{\"intValue\":\"9007199254740993\"}},"
    "{\"key\":\"d\",\"value\":{\"doubleValue\":0.25}},"
    "{\"key\":\"inf\",\"value\":{\"doubleValue\":\"Infinity\"}},"
    "{\"key\":\"b\",\"value\":{\"boolValue\":false}},"
    "{\"key\":\"raw\",\"value\":{\"bytesValue\":\"AAEC\"}},"
    "{\"key\":\"arr\",\"value\":{\"arrayValue\":{\"values\":[{\"kvlistValue\":{\"values\":"
    "[{\"key\":\"x\",\"value\":{\"arrayValue\":{}}}]}}]}}},"
    "{\"key\":\"kv\",\"value\":{\"kvlistValue\":{}}},"
    "{\"key\":\"none\",\"value\":{}},"
    "{\"key\":\"gen_ai.usage.output_tokens\",\"value\":{\"intValue\":\"12\"}}"
    "]}]}]}]}";

static void check_unknown_json(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_true(o->has_output_tokens && o->output_tokens == 12);
    assert_str(o->attributes_json,
               "{\"i\":-42,\"j\":7,\"big\":\"9007199254740993\",\"d\":0.25,\"inf\":\"Infinity\","
               "\"b\":false,\"raw\":\"AAEC\",\"arr\":[{\"x\":[]}],\"kv\":{},\"none\":null}");
}

/* Bad ids: the span alone is rejected. */
static const char json_bad_ids[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
    "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"00f067aa0ba902b\",\"name\":\"short\"},"
    "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_2 "\",\"name\":\"good\"},"
    "{\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e47\",\"spanId\":\"" SPAN_3 "\",\"name\":\"t\"},"
    "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"zzf067aa0ba902b7\",\"name\":\"nonhex\"},"
    "{\"traceId\":\"00000000000000000000000000000000\",\"spanId\":\"" SPAN_1 "\"},"
    "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_1 "\",\"parentSpanId\":\"0102\"}"
    "]}]}]}";

static void check_bad_ids(const ingest_otlp_result *r)
{
    assert_int_equal(r->ntraces, 1);
    assert_int_equal(r->traces[0]->n_observations, 1);
    assert_str(r->traces[0]->observations[0]->name, "good");
    assert_contains(r->error_message, "span #1: span id must be 8 bytes");
    assert_contains(r->error_message, "span " SPAN_3 ": trace id must be 16 bytes");
    assert_contains(r->error_message, "(and 2 more)");
}

static void build_bad_ids(tb *b)
{
    otlp_span *s;

    tb_resource(b, "svc");
    tb_span(b, TRACE_A, "00f067aa", NULL, "short", T0, T0);
    tb_span(b, TRACE_A, SPAN_2, NULL, "good", T0, T0);
    s = tb_span(b, TRACE_A, SPAN_3, SPAN_2, "bad utf-8", T0, T0);
    tb_attr_s(b, s, "k", "\xc3\x28");
}

static void check_bad_ids_pb(const ingest_otlp_result *r)
{
    assert_int_equal(r->traces[0]->n_observations, 1);
    assert_contains(r->error_message, "span #1: span id must be 8 bytes");
    assert_contains(r->error_message, "span " SPAN_3 ": attribute 'k' is not valid UTF-8");
}

/* Limits: observations per trace, string size, attributes size. */
static void build_limits(tb *b)
{
    otlp_span *s;
    static char big[300];

    memset(big, 'x', sizeof big - 1);
    tb_resource(b, "svc");
    tb_span(b, TRACE_A, SPAN_1, NULL, "root", T0, T0);
    s = tb_span(b, TRACE_A, SPAN_2, SPAN_1, "big string", T0, T0);
    tb_attr_s(b, s, "input.value", big); /* > max_field_bytes 200 */
    s = tb_span(b, TRACE_A, SPAN_3, SPAN_1, "many attributes", T0, T0);
    for (int i = 0; i < 10; i++)
        tb_attr_s(b, s, i % 2 ? "aaaaaaaaaaaaaaaaaaaa" : "bbbbbbbbbbbbbbbbbbbb", big + 150);
    tb_span(b, TRACE_A, "1111111111111111", SPAN_1, "ok", T0, T0);
    tb_span(b, TRACE_A, "2222222222222222", SPAN_1, "third", T0, T0); /* > 2 per trace */
}

static void check_limits(const ingest_otlp_result *r)
{
    assert_int_equal(r->traces[0]->n_observations, 2);
    assert_contains(r->error_message, "attribute 'input.value' is longer than 200 bytes");
    assert_contains(r->error_message, "attributes are longer than 400 bytes");
    assert_contains(r->error_message, "trace has more than 2 spans");
}

typedef struct otlp_case {
    const char *name;
    void (*build)(tb *b); /* a protobuf request, or */
    const char *json;     /* a JSON one */
    const ingest_limits *lim;
    long long spans, rejected;
    size_t ntraces;
    void (*check)(const ingest_otlp_result *r);
} otlp_case;

static const ingest_limits small_limits = {1000, 200, 256, 1000, 2, 64, 400, 4194304};

/* Counts beyond 2^53 (what the JSON API takes) are not counts: they stay attributes; flattened
 * messages without a role take their side's. */
static const char json_big_counts[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
    "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"chat\",\"attributes\":["
    "{\"key\":\"gen_ai.usage.input_tokens\",\"value\":{\"intValue\":\"9223372036854775807\"}},"
    "{\"key\":\"gen_ai.usage.output_tokens\",\"value\":{\"intValue\":\"9007199254740991\"}},"
    "{\"key\":\"gen_ai.prompt.0.content\",\"value\":{\"stringValue\":\"q\"}},"
    "{\"key\":\"gen_ai.completion.0.content\",\"value\":{\"stringValue\":\"a\"}}"
    "]}]}]}]}";

static void check_big_counts(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_false(o->has_input_tokens);
    assert_true(o->has_output_tokens && o->output_tokens == 9007199254740991LL);
    assert_str(o->attributes_json, "{\"gen_ai.usage.input_tokens\":\"9223372036854775807\"}");
    assert_int_equal(o->n_input_messages, 1);
    assert_str(o->input_messages[0]->role, "user");
    assert_str(o->input_messages[0]->content, "q");
    assert_int_equal(o->n_output_messages, 1);
    assert_str(o->output_messages[0]->role, "assistant");
    assert_str(o->output_messages[0]->content, "a");
}

/* The same span id twice in one trace: the first is kept, the second rejected and counted. */
static const char json_dup_span[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
    "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"first\"},"
    "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"second\"}]}]}]}";

static void check_dup_span(const ingest_otlp_result *r)
{
    assert_int_equal(r->traces[0]->n_observations, 1);
    assert_str(r->traces[0]->observations[0]->name, "first");
    assert_non_null(strstr(r->error_message, "came earlier"));
}

/* Messages of a shape we do not read (an item that is neither an object nor a string, a tool call
 * that is not an object) leave their attribute as it is: the span is stored, not rejected. */
static const char json_odd_messages[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
    "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"chat\",\"attributes\":["
    "{\"key\":\"gen_ai.request.model\",\"value\":{\"stringValue\":\"gpt-4o\"}},"
    "{\"key\":\"gen_ai.usage.input_tokens\",\"value\":{\"intValue\":\"7\"}},"
    "{\"key\":\"gen_ai.input.messages\",\"value\":{\"stringValue\":"
    "\"[{\\\"role\\\":\\\"user\\\",\\\"content\\\":\\\"hi\\\"},null]\"}},"
    "{\"key\":\"gen_ai.output.messages\",\"value\":{\"stringValue\":"
    "\"[{\\\"role\\\":\\\"assistant\\\",\\\"tool_calls\\\":[1]}]\"}}"
    "]}]}]}]}";

static void check_odd_messages(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_true(o->has_input_tokens && o->input_tokens == 7);
    assert_str(o->model, "gpt-4o");
    assert_int_equal(o->n_input_messages, 0);
    assert_int_equal(o->n_output_messages, 0);
    assert_contains(o->attributes_json, "\"gen_ai.input.messages\":");
    assert_contains(o->attributes_json, "\"gen_ai.output.messages\":");
}

/* OpenInference content parts that are not plain text: an image url without a type is an
 * image part, and the text of a part that is not text stays in the part (both were lost). */
static const char json_oi_parts[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
    "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"chat\",\"attributes\":["
    "{\"key\":\"llm.input_messages.0.message.role\",\"value\":{\"stringValue\":\"user\"}},"
    "{\"key\":\"llm.input_messages.0.message.contents.0.message_content.image.image.url\","
    "\"value\":{\"stringValue\":\"https://example.com/a.png\"}},"
    "{\"key\":\"llm.input_messages.0.message.contents.1.message_content.type\",\"value\":"
    "{\"stringValue\":\"image\"}},"
    "{\"key\":\"llm.input_messages.0.message.contents.1.message_content.text\",\"value\":"
    "{\"stringValue\":\"a caption\"}},"
    "{\"key\":\"llm.input_messages.0.message.contents.1.message_content.image.image.url\","
    "\"value\":{\"stringValue\":\"https://example.com/b.png\"}}"
    "]}]}]}]}";

static void check_oi_parts(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);
    const Evalbus__V1__Message *m;

    assert_int_equal(o->n_input_messages, 1);
    m = o->input_messages[0];
    assert_str(m->role, "user");
    assert_null(m->content);
    assert_int_equal(m->n_parts, 2);
    assert_str(m->parts[0]->type, "image");
    assert_str(m->parts[0]->url, "https://example.com/a.png");
    assert_null(m->parts[0]->text);
    assert_str(m->parts[1]->type, "image");
    assert_str(m->parts[1]->url, "https://example.com/b.png");
    assert_str(m->parts[1]->text, "a caption");
    assert_null(o->attributes_json);
}

/* A message's own content next to one text part that differs: both are kept; one equal to the
 * content is a duplicate and goes (the single part was dropped whatever it held). */
static const char json_oi_content_and_part[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
    "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"chat\",\"attributes\":["
    "{\"key\":\"llm.input_messages.0.message.content\",\"value\":{\"stringValue\":\"Summarize\"}},"
    "{\"key\":\"llm.input_messages.0.message.contents.0.message_content.type\",\"value\":"
    "{\"stringValue\":\"text\"}},"
    "{\"key\":\"llm.input_messages.0.message.contents.0.message_content.text\",\"value\":"
    "{\"stringValue\":\"the report\"}},"
    "{\"key\":\"llm.input_messages.1.message.content\",\"value\":{\"stringValue\":\"same\"}},"
    "{\"key\":\"llm.input_messages.1.message.contents.0.message_content.text\",\"value\":"
    "{\"stringValue\":\"same\"}}"
    "]}]}]}]}";

static void check_oi_content_and_part(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);
    const Evalbus__V1__Message *m;

    assert_int_equal(o->n_input_messages, 2);
    m = o->input_messages[0];
    assert_str(m->content, "Summarize");
    /* the message is read as its parts: its own content comes first among them */
    assert_int_equal(m->n_parts, 2);
    assert_str(m->parts[0]->type, "text");
    assert_str(m->parts[0]->text, "Summarize");
    assert_str(m->parts[1]->type, "text");
    assert_str(m->parts[1]->text, "the report");
    {
        eb_buf j = {0};
        ingest_messages_json(o->input_messages, 1, &j);
        assert_non_null(strstr(j.data, "Summarize"));
        assert_non_null(strstr(j.data, "the report"));
        eb_buf_free(&j);
    }
    m = o->input_messages[1];
    assert_str(m->content, "same");
    assert_int_equal(m->n_parts, 0);
    assert_null(o->attributes_json);
}

/* A flattened key sent twice: the first is mapped, the second stays an attribute (all matched
 * keys were taken, used or not). */
static const char json_oi_dup_keys[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
    "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"chat\",\"attributes\":["
    "{\"key\":\"llm.input_messages.0.message.role\",\"value\":{\"stringValue\":\"user\"}},"
    "{\"key\":\"llm.input_messages.0.message.content\",\"value\":{\"stringValue\":\"first\"}},"
    "{\"key\":\"llm.input_messages.0.message.role\",\"value\":{\"stringValue\":\"system\"}},"
    "{\"key\":\"llm.input_messages.0.message.contents.0.message_content.text\",\"value\":"
    "{\"stringValue\":\"first\"}},"
    "{\"key\":\"llm.input_messages.0.message.contents.0.message_content.text\",\"value\":"
    "{\"stringValue\":\"second\"}},"
    "{\"key\":\"llm.output_messages.0.message.tool_calls.0.tool_call.function.name\","
    "\"value\":{\"stringValue\":\"f\"}},"
    "{\"key\":\"llm.output_messages.0.message.tool_calls.0.tool_call.function.name\","
    "\"value\":{\"stringValue\":\"g\"}}"
    "]}]}]}]}";

static void check_oi_dup_keys(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_int_equal(o->n_input_messages, 1);
    assert_str(o->input_messages[0]->role, "user");
    assert_str(o->input_messages[0]->content, "first");
    assert_int_equal(o->n_output_messages, 1);
    assert_int_equal(o->output_messages[0]->n_tool_calls, 1);
    assert_str(o->output_messages[0]->tool_calls[0]->name, "f");
    assert_str(o->attributes_json,
               "{\"llm.input_messages.0.message.role\":\"system\","
               "\"llm.input_messages.0.message.contents.0.message_content.text\":\"second\","
               "\"llm.output_messages.0.message.tool_calls.0.tool_call.function.name\":\"g\"}");
}

static const otlp_case map_cases[] = {
    {"genai chat (current conventions)", build_genai_chat, NULL, NULL, 1, 0, 1, check_genai_chat},
    {"genai prompt.N / completion.N", NULL, json_genai_old, NULL, 1, 0, 1, check_genai_old},
    {"genai events", build_genai_events, NULL, NULL, 1, 0, 1, check_genai_events},
    {"genai events with JSON text", build_genai_events_text, NULL, NULL, 2, 0, 1,
     check_genai_events_text},
    {"spans of two resources", build_two_resources, NULL, NULL, 4, 0, 1, check_two_resources},
    {"labels and roles", build_labels, NULL, NULL, 1, 1, 1, check_labels},
    {"openinference llm", NULL, json_openinference, NULL, 1, 0, 1, check_openinference},
    {"genai tool span", build_tool, NULL, NULL, 1, 0, 1, check_tool},
    {"openinference tool span", NULL, json_oi_tool, NULL, 1, 0, 1, check_oi_tool},
    {"root and child", build_two_spans, NULL, NULL, 2, 0, 1, check_two_spans},
    {"two traces, ids folded", NULL, json_two_traces, NULL, 3, 0, 2, check_two_traces},
    {"unknown attributes kept", build_unknown, NULL, NULL, 1, 0, 1, check_unknown},
    {"unknown attributes kept (json)", NULL, json_unknown, NULL, 1, 0, 1, check_unknown_json},
    {"bad ids rejected alone (json)", NULL, json_bad_ids, NULL, 1, 5, 1, check_bad_ids},
    {"bad span rejected alone", build_bad_ids, NULL, NULL, 1, 2, 1, check_bad_ids_pb},
    {"limits", build_limits, NULL, &small_limits, 2, 3, 1, check_limits},
    {"big counts, roles by side", NULL, json_big_counts, NULL, 1, 0, 1, check_big_counts},
    {"a span id twice", NULL, json_dup_span, NULL, 1, 1, 1, check_dup_span},
    {"messages of another shape stay attributes", NULL, json_odd_messages, NULL, 1, 0, 1,
     check_odd_messages},
    {"empty request", NULL, "{}", NULL, 0, 0, 0, NULL},
    {"empty lists", NULL, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[]}]}]}", NULL, 0, 0, 0,
     NULL},
};

static void run_case(const otlp_case *c)
{
    const ingest_limits def = INGEST_LIMITS_DEFAULT;
    const ingest_limits *lim = c->lim ? c->lim : &def;
    ingest_otlp_result r;
    eb_status st;

    if (c->build) {
        tb b = {0};
        uint8_t *buf;
        size_t len;

        c->build(&b);
        buf = tb_pack(&b, &len);
        st = ingest_otlp_decode_protobuf(buf, len, lim, &r);
        free(buf);
        tb_free(&b);
    } else {
        st = ingest_otlp_decode_json(c->json, strlen(c->json), lim, &r);
    }
    if (st != EB_OK)
        fail_msg("%s: status %s (%s)", c->name, eb_status_str(st), eb_error_message());
    if (r.spans != c->spans || r.rejected_spans != c->rejected || r.ntraces != c->ntraces)
        fail_msg("%s: spans %lld rejected %lld traces %zu, expected %lld %lld %zu (%s)", c->name,
                 r.spans, r.rejected_spans, r.ntraces, c->spans, c->rejected, c->ntraces,
                 r.error_message ? r.error_message : "");
    if ((r.rejected_spans > 0) != (r.error_message != NULL))
        fail_msg("%s: error_message must be set exactly when spans are rejected", c->name);
    if (c->check)
        c->check(&r);
    /* every trace must survive a protobuf round trip (well-formed heap tree) */
    for (size_t i = 0; i < r.ntraces; i++) {
        size_t n = evalbus__v1__trace__get_packed_size(r.traces[i]);
        uint8_t *buf = eb_malloc(n + 1);
        Evalbus__V1__Trace *t;

        evalbus__v1__trace__pack(r.traces[i], buf);
        t = evalbus__v1__trace__unpack(NULL, n, buf);
        assert_non_null(t);
        evalbus__v1__trace__free_unpacked(t, NULL);
        free(buf);
    }
    ingest_otlp_result_free(&r);
    assert_null(r.traces);
}

static void test_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof map_cases / sizeof map_cases[0]; i++)
        run_case(&map_cases[i]);
}

/* The flattened-message bugs, one test each so each shows on its own. */
static void test_flat_part_url_and_text(void **state)
{
    const otlp_case c = {"openinference parts: url without type, text of an image",
                         NULL,
                         json_oi_parts,
                         NULL,
                         1,
                         0,
                         1,
                         check_oi_parts};

    (void)state;
    run_case(&c);
}

static void test_flat_content_and_one_part(void **state)
{
    const otlp_case c = {"openinference content and one text part",
                         NULL,
                         json_oi_content_and_part,
                         NULL,
                         1,
                         0,
                         1,
                         check_oi_content_and_part};

    (void)state;
    run_case(&c);
}

static void test_flat_key_twice(void **state)
{
    const otlp_case c = {
        "openinference key sent twice", NULL, json_oi_dup_keys, NULL, 1, 0, 1, check_oi_dup_keys};

    (void)state;
    run_case(&c);
}

/* A flattened role that is none of the JSON API's, on a message that has a name already, fills
 * nothing (the message takes the default role): it stays an attribute. One without a name
 * becomes the name and is used. */
static const char json_flat_role_named[] =
    "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
    "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"debate\",\"attributes\":["
    "{\"key\":\"gen_ai.prompt.0.role\",\"value\":{\"stringValue\":\"critic\"}},"
    "{\"key\":\"gen_ai.prompt.0.name\",\"value\":{\"stringValue\":\"bob\"}},"
    "{\"key\":\"gen_ai.prompt.0.content\",\"value\":{\"stringValue\":\"meh\"}},"
    "{\"key\":\"gen_ai.prompt.1.role\",\"value\":{\"stringValue\":\"judge\"}},"
    "{\"key\":\"gen_ai.prompt.1.content\",\"value\":{\"stringValue\":\"ok\"}}"
    "]}]}]}]}";

static void check_flat_role_named(const ingest_otlp_result *r)
{
    const eb_obs *o = find_obs(r, SPAN_1);

    assert_int_equal(o->n_input_messages, 2);
    assert_str(o->input_messages[0]->role, "user");
    assert_str(o->input_messages[0]->name, "bob");
    assert_str(o->input_messages[1]->role, "user");
    assert_str(o->input_messages[1]->name, "judge");
    assert_str(o->attributes_json, "{\"gen_ai.prompt.0.role\":\"critic\"}");
}

static void test_flat_role_dropped_stays(void **state)
{
    const otlp_case c = {"flattened role that fills nothing",
                         NULL,
                         json_flat_role_named,
                         NULL,
                         1,
                         0,
                         1,
                         check_flat_role_named};

    (void)state;
    run_case(&c);
}

/* The same spans as protobuf and as JSON map to identical traces. */
static const char json_two_spans[] =
    "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
    "{\"stringValue\":\"agent-svc\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"evalbus-test\"},"
    "\"spans\":[{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_2 "\",\"parentSpanId\":\"" SPAN_1
    "\",\"name\":\"chat\",\"startTimeUnixNano\":\"1700000000000000100\",\"endTimeUnixNano\":"
    "\"1700000000000000900\",\"attributes\":["
    "{\"key\":\"gen_ai.request.model\",\"value\":{\"stringValue\":\"gpt-4o\"}},"
    "{\"key\":\"gen_ai.system\",\"value\":{\"stringValue\":\"openai\"}},"
    "{\"key\":\"gen_ai.input.messages\",\"value\":{\"stringValue\":\"[{\\\"role\\\":\\\"user\\\","
    "\\\"parts\\\":[{\\\"type\\\":\\\"text\\\",\\\"content\\\":\\\"hi\\\"}]}]\"}},"
    "{\"key\":\"gen_ai.output.messages\",\"value\":{\"stringValue\":\"[{\\\"role\\\":"
    "\\\"assistant\\\",\\\"parts\\\":[{\\\"type\\\":\\\"text\\\",\\\"content\\\":\\\"hello\\\"}]}]"
    "\"}},{\"key\":\"session.id\",\"value\":{\"stringValue\":\"not-root\"}}]},"
    "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"agent run\","
    "\"startTimeUnixNano\":\"1700000000000000000\",\"endTimeUnixNano\":\"1700000000001000000\","
    "\"attributes\":[{\"key\":\"gen_ai.operation.name\",\"value\":{\"stringValue\":"
    "\"invoke_agent\"}},{\"key\":\"gen_ai.conversation.id\",\"value\":{\"stringValue\":"
    "\"conv-7\"}}],\"status\":{\"code\":\"STATUS_CODE_ERROR\",\"message\":\"tool failed\"}}]}]}]}";

static void test_json_equals_protobuf(void **state)
{
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    ingest_otlp_result rp, rj;
    tb b = {0};
    uint8_t *buf, *p1, *p2;
    size_t len, n1, n2;

    (void)state;
    build_two_spans(&b);
    buf = tb_pack(&b, &len);
    assert_int_equal(ingest_otlp_decode_protobuf(buf, len, &lim, &rp), EB_OK);
    free(buf);
    tb_free(&b);
    assert_int_equal(ingest_otlp_decode_json(json_two_spans, strlen(json_two_spans), &lim, &rj),
                     EB_OK);
    assert_int_equal(rp.ntraces, 1);
    assert_int_equal(rj.ntraces, 1);
    n1 = evalbus__v1__trace__get_packed_size(rp.traces[0]);
    n2 = evalbus__v1__trace__get_packed_size(rj.traces[0]);
    p1 = eb_malloc(n1 + 1);
    p2 = eb_malloc(n2 + 1);
    evalbus__v1__trace__pack(rp.traces[0], p1);
    evalbus__v1__trace__pack(rj.traces[0], p2);
    assert_int_equal(n1, n2);
    assert_memory_equal(p1, p2, n1);
    free(p1);
    free(p2);
    ingest_otlp_result_free(&rp);
    ingest_otlp_result_free(&rj);
}

/* JSON numbers with more digits than a double holds are read exactly: a time to the nanosecond,
 * an int attribute beyond 2^53 (kept as a string of its digits). And an empty bytes value. */
static void test_json_exact_integers(void **state)
{
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    static const char body[] =
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
        "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"root\",\"startTimeUnixNano\":"
        "1700000000123456789,\"endTimeUnixNano\":1700000001987654321,\"attributes\":[{\"key\":"
        "\"app.big\",\"value\":{\"intValue\":1234567890123456789}},{\"key\":\"app.empty\","
        "\"value\":{\"bytesValue\":\"\"}}]}]}]}]}";
    ingest_otlp_result r;
    const char *attrs;

    (void)state;
    assert_int_equal(ingest_otlp_decode_json(body, strlen(body), &lim, &r), EB_OK);
    assert_int_equal(r.ntraces, 1);
    assert_true(r.traces[0]->has_start_time_unix_nano);
    assert_int_equal(r.traces[0]->start_time_unix_nano, 1700000000123456789LL);
    assert_int_equal(r.traces[0]->end_time_unix_nano, 1700000001987654321LL);
    assert_int_equal(r.traces[0]->n_observations, 1);
    attrs = r.traces[0]->observations[0]->attributes_json;
    if (!attrs || !strstr(attrs, "\"app.big\":\"1234567890123456789\""))
        fail_msg("the span's attributes %s lack the exact int", attrs ? attrs : "(none)");
    /* empty bytes are an empty string (its base64), not whatever the buffer held */
    if (!strstr(attrs, "\"app.empty\":\"\""))
        fail_msg("the span's attributes %s lack the empty bytes", attrs);
    ingest_otlp_result_free(&r);
}

/* bytesValue in either base64 alphabet, padded or not, as the protobuf JSON mapping takes it;
 * stored as standard padded base64. */
static void test_json_bytes_forms(void **state)
{
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    static const char *const forms[] = {"+/8=", "+/8", "-_8=", "-_8"};
    ingest_otlp_result r;

    (void)state;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char body[512];
        const char *attrs;

        snprintf(body, sizeof body,
                 "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"" TRACE_A
                 "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"b\",\"attributes\":[{\"key\":"
                 "\"app.bytes\",\"value\":{\"bytesValue\":\"%s\"}}]}]}]}]}",
                 forms[i]);
        if (ingest_otlp_decode_json(body, strlen(body), &lim, &r) != EB_OK)
            fail_msg("bytesValue %s: %s", forms[i], eb_error_message());
        assert_int_equal(r.ntraces, 1);
        attrs = r.traces[0]->observations[0]->attributes_json;
        if (!attrs || !strstr(attrs, "\"app.bytes\":\"+/8=\""))
            fail_msg("bytesValue %s: attributes %s", forms[i], attrs ? attrs : "(none)");
        ingest_otlp_result_free(&r);
    }
}

/* An event's time in otel.events is a string of digits whatever its size: one that a double
 * holds exactly (a clock near the epoch), and one beyond int64 (a fixed64). */
static void test_event_time_digits(void **state)
{
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    ingest_otlp_result r;
    tb b = {0};
    otlp_span *s;
    uint8_t *buf;
    size_t len;
    const char *attrs;

    (void)state;
    tb_resource(&b, "svc");
    s = tb_span(&b, TRACE_A, SPAN_1, NULL, "clock", 1000, 2000);
    tb_event(&b, s, "early", 1500);
    tb_event(&b, s, "late", UINT64_MAX);
    buf = tb_pack(&b, &len);
    assert_int_equal(ingest_otlp_decode_protobuf(buf, len, &lim, &r), EB_OK);
    free(buf);
    tb_free(&b);
    assert_int_equal(r.ntraces, 1);
    attrs = r.traces[0]->observations[0]->attributes_json;
    assert_contains(attrs, "{\"name\":\"early\",\"time_unix_nano\":\"1500\"}");
    assert_contains(attrs, "{\"name\":\"late\",\"time_unix_nano\":\"18446744073709551615\"}");
    ingest_otlp_result_free(&r);
}

typedef struct bad_case {
    const char *bytes;
    size_t len;
    eb_status st;
    const char *why; /* expected in the error message */
} bad_case;

static void test_malformed_protobuf(void **state)
{
    static const bad_case cases[] = {
        /* length beyond the end */
        {"\x0a\x05\x12\x03", 4, EB_ERR_INVALID, "malformed protobuf: truncated"},
        {"\x0a", 1, EB_ERR_INVALID, "truncated"},
        /* unterminated varint */
        {"\x08\xff\xff\xff", 4, EB_ERR_INVALID, "truncated"},
        /* a varint of 11 bytes */
        {"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, EB_ERR_INVALID,
         "a varint longer than 10 bytes"},
        {"\x0b\x00", 2, EB_ERR_INVALID, "a group"},
        {"\x00\x01", 2, EB_ERR_INVALID, "a field number of 0"},
        /* inner length beyond its message */
        {"\x0a\x02\x12\x05", 4, EB_ERR_INVALID, "truncated"},
        /* wire type 7 inside a span list */
        {"\x0a\x03\x12\x01\x0f", 5, EB_ERR_INVALID, "wire type"},
    };
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    ingest_otlp_result r;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eb_status st =
            ingest_otlp_decode_protobuf((const uint8_t *)cases[i].bytes, cases[i].len, &lim, &r);
        if (st != cases[i].st)
            fail_msg("case %zu: %s", i, eb_status_str(st));
        /* the message says which problem it was, not a list of every possible one */
        assert_contains(eb_error_message(), cases[i].why);
        assert_lacks(eb_error_message(), "nested");
        ingest_otlp_result_free(&r);
    }
    /* an empty body is an empty request */
    assert_int_equal(ingest_otlp_decode_protobuf((const uint8_t *)"", 0, &lim, &r), EB_OK);
    assert_int_equal(r.ntraces, 0);
    ingest_otlp_result_free(&r);
}

/* Replaces every '~' of buf[0..len) by a NUL byte (protobuf-c packs C strings, so NULs go in
 * after packing). */
static void tilde_to_nul(uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '~')
            buf[i] = 0;
}

/* A NUL byte in a string rejects the span that holds it, or every span of the resource or the
 * scope that holds it, with a reason; the other spans are stored, and a NUL in a bytes value
 * is no problem. */
static void test_nul_in_strings(void **state)
{
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    tb b = {0};
    otlp_span *s;
    otlp_any *bytes = tb_any(&b, EVALBUS__OTLP__V1__ANY_VALUE__VALUE_BYTES_VALUE);
    ingest_otlp_result r;
    uint8_t *buf;
    size_t len;

    (void)state;
    bytes->bytes_value.data = (uint8_t *)tb_str(&b, "a~b");
    bytes->bytes_value.len = 3;
    /* resource 1: span 1 has a NUL in an attribute value; span 2 a NUL in a bytes value and
     * in nothing else; a second scope's name holds a NUL, so its span 3 goes too */
    tb_resource(&b, "svc");
    s = tb_span(&b, TRACE_A, SPAN_1, NULL, "root", T0, T0 + 1000);
    tb_attr_s(&b, s, "note", "cut~here");
    s = tb_span(&b, TRACE_A, SPAN_2, SPAN_1, "child", T0 + 10, T0 + 900);
    tb_attr(&b, s, "blob", bytes);
    {
        Evalbus__Otlp__V1__ScopeSpans *ss = tb_alloc(&b, sizeof *ss);
        Evalbus__Otlp__V1__InstrumentationScope *scope = tb_alloc(&b, sizeof *scope);
        Evalbus__Otlp__V1__ScopeSpans **list = tb_alloc(&b, 2 * sizeof *list);

        *ss = (Evalbus__Otlp__V1__ScopeSpans)EVALBUS__OTLP__V1__SCOPE_SPANS__INIT;
        *scope =
            (Evalbus__Otlp__V1__InstrumentationScope)EVALBUS__OTLP__V1__INSTRUMENTATION_SCOPE__INIT;
        scope->name = tb_str(&b, "lib~x");
        ss->scope = scope;
        ss->spans = tb_alloc(&b, TB_MAX_ITEMS * sizeof *ss->spans);
        list[0] = b.rs->scope_spans[0];
        list[1] = ss;
        b.rs->scope_spans = list;
        b.rs->n_scope_spans = 2;
        b.ss = ss;
        tb_span(&b, TRACE_A, SPAN_3, SPAN_1, "in the bad scope", T0 + 20, T0 + 800);
    }
    /* resource 2: its service name holds a NUL, so both its spans go */
    tb_resource(&b, "bad~svc");
    tb_span(&b, TRACE_B, SPAN_1, NULL, "other root", T0, T0 + 1000);
    tb_span(&b, TRACE_B, SPAN_2, SPAN_1, "other child", T0, T0 + 1000);
    /* resource 3: clean */
    tb_resource(&b, "good");
    tb_span(&b, TRACE_B, SPAN_3, NULL, "clean", T0, T0 + 1000);

    buf = tb_pack(&b, &len);
    tilde_to_nul(buf, len);
    assert_int_equal(ingest_otlp_decode_protobuf(buf, len, &lim, &r), EB_OK);
    assert_int_equal(r.rejected_spans, 4);
    assert_int_equal(r.spans, 2);
    assert_non_null(r.error_message);
    assert_contains(r.error_message, "span " SPAN_1 ": a string of the span, its resource or "
                                     "its scope holds a NUL byte");
    assert_contains(r.error_message, "span " SPAN_3 ": ");
    assert_int_equal(r.ntraces, 2);
    /* what is stored is whole: the child with its bytes, and the clean span */
    assert_str(r.traces[0]->id, TRACE_A);
    assert_int_equal(r.traces[0]->n_observations, 1);
    assert_str(r.traces[0]->observations[0]->name, "child");
    assert_contains(r.traces[0]->observations[0]->attributes_json, "\"blob\"");
    assert_str(r.traces[1]->id, TRACE_B);
    assert_int_equal(r.traces[1]->n_observations, 1);
    assert_str(r.traces[1]->observations[0]->name, "clean");
    ingest_otlp_result_free(&r);
    free(buf);
    tb_free(&b);
}

/* Prepends a length-delimited field header (tag, length of buf[0..*len)) to buf. */
static void wrap_field(uint8_t *buf, size_t *len, size_t cap, uint8_t tag)
{
    uint8_t hdr[12];
    size_t h = 0, inner = *len;

    hdr[h++] = tag;
    do {
        hdr[h++] = (uint8_t)((inner & 0x7f) | (inner > 0x7f ? 0x80 : 0));
        inner >>= 7;
    } while (inner);
    assert_true(*len + h <= cap);
    memmove(buf + h, buf, *len);
    memcpy(buf, hdr, h);
    *len += h;
}

/* AnyValue arrays nested 10000 deep in a span attribute: refused before protobuf-c recurses. */
static void test_deep_protobuf(void **state)
{
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    enum { LEVELS = 10000 };
    static const uint8_t outer[] = {
        0x12, /* KeyValue.value */
        0x4a, /* Span.attributes */
        0x12, /* ScopeSpans.spans */
        0x12, /* ResourceSpans.scope_spans */
        0x0a, /* ExportTraceServiceRequest.resource_spans */
    };
    size_t cap = LEVELS * 4 + 64, len = 0;
    uint8_t *buf = eb_malloc(cap);
    ingest_otlp_result r;

    (void)state;
    /* inside out: ArrayValue.values (1) and AnyValue.array_value (5) in turn */
    for (int i = 0; i < LEVELS; i++)
        wrap_field(buf, &len, cap, i % 2 ? 0x2a : 0x0a);
    for (size_t i = 0; i < sizeof outer; i++)
        wrap_field(buf, &len, cap, outer[i]);
    assert_int_equal(ingest_otlp_decode_protobuf(buf, len, &lim, &r), EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "nested"));
    assert_null(strstr(eb_error_message(), "NUL"));
    ingest_otlp_result_free(&r);

    /* 20 levels are fine */
    len = 0;
    for (int i = 0; i < 20; i++)
        wrap_field(buf, &len, cap, i % 2 ? 0x2a : 0x0a);
    for (size_t i = 0; i < sizeof outer; i++)
        wrap_field(buf, &len, cap, outer[i]);
    assert_int_equal(ingest_otlp_decode_protobuf(buf, len, &lim, &r), EB_OK);
    assert_int_equal(r.rejected_spans, 1); /* it has no ids */
    ingest_otlp_result_free(&r);
    free(buf);
}

/* A small body of empty spans would decode to far more memory than it is long: refused. */
static void test_decoded_size_cap(void **state)
{
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    enum { SPANS = 200000 };
    size_t cap = SPANS * 2 + 64, len = 0;
    uint8_t *buf = eb_malloc(cap);
    ingest_otlp_result r;

    (void)state;
    for (int i = 0; i < SPANS; i++) {
        buf[len++] = 0x12; /* ScopeSpans.spans, an empty Span */
        buf[len++] = 0x00;
    }
    wrap_field(buf, &len, cap, 0x12); /* ResourceSpans.scope_spans */
    wrap_field(buf, &len, cap, 0x0a); /* ExportTraceServiceRequest.resource_spans */
    assert_int_equal(ingest_otlp_decode_protobuf(buf, len, &lim, &r), EB_ERR_TOO_LARGE);
    ingest_otlp_result_free(&r);
    free(buf);
}

/* Appends field tag with src[0..n) as its bytes (a length-delimited field) to dst. */
static void put_field(eb_buf *dst, uint8_t tag, const void *src, size_t n)
{
    size_t v = n;

    eb_buf_putc(dst, (char)tag);
    do {
        eb_buf_putc(dst, (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)));
        v >>= 7;
    } while (v);
    eb_buf_append(dst, src, n);
}

/* An ExportTraceServiceRequest of spans spans of one trace, each with attribute "v": an array
 * of n values, each the AnyValue bytes elem[0..elen) (elen 0: an empty AnyValue). */
static void array_request(eb_buf *req, int spans, int n, const uint8_t *elem, size_t elen)
{
    eb_buf arr = {0}, any = {0}, kv = {0}, span = {0}, ss = {0}, rs = {0};
    uint8_t trace[16], id[8], t[8];

    memset(trace, 0xab, sizeof trace);
    for (int i = 0; i < n; i++)
        put_field(&arr, 0x0a, elem, elen);    /* ArrayValue.values */
    put_field(&any, 0x2a, arr.data, arr.len); /* AnyValue.array_value */
    put_field(&kv, 0x0a, "v", 1);             /* KeyValue.key */
    put_field(&kv, 0x12, any.data, any.len);  /* KeyValue.value */
    for (int s = 0; s < spans; s++) {
        uint64_t ns = T0 + (uint64_t)s;

        eb_buf_reset(&span);
        memset(id, 0, sizeof id);
        id[0] = 1;
        id[7] = (uint8_t)(s + 1);
        put_field(&span, 0x0a, trace, sizeof trace); /* trace_id */
        put_field(&span, 0x12, id, sizeof id);       /* span_id */
        put_field(&span, 0x2a, "step", 4);           /* name */
        for (int b = 0; b < 8; b++)
            t[b] = (uint8_t)(ns >> (8 * b));
        eb_buf_putc(&span, 0x39); /* start_time_unix_nano, fixed64 */
        eb_buf_append(&span, t, 8);
        eb_buf_putc(&span, 0x41); /* end_time_unix_nano */
        eb_buf_append(&span, t, 8);
        put_field(&span, 0x4a, kv.data, kv.len);   /* attributes */
        put_field(&ss, 0x12, span.data, span.len); /* ScopeSpans.spans */
    }
    put_field(&rs, 0x12, ss.data, ss.len); /* ResourceSpans.scope_spans */
    eb_buf_reset(req);
    put_field(req, 0x0a, rs.data, rs.len); /* resource_spans */
    eb_buf_free(&arr);
    eb_buf_free(&any);
    eb_buf_free(&kv);
    eb_buf_free(&span);
    eb_buf_free(&ss);
    eb_buf_free(&rs);
}

/* Arrays of small values (4-5 bytes an element on the wire, 21-34 times that decoded) are
 * taken whole; an array of a great many empty values is refused. */
static void test_decoded_small_arrays(void **state)
{
    static const uint8_t flag[] = {0x10, 0x01}, token[] = {0x18, 0x2a}, letter[] = {0x0a, 1, 'a'},
                         empty_string[] = {0x0a, 0x00};
    static const struct {
        const uint8_t *elem;
        size_t len;
        const char *json_start;
    } ok[] = {{flag, sizeof flag, "[true,true,"},
              {token, sizeof token, "[42,42,"},
              {letter, sizeof letter, "[\"a\",\"a\","},
              {empty_string, sizeof empty_string, "[\"\",\"\","}};
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    eb_buf req = {0};
    ingest_otlp_result r;

    (void)state;
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        const Evalbus__V1__Observation *o;

        array_request(&req, 100, 500, ok[k].elem, ok[k].len);
        assert_int_equal(ingest_otlp_decode_protobuf((const uint8_t *)req.data, req.len, &lim, &r),
                         EB_OK);
        assert_int_equal(r.rejected_spans, 0);
        assert_int_equal(r.ntraces, 1);
        assert_int_equal(r.traces[0]->n_observations, 100);
        o = r.traces[0]->observations[0];
        assert_non_null(o->attributes_json);
        assert_contains(o->attributes_json, ok[k].json_start);
        ingest_otlp_result_free(&r);
    }
    /* 3,200,000 flags: 12.8 MB that would decode to some 290 MB, over the bound of one
     * request whatever its size */
    array_request(&req, 1, 3200000, flag, sizeof flag);
    assert_int_equal(ingest_otlp_decode_protobuf((const uint8_t *)req.data, req.len, &lim, &r),
                     EB_ERR_TOO_LARGE);
    assert_contains(eb_error_message(), "more than 256 MiB");
    ingest_otlp_result_free(&r);
    /* 600,000 empty AnyValues: 2 bytes each on the wire, some 90 decoded */
    array_request(&req, 1, 600000, NULL, 0);
    assert_int_equal(ingest_otlp_decode_protobuf((const uint8_t *)req.data, req.len, &lim, &r),
                     EB_ERR_TOO_LARGE);
    assert_contains(eb_error_message(), "40 times its size");
    ingest_otlp_result_free(&r);
    eb_buf_free(&req);
}

/* A span whose id is all zeros is named by its position: the id names nothing. */
static void test_zero_span_id_named_by_position(void **state)
{
    static const char body[] =
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
        "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"" SPAN_1 "\",\"name\":\"good\"},"
        "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"0000000000000000\",\"name\":\"a\"},"
        "{\"traceId\":\"" TRACE_A "\",\"spanId\":\"0000000000000000\",\"name\":\"b\"}"
        "]}]}]}";
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    ingest_otlp_result r;

    (void)state;
    assert_int_equal(ingest_otlp_decode_json(body, strlen(body), &lim, &r), EB_OK);
    assert_int_equal(r.rejected_spans, 2);
    assert_contains(r.error_message, "span #2: span id is all zeros");
    assert_contains(r.error_message, "span #3: span id is all zeros");
    assert_lacks(r.error_message, "span 0000000000000000");
    ingest_otlp_result_free(&r);
}

static void test_malformed_json(void **state)
{
    static const char *const cases[] = {
        "{",
        "[]",
        "",
        "{\"resourceSpans\":5}",
        "{\"resourceSpans\":[5]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[\"x\"]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"startTimeUnixNano\":\"soon\"}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"startTimeUnixNano\":-1}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":7}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"attributes\":[{\"key\":\"k\","
        "\"value\":{\"intValue\":\"1.5\"}}]}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"attributes\":[{\"key\":\"k\","
        "\"value\":{\"bytesValue\":\"!!\"}}]}]}]}]}",
        /* an int64 cannot hold 2^63 (a number, not wrapped to a negative one) */
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"attributes\":[{\"key\":\"k\","
        "\"value\":{\"intValue\":1e19}}]}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"attributes\":[{\"key\":\"k\","
        "\"value\":{\"stringValue\":\"\xff\"}}]}]}]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"kind\":\"SPAN_KIND_NOPE\"}]}]}]}",
        "{\"resourceSpans\":[]} x",
    };
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    ingest_otlp_result r;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eb_status st = ingest_otlp_decode_json(cases[i], strlen(cases[i]), &lim, &r);
        if (st != EB_ERR_INVALID)
            fail_msg("case %zu: %s", i, eb_status_str(st));
        ingest_otlp_result_free(&r);
    }
    /* the path of the bad value is named */
    assert_int_equal(ingest_otlp_decode_json(cases[6], strlen(cases[6]), &lim, &r), EB_ERR_INVALID);
    assert_non_null(
        strstr(eb_error_message(), "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano"));
    ingest_otlp_result_free(&r);
}

/* A JSON body that gives a member twice is refused naming it, cut to 100 bytes: never inside a
 * UTF-8 character (the message goes to a Status, whose message must be valid UTF-8). */
static void test_repeated_member_message_utf8(void **state)
{
    const ingest_limits lim = INGEST_LIMITS_DEFAULT;
    char name[128], body[512];
    ingest_otlp_result r;
    const char *msg;

    (void)state;
    memset(name, 'a', 99);
    strcpy(name + 99, "\xc3\xa9\xc3\xa9"); /* "éé" from byte 99 */
    snprintf(body, sizeof body, "{\"resourceSpans\":[],\"x\":{\"%s\":1,\"%s\":2}}", name, name);
    assert_int_equal(ingest_otlp_decode_json(body, strlen(body), &lim, &r), EB_ERR_INVALID);
    msg = eb_error_message();
    assert_contains(msg, "aaaaaaaa");
    assert_contains(msg, "twice");
    if (!eb_utf8_valid(msg, strlen(msg)))
        fail_msg("the message is not valid UTF-8: %s", msg);
    ingest_otlp_result_free(&r);
}

static void test_response(void **state)
{
    ingest_otlp_result ok = {0}, partial = {0};
    eb_buf b = {0};
    Evalbus__Otlp__V1__ExportTraceServiceResponse *resp;

    (void)state;
    partial.rejected_spans = 2;
    partial.error_message = (char *)"span #1: \"bad\"";

    ingest_otlp_response_json(&ok, &b);
    assert_string_equal(b.data, "{}");
    eb_buf_reset(&b);
    ingest_otlp_response_json(&partial, &b);
    assert_string_equal(b.data, "{\"partialSuccess\":{\"rejectedSpans\":\"2\",\"errorMessage\":"
                                "\"span #1: \\\"bad\\\"\"}}");
    eb_buf_reset(&b);
    ingest_otlp_response_protobuf(&ok, &b);
    assert_int_equal(b.len, 0);
    ingest_otlp_response_protobuf(&partial, &b);
    resp = evalbus__otlp__v1__export_trace_service_response__unpack(NULL, b.len,
                                                                    (const uint8_t *)b.data);
    assert_non_null(resp);
    assert_non_null(resp->partial_success);
    assert_int_equal(resp->partial_success->rejected_spans, 2);
    assert_string_equal(resp->partial_success->error_message, "span #1: \"bad\"");
    evalbus__otlp__v1__export_trace_service_response__free_unpacked(resp, NULL);
    eb_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_flat_part_url_and_text),
        cmocka_unit_test(test_flat_content_and_one_part),
        cmocka_unit_test(test_flat_key_twice),
        cmocka_unit_test(test_flat_role_dropped_stays),
        cmocka_unit_test(test_json_equals_protobuf),
        cmocka_unit_test(test_json_exact_integers),
        cmocka_unit_test(test_json_bytes_forms),
        cmocka_unit_test(test_event_time_digits),
        cmocka_unit_test(test_malformed_protobuf),
        cmocka_unit_test(test_nul_in_strings),
        cmocka_unit_test(test_deep_protobuf),
        cmocka_unit_test(test_decoded_size_cap),
        cmocka_unit_test(test_decoded_small_arrays),
        cmocka_unit_test(test_zero_span_id_named_by_position),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_repeated_member_message_utf8),
        cmocka_unit_test(test_response),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
