/*
 * libFuzzer target for the NATS transport's side of an endpoint: what
 * other hosts' endpoints may send it (presence messages and connection
 * messages, well-formed or not), against a real endpoint on a real loop,
 * without a NATS server (lahja_nats_join_offline: the transport runs
 * whole, what it would publish comes back to this program instead).
 *
 * Each input is a program of operations for four made-up endpoints of
 * other hosts ("a", which dials us since its name sorts first; "z",
 * which we dial; one with our own name; one on our own host): BEACONs
 * and BYEs, SYNs, DATA carrying lahja frames (HELLO, SUBS, TYPE, EVENT,
 * RECEIPT) or raw bytes at the right stream offset or off it (gaps,
 * repeats), ACKs, NAKs, FINs and RSTs with true or made-up offsets, raw
 * messages, heartbeats, loop turns, and the endpoint's own broadcasts and
 * subscriptions.  At the end the endpoint stops and is freed.
 *
 * On top of the sanitizers it checks what the endpoint publishes: every
 * connection message is well-formed, and the bytes it sends on a
 * connection never skip ahead of what it sent before (a gap would be
 * data lost); it may only go back, to resend after a NAK.  And the
 * endpoint must stop within a bounded number of loop turns.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lahja/lahja.h>

#include "bus/endpoint.h"
#include "wire/wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                    \
    do {                                                                            \
        if (!(c)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);   \
            abort();                                                                \
        }                                                                           \
    } while (0)

#define HDR 32
#define OUR_UID 0x0123456789abcdefull
#define NPEERS 4
#define NSLOTS 4
#define STOP_TURNS 5000

enum { K_SYN = 1, K_DATA, K_ACK, K_NAK, K_FIN, K_RST, K_BEACON = 16, K_BYE };

static const char *const peer_names[NPEERS] = { "a", "z", "m", "b" };
static const char *const peer_hosts[NPEERS] = { "h1", "h2", "h3", "fz" };
static const char *const types[] = { "T", "U", "lahja.stats", "V*", "*" };
#define NTYPES (sizeof types / sizeof types[0])

/* One connection between a made-up endpoint and ours. */
struct slot {
    int used;
    uint32_t fake_id, our_id;
    uint64_t tx_off;     /* bytes the made-up end sent */
    uint64_t rx_end;     /* the furthest byte ours sent */
};

static uv_loop_t loop;
static lahja_rt_t *rt;
static struct slot slots[NPEERS][NSLOTS];
static uint8_t msg[HDR + 70000];

