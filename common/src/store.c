/* store.c -- the object store of store.h: a folder (file://) or an S3-compatible bucket (s3://).
 *
 * file: a key is the path <root>/<key>. A multipart upload writes its parts with pwrite() into
 * "<key>.<id>.partial" (id: 32 random hex digits) and records each part as one line
 * "part_no offset length sha256" appended to "<key>.<id>.parts"; both are fdatasync'ed before a
 * part is acknowledged. Completion checks the caller's list against that record (every part
 * present with its ETag, the parts following each other from offset 0 in part order), hashes
 * the bytes on disk again (so an overlapping write of another part cannot slip through), trims
 * the file, fsyncs it and renames it to the key, then fsyncs the folder. A reader therefore
 * sees the whole object or none. Small objects go through a temporary file and a rename too.
 *
 * s3: each call is one signed HTTP request on the store's libcurl easy handle, which is reset
 * (not recreated) between requests so its connections stay open. The key is URI-encoded once
 * (eb_store_s3_path) and the same string is signed and sent (CURLOPT_PATH_AS_IS); the query is
 * encoded the way the signer canonicalizes it; Host is set explicitly to the signed value. The
 * payload is hashed (SHA-256) and signed in X-Amz-Content-SHA256, so the server refuses a body
 * changed in transit. Network errors, 5xx (but 501), 408, 429 and S3's RequestTimeout /
 * SlowDown / InternalError answers are retried with exponential backoff (200 ms doubling, at
 * most 5 s, jittered) and signed afresh each time; other 4xx are not. A 403
 * RequestTimeTooSkewed sets a clock offset from the server's Date header and is retried once.
 *
 * XML: S3's answers (InitiateMultipartUploadResult, CompleteMultipartUploadResult,
 * ListMultipartUploadsResult, Error) are read by a small scanner, not an XML library: it finds
 * <Tag>text</Tag> by exact element name and decodes the predefined entities and character
 * references. That is enough for S3's flat, default-namespace documents without CDATA or
 * comments; it is not a general XML parser.
 *
 * Ownership: the store owns copies of its configuration (credentials wiped on free) and the
 * curl handle. Threading: one thread at a time per store; curl_global_init runs once
 * (pthread_once) on the first eb_store_open. */
#include "evalbus/store.h"

#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/sigv4.h"
#include "store_int.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILE_ID_LEN 32                /* hex digits of a file upload id */
#define S3_MAX_XML (1024 * 1024)      /* longest XML answer read */
#define S3_MAX_ERROR_BODY (64 * 1024) /* longest error body read, whatever the caller's max */
#define S3_MAX_UPLOAD_ID 1024
#define MAX_LISTED_UPLOADS 100000
#define BACKOFF_FIRST_MS 200
#define BACKOFF_MAX_MS 5000
#define MAX_RETRIES 20
#define PARTS_RECORD_MAX (16 * 1024 * 1024)

struct eb_store {
    eb_store_kind kind;
    eb_store_location loc;
    size_t part_size;
    bool no_overwrite;
    /* s3 */
    bool path_style;
    char *host; /* Host header: endpoint host, or bucket.host for virtual-host addressing */
    char *base; /* "http[s]://" host */
    char *region;
    char *access_key;
    char *secret_key;
    char *session_token;
    int retries;
    long timeout_ms;
    CURL *curl;
    long long clock_offset; /* seconds to add to our clock to get the server's */
};

/* ---- small helpers ------------------------------------------------------------------------ */

static void free_secret(char *s)
{
    if (s) {
        eb_cleanse(s, strlen(s));
        free(s);
    }
}

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_lower_hex(const char *s, size_t n)
{
    size_t i = 0;

    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return i == n;
}

/* The upload id of an S3 store: printable ASCII without blanks, as every store we know issues. */
static eb_status check_s3_upload_id(const char *id)
{
    size_t n = 0;

    if (!id || !*id)
        return eb_error(EB_ERR_INVALID, "store: upload id is empty");
    for (; id[n]; n++)
        if ((unsigned char)id[n] <= 0x20 || (unsigned char)id[n] >= 0x7f)
            return eb_error(EB_ERR_INVALID, "store: upload id has a character it cannot hold");
    if (n > S3_MAX_UPLOAD_ID)
        return eb_error(EB_ERR_INVALID, "store: upload id is longer than %d bytes",
                        S3_MAX_UPLOAD_ID);
    return EB_OK;
}

static eb_status check_part_no(int part_no)
{
    if (part_no < 1 || part_no > EB_STORE_MAX_PARTS)
        return eb_error(EB_ERR_INVALID, "store: part number %d is outside 1 .. %d", part_no,
                        EB_STORE_MAX_PARTS);
    return EB_OK;
}

/* Part list for completion: ascending part numbers, each with an ETag. */
static eb_status check_part_list(const eb_store_part *parts, size_t n)
{
    eb_status st;

    if (!parts || n == 0)
        return eb_error(EB_ERR_INVALID, "store: completing an upload needs at least one part");
    if (n > EB_STORE_MAX_PARTS)
        return eb_error(EB_ERR_INVALID, "store: more than %d parts", EB_STORE_MAX_PARTS);
    for (size_t i = 0; i < n; i++) {
        if ((st = check_part_no(parts[i].part_no)) != EB_OK)
            return st;
        if (i > 0 && parts[i].part_no <= parts[i - 1].part_no)
            return eb_error(EB_ERR_INVALID,
                            "store: parts must be listed in ascending part "
                            "order (part %d after part %d)",
                            parts[i].part_no, parts[i - 1].part_no);
        char clean[256];
        if (!parts[i].etag || !eb_store_etag_clean(parts[i].etag, clean, sizeof clean))
            return eb_error(EB_ERR_INVALID, "store: part %d has no usable ETag", parts[i].part_no);
        for (const char *p = clean; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return eb_error(EB_ERR_INVALID, "store: part %d's ETag has a control character",
                                parts[i].part_no);
    }
    return EB_OK;
}

bool eb_store_etag_clean(const char *etag, char *out, size_t outsz)
{
    const char *b = etag, *e;

    if (!etag || outsz == 0)
        return false;
    while (*b == ' ' || *b == '\t')
        b++;
    e = b + strlen(b);
    while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    if (e - b >= 2 && *b == '"' && e[-1] == '"') {
        b++;
        e--;
    }
    if (e == b || (size_t)(e - b) >= outsz)
        return false;
    memcpy(out, b, (size_t)(e - b));
    out[e - b] = '\0';
    return true;
}

/* ---- keys, URLs, endpoints ---------------------------------------------------------------- */

eb_status eb_store_check_key(const char *key)
{
    size_t n;
    const char *seg;

    if (!key || !*key)
        return eb_error(EB_ERR_INVALID, "store: key is empty");
    n = strlen(key);
    if (n > EB_STORE_MAX_KEY)
        return eb_error(EB_ERR_INVALID, "store: key is longer than %d bytes", EB_STORE_MAX_KEY);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f)
            return eb_error(EB_ERR_INVALID, "store: key has a control character at byte %zu", i);
    if (!eb_utf8_valid(key, n))
        return eb_error(EB_ERR_INVALID, "store: key is not valid UTF-8");
    if (key[0] == '/')
        return eb_error(EB_ERR_INVALID, "store: key must not start with '/'");
    if (key[n - 1] == '/')
        return eb_error(EB_ERR_INVALID, "store: key must not end with '/'");
    seg = key;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0)
            return eb_error(EB_ERR_INVALID, "store: key has an empty segment ('//')");
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return eb_error(EB_ERR_INVALID, "store: key has a '.' or '..' segment");
        if (!end)
            break;
        seg = end + 1;
    }
    return EB_OK;
}

eb_status eb_store_check_bucket(const char *b)
{
    size_t n = b ? strlen(b) : 0;
    bool all_digits_dots = true;
    int dots = 0;

    if (n < 3 || n > 63)
        return eb_error(EB_ERR_INVALID, "store: bucket name must have 3 to 63 characters");
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
            return eb_error(EB_ERR_INVALID, "store: bucket name may hold only a-z, 0-9, '.' "
                                            "and '-'");
        if (c == '.') {
            dots++;
            if (i > 0 && b[i - 1] == '.')
                return eb_error(EB_ERR_INVALID, "store: bucket name has '..'");
        } else if (!(c >= '0' && c <= '9')) {
            all_digits_dots = false;
        }
    }
    if (!isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
        return eb_error(EB_ERR_INVALID, "store: bucket name must start and end with a letter "
                                        "or digit");
    if (all_digits_dots && dots == 3)
        return eb_error(EB_ERR_INVALID, "store: bucket name must not look like an IP address");
    return EB_OK;
}

void eb_store_location_free(eb_store_location *loc)
{
    if (!loc)
        return;
    free(loc->root);
    free(loc->bucket);
    free(loc->prefix);
    memset(loc, 0, sizeof *loc);
}

static eb_status parse_file_url(const char *rest, eb_store_location *out)
{
    eb_status st = EB_OK;
    eb_buf path = {0};

    if (has_prefix_ci(rest, "localhost/"))
        rest += strlen("localhost");
    if (*rest != '/') {
        st = eb_error(EB_ERR_INVALID, "store: a file URL needs an absolute path "
                                      "(file:///path/to/folder)");
        goto cleanup;
    }
    /* decode, refusing what a folder name should not hold; collapse repeated '/' */
    for (const char *p = rest; *p; p++) {
        int c = (unsigned char)*p;
        if (c == '?' || c == '#') {
            st = eb_error(EB_ERR_INVALID, "store: a file URL takes no query or fragment");
            goto cleanup;
        }
        if (c == '%') {
            int hi = eb_hex_digit(p[1]), lo = hi < 0 ? -1 : eb_hex_digit(p[2]);
            if (hi < 0 || lo < 0) {
                st = eb_error(EB_ERR_INVALID, "store: bad %%-escape in file URL");
                goto cleanup;
            }
            c = hi * 16 + lo;
            p += 2;
        }
        if (c < 0x20 || c == 0x7f) {
            st = eb_error(EB_ERR_INVALID, "store: file URL has a control character");
            goto cleanup;
        }
        if (c == '/' && path.len && path.data[path.len - 1] == '/')
            continue;
        eb_buf_putc(&path, (char)c);
    }
    while (path.len > 1 && path.data[path.len - 1] == '/')
        path.data[--path.len] = '\0';
    for (const char *seg = path.data + 1; *seg;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.')) {
            st = eb_error(EB_ERR_INVALID, "store: file URL path has a '.' or '..' segment");
            goto cleanup;
        }
        if (!end)
            break;
        seg = end + 1;
    }
    out->kind = EB_STORE_FILE;
    out->root = eb_buf_steal(&path);
