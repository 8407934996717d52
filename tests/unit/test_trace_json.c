/* test_trace_json.c -- the JSON batch API's trace format: parsing into evalbus.v1.Trace, the
 * errors (status and field path), limits, unknown fields, validation of protobuf traces, and
 * the JSON output functions (which must parse back and hold the values). */
#include "trace_json.h"

#include "evalbus/crypto.h"
#include "evalbus/json.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const char full_example[] =
    "{\"id\": \"t-123\", \"project\": \"support-bot\", \"name\": \"answer\", \"model\": \"gpt-4o\","
    " \"provider\": \"openai\", \"status\": \"ok\", \"start_time\": \"2026-11-22T10:00:00Z\","
    " \"end_time\": \"2026-11-22T10:00:01.2Z\", \"latency_ms\": 1200,"
    " \"usage\": {\"input_tokens\": 120, \"output_tokens\": 40, \"total_tokens\": 160},"
    " \"cost_usd\": 0.0012,"
    " \"input\": {\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    "   {\"role\": \"user\", \"content\": [{\"type\":\"text\",\"text\":\"What is this?\"},"
    "     {\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/a.png\"}}]}]},"
    " \"output\": {\"messages\": [{\"role\": \"assistant\", \"content\": \"A cat.\","
    "   \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\":"
    "   \"lookup\", \"arguments\": \"{\\\"q\\\": 1}\"}}]}]},"
    " \"tool_calls\": [{\"id\":\"c1\",\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\": 1}\","
    "   \"result\":\"found\",\"start_time\":\"2026-11-22T10:00:00.5Z\","
    "   \"end_time\":\"2026-11-22T10:00:00.75Z\"}],"
    " \"metadata\": {\"customer_tier\": \"gold\"}, \"tags\": [\"prod\", \"v2\"],"
    " \"session_id\": \"s-9\", \"user_id\": \"u-7\", \"environment\": \"prod\","
    " \"release\": \"1.2.3\", \"status_message\": \"fine\","
    " \"observations\": [{\"id\":\"o1\",\"parent_id\":null,\"type\":\"generation\","
    "   \"name\":\"llm\",\"start_time\":\"2026-11-22T10:00:00.1Z\","
    "   \"end_time\":\"2026-11-22T10:00:01Z\",\"model\":\"gpt-4o\",\"provider\":\"openai\","
    "   \"usage\":{\"input_tokens\":100,\"output_tokens\":30},\"cost_usd\":0.001,"
    "   \"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]},"
    "   \"output\":\"hello\",\"tool_calls\":[{\"id\":\"c2\",\"name\":\"f\"}],"
    "   \"status\":\"error\",\"status_message\":\"boom\",\"metadata\":{\"k\":1}},"
    "  {\"id\":\"o2\",\"parent_id\":\"o1\",\"type\":\"tool\",\"name\":\"lookup\"}]}";

static cJSON *parse_doc(const char *text)
{
    cJSON *doc = NULL;

    if (eb_json_parse_object(text, strlen(text), &doc) != EB_OK)
        fail_msg("test document does not parse: %s\n%s", eb_error_message(), text);
    return doc;
}

/* Parses text with lim (default limits when NULL); fails the test on error. */
static Evalbus__V1__Trace *parse_ok(const char *text, const ingest_limits *lim)
{
    ingest_limits def = INGEST_LIMITS_DEFAULT;
    Evalbus__V1__Trace *t = NULL;
    cJSON *doc = parse_doc(text);
    eb_status st = ingest_trace_from_json(doc, lim ? lim : &def, &t);

    if (st != EB_OK)
        fail_msg("ingest_trace_from_json: %s: %s\n%s", eb_status_str(st), eb_error_message(), text);
    cJSON_Delete(doc);
    return t;
}

static long long ts(const char *s)
{
    long long ns = 0;

    if (!ingest_time_parse(s, &ns))
        fail_msg("bad test timestamp %s", s);
    return ns;
}

/* A whole number is a token count however it is written, also with more digits than a
 * double keeps (then its text decides). */
static void test_whole_token_counts(void **state)
{
    Evalbus__V1__Trace *t =
        parse_ok("{\"id\":\"w\",\"usage\":{\"input_tokens\":120.00000000000000000,"
                 "\"output_tokens\":1.2000000000000000000e1,"
                 "\"total_tokens\":13200000000000000000e-17}}",
                 NULL);

    (void)state;
    assert_true(t->has_input_tokens);
    assert_int_equal(t->input_tokens, 120);
    assert_int_equal(t->output_tokens, 12);
    assert_int_equal(t->total_tokens, 132);
    evalbus__v1__trace__free_unpacked(t, NULL);
}

static void test_full_example(void **state)
{
    Evalbus__V1__Trace *t = parse_ok(full_example, NULL);
    const Evalbus__V1__Message *m;
    const Evalbus__V1__ToolCall *tc;
    const Evalbus__V1__Observation *o;

    (void)state;
    assert_string_equal(t->id, "t-123");
    assert_string_equal(t->project, "support-bot");
    assert_string_equal(t->name, "answer");
    assert_string_equal(t->model, "gpt-4o");
    assert_string_equal(t->provider, "openai");
    assert_string_equal(t->status, "ok");
    assert_string_equal(t->status_message, "fine");
    assert_true(t->has_start_time_unix_nano);
    assert_true(t->start_time_unix_nano == 1795341600000000000LL);
    assert_true(t->end_time_unix_nano == 1795341601200000000LL);
    assert_true(t->has_latency_ms && t->latency_ms == 1200.0);
    assert_true(t->has_input_tokens && t->input_tokens == 120);
    assert_true(t->has_output_tokens && t->output_tokens == 40);
    assert_true(t->has_total_tokens && t->total_tokens == 160);
    assert_true(t->has_cost_usd && t->cost_usd == 0.0012);

    assert_int_equal(t->n_input_messages, 2);
    m = t->input_messages[0];
    assert_string_equal(m->role, "system");
    assert_string_equal(m->content, "Be brief.");
    assert_int_equal(m->n_parts, 0);
    m = t->input_messages[1];
    assert_string_equal(m->role, "user");
    assert_string_equal(m->content, "What is this?");
    assert_int_equal(m->n_parts, 2);
    assert_string_equal(m->parts[0]->type, "text");
    assert_string_equal(m->parts[0]->text, "What is this?");
    assert_null(m->parts[0]->json);
    assert_string_equal(m->parts[1]->type, "image_url");
    assert_string_equal(m->parts[1]->url, "https://x.test/a.png");
    assert_non_null(m->parts[1]->json);
    assert_null(t->input_text);

    assert_int_equal(t->n_output_messages, 1);
    m = t->output_messages[0];
    assert_string_equal(m->role, "assistant");
    assert_string_equal(m->content, "A cat.");
    assert_int_equal(m->n_tool_calls, 1);
    tc = m->tool_calls[0];
    assert_string_equal(tc->id, "c1");
    assert_string_equal(tc->type, "function");
    assert_string_equal(tc->name, "lookup");
    assert_string_equal(tc->arguments, "{\"q\": 1}");

    assert_int_equal(t->n_tool_calls, 1);
    tc = t->tool_calls[0];
    assert_string_equal(tc->id, "c1");
    assert_null(tc->type);
    assert_string_equal(tc->name, "lookup");
    assert_string_equal(tc->arguments, "{\"q\": 1}");
    assert_string_equal(tc->result, "found");
    assert_true(tc->has_start_time_unix_nano &&
                tc->start_time_unix_nano == ts("2026-11-22T10:00:00.5Z"));
    assert_true(tc->has_end_time_unix_nano &&
                tc->end_time_unix_nano == ts("2026-11-22T10:00:00.75Z"));

    assert_string_equal(t->metadata_json, "{\"customer_tier\":\"gold\"}");
    assert_int_equal(t->n_tags, 2);
    assert_string_equal(t->tags[0], "prod");
    assert_string_equal(t->tags[1], "v2");
    assert_string_equal(t->session_id, "s-9");
    assert_string_equal(t->user_id, "u-7");
    assert_string_equal(t->environment, "prod");
    assert_string_equal(t->release, "1.2.3");
    assert_null(t->attributes_json);

    assert_int_equal(t->n_observations, 2);
    o = t->observations[0];
    assert_string_equal(o->id, "o1");
    assert_null(o->parent_id);
    assert_string_equal(o->type, "generation");
    assert_string_equal(o->name, "llm");
    assert_true(o->start_time_unix_nano == ts("2026-11-22T10:00:00.1Z"));
    assert_true(o->end_time_unix_nano == ts("2026-11-22T10:00:01Z"));
    assert_string_equal(o->model, "gpt-4o");
    assert_string_equal(o->provider, "openai");
    assert_true(o->has_input_tokens && o->input_tokens == 100);
    assert_true(o->has_output_tokens && o->output_tokens == 30);
    assert_true(o->has_cost_usd && o->cost_usd == 0.001);
    assert_int_equal(o->n_input_messages, 1);
    assert_string_equal(o->input_messages[0]->content, "hi");
    assert_string_equal(o->output_text, "hello");
    assert_int_equal(o->n_tool_calls, 1);
    assert_string_equal(o->tool_calls[0]->name, "f");
    assert_string_equal(o->status, "error");
    assert_string_equal(o->status_message, "boom");
    assert_string_equal(o->metadata_json, "{\"k\":1}");
    assert_null(o->attributes_json);
    o = t->observations[1];
    assert_string_equal(o->parent_id, "o1");
    assert_string_equal(o->type, "tool");
    assert_string_equal(o->status, "unset");

    /* the tree is a valid protobuf message, and it meets the protobuf rules too */
    assert_int_equal(ingest_trace_validate(t, &INGEST_LIMITS_DEFAULT), EB_OK);
    evalbus__v1__trace__free_unpacked(t, NULL);
}

static void test_defaults_and_derived(void **state)
{
    Evalbus__V1__Trace *t =
        parse_ok("{\"start_time\":\"2026-11-22T10:00:00Z\",\"end_time\":\"2026-11-22T10:00:02."
                 "5Z\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4},"
                 "\"observations\":[{\"name\":\"a\"},{\"name\":\"b\",\"parent_id\":\"x\"}]}",
                 NULL);
    Evalbus__V1__Trace *again;
    char id0[64], id1[64];

    (void)state;
    assert_true(eb_uuid_valid(t->id));
    assert_string_equal(t->status, "unset");
    assert_true(t->has_latency_ms && t->latency_ms == 2500.0);
    assert_true(t->input_tokens == 3 && t->output_tokens == 4);
    assert_true(t->has_total_tokens && t->total_tokens == 7);
    assert_string_equal(t->observations[0]->type, "span");
    assert_string_equal(t->observations[0]->status, "unset");
    assert_true(eb_uuid_valid(t->observations[0]->id));
    assert_true(eb_uuid_valid(t->observations[1]->id));
    assert_string_not_equal(t->observations[0]->id, t->observations[1]->id);
    evalbus__v1__trace__free_unpacked(t, NULL);

    /* a missing observation id is derived from the trace id and index: stable on resend */
    t = parse_ok("{\"id\":\"t1\",\"observations\":[{},{}]}", NULL);
    again = parse_ok("{\"id\":\"t1\",\"observations\":[{},{}]}", NULL);
    strcpy(id0, t->observations[0]->id);
    strcpy(id1, t->observations[1]->id);
    assert_string_equal(id0, again->observations[0]->id);
    assert_string_equal(id1, again->observations[1]->id);
    assert_string_not_equal(id0, id1);
    assert_true(eb_uuid_valid(id0));
    evalbus__v1__trace__free_unpacked(t, NULL);
    evalbus__v1__trace__free_unpacked(again, NULL);

    /* two traces without ids get different ones */
    t = parse_ok("{}", NULL);
    again = parse_ok("{}", NULL);
    assert_string_not_equal(t->id, again->id);
    evalbus__v1__trace__free_unpacked(t, NULL);
    evalbus__v1__trace__free_unpacked(again, NULL);
}

static void test_input_shapes(void **state)
{
    Evalbus__V1__Trace *t;

    (void)state;
    t = parse_ok("{\"input\":\"plain\",\"output\":{\"text\":\"out\"}}", NULL);
    assert_string_equal(t->input_text, "plain");
    assert_string_equal(t->output_text, "out");
    assert_int_equal(t->n_input_messages, 0);
    evalbus__v1__trace__free_unpacked(t, NULL);

    t = parse_ok("{\"input\":[{\"role\":\"user\",\"content\":\"q\"}],"
                 "\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":null,"
                 "\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}"
                 "}]}],\"text\":\"also\"}}",
                 NULL);
    assert_int_equal(t->n_input_messages, 1);
    assert_string_equal(t->input_messages[0]->content, "q");
    assert_int_equal(t->n_output_messages, 1);
    assert_null(t->output_messages[0]->content);
    assert_string_equal(t->output_messages[0]->tool_calls[0]->name, "f");
    assert_string_equal(t->output_text, "also");
    evalbus__v1__trace__free_unpacked(t, NULL);

    /* any other JSON value is kept as its JSON text */
    t = parse_ok("{\"input\":{\"question\":\"why\",\"n\":2},\"output\":42}", NULL);
    assert_string_equal(t->input_text, "{\"question\":\"why\",\"n\":2}");
    assert_string_equal(t->output_text, "42");
    evalbus__v1__trace__free_unpacked(t, NULL);

    /* an object with a "text" or "messages" member of another type is such a value too: its
     * other members are part of it, not attributes of the trace */
    t = parse_ok("{\"input\":{\"text\":null,\"q\":1},\"output\":{\"messages\":7,\"ok\":true}}",
                 NULL);
    assert_string_equal(t->input_text, "{\"text\":null,\"q\":1}");
    assert_string_equal(t->output_text, "{\"messages\":7,\"ok\":true}");
    assert_int_equal(t->n_input_messages, 0);
    assert_null(t->attributes_json);
    evalbus__v1__trace__free_unpacked(t, NULL);
    /* the form's own members alone stay the form: no text */
    t = parse_ok("{\"input\":{\"text\":null}}", NULL);
    assert_null(t->input_text);
    evalbus__v1__trace__free_unpacked(t, NULL);
}

static void test_content_parts(void **state)
{
    Evalbus__V1__Trace *t = parse_ok(
        "{\"input\":{\"messages\":[{\"role\":\"user\",\"name\":\"ann\",\"content\":["
        "{\"type\":\"text\",\"text\":\"first\"},"
        "\"second\","
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAA\","
        "\"detail\":\"high\"}},"
        "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"UklG\",\"format\":\"wav\"}},"
        "{\"type\":\"text\",\"text\":\"third\",\"cache_control\":{\"type\":\"ephemeral\"}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"https://i\"}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}]}}",
        NULL);
    const Evalbus__V1__Message *m = t->input_messages[0];
    cJSON *part;

    (void)state;
    assert_string_equal(m->name, "ann");
    assert_string_equal(m->content, "first\nsecond\nthird");
    assert_int_equal(m->n_parts, 5);
    assert_string_equal(m->parts[0]->type, "text");
    assert_string_equal(m->parts[0]->text, "first");
    assert_null(m->parts[0]->json);
    assert_string_equal(m->parts[1]->type, "text");
    assert_string_equal(m->parts[1]->text, "second");
    assert_string_equal(m->parts[2]->type, "image_url");
    assert_string_equal(m->parts[2]->url, "data:image/png;base64,AAA");
    part = parse_doc(m->parts[2]->json);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(part, "image_url"), "detail")->valuestring, "high");
    cJSON_Delete(part);
    assert_string_equal(m->parts[3]->type, "input_audio");
    assert_null(m->parts[3]->text);
    assert_null(m->parts[3]->url);
    assert_string_equal(m->parts[3]->json,
                        "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"UklG\","
                        "\"format\":\"wav\"}}");
    assert_string_equal(m->parts[4]->text, "third");
    assert_non_null(strstr(m->parts[4]->json, "ephemeral"));

    m = t->input_messages[1];
    assert_null(m->content); /* no text parts */
    assert_string_equal(m->parts[0]->url, "https://i");
    m = t->input_messages[2];
    assert_string_equal(m->role, "tool");
    assert_string_equal(m->tool_call_id, "c1");
    evalbus__v1__trace__free_unpacked(t, NULL);
}

