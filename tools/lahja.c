/*
 * lahja - look at a bus and take part in it from the shell.
 *
 *   lahja [--dir DIR] [--json] [--timeout MS] [--nats URLS] COMMAND [ARGS...]
 *
 * Every command runs one endpoint of its own ("lahja-<command>-<pid>").
 * emit, request, respond and monitor serve it in the bus directory and
 * join the bus (lahja_join): they reach every endpoint there, and those
 * that join reach them.  ls and stats connect to what they look at.  Only the public API is used.
 * Exit codes: 0 done, 1 failed, 2 usage, 3 no such endpoint, 4 timed
 * out, 5 nobody subscribes.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <pwd.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lahja/lahja.h>

enum { EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_NOENT = 3, EXIT_TIMEOUT = 4, EXIT_NOSUB = 5 };

static const char usage_text[] =
    "usage: lahja [--dir DIR] [--json] [--timeout MS] [--nats URLS] COMMAND [ARGS...]\n"
    "\n"
    "The bus is a directory of endpoint sockets (default: $XDG_RUNTIME_DIR/lahja\n"
    "or /tmp/lahja-UID).  Commands:\n"
    "  ls                         the endpoints there: name, live or stale, pid,\n"
    "                             subscriptions, and (if it answers) its peers\n"
    "  emit TYPE [PAYLOAD|@FILE|-] [--count N]\n"
    "                             broadcast an event, once someone subscribes,\n"
    "                             and wait until every receiver confirmed it\n"
    "  request TYPE [PAYLOAD] --response-type T\n"
    "                             send a request, print the response's payload\n"
    "  respond TYPE [PAYLOAD] [--response-type T] [--name NAME] [--count N]\n"
    "                             serve NAME (default lahja-respond) and answer\n"
    "                             requests of TYPE with PAYLOAD (T: TYPE.reply)\n"
    "  monitor [PATTERN...] [--count N] [--stats]\n"
    "                             print every event matching a pattern (default\n"
    "                             '*') as it passes: time, origin, type, size,\n"
    "                             payload preview; --stats: rates per type on\n"
    "                             stderr every second; Ctrl-C ends it\n"
    "  stats NAME                 the statistics endpoint NAME keeps\n"
    "  bridge --nats URLS [--name NAME]\n"
    "                             join the bus and the NATS cluster and forward\n"
    "                             between them what the other side subscribes to\n"
    "                             (NAME: bridge-HOSTNAME); Ctrl-C ends it\n"
    "  bench [--count N] [--size B] [--requests M]\n"
    "                             start a second endpoint (a process of its own,\n"
    "                             in a private directory) and measure between the\n"
    "                             two: N events of B bytes one-to-one (default\n"
    "                             200000 of 64), then M round trips (20000)\n"
    "\n"
    "Options: --dir DIR, --json (machine-readable output), --timeout MS (how\n"
    "long to wait for a peer, a subscriber, an answer; default 5000),\n"
    "--nats URLS (also join the endpoints of other hosts through these NATS\n"
    "servers, comma-separated), --nats-prefix P (their subjects' prefix).\n"
    "Exit codes: 0 done, 1 failed, 2 usage, 3 no such endpoint, 4 timed out,\n"
    "5 nobody subscribes.\n";

/* ----------------------------------------------------------- options */

static struct {
    const char *dir;
    const char *nats;
    const char *nats_prefix;
    int json;
    int stats;
    uint32_t timeout_ms;
    const char *response_type;
    const char *name;
    long count;
    size_t size;
    long requests;
    const char *cmd;
    const char **args;
    int nargs;
} opt = { .timeout_ms = 5000, .size = 64 };

static char dir_buf[LAHJA_PATH_MAX + 1];
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int parse(int argc, char **argv)
{
    static const char *args[64];
    opt.args = args;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        } else if (strcmp(a, "--json") == 0) {
            opt.json = 1;
        } else if (strcmp(a, "--stats") == 0) {
            opt.stats = 1;
        } else if (v != NULL && strcmp(a, "--dir") == 0) {
            opt.dir = argv[++i];
        } else if (v != NULL && strcmp(a, "--nats") == 0) {
            opt.nats = argv[++i];
        } else if (v != NULL && strcmp(a, "--nats-prefix") == 0) {
            opt.nats_prefix = argv[++i];
        } else if (v != NULL && strcmp(a, "--timeout") == 0) {
            opt.timeout_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (v != NULL && strcmp(a, "--response-type") == 0) {
            opt.response_type = argv[++i];
        } else if (v != NULL && strcmp(a, "--name") == 0) {
            opt.name = argv[++i];
        } else if (v != NULL && strcmp(a, "--count") == 0) {
            opt.count = strtol(argv[++i], NULL, 10);
        } else if (v != NULL && strcmp(a, "--size") == 0) {
            opt.size = (size_t)strtoul(argv[++i], NULL, 10);
        } else if (v != NULL && strcmp(a, "--requests") == 0) {
            opt.requests = strtol(argv[++i], NULL, 10);
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "lahja: unknown option %s\n", a);
            return -1;
        } else if (opt.cmd == NULL) {
            opt.cmd = a;
        } else if (opt.nargs < 64) {
            opt.args[opt.nargs++] = a;
        }
    }
    if (opt.cmd == NULL)
        return -1;
    if (opt.dir == NULL) {
        if (lahja_default_base_dir(dir_buf, sizeof dir_buf) != 0)
            return -1;
        opt.dir = dir_buf;
    }
    return 0;
}

/* ------------------------------------------------------------ output */

static void json_str(FILE *f, const char *s, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static int printable(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isprint((unsigned char)p[i]) && p[i] != '\n' && p[i] != '\t')
            return 0;
    return 1;
}

/* A payload as text if it is printable, else hex; `max` bytes at most. */
static void preview(FILE *f, const char *p, size_t len, size_t max)
{
    size_t n = len < max ? len : max;
    if (printable(p, n)) {
        for (size_t i = 0; i < n; i++)
            fputc(p[i] == '\n' || p[i] == '\t' ? ' ' : p[i], f);
    } else {
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%02x", (unsigned char)p[i]);
    }
    if (n < len)
        fputs("...", f);
}

