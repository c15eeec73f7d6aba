/*
 * Connections: handshake, reading and dispatching frames, and the write
 * queue.  All of it runs in libuv callbacks.
 *
 * Writing: small frames are copied one after another into 64 KiB
 * chunks, so that thousands of events leave in one writev of a few
 * iovecs; a large event's payload is not copied (its own iovec, shared by
 * every peer it goes to).  Output is written from the broadcasting call
 * once enough waits (FLUSH_FIRST bytes, then twice as much each time up
 * to FLUSH_BYTES: see queued_more), so the reader works while the writer
 * goes on, and at the latest before the loop polls again (a prepare
 * handle).  A write tries the socket directly
 * (uv_try_write); what the socket does not take goes to libuv as a
 * uv_write, and the connection's later output waits for it.
 */
#define _GNU_SOURCE /* struct ucred */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "endpoint.h"

#define WRITE_IOV 256            /* iovecs per write */
#define CHUNK_SIZE (64 * 1024)   /* a chunk of small frames */
#define COPY_MAX 2048            /* payloads up to this go into chunks */
#define FLUSH_FIRST 4096         /* output written without waiting: at */
#define FLUSH_BYTES (64 * 1024)  /* first, then doubling up to this */
#define FREE_CHUNKS 8            /* chunks an endpoint keeps for reuse */
#define READ_CHUNK (64 * 1024)
#define SHRINK_READS 64
#define RETRY_MIN_MS 2
#define RETRY_MAX_MS 100

static void conn_fail(struct conn *c, int err, const char *why);

/* ----------------------------------------------------------- lifetime */

static struct conn *conn_new(lahja_endpoint_t *ep)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->ep = ep;
    uv_pipe_init(ep->rt->loop, &c->pipe, 0);
    uv_timer_init(ep->rt->loop, &c->timer);
    c->pipe.data = c;
    c->timer.data = c;
    c->nopen = 2;
    c->flush_at = FLUSH_FIRST;
    uint32_t max_frame = (uint32_t)(ep->opts.max_payload + LAHJA_WIRE_EVENT_PREFIX_MAX);
    lahja_wire_rx_init(&c->rx, max_frame, (uint32_t)ep->opts.max_payload, 65535);
    lahja_wire_tx_init(&c->tx);
    lahja_list_init(&c->outq);
    lahja_list_init(&c->inflight);
    lahja_cond_init(&c->drained);
    lahja_strmap_init(&c->subs);
    lahja_list_push_back(&ep->conns, &c->link);
    ep->nconns_open++;
    return c;
}

static void item_release(lahja_endpoint_t *ep, struct out_item *it)
{
    lahja_event_unref(it->ev);
    it->ev = NULL;
    if (it->cap == CHUNK_SIZE && ep->nfree_chunks < FREE_CHUNKS) {
        it->link.next = (lahja_link_t *)(void *)ep->free_chunks;
        ep->free_chunks = it;
        ep->nfree_chunks++;
        return;
    }
    free(it->heap);
    it->heap = NULL;
    it->cap = 0;
    it->link.next = (lahja_link_t *)(void *)ep->free_items;
    ep->free_items = it;
}

static void release_list(lahja_endpoint_t *ep, lahja_link_t *list)
{
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(list)) != NULL)
        item_release(ep, lahja_container_of(l, struct out_item, link));
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->nopen > 0)
        return;
    lahja_endpoint_t *ep = c->ep;
    release_list(ep, &c->outq);
    release_list(ep, &c->inflight);
    lahja_wire_rx_free(&c->rx);
    lahja_wire_tx_free(&c->tx);
    lahja_strmap_free(&c->subs);
    lahja_name_unref(c->peer);
    free(c->rbuf);
    free(c);
    if (--ep->nconns_open == 0 && ep->nopen == 0 && ep->stopped)
        lahja_complete(&ep->closed, 0);
}

