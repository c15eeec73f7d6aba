/*
 * libFuzzer target for one endpoint's connections: the accept path, the
 * handshake, reading and dispatching frames, the write queue, requests,
 * subscriptions and the ends of connections, with real sockets and the
 * real loop.
 *
 * One endpoint ("fuzz") serves in a private directory for the whole run,
 * on a runtime hosted by a libuv loop this thread runs without blocking.
 * Each input is a program (fuzz_conn.h has the language): raw clients
 * connect, send frames built from the input or raw bytes, split at any
 * byte; the endpoint subscribes, broadcasts, responds and runs tasks; the
 * loop turns and the clients read what the endpoint wrote.  At the end
 * of the input every client closes and the loop runs until the endpoint
 * has let go of every connection, so that nothing carries over to the
 * next input.
 *
 * The loop's clock is virtual while an input runs (clock_gettime below):
 * it moves only when the program says so, so that the handshake timeout
 * fires exactly where the input puts it, never because a slow input took
 * long.
 *
 * On top of the sanitizers it checks what can be seen from outside:
 *  - every byte the endpoint writes to a client is a valid stream: its
 *    HELLO first, SUBS numbered 1, 2, 3..., SUBS_ACKs for the client's
 *    SUBS in order, events only of types the client subscribed to, within
 *    the max_frame it announced and in LZ4 only if it said it reads it,
 *    responses only to its requests, and payloads intact;
 *  - the endpoint's peers are names some client sent in a HELLO during
 *    this input, never its own, subscribed to types those clients sent;
 *    a client the endpoint hung up on is no longer connected;
 *  - handlers get events of their type; a request answered gets a
 *    response of the type it expects; the waits return when their
 *    condition holds;
 *  - once every client has closed, the endpoint lets go of all of them
 *    within a bounded number of loop turns, and has no peer left;
 *  - after each input the endpoint holds no more descriptors and no more
 *    mappings of rings than before it.
 * Clients that announce feature bit 3 speak the shared-memory transport
 * too (SHM_OFFER, and READ of the endpoint's ring), and scribble on the
 * rings' headers (SHM_POKE): the endpoint must end such a connection or
 * go on, never crash, hang or deliver what it did not get.
 * Checks that depend on what the clients sent are off for the rest of an
 * input once a client sent raw bytes (what they meant is unknown here).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <lahja/lahja.h>

#include "bus/endpoint.h"
#include "fuzz_conn.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken promise is a finding, whatever NDEBUG says. */
#define CHECK(c)                                                                    \
    do {                                                                            \
        if (!(c)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);   \
            abort();                                                                \
        }                                                                           \
    } while (0)

#define MAX_PAYLOAD (1u << 20)
#define HIGH_WATER (64 * 1024)
#define TIMEOUT_MS 2000
#define OUT_MAX (4u << 20)      /* a client's pending output */
#define READ_ROOM (64 * 1024)
#define PUMP_ROUNDS 16
#define DRAIN_TURNS 200         /* loop turns for the endpoint to let go */
#define MAX_SUBS 8
#define MAX_KEPT 4
#define MAX_TASKS 4
#define MAX_STREAMS 4
#define MAX_NAMES 8
#define MAX_REQS 64
#define MAX_SEQS 32
#define HANDLER_DEPTH 2

/* ------------------------------------------------------- virtual clock */

static int vclock_on;
static uint64_t vclock_ns;
static int spinning(void);

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

/* libuv reads its loop's time here.  While an input runs the monotonic
 * clocks stand still unless the program moves them (OP_CLOCK); outside,
 * every clock is the real one. */
int clock_gettime(clockid_t id, struct timespec *ts)
{
    static clock_gettime_fn real;
    if (real == NULL)
        real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    if (vclock_on && (id == CLOCK_MONOTONIC || id == CLOCK_MONOTONIC_COARSE
                      || id == CLOCK_MONOTONIC_RAW || id == CLOCK_BOOTTIME)) {
        ts->tv_sec = (time_t)(vclock_ns / 1000000000u);
        ts->tv_nsec = (long)(vclock_ns % 1000000000u);
        /* Before sleeping with a request pending, after one came, and
         * after a busy read, the endpoint watches its rings for a while
         * (shm.c, SPIN_NS): a clock standing still would keep it there
         * for ever.  Then each read moves it 1 us, far below the
         * timeouts' milliseconds. */
        if (spinning())
            vclock_ns += 1000;
        return 0;
    }
    return real(id, ts);
}

/* ---------------------------------------------------------------- input */

struct in {
    const uint8_t *p;
    size_t left;
    int out; /* ran out of bytes */
};

static uint8_t in_u8(struct in *in)
{
    if (in->left == 0) {
        in->out = 1;
        return 0;
    }
    in->left--;
    return *in->p++;
}

static uint16_t in_u16(struct in *in)
{
    uint16_t v = in_u8(in);
    return (uint16_t)(v | in_u8(in) << 8);
}

static uint32_t in_u32(struct in *in)
{
    uint32_t v = in_u16(in);
    return v | (uint32_t)in_u16(in) << 16;
}

/* Up to n bytes; fewer if the input ends. */
static size_t in_take(struct in *in, size_t n, const uint8_t **p)
{
    if (n > in->left) {
        n = in->left;
        in->out = 1;
    }
    *p = in->p;
    in->p += n;
    in->left -= n;
    return n;
}

/* A name or type: from the dictionary, or raw bytes (any length 0-255). */
struct str {
    const char *s;
    size_t len;
    char buf[256];
};

static void in_str(struct in *in, const char *const *dict, size_t n, struct str *out)
{
    uint8_t b = in_u8(in);
    if (b < RAW_SPEC) {
        out->s = dict[b % n];
        out->len = strlen(out->s);
        return;
    }
    const uint8_t *p;
    size_t len = in_take(in, in_u8(in), &p);
    memcpy(out->buf, p, len);
    out->buf[len] = '\0';
    out->s = out->buf;
    out->len = len;
}

/* -------------------------------------------------------------- buffers */

struct buf {
    uint8_t *p;
    size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < more)
        cap *= 2;
    b->p = realloc(b->p, cap);
    CHECK(b->p != NULL);
    b->cap = cap;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_header(uint8_t *p, uint32_t body_len, uint8_t kind, uint8_t flags)
{
    put_u32(p, body_len);
    p[4] = kind;
    p[5] = flags;
    p[6] = p[7] = 0;
}

/* ------------------------------------------------------------- payloads */

/*
 * Every payload the endpoint sends comes from here: its first byte is the
 * seed, and the rest is a window of one of two tables the seed picks, so
 * that a client can check any payload it receives without knowing which
 * one it is, with one memcmp.  Odd seeds: a ramp of runs of 64 equal
 * bytes (LZ4 shrinks it); even seeds: noise (it does not).
 */
#define PATTERN_SHIFT 64 /* bytes between two seeds' windows */
#define TABLE_LEN (MAX_PAYLOAD + 2 + 256 * PATTERN_SHIFT)

static uint8_t *tables[2]; /* noise, ramp */

static const uint8_t *pattern_of(uint8_t seed)
{
    return tables[seed & 1] + (size_t)seed * PATTERN_SHIFT;
}

static void pattern_fill(uint8_t *p, size_t len, uint8_t seed)
{
    if (len == 0)
        return;
    p[0] = seed;
    memcpy(p + 1, pattern_of(seed) + 1, len - 1);
}

static int pattern_ok(const uint8_t *p, size_t len)
{
    return len <= 1 || memcmp(p + 1, pattern_of(p[0]) + 1, len - 1) == 0;
}

static void tables_init(void)
{
    for (int i = 0; i < 2; i++) {
        tables[i] = malloc(TABLE_LEN);
        CHECK(tables[i] != NULL);
    }
    uint32_t x = 0x9e3779b9u;
    for (size_t i = 0; i < TABLE_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        tables[0][i] = (uint8_t)x;
        tables[1][i] = (uint8_t)(i / PATTERN_SHIFT);
    }
}

/*
 * Payload buffers the endpoint's events wrap rather than copy, reused
 * from one input to the next: a fresh megabyte for every event would cost
 * more in page faults than the rest of an input.  An event gives its
 * buffer back when it is freed; at the end of every input all of them
 * must be back, or the endpoint leaked an event.
 */
#define POOL 8
static uint8_t *pool[POOL];
static int pool_busy[POOL];

static void pool_release(void *payload, void *user)
{
    size_t i = (size_t)(uintptr_t)user;
    if (i == POOL) {
        free(payload);
        return;
    }
    CHECK(pool_busy[i] && payload == pool[i]);
    pool_busy[i] = 0;
}

static uint8_t *scratch;  /* a payload being built, MAX_PAYLOAD + 1 bytes */
static uint8_t *zbuf;     /* its LZ4 form */
static size_t zcap;
static uint8_t *unpacked; /* a received LZ4 payload, decompressed */

/* ---------------------------------------------------------------- state */

static uv_loop_t loop;
static lahja_rt_t *rt;
static lahja_endpoint_t *ep;
static char dir[64];
static char sock_path[128];
/* Where clients listen as conn_names[0] and [2], for lahja_connect: names
 * that sort before and after the endpoint's. */
#define N_LISTEN 2
static const int listen_names[N_LISTEN] = { 0, 2 };
static char listen_path[N_LISTEN][128];
static int listen_fd[N_LISTEN] = { -1, -1 };

/* A ring of the shared-memory transport as a client sees it: the header
 * as docs/protocol.md lays it out (and shm.c's struct shm_hdr). */
#define RING_HDR 4096
#define RING_MAGIC 0x314d48536a686c61ULL
#define RING_VERSION 1
#define RING_MIN (64u << 10)
#define RING_MAX (1u << 30)
#define RING_MARK 'S'

struct ring_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t hdr_size;
    uint64_t size;
    _Alignas(64) _Atomic uint64_t head;
    _Atomic uint32_t reader_sleeps;
    _Alignas(64) _Atomic uint64_t tail;
    _Atomic uint32_t writer_waits;
};

