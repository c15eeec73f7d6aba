/*
 * From outside the service: external calls (S17) and background
 * services for the length of a scope (S18).
 */
#include "service/service.h" /* white-box: a task's place in the tree */
#include "support_service.h"

/* A service whose run function blocks until `release` or cancellation. */
struct svc_state {
    lahja_manager_t *m;
    lahja_latch_t in_run, release;
    int run_rc;
};

static void state_init(struct svc_state *s)
{
    memset(s, 0, sizeof *s);
    lahja_latch_init(&s->in_run);
    lahja_latch_init(&s->release);
    s->run_rc = PENDING;
}

static int run_until_release(lahja_manager_t *m, void *user)
{
    (void)m;
    struct svc_state *s = user;
    lahja_latch_set(&s->in_run);
    s->run_rc = lahja_latch_wait(&s->release, LAHJA_FOREVER);
    return s->run_rc;
}

static void start_service(struct svc_state *s, lahja_service_t *svc, struct runner *r)
{
    lahja_service_init(svc, "External", run_until_release, s);
    assert_int_equal(lahja_manager_new(svc, &s->m), 0);
    runner_start(r, s->m);
    wait_event(&s->in_run);
}

static int call_counted(void *arg)
{
    ++*(int *)arg;
    return 42;
}

static int call_fails(void *arg)
{
    (void)arg;
    return -EIO;
}

/* ----------------------------------------------------- external calls */

static void test_call_outside_task(void **state)
{
    (void)state;
    lahja_service_t svc;
    lahja_service_init(&svc, "External", run_until_release, NULL);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    int calls = 0;
    assert_int_equal(lahja_manager_call(m, call_counted, &calls), LAHJA_ENOTASK);
    assert_int_equal(calls, 0);
    assert_int_equal(lahja_manager_free(m), 0);
}

static int main_call_before_start(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    lahja_service_init(&svc, "External", run_until_release, &s);
    assert_int_equal(lahja_manager_new(&svc, &s.m), 0);
    int calls = 0;
    assert_int_equal(lahja_manager_call(s.m, call_counted, &calls), LAHJA_ELIFECYCLE);
    assert_int_equal(calls, 0);
    expect_flags(s.m, "srcfe");
    assert_int_equal(lahja_manager_free(s.m), 0);
    return 0;
}
MAIN_TEST(call_before_start)

static int main_call_while_running(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    struct runner r;
    start_service(&s, &svc, &r);

    int calls = 0;
    assert_int_equal(lahja_manager_call(s.m, call_counted, &calls), 42);
    assert_int_equal(calls, 1);
    /* A call's failure is its caller's, not the service's. */
    assert_int_equal(lahja_manager_call(s.m, call_fails, NULL), -EIO);
    expect_flags(s.m, "SRcfe");
    assert_int_equal(lahja_manager_nerrors(s.m), 0);

    lahja_latch_set(&s.release);
    assert_int_equal(runner_join(&r), 0);
    expect_flags(s.m, "SrcFe");
    assert_int_equal(lahja_manager_free(s.m), 0);
    return 0;
}
MAIN_TEST(call_while_running)

/* A call blocked when the service finishes by itself. */
struct mid_call {
    struct svc_state *s;
    lahja_latch_t in_call, never;
    int fn_rc;          /* what the blocked call saw */
    int call_rc;        /* what lahja_manager_call returned */
    int cleanup_rc;     /* scheduling from the call's cleanup */
    int cleanup_ran;    /* that task ran */
};

static int call_blocks(void *arg)
{
    struct mid_call *mc = arg;
    lahja_latch_set(&mc->in_call);
    mc->fn_rc = lahja_latch_wait(&mc->never, LAHJA_FOREVER);
    mc->cleanup_rc = lahja_manager_run_task(mc->s->m, task_immediate, &mc->cleanup_ran, 0,
                                            "from-cleanup");
    return mc->fn_rc;
}

static int caller(void *arg)
{
    struct mid_call *mc = arg;
    mc->call_rc = lahja_manager_call(mc->s->m, call_blocks, mc);
    return 0;
}