/* A loop torn down under a running endpoint (lahja_run returning while
 * it was never stopped) may have closed our handles already: then they
 * are not closed twice, and the connection's memory is left to go with
 * the process. */
static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_conn_closed);
}

/* Ends a connection, whatever its state: it leaves every table at once,
 * its waiters are woken, and its memory goes when libuv has closed its
 * handles. */
static void conn_fail(struct conn *c, int err, const char *why)
{
    if (c->state == CONN_CLOSING)
        return;
    lahja_endpoint_t *ep = c->ep;
    int was_ready = c->state == CONN_READY;
    c->state = CONN_CLOSING;
    int routine = was_ready && (err == LAHJA_EREMOTEDISCONNECTED || err == LAHJA_ELIFECYCLE);
    if (c->peer != NULL || c->target[0] != '\0')
        lahja_bus_log(ep, routine ? LAHJA_LOG_INFO : LAHJA_LOG_WARNING,
                      "connection %s %s: %s", c->outbound ? "to" : "from",
                      c->peer != NULL ? c->peer->s : c->target, why);
    else
        lahja_bus_log(ep, LAHJA_LOG_WARNING, "incoming connection dropped: %s", why);
    lahja_list_remove(&c->link);
    if (c->dirty) {
        lahja_list_remove(&c->dirty_link);
        c->dirty = 0;
    }
    if (c->op != NULL) {
        if (c->op->error == 0)
            c->op->error = err;
        c->op->pending--;
        lahja_cond_broadcast(&c->op->done);
        c->op = NULL;
    }
    lahja_cond_broadcast(&c->drained);
    if (was_ready) {
        lahja_pending_peer_gone(ep, c);
        lahja_ep_changed(ep, 1);
    }
    close_handle((uv_handle_t *)&c->pipe);
    close_handle((uv_handle_t *)&c->timer);
}

void lahja_conn_close(struct conn *c, int err, const char *why)
{
    conn_fail(c, err, why);
}

struct conn *lahja_conn_find(const lahja_endpoint_t *ep, const char *name)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        const char *n = c->peer != NULL ? c->peer->s : c->target;
        if (strcmp(n, name) == 0)
            return c;
    }
    return NULL;
}

/* -------------------------------------------------------------- writing */

static struct out_item *item_get(lahja_endpoint_t *ep)
{
    struct out_item *it = ep->free_items;
    if (it != NULL) {
        ep->free_items = (struct out_item *)(void *)it->link.next;
        return it;
    }
    it = malloc(sizeof *it);
    if (it != NULL) {
        it->ev = NULL;
        it->heap = NULL;
        it->cap = 0;
    }
    return it;
}

/* An empty chunk of at least `need` bytes. */
static struct out_item *chunk_get(lahja_endpoint_t *ep, size_t need)
{
    struct out_item *it;
    if (need <= CHUNK_SIZE && ep->free_chunks != NULL) {
        it = ep->free_chunks;
        ep->free_chunks = (struct out_item *)(void *)it->link.next;
        ep->nfree_chunks--;
    } else {
        it = item_get(ep);
        if (it == NULL)
            return NULL;
        size_t cap = need > CHUNK_SIZE ? need : CHUNK_SIZE;
        it->heap = malloc(cap);
        if (it->heap == NULL) {
            item_release(ep, it);
            return NULL;
        }
        it->cap = cap;
    }
    it->head_len = 0;
    it->payload = it->heap;
    it->payload_len = 0;
    it->cost = 0;
    return it;
}

static void on_flush(uv_prepare_t *h)
{
    lahja_ep_flush(h->data);
}

static void flush_soon(lahja_endpoint_t *ep)
{
    if (ep->flusher_closed)
        return;
    if (!uv_is_active((uv_handle_t *)&ep->flusher))
        uv_prepare_start(&ep->flusher, on_flush);
}

void lahja_ep_subs_dirty(lahja_endpoint_t *ep)
{
    ep->subs_dirty = 1;
    flush_soon(ep);
}

