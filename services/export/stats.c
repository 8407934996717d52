/* export/stats.c -- dataset statistics of an export, in bounded memory.
 *
 * What is counted: records (exported and skipped, by reason), status, model, provider, project
 * and review state, tokens and cost, the start_time range, lengths of prompts, responses,
 * questions and SQL, query types, database types and tables of the records that carry SQL, and
 * redactions by kind. Everything has a fixed size whatever the number of records:
 *   - counters by key are open-addressing hash maps capped at EXPORT_STATS_KEYS_MAX keys; later
 *     keys are summed under "(other)";
 *   - lengths go to log-linear histograms: exact below 128, then 64 buckets per power of two, so
 *     a percentile (the middle of its bucket) is within 0.8% of the exact value; mean, minimum
 *     and maximum are exact;
 *   - distinct tables are listed up to EXPORT_STATS_TABLES_MAX names; past that the count comes
 *     from a HyperLogLog of 4096 registers (about 1.6% standard error).
 * All three merge exactly (counts add, registers take the maximum), so workers can count their
 * share and export_stats_merge() them.
 *
 * The record analysis the writers share lives here too: text lengths of input / output values,
 * the SQL of a trace (export_sql_find), its tables and query type. SQL is read by a small
 * tokenizer (comments, string literals, dollar quotes and quoted identifiers skipped as units)
 * and a few rules on the token stream; it does not parse SQL, so exotic statements may give
 * fewer or extra tables, never a crash or an unbounded cost (one pass, bounded output).
 *
 * Ownership: an export_stats owns its keys and scratch buffers; nothing is kept from the records
 * it reads. Threading: one thread at a time per export_stats. */
#include "stats.h"

#include "evalbus/mem.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    KEY_BYTES_MAX = 256, /* longer keys are cut (at a character boundary) */
    HIST_EXACT = 128,    /* values below are their own bucket */
    HIST_SUB_BITS = 6,   /* 64 buckets per power of two above */
    HIST_BUCKETS = HIST_EXACT + (64 - 7) * (1 << HIST_SUB_BITS),
    HLL_BITS = 12,
    HLL_REGS = 1 << HLL_BITS,
    CTE_MAX = 32,
};

#define TOKENS_MAX 9007199254740992.0 /* 2^53: the documented bound of token counts */

typedef enum len_kind { LEN_PROMPT, LEN_RESPONSE, LEN_QUESTION, LEN_SQL, LEN_COUNT } len_kind;

static const char *const len_names[] = {"prompt", "response", "question", "sql"};
_Static_assert(sizeof len_names / sizeof len_names[0] == LEN_COUNT, "a name per length kind");

static const char *const query_type_names[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"};
_Static_assert(sizeof query_type_names / sizeof query_type_names[0] == EXPORT_QUERY_TYPE_COUNT,
               "a name per query type");

/* ================================================================== small helpers */

static const cJSON *member(const cJSON *obj, const char *name)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

/* The string value of member name, or NULL (missing, null, not a string, or empty). */
static const char *member_str(const cJSON *obj, const char *name)
{
    const cJSON *v = member(obj, name);
    return cJSON_IsString(v) && v->valuestring && v->valuestring[0] ? v->valuestring : NULL;
}

/* A number member in [0, max]. */
static bool member_num(const cJSON *obj, const char *name, double max, double *out)
{
    const cJSON *v = member(obj, name);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= max))
        return false;
    *out = v->valuedouble;
    return true;
}

