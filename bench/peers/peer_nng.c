/*
 * peer_nng - nng (libnng) over ipc://: pair1 or pub0/sub0 for events,
 * req0/rep0 for requests.
 *
 * PB_PROTO=pair: pair1, which blocks the sender when the receiver's
 *     queue is full (lossless).  pair1 connects exactly two sockets, so a
 *     fan-out to k receivers uses k sockets, listening at <addr>.0 ..
 *     <addr>.<k-1>, and the publisher sends every message on each in turn.
 * PB_PROTO=pubsub (default): pub0/sub0, receivers subscribe to "EVT:".
 *     pub0 never blocks: it drops for a receiver whose queue is full, so
 *     it is lossless only while the buffers absorb the backlog.
 * PB_NNG_BUF=<n> sets NNG_OPT_SENDBUF on the sender and NNG_OPT_RECVBUF
 *     on the receivers, in messages (nng allows up to 8192; default 0).
 * The largest accepted message (NNG_OPT_RECVMAXSZ, 1 MiB by default) is
 * lifted, so that 1 MiB payloads plus pair1's header arrive.
 * Hello and end messages are sent with NNG_FLAG_NONBLOCK, data blocking.
 */
#define _GNU_SOURCE
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peer.h"

#define MAX_SOCKS 64

typedef struct {
    int n;
    int timeout_ms; /* the NNG_OPT_RECVTIMEO set on s[0] */
    nng_socket s[MAX_SOCKS];
} nsock_t;

static int pair(void)
{
    return strcmp(peer_env("PB_PROTO", "pubsub"), "pair") == 0;
}

static void nsock_close(nsock_t *ns)
{
    for (int i = 0; i < ns->n; i++)
        nng_close(ns->s[i]);
    free(ns);
}

static nsock_t *nsock_new(void)
{
    nsock_t *ns = calloc(1, sizeof *ns);
    if (ns != NULL)
        ns->timeout_ms = -2; /* unset */
    return ns;
}

/* Opens a socket with opener, sets the buffers and size limit, and
 * listens at or dials addr (retrying a dial while nobody listens). */
static int nsock_add(nsock_t *ns, int (*opener)(nng_socket *), const char *addr, int listen)
{
    nng_socket s;
    int rv = opener(&s);
    if (rv != 0) {
        fprintf(stderr, "peer_nng: open: %s\n", nng_strerror(rv));
        return -1;
    }
    ns->s[ns->n++] = s;
    int buf = peer_env_int("PB_NNG_BUF", 0);
    if (buf > 0) {
        nng_socket_set_int(s, NNG_OPT_SENDBUF, buf);
        nng_socket_set_int(s, NNG_OPT_RECVBUF, buf);
    }
    nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0);
    if (opener == nng_sub0_open)
        nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, "EVT:", 4);
    if (listen) {
        rv = nng_listen(s, addr, NULL, 0);
    } else {
        uint64_t deadline = peer_now_ns() + (uint64_t)PEER_CONNECT_MS * 1000000u;
        while ((rv = nng_dial(s, addr, NULL, 0)) != 0 && peer_now_ns() < deadline)
            usleep(1000);
    }
    if (rv != 0) {
        fprintf(stderr, "peer_nng: %s %s: %s\n", listen ? "listen" : "dial", addr, nng_strerror(rv));
        return -1;
    }
    return 0;
}

/* Opens count sockets; pair1 sockets are numbered from first, at <addr>.<i>. */
static nsock_t *nsock_open(int (*opener)(nng_socket *), const char *addr, int listen, int first,
                           int count)
{
    nsock_t *ns = nsock_new();
    for (int i = first; ns != NULL && i < first + count; i++) {
        char a[512];
        if (opener == nng_pair1_open)
            snprintf(a, sizeof a, "%s.%d", addr, i);
        else
            snprintf(a, sizeof a, "%s", addr);
        if (nsock_add(ns, opener, a, listen) != 0) {
            nsock_close(ns);
            ns = NULL;
        }
    }
    return ns;
}

static ssize_t nsock_recv(nsock_t *ns, void *buf, size_t cap, int timeout_ms)
{
    if (timeout_ms != ns->timeout_ms) {
        nng_socket_set_ms(ns->s[0], NNG_OPT_RECVTIMEO, timeout_ms < 0 ? NNG_DURATION_INFINITE : timeout_ms);
        ns->timeout_ms = timeout_ms;
    }
    size_t size = cap;
    int rv = nng_recv(ns->s[0], buf, &size, 0);
    if (rv == NNG_ETIMEDOUT)
        return 0;
    return rv == 0 ? (ssize_t)size : -1;
}

static void *pub_open(const char *addr, int nsubs)
{
    if (nsubs > MAX_SOCKS)
        return NULL;
    return pair() ? nsock_open(nng_pair1_open, addr, 1, 0, nsubs)
                  : nsock_open(nng_pub0_open, addr, 1, 0, 1);
}

static int pub_send(void *h, const void *buf, size_t len)
{
    nsock_t *ns = h;
    int flags = ((const unsigned char *)buf)[4] == PEER_DATA ? 0 : NNG_FLAG_NONBLOCK;
    int rc = 0;
    for (int i = 0; i < ns->n; i++)
        if (nng_send(ns->s[i], (void *)buf, len, flags) != 0)
            rc = -1;
    return rc;
}

static void *sub_open(const char *addr, int idx)
{
    return pair() ? nsock_open(nng_pair1_open, addr, 0, idx, 1) : nsock_open(nng_sub0_open, addr, 0, 0, 1);
}

static ssize_t sub_recv(void *h, void *buf, size_t cap, int timeout_ms)
{
    return nsock_recv(h, buf, cap, timeout_ms);
}

static void *rep_open(const char *addr)
{
    return nsock_open(nng_rep0_open, addr, 1, 0, 1);
}

static ssize_t rep_serve_one(void *h, void *buf, size_t cap)
{
    nsock_t *ns = h;
    ssize_t n = nsock_recv(ns, buf, cap, -1);
    if (n < 0 || nng_send(ns->s[0], buf, (size_t)n, 0) != 0)
        return -1;
    return n;
}

static void *req_open(const char *addr)
{
    return nsock_open(nng_req0_open, addr, 0, 0, 1);
}

static ssize_t req_roundtrip(void *h, const void *req, size_t len, void *reply, size_t cap)
{
    nsock_t *ns = h;
    if (nng_send(ns->s[0], (void *)req, len, 0) != 0)
        return -1;
    return nsock_recv(ns, reply, cap, -1);
}

const peer_ops_t peer_ops = {
    .name = "nng",
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