cleanup:
    eb_buf_free(&path);
    return st;
}

static eb_status parse_s3_url(const char *rest, eb_store_location *out)
{
    eb_status st = EB_OK;
    const char *slash = strchr(rest, '/');
    char *bucket = slash ? eb_strndup(rest, (size_t)(slash - rest)) : eb_strdup(rest);
    char *prefix = NULL;

    if ((st = eb_store_check_bucket(bucket)) != EB_OK)
        goto cleanup;
    if (slash) {
        const char *b = slash;
        while (*b == '/')
            b++;
        size_t n = strlen(b);
        while (n > 0 && b[n - 1] == '/')
            n--;
        prefix = eb_strndup(b, n);
    }
    if (prefix && *prefix) {
        if ((st = eb_store_check_key(prefix)) != EB_OK) {
            st = eb_error(st, "store: prefix of s3 URL: %s", eb_error_message());
            goto cleanup;
        }
        char *p = eb_asprintf("%s/", prefix);
        free(prefix);
        prefix = p;
    } else {
        free(prefix);
        prefix = eb_strdup("");
    }
    out->kind = EB_STORE_S3;
    out->bucket = bucket;
    out->prefix = prefix;
    bucket = prefix = NULL;
cleanup:
    free(bucket);
    free(prefix);
    return st;
}

eb_status eb_store_parse_url(const char *url, eb_store_location *out)
{
    memset(out, 0, sizeof *out);
    if (!url || !*url)
        return eb_error(EB_ERR_INVALID, "store: URL is empty (file:///path or s3://bucket/prefix)");
    if (has_prefix_ci(url, "file://"))
        return parse_file_url(url + strlen("file://"), out);
    if (has_prefix_ci(url, "s3://"))
        return parse_s3_url(url + strlen("s3://"), out);
    return eb_error(EB_ERR_INVALID, "store: URL must start with file:// or s3://");
}

void eb_store_endpoint_free(eb_store_endpoint *ep)
{
    if (!ep)
        return;
    free(ep->host);
    memset(ep, 0, sizeof *ep);
}

eb_status eb_store_parse_endpoint(const char *endpoint, const char *region, eb_store_endpoint *out)
{
    eb_status st = EB_OK;
    const char *p, *end;
    char *host = NULL;
    size_t n;

    memset(out, 0, sizeof *out);
    if (!endpoint || !*endpoint) {
        out->https = true;
        out->host = eb_asprintf("s3.%s.amazonaws.com", region && *region ? region : "us-east-1");
        return EB_OK;
    }
    if (has_prefix_ci(endpoint, "https://")) {
        out->https = true;
        p = endpoint + strlen("https://");
    } else if (has_prefix_ci(endpoint, "http://")) {
        p = endpoint + strlen("http://");
    } else {
        return eb_error(EB_ERR_INVALID, "store: endpoint must start with http:// or https://");
    }
    end = p + strcspn(p, "/?#");
    if (*end && strcmp(end, "/") != 0)
        return eb_error(EB_ERR_INVALID, "store: endpoint takes no path, query or fragment "
                                        "(http[s]://host[:port])");
    n = (size_t)(end - p);
    if (n == 0)
        return eb_error(EB_ERR_INVALID, "store: endpoint has no host");
    host = eb_strndup(p, n);
    for (char *q = host; *q; q++) {
        unsigned char c = (unsigned char)*q;
        if (c <= 0x20 || c >= 0x7f || c == '@' || c == '\\') {
            st = eb_error(EB_ERR_INVALID, "store: endpoint host has a character it cannot hold");
            goto cleanup;
        }
        *q = (char)tolower(c);
    }
    /* split host and port */
    char *colon = NULL;
    if (host[0] == '[') {
        char *close = strchr(host, ']');
        if (!close || close == host + 1 || (close[1] && close[1] != ':')) {
            st = eb_error(EB_ERR_INVALID, "store: endpoint has a malformed IPv6 address");
            goto cleanup;
        }
        colon = close[1] == ':' ? close + 1 : NULL;
        out->ip_literal = true;
    } else {
        colon = strchr(host, ':');
        if (colon && strchr(colon + 1, ':')) {
            st = eb_error(EB_ERR_INVALID, "store: an IPv6 endpoint needs brackets");
            goto cleanup;
        }
        size_t hl = colon ? (size_t)(colon - host) : strlen(host);
        if (hl == 0) {
            st = eb_error(EB_ERR_INVALID, "store: endpoint has no host");
            goto cleanup;
        }
        out->ip_literal = strspn(host, "0123456789.") == hl;
    }
    if (colon) {
        const char *port = colon + 1;
        char *e = NULL;
        long v = *port ? strtol(port, &e, 10) : -1;
        if (!*port || *e || v < 1 || v > 65535 || !isdigit((unsigned char)*port)) {
            st = eb_error(EB_ERR_INVALID, "store: endpoint port must be 1 to 65535");
            goto cleanup;
        }
        if ((out->https && v == 443) || (!out->https && v == 80))
            *colon = '\0';
    }
    out->host = host;
    host = NULL;
cleanup:
    free(host);
    return st;
}

void eb_store_s3_path(eb_buf *out, const char *bucket, const char *prefix, const char *key)
{
    if (bucket) {
        eb_buf_putc(out, '/');
        eb_sigv4_uri_encode(out, bucket, strlen(bucket), false);
    }
    if (key) {
        eb_buf_putc(out, '/');
        if (prefix)
            eb_sigv4_uri_encode(out, prefix, strlen(prefix), true);
        eb_sigv4_uri_encode(out, key, strlen(key), true);
    } else if (!bucket) {
        eb_buf_putc(out, '/');
    }
}

/* ---- XML ---------------------------------------------------------------------------------- */

static const char *find_bytes(const char *hay, size_t hn, const char *needle, size_t nn)
{
    if (nn == 0 || hn < nn)
        return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, nn) == 0)
            return hay + i;
    return NULL;
}

bool eb_store_xml_next(const char *xml, size_t len, const char *tag, size_t *pos,
                       const char **inner, size_t *inner_len)
{
    size_t tn = strlen(tag);
    size_t i = *pos;

    if (!xml || tn == 0)
        return false;
    while (i < len) {
        const char *lt = memchr(xml + i, '<', len - i);
        if (!lt)
            return false;
        size_t at = (size_t)(lt - xml);
        size_t after = at + 1 + tn;
        if (after < len && memcmp(lt + 1, tag, tn) == 0 &&
            (xml[after] == '>' || xml[after] == '/' || xml[after] == ' ' || xml[after] == '\t' ||
             xml[after] == '\r' || xml[after] == '\n')) {
            const char *gt = memchr(xml + after, '>', len - after);
            if (!gt)
                return false;
            size_t body = (size_t)(gt - xml) + 1;
            if (gt[-1] == '/') { /* <tag/> */
                *inner = xml + body;
                *inner_len = 0;
                *pos = body;
                return true;
            }
            char close[80];
            if (tn + 3 >= sizeof close)
                return false;
            snprintf(close, sizeof close, "</%s>", tag);
            const char *e = find_bytes(xml + body, len - body, close, tn + 3);
            if (!e)
                return false;
            *inner = xml + body;
            *inner_len = (size_t)(e - (xml + body));
            *pos = (size_t)(e - xml) + tn + 3;
            return true;
        }
        i = at + 1;
    }
    return false;
}

static void put_utf8(eb_buf *out, unsigned long cp)
{
    if (cp < 0x80) {
        eb_buf_putc(out, (char)cp);
    } else if (cp < 0x800) {
        eb_buf_putc(out, (char)(0xc0 | (cp >> 6)));
        eb_buf_putc(out, (char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        eb_buf_putc(out, (char)(0xe0 | (cp >> 12)));
        eb_buf_putc(out, (char)(0x80 | ((cp >> 6) & 0x3f)));
        eb_buf_putc(out, (char)(0x80 | (cp & 0x3f)));
    } else {
        eb_buf_putc(out, (char)(0xf0 | (cp >> 18)));
        eb_buf_putc(out, (char)(0x80 | ((cp >> 12) & 0x3f)));
        eb_buf_putc(out, (char)(0x80 | ((cp >> 6) & 0x3f)));
        eb_buf_putc(out, (char)(0x80 | (cp & 0x3f)));
    }
}

/* Decodes s[0..n) into out; false on a malformed or unknown reference. */
static bool xml_decode(const char *s, size_t n, eb_buf *out)
{
    static const struct {
        const char *name;
        char c;
    } ents[] = {{"lt", '<'}, {"gt", '>'}, {"amp", '&'}, {"quot", '"'}, {"apos", '\''}};

    for (size_t i = 0; i < n; i++) {
        if (s[i] != '&') {
            if (s[i] == '<')
                return false; /* markup inside a text element */
            eb_buf_putc(out, s[i]);
            continue;
        }
        const char *semi = memchr(s + i, ';', n - i);
        if (!semi)
            return false;
        const char *name = s + i + 1;
        size_t nl = (size_t)(semi - name);
        bool done = false;
        if (nl >= 2 && name[0] == '#') {
            unsigned long cp = 0;
            bool hex = name[1] == 'x' || name[1] == 'X';
            size_t k = hex ? 2 : 1;
            if (k >= nl)
                return false;
            for (; k < nl; k++) {
                int v = hex ? eb_hex_digit(name[k])
                            : (name[k] >= '0' && name[k] <= '9' ? name[k] - '0' : -1);
                if (v < 0 || cp > 0x10ffff)
                    return false;
                cp = cp * (hex ? 16 : 10) + (unsigned long)v;
            }
            if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return false;
            put_utf8(out, cp);
            done = true;
        } else {
            for (size_t e = 0; e < sizeof ents / sizeof *ents; e++)
                if (strlen(ents[e].name) == nl && memcmp(ents[e].name, name, nl) == 0) {
                    eb_buf_putc(out, ents[e].c);
                    done = true;
                    break;
                }
        }
        if (!done)
            return false;
        i = (size_t)(semi - s);
    }
    return true;
}

bool eb_store_xml_text(const char *xml, size_t len, const char *tag, eb_buf *out)
{
    size_t pos = 0, inner_len;
    const char *inner;
    size_t mark = out->len;

    if (!eb_store_xml_next(xml, len, tag, &pos, &inner, &inner_len))
        return false;
    if (!xml_decode(inner, inner_len, out)) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return false;
    }
    return true;
}

void eb_store_xml_escape(eb_buf *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            eb_buf_puts(out, "&amp;");
            break;
        case '<':
            eb_buf_puts(out, "&lt;");
            break;
        case '>':
            eb_buf_puts(out, "&gt;");
            break;
        case '"':
            eb_buf_puts(out, "&quot;");
            break;
        case '\'':
            eb_buf_puts(out, "&apos;");
            break;
        default:
            eb_buf_putc(out, *s);
        }
    }
}

