/*
 * Connections: handshake, reading and dispatching frames, the write
 * queue and delivery receipts.  All of it runs in libuv callbacks.
 *
 * Writing: small frames are copied one after another into 64 KiB
 * chunks, so that thousands of events leave in one writev of a few
 * iovecs; a large event's payload is not copied (its own iovec, shared by
 * every peer it goes to).  Output is written from the broadcasting call
 * once enough waits (FLUSH_FIRST bytes, then twice as much each time up
 * to FLUSH_BYTES: see queued_more), so the reader works while the writer
 * goes on, and at the latest before the loop polls again (a prepare
 * handle).  A write hands the transport what it takes at once
 * (transport.try_write); the rest goes as one write it finishes later
 * (transport.write), and the connection's later output waits for it.
 * How the bytes move is the transport's (transport.h): this file is the
 * same for every one.
 *
 * Delivery (B30): a receiver counts the EVENT frames it reads and, at the
 * end of each loop turn in which it read some, sends the count in a
 * RECEIPT (peers that announced the feature).  A connection that ends
 * with events sent and not confirmed reports them lost (delivery.c).  A
 * failed write does not end a connection at once: it is read to its end
 * first (CONN_DRAINING), so that what the peer sent before it went is
 * still delivered.
 */
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "endpoint.h"
#include "runtime/stack.h"

#define WRITE_IOV 256            /* iovecs per write */
#define CHUNK_SIZE (64 * 1024)   /* a chunk of small frames */
#define COPY_MAX 2048            /* payloads up to this go into chunks */
#define FLUSH_FIRST 1024         /* output written without waiting: at */
#define FLUSH_BYTES (64 * 1024)  /* first, then doubling up to this */
#define FREE_CHUNKS 8            /* chunks an endpoint keeps for reuse */
#define READ_CHUNK (64 * 1024)
#define SHRINK_READS 64
#define TRIM_TYPES 1024          /* a peer's set this large is given back */
#define RECEIPT_BYTES (1 << 20)  /* read since the last receipt: send one */
#define RECEIPT_MS 1             /* else one goes out this late at most */
#define RETRY_NOMEM_MS 10        /* what lacked memory is tried again */

static void conn_end(struct conn *c, int err, lahja_log_level_t level, const char *why);
static void receipt_paid(struct conn *c);
static void conn_fail(struct conn *c, int err, const char *why);
static void lent_unread(struct conn *c, uint64_t seq, size_t len);

/* ----------------------------------------------------------- lifetime */

struct conn *lahja_conn_new(lahja_endpoint_t *ep, const struct conn_transport *t)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->ep = ep;
    c->t = t;
    uv_timer_init(ep->rt->loop, &c->timer);
    c->timer.data = c;
    c->nopen = 2; /* the timer and the transport's part */
    c->flush_at = FLUSH_FIRST;
    c->queue_mark = ep->opts.high_water;
    uint32_t max_frame = (uint32_t)(ep->opts.max_payload + LAHJA_WIRE_EVENT_PREFIX_MAX);
    lahja_wire_rx_init(&c->rx, max_frame, (uint32_t)ep->opts.max_payload, 65535);
    lahja_wire_rx_limits(&c->rx, ep->opts.max_hello, ep->opts.max_peer_types);
    lahja_wire_tx_init(&c->tx);
    lahja_list_init(&c->outq);
    lahja_list_init(&c->inflight);
    lahja_waitq_init(&c->drained);
    lahja_strmap_init(&c->subs);
    lahja_strmap_init(&c->route);
    lahja_list_push_back(&ep->conns, &c->link);
    lahja_route_changed(ep);
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
    if (it->heap != NULL)
        ep->chunks_live--;
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

/*
 * Frees a peer's subscription set.  A large one (up to max_peer_types
 * keys, each its own small allocation) leaves the heap fragmented above
 * what the process will reuse: the C library is asked to give the pages
 * back to the system, so that one peer's announcement does not stay in
 * our memory after it.
 */
static void subs_free(lahja_strmap_t *subs)
{
    size_t n = subs->count;
    lahja_strmap_free(subs);
#ifdef __GLIBC__
    if (n >= TRIM_TYPES)
        malloc_trim(0);
#else
    (void)n;
#endif
}

/* Frees the peer's patterns and the routing decisions made from them. */
static void pats_free(struct conn *c)
{
    for (size_t i = 0; i < c->npats; i++)
        free(c->pats[i]);
    free(c->pats);
    c->pats = NULL;
    c->npats = 0;
    lahja_strmap_free(&c->route);
    lahja_strmap_init(&c->route);
}

void lahja_conn_closed(struct conn *c)
{
    if (--c->nopen > 0)
        return;
    lahja_endpoint_t *ep = c->ep;
    release_list(ep, &c->outq);
    release_list(ep, &c->inflight);
    lahja_wire_rx_free(&c->rx);
    lahja_wire_tx_free(&c->tx);
    subs_free(&c->subs);
    pats_free(c);
    lahja_name_unref(c->peer);
    free(c->rbuf);
    free(c->lentq);
    free(c);
    ep->nconns_open--;
    lahja_ep_maybe_closed(ep);
}

static void on_timer_closed(uv_handle_t *h)
{
    lahja_conn_closed(h->data);
}

/* A loop torn down under a running endpoint (lahja_run returning while
 * it was never stopped) may have closed our handles already: then they
 * are not closed twice, and the connection's memory is left to go with
 * the process. */
