/*
 * Connecting, broadcasting, requests and responses: the suspending
 * wrappers over the callback-driven core.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"

/* ------------------------------------------------------------- connect */

struct connect_call {
    struct lahja_call call;
    struct connect_op op;
};

static int connect_step(struct lahja_call *call, struct lahja_waitq **q)
{
    struct connect_call *cc = (struct connect_call *)call;
    if (cc->op.pending > 0 && cc->op.error == 0) {
        *q = &cc->op.done;
        return LAHJA_PENDING;
    }
    if (cc->op.pending > 0) /* failed: the connections under way go */
        lahja_conn_forget_op(call->ep, &cc->op);
    return cc->op.error;
}

static int connect_abandon(struct lahja_call *call, int why)
{
    struct connect_call *cc = (struct connect_call *)call;
    cc->op.error = why;
    if (cc->op.pending > 0)
        lahja_conn_forget_op(call->ep, &cc->op);
    return why;
}

static const struct lahja_call_kind connect_kind = { "connect", 0, connect_step, connect_abandon };

static int connect_check(lahja_endpoint_t *ep, const lahja_conn_config_t *configs, size_t n)
{
    if (ep == NULL || (configs == NULL && n > 0))
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(configs[i].name, ep->name->s) == 0 || lahja_conn_find(ep, configs[i].name))
            return LAHJA_ECONNREJECTED; /* itself, or already connected */
        for (size_t j = 0; j < i; j++)
            if (strcmp(configs[i].name, configs[j].name) == 0)
                return LAHJA_ECONNREJECTED; /* twice in one call */
    }
    return 0;
}

/* Starts a connection to each config (the call waits for them). */
static void connect_begin(struct connect_call *cc, lahja_endpoint_t *ep,
                          const lahja_conn_config_t *configs, size_t n)
{
    cc->call.kind = &connect_kind;
    cc->call.ep = ep;
    cc->call.detail = cc->op.detail;
    lahja_waitq_init(&cc->op.done);
    for (size_t i = 0; i < n && cc->op.error == 0; i++)
        if (lahja_conn_connect(ep, &configs[i], &cc->op) == NULL)
            cc->op.error = -ENOMEM;
}

int lahja_connect(lahja_endpoint_t *ep, const lahja_conn_config_t *configs, size_t n,
                  lahja_time_t deadline)
{
    int rc = connect_check(ep, configs, n);
    if (rc == 0 && lahja_task_current() == NULL)
        rc = LAHJA_ENOTASK;
    if (rc != 0)
        return rc;
    struct connect_call cc = { .call = { 0 } };
    connect_begin(&cc, ep, configs, n);
    return lahja_call_run(&cc.call, deadline);
}

int lahja_connect_cb(lahja_endpoint_t *ep, const lahja_conn_config_t *configs, size_t n,
                     lahja_time_t deadline, lahja_done_fn cb, void *user, lahja_op_t **out)
{
    if (cb == NULL)
        return -EINVAL;
    int rc = connect_check(ep, configs, n);
    if (rc != 0)
        return rc;
    struct lahja_op *op = lahja_op_new(ep, &connect_kind, sizeof(struct connect_call));
    if (op == NULL)
        return -ENOMEM;
    connect_begin((struct connect_call *)op->call, ep, configs, n);
    lahja_op_start(op, deadline, cb, NULL, user, out);
    return 0;
}

/* ----------------------------------------------------------- broadcast */

static int allowed(const lahja_broadcast_config_t *cfg, const char *name)
{
    return cfg->filter_endpoint == NULL || strcmp(cfg->filter_endpoint, name) == 0;
}

#define ROUTE_YES ((void *)(uintptr_t)1)
#define ROUTE_NO ((void *)(uintptr_t)2)
/* Types remembered per connection before the cache starts over: a
 * publisher of ever new type names must not grow it without end. */
#define ROUTE_MAX 4096

/*
 * Whether a peer with patterns wants ev: decided once per type and kept
 * in c->route (which a new SUBS clears), so that a run of events of one
 * type costs one lookup, as for a peer without patterns.  Lacking memory
 * to remember it, the answer is only not kept.
 */
static int route_wants(struct conn *c, const lahja_event_t *ev)
{
    lahja_strmap_slot_t *s = lahja_strmap_find_h(&c->route, ev->type, ev->type_len, ev->hash);
    if (s != NULL)
        return s->value == ROUTE_YES;
    int wants = lahja_peer_matches(c, ev->type, ev->type_len);
    if (c->route.count >= ROUTE_MAX) {
        lahja_strmap_free(&c->route);
        lahja_strmap_init(&c->route);
    }
    int is_new;
    s = lahja_strmap_insert_h(&c->route, ev->type, ev->type_len, ev->hash, &is_new);
    if (s != NULL)
        s->value = wants ? ROUTE_YES : ROUTE_NO;
    return wants;
}

static int peer_wants(struct conn *c, const lahja_event_t *ev,
                      const lahja_broadcast_config_t *cfg)
{
    if (c->state != CONN_READY || !allowed(cfg, c->peer->s))
        return 0;
    if (cfg->filter_event_id != 0)
        return 1; /* a response goes to the requester whatever it subscribes */
    if (c->npats > 0)
        return route_wants(c, ev);
    return lahja_strmap_find_h(&c->subs, ev->type, ev->type_len, ev->hash) != NULL;
}

