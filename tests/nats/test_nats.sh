#!/bin/sh
# Endpoints on three hosts, through a NATS cluster: each host a network
# namespace of its own (made here, see hosts.sh), with its own address on
# a private link and its own nats-server, the servers clustered by
# routes.  Every endpoint is a real process (nats_node) on its host.
#   1. broadcast and requests across hosts, subscription awareness
#      (wait_until_all_endpoints_subscribed_to), NoSubscribers for a type
#      nobody subscribes to anywhere, filter_endpoint to a remote one;
#   2. a remote endpoint killed: the request pending on it fails
#      promptly (RemoteDisconnected, within dead_after_ms and a margin);
#   3. the sender's own server killed mid-stream: it fails over to
#      another, and every event arrives, in order, none lost;
#   4. the receiver's host cut off mid-stream: the connection ends, every
#      event sent is confirmed or counted lost (none silent), and once
#      the host is back the endpoints reconnect and a request goes
#      through.
# Usage: test_nats.sh PATH-TO-nats_node [WRAPPER...]
#   WRAPPER: a command that runs every endpoint (e.g. valgrind ...).
set -eu
NODE=$1
shift
WRAP="$*"
HERE=$(dirname "$0")
. "$HERE/hosts.sh"

# Heartbeats and the silence that means death: short, so that the test
# is quick; longer under a wrapper, which slows every process down.
if [ -n "$WRAP" ]; then
    LAHJA_NATS_HEARTBEAT_MS=500 LAHJA_NATS_DEAD_MS=6000
else
    LAHJA_NATS_HEARTBEAT_MS=200 LAHJA_NATS_DEAD_MS=1500
fi
export LAHJA_NATS_HEARTBEAT_MS LAHJA_NATS_DEAD_MS
LAHJA_NATS_PREFIX=t$$
export LAHJA_NATS_PREFIX

T=$(mktemp -d /tmp/lahja-nats-test-XXXXXX)
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
    exit 1
}
# wait_for FILE TEXT [SECONDS]: until FILE holds TEXT, polled.
wait_for() {
    i=0
    limit=$(( ${3:-30} * 20 ))
    while ! grep -q -- "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -le $limit ] || fail "no '$2' in $1"
        sleep 0.05
    done
}
# node HOST NAME ROLE ARGS... : a nats_node on host HOST, in the
# background, output in $T/NAME.out and .err; its pid in $last.
node() {
    h=$1
    n=$2
    shift 2
    eval "url=\$HOST_URL_$h"
    on_host "$h" $WRAP "$NODE" "$url" "$n" "$@" >"$T/$n.out" 2>"$T/$n.err" &
    last=$!
    pids="$pids $last"
}
# finish PID NAME: waits for it; it must have passed every check.
finish() {
    wait "$1" || fail "$2 failed (exit $?)"
    if grep -q '^FAIL' "$T/$2.out"; then
        fail "$2: $(grep '^FAIL' "$T/$2.out")"
    fi
    sed "s/^/$2: /" "$T/$2.out"
}

hosts_up 3
echo "hosts: $HOSTS_MODE"

node 2 bee serve
bee=$last
node 3 cee serve
cee=$last
wait_for "$T/bee.out" ready
wait_for "$T/cee.out" ready

# 1. Across hosts: broadcast, requests, awareness, NoSubscribers,
# filter_endpoint.
node 1 aye basic bee cee
finish "$last" aye

# 2. A remote endpoint killed with a request pending on it.
node 1 ayf hang bee
ayf=$last
wait_for "$T/ayf.out" waiting
kill -9 "$bee"
finish "$ayf" ayf
ms=$(sed -n 's/^failed after \([0-9]*\) ms/\1/p' "$T/ayf.out")
[ "$ms" -le $((LAHJA_NATS_DEAD_MS + 2000)) ] ||
    fail "the pending request failed after $ms ms (dead_after_ms $LAHJA_NATS_DEAD_MS)"

