/*
 * peer_iceoryx - iceoryx 2.0 (its C binding): shared memory managed by
 * the RouDi daemon, which bench/run.sh starts and stops.  What a bus on
 * one machine has to beat when the bytes need not cross a socket at all.
 * addr names the service instance, so that each run has services of its
 * own: a port left behind by a killed process of an earlier run (RouDi
 * removes it only when its heartbeat stops) must not be matched.
 *
 * Messages travel in chunks of RouDi's mempools: the sender loans one,
 * copies the message in and publishes it; the receiver takes it, copies
 * it out into the caller's buffer and releases it.  The copies are what
 * peer_ops' buffers require, and what lahja's bench_bus pays when it
 * hands the bus a payload of its own.  PB_IOX_INPLACE=1 measures
 * iceoryx as it is meant to be used for large messages, beside
 * bench_bus's LAHJA_BENCH_LOAN=1: the sender writes only the message's
 * header into the chunk (as if it had built the rest there) and the
 * receiver reads only the header out of it (as if it read the rest in
 * place), so what is measured is the loan, publish, wake-up, take and
 * release.  The C binding 2.0.3 cannot tell a received chunk's length,
 * so every chunk starts with the message length (uint64_t), the message
 * after it.
 *
 * Fan-out is one publisher, a subscriber per receiver; lossless: the
 * subscribers' queues block the producer when full
 * (QueueFullPolicy_BLOCK_PRODUCER) and the publisher waits for them
 * (ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER).  Both are needed, the
 * default of either drops the oldest.  The queue holds PB_IOX_QUEUE
 * chunks (default 256, the most iceoryx allows).  RouDi's pools must
 * hold receivers x queue + 8 chunks of the message's size class or loans
 * fail (AllocationResult_RUNNING_OUT_OF_CHUNKS): that is not
 * back-pressure, so a failed loan is retried, with a note on stderr.
 *
 * Request/response uses iceoryx's client and server, with the same pair
 * of lossless policies on both queues.  Receiving waits on a waitset.
 *
 * Every process registers with RouDi under a name of its own (the pid
 * in it: a name still in use aborts the newcomer), after peer_driver has
 * forked: the runtime starts threads.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "iceoryx_binding_c/client.h"
#include "iceoryx_binding_c/enums.h"
#include "iceoryx_binding_c/log.h"
#include "iceoryx_binding_c/publisher.h"
#include "iceoryx_binding_c/runtime.h"
#include "iceoryx_binding_c/server.h"
#include "iceoryx_binding_c/subscriber.h"
#include "iceoryx_binding_c/wait_set.h"

#include "peer.h"

#define SERVICE "lahja-bench"
#define LEN_PFX 8 /* the message length in front of every message */
/* iceoryx's limit for service, instance and event names. */
#define NAME_MAX_LEN 100
/* How long a loan may keep failing for want of chunks before the send
 * is refused. */
#define LOAN_MS 10000

static char instance[NAME_MAX_LEN + 1];

/* Registers this process with RouDi, once; addr becomes the instance. */
static void runtime_init(const char *addr)
{
    static int done;
    if (done)
        return;
    done = 1;
    /* The library logs to stderr, Debug lines at registration included. */
    iox_set_loglevel(Iceoryx_LogLevel_Warn);
    char name[64];
    snprintf(name, sizeof name, "lahja-iox-%ld", (long)getpid());
    iox_runtime_init(name);

    /* Names are limited to 100 characters; keep them plain, since no
     * separator is documented as safe. */
    const char *a = strncmp(addr, "iox:", 4) == 0 ? addr + 4 : addr;
    size_t n = strlen(a);
    if (n > NAME_MAX_LEN)
        a += n - NAME_MAX_LEN; /* the tail is the distinctive part */
    size_t i = 0;
    for (; a[i] != '\0' && i < NAME_MAX_LEN; i++)
        instance[i] = isalnum((unsigned char)a[i]) || a[i] == '-' || a[i] == '_' ? a[i] : '-';
    instance[i] = '\0';
    if (i == 0)
        strcpy(instance, "default");
}

static struct timespec ms_to_ts(uint64_t ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    return ts;
}

/* Waits on ws until something attached is ready or deadline_ns (0:
 * none) passes; 0 when the deadline passed.  The wait can return early
 * with nothing ready, so the caller checks and comes back. */
static int ws_wait(iox_ws_t ws, uint64_t deadline_ns)
{
    iox_notification_info_t info[4];
    uint64_t missed;
    if (deadline_ns == 0) {
        iox_ws_wait(ws, info, 4, &missed);
        return 1;
    }
    uint64_t now = peer_now_ns();
    if (now >= deadline_ns)
        return 0;
    uint64_t left_ms = (deadline_ns - now + 999999) / 1000000;
    iox_ws_timed_wait(ws, ms_to_ts(left_ms), info, 4, &missed);
    return 1;
}

