/*
 * Delivery (B30, B24): no event is lost silently where connections begin
 * and end, and the calls that deliver refuse other threads.
 *
 *  - two endpoints that connect to each other at the same moment keep one
 *    connection between them, and every event either sends arrives, in
 *    order;
 *  - a process that broadcasts, waits for the others' events and stops
 *    loses nothing of what the others sent it, nor they of what it sent;
 *  - every call taking an endpoint or a stream, made from a task of
 *    another thread's runtime, is refused with LAHJA_EWRONGTHREAD (or,
 *    for a query, changes nothing).
 *
 * Processes meet at barriers made of named pipes in the test's
 * directory: a child blocks reading its pipe until the test writes a
 * byte to it, which it does once every child of the round is waiting.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "support_bus.h"

#define PENDING 12345

/* How long a process waits for events that must come: generous for a
 * loaded machine, short enough that a lost event fails a round soon. */
#define ARRIVAL_MS (RUNNING_ON_VALGRIND ? GUARD_MS : 5000)

/* ------------------------------------------------------------ barriers */

/* A barrier: the named pipe <dir>/<what>. */
static void fifo_path(char *buf, size_t len, const char *dir, const char *what)
{
    snprintf(buf, len, "%s/%s", dir, what);
}

static void fifo_make(const char *dir, const char *what)
{
    char path[BUS_DIR_MAX + 32];
    fifo_path(path, sizeof path, dir, what);
    EXPECT_EQ(mkfifo(path, 0600), 0);
}

/*
 * In a child: tells the test it is at the barrier, and waits until the
 * test releases it.  The pipe is open before the test hears of it, so a
 * read of it blocks until the test writes.  With `loop_runs` the loop
 * runs meanwhile (the endpoint writes what it has queued); without, the
 * whole process blocks, and wakes at the very moment the others do.
 */
static void fifo_wait(const char *dir, const char *what, int loop_runs)
{
    char path[BUS_DIR_MAX + 32], b = 0;
    fifo_path(path, sizeof path, dir, what);
    int fd = open(path, O_RDWR);
    EXPECT_TRUE(fd >= 0);
    bus_child_signal();
    if (loop_runs)
        EXPECT_EQ(bus_wait_readable(fd, LAHJA_FOREVER), 0); /* the alarm bounds it */
    ssize_t n;
    while ((n = read(fd, &b, 1)) < 0 && errno == EINTR)
        ;
    EXPECT_EQ(n, 1);
    close(fd);
}

/* Waits until the n children are at the barrier, then releases them
 * together: one write of a byte for each wakes every reader at once. */
static void fifo_release(bus_child_t *children, int n, const char *dir, const char *what)
{
    for (int i = 0; i < n; i++)
        EXPECT_EQ(bus_child_await_signal(&children[i]), 0);
    char path[BUS_DIR_MAX + 32], bytes[8] = "gggggggg";
    fifo_path(path, sizeof path, dir, what);
    int fd = open(path, O_WRONLY);
    EXPECT_TRUE(fd >= 0);
    EXPECT_EQ(write(fd, bytes, (size_t)n), n);
    close(fd);
}

/* ------------------------------------------- sequences, in order */

/* Events numbered 0, 1, 2, ... (a u32 payload) as they arrive. */
struct seq_rx {
    int n;           /* received */
    int bad;         /* received out of order (or not 4 bytes) */
    long first_bad;  /* the number the first of those carried */
    int first_bad_at;
    lahja_cond_t changed;
};

static int on_seq(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct seq_rx *rx = user;
    size_t len = 0;
    const uint8_t *p = lahja_event_payload(ev, &len);
    long got = -1;
    if (len == 4)
        got = (long)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
    if (got != rx->n && rx->bad++ == 0) {
        rx->first_bad = got;
        rx->first_bad_at = rx->n;
    }
    rx->n++;
    lahja_cond_broadcast(&rx->changed);
    return 0;
}

