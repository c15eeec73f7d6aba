/*
 * peer_nats - NATS (the nats.c client) through a nats-server that
 * bench/run.sh starts on 127.0.0.1; addr is nats://127.0.0.1:<port>.
 * A broker: every message crosses two TCP connections.
 *
 * Events are published on the subject "evt.bench", which every receiver
 * subscribes to.  The client library queues incoming messages per
 * subscription and drops them past a pending limit (default 65536
 * messages / 64 MiB); here the limit is lifted (PB_NATS_PENDING=<msgs>
 * sets one), so a slow receiver queues instead of losing messages.  The
 * server must not cut off a slow receiver either: run.sh starts it with
 * a large max_pending.
 *
 * Requests go to "svc.echo" with natsConnection_Request (the client's
 * shared reply inbox); the responder publishes each back to its reply
 * subject.  PB_NATS_ASAP=1 sets natsOptions_SetSendAsap on every
 * connection: each publish is written at once instead of being
 * coalesced by the client's flusher, which is what a latency test wants.
 */
#define _GNU_SOURCE
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peer.h"

#define EVENT_SUBJECT "evt.bench"
#define ECHO_SUBJECT "svc.echo"

typedef struct {
    natsConnection *nc;
    natsSubscription *sub;
} nats_t;

static void nats_close(nats_t *n)
{
    if (n->sub != NULL)
        natsSubscription_Destroy(n->sub);
    if (n->nc != NULL)
        natsConnection_Destroy(n->nc);
    free(n);
}

/* Connects, retrying while the server is not there yet; subscribes to
 * subject when it is not NULL. */
static nats_t *nats_open(const char *addr, const char *subject)
{
    nats_t *n = calloc(1, sizeof *n);
    natsOptions *o = NULL;
    if (n == NULL || natsOptions_Create(&o) != NATS_OK) {
        free(n);
        return NULL;
    }
    natsOptions_SetURL(o, addr);
    if (peer_env_int("PB_NATS_ASAP", 0))
        natsOptions_SetSendAsap(o, true);
    natsStatus s = NATS_ERR;
    uint64_t deadline = peer_now_ns() + (uint64_t)PEER_CONNECT_MS * 1000000u;
    while ((s = natsConnection_Connect(&n->nc, o)) != NATS_OK && peer_now_ns() < deadline)
        usleep(10000);
    natsOptions_Destroy(o);
    if (s == NATS_OK && subject != NULL) {
        s = natsConnection_SubscribeSync(&n->sub, n->nc, subject);
        int limit = peer_env_int("PB_NATS_PENDING", -1);
        if (s == NATS_OK)
            s = natsSubscription_SetPendingLimits(n->sub, limit, -1);
        if (s == NATS_OK) /* the server knows of the subscription */
            s = natsConnection_Flush(n->nc);
    }
    if (s != NATS_OK) {
        fprintf(stderr, "peer_nats: %s: %s\n", addr, natsStatus_GetText(s));
        nats_close(n);
        return NULL;
    }
    return n;
}

/* The next message's data copied into buf: its length, 0 on timeout. */
static ssize_t next_msg(nats_t *n, void *buf, size_t cap, int timeout_ms, natsMsg **keep)
{
    natsMsg *m = NULL;
    natsStatus s;
    /* NATS_SLOW_CONSUMER reports messages dropped on the way: they count
     * as not delivered; receiving goes on. */
    do
        s = natsSubscription_NextMsg(&m, n->sub, timeout_ms < 0 ? 3600000 : timeout_ms);
    while (s == NATS_SLOW_CONSUMER);
    if (s == NATS_TIMEOUT)
        return 0;
    if (s != NATS_OK)
        return -1;
    int len = natsMsg_GetDataLength(m);
    if (len < 0 || (size_t)len > cap) {
        natsMsg_Destroy(m);
        return -1;
    }
    memcpy(buf, natsMsg_GetData(m), (size_t)len);
    if (keep != NULL)
        *keep = m;
    else
        natsMsg_Destroy(m);
    return len;
}

static void *pub_open(const char *addr, int nsubs)
{
    (void)nsubs;
    return nats_open(addr, NULL);
}

static int pub_send(void *h, const void *buf, size_t len)
{
    nats_t *n = h;
    return natsConnection_Publish(n->nc, EVENT_SUBJECT, buf, (int)len) == NATS_OK ? 0 : -1;
}

static void pub_flush(void *h)
{
    nats_t *n = h;
    natsConnection_FlushTimeout(n->nc, 60000);
}

static void *sub_open(const char *addr, int idx)
{
    (void)idx;
    return nats_open(addr, EVENT_SUBJECT);
}

static ssize_t sub_recv(void *h, void *buf, size_t cap, int timeout_ms)
{
    return next_msg(h, buf, cap, timeout_ms, NULL);
}

static void *rep_open(const char *addr)
{
    return nats_open(addr, ECHO_SUBJECT);
}

static ssize_t rep_serve_one(void *h, void *buf, size_t cap)
{
    nats_t *n = h;
    natsMsg *m = NULL;
    ssize_t len = next_msg(n, buf, cap, -1, &m);
    if (len <= 0)
        return -1;
    natsStatus s = natsConnection_Publish(n->nc, natsMsg_GetReply(m), buf, (int)len);
    natsMsg_Destroy(m);
    return s == NATS_OK ? len : -1;
}

static void *req_open(const char *addr)
{
    return nats_open(addr, NULL);
}

static ssize_t req_roundtrip(void *h, const void *req, size_t len, void *reply, size_t cap)
{
    nats_t *n = h;
    natsMsg *r = NULL;
    natsStatus s = natsConnection_Request(&r, n->nc, ECHO_SUBJECT, req, (int)len, 10000);
    if (s != NATS_OK) {
        fprintf(stderr, "peer_nats: request: %s\n", natsStatus_GetText(s));
        return -1;
    }
    int got = natsMsg_GetDataLength(r);
    ssize_t rc = got >= 0 && (size_t)got <= cap ? got : -1;
    if (rc >= 0)
        memcpy(reply, natsMsg_GetData(r), (size_t)got);
    natsMsg_Destroy(r);
    return rc;
}

const peer_ops_t peer_ops = {
    .name = "nats",
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
