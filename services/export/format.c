/* export/format.c -- the export format writers: trace records in, dataset bytes out.
 *
 * One writer per export (per worker thread). For every record: pseudonymize every string value
 * in place (redact_json_string on the decoded value, so the re-escaped output stays valid JSON;
 * a string that is itself JSON text, such as tool-call arguments, is decoded once more first),
 * check and write the record in the chosen format straight into the caller's buffer, then count
 * it in the statistics. A record the format cannot use is cut back out of the buffer and counted
 * as skipped under a reason (the reasons are the SKIP_* strings below, documented in
 * docs/export-formats.md); only a redaction failure is an error.
 *
 * Output is written by hand rather than with cJSON_Print: strings through eb_buf_json_escape
 * (valid JSON whatever bytes a string holds), integers without printf, other numbers as the
 * shortest %g text that reads back as the same double. No allocation happens per record once
 * the scratch buffers have grown: the writer keeps them (conversation, tool-call ids, csv cell,
 * redaction output, SQL scratch).
 *
 * Formats:
 *   jsonl / json  the record (field selection applied by a tree of include / exclude paths);
 *   csv           RFC 4180 rows of chosen columns, string cells neutralized against formulas;
 *   openai-chat, openai-preference, anthropic
 *                 conversations built from input + output messages, checked against the rules
 *                 of each fine-tuning format (a conversation is collected and checked first,
 *                 then written, so a skipped record writes nothing);
 *   sql-pairs     question / SQL pairs (the SQL analysis lives in stats.c, shared with stats).
 *
 * Ownership: the writer copies its options (except the redactor, which the caller keeps alive);
 * records stay the caller's, modified in place by redaction; output is appended to the caller's
 * eb_buf. Threading: one thread at a time per writer. */
#include "format.h"

#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Skip reasons (the keys of statistics.skipped_by_reason). */
#define SKIP_INVALID_RECORD "invalid_record"
#define SKIP_STATUS_ERROR "status_error"
#define SKIP_NO_INPUT "no_input"
#define SKIP_NO_ASSISTANT "no_assistant_message"
#define SKIP_INVALID_ROLE "invalid_role"
#define SKIP_EMPTY_MESSAGE "empty_message"
#define SKIP_IMAGE "image_content"
#define SKIP_NON_TEXT "non_text_content"
#define SKIP_INVALID_TOOL_CALL "invalid_tool_call"
#define SKIP_INVALID_TOOL_MESSAGE "invalid_tool_message"
#define SKIP_UNANSWERED_TOOL_CALL "unanswered_tool_call"
#define SKIP_INVALID_TOOLS "invalid_tools"
#define SKIP_TOOL_USE "tool_use_unsupported"
#define SKIP_TURN_ORDER "invalid_turn_order"
#define SKIP_INVALID_PAIR "invalid_pair"
#define SKIP_NO_PREFERRED "no_preferred_output"
#define SKIP_NO_NON_PREFERRED "no_non_preferred_output"
#define SKIP_IDENTICAL "identical_outputs"
#define SKIP_NO_SQL "no_sql"
#define SKIP_NO_QUESTION "no_question"

typedef struct format_info {
    const char *name, *extension, *content_type;
} format_info;

static const format_info formats[] = {
    [EXPORT_JSONL] = {"jsonl", "jsonl", "application/x-ndjson"},
    [EXPORT_JSON] = {"json", "json", "application/json"},
    [EXPORT_CSV] = {"csv", "csv", "text/csv; charset=utf-8"},
    [EXPORT_OPENAI_CHAT] = {"openai-chat", "jsonl", "application/x-ndjson"},
    [EXPORT_OPENAI_PREFERENCE] = {"openai-preference", "jsonl", "application/x-ndjson"},
    [EXPORT_ANTHROPIC] = {"anthropic", "jsonl", "application/x-ndjson"},
    [EXPORT_SQL_PAIRS] = {"sql-pairs", "jsonl", "application/x-ndjson"},
};
_Static_assert(sizeof formats / sizeof formats[0] == EXPORT_FORMAT_COUNT, "info for every format");

/* The top-level fields of a trace record (docs/api/traces.md, "The query output"): the first
 * segment of every field path must be one of them. */
static const char *const trace_fields[] = {
    "id",       "project",        "name",       "model",      "provider",
    "status",   "status_message", "start_time", "end_time",   "latency_ms",
    "usage",    "cost_usd",       "input",      "output",     "tool_calls",
    "metadata", "tags",           "session_id", "user_id",    "environment",
    "release",  "review_state",   "source",     "attributes", "observations",
    "reviews",  "scores",
};

typedef enum col_kind { COL_PATH, COL_TAGS, COL_INPUT_TEXT, COL_OUTPUT_TEXT } col_kind;

typedef struct csv_default {
    const char *name;
    col_kind kind;
    const char *path;
} csv_default;

static const csv_default csv_defaults[] = {
    {"id", COL_PATH, "id"},
    {"project", COL_PATH, "project"},
    {"name", COL_PATH, "name"},
    {"model", COL_PATH, "model"},
    {"provider", COL_PATH, "provider"},
    {"status", COL_PATH, "status"},
    {"start_time", COL_PATH, "start_time"},
    {"end_time", COL_PATH, "end_time"},
    {"latency_ms", COL_PATH, "latency_ms"},
    {"input_tokens", COL_PATH, "usage.input_tokens"},
    {"output_tokens", COL_PATH, "usage.output_tokens"},
    {"total_tokens", COL_PATH, "usage.total_tokens"},
    {"cost_usd", COL_PATH, "cost_usd"},
    {"review_state", COL_PATH, "review_state"},
    {"tags", COL_TAGS, "tags"},
    {"input_text", COL_INPUT_TEXT, "input"},
    {"output_text", COL_OUTPUT_TEXT, "output"},
    {"metadata", COL_PATH, "metadata"},
};

typedef struct csv_col {
    char *name; /* header text */
    col_kind kind;
    char **segs; /* COL_PATH: the path split at dots */
    size_t n_segs;
} csv_col;

/* A node of the field selection tree (json / jsonl). */
typedef struct sel_node {
    char *name;
    bool whole;    /* included with everything below (minus exclusions) */
    bool partial;  /* an include path goes through it */
    bool excluded; /* left out */
    struct sel_node *kids;
    size_t n_kids;
} sel_node;

/* A message of a conversation being built: a message object of the record, or a plain text. */
typedef struct conv_msg {
    const cJSON *m;   /* NULL: plain text */
    const char *text; /* plain text when m is NULL */
    const char *role; /* normalized: system, user, assistant, tool */
    bool history;     /* came from the input */
} conv_msg;

struct export_writer {
    export_format format;
    redactor *redact;
    bool skip_plain; /* only built-in kinds: values that cannot hold any are not scanned */
    char *exported_at;
    char *filter;  /* compact JSON, or NULL */
    sel_node *sel; /* NULL: whole records */
    csv_col *cols;
    size_t n_cols;
    uint64_t written;
    /* scratch kept between records */
    eb_buf red, cell, names, json, num;
    export_sql_info sql;
    conv_msg *conv;
    size_t n_conv, cap_conv;
    const char **ids; /* tool call ids waiting for their tool message */
    size_t n_ids, cap_ids;
};

/* ================================================================== names */

