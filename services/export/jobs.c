/* jobs.c -- what an export is: the request (format, filter, fields, options) checked and
 * normalized, the filter turned into SQL on the view ingest.export_traces, and a job row
 * turned into the JSON the API answers.
 * The filter travels as a normalized JSON object (stored with the job, echoed in the json
 * format). COPY takes no bind parameters, so the SQL is built with literals escaped by libpq
 * (PQescapeLiteral) for the connection that runs it; only members that are present add a
 * condition, which keeps partition pruning on the time range.
 * Threading: pure functions, any thread. */
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "export_int.h"
#include "record.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    FILTER_MAX_ITEMS = 100, /* values of one list filter */
    FILTER_MAX_LEN = 256,   /* bytes of one value */
};

/* The time filters: member, column of the view, comparison (in this order in the SQL). */
static const char *const time_filters[][3] = {
    {"since", "part_time", ">="},
    {"until", "part_time", "<"},
    /* when the trace was stored (scheduled exports take what arrived since their last run) */
    {"stored_since", "created_at", ">="},
    {"stored_until", "created_at", "<"},
};

static const char *const list_filters[][2] = {
    /* member, column of the view */
    {"projects", "project"},           {"models", "model"},
    {"providers", "provider"},         {"statuses", "status"},
    {"review_states", "review_state"},
};
static const char *const statuses[] = {"ok", "error", "unset", NULL};
static const char *const review_states[] = {"unreviewed", "accepted", "rejected", "needs_review",
                                            NULL};
static const char *const compressions[] = {"gzip", "zstd", "none", NULL};

static bool one_of(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* Checks an array of strings member `name` of obj (absent is fine) and copies it to out. */
static eb_status copy_list(const cJSON *obj, const char *where, const char *name,
                           const char *const *allowed, cJSON *out)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, name), *it;
    cJSON *copy;

    if (!arr || cJSON_IsNull(arr))
        return EB_OK;
    if (!cJSON_IsArray(arr))
        return eb_error(EB_ERR_INVALID, "%s.%s must be an array of strings", where, name);
    if (cJSON_GetArraySize(arr) > FILTER_MAX_ITEMS)
        return eb_error(EB_ERR_INVALID, "%s.%s holds more than %d values", where, name,
                        FILTER_MAX_ITEMS);
    copy = cJSON_AddArrayToObject(out, name);
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsString(it) || !it->valuestring[0])
            return eb_error(EB_ERR_INVALID, "%s.%s must hold non-empty strings", where, name);
        if (strlen(it->valuestring) > FILTER_MAX_LEN || has_control(it->valuestring))
            return eb_error(EB_ERR_INVALID,
                            "%s.%s: values are at most %d bytes without control characters", where,
                            name, FILTER_MAX_LEN);
        if (allowed && !one_of(it->valuestring, allowed))
            return eb_error(EB_ERR_INVALID, "%s.%s: '%s' is not one of the allowed values", where,
                            name, it->valuestring);
        cJSON_AddItemToArray(copy, cJSON_CreateString(it->valuestring));
    }
    return EB_OK;
}