/* The peers an event goes to, found in one walk of the connections. */
struct targets {
    struct conn **v;
    size_t n;
    struct conn *small[16];
};

static void targets_free(struct targets *t)
{
    if (t->v != t->small)
        free(t->v);
    t->v = t->small;
    t->n = 0;
}

static int targets_collect(lahja_endpoint_t *ep, const lahja_event_t *ev,
                           const lahja_broadcast_config_t *cfg, struct targets *t)
{
    t->v = t->small;
    t->n = 0;
    if (cfg->internal)
        return 0;
    size_t cap = sizeof t->small / sizeof t->small[0];
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (!peer_wants(c, ev, cfg))
            continue;
        if (t->n == cap) {
            struct conn **v = malloc(2 * cap * sizeof *v);
            if (v == NULL) {
                targets_free(t);
                return -ENOMEM;
            }
            memcpy(v, t->v, t->n * sizeof *v);
            if (t->v != t->small)
                free(t->v);
            t->v = v;
            cap *= 2;
        }
        t->v[t->n++] = c;
    }
    return 0;
}

static int local_wants(const lahja_endpoint_t *ep, const lahja_event_t *ev,
                       const lahja_broadcast_config_t *cfg)
{
    if (!allowed(cfg, ep->name->s))
        return 0;
    if (cfg->filter_event_id != 0)
        return lahja_pending_find(ep, cfg->filter_event_id) != NULL;
    /* An endpoint that consumes nothing of its own still answers the
     * stats request: that one entry needs no lookup for other types. */
    if (ep->types.count == 1 && !ep->opts.no_stats && lahja_list_empty(&ep->patterns) &&
        (ev->type_len != sizeof LAHJA_STATS_REQUEST - 1 ||
         memcmp(ev->type, LAHJA_STATS_REQUEST, ev->type_len) != 0))
        return 0;
    struct type_entry *te = lahja_type_find(ep, ev->type, ev->type_len, ev->hash);
    if (te != NULL && te->n_any > 0)
        return 1;
    if ((te == NULL || te->n == 0) && lahja_list_empty(&ep->patterns))
        return 0;
    /* Consumers limited to origins, or patterns: our own events count
     * as from our own name. */
    return lahja_consumers_want(ep, te, ev->type, ev->type_len, ep->name->s);
}

/* Checks that ev may be broadcast, and hashes its type for the lookups
 * that follow. */
static int validate(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg)
{
    if (ev == NULL || ev->borrowed)
        return ev == NULL ? -EINVAL : LAHJA_EBIND;
    if (!ev->hashed) {
        ev->hash = lahja_strmap_hash(ev->type, ev->type_len);
        ev->hashed = 1;
    }
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    if (cfg->internal && cfg->filter_endpoint != NULL)
        return -EINVAL;
    if (ev->bound)
        return LAHJA_EBIND;
    if (ev->len > ep->opts.max_payload) {
        lahja_ep_error(ep, "%s refused: %zu bytes is over max_payload (%zu)", ev->type, ev->len,
                       ep->opts.max_payload);
        return -EMSGSIZE;
    }
    return 0;
}

/* The event is refused as a whole, before anything is queued, if one of
 * its receivers does not accept payloads that large (its HELLO says). */
static int check_peer_limits(lahja_endpoint_t *ep, const lahja_event_t *ev,
                             const struct targets *t)
{
    for (size_t i = 0; i < t->n; i++) {
        if (ev->len + LAHJA_WIRE_EVENT_PREFIX_MAX > t->v[i]->peer_max) {
            lahja_ep_error(ep, "%s refused: %zu bytes is over what %s accepts", ev->type,
                           ev->len, t->v[i]->peer->s);
            lahja_bus_log(ep, LAHJA_LOG_DEBUG, "%s", ep->errmsg); /* returned */
            return -EMSGSIZE;
        }
    }
    return 0;
}

/* A receiving peer over its high-water mark (or hard limit), or NULL. */
static struct conn *find_over(const struct targets *t, int hard)
{
    for (size_t i = 0; i < t->n; i++)
        if (lahja_conn_over(t->v[i], hard))
            return t->v[i];
    return NULL;
}

#define SAMPLE_MIN (16 * 1024) /* payloads this large are sampled first */
#define SAMPLE_LEN (4 * 1024)

/*
 * Whether a large payload is worth compressing: a 4 KiB sample from its
 * middle must shrink by an eighth.  Compressing incompressible data
 * costs more than sending it (a fifth of a sender's time at 16 KiB); the
 * sample costs a fraction of that.
 */
static int worth_compressing(const lahja_event_t *ev)
{
    if (ev->len < SAMPLE_MIN)
        return 1;
    uint8_t out[SAMPLE_LEN + SAMPLE_LEN / 255 + 16];
    size_t n = lahja_wire_lz4_compress(ev->payload + ev->len / 2 - SAMPLE_LEN / 2, SAMPLE_LEN,
                                       out, sizeof out);
    return n != 0 && n < SAMPLE_LEN - SAMPLE_LEN / 8;
}

