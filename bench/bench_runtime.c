/*
 * bench_runtime - what a context switch, a yield, a spawn and a wake cost
 * in lahja, next to glibc's swapcontext measured in the same process.
 *
 * Prints figures, never judges them by its exit status: it exits 0
 * unless it cannot set itself up.  Each figure is the median of 7 runs
 * of N operations, N calibrated so that one run lasts about 75 ms;
 * --quick shrinks the runs to a few milliseconds, for a smoke run that
 * only checks that everything works.
 *
 * swapcontext is the yardstick because it is what a portable coroutine
 * costs on the same machine and kernel: it saves the signal mask, one
 * system call per switch.  The targets are ratios to it, so they hold
 * from one machine to another better than absolute times would.
 *
 * Usage: bench_runtime [--quick]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include "lahja/runtime.h"
#include "runtime/ctx.h"

#ifdef LAHJA_CTX_UCONTEXT
#define CTX_KIND "ucontext"
#else
#define CTX_KIND "asm"
#endif

#define MAX_RUNS 7
#define CO_STACK_SIZE (64 * 1024)
/* Children per nursery: the runtime's default pool size, so that every
 * child after the first batch reuses a pooled task object and stack. */
#define NURSERY_BATCH 64
/* A stack size other than the runtime's default: such tasks bypass the
 * pool, so every spawn maps and unmaps a fresh stack. */
#define UNPOOLED_STACK_SIZE (128 * 1024)

/* Targets, as a fraction of one swapcontext switch. */
#define TARGET_SWITCH 0.10
#define TARGET_SPAWN_JOIN 0.50

struct config {
    int runs;
    double run_ns; /* wanted length of one run */
};

static struct config cfg = { MAX_RUNS, 75e6 };

/* One run: how long it took and how many operations it did. */
struct sample {
    uint64_t ns;
    uint64_t ops;
};

typedef int (*bench_fn)(uint64_t n, struct sample *s);

struct figure {
    const char *name;
    bench_fn fn;
    double med, min, max; /* ns per operation over the runs */
    uint64_t n;           /* operations asked of each run */
    uint64_t ops;         /* operations the last run did (both sides') */
};

enum {
    FIG_SWAPCONTEXT,
    FIG_CTX_SWITCH,
    FIG_YIELD,
    FIG_SPAWN_JOIN,
    FIG_SPAWN_UNPOOLED,
    FIG_NURSERY,
    FIG_COND,
    FIG_COUNT
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/*
 * Grows n until a run lasts long enough to scale from, then scales it to
 * the wanted length.  A first run warms up caches, the task pool and the
 * stacks' first pages; the scale comes from the faster of two runs of the
 * final size, so that one run slowed by another process does not shrink
 * every later run.
 */
static int calibrate(bench_fn fn, uint64_t *n)
{
    struct sample s, again;
    uint64_t k = 16;
    int rc = fn(k, &s); /* the warm-up */
    while (rc == 0) {
        rc = fn(k, &s);
        if (rc != 0 || (double)s.ns >= cfg.run_ns / 8 || k >= ((uint64_t)1 << 40))
            break;
        k *= (double)s.ns < cfg.run_ns / 256 ? 16 : 2;
    }
    if (rc == 0)
        rc = fn(k, &again);
    if (rc != 0)
        return rc;
    uint64_t ns = again.ns < s.ns ? again.ns : s.ns;
    double scaled = (double)k * cfg.run_ns / (double)(ns ? ns : 1);
    *n = scaled < 1 ? 1 : (uint64_t)scaled;
    return 0;
}

/* Fills in f's median, min and max ns per operation. */
static int measure(struct figure *f)
{
    int rc = calibrate(f->fn, &f->n);
    if (rc != 0)
        return rc;
    double v[MAX_RUNS];
    for (int i = 0; i < cfg.runs; i++) {
        struct sample s;
        rc = f->fn(f->n, &s);
        if (rc != 0)
            return rc;
        v[i] = (double)s.ns / (double)(s.ops ? s.ops : 1);
        f->ops = s.ops;
    }
    qsort(v, (size_t)cfg.runs, sizeof v[0], cmp_double);
    f->med = v[cfg.runs / 2];
    f->min = v[0];
    f->max = v[cfg.runs - 1];
    return 0;
}

static void *stack_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* ------------------------------------------------- glibc swapcontext */

static ucontext_t uc_main, uc_partner;

/* Bounces straight back, forever: each round trip is two switches. */
static void uc_partner_fn(void)
{
    for (;;)
        swapcontext(&uc_partner, &uc_main);
}

static int uc_setup(void)
{
    void *stack = stack_map(CO_STACK_SIZE);
    if (stack == NULL || getcontext(&uc_partner) != 0)
        return -1;
    uc_partner.uc_stack.ss_sp = stack;
    uc_partner.uc_stack.ss_size = CO_STACK_SIZE;
    uc_partner.uc_link = NULL;
    makecontext(&uc_partner, uc_partner_fn, 0);
    return 0;
}

static int bench_swapcontext(uint64_t n, struct sample *s)
{
    uint64_t trips = (n + 1) / 2;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < trips; i++)
        swapcontext(&uc_main, &uc_partner);
    s->ns = now_ns() - t0;
    s->ops = 2 * trips;
    return 0;
}