static void mid_call_start(struct mid_call *mc, struct svc_state *s, lahja_task_t **task)
{
    memset(mc, 0, sizeof *mc);
    mc->s = s;
    lahja_latch_init(&mc->in_call);
    lahja_latch_init(&mc->never);
    mc->fn_rc = mc->call_rc = mc->cleanup_rc = PENDING;
    lahja_task_options_t opts = { .name = "caller" };
    assert_int_equal(lahja_spawn(lahja_rt_current(), caller, mc, &opts, task), 0);
    wait_event(&mc->in_call);
}

static void join_caller(lahja_task_t *task)
{
    int result = PENDING;
    assert_int_equal(lahja_task_join(task, lahja_deadline_in(GUARD_MS), &result), 0);
    assert_int_equal(result, 0);
}

static int main_call_service_finishes(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    struct runner r;
    start_service(&s, &svc, &r);
    struct mid_call mc;
    lahja_task_t *task;
    mid_call_start(&mc, &s, &task);

    /* The service finishes cleanly while the call is under way. */
    lahja_latch_set(&s.release);
    assert_int_equal(runner_join(&r), 0);
    join_caller(task);
    assert_int_equal(mc.fn_rc, -ECANCELED);
    assert_int_equal(mc.call_rc, LAHJA_ELIFECYCLE);
    /* The call's cleanup ran after the end: too late to schedule. */
    assert_int_equal(mc.cleanup_rc, LAHJA_ELIFECYCLE);
    assert_int_equal(mc.cleanup_ran, 0);
    expect_flags(s.m, "SrcFe");
    expect_stats(s.m, 0, 0, 0);
    assert_int_equal(lahja_manager_free(s.m), 0);
    return 0;
}
MAIN_TEST(call_service_finishes)

/* The caller cancelled: the call is cancelled, the service untouched. */
static int main_call_caller_cancelled(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    struct runner r;
    start_service(&s, &svc, &r);
    struct mid_call mc;
    lahja_task_t *task;
    mid_call_start(&mc, &s, &task);

    lahja_task_cancel(task);
    join_caller(task);
    assert_int_equal(mc.fn_rc, -ECANCELED);
    assert_int_equal(mc.call_rc, -ECANCELED);
    expect_flags(s.m, "SRcfe");
    /* The service still runs: the call's cleanup started a root task. */
    assert_int_equal(mc.cleanup_rc, 0);
    for (int i = 0; i < 5 && mc.cleanup_ran == 0; i++)
        assert_int_equal(lahja_yield(), 0);
    assert_int_equal(mc.cleanup_ran, 1);
    expect_stats(s.m, 1, 1, 0);

    lahja_latch_set(&s.release);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(lahja_manager_nerrors(s.m), 0);
    assert_int_equal(lahja_manager_free(s.m), 0);
    return 0;
}
MAIN_TEST(call_caller_cancelled)

static int main_call_after_finish(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    struct runner r;
    start_service(&s, &svc, &r);
    lahja_latch_set(&s.release);
    assert_int_equal(runner_join(&r), 0);

    int calls = 0;
    assert_int_equal(lahja_manager_call(s.m, call_counted, &calls), LAHJA_ELIFECYCLE);
    assert_int_equal(calls, 0);
    assert_int_equal(lahja_manager_free(s.m), 0);
    return 0;
}
MAIN_TEST(call_after_finish)

/* A call that schedules a task: a root task of the service. */
struct from_call {
    struct svc_state *s;
    lahja_latch_t started, go;
    int rc;
    lahja_manager_t *current;
    int is_root;
    int ran;
};

static int task_from_call(void *arg)
{
    struct from_call *fc = arg;
    struct svc_task *self = lahja_svc_current();
    fc->current = lahja_manager_current();
    fc->is_root = self != NULL && self->parent == NULL;
    lahja_latch_set(&fc->started);
    fc->rc = lahja_latch_wait(&fc->go, LAHJA_FOREVER);
    fc->ran = 1;
    return fc->rc;
}

static int call_schedules(void *arg)
{
    struct from_call *fc = arg;
    return lahja_manager_run_task(fc->s->m, task_from_call, fc, 0, "from-call");
}

