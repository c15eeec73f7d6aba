/*
 * Connecting, broadcasting, requests and responses: the suspending
 * wrappers over the callback-driven core.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"

/* ------------------------------------------------------------- connect */

int lahja_connect(lahja_endpoint_t *ep, const lahja_conn_config_t *configs, size_t n,
                  lahja_time_t deadline)
{
    if (ep == NULL || (configs == NULL && n > 0))
        return -EINVAL;
    int rc = lahja_ep_check_task(ep);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(configs[i].name, ep->name->s) == 0 || lahja_conn_find(ep, configs[i].name))
            return LAHJA_ECONNREJECTED; /* itself, or already connected */
        for (size_t j = 0; j < i; j++)
            if (strcmp(configs[i].name, configs[j].name) == 0)
                return LAHJA_ECONNREJECTED; /* twice in one call */
    }
    struct connect_op op = { 0, 0, { { NULL, NULL } } };
    lahja_cond_init(&op.done);
    for (size_t i = 0; i < n && op.error == 0; i++)
        if (lahja_conn_connect(ep, &configs[i], &op) == NULL)
            op.error = -ENOMEM;
    while (op.pending > 0 && op.error == 0) {
        rc = lahja_ep_wait(ep, &op.done, deadline);
        if (rc != 0) {
            op.error = rc;
            break;
        }
    }
    if (op.pending > 0) {
        /* Failed or gave up: the connections still under way go. */
        lahja_link_t *l, *tmp;
        lahja_list_foreach_safe(l, tmp, &ep->conns) {
            struct conn *c = lahja_container_of(l, struct conn, link);
            if (c->op == &op)
                lahja_conn_close(c, op.error, lahja_strerror(op.error));
        }
    }
    return op.error;
}

/* ----------------------------------------------------------- broadcast */

static int allowed(const lahja_broadcast_config_t *cfg, const char *name)
{
    return cfg->filter_endpoint == NULL || strcmp(cfg->filter_endpoint, name) == 0;
}

static int peer_wants(const struct conn *c, const lahja_event_t *ev,
                      const lahja_broadcast_config_t *cfg)
{
    if (c->state != CONN_READY || !allowed(cfg, c->peer->s))
        return 0;
    if (cfg->filter_event_id != 0)
        return 1; /* a response goes to the requester whatever it subscribes */
    return lahja_strmap_find(&c->subs, ev->type, ev->type_len) != NULL;
}

