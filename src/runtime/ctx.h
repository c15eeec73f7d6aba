/*
 * Execution contexts: the few lines that switch stacks.
 *
 * The assembly versions save only what the ABI says a callee must
 * preserve (callee-saved registers, the stack pointer, the FP control
 * words) on the stack being left, and store the stack pointer in the
 * context: a switch is a function call that returns on another stack.
 * The ucontext version (LAHJA_CTX_UCONTEXT) is the portable fallback;
 * glibc's swapcontext also saves the signal mask, one syscall per switch.
 */
#ifndef LAHJA_CTX_H
#define LAHJA_CTX_H

#include <stddef.h>
#ifdef LAHJA_CTX_UCONTEXT
#include <ucontext.h> /* outside the pragma: libc's symbols stay default */
#endif

/* Internal: never exported from the shared library. */
#pragma GCC visibility push(hidden)

#ifdef LAHJA_CTX_UCONTEXT
typedef struct lahja_ctx {
    ucontext_t uc;
} lahja_ctx_t;
#else
typedef struct lahja_ctx {
    void *sp; /* saved stack pointer; registers are on that stack */
} lahja_ctx_t;
#endif

/*
 * Prepares `ctx` so that the first switch to it calls entry(arg) on the
 * stack [lo, lo + size).  entry must never return: it ends by switching
 * away for the last time.
 */
void lahja_ctx_make(lahja_ctx_t *ctx, void *lo, size_t size,
                    void (*entry)(void *), void *arg);

/* Saves the running context in `from` and resumes `to`. */
void lahja_ctx_switch(lahja_ctx_t *from, lahja_ctx_t *to);

#pragma GCC visibility pop

#endif /* LAHJA_CTX_H */