static void close_timer(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static const char *conn_name(const struct conn *c)
{
    return c->peer != NULL ? c->peer->s : c->target;
}

/* The lahja_connect call waiting on c is done with it. */
static void op_release(struct conn *c, int err)
{
    struct connect_op *op = c->op;
    if (op == NULL)
        return;
    if (err != 0 && op->error == 0)
        op->error = err;
    op->pending--;
    lahja_waitq_wake(&op->done);
    c->op = NULL;
}

/*
 * The one line a connection's end is logged with.  Events it carried
 * that the peer did not confirm are lost (B30): the line then says how
 * many, and is a WARNING whatever the cause, so that no loss is seen
 * only by those who log INFO.
 */
static void conn_end_log(struct conn *c, int was_up, lahja_log_level_t level, const char *why)
{
    uint64_t lost = was_up ? c->tx_events - c->confirmed : 0;
    char loss[96] = "";
    if (lost > 0) {
        snprintf(loss, sizeof loss, "; %llu of %llu events sent unconfirmed, counted as lost",
                 (unsigned long long)lost, (unsigned long long)c->tx_events);
        if (level < LAHJA_LOG_WARNING)
            level = LAHJA_LOG_WARNING;
    }
    if (c->peer != NULL || c->target[0] != '\0')
        lahja_bus_log(c->ep, level, "connection %s %s: %s%s", c->outbound ? "to" : "from",
                      conn_name(c), why, loss);
    else
        lahja_bus_log(c->ep, level, "incoming connection dropped: %s", why);
}

/*
 * Ends a connection, whatever its state: it leaves every table at once,
 * its waiters are woken, what it sent unconfirmed is reported, and its
 * memory goes when libuv has closed its handles.  A lahja_connect
 * waiting on it fails with `err` (0: it was handed to another
 * connection before).
 */
static void conn_end(struct conn *c, int err, lahja_log_level_t level, const char *why)
{
    if (c->state == CONN_CLOSING)
        return;
    lahja_endpoint_t *ep = c->ep;
    int was_up = c->state == CONN_READY || c->state == CONN_DRAINING;
    c->state = CONN_CLOSING;
    c->win_left = c->win_used = 0; /* the transport's memory goes */
    lahja_route_changed(c->ep);
    receipt_paid(c);
    conn_end_log(c, was_up, level, why);
    lahja_list_remove(&c->link);
    if (c->dirty) {
        lahja_list_remove(&c->dirty_link);
        c->dirty = 0;
    }
    if (c->op != NULL && err != 0 && c->op->detail[0] == '\0') {
        if (c->path[0] != '\0')
            snprintf(c->op->detail, sizeof c->op->detail, "connect to %s at %s: %s",
                     conn_name(c), c->path, why);
        else
            snprintf(c->op->detail, sizeof c->op->detail, "connect to %s: %s", conn_name(c), why);
    }
    op_release(c, err);
    lahja_waitq_detach(&c->drained); /* they look for the other receivers */
    if (was_up) {
        lahja_delivery_conn_ended(ep, c);
        lahja_pending_peer_gone(ep, c);
        lahja_ep_changed(ep, 1);
    }
    lahja_dial_conn_ended(c, was_up, err);
    c->t->close(c);
    close_timer(c);
}

/* conn_end, at the level its end deserves: INFO when routine (a
 * connected peer went, we stop, a client left before its handshake, or
 * a lahja_connect waiting on the connection returns the failure to its
 * caller); DEBUG for a kept peer's failed attempt (dial.c says what
 * follows); else WARNING: what nobody else hears of (bad input, a limit,
 * a refused user, a timeout, a background connect's failure).  Lost
 * events make it a WARNING anyway (conn_end). */
static void conn_fail(struct conn *c, int err, const char *why)
{
    int up = c->state == CONN_READY || c->state == CONN_DRAINING;
    int went = err == LAHJA_EREMOTEDISCONNECTED && (up || !c->outbound);
    int routine = went || err == LAHJA_ELIFECYCLE || (!up && c->op != NULL);
    lahja_log_level_t level = routine ? LAHJA_LOG_INFO : LAHJA_LOG_WARNING;
    if (!up && c->background == CONN_KEPT)
        level = LAHJA_LOG_DEBUG;
    conn_end(c, err, level, why);
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
        if (c->state != CONN_DRAINING && strcmp(conn_name(c), name) == 0)
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

/*
 * Faults in a new chunk's pages with one system call: a queue that grows
 * takes a chunk every 64 KiB, and on a virtual machine a page fault per
 * 4 KiB costs more than the copies into it.  Pages already there cost
 * little; a kernel without MADV_POPULATE_WRITE (before 5.14) is asked
 * once.
 */
static void populate(void *p, size_t len)
{
    static int unable; /* read and written atomically: endpoints on many threads */
    size_t page = lahja_page_size();
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t hi = ((uintptr_t)p + len) & ~(uintptr_t)(page - 1);
    if (!__atomic_load_n(&unable, __ATOMIC_RELAXED) && hi > lo
        && madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
        __atomic_store_n(&unable, 1, __ATOMIC_RELAXED);
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
        /* Beyond the most this endpoint ever held, the C library takes
         * new pages; below it, it reuses freed ones. */
        if (++ep->chunks_live > ep->chunks_peak) {
            ep->chunks_peak = ep->chunks_live;
            populate(it->heap, cap);
        }
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
static void due_in(lahja_endpoint_t *ep, uint64_t ms);

/*
 * Accounts for output just queued; writes it if enough is waiting.  The
 * first write of a burst goes out after FLUSH_FIRST bytes, so that the
 * reader starts early, and each next one waits for twice as much, up to
 * FLUSH_BYTES, so that a long burst is written in large pieces; the end
 * of the loop turn starts the next burst small again.
 */
static void unflushed_more(struct conn *c, size_t bytes)
{
    c->unflushed += bytes;
    mark_dirty(c);
    if (c->unflushed >= c->flush_at) {
        conn_write(c);
        if (c->flush_at < FLUSH_BYTES)
            c->flush_at *= 2;
    }
}

static void queued_more(struct conn *c, size_t bytes)
{
    c->queued += bytes;
    unflushed_more(c, bytes);
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

/* The connection's last chunk if it has `need` bytes free, else NULL. */
static struct out_item *last_chunk(struct conn *c, size_t need)
{
    if (lahja_list_empty(&c->outq))
        return NULL;
    struct out_item *it = lahja_container_of(c->outq.prev, struct out_item, link);
    return it->cap != 0 && it->cap - it->payload_len >= need ? it : NULL;
}

/* Copies a[0..alen) and b[0..blen) into `it`, a chunk with room for
 * them; a new one (not yet queued) is queued first. */
static void copy_into(struct conn *c, struct out_item *it, int fresh, const void *a, size_t alen,
                      const void *b, size_t blen, uint32_t nevents)
{
    size_t need = alen + blen;
    if (fresh) {
        it->nevents = 0;
        lahja_list_push_back(&c->outq, &it->link);
    }
    memcpy(it->heap + it->payload_len, a, alen);
    if (blen > 0)
        memcpy(it->heap + it->payload_len + alen, b, blen);
    it->payload_len += need;
    it->cost += need;
    it->nevents += nevents;
    queued_more(c, need);
}

/* Queues a control frame (copied).  -ENOMEM: nothing queued.  A
 * connection that can no longer write takes nothing. */
static int enqueue_frame(struct conn *c, const uint8_t *frame, size_t len)
{
    if (c->state == CONN_DRAINING || c->state == CONN_CLOSING)
        return 0;
    struct out_item *it = last_chunk(c, len);
    int fresh = it == NULL;
    if (fresh && (it = chunk_get(c->ep, len)) == NULL)
        return -ENOMEM;
    copy_into(c, it, fresh, frame, len, NULL, 0, 0);
    return 0;
}

/* What of ev goes to c: the compressed form if the peer reads it. */
static const uint8_t *wire_payload(const struct conn *c, const lahja_event_t *ev, uint8_t *flags,
                                   size_t *len)
{
    if (ev->lent != NULL && c->t->lendable != NULL && c->t->lendable((struct conn *)c, ev)) {
        /* A reference (lahja_conn_commit writes it) in place of the bytes. */
        *flags |= LAHJA_WIRE_LENT;
        *len = LAHJA_WIRE_LENT_SIZE;
        return NULL;
    }
    if (c->peer_lz4 && ev->lz4_len > 0) {
        *flags |= LAHJA_WIRE_LZ4;
        *len = ev->lz4_len;
        return ev->lz4;
    }
    *len = ev->len;
    return ev->payload;
}

/* Whether ev's frame is copied into a chunk (else it is an item of its
 * own, the payload a second iovec). */
static int copied(const lahja_event_t *ev, size_t plen)
{
    return plen <= COPY_MAX || ev->on_stack; /* a stack event cannot be kept */
}

int lahja_conn_reserve(struct conn *c, const lahja_event_t *ev, uint8_t flags,
                       struct conn_slot *slot)
{
    size_t plen;
    wire_payload(c, ev, &flags, &plen);
    int is_new;
    int rc = lahja_wire_tx_intern_h(&c->tx, ev->type, ev->type_len, ev->hash, &slot->tid, &is_new);
    if (rc != 0)
        return rc;
    slot->is_new = (uint8_t)is_new;
    slot->item = NULL;
    if (copied(ev, plen)) {
        size_t need = (is_new ? LAHJA_WIRE_HEADER_SIZE + 5 + ev->type_len : 0)
                      + LAHJA_WIRE_EVENT_PREFIX_MAX + plen;
        if (last_chunk(c, need) == NULL)
            slot->item = chunk_get(c->ep, need);
        else
            return 0;
    } else {
        slot->item = item_get(c->ep);
    }
    if (slot->item != NULL)
        return 0;
    /* The binding goes with its TYPE frame, or not at all: a binding
     * whose frame never went would make the peer misread the next one. */
    if (is_new)
        lahja_wire_tx_unbind(&c->tx, ev->type, ev->type_len, ev->hash);
    return -ENOMEM;
}

void lahja_conn_cancel(struct conn *c, const lahja_event_t *ev, struct conn_slot *slot)
{
    if (slot->item != NULL)
        item_release(c->ep, slot->item);
    if (slot->is_new)
        lahja_wire_tx_unbind(&c->tx, ev->type, ev->type_len, ev->hash);
}

void lahja_conn_commit(struct conn *c, lahja_event_t *ev, struct conn_slot *slot, uint8_t flags,
                       uint64_t id)
{
    size_t plen;
    const uint8_t *payload = wire_payload(c, ev, &flags, &plen);
    uint8_t ref[LAHJA_WIRE_LENT_SIZE];
    if (flags & LAHJA_WIRE_LENT) {
        c->t->lend(c, ev, ref);
        payload = ref;
        lent_unread(c, c->tx_events + 1, ev->len);
        /* Its frame is small but stands for the payload: it is written
         * at once, as the payload's bytes would be, so that the reader
         * takes it, and confirms it, while the next one is written. */
        c->unflushed += ev->len;
    }
    uint8_t head[sizeof ((struct out_item *)0)->head];
    size_t head_len = 0;
    if (slot->is_new) /* the TYPE frame goes first, with the event */
        head_len = lahja_wire_type_encode(head, slot->tid, ev->type, ev->type_len);
    head_len += lahja_wire_event_prefix(head + head_len, slot->tid, flags, id, (uint32_t)ev->len,
                                        plen);
    c->tx_events++;
    c->tx_payload += ev->len;
    if (copied(ev, plen)) {
        struct out_item *it = slot->item;
        int fresh = it != NULL;
        if (!fresh)
            it = last_chunk(c, head_len + plen);
        copy_into(c, it, fresh, head, head_len, payload, plen, 1);
        return;
    }
    struct out_item *it = slot->item;
    memcpy(it->head, head, head_len);
    it->head_len = head_len;
    it->ev = lahja_event_ref(ev); /* never a copy: stack events are copied above */
    it->payload = payload;
    it->payload_len = plen;
    it->nevents = 1;
    enqueue(c, it);
}

/* What was written in c's window goes to the transport, after whatever
 * it took before. */
static void win_commit(struct conn *c)
{
    if (c->win_used > 0) {
        c->t->commit(c, c->win_used);
        c->win_used = 0;
    }
}

/* A new window, `need` bytes at least, when the transport writes in
 * place and nothing is queued before (receipts to confirm what goes
 * there); NULL otherwise. */
static uint8_t *win_open(struct conn *c, size_t need)
{
    win_commit(c);
    c->win_left = 0;
    if (c->t->reserve == NULL || !lahja_list_empty(&c->outq) || c->writing
        || c->state != CONN_READY || c->write_error != 0 || !c->peer_receipts)
        return NULL;
    size_t room;
    uint8_t *p = c->t->reserve(c, need, &room);
    if (p != NULL) {
        c->win = p;
        c->win_left = room;
    }
    return p;
}

/* Where `need` bytes go in place on c now, or NULL. */
static inline uint8_t *in_place(struct conn *c, size_t need)
{
    if (c->win_left >= need && lahja_list_empty(&c->outq))
        return c->win;
    return win_open(c, need);
}

int lahja_conn_put_small(struct conn *const *v, const uint32_t *tid, size_t n, uint8_t flags,
                         uint64_t id, const void *payload, size_t len)
{
    size_t need = LAHJA_WIRE_PLAIN_PREFIX + (flags != 0 ? 8 : 0) + len;
    struct out_item *into[ROUTE_PEERS];
    uint8_t *at[ROUTE_PEERS]; /* where the transport takes it in place, else NULL */
    uint8_t fresh = 0; /* bit i: into[i] is a new chunk, not yet queued */
    for (size_t i = 0; i < n; i++) {
        into[i] = NULL;
        if ((at[i] = in_place(v[i], need)) != NULL)
            continue;
        if ((into[i] = last_chunk(v[i], need)) != NULL)
            continue;
        if ((into[i] = chunk_get(v[i]->ep, need)) == NULL) {
            while (i-- > 0)
                if (fresh & (1u << i))
                    item_release(v[i]->ep, into[i]);
            return -ENOMEM;
        }
        fresh |= (uint8_t)(1u << i);
    }
    for (size_t i = 0; i < n; i++) {
        struct conn *c = v[i];
        struct out_item *it = into[i];
        uint8_t *p = at[i];
        if (p == NULL) {
            if (fresh & (1u << i)) {
                it->nevents = 0;
                lahja_list_push_back(&c->outq, &it->link);
            }
            p = it->heap + it->payload_len;
        }
        if (flags == 0)
            lahja_wire_plain_prefix(p, tid[i], (uint32_t)len);
        else
            lahja_wire_small_prefix(p, tid[i], flags, id, (uint32_t)len);
        memcpy(p + need - len, payload, len);
        if (at[i] != NULL) {
            if (c->win_left > LAHJA_WRITE_AHEAD)
                lahja_prefetch_write(c->win + LAHJA_WRITE_AHEAD);
            lahja_conn_win_took(c, need, len);
            unflushed_more(c, need);
            continue;
        }
        c->tx_events++;
        c->tx_payload += len;
        it->payload_len += need;
        it->cost += need;
        it->nevents++;
        queued_more(c, need);
    }
    return 0;
}

/* Lent payloads count against the high-water mark until the peer's
 * receipts say it read them: backpressure is the reader's pace, as over
 * a socket, while what it keeps after reading pins only the pool. */
static void lent_unread(struct conn *c, uint64_t seq, size_t len)
{
    if (c->lentq_n == c->lentq_cap) {
        size_t cap = c->lentq_cap ? 2 * c->lentq_cap : 16;
        struct lent_unread *q = malloc(cap * sizeof *q);
        if (q == NULL)
            return; /* not counted: the pool still bounds it */
        for (size_t i = 0; i < c->lentq_n; i++)
            q[i] = c->lentq[(c->lentq_head + i) % c->lentq_cap];
        free(c->lentq);
        c->lentq = q;
        c->lentq_head = 0;
        c->lentq_cap = cap;
    }
    c->lentq[(c->lentq_head + c->lentq_n++) % c->lentq_cap] = (struct lent_unread){ seq, len };
    c->lent_bytes += len;
}

static void lent_read(struct conn *c, uint64_t confirmed)
{
    int any = 0;
    while (c->lentq_n > 0 && c->lentq[c->lentq_head].seq <= confirmed) {
        c->lent_bytes -= c->lentq[c->lentq_head].len;
        c->lentq_head = (c->lentq_head + 1) % c->lentq_cap;
        c->lentq_n--;
        any = 1;
    }
    if (any)
        lahja_waitq_wake(&c->drained);
}

int lahja_conn_unconfirmed(const struct conn *c)
{
    return c->queued > 0 || c->confirmed < c->tx_events;
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

/* An item is written whole.  A peer that sends no receipts has only
 * this to confirm: the events went to its socket. */
static void item_written(struct conn *c, struct out_item *it)
{
    c->queued -= it->cost;
    if (!c->peer_receipts && it->nevents > 0) {
        c->confirmed += it->nevents;
        lahja_delivery_progress(c->ep);
    }
    item_release(c->ep, it);
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
        item_written(c, it);
        released = 1;
    }
    if (released)
        lahja_waitq_wake(&c->drained);
}

static void conn_drain(struct conn *c, int uverr);

void lahja_conn_written(struct conn *c, int status)
{
    c->writing = 0;
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&c->inflight)) != NULL) {
        struct out_item *it = lahja_container_of(l, struct out_item, link);
        if (status < 0) {
            c->queued -= it->cost;
            item_release(c->ep, it);
        } else {
            item_written(c, it);
        }
    }
    if (status < 0) {
        if (status != UV_ECANCELED)
            conn_drain(c, status);
        return;
    }
    lahja_waitq_wake(&c->drained);
    conn_write_or_fail(c);
}

/* What the socket did not take goes to libuv, which writes it when the
 * socket has room; the connection's next write waits for it to be
 * written (lahja_conn_written). */
static int write_async(struct conn *c)
{
    uv_buf_t bufs[WRITE_IOV];
    size_t items, bytes;
    unsigned n = gather(c, bufs, WRITE_IOV, &items, &bytes);
    for (size_t i = 0; i < items; i++)
        lahja_list_push_back(&c->inflight, lahja_list_pop_front(&c->outq));
    c->head_off = 0;
    c->writing = 1;
    int rc = c->t->write(c, bufs, n);
    c->tx_bytes += rc == 0 ? bytes : 0;
    if (rc != 0)
        c->writing = 0;
    return rc;
}

/* Writes what the connection has queued, as far as the socket takes it. */
static void conn_write(struct conn *c)
{
    if (c->writing || c->state == CONN_CLOSING || c->state == CONN_DRAINING
        || c->write_error != 0)
        return;
    c->unflushed = 0;
    if (c->t->publish != NULL) {
        /* What was written in place comes first; the window goes on only
         * while nothing is queued after it. */
        win_commit(c);
        c->t->publish(c);
        if (!lahja_list_empty(&c->outq))
            c->win_left = 0;
    }
    while (!lahja_list_empty(&c->outq)) {
        uv_buf_t bufs[WRITE_IOV];
        size_t items, bytes;
        unsigned n = gather(c, bufs, WRITE_IOV, &items, &bytes);
        int w = c->t->try_write(c, bufs, n);
        if (w < 0 && w != UV_EAGAIN) {
            /* Ended by conn_write_or_fail, outside whatever call queued it. */
            c->write_error = w;
            mark_dirty(c);
            return;
        }
        size_t done = w > 0 ? (size_t)w : 0;
        c->tx_bytes += done;
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

/*
 * A write failed: the peer has closed its end (EPIPE, ECONNRESET), but
 * what it sent before may still wait in our socket.  The connection stops
 * carrying anything, gives back its output (what was not written counts
 * as unconfirmed), and is read to its end before it is closed; a peer
 * that neither sends nor closes is dropped after frame_timeout_ms.
 */
static void on_drain_timeout(uv_timer_t *t)
{
    conn_fail(t->data, LAHJA_EREMOTEDISCONNECTED, "writing failed and the peer did not close");
}

static void conn_drain(struct conn *c, int uverr)
{
    lahja_endpoint_t *ep = c->ep;
    c->write_error = uverr;
    if (c->state == CONN_HANDSHAKE || c->state == CONN_CONFIRMING) {
        /* The peer may be closing with a reason (a CLOSE frame we have
         * not read yet): what it sent is read on, until its EOF or the
         * handshake timer.  Nothing but our handshake was queued. */
        if (c->dirty) {
            lahja_list_remove(&c->dirty_link);
            c->dirty = 0;
        }
        return;
    }
    if (c->state != CONN_READY) {
        conn_fail(c, LAHJA_EREMOTEDISCONNECTED, uv_strerror(uverr));
        return;
    }
    lahja_bus_log(ep, LAHJA_LOG_DEBUG, "connection %s %s: %s; reading what it sent",
                  c->outbound ? "to" : "from", conn_name(c), uv_strerror(uverr));
    c->state = CONN_DRAINING;
    lahja_route_changed(c->ep);
    receipt_paid(c); /* it can write none */
    if (c->dirty) {
        lahja_list_remove(&c->dirty_link);
        c->dirty = 0;
    }
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&c->outq)) != NULL) {
        struct out_item *it = lahja_container_of(l, struct out_item, link);
        c->queued -= it->cost;
        item_release(ep, it);
    }
    c->head_off = 0;
    lahja_waitq_wake(&c->drained);
    lahja_ep_changed(ep, 1);
    uv_timer_start(&c->timer, on_drain_timeout, ep->opts.frame_timeout_ms, 0);
}

/* conn_write, from a callback of the loop's own, where a connection
 * whose write failed can be dealt with at once. */
static void conn_write_or_fail(struct conn *c)
{
    if (c->state == CONN_DRAINING || c->state == CONN_CLOSING)
        return;
    conn_write(c);
    if (c->write_error != 0)
        conn_drain(c, c->write_error);
}

/* Our subscriptions are due on connections past the peer's HELLO. */
static int subs_wanted(const struct conn *c)
{
    return c->state == CONN_READY || c->state == CONN_CONFIRMING;
}

void lahja_ep_send_subs(lahja_endpoint_t *ep)
{
    if (!ep->subs_dirty && !ep->subs_retry)
        return;
    int all = ep->subs_dirty;
    ep->subs_dirty = ep->subs_retry = 0;
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (subs_wanted(c) && (all || c->subs_due))
            lahja_conn_send_subs(c);
    }
}

