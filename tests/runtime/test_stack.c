/*
 * Task stacks (S4): an overflow faults at the guard page, per-task sizes
 * are honoured, and finished tasks' stacks are reused from the pool.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <lahja/lahja.h>

#include "runtime/rt.h"
#include "support_sync.h"

#define KIB ((size_t)1024)

/* Exit codes of the overflowing child. */
#define EXIT_GUARD_FAULT 42   /* SIGSEGV inside the guard page */
#define EXIT_OTHER_FAULT 43   /* SIGSEGV somewhere else */
#define EXIT_NO_FAULT 44      /* the task came back */

/* ------------------------------------------------------ guard page */

/* The guard page of the overflowing task, for the signal handler. */
static uintptr_t guard_lo, guard_hi;

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    (void)sig;
    (void)uctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    _exit(a >= guard_lo && a < guard_hi ? EXIT_GUARD_FAULT : EXIT_OTHER_FAULT);
}

/* The handler runs on its own stack: the faulting one has no room. */
static void install_segv_handler(void)
{
    static char altstack[64 * 1024];
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0)
        _exit(2);
    /* Installed after startup, so it replaces a sanitizer's handler. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0)
        _exit(3);
}

/* Records the calling task's guard page: [lo - page, lo). */
static void note_guard_page(void)
{
    void *lo;
    size_t size;
    lahja_task_stack_bounds(lahja_task_current(), &lo, &size);
    guard_hi = (uintptr_t)lo;
    guard_lo = guard_hi - lahja_page_size();
}

/* A limit the compiler cannot see through, so that it can prove neither
 * that the recursion ends nor that it does not. */
static volatile size_t depth_limit = SIZE_MAX;

/* Each frame holds a volatile array, far smaller than a page, written
 * before the next call and read after it: the recursion cannot become a
 * loop, and the first access below the stack lands in the guard page. */
__attribute__((noinline)) static size_t recurse(size_t depth)
{
    volatile char frame[256];
    frame[0] = (char)depth;
    frame[sizeof frame - 1] = (char)depth;
    if (depth >= depth_limit)
        return depth;
    return recurse(depth + 1) + (size_t)frame[0] + (size_t)frame[sizeof frame - 1];
}

static int overflow_main(void *arg)
{
    (void)arg;
    note_guard_page();
    return (int)recurse(0);
}

/* Writes one byte just below the usable stack. */
static int poke_main(void *arg)
{
    (void)arg;
    note_guard_page();
    volatile char *below = (volatile char *)(guard_hi - 1);
    *below = 1;
    return 0;
}

/* Runs fn as the main task of a small-stack runtime in a child process
 * and returns the child's exit code. */
static int child_exit_code(lahja_task_fn fn)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        install_segv_handler();
        lahja_task_options_t opts = { .name = "overflow", .stack_size = 64 * KIB };
        lahja_run(fn, NULL, &opts);
        _exit(EXIT_NO_FAULT);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/*
 * These also pass under valgrind, which delivers the fault, with its
 * address, to the handler on the alternate stack, and under ASan, whose
 * own SIGSEGV handler the one above replaces.
 */
static void test_overflow_faults_at_guard_page(void **state)
{
    (void)state;
    assert_int_equal(child_exit_code(overflow_main), EXIT_GUARD_FAULT);
}

static void test_write_below_stack_faults(void **state)
{
    (void)state;
    assert_int_equal(child_exit_code(poke_main), EXIT_GUARD_FAULT);
}

/* ------------------------------------------------------- stack sizes */

struct bounds {
    size_t size;
    uintptr_t lo;
    size_t used;
};

/* Fills `n` bytes of locals and reports the stack. */
__attribute__((noinline)) static void use_locals(struct bounds *b, size_t n)
{
    char big[512 * 1024];
    assert_true(n <= sizeof big);
    memset(big, 0xA5, n);
    /* Read back through a volatile pointer so the stores stay. */
    volatile char *p = big;
    size_t sum = 0;
    for (size_t i = 0; i < n; i += 4096)
        sum += (unsigned char)p[i];
    b->used = sum ? n : 0;
}

static int big_locals_main(void *arg)
{
    struct bounds *b = arg;
    void *lo;
    lahja_task_stack_bounds(lahja_task_current(), &lo, &b->size);
    b->lo = (uintptr_t)lo;
    use_locals(b, 512 * KIB);
    return 0;
}

