/*
 * Cancellation: its order (leaves first, through a 14-task tree, however
 * it starts), cleanup with and without suspension, daemons that are
 * cancelled rather than exiting, and scheduling once the service is
 * cancelled, finishing or finished.
 */
#include <stdio.h>
#include <uv.h>

#include "support_service.h"

/* ------------------------------------------------------- the tree */

/*
 * node0 -> node1, node2, node3; node1 -> 4, 5, 6; node2 -> 7, 8;
 * node3 -> 9; node4 -> 10, 11; node7 -> 12 -> 13.  The run function
 * starts node0.  Every node holds a "resource" (alive[i]) from its start
 * to the end of its cleanup; a cleanup suspends (shielded) before it
 * checks that its parent's resource is still alive and its children's
 * are gone, so that a parent cancelled too early would be caught.
 */
#define NNODES 14
static const int tree_parent[NNODES] = { -1, 0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 4, 7, 12 };

struct tree;

struct node {
    struct tree *t;
    int id;
};

struct tree {
    lahja_manager_t *m;
    struct node nodes[NNODES];
    struct gate gate;       /* every node has started its children */
    lahja_latch_t go;       /* lets the failing leaf fail */
    int fail_leaf;          /* that leaf, or -1 */
    int run_alive;
    int alive[NNODES];
    int rc[NNODES];
    int order[NNODES];      /* node ids, in the order they cleaned up */
    int norder;
    int parent_gone;        /* cleanups that found the parent's resource gone */
    int child_left;         /* cleanups that found a child's resource alive */
    int shield_rc;          /* worst result of the shielded suspensions */
    int run_rc;
    int left_for_run;       /* nodes alive when the run function cleaned up */
};

static int node_main(void *arg);

static void tree_init(struct tree *t, int fail_leaf)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < NNODES; i++) {
        t->nodes[i] = (struct node){ t, i };
        t->rc[i] = PENDING;
    }
    gate_init(&t->gate, NNODES);
    lahja_latch_init(&t->go);
    t->fail_leaf = fail_leaf;
    t->run_rc = t->left_for_run = PENDING;
}

static int start_node(struct tree *t, int id)
{
    char name[16];
    snprintf(name, sizeof name, "node%d", id);
    return lahja_manager_run_task(t->m, node_main, &t->nodes[id], 0, name);
}

static void node_release(struct tree *t, int id)
{
    t->order[t->norder++] = id;
    t->alive[id] = 0;
}

static void node_cleanup(struct tree *t, int id)
{
    lahja_scope_t *shield;
    if (lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield) == 0) {
        /* Let every other ready task run: a parent cancelled at the same
         * time would clean up now, before this check. */
        for (int k = 0; k < 3; k++) {
            int rc = lahja_yield();
            if (rc != 0)
                t->shield_rc = rc;
        }
        lahja_scope_close(shield);
    }
    int parent = tree_parent[id];
    if (parent < 0 ? !t->run_alive : !t->alive[parent])
        t->parent_gone++;
    for (int c = 0; c < NNODES; c++)
        if (tree_parent[c] == id && t->alive[c])
            t->child_left++;
    node_release(t, id);
}

static int node_main(void *arg)
{
    struct node *n = arg;
    struct tree *t = n->t;
    t->alive[n->id] = 1;
    for (int c = 0; c < NNODES; c++) {
        if (tree_parent[c] == n->id) {
            int rc = start_node(t, c);
            if (rc != 0)
                return rc;
        }
    }
    gate_arrive(&t->gate);
    if (n->id == t->fail_leaf) {
        t->rc[n->id] = lahja_latch_wait(&t->go, LAHJA_FOREVER);
        node_release(t, n->id);
        return t->rc[n->id] == 0 ? -EIO : t->rc[n->id];
    }
    t->rc[n->id] = lahja_sleep_until(LAHJA_FOREVER);
    node_cleanup(t, n->id);
    return t->rc[n->id];
}

static int run_tree(lahja_manager_t *m, void *user)
{
    (void)m;
    struct tree *t = user;
    t->run_alive = 1;
    int rc = start_node(t, 0);
    if (rc != 0)
        return rc;
    t->run_rc = lahja_sleep_until(LAHJA_FOREVER);
    t->left_for_run = 0;
    for (int i = 0; i < NNODES; i++)
        t->left_for_run += t->alive[i];
    t->run_alive = 0;
    return t->run_rc;
}