/* PB_IOX_INPLACE: messages are built and read in their chunks; only
 * their headers are copied. */
static int inplace = -1;

/* How many of a message's len bytes are copied in or out. */
static size_t copied(size_t len)
{
    if (inplace < 0)
        inplace = peer_env_int("PB_IOX_INPLACE", 0) != 0;
    return inplace && len > PEER_HDR ? PEER_HDR : len;
}

/* Copies a received chunk's message into buf: its length, or -1 when it
 * does not fit. */
static ssize_t copy_out(const void *chunk, void *buf, size_t cap)
{
    uint64_t len;
    memcpy(&len, chunk, LEN_PFX);
    if (len > cap)
        return -1;
    memcpy(buf, (const char *)chunk + LEN_PFX, copied((size_t)len));
    return (ssize_t)len;
}

static void copy_in(void *chunk, const void *buf, size_t len)
{
    uint64_t l = len;
    memcpy(chunk, &l, LEN_PFX);
    memcpy((char *)chunk + LEN_PFX, buf, copied(len));
}

/* Calls loan until it stops running out of chunks: RouDi's pools were
 * sized too small for this many receivers and this queue.  Each failure
 * also makes iceoryx print a line, whatever its log level. */
#define LOAN_RETRY(call, what)                                                                  \
    do {                                                                                        \
        uint64_t deadline_ = 0;                                                                 \
        for (;;) {                                                                              \
            enum iox_AllocationResult r_ = (call);                                              \
            if (r_ == AllocationResult_SUCCESS)                                                 \
                break;                                                                          \
            if (r_ != AllocationResult_RUNNING_OUT_OF_CHUNKS) {                                 \
                fprintf(stderr, "peer_iceoryx: %s: loan failed (%d)\n", what, (int)r_);         \
                return -1;                                                                      \
            }                                                                                   \
            if (deadline_ == 0) {                                                               \
                fprintf(stderr, "peer_iceoryx: %s: RouDi's pools ran out of chunks; "           \
                                "waiting (size its pools for receivers x queue)\n", what);      \
                deadline_ = peer_now_ns() + (uint64_t)LOAN_MS * 1000000u;                       \
            } else if (peer_now_ns() > deadline_) {                                             \
                return -1;                                                                      \
            }                                                                                   \
            usleep(100);                                                                        \
        }                                                                                       \
    } while (0)

/* ------------------------------------------------------------- fan-out */

typedef struct {
    iox_pub_storage_t storage;
    iox_pub_t pub;
} pub_t;

static void *pub_open(const char *addr, int nsubs)
{
    (void)nsubs; /* receivers that come late miss hellos, nothing else */
    runtime_init(addr);
    pub_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    iox_pub_options_t o;
    iox_pub_options_init(&o);
    o.historyCapacity = 0;
    o.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
    p->pub = iox_pub_init(&p->storage, SERVICE, instance, "data", &o);
    if (p->pub == NULL) {
        free(p);
        return NULL;
    }
    return p;
}

static int pub_send(void *h, const void *buf, size_t len)
{
    pub_t *p = h;
    void *chunk;
    LOAN_RETRY(iox_pub_loan_aligned_chunk(p->pub, &chunk, (uint32_t)(len + LEN_PFX), 8), "publish");
    copy_in(chunk, buf, len);
    /* Blocks while a subscriber's queue is full. */
    iox_pub_publish_chunk(p->pub, chunk);
    return 0;
}

typedef struct {
    iox_sub_storage_t storage;
    iox_ws_storage_t ws_storage;
    iox_sub_t sub;
    iox_ws_t ws;
} sub_t;

static void *sub_open(const char *addr, int idx)
{
    (void)idx;
    runtime_init(addr);
    sub_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    iox_sub_options_t o;
    iox_sub_options_init(&o);
    o.queueCapacity = (uint64_t)peer_env_int("PB_IOX_QUEUE", 256);
    o.historyRequest = 0;
    o.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
    s->sub = iox_sub_init(&s->storage, SERVICE, instance, "data", &o);
    s->ws = s->sub != NULL ? iox_ws_init(&s->ws_storage) : NULL;
    if (s->ws == NULL ||
        iox_ws_attach_subscriber_state(s->ws, s->sub, SubscriberState_HAS_DATA, 0, NULL) !=
            WaitSetResult_SUCCESS) {
        fprintf(stderr, "peer_iceoryx: could not subscribe\n");
        free(s);
        return NULL;
    }
    return s;
}