_Static_assert(offsetof(struct ring_hdr, head) == 64 && offsetof(struct ring_hdr, reader_sleeps) == 72
               && offsetof(struct ring_hdr, tail) == 128
               && offsetof(struct ring_hdr, writer_waits) == 136, "the protocol's layout");

struct cring {
    struct ring_hdr *hdr;     /* NULL: none */
    uint8_t *data;
    uint64_t size;            /* from the file, never from the header */
    size_t map_len;
    uint64_t idx;             /* ours: head (we write) or tail (we read) */
};

struct client {
    int fd;                   /* -1: none */
    struct buf out;           /* built; written up to out_off */
    size_t out_off;
    /* as the client speaks */
    int named;                /* its HELLO's entry in names_tab, or -1 */
    int hello_sent;
    uint32_t max_frame;       /* what its HELLO announced */
    uint32_t features;
    lahja_wire_tx_t tx;       /* the types it bound */
    lahja_strmap_t subs;      /* every type its SUBS frames named */
    int star;                 /* a SUBS of it had the pattern `*` */
    uint32_t subs_seq;
    uint32_t seqs[MAX_SEQS];  /* its SUBS seqs, in order, for the ACKs */
    size_t nseqs, nacked;
    int seqs_lost;            /* more SUBS than seqs[] holds */
    uint64_t next_req;
    uint64_t events_written;  /* EVENT frames it built */
    /* what the endpoint writes to it */
    lahja_wire_rx_t rx;
    struct buf in;
    int eof;
    int rd_shut;              /* its reading side is shut: reads end at once */
    uint32_t ep_subs_seq;     /* the endpoint's last SUBS */
    uint64_t req_seen[2];     /* the endpoint's last request ids */
    uint64_t events_read;
    uint64_t receipt;         /* the endpoint's last RECEIPT */
    uint32_t ep_features;     /* what the endpoint's HELLO announced, */
    int ep_hello;             /* once it came */
    /* the shared-memory transport */
    struct cring ring_tx;     /* its ring (SHM_OFFER), the endpoint reads it */
    int tx_on;                /* a good offer went: its output goes to tx */
    uint8_t wake;             /* SHM_WAKE_* */
    struct cring ring_rx;     /* the endpoint's, once its marker came */
    const uint8_t *pool;      /* the endpoint's pool, mapped read-only */
    size_t pool_len;
    int ring_rx_fd;           /* its memfd, to send back (SHM_OFFER) */
    int rx_on;
    int rx_scribbled;         /* it moved the endpoint's indices: reads unchecked */
};

static struct client clients[MAX_CLIENTS];

struct sub_slot {
    lahja_subscription_t *s;
    uint8_t type, behaviour;
};

static struct sub_slot subs[MAX_SUBS];
static lahja_event_t *kept[MAX_KEPT];
static lahja_stream_t *streams[MAX_STREAMS];

struct task_slot {
    lahja_task_t *t;
    uint8_t kind, type, resp, size, seed, ms;
    int done;
};

static struct task_slot tasks[MAX_TASKS];

/* The same calls in their callback form: slot busy from the call to its
 * callback. */
#define MAX_CBS 4

struct cb_slot {
    lahja_op_t *op;
    uint8_t kind;
    const char *type;            /* wait_for's, request's response type */
    const char *name;            /* wait_until_connected_to's */
    lahja_event_t *ev;           /* what it sent */
    int busy;
};

static struct cb_slot cbs[MAX_CBS];

/* The names clients sent in a HELLO during this input. */
struct name_entry {
    char s[256];
    size_t len;
    int conns;                /* connections that sent it */
    lahja_strmap_t types;     /* every type their SUBS frames named */
    uint64_t events_read;     /* EVENT frames the endpoint wrote to them */
    int known;                /* the endpoint had delivery counts for it */
    lahja_delivery_t before;  /* which were, before this input */
};

static struct name_entry names_tab[MAX_NAMES];
static size_t n_names;
static uint64_t req_ids[MAX_REQS]; /* request ids the clients sent */
static size_t n_reqs;
static int untracked;             /* raw bytes went out: client-side checks off */
static int reqs_untracked;
static int handler_depth;

/* The endpoint's log is discarded, unless LAHJA_FUZZ_LOG is set (to
 * see what happened on one input: fuzz_conn -runs=1 FILE). */
static int print_log;

static void on_log(void *user, lahja_log_level_t level, const char *endpoint,
                   const char *message)
{
    (void)user;
    if (print_log)
        fprintf(stderr, "[%s %d] %s\n", endpoint, (int)level, message);
}

static struct name_entry *name_find(const char *s, size_t len)
{
    for (size_t i = 0; i < n_names; i++)
        if (names_tab[i].len == len && memcmp(names_tab[i].s, s, len) == 0)
            return &names_tab[i];
    return NULL;
}

static int name_index(const char *s, size_t len)
{
    struct name_entry *e = name_find(s, len);
    if (e != NULL)
        return (int)(e - names_tab);
    if (n_names == MAX_NAMES) {
        untracked = 1;
        return -1;
    }
    e = &names_tab[n_names];
    memcpy(e->s, s, len);
    e->s[len] = '\0';
    e->len = len;
    e->conns = 0;
    e->events_read = 0;
    lahja_strmap_init(&e->types);
    e->known = lahja_delivery_stats(ep, e->s, &e->before) == 0;
    return (int)n_names++;
}

static int req_sent(uint64_t id)
{
    for (size_t i = 0; i < n_reqs; i++)
        if (req_ids[i] == id)
            return 1;
    return 0;
}

static void run_once(void)
{
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* ------------------------------------------------------ another process */

/*
 * The endpoint tells processes apart by the pid of the socket's other
 * end (SO_PEERCRED, taken at connect).  A helper process forked at
 * start-up connects on request and hands the socket over (SCM_RIGHTS), so
 * that a client can be "another process" under a name already connected.
 */
static int helper_fd = -1;

static void helper_main(int fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;) {
        char cmd;
        if (read(fd, &cmd, 1) != 1)
            _exit(0);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
        int ok = s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
        char cbuf[CMSG_SPACE(sizeof(int))];
        memset(cbuf, 0, sizeof cbuf);
        struct iovec iov = { .iov_base = &cmd, .iov_len = 1 };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (ok) {
            msg.msg_control = cbuf;
            msg.msg_controllen = sizeof cbuf;
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &s, sizeof s);
        }
        if (sendmsg(fd, &msg, 0) != 1)
            _exit(1);
        /* Our copy is closed before the target goes on: else the
         * endpoint could not see that client close. */
        if (s >= 0)
            close(s);
        if (write(fd, &cmd, 1) != 1)
            _exit(1);
    }
}

static void helper_start(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        helper_main(sv[1]);
    }
    close(sv[1]);
    helper_fd = sv[0];
}