static int exit_for(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case -ETIMEDOUT:
        return EXIT_TIMEOUT;
    case LAHJA_ENOSUBSCRIBERS:
        return EXIT_NOSUB;
    case -ENOENT:
        return EXIT_NOENT;
    default:
        return EXIT_FAILED;
    }
}

static int fail(lahja_endpoint_t *ep, const char *what, int rc)
{
    const char *why = ep != NULL ? lahja_endpoint_last_error(ep) : "";
    fprintf(stderr, "lahja %s: %s\n", what, why[0] != '\0' ? why : lahja_strerror(rc));
    return exit_for(rc);
}

/* ---------------------------------------------------------- endpoints */

/* A started endpoint of this command, serving at DIR/name if `serve`,
 * joined to the NATS cluster of --nats if `nats`. */
static lahja_endpoint_t *open_ep_on(const char *name, int serve, int nats)
{
    char own[LAHJA_NAME_MAX + 1];
    if (name == NULL) {
        snprintf(own, sizeof own, "lahja-%s-%d", opt.cmd, (int)getpid());
        name = own;
    }
    lahja_endpoint_options_t o = { .linger_ms = opt.timeout_ms };
    lahja_endpoint_t *ep = NULL;
    int rc = lahja_endpoint_new(name, &o, &ep);
    if (rc != 0) {
        fail(NULL, "endpoint", rc);
        return NULL;
    }
    lahja_conn_config_t cfg;
    rc = serve ? lahja_conn_config_from_name(&cfg, name, opt.dir) : 0;
    if (rc == 0)
        rc = lahja_endpoint_start(ep, serve ? &cfg : NULL);
    if (rc == 0 && nats && opt.nats != NULL) {
        lahja_nats_options_t no = { .servers = opt.nats, .prefix = opt.nats_prefix };
        rc = lahja_join_nats(ep, &no);
    }
    if (rc != 0) {
        fail(ep, "start", rc);
        lahja_endpoint_stop(ep);
        lahja_endpoint_free(ep);
        return NULL;
    }
    return ep;
}

static lahja_endpoint_t *open_ep(const char *name, int serve)
{
    return open_ep_on(name, serve, 1);
}

static void close_ep(lahja_endpoint_t *ep)
{
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
}

/* Whether a file of the bus directory is an endpoint's socket,
 * `<name>.ipc`; its name in `name`. */
static int ipc_name(const char *file, char name[LAHJA_NAME_MAX + 1])
{
    size_t n = strlen(file);
    if (n <= 4 || n - 4 > LAHJA_NAME_MAX || strcmp(file + n - 4, ".ipc") != 0)
        return 0;
    memcpy(name, file, n - 4);
    name[n - 4] = '\0';
    return 1;
}

/* Until every endpoint whose socket is in the directory now is
 * connected, or has been tried and found stale (a second at most), so
 * that what follows reaches all of them, not only the first to answer.
 * A connection is made ready by the peer's subscriptions: once it is,
 * they are known. */
static void settle(lahja_endpoint_t *ep)
{
    lahja_time_t until = lahja_deadline_in(opt.timeout_ms < 1000 ? opt.timeout_ms : 1000);
    for (;;) {
        DIR *d = opendir(opt.dir);
        int pending = 0;
        struct dirent *e;
        char name[LAHJA_NAME_MAX + 1];
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (!ipc_name(e->d_name, name))
                continue;
            lahja_peer_info_t info;
            if (strcmp(name, lahja_endpoint_name(ep)) != 0 &&
                (lahja_peer_info(ep, name, &info) != 0 || info.state == LAHJA_PEER_UNKNOWN ||
                 info.state == LAHJA_PEER_CONNECTING))
                pending++;
        }
        if (d != NULL)
            closedir(d);
        if (pending == 0 || lahja_now() >= until)
            return;
        lahja_sleep(5);
    }
}

/* Joins the bus and waits until `type` has a subscriber (NULL: nothing);
 * LAHJA_ENOSUBSCRIBERS, said, if none comes in time. */
static int join_for(lahja_endpoint_t *ep, const char *type)
{
    int rc = lahja_join(ep, opt.dir);
    if (rc != 0 || type == NULL)
        return rc;
    settle(ep);
    rc = lahja_wait_until_any_endpoint_subscribed_to(ep, type, lahja_deadline_in(opt.timeout_ms));
    if (rc == -ETIMEDOUT) {
        fprintf(stderr, "lahja %s: nobody in %s subscribes to %s (waited %u ms)\n", opt.cmd,
                opt.dir, type, (unsigned)opt.timeout_ms);
        return LAHJA_ENOSUBSCRIBERS;
    }
    return rc;
}

/* The payload argument: text, @FILE or - (standard input). */
static char *read_payload(const char *arg, size_t *len)
{
    if (arg == NULL) {
        *len = 0;
        return strdup("");
    }
    if (strcmp(arg, "-") != 0 && arg[0] != '@') {
        *len = strlen(arg);
        return strdup(arg);
    }
    FILE *f = strcmp(arg, "-") == 0 ? stdin : fopen(arg + 1, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *more = realloc(buf, cap *= 2);
            if (more == NULL)
                free(buf);
            buf = more;
        }
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}

/* ---------------------------------------------------------------- emit */

static int cmd_emit(void)
{
    if (opt.nargs < 1)
        return EXIT_USAGE;
    size_t len;
    char *payload = read_payload(opt.nargs > 1 ? opt.args[1] : NULL, &len);
    if (payload == NULL) {
        fprintf(stderr, "lahja emit: cannot read %s\n", opt.args[1]);
        return EXIT_FAILED;
    }
    lahja_endpoint_t *ep = open_ep(NULL, 1);
    if (ep == NULL) {
        free(payload);
        return EXIT_FAILED;
    }
    int rc = join_for(ep, opt.args[0]);
    long n = opt.count > 0 ? opt.count : 1;
    for (long i = 0; rc == 0 && i < n; i++)
        rc = lahja_broadcast_bytes(ep, opt.args[0], payload, len, NULL,
                                   lahja_deadline_in(opt.timeout_ms));
    if (rc == 0)
        rc = lahja_wait_until_delivered(ep, lahja_deadline_in(opt.timeout_ms));
    int code = rc == LAHJA_ENOSUBSCRIBERS ? EXIT_NOSUB : rc == 0 ? 0 : fail(ep, "emit", rc);
    if (rc == 0 && opt.json)
        printf("{\"type\":\"%s\",\"events\":%ld,\"size\":%zu}\n", opt.args[0], n, len);
    free(payload);
    close_ep(ep);
    return code;
}