/* Compresses the payload once, if some receiving peer reads LZ4 and it
 * pays (B9).  Failure to compress just sends it plain. */
static void maybe_compress(lahja_endpoint_t *ep, lahja_event_t *ev, const struct targets *t)
{
    if (ev->len < ep->opts.compress_threshold || ev->lz4 != NULL)
        return;
    size_t i;
    for (i = 0; i < t->n && !t->v[i]->peer_lz4; i++)
        ;
    if (i == t->n || !worth_compressing(ev))
        return; /* nobody reads it, or it would not pay */
    size_t cap = lahja_wire_lz4_bound(ev->len);
    ev->lz4 = malloc(cap);
    if (ev->lz4 != NULL)
        ev->lz4_len = lahja_wire_lz4_compress(ev->payload, ev->len, ev->lz4, cap);
    if (ev->lz4_len == 0) {
        free(ev->lz4);
        ev->lz4 = NULL;
        return;
    }
    uint8_t *fit = realloc(ev->lz4, ev->lz4_len); /* keep what it takes */
    if (fit != NULL)
        ev->lz4 = fit;
}

/* A copy for this endpoint's consumers that keep events (streams,
 * waiters), made before anything is queued, when the event cannot be
 * referenced (a stack event): so that running out of memory fails the
 * broadcast instead of losing the event for them. */
static int local_copy(lahja_endpoint_t *ep, lahja_event_t *ev, lahja_event_t **copy)
{
    *copy = NULL;
    if (!ev->on_stack)
        return 0;
    struct type_entry *te = lahja_type_find(ep, ev->type, ev->type_len, ev->hash);
    /* With patterns, one of them may keep it: a copy made for nothing
     * costs less than a walk of the patterns here. */
    if ((te == NULL || !lahja_type_keeps(te)) && lahja_list_empty(&ep->patterns))
        return 0;
    if ((*copy = lahja_event_ref(ev)) == NULL)
        return -ENOMEM;
    (*copy)->hash = ev->hash;
    (*copy)->hashed = 1;
    return 0;
}

/*
 * Binds the event and hands it to every target: the peers' write queues
 * and this endpoint's consumers.  All or nothing: the room for every
 * peer is taken first, and if some cannot be, nothing is queued anywhere,
 * the event stays unbound and -ENOMEM is returned (B30: a success is
 * never returned for an event that was not queued).
 */
static int deliver(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                   const struct targets *t, int local, uint64_t request_id)
{
    uint8_t flags = 0;
    uint64_t id = 0;
    if (cfg->filter_event_id != 0) {
        flags = LAHJA_WIRE_RESPONSE;
        id = cfg->filter_event_id;
    } else if (ev->is_request) {
        flags = LAHJA_WIRE_REQUEST;
        id = request_id;
    }
    maybe_compress(ep, ev, t);
    lahja_lend_prepare(ep, ev, t->v, t->n);
    struct conn_slot few[16], *slots = few;
    if (t->n > sizeof few / sizeof few[0] && (slots = malloc(t->n * sizeof *slots)) == NULL)
        return -ENOMEM;
    size_t i;
    int rc = 0;
    for (i = 0; i < t->n && rc == 0; i++)
        rc = lahja_conn_reserve(t->v[i], ev, flags, &slots[i]);
    if (rc != 0)
        i--; /* the one that failed took nothing */
    ev->bound = 1;
    /* A stack event (the bytes forms) lives within this call, which the
     * endpoint's name outlives: it borrows the name.  Name references are
     * atomic, and this is the path of every small broadcast. */
    ev->origin = ev->on_stack ? ep->name : lahja_name_ref(ep->name);
    ev->id = id;
    lahja_event_t *copy = NULL;
    if (rc == 0 && local)
        rc = local_copy(ep, ev, &copy);
    if (rc != 0) {
        while (i-- > 0)
            lahja_conn_cancel(t->v[i], ev, &slots[i]);
        ev->bound = 0;
        if (!ev->on_stack)
            lahja_name_unref(ev->origin);
        ev->origin = NULL;
        ev->id = 0;
        lahja_ep_error(ep, "cannot queue %s: %s", ev->type, lahja_strerror(rc));
        lahja_bus_log(ep, LAHJA_LOG_DEBUG, "%s", ep->errmsg); /* returned */
    } else {
        for (i = 0; i < t->n; i++)
            lahja_conn_commit(t->v[i], ev, &slots[i], flags, id);
        if (local && cfg->filter_event_id != 0)
            lahja_deliver_response(ep, copy != NULL ? copy : ev);
        else if (local)
            lahja_dispatch(ep, copy != NULL ? copy : ev);
        lahja_event_unref(copy);
    }
    if (slots != few)
        free(slots);
    return rc;
}

static const lahja_broadcast_config_t default_config;

/*
 * Finds the receivers: the peers in *t, this endpoint in *local.
 * Returns 1 if there are some, 0 if none (B12), or an error.  A
 * subscription change not sent yet goes out first, so that a peer
 * answering this event knows what we subscribe to (B19).
 */
