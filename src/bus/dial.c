/*
 * Kept peers (B33), background connects, and what the endpoint knows of
 * a peer: connections nobody waits for, driven by the beginnings and
 * ends conn.c reports and by one timer.
 *
 * A dial is what the endpoint wants for one peer name: to keep it
 * connected (connect whenever there is no connection, with backoff), a
 * background connect under way (until its deadline), or the failure of
 * the last background connect (kept for lahja_peer_info).  A dial
 * follows its peer by name, not by connection: whichever connection to
 * the name becomes READY counts, ours, the peer's or a lahja_connect's.
 * So the simultaneous-connect rule of conn.c (settle) decides between
 * two endpoints that keep each other, as it does between two
 * lahja_connect calls, and a dial never opens a connection while another
 * to its name is on its way.
 *
 * Attempts never start inside conn.c's callbacks: a connection ending in
 * the middle of settle() must not see a new one to the same name appear
 * under it.  An end schedules the next attempt on the dialer's timer,
 * one timer for every dial, armed for the earliest thing due; a kept
 * peer's attempt is one connect() (CONN_KEPT), so that the backoff, not
 * conn.c's quick retries, paces a peer that is not there.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "endpoint.h"

#define DEFAULT_MIN_MS 100
#define DEFAULT_MAX_MS 5000
#define FAILED_MAX 64 /* failed background connects remembered */

enum dial_phase {
    DIAL_IDLE,    /* not kept: nothing scheduled */
    DIAL_WAITING, /* kept, no connection: the next attempt is at `due` */
    DIAL_ATTEMPT, /* a connection to the name is on its way */
    DIAL_UP       /* a connection to the name is READY */
};

struct dial {
    lahja_link_t link;       /* in dialer->dials, oldest failure first */
    lahja_conn_config_t cfg;
    uint8_t kept;            /* lahja_keep_connected */
    uint8_t awaiting;        /* a lahja_connect_nowait under way, until
                                give_up_at */
    uint8_t failed;          /* not kept: the last background connect
                                failed (last_error) */
    uint8_t lost;            /* kept: it was connected and lost; its
                                return is logged */
    uint8_t phase;           /* enum dial_phase */
    uint32_t min_ms, max_ms; /* the backoff's bounds */
    uint32_t next_ms;        /* the backoff's next wait, before jitter */
    uint32_t retry_ms;       /* DIAL_WAITING: the wait chosen */
    uint64_t due;            /* DIAL_WAITING: loop time of the next attempt */
    uint64_t give_up_at;     /* awaiting: loop time it gives up */
    uint32_t failures;       /* kept: failed attempts since last READY */
    uint32_t reconnects;     /* kept: returns after a loss */
    int last_error;          /* the last failed attempt's or loss's error */
};

/* An endpoint's dials.  Made by the first call that needs it, closed by
 * stop; the timer counts in ep->nopen, so stop returns only once it is
 * closed. */
struct dialer {
    uv_timer_t timer;        /* data: the endpoint */
    lahja_endpoint_t *ep;
    lahja_link_t dials;
    uint64_t rng;            /* xorshift state, for the jitter */
};

static void rearm(struct dialer *dl);

static uint64_t now_ms(const lahja_endpoint_t *ep)
{
    return uv_now(ep->rt->loop);
}

/* A config that names an endpoint and a path, both terminated. */
static int config_valid(const lahja_conn_config_t *cfg)
{
    if (cfg == NULL)
        return 0;
    size_t n = strnlen(cfg->name, sizeof cfg->name);
    size_t p = strnlen(cfg->path, sizeof cfg->path);
    return n < sizeof cfg->name && lahja_wire_name_valid(cfg->name, n) && p > 0
           && p < sizeof cfg->path;
}

/* ---------------------------------------------------------- the table */

static void on_dialer_closed(uv_handle_t *h)
{
    struct dialer *dl = lahja_container_of((uv_timer_t *)h, struct dialer, timer);
    lahja_ep_handle_closed(h);
    free(dl);
}

