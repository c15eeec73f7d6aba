/*
 * libFuzzer target for the wire decoder.  The input is what a peer could
 * send on a connection; it reaches a lahja_wire_rx_t in reads of varying
 * sizes and every message is handled the way a receiving connection
 * handles it: SUBS entries walked, LZ4 payloads decompressed into a
 * buffer of the announced size.  On top of the sanitizers, it checks the
 * decoder's promises: never more than was available, `need` within the
 * configured bound, and every accepted frame re-encodes to the very same
 * bytes (the encoding is canonical).
 *
 * Input layout: byte 0 picks the limits (bits 0-1) and whether the
 * bounds before the handshake and on SUBS are tight (bit 2), byte 1 how
 * the stream is split into reads; the rest is the stream.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

#include "wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken promise is a finding, whatever NDEBUG says. */
#define CHECK(c)                                                                    \
    do {                                                                            \
        if (!(c)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);   \
            abort();                                                                \
        }                                                                           \
    } while (0)

static const struct {
    uint32_t frame, payload, types;
} limits[4] = {
    { 64, 64, 2 },
    { 512, 256, 8 },
    { 4096, 4096, 16 },
    { 65536, 65536, 1024 },
};

/* The reads a connection gets: sizes from a small PRNG seeded by the input. */
struct reader {
    const uint8_t *p;
    size_t left;
    uint32_t state;
    uint8_t mode; /* 0: 1 byte at a time, 1: up to 16, 2: up to 1024, 3: all */
};

static size_t read_size(struct reader *r)
{
    r->state = r->state * 1103515245u + 12345u;
    uint32_t x = r->state >> 16;
    switch (r->mode) {
    case 0: return 1;
    case 1: return 1 + x % 16;
    case 2: return 1 + x % 1024;
    default: return SIZE_MAX;
    }
}

/* The tight bounds: a HELLO body of up to 40 bytes, SUBS of 3 types. */
#define TIGHT_HELLO 40
#define TIGHT_SUBS 3

struct conn {
    lahja_wire_rx_t rx;
    lahja_wire_tx_t tx; /* exercised with the names the peer binds */
    uint32_t max_frame;
};

static void handle_hello(const struct conn *c, const lahja_wire_hello_t *h, const uint8_t *frame,
                         size_t n)
{
    CHECK(n - LAHJA_WIRE_HEADER_SIZE <= c->rx.max_hello);
    CHECK(h->version == LAHJA_WIRE_VERSION);
    CHECK(lahja_wire_name_valid(h->name, h->name_len));
    CHECK(h->name[h->name_len] == '\0');
    uint8_t out[LAHJA_WIRE_HELLO_MAX];
    size_t m = lahja_wire_hello_encode(out, h->name, h->name_len, h->features, h->max_frame);
    CHECK(m == n && memcmp(out, frame, n) == 0);
}

/* A SUBS with flag ENTRIES: every entry and origin within the frame and
 * valid, within max_subs counted units, and re-encoded to the same bytes. */
static void handle_subs_entries(const struct conn *c, lahja_wire_subs_t it,
                                const uint8_t *frame, size_t n)
{
    lahja_wire_entry_t *es = malloc((it.count + 1) * sizeof *es);
    /* Origins: at most (n - 16) / 2 names in the whole frame. */
    size_t maxo = (n - LAHJA_WIRE_HEADER_SIZE - 8) / 2 + 1;
    const char **names = malloc(maxo * sizeof *names);
    size_t *nlens = malloc(maxo * sizeof *nlens);
    CHECK(es != NULL && names != NULL && nlens != NULL);
    size_t k = 0, o = 0;
    uint64_t units = 0;
    lahja_wire_entry_t e;
    while (lahja_wire_subs_entry(&it, &e)) {
        CHECK(k < it.count);
        CHECK((e.flags & LAHJA_WIRE_ENTRY_PATTERN) ? lahja_wire_pattern_valid(e.type, e.len)
                                                   : lahja_wire_type_valid(e.type, e.len));
        CHECK((const uint8_t *)e.type > frame && (const uint8_t *)e.type + e.len <= frame + n);
        CHECK(((e.flags & LAHJA_WIRE_ENTRY_ORIGINS) != 0) == (e.norigins > 0));
        es[k] = e;
        es[k].origins = names + o;
        es[k].origin_lens = nlens + o;
        const char *name;
        size_t len, m = 0;
        while (lahja_wire_entry_origin(&e, &name, &len)) {
            CHECK(o < maxo);
            CHECK(lahja_wire_name_valid(name, len));
            CHECK((const uint8_t *)name > frame && (const uint8_t *)name + len <= frame + n);
            names[o] = name;
            nlens[o++] = len;
            m++;
        }
        CHECK(m == es[k].norigins);
        units += 1 + m;
        k++;
    }
    CHECK(k == it.count);
    CHECK(units <= c->rx.max_subs);
    CHECK(lahja_wire_subs_entries_encode(NULL, 0, it.seq, es, k) == n);
    uint8_t *out = malloc(n);
    CHECK(out != NULL);
    CHECK(lahja_wire_subs_entries_encode(out, n, it.seq, es, k) == n);
    CHECK(memcmp(out, frame, n) == 0);
    free(out);
    free(nlens);
    free(names);
    free(es);
}

