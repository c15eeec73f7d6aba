#!/bin/sh
# The lahja tool, run as a user runs it, against real endpoints in a
# private bus directory: respond and request (and a request nobody
# answers), ls (live, then stale after SIGKILL), stats, monitor with a
# pattern fed by emit (a burst, every event seen; a type it does not
# match, not; '*' sees everything), bench (what it sent all received),
# and --json output that parses.
# Usage: test_tool.sh PATH-TO-lahja [WRAPPER...]
#   WRAPPER: a command that runs every lahja process (e.g. valgrind ...).
set -eu
LAHJA=$1
shift
WRAP="$*"
lahja() { $WRAP "$LAHJA" "$@"; }
D=$(mktemp -d /tmp/lahja-tool-XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$D"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*" >&2
    for f in "$D"/*.out; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; } >&2; done
    exit 1
}
# wait_for FILE TEXT: until FILE holds TEXT, polled, for at most 20 s.
wait_for() {
    i=0
    while ! grep -q -- "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -le 400 ] || fail "no '$2' in $1"
        sleep 0.05
    done
}
# json FILE: the file parses as JSON (when python3 is there to say so).
json() {
    if command -v python3 >/dev/null; then
        python3 -c 'import json,sys
for line in open(sys.argv[1]):
    if line.strip(): json.loads(line)' "$1" || fail "$1 is not JSON"
    fi
}

# A stand-in responder, and requests to it.
$WRAP "$LAHJA" --dir "$D" respond Q hello --name r >"$D/r.out" 2>&1 &
rpid=$!
pids="$pids $rpid"
wait_for "$D/r.out" serving
out=$(lahja --dir "$D" request Q hi --response-type Q.reply) || fail "request: exit $?"
[ "$out" = hello ] || fail "request printed '$out'"
lahja --dir "$D" --json request Q hi --response-type Q.reply >"$D/req.out" || fail "request --json"
json "$D/req.out"
grep -q '"origin":"r"' "$D/req.out" || fail "request --json: no origin r"
set +e
lahja --dir "$D" --timeout 300 request Nobody x --response-type X 2>"$D/nobody.out"
rc=$?
set -e
[ $rc -eq 5 ] || fail "a request nobody subscribes to: exit $rc, not 5"
grep -q "nobody in .* subscribes to Nobody" "$D/nobody.out" || fail "no reason given"

# ls and stats see it.
lahja --dir "$D" ls >"$D/ls.out" || fail "ls: exit $?"
grep -q "^r  *live  *$rpid  *[^ ][^ ]*  *Q " "$D/ls.out" || fail "ls: r not live with pid $rpid, a user and Q"
lahja --dir "$D" --json ls >"$D/lsj.out" || fail "ls --json"
json "$D/lsj.out"
lahja --dir "$D" stats r >"$D/stats.out" || fail "stats: exit $?"
grep -q "^name=r$" "$D/stats.out" || fail "stats: no name=r"
grep -q "^pid=$rpid$" "$D/stats.out" || fail "stats: no pid"
lahja --dir "$D" --json stats r >"$D/statsj.out" || fail "stats --json"
json "$D/statsj.out"
set +e
lahja --dir "$D" stats ghost 2>"$D/ghost.out"
rc=$?
set -e
[ $rc -eq 3 ] || fail "stats of no such endpoint: exit $rc, not 3"
grep -q "no endpoint ghost in $D" "$D/ghost.out" || fail "stats of no such endpoint: no reason given"

# Killed, it leaves its socket: stale.
kill -9 "$rpid"
wait "$rpid" 2>/dev/null || true
lahja --dir "$D" --timeout 300 ls >"$D/ls2.out" || fail "ls after kill: exit $?"
grep -q "^r  *stale" "$D/ls2.out" || fail "ls: r not stale after SIGKILL"
rm -f "$D/r.ipc"

# A monitor of a pattern sees every event of a burst, and nothing else;
# a monitor of '*' sees everything.
$WRAP "$LAHJA" --dir "$D" monitor 'block.*' --count 1001 --stats >"$D/mon.out" 2>"$D/monerr.out" &
mpid=$!
pids="$pids $mpid"
wait_for "$D/monerr.out" monitoring
set +e
lahja --dir "$D" --timeout 300 emit other x 2>/dev/null
rc=$?
set -e
[ $rc -eq 5 ] || fail "emit of a type nobody matches: exit $rc, not 5"
$WRAP "$LAHJA" --dir "$D" --json monitor --count 1002 >"$D/all.out" 2>"$D/allerr.out" &
apid=$!
pids="$pids $apid"
wait_for "$D/allerr.out" monitoring
lahja --dir "$D" emit block.a burst --count 1000 || fail "emit burst: exit $?"
lahja --dir "$D" emit other x || fail "emit other: exit $?"
lahja --dir "$D" --json emit block.b last >"$D/emit.out" || fail "emit last: exit $?"
json "$D/emit.out"
wait "$mpid" || fail "monitor: exit $?"
wait "$apid" || fail "monitor '*': exit $?"
[ "$(grep -c ' block.a 5 burst$' "$D/mon.out")" -eq 1000 ] || fail "monitor missed some of the burst"
[ "$(grep -c ' block.b 4 last$' "$D/mon.out")" -eq 1 ] || fail "monitor missed the last"
grep -q ' other ' "$D/mon.out" && fail "monitor saw a type its pattern does not match"
grep -q "1001 events, 0 missed" "$D/monerr.out" || fail "monitor's count"
grep -q "^block.a  *[0-9]* events/s  *1000 events  *5000 bytes" "$D/monerr.out" ||
    fail "monitor --stats: block.a's totals"
json "$D/all.out"
[ "$(grep -c '"type":"block.a","size":5,"payload":"burst"' "$D/all.out")" -eq 1000 ] ||
    fail "monitor '*' missed some of the burst"
grep -q '"type":"other","size":1,"payload":"x"' "$D/all.out" || fail "monitor '*' missed other"
grep -q '"type":"block.b"' "$D/all.out" || fail "monitor '*' missed the last"
grep -q "1002 events, 0 missed" "$D/allerr.out" || fail "monitor '*''s count"

# bench: a second process, events one-to-one and round trips between them.
lahja --dir "$D" bench --count 2000 --requests 200 >"$D/bench.out" || fail "bench: exit $?"
grep -q "^one-to-one  *2000 events of 64 B in .* events/s, .* 2000 received$" "$D/bench.out" ||
    fail "bench: the one-to-one line"
grep -q "^round trip  *200 requests of 64 B: median .* us, p99 .* us, .* requests/s$" \
    "$D/bench.out" || fail "bench: the round-trip line"
lahja --dir "$D" --json bench --count 500 --size 3000 --requests 50 >"$D/benchj.out" ||
    fail "bench --json: exit $?"
json "$D/benchj.out"
grep -q '"events":500,"size":3000,.*"received":500,"lost":0,"requests":50,' "$D/benchj.out" ||
    fail "bench --json: the counts"

# Usage errors.
set +e
lahja --dir "$D" frobnicate 2>/dev/null
rc=$?
set -e
[ $rc -eq 2 ] || fail "an unknown command: exit $rc, not 2"
lahja --help | grep -q "^usage: lahja" || fail "--help"
echo "ok"
