/**
 * @file lahja/bus.h
 * Endpoints: named, connected directly to each other over
 * Unix sockets, exchanging typed events.
 *
 * An endpoint has a name and, while it runs, a set of connections.  It
 * may serve (listen on `<base>/<name>.ipc`) or only connect out.  Each
 * connection carries traffic both ways; each side tells the other which
 * event types it subscribes to, so that a broadcast is serialized once
 * and sent only to the peers that want its type.  Nothing is relayed: an
 * endpoint delivers only what reaches it directly.
 *
 * Two kinds of calls:
 *  - non-suspending (start, subscribe, broadcast_nowait, queries): from a
 *    task or from any libuv callback on the endpoint's thread;
 *  - suspending (connect, broadcast, stream_next, wait_for, request,
 *    stop, the wait_until_* family): from a task (lahja/runtime.h;
 *    elsewhere they return LAHJA_ENOTASK); each takes a deadline and is
 *    a cancellation checkpoint.  Each has a callback form (lahja_*_cb,
 *    at the end of this header) for programs not written as tasks: from
 *    any libuv callback on the endpoint's thread.
 *
 * Threads: an endpoint belongs to the thread whose runtime created it;
 * calls from another thread return LAHJA_EWRONGTHREAD.  The calls that
 * cannot return it say what they do instead: the queries answer 0 (and
 * lahja_foreach_peer calls nothing), lahja_subscription_cancel and
 * lahja_stream_close do nothing.  lahja_endpoint_name,
 * lahja_endpoint_is_running and lahja_endpoint_is_serving may be called
 * from any thread.
 *
 * Delivery (B30): an event for which broadcast returned 0 reaches every
 * peer it was sent to, or its loss is reported.  Receivers confirm what
 * they have read with cumulative receipts; an endpoint counts, per peer,
 * the events sent, confirmed, and lost with a connection that ended
 * before confirming them (lahja_delivery_stats; a WARNING log line names
 * the peer and the count).  What cannot be reported is the tail of a
 * process that is killed itself: the events it had queued and not yet
 * written go with it.  lahja_wait_until_delivered waits until every peer
 * has confirmed everything sent so far; lahja_endpoint_stop does it, up
 * to linger_ms, before closing.
 *
 * Lifetimes: an endpoint is created stopped, started once, stopped once
 * and freed.  Stopping closes every connection, ends every stream,
 * subscription waiter and request with LAHJA_ELIFECYCLE, and releases the
 * memory they held.  Events are reference counted.
 */
#ifndef LAHJA_BUS_H
#define LAHJA_BUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lahja/runtime.h"
#include "lahja/service.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An endpoint: a named member of the bus (lahja_endpoint_new()). */
typedef struct lahja_endpoint lahja_endpoint_t;
/** An event: a type and a payload, reference counted (lahja_event_new()). */
typedef struct lahja_event lahja_event_t;
/** A subscription: a handler called for every event of a type (lahja_subscribe()). */
typedef struct lahja_subscription lahja_subscription_t;
/** A stream: the events of a type, queued to be pulled (lahja_stream_open()). */
typedef struct lahja_stream lahja_stream_t;

/* ---------------------------------------------------- connection configs */

/** The longest endpoint name, in bytes, without the NUL; event types
 * have the same bound. */
#define LAHJA_NAME_MAX 255
#define LAHJA_PATH_MAX 107 /**< what fits in sockaddr_un.sun_path */

/** Where an endpoint listens: its name and its socket's path. */
typedef struct lahja_conn_config {
    char name[LAHJA_NAME_MAX + 1]; /**< the endpoint's name, NUL-terminated */
    char path[LAHJA_PATH_MAX + 1]; /**< its socket's path, NUL-terminated */
} lahja_conn_config_t;

/**
 * The config of endpoint `name` in `base_dir` (NULL: the default, see
 * lahja_default_base_dir): path = `<base_dir>/<name>.ipc`.
 * Errors: -EINVAL (name not 1..255 printable bytes without '/'),
 * -ENAMETOOLONG (the path does not fit a Unix socket address).
 */
int lahja_conn_config_from_name(lahja_conn_config_t *cfg, const char *name, const char *base_dir);

/** The config of endpoint `name` listening at an explicit `path`. */
int lahja_conn_config_from_path(lahja_conn_config_t *cfg, const char *name, const char *path);

/**
 * Writes the default base directory into buf: `$XDG_RUNTIME_DIR/lahja` if
 * that variable is set to an absolute path, else `/tmp/lahja-<uid>`.  Does not create it (an
 * endpoint that serves there does, mode 0700).  Errors: -ENAMETOOLONG.
 */
int lahja_default_base_dir(char *buf, size_t len);

/* -------------------------------------------------------------- events */

/**
 * A new event of type `type` (1..255 bytes, copied; no NUL, and not
 * ending in `*`, which would make a subscription to it a pattern) with a
 * copy of payload[0..len).  *out is the caller's reference.
 * Errors: -EINVAL, -EMSGSIZE (len over 4 GiB), -ENOMEM.
 */
int lahja_event_new(const char *type, const void *payload, size_t len, lahja_event_t **out);

/** Releases a payload given to lahja_event_wrap. */
typedef void (*lahja_free_fn)(void *payload, void *user);

/**
 * A new event of type `type` whose payload is payload[0..len) itself, not
 * a copy: for large payloads, which are then written to every peer
 * straight from the caller's buffer.  The event owns the buffer from a
 * successful return: it calls free_fn(payload, user) (NULL: nothing is
 * called) when its last reference goes, which is once the payload has
 * been written to every peer it went to; until then the buffer must not
 * change.  On error the buffer stays the caller's.  Called on the thread
 * that drops the last reference.
 * Errors: -EINVAL, -EMSGSIZE (len over 4 GiB), -ENOMEM.
 */
int lahja_event_wrap(const char *type, void *payload, size_t len, lahja_free_fn free_fn,
                     void *user, lahja_event_t **out);

/**
 * Loans a buffer of `len` bytes for a new event of type `type`, to be
 * filled and then broadcast by `ep`: *out is the event (the caller's
 * reference) and *buf its payload, writable until the event is
 * broadcast.  The buffer is in the endpoint's pool of shared memory when
 * it has room (docs/bus.md, "Shared memory"): broadcasting the event then
 * lends those very bytes to every peer on this host that uses shared
 * memory, without a copy, and they read them in place.  Other peers (and
 * every peer when the pool is off or full) get the bytes as usual.  The
 * buffer returns to the pool once the event and every peer's reference
 * to it are gone (a peer that dies gives its references back).
 * On the endpoint's thread (the event may be dropped on any).
 * Errors: -EINVAL, -EMSGSIZE (len over max_payload), -ENOMEM,
 * LAHJA_EWRONGTHREAD.
 */
int lahja_event_loan(lahja_endpoint_t *ep, const char *type, size_t len, lahja_event_t **out,
                     void **buf);

/** A request's response type that takes a response of any type (what a
 * relay that cannot know it uses): `"*"`, which no event type can be. */
#define LAHJA_ANY_RESPONSE "*"

/**
 * A new request event: like lahja_event_new, and declares the type of
 * the response it expects (B18), or LAHJA_ANY_RESPONSE.
 */
int lahja_request_new(const char *type, const char *response_type, const void *payload,
                      size_t len, lahja_event_t **out);

/**
 * Takes a reference.  Returns the event to keep: `ev` itself, or, for an
 * event lent to a subscription handler (valid only during the call), a
 * new copy the caller owns.  NULL only if that copy cannot be allocated.
 */
lahja_event_t *lahja_event_ref(lahja_event_t *ev);

/** Drops a reference; the event is freed with the last.  Accepts NULL. */
void lahja_event_unref(lahja_event_t *ev);

/** An unbound copy (no origin, no id): what can be broadcast again (B8). */
int lahja_event_copy(const lahja_event_t *ev, lahja_event_t **out);

/** The event's type; the string is the event's. */
const char *lahja_event_type(const lahja_event_t *ev);
/** The event's payload (the event's); its length in bytes goes to *len
 * unless `len` is NULL. */
