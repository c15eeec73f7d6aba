/*
 * Kept connections (B33), background connects, the peer state and the
 * serving path, with real processes and real sockets:
 *
 *  - a kept peer killed with SIGKILL and started again is connected
 *    again, and events flow both ways (subscriptions announced anew);
 *  - a kept name whose socket appears only later is connected then;
 *  - two endpoints that keep each other end with one connection, and
 *    lose nothing across a restart of one of them;
 *  - the backoff grows as documented, and stops once the name is no
 *    longer kept;
 *  - a peer that accepts and never answers is dropped after the
 *    handshake timeout and tried again; stopping while waiting or while
 *    an attempt is under way leaves nothing behind;
 *  - lahja_connect_nowait succeeds in the background, or gives up and
 *    says why;
 *  - lahja_endpoint_path, argument errors and other threads.
 *
 * What the endpoint does between attempts is observed through its log
 * (each failed attempt is a line) and lahja_peer_info, never by sleeping:
 * a test that must let time pass counts the attempts of another kept
 * name instead.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "support_bus.h"

/* A backoff short enough for tests. */
static const lahja_reconnect_options_t quick = { .min_ms = 10, .max_ms = 100 };

/* ------------------------------------------------------------ watching */

#define WATCH_NAMES 2
#define WATCH_RETRIES 32

/*
 * What an endpoint logs about up to two kept names, counted as it comes,
 * with lahja_peer_info's retry_ms taken right after each failed attempt.
 * Every line wakes `changed`.
 */
struct watch {
    lahja_endpoint_t *ep;
    const char *name[WATCH_NAMES];
    int failures[WATCH_NAMES]; /* "attempt N failed" lines */
    int lost[WATCH_NAMES];
    int back[WATCH_NAMES];     /* "re-established" lines */
    uint32_t retry_ms[WATCH_RETRIES]; /* of name[0], failure by failure */
    int warnings;
    char last_warning[BUS_LOG_LINE];
    struct bus_log log;
    lahja_cond_t changed;
};

static int line_is(const char *msg, const char *name, const char *what)
{
    char want[LAHJA_NAME_MAX + 64];
    snprintf(want, sizeof want, "kept connection to %s%s", name, what);
    return strncmp(msg, want, strlen(want)) == 0;
}

static void watch_log(void *user, lahja_log_level_t level, const char *endpoint,
                      const char *msg)
{
    struct watch *w = user;
    bus_log_fn(&w->log, level, endpoint, msg);
    for (int i = 0; i < WATCH_NAMES && w->name[i] != NULL; i++) {
        if (line_is(msg, w->name[i], ": attempt ")) {
            if (i == 0 && w->failures[0] < WATCH_RETRIES) {
                lahja_peer_info_t info;
                EXPECT_EQ(lahja_peer_info(w->ep, w->name[0], &info), 0);
                EXPECT_EQ(info.state, LAHJA_PEER_RETRYING);
                w->retry_ms[w->failures[0]] = info.retry_ms;
            }
            w->failures[i]++;
        }
        w->lost[i] += line_is(msg, w->name[i], " lost");
        w->back[i] += line_is(msg, w->name[i], " re-established");
    }
    if (level == LAHJA_LOG_WARNING) {
        w->warnings++;
        snprintf(w->last_warning, sizeof w->last_warning, "%s", msg);
    }
    lahja_cond_broadcast(&w->changed);
}

static void watch_init(struct watch *w, const char *name0, const char *name1)
{
    memset(w, 0, sizeof *w);
    w->name[0] = name0;
    w->name[1] = name1;
    lahja_cond_init(&w->changed);
}

static lahja_endpoint_options_t watch_opts(struct watch *w)
{
    lahja_endpoint_options_t o = { .log = watch_log, .log_user = w };
    return o;
}

/* Waits until *counter reaches `want` (the log wakes us). */
static void watch_until(struct watch *w, const int *counter, int want)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (*counter < want)
        EXPECT_EQ(lahja_cond_wait(&w->changed, deadline), 0);
}

static lahja_peer_info_t info_of(lahja_endpoint_t *ep, const char *name)
{
    lahja_peer_info_t info;
    memset(&info, 0x5a, sizeof info);
    EXPECT_EQ(lahja_peer_info(ep, name, &info), 0);
    return info;
}

/* Waits until `name` is connected again after `reconnects` losses. */
static void wait_reconnected(lahja_endpoint_t *ep, const char *name, uint32_t reconnects)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    for (;;) {
        lahja_peer_info_t info = info_of(ep, name);
        if (info.state == LAHJA_PEER_CONNECTED && info.reconnects >= reconnects)
            break;
        EXPECT_EQ(lahja_wait_until_connections_change(ep, deadline), 0);
    }
}

