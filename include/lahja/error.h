/**
 * @file lahja/error.h
 * Error codes and their messages.
 *
 * Every lahja function that can fail returns 0 (or a non-negative value
 * where documented) on success and a negative code on failure.  System
 * errors are negative errno values (-ENOMEM, -EINVAL, -ECANCELED, ...),
 * exactly as libuv reports them on Unix; lahja's own conditions use the
 * LAHJA_E* codes below, which never collide with errno values.
 *
 * The conditions every suspending call can report:
 *  - -ECANCELED   an enclosing cancel scope was cancelled;
 *  - -ETIMEDOUT   the call's deadline, or an enclosing scope's, has passed;
 *  - -EINVAL      an argument was invalid;
 *  - -EAGAIN      the operation would have to wait and was asked not to;
 *  - LAHJA_ENOTASK  it was not called from a task.
 */
#ifndef LAHJA_ERROR_H
#define LAHJA_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/** lahja's own codes, which never collide with errno values. */
enum lahja_error {
    /** Not a code: lahja's codes lie between LAHJA_EBASE and LAHJA_ELAST. */
    LAHJA_EBASE = -4000,
    /** An event type nobody (this endpoint included) subscribes to. */
    LAHJA_ENOSUBSCRIBERS = -4001,
    /** A response arrived whose type is not the one the request expects. */
    LAHJA_EUNEXPECTEDRESPONSE = -4002,
    /** An event was already broadcast and cannot be broadcast again as-is. */
    LAHJA_EBIND = -4003,
    /** A connection was refused: to self, twice, or already connected. */
    LAHJA_ECONNREJECTED = -4004,
    /** An object was used in the wrong state (started twice, stopped, ...). */
    LAHJA_ELIFECYCLE = -4005,
    /** The peer a call depended on went away. */
    LAHJA_EREMOTEDISCONNECTED = -4006,
    /** A daemon task or daemon child service returned. */
    LAHJA_EDAEMONEXIT = -4007,
    /** A task already holds the maximum number of children. */
    LAHJA_ETOOMANYCHILDREN = -4008,
    /** A call came from a thread other than the one owning the object. */
    LAHJA_EWRONGTHREAD = -4009,
    /** Every task is waiting and nothing (no handle, no timer) can wake any. */
    LAHJA_EDEADLOCK = -4010,
    /** A call that only a task may make (it suspends, or works on the
     * calling task's scopes) came from outside any task: from main(), a
     * plain libuv callback or another thread. */
    LAHJA_ENOTASK = -4011,
    /** The calling thread has no lahja runtime (lahja_rt_new, lahja_run)
     * for an object that must belong to one. */
    LAHJA_ENORUNTIME = -4012,
    /** Not a code: one past the last of lahja's codes. */
    LAHJA_ELAST = -4013
};

/**
 * A human-readable message for any code returned by lahja (its own codes
 * and negative errno values).  Returns a static string; never NULL; an
 * unknown code yields "Unknown error".  Thread-safe.
 */
const char *lahja_strerror(int err);

/**
 * The symbolic name of a code: "LAHJA_ENOSUBSCRIBERS", "ECANCELED", ...
 * Returns a static string; never NULL ("UNKNOWN" for unknown codes).
 * Thread-safe.
 */
const char *lahja_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* LAHJA_ERROR_H */
