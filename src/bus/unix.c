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
#include <sys/stat.h>
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

/* ------------------------------------------------------------- listening */

/* Creates the default base directory, 0700, or checks that an existing
 * one is ours and private: a directory another user controls could
 * swap our socket for theirs. */
static int ensure_base_dir(const char *socket_path)
{
    char base[LAHJA_PATH_MAX + 1];
    if (lahja_default_base_dir(base, sizeof base) != 0)
        return 0;
    size_t n = strlen(base);
    if (strncmp(socket_path, base, n) != 0 || socket_path[n] != '/' ||
        strchr(socket_path + n + 1, '/') != NULL)
        return 0; /* an explicit path elsewhere: the caller's business */
    if (mkdir(base, 0700) != 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (lstat(base, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        return -EPERM;
    if ((st.st_mode & 077) != 0 && chmod(base, 0700) != 0)
        return -errno;
    return 0;
}

/*
 * B2: a socket file at `path` left by a crashed process is replaced; a
 * live endpoint there is not.  A probe connect tells them apart: nobody
 * listening answers ECONNREFUSED.  Anything but a socket is left alone.
 */
static int clear_stale_socket(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN)
        return -EADDRINUSE; /* alive (EAGAIN: alive, its backlog full) */
    if (err != ECONNREFUSED && err != ENOENT)
        return -err;
    if (unlink(path) != 0 && errno != ENOENT)
        return -errno;
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    lahja_endpoint_t *ep = server->data;
    if (status < 0) {
        lahja_bus_log(ep, LAHJA_LOG_WARNING, "accept: %s", uv_strerror(status));
        return;
    }
    lahja_conn_accept(ep);
}

/*
 * Binds, restricts and listens with plain calls before libuv sees the
 * socket: the file is 0600 before anyone can connect, and a failure
 * leaves no libuv handle whose asynchronous close the endpoint would have
 * to outlive.
 */
static int bind_socket(const char *path, int *out)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int rc = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        rc = -errno;
    else if (chmod(path, 0600) != 0 || listen(fd, 128) != 0)
        rc = -errno;
    if (rc != 0) {
        if (rc != -EADDRINUSE)
            unlink(path);
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

int lahja_unix_listen(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg)
{
    int fd = -1;
    int rc = ensure_base_dir(cfg->path);
    if (rc == 0)
        rc = clear_stale_socket(cfg->path);
    if (rc == 0)
        rc = bind_socket(cfg->path, &fd);
    if (rc != 0)
        return rc;
    uv_pipe_init(ep->rt->loop, &ep->server, 0);
    ep->server.data = ep;
    ep->nopen++;
    rc = uv_pipe_open(&ep->server, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&ep->server, 128, on_connection);
    if (rc != 0) {
        /* Practically unreachable; lahja_endpoint_free reports -EBUSY
         * until the close completes. */
        uv_close((uv_handle_t *)&ep->server, lahja_ep_handle_closed);
        unlink(cfg->path);
        return rc;
    }
    memcpy(ep->path, cfg->path, sizeof ep->path);
    ep->serving = 1;
    return 0;
}

void lahja_unix_unlisten(lahja_endpoint_t *ep)
{
    uv_close((uv_handle_t *)&ep->server, lahja_ep_handle_closed);
    unlink(ep->path);
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
    struct conn *c = lahja_local_conn_new(ep);
    if (c == NULL) {
        refuse_without_memory(ep);
        return;
    }
    int rc = uv_accept((uv_stream_t *)&ep->server, (uv_stream_t *)&c->io.ux.pipe);
    if (rc != 0)
        lahja_conn_close(c, rc, uv_strerror(rc));
    else if (why != NULL)
        lahja_conn_close(c, LAHJA_ECONNREJECTED, why);
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
        lahja_conn_close(c, -errno, "socket");
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
            lahja_conn_close(c, -err, strerror(err));
        }
        return;
    }
    int rc = uv_pipe_open(&c->io.ux.pipe, fd);
    if (rc != 0) {
        close(fd);
        lahja_conn_close(c, rc, uv_strerror(rc));
        return;
    }
    lahja_conn_start(c);
}
