/*
 * The bus core's internals.
 *
 * The core is driven by libuv callbacks: accept, connect, read (parse
 * frames in place, dispatch), write (chunks of small frames and large
 * payloads, from the broadcasting call once enough wait, or from a
 * prepare handle at the end of the loop turn; see conn.c).  The public
 * calls that wait are step functions over a condition the callbacks
 * maintain, run by a task or by a callback call (see "waits" below and
 * op.c) between the wake-ups of a wait queue the callbacks signal.
 */
#ifndef LAHJA_BUS_ENDPOINT_H
#define LAHJA_BUS_ENDPOINT_H

#include <uv.h>

#include "common/list.h"
#include "common/strset.h"
#include "lahja/bus.h"
#include "runtime/rt.h"
#include "wire/wire.h"
#include "bus/transport.h"

/* Internal: never exported from the shared library. */
#pragma GCC visibility push(hidden)

/* ---------------------------------------------------------------- waits */

/*
 * Every call that waits is written once, as a step function over its own
 * state, and run by one of two drivers: the suspending form (a task
 * waits between steps, lahja_call_run) and the callback form (a struct
 * lahja_op, woken between steps by the loop).  What the calls wait for
 * are wait queues, which the core's callbacks wake.
 */

/* The longest error detail kept (lahja_endpoint_last_error). */
#define LAHJA_ERRMSG_MAX 640

/* A step's answer when the call must wait: it set *q to what. */
#define LAHJA_PENDING 1

/* Tasks and callback calls waiting for one thing. */
struct lahja_waitq {
    lahja_cond_t tasks;
    lahja_link_t ops;            /* struct lahja_op, parked or woken */
};

void lahja_waitq_init(struct lahja_waitq *q);
/* Every waiter looks again (a woken call steps at the next loop turn). */
void lahja_waitq_wake(struct lahja_waitq *q);
/* One waiter looks again: the longest waiting task, else call. */
void lahja_waitq_signal(struct lahja_waitq *q);
/* q goes away: its waiters look again elsewhere (its calls are unlinked). */
void lahja_waitq_detach(struct lahja_waitq *q);
/* q goes away with what its calls wait for: they end with `status`. */
void lahja_waitq_end(struct lahja_waitq *q, int status);

struct lahja_call;

/*
 * A kind of call.  step() tries to finish it: returns the result (0 or an
 * error; the call's hold on the core released), or LAHJA_PENDING having
 * set *q.  abandon() ends it before that, for `why` (a deadline,
 * cancellation, the endpoint stopping): it releases what the call holds
 * and returns the result, `why` or 0 when the result came after all.
 */
struct lahja_call_kind {
    const char *name;            /* for the error detail: "connect"... */
    int recheck;                 /* its step holds nothing and takes
                                  * nothing: a callback call's success is
                                  * checked again when its callback is due,
                                  * so that the callback sees the condition
                                  * hold (the wait_until family) */
    int (*step)(struct lahja_call *call, struct lahja_waitq **q);
    int (*abandon)(struct lahja_call *call, int why);
};

/* What every call's state starts with. */
struct lahja_call {
    const struct lahja_call_kind *kind;
    lahja_endpoint_t *ep;
    lahja_event_t *result;       /* the event it yields: the caller's */
    const char *detail;          /* what a failure saw, if the kind kept
                                  * it (a step's own failures are in
                                  * ep->errmsg); NULL or "": none */
};

/* The error detail of a call that ended with rc < 0, from call->detail,
 * or from ep->errmsg if it was written since errseq0, or rc's message:
 * into buf (lahja_endpoint_last_error's text). */
void lahja_call_explain(const struct lahja_call *call, int rc, uint32_t errseq0, char *buf,
                        size_t len);

/* The suspending form: steps, waiting in between, until done. */
int lahja_call_run(struct lahja_call *call, lahja_time_t deadline);

enum op_state { OP_NEW, OP_PARKED, OP_WOKEN, OP_DONE };

/* The callback form of a call (the public lahja_op_t). */
struct lahja_op {
    lahja_link_t link;           /* in a waitq's ops: parked or woken */
    lahja_link_t all;            /* in ep->ops until its callback */
    lahja_endpoint_t *ep;
    uv_timer_t timer;            /* parked: the deadline; woken or done:
                                    0, for the next loop turn */
    lahja_time_t deadline;
    uint8_t state;               /* enum op_state */
    uint8_t linked;              /* in a waitq */
    uint8_t cancelled;           /* lahja_op_cancel was called */
    int status;
    lahja_done_fn done;
    lahja_event_done_fn event_done;
    void *user;
    struct lahja_call *call;     /* the state, allocated after the op */
    char errmsg[LAHJA_ERRMSG_MAX]; /* its failure's detail, once done */
};

/* A callback call of `size` bytes of zeroed state (a struct lahja_call
 * first); NULL on -ENOMEM.  Freed by lahja_op_start's end or, before
 * starting, with free(). */
struct lahja_op *lahja_op_new(lahja_endpoint_t *ep, const struct lahja_call_kind *kind,
                              size_t size);
/* Starts it: the first step at once, the callback from the loop. */
void lahja_op_start(struct lahja_op *op, lahja_time_t deadline, lahja_done_fn done,
                    lahja_event_done_fn event_done, void *user, lahja_op_t **out);
/* Ends every call under way with LAHJA_ELIFECYCLE (stop). */
void lahja_ops_stop(lahja_endpoint_t *ep);

/* A reference-counted name (an endpoint's, a peer's), so that events can
 * name their origin after the connection that brought them is gone. */
