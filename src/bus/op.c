/*
 * The two drivers of the calls that wait, and the wait queues they wait
 * on.
 *
 * A call is its step function over its own state (broadcast.c,
 * consume.c, delivery.c).  The suspending form steps and waits in a task
 * in between.  The callback form (struct lahja_op) parks in the wait
 * queue the step named; a wake marks it and arms its timer for the next
 * loop turn, where it steps again.  Stepping from the loop rather than
 * from inside the core callback that woke it keeps the core free of
 * re-entry: a step may queue output or change the tables the waking code
 * is walking.  The application's callback likewise always comes from the
 * op's timer, never from within a lahja call.
 *
 * An op stays linked in its queue while woken, so that a queue that goes
 * away with what its calls wait for (a closed stream) can still end
 * them; a queue that goes away while its calls can look elsewhere (a
 * connection's drain) unlinks them (lahja_waitq_detach).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"

static void on_op_timer(uv_timer_t *t);

/* -------------------------------------------------------------- queues */

void lahja_waitq_init(struct lahja_waitq *q)
{
    lahja_cond_init(&q->tasks);
    lahja_list_init(&q->ops);
}

static void op_unlink(struct lahja_op *op)
{
    if (op->linked) {
        lahja_list_remove(&op->link);
        op->linked = 0;
    }
}

/* Runs op's timer callback at the next loop turn. */
static void op_soon(struct lahja_op *op)
{
    uv_timer_start(&op->timer, on_op_timer, 0, 0);
}

static void op_wake(struct lahja_op *op)
{
    if (op->state != OP_PARKED)
        return;
    op->state = OP_WOKEN;
    op_soon(op);
}

void lahja_waitq_wake(struct lahja_waitq *q)
{
    lahja_cond_broadcast(&q->tasks);
    lahja_link_t *l;
    lahja_list_foreach(l, &q->ops)
        op_wake(lahja_container_of(l, struct lahja_op, link));
}

void lahja_waitq_signal(struct lahja_waitq *q)
{
    if (!lahja_list_empty(&q->tasks.waiters)) {
        lahja_cond_signal(&q->tasks);
        return;
    }
    lahja_link_t *l;
    lahja_list_foreach(l, &q->ops) {
        struct lahja_op *op = lahja_container_of(l, struct lahja_op, link);
        if (op->state == OP_PARKED) {
            op_wake(op);
            return;
        }
    }
}

void lahja_waitq_detach(struct lahja_waitq *q)
{
    lahja_cond_broadcast(&q->tasks);
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&q->ops)) != NULL) {
        struct lahja_op *op = lahja_container_of(l, struct lahja_op, link);
        op->linked = 0;
        op_wake(op);
    }
}

/* op is done with `status`: its detail is taken now, while what the
 * endpoint noted is its own. */
static void op_done(struct lahja_op *op, int status, uint32_t errseq0)
{
    op->status = status;
    op->state = OP_DONE;
    if (status < 0)
        lahja_call_explain(op->call, status, errseq0, op->errmsg, sizeof op->errmsg);
}

/* Ends op before its step finished it. */
static void op_abandon(struct lahja_op *op, int why)
{
    op_unlink(op);
    uint32_t seq = op->ep->errseq;
    op_done(op, op->call->kind->abandon(op->call, why), seq);
    op_soon(op);
}

void lahja_waitq_end(struct lahja_waitq *q, int status)
{
    lahja_cond_broadcast(&q->tasks);
    lahja_link_t *l;
    while ((l = q->ops.next) != &q->ops)
        op_abandon(lahja_container_of(l, struct lahja_op, link), status);
}

/* ------------------------------------------------------------- errors */

void lahja_call_explain(const struct lahja_call *call, int rc, uint32_t errseq0, char *buf,
                        size_t len)
{
    const lahja_endpoint_t *ep = call->ep;
    if (call->detail != NULL && call->detail[0] != '\0')
        snprintf(buf, len, "%s", call->detail);
    else if (ep->errseq != errseq0 && buf != ep->errmsg)
        snprintf(buf, len, "%s", ep->errmsg);
    else if (ep->errseq == errseq0)
        snprintf(buf, len, "%s: %s", call->kind->name, lahja_strerror(rc));
}

/* ------------------------------------------------------ suspending form */

int lahja_call_run(struct lahja_call *call, lahja_time_t deadline)
{
    lahja_endpoint_t *ep = call->ep;
    uint32_t seq = ep->errseq;
    int rc;
    for (;;) {
        struct lahja_waitq *q = NULL;
        rc = call->kind->step(call, &q);
        if (rc != LAHJA_PENDING)
            break;
        rc = lahja_ep_wait(ep, q, deadline);
        if (rc != 0) {
            rc = call->kind->abandon(call, rc);
            break;
        }
        seq = ep->errseq; /* what happened while it slept is not its own */
    }
    if (rc < 0) {
        lahja_call_explain(call, rc, seq, ep->errmsg, sizeof ep->errmsg);
        ep->errseq++;
    }
    return rc;
}

