/* api_traces.c -- the JSON batch API (POST /api/v1/traces) and the trace query API.
 *
 * Ingestion answers per item: every item is validated on its own, the valid ones are handed to
 * the INGEST stream, and the answer waits for JetStream's acknowledgements (nothing is
 * acknowledged to the caller before the stream has it). 202 when all are accepted, 207 when
 * some are not, 400 when none is valid, 503 when the stream cannot take them.
 * The loop thread only takes the request and answers it: inflating, parsing, validating and
 * packing the records run on the service's pool threads (pool.c, decode_batch), several
 * batches at a time. The parsed body lives in an arena (one free for the whole tree); the
 * Trace trees are freed there too, so a batch waits for JetStream holding only its packed
 * messages and ids.
 * Queries read PostgreSQL in a transaction scoped to the caller's team (row-level security);
 * pagination is keyset (part_time, id) with an opaque cursor, never OFFSET. */
#include "evalbus/arena.h"
#include "body.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"
#include "trace_json.h"

#include <errno.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

eb_status ingest_check_project(const eb_principal *p, const char *project)
{
    if (!p->project[0])
        return EB_OK;
    if (project && strcmp(project, p->project) == 0)
        return EB_OK;
    return eb_error(EB_ERR_FORBIDDEN, "this key may only write to project '%s'", p->project);
}

bool ingest_project_scope(eb_http_req *req, const char **project, const char *verb)
{
    const eb_principal *p = eb_http_req_principal(req);

    if (!p->project[0])
        return true;
    if (*project && strcmp(*project, p->project) != 0) {
        eb_http_reply_error(req, EB_ERR_FORBIDDEN, "this key may only %s project '%s'", verb,
                            p->project);
        return false;
    }
    *project = p->project;
    return true;
}

/* One POST: filled in by decode_batch on a pool thread, answered on the loop thread. */
typedef struct batch_state {
    ingest_ctx *ctx;
    eb_http_req *req; /* touched on the loop thread only */
    eb_principal who; /* copied: the pool thread reads it */
    const char *body; /* owned by req, which lives until the answer */
    size_t body_len;
    const char *encoding; /* Content-Encoding, or NULL (owned by req, like body) */
    /* whole-request failure (before any item was looked at) */
    eb_status st;
    char *error; /* its message */
    /* per item */
    cJSON *rejected; /* array built during validation */
    natsMsg **msgs;  /* packed records of the valid traces, for the stream */
    char **ids;      /* ids of the valid traces */
    size_t nvalid;
    size_t *index; /* position of msgs[i] / ids[i] in the request */
    size_t total;
} batch_state;

static cJSON *rejection(size_t index, const char *id, eb_status st, const char *msg)
{
    cJSON *r = cJSON_CreateObject(), *e;

    cJSON_AddNumberToObject(r, "index", (double)index);
    eb_json_add_str(r, "id", id, true);
    e = cJSON_AddObjectToObject(r, "error");
    cJSON_AddStringToObject(e, "code", eb_status_str(st));
    cJSON_AddStringToObject(e, "message", msg);
    return r;
}

static void batch_free(batch_state *b)
{
    for (size_t i = 0; i < b->nvalid; i++) {
        natsMsg_Destroy(b->msgs[i]);
        free(b->ids[i]);
    }
    free(b->msgs);
    free(b->ids);
    free(b->index);
    free(b->error);
    cJSON_Delete(b->rejected);
    free(b);
}

