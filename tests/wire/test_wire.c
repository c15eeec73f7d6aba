/*
 * The wire codec (src/wire): encoders and decoder agree, the bytes are
 * the documented ones (docs/protocol.md), partial input is waited for,
 * every protocol violation is refused with its error, and the interning
 * and compression helpers keep their promises.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wire/wire.h"

#define MAX_FRAME 4096
#define MAX_PAYLOAD 2048
#define MAX_TYPES 4

/* ------------------------------------------------------------ helpers */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A frame built by hand, so that it can break any rule. */
static size_t raw_frame(uint8_t *out, uint32_t body_len, uint8_t kind, uint8_t flags,
                        uint16_t reserved, const void *body, size_t n)
{
    put32(out, body_len);
    out[4] = kind;
    out[5] = flags;
    out[6] = (uint8_t)reserved;
    out[7] = (uint8_t)(reserved >> 8);
    if (n > 0)
        memcpy(out + 8, body, n);
    return 8 + n;
}

/* A HELLO with any name and version, valid or not. */
static size_t raw_hello(uint8_t *out, const char *magic, uint8_t version, const char *name,
                        size_t name_len)
{
    uint8_t body[300];
    memcpy(body, magic, 5);
    body[5] = version;
    put32(body + 6, 0);
    put32(body + 10, MAX_FRAME);
    body[14] = (uint8_t)name_len;
    memcpy(body + 15, name, name_len);
    return raw_frame(out, (uint32_t)(15 + name_len), LAHJA_WIRE_HELLO, 0, 0, body,
                     15 + name_len);
}

/* rx_next over exactly buf[0..len), through a heap copy of that size so
 * that AddressSanitizer sees any read past the end. */
static ssize_t next(lahja_wire_rx_t *rx, const uint8_t *buf, size_t len, lahja_wire_msg_t *msg,
                    size_t *need)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    ssize_t n = lahja_wire_rx_next(rx, copy, len, msg, need);
    if (n > 0 && msg->kind == LAHJA_WIRE_EVENT) {
        /* Pointers into the copy would dangle: re-point them at buf. */
        msg->u.event.payload = buf + (msg->u.event.payload - copy);
    } else if (n > 0 && msg->kind == LAHJA_WIRE_SUBS) {
        msg->u.subs.p = buf + (msg->u.subs.p - copy);
        msg->u.subs.end = buf + (msg->u.subs.end - copy);
    }
    free(copy);
    return n;
}

/* The error (or 0 for "incomplete") rx_next gives for one frame. */
static ssize_t feed(lahja_wire_rx_t *rx, const uint8_t *buf, size_t len)
{
    lahja_wire_msg_t msg;
    size_t need = 0;
    return next(rx, buf, len, &msg, &need);
}

/* An rx that has received a valid HELLO. */
static void start(lahja_wire_rx_t *rx)
{
    uint8_t buf[LAHJA_WIRE_HELLO_MAX];
    lahja_wire_rx_init(rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    size_t n = lahja_wire_hello_encode(buf, "peer", 4, 0, MAX_FRAME);
    assert_int_equal(feed(rx, buf, n), (ssize_t)n);
}

static void bind_type(lahja_wire_rx_t *rx, uint32_t id, const char *name)
{
    uint8_t buf[LAHJA_WIRE_HEADER_SIZE + 5 + 255];
    size_t n = lahja_wire_type_encode(buf, id, name, strlen(name));
    assert_true(n > 0);
    assert_int_equal(feed(rx, buf, n), (ssize_t)n);
}

/* An EVENT frame: prefix and payload together. */
static size_t event_frame(uint8_t *out, uint32_t type_id, uint8_t flags, uint64_t id,
                          uint32_t raw_len, const void *payload, size_t len)
{
    size_t n = lahja_wire_event_prefix(out, type_id, flags, id, raw_len, len);
    assert_true(n > 0);
    memcpy(out + n, payload, len);
    return n + len;
}

/* ------------------------------------------------------------ names */

static void test_names(void **state)
{
    (void)state;
    char long_name[257];
    memset(long_name, 'x', sizeof long_name);
    assert_true(lahja_wire_name_valid("a", 1));
    assert_true(lahja_wire_name_valid("my endpoint~1", 13));
    assert_true(lahja_wire_name_valid(long_name, 255));
    assert_false(lahja_wire_name_valid(long_name, 256));
    assert_false(lahja_wire_name_valid("", 0));
    assert_false(lahja_wire_name_valid("a/b", 3));
    assert_false(lahja_wire_name_valid("a\nb", 3));
    assert_false(lahja_wire_name_valid("a\x1f", 2));
    assert_false(lahja_wire_name_valid("a\x7f", 2));
    assert_false(lahja_wire_name_valid("\xc3\xa4", 2));

    assert_true(lahja_wire_type_valid("a.b/C", 5));
    assert_true(lahja_wire_type_valid("\xc3\xa4\n", 3));
    assert_true(lahja_wire_type_valid(long_name, 255));
    assert_false(lahja_wire_type_valid(long_name, 256));
    assert_false(lahja_wire_type_valid("", 0));
    assert_false(lahja_wire_type_valid("a\0b", 3));
}

/* ------------------------------------------------- byte-exact encoding */

static void test_hello_bytes(void **state)
{
    (void)state;
    static const uint8_t want[] = {
        0x14, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, /* header: 20-byte HELLO */
        'L', 'A', 'H', 'J', 'A', 0x01,                  /* magic, version 1 */
        0x01, 0x00, 0x00, 0x00,                         /* features: LZ4 */
        0x00, 0x00, 0x00, 0x01,                         /* max_frame 16 MiB */
        0x05, 'a', 'l', 'p', 'h', 'a',                  /* name */
    };
    uint8_t out[LAHJA_WIRE_HELLO_MAX];
    size_t n = lahja_wire_hello_encode(out, "alpha", 5, LAHJA_WIRE_FEAT_LZ4, 16u << 20);
    assert_int_equal(n, sizeof want);
    assert_memory_equal(out, want, sizeof want);
}

static void test_event_bytes(void **state)
{
    (void)state;
    static const uint8_t type_want[] = {
        0x0d, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, /* header: 13-byte TYPE */
        0x01, 0x00, 0x00, 0x00, 0x08,                   /* id 1, 8 bytes */
        'g', 'r', 'e', 'e', 't', 'i', 'n', 'g',
    };
    static const uint8_t event_want[] = {
        0x0e, 0x00, 0x00, 0x00, 0x05, 0x01, 0x00, 0x00, /* header: 14-byte EVENT, REQUEST */
        0x01, 0x00, 0x00, 0x00,                         /* type id 1 */
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* request id 7 */
        'h', 'i',                                       /* payload */
    };
    static const uint8_t lz4_prefix_want[] = {
        0x18, 0x00, 0x00, 0x00, 0x05, 0x04, 0x00, 0x00, /* header: 24-byte EVENT, LZ4 */
        0x02, 0x00, 0x00, 0x00,                         /* type id 2 */
        0xe8, 0x03, 0x00, 0x00,                         /* raw length 1000 */
    };
    uint8_t out[64];
    size_t n = lahja_wire_type_encode(out, 1, "greeting", 8);
    assert_int_equal(n, sizeof type_want);
    assert_memory_equal(out, type_want, n);

    n = event_frame(out, 1, LAHJA_WIRE_REQUEST, 7, 0, "hi", 2);
    assert_int_equal(n, sizeof event_want);
    assert_memory_equal(out, event_want, n);

    n = lahja_wire_event_prefix(out, 2, LAHJA_WIRE_LZ4, 0, 1000, 16);
    assert_int_equal(n, sizeof lz4_prefix_want);
    assert_memory_equal(out, lz4_prefix_want, n);

    uint8_t ack[12];
    static const uint8_t ack_want[] = { 4, 0, 0, 0, 3, 0, 0, 0, 0x78, 0x56, 0x34, 0x12 };
    assert_int_equal(lahja_wire_ack_encode(ack, 0x12345678), 12);
    assert_memory_equal(ack, ack_want, 12);
}

/* ---------------------------------------------------------- round trips */

static void test_roundtrip_hello(void **state)
{
    (void)state;
    char name[255];
    memset(name, '~', sizeof name);
    uint8_t buf[LAHJA_WIRE_HELLO_MAX];
    size_t n = lahja_wire_hello_encode(buf, name, sizeof name, 0xfffffff1u, 123456);
    assert_int_equal(n, LAHJA_WIRE_HELLO_MAX);

    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    lahja_wire_msg_t msg;
    size_t need;
    assert_int_equal(next(&rx, buf, n, &msg, &need), (ssize_t)n);
    assert_int_equal(msg.kind, LAHJA_WIRE_HELLO);
    assert_int_equal(msg.u.hello.version, LAHJA_WIRE_VERSION);
    assert_int_equal(msg.u.hello.features, 0xfffffff1u); /* unknown bits pass through */
    assert_int_equal(msg.u.hello.max_frame, 123456);
    assert_int_equal(msg.u.hello.name_len, 255);
    assert_memory_equal(msg.u.hello.name, name, 255);
    assert_int_equal(msg.u.hello.name[255], '\0');
    assert_true(rx.hello_done);
    lahja_wire_rx_free(&rx);
}

static void test_roundtrip_subs(void **state)
{
    (void)state;
    char big[255];
    memset(big, 'T', sizeof big);
    const char *types[] = { "a", "block.New", big };
    const size_t lens[] = { 1, 9, 255 };
    size_t size = lahja_wire_subs_size(3, 1 + 9 + 255);
    uint8_t buf[400];
    assert_int_equal(lahja_wire_subs_encode(buf, size, 42, types, lens, 3), size);
    assert_int_equal(lahja_wire_subs_encode(buf, size - 1, 42, types, lens, 3), 0);

    lahja_wire_rx_t rx;
    start(&rx);
    lahja_wire_msg_t msg;
    size_t need;
    assert_int_equal(next(&rx, buf, size, &msg, &need), (ssize_t)size);
    assert_int_equal(msg.kind, LAHJA_WIRE_SUBS);
    assert_int_equal(msg.u.subs.seq, 42);
    assert_int_equal(msg.u.subs.count, 3);
    const char *t;
    size_t len;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lahja_wire_subs_next(&msg.u.subs, &t, &len), 1);
        assert_int_equal(len, lens[i]);
        assert_memory_equal(t, types[i], len);
    }
    assert_int_equal(lahja_wire_subs_next(&msg.u.subs, &t, &len), 0);

    /* The empty set replaces everything too. */
    size = lahja_wire_subs_encode(buf, sizeof buf, 43, NULL, NULL, 0);
    assert_int_equal(size, lahja_wire_subs_size(0, 0));
    assert_int_equal(next(&rx, buf, size, &msg, &need), (ssize_t)size);
    assert_int_equal(msg.u.subs.seq, 43);
    assert_int_equal(msg.u.subs.count, 0);
    assert_int_equal(lahja_wire_subs_next(&msg.u.subs, &t, &len), 0);
    lahja_wire_rx_free(&rx);
}