typedef struct lahja_name {
    int refs;
    size_t len;
    char s[];
} lahja_name_t;

lahja_name_t *lahja_name_new(const char *s, size_t len);
lahja_name_t *lahja_name_ref(lahja_name_t *n);
void lahja_name_unref(lahja_name_t *n);

struct lahja_event {
    int refs;
    uint8_t bound;        /* broadcast once: cannot be again (B8) */
    uint8_t borrowed;     /* lent to handlers, lives on a stack frame */
    uint8_t on_stack;     /* lahja_broadcast_bytes's: refs copy it */
    uint8_t is_request;
    uint8_t block;        /* owned, in a runtime's block (lahja_block_get) */
    uint64_t id;          /* request id / id of the request answered */
    lahja_name_t *origin; /* NULL until bound or received */
    const char *type;
    size_t type_len;
    uint64_t hash;        /* lahja_strmap_hash of the type, once hashed */
    uint8_t hashed;       /* set when first broadcast */
    const char *response_type; /* requests only */
    const uint8_t *payload;
    size_t len;
    lahja_free_fn free_fn; /* a wrapped payload's release, or NULL */
    void *free_user;
    struct lahja_lent *lent; /* its payload's block in our pool (shm.c), or NULL */
    uint8_t *lz4;         /* compressed payload, made once per event */
    size_t lz4_len;       /* 0: not made or did not pay */
    /* type, response type and payload follow, for owned events.  A new
     * field must be set in lahja_event_blank, below. */
};

/* Every field of ev zeroed, one by one: clearing the whole struct at
 * once (memset, a designated initializer) is a string instruction,
 * whose start-up costs more than these stores, on the path of every
 * event made or read.  The caller's stores that follow replace these. */
static inline void lahja_event_blank(lahja_event_t *ev)
{
    ev->refs = 0;
    ev->bound = 0;
    ev->borrowed = 0;
    ev->on_stack = 0;
    ev->is_request = 0;
    ev->block = 0;
    ev->id = 0;
    ev->origin = NULL;
    ev->type = NULL;
    ev->type_len = 0;
    ev->hash = 0;
    ev->hashed = 0;
    ev->response_type = NULL;
    ev->payload = NULL;
    ev->len = 0;
    ev->free_fn = NULL;
    ev->free_user = NULL;
    ev->lent = NULL;
    ev->lz4 = NULL;
    ev->lz4_len = 0;
}

/* Non-zero if type[0..len) may name an event: a valid wire type that
 * does not end in '*' (a subscription to one would be a pattern, B34). */
static inline int lahja_event_type_valid(const char *type, size_t len)
{
    return lahja_wire_type_valid(type, len) && type[len - 1] != '*';
}

/* Makes an owned event: type/response_type/payload copied. */
int lahja_event_make(const char *type, size_t type_len, const char *response_type,
                     const void *payload, size_t len, lahja_event_t **out);

/* ------------------------------------------------------- connections */

/*
 * A connection's life.  Only a READY connection carries events.  An
 * outbound connection waits, after the peer's HELLO, for the peer's
 * first SUBS: it is how the peer says it keeps this connection rather
 * than one it opened to us at the same moment (see settle() in conn.c).
 */
enum conn_state {
    CONN_CONNECTING, /* outbound, no socket yet: connect retrying */
    CONN_HANDSHAKE,  /* HELLO sent, waiting for the peer's */
    CONN_CONFIRMING, /* outbound: the peer's HELLO read, its SUBS awaited */
    CONN_READY,
    CONN_DRAINING,   /* writing failed: reading what the peer sent, to its end */
    CONN_CLOSING
};

/* Who opened an outbound connection, and so what its failure means. */
enum conn_background {
    CONN_FOREGROUND = 0, /* lahja_connect (or accepted) */
    CONN_NOWAIT,         /* lahja_connect_nowait: waits for the socket as
                            lahja_connect does; nobody waits on it */
    CONN_KEPT            /* an attempt for a kept peer: one connect(), its
                            failure ends it, logged at DEBUG (dial.c retries) */
};

/*
 * Output waiting to be written.  Two kinds:
 *  - a chunk: small frames copied one after another into `heap` (up to
 *    `cap` bytes), so that many events go out as one contiguous iovec;
 *  - a large event: its prefix in `head` and its payload, not copied, as
 *    a second iovec (the item holds a reference to the event).
 */
struct out_item {
    lahja_link_t link;
    size_t head_len;
    size_t cost;             /* memory it holds, for the queue limits */
    lahja_event_t *ev;       /* holds the payload alive, or NULL */
    const uint8_t *payload;  /* second iovec, or NULL */
    size_t payload_len;      /* for a chunk: the bytes used */
    uint8_t *heap;           /* a chunk's buffer, owned */
    size_t cap;              /* a chunk's capacity; 0: not a chunk */
    uint32_t nevents;        /* EVENT frames it holds */
    uint8_t head[LAHJA_WIRE_HEADER_SIZE + 5 + LAHJA_WIRE_NAME_MAX + LAHJA_WIRE_EVENT_PREFIX_MAX];
};

/* A lahja_connect call waiting for its connections' handshakes. */
struct connect_op {
    size_t pending;
    int error;
    struct lahja_waitq done;
    char detail[LAHJA_ERRMSG_MAX]; /* the first failure: which name, where,
                                      what was seen */
};

/* Delivery counts of one peer, over the connections that have ended. */
struct peer_totals {
    uint64_t sent, confirmed, lost;
};