bool eb_store_s3_error(const char *body, size_t len, eb_buf *code, eb_buf *message,
                       eb_buf *request_id)
{
    size_t pos = 0, il;
    const char *inner;

    if (!body || !eb_store_xml_next(body, len, "Error", &pos, &inner, &il))
        return false;
    eb_store_xml_text(inner, il, "Code", code);
    eb_store_xml_text(inner, il, "Message", message);
    eb_store_xml_text(inner, il, "RequestId", request_id);
    return true;
}

/* ---- S3 error mapping --------------------------------------------------------------------- */

static const struct {
    const char *code;
    eb_status st;
} s3_codes[] = {
    {"NoSuchKey", EB_ERR_NOT_FOUND},
    {"NoSuchUpload", EB_ERR_NOT_FOUND},
    {"NoSuchBucket", EB_ERR_NOT_FOUND},
    {"InvalidPart", EB_ERR_INVALID},
    {"InvalidPartOrder", EB_ERR_INVALID},
    {"EntityTooSmall", EB_ERR_INVALID},
    {"MalformedXML", EB_ERR_INVALID},
    {"InvalidArgument", EB_ERR_INVALID},
    {"InvalidRequest", EB_ERR_INVALID},
    {"InvalidBucketName", EB_ERR_INVALID},
    {"KeyTooLongError", EB_ERR_INVALID},
    {"InvalidDigest", EB_ERR_INVALID},
    {"BadDigest", EB_ERR_INVALID},
    {"XAmzContentSHA256Mismatch", EB_ERR_INVALID},
    {"InvalidURI", EB_ERR_INVALID},
    {"InvalidLocationConstraint", EB_ERR_INVALID},
    {"IllegalLocationConstraintException", EB_ERR_INVALID},
    {"NotImplemented", EB_ERR_INVALID},
    {"EntityTooLarge", EB_ERR_TOO_LARGE},
    {"MaxMessageLengthExceeded", EB_ERR_TOO_LARGE},
    {"SignatureDoesNotMatch", EB_ERR_UNAUTHENTICATED},
    {"InvalidAccessKeyId", EB_ERR_UNAUTHENTICATED},
    {"ExpiredToken", EB_ERR_UNAUTHENTICATED},
    {"InvalidToken", EB_ERR_UNAUTHENTICATED},
    {"TokenRefreshRequired", EB_ERR_UNAUTHENTICATED},
    {"RequestTimeTooSkewed", EB_ERR_UNAUTHENTICATED},
    {"AuthorizationHeaderMalformed", EB_ERR_UNAUTHENTICATED},
    {"AuthorizationQueryParametersError", EB_ERR_UNAUTHENTICATED},
    {"MissingSecurityHeader", EB_ERR_UNAUTHENTICATED},
    {"AccessDenied", EB_ERR_FORBIDDEN},
    {"AllAccessDisabled", EB_ERR_FORBIDDEN},
    {"AccountProblem", EB_ERR_FORBIDDEN},
    {"BucketAlreadyExists", EB_ERR_CONFLICT},
    {"BucketAlreadyOwnedByYou", EB_ERR_CONFLICT},
    {"OperationAborted", EB_ERR_CONFLICT},
    {"PreconditionFailed", EB_ERR_CONFLICT},
    {"ConditionalRequestConflict", EB_ERR_CONFLICT},
    {"SlowDown", EB_ERR_RATE_LIMITED},
    {"TooManyRequests", EB_ERR_RATE_LIMITED},
    {"RequestTimeout", EB_ERR_TIMEOUT},
    {"InternalError", EB_ERR_UNAVAILABLE},
    {"ServiceUnavailable", EB_ERR_UNAVAILABLE},
};

eb_status eb_store_s3_status(long http, const char *code)
{
    if (http == 412) /* a failed precondition whatever the code (Swift says InvalidRequest) */
        return EB_ERR_CONFLICT;
    if (code && *code)
        for (size_t i = 0; i < sizeof s3_codes / sizeof *s3_codes; i++)
            if (strcmp(code, s3_codes[i].code) == 0)
                return s3_codes[i].st;
    switch (http) {
    case 401:
        return EB_ERR_UNAUTHENTICATED;
    case 403:
        return EB_ERR_FORBIDDEN;
    case 404:
        return EB_ERR_NOT_FOUND;
    case 408:
    case 504:
        return EB_ERR_TIMEOUT;
    case 409:
    case 412:
        return EB_ERR_CONFLICT;
    case 413:
        return EB_ERR_TOO_LARGE;
    case 429:
        return EB_ERR_RATE_LIMITED;
    default:
        break;
    }
    if (http >= 400 && http < 500)
        return EB_ERR_INVALID;
    if (http >= 500 && http < 600)
        return EB_ERR_UNAVAILABLE;
    return EB_ERR_INTERNAL;
}

bool eb_store_s3_retryable(long http, const char *code)
{
    static const char *const retry_codes[] = {"RequestTimeout", "SlowDown", "InternalError",
                                              "ServiceUnavailable", "TooManyRequests"};

    if (code && *code) {
        for (size_t i = 0; i < sizeof retry_codes / sizeof *retry_codes; i++)
            if (strcmp(code, retry_codes[i]) == 0)
                return true;
        if (strcmp(code, "NotImplemented") == 0)
            return false;
    }
    return (http >= 500 && http < 600 && http != 501) || http == 408 || http == 429;
}

/* ---- open / free -------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

eb_status eb_store_open(const eb_store_config *cfg, eb_store **out)
{
    eb_status st = EB_OK;
    eb_store *s = NULL;
    eb_store_endpoint ep = {0};

    *out = NULL;
    if (!cfg)
        return eb_error(EB_ERR_INVALID, "store: no configuration");
    s = eb_calloc(1, sizeof *s);
    if ((st = eb_store_parse_url(cfg->url, &s->loc)) != EB_OK)
        goto cleanup;
    s->kind = s->loc.kind;
    s->part_size = cfg->part_size ? cfg->part_size : EB_STORE_DEFAULT_PART;
    s->no_overwrite = cfg->no_overwrite;
    if (s->part_size > EB_STORE_MAX_PART) {
        st = eb_error(EB_ERR_INVALID, "store: part_size is larger than 5 GiB");
        goto cleanup;
    }
    if (s->kind == EB_STORE_FILE)
        goto cleanup; /* nothing else applies */

    if (cfg->retries > MAX_RETRIES) {
        st = eb_error(EB_ERR_INVALID, "store: retries must be at most %d", MAX_RETRIES);
        goto cleanup;
    }
    if (cfg->timeout_ms < 0) {
        st = eb_error(EB_ERR_INVALID, "store: timeout_ms must not be negative");
        goto cleanup;
    }
    s->retries = cfg->retries == 0 ? EB_STORE_DEFAULT_RETRIES : cfg->retries < 0 ? 0 : cfg->retries;
    s->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : EB_STORE_DEFAULT_TIMEOUT_MS;
    s->region = eb_strdup(cfg->region && *cfg->region ? cfg->region : "us-east-1");
    for (const char *p = s->region; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
            st = eb_error(EB_ERR_INVALID, "store: region may hold only a-z, 0-9 and '-'");
            goto cleanup;
        }
    if (!cfg->access_key_id || !*cfg->access_key_id || !cfg->secret_access_key ||
        !*cfg->secret_access_key) {
        st = eb_error(EB_ERR_INVALID, "store: an s3 store needs access_key_id and "
                                      "secret_access_key");
        goto cleanup;
    }
    for (const char *p = cfg->access_key_id; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '/') {
            st = eb_error(EB_ERR_INVALID, "store: access_key_id has a character it cannot hold");
            goto cleanup;
        }
    if (cfg->session_token)
        for (const char *p = cfg->session_token; *p; p++)
            if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
                st = eb_error(EB_ERR_INVALID, "store: session_token has a character it cannot "
                                              "hold");
                goto cleanup;
            }
    s->access_key = eb_strdup(cfg->access_key_id);
    s->secret_key = eb_strdup(cfg->secret_access_key);
    s->session_token =
        cfg->session_token && *cfg->session_token ? eb_strdup(cfg->session_token) : NULL;
    s->path_style = cfg->path_style;
    if ((st = eb_store_parse_endpoint(cfg->endpoint, s->region, &ep)) != EB_OK)
        goto cleanup;
    if (!s->path_style) {
        if (ep.ip_literal) {
            st = eb_error(EB_ERR_INVALID,
                          "store: virtual-host addressing needs an endpoint "
                          "with a DNS name; set path_style for %s",
                          ep.host);
            goto cleanup;
        }
        if (ep.https && strchr(s->loc.bucket, '.')) {
            st = eb_error(EB_ERR_INVALID, "store: bucket names with '.' do not work with "
                                          "virtual-host addressing over https (the "
                                          "certificate does not match); set path_style");
            goto cleanup;
        }
        s->host = eb_asprintf("%s.%s", s->loc.bucket, ep.host);
    } else {
        s->host = eb_strdup(ep.host);
    }
    s->base = eb_asprintf("%s://%s", ep.https ? "https" : "http", s->host);
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        st = eb_error(EB_ERR_INTERNAL, "store: curl_global_init failed: %s",
                      curl_easy_strerror(curl_init_rc));
        goto cleanup;
    }
    s->curl = curl_easy_init();
    if (!s->curl) {
        st = eb_error(EB_ERR_INTERNAL, "store: curl_easy_init failed");
        goto cleanup;
    }
cleanup:
    eb_store_endpoint_free(&ep);
    if (st != EB_OK)
        eb_store_free(s);
    else
        *out = s;
    return st;
}

