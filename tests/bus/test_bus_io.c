/*
 * The bus core's I/O paths under load: the write queue (small frames
 * copied into chunks, large payloads sent zero-copy, output written from
 * inside the broadcasting call and handed to libuv when the socket is
 * full), the index of pending requests, busy polling after a read, and a
 * read buffer grown for large frames, kept, then shrunk.
 *
 * Each test's body runs in a child process of its own (BUS_MAIN_TEST);
 * its peers are forked from there.  Processes wait on each other through
 * the bus, their pipe to the test (bus_child_signal) or a FIFO, never by
 * sleeping.  Some checks look at the endpoint's internals (white-box).
 */
#define _GNU_SOURCE
#include <sys/resource.h>

#include "support_bus.h"

#include "bus/endpoint.h" /* white-box: write queue, read buffer, pending index, poller */

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

/* The write path's thresholds (src/bus/conn.c), as the checks see them. */
#define COPY_MAX 2048
#define CHUNK_SIZE (64 * KIB)
#define FLUSH_BYTES (64 * KIB) /* the most output that waits for the loop */
#define WRITE_IOV 256
#define READ_CHUNK (64 * KIB)

/* ------------------------------------------------------------- payloads */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The 8-byte word `i` of the contents of payload `seed`. */
static inline uint64_t content_word(uint64_t seed, size_t i)
{
    return mix64(seed * 0x100000001b3ull + i);
}

/* Pseudo-random bytes determined by `seed`. */
static void fill_content(uint8_t *p, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w = content_word(seed, i / 8);
        memcpy(p + i, &w, len - i < 8 ? len - i : 8);
    }
}