/* A connection's part of one broadcast, taken before any peer is given
 * the event, so that it is queued for every peer or for none (see
 * lahja_conn_reserve). */
struct conn_slot {
    struct out_item *item;   /* a new chunk or large-event item; NULL: the
                                last chunk has room */
    uint32_t tid;            /* the type's id on the connection */
    uint8_t is_new;          /* the type was bound for this event */
};

/*
 * Where small events of one type go, while nothing that decides it
 * changed (ep->route_gen): only peers, reached by frames of a type id
 * they know.  A run of events of one type is then queued without
 * finding its receivers again (broadcast.c).
 */
#define ROUTE_PEERS 8
struct route {
    uint64_t gen;                /* ep->route_gen it holds for; 0: none */
    uint64_t hash;               /* the type's */
    size_t tlen;
    char type[LAHJA_WIRE_NAME_MAX];
    size_t n;                    /* 0: the full path it is */
    struct conn *v[ROUTE_PEERS];
    uint32_t tid[ROUTE_PEERS];
    size_t max_len;              /* largest payload every one takes */
    uint8_t lz4;                 /* one of them reads LZ4 */
};

struct conn {
    lahja_link_t link;           /* in ep->conns */
    lahja_endpoint_t *ep;
    const struct conn_transport *t; /* how its bytes move (transport.h) */
    union {
        struct unix_link ux;     /* lahja_unix_transport */
        void *p;                 /* another transport's own state */
    } io;
    uv_timer_t timer;            /* handshake deadline; connect retries */
    int nopen;                   /* handles not yet closed (the
                                    transport's part counts as one) */
    uint8_t state;               /* enum conn_state */
    uint8_t outbound;
    uint8_t writing;             /* a transport write in flight */
    uint8_t dirty;               /* in ep->dirty */
    uint8_t peer_lz4;            /* the peer reads LZ4 payloads */
    uint8_t peer_receipts;       /* the peer confirms what it reads */
    uint8_t peer_patterns;       /* the peer reads SUBS with ENTRIES */
    uint32_t peer_features;      /* its HELLO's (LAHJA_WIRE_FEAT_*) */
    uint32_t peer_max;           /* largest frame body the peer accepts */
    uint32_t subs_acked;         /* the peer's last SUBS_ACK */
    uint8_t got_subs;            /* the peer's first SUBS arrived */
    uint8_t subs_due;            /* our SUBS could not be queued: retried */
    uint8_t frame_open;          /* a frame is partly read (frame_*) */
    uint8_t receipt_owed;        /* counted in ep->receipts_owed */
    pid_t peer_pid;              /* the peer's process (transport.allowed) */
    uint8_t background;          /* enum conn_background */
    uint64_t up_at;              /* loop time (ms) it became READY */
    lahja_name_t *peer;          /* after the peer's HELLO */
    struct peer_totals *totals;  /* the peer's, from when it is READY */
    char target[LAHJA_NAME_MAX + 1]; /* outbound: the name we expect */
    char path[LAHJA_PATH_MAX + 1];   /* outbound: where */
    struct connect_op *op;       /* the lahja_connect call waiting */
    lahja_wire_rx_t rx;
    lahja_wire_tx_t tx;
    uint8_t *rbuf;
    size_t rlen, rcap;
    size_t need;                 /* bytes the frame being read needs */
    uint32_t small_reads;        /* reads since the buffer was last needed
                                    at its size */
    lahja_link_t outq;           /* out_items not yet handed to libuv */
    /* Where the transport takes small events in place (transport.reserve),
     * while outq is empty: win_left bytes from win on; win_used bytes
     * before win are written there and not yet committed. */
    uint8_t *win;
    size_t win_left, win_used;
    size_t head_off;             /* bytes of outq's first item written */
    size_t unflushed;            /* bytes queued since the last write */
    size_t flush_at;             /* unflushed bytes that start a write */
    int write_error;             /* a write failed where it could not
                                    be handled: the flusher will */
    lahja_link_t inflight;       /* out_items of the write under way */
    size_t queued;               /* memory held by outq and inflight: an
                                    event counts its uncompressed size */
    size_t queue_mark;           /* queued past this: over the high-water
                                    mark (high_water; less behind a ring,
                                    LAHJA_RING_QUEUE) */
    size_t lent_bytes;           /* payloads lent to the peer (shm.c) that
                                    its receipts do not confirm yet: what
                                    it has not read counts as queued */
    struct lent_unread { uint64_t seq; size_t len; } *lentq; /* a ring of */
    size_t lentq_head, lentq_n, lentq_cap;                   /* those */
    lahja_link_t dirty_link;
    struct lahja_waitq drained;  /* broadcasters waiting under high water */
    lahja_strmap_t subs;         /* exact types the peer subscribes to
                                    (those limited to origins that do not
                                    include us are left out) */
    char **pats;                 /* the peer's patterns, as it gave them
                                    (also only those that hold for us) */
    size_t npats;
    lahja_strmap_t route;        /* with patterns: type -> ROUTE_YES/NO,
                                    whether the peer wants it, cleared
                                    when its SUBS changes */
    const char *rx_type;         /* the type of the last event received, */
    struct type_entry *rx_te;    /* its consumers, */
    uint32_t rx_gen;             /* valid while ep->types_gen is this */
    uint32_t subs_seq;           /* our last SUBS sent */
    uint32_t retry_ms;
    int connect_err;             /* outbound: the last connect's errno */
    /* Delivery (B30).  tx_events counts the EVENT frames queued for the
     * peer, confirmed those its receipts confirm (a peer without
     * receipts: those written to the socket).  rx_events counts the
     * EVENT frames read, rx_acked the count our last receipt gave. */
    uint64_t tx_events, confirmed;
    uint64_t rx_events, rx_acked;
    /* Statistics (B36, stats.c), of this connection: bytes handed to the
     * socket, payload bytes (uncompressed) of the events queued and read,
     * broadcasts this peer held up (over high water or hard limit). */
    uint64_t tx_bytes, tx_payload, rx_payload, blocked;
    /* A frame started but not finished: frame_at is rx_total where it
     * begins, frame_since the loop time (ms) it was last seen progress,
     * frame_seen how much of it was there then. */
    uint64_t rx_total;           /* bytes consumed from the socket */
    uint64_t rx_lent;            /* payload bytes lent to us and read */
    uint64_t receipt_at;         /* rx_total + rx_lent when our last
                                    receipt went */
    uint64_t frame_at, frame_since;
    size_t frame_seen;
};

