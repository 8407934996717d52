/* api_reviews.c -- human reviews and scores.
 * A review (accept / reject with a reason from the configured list / needs_review, optional
 * score and notes) is appended to ingest.reviews and sets the trace's review_state in the same
 * transaction, so the latest review is the state and the history is kept. Scores are named
 * numeric, boolean or categorical values from a human, an API or an LLM judge, attached to a
 * trace or one of its observations. Both are written synchronously: they are low volume and
 * the caller sees them at once. The trace must belong to the caller's team (404 otherwise). */
#include "evalbus/config.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"
#include "trace_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *ingest_reasons_normalize(const char *list, char *why, size_t why_len)
{
    eb_buf out = {0};
    const char *item;
    size_t len;

    for (const char *p = list && *list ? list : NULL; p;) {
        p = eb_list_item(p, &item, &len);
        if (len == 0 || ingest_has_control(item, len) || !eb_utf8_valid(item, len)) {
            snprintf(why, why_len, "%s",
                     len == 0 ? "an empty reason (two commas, or one at an end)"
                              : "a reason with a control character or invalid UTF-8");
            eb_buf_free(&out);
            return NULL;
        }
        if (out.len)
            eb_buf_putc(&out, ',');
        eb_buf_append(&out, item, len);
    }
    if (!out.len) {
        snprintf(why, why_len, "no reason at all");
        return NULL;
    }
    return eb_buf_steal(&out);
}

/* Whether reason is one of list's (normalized: no spaces around the items). */
static bool reason_allowed(const char *list, const char *reason)
{
    const char *item;
    size_t len;

    for (const char *p = list && *list ? list : NULL; p;) {
        p = eb_list_item(p, &item, &len);
        if (len == strlen(reason) && strncmp(item, reason, len) == 0)
            return true;
    }
    return false;
}

/* What the bodies may hold: anything else is refused, not dropped (a "note" for "notes" would
 * lose the notes). */
static const char *const review_members[] = {"decision", "reason", "notes", "score"};
static const char *const score_members[] = {"trace_id", "observation_id", "name", "kind",
                                            "source",   "comment",        "value"};

void api_review_post(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    const char *trace_id = eb_http_req_param(req, "id");
    cJSON *body = eb_http_req_json(req), *o;
    const char *decision = NULL, *reason = NULL, *notes = NULL, *state;
    double score = NAN;
    char score_s[64];
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!body)
        return;
    if ((st = eb_json_known_members(body, review_members,
                                    sizeof(review_members) / sizeof(review_members[0]))) != EB_OK ||
        (st = eb_json_string(body, "decision", true, 32, &decision)) != EB_OK ||
        (st = eb_json_string(body, "reason", false, 200, &reason)) != EB_OK ||
        (st = eb_json_string(body, "notes", false, 10000, &notes)) != EB_OK ||
        (st = eb_json_number(body, "score", false, false, -1e9, 1e9, &score)) != EB_OK)
        goto invalid;
    if (strcmp(decision, "accept") == 0) {
        state = "accepted";
    } else if (strcmp(decision, "reject") == 0) {
        state = "rejected";
        if (!reason) {
            st = eb_error(EB_ERR_INVALID, "a reject needs a reason, one of: %s",
                          ctx->cfg->review_reasons);
            goto invalid;
        }
    } else if (strcmp(decision, "needs_review") == 0) {
        state = "needs_review";
    } else {
        st = eb_error(EB_ERR_INVALID, "decision must be accept, reject or needs_review");
        goto invalid;
    }
    if (reason && !reason_allowed(ctx->cfg->review_reasons, reason)) {
        st = eb_error(EB_ERR_INVALID, "reason '%s' is not one of: %s", reason,
                      ctx->cfg->review_reasons);
        goto invalid;
    }
    snprintf(score_s, sizeof(score_s), "%.17g", score);
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        goto cleanup;
    {
        const char *params[10] = {p->team_id,
                                  trace_id,
                                  decision,
                                  reason,
                                  isnan(score) ? NULL : score_s,
                                  notes,
                                  p->user_id[0] ? p->user_id : NULL,
                                  p->key_id[0] ? p->key_id : NULL,
                                  state,
                                  p->project[0] ? p->project : NULL};
        st = eb_db_exec(c,
                        "WITH k AS (SELECT team_id, part_time, id FROM ingest.trace_keys WHERE"
                        "  team_id = $1::uuid AND id = $2 FOR KEY SHARE),"
                        " upd AS (UPDATE ingest.traces t SET review_state = $9 FROM k WHERE"
                        "  t.team_id = k.team_id AND t.part_time = k.part_time AND t.id = k.id"
                        "  AND ($10::text IS NULL OR t.project = $10) RETURNING t.id)"
                        " INSERT INTO ingest.reviews (team_id, trace_id, decision, reason, score,"
                        " notes, reviewer_user_id, reviewer_key_id) SELECT $1::uuid, $2, $3, $4,"
                        " $5::float8, $6, $7::uuid, $8::uuid FROM upd"
                        " RETURNING id, ingest.iso(created_at)",
                        10, params, &r);
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        goto cleanup;
    }
    if (PQntuples(r) == 0) {
        eb_db_rollback(c);
        eb_db_put(ctx->svc.db, c);
        eb_http_reply_error(req, EB_ERR_NOT_FOUND,
                            "no such trace (a trace just sent may take "
                            "up to a second to be stored)");
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    eb_metrics_add("evalbus_ingest_reviews_total", NULL, 1);
    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", atof(eb_db_val(r, 0, 0)));
    cJSON_AddStringToObject(o, "trace_id", trace_id);
    cJSON_AddStringToObject(o, "decision", decision);
    eb_json_add_str(o, "reason", reason, true);
    if (isnan(score))
        cJSON_AddNullToObject(o, "score");
    else
        cJSON_AddNumberToObject(o, "score", score);
    eb_json_add_str(o, "notes", notes, true);
    eb_json_add_str(o, "reviewer_user_id", p->user_id, true);
    eb_json_add_str(o, "reviewer_key_id", p->key_id, true);
    cJSON_AddStringToObject(o, "review_state", state);
    cJSON_AddStringToObject(o, "created_at", eb_db_val(r, 0, 1));
    eb_http_reply_json(req, 201, o);
    goto cleanup;
invalid:
    eb_http_reply_status(req, st);
cleanup:
    PQclear(r);
    cJSON_Delete(body);
}