/* A Unix socket listening at `path` that nobody accepts from: connects
 * succeed (the backlog takes them) and no handshake ever comes. */
static int mute_listener(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(fd >= 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    EXPECT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    EXPECT_EQ(listen(fd, 16), 0);
    return fd;
}

/* ------------------------------------------------------ barriers */

/* A barrier: the named pipe <dir>/<what>, as in test_bus_delivery.c. */
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

/* In a child: tells the test it is at the barrier and waits for its
 * release; with `loop_runs` the loop runs meanwhile, without, the whole
 * process blocks (and wakes at the moment the others do). */
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

/* Waits until the n children are at the barrier, then releases them. */
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

/* --------------------------------------------------- numbered events */

/* Events numbered from some start on (a u32 payload), as they arrive. */
struct seq_rx {
    uint32_t next; /* the number expected next */
    int bad;       /* arrived out of order */
    lahja_cond_t changed;
};

static int on_seq(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct seq_rx *rx = user;
    size_t len = 0;
    const uint8_t *p = lahja_event_payload(ev, &len);
    uint32_t got = len == 4 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                  (uint32_t)p[3] << 24
                            : UINT32_MAX;
    if (got != rx->next && rx->bad++ == 0)
        fprintf(stderr, "[pid %d] expected event %u, got %u\n", (int)getpid(),
                (unsigned)rx->next, (unsigned)got);
    rx->next++;
    lahja_cond_broadcast(&rx->changed);
    return 0;
}

static void send_seq(lahja_endpoint_t *ep, const char *type, uint32_t i)
{
    uint8_t p[4] = { (uint8_t)i, (uint8_t)(i >> 8), (uint8_t)(i >> 16), (uint8_t)(i >> 24) };
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new(type, p, sizeof p, &ev), 0);
    EXPECT_EQ(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_unref(ev);
}

/* ------------------------------------------------- peers started later */

/*
 * The processes a test starts while its own endpoint has connections
 * closing would inherit a copy of their memory, which valgrind reports as
 * lost in them: so every child is forked at the start, and one whose
 * socket must appear only later waits at the "serve" barrier first.
 */
struct later_args {
    const char *dir;
    const char *name;
};

/* Serves `name` once released at "serve", answers "Echo", and stops at
 * "Done" (as bus_peer_main). */
static int child_serve_later(void *arg)
{
    const struct later_args *a = arg;
    fifo_wait(a->dir, "serve", 0);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(a->dir, a->name, &opts);
    lahja_subscription_t *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Done", LAHJA_FOREVER, &done), 0); /* the alarm bounds it */
    lahja_event_unref(done);
    lahja_subscription_cancel(echo);
    bus_close(ep);
    return 0;
}

/* ------------------------------------- a kept peer killed and restarted */

struct gen_args {
    const char *dir;
    int gen;
};

/*
 * "b", generation `gen`: serves (the second once released at "serve"), answers "Echo", and once "a" has
 * connected and subscribes to "FromB", tells it which generation it is;
 * then waits for "Done" (or SIGKILL).
 */
static int child_b(void *arg)
{
    const struct gen_args *a = arg;
    if (a->gen > 1)
        fifo_wait(a->dir, "serve", 0);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(a->dir, "b", &opts);
    lahja_subscription_t *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "a", "FromB", deadline), 0);
    char gen[16];
    snprintf(gen, sizeof gen, "gen %d", a->gen);
    EXPECT_EQ(bus_send(ep, "FromB", gen), 0);
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Done", LAHJA_FOREVER, &done), 0); /* the alarm bounds it */
    lahja_event_unref(done);
    lahja_subscription_cancel(echo);
    bus_close(ep);
    return 0;
}

/* What "a" last heard from b. */
struct from_b {
    int n;
    char last[32];
    lahja_cond_t changed;
};

static int on_from_b(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct from_b *f = user;
    size_t len = 0;
    const char *p = lahja_event_payload(ev, &len);
    snprintf(f->last, sizeof f->last, "%.*s", (int)len, p);
    f->n++;
    lahja_cond_broadcast(&f->changed);
    return 0;
}

static void wait_from_b(struct from_b *f, int n, const char *want)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (f->n < n)
        EXPECT_EQ(lahja_cond_wait(&f->changed, deadline), 0);
    EXPECT_TRUE(strcmp(f->last, want) == 0);
}

/*
 * B33: "a" keeps "b".  b is killed with SIGKILL (its socket file stays,
 * refusing connections) and started again: a logs the loss, fails its
 * attempts while b is gone, connects again on its own, logs the return,
 * and events flow both ways on the new connection: a's request reaches
 * the new b, and the new b learns of a's subscription and uses it.
 */