/* ------------------------------------------------------------- request */

static int cmd_request(void)
{
    if (opt.nargs < 1 || opt.response_type == NULL)
        return EXIT_USAGE;
    const char *payload = opt.nargs > 1 ? opt.args[1] : "";
    lahja_endpoint_t *ep = open_ep(NULL, 1);
    if (ep == NULL)
        return EXIT_FAILED;
    int rc = join_for(ep, opt.args[0]);
    lahja_event_t *resp = NULL;
    if (rc == 0)
        rc = lahja_request_bytes(ep, opt.args[0], opt.response_type, payload, strlen(payload),
                                 NULL, lahja_deadline_in(opt.timeout_ms), &resp);
    int code = 0;
    if (rc == LAHJA_ENOSUBSCRIBERS) {
        code = EXIT_NOSUB;
    } else if (rc != 0) {
        code = fail(ep, "request", rc);
    } else {
        size_t len;
        const char *p = lahja_event_payload(resp, &len);
        if (opt.json) {
            printf("{\"origin\":");
            json_str(stdout, lahja_event_origin(resp), strlen(lahja_event_origin(resp)));
            printf(",\"type\":");
            json_str(stdout, lahja_event_type(resp), strlen(lahja_event_type(resp)));
            printf(",\"size\":%zu,\"payload\":", len);
            json_str(stdout, p, len);
            printf("}\n");
        } else {
            fwrite(p, 1, len, stdout);
            if (len == 0 || p[len - 1] != '\n')
                putchar('\n');
        }
        lahja_event_unref(resp);
    }
    close_ep(ep);
    return code;
}

/* ------------------------------------------------------------- respond */

struct responder {
    const char *type;
    const char *payload;
    long answered;
};

static int on_request(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct responder *r = user;
    int rc = lahja_respond_bytes(ep, ev, r->type, r->payload, strlen(r->payload));
    if (rc == 0)
        r->answered++;
    return rc;
}

static int cmd_respond(void)
{
    if (opt.nargs < 1)
        return EXIT_USAGE;
    char reply[LAHJA_NAME_MAX + 1];
    snprintf(reply, sizeof reply, "%s.reply", opt.args[0]);
    struct responder r = { opt.response_type != NULL ? opt.response_type : reply,
                           opt.nargs > 1 ? opt.args[1] : "", 0 };
    lahja_endpoint_t *ep = open_ep(opt.name != NULL ? opt.name : "lahja-respond", 1);
    if (ep == NULL)
        return EXIT_FAILED;
    int rc = lahja_subscribe(ep, opt.args[0], on_request, &r, NULL);
    if (rc == 0)
        rc = lahja_join(ep, opt.dir);
    if (rc != 0) {
        int code = fail(ep, "respond", rc);
        close_ep(ep);
        return code;
    }
    printf("serving %s: answering %s with %s\n", lahja_endpoint_name(ep), opt.args[0], r.type);
    fflush(stdout);
    while (!interrupted && (opt.count <= 0 || r.answered < opt.count))
        lahja_sleep(20);
    /* The last answer is confirmed before we go (stop lingers for it). */
    close_ep(ep);
    return 0;
}

/* ------------------------------------------------------------- monitor */

#define MONITOR_TYPES 64

/* What a monitor has seen, and per type (the first MONITOR_TYPES types;
 * the rest together) for --stats. */
struct monitor {
    uint64_t seen;
    size_t ntypes;
    char *type[MONITOR_TYPES];
    uint64_t count[MONITOR_TYPES + 1], bytes[MONITOR_TYPES + 1];
    uint64_t last[MONITOR_TYPES + 1];
};

static void monitor_count(struct monitor *m, const char *type, size_t len)
{
    size_t i = 0;
    while (i < m->ntypes && strcmp(m->type[i], type) != 0)
        i++;
    if (i == m->ntypes) {
        if (i < MONITOR_TYPES && (m->type[i] = strdup(type)) != NULL)
            m->ntypes++;
        else
            i = MONITOR_TYPES;
    }
    m->count[i]++;
    m->bytes[i] += len;
}

/* One line per type: events/s over the last interval, and in all. */
static void monitor_rates(struct monitor *m, double secs)
{
    for (size_t i = 0; i <= m->ntypes; i++) {
        size_t k = i < m->ntypes ? i : MONITOR_TYPES;
        if (k == MONITOR_TYPES && m->count[k] == 0)
            continue;
        fprintf(stderr, "%-32s %10.0f events/s %12llu events %14llu bytes\n",
                k < MONITOR_TYPES ? m->type[k] : "(other types)",
                (double)(m->count[k] - m->last[k]) / secs, (unsigned long long)m->count[k],
                (unsigned long long)m->bytes[k]);
        m->last[k] = m->count[k];
    }
}

static int on_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct monitor *m = user;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    size_t len;
    const char *p = lahja_event_payload(ev, &len);
    const char *origin = lahja_event_origin(ev);
    if (opt.json) {
        printf("{\"time\":%ld.%06ld,\"origin\":", (long)tv.tv_sec, (long)tv.tv_usec);
        json_str(stdout, origin, strlen(origin));
        printf(",\"type\":");
        json_str(stdout, lahja_event_type(ev), strlen(lahja_event_type(ev)));
        printf(",\"size\":%zu,\"payload\":", len);
        json_str(stdout, p, len < 64 ? len : 64);
        printf("}\n");
    } else {
        struct tm tm;
        localtime_r(&tv.tv_sec, &tm);
        printf("%02d:%02d:%02d.%06ld %s %s %zu ", tm.tm_hour, tm.tm_min, tm.tm_sec,
               (long)tv.tv_usec, origin, lahja_event_type(ev), len);
        preview(stdout, p, len, 48);
        putchar('\n');
    }
    m->seen++;
    if (opt.stats)
        monitor_count(m, lahja_event_type(ev), len);
    return 0;
}

