/*
 * The shared-memory transport, between two endpoints of one host.
 *
 * A connection starts as a Unix socket (unix.c) and stays one for
 * control and wake-ups; its data moves through two rings in shared
 * memory, one per direction, each written by one side and read by the
 * other.  Both sides announce the transport in their HELLO (feature
 * SHM); each, at its first write after reading the peer's HELLO, sends a
 * one-byte marker carrying its ring (a sealed memfd, SCM_RIGHTS) and from
 * then on writes into the ring.  The kernel ends a read at a message that
 * carries descriptors, so the marker is the last byte of the read that
 * brings the ring: what came before it is the stream, what comes after
 * is wake-ups.  A peer without the feature, or a ring that cannot be
 * made, leaves the connection a plain socket.  Small events are written
 * into the ring in place (shm_reserve: conn.c's window), the rest is
 * copied in from the connection's queue (tx_copy).
 *
 * Wake-ups.  The reader says in its ring's header when it is about to
 * sleep (reader_sleeps, set before each poll); a writer that published
 * bytes and finds it set clears it and sends one byte on the socket.
 * While the reader is busy no byte is sent: a burst costs no system call
 * at all.  The same for a writer waiting for room (writer_waits).  The
 * flag and the index are each written, then the other read, behind a
 * full fence on both sides, so one of the two always sees the other.
 * A sleeper bound to one CPU (its thread's affinity when the endpoint
 * was made) says which in the flag (its number + 1; any other sleeper
 * says UINT32_MAX): when that is the CPU we run on, it is told at the
 * end of our loop turn, before we poll, or when our ring is full and we
 * are about to wait for it, not at once.  It could not run
 * before that anyway, and woken at once it would take the CPU from us
 * after each batch (a context switch each way); told at the end, it
 * finds all the turn wrote.  A sleeper free to run elsewhere is told at
 * once: the scheduler may give it an idle CPU.  The flag is only a
 * hint: any value a peer writes there makes us tell it now or at the
 * turn's end, nothing else.
 * While a request of ours waits for its response, and for a while after
 * a request came to us, the loop watches the rings before it sleeps
 * (SPIN_NS, yielding the CPU each time round): across CPUs a response,
 * or the next request of a busy peer, then costs no wake-up.  So does a
 * turn that read SPIN_BYTES or more (lent payloads at their size): a
 * busy stream's next batch is near, and a writer that woke its readers
 * for each (a system call per reader, and on a virtual machine tens of
 * microseconds to wake a halted CPU) would spend on that what it
 * spends on writing.  Yielding each time round, the spin gives the CPU
 * to whoever else wants it (a writer sharing it, the other readers of
 * a fan-out).  A trickle of events does not make it spin.
 *
 * Lent payloads.  An endpoint also has a pool (a second sealed memfd,
 * lahja_endpoint_options_t.shm_pool) that every peer of its gets with
 * the marker, read-only.  A large event bound for such peers is written
 * once into a block of the pool (or was loaned there, lahja_event_loan)
 * and each of them gets a 16-byte reference (EVENT flag LENT) instead of
 * the bytes: fan-out without a copy per peer, and a receiver reading the
 * payload in place.  The receiver's event points into its read-only
 * mapping; when the last reference to it goes, the offset goes back in a
 * RELEASE frame.  The writer counts, per connection, what it lent: a
 * block is free again once its event is gone and every connection gave
 * it back or ended, so a peer killed with SIGKILL returns all it held.
 * A full pool sends the bytes through the ring instead.  Read-only, the
 * pool cannot be changed by one reader under another.
 *
 * The peer is not trusted: its ring's size comes from the file, never
 * from the header; the indices it writes are read once per use and
 * checked against what we know (head - tail within the ring, our own
 * index kept apart), and a ring that breaks the rules ends the
 * connection.  The memfd must be sealed against shrinking and growing,
 * so it cannot be cut under our mapping.
 */
#define _GNU_SOURCE /* memfd_create, F_ADD_SEALS */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "endpoint.h"

#define SHM_MAGIC 0x314d48536a686c61ULL /* "alhjSHM1" */
#define SHM_VERSION 1
#define SHM_HDR 4096                     /* the header's page */
#define SHM_RING_MIN (64u << 10)
#define SHM_RING_DEFAULT (1u << 20)
#define SHM_RING_MAX (1u << 30)
#define SHM_MARK 'S'
#define SPIN_NS 50000                    /* spun for a response, or after data */
#define SPIN_BYTES (16u << 10)           /* a turn that read this much spins */
#define PEND_IOV 256
#define RX_COPY 4096                     /* copied past a frame not read in place */
#define RX_STEP (64u << 10)              /* read in place between tail updates */
#define RX_KEEP 128                      /* events kept for tasks per turn */
#define SHM_POOL_DEFAULT (256u << 20)
#define GRAN (64u << 10)                 /* the pool's unit */
#define LEND_MIN (32u << 10)             /* smaller payloads go through the ring */

/* ------------------------------------------------------ lent payloads */

/* A block of our pool: granules [g, g + n). */
struct lahja_lent {
    struct shm_pool *pool;
    uint32_t g, n;
    size_t len;       /* the payload's bytes */
    uint32_t lends;   /* references out with peers */
    uint8_t held;     /* an event of ours still holds it */
};

/* Our pool.  Events holding blocks may be freed on any thread: the
 * mutex covers the blocks and the pool's own life. */
struct shm_pool {
    pthread_mutex_t mu;
    int fd_ro;                   /* what the peers get: read-only */
    uint8_t *base;
    size_t size;
    uint32_t ngran;
    struct lahja_lent **blocks;  /* by first granule; NULL: free */
    uint8_t *used;               /* per granule */
    uint32_t live;               /* blocks not yet free */
    uint8_t orphan;              /* its endpoint is gone */
};

/* A peer's pool, mapped read-only; its events point into it.  It lives
 * as long as the connection or any of those events, whichever is last;
 * offsets let go of are kept for the connection to send back. */
struct pool_map {
    pthread_mutex_t mu;
    int refs;
    uint8_t *base;
    size_t size;
    uint8_t open;                /* the connection sends what is let go */
    uint64_t *rel;
    size_t nrel, caprel;
};

struct lent_hold {
    struct pool_map *map;
    uint64_t off;
};

struct shm_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t hdr_size;
    uint64_t size; /* data bytes, a power of two (the reader trusts the file) */
    _Alignas(64) _Atomic uint64_t head;  /* the writer's: bytes written in all */
    _Atomic uint32_t reader_sleeps;      /* the reader's: wake me */
    _Alignas(64) _Atomic uint64_t tail;  /* the reader's: bytes read in all */
    _Atomic uint32_t writer_waits;       /* the writer's: tell me of room */
};