static eb_status check_filter(const cJSON *in, cJSON **out)
{
    static const char *const known[] = {
        "since",     "until",    "stored_since",  "stored_until", "projects",        "models",
        "providers", "statuses", "review_states", "tags",         "successful_only", "score",
        NULL};
    cJSON *f = cJSON_CreateObject();
    const cJSON *it, *score;
    eb_status st = EB_OK;

    *out = NULL;
    if (in && !cJSON_IsNull(in) && !cJSON_IsObject(in)) {
        st = eb_error(EB_ERR_INVALID, "filter must be an object");
        goto cleanup;
    }
    cJSON_ArrayForEach(it, in)
    {
        if (!one_of(it->string, known)) {
            st = eb_error(EB_ERR_INVALID,
                          "filter has no member '%s' (known: since, until, stored_since, "
                          "stored_until, projects, models, providers, statuses, review_states, "
                          "tags, score, successful_only)",
                          it->string);
            goto cleanup;
        }
    }
    for (size_t i = 0; i < sizeof(time_filters) / sizeof(time_filters[0]) && in; i++) {
        const char *name = time_filters[i][0];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(in, name);
        if (!v || cJSON_IsNull(v))
            continue;
        if (!cJSON_IsString(v) || !eb_rfc3339_valid(v->valuestring)) {
            st = eb_error(EB_ERR_INVALID, "filter.%s must be an RFC 3339 timestamp", name);
            goto cleanup;
        }
        cJSON_AddStringToObject(f, name, v->valuestring);
    }
    for (size_t i = 0; i < sizeof(list_filters) / sizeof(list_filters[0]) && in; i++) {
        const char *name = list_filters[i][0];
        const char *const *allowed = strcmp(name, "statuses") == 0        ? statuses
                                     : strcmp(name, "review_states") == 0 ? review_states
                                                                          : NULL;
        st = copy_list(in, "filter", name, allowed, f);
        if (st != EB_OK)
            goto cleanup;
    }
    if (in && (st = copy_list(in, "filter", "tags", NULL, f)) != EB_OK)
        goto cleanup;
    score = in ? cJSON_GetObjectItemCaseSensitive(in, "score") : NULL;
    if (score && !cJSON_IsNull(score)) {
        const char *name = NULL;
        double lo = NAN, hi = NAN;
        cJSON *s;
        if (!cJSON_IsObject(score)) {
            st = eb_error(EB_ERR_INVALID, "filter.score must be an object {name, min, max}");
            goto cleanup;
        }
        st = eb_json_string(score, "name", true, FILTER_MAX_LEN, &name);
        if (st == EB_OK)
            st = eb_json_number(score, "min", false, false, -1e300, 1e300, &lo);
        if (st == EB_OK)
            st = eb_json_number(score, "max", false, false, -1e300, 1e300, &hi);
        if (st != EB_OK) {
            st = eb_error(EB_ERR_INVALID, "filter.score: %s", eb_error_message());
            goto cleanup;
        }
        s = cJSON_AddObjectToObject(f, "score");
        cJSON_AddStringToObject(s, "name", name);
        if (!isnan(lo))
            cJSON_AddNumberToObject(s, "min", lo);
        if (!isnan(hi))
            cJSON_AddNumberToObject(s, "max", hi);
    }
    it = in ? cJSON_GetObjectItemCaseSensitive(in, "successful_only") : NULL;
    if (it && !cJSON_IsNull(it)) {
        if (!cJSON_IsBool(it)) {
            st = eb_error(EB_ERR_INVALID, "filter.successful_only must be true or false");
            goto cleanup;
        }
        if (cJSON_IsTrue(it))
            cJSON_AddTrueToObject(f, "successful_only");
    }
    *out = f;
    f = NULL;
cleanup:
    cJSON_Delete(f);
    return st;
}

static eb_status check_fields(const cJSON *in, cJSON **out)
{
    cJSON *f = cJSON_CreateObject();
    const cJSON *it;
    eb_status st = EB_OK;

    *out = NULL;
    if (in && !cJSON_IsNull(in) && !cJSON_IsObject(in)) {
        st = eb_error(EB_ERR_INVALID, "fields must be an object {include: [...], exclude: [...]}");
        goto cleanup;
    }
    cJSON_ArrayForEach(it, in)
    {
        if (strcmp(it->string, "include") != 0 && strcmp(it->string, "exclude") != 0) {
            st = eb_error(EB_ERR_INVALID, "fields has no member '%s' (include, exclude)",
                          it->string);
            goto cleanup;
        }
    }
    if (in && ((st = copy_list(in, "fields", "include", NULL, f)) != EB_OK ||
               (st = copy_list(in, "fields", "exclude", NULL, f)) != EB_OK))
        goto cleanup;
    *out = f;
    f = NULL;
cleanup:
    cJSON_Delete(f);
    return st;
}