static int dialer_get(lahja_endpoint_t *ep, struct dialer **out)
{
    if (ep->dialer == NULL) {
        struct dialer *dl = calloc(1, sizeof *dl);
        if (dl == NULL)
            return -ENOMEM;
        dl->ep = ep;
        lahja_list_init(&dl->dials);
        uv_timer_init(ep->rt->loop, &dl->timer);
        dl->timer.data = ep;
        dl->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)ep;
        if (dl->rng == 0)
            dl->rng = 1;
        ep->nopen++;
        ep->dialer = dl;
    }
    *out = ep->dialer;
    return 0;
}

static struct dial *dial_find(const struct dialer *dl, const char *name)
{
    if (dl == NULL)
        return NULL;
    lahja_link_t *l;
    lahja_list_foreach(l, &dl->dials) {
        struct dial *d = lahja_container_of(l, struct dial, link);
        if (strcmp(d->cfg.name, name) == 0)
            return d;
    }
    return NULL;
}

static struct dial *dial_new(struct dialer *dl, const lahja_conn_config_t *cfg)
{
    struct dial *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->cfg = *cfg;
    lahja_list_push_back(&dl->dials, &d->link);
    return d;
}

static void dial_free(struct dial *d)
{
    lahja_list_remove(&d->link);
    free(d);
}

/* A dial that wants nothing any more goes. */
static void dial_release(struct dial *d)
{
    if (!d->kept && !d->awaiting && !d->failed)
        dial_free(d);
}

/* ---------------------------------------------------------- connections */

/* The connection to `name` that is READY (*ready set), else one on its
 * way (outbound, or the peer's past its HELLO), else NULL.  Connections
 * reading to their end (DRAINING) do not count. */
static struct conn *conn_to(const lahja_endpoint_t *ep, const char *name, int *ready)
{
    struct conn *found = NULL;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *c = lahja_container_of(l, struct conn, link);
        const char *n = c->peer != NULL ? c->peer->s : c->target;
        if (c->state == CONN_DRAINING || strcmp(n, name) != 0)
            continue;
        if (c->state == CONN_READY) {
            *ready = 1;
            return c;
        }
        if (found == NULL)
            found = c;
    }
    *ready = 0;
    return found;
}

/* ------------------------------------------------------------- backoff */

/* A wait between three quarters of `ms` and `ms` (at least 1). */
static uint32_t jitter(struct dialer *dl, uint32_t ms)
{
    uint64_t x = dl->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    dl->rng = x;
    uint32_t wait = ms - (uint32_t)(x % ((uint64_t)ms / 4 + 1));
    return wait > 0 ? wait : 1;
}

/* Schedules kept d's next attempt after the backoff's next wait; the
 * wait after it doubles, up to max_ms. */
static void backoff(struct dialer *dl, struct dial *d)
{
    d->retry_ms = jitter(dl, d->next_ms);
    d->due = now_ms(dl->ep) + d->retry_ms;
    d->phase = DIAL_WAITING;
    d->next_ms = d->next_ms > d->max_ms / 2 ? d->max_ms : d->next_ms * 2;
}

static void attempt_failed(struct dialer *dl, struct dial *d, int err)
{
    d->failures++;
    d->last_error = err;
    backoff(dl, d);
    lahja_bus_log(dl->ep, LAHJA_LOG_DEBUG,
                  "kept connection to %s: attempt %u failed (%s); next in %u ms", d->cfg.name,
                  (unsigned)d->failures, lahja_strerror(err), (unsigned)d->retry_ms);
}

/* Starts an attempt for kept d, unless a connection to its name is there
 * or on its way already: then that one is followed. */
static void attempt(struct dialer *dl, struct dial *d)
{
    int ready;
    if (conn_to(dl->ep, d->cfg.name, &ready) != NULL) {
        d->phase = ready ? DIAL_UP : DIAL_ATTEMPT;
        return;
    }
    d->phase = DIAL_ATTEMPT;
    /* Its failure may come back through lahja_dial_conn_ended before
     * this returns, and schedule the next. */
    int rc = lahja_conn_dial(dl->ep, &d->cfg, CONN_KEPT);
    if (rc != 0)
        attempt_failed(dl, d, rc);
}

/* ------------------------------------------------- background connects */

/* Failed background connects are remembered for lahja_peer_info, the
 * latest FAILED_MAX of them. */
