/*
 * The wire codec: see wire.h for the contract and docs/protocol.md for
 * the bytes.  Integers are read and written a byte at a time, so that
 * the code depends neither on the host's byte order nor on alignment:
 * frames are parsed in place, at whatever offset they sit in a read
 * buffer.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>

#include "wire.h"

#define HDR LAHJA_WIRE_HEADER_SIZE

/* Fixed parts of the bodies, before their variable-length tails. */
#define HELLO_PREFIX 6  /* magic, version: the same in every version */
#define HELLO_FIXED 15  /* magic 5, version 1, features 4, max_frame 4, name_len 1 */
#define SUBS_FIXED 8    /* seq, count */
/* The most bytes one unit counted against max_subs takes: an entry
 * (flags, length, type, origin count) or one origin (length, name). */
#define SUBS_UNIT_MAX (3 + LAHJA_WIRE_NAME_MAX)
#define ACK_BODY 4      /* seq */
#define TYPE_FIXED 5    /* id, name_len */
#define RECEIPT_BODY 8  /* count */
#define CLOSE_BODY 4    /* reason */
#define EVENT_ID_FLAGS (LAHJA_WIRE_REQUEST | LAHJA_WIRE_RESPONSE)
#define EVENT_FLAGS_ALL (EVENT_ID_FLAGS | LAHJA_WIRE_LZ4 | LAHJA_WIRE_LENT)

static const uint8_t wire_magic[5] = { 'L', 'A', 'H', 'J', 'A' };

/* ------------------------------------------------------------ integers */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/*
 * n > max, for limits that only bind on 32-bit hosts: a function, so
 * that 64-bit builds do not warn about a comparison that is always false.
 */
static int exceeds(uint64_t n, uint64_t max)
{
    return n > max;
}

static size_t put_header(uint8_t *out, uint32_t body_len, uint8_t kind, uint8_t flags)
{
    put_u32(out, body_len);
    out[4] = kind;
    out[5] = flags;
    put_u16(out + 6, 0);
    return HDR;
}

/* -------------------------------------------------------------- names */

int lahja_wire_name_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > LAHJA_WIRE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        /* Names become file names (B1): printable, and no directory part. */
        if (c < 0x20 || c > 0x7e || c == '/')
            return 0;
    }
    return 1;
}

int lahja_wire_type_valid(const char *type, size_t len)
{
    if (type == NULL || len == 0 || len > LAHJA_WIRE_NAME_MAX)
        return 0;
    /* Receivers hand types out NUL-terminated, so a NUL would cut one short. */
    return memchr(type, '\0', len) == NULL;
}

int lahja_wire_pattern_valid(const char *type, size_t len)
{
    return lahja_wire_type_valid(type, len) && type[len - 1] == '*';
}

#define RESERVED "lahja."
#define RESERVED_LEN (sizeof RESERVED - 1)

int lahja_wire_pattern_match(const char *pat, size_t plen, const char *type, size_t len)
{
    if (len < plen || memcmp(pat, type, plen - 1) != 0)
        return 0;
    /* The reserved types (the built-in requests every endpoint answers)
     * match only a pattern that names them: `*` is everything of the
     * application's, and a catch-all must not answer for the library. */
    return len < RESERVED_LEN || memcmp(type, RESERVED, RESERVED_LEN) != 0 ||
           plen - 1 >= RESERVED_LEN;
}

/* ----------------------------------------------------------- encoding */

size_t lahja_wire_hello_encode(uint8_t *out, const char *name, size_t name_len,
                               uint32_t features, uint32_t max_frame)
{
    if (!lahja_wire_name_valid(name, name_len))
        return 0;
    size_t body = HELLO_FIXED + name_len;
    uint8_t *p = out + put_header(out, (uint32_t)body, LAHJA_WIRE_HELLO, 0);
    memcpy(p, wire_magic, sizeof wire_magic);
    p[5] = LAHJA_WIRE_VERSION;
    put_u32(p + 6, features);
    put_u32(p + 10, max_frame);
    p[14] = (uint8_t)name_len;
    memcpy(p + HELLO_FIXED, name, name_len);
    return HDR + body;
}

size_t lahja_wire_subs_size(size_t n, size_t total_len)
{
    /* Header, seq and count, then one length byte per type. */
    return HDR + SUBS_FIXED + n + total_len;
}

