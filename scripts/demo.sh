#!/bin/sh
# Builds lahja and runs its demo: two processes chatting over the bus,
# then requests and responses between two processes.
# Usage: scripts/demo.sh
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build -DBUILD_TESTING=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo '$ build/examples/inter_process_ping_pong --interval-ms 200'
build/examples/inter_process_ping_pong --interval-ms 200
echo
echo '$ build/examples/request_api'
exec build/examples/request_api