static int receivers(lahja_endpoint_t *ep, const lahja_event_t *ev,
                     const lahja_broadcast_config_t *cfg, struct targets *t, int *local)
{
    lahja_ep_send_subs(ep);
    int rc = targets_collect(ep, ev, cfg, t);
    if (rc != 0)
        return rc;
    *local = local_wants(ep, ev, cfg);
    if (t->n == 0 && !*local)
        return 0;
    rc = check_peer_limits(ep, ev, t);
    if (rc != 0) {
        targets_free(t);
        return rc;
    }
    return 1;
}

/* Nobody receives ev (B12): LAHJA_ENOSUBSCRIBERS, or with
 * allow_no_subscribers, 0 and the event bound all the same (B8), as
 * broadcast to nobody. */
static int nobody(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                  const struct targets *none, uint64_t request_id)
{
    if (!cfg->allow_no_subscribers) {
        if (cfg->filter_endpoint != NULL)
            lahja_ep_error(ep, "nobody subscribes to %s at %s", ev->type, cfg->filter_endpoint);
        else
            lahja_ep_error(ep, "nobody subscribes to %s", ev->type);
        return LAHJA_ENOSUBSCRIBERS;
    }
    return deliver(ep, ev, cfg, none, 0, request_id);
}

/* ---------------------------------------------------- remembered routes */

#define ROUTE_LEN_MAX 2048 /* payloads that may take a remembered route */

/* Whether cfg routes as the default does. */
static int plain_config(const lahja_broadcast_config_t *cfg)
{
    return cfg == NULL
           || (cfg->filter_endpoint == NULL && cfg->filter_event_id == 0 && !cfg->internal);
}

/* Whether ev may take a remembered route under cfg. */
static int routable(const lahja_event_t *ev, const lahja_broadcast_config_t *cfg)
{
    return ev->len <= ROUTE_LEN_MAX && ev->lent == NULL && plain_config(cfg);
}

/* The remembered route if it is type's (current or not), else NULL. */
static const struct route *route_find(const lahja_endpoint_t *ep, const char *type, size_t tlen,
                                      uint64_t hash)
{
    const struct route *r = &ep->route;
    if (r->hash != hash || r->tlen != tlen || memcmp(r->type, type, tlen) != 0)
        return NULL;
    return r;
}

/* The remembered route of ev's type if it is current and goes to peers. */
static const struct route *route_current(const lahja_endpoint_t *ep, const lahja_event_t *ev)
{
    const struct route *r = route_find(ep, ev->type, ev->type_len, ev->hash);
    return r != NULL && r->gen == ep->route_gen && r->n > 0 ? r : NULL;
}

/*
 * Remembers where ev (routable) just went: the peers t, and this
 * endpoint if `local`.  Only at the second event of a run of one type,
 * so that broadcasts of ever other types do not pay for it.  A route
 * that cannot be taken without finding the receivers (a consumer of our
 * own, a peer with patterns, a type not yet bound, too many peers) is
 * remembered as the full path.
 */
static void route_learn(lahja_endpoint_t *ep, const lahja_event_t *ev, const struct targets *t,
                        int local)
{
    int run = ep->route_last == ev->hash;
    ep->route_last = ev->hash;
    struct route *r = &ep->route;
    if (!run || (r->gen == ep->route_gen && route_find(ep, ev->type, ev->type_len, ev->hash)))
        return;
    r->gen = ep->route_gen;
    r->hash = ev->hash;
    r->tlen = ev->type_len;
    memcpy(r->type, ev->type, ev->type_len);
    ep->bytes_routed = ep->bytes_tlen == r->tlen && memcmp(ep->bytes_type, r->type, r->tlen) == 0;
    r->n = 0;
    if (local || t->n == 0 || t->n > ROUTE_PEERS)
        return;
    size_t max_len = ep->opts.max_payload;
    uint8_t lz4 = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct conn *c = t->v[i];
        lahja_strmap_slot_t *s = lahja_strmap_find_h(&c->tx.map, ev->type, ev->type_len, ev->hash);
        if (s == NULL || c->npats > 0)
            return;
        r->v[i] = c;
        r->tid[i] = (uint32_t)(uintptr_t)s->value;
        if (c->peer_max < LAHJA_WIRE_EVENT_PREFIX_MAX + max_len)
            max_len = c->peer_max > LAHJA_WIRE_EVENT_PREFIX_MAX
                      ? c->peer_max - LAHJA_WIRE_EVENT_PREFIX_MAX : 0;
        lz4 |= c->peer_lz4;
    }
    r->n = t->n;
    r->max_len = max_len;
    r->lz4 = lz4;
}

/* lahja_conn_put_small down route r: 1 if queued, 0 without memory. */
static __attribute__((noinline)) int put_small(const struct route *r, uint8_t flags, uint64_t id,
                                               const void *payload, size_t len)
{
    return lahja_conn_put_small(r->v, r->tid, r->n, flags, id, payload, len) == 0;
}

/*
 * Queues a payload down route r (found for its type): 1 if queued; 0 if
 * it must take the full path (no current route, a peer over its
 * high-water mark, a payload to compress, or no memory), which then says
 * why if it fails.
 */