static void failed_trim(struct dialer *dl)
{
    size_t n = 0;
    struct dial *oldest = NULL;
    lahja_link_t *l;
    lahja_list_foreach(l, &dl->dials) {
        struct dial *d = lahja_container_of(l, struct dial, link);
        if (d->failed && !d->kept && !d->awaiting) {
            if (oldest == NULL)
                oldest = d;
            n++;
        }
    }
    if (n > FAILED_MAX)
        dial_free(oldest);
}

/* d's background connect is over, unsuccessfully (its connection, if
 * any, logged why at WARNING). */
static void nowait_failed(struct dialer *dl, struct dial *d, int err)
{
    d->awaiting = 0;
    d->last_error = err;
    if (d->kept)
        return;
    d->failed = 1;
    lahja_list_remove(&d->link);
    lahja_list_push_back(&dl->dials, &d->link);
    failed_trim(dl);
}

/* d's background connect, still under way at its deadline, gives up. */
static void give_up(struct dialer *dl, struct dial *d)
{
    lahja_endpoint_t *ep = dl->ep;
    struct conn *c = NULL;
    lahja_link_t *l;
    lahja_list_foreach(l, &ep->conns) {
        struct conn *o = lahja_container_of(l, struct conn, link);
        if (o->background == CONN_NOWAIT && o->state != CONN_READY && o->state != CONN_DRAINING
            && strcmp(o->target, d->cfg.name) == 0)
            c = o;
    }
    nowait_failed(dl, d, -ETIMEDOUT);
    if (c == NULL) {
        /* The peer's connection took its place, and has not come. */
        lahja_bus_log(ep, LAHJA_LOG_WARNING, "connection to %s: %s: the peer's did not come",
                      d->cfg.name, lahja_strerror(-ETIMEDOUT));
        return;
    }
    /* As lahja_connect says it, with the path: the log is where a
     * background connect reports. */
    char why[LAHJA_PATH_MAX + 160];
    snprintf(why, sizeof why, "%s at %s: %s", lahja_strerror(-ETIMEDOUT), c->path,
             lahja_conn_seen(c));
    lahja_conn_close(c, -ETIMEDOUT, why);
}

/* ---------------------------------------------------------------- timer */

/* A dial with something due at `now`: an attempt, or a deadline. */
static struct dial *next_due(struct dialer *dl, uint64_t now)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &dl->dials) {
        struct dial *d = lahja_container_of(l, struct dial, link);
        if ((d->kept && d->phase == DIAL_WAITING && d->due <= now)
            || (d->awaiting && d->give_up_at <= now))
            return d;
    }
    return NULL;
}

/*
 * Whatever is due.  Each step makes its dial not due any more (an
 * attempt started, or failed and scheduled later; a deadline passed),
 * and may change the list (a failure trims it): the walk starts again
 * after each.
 */
static void on_timer(uv_timer_t *t)
{
    lahja_endpoint_t *ep = t->data;
    struct dialer *dl = ep->dialer;
    if (dl == NULL || ep->stopped)
        return;
    uint64_t now = now_ms(ep);
    struct dial *d;
    while ((d = next_due(dl, now)) != NULL) {
        if (d->awaiting && d->give_up_at <= now)
            give_up(dl, d);
        else
            attempt(dl, d);
    }
    rearm(dl);
}

static void rearm(struct dialer *dl)
{
    uint64_t wake = UINT64_MAX;
    lahja_link_t *l;
    lahja_list_foreach(l, &dl->dials) {
        struct dial *d = lahja_container_of(l, struct dial, link);
        if (d->kept && d->phase == DIAL_WAITING && d->due < wake)
            wake = d->due;
        if (d->awaiting && d->give_up_at < wake)
            wake = d->give_up_at;
    }
    if (wake == UINT64_MAX) {
        uv_timer_stop(&dl->timer);
        return;
    }
    uint64_t now = now_ms(dl->ep);
    uv_timer_start(&dl->timer, on_timer, wake > now ? wake - now : 0, 0);
}

/* --------------------------------------------------------- conn.c's hooks */