/* --------------------------------------------------------- consumers */

enum consumer_kind { CONSUMER_HANDLER, CONSUMER_STREAM, CONSUMER_WAITER };

/* Everything that makes this endpoint subscribe to a type. */
struct consumer {
    lahja_link_t link;           /* in its type_entry, while linked */
    lahja_link_t owned;          /* in ep->owned until freed (handlers
                                    and streams: the endpoint frees those
                                    the application did not) */
    struct type_entry *te;
    uint8_t kind;
    uint8_t active;              /* counts as a subscriber */
    uint8_t dead;                /* removed during a dispatch: unlinked by
                                    the sweep after it */
    uint8_t free_on_sweep;       /* released by its owner meanwhile */
    size_t norigins;             /* 0: events from every endpoint */
    char **origins;              /* else only from these (one block,
                                    freed when it stops counting) */
};

struct type_entry {
    char *name;                  /* the map's key copy (stable) */
    lahja_link_t consumers;
    size_t n;                    /* live consumers */
    size_t n_any;                /* of them, those without origins */
    int dispatching;
    size_t ndead;                /* consumers marked dead, not yet swept */
    struct lahja_subscription *solo; /* its one consumer, when that is a
                                    handler for every origin (and none is
                                    left to sweep); else NULL */
    uint8_t is_pattern;          /* name ends in '*': in ep->patterns */
    lahja_link_t plink;          /* in ep->patterns */
};

struct lahja_subscription {
    struct consumer c;
    lahja_endpoint_t *ep;
    lahja_handler_fn fn;
    void *user;
};

struct lahja_stream {
    struct consumer c;
    lahja_endpoint_t *ep;
    lahja_event_t **ring;
    size_t cap, head, len;
    size_t remaining;            /* events still to accept; SIZE_MAX: no end */
    size_t dropped;
    size_t dropped_logged;       /* dropped, as the last log line said */
    uint64_t dropped_logged_at;  /* the loop's time (ms) of that line */
    lahja_stream_policy_t policy;
    int ended;                   /* num_events reached or endpoint stopped */
    struct lahja_waitq ready;
    char type[];                 /* for the log: its type entry may go first */
};

struct waiter {
    struct consumer c;
    lahja_event_t *got;
    struct lahja_waitq ready;
};

/* A request waiting for its response. */
struct pending {
    lahja_link_t link;           /* in ep->pending */
    uint64_t id;
    const char *response_type;
    lahja_event_t *response;
    int error;
    int local;                   /* a local consumer may answer */
    struct conn **targets;       /* peers it went to, NULLed when gone */
    size_t ntargets, nlive;
    struct conn *few[4];         /* targets, when they are this few */
    struct lahja_waitq ready;
    const char *type;            /* the request's, for the detail */
    char detail[LAHJA_ERRMSG_MAX]; /* why it failed, once it did */
};

/* An endpoint's stop, in order. */
enum stop_state {
    STOP_NONE,                   /* running, or never started */
    STOP_LINGER,                 /* waiting for the peers' confirmations */
    STOP_CLOSING,                /* handles closing, calls leaving */
    STOP_LAST,                   /* the stop timer, last handle, closing */
    STOP_DONE
};