static void handle_subs(const struct conn *c, lahja_wire_subs_t it, const uint8_t *frame,
                        size_t n)
{
    /* A valid frame holds at most (n - 16) / 2 entries: bounded arrays. */
    size_t max = (n - LAHJA_WIRE_HEADER_SIZE - 8) / 2;
    CHECK(it.count <= max);
    CHECK(it.count <= (uint64_t)c->rx.max_subs);
    CHECK(it.flags == (frame[5] & LAHJA_WIRE_SUBS_ENTRIES));
    if (it.flags & LAHJA_WIRE_SUBS_ENTRIES) {
        handle_subs_entries(c, it, frame, n);
        return;
    }
    const char **types = malloc((it.count + 1) * sizeof *types);
    size_t *lens = malloc((it.count + 1) * sizeof *lens);
    CHECK(types != NULL && lens != NULL);
    size_t k = 0, total = 0;
    const char *t;
    size_t len;
    while (lahja_wire_subs_next(&it, &t, &len)) {
        CHECK(k < it.count);
        CHECK(lahja_wire_type_valid(t, len));
        CHECK((const uint8_t *)t > frame && (const uint8_t *)t + len <= frame + n);
        types[k] = t;
        lens[k++] = len;
        total += len;
    }
    CHECK(k == it.count);
    CHECK(lahja_wire_subs_size(k, total) == n);
    uint8_t *out = malloc(n);
    CHECK(out != NULL);
    CHECK(lahja_wire_subs_encode(out, n, it.seq, types, lens, k) == n);
    CHECK(memcmp(out, frame, n) == 0);
    free(out);
    free(lens);
    free(types);
}

static void handle_type(struct conn *c, const uint8_t *frame, size_t n)
{
    const lahja_wire_rx_t *rx = &c->rx;
    CHECK(rx->ntypes >= 1 && rx->ntypes <= rx->max_types && rx->ntypes <= rx->captypes);
    const char *name = rx->types[rx->ntypes - 1];
    size_t len = strlen(name);
    uint8_t out[LAHJA_WIRE_HEADER_SIZE + 5 + LAHJA_WIRE_NAME_MAX];
    CHECK(lahja_wire_type_encode(out, rx->ntypes, name, len) == n);
    CHECK(memcmp(out, frame, n) == 0);

    /* The same name twice is the same id, new only the first time. */
    uint32_t id, again;
    int is_new, is_new_again;
    CHECK(lahja_wire_tx_intern(&c->tx, name, len, &id, &is_new) == 0);
    CHECK(!is_new || id == c->tx.ntypes);
    CHECK(lahja_wire_tx_intern(&c->tx, name, len, &again, &is_new_again) == 0);
    CHECK(again == id && !is_new_again);
}

/* Decompress as a receiver would, then check compression round-trips. */
static void handle_lz4(const lahja_wire_event_t *ev)
{
    uint8_t *raw = malloc(ev->raw_len ? ev->raw_len : 1);
    CHECK(raw != NULL);
    if (lahja_wire_lz4_decompress(ev->payload, ev->payload_len, raw, ev->raw_len) == 0
        && ev->raw_len > 0) {
        size_t cap = lahja_wire_lz4_bound(ev->raw_len);
        uint8_t *z = malloc(cap), *back = malloc(ev->raw_len);
        CHECK(z != NULL && back != NULL);
        size_t zn = lahja_wire_lz4_compress(raw, ev->raw_len, z, cap);
        CHECK(zn < ev->raw_len);
        if (zn > 0) {
            CHECK(lahja_wire_lz4_decompress(z, zn, back, ev->raw_len) == 0);
            CHECK(memcmp(back, raw, ev->raw_len) == 0);
        }
        free(back);
        free(z);
    }
    free(raw);
}

