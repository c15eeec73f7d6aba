#!/bin/sh
# Builds lahja and runs its demo.  Usage: scripts/demo.sh
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build -DBUILD_TESTING=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec build/examples/runtime_demo
