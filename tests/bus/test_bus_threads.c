/*
 * Posting from other threads (B32): worker threads broadcast, request
 * and run calls on the endpoint's thread through its post queue; order
 * per poster, backpressure reaching the posters through a bounded queue,
 * what a stop does with what was posted, and what is refused.
 *
 * The endpoint "a" runs in a task of the test's process; its peer "b" is
 * a child process that checks what it receives.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "support_bus.h"

#define WORKERS 4

struct tick {
    uint32_t worker, seq;
};

/* ------------------------------------------------------------ peer "b" */

/* Tick: counted, in order per worker.  Count (a request): answered with
 * "<ticks> <out of order>".  Bye: stops. */
struct checker {
    uint32_t next[WORKERS];
    uint64_t ticks, disorder;
};

static int on_tick(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct checker *c = user;
    size_t len;
    const void *p = lahja_event_payload(ev, &len);
    struct tick t = { WORKERS, 0 };
    if (len == sizeof t)
        memcpy(&t, p, sizeof t); /* payloads are not aligned: they are read in place */
    if (t.worker >= WORKERS || t.seq != c->next[t.worker])
        c->disorder++;
    else
        c->next[t.worker]++;
    c->ticks++;
    return 0;
}

static int on_count(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct checker *c = user;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%llu %llu", (unsigned long long)c->ticks,
                     (unsigned long long)c->disorder);
    lahja_event_t *answer = NULL;
    EXPECT_EQ(lahja_event_new("Counted", buf, (size_t)n, &answer), 0);
    EXPECT_EQ(lahja_respond(ep, ev, answer), 0);
    lahja_event_unref(answer);
    return 0;
}

static int child_checker(void *arg)
{
    const char *dir = arg;
    struct checker c = { { 0 }, 0, 0 };
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "b", &o);
    lahja_subscription_t *s1 = NULL, *s2 = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Tick", on_tick, &c, &s1), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Count", on_count, &c, &s2), 0);
    bus_child_signal();
    lahja_event_t *bye = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Bye", lahja_deadline_in(6 * GUARD_MS), &bye), 0);
    lahja_event_unref(bye);
    lahja_subscription_cancel(s1);
    lahja_subscription_cancel(s2);
    bus_close(ep);
    return 0;
}

/* ------------------------------------------------------------- helpers */

struct world {
    char dir[BUS_DIR_MAX];
    bus_child_t b;
    lahja_endpoint_t *ep;
    pthread_t loop_thread;       /* the endpoint's */
    lahja_cond_t changed;        /* a posted call ran */
    int calls;
};

/* Forks "b", then (in the caller's task) starts "a" and connects. */
static void setup(struct world *w, lahja_endpoint_options_t *o)
{
    w->ep = bus_client("a", o);
    w->loop_thread = pthread_self();
    lahja_cond_init(&w->changed);
    EXPECT_EQ(bus_connect(w->ep, w->dir, "b"), 0);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(w->ep, "b", "Tick",
                                                       lahja_deadline_in(GUARD_MS)), 0);
}

static void count_at_b(struct world *w, uint64_t *ticks, uint64_t *disorder)
{
    lahja_event_t *req = NULL, *resp = NULL;
    EXPECT_EQ(lahja_request_new("Count", "Counted", NULL, 0, &req), 0);
    EXPECT_EQ(lahja_request(w->ep, req, NULL, lahja_deadline_in(GUARD_MS), &resp), 0);
    size_t len;
    const char *p = lahja_event_payload(resp, &len);
    char buf[64];
    snprintf(buf, sizeof buf, "%.*s", (int)len, p);
    unsigned long long t = 0, d = 0;
    EXPECT_EQ(sscanf(buf, "%llu %llu", &t, &d), 2);
    *ticks = t;
    *disorder = d;
    lahja_event_unref(req);
    lahja_event_unref(resp);
}

static void finish(struct world *w)
{
    EXPECT_EQ(bus_send(w->ep, "Bye", NULL), 0);
    bus_close(w->ep);
    EXPECT_CHILD_OK(&w->b);
    bus_dir_remove(w->dir);
}

/* A posted call: it runs on the endpoint's thread. */
static void note_call(lahja_endpoint_t *ep, void *user)
{
    struct world *w = user;
    EXPECT_TRUE(pthread_equal(pthread_self(), w->loop_thread));
    EXPECT_TRUE(ep == w->ep);
    w->calls++;
    lahja_cond_broadcast(&w->changed);
}

