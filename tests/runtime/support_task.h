/*
 * Helpers shared by the task, scope and nursery tests.
 *
 * Tests order tasks with events, never with sleeps: a gate lets the main
 * task wait until a known number of tasks have reached a point (usually
 * just before they block), so that what it does next happens while they
 * are all suspended.
 */
#ifndef LAHJA_TEST_SUPPORT_TASK_H
#define LAHJA_TEST_SUPPORT_TASK_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <uv.h>

#include <lahja/lahja.h>

/* A long guard deadline for waits that must be ended by something else:
 * if that something never comes, the test fails instead of hanging. */
#define GUARD_MS 10000

/* Task options with a name, as an expression. */
#define NAMED(n) (&(lahja_task_options_t){ .name = (n) })

/* Sentinel for results not yet recorded. */
#define PENDING 12345

#define GATE_GUARD_MS GUARD_MS
#include "support/gate.h"

/* Time `t` is at or after deadline `d`: timers never fire early, but on
 * a loaded machine they may fire late, so only the lower bound is checked. */
#define assert_not_before(t, d) assert_in_range((t), (d), LAHJA_FOREVER)

/* Runs `fn` as the main task of a fresh runtime and expects 0. */
static inline void run_main(lahja_task_fn fn, void *arg)
{
    assert_int_equal(lahja_run(fn, arg, NULL), 0);
}

/* A cmocka test whose body is the main task main_<name>(NULL). */
#define MAIN_TEST(name)                      \
    static void test_##name(void **state)    \
    {                                        \
        (void)state;                         \
        run_main(main_##name, NULL);         \
    }

#endif /* LAHJA_TEST_SUPPORT_TASK_H */
