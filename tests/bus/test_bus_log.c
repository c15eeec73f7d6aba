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

/* ------------------------------------------------- the default log */

/* stderr into a pipe, for the lines the endpoints print meanwhile. */
struct stderr_capture {
    int saved; /* the real stderr */
    int rd;    /* the pipe's read end */
};

static void capture_begin(struct stderr_capture *c)
{
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    EXPECT_TRUE(c->saved >= 0);
    EXPECT_EQ(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
    close(p[1]);
    c->rd = p[0];
}

/* Gives stderr back; buf gets what was written to it meanwhile. */
static void capture_end(struct stderr_capture *c, char *buf, size_t cap)
{
    EXPECT_EQ(dup2(c->saved, STDERR_FILENO), STDERR_FILENO);
    close(c->saved);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(c->rd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(c->rd);
}

/* The number of lines of `out` that are exactly
 * "lahja[<our pid>] <ep>: <level>: <message...>" with `text` in the
 * message; NULL level: any. */
static int lines_with(const char *out, const char *ep, const char *level, const char *text)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "lahja[%d] %s: ", (int)getpid(), ep);
    int n = 0;
    for (const char *l = out; *l != '\0';) {
        const char *end = strchr(l, '\n');
        size_t len = end != NULL ? (size_t)(end - l) : strlen(l);
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)len, l);
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            const char *lv = line + strlen(prefix);
            const char *colon = strstr(lv, ": ");
            if (colon != NULL && (level == NULL || (strncmp(lv, level, strlen(level)) == 0 &&
                                                    colon == lv + strlen(level))))
                n += strstr(colon, text) != NULL;
        }
        l += len + (end != NULL);
    }
    return n;
}

static int fails(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    (void)user;
    return -EIO;
}

/* Two endpoints without a log callback, and a line of each level from
 * "e": DEBUG (connected to srv), INFO (a connect that timed out),
 * WARNING (a stream's drop), ERROR (a failing handler).  LAHJA_LOG is
 * set to `at_creation` while they are created, to `after` then. */
static void lines_of_every_level(const char *dir, const char *at_creation, const char *after)
{
    if (at_creation != NULL)
        EXPECT_EQ(setenv("LAHJA_LOG", at_creation, 1), 0);
    else
        EXPECT_EQ(unsetenv("LAHJA_LOG"), 0);
    lahja_endpoint_options_t none = { 0 };
    lahja_endpoint_t *srv = bus_serve(dir, "srv", &none);
    lahja_endpoint_t *e = bus_client("e", &none);
    EXPECT_EQ(setenv("LAHJA_LOG", after, 1), 0);

    EXPECT_EQ(bus_connect(e, dir, "srv"), 0);
    lahja_conn_config_t ghost = bus_cfg(dir, "ghost");
    EXPECT_EQ(lahja_connect(e, &ghost, 1, lahja_deadline_in(20)), -ETIMEDOUT);
    lahja_stream_options_t one = { .capacity = 1 };
    lahja_stream_t *st = NULL;
    EXPECT_EQ(lahja_stream_open(e, "Tick", 0, &one, &st), 0);
    EXPECT_EQ(bus_send(e, "Tick", "1"), 0);
    EXPECT_EQ(bus_send(e, "Tick", "2"), 0);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(e, "Fails", fails, NULL, &s), 0);
    EXPECT_EQ(bus_send(e, "Fails", ""), 0);
    lahja_subscription_cancel(s);
    lahja_stream_close(st);
    bus_close(e);
    bus_close(srv);
}

/* What `at_creation` makes the endpoints print. */
static void run_with(const char *dir, const char *at_creation, char *out, size_t cap)
{
    struct stderr_capture c;
    capture_begin(&c);
    lines_of_every_level(dir, at_creation, "debug");
    capture_end(&c, out, cap);
}

static void expect_levels(const char *out, int debug, int info, int warning, int error)
{
    int d = lines_with(out, "e", "DEBUG", "connected to srv");
    int i = lines_with(out, "e", "INFO", "connection to ghost");
    int w = lines_with(out, "e", "WARNING", "stream of Tick full");
    int r = lines_with(out, "e", "ERROR", "handler for Fails failed: Input/output error");
    if (d != debug || i != info || w != warning || r != error)
        fprintf(stderr, "printed:\n%s", out);
    EXPECT_EQ(d, debug);
    EXPECT_EQ(i, info);
    EXPECT_EQ(w, warning);
    EXPECT_EQ(r, error);
}

static void expect_nothing(const char *out)
{
    if (out[0] != '\0')
        fprintf(stderr, "printed:\n%s", out);
    EXPECT_TRUE(out[0] == '\0');
}

