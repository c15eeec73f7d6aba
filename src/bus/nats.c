/*
 * The NATS transport: connections to the endpoints of other hosts,
 * carried by a NATS cluster (lahja_join_nats; docs/nats.md).
 *
 * A connection is the same as over a Unix socket (conn.c): the same
 * handshake, subscription sets, receipts and high-water mark.  What this
 * file adds is a byte stream over NATS subjects, which lose messages
 * when a server dies or cuts off a client: every byte is numbered, the
 * receiver acknowledges what it has read in order and asks again from
 * where a gap begins, and the sender keeps what is not acknowledged
 * (at most `window` bytes; beyond it, writing waits, and so the
 * connection's queue fills and broadcasters wait as for a slow socket).
 *
 * Subjects, under the prefix P:
 *   P.presence  every endpoint's BEACON each heartbeat, and its BYE
 *   P.to.<uid>  what is for the endpoint instance uid (16 hex digits,
 *               drawn at lahja_join_nats)
 *
 * A connection message on P.to.<uid> (little-endian):
 *   [0] 'L'  [1] version 1  [2] kind  [3] flags (ACKREQ)
 *   [4..8)   dst: the receiver's connection id (0: not known yet)
 *   [8..12)  src: the sender's connection id
 *   [12..16) 0
 *   [16..24) the sender's uid
 *   [24..32) DATA: the stream offset of its first byte; FIN: the
 *            stream's length; ACK, NAK: the bytes the receiver has in order
 *   then DATA's bytes, or SYN's: the sender's pid (4 bytes).
 * SYN opens a connection (the endpoint whose name sorts first dials);
 * RST says there is no such connection (or it is refused); FIN closes.
 *
 * A presence message: [0] 'L' [1] 1 [2] BEACON or BYE [3] 0 [4..8) pid
 * [8..16) 0 [16..24) uid, then the name and the host, each NUL-ended.
 *
 * NATS runs on the endpoint's loop (nats.c's libuv adapter): its socket
 * is read there, into synchronous subscriptions that a check handle
 * empties after each poll, so no message is handled on another thread.
 * The few callbacks NATS makes from its own threads (disconnected,
 * reconnected, errors) only count, and wake the loop to log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nats/adapters/libuv.h>
#pragma GCC diagnostic pop

#include "endpoint.h"

#define HDR 32
#define VERSION 1
#define DRAIN_MAX 256            /* messages handled per loop turn */
#define CHUNK_MAX (256 * 1024)   /* DATA bytes per message, at most */
#define PREFIX_MAX 64
#define HOST_MAX 128
#define SUBJECT_MAX (PREFIX_MAX + 32)
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
#define FLUSH_MS 500             /* stopping: for NATS to write what it buffers */

enum kind { K_SYN = 1, K_DATA, K_ACK, K_NAK, K_FIN, K_RST, K_BEACON = 16, K_BYE };
#define F_ACKREQ 1

/* Bytes of a connection's stream, sent and kept until acknowledged. */
struct nblock {
    lahja_link_t link;
    uint64_t off;
    size_t len;
    uint8_t msg[];               /* HDR bytes of header, then the data */
};

/* A remote endpoint, as its BEACONs say. */
struct npeer {
    lahja_link_t link;
    uint64_t uid;
    pid_t pid;
    uint64_t seen_ms;            /* loop time of its last BEACON */
    uint64_t retry_at;           /* dialing it: not before */
    uint32_t retry_ms;
    uint8_t same_host, same_name;
    uint8_t left;                /* its BYE came: gone once what it sent
                                    before is read */
    char host[HOST_MAX + 1];
    char name[LAHJA_NAME_MAX + 1];
};

/* A connection's NATS side (c->io.p). */
struct nlink {
    lahja_link_t link;           /* in nn->links, then nn->dead */
    struct natsnet *nn;
    struct conn *c;              /* NULL once the connection ended */
    uint32_t id, peer_id;
    uint64_t peer_uid;
    char subject[SUBJECT_MAX];   /* the peer's P.to.<uid> */
    /* sending */
    uint64_t tx_off;             /* bytes taken from the connection */
    uint64_t sent;               /* of them, published (less after a NAK) */
    uint64_t acked;              /* of them, acknowledged */
    lahja_link_t blocks;         /* struct nblock from `acked` on */
    uv_buf_t *held;              /* a write waiting for the window */
    unsigned nheld;
    uint8_t ackreq;              /* asked for an ACK since the last */
    /* receiving */
    uint64_t rx_off;             /* bytes read in order */
    uint64_t rx_acked;           /* rx_off in our last ACK */
    uint64_t nak_off;            /* rx_off in our last NAK (+1; 0: none) */
    uint8_t gone;                /* the peer went: poll says HUP */
};

/* What NATS's callback thread counts for the loop to log.  It is its
 * own allocation because that thread may call after the endpoint let go
 * of the connection: nats.c's closed callback, its last, frees it (or
 * fail(), when no connection was ever made to call it). */
struct nats_news {
    atomic_uint disconnects, reconnects, errors;
    atomic_int last_error;
};

struct natsnet {
    lahja_endpoint_t *ep;
    natsConnection *nc;
    natsSubscription *sub_to, *sub_presence;
    uv_timer_t beat;
    uv_check_t drain;
    uv_prepare_t flush;          /* writes what this turn published */
    uv_async_t wake;
    int open;                    /* our handles not yet closed */
    uint8_t stopping;
    uint64_t uid;
    uint32_t next_id;
    uint32_t heartbeat_ms, dead_after_ms;
    size_t window;
    size_t chunk;                /* DATA bytes per message */
    char prefix[PREFIX_MAX + 1];
    char host[HOST_MAX + 1];
    char subj_self[SUBJECT_MAX];
    char subj_presence[SUBJECT_MAX];
    lahja_link_t peers;          /* struct npeer */
    lahja_link_t links;          /* struct nlink of live connections */
    lahja_link_t dead;           /* of ended ones, freed after the turn */
    uint8_t *scratch;            /* a control message */
    struct nats_news *news;      /* from NATS's threads */
    uint8_t news_given;          /* a connection was made: its closed
                                    callback frees news */
    unsigned disconnects_seen, reconnects_seen, errors_seen;
    uint8_t was_down;
    uint64_t beat_ms;            /* loop time of the last heartbeat */
    uint8_t offline;             /* lahja_nats_join_offline: no NATS at all */
    lahja_nats_sink_fn sink;     /* offline: sees what would be published */
    void *sink_user;
    uint8_t unflushed;           /* published since the last flush */
    uint64_t flush_until;        /* stopping: loop time it gives up flushing */
    uint64_t bad;                /* malformed messages ignored, */
    uint64_t bad_said;           /* as the last line about them said */
};

