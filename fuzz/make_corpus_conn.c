/*
 * Writes the seed corpus of fuzz_conn into a directory:
 *     make_corpus_conn fuzz/corpus/conn
 * Each file is a program in fuzz_conn's language (fuzz_conn.h), so that
 * the fuzzer starts from conversations that get past the handshake and
 * reach every kind of frame, the endpoint's own calls, its tasks and
 * the ends of connections; a few break one rule each.  Rerun it when the
 * language or the protocol changes.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fuzz_conn.h"

struct prog {
    uint8_t b[4096];
    size_t n;
};

static void u8(struct prog *p, unsigned v)
{
    if (p->n < sizeof p->b)
        p->b[p->n++] = (uint8_t)v;
}

static void u16(struct prog *p, unsigned v)
{
    u8(p, v & 0xff);
    u8(p, v >> 8);
}

static void u32(struct prog *p, uint32_t v)
{
    u16(p, v & 0xffff);
    u16(p, v >> 16);
}

/* Indexes into the dictionaries of fuzz_conn.h. */
enum { ALPHA, BETA, GAMMA, SELF, SHORT, SPACE, LONG_NAME, DELTA };
enum { T_A, T_B, T_PING, T_PONG, T_BLOCK, T_PEER, T_UTF8, T_LONG };
/* conn_sizes[] */
enum { Z0, Z1, Z2, Z7, Z12, Z64, Z100, Z255, Z500, Z1000, Z2047, Z2048, Z2049, Z4095, Z4096,
       Z5000, Z8191, Z8192, Z16K, Z20000, Z30000, Z40000, Z60000, Z64K_1, Z64K, Z64K1, Z128K,
       Z200K, Z300K, Z1M_24, Z1M, Z1M1 };
/* conn_clock_steps[] */
enum { MS1, MS10, MS500, MS1999, MS2001, MS5000, MS20000, MS_FOREVER };

#define LZ4 1u
#define RECEIPTS 2u
#define PATTERNS 4u
#define SHM 8u
#define F_REQUEST 1u
#define F_RESPONSE 2u
#define F_LZ4 4u
#define F_UNBOUND 0x40u
#define F_RAW 0x80u

/* Behaviour bits of a handler (fuzz_conn.h, SUBSCRIBE). */
#define B_RESPOND 1u
#define B_KEEP 2u
#define B_BROADCAST 4u
#define B_CANCEL_SELF 8u
#define B_CANCEL_OTHER 16u
#define B_FAIL 32u
#define B_TYPE(t) ((unsigned)(t) << 6)

static void open_(struct prog *p, unsigned c)
{
    u8(p, OP_OPEN);
    u8(p, c);
}

/* Client c connects from another process. */
static void open_other(struct prog *p, unsigned c)
{
    u8(p, OP_OPEN);
    u8(p, c | 4);
}

static void hello_mode(struct prog *p, unsigned c, unsigned name, unsigned features,
                       unsigned max, unsigned mode)
{
    u8(p, OP_HELLO);
    u8(p, c);
    u8(p, name);
    u8(p, features);
    u8(p, max);
    u8(p, mode);
}

static void hello(struct prog *p, unsigned c, unsigned name, unsigned features)
{
    hello_mode(p, c, name, features, 0, 0);
}

static void hello_raw_name(struct prog *p, unsigned c, const char *name, size_t len)
{
    u8(p, OP_HELLO);
    u8(p, c);
    u8(p, RAW_SPEC);
    u8(p, (unsigned)len);
    for (size_t i = 0; i < len; i++)
        u8(p, (uint8_t)name[i]);
    u8(p, LZ4);
    u8(p, 0);
    u8(p, 0);
}

/* A SUBS with the selector `sel` (fuzz_conn.h: bit 6 entries, 5 `*`,
 * 4 limited to the endpoint, 3 to another name). */
static void subs_sel(struct prog *p, unsigned c, unsigned sel, const unsigned *types, unsigned n)
{
    u8(p, OP_SUBS);
    u8(p, c);
    u8(p, sel);
    u8(p, n);
    for (unsigned i = 0; i < n; i++)
        u8(p, types[i]);
}

static void subs(struct prog *p, unsigned c, const unsigned *types, unsigned n)
{
    u8(p, OP_SUBS);
    u8(p, c);
    u8(p, 0);
    u8(p, n);
    for (unsigned i = 0; i < n; i++)
        u8(p, types[i]);
}

static void subs1(struct prog *p, unsigned c, unsigned type)
{
    subs(p, c, &type, 1);
}

static void ack(struct prog *p, unsigned c)
{
    u8(p, OP_ACK);
    u8(p, c);
    u8(p, 0);
}

static void event(struct prog *p, unsigned c, unsigned type, unsigned flags, unsigned idsel,
                  unsigned size, unsigned seed, unsigned variant)
{
    u8(p, OP_EVENT);
    u8(p, c);
    u8(p, type);
    u8(p, flags);
    u8(p, idsel);
    u8(p, size);
    u8(p, seed);
    u8(p, variant);
}

static void raw(struct prog *p, unsigned c, const void *bytes, size_t n)
{
    u8(p, OP_RAW);
    u8(p, c);
    u8(p, (unsigned)n);
    for (size_t i = 0; i < n; i++)
        u8(p, ((const uint8_t *)bytes)[i]);
}

