/*
 * The wire protocol, sans I/O: pure functions and plain state over byte
 * buffers.  No sockets, no loop, no globals; every length read from the
 * wire is checked against a configured bound before anything is
 * allocated.  docs/protocol.md describes the bytes; this header is the
 * contract of the code that reads and writes them.
 *
 * A connection is a byte stream of frames, each an 8-byte header and a
 * body:
 *
 *     u32 body length (little endian) | u8 kind | u8 flags | u16 reserved (0)
 *
 * The first frame each side sends is HELLO; after it, in any order,
 * SUBS (the full set of event types the sender subscribes to), SUBS_ACK,
 * TYPE (binds a small id to an event type name, for the sender's later
 * EVENT frames on this connection) and EVENT.
 *
 * Receiving: a lahja_wire_rx_t per connection turns bytes into messages
 * (lahja_wire_rx_next), parsing in place: a message's pointers point into
 * the caller's buffer.  Sending: lahja_wire_tx_t interns type names per
 * connection; the encoders write into caller-provided memory.
 *
 * Errors: -EAGAIN (not enough bytes yet; never for a complete frame),
 * -EPROTO (malformed or out-of-order), -EPROTONOSUPPORT (a peer speaking
 * another protocol version), -EMSGSIZE (over a configured bound),
 * -ENOMEM.  After any error but -EAGAIN the connection is unusable.
 */
#ifndef LAHJA_WIRE_H
#define LAHJA_WIRE_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "common/strset.h"

/* Internal: never exported from the shared library. */
#pragma GCC visibility push(hidden)

#define LAHJA_WIRE_VERSION 1
#define LAHJA_WIRE_HEADER_SIZE 8
#define LAHJA_WIRE_NAME_MAX 255      /* endpoint and event type names */
#define LAHJA_WIRE_HELLO_MAX (LAHJA_WIRE_HEADER_SIZE + 5 + 1 + 4 + 4 + 1 + LAHJA_WIRE_NAME_MAX)
/* The largest EVENT prefix: header, type id, request id, raw length. */
#define LAHJA_WIRE_EVENT_PREFIX_MAX (LAHJA_WIRE_HEADER_SIZE + 4 + 8 + 4)

enum lahja_wire_kind {
    LAHJA_WIRE_HELLO = 1,
    LAHJA_WIRE_SUBS = 2,
    LAHJA_WIRE_SUBS_ACK = 3,
    LAHJA_WIRE_TYPE = 4,
    LAHJA_WIRE_EVENT = 5,
    LAHJA_WIRE_RECEIPT = 6, /* feature RECEIPTS only */
    LAHJA_WIRE_CLOSE = 7,   /* feature RECEIPTS only */
    LAHJA_WIRE_RELEASE = 8  /* feature SHM only: lent payloads given back */
};

/* CLOSE reasons */
enum lahja_wire_close_reason {
    LAHJA_WIRE_CLOSE_DUPLICATE = 1, /* the other connection between us is kept */
    LAHJA_WIRE_CLOSE_REFUSED = 2    /* over one of the receiver's limits */
};

/* EVENT flags */
enum lahja_wire_event_flags {
    LAHJA_WIRE_REQUEST = 1u << 0,  /* carries a request id; a response is awaited */
    LAHJA_WIRE_RESPONSE = 1u << 1, /* carries the id of the request it answers */
    LAHJA_WIRE_LZ4 = 1u << 2,      /* payload is LZ4 (block format), raw length first */
    LAHJA_WIRE_LENT = 1u << 3      /* feature SHM only: the payload is lent, in the
                                      sender's pool: a LAHJA_WIRE_LENT_SIZE reference
                                      (u64 offset, u64 length) stands for it */
};

/* HELLO feature bits */
enum lahja_wire_features {
    LAHJA_WIRE_FEAT_LZ4 = 1u << 0,
    /* reads RECEIPT and CLOSE frames, and sends RECEIPTs */
    LAHJA_WIRE_FEAT_RECEIPTS = 1u << 1,
    /* reads SUBS frames with flag ENTRIES: patterns and origin-limited
     * entries (B34) */
    LAHJA_WIRE_FEAT_PATTERNS = 1u << 2,
    /* moves its output through a ring in shared memory, once it sent the
     * ring's descriptor (the shared-memory transport, src/bus/shm.c) */
    LAHJA_WIRE_FEAT_SHM = 1u << 3
};

