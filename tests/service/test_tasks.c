/*
 * Service tasks: failures and their recording, daemons, the task tree
 * (a run function that returned keeps the service running for its
 * tasks, orphans move up), and child services.
 */
#include <uv.h>

#include "support_service.h"

/* Shared state of most services here: the manager, events to order the
 * main task against the service's tasks, and what the tasks saw. */
struct ctx {
    lahja_manager_t *m;
    lahja_latch_t ready, release, returned;
    int run_rc, task_rc, child_rc;
    int run_cleanup_saw;   /* what the run function's cleanup checked */
    int task_runs;
};

static void ctx_init(struct ctx *c)
{
    memset(c, 0, sizeof *c);
    lahja_latch_init(&c->ready);
    lahja_latch_init(&c->release);
    lahja_latch_init(&c->returned);
    c->run_rc = c->task_rc = c->child_rc = PENDING;
    c->run_cleanup_saw = PENDING;
}

/* Creates the manager of `svc` into c->m, with `run` and `c` as user. */
static void ctx_service(struct ctx *c, lahja_service_t *svc, const char *name,
                        lahja_service_fn run)
{
    lahja_service_init(svc, name, run, c);
    assert_int_equal(lahja_manager_new(svc, &c->m), 0);
}

/* ------------------------------------------------ a background task fails */

static int task_fail_epipe(void *arg)
{
    (void)arg;
    return -EPIPE;
}

static int run_with_failing_task(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    int rc = lahja_manager_run_task(m, task_fail_epipe, c, 0, "worker");
    if (rc != 0)
        return rc;
    c->run_rc = lahja_sleep_until(LAHJA_FOREVER);
    return c->run_rc;
}