eb_status export_format_parse(const char *name, export_format *out)
{
    for (size_t i = 0; name && i < EXPORT_FORMAT_COUNT; i++) {
        if (!strcmp(name, formats[i].name)) {
            *out = (export_format)i;
            return EB_OK;
        }
    }
    return eb_error(EB_ERR_INVALID,
                    "unknown export format '%s' (valid: jsonl, json, csv, openai-chat, "
                    "openai-preference, anthropic, sql-pairs)",
                    name ? name : "(null)");
}

const char *export_format_name(export_format f)
{
    return (unsigned)f < EXPORT_FORMAT_COUNT ? formats[f].name : "";
}

const char *export_format_extension(export_format f)
{
    return (unsigned)f < EXPORT_FORMAT_COUNT ? formats[f].extension : "";
}

const char *export_format_content_type(export_format f)
{
    return (unsigned)f < EXPORT_FORMAT_COUNT ? formats[f].content_type : "";
}

/* ================================================================== JSON output */

static const cJSON *member(const cJSON *obj, const char *name)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

static const char *member_str(const cJSON *obj, const char *name)
{
    const cJSON *v = member(obj, name);
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0] ? v->valuestring : NULL;
}

static void put_lit(eb_buf *b, const char *s)
{
    eb_buf_append(b, s, strlen(s));
}

static void put_str(eb_buf *b, const char *s)
{
    eb_buf_putc(b, '"');
    eb_buf_json_escape(b, s ? s : "");
    eb_buf_putc(b, '"');
}

static void put_str_or_null(eb_buf *b, const char *s)
{
    if (s)
        put_str(b, s);
    else
        put_lit(b, "null");
}

/* ,"key": (or "key": after an opening brace, when first) */
static void put_key(eb_buf *b, const char *key, bool first)
{
    if (!first)
        eb_buf_putc(b, ',');
    put_str(b, key);
    eb_buf_putc(b, ':');
}

/* Compact JSON of item. Raw items (which parsed records never hold) are written as they are. */
static void put_json(eb_buf *b, const cJSON *item)
{
    const cJSON *c;
    bool first = true;

    if (!item) {
        put_lit(b, "null");
        return;
    }
    switch (item->type & 0xff) {
    case cJSON_False:
        put_lit(b, "false");
        break;
    case cJSON_True:
        put_lit(b, "true");
        break;
    case cJSON_Number:
        eb_buf_json_number_item(b, item);
        break;
    case cJSON_String:
        put_str(b, item->valuestring);
        break;
    case cJSON_Raw:
        put_lit(b, item->valuestring ? item->valuestring : "null");
        break;
    case cJSON_Array:
        eb_buf_putc(b, '[');
        for (c = item->child; c; c = c->next) {
            if (!first)
                eb_buf_putc(b, ',');
            put_json(b, c);
            first = false;
        }
        eb_buf_putc(b, ']');
        break;
    case cJSON_Object:
        eb_buf_putc(b, '{');
        for (c = item->child; c; c = c->next) {
            put_key(b, c->string ? c->string : "", first);
            put_json(b, c);
            first = false;
        }
        eb_buf_putc(b, '}');
        break;
    default:
        put_lit(b, "null");
        break;
    }
}

/* ================================================================== field selection */

static bool is_trace_field(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof trace_fields / sizeof trace_fields[0]; i++)
        if (strlen(trace_fields[i]) == n && !memcmp(trace_fields[i], s, n))
            return true;
    return false;
}

/* Checks a field path: not empty, at most EXPORT_FIELD_PATH_MAX bytes, no empty segment, no
 * control character, first segment a field of the trace. */
static eb_status check_path(const char *what, const char *path)
{
    size_t n = path ? strlen(path) : 0;
    const char *dot;

    if (n == 0)
        return eb_error(EB_ERR_INVALID, "%s: a field path is empty", what);
    if (n > EXPORT_FIELD_PATH_MAX)
        return eb_error(EB_ERR_INVALID, "%s: the field path '%.40s...' is longer than %d bytes",
                        what, path, EXPORT_FIELD_PATH_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f)
            return eb_error(EB_ERR_INVALID, "%s: the field path '%s' holds a control character",
                            what, path);
    if (path[0] == '.' || path[n - 1] == '.' || strstr(path, ".."))
        return eb_error(EB_ERR_INVALID, "%s: the field path '%s' has an empty segment", what, path);
    dot = strchr(path, '.');
    if (!is_trace_field(path, dot ? (size_t)(dot - path) : n))
        return eb_error(EB_ERR_INVALID,
                        "%s: '%s' is not a field of a trace (fields: id, project, name, model, "
                        "provider, status, status_message, start_time, end_time, latency_ms, "
                        "usage, cost_usd, input, output, tool_calls, metadata, tags, session_id, "
                        "user_id, environment, release, review_state, source, attributes, "
                        "observations, reviews, scores)",
                        what, path);
    return EB_OK;
}

static void sel_free(sel_node *n)
{
    for (size_t i = 0; i < n->n_kids; i++)
        sel_free(&n->kids[i]);
    free(n->kids);
    free(n->name);
}

static sel_node *sel_find(const sel_node *n, const char *name)
{
    for (size_t i = 0; n && i < n->n_kids; i++)
        if (!strcmp(n->kids[i].name, name))
            return &n->kids[i];
    return NULL;
}

static void sel_add(sel_node *root, const char *path, bool include)
{
    sel_node *n = root;

    for (const char *p = path;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        char *name = eb_strndup(p, len);
        sel_node *kid = sel_find(n, name);

        if (include)
            n->partial = true;
        if (kid) {
            free(name);
        } else {
            n->kids = eb_realloc(n->kids, (n->n_kids + 1) * sizeof *n->kids);
            kid = &n->kids[n->n_kids++];
            memset(kid, 0, sizeof *kid);
            kid->name = name;
        }
        n = kid;
        if (!dot)
            break;
        p = dot + 1;
    }
    if (include)
        n->whole = true;
    else
        n->excluded = true;
}

/* v whole, except what n marks as excluded below it (n may be NULL). */
static void put_whole(eb_buf *b, const cJSON *v, const sel_node *n)
{
    const cJSON *c;
    bool first = true;

    if (!v || !n || !n->n_kids || !(cJSON_IsObject(v) || cJSON_IsArray(v))) {
        put_json(b, v);
        return;
    }
    eb_buf_putc(b, cJSON_IsObject(v) ? '{' : '[');
    for (c = v->child; c; c = c->next) {
        const sel_node *k = n;
        if (cJSON_IsObject(v)) {
            k = sel_find(n, c->string ? c->string : "");
            if (k && k->excluded)
                continue;
            put_key(b, c->string ? c->string : "", first);
        } else if (!first) {
            eb_buf_putc(b, ',');
        }
        put_whole(b, c, k);
        first = false;
    }
    eb_buf_putc(b, cJSON_IsObject(v) ? '}' : ']');
}

/* The included paths below n, in the order they were first named; an array applies the paths
 * to each of its elements; a missing object gives its included members as null. */
static void put_partial(eb_buf *b, const cJSON *v, const sel_node *n)
{
    const cJSON *c;
    bool first = true;

    if (cJSON_IsArray(v)) {
        eb_buf_putc(b, '[');
        for (c = v->child; c; c = c->next) {
            if (!first)
                eb_buf_putc(b, ',');
            put_partial(b, c, n);
            first = false;
        }
        eb_buf_putc(b, ']');
        return;
    }
    eb_buf_putc(b, '{');
    for (size_t i = 0; i < n->n_kids; i++) {
        const sel_node *k = &n->kids[i];
        const cJSON *cv;
        if (k->excluded || !(k->whole || k->partial))
            continue;
        cv = member(v, k->name);
        put_key(b, k->name, first);
        if (k->whole)
            put_whole(b, cv, k);
        else
            put_partial(b, cv, k);
        first = false;
    }
    eb_buf_putc(b, '}');
}