static int main_kept_peer_killed_and_restarted(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    fifo_make(dir, "serve");
    struct gen_args g1 = { dir, 1 }, g2 = { dir, 2 };
    bus_child_t b = bus_fork(child_b, &g1), b2 = bus_fork(child_b, &g2);
    struct watch w;
    watch_init(&w, "b", NULL);
    lahja_endpoint_options_t opts = watch_opts(&w);
    lahja_endpoint_t *ep = w.ep = bus_client("a", &opts);
    struct from_b from = { 0 };
    lahja_cond_init(&from.changed);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "FromB", on_from_b, &from, &s), 0);

    lahja_conn_config_t cfg = bus_cfg(dir, "b");
    EXPECT_EQ(lahja_keep_connected(ep, &cfg, &quick), 0);
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "b", lahja_deadline_in(GUARD_MS)), 0);
    lahja_peer_info_t info = info_of(ep, "b");
    EXPECT_EQ(info.state, LAHJA_PEER_CONNECTED);
    EXPECT_EQ(info.kept, 1);
    EXPECT_EQ(info.reconnects, 0);
    EXPECT_EQ(info.failures, 0);
    EXPECT_EQ(info.outbound, 1);
    EXPECT_EQ(info.pid, b.pid);
    EXPECT_TRUE(info.since > 0 && info.since <= lahja_now());
    bus_ask(ep, "Echo", "EchoAnswer", "first", "b", "first");
    wait_from_b(&from, 1, "gen 1");

    EXPECT_EQ(kill(b.pid, SIGKILL), 0);
    int status = bus_child_wait_blocking(&b);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    bus_wait_disconnected(ep, "b");
    /* Logged once the connection has ended: a write that failed first
     * makes it read to its end before (the loss comes at its EOF). */
    watch_until(&w, &w.lost[0], 1);
    /* While b is gone, attempts fail against its stale socket (the first
     * ones, before b served, may have failed too). */
    watch_until(&w, &w.failures[0], w.failures[0] + 2);
    info = info_of(ep, "b");
    EXPECT_EQ(info.state, LAHJA_PEER_RETRYING);
    EXPECT_EQ(info.kept, 1);
    EXPECT_EQ(info.last_error, -ECONNREFUSED);
    EXPECT_TRUE(info.failures >= 2);
    EXPECT_TRUE(info.retry_ms >= 1 && info.retry_ms <= quick.max_ms);

    b = b2;
    fifo_release(&b, 1, dir, "serve");
    wait_reconnected(ep, "b", 1);
    info = info_of(ep, "b");
    EXPECT_EQ(info.pid, b.pid);
    EXPECT_EQ(info.failures, 0);
    EXPECT_EQ(w.back[0], 1);
    bus_ask(ep, "Echo", "EchoAnswer", "second", "b", "second");
    wait_from_b(&from, 2, "gen 2");

    bus_peer_done(ep, "b");
    EXPECT_CHILD_OK(&b);
    lahja_subscription_cancel(s);
    bus_close(ep); /* during the backoff that b's exit started */
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(kept_peer_killed_and_restarted)

/* --------------------------------------------- the socket comes later */

/*
 * B33: a name kept before anything serves it is tried with backoff (the
 * socket does not exist) and connected as soon as its endpoint starts.
 */
static int main_kept_name_connects_when_socket_appears(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    fifo_make(dir, "serve");
    struct later_args later = { dir, "late" };
    bus_child_t c = bus_fork(child_serve_later, &later);
    struct watch w;
    watch_init(&w, "late", NULL);
    lahja_endpoint_options_t opts = watch_opts(&w);
    lahja_endpoint_t *ep = w.ep = bus_client("a", &opts);
    lahja_conn_config_t cfg = bus_cfg(dir, "late");
    EXPECT_EQ(lahja_keep_connected(ep, &cfg, &quick), 0);
    /* The first attempt is made in the call, and fails at once. */
    lahja_peer_info_t info = info_of(ep, "late");
    EXPECT_EQ(info.state, LAHJA_PEER_RETRYING);
    EXPECT_EQ(info.kept, 1);
    EXPECT_EQ(info.failures, 1);
    EXPECT_EQ(info.last_error, -ENOENT);
    EXPECT_TRUE(info.retry_ms >= quick.min_ms - quick.min_ms / 4 && info.retry_ms <= quick.min_ms);
    EXPECT_TRUE(info.next_attempt > 0);
    watch_until(&w, &w.failures[0], 3);

    fifo_release(&c, 1, dir, "serve");
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "late", lahja_deadline_in(GUARD_MS)), 0);
    info = info_of(ep, "late");
    EXPECT_EQ(info.state, LAHJA_PEER_CONNECTED);
    EXPECT_EQ(info.failures, 0);
    EXPECT_EQ(info.reconnects, 0); /* connected, never lost */
    EXPECT_EQ(w.back[0], 0);
    bus_ask(ep, "Echo", "EchoAnswer", "hello", "late", "hello");
    bus_peer_done(ep, "late");
    EXPECT_CHILD_OK(&c);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(kept_name_connects_when_socket_appears)