static void on_published(void *arg, const eb_status *results, size_t n)
{
    batch_state *b = arg;
    cJSON *root = cJSON_CreateObject(), *accepted = cJSON_AddArrayToObject(root, "accepted");
    size_t nacc = 0, nunavail = 0, nfull = 0;
    int code;

    for (size_t i = 0; i < n; i++) {
        if (results[i] == EB_OK) {
            cJSON_AddItemToArray(accepted, cJSON_CreateString(b->ids[i]));
            nacc++;
        } else {
            nunavail++;
            nfull += results[i] == EB_ERR_RATE_LIMITED;
            cJSON_AddItemToArray(b->rejected, rejection(b->index[i], b->ids[i], EB_ERR_UNAVAILABLE,
                                                        ingest_publish_message(results[i])));
        }
    }
    eb_metrics_add("evalbus_ingest_traces_accepted_total", "source=\"json\"", (double)nacc);
    eb_metrics_add("evalbus_ingest_traces_rejected_total", "source=\"json\"",
                   (double)(b->total - nacc));
    if (nacc == b->total) {
        code = 202;
    } else if (nacc > 0) {
        code = 207;
    } else {
        cJSON *e = cJSON_CreateObject();
        bool unavailable = nunavail > 0 && nunavail == b->total;
        bool full = unavailable && nfull == nunavail;
        cJSON_AddStringToObject(e, "code", unavailable ? "unavailable" : "invalid_argument");
        cJSON_AddStringToObject(e, "message",
                                full          ? ingest_publish_message(EB_ERR_RATE_LIMITED)
                                : unavailable ? "the ingest stream is unavailable; retry"
                                              : "no trace in the batch was accepted");
        cJSON_AddStringToObject(e, "request_id", eb_http_req_id(b->req));
        cJSON_AddItemToObject(root, "error", e);
        code = unavailable ? 503 : 400;
        /* a full stream takes records again once the writers have stored some (checked once
         * a second) */
        if (unavailable)
            eb_http_add_header(b->req, "Retry-After", full ? "5" : "1");
    }
    cJSON_AddItemToObject(root, "rejected", b->rejected);
    b->rejected = NULL;
    eb_http_reply_json(b->req, code, root);
    batch_free(b);
}

/* Pool thread: packs item i (client id id, or NULL) into its record, or rejects it when the NATS
 * server could not take the record. */
static void take_trace(batch_state *b, size_t i, const char *id, const Evalbus__V1__Trace *t,
                       long long now_ms, long long max_payload)
{
    natsMsg *msg = NULL;

    if (ingest_record_pack(b->ctx->pub, &b->who, "json", false, now_ms, t, max_payload, &msg) ==
        EB_ERR_TOO_LARGE) {
        /* the server would refuse it on every try: say so now, not 503 forever */
        cJSON_AddItemToArray(b->rejected, rejection(i, id, EB_ERR_TOO_LARGE, eb_error_message()));
        return;
    }
    /* a record that cannot be made (NULL) is answered like one the stream refused */
    b->index[b->nvalid] = i;
    b->ids[b->nvalid] = eb_strdup(t->id);
    b->msgs[b->nvalid++] = msg;
}

/* Pool thread: body -> JSON -> one Trace per item -> checks -> packed record. Touches neither
 * the request nor the loop; records a whole-request failure in b->st / b->error. */
