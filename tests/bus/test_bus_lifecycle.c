/*
 * Lifecycle (B7, B23, B24): a peer killed mid-stream, start and stop and
 * what they do to the calls around them, and calls from the wrong
 * thread.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "support_bus.h"

#define PENDING 12345
#define BIG_LEN (256 * 1024)

/* ------------------------------------------------- B7: a peer killed */

static void big_fill(uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i % 251);
}

/* Counts intact Big events and the ones that are not. */
struct big_seen {
    struct bus_counter ok;
    int bad;
};

static int on_big(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct big_seen *seen = user;
    size_t len = 0;
    const uint8_t *p = lahja_event_payload(ev, &len);
    int intact = len == BIG_LEN;
    for (size_t i = 0; intact && i < len; i++)
        intact = p[i] == (uint8_t)(i % 251);
    if (!intact)
        seen->bad++;
    return intact ? bus_count_handler(ep, ev, &seen->ok) : 0;
}

/* The victim's Question handler: says it got the question to the asker,
 * and never answers it. */
static int on_question_unanswered(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)user;
    lahja_broadcast_config_t cfg = { .filter_endpoint = lahja_event_origin(ev) };
    lahja_event_t *got = bus_event("GotQuestion", NULL);
    int rc = lahja_broadcast_nowait(ep, got, &cfg);
    lahja_event_unref(got);
    return rc;
}

/* The victim: streams Big events to "srv" until it is killed. */
static int child_victim(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    /* Sent as they are: the high-water mark counts bytes on the wire, so
     * that these (very compressible) events are held back after a few
     * MiB of them, and the stream keeps flowing. */
    opts.compress_threshold = SIZE_MAX;
    lahja_endpoint_t *ep = bus_client("victim", &opts);
    lahja_subscription_t *q = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Question", on_question_unanswered, NULL, &q), 0);
    EXPECT_EQ(bus_connect(ep, dir, "srv"), 0);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "srv", "Big", deadline), 0);
    uint8_t *payload = malloc(BIG_LEN);
    EXPECT_TRUE(payload != NULL);
    big_fill(payload, BIG_LEN);
    for (;;) {
        lahja_event_t *ev = NULL;
        EXPECT_EQ(lahja_event_new("Big", payload, BIG_LEN, &ev), 0);
        EXPECT_EQ(lahja_broadcast(ep, ev, NULL, LAHJA_FOREVER), 0);
        lahja_event_unref(ev);
        EXPECT_EQ(lahja_yield(), 0);
    }
    return 0;
}

struct request_call {
    lahja_endpoint_t *ep;
    const char *type;
    const char *filter;
    int rc;
};

/* A request whose result is recorded, so that the main task asserts. */
static int task_request(void *arg)
{
    struct request_call *call = arg;
    lahja_event_t *q = NULL, *a = NULL;
    EXPECT_EQ(lahja_request_new(call->type, "Answer", "?", 1, &q), 0);
    lahja_broadcast_config_t cfg = { .filter_endpoint = call->filter };
    call->rc = lahja_request(call->ep, q, &cfg, lahja_deadline_in(GUARD_MS), &a);
    lahja_event_unref(a);
    lahja_event_unref(q);
    return 0;
}

static void count_peer(const char *name, const char *const *types, size_t ntypes, void *user)
{
    (void)name, (void)types, (void)ntypes;
    ++*(int *)user;
}

/*
 * B7: the victim is killed with SIGKILL while its Big events stream in
 * and a request waits on it.  The endpoint notices at once: the wait for
 * a change returns, the victim and its subscriptions are gone, the
 * request fails with LAHJA_EREMOTEDISCONNECTED, and what is broadcast to
 * its type afterwards is not reported delivered.
 */