static void send_(struct prog *p, unsigned c, unsigned k)
{
    u8(p, OP_SEND);
    u8(p, c);
    u16(p, k);
}

static void read_(struct prog *p, unsigned c)
{
    u8(p, OP_READ);
    u8(p, c);
}

static void shut(struct prog *p, unsigned c, unsigned how)
{
    u8(p, OP_SHUT);
    u8(p, c);
    u8(p, how);
}

static void run(struct prog *p, unsigned n)
{
    u8(p, OP_RUN);
    u8(p, n);
}

static void pump(struct prog *p)
{
    u8(p, OP_PUMP);
}

static void subscribe(struct prog *p, unsigned type, unsigned behaviour)
{
    u8(p, OP_SUBSCRIBE);
    u8(p, type);
    u8(p, behaviour);
}

static void unsubscribe(struct prog *p, unsigned slot)
{
    u8(p, OP_UNSUBSCRIBE);
    u8(p, slot);
}

static void broadcast(struct prog *p, unsigned type, unsigned size, unsigned seed, unsigned mode)
{
    u8(p, OP_BROADCAST);
    u8(p, type);
    u8(p, size);
    u8(p, seed);
    u8(p, mode);
}

static void respond(struct prog *p, unsigned slot, unsigned type, unsigned size, unsigned seed)
{
    u8(p, OP_RESPOND);
    u8(p, slot);
    u8(p, type);
    u8(p, size);
    u8(p, seed);
}

/* TASK kind bits: the callback form; with it, cancel slot `type`. */
#define CB 0x80u
#define CANCEL 0x40u

static void task(struct prog *p, unsigned kind, unsigned type, unsigned resp, unsigned size,
                 unsigned seed, unsigned ms)
{
    u8(p, OP_TASK);
    u8(p, kind);
    u8(p, type);
    u8(p, resp);
    u8(p, size);
    u8(p, seed);
    u8(p, ms);
}

static void clock_(struct prog *p, unsigned step)
{
    u8(p, OP_CLOCK);
    u8(p, step);
}

static void stream(struct prog *p, unsigned slot, unsigned type, unsigned mode)
{
    u8(p, OP_STREAM);
    u8(p, slot);
    u8(p, type);
    u8(p, mode);
}

static void accept_(struct prog *p, unsigned c)
{
    u8(p, OP_ACCEPT);
    u8(p, c);
}

static void control(struct prog *p, unsigned c, unsigned sel, uint32_t value)
{
    u8(p, OP_CONTROL);
    u8(p, c);
    u8(p, sel);
    u32(p, value);
}

static void shm_offer(struct prog *p, unsigned c, unsigned mode)
{
    u8(p, OP_SHM_OFFER);
    u8(p, c);
    u8(p, mode);
}

static void shm_poke(struct prog *p, unsigned c, unsigned field, uint64_t value)
{
    u8(p, OP_SHM_POKE);
    u8(p, c);
    u8(p, field);
    u32(p, (uint32_t)value);
    u32(p, (uint32_t)(value >> 32));
}

/* A client through the handshake, subscribed to `type`. */
static void peer(struct prog *p, unsigned c, unsigned name, unsigned features, unsigned type)
{
    open_(p, c);
    hello(p, c, name, features);
    subs1(p, c, type);
    pump(p);
}

static int bad;

static void save(const char *dir, const char *name, const struct prog *p)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p->b, 1, p->n, f) != p->n || fclose(f) != 0) {
        perror(path);
        bad = 1;
    }
}

/* SEED("file", { statements using p }) */
#define SEED(name, ...)                                                             \
    do {                                                                            \
        struct prog p_ = { .n = 0 };                                                \
        struct prog *p = &p_;                                                       \
        __VA_ARGS__;                                                                \
        save(dir, name, p);                                                         \
    } while (0)

static void limits(const char *dir)
{
    SEED("limit_incomplete", {
        for (unsigned c = 0; c < 4; c++)
            open_(p, c);
        pump(p);
        hello(p, 3, ALPHA, LZ4);
        pump(p);
    });
    SEED("limit_connections", {
        peer(p, 0, BETA, LZ4, T_A);
        peer(p, 1, GAMMA, LZ4, T_A);
        task(p, TASK_CONNECT, 0, ALPHA, 0, 0, MS500);
        run(p, 2);
        accept_(p, 2);
        hello(p, 2, ALPHA, LZ4 | RECEIPTS);
        subs1(p, 2, T_A);
        pump(p);
        open_(p, 3);
        hello(p, 3, DELTA, LZ4 | RECEIPTS);
        pump(p);
    });
    SEED("limit_peer_types", {
        static const unsigned seven[] = { T_A, T_B, T_PING, T_PONG, T_BLOCK, T_PEER, T_UTF8 };
        open_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        subs(p, 0, seven, 6);
        pump(p);
        subs(p, 0, seven, 7);
        pump(p);
    });
    SEED("limit_hello_size", {
        static const uint8_t big[] = { 0x00, 0x10, 0, 0, 1, 0, 0, 0, 'L', 'A', 'H', 'J', 'A', 1 };
        open_(p, 0);
        raw(p, 0, big, sizeof big);
        pump(p);
    });
    SEED("frame_timeout", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, 0, 0, Z200K, 3, 0);
        send_(p, 0, 70000);
        run(p, 2);
        clock_(p, MS1999);
        send_(p, 0, 70000);
        run(p, 2);
        clock_(p, MS1999);
        clock_(p, MS10);
        pump(p);
    });
    SEED("frame_timeout_expires", {
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, 0, 0, Z2049, 3, 0);
        send_(p, 0, 100);
        run(p, 2);
        clock_(p, MS2001);
        pump(p);
    });
}

