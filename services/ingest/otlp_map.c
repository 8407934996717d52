/* otlp_map.c -- OTLP spans -> evalbus traces and observations.
 *
 * The rules are documented in docs/api/otlp.md; in short: spans are grouped by trace id, each
 * group becomes one Trace (id = 32 lowercase hex characters) and each span one Observation.
 * GenAI semantic-convention and OpenInference attributes fill the observation's typed fields
 * (model, provider, tokens, messages, tool calls, input/output text); every attribute that
 * fills no field stays in attributes_json.
 *
 * How "never dropped" is kept: a span's attributes are first rendered into one cJSON object
 * (AnyValue -> JSON). Each mapping rule that uses an attribute removes it from that object
 * ("takes" it), and only when it could use it (a token count that is not an integer stays).
 * Whatever is left is printed as attributes_json. Span events that map to messages are used
 * up the same way, down to their attributes: an event keeps in otel.events what filled
 * nothing. The other events, the links, the instrumentation scope (name, version, attributes)
 * and the span kind are added under "otel.*" keys. A trace keeps one resource (the root's,
 * else the first accepted span's); a span of another resource keeps its own as otel.resource.
 *
 * Labels (names, models, roles, ids, tags) are stored with spaces for control characters,
 * which the JSON API refuses: an exporter cannot mend what it sent, and a span is better kept.
 * Roles are made the JSON API's (Gemini's "model" is "assistant"). A project is the one label
 * that is refused instead (every span of its resource): it is what traces are filed under.
 *
 * Flattened message attributes (gen_ai.prompt.N.*, llm.input_messages.N.message.*) are read
 * by matching each key against a table of known patterns and sorting the matches by index,
 * so a span with many attributes costs O(n log n), whatever the indices are.
 *
 * A problem with one span (bad ids, a string over a limit, invalid UTF-8, attributes over
 * max_metadata_bytes, too many spans in one trace) rejects that span only: it is counted in
 * rejected_spans and the first few reasons are kept for the OTLP partial-success answer.
 *
 * Ownership: everything put in a Trace is malloc'd (evalbus__v1__trace__free_unpacked frees
 * it); the request is only read. Threading: no shared state. */
#include "otlp.h"
#include "trace_json.h"

#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef Evalbus__Otlp__V1__ExportTraceServiceRequest otlp_request;
typedef Evalbus__Otlp__V1__ResourceSpans otlp_resource_spans;
typedef Evalbus__Otlp__V1__InstrumentationScope otlp_scope;
typedef Evalbus__Otlp__V1__Span otlp_span;
typedef Evalbus__Otlp__V1__Span__Event otlp_event;
typedef Evalbus__Otlp__V1__KeyValue otlp_kv;
typedef Evalbus__Otlp__V1__AnyValue otlp_any;
typedef Evalbus__V1__Trace eb_trace;
typedef Evalbus__V1__Observation eb_obs;
typedef Evalbus__V1__Message eb_msg;
typedef Evalbus__V1__ContentPart eb_part;
typedef Evalbus__V1__ToolCall eb_tool_call;

enum {
    MAP_MAX_REASONS = INGEST_OTLP_MAX_REASONS, /* reasons kept in error_message */
    MAP_MAX_RENDER = 100, /* AnyValue nesting when rendering (decoders allow less) */
};

#define MAX_SAFE_INT 9007199254740992LL /* 2^53: larger integers are not exact in JSON readers */

/* ---------------------------------------------------------------------------------------- */
/* state                                                                                     */

/* Request-wide state. */
typedef struct map_ctx {
    const ingest_limits *lim;
    ingest_otlp_result *out;
    eb_buf reasons; /* the first MAP_MAX_REASONS reasons, "; "-separated */
    int nreasons;
} map_ctx;

/* What one ResourceSpans gives its spans. */
typedef struct map_resource {
    char *project;         /* never NULL */
    char *attributes_json; /* {"resource":{...}}, or NULL without resource attributes */
    char why[224];         /* non-empty: every span of this resource is rejected */
} map_resource;

/* One span waiting to be mapped. */
typedef struct map_entry {
    const otlp_span *span;
    const otlp_scope *scope;
    size_t res; /* index of its map_resource */
    size_t seq; /* position in the request */
} map_entry;

/* What a root span gives its trace besides its observation. */
typedef struct root_extra {
    char *session_id;
    char *user_id;
    char *metadata_json;
    char **tags;
    size_t ntags;
} root_extra;

/* One span being mapped. */
typedef struct span_map {
    const ingest_limits *lim;
    const otlp_span *span;
    cJSON *attrs;  /* rendered attributes; mapped ones are removed */
    char why[200]; /* the first problem; non-empty rejects the span */
    bool is_root;
    root_extra *root;       /* filled when is_root */
    bool has_otel_resource; /* the span has an attribute named otel.resource */
} span_map;

