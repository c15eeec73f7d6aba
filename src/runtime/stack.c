#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stack.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define LAHJA_HAVE_VALGRIND 1
#endif
#endif

size_t lahja_page_size(void)
{
    static size_t page;
    if (page == 0) {
        long p = sysconf(_SC_PAGESIZE);
        page = p > 0 ? (size_t)p : 4096;
    }
    return page;
}

int lahja_stack_alloc(lahja_stack_t *st, size_t size)
{
    size_t page = lahja_page_size();
    if (size < page || size > ((size_t)1 << 40))
        return -EINVAL;
    size = (size + page - 1) & ~(page - 1);
    /* MAP_NORESERVE: a deep default stack costs address space, not
     * commit charge; pages become resident only when touched. */
    char *base = mmap(NULL, size + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED)
        return -errno;
    if (mprotect(base, page, PROT_NONE) != 0) {
        int err = -errno;
        munmap(base, size + page);
        return err;
    }
    st->lo = base + page;
    st->size = size;
    st->vg_id = 0;
#ifdef LAHJA_HAVE_VALGRIND
    st->vg_id = VALGRIND_STACK_REGISTER(st->lo, (char *)st->lo + size);
#endif
    return 0;
}

void lahja_stack_free(lahja_stack_t *st)
{
    if (st->lo == NULL)
        return;
#ifdef LAHJA_HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(st->vg_id);
#endif
    size_t page = lahja_page_size();
    munmap((char *)st->lo - page, st->size + page);
    memset(st, 0, sizeof *st);
}