/* Non-zero if p[0..len) is what fill_content(seed) makes. */
static int content_ok(const uint8_t *p, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w = content_word(seed, i / 8);
        if (memcmp(p + i, &w, len - i < 8 ? len - i : 8) != 0)
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ white-box */

/* The connection of `ep` to `peer` (ready). */
static struct conn *conn_to(const lahja_endpoint_t *ep, const char *peer)
{
    struct conn *c = lahja_conn_find(ep, peer);
    EXPECT_TRUE(c != NULL && c->state == CONN_READY);
    return c;
}

/* ------------------------------------------------------------- waiting */

struct watch {
    lahja_latch_t *latch;
    bus_child_t *child;
    lahja_nursery_t *n;
    int child_gone;
};

static int task_watch_latch(void *arg)
{
    struct watch *w = arg;
    if (lahja_latch_wait(w->latch, LAHJA_FOREVER) == 0)
        lahja_nursery_cancel(w->n);
    return 0;
}

/* Ends the wait if the child exits first (its pipe reaches EOF). */
static int task_watch_child(void *arg)
{
    struct watch *w = arg;
    for (;;) {
        char b;
        ssize_t n = read(w->child->fd, &b, 1);
        if (n == 0) {
            w->child_gone = 1;
            lahja_nursery_cancel(w->n);
            return 0;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        if (n < 0 && errno == EAGAIN && bus_wait_readable(w->child->fd, LAHJA_FOREVER) != 0)
            return 0; /* cancelled: the latch was set */
    }
}

/* Waits until `latch` is set; fails at once if `child` exits before (the
 * child's alarm bounds the wait otherwise). */
static void wait_latch_or_child_exit(lahja_latch_t *latch, bus_child_t *child)
{
    struct watch w = { latch, child, NULL, 0 };
    EXPECT_EQ(lahja_nursery_open(&w.n), 0);
    EXPECT_EQ(lahja_nursery_spawn(w.n, task_watch_latch, &w, NULL, NULL), 0);
    EXPECT_EQ(lahja_nursery_spawn(w.n, task_watch_child, &w, NULL, NULL), 0);
    EXPECT_EQ(lahja_nursery_close(w.n), 0);
    if (!lahja_latch_is_set(latch))
        fprintf(stderr, "[pid %d] the child exited first\n", (int)getpid());
    EXPECT_TRUE(lahja_latch_is_set(latch));
}

/* ======================================================================
 * a. Order and integrity across the chunk / zero-copy boundary
 * ====================================================================== */

/* Payload sizes on both sides of every threshold of the write path. */
static const size_t stream_sizes[] = { 0, 1, 63, 64, 2047, 2048, 2049, 4096, 65535, 65536, 200000 };

#define STREAM_EVENTS 20000
#define STREAM_PAUSE_AT 6000       /* the receiver stops reading here */
#define STREAM_BIGGEST 200000
#define STREAM_HIGH_WATER (512 * KIB)
#define STREAM_HARD_LIMIT (3 * MIB)
#define STREAM_FIFO "resume"

/*
 * Event `seq`'s payload size.  Runs of 128 events alternate: one of
 * copied sizes only (about 130 KB: they fill chunks and spill into new
 * ones), then one mixing every size, where payloads over COPY_MAX (2049
 * and up, 4096 among the common ones) go zero-copy between copied ones,
 * with the 64 KiB and 200,000-byte ones at fixed places.  Any 1 MiB of
 * the stream holds a whole run of copied ones.
 */
static size_t stream_size(uint32_t seq)
{
    static const size_t copied[] = { 0, 1, 63, 64, 2047, 2048, 2047, 2048 };
    uint32_t run = seq / 128, at = seq % 128;
    uint64_t r = mix64(seq ^ 0x5eedull);
    if (run % 2 == 0)
        return copied[r % 8];
    switch (at) {
    case 20:
    case 110:
        return stream_sizes[8]; /* 65535 */
    case 50:
    case 100:
        return stream_sizes[9]; /* 65536 */
    case 80:
        if (run % 4 == 1)
            return stream_sizes[10]; /* 200000 */
        break;
    default:
        break;
    }
    return stream_sizes[r % 8];
}

/* Two types, so that runs of one type alternate with the other. */
static const char *stream_type(uint32_t seq)
{
    return (mix64(seq ^ 0x7e57ull) % 5) == 0 ? "SeqB" : "Seq";
}

/* What the receiver reports at the end. */
struct stream_report {
    uint32_t received;
    uint32_t bad_len, bad_content, bad_type, bad_origin;
    uint32_t first_bad; /* sequence number of the first bad event, or UINT32_MAX */
    uint32_t paused_after; /* events received when Pause came */
};

struct stream_rx {
    lahja_endpoint_t *ep;
    struct stream_report rep;
    int fifo;
    lahja_latch_t ended;
};

static void stream_bad(struct stream_rx *rx, uint32_t *counter, const char *what, size_t len)
{
    if (rx->rep.first_bad == UINT32_MAX) {
        rx->rep.first_bad = rx->rep.received;
        fprintf(stderr, "[pid %d] event %u: bad %s (length %zu, expected %zu)\n", (int)getpid(),
                rx->rep.received, what, len, stream_size(rx->rep.received));
    }
    ++*counter;
}

/* Every event must be the next one: its type, length and contents are
 * those of sequence number `received`. */
static int on_stream_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct stream_rx *rx = user;
    uint32_t seq = rx->rep.received;
    size_t len = 0;
    const uint8_t *p = lahja_event_payload(ev, &len);
    if (strcmp(lahja_event_type(ev), stream_type(seq)) != 0)
        stream_bad(rx, &rx->rep.bad_type, "type", len);
    if (strcmp(lahja_event_origin(ev), "tx") != 0)
        stream_bad(rx, &rx->rep.bad_origin, "origin", len);
    if (len != stream_size(seq))
        stream_bad(rx, &rx->rep.bad_len, "length", len);
    else if (!content_ok(p, len, seq))
        stream_bad(rx, &rx->rep.bad_content, "contents", len);
    rx->rep.received++;
    return 0;
}

/* Pause: tells the test it stopped reading, and blocks the whole loop
 * (no socket is read meanwhile) until the test writes to the FIFO. */
static int on_stream_pause(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    struct stream_rx *rx = user;
    rx->rep.paused_after = rx->rep.received;
    bus_child_signal();
    char b = 0;
    ssize_t n;
    while ((n = read(rx->fifo, &b, 1)) < 0 && errno == EINTR)
        ;
    EXPECT_EQ(n, 1);
    return 0;
}

static int on_stream_end(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    struct stream_rx *rx = user;
    lahja_latch_set(&rx->ended);
    return 0;
}

/* The receiver: a client of "tx" in its own process. */
static int child_stream_rx(void *arg)
{
    const char *dir = arg;
    char fifo[BUS_DIR_MAX + 16];
    snprintf(fifo, sizeof fifo, "%s/%s", dir, STREAM_FIFO);
    struct stream_rx rx = { .rep = { .first_bad = UINT32_MAX } };
    lahja_latch_init(&rx.ended);
    /* Read-write: opening never waits for the other side. */
    rx.fifo = open(fifo, O_RDWR);
    EXPECT_TRUE(rx.fifo >= 0);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    rx.ep = bus_client("rx", &opts);
    lahja_subscription_t *s[4] = { NULL };
    EXPECT_EQ(lahja_subscribe(rx.ep, "Seq", on_stream_event, &rx, &s[0]), 0);
    EXPECT_EQ(lahja_subscribe(rx.ep, "SeqB", on_stream_event, &rx, &s[1]), 0);
    EXPECT_EQ(lahja_subscribe(rx.ep, "Pause", on_stream_pause, &rx, &s[2]), 0);
    EXPECT_EQ(lahja_subscribe(rx.ep, "End", on_stream_end, &rx, &s[3]), 0);
    EXPECT_EQ(bus_connect(rx.ep, dir, "tx"), 0);
    /* The child's alarm bounds this wait: under valgrind the stream
     * takes a while. */
    EXPECT_EQ(lahja_latch_wait(&rx.ended, LAHJA_FOREVER), 0);
    lahja_broadcast_config_t cfg = { .filter_endpoint = "tx" };
    lahja_event_t *rep = NULL;
    EXPECT_EQ(lahja_event_new("Report", &rx.rep, sizeof rx.rep, &rep), 0);
    EXPECT_EQ(lahja_broadcast(rx.ep, rep, &cfg, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_unref(rep);
    bus_wait_disconnected(rx.ep, "tx");
    for (int i = 0; i < 4; i++)
        lahja_subscription_cancel(s[i]);
    bus_close(rx.ep);
    close(rx.fifo);
    return 0;
}

/* A new stream event `seq` (payload built in `buf`). */
static lahja_event_t *stream_event(uint8_t *buf, uint32_t seq)
{
    size_t len = stream_size(seq);
    fill_content(buf, len, seq);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new(stream_type(seq), buf, len, &ev), 0);
    return ev;
}

struct stream_tx {
    lahja_endpoint_t *ep;
    uint8_t *buf;
    uint32_t next; /* the next sequence number to send */
    int task_rc;
    struct stream_report rep;
    int rep_len;
    lahja_latch_t reported;
};

static int on_stream_report(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct stream_tx *tx = user;
    size_t len = 0;
    const void *p = lahja_event_payload(ev, &len);
    tx->rep_len = (int)len;
    if (len == sizeof tx->rep)
        memcpy(&tx->rep, p, len);
    lahja_latch_set(&tx->reported);
    return 0;
}

/* Broadcasts events until `until` (suspending over the high-water mark). */
static void stream_send_until(struct stream_tx *tx, uint32_t until)
{
    for (; tx->next < until; tx->next++) {
        lahja_event_t *ev = stream_event(tx->buf, tx->next);
        EXPECT_EQ(lahja_broadcast(tx->ep, ev, NULL, lahja_deadline_in(GUARD_MS)), 0);
        lahja_event_unref(ev);
    }
}

/* What the write queue holds, seen frame by frame. */
struct queue_shape {
    int chunks, zero_copy;
    size_t fullest;         /* the most bytes in one chunk */
    int copied_at_max;      /* copied frames with a payload of COPY_MAX bytes */
    int zero_copy_over_max; /* zero-copy payloads of COPY_MAX + 1 bytes */
    size_t items, iovecs;   /* in outq */
};

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A chunk holds whole frames, each event's payload at most COPY_MAX. */
static void expect_chunk_frames(const struct out_item *it, struct queue_shape *q)
{
    size_t off = 0;
    while (off + RAW_HDR <= it->payload_len) {
        const uint8_t *f = it->heap + off;
        uint32_t body = le32(f);
        if (f[4] == RAW_EVENT) {
            size_t fixed = 4 + (f[5] & (RAW_F_REQUEST | RAW_F_RESPONSE) ? 8 : 0) +
                           (f[5] & RAW_F_LZ4 ? 4 : 0);
            EXPECT_TRUE(body >= fixed);
            EXPECT_TRUE(body - fixed <= COPY_MAX);
            q->copied_at_max += body - fixed == COPY_MAX;
        }
        off += RAW_HDR + body;
    }
    EXPECT_EQ(off, it->payload_len);
}

/* Small frames are in chunks, large payloads are queued as they are
 * (the event's own bytes, not a copy). */
static void expect_queue_shape(struct conn *c, struct queue_shape *q)
{
    lahja_link_t *lists[2] = { &c->outq, &c->inflight };
    for (int k = 0; k < 2; k++) {
        lahja_link_t *l;
        lahja_list_foreach(l, lists[k]) {
            struct out_item *it = lahja_container_of(l, struct out_item, link);
            if (k == 0) {
                q->items++;
                q->iovecs += (it->head_len > 0) + (it->payload_len > 0);
            }
            if (it->cap != 0) {
                q->chunks++;
                EXPECT_TRUE(it->ev == NULL);
                EXPECT_TRUE(it->payload_len <= it->cap);
                if (it->payload_len > q->fullest)
                    q->fullest = it->payload_len;
                expect_chunk_frames(it, q);
            } else if (it->ev != NULL) {
                q->zero_copy++;
                EXPECT_TRUE(it->payload_len > COPY_MAX);
                EXPECT_TRUE(it->payload == it->ev->payload); /* not copied */
                EXPECT_EQ(it->payload_len, it->ev->len);
                q->zero_copy_over_max += it->payload_len == COPY_MAX + 1;
            }
        }
    }
}

/* The task that broadcasts while the receiver is stopped. */
static int task_stream_blocked(void *arg)
{
    struct stream_tx *tx = arg;
    lahja_event_t *ev = stream_event(tx->buf, tx->next);
    tx->task_rc = lahja_broadcast(tx->ep, ev, NULL, lahja_deadline_in(GUARD_MS));
    lahja_event_unref(ev);
    return 0;
}

/*
 * One sender, one receiver in another process.  20,000 events whose
 * sizes straddle COPY_MAX, the chunk size and the flush threshold, with
 * contents derived from their sequence number, all arrive intact and in
 * order.  In the middle the receiver blocks its loop (Pause): the sender
 * sees its broadcasts refused over the hard limit and suspended over the
 * high-water mark; when the receiver reads again, the waiting broadcast
 * completes and the rest of the stream follows, intact.
 */
static int main_stream_across_copy_boundary(void *arg)
{
    (void)arg;
    /* White-box: the socket transport's queue and libuv's write. */
    setenv("LAHJA_SHM", "0", 1);
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    char fifo[BUS_DIR_MAX + 16];
    snprintf(fifo, sizeof fifo, "%s/%s", dir, STREAM_FIFO);
    EXPECT_EQ(mkfifo(fifo, 0600), 0);
    int resume = open(fifo, O_RDWR);
    EXPECT_TRUE(resume >= 0);

    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.high_water = STREAM_HIGH_WATER;
    opts.hard_limit = STREAM_HARD_LIMIT;
    opts.compress_threshold = SIZE_MAX; /* the sizes on the wire are the payloads' */
    struct stream_tx tx = { .ep = bus_serve(dir, "tx", &opts), .buf = malloc(STREAM_BIGGEST) };
    EXPECT_TRUE(tx.buf != NULL);
    lahja_latch_init(&tx.reported);
    lahja_subscription_t *reports = NULL;
    EXPECT_EQ(lahja_subscribe(tx.ep, "Report", on_stream_report, &tx, &reports), 0);
    bus_child_t rx = bus_fork(child_stream_rx, dir);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(tx.ep, "rx", "End",
                                                      lahja_deadline_in(GUARD_MS)), 0);
    struct conn *c = conn_to(tx.ep, "rx");

    /* Output is written from inside the broadcasting calls once enough
     * of it waits (FLUSH_BYTES at most): the loop does not run between
     * these, yet less is queued than was broadcast. */
    size_t sent_bytes = 0;
    while (sent_bytes < 4 * FLUSH_BYTES) {
        lahja_event_t *ev = stream_event(tx.buf, tx.next);
        EXPECT_EQ(lahja_broadcast_nowait(tx.ep, ev, NULL), 0);
        lahja_event_unref(ev);
        sent_bytes += stream_size(tx.next++);
    }
    EXPECT_TRUE(c->queued < sent_bytes);

    stream_send_until(&tx, STREAM_PAUSE_AT);

    /* The receiver stops reading once it reaches Pause. */
    lahja_event_t *pause = bus_event("Pause", NULL);
    EXPECT_EQ(lahja_broadcast(tx.ep, pause, NULL, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_unref(pause);
    EXPECT_EQ(bus_child_await_signal(&rx), 0);

    /* Non-suspending broadcasts fill the queue up to the hard limit. */
    int rc = 0;
    uint32_t limit = STREAM_EVENTS - 2000;
    while (rc == 0 && tx.next < limit) {
        lahja_event_t *ev = stream_event(tx.buf, tx.next);
        rc = lahja_broadcast_nowait(tx.ep, ev, NULL);
        lahja_event_unref(ev);
        if (rc == 0)
            tx.next++;
    }
    EXPECT_EQ(rc, -EAGAIN);
    EXPECT_TRUE(strcmp(lahja_endpoint_blocked_peer(tx.ep), "rx") == 0);
    size_t queued = c->queued;
    EXPECT_TRUE(queued > STREAM_HARD_LIMIT);
    EXPECT_EQ(c->writing, 1); /* the socket is full: libuv holds a write */
    struct queue_shape shape = { .chunks = 0 };
    expect_queue_shape(c, &shape);
    if (getenv("LAHJA_TEST_VERBOSE") != NULL)
        fprintf(stderr, "queue at the hard limit: %zu bytes, %d chunks (fullest %zu bytes), "
                        "%d zero-copy; %zu items, %zu iovecs waiting\n", queued, shape.chunks,
                shape.fullest, shape.zero_copy, shape.items, shape.iovecs);
    /* A chunk was filled until the next frame did not fit; COPY_MAX
     * bytes are copied, one more is not. */
    EXPECT_TRUE(shape.fullest > CHUNK_SIZE - (COPY_MAX + 64));
    EXPECT_TRUE(shape.copied_at_max > 0);
    EXPECT_TRUE(shape.zero_copy_over_max > 0);
    /* More iovecs wait than one writev takes: when the receiver
     * resumes, the queue goes out in several. */
    EXPECT_TRUE(shape.iovecs > WRITE_IOV);

    /* A suspending broadcast waits (~200 ms here, while the receiver is
     * stopped) and gives up; nothing more is queued. */
    lahja_event_t *ev = stream_event(tx.buf, tx.next);
    EXPECT_EQ(lahja_broadcast(tx.ep, ev, NULL, lahja_deadline_in(200)), -ETIMEDOUT);
    lahja_event_unref(ev);
    EXPECT_EQ(c->queued, queued);

    /* One waits in a task; the receiver resumes; it completes. */
    lahja_nursery_t *n = NULL;
    lahja_task_t *t = NULL;
    tx.task_rc = 12345;
    EXPECT_EQ(lahja_nursery_open(&n), 0);
    EXPECT_EQ(lahja_nursery_spawn(n, task_stream_blocked, &tx, NULL, &t), 0);
    EXPECT_EQ(lahja_yield(), 0);
    EXPECT_TRUE(!lahja_task_done(t));
    EXPECT_EQ(write(resume, "r", 1), 1);
    EXPECT_EQ(lahja_nursery_close(n), 0);
    EXPECT_EQ(tx.task_rc, 0);
    tx.next++;

    stream_send_until(&tx, STREAM_EVENTS);
    lahja_event_t *end = bus_event("End", NULL);
    EXPECT_EQ(lahja_broadcast(tx.ep, end, NULL, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_unref(end);

    wait_latch_or_child_exit(&tx.reported, &rx);
    EXPECT_EQ(tx.rep_len, sizeof tx.rep);
    struct stream_report rep = tx.rep;
    EXPECT_EQ(rep.first_bad, UINT32_MAX);
    EXPECT_EQ(rep.bad_len, 0);
    EXPECT_EQ(rep.bad_content, 0);
    EXPECT_EQ(rep.bad_type, 0);
    EXPECT_EQ(rep.bad_origin, 0);
    EXPECT_EQ(rep.paused_after, STREAM_PAUSE_AT);
    EXPECT_EQ(rep.received, STREAM_EVENTS);

    lahja_subscription_cancel(reports);
    bus_close(tx.ep);
    EXPECT_CHILD_OK(&rx);
    free(tx.buf);
    close(resume);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(stream_across_copy_boundary)

/* ======================================================================
 * b. Many requests in flight
 * ====================================================================== */

#define REQ_TASKS 200
#define REQ_ROUNDS 4
#define REQ_NEVER 300           /* left pending when the endpoint stops */
#define REQ_TIMEOUT_MS 20

enum req_kind {
    REQ_NOW,     /* answered at once */
    REQ_DEFER,   /* kept, answered with the rest of its round, shuffled */
    REQ_CANCEL,  /* kept; the requester is cancelled; answered late */
    REQ_TIMEOUT, /* kept; the requester's deadline passes; answered late */
    REQ_FOREVER  /* kept and never answered */
};

/* A request's payload, and its response's. */
struct req_msg {
    uint32_t task, round, kind;
    uint32_t dup;    /* a response: the second one to the same request */
    uint64_t id;     /* a response: the id of the request it answers */
};

static enum req_kind req_kind_of(uint32_t task, uint32_t round)
{
    unsigned k = (unsigned)(mix64((uint64_t)task * 131 + round) % 20);
    return k < 7 ? REQ_NOW : k < 16 ? REQ_DEFER : k < 18 ? REQ_CANCEL : REQ_TIMEOUT;
}

static uint32_t req_count(uint32_t round, enum req_kind kind)
{
    uint32_t n = 0;
    for (uint32_t t = 0; t < REQ_TASKS; t++)
        n += req_kind_of(t, round) == kind;
    return n;
}

/* ----------------------------------------------------------- responder */

struct req_batch {
    lahja_endpoint_t *ep;
    uint32_t round;
    uint32_t n;
    lahja_event_t *ev[REQ_TASKS];
};

struct responder {
    lahja_endpoint_t *ep;
    lahja_nursery_t *nursery;
    struct req_batch *defer[REQ_ROUNDS];      /* filling */
    lahja_event_t *late[REQ_TASKS][REQ_ROUNDS]; /* cancelled and timed out */
    lahja_event_t *never[REQ_NEVER];
    uint32_t nnever;
};

static int req_parse(const lahja_event_t *ev, struct req_msg *m)
{
    size_t len = 0;
    const void *p = lahja_event_payload(ev, &len);
    if (len != sizeof *m)
        return -EBADMSG;
    memcpy(m, p, sizeof *m);
    return m->task < REQ_TASKS && m->round < REQ_ROUNDS ? 0 : -EBADMSG;
}

/* Answers request `req` with its own task, round and id; returns what
 * lahja_respond did. */
static int req_answer(lahja_endpoint_t *ep, const lahja_event_t *req, uint32_t dup)
{
    struct req_msg m;
    EXPECT_EQ(req_parse(req, &m), 0);
    m.dup = dup;
    m.id = lahja_event_id(req);
    lahja_event_t *resp = NULL;
    EXPECT_EQ(lahja_event_new("Res", &m, sizeof m, &resp), 0);
    int rc = lahja_respond(ep, req, resp);
    lahja_event_unref(resp);
    return rc;
}

static void shuffle(lahja_event_t **v, uint32_t n, uint64_t seed)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)(mix64(seed + i) % i);
        lahja_event_t *tmp = v[i - 1];
        v[i - 1] = v[j];
        v[j] = tmp;
    }
}

/* Tells the requester about a kept request (its task and round). */
static void req_notify(lahja_endpoint_t *ep, const char *type, const struct req_msg *m)
{
    lahja_broadcast_config_t cfg = { .filter_endpoint = "req" };
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new(type, m, sizeof *m, &ev), 0);
    EXPECT_EQ(lahja_broadcast_nowait(ep, ev, &cfg), 0);
    lahja_event_unref(ev);
}

/* Answers a round's deferred requests, after telling the requester:
 * even rounds in reverse order, odd ones shuffled, letting other work
 * run between answers; then answers each of them again (ignored by the
 * requester). */
static int task_answer_batch(void *arg)
{
    struct req_batch *b = arg;
    /* Ahead of the answers on the connection: when the requester reads
     * it, every request of the batch is still pending there. */
    struct req_msg batch = { 0, b->round, REQ_DEFER, 0, 0 };
    req_notify(b->ep, "Batch", &batch);
    if (b->round % 2 == 0) {
        for (uint32_t i = 0; i < b->n / 2; i++) {
            lahja_event_t *tmp = b->ev[i];
            b->ev[i] = b->ev[b->n - 1 - i];
            b->ev[b->n - 1 - i] = tmp;
        }
    } else {
        shuffle(b->ev, b->n, 1000 + b->round);
    }
    for (uint32_t i = 0; i < b->n; i++) {
        EXPECT_EQ(req_answer(b->ep, b->ev[i], 0), 0);
        if (i % 3 == 0)
            EXPECT_EQ(lahja_yield(), 0);
    }
    shuffle(b->ev, b->n, 2000 + b->round);
    for (uint32_t i = 0; i < b->n; i++) {
        int rc = req_answer(b->ep, b->ev[i], 1);
        EXPECT_TRUE(rc == 0 || rc == LAHJA_ENOSUBSCRIBERS || rc == LAHJA_ELIFECYCLE);
        lahja_event_unref(b->ev[i]);
    }
    free(b);
    return 0;
}

static lahja_event_t *keep(lahja_event_t *ev)
{
    lahja_event_t *kept = lahja_event_ref(ev);
    EXPECT_TRUE(kept != NULL);
    return kept;
}

static int on_req(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct responder *r = user;
    struct req_msg m;
    EXPECT_EQ(req_parse(ev, &m), 0);
    EXPECT_TRUE(lahja_event_id(ev) != 0);
    EXPECT_TRUE(strcmp(lahja_event_origin(ev), "req") == 0);
    if (m.kind == REQ_FOREVER) {
        EXPECT_TRUE(r->nnever < REQ_NEVER);
        r->never[r->nnever++] = keep(ev);
        if (r->nnever == REQ_NEVER)
            req_notify(ep, "HeldAll", &m);
        return 0;
    }
    EXPECT_EQ(m.kind, req_kind_of(m.task, m.round));
    switch (m.kind) {
    case REQ_NOW:
        EXPECT_EQ(req_answer(ep, ev, 0), 0);
        break;
    case REQ_DEFER: {
        struct req_batch *b = r->defer[m.round];
        if (b == NULL) {
            b = r->defer[m.round] = calloc(1, sizeof *b);
            EXPECT_TRUE(b != NULL);
            b->ep = ep;
            b->round = m.round;
        }
        b->ev[b->n++] = keep(ev);
        if (b->n == req_count(m.round, REQ_DEFER)) {
            r->defer[m.round] = NULL;
            EXPECT_EQ(lahja_nursery_spawn(r->nursery, task_answer_batch, b, NULL, NULL), 0);
        }
        break;
    }
    case REQ_CANCEL:
    case REQ_TIMEOUT:
        EXPECT_TRUE(r->late[m.task][m.round] == NULL);
        r->late[m.task][m.round] = keep(ev);
        if (m.kind == REQ_CANCEL)
            req_notify(ep, "Held", &m);
        break;
    default:
        EXPECT_TRUE(0);
    }
    return 0;
}

/* The requester gave up on a request: answer it now, too late. */
static int on_gave_up(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct responder *r = user;
    struct req_msg m;
    EXPECT_EQ(req_parse(ev, &m), 0);
    lahja_event_t *req = r->late[m.task][m.round];
    EXPECT_TRUE(req != NULL); /* it came before, on the same connection */
    r->late[m.task][m.round] = NULL;
    EXPECT_EQ(req_answer(ep, req, 0), 0);
    lahja_event_unref(req);
    return 0;
}

static int child_responder(void *arg)
{
    const char *dir = arg;
    struct responder r = { .nnever = 0 };
    lahja_endpoint_options_t opts = bus_opts(NULL);
    r.ep = bus_client("resp", &opts);
    EXPECT_EQ(lahja_nursery_open(&r.nursery), 0);
    lahja_subscription_t *s1 = NULL, *s2 = NULL;
    EXPECT_EQ(lahja_subscribe(r.ep, "Req", on_req, &r, &s1), 0);
    EXPECT_EQ(lahja_subscribe(r.ep, "GaveUp", on_gave_up, &r, &s2), 0);
    EXPECT_EQ(bus_connect(r.ep, dir, "req"), 0);
    /* Until the requester stops (the child's alarm bounds the wait). */
    while (lahja_is_connected_to(r.ep, "req"))
        EXPECT_EQ(lahja_wait_until_connections_change(r.ep, LAHJA_FOREVER), 0);
    EXPECT_EQ(lahja_nursery_close(r.nursery), 0);
    EXPECT_EQ(r.nnever, REQ_NEVER);
    for (uint32_t i = 0; i < r.nnever; i++)
        lahja_event_unref(r.never[i]);
    for (uint32_t t = 0; t < REQ_TASKS; t++)
        for (uint32_t k = 0; k < REQ_ROUNDS; k++)
            EXPECT_TRUE(r.late[t][k] == NULL); /* each answered late */
    for (uint32_t k = 0; k < REQ_ROUNDS; k++)
        EXPECT_TRUE(r.defer[k] == NULL); /* each batch answered */
    lahja_subscription_cancel(s1);
    lahja_subscription_cancel(s2);
    bus_close(r.ep);
    return 0;
}

/* ----------------------------------------------------------- requester */

/*
 * White-box: the index of pending requests agrees with their list: the
 * same count, every listed request found by its id and present once.
 */
static void expect_index_consistent(const lahja_endpoint_t *ep)
{
    size_t listed = 0;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->pending) {
        struct pending *p = lahja_container_of(l, struct pending, link);
        EXPECT_TRUE(lahja_pending_find(ep, p->id) == p);
        size_t seen = 0;
        for (size_t i = 0; i < ep->pindex_cap; i++)
            seen += ep->pindex[i] == p;
        EXPECT_EQ(seen, 1);
        listed++;
    }
    EXPECT_EQ(ep->pindex_n, listed);
    size_t used = 0;
    for (size_t i = 0; i < ep->pindex_cap; i++)
        used += ep->pindex[i] != NULL;
    EXPECT_EQ(used, listed);
    EXPECT_TRUE(ep->pindex_cap == 0 || 2 * ep->pindex_n <= ep->pindex_cap);
}

struct requester {
    lahja_endpoint_t *ep;
    lahja_scope_t *scope[REQ_TASKS]; /* the open scope of a REQ_CANCEL request */
    uint32_t scope_round[REQ_TASKS];
    uint32_t answered, cancelled, timed_out, ended_by_stop;
    uint32_t held_cancels, batches;
    size_t max_pending;
    lahja_latch_t held_all;
};

struct req_task {
    struct requester *q;
    uint32_t task;
};

static void note_pending(struct requester *q)
{
    if (q->ep->pindex_n > q->max_pending)
        q->max_pending = q->ep->pindex_n;
}

/* The responder keeps a REQ_CANCEL request: cancel its requester. */
static int on_held(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct requester *q = user;
    struct req_msg m;
    EXPECT_EQ(req_parse(ev, &m), 0);
    EXPECT_TRUE(q->scope[m.task] != NULL);
    EXPECT_EQ(q->scope_round[m.task], m.round);
    note_pending(q);
    expect_index_consistent(q->ep);
    lahja_scope_cancel(q->scope[m.task]);
    q->held_cancels++;
    return 0;
}

/* A round's deferred requests are about to be answered. */
static int on_batch(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct requester *q = user;
    struct req_msg m;
    EXPECT_EQ(req_parse(ev, &m), 0);
    EXPECT_TRUE(q->ep->pindex_n >= req_count(m.round, REQ_DEFER));
    note_pending(q);
    expect_index_consistent(q->ep);
    q->batches++;
    return 0;
}

static int on_held_all(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    struct requester *q = user;
    lahja_latch_set(&q->held_all);
    return 0;
}

static lahja_event_t *req_new(uint32_t task, uint32_t round, enum req_kind kind)
{
    struct req_msg m = { task, round, kind, 0, 0 };
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_request_new("Req", "Res", &m, sizeof m, &ev), 0);
    return ev;
}