struct ring {
    struct shm_hdr *hdr;
    uint8_t *data;
    uint64_t size;
    size_t map_len;
};

struct shm_link {
    struct ring tx, rx;   /* ours (we write), the peer's (we read) */
    struct pool_map *rxpool; /* the peer's pool */
    uint32_t *lent;       /* per granule of our pool: lent to this peer */
    int tx_fd;            /* ours, until the marker took it */
    uint64_t tx_head;     /* what we wrote (the header's copy is the peer's to see) */
    uint64_t tx_shown;    /* what of it the header says: the rest is committed
                             in place (shm_commit), not yet published */
    uint64_t tx_tail;     /* the last tail the peer gave */
    size_t tx_touched;    /* bytes of our ring from its start populated
                             (the first lap; then its size) */
    uint64_t rx_tail;     /* what we read */
    uint8_t tx_on;        /* the marker went: our writes go to tx */
    uint8_t rx_on;        /* the peer's marker came: its writes come through rx */
    uint8_t token_owed;   /* a wake-up for the peer, once tx_on */
    uint8_t pending;      /* a transport.write waits for room */
    uint8_t counted;      /* in ep->shm_conns */
    uint8_t tell_owed;    /* TELL_READER | TELL_WRITER: a sleeper on our
                             CPU, told at the turn's end */
    unsigned npend, pend_i;
    size_t pend_off;
    uv_buf_t pend[PEND_IOV];
    char tokens[64];      /* where socket bytes go once rx_on */
};

static inline struct shm_link *link_of(struct conn *c)
{
    return c->io.ux.shm;
}

static const char *pool_adopt(struct shm_link *s, int fd);
static void lent_return_all(struct conn *c, struct shm_link *s);
static void map_put(struct pool_map *m, const uint64_t *off);
static void send_releases(struct conn *c, struct shm_link *s);

/* ---------------------------------------------------------- the rings */

static void ring_unmap(struct ring *r)
{
    if (r->hdr != NULL)
        munmap(r->hdr, r->map_len);
    r->hdr = NULL;
}

/* Our ring for c's output: a sealed memfd of `size` data bytes. */
static int ring_make(struct shm_link *s, size_t size)
{
    int fd = memfd_create("lahja-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    size_t len = SHM_HDR + size;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)len) != 0
        || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0
        || (p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        int err = -errno;
        close(fd);
        return err;
    }
    struct shm_hdr *h = p;
    h->magic = SHM_MAGIC;
    h->version = SHM_VERSION;
    h->hdr_size = SHM_HDR;
    h->size = size;
    s->tx = (struct ring){ .hdr = h, .data = (uint8_t *)p + SHM_HDR, .size = size, .map_len = len };
    s->tx_fd = fd;
    return 0;
}

/* Maps the peer's ring from fd (which it closes); 0, or why not. */
static const char *ring_adopt(struct shm_link *s, int fd)
{
    const char *why = NULL;
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
        why = "its ring is not a sealed memfd";
    else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < SHM_HDR + SHM_RING_MIN
             || st.st_size > (off_t)SHM_HDR + SHM_RING_MAX)
        why = "its ring has a bad size";
    size_t size = why == NULL ? (size_t)st.st_size - SHM_HDR : 0;
    if (why == NULL && (size & (size - 1)) != 0)
        why = "its ring has a bad size";
    void *p = MAP_FAILED;
    if (why == NULL) {
        p = mmap(NULL, SHM_HDR + size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            why = "its ring cannot be mapped";
    }
    close(fd);
    if (why != NULL)
        return why;
    struct shm_hdr *h = p;
    if (h->magic != SHM_MAGIC || h->version != SHM_VERSION || h->size != size) {
        munmap(p, SHM_HDR + size);
        return "its ring's header is not ours";
    }
    s->rx = (struct ring){ .hdr = h, .data = (uint8_t *)p + SHM_HDR, .size = size,
                           .map_len = SHM_HDR + size };
    s->rx_tail = atomic_load_explicit(&h->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&h->head, memory_order_acquire);
    if (head - s->rx_tail > size) {
        ring_unmap(&s->rx);
        return "its ring's indices are out of bounds";
    }
    s->rx_on = 1;
    return NULL;
}

/* One byte on the socket: the peer wakes.  A full socket already holds
 * wake-ups the peer has not read; a gone peer's end is read as such. */
static void token(struct conn *c)
{
    struct shm_link *s = link_of(c);
    if (!s->tx_on) {
        s->token_owed = 1;
        return;
    }
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->io.ux.pipe, &fd) == 0) {
        char b = 't';
        while (send(fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR)
            ;
    }
}

#define TELL_READER 1 /* our ring's reader_sleeps */
#define TELL_WRITER 2 /* the peer's ring's writer_waits */

static _Atomic uint32_t *tell_flag(struct shm_link *s, int which)
{
    return which == TELL_READER ? &s->tx.hdr->reader_sleeps : &s->rx.hdr->writer_waits;
}

/* Tells the peer now what `which` of its flags asked for, if still asked. */
static void tell_now(struct conn *c, int which)
{
    if (atomic_exchange_explicit(tell_flag(link_of(c), which), 0, memory_order_relaxed) != 0)
        token(c);
}

/* Bytes were published (or room made): the other side is told if it
 * said it sleeps, at once, or at the end of this loop turn if it is
 * bound to the CPU we run on (tell_owed; see "Wake-ups" above).  The
 * fence orders our index store before the flag's load, as the peer's
 * does the other way. */
static void tell(struct conn *c, int which)
{
    struct shm_link *s = link_of(c);
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t v = atomic_load_explicit(tell_flag(s, which), memory_order_relaxed);
    if (v == 0)
        return;
    if (v != UINT32_MAX) { /* bound to one CPU: ours? */
        int cpu = sched_getcpu();
        if (cpu >= 0 && v == (uint32_t)cpu + 1) {
            if (!s->tell_owed)
                c->ep->shm_tells_owed++;
            s->tell_owed |= (uint8_t)which;
            return;
        }
    }
    tell_now(c, which);
}

/* What tell put off, told now: at the turn's end, or when we are about
 * to wait for the peer (a full ring), which it cannot make room in
 * while it sleeps. */
static void tell_owed_now(struct conn *c)
{
    struct shm_link *s = link_of(c);
    uint8_t owed = s->tell_owed;
    if (owed == 0)
        return;
    s->tell_owed = 0;
    c->ep->shm_tells_owed--;
    if (owed & TELL_READER)
        tell_now(c, TELL_READER);
    if (owed & TELL_WRITER)
        tell_now(c, TELL_WRITER);
}