static void test_tool_calls(void **state)
{
    Evalbus__V1__Trace *t = parse_ok(
        "{\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"search\","
        "\"arguments\":{\"q\":\"cats\",\"n\":3,\"deep\":{\"x\":[1,2]}}},\"result\":{\"hits\":2}},"
        "{\"name\":\"flat\",\"arguments\":{\"k\":\"v\"},\"result\":\"plain\","
        "\"start_time\":\"2026-01-01T00:00:00+01:00\",\"end_time\":\"2025-12-31T23:00:01Z\"}],"
        "\"output\":{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"x\","
        "\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":{}}}]}]}}",
        NULL);
    const Evalbus__V1__ToolCall *tc = t->tool_calls[0];

    (void)state;
    assert_int_equal(t->n_tool_calls, 2);
    assert_string_equal(tc->id, "a");
    assert_string_equal(tc->name, "search");
    assert_string_equal(tc->arguments, "{\"q\":\"cats\",\"n\":3,\"deep\":{\"x\":[1,2]}}");
    assert_string_equal(tc->result, "{\"hits\":2}");
    tc = t->tool_calls[1];
    assert_string_equal(tc->name, "flat");
    assert_string_equal(tc->arguments, "{\"k\":\"v\"}");
    assert_string_equal(tc->result, "plain");
    assert_true(tc->start_time_unix_nano == ts("2025-12-31T23:00:00Z"));
    assert_true(tc->end_time_unix_nano - tc->start_time_unix_nano == 1000000000LL);
    tc = t->output_messages[0]->tool_calls[0];
    assert_string_equal(tc->arguments, "{}");
    assert_null(t->output_messages[0]->content);
    evalbus__v1__trace__free_unpacked(t, NULL);
}