/* A socket connected to the endpoint by the helper, or -1. */
static int helper_connect(void)
{
    char cmd = 'c';
    CHECK(write(helper_fd, &cmd, 1) == 1);
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { .iov_base = &cmd, .iov_len = 1 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                          .msg_controllen = sizeof cbuf };
    CHECK(recvmsg(helper_fd, &msg, MSG_CMSG_CLOEXEC) == 1);
    char done;
    CHECK(read(helper_fd, &done, 1) == 1);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (cm == NULL || cm->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

/* ------------------------------------------------------------- clients */

static struct client *client_at(struct in *in)
{
    return &clients[in_u8(in) % MAX_CLIENTS];
}

/* The buffers stay, emptied, for the next connection: the harness's
 * own memory, bounded, and no page faults to refill them each input. */
static void cring_unmap(struct cring *r)
{
    if (r->hdr != NULL)
        CHECK(munmap(r->hdr, r->map_len) == 0);
    memset(r, 0, sizeof *r);
}

static void client_reset(struct client *c)
{
    struct buf out = c->out, in = c->in;
    cring_unmap(&c->ring_tx);
    cring_unmap(&c->ring_rx);
    if (c->pool != NULL)
        munmap((void *)c->pool, c->pool_len);
    lahja_wire_tx_free(&c->tx);
    lahja_wire_rx_free(&c->rx);
    lahja_strmap_free(&c->subs);
    if (c->ring_rx_fd > 0)
        close(c->ring_rx_fd);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->named = -1;
    c->out = out;
    c->in = in;
    c->out.len = c->in.len = 0;
}

static void client_attach(struct client *c, int fd)
{
    c->fd = fd;
    lahja_wire_tx_init(&c->tx);
    /* The endpoint's frames: its max_frame is max_payload plus the
     * largest event prefix. */
    lahja_wire_rx_init(&c->rx, MAX_PAYLOAD + LAHJA_WIRE_EVENT_PREFIX_MAX, MAX_PAYLOAD, 1u << 16);
    lahja_strmap_init(&c->subs);
}

static void op_open(struct in *in)
{
    uint8_t b = in_u8(in);
    struct client *c = &clients[b % MAX_CLIENTS];
    if (in->out || c->fd >= 0)
        return;
    client_reset(c);
    if (b & 4) { /* from the helper: another pid */
        int fd = helper_connect();
        if (fd >= 0)
            client_attach(c, fd);
        return;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        CHECK(errno == EAGAIN); /* the backlog is full: no connection */
        close(fd);
        return;
    }
    client_attach(c, fd);
}

/* A connection the endpoint made (lahja_connect) to a client listening
 * as conn_names[listen_names[l]]; returns 0 if none was waiting. */
static int client_accept(struct client *c, int l)
{
    if (c->fd >= 0)
        return 1;
    int fd = accept4(listen_fd[l], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        CHECK(errno == EAGAIN);
        return 0;
    }
    client_reset(c);
    client_attach(c, fd);
    return 1;
}

static void client_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    client_reset(c);
}

/* Room for a frame of n bytes in the pending output, or 0: dropped.
 * The output is sent from out_off on; it moves back to the start of the
 * buffer only when a frame would not fit after it. */
static uint8_t *client_frame(struct client *c, size_t n)
{
    if (c->fd < 0 || c->out.len - c->out_off + n > OUT_MAX)
        return NULL;
    if (c->out_off > 0 && c->out.cap - c->out.len < n + 1) {
        memmove(c->out.p, c->out.p + c->out_off, c->out.len - c->out_off);
        c->out.len -= c->out_off;
        c->out_off = 0;
    }
    buf_reserve(&c->out, n + 1);
    uint8_t *p = c->out.p + c->out.len;
    c->out.len += n;
    return p;
}

/* One wake-up byte on c's socket; a full or gone socket loses it, as
 * the protocol allows. */
static void client_wake(struct client *c)
{
    char b = 'w';
    if (send(c->fd, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        CHECK(errno == EAGAIN || errno == EPIPE || errno == ECONNRESET);
}

/* Writes up to k of the pending bytes into c's ring, as its room allows
 * (a tail c scribbled on counts as no room); returns how many went. */
static size_t ring_send(struct client *c, size_t k)
{
    struct cring *r = &c->ring_tx;
    uint64_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
    uint64_t used = r->idx - tail;
    size_t room = used > r->size ? 0 : (size_t)(r->size - used);
    size_t n = k < room ? k : room;
    if (n < k) /* the endpoint tells us of room */
        atomic_store_explicit(&r->hdr->writer_waits, 1, memory_order_relaxed);
    if (n == 0)
        return 0;
    const uint8_t *src = c->out.p + c->out_off;
    size_t at = (size_t)(r->idx & (r->size - 1));
    size_t first = r->size - at < n ? r->size - at : n;
    memcpy(r->data + at, src, first);
    memcpy(r->data, src + first, n - first);
    r->idx += n;
    atomic_store_explicit(&r->hdr->head, r->idx, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (!(c->wake & SHM_WAKE_NEVER)
        && (atomic_exchange_explicit(&r->hdr->reader_sleeps, 0, memory_order_relaxed) != 0
            || (c->wake & SHM_WAKE_ALWAYS)))
        client_wake(c);
    return n;
}

/* Writes up to k bytes of the pending output; returns how many went. */
static size_t client_send(struct client *c, size_t k)
{
    size_t pending = c->out.len - c->out_off;
    if (c->fd < 0 || pending == 0)
        return 0;
    if (k == 0 || k > pending)
        k = pending;
    if (c->tx_on) {
        size_t n = ring_send(c, k);
        c->out_off += n;
        if (c->out_off == c->out.len)
            c->out.len = c->out_off = 0;
        return n;
    }
    ssize_t n = send(c->fd, c->out.p + c->out_off, k, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
        CHECK(errno == EAGAIN || errno == EPIPE || errno == ECONNRESET);
        if (errno != EAGAIN)
            c->out.len = c->out_off = 0; /* the endpoint hung up, or we shut down */
        return 0;
    }
    c->out_off += (size_t)n;
    if (c->out_off == c->out.len)
        c->out.len = c->out_off = 0;
    return (size_t)n;
}

/* --------------------------------------------- what the endpoint writes */

static void on_ep_event(struct client *c, const lahja_wire_event_t *ev, size_t frame_len)
{
    c->events_read++;
    if (c->named >= 0)
        names_tab[c->named].events_read++;
    if (c->hello_sent && !untracked) {
        CHECK(frame_len - LAHJA_WIRE_HEADER_SIZE <= c->max_frame);
        if (ev->flags & LAHJA_WIRE_LZ4)
            CHECK(c->features & LAHJA_WIRE_FEAT_LZ4);
    }
    if (ev->flags & LAHJA_WIRE_RESPONSE) {
        if (!untracked && !reqs_untracked)
            CHECK(req_sent(ev->id));
    } else if (!untracked) {
        /* Only types this client asked for (B19). */
        CHECK(c->star || lahja_strmap_find(&c->subs, ev->type, ev->type_len) != NULL);
    }
    if (ev->flags & LAHJA_WIRE_REQUEST) {
        CHECK(ev->id != 0);
        c->req_seen[1] = c->req_seen[0];
        c->req_seen[0] = ev->id;
    }
    const uint8_t *p = ev->payload;
    if (ev->flags & LAHJA_WIRE_LZ4) {
        CHECK(lahja_wire_lz4_decompress(ev->payload, ev->payload_len, unpacked, ev->raw_len) == 0);
        p = unpacked;
    }
    if (ev->flags & LAHJA_WIRE_LENT) {
        /* Lent: only to a client that announced shared memory, after the
         * marker that brought the pool; the bytes are there, in place.
         * The client gives it back at once. */
        CHECK(c->pool != NULL && (c->features & LAHJA_WIRE_FEAT_SHM));
        uint64_t off = get_u64(ev->payload), len = get_u64(ev->payload + 8);
        CHECK(len == ev->raw_len && off <= c->pool_len && len <= c->pool_len - off);
        p = c->pool + off;
        uint8_t *f = client_frame(c, LAHJA_WIRE_HEADER_SIZE + 8);
        if (f != NULL)
            lahja_wire_release_encode(f, &off, 1);
    }
    CHECK(pattern_ok(p, ev->raw_len));
}

static void on_ep_message(struct client *c, const lahja_wire_msg_t *m, size_t frame_len)
{
    switch (m->kind) {
    case LAHJA_WIRE_HELLO:
        CHECK(strcmp(m->u.hello.name, EP_NAME) == 0);
        /* Shared memory unless its ring could not be made. */
        CHECK((m->u.hello.features & ~(uint32_t)LAHJA_WIRE_FEAT_SHM)
              == (LAHJA_WIRE_FEAT_LZ4 | LAHJA_WIRE_FEAT_RECEIPTS | LAHJA_WIRE_FEAT_PATTERNS));
        CHECK(m->u.hello.max_frame == MAX_PAYLOAD + LAHJA_WIRE_EVENT_PREFIX_MAX);
        CHECK(!c->ep_hello);
        c->ep_hello = 1;
        c->ep_features = m->u.hello.features;
        break;
    case LAHJA_WIRE_SUBS:
        CHECK(m->u.subs.seq == c->ep_subs_seq + 1);
        /* Entries only to a client whose HELLO reads them (B34). */
        if (m->u.subs.flags & LAHJA_WIRE_SUBS_ENTRIES)
            CHECK(c->hello_sent && (c->features & LAHJA_WIRE_FEAT_PATTERNS));
        c->ep_subs_seq = m->u.subs.seq;
        break;
    case LAHJA_WIRE_SUBS_ACK:
        if (!untracked && !c->seqs_lost) {
            CHECK(c->nacked < c->nseqs);
            CHECK(m->u.ack_seq == c->seqs[c->nacked]);
            c->nacked++;
        }
        break;
    case LAHJA_WIRE_EVENT:
        on_ep_event(c, &m->u.event, frame_len);
        break;
    case LAHJA_WIRE_RECEIPT:
        /* Only to a client that said it reads them, confirming no more
         * events than it sent, and never fewer than before. */
        if (!untracked) {
            CHECK(c->hello_sent && (c->features & LAHJA_WIRE_FEAT_RECEIPTS));
            CHECK(m->u.receipt <= c->events_written);
        }
        CHECK(m->u.receipt >= c->receipt);
        c->receipt = m->u.receipt;
        break;
    case LAHJA_WIRE_CLOSE:
        if (!untracked)
            CHECK(c->hello_sent && (c->features & LAHJA_WIRE_FEAT_RECEIPTS));
        CHECK(m->u.close_reason == LAHJA_WIRE_CLOSE_DUPLICATE
              || m->u.close_reason == LAHJA_WIRE_CLOSE_REFUSED);
        break;
    default:
        break; /* TYPE: the rx state checks and keeps it */
    }
}

static void parse_input(struct client *c)
{
    size_t off = 0;
    for (;;) {
        lahja_wire_msg_t m;
        size_t need = 0;
        ssize_t n = lahja_wire_rx_next(&c->rx, c->in.p + off, c->in.len - off, &m, &need);
        CHECK(n >= 0); /* the endpoint writes nothing the protocol forbids */
        if (n == 0)
            break;
        on_ep_message(c, &m, (size_t)n);
        off += (size_t)n;
    }
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
}

/* The endpoint hung up on this client: it is no longer its peer. */
static void on_ep_eof(struct client *c)
{
    c->eof = 1;
    if (untracked || c->named < 0)
        return;
    struct name_entry *e = &names_tab[c->named];
    if (e->conns == 1 && strcmp(e->s, EP_NAME) != 0)
        CHECK(!lahja_is_connected_to(ep, e->s));
}

/* Reads c's socket into [into, into + len), and the descriptors that
 * came with the bytes into fds[0..*nfds); recvmsg's count. */
static ssize_t client_recv(struct client *c, void *into, size_t len, int *fds, int *nfds)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(4 * sizeof(int))];
    } ctl;
    struct iovec iov = { .iov_base = into, .iov_len = len };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b };
    *nfds = 0;
    ssize_t n = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return n;
    CHECK(!(m.msg_flags & MSG_CTRUNC)); /* the endpoint sends one ring, in one message */
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm != NULL; cm = CMSG_NXTHDR(&m, cm)) {
        CHECK(cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS);
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t j = 0; j < k; j++) {
            CHECK(*nfds < 4);
            memcpy(&fds[(*nfds)++], CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
        }
    }
    return n;
}

/* The endpoint's ring came (fd, closed here): it must be what the
 * protocol says, a sealed memfd of a good size with the header, fresh. */
/* The endpoint's pool: sealed, read-only for us. */
static void pool_take(struct client *c, int fd)
{
    int seals = fcntl(fd, F_GET_SEALS);
    CHECK(seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW));
    CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED);
    close(fd);
    c->pool = p;
    c->pool_len = (size_t)st.st_size;
}

static void ring_take(struct client *c, int fd)
{
    int seals = fcntl(fd, F_GET_SEALS);
    CHECK(seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW));
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && S_ISREG(st.st_mode));
    CHECK(st.st_size >= RING_HDR + RING_MIN && st.st_size <= (off_t)RING_HDR + RING_MAX);
    uint64_t size = (uint64_t)st.st_size - RING_HDR;
    CHECK((size & (size - 1)) == 0);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED);
    c->ring_rx_fd = fd;
    struct ring_hdr *h = p;
    c->ring_rx = (struct cring){ .hdr = h, .data = (uint8_t *)p + RING_HDR, .size = size,
                            .map_len = (size_t)st.st_size };
    CHECK(h->magic == RING_MAGIC && h->version == RING_VERSION && h->hdr_size == RING_HDR
          && h->size == size);
    if (print_log)
        fprintf(stderr, "client %d: the endpoint's ring, %llu bytes\n", (int)(c - clients),
                (unsigned long long)size);
    c->ring_rx.idx = atomic_load_explicit(&h->tail, memory_order_acquire);
    CHECK(c->ring_rx.idx == 0);
    CHECK(atomic_load_explicit(&h->head, memory_order_acquire) <= size);
    c->rx_on = 1;
}

