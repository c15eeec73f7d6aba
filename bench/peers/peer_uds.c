/*
 * peer_uds - raw Unix-domain stream sockets: the floor any local bus
 * builds on.  Every message is a frame: a 4-byte length (host order),
 * then the payload.  addr is a socket path, with or without "ipc://".
 *
 * PB_UDS_MODE=unbuf (default): one writev() per message and receiver.
 * PB_UDS_MODE=batch: messages are coalesced into a 64 KiB buffer per
 *     receiver, written when the next would not fit and at a flush; a
 *     frame larger than the buffer is written on its own, in one writev().
 * Receivers read the stream in 64 KiB chunks and cut frames out of them;
 * a frame larger than a chunk is read straight into the caller's buffer.
 * Fan-out: the publisher accepts one connection per receiver and writes
 * every message to each.  Request/response: one connection, the
 * responder writes every request back (no batching).  Blocking sockets
 * throughout, so nothing is ever dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "peer.h"

#define CHUNK (64 * 1024)

typedef struct {
    int fd;
    int timeout_ms; /* the SO_RCVTIMEO set on fd; -1: none */
    unsigned char *rbuf;
    size_t rlen, roff;
    unsigned char *wbuf; /* batch mode only */
    size_t wlen;
} conn_t;

static int batch_mode(void)
{
    return strcmp(peer_env("PB_UDS_MODE", "unbuf"), "batch") == 0;
}

static conn_t *conn_new(int fd, int batch)
{
    conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->fd = fd;
    c->timeout_ms = -1;
    c->rbuf = malloc(CHUNK);
    c->wbuf = batch ? malloc(CHUNK) : NULL;
    if (c->rbuf == NULL || (batch && c->wbuf == NULL)) {
        free(c->rbuf);
        free(c->wbuf);
        free(c);
        return NULL;
    }
    return c;
}

static void conn_free(conn_t *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c->rbuf);
    free(c->wbuf);
    free(c);
}

/* ------------------------------------------------------------- writing */

