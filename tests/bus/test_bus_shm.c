/*
 * The shared-memory transport (src/bus/shm.c), between real processes:
 * two endpoints of one host agree on it and lose nothing through it,
 * whatever the sizes (a ring smaller than an event, wrapping, a writer
 * waiting for room); one side without it keeps the socket; a peer killed
 * in the middle of a stream leaves no mapping behind; and a peer that
 * hands over a bad ring, or scribbles on a good one, is dropped with its
 * reason while the endpoint and its other peers go on.
 */
#define _GNU_SOURCE
#include "support_bus.h"

#include "bus/endpoint.h" /* white-box: the pool's blocks */

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#define SHM_LINE "writes to us through its ring"
#define RING_HDR 4096

/* Lines of /proc/self/maps that map a ring. */
static int ring_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    EXPECT_TRUE(f != NULL);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, "lahja-ring") != NULL;
    fclose(f);
    return n;
}

/* ------------------------------------------------- a stream through rings */

struct streamer {
    const char *dir;
    size_t ring;    /* the child's shm_ring (SIZE_MAX: none) */
    int n;          /* events to send; 0: until killed */
};

/* Only small events (those written into the ring in place), from now on. */
static int small_only;

/* Event i's payload: i, then bytes that depend on i, of a size that
 * cycles from 8 bytes to past the smallest ring (or, small_only, to
 * 2 KiB, in sizes that make frames end anywhere in the ring). */
static size_t payload_of(uint32_t i, uint8_t *buf)
{
    static const size_t sizes[] = { 8, 64, 1000, 4096, 65536 + 77, 300000, 17 };
    static const size_t small[] = { 8, 64, 1000, 17, 2048, 333, 9 };
    size_t len = small_only ? small[i % (sizeof small / sizeof small[0])]
                            : sizes[i % (sizeof sizes / sizeof sizes[0])];
    memcpy(buf, &i, 4);
    for (size_t k = 4; k < len; k++)
        buf[k] = (uint8_t)(i * 31 + k);
    return len;
}

static int main_streamer(void *arg)
{
    const struct streamer *s = arg;
    struct bus_log log = { 0 };
    lahja_endpoint_options_t o = bus_opts(&log);
    o.shm_ring = s->ring;
    o.max_payload = 1 << 20;
    lahja_endpoint_t *ep = bus_client("streamer", &o);
    EXPECT_EQ(bus_connect(ep, s->dir, "sink"), 0);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "sink", "Data", deadline), 0);
    static uint8_t buf[300000];
    for (uint32_t i = 0; s->n == 0 || i < (uint32_t)s->n; i++) {
        lahja_event_t *ev = NULL;
        EXPECT_EQ(lahja_event_new("Data", buf, payload_of(i, buf), &ev), 0);
        EXPECT_EQ(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS)), 0);
        lahja_event_unref(ev);
    }
    EXPECT_EQ(lahja_wait_until_delivered(ep, lahja_deadline_in(GUARD_MS)), 0);
    bus_ask(ep, "Echo", "EchoAnswer", "through the ring", "sink", "through the ring");
    bus_close(ep);
    return 0;
}

struct sink {
    uint32_t next;
    int bad;
    lahja_cond_t *cond;
};

static int on_data(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct sink *k = user;
    size_t len = 0;
    const uint8_t *p = lahja_event_payload(ev, &len);
    static uint8_t want[300000];
    size_t wlen = payload_of(k->next, want);
    if (len != wlen || memcmp(p, want, len) != 0) {
        if (k->bad++ == 0)
            fprintf(stderr, "event %u: %zu bytes, not the %zu expected\n", k->next, len, wlen);
    }
    k->next++;
    lahja_cond_broadcast(k->cond);
    return 0;
}

/* A sink with ring size `ring` receives n events from a streamer with
 * `peer_ring`; `shm` says whether they must have gone through rings. */