const void *lahja_event_payload(const lahja_event_t *ev, size_t *len);
/** The sending endpoint's name once broadcast (or received), else NULL. */
const char *lahja_event_origin(const lahja_event_t *ev);
/** A request's id once broadcast, a response's request id; else 0. */
uint64_t lahja_event_id(const lahja_event_t *ev);
/** A request's expected response type, else NULL; also NULL for a
 * request received from another endpoint (checking the response's type
 * is the requester's business, and it is not sent). */
const char *lahja_event_response_type(const lahja_event_t *ev);

/* ------------------------------------------------------------ endpoints */

/** The level of a log line (lahja_log_fn), from the least serious up;
 * docs/bus.md, Logging, lists what is logged at each. */
typedef enum lahja_log_level {
    LAHJA_LOG_DEBUG,   /**< connections made, a kept peer's failed attempts,
                          what a failed call also returns */
    LAHJA_LOG_INFO,    /**< a connection that ended with nothing lost; a kept
                          connection lost and re-established */
    LAHJA_LOG_WARNING, /**< events lost, a peer dropped, a background connect
                          that gave up */
    LAHJA_LOG_ERROR    /**< a subscription handler failed; no memory to
                          deliver an event */
} lahja_log_level_t;

/** Where an endpoint reports what it cannot return: a dropped peer and
 * why, events lost, a failing handler.  Called on the endpoint's thread;
 * `message` is one line, valid during the call. */
typedef void (*lahja_log_fn)(void *user, lahja_log_level_t level, const char *endpoint,
                             const char *message);

/** How to set up an endpoint (lahja_endpoint_new()); NULL gives every
 * default, and so does a field left 0. */
typedef struct lahja_endpoint_options {
    /** Largest event payload accepted or sent; 0 gives 64 MiB. */
    size_t max_payload;
    /** Bytes queued for one peer above which lahja_broadcast suspends;
     * 0 gives 1 MiB.  A peer reached through shared memory (docs/bus.md)
     * has its ring for a buffer, as a socket has the kernel's, and at
     * most 64 KiB (or high_water, if less) waits behind it.  Payloads lent
     * to the peer through shared memory count apart, until it has read
     * them: the peer is over the mark too once they pass 4 x high_water. */
    size_t high_water;
    /** Bytes queued for one peer above which lahja_broadcast_nowait fails
     * with -EAGAIN, and so do payloads lent to it and not yet read; 0
     * gives 4 x high_water + max_payload. */
    size_t hard_limit;
    /** A peer that has not completed the handshake after this is dropped;
     * 0 gives 5000 ms. */
    uint32_t handshake_timeout_ms;
    /** Payloads at least this large are LZ4-compressed for peers that
     * support it, when that saves bytes; 0 gives 8 KiB; SIZE_MAX never. */
    size_t compress_threshold;
    /** How long lahja_endpoint_stop waits for the peers to confirm the
     * events sent to them before closing; 0 gives 1000 ms. */
    uint32_t linger_ms;
    /** After receiving, keep polling the sockets this long (microseconds)
     * before the loop sleeps: a reply that comes within it is read
     * without the wake-up that sleeping costs (tens of microseconds on
     * virtual machines), for a core spinning meanwhile.  0: off. */
    uint32_t busy_poll_us;
    /** Bytes of each ring of the shared-memory transport (docs/bus.md,
     * "Shared memory"): the endpoints of one host that both use it move
     * their events through two rings per connection, one per direction,
     * instead of the socket.  Rounded up to a power of two between
     * 64 KiB and 1 GiB; 0 gives 1 MiB; SIZE_MAX turns the transport off
     * (so does the environment variable LAHJA_SHM=0). */
    size_t shm_ring;
    /** Bytes of the endpoint's pool of lent payloads (docs/bus.md, "Shared
     * memory"): events of 32 KiB and more, and loaned ones
     * (lahja_event_loan), go to the endpoint's peers on this host as
     * references into it instead of bytes.  Memory is taken as it is
     * used.  0 gives 256 MiB. */
    size_t shm_pool;
    /**
     * @name Bounds on peers
     * B31: bounds on what peers may make us hold; 0 gives the default.
     * Every refusal is logged with its reason.
     * @{
     */
    /** Largest frame body accepted before the handshake completes (a
     * HELLO is at most 270 bytes); 0 gives 4096. */
    uint32_t max_hello;
    /** Connections accepted and still in their handshake, at once; more
     * are closed as they come.  0 gives 64. */
    uint32_t max_incomplete;
    /** Connections in all, inbound and outbound; more inbound ones are
     * closed as they come.  0 gives 1024. */
    uint32_t max_connections;
    /** Event types and patterns one peer may subscribe to (announce in
     * one SUBS), each origin named by an origin-limited one counting as
     * one more; a peer announcing more is disconnected as soon as it
     * says how many.  0 gives 16384. */
    uint32_t max_peer_types;
    /** A frame whose first bytes arrived must be complete within this
     * (the clock restarts each time 64 KiB more of it arrives), or the
     * peer is disconnected; 0 gives 10000 ms.  Also how long a
     * connection whose writing failed is read for the rest of what its
     * peer sent. */
    uint32_t frame_timeout_ms;
    /** @} */
    /** Calls other threads may have posted and the endpoint's thread not
     * yet taken (lahja_post and its kin); a poster waits, or fails with
     * -EAGAIN, while it is full.  0 gives 1024. */
    uint32_t post_queue;
    /** Other users allowed to connect besides our own (B27). */
    const uid_t *allowed_uids;
    size_t n_allowed_uids; /**< how many uids allowed_uids points to */
    /** Logging (docs/bus.md, Logging).  A callback replaces the default
     * entirely.  NULL: lines go to stderr, from the level that the
     * environment variable LAHJA_LOG names when the endpoint is created:
     * debug, info, warning, error or off, in any case; unset, warning
     * (losses and failures nobody else is told of). */
    lahja_log_fn log;
    void *log_user; /**< passed to log as its `user` */
    /** Non-zero: the endpoint does not answer the built-in statistics
     * request (LAHJA_STATS_REQUEST); a peer asking gets
     * LAHJA_ENOSUBSCRIBERS.  0: it answers (docs/bus.md, Statistics). */
    int no_stats;
} lahja_endpoint_options_t;

/**
 * Creates a stopped endpoint named `name` on the calling thread's
 * runtime (lahja_rt_new or lahja_run).  `opts` may be NULL; it is copied
 * (allowed_uids too).  If the process left SIGPIPE at its default action
 * (terminate), it is set to ignored: a peer that goes away must not kill
 * the process; a handler the application installed is kept.
 * Errors: -EINVAL (bad name), LAHJA_ENORUNTIME (no runtime on this
 * thread), -ENOMEM.
 */
int lahja_endpoint_new(const char *name, const lahja_endpoint_options_t *opts,
                       lahja_endpoint_t **out);

/**
 * Starts the endpoint.  With `serve` non-NULL it also listens at
 * serve->path (creating the default base directory 0700 if that is where
 * it is); a stale socket file left by a dead process is replaced, a live
 * endpoint there is left alone and -EADDRINUSE returned (B2).  The socket
 * file is made 0600.  With `serve` NULL the endpoint only connects out.
 * Errors: LAHJA_ELIFECYCLE (started before), -EADDRINUSE, -EINVAL (the
 * config's name differs from the endpoint's), other -errno from the
 * socket calls, LAHJA_EWRONGTHREAD.
 */
int lahja_endpoint_start(lahja_endpoint_t *ep, const lahja_conn_config_t *serve);

/**
 * Stops the endpoint: stops listening and removes the socket file, gives
 * the peers up to options.linger_ms to read and confirm the events sent
 * to them (what is not confirmed by then is reported lost, see
 * lahja_delivery_stats), closes every connection, ends every wait (task
 * or callback) with LAHJA_ELIFECYCLE, and waits for libuv to release the
 * handles.  Not cancellable (it is prompt).  Using a stopped endpoint
 * afterwards is LAHJA_ELIFECYCLE.  Suspending (task context); a second
 * call waits for the same stop, and returns 0 at once once it is done.
 */
