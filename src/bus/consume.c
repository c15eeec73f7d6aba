/*
 * Consuming: the types this endpoint subscribes to, the consumers behind
 * them (handlers, streams, wait_for), dispatching an event to them,
 * responses to pending requests, and the queries and waits of B20-B22.
 *
 * A handler may cancel subscriptions, its own included, while an event
 * is being dispatched: a consumer removed then is only marked dead and
 * unlinked (and freed, if its owner released it) by the sweep that ends
 * the dispatch, so the walk never meets freed memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"

#define DEFAULT_STREAM_CAPACITY 1024

/* ------------------------------------------------------------ registry */

/* A pattern's entry is never an exact type's: an event type ending in
 * '*' (a peer's, from an old peer) finds no exact entry. */
struct type_entry *lahja_type_find(const lahja_endpoint_t *ep, const char *type, size_t len,
                                   uint64_t hash)
{
    lahja_strmap_slot_t *s = lahja_strmap_find_h(&ep->types, type, len, hash);
    if (s == NULL)
        return NULL;
    struct type_entry *te = s->value;
    return te->is_pattern ? NULL : te;
}

static struct type_entry *type_find(const lahja_endpoint_t *ep, const char *type, size_t len)
{
    return lahja_type_find(ep, type, len, lahja_strmap_hash(type, len));
}

static struct type_entry *type_get(lahja_endpoint_t *ep, const char *type, size_t len)
{
    int is_new;
    lahja_strmap_slot_t *s = lahja_strmap_insert(&ep->types, type, len, &is_new);
    if (s == NULL)
        return NULL;
    if (is_new) {
        struct type_entry *te = calloc(1, sizeof *te);
        if (te == NULL) {
            lahja_strmap_remove(&ep->types, s);
            return NULL;
        }
        te->name = s->key;
        lahja_list_init(&te->consumers);
        te->is_pattern = type[len - 1] == '*';
        if (te->is_pattern)
            lahja_list_push_back(&ep->patterns, &te->plink);
        s->value = te;
        ep->types_gen++;
        lahja_route_changed(ep);
    }
    return s->value;
}

/* Forgets a type nobody consumes any more. */
static void type_maybe_drop(lahja_endpoint_t *ep, struct type_entry *te)
{
    if (te->n > 0 || te->dispatching > 0 || !lahja_list_empty(&te->consumers)
        || (te->is_pattern && ep->pattern_walk > 0))
        return;
    if (te->is_pattern)
        lahja_list_remove(&te->plink);
    lahja_strmap_remove(&ep->types, lahja_strmap_find(&ep->types, te->name, strlen(te->name)));
    free(te);
    ep->types_gen++;
    lahja_route_changed(ep);
}

/*
 * Copies origins[0..n) into one block (the pointers, then the names),
 * checking each is an endpoint name.  *out NULL when n is 0.
 * Errors: -EINVAL, -ENOMEM.
 */
static int origins_copy(const char *const *origins, size_t n, char ***out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    if (origins == NULL || n > LAHJA_WIRE_ORIGINS_MAX)
        return -EINVAL;
    size_t size = n * sizeof(char *);
    for (size_t i = 0; i < n; i++) {
        if (origins[i] == NULL || !lahja_wire_name_valid(origins[i], strlen(origins[i])))
            return -EINVAL;
        size += strlen(origins[i]) + 1;
    }
    char **v = malloc(size);
    if (v == NULL)
        return -ENOMEM;
    char *p = (char *)(v + n);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(origins[i]) + 1;
        v[i] = memcpy(p, origins[i], len);
        p += len;
    }
    *out = v;
    return 0;
}

/* Whether consumer c takes events from `origin`.  Out of line: the
 * dispatch loop, where it is rare, keeps its registers. */
static __attribute__((noinline)) int origin_ok(const struct consumer *c, const char *origin)
{
    if (c->norigins == 0)
        return 1;
    for (size_t i = 0; i < c->norigins; i++)
        if (strcmp(c->origins[i], origin) == 0)
            return 1;
    return 0;
}

static void solo_update(struct type_entry *te);

/* Adds c as a consumer of `type` (an exact type or a pattern), limited to
 * the origins[0..norigins) (none: every endpoint). */
static int consumer_add(lahja_endpoint_t *ep, struct consumer *c, const char *type, uint8_t kind,
                        const char *const *origins, size_t norigins)
{
    size_t len = strlen(type);
    if (!lahja_wire_type_valid(type, len))
        return -EINVAL;
    int rc = origins_copy(origins, norigins, &c->origins);
    if (rc != 0)
        return rc;
    struct type_entry *te = type_get(ep, type, len);
    if (te == NULL) {
        free(c->origins);
        c->origins = NULL;
        return -ENOMEM;
    }
    c->norigins = norigins;
    c->te = te;
    c->kind = kind;
    c->owned.prev = c->owned.next = NULL;
    if (kind != CONSUMER_WAITER)
        lahja_list_push_back(&ep->owned, &c->owned);
    c->active = 1;
    c->dead = 0;
    c->free_on_sweep = 0;
    lahja_list_push_back(&te->consumers, &c->link);
    lahja_route_changed(ep);
    if (norigins == 0)
        te->n_any++;
    /* A consumer with origins changes what te's announcement names. */
    if (++te->n == 1 || norigins > 0) {
        lahja_ep_subs_dirty(ep);
        lahja_ep_changed(ep, 0);
    }
    solo_update(te);
    return 0;
}