static void wait_calls(struct world *w, int n)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (w->calls < n)
        EXPECT_EQ(lahja_cond_wait(&w->changed, deadline), 0);
}

static int calls_so_far(const struct world *w)
{
    return w->calls;
}

static lahja_event_t *tick(uint32_t worker, uint32_t seq)
{
    struct tick t = { worker, seq };
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new("Tick", &t, sizeof t, &ev), 0);
    return ev;
}

/* ----------------------------------------------- workers broadcasting */

#define PER_WORKER 5000

struct worker {
    struct world *w;
    uint32_t id;
    int failures;
};

static void *work(void *arg)
{
    struct worker *k = arg;
    for (uint32_t i = 0; i < PER_WORKER; i++) {
        lahja_event_t *ev = tick(k->id, i);
        if (lahja_post(k->w->ep, ev, NULL, -1) != 0) {
            k->failures++;
            lahja_event_unref(ev);
        }
    }
    /* Ordered after its broadcasts: when it runs, they have gone. */
    if (lahja_post_call(k->w->ep, note_call, k->w, -1) != 0)
        k->failures++;
    return NULL;
}

static int main_workers_broadcast_in_order(void *arg)
{
    (void)arg;
    struct world w = { .calls = 0 };
    bus_dir_make(w.dir);
    w.b = bus_fork(child_checker, w.dir);
    EXPECT_EQ(bus_child_await_signal(&w.b), 0);
    lahja_endpoint_options_t o = bus_opts(NULL);
    o.post_queue = 16; /* small: the workers wait for room */
    setup(&w, &o);
    struct worker k[WORKERS];
    pthread_t t[WORKERS];
    for (uint32_t i = 0; i < WORKERS; i++) {
        k[i] = (struct worker){ &w, i, 0 };
        EXPECT_EQ(pthread_create(&t[i], NULL, work, &k[i]), 0);
    }
    wait_calls(&w, WORKERS); /* the loop runs meanwhile: this is a task */
    for (int i = 0; i < WORKERS; i++) {
        EXPECT_EQ(pthread_join(t[i], NULL), 0);
        EXPECT_EQ(k[i].failures, 0);
    }
    uint64_t ticks = 0, disorder = 0;
    count_at_b(&w, &ticks, &disorder);
    EXPECT_EQ(ticks, (uint64_t)WORKERS * PER_WORKER);
    EXPECT_EQ(disorder, 0);
    finish(&w);
    return 0;
}
BUS_MAIN_TEST(workers_broadcast_in_order)

/* --------------------------------------------------- requests from a worker */

struct asked {
    struct world *w;
    int called, status;
    char answer[32];
};

static void on_counted(lahja_endpoint_t *ep, int status, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct asked *a = user;
    EXPECT_TRUE(pthread_equal(pthread_self(), a->w->loop_thread));
    a->status = status;
    if (ev != NULL) {
        size_t len;
        const char *p = lahja_event_payload(ev, &len);
        snprintf(a->answer, sizeof a->answer, "%.*s", (int)len, p);
        lahja_event_unref(ev);
    }
    a->called++;
    a->w->calls++;
    lahja_cond_broadcast(&a->w->changed);
}

struct asker {
    struct world *w;
    struct asked ok, unanswered;
    int rc[2];
};

static void *ask(void *arg)
{
    struct asker *a = arg;
    lahja_event_t *req = NULL;
    EXPECT_EQ(lahja_request_new("Count", "Counted", NULL, 0, &req), 0);
    a->rc[0] = lahja_post_request(a->w->ep, req, NULL, GUARD_MS, on_counted, &a->ok, -1);
    /* Nobody answers Nobody: the deadline ends it, on the endpoint's thread. */
    lahja_event_t *lost = NULL;
    EXPECT_EQ(lahja_request_new("Nobody", "Counted", NULL, 0, &lost), 0);
    lahja_broadcast_config_t cfg = { .allow_no_subscribers = 0 };
    a->rc[1] = lahja_post_request(a->w->ep, lost, &cfg, 50, on_counted, &a->unanswered, -1);
    return NULL;
}