/* ---------------------------------------------------------- encoding */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void header(uint8_t *h, uint8_t kind, uint8_t flags, uint32_t dst, uint32_t src,
                   uint64_t uid, uint64_t off)
{
    h[0] = 'L';
    h[1] = VERSION;
    h[2] = kind;
    h[3] = flags;
    put32(h + 4, dst);
    put32(h + 8, src);
    put32(h + 12, 0);
    put64(h + 16, uid);
    put64(h + 24, off);
}

static uint64_t now_ms(const struct natsnet *nn)
{
    return uv_now(nn->ep->rt->loop);
}

/* ----------------------------------------------------------- sending */

static int publish(struct natsnet *nn, const char *subject, const uint8_t *msg, size_t len)
{
    if (nn->offline) {
        if (nn->sink != NULL)
            nn->sink(nn->sink_user, subject, msg, len);
        return 0;
    }
    if (nn->nc == NULL)
        return -1; /* closed */
    natsStatus s = natsConnection_Publish(nn->nc, subject, msg, (int)len);
    nn->unflushed = 1;
    return s == NATS_OK ? 0 : -1;
}

/* A message without data: SYN, ACK, NAK, FIN or RST. */
static void control(struct natsnet *nn, const char *subject, uint8_t kind, uint8_t flags,
                    uint32_t dst, uint32_t src, uint64_t off, const void *extra, size_t elen)
{
    uint8_t msg[HDR + 8];
    header(msg, kind, flags, dst, src, nn->uid, off);
    if (elen > 0)
        memcpy(msg + HDR, extra, elen);
    publish(nn, subject, msg, HDR + elen);
}

static void send_ack(struct nlink *l)
{
    l->rx_acked = l->rx_off;
    control(l->nn, l->subject, K_ACK, 0, l->peer_id, l->id, l->rx_off, NULL, 0);
}

/* Publishes the kept blocks from `sent` on (after a NAK: again). */
static void resend(struct nlink *l)
{
    lahja_link_t *x;
    lahja_list_foreach(x, &l->blocks) {
        struct nblock *b = lahja_container_of(x, struct nblock, link);
        if (b->off + b->len <= l->sent)
            continue;
        put32(b->msg + 4, l->peer_id);
        b->msg[3] = 0;
        if (publish(l->nn, l->subject, b->msg, HDR + b->len) != 0)
            return; /* NATS is closed: the peer will time out */
        l->sent = b->off + b->len;
    }
}

static size_t bufs_len(const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    return total;
}

/* Whether `total` more bytes fit the window now. */
static int fits(const struct nlink *l, size_t total)
{
    uint64_t out = l->tx_off - l->acked;
    return out == 0 || out + total <= l->nn->window;
}

/* Asks the peer for an ACK now: the window is full. */
static void ask_ack(struct nlink *l)
{
    if (l->ackreq)
        return;
    l->ackreq = 1;
    control(l->nn, l->subject, K_DATA, F_ACKREQ, l->peer_id, l->id, l->tx_off, NULL, 0);
}

/* Takes bufs into kept blocks and publishes them.  0 or UV_ENOMEM
 * (nothing taken). */
static int take(struct nlink *l, const uv_buf_t *bufs, size_t total)
{
    struct natsnet *nn = l->nn;
    lahja_link_t fresh;
    lahja_list_init(&fresh);
    unsigned bi = 0;
    size_t boff = 0;
    uint64_t off = l->tx_off;
    size_t left = total;
    while (left > 0) {
        size_t len = left < nn->chunk ? left : nn->chunk;
        struct nblock *b = malloc(sizeof *b + HDR + len);
        if (b == NULL) {
            lahja_link_t *x;
            while ((x = lahja_list_pop_front(&fresh)) != NULL)
                free(lahja_container_of(x, struct nblock, link));
            return UV_ENOMEM;
        }
        b->off = off;
        b->len = len;
        header(b->msg, K_DATA, 0, l->peer_id, l->id, nn->uid, off);
        size_t at = 0;
        while (at < len) {
            size_t k = bufs[bi].len - boff;
            if (k > len - at)
                k = len - at;
            memcpy(b->msg + HDR + at, bufs[bi].base + boff, k);
            at += k;
            boff += k;
            if (boff == bufs[bi].len) {
                bi++;
                boff = 0;
            }
        }
        lahja_list_push_back(&fresh, &b->link);
        off += len;
        left -= len;
    }
    int publishing = l->sent == l->tx_off; /* else a NAK's resend is due */
    lahja_link_t *x;
    while ((x = lahja_list_pop_front(&fresh)) != NULL) {
        struct nblock *b = lahja_container_of(x, struct nblock, link);
        lahja_list_push_back(&l->blocks, &b->link);
        l->tx_off = b->off + b->len;
        if (!l->ackreq && l->tx_off - l->acked >= nn->window / 2) {
            b->msg[3] = F_ACKREQ;
            l->ackreq = 1;
        }
        if (publishing && publish(nn, l->subject, b->msg, HDR + b->len) == 0)
            l->sent = l->tx_off;
        else
            publishing = 0;
    }
    return 0;
}

