/* otlp.c -- OTLP/HTTP trace export requests, protobuf and JSON, decoded into one form.
 *
 * Both decoders produce an Evalbus__Otlp__V1__ExportTraceServiceRequest (proto/evalbus/otlp/
 * v1/otlp.proto) and hand it to ingest_otlp_map() (otlp_map.c), so the two encodings cannot
 * map differently.
 *   - protobuf: a walk over the wire format first checks that it is well formed and that
 *     messages nest at most OTLP_MAX_DEPTH deep (protobuf-c recurses once per level and has no
 *     limit of its own: nested AnyValue arrays would overflow the stack), then protobuf-c
 *     unpacks it.
 *   - JSON: eb_json_parse_object() (strict UTF-8), then a walk that builds the same structs:
 *     lowerCamelCase keys (snake_case accepted), hex trace and span ids, int64 and fixed64
 *     values as strings or numbers, enums as integers (names accepted), AnyValue by member
 *     name, bytes as base64. A malformed id is kept as a 1-byte id so that the mapper rejects
 *     that span alone.
 * Memory: the decoded request lives in a per-request arena (protobuf-c is given it as its
 * allocator; JSON strings point into the cJSON tree) that is freed in one call once mapped.
 * The arena refuses to grow beyond OTLP_ARENA_FACTOR times the body (at most OTLP_ARENA_MAX)
 * plus 1 MiB, which bounds what a small body full of empty messages, or any one request, can
 * cost (EB_ERR_TOO_LARGE); a protobuf body whose message structs alone (counted by the wire
 * check) would pass that is refused before anything is allocated.
 * Threading: no shared state; any thread may decode. */
#include "otlp.h"

#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    OTLP_MAX_DEPTH = 64,     /* message nesting on the wire (request = 1) */
    OTLP_MAX_ANY_DEPTH = 28, /* AnyValue arrays / kvlists inside one another (JSON) */
    /* decoded bytes per body byte: protobuf-c gives every element of an array of small values
     * (4-5 bytes on the wire) a 48-byte AnyValue, a pointer and 32-64 bytes of bookkeeping
     * while it scans, so such arrays take 21-34 times their size; only a great many empty
     * messages take more (45 times and up) */
    OTLP_ARENA_FACTOR = 40,
    OTLP_ARENA_CHUNK = 65536, /* arena chunk size (larger allocations get their own) */
};
/* ... and never more than this for one request (plus 1 MiB), whatever its size: with two decode
 * threads a replica holds at most about half a GiB of decoded requests. A body that fits the
 * factor but not this (array-heavy protobuf of over 6.4 MiB) is to be sent in smaller parts. */
#define OTLP_ARENA_MAX ((size_t)256 << 20)

typedef Evalbus__Otlp__V1__ExportTraceServiceRequest otlp_request;
typedef Evalbus__Otlp__V1__ResourceSpans otlp_resource_spans;
typedef Evalbus__Otlp__V1__ScopeSpans otlp_scope_spans;
typedef Evalbus__Otlp__V1__Span otlp_span;
typedef Evalbus__Otlp__V1__Span__Event otlp_event;
typedef Evalbus__Otlp__V1__Span__Link otlp_link;
typedef Evalbus__Otlp__V1__KeyValue otlp_kv;
typedef Evalbus__Otlp__V1__AnyValue otlp_any;

/* ---------------------------------------------------------------------------------------- */
/* arena                                                                                     */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, size;
    alignas(max_align_t) unsigned char data[];
} arena_chunk;

typedef struct otlp_arena {
    arena_chunk *head;
    size_t total; /* bytes obtained from malloc */
    size_t cap;
    bool exhausted; /* an allocation was refused because of cap */
} otlp_arena;