/* Reads what the endpoint's ring holds, and checks it as socket bytes;
 * says it sleeps once the ring is empty.  Returns the bytes read. */
static size_t ring_read(struct client *c)
{
    struct cring *r = &c->ring_rx;
    size_t total = 0;
    if (!c->rx_on || c->rd_shut)
        return 0;
    for (;;) {
        uint64_t head = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
        uint64_t avail = head - r->idx;
        if (avail > r->size) {
            /* The endpoint keeps its head within the ring, unless we
             * moved the indices under it. */
            CHECK(c->rx_scribbled);
            break;
        }
        if (avail == 0) {
            atomic_store_explicit(&r->hdr->reader_sleeps, 1, memory_order_relaxed);
            break;
        }
        if (!c->rx_scribbled) { /* else what comes is anything: dropped */
            buf_reserve(&c->in, (size_t)avail);
            size_t at = (size_t)(r->idx & (r->size - 1));
            size_t first = r->size - at < avail ? (size_t)(r->size - at) : (size_t)avail;
            memcpy(c->in.p + c->in.len, r->data + at, first);
            memcpy(c->in.p + c->in.len + first, r->data, (size_t)avail - first);
            c->in.len += (size_t)avail;
        }
        r->idx += avail;
        atomic_store_explicit(&r->hdr->tail, r->idx, memory_order_release);
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_exchange_explicit(&r->hdr->writer_waits, 0, memory_order_relaxed) != 0)
            client_wake(c);
        total += (size_t)avail;
        if (!c->rx_scribbled)
            parse_input(c);
    }
    return total;
}

/* Reads what the endpoint wrote; returns the bytes read. */
static size_t client_read(struct client *c)
{
    size_t total = 0;
    while (c->fd >= 0 && !c->eof && !c->rd_shut) {
        int fds[4], nfds;
        ssize_t n;
        if (c->rx_on) {
            /* Wake-ups, with no meaning of their own; never a ring again. */
            char wake[256];
            n = client_recv(c, wake, sizeof wake, fds, &nfds);
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            CHECK(nfds == 0);
        } else {
            buf_reserve(&c->in, READ_ROOM);
            n = client_recv(c, c->in.p + c->in.len, c->in.cap - c->in.len, fds, &nfds);
            if (n > 0 && nfds > 0) {
                /* The endpoint's marker: the last byte of this read, after
                 * its HELLO, to a client that announced bit 3. */
                CHECK(nfds == 2); /* its ring and its pool */
                CHECK(c->in.p[c->in.len + (size_t)n - 1] == RING_MARK);
                pool_take(c, fds[1]);
                c->in.len += (size_t)n - 1;
                parse_input(c);
                CHECK(c->ep_hello && (c->ep_features & LAHJA_WIRE_FEAT_SHM));
                if (!untracked)
                    CHECK(c->hello_sent && (c->features & LAHJA_WIRE_FEAT_SHM));
                ring_take(c, fds[0]);
                total += (size_t)n;
                total += ring_read(c);
                continue;
            }
            if (n > 0) {
                c->in.len += (size_t)n;
                parse_input(c);
            }
        }
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n == 0 || errno == ECONNRESET) {
            total += ring_read(c); /* what it wrote before it went */
            on_ep_eof(c);
            break;
        }
        CHECK(errno == EAGAIN);
        break;
    }
    return total + ring_read(c);
}

/* ------------------------------------------------------ frame builders */

static void op_hello(struct in *in)
{
    struct client *c = client_at(in);
    struct str name;
    in_str(in, conn_names, N_NAMES, &name);
    uint8_t fsel = in_u8(in), msel = in_u8(in), mode = in_u8(in);
    if (in->out)
        return;
    uint32_t features = (fsel & 0x7fu) | (fsel & 0x80u ? 0x80000000u : 0);
    uint32_t max_frame = conn_max_frames[msel % N_MAX_FRAMES];
    uint8_t *p = client_frame(c, LAHJA_WIRE_HEADER_SIZE + 15 + name.len);
    if (p == NULL)
        return;
    put_header(p, (uint32_t)(15 + name.len), LAHJA_WIRE_HELLO, 0);
    memcpy(p + 8, (mode & 2) ? "LAHJB" : "LAHJA", 5);
    p[13] = (mode & 1) ? 2 : LAHJA_WIRE_VERSION;
    put_u32(p + 14, features);
    put_u32(p + 18, max_frame);
    p[22] = (uint8_t)name.len;
    memcpy(p + 23, name.s, name.len);
    if (!c->hello_sent) {
        c->hello_sent = 1;
        c->features = features;
        c->max_frame = max_frame;
        c->named = name_index(name.s, name.len);
        if (c->named >= 0)
            names_tab[c->named].conns++;
    }
}

static void note_subs_type(struct client *c, const char *t, size_t len)
{
    int is_new;
    CHECK(lahja_strmap_insert(&c->subs, t, len, &is_new) != NULL);
    if (c->named >= 0)
        CHECK(lahja_strmap_insert(&names_tab[c->named].types, t, len, &is_new) != NULL);
}

/* A SUBS with flag ENTRIES: the types, each limited (sel bit 4) to the
 * endpoint's name or (bit 3) to another name, which leaves it out of what
 * the endpoint may send; with bit 5, the pattern `*` too.  Returns 0 if
 * a type is one the encoder refuses: the plain SUBS carries those. */
static int subs_entries(struct client *c, uint8_t sel, uint32_t seq, const struct str *types,
                         size_t n)
{
    static const char *const ep_name[] = { EP_NAME }, *const other[] = { "zz" };
    static const size_t ep_len[] = { sizeof EP_NAME - 1 }, other_len[] = { 2 };
    lahja_wire_entry_t es[9];
    int limited = (sel & 0x18) != 0, for_us = (sel & 0x10) != 0;
    for (size_t i = 0; i <= n; i++) {
        es[i] = (lahja_wire_entry_t){ .type = "*", .len = 1, .flags = LAHJA_WIRE_ENTRY_PATTERN };
        if (i < n) {
            es[i].type = types[i].s;
            es[i].len = types[i].len;
            es[i].flags = 0;
        }
        if (limited) {
            es[i].flags |= LAHJA_WIRE_ENTRY_ORIGINS;
            es[i].norigins = 1;
            es[i].origins = for_us ? ep_name : other;
            es[i].origin_lens = for_us ? ep_len : other_len;
        }
    }
    size_t ne = n + ((sel & 0x20) != 0);
    size_t size = lahja_wire_subs_entries_encode(NULL, 0, seq, es, ne);
    if (size == 0)
        return 0;
    uint8_t *p = client_frame(c, size);
    if (p == NULL)
        return 1;
    CHECK(lahja_wire_subs_entries_encode(p, size, seq, es, ne) == size);
    if (limited && !for_us)
        return 1;
    for (size_t i = 0; i < n; i++)
        note_subs_type(c, types[i].s, types[i].len);
    if (sel & 0x20) {
        note_subs_type(c, "*", 1); /* foreach_peer lists it as given */
        c->star = 1;
    }
    return 1;
}

static void op_subs(struct in *in)
{
    struct client *c = client_at(in);
    uint8_t sel = in_u8(in);
    uint32_t seq = (sel & 0x80) ? in_u32(in) : c->subs_seq + 1;
    size_t n = in_u8(in) % 9;
    struct str types[8];
    size_t body = 8;
    for (size_t i = 0; i < n; i++) {
        in_str(in, conn_types, N_TYPES, &types[i]);
        body += 1 + types[i].len;
    }
    if (in->out)
        return;
    if (!(sel & 0x40) || !subs_entries(c, sel, seq, types, n)) {
        uint8_t *p = client_frame(c, LAHJA_WIRE_HEADER_SIZE + body);
        if (p == NULL)
            return;
        put_header(p, (uint32_t)body, LAHJA_WIRE_SUBS, 0);
        put_u32(p + 8, seq);
        put_u32(p + 12, (uint32_t)n);
        p += 16;
        for (size_t i = 0; i < n; i++) {
            *p++ = (uint8_t)types[i].len;
            memcpy(p, types[i].s, types[i].len);
            p += types[i].len;
            note_subs_type(c, types[i].s, types[i].len);
        }
    }
    c->subs_seq = seq;
    if (c->nseqs < MAX_SEQS)
        c->seqs[c->nseqs++] = seq;
    else
        c->seqs_lost = 1;
}

static void op_ack(struct in *in)
{
    struct client *c = client_at(in);
    uint8_t sel = in_u8(in);
    uint32_t seq = (sel & 0x80) ? in_u32(in) : c->ep_subs_seq;
    if (in->out)
        return;
    uint8_t *p = client_frame(c, 12);
    if (p != NULL)
        lahja_wire_ack_encode(p, seq);
}

/* A TYPE frame binding `id` (any bytes for the name). */
static void put_type(struct client *c, uint32_t id, const char *t, size_t len)
{
    uint8_t *p = client_frame(c, LAHJA_WIRE_HEADER_SIZE + 5 + len);
    if (p == NULL)
        return;
    put_header(p, (uint32_t)(5 + len), LAHJA_WIRE_TYPE, 0);
    put_u32(p + 8, id);
    p[12] = (uint8_t)len;
    memcpy(p + 13, t, len);
}

/* The id of type t on client c, binding it first if it is new. */
static uint32_t bind_type(struct client *c, const char *t, size_t len)
{
    uint32_t id;
    int is_new;
    if (!lahja_wire_type_valid(t, len)) {
        put_type(c, c->tx.ntypes + 1, t, len); /* the endpoint must refuse it */
        return c->tx.ntypes + 1;
    }
    CHECK(lahja_wire_tx_intern(&c->tx, t, len, &id, &is_new) == 0);
    if (is_new)
        put_type(c, id, t, len);
    return id;
}

