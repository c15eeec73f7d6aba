/*
 * Connection configs: where an endpoint listens (B1).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "endpoint.h"

int lahja_default_base_dir(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (xdg != NULL && xdg[0] == '/')
        n = snprintf(buf, len, "%s/lahja", xdg);
    else
        n = snprintf(buf, len, "/tmp/lahja-%u", (unsigned)geteuid());
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int set_name(lahja_conn_config_t *cfg, const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;
    if (!lahja_wire_name_valid(name, len))
        return -EINVAL;
    memcpy(cfg->name, name, len + 1);
    return 0;
}

int lahja_conn_config_from_name(lahja_conn_config_t *cfg, const char *name, const char *base_dir)
{
    if (cfg == NULL)
        return -EINVAL;
    lahja_conn_config_t c;
    int rc = set_name(&c, name);
    if (rc != 0)
        return rc;
    char base[LAHJA_PATH_MAX + 1];
    if (base_dir == NULL) {
        rc = lahja_default_base_dir(base, sizeof base);
        if (rc != 0)
            return rc;
        base_dir = base;
    }
    int n = snprintf(c.path, sizeof c.path, "%s/%s.ipc", base_dir, name);
    if (n < 0 || (size_t)n >= sizeof c.path)
        return -ENAMETOOLONG;
    *cfg = c;
    return 0;
}

int lahja_conn_config_from_path(lahja_conn_config_t *cfg, const char *name, const char *path)
{
    if (cfg == NULL || path == NULL || path[0] == '\0')
        return -EINVAL;
    lahja_conn_config_t c;
    int rc = set_name(&c, name);
    if (rc != 0)
        return rc;
    size_t len = strlen(path);
    if (len >= sizeof c.path)
        return -ENAMETOOLONG;
    memcpy(c.path, path, len + 1);
    *cfg = c;
    return 0;
}