/*
 * Confirms the events read since the last receipt (B30).  A receipt
 * rides along whenever the connection writes anyway; on a connection
 * that only reads, one goes out once RECEIPT_BYTES have been read since
 * the last, or RECEIPT_MS after the read, whichever comes first: a
 * receipt per read would cost the reader a write and the writer a read
 * for every batch, a tenth of a one-way stream's rate.
 */
/* c owes no receipt any more (sent, or it can send none). */
static void receipt_paid(struct conn *c)
{
    if (c->receipt_owed) {
        c->receipt_owed = 0;
        c->ep->receipts_owed--;
    }
}

static void send_receipt(struct conn *c)
{
    if (!c->peer_receipts || c->rx_events == c->rx_acked || c->state != CONN_READY)
        return;
    uint8_t frame[LAHJA_WIRE_RECEIPT_SIZE];
    size_t n = lahja_wire_receipt_encode(frame, c->rx_events);
    if (enqueue_frame(c, frame, n) == 0) {
        c->rx_acked = c->rx_events;
        c->receipt_at = c->rx_total + c->rx_lent;
        receipt_paid(c);
    } else {
        due_in(c->ep, RETRY_NOMEM_MS);
    }
}

/* Later work (ep->due): receipts that are due, and a subscription
 * update or a receipt that could not be queued for lack of memory. */