static void mark_dirty(struct conn *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    lahja_list_push_back(&c->ep->dirty, &c->dirty_link);
    flush_soon(c->ep);
}

static void conn_write(struct conn *c);
static void conn_write_or_fail(struct conn *c);

/*
 * Accounts for output just queued; writes it if enough is waiting.  The
 * first write of a burst goes out after FLUSH_FIRST bytes, so that the
 * reader starts early, and each next one waits for twice as much, up to
 * FLUSH_BYTES, so that a long burst is written in large pieces; the end
 * of the loop turn starts the next burst small again.
 */
static void queued_more(struct conn *c, size_t bytes)
{
    c->queued += bytes;
    c->unflushed += bytes;
    mark_dirty(c);
    if (c->unflushed >= c->flush_at) {
        conn_write(c);
        if (c->flush_at < FLUSH_BYTES)
            c->flush_at *= 2;
    }
}

static void enqueue(struct conn *c, struct out_item *it)
{
    /* What the item keeps alive: a compressed event still holds its
     * uncompressed payload, so that is what counts against the limits. */
    it->cost = it->head_len + it->payload_len;
    if (it->ev != NULL && it->ev->len > it->payload_len)
        it->cost = it->head_len + it->ev->len;
    lahja_list_push_back(&c->outq, &it->link);
    queued_more(c, it->cost);
}

/* Copies a[0..alen) and b[0..blen) into the connection's last chunk, or
 * a new one. */
static int append(struct conn *c, const void *a, size_t alen, const void *b, size_t blen)
{
    size_t need = alen + blen;
    struct out_item *it = NULL;
    if (!lahja_list_empty(&c->outq)) {
        it = lahja_container_of(c->outq.prev, struct out_item, link);
        if (it->cap == 0 || it->cap - it->payload_len < need)
            it = NULL;
    }
    if (it == NULL) {
        it = chunk_get(c->ep, need);
        if (it == NULL)
            return -ENOMEM;
        lahja_list_push_back(&c->outq, &it->link);
    }
    memcpy(it->heap + it->payload_len, a, alen);
    if (blen > 0)
        memcpy(it->heap + it->payload_len + alen, b, blen);
    it->payload_len += need;
    it->cost += need;
    queued_more(c, need);
    return 0;
}

/* Queues a control frame (copied). */
static int enqueue_frame(struct conn *c, const uint8_t *frame, size_t len)
{
    return append(c, frame, len, NULL, 0);
}

int lahja_conn_enqueue_event(struct conn *c, lahja_event_t *ev, uint8_t flags, uint64_t id)
{
    if (c->state != CONN_READY)
        return 0; /* failed during this broadcast: it is going */
    uint32_t tid;
    int is_new;
    int rc = lahja_wire_tx_intern_h(&c->tx, ev->type, ev->type_len, ev->hash, &tid, &is_new);
    if (rc != 0)
        return rc;
    uint8_t head[sizeof ((struct out_item *)0)->head];
    size_t head_len = 0;
    if (is_new) /* the TYPE frame goes first, with the event */
        head_len = lahja_wire_type_encode(head, tid, ev->type, ev->type_len);
    const uint8_t *payload = ev->payload;
    size_t plen = ev->len;
    if (c->peer_lz4 && ev->lz4_len > 0) {
        flags |= LAHJA_WIRE_LZ4;
        payload = ev->lz4;
        plen = ev->lz4_len;
    }
    head_len += lahja_wire_event_prefix(head + head_len, tid, flags, id, (uint32_t)ev->len, plen);
    if (plen <= COPY_MAX || ev->on_stack) /* a stack event cannot be kept */
        return append(c, head, head_len, payload, plen);
    struct out_item *it = item_get(c->ep);
    if (it == NULL)
        return -ENOMEM;
    memcpy(it->head, head, head_len);
    it->head_len = head_len;
    it->ev = lahja_event_ref(ev);
    it->payload = payload;
    it->payload_len = plen;
    enqueue(c, it);
    return 0;
}