/* te->solo, after te's consumers changed.  A consumer marked dead is
 * still linked, so one linked consumer that is active is the only one. */
static void solo_update(struct type_entry *te)
{
    te->solo = NULL;
    lahja_link_t *l = te->consumers.next;
    if (l == &te->consumers || l->next != &te->consumers)
        return;
    struct consumer *c = lahja_container_of(l, struct consumer, link);
    if (c->active && c->kind == CONSUMER_HANDLER && c->norigins == 0)
        te->solo = (lahja_subscription_t *)c;
}

/* Stops a consumer counting; unlinks it unless a dispatch is walking. */
static void consumer_remove(lahja_endpoint_t *ep, struct consumer *c)
{
    if (!c->active)
        return;
    struct type_entry *te = c->te;
    c->active = 0;
    lahja_route_changed(ep);
    if (te->dispatching > 0) {
        c->dead = 1;
        te->ndead++;
    } else
        lahja_list_remove(&c->link);
    int limited = c->norigins > 0;
    if (!limited)
        te->n_any--;
    free(c->origins); /* only an active consumer's are read */
    c->origins = NULL;
    c->norigins = 0;
    if (--te->n == 0 || limited) {
        lahja_ep_subs_dirty(ep);
        lahja_ep_changed(ep, 0);
    }
    solo_update(te);
    type_maybe_drop(ep, te);
}

static void stream_free(struct lahja_stream *st);

static void consumer_free(struct consumer *c)
{
    lahja_list_remove(&c->owned);
    free(c->origins); /* still counting when the endpoint is freed */
    if (c->kind == CONSUMER_STREAM)
        stream_free((struct lahja_stream *)c);
    else
        free(c);
}

/* Removes and frees an owned consumer now, or at the sweep. */
static void consumer_release(lahja_endpoint_t *ep, struct consumer *c)
{
    consumer_remove(ep, c);
    if (c->dead)
        c->free_on_sweep = 1;
    else
        consumer_free(c);
}

static void sweep(lahja_endpoint_t *ep, struct type_entry *te)
{
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &te->consumers) {
        struct consumer *c = lahja_container_of(l, struct consumer, link);
        if (!c->dead)
            continue;
        lahja_list_remove(&c->link);
        c->dead = 0;
        if (c->free_on_sweep)
            consumer_free(c);
    }
    te->ndead = 0;
    solo_update(te);
    type_maybe_drop(ep, te);
}

int lahja_type_keeps(const struct type_entry *te)
{
    const lahja_link_t *l;
    lahja_list_foreach(l, &te->consumers) {
        const struct consumer *c = lahja_container_of(l, struct consumer, link);
        if (c->active && c->kind != CONSUMER_HANDLER)
            return 1;
    }
    return 0;
}

/* Whether te has a consumer taking events from `origin`. */
static int entry_wants(const struct type_entry *te, const char *origin)
{
    if (te->n_any > 0)
        return 1;
    const lahja_link_t *l;
    lahja_list_foreach(l, &te->consumers) {
        const struct consumer *c = lahja_container_of(l, struct consumer, link);
        if (c->active && origin_ok(c, origin))
            return 1;
    }
    return 0;
}

int lahja_consumers_want(const lahja_endpoint_t *ep, struct type_entry *te, const char *type,
                         size_t len, const char *origin)
{
    if (te != NULL && te->n > 0 && entry_wants(te, origin))
        return 1;
    const lahja_link_t *l;
    lahja_list_foreach(l, &ep->patterns) {
        const struct type_entry *pe = lahja_container_of(l, struct type_entry, plink);
        if (pe->n > 0 && lahja_wire_pattern_match(pe->name, strlen(pe->name), type, len)
            && entry_wants(pe, origin))
            return 1;
    }
    return 0;
}

/* An endpoint subscribes to a type when its own event of the type would
 * reach a consumer: origins are its own name's, for this question. */
int lahja_has_consumers(const lahja_endpoint_t *ep, const char *type)
{
    size_t len = strlen(type);
    return lahja_consumers_want(ep, type_find(ep, type, len), type, len, ep->name->s);
}

int lahja_event_has_consumers(const lahja_endpoint_t *ep, const lahja_event_t *ev)
{
    return lahja_consumers_want(ep, lahja_type_find(ep, ev->type, ev->type_len, ev->hash),
                                ev->type, ev->type_len, ep->name->s);
}

size_t lahja_type_origins_max(const struct type_entry *te)
{
    if (te->n_any > 0)
        return 0;
    size_t n = 0;
    const lahja_link_t *l;
    lahja_list_foreach(l, &te->consumers) {
        const struct consumer *c = lahja_container_of(l, struct consumer, link);
        if (c->active)
            n += c->norigins;
    }
    return n;
}

size_t lahja_type_origins(const struct type_entry *te, const char **out, size_t max)
{
    if (te->n_any > 0)
        return 0;
    size_t k = 0;
    const lahja_link_t *l;
    lahja_list_foreach(l, &te->consumers) {
        const struct consumer *c = lahja_container_of(l, struct consumer, link);
        for (size_t i = 0; c->active && i < c->norigins; i++) {
            size_t j = 0;
            while (j < k && strcmp(out[j], c->origins[i]) != 0)
                j++;
            if (j == k && k < max)
                out[k++] = c->origins[i];
        }
    }
    /* More than one entry can name: announced for every origin, and
     * filtered here at dispatch. */
    return k > LAHJA_WIRE_ORIGINS_MAX ? 0 : k;
}