static void test_unknown_fields_kept(void **state)
{
    Evalbus__V1__Trace *t = parse_ok(
        "{\"id\":\"u\",\"team_hint\":\"x\",\"temperature\":0.5,\"nested\":{\"a\":[1]},"
        "\"dropped\":null,"
        "\"usage\":{\"input_tokens\":1,\"cache_read_tokens\":9},"
        "\"output\":{\"messages\":[{\"role\":\"assistant\",\"content\":\"c\",\"refusal\":null,"
        "\"annotations\":[\"n\"]}]},"
        "\"observations\":[{\"id\":\"o\",\"latency_ms\":5,\"usage\":{\"total_tokens\":3},"
        "\"tool_calls\":[{\"id\":\"t\",\"function\":{\"name\":\"f\",\"strict\":true}}]}]}",
        NULL);
    cJSON *attrs = parse_doc(t->attributes_json);
    cJSON *oattrs = parse_doc(t->observations[0]->attributes_json);
    cJSON *it;

    (void)state;
    assert_string_equal(cJSON_GetObjectItem(attrs, "team_hint")->valuestring, "x");
    assert_true(cJSON_GetObjectItem(attrs, "temperature")->valuedouble == 0.5);
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(cJSON_GetObjectItem(attrs, "nested"), "a")));
    assert_null(cJSON_GetObjectItem(attrs, "dropped")); /* null is the same as absent */
    it = cJSON_GetObjectItem(attrs, "usage");
    assert_int_equal(cJSON_GetObjectItem(it, "cache_read_tokens")->valueint, 9);
    it = cJSON_GetObjectItem(attrs, "output.messages[0]");
    assert_non_null(it);
    assert_null(cJSON_GetObjectItem(it, "refusal"));
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(it, "annotations"), 0)->valuestring,
                        "n");
    assert_true(t->input_tokens == 1);

    assert_int_equal(cJSON_GetObjectItem(oattrs, "latency_ms")->valueint, 5);
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(oattrs, "usage"), "total_tokens")->valueint, 3);
    it = cJSON_GetObjectItem(oattrs, "tool_calls[0].function");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(it, "strict")));
    cJSON_Delete(attrs);
    cJSON_Delete(oattrs);
    evalbus__v1__trace__free_unpacked(t, NULL);
}

typedef struct error_case {
    const char *json;
    eb_status st;
    const char *message; /* must appear in the error message */
} error_case;

static void check_error_cases(const error_case *cases, size_t n, const ingest_limits *lim)
{
    for (size_t i = 0; i < n; i++) {
        Evalbus__V1__Trace *t = (Evalbus__V1__Trace *)1;
        cJSON *doc = parse_doc(cases[i].json);
        eb_status st;

        eb_error_clear();
        st = ingest_trace_from_json(doc, lim, &t);
        cJSON_Delete(doc);
        if (st != cases[i].st)
            fail_msg("case %zu (%s): status %s (%s), want %s", i, cases[i].json, eb_status_str(st),
                     eb_error_message(), eb_status_str(cases[i].st));
        if (t != NULL)
            fail_msg("case %zu: *out is not NULL after an error", i);
        if (!strstr(eb_error_message(), cases[i].message))
            fail_msg("case %zu (%s): message '%s' lacks '%s'", i, cases[i].json, eb_error_message(),
                     cases[i].message);
    }
}

