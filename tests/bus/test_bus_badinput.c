/*
 * Bad input (B26): a raw socket client sends what no endpoint would:
 * garbage, malformed, truncated, oversized and out-of-order frames.  Each
 * time the endpoint hangs up on it with a logged reason, and a real peer
 * connected all along, from another process, keeps exchanging events.
 *
 * This executable is linked with --wrap for malloc, calloc and realloc
 * (see CMakeLists.txt): the wrappers below record the largest single
 * request, so that a test can check that a peer's claims never make the
 * endpoint allocate more than its configured maximum frame.
 */
#define _GNU_SOURCE
#include "support_bus.h"

#define MAX_PAYLOAD (64 * 1024)
/* The largest frame body the endpoint accepts: payload, type id, request
 * id and raw length (src/wire/wire.h, LAHJA_WIRE_EVENT_PREFIX_MAX less
 * the header). */
#define MAX_FRAME (MAX_PAYLOAD + 24)

/* ------------------------------------------------- allocation tracking */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);

static void note_alloc(size_t n)
{
    bus_alloc_tracked = 1;
    if (n > bus_alloc_peak)
        bus_alloc_peak = n;
}

void *__wrap_malloc(size_t n)
{
    note_alloc(n);
    return __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    note_alloc(k * n);
    return __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    note_alloc(n);
    return __real_realloc(p, n);
}

/* -------------------------------------------------------------- frames */

static uint8_t *b_garbage(uint8_t *p)
{
    /* Someone talking HTTP to the socket: its "length" is huge, its kind
     * byte ('/') is none of ours. */
    const char text[] = "GET / HTTP/1.1\r\nHost: lahja\r\n\r\n";
    memcpy(p, text, sizeof text - 1);
    return p + sizeof text - 1;
}

static uint8_t *b_zero_header(uint8_t *p)
{
    memset(p, 0, RAW_HDR); /* kind 0 */
    return p + RAW_HDR;
}

static uint8_t *b_oversized_header(uint8_t *p)
{
    p = raw_header(p, 0xFFFFFFF0u, RAW_HELLO, 0);
    memcpy(p, "LAHJA", 5);
    return p + 5;
}

static uint8_t *b_event_before_hello(uint8_t *p)
{
    return raw_event(p, 1, "x", 1);
}

static uint8_t *b_hello_bad_subs(uint8_t *p)
{
    p = raw_hello(p, "raw");
    /* Says two types, holds one. */
    p = raw_header(p, 8 + 1 + 4, RAW_SUBS, 0);
    p = raw_u32(p, 1);
    p = raw_u32(p, 2);
    *p++ = 4;
    memcpy(p, "Type", 4);
    return p + 4;
}

static uint8_t *b_hello_unknown_kind(uint8_t *p)
{
    p = raw_hello(p, "raw");
    p = raw_header(p, 4, 9, 0);
    return raw_u32(p, 0);
}

static uint8_t *b_hello_reserved_bits(uint8_t *p)
{
    p = raw_hello(p, "raw");
    p = raw_header(p, 4, RAW_SUBS_ACK, 0);
    p[-1] = 1; /* reserved must be 0 */
    return raw_u32(p, 1);
}

static uint8_t *b_hello_twice(uint8_t *p)
{
    p = raw_hello(p, "raw");
    return raw_hello(p, "raw");
}

static uint8_t *b_type_bad_id(uint8_t *p)
{
    p = raw_hello(p, "raw");
    return raw_type(p, 5, "T"); /* the first binding must be id 1 */
}

static uint8_t *b_event_unbound_type(uint8_t *p)
{
    p = raw_hello(p, "raw");
    return raw_event(p, 1, "x", 1);
}

/* An EVENT whose header claims 1 MiB, with max_payload 64 KiB. */
static uint8_t *b_event_claims_1mib(uint8_t *p)
{
    p = raw_hello(p, "raw");
    p = raw_type(p, 1, "T");
    p = raw_header(p, 4 + (1u << 20), RAW_EVENT, 0);
    return raw_u32(p, 1);
}

/* An LZ4 EVENT whose raw length (1 GiB) is over max_payload: the
 * decompression buffer must not be sized from it. */
static uint8_t *b_lz4_raw_len_huge(uint8_t *p)
{
    p = raw_hello(p, "raw");
    p = raw_type(p, 1, "T");
    p = raw_header(p, 4 + 4 + 16, RAW_EVENT, RAW_F_LZ4);
    p = raw_u32(p, 1);
    p = raw_u32(p, 1u << 30);
    memset(p, 0x11, 16);
    return p + 16;
}

/* An LZ4 EVENT whose compressed bytes are not LZ4. */
static uint8_t *b_lz4_corrupt(uint8_t *p)
{
    p = raw_hello(p, "raw");
    p = raw_type(p, 1, "T");
    p = raw_header(p, 4 + 4 + 16, RAW_EVENT, RAW_F_LZ4);
    p = raw_u32(p, 1);
    p = raw_u32(p, 1000);
    memset(p, 0xFF, 16);
    return p + 16;
}

/* A frame cut short: the header promises 100 bytes, 10 come, then the
 * client says it is done (the test half-closes). */
static uint8_t *b_truncated_event(uint8_t *p)
{
    p = raw_hello(p, "raw");
    p = raw_type(p, 1, "T");
    p = raw_header(p, 100, RAW_EVENT, 0);
    p = raw_u32(p, 1);
    memset(p, 'x', 6);
    return p + 6;
}