/* The body length of a SUBS frame, or 0 if a type is invalid or it is too big. */
static size_t subs_body_len(const char *const *types, const size_t *lens, size_t n)
{
    if (n > UINT32_MAX)
        return 0;
    size_t body = SUBS_FIXED;
    for (size_t i = 0; i < n; i++) {
        if (!lahja_wire_type_valid(types[i], lens[i]))
            return 0;
        body += 1 + lens[i]; /* each step adds at most 256: no wrap before the check */
        if (body > UINT32_MAX)
            return 0;
    }
    return body;
}

size_t lahja_wire_subs_encode(uint8_t *out, size_t cap, uint32_t seq,
                              const char *const *types, const size_t *lens, size_t n)
{
    size_t body = subs_body_len(types, lens, n);
    if (body == 0 || cap < HDR || body > cap - HDR)
        return 0;
    uint8_t *p = out + put_header(out, (uint32_t)body, LAHJA_WIRE_SUBS, 0);
    put_u32(p, seq);
    put_u32(p + 4, (uint32_t)n);
    p += SUBS_FIXED;
    for (size_t i = 0; i < n; i++) {
        *p++ = (uint8_t)lens[i];
        memcpy(p, types[i], lens[i]);
        p += lens[i];
    }
    return HDR + body;
}

/* The body length of an entry, or 0 if it is invalid. */
static size_t entry_len(const lahja_wire_entry_t *e)
{
    int pattern = (e->flags & LAHJA_WIRE_ENTRY_PATTERN) != 0;
    if ((e->flags & ~(unsigned)(LAHJA_WIRE_ENTRY_PATTERN | LAHJA_WIRE_ENTRY_ORIGINS)) != 0
        || (pattern ? !lahja_wire_pattern_valid(e->type, e->len)
                    : !lahja_wire_type_valid(e->type, e->len))
        || ((e->flags & LAHJA_WIRE_ENTRY_ORIGINS) != 0) != (e->norigins > 0)
        || e->norigins > LAHJA_WIRE_ORIGINS_MAX)
        return 0;
    size_t len = 2 + e->len;
    if (e->norigins > 0)
        len++;
    for (size_t i = 0; i < e->norigins; i++) {
        if (!lahja_wire_name_valid(e->origins[i], e->origin_lens[i]))
            return 0;
        len += 1 + e->origin_lens[i];
    }
    return len;
}

size_t lahja_wire_subs_entries_encode(uint8_t *out, size_t cap, uint32_t seq,
                                      const lahja_wire_entry_t *entries, size_t n)
{
    if (n > UINT32_MAX)
        return 0;
    size_t body = SUBS_FIXED;
    for (size_t i = 0; i < n; i++) {
        size_t len = entry_len(&entries[i]);
        if (len == 0)
            return 0;
        body += len; /* at most 256 * 258 a step: no wrap before the check */
        if (body > UINT32_MAX)
            return 0;
    }
    if (out == NULL)
        return HDR + body;
    if (cap < HDR || body > cap - HDR)
        return 0;
    uint8_t *p = out + put_header(out, (uint32_t)body, LAHJA_WIRE_SUBS, LAHJA_WIRE_SUBS_ENTRIES);
    put_u32(p, seq);
    put_u32(p + 4, (uint32_t)n);
    p += SUBS_FIXED;
    for (size_t i = 0; i < n; i++) {
        const lahja_wire_entry_t *e = &entries[i];
        *p++ = e->flags;
        *p++ = (uint8_t)e->len;
        memcpy(p, e->type, e->len);
        p += e->len;
        if (e->norigins == 0)
            continue;
        *p++ = (uint8_t)e->norigins;
        for (size_t k = 0; k < e->norigins; k++) {
            *p++ = (uint8_t)e->origin_lens[k];
            memcpy(p, e->origins[k], e->origin_lens[k]);
            p += e->origin_lens[k];
        }
    }
    return HDR + body;
}

size_t lahja_wire_ack_encode(uint8_t out[12], uint32_t seq)
{
    put_header(out, ACK_BODY, LAHJA_WIRE_SUBS_ACK, 0);
    put_u32(out + HDR, seq);
    return HDR + ACK_BODY;
}

