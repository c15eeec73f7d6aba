#!/bin/sh
# The hosts harness (hosts.sh), proven with real traffic: three hosts,
# each with its own nats-server, clustered by routes; nats_probe
# processes on them.
#   1. a subscriber on host 3 gets a publisher's messages from host 1,
#      through the route between their servers; each host has its own
#      hostname and LAHJA_HOST_ID, and a background on_host's pid is the
#      program's own;
#   2. server 2 killed: traffic from 1 to 3 still flows; server 2 back;
#   3. host 3 cut off: (netns) host 3 cannot reach host 1; restored: the
#      routes form again and traffic from 1 to 3 flows again.
# Then hosts_down leaves no namespace and no server behind.
# Usage: test_hosts.sh PATH-TO-nats_probe
set -eu
PROBE=$1
HERE=$(dirname "$0")
# shellcheck source=tests/nats/hosts.sh
. "$HERE/hosts.sh"

T=$(mktemp -d /tmp/lahja-hosts-test-XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
    hosts_down
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "FAIL: $*" >&2
    for f in "$T"/*.out "$T"/*.err; do [ -s "$f" ] && { echo "--- $f"; cat "$f"; } >&2; done
    [ -n "$HOSTS_DIR" ] && for f in "$HOSTS_DIR"/h*.log; do
        [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; } >&2
    done
    exit 1
}
# wait_for FILE TEXT: until FILE holds TEXT, polled, for at most 10 s.
wait_for() {
    i=0
    while ! grep -q -- "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -le 200 ] || fail "no '$2' in $1"
        sleep 0.05
    done
}

N=200
# traffic NAME FROM TO: a subscriber on host TO, connected to its own
# server, gets N messages published on host FROM to host FROM's server.
traffic() {
    from_url="" to_url=""
    eval "from_url=\$HOST_URL_$2 to_url=\$HOST_URL_$3"
    on_host "$3" "$PROBE" sub "$to_url" "t.$1" $N 5000 >"$T/$1.sub.out" 2>"$T/$1.sub.err" &
    sp=$!
    pids="$pids $sp"
    wait_for "$T/$1.sub.out" ready
    # The subscription reaches the publisher's server through the route
    # a moment after the subscriber's own server has it: publish until
    # the subscriber has its N, at most 20 rounds.
    i=0
    while kill -0 "$sp" 2>/dev/null && [ $i -lt 20 ]; do
        on_host "$2" "$PROBE" pub "$from_url" "t.$1" $N >"$T/$1.pub.out" 2>"$T/$1.pub.err" ||
            fail "$1: publishing on host $2"
        i=$((i + 1))
        sleep 0.1
    done
    wait "$sp" || fail "$1: host $3 did not get the messages of host $2"
    echo "ok: $1 (host $2 -> host $3: $(tail -n 1 "$T/$1.sub.out"))"
}

hosts_up 3
echo "hosts: $HOSTS_MODE, $HOSTS_URLS"
case $HOSTS_URLS in "$HOST_URL_1,$HOST_URL_2,$HOST_URL_3") ;; *) fail "HOSTS_URLS: $HOSTS_URLS" ;; esac

# 1. Identity, pids, traffic through the route.
# shellcheck disable=SC2016 # expanded on the host
id1=$(on_host 1 sh -c 'echo "$LAHJA_HOST_ID $(cat /proc/sys/kernel/hostname)"')
# shellcheck disable=SC2016
id3=$(on_host 3 sh -c 'echo "$LAHJA_HOST_ID $(cat /proc/sys/kernel/hostname)"')
[ "${id1%% *}" != "${id3%% *}" ] || fail "LAHJA_HOST_ID is the same on hosts 1 and 3: $id1"
if [ "$HOSTS_MODE" = netns ]; then
    [ "${id1#* }" != "${id3#* }" ] || fail "hostname is the same on hosts 1 and 3: $id1 / $id3"
    [ "${id1#* }" != "$(cat /proc/sys/kernel/hostname)" ] || fail "host 1 has this machine's hostname"
fi
echo "ok: identities: $id1 / $id3"
on_host 2 sleep 60 &
bp=$!
pids="$pids $bp"
i=0
until [ "$(cat "/proc/$bp/comm" 2>/dev/null)" = sleep ]; do
    i=$((i + 1))
    [ $i -le 100 ] || fail "on_host in the background: pid $bp is $(cat "/proc/$bp/comm" 2>/dev/null), not sleep"
    sleep 0.05
done
kill "$bp"
wait "$bp" 2>/dev/null || true
echo "ok: a background on_host's pid is the program's"

traffic route 1 3

# 2. Server 2 gone: 1 -> 3 does not depend on it.
server_kill 2
traffic without-2 1 3
server_start 2
echo "ok: server 2 back, routes formed again"

# 3. Host 3 cut off, then back.
host_cut 3
if [ "$HOSTS_MODE" = netns ]; then
    if PROBE_CONNECT_MS=500 on_host 3 "$PROBE" pub "$HOST_URL_1" t.cut 1 >"$T/cut.out" 2>"$T/cut.err"; then
        fail "host 3 reached host 1 while cut off"
    fi
    echo "ok: host 3 cut off ($(cat "$T/cut.err"))"
fi
host_restore 3
traffic restored 1 3

trap - EXIT
dir=$HOSTS_DIR
cleanup
if [ "$HOSTS_MODE" = netns ] && ip netns list | grep -q "^lh$$-"; then
    fail "namespaces left: $(ip netns list | grep "^lh$$-" | tr '\n' ' ')"
fi
if pgrep -f "$dir/h[0-9]\.conf" >/dev/null; then
    fail "servers left: $(pgrep -af "$dir/h[0-9]\.conf")"
fi
[ ! -e "$dir" ] || fail "run folder left: $dir"
echo "ok: nothing left after hosts_down"
echo "the hosts harness works ($HOSTS_MODE)"
