/*
 * subscriber: connects to an endpoint (--from, default "publisher"),
 * subscribes to one event type (--type, default "Tick") and prints each
 * event it gets ("got tick 3 from publisher"), until --count events
 * (default 0: until Ctrl-C) or until that endpoint goes away.  It waits
 * up to --wait-ms (default 10000) for the endpoint to appear, so it may
 * start first.  In two terminals, in either order:
 *
 *   build/examples/subscriber --count 5
 *   build/examples/publisher --interval-ms 500
 *
 * It also listens to the other examples' events:
 *
 *   build/examples/subscriber --from app --type Heartbeat     (libuv_app)
 *   build/examples/subscriber --from worker --type Progress   (worker_thread)
 *
 * --dir DIR is the directory of the sockets: the same as the other
 * program's.  SIGINT or SIGTERM stops it cleanly, with exit status 0.
 * Task style, as examples/publisher.c.
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <lahja/lahja.h>

static struct {
    const char *dir, *from, *type;
    long count, wait_ms;
} args = { NULL, "publisher", "Tick", 0, 10000 };

static long received;
/* Cancelled by a signal, or by the handler once --count events came. */
static lahja_scope_t *work;
static lahja_subscription_t *sub;

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    printf("%s: stopping\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
    if (work != NULL)
        lahja_scope_cancel(work);
}

/* Called on the loop for each event, not in a task: it must not wait.
 * The event is lent for the call (lahja_event_ref would keep it). */
static int on_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)user;
    char type[LAHJA_NAME_MAX + 1];
    size_t n = 0, len;
    for (const char *t = lahja_event_type(ev); t[n] != '\0'; n++)
        type[n] = (char)tolower((unsigned char)t[n]);
    type[n] = '\0';
    const char *payload = lahja_event_payload(ev, &len);
    printf("got %s %.*s from %s\n", type, (int)len, payload, lahja_event_origin(ev));
    if (++received == args.count) {
        lahja_subscription_cancel(sub); /* allowed in its own handler */
        if (work != NULL)               /* NULL: already stopping */
            lahja_scope_cancel(work);   /* the main task's wait ends */
    }
    return 0;
}

static int main_task(void *arg)
{
    (void)arg;
    /* Each endpoint needs a name of its own, even one that only connects
     * out: a peer keeps one connection per name. */
    char name[32];
    snprintf(name, sizeof name, "subscriber-%ld", (long)getpid());
    lahja_conn_config_t from;
    lahja_endpoint_t *ep;
    int rc = lahja_conn_config_from_name(&from, args.from, args.dir);
    if (rc == 0)
        rc = lahja_endpoint_new(name, NULL, &ep);
    if (rc != 0)
        return rc;

    uv_signal_t sigs[2];
    const int signums[2] = { SIGINT, SIGTERM };
    for (int i = 0; i < 2; i++) {
        uv_signal_init(lahja_rt_loop(lahja_rt_current()), &sigs[i]);
        uv_signal_start(&sigs[i], on_signal, signums[i]);
    }

    rc = lahja_endpoint_start(ep, NULL); /* NULL: it serves nothing, only connects out */
    /* Subscribing before connecting: the peer learns of it in the
     * handshake, and may broadcast at once. */
    if (rc == 0)
        rc = lahja_subscribe(ep, args.type, on_event, NULL, &sub);
    if (rc == 0)
        rc = lahja_scope_open(LAHJA_FOREVER, 0, &work);
    if (rc == 0) {
        printf("waiting for %s\n", args.from);
        /* Waits for the socket file to appear, then for the handshake. */
        rc = lahja_connect(ep, &from, 1, lahja_deadline_in((uint64_t)args.wait_ms));
        while (rc == 0 && lahja_is_connected_to(ep, args.from))
            rc = lahja_wait_until_connections_change(ep, LAHJA_FOREVER);
        if (rc == 0) { /* it went away before --count events */
            printf("%s went away\n", args.from);
            rc = args.count == 0 ? 0 : LAHJA_EREMOTEDISCONNECTED;
        } else if (rc != -ECANCELED) {
            fprintf(stderr, "subscriber: %s\n", lahja_endpoint_last_error(ep));
        }
        if (lahja_scope_close(work) == -ECANCELED)
            rc = 0; /* --count events came, or a signal */
        work = NULL;
    }
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep); /* frees the subscription if still there */
    for (int i = 0; i < 2; i++)
        lahja_uv_close((uv_handle_t *)&sigs[i]);
    return rc;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        char *end = NULL;
        if (strcmp(argv[i], "--dir") == 0)
            args.dir = argv[i + 1];
        else if (strcmp(argv[i], "--from") == 0)
            args.from = argv[i + 1];
        else if (strcmp(argv[i], "--type") == 0)
            args.type = argv[i + 1];
        else if (strcmp(argv[i], "--count") == 0)
            args.count = strtol(argv[i + 1], &end, 10);
        else if (strcmp(argv[i], "--wait-ms") == 0)
            args.wait_ms = strtol(argv[i + 1], &end, 10);
        else
            return -1;
        if (end != NULL && (*end != '\0' || end == argv[i + 1]))
            return -1;
    }
    return argc % 2 == 1 && args.count >= 0 && args.wait_ms >= 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        fprintf(stderr, "usage: %s [--dir DIR] [--from NAME] [--type TYPE] [--count N] "
                        "[--wait-ms MS]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* line by line, also into a pipe */
    int rc = lahja_run(main_task, NULL, NULL);
    if (rc != 0)
        fprintf(stderr, "subscriber: %s\n", lahja_strerror(rc));
    return rc == 0 ? 0 : 1;
}