/* Collects the strings of fields[name] (an array) into a new array; *n gets their number. */
static const char **field_list(const cJSON *fields, const char *name, size_t *n)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(fields, name), *it;
    const char **out;

    *n = 0;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0)
        return NULL;
    out = eb_calloc((size_t)cJSON_GetArraySize(arr), sizeof(char *));
    cJSON_ArrayForEach(it, arr)
    {
        if (cJSON_IsString(it))
            out[(*n)++] = it->valuestring;
    }
    return out;
}

void export_options_set_fields(export_options *opt, const cJSON *fields)
{
    opt->include = field_list(fields, "include", &opt->n_include);
    opt->exclude = field_list(fields, "exclude", &opt->n_exclude);
}

void export_options_clear_fields(export_options *opt)
{
    free((void *)opt->include);
    free((void *)opt->exclude);
    opt->include = opt->exclude = NULL;
    opt->n_include = opt->n_exclude = 0;
}

/* Builds the format's writer once with the requested fields, so that a field the format cannot
 * use is refused with the request (400) rather than failing the job later. */
static eb_status check_fields_for_format(const export_spec *spec)
{
    export_options opt = {0};
    export_writer *w = NULL;
    eb_status st;

    opt.format = spec->format;
    export_options_set_fields(&opt, spec->fields);
    opt.exported_at = "1970-01-01T00:00:00Z";
    st = export_writer_new(&opt, &w);
    export_writer_free(w);
    export_options_clear_fields(&opt);
    if (st != EB_OK)
        return eb_error(EB_ERR_INVALID, "fields: %s", eb_error_message());
    return EB_OK;
}

eb_status export_spec_parse(const cJSON *body, const export_config *cfg, export_spec *spec)
{
    static const char *const known[] = {"format",      "filter",      "fields", "anonymize",
                                        "compression", "destination", NULL};
    const cJSON *it;
    const char *s = NULL;
    eb_status st;

    memset(spec, 0, sizeof(*spec));
    spec->anonymize = true;
    if (!cJSON_IsObject(body))
        return eb_error(EB_ERR_INVALID, "the body must be a JSON object");
    cJSON_ArrayForEach(it, body)
    {
        if (!one_of(it->string, known))
            return eb_error(EB_ERR_INVALID,
                            "unknown member '%s' (known: format, filter, fields, anonymize, "
                            "compression, destination)",
                            it->string);
    }
    st = eb_json_string(body, "format", true, 64, &s);
    if (st != EB_OK)
        return st;
    st = export_format_parse(s, &spec->format);
    if (st != EB_OK)
        return st;
    s = NULL;
    st = eb_json_string(body, "compression", false, 16, &s);
    if (st != EB_OK)
        return st;
    if (s && !one_of(s, compressions))
        return eb_error(EB_ERR_INVALID, "compression must be gzip, zstd or none");
    spec->compression = eb_strdup(s ? s : "gzip");
    it = cJSON_GetObjectItemCaseSensitive(body, "anonymize");
    if (it && !cJSON_IsNull(it)) {
        if (!cJSON_IsBool(it)) {
            st = eb_error(EB_ERR_INVALID, "anonymize must be true or false");
            goto fail;
        }
        spec->anonymize = cJSON_IsTrue(it);
    }
    st = check_filter(cJSON_GetObjectItemCaseSensitive(body, "filter"), &spec->filter);
    if (st == EB_OK)
        st = check_fields(cJSON_GetObjectItemCaseSensitive(body, "fields"), &spec->fields);
    if (st != EB_OK)
        goto fail;
    st = check_fields_for_format(spec);
    if (st != EB_OK)
        goto fail;
    s = NULL;
    st = eb_json_string(body, "destination", false, 1024, &s);
    if (st == EB_OK && s)
        st = export_destination_check(cfg, s);
    if (st != EB_OK)
        goto fail;
    spec->destination = s ? eb_strdup(s) : NULL;
    return EB_OK;
fail:
    export_spec_clear(spec);
    return st;
}

