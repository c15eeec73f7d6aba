/*
 * The callback forms of the calls that wait (B32), driven from a plain
 * libuv program with no task: each completes, times out, is cancelled,
 * is interrupted by its peer's death and by stop; its callback always
 * comes from the loop, never from within the call; and the errors that
 * keep a call from starting are returned at once.
 *
 * The program under test ("a") runs in a child process of its own, with
 * its own uv_loop_t and a runtime made with lahja_rt_new on it.  Its peer
 * "b" is a task-based child, forked before "a" makes its runtime.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <uv.h>

#include "support_bus.h"

/* ------------------------------------------------------------ peer "b" */

/*
 * Serves "b".  Question (a request): answers Answer "re:<payload>".
 * Hold (a request): keeps it unanswered.  Sink: counted.  Signals the
 * parent once it is subscribed, and stops at Bye.
 */
struct peer {
    lahja_event_t *held[16];
    int nheld;
};

static int peer_question(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)user;
    size_t len;
    const char *p = lahja_event_payload(ev, &len);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "re:%.*s", (int)len, p);
    lahja_event_t *answer = NULL;
    EXPECT_EQ(lahja_event_new("Answer", buf, (size_t)n, &answer), 0);
    EXPECT_EQ(lahja_respond(ep, ev, answer), 0);
    lahja_event_unref(answer);
    return 0;
}

static int peer_hold(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct peer *p = user;
    if (p->nheld < 16)
        p->held[p->nheld++] = lahja_event_ref(ev);
    return 0;
}

static int peer_sink(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev, (void)user;
    return 0;
}

static int child_peer(void *arg)
{
    const char *dir = arg;
    struct peer p = { .nheld = 0 };
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "b", &o);
    lahja_subscription_t *s[3];
    EXPECT_EQ(lahja_subscribe(ep, "Question", peer_question, &p, &s[0]), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Hold", peer_hold, &p, &s[1]), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Sink", peer_sink, &p, &s[2]), 0);
    bus_child_signal();
    lahja_event_t *bye = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Bye", lahja_deadline_in(4 * GUARD_MS), &bye), 0);
    lahja_event_unref(bye);
    for (int i = 0; i < p.nheld; i++)
        lahja_event_unref(p.held[i]);
    for (int i = 0; i < 3; i++)
        lahja_subscription_cancel(s[i]);
    bus_close(ep);
    return 0;
}

/* ------------------------------------------------- the plain program "a" */

static int last_rc;

struct app {
    uv_loop_t loop;
    lahja_rt_t *rt;
    lahja_endpoint_t *ep;
    char dir[BUS_DIR_MAX];
    bus_child_t b;
    int have_b;
    int in_call;                 /* a lahja call is under way */
    int order;                   /* callbacks so far */
    lahja_stream_t *st;          /* closed by on_stopped */
};

static struct app app;

/* What one callback call ended with. */
struct result {
    int called;
    int status;
    int order;                   /* its place among all callbacks */
    lahja_event_t *ev;
    char why[256];               /* lahja_endpoint_last_error, in the callback */
};

static void on_done(lahja_endpoint_t *ep, int status, void *user)
{
    struct result *r = user;
    EXPECT_TRUE(ep == app.ep);
    EXPECT_EQ(app.in_call, 0); /* never from within a call */
    r->called++;
    r->status = status;
    r->order = ++app.order;
    if (status < 0)
        snprintf(r->why, sizeof r->why, "%s", lahja_endpoint_last_error(ep));
}

static void on_event(lahja_endpoint_t *ep, int status, lahja_event_t *ev, void *user)
{
    struct result *r = user;
    on_done(ep, status, user);
    EXPECT_TRUE((status == 0) == (ev != NULL));
    r->ev = ev;
}

/* Wraps a call: a callback coming from inside it fails the test. */

#define START(expr)              \
    do {                         \
        app.in_call = 1;         \
        last_rc = (expr);        \
        app.in_call = 0;         \
    } while (0)

static void on_guard(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "[pid %d] a wait of the test ran out of time\n", (int)getpid());
    bus_fail_at(__FILE__, __LINE__);
}

/* Runs the loop until *flag is non-zero (bounded by GUARD_MS). */
static void run_until(const int *flag)
{
    uv_timer_t guard;
    uv_timer_init(&app.loop, &guard);
    uv_timer_start(&guard, on_guard, GUARD_MS, 0);
    while (*flag == 0)
        uv_run(&app.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&app.loop, UV_RUN_NOWAIT);
}

/* Starts peer "b" (before our runtime exists) and endpoint "a". */
static void app_open(int with_b, const lahja_endpoint_options_t *opts)
{
    memset(&app, 0, sizeof app);
    bus_dir_make(app.dir);
    if (with_b) {
        app.b = bus_fork(child_peer, app.dir);
        app.have_b = 1;
        EXPECT_EQ(bus_child_await_signal(&app.b), 0);
    }
    EXPECT_EQ(uv_loop_init(&app.loop), 0);
    EXPECT_EQ(lahja_rt_new(&app.loop, NULL, &app.rt), 0);
    lahja_endpoint_options_t o = opts != NULL ? *opts : bus_opts(NULL);
    EXPECT_EQ(lahja_endpoint_new("a", &o, &app.ep), 0);
    EXPECT_EQ(lahja_endpoint_start(app.ep, NULL), 0);
}

