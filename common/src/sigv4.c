/* sigv4.c -- AWS Signature Version 4 for S3-compatible object stores.
 * Every public function runs the same pipeline, sign_request(): validate the request, build the
 * canonical headers (lower-cased names, values trimmed with inner runs of blanks folded to one
 * space, repeated names joined with ',' in the order given, sorted by name), the signed-header
 * list, the canonical query (names and values RFC 3986-encoded, sorted by name then value; in
 * query mode the X-Amz-* parameters join them), the canonical URI (by path rule: S3 uses the
 * request-line path as sent, other services encode it again, optionally after removing dot and
 * empty segments), then the canonical request, the string to sign and the HMAC chain of the
 * signing key. The caller picks the piece it wants. Work happens in local buffers and reaches
 * the caller's buffer only on success, so a failed call leaves it untouched.
 * Ownership: inputs are borrowed; outputs are appended to the caller's eb_buf. The secret key,
 * "AWS4"+secret and every derived key are wiped before their memory is released.
 * Threading: reentrant; no global state. */
#include "evalbus/sigv4.h"

#include "evalbus/crypto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char upper_hex[] = "0123456789ABCDEF";

/* The query parameters the signer owns in query mode; a request may not bring its own. */
static const char *const reserved_query[] = {
    "X-Amz-Algorithm",     "X-Amz-Credential", "X-Amz-Date",           "X-Amz-Expires",
    "X-Amz-SignedHeaders", "X-Amz-Signature",  "X-Amz-Security-Token",
};

typedef struct header_ent {
    char *lname;       /* lower-cased copy, owned */
    const char *value; /* borrowed */
    size_t order;      /* position given, to keep repeated names in order */
} header_ent;

typedef struct query_ent {
    char *name; /* encoded, owned */
    char *value;
} query_ent;

/* Everything a signature is made of. */
typedef struct signed_parts {
    char date[17]; /* 20130524T000000Z */
    char day[9];   /* 20130524 */
    eb_buf scope;  /* 20130524/us-east-1/s3/aws4_request */
    eb_buf signed_headers;
    eb_buf query; /* canonical query, also the query of a presigned URL */
    eb_buf creq;
    eb_buf sts;
    char signature[65];
    const char *payload_hash;
    const char *token; /* NULL when there is none */
} signed_parts;

static void parts_free(signed_parts *p)
{
    eb_buf_free(&p->scope);
    eb_buf_free(&p->signed_headers);
    eb_buf_free(&p->query);
    eb_buf_free(&p->creq);
    eb_buf_free(&p->sts);
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

void eb_sigv4_uri_encode(eb_buf *out, const char *s, size_t n, bool keep_slash)
{
    eb_buf_reserve(out, n);
    out->data[out->len] = '\0'; /* terminated even when nothing is appended */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            eb_buf_putc(out, (char)c);
        } else {
            char esc[3] = {'%', upper_hex[c >> 4], upper_hex[c & 15]};
            eb_buf_append(out, esc, 3);
        }
    }
}

eb_status eb_sigv4_amz_date(time_t t, char out[17])
{
    struct tm tm;

    if (t < 0 || !gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999)
        return eb_error(EB_ERR_INVALID, "sigv4: signing time out of range");
    if (strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
        return eb_error(EB_ERR_INVALID, "sigv4: signing time out of range");
    return EB_OK;
}

static void hmac_str(const unsigned char *key, size_t klen, const char *msg, unsigned char out[32])
{
    eb_hmac_sha256(key, klen, msg, strlen(msg), out);
}

void eb_sigv4_signing_key(const char *secret_key, const char *date, const char *region,
                          const char *service, unsigned char out[32])
{
    size_t slen = strlen(secret_key);
    eb_buf k_secret = {0};
    unsigned char k_date[32], k_region[32], k_service[32];

    eb_buf_reserve(&k_secret, 4 + slen); /* sized once: no realloc leaves a copy behind */
    eb_buf_append(&k_secret, "AWS4", 4);
    eb_buf_append(&k_secret, secret_key, slen);
    hmac_str((const unsigned char *)k_secret.data, k_secret.len, date, k_date);
    hmac_str(k_date, sizeof k_date, region, k_region);
    hmac_str(k_region, sizeof k_region, service, k_service);
    hmac_str(k_service, sizeof k_service, "aws4_request", out);
    eb_cleanse(k_date, sizeof k_date);
    eb_cleanse(k_region, sizeof k_region);
    eb_cleanse(k_service, sizeof k_service);
    eb_cleanse(k_secret.data, k_secret.len);
    eb_buf_free(&k_secret);
}

static bool has_token(const eb_sigv4_request *r)
{
    return r->session_token && *r->session_token;
}

/* ---- validation ---------------------------------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    return is_unreserved(c) || (c && strchr("!#$%&'*+^`|", c));
}

/* Credential parts: printable, no blanks, no '/' (the scope separator). */
static eb_status check_scope_part(const char *what, const char *s)
{
    if (!s || !*s)
        return eb_error(EB_ERR_INVALID, "sigv4: %s is required", what);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || *p == '/')
            return eb_error(EB_ERR_INVALID, "sigv4: %s has a character it cannot hold", what);
    return EB_OK;
}