static void test_errors(void **state)
{
    static const error_case cases[] = {
        /* wrong types */
        {"{\"id\":5}", EB_ERR_INVALID, "id must be a string"},
        {"{\"id\":\"\"}", EB_ERR_INVALID, "id must not be empty"},
        {"{\"id\":\"a\\u0001b\"}", EB_ERR_INVALID, "id must not contain control characters"},
        {"{\"id\":\"a\\u0085b\"}", EB_ERR_INVALID, "id must not contain control characters"},
        /* read at /api/v1/traces/{id}: the edge resolves "." and ".." segments ("/" as %2F) */
        {"{\"id\":\"..\"}", EB_ERR_INVALID, "id must not be '.' or '..'"},
        {"{\"id\":\"../x\"}", EB_ERR_INVALID, "nor have such a segment between slashes"},
        {"{\"id\":\"a/./b\"}", EB_ERR_INVALID, "nor have such a segment between slashes"},
        {"{\"id\":\"a/..\"}", EB_ERR_INVALID, "nor have such a segment between slashes"},
        {"{\"id\":\"a/..b/.c./...\"}", EB_OK, ""},
        {"{\"name\":\"a\\nb\"}", EB_ERR_INVALID, "name must not contain control"},
        {"{\"project\":[]}", EB_ERR_INVALID, "project must be a string"},
        {"{\"tags\":\"prod\"}", EB_ERR_INVALID, "tags must be an array"},
        {"{\"tags\":[\"a\",3]}", EB_ERR_INVALID, "tags[1] must be a string"},
        {"{\"tags\":[\"\"]}", EB_ERR_INVALID, "tags[0] must not be empty"},
        {"{\"metadata\":[1]}", EB_ERR_INVALID, "metadata must be an object"},
        {"{\"metadata\":\"x\"}", EB_ERR_INVALID, "metadata must be an object"},
        {"{\"usage\":5}", EB_ERR_INVALID, "usage must be an object"},
        {"{\"cost_usd\":\"1\"}", EB_ERR_INVALID, "cost_usd must be a non-negative number"},
        {"{\"cost_usd\":-0.5}", EB_ERR_INVALID, "cost_usd must be a non-negative number"},
        {"{\"latency_ms\":-1}", EB_ERR_INVALID, "latency_ms must be a non-negative number"},
        {"{\"input\":true}", EB_OK, ""}, /* any other JSON value is kept as text */
        {"{\"input\":{\"messages\":{}}}", EB_ERR_INVALID, "input.messages must be an array"},
        {"{\"input\":{\"messages\":[],\"text\":1}}", EB_ERR_INVALID, "input.text must be a string"},
        {"{\"input\":[5]}", EB_ERR_INVALID, "input[0] must be an object"},
        {"{\"output\":{\"messages\":[{\"role\":\"user\",\"content\":5}]}}", EB_ERR_INVALID,
         "output.messages[0].content must be a string, an array of content parts or null"},
        {"{\"output\":{\"messages\":[{\"role\":\"user\",\"content\":[5]}]}}", EB_ERR_INVALID,
         "output.messages[0].content[0] must be an object or a string"},
        {"{\"output\":{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]}]}}",
         EB_ERR_INVALID, "output.messages[0].content[0].type is required"},
        {"{\"output\":{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}}",
         EB_ERR_INVALID, "output.messages[0].content[0].text is required"},
        {"{\"tool_calls\":{}}", EB_ERR_INVALID, "tool_calls must be an array"},
        {"{\"tool_calls\":[{\"arguments\":[1]}]}", EB_ERR_INVALID,
         "tool_calls[0].arguments must be a string or an object"},
        {"{\"tool_calls\":[{\"function\":\"f\"}]}", EB_ERR_INVALID,
         "tool_calls[0].function must be an object"},
        {"{\"tool_calls\":[{\"name\":\"a\",\"function\":{\"name\":\"b\"}}]}", EB_ERR_INVALID,
         "tool_calls[0] gives name both in function and beside it"},
        {"{\"observations\":{}}", EB_ERR_INVALID, "observations must be an array"},
        /* a member given twice, at any depth of a stored JSON text */
        {"{\"metadata\":{\"k\":1,\"k\":2}}", EB_ERR_INVALID,
         "metadata has an object with the member 'k' twice"},
        {"{\"metadata\":{\"a\":[{\"x\":1,\"y\":0,\"x\":2}]}}", EB_ERR_INVALID,
         "metadata has an object with the member 'x' twice"},
        {"{\"input\":{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
         "\"text\":\"A\",\"text\":\"B\"}]}]}}",
         EB_ERR_INVALID, "has an object with the member 'text' twice"},
        {"{\"extra\":{\"q\":1,\"q\":1}}", EB_ERR_INVALID,
         "has an object with the member 'q' twice"},
        {"{\"observations\":[{}, 3]}", EB_ERR_INVALID, "observations[1] must be an object"},
        /* timestamps */
        {"{\"start_time\":1700000000}", EB_ERR_INVALID, "start_time must be an RFC 3339"},
        {"{\"start_time\":\"2026-11-22 10:00:00\"}", EB_ERR_INVALID, "start_time must be"},
        {"{\"end_time\":\"2026-02-30T10:00:00Z\"}", EB_ERR_INVALID, "end_time must be"},
        {"{\"start_time\":\"1969-12-31T23:59:59Z\"}", EB_ERR_INVALID, "start_time must be"},
        {"{\"start_time\":\"2263-01-01T00:00:00Z\"}", EB_ERR_INVALID, "start_time must be"},
        {"{\"observations\":[{},{\"start_time\":\"yesterday\"}]}", EB_ERR_INVALID,
         "observations[1].start_time must be an RFC 3339 timestamp"},
        {"{\"tool_calls\":[{\"end_time\":\"2026-13-01T00:00:00Z\"}]}", EB_ERR_INVALID,
         "tool_calls[0].end_time must be"},
        /* end before start */
        {"{\"start_time\":\"2026-11-22T10:00:01Z\",\"end_time\":\"2026-11-22T10:00:00.999Z\"}",
         EB_ERR_INVALID, "end_time is before start_time"},
        {"{\"observations\":[{\"start_time\":\"2026-11-22T10:00:00Z\","
         "\"end_time\":\"2026-11-22T09:00:00Z\"}]}",
         EB_ERR_INVALID, "observations[0].end_time is before start_time"},
        {"{\"tool_calls\":[{\"start_time\":\"2026-11-22T10:00:00Z\","
         "\"end_time\":\"2026-11-22T10:00:00+01:00\"}]}",
         EB_ERR_INVALID, "tool_calls[0].end_time is before start_time"},
        /* tokens */
        {"{\"usage\":{\"input_tokens\":-1}}", EB_ERR_INVALID,
         "usage.input_tokens must be a non-negative integer"},
        {"{\"usage\":{\"output_tokens\":1.5}}", EB_ERR_INVALID,
         "usage.output_tokens must be a non-negative integer"},
        {"{\"usage\":{\"total_tokens\":\"3\"}}", EB_ERR_INVALID,
         "usage.total_tokens must be a non-negative integer"},
        {"{\"usage\":{\"input_tokens\":1.0000000000000001}}", EB_ERR_INVALID,
         "usage.input_tokens must be a non-negative integer"},
        {"{\"usage\":{\"input_tokens\":4503599627370496.5}}", EB_ERR_INVALID,
         "usage.input_tokens must be a non-negative integer"},
        {"{\"usage\":{\"input_tokens\":12.00000000000000000001}}", EB_ERR_INVALID,
         "usage.input_tokens must be a non-negative integer"},
        {"{\"usage\":{\"input_tokens\":9007199254740994}}", EB_ERR_INVALID,
         "usage.input_tokens must be below 2^53"},
        {"{\"usage\":{\"input_tokens\":9007199254740993}}", EB_ERR_INVALID,
         "usage.input_tokens must be below 2^53"},
        {"{\"usage\":{\"input_tokens\":1,\"prompt_tokens\":1}}", EB_ERR_INVALID,
         "usage gives input_tokens twice"},
        {"{\"observations\":[{\"usage\":{\"output_tokens\":-3}}]}", EB_ERR_INVALID,
         "observations[0].usage.output_tokens must be a non-negative integer"},
        /* enums */
        {"{\"input\":{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}}", EB_ERR_INVALID,
         "input.messages[0].role must be one of system, user, assistant, tool, developer, "
         "function"},
        {"{\"input\":{\"messages\":[{\"content\":\"x\"}]}}", EB_ERR_INVALID,
         "input.messages[0].role is required"},
        {"{\"input\":{\"messages\":[{\"role\":1}]}}", EB_ERR_INVALID,
         "input.messages[0].role must be one of"},
        {"{\"status\":\"OK\"}", EB_ERR_INVALID, "status must be one of ok, error, unset"},
        {"{\"status\":true}", EB_ERR_INVALID, "status must be one of"},
        {"{\"observations\":[{\"status\":\"fine\"}]}", EB_ERR_INVALID,
         "observations[0].status must be one of ok, error, unset"},
        {"{\"observations\":[{\"type\":\"llm\"}]}", EB_ERR_INVALID,
         "observations[0].type must be one of span, generation, event, tool"},
        /* duplicates */
        {"{\"id\":\"a\",\"id\":\"b\"}", EB_ERR_INVALID, "trace has the member 'id' twice"},
        {"{\"x\":1,\"x\":2}", EB_ERR_INVALID, "trace has the member 'x' twice"},
        {"{\"observations\":[{\"id\":\"o\"},{\"id\":\"p\"},{\"id\":\"o\"}]}", EB_ERR_INVALID,
         "observations[2].id repeats the id of observations[0]"},
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        if (cases[i].st == EB_OK) {
            evalbus__v1__trace__free_unpacked(parse_ok(cases[i].json, NULL), NULL);
            continue;
        }
        check_error_cases(&cases[i], 1, &INGEST_LIMITS_DEFAULT);
    }
}