static int main_peer_killed_mid_stream(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    struct big_seen big = { .bad = 0 };
    bus_counter_init(&big.ok);
    struct bus_counter got_question;
    bus_counter_init(&got_question);
    lahja_subscription_t *s_big = NULL, *s_got = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Big", on_big, &big, &s_big), 0);
    EXPECT_EQ(lahja_subscribe(ep, "GotQuestion", bus_count_handler, &got_question, &s_got), 0);

    bus_child_t victim = bus_fork(child_victim, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "victim", "Question", deadline), 0);
    /* A run of Questions first: the request then goes down the route
     * they found, which must name the victim as a peer it waits on. */
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(bus_send(ep, "Question", "warm"), 0);
    bus_counter_wait(&got_question, 3);
    lahja_nursery_t *n = NULL;
    EXPECT_EQ(lahja_nursery_open(&n), 0);
    struct request_call req = { ep, "Question", NULL, PENDING };
    EXPECT_EQ(lahja_nursery_spawn(n, task_request, &req, NULL, NULL), 0);
    bus_counter_wait(&got_question, 4); /* the request waits on the victim */
    bus_counter_wait(&big.ok, 3);       /* and its events stream in */
    EXPECT_EQ(req.rc, PENDING);

    EXPECT_EQ(kill(victim.pid, SIGKILL), 0);
    EXPECT_EQ(lahja_wait_until_connections_change(ep, deadline), 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "victim"), 0);
    EXPECT_EQ(lahja_is_endpoint_subscribed_to(ep, "victim", "Question"), 0);
    EXPECT_EQ(lahja_is_any_endpoint_subscribed_to(ep, "Question"), 0);
    int peers = 0;
    lahja_foreach_peer(ep, count_peer, &peers);
    EXPECT_EQ(peers, 0);
    EXPECT_EQ(lahja_nursery_close(n), 0);
    EXPECT_EQ(req.rc, LAHJA_EREMOTEDISCONNECTED);
    int status = bus_child_wait(&victim);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* Nobody else subscribes to Question: not delivered. */
    EXPECT_EQ(bus_send(ep, "Question", "late"), LAHJA_ENOSUBSCRIBERS);
    lahja_event_t *late = bus_event("Question", "late");
    EXPECT_EQ(lahja_broadcast_nowait(ep, late, NULL), LAHJA_ENOSUBSCRIBERS);
    lahja_event_unref(late);
    req.rc = PENDING;
    EXPECT_EQ(task_request(&req), 0);
    EXPECT_EQ(req.rc, LAHJA_ENOSUBSCRIBERS);
    /* Whatever was cut off mid-frame was never delivered. */
    EXPECT_EQ(big.bad, 0);

    lahja_subscription_cancel(s_big);
    lahja_subscription_cancel(s_got);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(peer_killed_mid_stream)

/* A pure client subscribed to Flood that waits until it is killed. */
static int child_idle_victim(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("victim", &opts);
    lahja_subscription_t *s = NULL;
    struct bus_counter floods;
    bus_counter_init(&floods);
    EXPECT_EQ(lahja_subscribe(ep, "Flood", bus_count_handler, &floods, &s), 0);
    EXPECT_EQ(bus_connect(ep, dir, "srv"), 0);
    lahja_event_t *never = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Never", LAHJA_FOREVER, &never), 0);
    return 0;
}

/*
 * B7: a dead peer never takes the process down with it.  This test's
 * process restores SIGPIPE's default action, as a C program starts with.
 * The peer is dead (killed and reaped) before the endpoint has read its
 * EOF, and an event is queued for it: writing it must fail as a
 * disconnection, not kill the process with SIGPIPE.
 */
static int main_write_to_dead_peer_no_sigpipe(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    signal(SIGPIPE, SIG_DFL);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    bus_child_t victim = bus_fork(child_idle_victim, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "victim", "Flood", deadline), 0);

    EXPECT_EQ(kill(victim.pid, SIGKILL), 0);
    /* Blocking: the loop must not run (and read the EOF) meanwhile. */
    int status = bus_child_wait_blocking(&victim);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    lahja_event_t *ev = bus_event("Flood", "to the dead");
    int rc = lahja_broadcast_nowait(ep, ev, NULL);
    lahja_event_unref(ev);
    /* Not noticed yet: queued (an endpoint that tried the write at once
     * could already say there is nobody). */
    EXPECT_TRUE(rc == 0 || rc == LAHJA_ENOSUBSCRIBERS);
    while (lahja_is_connected_to(ep, "victim"))
        EXPECT_EQ(lahja_wait_until_connections_change(ep, deadline), 0);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(write_to_dead_peer_no_sigpipe)

