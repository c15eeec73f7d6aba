/*
 * What an endpoint logs, and at which level: WARNING and above is what
 * loses data or what nobody is told of otherwise; what a call returns to
 * its caller, and a peer that simply goes, stay below.
 */
#define _GNU_SOURCE
#include "support_bus.h"

/* ------------------------------------------------------------ capture */

/* A log that wakes whoever waits for a line. */
struct wlog {
    struct bus_log log;
    lahja_cond_t changed;
};

static void wlog_fn(void *user, lahja_log_level_t level, const char *endpoint,
                    const char *message)
{
    struct wlog *w = user;
    bus_log_fn(&w->log, level, endpoint, message);
    lahja_cond_broadcast(&w->changed);
}

static lahja_endpoint_options_t wlog_opts(struct wlog *w)
{
    memset(w, 0, sizeof *w);
    lahja_cond_init(&w->changed);
    lahja_endpoint_options_t o = { .log = wlog_fn, .log_user = w };
    return o;
}

/* The index of the first line from `from` on containing a and b, or -1. */
static int wlog_find(const struct wlog *w, int from, const char *a, const char *b)
{
    for (int i = from; i < w->log.n; i++)
        if (strstr(w->log.line[i], a) != NULL && (b == NULL || strstr(w->log.line[i], b) != NULL))
            return i;
    return -1;
}

/* Waits (up to GUARD_MS) for such a line and returns its level. */
static int wlog_wait_level(struct wlog *w, int from, const char *a, const char *b)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (wlog_find(w, from, a, b) < 0)
        if (lahja_cond_wait(&w->changed, deadline) != 0)
            break;
    int i = wlog_find(w, from, a, b);
    if (i < 0) {
        fprintf(stderr, "expected a log line with \"%s\"%s%s%s:\n", a, b ? " and \"" : "",
                b ? b : "", b ? "\"" : "");
        bus_log_dump(&w->log);
    }
    EXPECT_TRUE(i >= 0);
    return i >= 0 ? (int)w->log.level[i] : -1;
}

/* Lines at `level` or above from `from` on. */
static int wlog_count_at(const struct wlog *w, int from, lahja_log_level_t level)
{
    int n = 0;
    for (int i = from; i < w->log.n; i++)
        n += w->log.level[i] >= level;
    return n;
}

/* ------------------------------------------------------------- levels */

static int failing_handler(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    (void)user;
    return -EIO;
}

static void post_nobody(lahja_endpoint_t *ep)
{
    lahja_event_t *ev = bus_event("Nobody", "posted");
    EXPECT_EQ(lahja_post(ep, ev, NULL, 0), 0);
}

/*
 * One endpoint, each kind of event that is logged, and the level it
 * gets: a failing handler is an ERROR; a posted broadcast nobody
 * subscribes to, and a peer dropped for bad input, are WARNINGs; the
 * same broadcast from a task (returned), a connect that fails (returned),
 * and a connection that closes before its handshake (the peer went,
 * nothing lost) are not.
 */