/* ------------------------------------------------------------ dispatch */

static void stream_push(struct lahja_stream *st, lahja_event_t *ev);

void lahja_dispatch(lahja_endpoint_t *ep, lahja_event_t *ev)
{
    lahja_dispatch_entry(ep, lahja_type_find(ep, ev->type, ev->type_len, ev->hash), ev);
}

void lahja_dispatch_one(lahja_endpoint_t *ep, struct type_entry *te, lahja_event_t *ev)
{
    ep->dispatched++;
    te->dispatching++;
    lahja_event_t *owned = NULL; /* one copy shared by streams and waiters */
    lahja_link_t *l, *next;
    for (l = te->consumers.next; l != &te->consumers; l = next) {
        next = l->next;
        struct consumer *c = lahja_container_of(l, struct consumer, link);
        if (!c->active)
            continue;
        if (c->norigins > 0 && (ev->origin == NULL || !origin_ok(c, ev->origin->s)))
            continue;
        if (c->kind == CONSUMER_HANDLER) {
            lahja_subscription_t *s = (lahja_subscription_t *)c;
            int rc = s->fn(ep, ev, s->user);
            if (rc != 0)
                lahja_bus_log(ep, LAHJA_LOG_ERROR, "handler for %s failed: %s", te->name,
                              lahja_strerror(rc));
            continue;
        }
        if (owned == NULL) {
            if ((owned = lahja_event_ref(ev)) == NULL) {
                lahja_bus_log(ep, LAHJA_LOG_ERROR, "out of memory delivering %s", te->name);
                break;
            }
            ep->keep_room -= ep->keep_room > 0;
        }
        if (c->kind == CONSUMER_STREAM) {
            stream_push((struct lahja_stream *)c, owned);
        } else {
            struct waiter *w = (struct waiter *)c;
            w->got = lahja_event_ref(owned);
            consumer_remove(ep, c);
            lahja_waitq_signal(&w->ready);
        }
    }
    if (owned != NULL)
        lahja_event_unref(owned);
    /* What the handlers removed goes now (nothing, mostly: no walk). */
    if (--te->dispatching == 0 && (te->ndead > 0 || te->n == 0))
        sweep(ep, te);
}

void lahja_dispatch_after(lahja_endpoint_t *ep, struct type_entry *te, int rc)
{
    if (rc != 0)
        lahja_bus_log(ep, LAHJA_LOG_ERROR, "handler for %s failed: %s", te->name,
                      lahja_strerror(rc));
    if (te->dispatching == 0 && (te->ndead > 0 || te->n == 0))
        sweep(ep, te);
}

/*
 * ev goes to te's consumers, then to those of every pattern it matches
 * (a consumer has one type or pattern: it gets ev once).  While the walk
 * is under way no pattern entry is freed (a handler may cancel the last
 * consumer of the next one): those left empty are dropped after it.
 */
void lahja_dispatch_patterns(lahja_endpoint_t *ep, struct type_entry *te, lahja_event_t *ev)
{
    ep->pattern_walk++;
    if (te != NULL && te->n > 0)
        lahja_dispatch_one(ep, te, ev);
    lahja_link_t *l, *tmp;
    for (l = ep->patterns.next; l != &ep->patterns; l = l->next) {
        struct type_entry *pe = lahja_container_of(l, struct type_entry, plink);
        if (pe->n > 0 && lahja_wire_pattern_match(pe->name, strlen(pe->name), ev->type,
                                                  ev->type_len))
            lahja_dispatch_one(ep, pe, ev);
    }
    if (--ep->pattern_walk > 0)
        return;
    lahja_list_foreach_safe(l, tmp, &ep->patterns)
        type_maybe_drop(ep, lahja_container_of(l, struct type_entry, plink));
}

/* ------------------------------------------------------- subscriptions */

int lahja_subscribe(lahja_endpoint_t *ep, const char *type, lahja_handler_fn handler, void *user,
                    lahja_subscription_t **out)
{
    return lahja_subscribe_from(ep, type, NULL, 0, handler, user, out);
}

int lahja_subscribe_from(lahja_endpoint_t *ep, const char *type, const char *const *origins,
                         size_t norigins, lahja_handler_fn handler, void *user,
                         lahja_subscription_t **out)
{
    if (ep == NULL || type == NULL || handler == NULL)
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    lahja_subscription_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->ep = ep;
    s->fn = handler;
    s->user = user;
    rc = consumer_add(ep, &s->c, type, CONSUMER_HANDLER, origins, norigins);
    if (rc != 0) {
        free(s);
        return rc;
    }
    if (out != NULL)
        *out = s;
    return 0;
}

void lahja_subscription_cancel(lahja_subscription_t *s)
{
    if (s != NULL && !lahja_rt_wrong_thread(s->ep->rt))
        consumer_release(s->ep, &s->c);
}

/* ------------------------------------------------------------- streams */

#define DROPS_LOG_INTERVAL_MS 1000

/*
 * A full stream loses events: a WARNING says so at the first drop, then
 * at most once a second with the count since the line before, so that a
 * flood of drops makes a line a second and not one per event.  What the
 * last line did not count is said when the stream is closed.
 */