/* Fills bufs with outq's unwritten bytes, from the first item on.
 * Returns the iovec count; *items and *bytes tell what they cover. */
static unsigned gather(struct conn *c, uv_buf_t *bufs, unsigned max, size_t *items,
                       size_t *bytes)
{
    unsigned n = 0;
    size_t off = c->head_off;
    *items = 0;
    *bytes = 0;
    lahja_link_t *l;
    for (l = c->outq.next; l != &c->outq && n + 2 <= max; l = l->next) {
        struct out_item *it = lahja_container_of(l, struct out_item, link);
        if (off < it->head_len) {
            bufs[n++] = uv_buf_init((char *)it->head + off, (unsigned)(it->head_len - off));
            *bytes += it->head_len - off;
            off = 0;
        } else {
            off -= it->head_len;
        }
        if (off < it->payload_len) {
            bufs[n++] = uv_buf_init((char *)it->payload + off, (unsigned)(it->payload_len - off));
            *bytes += it->payload_len - off;
        }
        off = 0;
        (*items)++;
    }
    return n;
}

/* `n` bytes of outq went to the socket: the items they finish go. */
static void consumed(struct conn *c, size_t n)
{
    int released = 0;
    while (n > 0) {
        struct out_item *it = lahja_container_of(c->outq.next, struct out_item, link);
        size_t left = it->head_len + it->payload_len - c->head_off;
        if (n < left) {
            c->head_off += n;
            break;
        }
        n -= left;
        c->head_off = 0;
        lahja_list_remove(&it->link);
        c->queued -= it->cost;
        item_release(c->ep, it);
        released = 1;
    }
    if (released)
        lahja_cond_broadcast(&c->drained);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    lahja_endpoint_t *ep = c->ep;
    c->writing = 0;
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&c->inflight)) != NULL) {
        struct out_item *it = lahja_container_of(l, struct out_item, link);
        c->queued -= it->cost;
        item_release(ep, it);
    }
    if (status < 0) {
        conn_fail(c, LAHJA_EREMOTEDISCONNECTED, uv_strerror(status));
        return;
    }
    lahja_cond_broadcast(&c->drained);
    conn_write_or_fail(c);
}

/* What the socket did not take goes to libuv, which writes it when the
 * socket has room; the connection's next write waits for on_write. */
static int write_async(struct conn *c)
{
    uv_buf_t bufs[WRITE_IOV];
    size_t items, bytes;
    unsigned n = gather(c, bufs, WRITE_IOV, &items, &bytes);
    for (size_t i = 0; i < items; i++)
        lahja_list_push_back(&c->inflight, lahja_list_pop_front(&c->outq));
    c->head_off = 0;
    c->write_req.data = c;
    c->writing = 1;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->pipe, bufs, n, on_write);
    if (rc != 0)
        c->writing = 0;
    return rc;
}

/* Writes what the connection has queued, as far as the socket takes it. */
static void conn_write(struct conn *c)
{
    if (c->writing || c->state == CONN_CLOSING || c->write_error != 0)
        return;
    c->unflushed = 0;
    while (!lahja_list_empty(&c->outq)) {
        uv_buf_t bufs[WRITE_IOV];
        size_t items, bytes;
        unsigned n = gather(c, bufs, WRITE_IOV, &items, &bytes);
        int w = uv_try_write((uv_stream_t *)&c->pipe, bufs, n);
        if (w < 0 && w != UV_EAGAIN) {
            /* Ended by conn_write_or_fail, outside whatever call queued it. */
            c->write_error = w;
            mark_dirty(c);
            return;
        }
        size_t done = w > 0 ? (size_t)w : 0;
        consumed(c, done);
        if (done < bytes) {
            int rc = write_async(c);
            if (rc != 0) {
                c->write_error = rc;
                mark_dirty(c);
            }
            return;
        }
    }
}

