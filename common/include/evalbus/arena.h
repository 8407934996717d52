/* arena.h -- bump allocation for trees that die together (a parsed request, a writer batch, an
 * exported row).
 *
 * An arena hands out memory from large chunks and frees it all at once; single frees are
 * no-ops. Users: ingest parses a JSON batch on a pool thread into one (through cJSON's global
 * hooks, active only where a thread has bound an arena) and unpacks a writer batch's
 * IngestRecords into one (through protobuf-c's allocator); export parses each row into one. */
#ifndef EVALBUS_ARENA_H
#define EVALBUS_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct eb_arena eb_arena;

/* A new, empty arena; free it with eb_arena_free. */
eb_arena *eb_arena_new(void);
/* size bytes, 16-byte aligned, valid until the arena is reset or freed. Aborts when out of
 * memory. */
void *eb_arena_alloc(eb_arena *a, size_t size);
/* Frees everything allocated so far; keeps one chunk for reuse. */
void eb_arena_reset(eb_arena *a);
/* Accepts NULL. */
void eb_arena_free(eb_arena *a);
/* A protobuf-c allocator on a: unpack into it and never call free_unpacked (reset instead). */
ProtobufCAllocator eb_arena_pb_allocator(eb_arena *a);

/* cJSON on an arena: eb_arena_cjson_init installs hooks (once, before any thread starts)
 * that allocate from the arena bound to the calling thread, or with malloc / free where none is
 * bound. Between bind(a) and bind(NULL) every cJSON allocation of this thread comes from a, and
 * a cJSON free of memory in a is a no-op (other memory is freed as usual): nothing allocated
 * then may outlive the next reset of a (bind only around work whose trees die with it). */
void eb_arena_cjson_init(void);
void eb_arena_cjson_bind(eb_arena *a);

#endif