static void decode_batch(void *arg)
{
    batch_state *b = arg;
    const ingest_limits *lim = &b->ctx->limits;
    const eb_principal *p = &b->who;
    const char *data;
    size_t len, n, i = 0;
    long long max_payload;
    char *owned = NULL;
    cJSON *root = NULL;
    const cJSON *items, *item;
    eb_arena *arena = eb_arena_new();
    long long now_ms;
    eb_status st;

    st = ingest_body_decode(b->body, b->body_len, b->encoding, (size_t)b->ctx->cfg->svc.max_body,
                            &data, &len, &owned);
    if (st == EB_OK)
        st = ingest_body_json_fits(data, len);
    if (st == EB_OK) {
        /* the tree is read-only from here on and dies whole: parse it into the arena */
        eb_arena_cjson_bind(arena);
        st = eb_json_parse_object(data, len, &root);
        eb_arena_cjson_bind(NULL);
    }
    free(owned);
    if (st != EB_OK) {
        b->st = st;
        b->error = eb_strdup(eb_error_message());
        goto cleanup;
    }
    items = cJSON_GetObjectItemCaseSensitive(root, "traces");
    for (const cJSON *m = root->child; m && cJSON_IsArray(items); m = m->next)
        if (m != items && m->string && strcmp(m->string, "traces") == 0)
            items = NULL; /* {"traces": [...], "traces": [...]}: which one is meant? */
    if (!cJSON_IsArray(items)) {
        b->st = EB_ERR_INVALID;
        b->error = eb_strdup("the body must be {\"traces\": [...]} with one array of traces");
        goto cleanup;
    }
    n = (size_t)cJSON_GetArraySize(items);
    if (n > lim->max_batch_items) {
        b->st = EB_ERR_TOO_LARGE;
        b->error = eb_asprintf("the batch holds %zu traces; the limit (max-batch-items) is %zu", n,
                               lim->max_batch_items);
        goto cleanup;
    }
    b->total = n;
    b->rejected = cJSON_CreateArray();
    b->msgs = eb_calloc(n ? n : 1, sizeof(*b->msgs));
    b->ids = eb_calloc(n ? n : 1, sizeof(*b->ids));
    b->index = eb_calloc(n ? n : 1, sizeof(size_t));
    now_ms = ingest_now_ms();
    max_payload = ingest_publisher_max_payload(b->ctx->pub);
    cJSON_ArrayForEach(item, items)
    {
        Evalbus__V1__Trace *t = NULL;
        const cJSON *idj = cJSON_GetObjectItemCaseSensitive(item, "id");
        const char *id = cJSON_IsString(idj) ? idj->valuestring : NULL;

        st = ingest_trace_from_json(item, lim, &t);
        if (st == EB_OK && p->project[0] && (!t->project || !*t->project)) {
            free(t->project);                   /* "" is the same as absent */
            t->project = eb_strdup(p->project); /* a restricted key writes to its project */
        }
        if (st == EB_OK)
            st = ingest_check_project(p, t->project);
        if (st != EB_OK) {
            cJSON_AddItemToArray(b->rejected, rejection(i, id, st, eb_error_message()));
        } else {
            take_trace(b, i, id, t, now_ms, max_payload);
        }
        if (t)
            evalbus__v1__trace__free_unpacked(t, NULL);
        i++;
    }
cleanup:
    eb_arena_free(arena); /* root */
}

/* Loop thread: the records of traces that a project-restricted key's team stores in another
 * project are refused, the others go to the stream. */
static void on_guarded(void *arg, char *const *found)
{
    batch_state *b = arg;
    size_t kept = 0;

    for (size_t i = 0; i < b->nvalid; i++) {
        if (found && found[i]) {
            char *why = ingest_project_refusal(b->ids[i], found[i], b->who.project);
            cJSON_AddItemToArray(b->rejected,
                                 rejection(b->index[i], b->ids[i], EB_ERR_FORBIDDEN, why));
            free(why);
            natsMsg_Destroy(b->msgs[i]);
            free(b->ids[i]);
            continue;
        }
        b->index[kept] = b->index[i];
        b->ids[kept] = b->ids[i];
        b->msgs[kept++] = b->msgs[i];
    }
    b->nvalid = kept;
    ingest_publish_packed(b->ctx->pub, b->msgs, b->nvalid, NULL, false, on_published, b);
}

/* Loop thread: answer a whole-request failure, or hand the packed records to the guard and then
 * the stream. */
static void on_decoded(void *arg)
{
    batch_state *b = arg;

    if (b->st != EB_OK) {
        /* the detail recorded on the pool thread, as this thread's own */
        eb_status st = eb_error(b->st, "%s", b->error);
        eb_http_reply_status(b->req, st);
        batch_free(b);
        return;
    }
    ingest_guard_projects(b->ctx, &b->who, (const char *const *)b->ids, b->nvalid, on_guarded, b);
}

void api_traces_post(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const char *enc = eb_http_req_header(req, "Content-Encoding");
    batch_state *b = eb_calloc(1, sizeof(*b));

    b->ctx = ctx;
    b->req = req;
    b->who = *eb_http_req_principal(req);
    b->body = eb_http_req_body(req, &b->body_len);
    b->encoding = enc;
    eb_pool_submit(ctx->pool, decode_batch, on_decoded, b);
}

/* --- queries --- */