/* Starts the tree's service and returns once every node is blocked. */
static void tree_start(struct tree *t, lahja_service_t *svc, struct runner *r)
{
    lahja_service_init(svc, "Tree", run_tree, t);
    assert_int_equal(lahja_manager_new(svc, &t->m), 0);
    runner_start(r, t->m);
    gate_wait(&t->gate);
    expect_stats(t->m, NNODES, 0, NNODES);
}

/* Every node cleaned up once, each after all of its descendants. */
static void expect_leaves_first(const struct tree *t)
{
    assert_int_equal(t->norder, NNODES);
    int pos[NNODES];
    for (int i = 0; i < NNODES; i++)
        pos[i] = -1;
    for (int k = 0; k < NNODES; k++) {
        assert_int_equal(pos[t->order[k]], -1);
        pos[t->order[k]] = k;
    }
    for (int i = 1; i < NNODES; i++)
        assert_true(pos[i] < pos[tree_parent[i]]);
    assert_int_equal(t->parent_gone, 0);
    assert_int_equal(t->child_left, 0);
    assert_int_equal(t->shield_rc, 0);
    assert_int_equal(t->left_for_run, 0);
    assert_int_equal(t->run_rc, -ECANCELED);
    for (int i = 0; i < NNODES; i++)
        if (i != t->fail_leaf)
            assert_int_equal(t->rc[i], -ECANCELED);
    expect_stats(t->m, NNODES, NNODES, 0);
}

static int main_tree_external_cancel(void *arg)
{
    (void)arg;
    struct tree t;
    tree_init(&t, -1);
    lahja_service_t svc;
    struct runner r;
    tree_start(&t, &svc, &r);

    assert_int_equal(lahja_manager_cancel(t.m), 0);
    assert_int_equal(runner_join(&r), 0);
    expect_leaves_first(&t);
    expect_flags(t.m, "SrCFe");
    assert_int_equal(lahja_manager_free(t.m), 0);
    return 0;
}
MAIN_TEST(tree_external_cancel)

/* SIGINT-like: the task running the manager is cancelled. */
static int main_tree_runner_cancelled(void *arg)
{
    (void)arg;
    struct tree t;
    tree_init(&t, -1);
    lahja_service_t svc;
    struct runner r;
    tree_start(&t, &svc, &r);

    lahja_task_cancel(r.task);
    assert_int_equal(runner_join(&r), 0);
    expect_leaves_first(&t);
    expect_flags(t.m, "SrCFe");
    assert_int_equal(lahja_manager_nerrors(t.m), 0);
    assert_int_equal(lahja_manager_free(t.m), 0);
    return 0;
}
MAIN_TEST(tree_runner_cancelled)

/* A failing leaf cancels the rest of the tree, in the same order. */
static int main_tree_leaf_fails(void *arg)
{
    (void)arg;
    struct tree t;
    tree_init(&t, 13);
    lahja_service_t svc;
    struct runner r;
    tree_start(&t, &svc, &r);

    lahja_latch_set(&t.go);
    assert_int_equal(runner_join(&r), -EIO);
    assert_int_equal(t.rc[13], 0);
    assert_int_equal(t.order[0], 13);
    expect_leaves_first(&t);
    assert_int_equal(lahja_manager_nerrors(t.m), 1);
    expect_error(t.m, 0, "node13", -EIO, lahja_strerror(-EIO));
    expect_flags(t.m, "SrCFE");
    assert_int_equal(lahja_manager_free(t.m), 0);
    return 0;
}
MAIN_TEST(tree_leaf_fails)

/* ----------------------------------------------------------- cleanup */

struct cleanup {
    lahja_manager_t *m;
    lahja_latch_t ready;
    int rc;                 /* the blocking call's result */
    int after_rc;           /* the suspending call in cleanup */
    int cleaned;            /* cleanup reached its end */
    int finished_in_cleanup;
    lahja_time_t elapsed;   /* how long the cleanup's suspension took */
};

static int worker_plain_cleanup(void *arg)
{
    struct cleanup *c = arg;
    lahja_latch_set(&c->ready);
    c->rc = lahja_sleep_until(LAHJA_FOREVER);
    c->cleaned = 1;
    c->finished_in_cleanup = lahja_manager_is_finished(c->m);
    return c->rc;
}

