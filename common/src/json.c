/* json.c -- strict JSON input helpers over cJSON.
 * cJSON accepts invalid UTF-8 in strings, so bodies are validated before parsing. Field
 * getters produce errors that name the field and the expected type, for 400 answers. */
#include "evalbus/json.h"
#include "evalbus/crypto.h"
#include "evalbus/mem.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

int eb_utf8_prefix_len(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);

    if (n > max)
        for (n = max; n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80;)
            n--;
    return n > INT_MAX ? INT_MAX : (int)n;
}

void eb_utf8_trim_cut(char *s)
{
    size_t n = strlen(s), lead = n, need;
    unsigned char c;

    while (lead > 0 && n - lead < 4 && ((unsigned char)s[lead - 1] & 0xc0) == 0x80)
        lead--;
    if (lead == 0)
        return;
    c = (unsigned char)s[lead - 1];
    need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    if (need > 1 && n - (lead - 1) < need)
        s[lead - 1] = '\0'; /* the last character was cut short */
}

bool eb_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        unsigned cp;

        if (c < 0x80) {
            /* ASCII, the common case: eight bytes at a time while none has its high bit */
            i++;
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* --- output --- */

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t len;

    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 0;
    return len <= n && eb_utf8_valid((const char *)s, len) ? len : 0;
}

void eb_buf_json_escape(eb_buf *b, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str), i = 0, run = 0;

    while (i < n) {
        unsigned char ch = s[i];
        size_t len;

        if (ch >= 0x20 && ch < 0x80 && ch != '"' && ch != '\\') {
            i++;
            continue;
        }
        if (ch >= 0x80 && (len = utf8_seq(s + i, n - i)) != 0) {
            i += len;
            continue;
        }
        eb_buf_append(b, s + run, i - run);
        switch (ch) {
        case '"':
            eb_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            eb_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            eb_buf_append(b, "\\n", 2);
            break;
        case '\r':
            eb_buf_append(b, "\\r", 2);
            break;
        case '\t':
            eb_buf_append(b, "\\t", 2);
            break;
        default:
            if (ch < 0x20) {
                char u[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
                eb_buf_append(b, u, 6);
            } else {
                eb_buf_append(b, "\\ufffd", 6);
            }
        }
        run = ++i;
    }
    eb_buf_append(b, s + run, n - run);
}

/* Where the text opens its (CJSON_NESTING_LIMIT + 1)th nested array or object, or SIZE_MAX: cJSON
 * refuses such text as if it were malformed. */
static size_t too_deep_at(const char *data, size_t n)
{
    size_t depth = 0;
    bool in_string = false;

    for (size_t i = 0; i < n; i++) {
        char ch = data[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > CJSON_NESTING_LIMIT)
                return i;
        } else if ((ch == ']' || ch == '}') && depth > 0) {
            depth--;
        }
    }
    return SIZE_MAX;
}

/* A number token of JSON text: its length (the whole run of number characters, as cJSON reads
 * it), whether it follows the strict grammar -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 * (cJSON also takes "01", "1." and "-.5"), its significant digits (from the first non-zero digit
 * to the last digit) and the decimal exponent of its first significant digit (1234 has 3, 0.05
 * has -2), clamped to +-10^6. */
typedef struct num_token {
    size_t len;
    bool strict;
    size_t sig;
    long e10;
} num_token;

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static num_token scan_number(const char *s, size_t n)
{
    num_token t = {0, true, 0, 0};
    size_t i = 0, int_at, int_n, frac_at = 0, frac_n = 0, first = SIZE_MAX;
    long exp = 0;
    bool neg_exp = false;

    if (i < n && s[i] == '-')
        i++;
    for (int_at = i; i < n && is_digit(s[i]); i++)
        ;
    int_n = i - int_at;
    if (int_n == 0 || (int_n > 1 && s[int_at] == '0'))
        t.strict = false;
    if (i < n && s[i] == '.') {
        for (frac_at = ++i; i < n && is_digit(s[i]); i++)
            ;
        frac_n = i - frac_at;
        t.strict = t.strict && frac_n > 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t e;
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            neg_exp = s[i++] == '-';
        for (e = i; i < n && is_digit(s[i]); i++)
            if (exp < 1000000)
                exp = exp * 10 + (s[i] - '0');
        t.strict = t.strict && i > e;
    }
    for (; i < n && (is_digit(s[i]) || s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '+' ||
                     s[i] == '-');
         i++)
        t.strict = false; /* more of the run than the grammar has */
    t.len = i;
    /* the first significant digit, among the integer digits, then the fraction's */
    for (size_t k = 0; k < int_n + frac_n && first == SIZE_MAX; k++)
        if ((k < int_n ? s[int_at + k] : s[frac_at + k - int_n]) != '0')
            first = k;
    if (first == SIZE_MAX)
        return t; /* zero */
    t.sig = int_n + frac_n - first;
    t.e10 = (long)int_n - 1 - (long)first + (neg_exp ? -exp : exp);
    return t;
}

