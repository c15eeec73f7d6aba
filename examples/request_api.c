/*
 * request_api: requests and their responses between two processes.
 *
 *   responder   serves endpoint "e1" and answers every GetSomethingRequest
 *               with a DeliverSomethingResponse carrying "Yay"
 *   requester   runs endpoint "e2" without serving, connects to e1 and
 *               makes --count requests, printing each answer
 *
 * The responder stops when the requester leaves.  The sockets live in a
 * fresh temporary directory (removed at the end) unless --base-dir names
 * one.
 *
 *   build/examples/request_api [--count N] [--base-dir DIR]
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lahja/lahja.h>

#define REQUEST "GetSomethingRequest"
#define RESPONSE "DeliverSomethingResponse"
#define CONNECT_MS 10000 /* for the other process to start */
#define ANSWER_MS 5000   /* for one answer */

static struct {
    long count;
    const char *base_dir;
} args = { 3, NULL };

/* One line per call, flushed at once, so that lines reach a pipe in the
 * order they happen. */
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* The endpoints report dropped peers and failing handlers here. */
static void log_problem(void *user, lahja_log_level_t level, const char *endpoint,
                        const char *message)
{
    (void)user;
    if (level >= LAHJA_LOG_WARNING)
        fprintf(stderr, "%s: %s\n", endpoint, message);
}

static const lahja_endpoint_options_t endpoint_options = { .log = log_problem };

/* ------------------------------------------------------------ responder */

/* A handler must not suspend: lahja_respond queues the answer and
 * returns.  A failure is logged by the endpoint. */
static int answer(lahja_endpoint_t *ep, lahja_event_t *request, void *user)
{
    (void)user;
    lahja_event_t *response;
    int rc = lahja_event_new(RESPONSE, "Yay", 3, &response);
    if (rc != 0)
        return rc;
    rc = lahja_respond(ep, request, response);
    lahja_event_unref(response);
    return rc;
}

/* Until e2 has come and gone: it leaves once it has all its answers. */
static int serve_requester(lahja_endpoint_t *ep)
{
    int rc = lahja_wait_until_connected_to(ep, "e2", lahja_deadline_in(CONNECT_MS));
    while (rc == 0 && lahja_is_connected_to(ep, "e2"))
        rc = lahja_wait_until_connections_change(ep, LAHJA_FOREVER);
    return rc;
}

static int responder(void *arg)
{
    (void)arg;
    lahja_conn_config_t cfg;
    lahja_endpoint_t *ep;
    int rc = lahja_conn_config_from_name(&cfg, "e1", args.base_dir);
    if (rc == 0)
        rc = lahja_endpoint_new("e1", &endpoint_options, &ep);
    if (rc != 0)
        return rc;
    lahja_subscription_t *sub = NULL;
    rc = lahja_endpoint_start(ep, &cfg);
    if (rc == 0)
        rc = lahja_subscribe(ep, REQUEST, answer, NULL, &sub);
    if (rc == 0)
        rc = serve_requester(ep);
    lahja_subscription_cancel(sub);
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
    return rc;
}

/* ------------------------------------------------------------ requester */

static int request_once(lahja_endpoint_t *ep)
{
    lahja_event_t *req, *resp;
    int rc = lahja_request_new(REQUEST, RESPONSE, NULL, 0, &req);
    if (rc != 0)
        return rc;
    say("Requesting");
    rc = lahja_request(ep, req, NULL, lahja_deadline_in(ANSWER_MS), &resp);
    lahja_event_unref(req);
    if (rc != 0)
        return rc;
    size_t len;
    const char *p = lahja_event_payload(resp, &len);
    say("Got answer: %.*s", (int)len, p);
    lahja_event_unref(resp);
    return 0;
}

static int requester(void *arg)
{
    (void)arg;
    lahja_conn_config_t e1;
    lahja_endpoint_t *ep;
    int rc = lahja_conn_config_from_name(&e1, "e1", args.base_dir);
    if (rc == 0)
        rc = lahja_endpoint_new("e2", &endpoint_options, &ep);
    if (rc != 0)
        return rc;
    rc = lahja_endpoint_start(ep, NULL); /* connects out only */
    if (rc == 0)
        rc = lahja_connect(ep, &e1, 1, lahja_deadline_in(CONNECT_MS));
    /* A request nobody subscribes to fails at once: make sure e1 has
     * subscribed (it may start after us and subscribe late). */
    if (rc == 0)
        rc = lahja_wait_until_any_endpoint_subscribed_to(ep, REQUEST,
                                                         lahja_deadline_in(CONNECT_MS));
    for (long i = 0; rc == 0 && i < args.count; i++)
        rc = request_once(ep);
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
    return rc;
}

/* --------------------------------------------------------------- parent */

static pid_t start_process(const char *name, lahja_task_fn fn)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int rc = lahja_run(fn, NULL, &(lahja_task_options_t){ .name = name });
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", name, lahja_strerror(rc));
    _exit(rc == 0 ? 0 : 1);
}

/* Waits for both; if one fails, the other is stopped rather than left to
 * wait out its deadlines for a peer that is gone.  Returns 1 if both
 * exited 0. */
static int wait_both(pid_t pids[2])
{
    int ok = 1;
    for (int left = 2; left > 0; left--) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0)
            return 0;
        int i = pid == pids[0] ? 0 : 1;
        pids[i] = 0;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            continue;
        ok = 0;
        if (pids[1 - i] > 0)
            kill(pids[1 - i], SIGTERM);
    }
    return ok;
}

/* Removes the temporary directory, and the socket a crashed responder
 * may have left in it. */
static void remove_base_dir(const char *dir)
{
    lahja_conn_config_t cfg;
    if (lahja_conn_config_from_name(&cfg, "e1", dir) == 0)
        unlink(cfg.path);
    if (rmdir(dir) != 0)
        perror(dir);
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = -1;
        if (val == NULL) {
            rc = -1;
        } else if (strcmp(argv[i], "--count") == 0) {
            char *end;
            errno = 0;
            args.count = strtol(val, &end, 10);
            rc = errno == 0 && end != val && *end == '\0' && args.count >= 0 ? 0 : -1;
        } else if (strcmp(argv[i], "--base-dir") == 0) {
            args.base_dir = val;
            rc = 0;
        }
        if (rc != 0) {
            fprintf(stderr, "usage: %s [--count N] [--base-dir DIR]\n", argv[0]);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0)
        return 2;
    char tmp[LAHJA_PATH_MAX + 1];
    const char *dir = args.base_dir;
    if (dir == NULL) {
        const char *t = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/lahja-request-XXXXXX", t != NULL && *t ? t : "/tmp");
        if (mkdtemp(tmp) == NULL) {
            perror("mkdtemp");
            return 1;
        }
        args.base_dir = tmp;
    }
    fflush(stdout); /* nothing buffered may be printed twice by the children */
    pid_t pids[2] = { start_process("responder", responder), -1 };
    if (pids[0] > 0)
        pids[1] = start_process("requester", requester);
    int ok;
    if (pids[1] > 0) {
        ok = wait_both(pids);
    } else {
        perror("fork");
        ok = 0;
        if (pids[0] > 0 && kill(pids[0], SIGTERM) == 0)
            waitpid(pids[0], NULL, 0);
    }
    if (dir == NULL)
        remove_base_dir(tmp);
    return ok ? 0 : 1;
}
