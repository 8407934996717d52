/* nats_verify.c -- the evalbus.v1.auth.verify responder and the revocation listener.
 * verify-workers subscriptions join the queue group "auth", so requests spread over every
 * replica and, inside one, over that many NATS delivery threads (each subscription has its
 * own). A request that does not decode gets a denial with reason "malformed"; nothing a caller
 * sends can stop the responder. Revocations arrive on every replica (no queue group). */
#include "auth_int.h"
#include "auth_revoke.h"
#include "evalbus/bus.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REQUEST_BYTES 16384

static void reply(natsConnection *nc, natsMsg *msg, Evalbus__V1__VerifyResponse *resp)
{
    uint8_t stackbuf[1024];
    size_t len = evalbus__v1__verify_response__get_packed_size(resp);
    uint8_t *buf = len <= sizeof(stackbuf) ? stackbuf : eb_malloc(len);

    evalbus__v1__verify_response__pack(resp, buf);
    natsConnection_Publish(nc, natsMsg_GetReply(msg), buf, (int)len);
    if (buf != stackbuf)
        free(buf);
}

static void on_verify(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    auth_ctx *ctx = closure;
    Evalbus__V1__VerifyRequest *vr = NULL;
    Evalbus__V1__VerifyResponse resp = EVALBUS__V1__VERIFY_RESPONSE__INIT;
    Evalbus__V1__Principal pb = EVALBUS__V1__PRINCIPAL__INIT;
    Evalbus__V1__RateLimit rl = EVALBUS__V1__RATE_LIMIT__INIT;
    char *scratch[EB_SCOPE_COUNT];
    eb_principal p;
    const char *reason = "";
    bool hit = false;
    char denied_team[41] = "";
    eb_status st;
    int len = natsMsg_GetDataLength(msg);

    (void)sub;
    if (!natsMsg_GetReply(msg))
        goto cleanup; /* nobody to answer */
    if (!eb_bus_reply_allowed(natsMsg_GetReply(msg))) {
        /* answered with this service's NATS permissions: never on one of the server's or the
         * platform's subjects */
        eb_metrics_add("evalbus_auth_verify_total", "result=\"malformed\"", 1);
        goto cleanup;
    }
    if (len > MAX_REQUEST_BYTES ||
        !(vr = evalbus__v1__verify_request__unpack(NULL, (size_t)len,
                                                   (const uint8_t *)natsMsg_GetData(msg)))) {
        resp.allowed = false;
        resp.reason = (char *)"malformed";
        resp.detail = (char *)"request is not an evalbus.v1.VerifyRequest";
        eb_metrics_add("evalbus_auth_verify_total", "result=\"malformed\"", 1);
        reply(nc, msg, &resp);
        goto cleanup;
    }
    st = auth_verify(ctx->verifier, vr->credential, &p, &reason, &hit, denied_team);
    if (st == EB_OK) {
        resp.allowed = true;
        eb_principal_to_pb(&p, &pb, &rl, scratch);
        resp.principal = &pb;
        eb_metrics_add(
            "evalbus_auth_verify_total",
            hit ? "result=\"allowed\",cache=\"hit\"" : "result=\"allowed\",cache=\"miss\"", 1);
    } else {
        resp.allowed = false;
        resp.reason = (char *)(st == EB_ERR_UNAUTHENTICATED ? reason : "unavailable");
        resp.detail = (char *)eb_error_message();
        eb_metrics_add("evalbus_auth_verify_total",
                       st == EB_ERR_UNAUTHENTICATED ? "result=\"denied\"" : "result=\"error\"", 1);
        if (denied_team[0]) {
            cJSON *d = cJSON_CreateObject();
            cJSON_AddStringToObject(d, "reason", reason);
            cJSON_AddStringToObject(d, "via", "nats");
            if (vr->source && *vr->source)
                cJSON_AddStringToObject(d, "source", vr->source);
            audit_write_now(ctx->svc.db, denied_team, NULL, "denied", p.key_id, d, vr->request_id);
            cJSON_Delete(d);
        }
    }
    reply(nc, msg, &resp);
cleanup:
    if (vr)
        evalbus__v1__verify_request__free_unpacked(vr, NULL);
    natsMsg_Destroy(msg);
}

static void on_revoked(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    auth_ctx *ctx = closure;
    Evalbus__V1__KeyRevoked *kr;
    int len = natsMsg_GetDataLength(msg);

    (void)nc;
    (void)sub;
    kr = len <= MAX_REQUEST_BYTES ? evalbus__v1__key_revoked__unpack(
                                        NULL, (size_t)len, (const uint8_t *)natsMsg_GetData(msg))
                                  : NULL;
    if (kr) {
        if (kr->key_hash_hex && strlen(kr->key_hash_hex) == 64)
            auth_verifier_drop_key(ctx->verifier, kr->key_hash_hex);
        else if (kr->envelope && kr->envelope->team_id && *kr->envelope->team_id)
            auth_verifier_drop_team(ctx->verifier, kr->envelope->team_id);
        evalbus__v1__key_revoked__free_unpacked(kr, NULL);
    } else {
        eb_log_warn(NULL, "ignored an undecodable message on %s", AUTH_SUBJECT_REVOKED);
    }
    natsMsg_Destroy(msg);
}