static void stream_drops_log(struct lahja_stream *st, int closing)
{
    size_t n = st->dropped - st->dropped_logged;
    if (n == 0)
        return;
    uint64_t now = uv_now(st->ep->rt->loop);
    if (st->dropped_logged == 0)
        lahja_bus_log(st->ep, LAHJA_LOG_WARNING,
                      "stream of %s full (capacity %zu): dropping %s; "
                      "more drops logged at most once a second",
                      st->type, st->cap,
                      st->policy == LAHJA_STREAM_DROP_NEWEST ? "new events" : "its oldest events");
    else if (closing || now - st->dropped_logged_at >= DROPS_LOG_INTERVAL_MS)
        lahja_bus_log(st->ep, LAHJA_LOG_WARNING,
                      "stream of %s: dropped %zu more (%zu in all)", st->type, n,
                      st->dropped);
    else
        return;
    st->dropped_logged = st->dropped;
    st->dropped_logged_at = now;
}

static void stream_push(struct lahja_stream *st, lahja_event_t *ev)
{
    if (st->len == st->cap) {
        st->dropped++;
        st->ep->stream_drops++;
        stream_drops_log(st, 0);
        if (st->policy == LAHJA_STREAM_DROP_NEWEST)
            return;
        lahja_event_unref(st->ring[st->head]);
        st->head = (st->head + 1) % st->cap;
        st->len--;
    }
    st->ring[(st->head + st->len) % st->cap] = lahja_event_ref(ev);
    st->len++;
    if (st->remaining != SIZE_MAX && --st->remaining == 0)
        consumer_remove(st->ep, &st->c); /* num_events reached: unsubscribe */
    lahja_waitq_signal(&st->ready);
}

int lahja_stream_open(lahja_endpoint_t *ep, const char *type, size_t num_events,
                      const lahja_stream_options_t *opts, lahja_stream_t **out)
{
    return lahja_stream_open_from(ep, type, NULL, 0, num_events, opts, out);
}