static void put_record(const export_writer *w, eb_buf *b, const cJSON *record)
{
    if (!w->sel)
        put_json(b, record);
    else if (w->sel->partial)
        put_partial(b, record, w->sel);
    else
        put_whole(b, record, w->sel);
}

/* ================================================================== csv */

/* Appends s[0..n) as UTF-8: bytes of invalid sequences become U+FFFD. */
static void put_utf8_clean(eb_buf *b, const char *s, size_t n)
{
    size_t run = 0, i = 0;

    if (eb_utf8_valid(s, n)) {
        eb_buf_append(b, s, n);
        return;
    }
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80                 ? 1
                     : c >= 0xc2 && c <= 0xdf ? 2
                     : c >= 0xe0 && c <= 0xef ? 3
                     : c >= 0xf0 && c <= 0xf4 ? 4
                                              : 0;
        if (len && i + len <= n && eb_utf8_valid(s + i, len)) {
            i += len;
            continue;
        }
        eb_buf_append(b, s + run, i - run);
        eb_buf_append(b, "\xef\xbf\xbd", 3);
        run = ++i;
    }
    eb_buf_append(b, s + run, i - run);
}

/* One RFC 4180 cell. text: the value came from a string (or was built from strings), so a
 * leading = + - @ TAB or CR gets a ' (spreadsheet formula neutralization); numbers never do. */
static void csv_cell(eb_buf *b, const char *s, size_t n, bool text)
{
    bool neutral =
        text && n > 0 &&
        (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r');
    bool quote = false;
    size_t run = 0;

    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (!quote) {
        if (neutral)
            eb_buf_putc(b, '\'');
        eb_buf_append(b, s, n);
        return;
    }
    eb_buf_putc(b, '"');
    if (neutral)
        eb_buf_putc(b, '\'');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') {
            eb_buf_append(b, s + run, i + 1 - run);
            eb_buf_putc(b, '"');
            run = i + 1;
        }
    }
    eb_buf_append(b, s + run, n - run);
    eb_buf_putc(b, '"');
}

static void csv_text_cell(export_writer *w, eb_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (eb_utf8_valid(s, n)) {
        csv_cell(b, s, n, true);
        return;
    }
    eb_buf_reset(&w->cell);
    put_utf8_clean(&w->cell, s, n);
    csv_cell(b, w->cell.data, w->cell.len, true);
}

static bool has_tool_calls(const cJSON *m)
{
    return cJSON_GetArraySize(member(m, "tool_calls")) > 0;
}

static bool is_text_type(const char *type)
{
    return !type || !strcmp(type, "text") || !strcmp(type, "input_text") ||
           !strcmp(type, "output_text");
}

static bool is_image_type(const char *type)
{
    return type &&
           (!strcmp(type, "image_url") || !strcmp(type, "image") || !strcmp(type, "input_image"));
}

/* Appends the text of a message content to b: a string as is, text parts joined with "\n";
 * with escape, JSON-escaped (the caller writes the quotes); with labels, a non-text part as
 * "[type]". */
static void put_content(eb_buf *b, const cJSON *content, bool escape, bool labels)
{
    const cJSON *part;
    bool first = true;

    if (content && cJSON_IsString(content)) {
        if (escape)
            eb_buf_json_escape(b, content->valuestring);
        else
            put_lit(b, content->valuestring);
        return;
    }
    cJSON_ArrayForEach(part, content)
    {
        const char *type = cJSON_IsString(part) ? NULL : member_str(part, "type");
        const char *text = cJSON_IsString(part) ? part->valuestring
                           : is_text_type(type) ? member_str(part, "text")
                                                : NULL;
        if (!text && !labels)
            continue;
        if (!first)
            put_lit(b, escape ? "\\n" : "\n");
        first = false;
        if (text && escape)
            eb_buf_json_escape(b, text);
        else if (text)
            put_lit(b, text);
        else
            eb_buf_printf(b, "[%s]", type ? type : "part");
    }
}

/* input_text / output_text: messages as "role: text" lines (a tool call as
 * "role: [tool_call name] arguments"), or the plain text, or the value as compact JSON. */
static void flatten_io(eb_buf *b, const cJSON *io)
{
    const cJSON *msgs = cJSON_IsArray(io) ? io : member(io, "messages"), *m, *tc;
    const char *text;
    bool first = true;

    if (!io || cJSON_IsNull(io))
        return;
    if (cJSON_IsString(io)) {
        put_lit(b, io->valuestring);
        return;
    }
    if (cJSON_GetArraySize(msgs) == 0) {
        if ((text = member_str(io, "text")))
            put_lit(b, text);
        else if (!cJSON_IsObject(io) || io->child)
            put_json(b, io);
        return;
    }
    cJSON_ArrayForEach(m, msgs)
    {
        const char *role = member_str(m, "role");
        const cJSON *content = member(m, "content");
        if (!role)
            role = "unknown";
        if (cJSON_IsString(content) || cJSON_GetArraySize(content) > 0 || !has_tool_calls(m)) {
            if (!first)
                eb_buf_putc(b, '\n');
            first = false;
            eb_buf_printf(b, "%s: ", role);
            put_content(b, content, false, true);
        }
        cJSON_ArrayForEach(tc, member(m, "tool_calls"))
        {
            const cJSON *fn = member(tc, "function");
            const char *name = member_str(fn, "name"), *args = member_str(fn, "arguments");
            if (!first)
                eb_buf_putc(b, '\n');
            first = false;
            eb_buf_printf(b, "%s: [tool_call %s] %s", role, name ? name : "", args ? args : "");
        }
    }
}

static const cJSON *resolve(const cJSON *v, char *const *segs, size_t n)
{
    for (size_t i = 0; i < n && v; i++) {
        if (cJSON_IsObject(v)) {
            v = cJSON_GetObjectItemCaseSensitive(v, segs[i]);
        } else if (cJSON_IsArray(v)) {
            char *end;
            long idx = strtol(segs[i], &end, 10);
            v = *end == '\0' && end != segs[i] && idx >= 0 && idx < 1000000
                    ? cJSON_GetArrayItem(v, (int)idx)
                    : NULL;
        } else {
            v = NULL;
        }
    }
    return v;
}