static void receipts(const char *dir)
{
    SEED("receipts_both_ways", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4 | RECEIPTS, T_A);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        pump(p);
        clock_(p, MS1);
        broadcast(p, T_A, Z64, 1, 0);
        broadcast(p, T_A, Z2049, 1, 0);
        pump(p);
        control(p, 0, 2, 0);
        task(p, TASK_DELIVERED, 0, 0, 0, 0, MS_FOREVER);
        pump(p);
    });
    SEED("receipts_lost", {
        peer(p, 0, ALPHA, LZ4 | RECEIPTS, T_A);
        broadcast(p, T_A, Z64, 1, 0);
        task(p, TASK_DELIVERED, 0, 0, 0, 0, MS500);
        pump(p);
        shut(p, 0, 1);
        pump(p);
    });
    SEED("receipt_too_many", {
        peer(p, 0, ALPHA, LZ4 | RECEIPTS, T_A);
        control(p, 0, 0, 5);
        pump(p);
    });
    SEED("drain_after_write_fails", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        shut(p, 0, 2);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        broadcast(p, T_A, Z64, 1, 0);
        pump(p);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        pump(p);
        clock_(p, MS2001);
        run(p, 1);
    });
    SEED("other_process_same_name", {
        peer(p, 0, ALPHA, LZ4, T_A);
        open_other(p, 1);
        hello(p, 1, ALPHA, LZ4 | RECEIPTS);
        pump(p);
        shut(p, 0, 0);
        open_other(p, 2);
        hello(p, 2, ALPHA, LZ4);
        subs1(p, 2, T_B);
        pump(p);
    });
    SEED("other_process_replaces", {
        /* The new process's HELLO is read before the old one's end. */
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        open_other(p, 1);
        pump(p);
        hello(p, 1, ALPHA, LZ4);
        subs1(p, 1, T_A);
        send_(p, 1, 0);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        send_(p, 0, 0);
        shut(p, 0, 0);
        run(p, 1);
        pump(p);
    });
}

