/*
 * Nurseries: waiting for every child, failures (first one cancels the
 * rest, all recorded in order), cancellation from inside and outside,
 * spawning during join and after it, child handles, and the order in
 * which a cancelled tree of nurseries unwinds.
 */
#include <errno.h>
#include <string.h>

#include "support_task.h"

/* Children that block on an event after telling a gate. */
struct blockers {
    struct gate gate;
    lahja_latch_t ev;
    int rc[4];
    int n;
    int done;
};

static void blockers_init(struct blockers *b, int want)
{
    gate_init(&b->gate, want);
    lahja_latch_init(&b->ev);
    for (int i = 0; i < 4; i++)
        b->rc[i] = PENDING;
    b->n = 0;
    b->done = 0;
}

static int block_on_event(void *arg)
{
    struct blockers *b = arg;
    int i = b->n++;
    gate_arrive(&b->gate);
    b->rc[i] = lahja_latch_wait(&b->ev, LAHJA_FOREVER);
    b->done++;
    return b->rc[i];
}

/* Sets the event once every blocker is waiting, after a few yields so
 * that the nursery's join is entered long before. */
static int release_blockers(void *arg)
{
    struct blockers *b = arg;
    gate_wait(&b->gate);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lahja_yield(), 0);
    return lahja_latch_set(&b->ev);
}

static int main_waits_for_all_children(void *unused)
{
    (void)unused;
    struct blockers b;
    blockers_init(&b, 3);
    lahja_nursery_t *n;
    lahja_task_t *h[3];
    assert_int_equal(lahja_nursery_open(&n), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lahja_nursery_spawn(n, block_on_event, &b, NULL, &h[i]), 0);
    assert_int_equal(lahja_nursery_spawn(n, release_blockers, &b, NULL, NULL), 0);
    assert_int_equal(lahja_nursery_join(n), 0);
    assert_int_equal(b.done, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(b.rc[i], 0);
        assert_int_equal(lahja_task_done(h[i]), 1);
    }
    assert_int_equal(lahja_nursery_nfailures(n), 0);
    assert_null(lahja_nursery_failure(n, 0));
    lahja_nursery_free(n);
    return 0;
}
MAIN_TEST(waits_for_all_children)

/* ------------------------------------------------------------ failures */

struct first_failure {
    struct gate gate;       /* b and c blocked */
    lahja_latch_t go, never;
    int rc_b, rc_c, rc_body;
};

static int fail_on_go(void *arg)
{
    struct first_failure *f = arg;
    assert_int_equal(lahja_latch_wait(&f->go, LAHJA_FOREVER), 0);
    return -EIO;
}

static int cancelled_quietly(void *arg)
{
    struct first_failure *f = arg;
    gate_arrive(&f->gate);
    f->rc_b = lahja_latch_wait(&f->never, LAHJA_FOREVER);
    return f->rc_b;
}

/* Fails in its cleanup, after the first failure. */
static int fails_when_cancelled(void *arg)
{
    struct first_failure *f = arg;
    gate_arrive(&f->gate);
    f->rc_c = lahja_latch_wait(&f->never, LAHJA_FOREVER);
    return -EPIPE;
}

static void assert_failure(const lahja_nursery_t *n, size_t i, const char *name, int code)
{
    const lahja_failure_t *f = lahja_nursery_failure(n, i);
    assert_non_null(f);
    assert_string_equal(f->task_name, name);
    assert_int_equal(f->code, code);
}