static int nats_try_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    struct nlink *l = c->io.p;
    if (l->held != NULL)
        return UV_EAGAIN;
    size_t total = bufs_len(bufs, n);
    if (!fits(l, total)) {
        ask_ack(l);
        return UV_EAGAIN;
    }
    int rc = take(l, bufs, total);
    return rc != 0 ? rc : (int)total;
}

static int nats_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    struct nlink *l = c->io.p;
    l->held = malloc(n * sizeof *bufs);
    if (l->held == NULL)
        return UV_ENOMEM;
    memcpy(l->held, bufs, n * sizeof *bufs);
    l->nheld = n;
    ask_ack(l);
    return 0;
}

/* The window moved: a held write goes if it fits now. */
static void pump(struct nlink *l)
{
    if (l->held == NULL || l->c == NULL)
        return;
    size_t total = bufs_len(l->held, l->nheld);
    if (!fits(l, total)) {
        ask_ack(l);
        return;
    }
    int rc = take(l, l->held, total);
    free(l->held);
    l->held = NULL;
    lahja_conn_written(l->c, rc);
}

static void acked(struct nlink *l, uint64_t off)
{
    if (off <= l->acked || off > l->tx_off)
        return;
    l->acked = off;
    l->ackreq = 0;
    lahja_link_t *x;
    while ((x = l->blocks.next) != &l->blocks) {
        struct nblock *b = lahja_container_of(x, struct nblock, link);
        if (b->off + b->len > off)
            break;
        lahja_list_remove(x);
        free(b);
    }
    if (l->sent < off)
        l->sent = off;
    pump(l);
}

/* ----------------------------------------------------------- the ops */

static int nats_read_start(struct conn *c)
{
    (void)c;
    return 0; /* what comes is handed over as the subscription is drained */
}

static void nats_read_now(struct conn *c)
{
    (void)c; /* handed over as it comes: nothing waits */
}

static int nats_poll(struct conn *c)
{
    struct nlink *l = c->io.p;
    return l->gone ? CONN_POLL_HUP : 0;
}

static struct npeer *peer_by_uid(struct natsnet *nn, uint64_t uid)
{
    lahja_link_t *x;
    lahja_list_foreach(x, &nn->peers) {
        struct npeer *p = lahja_container_of(x, struct npeer, link);
        if (p->uid == uid)
            return p;
    }
    return NULL;
}

static int nats_allowed(struct conn *c, char *why, size_t len)
{
    (void)why;
    (void)len;
    struct nlink *l = c->io.p;
    struct npeer *p = peer_by_uid(l->nn, l->peer_uid);
    if (p != NULL && p->pid != 0)
        c->peer_pid = p->pid;
    return 1; /* who may publish to us is the cluster's authorization */
}

static void link_free(struct nlink *l)
{
    lahja_link_t *x;
    while ((x = lahja_list_pop_front(&l->blocks)) != NULL)
        free(lahja_container_of(x, struct nblock, link));
    free(l->held);
    free(l);
}

static void nats_close(struct conn *c)
{
    struct nlink *l = c->io.p;
    struct natsnet *nn = l->nn;
    if (!l->gone && nn->nc != NULL)
        control(nn, l->subject, K_FIN, 0, l->peer_id, l->id, l->tx_off, NULL, 0);
    if (l->held != NULL) {
        free(l->held);
        l->held = NULL;
        lahja_conn_written(c, UV_ECANCELED);
    }
    l->c = NULL;
    c->io.p = NULL;
    lahja_list_remove(&l->link);
    lahja_list_push_back(&nn->dead, &l->link);
    uv_async_send(&nn->wake); /* freed at the next turn's drain */
    lahja_conn_closed(c);
}

static const struct conn_transport nats_transport = {
    .name = "nats",
    .try_write = nats_try_write,
    .write = nats_write,
    .read_start = nats_read_start,
    .read_now = nats_read_now,
    .poll = nats_poll,
    .allowed = nats_allowed,
    .close = nats_close,
};

/* ------------------------------------------------------- connections */

static struct nlink *link_new(struct natsnet *nn, uint64_t peer_uid, uint32_t peer_id)
{
    struct nlink *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    struct conn *c = lahja_conn_new(nn->ep, &nats_transport);
    if (c == NULL) {
        free(l);
        return NULL;
    }
    l->nn = nn;
    l->c = c;
    l->id = ++nn->next_id ? nn->next_id : ++nn->next_id;
    l->peer_uid = peer_uid;
    l->peer_id = peer_id;
    snprintf(l->subject, sizeof l->subject, "%s.to.%016llx", nn->prefix,
             (unsigned long long)peer_uid);
    lahja_list_init(&l->blocks);
    lahja_list_push_back(&nn->links, &l->link);
    c->io.p = l;
    return l;
}

static void dial(struct natsnet *nn, struct npeer *p)
{
    struct nlink *l = link_new(nn, p->uid, 0);
    if (l == NULL)
        return;
    struct conn *c = l->c;
    c->outbound = 1;
    c->background = CONN_NOWAIT;
    c->state = CONN_CONNECTING;
    lahja_route_changed(c->ep);
    snprintf(c->target, sizeof c->target, "%s", p->name);
    uint8_t pid[4];
    put32(pid, (uint32_t)getpid());
    control(nn, l->subject, K_SYN, 0, 0, l->id, 0, pid, sizeof pid);
    lahja_bus_log(nn->ep, LAHJA_LOG_DEBUG, "nats: connecting to %s on %s", p->name, p->host);
    lahja_conn_start(c);
}