/* conn_write, from a callback of the loop's own, where a connection
 * whose write failed can be ended at once. */
static void conn_write_or_fail(struct conn *c)
{
    conn_write(c);
    if (c->write_error != 0)
        conn_fail(c, LAHJA_EREMOTEDISCONNECTED, uv_strerror(c->write_error));
}

void lahja_ep_send_subs(lahja_endpoint_t *ep)
{
    if (!ep->subs_dirty)
        return;
    ep->subs_dirty = 0;
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->state == CONN_READY)
            lahja_conn_send_subs(c);
    }
}

void lahja_ep_flush(lahja_endpoint_t *ep)
{
    lahja_ep_send_subs(ep);
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&ep->dirty)) != NULL) {
        struct conn *c = lahja_container_of(l, struct conn, dirty_link);
        c->dirty = 0;
        c->flush_at = FLUSH_FIRST;
        conn_write_or_fail(c);
    }
    uv_prepare_stop(&ep->flusher);
}

/* ------------------------------------------------------- subscriptions */

void lahja_conn_send_subs(struct conn *c)
{
    lahja_endpoint_t *ep = c->ep;
    size_t n = 0, total = 0;
    for (size_t i = 0; i < ep->types.nslots; i++) {
        lahja_strmap_slot_t *s = &ep->types.slots[i];
        if (lahja_strmap_live(s) && ((struct type_entry *)s->value)->n > 0) {
            n++;
            total += s->len;
        }
    }
    const char **types = malloc((n ? n : 1) * sizeof *types);
    size_t *lens = malloc((n ? n : 1) * sizeof *lens);
    size_t size = lahja_wire_subs_size(n, total);
    uint8_t *frame = malloc(size);
    if (types == NULL || lens == NULL || frame == NULL) {
        conn_fail(c, -ENOMEM, "out of memory for a subscription update");
    } else {
        size_t k = 0;
        for (size_t i = 0; i < ep->types.nslots; i++) {
            lahja_strmap_slot_t *s = &ep->types.slots[i];
            if (lahja_strmap_live(s) && ((struct type_entry *)s->value)->n > 0) {
                types[k] = s->key;
                lens[k++] = s->len;
            }
        }
        size_t len = lahja_wire_subs_encode(frame, size, ++c->subs_seq, types, lens, n);
        if (len == 0 || enqueue_frame(c, frame, len) != 0)
            conn_fail(c, -ENOMEM, "cannot queue a subscription update");
    }
    free(types);
    free(lens);
    free(frame);
}

/* Replaces the peer's subscription set with a SUBS frame's (B19). */
static int peer_subs(struct conn *c, lahja_wire_subs_t *it)
{
    lahja_strmap_t fresh;
    lahja_strmap_init(&fresh);
    const char *type;
    size_t len;
    int is_new;
    while (lahja_wire_subs_next(it, &type, &len)) {
        if (lahja_strmap_insert(&fresh, type, len, &is_new) == NULL) {
            lahja_strmap_free(&fresh);
            return -ENOMEM;
        }
    }
    lahja_strmap_free(&c->subs);
    c->subs = fresh;
    if (!c->got_subs) {
        /* The peer sends its subscriptions right after its HELLO: a
         * connect returns once they are known, so that a broadcast
         * right after it reaches the peer's subscribers. */
        c->got_subs = 1;
        if (c->op != NULL) {
            c->op->pending--;
            lahja_cond_broadcast(&c->op->done);
            c->op = NULL;
        }
    }
    uint8_t ack[12];
    size_t n = lahja_wire_ack_encode(ack, it->seq);
    int rc = enqueue_frame(c, ack, n);
    lahja_ep_changed(c->ep, 0);
    return rc;
}

/* ------------------------------------------------------------ handshake */