static void send_gave_up(lahja_endpoint_t *ep, uint32_t task, uint32_t round)
{
    struct req_msg m = { task, round, 0, 0, 0 };
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new("GaveUp", &m, sizeof m, &ev), 0);
    EXPECT_EQ(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_unref(ev);
}

/* One requester: a request per round, of the kind the round gives it. */
static int task_requester(void *arg)
{
    struct req_task *rt = arg;
    struct requester *q = rt->q;
    for (uint32_t round = 0; round < REQ_ROUNDS; round++) {
        enum req_kind kind = req_kind_of(rt->task, round);
        lahja_event_t *req = req_new(rt->task, round, kind);
        lahja_event_t *resp = NULL;
        int rc;
        if (kind == REQ_CANCEL) {
            lahja_scope_t *scope = NULL;
            EXPECT_EQ(lahja_scope_open(LAHJA_FOREVER, 0, &scope), 0);
            q->scope[rt->task] = scope;
            q->scope_round[rt->task] = round;
            rc = lahja_request(q->ep, req, NULL, lahja_deadline_in(GUARD_MS), &resp);
            q->scope[rt->task] = NULL;
            EXPECT_EQ(lahja_scope_close(scope), -ECANCELED);
            EXPECT_EQ(rc, -ECANCELED);
            q->cancelled++;
        } else if (kind == REQ_TIMEOUT) {
            rc = lahja_request(q->ep, req, NULL, lahja_deadline_in(REQ_TIMEOUT_MS), &resp);
            EXPECT_EQ(rc, -ETIMEDOUT);
            q->timed_out++;
        } else {
            rc = lahja_request(q->ep, req, NULL, lahja_deadline_in(GUARD_MS), &resp);
            EXPECT_EQ(rc, 0);
            struct req_msg m;
            EXPECT_EQ(req_parse(resp, &m), 0);
            /* Its own answer: this task, this round, this request's id. */
            EXPECT_EQ(m.task, rt->task);
            EXPECT_EQ(m.round, round);
            EXPECT_EQ(m.kind, kind);
            EXPECT_EQ(m.dup, 0);
            EXPECT_TRUE(m.id != 0);
            EXPECT_EQ(m.id, lahja_event_id(req));
            EXPECT_EQ(lahja_event_id(resp), lahja_event_id(req));
            EXPECT_TRUE(strcmp(lahja_event_origin(resp), "resp") == 0);
            q->answered++;
        }
        EXPECT_TRUE(rc != 0 || resp != NULL);
        EXPECT_TRUE(rc == 0 || resp == NULL);
        EXPECT_TRUE(lahja_pending_find(q->ep, lahja_event_id(req)) == NULL);
        expect_index_consistent(q->ep);
        lahja_event_unref(resp);
        lahja_event_unref(req);
        if (kind == REQ_CANCEL || kind == REQ_TIMEOUT)
            send_gave_up(q->ep, rt->task, round);
    }
    return 0;
}