static void test_task_stack_size_honoured(void **state)
{
    (void)state;
    struct bounds b = { 0, 0, 0 };
    lahja_task_options_t opts = { .stack_size = 1024 * KIB };
    assert_int_equal(lahja_run(big_locals_main, &b, &opts), 0);
    assert_true(b.size >= 1024 * KIB);
    assert_int_equal(b.lo % lahja_page_size(), 0);
    assert_int_equal(b.used, 512 * KIB);
}

static int report_bounds(void *arg)
{
    struct bounds *b = arg;
    void *lo;
    lahja_task_stack_bounds(lahja_task_current(), &lo, &b->size);
    b->lo = (uintptr_t)lo;
    return 0;
}

static int sizes_main(void *arg)
{
    (void)arg;
    lahja_rt_t *rt = lahja_rt_current();
    /* Requested sizes that are not whole pages are rounded up. */
    static const size_t sizes[] = { 0, 64 * KIB + 1, 100 * KIB + 7, 2048 * KIB };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        struct bounds b = { 0, 0, 0 };
        lahja_task_options_t opts = { .stack_size = sizes[i] };
        lahja_task_t *t;
        assert_int_equal(lahja_spawn(rt, report_bounds, &b, &opts, &t), 0);
        assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
        size_t want = sizes[i] ? sizes[i] : 256 * KIB; /* the documented default */
        assert_true(b.size >= want);
        assert_true(b.size < want + lahja_page_size());
        assert_int_equal(b.lo % lahja_page_size(), 0);
    }
    return 0;
}

static void test_reported_bounds_cover_request(void **state)
{
    (void)state;
    RUN_MAIN(sizes_main, NULL);
}

/* Recurses until `want` bytes of stack are in use, measured by frame
 * addresses (not locals: a sanitizer may move those off the stack). */
__attribute__((noinline)) static size_t recurse_to(uintptr_t top, size_t want)
{
    volatile char frame[128];
    frame[0] = 1;
    size_t used = top - (uintptr_t)__builtin_frame_address(0);
    if (used >= want)
        return used;
    return recurse_to(top, want) + (size_t)frame[0] - 1;
}

static int deep_main(void *arg)
{
    size_t *used = arg;
    *used = recurse_to((uintptr_t)__builtin_frame_address(0), 128 * KIB);
    return 0;
}

static void test_deep_recursion_in_default_stack(void **state)
{
    (void)state;
    size_t used = 0;
    RUN_MAIN(deep_main, &used);
    assert_true(used >= 128 * KIB);
}

/* ------------------------------------------------------------- pool */

static int nothing(void *arg)
{
    (void)arg;
    return 0;
}

static int pool_reuse_main(void *arg)
{
    (void)arg;
    struct lahja_rt *rt = lahja_rt_current();
    uintptr_t first_lo = 0;
    for (int i = 0; i < 1000; i++) {
        struct bounds b = { 0, 0, 0 };
        lahja_task_t *t;
        assert_int_equal(lahja_spawn(rt, report_bounds, &b, NULL, &t), 0);
        assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
        if (i == 0)
            first_lo = b.lo;
        /* One task at a time: the same object, and stack, every time. */
        assert_int_equal(b.lo, first_lo);
        assert_true(rt->nobjects <= 2); /* this task and the one child */
    }
    return 0;
}

static void test_stacks_reused_from_pool(void **state)
{
    (void)state;
    RUN_MAIN(pool_reuse_main, NULL);
}

static void test_pool_keeps_at_most_pool_size(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lahja_rt_options_t opts = { .pool_size = 4 };
    lahja_rt_t *rt;
    assert_int_equal(lahja_rt_new(&loop, &opts, &rt), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(lahja_spawn(rt, nothing, NULL, NULL, NULL), 0);
    assert_int_equal(rt->nobjects, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    /* All finished: four kept for reuse, the rest freed once their
     * timers' close callbacks ran. */
    assert_int_equal(lahja_rt_ntasks(rt), 0);
    assert_int_equal(rt->npool, 4);
    assert_int_equal(rt->nobjects, 4);
    /* Tasks with a non-default stack are not pooled. */
    lahja_task_options_t big = { .stack_size = 512 * KIB };
    assert_int_equal(lahja_spawn(rt, nothing, NULL, &big, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rt->npool, 4);
    assert_int_equal(rt->nobjects, 4);
    assert_int_equal(lahja_rt_close(rt), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_overflow_faults_at_guard_page),
        TEST(test_write_below_stack_faults),
        TEST(test_task_stack_size_honoured),
        TEST(test_reported_bounds_cover_request),
        TEST(test_deep_recursion_in_default_stack),
        TEST(test_stacks_reused_from_pool),
        TEST(test_pool_keeps_at_most_pool_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