void eb_store_free(eb_store *s)
{
    if (!s)
        return;
    if (s->curl)
        curl_easy_cleanup(s->curl);
    eb_store_location_free(&s->loc);
    free(s->host);
    free(s->base);
    free(s->region);
    free_secret(s->access_key);
    free_secret(s->secret_key);
    free_secret(s->session_token);
    free(s);
}

const char *eb_store_scheme(const eb_store *s)
{
    return s && s->kind == EB_STORE_S3 ? "s3" : "file";
}

size_t eb_store_part_size(const eb_store *s)
{
    return s ? s->part_size : EB_STORE_DEFAULT_PART;
}

/* ============================================================================================
 * file backend
 * ========================================================================================== */

static eb_status errno_status(int err, const char *what, const char *path)
{
    eb_status code;

    switch (err) {
    case ENOENT:
        code = EB_ERR_NOT_FOUND;
        break;
    case EACCES:
    case EPERM:
    case EROFS:
        code = EB_ERR_FORBIDDEN;
        break;
    case ENAMETOOLONG:
        code = EB_ERR_INVALID;
        break;
    case ENOTDIR:
    case EISDIR:
    case EEXIST:
        code = EB_ERR_CONFLICT;
        break;
    default:
        code = EB_ERR_IO;
    }
    if (err == ENOTDIR || err == EISDIR)
        return eb_error(code, "store: %s %s: a key and a folder of keys cannot share a name (%s)",
                        what, path, strerror(err));
    return eb_error(code, "store: %s %s: %s", what, path, strerror(err));
}

/* "<root>/<key><suffix>" */
static char *file_path(const eb_store *s, const char *key, const char *suffix)
{
    const char *root = s->loc.root;
    bool slash = !(root[0] == '/' && root[1] == '\0');

    return eb_asprintf("%s%s%s%s", root, slash ? "/" : "", key, suffix ? suffix : "");
}

/* mkdir -p of every folder above path's last component. */
static eb_status mkdir_parents(const char *path)
{
    eb_status st = EB_OK;
    char *p = eb_strdup(path);

    for (char *q = p + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            st = errno_status(errno, "creating folder", p);
            goto cleanup;
        }
        *q = '/';
    }
cleanup:
    free(p);
    return st;
}

static eb_status fsync_parent(const char *path)
{
    eb_status st = EB_OK;
    char *dir = eb_strdup(path);
    char *slash = strrchr(dir, '/');
    int fd;

    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        st = errno_status(errno, "syncing folder", dir);
    if (fd >= 0)
        close(fd);
    free(dir);
    return st;
}

static eb_status write_all_at(int fd, const void *data, size_t len, uint64_t off, const char *path)
{
    const char *p = data;

    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        ssize_t w = pwrite(fd, p, chunk, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno_status(errno, "writing", path);
        }
        p += w;
        off += (uint64_t)w;
        len -= (size_t)w;
    }
    return EB_OK;
}

static eb_status check_file_upload(const char *key, const char *upload_id)
{
    eb_status st = eb_store_check_key(key);

    if (st != EB_OK)
        return st;
    if (!upload_id || !is_lower_hex(upload_id, FILE_ID_LEN))
        return eb_error(EB_ERR_NOT_FOUND,
                        "store: no such upload (a file store's upload id is "
                        "%d hex digits)",
                        FILE_ID_LEN);
    return EB_OK;
}

static char *file_upload_path(const eb_store *s, const char *key, const char *id, const char *ext)
{
    char suffix[FILE_ID_LEN + 16];

    snprintf(suffix, sizeof suffix, ".%s.%s", id, ext);
    return file_path(s, key, suffix);
}

static eb_status file_upload_begin(eb_store *s, const char *key, char **upload_id)
{
    eb_status st = EB_OK;
    unsigned char rnd[FILE_ID_LEN / 2];
    char id[FILE_ID_LEN + 1];
    char *partial = NULL, *record = NULL;
    int fd = -1;

    eb_random_bytes(rnd, sizeof rnd);
    eb_hex_encode(rnd, sizeof rnd, id);
    partial = file_upload_path(s, key, id, "partial");
    record = file_upload_path(s, key, id, "parts");
    if ((st = mkdir_parents(partial)) != EB_OK)
        goto cleanup;
    fd = open(record, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = errno_status(errno, "creating", record);
        goto cleanup;
    }
    close(fd);
    fd = open(partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = errno_status(errno, "creating", partial);
        unlink(record);
        goto cleanup;
    }
    *upload_id = eb_strdup(id);
cleanup:
    if (fd >= 0)
        close(fd);
    free(partial);
    free(record);
    return st;
}

static eb_status file_upload_part(eb_store *s, const char *key, const char *upload_id, int part_no,
                                  uint64_t offset, const void *data, size_t len, char **etag)
{
    eb_status st = EB_OK;
    char *partial = file_upload_path(s, key, upload_id, "partial");
    char *record = file_upload_path(s, key, upload_id, "parts");
    char hash[65];
    char line[128];
    int fd = -1, n;

    if (offset > (uint64_t)INT64_MAX - len) {
        st = eb_error(EB_ERR_INVALID, "store: part %d ends beyond what a file can hold", part_no);
        goto cleanup;
    }
    eb_sha256_hex(data, len, hash);
    fd = open(partial, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        st = errno == ENOENT
                 ? eb_error(EB_ERR_NOT_FOUND, "store: no such upload %s for %s", upload_id, key)
                 : errno_status(errno, "opening", partial);
        goto cleanup;
    }
    if ((st = write_all_at(fd, data, len, offset, partial)) != EB_OK)
        goto cleanup;
    if (fdatasync(fd) != 0) {
        st = errno_status(errno, "syncing", partial);
        goto cleanup;
    }
    close(fd);
    /* one short write with O_APPEND: parts written at the same time do not interleave */
    fd = open(record, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
        st = errno == ENOENT
                 ? eb_error(EB_ERR_NOT_FOUND, "store: no such upload %s for %s", upload_id, key)
                 : errno_status(errno, "opening", record);
        goto cleanup;
    }
    n = snprintf(line, sizeof line, "%d %" PRIu64 " %zu %s\n", part_no, offset, len, hash);
    if (write(fd, line, (size_t)n) != n) {
        st = errno_status(errno ? errno : EIO, "recording part in", record);
        goto cleanup;
    }
    if (fdatasync(fd) != 0) {
        st = errno_status(errno, "syncing", record);
        goto cleanup;
    }
    *etag = eb_strdup(hash);
cleanup:
    if (fd >= 0)
        close(fd);
    free(partial);
    free(record);
    return st;
}

typedef struct part_rec {
    int part_no;
    uint64_t offset;
    uint64_t len;
    char etag[65];
} part_rec;

/* Reads the part record of an upload: *recs (caller frees) gets one entry per line, in the
 * order written. */
static eb_status read_part_record(const char *path, part_rec **recs, size_t *n)
{
    eb_status st = EB_OK;
    eb_buf text = {0};
    char chunk[65536];
    size_t cap = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    *recs = NULL;
    *n = 0;
    if (fd < 0) {
        st = errno_status(errno, "opening", path);
        goto cleanup;
    }
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = errno_status(errno, "reading", path);
            goto cleanup;
        }
        if (r == 0)
            break;
        if (text.len + (size_t)r > PARTS_RECORD_MAX) {
            st = eb_error(EB_ERR_TOO_LARGE, "store: part record %s is too large", path);
            goto cleanup;
        }
        eb_buf_append(&text, chunk, (size_t)r);
    }
    for (char *line = text.data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) /* a line cut short by a crash: its part was never acknowledged */
            break;
        *nl = '\0';
        part_rec r = {0};
        unsigned long long off, len;
        char etag[65];
        if (sscanf(line, "%d %llu %llu %64s", &r.part_no, &off, &len, etag) != 4 ||
            !is_lower_hex(etag, 64)) {
            st = eb_error(EB_ERR_INTERNAL, "store: part record %s has a malformed line", path);
            goto cleanup;
        }
        r.offset = off;
        r.len = len;
        memcpy(r.etag, etag, sizeof r.etag);
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            *recs = eb_realloc(*recs, cap * sizeof **recs);
        }
        (*recs)[(*n)++] = r;
        line = nl + 1;
    }
cleanup:
    if (fd >= 0)
        close(fd);
    eb_buf_free(&text);
    if (st != EB_OK) {
        free(*recs);
        *recs = NULL;
        *n = 0;
    }
    return st;
}

/* SHA-256 of fd's bytes [off, off+len) as hex. */
static eb_status hash_range(int fd, uint64_t off, uint64_t len, const char *path, char out[65])
{
    eb_status st = EB_OK;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = eb_malloc(1 << 20);
    unsigned char md[32];
    unsigned int mdlen = 0;

    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        st = eb_error(EB_ERR_INTERNAL, "store: SHA-256 unavailable");
        goto cleanup;
    }
    while (len > 0) {
        size_t want = len > (1u << 20) ? (1u << 20) : (size_t)len;
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = errno_status(errno, "reading", path);
            goto cleanup;
        }
        if (r == 0) {
            st = eb_error(EB_ERR_INVALID, "store: %s is shorter than its parts", path);
            goto cleanup;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)r);
        off += (uint64_t)r;
        len -= (uint64_t)r;
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    eb_hex_encode(md, sizeof md, out);
cleanup:
    EVP_MD_CTX_free(ctx);
    free(buf);
    return st;
}

/* Moves from to to; with no_overwrite, fails with EB_ERR_CONFLICT if to exists. */
static eb_status file_rename(const char *from, const char *to, bool no_overwrite)
{
    if (!no_overwrite) {
        if (rename(from, to) != 0)
            return errno_status(errno, "renaming to", to);
        return EB_OK;
    }
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return EB_OK;
    if (errno != EINVAL && errno != ENOSYS) {
        if (errno == EEXIST)
            return eb_error(EB_ERR_CONFLICT, "store: %s exists already", to);
        return errno_status(errno, "renaming to", to);
    }
    /* a file system without RENAME_NOREPLACE: link() refuses to replace as well */
    if (link(from, to) != 0) {
        if (errno == EEXIST)
            return eb_error(EB_ERR_CONFLICT, "store: %s exists already", to);
        return errno_status(errno, "linking to", to);
    }
    unlink(from);
    return EB_OK;
}