/* SUBS flags */
enum lahja_wire_subs_flags {
    /* each entry starts with entry flags and may carry origins: sent only
     * to a peer whose HELLO has FEAT_PATTERNS */
    LAHJA_WIRE_SUBS_ENTRIES = 1u << 0
};

/* Entry flags of a SUBS with flag ENTRIES */
enum lahja_wire_entry_flags {
    /* the type is a pattern: it ends in '*' and matches every type that
     * starts with what comes before the '*' and is longer than that */
    LAHJA_WIRE_ENTRY_PATTERN = 1u << 0,
    /* origins follow: the entry holds only for events from those endpoints */
    LAHJA_WIRE_ENTRY_ORIGINS = 1u << 1
};

/* The most origins one entry names (a u8 on the wire). */
#define LAHJA_WIRE_ORIGINS_MAX 255

#define LAHJA_WIRE_RECEIPT_SIZE (LAHJA_WIRE_HEADER_SIZE + 8)
/* A lent payload's reference: offset and length in the sender's pool. */
#define LAHJA_WIRE_LENT_SIZE 16
/* Offsets one RELEASE frame carries at most. */
#define LAHJA_WIRE_RELEASE_MAX 8192
#define LAHJA_WIRE_CLOSE_SIZE (LAHJA_WIRE_HEADER_SIZE + 4)

/* ------------------------------------------------------------ names */

/*
 * Non-zero if name[0..len) is a valid endpoint name: 1..255 bytes,
 * printable ASCII (0x20..0x7e), no '/'.
 */
int lahja_wire_name_valid(const char *name, size_t len);

/* Non-zero if type[0..len) is a valid event type: 1..255 bytes, no NUL. */
int lahja_wire_type_valid(const char *type, size_t len);

/* ---------------------------------------------------------- encoding */

/*
 * Writes a HELLO frame into out (at least LAHJA_WIRE_HELLO_MAX bytes):
 * our name, features and the largest frame body we accept.  Returns the
 * frame's size, or 0 if the name is invalid.
 */
size_t lahja_wire_hello_encode(uint8_t *out, const char *name, size_t name_len,
                               uint32_t features, uint32_t max_frame);

/*
 * The size of a SUBS frame for `n` types whose lengths add up to
 * `total_len` bytes.
 */
size_t lahja_wire_subs_size(size_t n, size_t total_len);

/*
 * Writes a SUBS frame (the whole set of types, replacing the previous
 * one) with sequence number `seq` into out, which has `cap` bytes.
 * Returns the frame's size, or 0 if it does not fit or a type is invalid.
 */
size_t lahja_wire_subs_encode(uint8_t *out, size_t cap, uint32_t seq,
                              const char *const *types, const size_t *lens, size_t n);

/*
 * One entry of a SUBS frame with flag ENTRIES: a type or pattern and,
 * with norigins > 0, the endpoints whose events it is limited to.
 */
typedef struct lahja_wire_entry {
    const char *type;           /* not NUL-terminated when decoded */
    size_t len;
    uint8_t flags;              /* LAHJA_WIRE_ENTRY_*; ORIGINS iff norigins */
    size_t norigins;
    const char *const *origins; /* encoding: the names */
    const size_t *origin_lens;
    const uint8_t *op;          /* decoding: the origins' private cursor */
    size_t left;                /* decoding: origins not yet walked */
} lahja_wire_entry_t;

/* Non-zero if type[0..len) is a valid pattern: a valid type ending in '*'. */
int lahja_wire_pattern_valid(const char *type, size_t len);

/* Non-zero if `type` matches the pattern pat[0..plen) (which ends in '*'):
 * type starts with pat's first plen - 1 bytes and is longer than that; a
 * reserved type (`lahja.` and more) only if those bytes start with
 * `lahja.` too. */
int lahja_wire_pattern_match(const char *pat, size_t plen, const char *type, size_t len);

/*
 * Writes a SUBS frame with flag ENTRIES (for a peer with FEAT_PATTERNS)
 * holding entries[0..n) with sequence number `seq` into out (cap bytes).
 * Returns the frame's size, or 0 if it does not fit or an entry is
 * invalid (a bad type or pattern, an origin that is not a valid endpoint
 * name, more than LAHJA_WIRE_ORIGINS_MAX origins).  With out NULL it
 * writes nothing and returns the size the frame needs.
 */
size_t lahja_wire_subs_entries_encode(uint8_t *out, size_t cap, uint32_t seq,
                                      const lahja_wire_entry_t *entries, size_t n);