static void handshakes(const char *dir)
{
    SEED("handshake", {
        open_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        pump(p);
        read_(p, 0);
    });
    SEED("handshake_receipts", {
        open_(p, 0);
        hello(p, 0, BETA, LZ4 | RECEIPTS);
        pump(p);
        ack(p, 0);
        control(p, 0, 2, 0);
        pump(p);
    });
    SEED("handshake_split", {
        open_(p, 0);
        hello(p, 0, GAMMA, 0);
        subs1(p, 0, T_A);
        for (int i = 0; i < 12; i++) {
            send_(p, 0, 3);
            run(p, 0);
        }
        pump(p);
    });
    SEED("handshake_timeout", {
        open_(p, 0);
        run(p, 1);
        clock_(p, MS2001);
        pump(p);
    });
    SEED("handshake_partial_timeout", {
        open_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        send_(p, 0, 10);
        run(p, 1);
        clock_(p, MS1999);
        clock_(p, MS10);
        pump(p);
    });
    SEED("handshake_in_time", {
        open_(p, 0);
        run(p, 1);
        clock_(p, MS1999);
        hello(p, 0, ALPHA, LZ4);
        pump(p);
        clock_(p, MS5000);
        pump(p);
    });
    SEED("self_name", {
        open_(p, 0);
        hello(p, 0, SELF, LZ4);
        pump(p);
    });
    SEED("duplicate_name", {
        peer(p, 0, ALPHA, LZ4, T_A);
        peer(p, 1, ALPHA, LZ4, T_B);
        broadcast(p, T_A, Z64, 3, 0);
        pump(p);
    });
    SEED("bad_version", {
        open_(p, 0);
        hello_mode(p, 0, ALPHA, LZ4, 0, 1);
        pump(p);
    });
    SEED("bad_magic", {
        open_(p, 0);
        hello_mode(p, 0, ALPHA, LZ4, 0, 2);
        pump(p);
    });
    SEED("bad_name", {
        open_(p, 0);
        hello_raw_name(p, 0, "x/y\x01", 4);
        pump(p);
    });
    SEED("garbage", {
        open_(p, 0);
        raw(p, 0, "GET / HTTP/1.1\r\nHost: lahja\r\n\r\n", 31);
        pump(p);
    });
    SEED("event_before_hello", {
        open_(p, 0);
        event(p, 0, T_A, 0, 0, Z7, 1, 0);
        pump(p);
    });
    SEED("two_hellos", {
        open_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        hello(p, 0, BETA, LZ4);
        pump(p);
    });
    SEED("connect_out", {
        task(p, TASK_CONNECT, 0, ALPHA, 0, 0, MS_FOREVER);
        run(p, 1);
        accept_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        subs1(p, 0, T_A);
        pump(p);
        broadcast(p, T_A, Z64, 1, 0);
        pump(p);
    });
    SEED("connect_out_wrong_name", {
        task(p, TASK_CONNECT, 0, ALPHA, 0, 0, MS_FOREVER);
        run(p, 1);
        accept_(p, 0);
        hello(p, 0, BETA, LZ4);
        pump(p);
    });
    SEED("connect_out_simultaneous", {
        /* Both HELLOs are read in the same loop turn. */
        task(p, TASK_CONNECT, 0, ALPHA, 0, 0, MS_FOREVER);
        run(p, 1);
        accept_(p, 0);
        open_(p, 1);
        hello(p, 0, ALPHA, LZ4);
        subs1(p, 0, T_A);
        hello(p, 1, ALPHA, LZ4);
        subs1(p, 1, T_B);
        pump(p);
    });
    SEED("connect_out_then_in", {
        task(p, TASK_CONNECT, 0, ALPHA, 0, 0, MS_FOREVER);
        run(p, 1);
        accept_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        subs1(p, 0, T_A);
        pump(p);
        open_(p, 1);
        hello(p, 1, ALPHA, LZ4);
        pump(p);
    });
    SEED("connect_out_declined", {
        /* The peer keeps its own connection: ours waits for it. */
        task(p, TASK_CONNECT, 0, ALPHA, 0, 0, MS_FOREVER);
        run(p, 1);
        accept_(p, 0);
        hello(p, 0, ALPHA, LZ4 | RECEIPTS);
        pump(p);
        control(p, 0, 1, 1);
        pump(p);
        open_(p, 1);
        hello(p, 1, ALPHA, LZ4 | RECEIPTS);
        subs1(p, 1, T_A);
        pump(p);
    });
    SEED("connect_out_we_sort_first", {
        /* "fuzz" < "gamma": our connection is kept, the peer's refused. */
        task(p, TASK_CONNECT, 0, GAMMA, 0, 0, MS_FOREVER);
        run(p, 1);
        accept_(p, 4);
        hello(p, 0, GAMMA, LZ4 | RECEIPTS);
        open_(p, 1);
        hello(p, 1, GAMMA, LZ4 | RECEIPTS);
        pump(p);
        subs1(p, 0, T_A);
        pump(p);
    });
    SEED("connect_out_retry", {
        task(p, TASK_CONNECT, 0, BETA, 0, 0, MS500);
        run(p, 1);
        clock_(p, MS10);
        clock_(p, MS10);
        clock_(p, MS500);
        run(p, 1);
    });
    SEED("connect_out_self", {
        task(p, TASK_CONNECT, 0, SELF, 0, 0, MS500);
        run(p, 2);
    });
    SEED("four_clients", {
        peer(p, 0, ALPHA, LZ4, T_A);
        peer(p, 1, BETA, 0, T_A);
        peer(p, 2, GAMMA, LZ4 | RECEIPTS, T_B);
        peer(p, 3, DELTA, 0, T_PING);
        broadcast(p, T_A, Z8192, 5, 0);
        broadcast(p, T_B, Z64, 6, 0);
        pump(p);
        shut(p, 1, 1);
        pump(p);
        open_(p, 1);
        hello(p, 1, BETA, LZ4);
        pump(p);
    });
}

static void subscriptions(const char *dir)
{
    SEED("subs_and_ack", {
        static const unsigned three[] = { T_A, T_PING, T_LONG };
        open_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        subs(p, 0, three, 3);
        pump(p);
        ack(p, 0);
        subs(p, 0, NULL, 0);
        pump(p);
    });
    SEED("subs_patterns", {
        static const unsigned one[] = { T_A };
        open_(p, 0);
        hello(p, 0, ALPHA, LZ4 | RECEIPTS | PATTERNS);
        subs_sel(p, 0, 0x40 | 0x20 | 0x10, one, 1); /* T_A and `*`, from the endpoint */
        open_(p, 1);
        hello(p, 1, BETA, LZ4);
        subs_sel(p, 1, 0x40 | 0x08, one, 1);        /* T_A from another: nothing */
        pump(p);
        subscribe(p, T_B, 0);
        pump(p);
        broadcast(p, T_B, Z64, 6, 0);
        broadcast(p, T_A, Z64, 6, 0);
        pump(p);
    });
    SEED("endpoint_subs_changes", {
        peer(p, 0, ALPHA, LZ4, T_A);
        subscribe(p, T_A, 0);
        pump(p);
        subscribe(p, T_B, 0);
        unsubscribe(p, 0);
        pump(p);
        ack(p, 0);
        unsubscribe(p, 1);
        pump(p);
    });
    SEED("subs_bogus_ack", {
        peer(p, 0, ALPHA, LZ4, T_A);
        u8(p, OP_ACK);
        u8(p, 0);
        u8(p, 0x80);
        u32(p, 0xfffffff0u);
        pump(p);
    });
    SEED("subs_bad_type", {
        open_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        u8(p, OP_SUBS);
        u8(p, 0);
        u8(p, 0);
        u8(p, 2);
        u8(p, T_A);
        u8(p, RAW_SPEC);
        u8(p, 3);
        u8(p, 'a');
        u8(p, 0);
        u8(p, 'b');
        pump(p);
    });
    SEED("wait_subscribed", {
        task(p, TASK_SUBSCRIBED, T_PEER, 0, 0, 0, MS_FOREVER);
        task(p, TASK_CONNECTED, 0, ALPHA, 0, 0, MS500);
        run(p, 1);
        peer(p, 0, ALPHA, LZ4, T_PEER);
        pump(p);
    });
}

