/*
 * The Unix socket transport: a connection between two processes of one
 * host is a stream socket, accepted from the endpoint's listening socket
 * or connected to a peer's path.  Writes try the socket directly
 * (uv_try_write); what it does not take goes to libuv as a uv_write.  The
 * peer's credentials (SO_PEERCRED) decide whether it may connect (B27).
 */
#define _GNU_SOURCE /* struct ucred, POLLRDHUP */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "endpoint.h"

#define RETRY_MIN_MS 2
#define RETRY_MAX_MS 100

static int unix_try_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    return uv_try_write((uv_stream_t *)&c->io.ux.pipe, bufs, n);
}

static void on_write(uv_write_t *req, int status)
{
    lahja_conn_written(req->data, status);
}

static int unix_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    c->io.ux.write_req.data = c;
    return uv_write(&c->io.ux.write_req, (uv_stream_t *)&c->io.ux.pipe, bufs, n, on_write);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    lahja_conn_room(h->data, buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread != 0)
        lahja_conn_read(s->data, nread);
}

static int unix_read_start(struct conn *c)
{
    return uv_read_start((uv_stream_t *)&c->io.ux.pipe, on_alloc, on_read);
}

/* Reads what the socket holds, to its end or until the connection ends
 * (EOF itself is left for libuv to report). */
static void unix_read_now(struct conn *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->io.ux.pipe, &fd) != 0)
        return;
    while (c->state != CONN_CLOSING) {
        uv_buf_t room;
        lahja_conn_room(c, &room);
        if (room.len == 0)
            return;
        ssize_t n = read(fd, room.base, room.len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        lahja_conn_read(c, n);
    }
}

static int unix_poll(struct conn *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->io.ux.pipe, &fd) != 0)
        return CONN_POLL_HUP;
    struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
    if (poll(&p, 1, 0) != 1)
        return 0;
    return ((p.revents & POLLIN) ? CONN_POLL_IN : 0)
           | ((p.revents & (POLLRDHUP | POLLHUP | POLLERR)) ? CONN_POLL_HUP : 0);
}

/* B27: same user only, unless widened. */
static int unix_allowed(struct conn *c, char *why, size_t whylen)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->io.ux.pipe, &fd) != 0)
        return 0;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    c->peer_pid = cred.pid;
    if (cred.uid == geteuid())
        return 1;
    for (size_t i = 0; i < c->ep->opts.n_allowed_uids; i++)
        if (c->ep->opts.allowed_uids[i] == cred.uid)
            return 1;
    snprintf(why, whylen, "refusing a process of uid %u (not an allowed user)", (unsigned)cred.uid);
    return 0;
}

static void on_pipe_closed(uv_handle_t *h)
{
    lahja_conn_closed(h->data);
}

/* A loop torn down under a running endpoint (lahja_run returning while
 * it was never stopped) may have closed the handle already: then it is
 * not closed twice, and the connection's memory is left to go with the
 * process. */
static void unix_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->io.ux.pipe))
        uv_close((uv_handle_t *)&c->io.ux.pipe, on_pipe_closed);
}

const struct conn_transport lahja_unix_transport = {
    .name = "unix",
    .try_write = unix_try_write,
    .write = unix_write,
    .read_start = unix_read_start,
    .read_now = unix_read_now,
    .poll = unix_poll,
    .allowed = unix_allowed,
    .close = unix_close,
};

void lahja_unix_init(struct conn *c)
{
    uv_pipe_init(c->ep->rt->loop, &c->io.ux.pipe, 0);
    c->io.ux.pipe.data = c;
}

/* ------------------------------------------------------------- accepting */

static void on_reject_closed(uv_handle_t *h)
{
    lahja_endpoint_t *ep = h->data;
    ep->reject_busy = 0;
    int again = ep->accept_stalled && !ep->stopped;
    ep->accept_stalled = 0;
    lahja_ep_handle_closed(h);
    if (again)
        lahja_conn_accept(ep);
}

/*
 * No memory for a connection: the pending one is accepted into a pipe
 * the endpoint keeps for this, and closed.  It must be accepted, or
 * libuv would stop watching the listening socket until it is, and the
 * endpoint would never accept again.  While that pipe is closing, the
 * next accept waits for it.
 */
static void refuse_without_memory(lahja_endpoint_t *ep)
{
    lahja_bus_log(ep, LAHJA_LOG_WARNING, "refusing a connection: out of memory");
    if (ep->reject_busy) {
        ep->accept_stalled = 1;
        return;
    }
    uv_pipe_init(ep->rt->loop, &ep->reject, 0);
    ep->reject.data = ep;
    ep->reject_busy = 1;
    ep->nopen++;
    uv_accept((uv_stream_t *)&ep->server, (uv_stream_t *)&ep->reject);
    uv_close((uv_handle_t *)&ep->reject, on_reject_closed);
}

void lahja_conn_accept(lahja_endpoint_t *ep)
{
    char buf[128];
    const char *why = lahja_conn_over_limits(ep, buf, sizeof buf);
    struct conn *c = lahja_conn_new(ep, &lahja_unix_transport);
    if (c == NULL) {
        refuse_without_memory(ep);
        return;
    }
    lahja_unix_init(c);
    int rc = uv_accept((uv_stream_t *)&ep->server, (uv_stream_t *)&c->io.ux.pipe);
    if (rc != 0)
        lahja_conn_fail(c, rc, uv_strerror(rc));
    else if (why != NULL)
        lahja_conn_fail(c, LAHJA_ECONNREJECTED, why);
    else
        lahja_conn_start(c);
}

/* ----------------------------------------------------------- connecting */

static void on_retry(uv_timer_t *t)
{
    lahja_unix_connect(t->data);
}

/*
 * Connects with a plain non-blocking socket, handed to libuv once
 * connected: a Unix socket connect completes at once, and a socket that
 * does not exist yet (B4 waits for it) or has a full backlog is retried
 * with backoff without tearing down a libuv handle each time.
 */
void lahja_unix_connect(struct conn *c)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        lahja_conn_fail(c, -errno, "socket");
        return;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int err = errno;
        close(fd);
        /* A kept peer's attempt is one connect: dial.c backs off. */
        if ((err == ENOENT || err == ECONNREFUSED || err == EAGAIN)
            && c->background != CONN_KEPT) {
            c->connect_err = err;
            c->retry_ms = c->retry_ms ? c->retry_ms * 2 : RETRY_MIN_MS;
            if (c->retry_ms > RETRY_MAX_MS)
                c->retry_ms = RETRY_MAX_MS;
            uv_timer_start(&c->timer, on_retry, c->retry_ms, 0);
        } else {
            lahja_conn_fail(c, -err, strerror(err));
        }
        return;
    }
    int rc = uv_pipe_open(&c->io.ux.pipe, fd);
    if (rc != 0) {
        close(fd);
        lahja_conn_fail(c, rc, uv_strerror(rc));
        return;
    }
    lahja_conn_start(c);
}