struct lahja_endpoint {
    lahja_name_t *name;
    struct lahja_rt *rt;
    lahja_endpoint_options_t opts;
    int log_min;                 /* without opts.log: the least level
                                    printed to stderr (LAHJA_LOG) */
    uid_t *allowed;
    uint8_t started, stopped, serving;
    uv_pipe_t server;
    uv_prepare_t flusher;        /* writes what the loop turn queued */
    uint8_t flusher_closed;
    uv_idle_t poller;            /* keeps the loop polling (busy_poll_us) */
    /* The shared-memory transport (shm.c). */
    size_t shm_ring;             /* bytes of a ring; 0: the transport is off */
    size_t shm_pool_size;        /* bytes of the pool, made at the first ring */
    struct shm_pool *shm_pool;   /* payloads lent to the peers */
    int shm_conns;               /* connections using rings */
    uint64_t request_ns;         /* uv_hrtime() when a peer's request last came */
    uint64_t shm_rx_seen;        /* the rings' rx_total + rx_lent, at the last poll */
    uint8_t shm_spinning;        /* the loop watches its rings before polling */
    uint32_t shm_tells_owed;     /* connections with a tell for the end of the turn */
    int shm_only_cpu;            /* the one CPU our thread may run on, or -1 */
    /* lahja_broadcast_bytes's last type, checked and hashed (bytes_tlen 0:
     * none yet; types are 1..255 bytes). */
    char bytes_type[LAHJA_WIRE_NAME_MAX + 1]; /* NUL-terminated */
    size_t bytes_tlen;
    uint8_t bytes_routed;        /* bytes_type is the remembered route's type */
    uint64_t bytes_hash;
    uint64_t route_gen;          /* bumped by whatever may change where an
                                    event goes (lahja_route_changed) */
    struct route route;          /* of the last run of one type */
    uint64_t route_last;         /* the hash of the last type broadcast */
    uv_check_t shm_check;        /* reads the rings after each poll */
    uv_prepare_t shm_prepare;    /* says we sleep, before each poll */
    uv_idle_t shm_kick;          /* one turn without sleeping */
    uv_timer_t due;              /* later work: receipts that are due, and
                                    what could not be queued for lack of
                                    memory (retried) */
    size_t receipts_owed;        /* connections that read events since
                                    their last receipt */
    uint64_t poll_until;         /* uv_hrtime() at which it stops */
    int nopen;                   /* handles of the endpoint (and of its
                                    callback calls) not yet closed */
    int nconns_open;             /* connections not yet freed */
    uint8_t stop_state;          /* enum stop_state */
    uv_timer_t stop_timer;       /* the linger's deadline; then the last
                                    handle, whose close ends the stop */
    lahja_link_t stop_tasks;     /* tasks in lahja_endpoint_stop */
    lahja_link_t stop_cbs;       /* struct stop_cb: lahja_endpoint_stop_cb */
    lahja_link_t ops;            /* callback calls not yet called back */
    char path[LAHJA_PATH_MAX + 1];
    struct dialer *dialer;       /* kept peers and background connects
                                    (dial.c); NULL until the first */
    struct natsnet *nats;        /* the NATS cluster joined (nats.c); NULL
                                    until lahja_join_nats */
    struct joiner *joiner;       /* the directory joined (join.c); NULL
                                    until lahja_join */
    lahja_link_t conns;
    lahja_link_t dirty;          /* connections with queued output */
    lahja_strmap_t types;        /* type or pattern -> struct type_entry */
    lahja_link_t patterns;       /* the type entries of patterns */
    int pattern_walk;            /* dispatches walking ep->patterns: a
                                    pattern entry left empty meanwhile is
                                    dropped after the last */
    uint32_t types_gen;          /* bumped when an entry comes or goes */
    int subs_dirty;              /* our set changed: send SUBS */
    int subs_retry;              /* a connection's SUBS is due (subs_due) */
    lahja_link_t pending;        /* every pending request, */
    struct pending **pindex;     /* and by id: open addressing */
    size_t pindex_cap, pindex_n;
    lahja_link_t owned;          /* subscriptions and streams not freed */
    uint64_t next_id;
    int busy;                    /* tasks inside lahja_ep_wait */
    struct lahja_waitq conn_changed;
    struct lahja_waitq subs_changed; /* also on connection changes */
    struct out_item *free_items; /* recycled, chained through link.next */
    struct out_item *free_chunks; /* recycled chunks, with their buffers */
    size_t nfree_chunks;
    size_t chunks_live, chunks_peak; /* chunk buffers allocated (cached
                                    ones too), and their most yet */
    uint8_t *scratch;            /* decompression buffer */
    size_t scratch_cap;
    char blocked[LAHJA_NAME_MAX + 1];
    char errmsg[LAHJA_ERRMSG_MAX]; /* lahja_endpoint_last_error */
    uint32_t errseq;             /* bumped when errmsg is written */
    lahja_strmap_t totals;       /* peer name -> struct peer_totals */
    struct peer_totals all;      /* every peer, connections ended */
    struct lahja_waitq delivered; /* receipts came, or a connection ended */
    lahja_link_t delivery_waits; /* lahja_wait_until_delivered calls */
    lahja_link_t parked;         /* struct parked: lahja_connect calls whose
                                    connection the peer declined for its own */
    uv_pipe_t reject;            /* accepts a connection when no memory is
                                    left to make one, to close it */
    uint8_t reject_busy, accept_stalled;
    lahja_conn_config_t service_serve; /* lahja_endpoint_service's config */
    /* Posting from other threads (post.c): post_lock guards the queue
     * and post_closed; the rest is the endpoint thread's. */
    pthread_mutex_t post_lock;
    pthread_cond_t post_room;        /* posters waiting for room */
    struct post_item *post_head, *post_tail;
    size_t post_len;
    uint8_t post_closed;             /* not started, or stopping */
    uint8_t post_blocked;            /* a posted broadcast waits: the
                                        queue is not taken meanwhile */
    uv_async_t post_async;
    int service_serves;
    /* Statistics (B36, stats.c). */
    uint64_t stream_drops;       /* events every stream dropped, closed ones too */
    uint64_t dispatched;         /* events handed to local consumers */
    uint32_t keep_room;          /* events the ring being read may still
                                    hand to streams and waiters in this
                                    turn (shm.c, rx_drain) */
    uint64_t started_ms;         /* the Unix time (ms) of lahja_endpoint_start */
};

/* The close callback of the endpoint's own handles (server, flusher,
 * poller, reject pipe): stop waits for the last. */
void lahja_ep_handle_closed(uv_handle_t *h);
/* A handle closed or a task left: the stop ends if it was the last. */
void lahja_ep_maybe_closed(lahja_endpoint_t *ep);
/* Receipts came or a connection ended: a lingering stop looks again. */
void lahja_ep_linger_check(lahja_endpoint_t *ep);

