/* mem.h -- allocation that aborts on failure, and a growable byte buffer.
 * Allocation failure is not a recoverable error in evalbus: eb_malloc() and friends print a
 * message and abort. Sizes that come from untrusted input must be checked against limits
 * before they reach these functions. */
#ifndef EVALBUS_MEM_H
#define EVALBUS_MEM_H

#include <stdarg.h>
#include <stddef.h>

void *eb_malloc(size_t n);
void *eb_calloc(size_t count, size_t size);
void *eb_realloc(void *p, size_t n);
/* Copies s (NULL gives NULL). The caller frees. */
char *eb_strdup(const char *s);
char *eb_strndup(const char *s, size_t n);
/* printf into a new string. The caller frees. */
char *eb_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Appends item to a malloc'd array arr of n elements (n a size_t lvalue, 0 for an empty arr),
 * growing it at powers of two. */
#define EB_PUSH(arr, n, item)                                                                      \
    do {                                                                                           \
        if (((n) & ((n)-1)) == 0)                                                                  \
            (arr) = eb_realloc((arr), ((n) ? 2 * (n) : 1) * sizeof *(arr));                        \
        (arr)[(n)++] = (item);                                                                     \
    } while (0)

/* A growable buffer, always NUL-terminated after its len bytes. Zero-initialise to start
 * (eb_buf b = {0};); eb_buf_free() releases the memory. */
typedef struct eb_buf {
    char *data;
    size_t len;
    size_t cap;
} eb_buf;

void eb_buf_reserve(eb_buf *b, size_t extra);
void eb_buf_append(eb_buf *b, const void *p, size_t n);
void eb_buf_puts(eb_buf *b, const char *s);
void eb_buf_putc(eb_buf *b, char c);
void eb_buf_printf(eb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void eb_buf_vprintf(eb_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void eb_buf_reset(eb_buf *b);
/* Gives the data to the caller (who frees it) and leaves b empty. */
char *eb_buf_steal(eb_buf *b);
void eb_buf_free(eb_buf *b);

#endif