static int cmd_monitor(void)
{
    static const char *all[] = { "*" };
    const char **patterns = opt.nargs > 0 ? opt.args : all;
    int n = opt.nargs > 0 ? opt.nargs : 1;
    struct monitor m = { 0 };
    lahja_endpoint_t *ep = open_ep(NULL, 1); /* found by those that join */
    if (ep == NULL)
        return EXIT_FAILED;
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++)
        rc = lahja_subscribe(ep, patterns[i], on_event, &m, NULL);
    if (rc == 0)
        rc = lahja_join(ep, opt.dir);
    if (rc != 0) {
        int code = fail(ep, "monitor", rc);
        close_ep(ep);
        return code;
    }
    /* Handlers never drop an event: a monitor that cannot keep up slows
     * the publishers (their high-water marks) instead of missing any. */
    fprintf(stderr, "monitoring %s\n", opt.dir);
    lahja_time_t next = lahja_deadline_in(1000);
    while (!interrupted && (opt.count <= 0 || (long)m.seen < opt.count)) {
        fflush(stdout);
        lahja_sleep(20);
        if (opt.stats && lahja_now() >= next) {
            monitor_rates(&m, 1.0 + (double)(lahja_now() - next) / 1000.0);
            next = lahja_deadline_in(1000);
        }
    }
    fflush(stdout);
    if (opt.stats)
        monitor_rates(&m, 1.0);
    for (size_t i = 0; i < m.ntypes; i++)
        free(m.type[i]);
    /* Missed: what the endpoint's streams dropped (it takes events with
     * handlers, which never drop; said if that ever changes). */
    lahja_endpoint_stats_t st = { 0 };
    lahja_endpoint_stats(ep, &st);
    uint64_t missed = st.stream_drops;
    fprintf(stderr, "%llu events, %llu missed\n", (unsigned long long)m.seen,
            (unsigned long long)missed);
    close_ep(ep);
    return 0;
}

/* --------------------------------------------------------- stats and ls */

/* Asks `name` for its statistics: the reply's payload, or NULL. */
static lahja_event_t *ask_stats(lahja_endpoint_t *ep, const char *name, int *rc)
{
    lahja_broadcast_config_t cfg = { .filter_endpoint = name };
    lahja_event_t *resp = NULL;
    *rc = lahja_request_bytes(ep, LAHJA_STATS_REQUEST, LAHJA_STATS_REPLY, NULL, 0, &cfg,
                              lahja_deadline_in(opt.timeout_ms), &resp);
    return *rc == 0 ? resp : NULL;
}

/* Connects to DIR/name; -ENOENT if there is no such socket. */
static int connect_to(lahja_endpoint_t *ep, const char *name, uint32_t ms)
{
    lahja_conn_config_t cfg;
    int rc = lahja_conn_config_from_name(&cfg, name, opt.dir);
    if (rc != 0)
        return rc;
    struct stat st;
    if (stat(cfg.path, &st) == 0)
        return lahja_connect(ep, &cfg, 1, lahja_deadline_in(ms));
    if (opt.nats == NULL)
        return -ENOENT;
    /* Not in the directory: an endpoint of another host, if it is in the
     * cluster (it connects by itself, and may be the one that opened the
     * connection: then its subscriptions come just after). */
    lahja_time_t deadline = lahja_deadline_in(ms);
    rc = lahja_wait_until_connected_to(ep, name, deadline);
    if (rc == -ETIMEDOUT)
        return -ENOENT;
    if (rc == 0)
        lahja_wait_until_endpoint_subscribed_to(ep, name, LAHJA_STATS_REQUEST,
                                                lahja_deadline_in(ms < 1000 ? ms : 1000));
    return rc;
}

static int cmd_stats(void)
{
    if (opt.nargs < 1)
        return EXIT_USAGE;
    lahja_endpoint_t *ep = open_ep(NULL, 0);
    if (ep == NULL)
        return EXIT_FAILED;
    int rc = connect_to(ep, opt.args[0], opt.timeout_ms);
    lahja_event_t *resp = rc == 0 ? ask_stats(ep, opt.args[0], &rc) : NULL;
    int code = 0;
    if (rc == -ENOENT) {
        fprintf(stderr, "lahja stats: no endpoint %s in %s\n", opt.args[0], opt.dir);
        code = EXIT_NOENT;
    } else if (resp == NULL) {
        code = fail(ep, "stats", rc);
    } else {
        size_t len;
        const char *p = lahja_event_payload(resp, &len);
        if (opt.json) {
            /* key=value lines as one object; repeated keys (sub, peer...)
             * as they come, in an array of pairs. */
            printf("[");
            const char *line = p, *end = p + len;
            int first = 1;
            while (line < end) {
                const char *nl = memchr(line, '\n', (size_t)(end - line));
                const char *stop = nl != NULL ? nl : end;
                const char *eq = memchr(line, '=', (size_t)(stop - line));
                if (eq != NULL) {
                    printf("%s[", first ? "" : ",");
                    json_str(stdout, line, (size_t)(eq - line));
                    putchar(',');
                    json_str(stdout, eq + 1, (size_t)(stop - eq - 1));
                    putchar(']');
                    first = 0;
                }
                line = stop + 1;
            }
            printf("]\n");
        } else {
            fwrite(p, 1, len, stdout);
        }
        lahja_event_unref(resp);
    }
    close_ep(ep);
    return code;
}

/* From name's stats reply, if it answers: its user and its peers (but
 * this command's own endpoint). */