static char upper_ascii(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static char lower_ascii(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* True if s contains needle (lower-case ASCII) in any case. */
static bool contains_nocase(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && lower_ascii(s[i]) == needle[i])
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* Length of s[0..n) cut to at most max bytes, at a UTF-8 character boundary. */
static size_t clip_utf8(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

uint64_t export_utf8_length(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t cont = 0;

    for (size_t i = 0; i < n; i++)
        cont += (p[i] & 0xc0) == 0x80;
    return n - cont;
}

static uint64_t str_length(const char *s)
{
    return export_utf8_length(s, strlen(s));
}

/* ================================================================== time */

static bool num_field(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (era arithmetic: 400-year
 * cycles of 146097 days, years starting in March so that the leap day comes last). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

bool export_time_ns(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    int64_t frac = 0, scale = 100000000, secs;
    size_t i = 19;

    if (!s || strlen(s) < 20 || !num_field(s, 4, &y) || s[4] != '-' || !num_field(s + 5, 2, &mo) ||
        s[7] != '-' || !num_field(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !num_field(s + 11, 2, &h) || s[13] != ':' || !num_field(s + 14, 2, &mi) || s[16] != ':' ||
        !num_field(s + 17, 2, &sec))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        return false;
    if (s[i] == '.') {
        i++;
        if (s[i] < '0' || s[i] > '9')
            return false;
        for (; s[i] >= '0' && s[i] <= '9'; i++) {
            frac += (s[i] - '0') * scale;
            scale /= 10;
        }
    }
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        sign = s[i] == '+' ? 1 : -1;
        if (!num_field(s + i + 1, 2, &oh) || s[i + 3] != ':' || !num_field(s + i + 4, 2, &om) ||
            oh > 23 || om > 59)
            return false;
        i += 6;
    } else {
        return false;
    }
    if (s[i] != '\0')
        return false;
    secs =
        days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
    if (secs < 0 || secs > INT64_MAX / 1000000000 - 1)
        return false;
    *out = secs * 1000000000 + frac;
    return true;
}

/* ================================================================== text lengths */

static bool is_text_part_type(const char *type)
{
    return !type || !strcmp(type, "text") || !strcmp(type, "input_text") ||
           !strcmp(type, "output_text");
}

/* Code points of a message's text content: a string, or its text parts. */
static uint64_t content_length(const cJSON *content)
{
    uint64_t n = 0;
    const cJSON *part;

    if (cJSON_IsString(content))
        return str_length(content->valuestring);
    cJSON_ArrayForEach(part, content)
    {
        const char *text;
        if (cJSON_IsString(part))
            n += str_length(part->valuestring);
        else if (is_text_part_type(member_str(part, "type")) && (text = member_str(part, "text")))
            n += str_length(text);
    }
    return n;
}

bool export_io_text_length(const cJSON *io, uint64_t *out)
{
    const cJSON *msgs = cJSON_IsArray(io) ? io : member(io, "messages"), *m;
    const char *text;

    *out = 0;
    if (cJSON_IsString(io)) {
        *out = str_length(io->valuestring);
        return true;
    }
    if (cJSON_GetArraySize(msgs) > 0) {
        cJSON_ArrayForEach(m, msgs)
        {
            *out += content_length(member(m, "content"));
        }
        return true;
    }
    if ((text = member_str(io, "text"))) {
        *out = str_length(text);
        return true;
    }
    return false;
}

/* ================================================================== SQL tokens */

typedef enum tok_kind { TK_END, TK_WORD, TK_QUOTED, TK_PUNCT, TK_OTHER } tok_kind;

typedef struct sql_tok {
    tok_kind kind;
    const char *p; /* the word, the inside of a quoted name, or the punctuation byte */
    size_t n;
    char close; /* quoted: the closing quote (doubled inside to escape it) */
} sql_tok;

static bool word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c >= 0x80;
}

/* Skips a quoted run starting after the opening quote at *s; close doubled inside is an escaped
 * close. Returns the end of the inside; *s ends past the closing quote (or at the end). */
static const char *skip_quoted(const char **s, char close)
{
    const char *p = *s;
    for (;;) {
        if (*p == '\0') {
            *s = p;
            return p;
        }
        if (*p == close) {
            if (close != ']' && p[1] == close) {
                p += 2;
                continue;
            }
            *s = p + 1;
            return p;
        }
        p++;
    }
}

/* The next token of *s; comments, whitespace and string literals are passed over (literals come
 * back as TK_OTHER). */
static void lex(const char **s, sql_tok *t)
{
    const char *p = *s;

    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end ? end + 2 : p + strlen(p);
        } else {
            break;
        }
    }
    t->p = p;
    t->n = 1;
    t->close = 0;
    if (*p == '\0') {
        t->kind = TK_END;
        t->n = 0;
    } else if (*p == '\'') {
        p++;
        skip_quoted(&p, '\'');
        t->kind = TK_OTHER;
    } else if (*p == '"' || *p == '`' || *p == '[') {
        const char *end;
        t->close = *p == '[' ? ']' : *p;
        p++;
        t->p = p;
        end = skip_quoted(&p, t->close);
        t->n = (size_t)(end - t->p);
        t->kind = TK_QUOTED;
    } else if (*p == '$' && (p[1] == '$' || ((p[1] >= 'A' && p[1] <= 'Z') ||
                                             (p[1] >= 'a' && p[1] <= 'z') || p[1] == '_'))) {
        /* dollar quote $tag$ ... $tag$ (PostgreSQL) */
        const char *tag = p, *q = p + 1, *end;
        while (*q && *q != '$' && word_byte((unsigned char)*q))
            q++;
        if (*q == '$') {
            size_t tl = (size_t)(q - tag) + 1;
            p = q + 1;
            for (end = p; (end = strchr(end, '$')) != NULL; end++)
                if (!strncmp(end, tag, tl))
                    break;
            p = end ? end + tl : p + strlen(p);
        } else {
            p = q;
        }
        t->kind = TK_OTHER;
    } else if ((*p >= '0' && *p <= '9') || (*p == '$' && p[1] >= '0' && p[1] <= '9')) {
        p++;
        while (word_byte((unsigned char)*p) || *p == '.')
            p++;
        t->kind = TK_OTHER;
    } else if (word_byte((unsigned char)*p)) {
        while (word_byte((unsigned char)*p))
            p++;
        t->n = (size_t)(p - t->p);
        t->kind = TK_WORD;
    } else {
        p++;
        t->kind = TK_PUNCT;
    }
    *s = p;
}

static void peek(const char *s, sql_tok *t)
{
    lex(&s, t);
}

/* True if t is the word kw (upper-case) in any case. */
static bool is_kw(const sql_tok *t, const char *kw)
{
    if (t->kind != TK_WORD)
        return false;
    for (size_t i = 0; i < t->n; i++)
        if (kw[i] == '\0' || upper_ascii(t->p[i]) != kw[i])
            return false;
    return kw[t->n] == '\0';
}

static bool is_punct(const sql_tok *t, char c)
{
    return t->kind == TK_PUNCT && t->p[0] == c;
}

/* Words that end a table list or cannot be a table name or alias. */
static bool reserved(const sql_tok *t)
{
    static const char *const words[] = {
        "ALL",          "AND",       "ANY",         "AS",
        "ASC",          "BETWEEN",   "BY",          "CASE",
        "CROSS",        "DEFAULT",   "DELETE",      "DESC",
        "DISTINCT",     "DO",        "ELSE",        "END",
        "EXCEPT",       "EXISTS",    "FETCH",       "FOR",
        "FROM",         "FULL",      "GROUP",       "HAVING",
        "IN",           "INNER",     "INSERT",      "INTERSECT",
        "INTO",         "IS",        "JOIN",        "LATERAL",
        "LEFT",         "LIMIT",     "LOCKED",      "NATURAL",
        "NOT",          "NOWAIT",    "NULL",        "OF",
        "OFFSET",       "ON",        "ONLY",        "OR",
        "ORDER",        "OUTER",     "QUALIFY",     "RETURNING",
        "RIGHT",        "SELECT",    "SET",         "SKIP",
        "TABLE",        "THEN",      "UNION",       "UPDATE",
        "USING",        "VALUES",    "WHEN",        "WHERE",
        "WINDOW",       "WITH",      "RECURSIVE",   "STRAIGHT_JOIN",
        "MATERIALIZED", "PARTITION", "TABLESAMPLE",
    };
    if (t->kind != TK_WORD)
        return false;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (is_kw(t, words[i]))
            return true;
    return false;
}

static bool name_token(const sql_tok *t)
{
    return (t->kind == TK_WORD && !reserved(t)) || (t->kind == TK_QUOTED && t->n > 0);
}

/* Appends the normalized text of a name token (lower-case; doubled quotes undone) to name,
 * which holds *len bytes of at most cap. */
static void name_append(char *name, size_t *len, size_t cap, const sql_tok *t)
{
    for (size_t i = 0; i < t->n && *len < cap; i++) {
        if (t->kind == TK_QUOTED && t->p[i] == t->close && t->close != ']')
            i++; /* "" inside "..." */
        name[(*len)++] = lower_ascii(t->p[i]);
    }
}

export_query_type export_sql_query_type(const char *sql)
{
    static const char *const kws[] = {"SELECT", "INSERT", "UPDATE", "DELETE"};
    const char *s = sql ? sql : "";
    sql_tok t;
    int depth = 0;
    bool with = false;

    for (lex(&s, &t); t.kind != TK_END; lex(&s, &t)) {
        if (is_punct(&t, '(')) {
            depth++;
            continue;
        }
        if (is_punct(&t, ')')) {
            depth -= depth > 0;
            continue;
        }
        if (t.kind != TK_WORD) {
            if (!with)
                return EXPORT_QUERY_OTHER;
            continue;
        }
        if (!with) {
            if (is_kw(&t, "WITH")) {
                with = true;
                depth = 0;
                continue;
            }
            for (size_t i = 0; i < 4; i++)
                if (is_kw(&t, kws[i]))
                    return (export_query_type)i;
            return EXPORT_QUERY_OTHER;
        }
        if (depth == 0)
            for (size_t i = 0; i < 4; i++)
                if (is_kw(&t, kws[i]))
                    return (export_query_type)i;
    }
    return EXPORT_QUERY_OTHER;
}

const char *export_query_type_name(export_query_type t)
{
    return (unsigned)t < EXPORT_QUERY_TYPE_COUNT ? query_type_names[t] : "OTHER";
}

typedef struct table_scan {
    eb_buf *names;
    size_t base;  /* where this call's names start in names */
    size_t count; /* names appended */
    char cte[CTE_MAX][EXPORT_SQL_NAME_MAX + 1];
    size_t n_cte;
} table_scan;

/* Reads a (possibly qualified) name starting with the name token first; s is past first. */
static size_t read_name(const char **s, const sql_tok *first, char *name)
{
    size_t len = 0;
    sql_tok t;

    name_append(name, &len, EXPORT_SQL_NAME_MAX, first);
    for (;;) {
        peek(*s, &t);
        if (!is_punct(&t, '.'))
            break;
        lex(s, &t);
        peek(*s, &t);
        if (t.kind != TK_WORD && t.kind != TK_QUOTED)
            break; /* after a dot even a keyword is a name: s.order */
        lex(s, &t);
        if (len < EXPORT_SQL_NAME_MAX)
            name[len++] = '.';
        name_append(name, &len, EXPORT_SQL_NAME_MAX, &t);
    }
    len = clip_utf8(name, len, EXPORT_SQL_NAME_MAX);
    name[len] = '\0';
    return len;
}

static void add_table(table_scan *ts, const char *name, size_t len)
{
    const char *p = ts->names->data ? ts->names->data + ts->base : NULL;

    if (len == 0 || ts->count >= EXPORT_SQL_TABLES_MAX)
        return;
    for (size_t i = 0; i < ts->count; i++) {
        size_t n = strlen(p);
        if (n == len && !memcmp(p, name, len))
            return;
        p += n + 1;
    }
    eb_buf_append(ts->names, name, len + 1); /* with its NUL: names are NUL-separated */
    ts->count++;
}

/* Reads the table references after FROM / JOIN / INTO / UPDATE / USING. list: a comma-separated
 * list with aliases (FROM); func: a name followed by "(" is a function call, not a table. */
static void read_tables(const char **s, table_scan *ts, bool list, bool func)
{
    char name[EXPORT_SQL_NAME_MAX + 1];
    sql_tok t;

    for (;;) {
        size_t len;
        peek(*s, &t);
        while (is_kw(&t, "ONLY") || is_kw(&t, "LATERAL")) {
            lex(s, &t);
            peek(*s, &t);
        }
        if (!name_token(&t))
            return;
        lex(s, &t);
        len = read_name(s, &t, name);
        peek(*s, &t);
        if (func && is_punct(&t, '('))
            return;
        add_table(ts, name, len);
        if (!list)
            return;
        if (is_kw(&t, "AS")) {
            lex(s, &t);
            peek(*s, &t);
        }
        if (name_token(&t)) {
            lex(s, &t);
            peek(*s, &t);
        }
        if (!is_punct(&t, ','))
            return;
        lex(s, &t);
    }
}

size_t export_sql_tables(const char *sql, eb_buf *names)
{
    table_scan scan, *ts = &scan; /* on the stack: no allocation per statement */
    const char *s = sql ? sql : "";
    bool stmt[64] = {false}, in_with = false, want_cte = false;
    int depth = 0, with_depth = 0;
    sql_tok t, prev = {TK_END, "", 0, 0};
    size_t kept = 0, count;
    char *p, *q;

    ts->names = names;
    ts->base = names->len;
    ts->count = ts->n_cte = 0;
    for (lex(&s, &t); t.kind != TK_END; prev = t, lex(&s, &t)) {
        if (is_punct(&t, '(')) {
            if (depth < 63)
                stmt[++depth] = false;
            continue;
        }
        if (is_punct(&t, ')')) {
            depth -= depth > 0;
            continue;
        }
        if (is_punct(&t, ',') && in_with && depth == with_depth) {
            want_cte = true;
            continue;
        }
        if (want_cte && (t.kind == TK_WORD || t.kind == TK_QUOTED) && !is_kw(&t, "RECURSIVE")) {
            want_cte = false;
            if (ts->n_cte < CTE_MAX)
                read_name(&s, &t, ts->cte[ts->n_cte++]);
            continue;
        }
        if (t.kind != TK_WORD)
            continue;
        if (is_kw(&t, "WITH")) {
            in_with = want_cte = true;
            with_depth = depth;
            stmt[depth] = true;
        } else if (is_kw(&t, "SELECT") || is_kw(&t, "INSERT") || is_kw(&t, "DELETE") ||
                   is_kw(&t, "MERGE") || is_kw(&t, "REPLACE")) {
            stmt[depth] = true;
            if (depth == with_depth)
                in_with = false;
        } else if (is_kw(&t, "FROM")) {
            if (stmt[depth] && !is_kw(&prev, "DISTINCT"))
                read_tables(&s, ts, true, true);
        } else if (is_kw(&t, "JOIN") || is_kw(&t, "USING")) {
            read_tables(&s, ts, false, true);
        } else if (is_kw(&t, "INTO")) {
            read_tables(&s, ts, false, false);
        } else if (is_kw(&t, "UPDATE")) {
            stmt[depth] = true;
            if (depth == with_depth)
                in_with = false;
            read_tables(&s, ts, false, false);
        }
    }
    /* common table expressions are not tables */
    count = ts->count;
    p = q = names->data ? names->data + ts->base : NULL;
    for (size_t i = 0; i < count; i++) {
        size_t n = strlen(p) + 1;
        bool cte = false;
        for (size_t k = 0; k < ts->n_cte && !cte; k++)
            cte = !strcmp(p, ts->cte[k]);
        if (!cte) {
            memmove(q, p, n);
            q += n;
            kept++;
        }
        p += n;
    }
    if (q) {
        names->len = (size_t)(q - names->data);
        names->data[names->len] = '\0';
    }
    return kept;
}

/* ================================================================== SQL in a trace */

static bool sql_tool_name(const char *name)
{
    return name && (contains_nocase(name, "sql") || contains_nocase(name, "query"));
}

/* True if text starts (after comments / parentheses) with a word that begins SQL statements: a
 * tool's "query" argument may just as well be a web search. */
static bool looks_like_sql(const char *text)
{
    static const char *const starts[] = {
        "SELECT", "WITH",   "INSERT",  "UPDATE", "DELETE",   "MERGE",    "CREATE",
        "ALTER",  "DROP",   "EXPLAIN", "SHOW",   "DESCRIBE", "TRUNCATE", "REPLACE",
        "CALL",   "VALUES", "TABLE",   "GRANT",  "REVOKE",   "COPY",     "UPSERT",
    };
    const char *s = text;
    sql_tok t;

    do
        lex(&s, &t);
    while (is_punct(&t, '('));
    for (size_t i = 0; i < sizeof starts / sizeof starts[0]; i++)
        if (is_kw(&t, starts[i]))
            return true;
    return false;
}

static bool space_byte(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* SQL as a model often writes it, in a Markdown code fence: text that starts (after white
 * space) with ``` (and an info word such as "sql" on that line) gives what is inside, up to the
 * closing ``` or the end, white space trimmed, copied to buf (it may be ""). Other text is
 * given back as it is. text must not point into buf. */
static const char *unfence(const char *text, eb_buf *buf)
{
    const char *p = text, *body, *end, *nl;

    while (space_byte(*p))
        p++;
    if (strncmp(p, "```", 3) != 0)
        return text;
    p += 3;
    nl = strchr(p, '\n');
    end = strstr(p, "```");
    if (end && (!nl || end < nl)) {
        body = p; /* ```SELECT 1``` on one line */
    } else {
        body = nl ? nl + 1 : p + strlen(p);
        end = strstr(body, "```");
        if (!end)
            end = body + strlen(body);
    }
    while (body < end && space_byte(*body))
        body++;
    while (end > body && space_byte(end[-1]))
        end--;
    eb_buf_reset(buf);
    eb_buf_append(buf, body, (size_t)(end - body));
    eb_buf_putc(buf, '\0');
    buf->len--;
    return buf->data;
}

/* The "sql" (or else "query") string of a JSON object in text (out of its code fence), copied to
 * buf; NULL if none. */
static const char *sql_from_args(const char *text, eb_buf *buf)
{
    cJSON *args = NULL;
    const char *sql;
    const char *found = NULL;

    if (!text || !(args = cJSON_Parse(text)))
        return NULL;
    sql = member_str(args, "sql");
    if (!sql)
        sql = member_str(args, "query");
    if (sql && (sql = unfence(sql, buf)) != buf->data) {
        eb_buf_reset(buf);
        eb_buf_puts(buf, sql);
    }
    if (sql && looks_like_sql(buf->data))
        found = buf->data;
    cJSON_Delete(args);
    return found;
}

/* True if a tool result reports a failure: a JSON object with a non-null, non-false "error" or
 * with "success": false, or text starting with "error" followed by ':' or a space. */
static bool result_failed(const cJSON *result)
{
    const char *text = cJSON_IsString(result) ? result->valuestring : NULL;
    cJSON *obj = NULL;
    bool failed = false;

    if (!text)
        return false;
    if ((obj = cJSON_Parse(text)) != NULL && cJSON_IsObject(obj)) {
        const cJSON *err = member(obj, "error"), *ok = member(obj, "success");
        failed = (err && !cJSON_IsNull(err) && !cJSON_IsFalse(err) &&
                  !(cJSON_IsString(err) && err->valuestring[0] == '\0')) ||
                 cJSON_IsFalse(ok);
    } else {
        while (*text == ' ' || *text == '\n' || *text == '\t')
            text++;
        failed = strncasecmp(text, "error", 5) == 0 &&
                 (text[5] == ':' || text[5] == ' ' || text[5] == '\n');
    }
    cJSON_Delete(obj);
    return failed;
}

static void set_duration(export_sql_info *info, const cJSON *obj)
{
    int64_t a, b;
    if (export_time_ns(member_str(obj, "start_time"), &a) &&
        export_time_ns(member_str(obj, "end_time"), &b) && b >= a) {
        info->has_execution_ms = true;
        info->execution_ms = (double)(b - a) / 1e6;
    }
}

/* A tool call in the OpenAI shape (or the flat one): its name and arguments text. */
static void tool_call_parts(const cJSON *tc, const char **name, const char **args)
{
    const cJSON *fn = member(tc, "function");
    *name = member_str(fn, "name");
    *args = member_str(fn, "arguments");
    if (!*name)
        *name = member_str(tc, "name");
    if (!*args)
        *args = member_str(tc, "arguments");
}

static bool sql_from_tools(const cJSON *record, export_sql_info *info)
{
    const cJSON *tc, *m, *obs;
    const char *name, *args;

    cJSON_ArrayForEach(tc, member(record, "tool_calls"))
    {
        tool_call_parts(tc, &name, &args);
        if (sql_tool_name(name) && (info->sql = sql_from_args(args, &info->sql_buf))) {
            set_duration(info, tc);
            info->failed = result_failed(member(tc, "result"));
            return true;
        }
    }
    cJSON_ArrayForEach(m, member(member(record, "output"), "messages"))
    {
        cJSON_ArrayForEach(tc, member(m, "tool_calls"))
        {
            tool_call_parts(tc, &name, &args);
            if (sql_tool_name(name) && (info->sql = sql_from_args(args, &info->sql_buf)))
                return true;
        }
    }
    cJSON_ArrayForEach(obs, member(record, "observations"))
    {
        const char *type = member_str(obs, "type"), *status = member_str(obs, "status");
        if (!type || strcmp(type, "tool") || !sql_tool_name(member_str(obs, "name")))
            continue;
        if ((info->sql = sql_from_args(member_str(obs, "input"), &info->sql_buf))) {
            set_duration(info, obs);
            info->failed = status && !strcmp(status, "error");
            return true;
        }
    }
    return false;
}

/* Appends a message content's text (a string, or its text parts joined with "\n") to buf. */
static void content_text(const cJSON *content, eb_buf *buf)
{
    const cJSON *part;
    bool first = true;

    if (cJSON_IsString(content)) {
        eb_buf_puts(buf, content->valuestring);
        return;
    }
    cJSON_ArrayForEach(part, content)
    {
        const char *text = cJSON_IsString(part) ? part->valuestring : NULL;
        if (!text && is_text_part_type(member_str(part, "type")))
            text = member_str(part, "text");
        if (!text)
            continue;
        if (!first)
            eb_buf_putc(buf, '\n');
        eb_buf_puts(buf, text);
        first = false;
    }
}

/* The text of the last user message of an input value (a plain-text input is one). */
static const char *last_user_text(const cJSON *input, eb_buf *buf)
{
    const cJSON *msgs = cJSON_IsArray(input) ? input : member(input, "messages");
    int n = cJSON_GetArraySize(msgs);

    if (cJSON_IsString(input))
        return input->valuestring[0] ? input->valuestring : NULL;
    for (int i = n - 1; i >= 0; i--) {
        const cJSON *m = cJSON_GetArrayItem(msgs, i);
        const char *role = member_str(m, "role");
        if (!role || strcmp(role, "user"))
            continue;
        eb_buf_reset(buf);
        content_text(member(m, "content"), buf);
        if (buf->len)
            return buf->data;
    }
    return n > 0 ? NULL : member_str(input, "text");
}

bool export_sql_find(const cJSON *record, export_sql_info *info)
{
    const cJSON *meta = member(record, "metadata"), *sqlv = member(meta, "sql"), *sqlobj = NULL;
    const char *v;

    info->sql = info->question = info->database_type = info->database = NULL;
    info->failed = info->has_execution_ms = false;
    info->execution_ms = 0;
    if (cJSON_IsString(sqlv) && sqlv->valuestring[0]) {
        info->sql = unfence(sqlv->valuestring, &info->sql_buf);
    } else if (cJSON_IsObject(sqlv) && (v = member_str(sqlv, "query"))) {
        const cJSON *err = member(sqlv, "error");
        double ms;
        sqlobj = sqlv;
        info->sql = unfence(v, &info->sql_buf);
        if (member_num(sqlv, "execution_ms", DBL_MAX, &ms)) {
            info->has_execution_ms = true;
            info->execution_ms = ms;
        }
        info->failed = cJSON_IsFalse(member(sqlv, "success")) ||
                       (err && !cJSON_IsNull(err) && !cJSON_IsFalse(err) &&
                        !(cJSON_IsString(err) && err->valuestring[0] == '\0'));
    }
    if (info->sql && !info->sql[0])
        info->sql = NULL; /* an empty code fence */
    if (!info->sql)
        sql_from_tools(record, info);
    if (!(info->database_type = member_str(meta, "database_type")) &&
        !(info->database_type = member_str(sqlobj, "database_type")))
        info->database_type = member_str(meta, "db_system");
    if (!(info->database = member_str(meta, "database")))
        info->database = member_str(sqlobj, "database");
    if (!(info->question = member_str(meta, "question")))
        info->question = last_user_text(member(record, "input"), &info->question_buf);
    return info->sql != NULL;
}

void export_sql_info_release(export_sql_info *info)
{
    if (!info)
        return;
    eb_buf_free(&info->sql_buf);
    eb_buf_free(&info->question_buf);
    memset(info, 0, sizeof *info);
}

/* ================================================================== counters */

typedef struct cmap_slot {
    char *key; /* NULL: empty slot */
    size_t len;
    uint64_t hash;
    uint64_t count;
} cmap_slot;

typedef struct cmap {
    cmap_slot *slots;
    size_t cap, n;
    uint64_t other; /* counts of keys past the cap */
} cmap;

/* FNV-1a, then a 64-bit finalizer so that every bit depends on every input bit (the HyperLogLog
 * takes its register from the top bits). */
static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3u;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdu;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53u;
    h ^= h >> 33;
    return h;
}

/* The slot of key, or the empty slot where it would go. m->cap > 0. */
static cmap_slot *cmap_find(const cmap *m, const char *key, size_t len, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        cmap_slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && s->len == len && !memcmp(s->key, key, len)))
            return s;
    }
}