static int send_seq(lahja_endpoint_t *ep, const char *type, uint32_t i)
{
    uint8_t p[4] = { (uint8_t)i, (uint8_t)(i >> 8), (uint8_t)(i >> 16), (uint8_t)(i >> 24) };
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new(type, p, sizeof p, &ev), 0);
    int rc = lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS));
    lahja_event_unref(ev);
    return rc;
}

static int nop_handler(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev, (void)user;
    return 0;
}

/* ---------------------------------------- B30: simultaneous connects */

#define SIM_EVENTS 2000
#define SIM_ROUNDS (RUNNING_ON_VALGRIND ? 4 : 40)

struct sim_args {
    const char *dir;
    const char *self;
    const char *other;
    int round;
};

/*
 * One of the two: serves, subscribes to "To<self>", tells the test it is
 * ready and waits for the barrier, then connects to the other at the
 * same moment as the other connects to it, sends it SIM_EVENTS numbered
 * events and checks that it received the other's SIM_EVENTS, in order,
 * over exactly one connection.  It stops only once the test says both
 * have received everything (the second barrier), so that nothing here
 * depends on what stop does with the last events.
 */
static int child_simultaneous(void *arg)
{
    const struct sim_args *a = arg;
    char mine[32], theirs[32];
    snprintf(mine, sizeof mine, "To%s", a->self);
    snprintf(theirs, sizeof theirs, "To%s", a->other);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(a->dir, a->self, &opts);
    struct seq_rx rx = { 0 };
    lahja_cond_init(&rx.changed);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, mine, on_seq, &rx, &s), 0);

    fifo_wait(a->dir, "go", 0);
    lahja_conn_config_t cfg = bus_cfg(a->dir, a->other);
    int rc = lahja_connect(ep, &cfg, 1, lahja_deadline_in(GUARD_MS));
    if (rc != 0 && !(rc == LAHJA_ECONNREJECTED && lahja_is_connected_to(ep, a->other))) {
        fprintf(stderr, "round %d: %s: lahja_connect to %s returned %s (%s), connected: %d\n",
                a->round, a->self, a->other, lahja_err_name(rc), lahja_strerror(rc),
                lahja_is_connected_to(ep, a->other));
        EXPECT_EQ(rc, 0);
    }
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, a->other, theirs,
                                                      lahja_deadline_in(GUARD_MS)),
              0);
    for (uint32_t i = 0; i < SIM_EVENTS; i++)
        EXPECT_EQ(send_seq(ep, theirs, i), 0);

    lahja_time_t deadline = lahja_deadline_in(ARRIVAL_MS);
    while (rx.n < SIM_EVENTS && lahja_cond_wait(&rx.changed, deadline) == 0)
        ;
    if (rx.n != SIM_EVENTS || rx.bad != 0) {
        fprintf(stderr,
                "round %d: %s received %d of the %d events %s sent (%d out of order; the "
                "first, at position %d, carried %ld)\n",
                a->round, a->self, rx.n, SIM_EVENTS, a->other, rx.bad, rx.first_bad_at,
                rx.first_bad);
        EXPECT_EQ(rx.n, SIM_EVENTS);
        EXPECT_EQ(rx.bad, 0);
    }
    EXPECT_EQ(lahja_is_connected_to(ep, a->other), 1);
    int peers = 0;
    lahja_foreach_peer(ep, bus_count_peer, &peers);
    EXPECT_EQ(peers, 1);

    fifo_wait(a->dir, "done", 1);
    lahja_subscription_cancel(s);
    bus_close(ep);
    return 0;
}

/*
 * B30, B4: two endpoints connect to each other at the same moment, each
 * right after the other is serving.  Both connects succeed (or one says
 * LAHJA_ECONNREJECTED because the other's connection was already
 * complete, and it is connected), one connection remains, and each
 * receives all 2000 events the other broadcast right after its connect
 * returned, in order.  Many rounds, since the moment has to coincide.
 */
