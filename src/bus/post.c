/*
 * Posting from other threads: the endpoint's one door that any thread
 * may use.  A poster appends to a bounded queue under a mutex and wakes
 * the endpoint's loop with a uv_async_t; the loop takes the queue in
 * order and carries each item out as a call made on its own thread would
 * be.  A posted broadcast that must wait under a peer's high-water mark
 * stops the taking until it has gone, so that the queue fills and the
 * posters wait: the backpressure of the bus reaches other threads too.
 *
 * The lock guards the queue and post_closed only; everything the items
 * do happens on the endpoint's thread.  uv_async_send is called with the
 * lock held, so that no poster can wake a handle the stop has closed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "endpoint.h"

enum post_kind { POST_BROADCAST, POST_REQUEST, POST_CALL };

struct post_item {
    struct post_item *next;
    uint8_t kind;
    uint8_t has_cfg;
    lahja_event_t *ev;               /* the poster's reference, now ours */
    lahja_broadcast_config_t cfg;
    char filter[LAHJA_NAME_MAX + 1];
    uint32_t timeout_ms;             /* a request's, from when it is taken */
    lahja_event_done_fn done;        /* a request's callback */
    lahja_call_fn fn;                /* a call */
    void *user;
};

/* ----------------------------------------------------------- lifecycle */

void lahja_post_init(lahja_endpoint_t *ep)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ep->post_room, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&ep->post_lock, NULL);
    ep->post_closed = 1; /* until started */
}

static void on_post(uv_async_t *h);

void lahja_post_start(lahja_endpoint_t *ep)
{
    uv_async_init(ep->rt->loop, &ep->post_async, on_post);
    ep->post_async.data = ep;
    ep->nopen++;
    pthread_mutex_lock(&ep->post_lock);
    ep->post_closed = 0;
    pthread_mutex_unlock(&ep->post_lock);
}

void lahja_post_free(lahja_endpoint_t *ep)
{
    pthread_mutex_destroy(&ep->post_lock);
    pthread_cond_destroy(&ep->post_room);
}

/* ----------------------------------------------------- the loop's side */

static struct post_item *take(lahja_endpoint_t *ep)
{
    pthread_mutex_lock(&ep->post_lock);
    struct post_item *it = ep->post_head;
    if (it != NULL) {
        ep->post_head = it->next;
        if (ep->post_head == NULL)
            ep->post_tail = NULL;
        if (ep->post_len-- == ep->opts.post_queue)
            pthread_cond_broadcast(&ep->post_room);
    }
    pthread_mutex_unlock(&ep->post_lock);
    return it;
}

static void more_later(lahja_endpoint_t *ep)
{
    pthread_mutex_lock(&ep->post_lock);
    if (!ep->post_closed && ep->post_head != NULL)
        uv_async_send(&ep->post_async);
    pthread_mutex_unlock(&ep->post_lock);
}

/* Nobody is left to return a posted broadcast's failure to: it is
 * logged, with what the call saw (`detail`, NULL: rc's message). */
static void broadcast_failed(lahja_endpoint_t *ep, const char *type, int rc, const char *detail)
{
    lahja_bus_log(ep, LAHJA_LOG_WARNING, "posted %s not broadcast: %s", type,
                  detail != NULL && detail[0] != '\0' ? detail : lahja_strerror(rc));
}

/* A posted broadcast that waited has gone (or failed): take on. */
static void on_posted_sent(lahja_endpoint_t *ep, int status, void *user)
{
    lahja_event_t *ev = user;
    if (status != 0) /* the call's detail, in its callback */
        broadcast_failed(ep, lahja_event_type(ev), status, lahja_endpoint_last_error(ep));
    lahja_event_unref(ev);
    ep->post_blocked = 0;
    more_later(ep);
}

static void run_broadcast(lahja_endpoint_t *ep, struct post_item *it)
{
    const lahja_broadcast_config_t *cfg = it->has_cfg ? &it->cfg : NULL;
    uint32_t seq = ep->errseq;
    int rc = lahja_broadcast_try(ep, it->ev, cfg);
    if (rc == LAHJA_PENDING) {
        /* The event goes to the callback, which holds it for its type. */
        rc = lahja_broadcast_cb(ep, it->ev, cfg, LAHJA_FOREVER, on_posted_sent, it->ev, NULL);
        if (rc == 0) {
            ep->post_blocked = 1;
            return;
        }
    }
    if (rc != 0)
        broadcast_failed(ep, it->ev->type, rc, ep->errseq != seq ? ep->errmsg : NULL);
    lahja_event_unref(it->ev);
}

static void run_request(lahja_endpoint_t *ep, struct post_item *it)
{
    lahja_time_t deadline = it->timeout_ms ? lahja_deadline_in(it->timeout_ms) : LAHJA_FOREVER;
    int rc = lahja_request_cb(ep, it->ev, it->has_cfg ? &it->cfg : NULL, deadline, it->done,
                              it->user, NULL);
    lahja_event_unref(it->ev);
    if (rc != 0)
        it->done(ep, rc, NULL, it->user); /* from the loop: the post returned long ago */
}