static void csv_value_cell(export_writer *w, eb_buf *b, const cJSON *v)
{
    if (!v || cJSON_IsNull(v))
        return;
    if (cJSON_IsString(v)) {
        csv_text_cell(w, b, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        eb_buf_reset(&w->cell);
        eb_buf_json_number_item(&w->cell, v);
        csv_cell(b, w->cell.data, w->cell.len, false);
    } else if (cJSON_IsBool(v)) {
        put_lit(b, cJSON_IsTrue(v) ? "true" : "false");
    } else {
        eb_buf_reset(&w->cell);
        put_json(&w->cell, v);
        csv_cell(b, w->cell.data, w->cell.len, true);
    }
}

static void csv_row(export_writer *w, eb_buf *b, const cJSON *record)
{
    for (size_t i = 0; i < w->n_cols; i++) {
        const csv_col *c = &w->cols[i];
        const cJSON *tag;
        bool first = true;

        if (i)
            eb_buf_putc(b, ',');
        switch (c->kind) {
        case COL_PATH:
            csv_value_cell(w, b, resolve(record, c->segs, c->n_segs));
            continue;
        case COL_TAGS:
            eb_buf_reset(&w->cell);
            cJSON_ArrayForEach(tag, member(record, "tags"))
            {
                if (!first)
                    eb_buf_putc(&w->cell, ';');
                first = false;
                if (cJSON_IsString(tag))
                    put_lit(&w->cell, tag->valuestring);
                else
                    put_json(&w->cell, tag);
            }
            break;
        case COL_INPUT_TEXT:
        case COL_OUTPUT_TEXT:
            eb_buf_reset(&w->cell);
            flatten_io(&w->cell, member(record, c->kind == COL_INPUT_TEXT ? "input" : "output"));
            break;
        }
        if (w->cell.len && !eb_utf8_valid(w->cell.data, w->cell.len)) {
            eb_buf tmp = {0};
            put_utf8_clean(&tmp, w->cell.data, w->cell.len);
            csv_cell(b, tmp.data, tmp.len, true);
            eb_buf_free(&tmp);
        } else {
            csv_cell(b, w->cell.data ? w->cell.data : "", w->cell.len, true);
        }
    }
    put_lit(b, "\r\n");
}

static void col_free(csv_col *c)
{
    free(c->name);
    for (size_t i = 0; i < c->n_segs; i++)
        free(c->segs[i]);
    free(c->segs);
}

static void col_init(csv_col *c, const char *name, col_kind kind, const char *path)
{
    c->name = eb_strdup(name);
    c->kind = kind;
    c->segs = NULL;
    c->n_segs = 0;
    if (kind != COL_PATH)
        return;
    for (const char *p = path;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        c->segs = eb_realloc(c->segs, (c->n_segs + 1) * sizeof *c->segs);
        c->segs[c->n_segs++] = eb_strndup(p, len);
        if (!dot)
            break;
        p = dot + 1;
    }
}

static eb_status csv_columns(export_writer *w, const export_options *opt)
{
    size_t n_defaults = sizeof csv_defaults / sizeof csv_defaults[0];
    size_t n = opt->n_include ? opt->n_include : n_defaults;
    eb_status st = EB_OK;

    w->cols = eb_calloc(n, sizeof *w->cols);
    for (size_t i = 0; i < n; i++) {
        const char *name = opt->n_include ? opt->include[i] : csv_defaults[i].name;
        const csv_default *d = NULL;

        for (size_t k = 0; k < w->n_cols; k++)
            if (name && !strcmp(w->cols[k].name, name))
                return eb_error(EB_ERR_INVALID, "include: the csv column '%s' is listed twice",
                                name);
        for (size_t k = 0; k < n_defaults && !d; k++)
            if (name && !strcmp(name, csv_defaults[k].name))
                d = &csv_defaults[k];
        if (d) {
            col_init(&w->cols[w->n_cols++], d->name, d->kind, d->path);
        } else {
            if ((st = check_path("include", name)) != EB_OK)
                return st;
            col_init(&w->cols[w->n_cols++], name, COL_PATH, name);
        }
    }
    for (size_t i = 0; i < opt->n_exclude; i++) {
        const char *name = opt->exclude[i];
        size_t k = 0;
        while (k < w->n_cols && !(name && !strcmp(w->cols[k].name, name)))
            k++;
        if (k == w->n_cols)
            return eb_error(EB_ERR_INVALID, "exclude: '%s' is not a csv column",
                            name ? name : "(null)");
        col_free(&w->cols[k]);
        memmove(&w->cols[k], &w->cols[k + 1], (w->n_cols - k - 1) * sizeof *w->cols);
        w->n_cols--;
    }
    if (w->n_cols == 0)
        return eb_error(EB_ERR_INVALID, "exclude: no csv column is left");
    return EB_OK;
}

/* ================================================================== conversations */

static const char *norm_role(const char *role)
{
    if (!role)
        return NULL;
    if (!strcmp(role, "system") || !strcmp(role, "developer"))
        return "system";
    if (!strcmp(role, "user"))
        return "user";
    if (!strcmp(role, "assistant"))
        return "assistant";
    if (!strcmp(role, "tool"))
        return "tool";
    return NULL; /* "function" (the deprecated role) and anything else */
}

/* Checks a message's content: a string; or parts that are all text (SKIP_IMAGE /
 * SKIP_NON_TEXT otherwise). Some text ("" is none) is required, except of an assistant with tool
 * calls (null, "" or no text parts). */
static const char *check_content(const cJSON *m, const char *role)
{
    const cJSON *content = member(m, "content"), *part;
    size_t texts = 0; /* non-empty texts */

    if (cJSON_IsString(content))
        texts = content->valuestring[0] != '\0';
    else if (content && !cJSON_IsNull(content) && !cJSON_IsArray(content))
        return SKIP_NON_TEXT;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *text;
        const char *type;
        if (cJSON_IsString(part)) {
            texts += part->valuestring[0] != '\0';
            continue;
        }
        type = member_str(part, "type");
        text = member(part, "text");
        if (is_image_type(type))
            return SKIP_IMAGE;
        if (!is_text_type(type) || !cJSON_IsString(text))
            return SKIP_NON_TEXT;
        texts += text->valuestring[0] != '\0';
    }
    if (texts == 0 && !(!strcmp(role, "assistant") && has_tool_calls(m)))
        return SKIP_EMPTY_MESSAGE;
    return NULL;
}

static const char *check_tool_calls(const cJSON *m)
{
    const cJSON *tcs = member(m, "tool_calls"), *tc;

    if (!tcs || cJSON_IsNull(tcs))
        return NULL;
    if (!cJSON_IsArray(tcs))
        return SKIP_INVALID_TOOL_CALL;
    cJSON_ArrayForEach(tc, tcs)
    {
        const cJSON *fn = member(tc, "function"), *args = member(fn, "arguments"),
                    *type = member(tc, "type");
        if (!member_str(tc, "id") || !member_str(fn, "name") ||
            (args && !cJSON_IsString(args) && !cJSON_IsNull(args)) ||
            (type && !cJSON_IsString(type) && !cJSON_IsNull(type)))
            return SKIP_INVALID_TOOL_CALL;
    }
    return NULL;
}

/* Checks one message and gives its normalized role. */
static const char *check_message(const cJSON *m, const char **role)
{
    const char *why;

    if (!cJSON_IsObject(m) || !(*role = norm_role(member_str(m, "role"))))
        return SKIP_INVALID_ROLE;
    if ((why = check_content(m, *role)) != NULL)
        return why;
    if (!strcmp(*role, "assistant") && (why = check_tool_calls(m)) != NULL)
        return why;
    if (!strcmp(*role, "tool") && !member_str(m, "tool_call_id"))
        return SKIP_INVALID_TOOL_MESSAGE;
    return NULL;
}

static void conv_push(export_writer *w, const cJSON *m, const char *text, const char *role,
                      bool history)
{
    if (w->n_conv == w->cap_conv) {
        w->cap_conv = w->cap_conv ? w->cap_conv * 2 : 16;
        w->conv = eb_realloc(w->conv, w->cap_conv * sizeof *w->conv);
    }
    w->conv[w->n_conv++] = (conv_msg){m, text, role, history};
}