static void test_subs_entries(void **state)
{
    (void)state;
    static const char *const ab[] = { "alpha", "beta" };
    static const size_t ab_lens[] = { 5, 4 };
    const lahja_wire_entry_t es[] = {
        { .type = "block.*", .len = 7, .flags = LAHJA_WIRE_ENTRY_PATTERN },
        { .type = "x", .len = 1, .flags = LAHJA_WIRE_ENTRY_ORIGINS, .norigins = 2,
          .origins = ab, .origin_lens = ab_lens },
        { .type = "a*b", .len = 3 },
    };
    size_t size = lahja_wire_subs_entries_encode(NULL, 0, 9, es, 3);
    /* 16 fixed; 2+7; 2+1 +1 +6+5; 2+3 */
    assert_int_equal(size, 16 + 9 + 15 + 5);
    uint8_t buf[128];
    assert_int_equal(lahja_wire_subs_entries_encode(buf, size - 1, 9, es, 3), 0);
    assert_int_equal(lahja_wire_subs_entries_encode(buf, sizeof buf, 9, es, 3), size);
    assert_int_equal(buf[5], LAHJA_WIRE_SUBS_ENTRIES);

    /* A pattern must end in '*'; origins must be endpoint names. */
    lahja_wire_entry_t bad = { .type = "block.", .len = 6, .flags = LAHJA_WIRE_ENTRY_PATTERN };
    assert_int_equal(lahja_wire_subs_entries_encode(buf, sizeof buf, 9, &bad, 1), 0);
    static const char *const slash[] = { "a/b" };
    static const size_t slash_len[] = { 3 };
    bad = (lahja_wire_entry_t){ .type = "x", .len = 1, .flags = LAHJA_WIRE_ENTRY_ORIGINS,
                                .norigins = 1, .origins = slash, .origin_lens = slash_len };
    assert_int_equal(lahja_wire_subs_entries_encode(buf, sizeof buf, 9, &bad, 1), 0);

    lahja_wire_rx_t rx;
    start(&rx);
    lahja_wire_msg_t msg;
    size_t need;
    assert_int_equal(lahja_wire_subs_entries_encode(buf, sizeof buf, 9, es, 3), size);
    assert_int_equal(next(&rx, buf, size, &msg, &need), (ssize_t)size);
    assert_int_equal(msg.u.subs.count, 3);
    lahja_wire_entry_t e;
    const char *name;
    size_t len;
    assert_int_equal(lahja_wire_subs_entry(&msg.u.subs, &e), 1);
    assert_int_equal(e.flags, LAHJA_WIRE_ENTRY_PATTERN);
    assert_int_equal(e.len, 7);
    assert_memory_equal(e.type, "block.*", 7);
    assert_int_equal(lahja_wire_entry_origin(&e, &name, &len), 0);
    assert_int_equal(lahja_wire_subs_entry(&msg.u.subs, &e), 1);
    assert_int_equal(e.norigins, 2);
    assert_int_equal(lahja_wire_entry_origin(&e, &name, &len), 1);
    assert_int_equal(len, 5);
    assert_memory_equal(name, "alpha", 5);
    assert_int_equal(lahja_wire_entry_origin(&e, &name, &len), 1);
    assert_memory_equal(name, "beta", 4);
    assert_int_equal(lahja_wire_entry_origin(&e, &name, &len), 0);
    assert_int_equal(lahja_wire_subs_entry(&msg.u.subs, &e), 1);
    assert_int_equal(e.flags, 0);
    assert_memory_equal(e.type, "a*b", 3);
    assert_int_equal(lahja_wire_subs_entry(&msg.u.subs, &e), 0);

    /* max_subs counts origins too: 1 + 1 + 2 + 1 = 5 units. */
    lahja_wire_rx_limits(&rx, MAX_FRAME, 4);
    assert_int_equal(next(&rx, buf, size, &msg, &need), -EMSGSIZE);
    lahja_wire_rx_free(&rx);

    /* Unknown entry flags are an error. */
    start(&rx);
    assert_int_equal(lahja_wire_subs_entries_encode(buf, sizeof buf, 9, es, 1), 16 + 9);
    buf[16] = 0x04;
    assert_int_equal(next(&rx, buf, 16 + 9, &msg, &need), -EPROTO);
    lahja_wire_rx_free(&rx);
}

static void test_pattern_match(void **state)
{
    (void)state;
    assert_true(lahja_wire_pattern_match("block.*", 7, "block.new", 9));
    assert_true(lahja_wire_pattern_match("block.*", 7, "block.x.y", 9));
    assert_false(lahja_wire_pattern_match("block.*", 7, "block", 5));
    assert_false(lahja_wire_pattern_match("block.*", 7, "block.", 6));
    /* The reserved types match only patterns that name them. */
    assert_false(lahja_wire_pattern_match("*", 1, "lahja.stats", 11));
    assert_false(lahja_wire_pattern_match("lah*", 4, "lahja.stats", 11));
    assert_true(lahja_wire_pattern_match("lahja.*", 7, "lahja.stats", 11));
    assert_true(lahja_wire_pattern_match("lahja.s*", 8, "lahja.stats", 11));
    assert_true(lahja_wire_pattern_match("*", 1, "lahja", 5));
    assert_false(lahja_wire_pattern_match("block.*", 7, "blocks", 6));
    assert_true(lahja_wire_pattern_match("*", 1, "x", 1));
    assert_true(lahja_wire_pattern_match("blo*", 4, "block", 5));
    assert_false(lahja_wire_pattern_valid("a*b", 3));
    assert_true(lahja_wire_pattern_valid("*", 1));
}