/* Room in our ring; -1 if the peer's tail is impossible. */
static int64_t tx_room(struct shm_link *s)
{
    uint64_t tail = atomic_load_explicit(&s->tx.hdr->tail, memory_order_acquire);
    if (tail - s->tx_tail > s->tx_head - s->tx_tail)
        return -1; /* behind what it read, or past what we wrote */
    s->tx_tail = tail;
    return (int64_t)(s->tx.size - (s->tx_head - tail));
}

/*
 * Our ring's pages are populated ahead of the first lap's writes, a
 * quarter of a megabyte at a time: one system call instead of a page
 * fault per page (on a virtual machine each fault is an exit, several
 * microseconds), and memory still taken as the ring is used.  Where the
 * kernel cannot (before Linux 5.14), the pages fault in as before.
 */
#define TOUCH_STEP ((size_t)256 << 10)
static void tx_touch(struct shm_link *s, size_t upto)
{
    while (s->tx_touched < upto) {
        size_t step = s->tx.size - s->tx_touched < TOUCH_STEP ? s->tx.size - s->tx_touched
                                                              : TOUCH_STEP;
        if (madvise(s->tx.data + s->tx_touched, step, MADV_POPULATE_WRITE) != 0) {
            s->tx_touched = s->tx.size;
            return;
        }
        s->tx_touched += step;
    }
}

/* Copies up to `room` bytes of bufs[*i..] (from *off in the first) into
 * our ring; returns how many. */
static size_t tx_copy(struct shm_link *s, const uv_buf_t *bufs, unsigned n, unsigned *i,
                      size_t *off, size_t room)
{
    size_t done = 0;
    uint64_t mask = s->tx.size - 1;
    while (*i < n && done < room) {
        const uint8_t *src = (const uint8_t *)bufs[*i].base + *off;
        size_t len = bufs[*i].len - *off;
        if (len > room - done)
            len = room - done;
        size_t at = (size_t)((s->tx_head + done) & mask);
        size_t first = s->tx.size - at < len ? s->tx.size - at : len;
        if (s->tx_touched < s->tx.size)
            tx_touch(s, len - first > 0 ? s->tx.size : at + first);
        memcpy(s->tx.data + at, src, first);
        memcpy(s->tx.data, src + first, len - first);
        done += len;
        *off += len;
        if (*off == bufs[*i].len) {
            (*i)++;
            *off = 0;
        }
    }
    if (done > 0 || s->tx_shown != s->tx_head) {
        s->tx_head += done;
        s->tx_shown = s->tx_head;
        atomic_store_explicit(&s->tx.hdr->head, s->tx_head, memory_order_release);
    }
    return done;
}

/*
 * Writing in place: a run of small events is written straight into our
 * ring, as long as nothing waits to be copied and each fits before the
 * ring's end, and published in batches as the socket's writes are.  One
 * copy instead of two, and no chunk to keep.
 */
static uint8_t *shm_reserve(struct conn *c, size_t min, size_t *room)
{
    struct shm_link *s = link_of(c);
    if (!s->tx_on || s->pending)
        return NULL;
    size_t at = (size_t)(s->tx_head & (s->tx.size - 1));
    int64_t free = tx_room(s); /* < 0: an impossible tail, which the next write reports */
    size_t n = s->tx.size - at; /* up to the end: a frame across it is copied by tx_copy */
    if (free < (int64_t)n)
        n = free > 0 ? (size_t)free : 0;
    if (n < min)
        return NULL;
    if (s->tx_touched < at + n)
        tx_touch(s, at + n);
    *room = n;
    return s->tx.data + at;
}

static void shm_commit(struct conn *c, size_t len)
{
    link_of(c)->tx_head += len;
}

static void shm_publish(struct conn *c)
{
    struct shm_link *s = link_of(c);
    if (s->tx_shown == s->tx_head)
        return;
    s->tx_shown = s->tx_head;
    atomic_store_explicit(&s->tx.hdr->head, s->tx_head, memory_order_release);
    tell(c, TELL_READER);
}

/* -------------------------------------------------------- switching */

/* Sends the marker with our ring, if the peer reads rings and nothing of
 * ours waits in the socket; 1 once switched, 0 not now, < 0 a libuv error. */
static int switch_tx(struct conn *c)
{
    struct shm_link *s = link_of(c);
    struct shm_pool *pool = c->ep->shm_pool;
    if (!(c->peer_features & LAHJA_WIRE_FEAT_SHM) || s->tx_fd < 0 || pool == NULL)
        return 0;
    if (s->lent == NULL && (s->lent = calloc(pool->ngran, sizeof *s->lent)) == NULL)
        return 0; /* not now: later, or never (the socket goes on) */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->io.ux.pipe) != 0)
        return 0;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->io.ux.pipe, &fd) != 0)
        return UV_EBADF;
    char mark = SHM_MARK;
    struct iovec iov = { .iov_base = &mark, .iov_len = 1 };
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(2 * sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int fds[2] = { s->tx_fd, pool->fd_ro };
    memcpy(CMSG_DATA(cm), fds, sizeof fds);
    ssize_t n;
    while ((n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    close(s->tx_fd);
    s->tx_fd = -1;
    s->tx_on = 1;
    if (c->queue_mark > LAHJA_RING_QUEUE)
        c->queue_mark = LAHJA_RING_QUEUE; /* the ring is the buffer now */
    if (!s->counted) {
        s->counted = 1;
        lahja_shm_active(c->ep, 1);
    }
    if (s->token_owed) {
        s->token_owed = 0;
        token(c);
    }
    return 1;
}

/* --------------------------------------------------------- writing */

static int shm_try_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    struct shm_link *s = link_of(c);
    if (!s->tx_on) {
        int rc = switch_tx(c);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return lahja_unix_transport.try_write(c, bufs, n);
    }
    int64_t room = tx_room(s);
    if (room < 0)
        return UV_EPROTO;
    unsigned i = 0;
    size_t off = 0;
    size_t done = tx_copy(s, bufs, n, &i, &off, (size_t)room);
    if (done == 0) {
        tell_owed_now(c); /* the ring is full (and published): we wait for the peer */
        return UV_EAGAIN;
    }
    tell(c, TELL_READER);
    return (int)(done > INT32_MAX ? INT32_MAX : done);
}

/* Copies on what transport.write left; 1 once all of it is in the ring. */
static int pend_more(struct conn *c)
{
    struct shm_link *s = link_of(c);
    int64_t room = tx_room(s);
    if (room < 0)
        return -1;
    if (room > 0 && tx_copy(s, s->pend, s->npend, &s->pend_i, &s->pend_off, (size_t)room) > 0)
        tell(c, TELL_READER);
    return s->pend_i == s->npend;
}

static int shm_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    struct shm_link *s = link_of(c);
    if (!s->tx_on)
        return lahja_unix_transport.write(c, bufs, n);
    if (s->pending || n > PEND_IOV)
        return UV_EINVAL;
    memcpy(s->pend, bufs, n * sizeof *bufs);
    s->npend = n;
    s->pend_i = 0;
    s->pend_off = 0;
    s->pending = 1;
    /* Finished from the loop (lahja_shm_turn), never within this call. */
    lahja_shm_kick(c->ep);
    return 0;
}

