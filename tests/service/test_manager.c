/*
 * Managers: the flags and their description, a clean exit, external
 * cancellation, a failing run function, stop, the lifecycle rules (one
 * manager per service, run once, nothing before start), did_error's
 * timeline and as_service.
 */
#include "support_service.h"

static int run_return_zero(lahja_manager_t *m, void *user)
{
    (void)m, (void)user;
    return 0;
}

/* --------------------------------------------------- initial flags */

static void test_initial_flags(void **state)
{
    (void)state;
    lahja_service_t svc;
    lahja_service_init(&svc, "Idle", run_return_zero, NULL);
    lahja_manager_t *m = NULL;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    assert_ptr_equal(svc.manager, m);

    expect_flags(m, "srcfe");
    const char *want = "<Manager[Idle] flags=srcfe>";
    char buf[64];
    assert_int_equal(lahja_manager_describe(m, buf, sizeof buf), (int)strlen(want));
    assert_string_equal(buf, want);
    expect_stats(m, 0, 0, 0);
    assert_int_equal(lahja_manager_nerrors(m), 0);
    assert_null(lahja_manager_error(m, 0));
    assert_string_equal(lahja_manager_last_message(m), "");
    assert_int_equal(lahja_manager_free(m), 0);
}

/* A service without a name is described as "service". */
static void test_describe_unnamed(void **state)
{
    (void)state;
    lahja_service_t svc = { .run = run_return_zero };
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    char buf[64];
    lahja_manager_describe(m, buf, sizeof buf);
    assert_string_equal(buf, "<Manager[service] flags=srcfe>");
    assert_int_equal(lahja_manager_free(m), 0);
}

/* ------------------------------------------------------ clean exit */

struct clean {
    int runs;
    lahja_manager_t *arg_manager, *current;
    char inside[64];
};

static int run_clean(lahja_manager_t *m, void *user)
{
    struct clean *c = user;
    c->runs++;
    c->arg_manager = m;
    c->current = lahja_manager_current();
    lahja_manager_describe(m, c->inside, sizeof c->inside);
    return 0;
}

static int main_clean_exit(void *arg)
{
    (void)arg;
    struct clean c = { 0 };
    lahja_service_t svc;
    lahja_service_init(&svc, "Clean", run_clean, &c);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);

    assert_int_equal(lahja_manager_run(m), 0);
    assert_int_equal(c.runs, 1);
    assert_ptr_equal(c.arg_manager, m);
    assert_ptr_equal(c.current, m);
    assert_string_equal(c.inside, "<Manager[Clean] flags=SRcfe>");
    expect_flags(m, "SrcFe");
    assert_int_equal(lahja_manager_nerrors(m), 0);
    expect_stats(m, 0, 0, 0);
    /* The main task is no service task. */
    assert_null(lahja_manager_current());
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(clean_exit)

/* ------------------------------------------------- external cancel */

/* A run function that blocks until cancelled, with its cleanup. */
struct blocked {
    lahja_manager_t *m;
    lahja_latch_t in_run;
    int rc;
    int cleaned;
    int finished_in_cleanup;
};

static void blocked_init(struct blocked *b)
{
    memset(b, 0, sizeof *b);
    lahja_latch_init(&b->in_run);
    b->rc = PENDING;
    b->finished_in_cleanup = PENDING;
}

static int run_blocked(lahja_manager_t *m, void *user)
{
    struct blocked *b = user;
    lahja_latch_set(&b->in_run);
    b->rc = lahja_sleep_until(LAHJA_FOREVER);
    b->cleaned = 1;
    b->finished_in_cleanup = lahja_manager_is_finished(m);
    return b->rc;
}