static int main_levels(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    static struct wlog w;
    lahja_endpoint_options_t opts = wlog_opts(&w);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_conn_config_t self = bus_cfg(dir, "srv");

    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Fails", failing_handler, NULL, &s), 0);
    EXPECT_EQ(bus_send(ep, "Fails", ""), 0);
    EXPECT_EQ(wlog_wait_level(&w, 0, "handler for Fails failed", lahja_strerror(-EIO)),
              LAHJA_LOG_ERROR);
    lahja_subscription_cancel(s);

    int from = w.log.n;
    EXPECT_EQ(bus_send(ep, "Nobody", ""), LAHJA_ENOSUBSCRIBERS);
    lahja_conn_config_t ghost = bus_cfg(dir, "ghost");
    EXPECT_EQ(lahja_connect(ep, &ghost, 1, lahja_deadline_in(50)), -ETIMEDOUT);
    EXPECT_EQ(wlog_wait_level(&w, from, "connection to ghost", "nobody serves that name"),
              LAHJA_LOG_INFO);
    int fd = raw_connect(self.path);
    EXPECT_TRUE(fd >= 0);
    close(fd);
    EXPECT_EQ(wlog_wait_level(&w, from, "incoming connection dropped", "closed by peer"),
              LAHJA_LOG_INFO);
    EXPECT_EQ(wlog_count_at(&w, from, LAHJA_LOG_WARNING), 0);

    post_nobody(ep);
    EXPECT_EQ(wlog_wait_level(&w, from, "posted Nobody not broadcast",
                              "nobody subscribes to Nobody"),
              LAHJA_LOG_WARNING);
    uint8_t buf[512];
    fd = raw_connect(self.path);
    EXPECT_TRUE(fd >= 0);
    raw_send(fd, buf, (size_t)(raw_hello_as(buf, "LAHJB", 1, "raw") - buf));
    EXPECT_EQ(wlog_wait_level(&w, from, "incoming connection dropped", lahja_strerror(-EPROTO)),
              LAHJA_LOG_WARNING);
    close(fd);
    EXPECT_EQ(wlog_count_at(&w, from, LAHJA_LOG_WARNING), 2);

    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(levels)

/* ------------------------------------------------------ stream drops */

/* Lines containing `a`, all of them WARNINGs (else -1). */
static int warnings_with(const struct wlog *w, const char *a)
{
    int n = 0;
    for (int i = 0; i < w->log.n; i++) {
        if (strstr(w->log.line[i], a) == NULL)
            continue;
        if (w->log.level[i] != LAHJA_LOG_WARNING)
            return -1;
        n++;
    }
    return n;
}

static void send_n(lahja_endpoint_t *ep, const char *type, int n)
{
    for (int i = 0; i < n; i++)
        EXPECT_EQ(bus_send(ep, type, "x"), 0);
}

/*
 * A full stream loses events: one WARNING at the first drop, none for a
 * flood in the same second, one with the count once a second has
 * passed, and one for the rest when it is closed.
 */
static int main_stream_drops_rate_limited(void *arg)
{
    (void)arg;
    static struct wlog w;
    lahja_endpoint_options_t opts = wlog_opts(&w);
    lahja_endpoint_t *ep = bus_client("e", &opts);
    lahja_stream_options_t oldest = { .capacity = 2, .policy = LAHJA_STREAM_DROP_OLDEST };
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Tick", 0, &oldest, &st), 0);

    send_n(ep, "Tick", 2); /* fills it: nothing lost */
    EXPECT_EQ(warnings_with(&w, "stream of Tick"), 0);
    send_n(ep, "Tick", 1);
    EXPECT_EQ(warnings_with(&w, "stream of Tick"), 1);
    EXPECT_TRUE(wlog_find(&w, 0, "stream of Tick full (capacity 2): dropping its oldest events",
                          NULL) >= 0);
    send_n(ep, "Tick", 50);
    EXPECT_EQ(lahja_stream_dropped(st), 51);
    EXPECT_EQ(warnings_with(&w, "stream of Tick"), 1);

    /* Not synchronization: the rate limit's second has to pass. */
    EXPECT_EQ(lahja_sleep(1100), 0);
    send_n(ep, "Tick", 1);
    EXPECT_EQ(warnings_with(&w, "stream of Tick"), 2);
    EXPECT_TRUE(wlog_find(&w, 0, "stream of Tick: dropped 51 more (52 in all)", NULL) >= 0);
    send_n(ep, "Tick", 5);
    EXPECT_EQ(warnings_with(&w, "stream of Tick"), 2);
    lahja_stream_close(st);
    EXPECT_EQ(warnings_with(&w, "stream of Tick"), 3);
    EXPECT_TRUE(wlog_find(&w, 0, "stream of Tick: dropped 5 more (57 in all)", NULL) >= 0);

    /* The other policy says what it drops; a close with nothing more
     * to say says nothing. */
    lahja_stream_options_t newest = { .capacity = 1, .policy = LAHJA_STREAM_DROP_NEWEST };
    EXPECT_EQ(lahja_stream_open(ep, "Tock", 0, &newest, &st), 0);
    send_n(ep, "Tock", 2);
    EXPECT_EQ(warnings_with(&w, "stream of Tock"), 1);
    EXPECT_TRUE(wlog_find(&w, 0, "stream of Tock full (capacity 1): dropping new events",
                          NULL) >= 0);
    lahja_stream_close(st);
    EXPECT_EQ(warnings_with(&w, "stream of Tock"), 1);

    bus_close(ep);
    return 0;
}
BUS_MAIN_TEST(stream_drops_rate_limited)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_stream_drops_rate_limited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