/* --------------------------------------------------------- reading */

/* The ring's len bytes from our tail on are read: the writer may reuse them. */
static void rx_consumed(struct conn *c, struct shm_link *s, size_t len)
{
    s->rx_tail += len;
    atomic_store_explicit(&s->rx.hdr->tail, s->rx_tail, memory_order_release);
    tell(c, TELL_WRITER);
}

/*
 * Reads what the peer's ring holds, as the connection takes it: at most
 * a ring's worth per call, so that a peer that never stops writing
 * cannot hold the loop, and at most RX_KEEP events that streams and
 * waiters keep, so that the tasks that take them run before more are
 * made: they then come from the blocks those tasks gave back, in memory
 * the cache holds, and not from new pages (a ring's worth of small
 * events is thousands).  The rest is read on the next turn.  `all`:
 * what the ring holds is read now, every event (the stream ends, or the
 * connection is read to its end).
 */
static void rx_drain(struct conn *c, int all)
{
    struct shm_link *s = link_of(c);
    uint64_t budget = s->rx_on ? s->rx.size : 0;
    c->ep->keep_room = all ? UINT32_MAX : RX_KEEP;
    while (c->state != CONN_CLOSING && s->rx_on) {
        uint64_t head = atomic_load_explicit(&s->rx.hdr->head, memory_order_acquire);
        uint64_t avail = head - s->rx_tail;
        if (avail == 0)
            return;
        if (budget == 0 || c->ep->keep_room == 0) {
            lahja_shm_kick(c->ep);
            return;
        }
        if (avail > s->rx.size) {
            lahja_conn_close(c, -EPROTO, "shared memory: the peer's ring index is out of bounds");
            return;
        }
        size_t at = (size_t)(s->rx_tail & (s->rx.size - 1));
        /* Small events are read where they are, up to the ring's end,
         * RX_STEP at a time: the writer gets the room back as we go, and
         * does not fill the ring while we read it (it would then queue,
         * and copy each event twice). */
        size_t len = s->rx.size - at < avail ? s->rx.size - at : (size_t)avail;
        if (len > budget)
            len = (size_t)budget;
        size_t took = lahja_conn_read_small(c, s->rx.data + at, len > RX_STEP ? RX_STEP : len);
        if (took == 0 && len > RX_STEP)
            took = lahja_conn_read_small(c, s->rx.data + at, len); /* a frame larger than a step */
        if (took > 0) {
            budget -= took;
            rx_consumed(c, s, took);
            continue;
        }
        uv_buf_t room;
        lahja_conn_room(c, &room);
        if (room.len == 0) {
            lahja_conn_read(c, UV_ENOBUFS);
            return;
        }
        len = avail < room.len ? (size_t)avail : room.len;
        if (len > budget)
            len = (size_t)budget;
        /* Back to reading in place as soon as no frame is half read: the
         * rest of the one under way, or a little to start with. */
        if (c->state == CONN_READY && c->rlen > 0 && c->need > c->rlen) {
            if (len > c->need - c->rlen)
                len = c->need - c->rlen;
        } else if (c->state == CONN_READY && len > RX_COPY) {
            len = RX_COPY;
        }
        budget -= len;
        size_t first = s->rx.size - at < len ? s->rx.size - at : len;
        memcpy(room.base, s->rx.data + at, first);
        memcpy(room.base + first, s->rx.data, len - first);
        rx_consumed(c, s, len);
        lahja_conn_read(c, (ssize_t)len);
    }
}

/* The descriptors that came with a read: the peer's ring and pool, once.
 * 0, or the connection ended. */
static int take_fds(struct conn *c, int *fds, int nfds)
{
    struct shm_link *s = link_of(c);
    const char *why = NULL;
    if (!(c->peer_features & LAHJA_WIRE_FEAT_SHM) || s->rx_on || nfds != 2)
        why = "a descriptor it was not to send";
    for (int i = why == NULL ? 2 : 0; i < nfds; i++)
        close(fds[i]);
    if (why == NULL) {
        why = pool_adopt(s, fds[1]);
        if (why == NULL)
            why = ring_adopt(s, fds[0]);
        else
            close(fds[0]);
    }
    if (why != NULL) {
        char line[96];
        snprintf(line, sizeof line, "shared memory: %s", why);
        lahja_conn_close(c, -EPROTO, line);
        return -1;
    }
    return 0;
}

/* nread stream bytes arrived in the connection's room, and with them
 * nfds descriptors: then the last byte is the peer's marker. */
static void got(struct conn *c, ssize_t nread, int *fds, int nfds)
{
    if (nfds == 0) {
        lahja_conn_read(c, nread);
        return;
    }
    if (nread > 1)
        lahja_conn_read(c, nread - 1); /* its HELLO may be among them */
    if (c->state == CONN_CLOSING) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return;
    }
    if (take_fds(c, fds, nfds) != 0)
        return;
    struct shm_link *s = link_of(c);
    lahja_bus_log(c->ep, LAHJA_LOG_DEBUG, "shared memory: %s writes to us through its ring",
                  c->peer != NULL ? c->peer->s : "a peer");
    if (!s->counted) {
        s->counted = 1;
        lahja_shm_active(c->ep, 1);
    }
    /* Its ring is read from now, and the writer wakes us only once we
     * said we sleep (on_prepare): a loop driven a turn at a time (a
     * program's own, UV_RUN_NOWAIT) must take one more turn to say it. */
    lahja_shm_kick(c->ep);
    rx_drain(c, 0);
}