/* --------------------------------------------- two that keep each other */

#define MUTUAL_EVENTS 500
#define MUTUAL_ROUNDS (RUNNING_ON_VALGRIND ? 2 : 10)

struct mutual_args {
    const char *dir;
    const char *self, *other;
    int round;
    int gen; /* b's generation; a lives through both */
};

/*
 * One exchange over the one connection between ep and `other`: waits
 * until the other subscribes to "To<other>", sends it MUTUAL_EVENTS
 * numbered from `first`, and waits for as many from it, in order.
 */
static void exchange(lahja_endpoint_t *ep, const struct mutual_args *a, struct seq_rx *rx,
                     uint32_t first)
{
    char theirs[32];
    snprintf(theirs, sizeof theirs, "To%s", a->other);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, a->other, theirs,
                                                      lahja_deadline_in(GUARD_MS)),
              0);
    for (uint32_t i = first; i < first + MUTUAL_EVENTS; i++)
        send_seq(ep, theirs, i);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (rx->next < first + MUTUAL_EVENTS)
        EXPECT_EQ(lahja_cond_wait(&rx->changed, deadline), 0);
    EXPECT_EQ(rx->bad, 0);
    int peers = 0;
    lahja_foreach_peer(ep, bus_count_peer, &peers);
    if (peers != 1)
        fprintf(stderr, "round %d: %s has %d connections\n", a->round, a->self, peers);
    EXPECT_EQ(peers, 1);
}

/* Every event sent to `other` is confirmed, none lost, over all of the
 * connections to it. */
static void expect_all_confirmed(lahja_endpoint_t *ep, const char *other, uint64_t sent)
{
    EXPECT_EQ(lahja_wait_until_delivered(ep, lahja_deadline_in(GUARD_MS)), 0);
    lahja_delivery_t d;
    EXPECT_EQ(lahja_delivery_stats(ep, other, &d), 0);
    EXPECT_EQ(d.sent, sent);
    EXPECT_EQ(d.confirmed, sent);
    EXPECT_EQ(d.lost, 0);
}

/*
 * "a" or "b" (first generation): serves, subscribes to "To<self>", and
 * at the "go" barrier keeps the other connected, at the same moment as
 * the other does; exchanges; then meets the test at "mid".  b stops
 * there.  a goes on: its kept connection comes back when the second b
 * starts (whichever opens it), they exchange again, and meet at "done".
 */
static int child_mutual(void *arg)
{
    const struct mutual_args *a = arg;
    char mine[32];
    snprintf(mine, sizeof mine, "To%s", a->self);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(a->dir, a->self, &opts);
    struct seq_rx rx = { 0 };
    lahja_cond_init(&rx.changed);
    int later = a->gen == 2; /* the second b: a is there already */
    rx.next = later ? MUTUAL_EVENTS : 0;
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, mine, on_seq, &rx, &s), 0);
    if (!later)
        fifo_wait(a->dir, "go", 0);
    lahja_conn_config_t cfg = bus_cfg(a->dir, a->other);
    EXPECT_EQ(lahja_keep_connected(ep, &cfg, &quick), 0);
    EXPECT_EQ(lahja_wait_until_connected_to(ep, a->other, lahja_deadline_in(GUARD_MS)), 0);
    exchange(ep, a, &rx, later ? MUTUAL_EVENTS : 0);
    if (!later) {
        fifo_wait(a->dir, "mid", 1);
        if (a->gen == 1) { /* the first b goes */
            expect_all_confirmed(ep, a->other, MUTUAL_EVENTS);
            lahja_subscription_cancel(s);
            bus_close(ep);
            return 0;
        }
        /* a: the second b comes; until then a tries again and again. */
        wait_reconnected(ep, a->other, 1);
        exchange(ep, a, &rx, MUTUAL_EVENTS);
    }
    expect_all_confirmed(ep, a->other, later ? MUTUAL_EVENTS : 2 * MUTUAL_EVENTS);
    lahja_peer_info_t info = info_of(ep, a->other);
    EXPECT_EQ(info.state, LAHJA_PEER_CONNECTED);
    EXPECT_EQ(info.kept, 1);
    fifo_wait(a->dir, "done", 1);
    lahja_subscription_cancel(s);
    bus_close(ep);
    return 0;
}