int lahja_endpoint_stop(lahja_endpoint_t *ep);

/** Frees a stopped (or never started) endpoint, with the subscriptions
 * and streams the application did not cancel or close (their handles
 * become invalid).  Accepts NULL.
 * Errors: -EBUSY if it is running (nothing done), LAHJA_EWRONGTHREAD. */
int lahja_endpoint_free(lahja_endpoint_t *ep);

/**
 * Makes `svc` a service that runs the endpoint: starting it (serving at
 * `serve`, copied, if non-NULL) when the service starts, and stopping it
 * when the service is cancelled, so that stopping a service tree closes
 * its endpoints with it.  Run it as a daemon child service
 * (lahja_manager_run_daemon_child_service) or on its own.  If starting
 * fails, the service fails with that error.  `svc` and `ep` must outlive
 * the service's manager.
 */
void lahja_endpoint_service(lahja_service_t *svc, lahja_endpoint_t *ep,
                            const lahja_conn_config_t *serve);

/**
 * What the endpoint's last failed call saw, in a sentence naming what
 * concerned it: for a connect, the name, the path and what was found
 * there ("no socket file there: nobody serves that name", "a socket file,
 * but nobody listening", "connected, but no handshake came", the peer's
 * refusal); for a request, its type and what came back or who went away;
 * for a broadcast, the type nobody subscribes to or the size refused;
 * for lahja_endpoint_start, the path and why it cannot serve there; else
 * the call and its error's message.  Set when a call that waits fails
 * (either form), by the broadcasts' own refusals and by a failed start:
 * read it right after the call returns, or in the callback.  Valid until
 * the next failure; "" before any, and on another thread than the
 * endpoint's.  Other calls return plain codes (lahja_strerror).
 */
const char *lahja_endpoint_last_error(const lahja_endpoint_t *ep);

/** The endpoint's name; any thread. */
const char *lahja_endpoint_name(const lahja_endpoint_t *ep);
/** Whether it runs (started, not stopped) and serves.  They read flags
 * only the endpoint's thread changes, and touch nothing else: true also
 * after its runtime is gone; from another thread, a value of the past.
 * @{ */
int lahja_endpoint_is_running(const lahja_endpoint_t *ep);
int lahja_endpoint_is_serving(const lahja_endpoint_t *ep);
/** @} */

/**
 * Connects to each of the n endpoints and waits, until `deadline`, for
 * every socket to exist and every handshake to complete (B4), the peer's
 * subscriptions included: a broadcast right after reaches its
 * subscribers.  Connecting
 * to itself, to the same name twice in one call, or to an endpoint
 * already connected is LAHJA_ECONNREJECTED (nothing is done).  Two
 * endpoints connecting to each other at the same moment both succeed,
 * with one connection between them, chosen before either carries an
 * event.  A peer that refuses us, or that turns out to carry another
 * name than expected, fails the call.  Suspending; errors also -ETIMEDOUT,
 * -ECANCELED, -EPROTO (handshake), -EACCES.
 */
int lahja_connect(lahja_endpoint_t *ep, const lahja_conn_config_t *configs, size_t n,
                  lahja_time_t deadline);

/* ------------------------------------------ kept and background connections */

/**
 * How a kept connection (lahja_keep_connected) is re-established: as
 * ZeroMQ's ZMQ_RECONNECT_IVL / ZMQ_RECONNECT_IVL_MAX and nng's
 * NNG_OPT_RECONNMINT / NNG_OPT_RECONNMAXT.  The wait before an attempt
 * starts at min_ms and doubles after every failed attempt, up to max_ms;
 * each wait is drawn between three quarters of that value and the value
 * itself (jitter, so that the peers of one endpoint that went away do not
 * all come back in step).  It starts again at min_ms once a connection
 * has been established.
 */
typedef struct lahja_reconnect_options {
    uint32_t min_ms; /**< the first wait; 0 gives 100 ms */
    uint32_t max_ms; /**< the longest; 0 gives 5000 ms (at least min_ms) */
} lahja_reconnect_options_t;

/**
 * Keeps the endpoint connected to `cfg->name` at `cfg->path` (B33), in
 * the background, as long as it runs: connects now, without waiting (see
 * lahja_wait_until_connected_to), and whenever the connection to that
 * name ends (the peer stopped or died, a network error), connects again,
 * with the backoff of `opts` (NULL: the defaults), until it is back.  A
 * socket that does not exist yet is retried the same way: it appears
 * when the peer starts.  Each attempt is bounded: a peer that accepts but
 * does not complete the handshake is dropped after handshake_timeout_ms,
 * and the attempt counts as failed.
 *
 * The connection may be opened by either side: a peer that connects to
 * us first (it keeps us too, say) leaves nothing to dial, and two
 * endpoints that keep each other end up with one connection (as with
 * lahja_connect).  Every new connection exchanges subscriptions again;
 * requests waiting on a connection that ended fail as always
 * (LAHJA_EREMOTEDISCONNECTED).  A lahja_connect to a kept name may find
 * an attempt of the keeping under way, and then fails with
 * LAHJA_ECONNREJECTED: wait with lahja_wait_until_connected_to instead.
 *
 * The loss of a kept connection and its return are logged at INFO, each
 * failed attempt at DEBUG; lahja_peer_info tells where it stands.
 * Keeping a name already kept replaces its config and options (from the
 * next attempt on); keeping a name already connected is fine (it is kept
 * from then on).  Stopping the endpoint ends all of it.  `cfg` and `opts`
 * are copied.  Non-suspending; errors: -EINVAL (a bad name or empty
 * path), LAHJA_ECONNREJECTED (the endpoint's own name), LAHJA_ELIFECYCLE
 * (not running), LAHJA_EWRONGTHREAD, -ENOMEM (nothing done).
 */
int lahja_keep_connected(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg,
                         const lahja_reconnect_options_t *opts);

/**
 * Stops keeping `name` connected: no attempt is started for it any more.
 * A connection that is established stays (until either side ends it),
 * and so does an attempt already under way, which is then not retried.
 * Non-suspending; errors: -EINVAL, -ENOENT (not kept), LAHJA_ELIFECYCLE,
 * LAHJA_EWRONGTHREAD.
 */
int lahja_stop_keeping(lahja_endpoint_t *ep, const char *name);

/**
 * Starts connecting to each of the n endpoints and returns at once
 * (lahja's connect_to_endpoints_nowait).  Each attempt waits for its
 * socket to exist and for the handshake, as lahja_connect does, for up to
 * handshake_timeout_ms from the call, the wait for the socket included
 * (an endpoint that may come up later, or go and come back, is what
 * lahja_keep_connected is for); then it gives up.  A failure is logged at
 * WARNING, and lahja_peer_info says LAHJA_PEER_FAILED with its error;
 * lahja_wait_until_connected_to waits for a success.
 *
 * Connecting to itself or to the same name twice in one call is
 * LAHJA_ECONNREJECTED (nothing is done), as for lahja_connect; unlike
 * lahja_connect, a name already connected, being connected or kept is
 * not an error: there is nothing more to do for it.  Non-suspending;
 * errors also -EINVAL, LAHJA_ELIFECYCLE, LAHJA_EWRONGTHREAD, -ENOMEM
 * (nothing started; an attempt that cannot be allocated later is a
 * failure like any other).
 */
int lahja_connect_nowait(lahja_endpoint_t *ep, const lahja_conn_config_t *configs, size_t n);