/* The descriptors libuv received with the last read. */
static int pending_fds(struct conn *c, int *fds, int max)
{
    uv_pipe_t *p = &c->io.ux.pipe;
    int n = 0;
    while (uv_pipe_pending_count(p) > 0) {
        uv_pipe_t *tmp = malloc(sizeof *tmp);
        uv_os_fd_t fd = -1;
        if (tmp == NULL)
            break;
        uv_pipe_init(c->ep->rt->loop, tmp, 0);
        int dup_fd = -1;
        if (uv_accept((uv_stream_t *)p, (uv_stream_t *)tmp) == 0
            && uv_fileno((uv_handle_t *)tmp, &fd) == 0)
            dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
        if (dup_fd >= 0 && n < max)
            fds[n++] = dup_fd;
        else if (dup_fd >= 0)
            close(dup_fd);
    }
    return n;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    struct shm_link *s = link_of(c);
    if (s->rx_on)
        *buf = uv_buf_init(s->tokens, sizeof s->tokens);
    else
        lahja_conn_room(c, buf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = st->data;
    struct shm_link *s = link_of(c);
    int fds[4];
    int nfds = pending_fds(c, fds, 4);
    if (s->rx_on) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (nfds > 0) {
            lahja_conn_close(c, -EPROTO, "shared memory: a descriptor it was not to send");
            return;
        }
        /* A wake-up: the ring has bytes, or ours has room.  At the
         * stream's end, what the ring holds is read before it. */
        rx_drain(c, nread < 0);
        if (nread < 0 && c->state != CONN_CLOSING)
            lahja_conn_read(c, nread);
        else if (s->pending)
            lahja_shm_kick(c->ep);
        return;
    }
    if (nread != 0)
        got(c, nread, fds, nfds);
}

static int shm_read_start(struct conn *c)
{
    return uv_read_start((uv_stream_t *)&c->io.ux.pipe, on_alloc, on_read);
}

/* Reads what has arrived, to its end: the socket with recvmsg (the
 * marker may be in it), then the ring. */
static void shm_read_now(struct conn *c)
{
    struct shm_link *s = link_of(c);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->io.ux.pipe, &fd) != 0)
        return;
    while (c->state != CONN_CLOSING && !s->rx_on) {
        uv_buf_t room;
        lahja_conn_room(c, &room);
        if (room.len == 0)
            return;
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(4 * sizeof(int))];
        } ctl;
        struct iovec iov = { .iov_base = room.base, .iov_len = room.len };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                            .msg_controllen = sizeof ctl.b };
        ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        int fds[4], nfds = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm != NULL; cm = CMSG_NXTHDR(&m, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t j = 0; j < k; j++) {
                int f;
                memcpy(&f, CMSG_DATA(cm) + j * sizeof(int), sizeof f);
                if (nfds < 4)
                    fds[nfds++] = f;
                else
                    close(f);
            }
        }
        got(c, n, fds, nfds);
    }
    if (c->state != CONN_CLOSING && s->rx_on)
        rx_drain(c, 1);
}

static int shm_poll(struct conn *c)
{
    struct shm_link *s = link_of(c);
    int r = lahja_unix_transport.poll(c);
    if (!s->rx_on)
        return r;
    r &= ~CONN_POLL_IN; /* socket bytes are wake-ups now */
    if (atomic_load_explicit(&s->rx.hdr->head, memory_order_acquire) != s->rx_tail)
        r |= CONN_POLL_IN;
    return r;
}

static int shm_allowed(struct conn *c, char *why, size_t len)
{
    return lahja_unix_transport.allowed(c, why, len);
}

/* ------------------------------------------------------- our pool */

