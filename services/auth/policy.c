/* policy.c -- rate-limit tiers and the validation rules for names the auth service accepts. */
#include "auth_int.h"

#include <stdio.h>
#include <string.h>

bool auth_tier_valid(const char *name)
{
    return name && (!strcmp(name, "free") || !strcmp(name, "pro") || !strcmp(name, "enterprise"));
}

void auth_tier_apply(const auth_config *cfg, const char *tier, eb_principal *p)
{
    double rate = cfg->free_rate, burst = cfg->free_burst;

    if (tier && strcmp(tier, "pro") == 0) {
        rate = cfg->pro_rate;
        burst = cfg->pro_burst;
    } else if (tier && strcmp(tier, "enterprise") == 0) {
        rate = cfg->enterprise_rate;
        burst = cfg->enterprise_burst;
    }
    snprintf(p->tier, sizeof(p->tier), "%s", auth_tier_valid(tier) ? tier : "free");
    p->rate_per_sec = rate;
    p->burst = burst > 0 ? burst : rate;
    p->unlimited = rate <= 0; /* a rate of 0 means no limit */
}

bool auth_slug_valid(const char *slug)
{
    size_t n = slug ? strlen(slug) : 0;

    if (n == 0 || n > 63 || slug[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((slug[i] >= 'a' && slug[i] <= 'z') || (slug[i] >= '0' && slug[i] <= '9') ||
              slug[i] == '-'))
            return false;
    return true;
}

bool auth_email_valid(const char *email)
{
    const char *at;
    size_t n = email ? strlen(email) : 0;

    if (n < 3 || n > 320)
        return false;
    at = strchr(email, '@');
    if (!at || at == email || !at[1] || strchr(at + 1, '@'))
        return false;
    for (const unsigned char *p = (const unsigned char *)email; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}