/* A request that is never answered: the endpoint's stop ends it. */
static int task_forever(void *arg)
{
    struct req_task *rt = arg;
    struct requester *q = rt->q;
    lahja_event_t *req = req_new(rt->task, 0, REQ_FOREVER);
    lahja_event_t *resp = NULL;
    note_pending(q);
    int rc = lahja_request(q->ep, req, NULL, lahja_deadline_in(GUARD_MS), &resp);
    EXPECT_EQ(rc, LAHJA_ELIFECYCLE);
    EXPECT_TRUE(resp == NULL);
    q->ended_by_stop++;
    lahja_event_unref(req);
    return 0;
}

/*
 * 200 tasks make four requests each to a responder in another process,
 * which answers some at once and keeps the others: a round's deferred
 * requests are answered together once all have come, in reverse or
 * shuffled order (and then answered a second time); others are kept
 * until their requester was cancelled or its deadline passed, then
 * answered.  Every answered request gets its own response; the others
 * end with -ECANCELED or -ETIMEDOUT; late and repeated responses are
 * ignored.  The index of pending requests stays consistent throughout,
 * grows with them, and empties as they go.  At the end 300 requests are
 * left waiting and the endpoint stops: each ends with LAHJA_ELIFECYCLE.
 */
static int main_many_requests_in_flight(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct requester q = { .max_pending = 0 };
    lahja_latch_init(&q.held_all);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    q.ep = bus_serve(dir, "req", &opts);
    lahja_subscription_t *s1 = NULL, *s2 = NULL, *s3 = NULL;
    EXPECT_EQ(lahja_subscribe(q.ep, "Held", on_held, &q, &s1), 0);
    EXPECT_EQ(lahja_subscribe(q.ep, "HeldAll", on_held_all, &q, &s2), 0);
    EXPECT_EQ(lahja_subscribe(q.ep, "Batch", on_batch, &q, &s3), 0);
    bus_child_t resp = bus_fork(child_responder, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(q.ep, "resp", "Req", deadline), 0);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(q.ep, "resp", "GaveUp", deadline), 0);

    static struct req_task tasks[REQ_TASKS + REQ_NEVER];
    lahja_nursery_t *n = NULL;
    EXPECT_EQ(lahja_nursery_open(&n), 0);
    for (uint32_t i = 0; i < REQ_TASKS; i++) {
        tasks[i] = (struct req_task){ &q, i };
        EXPECT_EQ(lahja_nursery_spawn(n, task_requester, &tasks[i], NULL, NULL), 0);
    }
    EXPECT_EQ(lahja_nursery_close(n), 0);

    uint32_t want[REQ_FOREVER] = { 0 };
    for (uint32_t round = 0; round < REQ_ROUNDS; round++)
        for (int k = REQ_NOW; k < REQ_FOREVER; k++)
            want[k] += req_count(round, (enum req_kind)k);
    EXPECT_EQ(q.answered, want[REQ_NOW] + want[REQ_DEFER]);
    EXPECT_EQ(q.cancelled, want[REQ_CANCEL]);
    EXPECT_EQ(q.held_cancels, want[REQ_CANCEL]);
    EXPECT_EQ(q.timed_out, want[REQ_TIMEOUT]);
    EXPECT_TRUE(want[REQ_CANCEL] > 0 && want[REQ_TIMEOUT] > 0);
    /* Each round's deferred requests were all pending at once. */
    EXPECT_EQ(q.batches, REQ_ROUNDS);
    EXPECT_TRUE(q.max_pending >= req_count(0, REQ_DEFER));
    EXPECT_EQ(q.ep->pindex_n, 0);
    EXPECT_TRUE(lahja_list_empty(&q.ep->pending));
    expect_index_consistent(q.ep);

    /* Requests still waiting when the endpoint stops. */
    EXPECT_EQ(lahja_nursery_open(&n), 0);
    for (uint32_t i = 0; i < REQ_NEVER; i++) {
        tasks[REQ_TASKS + i] = (struct req_task){ &q, i % REQ_TASKS };
        EXPECT_EQ(lahja_nursery_spawn(n, task_forever, &tasks[REQ_TASKS + i], NULL, NULL), 0);
    }
    EXPECT_EQ(lahja_latch_wait(&q.held_all, lahja_deadline_in(GUARD_MS)), 0);
    EXPECT_EQ(q.ep->pindex_n, REQ_NEVER);
    EXPECT_TRUE(q.ep->pindex_cap >= 2 * REQ_NEVER); /* grown, still at most half full */
    expect_index_consistent(q.ep);
    lahja_subscription_cancel(s1);
    lahja_subscription_cancel(s2);
    lahja_subscription_cancel(s3);
    EXPECT_EQ(lahja_endpoint_stop(q.ep), 0);
    EXPECT_EQ(q.ep->pindex_n, 0); /* every request has left */
    EXPECT_TRUE(lahja_list_empty(&q.ep->pending));
    EXPECT_EQ(lahja_nursery_close(n), 0);
    EXPECT_EQ(q.ended_by_stop, REQ_NEVER);
    EXPECT_EQ(lahja_endpoint_free(q.ep), 0);
    EXPECT_CHILD_OK(&resp);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(many_requests_in_flight)