static int main_first_failure_cancels_rest(void *unused)
{
    (void)unused;
    struct first_failure f = { .rc_b = PENDING, .rc_c = PENDING };
    gate_init(&f.gate, 2);
    lahja_latch_init(&f.go);
    lahja_latch_init(&f.never);
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, fail_on_go, &f, NAMED("a"), NULL), 0);
    assert_int_equal(lahja_nursery_spawn(n, cancelled_quietly, &f, NAMED("b"), NULL), 0);
    assert_int_equal(lahja_nursery_spawn(n, fails_when_cancelled, &f, NAMED("c"), NULL), 0);
    gate_wait(&f.gate);

    assert_int_equal(lahja_latch_set(&f.go), 0);
    /* The body is cancelled by a's failure too. */
    f.rc_body = lahja_sleep(GUARD_MS);
    assert_int_equal(f.rc_body, -ECANCELED);
    assert_int_equal(lahja_nursery_join(n), -EIO);

    assert_int_equal(f.rc_b, -ECANCELED);
    assert_int_equal(f.rc_c, -ECANCELED);
    /* b ended on the cancellation: not a failure.  c's is the second. */
    assert_int_equal(lahja_nursery_nfailures(n), 2);
    assert_failure(n, 0, "a", -EIO);
    assert_failure(n, 1, "c", -EPIPE);
    assert_null(lahja_nursery_failure(n, 2));
    lahja_nursery_free(n);
    assert_int_equal(lahja_checkpoint(), 0); /* the nursery's cancellation ended with it */
    return 0;
}
MAIN_TEST(first_failure_cancels_rest)

#define NFAIL 10

static int fail_at_once(void *arg)
{
    return *(int *)arg;
}

/* Ten children fail one after the other (the first failure does not
 * stop the others, which never reach a checkpoint): all are kept, in
 * order, with their names and codes. */
static int main_every_failure_recorded(void *unused)
{
    (void)unused;
    static const char *const names[NFAIL] = { "c0", "c1", "c2", "c3", "c4",
                                              "c5", "c6", "c7", "c8", "c9" };
    int codes[NFAIL];
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    for (int i = 0; i < NFAIL; i++) {
        codes[i] = -(100 + i);
        assert_int_equal(lahja_nursery_spawn(n, fail_at_once, &codes[i], NAMED(names[i]), NULL),
                         0);
    }
    assert_int_equal(lahja_nursery_join(n), -100);
    assert_int_equal(lahja_nursery_nfailures(n), NFAIL);
    for (int i = 0; i < NFAIL; i++)
        assert_failure(n, (size_t)i, names[i], codes[i]);
    assert_null(lahja_nursery_failure(n, NFAIL));
    lahja_nursery_free(n);
    return 0;
}
MAIN_TEST(every_failure_recorded)

static int return_ecanceled(void *arg)
{
    (void)arg;
    return -ECANCELED;
}

static int own_deadline_expires(void *arg)
{
    lahja_latch_t never;
    lahja_latch_init(&never);
    (void)arg;
    return lahja_latch_wait(&never, lahja_deadline_in(1));
}

/* -ECANCELED and -ETIMEDOUT are failures when nothing cancelled the
 * child: they are just error codes then. */
static int main_cancel_codes_without_cancel_fail(void *unused)
{
    (void)unused;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, return_ecanceled, NULL, NAMED("spurious"), NULL), 0);
    assert_int_equal(lahja_nursery_join(n), -ECANCELED);
    assert_int_equal(lahja_nursery_nfailures(n), 1);
    assert_failure(n, 0, "spurious", -ECANCELED);
    lahja_nursery_free(n);

    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, own_deadline_expires, NULL, NAMED("late"), NULL), 0);
    assert_int_equal(lahja_nursery_close(n), -ETIMEDOUT);
    return 0;
}
MAIN_TEST(cancel_codes_without_cancel_fail)

/* A child cancelled on its own is not a failure, and its sibling is
 * not disturbed. */
