/*
 * libuv_app: the bus inside a libuv program that has no tasks.
 *
 * The program owns its loop and its handles: a TCP server on 127.0.0.1
 * (an ephemeral port, printed) that echoes what a client sends (a line,
 * from nc) after "echo ", a timer, and signal watchers.  It hosts a lahja runtime on that loop
 * and, with the bus's non-suspending calls and callback forms, serves
 * the endpoint "app", which
 *  - answers each "Status" request with the number of TCP clients served;
 *  - broadcasts a "Heartbeat" every --interval-ms (default 1000) while
 *    someone subscribes to it.
 * With --ask NAME it is a client instead: it connects to the endpoint
 * NAME, requests its Status, prints the answer and exits.
 *
 *   build/examples/libuv_app                     # prints its TCP port
 *   nc 127.0.0.1 PORT                            # type lines
 *   build/examples/libuv_app --ask app
 *   build/examples/subscriber --from app --type Heartbeat
 *
 * --dir DIR as for examples/publisher.c.  SIGINT or SIGTERM stops it:
 * the handles are closed, the endpoint stopped (its callback frees it),
 * the runtime closed, and the loop runs to its end; exit status 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <lahja/lahja.h>

static struct {
    const char *dir, *ask;
    long interval_ms;
} args = { NULL, NULL, 1000 };

struct reply {
    uv_write_t req; /* first: the request's address is the reply's */
    char text[];
};

static struct {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_timer_t timer;
    uv_signal_t sigint, sigterm;
    lahja_rt_t *rt;
    lahja_endpoint_t *ep;
    unsigned long served, beats;
    int beat_pending, stopping, status;
} app;

/* What failed, in the endpoint's words when it has some (a connect that
 * found no socket, a request nobody answered), else the code's message. */
static void report(const char *what, int rc)
{
    const char *detail = app.ep != NULL ? lahja_endpoint_last_error(app.ep) : "";
    fprintf(stderr, "%s: %s\n", what, *detail != '\0' ? detail : lahja_strerror(rc));
}

/* ------------------------------------------------------------- the bus */

/* A subscription handler runs on the loop, like any libuv callback. */
static int on_status(lahja_endpoint_t *ep, lahja_event_t *req, void *user)
{
    (void)user;
    char text[64];
    int len = snprintf(text, sizeof text, "TCP clients served: %lu", app.served);
    return lahja_respond_bytes(ep, req, "StatusResponse", text, (size_t)len);
}

static void on_beat_queued(lahja_endpoint_t *ep, int status, void *user)
{
    (void)ep;
    (void)user;
    app.beat_pending = 0;
    if (status != 0 && !app.stopping)
        report("heartbeat", status);
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    /* Skipped while nobody listens, or while the last beat still waits
     * for a slow subscriber (rather than queueing beats without bound). */
    if (app.beat_pending || !lahja_is_any_endpoint_subscribed_to(app.ep, "Heartbeat"))
        return;
    char text[24];
    int len = snprintf(text, sizeof text, "%lu", ++app.beats);
    lahja_event_t *ev;
    int rc = lahja_event_new("Heartbeat", text, (size_t)len, &ev);
    if (rc == 0) {
        rc = lahja_broadcast_cb(app.ep, ev, NULL, lahja_deadline_in(5000), on_beat_queued, NULL,
                                NULL);
        lahja_event_unref(ev); /* the call holds its own reference */
    }
    app.beat_pending = rc == 0;
}

static void on_stopped(lahja_endpoint_t *ep, int status, void *user)
{
    (void)status;
    (void)user;
    lahja_endpoint_free(ep); /* allowed here: the stop is complete */
    app.ep = NULL;
}

static void on_closed(uv_handle_t *h)
{
    free(h);
}

/* The TCP clients are tagged, so that shutting down closes them and no
 * handle of the runtime's, which are not ours to close. */
static char client_tag;

static void close_client(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->data == &client_tag && !uv_is_closing(h))
        uv_close(h, on_closed);
}

/* Closes every handle of ours and stops the endpoint; uv_run returns
 * once all of it is done. */