static void test_roundtrip_ack(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t buf[12];
    assert_int_equal(lahja_wire_ack_encode(buf, 0xdeadbeef), 12);
    lahja_wire_msg_t msg;
    size_t need;
    assert_int_equal(next(&rx, buf, 12, &msg, &need), 12);
    assert_int_equal(msg.kind, LAHJA_WIRE_SUBS_ACK);
    assert_int_equal(msg.u.ack_seq, 0xdeadbeef);
    lahja_wire_rx_free(&rx);
}

static void check_event(lahja_wire_rx_t *rx, uint32_t type_id, uint8_t flags, uint64_t id,
                        uint32_t raw_len, const char *payload, const char *type)
{
    uint8_t buf[256];
    size_t plen = strlen(payload);
    size_t n = event_frame(buf, type_id, flags, id, raw_len, payload, plen);
    lahja_wire_msg_t msg;
    size_t need;
    assert_int_equal(next(rx, buf, n, &msg, &need), (ssize_t)n);
    assert_int_equal(msg.kind, LAHJA_WIRE_EVENT);
    assert_string_equal(msg.u.event.type, type);
    assert_int_equal(msg.u.event.type_len, strlen(type));
    assert_int_equal(msg.u.event.flags, flags);
    assert_int_equal(msg.u.event.id, id);
    assert_int_equal(msg.u.event.payload_len, plen);
    assert_ptr_equal(msg.u.event.payload, buf + n - plen);
    assert_int_equal(msg.u.event.raw_len, (flags & LAHJA_WIRE_LZ4) ? raw_len : plen);
}

static void test_roundtrip_type_and_event(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    lahja_wire_msg_t msg;
    size_t need;
    uint8_t buf[300];
    size_t n = lahja_wire_type_encode(buf, 1, "first", 5);
    assert_int_equal(next(&rx, buf, n, &msg, &need), (ssize_t)n);
    assert_int_equal(msg.kind, LAHJA_WIRE_TYPE);
    assert_int_equal(rx.ntypes, 1);
    assert_string_equal(rx.types[0], "first");
    bind_type(&rx, 2, "second");

    check_event(&rx, 1, 0, 0, 0, "payload", "first");
    check_event(&rx, 2, 0, 0, 0, "", "second");
    check_event(&rx, 2, LAHJA_WIRE_REQUEST, UINT64_MAX, 0, "ask", "second");
    check_event(&rx, 1, LAHJA_WIRE_RESPONSE, 1, 0, "answer", "first");
    check_event(&rx, 1, LAHJA_WIRE_LZ4, 0, MAX_PAYLOAD, "compressed", "first");
    check_event(&rx, 2, LAHJA_WIRE_REQUEST | LAHJA_WIRE_LZ4, 9, 100, "zz", "second");
    check_event(&rx, 2, LAHJA_WIRE_RESPONSE | LAHJA_WIRE_LZ4, 9, 100, "zz", "second");
    lahja_wire_rx_free(&rx);
    lahja_wire_rx_free(&rx); /* a freed state may be freed again */
}

/* Several frames back to back in one buffer, as one read may bring them. */
static size_t build_stream(uint8_t *buf, size_t *ends)
{
    size_t n = 0, k = 0;
    n += lahja_wire_hello_encode(buf + n, "stream", 6, LAHJA_WIRE_FEAT_LZ4, MAX_FRAME);
    ends[k++] = n;
    const char *types[] = { "x", "yy" };
    const size_t lens[] = { 1, 2 };
    n += lahja_wire_subs_encode(buf + n, 64, 1, types, lens, 2);
    ends[k++] = n;
    n += lahja_wire_ack_encode(buf + n, 1);
    ends[k++] = n;
    n += lahja_wire_type_encode(buf + n, 1, "x", 1);
    ends[k++] = n;
    n += event_frame(buf + n, 1, LAHJA_WIRE_REQUEST, 5, 0, "body", 4);
    ends[k++] = n;
    return k;
}

/* rx_small over exactly buf[0..len), through a heap copy (as next). */
static size_t plain(const lahja_wire_rx_t *rx, const uint8_t *buf, size_t len,
                    lahja_wire_event_t *ev)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    size_t n = lahja_wire_rx_small(rx, copy, len, ev);
    if (n > 0)
        ev->payload = buf + (ev->payload - copy);
    free(copy);
    return n;
}

/* The inline reader of small events reads what rx_next reads, and
 * leaves it everything else, whether valid or not. */
static void test_small_event_reader(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    uint8_t buf[MAX_PAYLOAD + 64];
    lahja_wire_event_t ev;
    size_t n = event_frame(buf, 1, 0, 0, 0, "x", 1);
    assert_int_equal(plain(&rx, buf, n, &ev), 0); /* before HELLO */
    lahja_wire_rx_free(&rx);
    start(&rx);
    assert_int_equal(plain(&rx, buf, n, &ev), 0); /* type 1 not bound */
    bind_type(&rx, 1, "first");
    bind_type(&rx, 2, "second");

    /* The same frame, the same reading, for sizes up to max_payload. */
    static const size_t sizes[] = { 0, 1, 64, 255, 256, MAX_PAYLOAD };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        memset(buf, 0, sizeof buf);
        uint8_t payload[MAX_PAYLOAD];
        for (size_t i = 0; i < sizes[k]; i++)
            payload[i] = (uint8_t)(i * 13 + k);
        n = event_frame(buf, 2, 0, 0, 0, payload, sizes[k]);
        uint8_t want[LAHJA_WIRE_PLAIN_PREFIX];
        lahja_wire_plain_prefix(want, 2, (uint32_t)sizes[k]);
        assert_memory_equal(buf, want, sizeof want); /* as the prefix encoder writes */
        lahja_wire_msg_t msg;
        size_t need;
        assert_int_equal(next(&rx, buf, n, &msg, &need), (ssize_t)n);
        assert_int_equal(plain(&rx, buf, n + 5, &ev), n); /* more after it */
        assert_ptr_equal(ev.type, msg.u.event.type);
        assert_int_equal(ev.type_len, msg.u.event.type_len);
        assert_int_equal(ev.flags, 0);
        assert_int_equal(ev.id, 0);
        assert_ptr_equal(ev.payload, msg.u.event.payload);
        assert_int_equal(ev.payload_len, sizes[k]);
        assert_int_equal(ev.raw_len, sizes[k]);
        for (size_t cut = 0; cut < n; cut += 1 + n / 7)
            assert_int_equal(plain(&rx, buf, cut, &ev), 0); /* incomplete */
    }

    /* A request's or a response's id with it, as the encoder writes it. */
    static const uint8_t asks[] = { LAHJA_WIRE_REQUEST, LAHJA_WIRE_RESPONSE };
    for (size_t k = 0; k < 2; k++) {
        n = event_frame(buf, 1, asks[k], 0x0102030405060708ull + k, 0, "qq", 2);
        uint8_t want[LAHJA_WIRE_PLAIN_PREFIX + 8];
        assert_int_equal(lahja_wire_small_prefix(want, 1, asks[k], 0x0102030405060708ull + k, 2),
                         sizeof want);
        assert_memory_equal(buf, want, sizeof want);
        lahja_wire_msg_t msg;
        size_t need;
        assert_int_equal(next(&rx, buf, n, &msg, &need), (ssize_t)n);
        assert_int_equal(plain(&rx, buf, n, &ev), n);
        assert_int_equal(ev.flags, asks[k]);
        assert_int_equal(ev.id, msg.u.event.id);
        assert_ptr_equal(ev.payload, msg.u.event.payload);
        assert_int_equal(ev.payload_len, 2);
        for (size_t cut = 0; cut < n; cut++)
            assert_int_equal(plain(&rx, buf, cut, &ev), 0);
        /* The id's 8 bytes must be there. */
        for (int i = 0; i < 4; i++)
            buf[i] = (uint8_t)(10u >> (8 * i));
        assert_int_equal(plain(&rx, buf, n, &ev), 0);
        assert_true(feed(&rx, buf, n) < 0);
    }

    /* Valid frames of other kinds or flags, and invalid ones: left alone. */
    n = event_frame(buf, 1, LAHJA_WIRE_LZ4, 0, 9, "q", 1);
    assert_int_equal(plain(&rx, buf, n, &ev), 0);
    n = lahja_wire_ack_encode(buf, 3);
    assert_int_equal(plain(&rx, buf, n, &ev), 0);
    uint8_t ok[64];
    size_t okn = event_frame(ok, 1, 0, 0, 0, "abcd", 4);
    for (size_t byte = 4; byte < LAHJA_WIRE_PLAIN_PREFIX; byte++) {
        if (byte == 8)
            continue; /* the type id: below */
        memcpy(buf, ok, okn);
        buf[byte] ^= 0x40; /* kind, flags, reserved; type id's high bytes */
        assert_int_equal(plain(&rx, buf, okn, &ev), 0);
    }
    memcpy(buf, ok, okn);
    buf[5] = LAHJA_WIRE_REQUEST | LAHJA_WIRE_RESPONSE; /* both: never */
    assert_int_equal(plain(&rx, buf, sizeof buf, &ev), 0);
    assert_true(feed(&rx, buf, sizeof buf) < 0);
    static const uint32_t ids[] = { 0, 3, UINT32_MAX };
    for (size_t k = 0; k < 3; k++) {
        memcpy(buf, ok, okn);
        lahja_wire_plain_prefix(buf, ids[k], 4);
        assert_int_equal(plain(&rx, buf, okn, &ev), 0);
        assert_true(feed(&rx, buf, okn) < 0);
    }
    static const uint32_t bodies[] = { 0, 3, MAX_PAYLOAD + 5, MAX_FRAME + 1, UINT32_MAX };
    for (size_t k = 0; k < sizeof bodies / sizeof bodies[0]; k++) {
        memcpy(buf, ok, okn);
        for (int i = 0; i < 4; i++)
            buf[i] = (uint8_t)(bodies[k] >> (8 * i));
        assert_int_equal(plain(&rx, buf, sizeof buf, &ev), 0);
        assert_true(feed(&rx, buf, sizeof buf) < 0);
    }
    lahja_wire_rx_free(&rx);
}