/*
 * B33, B30: two endpoints that keep each other, started together at a
 * barrier so that they connect to each other at the same moment, end up
 * with one connection and exchange 500 events each way in order; b stops
 * and a second b starts, keeping a too, while a keeps retrying b: again
 * one connection, 500 more each way, and over both connections nothing
 * was lost (every event confirmed).  Many rounds, since the moments have
 * to coincide.
 */
static int main_mutual_keep_one_connection_nothing_lost(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    fifo_make(dir, "go");
    fifo_make(dir, "mid");
    fifo_make(dir, "done");
    for (int round = 0; round < MUTUAL_ROUNDS; round++) {
        struct mutual_args args[3] = { { dir, "a", "b", round, 0 },
                                       { dir, "b", "a", round, 1 },
                                       { dir, "b", "a", round, 2 } };
        bus_child_t c[2];
        for (int i = 0; i < 2; i++)
            c[i] = bus_fork(child_mutual, &args[i]);
        fifo_release(c, 2, dir, "go");
        fifo_release(c, 2, dir, "mid");
        EXPECT_CHILD_OK(&c[1]);
        c[1] = bus_fork(child_mutual, &args[2]);
        fifo_release(c, 2, dir, "done");
        for (int i = 0; i < 2; i++)
            EXPECT_CHILD_OK(&c[i]);
    }
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(mutual_keep_one_connection_nothing_lost)

/* ----------------------------------------------- backoff, stop keeping */

/*
 * B33: against a name that never serves, each wait is between three
 * quarters of the nominal delay and the delay, which doubles from min_ms
 * to max_ms.  Once the name is no longer kept, no attempt follows: while
 * another kept name makes 25 attempts (at least 4 ms apart, so longer
 * than any wait the first had scheduled), the first makes none.
 */
static int main_backoff_grows_and_stops_when_no_longer_kept(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct watch w;
    watch_init(&w, "gone", "tick");
    lahja_endpoint_options_t opts = watch_opts(&w);
    lahja_endpoint_t *ep = w.ep = bus_client("a", &opts);
    const lahja_reconnect_options_t ro = { .min_ms = 8, .max_ms = 64 };
    lahja_conn_config_t gone = bus_cfg(dir, "gone");
    EXPECT_EQ(lahja_keep_connected(ep, &gone, &ro), 0);
    watch_until(&w, &w.failures[0], 7);
    for (int k = 0; k < 7; k++) {
        uint32_t nominal = ro.min_ms << k < ro.max_ms ? ro.min_ms << k : ro.max_ms;
        if (w.retry_ms[k] < nominal - nominal / 4 || w.retry_ms[k] > nominal)
            fprintf(stderr, "wait %d: %u ms, expected %u..%u\n", k, (unsigned)w.retry_ms[k],
                    (unsigned)(nominal - nominal / 4), (unsigned)nominal);
        EXPECT_TRUE(w.retry_ms[k] >= nominal - nominal / 4 && w.retry_ms[k] <= nominal);
        if (k > 0 && k < 4)
            EXPECT_TRUE(w.retry_ms[k] > w.retry_ms[k - 1]);
    }
    lahja_peer_info_t info = info_of(ep, "gone");
    EXPECT_EQ(info.state, LAHJA_PEER_RETRYING);
    EXPECT_TRUE(info.failures >= 7);
    EXPECT_EQ(info.last_error, -ENOENT);

    EXPECT_EQ(lahja_stop_keeping(ep, "gone"), 0);
    EXPECT_EQ(lahja_stop_keeping(ep, "gone"), -ENOENT);
    info = info_of(ep, "gone");
    EXPECT_EQ(info.state, LAHJA_PEER_UNKNOWN);
    EXPECT_EQ(info.kept, 0);
    int before = w.failures[0];
    const lahja_reconnect_options_t tick = { .min_ms = 5, .max_ms = 5 };
    lahja_conn_config_t cfg = bus_cfg(dir, "tick");
    EXPECT_EQ(lahja_keep_connected(ep, &cfg, &tick), 0);
    watch_until(&w, &w.failures[1], 25);
    EXPECT_EQ(w.failures[0], before);
    EXPECT_EQ(lahja_stop_keeping(ep, "tick"), 0);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(backoff_grows_and_stops_when_no_longer_kept)

/* ------------------------------------------- bounded attempts, and stop */

/*
 * B33, B28: a kept name whose socket accepts and never answers: each
 * attempt is dropped after handshake_timeout_ms and counted as failed
 * (-ETIMEDOUT), and the name is tried again.  Then stopping, while an
 * attempt is under way or while waiting for the next, and freeing at
 * once leaves nothing behind (no handle, no memory: ASan and valgrind
 * would see it); so does stopping with a background connect waiting for
 * its socket.
 */
static int main_bounded_attempts_and_stop(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_conn_config_t mute = bus_cfg(dir, "mute");
    int listener = mute_listener(mute.path);

    struct watch w;
    watch_init(&w, "mute", NULL);
    lahja_endpoint_options_t opts = watch_opts(&w);
    opts.handshake_timeout_ms = 50;
    lahja_endpoint_t *ep = w.ep = bus_client("a", &opts);
    EXPECT_EQ(lahja_keep_connected(ep, &mute, &quick), 0);
    EXPECT_EQ(info_of(ep, "mute").state, LAHJA_PEER_CONNECTING); /* connected, no handshake */
    watch_until(&w, &w.failures[0], 2);
    lahja_peer_info_t info = info_of(ep, "mute");
    EXPECT_EQ(info.last_error, -ETIMEDOUT);
    EXPECT_EQ(info.kept, 1);
    bus_close(ep);

    /* Stop while an attempt waits for its handshake. */
    watch_init(&w, "mute", NULL);
    opts.handshake_timeout_ms = GUARD_MS;
    ep = w.ep = bus_client("a", &opts);
    EXPECT_EQ(lahja_keep_connected(ep, &mute, &quick), 0);
    EXPECT_EQ(info_of(ep, "mute").state, LAHJA_PEER_CONNECTING);
    bus_close(ep);

    /* Stop while waiting for the next attempt. */
    watch_init(&w, "gone", NULL);
    ep = w.ep = bus_client("a", &opts);
    lahja_conn_config_t gone = bus_cfg(dir, "gone");
    const lahja_reconnect_options_t slow = { .min_ms = 60000 };
    EXPECT_EQ(lahja_keep_connected(ep, &gone, &slow), 0);
    EXPECT_EQ(info_of(ep, "gone").state, LAHJA_PEER_RETRYING);
    bus_close(ep);

    /* Stop while a background connect waits for its socket. */
    ep = bus_client("a", NULL);
    EXPECT_EQ(lahja_connect_nowait(ep, &gone, 1), 0);
    EXPECT_EQ(info_of(ep, "gone").state, LAHJA_PEER_CONNECTING);
    bus_close(ep);

    close(listener);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(bounded_attempts_and_stop)

/* ------------------------------------------------ background connects */

/* Waits for the watch's next WARNING, and checks that it names `what`. */
static void wait_warning(struct watch *w, int before, const char *what)
{
    watch_until(w, &w->warnings, before + 1);
    if (strstr(w->last_warning, what) == NULL)
        fprintf(stderr, "warning \"%s\" does not say \"%s\"\n", w->last_warning, what);
    EXPECT_TRUE(strstr(w->last_warning, what) != NULL);
}

/*
 * lahja_connect_nowait returns at once.  It succeeds in the background
 * when the socket appears after the call; it is a no-op for a name
 * connected already.  It gives up after handshake_timeout_ms, with a
 * WARNING and LAHJA_PEER_FAILED, for a socket that never appears, one
 * that never answers, and a peer of another name (rejected); a failed
 * name can be tried again.  Its argument errors are lahja_connect's.
 */
static int main_connect_nowait(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    fifo_make(dir, "serve");
    struct watch w;
    watch_init(&w, NULL, NULL);
    lahja_endpoint_options_t opts = watch_opts(&w);
    opts.handshake_timeout_ms = GUARD_MS;
    lahja_endpoint_t *ep = w.ep = bus_serve(dir, "a", &opts);
    lahja_conn_config_t b = bus_cfg(dir, "b"), self = bus_cfg(dir, "a");
    lahja_conn_config_t twice[2] = { b, b };

    EXPECT_EQ(lahja_connect_nowait(NULL, &b, 1), -EINVAL);
    EXPECT_EQ(lahja_connect_nowait(ep, NULL, 1), -EINVAL);
    EXPECT_EQ(lahja_connect_nowait(ep, &self, 1), LAHJA_ECONNREJECTED);
    EXPECT_EQ(lahja_connect_nowait(ep, twice, 2), LAHJA_ECONNREJECTED);
    EXPECT_EQ(lahja_connect_nowait(ep, NULL, 0), 0);
    EXPECT_EQ(info_of(ep, "b").state, LAHJA_PEER_UNKNOWN); /* nothing was started */

    /* Success: the socket appears after the call. */
    struct later_args later = { dir, "b" };
    bus_child_t c = bus_fork(child_serve_later, &later);
    EXPECT_EQ(lahja_connect_nowait(ep, &b, 1), 0);
    EXPECT_EQ(info_of(ep, "b").state, LAHJA_PEER_CONNECTING);
    fifo_release(&c, 1, dir, "serve");
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "b", lahja_deadline_in(GUARD_MS)), 0);
    lahja_peer_info_t info = info_of(ep, "b");
    EXPECT_EQ(info.state, LAHJA_PEER_CONNECTED);
    EXPECT_EQ(info.kept, 0);
    EXPECT_EQ(info.outbound, 1);
    EXPECT_EQ(lahja_connect_nowait(ep, &b, 1), 0); /* connected: nothing to do */
    bus_ask(ep, "Echo", "EchoAnswer", "nowait", "b", "nowait");
    bus_peer_done(ep, "b");
    EXPECT_CHILD_OK(&c);
    bus_wait_disconnected(ep, "b");
    EXPECT_EQ(info_of(ep, "b").state, LAHJA_PEER_UNKNOWN); /* not kept */
    EXPECT_EQ(w.warnings, 0);
    bus_close(ep);

    /* Failures, with a short handshake timeout. */
    opts.handshake_timeout_ms = 200;
    ep = w.ep = bus_client("c", &opts);
    lahja_conn_config_t ghost = bus_cfg(dir, "ghost"), mute = bus_cfg(dir, "mute"), imposter;
    int listener = mute_listener(mute.path);
    EXPECT_EQ(lahja_conn_config_from_path(&imposter, "imposter", self.path), 0);

    int before = w.warnings;
    EXPECT_EQ(lahja_connect_nowait(ep, &ghost, 1), 0);
    EXPECT_EQ(info_of(ep, "ghost").state, LAHJA_PEER_CONNECTING);
    wait_warning(&w, before, "no socket file there: nobody serves that name");
    info = info_of(ep, "ghost");
    EXPECT_EQ(info.state, LAHJA_PEER_FAILED);
    EXPECT_EQ(info.last_error, -ETIMEDOUT);

    before = w.warnings;
    EXPECT_EQ(lahja_connect_nowait(ep, &mute, 1), 0);
    /* The attempt's own handshake timer and the call's deadline end
     * together: either may say it. */
    wait_warning(&w, before, "handshake");
    info = info_of(ep, "mute");
    EXPECT_EQ(info.state, LAHJA_PEER_FAILED);
    EXPECT_EQ(info.last_error, -ETIMEDOUT);

    /* "a" serves at that path, and its HELLO gives another name. */
    lahja_endpoint_t *a = bus_serve(dir, "a", NULL);
    before = w.warnings;
    EXPECT_EQ(lahja_connect_nowait(ep, &imposter, 1), 0);
    watch_until(&w, &w.warnings, before + 1);
    info = info_of(ep, "imposter");
    EXPECT_EQ(info.state, LAHJA_PEER_FAILED);
    EXPECT_EQ(info.last_error, LAHJA_ECONNREJECTED);

    /* A failed name is tried again; the others stay failed. */
    EXPECT_EQ(lahja_connect_nowait(ep, &ghost, 1), 0);
    EXPECT_EQ(info_of(ep, "ghost").state, LAHJA_PEER_CONNECTING);
    EXPECT_EQ(info_of(ep, "mute").state, LAHJA_PEER_FAILED);
    bus_close(ep); /* with the attempt under way */
    bus_close(a);
    close(listener);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(connect_nowait)

/* ------------------------------------------------ path, errors, threads */

struct foreign {
    lahja_endpoint_t *ep;
    lahja_conn_config_t cfg;
    int keep_rc, stop_rc, nowait_rc, info_rc;
    lahja_peer_info_t info;
    const char *path;
};

static void *foreign_calls(void *arg)
{
    struct foreign *f = arg;
    f->keep_rc = lahja_keep_connected(f->ep, &f->cfg, NULL);
    f->stop_rc = lahja_stop_keeping(f->ep, f->cfg.name);
    f->nowait_rc = lahja_connect_nowait(f->ep, &f->cfg, 1);
    f->info_rc = lahja_peer_info(f->ep, f->cfg.name, &f->info);
    f->path = lahja_endpoint_path(f->ep);
    return NULL;
}

/*
 * lahja_endpoint_path: the serving path while it serves (also read from
 * another thread), "" otherwise.  The argument and lifecycle errors of
 * the new calls, keeping a name twice, and calls from another thread
 * (LAHJA_EWRONGTHREAD, the peer info untouched).
 */
static int main_path_errors_and_threads(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_conn_config_t srv = bus_cfg(dir, "srv"), peer = bus_cfg(dir, "peer");
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
    EXPECT_TRUE(strcmp(lahja_endpoint_path(ep), "") == 0);
    EXPECT_TRUE(strcmp(lahja_endpoint_path(NULL), "") == 0);
    EXPECT_EQ(lahja_keep_connected(ep, &peer, NULL), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_connect_nowait(ep, &peer, 1), LAHJA_ELIFECYCLE);
    EXPECT_EQ(lahja_stop_keeping(ep, "peer"), LAHJA_ELIFECYCLE);
    EXPECT_EQ(info_of(ep, "peer").state, LAHJA_PEER_UNKNOWN);

    EXPECT_EQ(lahja_endpoint_start(ep, &srv), 0);
    EXPECT_TRUE(strcmp(lahja_endpoint_path(ep), srv.path) == 0);
    lahja_conn_config_t bad = peer;
    bad.path[0] = '\0';
    EXPECT_EQ(lahja_keep_connected(ep, &bad, NULL), -EINVAL);
    bad = peer;
    strcpy(bad.name, "no/slash");
    EXPECT_EQ(lahja_keep_connected(ep, &bad, NULL), -EINVAL);
    EXPECT_EQ(lahja_connect_nowait(ep, &bad, 1), -EINVAL);
    EXPECT_EQ(lahja_keep_connected(ep, NULL, NULL), -EINVAL);
    EXPECT_EQ(lahja_keep_connected(NULL, &peer, NULL), -EINVAL);
    EXPECT_EQ(lahja_keep_connected(ep, &srv, NULL), LAHJA_ECONNREJECTED);
    EXPECT_EQ(lahja_stop_keeping(ep, NULL), -EINVAL);
    EXPECT_EQ(lahja_stop_keeping(ep, "peer"), -ENOENT);
    lahja_peer_info_t info;
    EXPECT_EQ(lahja_peer_info(ep, NULL, &info), -EINVAL);
    EXPECT_EQ(lahja_peer_info(ep, "peer", NULL), -EINVAL);
    EXPECT_EQ(info_of(ep, "srv").state, LAHJA_PEER_CONNECTED); /* itself */

    /* Kept twice: the second replaces the options; once forgotten, a
     * background connect may go ahead for it. */
    const lahja_reconnect_options_t slow = { .min_ms = 60000, .max_ms = 60000 };
    EXPECT_EQ(lahja_keep_connected(ep, &peer, &slow), 0);
    EXPECT_EQ(lahja_keep_connected(ep, &peer, &quick), 0);
    info = info_of(ep, "peer");
    EXPECT_EQ(info.kept, 1);
    EXPECT_EQ(info.state, LAHJA_PEER_RETRYING);
    EXPECT_EQ(info.failures, 1);
    EXPECT_EQ(info.retry_ms >= 45000, 1); /* the wait chosen before stays */
    EXPECT_EQ(lahja_connect_nowait(ep, &peer, 1), 0); /* kept: nothing to do */
    EXPECT_EQ(info_of(ep, "peer").state, LAHJA_PEER_RETRYING);

    struct foreign f = { .ep = ep, .cfg = peer };
    f.keep_rc = f.stop_rc = f.nowait_rc = f.info_rc = 12345;
    memset(&f.info, 0x5a, sizeof f.info);
    lahja_peer_info_t untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    pthread_t th;
    EXPECT_EQ(pthread_create(&th, NULL, foreign_calls, &f), 0);
    EXPECT_EQ(pthread_join(th, NULL), 0);
    EXPECT_EQ(f.keep_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.stop_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.nowait_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(f.info_rc, LAHJA_EWRONGTHREAD);
    EXPECT_EQ(memcmp(&f.info, &untouched, sizeof untouched), 0);
    EXPECT_TRUE(strcmp(f.path, srv.path) == 0);
    EXPECT_EQ(info_of(ep, "peer").kept, 1); /* the refused stop changed nothing */

    EXPECT_EQ(lahja_stop_keeping(ep, "peer"), 0);
    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    EXPECT_TRUE(strcmp(lahja_endpoint_path(ep), "") == 0);
    EXPECT_EQ(lahja_keep_connected(ep, &peer, NULL), LAHJA_ELIFECYCLE);
    EXPECT_EQ(info_of(ep, "peer").state, LAHJA_PEER_UNKNOWN);
    EXPECT_EQ(lahja_endpoint_free(ep), 0);

    ep = bus_client("client", NULL);
    EXPECT_TRUE(strcmp(lahja_endpoint_path(ep), "") == 0);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(path_errors_and_threads)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kept_peer_killed_and_restarted),
        cmocka_unit_test(test_kept_name_connects_when_socket_appears),
        cmocka_unit_test(test_mutual_keep_one_connection_nothing_lost),
        cmocka_unit_test(test_backoff_grows_and_stops_when_no_longer_kept),
        cmocka_unit_test(test_bounded_attempts_and_stop),
        cmocka_unit_test(test_connect_nowait),
        cmocka_unit_test(test_path_errors_and_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