static int main_task_fails(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Svc", run_with_failing_task);

    assert_int_equal(lahja_manager_run(c.m), -EPIPE);
    assert_int_equal(c.run_rc, -ECANCELED);
    assert_int_equal(lahja_manager_nerrors(c.m), 1);
    expect_error(c.m, 0, "worker", -EPIPE, lahja_strerror(-EPIPE));
    expect_flags(c.m, "SrCFE");
    expect_stats(c.m, 1, 1, 0);
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(task_fails)

/* A task started without a name is called "task". */
static int run_with_unnamed_failing_task(lahja_manager_t *m, void *user)
{
    int rc = lahja_manager_run_task(m, task_fail_epipe, user, 0, NULL);
    return rc != 0 ? rc : lahja_sleep_until(LAHJA_FOREVER);
}

static int main_unnamed_task_fails(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Svc", run_with_unnamed_failing_task);
    assert_int_equal(lahja_manager_run(c.m), -EPIPE);
    assert_int_equal(lahja_manager_nerrors(c.m), 1);
    expect_error(c.m, 0, "task", -EPIPE, lahja_strerror(-EPIPE));
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(unnamed_task_fails)

/* ------------------------------------------------------ daemon exits */

static int run_with_exiting_daemon(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    int rc = lahja_manager_run_daemon_task(m, task_immediate, &c->task_runs, "heartbeat");
    if (rc != 0)
        return rc;
    c->run_rc = lahja_sleep_until(LAHJA_FOREVER);
    return c->run_rc;
}

static int main_daemon_exits(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Svc", run_with_exiting_daemon);

    assert_int_equal(lahja_manager_run(c.m), LAHJA_EDAEMONEXIT);
    assert_int_equal(c.task_runs, 1);
    assert_int_equal(c.run_rc, -ECANCELED);
    assert_int_equal(lahja_manager_nerrors(c.m), 1);
    expect_error(c.m, 0, "heartbeat", LAHJA_EDAEMONEXIT,
                 "Daemon task heartbeat[daemon=True] exited");
    expect_flags(c.m, "SrCFE");
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(daemon_exits)

/* ---------------------------------- run function and a task both fail */

/* The run function fails first; the task fails in its cleanup. */
static int task_fails_on_cancel(void *arg)
{
    struct ctx *c = arg;
    c->task_rc = lahja_sleep_until(LAHJA_FOREVER);
    return lahja_service_fail(-EPIPE, "worker cleanup failed");
}

static int run_fails_after_task(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    int rc = lahja_manager_run_task(m, task_fails_on_cancel, c, 0, "worker");
    return rc != 0 ? rc : -EIO;
}

static int main_run_then_task_fail(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Both", run_fails_after_task);

    assert_int_equal(lahja_manager_run(c.m), -EIO);
    assert_int_equal(c.task_rc, -ECANCELED);
    assert_int_equal(lahja_manager_nerrors(c.m), 2);
    expect_error(c.m, 0, "Both", -EIO, lahja_strerror(-EIO));
    expect_error(c.m, 1, "worker", -EPIPE, "worker cleanup failed");
    expect_flags(c.m, "SrCFE");
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(run_then_task_fail)

/* The task fails first; the run function fails once cancelled. */
static int run_fails_when_cancelled(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    int rc = lahja_manager_run_task(m, task_fail_epipe, c, 0, "worker");
    if (rc != 0)
        return rc;
    c->run_rc = lahja_sleep_until(LAHJA_FOREVER);
    return lahja_service_fail(-EIO, "run gave up");
}

static int main_task_then_run_fail(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Both", run_fails_when_cancelled);

    assert_int_equal(lahja_manager_run(c.m), -EPIPE);
    assert_int_equal(c.run_rc, -ECANCELED);
    assert_int_equal(lahja_manager_nerrors(c.m), 2);
    expect_error(c.m, 0, "worker", -EPIPE, lahja_strerror(-EPIPE));
    expect_error(c.m, 1, "Both", -EIO, "run gave up");
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(task_then_run_fail)

/* ----------------------------- tasks outliving the run function (S10) */

static int task_wait_release(void *arg)
{
    struct ctx *c = arg;
    lahja_latch_set(&c->ready);
    c->task_rc = lahja_latch_wait(&c->release, LAHJA_FOREVER);
    return c->task_rc;
}

static int run_start_then_return(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    int rc = lahja_manager_run_task(m, task_wait_release, c, 0, "late");
    c->run_rc = rc;
    lahja_latch_set(&c->returned);
    return rc;
}

static int main_task_outlives_run(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Svc", run_start_then_return);
    struct runner r;
    runner_start(&r, c.m);
    wait_event(&c.returned);
    wait_event(&c.ready);

    /* The run function has returned; its task keeps the service up. */
    assert_int_equal(c.run_rc, 0);
    expect_flags(c.m, "SRcfe");
    expect_stats(c.m, 1, 0, 1);

    lahja_latch_set(&c.release);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(c.task_rc, 0);
    expect_flags(c.m, "SrcFe");
    expect_stats(c.m, 1, 1, 0);
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(task_outlives_run)

static int main_cancel_after_run_returned(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Svc", run_start_then_return);
    struct runner r;
    runner_start(&r, c.m);
    wait_event(&c.returned);
    wait_event(&c.ready);
    expect_flags(c.m, "SRcfe");

    assert_int_equal(lahja_manager_cancel(c.m), 0);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(c.task_rc, -ECANCELED);
    expect_flags(c.m, "SrCFe");
    assert_int_equal(lahja_manager_nerrors(c.m), 0);
    expect_stats(c.m, 1, 1, 0);
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(cancel_after_run_returned)

/* ------------------------------------- run schedules a daemon, then fails */

static int daemon_forever(void *arg)
{
    struct ctx *c = arg;
    c->task_rc = lahja_sleep_until(LAHJA_FOREVER);
    return c->task_rc;
}

static int run_daemon_then_fail(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    int rc = lahja_manager_run_daemon_task(m, daemon_forever, c, "watch");
    return rc != 0 ? rc : -EIO;
}

static int main_run_daemon_then_fail(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Svc", run_daemon_then_fail);
    struct runner r;
    runner_start(&r, c.m);
    /* Joined with a guard deadline: a hang fails the test. */
    assert_int_equal(runner_join(&r), -EIO);
    assert_int_equal(c.task_rc, -ECANCELED);
    assert_int_equal(lahja_manager_nerrors(c.m), 1);
    expect_error(c.m, 0, "Svc", -EIO, lahja_strerror(-EIO));
    expect_stats(c.m, 1, 1, 0);
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(run_daemon_then_fail)

/* ----------------------------- a daemon spawns a child, then returns */

/* Would fail if the long sleep ever ended: it must be cancelled first. */
static int child_fails_after_sleep(void *arg)
{
    struct ctx *c = arg;
    lahja_latch_set(&c->ready);
    c->child_rc = lahja_sleep(GUARD_MS);
    if (c->child_rc == 0)
        return lahja_service_fail(-EIO, "sleeper woke up");
    return c->child_rc;
}

static int daemon_spawn_and_return(void *arg)
{
    struct ctx *c = arg;
    lahja_manager_t *m = lahja_manager_current();
    c->task_rc = lahja_manager_run_task(m, child_fails_after_sleep, c, 0, "sleeper");
    if (c->task_rc != 0)
        return c->task_rc;
    /* Return with the child alive and blocked. */
    return lahja_latch_wait(&c->ready, LAHJA_FOREVER);
}

static int run_forever_checking_child(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    int rc = lahja_manager_run_daemon_task(m, daemon_spawn_and_return, c, "spawner");
    if (rc != 0)
        return rc;
    c->run_rc = lahja_sleep_until(LAHJA_FOREVER);
    /* The orphan moved under the run function: cancelled before it. */
    c->run_cleanup_saw = c->child_rc;
    return c->run_rc;
}

static int main_daemon_spawns_child_and_returns(void *arg)
{
    (void)arg;
    struct ctx c;
    ctx_init(&c);
    lahja_service_t svc;
    ctx_service(&c, &svc, "Svc", run_forever_checking_child);

    assert_int_equal(lahja_manager_run(c.m), LAHJA_EDAEMONEXIT);
    assert_int_equal(c.task_rc, 0);
    assert_int_equal(c.child_rc, -ECANCELED);
    assert_int_equal(c.run_cleanup_saw, -ECANCELED);
    assert_int_equal(c.run_rc, -ECANCELED);
    assert_int_equal(lahja_manager_nerrors(c.m), 1);
    expect_error(c.m, 0, "spawner", LAHJA_EDAEMONEXIT, "Daemon task spawner[daemon=True] exited");
    expect_stats(c.m, 2, 2, 0);
    assert_int_equal(lahja_manager_free(c.m), 0);
    return 0;
}
MAIN_TEST(daemon_spawns_child_and_returns)

/* ------------------------------------------------- orphans (S11) */

struct orphans {
    lahja_manager_t *m;
    struct gate gate;
    int orphan_rc[2];
    int run_alive;          /* the run function's resource */
    int parent_alive_seen;  /* orphans that saw it alive in cleanup */
    int cleaned;            /* orphans whose cleanup ran */
    int cleaned_seen_by_run;
    int run_rc;
};

static int orphan(void *arg)
{
    struct orphans *o = arg;
    int i = o->gate.in;
    gate_arrive(&o->gate);
    o->orphan_rc[i] = lahja_sleep_until(LAHJA_FOREVER);
    o->parent_alive_seen += o->run_alive;
    o->cleaned++;
    return o->orphan_rc[i];
}

static int failer_with_children(void *arg)
{
    struct orphans *o = arg;
    for (int i = 0; i < 2; i++) {
        int rc = lahja_manager_run_task(o->m, orphan, o, 0, "orphan");
        if (rc != 0)
            return rc;
    }
    int rc = lahja_latch_wait(&o->gate.all_in, LAHJA_FOREVER);
    return rc != 0 ? rc : -EIO; /* fails with both children alive */
}

static int run_orphans(lahja_manager_t *m, void *user)
{
    struct orphans *o = user;
    o->run_alive = 1;
    int rc = lahja_manager_run_task(m, failer_with_children, o, 0, "failer");
    if (rc != 0)
        return rc;
    o->run_rc = lahja_sleep_until(LAHJA_FOREVER);
    o->cleaned_seen_by_run = o->cleaned;
    o->run_alive = 0;
    return o->run_rc;
}

static int main_orphans_adopted(void *arg)
{
    (void)arg;
    struct orphans o = { .orphan_rc = { PENDING, PENDING }, .run_rc = PENDING,
                         .cleaned_seen_by_run = PENDING };
    gate_init(&o.gate, 2);
    lahja_service_t svc;
    lahja_service_init(&svc, "Svc", run_orphans, &o);
    assert_int_equal(lahja_manager_new(&svc, &o.m), 0);
    struct runner r;
    runner_start(&r, o.m);

    assert_int_equal(runner_join(&r), -EIO);
    assert_int_equal(o.orphan_rc[0], -ECANCELED);
    assert_int_equal(o.orphan_rc[1], -ECANCELED);
    /* Adopted by the run function: cancelled, cleanup included, while
     * it was still alive. */
    assert_int_equal(o.cleaned, 2);
    assert_int_equal(o.parent_alive_seen, 2);
    assert_int_equal(o.cleaned_seen_by_run, 2);
    assert_int_equal(lahja_manager_nerrors(o.m), 1);
    expect_error(o.m, 0, "failer", -EIO, lahja_strerror(-EIO));
    expect_flags(o.m, "SrCFE");
    expect_stats(o.m, 3, 3, 0);
    assert_int_equal(lahja_manager_free(o.m), 0);
    return 0;
}
MAIN_TEST(orphans_adopted)

/* --------------------------------------------------- child services */

static int child_run_zero(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    c->task_runs++;
    /* Inside the child, the current manager is the child's. */
    c->child_rc = lahja_manager_current() == m ? 0 : -EINVAL;
    return 0;
}

struct parent {
    lahja_manager_t *m, *cm;
    lahja_service_t *child;
    int run_rc, wait_rc;
    int child_flags_ok;
};

static int run_parent_waits_child(lahja_manager_t *m, void *user)
{
    struct parent *p = user;
    p->run_rc = lahja_manager_run_child_service(m, p->child, 0, "kid", &p->cm);
    if (p->run_rc != 0)
        return p->run_rc;
    p->wait_rc = lahja_manager_wait_finished(p->cm, LAHJA_FOREVER);
    return p->wait_rc;
}

static int main_child_service_clean_exit(void *arg)
{
    (void)arg;
    struct ctx cc;
    ctx_init(&cc);
    lahja_service_t child, svc;
    lahja_service_init(&child, "Child", child_run_zero, &cc);
    struct parent p = { .child = &child, .run_rc = PENDING, .wait_rc = PENDING };
    lahja_service_init(&svc, "Parent", run_parent_waits_child, &p);
    assert_int_equal(lahja_manager_new(&svc, &p.m), 0);

    assert_int_equal(lahja_manager_run(p.m), 0);
    assert_int_equal(p.run_rc, 0);
    assert_int_equal(p.wait_rc, 0);
    assert_non_null(p.cm);
    assert_ptr_equal(child.manager, p.cm);
    assert_int_equal(cc.task_runs, 1);
    assert_int_equal(cc.child_rc, 0);
    expect_flags(p.cm, "SrcFe");
    assert_int_equal(lahja_manager_nerrors(p.cm), 0);
    expect_flags(p.m, "SrcFe");
    assert_int_equal(lahja_manager_nerrors(p.m), 0);
    expect_stats(p.m, 1, 1, 0);
    assert_int_equal(lahja_manager_free(p.m), 0);
    return 0;
}
MAIN_TEST(child_service_clean_exit)

static int run_daemon_child(lahja_manager_t *m, void *user)
{
    struct parent *p = user;
    p->run_rc = lahja_manager_run_daemon_child_service(m, p->child, "kid", &p->cm);
    if (p->run_rc != 0)
        return p->run_rc;
    p->wait_rc = lahja_sleep_until(LAHJA_FOREVER);
    return p->wait_rc;
}

static int main_daemon_child_service_exits(void *arg)
{
    (void)arg;
    struct ctx cc;
    ctx_init(&cc);
    lahja_service_t child, svc;
    lahja_service_init(&child, "Child", child_run_zero, &cc);
    struct parent p = { .child = &child, .run_rc = PENDING, .wait_rc = PENDING };
    lahja_service_init(&svc, "Parent", run_daemon_child, &p);
    assert_int_equal(lahja_manager_new(&svc, &p.m), 0);

    assert_int_equal(lahja_manager_run(p.m), LAHJA_EDAEMONEXIT);
    assert_int_equal(p.run_rc, 0);
    assert_int_equal(p.wait_rc, -ECANCELED);
    assert_int_equal(lahja_manager_nerrors(p.m), 1);
    expect_error(p.m, 0, "kid", LAHJA_EDAEMONEXIT, "Daemon task kid[daemon=True] exited");
    /* The child itself finished cleanly. */
    expect_flags(p.cm, "SrcFe");
    assert_int_equal(lahja_manager_nerrors(p.cm), 0);
    assert_int_equal(lahja_manager_free(p.m), 0);
    return 0;
}
MAIN_TEST(daemon_child_service_exits)

/* Cancelling the parent stops the child through its manager. */
static int child_run_blocks(lahja_manager_t *m, void *user)
{
    (void)m;
    struct ctx *c = user;
    lahja_latch_set(&c->ready);
    c->child_rc = lahja_sleep_until(LAHJA_FOREVER);
    return c->child_rc;
}

static int run_parent_checks_child(lahja_manager_t *m, void *user)
{
    struct parent *p = user;
    p->run_rc = lahja_manager_run_child_service(m, p->child, 0, "kid", &p->cm);
    if (p->run_rc != 0)
        return p->run_rc;
    p->wait_rc = lahja_sleep_until(LAHJA_FOREVER);
    /* Leaves first: the child service is done before this cleanup. */
    p->child_flags_ok = lahja_manager_is_finished(p->cm) && lahja_manager_is_cancelled(p->cm);
    return p->wait_rc;
}

static int main_child_reported_cancelled(void *arg)
{
    (void)arg;
    struct ctx cc;
    ctx_init(&cc);
    lahja_service_t child, svc;
    lahja_service_init(&child, "Child", child_run_blocks, &cc);
    struct parent p = { .child = &child, .run_rc = PENDING, .wait_rc = PENDING,
                        .child_flags_ok = PENDING };
    lahja_service_init(&svc, "Parent", run_parent_checks_child, &p);
    assert_int_equal(lahja_manager_new(&svc, &p.m), 0);
    struct runner r;
    runner_start(&r, p.m);
    wait_event(&cc.ready);
    expect_flags(p.cm, "SRcfe");

    assert_int_equal(lahja_manager_cancel(p.m), 0);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(cc.child_rc, -ECANCELED);
    assert_int_equal(p.wait_rc, -ECANCELED);
    assert_int_equal(p.child_flags_ok, 1);
    expect_flags(p.cm, "SrCFe");
    expect_flags(p.m, "SrCFe");
    assert_int_equal(lahja_manager_nerrors(p.m), 0);
    assert_int_equal(lahja_manager_free(p.m), 0);
    return 0;
}
MAIN_TEST(child_reported_cancelled)

/* A daemon child service that finishes because its parent is cancelled
 * is no DaemonTaskExit. */
static int main_daemon_child_service_cancelled(void *arg)
{
    (void)arg;
    struct ctx cc;
    ctx_init(&cc);
    lahja_service_t child, svc;
    lahja_service_init(&child, "Child", child_run_blocks, &cc);
    struct parent p = { .child = &child, .run_rc = PENDING, .wait_rc = PENDING };
    lahja_service_init(&svc, "Parent", run_daemon_child, &p);
    assert_int_equal(lahja_manager_new(&svc, &p.m), 0);
    struct runner r;
    runner_start(&r, p.m);
    wait_event(&cc.ready);

    assert_int_equal(lahja_manager_cancel(p.m), 0);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(cc.child_rc, -ECANCELED);
    expect_flags(p.cm, "SrCFe");
    expect_flags(p.m, "SrCFe");
    assert_int_equal(lahja_manager_nerrors(p.m), 0);
    assert_int_equal(lahja_manager_free(p.m), 0);
    return 0;
}
MAIN_TEST(daemon_child_service_cancelled)

/* Without a name, a child service's task takes the service's name. */
static int run_unnamed_daemon_child(lahja_manager_t *m, void *user)
{
    struct parent *p = user;
    p->run_rc = lahja_manager_run_daemon_child_service(m, p->child, NULL, &p->cm);
    if (p->run_rc != 0)
        return p->run_rc;
    p->wait_rc = lahja_sleep_until(LAHJA_FOREVER);
    return p->wait_rc;
}

static int main_unnamed_daemon_child_exits(void *arg)
{
    (void)arg;
    struct ctx cc;
    ctx_init(&cc);
    lahja_service_t child, svc;
    lahja_service_init(&child, "Child", child_run_zero, &cc);
    struct parent p = { .child = &child, .run_rc = PENDING, .wait_rc = PENDING };
    lahja_service_init(&svc, "Parent", run_unnamed_daemon_child, &p);
    assert_int_equal(lahja_manager_new(&svc, &p.m), 0);
    assert_int_equal(lahja_manager_run(p.m), LAHJA_EDAEMONEXIT);
    assert_int_equal(lahja_manager_nerrors(p.m), 1);
    expect_error(p.m, 0, "Child", LAHJA_EDAEMONEXIT, "Daemon task Child[daemon=True] exited");
    assert_int_equal(lahja_manager_free(p.m), 0);
    return 0;
}
MAIN_TEST(unnamed_daemon_child_exits)

/* A child with two errors fails its parent task with one entry. */
static int child_run_two_errors(lahja_manager_t *m, void *user)
{
    struct ctx *c = user;
    int rc = lahja_manager_run_task(m, task_fails_on_cancel, c, 0, "worker");
    return rc != 0 ? rc : -EIO;
}

static int main_child_errors_one_entry(void *arg)
{
    (void)arg;
    struct ctx cc;
    ctx_init(&cc);
    lahja_service_t child, svc;
    lahja_service_init(&child, "Child", child_run_two_errors, &cc);
    struct parent p = { .child = &child, .run_rc = PENDING, .wait_rc = PENDING,
                        .child_flags_ok = PENDING };
    lahja_service_init(&svc, "Parent", run_parent_checks_child, &p);
    assert_int_equal(lahja_manager_new(&svc, &p.m), 0);

    assert_int_equal(lahja_manager_run(p.m), -EIO);
    assert_int_equal(lahja_manager_nerrors(p.cm), 2);
    expect_error(p.cm, 0, "Child", -EIO, lahja_strerror(-EIO));
    expect_error(p.cm, 1, "worker", -EPIPE, "worker cleanup failed");

    assert_int_equal(lahja_manager_nerrors(p.m), 1);
    char want[256];
    snprintf(want, sizeof want, "Child service kid failed: %s (and 1 more)", lahja_strerror(-EIO));
    expect_error(p.m, 0, "kid", -EIO, want);
    assert_int_equal(p.wait_rc, -ECANCELED);
    assert_int_equal(lahja_manager_free(p.m), 0);
    return 0;
}
MAIN_TEST(child_errors_one_entry)

/* A child service that already has a manager cannot be started again. */
struct twice {
    lahja_service_t *fresh, *taken, *ran;
    int rc_fresh, rc_again, rc_taken, rc_ran;
    lahja_manager_t *cm;
    size_t total_after;
};

static int run_children_twice(lahja_manager_t *m, void *user)
{
    struct twice *t = user;
    lahja_manager_t *out = NULL;
    t->rc_fresh = lahja_manager_run_child_service(m, t->fresh, 0, "fresh", &t->cm);
    t->rc_again = lahja_manager_run_child_service(m, t->fresh, 0, "again", &out);
    t->rc_taken = lahja_manager_run_child_service(m, t->taken, 0, "taken", &out);
    t->rc_ran = lahja_manager_run_daemon_child_service(m, t->ran, "ran", &out);
    lahja_manager_stats_t st;
    lahja_manager_stats(m, &st);
    t->total_after = st.total;
    return out == NULL ? 0 : -EINVAL;
}

static int main_child_already_started(void *arg)
{
    (void)arg;
    struct ctx c1, c2, c3;
    ctx_init(&c1);
    ctx_init(&c2);
    ctx_init(&c3);
    lahja_service_t fresh, taken, ran, svc;
    lahja_service_init(&fresh, "Fresh", child_run_zero, &c1);
    lahja_service_init(&taken, "Taken", child_run_zero, &c2);
    lahja_service_init(&ran, "Ran", child_run_zero, &c3);
    lahja_manager_t *taken_m;
    assert_int_equal(lahja_manager_new(&taken, &taken_m), 0);
    assert_int_equal(lahja_service_run(&ran), 0);
    assert_int_equal(c3.task_runs, 1);

    struct twice t = { &fresh, &taken, &ran, PENDING, PENDING, PENDING, PENDING, NULL, 0 };
    lahja_service_init(&svc, "Parent", run_children_twice, &t);
    assert_int_equal(lahja_service_run(&svc), 0);
    assert_int_equal(t.rc_fresh, 0);
    assert_int_equal(t.rc_again, LAHJA_ELIFECYCLE);
    assert_int_equal(t.rc_taken, LAHJA_ELIFECYCLE);
    assert_int_equal(t.rc_ran, LAHJA_ELIFECYCLE);
    /* Only the first one was scheduled, and ran once. */
    assert_int_equal(t.total_after, 1);
    assert_int_equal(c1.task_runs, 1);
    assert_int_equal(c2.task_runs, 0);
    assert_int_equal(c3.task_runs, 1);
    assert_ptr_equal(taken.manager, taken_m);
    assert_int_equal(lahja_manager_free(taken_m), 0);
    return 0;
}
MAIN_TEST(child_already_started)

/* ------------------ S19: a task starts a child service and returns */

static void count_iteration(uv_prepare_t *h)
{
    ++*(int *)h->data;
}

/* Loop iterations while the main task sleeps `ms`: an idle runtime
 * blocks in poll until the timer; a task that spins keeps it turning. */
static int loop_turns_while_sleeping(uint64_t ms)
{
    int turns = 0;
    uv_prepare_t probe;
    assert_int_equal(uv_prepare_init(lahja_rt_loop(lahja_rt_current()), &probe), 0);
    probe.data = &turns;
    assert_int_equal(uv_prepare_start(&probe, count_iteration), 0);
    assert_int_equal(lahja_sleep(ms), 0);
    uv_prepare_stop(&probe);
    int seen = turns;
    assert_int_equal(lahja_uv_close((uv_handle_t *)&probe), 0);
    return seen;
}

static int starter(void *arg)
{
    struct parent *p = arg;
    p->run_rc = lahja_manager_run_child_service(lahja_manager_current(), p->child, 0, "kid",
                                                &p->cm);
    return p->run_rc;
}

static int child_waits_release(lahja_manager_t *m, void *user)
{
    (void)m;
    struct ctx *c = user;
    lahja_latch_set(&c->ready);
    c->child_rc = lahja_latch_wait(&c->release, LAHJA_FOREVER);
    return c->child_rc;
}

static int run_starter(lahja_manager_t *m, void *user)
{
    return lahja_manager_run_task(m, starter, user, 0, "starter");
}

static int main_child_starter_returns(void *arg)
{
    (void)arg;
    struct ctx cc;
    ctx_init(&cc);
    lahja_service_t child, svc;
    lahja_service_init(&child, "Child", child_waits_release, &cc);
    struct parent p = { .child = &child, .run_rc = PENDING };
    lahja_service_init(&svc, "Parent", run_starter, &p);
    assert_int_equal(lahja_manager_new(&svc, &p.m), 0);
    struct runner r;
    runner_start(&r, p.m);
    wait_event(&cc.ready);
    assert_int_equal(p.run_rc, 0);

    /* The starter has returned and waits for its child service: nothing
     * may be left ready to run, nor wake up over and over. */
    assert_in_range(loop_turns_while_sleeping(50), 1, 5);
    expect_flags(p.m, "SRcfe");
    expect_stats(p.m, 2, 0, 2);

    lahja_latch_set(&cc.release);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(cc.child_rc, 0);
    expect_flags(p.cm, "SrcFe");
    expect_flags(p.m, "SrcFe");
    expect_stats(p.m, 2, 2, 0);
    assert_int_equal(lahja_manager_free(p.m), 0);
    return 0;
}
MAIN_TEST(child_starter_returns)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_fails),
        cmocka_unit_test(test_unnamed_task_fails),
        cmocka_unit_test(test_daemon_exits),
        cmocka_unit_test(test_run_then_task_fail),
        cmocka_unit_test(test_task_then_run_fail),
        cmocka_unit_test(test_task_outlives_run),
        cmocka_unit_test(test_cancel_after_run_returned),
        cmocka_unit_test(test_run_daemon_then_fail),
        cmocka_unit_test(test_daemon_spawns_child_and_returns),
        cmocka_unit_test(test_orphans_adopted),
        cmocka_unit_test(test_child_service_clean_exit),
        cmocka_unit_test(test_daemon_child_service_exits),
        cmocka_unit_test(test_child_reported_cancelled),
        cmocka_unit_test(test_daemon_child_service_cancelled),
        cmocka_unit_test(test_unnamed_daemon_child_exits),
        cmocka_unit_test(test_child_errors_one_entry),
        cmocka_unit_test(test_child_already_started),
        cmocka_unit_test(test_child_starter_returns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