static int main_worker_requests(void *arg)
{
    (void)arg;
    struct world w = { .calls = 0 };
    bus_dir_make(w.dir);
    w.b = bus_fork(child_checker, w.dir);
    EXPECT_EQ(bus_child_await_signal(&w.b), 0);
    lahja_endpoint_options_t o = bus_opts(NULL);
    setup(&w, &o);
    struct asker a = { .w = &w };
    a.ok.w = a.unanswered.w = &w;
    pthread_t t;
    EXPECT_EQ(pthread_create(&t, NULL, ask, &a), 0);
    EXPECT_EQ(pthread_join(t, NULL), 0);
    EXPECT_EQ(a.rc[0], 0);
    EXPECT_EQ(a.rc[1], 0);
    wait_calls(&w, 2);
    EXPECT_EQ(a.ok.called, 1);
    EXPECT_EQ(a.ok.status, 0);
    EXPECT_EQ(strcmp(a.ok.answer, "0 0"), 0);
    EXPECT_EQ(a.unanswered.called, 1);
    EXPECT_EQ(a.unanswered.status, LAHJA_ENOSUBSCRIBERS); /* it could not start */
    finish(&w);
    return 0;
}
BUS_MAIN_TEST(worker_requests)

/* ---------------------------------------------------------- backpressure */

#define BIG (8u << 20)

static void free_payload(void *payload, void *user)
{
    (void)user;
    free(payload);
}

struct filler {
    struct world *w;
    int pipe[2];                 /* written once the refusals are seen */
    int accepted;                /* small posts accepted */
    int refused;                 /* one waited for room in vain */
};

static void *fill(void *arg)
{
    struct filler *f = arg;
    lahja_endpoint_t *ep = f->w->ep;
    void *big = calloc(1, BIG);
    lahja_event_t *ev = NULL;
    EXPECT_TRUE(big != NULL);
    EXPECT_EQ(lahja_event_wrap("Tick", big, BIG, free_payload, NULL, &ev), 0);
    EXPECT_EQ(lahja_post(ep, ev, NULL, -1), 0);
    /* The 8 MiB event keeps "a" over the high-water mark of the stopped
     * "b": the next broadcast waits, the queue is not taken meanwhile,
     * and it fills; a post then waits for room in vain. */
    for (int i = 0; i < 1000; i++) {
        lahja_event_t *t = tick(9, (uint32_t)i);
        int rc = lahja_post(ep, t, NULL, 50);
        if (rc == 0) {
            f->accepted++;
            continue;
        }
        EXPECT_EQ(rc, -EAGAIN);
        lahja_event_unref(t);
        f->refused = 1;
        break;
    }
    EXPECT_EQ(write(f->pipe[1], "!", 1), 1);
    /* A call waits for room too, until "b" reads again. */
    EXPECT_EQ(lahja_post_call(ep, note_call, f->w, -1), 0);
    return NULL;
}

static int main_backpressure_reaches_posters(void *arg)
{
    (void)arg;
    struct world w = { .calls = 0 };
    bus_dir_make(w.dir);
    w.b = bus_fork(child_checker, w.dir);
    EXPECT_EQ(bus_child_await_signal(&w.b), 0);
    lahja_endpoint_options_t o = bus_opts(NULL);
    o.post_queue = 4;
    o.high_water = 4096;
    o.compress_threshold = SIZE_MAX;
    setup(&w, &o);
    EXPECT_EQ(kill(w.b.pid, SIGSTOP), 0);
    struct filler f = { .w = &w };
    EXPECT_EQ(pipe(f.pipe), 0);
    pthread_t t;
    EXPECT_EQ(pthread_create(&t, NULL, fill, &f), 0);
    /* The loop runs while this task waits for the filler's word. */
    EXPECT_EQ(bus_wait_readable(f.pipe[0], lahja_deadline_in(GUARD_MS)), 0);
    EXPECT_EQ(calls_so_far(&w), 0); /* its call waits for room */
    /* "b" reads again: everything drains, the call included. */
    EXPECT_EQ(kill(w.b.pid, SIGCONT), 0);
    wait_calls(&w, 1);
    EXPECT_EQ(pthread_join(t, NULL), 0);
    close(f.pipe[0]);
    close(f.pipe[1]);
    EXPECT_TRUE(f.refused);
    EXPECT_TRUE(f.accepted <= 4 + 1); /* the queue, and the one taken */
    uint64_t ticks = 0, disorder = 0;
    count_at_b(&w, &ticks, &disorder);
    EXPECT_EQ(ticks, 1 + (uint64_t)f.accepted);
    finish(&w);
    return 0;
}
BUS_MAIN_TEST(backpressure_reaches_posters)

/* ----------------------------------------------------------------- stop */

struct poster {
    struct world *w;
    int n;
};

static void *post_some(void *arg)
{
    struct poster *p = arg;
    for (int i = 0; i < p->n; i++) {
        lahja_event_t *ev = tick(0, (uint32_t)i);
        EXPECT_EQ(lahja_post(p->w->ep, ev, NULL, -1), 0);
    }
    return NULL;
}

