/*
 * Bounds (B31): what a peer can make an endpoint hold, and for how long.
 * Raw socket clients claim large frames before the handshake, keep
 * connections in their handshake, open more connections than allowed,
 * announce more types than allowed and leave frames half sent; each is
 * refused with a logged reason, at once or within its deadline, while a
 * real peer in another process keeps being answered.
 *
 * This executable is linked with --wrap for malloc, calloc, realloc and
 * free (see CMakeLists.txt): the wrappers record the largest single
 * request and the bytes the endpoint's process holds, so that a test can
 * check what a peer's claims cost.
 */
#define _GNU_SOURCE
#include <malloc.h>

#include "support_bus.h"

/* How long a raw client waits to be hung up on when it must be, at once
 * or after a short deadline: far below the handshake timeout the tests
 * set, so that only the bound under test can explain the hang-up. */
#define HANGUP_MS (RUNNING_ON_VALGRIND ? GUARD_MS : 3000)
#define HANDSHAKE_MS 60000

/* ------------------------------------------------- allocation tracking */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

/* Bytes held, counted from what was allocated and freed through the
 * wrappers (what the library and the tests allocate). */
static long long live_bytes;

static void note_alloc(size_t n)
{
    bus_alloc_tracked = 1;
    if (n > bus_alloc_peak)
        bus_alloc_peak = n;
}

void *__wrap_malloc(size_t n)
{
    note_alloc(n);
    void *p = __real_malloc(n);
    if (p != NULL)
        live_bytes += (long long)malloc_usable_size(p);
    return p;
}

void *__wrap_calloc(size_t k, size_t n)
{
    note_alloc(k * n);
    void *p = __real_calloc(k, n);
    if (p != NULL)
        live_bytes += (long long)malloc_usable_size(p);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    note_alloc(n);
    long long before = p != NULL ? (long long)malloc_usable_size(p) : 0;
    void *q = __real_realloc(p, n);
    if (q != NULL)
        live_bytes += (long long)malloc_usable_size(q) - before;
    else if (n == 0)
        live_bytes -= before;
    return q;
}

void __wrap_free(void *p)
{
    if (p != NULL)
        live_bytes -= (long long)malloc_usable_size(p);
    __real_free(p);
}

/* --------------------------------------------------------------- logs */

/* A log that wakes whoever waits for a line (log_wait). */
struct wlog {
    struct bus_log log;
    lahja_cond_t changed;
};

static void wlog_fn(void *user, lahja_log_level_t level, const char *endpoint,
                    const char *message)
{
    struct wlog *w = user;
    bus_log_fn(&w->log, level, endpoint, message);
    lahja_cond_broadcast(&w->changed);
}

static lahja_endpoint_options_t wlog_opts(struct wlog *w)
{
    memset(w, 0, sizeof *w);
    lahja_cond_init(&w->changed);
    lahja_endpoint_options_t o = { .log = wlog_fn, .log_user = w,
                                   .handshake_timeout_ms = HANDSHAKE_MS };
    return o;
}

/* Waits until `n` lines contain a, b (and c), from line `from` on. */
static int wlog_count_from(const struct wlog *w, int from, const char *a, const char *b,
                           const char *c)
{
    int n = 0;
    for (int i = from; i < w->log.n; i++) {
        const char *l = w->log.line[i];
        n += strstr(l, a) && (b == NULL || strstr(l, b)) && (c == NULL || strstr(l, c));
    }
    return n;
}

static void wlog_wait(struct wlog *w, int from, int n, const char *a, const char *b)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (wlog_count_from(w, from, a, b, NULL) < n)
        if (lahja_cond_wait(&w->changed, deadline) != 0)
            break;
    if (wlog_count_from(w, from, a, b, NULL) < n) {
        fprintf(stderr, "expected %d log lines with \"%s\"%s%s%s:\n", n, a, b ? " and \"" : "",
                b ? b : "", b ? "\"" : "");
        bus_log_dump(&w->log);
    }
    EXPECT_TRUE(wlog_count_from(w, from, a, b, NULL) >= n);
}

