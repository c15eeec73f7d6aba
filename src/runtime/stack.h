/*
 * Task stacks: mmap'ed, with an inaccessible guard page below the usable
 * part, so that an overflow faults at once instead of writing over
 * whatever lies below.  Registered with valgrind so that it follows the
 * switches.
 */
#ifndef LAHJA_STACK_H
#define LAHJA_STACK_H

#include <stddef.h>

/* Internal: never exported from the shared library. */
#pragma GCC visibility push(hidden)

typedef struct lahja_stack {
    void *lo;          /* lowest usable byte (just above the guard page) */
    size_t size;       /* usable bytes */
    unsigned vg_id;    /* valgrind stack id, 0 when not running under it */
} lahja_stack_t;

/* Page size, cached. */
size_t lahja_page_size(void);

/*
 * Maps a stack of at least `size` usable bytes (rounded up to pages).
 * Returns 0 or -ENOMEM (or another -errno from mmap/mprotect).
 */
int lahja_stack_alloc(lahja_stack_t *st, size_t size);

/* Unmaps a stack; accepts a zeroed (never allocated) one. */
void lahja_stack_free(lahja_stack_t *st);

#pragma GCC visibility pop

#endif /* LAHJA_STACK_H */