static void stats_summary(lahja_endpoint_t *ep, const char *name, char *user, size_t ulen,
                          char *peers, size_t plen)
{
    if (!lahja_is_endpoint_subscribed_to(ep, name, LAHJA_STATS_REQUEST))
        return;
    int rc;
    lahja_event_t *resp = ask_stats(ep, name, &rc);
    if (resp == NULL)
        return;
    size_t len;
    const char *p = lahja_event_payload(resp, &len), *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl != NULL ? nl : end;
        int n = (int)(stop - p);
        if (n > 4 && strncmp(p, "uid=", 4) == 0) {
            uid_t uid = (uid_t)strtoul(p + 4, NULL, 10);
            struct passwd *pw = getpwuid(uid);
            if (pw != NULL)
                snprintf(user, ulen, "%s", pw->pw_name);
            else
                snprintf(user, ulen, "%u", (unsigned)uid);
        } else if (n > 5 && strncmp(p, "peer=", 5) == 0 &&
                   strncmp(p + 5, lahja_endpoint_name(ep), strlen(lahja_endpoint_name(ep))) != 0) {
            size_t at = strlen(peers);
            snprintf(peers + at, plen - at, "%s%.*s", at ? "," : "", n - 5, p + 5);
        }
        p = stop + 1;
    }
    lahja_event_unref(resp);
}

/* The types a peer announced, for ls. */
struct peer_view {
    const char *name;
    char subs[1024];
};

static void on_peer(const char *name, const char *const *types, size_t ntypes, void *user)
{
    struct peer_view *v = user;
    if (strcmp(name, v->name) != 0)
        return;
    for (size_t i = 0; i < ntypes; i++) {
        size_t at = strlen(v->subs);
        snprintf(v->subs + at, sizeof v->subs - at, "%s%s", i ? "," : "", types[i]);
    }
}

static int cmd_ls(void)
{
    DIR *d = opendir(opt.dir);
    if (d == NULL) {
        fprintf(stderr, "lahja ls: %s: %s\n", opt.dir, strerror(errno));
        return EXIT_NOENT;
    }
    lahja_endpoint_t *ep = open_ep(NULL, 0);
    if (ep == NULL) {
        closedir(d);
        return EXIT_FAILED;
    }
    if (opt.json)
        printf("[");
    else
        printf("%-24s %-6s %8s %-10s %-30s %s\n", "NAME", "STATE", "PID", "USER",
               "SUBSCRIPTIONS", "PEERS");
    int first = 1;
    struct dirent *e;
    char name[LAHJA_NAME_MAX + 1];
    while ((e = readdir(d)) != NULL) {
        if (!ipc_name(e->d_name, name) || strcmp(name, lahja_endpoint_name(ep)) == 0)
            continue;
        int rc = connect_to(ep, name, opt.timeout_ms < 1000 ? opt.timeout_ms : 1000);
        int live = rc == 0;
        lahja_peer_info_t info = { 0 };
        struct peer_view v = { name, "" };
        char user[64] = "-", peers[1024] = "";
        if (live) {
            lahja_peer_info(ep, name, &info);
            lahja_foreach_peer(ep, on_peer, &v);
            stats_summary(ep, name, user, sizeof user, peers, sizeof peers);
        }
        if (opt.json) {
            printf("%s{\"name\":", first ? "" : ",");
            json_str(stdout, name, strlen(name));
            printf(",\"live\":%s,\"pid\":%d,\"user\":", live ? "true" : "false",
                   live ? (int)info.pid : 0);
            json_str(stdout, user, strlen(user));
            printf(",\"subscriptions\":");
            json_str(stdout, v.subs, strlen(v.subs));
            printf(",\"peers\":");
            json_str(stdout, peers, strlen(peers));
            printf("}");
        } else {
            printf("%-24s %-6s %8d %-10s %-30s %s\n", name, live ? "live" : "stale",
                   live ? (int)info.pid : 0, user, v.subs[0] ? v.subs : "-",
                   peers[0] ? peers : "-");
        }
        first = 0;
    }
    if (opt.json)
        printf("]\n");
    closedir(d);
    close_ep(ep);
    return 0;
}

/* --------------------------------------------------------------- bench */

/* `lahja bench` starts a second process (this program, as the hidden
 * command bench-peer) in a private bus directory, and measures between
 * its endpoint and that one: one-to-one throughput (events broadcast
 * until every one is confirmed by the receipts, and counted again by the
 * receiver) and sequential request round trips. */

#define BENCH_PEER "lahja-bench-peer"

struct bench_peer {
    uint64_t events, bytes;
    int done;
};

static int on_bench_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct bench_peer *b = user;
    size_t len;
    lahja_event_payload(ev, &len);
    b->events++;
    b->bytes += len;
    return 0;
}

static int on_bench_ping(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)user;
    size_t len;
    const char *p = lahja_event_payload(ev, &len);
    return lahja_respond_bytes(ep, ev, "bench.Pong", p, len);
}

static int on_bench_count(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct bench_peer *b = user;
    char text[64];
    int n = snprintf(text, sizeof text, "%llu %llu", (unsigned long long)b->events,
                     (unsigned long long)b->bytes);
    return lahja_respond_bytes(ep, ev, "bench.Counted", text, (size_t)n);
}

static int on_bench_done(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    ((struct bench_peer *)user)->done = 1;
    return 0;
}

/* The other side: counts events, answers pings and counts, until told
 * it is done or its parent goes. */
static int cmd_bench_peer(void)
{
    struct bench_peer b = { 0 };
    pid_t parent = getppid();
    lahja_endpoint_t *ep = open_ep(BENCH_PEER, 1);
    if (ep == NULL)
        return EXIT_FAILED;
    int rc = lahja_subscribe(ep, "bench.Event", on_bench_event, &b, NULL);
    if (rc == 0)
        rc = lahja_subscribe(ep, "bench.Ping", on_bench_ping, &b, NULL);
    if (rc == 0)
        rc = lahja_subscribe(ep, "bench.Count", on_bench_count, &b, NULL);
    if (rc == 0)
        rc = lahja_subscribe(ep, "bench.Done", on_bench_done, &b, NULL);
    if (rc != 0) {
        int code = fail(ep, "bench-peer", rc);
        close_ep(ep);
        return code;
    }
    while (!b.done && !interrupted && getppid() == parent)
        lahja_sleep(20);
    close_ep(ep);
    return 0;
}

