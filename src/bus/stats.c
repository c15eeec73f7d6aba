/*
 * Statistics (B36): reading the counts the endpoint keeps, and the
 * built-in request that lets a tool read them from another process.
 *
 * The counts themselves are plain increments where the work is done
 * (conn.c: bytes and payloads; broadcast.c: blocked broadcasts;
 * consume.c: dispatches and stream drops), on fields the work touches
 * anyway: nothing here runs unless someone asks.
 *
 * The request is an ordinary subscription of LAHJA_STATS_REQUEST made at
 * start, so that peers learn of it in our SUBS and route it as any
 * other request: nothing in the wire protocol is special about it.  The
 * reserved types are kept out of what the application sees of its own
 * and its peers' subscriptions (consume.c), so that asking for
 * "the types I subscribe to" answers what the program itself did.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "endpoint.h"
#include "lahja/version.h"

int lahja_type_reserved(const char *type)
{
    return strncmp(type, LAHJA_RESERVED_PREFIX, sizeof LAHJA_RESERVED_PREFIX - 1) == 0;
}

static uint64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The established connection to `name` (READY, or DRAINING: still
 * reading what the peer sent), or NULL. */
static const struct conn *conn_up(const lahja_endpoint_t *ep, const char *name)
{
    const struct conn *c = lahja_conn_find(ep, name);
    return c != NULL && (c->state == CONN_READY || c->state == CONN_DRAINING) ? c : NULL;
}

static void conn_stats(const lahja_endpoint_t *ep, const struct conn *c, lahja_peer_stats_t *o)
{
    uint64_t now = uv_now(ep->rt->loop);
    o->connected = 1;
    o->pid = c->peer_pid;
    o->since = c->up_at;
    o->age_ms = now > c->up_at ? now - c->up_at : 0;
    o->events_out = c->tx_events;
    o->events_in = c->rx_events;
    o->bytes_out = c->tx_bytes;
    o->bytes_in = c->rx_total;
    o->payload_out = c->tx_payload;
    o->payload_in = c->rx_payload;
    o->queued = c->queued + c->lent_bytes; /* lent payloads are held for it too */
    o->high_water = c->queue_mark;
    o->blocked = c->blocked;
}

int lahja_peer_stats(const lahja_endpoint_t *ep, const char *name, lahja_peer_stats_t *out)
{
    if (ep == NULL || name == NULL || out == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(ep->rt))
        return LAHJA_EWRONGTHREAD;
    lahja_delivery_t d;
    int rc = lahja_delivery_stats(ep, name, &d);
    if (rc != 0)
        return rc;
    lahja_peer_stats_t o = { .high_water = ep->opts.high_water };
    const struct conn *c = conn_up(ep, name);
    if (c != NULL)
        conn_stats(ep, c, &o);
    o.confirmed = d.confirmed;
    o.lost = d.lost;
    *out = o;
    return 0;
}

int lahja_endpoint_stats(const lahja_endpoint_t *ep, lahja_endpoint_stats_t *out)
{
    if (ep == NULL || out == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(ep->rt))
        return LAHJA_EWRONGTHREAD;
    lahja_endpoint_stats_t o = {
        .started_ms = ep->started_ms,
        .stream_drops = ep->stream_drops,
        .dispatched = ep->dispatched,
        .requests_pending = ep->pindex_n,
    };
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        const struct conn *c = lahja_container_of(l, struct conn, link);
        o.peers += c->state == CONN_READY || c->state == CONN_DRAINING;
    }
    *out = o;
    return 0;
}

/* ------------------------------------------------------------ the reply */

/* The reply's text, growing; on a failed allocation it stays failed. */
struct text {
    char *s;
    size_t len, cap;
    int failed;
};