static void on_due(uv_timer_t *t)
{
    lahja_endpoint_t *ep = t->data;
    lahja_conn_send_receipts(ep);
    if (ep->subs_retry)
        lahja_ep_flush(ep);
}

static void due_in(lahja_endpoint_t *ep, uint64_t ms)
{
    if (!ep->flusher_closed && !uv_is_active((uv_handle_t *)&ep->due))
        uv_timer_start(&ep->due, on_due, ms, 0);
}

void lahja_conn_send_receipts(lahja_endpoint_t *ep)
{
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->rx_events != c->rx_acked) {
            send_receipt(c);
            conn_write_or_fail(c);
        }
    }
}

/* Events were read on c: a receipt is due, now or soon. */
static void receipt_due(struct conn *c)
{
    lahja_endpoint_t *ep = c->ep;
    if (!c->receipt_owed) {
        c->receipt_owed = 1;
        ep->receipts_owed++;
    }
    if (c->rx_total + c->rx_lent - c->receipt_at >= RECEIPT_BYTES)
        mark_dirty(c);
    else
        due_in(ep, RECEIPT_MS);
}

void lahja_ep_flush(lahja_endpoint_t *ep)
{
    lahja_ep_send_subs(ep);
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&ep->dirty)) != NULL) {
        struct conn *c = lahja_container_of(l, struct conn, dirty_link);
        c->dirty = 0;
        c->flush_at = FLUSH_FIRST;
        send_receipt(c);
        if (c->dirty) { /* the receipt marked it again */
            lahja_list_remove(&c->dirty_link);
            c->dirty = 0;
        }
        conn_write_or_fail(c);
    }
    uv_prepare_stop(&ep->flusher);
    /* Every receipt rode along: no timer left armed, whose timeout would
     * make each sleep of the loop program a timer in the kernel (a few
     * microseconds per round trip on a virtual machine). */
    if (ep->receipts_owed == 0 && !ep->subs_retry && !ep->flusher_closed)
        uv_timer_stop(&ep->due);
}

/* ------------------------------------------------------- subscriptions */

/* Our subscription set as SUBS entries, in ep->types' order. */
struct subs_build {
    lahja_wire_entry_t *es;
    size_t n;
    const char **names;          /* every entry's origins, one array */
    size_t *lens;
};

static void subs_build_free(struct subs_build *b)
{
    free(b->es);
    free(b->names);
    free(b->lens);
}