static int child_count_then_stop(void *arg);

static int main_stop_carries_out_what_was_posted(void *arg)
{
    (void)arg;
    struct world w = { .calls = 0 };
    bus_dir_make(w.dir);
    w.b = bus_fork(child_count_then_stop, w.dir);
    EXPECT_EQ(bus_child_await_signal(&w.b), 0);
    lahja_endpoint_options_t o = bus_opts(NULL);
    o.post_queue = 100000;
    setup(&w, &o);
    /* The worker is done before the loop runs again: everything it
     * posted is still queued when the stop begins. */
    struct poster p = { &w, 3000 };
    pthread_t t;
    EXPECT_EQ(pthread_create(&t, NULL, post_some, &p), 0);
    EXPECT_EQ(pthread_join(t, NULL), 0);
    bus_close(w.ep);
    /* "b" exits 0 only if it got all 3000 before the connection ended. */
    EXPECT_CHILD_OK(&w.b);
    bus_dir_remove(w.dir);
    return 0;
}
BUS_MAIN_TEST(stop_carries_out_what_was_posted)

static int child_count_then_stop(void *arg)
{
    const char *dir = arg;
    struct checker c = { { 0 }, 0, 0 };
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "b", &o);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Tick", on_tick, &c, &s), 0);
    bus_child_signal();
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    bus_wait_disconnected(ep, "a");
    EXPECT_EQ(c.ticks, 3000);
    EXPECT_EQ(c.disorder, 0);
    lahja_subscription_cancel(s);
    bus_close(ep);
    return 0;
}

/* -------------------------------------------------------------- refusals */

struct refusals {
    lahja_endpoint_t *ep;
    int rc[4];
};

static void *post_to_stopped(void *arg)
{
    struct refusals *r = arg;
    lahja_event_t *ev = tick(0, 0);
    r->rc[0] = lahja_post(r->ep, ev, NULL, -1);
    r->rc[1] = lahja_post_call(r->ep, note_call, NULL, -1);
    lahja_event_unref(ev);
    return NULL;
}

static int main_refusals(void *arg)
{
    (void)arg;
    lahja_endpoint_options_t o = bus_opts(NULL);
    o.post_queue = 2;
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new("a", &o, &ep), 0);
    lahja_event_t *ev = tick(0, 0);
    /* Not started. */
    EXPECT_EQ(lahja_post(ep, ev, NULL, 0), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_start(ep, NULL), 0);
    /* Bad arguments. */
    EXPECT_EQ(lahja_post(NULL, ev, NULL, 0), -EINVAL);
    EXPECT_EQ(lahja_post(ep, NULL, NULL, 0), -EINVAL);
    EXPECT_EQ(lahja_post_call(ep, NULL, NULL, 0), -EINVAL);
    EXPECT_EQ(lahja_post_request(ep, ev, NULL, 0, on_counted, NULL, 0), -EINVAL); /* not a request */
    /* A bound event. */
    lahja_broadcast_config_t quiet = { .allow_no_subscribers = 1 };
    EXPECT_EQ(lahja_broadcast_nowait(ep, ev, &quiet), 0);
    EXPECT_EQ(lahja_post(ep, ev, NULL, 0), -EINVAL);
    lahja_event_unref(ev);
    /* On the endpoint's own thread a full queue fails at once, whatever
     * the timeout (nothing takes the queue while this task runs). */
    lahja_event_t *a = tick(0, 1), *b = tick(0, 2), *c = tick(0, 3);
    EXPECT_EQ(lahja_post(ep, a, &quiet, -1), 0);
    EXPECT_EQ(lahja_post(ep, b, &quiet, -1), 0);
    EXPECT_EQ(lahja_post(ep, c, &quiet, -1), -EAGAIN);
    lahja_event_unref(c);
    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    /* Stopped: refused, from another thread too. */
    struct refusals r = { ep, { 0 } };
    pthread_t t;
    EXPECT_EQ(pthread_create(&t, NULL, post_to_stopped, &r), 0);
    EXPECT_EQ(pthread_join(t, NULL), 0);
    EXPECT_EQ(r.rc[0], LAHJA_ELIFECYCLE);
    EXPECT_EQ(r.rc[1], LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
    return 0;
}
BUS_MAIN_TEST(refusals)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_broadcast_in_order),
        cmocka_unit_test(test_worker_requests),
        cmocka_unit_test(test_backpressure_reaches_posters),
        cmocka_unit_test(test_stop_carries_out_what_was_posted),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