/* ------------------------------------------------------------ raw side */

/* Gives up reading after ms. */
static void raw_timeout(int fd, int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* A connection to srv, waiting until the endpoint has accepted it (its
 * HELLO, the first frame it sends, has come). */
static int raw_accepted(const char *path)
{
    int fd = raw_connect(path);
    EXPECT_TRUE(fd >= 0);
    uint8_t hello[RAW_HDR + 15 + 3];
    EXPECT_EQ(recv(fd, hello, sizeof hello, MSG_WAITALL), (ssize_t)sizeof hello);
    raw_expect_hello(hello, sizeof hello, "srv");
    return fd;
}

/* Reads frames until one of `kind` has come; its body is dropped. */
static void raw_read_until(int fd, uint8_t kind)
{
    for (;;) {
        uint8_t h[RAW_HDR];
        EXPECT_EQ(recv(fd, h, sizeof h, MSG_WAITALL), (ssize_t)sizeof h);
        uint32_t len = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                       (uint32_t)h[3] << 24;
        while (len > 0) {
            uint8_t buf[4096];
            size_t n = len < sizeof buf ? len : sizeof buf;
            EXPECT_EQ(recv(fd, buf, n, MSG_WAITALL), (ssize_t)n);
            len -= (uint32_t)n;
        }
        if (h[4] == kind)
            return;
    }
}

/* A connection through its handshake as `name`: the endpoint has read
 * our HELLO once its SUBS comes. */
static int raw_handshaken(const char *path, const char *name)
{
    int fd = raw_connect(path);
    EXPECT_TRUE(fd >= 0);
    uint8_t buf[512], *p = raw_hello(buf, name);
    p = raw_subs(p, 1, NULL, 0);
    raw_send(fd, buf, (size_t)(p - buf));
    raw_read_until(fd, RAW_HELLO);
    raw_read_until(fd, RAW_SUBS);
    return fd;
}

/* Must be hung up on within HANGUP_MS; returns how long it took. */
static int64_t raw_expect_hangup(int fd, const char *what)
{
    int64_t t0 = bus_ms();
    raw_timeout(fd, HANGUP_MS);
    ssize_t n = raw_read_to_eof(fd, NULL, 0);
    int64_t ms = bus_ms() - t0;
    if (n < 0)
        fprintf(stderr, "%s: still connected after %lld ms (%s)\n", what, (long long)ms,
                strerror((int)-n));
    EXPECT_TRUE(n >= 0);
    return ms;
}

/* Still connected: what the endpoint sent so far is read, and no
 * hang-up follows it. */
static void raw_expect_open(int fd, const char *what)
{
    uint8_t b[256];
    ssize_t n;
    while ((n = recv(fd, b, sizeof b, MSG_DONTWAIT)) > 0)
        ;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
        fprintf(stderr, "%s: hung up on (%s)\n", what, n == 0 ? "EOF" : strerror(errno));
    EXPECT_TRUE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

/* The first bytes of a HELLO that claims a body of `body_len`. */
static uint8_t *raw_hello_claiming(uint8_t *p, uint32_t body_len)
{
    p = raw_header(p, body_len, RAW_HELLO, 0);
    memcpy(p, "LAHJA", 5);
    p += 5;
    *p++ = 1;
    return p;
}

/* ------------------------------------------------------- the endpoint */

/* srv with the given options, and a real peer, "peer", connected from
 * another process, answering Echo. */
struct fixture {
    char dir[BUS_DIR_MAX];
    lahja_conn_config_t cfg;
    lahja_endpoint_t *ep;
    bus_child_t peer;
    struct bus_peer_args peer_args;
};

static void fixture_start(struct fixture *fx, const lahja_endpoint_options_t *opts)
{
    bus_dir_make(fx->dir);
    fx->cfg = bus_cfg(fx->dir, "srv");
    fx->ep = bus_serve(fx->dir, "srv", opts);
    fx->peer_args = (struct bus_peer_args){ fx->dir, "peer", "srv" };
    fx->peer = bus_fork(bus_peer_main, &fx->peer_args);
    bus_ask(fx->ep, "Echo", "EchoAnswer", "before", "peer", "before");
}

static void fixture_end(struct fixture *fx)
{
    EXPECT_EQ(lahja_is_connected_to(fx->ep, "peer"), 1);
    bus_ask(fx->ep, "Echo", "EchoAnswer", "after", "peer", "after");
    bus_peer_done(fx->ep, "peer");
    EXPECT_CHILD_OK(&fx->peer);
    bus_close(fx->ep);
    bus_dir_remove(fx->dir);
}

/* ----------------------------------------- B31: before the handshake */

#define CLAIMERS 8
#define CLAIM (64u << 20)

static int child_claimers(void *arg)
{
    const char *path = arg;
    int fds[CLAIMERS];
    static uint8_t body[60 * 1024];
    memset(body, 'x', sizeof body);
    for (int i = 0; i < CLAIMERS; i++) {
        fds[i] = raw_connect(path);
        EXPECT_TRUE(fds[i] >= 0);
        uint8_t buf[64], *p = raw_hello_claiming(buf, CLAIM);
        raw_send(fds[i], buf, (size_t)(p - buf));
        raw_send(fds[i], body, sizeof body); /* the start of its body */
    }
    for (int i = 0; i < CLAIMERS; i++) {
        raw_expect_hangup(fds[i], "a HELLO claiming 64 MiB");
        close(fds[i]);
    }
    return 0;
}

/*
 * B31, B26: raw clients each send a HELLO header claiming 64 MiB and
 * start its body.  Each is dropped as soon as its header is in, with the
 * reason logged ("incoming connection dropped", the frame too long), and
 * the endpoint never allocates anything near the claim.
 */
static int main_hello_claiming_64mib_dropped_at_header(void *arg)
{
    (void)arg;
    struct wlog w;
    lahja_endpoint_options_t opts = wlog_opts(&w);
    struct fixture fx;
    fixture_start(&fx, &opts);
    int from = w.log.n;
    bus_alloc_peak = 0;
    bus_child_t c = bus_fork_plain(child_claimers, fx.cfg.path);
    int status = bus_child_wait(&c);
    size_t peak = bus_alloc_peak;
    if (peak > 256 * 1024)
        fprintf(stderr, "allocated %zu bytes at once for clients claiming %u\n", peak, CLAIM);
    EXPECT_TRUE(bus_alloc_tracked);
    EXPECT_TRUE(peak <= 256 * 1024);
    EXPECT_EXIT_OK(status, "the raw clients");
    wlog_wait(&w, from, CLAIMERS, "incoming connection dropped:", lahja_strerror(-EMSGSIZE));
    fixture_end(&fx);
    return 0;
}
BUS_MAIN_TEST(hello_claiming_64mib_dropped_at_header)

#define INCOMPLETE 16
#define INCOMPLETE_COST (16 * 1024)

/* Opens INCOMPLETE connections that each send a part of a HELLO (with
 * the body of a real one) and stay; tells the test, and waits for its
 * end (the test kills it, closing them). */
static int child_incomplete(void *arg)
{
    const char *path = arg;
    for (int i = 0; i < INCOMPLETE; i++) {
        int fd = raw_accepted(path);
        uint8_t buf[64], *p = raw_hello_claiming(buf, 15 + 3);
        raw_send(fd, buf, (size_t)(p - buf));
    }
    bus_child_signal();
    pause(); /* the test kills us; the alarm bounds it */
    return 0;
}

/*
 * B31: connections in their handshake cost the endpoint a few KiB each,
 * whatever their HELLO claims: INCOMPLETE of them, each having sent a
 * part of its HELLO, add at most INCOMPLETE_COST bytes each to what the
 * endpoint's process holds, and it holds what it held before once they
 * are gone.
 */
static int main_incomplete_connections_cost_little(void *arg)
{
    (void)arg;
    struct wlog w;
    lahja_endpoint_options_t opts = wlog_opts(&w);
    struct fixture fx;
    fixture_start(&fx, &opts);
    bus_ask(fx.ep, "Echo", "EchoAnswer", "warm", "peer", "warm");
    long long before = live_bytes;
    int from = w.log.n;
    bus_child_t c = bus_fork_plain(child_incomplete, fx.cfg.path);
    EXPECT_EQ(bus_child_await_signal(&c), 0);
    /* Two round trips: the loop has read what the raw clients sent
     * before they told us (their sockets were readable meanwhile). */
    bus_ask(fx.ep, "Echo", "EchoAnswer", "during", "peer", "during");
    bus_ask(fx.ep, "Echo", "EchoAnswer", "during", "peer", "during");
    long long during = live_bytes;
    long long each = (during - before) / INCOMPLETE;
    if (getenv("LAHJA_TEST_VERBOSE") != NULL || each > INCOMPLETE_COST)
        fprintf(stderr, "%d incomplete connections: %lld bytes more, %lld each\n", INCOMPLETE,
                during - before, each);
    EXPECT_TRUE(each <= INCOMPLETE_COST);

    EXPECT_EQ(kill(c.pid, SIGKILL), 0);
    int status = bus_child_wait(&c);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    wlog_wait(&w, from, INCOMPLETE, "incoming connection dropped:", "closed by peer");
    bus_ask(fx.ep, "Echo", "EchoAnswer", "after", "peer", "after");
    long long after = live_bytes;
    if (after - before > INCOMPLETE_COST)
        fprintf(stderr, "still %lld bytes more once they are gone\n", after - before);
    EXPECT_TRUE(after - before <= INCOMPLETE_COST);
    fixture_end(&fx);
    return 0;
}
BUS_MAIN_TEST(incomplete_connections_cost_little)

#define MAX_INCOMPLETE 4

/* MAX_INCOMPLETE connections in their handshake, then as many more,
 * each closed at once; the first ones stay.  Then waits to be killed. */
static int child_over_incomplete(void *arg)
{
    const char *path = arg;
    int kept[MAX_INCOMPLETE];
    for (int i = 0; i < MAX_INCOMPLETE; i++)
        kept[i] = raw_accepted(path);
    for (int i = 0; i < MAX_INCOMPLETE; i++) {
        int fd = raw_connect(path);
        EXPECT_TRUE(fd >= 0);
        raw_expect_hangup(fd, "a connection over max_incomplete");
        close(fd);
    }
    for (int i = 0; i < MAX_INCOMPLETE; i++)
        raw_expect_open(kept[i], "a connection within max_incomplete");
    bus_child_signal();
    pause();
    return 0;
}

/*
 * B31: with max_incomplete 4, four connections in their handshake make
 * the endpoint close the next ones as they come, each with a logged
 * reason, and keep the four; once those are gone, a real peer connects
 * and is answered.
 */
static int main_max_incomplete_refuses_more(void *arg)
{
    (void)arg;
    struct wlog w;
    lahja_endpoint_options_t opts = wlog_opts(&w);
    opts.max_incomplete = MAX_INCOMPLETE;
    struct fixture fx;
    fixture_start(&fx, &opts);
    int from = w.log.n;
    bus_child_t c = bus_fork_plain(child_over_incomplete, fx.cfg.path);
    EXPECT_EQ(bus_child_await_signal(&c), 0);
    wlog_wait(&w, from, MAX_INCOMPLETE, "max_incomplete", NULL);
    EXPECT_EQ(wlog_count_from(&w, from, "max_incomplete", NULL, NULL), MAX_INCOMPLETE);

    EXPECT_EQ(kill(c.pid, SIGKILL), 0);
    int status = bus_child_wait(&c);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    wlog_wait(&w, from, MAX_INCOMPLETE, "incoming connection dropped:", "closed by peer");
    struct bus_peer_args late_args = { fx.dir, "late", "srv" };
    bus_child_t late = bus_fork(bus_peer_main, &late_args);
    bus_ask(fx.ep, "Echo", "EchoAnswer", "late", "late", "late");
    bus_peer_done(fx.ep, "late");
    EXPECT_CHILD_OK(&late);
    fixture_end(&fx);
    return 0;
}
BUS_MAIN_TEST(max_incomplete_refuses_more)

#define MAX_CONNECTIONS 3

/* With "peer" connected: two more through their handshake, then one
 * over max_connections, closed at once; then it closes the two. */
static int child_over_connections(void *arg)
{
    const char *path = arg;
    int a = raw_handshaken(path, "raw1");
    int b = raw_handshaken(path, "raw2");
    int fd = raw_connect(path);
    EXPECT_TRUE(fd >= 0);
    raw_expect_hangup(fd, "a connection over max_connections");
    close(fd);
    raw_expect_open(a, "raw1");
    raw_expect_open(b, "raw2");
    close(a);
    close(b);
    return 0;
}

/*
 * B31: with max_connections 3 and three connections open (the peer and
 * two raw clients through their handshake), the next one is closed at
 * once with a logged reason; once the raw clients are gone, another
 * real peer connects and is answered.
 */
static int main_max_connections_refuses_more(void *arg)
{
    (void)arg;
    struct wlog w;
    lahja_endpoint_options_t opts = wlog_opts(&w);
    opts.max_connections = MAX_CONNECTIONS;
    struct fixture fx;
    fixture_start(&fx, &opts);
    int from = w.log.n;
    bus_child_t c = bus_fork_plain(child_over_connections, fx.cfg.path);
    EXPECT_CHILD_OK(&c);
    EXPECT_EQ(wlog_count_from(&w, from, "max_connections", NULL, NULL), 1);
    bus_wait_disconnected(fx.ep, "raw1");
    bus_wait_disconnected(fx.ep, "raw2");
    struct bus_peer_args late_args = { fx.dir, "late", "srv" };
    bus_child_t late = bus_fork(bus_peer_main, &late_args);
    bus_ask(fx.ep, "Echo", "EchoAnswer", "late", "late", "late");
    bus_peer_done(fx.ep, "late");
    EXPECT_CHILD_OK(&late);
    fixture_end(&fx);
    return 0;
}
BUS_MAIN_TEST(max_connections_refuses_more)

/* ------------------------------------------- B31: a peer's SUBS */

#define HUGE_TYPES 1000000u
#define TYPE_LEN 8

/* Through the handshake as "raw", then a SUBS announcing HUGE_TYPES
 * types, sent as it would be; must be hung up on. */
static int child_huge_subs(void *arg)
{
    const char *path = arg;
    int fd = raw_connect(path);
    EXPECT_TRUE(fd >= 0);
    size_t body = 8 + (size_t)HUGE_TYPES * (1 + TYPE_LEN);
    uint8_t *buf = malloc(RAW_HDR + body + 512);
    EXPECT_TRUE(buf != NULL);
    uint8_t *p = raw_hello(buf, "raw");
    p = raw_header(p, (uint32_t)body, RAW_SUBS, 0);
    p = raw_u32(p, 1);
    p = raw_u32(p, HUGE_TYPES);
    for (uint32_t i = 0; i < HUGE_TYPES; i++) {
        char name[TYPE_LEN + 1];
        snprintf(name, sizeof name, "T%07u", i);
        *p++ = TYPE_LEN;
        memcpy(p, name, TYPE_LEN);
        p += TYPE_LEN;
    }
    raw_send(fd, buf, (size_t)(p - buf)); /* stops where it is hung up on */
    free(buf);
    raw_expect_hangup(fd, "a SUBS of a million types");
    close(fd);
    return 0;
}

struct asker {
    lahja_endpoint_t *ep;
    int stop;
    int asked;
    int64_t slowest_ms;
    int rc;
};

/* Asks the peer, again and again, until told to stop. */
static int task_asker(void *arg)
{
    struct asker *a = arg;
    while (!a->stop) {
        lahja_event_t *q = NULL, *r = NULL;
        EXPECT_EQ(lahja_request_new("Echo", "EchoAnswer", "q", 1, &q), 0);
        lahja_broadcast_config_t cfg = { .filter_endpoint = "peer" };
        int64_t t0 = bus_ms();
        int rc = lahja_request(a->ep, q, &cfg, lahja_deadline_in(GUARD_MS), &r);
        int64_t ms = bus_ms() - t0;
        lahja_event_unref(r);
        lahja_event_unref(q);
        if (rc != 0) {
            a->rc = rc;
            return 0;
        }
        a->asked++;
        if (ms > a->slowest_ms)
            a->slowest_ms = ms;
    }
    return 0;
}

/*
 * B31: a raw client through its handshake announces a million types in
 * one SUBS, far over max_peer_types (the default).  It is dropped, with
 * the reason logged, as soon as the count arrives; a peer asked again
 * and again meanwhile answers each time within a generous deadline; and
 * the endpoint's memory is back where it was once the client is gone.
 */
static int main_huge_subs_dropped_at_count(void *arg)
{
    (void)arg;
    struct wlog w;
    lahja_endpoint_options_t opts = wlog_opts(&w);
    struct fixture fx;
    fixture_start(&fx, &opts);
    bus_ask(fx.ep, "Echo", "EchoAnswer", "warm", "peer", "warm");
    long long before = live_bytes;
    int from = w.log.n;

    struct asker a = { .ep = fx.ep };
    lahja_task_t *t = NULL;
    EXPECT_EQ(lahja_spawn(lahja_rt_current(), task_asker, &a, NULL, &t), 0);
    bus_child_t c = bus_fork_plain(child_huge_subs, fx.cfg.path);
    EXPECT_CHILD_OK(&c);
    wlog_wait(&w, from, 1, "connection from raw:", NULL);
    bus_wait_disconnected(fx.ep, "raw");
    a.stop = 1;
    int result = 0;
    EXPECT_EQ(lahja_task_join(t, lahja_deadline_in(GUARD_MS), &result), 0);
    EXPECT_EQ(a.rc, 0);
    EXPECT_TRUE(a.asked > 0);
    int64_t limit = RUNNING_ON_VALGRIND ? GUARD_MS : 2000;
    if (a.slowest_ms > limit)
        fprintf(stderr, "the peer's slowest answer of %d took %lld ms\n", a.asked,
                (long long)a.slowest_ms);
    EXPECT_TRUE(a.slowest_ms <= limit);

    long long after = live_bytes;
    if (after - before > 1024 * 1024)
        fprintf(stderr, "still %lld bytes more once the client is gone\n", after - before);
    EXPECT_TRUE(after - before <= 1024 * 1024);
    fixture_end(&fx);
    return 0;
}
BUS_MAIN_TEST(huge_subs_dropped_at_count)

/* ------------------------------------------- B31: frames half sent */

#define FRAME_TIMEOUT_MS 200
#define STEADY_LEN (1536u * 1024)
#define STEADY_STEP (64u * 1024)
#define STEADY_PAUSE_US 40000

/* Through the handshake as "half", half of an EVENT frame, then nothing;
 * must be hung up on after the frame timeout. */
static int child_half_frame(void *arg)
{
    const char *path = arg;
    int fd = raw_connect(path);
    EXPECT_TRUE(fd >= 0);
    uint8_t buf[512], *p = raw_hello(buf, "half");
    p = raw_type(p, 1, "T");
    p = raw_header(p, 4 + 100, RAW_EVENT, 0);
    p = raw_u32(p, 1);
    memset(p, 'x', 50);
    p += 50;
    raw_send(fd, buf, (size_t)(p - buf));
    int64_t ms = raw_expect_hangup(fd, "half a frame");
    if (ms < FRAME_TIMEOUT_MS / 2)
        fprintf(stderr, "hung up on after %lld ms, before the frame timeout\n", (long long)ms);
    EXPECT_TRUE(ms >= FRAME_TIMEOUT_MS / 2);
    close(fd);
    return 0;
}

/* Through the handshake as "steady", one EVENT of STEADY_LEN bytes sent
 * STEADY_STEP at a time, a pause after each: the whole frame takes far
 * longer than the frame timeout, each step far less.  Then closes. */
static int child_steady_frame(void *arg)
{
    const char *path = arg;
    int fd = raw_connect(path);
    EXPECT_TRUE(fd >= 0);
    uint8_t head[512], *p = raw_hello(head, "steady");
    p = raw_type(p, 1, "T");
    p = raw_header(p, 4 + STEADY_LEN, RAW_EVENT, 0);
    p = raw_u32(p, 1);
    raw_send(fd, head, (size_t)(p - head));
    static uint8_t step[STEADY_STEP];
    for (uint32_t off = 0; off < STEADY_LEN; off += STEADY_STEP) {
        for (uint32_t i = 0; i < STEADY_STEP; i++)
            step[i] = (uint8_t)((off + i) % 251);
        usleep(STEADY_PAUSE_US); /* the pace of a slow sender */
        EXPECT_EQ(send(fd, step, STEADY_STEP, MSG_NOSIGNAL), (ssize_t)STEADY_STEP);
    }
    close(fd);
    return 0;
}

struct steady_seen {
    int n;
    int intact;
    lahja_cond_t changed;
};

static int on_steady(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct steady_seen *s = user;
    size_t len = 0;
    const uint8_t *p = lahja_event_payload(ev, &len);
    int intact = len == STEADY_LEN;
    for (size_t i = 0; intact && i < len; i++)
        intact = p[i] == (uint8_t)(i % 251);
    s->intact += intact;
    s->n++;
    lahja_cond_broadcast(&s->changed);
    return 0;
}

/*
 * B31: with frame_timeout_ms 200, a raw client through its handshake
 * that sends half a frame and stops is dropped once the timeout has
 * passed, with the reason logged; another that sends a 1.5 MiB frame
 * steadily, 64 KiB every 40 ms, is not: its event arrives intact.
 */
static int main_partial_frame_dropped_after_frame_timeout(void *arg)
{
    (void)arg;
    struct wlog w;
    lahja_endpoint_options_t opts = wlog_opts(&w);
    opts.frame_timeout_ms = FRAME_TIMEOUT_MS;
    struct fixture fx;
    fixture_start(&fx, &opts);
    struct steady_seen seen = { 0 };
    lahja_cond_init(&seen.changed);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(fx.ep, "T", on_steady, &seen, &s), 0);
    int from = w.log.n;

    bus_child_t half = bus_fork_plain(child_half_frame, fx.cfg.path);
    EXPECT_CHILD_OK(&half);
    char why[64];
    snprintf(why, sizeof why, "not completed in %d ms", FRAME_TIMEOUT_MS);
    wlog_wait(&w, from, 1, "connection from half:", why);

    bus_child_t steady = bus_fork_plain(child_steady_frame, fx.cfg.path);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (seen.n < 1 && lahja_cond_wait(&seen.changed, deadline) == 0)
        ;
    EXPECT_EQ(seen.n, 1);
    EXPECT_EQ(seen.intact, 1);
    EXPECT_CHILD_OK(&steady);
    bus_wait_disconnected(fx.ep, "steady");
    EXPECT_EQ(wlog_count_from(&w, from, "connection from steady:", "not completed", NULL), 0);
    lahja_subscription_cancel(s);
    fixture_end(&fx);
    return 0;
}
BUS_MAIN_TEST(partial_frame_dropped_after_frame_timeout)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_claiming_64mib_dropped_at_header),
        cmocka_unit_test(test_incomplete_connections_cost_little),
        cmocka_unit_test(test_max_incomplete_refuses_more),
        cmocka_unit_test(test_max_connections_refuses_more),
        cmocka_unit_test(test_huge_subs_dropped_at_count),
        cmocka_unit_test(test_partial_frame_dropped_after_frame_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
