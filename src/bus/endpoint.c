/*
 * Endpoints: creation, start (its socket: unix.c, B1-B3), stop (B23), logging.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "endpoint.h"

#define DEFAULT_MAX_PAYLOAD ((size_t)64 << 20)
#define DEFAULT_HIGH_WATER ((size_t)1 << 20)

/* ------------------------------------------------------------ logging */

/* Above every level: LAHJA_LOG=off. */
#define LOG_OFF (LAHJA_LOG_ERROR + 1)

static const char *const level_names[] = { "DEBUG", "INFO", "WARNING", "ERROR" };

/*
 * Without a log callback, lines go to stderr:
 * "lahja[<pid>] <endpoint>: <LEVEL>: <message>\n", in one write(2), so
 * that the lines of processes sharing a stderr do not mix within a line
 * (a pipe keeps a write of up to PIPE_BUF bytes whole; a line is at most
 * about 800).  Control characters become '?' (an event type may hold any
 * byte), so that a message is always one line.  errno is kept: a caller
 * may log between a failing call and reading it.
 */
static void log_to_stderr(const char *endpoint, lahja_log_level_t level, const char *msg)
{
    int saved = errno;
    char line[1024];
    int n = snprintf(line, sizeof line - 1, "lahja[%ld] %s: %s: %s", (long)getpid(), endpoint,
                     (unsigned)level <= LAHJA_LOG_ERROR ? level_names[level] : "?", msg);
    if (n >= 0) {
        size_t len = (size_t)n < sizeof line - 1 ? (size_t)n : sizeof line - 2;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
                line[i] = '?';
        line[len++] = '\n';
        while (write(STDERR_FILENO, line, len) < 0 && errno == EINTR)
            ;
    }
    errno = saved;
}

/*
 * The least level the default log prints, from LAHJA_LOG: debug, info,
 * warning, error or off, in any case.  Unset or empty gives warning:
 * what loses data or fails with nobody else to tell is seen unless
 * silenced.  -1 for a value it does not know.
 */
static int log_level_parse(const char *v)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {
        { "debug", LAHJA_LOG_DEBUG }, { "info", LAHJA_LOG_INFO },
        { "warning", LAHJA_LOG_WARNING }, { "error", LAHJA_LOG_ERROR },
        { "off", LOG_OFF },
    };
    if (v == NULL || v[0] == '\0')
        return LAHJA_LOG_WARNING;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(v, names[i].name) == 0)
            return names[i].level;
    return -1;
}

/* Read once, at the endpoint's creation: getenv is not safe against a
 * setenv on another thread, and creating an endpoint is the
 * application's own moment, not a loop callback's. */
static void log_setup(lahja_endpoint_t *ep)
{
    if (ep->opts.log != NULL)
        return;
    const char *v = getenv("LAHJA_LOG");
    ep->log_min = log_level_parse(v);
    if (ep->log_min < 0) {
        ep->log_min = LAHJA_LOG_WARNING;
        lahja_bus_log(ep, LAHJA_LOG_WARNING,
                      "LAHJA_LOG=%s not understood (debug, info, warning, error or off): "
                      "logging warnings and errors",
                      v);
    }
}

void lahja_bus_log(lahja_endpoint_t *ep, lahja_log_level_t level, const char *fmt, ...)
{
    if (ep->opts.log == NULL && (int)level < ep->log_min)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ep->opts.log != NULL)
        ep->opts.log(ep->opts.log_user, level, ep->name->s, msg);
    else
        log_to_stderr(ep->name->s, level, msg);
}

void lahja_ep_error(lahja_endpoint_t *ep, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ep->errmsg, sizeof ep->errmsg, fmt, ap);
    va_end(ap);
    ep->errseq++;
}

const char *lahja_endpoint_last_error(const lahja_endpoint_t *ep)
{
    if (ep == NULL || lahja_rt_wrong_thread(ep->rt))
        return "";
    return ep->errmsg;
}

