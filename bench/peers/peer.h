/*
 * peer.h - what a transport provides to the peer benchmark driver.
 *
 * bench/run.sh measures lahja beside other ways of moving messages
 * between processes on one machine.  Each of those peers is one file
 * (peer_uds.c, peer_zmq.c, peer_nng.c, peer_nats.c, peer_iceoryx.c) that
 * fills in a peer_ops_t; peer_driver.c runs the same methodology over all
 * of them, the one bench/bench_bus.c follows for lahja.
 *
 * Every message starts with a 16-byte header, the rest is padding:
 *   [0..3]  "EVT:"   a topic prefix, for the transports that filter on one
 *   [4]     kind: PEER_HELLO, PEER_DATA or PEER_END
 *   [8..15] sequence number (uint64_t, host order)
 * Hello and end messages are only the header; data messages are the
 * size asked for.
 *
 * There is no close: a process exits once it has done its part and the
 * kernel closes its sockets.  Closing is not what is measured, and some
 * libraries' close can stall (nng 1.5's, waiting on its reaper thread).
 */
#ifndef LAHJA_BENCH_PEER_H
#define LAHJA_BENCH_PEER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PEER_HDR 16
#define PEER_HELLO 'H'
#define PEER_DATA 'D'
#define PEER_END 'E'

/* Extra room in every receive buffer beyond the payload size, so that a
 * transport's own framing or a longer message never truncates. */
#define PEER_SLACK 4096

typedef struct {
    const char *name;

    /* Fan-out.  pub_open binds/listens at addr and returns once it can
     * send (for some transports only after every subscriber connected);
     * NULL on failure.  pub_send returns 0 when the message was accepted;
     * data messages may block on back-pressure, hello and end messages
     * should not.  pub_flush (may be NULL) pushes out anything buffered. */
    void *(*pub_open)(const char *addr, int nsubs);
    int (*pub_send)(void *h, const void *buf, size_t len);
    void (*pub_flush)(void *h);

    /* sub_open connects subscriber idx (0-based) to addr.  sub_recv
     * returns the message length, 0 after timeout_ms without one, < 0 on
     * an error or when the publisher went away. */
    void *(*sub_open)(const char *addr, int idx);
    ssize_t (*sub_recv)(void *h, void *buf, size_t cap, int timeout_ms);

    /* Request/response.  rep_serve_one receives one request, echoes it
     * and returns its length (< 0 on error).  req_roundtrip sends one
     * request and waits for its reply; it returns the reply's length. */
    void *(*rep_open)(const char *addr);
    ssize_t (*rep_serve_one)(void *h, void *buf, size_t cap);
    void *(*req_open)(const char *addr);
    ssize_t (*req_roundtrip)(void *h, const void *req, size_t len, void *reply, size_t cap);
} peer_ops_t;

/* Defined by the transport's file. */
extern const peer_ops_t peer_ops;

/* Helpers from peer_driver.c. */
uint64_t peer_now_ns(void);
/* The environment variable key, or dflt when unset or empty. */
const char *peer_env(const char *key, const char *dflt);
int peer_env_int(const char *key, int dflt);
/* How long a transport keeps retrying to connect to a peer that is still
 * starting, in milliseconds. */
#define PEER_CONNECT_MS 20000

#endif
