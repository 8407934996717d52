/* config.h -- table-driven settings.
 * A service describes its settings in a table of eb_setting rows (name, environment variable,
 * type, bounds, default, secret?, offset of the field in the service's config struct).
 * eb_config_load() applies, in order: defaults, a settings file (--config FILE or
 * EVALBUS_CONFIG; lines "name = value", '#' comments), the environment (and ENV_FILE, which
 * names a file holding the value, for secrets mounted by Kubernetes), then --name=value /
 * --name value flags. A bad value stops start-up with a message that names the setting.
 *
 * Field types by setting type: EB_SET_STRING -> char * (owned, freed by eb_config_free),
 * EB_SET_INT / EB_SET_DURATION (milliseconds) / EB_SET_SIZE (bytes) -> long long,
 * EB_SET_BOOL -> bool, EB_SET_DOUBLE -> double. */
#ifndef EVALBUS_CONFIG_H
#define EVALBUS_CONFIG_H

#include "evalbus/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum eb_setting_type {
    EB_SET_STRING,
    EB_SET_INT,
    EB_SET_BOOL,
    EB_SET_DURATION, /* "250ms", "5s", "2m", "1h"; a bare number is milliseconds */
    EB_SET_SIZE,     /* "512", "64KiB", "10MiB", "1GiB" */
    EB_SET_DOUBLE,
} eb_setting_type;

typedef struct eb_setting {
    const char *name; /* flag and file key, e.g. "http-port" */
    const char *env;  /* environment variable, e.g. "EVALBUS_HTTP_PORT" */
    eb_setting_type type;
    const char *def; /* default as text; NULL means empty / 0 */
    double min, max; /* inclusive bounds for numeric types; ignored when min == max */
    bool secret;     /* value never printed */
    size_t offset;   /* offsetof(the config struct, field) */
    const char *help;
} eb_setting;

/* Loads settings into target (a struct laid out as the table says). argv may be NULL.
 * Unknown flags are an error. "--help" sets *help_out (if not NULL) and returns EB_OK.
 * On error returns EB_ERR_INVALID with eb_error_message() naming the setting. */
eb_status eb_config_load(const eb_setting *tab, size_t n, void *target, int argc, char **argv,
                         bool *help_out);

/* Parses one value of a setting into target; used by eb_config_load and by tests. */
eb_status eb_config_set(const eb_setting *s, void *target, const char *value, const char *source);

/* Frees the strings eb_config_load stored in target. */
void eb_config_free(const eb_setting *tab, size_t n, void *target);

/* Prints the table (flags, environment, defaults, help) for --help. */
void eb_config_print_help(const eb_setting *tab, size_t n, const char *program, FILE *out);

/* Parses "5s" etc. into milliseconds / bytes; returns false if malformed. */
bool eb_parse_duration_ms(const char *s, long long *out);
bool eb_parse_size(const char *s, long long *out);

/* One item of a comma-separated setting at p: *item and *len get it without the spaces and tabs
 * around it; returns where the next item starts, or NULL when this was the last. Walk a list
 * with: for (const char *p = list && *list ? list : NULL; p;) p = eb_list_item(p, &it, &n);
 * (an empty list has no items; "a,", ",a" and "a,,b" have an empty one). */
const char *eb_list_item(const char *p, const char **item, size_t *len);

#endif