int lahja_stream_open_from(lahja_endpoint_t *ep, const char *type, const char *const *origins,
                           size_t norigins, size_t num_events,
                           const lahja_stream_options_t *opts, lahja_stream_t **out)
{
    if (ep == NULL || type == NULL || out == NULL)
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    size_t cap = opts != NULL && opts->capacity ? opts->capacity : DEFAULT_STREAM_CAPACITY;
    if (num_events != 0 && num_events < cap)
        cap = num_events;
    size_t type_len = strlen(type);
    struct lahja_stream *st = calloc(1, sizeof *st + type_len + 1);
    lahja_event_t **ring = calloc(cap, sizeof *ring);
    if (st == NULL || ring == NULL) {
        free(st);
        free(ring);
        return -ENOMEM;
    }
    st->ep = ep;
    memcpy(st->type, type, type_len + 1);
    st->ring = ring;
    st->cap = cap;
    st->remaining = num_events ? num_events : SIZE_MAX;
    st->policy = opts != NULL ? opts->policy : LAHJA_STREAM_DROP_OLDEST;
    lahja_waitq_init(&st->ready);
    rc = consumer_add(ep, &st->c, type, CONSUMER_STREAM, origins, norigins);
    if (rc != 0) {
        stream_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

struct next_call {
    struct lahja_call call;
    struct lahja_stream *st;
};

static int next_step(struct lahja_call *call, struct lahja_waitq **q)
{
    struct lahja_stream *st = ((struct next_call *)call)->st;
    if (st->len > 0) {
        call->result = st->ring[st->head];
        st->head = (st->head + 1) % st->cap;
        st->len--;
        if (st->len > 0)
            lahja_waitq_signal(&st->ready); /* the next waiter, if any */
        return 0;
    }
    if (st->ended)
        return LAHJA_ELIFECYCLE;
    if (!st->c.active)
        return -EPIPE;
    *q = &st->ready;
    return LAHJA_PENDING;
}

static int next_abandon(struct lahja_call *call, int why)
{
    (void)call;
    return why;
}

static const struct lahja_call_kind next_kind = { "stream_next", 0, next_step, next_abandon };

int lahja_stream_next(lahja_stream_t *st, lahja_time_t deadline, lahja_event_t **ev)
{
    if (st == NULL || ev == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(st->ep->rt))
        return LAHJA_EWRONGTHREAD;
    int rc = lahja_checkpoint();
    if (rc != 0)
        return rc;
    struct next_call n = { { &next_kind, st->ep, NULL, NULL }, st };
    rc = lahja_call_run(&n.call, deadline);
    if (rc == 0)
        *ev = n.call.result;
    return rc;
}

int lahja_stream_next_cb(lahja_stream_t *st, lahja_time_t deadline, lahja_event_done_fn cb,
                         void *user, lahja_op_t **out)
{
    if (st == NULL || cb == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(st->ep->rt))
        return LAHJA_EWRONGTHREAD;
    if (st->ep->stop_state >= STOP_LAST)
        return LAHJA_ELIFECYCLE;
    struct lahja_op *op = lahja_op_new(st->ep, &next_kind, sizeof(struct next_call));
    if (op == NULL)
        return -ENOMEM;
    ((struct next_call *)op->call)->st = st;
    lahja_op_start(op, deadline, NULL, cb, user, out);
    return 0;
}

size_t lahja_stream_dropped(const lahja_stream_t *st)
{
    return lahja_rt_wrong_thread(st->ep->rt) ? 0 : st->dropped;
}

static void stream_free(struct lahja_stream *st)
{
    while (st->len > 0) {
        lahja_event_unref(st->ring[st->head]);
        st->head = (st->head + 1) % st->cap;
        st->len--;
    }
    free(st->ring);
    free(st);
}

void lahja_stream_close(lahja_stream_t *st)
{
    if (st == NULL || lahja_rt_wrong_thread(st->ep->rt))
        return;
    lahja_waitq_end(&st->ready, -EPIPE);
    stream_drops_log(st, 1);
    consumer_release(st->ep, &st->c);
}

/* ------------------------------------------------------------ wait_for */

struct wait_for_call {
    struct lahja_call call;
    struct waiter w;
};

static int wait_for_step(struct lahja_call *call, struct lahja_waitq **q)
{
    struct wait_for_call *wc = (struct wait_for_call *)call;
    if (wc->w.got != NULL) { /* delivered: the consumer removed itself */
        call->result = wc->w.got;
        wc->w.got = NULL;
        return 0;
    }
    if (call->ep->stopped) {
        consumer_remove(call->ep, &wc->w.c);
        return LAHJA_ELIFECYCLE;
    }
    *q = &wc->w.ready;
    return LAHJA_PENDING;
}

static int wait_for_abandon(struct lahja_call *call, int why)
{
    struct wait_for_call *wc = (struct wait_for_call *)call;
    consumer_remove(call->ep, &wc->w.c); /* no-op once delivered */
    if (wc->w.got != NULL) { /* the event wins over a late cancellation */
        call->result = wc->w.got;
        wc->w.got = NULL;
        return 0;
    }
    return why;
}

static const struct lahja_call_kind wait_for_kind = { "wait_for", 0, wait_for_step, wait_for_abandon };

static int wait_for_begin(struct wait_for_call *wc, lahja_endpoint_t *ep, const char *type,
                          const char *const *origins, size_t norigins)
{
    wc->call.kind = &wait_for_kind;
    wc->call.ep = ep;
    lahja_waitq_init(&wc->w.ready);
    return consumer_add(ep, &wc->w.c, type, CONSUMER_WAITER, origins, norigins);
}

int lahja_wait_for(lahja_endpoint_t *ep, const char *type, lahja_time_t deadline,
                   lahja_event_t **ev)
{
    return lahja_wait_for_from(ep, type, NULL, 0, deadline, ev);
}

int lahja_wait_for_cb(lahja_endpoint_t *ep, const char *type, lahja_time_t deadline,
                      lahja_event_done_fn cb, void *user, lahja_op_t **out)
{
    return lahja_wait_for_from_cb(ep, type, NULL, 0, deadline, cb, user, out);
}

int lahja_wait_for_from(lahja_endpoint_t *ep, const char *type, const char *const *origins,
                        size_t norigins, lahja_time_t deadline, lahja_event_t **ev)
{
    if (ep == NULL || type == NULL || ev == NULL)
        return -EINVAL;
    int rc = lahja_ep_check_task(ep);
    if (rc != 0)
        return rc;
    struct wait_for_call wc = { .call = { 0 } };
    rc = wait_for_begin(&wc, ep, type, origins, norigins);
    if (rc == 0)
        rc = lahja_call_run(&wc.call, deadline);
    if (rc == 0)
        *ev = wc.call.result;
    return rc;
}

int lahja_wait_for_from_cb(lahja_endpoint_t *ep, const char *type, const char *const *origins,
                           size_t norigins, lahja_time_t deadline, lahja_event_done_fn cb,
                           void *user, lahja_op_t **out)
{
    if (ep == NULL || type == NULL || cb == NULL)
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    struct lahja_op *op = lahja_op_new(ep, &wait_for_kind, sizeof(struct wait_for_call));
    if (op == NULL)
        return -ENOMEM;
    rc = wait_for_begin((struct wait_for_call *)op->call, ep, type, origins, norigins);
    if (rc != 0) {
        free(op);
        return rc;
    }
    lahja_op_start(op, deadline, NULL, cb, user, out);
    return 0;
}

/* ------------------------------------------------------------ requests */

/*
 * Pending requests by id: an open-addressing table of pointers, linear
 * probing, kept at most half full, deletion by backward shift (no
 * tombstones).  Ids are sequential, so a multiplicative hash spreads
 * them well.
 */
static size_t pindex_slot(uint64_t id, size_t cap)
{
    return (size_t)((id * 0x9e3779b97f4a7c15u) >> 32) & (cap - 1);
}

static void pindex_put(struct pending **tab, size_t cap, struct pending *p)
{
    size_t i = pindex_slot(p->id, cap);
    while (tab[i] != NULL)
        i = (i + 1) & (cap - 1);
    tab[i] = p;
}

int lahja_pending_add(lahja_endpoint_t *ep, struct pending *p)
{
    if ((ep->pindex_n + 1) * 2 > ep->pindex_cap) {
        size_t cap = ep->pindex_cap ? ep->pindex_cap * 2 : 16;
        struct pending **tab = calloc(cap, sizeof *tab);
        if (tab == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < ep->pindex_cap; i++)
            if (ep->pindex[i] != NULL)
                pindex_put(tab, cap, ep->pindex[i]);
        free(ep->pindex);
        ep->pindex = tab;
        ep->pindex_cap = cap;
    }
    pindex_put(ep->pindex, ep->pindex_cap, p);
    ep->pindex_n++;
    lahja_list_push_back(&ep->pending, &p->link);
    return 0;
}

void lahja_pending_remove(lahja_endpoint_t *ep, struct pending *p)
{
    lahja_list_remove(&p->link);
    size_t mask = ep->pindex_cap - 1;
    size_t i = pindex_slot(p->id, ep->pindex_cap);
    while (ep->pindex[i] != p)
        i = (i + 1) & mask;
    /* Backward shift: later entries of the run move into the hole when
     * their home slot allows it. */
    for (size_t j = (i + 1) & mask; ep->pindex[j] != NULL; j = (j + 1) & mask) {
        size_t home = pindex_slot(ep->pindex[j]->id, ep->pindex_cap);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            ep->pindex[i] = ep->pindex[j];
            i = j;
        }
    }
    ep->pindex[i] = NULL;
    ep->pindex_n--;
}

struct pending *lahja_pending_find(const lahja_endpoint_t *ep, uint64_t id)
{
    if (ep->pindex_n == 0)
        return NULL;
    size_t mask = ep->pindex_cap - 1;
    for (size_t i = pindex_slot(id, ep->pindex_cap); ep->pindex[i] != NULL; i = (i + 1) & mask)
        if (ep->pindex[i]->id == id)
            return ep->pindex[i];
    return NULL;
}

void lahja_deliver_response(lahja_endpoint_t *ep, lahja_event_t *ev)
{
    struct pending *p = lahja_pending_find(ep, ev->id);
    if (p == NULL || p->response != NULL || p->error != 0)
        return; /* unknown, or answered already: later responses are ignored */
    if (strcmp(ev->type, p->response_type) != 0
        && strcmp(p->response_type, LAHJA_ANY_RESPONSE) != 0) {
        p->error = LAHJA_EUNEXPECTEDRESPONSE;
        snprintf(p->detail, sizeof p->detail, "request %s expected a response of type %s, got %s from %s",
                 p->type, p->response_type, ev->type, ev->origin != NULL ? ev->origin->s : "?");
    } else if ((p->response = lahja_event_ref(ev)) == NULL) {
        p->error = -ENOMEM;
    }
    lahja_waitq_signal(&p->ready);
}

void lahja_pending_peer_gone(lahja_endpoint_t *ep, struct conn *c)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->pending) {
        struct pending *p = lahja_container_of(l, struct pending, link);
        for (size_t i = 0; i < p->ntargets; i++) {
            if (p->targets[i] != c)
                continue;
            p->targets[i] = NULL;
            if (--p->nlive == 0 && !p->local && p->response == NULL && p->error == 0) {
                p->error = LAHJA_EREMOTEDISCONNECTED;
                if (p->ntargets == 1)
                    snprintf(p->detail, sizeof p->detail,
                             "request %s: %s, the one peer it went to, disconnected before answering",
                             p->type, c->peer->s);
                else
                    snprintf(p->detail, sizeof p->detail,
                             "request %s: the %zu peers it went to (%s the last) disconnected "
                             "before answering", p->type, p->ntargets, c->peer->s);
                lahja_waitq_signal(&p->ready);
            }
        }
    }
}