static void test_not_an_object(void **state)
{
    cJSON *arr = cJSON_CreateArray();
    Evalbus__V1__Trace *t = NULL;

    (void)state;
    assert_int_equal(ingest_trace_from_json(arr, &INGEST_LIMITS_DEFAULT, &t), EB_ERR_INVALID);
    assert_null(t);
    assert_non_null(strstr(eb_error_message(), "trace must be a JSON object"));
    cJSON_Delete(arr);
}

/* head, n times 'a', tail. */
static char *with_long(const char *head, size_t n, const char *tail)
{
    eb_buf b = {0};

    eb_buf_puts(&b, head);
    for (size_t i = 0; i < n; i++)
        eb_buf_putc(&b, 'a');
    eb_buf_puts(&b, tail);
    return eb_buf_steal(&b);
}

static char *with_items(const char *head, const char *item, size_t n, const char *tail)
{
    eb_buf b = {0};

    eb_buf_puts(&b, head);
    for (size_t i = 0; i < n; i++) {
        if (i)
            eb_buf_putc(&b, ',');
        eb_buf_puts(&b, item);
    }
    eb_buf_puts(&b, tail);
    return eb_buf_steal(&b);
}

static void test_limits(void **state)
{
    /* small limits so that the documents stay small */
    const ingest_limits lim = {.max_batch_items = 10,
                               .max_field_bytes = 100,
                               .max_id_bytes = 16,
                               .max_messages = 3,
                               .max_observations = 2,
                               .max_tags = 2,
                               .max_metadata_bytes = 40,
                               .max_trace_bytes = 2000};
    struct {
        char *json;
        eb_status st;
        const char *message;
    } cases[] = {
        {with_long("{\"id\":\"", 17, "\"}"), EB_ERR_TOO_LARGE,
         "id is longer than 16 bytes (max-id-bytes)"},
        {with_long("{\"id\":\"", 16, "\"}"), EB_OK, ""},
        {with_long("{\"model\":\"", 17, "\"}"), EB_ERR_TOO_LARGE, "model is longer than 16"},
        {with_long("{\"tags\":[\"", 17, "\"]}"), EB_ERR_TOO_LARGE, "tags[0] is longer than 16"},
        {with_long("{\"input\":\"", 101, "\"}"), EB_ERR_TOO_LARGE,
         "input is longer than 100 bytes (max-field-bytes)"},
        {with_long("{\"input\":\"", 100, "\"}"), EB_OK, ""},
        {with_long("{\"status_message\":\"", 101, "\"}"), EB_ERR_TOO_LARGE,
         "status_message is longer"},
        {with_long("{\"output\":{\"messages\":[{\"role\":\"user\",\"content\":\"", 101, "\"}]}}"),
         EB_ERR_TOO_LARGE, "output.messages[0].content is longer than 100 bytes"},
        {with_long("{\"input\":[{\"role\":\"user\",\"content\":[\"", 99, "\",\"b\"]}]}"),
         EB_ERR_TOO_LARGE, "input[0].content text is longer than 100 bytes"},
        {with_long("{\"tool_calls\":[{\"arguments\":{\"k\":\"", 95, "\"}}]}"), EB_ERR_TOO_LARGE,
         "tool_calls[0].arguments is larger than 100 bytes as JSON (max-field-bytes)"},
        {with_long("{\"metadata\":{\"k\":\"", 40, "\"}}"), EB_ERR_TOO_LARGE,
         "metadata is larger than 40 bytes as JSON (max-metadata-bytes)"},
        {with_long("{\"extra\":\"", 40, "\"}"), EB_ERR_TOO_LARGE,
         "trace has unknown fields (kept in attributes) larger than 40 bytes"},
        {with_long("{\"observations\":[{\"metadata\":{\"k\":\"", 40, "\"}}]}"), EB_ERR_TOO_LARGE,
         "observations[0].metadata is larger than 40 bytes"},
        {with_long("{\"x\":[\"", 2000, "\"]}"), EB_ERR_TOO_LARGE,
         "trace is larger than 2000 bytes as JSON (max-trace-bytes)"},
        {with_items("{\"tags\":[", "\"t\"", 3, "]}"), EB_ERR_TOO_LARGE,
         "tags has more than 2 items (max-tags)"},
        {with_items("{\"tags\":[", "\"t\"", 2, "]}"), EB_OK, ""},
        {with_items("{\"input\":{\"messages\":[", "{\"role\":\"user\"}", 4, "]}}"),
         EB_ERR_TOO_LARGE, "input.messages has more than 3 items (max-messages)"},
        {with_items("{\"input\":{\"messages\":[", "{\"role\":\"user\"}", 3, "]}}"), EB_OK, ""},
        {with_items("{\"tool_calls\":[", "{}", 4, "]}"), EB_ERR_TOO_LARGE,
         "tool_calls has more than 3 items"},
        {with_items("{\"input\":[{\"role\":\"user\",\"content\":[", "\"p\"", 4, "]}]}"),
         EB_ERR_TOO_LARGE, "input[0].content has more than 3 items"},
        {with_items("{\"observations\":[", "{}", 3, "]}"), EB_ERR_TOO_LARGE,
         "observations has more than 2 items (max-observations)"},
        {with_items("{\"observations\":[", "{}", 2, "]}"), EB_OK, ""},
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        if (cases[i].st == EB_OK) {
            evalbus__v1__trace__free_unpacked(parse_ok(cases[i].json, &lim), NULL);
        } else {
            error_case ec = {cases[i].json, cases[i].st, cases[i].message};
            check_error_cases(&ec, 1, &lim);
        }
        free(cases[i].json);
    }
}

