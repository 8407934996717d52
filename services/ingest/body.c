/* body.c -- request bodies for ingest: Content-Encoding gzip, bounded after inflation, and
 * JSON bodies bounded in what they take parsed (as protobuf ones are: otlp.c).
 * Works on bytes and a header value only, so pool threads run it. */
#include "body.h"

#include "evalbus/mem.h"

#include <cjson/cJSON.h>

#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

eb_status ingest_body_decode(const char *raw, size_t raw_len, const char *enc, size_t max_inflated,
                             const char **data, size_t *len, char **owned)
{
    z_stream zs;
    eb_buf out = {0};
    int zr;

    *owned = NULL;
    if (!enc || !*enc || strcasecmp(enc, "identity") == 0) {
        *data = raw;
        *len = raw_len;
        return EB_OK;
    }
    /* x-gzip is gzip's old name, which RFC 9110 (8.4.1.3) asks recipients to take as gzip */
    if (strcasecmp(enc, "gzip") != 0 && strcasecmp(enc, "x-gzip") != 0)
        return eb_error(EB_ERR_INVALID, "Content-Encoding %s is not supported (use gzip)", enc);
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        return eb_error(EB_ERR_INTERNAL, "zlib initialisation failed");
    zs.next_in = (Bytef *)(uintptr_t)raw;
    zs.avail_in = (uInt)raw_len;
    do {
        eb_buf_reserve(&out, 65536);
        zs.next_out = (Bytef *)out.data + out.len;
        zs.avail_out = (uInt)(out.cap - out.len - 1);
        zr = inflate(&zs, Z_NO_FLUSH);
        out.len = (size_t)((char *)zs.next_out - out.data);
        if (out.len > max_inflated) {
            inflateEnd(&zs);
            eb_buf_free(&out);
            return eb_error(EB_ERR_TOO_LARGE,
                            "the inflated body exceeds the limit of %zu bytes (max-body)",
                            max_inflated);
        }
        /* a gzip body may hold several members one after another (RFC 1952): inflate all */
        if (zr == Z_STREAM_END && zs.avail_in > 0)
            zr = inflateReset(&zs);
    } while (zr == Z_OK);
    inflateEnd(&zs);
    if (zr != Z_STREAM_END) {
        eb_buf_free(&out);
        return eb_error(EB_ERR_INVALID, "the gzip body is corrupt or truncated");
    }
    out.data[out.len] = '\0';
    *len = out.len;
    *owned = eb_buf_steal(&out);
    *data = *owned;
    return EB_OK;
}

/* Bytes a JSON body may take parsed, per byte of it (the protobuf decoders' bound, otlp.c). */
#define JSON_PARSED_FACTOR 16

eb_status ingest_body_json_fits(const char *data, size_t n)
{
    size_t values = 1, budget;

    /* every value but the first follows a ',', a '[' or a '{' outside strings */
    for (size_t i = 0; i < n; i++) {
        char ch = data[i];

        if (ch == '"') {
            /* to the closing quote: one not preceded by an odd number of backslashes */
            for (;;) {
                const char *q = memchr(data + i + 1, '"', n - i - 1);
                size_t bs = 0;

                if (!q) {
                    i = n; /* unterminated (the parser refuses it, after the values before) */
                    break;
                }
                i = (size_t)(q - data);
                while (data[i - 1 - bs] == '\\')
                    bs++;
                if (bs % 2 == 0)
                    break;
            }
        } else if (ch == ',' || ch == '[' || ch == '{') {
            values++;
        }
    }
    budget = n > (SIZE_MAX - (1u << 20)) / JSON_PARSED_FACTOR ? SIZE_MAX
                                                              : n * JSON_PARSED_FACTOR + (1u << 20);
    if (values > budget / sizeof(cJSON))
        return eb_error(EB_ERR_TOO_LARGE,
                        "the body holds up to %zu JSON values: parsed, it would take more than %d "
                        "times its size",
                        values, JSON_PARSED_FACTOR);
    return EB_OK;
}