static void test_stream(void **state)
{
    (void)state;
    static const uint8_t kinds[] = { LAHJA_WIRE_HELLO, LAHJA_WIRE_SUBS, LAHJA_WIRE_SUBS_ACK,
                                     LAHJA_WIRE_TYPE, LAHJA_WIRE_EVENT };
    uint8_t buf[512];
    size_t ends[5];
    size_t nframes = build_stream(buf, ends);
    size_t total = ends[nframes - 1];
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    size_t off = 0;
    for (size_t i = 0; i < nframes; i++) {
        lahja_wire_msg_t msg;
        size_t need;
        ssize_t n = next(&rx, buf + off, total - off, &msg, &need);
        assert_int_equal(n, (ssize_t)(ends[i] - off));
        assert_int_equal(msg.kind, kinds[i]);
        off += (size_t)n;
    }
    lahja_wire_rx_free(&rx);
}

/* Every prefix of every frame is "not yet", with the right need. */
static void test_partial_byte_by_byte(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t ends[5];
    size_t nframes = build_stream(buf, ends);
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    size_t off = 0;
    for (size_t i = 0; i < nframes; i++) {
        size_t size = ends[i] - off;
        lahja_wire_msg_t msg;
        for (size_t k = 0; k < size; k++) {
            size_t need = 0;
            assert_int_equal(next(&rx, buf + off, k, &msg, &need), 0);
            assert_int_equal(need, k < LAHJA_WIRE_HEADER_SIZE ? LAHJA_WIRE_HEADER_SIZE : size);
        }
        size_t need = 0;
        assert_int_equal(next(&rx, buf + off, size, &msg, &need), (ssize_t)size);
        off += size;
    }
    assert_int_equal(rx.ntypes, 1);
    lahja_wire_rx_free(&rx);
}

/* ------------------------------------------------------ the handshake */

static void test_reject_bad_magic(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    uint8_t buf[300];
    size_t n = raw_hello(buf, "LAHJB", LAHJA_WIRE_VERSION, "peer", 4);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = raw_hello(buf, "lahja", LAHJA_WIRE_VERSION, "peer", 4);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    /* Wrong magic and wrong version: not our protocol at all. */
    n = raw_hello(buf, "XXXXX", 2, "peer", 4);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    assert_false(rx.hello_done);
    lahja_wire_rx_free(&rx);
}

static void test_reject_other_version(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    uint8_t buf[300];
    size_t n = raw_hello(buf, "LAHJA", 0, "peer", 4);
    assert_int_equal(feed(&rx, buf, n), -EPROTONOSUPPORT);
    n = raw_hello(buf, "LAHJA", 2, "peer", 4);
    assert_int_equal(feed(&rx, buf, n), -EPROTONOSUPPORT);
    /* Another version's HELLO may have another layout: magic and version
     * are enough to tell, whatever follows. */
    uint8_t v2[] = { 'L', 'A', 'H', 'J', 'A', 2 };
    n = raw_frame(buf, sizeof v2, LAHJA_WIRE_HELLO, 0, 0, v2, sizeof v2);
    assert_int_equal(feed(&rx, buf, n), -EPROTONOSUPPORT);
    uint8_t v2long[290] = { 'L', 'A', 'H', 'J', 'A', 2 };
    n = raw_frame(buf, sizeof v2long, LAHJA_WIRE_HELLO, 0, 0, v2long, sizeof v2long);
    assert_int_equal(feed(&rx, buf, n), -EPROTONOSUPPORT);
    assert_false(rx.hello_done);
    lahja_wire_rx_free(&rx);
}