/* --- protobuf traces ------------------------------------------------------------------------ */

static Evalbus__V1__Trace *decoded_example(void)
{
    Evalbus__V1__Trace *t = parse_ok(full_example, NULL);
    size_t n = evalbus__v1__trace__get_packed_size(t);
    uint8_t *buf = malloc(n);
    Evalbus__V1__Trace *d;

    evalbus__v1__trace__pack(t, buf);
    d = evalbus__v1__trace__unpack(NULL, n, buf);
    assert_non_null(d);
    free(buf);
    evalbus__v1__trace__free_unpacked(t, NULL);
    return d;
}

static void set_str(char **field, const char *value)
{
    free(*field);
    *field = value ? strdup(value) : NULL;
}

typedef struct validate_case {
    const char *what; /* error message must contain it */
    eb_status st;
    void (*mutate)(Evalbus__V1__Trace *t);
} validate_case;

static void m_no_id(Evalbus__V1__Trace *t)
{
    set_str(&t->id, NULL);
}
static void m_bad_utf8_content(Evalbus__V1__Trace *t)
{
    set_str(&t->input_messages[0]->content, "caf\xc3");
}
static void m_bad_utf8_name(Evalbus__V1__Trace *t)
{
    set_str(&t->name, "\xc0\xaf");
}
static void m_bad_utf8_part(Evalbus__V1__Trace *t)
{
    set_str(&t->input_messages[1]->parts[0]->text, "\xed\xa0\x80");
}
static void m_bad_utf8_args(Evalbus__V1__Trace *t)
{
    set_str(&t->output_messages[0]->tool_calls[0]->arguments, "{\"q\":\"\xff\"}");
}
static void m_bad_utf8_obs(Evalbus__V1__Trace *t)
{
    set_str(&t->observations[0]->output_text, "\xf4\x90\x80\x80");
}
static void m_bad_role(Evalbus__V1__Trace *t)
{
    set_str(&t->output_messages[0]->role, "bot");
}
static void m_no_role(Evalbus__V1__Trace *t)
{
    set_str(&t->input_messages[0]->role, NULL);
}
static void m_bad_status(Evalbus__V1__Trace *t)
{
    set_str(&t->status, "failed");
}
static void m_bad_obs_type(Evalbus__V1__Trace *t)
{
    set_str(&t->observations[1]->type, "thing");
}
static void m_negative_tokens(Evalbus__V1__Trace *t)
{
    t->observations[0]->input_tokens = -5;
}
static void m_huge_tokens(Evalbus__V1__Trace *t)
{
    t->total_tokens = INT64_MAX;
}
static void m_nan_cost(Evalbus__V1__Trace *t)
{
    t->cost_usd = NAN;
}
static void m_end_before_start(Evalbus__V1__Trace *t)
{
    t->end_time_unix_nano = t->start_time_unix_nano - 1;
}
static void m_negative_time(Evalbus__V1__Trace *t)
{
    t->tool_calls[0]->start_time_unix_nano = -1;
}
static void m_bad_metadata(Evalbus__V1__Trace *t)
{
    set_str(&t->metadata_json, "{\"a\":");
}
static void m_metadata_array(Evalbus__V1__Trace *t)
{
    set_str(&t->observations[0]->metadata_json, "[1]");
}
static void m_no_obs_id(Evalbus__V1__Trace *t)
{
    set_str(&t->observations[1]->id, NULL);
}
static void m_dup_obs_id(Evalbus__V1__Trace *t)
{
    set_str(&t->observations[1]->id, "o1");
}
static void m_control_in_id(Evalbus__V1__Trace *t)
{
    set_str(&t->session_id, "a\tb");
}
static void m_long_field(Evalbus__V1__Trace *t)
{
    char *s = malloc(1048578);

    memset(s, 'x', 1048577);
    s[1048577] = '\0';
    free(t->output_messages[0]->content);
    t->output_messages[0]->content = s;
}
static void m_many_tags(Evalbus__V1__Trace *t)
{
    for (size_t i = 0; i < t->n_tags; i++)
        free(t->tags[i]);
    free(t->tags);
    t->n_tags = 65;
    t->tags = calloc(65, sizeof *t->tags);
    for (size_t i = 0; i < 65; i++)
        t->tags[i] = strdup("t");
}
static void m_nothing(Evalbus__V1__Trace *t)
{
    (void)t;
}

static void test_validate(void **state)
{
    static const validate_case cases[] = {
        {"", EB_OK, m_nothing},
        {"id is required", EB_ERR_INVALID, m_no_id},
        {"input.messages[0].content is not valid UTF-8", EB_ERR_INVALID, m_bad_utf8_content},
        {"name is not valid UTF-8", EB_ERR_INVALID, m_bad_utf8_name},
        {"input.messages[1].content[0].text is not valid UTF-8", EB_ERR_INVALID, m_bad_utf8_part},
        {"output.messages[0].tool_calls[0].arguments is not valid UTF-8", EB_ERR_INVALID,
         m_bad_utf8_args},
        {"observations[0].output.text is not valid UTF-8", EB_ERR_INVALID, m_bad_utf8_obs},
        {"output.messages[0].role must be one of", EB_ERR_INVALID, m_bad_role},
        {"input.messages[0].role is required", EB_ERR_INVALID, m_no_role},
        {"status must be one of ok, error, unset", EB_ERR_INVALID, m_bad_status},
        {"observations[1].type must be one of", EB_ERR_INVALID, m_bad_obs_type},
        {"observations[0].usage.input_tokens must be a non-negative integer", EB_ERR_INVALID,
         m_negative_tokens},
        {"usage.total_tokens must be below 2^53", EB_ERR_INVALID, m_huge_tokens},
        {"cost_usd must be a non-negative number", EB_ERR_INVALID, m_nan_cost},
        {"end_time is before start_time", EB_ERR_INVALID, m_end_before_start},
        {"tool_calls[0].start_time must not be before 1970", EB_ERR_INVALID, m_negative_time},
        {"metadata must be the text of a JSON object", EB_ERR_INVALID, m_bad_metadata},
        {"observations[0].metadata must be the text of a JSON object", EB_ERR_INVALID,
         m_metadata_array},
        {"observations[1].id is required", EB_ERR_INVALID, m_no_obs_id},
        {"observations[1].id repeats the id of observations[0]", EB_ERR_INVALID, m_dup_obs_id},
        {"session_id must not contain control characters", EB_ERR_INVALID, m_control_in_id},
        {"output.messages[0].content is longer than 1048576 bytes (max-field-bytes)",
         EB_ERR_TOO_LARGE, m_long_field},
        {"tags has more than 64 items (max-tags)", EB_ERR_TOO_LARGE, m_many_tags},
    };

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        Evalbus__V1__Trace *t = decoded_example();
        eb_status st;

        cases[i].mutate(t);
        eb_error_clear();
        st = ingest_trace_validate(t, &INGEST_LIMITS_DEFAULT);
        if (st != cases[i].st)
            fail_msg("case %zu (%s): status %s (%s)", i, cases[i].what, eb_status_str(st),
                     eb_error_message());
        if (!strstr(eb_error_message(), cases[i].what))
            fail_msg("case %zu: message '%s' lacks '%s'", i, eb_error_message(), cases[i].what);
        evalbus__v1__trace__free_unpacked(t, NULL);
    }
}

