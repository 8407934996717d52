/* verify.c -- turns a credential (API key or session JWT) into a principal.
 *
 * API key: shape check, SHA-256, then the cache; on a miss one query joins the key with its
 * team (and bumps last_used_at at most once a minute in the same statement). Session JWT: the
 * signature and claims are checked first (no I/O), then the cache; on a miss the membership is
 * read so that a removed member or a changed role takes effect. Results are cached for
 * cache_ttl_ms (bounded by the credential's own expiry); revocations and role/tier changes drop
 * entries at once through auth_verifier_drop_*() (fed by the NATS broadcast); an answer read
 * from PostgreSQL while a drop happened is returned but not cached, since it may predate it.
 *
 * The cache is an open-addressing table of at least cache_size slots (a power of two) keyed by
 * the credential's SHA-256; when it is half full it is cleared (cheap, and only costs a
 * database round trip per key).
 * Threading: all functions are thread-safe (one mutex around the table; the database pool is
 * thread-safe). */
#include "apikey.h"
#include "auth_int.h"
#include "evalbus/clock.h"
#include "evalbus/crypto.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "jwt.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* While PostgreSQL is unavailable, an expired entry that was not revoked is still used for
 * this long, so callers keep working through a database outage. */
#define STALE_MS (10 * 60 * 1000)

typedef struct cache_entry {
    bool used;
    bool revoked;
    char hash[65];
    long long expires_ms; /* monotonic */
    eb_principal p;
} cache_entry;

struct auth_verifier {
    const auth_config *cfg;
    eb_db *db;
    pthread_mutex_t mu;
    cache_entry *slots;
    size_t nslots;
    size_t used;
    /* bumped by every drop: an answer read from PostgreSQL before a drop is not cached after it */
    unsigned long long drops;
};

auth_verifier *auth_verifier_new(const auth_config *cfg, eb_db *db)
{
    auth_verifier *v = eb_calloc(1, sizeof(*v));
    size_t n = 1024;

    while (n < (size_t)cfg->cache_size)
        n *= 2;
    v->cfg = cfg;
    v->db = db;
    v->nslots = n;
    v->slots = eb_calloc(n, sizeof(cache_entry));
    pthread_mutex_init(&v->mu, NULL);
    return v;
}

void auth_verifier_free(auth_verifier *v)
{
    if (!v)
        return;
    pthread_mutex_destroy(&v->mu);
    free(v->slots);
    free(v);
}