/* ------------------------------------------- B23: start, stop, free */

static int nop_handler(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev, (void)user;
    return 0;
}

/* Every call but stop and free on a stopped endpoint: LAHJA_ELIFECYCLE. */
static void expect_stopped_refuses(lahja_endpoint_t *ep, const char *dir)
{
    lahja_time_t soon = lahja_deadline_in(GUARD_MS);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_start(ep, NULL), LAHJA_ELIFECYCLE);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "T", nop_handler, NULL, &s), LAHJA_ELIFECYCLE);
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "T", 0, NULL, &st), LAHJA_ELIFECYCLE);
    lahja_event_t *got = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "T", soon, &got), LAHJA_ELIFECYCLE);
    lahja_event_t *ev = bus_event("T", "x");
    EXPECT_EQ(lahja_broadcast(ep, ev, NULL, soon), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_broadcast_nowait(ep, ev, NULL), LAHJA_ELIFECYCLE);
    lahja_event_unref(ev);
    lahja_event_t *q = NULL;
    EXPECT_EQ(lahja_request_new("T", "A", NULL, 0, &q), 0);
    EXPECT_EQ(lahja_request(ep, q, NULL, soon, &got), LAHJA_ELIFECYCLE);
    lahja_event_unref(q);
    lahja_conn_config_t other = bus_cfg(dir, "other");
    EXPECT_EQ(lahja_connect(ep, &other, 1, soon), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "other", soon), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_wait_until_connections_change(ep, soon), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_wait_until_endpoint_subscriptions_change(ep, soon), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "other", "T", soon), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_wait_until_any_endpoint_subscribed_to(ep, "T", soon), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_wait_until_all_endpoints_subscribed_to(ep, "T", 1, soon), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_is_connected_to(ep, "other"), 0);
}

/* B23: is_running/is_serving before, during and after; start twice;
 * every call on a stopped endpoint; stop twice; free while running. */
static int main_lifecycle_states(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    lahja_endpoint_t *ep = NULL, *cli = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
    EXPECT_EQ(lahja_endpoint_new("cli", NULL, &cli), 0);
    EXPECT_TRUE(strcmp(lahja_endpoint_name(ep), "srv") == 0);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 0);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 0);
    /* Not started: nothing to stop, and no call works yet. */
    EXPECT_EQ(lahja_endpoint_stop(ep), LAHJA_ELIFECYCLE);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "T", nop_handler, NULL, &s), LAHJA_ELIFECYCLE);

    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), 0);
    EXPECT_EQ(lahja_endpoint_start(cli, NULL), 0);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 1);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 1);
    EXPECT_EQ(lahja_endpoint_is_running(cli), 1);
    EXPECT_EQ(lahja_endpoint_is_serving(cli), 0);
    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_start(cli, NULL), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_free(ep), -EBUSY);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 1); /* the refused free did nothing */

    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    EXPECT_EQ(lahja_endpoint_stop(cli), 0);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 0);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 0);
    EXPECT_EQ(lahja_endpoint_is_running(cli), 0);
    expect_stopped_refuses(ep, dir);
    expect_stopped_refuses(cli, dir);
    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 0);
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
    EXPECT_EQ(lahja_endpoint_free(cli), 0);
    EXPECT_EQ(lahja_endpoint_free(NULL), 0);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(lifecycle_states)

/* What a waiting task was in, and what it got. */
enum wait_kind {
    W_WAIT_FOR,
    W_STREAM_NEXT,
    W_REQUEST_LOCAL,
    W_REQUEST_REMOTE,
    W_CONNECTED_TO,
    W_CONNECTIONS_CHANGE,
    W_SUBSCRIPTIONS_CHANGE,
    W_ENDPOINT_SUBSCRIBED,
    W_ANY_SUBSCRIBED,
    W_ALL_SUBSCRIBED,
    W_CONNECT,
    W_COUNT
};