int lahja_ep_check(const lahja_endpoint_t *ep)
{
    if (lahja_rt_wrong_thread(ep->rt))
        return LAHJA_EWRONGTHREAD;
    return ep->started && !ep->stopped ? 0 : LAHJA_ELIFECYCLE;
}

int lahja_ep_wait(lahja_endpoint_t *ep, struct lahja_waitq *q, lahja_time_t deadline)
{
    ep->busy++;
    int rc = lahja_cond_wait(&q->tasks, deadline);
    if (--ep->busy == 0 && ep->stopped)
        lahja_ep_maybe_closed(ep);
    return rc;
}

int lahja_ep_check_task(const lahja_endpoint_t *ep)
{
    int rc = lahja_ep_check(ep);
    if (rc == 0 && lahja_task_current() == NULL)
        rc = LAHJA_ENOTASK;
    return rc;
}

static void fill_defaults(lahja_endpoint_options_t *o)
{
    if (o->max_payload == 0 || o->max_payload > UINT32_MAX - 64)
        o->max_payload = DEFAULT_MAX_PAYLOAD;
    if (o->high_water == 0)
        o->high_water = DEFAULT_HIGH_WATER;
    if (o->hard_limit == 0)
        o->hard_limit = 4 * o->high_water + o->max_payload;
    if (o->handshake_timeout_ms == 0)
        o->handshake_timeout_ms = 5000;
    if (o->compress_threshold == 0)
        o->compress_threshold = 8192;
    if (o->linger_ms == 0)
        o->linger_ms = 1000;
    if (o->max_hello == 0)
        o->max_hello = 4096;
    if (o->max_incomplete == 0)
        o->max_incomplete = 64;
    if (o->max_connections == 0)
        o->max_connections = 1024;
    if (o->max_peer_types == 0)
        o->max_peer_types = 16384;
    if (o->frame_timeout_ms == 0)
        o->frame_timeout_ms = 10000;
    if (o->post_queue == 0)
        o->post_queue = 1024;
}

/*
 * Writing to a socket whose peer has gone raises SIGPIPE, which kills the
 * process by default; libuv writes with writev, which has no
 * MSG_NOSIGNAL.  A process that left SIGPIPE at its default gets it
 * ignored (the write then fails with EPIPE, and the peer is dropped);
 * one that chose a handler keeps it.
 */