#define SUMMARY_COLS                                                                               \
    "t.id, t.project, t.name, t.model, t.provider, t.status, ingest.iso(t.start_time),"            \
    " ingest.iso(t.end_time), t.latency_ms, t.input_tokens, t.output_tokens, t.total_tokens,"      \
    " t.cost_usd, array_to_json(t.tags)::text, t.metadata::text, t.review_state, t.source,"        \
    " t.session_id, t.user_id, ingest.iso(t.part_time), t.status_message, t.environment,"          \
    " t.release"

/* The ILIKE pattern "%<s>%" with LIKE's special characters escaped. With json, s is first
 * written the way PostgreSQL writes a string inside jsonb text ('"' as \", a newline as \n,
 * other control characters as \u00XX), so that q finds a metadata value holding a quote or a
 * backslash as it was typed. */
static char *like_pattern(const char *s, bool json)
{
    static const char hex[] = "0123456789abcdef";
    eb_buf b = {0};

    eb_buf_putc(&b, '%');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[8] = {(char)ch, 0};

        if (json && (ch == '"' || ch == '\\' || ch < 0x20)) {
            const char *named = ch == '"'    ? "\\\""
                                : ch == '\\' ? "\\\\"
                                : ch == '\b' ? "\\b"
                                : ch == '\f' ? "\\f"
                                : ch == '\n' ? "\\n"
                                : ch == '\r' ? "\\r"
                                : ch == '\t' ? "\\t"
                                             : NULL;
            if (named)
                snprintf(esc, sizeof esc, "%s", named);
            else
                snprintf(esc, sizeof esc, "\\u00%c%c", hex[ch >> 4], hex[ch & 15]);
        }
        for (const char *e = esc; *e; e++) {
            if (*e == '%' || *e == '_' || *e == '\\')
                eb_buf_putc(&b, '\\');
            eb_buf_putc(&b, *e);
        }
    }
    eb_buf_putc(&b, '%');
    return eb_buf_steal(&b);
}

/* True for an absent parameter or a decimal number, [-+]digits[.digits][e[-+]digits], that
 * a double holds (strtod would also take "nan", "inf", hex and leading spaces; PostgreSQL
 * refuses what underflows to 0 or overflows). */
static bool number_or_null(const char *s)
{
    const char *q = s;
    bool digits = false;
    double v;

    if (!s)
        return true;
    if (*q == '-' || *q == '+')
        q++;
    for (; *q >= '0' && *q <= '9'; q++)
        digits = true;
    if (*q == '.')
        for (q++; *q >= '0' && *q <= '9'; q++)
            digits = true;
    if (!digits)
        return false;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '-' || *q == '+')
            q++;
        if (!(*q >= '0' && *q <= '9'))
            return false;
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (*q)
        return false;
    errno = 0;
    v = strtod(s, NULL);
    return isfinite(v) && !(errno == ERANGE && v == 0);
}

static void add_num(cJSON *o, const char *name, const PGresult *r, int row, int col)
{
    if (eb_db_isnull(r, row, col))
        cJSON_AddNullToObject(o, name);
    else
        cJSON_AddNumberToObject(o, name, atof(eb_db_val(r, row, col)));
}

static void add_json(cJSON *o, const char *name, const PGresult *r, int row, int col)
{
    const char *text = eb_db_isnull(r, row, col) ? NULL : eb_db_val(r, row, col);
    cJSON *v = text ? eb_json_parse_text(text, strlen(text)) : NULL;

    cJSON_AddItemToObject(o, name, v ? v : cJSON_CreateNull());
}