bool eb_json_number_whole(const char *t)
{
    size_t n = strlen(t), m = strcspn(t, "eE"), zeros = 0;
    num_token tok = scan_number(t, n);

    if (tok.sig == 0)
        return true; /* zero */
    /* the mantissa's trailing zeros are significant digits of scan_number's, not of the value */
    for (size_t k = m; k-- > 0 && (t[k] == '0' || t[k] == '.');)
        zeros += t[k] == '0';
    return (long)(tok.sig - zeros) - 1 <= tok.e10;
}

typedef struct exact_num {
    size_t index; /* the how-manyth number of the text */
    const char *text;
    size_t len;
} exact_num;

/* Numbers of v's tree in document order (the order of their text); gives each listed one its
 * text. */
static void give_texts(cJSON *v, size_t *seen, const exact_num *list, size_t n, size_t *next)
{
    for (; v && *next < n; v = v->next) {
        if (cJSON_IsNumber(v)) {
            if (*seen == list[*next].index && !v->valuestring) {
                char *t = cJSON_malloc(list[*next].len + 1);
                if (t) {
                    memcpy(t, list[*next].text, list[*next].len);
                    t[list[*next].len] = '\0';
                    v->valuestring = t;
                }
                (*next)++;
            }
            (*seen)++;
        } else if (v->child) {
            give_texts(v->child, seen, list, n, next);
        }
    }
}

/* The end of the string whose opening quote is at text[i]: the index just past its closing
 * quote (a quote preceded by an odd number of backslashes is escaped), or n. */
static size_t string_end(const char *text, size_t n, size_t i)
{
    for (i++; i < n;) {
        const char *q = memchr(text + i, '"', n - i);
        size_t at, bs = 0;
        if (!q)
            return n;
        at = (size_t)(q - text);
        while (at - bs > i && text[at - bs - 1] == '\\')
            bs++;
        i = at + 1;
        if (bs % 2 == 0)
            return i;
    }
    return n;
}

size_t eb_json_keep_exact(cJSON *root, const char *text, size_t n)
{
    exact_num *list = NULL;
    size_t count = 0, cap = 0, number = 0, seen = 0, next = 0, refused = SIZE_MAX;

    if (!root || !text)
        return SIZE_MAX;
    for (size_t i = 0; i < n;) {
        char ch = text[i];
        num_token t;

        if (ch == '"') {
            i = string_end(text, n, i);
            continue;
        }
        if (ch != '-' && !is_digit(ch)) {
            i++;
            continue;
        }
        /* a number: cJSON reads it into a double, exact up to 15 significant digits and within
         * its exponent range; beyond either, its text is kept, within bounds that keep it short
         * in PostgreSQL's plain notation and inside its numeric type */
        t = scan_number(text + i, n - i);
        if (t.sig > EB_JSON_MAX_DIGITS || t.e10 > EB_JSON_MAX_EXPONENT ||
            t.e10 < -EB_JSON_MAX_EXPONENT) {
            if (refused == SIZE_MAX)
                refused = i;
        } else if (t.strict && (t.sig > 15 || t.e10 > 300 || t.e10 < -300)) {
            if (count == cap) {
                cap = cap ? cap * 2 : 8;
                list = eb_realloc(list, cap * sizeof *list);
            }
            list[count++] = (exact_num){number, text + i, t.len};
        }
        number++;
        i += t.len ? t.len : 1;
    }
    if (count)
        give_texts(root, &seen, list, count, &next);
    free(list);
    return refused;
}

/* Parses the JSON value in data[0..n), whitespace around it allowed (what cJSON skips before a
 * value: any byte up to 0x20, and so after it too). NULL when it is not one:
 * *at is then the byte where parsing stopped, and *trailing tells whether a whole value was
 * followed by more than whitespace. */
static cJSON *parse_whole(const char *data, size_t n, size_t *at, bool *trailing)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, n, &end, false);
    size_t k = end && end >= data ? (size_t)(end - data) : 0;

    *trailing = false;
    if (root) {
        while (k < n && (unsigned char)data[k] <= 0x20)
            k++;
        if (k < n) {
            cJSON_Delete(root);
            root = NULL;
            *trailing = true;
        }
    }
    *at = k;
    return root;
}