static int worker_shielded_cleanup(void *arg)
{
    struct cleanup *c = arg;
    lahja_latch_set(&c->ready);
    c->rc = lahja_sleep_until(LAHJA_FOREVER);
    lahja_scope_t *shield;
    if (lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield) != 0)
        return -ENOMEM;
    c->after_rc = lahja_sleep(1);
    lahja_scope_close(shield);
    c->cleaned = 1;
    c->finished_in_cleanup = lahja_manager_is_finished(c->m);
    return c->rc;
}

static int worker_unshielded_cleanup(void *arg)
{
    struct cleanup *c = arg;
    lahja_latch_set(&c->ready);
    c->rc = lahja_sleep_until(LAHJA_FOREVER);
    lahja_time_t start = lahja_now();
    c->after_rc = lahja_sleep(GUARD_MS);
    c->elapsed = lahja_now() - start;
    c->cleaned = 1;
    c->finished_in_cleanup = lahja_manager_is_finished(c->m);
    return c->rc;
}

struct cleanup_run {
    struct cleanup *c;
    lahja_task_fn worker;
};

static int run_cleanup_worker(lahja_manager_t *m, void *user)
{
    struct cleanup_run *cr = user;
    int rc = lahja_manager_run_task(m, cr->worker, cr->c, 0, "worker");
    return rc != 0 ? rc : lahja_sleep_until(LAHJA_FOREVER);
}

/* Runs `worker` in a service, cancels it once the worker blocks. */
static void cancel_worker(struct cleanup *c, lahja_task_fn worker)
{
    memset(c, 0, sizeof *c);
    lahja_latch_init(&c->ready);
    c->rc = c->after_rc = c->finished_in_cleanup = PENDING;
    struct cleanup_run cr = { c, worker };
    lahja_service_t svc;
    lahja_service_init(&svc, "Cleanup", run_cleanup_worker, &cr);
    assert_int_equal(lahja_manager_new(&svc, &c->m), 0);
    struct runner r;
    runner_start(&r, c->m);
    wait_event(&c->ready);
    assert_int_equal(lahja_manager_cancel(c->m), 0);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(lahja_manager_nerrors(c->m), 0);
    expect_flags(c->m, "SrCFe");
    assert_int_equal(lahja_manager_free(c->m), 0);
}

static int main_cleanup_without_suspension(void *arg)
{
    (void)arg;
    struct cleanup c;
    cancel_worker(&c, worker_plain_cleanup);
    assert_int_equal(c.rc, -ECANCELED);
    assert_int_equal(c.cleaned, 1);
    assert_int_equal(c.finished_in_cleanup, 0);
    return 0;
}
MAIN_TEST(cleanup_without_suspension)

static int main_cleanup_suspends_shielded(void *arg)
{
    (void)arg;
    struct cleanup c;
    cancel_worker(&c, worker_shielded_cleanup);
    assert_int_equal(c.rc, -ECANCELED);
    assert_int_equal(c.after_rc, 0);
    assert_int_equal(c.cleaned, 1);
    assert_int_equal(c.finished_in_cleanup, 0);
    return 0;
}
MAIN_TEST(cleanup_suspends_shielded)

static int main_cleanup_suspends_unshielded(void *arg)
{
    (void)arg;
    struct cleanup c;
    cancel_worker(&c, worker_unshielded_cleanup);
    assert_int_equal(c.rc, -ECANCELED);
    /* Still cancelled: the suspension ends at once. */
    assert_int_equal(c.after_rc, -ECANCELED);
    assert_true(c.elapsed < GUARD_MS / 2);
    assert_int_equal(c.cleaned, 1);
    assert_int_equal(c.finished_in_cleanup, 0);
    return 0;
}
MAIN_TEST(cleanup_suspends_unshielded)

/* --------------------------------------------------------- daemons */

struct daemon {
    lahja_manager_t *m;
    lahja_latch_t ready;
    int rc;
    int loops;
};

/* A daemon child task sleeping long: cancelled, not exiting. */
static int daemon_sleepy(void *arg)
{
    struct daemon *d = arg;
    lahja_latch_set(&d->ready);
    d->rc = lahja_sleep(GUARD_MS);
    return d->rc;
}

/* Loops while the service runs, suspending on every round. */
static int daemon_looper(void *arg)
{
    struct daemon *d = arg;
    while (lahja_manager_is_running(d->m)) {
        if (++d->loops == 10)
            lahja_latch_set(&d->ready);
        d->rc = lahja_yield();
        if (d->rc != 0)
            return d->rc;
    }
    return 0;
}