static double secs_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Starts bench-peer in `dir`; its pid, or -1. */
static pid_t spawn_peer(const char *dir)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    char ms[32];
    snprintf(ms, sizeof ms, "%u", (unsigned)opt.timeout_ms);
    execl(self, "lahja", "--dir", dir, "--timeout", ms, "bench-peer", (char *)NULL);
    _exit(127);
}

struct bench_result {
    long events;
    size_t size;
    double thr_secs;
    uint64_t counted, counted_bytes;
    long requests;
    double rtt_median_us, rtt_p99_us, rtt_secs;
};

static int bench_run(lahja_endpoint_t *ep, struct bench_result *r)
{
    char *payload = calloc(1, r->size ? r->size : 1);
    double *rtt = calloc((size_t)r->requests, sizeof *rtt);
    int rc = payload != NULL && rtt != NULL ? 0 : -ENOMEM;
    lahja_broadcast_config_t to = { .filter_endpoint = BENCH_PEER };
    struct timespec t0;

    /* Throughput: until the last event is confirmed. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; rc == 0 && i < r->events; i++)
        rc = lahja_broadcast_bytes(ep, "bench.Event", payload, r->size, &to,
                                   lahja_deadline_in(opt.timeout_ms));
    if (rc == 0)
        rc = lahja_wait_until_delivered(ep, lahja_deadline_in(opt.timeout_ms));
    r->thr_secs = secs_since(&t0);

    /* The receiver's own count. */
    lahja_event_t *resp = NULL;
    if (rc == 0)
        rc = lahja_request_bytes(ep, "bench.Count", "bench.Counted", NULL, 0, &to,
                                 lahja_deadline_in(opt.timeout_ms), &resp);
    if (rc == 0) {
        size_t len;
        const char *p = lahja_event_payload(resp, &len);
        char text[64];
        snprintf(text, sizeof text, "%.*s", (int)(len < 63 ? len : 63), p);
        unsigned long long ev = 0, by = 0;
        sscanf(text, "%llu %llu", &ev, &by);
        r->counted = ev;
        r->counted_bytes = by;
        lahja_event_unref(resp);
    }

    /* Round trips, one at a time. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; rc == 0 && i < r->requests; i++) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        rc = lahja_request_bytes(ep, "bench.Ping", "bench.Pong", payload, r->size, &to,
                                 lahja_deadline_in(opt.timeout_ms), &resp);
        rtt[i] = secs_since(&t) * 1e6;
        lahja_event_unref(resp);
        resp = NULL;
    }
    r->rtt_secs = secs_since(&t0);
    if (rc == 0 && r->requests > 0) {
        qsort(rtt, (size_t)r->requests, sizeof *rtt, cmp_double);
        r->rtt_median_us = rtt[r->requests / 2];
        r->rtt_p99_us = rtt[(size_t)((double)r->requests * 0.99)];
    }
    free(rtt);
    free(payload);
    return rc;
}

static void bench_print(const struct bench_result *r)
{
    double evs = (double)r->events / r->thr_secs;
    double mbs = evs * (double)r->size / 1e6;
    double rps = (double)r->requests / r->rtt_secs;
    if (opt.json) {
        printf("{\"events\":%ld,\"size\":%zu,\"seconds\":%.6f,\"events_per_s\":%.0f,"
               "\"mb_per_s\":%.3f,\"received\":%llu,\"lost\":%lld,\"requests\":%ld,"
               "\"requests_per_s\":%.0f,\"rtt_median_us\":%.2f,\"rtt_p99_us\":%.2f}\n",
               r->events, r->size, r->thr_secs, evs, mbs, (unsigned long long)r->counted,
               (long long)r->events - (long long)r->counted, r->requests, rps,
               r->rtt_median_us, r->rtt_p99_us);
        return;
    }
    printf("one-to-one    %ld events of %zu B in %.3f s: %.0f events/s, %.1f MB/s, "
           "%llu received\n",
           r->events, r->size, r->thr_secs, evs, mbs, (unsigned long long)r->counted);
    printf("round trip    %ld requests of %zu B: median %.1f us, p99 %.1f us, "
           "%.0f requests/s\n",
           r->requests, r->size, r->rtt_median_us, r->rtt_p99_us, rps);
}

static int cmd_bench(void)
{
    struct bench_result r = {
        .events = opt.count > 0 ? opt.count : 200000,
        .size = opt.size,
        .requests = opt.requests > 0 ? opt.requests : 20000,
    };
    char dir[] = "/tmp/lahja-bench-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "lahja bench: %s: %s\n", dir, strerror(errno));
        return EXIT_FAILED;
    }
    pid_t pid = spawn_peer(dir);
    if (pid < 0) {
        fprintf(stderr, "lahja bench: cannot start the other endpoint: %s\n", strerror(errno));
        rmdir(dir);
        return EXIT_FAILED;
    }
    lahja_endpoint_t *ep = open_ep(NULL, 0);
    int rc = ep != NULL ? lahja_join(ep, dir) : -ENOMEM;
    if (rc == 0)
        rc = lahja_wait_until_endpoint_subscribed_to(ep, BENCH_PEER, "bench.Done",
                                                     lahja_deadline_in(opt.timeout_ms));
    if (rc == 0)
        rc = bench_run(ep, &r);
    int code = 0;
    if (rc != 0) {
        code = ep != NULL ? fail(ep, "bench", rc) : EXIT_FAILED;
    } else if (r.counted != (uint64_t)r.events || r.counted_bytes != (uint64_t)r.events * r.size) {
        fprintf(stderr, "lahja bench: sent %ld events, %llu received\n", r.events,
                (unsigned long long)r.counted);
        code = EXIT_FAILED;
    } else {
        bench_print(&r);
    }
    if (ep != NULL) {
        lahja_broadcast_config_t to = { .filter_endpoint = BENCH_PEER };
        if (lahja_is_connected_to(ep, BENCH_PEER))
            lahja_broadcast_bytes(ep, "bench.Done", NULL, 0, &to, lahja_deadline_in(1000));
        close_ep(ep);
    }
    /* The peer goes when told, or when its parent does; reaped here,
     * killed if it has not gone within the timeout. */
    int status;
    lahja_time_t until = lahja_deadline_in(opt.timeout_ms);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (lahja_now() >= until) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        lahja_sleep(10);
    }
    char sock[sizeof dir + LAHJA_NAME_MAX + 8];
    snprintf(sock, sizeof sock, "%s/%s.ipc", dir, BENCH_PEER);
    unlink(sock);
    rmdir(dir);
    return code;
}

