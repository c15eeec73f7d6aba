/* ticker: the complete example of docs/runtime.md. */
#include <errno.h>
#include <stdio.h>
#include <lahja/lahja.h>

static int ticker(void *arg)
{
    lahja_latch_t *stop = arg;
    for (int i = 1;; i++) {
        int rc = lahja_latch_wait(stop, lahja_deadline_in(100));
        if (rc == 0)
            return 0;                 /* asked to stop */
        if (rc != -ETIMEDOUT)
            return rc;                /* cancelled: pass it on */
        printf("tick %d\n", i);
    }
}

static int slow(void *arg)
{
    (void)arg;
    return lahja_sleep(10 * 1000);    /* cancelled long before */
}

static int main_task(void *arg)
{
    (void)arg;
    lahja_latch_t stop;
    lahja_latch_init(&stop);

    lahja_nursery_t *n;
    lahja_nursery_open(&n);
    lahja_nursery_spawn(n, ticker, &stop, &(lahja_task_options_t){ .name = "ticker" }, NULL);

    lahja_scope_t *s;                 /* give `slow` 350 ms */
    lahja_scope_open(lahja_deadline_in(350), 0, &s);
    lahja_nursery_t *inner;
    lahja_nursery_open(&inner);
    lahja_nursery_spawn(inner, slow, NULL, NULL, NULL);
    lahja_nursery_close(inner);
    printf("slow: %s\n", lahja_scope_close(s) == -ETIMEDOUT ? "timed out" : "done");

    lahja_latch_set(&stop);
    return lahja_nursery_close(n);    /* ticker returns 0 */
}

int main(void)
{
    int rc = lahja_run(main_task, NULL, NULL);
    printf("%s\n", lahja_strerror(rc));
    return rc != 0;
}