static size_t slot_of(const auth_verifier *v, const char *hash)
{
    uint64_t h = 0;

    for (int i = 0; i < 16; i++) {
        char c = hash[i];
        h = (h << 4) | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return (size_t)(h & (v->nslots - 1));
}

static bool cache_get(auth_verifier *v, const char *hash, eb_principal *out)
{
    bool hit = false;
    size_t i;

    if (v->cfg->cache_ttl_ms <= 0)
        return false;
    pthread_mutex_lock(&v->mu);
    for (i = slot_of(v, hash); v->slots[i].used; i = (i + 1) & (v->nslots - 1)) {
        if (strcmp(v->slots[i].hash, hash) == 0) {
            if (v->slots[i].expires_ms > eb_monotonic_ms()) {
                *out = v->slots[i].p;
                hit = true;
            }
            break;
        }
    }
    pthread_mutex_unlock(&v->mu);
    return hit;
}

static unsigned long long cache_drops(auth_verifier *v)
{
    unsigned long long n;

    pthread_mutex_lock(&v->mu);
    n = v->drops;
    pthread_mutex_unlock(&v->mu);
    return n;
}

/* Caches p unless a drop happened since drops_before was read (the answer may predate a
 * revocation, and would otherwise outlive it by cache_ttl_ms). */
static void cache_put(auth_verifier *v, const char *hash, const eb_principal *p,
                      unsigned long long drops_before)
{
    long long ttl = v->cfg->cache_ttl_ms;
    size_t i;

    if (ttl <= 0)
        return;
    if (p->expires_at_ms > 0) {
        long long left = p->expires_at_ms - (long long)time(NULL) * 1000;
        if (left < ttl)
            ttl = left;
        if (ttl <= 0)
            return;
    }
    pthread_mutex_lock(&v->mu);
    if (v->drops != drops_before) {
        pthread_mutex_unlock(&v->mu);
        return;
    }
    if (v->used >= v->nslots / 2) {
        /* fresh zero pages instead of touching every slot */
        free(v->slots);
        v->slots = eb_calloc(v->nslots, sizeof(cache_entry));
        v->used = 0;
    }
    for (i = slot_of(v, hash); v->slots[i].used; i = (i + 1) & (v->nslots - 1))
        if (strcmp(v->slots[i].hash, hash) == 0)
            break;
    if (!v->slots[i].used)
        v->used++;
    v->slots[i].used = true;
    v->slots[i].revoked = false;
    memcpy(v->slots[i].hash, hash, 65);
    v->slots[i].expires_ms = eb_monotonic_ms() + ttl;
    v->slots[i].p = *p;
    pthread_mutex_unlock(&v->mu);
}

/* An expired, unrevoked entry, for use while the database cannot be asked; never one whose
 * credential has itself expired since (a key's expires_at, a session's exp). */
static bool cache_get_stale(auth_verifier *v, const char *hash, eb_principal *out)
{
    bool hit = false;
    long long now_ms = (long long)time(NULL) * 1000;

    if (v->cfg->cache_ttl_ms <= 0)
        return false;
    pthread_mutex_lock(&v->mu);
    for (size_t i = slot_of(v, hash); v->slots[i].used; i = (i + 1) & (v->nslots - 1)) {
        if (strcmp(v->slots[i].hash, hash) == 0) {
            if (!v->slots[i].revoked && v->slots[i].expires_ms + STALE_MS > eb_monotonic_ms() &&
                (v->slots[i].p.expires_at_ms <= 0 || v->slots[i].p.expires_at_ms > now_ms)) {
                *out = v->slots[i].p;
                hit = true;
            }
            break;
        }
    }
    pthread_mutex_unlock(&v->mu);
    return hit;
}

/* Expiring in place keeps probe chains intact (entries are never removed one by one). */
void auth_verifier_drop_key(auth_verifier *v, const char *key_hash_hex)
{
    pthread_mutex_lock(&v->mu);
    v->drops++;
    for (size_t i = slot_of(v, key_hash_hex); v->slots[i].used; i = (i + 1) & (v->nslots - 1))
        if (strcmp(v->slots[i].hash, key_hash_hex) == 0) {
            v->slots[i].expires_ms = 0;
            v->slots[i].revoked = true;
        }
    pthread_mutex_unlock(&v->mu);
}

void auth_verifier_drop_team(auth_verifier *v, const char *team_id)
{
    pthread_mutex_lock(&v->mu);
    v->drops++;
    for (size_t i = 0; i < v->nslots; i++)
        if (v->slots[i].used && strcmp(v->slots[i].p.team_id, team_id) == 0) {
            v->slots[i].expires_ms = 0;
            v->slots[i].revoked = true;
        }
    pthread_mutex_unlock(&v->mu);
}

static unsigned parse_scopes(const char *arr)
{
    /* text[] in PostgreSQL's text form: {traces:read,admin} */
    unsigned bits = 0;
    char tmp[64];
    size_t n = 0;

    for (const char *p = arr; *p; p++) {
        if (*p == '{' || *p == '"')
            continue;
        if (*p == ',' || *p == '}') {
            tmp[n] = '\0';
            bits |= eb_scope_parse(tmp);
            n = 0;
        } else if (n + 1 < sizeof(tmp)) {
            tmp[n++] = *p;
        }
    }
    return bits;
}

static eb_status verify_key(auth_verifier *v, const char *key, const char *hash, eb_principal *out,
                            const char **reason, char *denied_team)
{
    static const char sql[] =
        "WITH k AS ("
        " SELECT k.id, k.team_id, t.slug, t.tier, k.role, k.scopes, coalesce(k.project, ''),"
        "  k.revoked_at IS NOT NULL, (k.expires_at IS NOT NULL AND k.expires_at <= now()),"
        "  coalesce((extract(epoch FROM k.expires_at) * 1000)::bigint, 0), k.last_used_at"
        " FROM auth.api_keys k JOIN auth.teams t ON t.id = k.team_id WHERE k.key_hash = $1),"
        " touch AS (UPDATE auth.api_keys SET last_used_at = now() WHERE key_hash = $1"
        "  AND revoked_at IS NULL AND (last_used_at IS NULL OR"
        "  last_used_at < now() - interval '1 minute') RETURNING 1)"
        " SELECT k.*, (SELECT count(*) FROM touch) FROM k";
    const char *params[1] = {hash};
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    (void)key;
    c = eb_db_get(v->db);
    if (!c)
        return EB_ERR_UNAVAILABLE;
    st = eb_db_begin_system(c);
    if (st == EB_OK)
        st = eb_db_exec(c, sql, 1, params, &r);
    if (st == EB_OK)
        st = eb_db_commit(c);
    eb_db_put(v->db, c);
    if (st != EB_OK) {
        PQclear(r);
        return st == EB_ERR_UNAVAILABLE
                   ? st
                   : eb_error(EB_ERR_UNAVAILABLE, "key lookup failed: %s", eb_error_message());
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        *reason = "unknown_key";
        return eb_error(EB_ERR_UNAUTHENTICATED, "unknown API key");
    }
    memset(out, 0, sizeof(*out));
    snprintf(out->key_id, sizeof(out->key_id), "%s", eb_db_val(r, 0, 0));
    snprintf(out->team_id, sizeof(out->team_id), "%s", eb_db_val(r, 0, 1));
    snprintf(out->team_slug, sizeof(out->team_slug), "%s", eb_db_val(r, 0, 2));
    auth_tier_apply(v->cfg, eb_db_val(r, 0, 3), out);
    out->role = eb_role_parse(eb_db_val(r, 0, 4));
    out->scopes = parse_scopes(eb_db_val(r, 0, 5)) & eb_role_scopes(out->role);
    snprintf(out->project, sizeof(out->project), "%s", eb_db_val(r, 0, 6));
    out->expires_at_ms = atoll(eb_db_val(r, 0, 9));
    if (strcmp(eb_db_val(r, 0, 7), "t") == 0) {
        snprintf(denied_team, 41, "%s", out->team_id);
        PQclear(r);
        *reason = "revoked";
        return eb_error(EB_ERR_UNAUTHENTICATED, "API key was revoked");
    }
    if (strcmp(eb_db_val(r, 0, 8), "t") == 0) {
        snprintf(denied_team, 41, "%s", out->team_id);
        PQclear(r);
        *reason = "expired";
        return eb_error(EB_ERR_UNAUTHENTICATED, "API key has expired");
    }
    PQclear(r);
    return EB_OK;
}

static eb_status verify_session(auth_verifier *v, const jwt_claims *cl, eb_principal *out,
                                const char **reason)
{
    static const char sql[] = "SELECT m.role, t.slug, t.tier FROM auth.memberships m"
                              " JOIN auth.teams t ON t.id = m.team_id"
                              " WHERE m.team_id = $1::uuid AND m.user_id = $2::uuid";
    const char *params[2] = {cl->team_id, cl->sub};
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!eb_uuid_valid(cl->team_id) || !eb_uuid_valid(cl->sub)) {
        *reason = "malformed";
        return eb_error(EB_ERR_UNAUTHENTICATED, "session token has malformed claims");
    }
    c = eb_db_get(v->db);
    if (!c)
        return EB_ERR_UNAVAILABLE;
    st = eb_db_begin_system(c);
    if (st == EB_OK)
        st = eb_db_exec(c, sql, 2, params, &r);
    if (st == EB_OK)
        st = eb_db_commit(c);
    eb_db_put(v->db, c);
    if (st != EB_OK) {
        PQclear(r);
        return eb_error(EB_ERR_UNAVAILABLE, "session lookup failed: %s", eb_error_message());
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        *reason = "not_a_member";
        return eb_error(EB_ERR_UNAUTHENTICATED, "the session's user is no longer in the team");
    }
    memset(out, 0, sizeof(*out));
    snprintf(out->team_id, sizeof(out->team_id), "%.40s", cl->team_id);
    snprintf(out->user_id, sizeof(out->user_id), "%.40s", cl->sub);
    out->role = eb_role_parse(eb_db_val(r, 0, 0));
    out->scopes = eb_role_scopes(out->role);
    snprintf(out->team_slug, sizeof(out->team_slug), "%s", eb_db_val(r, 0, 1));
    auth_tier_apply(v->cfg, eb_db_val(r, 0, 2), out);
    out->expires_at_ms = cl->exp * 1000;
    PQclear(r);
    return EB_OK;
}

