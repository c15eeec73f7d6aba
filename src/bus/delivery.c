/*
 * Delivery accounting (B30): what each peer was sent, what it confirmed
 * with its receipts, and what was lost with a connection that ended
 * before confirming it; and the wait until every peer has confirmed.
 *
 * Counts live in the connection while it is up and are folded into the
 * peer's totals (by name, so that they outlive reconnections) when it
 * ends.  The totals hold one small entry per peer name, and forget a
 * peer that is gone and lost nothing once more than TOTALS_KEEP names
 * are known: peers that come under ever new names must not grow us
 * without bound (what they were sent stays in the endpoint's sums).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"

#define TOTALS_KEEP 4096

/* A lahja_wait_until_delivered call: each connection it waits for, and
 * the count that connection must confirm. */
struct delivery_wait {
    lahja_link_t link;           /* in ep->delivery_waits */
    struct delivery_target {
        struct conn *c;          /* NULL once confirmed or ended */
        uint64_t target;
    } *v, few[8];
    size_t n;
    int lost;                    /* a connection ended unconfirmed */
};

struct peer_totals *lahja_delivery_totals(lahja_endpoint_t *ep, const lahja_name_t *name)
{
    int is_new;
    lahja_strmap_slot_t *s = lahja_strmap_insert(&ep->totals, name->s, name->len, &is_new);
    if (s == NULL)
        return NULL;
    if (is_new && (s->value = calloc(1, sizeof(struct peer_totals))) == NULL) {
        lahja_strmap_remove(&ep->totals, s);
        return NULL;
    }
    return s->value;
}

/* Drops c's peer's totals, unless another connection still counts on
 * them. */
static void totals_forget(lahja_endpoint_t *ep, struct conn *c)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        const struct conn *o = lahja_container_of(l, struct conn, link);
        if (o != c && o->totals == c->totals)
            return;
    }
    lahja_strmap_slot_t *s = lahja_strmap_find(&ep->totals, c->peer->s, c->peer->len);
    if (s != NULL) {
        free(s->value);
        lahja_strmap_remove(&ep->totals, s);
    }
    c->totals = NULL;
}

void lahja_delivery_conn_ended(lahja_endpoint_t *ep, struct conn *c)
{
    uint64_t lost = c->tx_events - c->confirmed;
    struct peer_totals *t = c->totals; /* made when it became READY */
    ep->all.sent += c->tx_events;
    ep->all.confirmed += c->confirmed;
    ep->all.lost += lost;
    t->sent += c->tx_events;
    t->confirmed += c->confirmed;
    t->lost += lost;
    if (lost == 0 && t->lost == 0 && ep->totals.count > TOTALS_KEEP)
        totals_forget(ep, c);
    /* The loss is in the line conn_end logs. */
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->delivery_waits) {
        struct delivery_wait *w = lahja_container_of(l, struct delivery_wait, link);
        for (size_t i = 0; i < w->n; i++) {
            if (w->v[i].c != c)
                continue;
            if (c->confirmed < w->v[i].target)
                w->lost = 1;
            w->v[i].c = NULL;
        }
    }
    lahja_waitq_wake(&ep->delivered);
    lahja_ep_linger_check(ep);
}

void lahja_delivery_progress(lahja_endpoint_t *ep)
{
    lahja_waitq_wake(&ep->delivered);
    lahja_ep_linger_check(ep);
}

void lahja_delivery_free(lahja_endpoint_t *ep)
{
    for (size_t i = 0; i < ep->totals.nslots; i++)
        if (lahja_strmap_live(&ep->totals.slots[i]))
            free(ep->totals.slots[i].value);
    lahja_strmap_free(&ep->totals);
}