/* ------------------------------------------------ lahja_ctx_switch */

static lahja_ctx_t lc_main, lc_partner;

static void lc_partner_fn(void *arg)
{
    (void)arg;
    for (;;)
        lahja_ctx_switch(&lc_partner, &lc_main);
}

static int lc_setup(void)
{
    void *stack = stack_map(CO_STACK_SIZE);
    if (stack == NULL)
        return -1;
    lahja_ctx_make(&lc_partner, stack, CO_STACK_SIZE, lc_partner_fn, NULL);
    return 0;
}

static int bench_ctx_switch(uint64_t n, struct sample *s)
{
    uint64_t trips = (n + 1) / 2;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < trips; i++)
        lahja_ctx_switch(&lc_main, &lc_partner);
    s->ns = now_ns() - t0;
    s->ops = 2 * trips;
    return 0;
}

/* ------------------------------------------------------------ yield */

struct yielder {
    int stop;
    uint64_t count;
};

static int yield_partner(void *arg)
{
    struct yielder *y = arg;
    while (!y->stop) {
        int rc = lahja_yield();
        if (rc != 0)
            return rc;
        y->count++;
    }
    return 0;
}

/* Both tasks' yields count: with only these two tasks ready, each yield
 * hands the thread to the other one. */
static int bench_yield(uint64_t n, struct sample *s)
{
    struct yielder y = { 0, 0 };
    lahja_task_t *t;
    int rc = lahja_spawn(lahja_rt_current(), yield_partner, &y, NULL, &t);
    if (rc != 0)
        return rc;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n && rc == 0; i++)
        rc = lahja_yield();
    s->ns = now_ns() - t0;
    s->ops = n + y.count;
    y.stop = 1;
    int jrc = lahja_task_join(t, LAHJA_FOREVER, NULL);
    return rc != 0 ? rc : jrc;
}

/* ---------------------------------------------------- spawn and join */

static int trivial(void *arg)
{
    (void)arg;
    return 0;
}

static int spawn_join_loop(uint64_t n, const lahja_task_options_t *opts, struct sample *s)
{
    lahja_rt_t *rt = lahja_rt_current();
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        lahja_task_t *t;
        int result;
        int rc = lahja_spawn(rt, trivial, NULL, opts, &t);
        if (rc == 0)
            rc = lahja_task_join(t, LAHJA_FOREVER, &result);
        if (rc != 0)
            return rc;
    }
    s->ns = now_ns() - t0;
    s->ops = n;
    return 0;
}

static int bench_spawn_join(uint64_t n, struct sample *s)
{
    return spawn_join_loop(n, NULL, s);
}

static int bench_spawn_unpooled(uint64_t n, struct sample *s)
{
    lahja_task_options_t opts = { NULL, UNPOOLED_STACK_SIZE };
    return spawn_join_loop(n, &opts, s);
}

/* One nursery: open, NURSERY_BATCH children, close. */
static int nursery_batch(void)
{
    lahja_nursery_t *nu;
    int rc = lahja_nursery_open(&nu);
    if (rc != 0)
        return rc;
    for (int i = 0; i < NURSERY_BATCH && rc == 0; i++)
        rc = lahja_nursery_spawn(nu, trivial, NULL, NULL, NULL);
    int crc = lahja_nursery_close(nu); /* also after a failed spawn */
    return rc != 0 ? rc : crc;
}

static int bench_nursery(uint64_t n, struct sample *s)
{
    uint64_t batches = (n + NURSERY_BATCH - 1) / NURSERY_BATCH;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < batches; i++) {
        int rc = nursery_batch();
        if (rc != 0)
            return rc;
    }
    s->ns = now_ns() - t0;
    s->ops = batches * NURSERY_BATCH;
    return 0;
}

/* ------------------------------------------------------- cond wake */

/* Two conditions and a turn flag: the flag is the predicate, so that a
 * signal sent before the other side waits is not lost. */
struct pingpong {
    lahja_cond_t to_partner, to_main;
    int turn; /* 1: the partner's */
    int stop;
};

static int cond_partner(void *arg)
{
    struct pingpong *p = arg;
    for (;;) {
        while (p->turn != 1 && !p->stop) {
            int rc = lahja_cond_wait(&p->to_partner, LAHJA_FOREVER);
            if (rc != 0)
                return rc;
        }
        if (p->stop)
            return 0;
        p->turn = 0;
        lahja_cond_signal(&p->to_main);
    }
}