/* ------------------------------------------- the pending index by itself */

#define MODEL_N 1200

/* The index's home slot of an id, as src/bus/consume.c computes it: the
 * ids below are chosen to land at the end of the table, so that their
 * runs wrap around to its start. */
static size_t model_home(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9e3779b97f4a7c15u) >> 32) & (cap - 1);
}

/*
 * White-box: lahja_pending_add/remove/find against a model, with ids
 * half of which crowd the last slots of the table (whatever its size)
 * so that probe runs wrap around, and removals in random order.  After
 * each operation the id it touched is found, or not, as it should be;
 * every 50 operations (and over the last 100) every present id is
 * found, every removed one is not, and the table holds exactly the
 * present entries.
 */
static int main_pending_index_wraps_and_shifts(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = calloc(1, sizeof *ep);
    static struct pending ps[MODEL_N];
    static int present[MODEL_N];
    EXPECT_TRUE(ep != NULL);
    lahja_list_init(&ep->pending);
    /* Ids whose home is among the last 256 slots of a 4096-slot table
     * (hence among the last slots of every smaller one too), mixed with
     * ordinary sequential ones. */
    uint64_t id = 1;
    for (size_t i = 0; i < MODEL_N; i++) {
        if (i % 2 == 1) {
            ps[i].id = 1000000 + i;
        } else {
            while (model_home(id, 4096) < 4096 - 256)
                id++;
            ps[i].id = id++;
        }
    }
    size_t npresent = 0, wrapped_seen = 0;
    uint64_t r = 42;
    for (int op = 0; op < 6000; op++) {
        r = mix64(r);
        size_t i = (size_t)(r % MODEL_N);
        /* Grow to ~600 entries, shrink to ~100, grow again. */
        size_t target = op < 2000 ? 600 : op < 4000 ? 100 : 700;
        int add = npresent < target ? (r >> 32) % 4 != 0 : (r >> 32) % 4 == 0;
        if (add && !present[i]) {
            EXPECT_EQ(lahja_pending_add(ep, &ps[i]), 0);
            present[i] = 1;
            npresent++;
        } else if (!add && present[i]) {
            lahja_pending_remove(ep, &ps[i]);
            present[i] = 0;
            npresent--;
        } else {
            continue;
        }
        EXPECT_EQ(ep->pindex_n, npresent);
        EXPECT_TRUE(lahja_pending_find(ep, ps[i].id) == (present[i] ? &ps[i] : NULL));
        if (op % 50 == 0 || op > 5900) {
            for (size_t k = 0; k < MODEL_N; k++)
                EXPECT_TRUE(lahja_pending_find(ep, ps[k].id) == (present[k] ? &ps[k] : NULL));
            EXPECT_TRUE(lahja_pending_find(ep, 999999999) == NULL);
            size_t used = 0;
            for (size_t s = 0; s < ep->pindex_cap; s++) {
                struct pending *p = ep->pindex[s];
                if (p == NULL)
                    continue;
                used++;
                EXPECT_TRUE(p >= ps && p < ps + MODEL_N && present[p - ps]);
                wrapped_seen += s < model_home(p->id, ep->pindex_cap);
            }
            EXPECT_EQ(used, npresent);
        }
    }
    /* The runs did wrap around the end of the table. */
    EXPECT_TRUE(wrapped_seen > 0);
    EXPECT_TRUE(ep->pindex_cap >= 1024);
    for (size_t k = 0; k < MODEL_N; k++)
        if (present[k])
            lahja_pending_remove(ep, &ps[k]);
    EXPECT_EQ(ep->pindex_n, 0);
    EXPECT_TRUE(lahja_list_empty(&ep->pending));
    for (size_t s = 0; s < ep->pindex_cap; s++)
        EXPECT_TRUE(ep->pindex[s] == NULL);
    free(ep->pindex);
    free(ep);
    return 0;
}
BUS_MAIN_TEST(pending_index_wraps_and_shifts)