/**
 * Joins the bus of directory `dir` (NULL: lahja_default_base_dir), B35,
 * as lahja's early EventBus: keeps the endpoint connected to every
 * endpoint whose socket (`<name>.ipc`) is in `dir`, now and as they
 * appear, so that the endpoints that join one directory form a full mesh
 * without naming each other.  Returns at once; wait for a peer with
 * lahja_wait_until_connected_to.
 *
 * Each socket found becomes a kept connection (lahja_keep_connected,
 * 50 ms to 2 s backoff): a peer that dies and restarts comes back; two
 * joiners that find each other at once end with one connection, nothing
 * lost.  A peer whose socket is removed (lahja_endpoint_stop removes it)
 * has left: its name is no longer kept.  A socket nobody listens on
 * (left by a killed process) is not retried for ever: once it is
 * certainly stale (refused, and older than 2 s, so that it is not an
 * endpoint between bind and listen) it is unlinked.  Other files, and
 * names that are not endpoint names, are ignored.  The directory is
 * watched (inotify, through libuv) and rescanned every 500 ms; no daemon.
 *
 * Serving: to be found, the endpoint serves at `<dir>/<name>.ipc`, i.e.
 * lahja_endpoint_start with lahja_conn_config_from_name(&cfg, name, dir);
 * one that serves elsewhere is refused (-EINVAL, see
 * lahja_endpoint_last_error).  One started without serving may join: it
 * connects to every member, and none can connect to it.
 *
 * A name the application keeps itself (lahja_keep_connected) becomes
 * the join's once its socket is found: kept with the join's backoff,
 * and no longer once its socket goes.
 *
 * Leaving is stopping: lahja_endpoint_stop stops the watching and
 * removes the socket.  `dir` is copied, and made (0700) if it is not
 * there.  Non-suspending, on the endpoint's thread, after start; errors:
 * -EINVAL, -EALREADY (joined before), -ENAMETOOLONG, -ENOTDIR, other
 * -errno from mkdir or the watch, LAHJA_ELIFECYCLE (not running),
 * LAHJA_EWRONGTHREAD, -ENOMEM (nothing done).
 */
int lahja_join(lahja_endpoint_t *ep, const char *dir);

/**
 * How an endpoint reaches the endpoints of other hosts through a NATS
 * cluster (lahja_join_nats; docs/nats.md).  Strings are copied.
 */
typedef struct lahja_nats_options {
    /** The cluster's servers: one URL or several, comma-separated
     * ("nats://10.0.0.1:4222,nats://10.0.0.2:4222"); a URL may carry
     * `user:password@`.  Losing one server moves the endpoint to another. */
    const char *servers;
    /** Every subject used starts with this (tokens of letters, digits,
     * '-' and '_', separated by '.'): endpoints see only those with the
     * same prefix.  NULL: "lahja". */
    const char *prefix;
    /** Credentials, as NATS takes them (each NULL: none): a user and
     * password, a token, or a credentials file (JWT and NKey seed). */
    const char *user;
    const char *password; /**< with user */
    const char *token;    /**< an authentication token */
    const char *creds_file; /**< a `.creds` file */
    /** What tells this host from the others: endpoints with the same
     * host never talk through NATS (they connect over their Unix sockets,
     * lahja_join).  NULL: the environment variable LAHJA_HOST_ID if set,
     * else the host name and the kernel's boot id. */
    const char *host;
    /** How often the endpoint announces itself; 0 gives 500 ms. */
    uint32_t heartbeat_ms;
    /** A remote endpoint not heard of for this long is gone: its
     * connections end (RemoteDisconnected for its pending requests, what
     * it did not confirm counted lost).  0 gives 4 x heartbeat_ms. */
    uint32_t dead_after_ms;
    /** How long lahja_join_nats waits for the first server; 0 gives
     * 2000 ms. */
    uint32_t connect_timeout_ms;
    /** Bytes sent to one remote endpoint and not yet acknowledged by it
     * above which writing to it waits (they are kept, to be sent again if
     * a server loses them); 0 gives 4 MiB. */
    size_t window;
} lahja_nats_options_t;

/**
 * Joins the endpoints of other hosts through a NATS cluster: from now
 * on the endpoint is connected to every endpoint that joined the same
 * cluster under the same prefix from another host, and to those that
 * join later, as it is to a local peer: the same connection, handshake,
 * subscription sets, backpressure and delivery receipts, carried by NATS
 * subjects instead of a socket.  Broadcast, requests, filter_endpoint,
 * NoSubscribers and the wait_until_* family see remote endpoints like
 * local ones.
 *
 * Each endpoint announces itself every heartbeat_ms; the one whose name
 * sorts first opens the connection.  A remote endpoint that says it
 * leaves (its stop), or is not heard of for dead_after_ms, is gone.  A
 * connection's bytes are numbered and acknowledged: what a server loses
 * (it died, a client was cut off) is sent again, so that failing over
 * to another server loses nothing; if the other end does not come back
 * within dead_after_ms, the connection ends and what it did not confirm
 * is counted lost, as for a local peer that dies.  Endpoints of one host
 * never talk through NATS, and names must be unique across the hosts.
 *
 * Connecting to the first server blocks the thread for up to
 * connect_timeout_ms; after that nothing blocks (NATS runs on the
 * endpoint's loop).  Leaving is stopping.  Anyone allowed to publish on
 * the prefix's subjects can connect (B27's same-user rule is NATS's
 * authorization here).
 *
 * Non-suspending, on the endpoint's thread, after start.  Errors:
 * -EINVAL (no servers, a bad prefix), -EALREADY (joined before),
 * -ECONNREFUSED (no server could be reached: lahja_endpoint_last_error
 * says what NATS said), LAHJA_ELIFECYCLE, LAHJA_EWRONGTHREAD, -ENOMEM.
 */
int lahja_join_nats(lahja_endpoint_t *ep, const lahja_nats_options_t *opts);

/**
 * Tears down nats.c, the NATS client library that lahja_join_nats used,
 * and waits up to timeout_ms (0: as long as it takes) for its threads to
 * end: for a program about to exit, once every endpoint that joined NATS
 * is freed.  nats.c's threads may otherwise still run while the library
 * cleans itself up at exit, and libnats 3.4 can then abort the process.
 * Does nothing if lahja_join_nats was never called.  Not for a program
 * that uses nats.c itself beside lahja: the library is the process's,
 * and is closed for it too.  After a call, lahja_join_nats opens it
 * again.
 *
 * Blocks the calling thread; any thread but one of nats.c's.  Errors:
 * -ETIMEDOUT (its threads had not ended in time: the library still
 * closes), -EINVAL (called from one of nats.c's threads).
 */
int lahja_nats_close(uint32_t timeout_ms);

/** Where the endpoint stands with a peer: see lahja_peer_info. */
typedef enum lahja_peer_state {
    LAHJA_PEER_UNKNOWN = 0, /**< not connected, nor being connected or kept */
    LAHJA_PEER_CONNECTING,  /**< an attempt is under way: waiting for the
                               socket (background connects) or the handshake,
                               ours or the peer's */
    LAHJA_PEER_CONNECTED,   /**< established (lahja_is_connected_to) */
    LAHJA_PEER_RETRYING,    /**< kept, not connected: the next attempt is at
                               next_attempt; last_error says what failed */
    LAHJA_PEER_FAILED       /**< a lahja_connect_nowait gave up: last_error */
} lahja_peer_state_t;

/** What lahja_peer_info tells of one peer; times on lahja_now()'s clock. */
typedef struct lahja_peer_info {
    lahja_peer_state_t state;  /**< where it stands */
    int kept;                  /**< lahja_keep_connected holds the name */
    int outbound;              /**< CONNECTED: we opened it (else the peer did) */
    pid_t pid;                 /**< CONNECTED: the peer's process */
    lahja_time_t since;        /**< CONNECTED: when it was established */
    lahja_time_t next_attempt; /**< RETRYING: when the next attempt starts */
    uint32_t retry_ms;         /**< RETRYING: the wait the backoff chose */
    uint32_t failures;         /**< kept: attempts failed since it was last
                                  connected (or kept) */
    uint32_t reconnects;       /**< kept: times it came back after a loss */
    int last_error;            /**< what ended the last failed attempt or
                                  lost connection (kept, FAILED), or 0 */
} lahja_peer_info_t;

