/*
 * Writes the seed corpus of fuzz_wire into a directory:
 *     make_corpus fuzz/corpus/wire
 * Each file is fuzz_wire's input: a limits byte, a read-size byte, then
 * a stream as a peer would send it.  Most streams are valid, so that the
 * fuzzer starts deep inside the protocol; a few break one rule each.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/wire.h"

/* fuzz_wire's limits: index 2 is 4096-byte frames and payloads, 16 types. */
#define LIMITS 2
#define READS_ONE 0   /* one byte at a time */
#define READS_SMALL 1 /* up to 16 bytes */
#define READS_ALL 3   /* the whole stream at once */
#define TIGHT 4       /* with the tight bounds before HELLO and on SUBS */

struct seed {
    uint8_t buf[8192];
    size_t len;
};

static void start(struct seed *s, uint8_t limits, uint8_t reads)
{
    s->buf[0] = limits;
    s->buf[1] = reads;
    s->len = 2;
}

static uint8_t *end(struct seed *s)
{
    return s->buf + s->len;
}

static void hello(struct seed *s, const char *name)
{
    s->len += lahja_wire_hello_encode(end(s), name, strlen(name), LAHJA_WIRE_FEAT_LZ4, 4096);
}

static void type(struct seed *s, uint32_t id, const char *name)
{
    s->len += lahja_wire_type_encode(end(s), id, name, strlen(name));
}

static void event(struct seed *s, uint32_t type_id, uint8_t flags, uint64_t id,
                  uint32_t raw_len, const void *payload, size_t len)
{
    s->len += lahja_wire_event_prefix(end(s), type_id, flags, id, raw_len, len);
    memcpy(end(s), payload, len);
    s->len += len;
}

static void subs(struct seed *s, uint32_t seq, const char *const *types, size_t n)
{
    size_t lens[16];
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(types[i]);
    s->len += lahja_wire_subs_encode(end(s), sizeof s->buf - s->len, seq, types, lens, n);
}

/* A SUBS with flag ENTRIES, of the first n of: "block.*" (a pattern), "x" from alpha and
 * beta only, "*" from gamma only, and a plain "peer.Joined". */
static void subs_entries(struct seed *s, uint32_t seq, size_t n)
{
    static const char *const ab[] = { "alpha", "beta" }, *const g[] = { "gamma" };
    static const size_t ab_lens[] = { 5, 4 }, g_lens[] = { 5 };
    const lahja_wire_entry_t es[] = {
        { .type = "block.*", .len = 7, .flags = LAHJA_WIRE_ENTRY_PATTERN },
        { .type = "x", .len = 1, .flags = LAHJA_WIRE_ENTRY_ORIGINS, .norigins = 2,
          .origins = ab, .origin_lens = ab_lens },
        { .type = "*", .len = 1, .flags = LAHJA_WIRE_ENTRY_PATTERN | LAHJA_WIRE_ENTRY_ORIGINS,
          .norigins = 1, .origins = g, .origin_lens = g_lens },
        { .type = "peer.Joined", .len = 11 },
    };
    s->len += lahja_wire_subs_entries_encode(end(s), sizeof s->buf - s->len, seq, es, n);
}

static void raw(struct seed *s, const void *bytes, size_t len)
{
    memcpy(end(s), bytes, len);
    s->len += len;
}