static inline __attribute__((always_inline)) int route_put(lahja_endpoint_t *ep,
                                                           const struct route *r, uint8_t flags,
                                                           uint64_t id, const void *payload,
                                                           size_t len)
{
    if (r == NULL || r->n == 0 || r->gen != ep->route_gen || len > r->max_len
        || (r->lz4 && len >= ep->opts.compress_threshold) || ep->subs_dirty || ep->subs_retry)
        return 0;
    /* Into every peer's open window, where each has one. */
    size_t need = LAHJA_WIRE_PLAIN_PREFIX + len;
    if (r->n == 1) {
        if (lahja_conn_over(r->v[0], 0))
            return 0;
        if (flags == 0 && lahja_conn_plain_ok(r->v[0], need)) {
            lahja_conn_plain_put(r->v[0], r->tid[0], payload, len);
            return 1;
        }
        return put_small(r, flags, id, payload, len);
    }
    size_t i, ok = flags == 0;
    for (i = 0; i < r->n; i++) {
        if (lahja_conn_over(r->v[i], 0))
            return 0;
        ok = ok && lahja_conn_plain_ok(r->v[i], need);
    }
    if (ok) {
        for (i = 0; i < r->n; i++)
            lahja_conn_plain_put(r->v[i], r->tid[i], payload, len);
        return 1;
    }
    return put_small(r, flags, id, payload, len);
}

/* ev (routable, valid) down its remembered route, bound as deliver binds
 * it: 1, or 0 for the full path. */
static int route_send(lahja_endpoint_t *ep, lahja_event_t *ev, uint64_t request_id)
{
    uint8_t flags = ev->is_request ? LAHJA_WIRE_REQUEST : 0;
    uint64_t id = ev->is_request ? request_id : 0;
    if (!route_put(ep, route_find(ep, ev->type, ev->type_len, ev->hash), flags, id, ev->payload,
                   ev->len))
        return 0;
    ev->bound = 1;
    ev->origin = ev->on_stack ? ep->name : lahja_name_ref(ep->name);
    ev->id = id;
    return 1;
}

static int broadcast_nowait(lahja_endpoint_t *ep, lahja_event_t *ev,
                            const lahja_broadcast_config_t *cfg, uint64_t request_id)
{
    if (cfg == NULL)
        cfg = &default_config;
    int rc = validate(ep, ev, cfg);
    if (rc != 0)
        return rc;
    ep->blocked[0] = '\0';
    struct targets t;
    int local;
    rc = receivers(ep, ev, cfg, &t, &local);
    if (rc <= 0)
        return rc < 0 ? rc : nobody(ep, ev, cfg, &t, request_id);
    struct conn *over = find_over(&t, 1);
    if (over != NULL) {
        memcpy(ep->blocked, over->peer->s, over->peer->len + 1);
        over->blocked++;
        rc = -EAGAIN;
    } else {
        rc = deliver(ep, ev, cfg, &t, local, request_id);
    }
    targets_free(&t);
    return rc;
}

int lahja_broadcast_nowait(lahja_endpoint_t *ep, lahja_event_t *ev,
                           const lahja_broadcast_config_t *cfg)
{
    if (ep == NULL)
        return -EINVAL;
    return broadcast_nowait(ep, ev, cfg, ev != NULL && ev->is_request ? ++ep->next_id : 0);
}

/*
 * A broadcast that waits while a receiving peer is over its high-water
 * mark (B13); the receivers are found again at every step.
 */
struct bcast_call {
    struct lahja_call call;
    lahja_event_t *ev;
    const lahja_broadcast_config_t *cfg;
    uint64_t request_id;
    /* the callback form's copies */
    lahja_event_t *held;             /* its reference to ev */
    lahja_broadcast_config_t cfg_copy;
    char filter[LAHJA_NAME_MAX + 1];
    const struct conn *over;         /* the peer it last waited for (B36) */
};

/* bcast_try once the event is known valid. */
static int bcast_route(struct bcast_call *b, struct lahja_waitq **q)
{
    lahja_endpoint_t *ep = b->call.ep;
    int route = routable(b->ev, b->cfg);
    if (route && route_send(ep, b->ev, b->request_id))
        return 0;
    struct targets t;
    int rc;
    int local;
    rc = receivers(ep, b->ev, b->cfg, &t, &local);
    if (rc <= 0)
        return rc < 0 ? rc : nobody(ep, b->ev, b->cfg, &t, b->request_id);
    struct conn *over = find_over(&t, 0);
    if (over == NULL) {
        rc = deliver(ep, b->ev, b->cfg, &t, local, b->request_id);
        if (rc == 0 && route)
            route_learn(ep, b->ev, &t, local);
    }
    targets_free(&t);
    if (over == NULL)
        return rc;
    over->blocked += over != b->over; /* once per broadcast and peer */
    b->over = over;
    *q = &over->drained;
    return LAHJA_PENDING;
}

static int bcast_try(struct bcast_call *b, struct lahja_waitq **q)
{
    int rc = validate(b->call.ep, b->ev, b->cfg); /* stopped, or broadcast meanwhile */
    return rc != 0 ? rc : bcast_route(b, q);
}