static ssize_t sub_recv(void *h, void *buf, size_t cap, int timeout_ms)
{
    sub_t *s = h;
    uint64_t deadline = timeout_ms < 0 ? 0 : peer_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        const void *chunk;
        if (iox_sub_take_chunk(s->sub, &chunk) == ChunkReceiveResult_SUCCESS) {
            ssize_t n = copy_out(chunk, buf, cap);
            iox_sub_release_chunk(s->sub, chunk);
            return n;
        }
        if (!ws_wait(s->ws, deadline))
            return 0;
    }
}

/* ---------------------------------------------------- request/response */

typedef struct {
    iox_server_storage_t storage;
    iox_ws_storage_t ws_storage;
    iox_server_t server;
    iox_ws_t ws;
} rep_t;

static void *rep_open(const char *addr)
{
    runtime_init(addr);
    rep_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    iox_server_options_t o;
    iox_server_options_init(&o);
    o.requestQueueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
    o.clientTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
    r->server = iox_server_init(&r->storage, SERVICE, instance, "echo", &o);
    r->ws = r->server != NULL ? iox_ws_init(&r->ws_storage) : NULL;
    if (r->ws == NULL ||
        iox_ws_attach_server_state(r->ws, r->server, ServerState_HAS_REQUEST, 0, NULL) !=
            WaitSetResult_SUCCESS) {
        fprintf(stderr, "peer_iceoryx: could not offer the echo service\n");
        free(r);
        return NULL;
    }
    return r;
}

static ssize_t rep_serve_one(void *h, void *buf, size_t cap)
{
    rep_t *r = h;
    const void *req;
    while (iox_server_take_request(r->server, &req) != ServerRequestResult_SUCCESS)
        ws_wait(r->ws, 0);
    ssize_t n = copy_out(req, buf, cap);
    if (n < 0) {
        iox_server_release_request(r->server, req);
        return -1;
    }
    void *resp;
    /* The response is tied to its request: loan it before releasing. */
    LOAN_RETRY(iox_server_loan_aligned_response(r->server, req, &resp, (uint32_t)(n + LEN_PFX), 8),
               "respond");
    copy_in(resp, buf, (size_t)n);
    enum iox_ServerSendResult sent = iox_server_send(r->server, resp);
    iox_server_release_request(r->server, req);
    return sent == ServerSendResult_SUCCESS ? n : -1;
}

typedef struct {
    iox_client_storage_t storage;
    iox_ws_storage_t ws_storage;
    iox_client_t client;
    iox_ws_t ws;
} req_t;

static void *req_open(const char *addr)
{
    runtime_init(addr);
    req_t *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    iox_client_options_t o;
    iox_client_options_init(&o);
    o.responseQueueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
    o.serverTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
    q->client = iox_client_init(&q->storage, SERVICE, instance, "echo", &o);
    q->ws = q->client != NULL ? iox_ws_init(&q->ws_storage) : NULL;
    if (q->ws == NULL ||
        iox_ws_attach_client_state(q->ws, q->client, ClientState_HAS_RESPONSE, 0, NULL) !=
            WaitSetResult_SUCCESS) {
        free(q);
        return NULL;
    }
    /* A request sent before the connection is made is refused. */
    uint64_t deadline = peer_now_ns() + (uint64_t)PEER_CONNECT_MS * 1000000u;
    while (iox_client_get_connection_state(q->client) != ConnectionState_CONNECTED) {
        if (peer_now_ns() > deadline) {
            fprintf(stderr, "peer_iceoryx: the client did not connect\n");
            return NULL;
        }
        usleep(1000);
    }
    return q;
}

static ssize_t req_roundtrip(void *h, const void *reqbuf, size_t len, void *reply, size_t cap)
{
    req_t *q = h;
    void *req;
    LOAN_RETRY(iox_client_loan_aligned_request(q->client, &req, (uint32_t)(len + LEN_PFX), 8),
               "request");
    copy_in(req, reqbuf, len);
    if (iox_client_send(q->client, req) != ClientSendResult_SUCCESS) {
        fprintf(stderr, "peer_iceoryx: request not sent\n");
        return -1;
    }
    const void *resp;
    while (iox_client_take_response(q->client, &resp) != ChunkReceiveResult_SUCCESS)
        ws_wait(q->ws, 0);
    ssize_t n = copy_out(resp, reply, cap);
    iox_client_release_response(q->client, resp);
    return n;
}

const peer_ops_t peer_ops = {
    .name = "iceoryx",
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