/*
 * Without a log callback, lines go to stderr from the level LAHJA_LOG
 * names (in any case), as read when the endpoint was created; warnings
 * and errors when it is unset; nothing for "off".  Each is one line
 * "lahja[<pid>] <endpoint>: <LEVEL>: <message>".
 */
static int main_default_log_to_stderr(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    static char out[65536];

    run_with(dir, NULL, out, sizeof out);
    expect_levels(out, 0, 0, 1, 1);
    EXPECT_EQ(lines_with(out, "e", "DEBUG", "") + lines_with(out, "e", "INFO", ""), 0);
    EXPECT_TRUE(out[0] != '\0' && out[strlen(out) - 1] == '\n');

    run_with(dir, "debug", out, sizeof out);
    expect_levels(out, 1, 1, 1, 1);
    EXPECT_TRUE(lines_with(out, "srv", "DEBUG", "connected from e") == 1);

    run_with(dir, "INFO", out, sizeof out);
    expect_levels(out, 0, 1, 1, 1);

    run_with(dir, "Error", out, sizeof out);
    expect_levels(out, 0, 0, 0, 1);
    EXPECT_EQ(lines_with(out, "e", "WARNING", ""), 0);

    run_with(dir, "off", out, sizeof out); /* LAHJA_LOG=debug after creation */
    expect_nothing(out);

    run_with(dir, "loud", out, sizeof out);
    EXPECT_EQ(lines_with(out, "e", "WARNING", "LAHJA_LOG=loud not understood"), 1);
    expect_levels(out, 0, 0, 1, 1);

    /* An application's callback replaces it entirely. */
    static struct bus_log log;
    lahja_endpoint_options_t opts = bus_opts(&log);
    struct stderr_capture c;
    capture_begin(&c);
    EXPECT_EQ(setenv("LAHJA_LOG", "debug", 1), 0);
    lahja_endpoint_t *e = bus_client("e", &opts);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(e, "Fails", fails, NULL, &s), 0);
    EXPECT_EQ(bus_send(e, "Fails", ""), 0);
    bus_close(e);
    capture_end(&c, out, sizeof out);
    expect_nothing(out);
    EXPECT_EQ(bus_log_count(&log, "handler for Fails failed", NULL, NULL), 1);

    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(default_log_to_stderr)

/* A child that prints many lines: a handler that fails every event. */
static int child_noisy(void *arg)
{
    int n = *(const int *)arg;
    EXPECT_EQ(unsetenv("LAHJA_LOG"), 0);
    lahja_endpoint_options_t none = { 0 };
    lahja_endpoint_t *e = bus_client("noisy", &none);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(e, "Fails", fails, NULL, &s), 0);
    for (int i = 0; i < n; i++)
        EXPECT_EQ(bus_send(e, "Fails", "x"), 0);
    bus_close(e);
    return 0;
}

/*
 * Two processes printing at once into one stderr (a pipe, read as they
 * write): every line arrives whole, each process's from start to end.
 */
static int main_default_log_lines_whole(void *arg)
{
    (void)arg;
    static int n = 400; /* lines each: more than a pipe holds, together */
    static char out[1 << 18];
    struct stderr_capture c;
    capture_begin(&c);
    bus_child_t a = bus_fork(child_noisy, &n);
    bus_child_t b = bus_fork(child_noisy, &n);
    capture_end(&c, out, sizeof out); /* reads until both have exited */
    EXPECT_CHILD_OK(&a);
    EXPECT_CHILD_OK(&b);

    char want_a[128], want_b[128];
    const char *rest = " noisy: ERROR: handler for Fails failed: Input/output error";
    snprintf(want_a, sizeof want_a, "lahja[%d]%s", (int)a.pid, rest);
    snprintf(want_b, sizeof want_b, "lahja[%d]%s", (int)b.pid, rest);
    int from_a = 0, from_b = 0, other = 0;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l != NULL;
         l = strtok_r(NULL, "\n", &save)) {
        if (strcmp(l, want_a) == 0)
            from_a++;
        else if (strcmp(l, want_b) == 0)
            from_b++;
        else if (other++ < 5)
            fprintf(stderr, "a line not whole: \"%s\"\n", l);
    }
    EXPECT_EQ(from_a, n);
    EXPECT_EQ(from_b, n);
    EXPECT_EQ(other, 0);
    return 0;
}
BUS_MAIN_TEST(default_log_lines_whole)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_stream_drops_rate_limited),
        cmocka_unit_test(test_default_log_to_stderr),
        cmocka_unit_test(test_default_log_lines_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
