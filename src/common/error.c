#define _GNU_SOURCE
#include <string.h>

#include "lahja/error.h"

static const struct {
    const char *name;
    const char *message;
} own[] = {
    [-(LAHJA_ENOSUBSCRIBERS - LAHJA_EBASE)] = { "LAHJA_ENOSUBSCRIBERS",
                                                "No endpoint subscribes to this event type" },
    [-(LAHJA_EUNEXPECTEDRESPONSE - LAHJA_EBASE)] = { "LAHJA_EUNEXPECTEDRESPONSE",
                                                     "Response is not of the expected type" },
    [-(LAHJA_EBIND - LAHJA_EBASE)] = { "LAHJA_EBIND", "Event was already broadcast" },
    [-(LAHJA_ECONNREJECTED - LAHJA_EBASE)] = { "LAHJA_ECONNREJECTED",
                                               "Connection attempt rejected" },
    [-(LAHJA_ELIFECYCLE - LAHJA_EBASE)] = { "LAHJA_ELIFECYCLE",
                                            "Object used in the wrong lifecycle state" },
    [-(LAHJA_EREMOTEDISCONNECTED - LAHJA_EBASE)] = { "LAHJA_EREMOTEDISCONNECTED",
                                                     "Remote endpoint disconnected" },
    [-(LAHJA_EDAEMONEXIT - LAHJA_EBASE)] = { "LAHJA_EDAEMONEXIT", "Daemon task exited" },
    [-(LAHJA_ETOOMANYCHILDREN - LAHJA_EBASE)] = { "LAHJA_ETOOMANYCHILDREN",
                                                  "Too many child tasks" },
    [-(LAHJA_EWRONGTHREAD - LAHJA_EBASE)] = { "LAHJA_EWRONGTHREAD",
                                              "Called from a thread that does not own the object" },
    [-(LAHJA_EDEADLOCK - LAHJA_EBASE)] = { "LAHJA_EDEADLOCK",
                                           "Every task is blocked and nothing can wake one" },
    [-(LAHJA_ENOTASK - LAHJA_EBASE)] = { "LAHJA_ENOTASK",
                                         "Must be called from a task (lahja_spawn, lahja_run); "
                                         "the bus's calls also have lahja_*_cb forms" },
    [-(LAHJA_ENORUNTIME - LAHJA_EBASE)] = { "LAHJA_ENORUNTIME",
                                            "No lahja runtime on this thread "
                                            "(create one with lahja_rt_new or lahja_run)" },
};

static int own_index(int err)
{
    if (err <= LAHJA_EBASE - 1 && err > LAHJA_ELAST)
        return -(err - LAHJA_EBASE);
    return -1;
}

const char *lahja_strerror(int err)
{
    int i = own_index(err);
    if (i >= 0)
        return own[i].message;
    if (err < 0 && err > -4096) {
        const char *s = strerrordesc_np(-err);
        if (s != NULL)
            return s;
    }
    if (err == 0)
        return "Success";
    return "Unknown error";
}

const char *lahja_err_name(int err)
{
    int i = own_index(err);
    if (i >= 0)
        return own[i].name;
    if (err < 0 && err > -4096) {
        const char *s = strerrorname_np(-err);
        if (s != NULL)
            return s;
    }
    if (err == 0)
        return "OK";
    return "UNKNOWN";
}