static int subs_build(lahja_endpoint_t *ep, struct subs_build *b)
{
    size_t n = 0, norigins = 0;
    for (size_t i = 0; i < ep->types.nslots; i++) {
        lahja_strmap_slot_t *s = &ep->types.slots[i];
        if (lahja_strmap_live(s) && ((struct type_entry *)s->value)->n > 0) {
            n++;
            norigins += lahja_type_origins_max(s->value);
        }
    }
    b->n = 0;
    b->es = calloc(n ? n : 1, sizeof *b->es);
    b->names = malloc((norigins ? norigins : 1) * sizeof *b->names);
    b->lens = malloc((norigins ? norigins : 1) * sizeof *b->lens);
    if (b->es == NULL || b->names == NULL || b->lens == NULL) {
        subs_build_free(b);
        return -ENOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < ep->types.nslots; i++) {
        lahja_strmap_slot_t *s = &ep->types.slots[i];
        struct type_entry *te = s->value;
        if (!lahja_strmap_live(s) || te->n == 0)
            continue;
        lahja_wire_entry_t *e = &b->es[b->n++];
        e->type = s->key;
        e->len = s->len;
        e->flags = te->is_pattern ? LAHJA_WIRE_ENTRY_PATTERN : 0;
        e->origins = b->names + o;
        e->origin_lens = b->lens + o;
        e->norigins = lahja_type_origins(te, b->names + o, norigins - o);
        for (size_t k = 0; k < e->norigins; k++)
            b->lens[o + k] = strlen(b->names[o + k]);
        if (e->norigins > 0)
            e->flags |= LAHJA_WIRE_ENTRY_ORIGINS;
        o += e->norigins;
    }
    return 0;
}

/* Whether an entry limited to origins names `name`. */
static int entry_names(const lahja_wire_entry_t *e, const char *name)
{
    for (size_t k = 0; k < e->norigins; k++)
        if (strcmp(e->origins[k], name) == 0)
            return 1;
    return 0;
}

/*
 * A plain SUBS for a peer without FEAT_PATTERNS: what it can act on.
 * Patterns are left out (it would take them for exact types: it sends
 * nothing that only a pattern matches); entries limited to origins go
 * as exact types if the peer is one of them, else not at all.
 */
static size_t subs_encode_plain(struct conn *c, const struct subs_build *b, uint8_t **frame)
{
    const char **types = malloc((b->n ? b->n : 1) * sizeof *types);
    size_t *lens = malloc((b->n ? b->n : 1) * sizeof *lens);
    size_t k = 0, total = 0, len = 0;
    *frame = NULL;
    if (types != NULL && lens != NULL) {
        for (size_t i = 0; i < b->n; i++) {
            const lahja_wire_entry_t *e = &b->es[i];
            if ((e->flags & LAHJA_WIRE_ENTRY_PATTERN)
                || (e->norigins > 0 && !entry_names(e, c->peer->s)))
                continue;
            types[k] = e->type;
            lens[k++] = e->len;
            total += e->len;
        }
        size_t size = lahja_wire_subs_size(k, total);
        if ((*frame = malloc(size)) != NULL)
            len = lahja_wire_subs_encode(*frame, size, c->subs_seq + 1, types, lens, k);
    }
    free(types);
    free(lens);
    return len;
}

static size_t subs_encode_entries(struct conn *c, const struct subs_build *b, uint8_t **frame)
{
    size_t size = lahja_wire_subs_entries_encode(NULL, 0, c->subs_seq + 1, b->es, b->n);
    if (size == 0 || (*frame = malloc(size)) == NULL)
        return 0;
    return lahja_wire_subs_entries_encode(*frame, size, c->subs_seq + 1, b->es, b->n);
}

/* Queues our subscription set for c.  Lacking memory, it is retried
 * RETRY_NOMEM_MS later: the peer keeps the previous set meanwhile. */
void lahja_conn_send_subs(struct conn *c)
{
    lahja_endpoint_t *ep = c->ep;
    struct subs_build b;
    uint8_t *frame = NULL;
    int rc = subs_build(ep, &b);
    if (rc == 0) {
        size_t len = c->peer_patterns ? subs_encode_entries(c, &b, &frame)
                                      : subs_encode_plain(c, &b, &frame);
        rc = len == 0 ? -ENOMEM : enqueue_frame(c, frame, len);
        subs_build_free(&b);
    }
    free(frame);
    if (rc == 0) {
        c->subs_seq++;
        c->subs_due = 0;
    } else {
        c->subs_due = 1;
        ep->subs_retry = 1;
        due_in(ep, RETRY_NOMEM_MS);
    }
}

/* c's lahja_connect call has what it waited for. */
static void op_done(struct conn *c)
{
    op_release(c, 0);
}

/* Hands the lahja_connect call waiting on `from` to `to`, the
 * connection that takes its place. */
static void take_op(struct conn *to, struct conn *from)
{
    if (from->op == NULL || to->op != NULL)
        return;
    to->op = from->op;
    from->op = NULL;
    if (to->got_subs)
        op_done(to);
}

static int conn_ready(struct conn *c);

/* Whether a SUBS entry holds for events from us: it names no origins,
 * or our name among them. */
static int entry_for_us(const lahja_endpoint_t *ep, lahja_wire_entry_t e)
{
    if (e.norigins == 0)
        return 1;
    const char *name;
    size_t len;
    while (lahja_wire_entry_origin(&e, &name, &len))
        if (len == ep->name->len && memcmp(name, ep->name->s, len) == 0)
            return 1;
    return 0;
}

/*
 * Replaces the peer's subscription set with a SUBS frame's (B19, B34).
 * Only what holds for our events is kept: an entry limited to other
 * origins is as if it was not there.
 */
static __attribute__((noinline)) int peer_subs(struct conn *c, lahja_wire_subs_t *it)
{
    if (c->state == CONN_CONFIRMING) { /* the peer keeps this connection */
        int rc = conn_ready(c);
        if (rc != 0)
            return rc;
    }
    lahja_strmap_t fresh;
    lahja_strmap_init(&fresh);
    char **pats = calloc(it->count ? it->count : 1, sizeof *pats);
    size_t npats = 0;
    lahja_wire_entry_t e;
    int is_new, rc = pats != NULL ? 0 : -ENOMEM;
    while (rc == 0 && lahja_wire_subs_entry(it, &e)) {
        if (!entry_for_us(c->ep, e))
            continue;
        if (!(e.flags & LAHJA_WIRE_ENTRY_PATTERN)) {
            if (lahja_strmap_insert(&fresh, e.type, e.len, &is_new) == NULL)
                rc = -ENOMEM;
        } else if ((pats[npats] = strndup(e.type, e.len)) != NULL) {
            npats++;
        } else {
            rc = -ENOMEM;
        }
    }
    if (rc != 0) {
        lahja_strmap_free(&fresh);
        for (size_t i = 0; i < npats; i++)
            free(pats[i]);
        free(pats);
        return rc;
    }
    subs_free(&c->subs);
    pats_free(c);
    c->subs = fresh;
    if (npats > 0) {
        c->pats = pats;
        c->npats = npats;
    } else {
        free(pats);
    }
    if (!c->got_subs) {
        /* The peer sends its subscriptions right after its HELLO: a
         * connect returns once they are known, so that a broadcast
         * right after it reaches the peer's subscribers. */
        c->got_subs = 1;
        op_done(c);
    }
    uint8_t ack[12];
    size_t n = lahja_wire_ack_encode(ack, it->seq);
    rc = enqueue_frame(c, ack, n);
    lahja_ep_changed(c->ep, 0);
    return rc;
}

/* --------------------------------------------------------- connect calls */

/* A lahja_connect call whose connection the peer declined for the one it
 * opened to us at the same moment: it waits for that one. */
struct parked {
    lahja_link_t link;
    struct connect_op *op;
    char name[LAHJA_NAME_MAX + 1];
};

