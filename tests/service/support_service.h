/*
 * Helpers shared by the service tests.
 *
 * Tests order tasks with events, never with sleeps: a task sets an event
 * just before it blocks, and the main task, woken by it, acts while that
 * task is suspended (tasks of one runtime never run at the same time).
 * Tasks only record what they see; the main task asserts, so that a
 * failed assertion never unwinds a task's stack.
 */
#ifndef LAHJA_TEST_SUPPORT_SERVICE_H
#define LAHJA_TEST_SUPPORT_SERVICE_H

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <lahja/lahja.h>

#include "runtime/rt.h" /* white-box: lahja_tls_rt, see MAIN_TEST */

/* A long guard deadline for waits that something else must end: if it
 * never comes, the test fails instead of hanging. */
#define GUARD_MS 10000

/* Sentinel for results not yet recorded. */
#define PENDING 12345

/* Waits for `e`, failing the test if it is not set within GUARD_MS. */
static inline void wait_event(lahja_latch_t *e)
{
    assert_int_equal(lahja_latch_wait(e, lahja_deadline_in(GUARD_MS)), 0);
}

#define GATE_GUARD_MS GUARD_MS
#include "support/gate.h"

/* A task that blocks until cancelled; returns the cancellation code. */
static inline int task_forever(void *arg)
{
    (void)arg;
    return lahja_sleep_until(LAHJA_FOREVER);
}

/* A task that is done at once; counts its runs in *arg if non-NULL. */
static inline int task_immediate(void *arg)
{
    if (arg != NULL)
        ++*(int *)arg;
    return 0;
}

/* ------------------------------------------------------------ runner */

/* lahja_manager_run in a task of its own, so that the main task can act
 * on the service from outside while it runs. */
struct runner {
    lahja_manager_t *m;
    lahja_task_t *task;
    int rc;
};

static inline int runner_main(void *arg)
{
    struct runner *r = arg;
    r->rc = lahja_manager_run(r->m);
    return 0;
}

/* Starts the runner and returns once the service has started. */
static inline void runner_start(struct runner *r, lahja_manager_t *m)
{
    r->m = m;
    r->rc = PENDING;
    lahja_task_options_t opts = { .name = "runner" };
    assert_int_equal(lahja_spawn(lahja_rt_current(), runner_main, r, &opts, &r->task), 0);
    assert_int_equal(lahja_manager_wait_started(m, lahja_deadline_in(GUARD_MS)), 0);
}

/* Waits for the runner; returns what lahja_manager_run returned. */
static inline int runner_join(struct runner *r)
{
    int result = PENDING;
    assert_int_equal(lahja_task_join(r->task, lahja_deadline_in(GUARD_MS), &result), 0);
    assert_int_equal(result, 0);
    return r->rc;
}

/* ------------------------------------------------------- expectations */

/*
 * Checks every flag against `flags`, five letters in describe's order
 * (started, running, cancelled, finished, did_error), upper case on, and
 * that describe prints the same letters.
 */
static inline void expect_flags(const lahja_manager_t *m, const char *flags)
{
    assert_int_equal(strlen(flags), 5);
    assert_int_equal(lahja_manager_is_started(m) != 0, flags[0] == 'S');
    assert_int_equal(lahja_manager_is_running(m) != 0, flags[1] == 'R');
    assert_int_equal(lahja_manager_is_cancelled(m) != 0, flags[2] == 'C');
    assert_int_equal(lahja_manager_is_finished(m) != 0, flags[3] == 'F');
    assert_int_equal(lahja_manager_did_error(m) != 0, flags[4] == 'E');
    char buf[128];
    assert_true(lahja_manager_describe(m, buf, sizeof buf) > 0);
    const char *p = strstr(buf, " flags=");
    assert_non_null(p);
    char want[16];
    snprintf(want, sizeof want, " flags=%s>", flags);
    assert_string_equal(p, want);
}

static inline void expect_stats(const lahja_manager_t *m, size_t total, size_t finished,
                                size_t pending)
{
    lahja_manager_stats_t st;
    lahja_manager_stats(m, &st);
    assert_int_equal(st.total, total);
    assert_int_equal(st.finished, finished);
    assert_int_equal(st.pending, pending);
}

static inline void expect_error(const lahja_manager_t *m, size_t i, const char *task_name,
                                int code, const char *message)
{
    const lahja_service_error_t *e = lahja_manager_error(m, i);
    assert_non_null(e);
    assert_string_equal(e->task_name, task_name);
    assert_int_equal(e->code, code);
    assert_string_equal(e->message, message);
}

/*
 * A main task per test: lahja_run(main_<name>) must return 0.  A failed
 * assertion unwinds past lahja_run and leaves its runtime on the thread;
 * forgetting it (leaked) lets the next tests run on a runtime of their
 * own instead of failing with -EBUSY.
 */
#define MAIN_TEST(name)                                          \
    static void test_##name(void **state)                        \
    {                                                            \
        (void)state;                                             \
        lahja_tls_rt = NULL;                                     \
        lahja_tls_task = NULL;                                   \
        assert_int_equal(lahja_run(main_##name, NULL, NULL), 0); \
    }

#endif /* LAHJA_TEST_SUPPORT_SERVICE_H */