static void stream_case(size_t ring, size_t peer_ring, int n, int shm)
{
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t o = bus_opts(&log);
    o.shm_ring = ring;
    o.max_payload = 1 << 20;
    lahja_endpoint_t *ep = bus_serve(dir, "sink", &o);
    lahja_cond_t cond;
    lahja_cond_init(&cond);
    struct sink k = { 0, 0, &cond };
    lahja_subscription_t *sub = NULL, *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Data", on_data, &k, &sub), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    struct streamer s = { dir, peer_ring, n };
    bus_child_t c = bus_fork(main_streamer, &s);
    EXPECT_CHILD_OK(&c);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (k.next < (uint32_t)n)
        EXPECT_EQ(lahja_cond_wait(&cond, deadline), 0);
    EXPECT_EQ(k.next, (uint32_t)n);
    EXPECT_EQ(k.bad, 0);
    EXPECT_EQ(bus_log_count(&log, SHM_LINE, NULL, NULL), shm);
    lahja_subscription_cancel(sub);
    lahja_subscription_cancel(echo);
    bus_close(ep);
    EXPECT_EQ(ring_maps(), 0);
    bus_dir_remove(dir);
}

/* Small rings: events larger than the ring, wrapping, writers waiting. */
static int main_small_rings(void *arg)
{
    (void)arg;
    stream_case(64 << 10, 64 << 10, RUNNING_ON_VALGRIND ? 300 : 3000, 1);
    return 0;
}
BUS_MAIN_TEST(small_rings)

/* Small events only, through small rings: written in place up to the
 * ring's end, then across it, again and again, in order. */
static int main_small_events_wrap(void *arg)
{
    (void)arg;
    small_only = 1;
    stream_case(64 << 10, 64 << 10, RUNNING_ON_VALGRIND ? 3000 : 60000, 1);
    small_only = 0;
    return 0;
}
BUS_MAIN_TEST(small_events_wrap)

static int main_default_rings(void *arg)
{
    (void)arg;
    stream_case(0, 0, RUNNING_ON_VALGRIND ? 300 : 3000, 1);
    return 0;
}
BUS_MAIN_TEST(default_rings)

/* Both processes on one CPU: a reader that sleeps on the writer's CPU
 * is told when the writer's loop turn ends, not at once (src/bus/shm.c,
 * tell), and so is a writer waiting for room; nothing may be left
 * untold.  Small rings make the writer wait, small events make long
 * turns, and the request at the end needs its response told too. */
static int main_one_cpu(void *arg)
{
    (void)arg;
    int cpu = sched_getcpu();
    EXPECT_TRUE(cpu >= 0);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    EXPECT_EQ(sched_setaffinity(0, sizeof set, &set), 0); /* the streamer inherits it */
    stream_case(64 << 10, 64 << 10, RUNNING_ON_VALGRIND ? 300 : 3000, 1);
    small_only = 1;
    stream_case(64 << 10, 64 << 10, RUNNING_ON_VALGRIND ? 3000 : 60000, 1);
    small_only = 0;
    return 0;
}
BUS_MAIN_TEST(one_cpu)

/* One side without the transport: both keep the socket. */
static int main_one_side_without(void *arg)
{
    (void)arg;
    stream_case(0, SIZE_MAX, 700, 0);
    stream_case(SIZE_MAX, 0, 700, 0);
    return 0;
}
BUS_MAIN_TEST(one_side_without)

/* ------------------------------------------------------ a killed peer */