static cJSON *summary_json(const PGresult *r, int i)
{
    cJSON *o = cJSON_CreateObject(), *u;

    cJSON_AddStringToObject(o, "id", eb_db_val(r, i, 0));
    cJSON_AddStringToObject(o, "project", eb_db_val(r, i, 1));
    eb_json_add_str(o, "name", eb_db_val(r, i, 2), true);
    eb_json_add_str(o, "model", eb_db_val(r, i, 3), true);
    eb_json_add_str(o, "provider", eb_db_val(r, i, 4), true);
    cJSON_AddStringToObject(o, "status", eb_db_val(r, i, 5));
    eb_json_add_str(o, "status_message", eb_db_val(r, i, 20), true);
    eb_json_add_str(o, "start_time", eb_db_val(r, i, 6), true);
    eb_json_add_str(o, "end_time", eb_db_val(r, i, 7), true);
    add_num(o, "latency_ms", r, i, 8);
    u = cJSON_AddObjectToObject(o, "usage");
    add_num(u, "input_tokens", r, i, 9);
    add_num(u, "output_tokens", r, i, 10);
    add_num(u, "total_tokens", r, i, 11);
    add_num(o, "cost_usd", r, i, 12);
    add_json(o, "tags", r, i, 13);
    add_json(o, "metadata", r, i, 14);
    cJSON_AddStringToObject(o, "review_state", eb_db_val(r, i, 15));
    cJSON_AddStringToObject(o, "source", eb_db_val(r, i, 16));
    eb_json_add_str(o, "session_id", eb_db_val(r, i, 17), true);
    eb_json_add_str(o, "user_id", eb_db_val(r, i, 18), true);
    eb_json_add_str(o, "environment", eb_db_val(r, i, 21), true);
    eb_json_add_str(o, "release", eb_db_val(r, i, 22), true);
    return o;
}

static void finish_db(ingest_ctx *ctx, PGconn *c)
{
    eb_db_commit(c);
    eb_db_put(ctx->svc.db, c);
}

bool ingest_window_ok(eb_http_req *req, const char *from, const char *to)
{
    long long fs = 0, fns = 0, ts = 0, tns = 0;

    if ((from && !ingest_time_instant(from, &fs, &fns)) ||
        (to && !ingest_time_instant(to, &ts, &tns))) {
        eb_http_reply_error(req, EB_ERR_INVALID, "from and to must be RFC 3339 timestamps");
        return false;
    }
    if (from && to && (fs > ts || (fs == ts && fns > tns))) {
        /* swapped bounds select nothing: a listing or deletion that silently finds nothing */
        eb_http_reply_error(req, EB_ERR_INVALID, "from (%s) is after to (%s)", from, to);
        return false;
    }
    return true;
}

/* Cursor: base64url of "<part_time iso>|<id>". */
static bool decode_cursor(const char *cur, char *pt, size_t ptlen, char **id)
{
    eb_buf raw = {0};
    char *bar;
    bool ok = false;

    if (eb_base64url_decode(cur, strlen(cur), &raw) && raw.len > 0 && raw.len < 1024) {
        raw.data[raw.len] = '\0';
        bar = strchr(raw.data, '|');
        if (bar && (size_t)(bar - raw.data) < ptlen && eb_utf8_valid(raw.data, raw.len)) {
            memcpy(pt, raw.data, (size_t)(bar - raw.data));
            pt[bar - raw.data] = '\0';
            *id = eb_strdup(bar + 1);
            ok = eb_rfc3339_valid(pt);
        }
    }
    eb_buf_free(&raw);
    if (!ok && *id) {
        free(*id);
        *id = NULL;
    }
    return ok;
}

