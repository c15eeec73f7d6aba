/*
 * Discovery (B35): an endpoint that joins a directory keeps a connection
 * to every endpoint whose socket is there, now and as they come, so that
 * the endpoints of one directory form a full mesh without naming each
 * other (lahja's early EventBus).
 *
 * No daemon: the directory itself is the registry.  A uv_fs_event_t on
 * it (inotify) reports sockets created and removed; a scan at the join,
 * and again at every tick of a slow timer, finds what was there before
 * and what an overflowing event queue dropped.  Each name found is
 * reconciled with what the file system says now, never with what the
 * event said, so events that are coalesced, repeated or reordered do no
 * harm:
 *  - a socket `<name>.ipc` there: the name is kept connected
 *    (lahja_keep_connected), so that a peer that dies and restarts comes
 *    back by the keeping's backoff, and two joiners that find each other
 *    at the same moment end up with one connection (conn.c's settle);
 *  - no socket there any more: a peer that stops removes its socket, so
 *    it left for good, and the name is no longer kept (a connection that
 *    is up stays until the peer closes it).
 * A socket that nobody listens on is a dead process's (a stopped one
 * removes its own): a kept name that is not connected is probed at the
 * timer's tick, and its file unlinked once it is certainly stale (see
 * stale()); its removal then ends the keeping as any other.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "endpoint.h"

#define SUFFIX ".ipc"
#define SUFFIX_LEN 4
#define TICK_MS 500      /* the rescan and the stale probes */
#define STALE_AGE_S 2    /* a refused socket younger than this may be
                            between its owner's bind and listen */

/* A name this joiner keeps (it was found in the directory). */
struct joined {
    lahja_link_t link;
    char name[LAHJA_NAME_MAX + 1];
};

/* An endpoint's join: made by lahja_join, closed by stop.  Both handles
 * count in ep->nopen; the joiner is freed when the second has closed. */
struct joiner {
    uv_fs_event_t watch;     /* data: the endpoint */
    uv_timer_t tick;         /* data: the endpoint */
    lahja_endpoint_t *ep;
    int open;                /* handles of this joiner not yet closed */
    char dir[LAHJA_PATH_MAX + 1];
    lahja_link_t names;      /* struct joined */
};

static const lahja_reconnect_options_t backoff = { .min_ms = 50, .max_ms = 2000 };

static struct joined *joined_find(struct joiner *j, const char *name)
{
    lahja_link_t *l;
    lahja_list_foreach(l, &j->names) {
        struct joined *n = lahja_container_of(l, struct joined, link);
        if (strcmp(n->name, name) == 0)
            return n;
    }
    return NULL;
}

/*
 * Whether the socket file at `path` is certainly stale: nobody listens
 * (a connect is refused), it is older than STALE_AGE_S (an endpoint
 * binds, then listens: in between, a connect is refused too, and the
 * file is new), and it is still the file probed (another process
 * replacing a stale socket with its own makes a new one).  As
 * endpoint.c's clear_stale_socket, the unlink that follows cannot be
 * atomic with the check; the age makes the window one of a process that
 * bound more than STALE_AGE_S ago and has not listened yet.
 */
static int stale(const char *path, struct stat *probed)
{
    if (lstat(path, probed) != 0 || !S_ISSOCK(probed->st_mode))
        return 0;
    if (time(NULL) - probed->st_mtime < STALE_AGE_S)
        return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int err = errno;
    close(fd);
    struct stat now;
    return rc != 0 && err == ECONNREFUSED && lstat(path, &now) == 0
           && now.st_ino == probed->st_ino && now.st_dev == probed->st_dev;
}

static void forget(struct joiner *j, struct joined *n)
{
    lahja_stop_keeping(j->ep, n->name);
    lahja_list_remove(&n->link);
    free(n);
}

/*
 * Brings what is done for `name` in line with the directory: kept while
 * its socket is there, forgotten once it is not.  Names that are not
 * endpoint names, or whose path does not fit, are ignored, and so is the
 * endpoint's own.
 */
static void reconcile(struct joiner *j, const char *name)
{
    lahja_endpoint_t *ep = j->ep;
    lahja_conn_config_t cfg;
    if (strcmp(name, ep->name->s) == 0 || lahja_conn_config_from_name(&cfg, name, j->dir) != 0)
        return;
    struct joined *n = joined_find(j, name);
    struct stat st;
    int there = lstat(cfg.path, &st) == 0 && S_ISSOCK(st.st_mode);
    if (!there) {
        if (n != NULL) {
            lahja_bus_log(ep, LAHJA_LOG_DEBUG, "join: %s left %s", name, j->dir);
            forget(j, n);
        }
        return;
    }
    if (n != NULL)
        return;
    n = calloc(1, sizeof *n);
    if (n == NULL)
        return; /* the next tick's scan tries again */
    memcpy(n->name, cfg.name, sizeof n->name);
    int rc = lahja_keep_connected(ep, &cfg, &backoff);
    if (rc != 0) {
        lahja_bus_log(ep, LAHJA_LOG_WARNING, "join: cannot keep %s: %s", name,
                      lahja_strerror(rc));
        free(n);
        return;
    }
    lahja_list_push_back(&j->names, &n->link);
    lahja_bus_log(ep, LAHJA_LOG_DEBUG, "join: found %s in %s", name, j->dir);
}

/* The endpoint name a directory entry stands for, or NULL: only
 * `<name>.ipc`. */
static const char *entry_name(const char *file, char *buf, size_t len)
{
    size_t n = strlen(file);
    if (n <= SUFFIX_LEN || n - SUFFIX_LEN >= len || strcmp(file + n - SUFFIX_LEN, SUFFIX) != 0)
        return NULL;
    memcpy(buf, file, n - SUFFIX_LEN);
    buf[n - SUFFIX_LEN] = '\0';
    return buf;
}

