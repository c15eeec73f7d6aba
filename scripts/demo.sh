#!/bin/sh
# Builds lahja and runs its demo: two processes chatting over the bus,
# then requests and responses between two processes.
# Usage: scripts/demo.sh
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh build
# The build's output goes to a log, shown only if it fails, so that the
# demo's own lines are what the terminal shows.
mkdir -p build
log=build/demo-build.log
echo "building lahja in build/"
if ! { cmake -S . -B build -DBUILD_TESTING=OFF && cmake --build build -j"$(nproc)"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "the build failed; its whole output: $log" >&2
    exit 1
fi
echo
echo '$ build/examples/inter_process_ping_pong --interval-ms 200'
build/examples/inter_process_ping_pong --interval-ms 200
echo
echo '$ build/examples/request_api'
exec build/examples/request_api
