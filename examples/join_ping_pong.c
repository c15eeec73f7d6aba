/*
 * join_ping_pong: lahja's first README, the EventBus way.  Run it twice
 * (or more), each with its own name, on one bus:
 *
 *   build/examples/join_ping_pong proc1 --bus /tmp/mybus &
 *   build/examples/join_ping_pong proc2 --bus /tmp/mybus
 *
 * Neither names the other: each serves in the bus directory and joins it
 * (lahja_join), and the bus connects whoever is there.  Each waits until
 * --peers others subscribe to "Hit" (default 1), says hello and
 * broadcasts "Hit from <name>" --rounds times (default 3), --interval-ms
 * apart (default 500), and prints every hit it receives.  It stops once
 * it has every peer's hits and every peer has its own.
 *
 *   join_ping_pong NAME [--bus DIR] [--peers K] [--rounds N] [--interval-ms MS]
 *
 * Without --bus, the bus is the default directory (lahja_default_base_dir).
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lahja/lahja.h>

#define HIT "Hit"
#define PATIENCE_MS 10000 /* for the peers to show up, on top of the rounds */

static struct {
    const char *name;
    const char *bus;
    long peers;
    long rounds;
    long interval_ms;
} args = { NULL, NULL, 1, 3, 500 };

/* One whole line per call: the processes may share a terminal. */
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void log_problem(void *user, lahja_log_level_t level, const char *endpoint,
                        const char *message)
{
    (void)user;
    if (level >= LAHJA_LOG_WARNING)
        fprintf(stderr, "%s: %s\n", endpoint, message);
}

static lahja_time_t patience(void)
{
    return lahja_deadline_in(PATIENCE_MS + (uint64_t)args.rounds * (uint64_t)args.interval_ms);
}

/* The hits received; `all` is set when every peer's last has come. */
struct tally {
    long seen;
    lahja_latch_t all;
};

static int on_hit(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct tally *t = user;
    if (strcmp(lahja_event_origin(ev), lahja_endpoint_name(ep)) == 0)
        return 0; /* our own: a broadcast reaches our subscribers too */
    size_t len;
    const char *p = lahja_event_payload(ev, &len);
    say("%s received: %.*s", lahja_endpoint_name(ep), (int)len, p);
    if (++t->seen == args.rounds * args.peers)
        lahja_latch_set(&t->all);
    return 0;
}

static void count_hit_peer(const char *name, const char *const *types, size_t ntypes, void *user)
{
    (void)name;
    for (size_t i = 0; i < ntypes; i++)
        if (strcmp(types[i], HIT) == 0)
            ++*(long *)user;
}

/* The peers that subscribe to hits. */
static long hit_peers(const lahja_endpoint_t *ep)
{
    long n = 0;
    lahja_foreach_peer(ep, count_hit_peer, &n);
    return n;
}

/* Waits until `want` peers subscribe to hits (-1: until none does). */
static int wait_hit_peers(lahja_endpoint_t *ep, long want)
{
    int rc = 0;
    while (rc == 0 && (want < 0 ? hit_peers(ep) > 0 : hit_peers(ep) < want))
        rc = lahja_wait_until_endpoint_subscriptions_change(ep, patience());
    return rc;
}

static int chatter(lahja_endpoint_t *ep)
{
    char hit[LAHJA_NAME_MAX + 16];
    int len = snprintf(hit, sizeof hit, "Hit from %s", args.name);
    for (long i = 0; i < args.rounds; i++) {
        int rc = i == 0 ? 0 : lahja_sleep((uint64_t)args.interval_ms);
        lahja_event_t *ev = NULL;
        if (rc == 0) {
            say("Hello from %s", args.name);
            rc = lahja_event_new(HIT, hit, (size_t)len, &ev);
        }
        if (rc == 0)
            rc = lahja_broadcast(ep, ev, NULL, patience());
        lahja_event_unref(ev);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int play(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = NULL;
    lahja_conn_config_t cfg;
    const lahja_endpoint_options_t opts = { .log = log_problem };
    int rc = lahja_conn_config_from_name(&cfg, args.name, args.bus);
    if (rc == 0)
        rc = lahja_endpoint_new(args.name, &opts, &ep);
    if (rc != 0)
        return rc;
    struct tally t = { 0 };
    lahja_latch_init(&t.all);
    lahja_subscription_t *sub = NULL;
    rc = lahja_endpoint_start(ep, &cfg); /* serving in the bus directory */
    /* Subscribed before joining: every peer learns of it in the handshake. */
    if (rc == 0)
        rc = lahja_subscribe(ep, HIT, on_hit, &t, &sub);
    if (rc == 0)
        rc = lahja_join(ep, args.bus);
    if (rc == 0)
        rc = wait_hit_peers(ep, args.peers);
    if (rc == 0)
        rc = chatter(ep);
    if (rc == 0)
        rc = lahja_latch_wait(&t.all, patience());
    /* Stopping drops what is not yet written: so each unsubscribes once it
     * has all it wants, and stops once no peer wants anything more. */
    lahja_subscription_cancel(sub);
    if (rc == 0)
        rc = wait_hit_peers(ep, -1);
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
    return rc;
}

static int parse_long(const char *s, long min, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > INT_MAX)
        return -1;
    *out = v;
    return 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s NAME [--bus DIR] [--peers K>=1] [--rounds N>=1] [--interval-ms MS>=0]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        return usage(argv[0]);
    args.name = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = v == NULL;
        if (!bad && strcmp(argv[i], "--bus") == 0)
            args.bus = v;
        else if (!bad && strcmp(argv[i], "--peers") == 0)
            bad = parse_long(v, 1, &args.peers);
        else if (!bad && strcmp(argv[i], "--rounds") == 0)
            bad = parse_long(v, 1, &args.rounds);
        else if (!bad && strcmp(argv[i], "--interval-ms") == 0)
            bad = parse_long(v, 0, &args.interval_ms);
        else
            bad = 1;
        if (bad)
            return usage(argv[0]);
        i++;
    }
    int rc = lahja_run(play, NULL, &(lahja_task_options_t){ .name = args.name });
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", args.name, lahja_strerror(rc));
    return rc == 0 ? 0 : 1;
}