/**
 * Fills *out with where the endpoint stands with endpoint `name`: for
 * "why is my peer not connected".  Any name may be asked; one the
 * endpoint knows nothing of is LAHJA_PEER_UNKNOWN, and its own name is
 * LAHJA_PEER_CONNECTED (it counts itself, as lahja_is_connected_to
 * does).  A stopped endpoint knows no peers.  Non-suspending, also
 * before start and after stop; errors: -EINVAL, LAHJA_EWRONGTHREAD
 * (*out untouched).
 */
int lahja_peer_info(const lahja_endpoint_t *ep, const char *name, lahja_peer_info_t *out);

/**
 * The path the endpoint serves at (what peers give lahja_connect), or ""
 * when it does not serve: not started, started without serving, or
 * stopped.  The string is the endpoint's, valid until it is freed.  Any
 * thread, as lahja_endpoint_is_serving: the path is set by
 * lahja_endpoint_start and never changes after; from another thread,
 * call it once start has returned.
 */
const char *lahja_endpoint_path(const lahja_endpoint_t *ep);

/* ---------------------------------------------------------- broadcasting */

/** Which endpoints a broadcast may reach (lahja_broadcast() and the other
 * calls that take a `cfg`); NULL gives the default, a zeroed one: every
 * subscriber. */
typedef struct lahja_broadcast_config {
    /** Only this endpoint (by name) may receive it; NULL: any. */
    const char *filter_endpoint;
    /** A response to request `filter_event_id`: delivered to that
     * request's waiter whatever the subscriptions; 0: not a response. */
    uint64_t filter_event_id;
    /** Deliver to this endpoint only (with filter_endpoint: -EINVAL). */
    int internal;
    /** Drop silently instead of failing with LAHJA_ENOSUBSCRIBERS when
     * nobody subscribes (require_subscriber off): the call returns 0 and
     * the event is bound, as broadcast to nobody. */
    int allow_no_subscribers;
} lahja_broadcast_config_t;

/**
 * Broadcasts `ev` to every endpoint, this one included, that subscribes
 * to its type and that `cfg` (NULL: the default) allows.  The event is
 * bound: its origin and id are set, and broadcasting it again is
 * LAHJA_EBIND (broadcast a lahja_event_copy).  Returns once the event is
 * handed to the kernel or queued under every receiving peer's high-water
 * mark, suspending while a peer is over it (B13).  Success means the
 * event is queued for every receiver: each then reads it, or its loss is
 * reported (see Delivery above); it is not yet a confirmation
 * (lahja_wait_until_delivered is).  The caller keeps its reference.
 * Suspending; errors: LAHJA_ENOSUBSCRIBERS, LAHJA_EBIND, -EINVAL,
 * -EMSGSIZE (over max_payload, or over what a receiving peer accepts),
 * -ENOMEM (no memory to queue it for some receiver), LAHJA_ELIFECYCLE,
 * -ECANCELED, -ETIMEDOUT; after any error it was queued for nobody and
 * stays unbound.
 */
int lahja_broadcast(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                    lahja_time_t deadline);

/**
 * Broadcasts an event of type `type` carrying a copy of payload[0..len):
 * lahja_event_new, lahja_broadcast and lahja_event_unref in one call,
 * without allocating an event for payloads up to 64 KiB (which are
 * copied straight into the peers' output).  Consumers that keep the
 * event (streams, wait_for, lahja_event_ref in a handler) get their own
 * copy.  Suspending, as lahja_broadcast; its errors, and -EINVAL for a
 * bad type.
 */
int lahja_broadcast_bytes(lahja_endpoint_t *ep, const char *type, const void *payload, size_t len,
                          const lahja_broadcast_config_t *cfg, lahja_time_t deadline);

/**
 * As lahja_broadcast, never suspending: when a receiving peer's queue is
 * over the hard limit, fails with -EAGAIN and queues nothing anywhere;
 * lahja_endpoint_blocked_peer() then names that peer.  Success means what
 * it means for lahja_broadcast; -ENOMEM likewise queues nothing.
 */
int lahja_broadcast_nowait(lahja_endpoint_t *ep, lahja_event_t *ev,
                           const lahja_broadcast_config_t *cfg);

/** The peer that made the last lahja_broadcast_nowait fail with -EAGAIN
 * ("" if none, or on another thread); valid until the next broadcast. */
const char *lahja_endpoint_blocked_peer(const lahja_endpoint_t *ep);

/* --------------------------------------------------------------- consuming */

/**
 * @par Types, patterns and origins (B34)
 * What a subscription, stream or wait_for names is either an exact event
 * type or a **pattern**: a name whose last byte is `*`.  The pattern
 * `P*` matches every type that starts with the bytes P and is longer than
 * P: `block.*` matches `block.new` and `block.x.y`, not `block.` nor
 * `block`; `blo*` matches `block` and `blob`; `*` matches every type but
 * the reserved `lahja.` ones, which only a pattern starting with `lahja.`
 * matches (a catch-all must not answer the built-in requests).
 * Only a final `*` is special: `a*b` is an exact type, and no event type
 * may end in `*` (lahja_event_new and the bytes forms refuse it).  An
 * event reaches every consumer whose type or pattern matches it, each
 * once, whatever else matches.  Patterns are announced to peers like
 * types, so a peer sends only what some type or pattern here matches
 * (peers of older versions, which cannot read patterns, send nothing
 * that only a pattern matches; see docs/protocol.md).
 *
 * The `_from` forms take **origins**: the names of the endpoints whose
 * events the consumer wants (1 to 255 names, copied; none: every
 * endpoint).  Events of this endpoint's own count as from its own name.
 * Peers learn the origins too: one not named does not send the events
 * at all.  lahja_subscribed_types and lahja_foreach_peer list types and
 * patterns as given; for a peer, only what holds for this endpoint's
 * events (an entry limited to other origins is not listed).
 */

/**
 * A subscription handler.  Called on the loop for every matching event,
 * not in a task: it must not suspend (spawn a task for work that waits).
 * `ev` is lent for the call; lahja_event_ref() keeps it.  A non-zero
 * return is logged; the other handlers still run (B15).
 */
typedef int (*lahja_handler_fn)(lahja_endpoint_t *ep, lahja_event_t *ev, void *user);

/**
 * Calls handler(ep, ev, user) for every event of `type` until the
 * subscription is cancelled.  Peers learn of the type (B19).  *out is
 * the caller's until lahja_subscription_cancel (allowed also after the
 * endpoint stopped, until it is freed); lahja_endpoint_free frees it
 * otherwise.  `out` may be NULL: the subscription then lasts as long as
 * the endpoint.
 * Errors: -EINVAL, -ENOMEM, LAHJA_ELIFECYCLE (stopped).
 */
int lahja_subscribe(lahja_endpoint_t *ep, const char *type, lahja_handler_fn handler, void *user,
                    lahja_subscription_t **out);

/**
 * lahja_subscribe for the events of `type` (a type or pattern) from the
 * endpoints named origins[0..norigins) only (norigins 0: every one).
 * Errors: those of lahja_subscribe; -EINVAL also for an invalid name or
 * more than 255.
 */
int lahja_subscribe_from(lahja_endpoint_t *ep, const char *type, const char *const *origins,
                         size_t norigins, lahja_handler_fn handler, void *user,
                         lahja_subscription_t **out);

/** Ends a subscription and frees it.  Safe inside its own handler.
 * On another thread than the endpoint's it does nothing. */
void lahja_subscription_cancel(lahja_subscription_t *s);

/** What a stream does when an event arrives and its queue is full. */
typedef enum lahja_stream_policy {
    LAHJA_STREAM_DROP_OLDEST = 0, /**< keep the newest events */
    LAHJA_STREAM_DROP_NEWEST      /**< keep the oldest events */
} lahja_stream_policy_t;

/** How to open a stream (lahja_stream_open()); NULL gives every default. */
typedef struct lahja_stream_options {
    size_t capacity;              /**< queued events; 0 gives 1024 */
    lahja_stream_policy_t policy; /**< when full; dropped events are counted,
                                   * and logged at WARNING: the first at
                                   * once, then a line a second at most,
                                   * the rest when the stream is closed */
} lahja_stream_options_t;