/* A tool message, or a message with tool calls (anything but absent, null or []). */
static bool uses_tools(const cJSON *m)
{
    const char *role = member_str(m, "role");
    const cJSON *tcs = member(m, "tool_calls");
    return (role && !strcmp(role, "tool")) ||
           (tcs && !cJSON_IsNull(tcs) && !(cJSON_IsArray(tcs) && !tcs->child));
}

/* Adds the messages of an input (history) or output value to the conversation: a plain text is
 * one user (input) or assistant (output) message. */
static const char *collect_io(export_writer *w, const cJSON *io, bool input)
{
    const cJSON *msgs = cJSON_IsArray(io) ? io : member(io, "messages"), *m;
    const char *text, *why, *role;

    if (cJSON_IsString(io)) {
        if (io->valuestring[0])
            conv_push(w, NULL, io->valuestring, input ? "user" : "assistant", input);
        return NULL;
    }
    if (cJSON_GetArraySize(msgs) == 0) {
        if ((text = member_str(io, "text")))
            conv_push(w, NULL, text, input ? "user" : "assistant", input);
        return NULL;
    }
    cJSON_ArrayForEach(m, msgs)
    {
        if (w->format == EXPORT_ANTHROPIC && uses_tools(m))
            return SKIP_TOOL_USE; /* before the checks of tool messages and calls */
        if ((why = check_message(m, &role)) != NULL) {
            if (!strcmp(why, SKIP_EMPTY_MESSAGE) && !strcmp(role, "system"))
                continue; /* an empty system message says nothing: left out */
            return why;
        }
        conv_push(w, m, NULL, role, input);
    }
    return NULL;
}

static void ids_push(export_writer *w, const char *id)
{
    if (w->n_ids == w->cap_ids) {
        w->cap_ids = w->cap_ids ? w->cap_ids * 2 : 16;
        w->ids = eb_realloc(w->ids, w->cap_ids * sizeof *w->ids);
    }
    w->ids[w->n_ids++] = id;
}

/* Tool-call pairing over conv[from..to): every tool message answers a call of the assistant
 * message before it (each call once), and every call is answered before the next message that
 * is not a tool message; the calls of the last message may stay open. */
static const char *check_tool_pairing(export_writer *w, size_t from, size_t to)
{
    w->n_ids = 0;
    for (size_t i = from; i < to; i++) {
        const conv_msg *c = &w->conv[i];
        const cJSON *tc;

        if (!strcmp(c->role, "tool")) {
            const char *id = member_str(c->m, "tool_call_id");
            size_t k = 0;
            while (k < w->n_ids && strcmp(w->ids[k], id))
                k++;
            if (k == w->n_ids)
                return SKIP_INVALID_TOOL_MESSAGE;
            w->ids[k] = w->ids[--w->n_ids];
            continue;
        }
        if (w->n_ids)
            return SKIP_UNANSWERED_TOOL_CALL;
        if (c->m && !strcmp(c->role, "assistant")) {
            cJSON_ArrayForEach(tc, member(c->m, "tool_calls"))
            {
                ids_push(w, member_str(tc, "id"));
            }
        }
    }
    /* calls left open after a tool message: their message is not the last one */
    if (w->n_ids && to > from && !strcmp(w->conv[to - 1].role, "tool"))
        return SKIP_UNANSWERED_TOOL_CALL;
    return NULL;
}

/* metadata.tools: an array of {"type": "function", "function": {"name", ...}} or of bare
 * {"name", ...} function definitions. Absent or null: no tools. */
static const char *check_tools(const cJSON *tools)
{
    const cJSON *t;

    if (!tools || cJSON_IsNull(tools))
        return NULL;
    if (!cJSON_IsArray(tools))
        return SKIP_INVALID_TOOLS;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *fn = member(t, "function");
        const char *type = member_str(t, "type");
        if (!member_str(fn ? fn : t, "name") || (type && strcmp(type, "function")))
            return SKIP_INVALID_TOOLS;
    }
    return NULL;
}

static void put_tools(eb_buf *b, const cJSON *tools)
{
    const cJSON *t;
    bool first = true;

    eb_buf_putc(b, '[');
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *fn = member(t, "function");
        if (!first)
            eb_buf_putc(b, ',');
        first = false;
        put_lit(b, "{\"type\":\"function\",\"function\":");
        if (fn) {
            put_json(b, fn);
        } else { /* a bare definition; a flat one (the Responses API's) has a "type" too */
            const cJSON *c;
            bool first_member = true;
            eb_buf_putc(b, '{');
            for (c = t->child; c; c = c->next) {
                if (c->string && !strcmp(c->string, "type"))
                    continue;
                put_key(b, c->string ? c->string : "", first_member);
                put_json(b, c);
                first_member = false;
            }
            eb_buf_putc(b, '}');
        }
        eb_buf_putc(b, '}');
    }
    eb_buf_putc(b, ']');
}

/* One message in the OpenAI chat shape; weights: an assistant message of the history gets
 * "weight": 0 (only the traced output is trained on). */
static void put_openai_message(eb_buf *b, const conv_msg *c, bool weights)
{
    const cJSON *content = c->m ? member(c->m, "content") : NULL, *tc;
    const char *name = c->m ? member_str(c->m, "name") : NULL;
    bool first = true;

    put_lit(b, "{\"role\":");
    put_str(b, c->role);
    put_lit(b, ",\"content\":");
    if (!c->m) {
        put_str(b, c->text);
    } else if (cJSON_IsString(content) || cJSON_GetArraySize(content) > 0) {
        eb_buf_putc(b, '"');
        put_content(b, content, true, false);
        eb_buf_putc(b, '"');
    } else {
        put_lit(b, "null");
    }
    if (!strcmp(c->role, "tool")) {
        put_lit(b, ",\"tool_call_id\":");
        put_str(b, member_str(c->m, "tool_call_id"));
    } else if (name) {
        put_lit(b, ",\"name\":");
        put_str(b, name);
    }
    if (c->m && !strcmp(c->role, "assistant") && has_tool_calls(c->m)) {
        put_lit(b, ",\"tool_calls\":[");
        cJSON_ArrayForEach(tc, member(c->m, "tool_calls"))
        {
            const cJSON *fn = member(tc, "function");
            const char *type = member_str(tc, "type"), *args = member_str(fn, "arguments");
            if (!first)
                eb_buf_putc(b, ',');
            first = false;
            put_lit(b, "{\"id\":");
            put_str(b, member_str(tc, "id"));
            put_lit(b, ",\"type\":");
            put_str(b, type ? type : "function");
            put_lit(b, ",\"function\":{\"name\":");
            put_str(b, member_str(fn, "name"));
            put_lit(b, ",\"arguments\":");
            put_str(b, args ? args : "{}");
            put_lit(b, "}}");
        }
        eb_buf_putc(b, ']');
    }
    if (weights && c->history && !strcmp(c->role, "assistant"))
        put_lit(b, ",\"weight\":0");
    eb_buf_putc(b, '}');
}

static bool status_error(const cJSON *trace)
{
    const char *status = member_str(trace, "status");
    return status && !strcmp(status, "error");
}

/* Collects input + output of a trace into w->conv; *n_input gets the input's share. */
static const char *collect_trace(export_writer *w, const cJSON *trace, size_t *n_input)
{
    const char *why;
    bool assistant = false;

    w->n_conv = 0;
    if ((why = collect_io(w, member(trace, "input"), true)) != NULL)
        return why;
    if ((*n_input = w->n_conv) == 0)
        return SKIP_NO_INPUT;
    if ((why = collect_io(w, member(trace, "output"), false)) != NULL)
        return why;
    for (size_t i = *n_input; i < w->n_conv && !assistant; i++)
        assistant = !strcmp(w->conv[i].role, "assistant");
    return assistant ? NULL : SKIP_NO_ASSISTANT;
}

