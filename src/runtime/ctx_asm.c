/*
 * Context creation for the assembly switches (ctx_x86_64.S,
 * ctx_arm64.S): lays out a fresh stack so that the switch's epilogue
 * "returns" into lahja_ctx_trampoline, which calls entry(arg).
 */
#include <stdint.h>
#include <string.h>

#include "ctx.h"

void lahja_ctx_trampoline(void);

void lahja_ctx_make(lahja_ctx_t *ctx, void *lo, size_t size,
                    void (*entry)(void *), void *arg)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
#if defined(__x86_64__)
    /* What lahja_ctx_switch pops, lowest address first: the FP control
     * words, r15, r14, r13 (arg), r12 (entry), rbx, rbp, return address.
     * The return address sits at top - 8 so the trampoline starts with
     * rsp 16-byte aligned, as a call needs. */
    uint64_t *sp = (uint64_t *)(top - 64);
    memset(sp, 0, 64);
    sp[0] = 0x1F80u | ((uint64_t)0x037Fu << 32); /* mxcsr, x87 cw: ABI defaults */
    sp[3] = (uint64_t)(uintptr_t)arg;
    sp[4] = (uint64_t)(uintptr_t)entry;
    sp[7] = (uint64_t)(uintptr_t)lahja_ctx_trampoline;
    ctx->sp = sp;
#elif defined(__aarch64__)
    /* A 176-byte frame: x19..x30 then d8..d15.  x19 = entry, x20 = arg,
     * x29 (frame pointer) = 0 ends backtraces, x30 = trampoline. */
    uint64_t *sp = (uint64_t *)(top - 176);
    memset(sp, 0, 176);
    sp[0] = (uint64_t)(uintptr_t)entry;
    sp[1] = (uint64_t)(uintptr_t)arg;
    sp[11] = (uint64_t)(uintptr_t)lahja_ctx_trampoline;
    ctx->sp = sp;
#else
#error "no assembly context switch for this architecture; build with LAHJA_CONTEXT=ucontext"
#endif
}