/* Ends cleanly (0) when cancelled: returning is no exit then. */
static int daemon_graceful(void *arg)
{
    struct daemon *d = arg;
    lahja_latch_set(&d->ready);
    d->rc = lahja_sleep_until(LAHJA_FOREVER);
    return 0;
}

struct daemon_run {
    struct daemon *d;
    lahja_task_fn fn;
};

static int run_daemon(lahja_manager_t *m, void *user)
{
    struct daemon_run *dr = user;
    int rc = lahja_manager_run_daemon_task(m, dr->fn, dr->d, "daemon");
    return rc != 0 ? rc : lahja_sleep_until(LAHJA_FOREVER);
}

static void cancel_daemon(struct daemon *d, lahja_task_fn fn)
{
    memset(d, 0, sizeof *d);
    lahja_latch_init(&d->ready);
    d->rc = PENDING;
    struct daemon_run dr = { d, fn };
    lahja_service_t svc;
    lahja_service_init(&svc, "Daemons", run_daemon, &dr);
    assert_int_equal(lahja_manager_new(&svc, &d->m), 0);
    struct runner r;
    runner_start(&r, d->m);
    wait_event(&d->ready);
    assert_int_equal(lahja_manager_cancel(d->m), 0);
    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(lahja_manager_nerrors(d->m), 0);
    expect_flags(d->m, "SrCFe");
    expect_stats(d->m, 1, 1, 0);
    assert_int_equal(lahja_manager_free(d->m), 0);
}

static int main_daemon_sleeping_cancelled(void *arg)
{
    (void)arg;
    struct daemon d;
    cancel_daemon(&d, daemon_sleepy);
    assert_int_equal(d.rc, -ECANCELED);
    return 0;
}
MAIN_TEST(daemon_sleeping_cancelled)

static int main_daemon_looping_cancelled(void *arg)
{
    (void)arg;
    struct daemon d;
    cancel_daemon(&d, daemon_looper);
    assert_int_equal(d.rc, -ECANCELED);
    assert_true(d.loops >= 10);
    return 0;
}
MAIN_TEST(daemon_looping_cancelled)

static int main_daemon_returns_zero_when_cancelled(void *arg)
{
    (void)arg;
    struct daemon d;
    cancel_daemon(&d, daemon_graceful);
    assert_int_equal(d.rc, -ECANCELED);
    return 0;
}
MAIN_TEST(daemon_returns_zero_when_cancelled)

/* -------------------------------------------- scheduling once cancelled */

struct late {
    lahja_manager_t *m;
    lahja_latch_t ready;
    int ran;
    int held_rc;
    int rc_cleanup;       /* scheduling from the last task's cleanup */
};

static int task_held(void *arg)
{
    struct late *l = arg;
    lahja_latch_set(&l->ready);
    l->held_rc = lahja_sleep_until(LAHJA_FOREVER);
    l->rc_cleanup = lahja_manager_run_task(l->m, task_immediate, &l->ran, 0, "from-cleanup");
    return l->held_rc;
}

static int run_held(lahja_manager_t *m, void *user)
{
    return lahja_manager_run_task(m, task_held, user, 0, "held");
}

static int main_schedule_after_cancel_dropped(void *arg)
{
    (void)arg;
    struct late l = { .held_rc = PENDING, .rc_cleanup = PENDING };
    lahja_latch_init(&l.ready);
    int child_runs = 0;
    lahja_service_t svc, child;
    lahja_service_init(&svc, "Late", run_held, &l);
    lahja_as_service(&child, "Kid", task_immediate, &child_runs);
    assert_int_equal(lahja_manager_new(&svc, &l.m), 0);
    struct runner r;
    runner_start(&r, l.m);
    wait_event(&l.ready);
    expect_stats(l.m, 1, 0, 1);

    assert_int_equal(lahja_manager_cancel(l.m), 0);
    lahja_manager_t *cm = NULL;
    assert_int_equal(lahja_manager_run_task(l.m, task_immediate, &l.ran, 0, "late"), 0);
    assert_int_equal(lahja_manager_run_daemon_task(l.m, task_immediate, &l.ran, "late"), 0);
    assert_int_equal(lahja_manager_run_child_service(l.m, &child, 0, "kid", &cm), 0);
    assert_null(child.manager);
    expect_stats(l.m, 1, 0, 1);

    assert_int_equal(runner_join(&r), 0);
    assert_int_equal(l.held_rc, -ECANCELED);
    assert_int_equal(l.rc_cleanup, 0);
    /* Nothing dropped ever ran or counted. */
    assert_int_equal(l.ran, 0);
    assert_int_equal(child_runs, 0);
    expect_stats(l.m, 1, 1, 0);
    assert_int_equal(lahja_manager_nerrors(l.m), 0);
    /* The dropped child never had a manager: it can run elsewhere. */
    assert_int_equal(lahja_service_run(&child), 0);
    assert_int_equal(child_runs, 1);
    assert_int_equal(lahja_manager_free(l.m), 0);
    return 0;
}
MAIN_TEST(schedule_after_cancel_dropped)