static void op_type(struct in *in)
{
    struct client *c = client_at(in);
    uint8_t sel = in_u8(in);
    uint32_t id = (sel & 0x80) ? in_u32(in) : 0;
    struct str t;
    in_str(in, conn_types, N_TYPES, &t);
    if (in->out || c->fd < 0)
        return;
    if (sel & 0x80)
        put_type(c, id, t.s, t.len);
    else
        bind_type(c, t.s, t.len);
}

static void op_event(struct in *in)
{
    struct client *c = client_at(in);
    struct str t;
    in_str(in, conn_types, N_TYPES, &t);
    uint8_t flags = in_u8(in), idsel = in_u8(in), size = in_u8(in), seed = in_u8(in);
    uint8_t variant = in_u8(in);
    if (in->out || c->fd < 0)
        return;
    uint32_t tid = (flags & 0x40) ? c->tx.ntypes + 1 + (idsel & 3) : bind_type(c, t.s, t.len);
    uint8_t wflags = (flags & 0x80) ? (flags & 0x7f) : (flags & 0x07);
    uint64_t id = 0;
    if (wflags & LAHJA_WIRE_RESPONSE) {
        switch (idsel & 3) {
        case 0: id = c->req_seen[0]; break;
        case 1: id = c->req_seen[1]; break;
        case 2: id = ep->next_id; break; /* the latest request of the endpoint */
        default: id = idsel >> 2; break;
        }
    } else if (wflags & LAHJA_WIRE_REQUEST) {
        id = (idsel & 0x80) ? (uint64_t)(idsel & 0x7f) : ++c->next_req;
        if (n_reqs < MAX_REQS)
            req_ids[n_reqs++] = id;
        else
            reqs_untracked = 1;
    }
    size_t len = conn_sizes[size % N_SIZES];
    pattern_fill(scratch, len, seed);
    const uint8_t *payload = scratch;
    size_t plen = len;
    uint32_t raw_len = (uint32_t)len;
    if (wflags & LAHJA_WIRE_LZ4) {
        size_t zn = lahja_wire_lz4_compress(scratch, len, zbuf, zcap);
        if (zn > 0) {
            payload = zbuf;
            plen = zn;
        }
        if (variant & 1)
            raw_len++;
        if (variant & 2)
            raw_len = MAX_PAYLOAD + 1 + seed;
    }
    size_t fixed = 4 + ((wflags & (LAHJA_WIRE_REQUEST | LAHJA_WIRE_RESPONSE)) ? 8 : 0)
                   + ((wflags & LAHJA_WIRE_LZ4) ? 4 : 0);
    uint8_t *p = client_frame(c, LAHJA_WIRE_HEADER_SIZE + fixed + plen);
    if (p == NULL)
        return;
    put_header(p, (uint32_t)(fixed + plen), LAHJA_WIRE_EVENT, wflags);
    put_u32(p + 8, tid);
    p += 12;
    if (wflags & (LAHJA_WIRE_REQUEST | LAHJA_WIRE_RESPONSE)) {
        put_u64(p, id);
        p += 8;
    }
    if (wflags & LAHJA_WIRE_LZ4) {
        put_u32(p, raw_len);
        p += 4;
    }
    memcpy(p, payload, plen);
    c->events_written++;
}

static void op_control(struct in *in)
{
    struct client *c = client_at(in);
    uint8_t sel = in_u8(in);
    uint32_t value = in_u32(in);
    if (in->out)
        return;
    if (sel & 1) {
        uint8_t *p = client_frame(c, 12);
        if (p != NULL) {
            put_header(p, 4, LAHJA_WIRE_CLOSE, 0);
            put_u32(p + 8, value);
        }
    } else {
        uint8_t *p = client_frame(c, 16);
        if (p != NULL) {
            put_header(p, 8, LAHJA_WIRE_RECEIPT, 0);
            put_u64(p + 8, (sel & 2) ? c->events_read : value);
        }
    }
}

static void op_raw(struct in *in)
{
    struct client *c = client_at(in);
    const uint8_t *bytes;
    size_t n = in_take(in, in_u8(in), &bytes);
    uint8_t *p = client_frame(c, n);
    if (p != NULL && n > 0) {
        memcpy(p, bytes, n);
        untracked = 1;
    }
}

/* ----------------------------------------------------- the endpoint's side */

static void check_rc(int rc, int internal_filter)
{
    CHECK(rc == 0 || rc == LAHJA_ENOSUBSCRIBERS || rc == -EAGAIN || rc == -EMSGSIZE
          || (internal_filter && rc == -EINVAL));
}

/* A new event of type conn_types[type] with a pattern payload. */
static lahja_event_t *make_event(uint8_t type, uint8_t size, uint8_t seed, int wrap,
                                 const char *response_type)
{
    /* A request's payload is copied into a fresh allocation: up to 64 KiB. */
    size_t len = response_type != NULL ? conn_sizes[size % N_SMALL_SIZES]
                                       : conn_sizes[size % N_SIZES];
    const char *t = conn_types[type % N_TYPES];
    lahja_event_t *ev = NULL;
    int rc;
    if (response_type == NULL && (wrap || len > 65536)) {
        size_t i;
        for (i = 0; i < POOL && pool_busy[i]; i++)
            ;
        uint8_t *p = i < POOL ? pool[i] : malloc(len ? len : 1);
        CHECK(p != NULL);
        pattern_fill(p, len, seed);
        rc = lahja_event_wrap(t, p, len, pool_release, (void *)(uintptr_t)i, &ev);
        CHECK(rc == 0);
        if (i < POOL)
            pool_busy[i] = 1;
    } else {
        pattern_fill(scratch, len, seed);
        rc = response_type != NULL ? lahja_request_new(t, response_type, scratch, len, &ev)
                                   : lahja_event_new(t, scratch, len, &ev);
    }
    CHECK(rc == 0);
    return ev;
}

static int on_handler(lahja_endpoint_t *e, lahja_event_t *ev, void *user);

static void broadcast(uint8_t type, uint8_t size, uint8_t seed, uint8_t mode)
{
    const char *resp = (mode & 1) ? conn_types[(seed >> 1) % N_TYPES] : NULL;
    lahja_event_t *ev = make_event(type, size, seed, (mode & 2) && resp == NULL, resp);
    lahja_broadcast_config_t cfg = {
        .allow_no_subscribers = (mode & 4) != 0,
        .internal = (mode & 8) != 0,
        .filter_endpoint = (mode & 16) ? conn_names[(mode >> 5) & 3] : NULL,
    };
    int rc = lahja_broadcast_nowait(ep, ev, &cfg);
    check_rc(rc, cfg.internal && cfg.filter_endpoint != NULL);
    if (mode & 0x80) {
        int again = lahja_broadcast_nowait(ep, ev, &cfg);
        if (rc == 0 && !cfg.allow_no_subscribers)
            CHECK(again == LAHJA_EBIND); /* delivered, so bound (B8) */
    }
    lahja_event_unref(ev);
}

static void respond(const lahja_event_t *request, uint8_t type, uint8_t size, uint8_t seed)
{
    lahja_event_t *resp = make_event(type, size, seed, 0, NULL);
    int rc = lahja_respond(ep, request, resp);
    CHECK(rc == 0 || rc == -EINVAL || rc == LAHJA_ENOSUBSCRIBERS || rc == -EAGAIN
          || rc == -EMSGSIZE);
    if (lahja_event_id(request) == 0)
        CHECK(rc == -EINVAL);
    lahja_event_unref(resp);
}

static int on_handler(lahja_endpoint_t *e, lahja_event_t *ev, void *user)
{
    struct sub_slot *s = user;
    CHECK(e == ep);
    CHECK(strcmp(lahja_event_type(ev), conn_types[s->type]) == 0);
    const char *origin = lahja_event_origin(ev);
    CHECK(origin != NULL);
    size_t len;
    const uint8_t *p = lahja_event_payload(ev, &len);
    if (strcmp(origin, EP_NAME) == 0) {
        CHECK(pattern_ok(p, len));
    } else {
        if (!untracked)
            CHECK(name_find(origin, strlen(origin)) != NULL);
        CHECK(len == 0 || p != NULL);
    }
    uint8_t b = s->behaviour;
    uint8_t other_type = (uint8_t)(b >> 6);
    if (b & 1)
        respond(ev, other_type, b, (uint8_t)len);
    if (b & 2) {
        for (size_t i = 0; i < MAX_KEPT; i++) {
            if (kept[i] == NULL) {
                CHECK((kept[i] = lahja_event_ref(ev)) != NULL);
                break;
            }
        }
    }
    if ((b & 4) && handler_depth < HANDLER_DEPTH) {
        handler_depth++;
        broadcast(other_type, (uint8_t)(b >> 3), b, (uint8_t)(b & 0x1c));
        handler_depth--;
    }
    if ((b & 8) && s->s != NULL) {
        lahja_subscription_cancel(s->s);
        s->s = NULL;
    }
    if (b & 16) {
        struct sub_slot *o = &subs[(size_t)(s - subs + 1) % MAX_SUBS];
        if (o->s != NULL) {
            lahja_subscription_cancel(o->s);
            o->s = NULL;
        }
    }
    return (b & 32) ? -EIO : 0;
}

static void op_subscribe(struct in *in)
{
    uint8_t type = in_u8(in) % N_TYPES, behaviour = in_u8(in);
    if (in->out)
        return;
    for (size_t i = 0; i < MAX_SUBS; i++) {
        struct sub_slot *s = &subs[i];
        if (s->s != NULL)
            continue;
        s->type = type;
        s->behaviour = behaviour;
        CHECK(lahja_subscribe(ep, conn_types[type], on_handler, s, &s->s) == 0);
        CHECK(lahja_is_endpoint_subscribed_to(ep, EP_NAME, conn_types[type]));
        return;
    }
}

static void op_unsubscribe(struct in *in)
{
    struct sub_slot *s = &subs[in_u8(in) % MAX_SUBS];
    if (s->s != NULL) {
        lahja_subscription_cancel(s->s);
        s->s = NULL;
    }
}