/* Records the first problem of a span; returns false for use in conditions. */
static bool fail(span_map *sm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(span_map *sm, const char *fmt, ...)
{
    va_list ap;
    size_t n, lead;

    if (sm->why[0])
        return false;
    va_start(ap, fmt);
    vsnprintf(sm->why, sizeof sm->why, fmt, ap);
    va_end(ap);
    /* a reason cut short (a long attribute key in it) must not end inside a UTF-8 sequence: it
     * goes to partial_success.error_message, a proto3 string that decoders refuse unless it is
     * valid UTF-8 */
    n = strlen(sm->why);
    for (lead = n; lead > 0 && ((unsigned char)sm->why[lead - 1] & 0xc0) == 0x80;)
        lead--;
    if (lead > 1 && (unsigned char)sm->why[lead - 1] >= 0xc0) {
        unsigned char c = (unsigned char)sm->why[lead - 1];
        size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;

        if (n - (lead - 1) < len)
            sm->why[lead - 1] = '\0';
    }
    return false;
}

static bool failed(const span_map *sm)
{
    return sm->why[0] != '\0';
}

static bool nonzero(const ProtobufCBinaryData *b);

/* Counts a rejected span and keeps the first reasons: the span named by its id, or by its
 * position in the request when the id names nothing (not 8 bytes, or all zeros). */
static void reject(map_ctx *mc, const otlp_span *sp, size_t seq, const char *why)
{
    mc->out->rejected_spans++;
    if (mc->nreasons >= MAP_MAX_REASONS)
        return;
    if (mc->nreasons++)
        eb_buf_puts(&mc->reasons, "; ");
    if (sp->span_id.len == 8 && nonzero(&sp->span_id)) {
        char hex[17];

        eb_hex_encode(sp->span_id.data, 8, hex);
        eb_buf_printf(&mc->reasons, "span %s: %s", hex, why);
    } else {
        eb_buf_printf(&mc->reasons, "span #%zu: %s", seq + 1, why);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* strings and attribute values                                                              */

/* A malloc'd copy of s when it is valid UTF-8 of at most max bytes; NULL for NULL or "" and on
 * a problem (recorded, naming what). */
static char *sm_str(span_map *sm, const char *what, const char *s, size_t max)
{
    size_t n;

    if (!s || !*s || failed(sm))
        return NULL;
    n = strlen(s);
    if (n > max) {
        fail(sm, "%s is longer than %zu bytes", what, max);
        return NULL;
    }
    if (!eb_utf8_valid(s, n)) {
        fail(sm, "%s is not valid UTF-8", what);
        return NULL;
    }
    return eb_strndup(s, n);
}

/* Replaces each control character of s (C0, DEL, C1) by a space, in place. Labels (names,
 * models, roles, ids, tags) must not hold them (the JSON API refuses them); an exporter cannot
 * mend a span it sent, so the label is stored mended rather than the span lost. */
static void strip_controls(char *s)
{
    size_t n = s ? strlen(s) : 0, r = 0, w = 0;

    while (r < n) {
        size_t c = ingest_control_len(s + r, n - r);

        if (c) {
            s[w++] = ' ';
            r += c;
        } else {
            s[w++] = s[r++];
        }
    }
    if (s)
        s[w] = '\0';
}

/* sm_str for a label: at most max_id_bytes, control characters made spaces. */
static char *sm_label(span_map *sm, const char *what, const char *s)
{
    char *out = sm_str(sm, what, s, sm->lim->max_id_bytes);

    strip_controls(out);
    return out;
}

static bool utf8_ok(span_map *sm, const char *what, const char *s)
{
    if (!eb_utf8_valid(s, strlen(s)))
        return fail(sm, "%s is not valid UTF-8", what);
    return true;
}

static cJSON *int_json(long long v)
{
    char buf[24];

    if (v > MAX_SAFE_INT || v < -MAX_SAFE_INT) {
        snprintf(buf, sizeof buf, "%lld", v);
        return cJSON_CreateString(buf);
    }
    snprintf(buf, sizeof buf, "%lld", v);
    return cJSON_CreateRaw(buf); /* printed exactly, not through a double */
}

static cJSON *kvs_json(span_map *sm, Evalbus__Otlp__V1__KeyValue *const *kvs, size_t n, int depth);

/* An AnyValue as JSON (see the file comment); NULL on a problem (recorded). key names the
 * attribute in messages. */
static cJSON *any_json(span_map *sm, const char *key, const otlp_any *v, int depth)
{
    cJSON *j = NULL;

    if (depth > MAP_MAX_RENDER) {
        fail(sm, "attribute '%s' nests too deep", key);
        return NULL;
    }
    if (!v)
        return cJSON_CreateNull();
    switch (v->value_case) {
    case EVALBUS__OTLP__V1__ANY_VALUE__VALUE_STRING_VALUE: {
        size_t n = strlen(v->string_value);

        if (n > sm->lim->max_field_bytes) {
            fail(sm, "attribute '%s' is longer than %zu bytes", key, sm->lim->max_field_bytes);
            return NULL;
        }
        if (!eb_utf8_valid(v->string_value, n)) {
            fail(sm, "attribute '%s' is not valid UTF-8", key);
            return NULL;
        }
        return cJSON_CreateString(v->string_value);
    }
    case EVALBUS__OTLP__V1__ANY_VALUE__VALUE_BOOL_VALUE:
        return cJSON_CreateBool(v->bool_value);
    case EVALBUS__OTLP__V1__ANY_VALUE__VALUE_INT_VALUE:
        return int_json(v->int_value);
    case EVALBUS__OTLP__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
        if (isnan(v->double_value))
            return cJSON_CreateString("NaN");
        if (isinf(v->double_value))
            return cJSON_CreateString(v->double_value > 0 ? "Infinity" : "-Infinity");
        return cJSON_CreateNumber(v->double_value);
    case EVALBUS__OTLP__V1__ANY_VALUE__VALUE_ARRAY_VALUE:
        j = cJSON_CreateArray();
        if (v->array_value)
            for (size_t i = 0; i < v->array_value->n_values; i++) {
                cJSON *e = any_json(sm, key, v->array_value->values[i], depth + 1);

                if (!e) {
                    cJSON_Delete(j);
                    return NULL;
                }
                cJSON_AddItemToArray(j, e);
            }
        return j;
    case EVALBUS__OTLP__V1__ANY_VALUE__VALUE_KVLIST_VALUE:
        if (!v->kvlist_value)
            return cJSON_CreateObject();
        return kvs_json(sm, v->kvlist_value->values, v->kvlist_value->n_values, depth + 1);
    case EVALBUS__OTLP__V1__ANY_VALUE__VALUE_BYTES_VALUE: {
        eb_buf b = {0};

        if (v->bytes_value.len > sm->lim->max_field_bytes / 4 * 3) {
            fail(sm, "attribute '%s' is longer than %zu bytes", key, sm->lim->max_field_bytes);
            return NULL;
        }
        eb_base64_encode(v->bytes_value.data, v->bytes_value.len, &b);
        j = cJSON_CreateString(b.data ? b.data : "");
        eb_buf_free(&b);
        return j;
    }
    default:
        return cJSON_CreateNull();
    }
}

/* Key/values as a JSON object, in order; duplicate keys are all kept (OTLP forbids them; the
 * first one is the one mapped). Keys are referenced, not copied: the request outlives it. */
static cJSON *kvs_json(span_map *sm, Evalbus__Otlp__V1__KeyValue *const *kvs, size_t n, int depth)
{
    cJSON *obj = cJSON_CreateObject();

    for (size_t i = 0; i < n; i++) {
        const otlp_kv *kv = kvs[i];
        const char *key = kv && kv->key ? kv->key : "";
        cJSON *v;

        if (!utf8_ok(sm, "an attribute key", key))
            goto bad;
        if (!(v = any_json(sm, key, kv ? kv->value : NULL, depth)))
            goto bad;
        cJSON_AddItemToObjectCS(obj, key, v);
    }
    return obj;
bad:
    cJSON_Delete(obj);
    return NULL;
}

static cJSON *attr(span_map *sm, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(sm->attrs, key);
}

/* Removes a mapped attribute. */
static void take(span_map *sm, cJSON *item)
{
    if (item)
        cJSON_Delete(cJSON_DetachItemViaPointer(sm->attrs, item));
}

static const char *attr_str(span_map *sm, const char *key)
{
    cJSON *it = attr(sm, key);

    return cJSON_IsString(it) && it->valuestring[0] ? it->valuestring : NULL;
}

/* The first of keys holding a non-empty string, copied as a label (sm_label) and taken; the
 * other keys holding the same string are taken too (a different value stays an attribute). */
static char *take_first_label(span_map *sm, const char *const *keys, size_t nkeys)
{
    char *out = NULL;
    const char *val = NULL;

    for (size_t i = 0; i < nkeys && !val; i++)
        if ((val = attr_str(sm, keys[i]))) {
            out = sm_label(sm, keys[i], val);
            for (size_t k = i + 1; k < nkeys; k++) {
                cJSON *o = attr(sm, keys[k]);

                if (cJSON_IsString(o) && !strcmp(o->valuestring, val))
                    take(sm, o);
            }
            take(sm, attr(sm, keys[i])); /* val dies here */
        }
    return out;
}

/* An integer JSON value: a raw integer (rendered int), an integral number or digits. */
static bool json_int(const cJSON *it, long long *v)
{
    char *end = NULL;

    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;

        if (!isfinite(d) || d != floor(d) || fabs(d) > (double)MAX_SAFE_INT)
            return false;
        *v = (long long)d;
        return true;
    }
    if ((cJSON_IsRaw(it) || cJSON_IsString(it)) && it->valuestring[0]) {
        const char *d = it->valuestring + (it->valuestring[0] == '-');
        if (*d < '0' || *d > '9') /* strtoll would also take " 7" and "+4" */
            return false;
        errno = 0;
        *v = strtoll(it->valuestring, &end, 10);
        return !errno && !*end;
    }
    return false;
}

/* The first of keys holding an integer in 0..2^53-1 (the counts the JSON API takes), taken; a
 * larger one stays an attribute. */
static bool take_first_count(span_map *sm, const char *const *keys, size_t nkeys, long long *v)
{
    for (size_t i = 0; i < nkeys; i++) {
        cJSON *it = attr(sm, keys[i]);

        if (it && json_int(it, v) && *v >= 0 && *v < (long long)MAX_SAFE_INT) {
            /* the other keys holding the same count say nothing more: taken too */
            for (size_t k = i + 1; k < nkeys; k++) {
                cJSON *o = attr(sm, keys[k]);
                long long w;
                if (o && json_int(o, &w) && w == *v)
                    take(sm, o);
            }
            take(sm, it);
            return true;
        }
    }
    return false;
}

/* Text of a value: a string as is, anything else as compact JSON; NULL for null/absent. */
static char *value_text(span_map *sm, const char *what, const cJSON *v, size_t max)
{
    char *s, *out;

    if (!v || cJSON_IsNull(v))
        return NULL;
    if (cJSON_IsString(v))
        return sm_str(sm, what, v->valuestring, max);
    s = eb_json_print(v);
    out = sm_str(sm, what, s, max);
    free(s);
    return out;
}

/* Parses JSON text that must be utf-8 already (it came through any_json or eb_json). A text
 * with an escaped NUL is not taken as JSON (cJSON would cut the string there), nor one with a
 * number beyond the limits of JSON input (it would keep only its double: 1e400 would be stored
 * as null, 1e-400 as 0), nor one with an object that gives a member twice (one of the two would
 * be lost: the mapping reads the first, PostgreSQL keeps the last): it stays the string it is. */
static cJSON *parse_json_text(const char *s)
{
    size_t n = strlen(s);
    cJSON *v;

    if (strstr(s, "\\u0000"))
        return NULL;
    v = eb_json_parse_text(s, n);
    if (v && (eb_json_keep_exact(v, s, n) != SIZE_MAX || eb_json_repeated_member(v))) {
        cJSON_Delete(v);
        v = NULL;
    }
    return v;
}

/* An attribute that holds JSON structure either as a value (array/kvlist) or as JSON text:
 * a new tree the caller deletes, or NULL. */
static cJSON *attr_structured(span_map *sm, const char *key)
{
    cJSON *it = attr(sm, key);

    if (cJSON_IsString(it))
        return parse_json_text(it->valuestring);
    if (cJSON_IsArray(it) || cJSON_IsObject(it))
        return cJSON_Duplicate(it, true);
    return NULL;
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* messages                                                                                  */

static eb_msg *msg_new(void)
{
    eb_msg *m = eb_malloc(sizeof *m);

    *m = (eb_msg)EVALBUS__V1__MESSAGE__INIT;
    return m;
}

static void msg_free(eb_msg *m)
{
    if (m)
        evalbus__v1__message__free_unpacked(m, NULL);
}

static eb_tool_call *tool_call_new(void)
{
    eb_tool_call *tc = eb_malloc(sizeof *tc);

    *tc = (eb_tool_call)EVALBUS__V1__TOOL_CALL__INIT;
    return tc;
}

/* Builds one message's content: text and other parts in order. */
typedef struct msg_builder {
    eb_msg *m;
    eb_buf text; /* text parts joined with "\n" */
    size_t ntext;
    bool mixed; /* a part that is not text */
} msg_builder;

static void mb_part(span_map *sm, msg_builder *b, eb_part *p)
{
    if (b->m->n_parts >= sm->lim->max_messages) {
        fail(sm, "a message has more than %zu content parts", sm->lim->max_messages);
        evalbus__v1__content_part__free_unpacked(p, NULL);
        return;
    }
    EB_PUSH(b->m->parts, b->m->n_parts, p);
}

static void mb_text(span_map *sm, msg_builder *b, const char *text)
{
    eb_part *p;

    if (!text || failed(sm))
        return;
    p = eb_malloc(sizeof *p);
    *p = (eb_part)EVALBUS__V1__CONTENT_PART__INIT;
    p->type = eb_strdup("text");
    p->text = sm_str(sm, "message text", text, sm->lim->max_field_bytes);
    if (b->ntext++)
        eb_buf_putc(&b->text, '\n');
    eb_buf_puts(&b->text, text);
    mb_part(sm, b, p);
}

/* A part that is not text: type, its text when it has one, and url or the whole part as
 * JSON. */
static void mb_other(span_map *sm, msg_builder *b, const char *type, const char *text,
                     const char *url, const cJSON *whole)
{
    eb_part *p;

    if (failed(sm))
        return;
    p = eb_malloc(sizeof *p);
    *p = (eb_part)EVALBUS__V1__CONTENT_PART__INIT;
    p->type = sm_label(sm, "content part type", type ? type : "unknown");
    if (text)
        p->text = sm_str(sm, "content part text", text, sm->lim->max_field_bytes);
    if (url)
        p->url = sm_str(sm, "content part url", url, sm->lim->max_field_bytes);
    else if (whole)
        p->json = value_text(sm, "content part", whole, sm->lim->max_field_bytes);
    b->mixed = true;
    mb_part(sm, b, p);
}

static void mb_tool_call(span_map *sm, msg_builder *b, eb_tool_call *tc)
{
    if (b->m->n_tool_calls >= sm->lim->max_messages) {
        fail(sm, "a message has more than %zu tool calls", sm->lim->max_messages);
        evalbus__v1__tool_call__free_unpacked(tc, NULL);
        return;
    }
    EB_PUSH(b->m->tool_calls, b->m->n_tool_calls, tc);
}

/* Finishes the message: content = the joined text when every part is text and the message
 * has no content of its own; parts are kept when there is more than one, any is not text, or
 * the one text part differs from the message's own content. A message with parts is read (and
 * printed) as its parts, so content of its own goes first among them as a text part. Returns
 * the message or NULL (freed) on a problem. */
static eb_msg *mb_finish(span_map *sm, msg_builder *b)
{
    eb_msg *m = b->m;
    bool joined = false;

    if (!b->mixed && b->ntext > 0 && !m->content) {
        if (b->text.len > sm->lim->max_field_bytes)
            fail(sm, "message content is longer than %zu bytes", sm->lim->max_field_bytes);
        else
            m->content = eb_buf_steal(&b->text);
        joined = true;
    }
    /* the single text part is dropped only when content says the same (sm_str gives NULL for
     * "", so NULL and "" are equal here) */
    if (!b->mixed && m->n_parts == 1 &&
        !strcmp(m->content ? m->content : "", m->parts[0]->text ? m->parts[0]->text : "")) {
        evalbus__v1__content_part__free_unpacked(m->parts[0], NULL);
        free(m->parts);
        m->parts = NULL;
        m->n_parts = 0;
    }
    if (m->n_parts > 0 && m->content && !joined && !failed(sm)) {
        size_t n = m->n_parts;
        mb_text(sm, b, m->content); /* appended: moved to the front */
        if (m->n_parts == n + 1) {
            eb_part *first = m->parts[n];
            memmove(m->parts + 1, m->parts, n * sizeof(*m->parts));
            m->parts[0] = first;
        }
    }
    eb_buf_free(&b->text);
    b->m = NULL;
    if (failed(sm)) {
        msg_free(m);
        return NULL;
    }
    return m;
}

/* A tool call as JSON: {id, type, function: {name, arguments}} (OpenAI, GenAI events) or
 * {id, name, arguments} (GenAI parts). */
static eb_tool_call *tool_call_json(span_map *sm, const cJSON *j)
{
    eb_tool_call *tc;
    const cJSON *fn, *args;
    const size_t idmax = sm->lim->max_id_bytes;

    if (!cJSON_IsObject(j)) {
        fail(sm, "a tool call is not an object");
        return NULL;
    }
    fn = cJSON_GetObjectItemCaseSensitive(j, "function");
    if (!cJSON_IsObject(fn))
        fn = j;
    args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    tc = tool_call_new();
    tc->id = sm_label(sm, "tool call id", jstr(j, "id"));
    tc->type = eb_strdup(jstr(j, "type") && strcmp(jstr(j, "type"), "tool_call") ? jstr(j, "type")
                                                                                 : "function");
    strip_controls(tc->type);
    tc->name = sm_label(sm, "tool call name", jstr(fn, "name"));
    tc->arguments = value_text(sm, "tool call arguments", args, sm->lim->max_field_bytes);
    if (tc->type && strlen(tc->type) > idmax)
        fail(sm, "tool call type is longer than %zu bytes", idmax);
    return tc;
}

/* The roles of the JSON API (docs/api/traces.md), and the other names SDKs give them. */
static const char *const known_roles[] = {"system",    "user",     "assistant", "tool",
                                          "developer", "function", NULL};
static const struct {
    const char *alias, *role;
} role_aliases[] = {
    {"model", "assistant"},   /* Gemini */
    {"ai", "assistant"},      /* LangChain message types */
    {"human", "user"},        /* LangChain */
    {"chatbot", "assistant"}, /* Cohere */
};

/* Makes m->role one of the known roles: a known one in any case is lowered, an alias becomes
 * its role, a missing one is default_role, and another is default_role too, the role it had
 * becoming the message's name when it has none (a multi-agent "critic" is an assistant
 * named critic). False when a role the message had is dropped (it had a name already). */
static bool fix_role(span_map *sm, eb_msg *m, const char *default_role)
{
    char *given = m->role;
    bool kept = true;

    if (failed(sm))
        return true;
    m->role = NULL;
    for (size_t i = 0; given && known_roles[i] && !m->role; i++)
        if (!strcasecmp(given, known_roles[i]))
            m->role = eb_strdup(known_roles[i]);
    for (size_t i = 0; given && i < sizeof role_aliases / sizeof role_aliases[0] && !m->role; i++)
        if (!strcasecmp(given, role_aliases[i].alias))
            m->role = eb_strdup(role_aliases[i].role);
    if (!m->role) {
        m->role = sm_label(sm, "message role", default_role);
        if (given && !m->name) {
            m->name = given; /* a label already */
            given = NULL;
        } else if (given) {
            kept = false;
        }
    }
    free(given);
    return kept;
}

/* The members of a message object msg_json reads, as bits of its *used. */
enum {
    MK_ROLE = 1 << 0,
    MK_NAME = 1 << 1,
    MK_TOOL_CALL_ID = 1 << 2,
    MK_ID = 1 << 3,
    MK_PARTS = 1 << 4,
    MK_CONTENT = 1 << 5,
    MK_TOOL_CALLS = 1 << 6,
};

static const struct {
    unsigned bit;
    const char *key;
} msg_keys[] = {
    {MK_ROLE, "role"},   {MK_NAME, "name"},       {MK_TOOL_CALL_ID, "tool_call_id"}, {MK_ID, "id"},
    {MK_PARTS, "parts"}, {MK_CONTENT, "content"}, {MK_TOOL_CALLS, "tool_calls"},
};

/* True if every item of arr is an object (the tool calls tool_call_json takes). */
static bool all_objects(const cJSON *arr)
{
    const cJSON *e;

    cJSON_ArrayForEach(e, arr)
    {
        if (!cJSON_IsObject(e))
            return false;
    }
    return true;
}

/* One message as JSON: GenAI ({role, parts:[...]}), OpenAI-like ({role, content, tool_calls,
 * tool_call_id, name}) or an event body ({content, tool_calls, id}); a bare string is a
 * message of default_role. tool_calls may be JSON text of the array (span event attributes
 * hold only simple values, so SDKs send it so). *used (when not NULL) gets the MK_* bits of
 * the members that filled the message: an event keeps the others. NULL on a problem
 * (recorded). */
static eb_msg *msg_json(span_map *sm, const cJSON *j, const char *default_role, unsigned *used)
{
    msg_builder b = {.m = msg_new()};
    const size_t fmax = sm->lim->max_field_bytes;
    const cJSON *parts, *content, *calls, *e;
    cJSON *parsed_calls = NULL;
    unsigned u = 0;
    eb_msg *m = NULL;

    if (cJSON_IsString(j)) {
        b.m->role = sm_label(sm, "message role", default_role);
        b.m->content = sm_str(sm, "message content", j->valuestring, fmax);
        m = mb_finish(sm, &b);
        goto cleanup;
    }
    if (!cJSON_IsObject(j)) {
        fail(sm, "a message is not an object");
        m = mb_finish(sm, &b);
        goto cleanup;
    }
    if (jstr(j, "role")) {
        b.m->role = sm_label(sm, "message role", jstr(j, "role"));
        u |= MK_ROLE;
    }
    if (jstr(j, "name")) {
        b.m->name = sm_label(sm, "message name", jstr(j, "name"));
        u |= MK_NAME;
    }
    if (!fix_role(sm, b.m, default_role))
        u &= ~(unsigned)MK_ROLE;
    if (jstr(j, "tool_call_id")) {
        b.m->tool_call_id = sm_label(sm, "tool call id", jstr(j, "tool_call_id"));
        u |= MK_TOOL_CALL_ID;
    }
    if (!b.m->tool_call_id && b.m->role && !strcmp(b.m->role, "tool") && jstr(j, "id")) {
        b.m->tool_call_id = sm_label(sm, "tool call id", jstr(j, "id"));
        u |= MK_ID;
    }
    parts = cJSON_GetObjectItemCaseSensitive(j, "parts");
    if (cJSON_IsArray(parts))
        u |= MK_PARTS;
    cJSON_ArrayForEach(e, (cJSON_IsArray(parts) ? parts : NULL))
    {
        const char *type = jstr(e, "type");

        if (failed(sm))
            break;
        if (cJSON_IsString(e)) {
            mb_text(sm, &b, e->valuestring);
        } else if (type && !strcmp(type, "text") && jstr(e, "content")) {
            mb_text(sm, &b, jstr(e, "content"));
        } else if (type && !strcmp(type, "tool_call")) {
            eb_tool_call *tc = tool_call_json(sm, e);
            if (tc)
                mb_tool_call(sm, &b, tc);
        } else if (type && !strcmp(type, "tool_call_response") && !b.m->tool_call_id && !b.ntext) {
            b.m->tool_call_id = sm_label(sm, "tool call id", jstr(e, "id"));
            b.m->content = value_text(sm, "tool call response",
                                      cJSON_GetObjectItemCaseSensitive(e, "response"), fmax);
            if (!b.m->role)
                b.m->role = eb_strdup("tool");
        } else {
            mb_other(sm, &b, type, NULL, NULL, e);
        }
    }

    content = cJSON_GetObjectItemCaseSensitive(j, "content");
    if (cJSON_IsString(content)) {
        if (!b.m->content) {
            b.m->content = sm_str(sm, "message content", content->valuestring, fmax);
            u |= MK_CONTENT;
        }
    } else if (cJSON_IsArray(content)) {
        u |= MK_CONTENT;
        cJSON_ArrayForEach(e, content)
        {
            const char *type = jstr(e, "type");
            const cJSON *img = cJSON_GetObjectItemCaseSensitive(e, "image_url");

            if (failed(sm))
                break;
            if (cJSON_IsString(e))
                mb_text(sm, &b, e->valuestring);
            else if (type && !strcmp(type, "text") && jstr(e, "text"))
                mb_text(sm, &b, jstr(e, "text"));
            else if (type && !strcmp(type, "image_url") && cJSON_IsObject(img) && jstr(img, "url"))
                mb_other(sm, &b, type, NULL, jstr(img, "url"), NULL);
            else
                mb_other(sm, &b, type, NULL, NULL, e);
        }
    } else if (cJSON_IsNull(content)) {
        u |= MK_CONTENT; /* says nothing */
    } else if (content && !b.m->content) {
        b.m->content = value_text(sm, "message content", content, fmax);
        u |= MK_CONTENT;
    }

    calls = cJSON_GetObjectItemCaseSensitive(j, "tool_calls");
    if (cJSON_IsString(calls)) {
        /* JSON text; of another shape it is not ours to read (an event keeps it) */
        parsed_calls = parse_json_text(calls->valuestring);
        calls = cJSON_IsArray(parsed_calls) && all_objects(parsed_calls) ? parsed_calls : NULL;
    }
    if (cJSON_IsArray(calls))
        u |= MK_TOOL_CALLS;
    cJSON_ArrayForEach(e, (cJSON_IsArray(calls) ? calls : NULL))
    {
        eb_tool_call *tc;

        if (failed(sm))
            break;
        if ((tc = tool_call_json(sm, e)))
            mb_tool_call(sm, &b, tc);
    }
    m = mb_finish(sm, &b);
cleanup:
    cJSON_Delete(parsed_calls);
    if (used)
        *used = m ? u : 0;
    return m;
}

static bool msgs_push(span_map *sm, eb_msg ***arr, size_t *n, eb_msg *m)
{
    if (!m)
        return false;
    if (*n >= sm->lim->max_messages) {
        msg_free(m);
        return fail(sm, "more than %zu messages", sm->lim->max_messages);
    }
    EB_PUSH(*arr, *n, m);
    return true;
}

/* True if j has the shape of a message msg_json takes: a string, or an object whose tool_calls
 * (when an array) are objects. A message of another shape is not ours to read: the attribute
 * or event it came in stays as it is, and the span is stored. */
static bool message_shape_ok(const cJSON *j)
{
    const cJSON *calls, *e;

    if (cJSON_IsString(j))
        return true;
    if (!cJSON_IsObject(j))
        return false;
    calls = cJSON_GetObjectItemCaseSensitive(j, "tool_calls");
    cJSON_ArrayForEach(e, (cJSON_IsArray(calls) ? calls : NULL))
    {
        if (!cJSON_IsObject(e))
            return false;
    }
    return true;
}

static bool messages_shape_ok(const cJSON *arr)
{
    const cJSON *e;

    cJSON_ArrayForEach(e, arr)
    {
        if (!message_shape_ok(e))
            return false;
    }
    return true;
}

/* Messages from a JSON array (each item through msg_json). */
static bool msgs_json_array(span_map *sm, const cJSON *arr, const char *default_role,
                            eb_msg ***msgs, size_t *n)
{
    const cJSON *e;

    cJSON_ArrayForEach(e, arr)
    {
        if (!msgs_push(sm, msgs, n, msg_json(sm, e, default_role, NULL)))
            return false;
    }
    return true;
}

/* gen_ai.system_instructions: parts ([{type:"text",content}]) or a string -> a system
 * message. */
static void map_system_instructions(span_map *sm, eb_obs *o)
{
    cJSON *it = attr(sm, "gen_ai.system_instructions");
    cJSON *v = NULL, *wrapped = NULL;
    eb_msg *m;

    if (!it)
        return;
    v = cJSON_IsString(it) ? parse_json_text(it->valuestring) : cJSON_Duplicate(it, true);
    if (!v || !cJSON_IsArray(v)) {
        /* plain text instructions */
        cJSON_Delete(v);
        if (!cJSON_IsString(it))
            return;
        v = NULL;
        m = msg_json(sm, it, "system", NULL);
    } else {
        wrapped = cJSON_CreateObject();
        cJSON_AddStringToObject(wrapped, "role", "system");
        cJSON_AddItemToObject(wrapped, "parts", v);
        m = msg_json(sm, wrapped, "system", NULL);
        cJSON_Delete(wrapped);
    }
    if (msgs_push(sm, &o->input_messages, &o->n_input_messages, m))
        take(sm, it);
}

/* gen_ai.input.messages / gen_ai.output.messages (JSON text or structured). */
static bool map_messages_attr(span_map *sm, const char *key, const char *default_role,
                              eb_msg ***msgs, size_t *n)
{
    cJSON *v = attr_structured(sm, key);
    bool ok = false;

    if (cJSON_IsArray(v) && messages_shape_ok(v) && msgs_json_array(sm, v, default_role, msgs, n)) {
        take(sm, attr(sm, key));
        ok = true;
    }
    cJSON_Delete(v);
    return ok;
}

/* --- flattened messages: gen_ai.prompt.N.*, llm.input_messages.N.message.*, ... --- */

typedef enum flat_field {
    F_ROLE,
    F_CONTENT,
    F_NAME,
    F_TOOL_CALL_ID,
    F_PART_TYPE, /* first field of the parts group (indexed by sub) */
    F_PART_TEXT,
    F_PART_URL,
    F_TC_ID, /* first field of the tool call group (indexed by sub) */
    F_TC_NAME,
    F_TC_ARGS,
} flat_field;

typedef struct flat_pattern {
    const char *pat; /* '#' matches a decimal index */
    flat_field field;
} flat_pattern;

static const flat_pattern oi_patterns[] = {
    {"message.role", F_ROLE},
    {"message.content", F_CONTENT},
    {"message.name", F_NAME},
    {"message.tool_call_id", F_TOOL_CALL_ID},
    {"message.contents.#.message_content.type", F_PART_TYPE},
    {"message.contents.#.message_content.text", F_PART_TEXT},
    {"message.contents.#.message_content.image.image.url", F_PART_URL},
    {"message.tool_calls.#.tool_call.id", F_TC_ID},
    {"message.tool_calls.#.tool_call.function.name", F_TC_NAME},
    {"message.tool_calls.#.tool_call.function.arguments", F_TC_ARGS},
};

static const flat_pattern genai_patterns[] = {
    {"role", F_ROLE},
    {"content", F_CONTENT},
    {"name", F_NAME},
    {"tool_call_id", F_TOOL_CALL_ID},
    {"tool_calls.#.id", F_TC_ID},
    {"tool_calls.#.name", F_TC_NAME},
    {"tool_calls.#.arguments", F_TC_ARGS},
};

typedef struct flat_item {
    unsigned n, sub; /* message index, part or tool call index */
    flat_field field;
    size_t order; /* position among the attributes: first wins */
    cJSON *item;
    bool used; /* it filled a field: taken; a key sent twice leaves the second unused */
} flat_item;

/* Reads a decimal index below max at *s; advances *s. */
static bool read_index(const char **s, size_t max, unsigned *out)
{
    unsigned long v = 0;
    const char *p = *s;

    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (unsigned long)(*p - '0');
        if (v >= max)
            return false;
        p++;
    }
    *out = (unsigned)v;
    *s = p;
    return true;
}

static bool match_pattern(const char *s, const char *pat, size_t max, unsigned *sub)
{
    while (*pat) {
        if (*pat == '#') {
            if (!read_index(&s, max, sub))
                return false;
            pat++;
        } else if (*s++ != *pat++) {
            return false;
        }
    }
    return *s == '\0';
}

static int flat_cmp(const void *pa, const void *pb)
{
    const flat_item *a = pa, *b = pb;
    int ga = a->field >= F_TC_ID ? 2 : a->field >= F_PART_TYPE ? 1 : 0;
    int gb = b->field >= F_TC_ID ? 2 : b->field >= F_PART_TYPE ? 1 : 0;

    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    if (ga != gb)
        return ga - gb;
    if (ga && a->sub != b->sub)
        return a->sub < b->sub ? -1 : 1;
    if (a->field != b->field)
        return (int)a->field - (int)b->field;
    return a->order < b->order ? -1 : a->order > b->order;
}

static bool field_is_text_only(flat_field f)
{
    return f != F_CONTENT && f != F_PART_TEXT && f != F_TC_ARGS;
}

/* Builds the messages at prefix (e.g. "llm.input_messages.") matched by pats, of default_role
 * when they name none; takes the attributes used (of a key sent twice, the first: the other
 * stays). A content part with a url is kept with its url and text, of type "image" when it
 * names none. Returns true when there was at least one. */
static bool map_flat_messages(span_map *sm, const char *prefix, const flat_pattern *pats,
                              size_t npats, const char *default_role, eb_msg ***msgs, size_t *nmsgs)
{
    const size_t plen = strlen(prefix), max = sm->lim->max_messages;
    const size_t fmax = sm->lim->max_field_bytes;
    flat_item *items = NULL;
    size_t n = 0, order = 0, i;
    cJSON *it;
    msg_builder b = {0};
    eb_tool_call *tc = NULL;
    unsigned cur = 0, cur_sub = 0;
    int cur_group = -1;
    const char *part_type = NULL, *part_text = NULL, *part_url = NULL;
    flat_item *role_item = NULL; /* the open message's role */
    bool any = false;

    cJSON_ArrayForEach(it, sm->attrs)
    {
        const char *s = it->string;
        flat_item fi = {.order = order++, .item = it};

        if (!s || strncmp(s, prefix, plen))
            continue;
        s += plen;
        if (!read_index(&s, max, &fi.n) || *s++ != '.')
            continue;
        for (i = 0; i < npats; i++)
            if (match_pattern(s, pats[i].pat, max, &fi.sub)) {
                fi.field = pats[i].field;
                break;
            }
        if (i == npats)
            continue;
        if (fi.field < F_PART_TYPE)
            fi.sub = 0;
        if (field_is_text_only(fi.field) && !cJSON_IsString(it))
            continue;
        EB_PUSH(items, n, fi);
    }
    if (n == 0)
        goto cleanup;
    qsort(items, n, sizeof *items, flat_cmp);

    for (i = 0; i <= n && !failed(sm); i++) {
        flat_item *fi = i < n ? &items[i] : NULL;
        int group = fi ? (fi->field >= F_TC_ID ? 2 : fi->field >= F_PART_TYPE ? 1 : 0) : -1;
        const char *sv = fi && cJSON_IsString(fi->item) ? fi->item->valuestring : NULL;

        /* close the open part or tool call when the group or index changes */
        if (b.m && (!fi || fi->n != cur || group != cur_group || fi->sub != cur_sub)) {
            if (cur_group == 1) {
                /* OpenInference's types are "text" and "image" */
                if (!part_url && (!part_type || !strcmp(part_type, "text")))
                    mb_text(sm, &b, part_text ? part_text : "");
                else
                    mb_other(sm, &b, part_type ? part_type : "image", part_text, part_url, NULL);
                part_type = part_text = part_url = NULL;
            } else if (cur_group == 2 && tc) {
                mb_tool_call(sm, &b, tc);
                tc = NULL;
            }
        }
        if (b.m && (!fi || fi->n != cur)) {
            /* a role that fills nothing (another role, and the message has a name) stays */
            if (!fix_role(sm, b.m, default_role) && role_item)
                role_item->used = false;
            role_item = NULL;
            if (!msgs_push(sm, msgs, nmsgs, mb_finish(sm, &b)))
                break;
        }
        if (!fi)
            break;
        if (!b.m) {
            b = (msg_builder){.m = msg_new()};
            cur = fi->n;
        }
        cur_group = group;
        cur_sub = fi->sub;
        switch (fi->field) {
        case F_ROLE:
            if ((fi->used = !b.m->role)) {
                b.m->role = sm_label(sm, "message role", sv);
                role_item = fi;
            }
            break;
        case F_CONTENT:
            if ((fi->used = !b.m->content))
                b.m->content = value_text(sm, "message content", fi->item, fmax);
            break;
        case F_NAME:
            if ((fi->used = !b.m->name))
                b.m->name = sm_label(sm, "message name", sv);
            break;
        case F_TOOL_CALL_ID:
            if ((fi->used = !b.m->tool_call_id))
                b.m->tool_call_id = sm_label(sm, "tool call id", sv);
            break;
        case F_PART_TYPE:
            if ((fi->used = !part_type))
                part_type = sv;
            break;
        case F_PART_TEXT:
            if ((fi->used = !part_text && sv))
                part_text = sv;
            break;
        case F_PART_URL:
            if ((fi->used = !part_url))
                part_url = sv;
            break;
        case F_TC_ID:
        case F_TC_NAME:
        case F_TC_ARGS:
            if (!tc) {
                tc = tool_call_new();
                tc->type = eb_strdup("function");
            }
            if (fi->field == F_TC_ID && (fi->used = !tc->id))
                tc->id = sm_label(sm, "tool call id", sv);
            else if (fi->field == F_TC_NAME && (fi->used = !tc->name))
                tc->name = sm_label(sm, "tool call name", sv);
            else if (fi->field == F_TC_ARGS && (fi->used = !tc->arguments))
                tc->arguments = value_text(sm, "tool call arguments", fi->item, fmax);
            break;
        }
        any = true;
    }
    if (!failed(sm))
        for (i = 0; i < n; i++)
            if (items[i].used)
                take(sm, items[i].item);
cleanup:
    if (tc)
        evalbus__v1__tool_call__free_unpacked(tc, NULL);
    if (b.m) {
        eb_buf_free(&b.text);
        msg_free(b.m);
    }
    free(items);
    return any;
}

/* --- span events (gen_ai.*.message, gen_ai.choice) --- */

/* What became of one span event: used (it filled messages or text), and then its attributes
 * that filled nothing (kept in otel.events, so no attribute is lost), or NULL. */
typedef struct event_use {
    bool used;
    cJSON *left;
} event_use;

static const char *event_role(const char *name)
{
    static const struct {
        const char *event, *role;
    } roles[] = {
        {"gen_ai.system.message", "system"},
        {"gen_ai.user.message", "user"},
        {"gen_ai.assistant.message", "assistant"},
        {"gen_ai.tool.message", "tool"},
    };

    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (name && !strcmp(name, roles[i].event))
            return roles[i].role;
    return NULL;
}

/* Deletes from obj the members msg_json used (bits of used). */
static void drop_msg_keys(cJSON *obj, unsigned used)
{
    for (size_t i = 0; i < sizeof msg_keys / sizeof msg_keys[0]; i++)
        if (used & msg_keys[i].bit)
            cJSON_DeleteItemFromObjectCaseSensitive(obj, msg_keys[i].key);
}

/* One message event or gen_ai.choice mapped: the body is its gen_ai.event.content JSON text
 * when present, else its attributes; a choice's message is its "message" (a kvlist, JSON text
 * of an object, or plain text) or else the body itself. Pushes the message; returns the
 * event's attributes that filled nothing (a new tree, possibly empty) when it was used, else
 * NULL. */
static cJSON *map_message_event(span_map *sm, eb_obs *o, const otlp_event *ev, const char *role,
                                bool choice)
{
    cJSON *attrs = kvs_json(sm, ev->attributes, ev->n_attributes, 0);
    cJSON *content, *body = NULL, *parsed_body = NULL, *msg = NULL, *parsed_msg = NULL;
    const cJSON *src;
    unsigned bits = 0;
    bool used = false;

    if (!attrs)
        goto cleanup;
    content = cJSON_GetObjectItemCaseSensitive(attrs, "gen_ai.event.content");
    if (cJSON_IsString(content)) {
        parsed_body = parse_json_text(content->valuestring);
        if (!cJSON_IsObject(parsed_body))
            goto cleanup;
        body = parsed_body;
    } else {
        body = attrs;
    }
    src = body;
    if (choice) {
        msg = cJSON_GetObjectItemCaseSensitive(body, "message");
        if (cJSON_IsString(msg)) {
            /* JSON text of the message (what most SDKs send: event attributes hold only
             * simple values), or the plain text of its content */
            parsed_msg = parse_json_text(msg->valuestring);
            src = cJSON_IsObject(parsed_msg) ? parsed_msg : msg;
        } else if (cJSON_IsObject(msg)) {
            src = msg;
        } else {
            msg = NULL;
        }
    }
    if (message_shape_ok(src)) {
        eb_msg *m = msg_json(sm, src, choice ? "assistant" : role, &bits);

        if (choice)
            used = msgs_push(sm, &o->output_messages, &o->n_output_messages, m);
        else
            used = msgs_push(sm, &o->input_messages, &o->n_input_messages, m);
    }
    if (!used)
        goto cleanup;

    /* what is left: JSON text (gen_ai.event.content, a message as text) is used whole, as
     * gen_ai.input.messages is; of structured values, the members msg_json did not read */
    if (parsed_body) {
        cJSON_DeleteItemFromObjectCaseSensitive(attrs, "gen_ai.event.content");
    } else if (msg && cJSON_IsString(msg)) {
        cJSON_DeleteItemFromObjectCaseSensitive(attrs, "message");
    } else if (msg) {
        cJSON *m = cJSON_DetachItemViaPointer(attrs, msg);

        drop_msg_keys(m, bits);
        if (m->child)
            cJSON_AddItemToObjectCS(attrs, "message", m);
        else
            cJSON_Delete(m);
    } else {
        drop_msg_keys(attrs, bits);
    }
    /* the provider named again on the event says nothing more (older GenAI events carry it) */
    for (size_t i = 0; i < 2 && o->provider; i++) {
        const char *key = i ? "gen_ai.provider.name" : "gen_ai.system";
        const char *v = jstr(attrs, key);

        if (v && !strcmp(v, o->provider))
            cJSON_DeleteItemFromObjectCaseSensitive(attrs, key);
    }
cleanup:
    cJSON_Delete(parsed_body);
    cJSON_Delete(parsed_msg);
    if (!used) {
        cJSON_Delete(attrs);
        attrs = NULL;
    }
    return attrs;
}

/* Input messages from message events, output messages from gen_ai.choice events; marks the
 * events used. want_in / want_out say which side still has no messages. */
static void map_message_events(span_map *sm, eb_obs *o, event_use *use, bool want_in, bool want_out)
{
    const otlp_span *sp = sm->span;

    for (size_t i = 0; i < sp->n_events && !failed(sm); i++) {
        const otlp_event *ev = sp->events[i];
        const char *role = ev ? event_role(ev->name) : NULL;
        bool choice = ev && ev->name && !strcmp(ev->name, "gen_ai.choice");

        if ((!role || !want_in) && (!choice || !want_out))
            continue;
        use[i].left = map_message_event(sm, o, ev, role, choice);
        use[i].used = use[i].left != NULL;
    }
}

/* Older single-text events: gen_ai.content.prompt {gen_ai.prompt}, gen_ai.content.completion
 * {gen_ai.completion}. */
static void map_text_events(span_map *sm, eb_obs *o, event_use *use)
{
    const otlp_span *sp = sm->span;

    for (size_t i = 0; i < sp->n_events && !failed(sm); i++) {
        const otlp_event *ev = sp->events[i];
        bool prompt = ev && ev->name && !strcmp(ev->name, "gen_ai.content.prompt");
        bool completion = ev && ev->name && !strcmp(ev->name, "gen_ai.content.completion");
        const char *key = prompt ? "gen_ai.prompt" : "gen_ai.completion";
        char **dst = prompt ? &o->input_text : &o->output_text;

        if ((!prompt && !completion) || *dst)
            continue;
        for (size_t k = 0; k < ev->n_attributes; k++) {
            const otlp_kv *kv = ev->attributes[k];

            if (kv && kv->key && !strcmp(kv->key, key) && kv->value &&
                kv->value->value_case == EVALBUS__OTLP__V1__ANY_VALUE__VALUE_STRING_VALUE &&
                ev->n_attributes == 1) {
                *dst = sm_str(sm, key, kv->value->string_value, sm->lim->max_field_bytes);
                use[i].used = *dst != NULL; /* its only attribute: nothing left */
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* one span                                                                                  */

static bool nonzero(const ProtobufCBinaryData *b)
{
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i])
            return true;
    return false;
}

static char *hex_id(const ProtobufCBinaryData *b)
{
    char *s = eb_malloc(b->len * 2 + 1);

    eb_hex_encode(b->data, b->len, s);
    return s;
}

static bool str_ieq(const char *a, const char *b)
{
    return a && !strcasecmp(a, b);
}

/* Observation times; false (recorded) when beyond int64. */
static bool set_time(span_map *sm, uint64_t t, protobuf_c_boolean *has, int64_t *dst,
                     const char *what)
{
    if (t == 0)
        return true;
    if (t > INT64_MAX)
        return fail(sm, "%s is out of range", what);
    *has = 1;
    *dst = (int64_t)t;
    return true;
}

/* The tool call of a tool span (GenAI execute_tool or OpenInference TOOL). */
static void map_tool_span(span_map *sm, eb_obs *o)
{
    static const char *const id_keys[] = {"gen_ai.tool.call.id", "tool_call.id"};
    static const char *const name_keys[] = {"gen_ai.tool.name", "tool.name",
                                            "tool_call.function.name"};
    const size_t fmax = sm->lim->max_field_bytes;
    eb_tool_call *tc = tool_call_new();
    cJSON *it;

    tc->type = eb_strdup("function");
    tc->id = take_first_label(sm, id_keys, 2);
    tc->name = take_first_label(sm, name_keys, 3);
    if ((it = attr(sm, "gen_ai.tool.call.arguments")) ||
        (it = attr(sm, "tool_call.function.arguments"))) {
        tc->arguments = value_text(sm, "tool call arguments", it, fmax);
        take(sm, it);
    } else if (o->input_text) {
        tc->arguments = eb_strdup(o->input_text);
    }
    if ((it = attr(sm, "gen_ai.tool.call.result"))) {
        tc->result = value_text(sm, "tool call result", it, fmax);
        take(sm, it);
    } else if (o->output_text) {
        tc->result = eb_strdup(o->output_text);
    }
    tc->has_start_time_unix_nano = o->has_start_time_unix_nano;
    tc->start_time_unix_nano = o->start_time_unix_nano;
    tc->has_end_time_unix_nano = o->has_end_time_unix_nano;
    tc->end_time_unix_nano = o->end_time_unix_nano;
    EB_PUSH(o->tool_calls, o->n_tool_calls, tc);
}

/* metadata (OpenInference): a JSON object as text or as a kvlist -> metadata_json. */
static char *take_metadata(span_map *sm)
{
    cJSON *it = attr(sm, "metadata");
    cJSON *v = NULL;
    char *out = NULL;

    if (!it)
        return NULL;
    v = cJSON_IsString(it) ? parse_json_text(it->valuestring) : cJSON_Duplicate(it, true);
    if (cJSON_IsObject(v)) {
        out = eb_json_print(v);
        if (strlen(out) > sm->lim->max_metadata_bytes) {
            fail(sm, "metadata is longer than %zu bytes", sm->lim->max_metadata_bytes);
            free(out);
            out = NULL;
        } else {
            take(sm, it);
        }
    }
    cJSON_Delete(v);
    return out;
}

/* tag.tags (OpenInference): a list of strings, as a value or as JSON text. */
static void take_tags(span_map *sm, root_extra *rx)
{
    cJSON *it = attr(sm, "tag.tags");
    cJSON *v, *e;

    if (!it)
        return;
    v = cJSON_IsString(it) ? parse_json_text(it->valuestring) : cJSON_Duplicate(it, true);
    if (!cJSON_IsArray(v))
        goto cleanup;
    cJSON_ArrayForEach(e, v)
    {
        if (!cJSON_IsString(e))
            goto cleanup;
    }
    if ((size_t)cJSON_GetArraySize(v) > sm->lim->max_tags) {
        fail(sm, "tag.tags has more than %zu tags", sm->lim->max_tags);
        goto cleanup;
    }
    cJSON_ArrayForEach(e, v)
    {
        char *t = sm_label(sm, "a tag", e->valuestring);
        if (t)
            EB_PUSH(rx->tags, rx->ntags, t);
    }
    take(sm, it);
cleanup:
    cJSON_Delete(v);
}

/* The events not mapped to messages (and those that were, with the attributes that filled
 * nothing, when they had such), the links, the scope and the kind, under otel.*. Takes the
 * left attributes out of use[]. */
static void add_otel_keys(span_map *sm, const otlp_scope *scope, event_use *use)
{
    static const char *const kinds[] = {NULL,     "internal", "server",
                                        "client", "producer", "consumer"};
    const otlp_span *sp = sm->span;
    cJSON *events = NULL, *links = NULL;

    for (size_t i = 0; i < sp->n_events && !failed(sm); i++) {
        const otlp_event *ev = sp->events[i];
        cJSON *e, *a;

        if (!ev || (use[i].used && !(use[i].left && use[i].left->child)))
            continue;
        if (use[i].used) {
            a = use[i].left;
            use[i].left = NULL;
        } else if (!(a = kvs_json(sm, ev->attributes, ev->n_attributes, 0))) {
            break;
        }
        if (!utf8_ok(sm, "an event name", ev->name ? ev->name : "")) {
            cJSON_Delete(a);
            break;
        }
        e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", ev->name ? ev->name : "");
        if (ev->time_unix_nano) {
            /* a string of digits whatever its size (a fixed64: beyond int64 too) */
            char digits[24];

            snprintf(digits, sizeof digits, "%llu", (unsigned long long)ev->time_unix_nano);
            cJSON_AddStringToObject(e, "time_unix_nano", digits);
        }
        if (a->child)
            cJSON_AddItemToObject(e, "attributes", a);
        else
            cJSON_Delete(a);
        if (!events)
            events = cJSON_CreateArray();
        cJSON_AddItemToArray(events, e);
    }
    for (size_t i = 0; i < sp->n_links && !failed(sm); i++) {
        const Evalbus__Otlp__V1__Span__Link *lk = sp->links[i];
        cJSON *l, *a;
        char *hex;

        if (!lk)
            continue;
        if (!(a = kvs_json(sm, lk->attributes, lk->n_attributes, 0)))
            break;
        l = cJSON_CreateObject();
        hex = hex_id(&lk->trace_id);
        cJSON_AddStringToObject(l, "trace_id", hex);
        free(hex);
        hex = hex_id(&lk->span_id);
        cJSON_AddStringToObject(l, "span_id", hex);
        free(hex);
        if (a->child)
            cJSON_AddItemToObject(l, "attributes", a);
        else
            cJSON_Delete(a);
        if (!links)
            links = cJSON_CreateArray();
        cJSON_AddItemToArray(links, l);
    }
    if (failed(sm)) {
        cJSON_Delete(events);
        cJSON_Delete(links);
        return;
    }
    if (events && !attr(sm, "otel.events"))
        cJSON_AddItemToObject(sm->attrs, "otel.events", events);
    else
        cJSON_Delete(events);
    if (links && !attr(sm, "otel.links"))
        cJSON_AddItemToObject(sm->attrs, "otel.links", links);
    else
        cJSON_Delete(links);
    if (scope && scope->name && scope->name[0] && !attr(sm, "otel.scope.name") &&
        utf8_ok(sm, "the scope name", scope->name))
        cJSON_AddStringToObject(sm->attrs, "otel.scope.name", scope->name);
    if (scope && scope->version && scope->version[0] && !attr(sm, "otel.scope.version") &&
        utf8_ok(sm, "the scope version", scope->version))
        cJSON_AddStringToObject(sm->attrs, "otel.scope.version", scope->version);
    if (scope && scope->n_attributes && !attr(sm, "otel.scope.attributes")) {
        cJSON *a = kvs_json(sm, scope->attributes, scope->n_attributes, 0);

        if (a)
            cJSON_AddItemToObject(sm->attrs, "otel.scope.attributes", a);
    }
    if (sp->kind > 0 && (size_t)sp->kind < sizeof kinds / sizeof kinds[0] &&
        !attr(sm, "otel.span.kind"))
        cJSON_AddStringToObject(sm->attrs, "otel.span.kind", kinds[sp->kind]);
}

static void events_free(event_use *use, size_t n)
{
    for (size_t i = 0; use && i < n; i++)
        cJSON_Delete(use[i].left);
    free(use);
}

/* Maps one span. NULL when it is rejected (sm->why says why). */
static eb_obs *map_span(span_map *sm, const otlp_scope *scope)
{
    static const char *const provider_keys[] = {"gen_ai.provider.name", "gen_ai.system",
                                                "llm.provider", "llm.system"};
    static const char *const model_keys[] = {"gen_ai.response.model", "gen_ai.request.model",
                                             "llm.model_name"};
    static const char *const in_tok_keys[] = {
        "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"};
    static const char *const out_tok_keys[] = {"gen_ai.usage.output_tokens",
                                               "gen_ai.usage.completion_tokens",
                                               "llm.token_count.completion"};
    static const char *const total_keys[] = {"gen_ai.usage.total_tokens", "llm.token_count.total"};
    static const char *const session_keys[] = {"session.id", "gen_ai.conversation.id"};
    static const char *const user_keys[] = {"user.id", "enduser.id"};
    const otlp_span *sp = sm->span;
    const ingest_limits *lim = sm->lim;
    eb_obs *o = eb_malloc(sizeof *o);
    event_use *use = NULL;
    const char *op, *oi_kind;
    bool is_tool, is_gen;
    long long v;
    cJSON *it;
    char *printed = NULL;

    *o = (eb_obs)EVALBUS__V1__OBSERVATION__INIT;
    if (!(sm->attrs = kvs_json(sm, sp->attributes, sp->n_attributes, 0)))
        goto fail;
    use = eb_calloc(sp->n_events + 1, sizeof *use);

    o->id = hex_id(&sp->span_id);
    if (sp->parent_span_id.len == 8 && nonzero(&sp->parent_span_id))
        o->parent_id = hex_id(&sp->parent_span_id);
    o->name = sm_label(sm, "name", sp->name);
    set_time(sm, sp->start_time_unix_nano, &o->has_start_time_unix_nano, &o->start_time_unix_nano,
             "start time");
    set_time(sm, sp->end_time_unix_nano, &o->has_end_time_unix_nano, &o->end_time_unix_nano,
             "end time");
    if (sp->status && sp->status->code == EVALBUS__OTLP__V1__STATUS__STATUS_CODE__STATUS_CODE_OK)
        o->status = eb_strdup("ok");
    else if (sp->status &&
             sp->status->code == EVALBUS__OTLP__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR)
        o->status = eb_strdup("error");
    else
        o->status = eb_strdup("unset");
    if (sp->status)
        o->status_message = sm_str(sm, "status message", sp->status->message, lim->max_field_bytes);

    /* the type: decided before any attribute is taken */
    op = attr_str(sm, "gen_ai.operation.name");
    oi_kind = attr_str(sm, "openinference.span.kind");
    is_tool = (op && !strcmp(op, "execute_tool")) || str_ieq(oi_kind, "TOOL");
    is_gen = !is_tool && (attr(sm, "gen_ai.request.model") || attr(sm, "gen_ai.response.model") ||
                          attr(sm, "llm.model_name") || str_ieq(oi_kind, "LLM"));
    o->type = eb_strdup(is_tool ? "tool" : is_gen ? "generation" : "span");

    o->provider = take_first_label(sm, provider_keys, 4);
    o->model = take_first_label(sm, model_keys, 3);
    if (take_first_count(sm, in_tok_keys, 3, &v)) {
        o->has_input_tokens = 1;
        o->input_tokens = v;
    }
    if (take_first_count(sm, out_tok_keys, 3, &v)) {
        o->has_output_tokens = 1;
        o->output_tokens = v;
    }
    /* a total is taken only when it is the sum of the two (it then says nothing more) */
    for (size_t i = 0; i < 2 && o->has_input_tokens && o->has_output_tokens; i++)
        if ((it = attr(sm, total_keys[i])) && json_int(it, &v) &&
            v == o->input_tokens + o->output_tokens)
            take(sm, it);

    /* input and output text */
    if ((it = attr(sm, "input.value"))) {
        o->input_text = value_text(sm, "input.value", it, lim->max_field_bytes);
        take(sm, it);
    } else if ((it = attr(sm, "gen_ai.prompt")) && cJSON_IsString(it)) {
        o->input_text = value_text(sm, "gen_ai.prompt", it, lim->max_field_bytes);
        take(sm, it);
    }
    if ((it = attr(sm, "output.value"))) {
        o->output_text = value_text(sm, "output.value", it, lim->max_field_bytes);
        take(sm, it);
    } else if ((it = attr(sm, "gen_ai.completion")) && cJSON_IsString(it)) {
        o->output_text = value_text(sm, "gen_ai.completion", it, lim->max_field_bytes);
        take(sm, it);
    }

    /* input messages: the current GenAI attributes, else the first older form present */
    map_system_instructions(sm, o);
    if (!map_messages_attr(sm, "gen_ai.input.messages", "user", &o->input_messages,
                           &o->n_input_messages) &&
        o->n_input_messages == 0 &&
        !map_flat_messages(sm, "gen_ai.prompt.", genai_patterns,
                           sizeof genai_patterns / sizeof genai_patterns[0], "user",
                           &o->input_messages, &o->n_input_messages))
        map_flat_messages(sm, "llm.input_messages.", oi_patterns,
                          sizeof oi_patterns / sizeof oi_patterns[0], "user", &o->input_messages,
                          &o->n_input_messages);
    if (!map_messages_attr(sm, "gen_ai.output.messages", "assistant", &o->output_messages,
                           &o->n_output_messages) &&
        !map_flat_messages(sm, "gen_ai.completion.", genai_patterns,
                           sizeof genai_patterns / sizeof genai_patterns[0], "assistant",
                           &o->output_messages, &o->n_output_messages))
        map_flat_messages(sm, "llm.output_messages.", oi_patterns,
                          sizeof oi_patterns / sizeof oi_patterns[0], "assistant",
                          &o->output_messages, &o->n_output_messages);
    map_message_events(sm, o, use, o->n_input_messages == 0, o->n_output_messages == 0);
    map_text_events(sm, o, use);

    if (is_tool)
        map_tool_span(sm, o);
    o->metadata_json = take_metadata(sm);
    if (sm->is_root) {
        sm->root->session_id = take_first_label(sm, session_keys, 2);
        sm->root->user_id = take_first_label(sm, user_keys, 2);
        take_tags(sm, sm->root);
        if (o->metadata_json)
            sm->root->metadata_json = eb_strdup(o->metadata_json);
    }

    add_otel_keys(sm, scope, use);
    if (failed(sm))
        goto fail;
    sm->has_otel_resource = attr(sm, "otel.resource") != NULL;
    if (sm->attrs->child) {
        printed = eb_json_print(sm->attrs);
        if (strlen(printed) > lim->max_metadata_bytes) {
            fail(sm, "attributes are longer than %zu bytes as JSON", lim->max_metadata_bytes);
            goto fail;
        }
        o->attributes_json = printed;
        printed = NULL;
    }
    events_free(use, sp->n_events);
    return o;
fail:
    free(printed);
    events_free(use, sp->n_events);
    evalbus__v1__observation__free_unpacked(o, NULL);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* traces                                                                                    */

static void root_extra_free(root_extra *rx)
{
    free(rx->session_id);
    free(rx->user_id);
    free(rx->metadata_json);
    for (size_t i = 0; i < rx->ntags; i++)
        free(rx->tags[i]);
    free(rx->tags);
    memset(rx, 0, sizeof *rx);
}

static eb_msg **msgs_copy(eb_msg *const *msgs, size_t n)
{
    eb_msg **out = eb_malloc((n ? n : 1) * sizeof *out);

    for (size_t i = 0; i < n; i++) {
        size_t len = evalbus__v1__message__get_packed_size(msgs[i]);
        uint8_t *buf = eb_malloc(len ? len : 1);

        evalbus__v1__message__pack(msgs[i], buf);
        out[i] = evalbus__v1__message__unpack(NULL, len, buf);
        free(buf);
        if (!out[i]) {
            fprintf(stderr, "otlp: out of memory copying a message\n");
            abort();
        }
    }
    return out;
}

static void set_trace_input(eb_trace *t, const eb_obs *o)
{
    if (o->n_input_messages) {
        t->input_messages = msgs_copy(o->input_messages, o->n_input_messages);
        t->n_input_messages = o->n_input_messages;
    }
    t->input_text = eb_strdup(o->input_text);
}

static void set_trace_output(eb_trace *t, const eb_obs *o)
{
    if (o->n_output_messages) {
        t->output_messages = msgs_copy(o->output_messages, o->n_output_messages);
        t->n_output_messages = o->n_output_messages;
    }
    t->output_text = eb_strdup(o->output_text);
}

static bool has_input(const eb_obs *o)
{
    return o->n_input_messages || o->input_text;
}

static bool has_output(const eb_obs *o)
{
    return o->n_output_messages || o->output_text;
}

/* Trace-level fields: from the root (when in this request) and the generations. */
static void fill_trace(eb_trace *t, const eb_obs *root, root_extra *rx)
{
    const eb_obs *first_gen = NULL, *last_gen = NULL, *model_gen = NULL;

    for (size_t i = 0; i < t->n_observations; i++) {
        const eb_obs *o = t->observations[i];

        if (strcmp(o->type, "generation"))
            continue;
        if (!first_gen || o->start_time_unix_nano < first_gen->start_time_unix_nano)
            first_gen = o;
        if (!last_gen || o->start_time_unix_nano >= last_gen->start_time_unix_nano)
            last_gen = o;
        if ((o->model || o->provider) &&
            (!model_gen || o->start_time_unix_nano < model_gen->start_time_unix_nano))
            model_gen = o;
    }
    if (model_gen) {
        t->model = eb_strdup(model_gen->model);
        t->provider = eb_strdup(model_gen->provider);
    }
    if (!root)
        return;
    t->name = eb_strdup(root->name);
    t->has_start_time_unix_nano = root->has_start_time_unix_nano;
    t->start_time_unix_nano = root->start_time_unix_nano;
    t->has_end_time_unix_nano = root->has_end_time_unix_nano;
    t->end_time_unix_nano = root->end_time_unix_nano;
    if (root->has_start_time_unix_nano && root->has_end_time_unix_nano &&
        root->end_time_unix_nano >= root->start_time_unix_nano) {
        t->has_latency_ms = 1;
        t->latency_ms = (double)(root->end_time_unix_nano - root->start_time_unix_nano) / 1e6;
    }
    t->status = eb_strdup(root->status);
    t->status_message = eb_strdup(root->status_message);
    if (has_input(root))
        set_trace_input(t, root);
    else if (first_gen)
        set_trace_input(t, first_gen);
    if (has_output(root))
        set_trace_output(t, root);
    else if (last_gen)
        set_trace_output(t, last_gen);
    t->session_id = rx->session_id;
    t->user_id = rx->user_id;
    t->metadata_json = rx->metadata_json;
    t->tags = rx->tags;
    t->n_tags = rx->ntags;
    memset(rx, 0, sizeof *rx); /* given to the trace */
}

typedef struct trace_out {
    eb_trace *t;
    size_t first_seq;
} trace_out;

typedef struct id_pos {
    uint64_t id;
    size_t pos;
} id_pos;

static int cmp_id_pos(const void *a, const void *b)
{
    const id_pos *x = a, *y = b;

    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* [n] flags: the span's 8-byte id came earlier among es[0..n) (one sort, not a scan per span:
 * a request may hold thousands of spans of one trace). Storing either of two spans with one id
 * would be arbitrary, so only the first can be kept. */
static bool *repeated_span_ids(const map_entry *es, size_t n)
{
    bool *dup = eb_calloc(n, sizeof *dup);
    id_pos *ids = eb_malloc(n * sizeof *ids);
    size_t m = 0;

    for (size_t i = 0; i < n; i++)
        if (es[i].span->span_id.len == 8) {
            memcpy(&ids[m].id, es[i].span->span_id.data, 8);
            ids[m++].pos = i;
        }
    qsort(ids, m, sizeof *ids, cmp_id_pos);
    for (size_t k = 1; k < m; k++)
        if (ids[k].id == ids[k - 1].id)
            dup[ids[k].pos] = true;
    free(ids);
    return dup;
}

/* Where an observation of map_trace came from. */
typedef struct obs_src {
    size_t entry;           /* index in its trace's entries */
    bool has_otel_resource; /* the span has an attribute of that name */
} obs_src;

/* Adds "otel.resource" (r's attributes) to o's attributes_json, which is printed JSON of an
 * object (so spliced, not parsed again: numbers stay as printed). False when that makes it
 * longer than max_metadata_bytes. */
static bool add_span_resource(const ingest_limits *lim, eb_obs *o, const map_resource *r)
{
    static const char wrap[] = "{\"resource\":"; /* r->attributes_json is {"resource":{...}} */
    const char *inner = r->attributes_json + sizeof wrap - 1;
    eb_buf b = {0};
    bool ok;

    if (o->attributes_json) {
        eb_buf_append(&b, o->attributes_json, strlen(o->attributes_json) - 1);
        eb_buf_putc(&b, ',');
    } else {
        eb_buf_putc(&b, '{');
    }
    eb_buf_puts(&b, "\"otel.resource\":");
    eb_buf_append(&b, inner, strlen(inner) - 1);
    eb_buf_putc(&b, '}');
    ok = b.len <= lim->max_metadata_bytes;
    if (ok) {
        free(o->attributes_json);
        o->attributes_json = eb_buf_steal(&b);
    }
    eb_buf_free(&b);
    return ok;
}

/* Maps the spans of one trace (es[0..n), in request order); appends the trace to *traces. */
static void map_trace(map_ctx *mc, const map_entry *es, size_t n, const map_resource *res,
                      trace_out **traces, size_t *ntraces)
{
    const ingest_limits *lim = mc->lim;
    eb_trace *t = eb_malloc(sizeof *t);
    root_extra rx = {0};
    const eb_obs *root = NULL;
    size_t root_entry = SIZE_MAX, res_entry = SIZE_MAX;
    trace_out to;
    bool *dup = repeated_span_ids(es, n);
    obs_src *src = NULL; /* where each observation came from */
    size_t nsrc = 0, kept = 0;
    const map_resource *tres;

    *t = (eb_trace)EVALBUS__V1__TRACE__INIT;
    t->id = hex_id(&es[0].span->trace_id);
    for (size_t i = 0; i < n; i++)
        if (es[i].span->parent_span_id.len == 0 || !nonzero(&es[i].span->parent_span_id)) {
            root_entry = i;
            break;
        }
    for (size_t i = 0; i < n; i++) {
        span_map sm = {.lim = lim, .span = es[i].span, .is_root = i == root_entry, .root = &rx};
        eb_obs *o;

        if (t->n_observations >= lim->max_observations) {
            char why[96];

            snprintf(why, sizeof why, "trace has more than %zu spans", lim->max_observations);
            reject(mc, es[i].span, es[i].seq, why);
            continue;
        }
        if (dup[i]) {
            reject(mc, es[i].span, es[i].seq, "a span with this id came earlier in the request");
            continue;
        }
        o = map_span(&sm, es[i].scope);
        cJSON_Delete(sm.attrs);
        if (!o) {
            reject(mc, es[i].span, es[i].seq, sm.why);
            if (i == root_entry)
                root_extra_free(&rx);
            continue;
        }
        if (i == root_entry)
            root = o;
        if (res_entry == SIZE_MAX || i == root_entry)
            res_entry = i;
        EB_PUSH(t->observations, t->n_observations, o);
        EB_PUSH(src, nsrc, ((obs_src){.entry = i, .has_otel_resource = sm.has_otel_resource}));
        mc->out->spans++;
    }
    free(dup);
    if (t->n_observations == 0) {
        evalbus__v1__trace__free_unpacked(t, NULL);
        goto cleanup;
    }
    /* The trace keeps one resource; a span of another (a second service in the request) keeps
     * its own as otel.resource, so that no resource attribute is lost. The trace's resource
     * is known only once its spans are mapped (the root, else the first accepted), hence a
     * second pass, which may still reject a span that its resource makes too large (never the
     * one whose resource the trace keeps). */
    tres = &res[es[res_entry].res];
    for (size_t k = 0; k < t->n_observations; k++) {
        eb_obs *o = t->observations[k];
        const map_entry *e = &es[src[k].entry];
        const map_resource *r = &res[e->res];

        if (r != tres && r->attributes_json && !src[k].has_otel_resource &&
            (!tres->attributes_json || strcmp(r->attributes_json, tres->attributes_json)) &&
            !add_span_resource(lim, o, r)) {
            char why[120];

            snprintf(why, sizeof why,
                     "attributes are longer than %zu bytes as JSON with otel.resource",
                     lim->max_metadata_bytes);
            reject(mc, e->span, e->seq, why);
            mc->out->spans--;
            evalbus__v1__observation__free_unpacked(o, NULL);
            continue;
        }
        t->observations[kept++] = o;
    }
    t->n_observations = kept;
    t->project = eb_strdup(tres->project);
    t->attributes_json = eb_strdup(tres->attributes_json);
    fill_trace(t, root, &rx);
    root_extra_free(&rx);
    to.t = t;
    to.first_seq = es[0].seq;
    EB_PUSH(*traces, *ntraces, to);
cleanup:
    free(src);
}

/* Project and resource attributes of one ResourceSpans. */
static void map_resource_init(map_ctx *mc, const otlp_resource_spans *rs, map_resource *r)
{
    span_map sm = {.lim = mc->lim};
    const Evalbus__Otlp__V1__Resource *res = rs ? rs->resource : NULL;
    cJSON *attrs = kvs_json(&sm, res ? res->attributes : NULL, res ? res->n_attributes : 0, 0);
    const cJSON *p;
    const char *project = "default";

    if (attrs) {
        if ((p = cJSON_GetObjectItemCaseSensitive(attrs, "evalbus.project")) && cJSON_IsString(p) &&
            p->valuestring[0])
            project = p->valuestring;
        else if ((p = cJSON_GetObjectItemCaseSensitive(attrs, "service.name")) &&
                 cJSON_IsString(p) && p->valuestring[0])
            project = p->valuestring;
        /* a project is what its traces are found, restricted and retained by: one that no
         * trace of the JSON API could have is refused, not stored under another name */
        if (strlen(project) > mc->lim->max_id_bytes)
            fail(&sm,
                 "the project (resource attribute evalbus.project or service.name) is "
                 "longer than %zu bytes",
                 mc->lim->max_id_bytes);
        else if (ingest_has_control(project, strlen(project)))
            fail(&sm, "the project (resource attribute evalbus.project or service.name) must not "
                      "contain control characters");
        else
            r->project = eb_strdup(project);
        if (attrs->child && !failed(&sm)) {
            cJSON *wrap = cJSON_CreateObject();

            cJSON_AddItemToObject(wrap, "resource", attrs);
            attrs = NULL;
            r->attributes_json = eb_json_print(wrap);
            cJSON_Delete(wrap);
            if (strlen(r->attributes_json) > mc->lim->max_metadata_bytes)
                fail(&sm, "resource attributes are longer than %zu bytes as JSON",
                     mc->lim->max_metadata_bytes);
        }
    }
    cJSON_Delete(attrs);
    if (!r->project)
        r->project = eb_strdup("default");
    if (failed(&sm))
        snprintf(r->why, sizeof r->why, "resource: %s", sm.why);
}

/* Checks a span's ids; NULL when they are fine, else why not. */
static const char *check_ids(const otlp_span *sp)
{
    if (sp->trace_id.len != 16)
        return "trace id must be 16 bytes (32 hex characters)";
    if (!nonzero(&sp->trace_id))
        return "trace id is all zeros";
    if (sp->span_id.len != 8)
        return "span id must be 8 bytes (16 hex characters)";
    if (!nonzero(&sp->span_id))
        return "span id is all zeros";
    if (sp->parent_span_id.len != 0 && sp->parent_span_id.len != 8)
        return "parent span id must be empty or 8 bytes (16 hex characters)";
    for (size_t i = 0; i < sp->n_links; i++)
        if (sp->links[i] && (sp->links[i]->trace_id.len != 16 || sp->links[i]->span_id.len != 8))
            return "a link's trace id must be 16 bytes and its span id 8 (32 and 16 hex "
                   "characters)";
    return NULL;
}

static int entry_cmp(const void *pa, const void *pb)
{
    const map_entry *a = pa, *b = pb;
    int c = memcmp(a->span->trace_id.data, b->span->trace_id.data, 16);

    if (c)
        return c;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int trace_out_cmp(const void *pa, const void *pb)
{
    const trace_out *a = pa, *b = pb;

    return a->first_seq < b->first_seq ? -1 : a->first_seq > b->first_seq;
}

void ingest_otlp_map(const otlp_request *req, const ingest_limits *lim, const size_t *nul,
                     size_t nnul, ingest_otlp_result *out)
{
    map_ctx mc = {.lim = lim, .out = out};
    map_resource *res = NULL;
    map_entry *entries = NULL;
    trace_out *traces = NULL;
    size_t nentries = 0, ntraces = 0, seq = 0;

    if (req->n_resource_spans)
        res = eb_calloc(req->n_resource_spans, sizeof *res);
    for (size_t r = 0; r < req->n_resource_spans; r++) {
        const otlp_resource_spans *rs = req->resource_spans[r];

        map_resource_init(&mc, rs, &res[r]);
        for (size_t s = 0; rs && s < rs->n_scope_spans; s++) {
            const Evalbus__Otlp__V1__ScopeSpans *ss = rs->scope_spans[s];

            for (size_t k = 0; ss && k < ss->n_spans; k++, seq++) {
                const otlp_span *sp = ss->spans[k];
                const char *why = check_ids(sp);
                map_entry e = {.span = sp, .scope = ss->scope, .res = r, .seq = seq};

                while (nnul && *nul < seq) {
                    nul++;
                    nnul--;
                }
                if (!why && nnul && *nul == seq)
                    why = "a string of the span, its resource or its scope holds a NUL byte "
                          "(stored text cannot hold one)";
                if (!why && res[r].why[0])
                    why = res[r].why;
                if (why)
                    reject(&mc, sp, seq, why);
                else
                    EB_PUSH(entries, nentries, e);
            }
        }
    }
    if (nentries)
        qsort(entries, nentries, sizeof *entries, entry_cmp);
    for (size_t i = 0; i < nentries;) {
        size_t j = i + 1;

        while (j < nentries &&
               !memcmp(entries[j].span->trace_id.data, entries[i].span->trace_id.data, 16))
            j++;
        map_trace(&mc, entries + i, j - i, res, &traces, &ntraces);
        i = j;
    }
    if (ntraces) {
        qsort(traces, ntraces, sizeof *traces, trace_out_cmp);
        out->traces = eb_realloc(out->traces, (out->ntraces + ntraces) * sizeof *out->traces);
        for (size_t i = 0; i < ntraces; i++)
            out->traces[out->ntraces++] = traces[i].t;
    }
    if (out->rejected_spans > 0) {
        out->nreasons = mc.nreasons;
        out->reasons_len = mc.reasons.len;
        if (out->rejected_spans > mc.nreasons)
            eb_buf_printf(&mc.reasons, " (and %lld more)", out->rejected_spans - mc.nreasons);
        free(out->error_message);
        out->error_message = eb_buf_steal(&mc.reasons);
    }
    eb_buf_free(&mc.reasons);
    for (size_t r = 0; r < req->n_resource_spans; r++) {
        free(res[r].project);
        free(res[r].attributes_json);
    }
    free(res);
    free(entries);
    free(traces);
}