static int main_killed_peer(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t o = bus_opts(&log);
    o.max_payload = 1 << 20;
    lahja_endpoint_t *ep = bus_serve(dir, "sink", &o);
    lahja_cond_t cond;
    lahja_cond_init(&cond);
    struct sink k = { 0, 0, &cond };
    lahja_subscription_t *sub = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Data", on_data, &k, &sub), 0);
    int before = ring_maps();
    struct streamer s = { dir, 0, 0 };
    bus_child_t c = bus_fork(main_streamer, &s);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (k.next < 500)
        EXPECT_EQ(lahja_cond_wait(&cond, deadline), 0);
    EXPECT_TRUE(ring_maps() > before); /* ours and the streamer's */
    EXPECT_EQ(kill(c.pid, SIGKILL), 0);
    EXPECT_TRUE(WIFSIGNALED(bus_child_wait(&c)));
    bus_wait_disconnected(ep, "streamer");
    EXPECT_EQ(k.bad, 0); /* what came before the kill came whole, in order */
    /* The rings go once the connection's socket has closed (a loop turn). */
    deadline = lahja_deadline_in(GUARD_MS);
    while (ring_maps() != before && lahja_now() < deadline)
        EXPECT_EQ(lahja_sleep(1), 0);
    EXPECT_EQ(ring_maps(), before);
    /* The endpoint goes on: a new peer streams through new rings. */
    k.next = 0;
    struct streamer s2 = { dir, 0, 200 };
    lahja_subscription_t *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    bus_child_t c2 = bus_fork(main_streamer, &s2);
    EXPECT_CHILD_OK(&c2);
    deadline = lahja_deadline_in(GUARD_MS);
    while (k.next < 200)
        EXPECT_EQ(lahja_cond_wait(&cond, deadline), 0);
    EXPECT_EQ(k.next, 200u);
    EXPECT_EQ(k.bad, 0);
    lahja_subscription_cancel(echo);
    lahja_subscription_cancel(sub);
    bus_close(ep);
    EXPECT_EQ(ring_maps(), 0);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(killed_peer)

/* ------------------------------------------------------ bad rings */

enum bad { UNSEALED, TOO_SMALL, NOT_POW2, BAD_MAGIC, NOT_MEMFD, ONE_FD, BAD_POOL, HEAD_OUT,
           HEAD_LATER, NO_FEATURE, LENT_OUT, RELEASE_BOGUS };

struct bad_case {
    enum bad how;
    const char *why;
};

/* A ring as shm.c makes it, of `size` data bytes, sealed unless told. */
static int make_ring(size_t size, int seal, void **map)
{
    int fd = memfd_create("lahja-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    EXPECT_TRUE(fd >= 0);
    EXPECT_EQ(ftruncate(fd, (off_t)(RING_HDR + size)), 0);
    if (seal)
        EXPECT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    uint8_t *p = mmap(NULL, RING_HDR + size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_TRUE(p != MAP_FAILED);
    uint64_t magic = 0x314d48536a686c61ULL, sz = size;
    uint32_t version = 1, hdr = RING_HDR;
    memcpy(p, &magic, 8);
    memcpy(p + 8, &version, 4);
    memcpy(p + 12, &hdr, 4);
    memcpy(p + 16, &sz, 8);
    *map = p;
    return fd;
}

/* A pool as shm.c makes it (sealed unless told), read-only for the peer. */
static int make_pool(size_t size, int seal)
{
    int fd = memfd_create("lahja-pool", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    EXPECT_TRUE(fd >= 0);
    EXPECT_EQ(ftruncate(fd, (off_t)size), 0);
    if (seal)
        EXPECT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    return fd;
}

/* Writes n bytes into a ring at its head and publishes them. */
static void ring_put(uint8_t *map, size_t size, const uint8_t *bytes, size_t n)
{
    _Atomic uint64_t *head = (_Atomic uint64_t *)(map + 64);
    uint64_t h = atomic_load(head);
    for (size_t i = 0; i < n; i++)
        map[RING_HDR + (h + i) % size] = bytes[i];
    atomic_store(head, h + n);
}

static void send_fds(int sock, const int *fds, int n)
{
    char mark = 'S';
    struct iovec iov = { .iov_base = &mark, .iov_len = 1 };
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(3 * sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = CMSG_SPACE((size_t)n * sizeof(int)) };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, (size_t)n * sizeof(int));
    EXPECT_EQ(sendmsg(sock, &m, MSG_NOSIGNAL), 1);
}

/* The raw client: a HELLO with the feature (unless NO_FEATURE), then the
 * marker with a bad ring, or a good one it then spoils; it must be hung
 * up on. */
static int bad_client(void *arg)
{
    const struct bad_case *bc = arg;
    const char *path = getenv("BUS_SHM_PATH");
    int sock = raw_connect(path);
    EXPECT_TRUE(sock >= 0);
    uint8_t hello[300];
    uint8_t *end = raw_hello(hello, "rawc");
    if (bc->how != NO_FEATURE)
        hello[RAW_HDR + 6] = 8; /* features: bit 3, shared memory */
    raw_send(sock, hello, (size_t)(end - hello));
    void *map = NULL;
    int fds[2] = { -1, -1 }, n = 2;
    size_t size = 64 << 10;
    switch (bc->how) {
    case UNSEALED:
        fds[0] = make_ring(size, 0, &map);
        break;
    case TOO_SMALL:
        fds[0] = make_ring(4096, 1, &map);
        break;
    case NOT_POW2:
        fds[0] = make_ring(size + 4096, 1, &map);
        break;
    case BAD_MAGIC:
        fds[0] = make_ring(size, 1, &map);
        ((uint8_t *)map)[0] ^= 1;
        break;
    case NOT_MEMFD:
        fds[0] = open("/dev/null", O_RDWR);
        break;
    case ONE_FD:
        fds[0] = make_ring(size, 1, &map);
        n = 1;
        break;
    case HEAD_OUT:
        fds[0] = make_ring(size, 1, &map);
        *(uint64_t *)((uint8_t *)map + 64) = size + 1;
        break;
    default:
        fds[0] = make_ring(size, 1, &map);
        break;
    }
    if (n == 2)
        fds[1] = make_pool(1 << 20, bc->how != BAD_POOL);
    send_fds(sock, fds, n);
    if (bc->how == HEAD_LATER || bc->how == LENT_OUT || bc->how == RELEASE_BOGUS) {
        /* Once accepted (the endpoint says it sleeps on our ring)... */
        _Atomic uint32_t *sleeps = (_Atomic uint32_t *)((uint8_t *)map + 72);
        int64_t until = bus_ms() + GUARD_MS;
        while (atomic_load(sleeps) == 0 && bus_ms() < until)
            usleep(1000);
        EXPECT_TRUE(atomic_load(sleeps) != 0);
        if (bc->how == HEAD_LATER) {
            /* ...its head jumps past a whole ring. */
            _Atomic uint64_t *head = (_Atomic uint64_t *)((uint8_t *)map + 64);
            atomic_store(head, (uint64_t)size * 3);
        } else {
            /* ...frames through it: our SUBS, then a reference past the
             * end of our pool, or a release of what we were never lent. */
            uint8_t f[256], *e = raw_subs(f, 1, NULL, 0);
            if (bc->how == LENT_OUT) {
                e = raw_type(e, 1, "Big");
                e = raw_header(e, 4 + 16, RAW_EVENT, 8 /* LENT */);
                e = raw_u32(e, 1);
                uint64_t off = 2 << 20, len = 100;
                memcpy(e, &off, 8);
                memcpy(e + 8, &len, 8);
                e += 16;
            } else {
                e = raw_header(e, 8, 8 /* RELEASE */, 0);
                memset(e, 0, 8);
                e += 8;
            }
            ring_put(map, size, f, (size_t)(e - f));
        }
        raw_send(sock, "t", 1);
    }
    uint8_t got[512];
    ssize_t r = raw_read_to_eof(sock, got, sizeof got);
    EXPECT_TRUE(r >= 0); /* hung up on */
    close(sock);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return 0;
}

static void bad_case_run(const struct bad_case *bc)
{
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t o = bus_opts(&log);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &o);
    struct bus_peer_args peer = { dir, "peer", "srv" };
    bus_child_t pc = bus_fork(bus_peer_main, &peer);
    bus_ask(ep, "Echo", "EchoAnswer", "before", "peer", "before");
    int from = log.n;
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    setenv("BUS_SHM_PATH", cfg.path, 1);
    bus_child_t raw = bus_fork_plain(bad_client, (void *)bc);
    EXPECT_CHILD_OK(&raw);
    int n = 0;
    for (int i = from; i < log.n; i++)
        n += strstr(log.line[i], bc->why) != NULL;
    if (n != 1) {
        fprintf(stderr, "case %d: expected one line with \"%s\"\n", (int)bc->how, bc->why);
        bus_log_dump(&log);
    }
    EXPECT_EQ(n, 1);
    EXPECT_EQ(lahja_is_connected_to(ep, "peer"), 1);
    bus_ask(ep, "Echo", "EchoAnswer", "after", "peer", "after");
    bus_peer_done(ep, "peer");
    EXPECT_CHILD_OK(&pc);
    bus_close(ep);
    EXPECT_EQ(ring_maps(), 0);
    bus_dir_remove(dir);
}

static int main_bad_rings(void *arg)
{
    (void)arg;
    static const struct bad_case cases[] = {
        { UNSEALED, "shared memory: its ring is not a sealed memfd" },
        { TOO_SMALL, "shared memory: its ring has a bad size" },
        { NOT_POW2, "shared memory: its ring has a bad size" },
        { BAD_MAGIC, "shared memory: its ring's header is not ours" },
        { NOT_MEMFD, "shared memory: its ring is not a sealed memfd" },
        { ONE_FD, "shared memory: a descriptor it was not to send" },
        { BAD_POOL, "shared memory: its pool is not a sealed memfd" },
        { HEAD_OUT, "shared memory: its ring's indices are out of bounds" },
        { HEAD_LATER, "shared memory: the peer's ring index is out of bounds" },
        { NO_FEATURE, "shared memory: a descriptor it was not to send" },
        { LENT_OUT, "connection from rawc: Protocol error" },
        { RELEASE_BOGUS, "connection from rawc: Protocol error" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        bad_case_run(&cases[i]);
    return 0;
}
BUS_MAIN_TEST(bad_rings)


/* ------------------------------------------------ lent payloads */

#define LENT_N 20
#define LENT_LEN (100 * 1000)

/* Blocks of ep's pool not yet free (white-box). */
static unsigned pool_live(lahja_endpoint_t *ep)
{
    return lahja_shm_pool_live(ep);
}

struct keeper {
    lahja_event_t *kept[LENT_N];
    int n, bad;
};

static int on_keep(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct keeper *k = user;
    size_t len;
    const uint8_t *p = lahja_event_payload(ev, &len);
    int ok = len == LENT_LEN;
    for (size_t i = 0; ok && i < len; i++)
        ok = p[i] == (uint8_t)(k->n * 7 + i);
    k->bad += !ok;
    if (k->n < LENT_N)
        k->kept[k->n++] = lahja_event_ref(ev); /* keeps the lent bytes */
    return 0;
}

/* A receiver that keeps every Big it gets, checks each, and answers how
 * many were intact once asked (then it waits to be killed or told). */
static int main_keeper(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("keeper", &o);
    struct keeper k = { .n = 0 };
    lahja_subscription_t *s1 = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Big", on_keep, &k, &s1), 0);
    /* Subscribed before connecting: the lender asks once every Big is
     * confirmed, which can be before a later subscription arrives. */
    lahja_stream_t *asks = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Count", 0, NULL, &asks), 0);
    EXPECT_EQ(bus_connect(ep, dir, "lender"), 0);
    lahja_event_t *ask = NULL;
    EXPECT_EQ(lahja_stream_next(asks, LAHJA_FOREVER, &ask), 0);
    lahja_stream_close(asks);
    char answer[32];
    snprintf(answer, sizeof answer, "%d %d", k.n, k.bad);
    lahja_event_t *a = bus_event("Counted", answer);
    EXPECT_EQ(lahja_broadcast(ep, a, NULL, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_unref(a);
    lahja_event_unref(ask);
    /* Until killed: what it keeps stays lent. */
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Done", LAHJA_FOREVER, &done), 0);
    lahja_event_unref(done);
    for (int i = 0; i < k.n; i++)
        lahja_event_unref(k.kept[i]);
    lahja_subscription_cancel(s1);
    bus_close(ep);
    return 0;
}

/* Loaned events go lent to a peer that keeps them: its copies are the
 * very bytes, intact; the blocks stay lent while it keeps them and all
 * come back when it is killed with SIGKILL. */
static int main_lent_kept_then_killed(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t o = bus_opts(&log);
    lahja_endpoint_t *ep = bus_serve(dir, "lender", &o);
    lahja_stream_t *counted = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Counted", 0, NULL, &counted), 0);
    bus_child_t kc = bus_fork(main_keeper, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "keeper", "Big", deadline), 0);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "keeper", "Count", deadline), 0);
    for (int i = 0; i < LENT_N; i++) {
        lahja_event_t *ev = NULL;
        void *buf = NULL;
        EXPECT_EQ(lahja_event_loan(ep, "Big", LENT_LEN, &ev, &buf), 0);
        for (size_t j = 0; j < LENT_LEN; j++)
            ((uint8_t *)buf)[j] = (uint8_t)(i * 7 + j);
        EXPECT_EQ(lahja_broadcast(ep, ev, NULL, deadline), 0);
        lahja_event_unref(ev);
    }
    EXPECT_EQ(lahja_wait_until_delivered(ep, deadline), 0);
    lahja_event_t *ask = bus_event("Count", NULL);
    EXPECT_EQ(lahja_broadcast(ep, ask, NULL, deadline), 0);
    lahja_event_unref(ask);
    lahja_event_t *ans = NULL;
    EXPECT_EQ(lahja_stream_next(counted, deadline, &ans), 0);
    char want[32];
    snprintf(want, sizeof want, "%d 0", LENT_N);
    EXPECT_TRUE(bus_payload_is(ans, want));
    lahja_event_unref(ans);
    EXPECT_EQ(pool_live(ep), (unsigned)LENT_N); /* ours are gone; the keeper's are not */
    EXPECT_EQ(kill(kc.pid, SIGKILL), 0);
    EXPECT_TRUE(WIFSIGNALED(bus_child_wait(&kc)));
    bus_wait_disconnected(ep, "keeper");
    while (pool_live(ep) != 0 && lahja_now() < deadline)
        EXPECT_EQ(lahja_sleep(1), 0);
    EXPECT_EQ(pool_live(ep), 0u);
    lahja_stream_close(counted);
    bus_close(ep);
    EXPECT_EQ(ring_maps(), 0);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(lent_kept_then_killed)

/* A receiver that takes Big, confirms a Warm, and stops itself (SIGSTOP)
 * once told: from then on it reads nothing. */
static int main_stopper(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("stopper", &o);
    struct keeper k = { .n = 0 };
    lahja_subscription_t *s1 = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Big", on_keep, &k, &s1), 0);
    lahja_event_t *stop = NULL;
    lahja_stream_t *stops = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Stop", 0, NULL, &stops), 0);
    EXPECT_EQ(bus_connect(ep, dir, "lender"), 0);
    EXPECT_EQ(lahja_stream_next(stops, LAHJA_FOREVER, &stop), 0);
    lahja_event_unref(stop);
    raise(SIGSTOP);
    return 0; /* never: it is killed */
}

/* A stopper connected to ep (serving in dir), stopped by its Stop (it
 * sends SIGSTOP to itself).  That Stop is our first write since its
 * HELLO: it turns our ring on.  Polled: our loop must run to write it. */
static bus_child_t stopped_stopper(lahja_endpoint_t *ep, const char *dir)
{
    bus_child_t kc = bus_fork(main_stopper, (void *)dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "stopper", "Stop", deadline), 0);
    lahja_event_t *stop = bus_event("Stop", NULL);
    EXPECT_EQ(lahja_broadcast(ep, stop, NULL, deadline), 0);
    lahja_event_unref(stop);
    int st = 0;
    pid_t w;
    while ((w = waitpid(kc.pid, &st, WUNTRACED | WNOHANG)) == 0 && lahja_now() < deadline)
        EXPECT_EQ(lahja_sleep(1), 0);
    EXPECT_EQ(w, kc.pid);
    EXPECT_TRUE(WIFSTOPPED(st));
    return kc;
}

/* A loaned event of LENT_LEN bytes, broadcast with `nowait` or waiting
 * until `deadline`. */
static int lend_one(lahja_endpoint_t *ep, int nowait, lahja_time_t deadline)
{
    lahja_event_t *ev = NULL;
    void *buf = NULL;
    EXPECT_EQ(lahja_event_loan(ep, "Big", LENT_LEN, &ev, &buf), 0);
    memset(buf, 7, LENT_LEN);
    int rc = nowait ? lahja_broadcast_nowait(ep, ev, NULL) : lahja_broadcast(ep, ev, NULL, deadline);
    lahja_event_unref(ev);
    return rc;
}

/* Lent payloads count apart from the queue: a peer that reads nothing
 * holds its lender at LAHJA_LENT_SCALE times the high-water mark of
 * them, and broadcast_nowait at its hard limit (a loaned event in the
 * queue is only its reference); they all come back when the peer is
 * killed. */
static int main_lent_count_apart(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t o = bus_opts(&log);
    o.high_water = LENT_LEN;
    o.hard_limit = 8 * LENT_LEN;
    lahja_endpoint_t *ep = bus_serve(dir, "lender", &o);
    bus_child_t kc = stopped_stopper(ep, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    /* Accepted while what it was lent is within the scaled mark. */
    int sent = 0, rc = 0;
    while (sent < LENT_N && (rc = lend_one(ep, 0, lahja_deadline_in(50))) == 0)
        sent++;
    EXPECT_EQ(rc, -ETIMEDOUT);
    EXPECT_EQ(sent, LAHJA_LENT_SCALE + 1);
    EXPECT_EQ(pool_live(ep), (unsigned)sent); /* lent, not copied */
    /* Without waiting: up to the hard limit. */
    while (sent < LENT_N && (rc = lend_one(ep, 1, 0)) == 0)
        sent++;
    EXPECT_EQ(rc, -EAGAIN);
    EXPECT_EQ(sent, 8 + 1);
    EXPECT_TRUE(strcmp(lahja_endpoint_blocked_peer(ep), "stopper") == 0);
    EXPECT_EQ(kill(kc.pid, SIGKILL), 0);
    EXPECT_TRUE(WIFSIGNALED(bus_child_wait(&kc)));
    bus_wait_disconnected(ep, "stopper");
    while (pool_live(ep) != 0 && lahja_now() < deadline)
        EXPECT_EQ(lahja_sleep(1), 0);
    EXPECT_EQ(pool_live(ep), 0u);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(lent_count_apart)

/* The ring is a peer's buffer, as the kernel's is a socket's: behind a
 * full ring at most LAHJA_RING_QUEUE waits in the queue, not the whole
 * high-water mark, before a broadcast to a peer that reads nothing
 * suspends; its stats say that mark. */
static int main_ring_is_the_buffer(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t o = bus_opts(NULL);
    o.shm_ring = 64 << 10; /* our ring, for our output */
    lahja_endpoint_t *ep = bus_serve(dir, "lender", &o);
    bus_child_t kc = stopped_stopper(ep, dir);
    const size_t frame = LAHJA_WIRE_PLAIN_PREFIX + 64;
    uint8_t small[64] = { 0 };
    size_t sent = 0;
    int rc = 0;
    while (sent < 100000
           && (rc = lahja_broadcast_bytes(ep, "Big", small, sizeof small, NULL,
                                          lahja_deadline_in(50))) == 0)
        sent++;
    EXPECT_EQ(rc, -ETIMEDOUT);
    /* The ring filled first (less what the Stop took), then the queue. */
    EXPECT_TRUE(sent * frame >= (64 << 10) - 4096 + LAHJA_RING_QUEUE);
    EXPECT_TRUE(sent * frame <= (64 << 10) + LAHJA_RING_QUEUE + frame);
    lahja_peer_stats_t ps;
    EXPECT_EQ(lahja_peer_stats(ep, "stopper", &ps), 0);
    EXPECT_TRUE(ps.queued > LAHJA_RING_QUEUE);
    EXPECT_TRUE(ps.queued <= LAHJA_RING_QUEUE + frame);
    EXPECT_EQ(ps.high_water, LAHJA_RING_QUEUE);
    EXPECT_EQ(kill(kc.pid, SIGKILL), 0);
    EXPECT_TRUE(WIFSIGNALED(bus_child_wait(&kc)));
    bus_wait_disconnected(ep, "stopper");
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(ring_is_the_buffer)

/* A receiver that signals its parent (bus_child_signal) at each Warm
 * and each Big. */
static int on_tell(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    (void)user;
    bus_child_signal();
    return 0;
}

static int main_teller(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("teller", &o);
    lahja_subscription_t *s1 = NULL, *s2 = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Warm", on_tell, NULL, &s1), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Big", on_tell, NULL, &s2), 0);
    lahja_stream_t *dones = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Done", 0, NULL, &dones), 0);
    EXPECT_EQ(bus_connect(ep, dir, "lender"), 0);
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_stream_next(dones, LAHJA_FOREVER, &done), 0);
    lahja_event_unref(done);
    lahja_stream_close(dones);
    lahja_subscription_cancel(s1);
    lahja_subscription_cancel(s2);
    bus_close(ep);
    return 0;
}

/* Whether the child signalled within ms, waiting without running the
 * loop (poll, not the task's wait). */
static int signalled_within(bus_child_t *c, int ms)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    char b;
    return poll(&p, 1, ms) == 1 && read(c->fd, &b, 1) == 1;
}

/* A lent payload's frame is written as soon as it is broadcast, as the
 * payload's bytes would be, not with the loop turn's other frames: the
 * reader has it while its sender is still busy (here, blocked outside
 * the loop), and can confirm it before the next one is written. */
static int main_lent_written_at_once(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "lender", &o);
    bus_child_t tc = bus_fork(main_teller, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "teller", "Big", deadline), 0);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "teller", "Done", deadline), 0);
    /* Our first write since its HELLO turns our ring on; the loop runs
     * until it is read. */
    EXPECT_EQ(bus_send(ep, "Warm", NULL), 0);
    EXPECT_EQ(bus_child_await_signal(&tc), 0);
    for (int i = 0; i < 3; i++) {
        EXPECT_EQ(lend_one(ep, 0, deadline), 0);
        EXPECT_EQ(pool_live(ep), 1u + (unsigned)i); /* lent: written once, in our pool */
        EXPECT_TRUE(signalled_within(&tc, GUARD_MS));
    }
    EXPECT_EQ(bus_send(ep, "Done", NULL), 0);
    EXPECT_CHILD_OK(&tc);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(lent_written_at_once)