static int send_hello(struct conn *c)
{
    lahja_endpoint_t *ep = c->ep;
    struct out_item *it = item_get(ep);
    if (it == NULL)
        return -ENOMEM;
    uint32_t features = ep->opts.compress_threshold != SIZE_MAX ? LAHJA_WIRE_FEAT_LZ4 : 0;
    it->head_len = lahja_wire_hello_encode(it->head, ep->name->s, ep->name->len, features,
                                           c->rx.max_frame);
    it->payload = NULL;
    it->payload_len = 0;
    enqueue(c, it);
    return 0;
}

/*
 * A second connection to a peer already connected.  If it comes from the
 * same process and both endpoints connected to each other at the same
 * moment, each side sees the other's
 * connection as the duplicate: both keep the one initiated by the name
 * that sorts first, so that the same connection survives on both sides
 * (and a lahja_connect waiting on the other one succeeds).  A duplicate
 * from the same initiator is refused (B4).
 */
static int resolve_duplicate(struct conn *c, struct conn *o, const char *peer)
{
    if (c->peer_pid != o->peer_pid)
        return LAHJA_ECONNREJECTED; /* another process using a connected name */
    const char *self = c->ep->name->s;
    const char *c_from = c->outbound ? self : peer;
    const char *o_from = o->outbound ? self : peer;
    int order = strcmp(c_from, o_from);
    if (order == 0)
        return LAHJA_ECONNREJECTED;
    if (order > 0) {
        if (c->op != NULL) { /* connected all the same */
            c->op->pending--;
            lahja_cond_broadcast(&c->op->done);
            c->op = NULL;
        }
        return LAHJA_ECONNREJECTED;
    }
    conn_fail(o, LAHJA_ECONNREJECTED, "replaced by the simultaneous connection");
    return 0;
}

static int on_hello(struct conn *c, const lahja_wire_hello_t *h)
{
    lahja_endpoint_t *ep = c->ep;
    if (strcmp(h->name, ep->name->s) == 0)
        return LAHJA_ECONNREJECTED; /* ourselves, under our own name */
    if (c->outbound && strcmp(h->name, c->target) != 0)
        return LAHJA_ECONNREJECTED;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *o = lahja_container_of(l, struct conn, link);
        if (o != c && o->state == CONN_READY && strcmp(o->peer->s, h->name) == 0) {
            int rc = resolve_duplicate(c, o, h->name);
            if (rc != 0)
                return rc;
            break; /* o is gone; c takes its place */
        }
    }
    c->peer = lahja_name_new(h->name, h->name_len);
    if (c->peer == NULL)
        return -ENOMEM;
    c->peer_lz4 = (h->features & LAHJA_WIRE_FEAT_LZ4) && ep->opts.compress_threshold != SIZE_MAX;
    c->peer_max = h->max_frame;
    c->state = CONN_READY;
    uv_timer_stop(&c->timer);
    /* Our subscriptions go out now, not at the end of the loop turn: the
     * peer's lahja_connect waits for them, and a task woken by this
     * connection may keep the loop busy before the turn ends. */
    lahja_conn_send_subs(c);
    conn_write(c);
    lahja_bus_log(ep, LAHJA_LOG_DEBUG, "connected %s %s", c->outbound ? "to" : "from", h->name);
    lahja_ep_changed(ep, 1);
    return 0;
}

/* --------------------------------------------------------------- reading */