/* Writes a SUBS_ACK frame (12 bytes) for `seq`.  Returns 12. */
size_t lahja_wire_ack_encode(uint8_t out[12], uint32_t seq);

/* Writes a RECEIPT frame (LAHJA_WIRE_RECEIPT_SIZE bytes): `count` EVENT
 * frames read on this connection so far.  Returns its size. */
size_t lahja_wire_receipt_encode(uint8_t out[LAHJA_WIRE_RECEIPT_SIZE], uint64_t count);

/* Writes a RELEASE frame of n (1..LAHJA_WIRE_RELEASE_MAX) pool offsets
 * into out (LAHJA_WIRE_HEADER_SIZE + 8 n bytes); returns its size, 0 if
 * n is out of range. */
size_t lahja_wire_release_encode(uint8_t *out, const uint64_t *offsets, size_t n);
/* The i-th offset of a RELEASE body (msg.u.release). */
uint64_t lahja_wire_release_at(const uint8_t *body, size_t i);

/* Writes a CLOSE frame (LAHJA_WIRE_CLOSE_SIZE bytes) giving `reason`.
 * Returns its size. */
size_t lahja_wire_close_encode(uint8_t out[LAHJA_WIRE_CLOSE_SIZE], uint32_t reason);

/*
 * Writes a TYPE frame binding `id` to the type name into out (at least
 * LAHJA_WIRE_HEADER_SIZE + 5 + 255 bytes).  Returns its size, 0 if the
 * type is invalid.
 */
size_t lahja_wire_type_encode(uint8_t *out, uint32_t id, const char *type, size_t len);

/*
 * Writes the part of an EVENT frame that comes before the payload: the
 * header (whose length counts the payload), the type id, the request id
 * if flags has REQUEST or RESPONSE, the raw length if flags has LZ4.
 * The payload itself (payload_len bytes, compressed if LZ4) follows it on
 * the wire, typically as a second iovec shared by every connection.
 * Returns the prefix size (at most LAHJA_WIRE_EVENT_PREFIX_MAX), or 0 if
 * the flags are invalid or the frame would exceed UINT32_MAX.
 */
size_t lahja_wire_event_prefix(uint8_t *out, uint32_t type_id, uint8_t flags, uint64_t id,
                               uint32_t raw_len, size_t payload_len);

/* The prefix of an EVENT frame without flags: header and type id. */
#define LAHJA_WIRE_PLAIN_PREFIX (LAHJA_WIRE_HEADER_SIZE + 4)

/*
 * What lahja_wire_event_prefix writes for flags 0, REQUEST or RESPONSE
 * (with id), inline for the path of every small event; returns its size
 * (LAHJA_WIRE_PLAIN_PREFIX, or 8 more with an id).  type_id must be
 * bound and payload_len at most UINT32_MAX - 12.
 */
static inline size_t lahja_wire_small_prefix(uint8_t *out, uint32_t type_id, uint8_t flags,
                                             uint64_t id, uint32_t payload_len)
{
    size_t fixed = flags != 0 ? 12 : 4;
    /* Three little-endian words: the body's length; kind, flags and two
     * zero bytes; the type id.  Then the id. */
    uint32_t w[3] = { htole32(payload_len + (uint32_t)fixed),
                      htole32(LAHJA_WIRE_EVENT | (uint32_t)flags << 8), htole32(type_id) };
    memcpy(out, w, sizeof w);
    if (flags != 0) {
        uint64_t le = htole64(id);
        memcpy(out + LAHJA_WIRE_PLAIN_PREFIX, &le, sizeof le);
    }
    return LAHJA_WIRE_HEADER_SIZE + fixed;
}

/* The same, for flags 0. */
static inline void lahja_wire_plain_prefix(uint8_t *out, uint32_t type_id, uint32_t payload_len)
{
    lahja_wire_small_prefix(out, type_id, 0, 0, payload_len);
}

/* --------------------------------------------------------- receiving */

/* The peer's HELLO, as received. */
typedef struct lahja_wire_hello {
    uint8_t version;
    uint32_t features;
    uint32_t max_frame;
    char name[LAHJA_WIRE_NAME_MAX + 1]; /* NUL-terminated copy */
    size_t name_len;
} lahja_wire_hello_t;

/* A SUBS frame's types, walked with lahja_wire_subs_next. */
typedef struct lahja_wire_subs {
    uint32_t seq;
    uint32_t count;
    uint8_t flags;          /* LAHJA_WIRE_SUBS_ENTRIES or 0 */
    const uint8_t *p, *end; /* private cursor */
} lahja_wire_subs_t;