/**
 * Opens a stream of events of `type` (B16): pull them with
 * lahja_stream_next.  It ends after `num_events` events (0: never), or
 * when closed or the endpoint stops.  Its queue is its own: a slow reader
 * delays nobody else; when it is full, `opts->policy` applies.
 * Errors: -EINVAL, -ENOMEM, LAHJA_ELIFECYCLE.
 */
int lahja_stream_open(lahja_endpoint_t *ep, const char *type, size_t num_events,
                      const lahja_stream_options_t *opts, lahja_stream_t **out);

/** lahja_stream_open for events from origins[0..norigins) only (0: every
 * endpoint).  Errors also -EINVAL for an invalid name or more than 255. */
int lahja_stream_open_from(lahja_endpoint_t *ep, const char *type, const char *const *origins,
                           size_t norigins, size_t num_events,
                           const lahja_stream_options_t *opts, lahja_stream_t **out);

/**
 * The next event (the caller owns the reference in *ev).  Suspending;
 * errors: -EPIPE (the stream ended: num_events delivered, or closed),
 * LAHJA_ELIFECYCLE (the endpoint stopped), -ECANCELED, -ETIMEDOUT,
 * LAHJA_EWRONGTHREAD.
 */
int lahja_stream_next(lahja_stream_t *s, lahja_time_t deadline, lahja_event_t **ev);

/** Events dropped so far because the queue was full (0 on another thread). */
size_t lahja_stream_dropped(const lahja_stream_t *s);

/** Closes the stream (unsubscribing) and frees it with what it queued,
 * also once it has ended or the endpoint stopped, until the endpoint is
 * freed (which frees the streams left open).  No task may be waiting in
 * lahja_stream_next on it.  Accepts NULL; on another thread than the
 * endpoint's it does nothing. */
void lahja_stream_close(lahja_stream_t *s);

/**
 * The next event of `type` (B17); *ev is the caller's reference.  The
 * type is subscribed for the length of the wait.  Suspending; errors:
 * LAHJA_ELIFECYCLE, -ECANCELED, -ETIMEDOUT.
 */
int lahja_wait_for(lahja_endpoint_t *ep, const char *type, lahja_time_t deadline,
                   lahja_event_t **ev);

/** lahja_wait_for for an event from one of origins[0..norigins) (0:
 * any).  Errors also -EINVAL for an invalid name or more than 255. */
int lahja_wait_for_from(lahja_endpoint_t *ep, const char *type, const char *const *origins,
                        size_t norigins, lahja_time_t deadline, lahja_event_t **ev);

/**
 * Broadcasts the request `req` (made with lahja_request_new) and waits
 * for the first response to it (B18).  *response is the caller's
 * reference.  A response of another type than the request expects is
 * LAHJA_EUNEXPECTEDRESPONSE; later responses are ignored.  If every peer
 * the request went to disconnects before answering (and nobody local
 * could), LAHJA_EREMOTEDISCONNECTED.  A deadline or cancellation removes
 * the pending request.  Suspending; errors also those of broadcast.
 */
int lahja_request(lahja_endpoint_t *ep, lahja_event_t *req, const lahja_broadcast_config_t *cfg,
                  lahja_time_t deadline, lahja_event_t **response);

/**
 * Answers `request` (received by a handler, stream or wait_for) with
 * `response`: broadcast_nowait to the requester only, addressed to the
 * request's id.  Errors as lahja_broadcast_nowait, and -EINVAL if
 * `request` is not a request.
 */
int lahja_respond(lahja_endpoint_t *ep, const lahja_event_t *request, lahja_event_t *response);

/**
 * lahja_request_new, lahja_request and lahja_event_unref in one call: a
 * request of `type` carrying a copy of payload[0..len), expecting
 * `response_type`.  *response is the caller's reference.  Suspending;
 * errors as lahja_request, and -EINVAL for a bad type.
 */
int lahja_request_bytes(lahja_endpoint_t *ep, const char *type, const char *response_type,
                        const void *payload, size_t len, const lahja_broadcast_config_t *cfg,
                        lahja_time_t deadline, lahja_event_t **response);

/**
 * Answers `request` with an event of `type` carrying a copy of
 * payload[0..len), as lahja_respond, without allocating an event for
 * payloads up to 64 KiB (as lahja_broadcast_bytes).  Errors as
 * lahja_respond, and -EINVAL for a bad type.
 */
int lahja_respond_bytes(lahja_endpoint_t *ep, const lahja_event_t *request, const char *type,
                        const void *payload, size_t len);

/* ---------------------------------------------------------------- delivery */

/** What was sent to a peer and what became of it (B30). */
typedef struct lahja_delivery {
    uint64_t sent;      /**< events (requests and responses too) queued for it */
    uint64_t confirmed; /**< of those, confirmed read by its receipts (a peer
                           that sends none: written to its socket) */
    uint64_t lost;      /**< sent on connections that ended before confirming
                           them: maybe read, maybe not, but not confirmed */
} lahja_delivery_t;

/**
 * The counts of peer `name`, over every connection to it so far (NULL:
 * the sums over all peers); sent - confirmed - lost are in flight.
 * Non-suspending, also after stop, until the endpoint is freed.  Once
 * more than 4096 peer names are known, a peer that is gone and lost
 * nothing is forgotten (its counts stay in the sums).
 * Errors: -EINVAL, -ENOENT (never connected to that name, or
 * forgotten), LAHJA_EWRONGTHREAD.
 */
int lahja_delivery_stats(const lahja_endpoint_t *ep, const char *name, lahja_delivery_t *out);

/**
 * Waits until every peer has confirmed every event sent to it so far:
 * what a program does before it exits, or tells a user "saved".  Output
 * still queued is written at once.  Returns 0, or
 * LAHJA_EREMOTEDISCONNECTED if a connection with events unconfirmed
 * ended first (they are counted as lost); events lost with connections
 * that had ended before the call are not its concern (see
 * lahja_delivery_stats).  Suspending; errors also LAHJA_ELIFECYCLE,
 * -ECANCELED, -ETIMEDOUT, -ENOMEM.
 */
int lahja_wait_until_delivered(lahja_endpoint_t *ep, lahja_time_t deadline);

/* -------------------------------------------------------------- statistics */

/**
 * @name Statistics
 * B36: what an endpoint counts, for the program (lahja_peer_stats,
 * lahja_endpoint_stats) and for a tool asking a running endpoint
 * (LAHJA_STATS_REQUEST).  The counters are plain counts kept on the
 * endpoint's thread as it works; reading them costs nothing to others.
 * docs/bus.md, Statistics, says what each counts.
 * @{
 */

/** Event types beginning with this are the library's own: an
 * application should not use them.  They are never listed by
 * lahja_subscribed_types nor among a peer's types by lahja_foreach_peer,
 * though peers are told of them (that is how a request reaches them). */
#define LAHJA_RESERVED_PREFIX "lahja."
/** The built-in request every endpoint answers (unless
 * options.no_stats), from any peer that could connect (B27): empty
 * payload; answered with LAHJA_STATS_REPLY. */
#define LAHJA_STATS_REQUEST "lahja.stats"
/** The answer: text, one `key=value` line each (docs/bus.md). */
#define LAHJA_STATS_REPLY "lahja.stats.reply"
/** The version of that text, its first line: `lahja-stats=1`. */
#define LAHJA_STATS_FORMAT 1

/** One peer's counts (lahja_peer_stats).  The counters of traffic are
 * those of the connection up now (0 when none is); confirmed and lost
 * are over every connection to the peer so far, as lahja_delivery_stats. */
