/*
 * bench_loop_floor: what an event loop costs large messages, without any
 * library.  Two processes move length-prefixed frames over a Unix socket
 * pair the way an event loop does: non-blocking writev and read, and
 * epoll_wait whenever the socket is full (writer) or empty (reader).  A
 * blocking writer sleeps inside the kernel instead; the difference
 * between the two is the price of not blocking, which lahja (on libuv)
 * pays too.  docs/performance.md uses it for the 1 MiB scenario.
 *
 *   bench_loop_floor <n> <size> same|split
 *       n frames of `size` bytes; both processes on CPU 0 (same), or the
 *       reader on CPU 1 (split).  Prints MB/s (1e6 bytes) at the reader.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
}

/* An epoll set watching fd for `events`; exits on failure. */
static int watch(int fd, uint32_t events)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = { .events = events };
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0) {
        perror("epoll");
        exit(1);
    }
    return ep;
}

/* Sleeps until the watched fd is ready. */
static void wait_ready(int ep)
{
    struct epoll_event e;
    while (epoll_wait(ep, &e, 1, -1) < 0 && errno == EINTR)
        ;
}

static int reader(int fd, uint64_t n, size_t size)
{
    size_t frame = 4 + size, cap = frame + 65536, have = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL)
        return 1;
    int ep = watch(fd, EPOLLIN);
    uint64_t total = n * frame, got = 0, t0 = 0;
    while (got < total) {
        ssize_t r = read(fd, buf + have, cap - have);
        if (r < 0 && errno == EAGAIN) {
            wait_ready(ep);
            continue;
        }
        if (r <= 0)
            return 1;
        if (t0 == 0)
            t0 = now_ns();
        got += (uint64_t)r;
        have += (size_t)r;
        while (have >= frame) { /* whole frames: keep the partial one */
            memmove(buf, buf + frame, have - frame);
            have -= frame;
        }
    }
    printf("LOOPFLOOR n=%llu size=%zu mbps=%.1f\n", (unsigned long long)n, size,
           (double)total / ((double)(now_ns() - t0) / 1e3));
    return 0;
}

static int writer(int fd, uint64_t n, size_t size)
{
    uint8_t *buf = malloc(size);
    if (buf == NULL)
        return 1;
    memset(buf, 0x5a, size);
    int ep = watch(fd, EPOLLOUT);
    uint32_t len = (uint32_t)size;
    for (uint64_t i = 0; i < n; i++) {
        size_t off = 0, frame = 4 + size;
        while (off < frame) {
            struct iovec iov[2];
            int k = 0;
            if (off < 4) {
                iov[k++] = (struct iovec){ (uint8_t *)&len + off, 4 - off };
                iov[k++] = (struct iovec){ buf, size };
            } else {
                iov[k++] = (struct iovec){ buf + off - 4, frame - off };
            }
            ssize_t w = writev(fd, iov, k);
            if (w < 0 && errno == EAGAIN) {
                wait_ready(ep);
                continue;
            }
            if (w < 0)
                return 1;
            off += (size_t)w;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[3], "same") != 0 && strcmp(argv[3], "split") != 0)) {
        fprintf(stderr, "usage: bench_loop_floor <n> <size> same|split\n");
        return 2;
    }
    uint64_t n = strtoull(argv[1], NULL, 10);
    size_t size = strtoul(argv[2], NULL, 10);
    int sv[2];
    if (n == 0 || size == 0 || size > UINT32_MAX ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t pid = fork();
    if (pid == 0) {
        pin(strcmp(argv[3], "split") == 0 ? 1 : 0);
        close(sv[0]);
        _exit(reader(sv[1], n, size));
    }
    pin(0);
    close(sv[1]);
    int rc = writer(sv[0], n, size);
    int st;
    waitpid(pid, &st, 0);
    return rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