/* ------------------------------------------- a burst found in the ring */

#define BURST_N 1000
#define BURST_CAP 256

/* Stops itself (SIGSTOP) at a Stop, as the stopper; once continued, pulls
 * BURST_N "Burst" events through a stream of BURST_CAP: all of them, in
 * order, none dropped. */
static int main_burst_reader(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("stopper", &o);
    lahja_stream_options_t so = { .capacity = BURST_CAP };
    lahja_stream_t *bursts = NULL, *stops = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Burst", 0, &so, &bursts), 0);
    EXPECT_EQ(lahja_stream_open(ep, "Stop", 0, NULL, &stops), 0);
    EXPECT_EQ(bus_connect(ep, dir, "lender"), 0);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_stream_next(stops, LAHJA_FOREVER, &ev), 0);
    lahja_event_unref(ev);
    raise(SIGSTOP);
    for (uint32_t i = 0; i < BURST_N; i++) {
        EXPECT_EQ(lahja_stream_next(bursts, lahja_deadline_in(GUARD_MS), &ev), 0);
        size_t len;
        const void *p = lahja_event_payload(ev, &len);
        uint32_t got;
        EXPECT_EQ(len, sizeof got);
        memcpy(&got, p, sizeof got);
        EXPECT_EQ(got, i);
        lahja_event_unref(ev);
    }
    EXPECT_EQ(lahja_stream_dropped(bursts), 0);
    lahja_stream_close(bursts);
    lahja_stream_close(stops);
    bus_close(ep);
    return 0;
}

