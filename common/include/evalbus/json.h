/* json.h -- cJSON helpers with the checks every API needs: strict UTF-8, typed field access
 * with errors that name the field, and bounded strings. */
#ifndef EVALBUS_JSON_H
#define EVALBUS_JSON_H

#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* True if s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool eb_utf8_valid(const char *s, size_t n);
/* The length of the longest prefix of s of at most max bytes that does not end inside a UTF-8
 * character (for quoting part of a name in a message: "%.*s"). */
int eb_utf8_prefix_len(const char *s, size_t max);
/* Drops the last character of s if it was cut short (a message truncated to its buffer). */
void eb_utf8_trim_cut(char *s);

/* Appends s as the body of a JSON string (no surrounding quotes): quotes, backslashes and
 * control characters escaped, runs of ordinary bytes copied at once, and bytes that are not
 * well-formed UTF-8 written as U+FFFD, so the output is valid JSON whatever s holds. */
void eb_buf_json_escape(eb_buf *b, const char *s);
/* Appends v as a JSON number: integers (up to 2^53) exactly, other numbers as the shortest of
 * %.15g..%.17g that reads back as v, with '.' whatever the locale; non-finite values as null. */
void eb_buf_json_number(eb_buf *b, double v);
/* Appends the number v: its exact text when eb_json_keep_exact gave it one, else as
 * eb_buf_json_number writes its value. */
void eb_buf_json_number_item(eb_buf *b, const cJSON *v);

/* The numbers JSON input may hold: up to this many significant digits, with a magnitude from
 * 1e-EB_JSON_MAX_EXPONENT to 1e+EB_JSON_MAX_EXPONENT (every double and a little more; PostgreSQL
 * prints jsonb numbers in plain notation, so a larger exponent would be a short input that
 * grows a thousandfold on every read). */
#define EB_JSON_MAX_DIGITS 1000
#define EB_JSON_MAX_EXPONENT 330

/* Gives every number of root that a double cannot hold exactly (more than 15 significant digits,
 * or a magnitude beyond 1e+-300) the text it has in text[0..n), the JSON text root was parsed
 * from, as its valuestring (in cJSON's memory, freed by cJSON_Delete); eb_json_print prints that
 * text, so such numbers (64-bit ids, say) pass through unchanged. valuedouble is left as cJSON
 * read it. A number whose value is changed later must have its valuestring freed and cleared.
 * Returns the byte offset of the first number outside the limits above (which keeps only its
 * double), or SIZE_MAX when there is none. */
size_t eb_json_keep_exact(cJSON *root, const char *text, size_t n);

/* True when v is a number written as nonzero that a double holds as 0 (1e-330, say): storing
 * its double would change it silently. Numbers parsed by eb_json_parse_object only. */
bool eb_json_number_underflows(const cJSON *v);

/* Parses JSON text that needs none of eb_json_parse_object's input checks (valid UTF-8: stored
 * by PostgreSQL, printed by us, or checked by the caller): the value in text[0..n), whitespace
 * around it allowed, numbers keeping their exact text as eb_json_keep_exact gives it (numbers
 * outside the limits keep their double). NULL if it is not JSON; freed with cJSON_Delete. */
cJSON *eb_json_parse_text(const char *text, size_t n);

/* Parses a JSON object from data[0..n). EB_ERR_INVALID with a message giving the byte offset for
 * malformed JSON, invalid UTF-8, a number outside the limits above or a top level that is not an
 * object. Numbers keep their exact text as eb_json_keep_exact gives it. *out is freed with
 * cJSON_Delete. */
/* Whether the JSON number text t (as eb_json_keep_exact keeps it for a number a double cannot
 * hold) is a whole number: no significant digit after the decimal point once the exponent has
 * moved it (120.00000000000000000 is; 1.0000000000000001 and 4503599627370496.5 are not). */
bool eb_json_number_whole(const char *t);
eb_status eb_json_parse_object(const char *data, size_t n, cJSON **out);

/* Reads field name of obj as a string. Missing: EB_ERR_INVALID if required, else *out = NULL
 * and EB_OK. Wrong type, empty when required, or longer than max_len bytes: EB_ERR_INVALID naming
 * the field. *out points into obj. */
eb_status eb_json_string(const cJSON *obj, const char *name, bool required, size_t max_len,
                         const char **out);
/* Reads an array of strings; each is checked like eb_json_string. *out points into obj. */
eb_status eb_json_string_array(const cJSON *obj, const char *name, bool required, size_t max_items,
                               size_t max_len, const cJSON **out);
/* EB_OK if every member of obj is one of known[0..n); else EB_ERR_INVALID naming the first that
 * is not, and the known ones: a misspelt or unsupported member is refused, not silently
 * dropped. */
eb_status eb_json_known_members(const cJSON *obj, const char *const *known, size_t n);
/* Reads a number (integral if integral is true), within [min, max]. Missing and not required:
 * *out untouched, EB_OK. */
eb_status eb_json_number(const cJSON *obj, const char *name, bool required, bool integral,
                         double min, double max, double *out);

/* True if s is an RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), with
 * fields in range ('t' and 'z' accepted in either case) and an offset of at most 15:59, as
 * PostgreSQL takes it. */
bool eb_rfc3339_valid(const char *s);

/* Adds a string member, or null when value is NULL or "" and null_if_empty is true. */
void eb_json_add_str(cJSON *obj, const char *name, const char *value, bool null_if_empty);

/* Prints item compactly into a new string (caller frees with free()), every number exactly (as
 * eb_buf_json_number does). */
char *eb_json_print(const cJSON *item);

/* The name of a member that an object repeats, anywhere in v (objects inside arrays and objects
 * included), or NULL when none is. */
const char *eb_json_repeated_member(const cJSON *v);

#endif