static void cmap_grow(cmap *m)
{
    cmap old = *m;

    m->cap = old.cap ? old.cap * 2 : 16;
    m->slots = eb_calloc(m->cap, sizeof *m->slots);
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key)
            *cmap_find(m, old.slots[i].key, old.slots[i].len, old.slots[i].hash) = old.slots[i];
    free(old.slots);
}

/* Adds by to key (len bytes, cut to KEY_BYTES_MAX); returns false when the key was new and the
 * map full (counted under other). */
static bool cmap_add(cmap *m, const char *key, size_t len, uint64_t by)
{
    cmap_slot *s;
    uint64_t h;

    len = clip_utf8(key, len, KEY_BYTES_MAX);
    h = hash_bytes(key, len);
    if (!m->cap)
        cmap_grow(m);
    s = cmap_find(m, key, len, h);
    if (s->key) {
        s->count += by;
        return true;
    }
    if (m->n >= EXPORT_STATS_KEYS_MAX) {
        m->other += by;
        return false;
    }
    if ((m->n + 1) * 2 > m->cap) {
        cmap_grow(m);
        s = cmap_find(m, key, len, h);
    }
    s->key = eb_strndup(key, len);
    s->len = len;
    s->hash = h;
    s->count = by;
    m->n++;
    return true;
}