static bool is_hex64(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 64;
}

static eb_status check_request(const eb_sigv4_request *r, eb_sigv4_mode mode)
{
    eb_status st;

    if (!r)
        return eb_error(EB_ERR_INVALID, "sigv4: no request");
    if (mode != EB_SIGV4_HEADER && mode != EB_SIGV4_QUERY)
        return eb_error(EB_ERR_INVALID, "sigv4: unknown signing mode");
    if (!r->method || !*r->method)
        return eb_error(EB_ERR_INVALID, "sigv4: method is required");
    for (const char *p = r->method; *p; p++)
        if (*p < 'A' || *p > 'Z')
            return eb_error(EB_ERR_INVALID, "sigv4: method must be upper-case letters");
    if (!r->path || (*r->path && *r->path != '/'))
        return eb_error(EB_ERR_INVALID, "sigv4: path must start with '/'");
    for (const unsigned char *p = (const unsigned char *)r->path; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '?' || *p == '#')
            return eb_error(EB_ERR_INVALID, "sigv4: path has a control character, '?' or '#'");
    if (r->path_rule != EB_SIGV4_PATH_S3 && r->path_rule != EB_SIGV4_PATH_ENCODE &&
        r->path_rule != EB_SIGV4_PATH_NORMALIZE)
        return eb_error(EB_ERR_INVALID, "sigv4: unknown path rule");
    if ((r->nquery && !r->query) || (r->nheaders && !r->headers))
        return eb_error(EB_ERR_INVALID, "sigv4: pairs missing");
    if ((st = check_scope_part("region", r->region)) != EB_OK ||
        (st = check_scope_part("service", r->service)) != EB_OK ||
        (st = check_scope_part("access key", r->access_key)) != EB_OK)
        return st;
    if (!r->secret_key || !*r->secret_key)
        return eb_error(EB_ERR_INVALID, "sigv4: secret key is required");
    if (r->session_token)
        for (const unsigned char *p = (const unsigned char *)r->session_token; *p; p++)
            if (*p <= 0x20 || *p >= 0x7f)
                return eb_error(EB_ERR_INVALID, "sigv4: session token has a character it "
                                                "cannot hold");
    if (r->payload_hash && strcmp(r->payload_hash, EB_SIGV4_UNSIGNED_PAYLOAD) != 0 &&
        !is_hex64(r->payload_hash))
        return eb_error(EB_ERR_INVALID, "sigv4: payload hash must be 64 lowercase hex digits or "
                                        "UNSIGNED-PAYLOAD");
    if (mode == EB_SIGV4_QUERY && (r->expires < 1 || r->expires > EB_SIGV4_MAX_EXPIRES))
        return eb_error(EB_ERR_INVALID, "sigv4: expires must be 1 to %u seconds",
                        EB_SIGV4_MAX_EXPIRES);
    for (size_t i = 0; i < r->nquery; i++)
        if (!r->query[i].name)
            return eb_error(EB_ERR_INVALID, "sigv4: query parameter without a name");
    return EB_OK;
}

/* ---- canonical headers --------------------------------------------------------------------- */

/* Value trimmed, inner runs of blanks folded to one space. */
static void put_header_value(eb_buf *out, const char *v)
{
    bool blank = false;
    bool any = false;

    for (; v && *v; v++) {
        if (*v == ' ' || *v == '\t') {
            blank = true;
            continue;
        }
        if (blank && any)
            eb_buf_putc(out, ' ');
        eb_buf_putc(out, *v);
        blank = false;
        any = true;
    }
}