static void run(lahja_endpoint_t *ep, struct post_item *it)
{
    switch (it->kind) {
    case POST_BROADCAST:
        run_broadcast(ep, it);
        break;
    case POST_REQUEST:
        run_request(ep, it);
        break;
    case POST_CALL:
        it->fn(ep, it->user);
        break;
    }
    free(it);
}

/* Takes up to a queue's worth per loop turn, so that posters cannot
 * keep the loop from its other work. */
static void on_post(uv_async_t *h)
{
    lahja_endpoint_t *ep = h->data;
    struct post_item *it;
    for (size_t n = ep->opts.post_queue; n > 0 && !ep->post_blocked && (it = take(ep)) != NULL; n--)
        run(ep, it);
    if (!ep->post_blocked)
        more_later(ep);
}

void lahja_post_stop(lahja_endpoint_t *ep)
{
    pthread_mutex_lock(&ep->post_lock);
    ep->post_closed = 1;
    pthread_cond_broadcast(&ep->post_room);
    pthread_mutex_unlock(&ep->post_lock);
    /* What was posted before is carried out: a broadcast that must wait
     * becomes a call under way, which the stop ends. */
    ep->post_blocked = 0;
    struct post_item *it;
    while ((it = take(ep)) != NULL) {
        run(ep, it);
        ep->post_blocked = 0;
    }
    uv_close((uv_handle_t *)&ep->post_async, lahja_ep_handle_closed);
}

/* ---------------------------------------------------- the posters' side */

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Appends it, waiting for room up to timeout_ms. */
static int push(lahja_endpoint_t *ep, struct post_item *it, int timeout_ms)
{
    int own = !lahja_rt_wrong_thread(ep->rt);
    struct timespec until;
    if (timeout_ms > 0)
        deadline_after(&until, timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&ep->post_lock);
    while (!ep->post_closed && ep->post_len >= ep->opts.post_queue) {
        if (timeout_ms == 0 || own) {
            rc = -EAGAIN;
            break;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&ep->post_room, &ep->post_lock);
        else if (pthread_cond_timedwait(&ep->post_room, &ep->post_lock, &until) == ETIMEDOUT &&
                 ep->post_len >= ep->opts.post_queue && !ep->post_closed) {
            rc = -EAGAIN;
            break;
        }
    }
    if (rc == 0 && ep->post_closed)
        rc = LAHJA_ELIFECYCLE;
    if (rc == 0) {
        it->next = NULL;
        if (ep->post_tail != NULL)
            ep->post_tail->next = it;
        else
            ep->post_head = it;
        ep->post_tail = it;
        if (ep->post_len++ == 0)
            uv_async_send(&ep->post_async);
    }
    pthread_mutex_unlock(&ep->post_lock);
    return rc;
}

/* An item carrying ev and a copy of cfg; NULL on -ENOMEM. */
static struct post_item *item_new(uint8_t kind, lahja_event_t *ev,
                                  const lahja_broadcast_config_t *cfg)
{
    struct post_item *it = calloc(1, sizeof *it);
    if (it == NULL)
        return NULL;
    it->kind = kind;
    it->ev = ev;
    if (cfg != NULL) {
        it->has_cfg = 1;
        it->cfg = *cfg;
        if (cfg->filter_endpoint != NULL) {
            snprintf(it->filter, sizeof it->filter, "%s", cfg->filter_endpoint);
            it->cfg.filter_endpoint = it->filter;
        }
    }
    return it;
}

static int postable(const lahja_event_t *ev, const lahja_broadcast_config_t *cfg)
{
    if (ev == NULL || ev->borrowed || ev->on_stack || ev->bound)
        return 0;
    return cfg == NULL || cfg->filter_endpoint == NULL ||
           strlen(cfg->filter_endpoint) <= LAHJA_NAME_MAX;
}

static int post_item(lahja_endpoint_t *ep, struct post_item *it, int timeout_ms)
{
    if (it == NULL)
        return -ENOMEM;
    int rc = push(ep, it, timeout_ms);
    if (rc != 0)
        free(it);
    return rc;
}

int lahja_post(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
               int timeout_ms)
{
    if (ep == NULL || !postable(ev, cfg))
        return -EINVAL;
    return post_item(ep, item_new(POST_BROADCAST, ev, cfg), timeout_ms);
}

int lahja_post_request(lahja_endpoint_t *ep, lahja_event_t *req,
                       const lahja_broadcast_config_t *cfg, uint32_t timeout_ms,
                       lahja_event_done_fn cb, void *user, int queue_timeout_ms)
{
    if (ep == NULL || cb == NULL || !postable(req, cfg) || !req->is_request)
        return -EINVAL;
    struct post_item *it = item_new(POST_REQUEST, req, cfg);
    if (it != NULL) {
        it->timeout_ms = timeout_ms;
        it->done = cb;
        it->user = user;
    }
    return post_item(ep, it, queue_timeout_ms);
}

int lahja_post_call(lahja_endpoint_t *ep, lahja_call_fn fn, void *user, int timeout_ms)
{
    if (ep == NULL || fn == NULL)
        return -EINVAL;
    struct post_item *it = item_new(POST_CALL, NULL, NULL);
    if (it != NULL) {
        it->fn = fn;
        it->user = user;
    }
    return post_item(ep, it, timeout_ms);
}