static const char *const wait_names[W_COUNT] = {
    "wait_for", "stream_next", "request (local)", "request (remote)",
    "wait_until_connected_to", "wait_until_connections_change",
    "wait_until_endpoint_subscriptions_change", "wait_until_endpoint_subscribed_to",
    "wait_until_any_endpoint_subscribed_to", "wait_until_all_endpoints_subscribed_to",
    "connect (under way)",
};

struct waiter {
    enum wait_kind kind;
    lahja_endpoint_t *ep;
    lahja_stream_t *stream;
    const char *dir;
    int started;
    int rc;
};

static int ask(lahja_endpoint_t *ep, const char *type, const char *filter, lahja_time_t deadline)
{
    lahja_event_t *q = NULL, *a = NULL;
    EXPECT_EQ(lahja_request_new(type, "Answer", NULL, 0, &q), 0);
    lahja_broadcast_config_t cfg = { .filter_endpoint = filter };
    int rc = lahja_request(ep, q, &cfg, deadline, &a);
    lahja_event_unref(a);
    lahja_event_unref(q);
    return rc;
}

static int task_wait(void *arg)
{
    struct waiter *w = arg;
    lahja_endpoint_t *ep = w->ep;
    lahja_time_t d = lahja_deadline_in(GUARD_MS);
    lahja_event_t *ev = NULL;
    w->started = 1;
    switch (w->kind) {
    case W_WAIT_FOR: w->rc = lahja_wait_for(ep, "NothingYet", d, &ev); break;
    case W_STREAM_NEXT: w->rc = lahja_stream_next(w->stream, d, &ev); break;
    case W_REQUEST_LOCAL: w->rc = ask(ep, "LocalQ", "srv", d); break;
    case W_REQUEST_REMOTE: w->rc = ask(ep, "RemoteQ", "peer", d); break;
    case W_CONNECTED_TO: w->rc = lahja_wait_until_connected_to(ep, "nobody", d); break;
    case W_CONNECTIONS_CHANGE: w->rc = lahja_wait_until_connections_change(ep, d); break;
    case W_SUBSCRIPTIONS_CHANGE:
        w->rc = lahja_wait_until_endpoint_subscriptions_change(ep, d);
        break;
    case W_ENDPOINT_SUBSCRIBED:
        w->rc = lahja_wait_until_endpoint_subscribed_to(ep, "peer", "Nothing", d);
        break;
    case W_ANY_SUBSCRIBED:
        w->rc = lahja_wait_until_any_endpoint_subscribed_to(ep, "Nothing", d);
        break;
    case W_ALL_SUBSCRIBED:
        w->rc = lahja_wait_until_all_endpoints_subscribed_to(ep, "Nothing", 1, d);
        break;
    case W_CONNECT: {
        lahja_conn_config_t ghost = bus_cfg(w->dir, "ghost");
        w->rc = lahja_connect(ep, &ghost, 1, d);
        break;
    }
    default: break;
    }
    if (w->rc == 0)
        lahja_event_unref(ev);
    return 0;
}

/* The peer: subscribes to RemoteQ (and never answers) until srv goes. */
static int child_silent_peer(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("peer", &opts);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "RemoteQ", nop_handler, NULL, &s), 0);
    EXPECT_EQ(bus_connect(ep, dir, "srv"), 0);
    bus_wait_disconnected(ep, "srv");
    bus_close(ep);
    return 0;
}

/*
 * B23: stop wakes every task waiting on the endpoint, each with
 * LAHJA_ELIFECYCLE (bus.h: stop "ends every wait with LAHJA_ELIFECYCLE";
 * docs/bus.md: "ends every stream, wait_for, wait_until and request").
 */