/* c, outbound, is declined by the peer for its own connection to us. */
static int park_op(struct conn *c)
{
    if (c->op == NULL)
        return 0;
    lahja_link_t *l;
    lahja_list_foreach(l, &c->ep->conns) {
        struct conn *o = lahja_container_of(l, struct conn, link);
        if (o != c && o->state == CONN_READY && strcmp(conn_name(o), conn_name(c)) == 0) {
            take_op(o, c); /* its HELLO came first */
            return 0;
        }
    }
    struct parked *p = malloc(sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    p->op = c->op;
    memcpy(p->name, c->target, sizeof p->name);
    lahja_list_push_back(&c->ep->parked, &p->link);
    c->op = NULL;
    return 0;
}

/* An inbound connection from `c->peer` is accepted: a call parked for
 * it waits on it now. */
static void unpark_op(struct conn *c)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &c->ep->parked) {
        struct parked *p = lahja_container_of(l, struct parked, link);
        if (c->op == NULL && strcmp(p->name, c->peer->s) == 0) {
            lahja_list_remove(&p->link);
            c->op = p->op;
            free(p);
            return;
        }
    }
}

void lahja_conn_forget_op(lahja_endpoint_t *ep, struct connect_op *op)
{
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &ep->parked) {
        struct parked *p = lahja_container_of(l, struct parked, link);
        if (p->op == op) {
            lahja_list_remove(&p->link);
            free(p);
        }
    }
    lahja_list_foreach_safe(l, tmp, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->op != op)
            continue;
        char why[160];
        snprintf(why, sizeof why, "%s: %s", lahja_strerror(op->error), lahja_conn_seen(c));
        lahja_conn_close(c, op->error, why);
    }
}

/* Say why it took so long: no socket to connect to, or no answer from
 * the one there. */
const char *lahja_conn_seen(const struct conn *c)
{
    return c->state != CONN_CONNECTING   ? "connected, but no handshake came"
           : c->connect_err == ENOENT       ? "no socket file there: nobody serves that name"
           : c->connect_err == ECONNREFUSED ? "a socket file, but nobody listening (left by a dead "
                                              "endpoint?)"
                                            : "its listener's backlog stayed full";
}

void lahja_conn_fail_parked(lahja_endpoint_t *ep, int err)
{
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&ep->parked)) != NULL) {
        struct parked *p = lahja_container_of(l, struct parked, link);
        if (p->op->error == 0)
            p->op->error = err;
        p->op->pending--;
        lahja_waitq_wake(&p->op->done);
        free(p);
    }
}

/* ------------------------------------------------------------ handshake */

static int send_hello(struct conn *c)
{
    lahja_endpoint_t *ep = c->ep;
    struct out_item *it = item_get(ep);
    if (it == NULL)
        return -ENOMEM;
    uint32_t features = LAHJA_WIRE_FEAT_RECEIPTS | LAHJA_WIRE_FEAT_PATTERNS | c->t->features;
    if (ep->opts.compress_threshold != SIZE_MAX)
        features |= LAHJA_WIRE_FEAT_LZ4;
    it->head_len = lahja_wire_hello_encode(it->head, ep->name->s, ep->name->len, features,
                                           c->rx.max_frame);
    it->payload = NULL;
    it->payload_len = 0;
    it->nevents = 0;
    enqueue(c, it);
    return 0;
}

int lahja_conn_send_frame(struct conn *c, const uint8_t *frame, size_t len)
{
    int rc = enqueue_frame(c, frame, len);
    if (rc == 0)
        conn_write(c);
    return rc;
}

/* Tells the peer why we close (peers that read CLOSE), before closing. */
static void send_close(struct conn *c, uint32_t reason)
{
    if (!c->peer_receipts)
        return;
    uint8_t frame[LAHJA_WIRE_CLOSE_SIZE];
    size_t n = lahja_wire_close_encode(frame, reason);
    if (enqueue_frame(c, frame, n) == 0)
        conn_write(c);
}

static int conn_ready(struct conn *c)
{
    lahja_endpoint_t *ep = c->ep;
    if ((c->totals = lahja_delivery_totals(ep, c->peer)) == NULL)
        return -ENOMEM; /* before it carries anything */
    c->state = CONN_READY;
    lahja_route_changed(c->ep);
    uv_timer_stop(&c->timer);
    lahja_bus_log(ep, LAHJA_LOG_DEBUG, "connected %s %s", c->outbound ? "to" : "from",
                  c->peer->s);
    lahja_dial_conn_ready(c);
    lahja_ep_changed(ep, 1);
    return 0;
}

/* Another connection than c to endpoint `name`, not on its way out. */
static struct conn *other_conn(struct conn *c, const char *name)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &c->ep->conns) {
        struct conn *o = lahja_container_of(l, struct conn, link);
        if (o != c && o->state != CONN_DRAINING && strcmp(conn_name(o), name) == 0)
            return o;
    }
    return NULL;
}


static void conn_read_to_end(struct conn *c);
static int hung_up(struct conn *c);

/*
 * Two connections between the same two endpoints (B4, B30).  When both
 * connect to each other at the same moment, each holds an outbound and
 * an inbound connection to the other.  The one opened by the endpoint
 * whose name sorts first is kept on both sides, and the choice is made
 * when the inbound one's HELLO is read, before either carries an event:
 * an outbound connection carries events only once the peer's first SUBS
 * says the peer keeps it (CONN_CONFIRMING until then).  So the accepting
 * side either refuses the peer's connection, with a CLOSE that tells the
 * peer to wait for ours, or drops its own outbound one, which the peer
 * cannot have confirmed.  Nothing was queued on the one that goes.
 *
 * Another process under a name already connected replaces the first
 * only if that one is gone (its socket hung up, its EOF not read yet):
 * the first is read to its end and closed, and no event it sent is lost.
 *
 * Returns 0 if c goes on, or an error that refuses it; c may also be
 * ended here (CONN_CLOSING), quietly.
 */
static int settle(struct conn *c, struct conn *o, const char *peer)
{
    lahja_endpoint_t *ep = c->ep;
    if (o->state == CONN_CONNECTING) {
        /* No socket yet: the peer's connection takes its place. */
        take_op(c, o);
        conn_end(o, 0, LAHJA_LOG_DEBUG, "superseded by the peer's connection");
        return 0;
    }
    if (o->state == CONN_READY && o->outbound && !c->outbound && o->peer_pid == c->peer_pid) {
        /* The peer's side of a simultaneous connect whose HELLO was on
         * its way when the peer kept ours (made READY by its SUBS): the
         * peer drops it itself, and nothing was sent on it.  Routine in
         * a mesh that forms by discovery (join.c). */
        send_close(c, LAHJA_WIRE_CLOSE_REFUSED);
        conn_end(c, LAHJA_ECONNREJECTED, LAHJA_LOG_DEBUG,
                 "simultaneous connections: ours was kept already");
        return 0;
    }
    if (o->state == CONN_READY || c->outbound || !o->outbound) {
        if (o->peer_pid == c->peer_pid || !hung_up(o)) {
            /* Connected already, or another process under that name. */
            send_close(c, LAHJA_WIRE_CLOSE_REFUSED);
            return LAHJA_ECONNREJECTED;
        }
        conn_read_to_end(o);
        conn_fail(o, LAHJA_EREMOTEDISCONNECTED, "closed by peer (a new process took its name)");
        return 0;
    }
    /* o: our outbound connection, not yet confirmed; c: the peer's. */
    if (strcmp(ep->name->s, peer) < 0) {
        send_close(c, LAHJA_WIRE_CLOSE_DUPLICATE);
        conn_end(c, LAHJA_ECONNREJECTED, LAHJA_LOG_DEBUG,
                 "simultaneous connections: ours is kept");
        return 0;
    }
    take_op(c, o);
    conn_end(o, 0, LAHJA_LOG_DEBUG, "simultaneous connections: the peer's is kept");
    return 0;
}