/* An EVENT frame: pointers into the caller's buffer. */
typedef struct lahja_wire_event {
    const char *type;       /* the interned name (owned by the rx state),
                               NUL-terminated */
    size_t type_len;
    uint8_t flags;          /* LAHJA_WIRE_REQUEST / RESPONSE / LZ4 / LENT */
    uint64_t id;            /* request id, 0 if neither flag */
    const uint8_t *payload; /* as sent: compressed when flags has LZ4 */
    size_t payload_len;
    size_t raw_len;         /* uncompressed length (== payload_len without LZ4;
                               LENT: the lent payload's, from the reference) */
} lahja_wire_event_t;

typedef struct lahja_wire_msg {
    uint8_t kind;           /* enum lahja_wire_kind */
    union {
        lahja_wire_hello_t hello;
        lahja_wire_subs_t subs;
        uint32_t ack_seq;
        uint64_t receipt;   /* RECEIPT: events read so far */
        uint32_t close_reason;
        lahja_wire_event_t event;
        struct {
            const uint8_t *body; /* lahja_wire_release_at */
            size_t n;
        } release;
    } u;                    /* TYPE frames fill nothing: the rx state keeps them */
} lahja_wire_msg_t;

/* Receive-side state of one connection. */
typedef struct lahja_wire_rx {
    uint32_t max_frame;     /* largest body accepted */
    uint32_t max_payload;   /* largest uncompressed payload accepted */
    uint32_t max_types;     /* most TYPE bindings accepted */
    uint32_t max_hello;     /* largest body accepted before HELLO */
    uint32_t max_subs;      /* most entries in one SUBS, each origin
                               named counting as one more */
    int hello_done;
    char **types;           /* types[id - 1], NUL-terminated copies, each
                               after a byte that holds its length */
    uint32_t ntypes, captypes;
} lahja_wire_rx_t;

void lahja_wire_rx_init(lahja_wire_rx_t *rx, uint32_t max_frame, uint32_t max_payload,
                        uint32_t max_types);

/*
 * The EVENT frame at buf (avail bytes) if it has no flags but REQUEST or
 * RESPONSE, read as lahja_wire_rx_next reads it, inline for the path of
 * every small event: its size, *ev filled; or 0 for anything else
 * (incomplete, another kind, other flags, or invalid), which
 * lahja_wire_rx_next then reads or refuses.
 */
static inline size_t lahja_wire_rx_small(const lahja_wire_rx_t *rx, const uint8_t *buf,
                                         size_t avail, lahja_wire_event_t *ev)
{
    if (avail < LAHJA_WIRE_PLAIN_PREFIX || !rx->hello_done)
        return 0;
    /* The three little-endian words lahja_wire_small_prefix writes. */
    uint32_t w[3];
    memcpy(w, buf, sizeof w);
    uint32_t body = le32toh(w[0]), kind = le32toh(w[1]), tid = le32toh(w[2]);
    if ((kind & 0xffff00ffu) != LAHJA_WIRE_EVENT)
        return 0;
    uint8_t flags = (uint8_t)(kind >> 8);
    uint32_t fixed = 4;
    if (flags == LAHJA_WIRE_REQUEST || flags == LAHJA_WIRE_RESPONSE)
        fixed = 12;
    else if (flags != 0)
        return 0;
    if (body < fixed || body > rx->max_frame || body - fixed > rx->max_payload
        || body > avail - LAHJA_WIRE_HEADER_SIZE || tid == 0 || tid > rx->ntypes)
        return 0;
    uint64_t id = 0;
    if (fixed == 12) {
        memcpy(&id, buf + LAHJA_WIRE_PLAIN_PREFIX, sizeof id);
        id = le64toh(id);
    }
    ev->type = rx->types[tid - 1];
    ev->type_len = (uint8_t)ev->type[-1];
    ev->flags = flags;
    ev->id = id;
    ev->payload = buf + LAHJA_WIRE_HEADER_SIZE + fixed;
    ev->payload_len = ev->raw_len = body - fixed;
    return LAHJA_WIRE_HEADER_SIZE + (size_t)body;
}

/* Bounds before the handshake and on SUBS (rx_init sets them to
 * max_frame and UINT32_MAX): a frame before HELLO whose body is over
 * max_hello, and a SUBS announcing more than max_subs types, are
 * -EMSGSIZE as soon as the field that tells is in. */
