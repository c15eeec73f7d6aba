#!/bin/sh
# Makes sure the Debian packages lahja builds and tests with are installed.
# As root it installs what is missing; otherwise it prints the exact
# apt-get line and fails.  Usage: scripts/deps.sh [build|test|ci]
set -eu

need="build-essential cmake pkg-config libuv1-dev liblz4-dev"
case "${1:-build}" in
    build) ;;
    test) need="$need libcmocka-dev" ;;
    ci) need="$need libcmocka-dev valgrind clang doxygen" ;;
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
    echo "installing:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >&2
else
    echo "missing Debian packages:$missing" >&2
    echo "run: sudo apt-get install -y$missing" >&2
    exit 1
fi