static void events(const char *dir)
{
    SEED("client_events", {
        subscribe(p, T_A, 0);
        subscribe(p, T_BLOCK, B_KEEP);
        peer(p, 0, ALPHA, LZ4, T_B);
        event(p, 0, T_A, 0, 0, Z7, 2, 0);
        event(p, 0, T_BLOCK, 0, 0, Z2049, 4, 0);
        event(p, 0, T_A, F_LZ4, 0, Z20000, 5, 0);
        event(p, 0, T_B, 0, 0, Z0, 0, 0);
        pump(p);
    });
    SEED("client_event_split", {
        subscribe(p, T_PING, 0);
        open_(p, 0);
        hello(p, 0, ALPHA, LZ4);
        event(p, 0, T_PING, 0, 0, Z255, 2, 0);
        event(p, 0, T_PING, F_LZ4, 0, Z8192, 7, 0);
        for (int i = 0; i < 10; i++) {
            send_(p, 0, 97);
            run(p, 0);
        }
        pump(p);
    });
    SEED("client_event_large", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, 0, 0, Z1M, 9, 0);
        event(p, 0, T_A, F_LZ4, 0, Z1M, 9, 0);
        pump(p);
        pump(p);
    });
    SEED("client_event_too_large", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, 0, 0, Z1M1, 9, 0);
        pump(p);
    });
    SEED("lz4_bad_length", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, F_LZ4, 0, Z8192, 3, 1);
        pump(p);
    });
    SEED("lz4_over_max", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, F_LZ4, 0, Z8192, 3, 2);
        pump(p);
    });
    SEED("lz4_corrupt", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, F_LZ4, 0, Z64, 2, 0); /* noise does not shrink: sent as is */
        pump(p);
    });
    SEED("unbound_type", {
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, F_UNBOUND, 1, Z7, 2, 0);
        pump(p);
    });
    SEED("type_out_of_order", {
        peer(p, 0, ALPHA, LZ4, T_A);
        u8(p, OP_TYPE);
        u8(p, 0);
        u8(p, 0x80);
        u32(p, 7);
        u8(p, T_B);
        pump(p);
    });
    SEED("bad_flags", {
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_A, F_RAW | 0x13, 0, Z7, 2, 0);
        pump(p);
    });
    SEED("broadcast_to_clients", {
        peer(p, 0, ALPHA, LZ4, T_A);
        peer(p, 1, BETA, 0, T_A);
        broadcast(p, T_A, Z7, 1, 0);
        broadcast(p, T_A, Z2049, 3, 0);
        broadcast(p, T_A, Z20000, 5, 0);
        broadcast(p, T_A, Z20000, 4, 0);
        broadcast(p, T_A, Z64K1, 7, 2);
        broadcast(p, T_A, Z300K, 9, 0);
        pump(p);
    });
    SEED("broadcast_configs", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, LZ4, T_A);
        peer(p, 1, BETA, LZ4, T_A);
        broadcast(p, T_A, Z7, 1, 16 | (1u << 5)); /* to beta only */
        broadcast(p, T_A, Z7, 1, 8);              /* internal */
        broadcast(p, T_A, Z7, 1, 8 | 16);         /* both: invalid */
        broadcast(p, T_B, Z7, 1, 4);              /* nobody, allowed */
        broadcast(p, T_B, Z7, 1, 0);              /* nobody */
        broadcast(p, T_A, Z7, 1, 0x80);           /* twice */
        broadcast(p, T_A, Z1M1, 1, 0);            /* too large */
        pump(p);
    });
    SEED("broadcast_small_peer", {
        open_(p, 0);
        hello_mode(p, 0, ALPHA, LZ4, 3, 0); /* max_frame 100 */
        subs1(p, 0, T_A);
        pump(p);
        broadcast(p, T_A, Z64, 1, 0);
        broadcast(p, T_A, Z255, 1, 0);
        pump(p);
    });
    SEED("backpressure", {
        peer(p, 0, ALPHA, 0, T_A);
        for (int i = 0; i < 6; i++)
            broadcast(p, T_A, Z300K, 2, 0);
        run(p, 3);
        task(p, TASK_BROADCAST, T_A, 0, Z300K, 4, MS_FOREVER);
        run(p, 3);
        read_(p, 0);
        pump(p);
    });
    SEED("close_while_writing", {
        peer(p, 0, ALPHA, 0, T_A);
        broadcast(p, T_A, Z1M, 2, 0);
        run(p, 2);
        shut(p, 0, 1);
        run(p, 2);
    });
    SEED("shutdown_then_read", {
        peer(p, 0, ALPHA, LZ4, T_A);
        shut(p, 0, 0);
        broadcast(p, T_A, Z64, 1, 0);
        pump(p);
    });
    SEED("streams", {
        stream(p, 0, T_A, 0);
        stream(p, 1, T_A, 1 | 16);
        peer(p, 0, ALPHA, LZ4, T_B);
        event(p, 0, T_A, 0, 0, Z7, 2, 0);
        event(p, 0, T_A, 0, 0, Z64, 2, 0);
        event(p, 0, T_A, 0, 0, Z64, 3, 0);
        pump(p);
        stream(p, 0, 0, 0);
    });
    SEED("control_frames", {
        peer(p, 0, ALPHA, LZ4 | RECEIPTS, T_A);
        control(p, 0, 0, 0);
        control(p, 0, 1, 1);
        pump(p);
    });
}