size_t lahja_wire_release_encode(uint8_t *out, const uint64_t *offsets, size_t n)
{
    if (n == 0 || n > LAHJA_WIRE_RELEASE_MAX)
        return 0;
    put_header(out, (uint32_t)(8 * n), LAHJA_WIRE_RELEASE, 0);
    for (size_t i = 0; i < n; i++)
        put_u64(out + HDR + 8 * i, offsets[i]);
    return HDR + 8 * n;
}

uint64_t lahja_wire_release_at(const uint8_t *body, size_t i)
{
    return get_u64(body + 8 * i);
}

size_t lahja_wire_receipt_encode(uint8_t out[LAHJA_WIRE_RECEIPT_SIZE], uint64_t count)
{
    put_header(out, RECEIPT_BODY, LAHJA_WIRE_RECEIPT, 0);
    put_u64(out + HDR, count);
    return HDR + RECEIPT_BODY;
}

size_t lahja_wire_close_encode(uint8_t out[LAHJA_WIRE_CLOSE_SIZE], uint32_t reason)
{
    put_header(out, CLOSE_BODY, LAHJA_WIRE_CLOSE, 0);
    put_u32(out + HDR, reason);
    return HDR + CLOSE_BODY;
}

size_t lahja_wire_type_encode(uint8_t *out, uint32_t id, const char *type, size_t len)
{
    /* Id 0 is never bound: a receiver would refuse the frame. */
    if (id == 0 || !lahja_wire_type_valid(type, len))
        return 0;
    size_t body = TYPE_FIXED + len;
    uint8_t *p = out + put_header(out, (uint32_t)body, LAHJA_WIRE_TYPE, 0);
    put_u32(p, id);
    p[4] = (uint8_t)len;
    memcpy(p + TYPE_FIXED, type, len);
    return HDR + body;
}

static int event_flags_valid(uint8_t flags)
{
    if (flags & ~EVENT_FLAGS_ALL)
        return 0;
    /* An event either asks or answers, never both: one id field; a lent
     * payload is not compressed. */
    return (flags & EVENT_ID_FLAGS) != EVENT_ID_FLAGS
           && (flags & (LAHJA_WIRE_LZ4 | LAHJA_WIRE_LENT)) != (LAHJA_WIRE_LZ4 | LAHJA_WIRE_LENT);
}

/* The EVENT body's fixed fields for these (valid) flags. */
static size_t event_fixed_len(uint8_t flags)
{
    return 4 + ((flags & EVENT_ID_FLAGS) ? 8 : 0) + ((flags & LAHJA_WIRE_LZ4) ? 4 : 0);
}

size_t lahja_wire_event_prefix(uint8_t *out, uint32_t type_id, uint8_t flags, uint64_t id,
                               uint32_t raw_len, size_t payload_len)
{
    if (type_id == 0 || !event_flags_valid(flags))
        return 0;
    size_t fixed = event_fixed_len(flags);
    if (payload_len > UINT32_MAX - fixed)
        return 0;
    uint8_t *p = out + put_header(out, (uint32_t)(fixed + payload_len), LAHJA_WIRE_EVENT, flags);
    put_u32(p, type_id);
    p += 4;
    if (flags & EVENT_ID_FLAGS) {
        put_u64(p, id);
        p += 8;
    }
    if (flags & LAHJA_WIRE_LZ4)
        put_u32(p, raw_len);
    return HDR + fixed;
}

/* ---------------------------------------------------------- receiving */

void lahja_wire_rx_init(lahja_wire_rx_t *rx, uint32_t max_frame, uint32_t max_payload,
                        uint32_t max_types)
{
    *rx = (lahja_wire_rx_t){
        .max_frame = max_frame,
        .max_payload = max_payload,
        .max_types = max_types,
        .max_hello = max_frame,
        .max_subs = UINT32_MAX,
    };
}

void lahja_wire_rx_limits(lahja_wire_rx_t *rx, uint32_t max_hello, uint32_t max_subs)
{
    rx->max_hello = max_hello;
    rx->max_subs = max_subs;
}

void lahja_wire_rx_free(lahja_wire_rx_t *rx)
{
    for (uint32_t i = 0; i < rx->ntypes; i++)
        free(rx->types[i] - 1);
    free(rx->types);
    rx->types = NULL;
    rx->ntypes = rx->captypes = 0;
}