static void test_validate_trace_size(void **state)
{
    ingest_limits lim = INGEST_LIMITS_DEFAULT;
    Evalbus__V1__Trace *t = decoded_example();

    (void)state;
    lim.max_trace_bytes = 100;
    assert_int_equal(ingest_trace_validate(t, &lim), EB_ERR_TOO_LARGE);
    assert_non_null(strstr(eb_error_message(), "max-trace-bytes"));
    evalbus__v1__trace__free_unpacked(t, NULL);
}

/* --- output ----------------------------------------------------------------------------------- */

static cJSON *parse_output(const eb_buf *b)
{
    cJSON *v = NULL;
    const char *end = NULL;

    assert_true(eb_utf8_valid(b->data, b->len));
    v = cJSON_ParseWithLengthOpts(b->data, b->len, &end, false);
    if (!v || end != b->data + b->len)
        fail_msg("output is not JSON: %s", b->data);
    return v;
}

static const char *str_at(const cJSON *obj, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (!cJSON_IsString(it))
        fail_msg("member %s is not a string", name);
    return it->valuestring;
}

static void test_output_roundtrip(void **state)
{
    Evalbus__V1__Trace *t = parse_ok(full_example, NULL), *back;
    eb_buf b = {0};
    cJSON *v, *m, *tc, *o, *doc;

    (void)state;
    ingest_messages_json(t->input_messages, t->n_input_messages, &b);
    v = parse_output(&b);
    assert_int_equal(cJSON_GetArraySize(v), 2);
    m = cJSON_GetArrayItem(v, 0);
    assert_string_equal(str_at(m, "role"), "system");
    assert_string_equal(str_at(m, "content"), "Be brief.");
    m = cJSON_GetArrayItem(v, 1);
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(m, "content")));
    assert_string_equal(str_at(cJSON_GetArrayItem(cJSON_GetObjectItem(m, "content"), 0), "text"),
                        "What is this?");
    assert_string_equal(
        str_at(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(m, "content"), 1),
                                   "image_url"),
               "url"),
        "https://x.test/a.png");
    cJSON_Delete(v);

    eb_buf_reset(&b);
    ingest_messages_json(t->output_messages, t->n_output_messages, &b);
    v = parse_output(&b);
    tc = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(v, 0), "tool_calls"), 0);
    assert_string_equal(str_at(tc, "id"), "c1");
    assert_string_equal(str_at(tc, "type"), "function");
    assert_string_equal(str_at(cJSON_GetObjectItem(tc, "function"), "name"), "lookup");
    assert_string_equal(str_at(cJSON_GetObjectItem(tc, "function"), "arguments"), "{\"q\": 1}");
    cJSON_Delete(v);

    eb_buf_reset(&b);
    ingest_tool_calls_json(t->tool_calls, t->n_tool_calls, &b);
    v = parse_output(&b);
    tc = cJSON_GetArrayItem(v, 0);
    assert_string_equal(str_at(tc, "type"), "function");
    assert_string_equal(str_at(tc, "result"), "found");
    assert_string_equal(str_at(tc, "start_time"), "2026-11-22T10:00:00.500000Z");
    assert_string_equal(str_at(tc, "end_time"), "2026-11-22T10:00:00.750000Z");
    cJSON_Delete(v);

    eb_buf_reset(&b);
    ingest_observation_json(t->observations[0], &b);
    o = parse_output(&b);
    assert_string_equal(str_at(o, "id"), "o1");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "parent_id")));
    assert_string_equal(str_at(o, "type"), "generation");
    assert_string_equal(str_at(o, "start_time"), "2026-11-22T10:00:00.100000Z");
    assert_string_equal(str_at(o, "end_time"), "2026-11-22T10:00:01.000000Z");
    assert_null(cJSON_GetObjectItem(o, "latency_ms")); /* not a field of observations */
    assert_string_equal(str_at(o, "status"), "error");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "input_tokens")->valueint,
                     100);
    assert_true(cJSON_GetObjectItem(o, "cost_usd")->valuedouble == 0.001);
    assert_string_equal(str_at(o, "output"), "hello");
    assert_string_equal(
        str_at(
            cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "input"), "messages"), 0),
            "content"),
        "hi");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "metadata"), "k")->valueint, 1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "attributes")));
    cJSON_Delete(o);

    /* the whole trace, re-read as trace input, gives the same trace */
    eb_buf_reset(&b);
    ingest_trace_json(t, &b);
    doc = parse_output(&b);
    assert_string_equal(str_at(doc, "start_time"), "2026-11-22T10:00:00.000000Z");
    assert_string_equal(str_at(doc, "end_time"), "2026-11-22T10:00:01.200000Z");
    assert_true(cJSON_GetObjectItem(doc, "cost_usd")->valuedouble == 0.0012);
    assert_string_equal(str_at(cJSON_GetObjectItem(doc, "metadata"), "customer_tier"), "gold");
    cJSON_DeleteItemFromObject(doc, "attributes"); /* null, and output-only */
    {
        Evalbus__V1__Trace *again = NULL;
        eb_buf b2 = {0};

        assert_int_equal(ingest_trace_from_json(doc, &INGEST_LIMITS_DEFAULT, &again), EB_OK);
        back = again;
        ingest_trace_json(back, &b2);
        assert_string_equal(b.data, b2.data);
        eb_buf_free(&b2);
    }
    cJSON_Delete(doc);
    evalbus__v1__trace__free_unpacked(back, NULL);
    eb_buf_free(&b);
    evalbus__v1__trace__free_unpacked(t, NULL);
}

/* Output of trees no validation has seen: invalid UTF-8, controls, stored "JSON" that is not
 * JSON, NULL elements. Every output must still be valid JSON. */