static int main_cancelled_child_not_failure(void *unused)
{
    (void)unused;
    struct blockers b;
    blockers_init(&b, 2);
    lahja_nursery_t *n;
    lahja_task_t *h[2];
    assert_int_equal(lahja_nursery_open(&n), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(lahja_nursery_spawn(n, block_on_event, &b, NULL, &h[i]), 0);
    gate_wait(&b.gate);
    lahja_task_cancel(h[0]);
    assert_int_equal(lahja_task_join(h[0], LAHJA_FOREVER, NULL), 0);
    assert_int_equal(b.rc[0], -ECANCELED);
    assert_int_equal(b.rc[1], PENDING);
    assert_int_equal(lahja_latch_set(&b.ev), 0);
    assert_int_equal(lahja_nursery_join(n), 0);
    assert_int_equal(b.rc[1], 0);
    assert_int_equal(lahja_nursery_nfailures(n), 0);
    lahja_nursery_free(n);
    return 0;
}
MAIN_TEST(cancelled_child_not_failure)

/* ------------------------------------------------------ cancellation */

static int main_nursery_cancel(void *unused)
{
    (void)unused;
    struct blockers b;
    blockers_init(&b, 2);
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(lahja_nursery_spawn(n, block_on_event, &b, NULL, NULL), 0);
    gate_wait(&b.gate);
    lahja_nursery_cancel(n);
    assert_int_equal(lahja_checkpoint(), -ECANCELED); /* the body is inside */
    assert_int_equal(lahja_nursery_join(n), 0);
    assert_int_equal(b.rc[0], -ECANCELED);
    assert_int_equal(b.rc[1], -ECANCELED);
    assert_int_equal(lahja_nursery_nfailures(n), 0);
    lahja_nursery_free(n);
    assert_int_equal(lahja_checkpoint(), 0);
    return 0;
}
MAIN_TEST(nursery_cancel)

/* A task in nursery join is cancelled from outside: its children are,
 * and the join waits for the one whose cleanup takes a while. */
struct outer_cancel {
    struct gate blocked;
    lahja_latch_t never, in_cleanup, finish_cleanup;
    int rc_fast, rc_slow, slow_done;
    int join_rc, join_returned, slow_done_at_join;
    size_t nfailures;
};

static int fast_child(void *arg)
{
    struct outer_cancel *o = arg;
    gate_arrive(&o->blocked);
    o->rc_fast = lahja_latch_wait(&o->never, LAHJA_FOREVER);
    return o->rc_fast;
}

static int slow_child(void *arg)
{
    struct outer_cancel *o = arg;
    gate_arrive(&o->blocked);
    o->rc_slow = lahja_latch_wait(&o->never, LAHJA_FOREVER);
    lahja_scope_t *shield;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield), 0);
    assert_int_equal(lahja_latch_set(&o->in_cleanup), 0);
    assert_int_equal(lahja_latch_wait(&o->finish_cleanup, lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(lahja_scope_close(shield), 0);
    o->slow_done = 1;
    return o->rc_slow;
}

static int joining_parent(void *arg)
{
    struct outer_cancel *o = arg;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, fast_child, o, NULL, NULL), 0);
    assert_int_equal(lahja_nursery_spawn(n, slow_child, o, NULL, NULL), 0);
    o->join_rc = lahja_nursery_join(n);
    o->join_returned = 1;
    o->slow_done_at_join = o->slow_done;
    o->nfailures = lahja_nursery_nfailures(n);
    lahja_nursery_free(n);
    return o->join_rc;
}