/* ------------------------------------------------------------ bridge */

/*
 * lahja bridge: the local bus and the endpoints of other hosts, through
 * two endpoints of one name: `local` joins the bus directory, `remote`
 * the NATS cluster.  Each subscribes, on its side, to what the other
 * side's peers subscribe to, and the other endpoint broadcasts what it
 * receives (requests: the other endpoint asks, with any response type,
 * and the answer goes back).  What a bridge endpoint broadcasts itself
 * is not sent back.  Forwarding never waits: a side over its peers' hard
 * limit drops, and says how many (lahja_broadcast_nowait).
 */

#define BRIDGE_MAX_REQUESTS 4096 /* forwarded requests pending at once */

struct bridge_side {
    lahja_endpoint_t *ep;         /* subscribes here */
    struct bridge_side *other;    /* and broadcasts there */
    const char *label;            /* "local" or "remote" */
    char **types;                 /* subscribed to, for the other's peers */
    lahja_subscription_t **subs;
    size_t ntypes, cap;
    char **want;                  /* being collected */
    size_t nwant, wcap;
    uint64_t events, requests, dropped, dropped_said;
    size_t pending;               /* forwarded requests not answered yet */
    int changed;                  /* its peers' subscriptions changed */
    lahja_op_t *watch;
};

struct bridge_ask {
    struct bridge_side *side;     /* where the request came from */
    lahja_event_t *request;
};

static void bridge_want(const char *name, const char *const *types, size_t ntypes, void *user)
{
    (void)name;
    struct bridge_side *s = user;
    for (size_t i = 0; i < ntypes; i++) {
        if (strncmp(types[i], "lahja.", 6) == 0)
            continue; /* the library's own */
        int dup = 0;
        for (size_t k = 0; k < s->nwant && !dup; k++)
            dup = strcmp(s->want[k], types[i]) == 0;
        if (dup)
            continue;
        if (s->nwant == s->wcap) {
            size_t cap = s->wcap ? 2 * s->wcap : 16;
            char **w = realloc(s->want, cap * sizeof *w);
            if (w == NULL)
                return;
            s->want = w;
            s->wcap = cap;
        }
        s->want[s->nwant] = strdup(types[i]);
        if (s->want[s->nwant] != NULL)
            s->nwant++;
    }
}

static void bridge_said(struct bridge_side *s)
{
    if (s->dropped != s->dropped_said) {
        fprintf(stderr, "lahja bridge: %llu events for the %s side dropped so far: its peers "
                        "are not keeping up\n", (unsigned long long)s->dropped,
                s->other->label);
        s->dropped_said = s->dropped;
    }
}

static void on_bridge_answer(lahja_endpoint_t *ep, int status, lahja_event_t *resp, void *user)
{
    (void)ep;
    struct bridge_ask *a = user;
    a->side->pending--;
    if (status == 0) {
        size_t len;
        const void *p = lahja_event_payload(resp, &len);
        lahja_respond_bytes(a->side->ep, a->request, lahja_event_type(resp), p, len);
        lahja_event_unref(resp);
    }
    lahja_event_unref(a->request);
    free(a);
}

static int on_bridge_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct bridge_side *s = user;
    const char *origin = lahja_event_origin(ev);
    if (origin != NULL && strcmp(origin, lahja_endpoint_name(ep)) == 0)
        return 0; /* ours, forwarded from the other side */
    size_t len;
    const void *p = lahja_event_payload(ev, &len);
    lahja_endpoint_t *out = s->other->ep;
    if (lahja_event_id(ev) != 0) {
        /* A request: asked on the other side, answered on this one. */
        struct bridge_ask *a = s->pending < BRIDGE_MAX_REQUESTS ? malloc(sizeof *a) : NULL;
        if (a == NULL) {
            s->dropped++;
            return 0;
        }
        a->side = s;
        a->request = lahja_event_ref(ev);
        if (a->request == NULL) {
            free(a);
            s->dropped++;
            return 0;
        }
        s->pending++;
        s->requests++;
        int rc = lahja_request_bytes_cb(out, lahja_event_type(ev), LAHJA_ANY_RESPONSE, p, len,
                                        NULL, lahja_deadline_in(opt.timeout_ms),
                                        on_bridge_answer, a, NULL);
        if (rc != 0) {
            s->pending--;
            lahja_event_unref(a->request);
            free(a);
            if (rc != LAHJA_ENOSUBSCRIBERS)
                s->dropped++;
        }
        return 0;
    }
    lahja_event_t *copy = NULL;
    int rc = lahja_event_new(lahja_event_type(ev), p, len, &copy);
    const lahja_broadcast_config_t cfg = { .allow_no_subscribers = 1 };
    if (rc == 0)
        rc = lahja_broadcast_nowait(out, copy, &cfg);
    lahja_event_unref(copy);
    if (rc == 0)
        s->events++;
    else
        s->dropped++;
    return 0;
}