static struct shm_pool *pool_make(size_t size)
{
    struct shm_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->ngran = (uint32_t)(size / GRAN);
    p->size = (size_t)p->ngran * GRAN;
    p->blocks = calloc(p->ngran, sizeof *p->blocks);
    p->used = calloc(p->ngran, 1);
    int fd = memfd_create("lahja-pool", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    p->fd_ro = -1;
    void *m = MAP_FAILED;
    if (p->blocks != NULL && p->used != NULL && fd >= 0 && ftruncate(fd, (off_t)p->size) == 0
        && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0
        && (m = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) != MAP_FAILED) {
        /* The peers' descriptor: the same memory, opened read-only. */
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        p->fd_ro = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd >= 0)
        close(fd);
    if (p->fd_ro < 0) {
        if (m != MAP_FAILED)
            munmap(m, p->size);
        free(p->blocks);
        free(p->used);
        free(p);
        return NULL;
    }
    p->base = m;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

static void pool_free(struct shm_pool *p)
{
    munmap(p->base, p->size);
    if (p->fd_ro >= 0)
        close(p->fd_ro);
    free(p->blocks);
    free(p->used);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* A block of len bytes, held by the caller's event; NULL when the pool
 * has no room for it.  First fit: the blocks freed last are reused
 * first, their pages already there and likely still in the cache. */
static struct lahja_lent *pool_alloc(struct shm_pool *p, size_t len)
{
    uint32_t n = (uint32_t)((len + GRAN - 1) / GRAN);
    if (n == 0)
        n = 1;
    if (n > p->ngran)
        return NULL;
    struct lahja_lent *b = malloc(sizeof *b);
    if (b == NULL)
        return NULL;
    pthread_mutex_lock(&p->mu);
    uint32_t g = 0, run = 0;
    while (run < n && g + n <= p->ngran) {
        if (p->used[g + run]) {
            g += run + 1;
            run = 0;
        } else {
            run++;
        }
    }
    if (run != n) {
        pthread_mutex_unlock(&p->mu);
        free(b);
        return NULL;
    }
    memset(p->used + g, 1, n);
    *b = (struct lahja_lent){ .pool = p, .g = g, .n = n, .len = len, .held = 1 };
    p->blocks[g] = b;
    p->live++;
    pthread_mutex_unlock(&p->mu);
    return b;
}

/* Under p->mu: b is free if nobody holds or borrows it; the pool goes
 * with its last block once its endpoint has gone.  1 if the pool went. */
static int block_maybe_free(struct shm_pool *p, struct lahja_lent *b)
{
    if (b->held || b->lends > 0)
        return 0;
    memset(p->used + b->g, 0, b->n);
    p->blocks[b->g] = NULL;
    free(b);
    return --p->live == 0 && p->orphan;
}

void lahja_lent_drop(struct lahja_lent *b)
{
    struct shm_pool *p = b->pool;
    pthread_mutex_lock(&p->mu);
    b->held = 0;
    int gone = block_maybe_free(p, b);
    pthread_mutex_unlock(&p->mu);
    if (gone)
        pool_free(p);
}

static inline uint8_t *block_at(const struct lahja_lent *b)
{
    return b->pool->base + (size_t)b->g * GRAN;
}

/* Whether ev's payload can go to c lent: it is in our pool, and c's peer
 * has that pool (our marker, which carried it, went first). */
static int shm_lendable(struct conn *c, const lahja_event_t *ev)
{
    struct shm_link *s = link_of(c);
    return ev->lent != NULL && s != NULL && s->tx_on && s->lent != NULL
           && ev->lent->pool == c->ep->shm_pool;
}

/* ev goes to c lent: counted, and its reference written. */
static void shm_lend(struct conn *c, const lahja_event_t *ev, uint8_t ref[LAHJA_WIRE_LENT_SIZE])
{
    struct shm_link *s = link_of(c);
    struct lahja_lent *b = ev->lent;
    uint64_t off = (uint64_t)b->g * GRAN, len = ev->len;
    pthread_mutex_lock(&b->pool->mu);
    b->lends++;
    pthread_mutex_unlock(&b->pool->mu);
    s->lent[b->g]++;
    for (int i = 0; i < 8; i++) {
        ref[i] = (uint8_t)(off >> (8 * i));
        ref[8 + i] = (uint8_t)(len >> (8 * i));
    }
}

/* The peer gives back what we lent at `off`; -EPROTO if we did not. */
static int shm_released(struct conn *c, uint64_t off)
{
    struct shm_link *s = link_of(c);
    struct shm_pool *p = c->ep->shm_pool;
    if (s == NULL || s->lent == NULL || p == NULL || off % GRAN != 0 || off / GRAN >= p->ngran
        || s->lent[off / GRAN] == 0)
        return -EPROTO;
    uint32_t g = (uint32_t)(off / GRAN);
    s->lent[g]--;
    pthread_mutex_lock(&p->mu);
    struct lahja_lent *b = p->blocks[g];
    b->lends--;
    block_maybe_free(p, b); /* the endpoint holds the pool: it stays */
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* c ends: what it was lent and did not give back is returned. */
static void lent_return_all(struct conn *c, struct shm_link *s)
{
    struct shm_pool *p = c->ep->shm_pool;
    if (s->lent == NULL || p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    int gone = 0;
    for (uint32_t g = 0; g < p->ngran; g++) {
        if (s->lent[g] == 0)
            continue;
        struct lahja_lent *b = p->blocks[g];
        b->lends -= s->lent[g];
        gone |= block_maybe_free(p, b);
    }
    pthread_mutex_unlock(&p->mu);
    if (gone)
        pool_free(p);
    free(s->lent);
    s->lent = NULL;
}

void lahja_lend_prepare(lahja_endpoint_t *ep, lahja_event_t *ev, struct conn *const *conns,
                        size_t n)
{
    if (ep->shm_pool == NULL || ev->lent != NULL || ev->on_stack || ev->len < LEND_MIN)
        return;
    size_t i;
    for (i = 0; i < n; i++) {
        struct shm_link *s = conns[i]->t == &lahja_shm_transport ? link_of(conns[i]) : NULL;
        if (s != NULL && s->tx_on && s->lent != NULL)
            break;
    }
    if (i == n)
        return; /* nobody to lend it to */
    struct lahja_lent *b = pool_alloc(ep->shm_pool, ev->len);
    if (b == NULL)
        return; /* full: the bytes go through the rings */
    memcpy(block_at(b), ev->payload, ev->len);
    ev->lent = b;
}

static void free_loan(void *payload, void *user)
{
    (void)user;
    free(payload);
}

int lahja_event_loan(lahja_endpoint_t *ep, const char *type, size_t len, lahja_event_t **out,
                     void **buf)
{
    if (ep == NULL || type == NULL || out == NULL || buf == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(ep->rt))
        return LAHJA_EWRONGTHREAD;
    size_t tlen = strlen(type);
    if (!lahja_event_type_valid(type, tlen))
        return -EINVAL;
    if (len > ep->opts.max_payload)
        return -EMSGSIZE;
    struct lahja_lent *b = ep->shm_pool != NULL ? pool_alloc(ep->shm_pool, len) : NULL;
    if (b == NULL) {
        /* No pool, or no room in it: ordinary memory, sent as bytes. */
        void *mem = malloc(len > 0 ? len : 1);
        if (mem == NULL)
            return -ENOMEM;
        int rc = lahja_event_wrap(type, mem, len, free_loan, NULL, out);
        if (rc != 0) {
            free(mem);
            return rc;
        }
        *buf = mem;
        return 0;
    }
    lahja_event_t *ev;
    int rc = lahja_event_make(type, tlen, NULL, NULL, 0, &ev);
    if (rc != 0) {
        lahja_lent_drop(b);
        return rc;
    }
    ev->payload = block_at(b);
    ev->len = len;
    ev->lent = b;
    *out = ev;
    *buf = block_at(b);
    return 0;
}

/* ------------------------------------------------ the peer's pool */

static void map_put(struct pool_map *m, const uint64_t *off)
{
    pthread_mutex_lock(&m->mu);
    if (off != NULL && m->open) {
        if (m->nrel == m->caprel) {
            size_t cap = m->caprel ? 2 * m->caprel : 64;
            uint64_t *r = realloc(m->rel, cap * sizeof *r);
            if (r != NULL) {
                m->rel = r;
                m->caprel = cap;
            }
        }
        /* Without memory the offset stays lent until the connection
         * ends, when the peer takes everything back. */
        if (m->nrel < m->caprel)
            m->rel[m->nrel++] = *off;
    }
    int last = --m->refs == 0;
    pthread_mutex_unlock(&m->mu);
    if (!last)
        return;
    munmap(m->base, m->size);
    free(m->rel);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void lent_free(void *payload, void *user)
{
    (void)payload;
    struct lent_hold *h = user;
    map_put(h->map, &h->off);
    free(h);
}

/* Maps the peer's pool from fd (which it closes); NULL, or why not. */
static const char *pool_adopt(struct shm_link *s, int fd)
{
    const char *why = NULL;
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
        why = "its pool is not a sealed memfd";
    else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < (off_t)GRAN
             || (uint64_t)st.st_size > ((uint64_t)1 << 40))
        why = "its pool has a bad size";
    void *p = MAP_FAILED;
    if (why == NULL && (p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0))
                           == MAP_FAILED)
        why = "its pool cannot be mapped";
    close(fd);
    if (why != NULL)
        return why;
    struct pool_map *m = calloc(1, sizeof *m);
    if (m == NULL) {
        munmap(p, (size_t)st.st_size);
        return "no memory for its pool";
    }
    pthread_mutex_init(&m->mu, NULL);
    m->refs = 1; /* the connection's */
    m->base = p;
    m->size = (size_t)st.st_size;
    m->open = 1;
    s->rxpool = m;
    return NULL;
}

/* A LENT event's payload from its reference: checked against the
 * mapping, and held until the event goes. */
static int shm_lent_in(struct conn *c, const uint8_t *ref, const uint8_t **payload, size_t *len,
                       lahja_free_fn *free_fn, void **user)
{
    struct shm_link *s = link_of(c);
    struct pool_map *m = s != NULL ? s->rxpool : NULL;
    uint64_t off = 0, n = 0;
    for (int i = 7; i >= 0; i--) {
        off = off << 8 | ref[i];
        n = n << 8 | ref[8 + i];
    }
    if (m == NULL || off > m->size || n > m->size - off)
        return -EPROTO;
    struct lent_hold *h = malloc(sizeof *h);
    if (h == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&m->mu);
    m->refs++;
    pthread_mutex_unlock(&m->mu);
    h->map = m;
    h->off = off;
    *payload = m->base + off;
    *len = (size_t)n;
    *free_fn = lent_free;
    *user = h;
    return 0;
}

/* What the endpoint let go of goes back to the peer in RELEASE frames. */
static void send_releases(struct conn *c, struct shm_link *s)
{
    struct pool_map *m = s->rxpool;
    pthread_mutex_lock(&m->mu);
    uint64_t *rel = m->rel;
    size_t n = m->nrel;
    m->rel = NULL;
    m->nrel = m->caprel = 0;
    pthread_mutex_unlock(&m->mu);
    static uint8_t frame[LAHJA_WIRE_HEADER_SIZE + 8 * 1024];
    for (size_t i = 0; i < n && c->state != CONN_CLOSING;) {
        size_t k = n - i < 1024 ? n - i : 1024;
        size_t len = lahja_wire_release_encode(frame, rel + i, k);
        if (lahja_conn_send_frame(c, frame, len) != 0)
            break; /* without memory: returned when the connection ends */
        i += k;
    }
    free(rel);
}

static void on_pipe_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct shm_link *s = link_of(c);
    if (s->counted)
        lahja_shm_active(c->ep, -1);
    if (s->pending) {
        s->pending = 0;
        lahja_conn_written(c, UV_ECANCELED);
    }
    if (s->tx_fd >= 0)
        close(s->tx_fd);
    ring_unmap(&s->tx);
    ring_unmap(&s->rx);
    lent_return_all(c, s);
    if (s->rxpool != NULL) {
        pthread_mutex_lock(&s->rxpool->mu);
        s->rxpool->open = 0; /* the peer takes back all it lent */
        pthread_mutex_unlock(&s->rxpool->mu);
        map_put(s->rxpool, NULL);
    }
    free(s);
    c->io.ux.shm = NULL;
    lahja_conn_closed(c);
}

static void shm_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->io.ux.pipe))
        uv_close((uv_handle_t *)&c->io.ux.pipe, on_pipe_closed);
}