static void accept_syn(struct natsnet *nn, uint64_t uid, uint32_t src, const uint8_t *extra,
                       size_t elen)
{
    char subject[SUBJECT_MAX];
    snprintf(subject, sizeof subject, "%s.to.%016llx", nn->prefix, (unsigned long long)uid);
    char buf[128];
    const char *why = nn->stopping ? "stopping" : lahja_conn_over_limits(nn->ep, buf, sizeof buf);
    if (why != NULL) {
        lahja_bus_log(nn->ep, LAHJA_LOG_WARNING, "nats: %s", why);
        control(nn, subject, K_RST, 0, src, 0, 0, NULL, 0);
        return;
    }
    /* A new connection from that endpoint: one it opened before is dead
     * to it (it dials only when it has none). */
    lahja_link_t *x, *tmp;
    lahja_list_foreach_safe(x, tmp, &nn->links) {
        struct nlink *o = lahja_container_of(x, struct nlink, link);
        if (o->peer_uid == uid && o->c != NULL) {
            o->gone = 1;
            lahja_conn_close(o->c, LAHJA_EREMOTEDISCONNECTED, "the peer opened a new connection");
        }
    }
    struct nlink *l = link_new(nn, uid, src);
    if (l == NULL) {
        control(nn, subject, K_RST, 0, src, 0, 0, NULL, 0);
        return;
    }
    if (elen >= 4)
        l->c->peer_pid = (pid_t)get32(extra);
    lahja_conn_start(l->c);
}

static struct nlink *link_find(struct natsnet *nn, uint32_t dst, uint32_t src, uint64_t uid)
{
    lahja_link_t *x;
    lahja_list_foreach(x, &nn->links) {
        struct nlink *l = lahja_container_of(x, struct nlink, link);
        if (l->peer_uid != uid)
            continue;
        if (dst != 0 ? l->id == dst && (l->peer_id == 0 || l->peer_id == src)
                     : l->peer_id == src)
            return l;
    }
    return NULL;
}

/* DATA from the peer: what continues the stream is read; a gap asks for
 * the rest again. */
static void on_data(struct nlink *l, uint8_t flags, uint64_t off, const uint8_t *data, size_t len)
{
    if (off > l->rx_off) {
        if (l->nak_off != l->rx_off + 1) {
            l->nak_off = l->rx_off + 1;
            control(l->nn, l->subject, K_NAK, 0, l->peer_id, l->id, l->rx_off, NULL, 0);
        }
        return;
    }
    if (off + len > l->rx_off) {
        size_t skip = (size_t)(l->rx_off - off);
        data += skip;
        len -= skip;
        while (len > 0 && l->c != NULL) {
            uv_buf_t room;
            lahja_conn_room(l->c, &room);
            if (room.len == 0) {
                lahja_conn_read(l->c, UV_ENOBUFS);
                return;
            }
            size_t k = room.len < len ? room.len : len;
            memcpy(room.base, data, k);
            data += k;
            len -= k;
            l->rx_off += k;
            l->nak_off = 0;
            lahja_conn_read(l->c, (ssize_t)k);
        }
    }
    if (l->c == NULL)
        return;
    if ((flags & F_ACKREQ) || l->rx_off - l->rx_acked >= l->nn->window / 4)
        send_ack(l);
}

static void on_conn_msg(struct natsnet *nn, const uint8_t *m, size_t len)
{
    uint8_t kind = m[2], flags = m[3];
    uint32_t dst = get32(m + 4), src = get32(m + 8);
    uint64_t uid = get64(m + 16), off = get64(m + 24);
    if (uid == nn->uid || src == 0) {
        nn->bad++;
        return;
    }
    struct nlink *l = link_find(nn, dst, src, uid);
    if (l == NULL) {
        if (kind == K_SYN && dst == 0 && !nn->stopping)
            accept_syn(nn, uid, src, m + HDR, len - HDR);
        else if (kind == K_DATA || kind == K_SYN) {
            char subject[SUBJECT_MAX];
            snprintf(subject, sizeof subject, "%s.to.%016llx", nn->prefix,
                     (unsigned long long)uid);
            control(nn, subject, K_RST, 0, src, dst, 0, NULL, 0);
        }
        return;
    }
    if (l->peer_id == 0)
        l->peer_id = src;
    switch (kind) {
    case K_DATA:
        on_data(l, flags, off, m + HDR, len - HDR);
        break;
    case K_ACK:
        acked(l, off);
        break;
    case K_NAK:
        if (off >= l->acked && off <= l->tx_off) {
            acked(l, off);
            if (l->c != NULL && off < l->sent) {
                lahja_bus_log(nn->ep, LAHJA_LOG_INFO,
                              "nats: %s lost %llu bytes in transit (a server went, or cut it "
                              "off): sending them again",
                              l->c->peer != NULL ? l->c->peer->s : l->c->target,
                              (unsigned long long)(l->sent - off));
                l->sent = off;
                resend(l);
            }
        }
        break;
    case K_FIN:
        l->gone = 1;
        if (off > l->rx_off) {
            char why[96];
            snprintf(why, sizeof why, "closed by peer with %llu bytes not received",
                     (unsigned long long)(off - l->rx_off));
            lahja_conn_close(l->c, LAHJA_EREMOTEDISCONNECTED, why);
        } else {
            lahja_conn_read(l->c, UV_EOF);
        }
        break;
    case K_RST:
        l->gone = 1;
        lahja_conn_close(l->c, LAHJA_EREMOTEDISCONNECTED, "the peer has no such connection");
        break;
    default:
        nn->bad++;
    }
}

/* --------------------------------------------------------- presence */

static void beacon(struct natsnet *nn, uint8_t kind)
{
    size_t nlen = strlen(nn->ep->name->s) + 1, hlen = strlen(nn->host) + 1;
    uint8_t *m = nn->scratch;
    memset(m, 0, HDR);
    m[0] = 'L';
    m[1] = VERSION;
    m[2] = kind;
    put32(m + 4, (uint32_t)getpid());
    put64(m + 16, nn->uid);
    memcpy(m + HDR, nn->ep->name->s, nlen);
    memcpy(m + HDR + nlen, nn->host, hlen);
    publish(nn, nn->subj_presence, m, HDR + nlen + hlen);
}

