#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <lahja/lahja.h>
static int child(void *a) { (*(int *)a)++; return lahja_sleep(1); }
static int main_task(void *a) {
    (void)a; int x = 0; lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    for (int i = 0; i < 100; i++) lahja_nursery_spawn(n, child, &x, NULL, NULL);
    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(x, 100);
    return 7;
}
static void test_run(void **s) { (void)s; assert_int_equal(lahja_run(main_task, NULL, NULL), 7); }
int main(void) { const struct CMUnitTest t[] = { cmocka_unit_test(test_run) }; return cmocka_run_group_tests(t, NULL, NULL); }
