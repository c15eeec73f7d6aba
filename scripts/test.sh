#!/bin/sh
# Builds lahja and runs every test.  Usage: scripts/test.sh [build-dir [cmake options...]]
# With no arguments: build/ with the default configuration, warnings as errors.
# LAHJA_CTEST_ARGS adds arguments to ctest (e.g. "-LE chaos" to leave out
# the chaos test, as the valgrind run of .ci/run does).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh test
dir=${1:-build}
[ $# -gt 0 ] && shift
cmake -S . -B "$dir" -DBUILD_TESTING=ON -DLAHJA_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
# shellcheck disable=SC2086
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)" ${LAHJA_CTEST_ARGS:-}