void api_traces_list(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *q_project = eb_http_req_query(req, "project");
    const char *q_from = eb_http_req_query(req, "from");
    const char *q_to = eb_http_req_query(req, "to");
    const char *q_model = eb_http_req_query(req, "model");
    const char *q_provider = eb_http_req_query(req, "provider");
    const char *q_status = eb_http_req_query(req, "status");
    const char *q_review = eb_http_req_query(req, "review");
    const char *q_tag = eb_http_req_query(req, "tag");
    const char *q_text = eb_http_req_query(req, "q");
    const char *q_score = eb_http_req_query(req, "score");
    const char *q_smin = eb_http_req_query(req, "score_min");
    const char *q_smax = eb_http_req_query(req, "score_max");
    const char *q_limit = eb_http_req_query(req, "limit");
    const char *q_cursor = eb_http_req_query(req, "cursor");
    char cur_pt[64] = "", limit_s[24], *cur_id = NULL, *like = NULL, *like_json = NULL;
    long limit = 50;
    const char *params[17];
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;
    cJSON *root, *arr;
    int n;

    if (!ingest_project_scope(req, &q_project, "read"))
        return;
    if (q_limit) {
        long long v;
        if (!eb_http_parse_count(q_limit, 1, 500, &v)) {
            eb_http_reply_error(req, EB_ERR_INVALID, "limit must be an integer from 1 to 500");
            return;
        }
        limit = (long)v;
    }
    if (!ingest_window_ok(req, q_from, q_to))
        return;
    if (q_review && strcmp(q_review, "accepted") && strcmp(q_review, "rejected") &&
        strcmp(q_review, "needs_review") && strcmp(q_review, "unreviewed")) {
        eb_http_reply_error(req, EB_ERR_INVALID,
                            "review must be accepted, rejected, needs_review or unreviewed");
        return;
    }
    if (q_status && strcmp(q_status, "ok") && strcmp(q_status, "error") &&
        strcmp(q_status, "unset")) {
        eb_http_reply_error(req, EB_ERR_INVALID, "status must be ok, error or unset");
        return;
    }
    if (!number_or_null(q_smin) || !number_or_null(q_smax)) {
        eb_http_reply_error(req, EB_ERR_INVALID, "score_min and score_max must be numbers");
        return;
    }
    if (q_smin && q_smax && strtod(q_smin, NULL) > strtod(q_smax, NULL)) {
        eb_http_reply_error(req, EB_ERR_INVALID, "score_min (%s) is greater than score_max (%s)",
                            q_smin, q_smax);
        return;
    }
    if ((q_smin || q_smax) && !q_score) {
        eb_http_reply_error(req, EB_ERR_INVALID, "score_min / score_max need score=<name>");
        return;
    }
    if (q_cursor && !decode_cursor(q_cursor, cur_pt, sizeof(cur_pt), &cur_id)) {
        eb_http_reply_error(req, EB_ERR_INVALID, "cursor is not valid");
        return;
    }
    if (q_text) {
        like = like_pattern(q_text, false);
        like_json = like_pattern(q_text, true);
        if (strcmp(like, like_json) == 0) {
            free(like_json);
            like_json = NULL;
        }
    }
    snprintf(limit_s, sizeof(limit_s), "%ld", limit + 1);
    params[0] = p->team_id;
    params[1] = q_project;
    params[2] = q_from;
    params[3] = q_to;
    params[4] = q_model;
    params[5] = q_provider;
    params[6] = q_status;
    params[7] = q_review;
    params[8] = q_tag;
    params[9] = like;
    params[10] = q_score;
    params[11] = q_smin;
    params[12] = q_smax;
    params[13] = cur_id ? cur_pt : NULL;
    params[14] = cur_id;
    params[15] = limit_s;
    params[16] = like_json;
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        goto cleanup;
    st = eb_db_exec(
        c,
        "SELECT " SUMMARY_COLS " FROM ingest.traces t WHERE t.team_id = $1::uuid"
        " AND " INGEST_PROJECT_WINDOW_SQL
        " AND ($5::text IS NULL OR t.model = $5) AND ($6::text IS NULL OR t.provider = $6)"
        " AND ($7::text IS NULL OR t.status = $7) AND ($8::text IS NULL OR t.review_state = $8)"
        " AND ($9::text IS NULL OR t.tags @> ARRAY[$9::text])"
        " AND ($10::text IS NULL OR t.name ILIKE $10 OR t.metadata::text ILIKE $10"
        "  OR t.metadata::text ILIKE $17)"
        " AND ($11::text IS NULL OR EXISTS (SELECT 1 FROM ingest.scores s WHERE s.team_id ="
        "  t.team_id AND s.trace_id = t.id AND s.name = $11"
        "  AND ($12::float8 IS NULL OR s.value_number >= $12::float8)"
        "  AND ($13::float8 IS NULL OR s.value_number <= $13::float8)))"
        " AND ($14::timestamptz IS NULL OR (t.part_time, t.id) < ($14::timestamptz, $15::text))"
        " ORDER BY t.part_time DESC, t.id DESC LIMIT $16::int",
        17, params, &r);
    if (st != EB_OK) {
        eb_db_rollback(c);
        eb_db_put(ctx->svc.db, c);
        eb_http_reply_status(req, st);
        goto cleanup;
    }
    finish_db(ctx, c);
    root = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(root, "traces");
    n = PQntuples(r);
    for (int i = 0; i < n && i < limit; i++)
        cJSON_AddItemToArray(arr, summary_json(r, i));
    if (n > limit) {
        eb_buf raw = {0}, enc = {0};
        eb_buf_printf(&raw, "%s|%s", eb_db_val(r, (int)limit - 1, 19),
                      eb_db_val(r, (int)limit - 1, 0));
        eb_base64url_encode(raw.data, raw.len, &enc);
        cJSON_AddStringToObject(root, "next_cursor", enc.data);
        eb_buf_free(&raw);
        eb_buf_free(&enc);
    } else {
        cJSON_AddNullToObject(root, "next_cursor");
    }
    eb_http_reply_json(req, 200, root);
cleanup:
    PQclear(r);
    free(cur_id);
    free(like);
    free(like_json);
}