/* Subscribes s to exactly what the other side's peers subscribe to. */
static int bridge_sync(struct bridge_side *s)
{
    for (size_t i = 0; i < s->nwant; i++)
        free(s->want[i]);
    s->nwant = 0;
    lahja_foreach_peer(s->other->ep, bridge_want, s);
    /* Gone: unsubscribed. */
    for (size_t i = 0; i < s->ntypes;) {
        int kept = 0;
        for (size_t k = 0; k < s->nwant && !kept; k++)
            kept = strcmp(s->want[k], s->types[i]) == 0;
        if (kept) {
            i++;
            continue;
        }
        lahja_subscription_cancel(s->subs[i]);
        free(s->types[i]);
        s->ntypes--;
        s->types[i] = s->types[s->ntypes];
        s->subs[i] = s->subs[s->ntypes];
    }
    /* New: subscribed. */
    for (size_t k = 0; k < s->nwant; k++) {
        int have = 0;
        for (size_t i = 0; i < s->ntypes && !have; i++)
            have = strcmp(s->want[k], s->types[i]) == 0;
        if (have)
            continue;
        if (s->ntypes == s->cap) {
            size_t cap = s->cap ? 2 * s->cap : 16;
            char **t = realloc(s->types, cap * sizeof *t);
            if (t != NULL)
                s->types = t;
            lahja_subscription_t **u = realloc(s->subs, cap * sizeof *u);
            if (u != NULL)
                s->subs = u;
            if (t == NULL || u == NULL)
                return -ENOMEM;
            s->cap = cap;
        }
        int rc = lahja_subscribe(s->ep, s->want[k], on_bridge_event, s, &s->subs[s->ntypes]);
        if (rc != 0)
            return rc;
        s->types[s->ntypes++] = s->want[k];
        s->want[k] = NULL; /* moved */
    }
    return 0;
}

static lahja_cond_t bridge_wake;

static void on_bridge_change(lahja_endpoint_t *ep, int status, void *user)
{
    (void)ep;
    (void)status;
    struct bridge_side *s = user;
    s->watch = NULL;
    s->changed = 1;
    lahja_cond_signal(&bridge_wake);
}

/* Watches s's peers' subscriptions (and connections) for changes. */
static int bridge_watch(struct bridge_side *s)
{
    return lahja_wait_until_endpoint_subscriptions_change_cb(s->ep, LAHJA_FOREVER,
                                                             on_bridge_change, s, &s->watch);
}

static void bridge_free(struct bridge_side *s)
{
    for (size_t i = 0; i < s->nwant; i++)
        free(s->want[i]);
    for (size_t i = 0; i < s->ntypes; i++)
        free(s->types[i]);
    free(s->want);
    free(s->types);
    free(s->subs);
}

static int cmd_bridge(void)
{
    if (opt.nats == NULL || opt.nargs != 0) {
        fprintf(stderr, "lahja bridge: --nats URLS is needed\n");
        return EXIT_USAGE;
    }
    char name[LAHJA_NAME_MAX + 1];
    if (opt.name != NULL) {
        snprintf(name, sizeof name, "%s", opt.name);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(name, sizeof name, "bridge-%s", host);
    }
    struct bridge_side local = { .label = "local" }, remote = { .label = "remote" };
    local.other = &remote;
    remote.other = &local;
    local.ep = open_ep_on(name, 1, 0);
    remote.ep = local.ep != NULL ? open_ep_on(name, 0, 1) : NULL;
    int rc = remote.ep != NULL ? lahja_join(local.ep, opt.dir) : -ENOMEM;
    if (rc != 0) {
        int code = local.ep != NULL && remote.ep != NULL ? fail(local.ep, "bridge", rc) : EXIT_FAILED;
        if (remote.ep != NULL)
            close_ep(remote.ep);
        if (local.ep != NULL)
            close_ep(local.ep);
        return code;
    }
    printf("bridging %s and NATS %s as %s\n", opt.dir, opt.nats, name);
    fflush(stdout);
    lahja_cond_init(&bridge_wake);
    local.changed = remote.changed = 1;
    while (rc == 0 && !interrupted) {
        /* A change on one side changes what the other subscribes to. */
        if (local.changed || remote.changed) {
            int lc = local.changed, rch = remote.changed;
            local.changed = remote.changed = 0;
            if (lc && rc == 0)
                rc = bridge_watch(&local);
            if (rch && rc == 0)
                rc = bridge_watch(&remote);
            if (rch && rc == 0)
                rc = bridge_sync(&local);
            if (lc && rc == 0)
                rc = bridge_sync(&remote);
        }
        bridge_said(&local);
        bridge_said(&remote);
        if (rc == 0 && !local.changed && !remote.changed) {
            int w = lahja_cond_wait(&bridge_wake, lahja_deadline_in(200));
            if (w != 0 && w != -ETIMEDOUT)
                rc = w;
        }
    }
    if (local.watch != NULL)
        lahja_op_cancel(local.watch);
    if (remote.watch != NULL)
        lahja_op_cancel(remote.watch);
    printf("forwarded %llu events and %llu requests to the remote side, %llu events and %llu "
           "requests to the local side; dropped %llu and %llu\n",
           (unsigned long long)local.events, (unsigned long long)local.requests,
           (unsigned long long)remote.events, (unsigned long long)remote.requests,
           (unsigned long long)local.dropped, (unsigned long long)remote.dropped);
    close_ep(remote.ep);
    close_ep(local.ep);
    bridge_free(&local);
    bridge_free(&remote);
    return rc == 0 ? 0 : fail(NULL, "bridge", rc);
}

/* --------------------------------------------------------------- main */

static int main_task(void *arg)
{
    (void)arg;
    static const struct {
        const char *name;
        int (*fn)(void);
    } cmds[] = {
        { "ls", cmd_ls },           { "emit", cmd_emit },       { "request", cmd_request },
        { "respond", cmd_respond }, { "monitor", cmd_monitor }, { "stats", cmd_stats },
        { "bench", cmd_bench },     { "bench-peer", cmd_bench_peer },
        { "bridge", cmd_bridge },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(opt.cmd, cmds[i].name) != 0)
            continue;
        int code = cmds[i].fn();
        if (code == EXIT_USAGE)
            fputs(usage_text, stderr);
        return code;
    }
    fprintf(stderr, "lahja: no command %s\n", opt.cmd);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (parse(argc, argv) != 0) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int code = lahja_run(main_task, NULL, NULL);
    lahja_nats_close(1000); /* nats.c's threads end before the process does */
    fflush(stdout);
    return code < 0 ? EXIT_FAILED : code;
}