void lahja_dial_conn_ready(struct conn *c)
{
    lahja_endpoint_t *ep = c->ep;
    c->up_at = now_ms(ep);
    struct dialer *dl = ep->dialer;
    struct dial *d = dial_find(dl, c->peer->s);
    if (d == NULL)
        return;
    d->awaiting = 0;
    d->failed = 0;
    if (d->kept) {
        if (d->lost) {
            d->reconnects++;
            lahja_bus_log(ep, LAHJA_LOG_INFO,
                          "kept connection to %s re-established (after %u failed attempts)",
                          d->cfg.name, (unsigned)d->failures);
        }
        d->lost = 0;
        d->failures = 0;
        d->next_ms = d->min_ms;
        d->phase = DIAL_UP;
    }
    dial_release(d);
    rearm(dl);
}

void lahja_dial_conn_ended(struct conn *c, int was_up, int err)
{
    lahja_endpoint_t *ep = c->ep;
    struct dialer *dl = ep->dialer;
    if (dl == NULL || ep->stopped || (!was_up && !c->outbound))
        return; /* an incoming one that never got up was nobody's attempt */
    const char *name = c->peer != NULL ? c->peer->s : c->target;
    struct dial *d = dial_find(dl, name);
    if (d == NULL)
        return;
    if (d->awaiting && c->background == CONN_NOWAIT && !was_up && err != 0)
        nowait_failed(dl, d, err);
    if (!d->kept) {
        rearm(dl);
        return;
    }
    int ready;
    if (conn_to(ep, name, &ready) != NULL) {
        d->phase = ready ? DIAL_UP : DIAL_ATTEMPT; /* that one is followed */
        return;
    }
    if (was_up) {
        d->lost = 1;
        d->failures = 0;
        d->last_error = err;
        d->next_ms = d->min_ms;
        backoff(dl, d);
        lahja_bus_log(ep, LAHJA_LOG_INFO, "kept connection to %s lost (%s); reconnecting in %u ms",
                      name, lahja_strerror(err), (unsigned)d->retry_ms);
    } else if (err == 0) {
        /* The peer's own connection takes the place of this one (settle):
         * it comes within a handshake's time, or, if the peer went
         * meanwhile, an attempt follows. */
        d->phase = DIAL_WAITING;
        d->retry_ms = ep->opts.handshake_timeout_ms;
        d->due = now_ms(ep) + d->retry_ms;
    } else {
        attempt_failed(dl, d, err);
    }
    rearm(dl);
}

void lahja_dial_stop(lahja_endpoint_t *ep)
{
    struct dialer *dl = ep->dialer;
    if (dl == NULL)
        return;
    ep->dialer = NULL;
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&dl->dials)) != NULL)
        free(lahja_container_of(l, struct dial, link));
    uv_close((uv_handle_t *)&dl->timer, on_dialer_closed);
}

/* ------------------------------------------------------------- the calls */

int lahja_keep_connected(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg,
                         const lahja_reconnect_options_t *opts)
{
    if (ep == NULL || !config_valid(cfg))
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    if (strcmp(cfg->name, ep->name->s) == 0)
        return LAHJA_ECONNREJECTED;
    struct dialer *dl;
    if ((rc = dialer_get(ep, &dl)) != 0)
        return rc;
    struct dial *d = dial_find(dl, cfg->name);
    if (d == NULL && (d = dial_new(dl, cfg)) == NULL)
        return -ENOMEM;
    d->cfg = *cfg;
    d->min_ms = opts != NULL && opts->min_ms != 0 ? opts->min_ms : DEFAULT_MIN_MS;
    d->max_ms = opts != NULL && opts->max_ms != 0 ? opts->max_ms : DEFAULT_MAX_MS;
    if (d->max_ms < d->min_ms)
        d->max_ms = d->min_ms;
    if (d->kept) { /* kept already: the new settings apply from now on */
        if (d->next_ms > d->max_ms || d->next_ms < d->min_ms)
            d->next_ms = d->next_ms > d->max_ms ? d->max_ms : d->min_ms;
        return 0;
    }
    d->kept = 1;
    d->failed = 0;
    d->lost = 0;
    d->failures = 0;
    d->next_ms = d->min_ms;
    attempt(dl, d);
    rearm(dl);
    return 0;
}

int lahja_stop_keeping(lahja_endpoint_t *ep, const char *name)
{
    if (ep == NULL || name == NULL)
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    struct dial *d = dial_find(ep->dialer, name);
    if (d == NULL || !d->kept)
        return -ENOENT;
    d->kept = 0;
    d->lost = 0;
    d->phase = DIAL_IDLE;
    dial_release(d);
    rearm(ep->dialer);
    return 0;
}