void export_spec_clear(export_spec *spec)
{
    free(spec->compression);
    cJSON_Delete(spec->filter);
    cJSON_Delete(spec->fields);
    free(spec->destination);
    memset(spec, 0, sizeof(*spec));
}

eb_status export_destination_check(const export_config *cfg, const char *dest)
{
    size_t n = strlen(cfg->object_store);

    while (n > 0 && cfg->object_store[n - 1] == '/')
        n--;
    if (strncmp(dest, cfg->object_store, n) != 0 || (dest[n] != '\0' && dest[n] != '/'))
        return eb_error(EB_ERR_INVALID,
                        "destination must lie inside the configured object store %.*s", (int)n,
                        cfg->object_store);
    if (strstr(dest, "/../") || strstr(dest, "/./") || has_control(dest) ||
        (strlen(dest) >= 3 && strcmp(dest + strlen(dest) - 3, "/..") == 0))
        return eb_error(EB_ERR_INVALID, "destination must not hold . or .. segments");
    return EB_OK;
}

eb_status export_filter_from_query(eb_http_req *req, cJSON **filter)
{
    cJSON *in = cJSON_CreateObject();
    const char *vals[FILTER_MAX_ITEMS + 1];
    static const char *const lists[][2] = {
        {"project", "projects"},           {"model", "models"},
        {"provider", "providers"},         {"status", "statuses"},
        {"review_state", "review_states"}, {"tag", "tags"},
    };
    const char *v;
    eb_status st;

    for (int i = 0; i < 2; i++) {
        const char *name = i == 0 ? "since" : "until";
        if ((v = eb_http_req_query(req, name)) != NULL)
            cJSON_AddStringToObject(in, name, v);
    }
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        size_t n = eb_http_req_query_all(req, lists[i][0], vals, FILTER_MAX_ITEMS + 1);
        cJSON *arr;
        if (n == 0)
            continue;
        if (n > FILTER_MAX_ITEMS) {
            cJSON_Delete(in);
            return eb_error(EB_ERR_INVALID, "%s is given more than %d times", lists[i][0],
                            FILTER_MAX_ITEMS);
        }
        arr = cJSON_AddArrayToObject(in, lists[i][1]);
        for (size_t k = 0; k < n; k++) {
            /* a=x,y is the same as a=x&a=y */
            const char *p = vals[k];
            while (*p) {
                const char *e = strchr(p, ',');
                size_t len = e ? (size_t)(e - p) : strlen(p);
                char *one = eb_strndup(p, len);
                cJSON_AddItemToArray(arr, cJSON_CreateString(one));
                free(one);
                p += len;
                if (*p == ',')
                    p++;
            }
        }
    }
    if ((v = eb_http_req_query(req, "score_name")) != NULL) {
        cJSON *s = cJSON_AddObjectToObject(in, "score");
        const char *lo = eb_http_req_query(req, "score_min"),
                   *hi = eb_http_req_query(req, "score_max");
        char *end;
        cJSON_AddStringToObject(s, "name", v);
        for (int i = 0; i < 2; i++) {
            const char *b = i == 0 ? lo : hi;
            double d;
            if (!b)
                continue;
            d = strtod(b, &end);
            if (end == b || *end) {
                cJSON_Delete(in);
                return eb_error(EB_ERR_INVALID, "%s must be a number",
                                i == 0 ? "score_min" : "score_max");
            }
            cJSON_AddNumberToObject(s, i == 0 ? "min" : "max", d);
        }
    }
    if ((v = eb_http_req_query(req, "successful_only")) != NULL) {
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
            cJSON_Delete(in);
            return eb_error(EB_ERR_INVALID, "successful_only must be true or false");
        }
        cJSON_AddBoolToObject(in, "successful_only", strcmp(v, "true") == 0);
    }
    st = check_filter(in, filter);
    cJSON_Delete(in);
    return st;
}

static void put_literal(PGconn *conn, eb_buf *sql, const char *s)
{
    char *lit = PQescapeLiteral(conn, s, strlen(s));

    if (!lit) {
        /* only on out-of-memory or an encoding the connection refuses: match nothing */
        eb_buf_puts(sql, "NULL");
        return;
    }
    eb_buf_puts(sql, lit);
    PQfreemem(lit);
}