/* ---------------------------------------------------------------- stop */

void lahja_consumers_stop(lahja_endpoint_t *ep)
{
    for (size_t i = 0; i < ep->types.nslots; i++) {
        lahja_strmap_slot_t *s = &ep->types.slots[i];
        if (!lahja_strmap_live(s))
            continue;
        struct type_entry *te = s->value;
        lahja_link_t *l;
        lahja_list_foreach(l, &te->consumers) {
            struct consumer *c = lahja_container_of(l, struct consumer, link);
            if (c->kind == CONSUMER_STREAM) {
                ((struct lahja_stream *)c)->ended = 1;
                lahja_waitq_wake(&((struct lahja_stream *)c)->ready);
            } else if (c->kind == CONSUMER_WAITER) {
                lahja_waitq_wake(&((struct waiter *)c)->ready);
            }
        }
    }
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->pending) {
        struct pending *p = lahja_container_of(l, struct pending, link);
        if (p->response == NULL && p->error == 0)
            p->error = LAHJA_ELIFECYCLE;
        lahja_waitq_wake(&p->ready);
    }
}

/* Frees what the application left subscribed when the endpoint is freed. */
void lahja_consumers_free(lahja_endpoint_t *ep)
{
    for (size_t i = 0; i < ep->types.nslots; i++) {
        lahja_strmap_slot_t *s = &ep->types.slots[i];
        if (!lahja_strmap_live(s))
            continue;
        struct type_entry *te = s->value;
        while (lahja_list_pop_front(&te->consumers) != NULL)
            ;
        free(te);
        s->value = NULL;
    }
    lahja_link_t *l;
    while ((l = ep->owned.next) != &ep->owned)
        consumer_free(lahja_container_of(l, struct consumer, owned));
}

/* ------------------------------------------------------------- queries */

void lahja_ep_changed(lahja_endpoint_t *ep, int connections)
{
    lahja_route_changed(ep);
    lahja_waitq_wake(&ep->subs_changed);
    if (connections)
        lahja_waitq_wake(&ep->conn_changed);
}

/* The established connection to `name`, or NULL: another one to the same
 * name may be on its way in or out meanwhile. */
static struct conn *ready_conn(const lahja_endpoint_t *ep, const char *name)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->state == CONN_READY && strcmp(c->peer->s, name) == 0)
            return c;
    }
    return NULL;
}

/* The queries answer 0 (and foreach_peer calls nothing) on a thread the
 * endpoint does not belong to: its tables are not theirs to read. */
static int foreign(const lahja_endpoint_t *ep)
{
    return ep == NULL || lahja_rt_wrong_thread(ep->rt);
}

/* An endpoint counts itself as connected, as in lahja: what a program
 * waits for before it broadcasts to a name holds for its own name too. */
