/* Runs a task on lahja's runtime and checks the version it runs with. */
#include <stdio.h>

#include <lahja/lahja.h>

static int main_task(void *arg)
{
    (void)arg;
    return lahja_sleep(1);
}

int main(void)
{
    int rc = lahja_run(main_task, NULL, NULL);
    printf("lahja %s: %s\n", lahja_version_string(), lahja_strerror(rc));
    return rc == 0 && lahja_version() == LAHJA_VERSION ? 0 : 1;
}