static void put_list(PGconn *conn, eb_buf *sql, const cJSON *arr)
{
    const cJSON *it;
    bool first = true;

    eb_buf_puts(sql, "ARRAY[");
    cJSON_ArrayForEach(it, arr)
    {
        if (!first)
            eb_buf_putc(sql, ',');
        put_literal(conn, sql, it->valuestring);
        first = false;
    }
    eb_buf_puts(sql, "]::text[]");
}

eb_status export_filter_sql(PGconn *conn, const cJSON *filter, eb_buf *sql)
{
    const cJSON *v, *score;

    for (size_t i = 0; i < sizeof(time_filters) / sizeof(time_filters[0]); i++) {
        if ((v = cJSON_GetObjectItemCaseSensitive(filter, time_filters[i][0])) == NULL)
            continue;
        eb_buf_printf(sql, " AND v.%s %s ", time_filters[i][1], time_filters[i][2]);
        put_literal(conn, sql, v->valuestring);
        eb_buf_puts(sql, "::timestamptz");
    }
    for (size_t i = 0; i < sizeof(list_filters) / sizeof(list_filters[0]); i++) {
        v = cJSON_GetObjectItemCaseSensitive(filter, list_filters[i][0]);
        if (!v)
            continue;
        eb_buf_printf(sql, " AND v.%s = ANY(", list_filters[i][1]);
        put_list(conn, sql, v);
        eb_buf_putc(sql, ')');
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(filter, "tags")) != NULL) {
        eb_buf_puts(sql, " AND v.tags && ");
        put_list(conn, sql, v);
    }
    if ((score = cJSON_GetObjectItemCaseSensitive(filter, "score")) != NULL) {
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(score, "min");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(score, "max");
        eb_buf_puts(sql, " AND EXISTS (SELECT 1 FROM ingest.scores s WHERE s.team_id = v.team_id"
                         " AND s.trace_id = v.id AND s.name = ");
        put_literal(conn, sql, cJSON_GetObjectItemCaseSensitive(score, "name")->valuestring);
        if (lo)
            eb_buf_printf(sql, " AND s.value_number >= %.17g", lo->valuedouble);
        if (hi)
            eb_buf_printf(sql, " AND s.value_number <= %.17g", hi->valuedouble);
        eb_buf_putc(sql, ')');
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(filter, "successful_only")))
        eb_buf_puts(sql, " AND v.status <> 'error'");
    return EB_OK;
}

eb_status export_query_sql(PGconn *conn, const char *team_id, export_format format,
                           const cJSON *filter, bool count_only, eb_buf *sql)
{
    eb_buf where = {0};

    if (!eb_uuid_valid(team_id))
        return eb_error(EB_ERR_INVALID, "bad team id");
    eb_buf_printf(&where, "v.team_id = '%s'::uuid", team_id);
    export_filter_sql(conn, filter, &where);
    if (format == EXPORT_OPENAI_PREFERENCE) {
        /* one pair per distinct input: its newest accepted and newest rejected answer */
        eb_buf_printf(sql,
                      "WITH c AS MATERIALIZED (SELECT md5(v.input::text) AS h, v.review_state,"
                      " v.part_time, v.id, v.record FROM ingest.export_traces v WHERE %s AND"
                      " v.input IS NOT NULL AND v.review_state IN ('accepted', 'rejected')),"
                      " a AS (SELECT DISTINCT ON (h) h, record FROM c WHERE review_state ="
                      " 'accepted' ORDER BY h, part_time DESC, id),"
                      " r AS (SELECT DISTINCT ON (h) h, record FROM c WHERE review_state ="
                      " 'rejected' ORDER BY h, part_time DESC, id)",
                      where.data);
        if (count_only)
            eb_buf_puts(sql, " SELECT count(*) FROM a JOIN r USING (h)");
        else
            eb_buf_puts(sql, " SELECT json_build_object('preferred', a.record, 'non_preferred',"
                             " r.record)::text FROM a JOIN r USING (h) ORDER BY h");
    } else if (count_only) {
        eb_buf_printf(sql, "SELECT count(*) FROM ingest.export_traces v WHERE %s", where.data);
    } else {
        eb_buf_printf(sql,
                      "SELECT " EXPORT_RECORD_COLUMNS " FROM ingest.export_traces v WHERE %s"
                      " ORDER BY v.part_time, v.id",
                      where.data);
    }
    eb_buf_free(&where);
    return EB_OK;
}