static void test_reject_hello_names(void **state)
{
    (void)state;
    char long_name[256];
    memset(long_name, 'n', sizeof long_name);
    uint8_t buf[300];
    /* The encoder refuses what the decoder would. */
    assert_int_equal(lahja_wire_hello_encode(buf, "", 0, 0, MAX_FRAME), 0);
    assert_int_equal(lahja_wire_hello_encode(buf, long_name, 256, 0, MAX_FRAME), 0);
    assert_int_equal(lahja_wire_hello_encode(buf, "a/b", 3, 0, MAX_FRAME), 0);
    assert_int_equal(lahja_wire_hello_encode(buf, "a\tb", 3, 0, MAX_FRAME), 0);

    static const struct { const char *name; size_t len; } bad[] = {
        { "", 0 }, { "a/b", 3 }, { "/", 1 }, { "a\x01", 2 }, { "\n", 1 }, { "a\x7f", 2 },
        { "\xff", 1 }, { "a\0b", 3 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lahja_wire_rx_t rx;
        lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
        size_t n = raw_hello(buf, "LAHJA", LAHJA_WIRE_VERSION, bad[i].name, bad[i].len);
        assert_int_equal(feed(&rx, buf, n), -EPROTO);
        lahja_wire_rx_free(&rx);
    }

    /* A name longer than name_len says (255 + 1 bytes), or shorter. */
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    size_t n = raw_hello(buf, "LAHJA", LAHJA_WIRE_VERSION, long_name, 255);
    assert_int_equal(feed(&rx, buf, n), (ssize_t)n);
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    put32(buf, 15 + 256);
    buf[n] = 'n';
    assert_int_equal(feed(&rx, buf, n + 1), -EPROTO);
    put32(buf, 15 + 254);
    assert_int_equal(feed(&rx, buf, n - 1), -EPROTO);
    /* Too short for its fixed fields. */
    put32(buf, 14);
    assert_int_equal(feed(&rx, buf, 8 + 14), -EPROTO);
    put32(buf, 5);
    assert_int_equal(feed(&rx, buf, 8), -EPROTO); /* from the header alone */
    lahja_wire_rx_free(&rx);
}

static void test_reject_first_not_hello(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = lahja_wire_ack_encode(buf, 1);
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = lahja_wire_type_encode(buf, 1, "t", 1);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = lahja_wire_event_prefix(buf, 1, 0, 0, 0, 0);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = lahja_wire_subs_encode(buf, sizeof buf, 1, NULL, NULL, 0);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    lahja_wire_rx_free(&rx);
}

static void test_reject_second_hello(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t buf[LAHJA_WIRE_HELLO_MAX];
    size_t n = lahja_wire_hello_encode(buf, "again", 5, 0, MAX_FRAME);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    lahja_wire_rx_free(&rx);
}

/* --------------------------------------------------------- the header */

static void test_reject_unknown_kind(void **state)
{
    (void)state;
    static const uint8_t kinds[] = { 0, 8, 9, 0x80, 0xff };
    lahja_wire_rx_t rx;
    start(&rx);
    for (size_t i = 0; i < sizeof kinds; i++) {
        uint8_t buf[16];
        size_t n = raw_frame(buf, 4, kinds[i], 0, 0, "abcd", 4);
        assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
        assert_int_equal(feed(&rx, buf, n), -EPROTO);
    }
    /* Before the handshake too. */
    lahja_wire_rx_t fresh;
    lahja_wire_rx_init(&fresh, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    uint8_t buf[8];
    raw_frame(buf, 0, 0, 0, 0, NULL, 0);
    assert_int_equal(feed(&fresh, buf, 8), -EPROTO);
    lahja_wire_rx_free(&fresh);
    lahja_wire_rx_free(&rx);
}

static void test_reject_reserved_bits(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    uint8_t buf[LAHJA_WIRE_HELLO_MAX];
    lahja_wire_hello_encode(buf, "peer", 4, 0, MAX_FRAME);
    buf[6] = 1;
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    buf[6] = 0;
    buf[7] = 0x80;
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);

    start(&rx);
    size_t n = lahja_wire_ack_encode(buf, 1);
    buf[7] = 1;
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    lahja_wire_rx_free(&rx);
}

static void test_reject_unknown_flags(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    bind_type(&rx, 1, "t");
    uint8_t buf[64];
    for (unsigned bit = 4; bit < 8; bit++) {
        size_t n = event_frame(buf, 1, 0, 0, 0, "data", 4);
        buf[5] = (uint8_t)(1u << bit);
        assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
        assert_int_equal(feed(&rx, buf, n), -EPROTO);
    }
    /* The encoder refuses them as well, and LENT with LZ4. */
    assert_int_equal(lahja_wire_event_prefix(buf, 1, 0x10, 0, 0, 0), 0);
    assert_int_equal(lahja_wire_event_prefix(buf, 1, 0x80, 0, 0, 0), 0);
    assert_int_equal(lahja_wire_event_prefix(buf, 1, LAHJA_WIRE_LENT | LAHJA_WIRE_LZ4, 0, 0, 0), 0);
    lahja_wire_rx_free(&rx);
}

/* LENT (feature SHM): a 16-byte reference whose length is the payload's;
 * any other size, or one over max_payload, is refused. */
static void test_lent_reference(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    bind_type(&rx, 1, "t");
    uint8_t ref[16] = { 0 }, buf[64];
    ref[8] = 100; /* offset 0, length 100 */
    size_t n = event_frame(buf, 1, 0, 0, 0, (const char *)ref, 16);
    buf[5] = LAHJA_WIRE_LENT;
    lahja_wire_msg_t m;
    size_t need;
    assert_int_equal(lahja_wire_rx_next(&rx, buf, n, &m, &need), (ssize_t)n);
    assert_int_equal(m.kind, LAHJA_WIRE_EVENT);
    assert_int_equal(m.u.event.raw_len, 100);
    assert_int_equal(m.u.event.payload_len, 16);
    n = event_frame(buf, 1, 0, 0, 0, (const char *)ref, 15);
    buf[5] = LAHJA_WIRE_LENT;
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    ref[15] = 1; /* a length far over max_payload */
    n = event_frame(buf, 1, 0, 0, 0, (const char *)ref, 16);
    buf[5] = LAHJA_WIRE_LENT;
    assert_int_equal(feed(&rx, buf, n), -EMSGSIZE);
    lahja_wire_rx_free(&rx);
}

/* RELEASE: 1 to 8192 offsets, round trip; an empty or ragged body is
 * refused. */
static void test_release_frames(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint64_t offs[3] = { 0, 65536, (uint64_t)1 << 40 };
    uint8_t buf[64];
    size_t n = lahja_wire_release_encode(buf, offs, 3);
    assert_int_equal(n, LAHJA_WIRE_HEADER_SIZE + 24);
    lahja_wire_msg_t m;
    size_t need;
    assert_int_equal(lahja_wire_rx_next(&rx, buf, n, &m, &need), (ssize_t)n);
    assert_int_equal(m.kind, LAHJA_WIRE_RELEASE);
    assert_int_equal(m.u.release.n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_true(lahja_wire_release_at(m.u.release.body, i) == offs[i]);
    assert_int_equal(lahja_wire_release_encode(buf, offs, 0), 0);
    buf[0] = 12; /* a body of 12 bytes: not whole offsets */
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE + 12), -EPROTO);
    buf[0] = 0; /* none */
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    lahja_wire_rx_free(&rx);
}

static void test_reject_flags_on_non_event(void **state)
{
    (void)state;
    uint8_t buf[LAHJA_WIRE_HELLO_MAX];
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    size_t n = lahja_wire_hello_encode(buf, "peer", 4, 0, MAX_FRAME);
    buf[5] = LAHJA_WIRE_LZ4;
    assert_int_equal(feed(&rx, buf, n), -EPROTO);

    start(&rx);
    n = lahja_wire_ack_encode(buf, 1);
    buf[5] = LAHJA_WIRE_REQUEST;
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    n = lahja_wire_type_encode(buf, 1, "t", 1);
    buf[5] = LAHJA_WIRE_RESPONSE;
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = lahja_wire_subs_encode(buf, sizeof buf, 1, NULL, NULL, 0);
    buf[5] = 0x40;
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    assert_int_equal(rx.ntypes, 0);
    lahja_wire_rx_free(&rx);
}

static void test_reject_request_and_response(void **state)
{
    (void)state;
    uint8_t both = LAHJA_WIRE_REQUEST | LAHJA_WIRE_RESPONSE;
    uint8_t buf[64];
    assert_int_equal(lahja_wire_event_prefix(buf, 1, both, 1, 0, 0), 0);
    assert_int_equal(lahja_wire_event_prefix(buf, 1, both | LAHJA_WIRE_LZ4, 1, 9, 1), 0);

    lahja_wire_rx_t rx;
    start(&rx);
    bind_type(&rx, 1, "t");
    size_t n = event_frame(buf, 1, LAHJA_WIRE_REQUEST, 1, 0, "data", 4);
    buf[5] = both;
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    lahja_wire_rx_free(&rx);
}

static void test_reject_body_over_max_frame(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t hdr[LAHJA_WIRE_HEADER_SIZE];
    /* Only the header has arrived: no need to wait for 4 GiB. */
    raw_frame(hdr, UINT32_MAX, LAHJA_WIRE_EVENT, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, hdr, sizeof hdr), -EMSGSIZE);
    raw_frame(hdr, MAX_FRAME + 1, LAHJA_WIRE_SUBS, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, hdr, sizeof hdr), -EMSGSIZE);
    /* Exactly max_frame is fine: it is waited for. */
    raw_frame(hdr, MAX_FRAME, LAHJA_WIRE_SUBS, 0, 0, NULL, 0);
    lahja_wire_msg_t msg;
    size_t need = 0;
    assert_int_equal(next(&rx, hdr, sizeof hdr, &msg, &need), 0);
    assert_int_equal(need, LAHJA_WIRE_HEADER_SIZE + MAX_FRAME);
    lahja_wire_rx_free(&rx);

    /* The first frame is bounded too. */
    lahja_wire_rx_init(&rx, 32, MAX_PAYLOAD, MAX_TYPES);
    uint8_t buf[LAHJA_WIRE_HELLO_MAX];
    lahja_wire_hello_encode(buf, "a-rather-long-endpoint-name-for-a-small-max-frame", 49, 0, 32);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EMSGSIZE);
    lahja_wire_rx_free(&rx);
}

/* ----------------------------------------------------- TYPE and EVENT */

static void test_reject_unbound_type(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t buf[64];
    uint8_t body[8] = { 0 };
    /* Type id 0 is never bound; the encoder refuses it too. */
    size_t n = raw_frame(buf, 4, LAHJA_WIRE_EVENT, 0, 0, body, 4);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    assert_int_equal(lahja_wire_event_prefix(buf, 0, 0, 0, 0, 0), 0);
    n = event_frame(buf, 1, 0, 0, 0, "x", 1);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    bind_type(&rx, 1, "one");
    assert_int_equal(feed(&rx, buf, n), (ssize_t)n);
    n = event_frame(buf, 2, 0, 0, 0, "x", 1);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = event_frame(buf, UINT32_MAX, LAHJA_WIRE_RESPONSE, 3, 0, "x", 1);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    lahja_wire_rx_free(&rx);
}