static void ignore_sigpipe(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

int lahja_endpoint_new(const char *name, const lahja_endpoint_options_t *opts,
                       lahja_endpoint_t **out)
{
    if (name == NULL || out == NULL || !lahja_wire_name_valid(name, strlen(name)))
        return -EINVAL;
    if (lahja_rt_current() == NULL)
        return LAHJA_ENORUNTIME;
    lahja_endpoint_t *ep = calloc(1, sizeof *ep);
    if (ep == NULL)
        return -ENOMEM;
    ep->route_gen = 1; /* a route of gen 0 is never current */
    ep->name = lahja_name_new(name, strlen(name));
    if (opts != NULL)
        ep->opts = *opts;
    fill_defaults(&ep->opts);
    if (ep->opts.n_allowed_uids > 0) {
        ep->allowed = malloc(ep->opts.n_allowed_uids * sizeof *ep->allowed);
        if (ep->allowed != NULL)
            memcpy(ep->allowed, ep->opts.allowed_uids,
                   ep->opts.n_allowed_uids * sizeof *ep->allowed);
    }
    ep->opts.allowed_uids = ep->allowed;
    if (ep->name == NULL || (ep->opts.n_allowed_uids > 0 && ep->allowed == NULL)) {
        lahja_name_unref(ep->name);
        free(ep->allowed);
        free(ep);
        return -ENOMEM;
    }
    ep->rt = lahja_rt_current();
    ignore_sigpipe();
    log_setup(ep);
    lahja_list_init(&ep->conns);
    lahja_list_init(&ep->dirty);
    lahja_list_init(&ep->pending);
    lahja_list_init(&ep->owned);
    lahja_list_init(&ep->parked);
    lahja_list_init(&ep->delivery_waits);
    lahja_strmap_init(&ep->types);
    lahja_list_init(&ep->patterns);
    lahja_strmap_init(&ep->totals);
    lahja_list_init(&ep->stop_tasks);
    lahja_list_init(&ep->stop_cbs);
    lahja_list_init(&ep->ops);
    lahja_waitq_init(&ep->delivered);
    lahja_waitq_init(&ep->conn_changed);
    lahja_waitq_init(&ep->subs_changed);
    lahja_post_init(ep);
    *out = ep;
    return 0;
}

const char *lahja_endpoint_name(const lahja_endpoint_t *ep)
{
    return ep->name->s;
}

int lahja_endpoint_is_running(const lahja_endpoint_t *ep)
{
    return ep->started && !ep->stopped;
}

int lahja_endpoint_is_serving(const lahja_endpoint_t *ep)
{
    return ep->serving && !ep->stopped;
}

const char *lahja_endpoint_path(const lahja_endpoint_t *ep)
{
    return ep != NULL && lahja_endpoint_is_serving(ep) ? ep->path : "";
}

/* ------------------------------------------------------------ serving */

void lahja_ep_handle_closed(uv_handle_t *h)
{
    lahja_endpoint_t *ep = h->data;
    ep->nopen--;
    lahja_ep_maybe_closed(ep);
}

int lahja_endpoint_start(lahja_endpoint_t *ep, const lahja_conn_config_t *serve)
{
    if (ep == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(ep->rt))
        return LAHJA_EWRONGTHREAD;
    if (ep->started)
        return LAHJA_ELIFECYCLE;
    if (serve != NULL && strcmp(serve->name, ep->name->s) != 0)
        return -EINVAL;
    if (serve != NULL) {
        int rc = lahja_unix_listen(ep, serve);
        if (rc == -EADDRINUSE)
            lahja_ep_error(ep, "serve at %s: a live endpoint serves there already",
                           serve->path);
        else if (rc == -EPERM)
            lahja_ep_error(ep, "serve at %s: its directory belongs to another user",
                           serve->path);
        else if (rc != 0)
            lahja_ep_error(ep, "serve at %s: %s", serve->path, lahja_strerror(rc));
        if (rc != 0)
            return rc;
    }
    uv_prepare_init(ep->rt->loop, &ep->flusher);
    ep->flusher.data = ep;
    uv_idle_init(ep->rt->loop, &ep->poller);
    ep->poller.data = ep;
    uv_timer_init(ep->rt->loop, &ep->due);
    ep->due.data = ep;
    uv_timer_init(ep->rt->loop, &ep->stop_timer);
    ep->stop_timer.data = ep;
    ep->nopen += 4;
    lahja_shm_init(ep);
    ep->started = 1;
    lahja_post_start(ep);
    lahja_stats_start(ep);
    return 0;
}

/* Runs once per loop turn while polling.  Yielding the CPU lets a peer
 * sharing it run: spinning would keep it waiting for our time slice. */
static void on_poll(uv_idle_t *h)
{
    lahja_endpoint_t *ep = h->data;
    if (uv_hrtime() >= ep->poll_until || ep->shm_conns >= ep->nconns_open)
        uv_idle_stop(h); /* the window is over, or only rings are left to watch */
    else
        sched_yield();
}

/* An endpoint whose every connection reads from a ring watches them
 * before each poll until poll_until (shm.c), with no system call but the
 * yield; a socket is read only by a turn of the loop, which costs a
 * poll each time round. */
void lahja_ep_busy_poll(lahja_endpoint_t *ep)
{
    if (ep->opts.busy_poll_us == 0 || ep->flusher_closed)
        return;
    ep->poll_until = uv_hrtime() + (uint64_t)ep->opts.busy_poll_us * 1000;
    if (!uv_is_active((uv_handle_t *)&ep->poller) && ep->shm_conns < ep->nconns_open)
        uv_idle_start(&ep->poller, on_poll);
}

/* Whether a connection still has output its peer has not confirmed. */
static int unconfirmed(lahja_endpoint_t *ep)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        if (c->state == CONN_READY && lahja_conn_unconfirmed(c))
            return 1;
    }
    return 0;
}