/* The peer left or died: its connections end. */
static void peer_gone(struct natsnet *nn, struct npeer *p, const char *why)
{
    lahja_link_t *x, *tmp;
    lahja_list_foreach_safe(x, tmp, &nn->links) {
        struct nlink *l = lahja_container_of(x, struct nlink, link);
        if (l->peer_uid == p->uid && l->c != NULL) {
            l->gone = 1;
            lahja_conn_close(l->c, LAHJA_EREMOTEDISCONNECTED, why);
        }
    }
    lahja_list_remove(&p->link);
    free(p);
}

static struct nlink *link_to(struct natsnet *nn, uint64_t uid)
{
    lahja_link_t *x;
    lahja_list_foreach(x, &nn->links) {
        struct nlink *l = lahja_container_of(x, struct nlink, link);
        if (l->peer_uid == uid && l->c != NULL)
            return l;
    }
    return NULL;
}

/* Opens the connection to p if it is ours to open and none is there. */
static void maybe_dial(struct natsnet *nn, struct npeer *p)
{
    if (nn->stopping || p->same_host || p->same_name)
        return;
    if (strcmp(nn->ep->name->s, p->name) > 0)
        return; /* p dials */
    if (link_to(nn, p->uid) != NULL || lahja_conn_find(nn->ep, p->name) != NULL)
        return;
    uint64_t now = now_ms(nn);
    if (now < p->retry_at)
        return;
    p->retry_ms = p->retry_ms ? p->retry_ms * 2 : RETRY_MIN_MS;
    if (p->retry_ms > RETRY_MAX_MS)
        p->retry_ms = RETRY_MAX_MS;
    p->retry_at = now + p->retry_ms;
    dial(nn, p);
}

static void on_presence(struct natsnet *nn, const uint8_t *m, size_t len)
{
    uint64_t uid = get64(m + 16);
    if (uid == nn->uid)
        return;
    struct npeer *p = peer_by_uid(nn, uid);
    if (m[2] == K_BYE) {
        if (p != NULL)
            p->left = 1;
        return;
    }
    if (m[2] != K_BEACON)
        return;
    const char *name = (const char *)m + HDR;
    size_t nlen = strnlen(name, len - HDR);
    if (nlen == 0 || nlen > LAHJA_NAME_MAX || HDR + nlen + 1 >= len)
        goto bad;
    const char *host = name + nlen + 1;
    size_t hlen = strnlen(host, len - HDR - nlen - 1);
    if (hlen > HOST_MAX || HDR + nlen + 1 + hlen + 1 > len)
        goto bad;
    if (p == NULL) {
        /* Another instance under that name: the one we knew is gone. */
        lahja_link_t *x, *tmp;
        lahja_list_foreach_safe(x, tmp, &nn->peers) {
            struct npeer *o = lahja_container_of(x, struct npeer, link);
            if (strcmp(o->name, name) == 0 && strcmp(o->host, host) == 0)
                peer_gone(nn, o, "another process took its name");
        }
        p = calloc(1, sizeof *p);
        if (p == NULL)
            return;
        p->uid = uid;
        p->pid = (pid_t)get32(m + 4);
        memcpy(p->name, name, nlen + 1);
        memcpy(p->host, host, hlen + 1);
        p->same_host = strcmp(host, nn->host) == 0;
        p->same_name = strcmp(name, nn->ep->name->s) == 0;
        lahja_list_push_back(&nn->peers, &p->link);
        if (p->same_name)
            lahja_bus_log(nn->ep, LAHJA_LOG_WARNING,
                          "nats: an endpoint on %s has our name, %s: it is ignored", host, name);
        else
            lahja_bus_log(nn->ep, LAHJA_LOG_DEBUG, "nats: found %s on %s%s", name, host,
                          p->same_host ? " (this host: not through NATS)" : "");
        beacon(nn, K_BEACON); /* so that it finds us at once too */
    }
    p->seen_ms = now_ms(nn);
    maybe_dial(nn, p);
    return;
bad:
    nn->bad++;
}

/* ----------------------------------------------------------- the loop */

static void free_dead(struct natsnet *nn)
{
    lahja_link_t *x;
    while ((x = lahja_list_pop_front(&nn->dead)) != NULL)
        link_free(lahja_container_of(x, struct nlink, link));
}

static int drain_sub(struct natsnet *nn, natsSubscription *sub, int presence, int budget)
{
    while (budget > 0) {
        natsMsg *msg = NULL;
        if (natsSubscription_NextMsg(&msg, sub, 0) != NATS_OK || msg == NULL)
            break;
        budget--;
        const uint8_t *m = (const uint8_t *)natsMsg_GetData(msg);
        int len = natsMsg_GetDataLength(msg);
        if (len < HDR || m[0] != 'L' || m[1] != VERSION)
            nn->bad++;
        else if (presence)
            on_presence(nn, m, (size_t)len);
        else
            on_conn_msg(nn, m, (size_t)len);
        natsMsg_Destroy(msg);
    }
    return budget;
}

/* The peers whose BYE came are gone. */
static void settle_left(struct natsnet *nn)
{
    lahja_link_t *x, *tmp;
    lahja_list_foreach_safe(x, tmp, &nn->peers) {
        struct npeer *p = lahja_container_of(x, struct npeer, link);
        if (p->left)
            peer_gone(nn, p, "the peer left");
    }
}

static void on_drain(uv_check_t *h)
{
    struct natsnet *nn = h->data;
    int budget = 1;
    if (nn->sub_to != NULL) {
        /* Presence is small: all of it, each turn, so that a busy
         * connection never makes a peer look silent.  A BYE takes effect
         * once what came before it is read: when the connections'
         * messages are. */
        budget = drain_sub(nn, nn->sub_to, 0, DRAIN_MAX);
        drain_sub(nn, nn->sub_presence, 1, INT32_MAX);
    }
    if (budget > 0)
        settle_left(nn);
    free_dead(nn);
    if (budget == 0)
        uv_async_send(&nn->wake); /* more: the loop must not sleep */
}