/* Logs through the application's hook, printf-style. */
void lahja_bus_log(lahja_endpoint_t *ep, lahja_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Notes what a failing call saw (lahja_endpoint_last_error). */
void lahja_ep_error(lahja_endpoint_t *ep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Something arrived: with busy_poll_us set, the loop polls instead of
 * sleeping for that long. */
void lahja_ep_busy_poll(lahja_endpoint_t *ep);

/* LAHJA_EWRONGTHREAD, LAHJA_ELIFECYCLE (not running), or 0. */
int lahja_ep_check(const lahja_endpoint_t *ep);
/* The same, and LAHJA_ENOTASK outside a task: for the suspending calls. */
int lahja_ep_check_task(const lahja_endpoint_t *ep);

/*
 * Every wait of the bus's suspending calls: lahja_cond_wait, counted, so
 * that stop returns only once every task it woke has left the endpoint's
 * calls, and freeing the endpoint right after stop is safe.
 */
int lahja_ep_wait(lahja_endpoint_t *ep, struct lahja_waitq *q, lahja_time_t deadline);

/* conn.c */
/* Accepts the server's pending connection, within the limits (B31); a
 * connection refused, or one that cannot be allocated, is closed at once
 * and logged.  Never leaves the listener without an accept. */
void lahja_conn_accept(lahja_endpoint_t *ep);
struct conn *lahja_conn_connect(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg,
                                struct connect_op *op);
/* Ends a connection; a lahja_connect waiting on it fails with `err`. */
void lahja_conn_close(struct conn *c, int err, const char *why);
/* Forgets the lahja_connect call `op` wherever it waits (it gave up). */
void lahja_conn_forget_op(lahja_endpoint_t *ep, struct connect_op *op);
/* What an outbound connection not yet up has found where it connects
 * ("no socket file there: ..."), for the reason it is given up with. */
const char *lahja_conn_seen(const struct conn *c);
/* Fails every lahja_connect call waiting for a peer's own connection. */
void lahja_conn_fail_parked(lahja_endpoint_t *ep, int err);
/* The connection to `name` that is not closing, or NULL. */
struct conn *lahja_conn_find(const lahja_endpoint_t *ep, const char *name);
/*
 * Queueing one event for several peers, all or nothing: reserve takes
 * the memory and the type binding for one connection (-ENOMEM, -EINVAL:
 * nothing taken); commit queues it (cannot fail); cancel gives a
 * reservation back (in the reverse order of the reservations of one
 * event).
 */
int lahja_conn_reserve(struct conn *c, const lahja_event_t *ev, uint8_t flags,
                       struct conn_slot *slot);
void lahja_conn_commit(struct conn *c, lahja_event_t *ev, struct conn_slot *slot, uint8_t flags,
                       uint64_t id);
void lahja_conn_cancel(struct conn *c, const lahja_event_t *ev, struct conn_slot *slot);
/*
 * Queues an EVENT frame (type id tid[i], flags 0, REQUEST or RESPONSE
 * with its id, the payload copied) on each of the n connections v, ready
 * peers whose type ids are bound: on all of them, or on none and -ENOMEM.
 */
int lahja_conn_put_small(struct conn *const *v, const uint32_t *tid, size_t n, uint8_t flags,
                         uint64_t id, const void *payload, size_t len);
/*
 * lahja_conn_put_small's common case inline, in two steps so that a
 * frame goes to every peer or to none: whether c takes a frame of `need`
 * bytes without flags in its open window now (the connection already due
 * to be flushed, and this frame not the one that starts a write); then
 * writing it there.
 */
static inline __attribute__((always_inline)) int lahja_conn_plain_ok(const struct conn *c,
                                                                    size_t need)
{
    return c->win_left >= need && lahja_list_empty(&c->outq) && c->dirty
           && c->unflushed + need < c->flush_at;
}

/* A frame of `need` bytes, `len` of them payload, was written at c->win:
 * the window moves past it, and it counts as written (what the socket
 * takes counts the same way). */
static inline __attribute__((always_inline)) void lahja_conn_win_took(struct conn *c, size_t need,
                                                                     size_t len)
{
    c->win += need;
    c->win_left -= need;
    c->win_used += need;
    c->tx_bytes += need;
    c->tx_events++;
    c->tx_payload += len;
}

/* Whether the CPU has PREFETCHW (x86; found by lahja_shm_init). */
extern int lahja_cpu_prefetchw;

/*
 * How far ahead of where it writes a ring's writer asks for the ring's
 * lines, for writing (always within its window: room the reader is done
 * with).  The reader last read those lines, from its own core; a store
 * into one waits until the line is this core's again, and the stores of
 * a stream wait for them one after the other.  Asked for ahead, they
 * come together.  64-byte events, one process per CPU, at a time when
 * this machine's cores were slow to hand lines over: a third to three
 * quarters more per second; at other times no change.  Asked for before
 * the frame's own stores in lahja_conn_plain_put: after them it waits
 * behind them (asked for after them, 10 % fewer at those times).
 */
#define LAHJA_WRITE_AHEAD 4096

static inline __attribute__((always_inline)) void lahja_prefetch_write(const uint8_t *p)
{
#if defined(__x86_64__) || defined(__i386__)
    if (lahja_cpu_prefetchw)
        __asm__ __volatile__("prefetchw %0" : : "m"(*(const volatile uint8_t *)p));
#else
    __builtin_prefetch(p, 1);
#endif
}

static inline __attribute__((always_inline)) void lahja_conn_plain_put(struct conn *c,
                                                                      uint32_t tid,
                                                                      const void *payload,
                                                                      size_t len)
{
    if (c->win_left > LAHJA_WRITE_AHEAD)
        lahja_prefetch_write(c->win + LAHJA_WRITE_AHEAD);
    lahja_wire_plain_prefix(c->win, tid, (uint32_t)len);
    memcpy(c->win + LAHJA_WIRE_PLAIN_PREFIX, payload, len);
    c->unflushed += LAHJA_WIRE_PLAIN_PREFIX + len; /* below flush_at: lahja_conn_plain_ok */
    lahja_conn_win_took(c, LAHJA_WIRE_PLAIN_PREFIX + len, len);
}
/* Non-zero while a connection's output is not all confirmed (stop's linger). */
int lahja_conn_unconfirmed(const struct conn *c);

/* Payloads lent to a peer cost its writer no queue memory, only pool
 * space: those it has not read yet count apart, against this many times
 * the high-water mark. */
#define LAHJA_LENT_SCALE 4

/* What may wait in the queue of a connection that writes into a ring
 * (shm.c), at most: the ring is its buffer, as the kernel's is a
 * socket's, and what waits behind a full ring is copied twice (into the
 * queue, then into the ring) and read back cold.  One CPU, 64-byte
 * events: half as many again per second as with 1 MiB queued there. */
#define LAHJA_RING_QUEUE ((size_t)64 << 10)

/* Whether c is over its high-water mark (hard = 0) or its hard limit:
 * its queue (against queue_mark: high_water, or LAHJA_RING_QUEUE behind
 * a ring), or what it was lent and has not read (against
 * LAHJA_LENT_SCALE x high_water, or against hard_limit). */
static inline int lahja_conn_over(const struct conn *c, int hard)
{
    const lahja_endpoint_options_t *o = &c->ep->opts;
    if (hard)
        return c->queued > o->hard_limit || c->lent_bytes > o->hard_limit;
    return c->queued > c->queue_mark || c->lent_bytes > LAHJA_LENT_SCALE * o->high_water;
}
void lahja_conn_send_subs(struct conn *c);
/* Sends every connection's receipt that is due now, and writes it. */
void lahja_conn_send_receipts(lahja_endpoint_t *ep);
void lahja_ep_flush(lahja_endpoint_t *ep);
/* Our subscription set changed: every peer gets a SUBS this loop turn. */
void lahja_ep_subs_dirty(lahja_endpoint_t *ep);
/* Queues the pending SUBS for every peer now, ahead of what follows. */
void lahja_ep_send_subs(lahja_endpoint_t *ep);

/* post.c */
void lahja_post_init(lahja_endpoint_t *ep);
void lahja_post_start(lahja_endpoint_t *ep);
/* Refuses posts from now on and carries out what was posted. */
void lahja_post_stop(lahja_endpoint_t *ep);
void lahja_post_free(lahja_endpoint_t *ep);

/* broadcast.c */
/* Broadcasts ev at once, or returns LAHJA_PENDING (nothing done) when a
 * receiving peer is over its high-water mark; else lahja_broadcast's
 * errors. */
int lahja_broadcast_try(lahja_endpoint_t *ep, lahja_event_t *ev,
                        const lahja_broadcast_config_t *cfg);

/* delivery.c */
/* A connection ends: what it sent and the peer did not confirm is lost
 * and counted (conn_end's line says it); the delivery waits that counted
 * on it learn it. */
void lahja_delivery_conn_ended(lahja_endpoint_t *ep, struct conn *c);
/* Receipts came for c: the delivery waits look again. */
void lahja_delivery_progress(lahja_endpoint_t *ep);
/* The totals of peer `name`, made if new (at the handshake, so that
 * ending a connection never allocates); NULL on -ENOMEM. */
struct peer_totals *lahja_delivery_totals(lahja_endpoint_t *ep, const lahja_name_t *name);
void lahja_delivery_free(lahja_endpoint_t *ep);

/* stats.c */
/* At start: notes the time, and subscribes the built-in stats request
 * unless options.no_stats (without memory for it, the endpoint runs
 * without, and says so at WARNING). */
void lahja_stats_start(lahja_endpoint_t *ep);
/* Whether `type` is one of the library's own ("lahja." and on): not
 * listed among an application's or a peer's subscriptions. */
int lahja_type_reserved(const char *type);

/* consume.c */
void lahja_dispatch(lahja_endpoint_t *ep, lahja_event_t *ev);
/* The consumers of type[0..len) (hash: its lahja_strmap_hash), or NULL. */
struct type_entry *lahja_type_find(const lahja_endpoint_t *ep, const char *type, size_t len,
                                   uint64_t hash);
/* Dispatches ev to the consumers of one entry that take its origin. */
void lahja_dispatch_one(lahja_endpoint_t *ep, struct type_entry *te, lahja_event_t *ev);
/* After a handler of te returned rc: logs a failure, sweeps what it
 * removed (lahja_dispatch_solo's slow end). */
void lahja_dispatch_after(lahja_endpoint_t *ep, struct type_entry *te, int rc);
/* lahja_dispatch_one inline, for an entry whose one consumer is a handler
 * for every origin (te->solo): the path of every small event read. */
static inline void lahja_dispatch_solo(lahja_endpoint_t *ep, struct type_entry *te,
                                       lahja_event_t *ev)
{
    struct lahja_subscription *s = te->solo;
    if (s == NULL) {
        lahja_dispatch_one(ep, te, ev);
        return;
    }
    ep->dispatched++;
    te->dispatching++;
    int rc = s->fn(ep, ev, s->user);
    if (--te->dispatching != 0 || rc != 0 || te->ndead > 0 || te->n == 0)
        lahja_dispatch_after(ep, te, rc);
}
/* Dispatches ev to te's consumers (te may be NULL) and those of every
 * pattern it matches. */
void lahja_dispatch_patterns(lahja_endpoint_t *ep, struct type_entry *te, lahja_event_t *ev);

/* Dispatches ev to te's consumers (te may be NULL: nobody), and with
 * patterns subscribed to theirs.  Inline: without patterns, the path of
 * every received event is the one call it was before them. */
static inline void lahja_dispatch_entry(lahja_endpoint_t *ep, struct type_entry *te,
                                        lahja_event_t *ev)
{
    if (ep->patterns.next != &ep->patterns)
        lahja_dispatch_patterns(ep, te, ev);
    else if (te != NULL && te->n > 0)
        lahja_dispatch_solo(ep, te, ev);
}
void lahja_deliver_response(lahja_endpoint_t *ep, lahja_event_t *ev);
int lahja_has_consumers(const lahja_endpoint_t *ep, const char *type);
/* The same for ev's type, hashed. */
int lahja_event_has_consumers(const lahja_endpoint_t *ep, const lahja_event_t *ev);
/* Whether an event of type[0..len) from `origin` reaches a consumer
 * (exact or pattern) of this endpoint. */
int lahja_consumers_want(const lahja_endpoint_t *ep, struct type_entry *te, const char *type,
                         size_t len, const char *origin);
/* The origins te's announcement is limited to: 0 if it is not (a
 * consumer takes every origin, or they are more than the wire can name),
 * else their number, the names in out[0..max) (max: the sum of its
 * consumers' norigins, lahja_type_origins_max). */
size_t lahja_type_origins(const struct type_entry *te, const char **out, size_t max);
size_t lahja_type_origins_max(const struct type_entry *te);
/* Whether peer c subscribes to type[0..len) (exact or pattern). */
int lahja_peer_matches(const struct conn *c, const char *type, size_t len);
/* Whether te has consumers that keep events (streams, waiters). */
int lahja_type_keeps(const struct type_entry *te);
void lahja_consumers_stop(lahja_endpoint_t *ep);
void lahja_consumers_free(lahja_endpoint_t *ep);
void lahja_pending_peer_gone(lahja_endpoint_t *ep, struct conn *c);
/* Registers a pending request (its id set); -ENOMEM. */
int lahja_pending_add(lahja_endpoint_t *ep, struct pending *p);
void lahja_pending_remove(lahja_endpoint_t *ep, struct pending *p);
struct pending *lahja_pending_find(const lahja_endpoint_t *ep, uint64_t id);

/* Connection or subscription sets changed: wake the B21 waiters. */
void lahja_ep_changed(lahja_endpoint_t *ep, int connections);
/* Something that decides where events go changed (a connection's state,
 * a peer's or our own subscriptions): remembered routes are void. */
static inline void lahja_route_changed(lahja_endpoint_t *ep)
{
    ep->route_gen++;
}

/* dial.c: kept peers (B33) and background connects */
/* An outbound connection nobody waits for (background: CONN_NOWAIT or
 * CONN_KEPT); its end is reported to lahja_dial_conn_ended like any
 * other's, possibly before this returns.  -ENOMEM: none was made. */
int lahja_conn_dial(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg, uint8_t background);
/* c became READY (conn.c, before its waiters hear of it). */
void lahja_dial_conn_ready(struct conn *c);
/* c ended, already out of ep->conns: `was_up` if it had been READY,
 * `err` why (0: another connection to the peer took its place).  Never
 * opens a connection itself: a retry is scheduled on the dialer's timer. */
void lahja_dial_conn_ended(struct conn *c, int was_up, int err);
/* Stop: forgets every kept peer and background connect, closes the
 * dialer's timer (counted in ep->nopen). */
void lahja_dial_stop(lahja_endpoint_t *ep);

/* join.c: discovery (B35) */
/* Stop: stops watching the joined directory and closes the joiner's two
 * handles (counted in ep->nopen); the names it kept go with the dialer. */
void lahja_join_stop(lahja_endpoint_t *ep);

/* nats.c: other hosts (lahja_join_nats) */
/* Stop, lingering: no more connections are opened or accepted. */
void lahja_nats_stop_begin(lahja_endpoint_t *ep);
/* Stop, the connections closed: says goodbye and closes the NATS
 * connection and the handles (counted in ep->nopen). */
void lahja_nats_stop(lahja_endpoint_t *ep);
/* Tests and fuzzing: joins as instance `uid` on `host` without NATS (what
 * the endpoint would publish goes to `sink`, if not NULL, and no
 * further); inject hands it a message as if it came on its own subject
 * (presence: on the presence subject); tick runs what a heartbeat does. */
typedef void (*lahja_nats_sink_fn)(void *user, const char *subject, const uint8_t *msg,
                                   size_t len);
int lahja_nats_join_offline(lahja_endpoint_t *ep, const char *host, uint64_t uid,
                            lahja_nats_sink_fn sink, void *user);
void lahja_nats_inject(lahja_endpoint_t *ep, int presence, const void *msg, size_t len);
void lahja_nats_tick(lahja_endpoint_t *ep);

#pragma GCC visibility pop

#endif /* LAHJA_BUS_ENDPOINT_H */