/* Visits every receiving peer; stops at the first non-zero return. */
static int foreach_target(lahja_endpoint_t *ep, const lahja_event_t *ev,
                          const lahja_broadcast_config_t *cfg,
                          int (*fn)(struct conn *c, void *arg), void *arg)
{
    if (cfg->internal)
        return 0;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (peer_wants(c, ev, cfg)) {
            int rc = fn(c, arg);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

static int count_one(struct conn *c, void *arg)
{
    (void)c;
    (*(size_t *)arg)++;
    return 0;
}

static int local_wants(const lahja_endpoint_t *ep, const lahja_event_t *ev,
                       const lahja_broadcast_config_t *cfg)
{
    if (!allowed(cfg, ep->name->s))
        return 0;
    if (cfg->filter_event_id != 0) {
        lahja_link_t *l;
        lahja_list_foreach(l, &ep->pending) {
            if (lahja_container_of(l, struct pending, link)->id == cfg->filter_event_id)
                return 1;
        }
        return 0;
    }
    return lahja_has_consumers(ep, ev->type);
}

static int validate(lahja_endpoint_t *ep, const lahja_event_t *ev,
                    const lahja_broadcast_config_t *cfg)
{
    if (ev == NULL || ev->borrowed)
        return ev == NULL ? -EINVAL : LAHJA_EBIND;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    if (cfg->internal && cfg->filter_endpoint != NULL)
        return -EINVAL;
    if (ev->bound)
        return LAHJA_EBIND;
    if (ev->len > ep->opts.max_payload)
        return -EMSGSIZE;
    return 0;
}

struct over {
    size_t limit;
    struct conn *who;
};

/* A receiving peer whose limit the event exceeds: it would drop us. */
static int find_too_small(struct conn *c, void *arg)
{
    struct over *o = arg;
    if (o->limit + LAHJA_WIRE_EVENT_PREFIX_MAX <= c->peer_max)
        return 0;
    o->who = c;
    return 1;
}

/* The event is refused as a whole, before anything is queued, if one of
 * its receivers does not accept payloads that large (its HELLO says). */
static int check_peer_limits(lahja_endpoint_t *ep, const lahja_event_t *ev,
                             const lahja_broadcast_config_t *cfg)
{
    struct over o = { ev->len, NULL };
    if (foreach_target(ep, ev, cfg, find_too_small, &o) == 0)
        return 0;
    lahja_bus_log(ep, LAHJA_LOG_WARNING, "%s refused: %zu bytes is over what %s accepts",
                  ev->type, ev->len, o.who->peer->s);
    return -EMSGSIZE;
}

static int find_over(struct conn *c, void *arg)
{
    struct over *o = arg;
    if (c->queued <= o->limit)
        return 0;
    o->who = c;
    return 1;
}

/* Compresses the payload once, if some receiving peer reads LZ4 and it
 * pays (B9).  Failure to compress just sends it plain. */
static void maybe_compress(lahja_endpoint_t *ep, lahja_event_t *ev)
{
    if (ev->len < ep->opts.compress_threshold || ev->lz4 != NULL)
        return;
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

struct send_arg {
    lahja_event_t *ev;
    uint8_t flags;
    uint64_t id;
    int lz4_wanted;
};

static int want_lz4(struct conn *c, void *arg)
{
    if (c->peer_lz4)
        ((struct send_arg *)arg)->lz4_wanted = 1;
    return 0;
}

static int send_to(struct conn *c, void *arg)
{
    struct send_arg *a = arg;
    int rc = lahja_conn_enqueue_event(c, a->ev, a->flags, a->id);
    if (rc != 0)
        lahja_bus_log(c->ep, LAHJA_LOG_ERROR, "cannot queue %s for %s: %s", a->ev->type,
                      c->peer->s, lahja_strerror(rc));
    return 0; /* the others still get it */
}

/* Binds the event and hands it to every target: the peers' write queues
 * and this endpoint's consumers. */
static int deliver(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                   uint64_t request_id)
{
    /* A subscription change not sent yet goes first, so that a peer
     * answering this event knows what we subscribe to (B19). */
    lahja_ep_send_subs(ep);
    ev->bound = 1;
    ev->origin = lahja_name_ref(ep->name);
    struct send_arg a = { ev, 0, 0, 0 };
    if (cfg->filter_event_id != 0) {
        ev->id = cfg->filter_event_id;
        a.flags = LAHJA_WIRE_RESPONSE;
        a.id = ev->id;
    } else if (ev->is_request) {
        ev->id = request_id;
        a.flags = LAHJA_WIRE_REQUEST;
        a.id = ev->id;
    }
    foreach_target(ep, ev, cfg, want_lz4, &a);
    if (a.lz4_wanted)
        maybe_compress(ep, ev);
    foreach_target(ep, ev, cfg, send_to, &a);
    if (local_wants(ep, ev, cfg)) {
        if (cfg->filter_event_id != 0)
            lahja_deliver_response(ep, ev);
        else
            lahja_dispatch(ep, ev);
    }
    return 0;
}

static const lahja_broadcast_config_t default_config;

/* Checks that somebody receives the event (B12). */
static int has_receivers(lahja_endpoint_t *ep, const lahja_event_t *ev,
                         const lahja_broadcast_config_t *cfg)
{
    size_t n = 0;
    foreach_target(ep, ev, cfg, count_one, &n);
    if (n > 0 || local_wants(ep, ev, cfg))
        return 1;
    return 0;
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
    if (!has_receivers(ep, ev, cfg))
        return cfg->allow_no_subscribers ? 0 : LAHJA_ENOSUBSCRIBERS;
    rc = check_peer_limits(ep, ev, cfg);
    if (rc != 0)
        return rc;
    struct over o = { ep->opts.hard_limit, NULL };
    if (foreach_target(ep, ev, cfg, find_over, &o) != 0) {
        memcpy(ep->blocked, o.who->peer->s, o.who->peer->len + 1);
        return -EAGAIN;
    }
    return deliver(ep, ev, cfg, request_id);
}

int lahja_broadcast_nowait(lahja_endpoint_t *ep, lahja_event_t *ev,
                           const lahja_broadcast_config_t *cfg)
{
    if (ep == NULL)
        return -EINVAL;
    return broadcast_nowait(ep, ev, cfg, ev != NULL && ev->is_request ? ++ep->next_id : 0);
}

/* Suspends while a receiving peer is over its high-water mark (B13). */
static int wait_below_high_water(lahja_endpoint_t *ep, lahja_event_t *ev,
                                 const lahja_broadcast_config_t *cfg, lahja_time_t deadline)
{
    for (;;) {
        struct over o = { ep->opts.high_water, NULL };
        if (foreach_target(ep, ev, cfg, find_over, &o) == 0)
            return 0;
        int rc = lahja_ep_wait(ep, &o.who->drained, deadline);
        if (rc != 0)
            return rc;
        rc = lahja_ep_check(ep);
        if (rc != 0)
            return rc;
    }
}

static int broadcast(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                     lahja_time_t deadline, uint64_t request_id)
{
    if (cfg == NULL)
        cfg = &default_config;
    int rc = validate(ep, ev, cfg);
    if (rc != 0)
        return rc;
    if (lahja_task_current() == NULL)
        return -EPERM;
    if (!has_receivers(ep, ev, cfg))
        return cfg->allow_no_subscribers ? 0 : LAHJA_ENOSUBSCRIBERS;
    rc = check_peer_limits(ep, ev, cfg);
    if (rc == 0)
        rc = wait_below_high_water(ep, ev, cfg, deadline);
    if (rc == 0)
        rc = validate(ep, ev, cfg); /* it may have been broadcast meanwhile */
    if (rc == 0)
        rc = check_peer_limits(ep, ev, cfg); /* the receivers may have changed */
    if (rc != 0)
        return rc;
    return deliver(ep, ev, cfg, request_id);
}

int lahja_broadcast(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                    lahja_time_t deadline)
{
    if (ep == NULL)
        return -EINVAL;
    return broadcast(ep, ev, cfg, deadline, ev != NULL && ev->is_request ? ++ep->next_id : 0);
}

/* ------------------------------------------------------------ requests */

static int collect(struct conn *c, void *arg)
{
    struct pending *p = arg;
    if (p->ntargets < p->nlive)
        p->targets[p->ntargets++] = c;
    return 0;
}

int lahja_request(lahja_endpoint_t *ep, lahja_event_t *req, const lahja_broadcast_config_t *cfg,
                  lahja_time_t deadline, lahja_event_t **response)
{
    if (ep == NULL || req == NULL || response == NULL || !req->is_request)
        return -EINVAL;
    if (cfg == NULL)
        cfg = &default_config;
    int rc = validate(ep, req, cfg);
    if (rc != 0)
        return rc;
    struct pending p = { .id = ++ep->next_id, .response_type = req->response_type };
    lahja_cond_init(&p.ready);
    /* Registered before the broadcast: a local responder answers during
     * it.  The peers it goes to are remembered for B7. */
    size_t n = 0;
    foreach_target(ep, req, cfg, count_one, &n);
    p.local = lahja_has_consumers(ep, req->type) && allowed(cfg, ep->name->s);
    p.targets = n > 0 ? calloc(n, sizeof *p.targets) : NULL;
    if (n > 0 && p.targets == NULL)
        return -ENOMEM;
    p.nlive = n;
    foreach_target(ep, req, cfg, collect, &p);
    p.nlive = p.ntargets;
    lahja_list_push_back(&ep->pending, &p.link);
    rc = broadcast(ep, req, cfg, deadline, p.id);
    while (rc == 0 && p.response == NULL && p.error == 0)
        rc = lahja_ep_wait(ep, &p.ready, deadline);
    lahja_list_remove(&p.link);
    free(p.targets);
    if (p.response != NULL) {
        *response = p.response; /* an answer beats a late cancellation */
        return 0;
    }
    return rc != 0 ? rc : p.error;
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

const char *lahja_endpoint_blocked_peer(const lahja_endpoint_t *ep)
{
    return ep->blocked;
}
