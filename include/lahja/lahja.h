/**
 * @file lahja/lahja.h
 * The whole public API of lahja.
 */
#ifndef LAHJA_LAHJA_H
#define LAHJA_LAHJA_H

#include "lahja/version.h"
#include "lahja/error.h"
#include "lahja/runtime.h"
#include "lahja/service.h"
#include "lahja/bus.h"

#endif /* LAHJA_LAHJA_H */