static int main_simultaneous_connects_lose_nothing(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    fifo_make(dir, "go");
    fifo_make(dir, "done");
    for (int round = 0; round < SIM_ROUNDS; round++) {
        struct sim_args args[2] = { { dir, "a", "b", round }, { dir, "b", "a", round } };
        bus_child_t c[2];
        for (int i = 0; i < 2; i++)
            c[i] = bus_fork(child_simultaneous, &args[i]);
        fifo_release(c, 2, dir, "go");
        fifo_release(c, 2, dir, "done");
        for (int i = 0; i < 2; i++)
            EXPECT_CHILD_OK(&c[i]);
    }
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(simultaneous_connects_lose_nothing)

/* ------------------------------------------------ B30: clean stops */

#define MESH 4
#define MESH_ROUNDS (RUNNING_ON_VALGRIND ? 3 : 40)

struct mesh_args {
    const char *dir;
    int self;
    int round;
};

/* Which of the others' "Last" events arrived (a bit per index). */
struct mesh_rx {
    unsigned got;
    int self;
    int others; /* events from an unknown origin, or twice */
    lahja_cond_t changed;
};

static int on_last(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct mesh_rx *rx = user;
    const char *from = lahja_event_origin(ev);
    int i = from != NULL && from[0] == 'p' && from[1] >= '0' && from[1] < '0' + MESH &&
                    from[2] == '\0'
                ? from[1] - '0'
                : -1;
    if (i == rx->self)
        return 0; /* our own: broadcast reaches us too */
    if (i < 0 || (rx->got & (1u << i)))
        rx->others++;
    else
        rx->got |= 1u << i;
    lahja_cond_broadcast(&rx->changed);
    return 0;
}

/*
 * p<self>: serves, connects to every other (as they all do: two may
 * connect to each other at once), waits until every other is subscribed
 * to "Last", broadcasts one "Last", waits for the three others' and
 * stops at once.
 */
static int child_mesh(void *arg)
{
    const struct mesh_args *a = arg;
    char self[16];
    snprintf(self, sizeof self, "p%d", a->self);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(a->dir, self, &opts);
    struct mesh_rx rx = { .self = a->self };
    lahja_cond_init(&rx.changed);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Last", on_last, &rx, &s), 0);

    /* Connects to every other; each pair may connect both ways at once. */
    for (int j = 0; j < MESH; j++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", j);
        if (j == a->self)
            continue;
        lahja_conn_config_t cfg = bus_cfg(a->dir, name);
        int rc = lahja_connect(ep, &cfg, 1, lahja_deadline_in(GUARD_MS));
        if (rc != 0 && !(rc == LAHJA_ECONNREJECTED && lahja_is_connected_to(ep, name))) {
            fprintf(stderr, "round %d: %s: lahja_connect to %s returned %s\n", a->round, self,
                    name, lahja_err_name(rc));
            EXPECT_EQ(rc, 0);
        }
    }
    for (int j = 0; j < MESH; j++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", j);
        if (j != a->self)
            EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, name, "Last",
                                                              lahja_deadline_in(GUARD_MS)),
                      0);
    }
    EXPECT_EQ(bus_send(ep, "Last", self), 0);

    unsigned all = ((1u << MESH) - 1) & ~(1u << a->self);
    lahja_time_t deadline = lahja_deadline_in(ARRIVAL_MS);
    while (rx.got != all && lahja_cond_wait(&rx.changed, deadline) == 0)
        ;
    if (rx.got != all) {
        fprintf(stderr, "round %d: %s never received the last event of", a->round, self);
        for (int j = 0; j < MESH; j++)
            if (all & ~rx.got & (1u << j))
                fprintf(stderr, " p%d", j);
        fprintf(stderr, "\n");
        EXPECT_EQ(rx.got, all);
    }
    EXPECT_EQ(rx.others, 0);
    lahja_subscription_cancel(s);
    bus_close(ep);
    return 0;
}

/*
 * B30: four processes in a full mesh each broadcast one event to the
 * three others and stop as soon as they have the others' three: every
 * process receives all three, although the first to stop closes its
 * connections while the others may still be writing to it (their writes
 * failing must not discard what it sent them).  Many rounds, since the
 * stops have to overlap.
 */