/* ======================================================================
 * c. busy_poll_us
 * ====================================================================== */

#define POLL_REQUESTS 100
#define POLL_SLEEP_MS 300
#define POLL_MAX_CPU_MS 100
#define POLL_MAX_TURNS 50

struct poll_side {
    lahja_endpoint_t *ep;
    int reads_seen, polling_seen, not_polling_seen;
    int poller_at_last; /* the loop turned by the poller at the last read */
};

/* Answers Ping; notes whether the read that brought it (the handler runs
 * inside that read) left the endpoint polling: the loop turned by the
 * poller (over a socket), or a window set with every connection on a
 * ring (watched before each poll instead).  Not the window's end against
 * the clock: under valgrind a handler may start after it. */
static int on_poll_ping(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct poll_side *s = user;
    s->reads_seen++;
    if (uv_is_active((uv_handle_t *)&ep->poller)
        || (ep->poll_until != 0 && ep->shm_conns == ep->nconns_open))
        s->polling_seen++;
    else
        s->not_polling_seen++;
    s->poller_at_last = uv_is_active((uv_handle_t *)&ep->poller);
    return bus_echo_handler(ep, ev, "Pong");
}

struct poll_asker {
    lahja_endpoint_t *ep;
    const char *to;
};

static int task_poll_ask(void *arg)
{
    struct poll_asker *a = arg;
    for (int i = 0; i < POLL_REQUESTS; i++) {
        char q[32];
        snprintf(q, sizeof q, "%s-%d", a->to, i);
        bus_ask(a->ep, "Ping", "Pong", q, a->to, q);
    }
    return 0;
}

