/* fuzz_export_record.c -- libFuzzer target for the record builder (services/export/record.c):
 * the input is taken as one binary COPY row (from its field count on). Checked beyond "no
 * crash, leak or sanitizer report": a row that builds gives a record that prints as JSON and
 * parses again; a row that does not build leaves no record. */
#include "record.h"

#include "evalbus/mem.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eb_buf scratch = {0};
    cJSON *rec = NULL;
    eb_status st = export_record_from_row((const char *)data, size, &scratch, &rec);

    if (st == EB_OK) {
        char *text = cJSON_PrintUnformatted(rec);
        cJSON *again = text ? cJSON_Parse(text) : NULL;
        if (!again)
            abort();
        cJSON_Delete(again);
        free(text);
    } else if (rec) {
        abort();
    }
    cJSON_Delete(rec);
    eb_buf_free(&scratch);
    return 0;
}