/* Whether a background connect to cfg has anything to do: not for a name
 * connected, being connected, kept or awaited already. */
static int nowait_wanted(lahja_endpoint_t *ep, struct dialer *dl, const lahja_conn_config_t *cfg)
{
    int ready;
    if (conn_to(ep, cfg->name, &ready) != NULL)
        return 0;
    struct dial *d = dial_find(dl, cfg->name);
    return d == NULL || (!d->kept && !d->awaiting);
}

int lahja_connect_nowait(lahja_endpoint_t *ep, const lahja_conn_config_t *configs, size_t n)
{
    if (ep == NULL || (configs == NULL && n > 0))
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (!config_valid(&configs[i]))
            return -EINVAL;
        if (strcmp(configs[i].name, ep->name->s) == 0)
            return LAHJA_ECONNREJECTED;
        for (size_t j = 0; j < i; j++)
            if (strcmp(configs[i].name, configs[j].name) == 0)
                return LAHJA_ECONNREJECTED;
    }
    struct dialer *dl;
    if ((rc = dialer_get(ep, &dl)) != 0)
        return rc;
    /* Every dial first, so that running out of memory starts nothing:
     * the ones made here (wanting nothing yet) go again. */
    for (size_t i = 0; i < n; i++) {
        if (!nowait_wanted(ep, dl, &configs[i]) || dial_find(dl, configs[i].name) != NULL)
            continue;
        if (dial_new(dl, &configs[i]) == NULL) {
            for (size_t j = 0; j < i; j++) {
                struct dial *d = dial_find(dl, configs[j].name);
                if (d != NULL)
                    dial_release(d);
            }
            return -ENOMEM;
        }
    }
    uint64_t deadline = now_ms(ep) + ep->opts.handshake_timeout_ms;
    for (size_t i = 0; i < n; i++) {
        if (!nowait_wanted(ep, dl, &configs[i]))
            continue;
        struct dial *d = dial_find(dl, configs[i].name);
        d->cfg = configs[i];
        d->awaiting = 1;
        d->failed = 0;
        d->give_up_at = deadline;
        rc = lahja_conn_dial(ep, &d->cfg, CONN_NOWAIT);
        if (rc != 0) {
            lahja_bus_log(ep, LAHJA_LOG_WARNING, "connection to %s: %s", d->cfg.name,
                          lahja_strerror(rc));
            nowait_failed(dl, d, rc);
        }
    }
    rearm(dl);
    return 0;
}

/* ---------------------------------------------------------------- query */

int lahja_peer_info(const lahja_endpoint_t *ep, const char *name, lahja_peer_info_t *out)
{
    if (ep == NULL || name == NULL || out == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(ep->rt))
        return LAHJA_EWRONGTHREAD;
    lahja_peer_info_t info = { .state = LAHJA_PEER_UNKNOWN };
    if (strcmp(name, ep->name->s) == 0) {
        info.state = LAHJA_PEER_CONNECTED; /* it counts itself */
        *out = info;
        return 0;
    }
    const struct dial *d = dial_find(ep->dialer, name);
    if (d != NULL) {
        info.kept = d->kept;
        info.failures = d->failures;
        info.reconnects = d->reconnects;
        info.last_error = d->last_error;
    }
    int ready;
    const struct conn *c = conn_to(ep, name, &ready);
    if (c != NULL && ready) {
        info.state = LAHJA_PEER_CONNECTED;
        info.outbound = c->outbound;
        info.pid = c->peer_pid;
        info.since = c->up_at;
    } else if (c != NULL || (d != NULL && (d->awaiting || (d->kept && d->phase != DIAL_WAITING)))) {
        info.state = LAHJA_PEER_CONNECTING;
    } else if (d != NULL && d->kept) {
        info.state = LAHJA_PEER_RETRYING;
        info.next_attempt = d->due;
        info.retry_ms = d->retry_ms;
    } else if (d != NULL && d->failed) {
        info.state = LAHJA_PEER_FAILED;
    }
    *out = info;
    return 0;
}