/* The smallest valid body of each kind, knowable from the header alone. */
static size_t body_min(uint8_t kind, uint8_t flags)
{
    switch (kind) {
    case LAHJA_WIRE_HELLO: return HELLO_PREFIX;
    case LAHJA_WIRE_SUBS: return SUBS_FIXED;
    case LAHJA_WIRE_SUBS_ACK: return ACK_BODY;
    case LAHJA_WIRE_TYPE: return TYPE_FIXED + 1;
    case LAHJA_WIRE_RECEIPT: return RECEIPT_BODY;
    case LAHJA_WIRE_CLOSE: return CLOSE_BODY;
    case LAHJA_WIRE_RELEASE: return 8;
    default: return event_fixed_len(flags) + ((flags & LAHJA_WIRE_LENT) ? LAHJA_WIRE_LENT_SIZE : 0);
    }
}

/* The largest valid body; HELLO's depends on the version, so it waits. */
static size_t body_max(uint8_t kind)
{
    switch (kind) {
    case LAHJA_WIRE_SUBS_ACK: return ACK_BODY;
    case LAHJA_WIRE_TYPE: return TYPE_FIXED + LAHJA_WIRE_NAME_MAX;
    case LAHJA_WIRE_RECEIPT: return RECEIPT_BODY;
    case LAHJA_WIRE_CLOSE: return CLOSE_BODY;
    case LAHJA_WIRE_RELEASE: return 8 * LAHJA_WIRE_RELEASE_MAX;
    default: return UINT32_MAX;
    }
}

/* Every check that needs only the 8 header bytes. */
static int check_header(const lahja_wire_rx_t *rx, uint32_t body_len, uint8_t kind,
                        uint8_t flags, uint16_t reserved)
{
    if (kind < LAHJA_WIRE_HELLO || kind > LAHJA_WIRE_RELEASE || reserved != 0)
        return -EPROTO;
    /* HELLO first, and only first. */
    if ((kind == LAHJA_WIRE_HELLO) == (rx->hello_done != 0))
        return -EPROTO;
    if (kind == LAHJA_WIRE_EVENT ? !event_flags_valid(flags)
        : kind == LAHJA_WIRE_SUBS ? (flags & ~LAHJA_WIRE_SUBS_ENTRIES) != 0
        : flags != 0)
        return -EPROTO;
    /* The frame's size must also fit the ssize_t we return.  Before the
     * handshake, only a HELLO can come: a few hundred bytes. */
    if (body_len > (rx->hello_done ? rx->max_frame : rx->max_hello)
        || exceeds(body_len, (uint64_t)SSIZE_MAX - HDR))
        return -EMSGSIZE;
    if (body_len < body_min(kind, flags) || body_len > body_max(kind))
        return -EPROTO;
    if ((kind == LAHJA_WIRE_RELEASE && body_len % 8 != 0)
        || (kind == LAHJA_WIRE_EVENT && (flags & LAHJA_WIRE_LENT)
            && body_len != event_fixed_len(flags) + LAHJA_WIRE_LENT_SIZE))
        return -EPROTO;
    /* A plain SUBS entry takes at most 256 bytes, a counted unit of one
     * with flag ENTRIES SUBS_UNIT_MAX: more is over max_subs. */
    if (kind == LAHJA_WIRE_SUBS
        && (uint64_t)body_len - SUBS_FIXED
               > (uint64_t)rx->max_subs * (flags ? SUBS_UNIT_MAX : 256))
        return -EMSGSIZE;
    /* An uncompressed payload's size is known now; a compressed one's waits for raw_len. */
    if (kind == LAHJA_WIRE_EVENT && !(flags & LAHJA_WIRE_LZ4)
        && body_len - event_fixed_len(flags) > rx->max_payload)
        return -EMSGSIZE;
    return 0;
}

static int parse_hello(lahja_wire_rx_t *rx, const uint8_t *b, size_t len,
                       lahja_wire_hello_t *h)
{
    if (memcmp(b, wire_magic, sizeof wire_magic) != 0)
        return -EPROTO;
    /* Told apart before the rest, whose layout is this version's. */
    if (b[5] != LAHJA_WIRE_VERSION)
        return -EPROTONOSUPPORT;
    if (len < HELLO_FIXED || len != HELLO_FIXED + (size_t)b[14])
        return -EPROTO;
    size_t name_len = b[14];
    if (!lahja_wire_name_valid((const char *)b + HELLO_FIXED, name_len))
        return -EPROTO;
    h->version = b[5];
    h->features = get_u32(b + 6);
    h->max_frame = get_u32(b + 10);
    memcpy(h->name, b + HELLO_FIXED, name_len);
    h->name[name_len] = '\0';
    h->name_len = name_len;
    rx->hello_done = 1;
    return 0;
}