const struct conn_transport lahja_shm_transport = {
    .name = "shm",
    .features = LAHJA_WIRE_FEAT_SHM,
    .try_write = shm_try_write,
    .reserve = shm_reserve,
    .commit = shm_commit,
    .publish = shm_publish,
    .write = shm_write,
    .read_start = shm_read_start,
    .read_now = shm_read_now,
    .poll = shm_poll,
    .allowed = shm_allowed,
    .close = shm_close,
    .lendable = shm_lendable,
    .lend = shm_lend,
    .lent_in = shm_lent_in,
    .released = shm_released,
};

/* ------------------------------------------------- the endpoint's part */

struct conn *lahja_local_conn_new(lahja_endpoint_t *ep)
{
    struct shm_link *s = NULL;
    if (ep->shm_ring != 0 && ep->shm_pool == NULL)
        ep->shm_pool = pool_make(ep->shm_pool_size);
    if (ep->shm_ring != 0 && ep->shm_pool != NULL) {
        s = calloc(1, sizeof *s);
        if (s != NULL && ring_make(s, ep->shm_ring) != 0) {
            free(s);
            s = NULL;
        }
    }
    struct conn *c = lahja_conn_new(ep, s != NULL ? &lahja_shm_transport : &lahja_unix_transport);
    if (c == NULL) {
        if (s != NULL) {
            close(s->tx_fd);
            ring_unmap(&s->tx);
            free(s);
        }
        return NULL;
    }
    if (s == NULL) {
        lahja_unix_init(c);
        return c;
    }
    uv_pipe_init(ep->rt->loop, &c->io.ux.pipe, 1); /* ipc: the peer's ring comes through it */
    c->io.ux.pipe.data = c;
    c->io.ux.shm = s;
    return c;
}

static int is_shm(const struct conn *c)
{
    return c->t == &lahja_shm_transport && c->state != CONN_CLOSING && c->io.ux.shm != NULL;
}

static void on_kick(uv_idle_t *h)
{
    uv_idle_stop(h);
}

void lahja_shm_kick(lahja_endpoint_t *ep)
{
    if (!ep->flusher_closed && !uv_is_active((uv_handle_t *)&ep->shm_kick))
        uv_idle_start(&ep->shm_kick, on_kick);
}

/* Whether a ring has bytes for us, or room for a write waiting. */
static int anything(lahja_endpoint_t *ep)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (!is_shm(c))
            continue;
        struct shm_link *s = c->io.ux.shm;
        if (s->rx_on && atomic_load_explicit(&s->rx.hdr->head, memory_order_acquire) != s->rx_tail)
            return 1;
        if (s->pending && s->tx_on
            && atomic_load_explicit(&s->tx.hdr->tail, memory_order_acquire) != s->tx_tail)
            return 1;
    }
    return 0;
}

/* After each poll: what the rings hold is read, waiting writes go on. */
static void on_check(uv_check_t *h)
{
    lahja_endpoint_t *ep = h->data;
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (!is_shm(c))
            continue;
        struct shm_link *s = c->io.ux.shm;
        if (s->rx_on)
            rx_drain(c, 0);
        if (c->state == CONN_CLOSING || !s->pending)
            continue;
        int done = pend_more(c);
        if (done < 0) {
            lahja_conn_close(c, -EPROTO, "shared memory: the peer's ring index is out of bounds");
        } else if (done) {
            s->pending = 0;
            lahja_conn_written(c, 0);
        }
    }
}

/*
 * Says in the header of every ring we read whether we sleep, and of our
 * ring where a write waits for room whether we wait: when `asleep` is 0
 * the loop watches the rings itself and no writer need wake it (a
 * wake-up is a system call on each side).
 */
static void say_asleep(lahja_endpoint_t *ep, uint32_t asleep)
{
    if (asleep) /* on which CPU, when it can only be one (see tell) */
        asleep = ep->shm_only_cpu >= 0 ? (uint32_t)ep->shm_only_cpu + 1 : UINT32_MAX;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (!is_shm(c))
            continue;
        struct shm_link *s = c->io.ux.shm;
        if (s->rx_on)
            atomic_store_explicit(&s->rx.hdr->reader_sleeps, asleep, memory_order_relaxed);
        if (s->tx_on && (s->pending || !asleep))
            atomic_store_explicit(&s->tx.hdr->writer_waits, asleep, memory_order_relaxed);
    }
}

