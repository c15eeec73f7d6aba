/*
 * The portable context switch: makecontext/swapcontext.  makecontext
 * passes only int arguments, so the entry and its argument go through
 * the context itself (its first field), read back in the trampoline.
 */
#include <stdint.h>
#include <stdlib.h>

#include "ctx.h"

struct start {
    void (*entry)(void *);
    void *arg;
};

static void trampoline(unsigned hi, unsigned lo)
{
    struct start *s = (struct start *)((uintptr_t)(((uint64_t)hi << 32) | lo));
    s->entry(s->arg);
    abort(); /* entry never returns */
}

void lahja_ctx_make(lahja_ctx_t *ctx, void *lo, size_t size,
                    void (*entry)(void *), void *arg)
{
    /* The start record lives at the top of the new stack, below what the
     * entry function will use. */
    uintptr_t top = ((uintptr_t)lo + size - sizeof(struct start)) & ~(uintptr_t)15;
    struct start *s = (struct start *)top;
    s->entry = entry;
    s->arg = arg;
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = top - (uintptr_t)lo;
    ctx->uc.uc_link = NULL;
    uint64_t p = (uint64_t)(uintptr_t)s;
    makecontext(&ctx->uc, (void (*)(void))trampoline, 2,
                (unsigned)(p >> 32), (unsigned)(p & 0xffffffffu));
}

void lahja_ctx_switch(lahja_ctx_t *from, lahja_ctx_t *to)
{
    swapcontext(&from->uc, &to->uc);
}