static void put(struct text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->s, cap);
        if (p == NULL) {
            t->failed = 1;
            return;
        }
        t->s = p;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void putf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct text *t, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(t, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* key=value, the value escaped: types may hold any byte but NUL, and a
 * newline in one must not start a line of its own.  '%', control bytes
 * and DEL are written %XX. */
static void put_str(struct text *t, const char *key, const char *v)
{
    put(t, key, strlen(key));
    put(t, "=", 1);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '%' || *p < 0x20 || *p == 0x7f)
            putf(t, "%%%02X", *p);
        else
            put(t, (const char *)p, 1);
    }
    put(t, "\n", 1);
}

static void put_u64(struct text *t, const char *key, uint64_t v)
{
    putf(t, "%s=%llu\n", key, (unsigned long long)v);
}

static void put_peer(struct text *t, const lahja_endpoint_t *ep, const struct conn *c,
                     uint64_t now_unix)
{
    lahja_peer_stats_t s;
    if (lahja_peer_stats(ep, c->peer->s, &s) != 0)
        return;
    put_str(t, "peer", c->peer->s);
    put_u64(t, "peer.pid", (uint64_t)s.pid);
    put_u64(t, "peer.connected_ms", now_unix - s.age_ms);
    put_u64(t, "peer.age_ms", s.age_ms);
    put_u64(t, "peer.events_out", s.events_out);
    put_u64(t, "peer.events_in", s.events_in);
    put_u64(t, "peer.bytes_out", s.bytes_out);
    put_u64(t, "peer.bytes_in", s.bytes_in);
    put_u64(t, "peer.payload_out", s.payload_out);
    put_u64(t, "peer.payload_in", s.payload_in);
    put_u64(t, "peer.queued", s.queued);
    put_u64(t, "peer.high_water", s.high_water);
    put_u64(t, "peer.blocked", s.blocked);
    put_u64(t, "peer.confirmed", s.confirmed);
    put_u64(t, "peer.lost", s.lost);
}

/* The text docs/bus.md, Statistics, describes. */
static void stats_text(const lahja_endpoint_t *ep, struct text *t)
{
    lahja_endpoint_stats_t es;
    lahja_endpoint_stats(ep, &es);
    uint64_t now = unix_ms();
    put_u64(t, "lahja-stats", LAHJA_STATS_FORMAT);
    put_str(t, "name", ep->name->s);
    put_u64(t, "pid", (uint64_t)getpid());
    put_u64(t, "uid", (uint64_t)geteuid());
    put_str(t, "version", lahja_version_string());
    put_u64(t, "started_ms", es.started_ms);
    put_u64(t, "uptime_ms", now > es.started_ms ? now - es.started_ms : 0);
    put_u64(t, "peers", es.peers);
    put_u64(t, "stream_drops", es.stream_drops);
    put_u64(t, "dispatched", es.dispatched);
    put_u64(t, "requests_pending", es.requests_pending);
    for (size_t i = 0; i < ep->types.nslots; i++) {
        const lahja_strmap_slot_t *s = &ep->types.slots[i];
        if (lahja_strmap_live(s) && ((struct type_entry *)s->value)->n > 0
            && !lahja_type_reserved(s->key))
            put_str(t, "sub", s->key);
    }
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        const struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->state == CONN_READY || c->state == CONN_DRAINING)
            put_peer(t, ep, c, now);
    }
}

static int on_stats_request(lahja_endpoint_t *ep, lahja_event_t *req, void *user)
{
    (void)user;
    if (!req->is_request)
        return 0; /* a plain event of the type: nothing to answer */
    struct text t = { 0 };
    stats_text(ep, &t);
    int rc = t.failed ? -ENOMEM : lahja_respond_bytes(ep, req, LAHJA_STATS_REPLY, t.s, t.len);
    free(t.s);
    return rc;
}

void lahja_stats_start(lahja_endpoint_t *ep)
{
    ep->started_ms = unix_ms();
    if (ep->opts.no_stats)
        return;
    int rc = lahja_subscribe(ep, LAHJA_STATS_REQUEST, on_stats_request, NULL, NULL);
    if (rc != 0)
        lahja_bus_log(ep, LAHJA_LOG_WARNING, "the statistics request is not answered: %s",
                      lahja_strerror(rc));
}