static eb_status file_upload_complete(eb_store *s, const char *key, const char *upload_id,
                                      const eb_store_part *parts, size_t n)
{
    eb_status st = EB_OK;
    char *partial = file_upload_path(s, key, upload_id, "partial");
    char *record = file_upload_path(s, key, upload_id, "parts");
    char *final = file_path(s, key, NULL);
    part_rec *recs = NULL;
    const part_rec **use = NULL;
    size_t nrecs = 0;
    uint64_t expect = 0;
    int fd = -1;

    if ((st = read_part_record(record, &recs, &nrecs)) != EB_OK) {
        if (st == EB_ERR_NOT_FOUND)
            st = eb_error(EB_ERR_NOT_FOUND, "store: no such upload %s for %s", upload_id, key);
        goto cleanup;
    }
    use = eb_calloc(n, sizeof *use);
    for (size_t i = 0; i < n; i++) {
        char want[256];
        eb_store_etag_clean(parts[i].etag, want, sizeof want);
        for (size_t j = nrecs; j-- > 0;)
            if (recs[j].part_no == parts[i].part_no) {
                use[i] = &recs[j];
                break;
            }
        if (!use[i]) {
            st = eb_error(EB_ERR_INVALID, "store: InvalidPart: part %d was not uploaded",
                          parts[i].part_no);
            goto cleanup;
        }
        if (strcasecmp(want, use[i]->etag) != 0) {
            st = eb_error(EB_ERR_INVALID,
                          "store: InvalidPart: part %d's ETag does not match "
                          "the part uploaded",
                          parts[i].part_no);
            goto cleanup;
        }
        if (use[i]->offset != expect) {
            st = eb_error(EB_ERR_INVALID,
                          "store: part %d starts at byte %" PRIu64 ", not at "
                          "%" PRIu64 " where the parts before it end",
                          parts[i].part_no, use[i]->offset, expect);
            goto cleanup;
        }
        expect += use[i]->len;
    }
    fd = open(partial, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        st = errno_status(errno, "opening", partial);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        char got[65];
        if ((st = hash_range(fd, use[i]->offset, use[i]->len, partial, got)) != EB_OK)
            goto cleanup;
        if (strcmp(got, use[i]->etag) != 0) {
            st = eb_error(EB_ERR_INVALID,
                          "store: part %d was overwritten by another part's "
                          "write (parts overlap)",
                          parts[i].part_no);
            goto cleanup;
        }
    }
    if (ftruncate(fd, (off_t)expect) != 0 || fsync(fd) != 0) {
        st = errno_status(errno, "finishing", partial);
        goto cleanup;
    }
    close(fd);
    fd = -1;
    if ((st = file_rename(partial, final, s->no_overwrite)) != EB_OK)
        goto cleanup;
    unlink(record);
    st = fsync_parent(final);
cleanup:
    if (fd >= 0)
        close(fd);
    free(use);
    free(recs);
    free(partial);
    free(record);
    free(final);
    return st;
}

static eb_status file_upload_abort(eb_store *s, const char *key, const char *upload_id)
{
    eb_status st = EB_OK;
    char *partial = file_upload_path(s, key, upload_id, "partial");
    char *record = file_upload_path(s, key, upload_id, "parts");

    if (unlink(partial) != 0 && errno != ENOENT)
        st = errno_status(errno, "removing", partial);
    else if (unlink(record) != 0 && errno != ENOENT)
        st = errno_status(errno, "removing", record);
    free(partial);
    free(record);
    return st;
}

static eb_status file_put(eb_store *s, const char *key, const void *data, size_t len)
{
    eb_status st = EB_OK;
    unsigned char rnd[8];
    char suffix[40];
    char *final = file_path(s, key, NULL);
    char *tmp = NULL;
    int fd = -1;

    eb_random_bytes(rnd, sizeof rnd);
    snprintf(suffix, sizeof suffix, ".%02x%02x%02x%02x%02x%02x%02x%02x.tmp", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    tmp = file_path(s, key, suffix);
    if ((st = mkdir_parents(final)) != EB_OK)
        goto cleanup;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = errno_status(errno, "creating", tmp);
        goto cleanup;
    }
    if ((st = write_all_at(fd, data, len, 0, tmp)) != EB_OK)
        goto cleanup;
    if (fsync(fd) != 0) {
        st = errno_status(errno, "syncing", tmp);
        goto cleanup;
    }
    close(fd);
    fd = -1;
    if ((st = file_rename(tmp, final, false)) != EB_OK)
        goto cleanup;
    st = fsync_parent(final);
cleanup:
    if (fd >= 0)
        close(fd);
    if (st != EB_OK && tmp)
        unlink(tmp);
    free(tmp);
    free(final);
    return st;
}

static eb_status file_get(eb_store *s, const char *key, eb_buf *out, size_t max)
{
    eb_status st = EB_OK;
    char *path = file_path(s, key, NULL);
    size_t mark = out->len;
    struct stat sb;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        st = errno == ENOENT || errno == ENOTDIR
                 ? eb_error(EB_ERR_NOT_FOUND, "store: no object %s", key)
                 : errno_status(errno, "opening", path);
        goto cleanup;
    }
    if (fstat(fd, &sb) != 0) {
        st = errno_status(errno, "reading", path);
        goto cleanup;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = eb_error(EB_ERR_NOT_FOUND, "store: no object %s", key);
        goto cleanup;
    }
    if ((uint64_t)sb.st_size > max) {
        st = eb_error(EB_ERR_TOO_LARGE, "store: object %s has %lld bytes, more than %zu", key,
                      (long long)sb.st_size, max);
        goto cleanup;
    }
    eb_buf_reserve(out, (size_t)sb.st_size + 1);
    for (;;) {
        char chunk[65536];
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = errno_status(errno, "reading", path);
            goto cleanup;
        }
        if (r == 0)
            break;
        if (out->len - mark + (size_t)r > max) {
            st = eb_error(EB_ERR_TOO_LARGE, "store: object %s has more than %zu bytes", key, max);
            goto cleanup;
        }
        eb_buf_append(out, chunk, (size_t)r);
    }
cleanup:
    if (st != EB_OK && out->len > mark) {
        out->len = mark;
        out->data[mark] = '\0';
    }
    if (fd >= 0)
        close(fd);
    free(path);
    return st;
}

static eb_status file_delete(eb_store *s, const char *key)
{
    eb_status st = EB_OK;
    char *path = file_path(s, key, NULL);

    if (unlink(path) != 0 && errno != ENOENT && errno != ENOTDIR && errno != EISDIR)
        st = errno_status(errno, "removing", path);
    free(path);
    return st;
}

typedef struct upload_list {
    eb_store_upload *items;
    size_t n, cap;
} upload_list;

static eb_status list_add(upload_list *l, char *key, char *id)
{
    if (l->n == MAX_LISTED_UPLOADS) {
        free(key);
        free(id);
        return eb_error(EB_ERR_TOO_LARGE, "store: more than %d unfinished uploads",
                        MAX_LISTED_UPLOADS);
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->items = eb_realloc(l->items, l->cap * sizeof *l->items);
    }
    l->items[l->n].key = key;
    l->items[l->n].upload_id = id;
    l->n++;
    return EB_OK;
}

/* Walks dir (relative name rel, "" at the root) for "<name>.<id>.partial" files. */
static eb_status file_walk(const char *dir, const char *rel, const char *want, upload_list *l,
                           int depth)
{
    eb_status st = EB_OK;
    DIR *d = NULL;
    struct dirent *e;
    static const char ext[] = ".partial";
    const size_t tail = 1 + FILE_ID_LEN + sizeof ext - 1;

    if (depth > EB_STORE_MAX_KEY / 2)
        return EB_OK;
    d = opendir(dir);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR)
            return EB_OK;
        return errno_status(errno, "listing", dir);
    }
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        size_t nl = strlen(name);
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        char *path = eb_asprintf("%s/%s", dir, name);
        char *relname = eb_asprintf("%s%s%s", rel, *rel ? "/" : "", name);
        struct stat sb;
        if (lstat(path, &sb) != 0) {
            free(path);
            free(relname);
            continue; /* gone meanwhile */
        }
        if (S_ISDIR(sb.st_mode)) {
            st = file_walk(path, relname, want, l, depth + 1);
        } else if (S_ISREG(sb.st_mode) && nl > tail &&
                   strcmp(name + nl - (sizeof ext - 1), ext) == 0 && name[nl - tail] == '.') {
            char id[FILE_ID_LEN + 1];
            memcpy(id, name + nl - tail + 1, FILE_ID_LEN);
            id[FILE_ID_LEN] = '\0';
            size_t kl = strlen(relname) - tail;
            if (is_lower_hex(id, FILE_ID_LEN) && strncmp(relname, want, strlen(want)) == 0 &&
                kl >= strlen(want))
                st = list_add(l, eb_strndup(relname, kl), eb_strdup(id));
        }
        free(path);
        free(relname);
        if (st != EB_OK)
            break;
    }
    closedir(d);
    return st;
}

/* ============================================================================================
 * s3 backend
 * ========================================================================================== */

/* One request as the caller describes it. */
typedef struct s3_call {
    const char *what; /* S3 operation name, for messages */
    const char *method;
    const char *key; /* relative to the prefix; NULL for the bucket */
    const eb_sigv4_pair *query;
    size_t nquery;
    const char *content_type;
    bool if_none_match;
    const void *body;
    size_t body_len;
    size_t max_body;   /* largest successful answer body accepted */
    bool error_in_200; /* a 2xx whose body is <Error> is a failure */
} s3_call;

/* The answer. */
typedef struct s3_reply {
    long http;
    eb_buf body;
    char etag[256];
    char request_id[128];
    time_t server_date;
    size_t limit; /* current body limit */
    bool too_large;
    int attempts;
    char code[64]; /* S3 error Code of a failed answer ("" if none) */
} s3_reply;