# 3. The sender's own server killed mid-stream: it moves to another.
# (60000 events, 20 a millisecond at most: it lasts 3 s or more.)
eval "urls=\"\$HOST_URL_1,\$HOST_URL_2\""
on_host 1 $WRAP "$NODE" "$urls" ayg stream cee 60000 20 >"$T/ayg.out" 2>"$T/ayg.err" &
ayg=$!
pids="$pids $ayg"
wait_for "$T/ayg.out" streaming
# The server it is connected to (nats.c picks one of the two at random).
joined=$(sed -n 's/.*nats: joined \(nats:[^ ]*\) .*/\1/p' "$T/ayg.err")
if [ "$joined" = "$HOST_URL_1" ]; then victim=1; else victim=2; fi
server_kill $victim
finish "$ayg" ayg
grep -q "reconnected" "$T/ayg.err" || fail "ayg: no failover was logged"
echo "failover: $(grep -c "sending them again" "$T/ayg.err") resend(s) of what the killed server lost"
server_start $victim

# 4. The receiver's host cut off mid-stream, then back.
node 1 ayh cut cee
ayh=$last
wait_for "$T/ayh.out" streaming
host_cut 3
# Without namespaces the host's processes share the others' network:
# its endpoint would fail over to another server.  Frozen, it is as cut.
[ "$HOSTS_MODE" = netns ] || kill -STOP "$cee"
wait_for "$T/ayh.out" "connection ended" $(( LAHJA_NATS_DEAD_MS / 1000 + 30 ))
[ "$HOSTS_MODE" = netns ] || kill -CONT "$cee"
host_restore 3
finish "$ayh" ayh
grep -q "counted as lost\|sent unconfirmed" "$T/ayh.err" ||
    grep -q "^lost 0 of" "$T/ayh.out" || fail "ayh: the loss was not reported"

# 5. A bridge: host 1's bus directory, whose endpoints do not join the
# cluster, reached from host 2 through `lahja bridge`.
if [ -n "${LAHJA_TOOL:-}" ]; then
    D=$T/bus1
    mkdir -p "$D"
    tool() { h=$1; shift; eval "url=\$HOST_URL_$h"; on_host "$h" $WRAP "$LAHJA_TOOL" --nats "$url" --nats-prefix "$LAHJA_NATS_PREFIX" "$@"; }
    (tool 1 --dir "$D" bridge --name bridge1) >"$T/bridge.out" 2>"$T/bridge.err" &
    br=$!
    pids="$pids $br"
    (on_host 1 $WRAP "$LAHJA_TOOL" --dir "$D" respond Q local-answer --name q1) >"$T/q1.out" 2>&1 &
    pids="$pids $!"
    wait_for "$T/bridge.out" bridging
    wait_for "$T/q1.out" serving
    out=$(tool 2 --dir "$T" --timeout 20000 request Q hi --response-type Q.reply) ||
        fail "a request through the bridge: exit $?"
    [ "$out" = local-answer ] || fail "a request through the bridge got '$out'"
    (tool 2 --dir "$T" --timeout 20000 monitor Tick --count 3) >"$T/mon.out" 2>&1 &
    mon=$!
    pids="$pids $mon"
    wait_for "$T/mon.out" monitoring
    on_host 1 $WRAP "$LAHJA_TOOL" --dir "$D" --timeout 20000 emit Tick local-tick --count 3 \
        >"$T/emit.out" 2>&1 || fail "emit to the bridge: exit $?"
    wait "$mon" || fail "the remote monitor failed"
    [ "$(grep -c 'bridge1 Tick .* local-tick' "$T/mon.out")" -eq 3 ] ||
        fail "the remote monitor did not see the 3 ticks through the bridge"
    kill -INT "$br"
    wait "$br" || fail "the bridge did not end cleanly"
    grep -q "forwarded 3 events and 0 requests to the remote side, 0 events and 1 requests" \
        "$T/bridge.out" || fail "the bridge's counts: $(tail -n 1 "$T/bridge.out")"
    echo "bridge: a request and 3 events crossed it"
    # The tool's stats of an endpoint of another host, through NATS.
    LAHJA_LOG=debug tool 2 --dir "$T" --timeout 20000 stats cee >"$T/stats.out" 2>"$T/stats.err" ||
        fail "stats cee: exit $?"
    grep -q "^name=cee" "$T/stats.out" || fail "stats cee: $(cat "$T/stats.out")"
fi

echo "all NATS scenarios passed ($HOSTS_MODE)"