/* --------------------------------------------- scheduling once finished */

static int run_return_zero(lahja_manager_t *m, void *user)
{
    (void)m, (void)user;
    return 0;
}

static int main_schedule_after_finish(void *arg)
{
    (void)arg;
    int ran = 0, child_runs = 0;
    lahja_service_t svc, child;
    lahja_service_init(&svc, "Done", run_return_zero, NULL);
    lahja_as_service(&child, "Kid", task_immediate, &child_runs);
    lahja_manager_t *m, *cm = NULL;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    assert_int_equal(lahja_manager_run(m), 0);
    expect_flags(m, "SrcFe");

    assert_int_equal(lahja_manager_run_task(m, task_immediate, &ran, 0, "late"),
                     LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_manager_run_daemon_task(m, task_immediate, &ran, "late"),
                     LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_manager_run_child_service(m, &child, 0, "kid", &cm), LAHJA_ELIFECYCLE);
    assert_null(cm);
    assert_null(child.manager);
    /* Cancelling a finished service changes nothing either. */
    assert_int_equal(lahja_manager_cancel(m), 0);
    expect_flags(m, "SrcFe");
    expect_stats(m, 0, 0, 0);
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(ran, 0);
    assert_int_equal(child_runs, 0);
    assert_int_equal(lahja_manager_free(m), 0);
    return 0;
}
MAIN_TEST(schedule_after_finish)

/*
 * While finishing: the run function, the last task, wakes a probe as it
 * returns.  The ready queue is FIFO, so after one yield of the probe the
 * manager has resumed, marked itself finishing and suspended to reap its
 * cancel handler: the probe schedules exactly then.
 */
struct finishing {
    lahja_manager_t *m;
    lahja_service_t *child;
    lahja_latch_t last;
    int rc_task, rc_daemon, rc_child;
    int finished_then, running_then;
    int ran;
};

static int run_wakes_probe(lahja_manager_t *m, void *user)
{
    (void)m;
    struct finishing *f = user;
    lahja_latch_set(&f->last);
    return 0;
}

static int probe_finishing(void *arg)
{
    struct finishing *f = arg;
    int rc = lahja_latch_wait(&f->last, LAHJA_FOREVER);
    if (rc == 0)
        rc = lahja_yield();
    if (rc != 0)
        return rc;
    f->finished_then = lahja_manager_is_finished(f->m);
    f->running_then = lahja_manager_is_running(f->m);
    f->rc_task = lahja_manager_run_task(f->m, task_immediate, &f->ran, 0, "probe");
    f->rc_daemon = lahja_manager_run_daemon_task(f->m, task_immediate, &f->ran, "probe");
    lahja_manager_t *cm = NULL;
    f->rc_child = lahja_manager_run_child_service(f->m, f->child, 0, "kid", &cm);
    return 0;
}