static void reply_reset(s3_reply *r)
{
    eb_buf_reset(&r->body);
    r->http = 0;
    r->etag[0] = r->request_id[0] = r->code[0] = '\0';
    r->server_date = 0;
    r->too_large = false;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    s3_reply *r = arg;
    size_t n = size * nmemb;
    size_t limit = r->http >= 200 && r->http < 300 ? r->limit : S3_MAX_ERROR_BODY;

    if (r->body.len + n > limit) {
        r->too_large = true;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    eb_buf_append(&r->body, p, n);
    return n;
}

static void header_value(const char *line, size_t n, size_t name_len, char *out, size_t outsz)
{
    const char *v = line + name_len;
    const char *e = line + n;

    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
        e--;
    size_t len = (size_t)(e - v) < outsz ? (size_t)(e - v) : outsz - 1;
    memcpy(out, v, len);
    out[len] = '\0';
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *arg)
{
    s3_reply *r = arg;
    size_t n = size * nmemb;
    char val[256];

    if (n > 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new response (after 100 Continue) */
        const char *sp = memchr(line, ' ', n);
        r->http = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->etag[0] = r->request_id[0] = '\0';
        r->server_date = 0;
    } else if (n > 5 && strncasecmp(line, "etag:", 5) == 0) {
        header_value(line, n, 5, val, sizeof val);
        if (!eb_store_etag_clean(val, r->etag, sizeof r->etag))
            r->etag[0] = '\0';
    } else if (n > 17 && strncasecmp(line, "x-amz-request-id:", 17) == 0) {
        header_value(line, n, 17, r->request_id, sizeof r->request_id);
    } else if (n > 5 && strncasecmp(line, "date:", 5) == 0) {
        struct tm tm = {0};
        header_value(line, n, 5, val, sizeof val);
        const char *end = strptime(val, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (end && !*end)
            r->server_date = timegm(&tm);
    }
    return n;
}

/* "s3://bucket/prefix/key" for messages. Caller frees. */
static char *s3_display(const eb_store *s, const char *key)
{
    return eb_asprintf("s3://%s/%s%s", s->loc.bucket, s->loc.prefix, key ? key : "");
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static long backoff_ms(int attempt)
{
    long ms = BACKOFF_FIRST_MS;
    unsigned int r;

    for (int i = 0; i < attempt && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    eb_random_bytes(&r, sizeof r);
    return ms / 2 + (long)(r % (unsigned)(ms / 2 + 1)); /* 50 .. 100 % */
}

/* Appends the query string as sent: name=value pairs encoded as the signer canonicalizes them
 * (a parameter without a value is sent bare: "uploads"). */
static void put_query(eb_buf *out, const eb_sigv4_pair *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        eb_buf_putc(out, i ? '&' : '?');
        eb_sigv4_uri_encode(out, q[i].name, strlen(q[i].name), false);
        if (q[i].value) {
            eb_buf_putc(out, '=');
            eb_sigv4_uri_encode(out, q[i].value, strlen(q[i].value), false);
        }
    }
}

/* One try: signs and sends. Transport failures return an error status with *retry telling
 * whether another try makes sense; an HTTP answer (any status) returns EB_OK. */
static eb_status s3_send(eb_store *s, const s3_call *c, const char *path, const char *query,
                         const char *payload_hash, s3_reply *rep, bool *retry)
{
    eb_status st = EB_OK;
    eb_sigv4_pair hdrs[3];
    size_t nh = 0;
    eb_buf signed_hdrs = {0}, url = {0}, line = {0};
    struct curl_slist *list = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *h = s->curl;
    CURLcode rc;

    *retry = false;
    hdrs[nh++] = (eb_sigv4_pair){"Host", s->host};
    if (c->content_type)
        hdrs[nh++] = (eb_sigv4_pair){"Content-Type", c->content_type};
    if (c->if_none_match)
        hdrs[nh++] = (eb_sigv4_pair){"If-None-Match", "*"};
    eb_sigv4_request r = {
        .method = c->method,
        .path = path,
        .path_rule = EB_SIGV4_PATH_S3,
        .query = c->query,
        .nquery = c->nquery,
        .headers = hdrs,
        .nheaders = nh,
        .payload_hash = payload_hash,
        .content_sha256_header = true,
        .region = s->region,
        .service = "s3",
        .access_key = s->access_key,
        .secret_key = s->secret_key,
        .session_token = s->session_token,
        .time = time(NULL) + (time_t)s->clock_offset,
    };
    if ((st = eb_sigv4_sign_headers(&r, &signed_hdrs)) != EB_OK)
        goto cleanup;
    for (size_t i = 0; i < nh; i++) {
        eb_buf_reset(&line);
        eb_buf_printf(&line, "%s: %s", hdrs[i].name, hdrs[i].value);
        list = curl_slist_append(list, line.data);
    }
    for (char *p = signed_hdrs.data; p && *p;) {
        char *end = strstr(p, "\r\n");
        if (!end)
            break;
        *end = '\0';
        list = curl_slist_append(list, p);
        p = end + 2;
    }
    list = curl_slist_append(list, "Expect:"); /* no 100-continue round trip */
    if (!c->content_type)
        list = curl_slist_append(list, "Content-Type:"); /* no form type on bodies */
    if (!list) {
        st = eb_error(EB_ERR_INTERNAL, "store: out of memory building headers");
        goto cleanup;
    }
    eb_buf_printf(&url, "%s%s%s", s->base, path, query);

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s->timeout_ms < 10000 ? s->timeout_ms : 10000L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "evalbus-store/0.1");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, rep);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, rep);
    if (strcmp(c->method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(c->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(c->method, "DELETE") == 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    } else { /* PUT, POST: the body as given (not copied), Content-Length from its size */
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body ? c->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, c->method);
    }
    rc = curl_easy_perform(h);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rep->http);
        goto cleanup;
    }
    char *where = s3_display(s, c->key);
    if (rc == CURLE_WRITE_ERROR && rep->too_large) {
        st = eb_error(EB_ERR_TOO_LARGE, "s3 %s %s: the answer is larger than %zu bytes", c->what,
                      where, rep->limit);
    } else {
        bool timeout = rc == CURLE_OPERATION_TIMEDOUT;
        /* failures a second try cannot fix: a bad URL, TLS verification, unsupported options */
        *retry = !(rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL ||
                   rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
                   rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_NOT_BUILT_IN ||
                   rc == CURLE_BAD_FUNCTION_ARGUMENT);
        st = eb_error(timeout ? EB_ERR_TIMEOUT : EB_ERR_UNAVAILABLE, "s3 %s %s: %s", c->what, where,
                      *errbuf ? errbuf : curl_easy_strerror(rc));
    }
    free(where);
cleanup:
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(list);
    eb_buf_free(&signed_hdrs);
    eb_buf_free(&url);
    eb_buf_free(&line);
    return st;
}

/* Sends c with retries. EB_OK for a 2xx answer (rep holds it); otherwise an error with S3's
 * Code and Message in the detail, rep->http and rep->code telling what came back. */
static eb_status s3_request(eb_store *s, const s3_call *c, s3_reply *rep)
{
    eb_status st = EB_OK;
    eb_buf path = {0}, query = {0}, msg = {0};
    char payload_hash[65];
    bool skew_fixed = false;
    char *where = NULL;

    eb_store_s3_path(&path, s->path_style ? s->loc.bucket : NULL, s->loc.prefix, c->key);
    put_query(&query, c->query, c->nquery);
    if (!query.data)
        eb_buf_puts(&query, "");
    eb_sha256_hex(c->body ? c->body : "", c->body_len, payload_hash);
    rep->limit = c->max_body;
    for (int attempt = 0;; attempt++) {
        bool retry = false;
        reply_reset(rep);
        rep->attempts = attempt + 1;
        st = s3_send(s, c, path.data, query.data, payload_hash, rep, &retry);
        if (st != EB_OK) {
            if (!retry || attempt >= s->retries)
                goto cleanup;
            long ms = backoff_ms(attempt);
            eb_log_warn(NULL, "s3 %s: %s; retrying in %ld ms (try %d of %d)", c->what,
                        eb_error_message(), ms, attempt + 2, s->retries + 1);
            sleep_ms(ms);
            continue;
        }
        /* an HTTP answer */
        bool ok = rep->http >= 200 && rep->http < 300;
        if (rep->body.len && (!ok || c->error_in_200)) {
            eb_buf code = {0}, rid = {0};
            if (eb_store_s3_error(rep->body.data, rep->body.len, &code, &msg, &rid)) {
                ok = false;
                snprintf(rep->code, sizeof rep->code, "%s", code.data ? code.data : "");
                if (!rep->request_id[0] && rid.len)
                    snprintf(rep->request_id, sizeof rep->request_id, "%s", rid.data);
            }
            eb_buf_free(&code);
            eb_buf_free(&rid);
        }
        if (ok) {
            st = EB_OK;
            goto cleanup;
        }
        if (rep->http == 403 && strcmp(rep->code, "RequestTimeTooSkewed") == 0 && !skew_fixed &&
            rep->server_date > 0) {
            s->clock_offset = (long long)(rep->server_date - time(NULL));
            skew_fixed = true;
            eb_log_warn(NULL,
                        "s3 %s: RequestTimeTooSkewed: the server's clock is %+lld s from "
                        "ours; signing with that offset from now on",
                        c->what, s->clock_offset);
            eb_buf_reset(&msg);
            attempt--; /* this one does not count */
            continue;
        }
        free(where);
        where = s3_display(s, c->key);
        st = eb_store_s3_status(rep->http, rep->code);
        st = eb_error(st, "s3 %s %s: HTTP %ld%s%s%s%s%s%s%s", c->what, where, rep->http,
                      rep->code[0] ? " " : "", rep->code, msg.len ? ": " : "",
                      msg.len ? msg.data : "", rep->request_id[0] ? " (request " : "",
                      rep->request_id, rep->request_id[0] ? ")" : "");
        if (!eb_store_s3_retryable(rep->http, rep->code) || attempt >= s->retries)
            goto cleanup;
        long ms = backoff_ms(attempt);
        eb_log_warn(NULL, "%s; retrying in %ld ms (try %d of %d)", eb_error_message(), ms,
                    attempt + 2, s->retries + 1);
        eb_buf_reset(&msg);
        sleep_ms(ms);
    }
cleanup:
    free(where);
    eb_buf_free(&path);
    eb_buf_free(&query);
    eb_buf_free(&msg);
    return st;
}

static eb_status s3_check_key(const eb_store *s, const char *key)
{
    eb_status st = eb_store_check_key(key);

    if (st == EB_OK && strlen(s->loc.prefix) + strlen(key) > EB_STORE_MAX_KEY)
        st = eb_error(EB_ERR_INVALID, "store: prefix and key together are longer than %d bytes",
                      EB_STORE_MAX_KEY);
    return st;
}