/*
 * A ring found holding thousands of small events (its reader was away)
 * is not turned into as many events at once: between pieces of it the
 * task that pulls them runs.  A stream four times smaller than the burst
 * that is drained as fast as it fills then drops nothing, and its reader
 * holds a few hundred events at a time, not the burst.
 */
static int main_burst_in_pieces(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t o = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "lender", &o);
    bus_child_t kc = bus_fork(main_burst_reader, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "stopper", "Burst", deadline), 0);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "stopper", "Stop", deadline), 0);
    lahja_event_t *stop = bus_event("Stop", NULL);
    EXPECT_EQ(lahja_broadcast(ep, stop, NULL, deadline), 0);
    lahja_event_unref(stop);
    int st = 0;
    pid_t w;
    while ((w = waitpid(kc.pid, &st, WUNTRACED | WNOHANG)) == 0 && lahja_now() < deadline)
        EXPECT_EQ(lahja_sleep(1), 0);
    EXPECT_EQ(w, kc.pid);
    EXPECT_TRUE(WIFSTOPPED(st));
    for (uint32_t i = 0; i < BURST_N; i++)
        EXPECT_EQ(lahja_broadcast_bytes(ep, "Burst", &i, sizeof i, NULL, deadline), 0);
    /* Every one in its ring (the default's 1 MiB holds them) before it
     * reads again. */
    lahja_peer_stats_t ps;
    while (lahja_peer_stats(ep, "stopper", &ps) == 0 && ps.queued > 0 && lahja_now() < deadline)
        EXPECT_EQ(lahja_sleep(1), 0);
    EXPECT_EQ(ps.queued, 0);
    EXPECT_EQ(kill(kc.pid, SIGCONT), 0);
    EXPECT_CHILD_OK(&kc);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(burst_in_pieces)

int main(void)
{
    bus_filter_from_env();
    unsetenv("LAHJA_SHM"); /* the transport under test, even in the socket-only run */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_rings),
        cmocka_unit_test(test_small_events_wrap),
        cmocka_unit_test(test_default_rings),
        cmocka_unit_test(test_one_cpu),
        cmocka_unit_test(test_one_side_without),
        cmocka_unit_test(test_killed_peer),
        cmocka_unit_test(test_bad_rings),
        cmocka_unit_test(test_lent_kept_then_killed),
        cmocka_unit_test(test_lent_count_apart),
        cmocka_unit_test(test_ring_is_the_buffer),
        cmocka_unit_test(test_lent_written_at_once),
        cmocka_unit_test(test_burst_in_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