eb_status auth_verify(auth_verifier *v, const char *credential, eb_principal *out,
                      const char **reason, bool *cache_hit, char *denied_team)
{
    char hash[65];
    size_t len = credential ? strnlen(credential, 8193) : 0;
    unsigned long long drops_before;
    eb_status st;

    *cache_hit = false;
    *reason = "";
    denied_team[0] = '\0';
    if (len == 0 || len > 8192) {
        *reason = "malformed";
        return eb_error(EB_ERR_UNAUTHENTICATED, "credential is empty or too long");
    }
    eb_sha256_hex(credential, len, hash);
    if (strncmp(credential, "eb_", 3) == 0) {
        if (!apikey_parse(credential, NULL)) {
            *reason = "malformed";
            return eb_error(EB_ERR_UNAUTHENTICATED, "not a well-formed evalbus API key");
        }
        if (cache_get(v, hash, out)) {
            *cache_hit = true;
            return EB_OK;
        }
        drops_before = cache_drops(v);
        st = verify_key(v, credential, hash, out, reason, denied_team);
    } else {
        jwt_claims cl;
        const char *why = NULL;
        st = jwt_verify_hs256(credential, v->cfg->jwt_secret, strlen(v->cfg->jwt_secret),
                              v->cfg->jwt_issuer, v->cfg->jwt_audience, (long long)time(NULL),
                              (int)(v->cfg->jwt_leeway_ms / 1000), &cl, &why);
        if (st != EB_OK) {
            *reason = why ? why : "malformed";
            return eb_error(EB_ERR_UNAUTHENTICATED, "session token rejected: %s", *reason);
        }
        if (cache_get(v, hash, out)) {
            *cache_hit = true;
            return EB_OK;
        }
        drops_before = cache_drops(v);
        st = verify_session(v, &cl, out, reason);
    }
    if (st == EB_OK) {
        cache_put(v, hash, out, drops_before);
    } else if (st == EB_ERR_UNAVAILABLE && cache_get_stale(v, hash, out)) {
        eb_log_warn(NULL, "PostgreSQL unavailable: a credential was verified from an expired "
                          "cache entry");
        *cache_hit = true;
        st = EB_OK;
    }
    return st;
}