/*
 * NATS buffers what is published and leaves the writing to a thread of
 * its own, which wakes the loop about a millisecond later: a millisecond
 * on every hop of a request.  What a loop turn published is written by
 * the loop itself instead, before it polls: a batch, as a connection
 * writes once per turn at most anyway.
 */
static void on_flush(uv_prepare_t *h)
{
    struct natsnet *nn = h->data;
    if (!nn->unflushed || nn->nc == NULL)
        return;
    nn->unflushed = 0;
    natsConnection_ProcessWriteEvent(nn->nc);
}

static void on_wake(uv_async_t *h)
{
    (void)h; /* the check handle runs after this turn's poll */
}

/* What NATS's threads counted, and the malformed messages, said on the loop. */
static void report(struct natsnet *nn)
{
    unsigned d = atomic_load(&nn->news->disconnects), r = atomic_load(&nn->news->reconnects);
    unsigned e = atomic_load(&nn->news->errors);
    if (nn->bad != nn->bad_said) {
        lahja_bus_log(nn->ep, LAHJA_LOG_WARNING,
                      "nats: %llu malformed or stray messages on our subjects ignored (%llu in all)",
                      (unsigned long long)(nn->bad - nn->bad_said), (unsigned long long)nn->bad);
        nn->bad_said = nn->bad;
    }
    if (d != nn->disconnects_seen) {
        nn->disconnects_seen = d;
        lahja_bus_log(nn->ep, LAHJA_LOG_WARNING, "nats: disconnected from the server; reconnecting");
    }
    if (r != nn->reconnects_seen) {
        nn->reconnects_seen = r;
        char url[256] = "?";
        natsConnection_GetConnectedUrl(nn->nc, url, sizeof url);
        lahja_bus_log(nn->ep, LAHJA_LOG_WARNING, "nats: reconnected, to %s", url);
    }
    if (e != nn->errors_seen) {
        nn->errors_seen = e;
        lahja_bus_log(nn->ep, LAHJA_LOG_WARNING, "nats: %s",
                      natsStatus_GetText((natsStatus)atomic_load(&nn->news->last_error)));
    }
}

static void on_beat(uv_timer_t *t)
{
    struct natsnet *nn = t->data;
    report(nn);
    uint64_t now = now_ms(nn);
    int up = nn->offline || (nn->nc != NULL && natsConnection_Status(nn->nc) == NATS_CONN_STATUS_CONNECTED);
    lahja_link_t *x, *tmp;
    /* A loop held up longer than two heartbeats (a long handler, a
     * stopped process) has not read what came meanwhile: the silence it
     * sees is its own, not the peers'. */
    int stalled = nn->beat_ms != 0 && now - nn->beat_ms > 2 * (uint64_t)nn->heartbeat_ms;
    nn->beat_ms = now;
    if (!up || stalled) {
        /* We hear nobody meanwhile: that says nothing of them. */
        nn->was_down = !up;
        lahja_list_foreach(x, &nn->peers)
            lahja_container_of(x, struct npeer, link)->seen_ms = now;
        if (!up)
            return;
    }
    beacon(nn, K_BEACON);
    if (nn->was_down) {
        nn->was_down = 0;
        lahja_list_foreach(x, &nn->peers)
            lahja_container_of(x, struct npeer, link)->seen_ms = now;
    }
    lahja_list_foreach_safe(x, tmp, &nn->peers) {
        struct npeer *p = lahja_container_of(x, struct npeer, link);
        if (now - p->seen_ms > nn->dead_after_ms) {
            char why[96];
            snprintf(why, sizeof why, "not heard of for %llu ms",
                     (unsigned long long)(now - p->seen_ms));
            peer_gone(nn, p, why);
        } else {
            maybe_dial(nn, p);
        }
    }
    /* What a lost message left waiting: an ACK not sent since, a NAK
     * that went unanswered, a held write. */
    lahja_list_foreach_safe(x, tmp, &nn->links) {
        struct nlink *l = lahja_container_of(x, struct nlink, link);
        if (l->c == NULL)
            continue;
        if (l->rx_off != l->rx_acked)
            send_ack(l);
        if (l->nak_off != 0)
            control(nn, l->subject, K_NAK, 0, l->peer_id, l->id, l->rx_off, NULL, 0);
        if (l->held != NULL || l->tx_off != l->acked) {
            l->ackreq = 0;
            ask_ack(l);
        }
    }
    free_dead(nn);
}

/* ------------------------------------------------- NATS's own threads */

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct nats_news *news = closure;
    atomic_fetch_add(&news->disconnects, 1);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct nats_news *news = closure;
    atomic_fetch_add(&news->reconnects, 1);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    struct nats_news *news = closure;
    atomic_store(&news->last_error, (int)err);
    atomic_fetch_add(&news->errors, 1);
}

/* The connection's last callback: nothing of ours is touched after it. */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    free(closure);
}

/* ---------------------------------------------------------- joining */

/* Set once lahja_join_nats has used nats.c (which opens it): what
 * lahja_nats_close tears down. */
static atomic_int nats_opened;

int lahja_nats_close(uint32_t timeout_ms)
{
    if (!atomic_exchange(&nats_opened, 0))
        return 0;
    natsStatus s = nats_CloseAndWait((int64_t)timeout_ms);
    if (s == NATS_OK)
        return 0;
    if (s == NATS_TIMEOUT)
        return -ETIMEDOUT;
    atomic_store(&nats_opened, 1);
    return -EINVAL; /* called from one of its threads */
}

static int prefix_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > PREFIX_MAX || p[0] == '.' || p[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
                 || ch == '-' || ch == '_' || (ch == '.' && p[i + 1] != '.');
        if (!ok)
            return 0;
    }
    return 1;
}