static void op_respond(struct in *in)
{
    uint8_t slot = in_u8(in), type = in_u8(in), size = in_u8(in), seed = in_u8(in);
    if (in->out || kept[slot % MAX_KEPT] == NULL)
        return;
    respond(kept[slot % MAX_KEPT], type, size, seed);
}

static void op_stream(struct in *in)
{
    uint8_t slot = in_u8(in) % MAX_STREAMS, type = in_u8(in), mode = in_u8(in);
    if (in->out)
        return;
    if (streams[slot] != NULL) {
        lahja_stream_close(streams[slot]);
        streams[slot] = NULL;
        return;
    }
    /* A few events at most: a stream nobody reads keeps what it holds. */
    lahja_stream_options_t o = {
        .capacity = 1 + ((mode >> 2) & 3),
        .policy = (mode & 16) ? LAHJA_STREAM_DROP_NEWEST : LAHJA_STREAM_DROP_OLDEST,
    };
    CHECK(lahja_stream_open(ep, conn_types[type % N_TYPES], mode & 3, &o, &streams[slot]) == 0);
}

/* ---------------------------------------------------------------- tasks */

static lahja_time_t task_deadline(uint8_t ms)
{
    uint32_t step = conn_clock_steps[ms % N_CLOCK_STEPS];
    return step == 0 ? LAHJA_FOREVER : lahja_deadline_in(step);
}

static int task_main(void *arg)
{
    struct task_slot *ts = arg;
    lahja_time_t deadline = task_deadline(ts->ms);
    const char *type = conn_types[ts->type % N_TYPES];
    lahja_event_t *ev = NULL, *got = NULL;
    int rc;
    switch (ts->kind % TASK_KINDS) {
    case TASK_REQUEST: {
        const char *resp = conn_types[ts->resp % N_TYPES];
        ev = make_event(ts->type, ts->size, ts->seed, 0, resp);
        rc = lahja_request(ep, ev, NULL, deadline, &got);
        if (rc == 0)
            CHECK(strcmp(lahja_event_type(got), resp) == 0);
        break;
    }
    case TASK_WAIT_FOR:
        rc = lahja_wait_for(ep, type, deadline, &got);
        if (rc == 0)
            CHECK(strcmp(lahja_event_type(got), type) == 0);
        break;
    case TASK_BROADCAST:
        ev = make_event(ts->type, ts->size, ts->seed, ts->resp & 1, NULL);
        rc = lahja_broadcast(ep, ev, NULL, deadline);
        CHECK(rc == 0 || rc == LAHJA_ENOSUBSCRIBERS || rc == -EMSGSIZE || rc == -ECANCELED
              || rc == -ETIMEDOUT);
        break;
    case TASK_CONNECTED: {
        const char *name = conn_names[ts->resp % N_NAMES];
        rc = lahja_wait_until_connected_to(ep, name, deadline);
        if (rc == 0)
            CHECK(lahja_is_connected_to(ep, name));
        break;
    }
    case TASK_CONNECT: {
        lahja_conn_config_t cfg;
        if (lahja_conn_config_from_name(&cfg, conn_names[ts->resp % N_NAMES], dir) != 0)
            break;
        rc = lahja_connect(ep, &cfg, 1, deadline);
        CHECK(rc <= 0);
        break;
    }
    case TASK_DELIVERED:
        rc = lahja_wait_until_delivered(ep, deadline);
        CHECK(rc == 0 || rc == LAHJA_EREMOTEDISCONNECTED || rc == -ETIMEDOUT || rc == -ECANCELED);
        break;
    default:
        rc = lahja_wait_until_any_endpoint_subscribed_to(ep, type, deadline);
        if (rc == 0)
            CHECK(lahja_is_any_endpoint_subscribed_to(ep, type));
        break;
    }
    lahja_event_unref(got);
    lahja_event_unref(ev);
    ts->done = 1;
    return 0;
}

/* Every callback call's end: the same checks as the task's. */
static void cb_check(struct cb_slot *c, int rc, lahja_event_t *got)
{
    CHECK(c->busy);
    CHECK(rc <= 0);
    switch (c->kind % TASK_KINDS) {
    case TASK_REQUEST:
    case TASK_WAIT_FOR:
        CHECK((rc == 0) == (got != NULL));
        if (rc == 0)
            CHECK(strcmp(lahja_event_type(got), c->type) == 0);
        break;
    case TASK_BROADCAST:
        CHECK(rc == 0 || rc == LAHJA_ENOSUBSCRIBERS || rc == -EMSGSIZE || rc == -ECANCELED
              || rc == -ETIMEDOUT || rc == LAHJA_ELIFECYCLE);
        break;
    case TASK_CONNECTED:
        if (rc == 0)
            CHECK(lahja_is_connected_to(ep, c->name));
        break;
    case TASK_DELIVERED:
        CHECK(rc == 0 || rc == LAHJA_EREMOTEDISCONNECTED || rc == -ETIMEDOUT || rc == -ECANCELED
              || rc == LAHJA_ELIFECYCLE);
        break;
    case TASK_SUBSCRIBED:
        if (rc == 0)
            CHECK(lahja_is_any_endpoint_subscribed_to(ep, c->type));
        break;
    }
    CHECK(rc != 0 || lahja_endpoint_last_error(ep) != NULL);
    lahja_event_unref(got);
    lahja_event_unref(c->ev);
    c->ev = NULL;
    c->op = NULL;
    c->busy = 0;
}

static void on_cb_event(lahja_endpoint_t *e, int rc, lahja_event_t *got, void *user)
{
    CHECK(e == ep);
    cb_check(user, rc, got);
}

static void on_cb_done(lahja_endpoint_t *e, int rc, void *user)
{
    CHECK(e == ep);
    cb_check(user, rc, NULL);
}

static void cb_start(struct task_slot *a)
{
    if (a->kind & 0x40) {
        lahja_op_cancel(cbs[a->type % MAX_CBS].op);
        return;
    }
    struct cb_slot *c = NULL;
    for (size_t i = 0; i < MAX_CBS && c == NULL; i++)
        if (!cbs[i].busy)
            c = &cbs[i];
    if (c == NULL)
        return;
    *c = (struct cb_slot){ .kind = a->kind, .busy = 1 };
    lahja_time_t deadline = task_deadline(a->ms);
    const char *type = conn_types[a->type % N_TYPES];
    int rc;
    switch (a->kind % TASK_KINDS) {
    case TASK_REQUEST:
        c->type = conn_types[a->resp % N_TYPES];
        c->ev = make_event(a->type, a->size, a->seed, 0, c->type);
        rc = lahja_request_cb(ep, c->ev, NULL, deadline, on_cb_event, c, &c->op);
        break;
    case TASK_WAIT_FOR:
        c->type = type;
        rc = lahja_wait_for_cb(ep, type, deadline, on_cb_event, c, &c->op);
        break;
    case TASK_BROADCAST:
        c->ev = make_event(a->type, a->size, a->seed, a->resp & 1, NULL);
        rc = lahja_broadcast_cb(ep, c->ev, NULL, deadline, on_cb_done, c, &c->op);
        break;
    case TASK_CONNECTED:
        c->name = conn_names[a->resp % N_NAMES];
        rc = lahja_wait_until_connected_to_cb(ep, c->name, deadline, on_cb_done, c, &c->op);
        break;
    case TASK_CONNECT: {
        lahja_conn_config_t cfg;
        rc = lahja_conn_config_from_name(&cfg, conn_names[a->resp % N_NAMES], dir);
        if (rc == 0)
            rc = lahja_connect_cb(ep, &cfg, 1, deadline, on_cb_done, c, &c->op);
        break;
    }
    case TASK_DELIVERED:
        rc = lahja_wait_until_delivered_cb(ep, deadline, on_cb_done, c, &c->op);
        break;
    default:
        c->type = type;
        rc = lahja_wait_until_any_endpoint_subscribed_to_cb(ep, type, deadline, on_cb_done, c,
                                                            &c->op);
        break;
    }
    if (rc != 0) { /* refused at once: no callback comes */
        CHECK(rc < 0);
        lahja_event_unref(c->ev);
        *c = (struct cb_slot){ 0 };
    } else {
        CHECK(c->busy && c->op != NULL); /* never called from within the call */
    }
}

static void op_task(struct in *in)
{
    struct task_slot a;
    a.kind = in_u8(in);
    a.type = in_u8(in);
    a.resp = in_u8(in);
    a.size = in_u8(in);
    a.seed = in_u8(in);
    a.ms = in_u8(in);
    a.done = 0;
    if (in->out)
        return;
    if (a.kind & 0x80) {
        cb_start(&a);
        return;
    }
    for (size_t i = 0; i < MAX_TASKS; i++) {
        if (tasks[i].t != NULL)
            continue;
        tasks[i] = a;
        CHECK(lahja_spawn(rt, task_main, &tasks[i], NULL, &tasks[i].t) == 0);
        return;
    }
}

/* ------------------------------------------------------- shared memory */

/* A memfd of len bytes headed as a ring of `size` data bytes, sealed
 * against shrinking and growing if `seal`. */
static int ring_file(size_t len, uint64_t size, int seal)
{
    int fd = memfd_create("fuzz-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)len) == 0);
    if (seal)
        CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    uint8_t h[24];
    put_u64(h, RING_MAGIC);
    put_u32(h + 8, RING_VERSION);
    put_u32(h + 12, RING_HDR);
    put_u64(h + 16, size);
    CHECK(pwrite(fd, h, sizeof h, 0) == (ssize_t)sizeof h);
    return fd;
}

/* A pool for the marker: sealed unless told. */
static int pool_file(int seal)
{
    int fd = memfd_create("fuzz-pool", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 1 << 20) == 0);
    if (seal)
        CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    return fd;
}

static void ring_put_u64(int fd, off_t at, uint64_t v)
{
    uint8_t b[8];
    put_u64(b, v);
    CHECK(pwrite(fd, b, sizeof b, at) == (ssize_t)sizeof b);
}