static void connect_b(void)
{
    lahja_conn_config_t cfg = bus_cfg(app.dir, "b");
    struct result r = { 0 };
    START(lahja_connect_cb(app.ep, &cfg, 1, lahja_deadline_in(GUARD_MS), on_done, &r, NULL));
    EXPECT_EQ(last_rc, 0);
    EXPECT_EQ(r.called, 0);
    run_until(&r.called);
    EXPECT_EQ(r.status, 0);
    EXPECT_TRUE(lahja_is_connected_to(app.ep, "b"));
}

/* The stop's callback: the endpoint may be freed in it. */
static void on_stopped(lahja_endpoint_t *ep, int status, void *user)
{
    struct result *r = user;
    EXPECT_EQ(app.in_call, 0);
    EXPECT_EQ(status, 0);
    lahja_stream_close(app.st); /* allowed after stop, until the free */
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
    app.ep = NULL;
    r->called++;
    r->order = ++app.order;
}

/* A second stop callback, after on_stopped: the endpoint is gone. */
static void on_stopped_too(lahja_endpoint_t *ep, int status, void *user)
{
    struct result *r = user;
    (void)ep;
    EXPECT_TRUE(app.ep == NULL);
    r->called++;
    r->status = status;
    r->order = ++app.order;
}

/* Says Bye to "b" if it is there, stops and frees "a", and checks that
 * the loop is left with nothing of ours. */
static void app_close(void)
{
    if (app.have_b && lahja_is_connected_to(app.ep, "b")) {
        lahja_event_t *bye = bus_event("Bye", NULL);
        struct result r = { 0 };
        START(lahja_broadcast_cb(app.ep, bye, NULL, LAHJA_FOREVER, on_done, &r, NULL));
        EXPECT_EQ(last_rc, 0);
        lahja_event_unref(bye); /* the call holds its own reference */
        run_until(&r.called);
        EXPECT_EQ(r.status, 0);
    }
    struct result stopped = { 0 };
    START(lahja_endpoint_stop_cb(app.ep, on_stopped, &stopped));
    EXPECT_EQ(last_rc, 0);
    run_until(&stopped.called);
    EXPECT_EQ(stopped.called, 1);
    EXPECT_EQ(lahja_rt_close(app.rt), 0);
    EXPECT_EQ(uv_run(&app.loop, UV_RUN_DEFAULT), 0);
    EXPECT_EQ(uv_loop_close(&app.loop), 0);
    if (app.have_b)
        EXPECT_EXIT_OK(bus_child_wait(&app.b), "b");
    bus_dir_remove(app.dir);
}

static lahja_event_t *request(const char *type, const char *payload)
{
    lahja_event_t *req = NULL;
    EXPECT_EQ(lahja_request_new(type, "Answer", payload, strlen(payload), &req), 0);
    return req;
}

static int payload_is(const lahja_event_t *ev, const char *s)
{
    size_t len;
    const char *p = lahja_event_payload(ev, &len);
    return len == strlen(s) && memcmp(p, s, len) == 0;
}

static void run_plain(int (*fn)(void *), const char *what)
{
    bus_child_t c = bus_fork_how(fn, NULL, 1);
    bus_expect_exit_ok(bus_child_wait(&c), what, __FILE__, __LINE__);
}