/* The host's identity: the option, LAHJA_HOST_ID, or host name and boot id. */
static void host_id(char *out, size_t len, const char *opt)
{
    const char *env = getenv("LAHJA_HOST_ID");
    if (opt != NULL && opt[0] != '\0') {
        snprintf(out, len, "%s", opt);
        return;
    }
    if (env != NULL && env[0] != '\0') {
        snprintf(out, len, "%s", env);
        return;
    }
    char name[64] = "";
    gethostname(name, sizeof name - 1);
    char boot[40] = "";
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, boot, sizeof boot - 1);
        close(fd);
        boot[n > 0 ? n : 0] = '\0';
        boot[strcspn(boot, "\n")] = '\0';
    }
    snprintf(out, len, "%s/%s", name, boot);
}

static uint64_t draw_uid(void)
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &v, sizeof v) != sizeof v)
            v = 0;
        close(fd);
    }
    if (v == 0)
        v = uv_hrtime() ^ ((uint64_t)getpid() << 32);
    return v;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct natsnet *nn = h->data;
    lahja_endpoint_t *ep = nn->ep;
    ep->nopen--;
    if (--nn->open > 0) {
        lahja_ep_maybe_closed(ep);
        return;
    }
    free_dead(nn);
    lahja_link_t *x;
    while ((x = lahja_list_pop_front(&nn->peers)) != NULL)
        free(lahja_container_of(x, struct npeer, link));
    if (!nn->news_given)
        free(nn->news);
    free(nn->scratch);
    free(nn);
    ep->nats = NULL;
    lahja_ep_maybe_closed(ep);
}

/* Ends the NATS connection (on the endpoint's thread). */
static void nats_teardown(struct natsnet *nn)
{
    if (nn->sub_to != NULL)
        natsSubscription_Destroy(nn->sub_to);
    if (nn->sub_presence != NULL)
        natsSubscription_Destroy(nn->sub_presence);
    nn->sub_to = nn->sub_presence = NULL;
    if (nn->nc != NULL)
        natsConnection_Destroy(nn->nc);
    nn->nc = NULL;
}

static int fail(lahja_endpoint_t *ep, natsOptions *o, struct natsnet *nn, natsStatus s,
                const char *what)
{
    lahja_ep_error(ep, "nats: %s: %s", what, nats_GetLastError(&s));
    if (o != NULL)
        natsOptions_Destroy(o);
    if (nn != NULL) {
        nats_teardown(nn);
        if (!nn->news_given)
            free(nn->news);
        free(nn->scratch);
        free(nn);
    }
    return s == NATS_NO_MEMORY ? -ENOMEM : -ECONNREFUSED;
}

static void nats_attach(lahja_endpoint_t *ep, struct natsnet *nn);

/* A natsnet for ep, instance uid of `host` under `prefix`, not attached. */
static struct natsnet *natsnet_new(lahja_endpoint_t *ep, const char *prefix, const char *host,
                                   uint64_t uid)
{
    struct natsnet *nn = calloc(1, sizeof *nn);
    if (nn == NULL)
        return NULL;
    nn->scratch = malloc(HDR + 2 * (LAHJA_NAME_MAX + 1) + HOST_MAX + 2);
    nn->news = calloc(1, sizeof *nn->news);
    if (nn->scratch == NULL || nn->news == NULL) {
        free(nn->scratch);
        free(nn->news);
        free(nn);
        return NULL;
    }
    nn->ep = ep;
    nn->uid = uid;
    snprintf(nn->prefix, sizeof nn->prefix, "%s", prefix);
    snprintf(nn->host, sizeof nn->host, "%s", host);
    snprintf(nn->subj_self, sizeof nn->subj_self, "%s.to.%016llx", prefix,
             (unsigned long long)uid);
    snprintf(nn->subj_presence, sizeof nn->subj_presence, "%s.presence", prefix);
    lahja_list_init(&nn->peers);
    lahja_list_init(&nn->links);
    lahja_list_init(&nn->dead);
    return nn;
}