static eb_status s3_upload_begin(eb_store *s, const char *key, const char *content_type,
                                 char **upload_id)
{
    eb_status st;
    eb_sigv4_pair q[] = {{"uploads", NULL}};
    s3_call c = {.what = "CreateMultipartUpload",
                 .method = "POST",
                 .key = key,
                 .query = q,
                 .nquery = 1,
                 .content_type = content_type ? content_type : "application/octet-stream",
                 .max_body = S3_MAX_XML,
                 .error_in_200 = true};
    s3_reply rep = {0};
    eb_buf id = {0};

    if ((st = s3_request(s, &c, &rep)) != EB_OK)
        goto cleanup;
    if (!eb_store_xml_text(rep.body.data, rep.body.len, "UploadId", &id) ||
        check_s3_upload_id(id.data) != EB_OK) {
        st = eb_error(EB_ERR_INTERNAL, "s3 CreateMultipartUpload: no usable UploadId in the "
                                       "answer");
        goto cleanup;
    }
    *upload_id = eb_buf_steal(&id);
cleanup:
    eb_buf_free(&id);
    eb_buf_free(&rep.body);
    return st;
}

static eb_status s3_upload_part(eb_store *s, const char *key, const char *upload_id, int part_no,
                                const void *data, size_t len, char **etag)
{
    eb_status st;
    char num[16];
    eb_sigv4_pair q[] = {{"partNumber", num}, {"uploadId", upload_id}};
    s3_call c = {.what = "UploadPart",
                 .method = "PUT",
                 .key = key,
                 .query = q,
                 .nquery = 2,
                 .body = data,
                 .body_len = len,
                 .max_body = S3_MAX_XML};
    s3_reply rep = {0};

    snprintf(num, sizeof num, "%d", part_no);
    if ((st = s3_request(s, &c, &rep)) != EB_OK)
        goto cleanup;
    if (!rep.etag[0]) {
        st = eb_error(EB_ERR_INTERNAL, "s3 UploadPart: the answer has no ETag");
        goto cleanup;
    }
    *etag = eb_strdup(rep.etag);
cleanup:
    eb_buf_free(&rep.body);
    return st;
}

/* The ETag S3 gives a multipart object: MD5 over the parts' binary MD5s, "-", the part count.
 * false if a part's ETag is not an MD5 (then nothing can be predicted). */
static bool multipart_etag(const eb_store_part *parts, size_t n, char *out, size_t outsz)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL);

    for (size_t i = 0; ok && i < n; i++) {
        char e[256];
        unsigned char bin[16];
        if (!eb_store_etag_clean(parts[i].etag, e, sizeof e) || strlen(e) != 32) {
            ok = false;
            break;
        }
        for (int k = 0; k < 16; k++) {
            int hi = eb_hex_digit(e[2 * k]), lo = eb_hex_digit(e[2 * k + 1]);
            if (hi < 0 || lo < 0) {
                ok = false;
                break;
            }
            bin[k] = (unsigned char)(hi * 16 + lo);
        }
        ok = ok && EVP_DigestUpdate(ctx, bin, sizeof bin);
    }
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 16 && outsz >= 32 + 12;
    if (ok) {
        eb_hex_encode(md, 16, out);
        snprintf(out + 32, outsz - 32, "-%zu", n);
    }
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* After a retried completion says the upload is gone: did an earlier try complete it? */
static bool s3_completed_already(eb_store *s, const char *key, const eb_store_part *parts, size_t n)
{
    s3_call c = {.what = "HeadObject", .method = "HEAD", .key = key};
    s3_reply rep = {0};
    char want[64];
    bool done = false;

    if (multipart_etag(parts, n, want, sizeof want) && s3_request(s, &c, &rep) == EB_OK)
        done = strcasecmp(rep.etag, want) == 0;
    eb_buf_free(&rep.body);
    return done;
}

static eb_status s3_upload_complete(eb_store *s, const char *key, const char *upload_id,
                                    const eb_store_part *parts, size_t n)
{
    eb_status st;
    eb_sigv4_pair q[] = {{"uploadId", upload_id}};
    eb_buf xml = {0};
    s3_reply rep = {0};

    eb_buf_puts(&xml, "<CompleteMultipartUpload "
                      "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (size_t i = 0; i < n; i++) {
        char e[256];
        eb_store_etag_clean(parts[i].etag, e, sizeof e);
        eb_buf_printf(&xml, "<Part><PartNumber>%d</PartNumber><ETag>&quot;", parts[i].part_no);
        eb_store_xml_escape(&xml, e);
        eb_buf_puts(&xml, "&quot;</ETag></Part>");
    }
    eb_buf_puts(&xml, "</CompleteMultipartUpload>");
    s3_call c = {.what = "CompleteMultipartUpload",
                 .method = "POST",
                 .key = key,
                 .query = q,
                 .nquery = 1,
                 .content_type = "application/xml",
                 .if_none_match = s->no_overwrite,
                 .body = xml.data,
                 .body_len = xml.len,
                 .max_body = S3_MAX_XML,
                 .error_in_200 = true};
    st = s3_request(s, &c, &rep);
    if (st != EB_OK && rep.attempts > 1 &&
        (strcmp(rep.code, "NoSuchUpload") == 0 || rep.http == 412) &&
        s3_completed_already(s, key, parts, n)) {
        eb_log_warn(NULL, "s3 CompleteMultipartUpload: an earlier try completed the upload");
        st = EB_OK;
    }
    eb_buf_free(&xml);
    eb_buf_free(&rep.body);
    return st;
}

static eb_status s3_upload_abort(eb_store *s, const char *key, const char *upload_id)
{
    eb_status st;
    eb_sigv4_pair q[] = {{"uploadId", upload_id}};
    s3_call c = {.what = "AbortMultipartUpload",
                 .method = "DELETE",
                 .key = key,
                 .query = q,
                 .nquery = 1,
                 .max_body = S3_MAX_XML};
    s3_reply rep = {0};

    st = s3_request(s, &c, &rep);
    if (st == EB_ERR_NOT_FOUND && strcmp(rep.code, "NoSuchBucket") != 0)
        st = EB_OK; /* NoSuchUpload: gone already */
    eb_buf_free(&rep.body);
    return st;
}

static eb_status s3_list_uploads(eb_store *s, const char *key_prefix, upload_list *l)
{
    eb_status st = EB_OK;
    char *prefix = eb_asprintf("%s%s", s->loc.prefix, key_prefix ? key_prefix : "");
    char *key_marker = NULL, *id_marker = NULL;
    size_t plen = strlen(s->loc.prefix);
    s3_reply rep = {0};
    eb_buf a = {0}, b = {0};

    for (int page = 0;; page++) {
        eb_sigv4_pair q[4] = {{"uploads", NULL}, {"prefix", prefix}};
        size_t nq = 2;
        if (key_marker)
            q[nq++] = (eb_sigv4_pair){"key-marker", key_marker};
        if (id_marker)
            q[nq++] = (eb_sigv4_pair){"upload-id-marker", id_marker};
        s3_call c = {.what = "ListMultipartUploads",
                     .method = "GET",
                     .key = NULL,
                     .query = q,
                     .nquery = nq,
                     .max_body = S3_MAX_XML};
        if ((st = s3_request(s, &c, &rep)) != EB_OK)
            goto cleanup;
        size_t pos = 0, il;
        const char *inner;
        while (eb_store_xml_next(rep.body.data, rep.body.len, "Upload", &pos, &inner, &il)) {
            eb_buf_reset(&a);
            eb_buf_reset(&b);
            if (!eb_store_xml_text(inner, il, "Key", &a) ||
                !eb_store_xml_text(inner, il, "UploadId", &b)) {
                st = eb_error(EB_ERR_INTERNAL, "s3 ListMultipartUploads: an <Upload> without "
                                               "Key or UploadId");
                goto cleanup;
            }
            if (a.len < plen || memcmp(a.data, s->loc.prefix, plen) != 0)
                continue;
            if ((st = list_add(l, eb_strdup(a.data + plen), eb_strdup(b.data))) != EB_OK)
                goto cleanup;
        }
        eb_buf_reset(&a);
        if (!eb_store_xml_text(rep.body.data, rep.body.len, "IsTruncated", &a) ||
            strcmp(a.data, "true") != 0)
            break;
        eb_buf_reset(&a);
        eb_buf_reset(&b);
        if (!eb_store_xml_text(rep.body.data, rep.body.len, "NextKeyMarker", &a) ||
            !eb_store_xml_text(rep.body.data, rep.body.len, "NextUploadIdMarker", &b) ||
            (key_marker && strcmp(key_marker, a.data) == 0 && id_marker &&
             strcmp(id_marker, b.data) == 0)) {
            st = eb_error(EB_ERR_INTERNAL, "s3 ListMultipartUploads: a truncated page without "
                                           "new markers");
            goto cleanup;
        }
        free(key_marker);
        free(id_marker);
        key_marker = eb_strdup(a.data);
        id_marker = eb_strdup(b.data);
    }
cleanup:
    free(prefix);
    free(key_marker);
    free(id_marker);
    eb_buf_free(&a);
    eb_buf_free(&b);
    eb_buf_free(&rep.body);
    return st;
}

static eb_status s3_ensure_bucket(eb_store *s)
{
    eb_status st;
    eb_buf body = {0};
    s3_reply rep = {0};

    if (strcmp(s->region, "us-east-1") != 0) /* AWS wants the region unless it is us-east-1 */
        eb_buf_printf(&body,
                      "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/"
                      "2006-03-01/\"><LocationConstraint>%s</LocationConstraint>"
                      "</CreateBucketConfiguration>",
                      s->region);
    s3_call c = {.what = "CreateBucket",
                 .method = "PUT",
                 .key = NULL,
                 .content_type = body.len ? "application/xml" : NULL,
                 .body = body.data,
                 .body_len = body.len,
                 .max_body = S3_MAX_XML};
    st = s3_request(s, &c, &rep);
    if (st == EB_ERR_CONFLICT && strcmp(rep.code, "BucketAlreadyOwnedByYou") == 0) {
        st = EB_OK;
    } else if (st == EB_ERR_CONFLICT && strcmp(rep.code, "BucketAlreadyExists") == 0) {
        /* some stores say this for a bucket of our own too: ours if we may look at it */
        s3_call head = {.what = "HeadBucket", .method = "HEAD", .key = NULL};
        s3_reply hr = {0};
        if (s3_request(s, &head, &hr) == EB_OK)
            st = EB_OK;
        else
            st = eb_error(EB_ERR_CONFLICT,
                          "s3 CreateBucket s3://%s: the bucket exists and "
                          "belongs to someone else",
                          s->loc.bucket);
        eb_buf_free(&hr.body);
    }
    eb_buf_free(&body);
    eb_buf_free(&rep.body);
    return st;
}