static void test_reject_type_nonsequential(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t buf[300];
    size_t n = lahja_wire_type_encode(buf, 2, "two", 3);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    assert_int_equal(lahja_wire_type_encode(buf, 0, "zero", 4), 0);
    n = raw_frame(buf, 6, LAHJA_WIRE_TYPE, 0, 0, "\0\0\0\0\1z", 6);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    bind_type(&rx, 1, "one");
    n = lahja_wire_type_encode(buf, 1, "again", 5);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = lahja_wire_type_encode(buf, 3, "three", 5);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    bind_type(&rx, 2, "two");
    assert_int_equal(rx.ntypes, 2);
    lahja_wire_rx_free(&rx);
}

static void test_reject_type_bad_name(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t buf[300];
    assert_int_equal(lahja_wire_type_encode(buf, 1, "", 0), 0);
    assert_int_equal(lahja_wire_type_encode(buf, 1, "a\0", 2), 0);
    /* Zero-length name, a NUL in the name, name_len past the body. */
    size_t n = raw_frame(buf, 6, LAHJA_WIRE_TYPE, 0, 0, "\1\0\0\0\0z", 6);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = raw_frame(buf, 7, LAHJA_WIRE_TYPE, 0, 0, "\1\0\0\0\2z\0", 7);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = raw_frame(buf, 7, LAHJA_WIRE_TYPE, 0, 0, "\1\0\0\0\3zz", 7);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = raw_frame(buf, 7, LAHJA_WIRE_TYPE, 0, 0, "\1\0\0\0\1zz", 7);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    /* Longer than any TYPE can be: refused from the header. */
    raw_frame(buf, 5 + 256, LAHJA_WIRE_TYPE, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, buf, 8), -EPROTO);
    assert_int_equal(rx.ntypes, 0);
    lahja_wire_rx_free(&rx);
}

static void test_reject_too_many_types(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    char name[8];
    for (uint32_t id = 1; id <= MAX_TYPES; id++) {
        snprintf(name, sizeof name, "t%u", (unsigned)id);
        bind_type(&rx, id, name);
    }
    uint8_t buf[64];
    size_t n = lahja_wire_type_encode(buf, MAX_TYPES + 1, "extra", 5);
    assert_int_equal(feed(&rx, buf, n), -EMSGSIZE);
    assert_int_equal(rx.ntypes, MAX_TYPES);
    assert_true(rx.captypes <= MAX_TYPES);
    lahja_wire_rx_free(&rx);

    /* No types at all. */
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, 0);
    uint8_t hello[LAHJA_WIRE_HELLO_MAX];
    size_t hn = lahja_wire_hello_encode(hello, "p", 1, 0, MAX_FRAME);
    assert_int_equal(feed(&rx, hello, hn), (ssize_t)hn);
    n = lahja_wire_type_encode(buf, 1, "t", 1);
    assert_int_equal(feed(&rx, buf, n), -EMSGSIZE);
    lahja_wire_rx_free(&rx);
}

static void test_reject_truncated_event(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    bind_type(&rx, 1, "t");
    uint8_t buf[64] = { 0 };
    buf[8] = 1; /* type id 1 */
    static const struct { uint32_t body; uint8_t flags; } cases[] = {
        { 0, 0 }, { 3, 0 },
        { 11, LAHJA_WIRE_REQUEST }, { 4, LAHJA_WIRE_RESPONSE },
        { 7, LAHJA_WIRE_LZ4 },
        { 15, LAHJA_WIRE_REQUEST | LAHJA_WIRE_LZ4 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        raw_frame(buf, cases[i].body, LAHJA_WIRE_EVENT, cases[i].flags, 0, NULL, 0);
        /* Known from the header alone. */
        assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
        assert_int_equal(feed(&rx, buf, 8 + cases[i].body), -EPROTO);
    }
    /* Exactly the fixed fields is an empty payload. */
    raw_frame(buf, 16, LAHJA_WIRE_EVENT, LAHJA_WIRE_REQUEST | LAHJA_WIRE_LZ4, 0, NULL, 0);
    assert_int_equal(feed(&rx, buf, 24), 24);
    lahja_wire_rx_free(&rx);
}

static void test_reject_payload_over_max(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    bind_type(&rx, 1, "t");
    uint8_t buf[LAHJA_WIRE_EVENT_PREFIX_MAX + MAX_PAYLOAD + 1];
    memset(buf, 'p', sizeof buf);
    /* LZ4: raw_len decides, whatever the compressed size. */
    size_t n = lahja_wire_event_prefix(buf, 1, LAHJA_WIRE_LZ4, 0, MAX_PAYLOAD + 1, 10);
    assert_int_equal(feed(&rx, buf, n + 10), -EMSGSIZE);
    n = lahja_wire_event_prefix(buf, 1, LAHJA_WIRE_LZ4 | LAHJA_WIRE_REQUEST, 1, UINT32_MAX, 10);
    assert_int_equal(feed(&rx, buf, n + 10), -EMSGSIZE);
    n = lahja_wire_event_prefix(buf, 1, LAHJA_WIRE_LZ4, 0, MAX_PAYLOAD, 10);
    assert_int_equal(feed(&rx, buf, n + 10), (ssize_t)(n + 10));
    /* Uncompressed: the payload itself, known from the header. */
    n = lahja_wire_event_prefix(buf, 1, 0, 0, 0, MAX_PAYLOAD + 1);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EMSGSIZE);
    n = lahja_wire_event_prefix(buf, 1, 0, 0, 0, MAX_PAYLOAD);
    assert_int_equal(feed(&rx, buf, n + MAX_PAYLOAD), (ssize_t)(n + MAX_PAYLOAD));
    lahja_wire_rx_free(&rx);
}

/* --------------------------------------------------------------- SUBS */

static size_t subs_frame(uint8_t *buf, uint32_t count, const void *entries, size_t len)
{
    uint8_t body[128];
    put32(body, 7);
    put32(body + 4, count);
    memcpy(body + 8, entries, len);
    return raw_frame(buf, (uint32_t)(8 + len), LAHJA_WIRE_SUBS, 0, 0, body, 8 + len);
}