static int main_outer_cancel_during_join(void *unused)
{
    (void)unused;
    struct outer_cancel o = { .rc_fast = PENDING, .rc_slow = PENDING, .join_rc = PENDING };
    gate_init(&o.blocked, 2);
    lahja_latch_init(&o.never);
    lahja_latch_init(&o.in_cleanup);
    lahja_latch_init(&o.finish_cleanup);
    lahja_task_t *p;
    assert_int_equal(lahja_spawn(lahja_rt_current(), joining_parent, &o, NULL, &p), 0);
    gate_wait(&o.blocked);

    lahja_task_cancel(p);
    assert_int_equal(lahja_latch_wait(&o.in_cleanup, lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(o.rc_fast, -ECANCELED);
    assert_int_equal(o.join_returned, 0); /* still waiting for slow_child */

    assert_int_equal(lahja_latch_set(&o.finish_cleanup), 0);
    int res = PENDING;
    assert_int_equal(lahja_task_join(p, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, -ECANCELED);
    assert_int_equal(o.join_rc, -ECANCELED);
    assert_int_equal(o.slow_done_at_join, 1);
    assert_int_equal(o.rc_slow, -ECANCELED);
    assert_int_equal(o.nfailures, 0);
    return 0;
}
MAIN_TEST(outer_cancel_during_join)

/* A child failing in its cleanup, while the opener is cancelled from
 * outside: join reports the failure, which says more than -ECANCELED. */
struct fail_in_cleanup {
    struct gate blocked;
    lahja_latch_t never;
    int join_rc;
};

static int fails_on_cancel(void *arg)
{
    struct fail_in_cleanup *f = arg;
    gate_arrive(&f->blocked);
    int rc = lahja_latch_wait(&f->never, LAHJA_FOREVER);
    return rc == -ECANCELED ? -EPIPE : -EINVAL;
}

static int joins_failing_child(void *arg)
{
    struct fail_in_cleanup *f = arg;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, fails_on_cancel, f, NAMED("flusher"), NULL), 0);
    f->join_rc = lahja_nursery_join(n);
    assert_int_equal(lahja_nursery_nfailures(n), 1);
    assert_failure(n, 0, "flusher", -EPIPE);
    lahja_nursery_free(n);
    return f->join_rc;
}

static int main_failure_beats_outer_cancel(void *unused)
{
    (void)unused;
    struct fail_in_cleanup f = { .join_rc = PENDING };
    gate_init(&f.blocked, 1);
    lahja_latch_init(&f.never);
    lahja_task_t *p;
    assert_int_equal(lahja_spawn(lahja_rt_current(), joins_failing_child, &f, NULL, &p), 0);
    gate_wait(&f.blocked);
    lahja_task_cancel(p);
    int res = PENDING;
    assert_int_equal(lahja_task_join(p, LAHJA_FOREVER, &res), 0);
    assert_int_equal(f.join_rc, -EPIPE);
    assert_int_equal(res, -EPIPE);
    return 0;
}
MAIN_TEST(failure_beats_outer_cancel)

/* ---------------------------------------------- spawning and handles */

#define CHAIN 5

/* Each child spawns the next into the same nursery while the parent is
 * already in join. */
struct chain {
    lahja_nursery_t *n;
    int parent_in_join;
    int count;
    int saw_join[CHAIN];
    int spawn_rc[CHAIN];
};

static int chain_child(void *arg)
{
    struct chain *c = arg;
    int i = c->count++;
    c->saw_join[i] = c->parent_in_join;
    assert_int_equal(lahja_yield(), 0);
    if (i + 1 < CHAIN)
        c->spawn_rc[i] = lahja_nursery_spawn(c->n, chain_child, c, NULL, NULL);
    return 0;
}

static int main_spawn_siblings_during_join(void *unused)
{
    (void)unused;
    struct chain c = { .count = 0 };
    assert_int_equal(lahja_nursery_open(&c.n), 0);
    assert_int_equal(lahja_nursery_spawn(c.n, chain_child, &c, NULL, NULL), 0);
    /* join suspends at once, before the first child runs. */
    c.parent_in_join = 1;
    assert_int_equal(lahja_nursery_join(c.n), 0);
    assert_int_equal(c.count, CHAIN);
    for (int i = 0; i < CHAIN; i++)
        assert_int_equal(c.saw_join[i], 1);
    for (int i = 0; i + 1 < CHAIN; i++)
        assert_int_equal(c.spawn_rc[i], 0);
    lahja_nursery_free(c.n);
    return 0;
}
MAIN_TEST(spawn_siblings_during_join)

static int set_flag(void *arg)
{
    *(int *)arg = 1;
    return 0;
}

/* A task outside the nursery spawns into it after the last child has
 * finished but before the opener's join has returned: join waits for
 * the newcomer too. */
struct late_spawn {
    lahja_nursery_t *n;
    lahja_latch_t last_done;
    int late_ran, late_ran_at_join, spawn_rc;
};

static int late_task(void *arg)
{
    struct late_spawn *l = arg;
    assert_int_equal(lahja_yield(), 0);
    l->late_ran = 1;
    return 0;
}

/* The nursery's only child: ends right after waking the spawner, so
 * that the spawner is queued ahead of the opener. */
static int last_child(void *arg)
{
    struct late_spawn *l = arg;
    return lahja_latch_set(&l->last_done);
}

static int outside_spawner(void *arg)
{
    struct late_spawn *l = arg;
    assert_int_equal(lahja_latch_wait(&l->last_done, LAHJA_FOREVER), 0);
    l->spawn_rc = lahja_nursery_spawn(l->n, late_task, l, NULL, NULL);
    return 0;
}

static int main_spawn_while_join_finishing(void *unused)
{
    (void)unused;
    struct late_spawn l = { .spawn_rc = PENDING };
    lahja_latch_init(&l.last_done);
    lahja_task_t *sp;
    assert_int_equal(lahja_spawn(lahja_rt_current(), outside_spawner, &l, NULL, &sp), 0);
    assert_int_equal(lahja_yield(), 0); /* the spawner waits first */
    assert_int_equal(lahja_nursery_open(&l.n), 0);
    assert_int_equal(lahja_nursery_spawn(l.n, last_child, &l, NULL, NULL), 0);
    assert_int_equal(lahja_nursery_join(l.n), 0);
    l.late_ran_at_join = l.late_ran;
    lahja_nursery_free(l.n);
    assert_int_equal(lahja_task_join(sp, LAHJA_FOREVER, NULL), 0);
    assert_int_equal(l.spawn_rc, 0);
    assert_int_equal(l.late_ran_at_join, 1);
    return 0;
}
MAIN_TEST(spawn_while_join_finishing)

static int main_spawn_after_join(void *unused)
{
    (void)unused;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_join(n), 0);
    int flag = 0;
    lahja_task_t *t = NULL;
    assert_int_equal(lahja_nursery_spawn(n, set_flag, &flag, NULL, &t), LAHJA_ELIFECYCLE);
    assert_null(t);
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(flag, 0);
    lahja_nursery_free(n);
    return 0;
}
MAIN_TEST(spawn_after_join)