static int on_hello(struct conn *c, const lahja_wire_hello_t *h)
{
    lahja_endpoint_t *ep = c->ep;
    if (strcmp(h->name, ep->name->s) == 0)
        return LAHJA_ECONNREJECTED; /* ourselves, under our own name */
    if (c->outbound && strcmp(h->name, c->target) != 0)
        return LAHJA_ECONNREJECTED;
    c->peer_lz4 = (h->features & LAHJA_WIRE_FEAT_LZ4) && ep->opts.compress_threshold != SIZE_MAX;
    c->peer_receipts = (h->features & LAHJA_WIRE_FEAT_RECEIPTS) != 0;
    c->peer_patterns = (h->features & LAHJA_WIRE_FEAT_PATTERNS) != 0;
    c->peer_max = h->max_frame;
    c->peer_features = h->features;
    /* Through memory, compressing costs more than it saves. */
    if (h->features & c->t->features & LAHJA_WIRE_FEAT_SHM)
        c->peer_lz4 = 0;
    struct conn *o = other_conn(c, h->name);
    if (o != NULL) {
        int rc = settle(c, o, h->name);
        if (rc != 0 || c->state == CONN_CLOSING)
            return rc;
    }
    /* Named only once accepted: a refused one is logged as unnamed. */
    c->peer = lahja_name_new(h->name, h->name_len);
    if (c->peer == NULL)
        return -ENOMEM;
    if (c->outbound) {
        c->state = CONN_CONFIRMING;
        lahja_route_changed(c->ep);
    } else {
        int rc = conn_ready(c);
        if (rc != 0)
            return rc;
        unpark_op(c);
    }
    /* Our subscriptions go out now, not at the end of the loop turn: the
     * peer's lahja_connect waits for them, and a task woken by this
     * connection may keep the loop busy before the turn ends. */
    lahja_conn_send_subs(c);
    conn_write(c);
    return 0;
}

/* The peer closes this connection and says why. */
static int on_close(struct conn *c, uint32_t reason)
{
    if (reason == LAHJA_WIRE_CLOSE_DUPLICATE && c->outbound && c->state == CONN_CONFIRMING) {
        int rc = park_op(c);
        if (rc != 0)
            return rc;
        conn_end(c, 0, LAHJA_LOG_DEBUG, "simultaneous connections: the peer's is kept");
        return 0;
    }
    return reason == LAHJA_WIRE_CLOSE_REFUSED ? LAHJA_ECONNREJECTED : -EPROTO;
}

/* --------------------------------------------------------------- reading */

/* Whether the peer of c has closed its end: its process is gone. */
static int hung_up(struct conn *c)
{
    return (c->t->poll(c) & CONN_POLL_HUP) != 0;
}

static int readable(struct conn *c)
{
    return (c->t->poll(c) & CONN_POLL_IN) != 0;
}

/* The consumers of c's event ev, found once per run of one type. */
static struct type_entry *rx_entry(struct conn *c, const lahja_wire_event_t *w)
{
    lahja_endpoint_t *ep = c->ep;
    if (w->type != c->rx_type || c->rx_gen != ep->types_gen) {
        c->rx_type = w->type;
        c->rx_gen = ep->types_gen;
        c->rx_te = lahja_type_find(ep, w->type, w->type_len,
                                   lahja_strmap_hash(w->type, w->type_len));
    }
    return c->rx_te;
}

/* An event whose payload the peer lent us: a heap event pointing at it
 * in place, so that whoever keeps the event keeps those bytes (not a
 * copy); they go back to the peer once the last reference goes. */
static int on_lent_event(struct conn *c, const lahja_wire_event_t *w)
{
    lahja_endpoint_t *ep = c->ep;
    if (c->t->lent_in == NULL)
        return -EPROTO;
    const uint8_t *payload;
    size_t len;
    lahja_free_fn free_fn;
    void *user;
    int rc = c->t->lent_in(c, w->payload, &payload, &len, &free_fn, &user);
    if (rc != 0)
        return rc;
    lahja_event_t *ev;
    rc = lahja_event_make(w->type, w->type_len, NULL, NULL, 0, &ev);
    if (rc != 0) {
        free_fn((void *)payload, user);
        return rc;
    }
    ev->payload = payload;
    ev->len = len;
    ev->free_fn = free_fn;
    ev->free_user = user;
    ev->bound = 1;
    ev->is_request = (w->flags & LAHJA_WIRE_REQUEST) != 0;
    ev->id = w->id;
    ev->origin = lahja_name_ref(c->peer);
    c->rx_events++;
    c->rx_payload += len;
    c->rx_lent += len; /* read, for the next receipt, as if it came whole */
    if (w->flags & LAHJA_WIRE_RESPONSE)
        lahja_deliver_response(ep, ev);
    else
        lahja_dispatch_entry(ep, rx_entry(c, w), ev);
    lahja_event_unref(ev);
    return 0;
}

static int on_event(struct conn *c, const lahja_wire_event_t *w)
{
    lahja_endpoint_t *ep = c->ep;
    if (c->state != CONN_READY && c->state != CONN_DRAINING)
        return -EPROTO; /* before the peer's SUBS */
    const uint8_t *payload = w->payload;
    if (w->flags & LAHJA_WIRE_LENT)
        return on_lent_event(c, w);
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
    c->rx_events++;
    c->rx_payload += w->raw_len;
    if (w->flags & LAHJA_WIRE_REQUEST)
        ep->request_ns = uv_hrtime(); /* shm.c watches for the next one a while */
    lahja_event_t ev;
    lahja_event_blank(&ev);
    ev.refs = 1;
    ev.bound = 1;
    ev.borrowed = 1;
    ev.is_request = (w->flags & LAHJA_WIRE_REQUEST) != 0;
    ev.id = w->id;
    ev.origin = c->peer;
    ev.type = w->type;
    ev.type_len = w->type_len;
    ev.payload = payload;
    ev.len = w->raw_len;
    if (w->flags & LAHJA_WIRE_RESPONSE) {
        lahja_deliver_response(ep, &ev);
        return 0;
    }
    /* A run of events of one type looks its consumers up once. */
    lahja_dispatch_entry(ep, rx_entry(c, w), &ev);
    return 0;
}

/* The peer confirms having read `count` events (B30). */
static int on_receipt(struct conn *c, uint64_t count)
{
    if (!c->peer_receipts || count < c->confirmed || count > c->tx_events)
        return -EPROTO;
    if (count > c->confirmed) {
        c->confirmed = count;
        lent_read(c, count);
        lahja_delivery_progress(c->ep);
    }
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
    case LAHJA_WIRE_RECEIPT:
        return on_receipt(c, m->u.receipt);
    case LAHJA_WIRE_CLOSE:
        return on_close(c, m->u.close_reason);
    case LAHJA_WIRE_RELEASE:
        if (c->t->released == NULL)
            return -EPROTO;
        for (size_t i = 0; i < m->u.release.n; i++)
            if (c->t->released(c, lahja_wire_release_at(m->u.release.body, i)) != 0)
                return -EPROTO;
        return 0;
    default:
        return 0; /* TYPE: kept by the rx state */
    }
}

/*
 * The read buffer grows to what the frame being read needs (its size is
 * known from its header, already checked against the largest frame), in
 * steps of READ_CHUNK, and never beyond that frame plus one step: a peer
 * cannot make us allocate more than the configured maximum (B26).  Before
 * the handshake the step and the frame are max_hello: an incomplete
 * connection holds a few KiB (B31).  After a large frame it shrinks back.
 */