static void cmap_add_str(cmap *m, const char *key)
{
    if (!key)
        key = "(none)";
    cmap_add(m, key, strlen(key), 1);
}

static void cmap_merge(cmap *dst, const cmap *src)
{
    for (size_t i = 0; i < src->cap; i++)
        if (src->slots[i].key)
            cmap_add(dst, src->slots[i].key, src->slots[i].len, src->slots[i].count);
    dst->other += src->other;
}

static void cmap_free(cmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static int slot_by_count(const void *a, const void *b)
{
    const cmap_slot *x = *(const cmap_slot *const *)a, *y = *(const cmap_slot *const *)b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->key, y->key);
}

static int slot_by_key(const void *a, const void *b)
{
    const cmap_slot *x = *(const cmap_slot *const *)a, *y = *(const cmap_slot *const *)b;
    return strcmp(x->key, y->key);
}

/* The slots in use, sorted; the caller frees the array. */
static const cmap_slot **cmap_sorted(const cmap *m, int (*cmp)(const void *, const void *))
{
    const cmap_slot **v = eb_calloc(m->n ? m->n : 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            v[k++] = &m->slots[i];
    qsort(v, k, sizeof *v, cmp);
    return v;
}

/* {"key": count, ...} by count (largest first), then "(other)". */
static cJSON *cmap_json(const cmap *m)
{
    cJSON *o = cJSON_CreateObject();
    const cmap_slot **v = cmap_sorted(m, slot_by_count);

    for (size_t i = 0; i < m->n; i++)
        cJSON_AddNumberToObject(o, v[i]->key, (double)v[i]->count);
    if (m->other)
        cJSON_AddNumberToObject(o, "(other)", (double)m->other);
    free(v);
    return o;
}

/* ================================================================== histograms */

typedef struct hist {
    uint64_t n, sum, min, max;
    uint64_t counts[HIST_BUCKETS];
} hist;

static size_t hist_index(uint64_t v)
{
    int k;
    if (v < HIST_EXACT)
        return (size_t)v;
    k = 63 - __builtin_clzll(v); /* 7..63 */
    return HIST_EXACT + (size_t)(k - 7) * (1u << HIST_SUB_BITS) +
           (size_t)((v >> (k - HIST_SUB_BITS)) - (1u << HIST_SUB_BITS));
}

/* Smallest value of bucket i and the bucket's width. */
static uint64_t hist_lower(size_t i, uint64_t *width)
{
    size_t j, k, sub;
    if (i < HIST_EXACT) {
        *width = 1;
        return i;
    }
    j = i - HIST_EXACT;
    k = j / (1u << HIST_SUB_BITS) + 7;
    sub = j % (1u << HIST_SUB_BITS);
    *width = (uint64_t)1 << (k - HIST_SUB_BITS);
    return ((uint64_t)(1u << HIST_SUB_BITS) + sub) << (k - HIST_SUB_BITS);
}

static void hist_add(hist *h, uint64_t v)
{
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += v;
    h->counts[hist_index(v)]++;
}

static void hist_merge(hist *dst, const hist *src)
{
    if (!src->n)
        return;
    if (!dst->n || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->n += src->n;
    dst->sum += src->sum;
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
}

/* The q-quantile (nearest rank): the middle of the bucket holding the ceil(q n)-th value. */
static uint64_t hist_quantile(const hist *h, double q)
{
    uint64_t rank = (uint64_t)ceil(q * (double)h->n), seen = 0;
    if (rank < 1)
        rank = 1;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t width, v = hist_lower(i, &width) + (width - 1) / 2;
            return v < h->min ? h->min : v > h->max ? h->max : v;
        }
    }
    return h->max;
}