static void test_reject_subs(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t buf[160];
    size_t n = subs_frame(buf, 2, "\1a\2bc", 5);
    assert_int_equal(feed(&rx, buf, n), (ssize_t)n);
    /* count says more or fewer than there are */
    n = subs_frame(buf, 3, "\1a\2bc", 5);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = subs_frame(buf, 1, "\1a\2bc", 5);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = subs_frame(buf, UINT32_MAX, "\1a\2bc", 5);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = subs_frame(buf, 0, "\1a", 2);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    /* trailing bytes after the last entry */
    n = subs_frame(buf, 2, "\1a\2bc\0", 6);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    /* an entry running past the body */
    n = subs_frame(buf, 2, "\1a\3bc", 5);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = subs_frame(buf, 1, "\xff", 1);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    /* a zero-length type, a NUL inside a type */
    n = subs_frame(buf, 2, "\1a\0", 3);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    n = subs_frame(buf, 1, "\3a\0b", 4);
    assert_int_equal(feed(&rx, buf, n), -EPROTO);
    /* shorter than seq and count: known from the header */
    raw_frame(buf, 7, LAHJA_WIRE_SUBS, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    lahja_wire_rx_free(&rx);

    /* The encoder refuses invalid types. */
    const char *types[] = { "ok", "" };
    const size_t lens[] = { 2, 0 };
    assert_int_equal(lahja_wire_subs_encode(buf, sizeof buf, 1, types, lens, 2), 0);
    const size_t toolong[] = { 2, 256 };
    assert_int_equal(lahja_wire_subs_encode(buf, sizeof buf, 1, types, toolong, 2), 0);
    assert_int_equal(lahja_wire_subs_encode(buf, 15, 1, NULL, NULL, 0), 0);
}

static void test_reject_ack_size(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t buf[16] = { 0 };
    raw_frame(buf, 3, LAHJA_WIRE_SUBS_ACK, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    raw_frame(buf, 5, LAHJA_WIRE_SUBS_ACK, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    lahja_wire_rx_free(&rx);
}

/* ---------------------------------------------------------- tx intern */

static void test_tx_intern(void **state)
{
    (void)state;
    enum { N = 10000 };
    lahja_wire_tx_t tx;
    lahja_wire_tx_init(&tx);
    char name[32];
    for (int round = 0; round < 2; round++) {
        for (uint32_t i = 0; i < N; i++) {
            int len = snprintf(name, sizeof name, "event.type-%u", (unsigned)i);
            uint32_t id = 0;
            int is_new = -1;
            assert_int_equal(lahja_wire_tx_intern(&tx, name, (size_t)len, &id, &is_new), 0);
            assert_int_equal(id, i + 1);
            assert_int_equal(is_new, round == 0);
            /* The load stays at or under 70%. */
            assert_true((uint64_t)tx.map.used * 10 <= (uint64_t)tx.map.nslots * 7);
        }
    }
    assert_int_equal(tx.ntypes, N);

    /* A prefix of a bound name is another name. */
    uint32_t id;
    int is_new;
    assert_int_equal(lahja_wire_tx_intern(&tx, "event.type-1", 11, &id, &is_new), 0);
    assert_int_equal(id, N + 1);
    assert_int_equal(is_new, 1);

    assert_int_equal(lahja_wire_tx_intern(&tx, "", 0, &id, &is_new), -EINVAL);
    assert_int_equal(lahja_wire_tx_intern(&tx, "a\0b", 3, &id, &is_new), -EINVAL);
    assert_int_equal(tx.ntypes, N + 1);
    lahja_wire_tx_free(&tx);
    lahja_wire_tx_free(&tx);

    /* Interned ids are the ids a receiver expects, in order. */
    lahja_wire_tx_init(&tx);
    lahja_wire_rx_t rx;
    start(&rx);
    static const char *const types[] = { "b", "a", "b", "c", "a" };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(lahja_wire_tx_intern(&tx, types[i], 1, &id, &is_new), 0);
        if (is_new)
            bind_type(&rx, id, types[i]);
        uint8_t buf[32];
        size_t n = event_frame(buf, id, 0, 0, 0, "", 0);
        lahja_wire_msg_t msg;
        size_t need;
        assert_int_equal(next(&rx, buf, n, &msg, &need), (ssize_t)n);
        assert_string_equal(msg.u.event.type, types[i]);
    }
    assert_int_equal(rx.ntypes, 3);
    lahja_wire_rx_free(&rx);
    lahja_wire_tx_free(&tx);
}

/* ------------------------------------------------- receipts and close */

static void test_roundtrip_receipt_and_close(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    uint8_t buf[LAHJA_WIRE_RECEIPT_SIZE];
    assert_int_equal(lahja_wire_receipt_encode(buf, 0x0102030405060708u), 16);
    static const uint8_t receipt[16] = { 8, 0, 0, 0, 6, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1 };
    assert_memory_equal(buf, receipt, 16);
    lahja_wire_msg_t msg;
    size_t need;
    assert_int_equal(next(&rx, buf, 16, &msg, &need), 16);
    assert_int_equal(msg.kind, LAHJA_WIRE_RECEIPT);
    assert_true(msg.u.receipt == 0x0102030405060708u);

    uint8_t close[LAHJA_WIRE_CLOSE_SIZE];
    assert_int_equal(lahja_wire_close_encode(close, LAHJA_WIRE_CLOSE_DUPLICATE), 12);
    static const uint8_t bytes[12] = { 4, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0 };
    assert_memory_equal(close, bytes, 12);
    assert_int_equal(next(&rx, close, 12, &msg, &need), 12);
    assert_int_equal(msg.kind, LAHJA_WIRE_CLOSE);
    assert_int_equal(msg.u.close_reason, LAHJA_WIRE_CLOSE_DUPLICATE);

    /* Their sizes are fixed, and known from the header. */
    uint8_t bad[24] = { 0 };
    raw_frame(bad, 7, LAHJA_WIRE_RECEIPT, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, bad, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    raw_frame(bad, 9, LAHJA_WIRE_RECEIPT, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, bad, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    raw_frame(bad, 5, LAHJA_WIRE_CLOSE, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, bad, LAHJA_WIRE_HEADER_SIZE), -EPROTO);
    raw_frame(bad, 8, LAHJA_WIRE_RECEIPT, 1, 0, NULL, 0);
    assert_int_equal(feed(&rx, bad, LAHJA_WIRE_HEADER_SIZE), -EPROTO); /* flags */
    lahja_wire_rx_free(&rx);

    /* Not before the handshake. */
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    assert_int_equal(feed(&rx, buf, 16), -EPROTO);
    lahja_wire_rx_free(&rx);
}

/* Before the HELLO, only a HELLO's worth is accepted: a header that
 * claims more is refused before its body is read. */
static void test_reject_large_frame_before_hello(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    lahja_wire_rx_init(&rx, MAX_FRAME, MAX_PAYLOAD, MAX_TYPES);
    lahja_wire_rx_limits(&rx, 300, UINT32_MAX);
    uint8_t buf[LAHJA_WIRE_HELLO_MAX];
    raw_frame(buf, 64u << 20, LAHJA_WIRE_HELLO, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EMSGSIZE);
    raw_frame(buf, 301, LAHJA_WIRE_HELLO, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE), -EMSGSIZE);
    /* The largest HELLO passes; after it, max_frame applies again. */
    char name[255];
    memset(name, 'n', sizeof name);
    size_t n = lahja_wire_hello_encode(buf, name, sizeof name, 0, MAX_FRAME);
    assert_int_equal(n, LAHJA_WIRE_HELLO_MAX);
    assert_int_equal(feed(&rx, buf, n), (ssize_t)n);
    uint8_t ev[LAHJA_WIRE_HEADER_SIZE];
    raw_frame(ev, 1000, LAHJA_WIRE_EVENT, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, ev, LAHJA_WIRE_HEADER_SIZE), 0);
    lahja_wire_rx_free(&rx);
}

/* A SUBS announcing more types than allowed is refused as soon as its
 * count is in, or its header if its size alone says so. */
static void test_reject_subs_over_max(void **state)
{
    (void)state;
    lahja_wire_rx_t rx;
    start(&rx);
    lahja_wire_rx_limits(&rx, MAX_FRAME, 2);
    const char *types[3] = { "a", "b", "c" };
    size_t lens[3] = { 1, 1, 1 };
    uint8_t buf[64];
    size_t n = lahja_wire_subs_encode(buf, sizeof buf, 1, types, lens, 2);
    assert_int_equal(feed(&rx, buf, n), (ssize_t)n);
    n = lahja_wire_subs_encode(buf, sizeof buf, 2, types, lens, 3);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE + 7), 0);
    assert_int_equal(feed(&rx, buf, LAHJA_WIRE_HEADER_SIZE + 8), -EMSGSIZE);
    assert_int_equal(feed(&rx, buf, n), -EMSGSIZE);
    uint8_t big[LAHJA_WIRE_HEADER_SIZE];
    raw_frame(big, 8 + 2 * 256 + 1, LAHJA_WIRE_SUBS, 0, 0, NULL, 0);
    assert_int_equal(feed(&rx, big, sizeof big), -EMSGSIZE);
    lahja_wire_rx_free(&rx);
}

/* A binding undone (its TYPE frame could not be queued) is made again,
 * under the same id, by the next event of the type. */
static void test_tx_unbind(void **state)
{
    (void)state;
    lahja_wire_tx_t tx;
    lahja_wire_tx_init(&tx);
    uint32_t id;
    int is_new;
    assert_int_equal(lahja_wire_tx_intern(&tx, "a", 1, &id, &is_new), 0);
    assert_int_equal(lahja_wire_tx_intern(&tx, "b", 1, &id, &is_new), 0);
    assert_int_equal(id, 2);
    lahja_wire_tx_unbind(&tx, "a", 1, lahja_strmap_hash("a", 1)); /* not the last: kept */
    assert_int_equal(tx.ntypes, 2);
    lahja_wire_tx_unbind(&tx, "b", 1, lahja_strmap_hash("b", 1));
    assert_int_equal(tx.ntypes, 1);
    assert_int_equal(lahja_wire_tx_intern(&tx, "b", 1, &id, &is_new), 0);
    assert_int_equal(id, 2);
    assert_int_equal(is_new, 1);
    assert_int_equal(lahja_wire_tx_intern(&tx, "a", 1, &id, &is_new), 0);
    assert_int_equal(id, 1);
    assert_int_equal(is_new, 0);
    lahja_wire_tx_free(&tx);
}