int lahja_join_nats(lahja_endpoint_t *ep, const lahja_nats_options_t *opts)
{
    if (ep == NULL || opts == NULL || opts->servers == NULL || opts->servers[0] == '\0')
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    if (ep->nats != NULL)
        return -EALREADY;
    const char *prefix = opts->prefix != NULL ? opts->prefix : "lahja";
    if (!prefix_ok(prefix)) {
        lahja_ep_error(ep, "nats: bad prefix \"%s\"", prefix);
        return -EINVAL;
    }
    char host[HOST_MAX + 1];
    host_id(host, sizeof host, opts->host);
    struct natsnet *nn = natsnet_new(ep, prefix, host, draw_uid());
    if (nn == NULL)
        return -ENOMEM;
    nn->heartbeat_ms = opts->heartbeat_ms ? opts->heartbeat_ms : 500;
    nn->dead_after_ms = opts->dead_after_ms ? opts->dead_after_ms : 4 * nn->heartbeat_ms;
    nn->window = opts->window ? opts->window : (size_t)4 << 20;

    /* The servers, one URL each. */
    char *list = strdup(opts->servers);
    const char *urls[64];
    int nurls = 0;
    if (list == NULL) {
        free(nn->scratch);
        free(nn->news);
        free(nn);
        return -ENOMEM;
    }
    for (char *save = NULL, *u = strtok_r(list, ", ", &save); u != NULL && nurls < 64;
         u = strtok_r(NULL, ", ", &save))
        urls[nurls++] = u;

    natsLibuv_Init();
    natsLibuv_SetThreadLocalLoop(ep->rt->loop);
    natsOptions *o = NULL;
    atomic_store(&nats_opened, 1);
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetServers(o, urls, nurls);
    if (s == NATS_OK)
        s = natsOptions_SetName(o, ep->name->s);
    if (s == NATS_OK && opts->user != NULL)
        s = natsOptions_SetUserInfo(o, opts->user, opts->password);
    if (s == NATS_OK && opts->token != NULL)
        s = natsOptions_SetToken(o, opts->token);
    if (s == NATS_OK && opts->creds_file != NULL)
        s = natsOptions_SetUserCredentialsFromFiles(o, opts->creds_file, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, opts->connect_timeout_ms ? opts->connect_timeout_ms : 2000);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1); /* for ever, while we run */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, 100);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(o, 64 << 20);
    if (s == NATS_OK)
        s = natsOptions_SetNoEcho(o, true);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(o, nn->heartbeat_ms * 2);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(o, 2);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, nn->news);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(o, on_reconnected, nn->news);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(o, on_error, nn->news);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(o, on_closed, nn->news);
    if (s == NATS_OK)
        s = natsOptions_SetEventLoop(o, ep->rt->loop, natsLibuv_Attach, natsLibuv_Read,
                                     natsLibuv_Write, natsLibuv_Detach);
    if (s != NATS_OK) {
        free(list);
        return fail(ep, o, nn, s, "options");
    }
    s = natsConnection_Connect(&nn->nc, o);
    nn->news_given = s == NATS_OK;
    free(list);
    if (s != NATS_OK)
        return fail(ep, o, nn, s, opts->servers);
    natsOptions_Destroy(o);
    int maxp = (int)natsConnection_GetMaxPayload(nn->nc);
    nn->chunk = maxp > HDR + 1024 ? (size_t)maxp - HDR : 1024;
    if (nn->chunk > CHUNK_MAX)
        nn->chunk = CHUNK_MAX;
    s = natsConnection_SubscribeSync(&nn->sub_to, nn->nc, nn->subj_self);
    /* The senders' windows bound what may wait here; the byte limit is
     * for a sender that ignores them (beyond it NATS drops, and the
     * senders that keep to them resend what was dropped). */
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(nn->sub_to, -1, 256 << 20);
    if (s == NATS_OK)
        s = natsConnection_SubscribeSync(&nn->sub_presence, nn->nc, nn->subj_presence);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(nn->sub_presence, -1, 64 << 20);
    if (s != NATS_OK)
        return fail(ep, NULL, nn, s, "subscribe");

    nats_attach(ep, nn);
    char url[256] = "?";
    natsConnection_GetConnectedUrl(nn->nc, url, sizeof url);
    lahja_bus_log(ep, LAHJA_LOG_INFO, "nats: joined %s under %s as %s on %s", url, nn->prefix,
                  ep->name->s, nn->host);
    return 0;
}

/* Starts the handles of a joined nn. */
static void nats_attach(lahja_endpoint_t *ep, struct natsnet *nn)
{
    uv_loop_t *loop = ep->rt->loop;
    uv_timer_init(loop, &nn->beat);
    uv_check_init(loop, &nn->drain);
    uv_prepare_init(loop, &nn->flush);
    uv_async_init(loop, &nn->wake, on_wake);
    nn->beat.data = nn->drain.data = nn->flush.data = nn->wake.data = nn;
    nn->open = 4;
    ep->nopen += 4;
    uv_check_start(&nn->drain, on_drain);
    uv_prepare_start(&nn->flush, on_flush);
    uv_timer_start(&nn->beat, on_beat, nn->heartbeat_ms, nn->heartbeat_ms);
    ep->nats = nn;
    beacon(nn, K_BEACON);
}

void lahja_nats_stop_begin(lahja_endpoint_t *ep)
{
    if (ep->nats != NULL)
        ep->nats->stopping = 1;
}

/* Stopping: what NATS still buffers (the connections' last receipts and
 * FINs, our BYE) is written by the loop; once it is, or after
 * FLUSH_MS, the NATS connection ends and the handles close. */
static void on_flushed(uv_timer_t *t)
{
    struct natsnet *nn = t->data;
    if (nn->nc != NULL && natsConnection_Buffered(nn->nc) > 0 && now_ms(nn) < nn->flush_until)
        return;
    uv_timer_stop(t);
    nats_teardown(nn);
    uv_close((uv_handle_t *)&nn->beat, on_handle_closed);
    uv_close((uv_handle_t *)&nn->drain, on_handle_closed);
    uv_close((uv_handle_t *)&nn->flush, on_handle_closed);
    uv_close((uv_handle_t *)&nn->wake, on_handle_closed);
}

void lahja_nats_stop(lahja_endpoint_t *ep)
{
    struct natsnet *nn = ep->nats;
    if (nn == NULL || nn->flush_until != 0)
        return;
    nn->stopping = 1;
    /* The connections have ended (their FINs are queued); peers that do
     * not hear of it learn from our BYE. */
    beacon(nn, K_BYE);
    uv_check_stop(&nn->drain);
    nn->flush_until = now_ms(nn) + FLUSH_MS;
    uv_timer_start(&nn->beat, on_flushed, 0, 1);
}

/* ------------------------------------------------ tests and fuzzing */

int lahja_nats_join_offline(lahja_endpoint_t *ep, const char *host, uint64_t uid,
                            lahja_nats_sink_fn sink, void *user)
{
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    if (ep->nats != NULL)
        return -EALREADY;
    struct natsnet *nn = natsnet_new(ep, "offline", host, uid);
    if (nn == NULL)
        return -ENOMEM;
    nn->offline = 1;
    nn->sink = sink;
    nn->sink_user = user;
    nn->heartbeat_ms = 500;
    nn->dead_after_ms = 2000;
    nn->window = 64 * 1024;
    nn->chunk = 4096;
    nats_attach(ep, nn);
    return 0;
}

void lahja_nats_inject(lahja_endpoint_t *ep, int presence, const void *msg, size_t len)
{
    struct natsnet *nn = ep->nats;
    const uint8_t *m = msg;
    if (nn == NULL || nn->flush_until != 0)
        return;
    if (len < HDR || m[0] != 'L' || m[1] != VERSION)
        nn->bad++;
    else if (presence)
        on_presence(nn, m, len);
    else
        on_conn_msg(nn, m, len);
    settle_left(nn);
}

void lahja_nats_tick(lahja_endpoint_t *ep)
{
    if (ep->nats != NULL && ep->nats->flush_until == 0)
        on_beat(&ep->nats->beat);
}