static cJSON *hist_json(const hist *h)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)h->n);
    if (!h->n) {
        cJSON_AddNullToObject(o, "mean");
        cJSON_AddNullToObject(o, "min");
        cJSON_AddNullToObject(o, "p50");
        cJSON_AddNullToObject(o, "p95");
        cJSON_AddNullToObject(o, "max");
        return o;
    }
    cJSON_AddNumberToObject(o, "mean", round((double)h->sum / (double)h->n * 10) / 10);
    cJSON_AddNumberToObject(o, "min", (double)h->min);
    cJSON_AddNumberToObject(o, "p50", (double)hist_quantile(h, 0.50));
    cJSON_AddNumberToObject(o, "p95", (double)hist_quantile(h, 0.95));
    cJSON_AddNumberToObject(o, "max", (double)h->max);
    return o;
}

/* ================================================================== distinct estimate */

static void hll_add(uint8_t *regs, uint64_t h)
{
    size_t idx = (size_t)(h >> (64 - HLL_BITS));
    uint64_t w = (h << HLL_BITS) | ((uint64_t)1 << (HLL_BITS - 1)); /* never 0 */
    uint8_t rank = (uint8_t)(__builtin_clzll(w) + 1);
    if (rank > regs[idx])
        regs[idx] = rank;
}