static void shut_down(int status)
{
    if (app.stopping)
        return;
    app.stopping = 1;
    app.status = status;
    uv_close((uv_handle_t *)&app.sigint, NULL);
    uv_close((uv_handle_t *)&app.sigterm, NULL);
    uv_close((uv_handle_t *)&app.timer, NULL);
    uv_close((uv_handle_t *)&app.server, NULL);
    uv_walk(&app.loop, close_client, NULL);
    /* Ends the calls under way (their callbacks first), then on_stopped. */
    if (lahja_endpoint_stop_cb(app.ep, on_stopped, NULL) != 0)
        on_stopped(app.ep, 0, NULL); /* it never started */
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    printf("%s: stopping\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
    shut_down(0);
}

/* -------------------------------------------------------- --ask NAME */

static void on_answer(lahja_endpoint_t *ep, int status, lahja_event_t *resp, void *user)
{
    (void)ep;
    (void)user;
    if (status == 0) {
        size_t len;
        const char *p = lahja_event_payload(resp, &len);
        printf("%s: %.*s\n", args.ask, (int)len, p);
        lahja_event_unref(resp); /* the callback's reference */
    } else if (!app.stopping) {
        report("ask", status);
    }
    shut_down(status == 0 ? 0 : 1);
}

static void on_connected(lahja_endpoint_t *ep, int status, void *user)
{
    (void)user;
    lahja_event_t *req = NULL;
    if (status == 0)
        status = lahja_request_new("Status", "StatusResponse", NULL, 0, &req);
    if (status == 0)
        status = lahja_request_cb(ep, req, NULL, lahja_deadline_in(5000), on_answer, NULL, NULL);
    lahja_event_unref(req); /* the call holds its own reference */
    if (status != 0 && !app.stopping) {
        report("ask", status);
        shut_down(1);
    }
}

static int ask(void)
{
    lahja_conn_config_t peer;
    int rc = lahja_conn_config_from_name(&peer, args.ask, args.dir);
    if (rc == 0)
        rc = lahja_endpoint_start(app.ep, NULL); /* connects out only */
    if (rc == 0) /* waits up to 5 s for NAME's socket to appear */
        rc = lahja_connect_cb(app.ep, &peer, 1, lahja_deadline_in(5000), on_connected, NULL, NULL);
    return rc;
}

/* ----------------------------------------------------- the TCP server */

static void on_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(suggested);
    buf->len = buf->base != NULL ? suggested : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct reply *r = n > 0 ? malloc(sizeof *r + 5 + (size_t)n) : NULL;
    if (r != NULL) {
        memcpy(r->text, "echo ", 5);
        memcpy(r->text + 5, buf->base, (size_t)n);
        uv_buf_t out = uv_buf_init(r->text, (unsigned)(5 + n));
        if (uv_write(&r->req, s, &out, 1, on_written) != 0)
            free(r);
    } else if (n < 0) { /* UV_EOF: the client left */
        close_client((uv_handle_t *)s, NULL);
    }
    free(buf->base);
}

static void on_connection(uv_stream_t *server, int status)
{
    uv_tcp_t *c = status == 0 ? malloc(sizeof *c) : NULL;
    if (c == NULL)
        return;
    uv_tcp_init(&app.loop, c);
    c->data = &client_tag;
    if (uv_accept(server, (uv_stream_t *)c) == 0 &&
        uv_read_start((uv_stream_t *)c, on_alloc, on_read) == 0)
        app.served++;
    else
        close_client((uv_handle_t *)c, NULL);
}

static int serve(void)
{
    lahja_conn_config_t cfg;
    lahja_subscription_t *sub; /* lahja_endpoint_free frees it */
    struct sockaddr_in addr;
    int len = sizeof addr;
    int rc = lahja_conn_config_from_name(&cfg, "app", args.dir);
    if (rc == 0)
        rc = lahja_endpoint_start(app.ep, &cfg);
    if (rc == 0)
        rc = lahja_subscribe(app.ep, "Status", on_status, NULL, &sub);
    /* libuv's errors are negative errno values, as lahja's are. */
    if (rc == 0)
        rc = uv_ip4_addr("127.0.0.1", 0, &addr);
    if (rc == 0)
        rc = uv_tcp_bind(&app.server, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&app.server, 16, on_connection);
    if (rc == 0)
        rc = uv_tcp_getsockname(&app.server, (struct sockaddr *)&addr, &len);
    if (rc == 0)
        rc = uv_timer_start(&app.timer, on_timer, (uint64_t)args.interval_ms,
                            (uint64_t)args.interval_ms);
    if (rc == 0)
        printf("serving app at %s, TCP on 127.0.0.1:%d\n", cfg.path, ntohs(addr.sin_port));
    return rc;
}

/* ---------------------------------------------------------------- main */

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        char *end = NULL;
        if (strcmp(argv[i], "--dir") == 0)
            args.dir = argv[i + 1];
        else if (strcmp(argv[i], "--ask") == 0)
            args.ask = argv[i + 1];
        else if (strcmp(argv[i], "--interval-ms") == 0)
            args.interval_ms = strtol(argv[i + 1], &end, 10);
        else
            return -1;
        if (end != NULL && (*end != '\0' || end == argv[i + 1]))
            return -1;
    }
    return argc % 2 == 1 && args.interval_ms > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        fprintf(stderr, "usage: %s [--dir DIR] [--interval-ms MS] [--ask NAME]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* line by line, also into a pipe */
    char name[32];
    snprintf(name, sizeof name, "ask-%ld", (long)getpid()); /* a name of its own */

    /* The application's loop and handles, as ever; then a runtime on
     * that loop, which the endpoint needs (it makes no task here). */
    uv_loop_init(&app.loop);
    uv_tcp_init(&app.loop, &app.server);
    uv_timer_init(&app.loop, &app.timer);
    uv_signal_init(&app.loop, &app.sigint);
    uv_signal_init(&app.loop, &app.sigterm);
    int rc = uv_signal_start(&app.sigint, on_signal, SIGINT);
    if (rc == 0)
        rc = uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    if (rc == 0)
        rc = lahja_rt_new(&app.loop, NULL, &app.rt);
    if (rc == 0)
        rc = lahja_endpoint_new(args.ask != NULL ? name : "app", NULL, &app.ep);
    if (rc == 0)
        rc = args.ask != NULL ? ask() : serve();
    if (rc != 0) {
        report("libuv_app", rc);
        shut_down(1);
    }
    uv_run(&app.loop, UV_RUN_DEFAULT);  /* until shut_down's work is done */
    lahja_rt_close(app.rt);             /* accepts NULL */
    uv_run(&app.loop, UV_RUN_DEFAULT);  /* the runtime's close callbacks */
    if (uv_loop_close(&app.loop) != 0) {
        fprintf(stderr, "libuv_app: a handle was left open\n");
        return 1;
    }
    return app.status;
}