static void bcast_release(struct bcast_call *b)
{
    lahja_event_unref(b->held);
    b->held = NULL;
}

static int bcast_step(struct lahja_call *call, struct lahja_waitq **q)
{
    int rc = bcast_try((struct bcast_call *)call, q);
    if (rc != LAHJA_PENDING)
        bcast_release((struct bcast_call *)call);
    return rc;
}

static int bcast_abandon(struct lahja_call *call, int why)
{
    bcast_release((struct bcast_call *)call);
    return why;
}

static const struct lahja_call_kind bcast_kind = { "broadcast", 0, bcast_step, bcast_abandon };

/* Sets every field but the callback form's copies (not zeroed: this is
 * every lahja_broadcast's path). */
static void bcast_init(struct bcast_call *b, lahja_endpoint_t *ep, lahja_event_t *ev,
                       const lahja_broadcast_config_t *cfg, uint64_t request_id)
{
    b->call.kind = &bcast_kind;
    b->call.ep = ep;
    b->call.result = NULL;
    b->call.detail = NULL;
    b->held = NULL;
    b->ev = ev;
    b->cfg = cfg != NULL ? cfg : &default_config;
    b->request_id = request_id;
    b->over = NULL;
}

/* The callback form's own copies of what the caller may free. */
static void bcast_keep(struct bcast_call *b)
{
    b->held = lahja_event_ref(b->ev); /* an owned event: itself */
    b->cfg_copy = *b->cfg;
    if (b->cfg->filter_endpoint != NULL) {
        snprintf(b->filter, sizeof b->filter, "%s", b->cfg->filter_endpoint);
        b->cfg_copy.filter_endpoint = b->filter;
    }
    b->cfg = &b->cfg_copy;
}

static int broadcast(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                     lahja_time_t deadline, uint64_t request_id)
{
    struct bcast_call b;
    bcast_init(&b, ep, ev, cfg, request_id);
    int rc = validate(ep, ev, b.cfg);
    if (rc != 0)
        return rc;
    if (lahja_task_current() == NULL)
        return LAHJA_ENOTASK;
    /* Most broadcasts need not wait: they go without the driver. */
    struct lahja_waitq *q;
    uint32_t seq = ep->errseq;
    rc = bcast_route(&b, &q);
    if (rc == LAHJA_PENDING)
        return lahja_call_run(&b.call, deadline);
    if (rc < 0) {
        lahja_call_explain(&b.call, rc, seq, ep->errmsg, sizeof ep->errmsg);
        ep->errseq++;
    }
    return rc;
}

int lahja_broadcast(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                    lahja_time_t deadline)
{
    if (ep == NULL)
        return -EINVAL;
    return broadcast(ep, ev, cfg, deadline, ev != NULL && ev->is_request ? ++ep->next_id : 0);
}

int lahja_broadcast_try(lahja_endpoint_t *ep, lahja_event_t *ev,
                        const lahja_broadcast_config_t *cfg)
{
    struct bcast_call b;
    bcast_init(&b, ep, ev, cfg, ev->is_request ? ++ep->next_id : 0);
    struct lahja_waitq *q;
    int rc = bcast_try(&b, &q);
    if (rc == LAHJA_PENDING) /* the waiting call that follows counts it */
        lahja_container_of(q, struct conn, drained)->blocked--;
    return rc;
}

int lahja_broadcast_cb(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                       lahja_time_t deadline, lahja_done_fn cb, void *user, lahja_op_t **out)
{
    if (ep == NULL || cb == NULL)
        return -EINVAL;
    int rc = validate(ep, ev, cfg != NULL ? cfg : &default_config);
    if (rc != 0)
        return rc;
    struct lahja_op *op = lahja_op_new(ep, &bcast_kind, sizeof(struct bcast_call));
    if (op == NULL)
        return -ENOMEM;
    struct bcast_call *b = (struct bcast_call *)op->call;
    bcast_init(b, ep, ev, cfg, ev->is_request ? ++ep->next_id : 0);
    bcast_keep(b);
    lahja_op_start(op, deadline, cb, NULL, user, out);
    return 0;
}

#define BYTES_STACK_MAX 65536 /* what lahja_broadcast_bytes sends without an event */

/* lahja_broadcast_bytes, but for a run of one type down its route. */
static __attribute__((noinline)) int broadcast_bytes_full(lahja_endpoint_t *ep, const char *type,
                                                          size_t tlen, const void *payload,
                                                          size_t len,
                                                          const lahja_broadcast_config_t *cfg,
                                                          lahja_time_t deadline)
{
    /* A run of broadcasts of one type checks and hashes it once. */
    uint64_t hash;
    if (tlen == ep->bytes_tlen && memcmp(type, ep->bytes_type, tlen) == 0) {
        hash = ep->bytes_hash;
    } else {
        if (!lahja_event_type_valid(type, tlen))
            return -EINVAL;
        hash = lahja_strmap_hash(type, tlen);
        memcpy(ep->bytes_type, type, tlen);
        ep->bytes_type[tlen] = '\0';
        ep->bytes_tlen = tlen;
        ep->bytes_hash = hash;
        ep->bytes_routed = route_find(ep, type, tlen, hash) != NULL;
    }
    if (len > BYTES_STACK_MAX) {
        lahja_event_t *ev;
        int rc = lahja_event_make(type, tlen, NULL, payload, len, &ev);
        if (rc == 0)
            rc = broadcast(ep, ev, cfg, deadline, 0);
        lahja_event_unref(ev);
        return rc;
    }
    /* Never referenced beyond this call: lahja_event_ref copies it. */
    lahja_event_t ev = {
        .refs = 1, .on_stack = 1,
        .type = type, .type_len = tlen, .hash = hash, .hashed = 1,
        .payload = payload, .len = len,
    };
    int rc = broadcast(ep, &ev, cfg, deadline, 0);
    free(ev.lz4); /* its origin was borrowed */
    return rc;
}

