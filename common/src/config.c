/* config.c -- settings table loader (defaults, file, environment, *_FILE, flags).
 * Values are parsed strictly: trailing garbage, overflow and out-of-range values are errors
 * that name the setting and where the value came from. Secret values are never echoed. */
#include "evalbus/config.h"
#include "evalbus/mem.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const eb_setting *find_setting(const eb_setting *tab, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(tab[i].name) == len && strncmp(tab[i].name, name, len) == 0)
            return &tab[i];
    return NULL;
}

static char *trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

bool eb_parse_duration_ms(const char *s, long long *out)
{
    char *end;
    double v;
    double mult = 1;

    errno = 0;
    v = strtod(s, &end);
    if (end == s || errno || v < 0 || !isfinite(v))
        return false;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else if (strcmp(end, "d") == 0)
        mult = 86400000;
    else
        return false;
    if (v * mult > 9.2e18)
        return false;
    *out = (long long)(v * mult);
    return true;
}

bool eb_parse_size(const char *s, long long *out)
{
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {{"", 1},
                 {"B", 1},
                 {"KiB", 1024.0},
                 {"K", 1024.0},
                 {"KB", 1e3},
                 {"MiB", 1048576.0},
                 {"M", 1048576.0},
                 {"MB", 1e6},
                 {"GiB", 1073741824.0},
                 {"G", 1073741824.0},
                 {"GB", 1e9}};
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (end == s || errno || v < 0 || !isfinite(v))
        return false;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v * units[i].mult > 9.2e18)
                return false;
            *out = (long long)(v * units[i].mult);
            return true;
        }
    }
    return false;
}

static eb_status bad(const eb_setting *s, const char *value, const char *source, const char *why)
{
    return eb_error(EB_ERR_INVALID, "setting %s (%s) from %s: %s%s%s%s", s->name, s->env, source,
                    s->secret ? "" : "'", s->secret ? "value" : value, s->secret ? " " : "' ", why);
}

eb_status eb_config_set(const eb_setting *s, void *target, const char *value, const char *source)
{
    char *field = (char *)target + s->offset;
    double num = 0;
    char *end;

    switch (s->type) {
    case EB_SET_STRING: {
        char **p = (char **)(void *)field;
        free(*p);
        *p = eb_strdup(value ? value : "");
        return EB_OK;
    }
    case EB_SET_BOOL: {
        bool *p = (bool *)(void *)field;
        if (!value || !*value || !strcmp(value, "false") || !strcmp(value, "0") ||
            !strcmp(value, "no") || !strcmp(value, "off"))
            *p = false;
        else if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes") ||
                 !strcmp(value, "on"))
            *p = true;
        else
            return bad(s, value, source, "is not a boolean (true/false)");
        return EB_OK;
    }
    case EB_SET_INT: {
        long long v;
        if (!value || !*value)
            return bad(s, "", source, "is empty; expected an integer");
        errno = 0;
        v = strtoll(value, &end, 10);
        if (*end || errno)
            return bad(s, value, source, "is not an integer");
        num = (double)v;
        if (s->min != s->max && (num < s->min || num > s->max))
            return eb_error(EB_ERR_INVALID, "setting %s (%s) from %s: %lld is out of range %g..%g",
                            s->name, s->env, source, v, s->min, s->max);
        *(long long *)(void *)field = v;
        return EB_OK;
    }
    case EB_SET_DOUBLE: {
        double v;
        if (!value || !*value)
            return bad(s, "", source, "is empty; expected a number");
        errno = 0;
        v = strtod(value, &end);
        if (*end || errno || !isfinite(v))
            return bad(s, value, source, "is not a number");
        if (s->min != s->max && (v < s->min || v > s->max))
            return eb_error(EB_ERR_INVALID, "setting %s (%s) from %s: %g is out of range %g..%g",
                            s->name, s->env, source, v, s->min, s->max);
        *(double *)(void *)field = v;
        return EB_OK;
    }
    case EB_SET_DURATION:
    case EB_SET_SIZE: {
        long long v = 0;
        bool ok = s->type == EB_SET_DURATION ? eb_parse_duration_ms(value ? value : "", &v)
                                             : eb_parse_size(value ? value : "", &v);
        if (!ok)
            return bad(s, value ? value : "", source,
                       s->type == EB_SET_DURATION ? "is not a duration (e.g. 500ms, 5s, 2m)"
                                                  : "is not a size (e.g. 512KiB, 10MiB)");
        if (s->min != s->max && ((double)v < s->min || (double)v > s->max))
            return eb_error(EB_ERR_INVALID,
                            "setting %s (%s) from %s: %lld is out of range %.0f..%.0f", s->name,
                            s->env, source, v, s->min, s->max);
        *(long long *)(void *)field = v;
        return EB_OK;
    }
    }
    return eb_error(EB_ERR_INTERNAL, "setting %s has an unknown type", s->name);
}