static int main_last_events_before_stop_arrive(void *arg)
{
    (void)arg;
    for (int round = 0; round < MESH_ROUNDS; round++) {
        char dir[BUS_DIR_MAX];
        bus_dir_make(dir);
        struct mesh_args args[MESH];
        bus_child_t c[MESH];
        for (int i = 0; i < MESH; i++) {
            args[i] = (struct mesh_args){ dir, i, round };
            c[i] = bus_fork(child_mesh, &args[i]);
        }
        for (int i = 0; i < MESH; i++)
            EXPECT_CHILD_OK(&c[i]);
        bus_dir_remove(dir);
    }
    return 0;
}
BUS_MAIN_TEST(last_events_before_stop_arrive)

/* Where y says it has stopped running its loop: a FIFO in the test's
 * directory (a forked child keeps no inherited descriptor but its own). */
static void blocked_path(char *buf, size_t len, const char *dir)
{
    snprintf(buf, len, "%s/blocked.fifo", dir);
}

/* "x": connects to "y", waits for its "Ready" and for y to block, then
 * broadcasts "Last" to it and stops at once. */
static int child_last_and_stop(void *arg)
{
    const char *dir = arg;
    char path[BUS_DIR_MAX + 16];
    blocked_path(path, sizeof path, dir);
    int blocked = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC); /* a writer too: no hang-up */
    EXPECT_TRUE(blocked >= 0);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("x", &opts);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Chat", nop_handler, NULL, &s), 0);
    lahja_stream_t *ready = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Ready", 1, NULL, &ready), 0);
    EXPECT_EQ(bus_connect(ep, dir, "y"), 0);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_stream_next(ready, lahja_deadline_in(GUARD_MS), &ev), 0);
    lahja_event_unref(ev);
    lahja_stream_close(ready);
    EXPECT_EQ(bus_wait_readable(blocked, lahja_deadline_in(GUARD_MS)), 0);
    close(blocked);
    EXPECT_EQ(bus_send(ep, "Last", "from x"), 0);
    bus_close(ep); /* lingers: y, blocked, confirms nothing */
    return 0;
}

/*
 * B30: an endpoint whose write to a peer fails because the peer has
 * closed still receives what that peer sent before closing.  "y" has an
 * event queued for "x" and does not run its loop (it waits for x's
 * process to end) while x broadcasts "Last" to it, stops and exits; when
 * y's loop runs again, writing the queued event fails (x is gone), and
 * x's "Last", in y's socket all along, must still be delivered.
 */