/* Returns size bytes aligned for any type, or NULL when the cap would be passed. */
static void *arena_alloc(otlp_arena *a, size_t size)
{
    const size_t align = alignof(max_align_t);
    arena_chunk *c = a->head;
    size_t want = (size + align - 1) & ~(align - 1);
    void *p;

    if (size == 0)
        want = align;
    if (want < size)
        goto refuse;
    if (!c || c->size - c->used < want) {
        size_t csize = want > OTLP_ARENA_CHUNK / 4 ? want : OTLP_ARENA_CHUNK;

        if (csize > a->cap || a->total > a->cap - csize)
            goto refuse;
        c = eb_malloc(sizeof *c + csize);
        c->size = csize;
        c->used = 0;
        a->total += csize;
        if (a->head && want > OTLP_ARENA_CHUNK / 4) {
            /* a large block: keep filling the current chunk afterwards */
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    p = c->data + c->used;
    c->used += want;
    return p;
refuse:
    a->exhausted = true;
    return NULL;
}

static void arena_free_all(otlp_arena *a)
{
    arena_chunk *c = a->head;

    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

static void *arena_pb_alloc(void *data, size_t size)
{
    return arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *p)
{
    (void)data; /* freed with the arena */
    (void)p;
}

static void arena_init(otlp_arena *a, size_t body_len)
{
    memset(a, 0, sizeof *a);
    a->cap = (body_len > OTLP_ARENA_MAX / OTLP_ARENA_FACTOR ? OTLP_ARENA_MAX
                                                            : body_len * OTLP_ARENA_FACTOR) +
             (1u << 20);
}

/* The EB_ERR_TOO_LARGE of a request that decodes to more than OTLP_ARENA_FACTOR times its size
 * (over_factor) or else to more than OTLP_ARENA_MAX. */
static eb_status too_large(bool over_factor)
{
    if (!over_factor)
        return eb_error(EB_ERR_TOO_LARGE,
                        "the request decodes to more than %zu MiB; send it in smaller parts",
                        OTLP_ARENA_MAX >> 20);
    return eb_error(EB_ERR_TOO_LARGE,
                    "the request decodes to more than %d times its size (a great many empty "
                    "messages); send fewer at once",
                    OTLP_ARENA_FACTOR);
}

/* The EB_ERR_TOO_LARGE of a request whose decoding passed a's cap. */
static eb_status arena_too_large(const otlp_arena *a)
{
    return too_large(a->cap < OTLP_ARENA_MAX);
}

/* ---------------------------------------------------------------------------------------- */
/* results                                                                                   */

void ingest_otlp_result_free(ingest_otlp_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->ntraces; i++)
        if (r->traces[i])
            evalbus__v1__trace__free_unpacked(r->traces[i], NULL);
    free(r->traces);
    free(r->error_message);
    memset(r, 0, sizeof *r);
}

void ingest_otlp_response_protobuf(const ingest_otlp_result *r, eb_buf *out)
{
    Evalbus__Otlp__V1__ExportTraceServiceResponse resp =
        EVALBUS__OTLP__V1__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
    Evalbus__Otlp__V1__ExportTracePartialSuccess ps =
        EVALBUS__OTLP__V1__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
    size_t n;

    if (r->rejected_spans > 0) {
        ps.rejected_spans = r->rejected_spans;
        ps.error_message = r->error_message ? r->error_message : (char *)"";
        resp.partial_success = &ps;
    }
    n = evalbus__otlp__v1__export_trace_service_response__get_packed_size(&resp);
    eb_buf_reserve(out, n + 1);
    evalbus__otlp__v1__export_trace_service_response__pack(&resp, (uint8_t *)out->data + out->len);
    out->len += n;
    out->data[out->len] = '\0';
}

void ingest_otlp_response_json(const ingest_otlp_result *r, eb_buf *out)
{
    if (r->rejected_spans <= 0) {
        eb_buf_puts(out, "{}");
        return;
    }
    eb_buf_printf(out, "{\"partialSuccess\":{\"rejectedSpans\":\"%lld\",\"errorMessage\":\"",
                  r->rejected_spans);
    eb_buf_json_escape(out, r->error_message ? r->error_message : "");
    eb_buf_puts(out, "\"}}");
}

/* ---------------------------------------------------------------------------------------- */
/* protobuf                                                                                  */

/* Reasons a body fails wire_check, for the 400 answer: an exporter's author needs to know
 * whether the body was cut short or built wrong. */
static const char WIRE_TRUNCATED[] = "truncated (a field runs past the end of its message)";
static const char WIRE_LONG_VARINT[] = "a varint longer than 10 bytes";
static const char WIRE_BAD_NUMBER[] = "a field number of 0 or above 2^29-1";
static const char WIRE_BAD_TYPE[] = "a wire type OTLP does not use (a group, or 6 or 7)";
static const char WIRE_TOO_DEEP[] = "messages nested deeper than 64 levels";
_Static_assert(OTLP_MAX_DEPTH == 64, "WIRE_TOO_DEEP names the depth");
static const char WIRE_NUL[] = "a string holding a NUL byte (protobuf-c would cut it there)";

/* Sets *why (when why is not NULL) and returns false, for use in conditions. */
static bool wire_fail(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return false;
}

static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v, const char **why)
{
    uint64_t x = 0;

    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;

        if (*p >= end)
            return wire_fail(why, WIRE_TRUNCATED);
        b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return wire_fail(why, WIRE_LONG_VARINT);
}

/* One field of a protobuf message: its number and, for a length-delimited field, its bytes
 * (data NULL and len 0 for the other wire types). */
typedef struct wire_field {
    unsigned num;
    bool delimited;
    const uint8_t *data;
    size_t len;
} wire_field;

/* Reads the field at *p (< end) into f and moves *p past it. False if it is malformed (*why,
 * when why is not NULL, says how): a field number of 0 or over 2^29-1, a wire type OTLP does
 * not use (groups 3 and 4; 6 and 7 do not exist), or a value running past end. */
static bool wire_read(const uint8_t **p, const uint8_t *end, wire_field *f, const char **why)
{
    uint64_t tag, v;

    if (!wire_varint(p, end, &tag, why))
        return false;
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return wire_fail(why, WIRE_BAD_NUMBER);
    f->num = (unsigned)(tag >> 3);
    f->delimited = (tag & 7) == 2;
    f->data = NULL;
    f->len = 0;
    switch (tag & 7) {
    case 0:
        return wire_varint(p, end, &v, why);
    case 1:
        if ((size_t)(end - *p) < 8)
            return wire_fail(why, WIRE_TRUNCATED);
        *p += 8;
        return true;
    case 5:
        if ((size_t)(end - *p) < 4)
            return wire_fail(why, WIRE_TRUNCATED);
        *p += 4;
        return true;
    case 2:
        if (!wire_varint(p, end, &v, why))
            return false;
        if (v > (uint64_t)(end - *p))
            return wire_fail(why, WIRE_TRUNCATED);
        f->data = *p;
        f->len = (size_t)v;
        *p += v;
        return true;
    default:
        return wire_fail(why, WIRE_BAD_TYPE);
    }
}

/* Checks that data[0..n) is a well-formed message of type desc (NULL: of unknown type, whose
 * fields are only skipped) nesting at most OTLP_MAX_DEPTH levels. A string field holding a NUL
 * byte (protobuf-c would cut the string there) fails the check when nul is NULL, else sets *nul.
 * When structs is not NULL, the size of every message's struct, as the arena rounds it, is
 * added to it: what unpacking will take at the least. On failure *why (when why is not NULL)
 * is one of the WIRE_* reasons. Recursion is bounded by that depth. */
static bool wire_check(const uint8_t *p, size_t n, const ProtobufCMessageDescriptor *desc,
                       int depth, bool *nul, size_t *structs, const char **why)
{
    const uint8_t *end = p + n;

    if (depth > OTLP_MAX_DEPTH)
        return wire_fail(why, WIRE_TOO_DEEP);
    if (desc && structs)
        *structs += (desc->sizeof_message + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    while (p < end) {
        const ProtobufCFieldDescriptor *fd;
        wire_field f;

        if (!wire_read(&p, end, &f, why))
            return false;
        if (!f.delimited || !desc || !(fd = protobuf_c_message_descriptor_get_field(desc, f.num)))
            continue;
        if (fd->type == PROTOBUF_C_TYPE_MESSAGE &&
            !wire_check(f.data, f.len, fd->descriptor, depth + 1, nul, structs, why))
            return false;
        if (fd->type == PROTOBUF_C_TYPE_STRING && memchr(f.data, 0, f.len)) {
            if (!nul)
                return wire_fail(why, WIRE_NUL);
            *nul = true;
        }
    }
    return true;
}

/* Decodes data[0..len) as a desc (named what in messages) into a, capped (arena_init), once
 * wire_check (given nul) has passed it. EB_OK with *msg, else EB_ERR_INVALID (malformed) or
 * EB_ERR_TOO_LARGE (the cap ran out) with a message; a is to be freed either way. */
static eb_status unpack_checked(const ProtobufCMessageDescriptor *desc, const char *what,
                                const uint8_t *data, size_t len, bool *nul, otlp_arena *a,
                                ProtobufCMessage **msg)
{
    ProtobufCAllocator alloc = {arena_pb_alloc, arena_pb_free, a};
    const char *why = WIRE_TRUNCATED;
    size_t structs = 0;

    arena_init(a, len);
    *msg = NULL;
    if (!wire_check(data, len, desc, 1, nul, &structs, &why))
        return eb_error(EB_ERR_INVALID, "not %s: malformed protobuf: %s", what, why);
    if (structs > a->cap) /* refused before anything is allocated */
        return too_large(len <= (SIZE_MAX - (1u << 20)) / OTLP_ARENA_FACTOR &&
                         structs > len * OTLP_ARENA_FACTOR + (1u << 20));
    *msg = protobuf_c_message_unpack(desc, &alloc, len, data);
    if (!*msg && a->exhausted)
        return arena_too_large(a);
    if (!*msg)
        return eb_error(EB_ERR_INVALID, "not %s: malformed protobuf", what);
    return EB_OK;
}

/* The next field of a message that wire_check has passed; false at its end. */
static bool wire_next(const uint8_t **p, const uint8_t *end, wire_field *f)
{
    return *p < end && wire_read(p, end, f, NULL);
}

/* True if a string field of msg[0..n) (a desc at depth), other than field skip and what it
 * holds, has a NUL byte, at any depth. */
static bool nul_besides(const uint8_t *p, size_t n, const ProtobufCMessageDescriptor *desc,
                        unsigned skip, int depth)
{
    const uint8_t *end = p + n;
    wire_field f;

    while (wire_next(&p, end, &f)) {
        const ProtobufCFieldDescriptor *fd;

        if (!f.delimited || f.num == skip ||
            !(fd = protobuf_c_message_descriptor_get_field(desc, f.num)))
            continue;
        if (fd->type == PROTOBUF_C_TYPE_STRING && memchr(f.data, 0, f.len))
            return true;
        /* well formed (checked before), so false here means a NUL in a string */
        if (fd->type == PROTOBUF_C_TYPE_MESSAGE &&
            !wire_check(f.data, f.len, fd->descriptor, depth + 1, NULL, NULL, NULL))
            return true;
    }
    return false;
}

/* The next length-delimited field numbered num of a message that wire_check has passed; false
 * at the end. */
static bool wire_next_of(const uint8_t **p, const uint8_t *end, unsigned num, wire_field *f)
{
    while (wire_next(p, end, f))
        if (f->num == num && f->delimited)
            return true;
    return false;
}

/* The spans of a checked ExportTraceServiceRequest that hold a NUL byte in a string, or whose
 * resource or scope does (protobuf-c would cut such a string at the NUL): their numbers in wire
 * order, which is the order of the decoded arrays and ingest_otlp_map's span numbers, ascending
 * in *out (the caller frees). Fields: request 1 resource_spans, ResourceSpans 2 scope_spans,
 * ScopeSpans 2 spans. */
static void nul_spans(const uint8_t *data, size_t len, size_t **out, size_t *nout)
{
    const uint8_t *p = data, *end = data + len;
    size_t seq = 0;
    wire_field rs, ss, sp;

    *out = NULL;
    *nout = 0;
    while (wire_next_of(&p, end, 1, &rs)) {
        const uint8_t *q = rs.data, *qend = rs.data + rs.len;
        bool rs_nul =
            nul_besides(rs.data, rs.len, &evalbus__otlp__v1__resource_spans__descriptor, 2, 2);

        while (wire_next_of(&q, qend, 2, &ss)) {
            const uint8_t *r = ss.data, *rend = ss.data + ss.len;
            bool ss_nul = rs_nul || nul_besides(ss.data, ss.len,
                                                &evalbus__otlp__v1__scope_spans__descriptor, 2, 3);

            for (; wire_next_of(&r, rend, 2, &sp); seq++)
                if (ss_nul || !wire_check(sp.data, sp.len, &evalbus__otlp__v1__span__descriptor, 4,
                                          NULL, NULL, NULL))
                    EB_PUSH(*out, *nout, seq);
        }
    }
}

struct ingest_pb_box {
    otlp_arena arena;
};

eb_status ingest_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                           ingest_pb_box **box, ProtobufCMessage **msg)
{
    ingest_pb_box *b = eb_calloc(1, sizeof *b);
    char what[160];
    eb_status st;

    snprintf(what, sizeof what, "a %s", desc->name);
    st = unpack_checked(desc, what, data, len, NULL, &b->arena, msg);
    if (st != EB_OK) {
        ingest_pb_release(b);
        b = NULL;
    }
    *box = b;
    return st;
}

void ingest_pb_release(ingest_pb_box *box)
{
    if (!box)
        return;
    arena_free_all(&box->arena);
    free(box);
}

eb_status ingest_otlp_decode_protobuf(const uint8_t *data, size_t len, const ingest_limits *lim,
                                      ingest_otlp_result *out)
{
    otlp_arena arena;
    ProtobufCMessage *req;
    eb_status st;
    bool any_nul = false;

    memset(out, 0, sizeof *out);
    /* a NUL byte in a string rejects the span it is in (or every span of the resource or scope
     * it is in), not the request: exporters do not send a refused export again */
    st = unpack_checked(&evalbus__otlp__v1__export_trace_service_request__descriptor,
                        "an OTLP ExportTraceServiceRequest", data, len, &any_nul, &arena, &req);
    if (st == EB_OK) {
        size_t *nul = NULL, nnul = 0;

        if (any_nul) /* which spans: a second walk, only then */
            nul_spans(data, len, &nul, &nnul);
        ingest_otlp_map((const otlp_request *)req, lim, nul, nnul, out);
        free(nul);
    }
    arena_free_all(&arena);
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* JSON                                                                                      */

typedef struct json_ctx {
    otlp_arena *arena;
    char path[160]; /* where the current value is, for error messages */
} json_ctx;

/* Arena allocation for the JSON walk; EB_ERR_TOO_LARGE when the cap is reached. */
#define JALLOC(ctx, ptr, n)                                                                        \
    do {                                                                                           \
        (ptr) = arena_alloc((ctx)->arena, (n));                                                    \
        if (!(ptr)) {                                                                              \
            st = arena_too_large((ctx)->arena);                                                    \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* Member camel (or its snake_case spelling snake); NULL when absent or null. */
static const cJSON *jget(const cJSON *obj, const char *camel, const char *snake)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, camel);

    if (!it && snake)
        it = cJSON_GetObjectItemCaseSensitive(obj, snake);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

static eb_status jbad(const json_ctx *c, const char *field, const char *what)
{
    return eb_error(EB_ERR_INVALID, "%s%s%s must be %s", c->path, c->path[0] ? "." : "", field,
                    what);
}

/* Appends ".name" (or "name" at the start) and "[idx]" when idx >= 0 to the path; returns the
 * old length, to restore it with jpath_pop(). */
static size_t jpath_push(json_ctx *c, const char *name, long idx)
{
    size_t old = strlen(c->path);
    size_t room = sizeof c->path - old;

    if (idx >= 0)
        snprintf(c->path + old, room, "%s%s[%ld]", old ? "." : "", name, idx);
    else
        snprintf(c->path + old, room, "%s%s", old ? "." : "", name);
    return old;
}

static void jpath_pop(json_ctx *c, size_t old)
{
    c->path[old] = '\0';
}

/* An array member (empty when absent): *items and *n. */
static eb_status jarray(json_ctx *c, const cJSON *obj, const char *camel, const char *snake,
                        const cJSON **first, size_t *n)
{
    const cJSON *it = jget(obj, camel, snake);

    *first = NULL;
    *n = 0;
    if (!it)
        return EB_OK;
    if (!cJSON_IsArray(it))
        return jbad(c, camel, "an array");
    *first = it->child;
    *n = (size_t)cJSON_GetArraySize(it);
    return EB_OK;
}

/* A string member, pointing into the tree ("" when absent). */
static eb_status jstring(json_ctx *c, const cJSON *obj, const char *camel, const char *snake,
                         char **out)
{
    const cJSON *it = jget(obj, camel, snake);

    *out = (char *)"";
    if (!it)
        return EB_OK;
    if (!cJSON_IsString(it))
        return jbad(c, camel, "a string");
    *out = it->valuestring;
    return EB_OK;
}

/* Parses a decimal integer string (optional '-', digits only) into *v. */
static bool parse_int64_text(const char *s, bool allow_negative, int64_t *v)
{
    char *end = NULL;
    const char *p = s;

    if (*p == '-') {
        if (!allow_negative)
            return false;
        p++;
    }
    if (*p < '0' || *p > '9')
        return false;
    errno = 0;
    if (allow_negative) {
        long long x = strtoll(s, &end, 10);
        if (errno || *end)
            return false;
        *v = x;
    } else {
        unsigned long long x = strtoull(s, &end, 10);
        if (errno || *end)
            return false;
        *v = (int64_t)x;
    }
    return true;
}

/* An integer given as a string of digits or a JSON number: exact either way, since a number
 * with more digits than a double holds keeps its text (eb_json_keep_exact). */
static bool jint_value(const cJSON *it, bool allow_negative, int64_t *v)
{
    if (cJSON_IsString(it))
        return parse_int64_text(it->valuestring, allow_negative, v);
    if (cJSON_IsNumber(it) && it->valuestring &&
        parse_int64_text(it->valuestring, allow_negative, v))
        return true;
    if (cJSON_IsNumber(it)) {
        double d = it->valuedouble;

        if (!isfinite(d) || d != floor(d) ||
            d >= (allow_negative ? 9223372036854775808.0 : 18446744073709551616.0) ||
            d < (allow_negative ? -9223372036854775808.0 : 0))
            return false;
        if (d >= 9223372036854775808.0)
            *v = (int64_t)(uint64_t)d;
        else
            *v = (int64_t)d;
        return true;
    }
    return false;
}

/* Nanoseconds since the epoch (fixed64): "1700000000000000000" or a number. */
static eb_status jtime(json_ctx *c, const cJSON *obj, const char *camel, const char *snake,
                       uint64_t *out)
{
    const cJSON *it = jget(obj, camel, snake);
    int64_t v = 0;

    *out = 0;
    if (!it)
        return EB_OK;
    if (!jint_value(it, false, &v))
        return jbad(c, camel, "a time in nanoseconds (a string of digits or an integer)");
    *out = (uint64_t)v;
    return EB_OK;
}

/* A hex id of want bytes. Absent or "": empty. Wrong length or non-hex: a 1-byte id, which
 * no check accepts, so that the span alone is rejected. Not a string: EB_ERR_INVALID. */
static eb_status jhex_id(json_ctx *c, const cJSON *obj, const char *camel, const char *snake,
                         size_t want, ProtobufCBinaryData *out)
{
    static uint8_t bad_id[1] = {0};
    eb_status st = EB_OK;
    const cJSON *it = jget(obj, camel, snake);
    const char *s;
    size_t n;
    uint8_t *bytes = NULL;

    out->len = 0;
    out->data = NULL;
    if (!it)
        goto cleanup;
    if (!cJSON_IsString(it)) {
        st = jbad(c, camel, "a hex string");
        goto cleanup;
    }
    s = it->valuestring;
    n = strlen(s);
    if (n == 0)
        goto cleanup;
    if (n != want * 2)
        goto bad;
    JALLOC(c, bytes, want);
    for (size_t i = 0; i < want; i++) {
        int hi = eb_hex_digit(s[2 * i]), lo = eb_hex_digit(s[2 * i + 1]);

        if (hi < 0 || lo < 0)
            goto bad;
        bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    out->data = bytes;
    out->len = want;
    goto cleanup;
bad:
    out->data = bad_id;
    out->len = 1;
cleanup:
    return st;
}

/* An enum given as an integer, a string of digits, or one of the names (index = value). */
static eb_status jenum(json_ctx *c, const cJSON *obj, const char *camel, const char *snake,
                       const char *const *names, int nnames, int *out)
{
    const cJSON *it = jget(obj, camel, snake);
    int64_t v;

    *out = 0;
    if (!it)
        return EB_OK;
    if (cJSON_IsString(it))
        for (int i = 0; i < nnames; i++)
            if (!strcmp(it->valuestring, names[i])) {
                *out = i;
                return EB_OK;
            }
    if (!jint_value(it, true, &v) || v < INT32_MIN || v > INT32_MAX)
        return jbad(c, camel, "an enum value (an integer)");
    *out = (int)v; /* unknown values pass; the mapper treats them as unset */
    return EB_OK;
}

static eb_status json_keyvalues(json_ctx *c, const cJSON *obj, const char *camel, const char *snake,
                                int depth, otlp_kv ***out, size_t *nout);

/* Base64 as the protobuf JSON mapping takes it for bytes: the standard or the URL-safe
 * alphabet, with or without padding. */
static bool base64_any_decode(const char *s, size_t n, eb_buf *out)
{
    char *t;
    bool ok;

    if (eb_base64_decode(s, n, out))
        return true;
    eb_buf_reset(out);
    t = eb_strndup(s, n);
    for (size_t i = 0; i < n; i++)
        t[i] = t[i] == '+' ? '-' : t[i] == '/' ? '_' : t[i];
    for (int pad = 0; pad < 2 && n > 0 && t[n - 1] == '='; pad++)
        n--;
    ok = eb_base64url_decode(t, n, out);
    free(t);
    return ok;
}

static eb_status json_anyvalue(json_ctx *c, const cJSON *v, int depth, otlp_any **out)
{
    eb_status st = EB_OK;
    otlp_any *a = NULL;
    const cJSON *it;

    *out = NULL;
    if (depth > OTLP_MAX_ANY_DEPTH) {
        st = eb_error(EB_ERR_INVALID, "%s: attribute values nest deeper than %d levels", c->path,
                      OTLP_MAX_ANY_DEPTH);
        goto cleanup;
    }
    JALLOC(c, a, sizeof *a);
    *a = (otlp_any)EVALBUS__OTLP__V1__ANY_VALUE__INIT;
    *out = a;
    if (!v)
        goto cleanup;
    if (!cJSON_IsObject(v)) {
        st = eb_error(EB_ERR_INVALID, "%s must be an AnyValue object", c->path);
        goto cleanup;
    }
    if ((it = jget(v, "stringValue", "string_value"))) {
        if (!cJSON_IsString(it)) {
            st = jbad(c, "stringValue", "a string");
            goto cleanup;
        }
        a->value_case = EVALBUS__OTLP__V1__ANY_VALUE__VALUE_STRING_VALUE;
        a->string_value = it->valuestring;
    } else if ((it = jget(v, "boolValue", "bool_value"))) {
        if (!cJSON_IsBool(it)) {
            st = jbad(c, "boolValue", "true or false");
            goto cleanup;
        }
        a->value_case = EVALBUS__OTLP__V1__ANY_VALUE__VALUE_BOOL_VALUE;
        a->bool_value = cJSON_IsTrue(it);
    } else if ((it = jget(v, "intValue", "int_value"))) {
        int64_t x;

        if (!jint_value(it, true, &x)) {
            st = jbad(c, "intValue", "an integer (a string of digits or a number)");
            goto cleanup;
        }
        a->value_case = EVALBUS__OTLP__V1__ANY_VALUE__VALUE_INT_VALUE;
        a->int_value = x;
    } else if ((it = jget(v, "doubleValue", "double_value"))) {
        double d;

        if (cJSON_IsNumber(it)) {
            d = it->valuedouble;
        } else if (cJSON_IsString(it) && !strcmp(it->valuestring, "NaN")) {
            d = NAN;
        } else if (cJSON_IsString(it) && !strcmp(it->valuestring, "Infinity")) {
            d = INFINITY;
        } else if (cJSON_IsString(it) && !strcmp(it->valuestring, "-Infinity")) {
            d = -INFINITY;
        } else if (cJSON_IsString(it) && it->valuestring[0]) {
            char *end = NULL;
            d = strtod(it->valuestring, &end);
            if (*end) {
                st = jbad(c, "doubleValue", "a number");
                goto cleanup;
            }
        } else {
            st = jbad(c, "doubleValue", "a number");
            goto cleanup;
        }
        a->value_case = EVALBUS__OTLP__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
        a->double_value = d;
    } else if ((it = jget(v, "bytesValue", "bytes_value"))) {
        eb_buf b = {0};
        size_t n;

        if (!cJSON_IsString(it)) {
            st = jbad(c, "bytesValue", "a base64 string");
            goto cleanup;
        }
        n = strlen(it->valuestring);
        if (!base64_any_decode(it->valuestring, n, &b)) {
            eb_buf_free(&b);
            st = jbad(c, "bytesValue", "base64");
            goto cleanup;
        }
        a->value_case = EVALBUS__OTLP__V1__ANY_VALUE__VALUE_BYTES_VALUE;
        a->bytes_value.len = b.len;
        a->bytes_value.data = arena_alloc(c->arena, b.len);
        if (a->bytes_value.data)
            memcpy(a->bytes_value.data, b.data, b.len);
        eb_buf_free(&b);
        if (!a->bytes_value.data) {
            st = arena_too_large(c->arena);
            goto cleanup;
        }
    } else if ((it = jget(v, "arrayValue", "array_value"))) {
        Evalbus__Otlp__V1__ArrayValue *arr;
        const cJSON *e;
        size_t n, i = 0;
        size_t old;

        if (!cJSON_IsObject(it)) {
            st = jbad(c, "arrayValue", "an object");
            goto cleanup;
        }
        JALLOC(c, arr, sizeof *arr);
        *arr = (Evalbus__Otlp__V1__ArrayValue)EVALBUS__OTLP__V1__ARRAY_VALUE__INIT;
        a->value_case = EVALBUS__OTLP__V1__ANY_VALUE__VALUE_ARRAY_VALUE;
        a->array_value = arr;
        old = jpath_push(c, "arrayValue", -1);
        st = jarray(c, it, "values", NULL, &e, &n);
        if (st == EB_OK && n)
            arr->values = arena_alloc(c->arena, n * sizeof *arr->values);
        if (st == EB_OK && n && !arr->values)
            st = arena_too_large(c->arena);
        for (; st == EB_OK && e; e = e->next, i++) {
            size_t old2 = jpath_push(c, "values", (long)i);
            st = json_anyvalue(c, e, depth + 1, &arr->values[i]);
            jpath_pop(c, old2);
        }
        arr->n_values = st == EB_OK ? n : 0;
        jpath_pop(c, old);
    } else if ((it = jget(v, "kvlistValue", "kvlist_value"))) {
        Evalbus__Otlp__V1__KeyValueList *kl;
        size_t old;

        if (!cJSON_IsObject(it)) {
            st = jbad(c, "kvlistValue", "an object");
            goto cleanup;
        }
        JALLOC(c, kl, sizeof *kl);
        *kl = (Evalbus__Otlp__V1__KeyValueList)EVALBUS__OTLP__V1__KEY_VALUE_LIST__INIT;
        a->value_case = EVALBUS__OTLP__V1__ANY_VALUE__VALUE_KVLIST_VALUE;
        a->kvlist_value = kl;
        old = jpath_push(c, "kvlistValue", -1);
        st = json_keyvalues(c, it, "values", NULL, depth + 1, &kl->values, &kl->n_values);
        jpath_pop(c, old);
    }
    /* {} or only unknown members: an empty value */
cleanup:
    return st;
}

static eb_status json_keyvalues(json_ctx *c, const cJSON *obj, const char *camel, const char *snake,
                                int depth, otlp_kv ***out, size_t *nout)
{
    eb_status st = EB_OK;
    const cJSON *e;
    size_t n, i = 0;
    otlp_kv **kvs = NULL;

    *out = NULL;
    *nout = 0;
    st = jarray(c, obj, camel, snake, &e, &n);
    if (st != EB_OK || n == 0)
        goto cleanup;
    JALLOC(c, kvs, n * sizeof *kvs);
    for (; e; e = e->next, i++) {
        size_t old = jpath_push(c, camel, (long)i);
        otlp_kv *kv;

        if (!cJSON_IsObject(e)) {
            st = eb_error(EB_ERR_INVALID, "%s must be an object with key and value", c->path);
            jpath_pop(c, old);
            goto cleanup;
        }
        JALLOC(c, kv, sizeof *kv);
        *kv = (otlp_kv)EVALBUS__OTLP__V1__KEY_VALUE__INIT;
        st = jstring(c, e, "key", NULL, &kv->key);
        if (st == EB_OK) {
            size_t old2 = jpath_push(c, "value", -1);
            st = json_anyvalue(c, jget(e, "value", NULL), depth, &kv->value);
            jpath_pop(c, old2);
        }
        jpath_pop(c, old);
        if (st != EB_OK)
            goto cleanup;
        kvs[i] = kv;
    }
    *out = kvs;
    *nout = n;
cleanup:
    return st;
}

static eb_status json_event(json_ctx *c, const cJSON *e, otlp_event **out)
{
    eb_status st = EB_OK;
    otlp_event *ev = NULL;

    if (!cJSON_IsObject(e)) {
        st = eb_error(EB_ERR_INVALID, "%s must be an object", c->path);
        goto cleanup;
    }
    JALLOC(c, ev, sizeof *ev);
    *ev = (otlp_event)EVALBUS__OTLP__V1__SPAN__EVENT__INIT;
    if ((st = jtime(c, e, "timeUnixNano", "time_unix_nano", &ev->time_unix_nano)) != EB_OK ||
        (st = jstring(c, e, "name", NULL, &ev->name)) != EB_OK ||
        (st = json_keyvalues(c, e, "attributes", NULL, 0, &ev->attributes, &ev->n_attributes)) !=
            EB_OK)
        goto cleanup;
cleanup:
    *out = ev;
    return st;
}

static eb_status json_link(json_ctx *c, const cJSON *l, otlp_link **out)
{
    eb_status st = EB_OK;
    otlp_link *lk = NULL;

    if (!cJSON_IsObject(l)) {
        st = eb_error(EB_ERR_INVALID, "%s must be an object", c->path);
        goto cleanup;
    }
    JALLOC(c, lk, sizeof *lk);
    *lk = (otlp_link)EVALBUS__OTLP__V1__SPAN__LINK__INIT;
    if ((st = jhex_id(c, l, "traceId", "trace_id", 16, &lk->trace_id)) != EB_OK ||
        (st = jhex_id(c, l, "spanId", "span_id", 8, &lk->span_id)) != EB_OK ||
        (st = jstring(c, l, "traceState", "trace_state", &lk->trace_state)) != EB_OK ||
        (st = json_keyvalues(c, l, "attributes", NULL, 0, &lk->attributes, &lk->n_attributes)) !=
            EB_OK)
        goto cleanup;
cleanup:
    *out = lk;
    return st;
}

static eb_status json_span(json_ctx *c, const cJSON *s, otlp_span **out)
{
    static const char *const kinds[] = {"SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL",
                                        "SPAN_KIND_SERVER",      "SPAN_KIND_CLIENT",
                                        "SPAN_KIND_PRODUCER",    "SPAN_KIND_CONSUMER"};
    static const char *const codes[] = {"STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"};
    eb_status st = EB_OK;
    otlp_span *sp = NULL;
    const cJSON *e, *status;
    size_t n, i;
    int kind = 0;

    if (!cJSON_IsObject(s)) {
        st = eb_error(EB_ERR_INVALID, "%s must be an object", c->path);
        goto cleanup;
    }
    JALLOC(c, sp, sizeof *sp);
    *sp = (otlp_span)EVALBUS__OTLP__V1__SPAN__INIT;
    if ((st = jhex_id(c, s, "traceId", "trace_id", 16, &sp->trace_id)) != EB_OK ||
        (st = jhex_id(c, s, "spanId", "span_id", 8, &sp->span_id)) != EB_OK ||
        (st = jhex_id(c, s, "parentSpanId", "parent_span_id", 8, &sp->parent_span_id)) != EB_OK ||
        (st = jstring(c, s, "traceState", "trace_state", &sp->trace_state)) != EB_OK ||
        (st = jstring(c, s, "name", NULL, &sp->name)) != EB_OK ||
        (st = jenum(c, s, "kind", NULL, kinds, 6, &kind)) != EB_OK ||
        (st = jtime(c, s, "startTimeUnixNano", "start_time_unix_nano",
                    &sp->start_time_unix_nano)) != EB_OK ||
        (st = jtime(c, s, "endTimeUnixNano", "end_time_unix_nano", &sp->end_time_unix_nano)) !=
            EB_OK ||
        (st = json_keyvalues(c, s, "attributes", NULL, 0, &sp->attributes, &sp->n_attributes)) !=
            EB_OK)
        goto cleanup;
    sp->kind = (Evalbus__Otlp__V1__Span__SpanKind)kind;

    if ((st = jarray(c, s, "events", NULL, &e, &n)) != EB_OK)
        goto cleanup;
    if (n) {
        JALLOC(c, sp->events, n * sizeof *sp->events);
        for (i = 0; e; e = e->next, i++) {
            size_t old = jpath_push(c, "events", (long)i);
            st = json_event(c, e, &sp->events[i]);
            jpath_pop(c, old);
            if (st != EB_OK)
                goto cleanup;
            sp->n_events = i + 1;
        }
    }
    if ((st = jarray(c, s, "links", NULL, &e, &n)) != EB_OK)
        goto cleanup;
    if (n) {
        JALLOC(c, sp->links, n * sizeof *sp->links);
        for (i = 0; e; e = e->next, i++) {
            size_t old = jpath_push(c, "links", (long)i);
            st = json_link(c, e, &sp->links[i]);
            jpath_pop(c, old);
            if (st != EB_OK)
                goto cleanup;
            sp->n_links = i + 1;
        }
    }
    if ((status = jget(s, "status", NULL))) {
        Evalbus__Otlp__V1__Status *stt;
        int code = 0;
        size_t old;

        if (!cJSON_IsObject(status)) {
            st = jbad(c, "status", "an object");
            goto cleanup;
        }
        JALLOC(c, stt, sizeof *stt);
        *stt = (Evalbus__Otlp__V1__Status)EVALBUS__OTLP__V1__STATUS__INIT;
        old = jpath_push(c, "status", -1);
        if ((st = jstring(c, status, "message", NULL, &stt->message)) == EB_OK)
            st = jenum(c, status, "code", NULL, codes, 3, &code);
        jpath_pop(c, old);
        if (st != EB_OK)
            goto cleanup;
        stt->code = (Evalbus__Otlp__V1__Status__StatusCode)code;
        sp->status = stt;
    }
cleanup:
    *out = sp;
    return st;
}

static eb_status json_scope_spans(json_ctx *c, const cJSON *ss, otlp_scope_spans **out)
{
    eb_status st = EB_OK;
    otlp_scope_spans *sc = NULL;
    const cJSON *scope, *e;
    size_t n, i;

    if (!cJSON_IsObject(ss)) {
        st = eb_error(EB_ERR_INVALID, "%s must be an object", c->path);
        goto cleanup;
    }
    JALLOC(c, sc, sizeof *sc);
    *sc = (otlp_scope_spans)EVALBUS__OTLP__V1__SCOPE_SPANS__INIT;
    if ((scope = jget(ss, "scope", NULL))) {
        Evalbus__Otlp__V1__InstrumentationScope *is;
        size_t old;

        if (!cJSON_IsObject(scope)) {
            st = jbad(c, "scope", "an object");
            goto cleanup;
        }
        JALLOC(c, is, sizeof *is);
        *is =
            (Evalbus__Otlp__V1__InstrumentationScope)EVALBUS__OTLP__V1__INSTRUMENTATION_SCOPE__INIT;
        old = jpath_push(c, "scope", -1);
        if ((st = jstring(c, scope, "name", NULL, &is->name)) == EB_OK &&
            (st = jstring(c, scope, "version", NULL, &is->version)) == EB_OK)
            st =
                json_keyvalues(c, scope, "attributes", NULL, 0, &is->attributes, &is->n_attributes);
        jpath_pop(c, old);
        if (st != EB_OK)
            goto cleanup;
        sc->scope = is;
    }
    if ((st = jarray(c, ss, "spans", NULL, &e, &n)) != EB_OK)
        goto cleanup;
    if (n) {
        JALLOC(c, sc->spans, n * sizeof *sc->spans);
        for (i = 0; e; e = e->next, i++) {
            size_t old = jpath_push(c, "spans", (long)i);
            st = json_span(c, e, &sc->spans[i]);
            jpath_pop(c, old);
            if (st != EB_OK)
                goto cleanup;
            sc->n_spans = i + 1;
        }
    }
cleanup:
    *out = sc;
    return st;
}

static eb_status json_resource_spans(json_ctx *c, const cJSON *rs, otlp_resource_spans **out)
{
    eb_status st = EB_OK;
    otlp_resource_spans *r = NULL;
    const cJSON *res, *e;
    size_t n, i;

    if (!cJSON_IsObject(rs)) {
        st = eb_error(EB_ERR_INVALID, "%s must be an object", c->path);
        goto cleanup;
    }
    JALLOC(c, r, sizeof *r);
    *r = (otlp_resource_spans)EVALBUS__OTLP__V1__RESOURCE_SPANS__INIT;
    if ((res = jget(rs, "resource", NULL))) {
        Evalbus__Otlp__V1__Resource *rr;
        size_t old;

        if (!cJSON_IsObject(res)) {
            st = jbad(c, "resource", "an object");
            goto cleanup;
        }
        JALLOC(c, rr, sizeof *rr);
        *rr = (Evalbus__Otlp__V1__Resource)EVALBUS__OTLP__V1__RESOURCE__INIT;
        old = jpath_push(c, "resource", -1);
        st = json_keyvalues(c, res, "attributes", NULL, 0, &rr->attributes, &rr->n_attributes);
        jpath_pop(c, old);
        if (st != EB_OK)
            goto cleanup;
        r->resource = rr;
    }
    if ((st = jarray(c, rs, "scopeSpans", "scope_spans", &e, &n)) != EB_OK)
        goto cleanup;
    if (n) {
        JALLOC(c, r->scope_spans, n * sizeof *r->scope_spans);
        for (i = 0; e; e = e->next, i++) {
            size_t old = jpath_push(c, "scopeSpans", (long)i);
            st = json_scope_spans(c, e, &r->scope_spans[i]);
            jpath_pop(c, old);
            if (st != EB_OK)
                goto cleanup;
            r->n_scope_spans = i + 1;
        }
    }
cleanup:
    *out = r;
    return st;
}

eb_status ingest_otlp_decode_json(const char *data, size_t len, const ingest_limits *lim,
                                  ingest_otlp_result *out)
{
    eb_status st = EB_OK;
    otlp_arena arena;
    json_ctx ctx = {.arena = &arena, .path = ""};
    cJSON *root = NULL;
    otlp_request req = EVALBUS__OTLP__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
    const cJSON *e;
    size_t n, i;

    memset(out, 0, sizeof *out);
    arena_init(&arena, len);
    if ((st = eb_json_parse_object(data, len, &root)) != EB_OK)
        goto cleanup;
    /* the walk reads the first of two: spans in the second would be dropped, unreported */
    if (eb_json_repeated_member(root)) {
        const char *name = eb_json_repeated_member(root);

        st = eb_error(EB_ERR_INVALID, "an object of the request gives the member '%.*s' twice",
                      eb_utf8_prefix_len(name, 100), name);
        goto cleanup;
    }
    if ((st = jarray(&ctx, root, "resourceSpans", "resource_spans", &e, &n)) != EB_OK)
        goto cleanup;
    if (n) {
        JALLOC(&ctx, req.resource_spans, n * sizeof *req.resource_spans);
        for (i = 0; e; e = e->next, i++) {
            size_t old = jpath_push(&ctx, "resourceSpans", (long)i);
            st = json_resource_spans(&ctx, e, &req.resource_spans[i]);
            jpath_pop(&ctx, old);
            if (st != EB_OK)
                goto cleanup;
            req.n_resource_spans = i + 1;
        }
    }
    ingest_otlp_map(&req, lim, NULL, 0, out);
cleanup:
    cJSON_Delete(root);
    arena_free_all(&arena);
    return st;
}
