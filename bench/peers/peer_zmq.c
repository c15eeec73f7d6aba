/*
 * peer_zmq - ZeroMQ (libzmq) over ipc://: PUB/SUB or PUSH/PULL for
 * events, REQ/REP for requests.  One context (one I/O thread, the
 * default) per process.
 *
 * PB_PROTO=pubsub (default): PUB/SUB, receivers subscribe to "EVT:".
 *     PUB never blocks: once a receiver's queue is at its high-water
 *     mark, PUB drops for it.  PB_ZMQ_HWM=0 lifts the mark (lossless,
 *     memory unbounded).
 * PB_PROTO=pipeline: PUSH/PULL, which blocks the sender at the mark
 *     (lossless); with several receivers PUSH deals messages out round
 *     robin instead of copying them, so it is a one-to-one transport.
 * PB_ZMQ_HWM=<n> sets SNDHWM and RCVHWM (default: libzmq's 1000).
 * Hello and end messages are sent with ZMQ_DONTWAIT, data blocking.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "peer.h"

typedef struct {
    void *ctx, *sock;
    int timeout_ms; /* the RCVTIMEO set on sock */
} zsock_t;

static int pipeline(void)
{
    return strcmp(peer_env("PB_PROTO", "pubsub"), "pipeline") == 0;
}

static void zsock_close(zsock_t *z)
{
    zmq_close(z->sock);
    zmq_ctx_term(z->ctx);
    free(z);
}

static zsock_t *zsock_new(int type)
{
    zsock_t *z = calloc(1, sizeof *z);
    if (z == NULL)
        return NULL;
    z->timeout_ms = -1;
    z->ctx = zmq_ctx_new();
    z->sock = z->ctx != NULL ? zmq_socket(z->ctx, type) : NULL;
    if (z->sock == NULL) {
        fprintf(stderr, "peer_zmq: socket: %s\n", zmq_strerror(zmq_errno()));
        if (z->ctx != NULL)
            zmq_ctx_term(z->ctx);
        free(z);
        return NULL;
    }
    int zero = 0, hwm = peer_env_int("PB_ZMQ_HWM", -1);
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (hwm >= 0) {
        zmq_setsockopt(z->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(z->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    }
    return z;
}

static zsock_t *zsock_bind(int type, const char *addr)
{
    zsock_t *z = zsock_new(type);
    if (z != NULL && zmq_bind(z->sock, addr) != 0) {
        fprintf(stderr, "peer_zmq: bind %s: %s\n", addr, zmq_strerror(zmq_errno()));
        zsock_close(z);
        return NULL;
    }
    return z;
}

/* ipc:// connects succeed before the peer binds (zmq retries), so no
 * retry loop is needed here. */
static zsock_t *zsock_connect(int type, const char *addr)
{
    zsock_t *z = zsock_new(type);
    if (z != NULL && type == ZMQ_SUB)
        zmq_setsockopt(z->sock, ZMQ_SUBSCRIBE, "EVT:", 4);
    if (z != NULL && zmq_connect(z->sock, addr) != 0) {
        fprintf(stderr, "peer_zmq: connect %s: %s\n", addr, zmq_strerror(zmq_errno()));
        zsock_close(z);
        return NULL;
    }
    return z;
}

static ssize_t zsock_recv(zsock_t *z, void *buf, size_t cap, int timeout_ms)
{
    if (timeout_ms != z->timeout_ms) {
        zmq_setsockopt(z->sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
        z->timeout_ms = timeout_ms;
    }
    for (;;) {
        int n = zmq_recv(z->sock, buf, cap, 0);
        if (n >= 0)
            return (size_t)n > cap ? -1 : n; /* truncated: cap too small */
        if (zmq_errno() == EAGAIN)
            return 0;
        if (zmq_errno() != EINTR)
            return -1;
    }
}

static void *pub_open(const char *addr, int nsubs)
{
    (void)nsubs;
    return zsock_bind(pipeline() ? ZMQ_PUSH : ZMQ_PUB, addr);
}

static int pub_send(void *h, const void *buf, size_t len)
{
    int flags = ((const unsigned char *)buf)[4] == PEER_DATA ? 0 : ZMQ_DONTWAIT;
    return zmq_send(((zsock_t *)h)->sock, buf, len, flags) == (int)len ? 0 : -1;
}

static void *sub_open(const char *addr, int idx)
{
    (void)idx;
    return zsock_connect(pipeline() ? ZMQ_PULL : ZMQ_SUB, addr);
}

static ssize_t sub_recv(void *h, void *buf, size_t cap, int timeout_ms)
{
    return zsock_recv(h, buf, cap, timeout_ms);
}

static void *rep_open(const char *addr)
{
    return zsock_bind(ZMQ_REP, addr);
}

static ssize_t rep_serve_one(void *h, void *buf, size_t cap)
{
    ssize_t n = zsock_recv(h, buf, cap, -1);
    if (n < 0 || zmq_send(((zsock_t *)h)->sock, buf, (size_t)n, 0) != (int)n)
        return -1;
    return n;
}

static void *req_open(const char *addr)
{
    return zsock_connect(ZMQ_REQ, addr);
}

static ssize_t req_roundtrip(void *h, const void *req, size_t len, void *reply, size_t cap)
{
    if (zmq_send(((zsock_t *)h)->sock, req, len, 0) != (int)len)
        return -1;
    return zsock_recv(h, reply, cap, -1);
}

const peer_ops_t peer_ops = {
    .name = "zmq",
    .pub_open = pub_open,
    .pub_send = pub_send,
    .pub_flush = NULL,
    .sub_open = sub_open,
    .sub_recv = sub_recv,
    .rep_open = rep_open,
    .rep_serve_one = rep_serve_one,
    .req_open = req_open,
    .req_roundtrip = req_roundtrip,
};