void api_score_post(eb_http_req *req, void *vctx)
{
    ingest_ctx *ctx = vctx;
    const eb_principal *p = eb_http_req_principal(req);
    cJSON *body = eb_http_req_json(req), *o;
    const cJSON *value;
    const char *trace_id = NULL, *obs_id = NULL, *name = NULL, *kind = NULL, *source = NULL,
               *comment = NULL, *text = NULL;
    char num[64] = "";
    bool has_num = false;
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!body)
        return;
    if ((st = eb_json_known_members(body, score_members,
                                    sizeof(score_members) / sizeof(score_members[0]))) != EB_OK ||
        (st = eb_json_string(body, "trace_id", true, 256, &trace_id)) != EB_OK ||
        (st = eb_json_string(body, "observation_id", false, 256, &obs_id)) != EB_OK ||
        (st = eb_json_string(body, "name", true, 200, &name)) != EB_OK ||
        (st = eb_json_string(body, "kind", false, 32, &kind)) != EB_OK ||
        (st = eb_json_string(body, "source", false, 32, &source)) != EB_OK ||
        (st = eb_json_string(body, "comment", false, 10000, &comment)) != EB_OK)
        goto invalid;
    if (obs_id && !*obs_id) {
        st = eb_error(EB_ERR_INVALID, "field 'observation_id' must not be empty (leave it out to "
                                      "score the trace)");
        goto invalid;
    }
    if (!*name || ingest_has_control(name, strlen(name))) {
        st = eb_error(EB_ERR_INVALID, "field 'name' must not be empty or contain control"
                                      " characters");
        goto invalid;
    }
    value = cJSON_GetObjectItemCaseSensitive(body, "value");
    if (cJSON_IsBool(value)) {
        kind = kind ? kind : "boolean";
        snprintf(num, sizeof(num), "%d", cJSON_IsTrue(value) ? 1 : 0);
        has_num = true;
    } else if (eb_json_number_underflows(value)) {
        st = eb_error(EB_ERR_INVALID, "field 'value' is too close to 0 to be stored (a double "
                                      "holds it as 0)");
        goto invalid;
    } else if (cJSON_IsNumber(value) && isfinite(value->valuedouble)) {
        kind = kind ? kind : "numeric";
        snprintf(num, sizeof(num), "%.17g", value->valuedouble);
        has_num = true;
    } else if (cJSON_IsString(value) && strlen(value->valuestring) <= 200 &&
               value->valuestring[0]) {
        kind = kind ? kind : "categorical";
        text = value->valuestring;
    } else {
        st = eb_error(EB_ERR_INVALID, "field 'value' must be a number, a boolean or a non-empty "
                                      "string of at most 200 bytes");
        goto invalid;
    }
    if ((strcmp(kind, "numeric") == 0 && !(has_num && !cJSON_IsBool(value))) ||
        (strcmp(kind, "boolean") == 0 && !cJSON_IsBool(value)) ||
        (strcmp(kind, "categorical") == 0 && !text) ||
        (strcmp(kind, "numeric") && strcmp(kind, "boolean") && strcmp(kind, "categorical"))) {
        st = eb_error(EB_ERR_INVALID, "kind must be numeric, boolean or categorical and match "
                                      "the value's type");
        goto invalid;
    }
    source = source ? source : "api";
    if (strcmp(source, "human") && strcmp(source, "api") && strcmp(source, "llm_judge")) {
        st = eb_error(EB_ERR_INVALID, "source must be human, api or llm_judge");
        goto invalid;
    }
    c = eb_req_db_begin(ctx->svc.db, req, false);
    if (!c)
        goto cleanup;
    {
        const char *params[12] = {p->team_id,
                                  trace_id,
                                  obs_id,
                                  name,
                                  kind,
                                  has_num ? num : NULL,
                                  text,
                                  source,
                                  comment,
                                  p->user_id[0] ? p->user_id : NULL,
                                  p->key_id[0] ? p->key_id : NULL,
                                  p->project[0] ? p->project : NULL};
        st = eb_db_exec(c,
                        "WITH k AS (SELECT team_id, part_time, id FROM ingest.trace_keys WHERE"
                        " team_id = $1::uuid AND id = $2 FOR KEY SHARE)"
                        " INSERT INTO ingest.scores (team_id, trace_id, observation_id, name, kind,"
                        " value_number, value_text, source, comment, created_by_user,"
                        " created_by_key) SELECT $1::uuid, $2, $3, $4, $5, $6::float8, $7, $8,"
                        " $9, $10::uuid, $11::uuid FROM k WHERE"
                        " ($3::text IS NULL OR EXISTS (SELECT 1 FROM"
                        " ingest.observations o WHERE o.team_id = k.team_id AND o.part_time ="
                        " k.part_time AND o.trace_id = k.id AND o.id = $3))"
                        " AND ($12::text IS NULL OR EXISTS (SELECT 1 FROM ingest.traces t WHERE"
                        " t.team_id = k.team_id AND t.part_time = k.part_time AND t.id = k.id"
                        " AND t.project = $12))"
                        " RETURNING id, ingest.iso(created_at)",
                        12, params, &r);
    }
    if (st != EB_OK) {
        eb_req_db_fail(ctx->svc.db, req, c, st);
        goto cleanup;
    }
    if (PQntuples(r) == 0) {
        eb_db_rollback(c);
        eb_db_put(ctx->svc.db, c);
        eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such trace or observation");
        goto cleanup;
    }
    if (!eb_req_db_commit(ctx->svc.db, req, c))
        goto cleanup;
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", eb_db_val(r, 0, 0));
    cJSON_AddStringToObject(o, "trace_id", trace_id);
    eb_json_add_str(o, "observation_id", obs_id, true);
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "kind", kind);
    /* the value as stored: a number as its double holds it (as a later GET shows it) */
    if (cJSON_IsNumber(value))
        cJSON_AddNumberToObject(o, "value", value->valuedouble);
    else
        cJSON_AddItemToObject(o, "value", cJSON_Duplicate(value, true));
    cJSON_AddStringToObject(o, "source", source);
    eb_json_add_str(o, "comment", comment, true);
    cJSON_AddStringToObject(o, "created_at", eb_db_val(r, 0, 1));
    eb_http_reply_json(req, 201, o);
    goto cleanup;
invalid:
    eb_http_reply_status(req, st);
cleanup:
    PQclear(r);
    cJSON_Delete(body);
}