static double hll_estimate(const uint8_t *regs)
{
    double m = HLL_REGS, sum = 0, alpha = 0.7213 / (1 + 1.079 / m), e;
    size_t zeros = 0;

    for (size_t i = 0; i < HLL_REGS; i++) {
        sum += ldexp(1.0, -regs[i]);
        zeros += regs[i] == 0;
    }
    e = alpha * m * m / sum;
    if (e <= 2.5 * m && zeros)
        e = m * log(m / (double)zeros); /* linear counting for small sets */
    return e;
}

/* ================================================================== statistics */

struct export_stats {
    uint64_t records, skipped, successful, failed, sql_records;
    cmap skip_reasons, by_status, by_model, by_provider, by_project, by_review_state;
    cmap by_database_type, tables, redactions;
    uint64_t by_query_type[EXPORT_QUERY_TYPE_COUNT];
    uint64_t redactions_total;
    uint64_t tok_in, tok_out, tok_total;
    double cost, cost_c; /* Kahan sum and its compensation */
    bool has_time;
    int64_t min_ns, max_ns;
    char min_time[48], max_time[48];
    hist len[LEN_COUNT];
    uint8_t hll[HLL_REGS];
    export_sql_info sql; /* scratch of export_stats_add() */
    eb_buf names;        /* scratch: table names */
};