static int main_call_schedules_task(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    struct runner r;
    start_service(&s, &svc, &r);
    struct from_call fc = { .s = &s, .rc = PENDING, .is_root = PENDING };
    lahja_latch_init(&fc.started);
    lahja_latch_init(&fc.go);

    assert_int_equal(lahja_manager_call(s.m, call_schedules, &fc), 0);
    wait_event(&fc.started);
    assert_ptr_equal(fc.current, s.m);
    assert_int_equal(fc.is_root, 1);
    expect_stats(s.m, 1, 0, 1);

    /* The run function returns; the root task keeps the service up. */
    lahja_latch_set(&s.release);
    for (int i = 0; i < 5; i++)
        assert_int_equal(lahja_yield(), 0);
    assert_int_equal(s.run_rc, 0);
    expect_flags(s.m, "SRcfe");

    lahja_latch_set(&fc.go);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(fc.ran, 1);
    assert_int_equal(fc.rc, 0);
    expect_flags(s.m, "SrcFe");
    expect_stats(s.m, 1, 1, 0);
    assert_int_equal(lahja_manager_free(s.m), 0);
    return 0;
}
MAIN_TEST(call_schedules_task)

/* ------------------------------------------------ background services */

static int main_background_flags(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    lahja_service_init(&svc, "Background", run_until_release, &s);
    /* Before: no manager at all. */
    assert_null(svc.manager);

    lahja_manager_t *m = NULL;
    assert_int_equal(lahja_background_start(&svc, &m), 0);
    assert_non_null(m);
    assert_ptr_equal(svc.manager, m);
    /* During: started and running; the run function is under way. */
    expect_flags(m, "SRcfe");
    wait_event(&s.in_run);
    expect_flags(m, "SRcfe");

    assert_int_equal(lahja_background_end(m), 0);
    /* After: stopped, so cancelled, and finished; still inspectable. */
    expect_flags(m, "SrCFe");
    assert_int_equal(s.run_rc, -ECANCELED);
    assert_int_equal(lahja_manager_nerrors(m), 0);
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(background_flags)

/* A service that failed inside the scope: end returns its first error. */
static int run_fails_on_release(lahja_manager_t *m, void *user)
{
    int rc = run_until_release(m, user);
    return rc != 0 ? rc : lahja_service_fail(-EIO, "released into failure");
}

static int main_background_failure(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    lahja_service_init(&svc, "Background", run_fails_on_release, &s);
    lahja_manager_t *m = NULL;
    assert_int_equal(lahja_background_start(&svc, &m), 0);
    wait_event(&s.in_run);

    lahja_latch_set(&s.release);
    assert_int_equal(lahja_manager_wait_finished(m, lahja_deadline_in(GUARD_MS)), 0);
    expect_flags(m, "SrCFE");
    assert_int_equal(lahja_background_end(m), -EIO);
    assert_int_equal(lahja_manager_nerrors(m), 1);
    expect_error(m, 0, "Background", -EIO, "released into failure");
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(background_failure)

/* A second background start of the same service is a lifecycle error. */
static int main_background_twice(void *arg)
{
    (void)arg;
    struct svc_state s;
    state_init(&s);
    lahja_service_t svc;
    lahja_service_init(&svc, "Background", run_until_release, &s);
    lahja_manager_t *m = NULL, *m2 = NULL;
    assert_int_equal(lahja_background_start(&svc, &m), 0);
    assert_int_equal(lahja_background_start(&svc, &m2), LAHJA_ELIFECYCLE);
    assert_null(m2);
    assert_int_equal(lahja_background_end(m), 0);
    assert_int_equal(lahja_manager_free(m), 0);
    assert_int_equal(lahja_background_end(NULL), -EINVAL);
    return 0;
}
MAIN_TEST(background_twice)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_outside_task),
        cmocka_unit_test(test_call_before_start),
        cmocka_unit_test(test_call_while_running),
        cmocka_unit_test(test_call_service_finishes),
        cmocka_unit_test(test_call_caller_cancelled),
        cmocka_unit_test(test_call_after_finish),
        cmocka_unit_test(test_call_schedules_task),
        cmocka_unit_test(test_background_flags),
        cmocka_unit_test(test_background_failure),
        cmocka_unit_test(test_background_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
