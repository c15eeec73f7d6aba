/*
 * The library's own version, for programs that run with another shared
 * library than the one they were compiled against.
 */
#include "lahja/version.h"

unsigned lahja_version(void)
{
    return LAHJA_VERSION;
}

const char *lahja_version_string(void)
{
    return LAHJA_VERSION_STRING;
}