static void handle_event(const struct conn *c, const lahja_wire_event_t *ev,
                         const uint8_t *frame, size_t n)
{
    CHECK(ev->type != NULL && strlen(ev->type) == ev->type_len);
    CHECK(lahja_wire_type_valid(ev->type, ev->type_len));
    CHECK(ev->payload >= frame && ev->payload + ev->payload_len == frame + n);
    CHECK(ev->raw_len <= c->rx.max_payload);
    CHECK((ev->flags & (LAHJA_WIRE_LZ4 | LAHJA_WIRE_LENT)) != (LAHJA_WIRE_LZ4 | LAHJA_WIRE_LENT));
    if (ev->flags & LAHJA_WIRE_LENT) {
        /* A reference: offset, then the lent payload's length. */
        CHECK(ev->payload_len == LAHJA_WIRE_LENT_SIZE);
        uint64_t len = 0;
        for (int i = 7; i >= 0; i--)
            len = len << 8 | ev->payload[8 + i];
        CHECK(ev->raw_len == len);
    } else if (!(ev->flags & LAHJA_WIRE_LZ4)) {
        CHECK(ev->raw_len == ev->payload_len);
    }
    if (!(ev->flags & (LAHJA_WIRE_REQUEST | LAHJA_WIRE_RESPONSE)))
        CHECK(ev->id == 0);

    uint32_t type_id = (uint32_t)frame[8] | (uint32_t)frame[9] << 8
                       | (uint32_t)frame[10] << 16 | (uint32_t)frame[11] << 24;
    CHECK(type_id >= 1 && type_id <= c->rx.ntypes);
    CHECK(strcmp(c->rx.types[type_id - 1], ev->type) == 0);
    uint8_t out[LAHJA_WIRE_EVENT_PREFIX_MAX];
    size_t m = lahja_wire_event_prefix(out, type_id, ev->flags, ev->id,
                                       (ev->flags & LAHJA_WIRE_LENT) ? 0 : (uint32_t)ev->raw_len,
                                       ev->payload_len);
    CHECK(m > 0 && m + ev->payload_len == n && memcmp(out, frame, m) == 0);

    if (ev->flags & LAHJA_WIRE_LZ4)
        handle_lz4(ev);
}

static void handle(struct conn *c, const lahja_wire_msg_t *msg, const uint8_t *frame, size_t n)
{
    switch (msg->kind) {
    case LAHJA_WIRE_HELLO: handle_hello(c, &msg->u.hello, frame, n); break;
    case LAHJA_WIRE_SUBS: handle_subs(c, msg->u.subs, frame, n); break;
    case LAHJA_WIRE_SUBS_ACK: {
        uint8_t out[12];
        CHECK(n == 12 && lahja_wire_ack_encode(out, msg->u.ack_seq) == 12);
        CHECK(memcmp(out, frame, 12) == 0);
        break;
    }
    case LAHJA_WIRE_TYPE: handle_type(c, frame, n); break;
    case LAHJA_WIRE_EVENT: handle_event(c, &msg->u.event, frame, n); break;
    case LAHJA_WIRE_RECEIPT: {
        uint8_t out[LAHJA_WIRE_RECEIPT_SIZE];
        CHECK(n == sizeof out && lahja_wire_receipt_encode(out, msg->u.receipt) == n);
        CHECK(memcmp(out, frame, n) == 0);
        break;
    }
    case LAHJA_WIRE_CLOSE: {
        uint8_t out[LAHJA_WIRE_CLOSE_SIZE];
        CHECK(n == sizeof out && lahja_wire_close_encode(out, msg->u.close_reason) == n);
        CHECK(memcmp(out, frame, n) == 0);
        break;
    }
    case LAHJA_WIRE_RELEASE: {
        CHECK(msg->u.release.n >= 1 && msg->u.release.n <= LAHJA_WIRE_RELEASE_MAX);
        CHECK(n == LAHJA_WIRE_HEADER_SIZE + 8 * msg->u.release.n);
        uint64_t offs[64];
        size_t k = msg->u.release.n < 64 ? msg->u.release.n : 64;
        for (size_t i = 0; i < k; i++)
            offs[i] = lahja_wire_release_at(msg->u.release.body, i);
        if (k == msg->u.release.n) {
            uint8_t out[LAHJA_WIRE_HEADER_SIZE + 8 * 64];
            CHECK(lahja_wire_release_encode(out, offs, k) == n && memcmp(out, frame, n) == 0);
        }
        break;
    }
    default: CHECK(!"unknown kind accepted");
    }
}