/* Checks one entry of a SUBS with flag ENTRIES at *pp, moving past it;
 * *units grows by the entry and its origins. */
static int check_entry(const uint8_t **pp, const uint8_t *end, uint64_t *units)
{
    const uint8_t *p = *pp;
    if (end - p < 2)
        return -EPROTO;
    uint8_t flags = *p++;
    size_t n = *p++;
    if ((flags & ~(unsigned)(LAHJA_WIRE_ENTRY_PATTERN | LAHJA_WIRE_ENTRY_ORIGINS)) != 0
        || n > (size_t)(end - p))
        return -EPROTO;
    if ((flags & LAHJA_WIRE_ENTRY_PATTERN) ? !lahja_wire_pattern_valid((const char *)p, n)
                                           : !lahja_wire_type_valid((const char *)p, n))
        return -EPROTO;
    p += n;
    (*units)++;
    if (flags & LAHJA_WIRE_ENTRY_ORIGINS) {
        if (p == end || *p == 0)
            return -EPROTO;
        size_t k = *p++;
        *units += k;
        for (size_t i = 0; i < k; i++) {
            if (p == end)
                return -EPROTO;
            size_t len = *p++;
            if (len > (size_t)(end - p) || !lahja_wire_name_valid((const char *)p, len))
                return -EPROTO;
            p += len;
        }
    }
    *pp = p;
    return 0;
}

static int parse_subs(const lahja_wire_rx_t *rx, const uint8_t *b, size_t len, uint8_t flags,
                      lahja_wire_subs_t *s)
{
    const uint8_t *p = b + SUBS_FIXED, *end = b + len;
    uint32_t count = get_u32(b + 4);
    if (count > rx->max_subs)
        return -EMSGSIZE;
    uint64_t units = 0;
    /* Each entry takes at least 2 bytes, so this loop is bounded by len. */
    for (uint32_t i = 0; i < count; i++) {
        if (flags) {
            int rc = check_entry(&p, end, &units);
            if (rc < 0)
                return rc;
            if (units > rx->max_subs)
                return -EMSGSIZE;
            continue;
        }
        if (p == end)
            return -EPROTO;
        size_t n = *p++;
        if (n > (size_t)(end - p) || !lahja_wire_type_valid((const char *)p, n))
            return -EPROTO;
        p += n;
    }
    if (p != end)
        return -EPROTO;
    s->seq = get_u32(b);
    s->count = count;
    s->flags = flags;
    s->p = b + SUBS_FIXED;
    s->end = end;
    return 0;
}