/* ============================================================================================
 * public functions: checks, then the backend
 * ========================================================================================== */

static eb_status check_store(const eb_store *s)
{
    return s ? EB_OK : eb_error(EB_ERR_INVALID, "store: no store");
}

eb_status eb_store_ensure_bucket(eb_store *s)
{
    eb_status st;

    if ((st = check_store(s)) != EB_OK)
        return st;
    if (s->kind == EB_STORE_S3)
        return s3_ensure_bucket(s);
    char *probe = eb_asprintf("%s/x", s->loc.root);
    st = mkdir_parents(probe);
    free(probe);
    return st;
}

eb_status eb_store_upload_begin(eb_store *s, const char *key, const char *content_type,
                                char **upload_id)
{
    eb_status st;

    *upload_id = NULL;
    if ((st = check_store(s)) != EB_OK)
        return st;
    if (s->kind == EB_STORE_S3)
        return (st = s3_check_key(s, key)) != EB_OK
                   ? st
                   : s3_upload_begin(s, key, content_type, upload_id);
    if ((st = eb_store_check_key(key)) != EB_OK)
        return st;
    return file_upload_begin(s, key, upload_id);
}

eb_status eb_store_upload_part(eb_store *s, const char *key, const char *upload_id, int part_no,
                               uint64_t offset, const void *data, size_t len, char **etag)
{
    eb_status st;

    *etag = NULL;
    if ((st = check_store(s)) != EB_OK || (st = check_part_no(part_no)) != EB_OK)
        return st;
    if (len > EB_STORE_MAX_PART)
        return eb_error(EB_ERR_TOO_LARGE, "store: part %d is larger than 5 GiB", part_no);
    if (len && !data)
        return eb_error(EB_ERR_INVALID, "store: part %d has no data", part_no);
    if (s->kind == EB_STORE_S3) {
        if ((st = s3_check_key(s, key)) != EB_OK || (st = check_s3_upload_id(upload_id)) != EB_OK)
            return st;
        return s3_upload_part(s, key, upload_id, part_no, data, len, etag);
    }
    if ((st = check_file_upload(key, upload_id)) != EB_OK)
        return st;
    return file_upload_part(s, key, upload_id, part_no, offset, data, len, etag);
}

eb_status eb_store_upload_complete(eb_store *s, const char *key, const char *upload_id,
                                   const eb_store_part *parts, size_t n)
{
    eb_status st;

    if ((st = check_store(s)) != EB_OK || (st = check_part_list(parts, n)) != EB_OK)
        return st;
    if (s->kind == EB_STORE_S3) {
        if ((st = s3_check_key(s, key)) != EB_OK || (st = check_s3_upload_id(upload_id)) != EB_OK)
            return st;
        return s3_upload_complete(s, key, upload_id, parts, n);
    }
    if ((st = check_file_upload(key, upload_id)) != EB_OK)
        return st;
    return file_upload_complete(s, key, upload_id, parts, n);
}

eb_status eb_store_upload_abort(eb_store *s, const char *key, const char *upload_id)
{
    eb_status st;

    if ((st = check_store(s)) != EB_OK)
        return st;
    if (s->kind == EB_STORE_S3) {
        if ((st = s3_check_key(s, key)) != EB_OK || (st = check_s3_upload_id(upload_id)) != EB_OK)
            return st;
        return s3_upload_abort(s, key, upload_id);
    }
    if ((st = check_file_upload(key, upload_id)) != EB_OK)
        return st == EB_ERR_NOT_FOUND ? EB_OK : st; /* no such upload: nothing to drop */
    return file_upload_abort(s, key, upload_id);
}

eb_status eb_store_list_uploads(eb_store *s, const char *key_prefix, eb_store_upload **out,
                                size_t *n)
{
    eb_status st;
    upload_list l = {0};

    *out = NULL;
    *n = 0;
    if ((st = check_store(s)) != EB_OK)
        return st;
    if (key_prefix && *key_prefix) {
        for (const char *p = key_prefix; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return eb_error(EB_ERR_INVALID, "store: key prefix has a control character");
        if (strlen(key_prefix) > EB_STORE_MAX_KEY)
            return eb_error(EB_ERR_INVALID, "store: key prefix is too long");
    }
    if (s->kind == EB_STORE_S3)
        st = s3_list_uploads(s, key_prefix, &l);
    else
        st = file_walk(s->loc.root, "", key_prefix ? key_prefix : "", &l, 0);
    if (st != EB_OK) {
        eb_store_uploads_free(l.items, l.n);
        return st;
    }
    *out = l.items;
    *n = l.n;
    return EB_OK;
}

void eb_store_uploads_free(eb_store_upload *u, size_t n)
{
    if (!u)
        return;
    for (size_t i = 0; i < n; i++) {
        free(u[i].key);
        free(u[i].upload_id);
    }
    free(u);
}

eb_status eb_store_put(eb_store *s, const char *key, const char *content_type, const void *data,
                       size_t len)
{
    eb_status st;

    if ((st = check_store(s)) != EB_OK)
        return st;
    if (len && !data)
        return eb_error(EB_ERR_INVALID, "store: put without data");
    if (len > EB_STORE_MAX_PART)
        return eb_error(EB_ERR_TOO_LARGE, "store: put is for objects up to 5 GiB; use a "
                                          "multipart upload");
    if (s->kind == EB_STORE_FILE)
        return (st = eb_store_check_key(key)) != EB_OK ? st : file_put(s, key, data, len);
    if ((st = s3_check_key(s, key)) != EB_OK)
        return st;
    s3_call c = {.what = "PutObject",
                 .method = "PUT",
                 .key = key,
                 .content_type = content_type ? content_type : "application/octet-stream",
                 .body = data,
                 .body_len = len,
                 .max_body = S3_MAX_XML};
    s3_reply rep = {0};
    st = s3_request(s, &c, &rep);
    eb_buf_free(&rep.body);
    return st;
}

eb_status eb_store_get(eb_store *s, const char *key, eb_buf *out, size_t max)
{
    eb_status st;

    if ((st = check_store(s)) != EB_OK)
        return st;
    if (s->kind == EB_STORE_FILE)
        return (st = eb_store_check_key(key)) != EB_OK ? st : file_get(s, key, out, max);
    if ((st = s3_check_key(s, key)) != EB_OK)
        return st;
    s3_call c = {.what = "GetObject", .method = "GET", .key = key, .max_body = max};
    s3_reply rep = {0};
    st = s3_request(s, &c, &rep);
    if (st == EB_OK)
        eb_buf_append(out, rep.body.data ? rep.body.data : "", rep.body.len);
    else if (st == EB_ERR_TOO_LARGE)
        st = eb_error(EB_ERR_TOO_LARGE, "s3 GetObject %s%s: more than %zu bytes", s->loc.prefix,
                      key, max);
    eb_buf_free(&rep.body);
    return st;
}

eb_status eb_store_delete(eb_store *s, const char *key)
{
    eb_status st;

    if ((st = check_store(s)) != EB_OK)
        return st;
    if (s->kind == EB_STORE_FILE)
        return (st = eb_store_check_key(key)) != EB_OK ? st : file_delete(s, key);
    if ((st = s3_check_key(s, key)) != EB_OK)
        return st;
    s3_call c = {.what = "DeleteObject", .method = "DELETE", .key = key, .max_body = S3_MAX_XML};
    s3_reply rep = {0};
    st = s3_request(s, &c, &rep);
    if (st == EB_ERR_NOT_FOUND && strcmp(rep.code, "NoSuchBucket") != 0)
        st = EB_OK;
    eb_buf_free(&rep.body);
    return st;
}

eb_status eb_store_presign_get(eb_store *s, const char *key, int expires_s, char **url)
{
    eb_status st;
    eb_buf path = {0}, out = {0};

    *url = NULL;
    if ((st = check_store(s)) != EB_OK)
        return st;
    if (s->kind != EB_STORE_S3)
        return eb_error(EB_ERR_INVALID, "store: presigned URLs need an s3:// store (use the "
                                        "local path of a file:// store)");
    if ((st = s3_check_key(s, key)) != EB_OK)
        return st;
    if (expires_s < 1 || (unsigned)expires_s > EB_SIGV4_MAX_EXPIRES)
        return eb_error(EB_ERR_INVALID, "store: a presigned URL lasts 1 to %u seconds",
                        EB_SIGV4_MAX_EXPIRES);
    eb_store_s3_path(&path, s->path_style ? s->loc.bucket : NULL, s->loc.prefix, key);
    eb_sigv4_pair host = {"Host", s->host};
    eb_sigv4_request r = {
        .method = "GET",
        .path = path.data,
        .path_rule = EB_SIGV4_PATH_S3,
        .headers = &host,
        .nheaders = 1,
        .payload_hash = EB_SIGV4_UNSIGNED_PAYLOAD,
        .region = s->region,
        .service = "s3",
        .access_key = s->access_key,
        .secret_key = s->secret_key,
        .session_token = s->session_token,
        .time = time(NULL) + (time_t)s->clock_offset,
        .expires = (unsigned)expires_s,
    };
    if ((st = eb_sigv4_presign(&r, s->base, &out)) == EB_OK)
        *url = eb_buf_steal(&out);
    eb_buf_free(&path);
    eb_buf_free(&out);
    return st;
}

eb_status eb_store_local_path(eb_store *s, const char *key, char **path)
{
    eb_status st;

    *path = NULL;
    if ((st = check_store(s)) != EB_OK)
        return st;
    if (s->kind != EB_STORE_FILE)
        return eb_error(EB_ERR_INVALID, "store: an s3:// store has no local paths");
    if ((st = eb_store_check_key(key)) != EB_OK)
        return st;
    *path = file_path(s, key, NULL);
    return EB_OK;
}

eb_status eb_store_url(eb_store *s, const char *key, char **url)
{
    eb_status st;

    *url = NULL;
    if ((st = check_store(s)) != EB_OK)
        return st;
    if (s->kind == EB_STORE_S3) {
        if ((st = s3_check_key(s, key)) != EB_OK)
            return st;
        *url = s3_display(s, key);
        return EB_OK;
    }
    if ((st = eb_store_check_key(key)) != EB_OK)
        return st;
    char *path = file_path(s, key, NULL);
    eb_buf b = {0};
    eb_buf_puts(&b, "file://");
    eb_sigv4_uri_encode(&b, path, strlen(path), true);
    free(path);
    *url = eb_buf_steal(&b);
    return EB_OK;
}