static uint8_t *b_truncated_header(uint8_t *p)
{
    p[0] = 20, p[1] = 0, p[2] = 0; /* 3 bytes of a header */
    return p + 3;
}

static uint8_t *b_hello_bad_name(uint8_t *p)
{
    return raw_hello(p, "a/b");
}

/* The name of the peer already connected: not a way to displace it. */
static uint8_t *b_hello_impersonates_peer(uint8_t *p)
{
    return raw_hello(p, "peer");
}

/* Our own name. */
static uint8_t *b_hello_as_server(uint8_t *p)
{
    return raw_hello(p, "srv");
}

/* --------------------------------------------------------------- tests */

#define RAW_TEST(name, ...)                                                \
    static const struct bus_raw_case case_##name = { __VA_ARGS__ };        \
    static int main_##name(void *arg)                                      \
    {                                                                      \
        (void)arg;                                                         \
        bus_raw_case_run(&case_##name, 0);                                 \
        return 0;                                                          \
    }                                                                      \
    BUS_MAIN_TEST(name)

RAW_TEST(garbage, .build = b_garbage, .expect_err = -EPROTO)
RAW_TEST(zero_header, .build = b_zero_header, .expect_err = -EPROTO)
/* Refused on its header: nothing near its claimed size is allocated. */
RAW_TEST(oversized_header, .build = b_oversized_header, .expect_err = -EMSGSIZE,
         .max_alloc = MAX_FRAME)
RAW_TEST(event_before_hello, .build = b_event_before_hello, .expect_err = -EPROTO)
RAW_TEST(hello_then_bad_subs, .build = b_hello_bad_subs, .expect_err = -EPROTO,
         .expect_peer = "raw")
RAW_TEST(hello_then_unknown_kind, .build = b_hello_unknown_kind, .expect_err = -EPROTO,
         .expect_peer = "raw")
RAW_TEST(hello_then_reserved_bits, .build = b_hello_reserved_bits, .expect_err = -EPROTO,
         .expect_peer = "raw")
RAW_TEST(hello_twice, .build = b_hello_twice, .expect_err = -EPROTO, .expect_peer = "raw")
RAW_TEST(type_bad_id, .build = b_type_bad_id, .expect_err = -EPROTO, .expect_peer = "raw")
RAW_TEST(event_unbound_type, .build = b_event_unbound_type, .expect_err = -EPROTO,
         .expect_peer = "raw")
/* Claims 1 MiB and sends it: refused on the header, never buffered. */
RAW_TEST(event_claims_1mib, .build = b_event_claims_1mib, .flood = 1u << 20,
         .expect_err = -EMSGSIZE, .expect_peer = "raw", .max_alloc = MAX_FRAME)
RAW_TEST(lz4_raw_len_huge, .build = b_lz4_raw_len_huge, .expect_err = -EMSGSIZE,
         .expect_peer = "raw", .max_alloc = MAX_FRAME)
RAW_TEST(lz4_corrupt, .build = b_lz4_corrupt, .expect_err = -EPROTO, .expect_peer = "raw")
RAW_TEST(truncated_event_then_close, .build = b_truncated_event, .half_close = 1,
         .expect_text = "closed by peer", .expect_peer = "raw")
RAW_TEST(truncated_header_then_close, .build = b_truncated_header, .half_close = 1,
         .expect_text = "closed by peer")
RAW_TEST(hello_bad_name, .build = b_hello_bad_name, .expect_err = -EPROTO)
/* Refused as a duplicate; the real "peer" stays connected (checked by
 * the runner). */
RAW_TEST(hello_impersonates_peer, .build = b_hello_impersonates_peer,
         .expect_err = LAHJA_ECONNREJECTED)
RAW_TEST(hello_as_server, .build = b_hello_as_server, .expect_err = LAHJA_ECONNREJECTED)

/* The wrappers are in place: an allocation by the library is seen. */
static void test_alloc_tracking_works(void **state)
{
    (void)state;
    bus_alloc_peak = 0;
    lahja_event_t *ev = NULL;
    assert_int_equal(lahja_event_new("T", NULL, 0, &ev), 0);
    assert_true(bus_alloc_tracked);
    assert_true(bus_alloc_peak > 0);
    lahja_event_unref(ev);
}

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_tracking_works),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_zero_header),
        cmocka_unit_test(test_oversized_header),
        cmocka_unit_test(test_event_before_hello),
        cmocka_unit_test(test_hello_then_bad_subs),
        cmocka_unit_test(test_hello_then_unknown_kind),
        cmocka_unit_test(test_hello_then_reserved_bits),
        cmocka_unit_test(test_hello_twice),
        cmocka_unit_test(test_type_bad_id),
        cmocka_unit_test(test_event_unbound_type),
        cmocka_unit_test(test_event_claims_1mib),
        cmocka_unit_test(test_lz4_raw_len_huge),
        cmocka_unit_test(test_lz4_corrupt),
        cmocka_unit_test(test_truncated_event_then_close),
        cmocka_unit_test(test_truncated_header_then_close),
        cmocka_unit_test(test_hello_bad_name),
        cmocka_unit_test(test_hello_impersonates_peer),
        cmocka_unit_test(test_hello_as_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