/*
 * Parses every complete frame in buf[0..have); returns the bytes used,
 * or -1 once the connection is dropped.  The free part of the buffer is
 * poisoned meanwhile, so that a read past `avail` is caught.
 */
/* The flags lahja_wire_rx_small reads. */
static int small_flags(uint8_t flags)
{
    return flags == 0 || flags == LAHJA_WIRE_REQUEST || flags == LAHJA_WIRE_RESPONSE;
}

static long parse(struct conn *c, uint8_t *buf, size_t have, size_t cap)
{
    size_t off = 0;
    ASAN_POISON_MEMORY_REGION(buf + have, cap - have);
    for (;;) {
        lahja_wire_msg_t msg;
        size_t need = 0, avail = have - off;
        lahja_wire_event_t plain;
        size_t pn = lahja_wire_rx_small(&c->rx, buf + off, avail, &plain);
        ssize_t n = lahja_wire_rx_next(&c->rx, buf + off, avail, &msg, &need);
        /* The inline reader of small events reads exactly those (no flag
         * but REQUEST or RESPONSE), as rx_next does. */
        if (pn > 0) {
            CHECK(n == (ssize_t)pn && msg.kind == LAHJA_WIRE_EVENT && small_flags(msg.u.event.flags));
            CHECK(plain.type == msg.u.event.type && plain.type_len == msg.u.event.type_len);
            CHECK(plain.payload == msg.u.event.payload && plain.raw_len == msg.u.event.raw_len
                  && plain.payload_len == msg.u.event.payload_len && plain.id == msg.u.event.id
                  && plain.flags == msg.u.event.flags);
        } else {
            CHECK(n <= 0 || msg.kind != LAHJA_WIRE_EVENT || !small_flags(msg.u.event.flags));
        }
        if (n < 0) {
            off = (size_t)-1;
            break;
        }
        if (n == 0) {
            CHECK(need > avail && need <= LAHJA_WIRE_HEADER_SIZE + (size_t)c->max_frame);
            break;
        }
        CHECK((size_t)n <= avail && (size_t)n >= LAHJA_WIRE_HEADER_SIZE);
        handle(c, &msg, buf + off, (size_t)n);
        off += (size_t)n;
    }
    ASAN_UNPOISON_MEMORY_REGION(buf + have, cap - have);
    return off == (size_t)-1 ? -1 : (long)off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    struct conn c = { .max_frame = limits[data[0] & 3].frame };
    lahja_wire_rx_init(&c.rx, limits[data[0] & 3].frame, limits[data[0] & 3].payload,
                       limits[data[0] & 3].types);
    if (data[0] & 4)
        lahja_wire_rx_limits(&c.rx, TIGHT_HELLO, TIGHT_SUBS);
    lahja_wire_tx_init(&c.tx);
    struct reader r = { .p = data + 2, .left = size - 2, .state = data[1], .mode = data[1] & 3 };

    /* The read buffer of a connection: room for the largest frame. */
    size_t cap = LAHJA_WIRE_HEADER_SIZE + (size_t)c.max_frame, have = 0;
    uint8_t *buf = malloc(cap);
    CHECK(buf != NULL);
    while (r.left > 0) {
        /* An incomplete frame always fits, so there is room to read into. */
        CHECK(have < cap);
        size_t k = read_size(&r);
        if (k > r.left)
            k = r.left;
        if (k > cap - have)
            k = cap - have;
        memcpy(buf + have, r.p, k);
        r.p += k;
        r.left -= k;
        have += k;
        long used = parse(&c, buf, have, cap);
        if (used < 0)
            break; /* dropped, as the endpoint would drop the peer */
        memmove(buf, buf + used, have - (size_t)used);
        have -= (size_t)used;
    }
    free(buf);
    lahja_wire_tx_free(&c.tx);
    lahja_wire_rx_free(&c.rx);
    return 0;
}
