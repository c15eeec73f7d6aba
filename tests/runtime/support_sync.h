/*
 * Helpers shared by the synchronization, queue, libuv, stack and run
 * tests.  Include after <cmocka.h> and <lahja/lahja.h>.
 */
#ifndef LAHJA_TEST_SUPPORT_SYNC_H
#define LAHJA_TEST_SUPPORT_SYNC_H

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <lahja/lahja.h>

/* The delay of every deadline test: long enough that a timer cannot fire
 * early by rounding, short enough to keep each file fast. */
#define SHORT_MS 20

/* Casts between small integers and queue items. */
#define ITEM(i) ((void *)(uintptr_t)(i))
#define ITEM_VAL(p) ((uintptr_t)(p))

/*
 * A counter tasks bump and others wait on until it reaches a value:
 * how the tests order tasks without sleeping.
 */
typedef struct counter {
    int n;
    lahja_cond_t cond;
} counter_t;

static inline void counter_init(counter_t *c)
{
    c->n = 0;
    lahja_cond_init(&c->cond);
}

static inline void counter_bump(counter_t *c)
{
    c->n++;
    lahja_cond_broadcast(&c->cond);
}

/* Waits until the counter reaches `n`; 0 or the wait's error. */
static inline int counter_wait(counter_t *c, int n)
{
    while (c->n < n) {
        int rc = lahja_cond_wait(&c->cond, LAHJA_FOREVER);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Milliseconds since `t0` on the runtime's clock. */
static inline uint64_t elapsed_since(lahja_time_t t0)
{
    return lahja_now() - t0;
}

/* Runs fn(arg) as the main task of a fresh runtime; it must return 0. */
#define RUN_MAIN(fn, arg) assert_int_equal(lahja_run((fn), (arg), NULL), 0)

/*
 * A failed assertion inside a task jumps back to the test runner and
 * leaves that task's runtime behind, so every later lahja_run would fail
 * with -EBUSY.  This setup ends the binary then instead: the first
 * failure, already reported, is the one that matters.
 */
static inline int no_runtime_left(void **state)
{
    (void)state;
    if (lahja_rt_current() != NULL) {
        fprintf(stderr, "a runtime was left behind by a failure inside a task\n");
        _exit(1);
    }
    return 0;
}

/* A test case that needs a clean thread (see no_runtime_left). */
#define TEST(f) cmocka_unit_test_setup(f, no_runtime_left)

#endif /* LAHJA_TEST_SUPPORT_SYNC_H */
