/* principal.c -- role and scope tables and the Principal wire conversion. */
#include "evalbus/principal.h"

#include <stdio.h>
#include <string.h>

static const char *const role_names[] = {"none", "viewer", "member", "admin", "owner"};
static const char *const scope_names[EB_SCOPE_COUNT] = {
    "traces:write", "traces:read", "exports:write", "exports:read", "analytics:read", "admin",
};

const char *eb_role_str(eb_role role)
{
    if ((unsigned)role > EB_ROLE_OWNER)
        return "none";
    return role_names[role];
}

eb_role eb_role_parse(const char *name)
{
    for (int i = EB_ROLE_VIEWER; i <= EB_ROLE_OWNER; i++)
        if (name && strcmp(name, role_names[i]) == 0)
            return (eb_role)i;
    return EB_ROLE_NONE;
}

unsigned eb_scope_parse(const char *name)
{
    for (int i = 0; i < EB_SCOPE_COUNT; i++)
        if (name && strcmp(name, scope_names[i]) == 0)
            return 1u << i;
    return 0;
}

const char *eb_scope_name(int i)
{
    return i >= 0 && i < EB_SCOPE_COUNT ? scope_names[i] : "";
}

unsigned eb_role_scopes(eb_role role)
{
    unsigned read = EB_SCOPE_TRACES_READ | EB_SCOPE_EXPORTS_READ | EB_SCOPE_ANALYTICS_READ;
    unsigned write = EB_SCOPE_TRACES_WRITE | EB_SCOPE_EXPORTS_WRITE;

    switch (role) {
    case EB_ROLE_VIEWER:
        return read;
    case EB_ROLE_MEMBER:
        return read | write;
    case EB_ROLE_ADMIN:
    case EB_ROLE_OWNER:
        return read | write | EB_SCOPE_ADMIN;
    case EB_ROLE_NONE:
        break;
    }
    return 0;
}

void eb_principal_to_pb(const eb_principal *p, Evalbus__V1__Principal *pb,
                        Evalbus__V1__RateLimit *rl, char **scratch)
{
    size_t n = 0;

    pb->team_id = (char *)p->team_id;
    pb->team_slug = (char *)p->team_slug;
    pb->user_id = (char *)p->user_id;
    pb->key_id = (char *)p->key_id;
    pb->project = (char *)p->project;
    pb->role = (Evalbus__V1__Role)p->role;
    for (int i = 0; i < EB_SCOPE_COUNT; i++)
        if (p->scopes & (1u << i))
            scratch[n++] = (char *)scope_names[i];
    pb->n_scopes = n;
    pb->scopes = scratch;
    rl->tier = (char *)p->tier;
    rl->rate_per_sec = p->rate_per_sec;
    rl->burst = p->burst;
    rl->unlimited = p->unlimited;
    pb->rate_limit = rl;
    pb->expires_at_unix_ms = p->expires_at_ms;
}

void eb_principal_from_pb(const Evalbus__V1__Principal *pb, eb_principal *p)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->team_id, sizeof(p->team_id), "%s", pb->team_id ? pb->team_id : "");
    snprintf(p->team_slug, sizeof(p->team_slug), "%s", pb->team_slug ? pb->team_slug : "");
    snprintf(p->user_id, sizeof(p->user_id), "%s", pb->user_id ? pb->user_id : "");
    snprintf(p->key_id, sizeof(p->key_id), "%s", pb->key_id ? pb->key_id : "");
    snprintf(p->project, sizeof(p->project), "%s", pb->project ? pb->project : "");
    p->role = pb->role >= 0 && pb->role <= (int)EB_ROLE_OWNER ? (eb_role)pb->role : EB_ROLE_NONE;
    for (size_t i = 0; i < pb->n_scopes; i++)
        p->scopes |= eb_scope_parse(pb->scopes[i]);
    if (pb->rate_limit) {
        snprintf(p->tier, sizeof(p->tier), "%s", pb->rate_limit->tier ? pb->rate_limit->tier : "");
        p->rate_per_sec = pb->rate_limit->rate_per_sec;
        p->burst = pb->rate_limit->burst;
        p->unlimited = pb->rate_limit->unlimited;
    }
    p->expires_at_ms = pb->expires_at_unix_ms;
}