/* -------------------------------------------------------- compression */

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_lz4_roundtrip(void **state)
{
    (void)state;
    const size_t len = 1u << 20;
    uint8_t *src = malloc(len);
    assert_non_null(src);
    /* Compressible: log-like lines with a counter in them. */
    for (size_t i = 0; i < len;) {
        char line[64];
        int n = snprintf(line, sizeof line, "block %zu imported, peers=%zu\n", i / 40, i % 7);
        size_t k = (size_t)n < len - i ? (size_t)n : len - i;
        memcpy(src + i, line, k);
        i += k;
    }
    size_t cap = lahja_wire_lz4_bound(len);
    assert_true(cap >= len);
    uint8_t *z = malloc(cap);
    assert_non_null(z);
    size_t zn = lahja_wire_lz4_compress(src, len, z, cap);
    assert_true(zn > 0);
    assert_true(zn < len / 4);

    uint8_t *out = malloc(len); /* exactly raw_len: any overrun would show */
    assert_non_null(out);
    assert_int_equal(lahja_wire_lz4_decompress(z, zn, out, len), 0);
    assert_memory_equal(out, src, len);

    /* Too little room to compress into: 0, never an overrun. */
    uint8_t *small = malloc(zn - 1);
    assert_non_null(small);
    assert_int_equal(lahja_wire_lz4_compress(src, len, small, zn - 1), 0);
    free(small);
    free(out);
    free(z);
    free(src);
}

static void test_lz4_incompressible(void **state)
{
    (void)state;
    const size_t len = 64 * 1024;
    uint8_t *src = malloc(len);
    assert_non_null(src);
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < len; i++)
        src[i] = (uint8_t)xorshift(&s);
    size_t cap = lahja_wire_lz4_bound(len);
    uint8_t *z = malloc(cap);
    assert_non_null(z);
    assert_int_equal(lahja_wire_lz4_compress(src, len, z, cap), 0);
    /* Tiny inputs never shrink either. */
    assert_int_equal(lahja_wire_lz4_compress("abc", 3, z, cap), 0);
    assert_int_equal(lahja_wire_lz4_compress("", 0, z, cap), 0);
    free(z);
    free(src);
}

static void test_lz4_corrupt(void **state)
{
    (void)state;
    const size_t len = 4096;
    uint8_t src[4096];
    for (size_t i = 0; i < len; i++)
        src[i] = (uint8_t)("abcdefgh"[i % 8] + (i / 512));
    uint8_t z[4096 + 4096 / 255 + 16];
    size_t zn = lahja_wire_lz4_compress(src, len, z, sizeof z);
    assert_true(zn > 0);
    uint8_t *out = malloc(len);
    assert_non_null(out);

    /* Every truncation: the input ends early, the output comes out short. */
    for (size_t k = 0; k < zn; k++) {
        uint8_t *cut = malloc(k ? k : 1);
        assert_non_null(cut);
        memcpy(cut, z, k);
        assert_int_equal(lahja_wire_lz4_decompress(cut, k, out, len), -EPROTO);
        free(cut);
    }
    /* A raw length that is not the real one, either way. */
    uint8_t *shorter = malloc(len - 1);
    assert_non_null(shorter);
    assert_int_equal(lahja_wire_lz4_decompress(z, zn, shorter, len - 1), -EPROTO);
    free(shorter);
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    assert_int_equal(lahja_wire_lz4_decompress(z, zn, longer, len + 1), -EPROTO);
    free(longer);
    /* A match reaching back before the start of the output. */
    static const uint8_t bad_offset[] = { 0x14, 'a', 0x00, 0x01, 0x50, 'b', 'c', 'd', 'e', 'f' };
    uint8_t *nine = malloc(14);
    assert_non_null(nine);
    assert_int_equal(lahja_wire_lz4_decompress(bad_offset, sizeof bad_offset, nine, 14), -EPROTO);
    free(nine);
    /* Random damage: a clean result or -EPROTO, never an overrun. */
    uint64_t s = 12345;
    uint8_t bad[sizeof z];
    for (int round = 0; round < 2000; round++) {
        memcpy(bad, z, zn);
        for (int k = 0; k < 1 + round % 4; k++)
            bad[xorshift(&s) % zn] = (uint8_t)xorshift(&s);
        int rc = lahja_wire_lz4_decompress(bad, zn, out, len);
        assert_true(rc == 0 || rc == -EPROTO);
    }
    /* Garbage, and the empty cases. */
    for (size_t i = 0; i < sizeof bad; i++)
        bad[i] = (uint8_t)xorshift(&s);
    int rc = lahja_wire_lz4_decompress(bad, sizeof bad, out, len);
    assert_true(rc == 0 || rc == -EPROTO);
    assert_int_equal(lahja_wire_lz4_decompress(z, 0, out, len), -EPROTO);
    assert_int_equal(lahja_wire_lz4_decompress("\0", 1, NULL, 0), 0);
    assert_int_equal(lahja_wire_lz4_decompress("\x10", 1, NULL, 0), -EPROTO);
    free(out);
}

/* ----------------------------------------------------------- encoders */

static void test_encode_limits(void **state)
{
    (void)state;
    uint8_t buf[LAHJA_WIRE_EVENT_PREFIX_MAX];
    /* The largest payload that fits a u32 body, and one byte more. */
    assert_int_equal(lahja_wire_event_prefix(buf, 1, 0, 0, 0, UINT32_MAX - 4), 12);
    assert_int_equal(lahja_wire_event_prefix(buf, 1, 0, 0, 0, (size_t)UINT32_MAX - 3), 0);
    assert_int_equal(lahja_wire_event_prefix(buf, 1, LAHJA_WIRE_REQUEST | LAHJA_WIRE_LZ4, 1, 1,
                                             UINT32_MAX - 16),
                     LAHJA_WIRE_EVENT_PREFIX_MAX);
    assert_int_equal(lahja_wire_event_prefix(buf, 1, LAHJA_WIRE_REQUEST | LAHJA_WIRE_LZ4, 1, 1,
                                             UINT32_MAX - 15),
                     0);
    assert_int_equal(lahja_wire_subs_size(2, 10), 8 + 8 + 2 + 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_hello_bytes),
        cmocka_unit_test(test_event_bytes),
        cmocka_unit_test(test_roundtrip_hello),
        cmocka_unit_test(test_roundtrip_subs),
        cmocka_unit_test(test_roundtrip_ack),
        cmocka_unit_test(test_roundtrip_type_and_event),
        cmocka_unit_test(test_small_event_reader),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_partial_byte_by_byte),
        cmocka_unit_test(test_reject_bad_magic),
        cmocka_unit_test(test_reject_other_version),
        cmocka_unit_test(test_reject_hello_names),
        cmocka_unit_test(test_reject_first_not_hello),
        cmocka_unit_test(test_reject_second_hello),
        cmocka_unit_test(test_reject_unknown_kind),
        cmocka_unit_test(test_reject_reserved_bits),
        cmocka_unit_test(test_reject_unknown_flags),
        cmocka_unit_test(test_lent_reference),
        cmocka_unit_test(test_release_frames),
        cmocka_unit_test(test_reject_flags_on_non_event),
        cmocka_unit_test(test_reject_request_and_response),
        cmocka_unit_test(test_reject_body_over_max_frame),
        cmocka_unit_test(test_reject_unbound_type),
        cmocka_unit_test(test_reject_type_nonsequential),
        cmocka_unit_test(test_reject_type_bad_name),
        cmocka_unit_test(test_reject_too_many_types),
        cmocka_unit_test(test_reject_truncated_event),
        cmocka_unit_test(test_reject_payload_over_max),
        cmocka_unit_test(test_reject_subs),
        cmocka_unit_test(test_reject_ack_size),
        cmocka_unit_test(test_tx_intern),
        cmocka_unit_test(test_roundtrip_receipt_and_close),
        cmocka_unit_test(test_reject_large_frame_before_hello),
        cmocka_unit_test(test_reject_subs_over_max),
        cmocka_unit_test(test_tx_unbind),
        cmocka_unit_test(test_lz4_roundtrip),
        cmocka_unit_test(test_lz4_incompressible),
        cmocka_unit_test(test_lz4_corrupt),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_subs_entries),
        cmocka_unit_test(test_pattern_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
