/*
 * A gate: counts tasks arriving at a point, and lets another task wait
 * until `want` of them have.  Tests order tasks with it instead of
 * sleeping: a task arrives just before it blocks, and the waiter runs
 * only once that task has suspended, since tasks never run at the same
 * time.  Include after <cmocka.h> and <lahja/lahja.h>; GATE_GUARD_MS
 * bounds the wait (a test that hangs fails instead).
 */
#ifndef LAHJA_TEST_GATE_H
#define LAHJA_TEST_GATE_H

#ifndef GATE_GUARD_MS
#define GATE_GUARD_MS 10000
#endif

struct gate {
    lahja_latch_t all_in;
    int in;
    int want;
};

static inline void gate_init(struct gate *g, int want)
{
    lahja_latch_init(&g->all_in);
    g->in = 0;
    g->want = want;
}

static inline void gate_arrive(struct gate *g)
{
    if (++g->in == g->want)
        assert_int_equal(lahja_latch_set(&g->all_in), 0);
}

static inline void gate_wait(struct gate *g)
{
    assert_int_equal(lahja_latch_wait(&g->all_in, lahja_deadline_in(GATE_GUARD_MS)), 0);
}

#endif /* LAHJA_TEST_GATE_H */