static void requests(const char *dir)
{
    SEED("client_request", {
        subscribe(p, T_PING, B_RESPOND | B_TYPE(T_PONG));
        peer(p, 0, ALPHA, LZ4, T_B);
        event(p, 0, T_PING, F_REQUEST, 0, Z7, 2, 0);
        event(p, 0, T_PING, F_REQUEST, 0x80, Z7, 2, 0); /* id 0 */
        pump(p);
    });
    SEED("client_request_kept", {
        subscribe(p, T_PING, B_KEEP);
        peer(p, 0, ALPHA, LZ4, T_B);
        event(p, 0, T_PING, F_REQUEST, 0, Z64, 2, 0);
        pump(p);
        respond(p, 0, T_PONG, Z64, 3);
        respond(p, 0, T_PONG, Z64, 3);
        pump(p);
        shut(p, 0, 1);
        run(p, 2);
        respond(p, 0, T_PONG, Z64, 3);
    });
    SEED("task_request", {
        peer(p, 0, ALPHA, LZ4, T_PING);
        task(p, TASK_REQUEST, T_PING, T_PONG, Z7, 2, MS_FOREVER);
        pump(p);
        event(p, 0, T_PONG, F_RESPONSE, 0, Z7, 1, 0);
        event(p, 0, T_PONG, F_RESPONSE, 0, Z7, 1, 0); /* late */
        pump(p);
    });
    SEED("task_request_wrong_type", {
        peer(p, 0, ALPHA, LZ4, T_PING);
        task(p, TASK_REQUEST, T_PING, T_PONG, Z7, 2, MS_FOREVER);
        pump(p);
        event(p, 0, T_A, F_RESPONSE, 2, Z7, 1, 0);
        pump(p);
    });
    SEED("task_request_peer_gone", {
        peer(p, 0, ALPHA, LZ4, T_PING);
        peer(p, 1, BETA, LZ4, T_PING);
        task(p, TASK_REQUEST, T_PING, T_PONG, Z2049, 2, MS_FOREVER);
        pump(p);
        shut(p, 0, 1);
        shut(p, 1, 0);
        pump(p);
    });
    SEED("task_request_timeout", {
        peer(p, 0, ALPHA, LZ4, T_PING);
        task(p, TASK_REQUEST, T_PING, T_PONG, Z7, 2, MS500);
        pump(p);
        clock_(p, MS2001);
        event(p, 0, T_PONG, F_RESPONSE, 0, Z7, 1, 0);
        pump(p);
    });
    SEED("task_request_local", {
        subscribe(p, T_PING, B_RESPOND | B_TYPE(T_PONG));
        task(p, TASK_REQUEST, T_PING, T_PONG, Z7, 2, MS_FOREVER);
        run(p, 2);
    });
    SEED("wait_for", {
        task(p, TASK_WAIT_FOR, T_BLOCK, 0, 0, 0, MS_FOREVER);
        task(p, TASK_WAIT_FOR, T_A, 0, 0, 0, MS10);
        run(p, 1);
        peer(p, 0, ALPHA, LZ4, T_A);
        event(p, 0, T_BLOCK, 0, 0, Z64, 1, 0);
        pump(p);
        clock_(p, MS500);
    });
    /* The callback forms (kind | CB), and their cancellation (| CANCEL). */
    SEED("cb_request", {
        peer(p, 0, ALPHA, LZ4, T_PING);
        task(p, TASK_REQUEST | CB, T_PING, T_PONG, Z7, 2, MS_FOREVER);
        task(p, TASK_REQUEST | CB, T_PING, T_PONG, Z7, 3, MS500);
        pump(p);
        event(p, 0, T_PONG, F_RESPONSE, 0, Z7, 1, 0);
        pump(p);
        clock_(p, MS2001);
        shut(p, 0, 1);
        pump(p);
    });
    SEED("cb_waits_cancelled", {
        task(p, TASK_WAIT_FOR | CB, T_BLOCK, 0, 0, 0, MS_FOREVER);
        task(p, TASK_SUBSCRIBED | CB, T_PEER, 0, 0, 0, MS_FOREVER);
        task(p, TASK_CONNECTED | CB, 0, ALPHA, 0, 0, MS500);
        task(p, TASK_CONNECT | CB, 0, GAMMA, 0, 0, MS_FOREVER);
        run(p, 1);
        peer(p, 0, ALPHA, LZ4, T_PEER);
        pump(p);
        task(p, CB | CANCEL, 0, 0, 0, 0, 0);
        task(p, CB | CANCEL, 3, 0, 0, 0, 0);
        shut(p, 0, 1);
        pump(p);
    });
    SEED("cb_broadcast_delivered", {
        peer(p, 0, ALPHA, LZ4, T_A);
        task(p, TASK_BROADCAST | CB, T_A, 0, Z300K, 4, MS_FOREVER);
        task(p, TASK_DELIVERED | CB, 0, 0, 0, 0, MS500);
        run(p, 2);
        pump(p);
        clock_(p, MS2001);
    });
    SEED("handler_behaviours", {
        subscribe(p, T_A, B_BROADCAST | B_TYPE(T_B));
        subscribe(p, T_B, B_CANCEL_SELF);
        subscribe(p, T_A, B_CANCEL_OTHER | B_FAIL);
        subscribe(p, T_A, B_KEEP);
        peer(p, 0, ALPHA, LZ4, T_B);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        pump(p);
        broadcast(p, T_A, Z7, 1, 0);
        pump(p);
    });
}