/* Every entry of the directory, then every name kept (those whose
 * socket went without an event reaching us). */
static void scan(struct joiner *j)
{
    char name[LAHJA_NAME_MAX + 1];
    DIR *d = opendir(j->dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL && !j->ep->stopped)
            if (entry_name(e->d_name, name, sizeof name) != NULL)
                reconcile(j, name);
        closedir(d);
    }
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &j->names) {
        struct joined *n = lahja_container_of(l, struct joined, link);
        memcpy(name, n->name, sizeof name);
        reconcile(j, name);
    }
}

/* Kept names not connected whose socket is certainly stale: the file is
 * cleaned, and the name forgotten. */
static void clean_stale(struct joiner *j)
{
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &j->names) {
        struct joined *n = lahja_container_of(l, struct joined, link);
        lahja_peer_info_t info;
        if (lahja_peer_info(j->ep, n->name, &info) != 0 || info.state != LAHJA_PEER_RETRYING)
            continue;
        lahja_conn_config_t cfg;
        struct stat st;
        if (lahja_conn_config_from_name(&cfg, n->name, j->dir) != 0 || !stale(cfg.path, &st))
            continue;
        if (unlink(cfg.path) == 0)
            lahja_bus_log(j->ep, LAHJA_LOG_INFO,
                          "join: removed the stale socket %s (nobody listens on it)", cfg.path);
        /* Forgotten once the file is gone; one that cannot be removed
         * (a directory we may not write) stays kept, at the backoff's
         * pace, rather than found again at every scan. */
        reconcile(j, cfg.name);
    }
}

static void on_tick(uv_timer_t *t)
{
    lahja_endpoint_t *ep = t->data;
    struct joiner *j = ep->joiner;
    if (j == NULL || ep->stopped)
        return;
    clean_stale(j);
    scan(j);
}

static void on_change(uv_fs_event_t *h, const char *file, int events, int status)
{
    (void)events;
    lahja_endpoint_t *ep = h->data;
    struct joiner *j = ep->joiner;
    if (j == NULL || ep->stopped)
        return;
    char name[LAHJA_NAME_MAX + 1];
    if (status < 0 || file == NULL)
        scan(j); /* which file is not known: all of them */
    else if (entry_name(file, name, sizeof name) != NULL)
        reconcile(j, name);
}

/* --------------------------------------------------------------- lifetime */

static void on_closed(uv_handle_t *h)
{
    struct joiner *j = h->type == UV_TIMER
                           ? lahja_container_of((uv_timer_t *)h, struct joiner, tick)
                           : lahja_container_of((uv_fs_event_t *)h, struct joiner, watch);
    lahja_ep_handle_closed(h); /* the endpoint's end is never synchronous */
    if (--j->open == 0)
        free(j);
}

void lahja_join_stop(lahja_endpoint_t *ep)
{
    struct joiner *j = ep->joiner;
    if (j == NULL)
        return;
    ep->joiner = NULL;
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&j->names)) != NULL)
        free(lahja_container_of(l, struct joined, link));
    uv_close((uv_handle_t *)&j->watch, on_closed);
    uv_close((uv_handle_t *)&j->tick, on_closed);
}

/* The directory, made 0700 if it is not there. */
static int dir_ready(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(dir, &st) != 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Whether the endpoint serves where the directory's members look: at
 * `<dir>/<name>.ipc`, or not at all. */
static int serves_in(const lahja_endpoint_t *ep, const char *dir)
{
    if (!ep->serving)
        return 1;
    lahja_conn_config_t cfg;
    return lahja_conn_config_from_name(&cfg, ep->name->s, dir) == 0
           && strcmp(cfg.path, ep->path) == 0;
}

int lahja_join(lahja_endpoint_t *ep, const char *dir)
{
    if (ep == NULL)
        return -EINVAL;
    int rc = lahja_ep_check(ep);
    if (rc != 0)
        return rc;
    if (ep->joiner != NULL)
        return -EALREADY;
    char base[LAHJA_PATH_MAX + 1];
    if (dir == NULL) {
        if ((rc = lahja_default_base_dir(base, sizeof base)) != 0)
            return rc;
        dir = base;
    }
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/')
        len--; /* "dir/" is "dir": the paths compared and built are the same */
    if (len == 0)
        return -EINVAL;
    if (len + 1 > sizeof base)
        return -ENAMETOOLONG;
    char given[LAHJA_PATH_MAX + 1];
    memcpy(given, dir, len);
    given[len] = '\0';
    dir = given;
    if (!serves_in(ep, dir)) {
        lahja_ep_error(ep, "join %s: the endpoint serves at %s, where its members do not look",
                       dir, ep->path);
        return -EINVAL;
    }
    if ((rc = dir_ready(dir)) != 0)
        return rc;
    struct joiner *j = calloc(1, sizeof *j);
    if (j == NULL)
        return -ENOMEM;
    j->ep = ep;
    memcpy(j->dir, dir, len + 1); /* `given`, terminated */
    lahja_list_init(&j->names);
    uv_fs_event_init(ep->rt->loop, &j->watch);
    j->watch.data = ep;
    uv_timer_init(ep->rt->loop, &j->tick);
    j->tick.data = ep;
    j->open = 2;
    ep->nopen += 2;
    ep->joiner = j;
    /* Watching first, then scanning: a socket created in between is seen
     * by both, which is harmless, rather than by neither. */
    rc = uv_fs_event_start(&j->watch, on_change, j->dir, 0);
    if (rc != 0) {
        lahja_join_stop(ep);
        return rc;
    }
    uv_timer_start(&j->tick, on_tick, TICK_MS, TICK_MS);
    scan(j);
    return 0;
}