static void test_output_any_tree(void **state)
{
    Evalbus__V1__Trace t = EVALBUS__V1__TRACE__INIT;
    Evalbus__V1__Observation o = EVALBUS__V1__OBSERVATION__INIT;
    Evalbus__V1__Observation *obs[2] = {&o, NULL};
    Evalbus__V1__Message m = EVALBUS__V1__MESSAGE__INIT;
    Evalbus__V1__Message *msgs[2] = {&m, NULL};
    Evalbus__V1__ContentPart p = EVALBUS__V1__CONTENT_PART__INIT;
    Evalbus__V1__ContentPart *parts[1] = {&p};
    char bad[] = "a\xff\"b\\\x01\xc3\xa9\xed\xa0\x80\xe2\x82";
    char notjson[] = "{not json";
    char arr[] = "[1,2]";
    char *tags[1] = {bad};
    eb_buf b = {0};
    cJSON *v;

    (void)state;
    m.role = bad;
    m.content = bad;
    m.n_parts = 1;
    m.parts = parts;
    p.json = notjson;
    o.id = bad;
    o.metadata_json = arr;
    o.attributes_json = notjson;
    o.has_cost_usd = 1;
    o.cost_usd = INFINITY;
    o.has_start_time_unix_nano = 1;
    o.start_time_unix_nano = -1;
    t.id = bad;
    t.metadata_json = notjson;
    t.n_tags = 1;
    t.tags = tags;
    t.n_observations = 2;
    t.observations = obs;
    t.n_input_messages = 2;
    t.input_messages = msgs;
    t.has_latency_ms = 1;
    t.latency_ms = NAN;

    ingest_trace_json(&t, &b);
    v = parse_output(&b);
    assert_string_equal(str_at(v, "id"), "a\xef\xbf\xbd\"b\\\x01\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd"
                                         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(str_at(v, "metadata"), "{not json");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(v, "latency_ms")));
    assert_string_equal(
        str_at(cJSON_GetArrayItem(cJSON_GetObjectItem(v, "observations"), 0), "start_time"),
        "1969-12-31T23:59:59.999999Z");
    assert_true(cJSON_IsNull(cJSON_GetArrayItem(cJSON_GetObjectItem(v, "observations"), 1)));
    cJSON_Delete(v);

    eb_buf_reset(&b);
    ingest_messages_json(msgs, 2, &b);
    cJSON_Delete(parse_output(&b));
    eb_buf_reset(&b);
    ingest_messages_json(NULL, 3, &b);
    assert_string_equal(b.data, "[]");
    eb_buf_reset(&b);
    ingest_observation_json(NULL, &b);
    assert_string_equal(b.data, "null");
    eb_buf_free(&b);
}

/* What only the query output has is ignored when a trace read back is sent again. */
static void test_output_members_ignored(void **state)
{
    Evalbus__V1__Trace *t =
        parse_ok("{\"id\":\"r\",\"review_state\":\"accepted\",\"source\":\"json\","
                 "\"reviews\":[{\"decision\":\"accept\"}],\"scores\":[]}",
                 NULL);

    (void)state;
    assert_null(t->attributes_json);
    evalbus__v1__trace__free_unpacked(t, NULL);
}

/* Numbers in stored JSON texts (metadata, unknown members, object arguments) keep every digit
 * that tells them apart from their neighbours. */
static void test_numbers_in_json_texts(void **state)
{
    Evalbus__V1__Trace *t =
        parse_ok("{\"id\":\"n\",\"metadata\":{\"p\":0.30000000000000004,\"m\":9007199254740991,"
                 "\"l\":1.0000000000000002,\"s\":[-2.5e-8,1e300]},\"x\":0.30000000000000004,"
                 "\"tool_calls\":[{\"name\":\"f\",\"arguments\":{\"v\":0.1}}]}",
                 NULL);

    (void)state;
    assert_string_equal(t->metadata_json, "{\"p\":0.30000000000000004,\"m\":9007199254740991,"
                                          "\"l\":1.0000000000000002,\"s\":[-2.5e-08,1e+300]}");
    assert_string_equal(t->attributes_json, "{\"x\":0.30000000000000004}");
    assert_string_equal(t->tool_calls[0]->arguments, "{\"v\":0.1}");
    evalbus__v1__trace__free_unpacked(t, NULL);
}

static void test_numbers_in_output(void **state)
{
    static const double values[] = {0.0012, 0.1, 1e-7, 123456789.125, 1e300, 5e-324, 3.0};
    Evalbus__V1__Observation o = EVALBUS__V1__OBSERVATION__INIT;

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(values); i++) {
        eb_buf b = {0};
        cJSON *v;

        o.has_cost_usd = 1;
        o.cost_usd = values[i];
        ingest_observation_json(&o, &b);
        v = parse_output(&b);
        if (cJSON_GetObjectItem(v, "cost_usd")->valuedouble != values[i])
            fail_msg("%g printed as %s", values[i], b.data);
        cJSON_Delete(v);
        eb_buf_free(&b);
    }
}

static void test_time(void **state)
{
    static const struct {
        const char *in;
        long long ns;
        const char *text;
    } cases[] = {
        {"2026-11-22T10:00:00Z", 1795341600000000000LL, "2026-11-22T10:00:00.000000Z"},
        {"2026-11-22T10:00:01.2Z", 1795341601200000000LL, "2026-11-22T10:00:01.200000Z"},
        {"2026-11-22t11:00:01.000001+01:00", 1795341601000001000LL, "2026-11-22T10:00:01.000001Z"},
        {"2026-11-22T10:00:01.1234567891234Z", 1795341601123456789LL,
         "2026-11-22T10:00:01.123456Z"}, /* nanoseconds are cut off, not rounded */
        {"1970-01-01T00:00:00.000001Z", 1000, "1970-01-01T00:00:00.000001Z"},
        {"2024-02-29T00:00:00-00:30", 1709166600000000000LL, "2024-02-29T00:30:00.000000Z"},
        {"2000-03-01T00:00:00Z", 951868800000000000LL, "2000-03-01T00:00:00.000000Z"},
        {"2262-04-11T23:47:15.999999999Z", 9223372035999999999LL, "2262-04-11T23:47:15.999999Z"},
    };
    static const char *const bad[] = {
        "2026-11-22",
        "2026-11-22T10:00:00",
        "2023-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "1960-01-01T00:00:00Z",
        "2262-04-11T23:47:16Z",
        "9999-12-31T23:59:59Z",
        "2026-04-31T00:00:00Z",
        "2026-11-22T10:00:00.Z",
        "2026-11-22T25:00:00Z",
        "",
        /* kept to the microsecond, it would read back as the epoch, which means "unknown" */
        "1970-01-01T00:00:00.000000999Z",
    };
    char text[48];
    long long ns;

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        ns = 0;
        if (!ingest_time_parse(cases[i].in, &ns) || ns != cases[i].ns)
            fail_msg("%s parsed as %lld, want %lld", cases[i].in, ns, cases[i].ns);
        ingest_time_text(ns, text, sizeof text);
        assert_string_equal(text, cases[i].text);
    }
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (ingest_time_parse(bad[i], &ns))
            fail_msg("%s accepted", bad[i]);
    assert_false(ingest_time_parse(NULL, &ns));
    ingest_time_text(0, text, sizeof text);
    assert_string_equal(text, "");
    ingest_time_text(INT64_MIN, text, sizeof text);
    assert_string_equal(text, "1677-09-21T00:12:43.145224Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_example),
        cmocka_unit_test(test_whole_token_counts),
        cmocka_unit_test(test_defaults_and_derived),
        cmocka_unit_test(test_input_shapes),
        cmocka_unit_test(test_content_parts),
        cmocka_unit_test(test_tool_calls),
        cmocka_unit_test(test_unknown_fields_kept),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_validate_trace_size),
        cmocka_unit_test(test_output_roundtrip),
        cmocka_unit_test(test_output_any_tree),
        cmocka_unit_test(test_output_members_ignored),
        cmocka_unit_test(test_numbers_in_json_texts),
        cmocka_unit_test(test_numbers_in_output),
        cmocka_unit_test(test_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