/* Room for one more binding, growing geometrically up to max_types. */
static int types_reserve(lahja_wire_rx_t *rx)
{
    if (rx->ntypes < rx->captypes)
        return 0;
    /* ntypes == captypes < max_types here, so cap grows by at least one. */
    uint32_t cap = 8;
    if (rx->captypes)
        cap = rx->captypes > rx->max_types / 2 ? rx->max_types : rx->captypes * 2;
    if (cap > rx->max_types)
        cap = rx->max_types;
    if (exceeds(cap, SIZE_MAX / sizeof *rx->types))
        return -ENOMEM;
    char **t = realloc(rx->types, (size_t)cap * sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    rx->types = t;
    rx->captypes = cap;
    return 0;
}

static int parse_type(lahja_wire_rx_t *rx, const uint8_t *b, size_t len)
{
    size_t name_len = b[4];
    if (len != TYPE_FIXED + name_len || !lahja_wire_type_valid((const char *)b + TYPE_FIXED, name_len))
        return -EPROTO;
    if (rx->ntypes >= rx->max_types)
        return -EMSGSIZE;
    if (get_u32(b) != rx->ntypes + 1)
        return -EPROTO;
    int rc = types_reserve(rx);
    if (rc < 0)
        return rc;
    char *name = malloc(1 + name_len + 1); /* its length, it, NUL */
    if (name == NULL)
        return -ENOMEM;
    name[0] = (char)(uint8_t)name_len;
    memcpy(name + 1, b + TYPE_FIXED, name_len);
    name[1 + name_len] = '\0';
    rx->types[rx->ntypes++] = name + 1;
    return 0;
}

static int parse_event(const lahja_wire_rx_t *rx, const uint8_t *b, size_t len, uint8_t flags,
                       lahja_wire_event_t *ev)
{
    const uint8_t *p = b, *end = b + len; /* len >= the fixed fields: checked */
    uint32_t type_id = get_u32(p);
    p += 4;
    if (type_id == 0 || type_id > rx->ntypes)
        return -EPROTO;
    uint64_t id = 0;
    if (flags & EVENT_ID_FLAGS) {
        id = get_u64(p);
        p += 8;
    }
    size_t payload_len = (size_t)(end - p);
    size_t raw_len = payload_len;
    if (flags & LAHJA_WIRE_LZ4) {
        raw_len = get_u32(p);
        p += 4;
        payload_len -= 4;
        if (raw_len > rx->max_payload)
            return -EMSGSIZE;
    } else if (flags & LAHJA_WIRE_LENT) {
        uint64_t lent = get_u64(p + 8); /* the reference: checked by size above */
        if (lent > rx->max_payload)
            return -EMSGSIZE;
        raw_len = (size_t)lent;
    }
    ev->type = rx->types[type_id - 1];
    ev->type_len = (uint8_t)ev->type[-1];
    ev->flags = flags;
    ev->id = id;
    ev->payload = p;
    ev->payload_len = payload_len;
    ev->raw_len = raw_len;
    return 0;
}

ssize_t lahja_wire_rx_next(lahja_wire_rx_t *rx, const uint8_t *buf, size_t avail,
                           lahja_wire_msg_t *msg, size_t *need)
{
    if (avail < HDR) {
        *need = HDR;
        return 0;
    }
    uint32_t body_len = get_u32(buf);
    uint8_t kind = buf[4], flags = buf[5];
    int rc = check_header(rx, body_len, kind, flags, get_u16(buf + 6));
    if (rc < 0)
        return rc;
    size_t frame = HDR + (size_t)body_len;
    if (avail < frame) {
        /* A SUBS's count is refused before the rest of it is read. */
        if (kind == LAHJA_WIRE_SUBS && avail >= HDR + SUBS_FIXED
            && get_u32(buf + HDR + 4) > rx->max_subs)
            return -EMSGSIZE;
        *need = frame;
        return 0;
    }
    const uint8_t *body = buf + HDR;
    switch (kind) {
    case LAHJA_WIRE_HELLO: rc = parse_hello(rx, body, body_len, &msg->u.hello); break;
    case LAHJA_WIRE_SUBS: rc = parse_subs(rx, body, body_len, flags, &msg->u.subs); break;
    case LAHJA_WIRE_SUBS_ACK: msg->u.ack_seq = get_u32(body); break;
    case LAHJA_WIRE_RECEIPT: msg->u.receipt = get_u64(body); break;
    case LAHJA_WIRE_CLOSE: msg->u.close_reason = get_u32(body); break;
    case LAHJA_WIRE_RELEASE:
        msg->u.release.body = body;
        msg->u.release.n = body_len / 8;
        break;
    case LAHJA_WIRE_TYPE: rc = parse_type(rx, body, body_len); break;
    default: rc = parse_event(rx, body, body_len, flags, &msg->u.event); break;
    }
    if (rc < 0)
        return rc;
    msg->kind = kind;
    return (ssize_t)frame;
}

int lahja_wire_subs_next(lahja_wire_subs_t *it, const char **type, size_t *len)
{
    lahja_wire_entry_t e;
    if (!lahja_wire_subs_entry(it, &e))
        return 0;
    *type = e.type;
    *len = e.len;
    return 1;
}

int lahja_wire_subs_entry(lahja_wire_subs_t *it, lahja_wire_entry_t *e)
{
    /* Checked again so that a zeroed or exhausted iterator is harmless:
     * the frame was validated whole by lahja_wire_rx_next. */
    if (it->p == NULL || it->p >= it->end)
        return 0;
    const uint8_t *p = it->p;
    memset(e, 0, sizeof *e);
    if (it->flags & LAHJA_WIRE_SUBS_ENTRIES)
        e->flags = *p++;
    if (p >= it->end || (size_t)*p > (size_t)(it->end - p) - 1)
        return 0;
    e->len = *p++;
    e->type = (const char *)p;
    p += e->len;
    if (e->flags & LAHJA_WIRE_ENTRY_ORIGINS) {
        if (p >= it->end)
            return 0;
        e->norigins = e->left = *p++;
        e->op = p;
        for (size_t i = 0; i < e->norigins; i++) {
            if (p >= it->end || (size_t)*p > (size_t)(it->end - p) - 1)
                return 0;
            p += 1 + *p;
        }
    }
    it->p = p;
    return 1;
}

int lahja_wire_entry_origin(lahja_wire_entry_t *e, const char **name, size_t *len)
{
    if (e->left == 0 || e->op == NULL)
        return 0;
    *len = e->op[0];
    *name = (const char *)e->op + 1;
    e->op += 1 + *len;
    e->left--;
    return 1;
}

/* ------------------------------------------------------------ sending */

void lahja_wire_tx_init(lahja_wire_tx_t *tx)
{
    lahja_strmap_init(&tx->map);
    tx->ntypes = 0;
}

void lahja_wire_tx_free(lahja_wire_tx_t *tx)
{
    lahja_strmap_free(&tx->map);
    tx->ntypes = 0;
}

int lahja_wire_tx_intern(lahja_wire_tx_t *tx, const char *type, size_t len, uint32_t *id,
                         int *is_new)
{
    return lahja_wire_tx_intern_h(tx, type, len, lahja_strmap_hash(type, len), id, is_new);
}

int lahja_wire_tx_intern_h(lahja_wire_tx_t *tx, const char *type, size_t len, uint64_t hash,
                           uint32_t *id, int *is_new)
{
    lahja_strmap_slot_t *s = lahja_strmap_find_h(&tx->map, type, len, hash);
    if (s != NULL) { /* bound before: checked then */
        *is_new = 0;
        *id = (uint32_t)(uintptr_t)s->value;
        return 0;
    }
    if (!lahja_wire_type_valid(type, len))
        return -EINVAL;
    if (tx->ntypes == UINT32_MAX)
        return -ENOMEM;
    s = lahja_strmap_insert_h(&tx->map, type, len, hash, is_new);
    if (s == NULL)
        return -ENOMEM;
    if (*is_new)
        s->value = (void *)(uintptr_t)++tx->ntypes; /* ids in binding order */
    *id = (uint32_t)(uintptr_t)s->value;
    return 0;
}

void lahja_wire_tx_unbind(lahja_wire_tx_t *tx, const char *type, size_t len, uint64_t hash)
{
    lahja_strmap_slot_t *s = lahja_strmap_find_h(&tx->map, type, len, hash);
    if (s != NULL && (uint32_t)(uintptr_t)s->value == tx->ntypes) {
        lahja_strmap_remove(&tx->map, s);
        tx->ntypes--;
    }
}

/* -------------------------------------------------------- compression */

size_t lahja_wire_lz4_bound(size_t len)
{
    /* LZ4_COMPRESSBOUND's formula, in size_t: valid beyond LZ4's int range too. */
    return len + len / 255 + 16;
}

size_t lahja_wire_lz4_compress(const void *src, size_t len, void *dst, size_t cap)
{
    if (len == 0 || len > LZ4_MAX_INPUT_SIZE)
        return 0;
    int icap = cap > INT_MAX ? INT_MAX : (int)cap;
    int n = LZ4_compress_default(src, dst, (int)len, icap);
    /* An LZ4 frame costs 4 bytes of raw length: worth it only if smaller. */
    if (n <= 0 || (size_t)n >= len)
        return 0;
    return (size_t)n;
}

int lahja_wire_lz4_decompress(const void *src, size_t len, void *dst, size_t raw_len)
{
    if (src == NULL || len == 0 || len > INT_MAX || raw_len > INT_MAX)
        return -EPROTO;
    unsigned char none;
    if (raw_len == 0)
        dst = &none; /* LZ4 writes nothing then, but wants a buffer */
    else if (dst == NULL)
        return -EPROTO;
    /* LZ4_decompress_safe never writes past dst + raw_len, whatever src holds. */
    int n = LZ4_decompress_safe(src, dst, (int)len, (int)raw_len);
    return n >= 0 && (size_t)n == raw_len ? 0 : -EPROTO;
}