static const char *write_openai_chat(export_writer *w, const cJSON *trace, eb_buf *b)
{
    const cJSON *tools = member(member(trace, "metadata"), "tools");
    const char *why;
    size_t n_input = 0;

    if (status_error(trace))
        return SKIP_STATUS_ERROR;
    if ((why = collect_trace(w, trace, &n_input)) != NULL ||
        (why = check_tool_pairing(w, 0, w->n_conv)) != NULL || (why = check_tools(tools)) != NULL)
        return why;
    put_lit(b, "{\"messages\":[");
    for (size_t i = 0; i < w->n_conv; i++) {
        if (i)
            eb_buf_putc(b, ',');
        put_openai_message(b, &w->conv[i], true);
    }
    eb_buf_putc(b, ']');
    if (cJSON_GetArraySize(tools) > 0) {
        put_lit(b, ",\"tools\":");
        put_tools(b, tools);
    }
    put_lit(b, "}\n");
    return NULL;
}

/* The last assistant message of an output value, checked, as a conv_msg. */
static const char *last_assistant(const cJSON *out, conv_msg *c, const char *none)
{
    const cJSON *msgs = cJSON_IsArray(out) ? out : member(out, "messages");
    const char *text =
        cJSON_IsString(out) && out->valuestring[0] ? out->valuestring : member_str(out, "text");
    int n = cJSON_GetArraySize(msgs);

    for (int i = n - 1; i >= 0; i--) {
        const cJSON *m = cJSON_GetArrayItem(msgs, i);
        const char *role = norm_role(member_str(m, "role")), *why;
        if (!role || strcmp(role, "assistant"))
            continue;
        if ((why = check_message(m, &role)) != NULL)
            return why;
        *c = (conv_msg){m, NULL, "assistant", false};
        return NULL;
    }
    if (n == 0 && text) {
        *c = (conv_msg){NULL, text, "assistant", false};
        return NULL;
    }
    return none;
}

static const char *write_openai_preference(export_writer *w, const cJSON *pair, eb_buf *b)
{
    const cJSON *pref = member(pair, "preferred"), *non = member(pair, "non_preferred");
    const cJSON *tools = member(member(pref, "metadata"), "tools");
    conv_msg good, bad;
    const char *why;
    size_t a, a_len, c;

    if (!cJSON_IsObject(pref) || !cJSON_IsObject(non))
        return SKIP_INVALID_PAIR;
    if (status_error(pref))
        return SKIP_STATUS_ERROR;
    w->n_conv = 0;
    if ((why = collect_io(w, member(pref, "input"), true)) != NULL)
        return why;
    if (w->n_conv == 0)
        return SKIP_NO_INPUT;
    if ((why = check_tool_pairing(w, 0, w->n_conv)) != NULL || (why = check_tools(tools)) != NULL ||
        (why = last_assistant(member(pref, "output"), &good, SKIP_NO_PREFERRED)) != NULL ||
        (why = last_assistant(member(non, "output"), &bad, SKIP_NO_NON_PREFERRED)) != NULL)
        return why;
    put_lit(b, "{\"input\":{\"messages\":[");
    for (size_t i = 0; i < w->n_conv; i++) {
        if (i)
            eb_buf_putc(b, ',');
        put_openai_message(b, &w->conv[i], false);
    }
    eb_buf_putc(b, ']');
    if (cJSON_GetArraySize(tools) > 0) {
        put_lit(b, ",\"tools\":");
        put_tools(b, tools);
    }
    put_lit(b, "},\"preferred_output\":[");
    a = b->len;
    put_openai_message(b, &good, false);
    a_len = b->len - a;
    put_lit(b, "],\"non_preferred_output\":[");
    c = b->len;
    put_openai_message(b, &bad, false);
    if (b->len - c == a_len && !memcmp(b->data + a, b->data + c, a_len))
        return SKIP_IDENTICAL;
    put_lit(b, "]}\n");
    return NULL;
}

/* True if the message has text (a non-empty string, or a non-empty text part). */
static bool has_text(const conv_msg *c)
{
    const cJSON *content, *part;

    if (!c->m)
        return c->text && c->text[0];
    content = member(c->m, "content");
    if (cJSON_IsString(content))
        return content->valuestring[0] != '\0';
    cJSON_ArrayForEach(part, content)
    {
        const char *text = cJSON_IsString(part) ? part->valuestring : member_str(part, "text");
        if (text && text[0])
            return true;
    }
    return false;
}

static void put_conv_text(eb_buf *b, const conv_msg *c)
{
    if (c->m)
        put_content(b, member(c->m, "content"), true, false);
    else
        eb_buf_json_escape(b, c->text);
}

static const char *write_anthropic(export_writer *w, const cJSON *trace, eb_buf *b)
{
    const char *why, *last = NULL;
    size_t n_input = 0;
    bool any_system = false, group_text = false, first = true;

    if (status_error(trace))
        return SKIP_STATUS_ERROR;
    if ((why = collect_trace(w, trace, &n_input)) != NULL)
        return why;
    /* check: no tools, user first, assistant last, no empty turn */
    for (size_t i = 0; i < w->n_conv; i++) {
        const conv_msg *c = &w->conv[i];
        if (!strcmp(c->role, "tool") || (c->m && has_tool_calls(c->m)))
            return SKIP_TOOL_USE;
        if (!strcmp(c->role, "system")) {
            any_system = true;
            continue;
        }
        if (!last || strcmp(last, c->role)) {
            if (last && !group_text)
                return SKIP_EMPTY_MESSAGE;
            if (!last && strcmp(c->role, "user"))
                return SKIP_TURN_ORDER;
            last = c->role;
            group_text = false;
        }
        group_text = group_text || has_text(c);
    }
    if (!last || !group_text)
        return last ? SKIP_EMPTY_MESSAGE : SKIP_TURN_ORDER;
    if (strcmp(last, "assistant"))
        return SKIP_TURN_ORDER;

    eb_buf_putc(b, '{');
    if (any_system) {
        put_lit(b, "\"system\":\"");
        for (size_t i = 0; i < w->n_conv; i++) {
            if (strcmp(w->conv[i].role, "system"))
                continue;
            if (!first)
                put_lit(b, "\\n");
            first = false;
            put_conv_text(b, &w->conv[i]);
        }
        put_lit(b, "\",");
    }
    put_lit(b, "\"messages\":[");
    last = NULL;
    for (size_t i = 0; i < w->n_conv; i++) {
        const conv_msg *c = &w->conv[i];
        if (!strcmp(c->role, "system"))
            continue;
        if (last && !strcmp(last, c->role)) {
            put_lit(b, "\\n");
        } else {
            if (last)
                put_lit(b, "\"},");
            put_lit(b, "{\"role\":\"");
            put_lit(b, c->role);
            put_lit(b, "\",\"content\":\"");
            last = c->role;
        }
        put_conv_text(b, c);
    }
    put_lit(b, "\"}]}\n");
    return NULL;
}