void lahja_wire_rx_limits(lahja_wire_rx_t *rx, uint32_t max_hello, uint32_t max_subs);

/* Frees the type table.  Accepts a zeroed or already freed state. */
void lahja_wire_rx_free(lahja_wire_rx_t *rx);

/*
 * Reads the next message from buf[0..avail).  Returns the number of bytes
 * the frame took (> 0) and fills *msg; or 0 if the frame is not complete
 * yet, with *need set to the number of bytes the whole frame needs (the
 * header's 8 until the header is in); or a negative error.  A frame that
 * breaks the protocol is an error as soon as its header (or its body, for
 * body checks) is in: the first frame must be HELLO and HELLO comes once;
 * a TYPE must bind the next id (1, 2, ...) to a valid name, within
 * max_types; an EVENT must use a bound id, consistent flags, and an LZ4
 * raw length within max_payload; SUBS must hold exactly `count` valid
 * types; unknown kinds, non-zero reserved bits and unknown flags are
 * errors; a body over max_frame is -EMSGSIZE before it is read.
 */
ssize_t lahja_wire_rx_next(lahja_wire_rx_t *rx, const uint8_t *buf, size_t avail,
                           lahja_wire_msg_t *msg, size_t *need);

/*
 * Next type of a SUBS message: returns 1 and sets *type (not
 * NUL-terminated, points into the frame) and *len, or 0 at the end.
 * The frame was validated whole by lahja_wire_rx_next.
 */
int lahja_wire_subs_next(lahja_wire_subs_t *it, const char **type, size_t *len);

/*
 * Next entry of a SUBS message, plain or with flag ENTRIES (a plain
 * frame's entries have flags 0 and no origins): returns 1 and fills *e
 * (pointers into the frame), or 0 at the end.  Walk e's origins with
 * lahja_wire_entry_origin.
 */
int lahja_wire_subs_entry(lahja_wire_subs_t *it, lahja_wire_entry_t *e);

/* Next origin of an entry: returns 1 and sets *name (not NUL-terminated)
 * and *len, or 0 when there are no more. */
int lahja_wire_entry_origin(lahja_wire_entry_t *e, const char **name, size_t *len);

/* ------------------------------------------------------------ sending */

/*
 * Send-side state of one connection: the type names bound so far
 * (name -> id, in a lahja_strmap_t).
 */
typedef struct lahja_wire_tx {
    lahja_strmap_t map;
    uint32_t ntypes;
} lahja_wire_tx_t;

void lahja_wire_tx_init(lahja_wire_tx_t *tx);
void lahja_wire_tx_free(lahja_wire_tx_t *tx);

/*
 * The id bound to a type on this connection.  If it has none yet, binds
 * the next id and sets *is_new: the caller must then send a TYPE frame
 * (lahja_wire_type_encode) before the EVENT that uses it.
 * Errors: -EINVAL (invalid type), -ENOMEM.
 */
int lahja_wire_tx_intern(lahja_wire_tx_t *tx, const char *type, size_t len, uint32_t *id,
                         int *is_new);
/* The same, with the type's lahja_strmap_hash (one per event, whatever
 * the number of connections it goes to). */
int lahja_wire_tx_intern_h(lahja_wire_tx_t *tx, const char *type, size_t len, uint64_t hash,
                           uint32_t *id, int *is_new);

/*
 * Undoes the binding lahja_wire_tx_intern_h just made (is_new set) when
 * its TYPE frame could not be queued, so that the next event of the type
 * binds it again rather than use an id the peer never learnt.  Only the
 * most recent binding can be undone.
 */
void lahja_wire_tx_unbind(lahja_wire_tx_t *tx, const char *type, size_t len, uint64_t hash);

/* ------------------------------------------------------- compression */

/*
 * LZ4 (block format) for payloads.  lahja_wire_lz4_bound is the room
 * compressing `len` bytes may need.  lahja_wire_lz4_compress returns the
 * compressed size, or 0 if it did not fit or did not save anything.
 * lahja_wire_lz4_decompress returns 0 when exactly raw_len bytes came
 * out, -EPROTO otherwise (corrupt input never writes past dst+raw_len).
 */
size_t lahja_wire_lz4_bound(size_t len);
size_t lahja_wire_lz4_compress(const void *src, size_t len, void *dst, size_t cap);
int lahja_wire_lz4_decompress(const void *src, size_t len, void *dst, size_t raw_len);

#pragma GCC visibility pop

#endif /* LAHJA_WIRE_H */