static int on_event(struct conn *c, const lahja_wire_event_t *w)
{
    lahja_endpoint_t *ep = c->ep;
    const uint8_t *payload = w->payload;
    if (w->flags & LAHJA_WIRE_LZ4) {
        if (ep->scratch_cap < w->raw_len) {
            uint8_t *p = realloc(ep->scratch, w->raw_len);
            if (p == NULL)
                return -ENOMEM;
            ep->scratch = p;
            ep->scratch_cap = w->raw_len;
        }
        if (lahja_wire_lz4_decompress(w->payload, w->payload_len, ep->scratch, w->raw_len) != 0)
            return -EPROTO;
        payload = ep->scratch;
    }
    lahja_event_t ev = {
        .refs = 1, .bound = 1, .borrowed = 1,
        .is_request = (w->flags & LAHJA_WIRE_REQUEST) != 0,
        .id = w->id, .origin = c->peer,
        .type = w->type, .type_len = w->type_len,
        .payload = payload, .len = w->raw_len,
    };
    if (w->flags & LAHJA_WIRE_RESPONSE) {
        lahja_deliver_response(ep, &ev);
        return 0;
    }
    /* A run of events of one type looks its consumers up once. */
    if (w->type != c->rx_type || c->rx_gen != ep->types_gen) {
        c->rx_type = w->type;
        c->rx_gen = ep->types_gen;
        c->rx_te = lahja_type_find(ep, w->type, w->type_len,
                                   lahja_strmap_hash(w->type, w->type_len));
    }
    lahja_dispatch_entry(ep, c->rx_te, &ev);
    return 0;
}

static int on_message(struct conn *c, lahja_wire_msg_t *m)
{
    switch (m->kind) {
    case LAHJA_WIRE_HELLO:
        return on_hello(c, &m->u.hello);
    case LAHJA_WIRE_SUBS:
        return peer_subs(c, &m->u.subs);
    case LAHJA_WIRE_SUBS_ACK:
        c->subs_acked = m->u.ack_seq;
        return 0;
    case LAHJA_WIRE_EVENT:
        return on_event(c, &m->u.event);
    default:
        return 0; /* TYPE: kept by the rx state */
    }
}

/*
 * The read buffer grows to what the frame being read needs (its size is
 * known from its header, already checked against the largest frame), in
 * steps of READ_CHUNK, and never beyond that frame plus one chunk: a peer
 * cannot make us allocate more than the configured maximum (B26).  After a
 * large frame it shrinks back.
 */
static int read_room(struct conn *c)
{
    size_t want = c->rlen + READ_CHUNK;
    if (c->need > c->rlen && c->need - c->rlen > READ_CHUNK)
        want = c->need;
    if (want <= c->rcap)
        return 0;
    size_t cap = c->rcap ? c->rcap : READ_CHUNK;
    while (cap < want)
        cap *= 2;
    size_t limit = (size_t)c->rx.max_frame + LAHJA_WIRE_HEADER_SIZE + READ_CHUNK;
    if (cap > limit)
        cap = want > limit ? want : limit;
    uint8_t *p = realloc(c->rbuf, cap);
    if (p == NULL)
        return -ENOMEM;
    c->rbuf = p;
    c->rcap = cap;
    return 0;
}

/* A buffer grown for large frames is kept while they keep coming (giving
 * it back and faulting it in again costs more than the copy), and
 * shrunk after SHRINK_READS reads that did not need it. */
static void read_shrink(struct conn *c)
{
    if (c->rcap <= 4 * READ_CHUNK)
        return;
    if (c->rlen > c->rcap / 4 || c->need > 4 * READ_CHUNK) {
        c->small_reads = 0;
        return;
    }
    if (++c->small_reads < SHRINK_READS)
        return;
    c->small_reads = 0;
    size_t cap = c->rlen > 2 * READ_CHUNK ? c->rlen : 2 * READ_CHUNK;
    uint8_t *p = realloc(c->rbuf, cap);
    if (p != NULL) {
        c->rbuf = p;
        c->rcap = cap;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    if (read_room(c) != 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = s->data;
    if (nread < 0) {
        const char *why = nread != UV_EOF ? uv_strerror((int)nread)
                          : c->rlen > 0   ? "closed by peer in the middle of a frame"
                                          : "closed by peer";
        conn_fail(c, LAHJA_EREMOTEDISCONNECTED, why);
        return;
    }
    c->rlen += (size_t)nread;
    lahja_ep_busy_poll(c->ep);
    size_t off = 0;
    while (c->state != CONN_CLOSING) {
        lahja_wire_msg_t m;
        size_t need = 0;
        ssize_t n = lahja_wire_rx_next(&c->rx, c->rbuf + off, c->rlen - off, &m, &need);
        if (n == 0) {
            c->need = need;
            break;
        }
        if (n < 0) {
            conn_fail(c, (int)n, lahja_strerror((int)n));
            return;
        }
        off += (size_t)n;
        int rc = on_message(c, &m);
        if (rc != 0) {
            conn_fail(c, rc, lahja_strerror(rc));
            return;
        }
    }
    if (off > 0 && c->state != CONN_CLOSING) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
        read_shrink(c);
    }
}

static void on_handshake_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    conn_fail(c, -ETIMEDOUT, "no handshake in time");
}