#define PLAIN_TEST(name)                  \
    static void test_##name(void **state) \
    {                                     \
        (void)state;                      \
        run_plain(plain_##name, #name);   \
    }

/* ------------------------------------------------------------- success */

/* Started from a libuv timer's callback, as a plain program would. */
static void on_kickoff(uv_timer_t *t)
{
    lahja_conn_config_t cfg = bus_cfg(app.dir, "b");
    START(lahja_connect_cb(app.ep, &cfg, 1, lahja_deadline_in(GUARD_MS), on_done, t->data, NULL));
    EXPECT_EQ(last_rc, 0);
}

static int plain_every_call_completes(void *arg)
{
    (void)arg;
    app_open(1, NULL);
    struct result conn = { 0 };
    uv_timer_t kick;
    uv_timer_init(&app.loop, &kick);
    kick.data = &conn;
    uv_timer_start(&kick, on_kickoff, 0, 0);
    run_until(&conn.called);
    EXPECT_EQ(conn.status, 0);
    uv_close((uv_handle_t *)&kick, NULL);

    /* A request and its answer. */
    lahja_event_t *req = request("Question", "x");
    struct result r = { 0 };
    START(lahja_request_cb(app.ep, req, NULL, lahja_deadline_in(GUARD_MS), on_event, &r, NULL));
    EXPECT_EQ(last_rc, 0);
    lahja_event_unref(req);
    run_until(&r.called);
    EXPECT_EQ(r.status, 0);
    EXPECT_TRUE(payload_is(r.ev, "re:x"));
    EXPECT_EQ(strcmp(lahja_event_origin(r.ev), "b"), 0);
    lahja_event_unref(r.ev);

    /* The bytes forms: no event to make. */
    struct result rb = { 0 }, bb = { 0 };
    START(lahja_request_bytes_cb(app.ep, "Question", "Answer", "y", 1, NULL,
                                 lahja_deadline_in(GUARD_MS), on_event, &rb, NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_broadcast_bytes_cb(app.ep, "Sink", "z", 1, NULL, LAHJA_FOREVER, on_done, &bb,
                                   NULL));
    EXPECT_EQ(last_rc, 0);
    EXPECT_EQ(lahja_request_bytes_cb(app.ep, "", "Answer", "y", 1, NULL, LAHJA_FOREVER, on_event,
                                     &rb, NULL), -EINVAL);
    run_until(&rb.called);
    run_until(&bb.called);
    EXPECT_EQ(rb.status, 0);
    EXPECT_TRUE(payload_is(rb.ev, "re:y"));
    lahja_event_unref(rb.ev);
    EXPECT_EQ(bb.status, 0);

    /* The awareness waits that already hold end at once (at the next
     * turn), as the task forms return at once. */
    struct result w[3] = { { 0 } };
    START(lahja_wait_until_connected_to_cb(app.ep, "b", LAHJA_FOREVER, on_done, &w[0], NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_until_endpoint_subscribed_to_cb(app.ep, "b", "Sink", LAHJA_FOREVER, on_done,
                                                     &w[1], NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_until_all_endpoints_subscribed_to_cb(app.ep, "Sink", 0, LAHJA_FOREVER,
                                                          on_done, &w[2], NULL));
    EXPECT_EQ(last_rc, 0);
    EXPECT_EQ(w[0].called + w[1].called + w[2].called, 0);
    run_until(&w[2].called);
    for (int i = 0; i < 3; i++) {
        EXPECT_EQ(w[i].called, 1);
        EXPECT_EQ(w[i].status, 0);
    }

    /* Broadcast, then wait until "b" confirms it. */
    lahja_event_t *ev = bus_event("Sink", "payload");
    struct result sent = { 0 }, confirmed = { 0 };
    START(lahja_broadcast_cb(app.ep, ev, NULL, LAHJA_FOREVER, on_done, &sent, NULL));
    EXPECT_EQ(last_rc, 0);
    EXPECT_EQ(strcmp(lahja_event_origin(ev), "a"), 0); /* bound at once, it went at once */
    START(lahja_wait_until_delivered_cb(app.ep, lahja_deadline_in(GUARD_MS), on_done, &confirmed,
                                        NULL));
    EXPECT_EQ(last_rc, 0);
    run_until(&confirmed.called);
    EXPECT_EQ(sent.status, 0);
    EXPECT_EQ(confirmed.status, 0);
    EXPECT_TRUE(sent.order < confirmed.order);
    lahja_delivery_t d;
    EXPECT_EQ(lahja_delivery_stats(app.ep, "b", &d), 0);
    EXPECT_EQ(d.sent, d.confirmed);
    lahja_event_unref(ev);

    /* A local wait_for and a stream, fed by our own broadcasts. */
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(app.ep, "Local", 0, NULL, &st), 0);
    struct result got[2] = { { 0 } }, waited = { 0 };
    START(lahja_stream_next_cb(st, LAHJA_FOREVER, on_event, &got[0], NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_stream_next_cb(st, LAHJA_FOREVER, on_event, &got[1], NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_for_cb(app.ep, "Local", LAHJA_FOREVER, on_event, &waited, NULL));
    EXPECT_EQ(last_rc, 0);
    struct result b1 = { 0 }, b2 = { 0 };
    lahja_event_t *one = bus_event("Local", "one"), *two = bus_event("Local", "two");
    START(lahja_broadcast_cb(app.ep, one, NULL, LAHJA_FOREVER, on_done, &b1, NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_broadcast_cb(app.ep, two, NULL, LAHJA_FOREVER, on_done, &b2, NULL));
    EXPECT_EQ(last_rc, 0);
    run_until(&got[1].called);
    run_until(&waited.called);
    EXPECT_EQ(got[0].status, 0);
    EXPECT_EQ(got[1].status, 0);
    EXPECT_TRUE(payload_is(got[0].ev, "one")); /* in the order they were called */
    EXPECT_TRUE(payload_is(got[1].ev, "two"));
    EXPECT_TRUE(payload_is(waited.ev, "one"));
    lahja_event_unref(got[0].ev);
    lahja_event_unref(got[1].ev);
    lahja_event_unref(waited.ev);
    lahja_event_unref(one);
    lahja_event_unref(two);

    /* Closing a stream ends the calls waiting on it with -EPIPE. */
    struct result closed = { 0 };
    START(lahja_stream_next_cb(st, LAHJA_FOREVER, on_event, &closed, NULL));
    EXPECT_EQ(last_rc, 0);
    lahja_stream_close(st);
    EXPECT_EQ(closed.called, 0);
    run_until(&closed.called);
    EXPECT_EQ(closed.status, -EPIPE);

    app_close();
    return 0;
}
PLAIN_TEST(every_call_completes)

/* ------------------------------------------------------------ deadlines */

static int plain_deadlines(void *arg)
{
    (void)arg;
    app_open(1, NULL);
    lahja_conn_config_t nobody = bus_cfg(app.dir, "nobody");
    struct result r[7] = { { 0 } };
    START(lahja_connect_cb(app.ep, &nobody, 1, lahja_deadline_in(50), on_done, &r[0], NULL));
    EXPECT_EQ(last_rc, 0);
    connect_b();
    lahja_event_t *req = request("Hold", "kept");
    START(lahja_request_cb(app.ep, req, NULL, lahja_deadline_in(50), on_event, &r[1], NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_for_cb(app.ep, "Never", lahja_deadline_in(50), on_event, &r[2], NULL));
    EXPECT_EQ(last_rc, 0);
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(app.ep, "Never", 0, NULL, &st), 0);
    START(lahja_stream_next_cb(st, lahja_deadline_in(50), on_event, &r[3], NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_until_connected_to_cb(app.ep, "zzz", lahja_deadline_in(50), on_done, &r[4],
                                           NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_until_connections_change_cb(app.ep, lahja_deadline_in(50), on_done, &r[5],
                                                 NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_until_any_endpoint_subscribed_to_cb(app.ep, "Nobody", lahja_deadline_in(50),
                                                         on_done, &r[6], NULL));
    EXPECT_EQ(last_rc, 0);
    for (int i = 0; i < 7; i++) {
        run_until(&r[i].called);
        EXPECT_EQ(r[i].called, 1);
        EXPECT_EQ(r[i].status, -ETIMEDOUT);
    }
    /* Each says what it was; the connect what it found. */
    EXPECT_TRUE(strstr(r[0].why, "connect to nobody at ") != NULL);
    EXPECT_TRUE(strstr(r[0].why, nobody.path) != NULL);
    EXPECT_TRUE(strstr(r[0].why, "no socket file there") != NULL);
    EXPECT_EQ(strcmp(r[1].why, "request: Connection timed out"), 0);
    EXPECT_EQ(strcmp(r[2].why, "wait_for: Connection timed out"), 0);
    /* What timed out let go: no connection attempt to "nobody" is left,
     * and "b" still answers. */
    EXPECT_EQ(lahja_is_connected_to(app.ep, "nobody"), 0);
    int npeers = 0;
    lahja_foreach_peer(app.ep, bus_count_peer, &npeers);
    EXPECT_EQ(npeers, 1);
    lahja_event_unref(req);
    req = request("Question", "still");
    struct result ok = { 0 };
    START(lahja_request_cb(app.ep, req, NULL, lahja_deadline_in(GUARD_MS), on_event, &ok, NULL));
    run_until(&ok.called);
    EXPECT_EQ(ok.status, 0);
    EXPECT_TRUE(payload_is(ok.ev, "re:still"));
    lahja_event_unref(ok.ev);
    lahja_event_unref(req);
    lahja_stream_close(st);
    app_close();
    return 0;
}
PLAIN_TEST(deadlines)

/* -------------------------------------------------------- cancellation */

static int plain_cancel(void *arg)
{
    (void)arg;
    app_open(1, NULL);
    lahja_conn_config_t nobody = bus_cfg(app.dir, "nobody");
    struct result r[5] = { { 0 } };
    lahja_op_t *op[5] = { NULL };
    START(lahja_connect_cb(app.ep, &nobody, 1, LAHJA_FOREVER, on_done, &r[0], &op[0]));
    EXPECT_EQ(last_rc, 0);
    connect_b();
    lahja_event_t *req = request("Hold", "kept");
    START(lahja_request_cb(app.ep, req, NULL, LAHJA_FOREVER, on_event, &r[1], &op[1]));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_for_cb(app.ep, "Never", LAHJA_FOREVER, on_event, &r[2], &op[2]));
    EXPECT_EQ(last_rc, 0);
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(app.ep, "Never", 0, NULL, &st), 0);
    START(lahja_stream_next_cb(st, LAHJA_FOREVER, on_event, &r[3], &op[3]));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_until_endpoint_subscriptions_change_cb(app.ep, LAHJA_FOREVER, on_done, &r[4],
                                                            &op[4]));
    EXPECT_EQ(last_rc, 0);
    uv_run(&app.loop, UV_RUN_NOWAIT);
    for (int i = 0; i < 5; i++)
        EXPECT_EQ(r[i].called, 0);
    for (int i = 0; i < 5; i++) {
        START((lahja_op_cancel(op[i]), 0));
        EXPECT_EQ(r[i].called, 0); /* from the loop, not from within cancel */
    }
    for (int i = 0; i < 5; i++) {
        run_until(&r[i].called);
        EXPECT_EQ(r[i].called, 1);
        EXPECT_EQ(r[i].status, -ECANCELED);
    }

    /* A call whose result is due: cancelling it changes nothing. */
    struct result due = { 0 };
    lahja_op_t *due_op = NULL;
    START(lahja_wait_until_connected_to_cb(app.ep, "b", LAHJA_FOREVER, on_done, &due, &due_op));
    EXPECT_EQ(last_rc, 0);
    lahja_op_cancel(due_op);
    run_until(&due.called);
    EXPECT_EQ(due.status, 0);

    /* The cancelled request left nothing pending: a new one is answered. */
    lahja_event_unref(req);
    req = request("Question", "after");
    struct result ok = { 0 };
    START(lahja_request_cb(app.ep, req, NULL, lahja_deadline_in(GUARD_MS), on_event, &ok, NULL));
    run_until(&ok.called);
    EXPECT_EQ(ok.status, 0);
    lahja_event_unref(ok.ev);
    lahja_event_unref(req);
    lahja_stream_close(st);
    app_close();
    return 0;
}
PLAIN_TEST(cancel)

/* ---------------------------------------------------- the peer's death */

static int plain_peer_death(void *arg)
{
    (void)arg;
    app_open(1, NULL);
    connect_b();
    lahja_event_t *req = request("Hold", "kept");
    struct result r = { 0 }, change = { 0 }, gone = { 0 };
    START(lahja_request_cb(app.ep, req, NULL, LAHJA_FOREVER, on_event, &r, NULL));
    EXPECT_EQ(last_rc, 0);
    START(lahja_wait_until_connections_change_cb(app.ep, LAHJA_FOREVER, on_done, &change, NULL));
    EXPECT_EQ(last_rc, 0);
    /* Once "b" has the request (it is sent, the peer confirms it). */
    struct result confirmed = { 0 };
    START(lahja_wait_until_delivered_cb(app.ep, lahja_deadline_in(GUARD_MS), on_done, &confirmed,
                                        NULL));
    run_until(&confirmed.called);
    EXPECT_EQ(confirmed.status, 0);
    EXPECT_EQ(kill(app.b.pid, SIGKILL), 0);
    run_until(&r.called);
    EXPECT_EQ(r.status, LAHJA_EREMOTEDISCONNECTED);
    EXPECT_EQ(strcmp(r.why, "request Hold: b, the one peer it went to, disconnected before "
                            "answering"), 0);
    run_until(&change.called);
    EXPECT_EQ(change.status, 0);
    EXPECT_EQ(lahja_is_connected_to(app.ep, "b"), 0);
    int status = bus_child_wait_blocking(&app.b);
    EXPECT_TRUE(WIFSIGNALED(status));
    app.have_b = 0;
    /* A connect to the dead peer's name (its socket file left behind,
     * nobody listening: the process is reaped) runs out of time. */
    lahja_conn_config_t cfg = bus_cfg(app.dir, "b");
    START(lahja_connect_cb(app.ep, &cfg, 1, lahja_deadline_in(50), on_done, &gone, NULL));
    EXPECT_EQ(last_rc, 0);
    run_until(&gone.called);
    EXPECT_EQ(gone.status, -ETIMEDOUT);
    lahja_event_unref(req);
    app_close();
    return 0;
}
PLAIN_TEST(peer_death)

/* ------------------------------------------------------- backpressure */

/*
 * "b", stopped (SIGSTOP), reads nothing: an 8 MiB event queued for it
 * keeps "a" over a 4 KiB high-water mark, so the next broadcast_cb
 * waits.  How it ends: "b" reads again (0), its deadline (-ETIMEDOUT),
 * cancellation, "b" dies (nobody subscribes any more), or stop.
 */
#define BIG (8u << 20)

static void fill(uint8_t **big, struct result *first)
{
    *big = malloc(BIG);
    EXPECT_TRUE(*big != NULL);
    memset(*big, 'x', BIG);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new("Sink", *big, BIG, &ev), 0);
    START(lahja_broadcast_cb(app.ep, ev, NULL, LAHJA_FOREVER, on_done, first, NULL));
    EXPECT_EQ(last_rc, 0);
    lahja_event_unref(ev);
    run_until(&first->called);
    EXPECT_EQ(first->status, 0);
}

static lahja_op_t *blocked(struct result *r, lahja_time_t deadline)
{
    lahja_event_t *ev = bus_event("Sink", "small");
    lahja_op_t *op = NULL;
    START(lahja_broadcast_cb(app.ep, ev, NULL, deadline, on_done, r, &op));
    EXPECT_EQ(last_rc, 0);
    lahja_event_unref(ev);
    return op;
}

static int plain_backpressure(void *arg)
{
    (void)arg;
    lahja_endpoint_options_t o = bus_opts(NULL);
    o.high_water = 4096;
    o.compress_threshold = SIZE_MAX;
    o.linger_ms = 100;
    app_open(1, &o);
    connect_b();
    EXPECT_EQ(kill(app.b.pid, SIGSTOP), 0);
    uint8_t *big = NULL;
    struct result first = { 0 };
    fill(&big, &first);

    struct result timed = { 0 }, cancelled = { 0 }, resumed = { 0 };
    blocked(&timed, lahja_deadline_in(50));
    lahja_op_t *op = blocked(&cancelled, LAHJA_FOREVER);
    run_until(&timed.called);
    EXPECT_EQ(timed.status, -ETIMEDOUT);
    EXPECT_EQ(cancelled.called, 0);
    lahja_op_cancel(op);
    run_until(&cancelled.called);
    EXPECT_EQ(cancelled.status, -ECANCELED);

    /* "b" reads again: the waiting broadcast goes. */
    blocked(&resumed, LAHJA_FOREVER);
    uv_run(&app.loop, UV_RUN_NOWAIT);
    EXPECT_EQ(resumed.called, 0);
    EXPECT_EQ(kill(app.b.pid, SIGCONT), 0);
    run_until(&resumed.called);
    EXPECT_EQ(resumed.status, 0);

    /* Stopped again and filled again, "b" dies: the broadcast waiting for
     * it finds nobody left to receive it. */
    EXPECT_EQ(kill(app.b.pid, SIGSTOP), 0);
    struct result again = { 0 }, orphan = { 0 };
    free(big);
    fill(&big, &again);
    blocked(&orphan, LAHJA_FOREVER);
    uv_run(&app.loop, UV_RUN_NOWAIT);
    EXPECT_EQ(orphan.called, 0);
    EXPECT_EQ(kill(app.b.pid, SIGKILL), 0);
    run_until(&orphan.called);
    EXPECT_EQ(orphan.status, LAHJA_ENOSUBSCRIBERS);
    int status = bus_child_wait_blocking(&app.b);
    EXPECT_TRUE(WIFSIGNALED(status));
    app.have_b = 0;
    free(big);
    app_close();
    return 0;
}
PLAIN_TEST(backpressure)

/* ----------------------------------------------------------------- stop */

static int plain_stop_ends_every_call(void *arg)
{
    (void)arg;
    lahja_endpoint_options_t o = bus_opts(NULL);
    o.high_water = 4096;
    o.compress_threshold = SIZE_MAX;
    o.linger_ms = 50;
    app_open(1, &o);
    connect_b();
    lahja_conn_config_t nobody = bus_cfg(app.dir, "nobody");
    enum { N = 8 };
    struct result r[N] = { { 0 } };
    START(lahja_connect_cb(app.ep, &nobody, 1, LAHJA_FOREVER, on_done, &r[0], NULL));
    lahja_event_t *req = request("Hold", "kept");
    START(lahja_request_cb(app.ep, req, NULL, LAHJA_FOREVER, on_event, &r[1], NULL));
    lahja_event_unref(req);
    START(lahja_wait_for_cb(app.ep, "Never", LAHJA_FOREVER, on_event, &r[2], NULL));
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(app.ep, "Never", 0, NULL, &st), 0);
    app.st = st;
    START(lahja_stream_next_cb(st, LAHJA_FOREVER, on_event, &r[3], NULL));
    START(lahja_wait_until_connected_to_cb(app.ep, "zzz", LAHJA_FOREVER, on_done, &r[4], NULL));
    START(lahja_wait_until_connections_change_cb(app.ep, LAHJA_FOREVER, on_done, &r[5], NULL));
    /* "b" stops reading: a broadcast waits under high water, and
     * wait_until_delivered for what "b" will not confirm. */
    EXPECT_EQ(kill(app.b.pid, SIGSTOP), 0);
    uint8_t *big = NULL;
    struct result first = { 0 };
    fill(&big, &first);
    blocked(&r[6], LAHJA_FOREVER);
    START(lahja_wait_until_delivered_cb(app.ep, LAHJA_FOREVER, on_done, &r[7], NULL));
    uv_run(&app.loop, UV_RUN_NOWAIT);
    for (int i = 0; i < N; i++)
        EXPECT_EQ(r[i].called, 0);

    struct result stopped = { 0 };
    START(lahja_endpoint_stop_cb(app.ep, on_stopped, &stopped));
    EXPECT_EQ(last_rc, 0);
    /* A second stop_cb comes with the same stop's end. */
    struct result stopped2 = { 0 };
    START(lahja_endpoint_stop_cb(app.ep, on_stopped_too, &stopped2));
    EXPECT_EQ(last_rc, 0);
    /* New calls are refused once the stop has begun. */
    struct result refused = { 0 };
    EXPECT_EQ(lahja_wait_for_cb(app.ep, "X", LAHJA_FOREVER, on_event, &refused, NULL),
              LAHJA_ELIFECYCLE);
    run_until(&stopped.called);
    EXPECT_EQ(stopped2.called, 1);
    EXPECT_EQ(stopped2.status, 0);
    for (int i = 0; i < N; i++) {
        EXPECT_EQ(r[i].called, 1);
        EXPECT_TRUE(r[i].order < stopped.order); /* every call ends before the stop */
        /* wait_until_delivered learns the connection ended unconfirmed */
        if (i == 7 && r[i].status == LAHJA_EREMOTEDISCONNECTED)
            continue;
        EXPECT_EQ(r[i].status, LAHJA_ELIFECYCLE);
    }
    EXPECT_EQ(refused.called, 0);
    EXPECT_EQ(lahja_rt_close(app.rt), 0);
    EXPECT_EQ(uv_run(&app.loop, UV_RUN_DEFAULT), 0);
    EXPECT_EQ(uv_loop_close(&app.loop), 0);
    EXPECT_EQ(kill(app.b.pid, SIGKILL), 0);
    bus_child_wait_blocking(&app.b);
    free(big);
    bus_dir_remove(app.dir);
    return 0;
}
PLAIN_TEST(stop_ends_every_call)

/* ------------------------------------------- a condition when it is due */

/*
 * A wait_until call whose condition holds ends at the next loop turn; if
 * the condition stops holding before then, its callback does not come
 * with a stale 0: it waits on (or, cancelled, ends with -ECANCELED).
 */
static int plain_condition_checked_when_due(void *arg)
{
    (void)arg;
    app_open(0, NULL);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(app.ep, "T", peer_sink, NULL, &s), 0);
    struct result r = { 0 };
    START(lahja_wait_until_any_endpoint_subscribed_to_cb(app.ep, "T", LAHJA_FOREVER, on_done, &r,
                                                         NULL));
    EXPECT_EQ(last_rc, 0);
    lahja_subscription_cancel(s); /* before the callback is due */
    uv_run(&app.loop, UV_RUN_NOWAIT);
    uv_run(&app.loop, UV_RUN_NOWAIT);
    EXPECT_EQ(r.called, 0);
    EXPECT_EQ(lahja_subscribe(app.ep, "T", peer_sink, NULL, &s), 0);
    run_until(&r.called);
    EXPECT_EQ(r.status, 0);
    EXPECT_TRUE(lahja_is_any_endpoint_subscribed_to(app.ep, "T"));

    /* Cancelled while due, the condition gone: -ECANCELED. */
    struct result c = { 0 };
    lahja_op_t *op = NULL;
    START(lahja_wait_until_any_endpoint_subscribed_to_cb(app.ep, "T", LAHJA_FOREVER, on_done, &c,
                                                         &op));
    lahja_subscription_cancel(s);
    lahja_op_cancel(op);
    run_until(&c.called);
    EXPECT_EQ(c.status, -ECANCELED);
    /* Cancelled while due, the condition holding: the result stands. */
    EXPECT_EQ(lahja_subscribe(app.ep, "T", peer_sink, NULL, &s), 0);
    struct result k = { 0 };
    START(lahja_wait_until_any_endpoint_subscribed_to_cb(app.ep, "T", LAHJA_FOREVER, on_done, &k,
                                                         &op));
    lahja_op_cancel(op);
    run_until(&k.called);
    EXPECT_EQ(k.status, 0);
    lahja_subscription_cancel(s);
    app_close();
    return 0;
}
PLAIN_TEST(condition_checked_when_due)

/* --------------------------------------------------- errors at once */

static void *from_thread(void *arg)
{
    static struct result r;
    lahja_conn_config_t cfg = bus_cfg(app.dir, "b");
    *(int *)arg = lahja_connect_cb(app.ep, &cfg, 1, LAHJA_FOREVER, on_done, &r, NULL);
    return NULL;
}

static int plain_errors_at_once(void *arg)
{
    (void)arg;
    memset(&app, 0, sizeof app);
    bus_dir_make(app.dir);
    lahja_endpoint_options_t o = bus_opts(NULL);
    EXPECT_EQ(lahja_endpoint_new("a", &o, &app.ep), LAHJA_ENORUNTIME);
    EXPECT_TRUE(app.ep == NULL);
    EXPECT_EQ(uv_loop_init(&app.loop), 0);
    EXPECT_EQ(lahja_rt_new(&app.loop, NULL, &app.rt), 0);
    EXPECT_EQ(lahja_endpoint_new("a", &o, &app.ep), 0);
    struct result r = { 0 };
    lahja_conn_config_t self = bus_cfg(app.dir, "a");
    /* Not started. */
    EXPECT_EQ(lahja_wait_for_cb(app.ep, "T", LAHJA_FOREVER, on_event, &r, NULL), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_connect_cb(app.ep, &self, 1, LAHJA_FOREVER, on_done, &r, NULL),
              LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_stop_cb(app.ep, on_done, &r), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_start(app.ep, NULL), 0);
    /* Bad arguments. */
    EXPECT_EQ(lahja_wait_for_cb(app.ep, "T", LAHJA_FOREVER, NULL, &r, NULL), -EINVAL);
    EXPECT_EQ(lahja_wait_for_cb(app.ep, "", LAHJA_FOREVER, on_event, &r, NULL), -EINVAL);
    EXPECT_EQ(lahja_connect_cb(app.ep, &self, 1, LAHJA_FOREVER, NULL, &r, NULL), -EINVAL);
    EXPECT_EQ(lahja_connect_cb(app.ep, &self, 1, LAHJA_FOREVER, on_done, &r, NULL),
              LAHJA_ECONNREJECTED);
    lahja_event_t *plain = bus_event("T", NULL);
    EXPECT_EQ(lahja_request_cb(app.ep, plain, NULL, LAHJA_FOREVER, on_event, &r, NULL), -EINVAL);
    EXPECT_EQ(lahja_stream_next_cb(NULL, LAHJA_FOREVER, on_event, &r, NULL), -EINVAL);
    EXPECT_EQ(lahja_wait_until_connected_to_cb(app.ep, NULL, LAHJA_FOREVER, on_done, &r, NULL),
              -EINVAL);
    /* A bound event is refused, as by lahja_broadcast. */
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(app.ep, "T", peer_sink, NULL, &s), 0);
    EXPECT_EQ(lahja_broadcast_nowait(app.ep, plain, NULL), 0);
    EXPECT_EQ(lahja_broadcast_cb(app.ep, plain, NULL, LAHJA_FOREVER, on_done, &r, NULL),
              LAHJA_EBIND);
    lahja_subscription_cancel(s);
    lahja_event_unref(plain);
    /* A subscription nobody will cancel: it lasts as long as the endpoint. */
    EXPECT_EQ(lahja_subscribe(app.ep, "Forever", peer_sink, NULL, NULL), 0);
    EXPECT_TRUE(lahja_is_any_endpoint_subscribed_to(app.ep, "Forever"));
    /* Nobody subscribes: that is the call's outcome, in the callback. */
    lahja_event_t *lonely = bus_event("Lonely", NULL);
    START(lahja_broadcast_cb(app.ep, lonely, NULL, LAHJA_FOREVER, on_done, &r, NULL));
    EXPECT_EQ(last_rc, 0);
    run_until(&r.called);
    EXPECT_EQ(r.status, LAHJA_ENOSUBSCRIBERS);
    EXPECT_EQ(strcmp(r.why, "nobody subscribes to Lonely"), 0);
    EXPECT_TRUE(lahja_event_origin(lonely) == NULL); /* not bound */
    lahja_event_unref(lonely);
    /* Another thread. */
    int rc = 0;
    pthread_t t;
    EXPECT_EQ(pthread_create(&t, NULL, from_thread, &rc), 0);
    EXPECT_EQ(pthread_join(t, NULL), 0);
    EXPECT_EQ(rc, LAHJA_EWRONGTHREAD);
    /* The task forms, from this plain program: refused, nothing done. */
    lahja_event_t *ev = bus_event("T", NULL);
    lahja_conn_config_t other = bus_cfg(app.dir, "b");
    EXPECT_EQ(lahja_connect(app.ep, &other, 1, LAHJA_FOREVER), LAHJA_ENOTASK);
    EXPECT_EQ(lahja_broadcast(app.ep, ev, NULL, LAHJA_FOREVER), LAHJA_ENOTASK);
    EXPECT_TRUE(lahja_event_origin(ev) == NULL); /* not bound */
    lahja_event_t *got = NULL;
    EXPECT_EQ(lahja_wait_for(app.ep, "T", LAHJA_FOREVER, &got), LAHJA_ENOTASK);
    EXPECT_TRUE(got == NULL);
    EXPECT_EQ(lahja_endpoint_stop(app.ep), LAHJA_ENOTASK);
    EXPECT_TRUE(lahja_endpoint_is_running(app.ep));
    lahja_event_unref(ev);
    /* After the stop has completed. */
    struct result stopped = { 0 };
    START(lahja_endpoint_stop_cb(app.ep, on_done, &stopped));
    run_until(&stopped.called);
    EXPECT_EQ(lahja_endpoint_stop_cb(app.ep, on_done, &r), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_wait_for_cb(app.ep, "T", LAHJA_FOREVER, on_event, &r, NULL), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_free(app.ep), 0);
    EXPECT_EQ(lahja_rt_close(app.rt), 0);
    EXPECT_EQ(uv_run(&app.loop, UV_RUN_DEFAULT), 0);
    EXPECT_EQ(uv_loop_close(&app.loop), 0);
    bus_dir_remove(app.dir);
    return 0;
}
PLAIN_TEST(errors_at_once)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_call_completes),
        cmocka_unit_test(test_deadlines),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_peer_death),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_stop_ends_every_call),
        cmocka_unit_test(test_condition_checked_when_due),
        cmocka_unit_test(test_errors_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