static uint64_t peer_uid(int p)
{
    return 0x1000u + (uint64_t)p;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* ------------------------------------------------------------- input */

struct in {
    const uint8_t *p;
    size_t left;
};

static uint8_t u8(struct in *in)
{
    if (in->left == 0)
        return 0;
    in->left--;
    return *in->p++;
}

static uint32_t u32(struct in *in)
{
    uint32_t v = u8(in);
    v |= (uint32_t)u8(in) << 8;
    v |= (uint32_t)u8(in) << 16;
    return v | (uint32_t)u8(in) << 24;
}

/* --------------------------------------------------- what ours sends */

static void sink(void *user, const char *subject, const uint8_t *m, size_t len)
{
    (void)user;
    if (strcmp(subject, "offline.presence") == 0) {
        CHECK(len > HDR && m[0] == 'L' && (m[2] == K_BEACON || m[2] == K_BYE));
        return;
    }
    unsigned long long uid;
    CHECK(sscanf(subject, "offline.to.%16llx", &uid) == 1);
    CHECK(len >= HDR && m[0] == 'L' && m[1] == 1);
    CHECK(get64(m + 16) == OUR_UID);
    int p = (int)(uid - 0x1000u);
    if (p < 0 || p >= NPEERS)
        return; /* an RST to a made-up uid of a raw message */
    uint8_t kind = m[2];
    uint32_t dst = get32(m + 4), src = get32(m + 8);
    uint64_t off = get64(m + 24);
    struct slot *s = NULL;
    for (int i = 0; i < NSLOTS; i++)
        if (slots[p][i].used && slots[p][i].our_id == src && src != 0)
            s = &slots[p][i];
    if (kind == K_SYN) {
        CHECK(dst == 0 && src != 0 && s == NULL);
        for (int i = 0; i < NSLOTS && s == NULL; i++)
            if (!slots[p][i].used) {
                s = &slots[p][i];
                memset(s, 0, sizeof *s);
                s->used = 1;
                s->our_id = src;
                s->fake_id = 100 + (uint32_t)i;
            }
        return;
    }
    if (s == NULL)
        return;
    CHECK(dst == 0 || dst == s->fake_id);
    if (kind == K_DATA && len > HDR) {
        size_t n = len - HDR;
        /* Never ahead of what it sent: that would be a gap.  (An empty
         * one asking for an ACK may be: it makes a receiver that missed
         * something ask for it.) */
        CHECK(off <= s->rx_end);
        if (off + n > s->rx_end)
            s->rx_end = off + n;
    }
}

/* ----------------------------------------------------- what they send */

static void header(uint8_t kind, uint8_t flags, uint32_t dst, uint32_t src, int p, uint64_t off)
{
    msg[0] = 'L';
    msg[1] = 1;
    msg[2] = kind;
    msg[3] = flags;
    put32(msg + 4, dst);
    put32(msg + 8, src);
    put32(msg + 12, 0);
    put64(msg + 16, peer_uid(p));
    put64(msg + 24, off);
}

static void presence(lahja_endpoint_t *ep, int p, uint8_t kind)
{
    memset(msg, 0, HDR);
    msg[0] = 'L';
    msg[1] = 1;
    msg[2] = kind;
    put32(msg + 4, 4242);
    put64(msg + 16, peer_uid(p));
    size_t n = strlen(peer_names[p]) + 1, h = strlen(peer_hosts[p]) + 1;
    memcpy(msg + HDR, peer_names[p], n);
    memcpy(msg + HDR + n, peer_hosts[p], h);
    lahja_nats_inject(ep, 1, msg, HDR + n + h);
}

static struct slot *slot_at(int p, uint8_t i)
{
    struct slot *s = &slots[p][i % NSLOTS];
    if (!s->used) {
        memset(s, 0, sizeof *s);
        s->used = 1;
        s->fake_id = 100 + i % NSLOTS;
    }
    return s;
}

/* A lahja frame (or raw bytes) into body; returns its size. */
static size_t frame(struct in *in, int p, uint8_t *body)
{
    switch (u8(in) % 6) {
    case 0:
        return lahja_wire_hello_encode(body, peer_names[p], strlen(peer_names[p]), u8(in),
                                       1u << 20);
    case 1: {
        const char *t[3];
        size_t l[3], n = u8(in) % 4;
        for (size_t i = 0; i < n && i < 3; i++) {
            t[i] = types[u8(in) % NTYPES];
            l[i] = strlen(t[i]);
        }
        return lahja_wire_subs_encode(body, 4096, u8(in), t, l, n > 3 ? 3 : n);
    }
    case 2: {
        const char *t = types[u8(in) % NTYPES];
        return lahja_wire_type_encode(body, u8(in) % 3 + 1, t, strlen(t));
    }
    case 3: {
        size_t len = u8(in);
        uint8_t flags = u8(in) & 0x3;
        size_t k = lahja_wire_event_prefix(body, u8(in) % 3 + 1, flags, u8(in), (uint32_t)len, len);
        if (k == 0)
            return 0;
        memset(body + k, 'x', len);
        return k + len;
    }
    case 4:
        return lahja_wire_receipt_encode(body, u32(in));
    default: {
        size_t len = u8(in);
        for (size_t i = 0; i < len; i++)
            body[i] = u8(in);
        return len;
    }
    }
}

static uint64_t offset(struct in *in, uint64_t truth)
{
    uint8_t how = u8(in);
    switch (how % 4) {
    case 0:
    case 1:
        return truth;
    case 2:
        return truth > how ? truth - how : 0;
    default:
        return truth + (how % 2 ? u8(in) : u32(in));
    }
}

static int ignore(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    (void)user;
    return 0;
}

static void run(lahja_endpoint_t *ep, struct in *in)
{
    lahja_subscription_t *subs[4] = { NULL };
    int nsubs = 0;
    while (in->left > 0) {
        uint8_t op = u8(in) % 13;
        int p = u8(in) % NPEERS;
        switch (op) {
        case 0:
            presence(ep, p, K_BEACON);
            break;
        case 1:
            presence(ep, p, K_BYE);
            break;
        case 2: {
            struct slot *s = slot_at(p, u8(in));
            header(K_SYN, 0, 0, s->fake_id, p, 0);
            put32(msg + HDR, 77);
            lahja_nats_inject(ep, 0, msg, HDR + 4);
            break;
        }
        case 3: {
            struct slot *s = slot_at(p, u8(in));
            size_t n = frame(in, p, msg + HDR);
            uint8_t flags = u8(in) & 1;
            uint64_t off = offset(in, s->tx_off);
            header(K_DATA, flags, s->our_id, s->fake_id, p, off);
            lahja_nats_inject(ep, 0, msg, HDR + n);
            if (off == s->tx_off)
                s->tx_off += n;
            break;
        }
        case 4:
        case 5:
        case 6: {
            struct slot *s = slot_at(p, u8(in));
            uint8_t kind = op == 4 ? K_ACK : op == 5 ? K_NAK : K_FIN;
            uint64_t off = offset(in, kind == K_FIN ? s->tx_off : s->rx_end);
            header(kind, 0, s->our_id, s->fake_id, p, off);
            lahja_nats_inject(ep, 0, msg, HDR);
            break;
        }
        case 7: {
            struct slot *s = slot_at(p, u8(in));
            header(K_RST, 0, s->our_id, s->fake_id, p, 0);
            lahja_nats_inject(ep, 0, msg, HDR);
            break;
        }
        case 8: {
            size_t len = u8(in);
            for (size_t i = 0; i < len; i++)
                msg[i] = u8(in);
            lahja_nats_inject(ep, p & 1, msg, len);
            break;
        }
        case 9:
            lahja_nats_tick(ep);
            break;
        case 10:
            for (int i = u8(in) % 4; i >= 0; i--)
                uv_run(&loop, UV_RUN_NOWAIT);
            break;
        case 11: {
            const char *t = types[u8(in) % 2];
            size_t len = (size_t)u8(in) * 64;
            static uint8_t payload[256 * 64];
            lahja_event_t *ev = NULL;
            const lahja_broadcast_config_t cfg = { .allow_no_subscribers = 1 };
            if (lahja_event_new(t, payload, len, &ev) == 0)
                lahja_broadcast_nowait(ep, ev, &cfg);
            lahja_event_unref(ev);
            break;
        }
        default:
            if (nsubs < 4)
                lahja_subscribe(ep, types[u8(in) % NTYPES], ignore, NULL, &subs[nsubs++]);
            break;
        }
    }
}

static void quiet(void *user, lahja_log_level_t level, const char *endpoint, const char *message)
{
    (void)user;
    if (getenv("LAHJA_FUZZ_LOG") != NULL)
        fprintf(stderr, "%d %s: %s\n", (int)level, endpoint, message);
}

static void on_stopped(lahja_endpoint_t *ep, int status, void *user)
{
    (void)ep;
    (void)status;
    *(int *)user = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(slots, 0, sizeof slots);
    lahja_endpoint_options_t o = { .linger_ms = 1, .log = quiet };
    lahja_endpoint_t *ep = NULL;
    CHECK(lahja_endpoint_new("m", &o, &ep) == 0);
    CHECK(lahja_endpoint_start(ep, NULL) == 0);
    CHECK(lahja_nats_join_offline(ep, "fz", OUR_UID, sink, NULL) == 0);
    struct in in = { data, size };
    run(ep, &in);
    int stopped = 0;
    CHECK(lahja_endpoint_stop_cb(ep, on_stopped, &stopped) == 0);
    for (int i = 0; i < STOP_TURNS && !stopped; i++)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(stopped);
    CHECK(lahja_endpoint_free(ep) == 0);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    CHECK(uv_loop_init(&loop) == 0);
    CHECK(lahja_rt_new(&loop, NULL, &rt) == 0);
    return 0;
}