static int main_stop_wakes_waiters(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_subscription_t *local = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "LocalQ", nop_handler, NULL, &local), 0);
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Nothing2", 0, NULL, &st), 0);
    bus_child_t peer = bus_fork(child_silent_peer, dir);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "peer", "RemoteQ",
                                                      lahja_deadline_in(GUARD_MS)),
              0);

    struct waiter w[W_COUNT];
    lahja_nursery_t *n = NULL;
    EXPECT_EQ(lahja_nursery_open(&n), 0);
    for (int i = 0; i < W_COUNT; i++) {
        w[i] = (struct waiter){ (enum wait_kind)i, ep, st, dir, 0, PENDING };
        EXPECT_EQ(lahja_nursery_spawn(n, task_wait, &w[i], NULL, NULL), 0);
    }
    for (int i = 0; i < W_COUNT; i++)
        while (!w[i].started)
            EXPECT_EQ(lahja_yield(), 0);
    /* Each is now suspended in its call, which nothing else can end. */
    int ended = 0;
    for (int i = 0; i < W_COUNT; i++) {
        if (w[i].rc != PENDING) {
            fprintf(stderr, "  %s ended before stop: %s\n", wait_names[i],
                    lahja_err_name(w[i].rc));
            ended++;
        }
    }
    EXPECT_EQ(ended, 0);

    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    EXPECT_EQ(lahja_nursery_close(n), 0);
    int wrong = 0;
    for (int i = 0; i < W_COUNT; i++) {
        if (w[i].rc != LAHJA_ELIFECYCLE) {
            fprintf(stderr, "  %s ended with %s, expected LAHJA_ELIFECYCLE\n", wait_names[i],
                    lahja_err_name(w[i].rc));
            wrong++;
        }
    }
    EXPECT_EQ(wrong, 0);
    /* Allowed after stop, until the endpoint is freed. */
    lahja_stream_close(st);
    lahja_subscription_cancel(local);
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
    EXPECT_CHILD_OK(&peer);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(stop_wakes_waiters)

/* A peer that never reads: HELLO, SUBS {Bulk}, then waits for the
 * hang-up without reading a byte. */
static int child_sink(void *arg)
{
    const char *path = arg;
    int fd = raw_connect(path);
    EXPECT_TRUE(fd >= 0);
    uint8_t buf[512], *p = raw_hello(buf, "sink");
    const char *types[] = { "Bulk" };
    p = raw_subs(p, 1, types, 1);
    raw_send(fd, buf, (size_t)(p - buf));
    struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };
    EXPECT_EQ(poll(&pfd, 1, -1), 1); /* the alarm bounds it */
    close(fd);
    return 0;
}

struct bulk_sender {
    lahja_endpoint_t *ep;
    int calls;
    int rc;
};

#define BULK_LEN (8u << 20) /* more than a socket buffer holds */

static int task_bulk(void *arg)
{
    struct bulk_sender *b = arg;
    uint8_t *payload = calloc(1, BULK_LEN);
    EXPECT_TRUE(payload != NULL);
    do {
        lahja_event_t *ev = NULL;
        EXPECT_EQ(lahja_event_new("Bulk", payload, BULK_LEN, &ev), 0);
        b->calls++;
        b->rc = lahja_broadcast(b->ep, ev, NULL, LAHJA_FOREVER);
        lahja_event_unref(ev);
    } while (b->rc == 0 && b->calls < 8); /* bounded, should it never block */
    free(payload);
    return 0;
}

/*
 * B23, B13: a broadcast suspended because its peer does not read (the
 * peer's queue is over high water for good) is woken by stop, with
 * LAHJA_ELIFECYCLE, once stop's linger time has passed.
 */