/*
 * Stopping, in steps, each begun by a loop callback or by the call:
 *  1. linger: stop listening; what a broadcast reported as sent was only
 *     queued, so give the peers up to linger_ms to read and confirm it
 *     (an endpoint that broadcasts and stops must not lose its last
 *     events; what is not confirmed by then is reported lost, B30).  The
 *     endpoint goes on reading meanwhile.
 *  2. closing: every call under way ends with LAHJA_ELIFECYCLE (before
 *     the closing connections could end them for a disconnect), every
 *     handle is closed, and the tasks woken leave the endpoint's calls.
 *  3. last: once they have, the stop timer, the last handle, is closed;
 *     its close callback ends the stop, after which nothing touches the
 *     endpoint: the application may free it.
 */
struct stop_cb {
    lahja_link_t link;
    lahja_done_fn cb;
    void *user;
};

static void stop_close(lahja_endpoint_t *ep);

static void on_stop_timer(uv_timer_t *t)
{
    stop_close(t->data);
}

void lahja_ep_linger_check(lahja_endpoint_t *ep)
{
    if (ep->stop_state == STOP_LINGER && !unconfirmed(ep))
        uv_timer_start(&ep->stop_timer, on_stop_timer, 0, 0);
}

static void stop_begin(lahja_endpoint_t *ep)
{
    ep->stop_state = STOP_LINGER;
    lahja_post_stop(ep); /* what other threads posted goes first */
    ep->stopped = 1; /* refuses new calls from here on */
    lahja_join_stop(ep);
    lahja_dial_stop(ep);
    lahja_nats_stop_begin(ep);
    if (ep->serving)
        lahja_unix_unlisten(ep);
    lahja_conn_send_receipts(ep); /* the peers may linger on them too */
    lahja_ep_flush(ep);
    uv_timer_start(&ep->stop_timer, on_stop_timer, unconfirmed(ep) ? ep->opts.linger_ms : 0, 0);
}

static void stop_close(lahja_endpoint_t *ep)
{
    if (ep->stop_state != STOP_LINGER)
        return;
    ep->stop_state = STOP_CLOSING;
    uv_timer_stop(&ep->stop_timer);
    /* What we read is confirmed before we go, or the peers would count
     * it lost. */
    lahja_conn_send_receipts(ep);
    ep->flusher_closed = 1;
    uv_close((uv_handle_t *)&ep->flusher, lahja_ep_handle_closed);
    uv_close((uv_handle_t *)&ep->poller, lahja_ep_handle_closed);
    lahja_shm_stop(ep);
    uv_close((uv_handle_t *)&ep->due, lahja_ep_handle_closed);
    lahja_ops_stop(ep);
    lahja_consumers_stop(ep);
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &ep->conns)
        lahja_conn_close(lahja_container_of(l, struct conn, link), LAHJA_ELIFECYCLE,
                         "endpoint stopping");
    lahja_conn_fail_parked(ep, LAHJA_ELIFECYCLE);
    lahja_nats_stop(ep);
    lahja_waitq_wake(&ep->conn_changed);
    lahja_waitq_wake(&ep->subs_changed);
    lahja_waitq_wake(&ep->delivered);
    lahja_ep_maybe_closed(ep);
}

