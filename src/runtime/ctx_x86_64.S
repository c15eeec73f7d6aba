/* void lahja_ctx_switch(lahja_ctx_t *from, lahja_ctx_t *to)
 * System V x86-64: rdi = from, rsi = to.  Pushes the callee-saved
 * registers and the SSE/x87 control words, stores rsp in from->sp, loads
 * to->sp and pops the same layout.  lahja_ctx_make() builds that layout
 * for a fresh stack. */
        .text
        .globl  lahja_ctx_switch
        .hidden lahja_ctx_switch
        .type   lahja_ctx_switch, @function
        .p2align 4
lahja_ctx_switch:
        .cfi_startproc
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        subq    $8, %rsp
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)
        movq    (%rsi), %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .cfi_endproc
        .size   lahja_ctx_switch, .-lahja_ctx_switch

/* First code run on a fresh stack: entry(arg) with entry in r12 and arg
 * in r13.  entry never returns; ud2 makes a bug loud if it does. */
        .globl  lahja_ctx_trampoline
        .hidden lahja_ctx_trampoline
        .type   lahja_ctx_trampoline, @function
        .p2align 4
lahja_ctx_trampoline:
        .cfi_startproc
        .cfi_undefined rip
        movq    %r13, %rdi
        callq   *%r12
        ud2
        .cfi_endproc
        .size   lahja_ctx_trampoline, .-lahja_ctx_trampoline

        .section .note.GNU-stack,"",@progbits