/* One operation is a round trip: main wakes the partner, which wakes
 * main back. */
static int bench_cond(uint64_t n, struct sample *s)
{
    struct pingpong p;
    lahja_cond_init(&p.to_partner);
    lahja_cond_init(&p.to_main);
    p.turn = 0;
    p.stop = 0;
    lahja_task_t *t;
    int rc = lahja_spawn(lahja_rt_current(), cond_partner, &p, NULL, &t);
    if (rc != 0)
        return rc;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        p.turn = 1;
        lahja_cond_signal(&p.to_partner);
        while (p.turn == 1 && rc == 0)
            rc = lahja_cond_wait(&p.to_main, LAHJA_FOREVER);
    }
    s->ns = now_ns() - t0;
    s->ops = n;
    p.stop = 1;
    lahja_cond_signal(&p.to_partner);
    int jrc = lahja_task_join(t, LAHJA_FOREVER, NULL);
    return rc != 0 ? rc : jrc;
}

/* ------------------------------------------------------------ report */

/* Only name and fn are set here; measure() fills in the rest. */
static struct figure figures[FIG_COUNT] = {
    [FIG_SWAPCONTEXT] = { .name = "glibc swapcontext, per switch", .fn = bench_swapcontext },
    [FIG_CTX_SWITCH] = { .name = "lahja_ctx_switch (" CTX_KIND "), per switch", .fn = bench_ctx_switch },
    [FIG_YIELD] = { .name = "yield, two tasks, per yield", .fn = bench_yield },
    [FIG_SPAWN_JOIN] = { .name = "spawn + join, per pair", .fn = bench_spawn_join },
    [FIG_SPAWN_UNPOOLED] = { .name = "spawn + join, unpooled stack, per pair", .fn = bench_spawn_unpooled },
    [FIG_NURSERY] = { .name = "nursery of 64, per task", .fn = bench_nursery },
    [FIG_COND] = { .name = "cond signal/wait, per round trip", .fn = bench_cond },
};

/* The main task: every benchmark that needs the runtime. */
static int task_benchmarks(void *arg)
{
    (void)arg;
    for (int i = FIG_YIELD; i < FIG_COUNT; i++) {
        int rc = measure(&figures[i]);
        if (rc != 0) {
            fprintf(stderr, "bench_runtime: %s: error %d\n", figures[i].name, rc);
            return rc;
        }
    }
    return 0;
}

static void print_figure(const struct figure *f)
{
    printf("  %-42s %9.1f %9.1f %9.1f %12llu\n", f->name, f->med, f->min, f->max,
           (unsigned long long)f->ops);
}

static void print_ratio(const char *name, double value, double target)
{
    printf("  %-42s %9.3f   <= %4.2f   %s\n", name, value, target,
           value <= target ? "PASS" : "MISS");
}

static void report(void)
{
    printf("  %-42s %9s %9s %9s %12s\n", "benchmark", "ns/op", "min", "max", "ops/run");
    for (int i = 0; i < FIG_COUNT; i++)
        print_figure(&figures[i]);
    double base = figures[FIG_SWAPCONTEXT].med;
    printf("\n  %-42s %9s   %s\n", "ratio", "value", "target");
    print_ratio("switch / swapcontext", figures[FIG_CTX_SWITCH].med / base, TARGET_SWITCH);
    print_ratio("spawn+join / swapcontext", figures[FIG_SPAWN_JOIN].med / base,
                TARGET_SPAWN_JOIN);
#ifdef LAHJA_CTX_UCONTEXT
    printf("\n  note: built with LAHJA_CONTEXT=ucontext, so lahja_ctx_switch is\n"
           "  swapcontext itself; the targets are for the assembly switch.\n");
#endif
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            cfg.runs = 3;
            cfg.run_ns = 2e6;
        } else {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            return 2;
        }
    }
    printf("lahja runtime benchmark: context switch %s, median of %d runs of ~%.0f ms%s\n\n",
           CTX_KIND, cfg.runs, cfg.run_ns / 1e6, cfg.runs < MAX_RUNS ? " (--quick)" : "");
    fflush(stdout);

    if (uc_setup() != 0 || lc_setup() != 0) {
        perror("bench_runtime: stack");
        return 1;
    }
    if (measure(&figures[FIG_SWAPCONTEXT]) != 0 || measure(&figures[FIG_CTX_SWITCH]) != 0)
        return 1;
    int rc = lahja_run(task_benchmarks, NULL, NULL);
    if (rc != 0) {
        fprintf(stderr, "bench_runtime: lahja_run: error %d\n", rc);
        return 1;
    }
    report();
    return 0;
}