static const char *write_sql_pair(export_writer *w, const cJSON *trace, eb_buf *b)
{
    const export_sql_info *q = &w->sql;
    const char *id = member_str(trace, "id"), *p;
    size_t n;

    if (!export_sql_find(trace, &w->sql))
        return SKIP_NO_SQL;
    if (!q->question)
        return SKIP_NO_QUESTION;
    put_lit(b, "{\"question\":");
    put_str(b, q->question);
    put_lit(b, ",\"sql\":");
    put_str(b, q->sql);
    put_lit(b, ",\"database_type\":");
    put_str_or_null(b, q->database_type);
    put_lit(b, ",\"database_hash\":");
    if (q->database) {
        char hex[65];
        eb_sha256_hex(q->database, strlen(q->database), hex);
        hex[16] = '\0';
        put_str(b, hex);
    } else {
        put_lit(b, "null");
    }
    put_lit(b, ",\"tables\":[");
    eb_buf_reset(&w->names);
    n = export_sql_tables(q->sql, &w->names);
    p = w->names.data;
    for (size_t i = 0; i < n; i++, p += strlen(p) + 1) {
        if (i)
            eb_buf_putc(b, ',');
        put_str(b, p);
    }
    put_lit(b, "],\"success\":");
    put_lit(b, !status_error(trace) && !q->failed ? "true" : "false");
    put_lit(b, ",\"execution_ms\":");
    if (q->has_execution_ms)
        eb_buf_json_number(b, round(q->execution_ms * 1000) / 1000);
    else
        put_lit(b, "null");
    put_lit(b, ",\"query_type\":");
    put_str(b, export_query_type_name(export_sql_query_type(q->sql)));
    put_lit(b, ",\"trace_id\":");
    put_str_or_null(b, id);
    put_lit(b, "}\n");
    return NULL;
}

/* ================================================================== redaction */

/* True for a value the built-in kinds never replace, so scanning it can be skipped: an RFC 3339
 * timestamp (the trace format's times) or one of the format's enumerated words (roles, states,
 * kinds). A team pattern could match such a value, so with team patterns every value is
 * scanned. */
static bool plain_value(const char *v, size_t n)
{
    static const char *const words[] = {
        "ok",     "error",     "unset",        "span",      "generation",  "event",
        "tool",   "system",    "user",         "assistant", "developer",   "function",
        "accept", "reject",    "needs_review", "accepted",  "rejected",    "unreviewed",
        "text",   "image_url", "numeric",      "boolean",   "categorical", "human",
        "api",    "llm_judge", "json",         "otlp",      "nats",        NULL};

    if (n >= 20 && n <= 35 && v[0] >= '0' && v[0] <= '9')
        return eb_rfc3339_valid(v);
    if (n > 12)
        return false;
    for (const char *const *w = words; *w; w++)
        if (strcmp(v, *w) == 0)
            return true;
    return false;
}

static eb_status redact_tree(export_writer *w, cJSON *item, bool free_form, redact_stats *rs);

/* The record's members whose values are the application's own JSON (not the record's typed
 * fields such as usage, cost or latency): numbers in them are scanned too. */
static bool free_form_member(const char *name)
{
    static const char *const names[] = {"input",    "output",     "tool_calls",
                                        "metadata", "attributes", NULL};

    for (const char *const *n = names; name && *n; n++)
        if (strcmp(name, *n) == 0)
            return true;
    return false;
}

/* Makes item c (a string or a number) the string red holds: in place when it fits the item's
 * own string, else in a copy of its own, the value it had freed when it was the item's (a
 * string, or a number's exact text); the item's name stays as it was. */
static eb_status set_redacted(cJSON *c, const eb_buf *red)
{
    char *copy;

    if (cJSON_IsString(c) && !(c->type & cJSON_IsReference) && strlen(c->valuestring) >= red->len) {
        memcpy(c->valuestring, red->data, red->len + 1); /* fits where it was */
        return EB_OK;
    }
    if (!(copy = cJSON_malloc(red->len + 1)))
        return eb_error(EB_ERR_INTERNAL, "out of memory redacting a record");
    memcpy(copy, red->data, red->len + 1);
    if (c->valuestring && !(c->type & cJSON_IsReference))
        cJSON_free(c->valuestring);
    c->valuestring = copy;
    c->type = cJSON_String | (c->type & cJSON_StringIsConst);
    return EB_OK;
}

/* A number among the application's own JSON that holds a value to pseudonymize (a card number
 * kept as a number, or one a team pattern matches) becomes the token's string, as it would be
 * as text. With the built-in kinds alone only numbers of 7 characters or more are scanned: none
 * of them matches a shorter one. */
static eb_status redact_number(export_writer *w, cJSON *c, redact_stats *rs)
{
    eb_status st;

    eb_buf_reset(&w->num);
    eb_buf_json_number_item(&w->num, c);
    if (w->num.len == 0 || (w->skip_plain && w->num.len < 7))
        return EB_OK;
    eb_buf_reset(&w->red);
    if ((st = redact_json_string(w->redact, w->num.data, w->num.len, &w->red, rs)) != EB_OK)
        return st;
    if (w->red.len == w->num.len && !memcmp(w->red.data, w->num.data, w->num.len))
        return EB_OK;
    return set_redacted(c, &w->red);
}

/* A string value that is JSON text holding an object or an array (tool-call arguments, a tool
 * result): its strings are redacted at their decoded values, as those of the record are (an
 * escape such as \n before a value would otherwise hide it, "jos\u00e9@..." would give another
 * token than its decoded form), and when any was replaced the text is written again, compact,
 * into w->json (numbers keep their text). *text is then w->json's data. Text with an escaped NUL
 * is left to the plain pass (cJSON would cut the string there). */
static eb_status redact_json_text(export_writer *w, const char **text, size_t *n, redact_stats *rs)
{
    const char *p = *text;
    uint64_t before = rs->total;
    cJSON *inner = NULL;
    eb_status st = EB_OK;

    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if ((*p != '{' && *p != '[') || strstr(p, "\\u0000"))
        return EB_OK;
    inner = eb_json_parse_text(*text, *n);
    if (!inner || !(cJSON_IsObject(inner) || cJSON_IsArray(inner)))
        goto cleanup;
    if ((st = redact_tree(w, inner, true, rs)) != EB_OK || rs->total == before)
        goto cleanup;
    eb_buf_reset(&w->json);
    put_json(&w->json, inner);
    *text = w->json.data;
    *n = w->json.len;
cleanup:
    cJSON_Delete(inner);
    return st;
}

/* Replaces every string value below item (not member names) by its redacted form, and in the
 * application's own JSON (free_form, or below a free_form_member) every number that holds a
 * value to pseudonymize. */
static eb_status redact_tree(export_writer *w, cJSON *item, bool free_form, redact_stats *rs)
{
    eb_status st = EB_OK;

    for (cJSON *c = item->child; c; c = c->next) {
        if (cJSON_IsNumber(c) && (free_form || free_form_member(c->string))) {
            if ((st = redact_number(w, c, rs)) != EB_OK)
                return st;
        } else if (cJSON_IsString(c) && c->valuestring && c->valuestring[0]) {
            size_t n = strlen(c->valuestring), tn = n;
            const char *text = c->valuestring;
            if (w->skip_plain && plain_value(c->valuestring, n))
                continue;
            if ((st = redact_json_text(w, &text, &tn, rs)) != EB_OK)
                return st;
            eb_buf_reset(&w->red);
            if ((st = redact_json_string(w->redact, text, tn, &w->red, rs)) != EB_OK)
                return st;
            if (w->red.len == n && !memcmp(w->red.data, c->valuestring, n))
                continue;
            if ((st = set_redacted(c, &w->red)) != EB_OK)
                return st;
        } else if (c->child && (st = redact_tree(w, c, free_form || free_form_member(c->string),
                                                 rs)) != EB_OK) {
            return st;
        }
    }
    return st;
}

