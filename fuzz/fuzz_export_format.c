/* fuzz_export_format.c -- libFuzzer target for the export format writers (services/export/
 * format.c) and the dataset statistics (stats.c).
 * The first input byte picks the format and whether anonymization is on; the rest is parsed as a
 * JSON record (as the view ingest.export_traces would hand it over, but with any shape). Checked
 * beyond "no crash, leak or sanitizer report": for the JSON-lines formats every byte written is
 * valid UTF-8 and every line parses as JSON; the json format's whole document parses after end;
 * the statistics always serialize. */
#include "format.h"
#include "redact.h"
#include "stats.h"

#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_key[] = "fuzz-team-key-0123456789abcdef";
static redactor *fuzz_redactor;

static void check_lines(const eb_buf *out)
{
    const char *p, *end;

    if (out->len == 0)
        return; /* the record was skipped */
    p = out->data;
    end = out->data + out->len;
    if (!eb_utf8_valid(out->data, out->len))
        abort();
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        cJSON *line;
        if (!nl)
            abort(); /* every record ends with a newline */
        line = cJSON_ParseWithLength(p, (size_t)(nl - p));
        if (!line)
            abort();
        cJSON_Delete(line);
        p = nl + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    export_options opt = {0};
    export_writer *w = NULL;
    export_stats *stats = NULL;
    eb_buf out = {0};
    cJSON *rec, *js;
    export_format f;

    if (size < 1)
        return 0;
    if (!fuzz_redactor) {
        redact_config rc = {0};
        rc.key = fuzz_key;
        rc.key_len = sizeof(fuzz_key) - 1;
        if (redact_new(&rc, &fuzz_redactor) != EB_OK)
            abort();
    }
    f = (export_format)(data[0] % EXPORT_FORMAT_COUNT);
    opt.format = f;
    opt.redact = data[0] & 0x80 ? fuzz_redactor : NULL;
    opt.exported_at = "2026-11-22T00:00:00Z";
    rec = cJSON_ParseWithLength((const char *)data + 1, size - 1);
    if (!rec)
        return 0;
    if (export_writer_new(&opt, &w) != EB_OK)
        abort();
    stats = export_stats_new();
    if (export_writer_begin(w, &out) == EB_OK && f != EXPORT_JSON && f != EXPORT_CSV)
        out.len = 0;
    if (export_writer_record(w, rec, &out, stats) == EB_OK) {
        if (f != EXPORT_JSON && f != EXPORT_CSV)
            check_lines(&out);
        if (f == EXPORT_JSON && export_writer_end(w, stats, &out) == EB_OK) {
            cJSON *doc = cJSON_ParseWithLength(out.data, out.len);
            if (!doc)
                abort();
            cJSON_Delete(doc);
        }
    }
    js = export_stats_json(stats);
    if (!js)
        abort();
    cJSON_Delete(js);
    cJSON_Delete(rec);
    export_stats_free(stats);
    export_writer_free(w);
    eb_buf_free(&out);
    return 0;
}