static int header_cmp(const void *a, const void *b)
{
    const header_ent *x = a, *y = b;
    int c = strcmp(x->lname, y->lname);

    if (c)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static bool reserved_header(const eb_sigv4_request *r, eb_sigv4_mode mode, const char *lname)
{
    if (mode != EB_SIGV4_HEADER)
        return false;
    if (!strcmp(lname, "x-amz-date") || !strcmp(lname, "authorization"))
        return true;
    if (has_token(r) && !strcmp(lname, "x-amz-security-token"))
        return true;
    return r->content_sha256_header && !strcmp(lname, "x-amz-content-sha256");
}

static void add_header(header_ent *ents, size_t *n, const char *lname, const char *value)
{
    ents[*n] = (header_ent){eb_strdup(lname), value, *n};
    (*n)++;
}

/* Appends "name:value\n" lines to headers and "a;b" to p->signed_headers. */
static eb_status canonical_headers(const eb_sigv4_request *r, eb_sigv4_mode mode, signed_parts *p,
                                   eb_buf *headers)
{
    eb_status st = EB_OK;
    size_t n = 0, cap = r->nheaders + 3;
    header_ent *ents = eb_calloc(cap, sizeof *ents);
    bool host = false;

    for (size_t i = 0; i < r->nheaders; i++) {
        const eb_sigv4_pair *h = &r->headers[i];
        if (!h->name || !*h->name) {
            st = eb_error(EB_ERR_INVALID, "sigv4: header without a name");
            goto cleanup;
        }
        for (const unsigned char *c = (const unsigned char *)h->name; *c; c++)
            if (!is_tchar(*c)) {
                st = eb_error(EB_ERR_INVALID, "sigv4: header name has a character it cannot hold");
                goto cleanup;
            }
        for (const unsigned char *c = (const unsigned char *)(h->value ? h->value : ""); *c; c++)
            if ((*c < 0x20 && *c != '\t') || *c == 0x7f) {
                st = eb_error(EB_ERR_INVALID, "sigv4: header %s has a control character", h->name);
                goto cleanup;
            }
        ents[n].lname = eb_strdup(h->name);
        for (char *c = ents[n].lname; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        ents[n].value = h->value;
        ents[n].order = n;
        n++;
        if (!strcmp(ents[n - 1].lname, "host"))
            host = true;
        if (reserved_header(r, mode, ents[n - 1].lname)) {
            st = eb_error(EB_ERR_INVALID, "sigv4: header %s is added by the signer", h->name);
            goto cleanup;
        }
    }
    if (!host) {
        st = eb_error(EB_ERR_INVALID, "sigv4: the Host header is required");
        goto cleanup;
    }
    if (mode == EB_SIGV4_HEADER) {
        add_header(ents, &n, "x-amz-date", p->date);
        if (r->content_sha256_header)
            add_header(ents, &n, "x-amz-content-sha256", p->payload_hash);
        if (p->token && !r->omit_session_token)
            add_header(ents, &n, "x-amz-security-token", p->token);
    }
    qsort(ents, n, sizeof *ents, header_cmp);
    for (size_t i = 0; i < n; i++) {
        bool first = i == 0 || strcmp(ents[i].lname, ents[i - 1].lname) != 0;
        bool last = i + 1 == n || strcmp(ents[i].lname, ents[i + 1].lname) != 0;
        if (first) {
            if (i)
                eb_buf_putc(&p->signed_headers, ';');
            eb_buf_puts(&p->signed_headers, ents[i].lname);
            eb_buf_puts(headers, ents[i].lname);
            eb_buf_putc(headers, ':');
        } else {
            eb_buf_putc(headers, ',');
        }
        put_header_value(headers, ents[i].value);
        if (last)
            eb_buf_putc(headers, '\n');
    }
cleanup:
    for (size_t i = 0; i < n; i++)
        free(ents[i].lname);
    free(ents);
    return st;
}

/* ---- canonical query ----------------------------------------------------------------------- */

static int query_cmp(const void *a, const void *b)
{
    const query_ent *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : strcmp(x->value, y->value);
}

static char *encoded(const char *s)
{
    eb_buf b = {0};

    eb_sigv4_uri_encode(&b, s ? s : "", s ? strlen(s) : 0, false);
    return eb_buf_steal(&b);
}

static eb_status canonical_query(const eb_sigv4_request *r, eb_sigv4_mode mode, signed_parts *p)
{
    eb_status st = EB_OK;
    size_t n = 0, cap = r->nquery + 6;
    query_ent *ents = eb_calloc(cap, sizeof *ents);
    eb_buf tmp = {0};

    for (size_t i = 0; i < r->nquery; i++) {
        if (mode == EB_SIGV4_QUERY)
            for (size_t k = 0; k < sizeof reserved_query / sizeof *reserved_query; k++)
                if (!strcasecmp(r->query[i].name, reserved_query[k])) {
                    st = eb_error(EB_ERR_INVALID,
                                  "sigv4: query parameter %s is added by the "
                                  "signer",
                                  reserved_query[k]);
                    goto cleanup;
                }
        ents[n].name = encoded(r->query[i].name);
        ents[n].value = encoded(r->query[i].value);
        n++;
    }
    if (mode == EB_SIGV4_QUERY) {
        eb_buf_printf(&tmp, "%s/%s", r->access_key, p->scope.data);
        ents[n++] = (query_ent){eb_strdup("X-Amz-Algorithm"), eb_strdup(EB_SIGV4_ALGORITHM)};
        ents[n++] = (query_ent){eb_strdup("X-Amz-Credential"), encoded(tmp.data)};
        ents[n++] = (query_ent){eb_strdup("X-Amz-Date"), eb_strdup(p->date)};
        ents[n++] = (query_ent){eb_strdup("X-Amz-Expires"), eb_asprintf("%u", r->expires)};
        ents[n++] = (query_ent){eb_strdup("X-Amz-SignedHeaders"), encoded(p->signed_headers.data)};
        if (p->token && !r->omit_session_token)
            ents[n++] = (query_ent){eb_strdup("X-Amz-Security-Token"), encoded(p->token)};
    }
    qsort(ents, n, sizeof *ents, query_cmp);
    eb_buf_append(&p->query, "", 0);
    for (size_t i = 0; i < n; i++) {
        if (i)
            eb_buf_putc(&p->query, '&');
        eb_buf_printf(&p->query, "%s=%s", ents[i].name, ents[i].value);
    }
cleanup:
    for (size_t i = 0; i < n; i++) {
        free(ents[i].name);
        free(ents[i].value);
    }
    free(ents);
    eb_buf_free(&tmp);
    return st;
}

/* ---- canonical URI ------------------------------------------------------------------------- */

/* Removes empty, "." and ".." segments; keeps a trailing slash (a trailing "." or ".." leaves
 * one too, as in RFC 3986 section 5.2.4). */
static void normalize_path(eb_buf *out, const char *path)
{
    const char *s = path;
    bool trailing = false;

    eb_buf_reserve(out, strlen(path) + 1);
    while (*s) {
        while (*s == '/')
            s++;
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0) {
            trailing = s > path && s[-1] == '/';
            break;
        }
        trailing = false;
        if (len == 1 && s[0] == '.') {
            trailing = !e || !e[1];
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            char *slash = out->len ? strrchr(out->data, '/') : NULL;
            out->len = slash ? (size_t)(slash - out->data) : 0;
            out->data[out->len] = '\0';
            trailing = !e || !e[1];
        } else {
            eb_buf_putc(out, '/');
            eb_buf_append(out, s, len);
        }
        s += len;
    }
    if (out->len == 0 || trailing)
        eb_buf_putc(out, '/');
}

static void canonical_uri(const eb_sigv4_request *r, eb_buf *out)
{
    eb_buf norm = {0};
    const char *path = *r->path ? r->path : "/";

    switch (r->path_rule) {
    case EB_SIGV4_PATH_S3:
        eb_buf_puts(out, path);
        break;
    case EB_SIGV4_PATH_ENCODE:
        eb_sigv4_uri_encode(out, path, strlen(path), true);
        break;
    case EB_SIGV4_PATH_NORMALIZE:
        normalize_path(&norm, path);
        eb_sigv4_uri_encode(out, norm.data, norm.len, true);
        break;
    }
    eb_buf_free(&norm);
}

/* ---- the pipeline -------------------------------------------------------------------------- */

static eb_status sign_request(const eb_sigv4_request *r, eb_sigv4_mode mode, signed_parts *p)
{
    eb_status st;
    eb_buf headers = {0};
    char creq_hash[65];
    unsigned char key[32], mac[32];

    memset(p, 0, sizeof *p);
    if ((st = check_request(r, mode)) != EB_OK)
        return st;
    if ((st = eb_sigv4_amz_date(r->time, p->date)) != EB_OK)
        return st;
    memcpy(p->day, p->date, 8);
    p->day[8] = '\0';
    p->payload_hash = r->payload_hash ? r->payload_hash : EB_SIGV4_EMPTY_SHA256;
    p->token = has_token(r) ? r->session_token : NULL;
    eb_buf_printf(&p->scope, "%s/%s/%s/aws4_request", p->day, r->region, r->service);

    if ((st = canonical_headers(r, mode, p, &headers)) != EB_OK)
        goto cleanup;
    if ((st = canonical_query(r, mode, p)) != EB_OK)
        goto cleanup;

    eb_buf_puts(&p->creq, r->method);
    eb_buf_putc(&p->creq, '\n');
    canonical_uri(r, &p->creq);
    eb_buf_putc(&p->creq, '\n');
    eb_buf_append(&p->creq, p->query.data, p->query.len);
    eb_buf_putc(&p->creq, '\n');
    eb_buf_append(&p->creq, headers.data, headers.len);
    eb_buf_putc(&p->creq, '\n');
    eb_buf_append(&p->creq, p->signed_headers.data, p->signed_headers.len);
    eb_buf_putc(&p->creq, '\n');
    eb_buf_puts(&p->creq, p->payload_hash);

    eb_sha256_hex(p->creq.data, p->creq.len, creq_hash);
    eb_buf_printf(&p->sts, "%s\n%s\n%s\n%s", EB_SIGV4_ALGORITHM, p->date, p->scope.data, creq_hash);

    eb_sigv4_signing_key(r->secret_key, p->day, r->region, r->service, key);
    eb_hmac_sha256(key, sizeof key, p->sts.data, p->sts.len, mac);
    eb_hex_encode(mac, sizeof mac, p->signature);
    eb_cleanse(key, sizeof key);
cleanup:
    eb_buf_free(&headers);
    return st;
}

/* ---- public pieces ------------------------------------------------------------------------- */

eb_status eb_sigv4_canonical_request(const eb_sigv4_request *r, eb_sigv4_mode mode, eb_buf *out)
{
    signed_parts p;
    eb_status st = sign_request(r, mode, &p);

    if (st == EB_OK)
        eb_buf_append(out, p.creq.data, p.creq.len);
    parts_free(&p);
    return st;
}

eb_status eb_sigv4_string_to_sign(const eb_sigv4_request *r, eb_sigv4_mode mode, eb_buf *out)
{
    signed_parts p;
    eb_status st = sign_request(r, mode, &p);

    if (st == EB_OK)
        eb_buf_append(out, p.sts.data, p.sts.len);
    parts_free(&p);
    return st;
}

eb_status eb_sigv4_signature(const eb_sigv4_request *r, eb_sigv4_mode mode, char out[65])
{
    signed_parts p;
    eb_status st = sign_request(r, mode, &p);

    if (st == EB_OK)
        memcpy(out, p.signature, 65);
    parts_free(&p);
    return st;
}

static void put_authorization(eb_buf *out, const eb_sigv4_request *r, const signed_parts *p)
{
    eb_buf_printf(out, "%s Credential=%s/%s, SignedHeaders=%s, Signature=%s", EB_SIGV4_ALGORITHM,
                  r->access_key, p->scope.data, p->signed_headers.data, p->signature);
}

eb_status eb_sigv4_authorization(const eb_sigv4_request *r, eb_buf *out)
{
    signed_parts p;
    eb_status st = sign_request(r, EB_SIGV4_HEADER, &p);

    if (st == EB_OK)
        put_authorization(out, r, &p);
    parts_free(&p);
    return st;
}

eb_status eb_sigv4_sign_headers(const eb_sigv4_request *r, eb_buf *out)
{
    signed_parts p;
    eb_status st = sign_request(r, EB_SIGV4_HEADER, &p);

    if (st != EB_OK)
        goto cleanup;
    eb_buf_printf(out, "X-Amz-Date: %s\r\n", p.date);
    if (r->content_sha256_header)
        eb_buf_printf(out, "X-Amz-Content-SHA256: %s\r\n", p.payload_hash);
    if (p.token)
        eb_buf_printf(out, "X-Amz-Security-Token: %s\r\n", p.token);
    eb_buf_puts(out, "Authorization: ");
    put_authorization(out, r, &p);
    eb_buf_puts(out, "\r\n");
cleanup:
    parts_free(&p);
    return st;
}

eb_status eb_sigv4_presign(const eb_sigv4_request *r, const char *base, eb_buf *out)
{
    signed_parts p;
    eb_status st = sign_request(r, EB_SIGV4_QUERY, &p);

    if (st != EB_OK)
        goto cleanup;
    if (base)
        eb_buf_puts(out, base);
    eb_buf_puts(out, *r->path ? r->path : "/");
    eb_buf_putc(out, '?');
    eb_buf_append(out, p.query.data, p.query.len);
    eb_buf_printf(out, "&X-Amz-Signature=%s", p.signature);
    if (p.token && r->omit_session_token) {
        eb_buf_puts(out, "&X-Amz-Security-Token=");
        eb_sigv4_uri_encode(out, p.token, strlen(p.token), false);
    }
cleanup:
    parts_free(&p);
    return st;
}