static int main_stop_wakes_blocked_broadcast(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.linger_ms = 100;
    opts.compress_threshold = SIZE_MAX;
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    bus_child_t sink = bus_fork_plain(child_sink, cfg.path);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "sink", "Bulk",
                                                      lahja_deadline_in(GUARD_MS)),
              0);
    struct bulk_sender b = { ep, 0, PENDING };
    lahja_task_t *t = NULL;
    EXPECT_EQ(lahja_spawn(lahja_rt_current(), task_bulk, &b, NULL, &t), 0);
    /* The first event is queued at once; the second broadcast suspends
     * and can never go on: the sink reads nothing. */
    while (b.calls < 2 && !lahja_task_done(t))
        EXPECT_EQ(lahja_yield(), 0);
    EXPECT_EQ(lahja_task_done(t), 0);
    EXPECT_EQ(b.calls, 2);
    EXPECT_EQ(b.rc, 0); /* the first one's */

    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    int result = PENDING;
    EXPECT_EQ(lahja_task_join(t, lahja_deadline_in(GUARD_MS), &result), 0);
    EXPECT_EQ(b.calls, 2);
    EXPECT_EQ(b.rc, LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
    EXPECT_CHILD_OK(&sink);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(stop_wakes_blocked_broadcast)

/* Kept reachable after the main task: it cannot be freed (never stopped),
 * and a leak checker should not count it. */
static lahja_endpoint_t *abandoned;

/* The main task of child_run_ends_by_error: a write to the sink is under
 * way when it gives up with an error, leaving the endpoint running. */
static int main_gives_up(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.compress_threshold = SIZE_MAX;
    abandoned = bus_serve(dir, "srv", &opts);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    bus_child_t sink = bus_fork_plain(child_sink, cfg.path);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(abandoned, "sink", "Bulk",
                                                      lahja_deadline_in(GUARD_MS)),
              0);
    uint8_t *payload = calloc(1, BULK_LEN);
    EXPECT_TRUE(payload != NULL);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new("Bulk", payload, BULK_LEN, &ev), 0);
    EXPECT_EQ(lahja_broadcast(abandoned, ev, NULL, LAHJA_FOREVER), 0);
    lahja_event_unref(ev);
    EXPECT_EQ(lahja_event_new("Bulk", payload, BULK_LEN, &ev), 0);
    /* The loop turns (and starts writing the first) while this waits. */
    int rc = lahja_broadcast(abandoned, ev, NULL, lahja_deadline_in(100));
    lahja_event_unref(ev);
    free(payload);
    /* The sink stays until this process is gone; its alarm ends it
     * otherwise.  Not reaped here: the process exits. */
    (void)sink;
    return rc;
}

static int child_run_ends_by_error(void *arg)
{
    EXPECT_EQ(lahja_run(main_gives_up, arg, NULL), -ETIMEDOUT);
    EXPECT_EQ(lahja_endpoint_is_running(abandoned), 1);
    /* An endpoint never stopped cannot be freed: this process leaks by
     * design.  It ends by exec, which skips the exit-time leak checks of
     * valgrind and LeakSanitizer that would report it. */
    fflush(NULL);
    execl("/bin/true", "true", (char *)NULL);
    return -errno;
}

/*
 * B23: a main task that ends by error without stopping its endpoint (a
 * write to a peer still under way): lahja_run releases what is left
 * ("Handles the tasks never released are released here") and returns
 * the error; it does not abort.
 */
static void test_run_ends_without_stop(void **state)
{
    (void)state;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    bus_child_t c = bus_fork_plain(child_run_ends_by_error, dir);
    EXPECT_EXIT_OK(bus_child_wait(&c), "the process whose main task gave up");
    bus_dir_remove(dir);
}

/* "keeper": a peer subscribed to Kept until it is told to go. */
static int child_keeper(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("keeper", &opts);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Kept", nop_handler, NULL, &s), 0);
    EXPECT_EQ(bus_connect(ep, dir, "srv"), 0);
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Done", LAHJA_FOREVER, &done), 0);
    lahja_event_unref(done);
    bus_close(ep); /* the subscription is freed by free */
    return 0;
}

/*
 * B23: stop and free release everything, also what the application left:
 * subscriptions not cancelled, streams not closed with events queued, a
 * connection, events received and kept.  (The leak check is valgrind's
 * and ASan's, on this test like on every other.)
 */
static int main_free_releases_everything(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_subscription_t *s1 = NULL, *s2 = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Kept", nop_handler, NULL, &s1), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Cancelled", nop_handler, NULL, &s2), 0);
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Kept", 0, NULL, &st), 0);
    bus_child_t keeper = bus_fork(child_keeper, dir);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "keeper", "Kept",
                                                      lahja_deadline_in(GUARD_MS)),
              0);
    /* Two events into the stream, one taken out and kept past free. */
    EXPECT_EQ(bus_send(ep, "Kept", "one"), 0);
    EXPECT_EQ(bus_send(ep, "Kept", "two"), 0);
    lahja_event_t *kept = NULL;
    EXPECT_EQ(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &kept), 0);
    bus_peer_done(ep, "keeper");
    EXPECT_CHILD_OK(&keeper);

    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    lahja_subscription_cancel(s2); /* after stop: allowed */
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
    /* The event outlives the endpoint that received it. */
    EXPECT_TRUE(bus_payload_is(kept, "one"));
    EXPECT_TRUE(strcmp(lahja_event_origin(kept), "srv") == 0);
    lahja_event_unref(kept);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(free_releases_everything)