static int read_room(struct conn *c)
{
    int hello = c->rx.hello_done;
    size_t step = hello ? READ_CHUNK : (size_t)c->rx.max_hello + LAHJA_WIRE_HEADER_SIZE;
    size_t want = c->rlen + step;
    if (c->need > c->rlen && c->need - c->rlen > step)
        want = c->need;
    if (want <= c->rcap)
        return 0;
    size_t cap = c->rcap ? c->rcap : step;
    while (cap < want)
        cap *= 2;
    size_t limit = (size_t)(hello ? c->rx.max_frame : c->rx.max_hello) + LAHJA_WIRE_HEADER_SIZE
                   + step;
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

/*
 * A frame that has started must finish within frame_timeout_ms (B31), or
 * a peer could hold a connection and its buffer forever with half a
 * frame.  The clock restarts each time READ_CHUNK more of it has come, so
 * a large frame that keeps arriving is never cut.  The timer runs only
 * while a frame is open, and is not re-armed per read.
 */
static void on_frame_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (!c->frame_open)
        return;
    uint64_t limit = c->ep->opts.frame_timeout_ms;
    uint64_t elapsed = uv_now(t->loop) - c->frame_since;
    if (elapsed < limit || readable(c)) {
        /* Bytes waiting: it is this loop that was busy, not the peer. */
        uv_timer_start(t, on_frame_timer, elapsed < limit ? limit - elapsed : limit, 0);
        return;
    }
    char why[96];
    snprintf(why, sizeof why, "a frame not completed in %u ms", (unsigned)limit);
    conn_fail(c, -ETIMEDOUT, why);
}

static void frame_watch(struct conn *c)
{
    if (c->rlen == 0) {
        c->frame_open = 0;
        return;
    }
    if (!c->frame_open || c->frame_at != c->rx_total || c->rlen >= c->frame_seen + READ_CHUNK) {
        c->frame_open = 1;
        c->frame_at = c->rx_total;
        c->frame_since = uv_now(c->ep->rt->loop);
        c->frame_seen = c->rlen;
    }
    if (!uv_is_active((uv_handle_t *)&c->timer))
        uv_timer_start(&c->timer, on_frame_timer, c->ep->opts.frame_timeout_ms, 0);
}

/* Parses and handles every whole frame in the read buffer. */
static void conn_parse(struct conn *c)
{
    size_t off = 0;
    while (c->state != CONN_CLOSING) {
        lahja_wire_msg_t m;
        size_t need = 0;
        /* Most frames are small events: read inline, the rest below. */
        size_t small = lahja_wire_rx_small(&c->rx, c->rbuf + off, c->rlen - off, &m.u.event);
        if (small > 0) {
            off += small;
            int rc = on_event(c, &m.u.event);
            if (rc != 0) {
                conn_fail(c, rc, lahja_strerror(rc));
                return;
            }
            continue;
        }
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
    if (c->state == CONN_CLOSING)
        return;
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
        c->rx_total += off;
        read_shrink(c);
    }
    if (c->state == CONN_READY) {
        if (c->rx_events != c->rx_acked && c->peer_receipts)
            receipt_due(c);
        frame_watch(c);
    }
}

void lahja_conn_room(struct conn *c, uv_buf_t *buf)
{
    if (read_room(c) != 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

/* The socket ended (EOF) or failed: everything before it was read. */
static void conn_eof(struct conn *c, ssize_t nread)
{
    const char *why = nread != UV_EOF ? uv_strerror((int)nread)
                      : c->rlen > 0   ? "closed by peer in the middle of a frame"
                                      : "closed by peer";
    conn_fail(c, LAHJA_EREMOTEDISCONNECTED, why);
}

void lahja_conn_read(struct conn *c, ssize_t nread)
{
    if (nread < 0) {
        conn_eof(c, nread);
        return;
    }
    c->rlen += (size_t)nread;
    lahja_ep_busy_poll(c->ep);
    conn_parse(c);
}

/* How far ahead of its reading lahja_conn_read_small asks for lines. */
#define RX_AHEAD 2048

size_t lahja_conn_read_small(struct conn *c, const uint8_t *buf, size_t len)
{
    if (c->rlen != 0 || c->state != CONN_READY)
        return 0;
    lahja_endpoint_t *ep = c->ep;
    size_t off = 0;
    lahja_wire_event_t w;
    size_t n;
    /* A run of events without flags, of the type whose consumers are
     * known (rx_entry), to an endpoint without patterns: one event lent
     * to the handlers in turn, only its payload changing. */
    lahja_event_t ev = { .refs = 1, .bound = 1, .borrowed = 1, .origin = c->peer };
    while (c->state == CONN_READY && ep->keep_room > 0
           && (n = lahja_wire_rx_small(&c->rx, buf + off, len - off, &w)) > 0) {
        /* The writer's core wrote these lines: ask for the next ones
         * early, far enough ahead to cover a slow handover between
         * cores, and only those it has published (beyond them it is
         * still writing, and a line asked for there goes back and
         * forth between the two cores). */
        if (off + RX_AHEAD < len)
            __builtin_prefetch(buf + off + RX_AHEAD);
        if (off == 0)
            lahja_ep_busy_poll(ep); /* a read, as lahja_conn_read's: before its handlers */
        off += n;
        if (w.flags == 0 && w.type == c->rx_type && c->rx_gen == ep->types_gen
            && lahja_list_empty(&ep->patterns)) {
            c->rx_events++;
            c->rx_payload += w.raw_len;
            if (c->rx_te != NULL && c->rx_te->n > 0) {
                ev.type = w.type;
                ev.type_len = w.type_len;
                ev.payload = w.payload;
                ev.len = w.raw_len;
                lahja_dispatch_solo(ep, c->rx_te, &ev);
            }
            continue;
        }
        int rc = on_event(c, &w);
        if (rc != 0) {
            conn_fail(c, rc, lahja_strerror(rc));
            return off;
        }
    }
    if (off > 0 && c->state == CONN_READY) {
        c->rx_total += off;
        if (c->rx_events != c->rx_acked && c->peer_receipts)
            receipt_due(c);
    }
    return off;
}

/* Reads and handles what c's peer sent, to its end, now: c's peer is
 * gone and another connection takes its place. */
static void conn_read_to_end(struct conn *c)
{
    c->t->read_now(c);
}

static void on_handshake_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    conn_fail(c, -ETIMEDOUT, "no handshake in time");
}

void lahja_conn_start(struct conn *c)
{
    char why[80] = "peer's credentials unreadable";
    if (!c->t->allowed(c, why, sizeof why)) {
        conn_fail(c, -EACCES, why);
        return;
    }
    c->state = CONN_HANDSHAKE;
    lahja_route_changed(c->ep);
    int rc = send_hello(c);
    if (rc == 0)
        rc = c->t->read_start(c);
    if (rc == 0)
        rc = uv_timer_start(&c->timer, on_handshake_timeout, c->ep->opts.handshake_timeout_ms, 0);
    if (rc != 0)
        conn_fail(c, rc, lahja_strerror(rc));
}

/* ------------------------------------------------------------- accepting */

/* Why a new connection would go over a limit (B31), or NULL. */
const char *lahja_conn_over_limits(lahja_endpoint_t *ep, char *why, size_t len)
{
    size_t all = 0, incomplete = 0;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        all++;
        if (!c->outbound && c->state == CONN_HANDSHAKE)
            incomplete++;
    }
    if (incomplete >= ep->opts.max_incomplete)
        snprintf(why, len, "refusing a connection: %zu are in their handshake (max_incomplete)",
                 incomplete);
    else if (all >= ep->opts.max_connections)
        snprintf(why, len, "refusing a connection: %zu are open (max_connections)", all);
    else
        return NULL;
    return why;
}

struct conn *lahja_conn_connect(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg,
                                struct connect_op *op)
{
    struct conn *c = lahja_local_conn_new(ep);
    if (c == NULL)
        return NULL;
    c->outbound = 1;
    c->state = CONN_CONNECTING;
    lahja_route_changed(c->ep);
    memcpy(c->target, cfg->name, sizeof c->target);
    memcpy(c->path, cfg->path, sizeof c->path);
    c->op = op;
    op->pending++;
    lahja_unix_connect(c);
    return c;
}

int lahja_conn_dial(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg, uint8_t background)
{
    struct conn *c = lahja_local_conn_new(ep);
    if (c == NULL)
        return -ENOMEM;
    c->outbound = 1;
    c->background = background;
    c->state = CONN_CONNECTING;
    lahja_route_changed(c->ep);
    memcpy(c->target, cfg->name, sizeof c->target);
    memcpy(c->path, cfg->path, sizeof c->path);
    lahja_unix_connect(c);
    return 0;
}
