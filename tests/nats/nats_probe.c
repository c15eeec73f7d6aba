/*
 * nats_probe - raw NATS traffic for tests/nats/test_hosts.sh, which
 * checks the hosts harness (hosts.sh) with it.  The nats.c client only.
 *
 *   nats_probe sub URL SUBJECT COUNT TIMEOUT_MS
 *       Subscribes, prints "ready" once the server has the subscription,
 *       then waits up to TIMEOUT_MS in all for COUNT messages; prints
 *       "received N" and exits 0 iff N == COUNT.
 *   nats_probe pub URL SUBJECT COUNT
 *       Publishes COUNT messages ("msg <i>"), flushes, prints
 *       "published N"; exits 0 iff all were published and flushed.
 *
 * URL may list several servers, comma-separated.  Connecting fails after
 * PROBE_CONNECT_MS (default 2000) milliseconds.  Errors go to stderr,
 * prefixed "nats_probe:".
 */
#define _GNU_SOURCE
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(const char *what, const char *url, natsStatus s)
{
    fprintf(stderr, "nats_probe: %s (%s): %s", what, url, natsStatus_GetText(s));
    const char *last = nats_GetLastError(NULL);
    if (last != NULL && *last)
        fprintf(stderr, " [%s]", last);
    fprintf(stderr, "\n");
    return 1;
}

static long number(const char *arg, const char *what)
{
    char *end = NULL;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end != '\0' || v < 0) {
        fprintf(stderr, "nats_probe: %s: not a number: %s\n", what, arg);
        exit(2);
    }
    return v;
}

static int usage(void)
{
    fprintf(stderr, "usage: nats_probe sub URL SUBJECT COUNT TIMEOUT_MS\n"
                    "       nats_probe pub URL SUBJECT COUNT\n");
    return 2;
}

static natsStatus connect(natsConnection **nc, const char *url)
{
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = natsOptions_SetServers(o, (const char *[]){url}, 1);
    if (s == NATS_OK) {
        const char *t = getenv("PROBE_CONNECT_MS");
        s = natsOptions_SetTimeout(o, t != NULL && *t ? atoi(t) : 2000);
    }
    if (s == NATS_OK)
        s = natsConnection_Connect(nc, o);
    natsOptions_Destroy(o);
    return s;
}

static int sub(const char *url, const char *subject, long count, long timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    natsConnection *nc = NULL;
    natsSubscription *sb = NULL;
    natsStatus s = connect(&nc, url);
    if (s != NATS_OK)
        return fail("connect", url, s);
    s = natsConnection_SubscribeSync(&sb, nc, subject);
    if (s == NATS_OK)
        s = natsConnection_Flush(nc);
    if (s != NATS_OK) {
        fail("subscribe", url, s);
        natsConnection_Destroy(nc);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    long got = 0;
    while (got < count) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, sb, left);
        if (s == NATS_TIMEOUT)
            break;
        if (s != NATS_OK) {
            fail("receive", url, s);
            break;
        }
        got++;
        natsMsg_Destroy(m);
    }
    printf("received %ld\n", got);
    if (got < count)
        fprintf(stderr, "nats_probe: %s: %ld of %ld messages within %ld ms\n", subject, got, count,
                timeout_ms);
    natsSubscription_Destroy(sb);
    natsConnection_Destroy(nc);
    return got == count ? 0 : 1;
}

static int pub(const char *url, const char *subject, long count)
{
    natsConnection *nc = NULL;
    natsStatus s = connect(&nc, url);
    if (s != NATS_OK)
        return fail("connect", url, s);
    long sent = 0;
    char buf[64];
    for (; sent < count; sent++) {
        int n = snprintf(buf, sizeof buf, "msg %ld", sent);
        s = natsConnection_Publish(nc, subject, buf, n);
        if (s != NATS_OK) {
            fail("publish", url, s);
            break;
        }
    }
    if (s == NATS_OK) {
        s = natsConnection_Flush(nc);
        if (s != NATS_OK)
            fail("flush", url, s);
    }
    printf("published %ld\n", s == NATS_OK ? sent : 0);
    natsConnection_Destroy(nc);
    return s == NATS_OK && sent == count ? 0 : 1;
}

int main(int argc, char **argv)
{
    int rc;
    if (argc == 6 && strcmp(argv[1], "sub") == 0)
        rc = sub(argv[2], argv[3], number(argv[4], "COUNT"), number(argv[5], "TIMEOUT_MS"));
    else if (argc == 5 && strcmp(argv[1], "pub") == 0)
        rc = pub(argv[2], argv[3], number(argv[4], "COUNT"));
    else
        return usage();
    nats_Close();
    return rc;
}