static bool action_name_ok(const char *a)
{
    size_t n = a ? strlen(a) : 0;

    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((a[i] >= 'a' && a[i] <= 'z') || a[i] == '_'))
            return false;
    return true;
}

/* Audit events reported by other services (deletions, exports): appended to the team's log. */
static void on_audit(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    auth_ctx *ctx = closure;
    Evalbus__V1__AuditEvent *ev = NULL;
    cJSON *detail = NULL;
    eb_principal actor = {0};
    int len = natsMsg_GetDataLength(msg);

    (void)nc;
    (void)sub;
    if (len <= MAX_REQUEST_BYTES)
        ev = evalbus__v1__audit_event__unpack(NULL, (size_t)len,
                                              (const uint8_t *)natsMsg_GetData(msg));
    if (!ev || !eb_uuid_valid(ev->team_id) || !action_name_ok(ev->action) ||
        (*ev->actor_user_id && !eb_uuid_valid(ev->actor_user_id)) ||
        (*ev->actor_key_id && !eb_uuid_valid(ev->actor_key_id)) ||
        !eb_utf8_valid(ev->target, strlen(ev->target)) ||
        !eb_utf8_valid(ev->request_id, strlen(ev->request_id)) ||
        !(detail = cJSON_Parse(*ev->detail_json ? ev->detail_json : "{}")) ||
        !cJSON_IsObject(detail)) {
        eb_log_warn(NULL, "ignored a malformed audit event on evalbus.v1.auth.audit");
        eb_metrics_add("evalbus_auth_audit_events_total", "result=\"malformed\"", 1);
        goto cleanup;
    }
    snprintf(actor.user_id, sizeof(actor.user_id), "%s", ev->actor_user_id);
    snprintf(actor.key_id, sizeof(actor.key_id), "%s", ev->actor_key_id);
    if (*ev->source)
        cJSON_AddStringToObject(detail, "via", ev->source);
    audit_write_now(ctx->svc.db, ev->team_id, &actor, ev->action, *ev->target ? ev->target : NULL,
                    detail, *ev->request_id ? ev->request_id : NULL);
    eb_metrics_add("evalbus_auth_audit_events_total", "result=\"written\"", 1);
cleanup:
    cJSON_Delete(detail);
    if (ev)
        evalbus__v1__audit_event__free_unpacked(ev, NULL);
    natsMsg_Destroy(msg);
}

eb_status auth_nats_start(auth_ctx *ctx)
{
    natsConnection *nc = eb_bus_conn(ctx->svc.bus);
    natsStatus s;
    long long n = ctx->cfg->verify_workers;

    eb_metrics_describe("evalbus_auth_verify_total", "counter",
                        "auth.verify requests answered over NATS, by result and cache use");
    for (long long i = 0; i < n && i < AUTH_MAX_VERIFY_WORKERS; i++) {
        s = natsConnection_QueueSubscribe(&ctx->verify_subs[i], nc, AUTH_SUBJECT_VERIFY,
                                          AUTH_QUEUE_GROUP, on_verify, ctx);
        if (s == NATS_OK)
            s = natsSubscription_SetPendingLimits(ctx->verify_subs[i], 65536, 64 * 1024 * 1024);
        if (s != NATS_OK)
            return eb_bus_error(s, "subscribing to " AUTH_SUBJECT_VERIFY);
    }
    s = natsConnection_Subscribe(&ctx->revoked_sub, nc, AUTH_SUBJECT_REVOKED, on_revoked, ctx);
    if (s != NATS_OK)
        return eb_bus_error(s, "subscribing to " AUTH_SUBJECT_REVOKED);
    s = natsConnection_QueueSubscribe(&ctx->audit_sub, nc, AUTH_SUBJECT_AUDIT, AUTH_QUEUE_GROUP,
                                      on_audit, ctx);
    if (s != NATS_OK)
        return eb_bus_error(s, "subscribing to " AUTH_SUBJECT_AUDIT);
    return EB_OK;
}

void auth_nats_drain(auth_ctx *ctx)
{
    for (int i = 0; i < AUTH_MAX_VERIFY_WORKERS; i++)
        if (ctx->verify_subs[i])
            natsSubscription_Drain(ctx->verify_subs[i]);
}

void auth_nats_stop(auth_ctx *ctx)
{
    for (int i = 0; i < AUTH_MAX_VERIFY_WORKERS; i++) {
        if (ctx->verify_subs[i]) {
            natsSubscription_Unsubscribe(ctx->verify_subs[i]);
            natsSubscription_Destroy(ctx->verify_subs[i]);
            ctx->verify_subs[i] = NULL;
        }
    }
    if (ctx->audit_sub) {
        natsSubscription_Unsubscribe(ctx->audit_sub);
        natsSubscription_Destroy(ctx->audit_sub);
        ctx->audit_sub = NULL;
    }
    if (ctx->revoked_sub) {
        natsSubscription_Unsubscribe(ctx->revoked_sub);
        natsSubscription_Destroy(ctx->revoked_sub);
        ctx->revoked_sub = NULL;
    }
}