int lahja_broadcast_bytes(lahja_endpoint_t *ep, const char *type, const void *payload, size_t len,
                          const lahja_broadcast_config_t *cfg, lahja_time_t deadline)
{
    if (ep == NULL || type == NULL || (payload == NULL && len > 0))
        return -EINVAL;
    /* The type of the last call, whose route is known, from a task of the
     * endpoint's thread (lahja_ep_check_task's checks, inline): without
     * an event. */
    if (ep->bytes_routed && len <= ROUTE_LEN_MAX && plain_config(cfg)
        && ep->rt == lahja_tls_rt && lahja_tls_task != NULL && ep->started && !ep->stopped
        && strcmp(type, ep->bytes_type) == 0
        && route_put(ep, &ep->route, 0, 0, payload, len))
        return 0;
    return broadcast_bytes_full(ep, type, strlen(type), payload, len, cfg, deadline);
}

/* ------------------------------------------------------------ requests */

/* A request: broadcast (waiting under high water), then its response. */
struct request_call {
    struct bcast_call b;
    struct pending p;
    int sent;
};

/* The request no longer waits: it leaves the pending table. */
static void request_fini(struct request_call *r)
{
    lahja_pending_remove(r->b.call.ep, &r->p);
    if (r->p.targets != r->p.few)
        free(r->p.targets);
    r->p.targets = r->p.few;
    bcast_release(&r->b);
}

/* The result once known: the response (an answer beats a late
 * cancellation), or the request's error. */
static int request_result(struct request_call *r, int rc)
{
    if (r->p.response != NULL) {
        r->b.call.result = r->p.response;
        r->p.response = NULL;
        rc = 0;
    } else if (rc == 0) {
        rc = r->p.error;
    }
    request_fini(r);
    return rc;
}

static int request_step(struct lahja_call *call, struct lahja_waitq **q)
{
    struct request_call *r = (struct request_call *)call;
    if (!r->sent) {
        int rc = bcast_try(&r->b, q);
        if (rc == LAHJA_PENDING)
            return rc;
        if (rc != 0)
            return request_result(r, rc);
        r->sent = 1;
    }
    if (r->p.response != NULL || r->p.error != 0)
        return request_result(r, 0);
    *q = &r->p.ready;
    return LAHJA_PENDING;
}

static int request_abandon(struct lahja_call *call, int why)
{
    return request_result((struct request_call *)call, why);
}

static const struct lahja_call_kind request_kind = { "request", 0, request_step, request_abandon };

/*
 * Registers the request before it is broadcast: a local responder
 * answers during the broadcast.  The peers it goes to are remembered for
 * B7.  Errors: those of validate, -ENOMEM.
 */
static int request_begin(struct request_call *r, lahja_endpoint_t *ep, lahja_event_t *req,
                         const lahja_broadcast_config_t *cfg)
{
    struct pending *p = &r->p;
    /* Field by field: the call is a kilobyte, mostly buffers, on the
     * path of every request. */
    r->sent = 0;
    p->response = NULL;
    p->error = 0;
    p->detail[0] = '\0';
    bcast_init(&r->b, ep, req, cfg, 0);
    r->b.call.kind = &request_kind;
    int rc = validate(ep, req, r->b.cfg);
    if (rc != 0)
        return rc;
    p->id = ++ep->next_id;
    p->response_type = req->response_type;
    p->type = req->type;
    r->b.call.detail = p->detail;
    r->b.request_id = p->id;
    lahja_waitq_init(&p->ready);
    struct targets t;
    const struct route *known = routable(req, r->b.cfg) ? route_current(ep, req) : NULL;
    if (known != NULL) { /* the peers it goes to, remembered */
        t.v = t.small;
        t.n = known->n;
        memcpy(t.v, known->v, known->n * sizeof *t.v);
    } else if ((rc = targets_collect(ep, req, r->b.cfg, &t)) != 0) {
        return rc;
    }
    p->local = lahja_event_has_consumers(ep, req) && allowed(r->b.cfg, ep->name->s);
    p->targets = t.n <= sizeof p->few / sizeof p->few[0] ? p->few : malloc(t.n * sizeof *p->targets);
    if (p->targets == NULL || lahja_pending_add(ep, p) != 0) {
        targets_free(&t);
        if (p->targets != p->few)
            free(p->targets);
        return -ENOMEM;
    }
    if (t.n > 0)
        memcpy(p->targets, t.v, t.n * sizeof *p->targets);
    p->ntargets = p->nlive = t.n;
    targets_free(&t);
    return 0;
}