cJSON *eb_json_parse_text(const char *text, size_t n)
{
    size_t at;
    bool trailing;
    cJSON *v = parse_whole(text, n, &at, &trailing);

    if (v)
        eb_json_keep_exact(v, text, n);
    return v;
}

/* The UTF-16 code unit named by the escape at p ("\u" and four hex digits, before end), or -1
 * when p holds no such escape. */
static long escaped_unit(const char *p, const char *end)
{
    long v = 0;

    if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    for (int i = 2; i < 6; i++) {
        int d = eb_hex_digit(p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

eb_status eb_json_parse_object(const char *data, size_t n, cJSON **out)
{
    cJSON *root;
    size_t out_of_range, at;
    bool trailing;
    char *fixed = NULL; /* data with its lone surrogate escapes made \ufffd */
    eb_status st = EB_OK;

    *out = NULL;
    if (n == 0)
        return eb_error(EB_ERR_INVALID, "request body is empty; expected a JSON object");
    if (!eb_utf8_valid(data, n))
        return eb_error(EB_ERR_INVALID, "request body is not valid UTF-8");
    if (memchr(data, '\0', n))
        return eb_error(EB_ERR_INVALID, "request body contains a NUL byte");
    /* cJSON would cut a string at an escaped NUL: refuse it like a raw one. An escaped UTF-16
     * surrogate that is not half of a pair (what JSON.stringify and Python's json.dumps write
     * for a string cut inside an emoji) names no character, and cJSON refuses the whole text
     * for it: it becomes U+FFFD, as a UTF-8 encoder makes of such a string */
    for (const char *q = data, *end = data + n; (q = memchr(q, '\\', (size_t)(end - q))) != NULL;) {
        long u = escaped_unit(q, end), low;
        if (u == 0) {
            free(fixed);
            return eb_error(EB_ERR_INVALID,
                            "request body contains an escaped NUL (\\u0000) "
                            "at byte %zu",
                            (size_t)(q - data));
        }
        if (u >= 0xd800 && u <= 0xdbff && (low = escaped_unit(q + 6, end)) >= 0xdc00 &&
            low <= 0xdfff) {
            q += 12; /* a pair: one character */
            continue;
        }
        if (u >= 0xd800 && u <= 0xdfff) {
            if (!fixed) {
                fixed = eb_malloc(n);
                memcpy(fixed, data, n);
            }
            memcpy(fixed + (q - data), "\\ufffd", 6);
            q += 6;
            continue;
        }
        q += end - q >= 2 ? 2 : 1; /* skip the escaped character */
    }
    if (fixed)
        data = fixed;
    root = parse_whole(data, n, &at, &trailing);
    if (trailing) {
        st = eb_error(EB_ERR_INVALID, "unexpected data after the JSON value at byte %zu", at);
    } else if (!root) {
        size_t deep = too_deep_at(data, n);
        st = deep != SIZE_MAX
                 ? eb_error(EB_ERR_INVALID,
                            "JSON nests deeper than %d arrays and objects (at byte %zu)",
                            CJSON_NESTING_LIMIT, deep)
                 : eb_error(EB_ERR_INVALID, "malformed JSON near byte %zu", at);
    } else if (!cJSON_IsObject(root)) {
        st = eb_error(EB_ERR_INVALID, "request body must be a JSON object");
    } else if ((out_of_range = eb_json_keep_exact(root, data, n)) != SIZE_MAX) {
        st = eb_error(EB_ERR_INVALID,
                      "the number at byte %zu is out of range: numbers may have up to %d"
                      " significant digits and a magnitude from 1e-%d to 1e%d",
                      out_of_range, EB_JSON_MAX_DIGITS, EB_JSON_MAX_EXPONENT, EB_JSON_MAX_EXPONENT);
    }
    free(fixed);
    if (st != EB_OK) {
        cJSON_Delete(root);
        return st;
    }
    *out = root;
    return EB_OK;
}

eb_status eb_json_string(const cJSON *obj, const char *name, bool required, size_t max_len,
                         const char **out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

    *out = NULL;
    if (!it || cJSON_IsNull(it)) {
        if (required)
            return eb_error(EB_ERR_INVALID, "field '%s' is required", name);
        return EB_OK;
    }
    if (!cJSON_IsString(it))
        return eb_error(EB_ERR_INVALID, "field '%s' must be a string", name);
    if (required && !it->valuestring[0])
        return eb_error(EB_ERR_INVALID, "field '%s' must not be empty", name);
    if (strlen(it->valuestring) > max_len)
        return eb_error(EB_ERR_INVALID, "field '%s' is longer than %zu bytes", name, max_len);
    *out = it->valuestring;
    return EB_OK;
}

eb_status eb_json_string_array(const cJSON *obj, const char *name, bool required, size_t max_items,
                               size_t max_len, const cJSON **out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    const cJSON *e;
    size_t n = 0;

    *out = NULL;
    if (!it || cJSON_IsNull(it)) {
        if (required)
            return eb_error(EB_ERR_INVALID, "field '%s' is required", name);
        return EB_OK;
    }
    if (!cJSON_IsArray(it))
        return eb_error(EB_ERR_INVALID, "field '%s' must be an array of strings", name);
    cJSON_ArrayForEach(e, it)
    {
        if (!cJSON_IsString(e))
            return eb_error(EB_ERR_INVALID, "field '%s' must be an array of strings", name);
        if (strlen(e->valuestring) > max_len)
            return eb_error(EB_ERR_INVALID, "an item of '%s' is longer than %zu bytes", name,
                            max_len);
        if (++n > max_items)
            return eb_error(EB_ERR_INVALID, "field '%s' has more than %zu items", name, max_items);
    }
    *out = it;
    return EB_OK;
}

bool eb_json_number_underflows(const cJSON *v)
{
    /* eb_json_keep_exact kept its text (beyond 1e-300), and a zero is never kept */
    return cJSON_IsNumber(v) && v->valuedouble == 0 && v->valuestring != NULL;
}

eb_status eb_json_known_members(const cJSON *obj, const char *const *known, size_t n)
{
    const cJSON *m;

    cJSON_ArrayForEach(m, obj)
    {
        size_t k = 0;
        eb_buf list = {0};
        eb_status st;

        while (k < n && strcmp(m->string, known[k]) != 0)
            k++;
        if (k < n)
            continue;
        for (k = 0; k < n; k++)
            eb_buf_printf(&list, "%s%s", k ? ", " : "", known[k]);
        st = eb_error(EB_ERR_INVALID, "member '%.64s' is not known here (known: %s)", m->string,
                      list.data ? list.data : "none");
        eb_buf_free(&list);
        return st;
    }
    return EB_OK;
}

eb_status eb_json_number(const cJSON *obj, const char *name, bool required, bool integral,
                         double min, double max, double *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    double v;

    if (!it || cJSON_IsNull(it)) {
        if (required)
            return eb_error(EB_ERR_INVALID, "field '%s' is required", name);
        return EB_OK;
    }
    if (!cJSON_IsNumber(it))
        return eb_error(EB_ERR_INVALID, "field '%s' must be a number", name);
    v = it->valuedouble;
    if (!isfinite(v) || (integral && v != floor(v)))
        return eb_error(EB_ERR_INVALID, "field '%s' must be %s", name,
                        integral ? "an integer" : "a finite number");
    if (v < min || v > max)
        return eb_error(EB_ERR_INVALID, "field '%s' must be between %g and %g", name, min, max);
    if (eb_json_number_underflows(it))
        return eb_error(EB_ERR_INVALID,
                        "field '%s' is too close to 0 to be stored (a double "
                        "holds it as 0)",
                        name);
    *out = v;
    return EB_OK;
}

void eb_json_add_str(cJSON *obj, const char *name, const char *value, bool null_if_empty)
{
    if (!value || (null_if_empty && !*value))
        cJSON_AddNullToObject(obj, name);
    else
        cJSON_AddStringToObject(obj, name, value);
}

static void print_value(eb_buf *b, const cJSON *v)
{
    const cJSON *c;
    bool first = true;

    switch (v->type & 0xFF) {
    case cJSON_False:
        eb_buf_puts(b, "false");
        break;
    case cJSON_True:
        eb_buf_puts(b, "true");
        break;
    case cJSON_Number:
        eb_buf_json_number_item(b, v);
        break;
    case cJSON_String:
        eb_buf_putc(b, '"');
        eb_buf_json_escape(b, v->valuestring ? v->valuestring : "");
        eb_buf_putc(b, '"');
        break;
    case cJSON_Raw:
        eb_buf_puts(b, v->valuestring ? v->valuestring : "null");
        break;
    case cJSON_Array:
    case cJSON_Object:
        eb_buf_putc(b, cJSON_IsArray(v) ? '[' : '{');
        for (c = v->child; c; c = c->next) {
            if (!first)
                eb_buf_putc(b, ',');
            first = false;
            if (cJSON_IsObject(v)) {
                eb_buf_putc(b, '"');
                eb_buf_json_escape(b, c->string ? c->string : "");
                eb_buf_puts(b, "\":");
            }
            print_value(b, c);
        }
        eb_buf_putc(b, cJSON_IsArray(v) ? ']' : '}');
        break;
    default: /* null, and cJSON_Invalid */
        eb_buf_puts(b, "null");
    }
}

/* Our own printing, not cJSON's: cJSON 1.7 prints a number with 15 digits whenever they read back
 * within a rounding error of it (0.30000000000000004 became 0.3); eb_buf_json_number keeps
 * every number exactly. */
char *eb_json_print(const cJSON *item)
{
    eb_buf b = {0};

    if (item)
        print_value(&b, item);
    return eb_buf_steal(&b); /* eb_buf keeps its text NUL-terminated */
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A name obj (an object) gives twice, or NULL: pairwise for small objects, sorted for large
 * ones (a 64 KiB object can have 10,000 members). */
static const char *repeated_name(const cJSON *obj)
{
    const cJSON *c, *d;
    const char **names, *r = NULL;
    size_t n = 0;

    for (c = obj->child; c; c = c->next)
        n++;
    if (n <= 16) {
        for (c = obj->child; c; c = c->next)
            for (d = c->next; d; d = d->next)
                if (strcmp(c->string ? c->string : "", d->string ? d->string : "") == 0)
                    return c->string ? c->string : "";
        return NULL;
    }
    names = eb_malloc(n * sizeof(*names));
    n = 0;
    for (c = obj->child; c; c = c->next)
        names[n++] = c->string ? c->string : "";
    qsort(names, n, sizeof(*names), cmp_name);
    for (size_t i = 1; i < n && !r; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            r = names[i];
    free(names);
    return r;
}

const char *eb_json_repeated_member(const cJSON *v)
{
    const cJSON *c;
    const char *r;

    if (cJSON_IsObject(v) && (r = repeated_name(v)) != NULL)
        return r;
    if (cJSON_IsObject(v) || cJSON_IsArray(v))
        for (c = v->child; c; c = c->next)
            if ((r = eb_json_repeated_member(c)) != NULL)
                return r;
    return NULL;
}

static bool digits(const char *s, int n, int min, int max)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    return v >= min && v <= max;
}

bool eb_rfc3339_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    const char *p;

    /* any number of fraction digits up to 64 characters in all (PostgreSQL reads at most 128) */
    if (n < 20 || n > 64)
        return false;
    if (!digits(s, 4, 1, 9999) || s[4] != '-' || !digits(s + 5, 2, 1, 12) || s[7] != '-' ||
        !digits(s + 8, 2, 1, 31) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, 0, 23) ||
        s[13] != ':' || !digits(s + 14, 2, 0, 59) || s[16] != ':' || !digits(s + 17, 2, 0, 59))
        return false;
    { /* the day exists in its month (2024-02-30 does not) */
        static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int y = atoi(s), m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (d > mdays[m - 1] || (m == 2 && d == 29 && !leap))
            return false;
    }
    p = s + 19;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
        return true;
    /* offsets as PostgreSQL takes them (no zone is more than 14 hours away) */
    return (*p == '+' || *p == '-') && digits(p + 1, 2, 0, 15) && p[3] == ':' &&
           digits(p + 4, 2, 0, 59) && p[6] == '\0';
}

void eb_buf_json_number_item(eb_buf *b, const cJSON *v)
{
    if (v->valuestring) /* its exact text (eb_json_keep_exact) */
        eb_buf_puts(b, v->valuestring);
    else
        eb_buf_json_number(b, v->valuedouble);
}

/* Integers exactly (no printf), other numbers as the shortest of %.15g..%.17g that reads back
 * as v, with '.' whatever the locale; non-finite numbers (which JSON has not) as null. */
void eb_buf_json_number(eb_buf *b, double v)
{
    char text[40];
    size_t k = 0;

    if (!isfinite(v)) {
        eb_buf_puts(b, "null");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        long long i = (long long)v;
        unsigned long long u = i < 0 ? 0ull - (unsigned long long)i : (unsigned long long)i;
        char *p = text + sizeof text;
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (i < 0)
            *--p = '-';
        eb_buf_append(b, p, (size_t)(text + sizeof text - p));
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
    for (size_t i = 0; text[i]; i++) {
        char ch = text[i];
        if ((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == 'e' || ch == 'E')
            text[k++] = ch;
        else if (k == 0 || text[k - 1] != '.')
            text[k++] = '.'; /* the locale's decimal point, whatever its bytes */
    }
    eb_buf_append(b, text, k);
}