export_stats *export_stats_new(void)
{
    return eb_calloc(1, sizeof(export_stats));
}

void export_stats_free(export_stats *s)
{
    if (!s)
        return;
    cmap_free(&s->skip_reasons);
    cmap_free(&s->by_status);
    cmap_free(&s->by_model);
    cmap_free(&s->by_provider);
    cmap_free(&s->by_project);
    cmap_free(&s->by_review_state);
    cmap_free(&s->by_database_type);
    cmap_free(&s->tables);
    cmap_free(&s->redactions);
    export_sql_info_release(&s->sql);
    eb_buf_free(&s->names);
    free(s);
}

static void add_cost(export_stats *s, double v)
{
    double y = v - s->cost_c, t = s->cost + y;
    s->cost_c = (t - s->cost) - y;
    s->cost = t;
}

static void add_time(export_stats *s, const char *text, int64_t ns)
{
    if (!s->has_time || ns < s->min_ns) {
        s->min_ns = ns;
        snprintf(s->min_time, sizeof s->min_time, "%s", text);
    }
    if (!s->has_time || ns > s->max_ns) {
        s->max_ns = ns;
        snprintf(s->max_time, sizeof s->max_time, "%s", text);
    }
    s->has_time = true;
}

static void add_table_name(export_stats *s, const char *name)
{
    size_t len = strlen(name);
    hll_add(s->hll, hash_bytes(name, clip_utf8(name, len, KEY_BYTES_MAX)));
    cmap_add(&s->tables, name, len, 1);
}

void export_stats_add_sql(export_stats *s, const cJSON *record, const export_sql_info *sql)
{
    const char *status, *start;
    const cJSON *usage;
    double in = 0, out = 0, total = 0, cost = 0;
    bool has_in, has_out;
    uint64_t len;
    int64_t ns;

    if (!s || !cJSON_IsObject(record))
        return;
    s->records++;
    status = member_str(record, "status");
    cmap_add_str(&s->by_status, status);
    if (status && !strcmp(status, "error"))
        s->failed++;
    else
        s->successful++;
    cmap_add_str(&s->by_model, member_str(record, "model"));
    cmap_add_str(&s->by_provider, member_str(record, "provider"));
    cmap_add_str(&s->by_project, member_str(record, "project"));
    cmap_add_str(&s->by_review_state, member_str(record, "review_state"));

    usage = member(record, "usage");
    has_in = member_num(usage, "input_tokens", TOKENS_MAX, &in);
    has_out = member_num(usage, "output_tokens", TOKENS_MAX, &out);
    s->tok_in += (uint64_t)in;
    s->tok_out += (uint64_t)out;
    if (member_num(usage, "total_tokens", TOKENS_MAX, &total))
        s->tok_total += (uint64_t)total;
    else if (has_in || has_out)
        s->tok_total += (uint64_t)in + (uint64_t)out;
    if (member_num(record, "cost_usd", DBL_MAX, &cost))
        add_cost(s, cost);
    if ((start = member_str(record, "start_time")) && export_time_ns(start, &ns))
        add_time(s, start, ns);

    if (export_io_text_length(member(record, "input"), &len))
        hist_add(&s->len[LEN_PROMPT], len);
    if (export_io_text_length(member(record, "output"), &len))
        hist_add(&s->len[LEN_RESPONSE], len);

    if (sql && sql->sql) {
        size_t n;
        const char *p;
        s->sql_records++;
        s->by_query_type[export_sql_query_type(sql->sql)]++;
        cmap_add_str(&s->by_database_type, sql->database_type);
        hist_add(&s->len[LEN_SQL], str_length(sql->sql));
        if (sql->question)
            hist_add(&s->len[LEN_QUESTION], str_length(sql->question));
        eb_buf_reset(&s->names);
        n = export_sql_tables(sql->sql, &s->names);
        p = s->names.data;
        for (size_t i = 0; i < n; i++, p += strlen(p) + 1)
            add_table_name(s, p);
    }
}

void export_stats_add(export_stats *s, const cJSON *record)
{
    if (!s)
        return;
    export_sql_find(record, &s->sql);
    export_stats_add_sql(s, record, &s->sql);
}

void export_stats_skip(export_stats *s, const char *reason)
{
    if (!s)
        return;
    s->skipped++;
    cmap_add_str(&s->skip_reasons, reason);
}

void export_stats_add_redactions(export_stats *s, const redact_stats *rs, const redactor *r)
{
    size_t kinds;

    if (!s || !rs || !rs->total)
        return;
    kinds = r ? redact_kind_count(r) : 0;
    s->redactions_total += rs->total;
    for (size_t k = 0; k < REDACT_KIND_MAX; k++) {
        const char *name = k < kinds ? redact_kind_name(r, k) : NULL;
        if (!name)
            name = "(unknown)";
        if (rs->count[k])
            cmap_add(&s->redactions, name, strlen(name), rs->count[k]);
    }
}