static int main_write_failure_keeps_unread_input(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    char path[BUS_DIR_MAX + 16];
    blocked_path(path, sizeof path, dir);
    EXPECT_EQ(mkfifo(path, 0600), 0);
    static struct bus_log log;
    lahja_endpoint_options_t opts = bus_opts(&log);
    lahja_endpoint_t *ep = bus_serve(dir, "y", &opts);
    struct bus_counter last;
    bus_counter_init(&last);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Last", bus_count_handler, &last, &s), 0);
    bus_child_t x = bus_fork(child_last_and_stop, dir);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "x", "Ready", lahja_deadline_in(GUARD_MS)),
              0);
    EXPECT_EQ(lahja_is_endpoint_subscribed_to(ep, "x", "Chat"), 1);
    /* "Ready" is written and confirmed while y's loop runs; "Chat" then
     * only waits in y's queue. */
    EXPECT_EQ(bus_send(ep, "Ready", ""), 0);
    EXPECT_EQ(lahja_wait_until_delivered(ep, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_t *chat = bus_event("Chat", "queued for x");
    EXPECT_EQ(lahja_broadcast_nowait(ep, chat, NULL), 0);
    lahja_event_unref(chat);
    /* Blocking: the loop does not run (nor write, nor read) meanwhile. */
    int blocked = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC); /* x holds it open */
    EXPECT_TRUE(blocked >= 0);
    EXPECT_EQ(write(blocked, "b", 1), 1);
    close(blocked);
    EXPECT_EXIT_OK(bus_child_wait_blocking(&x), "x");

    lahja_time_t deadline = lahja_deadline_in(ARRIVAL_MS);
    while (last.n < 1 && lahja_cond_wait(&last.changed, deadline) == 0)
        ;
    if (last.n != 1)
        fprintf(stderr, "y never received the event x broadcast before it stopped\n");
    EXPECT_EQ(last.n, 1);
    bus_wait_disconnected(ep, "x");
    /* x went without confirming "Chat": reported, not silent. */
    lahja_delivery_t d;
    EXPECT_EQ(lahja_delivery_stats(ep, "x", &d), 0);
    EXPECT_EQ(d.lost, 1);
    /* One WARNING says it: why the connection ended, and the loss. */
    int warned = 0, with_loss = 0;
    for (int i = 0; i < log.n; i++) {
        if (log.level[i] < LAHJA_LOG_WARNING || strstr(log.line[i], "connection from x") == NULL)
            continue;
        warned++;
        with_loss += strstr(log.line[i], "1 of 2 events sent unconfirmed, counted as lost") != NULL;
    }
    if (warned != 1 || with_loss != 1)
        bus_log_dump(&log);
    EXPECT_EQ(warned, 1);
    EXPECT_EQ(with_loss, 1);
    lahja_subscription_cancel(s);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(write_failure_keeps_unread_input)

/* ------------------------------------------------ B24: other threads */

/* A call made from the other thread, and what it returned. */
struct foreign_rc {
    const char *call;
    int rc;
};

#define FOREIGN_MAX 32

struct foreign {
    lahja_endpoint_t *ep;
    lahja_stream_t *st;       /* holds one event */
    const lahja_event_t *req; /* a request the endpoint received */
    const char *dir;
    struct foreign_rc rc[FOREIGN_MAX];
    int n;
    int connected_seen; /* what the queries answered there */
    int run_rc;
};

static void note(struct foreign *f, const char *call, int rc)
{
    if (f->n < FOREIGN_MAX)
        f->rc[f->n++] = (struct foreign_rc){ call, rc };
}

/* The other thread's main task: every call taking the endpoint (or its
 * stream), each with a short deadline, should it wait after all. */
static int foreign_main(void *arg)
{
    struct foreign *f = arg;
    lahja_endpoint_t *ep = f->ep;
    lahja_time_t soon = lahja_deadline_in(200);
    lahja_event_t *got = NULL;

    int rc = lahja_stream_next(f->st, soon, &got);
    note(f, "lahja_stream_next", rc);
    if (rc == 0)
        lahja_event_unref(got); /* taken from the owner's stream */
    got = NULL;

    lahja_subscription_t *s = NULL;
    note(f, "lahja_subscribe", lahja_subscribe(ep, "Foreign", nop_handler, NULL, &s));
    lahja_stream_t *st = NULL;
    note(f, "lahja_stream_open", lahja_stream_open(ep, "Foreign", 0, NULL, &st));
    lahja_event_t *ev = bus_event("Kept", "from another thread");
    note(f, "lahja_broadcast", lahja_broadcast(ep, ev, NULL, soon));
    note(f, "lahja_broadcast_nowait", lahja_broadcast_nowait(ep, ev, NULL));
    lahja_event_unref(ev);
    note(f, "lahja_broadcast_bytes", lahja_broadcast_bytes(ep, "Kept", "x", 1, NULL, soon));
    lahja_event_t *q = NULL;
    EXPECT_EQ(lahja_request_new("Question", "Answer", "?", 1, &q), 0);
    note(f, "lahja_request", lahja_request(ep, q, NULL, soon, &got));
    lahja_event_unref(q);
    lahja_event_t *answer = bus_event("Answer", "from another thread");
    note(f, "lahja_respond", lahja_respond(ep, f->req, answer));
    lahja_event_unref(answer);
    note(f, "lahja_wait_for", lahja_wait_for(ep, "Kept", soon, &got));
    lahja_conn_config_t ghost = bus_cfg(f->dir, "ghost");
    note(f, "lahja_connect", lahja_connect(ep, &ghost, 1, soon));
    note(f, "lahja_wait_until_connected_to", lahja_wait_until_connected_to(ep, "ghost", soon));
    note(f, "lahja_wait_until_connections_change",
         lahja_wait_until_connections_change(ep, soon));
    note(f, "lahja_wait_until_endpoint_subscriptions_change",
         lahja_wait_until_endpoint_subscriptions_change(ep, soon));
    note(f, "lahja_wait_until_endpoint_subscribed_to",
         lahja_wait_until_endpoint_subscribed_to(ep, "other", "Nothing", soon));
    note(f, "lahja_wait_until_any_endpoint_subscribed_to",
         lahja_wait_until_any_endpoint_subscribed_to(ep, "Nothing", soon));
    note(f, "lahja_wait_until_all_endpoints_subscribed_to",
         lahja_wait_until_all_endpoints_subscribed_to(ep, "Nothing", 1, soon));
    lahja_delivery_t d;
    note(f, "lahja_delivery_stats", lahja_delivery_stats(ep, NULL, &d));
    note(f, "lahja_delivery_stats (one peer)", lahja_delivery_stats(ep, "other", &d));
    lahja_peer_stats_t ps;
    note(f, "lahja_peer_stats", lahja_peer_stats(ep, "other", &ps));
    lahja_endpoint_stats_t es;
    note(f, "lahja_endpoint_stats", lahja_endpoint_stats(ep, &es));
    note(f, "lahja_wait_until_delivered", lahja_wait_until_delivered(ep, soon));
    lahja_conn_config_t serve = bus_cfg(f->dir, "srv");
    note(f, "lahja_endpoint_start", lahja_endpoint_start(ep, &serve));
    note(f, "lahja_endpoint_stop", lahja_endpoint_stop(ep));

    /* Queries: refused (0) or answered truthfully; either way nothing
     * changes, which the owner checks afterwards. */
    const char *types[8];
    size_t ntypes = lahja_subscribed_types(ep, types, 8);
    EXPECT_TRUE(ntypes <= 3);
    int peers = 0;
    lahja_foreach_peer(ep, bus_count_peer, &peers);
    EXPECT_TRUE(peers <= 1);
    f->connected_seen = lahja_is_connected_to(ep, "other") +
                        lahja_is_endpoint_subscribed_to(ep, "other", "Kept") +
                        lahja_is_any_endpoint_subscribed_to(ep, "Kept") +
                        lahja_are_all_endpoints_subscribed_to(ep, "Kept", 1);
    (void)lahja_endpoint_is_running(ep);
    (void)lahja_endpoint_is_serving(ep);
    (void)lahja_stream_dropped(f->st);
    return 0;
}

static void *foreign_thread(void *arg)
{
    struct foreign *f = arg;
    f->run_rc = lahja_run(foreign_main, f, NULL);
    return NULL;
}

/* A request to ourselves that the owner answers at the end. */
struct self_request {
    lahja_endpoint_t *ep;
    int rc;
    char answer[64];
};

static int task_self_request(void *arg)
{
    struct self_request *r = arg;
    lahja_event_t *q = NULL, *a = NULL;
    EXPECT_EQ(lahja_request_new("Question", "Answer", "?", 1, &q), 0);
    lahja_broadcast_config_t cfg = { .internal = 1 };
    r->rc = lahja_request(r->ep, q, &cfg, lahja_deadline_in(GUARD_MS), &a);
    if (r->rc == 0) {
        size_t len = 0;
        const char *p = lahja_event_payload(a, &len);
        snprintf(r->answer, sizeof r->answer, "%.*s", (int)len, p);
    }
    lahja_event_unref(a);
    lahja_event_unref(q);
    return 0;
}

/*
 * B24: a task of another thread's runtime holds the endpoint and one of
 * its streams (which has an event queued).  lahja_stream_next, and every
 * other call that takes the endpoint (lahja_delivery_stats, the
 * statistics calls and lahja_wait_until_delivered among them), returns LAHJA_EWRONGTHREAD there;
 * the queries change nothing.  Afterwards, on the owner's thread, the
 * event is still in the stream, the request received is still
 * unanswered (the owner answers it), the subscriptions and the
 * connection are as they were, and the endpoint still serves.
 */
static int main_stream_next_from_other_thread(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_endpoint_t *other = bus_serve(dir, "other", &opts);
    lahja_subscription_t *kept = NULL;
    EXPECT_EQ(lahja_subscribe(other, "Kept", nop_handler, NULL, &kept), 0);
    EXPECT_EQ(bus_connect(ep, dir, "other"), 0);
    lahja_stream_t *st = NULL, *questions = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Kept", 0, NULL, &st), 0);
    EXPECT_EQ(lahja_stream_open(ep, "Question", 0, NULL, &questions), 0);
    EXPECT_EQ(bus_send(ep, "Kept", "queued"), 0);

    struct self_request r = { ep, PENDING, "" };
    lahja_task_t *t = NULL;
    EXPECT_EQ(lahja_spawn(lahja_rt_current(), task_self_request, &r, NULL, &t), 0);
    lahja_event_t *req = NULL;
    EXPECT_EQ(lahja_stream_next(questions, lahja_deadline_in(GUARD_MS), &req), 0);
    const char *before[8];
    size_t ntypes = lahja_subscribed_types(ep, before, 8);
    EXPECT_EQ(ntypes, 2);

    struct foreign f = { .ep = ep, .st = st, .req = req, .dir = dir, .run_rc = PENDING };
    pthread_t th;
    EXPECT_EQ(pthread_create(&th, NULL, foreign_thread, &f), 0);
    EXPECT_EQ(pthread_join(th, NULL), 0);
    EXPECT_EQ(f.run_rc, 0);
    int wrong = 0;
    for (int i = 0; i < f.n; i++) {
        if (f.rc[i].rc != LAHJA_EWRONGTHREAD) {
            fprintf(stderr, "  %s from another thread returned %s, expected LAHJA_EWRONGTHREAD\n",
                    f.rc[i].call, lahja_err_name(f.rc[i].rc));
            wrong++;
        }
    }
    EXPECT_EQ(wrong, 0);

    /* Nothing changed. */
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 1);
    EXPECT_EQ(lahja_is_connected_to(ep, "other"), 1);
    EXPECT_EQ(lahja_subscribed_types(ep, before, 8), ntypes);
    EXPECT_EQ(r.rc, PENDING);
    lahja_delivery_t d;
    EXPECT_EQ(lahja_delivery_stats(ep, "other", &d), 0);
    EXPECT_EQ(lahja_wait_until_delivered(ep, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), 0);
    EXPECT_TRUE(bus_payload_is(ev, "queued"));
    lahja_event_unref(ev);

    lahja_event_t *answer = bus_event("Answer", "from the owner");
    EXPECT_EQ(lahja_respond(ep, req, answer), 0);
    lahja_event_unref(answer);
    lahja_event_unref(req);
    int result = PENDING;
    EXPECT_EQ(lahja_task_join(t, lahja_deadline_in(GUARD_MS), &result), 0);
    EXPECT_EQ(r.rc, 0);
    EXPECT_TRUE(strcmp(r.answer, "from the owner") == 0);

    lahja_stream_close(st);
    lahja_stream_close(questions);
    bus_close(ep);
    lahja_subscription_cancel(kept);
    bus_close(other);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(stream_next_from_other_thread)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simultaneous_connects_lose_nothing),
        cmocka_unit_test(test_last_events_before_stop_arrive),
        cmocka_unit_test(test_write_failure_keeps_unread_input),
        cmocka_unit_test(test_stream_next_from_other_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