int lahja_request(lahja_endpoint_t *ep, lahja_event_t *req, const lahja_broadcast_config_t *cfg,
                  lahja_time_t deadline, lahja_event_t **response)
{
    if (ep == NULL || req == NULL || response == NULL || !req->is_request)
        return -EINVAL;
    int rc = lahja_ep_check_task(ep);
    if (rc != 0)
        return rc;
    struct request_call r; /* request_begin sets what it reads */
    rc = request_begin(&r, ep, req, cfg);
    if (rc != 0)
        return rc;
    rc = lahja_call_run(&r.b.call, deadline);
    if (rc == 0)
        *response = r.b.call.result;
    return rc;
}

int lahja_request_cb(lahja_endpoint_t *ep, lahja_event_t *req, const lahja_broadcast_config_t *cfg,
                     lahja_time_t deadline, lahja_event_done_fn cb, void *user, lahja_op_t **out)
{
    if (ep == NULL || req == NULL || cb == NULL || !req->is_request)
        return -EINVAL;
    struct lahja_op *op = lahja_op_new(ep, &request_kind, sizeof(struct request_call));
    if (op == NULL)
        return -ENOMEM;
    struct request_call *r = (struct request_call *)op->call;
    int rc = request_begin(r, ep, req, cfg);
    if (rc != 0) {
        free(op);
        return rc;
    }
    bcast_keep(&r->b);
    lahja_op_start(op, deadline, NULL, cb, user, out);
    return 0;
}

int lahja_respond(lahja_endpoint_t *ep, const lahja_event_t *request, lahja_event_t *response)
{
    if (ep == NULL || request == NULL || response == NULL)
        return -EINVAL;
    if (!request->is_request || request->origin == NULL || request->id == 0)
        return -EINVAL;
    lahja_broadcast_config_t cfg = {
        .filter_endpoint = request->origin->s,
        .filter_event_id = request->id,
    };
    return broadcast_nowait(ep, response, &cfg, 0);
}

int lahja_request_bytes(lahja_endpoint_t *ep, const char *type, const char *response_type,
                        const void *payload, size_t len, const lahja_broadcast_config_t *cfg,
                        lahja_time_t deadline, lahja_event_t **response)
{
    if (ep == NULL || response == NULL)
        return -EINVAL;
    lahja_event_t *req = NULL;
    int rc = lahja_request_new(type, response_type, payload, len, &req);
    if (rc == 0)
        rc = lahja_request(ep, req, cfg, deadline, response);
    lahja_event_unref(req);
    return rc;
}

int lahja_broadcast_bytes_cb(lahja_endpoint_t *ep, const char *type, const void *payload,
                             size_t len, const lahja_broadcast_config_t *cfg,
                             lahja_time_t deadline, lahja_done_fn cb, void *user,
                             lahja_op_t **op)
{
    if (ep == NULL || cb == NULL)
        return -EINVAL;
    lahja_event_t *ev = NULL;
    int rc = lahja_event_new(type, payload, len, &ev);
    if (rc == 0)
        rc = lahja_broadcast_cb(ep, ev, cfg, deadline, cb, user, op);
    lahja_event_unref(ev); /* the call holds its own */
    return rc;
}

int lahja_request_bytes_cb(lahja_endpoint_t *ep, const char *type, const char *response_type,
                           const void *payload, size_t len, const lahja_broadcast_config_t *cfg,
                           lahja_time_t deadline, lahja_event_done_fn cb, void *user,
                           lahja_op_t **op)
{
    if (ep == NULL || cb == NULL)
        return -EINVAL;
    lahja_event_t *req = NULL;
    int rc = lahja_request_new(type, response_type, payload, len, &req);
    if (rc == 0)
        rc = lahja_request_cb(ep, req, cfg, deadline, cb, user, op);
    lahja_event_unref(req);
    return rc;
}

int lahja_respond_bytes(lahja_endpoint_t *ep, const lahja_event_t *request, const char *type,
                        const void *payload, size_t len)
{
    if (ep == NULL || request == NULL || type == NULL || (payload == NULL && len > 0))
        return -EINVAL;
    size_t tlen = strlen(type);
    if (!lahja_event_type_valid(type, tlen))
        return -EINVAL;
    if (len > BYTES_STACK_MAX) {
        lahja_event_t *ev;
        int rc = lahja_event_make(type, tlen, NULL, payload, len, &ev);
        if (rc == 0)
            rc = lahja_respond(ep, request, ev);
        lahja_event_unref(ev);
        return rc;
    }
    /* As lahja_broadcast_bytes: never referenced beyond this call. */
    lahja_event_t ev = {
        .refs = 1, .on_stack = 1,
        .type = type, .type_len = tlen,
        .payload = payload, .len = len,
    };
    int rc = lahja_respond(ep, request, &ev);
    free(ev.lz4); /* its origin was borrowed */
    return rc;
}

const char *lahja_endpoint_blocked_peer(const lahja_endpoint_t *ep)
{
    return lahja_rt_wrong_thread(ep->rt) ? "" : ep->blocked;
}
