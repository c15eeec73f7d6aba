/*
 * The input language of fuzz_conn, shared with the seed generator
 * (make_corpus_conn.c): an input is a program of operations, each one
 * byte (taken modulo OP_COUNT) followed by its arguments.  A program
 * that runs out of bytes in the middle of an operation ends there.
 *
 * Arguments, in order (c: a client, one byte modulo MAX_CLIENTS):
 *
 *   OPEN c                 connect client c to the endpoint (if closed);
 *                          bit 2 of c's byte: from another process
 *   SEND c k:u16           write the next k bytes of c's pending output
 *                          (0: all it takes); frames split anywhere
 *   RAW c n:u8 bytes[n]    append n raw bytes to c's pending output
 *   HELLO c name features:u8 max:u8 mode:u8
 *                          append a HELLO (mode bit 0: version 2, bit 1:
 *                          bad magic); max picks from max_frames[];
 *                          features bits 0-6 go as they are (bit 3: c
 *                          reads and writes rings), bit 7 as bit 31
 *   SUBS c seq:u8[ u32] n:u8 type*n
 *                          append a SUBS of n % 9 types; seq bit 7: a
 *                          literal u32 follows, else c's next seq; bit 6:
 *                          with flag ENTRIES (B34), bit 5 adding `*`,
 *                          bit 4 limiting each to the endpoint's name,
 *                          bit 3 (without 4) to another name
 *   ACK c sel:u8[ u32]     append a SUBS_ACK: the endpoint's last SUBS
 *                          seq c read, or (sel bit 7) a literal u32
 *   TYPE c sel:u8[ u32] type
 *                          append a TYPE: the next id, binding it for c's
 *                          later events, or (sel bit 7) a literal id
 *   EVENT c type flags:u8 idsel:u8 len:u8 seed:u8 variant:u8
 *                          append an EVENT (and the TYPE it needs first):
 *                          flags bits 0-2 REQUEST, RESPONSE, LZ4, bit 6
 *                          an unbound type id, bit 7 the low 7 bits as
 *                          the raw flags byte; len picks from sizes[];
 *                          variant bit 0 a wrong LZ4 raw length, bit 1
 *                          an LZ4 raw length over the endpoint's limit
 *   CONTROL c sel:u8 value:u32
 *                          append a RECEIPT (sel bit 0 clear; bit 1: the
 *                          number of events c wrote) or CLOSE (reason)
 *   READ c                 read and check what the endpoint wrote to c
 *   SHUT c how:u8          how % 3: shut down c's writing side, close
 *                          the socket, shut down its reading side
 *   RUN n:u8               run the loop (without blocking) 1 + n % 8 times
 *   PUMP                   write, run and read until nothing moves
 *   SUBSCRIBE type:u8 behaviour:u8
 *                          the endpoint subscribes a handler; behaviour:
 *                          bit 0 respond to requests, 1 keep the event,
 *                          2 broadcast from the handler, 3 cancel itself,
 *                          4 cancel another, 5 fail, 6-7 a type
 *   UNSUBSCRIBE slot:u8
 *   BROADCAST type:u8 len:u8 seed:u8 mode:u8
 *                          the endpoint broadcasts without waiting; mode
 *                          bit 0 a request, 1 wrapped payload, 2 allow no
 *                          subscribers, 3 internal, 4 filter to a client's
 *                          name (bits 5-6 which), 7 broadcast it twice
 *   RESPOND slot:u8 type:u8 len:u8 seed:u8
 *                          answer an event a handler kept
 *   TASK kind:u8 type:u8 resp:u8 len:u8 seed:u8 ms:u8
 *                          a task: request, wait_for, broadcast (waits
 *                          under the high-water mark), wait until
 *                          connected or subscribed, connect (to the name
 *                          resp picks), wait until delivered; deadline
 *                          from ms.  With bit 7 of kind set, the same
 *                          call in its callback form (no task), or, with
 *                          bit 6 too, cancels the callback call in slot
 *                          `type`.
 *                          The endpoint's requests (TASK, BROADCAST) take
 *                          len modulo N_SMALL_SIZES.
 *   CLOCK ms:u8            advance the loop's clock, then run it once
 *   STREAM slot:u8 type:u8 mode:u8
 *                          open a stream on the slot, or close it if open
 *   ACCEPT c               client c takes a connection the endpoint made
 *                          (TASK_CONNECT) to names[0] (bit 2 of c's byte:
 *                          names[2]), which it listens as
 *   SHM_OFFER c mode:u8    client c sends its shared-memory marker with a
 *                          ring of its own and a pool (docs/protocol.md,
 *                          "Shared memory"); mode % 8: 0 a good ring, 1 an
 *                          unsealed memfd, 2 a bad size ((mode >> 3) % 3:
 *                          not a power of two, too small, too large), 3 a
 *                          bad header ((mode >> 3) % 4: magic, version,
 *                          size field, head past the ring), 4 not c's
 *                          memfd ((mode >> 3) % 3: /dev/null, a pipe, the
 *                          endpoint's own ring c read), 5 not the two
 *                          descriptors it takes ((mode >> 3) % 2: the
 *                          ring alone, an unsealed pool), 6 a good ring before what c has not
 *                          sent yet (its HELLO, often), 7 a good ring's
 *                          memfd opened read-only.  A good ring (0, 6, 7)
 *                          is of 64 KiB (bit 3: 128 KiB), its indices at 0
 *                          (bit 4: just below 2^64, to wrap).  After a
 *                          good offer c's output (SEND) goes into its ring
 *                          as room allows, with a wake-up byte on the
 *                          socket when the endpoint said it sleeps; bit 5:
 *                          a wake-up after every write, bit 6: none ever
 *   SHM_POKE c field:u8 value:u64
 *                          scribble on a ring's header: field bits 0-2
 *                          modulo 6 pick head, tail, reader_sleeps,
 *                          writer_waits, size, magic; bit 3 the
 *                          endpoint's ring c read (else c's own); bits
 *                          4-5 for an index or the size: 0 plus value as
 *                          a signed byte, 1 value itself, 2 a ring's size
 *                          and value's low byte ahead, 3 as far behind;
 *                          for a flag: 1 value's low 32 bits, else its
 *                          bit 0
 *
 * READ also reads the endpoint's ring once its marker came (c announced
 * feature bit 3 in HELLO): the socket's bytes are wake-ups from then on.
 * An event the endpoint lends (flag LENT) is checked in its pool, and
 * given back at once with a RELEASE in c's output.
 *
 * Names and types: one byte; below 0xf0 it picks from names[]/types[],
 * else a length byte and that many raw bytes follow.
 */