/* ------------------------------------------------ B24: other threads */

struct foreign_calls {
    lahja_endpoint_t *ep;
    lahja_conn_config_t cfg;
    lahja_event_t *ev;
    int start_rc, subscribe_rc, broadcast_rc, stop_rc, new_rc;
};

static void *thread_calls(void *arg)
{
    struct foreign_calls *f = arg;
    f->start_rc = lahja_endpoint_start(f->ep, &f->cfg);
    lahja_subscription_t *s = NULL;
    f->subscribe_rc = lahja_subscribe(f->ep, "T", nop_handler, NULL, &s);
    f->broadcast_rc = lahja_broadcast_nowait(f->ep, f->ev, NULL);
    f->stop_rc = lahja_endpoint_stop(f->ep);
    lahja_endpoint_t *other = NULL;
    f->new_rc = lahja_endpoint_new("other", NULL, &other);
    return NULL;
}

static void call_from_thread(struct foreign_calls *f)
{
    f->start_rc = f->subscribe_rc = f->broadcast_rc = f->stop_rc = f->new_rc = PENDING;
    pthread_t th;
    EXPECT_EQ(pthread_create(&th, NULL, thread_calls, f), 0);
    EXPECT_EQ(pthread_join(th, NULL), 0);
}

/* B24: calls from a thread the endpoint does not belong to are refused
 * with LAHJA_EWRONGTHREAD, before and after start, and change nothing. */
static int main_wrong_thread(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct foreign_calls f = { .cfg = bus_cfg(dir, "srv") };
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &f.ep), 0);
    f.ev = bus_event("T", "from the owner");

    call_from_thread(&f);
    EXPECT_EQ(f.start_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.subscribe_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.broadcast_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.stop_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.new_rc, LAHJA_ENORUNTIME); /* no runtime on that thread */
    EXPECT_EQ(lahja_endpoint_is_running(f.ep), 0);
    struct stat st; /* the refused start made no socket */
    EXPECT_EQ(lstat(f.cfg.path, &st), -1);

    EXPECT_EQ(lahja_endpoint_start(f.ep, &f.cfg), 0);
    struct bus_counter seen;
    bus_counter_init(&seen);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(f.ep, "T", bus_count_handler, &seen, &s), 0);
    call_from_thread(&f);
    EXPECT_EQ(f.start_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.subscribe_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.broadcast_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.stop_rc, LAHJA_EWRONGTHREAD);

    /* Nothing changed: still serving, one subscription, the event unsent
     * (so not bound: the owner can broadcast it). */
    EXPECT_EQ(lahja_endpoint_is_serving(f.ep), 1);
    const char *types[4];
    EXPECT_EQ(lahja_subscribed_types(f.ep, types, 4), 1);
    EXPECT_EQ(seen.n, 0);
    EXPECT_EQ(lahja_broadcast_nowait(f.ep, f.ev, NULL), 0);
    EXPECT_EQ(seen.n, 1);
    lahja_event_unref(f.ev);
    lahja_subscription_cancel(s);
    bus_close(f.ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(wrong_thread)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peer_killed_mid_stream),
        cmocka_unit_test(test_write_to_dead_peer_no_sigpipe),
        cmocka_unit_test(test_lifecycle_states),
        cmocka_unit_test(test_stop_wakes_waiters),
        cmocka_unit_test(test_stop_wakes_blocked_broadcast),
        cmocka_unit_test(test_run_ends_without_stop),
        cmocka_unit_test(test_free_releases_everything),
        cmocka_unit_test(test_wrong_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