struct handles {
    lahja_latch_t ok_go, bad_go;
    lahja_task_t *bad;
    int observer_rc, observer_res;
};

static int ok_child(void *arg)
{
    struct handles *h = arg;
    return lahja_latch_wait(&h->ok_go, LAHJA_FOREVER);
}

static int bad_child(void *arg)
{
    struct handles *h = arg;
    assert_int_equal(lahja_latch_wait(&h->bad_go, LAHJA_FOREVER), 0);
    return -EIO;
}

/* A root task, outside the nursery, joining one of its children. */
static int observer(void *arg)
{
    struct handles *h = arg;
    h->observer_rc = lahja_task_join(h->bad, LAHJA_FOREVER, &h->observer_res);
    return 0;
}

static int main_child_handles(void *unused)
{
    (void)unused;
    struct handles h = { .observer_rc = PENDING, .observer_res = PENDING };
    lahja_latch_init(&h.ok_go);
    lahja_latch_init(&h.bad_go);
    lahja_nursery_t *n;
    lahja_task_t *ok, *obs;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, ok_child, &h, NAMED("ok"), &ok), 0);
    assert_int_equal(lahja_nursery_spawn(n, bad_child, &h, NAMED("bad"), &h.bad), 0);
    assert_int_equal(lahja_spawn(lahja_rt_current(), observer, &h, NULL, &obs), 0);

    assert_int_equal(lahja_latch_set(&h.ok_go), 0);
    int res = PENDING;
    assert_int_equal(lahja_task_join(ok, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);
    assert_int_equal(lahja_task_join(ok, LAHJA_FOREVER, &res), 0); /* still valid */

    assert_int_equal(lahja_latch_set(&h.bad_go), 0);
    /* Joined by the observer, the failure still counts for the nursery. */
    assert_int_equal(lahja_nursery_join(n), -EIO);
    assert_int_equal(lahja_nursery_nfailures(n), 1);
    assert_failure(n, 0, "bad", -EIO);
    assert_int_equal(lahja_task_join(obs, LAHJA_FOREVER, NULL), 0);
    assert_int_equal(h.observer_rc, 0);
    assert_int_equal(h.observer_res, -EIO);

    /* Joined but not freed: the handles are still good. */
    assert_int_equal(lahja_task_done(h.bad), 1);
    assert_int_equal(lahja_task_result(h.bad), -EIO);
    assert_string_equal(lahja_task_name(h.bad), "bad");
    res = PENDING;
    assert_int_equal(lahja_task_join(ok, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);
    lahja_nursery_free(n);
    return 0;
}
MAIN_TEST(child_handles)

struct late_child {
    int rc_checkpoint, rc_sleep;
};

static int late_child(void *arg)
{
    struct late_child *l = arg;
    l->rc_checkpoint = lahja_checkpoint();
    l->rc_sleep = lahja_sleep(GUARD_MS);
    return l->rc_sleep;
}

static int main_spawn_into_cancelled(void *unused)
{
    (void)unused;
    struct late_child l = { PENDING, PENDING };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    lahja_nursery_cancel(n);
    int flag = 0;
    assert_int_equal(lahja_nursery_spawn(n, late_child, &l, NULL, NULL), 0);
    /* Starting cancelled does not stop a task that never checks. */
    assert_int_equal(lahja_nursery_spawn(n, set_flag, &flag, NULL, NULL), 0);
    assert_int_equal(lahja_nursery_join(n), 0);
    assert_int_equal(l.rc_checkpoint, -ECANCELED);
    assert_int_equal(l.rc_sleep, -ECANCELED);
    assert_int_equal(flag, 1);
    assert_int_equal(lahja_nursery_nfailures(n), 0);
    lahja_nursery_free(n);
    return 0;
}
MAIN_TEST(spawn_into_cancelled)

/* ------------------------------------------------- trees of nurseries */

/*
 * A binary tree of 7 tasks: 0 is the root, i's children are 2i+1 and
 * 2i+2.  Every task sleeps; the root's scope is cancelled.  Each task
 * records when its sleep returned and, once its own nursery closed,
 * when its cleanup ran.  The leaves' cleanup suspends (shielded), so
 * that their parents really have to wait for it.
 */
#define TREE 7

struct tree {
    struct gate asleep;
    lahja_scope_t *root_scope;
    int woke[TREE], nwoke;
    int cleaned[TREE], ncleaned;
    int rc_sleep[TREE], rc_close[TREE];
};

struct node {
    struct tree *tr;
    int id;
};

static struct node nodes[TREE];
static const char *const node_names[TREE] = { "r", "m1", "m2", "l11", "l12", "l21", "l22" };

static int tree_task(void *arg);

static lahja_nursery_t *spawn_subtree(struct node *nd)
{
    if (2 * nd->id + 1 >= TREE)
        return NULL;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    for (int c = 2 * nd->id + 1; c <= 2 * nd->id + 2; c++)
        assert_int_equal(lahja_nursery_spawn(n, tree_task, &nodes[c], NAMED(node_names[c]), NULL),
                         0);
    return n;
}

static void shielded_cleanup(void)
{
    lahja_scope_t *shield;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lahja_yield(), 0);
    assert_int_equal(lahja_scope_close(shield), 0);
}