static int64_t cpu_us(void)
{
    struct rusage ru;
    EXPECT_EQ(getrusage(RUSAGE_SELF, &ru), 0);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

/* The loop's turns, told apart by whether an endpoint was polling. */
struct turns {
    lahja_endpoint_t *ep[2];
    int polling, quiet;
};

static void on_turn(uv_prepare_t *h)
{
    struct turns *t = h->data;
    uint64_t now = uv_hrtime();
    if (t->ep[0]->poll_until > now || t->ep[1]->poll_until > now)
        t->polling++;
    else
        t->quiet++;
}

/*
 * Two endpoints of this process, both with busy_poll_us as given, ask
 * each other POLL_REQUESTS requests at once, over sockets or (`rings`)
 * shared memory.  Each read leaves the endpoint polling iff busy_poll_us
 * is set: over sockets the loop turns without sleeping; over rings it
 * watches them before each poll, and is not turned for it.  Then the
 * process only sleeps: the loop turns a few times, the CPU time grows by
 * far less than the wall time, and neither endpoint is polling any more.
 */
static void poll_exchange_then_sleep(uint32_t busy_poll_us, int rings)
{
    if (rings)
        unsetenv("LAHJA_SHM");
    else
        setenv("LAHJA_SHM", "0", 1);
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.busy_poll_us = busy_poll_us;
    struct poll_side p1 = { .ep = bus_serve(dir, "p1", &opts) };
    struct poll_side p2 = { .ep = bus_client("p2", &opts) };
    lahja_subscription_t *s1 = NULL, *s2 = NULL;
    EXPECT_EQ(lahja_subscribe(p1.ep, "Ping", on_poll_ping, &p1, &s1), 0);
    EXPECT_EQ(lahja_subscribe(p2.ep, "Ping", on_poll_ping, &p2, &s2), 0);
    EXPECT_EQ(bus_connect(p2.ep, dir, "p1"), 0);

    struct poll_asker a1 = { p1.ep, "p2" }, a2 = { p2.ep, "p1" };
    lahja_nursery_t *n = NULL;
    EXPECT_EQ(lahja_nursery_open(&n), 0);
    EXPECT_EQ(lahja_nursery_spawn(n, task_poll_ask, &a1, NULL, NULL), 0);
    EXPECT_EQ(lahja_nursery_spawn(n, task_poll_ask, &a2, NULL, NULL), 0);
    EXPECT_EQ(lahja_nursery_close(n), 0);
    EXPECT_EQ(p1.reads_seen, POLL_REQUESTS);
    EXPECT_EQ(p2.reads_seen, POLL_REQUESTS);
    if (busy_poll_us != 0) {
        EXPECT_EQ(p1.polling_seen, POLL_REQUESTS);
        EXPECT_EQ(p2.polling_seen, POLL_REQUESTS);
        EXPECT_EQ(p1.poller_at_last, !rings);
        EXPECT_EQ(p2.poller_at_last, !rings);
        EXPECT_EQ(p1.ep->shm_conns, rings);
        EXPECT_EQ(p2.ep->shm_conns, rings);
    } else {
        EXPECT_EQ(p1.not_polling_seen, POLL_REQUESTS);
        EXPECT_EQ(p2.not_polling_seen, POLL_REQUESTS);
        EXPECT_EQ(p1.ep->poll_until, 0);
        EXPECT_EQ(p2.ep->poll_until, 0);
    }

    /* Counts the loop's turns while the process sleeps: while the last
     * read's window lasts it turns without sleeping; after that, only
     * when the sleep's timer fires. */
    uv_prepare_t turns_h;
    struct turns turns = { { p1.ep, p2.ep }, 0, 0 };
    EXPECT_EQ(uv_prepare_init(lahja_rt_loop(lahja_rt_current()), &turns_h), 0);
    turns_h.data = &turns;
    EXPECT_EQ(uv_prepare_start(&turns_h, on_turn), 0);
    uv_unref((uv_handle_t *)&turns_h);
    int64_t cpu0 = cpu_us(), wall0 = bus_ms();
    EXPECT_EQ(lahja_sleep(POLL_SLEEP_MS), 0);
    int64_t cpu = cpu_us() - cpu0, wall = bus_ms() - wall0;
    struct turns seen = turns;
    lahja_uv_close((uv_handle_t *)&turns_h);
    int report = getenv("LAHJA_TEST_VERBOSE") != NULL || cpu >= POLL_MAX_CPU_MS * 1000 ||
                 seen.quiet >= POLL_MAX_TURNS;
    if (report)
        fprintf(stderr, "busy_poll_us %u: %lld us of CPU in %lld ms asleep; loop turns: "
                        "%d polling, %d not\n", busy_poll_us, (long long)cpu, (long long)wall,
                seen.polling, seen.quiet);
    EXPECT_TRUE(wall >= POLL_SLEEP_MS - 5);
    EXPECT_TRUE(cpu < POLL_MAX_CPU_MS * 1000);
    EXPECT_TRUE(seen.quiet < POLL_MAX_TURNS);
    if (busy_poll_us == 0)
        EXPECT_EQ(seen.polling, 0);
    EXPECT_TRUE(!uv_is_active((uv_handle_t *)&p1.ep->poller));
    EXPECT_TRUE(!uv_is_active((uv_handle_t *)&p2.ep->poller));

    lahja_subscription_cancel(s1);
    lahja_subscription_cancel(s2);
    bus_close(p2.ep);
    bus_close(p1.ep);
    bus_dir_remove(dir);
}

static int main_busy_poll_stops_after_window(void *arg)
{
    (void)arg;
    poll_exchange_then_sleep(2000, 0);
    return 0;
}
BUS_MAIN_TEST(busy_poll_stops_after_window)

static int main_busy_poll_over_rings(void *arg)
{
    (void)arg;
    poll_exchange_then_sleep(2000, 1);
    return 0;
}
BUS_MAIN_TEST(busy_poll_over_rings)

static int main_busy_poll_off_never_polls(void *arg)
{
    (void)arg;
    poll_exchange_then_sleep(0, 0);
    return 0;
}
BUS_MAIN_TEST(busy_poll_off_never_polls)

/* ======================================================================
 * d. A read buffer grown for large frames
 * ====================================================================== */

#define BIG_EVENTS 10
#define BIG_LEN MIB
#define BURST_SMALL 100
#define PINGS 200
#define TAIL_SMALL 20
#define BIG_SEED 0xb16000ull
#define SMALL_SEED 0x5a000ull

static size_t small_len(uint32_t i)
{
    return 1 + (size_t)(mix64(i) % 200);
}

struct big_tx {
    lahja_endpoint_t *ep;
    uint8_t *buf;
    uint32_t big, small;
};

static void big_send(struct big_tx *tx, const char *type, size_t len, uint64_t seed)
{
    fill_content(tx->buf, len, seed);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new(type, tx->buf, len, &ev), 0);
    EXPECT_EQ(lahja_broadcast(tx->ep, ev, NULL, lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_unref(ev);
}

static void big_send_small(struct big_tx *tx, int as_request)
{
    size_t len = small_len(tx->small);
    uint64_t seed = SMALL_SEED + tx->small++;
    if (!as_request) {
        big_send(tx, "Small", len, seed);
        return;
    }
    fill_content(tx->buf, len, seed);
    lahja_event_t *ev = NULL, *ack = NULL;
    EXPECT_EQ(lahja_request_new("Small", "Ack", tx->buf, len, &ev), 0);
    EXPECT_EQ(lahja_request(tx->ep, ev, NULL, lahja_deadline_in(GUARD_MS), &ack), 0);
    EXPECT_TRUE(bus_payload_is(ack, "ok"));
    lahja_event_unref(ack);
    lahja_event_unref(ev);
}

/* The sender, in its own process: 10 Big events of 1 MiB, a burst of
 * small ones, 200 small requests one after the other (each read on its
 * own by the receiver), one more Big, a few small ones, End. */
static int child_big_sender(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.compress_threshold = SIZE_MAX;
    struct big_tx tx = { .ep = bus_client("big", &opts), .buf = malloc(BIG_LEN) };
    EXPECT_TRUE(tx.buf != NULL);
    EXPECT_EQ(bus_connect(tx.ep, dir, "rx"), 0);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(tx.ep, "rx", "End", deadline), 0);
    for (int i = 0; i < BIG_EVENTS; i++)
        big_send(&tx, "Big", BIG_LEN, BIG_SEED + tx.big++);
    for (int i = 0; i < BURST_SMALL; i++)
        big_send_small(&tx, 0);
    for (int i = 0; i < PINGS; i++)
        big_send_small(&tx, 1);
    big_send(&tx, "Big", BIG_LEN, BIG_SEED + tx.big++);
    for (int i = 0; i < TAIL_SMALL; i++)
        big_send_small(&tx, 0);
    big_send(&tx, "End", 0, 0);
    free(tx.buf);
    bus_wait_disconnected(tx.ep, "rx");
    bus_close(tx.ep);
    return 0;
}

struct big_rx {
    lahja_endpoint_t *ep;
    const char *peer;
    uint32_t big, small, mid, bad;
    size_t cap_after_bigs, cap_early_pings, cap_after_pings, cap_last_big;
    lahja_latch_t ended;
    lahja_cond_t changed;
};

static size_t rx_cap(struct big_rx *rx)
{
    return conn_to(rx->ep, rx->peer)->rcap;
}

static void big_check(struct big_rx *rx, const lahja_event_t *ev, const char *what,
                      uint32_t i, size_t want_len, uint64_t seed)
{
    size_t len = 0;
    const uint8_t *p = lahja_event_payload(ev, &len);
    if (len != want_len || !content_ok(p, len, seed)) {
        fprintf(stderr, "[pid %d] %s event %u is not intact (length %zu)\n", (int)getpid(), what,
                i, len);
        rx->bad++;
    }
}

static int on_big(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct big_rx *rx = user;
    uint32_t i = rx->big++;
    big_check(rx, ev, "Big", i, BIG_LEN, BIG_SEED + i);
    if (rx->big == BIG_EVENTS)
        rx->cap_after_bigs = rx_cap(rx);
    rx->cap_last_big = rx_cap(rx);
    lahja_cond_broadcast(&rx->changed);
    return 0;
}

static int on_small(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct big_rx *rx = user;
    uint32_t i = rx->small++;
    big_check(rx, ev, "Small", i, small_len(i), SMALL_SEED + i);
    if (lahja_event_id(ev) == 0)
        return 0;
    /* One of the requests, each read on its own. */
    if (i == BURST_SMALL + 8)
        rx->cap_early_pings = rx_cap(rx);
    if (i == BURST_SMALL + PINGS - 1)
        rx->cap_after_pings = rx_cap(rx);
    lahja_event_t *ack = bus_event("Ack", "ok");
    int rc = lahja_respond(ep, ev, ack);
    lahja_event_unref(ack);
    return rc;
}

static int on_big_end(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    lahja_latch_set(&((struct big_rx *)user)->ended);
    return 0;
}

/*
 * A peer sends 10 events of 1 MiB, then small ones: everything arrives
 * intact.  The read buffer, grown to take the large frames, is kept for
 * the small reads that follow at first, and given back after many of
 * them; a large frame after that grows it again.
 */
static int main_large_frames_then_small(void *arg)
{
    (void)arg;
    /* White-box: the socket transport's read buffer. */
    setenv("LAHJA_SHM", "0", 1);
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct big_rx rx = { .peer = "big" };
    lahja_latch_init(&rx.ended);
    lahja_cond_init(&rx.changed);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    rx.ep = bus_serve(dir, "rx", &opts);
    lahja_subscription_t *s[3] = { NULL };
    EXPECT_EQ(lahja_subscribe(rx.ep, "Big", on_big, &rx, &s[0]), 0);
    EXPECT_EQ(lahja_subscribe(rx.ep, "Small", on_small, &rx, &s[1]), 0);
    EXPECT_EQ(lahja_subscribe(rx.ep, "End", on_big_end, &rx, &s[2]), 0);
    bus_child_t big = bus_fork(child_big_sender, dir);
    wait_latch_or_child_exit(&rx.ended, &big);
    EXPECT_EQ(rx.bad, 0);
    EXPECT_EQ(rx.big, BIG_EVENTS + 1);
    EXPECT_EQ(rx.small, BURST_SMALL + PINGS + TAIL_SMALL);
    if (getenv("LAHJA_TEST_VERBOSE") != NULL)
        fprintf(stderr, "read buffer: %zu after the large frames, %zu early, %zu at the end\n",
                rx.cap_after_bigs, rx.cap_early_pings, rx.cap_after_pings);
    EXPECT_TRUE(rx.cap_after_bigs >= BIG_LEN);
    EXPECT_TRUE(rx.cap_early_pings >= BIG_LEN);      /* kept while reads are few */
    EXPECT_TRUE(rx.cap_after_pings <= 4 * READ_CHUNK); /* then given back */
    EXPECT_TRUE(rx.cap_last_big >= BIG_LEN);          /* and grown again */
    for (int i = 0; i < 3; i++)
        lahja_subscription_cancel(s[i]);
    bus_close(rx.ep);
    EXPECT_CHILD_OK(&big);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(large_frames_then_small)

/* -------------------------------- shrinking with part of a frame read */

#define MID_LEN 160000     /* a frame under 256 KiB: its reads count as small */
#define MID_AHEAD 136000   /* bytes of the next frame each read brings: over 128 KiB */
#define MID_FRAMES 72      /* more reads than it takes to shrink */
#define MID_SEED 0x3d0000ull
#define MID_FIFO "go"

struct raw_mid_args {
    const char *path;
    char fifo[BUS_DIR_MAX + 16];
};

/* The bytes of the stream of Mid frames (type id 2) from `off` on. */
static void mid_stream(uint8_t *out, size_t off, size_t len)
{
    const size_t frame = RAW_HDR + 4 + MID_LEN;
    static uint8_t payload[MID_LEN];
    static uint8_t f[RAW_HDR + 4 + MID_LEN];
    static long cached = -1;
    while (len > 0) {
        long k = (long)(off / frame);
        if (k != cached) {
            fill_content(payload, MID_LEN, MID_SEED + (uint64_t)k);
            raw_event(f, 2, payload, MID_LEN);
            cached = k;
        }
        size_t at = off % frame, n = frame - at < len ? frame - at : len;
        memcpy(out, f + at, n);
        out += n, off += n, len -= n;
    }
}

/*
 * A raw client writing frames by hand: HELLO, the types, one Big frame
 * of 1 MiB, then the Mid frames in chunks, each when the test says "go"
 * (through a FIFO) and each reported written.  The test does not run its
 * loop meanwhile, so that each chunk is read whole: the end of one frame
 * and the first MID_AHEAD bytes of the next.
 */
static int raw_mid_sender(void *arg)
{
    const struct raw_mid_args *a = arg;
    int go = open(a->fifo, O_RDWR);
    EXPECT_TRUE(go >= 0);
    int fd = raw_connect(a->path);
    EXPECT_TRUE(fd >= 0);
    /* Room in the socket for the largest chunk, written while the test
     * does not read (the usual limit of 2 x 212992 bytes is enough). */
    int want = 4 * (int)MIB, got = 0;
    socklen_t len = sizeof got;
    EXPECT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want), 0);
    EXPECT_EQ(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len), 0);
    if (got < (int)(RAW_HDR + 4 + MID_LEN + MID_AHEAD + 64 * KIB))
        fprintf(stderr, "a send buffer of %d bytes is too small for this test "
                        "(net.core.wmem_max)\n", got);
    EXPECT_TRUE(got >= (int)(RAW_HDR + 4 + MID_LEN + MID_AHEAD + 64 * KIB));
    static uint8_t buf[RAW_HDR + 4 + MIB + 256];
    uint8_t *p = raw_hello(buf, "raw");
    p = raw_type(p, 1, "Big");
    p = raw_type(p, 2, "Mid");
    raw_send(fd, buf, (size_t)(p - buf));
    static uint8_t payload[MIB];
    fill_content(payload, MIB, BIG_SEED);
    p = raw_event(buf, 1, payload, (uint32_t)MIB);
    raw_send(fd, buf, (size_t)(p - buf));
    const size_t frame = RAW_HDR + 4 + MID_LEN, total = MID_FRAMES * frame;
    size_t off = 0;
    while (off < total) {
        /* The first chunk: a frame and the start of the next; then each
         * ends MID_AHEAD bytes into a frame; the last ends the stream. */
        size_t end = off == 0 ? frame + MID_AHEAD : off + frame;
        if (end > total)
            end = total;
        char b;
        EXPECT_EQ(read(go, &b, 1), 1);
        mid_stream(buf, off, end - off);
        raw_send(fd, buf, end - off);
        off = end;
        bus_child_signal();
    }
    /* Until the test has read everything and hangs up. */
    EXPECT_TRUE(raw_read_to_eof(fd, NULL, 0) >= 0);
    close(fd);
    close(go);
    return 0;
}