/* ================================================================== writer */

eb_status export_writer_new(const export_options *opt, export_writer **out)
{
    export_writer *w = NULL;
    eb_status st = EB_OK;
    bool fields = opt && (opt->n_include || opt->n_exclude);

    *out = NULL;
    if (!opt || (unsigned)opt->format >= EXPORT_FORMAT_COUNT) {
        st = eb_error(EB_ERR_INVALID, "unknown export format");
        goto cleanup;
    }
    if (opt->n_include + opt->n_exclude > EXPORT_FIELDS_MAX || (opt->n_include && !opt->include) ||
        (opt->n_exclude && !opt->exclude)) {
        st = eb_error(EB_ERR_INVALID, "include / exclude: at most %d field paths",
                      EXPORT_FIELDS_MAX);
        goto cleanup;
    }
    if (fields && opt->format != EXPORT_JSON && opt->format != EXPORT_JSONL &&
        opt->format != EXPORT_CSV) {
        st = eb_error(EB_ERR_INVALID,
                      "include / exclude apply to the json, jsonl and csv formats, not to %s",
                      formats[opt->format].name);
        goto cleanup;
    }
    w = eb_calloc(1, sizeof *w);
    w->format = opt->format;
    w->redact = opt->redact;
    w->skip_plain = w->redact && redact_kind_count(w->redact) == REDACT_BUILTIN_COUNT;
    w->exported_at = opt->exported_at ? eb_strdup(opt->exported_at) : NULL;
    if (opt->filter_json) {
        cJSON *f = cJSON_ParseWithOpts(opt->filter_json, NULL, true);
        eb_buf tmp = {0};
        if (!f) {
            st = eb_error(EB_ERR_INVALID, "filter_json is not valid JSON");
            goto cleanup;
        }
        put_json(&tmp, f);
        cJSON_Delete(f);
        w->filter = eb_buf_steal(&tmp);
    }
    if (opt->format == EXPORT_CSV) {
        if ((st = csv_columns(w, opt)) != EB_OK)
            goto cleanup;
    } else if (fields) {
        w->sel = eb_calloc(1, sizeof *w->sel);
        for (size_t i = 0; i < opt->n_include; i++) {
            if ((st = check_path("include", opt->include[i])) != EB_OK)
                goto cleanup;
            sel_add(w->sel, opt->include[i], true);
        }
        for (size_t i = 0; i < opt->n_exclude; i++) {
            if ((st = check_path("exclude", opt->exclude[i])) != EB_OK)
                goto cleanup;
            sel_add(w->sel, opt->exclude[i], false);
        }
    }
    *out = w;
    w = NULL;
cleanup:
    export_writer_free(w);
    return st;
}

void export_writer_free(export_writer *w)
{
    if (!w)
        return;
    free(w->exported_at);
    free(w->filter);
    if (w->sel) {
        sel_free(w->sel);
        free(w->sel);
    }
    for (size_t i = 0; i < w->n_cols; i++)
        col_free(&w->cols[i]);
    free(w->cols);
    eb_buf_free(&w->red);
    eb_buf_free(&w->cell);
    eb_buf_free(&w->names);
    eb_buf_free(&w->json);
    eb_buf_free(&w->num);
    export_sql_info_release(&w->sql);
    free(w->conv);
    free(w->ids);
    free(w);
}

eb_status export_writer_begin(export_writer *w, eb_buf *out)
{
    if (!w || !out)
        return eb_error(EB_ERR_INVALID, "export_writer_begin: NULL argument");
    if (w->format == EXPORT_JSON) {
        put_lit(out, "{\"format_version\":1,\"exported_at\":");
        put_str_or_null(out, w->exported_at);
        put_lit(out, ",\"filter\":");
        put_lit(out, w->filter ? w->filter : "null");
        put_lit(out, ",\"records\":[");
    } else if (w->format == EXPORT_CSV) {
        for (size_t i = 0; i < w->n_cols; i++) {
            if (i)
                eb_buf_putc(out, ',');
            csv_cell(out, w->cols[i].name, strlen(w->cols[i].name), true);
        }
        put_lit(out, "\r\n");
    }
    return EB_OK;
}

/* export_writer_record() once its arguments are checked. */
static eb_status write_record(export_writer *w, cJSON *record, eb_buf *out, export_stats *stats)
{
    eb_status st = EB_OK;
    redact_stats rs;
    const char *skip = NULL;
    size_t start = out->len;

    memset(&rs, 0, sizeof rs);
    if (w->redact && (st = redact_tree(w, record, false, &rs)) != EB_OK)
        goto cleanup;
    if (!cJSON_IsObject(record)) {
        skip = SKIP_INVALID_RECORD;
    } else {
        switch (w->format) {
        case EXPORT_JSONL:
            put_record(w, out, record);
            eb_buf_putc(out, '\n');
            break;
        case EXPORT_JSON:
            if (w->written)
                eb_buf_putc(out, ',');
            put_record(w, out, record);
            break;
        case EXPORT_CSV:
            csv_row(w, out, record);
            break;
        case EXPORT_OPENAI_CHAT:
            skip = write_openai_chat(w, record, out);
            break;
        case EXPORT_OPENAI_PREFERENCE:
            skip = write_openai_preference(w, record, out);
            break;
        case EXPORT_ANTHROPIC:
            skip = write_anthropic(w, record, out);
            break;
        case EXPORT_SQL_PAIRS:
            skip = write_sql_pair(w, record, out);
            break;
        case EXPORT_FORMAT_COUNT:
            st = eb_error(EB_ERR_INTERNAL, "export writer with no format");
            goto cleanup;
        }
    }
    if (skip) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
        export_stats_skip(stats, skip);
        goto cleanup;
    }
    w->written++;
    if (w->format == EXPORT_SQL_PAIRS)
        export_stats_add_sql(stats, record, &w->sql);
    else if (w->format == EXPORT_OPENAI_PREFERENCE)
        export_stats_add(stats, member(record, "preferred"));
    else
        export_stats_add(stats, record);
    export_stats_add_redactions(stats, &rs, w->redact);
cleanup:
    return st;
}

eb_status export_writer_record(export_writer *w, cJSON *record, eb_buf *out, export_stats *stats)
{
    if (!w || !record || !out)
        return eb_error(EB_ERR_INVALID, "export_writer_record: NULL argument");
    return write_record(w, record, out, stats);
}

eb_status export_writer_end(export_writer *w, const export_stats *stats, eb_buf *out)
{
    eb_status st = EB_OK;
    cJSON *json = NULL;

    if (!w || !out) {
        st = eb_error(EB_ERR_INVALID, "export_writer_end: NULL argument");
        goto cleanup;
    }
    if (w->format != EXPORT_JSON)
        goto cleanup;
    put_lit(out, "],\"statistics\":");
    if (stats) {
        json = export_stats_json(stats);
        put_json(out, json);
    } else {
        put_lit(out, "null");
    }
    eb_buf_putc(out, '}');
cleanup:
    cJSON_Delete(json);
    return st;
}

uint64_t export_writer_count(const export_writer *w)
{
    return w ? w->written : 0;
}