static void on_stop_closed(uv_handle_t *h)
{
    lahja_endpoint_t *ep = h->data;
    ep->nopen--;
    ep->stop_state = STOP_DONE;
    while (lahja_wake_first(&ep->stop_tasks, 0) != NULL)
        ;
    /* A callback may free the endpoint: take the list out first. */
    lahja_link_t cbs;
    lahja_list_init(&cbs);
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&ep->stop_cbs)) != NULL)
        lahja_list_push_back(&cbs, l);
    while ((l = lahja_list_pop_front(&cbs)) != NULL) {
        struct stop_cb *s = lahja_container_of(l, struct stop_cb, link);
        lahja_done_fn cb = s->cb;
        void *user = s->user;
        free(s);
        cb(ep, 0, user);
    }
}

void lahja_ep_maybe_closed(lahja_endpoint_t *ep)
{
    if (ep->stop_state != STOP_CLOSING || ep->nopen != 1 || ep->nconns_open != 0 || ep->busy != 0)
        return;
    ep->stop_state = STOP_LAST;
    uv_close((uv_handle_t *)&ep->stop_timer, on_stop_closed);
}

/* Checks common to both forms of stop: 1 if there is a stop to wait for. */
static int stop_check(lahja_endpoint_t *ep, int *rc)
{
    *rc = 0;
    if (ep == NULL) {
        *rc = -EINVAL;
        return 0;
    }
    if (lahja_rt_wrong_thread(ep->rt)) {
        *rc = LAHJA_EWRONGTHREAD;
        return 0;
    }
    if (!ep->started || ep->stop_state == STOP_DONE) {
        *rc = ep->started ? 0 : LAHJA_ELIFECYCLE;
        return 0;
    }
    return 1;
}

int lahja_endpoint_stop(lahja_endpoint_t *ep)
{
    int rc;
    if (!stop_check(ep, &rc))
        return rc;
    if (lahja_task_current() == NULL)
        return LAHJA_ENOTASK;
    if (ep->stop_state == STOP_NONE)
        stop_begin(ep);
    /* Not cancellable: the peers get linger_ms, the handles close within
     * a loop turn, and the tasks woken leave at their next turn. */
    while (ep->stop_state != STOP_DONE)
        lahja_wait(&ep->stop_tasks, LAHJA_FOREVER, LAHJA_WAIT_NOCANCEL);
    return 0;
}

int lahja_endpoint_stop_cb(lahja_endpoint_t *ep, lahja_done_fn cb, void *user)
{
    int rc;
    if (!stop_check(ep, &rc))
        return rc == 0 ? LAHJA_ELIFECYCLE : rc;
    if (cb == NULL)
        return -EINVAL;
    struct stop_cb *s = malloc(sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->cb = cb;
    s->user = user;
    lahja_list_push_back(&ep->stop_cbs, &s->link);
    if (ep->stop_state == STOP_NONE)
        stop_begin(ep);
    return 0;
}

int lahja_endpoint_free(lahja_endpoint_t *ep)
{
    if (ep == NULL)
        return 0;
    if (lahja_rt_wrong_thread(ep->rt))
        return LAHJA_EWRONGTHREAD;
    if ((ep->started && ep->stop_state != STOP_DONE) || (!ep->started && ep->nopen > 0))
        return -EBUSY;
    struct out_item *it = ep->free_items;
    while (it != NULL) {
        struct out_item *next = (struct out_item *)(void *)it->link.next;
        free(it);
        it = next;
    }
    for (it = ep->free_chunks; it != NULL;) {
        struct out_item *next = (struct out_item *)(void *)it->link.next;
        free(it->heap);
        free(it);
        it = next;
    }
    lahja_consumers_free(ep);
    lahja_delivery_free(ep);
    lahja_post_free(ep);
    lahja_shm_free(ep);
    free(ep->pindex);
    lahja_strmap_free(&ep->types);
    lahja_name_unref(ep->name);
    free(ep->scratch);
    free(ep->allowed);
    free(ep);
    return 0;
}
