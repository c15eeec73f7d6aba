#!/bin/sh
# Makes sure the Debian packages lahja builds and tests with are installed.
# As root it installs what is missing, printing one line (apt's output
# goes to a log, shown only on failure); otherwise it prints the exact
# apt-get line and fails.  Usage: scripts/deps.sh [build|test|ci]
set -eu

need="build-essential cmake pkg-config libuv1-dev liblz4-dev libnats-dev python3-dev"
case "${1:-build}" in
    build) ;;
    test) need="$need nats-server libcmocka-dev python3-pytest python3-pytest-asyncio python3-trio" ;;
    ci) need="$need nats-server libcmocka-dev python3-pytest python3-pytest-asyncio python3-trio valgrind clang doxygen" ;;
    *) echo "usage: $0 [build|test|ci]" >&2; exit 2 ;;
esac

missing=""
for p in $need; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    # apt's few hundred lines go to a log, shown only if it fails, so
    # that what the caller prints next is not lost among them.
    echo "installing Debian packages:$missing" >&2
    log=$(mktemp "${TMPDIR:-/tmp}/lahja-deps.XXXXXX")
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! { apt-get update && apt-get install -y --no-install-recommends $missing; } \
            </dev/null >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "installing Debian packages failed; apt's whole output: $log" >&2
        exit 1
    fi
    rm -f "$log"
else
    echo "missing Debian packages:$missing" >&2
    echo "run: sudo apt-get install -y$missing" >&2
    exit 1
fi