int lahja_is_connected_to(const lahja_endpoint_t *ep, const char *name)
{
    if (foreign(ep) || name == NULL)
        return 0;
    return strcmp(name, ep->name->s) == 0 || ready_conn(ep, name) != NULL;
}

void lahja_foreach_peer(const lahja_endpoint_t *ep, lahja_peer_fn fn, void *user)
{
    if (foreign(ep) || fn == NULL)
        return;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->state != CONN_READY)
            continue;
        size_t n = c->subs.count + c->npats;
        const char **types = malloc((n ? n : 1) * sizeof *types);
        if (types == NULL)
            continue;
        size_t k = 0;
        for (size_t i = 0; i < c->subs.nslots; i++)
            if (lahja_strmap_live(&c->subs.slots[i]) && !lahja_type_reserved(c->subs.slots[i].key))
                types[k++] = c->subs.slots[i].key;
        for (size_t i = 0; i < c->npats; i++)
            types[k++] = c->pats[i];
        fn(c->peer->s, types, k, user);
        free(types);
    }
}

size_t lahja_subscribed_types(const lahja_endpoint_t *ep, const char **types, size_t max)
{
    size_t k = 0;
    if (foreign(ep))
        return 0;
    for (size_t i = 0; i < ep->types.nslots; i++) {
        lahja_strmap_slot_t *s = &ep->types.slots[i];
        if (lahja_strmap_live(s) && ((struct type_entry *)s->value)->n > 0
            && !lahja_type_reserved(s->key)) {
            if (k < max)
                types[k] = s->key;
            k++;
        }
    }
    return k;
}

int lahja_peer_matches(const struct conn *c, const char *type, size_t len)
{
    if (lahja_strmap_find(&c->subs, type, len) != NULL)
        return 1;
    for (size_t i = 0; i < c->npats; i++)
        if (lahja_wire_pattern_match(c->pats[i], strlen(c->pats[i]), type, len))
            return 1;
    return 0;
}

/* A peer subscribed to `*` is subscribed to every type; asked about a
 * pattern, whether the peer has it or one that covers it. */
static int peer_has(const struct conn *c, const char *type)
{
    return lahja_peer_matches(c, type, strlen(type));
}

int lahja_is_endpoint_subscribed_to(const lahja_endpoint_t *ep, const char *name,
                                    const char *type)
{
    if (foreign(ep) || name == NULL || type == NULL)
        return 0;
    if (strcmp(name, ep->name->s) == 0)
        return lahja_has_consumers(ep, type);
    struct conn *c = ready_conn(ep, name);
    return c != NULL && peer_has(c, type);
}

int lahja_is_any_endpoint_subscribed_to(const lahja_endpoint_t *ep, const char *type)
{
    if (foreign(ep) || type == NULL)
        return 0;
    if (lahja_has_consumers(ep, type))
        return 1;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->state == CONN_READY && peer_has(c, type))
            return 1;
    }
    return 0;
}

int lahja_are_all_endpoints_subscribed_to(const lahja_endpoint_t *ep, const char *type,
                                          int include_self)
{
    if (foreign(ep) || type == NULL)
        return 0;
    if (include_self && !lahja_has_consumers(ep, type))
        return 0;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->state == CONN_READY && !peer_has(c, type))
            return 0;
    }
    return 1;
}

/* --------------------------------------------------------------- waits */

/* Waits on `q` until pred(ep, a, b, flag) holds; with no pred, for one
 * change. */
typedef int (*pred_fn)(const lahja_endpoint_t *ep, const char *a, const char *b, int flag);

struct until_call {
    struct lahja_call call;
    struct lahja_waitq *q;
    pred_fn pred;
    const char *a, *b;
    int flag;
    int waited;
    char a_copy[LAHJA_NAME_MAX + 1], b_copy[LAHJA_NAME_MAX + 1]; /* callback form */
};

static int until_step(struct lahja_call *call, struct lahja_waitq **q)
{
    struct until_call *u = (struct until_call *)call;
    if (u->waited && call->ep->stopped)
        return LAHJA_ELIFECYCLE;
    if (u->pred != NULL ? u->pred(call->ep, u->a, u->b, u->flag) : u->waited)
        return 0;
    u->waited = 1;
    *q = u->q;
    return LAHJA_PENDING;
}

static int until_abandon(struct lahja_call *call, int why)
{
    (void)call;
    return why;
}

static const struct lahja_call_kind until_kind = { "wait_until", 1, until_step, until_abandon };

static int wait_until(lahja_endpoint_t *ep, struct lahja_waitq *q, pred_fn pred, const char *a,
                      const char *b, int flag, lahja_time_t deadline)
{
    if (ep == NULL)
        return -EINVAL;
    int rc = lahja_ep_check_task(ep);
    if (rc == 0)
        rc = lahja_checkpoint();
    if (rc != 0)
        return rc;
    struct until_call u = { { &until_kind, ep, NULL, NULL }, q, pred, a, b, flag, 0, "", "" };
    return lahja_call_run(&u.call, deadline);
}