/* The marker with fds[0..nfds); whether it went (a full socket keeps it). */
static int send_marker(struct client *c, const int *fds, int nfds)
{
    char mark = RING_MARK;
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(2 * sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = { .iov_base = &mark, .iov_len = 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int)) };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
    if (sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
        return 1;
    CHECK(errno == EAGAIN || errno == EPIPE || errno == ECONNRESET);
    return 0;
}

static void op_shm_offer(struct in *in)
{
    struct client *c = client_at(in);
    uint8_t mode = in_u8(in);
    if (in->out || c->fd < 0)
        return;
    unsigned kind = mode % SHM_OFFERS, sub = mode >> 3;
    int good = kind == SHM_GOOD || kind == SHM_EARLY || kind == SHM_READ_ONLY;
    /* What c built so far goes first, on the socket, as far as it takes
     * it: the rest follows through the ring.  An early marker overtakes
     * it. */
    if (kind != SHM_EARLY)
        client_send(c, 0);
    uint64_t size = (good && (mode & SHM_BIG)) ? 2 * RING_MIN : RING_MIN;
    int fds[2] = { -1, -1 }, nfds = 2;
    switch (kind) {
    case SHM_UNSEALED:
        fds[0] = ring_file(RING_HDR + size, size, 0);
        break;
    case SHM_BAD_SIZE: {
        static const size_t lens[] = { RING_HDR + RING_MIN + 4096, RING_HDR + RING_MIN / 2,
                                       (size_t)RING_HDR + 2 * (size_t)RING_MAX };
        size_t len = lens[sub % 3];
        fds[0] = ring_file(len, len - RING_HDR, 1);
        break;
    }
    case SHM_BAD_HEADER:
        fds[0] = ring_file(RING_HDR + size, size, 1);
        switch (sub % 4) {
        case 0: ring_put_u64(fds[0], 0, RING_MAGIC ^ 1); break;
        case 1: ring_put_u64(fds[0], 8, (uint64_t)RING_HDR << 32 | (RING_VERSION + 1)); break;
        case 2: ring_put_u64(fds[0], 16, size * 2); break;
        default: ring_put_u64(fds[0], 64, size + 1); break;
        }
        break;
    case SHM_NOT_MEMFD:
        if (sub % 3 == 2 && c->ring_rx_fd > 0) {
            /* The endpoint's own ring, sent back: a good one, but what
             * it reads from it is its own output, and as its reader it
             * moves the tail c reads behind. */
            fds[0] = fcntl(c->ring_rx_fd, F_DUPFD_CLOEXEC, 0);
            CHECK(fds[0] >= 0);
            untracked = 1;
            c->rx_scribbled = 1;
        } else if (sub % 3 == 1) {
            int pp[2];
            CHECK(pipe2(pp, O_CLOEXEC) == 0);
            close(pp[1]);
            fds[0] = pp[0];
        } else {
            fds[0] = open("/dev/null", O_RDWR | O_CLOEXEC);
            CHECK(fds[0] >= 0);
        }
        break;
    case SHM_TWO_FDS: /* not the two it takes: a ring without a pool, or a bad pool */
        fds[0] = ring_file(RING_HDR + size, size, 1);
        if (sub % 2 == 0)
            nfds = 1;
        else
            fds[1] = pool_file(0);
        break;
    default: /* good */
        fds[0] = ring_file(RING_HDR + size, size, 1);
        if (mode & SHM_WRAP) {
            ring_put_u64(fds[0], 64, UINT64_MAX - size / 2);
            ring_put_u64(fds[0], 128, UINT64_MAX - size / 2);
        }
        break;
    }
    struct cring r = { 0 };
    if (good && c->ring_tx.hdr == NULL) {
        void *p = mmap(NULL, RING_HDR + size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
        CHECK(p != MAP_FAILED);
        r = (struct cring){ .hdr = p, .data = (uint8_t *)p + RING_HDR, .size = size,
                            .map_len = RING_HDR + size };
        r.idx = atomic_load_explicit(&r.hdr->head, memory_order_relaxed);
    }
    if (kind == SHM_READ_ONLY) { /* the endpoint cannot map it to write its tail */
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
        int ro = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(ro >= 0);
        close(fds[0]);
        fds[0] = ro;
    }
    if (nfds == 2 && fds[1] < 0)
        fds[1] = pool_file(1);
    int sent = send_marker(c, fds, nfds);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (sent && r.hdr != NULL) {
        c->ring_tx = r;
        c->tx_on = 1;
        c->wake = mode & (SHM_WAKE_ALWAYS | SHM_WAKE_NEVER);
    } else {
        cring_unmap(&r);
    }
}

/* An index or size moved as SHM_POKE's bits 4-5 say. */
static uint64_t poke_value(uint64_t base, uint64_t size, unsigned how, uint64_t value)
{
    switch (how) {
    case 0: return base + (uint64_t)(int64_t)(int8_t)value;
    case 1: return value;
    case 2: return base + size + (value & 0xff);
    default: return base - size - (value & 0xff);
    }
}

static void op_shm_poke(struct in *in)
{
    struct client *c = client_at(in);
    uint8_t field = in_u8(in);
    uint64_t value = in_u32(in);
    value |= (uint64_t)in_u32(in) << 32;
    if (in->out)
        return;
    int theirs = (field & SHM_EP_RING) != 0;
    struct cring *r = theirs ? &c->ring_rx : &c->ring_tx;
    if (r->hdr == NULL)
        return;
    struct ring_hdr *h = r->hdr;
    unsigned how = (field >> 4) & 3;
    uint32_t flag = how == 1 ? (uint32_t)value : (uint32_t)(value & 1);
    switch ((field & 7) % SHM_FIELDS) {
    case SHM_HEAD:
    case SHM_TAIL: {
        _Atomic uint64_t *idx = (field & 7) % SHM_FIELDS == SHM_HEAD ? &h->head : &h->tail;
        uint64_t v = poke_value(atomic_load_explicit(idx, memory_order_relaxed), r->size, how, value);
        atomic_store_explicit(idx, v, memory_order_release);
        /* What the endpoint reads, or writes to c, is anything from now
         * on. */
        if (theirs)
            c->rx_scribbled = 1;
        else
            untracked = 1;
        break;
    }
    case SHM_READER_SLEEPS: atomic_store_explicit(&h->reader_sleeps, flag, memory_order_relaxed); break;
    case SHM_WRITER_WAITS: atomic_store_explicit(&h->writer_waits, flag, memory_order_relaxed); break;
    case SHM_SIZE: h->size = poke_value(h->size, r->size, how, value); break;
    default: h->magic = value; break;
    }
}

/* ------------------------------------------------------------ the loop */

static void op_pump(void)
{
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        size_t moved = 0;
        for (size_t i = 0; i < MAX_CLIENTS; i++)
            moved += client_send(&clients[i], 0);
        run_once();
        for (size_t i = 0; i < MAX_CLIENTS; i++)
            moved += client_read(&clients[i]);
        if (moved == 0 && round > 0)
            break;
    }
}

static void op_clock(struct in *in)
{
    uint32_t ms = conn_clock_steps[in_u8(in) % N_CLOCK_STEPS];
    vclock_ns += (uint64_t)ms * 1000000u;
    run_once();
}

static void op_shut(struct in *in)
{
    struct client *c = client_at(in);
    uint8_t how = in_u8(in);
    if (in->out || c->fd < 0)
        return;
    switch (how % 3) {
    case 0: shutdown(c->fd, SHUT_WR); break;
    case 1: client_close(c); break;
    default: /* the endpoint's writes fail */
        shutdown(c->fd, SHUT_RD);
        c->rd_shut = 1;
        break;
    }
}

/* ------------------------------------------------------------ invariants */

static size_t npeers;

static void on_peer(const char *name, const char *const *types, size_t ntypes, void *user)
{
    (void)user;
    npeers++;
    CHECK(strcmp(name, EP_NAME) != 0);
    CHECK(lahja_wire_name_valid(name, strlen(name)));
    CHECK(lahja_is_connected_to(ep, name));
    if (untracked)
        return;
    /* A peer said so in a HELLO, during this input. */
    struct name_entry *e = name_find(name, strlen(name));
    CHECK(e != NULL);
    for (size_t i = 0; i < ntypes; i++)
        CHECK(lahja_strmap_find(&e->types, types[i], strlen(types[i])) != NULL);
}

static size_t check_peers(void)
{
    lahja_delivery_t d;
    CHECK(lahja_delivery_stats(ep, NULL, &d) == 0);
    CHECK(d.confirmed + d.lost <= d.sent);
    npeers = 0;
    CHECK(lahja_is_connected_to(ep, EP_NAME)); /* it counts itself, never as a peer */
    lahja_foreach_peer(ep, on_peer, NULL);
    return npeers;
}

/* ---------------------------------------------------------- input's end */