typedef struct lahja_peer_stats {
    int connected;          /**< a connection is established now */
    pid_t pid;              /**< connected: the peer's process */
    lahja_time_t since;     /**< connected: when, on lahja_now()'s clock */
    uint64_t age_ms;        /**< connected: for how long */
    uint64_t events_out;    /**< events queued for it (requests, responses too) */
    uint64_t events_in;     /**< events read from it */
    uint64_t bytes_out;     /**< bytes written to its socket, every frame,
                               compressed as sent */
    uint64_t bytes_in;      /**< bytes read from its socket */
    uint64_t payload_out;   /**< payload bytes of events_out, uncompressed */
    uint64_t payload_in;    /**< payload bytes of events_in, uncompressed */
    uint64_t queued;        /**< bytes queued for it now, not yet written */
    uint64_t high_water;    /**< the mark queued is compared with:
                               options.high_water, or at most 64 KiB for
                               a peer reached through a shared-memory ring */
    uint64_t blocked;       /**< broadcasts it held up: a lahja_broadcast
                               (or its callback form, or a posted one) that
                               waited for it, once per broadcast; a
                               lahja_broadcast_nowait that failed -EAGAIN */
    uint64_t confirmed;     /**< lahja_delivery_stats' confirmed */
    uint64_t lost;          /**< lahja_delivery_stats' lost */
} lahja_peer_stats_t;

/**
 * The counts of peer `name`: connected, or known to the delivery
 * accounting (a peer connected before).  To go over every connected
 * peer, call it from a lahja_foreach_peer callback.  Non-suspending.
 * Errors: -EINVAL, -ENOENT (never connected to that name, or
 * forgotten: see lahja_delivery_stats), LAHJA_EWRONGTHREAD.
 */
int lahja_peer_stats(const lahja_endpoint_t *ep, const char *name, lahja_peer_stats_t *out);

/** The endpoint's own counts (lahja_endpoint_stats). */
typedef struct lahja_endpoint_stats {
    uint64_t started_ms;       /**< Unix time (ms) it started; 0: never */
    uint64_t peers;            /**< connections established now */
    uint64_t stream_drops;     /**< events its streams dropped, closed
                                  ones included (lahja_stream_dropped) */
    uint64_t dispatched;       /**< events handed to its own consumers
                                  (once per event, whatever their number) */
    uint64_t requests_pending; /**< requests waiting for their response */
} lahja_endpoint_stats_t;

/** Fills *out.  Non-suspending, also before start and after stop.
 * Errors: -EINVAL, LAHJA_EWRONGTHREAD. */
int lahja_endpoint_stats(const lahja_endpoint_t *ep, lahja_endpoint_stats_t *out);
/** @} */

/* ---------------------------------------------------------------- queries */

/** Non-zero if a connection to endpoint `name` is established, or
 * `name` is this endpoint's own (it counts itself, as in lahja). */
int lahja_is_connected_to(const lahja_endpoint_t *ep, const char *name);

/** Calls fn for every connected endpoint with its subscribed types.
 * @{ */
typedef void (*lahja_peer_fn)(const char *name, const char *const *types, size_t ntypes,
                              void *user);
void lahja_foreach_peer(const lahja_endpoint_t *ep, lahja_peer_fn fn, void *user);
/** @} */

/** The types this endpoint subscribes to: fills up to `max` pointers
 * (valid until the subscriptions change) and returns how many there are. */
size_t lahja_subscribed_types(const lahja_endpoint_t *ep, const char **types, size_t max);

/** Non-zero if endpoint `name`, a connected one or this one, subscribes
 * to `type`. */
int lahja_is_endpoint_subscribed_to(const lahja_endpoint_t *ep, const char *name,
                                    const char *type);
/** Any connected endpoint, or this one (B22). */
int lahja_is_any_endpoint_subscribed_to(const lahja_endpoint_t *ep, const char *type);
/** Every connected endpoint, and this one unless include_self is 0. */
int lahja_are_all_endpoints_subscribed_to(const lahja_endpoint_t *ep, const char *type,
                                          int include_self);

/* ------------------------------------------------------------------ waits */

/** Each suspends until its condition holds (0 at once if it already does).
 * Suspending; errors: LAHJA_ELIFECYCLE, -ECANCELED, -ETIMEDOUT.
 * @{ */
int lahja_wait_until_connected_to(lahja_endpoint_t *ep, const char *name, lahja_time_t deadline);
int lahja_wait_until_connections_change(lahja_endpoint_t *ep, lahja_time_t deadline);
int lahja_wait_until_endpoint_subscriptions_change(lahja_endpoint_t *ep, lahja_time_t deadline);
int lahja_wait_until_endpoint_subscribed_to(lahja_endpoint_t *ep, const char *name,
                                            const char *type, lahja_time_t deadline);
int lahja_wait_until_any_endpoint_subscribed_to(lahja_endpoint_t *ep, const char *type,
                                                lahja_time_t deadline);
int lahja_wait_until_all_endpoints_subscribed_to(lahja_endpoint_t *ep, const char *type,
                                                 int include_self, lahja_time_t deadline);
/** @} */

/* --------------------------------------------------------- callback forms */

/**
 * Every call above that waits has a callback form, for a program that is
 * not written as tasks (a plain libuv program, a language binding); the
 * suspending calls are thin wrappers over the same core, so both behave
 * alike.  A callback form is called on the endpoint's thread, from a task
 * or from any libuv callback, and returns at once:
 *  - a negative error when the call cannot start: bad arguments (-EINVAL),
 *    the wrong thread (LAHJA_EWRONGTHREAD), an endpoint not running
 *    (LAHJA_ELIFECYCLE), -ENOMEM, and the call's own argument errors
 *    (LAHJA_EBIND, LAHJA_ECONNREJECTED...).  The callback is then never
 *    called.
 *  - 0: the callback will be called exactly once, on the endpoint's
 *    thread, from the loop (never from within a lahja call), with the
 *    call's result: 0 or the error the suspending form would return for
 *    the same outcome, -ETIMEDOUT when `deadline` passes (LAHJA_FOREVER:
 *    none; lahja_deadline_in turns a timeout into a deadline), -ECANCELED
 *    after lahja_op_cancel, LAHJA_ELIFECYCLE when the endpoint stops
 *    first (every call under way ends so before stop's own callback).
 *
 * `user` is passed through.  If `op` is not NULL it receives the call's
 * handle, valid until its callback returns: lahja_op_cancel ends the call.
 */
typedef struct lahja_op lahja_op_t;

/** The end of a call that yields nothing but its status. */
typedef void (*lahja_done_fn)(lahja_endpoint_t *ep, int status, void *user);

/** The end of a call that yields an event: with status 0, `ev` is the
 * callback's reference (keep it, or lahja_event_unref it); otherwise NULL. */
typedef void (*lahja_event_done_fn)(lahja_endpoint_t *ep, int status, lahja_event_t *ev,
                                    void *user);

/**
 * Cancels a call under way: it ends as a deadline would, and its callback
 * is called with -ECANCELED at the next loop turn.  If the call has
 * already ended (its callback is due), the callback gets that result
 * (for the wait_until family: if the condition still holds when the
 * callback is due, else -ECANCELED).  On another thread than the
 * endpoint's it does nothing.
 */
void lahja_op_cancel(lahja_op_t *op);

/** lahja_connect.  The configs are copied before it returns. */
int lahja_connect_cb(lahja_endpoint_t *ep, const lahja_conn_config_t *configs, size_t n,
                     lahja_time_t deadline, lahja_done_fn cb, void *user, lahja_op_t **op);

/**
 * lahja_broadcast: the callback comes once the event is queued for every
 * receiver under its high-water mark (or with the error; then it was
 * queued for nobody and stays unbound).  The endpoint holds a reference
 * to `ev` until then; the caller keeps its own.  `cfg` is copied.
 */
int lahja_broadcast_cb(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
                       lahja_time_t deadline, lahja_done_fn cb, void *user, lahja_op_t **op);

/** lahja_request: the callback gets the response.  The endpoint holds a
 * reference to `req` until then; `cfg` is copied. */
int lahja_request_cb(lahja_endpoint_t *ep, lahja_event_t *req, const lahja_broadcast_config_t *cfg,
                     lahja_time_t deadline, lahja_event_done_fn cb, void *user, lahja_op_t **op);