static int tree_task(void *arg)
{
    struct node *nd = arg;
    struct tree *tr = nd->tr;
    lahja_scope_t *s = NULL;
    if (nd->id == 0) {
        assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
        tr->root_scope = s;
    }
    lahja_nursery_t *n = spawn_subtree(nd);
    gate_arrive(&tr->asleep);
    tr->rc_sleep[nd->id] = lahja_sleep_until(LAHJA_FOREVER);
    tr->woke[tr->nwoke++] = nd->id;
    if (n != NULL)
        tr->rc_close[nd->id] = lahja_nursery_close(n);
    shielded_cleanup();
    tr->cleaned[tr->ncleaned++] = nd->id;
    if (s != NULL) /* the root handles its own scope's cancellation */
        return lahja_scope_close(s) == -ECANCELED ? 0 : -EINVAL;
    return tr->rc_sleep[nd->id];
}

/* Position of each id in an order of TREE ids. */
static void positions(const int *order, int *pos)
{
    for (int i = 0; i < TREE; i++)
        pos[order[i]] = i;
}

static int main_nested_cancel_leaves_first(void *unused)
{
    (void)unused;
    static struct tree tr;
    memset(&tr, 0, sizeof tr);
    gate_init(&tr.asleep, TREE);
    for (int i = 0; i < TREE; i++)
        nodes[i] = (struct node){ &tr, i };
    lahja_task_t *root;
    assert_int_equal(lahja_spawn(lahja_rt_current(), tree_task, &nodes[0], NAMED("r"), &root), 0);
    gate_wait(&tr.asleep);

    lahja_scope_cancel(tr.root_scope);
    int res = PENDING;
    assert_int_equal(lahja_task_join(root, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);
    assert_int_equal(tr.nwoke, TREE);
    assert_int_equal(tr.ncleaned, TREE);
    for (int i = 0; i < TREE; i++)
        assert_int_equal(tr.rc_sleep[i], -ECANCELED);
    for (int i = 0; i < 3; i++) /* no failures, cancelled from outside */
        assert_int_equal(tr.rc_close[i], -ECANCELED);

    int clean_pos[TREE], woke_pos[TREE];
    positions(tr.cleaned, clean_pos);
    positions(tr.woke, woke_pos);
    for (int i = 1; i < TREE; i++) {
        int parent = (i - 1) / 2;
        /* A nursery closes only after its children's cleanup. */
        assert_true(clean_pos[i] < clean_pos[parent]);
        /* And the cancellation reaches the leaves first. */
        assert_true(woke_pos[i] < woke_pos[parent]);
    }
    return 0;
}
MAIN_TEST(nested_cancel_leaves_first)

/* A failure two levels down reaches the outer nursery through the
 * parent's return value. */
struct upward {
    lahja_latch_t never;
    int rc_inner, rc_sibling;
    size_t inner_nfailures;
    char inner_name[64];
    int inner_code;
};

static int failing_grandchild(void *arg)
{
    (void)arg;
    return -EIO;
}

static int failing_parent(void *arg)
{
    struct upward *u = arg;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, failing_grandchild, NULL, NAMED("child"), NULL), 0);
    u->rc_inner = lahja_nursery_join(n);
    u->inner_nfailures = lahja_nursery_nfailures(n);
    if (u->inner_nfailures > 0) {
        const lahja_failure_t *f = lahja_nursery_failure(n, 0);
        strcpy(u->inner_name, f->task_name); /* valid until the free below */
        u->inner_code = f->code;
    }
    lahja_nursery_free(n);
    return u->rc_inner;
}

