/*
 * Stats (S15) and the limit on children (S16).
 */
#include <stdio.h>

#include "support_service.h"

/* ------------------------------------------------------------ stats */

struct stats {
    lahja_manager_t *m;
    struct gate blocked;    /* the six tasks meant to block forever */
    int spawner_rc;
    int run_rc;
};

static int task_blocks(void *arg)
{
    struct stats *s = arg;
    gate_arrive(&s->blocked);
    return lahja_sleep_until(LAHJA_FOREVER);
}

static int task_spawner(void *arg)
{
    struct stats *s = arg;
    for (int i = 0; i < 4; i++) {
        s->spawner_rc = lahja_manager_run_task(s->m, task_blocks, s, 0, "forever-child");
        if (s->spawner_rc != 0)
            return s->spawner_rc;
    }
    return 0; /* done only once its four children are */
}

static int run_stats(lahja_manager_t *m, void *user)
{
    struct stats *s = user;
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++)
        rc = lahja_manager_run_task(m, task_blocks, s, 0, "forever");
    for (int i = 0; i < 2 && rc == 0; i++)
        rc = lahja_manager_run_task(m, task_immediate, NULL, 0, "immediate");
    if (rc == 0)
        rc = lahja_manager_run_task(m, task_spawner, s, 0, "spawner");
    s->run_rc = rc;
    return rc;
}

static int main_stats_counts(void *arg)
{
    (void)arg;
    struct stats s = { .spawner_rc = PENDING, .run_rc = PENDING };
    gate_init(&s.blocked, 6);
    lahja_service_t svc;
    lahja_service_init(&svc, "Stats", run_stats, &s);
    assert_int_equal(lahja_manager_new(&svc, &s.m), 0);
    struct runner r;
    runner_start(&r, s.m);
    /* One root task from outside, done at once. */
    int external_runs = 0;
    assert_int_equal(lahja_manager_run_task(s.m, task_immediate, &external_runs, 0, "external"),
                     0);

    /* Settled: the blocking tasks are in, and a few rounds of the ready
     * queue let the immediate ones (and the run function) finish. */
    gate_wait(&s.blocked);
    for (int i = 0; i < 50; i++)
        assert_int_equal(lahja_yield(), 0);
    assert_int_equal(s.run_rc, 0);
    assert_int_equal(s.spawner_rc, 0);
    assert_int_equal(external_runs, 1);
    /* 2 forever + 2 immediate + spawner + 4 children + external; the run
     * function is not counted; finished: the immediates and external. */
    expect_stats(s.m, 10, 3, 7);
    expect_flags(s.m, "SRcfe");

    assert_int_equal(lahja_manager_cancel(s.m), 0);
    assert_int_equal(runner_join(&r), 0);
    expect_stats(s.m, 10, 10, 0);
    assert_int_equal(lahja_manager_nerrors(s.m), 0);
    assert_int_equal(lahja_manager_free(s.m), 0);
    return 0;
}
MAIN_TEST(stats_counts)

/* -------------------------------------------------- too many children */

#define MAX_CHILDREN 1000

/* 400 alpha, 300 beta, 200 gamma and 5 each of t00..t19: the ten most
 * common are the first three and t00..t06 (ties by name). */
static void child_name(int i, char *buf, size_t len)
{
    if (i < 400)
        snprintf(buf, len, "alpha");
    else if (i < 700)
        snprintf(buf, len, "beta");
    else if (i < 900)
        snprintf(buf, len, "gamma");
    else
        snprintf(buf, len, "t%02d", (i - 900) / 5);
}

static const char too_many_message[] =
    "Tried to add more than 1000 child tasks. Most common tasks: alpha (400), beta (300), "
    "gamma (200), t00 (5), t01 (5), t02 (5), t03 (5), t04 (5), t05 (5), t06 (5)";

struct crowd {
    lahja_manager_t *m;
    lahja_latch_t full;
    int accepted;
    int rc_over;
    char message[512];
    lahja_manager_stats_t before, after;
    int running_after, cancelled_after, error_after;
    size_t nerrors_after;
    int over_ran;
    struct gate in;     /* every child has started */
};

static int task_crowd_member(void *arg)
{
    struct crowd *c = arg;
    gate_arrive(&c->in);
    return lahja_sleep_until(LAHJA_FOREVER);
}

static int run_crowd(lahja_manager_t *m, void *user)
{
    struct crowd *c = user;
    char name[16];
    for (int i = 0; i < MAX_CHILDREN; i++) {
        child_name(i, name, sizeof name);
        if (lahja_manager_run_task(m, task_crowd_member, c, 0, name) == 0)
            c->accepted++;
    }
    lahja_manager_stats(m, &c->before);
    c->rc_over = lahja_manager_run_task(m, task_immediate, &c->over_ran, 0, "overflow");
    snprintf(c->message, sizeof c->message, "%s", lahja_manager_last_message(m));
    lahja_manager_stats(m, &c->after);
    c->running_after = lahja_manager_is_running(m);
    c->cancelled_after = lahja_manager_is_cancelled(m);
    c->error_after = lahja_manager_did_error(m);
    c->nerrors_after = lahja_manager_nerrors(m);
    lahja_latch_set(&c->full);
    return lahja_sleep_until(LAHJA_FOREVER);
}

static int main_too_many_children(void *arg)
{
    (void)arg;
    struct crowd c;
    memset(&c, 0, sizeof c);
    c.rc_over = PENDING;
    lahja_latch_init(&c.full);
    gate_init(&c.in, MAX_CHILDREN);
    lahja_service_t svc;
    lahja_service_init(&svc, "Crowd", run_crowd, &c);
    assert_int_equal(lahja_manager_new(&svc, &c.m), 0);
    struct runner r;
    runner_start(&r, c.m);
    wait_event(&c.full);

    assert_int_equal(c.accepted, MAX_CHILDREN);
    assert_int_equal(c.rc_over, LAHJA_ETOOMANYCHILDREN);
    assert_string_equal(c.message, too_many_message);
    /* Nothing else changed. */
    assert_int_equal(c.before.total, MAX_CHILDREN);
    assert_int_equal(c.after.total, MAX_CHILDREN);
    assert_int_equal(c.after.finished, c.before.finished);
    assert_int_equal(c.running_after, 1);
    assert_int_equal(c.cancelled_after, 0);
    assert_int_equal(c.error_after, 0);
    assert_int_equal(c.nerrors_after, 0);

    /* Still so once every child runs. */
    gate_wait(&c.in);
    expect_flags(c.m, "SRcfe");
    expect_stats(c.m, MAX_CHILDREN, 0, MAX_CHILDREN);
    assert_string_equal(lahja_manager_last_message(c.m), too_many_message);

    assert_int_equal(lahja_manager_cancel(c.m), 0);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(c.over_ran, 0);
    assert_int_equal(lahja_manager_nerrors(c.m), 0);
    expect_stats(c.m, MAX_CHILDREN, MAX_CHILDREN, 0);
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(too_many_children)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_counts),
        cmocka_unit_test(test_too_many_children),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