static eb_status read_value_file(const eb_setting *s, const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    eb_buf b = {0};
    char chunk[4096];
    size_t n;

    if (!f)
        return eb_error(EB_ERR_INVALID, "setting %s (%s_FILE): cannot read '%s': %s", s->name,
                        s->env, path, strerror(errno));
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        eb_buf_append(&b, chunk, n);
        if (b.len > 1 << 20) {
            fclose(f);
            eb_buf_free(&b);
            return eb_error(EB_ERR_INVALID, "setting %s (%s_FILE): '%s' is larger than 1 MiB",
                            s->name, s->env, path);
        }
    }
    fclose(f);
    while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
        b.data[--b.len] = '\0';
    *out = eb_buf_steal(&b);
    return EB_OK;
}

static eb_status load_file(const eb_setting *tab, size_t n, void *target, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int lineno = 0;
    eb_status st = EB_OK;

    if (!f)
        return eb_error(EB_ERR_INVALID, "settings file '%s': %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        char *l = trim(line), *eq, *key, *val;
        const eb_setting *s;
        char source[300];

        lineno++;
        if (!*l || *l == '#')
            continue;
        eq = strchr(l, '=');
        if (!eq) {
            st = eb_error(EB_ERR_INVALID, "settings file %s:%d: expected 'name = value'", path,
                          lineno);
            break;
        }
        *eq = '\0';
        key = trim(l);
        val = trim(eq + 1);
        s = find_setting(tab, n, key, strlen(key));
        if (!s) {
            st = eb_error(EB_ERR_INVALID, "settings file %s:%d: unknown setting '%s'", path, lineno,
                          key);
            break;
        }
        snprintf(source, sizeof(source), "%s:%d", path, lineno);
        st = eb_config_set(s, target, val, source);
        if (st != EB_OK)
            break;
    }
    fclose(f);
    return st;
}

eb_status eb_config_load(const eb_setting *tab, size_t n, void *target, int argc, char **argv,
                         bool *help_out)
{
    eb_status st = EB_OK;
    const char *cfg_file = getenv("EVALBUS_CONFIG");

    if (help_out)
        *help_out = false;
    for (size_t i = 0; i < n; i++) {
        st = eb_config_set(&tab[i], target, tab[i].def ? tab[i].def : "", "default");
        if (st != EB_OK && tab[i].def)
            return st;
        st = EB_OK;
    }
    for (int i = 1; argv && i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            cfg_file = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            cfg_file = argv[i] + 9;
    }
    if (cfg_file && *cfg_file) {
        st = load_file(tab, n, target, cfg_file);
        if (st != EB_OK)
            return st;
    }
    for (size_t i = 0; i < n; i++) {
        const eb_setting *s = &tab[i];
        const char *v = getenv(s->env);
        char fenv[160];
        const char *fpath;

        snprintf(fenv, sizeof(fenv), "%s_FILE", s->env);
        fpath = getenv(fenv);
        if (fpath && *fpath) {
            char *content = NULL;
            st = read_value_file(s, fpath, &content);
            if (st == EB_OK)
                st = eb_config_set(s, target, content, fenv);
            free(content);
        } else if (v) {
            st = eb_config_set(s, target, v, s->env);
        }
        if (st != EB_OK)
            return st;
    }
    for (int i = 1; argv && i < argc; i++) {
        const char *a = argv[i];
        const char *name, *eq, *val;
        const eb_setting *s;
        size_t len;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (help_out)
                *help_out = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0)
            return eb_error(EB_ERR_INVALID, "unexpected argument '%s' (settings are --name=value)",
                            a);
        name = a + 2;
        eq = strchr(name, '=');
        len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 6 && strncmp(name, "config", 6) == 0) {
            if (!eq)
                i++;
            continue;
        }
        s = find_setting(tab, n, name, len);
        if (!s)
            return eb_error(EB_ERR_INVALID, "unknown setting --%.*s (see --help)", (int)len, name);
        if (eq) {
            val = eq + 1;
        } else if (s->type == EB_SET_BOOL) {
            val = "true";
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            return eb_error(EB_ERR_INVALID, "setting --%s needs a value", s->name);
        }
        st = eb_config_set(s, target, val, "command line");
        if (st != EB_OK)
            return st;
    }
    return EB_OK;
}

void eb_config_free(const eb_setting *tab, size_t n, void *target)
{
    for (size_t i = 0; i < n; i++) {
        if (tab[i].type == EB_SET_STRING) {
            char **p = (char **)(void *)((char *)target + tab[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}

void eb_config_print_help(const eb_setting *tab, size_t n, const char *program, FILE *out)
{
    fprintf(out,
            "usage: %s [--config FILE] [--name=value ...]\n\nsettings (flag, environment, "
            "default):\n",
            program);
    for (size_t i = 0; i < n; i++) {
        fprintf(out, "  --%-24s %-34s %s\n      %s%s\n", tab[i].name, tab[i].env,
                tab[i].secret ? "(secret)" : (tab[i].def && *tab[i].def ? tab[i].def : "-"),
                tab[i].help ? tab[i].help : "", tab[i].secret ? " (also <ENV>_FILE)" : "");
    }
}

const char *eb_list_item(const char *p, const char **item, size_t *len)
{
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);

    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *item = p;
    *len = (size_t)(end - p);
    return comma ? comma + 1 : NULL;
}