/**
 * lahja_broadcast_bytes in callback form: an event of `type` carrying a
 * copy of payload[0..len), broadcast as lahja_broadcast_cb does.  Errors
 * as lahja_broadcast_cb, and -EINVAL for a bad type.
 */
int lahja_broadcast_bytes_cb(lahja_endpoint_t *ep, const char *type, const void *payload,
                             size_t len, const lahja_broadcast_config_t *cfg,
                             lahja_time_t deadline, lahja_done_fn cb, void *user,
                             lahja_op_t **op);

/**
 * lahja_request_bytes in callback form: a request of `type` carrying a
 * copy of payload[0..len), expecting `response_type`; the callback gets
 * the response.  Errors as lahja_request_cb, and -EINVAL for a bad type.
 */
int lahja_request_bytes_cb(lahja_endpoint_t *ep, const char *type, const char *response_type,
                           const void *payload, size_t len, const lahja_broadcast_config_t *cfg,
                           lahja_time_t deadline, lahja_event_done_fn cb, void *user,
                           lahja_op_t **op);

/** lahja_wait_for: the callback gets the event. */
int lahja_wait_for_cb(lahja_endpoint_t *ep, const char *type, lahja_time_t deadline,
                      lahja_event_done_fn cb, void *user, lahja_op_t **op);

/** lahja_wait_for_from: the callback gets the event. */
int lahja_wait_for_from_cb(lahja_endpoint_t *ep, const char *type, const char *const *origins,
                           size_t norigins, lahja_time_t deadline, lahja_event_done_fn cb,
                           void *user, lahja_op_t **op);

/**
 * lahja_stream_next: the callback gets the next event.  Several may wait
 * on one stream; they get events in the order they were called.  Closing
 * the stream ends them with -EPIPE.
 */
int lahja_stream_next_cb(lahja_stream_t *s, lahja_time_t deadline, lahja_event_done_fn cb,
                         void *user, lahja_op_t **op);

/** lahja_wait_until_delivered. */
int lahja_wait_until_delivered_cb(lahja_endpoint_t *ep, lahja_time_t deadline, lahja_done_fn cb,
                                  void *user, lahja_op_t **op);

/** The wait_until family; names and types are copied.  The condition is
 * checked again when the callback is due: the callback runs while it
 * holds (a condition that held and stopped holding meanwhile is waited
 * for again).
 * @{ */
int lahja_wait_until_connected_to_cb(lahja_endpoint_t *ep, const char *name, lahja_time_t deadline,
                                     lahja_done_fn cb, void *user, lahja_op_t **op);
int lahja_wait_until_connections_change_cb(lahja_endpoint_t *ep, lahja_time_t deadline,
                                           lahja_done_fn cb, void *user, lahja_op_t **op);
int lahja_wait_until_endpoint_subscriptions_change_cb(lahja_endpoint_t *ep, lahja_time_t deadline,
                                                      lahja_done_fn cb, void *user,
                                                      lahja_op_t **op);
int lahja_wait_until_endpoint_subscribed_to_cb(lahja_endpoint_t *ep, const char *name,
                                               const char *type, lahja_time_t deadline,
                                               lahja_done_fn cb, void *user, lahja_op_t **op);
int lahja_wait_until_any_endpoint_subscribed_to_cb(lahja_endpoint_t *ep, const char *type,
                                                   lahja_time_t deadline, lahja_done_fn cb,
                                                   void *user, lahja_op_t **op);
int lahja_wait_until_all_endpoints_subscribed_to_cb(lahja_endpoint_t *ep, const char *type,
                                                    int include_self, lahja_time_t deadline,
                                                    lahja_done_fn cb, void *user,
                                                    lahja_op_t **op);
/** @} */

/**
 * lahja_endpoint_stop: the callback comes once the endpoint is stopped,
 * its handles closed and every call under way ended (their callbacks
 * first); the endpoint may be freed in it (with several stop callbacks,
 * in the last: they are called in the order they were given).  Not
 * cancellable.  Called while a stop is under way, the callback comes with
 * that stop's end.
 * Errors: LAHJA_ELIFECYCLE if the endpoint was never started or its stop
 * has completed (the callback is then not called), -ENOMEM,
 * LAHJA_EWRONGTHREAD, -EINVAL.
 */
int lahja_endpoint_stop_cb(lahja_endpoint_t *ep, lahja_done_fn cb, void *user);

/* ------------------------------------------------------ from other threads */

/**
 * @name From other threads
 * The calls any thread may make.  An endpoint is used on its own thread;
 * another thread (a worker) hands it work through its post queue, which
 * the endpoint's thread takes in order at its next loop turn.  The queue
 * is bounded (options.post_queue): a poster waits up to `timeout_ms` for
 * room (0: not at all; -1: as long as it takes), then fails with -EAGAIN.
 * On the endpoint's own thread a full queue fails at once (waiting would
 * stop the loop that empties it).
 *
 * Events may be handed between threads: reference counts are atomic and
 * an event's type and payload never change once made.  What the
 * broadcasting thread sets (the binding: origin and id) is read safely
 * only on that thread.
 *
 * Posting to an endpoint that is stopping or stopped fails with
 * LAHJA_ELIFECYCLE; what was posted before its stop began is still
 * carried out (a posted broadcast still waiting then ends as a call
 * under way does, and its loss is logged).  The endpoint must not be
 * freed while a thread may still post to it.
 * @{
 */

/**
 * Broadcasts `ev` from the endpoint's thread, as lahja_broadcast would
 * from a task there: in the order posted, each waiting while a receiving
 * peer is over its high-water mark, and meanwhile the queue is not taken
 * further, so that a full queue makes the posters wait (backpressure
 * reaches them).  On success the endpoint owns the caller's reference
 * (do not use the event afterwards); on error the caller keeps it.
 * `cfg` (NULL: the default) is copied.  The broadcast's own outcome
 * cannot be returned: a failure (LAHJA_ENOSUBSCRIBERS unless
 * cfg->allow_no_subscribers, -EMSGSIZE...) is logged at WARNING with the
 * event's type.  Any thread.
 * Errors: -EINVAL (NULL, or an event already broadcast or lent to a
 * handler), -EAGAIN (the queue stayed full), LAHJA_ELIFECYCLE, -ENOMEM.
 */
int lahja_post(lahja_endpoint_t *ep, lahja_event_t *ev, const lahja_broadcast_config_t *cfg,
               int timeout_ms);

/**
 * Sends the request `req` from the endpoint's thread (lahja_request_cb,
 * with a deadline `timeout_ms` after the endpoint's thread takes it; 0:
 * none), and calls cb(ep, status, response, user) there with its result,
 * exactly once: also with the error when the request cannot start there,
 * and with LAHJA_ELIFECYCLE when the endpoint stops first.  Ownership of
 * `req` and `cfg` as lahja_post; `queue_timeout_ms` is the wait for room
 * in the queue.  Any thread.  Errors (cb is then not called): those of
 * lahja_post, -EINVAL if `req` is not a request or cb is NULL.
 */
int lahja_post_request(lahja_endpoint_t *ep, lahja_event_t *req,
                       const lahja_broadcast_config_t *cfg, uint32_t timeout_ms,
                       lahja_event_done_fn cb, void *user, int queue_timeout_ms);

/** Work for the endpoint's thread (lahja_post_call). */
typedef void (*lahja_call_fn)(lahja_endpoint_t *ep, void *user);

/**
 * Calls fn(ep, user) on the endpoint's thread, from its loop, in order
 * with the posted broadcasts and requests: the way to run any of the
 * endpoint's calls (the callback forms included) on behalf of another
 * thread.  fn is called exactly once if this returns 0: if the endpoint
 * stops meanwhile, as its stop begins (within lahja_endpoint_stop or
 * lahja_endpoint_stop_cb, so fn must not free the endpoint).  Any thread.  Errors: -EINVAL, -EAGAIN, LAHJA_ELIFECYCLE,
 * -ENOMEM.
 */
int lahja_post_call(lahja_endpoint_t *ep, lahja_call_fn fn, void *user, int timeout_ms);
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* LAHJA_BUS_H */