static int main_external_cancel(void *arg)
{
    (void)arg;
    struct blocked b;
    blocked_init(&b);
    lahja_service_t svc;
    lahja_service_init(&svc, "Blocked", run_blocked, &b);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    struct runner r;
    runner_start(&r, m);
    wait_event(&b.in_run);
    expect_flags(m, "SRcfe");

    assert_int_equal(lahja_manager_cancel(m), 0);
    /* Cancelled at once, finished only once the run function is done. */
    expect_flags(m, "SRCfe");
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(b.rc, -ECANCELED);
    assert_int_equal(b.cleaned, 1);
    assert_int_equal(b.finished_in_cleanup, 0);
    expect_flags(m, "SrCFe");
    assert_int_equal(lahja_manager_nerrors(m), 0);

    /* Cancelling a finished service does nothing. */
    assert_int_equal(lahja_manager_cancel(m), 0);
    expect_flags(m, "SrCFe");
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(external_cancel)

/* ------------------------------------------------ run function fails */

static int run_fail_eio(lahja_manager_t *m, void *user)
{
    (void)m, (void)user;
    return -EIO;
}

static int main_run_fails_with_code(void *arg)
{
    (void)arg;
    lahja_service_t svc;
    lahja_service_init(&svc, "Failing", run_fail_eio, NULL);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);

    assert_int_equal(lahja_manager_run(m), -EIO);
    assert_int_equal(lahja_manager_nerrors(m), 1);
    expect_error(m, 0, "Failing", -EIO, lahja_strerror(-EIO));
    assert_null(lahja_manager_error(m, 1));
    /* A failure cancels the service (async_service's is_cancelled). */
    expect_flags(m, "SrCFE");
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(run_fails_with_code)

static int run_fail_message(lahja_manager_t *m, void *user)
{
    (void)m, (void)user;
    return lahja_service_fail(-EPROTO, "peer %s went away", "bob");
}

static int main_run_fails_with_message(void *arg)
{
    (void)arg;
    lahja_service_t svc;
    lahja_service_init(&svc, "Peer", run_fail_message, NULL);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    assert_int_equal(lahja_manager_run(m), -EPROTO);
    assert_int_equal(lahja_manager_nerrors(m), 1);
    expect_error(m, 0, "Peer", -EPROTO, "peer bob went away");
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(run_fails_with_message)

/* A message longer than 255 bytes is truncated, not overflowed. */
static int run_fail_long_message(lahja_manager_t *m, void *user)
{
    (void)m, (void)user;
    char big[400];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    return lahja_service_fail(-EIO, "%s", big);
}

static int main_fail_message_truncated(void *arg)
{
    (void)arg;
    lahja_service_t svc;
    lahja_service_init(&svc, "Long", run_fail_long_message, NULL);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    assert_int_equal(lahja_manager_run(m), -EIO);
    const lahja_service_error_t *e = lahja_manager_error(m, 0);
    assert_non_null(e);
    assert_int_equal(strlen(e->message), 255);
    assert_int_equal(strspn(e->message, "x"), 255);
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(fail_message_truncated)

/* Outside a service task lahja_service_fail only returns the code. */
static void test_service_fail_outside(void **state)
{
    (void)state;
    assert_int_equal(lahja_service_fail(-EIO, "ignored %d", 1), -EIO);
}

/* --------------------------------------------------------- stop */

static int main_stop_returns_when_finished(void *arg)
{
    (void)arg;
    struct blocked b;
    blocked_init(&b);
    lahja_service_t svc;
    lahja_service_init(&svc, "Stopped", run_blocked, &b);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    struct runner r;
    runner_start(&r, m);
    wait_event(&b.in_run);

    assert_int_equal(lahja_manager_stop(m), 0);
    /* Stop returned only once the service had finished, cleanup run. */
    expect_flags(m, "SrCFe");
    assert_int_equal(b.cleaned, 1);
    assert_int_equal(b.rc, -ECANCELED);
    assert_int_equal(runner_join(&r), 0);

    /* Stopping a finished service returns at once. */
    assert_int_equal(lahja_manager_stop(m), 0);
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(stop_returns_when_finished)

/* ---------------------------------------------------- lifecycle */

static int run_count(lahja_manager_t *m, void *user)
{
    (void)m;
    ++*(int *)user;
    return 0;
}

static int main_one_manager_one_run(void *arg)
{
    (void)arg;
    int runs = 0;
    lahja_service_t svc;
    lahja_service_init(&svc, "Once", run_count, &runs);
    lahja_manager_t *m, *m2 = NULL;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    assert_int_equal(lahja_manager_new(&svc, &m2), LAHJA_ELIFECYCLE);
    assert_null(m2);

    assert_int_equal(lahja_manager_run(m), 0);
    assert_int_equal(lahja_manager_run(m), LAHJA_ELIFECYCLE);
    assert_int_equal(runs, 1);
    expect_flags(m, "SrcFe");

    /* Freeing the manager does not make the service runnable again. */
    assert_int_equal(lahja_manager_free(m), 0);
    assert_int_equal(lahja_manager_new(&svc, &m2), LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_service_run(&svc), LAHJA_ELIFECYCLE);
    assert_int_equal(runs, 1);
    return 0;
}
MAIN_TEST(one_manager_one_run)

static int main_run_while_running(void *arg)
{
    (void)arg;
    struct blocked b;
    blocked_init(&b);
    lahja_service_t svc;
    lahja_service_init(&svc, "Busy", run_blocked, &b);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    struct runner r;
    runner_start(&r, m);
    wait_event(&b.in_run);

    assert_int_equal(lahja_manager_run(m), LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_manager_free(m), -EBUSY);
    expect_flags(m, "SRcfe");

    assert_int_equal(lahja_manager_stop(m), 0);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(run_while_running)

/* lahja_service_run returns the first error's code. */
static int main_service_run(void *arg)
{
    (void)arg;
    lahja_service_t svc;
    lahja_service_init(&svc, "Whole", run_fail_eio, NULL);
    assert_int_equal(lahja_service_run(&svc), -EIO);
    assert_non_null(svc.manager);
    assert_int_equal(lahja_service_run(&svc), LAHJA_ELIFECYCLE);
    return 0;
}
MAIN_TEST(service_run)

/* ------------------------------------------- scheduling before start */

static int main_schedule_before_start(void *arg)
{
    (void)arg;
    int ran = 0, child_runs = 0;
    lahja_service_t svc, child;
    lahja_service_init(&svc, "Early", run_return_zero, NULL);
    lahja_service_init(&child, "Kid", run_count, &child_runs);
    lahja_manager_t *m, *cm = NULL;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);

    assert_int_equal(lahja_manager_run_task(m, task_immediate, &ran, 0, "early"),
                     LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_manager_run_daemon_task(m, task_immediate, &ran, "early-daemon"),
                     LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_manager_run_child_service(m, &child, 0, "kid", &cm), LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_manager_run_daemon_child_service(m, &child, "kid", &cm),
                     LAHJA_ELIFECYCLE);
    assert_null(cm);
    assert_null(child.manager);
    assert_int_equal(lahja_manager_cancel(m), LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_manager_stop(m), LAHJA_ELIFECYCLE);
    expect_flags(m, "srcfe");
    expect_stats(m, 0, 0, 0);

    /* None of it left a trace: the service runs cleanly, nothing early
     * runs, and the child can still be run on its own. */
    assert_int_equal(lahja_manager_run(m), 0);
    expect_flags(m, "SrcFe");
    expect_stats(m, 0, 0, 0);
    assert_int_equal(ran, 0);
    assert_int_equal(lahja_service_run(&child), 0);
    assert_int_equal(child_runs, 1);
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(schedule_before_start)

/* ------------------------------------------------ did_error timeline */

/*
 * A failer fails while a sibling blocks; the sibling's shielded cleanup
 * looks at the flags while the service is still being taken down.
 */
struct timeline {
    lahja_manager_t *m;
    lahja_latch_t sibling_in, go;
    int in_run;                                 /* did_error in the run fn */
    int in_cleanup, finished_in_cleanup, cancelled_in_cleanup;
    int after_yield;                            /* did_error after suspending */
    int cleanup_yield_rc;
};

static int timeline_sibling(void *arg)
{
    struct timeline *t = arg;
    lahja_latch_set(&t->sibling_in);
    int rc = lahja_sleep_until(LAHJA_FOREVER);
    lahja_scope_t *shield;
    if (lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield) != 0)
        return -ENOMEM;
    t->in_cleanup = lahja_manager_did_error(t->m);
    t->finished_in_cleanup = lahja_manager_is_finished(t->m);
    t->cancelled_in_cleanup = lahja_manager_is_cancelled(t->m);
    t->cleanup_yield_rc = lahja_yield();
    t->after_yield = lahja_manager_did_error(t->m);
    lahja_scope_close(shield);
    return rc;
}

static int timeline_failer(void *arg)
{
    struct timeline *t = arg;
    int rc = lahja_latch_wait(&t->go, LAHJA_FOREVER);
    return rc != 0 ? rc : -EIO;
}

static int run_timeline(lahja_manager_t *m, void *user)
{
    struct timeline *t = user;
    t->in_run = lahja_manager_did_error(m);
    int rc = lahja_manager_run_task(m, timeline_sibling, t, 0, "sibling");
    if (rc == 0)
        rc = lahja_manager_run_task(m, timeline_failer, t, 0, "failer");
    if (rc != 0)
        return rc;
    return lahja_sleep_until(LAHJA_FOREVER);
}

static int main_did_error_timeline(void *arg)
{
    (void)arg;
    struct timeline t = { .in_run = PENDING, .in_cleanup = PENDING,
                          .finished_in_cleanup = PENDING, .cancelled_in_cleanup = PENDING,
                          .after_yield = PENDING, .cleanup_yield_rc = PENDING };
    lahja_latch_init(&t.sibling_in);
    lahja_latch_init(&t.go);
    lahja_service_t svc;
    lahja_service_init(&svc, "Timeline", run_timeline, &t);
    assert_int_equal(lahja_manager_new(&svc, &t.m), 0);
    struct runner r;
    runner_start(&r, t.m);
    wait_event(&t.sibling_in);
    assert_int_equal(lahja_manager_did_error(t.m), 0);

    lahja_latch_set(&t.go);
    assert_int_equal(runner_join(&r), -EIO);
    assert_int_equal(t.in_run, 0);
    /* The error was visible while the sibling was still cleaning up. */
    assert_int_equal(t.in_cleanup, 1);
    assert_int_equal(t.finished_in_cleanup, 0);
    assert_int_equal(t.cancelled_in_cleanup, 1);
    assert_int_equal(t.cleanup_yield_rc, 0);
    assert_int_equal(t.after_yield, 1);
    assert_int_equal(lahja_manager_nerrors(t.m), 1);
    expect_error(t.m, 0, "failer", -EIO, lahja_strerror(-EIO));
    expect_flags(t.m, "SrCFE");
    assert_int_equal(lahja_manager_free(t.m), 0);
    return 0;
}
MAIN_TEST(did_error_timeline)

/* ------------------------------------------- errors stay readable */

/*
 * lahja_manager_error's result is documented valid until the manager is
 * freed.  One failure is read from outside while eight more tasks are
 * still to fail in their cleanup; the first entry must survive them.
 */
struct many {
    lahja_latch_t fail_now, more;
    struct gate blocked;     /* the eight late tasks are in */
    struct gate cleaning;    /* one of them is in its cleanup */
};

static int task_fail_on_event(void *arg)
{
    struct many *x = arg;
    int rc = lahja_latch_wait(&x->fail_now, LAHJA_FOREVER);
    return rc != 0 ? rc : -EIO;
}

static int task_fail_in_cleanup(void *arg)
{
    struct many *x = arg;
    gate_arrive(&x->blocked);
    lahja_sleep_until(LAHJA_FOREVER);
    lahja_scope_t *shield;
    if (lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield) == 0) {
        gate_arrive(&x->cleaning);
        lahja_latch_wait(&x->more, LAHJA_FOREVER);
        lahja_scope_close(shield);
    }
    return -EPIPE;
}

static int run_many_errors(lahja_manager_t *m, void *user)
{
    int rc = 0;
    for (int i = 0; i < 8 && rc == 0; i++)
        rc = lahja_manager_run_task(m, task_fail_in_cleanup, user, 0, "late");
    if (rc == 0)
        rc = lahja_manager_run_task(m, task_fail_on_event, user, 0, "first");
    return rc != 0 ? rc : lahja_sleep_until(LAHJA_FOREVER);
}

/* What the main task saw; asserted once lahja_run has returned, so that
 * a failure never unwinds a task's stack nor reads a dangling entry. */
struct many_seen {
    size_t nerrors;
    int first_ok;                        /* entry 0 read right after it */
    const lahja_service_error_t *before; /* entry 0, read then */
    const lahja_service_error_t *after;  /* entry 0, read at the end */
    int still_first;                     /* `before` still reads "first" */
};

static int main_error_pointers(void *arg)
{
    struct many_seen *seen = arg;
    struct many x;
    lahja_latch_init(&x.fail_now);
    lahja_latch_init(&x.more);
    gate_init(&x.blocked, 8);
    gate_init(&x.cleaning, 1);
    lahja_service_t svc;
    lahja_service_init(&svc, "Many", run_many_errors, &x);
    lahja_manager_t *m;
    if (lahja_manager_new(&svc, &m) != 0)
        return -EINVAL;
    struct runner r;
    runner_start(&r, m);
    gate_wait(&x.blocked);
    lahja_latch_set(&x.fail_now);
    gate_wait(&x.cleaning);

    seen->before = lahja_manager_error(m, 0);
    seen->first_ok = seen->before != NULL && strcmp(seen->before->task_name, "first") == 0;
    lahja_latch_set(&x.more);
    runner_join(&r);
    seen->nerrors = lahja_manager_nerrors(m);
    seen->after = lahja_manager_error(m, 0);
    /* Dereferenced only if it did not move: a moved one is freed. */
    seen->still_first = seen->after == seen->before &&
                        strcmp(seen->before->task_name, "first") == 0 &&
                        seen->before->code == -EIO;
    return lahja_manager_free(m);
}

static void test_error_pointers_stay_valid(void **state)
{
    (void)state;
    struct many_seen seen = { 0 };
    lahja_tls_rt = NULL; /* see MAIN_TEST */
    lahja_tls_task = NULL;
    assert_int_equal(lahja_run(main_error_pointers, &seen, NULL), 0);
    assert_int_equal(seen.first_ok, 1);
    assert_int_equal(seen.nerrors, 9);
    /* The pointer handed out before the other eight is still the entry. */
    assert_ptr_equal(seen.after, seen.before);
    assert_int_equal(seen.still_first, 1);
}

/* ------------------------------------------------------ as_service */

struct plain {
    int calls;
    int ret;
    lahja_manager_t *current;
};

static int plain_fn(void *arg)
{
    struct plain *p = arg;
    p->calls++;
    p->current = lahja_manager_current();
    return p->ret;
}

static int main_as_service(void *arg)
{
    (void)arg;
    struct plain p = { 0 };
    lahja_service_t svc;
    lahja_as_service(&svc, "Plain", plain_fn, &p);
    assert_string_equal(svc.name, "Plain");
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    assert_int_equal(lahja_manager_run(m), 0);
    assert_int_equal(p.calls, 1);
    assert_ptr_equal(p.current, m);
    expect_flags(m, "SrcFe");
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(as_service)

/* A plain function's failure is the service's, under the service name. */
static int main_as_service_fails(void *arg)
{
    (void)arg;
    struct plain p = { .ret = -ENOENT };
    lahja_service_t svc;
    lahja_as_service(&svc, "PlainFail", plain_fn, &p);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    assert_int_equal(lahja_manager_run(m), -ENOENT);
    assert_int_equal(lahja_manager_nerrors(m), 1);
    expect_error(m, 0, "PlainFail", -ENOENT, lahja_strerror(-ENOENT));
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(as_service_fails)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initial_flags),
        cmocka_unit_test(test_describe_unnamed),
        cmocka_unit_test(test_clean_exit),
        cmocka_unit_test(test_external_cancel),
        cmocka_unit_test(test_run_fails_with_code),
        cmocka_unit_test(test_run_fails_with_message),
        cmocka_unit_test(test_fail_message_truncated),
        cmocka_unit_test(test_service_fail_outside),
        cmocka_unit_test(test_stop_returns_when_finished),
        cmocka_unit_test(test_one_manager_one_run),
        cmocka_unit_test(test_run_while_running),
        cmocka_unit_test(test_service_run),
        cmocka_unit_test(test_schedule_before_start),
        cmocka_unit_test(test_did_error_timeline),
        cmocka_unit_test(test_as_service),
        cmocka_unit_test(test_as_service_fails),
        cmocka_unit_test(test_error_pointers_stay_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
