#!/bin/sh
# Runs lahja's own test suite (a checkout of ethereum/lahja, unchanged)
# against this package, from a build tree's Python directory.
#   bindings/python/run-lahja-tests.sh LAHJA_CHECKOUT [BUILD_DIR [PYTEST_ARGS...]]
# Its tests run in one pytest session (the package's pytest_trio plugin
# loads itself through its entry point, and hands the asyncio tests'
# plain async fixtures to pytest-asyncio's default strict mode).  Its
# examples test starts `python` from PATH: a directory where `python` is
# this Python goes first on PATH; the example processes it leaves
# running are ended with it.  Python runs with -P, so that the
# checkout's own lahja/ directory is not imported instead of this one.
set -eu
src=$(cd "$1" && pwd)
build=$(cd "$(dirname "$0")/../.." && pwd)/${2:-build}
[ $# -ge 2 ] && shift 2 || shift $#
py=${PYTHON:-/usr/bin/python3}
[ -d "$build/python/lahja" ] || { echo "no $build/python/lahja: build first" >&2; exit 2; }
bin=$(mktemp -d)
ln -s "$py" "$bin/python"
cd "$src"
# In a session of its own: the examples test leaves its example's
# processes running, and they go with the session.
PATH="$bin:$PATH" PYTHONPATH="$build/python" PYTHONDONTWRITEBYTECODE=1 \
    setsid "$py" -P -m pytest -p no:cacheprovider "$@" tests &
pid=$!
rc=0
wait $pid || rc=$?
/bin/kill -TERM -- "-$pid" 2>/dev/null || true
rm -rf "$bin"
exit $rc