void export_stats_merge(export_stats *dst, const export_stats *src)
{
    if (!dst || !src)
        return;
    dst->records += src->records;
    dst->skipped += src->skipped;
    dst->successful += src->successful;
    dst->failed += src->failed;
    dst->sql_records += src->sql_records;
    cmap_merge(&dst->skip_reasons, &src->skip_reasons);
    cmap_merge(&dst->by_status, &src->by_status);
    cmap_merge(&dst->by_model, &src->by_model);
    cmap_merge(&dst->by_provider, &src->by_provider);
    cmap_merge(&dst->by_project, &src->by_project);
    cmap_merge(&dst->by_review_state, &src->by_review_state);
    cmap_merge(&dst->by_database_type, &src->by_database_type);
    cmap_merge(&dst->tables, &src->tables);
    cmap_merge(&dst->redactions, &src->redactions);
    for (size_t i = 0; i < EXPORT_QUERY_TYPE_COUNT; i++)
        dst->by_query_type[i] += src->by_query_type[i];
    dst->redactions_total += src->redactions_total;
    dst->tok_in += src->tok_in;
    dst->tok_out += src->tok_out;
    dst->tok_total += src->tok_total;
    add_cost(dst, src->cost);
    add_cost(dst, -src->cost_c);
    if (src->has_time) {
        add_time(dst, src->min_time, src->min_ns);
        add_time(dst, src->max_time, src->max_ns);
    }
    for (size_t i = 0; i < LEN_COUNT; i++)
        hist_merge(&dst->len[i], &src->len[i]);
    for (size_t i = 0; i < HLL_REGS; i++)
        if (src->hll[i] > dst->hll[i])
            dst->hll[i] = src->hll[i];
}

uint64_t export_stats_records(const export_stats *s)
{
    return s ? s->records : 0;
}

uint64_t export_stats_skipped(const export_stats *s)
{
    return s ? s->skipped : 0;
}

static cJSON *tables_json(const export_stats *s)
{
    cJSON *o = cJSON_CreateObject(), *names = cJSON_CreateArray();
    const cmap_slot **v = cmap_sorted(&s->tables, slot_by_key);
    bool estimated = s->tables.other > 0;
    double distinct = (double)s->tables.n;

    if (estimated) {
        double e = round(hll_estimate(s->hll));
        distinct = e > distinct ? e : distinct;
    }
    cJSON_AddNumberToObject(o, "distinct", distinct);
    cJSON_AddBoolToObject(o, "estimated", estimated);
    for (size_t i = 0; i < s->tables.n; i++)
        cJSON_AddItemToArray(names, cJSON_CreateString(v[i]->key));
    cJSON_AddItemToObject(o, "names", names);
    free(v);
    return o;
}

cJSON *export_stats_json(const export_stats *s)
{
    cJSON *o = cJSON_CreateObject(), *t, *sql, *qt, *red;

    if (!s)
        return o;
    cJSON_AddNumberToObject(o, "records", (double)s->records);
    cJSON_AddNumberToObject(o, "skipped", (double)s->skipped);
    cJSON_AddItemToObject(o, "skipped_by_reason", cmap_json(&s->skip_reasons));
    cJSON_AddNumberToObject(o, "successful", (double)s->successful);
    cJSON_AddNumberToObject(o, "failed", (double)s->failed);
    cJSON_AddItemToObject(o, "by_status", cmap_json(&s->by_status));
    cJSON_AddItemToObject(o, "by_model", cmap_json(&s->by_model));
    cJSON_AddItemToObject(o, "by_provider", cmap_json(&s->by_provider));
    cJSON_AddItemToObject(o, "by_project", cmap_json(&s->by_project));
    cJSON_AddItemToObject(o, "by_review_state", cmap_json(&s->by_review_state));

    t = cJSON_AddObjectToObject(o, "tokens");
    cJSON_AddNumberToObject(t, "input", (double)s->tok_in);
    cJSON_AddNumberToObject(t, "output", (double)s->tok_out);
    cJSON_AddNumberToObject(t, "total", (double)s->tok_total);
    /* to 1e-9; past 1e6 a double has no such digits (and s->cost * 1e9 could overflow) */
    cJSON_AddNumberToObject(o, "cost_usd",
                            fabs(s->cost) < 1e6 ? round(s->cost * 1e9) / 1e9 : s->cost);

    t = cJSON_AddObjectToObject(o, "start_time");
    if (s->has_time) {
        cJSON_AddStringToObject(t, "min", s->min_time);
        cJSON_AddStringToObject(t, "max", s->max_time);
    } else {
        cJSON_AddNullToObject(t, "min");
        cJSON_AddNullToObject(t, "max");
    }

    t = cJSON_AddObjectToObject(o, "lengths");
    cJSON_AddStringToObject(t, "unit", "code_points");
    for (size_t i = 0; i < LEN_COUNT; i++)
        cJSON_AddItemToObject(t, len_names[i], hist_json(&s->len[i]));

    sql = cJSON_AddObjectToObject(o, "sql");
    cJSON_AddNumberToObject(sql, "records", (double)s->sql_records);
    qt = cJSON_AddObjectToObject(sql, "by_query_type");
    for (size_t i = 0; i < EXPORT_QUERY_TYPE_COUNT; i++)
        cJSON_AddNumberToObject(qt, query_type_names[i], (double)s->by_query_type[i]);
    cJSON_AddItemToObject(sql, "by_database_type", cmap_json(&s->by_database_type));
    cJSON_AddItemToObject(sql, "tables", tables_json(s));

    red = cJSON_AddObjectToObject(o, "redactions");
    cJSON_AddNumberToObject(red, "total", (double)s->redactions_total);
    cJSON_AddItemToObject(red, "by_kind", cmap_json(&s->redactions));
    return o;
}