/* -------------------------------------------------------- callback form */

struct lahja_op *lahja_op_new(lahja_endpoint_t *ep, const struct lahja_call_kind *kind,
                              size_t size)
{
    size_t head = (sizeof(struct lahja_op) + 15) & ~(size_t)15;
    struct lahja_op *op = calloc(1, head + size);
    if (op == NULL)
        return NULL;
    op->ep = ep;
    op->call = (struct lahja_call *)(void *)((char *)op + head);
    op->call->kind = kind;
    op->call->ep = ep;
    return op;
}

static void op_closed(uv_handle_t *h)
{
    struct lahja_op *op = h->data;
    lahja_endpoint_t *ep = op->ep;
    free(op);
    ep->nopen--;
    lahja_ep_maybe_closed(ep);
}

/* The end: the application's callback, then the op goes. */
static void op_callback(struct lahja_op *op)
{
    lahja_endpoint_t *ep = op->ep;
    lahja_list_remove(&op->all);
    lahja_event_t *ev = op->call->result;
    op->call->result = NULL;
    if (op->status != 0 && ev != NULL) {
        lahja_event_unref(ev);
        ev = NULL;
    }
    if (op->status < 0) { /* lahja_endpoint_last_error, in the callback */
        memcpy(ep->errmsg, op->errmsg, sizeof ep->errmsg);
        ep->errseq++;
    }
    if (op->event_done != NULL)
        op->event_done(ep, op->status, ev, op->user);
    else if (op->done != NULL)
        op->done(ep, op->status, op->user);
    else
        lahja_event_unref(ev);
    uv_close((uv_handle_t *)&op->timer, op_closed);
}

/* Tries to finish op; parks it (with its deadline) if it must wait. */
static void op_step(struct lahja_op *op)
{
    op_unlink(op);
    struct lahja_waitq *q = NULL;
    uint32_t seq = op->ep->errseq;
    int rc = op->call->kind->step(op->call, &q);
    if (rc != LAHJA_PENDING) {
        op_done(op, rc, seq);
        return;
    }
    op->state = OP_PARKED;
    lahja_list_push_back(&q->ops, &op->link);
    op->linked = 1;
    if (op->deadline == LAHJA_FOREVER) {
        uv_timer_stop(&op->timer);
        return;
    }
    uint64_t now = uv_now(op->ep->rt->loop);
    uv_timer_start(&op->timer, on_op_timer, op->deadline > now ? op->deadline - now : 0, 0);
}

static void on_op_timer(uv_timer_t *t)
{
    struct lahja_op *op = t->data;
    switch (op->state) {
    case OP_WOKEN:
        op_step(op);
        if (op->state == OP_DONE)
            op_callback(op);
        break;
    case OP_PARKED: { /* the deadline */
        op_unlink(op);
        uint32_t seq = op->ep->errseq;
        op_done(op, op->call->kind->abandon(op->call, -ETIMEDOUT), seq);
        op_callback(op);
        break;
    }
    case OP_DONE:
        /* A condition that held a turn ago may not any more: look again.
         * If it does not, the call waits on, unless it was cancelled or
         * the endpoint stops meanwhile: then it ends so. */
        if (op->status == 0 && op->call->kind->recheck) {
            op_step(op);
            if (op->state == OP_PARKED && (op->cancelled || op->ep->stopped)) {
                op_unlink(op);
                op_done(op, op->cancelled ? -ECANCELED : LAHJA_ELIFECYCLE, op->ep->errseq);
            }
            if (op->state != OP_DONE)
                break;
        }
        op_callback(op);
        break;
    }
}

void lahja_op_start(struct lahja_op *op, lahja_time_t deadline, lahja_done_fn done,
                    lahja_event_done_fn event_done, void *user, lahja_op_t **out)
{
    lahja_endpoint_t *ep = op->ep;
    uv_timer_init(ep->rt->loop, &op->timer);
    op->timer.data = op;
    ep->nopen++;
    lahja_list_push_back(&ep->ops, &op->all);
    op->deadline = deadline;
    op->done = done;
    op->event_done = event_done;
    op->user = user;
    if (out != NULL)
        *out = op;
    op_step(op);
    if (op->state == OP_DONE)
        op_soon(op); /* never from within the call that started it */
}

void lahja_op_cancel(lahja_op_t *op)
{
    if (op == NULL || lahja_rt_wrong_thread(op->ep->rt))
        return;
    op->cancelled = 1;
    if (op->state != OP_DONE)
        op_abandon(op, -ECANCELED);
}

void lahja_ops_stop(lahja_endpoint_t *ep)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->ops) {
        struct lahja_op *op = lahja_container_of(l, struct lahja_op, all);
        if (op->state != OP_DONE)
            op_abandon(op, LAHJA_ELIFECYCLE);
    }
}