int lahja_delivery_stats(const lahja_endpoint_t *ep, const char *peer, lahja_delivery_t *out)
{
    if (ep == NULL || out == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(ep->rt))
        return LAHJA_EWRONGTHREAD;
    struct peer_totals sum = ep->all;
    int known = 1;
    if (peer != NULL) {
        lahja_strmap_slot_t *s = lahja_strmap_find(&ep->totals, peer, strlen(peer));
        known = s != NULL;
        sum = known ? *(struct peer_totals *)s->value : (struct peer_totals){ 0, 0, 0 };
    }
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        const struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->peer == NULL || (peer != NULL && strcmp(c->peer->s, peer) != 0))
            continue;
        known = 1;
        sum.sent += c->tx_events;
        sum.confirmed += c->confirmed;
    }
    if (!known)
        return -ENOENT;
    *out = (lahja_delivery_t){ .sent = sum.sent, .confirmed = sum.confirmed, .lost = sum.lost };
    return 0;
}

/* Whether every connection w waits for has confirmed its count. */
static int wait_done(struct delivery_wait *w)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->v[i].c == NULL)
            continue;
        if (w->v[i].c->confirmed < w->v[i].target)
            return 0;
        w->v[i].c = NULL;
    }
    return 1;
}

struct delivered_call {
    struct lahja_call call;
    struct delivery_wait w;
};

static void delivered_fini(struct delivered_call *d)
{
    lahja_list_remove(&d->w.link);
    if (d->w.v != d->w.few)
        free(d->w.v);
    d->w.v = d->w.few;
}

static int delivered_step(struct lahja_call *call, struct lahja_waitq **q)
{
    struct delivered_call *d = (struct delivered_call *)call;
    lahja_endpoint_t *ep = call->ep;
    if (!wait_done(&d->w) && !d->w.lost && !ep->stopped) {
        *q = &ep->delivered;
        return LAHJA_PENDING;
    }
    delivered_fini(d);
    if (d->w.lost)
        return LAHJA_EREMOTEDISCONNECTED;
    return ep->stopped ? LAHJA_ELIFECYCLE : 0;
}

static int delivered_abandon(struct lahja_call *call, int why)
{
    delivered_fini((struct delivered_call *)call);
    return why;
}

static const struct lahja_call_kind delivered_kind = { "wait_until_delivered", 0, delivered_step,
                                                       delivered_abandon };

/* Notes what every connection must confirm.  Errors: -ENOMEM. */
static int delivered_begin(struct delivered_call *d, lahja_endpoint_t *ep)
{
    struct delivery_wait *w = &d->w;
    d->call.kind = &delivered_kind;
    d->call.ep = ep;
    w->v = w->few;
    size_t n = 0;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        n += c->confirmed < c->tx_events;
    }
    if (n > sizeof w->few / sizeof w->few[0] && (w->v = malloc(n * sizeof *w->v)) == NULL)
        return -ENOMEM;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->confirmed < c->tx_events)
            w->v[w->n++] = (struct delivery_target){ c, c->tx_events };
    }
    lahja_list_push_back(&ep->delivery_waits, &w->link);
    /* What is queued goes out now, not at the end of the turn. */
    lahja_ep_flush(ep);
    return 0;
}

int lahja_wait_until_delivered(lahja_endpoint_t *ep, lahja_time_t deadline)
{
    if (ep == NULL)
        return -EINVAL;
    int rc = lahja_ep_check_task(ep);
    if (rc != 0)
        return rc;
    struct delivered_call d = { .call = { 0 } };
    rc = delivered_begin(&d, ep);
    return rc != 0 ? rc : lahja_call_run(&d.call, deadline);
}

int lahja_wait_until_delivered_cb(lahja_endpoint_t *ep, lahja_time_t deadline, lahja_done_fn cb,
                                  void *user, lahja_op_t **out)
{
    if (ep == NULL || cb == NULL)
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    struct lahja_op *op = lahja_op_new(ep, &delivered_kind, sizeof(struct delivered_call));
    if (op == NULL)
        return -ENOMEM;
    rc = delivered_begin((struct delivered_call *)op->call, ep);
    if (rc != 0) {
        free(op);
        return rc;
    }
    lahja_op_start(op, deadline, cb, NULL, user, out);
    return 0;
}