/* Clients that speak the shared-memory transport: both rings up, events
 * through them both ways, around and over their 64 KiB, and a seed for
 * each scribble and each offer the endpoint must refuse. */
static void shared_memory(const char *dir)
{
    const unsigned all = LZ4 | RECEIPTS | PATTERNS | SHM;
    SEED("shm_established", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, all, T_B);
        shm_offer(p, 0, SHM_GOOD);
        event(p, 0, T_A, 0, 0, Z100, 3, 0);
        pump(p);
        broadcast(p, T_B, Z64, 5, 0);
        pump(p);
    });
    SEED("shm_events_large", {
        subscribe(p, T_A, B_KEEP);
        peer(p, 0, ALPHA, all, T_B);
        shm_offer(p, 0, SHM_GOOD);
        event(p, 0, T_A, 0, 0, Z60000, 3, 0);
        event(p, 0, T_A, 0, 0, Z200K, 4, 0);
        event(p, 0, T_A, F_LZ4, 0, Z128K, 5, 0);
        broadcast(p, T_B, Z200K, 6, 0);
        broadcast(p, T_B, Z60000, 7, 0);
        for (int i = 0; i < 6; i++) {
            send_(p, 0, 30000);
            run(p, 1);
            read_(p, 0);
        }
        pump(p);
        pump(p);
    });
    SEED("shm_request", {
        subscribe(p, T_PING, B_RESPOND | B_TYPE(T_PONG));
        peer(p, 0, ALPHA, all, T_PING);
        shm_offer(p, 0, SHM_GOOD);
        event(p, 0, T_PING, F_REQUEST, 0, Z7, 2, 0);
        task(p, TASK_REQUEST, T_PING, T_PONG, Z7, 2, MS_FOREVER);
        pump(p);
        event(p, 0, T_PONG, F_RESPONSE, 0, Z7, 1, 0);
        pump(p);
    });
    SEED("shm_one_way", {
        peer(p, 0, ALPHA, all, T_B);
        broadcast(p, T_B, Z1000, 5, 0);
        pump(p);
        event(p, 0, T_A, 0, 0, Z7, 3, 0);
        pump(p);
    });
    SEED("shm_wrap", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, all, T_B);
        shm_offer(p, 0, SHM_GOOD | SHM_WRAP | SHM_BIG);
        for (int i = 0; i < 4; i++)
            event(p, 0, T_A, 0, 0, Z40000, (unsigned)i, 0);
        pump(p);
    });
    SEED("shm_wake_always", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, all, T_B);
        shm_offer(p, 0, SHM_GOOD | SHM_WAKE_ALWAYS);
        event(p, 0, T_A, 0, 0, Z64, 3, 0);
        send_(p, 0, 10);
        send_(p, 0, 10);
        pump(p);
    });
    SEED("shm_wake_never", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, all, T_B);
        shm_offer(p, 0, SHM_GOOD | SHM_WAKE_NEVER);
        event(p, 0, T_A, 0, 0, Z64K1, 3, 0);
        pump(p);
    });
    SEED("shm_shut", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, all, T_B);
        shm_offer(p, 0, SHM_GOOD);
        event(p, 0, T_A, 0, 0, Z500, 3, 0);
        send_(p, 0, 0);
        shut(p, 0, 0);
        pump(p);
    });
    SEED("shm_other_process", {
        subscribe(p, T_A, 0);
        open_other(p, 1);
        hello(p, 1, BETA, all);
        subs1(p, 1, T_B);
        pump(p);
        shm_offer(p, 1, SHM_GOOD);
        event(p, 1, T_A, 0, 0, Z100, 3, 0);
        broadcast(p, T_B, Z100, 3, 0);
        pump(p);
    });
    SEED("shm_connect", {
        task(p, TASK_CONNECT, 0, ALPHA, 0, 0, MS500);
        run(p, 2);
        accept_(p, 2);
        hello(p, 2, ALPHA, all);
        subs1(p, 2, T_A);
        pump(p);
        shm_offer(p, 2, SHM_GOOD);
        broadcast(p, T_A, Z100, 3, 0);
        pump(p);
    });
    SEED("shm_second_offer", {
        peer(p, 0, ALPHA, all, T_B);
        shm_offer(p, 0, SHM_GOOD);
        pump(p);
        shm_offer(p, 0, SHM_GOOD);
        pump(p);
    });
    SEED("shm_offer_without_feature", {
        peer(p, 0, ALPHA, LZ4, T_B);
        shm_offer(p, 0, SHM_GOOD);
        pump(p);
    });
    static const struct {
        const char *name;
        unsigned mode;
    } bad_offers[] = {
        { "shm_bad_unsealed", SHM_UNSEALED },
        { "shm_bad_size_odd", SHM_BAD_SIZE },
        { "shm_bad_size_small", SHM_BAD_SIZE | 1 << 3 },
        { "shm_bad_size_large", SHM_BAD_SIZE | 2 << 3 },
        { "shm_bad_magic", SHM_BAD_HEADER },
        { "shm_bad_version", SHM_BAD_HEADER | 1 << 3 },
        { "shm_bad_size_field", SHM_BAD_HEADER | 2 << 3 },
        { "shm_bad_head", SHM_BAD_HEADER | 3 << 3 },
        { "shm_bad_dev_null", SHM_NOT_MEMFD },
        { "shm_bad_pipe", SHM_NOT_MEMFD | 1 << 3 },
        { "shm_bad_two_fds", SHM_TWO_FDS },
        { "shm_bad_read_only", SHM_READ_ONLY },
    };
    for (size_t i = 0; i < sizeof bad_offers / sizeof bad_offers[0]; i++) {
        SEED(bad_offers[i].name, {
            subscribe(p, T_A, 0);
            peer(p, 0, ALPHA, all, T_B);
            shm_offer(p, 0, bad_offers[i].mode);
            event(p, 0, T_A, 0, 0, Z64, 3, 0);
            pump(p);
        });
    }
    SEED("shm_replaces", {
        /* The old connection's ring is read to its end first. */
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, all, T_A);
        shm_offer(p, 0, SHM_GOOD);
        open_other(p, 1);
        pump(p);
        hello(p, 1, ALPHA, all);
        subs1(p, 1, T_A);
        send_(p, 1, 0);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        send_(p, 0, 0);
        shut(p, 0, 0);
        run(p, 1);
        pump(p);
    });
    SEED("shm_replaces_unread_marker", {
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, all, T_A);
        open_other(p, 1);
        pump(p);
        hello(p, 1, ALPHA, all);
        subs1(p, 1, T_A);
        send_(p, 1, 0);
        shm_offer(p, 0, SHM_GOOD);
        event(p, 0, T_A, 0, 0, Z64, 1, 0);
        send_(p, 0, 0);
        shut(p, 0, 0);
        run(p, 1);
        pump(p);
    });
    SEED("shm_poke_ep_tail_while_full", {
        /* A tail ahead of what the endpoint wrote, while a write of it
         * waits for room. */
        peer(p, 0, ALPHA, all, T_B);
        broadcast(p, T_B, Z200K, 6, 0);
        run(p, 2);
        shm_poke(p, 0, SHM_TAIL | SHM_EP_RING | 2 << 4, 9);
        run(p, 2);
        pump(p);
    });
    SEED("shm_echo", { /* the endpoint's ring back: it reads its own frames */
        subscribe(p, T_A, 0);
        peer(p, 0, ALPHA, all, T_B);
        shm_offer(p, 0, SHM_NOT_MEMFD | 2 << 3);
        pump(p);
        broadcast(p, T_B, Z64, 5, 0);
        pump(p);
    });
    SEED("shm_bad_early", {
        subscribe(p, T_A, 0);
        open_(p, 0);
        hello(p, 0, ALPHA, all);
        shm_offer(p, 0, SHM_EARLY);
        event(p, 0, T_A, 0, 0, Z64, 3, 0);
        pump(p);
    });
    /* Each field of each ring, moved a little, far, ahead and behind. */
    static const char *const fields[] = { "head", "tail", "sleeps", "waits", "size", "magic" };
    static const uint64_t values[] = { 5, 0xfffffffffffffff0u, 7, 9 };
    for (unsigned ring = 0; ring < 2; ring++) {
        for (unsigned f = 0; f < SHM_FIELDS; f++) {
            for (unsigned how = 0; how < 4; how++) {
                if (f >= SHM_READER_SLEEPS && how > 1)
                    continue;
                char name[64];
                snprintf(name, sizeof name, "shm_poke_%s_%s_%u", ring ? "ep" : "own", fields[f], how);
                SEED(name, {
                    subscribe(p, T_A, 0);
                    peer(p, 0, ALPHA, all, T_B);
                    shm_offer(p, 0, SHM_GOOD);
                    event(p, 0, T_A, 0, 0, Z64, 3, 0);
                    broadcast(p, T_B, Z64, 5, 0);
                    pump(p);
                    shm_poke(p, 0, f | (ring ? SHM_EP_RING : 0) | how << 4, values[how]);
                    event(p, 0, T_A, 0, 0, Z1000, 3, 0);
                    broadcast(p, T_B, Z1000, 5, 0);
                    pump(p);
                    broadcast(p, T_B, Z7, 5, 0);
                    pump(p);
                });
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    handshakes(argv[1]);
    limits(argv[1]);
    receipts(argv[1]);
    subscriptions(argv[1]);
    events(argv[1]);
    requests(argv[1]);
    shared_memory(argv[1]);
    return bad ? 1 : 0;
}