void api_trace_get(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *id = eb_http_req_param(req, "id");
    const char *params[3] = {p->team_id, id, p->project[0] ? p->project : NULL};
    PGconn *c;
    PGresult *r = NULL, *ro = NULL, *rr = NULL, *rs = NULL;
    eb_status st;
    cJSON *o, *arr;

    /* four statements, one snapshot: a replacement or deletion committed meanwhile must not
     * mix two versions of the trace into the answer */
    c = eb_req_db_begin_read(ctx->svc.db, req);
    if (!c)
        return;
    st = eb_db_exec(c,
                    "SELECT " SUMMARY_COLS ", t.input::text, t.output::text, t.tool_calls::text,"
                    " t.attributes::text FROM ingest.trace_keys k JOIN ingest.traces t ON"
                    " t.team_id = k.team_id AND t.part_time = k.part_time AND t.id = k.id"
                    " WHERE k.team_id = $1::uuid AND k.id = $2 AND ($3::text IS NULL OR"
                    " t.project = $3)",
                    3, params, &r);
    if (st == EB_OK && PQntuples(r) == 1)
        st = eb_db_exec(c,
                        "SELECT o.id, o.parent_id, o.type, o.name, ingest.iso(o.start_time),"
                        " ingest.iso(o.end_time), o.status, o.status_message, o.model,"
                        " o.provider, o.input_tokens, o.output_tokens, o.cost_usd, o.input::text,"
                        " o.output::text, o.tool_calls::text, o.attributes::text,"
                        " o.metadata::text FROM ingest.trace_keys k JOIN ingest.observations o"
                        " ON o.team_id = k.team_id AND o.part_time = k.part_time AND"
                        " o.trace_id = k.id WHERE k.team_id = $1::uuid AND k.id = $2"
                        " ORDER BY o.start_time NULLS LAST, o.id LIMIT 10000",
                        2, params, &ro);
    if (st == EB_OK && PQntuples(r) == 1)
        st = eb_db_exec(c,
                        "SELECT id, decision, reason, score, notes, reviewer_user_id,"
                        " reviewer_key_id, ingest.iso(created_at) FROM ingest.reviews WHERE"
                        " team_id = $1::uuid AND trace_id = $2 ORDER BY id DESC LIMIT 1000",
                        2, params, &rr);
    if (st == EB_OK && PQntuples(r) == 1)
        st = eb_db_exec(c,
                        "SELECT id, observation_id, name, kind, value_number, value_text, source,"
                        " comment, ingest.iso(created_at) FROM ingest.scores WHERE team_id ="
                        " $1::uuid AND trace_id = $2 ORDER BY created_at, id LIMIT 1000",
                        2, params, &rs);
    if (st != EB_OK) {
        eb_db_rollback(c);
        eb_db_put(ctx->svc.db, c);
        eb_http_reply_status(req, st);
        goto cleanup;
    }
    finish_db(ctx, c);
    if (PQntuples(r) != 1) {
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such trace");
        goto cleanup;
    }
    o = summary_json(r, 0);
    add_json(o, "input", r, 0, 23);
    add_json(o, "output", r, 0, 24);
    add_json(o, "tool_calls", r, 0, 25);
    add_json(o, "attributes", r, 0, 26);
    arr = cJSON_AddArrayToObject(o, "observations");
    for (int i = 0; i < PQntuples(ro); i++) {
        cJSON *ob = cJSON_CreateObject(), *u;
        cJSON_AddStringToObject(ob, "id", eb_db_val(ro, i, 0));
        eb_json_add_str(ob, "parent_id", eb_db_val(ro, i, 1), true);
        cJSON_AddStringToObject(ob, "type", eb_db_val(ro, i, 2));
        eb_json_add_str(ob, "name", eb_db_val(ro, i, 3), true);
        eb_json_add_str(ob, "start_time", eb_db_val(ro, i, 4), true);
        eb_json_add_str(ob, "end_time", eb_db_val(ro, i, 5), true);
        cJSON_AddStringToObject(ob, "status", eb_db_val(ro, i, 6));
        eb_json_add_str(ob, "status_message", eb_db_val(ro, i, 7), true);
        eb_json_add_str(ob, "model", eb_db_val(ro, i, 8), true);
        eb_json_add_str(ob, "provider", eb_db_val(ro, i, 9), true);
        u = cJSON_AddObjectToObject(ob, "usage");
        add_num(u, "input_tokens", ro, i, 10);
        add_num(u, "output_tokens", ro, i, 11);
        add_num(ob, "cost_usd", ro, i, 12);
        add_json(ob, "input", ro, i, 13);
        add_json(ob, "output", ro, i, 14);
        add_json(ob, "tool_calls", ro, i, 15);
        add_json(ob, "attributes", ro, i, 16);
        add_json(ob, "metadata", ro, i, 17);
        cJSON_AddItemToArray(arr, ob);
    }
    arr = cJSON_AddArrayToObject(o, "reviews");
    for (int i = 0; i < PQntuples(rr); i++) {
        cJSON *rv = cJSON_CreateObject();
        cJSON_AddNumberToObject(rv, "id", atof(eb_db_val(rr, i, 0)));
        cJSON_AddStringToObject(rv, "decision", eb_db_val(rr, i, 1));
        eb_json_add_str(rv, "reason", eb_db_val(rr, i, 2), true);
        add_num(rv, "score", rr, i, 3);
        eb_json_add_str(rv, "notes", eb_db_val(rr, i, 4), true);
        eb_json_add_str(rv, "reviewer_user_id", eb_db_val(rr, i, 5), true);
        eb_json_add_str(rv, "reviewer_key_id", eb_db_val(rr, i, 6), true);
        cJSON_AddStringToObject(rv, "created_at", eb_db_val(rr, i, 7));
        cJSON_AddItemToArray(arr, rv);
    }
    arr = cJSON_AddArrayToObject(o, "scores");
    for (int i = 0; i < PQntuples(rs); i++) {
        cJSON *sc = cJSON_CreateObject();
        const char *kind = eb_db_val(rs, i, 3);
        cJSON_AddStringToObject(sc, "id", eb_db_val(rs, i, 0));
        eb_json_add_str(sc, "observation_id", eb_db_val(rs, i, 1), true);
        cJSON_AddStringToObject(sc, "name", eb_db_val(rs, i, 2));
        cJSON_AddStringToObject(sc, "kind", kind);
        if (strcmp(kind, "categorical") == 0)
            cJSON_AddStringToObject(sc, "value", eb_db_val(rs, i, 5));
        else if (strcmp(kind, "boolean") == 0)
            cJSON_AddBoolToObject(sc, "value", atof(eb_db_val(rs, i, 4)) != 0);
        else
            add_num(sc, "value", rs, i, 4);
        cJSON_AddStringToObject(sc, "source", eb_db_val(rs, i, 6));
        eb_json_add_str(sc, "comment", eb_db_val(rs, i, 7), true);
        cJSON_AddStringToObject(sc, "created_at", eb_db_val(rs, i, 8));
        cJSON_AddItemToArray(arr, sc);
    }
    eb_http_reply_json(req, 200, o);
cleanup:
    PQclear(r);
    PQclear(ro);
    PQclear(rr);
    PQclear(rs);
}