static int writev_full(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int conn_flush(conn_t *c)
{
    if (c->wlen == 0)
        return 0;
    struct iovec iov = { c->wbuf, c->wlen };
    c->wlen = 0;
    return writev_full(c->fd, &iov, 1);
}

static int conn_write_frame(conn_t *c, const void *buf, size_t len)
{
    uint32_t hdr = (uint32_t)len;
    if (c->wbuf != NULL) {
        if (c->wlen + 4 + len > CHUNK && conn_flush(c) != 0)
            return -1;
        if (4 + len <= CHUNK) {
            memcpy(c->wbuf + c->wlen, &hdr, 4);
            memcpy(c->wbuf + c->wlen + 4, buf, len);
            c->wlen += 4 + len;
            return 0;
        }
    }
    struct iovec iov[2] = { { &hdr, 4 }, { (void *)buf, len } };
    return writev_full(c->fd, iov, 2);
}

/* ------------------------------------------------------------- reading */

/* Reads what is there, up to n bytes: > 0 bytes, 0 after timeout_ms
 * without any, < 0 at end of stream or on error. */
static ssize_t conn_recv(conn_t *c, void *p, size_t n, int timeout_ms)
{
    if (timeout_ms != c->timeout_ms) {
        struct timeval tv = { timeout_ms > 0 ? timeout_ms / 1000 : 0,
                              timeout_ms > 0 ? (timeout_ms % 1000) * 1000 : 0 };
        if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
            return -1;
        c->timeout_ms = timeout_ms;
    }
    for (;;) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r > 0)
            return r;
        if (r == 0)
            return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* The next frame into buf: its length, 0 after timeout_ms without data,
 * < 0 at end of stream, on error or when the frame exceeds cap. */
static ssize_t conn_read_frame(conn_t *c, void *buf, size_t cap, int timeout_ms)
{
    for (;;) {
        size_t avail = c->rlen - c->roff;
        if (avail >= 4) {
            uint32_t len;
            memcpy(&len, c->rbuf + c->roff, 4);
            if (len > cap)
                return -1;
            if (avail >= 4 + (size_t)len) {
                memcpy(buf, c->rbuf + c->roff + 4, len);
                c->roff += 4 + (size_t)len;
                return (ssize_t)len;
            }
            if (4 + (size_t)len > CHUNK) {
                /* A large frame: what is buffered, then the rest read
                 * straight into buf. */
                size_t have = avail - 4;
                memcpy(buf, c->rbuf + c->roff + 4, have);
                c->rlen = c->roff = 0;
                while (have < len) {
                    ssize_t r = conn_recv(c, (char *)buf + have, len - have, timeout_ms);
                    if (r <= 0)
                        return -1; /* a stall inside a frame is an error */
                    have += (size_t)r;
                }
                return (ssize_t)len;
            }
        }
        if (c->roff > 0) {
            memmove(c->rbuf, c->rbuf + c->roff, avail);
            c->rlen = avail;
            c->roff = 0;
        }
        ssize_t r = conn_recv(c, c->rbuf + c->rlen, CHUNK - c->rlen, timeout_ms);
        if (r <= 0)
            return r;
        c->rlen += (size_t)r;
    }
}

/* ---------------------------------------------------------- addressing */

static int socket_address(const char *addr, struct sockaddr_un *sa)
{
    const char *path = strncmp(addr, "ipc://", 6) == 0 ? addr + 6 : addr;
    size_t len = strlen(path);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (len >= sizeof sa->sun_path) {
        fprintf(stderr, "peer_uds: socket path too long: %s\n", path);
        return -1;
    }
    memcpy(sa->sun_path, path, len + 1);
    return 0;
}

static int listen_at(const char *addr)
{
    struct sockaddr_un sa;
    if (socket_address(addr, &sa) != 0)
        return -1;
    unlink(sa.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 64) != 0) {
        perror("peer_uds: listen");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int accept_within(int lfd, int timeout_ms)
{
    struct pollfd pf = { .fd = lfd, .events = POLLIN };
    if (poll(&pf, 1, timeout_ms) != 1)
        return -1;
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* Connects, retrying while the listener is not there yet. */
static int connect_to(const char *addr)
{
    struct sockaddr_un sa;
    if (socket_address(addr, &sa) != 0)
        return -1;
    uint64_t deadline = peer_now_ns() + (uint64_t)PEER_CONNECT_MS * 1000000u;
    do {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        close(fd);
        usleep(1000);
    } while (peer_now_ns() < deadline);
    return -1;
}

/* ------------------------------------------------------------- fan-out */

typedef struct {
    int n;
    conn_t *subs[];
} pub_t;

static void pub_free(pub_t *p)
{
    for (int i = 0; i < p->n; i++)
        conn_free(p->subs[i]);
    free(p);
}

static void *pub_open(const char *addr, int nsubs)
{
    int lfd = listen_at(addr);
    if (lfd < 0)
        return NULL;
    pub_t *p = calloc(1, sizeof *p + sizeof p->subs[0] * (size_t)nsubs);
    int batch = batch_mode();
    while (p != NULL && p->n < nsubs) {
        int fd = accept_within(lfd, PEER_CONNECT_MS);
        conn_t *c = fd >= 0 ? conn_new(fd, batch) : NULL;
        if (c == NULL) {
            if (fd >= 0)
                close(fd);
            pub_free(p);
            p = NULL;
            break;
        }
        p->subs[p->n++] = c;
    }
    close(lfd);
    return p;
}

static int pub_send(void *h, const void *buf, size_t len)
{
    pub_t *p = h;
    int rc = 0;
    for (int i = 0; i < p->n; i++)
        if (conn_write_frame(p->subs[i], buf, len) != 0)
            rc = -1;
    return rc;
}

static void pub_flush(void *h)
{
    pub_t *p = h;
    for (int i = 0; i < p->n; i++)
        conn_flush(p->subs[i]);
}

static void *sub_open(const char *addr, int idx)
{
    (void)idx;
    int fd = connect_to(addr);
    conn_t *c = fd >= 0 ? conn_new(fd, 0) : NULL;
    if (c == NULL && fd >= 0)
        close(fd);
    return c;
}

static ssize_t sub_recv(void *h, void *buf, size_t cap, int timeout_ms)
{
    return conn_read_frame(h, buf, cap, timeout_ms);
}

/* ---------------------------------------------------- request/response */

typedef struct {
    int lfd;
    conn_t *c;
} rep_t;

static void *rep_open(const char *addr)
{
    rep_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->lfd = listen_at(addr);
    if (r->lfd < 0) {
        free(r);
        return NULL;
    }
    return r;
}

static ssize_t rep_serve_one(void *h, void *buf, size_t cap)
{
    rep_t *r = h;
    if (r->c == NULL) {
        int fd = accept_within(r->lfd, PEER_CONNECT_MS);
        if (fd < 0 || (r->c = conn_new(fd, 0)) == NULL) {
            if (fd >= 0)
                close(fd);
            return -1;
        }
    }
    ssize_t n = conn_read_frame(r->c, buf, cap, -1);
    if (n <= 0 || conn_write_frame(r->c, buf, (size_t)n) != 0)
        return -1;
    return n;
}

static void *req_open(const char *addr)
{
    return sub_open(addr, 0);
}

static ssize_t req_roundtrip(void *h, const void *req, size_t len, void *reply, size_t cap)
{
    if (conn_write_frame(h, req, len) != 0)
        return -1;
    return conn_read_frame(h, reply, cap, -1);
}

const peer_ops_t peer_ops = {
    .name = "uds",
    .pub_open = pub_open,
    .pub_send = pub_send,
    .pub_flush = pub_flush,
    .sub_open = sub_open,
    .sub_recv = sub_recv,
    .rep_open = rep_open,
    .rep_serve_one = rep_serve_one,
    .req_open = req_open,
    .req_roundtrip = req_roundtrip,
};
