/*
 * transport.h - how a connection's bytes move.
 *
 * A connection (struct conn, conn.c) is the same whatever carries it:
 * the handshake, the framing, the subscription sets, the write queue
 * with its high-water mark and the delivery receipts are all conn.c's
 * and wire/'s.  A transport only moves bytes, in order, between the two
 * ends, and says when they were taken, when more arrived and when the
 * other end went.  Each one is a table of these operations and a file of
 * its own:
 *   unix.c  Unix stream sockets, between the processes of one host;
 *   shm.c   rings in shared memory, between the endpoints of one host
 *           that both read them (a Unix socket until both sides agree);
 *   nats.c  NATS subjects, to the endpoints of other hosts.
 *
 * Every operation runs on the endpoint's thread.
 */
#ifndef LAHJA_BUS_TRANSPORT_H
#define LAHJA_BUS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "lahja/bus.h"

#pragma GCC visibility push(hidden)

struct conn;
struct lahja_lent;
typedef struct lahja_endpoint lahja_endpoint_t;

/* What poll says of a connection (conn_transport.poll). */
#define CONN_POLL_IN 1  /* bytes wait to be read */
#define CONN_POLL_HUP 2 /* the peer has closed its end: its process is gone */

struct conn_transport {
    const char *name;
    /* HELLO feature bits (LAHJA_WIRE_FEAT_*) it adds to ours. */
    uint32_t features;
    /* Writes what it takes of bufs now: the bytes taken (possibly 0), or
     * a libuv error (UV_EAGAIN: nothing taken, try write). */
    int (*try_write)(struct conn *c, const uv_buf_t *bufs, unsigned n);
    /* Writing in place (NULL where the transport cannot): reserve gives
     * the room, in one piece, where the next bytes go (*room bytes, at
     * least min), when it has that much now and no write waits (else
     * NULL); commit takes the first len bytes written there, after
     * whatever came before; publish hands what was committed to the peer.
     * Bytes committed and not yet published are published by the next
     * try_write or write too, which write where the room was: it is
     * no longer the caller's. */
    uint8_t *(*reserve)(struct conn *c, size_t min, size_t *room);
    void (*commit)(struct conn *c, size_t len);
    void (*publish)(struct conn *c);
    /* Takes bufs to write whole, later (their memory stays valid until
     * then); lahja_conn_written(c, status) once they are written or have
     * failed.  One at a time.  0, or a libuv error (nothing taken). */
    int (*write)(struct conn *c, const uv_buf_t *bufs, unsigned n);
    /* From now on, hands what arrives to lahja_conn_room and
     * lahja_conn_read.  0 or a libuv error. */
    int (*read_start)(struct conn *c);
    /* Hands over, now, what has arrived and not yet been handed: the
     * peer is gone and another connection takes its place. */
    void (*read_now)(struct conn *c);
    /* CONN_POLL_* flags, now. */
    int (*poll)(struct conn *c);
    /* Whether the peer may use this connection (B27), and so who it is
     * (c->peer_pid).  0 with the reason in why[0..len) refuses it. */
    int (*allowed)(struct conn *c, char *why, size_t len);
    /* The connection ends: the transport lets go of it, and calls
     * lahja_conn_closed(c) once its own part is closed (possibly before
     * returning).  No operation is called after this one. */
    void (*close)(struct conn *c);
    /* Lent payloads (shm.c), NULL where the transport has none.
     * lendable: whether ev's payload goes to c as a reference (EVENT flag
     * LENT), the same answer for as long as ev is being queued; lend: it
     * does, counted, its reference written; lent_in: the payload a
     * received reference stands for, held until free_fn(payload, user)
     * (-EPROTO: a bad reference); released: the peer gives back what was
     * lent at off (-EPROTO: it was not). */
    int (*lendable)(struct conn *c, const lahja_event_t *ev);
    void (*lend)(struct conn *c, const lahja_event_t *ev, uint8_t *ref);
    int (*lent_in)(struct conn *c, const uint8_t *ref, const uint8_t **payload, size_t *len,
                   lahja_free_fn *free_fn, void **user);
    int (*released)(struct conn *c, uint64_t off);
};

/* The Unix socket of a connection (unix.c). */
struct unix_link {
    uv_pipe_t pipe;
    uv_write_t write_req;
    struct shm_link *shm;        /* lahja_shm_transport's rings */
};

/* ------------------------------------------------ what conn.c gives them */

/* A new connection carried by t (its transport part still to be set up
 * by the caller), in ep->conns; NULL without memory. */