/* The text of column col (NULL -> null). */
static void add_text_or_null(cJSON *o, const char *name, const PGresult *r, int row, int col)
{
    eb_json_add_str(o, name, eb_db_isnull(r, row, col) ? NULL : eb_db_val(r, row, col), false);
}

static void add_json_or_null(cJSON *o, const char *name, const PGresult *r, int row, int col)
{
    cJSON *v = eb_db_isnull(r, row, col) ? NULL : cJSON_Parse(eb_db_val(r, row, col));

    cJSON_AddItemToObject(o, name, v ? v : cJSON_CreateNull());
}

cJSON *export_job_json(const PGresult *r, int i)
{
    cJSON *o = cJSON_CreateObject(), *p;
    double rows = atof(eb_db_val(r, i, 11)), total = -1, rate = 0;
    const char *state = eb_db_val(r, i, 1);

    cJSON_AddStringToObject(o, "id", eb_db_val(r, i, 0));
    cJSON_AddStringToObject(o, "state", state);
    cJSON_AddStringToObject(o, "format", eb_db_val(r, i, 2));
    cJSON_AddStringToObject(o, "compression", eb_db_val(r, i, 3));
    cJSON_AddBoolToObject(o, "anonymize", eb_db_val(r, i, 4)[0] == 't');
    add_json_or_null(o, "filter", r, i, 5);
    add_json_or_null(o, "fields", r, i, 6);
    add_text_or_null(o, "destination", r, i, 7);
    add_text_or_null(o, "created_at", r, i, 8);
    add_text_or_null(o, "started_at", r, i, 9);
    add_text_or_null(o, "finished_at", r, i, 10);
    cJSON_AddBoolToObject(o, "cancel_requested", eb_db_val(r, i, 17)[0] == 't');
    cJSON_AddNumberToObject(o, "attempts", atof(eb_db_val(r, i, 18)));
    add_text_or_null(o, "schedule_id", r, i, 19);
    p = cJSON_AddObjectToObject(o, "progress");
    cJSON_AddNumberToObject(p, "rows", rows);
    cJSON_AddNumberToObject(p, "bytes", atof(eb_db_val(r, i, 12)));
    if (!eb_db_isnull(r, i, 13)) {
        total = atof(eb_db_val(r, i, 13));
        cJSON_AddNumberToObject(p, "total_rows", total);
    } else {
        cJSON_AddNullToObject(p, "total_rows");
    }
    if (strcmp(state, "succeeded") == 0)
        cJSON_AddNumberToObject(p, "percent", 100);
    else if (total > 0)
        cJSON_AddNumberToObject(p, "percent", fmin(99.9, floor(rows / total * 1000) / 10));
    else if (total == 0)
        cJSON_AddNumberToObject(p, "percent", 0);
    else
        cJSON_AddNullToObject(p, "percent");
    if (!eb_db_isnull(r, i, 14))
        rate = atof(eb_db_val(r, i, 14));
    cJSON_AddNumberToObject(p, "rows_per_second", round(rate));
    if (strcmp(state, "running") == 0 && rate > 0 && total >= rows)
        cJSON_AddNumberToObject(p, "eta_seconds", ceil((total - rows) / rate));
    else
        cJSON_AddNullToObject(p, "eta_seconds");
    add_json_or_null(o, "result", r, i, 15);
    add_json_or_null(o, "error", r, i, 16);
    return o;
}