static int main_schedule_while_finishing(void *arg)
{
    (void)arg;
    int child_runs = 0;
    lahja_service_t svc, child;
    lahja_as_service(&child, "Kid", task_immediate, &child_runs);
    struct finishing f = { .child = &child, .rc_task = PENDING, .rc_daemon = PENDING,
                           .rc_child = PENDING, .finished_then = PENDING,
                           .running_then = PENDING };
    lahja_latch_init(&f.last);
    lahja_service_init(&svc, "Finishing", run_wakes_probe, &f);
    assert_int_equal(lahja_manager_new(&svc, &f.m), 0);
    lahja_task_t *probe;
    lahja_task_options_t opts = { .name = "probe" };
    assert_int_equal(lahja_spawn(lahja_rt_current(), probe_finishing, &f, &opts, &probe), 0);

    assert_int_equal(lahja_manager_run(f.m), 0);
    int result = PENDING;
    assert_int_equal(lahja_task_join(probe, lahja_deadline_in(GUARD_MS), &result), 0);
    assert_int_equal(result, 0);
    /* Caught between the last task and the end: running, not finished. */
    assert_int_equal(f.finished_then, 0);
    assert_int_equal(f.running_then, 1);
    assert_int_equal(f.rc_task, LAHJA_ELIFECYCLE);
    assert_int_equal(f.rc_daemon, LAHJA_ELIFECYCLE);
    assert_int_equal(f.rc_child, LAHJA_ELIFECYCLE);
    assert_null(child.manager);
    assert_int_equal(f.ran, 0);
    assert_int_equal(child_runs, 0);
    expect_flags(f.m, "SrcFe");
    expect_stats(f.m, 0, 0, 0);
    assert_int_equal(lahja_manager_free(f.m), 0);
    return 0;
}
MAIN_TEST(schedule_while_finishing)

/* From a libuv callback: a root task while running, an error after. */
struct from_cb {
    lahja_manager_t *m;
    uv_idle_t idle;
    lahja_latch_t called, task_ran;
    int rc;
};

static int task_signal(void *arg)
{
    struct from_cb *f = arg;
    return lahja_latch_set(&f->task_ran);
}

static void on_idle_schedule(uv_idle_t *h)
{
    struct from_cb *f = h->data;
    uv_idle_stop(h);
    f->rc = lahja_manager_run_task(f->m, task_signal, f, 0, "from-callback");
    lahja_latch_set(&f->called);
}

/* Schedules from the next loop iteration's idle callback; waits for it. */
static int schedule_from_callback(struct from_cb *f)
{
    lahja_latch_init(&f->called);
    f->rc = PENDING;
    assert_int_equal(uv_idle_init(lahja_rt_loop(lahja_rt_current()), &f->idle), 0);
    f->idle.data = f;
    assert_int_equal(uv_idle_start(&f->idle, on_idle_schedule), 0);
    wait_event(&f->called);
    assert_int_equal(lahja_uv_close((uv_handle_t *)&f->idle), 0);
    return f->rc;
}

static int run_blocks(lahja_manager_t *m, void *user)
{
    (void)m, (void)user;
    return lahja_sleep_until(LAHJA_FOREVER);
}

static int main_schedule_from_callback(void *arg)
{
    (void)arg;
    struct from_cb f;
    memset(&f, 0, sizeof f);
    lahja_latch_init(&f.task_ran);
    lahja_service_t svc;
    lahja_service_init(&svc, "Callbacks", run_blocks, &f);
    assert_int_equal(lahja_manager_new(&svc, &f.m), 0);
    struct runner r;
    runner_start(&r, f.m);

    assert_int_equal(schedule_from_callback(&f), 0);
    wait_event(&f.task_ran);
    expect_stats(f.m, 1, 1, 0);
    assert_int_equal(lahja_manager_stop(f.m), 0);
    assert_int_equal(runner_join(&r), 0);

    lahja_latch_init(&f.task_ran);
    assert_int_equal(schedule_from_callback(&f), LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(lahja_latch_is_set(&f.task_ran), 0);
    expect_stats(f.m, 1, 1, 0);
    assert_int_equal(lahja_manager_nerrors(f.m), 0);
    assert_int_equal(lahja_manager_free(f.m), 0);
    return 0;
}
MAIN_TEST(schedule_from_callback)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_external_cancel),
        cmocka_unit_test(test_tree_runner_cancelled),
        cmocka_unit_test(test_tree_leaf_fails),
        cmocka_unit_test(test_cleanup_without_suspension),
        cmocka_unit_test(test_cleanup_suspends_shielded),
        cmocka_unit_test(test_cleanup_suspends_unshielded),
        cmocka_unit_test(test_daemon_sleeping_cancelled),
        cmocka_unit_test(test_daemon_looping_cancelled),
        cmocka_unit_test(test_daemon_returns_zero_when_cancelled),
        cmocka_unit_test(test_schedule_after_cancel_dropped),
        cmocka_unit_test(test_schedule_after_finish),
        cmocka_unit_test(test_schedule_while_finishing),
        cmocka_unit_test(test_schedule_from_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