#ifndef LAHJA_FUZZ_CONN_H
#define LAHJA_FUZZ_CONN_H

#include <stdint.h>

enum conn_op {
    OP_OPEN,
    OP_SEND,
    OP_RAW,
    OP_HELLO,
    OP_SUBS,
    OP_ACK,
    OP_TYPE,
    OP_EVENT,
    OP_CONTROL,
    OP_READ,
    OP_SHUT,
    OP_RUN,
    OP_PUMP,
    OP_SUBSCRIBE,
    OP_UNSUBSCRIBE,
    OP_BROADCAST,
    OP_RESPOND,
    OP_TASK,
    OP_CLOCK,
    OP_STREAM,
    OP_ACCEPT,
    OP_SHM_OFFER,
    OP_SHM_POKE,
    OP_COUNT
};

/* SHM_OFFER's modes and SHM_POKE's fields. */
enum shm_offer { SHM_GOOD, SHM_UNSEALED, SHM_BAD_SIZE, SHM_BAD_HEADER, SHM_NOT_MEMFD, SHM_TWO_FDS,
                 SHM_EARLY, SHM_READ_ONLY, SHM_OFFERS };
enum shm_field { SHM_HEAD, SHM_TAIL, SHM_READER_SLEEPS, SHM_WRITER_WAITS, SHM_SIZE, SHM_MAGIC,
                 SHM_FIELDS };
#define SHM_EP_RING 0x08   /* SHM_POKE: the endpoint's ring */
#define SHM_BIG 0x08       /* SHM_OFFER, a good ring: 128 KiB */
#define SHM_WRAP 0x10      /* SHM_OFFER, a good ring: indices near 2^64 */
#define SHM_WAKE_ALWAYS 0x20
#define SHM_WAKE_NEVER 0x40

enum task_kind { TASK_REQUEST, TASK_WAIT_FOR, TASK_BROADCAST, TASK_CONNECTED, TASK_SUBSCRIBED,
                 TASK_CONNECT, TASK_DELIVERED, TASK_KINDS };

#define MAX_CLIENTS 4
#define RAW_SPEC 0xf0 /* a name or type byte from here on: raw bytes follow */

/* The endpoint under test. */
#define EP_NAME "fuzz"

static const char *const conn_names[] = {
    "alpha", "beta", "gamma", EP_NAME, "a", "with space",
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", /* 255 */
    "delta",
};
#define N_NAMES (sizeof conn_names / sizeof conn_names[0])

static const char *const conn_types[] = {
    "a", "b", "Ping", "Pong", "block.New", "peer.Joined", "\xc3\xa9v\xc3\xa9nement",
    "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
    "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt"
    "ttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt", /* 255 */
};
#define N_TYPES (sizeof conn_types / sizeof conn_types[0])

/* Payload sizes (EVENT, BROADCAST, RESPOND, TASK): around the copy,
 * compression, buffer and size limits of the endpoint (max_payload 1 MiB).
 * The costly ones are a few of many, so that most programs stay fast. */
static const uint32_t conn_sizes[] = {
    0, 1, 2, 7, 12, 64, 100, 255, 500, 1000, 2047, 2048, 2049, 4095, 4096, 5000,
    8191, 8192, 16384, 20000, 30000, 40000, 60000, 65535, 65536, 65537, 131072, 200000,
    300000, (1u << 20) - 24, 1u << 20, (1u << 20) + 1,
};
#define N_SIZES (sizeof conn_sizes / sizeof conn_sizes[0])
#define N_SMALL_SIZES 26 /* up to 65537: what requests the endpoint makes use */

/* The max_frame a client announces. */
static const uint32_t conn_max_frames[] = {
    (1u << 20) + 24, 1u << 16, 4096, 100, 16, 0, UINT32_MAX, (1u << 20) + 23,
};
#define N_MAX_FRAMES (sizeof conn_max_frames / sizeof conn_max_frames[0])

/* Clock steps, in ms, against the endpoint's 2000 ms handshake and
 * frame timeouts. */
static const uint32_t conn_clock_steps[] = { 1, 10, 500, 1999, 2001, 5000, 20000, 0 };
#define N_CLOCK_STEPS (sizeof conn_clock_steps / sizeof conn_clock_steps[0])

#endif /* LAHJA_FUZZ_CONN_H */