/* Whether connections wait in the endpoint's listening socket. */
static int backlog(void)
{
    uv_os_fd_t fd;
    CHECK(uv_fileno((uv_handle_t *)&ep->server, &fd) == 0);
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static int cbs_busy(void)
{
    int n = 0;
    for (size_t i = 0; i < MAX_CBS; i++)
        n += cbs[i].busy;
    return n;
}

static void end_input(void)
{
    for (size_t i = 0; i < MAX_TASKS; i++)
        if (tasks[i].t != NULL && !tasks[i].done)
            lahja_task_cancel(tasks[i].t);
    for (size_t i = 0; i < MAX_CBS; i++)
        if (cbs[i].busy)
            lahja_op_cancel(cbs[i].op);
    for (size_t i = 0; i < MAX_SUBS; i++) {
        lahja_subscription_cancel(subs[i].s);
        subs[i].s = NULL;
    }
    for (size_t i = 0; i < MAX_STREAMS; i++) {
        lahja_stream_close(streams[i]);
        streams[i] = NULL;
    }
    for (size_t i = 0; i < MAX_KEPT; i++) {
        lahja_event_unref(kept[i]);
        kept[i] = NULL;
    }
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        client_close(&clients[i]);

    /* Every peer has gone: the endpoint must notice within a few turns,
     * also of the connections it has not accepted yet (what they sent
     * would reach the next input otherwise). */
    int turns = 0;
    while ((ep->nconns_open > 0 || lahja_rt_ntasks(rt) > 0 || cbs_busy() > 0 || backlog()) &&
           turns++ < DRAIN_TURNS) {
        run_once();
        for (int l = 0; l < N_LISTEN; l++)
            while (client_accept(&clients[0], l))
                client_close(&clients[0]);
    }
    CHECK(ep->nconns_open == 0);
    CHECK(!backlog());
    CHECK(lahja_rt_ntasks(rt) == 0);
    CHECK(cbs_busy() == 0); /* every callback call came back */
    CHECK(lahja_list_empty(&ep->ops));
    CHECK(lahja_list_empty(&ep->conns));
    for (size_t i = 0; i < MAX_TASKS; i++) {
        CHECK(tasks[i].t == NULL || tasks[i].done);
        lahja_task_detach(tasks[i].t);
        tasks[i].t = NULL;
    }
    CHECK(check_peers() == 0);
    /* Every connection has ended: whatever was sent is confirmed or
     * reported lost (B30), and at least what the clients read was sent. */
    lahja_delivery_t all;
    CHECK(lahja_delivery_stats(ep, NULL, &all) == 0);
    CHECK(all.sent == all.confirmed + all.lost);
    for (size_t i = 0; i < n_names; i++) {
        struct name_entry *e = &names_tab[i];
        CHECK(strcmp(e->s, EP_NAME) == 0 || !lahja_is_connected_to(ep, e->s));
        lahja_delivery_t d;
        int rc = lahja_delivery_stats(ep, e->s, &d);
        if (!untracked && rc == -ENOENT)
            CHECK(e->events_read == 0);
        if (!untracked && rc == 0) {
            lahja_delivery_t b = e->known ? e->before : (lahja_delivery_t){ 0, 0, 0 };
            CHECK(d.sent - b.sent == (d.confirmed - b.confirmed) + (d.lost - b.lost));
            CHECK(d.sent - b.sent >= e->events_read);
        }
        lahja_strmap_free(&e->types);
    }
    n_names = 0;
    n_reqs = 0;
    untracked = 0;
    reqs_untracked = 0;
    CHECK(lahja_subscribed_types(ep, NULL, 0) == 0);
    for (size_t i = 0; i < POOL; i++)
        CHECK(!pool_busy[i]); /* every event the endpoint held is freed */
}

/* Descriptors this process holds (the endpoint's and ours). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Mappings of the endpoint's rings (its own, and those of it a client
 * maps) and of the clients' rings. */
static int count_rings(void)
{
    static char line[4096];
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL)
        n += strstr(line, "lahja-ring") != NULL || strstr(line, "fuzz-ring") != NULL;
    fclose(f);
    return n;
}

static int spinning(void)
{
    /* shm.c watches its rings for a while before it polls: after a
     * request of its own, or one that came, or a busy read. */
    return ep != NULL && ep->shm_spinning;
}

/* ----------------------------------------------------------- set-up */

static int stop_task(void *arg)
{
    return lahja_endpoint_stop(arg);
}

static void teardown(void)
{
    vclock_on = 1;
    if (ep != NULL) {
        /* Stopping needs a task. */
        lahja_task_t *t;
        if (lahja_spawn(rt, stop_task, ep, NULL, &t) == 0) {
            for (int i = 0; i < 1000 && !lahja_task_done(t); i++)
                run_once();
            if (lahja_task_done(t)) {
                lahja_task_detach(t);
                lahja_endpoint_free(ep);
                ep = NULL; /* the clock looks at it */
                lahja_rt_close(rt);
                uv_run(&loop, UV_RUN_NOWAIT);
                uv_loop_close(&loop);
            }
        }
    }
    for (int l = 0; l < N_LISTEN; l++) {
        if (listen_fd[l] >= 0)
            close(listen_fd[l]);
        unlink(listen_path[l]);
    }
    if (helper_fd >= 0)
        close(helper_fd);
    unlink(sock_path);
    rmdir(dir);
    free(scratch);
    free(zbuf);
    for (size_t i = 0; i < POOL; i++)
        free(pool[i]);
    for (size_t i = 0; i < MAX_CLIENTS; i++) {
        buf_free(&clients[i].out);
        buf_free(&clients[i].in);
    }
    free(tables[0]);
    free(tables[1]);
    free(unpacked);
    vclock_on = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    struct timespec ts;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    vclock_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    vclock_on = 1;
    print_log = getenv("LAHJA_FUZZ_LOG") != NULL;

    snprintf(dir, sizeof dir, "/tmp/lahja-fuzz-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(sock_path, sizeof sock_path, "%s/%s.ipc", dir, EP_NAME);
    atexit(teardown);
    helper_start(); /* first: it needs nothing of what follows */

    tables_init();
    for (size_t i = 0; i < POOL; i++)
        CHECK((pool[i] = malloc(MAX_PAYLOAD + 2)) != NULL);
    scratch = malloc(MAX_PAYLOAD + 2);
    unpacked = malloc(MAX_PAYLOAD + 2);
    zcap = lahja_wire_lz4_bound(MAX_PAYLOAD + 2);
    zbuf = malloc(zcap);
    CHECK(scratch != NULL && unpacked != NULL && zbuf != NULL);

    CHECK(uv_loop_init(&loop) == 0);
    CHECK(lahja_rt_new(&loop, NULL, &rt) == 0);
    /* The clock must be ours, or the timeouts would fire at random. */
    uv_update_time(&loop);
    uint64_t before = uv_now(&loop);
    vclock_ns += (uint64_t)12345 * 1000000u;
    uv_update_time(&loop);
    CHECK(uv_now(&loop) == before + 12345);

    for (int l = 0; l < N_LISTEN; l++) {
        snprintf(listen_path[l], sizeof listen_path[l], "%s/%s.ipc", dir,
                 conn_names[listen_names[l]]);
        listen_fd[l] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        CHECK(listen_fd[l] >= 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        memcpy(sa.sun_path, listen_path[l], strlen(listen_path[l]) + 1);
        CHECK(bind(listen_fd[l], (struct sockaddr *)&sa, sizeof sa) == 0);
        CHECK(listen(listen_fd[l], 16) == 0);
    }

    lahja_conn_config_t cfg;
    CHECK(lahja_conn_config_from_path(&cfg, EP_NAME, sock_path) == 0);
    lahja_endpoint_options_t o = {
        .max_payload = MAX_PAYLOAD,
        .high_water = HIGH_WATER,
        .handshake_timeout_ms = TIMEOUT_MS,
        .compress_threshold = 4096,
        .max_hello = 300, /* a HELLO with a 255-byte name is 270 */
        .max_incomplete = 3,
        .max_connections = 3,
        .max_peer_types = 6,
        .frame_timeout_ms = TIMEOUT_MS,
        .shm_ring = 64 << 10, /* the smallest: full rings within reach */
        .log = on_log,
    };
    CHECK(lahja_endpoint_new(EP_NAME, &o, &ep) == 0);
    CHECK(lahja_endpoint_start(ep, &cfg) == 0);
    for (size_t i = 0; i < MAX_CLIENTS; i++) {
        clients[i].fd = -1;
        clients[i].named = -1;
    }
    vclock_on = 0;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vclock_on = 1;
    int fds_before = count_fds(), rings_before = count_rings();
    struct in in = { data, size, 0 };
    while (!in.out && in.left > 0) {
        static const char *const op_names[OP_COUNT] = {
            "OPEN", "SEND", "RAW", "HELLO", "SUBS", "ACK", "TYPE", "EVENT", "CONTROL", "READ",
            "SHUT", "RUN", "PUMP", "SUBSCRIBE", "UNSUBSCRIBE", "BROADCAST", "RESPOND", "TASK",
            "CLOCK", "STREAM", "ACCEPT", "SHM_OFFER", "SHM_POKE",
        };
        uint8_t op = in_u8(&in) % OP_COUNT;
        if (print_log)
            fprintf(stderr, "%s", op_names[op]);
        for (size_t i = 0; print_log && i < 8 && i < in.left; i++)
            fprintf(stderr, " %02x", in.p[i]);
        if (print_log)
            fprintf(stderr, "\n");
        switch (op) {
        case OP_OPEN: op_open(&in); break;
        case OP_SEND: {
            struct client *c = client_at(&in);
            client_send(c, in_u16(&in));
            break;
        }
        case OP_RAW: op_raw(&in); break;
        case OP_HELLO: op_hello(&in); break;
        case OP_SUBS: op_subs(&in); break;
        case OP_ACK: op_ack(&in); break;
        case OP_TYPE: op_type(&in); break;
        case OP_EVENT: op_event(&in); break;
        case OP_CONTROL: op_control(&in); break;
        case OP_READ: client_read(client_at(&in)); break;
        case OP_SHUT: op_shut(&in); break;
        case OP_RUN: {
            int n = 1 + in_u8(&in) % 8;
            for (int i = 0; i < n; i++)
                run_once();
            break;
        }
        case OP_PUMP: op_pump(); break;
        case OP_SUBSCRIBE: op_subscribe(&in); break;
        case OP_UNSUBSCRIBE: op_unsubscribe(&in); break;
        case OP_BROADCAST: {
            uint8_t type = in_u8(&in), sz = in_u8(&in), seed = in_u8(&in), mode = in_u8(&in);
            if (!in.out)
                broadcast(type, sz, seed, mode);
            break;
        }
        case OP_RESPOND: op_respond(&in); break;
        case OP_TASK: op_task(&in); break;
        case OP_CLOCK: op_clock(&in); break;
        case OP_STREAM: op_stream(&in); break;
        case OP_ACCEPT: {
            uint8_t b = in_u8(&in);
            if (!in.out)
                client_accept(&clients[b % MAX_CLIENTS], (b >> 2) & 1);
            break;
        }
        case OP_SHM_OFFER: op_shm_offer(&in); break;
        case OP_SHM_POKE: op_shm_poke(&in); break;
        default: break;
        }
        check_peers();
    }
    end_input();
    /* Every connection ended: the endpoint let go of their sockets, the
     * descriptors that came with them and their rings. */
    CHECK(count_fds() == fds_before);
    CHECK(count_rings() == rings_before);
    vclock_on = 0;
    return 0;
}