/* B27: same user only, unless widened. */
static int peer_allowed(struct conn *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
        return 0;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    c->peer_pid = cred.pid;
    if (cred.uid == geteuid())
        return 1;
    for (size_t i = 0; i < c->ep->opts.n_allowed_uids; i++)
        if (c->ep->opts.allowed_uids[i] == cred.uid)
            return 1;
    lahja_bus_log(c->ep, LAHJA_LOG_WARNING, "refusing a process of uid %u", (unsigned)cred.uid);
    return 0;
}

static void start_handshake(struct conn *c)
{
    if (!peer_allowed(c)) {
        conn_fail(c, -EACCES, "peer's user not allowed");
        return;
    }
    c->state = CONN_HANDSHAKE;
    int rc = send_hello(c);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    if (rc == 0)
        rc = uv_timer_start(&c->timer, on_handshake_timeout, c->ep->opts.handshake_timeout_ms, 0);
    if (rc != 0)
        conn_fail(c, rc, lahja_strerror(rc));
}

int lahja_conn_accept(lahja_endpoint_t *ep)
{
    struct conn *c = conn_new(ep);
    if (c == NULL)
        return -ENOMEM;
    int rc = uv_accept((uv_stream_t *)&ep->server, (uv_stream_t *)&c->pipe);
    if (rc != 0) {
        conn_fail(c, rc, uv_strerror(rc));
        return rc;
    }
    start_handshake(c);
    return 0;
}

/* ----------------------------------------------------------- connecting */

static void try_connect(struct conn *c);

static void on_retry(uv_timer_t *t)
{
    try_connect(t->data);
}

/*
 * Connects with a plain non-blocking socket, handed to libuv once
 * connected: a Unix socket connect completes at once, and a socket that
 * does not exist yet (B4 waits for it) or has a full backlog is retried
 * with backoff without tearing down a libuv handle each time.
 */
static void try_connect(struct conn *c)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_fail(c, -errno, "socket");
        return;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int err = errno;
        close(fd);
        if (err == ENOENT || err == ECONNREFUSED || err == EAGAIN) {
            c->retry_ms = c->retry_ms ? c->retry_ms * 2 : RETRY_MIN_MS;
            if (c->retry_ms > RETRY_MAX_MS)
                c->retry_ms = RETRY_MAX_MS;
            uv_timer_start(&c->timer, on_retry, c->retry_ms, 0);
        } else {
            conn_fail(c, -err, strerror(err));
        }
        return;
    }
    int rc = uv_pipe_open(&c->pipe, fd);
    if (rc != 0) {
        close(fd);
        conn_fail(c, rc, uv_strerror(rc));
        return;
    }
    start_handshake(c);
}

struct conn *lahja_conn_connect(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg,
                                struct connect_op *op)
{
    struct conn *c = conn_new(ep);
    if (c == NULL)
        return NULL;
    c->outbound = 1;
    c->state = CONN_CONNECTING;
    memcpy(c->target, cfg->name, sizeof c->target);
    memcpy(c->path, cfg->path, sizeof c->path);
    c->op = op;
    op->pending++;
    try_connect(c);
    return c;
}