struct conn *lahja_conn_new(lahja_endpoint_t *ep, const struct conn_transport *t);
/* The transport's part of c is closed (see close). */
void lahja_conn_closed(struct conn *c);
/* The transport is ready to carry c: checks the peer (allowed), sends our
 * HELLO and starts reading, under the handshake deadline.  On failure c
 * is ended. */
void lahja_conn_start(struct conn *c);
/* Where the next bytes that arrive go: *buf is room in c's read buffer
 * (len 0 without memory: the transport reports UV_ENOBUFS). */
void lahja_conn_room(struct conn *c, uv_buf_t *buf);
/* nread bytes arrived in the room lahja_conn_room gave (nread < 0: the
 * stream ended, UV_EOF, or failed, a libuv error).  c may end here. */
void lahja_conn_read(struct conn *c, ssize_t nread);
/*
 * Reads, in place, the small events (no flags but REQUEST or RESPONSE:
 * lahja_wire_rx_small) at the start of buf[0..len)
 * (bytes of the stream that follow what c already read): returns the
 * bytes they took, their handlers done with them; the transport may then
 * reuse that memory.  Anything else, and the rest, comes through
 * lahja_conn_room and lahja_conn_read.  0 while c holds part of a frame,
 * or before the handshake is done.  Stops once ep->keep_room events
 * went to streams and waiters.  c may end here.
 */
size_t lahja_conn_read_small(struct conn *c, const uint8_t *buf, size_t len);
/* The write handed to transport.write is done (status < 0: it failed,
 * UV_ECANCELED: dropped because the connection ends). */
void lahja_conn_written(struct conn *c, int status);
/* (A transport ends a connection with lahja_conn_close, endpoint.h.) */
/* Why a new inbound connection would go over a limit (B31), written to
 * why[0..len), or NULL. */
const char *lahja_conn_over_limits(lahja_endpoint_t *ep, char *why, size_t len);

/* ---------------------------------------------------------- the transports */

extern const struct conn_transport lahja_unix_transport;
extern const struct conn_transport lahja_shm_transport;
/* A new connection between two endpoints of this host: the shared-memory
 * transport when the endpoint uses it and its ring could be made, else
 * the Unix one; its socket handle not yet open.  NULL without memory. */
struct conn *lahja_local_conn_new(lahja_endpoint_t *ep);
/* The endpoint's part of the shared-memory transport: set up at start,
 * closed at stop; kick keeps the loop from sleeping for one turn; active
 * counts the connections using rings (delta +1 or -1). */
void lahja_shm_init(lahja_endpoint_t *ep);
void lahja_shm_stop(lahja_endpoint_t *ep);
void lahja_shm_kick(lahja_endpoint_t *ep);
void lahja_shm_active(lahja_endpoint_t *ep, int delta);
/* Blocks of the endpoint's pool not yet free (for tests). */
unsigned lahja_shm_pool_live(lahja_endpoint_t *ep);
/* The endpoint is freed: its pool goes, once no loaned event holds it. */
void lahja_shm_free(lahja_endpoint_t *ep);
/* Before ev is queued for conns[0..n): if it is large and some of them
 * take lent payloads, its bytes go once into the pool (ev->lent). */
void lahja_lend_prepare(lahja_endpoint_t *ep, lahja_event_t *ev, struct conn *const *conns,
                        size_t n);
/* An event that held a block of the pool lets go of it (any thread). */
void lahja_lent_drop(struct lahja_lent *b);
/* conn.c: queues a frame on c and writes it now; 0 or -ENOMEM. */
int lahja_conn_send_frame(struct conn *c, const uint8_t *frame, size_t len);
/* Serves ep at cfg's path: a listening socket (0600; the default base
 * directory made 0700 and ours; a stale socket there replaced, a live
 * one not: -EADDRINUSE), its connections accepted (lahja_conn_accept). */
int lahja_unix_listen(lahja_endpoint_t *ep, const lahja_conn_config_t *cfg);
/* Stops serving: the listening socket closes, its file goes. */
void lahja_unix_unlisten(lahja_endpoint_t *ep);
/* c was made for the Unix transport: its socket handle (not yet open). */
void lahja_unix_init(struct conn *c);
/* Connects outbound c to its path (c->path), retrying while the socket
 * does not exist yet (unless c is a kept peer's one attempt). */
void lahja_unix_connect(struct conn *c);

#pragma GCC visibility pop

#endif /* LAHJA_BUS_TRANSPORT_H */