/* The callback form of wait_until. */
static int wait_until_cb(lahja_endpoint_t *ep, struct lahja_waitq *q, pred_fn pred,
                         const char *a, const char *b, int flag, lahja_time_t deadline,
                         lahja_done_fn cb, void *user, lahja_op_t **out)
{
    if (ep == NULL || cb == NULL || (a != NULL && strlen(a) > LAHJA_NAME_MAX) ||
        (b != NULL && strlen(b) > LAHJA_NAME_MAX))
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    struct lahja_op *op = lahja_op_new(ep, &until_kind, sizeof(struct until_call));
    if (op == NULL)
        return -ENOMEM;
    struct until_call *u = (struct until_call *)op->call;
    u->q = q;
    u->pred = pred;
    u->flag = flag;
    if (a != NULL)
        u->a = strcpy(u->a_copy, a);
    if (b != NULL)
        u->b = strcpy(u->b_copy, b);
    lahja_op_start(op, deadline, cb, NULL, user, out);
    return 0;
}

static int p_connected(const lahja_endpoint_t *ep, const char *a, const char *b, int f)
{
    (void)b, (void)f;
    return lahja_is_connected_to(ep, a);
}

static int p_endpoint(const lahja_endpoint_t *ep, const char *a, const char *b, int f)
{
    (void)f;
    return lahja_is_endpoint_subscribed_to(ep, a, b);
}

static int p_any(const lahja_endpoint_t *ep, const char *a, const char *b, int f)
{
    (void)b, (void)f;
    return lahja_is_any_endpoint_subscribed_to(ep, a);
}

static int p_all(const lahja_endpoint_t *ep, const char *a, const char *b, int f)
{
    (void)b;
    return lahja_are_all_endpoints_subscribed_to(ep, a, f);
}

int lahja_wait_until_connected_to(lahja_endpoint_t *ep, const char *name, lahja_time_t deadline)
{
    if (name == NULL)
        return -EINVAL;
    return wait_until(ep, &ep->conn_changed, p_connected, name, NULL, 0, deadline);
}

int lahja_wait_until_connections_change(lahja_endpoint_t *ep, lahja_time_t deadline)
{
    return wait_until(ep, &ep->conn_changed, NULL, NULL, NULL, 0, deadline);
}

int lahja_wait_until_endpoint_subscriptions_change(lahja_endpoint_t *ep, lahja_time_t deadline)
{
    return wait_until(ep, &ep->subs_changed, NULL, NULL, NULL, 0, deadline);
}

int lahja_wait_until_endpoint_subscribed_to(lahja_endpoint_t *ep, const char *name,
                                            const char *type, lahja_time_t deadline)
{
    if (name == NULL || type == NULL)
        return -EINVAL;
    return wait_until(ep, &ep->subs_changed, p_endpoint, name, type, 0, deadline);
}

int lahja_wait_until_any_endpoint_subscribed_to(lahja_endpoint_t *ep, const char *type,
                                                lahja_time_t deadline)
{
    if (type == NULL)
        return -EINVAL;
    return wait_until(ep, &ep->subs_changed, p_any, type, NULL, 0, deadline);
}

int lahja_wait_until_all_endpoints_subscribed_to(lahja_endpoint_t *ep, const char *type,
                                                 int include_self, lahja_time_t deadline)
{
    if (type == NULL)
        return -EINVAL;
    return wait_until(ep, &ep->subs_changed, p_all, type, NULL, include_self, deadline);
}

int lahja_wait_until_connected_to_cb(lahja_endpoint_t *ep, const char *name, lahja_time_t deadline,
                                     lahja_done_fn cb, void *user, lahja_op_t **op)
{
    if (ep == NULL || name == NULL)
        return -EINVAL;
    return wait_until_cb(ep, &ep->conn_changed, p_connected, name, NULL, 0, deadline, cb, user,
                         op);
}

int lahja_wait_until_connections_change_cb(lahja_endpoint_t *ep, lahja_time_t deadline,
                                           lahja_done_fn cb, void *user, lahja_op_t **op)
{
    if (ep == NULL)
        return -EINVAL;
    return wait_until_cb(ep, &ep->conn_changed, NULL, NULL, NULL, 0, deadline, cb, user, op);
}

int lahja_wait_until_endpoint_subscriptions_change_cb(lahja_endpoint_t *ep, lahja_time_t deadline,
                                                      lahja_done_fn cb, void *user,
                                                      lahja_op_t **op)
{
    if (ep == NULL)
        return -EINVAL;
    return wait_until_cb(ep, &ep->subs_changed, NULL, NULL, NULL, 0, deadline, cb, user, op);
}

int lahja_wait_until_endpoint_subscribed_to_cb(lahja_endpoint_t *ep, const char *name,
                                               const char *type, lahja_time_t deadline,
                                               lahja_done_fn cb, void *user, lahja_op_t **op)
{
    if (ep == NULL || name == NULL || type == NULL)
        return -EINVAL;
    return wait_until_cb(ep, &ep->subs_changed, p_endpoint, name, type, 0, deadline, cb, user,
                         op);
}

int lahja_wait_until_any_endpoint_subscribed_to_cb(lahja_endpoint_t *ep, const char *type,
                                                   lahja_time_t deadline, lahja_done_fn cb,
                                                   void *user, lahja_op_t **op)
{
    if (ep == NULL || type == NULL)
        return -EINVAL;
    return wait_until_cb(ep, &ep->subs_changed, p_any, type, NULL, 0, deadline, cb, user, op);
}

int lahja_wait_until_all_endpoints_subscribed_to_cb(lahja_endpoint_t *ep, const char *type,
                                                    int include_self, lahja_time_t deadline,
                                                    lahja_done_fn cb, void *user,
                                                    lahja_op_t **op)
{
    if (ep == NULL || type == NULL)
        return -EINVAL;
    return wait_until_cb(ep, &ep->subs_changed, p_all, type, NULL, include_self, deadline, cb,
                         user, op);
}