static int save(const char *dir, const char *name, const struct seed *s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(s->buf, 1, s->len, f) != s->len || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

/* An EVENT whose payload is LZ4: compressible text of 1000 bytes. */
static void lz4_event(struct seed *s, uint32_t type_id, uint8_t flags, uint64_t id)
{
    char text[1000];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = "the quick brown fox "[i % 20];
    uint8_t z[1100];
    size_t zn = lahja_wire_lz4_compress(text, sizeof text, z, sizeof z);
    event(s, type_id, flags | LAHJA_WIRE_LZ4, id, sizeof text, z, zn);
}

static int valid_seeds(const char *dir)
{
    static const char *const three[] = { "block.New", "peer.Joined", "x" };
    struct seed s;
    int bad = 0;

    start(&s, LIMITS, READS_ALL);
    hello(&s, "alpha");
    bad |= save(dir, "hello", &s);

    start(&s, LIMITS, READS_SMALL);
    hello(&s, "beta");
    subs(&s, 1, three, 3);
    s.len += lahja_wire_ack_encode(end(&s), 7);
    subs(&s, 2, NULL, 0);
    bad |= save(dir, "subs_and_ack", &s);

    start(&s, LIMITS, READS_SMALL);
    hello(&s, "beta");
    subs_entries(&s, 1, 4);
    s.len += lahja_wire_ack_encode(end(&s), 1);
    subs(&s, 2, three, 3);
    bad |= save(dir, "subs_entries", &s);

    start(&s, LIMITS | TIGHT, READS_ALL); /* two entries, but four counted units */
    hello(&s, "rho");
    subs_entries(&s, 1, 2);
    bad |= save(dir, "tight_subs_entries_over", &s);

    start(&s, LIMITS, READS_ONE);
    hello(&s, "gamma");
    type(&s, 1, "greeting");
    event(&s, 1, 0, 0, 0, "hi", 2);
    event(&s, 1, 0, 0, 0, "", 0);
    bad |= save(dir, "type_and_event", &s);

    start(&s, LIMITS, READS_SMALL);
    hello(&s, "delta");
    type(&s, 1, "Ping");
    type(&s, 2, "Pong");
    event(&s, 1, LAHJA_WIRE_REQUEST, 1, 0, "ping", 4);
    event(&s, 2, LAHJA_WIRE_RESPONSE, 1, 0, "pong", 4);
    bad |= save(dir, "request_response", &s);

    start(&s, LIMITS, READS_ALL);
    hello(&s, "epsilon");
    type(&s, 1, "big.Blob");
    lz4_event(&s, 1, 0, 0);
    lz4_event(&s, 1, LAHJA_WIRE_REQUEST, 99);
    bad |= save(dir, "lz4_event", &s);

    start(&s, 3, 2);
    hello(&s, "zeta");
    char name[16];
    for (uint32_t id = 1; id <= 20; id++) {
        snprintf(name, sizeof name, "type.%u", (unsigned)id);
        type(&s, id, name);
        event(&s, id, 0, 0, 0, name, strlen(name));
    }
    bad |= save(dir, "many_types", &s);

    start(&s, 0, READS_SMALL); /* the smallest limits: 64-byte frames, 2 types */
    hello(&s, "eta");
    type(&s, 1, "a");
    type(&s, 2, "b");
    type(&s, 3, "c");
    bad |= save(dir, "small_limits", &s);

    start(&s, LIMITS, READS_SMALL);
    hello(&s, "omicron");
    s.len += lahja_wire_receipt_encode(end(&s), 3);
    s.len += lahja_wire_receipt_encode(end(&s), UINT64_MAX);
    s.len += lahja_wire_close_encode(end(&s), 1);
    bad |= save(dir, "receipt_close", &s);

    start(&s, LIMITS | TIGHT, READS_SMALL);
    hello(&s, "pi");
    subs(&s, 1, three, 3);
    bad |= save(dir, "tight_limits", &s);

    start(&s, LIMITS, READS_ALL);
    hello(&s, "theta");
    type(&s, 1, "fill");
    static uint8_t payload[4000];
    memset(payload, 0xa5, sizeof payload);
    event(&s, 1, 0, 0, 0, payload, sizeof payload);
    bad |= save(dir, "large_event", &s);
    return bad;
}

/* Streams that break one rule each, after a valid start. */
static int invalid_seeds(const char *dir)
{
    static const uint8_t payload_300[300];
    struct seed s;
    int bad = 0;

    start(&s, LIMITS, READS_ALL);
    raw(&s, "\x14\0\0\0\x01\0\0\0LAHJB\x01\0\0\0\0\0\x10\0\0\x05" "alpha", 28);
    bad |= save(dir, "bad_magic", &s);

    start(&s, LIMITS, READS_ALL);
    raw(&s, "\x14\0\0\0\x01\0\0\0LAHJA\x02\0\0\0\0\0\x10\0\0\x05" "alpha", 28);
    bad |= save(dir, "other_version", &s);

    start(&s, LIMITS, READS_SMALL);
    hello(&s, "one");
    hello(&s, "two");
    bad |= save(dir, "two_hellos", &s);

    start(&s, LIMITS, READS_SMALL);
    hello(&s, "iota");
    raw(&s, "\xff\xff\x00\x00\x05\x00\x00\x00", 8);
    bad |= save(dir, "over_max_frame", &s);

    start(&s, LIMITS, READS_SMALL);
    hello(&s, "kappa");
    raw(&s, "\x0b\0\0\0\x02\0\0\0" "\1\0\0\0\1\0\0\0" "\1a\0", 19);
    bad |= save(dir, "subs_trailing", &s);

    start(&s, LIMITS, READS_SMALL); /* a pattern entry without its '*' */
    hello(&s, "kappa");
    raw(&s, "\x0c\0\0\0\x02\x01\0\0" "\1\0\0\0\1\0\0\0" "\1\1a\0", 20);
    bad |= save(dir, "subs_entries_bad_pattern", &s);

    start(&s, LIMITS, READS_ALL);
    hello(&s, "lambda");
    type(&s, 1, "t");
    event(&s, 1, LAHJA_WIRE_LZ4, 0, 1000, "\xf0\x10garbage-garbage", 17);
    bad |= save(dir, "lz4_corrupt", &s);

    start(&s, 1, READS_SMALL); /* 512-byte frames, 256-byte payloads */
    hello(&s, "nu");
    type(&s, 1, "t");
    event(&s, 1, 0, 0, 0, payload_300, sizeof payload_300);
    bad |= save(dir, "payload_over_max", &s);

    start(&s, LIMITS | TIGHT, READS_SMALL); /* four types where three may come */
    hello(&s, "rho");
    static const char *const four[] = { "a", "b", "c", "d" };
    subs(&s, 1, four, 4);
    bad |= save(dir, "tight_subs_over", &s);

    start(&s, LIMITS | TIGHT, READS_ALL); /* a HELLO longer than the tight bound */
    hello(&s, "a-name-long-enough-to-be-over-forty-bytes");
    bad |= save(dir, "tight_hello_over", &s);

    start(&s, LIMITS, READS_ONE);
    hello(&s, "mu");
    event(&s, 3, 0, 0, 0, "x", 1);
    bad |= save(dir, "unbound_type", &s);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    int bad = valid_seeds(argv[1]) | invalid_seeds(argv[1]);
    return bad ? 1 : 0;
}