static int on_mid(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct big_rx *rx = user;
    uint32_t i = rx->mid++;
    big_check(rx, ev, "Mid", i, MID_LEN, MID_SEED + i);
    lahja_cond_broadcast(&rx->changed);
    return 0;
}

/* Waits for the child's bus_child_signal() without running the loop. */
static void await_signal_blocking(bus_child_t *c)
{
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
    EXPECT_EQ(poll(&pfd, 1, GUARD_MS), 1);
    char b;
    EXPECT_EQ(read(c->fd, &b, 1), 1);
}

/*
 * The read buffer, grown by a 1 MiB frame, is given back after enough
 * reads of frames under 256 KiB, at a moment when it holds the first
 * MID_AHEAD bytes of the next frame (more than the 128 KiB it shrinks
 * to at least): none of them is lost.
 */
static int main_shrink_keeps_partial_frame(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct big_rx rx = { .peer = "raw" };
    lahja_latch_init(&rx.ended);
    lahja_cond_init(&rx.changed);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    rx.ep = bus_serve(dir, "rx", &opts);
    lahja_subscription_t *s[2] = { NULL };
    EXPECT_EQ(lahja_subscribe(rx.ep, "Big", on_big, &rx, &s[0]), 0);
    EXPECT_EQ(lahja_subscribe(rx.ep, "Mid", on_mid, &rx, &s[1]), 0);
    struct raw_mid_args a = { .path = NULL };
    lahja_conn_config_t cfg = bus_cfg(dir, "rx");
    a.path = cfg.path;
    snprintf(a.fifo, sizeof a.fifo, "%s/%s", dir, MID_FIFO);
    EXPECT_EQ(mkfifo(a.fifo, 0600), 0);
    int go = open(a.fifo, O_RDWR);
    EXPECT_TRUE(go >= 0);
    bus_child_t raw = bus_fork_plain(raw_mid_sender, &a);

    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (rx.big < 1)
        EXPECT_EQ(lahja_cond_wait(&rx.changed, deadline), 0);
    EXPECT_TRUE(rx_cap(&rx) >= BIG_LEN);
    size_t min_cap = SIZE_MAX;
    for (uint32_t chunk = 0; rx.mid < MID_FRAMES; chunk++) {
        EXPECT_EQ(write(go, "g", 1), 1);
        await_signal_blocking(&raw);
        /* The loop runs again: the chunk is read, a frame completes. */
        while (rx.mid < chunk + 1)
            EXPECT_EQ(lahja_cond_wait(&rx.changed, deadline), 0);
        struct conn *c = conn_to(rx.ep, "raw");
        if (rx.mid < MID_FRAMES)
            EXPECT_EQ(c->rlen, MID_AHEAD); /* the start of the next frame, kept */
        if (c->rcap < min_cap)
            min_cap = c->rcap;
    }
    EXPECT_EQ(rx.bad, 0);
    EXPECT_EQ(rx.mid, MID_FRAMES);
    EXPECT_TRUE(min_cap < BIG_LEN); /* it did shrink meanwhile */
    for (int i = 0; i < 2; i++)
        lahja_subscription_cancel(s[i]);
    bus_close(rx.ep);
    EXPECT_CHILD_OK(&raw);
    close(go);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(shrink_keeps_partial_frame)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_across_copy_boundary),
        cmocka_unit_test(test_many_requests_in_flight),
        cmocka_unit_test(test_pending_index_wraps_and_shifts),
        cmocka_unit_test(test_busy_poll_stops_after_window),
        cmocka_unit_test(test_busy_poll_over_rings),
        cmocka_unit_test(test_busy_poll_off_never_polls),
        cmocka_unit_test(test_large_frames_then_small),
        cmocka_unit_test(test_shrink_keeps_partial_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
