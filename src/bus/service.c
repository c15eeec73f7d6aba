/*
 * An endpoint as a service: its lifetime tied to a service's, so that a
 * service tree's cancellation closes its endpoints.
 */
#include <errno.h>
#include <string.h>

#include "endpoint.h"

static int run_endpoint(lahja_manager_t *m, void *user)
{
    (void)m;
    lahja_endpoint_t *ep = user;
    int rc = lahja_endpoint_start(ep, ep->service_serves ? &ep->service_serve : NULL);
    if (rc != 0)
        return lahja_service_fail(rc, "endpoint %s cannot start: %s", ep->name->s,
                                  lahja_strerror(rc));
    rc = lahja_sleep_until(LAHJA_FOREVER); /* until the service is cancelled */
    lahja_endpoint_stop(ep);                /* not cancellable */
    return rc;
}

void lahja_endpoint_service(lahja_service_t *svc, lahja_endpoint_t *ep,
                            const lahja_conn_config_t *serve)
{
    ep->service_serves = serve != NULL;
    if (serve != NULL)
        ep->service_serve = *serve;
    lahja_service_init(svc, ep->name->s, run_endpoint, ep);
}