static int waiting_sibling(void *arg)
{
    struct upward *u = arg;
    u->rc_sibling = lahja_latch_wait(&u->never, LAHJA_FOREVER);
    return u->rc_sibling;
}

static int main_failure_propagates_upward(void *unused)
{
    (void)unused;
    struct upward u = { .rc_inner = PENDING, .rc_sibling = PENDING };
    lahja_latch_init(&u.never);
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, waiting_sibling, &u, NAMED("sibling"), NULL), 0);
    assert_int_equal(lahja_nursery_spawn(n, failing_parent, &u, NAMED("parent"), NULL), 0);
    assert_int_equal(lahja_nursery_join(n), -EIO);
    assert_int_equal(lahja_nursery_nfailures(n), 1);
    assert_failure(n, 0, "parent", -EIO);
    lahja_nursery_free(n);

    assert_int_equal(u.rc_inner, -EIO);
    assert_int_equal(u.inner_nfailures, 1);
    assert_string_equal(u.inner_name, "child");
    assert_int_equal(u.inner_code, -EIO);
    assert_int_equal(u.rc_sibling, -ECANCELED);
    return 0;
}
MAIN_TEST(failure_propagates_upward)

static void test_outside_task(void **state)
{
    (void)state;
    lahja_nursery_t *n = NULL;
    assert_int_equal(lahja_nursery_open(&n), LAHJA_ENOTASK);
    assert_null(n);
    lahja_nursery_free(NULL); /* accepted */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waits_for_all_children),
        cmocka_unit_test(test_first_failure_cancels_rest),
        cmocka_unit_test(test_every_failure_recorded),
        cmocka_unit_test(test_cancel_codes_without_cancel_fail),
        cmocka_unit_test(test_cancelled_child_not_failure),
        cmocka_unit_test(test_nursery_cancel),
        cmocka_unit_test(test_outer_cancel_during_join),
        cmocka_unit_test(test_failure_beats_outer_cancel),
        cmocka_unit_test(test_spawn_siblings_during_join),
        cmocka_unit_test(test_spawn_while_join_finishing),
        cmocka_unit_test(test_spawn_after_join),
        cmocka_unit_test(test_child_handles),
        cmocka_unit_test(test_spawn_into_cancelled),
        cmocka_unit_test(test_nested_cancel_leaves_first),
        cmocka_unit_test(test_failure_propagates_upward),
        cmocka_unit_test(test_outside_task),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