/* Bytes read from the rings (lent payloads included) since the last
 * call.  A connection that ended takes its count with it: the sum then
 * drops, and the turn counts as having read nothing. */
static uint64_t rx_taken(lahja_endpoint_t *ep)
{
    uint64_t seen = 0;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (is_shm(c))
            seen += c->rx_total + c->rx_lent;
    }
    uint64_t took = seen > ep->shm_rx_seen ? seen - ep->shm_rx_seen : 0;
    ep->shm_rx_seen = seen;
    return took;
}

/* Before each poll: the sleepers on our CPU that this turn's writes or
 * reads passed over (tell) are told now. */
static void tell_owed(lahja_endpoint_t *ep)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (is_shm(c))
            tell_owed_now(c);
    }
    ep->shm_tells_owed = 0; /* also those of connections that ended since */
}

/*
 * Before each poll: each ring we read says we sleep, each write waiting
 * says it waits; then, behind the fence, a last look.  What arrived in
 * between keeps the loop from sleeping.  With a request of ours pending,
 * the rings are watched a while first.
 */
static void on_prepare(uv_prepare_t *h)
{
    lahja_endpoint_t *ep = h->data;
    /* What this turn queued goes out first: the peer may be spinning. */
    lahja_ep_flush(ep);
    if (ep->shm_tells_owed)
        tell_owed(ep);
    uint64_t now = uv_hrtime(), until = 0;
    uint64_t took = rx_taken(ep);
    if (!lahja_list_empty(&ep->pending))
        until = now + SPIN_NS;      /* a response is due */
    else if (took >= SPIN_BYTES)
        until = now + SPIN_NS;      /* a bulk stream: its next piece is near */
    else if (now - ep->request_ns < SPIN_NS)
        until = ep->request_ns + SPIN_NS; /* the next request may follow */
    if (until < ep->poll_until && !uv_is_active((uv_handle_t *)&ep->poller))
        until = ep->poll_until; /* busy polling, over rings only (lahja_ep_busy_poll) */
    if (now < until)
        say_asleep(ep, 0); /* awake and watching; said again below, before we sleep */
    ep->shm_spinning = 1;
    while (now < until && !anything(ep)) {
        sched_yield();
        now = uv_hrtime();
    }
    ep->shm_spinning = 0;
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (is_shm(c) && c->io.ux.shm->rxpool != NULL && c->io.ux.shm->rxpool->nrel > 0)
            send_releases(c, c->io.ux.shm);
    }
    /* A loop with work already (ready tasks, a turn asked for) polls
     * without sleeping: it reads the rings again after the poll, and a
     * writer need not wake it (a system call on each side). */
    uint32_t sleeps = uv_backend_timeout(ep->rt->loop) != 0;
    say_asleep(ep, sleeps);
    if (!sleeps)
        return;
    atomic_thread_fence(memory_order_seq_cst);
    if (anything(ep)) {
        /* Something came meanwhile: one more turn, without sleeping, so
         * no wake-up is wanted after all. */
        lahja_shm_kick(ep);
        say_asleep(ep, 0);
    }
}

/* The CPU the calling thread is bound to (its affinity allows that one
 * only), or -1. */
static int only_cpu(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) != 1)
        return -1;
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set))
            return i;
    return -1;
}

int lahja_cpu_prefetchw;

static void cpu_features(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid(0x80000001, &a, &b, &c, &d) && (c & bit_PRFCHW))
        lahja_cpu_prefetchw = 1;
#endif
}

void lahja_shm_init(lahja_endpoint_t *ep)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, cpu_features);
    ep->shm_only_cpu = only_cpu();
    size_t want = ep->opts.shm_ring != 0 ? ep->opts.shm_ring : SHM_RING_DEFAULT;
    size_t size = SHM_RING_MIN;
    while (size < want && size < SHM_RING_MAX)
        size <<= 1;
    size_t pool = ep->opts.shm_pool != 0 ? ep->opts.shm_pool : SHM_POOL_DEFAULT;
    ep->shm_pool_size = pool < 4 * (size_t)GRAN ? 4 * (size_t)GRAN : pool;
    const char *env = getenv("LAHJA_SHM");
    ep->shm_ring = ep->opts.shm_ring == SIZE_MAX || (env != NULL && strcmp(env, "0") == 0) ? 0 : size;
    /* Made now, so that what an endpoint holds does not change with its
     * first connection (address space only: memory comes as it is used);
     * if it cannot be, the first connection tries again. */
    if (ep->shm_ring != 0)
        ep->shm_pool = pool_make(ep->shm_pool_size);
    uv_check_init(ep->rt->loop, &ep->shm_check);
    ep->shm_check.data = ep;
    uv_prepare_init(ep->rt->loop, &ep->shm_prepare);
    ep->shm_prepare.data = ep;
    uv_idle_init(ep->rt->loop, &ep->shm_kick);
    ep->shm_kick.data = ep;
    ep->nopen += 3;
}

void lahja_shm_active(lahja_endpoint_t *ep, int delta)
{
    ep->shm_conns += delta;
    if (ep->flusher_closed)
        return;
    if (ep->shm_conns > 0) {
        uv_check_start(&ep->shm_check, on_check);
        uv_prepare_start(&ep->shm_prepare, on_prepare);
    } else {
        uv_check_stop(&ep->shm_check);
        uv_prepare_stop(&ep->shm_prepare);
    }
}

void lahja_shm_stop(lahja_endpoint_t *ep)
{
    uv_close((uv_handle_t *)&ep->shm_check, lahja_ep_handle_closed);
    uv_close((uv_handle_t *)&ep->shm_prepare, lahja_ep_handle_closed);
    uv_close((uv_handle_t *)&ep->shm_kick, lahja_ep_handle_closed);
}

void lahja_shm_free(lahja_endpoint_t *ep)
{
    struct shm_pool *p = ep->shm_pool;
    ep->shm_pool = NULL;
    if (p == NULL)
        return;
    /* Loaned events the program still holds keep it until they go. */
    pthread_mutex_lock(&p->mu);
    int now = p->live == 0;
    p->orphan = 1;
    pthread_mutex_unlock(&p->mu);
    if (now)
        pool_free(p);
}

unsigned lahja_shm_pool_live(lahja_endpoint_t *ep)
{
    struct shm_pool *p = ep->shm_pool;
    if (p == NULL)
        return 0;
    pthread_mutex_lock(&p->mu);
    unsigned n = p->live;
    pthread_mutex_unlock(&p->mu);
    return n;
}
