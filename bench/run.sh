#!/usr/bin/env bash
# Benchmarks lahja's bus beside the usual ways of moving messages between
# processes on one machine - raw Unix sockets, ZeroMQ, nng, NATS, iceoryx's
# shared memory - and prints one table: each scenario's medians over the
# repetitions, lahja's ratio to every peer, and whether it meets its targets.
#
# Usage: bench/run.sh [--quick] [--reps N]
#   --quick   one repetition of shorter runs: a smoke test, about a minute;
#             its targets say met? or missed?, not PASS or FAIL
#   --reps N  repetitions of every scenario (default 5; the payload-size
#             sweep runs min(N, 3) times)
# Environment:
#   OUT              where results go (default build-bench/results)
#   LAHJA_BENCH_BUS  a bench_bus program to run instead of building one
#
# As root it installs the Debian packages it needs; otherwise it prints
# the apt-get line and skips the peers whose libraries are missing.  It
# builds build-bench (Release), starts a private nats-server on a free
# port of 127.0.0.1 and iceoryx's daemon, RouDi (stopped once every
# benchmark ran; restarted, and the run taken again, when an iceoryx run
# fails), and runs one benchmark at a time, repetitions
# outermost so that drift affects every implementation alike.  Files in
# $OUT: raw.txt (every run's output line), stderr.txt, medians.txt (every
# numeric field's median/min/max per label), table.txt, sweep.dat and
# throughput.png.  Exits non-zero only when something failed to build or
# run; missed targets are reported, not failed.
#
# Scenarios, every one lossless (nng pub/sub, which drops, is shown for
# reference and marked): one-to-one 64 B and 4 KiB events; fan-out to 4
# processes; sequential request/response round trips; one-to-one 1 MiB
# events; lahja alone (64 requests in flight, the seeds' stream and
# request scenarios, memory, full meshes); and one-to-one by payload size
# from 64 B to 1 MiB for the plot.  The peers are bench/peers/peer_*;
# lahja's side is bench/bench_bus.
#
# Cross-host rows (scenarios xhost-*): two hosts made on this machine by
# tests/nats/hosts.sh (network namespaces on a private bridge, one
# nats-server each, clustered by a route), the sender on host 1 and the
# receivers (or the responder) on host 2, so every message crosses the
# route: one-to-one 64 B, fan-out to 4, request/response round trips.
# Raw nats.c (peer_nats) and lahja over NATS (bench_bus with
# LAHJA_BENCH_NATS).  They need root and network namespaces; without them
# they are skipped with one line saying why.
set -u
cd "$(dirname "$0")/.." || exit 1

usage() { sed -n '7,14s/^# \{0,1\}//p' "$0"; }

QUICK=0
REPS=""
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --reps) REPS=${2:-}; shift ;;
    --reps=*) REPS=${1#--reps=} ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done
case $REPS in
"") REPS=$([ $QUICK = 1 ] && echo 1 || echo 5) ;;
*[!0-9]* | 0) echo "run.sh: --reps needs a positive number" >&2; exit 2 ;;
esac
SWEEP_REPS=$((REPS < 3 ? REPS : 3))

BUILD=build-bench
OUT=${OUT:-$BUILD/results}

# ------------------------------------------------------------ parameters
# Python lahja on this machine, the seeds' scenario: the yardstick of the
# last two targets (constants, not measured here).
PY_SEEDS_EVENTS=20000 # propagated events/s, 3 consumers streaming
PY_SEEDS_REQS=4000    # requests/s, request mode
if [ $QUICK = 1 ]; then
    N_64=100000 N_4K=20000 N_FAN=100000 N_FAN_NNG=20000 N_RT=5000 N_1M=200
    N_INFLIGHT=100000 SWEEP_DIV=10 MESH_SIZES="4" TMO=60
    N_X64=20000 N_XFAN=20000 N_XRT=1000
else
    N_64=1000000 N_4K=200000 N_FAN=1000000 N_FAN_NNG=200000 N_RT=50000 N_1M=6000
    N_INFLIGHT=1000000 SWEEP_DIV=1 MESH_SIZES="2 4 8 16" TMO=300
    N_X64=500000 N_XFAN=500000 N_XRT=20000
fi
SWEEP_SIZES="64 256 1024 4096 16384 65536 262144 1048576"

# ---------------------------------------------------------- dependencies
if ! scripts/deps.sh build; then
    echo "run.sh: lahja's build dependencies are missing (see above)" >&2
    exit 1
fi
peer_pkgs="libzmq3-dev libnng-dev libnats-dev nats-server iceoryx libiceoryx-binding-c-dev gnuplot-nox"
missing=""
for p in $peer_pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing:$missing" >&2
        # shellcheck disable=SC2086
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2; } ||
            echo "run.sh: could not install:$missing; the peers that need them are skipped" >&2
    else
        echo "run.sh: missing Debian packages:$missing; the peers that need them are skipped" >&2
        echo "run: sudo apt-get install -y$missing" >&2
    fi
fi

# ----------------------------------------------------------------- build
mkdir -p "$OUT" || exit 1
BUILD_LOG=$OUT/build.log
FAILURES=0
echo "== build ($BUILD, Release)" >&2
if ! cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >"$BUILD_LOG" 2>&1; then
    tail -n 30 "$BUILD_LOG" >&2
    echo "run.sh: cmake failed (log: $BUILD_LOG)" >&2
    exit 1
fi
targets=$(cmake --build "$BUILD" --target help 2>/dev/null |
    grep -oE '(^|[ .:])(bench_bus|peer_(uds|zmq|nng|nats|iceoryx))($|[ :])' | tr -d ' .:' | sort -u)
want_targets=""
for t in $targets; do
    [ "$t" = bench_bus ] && [ -n "${LAHJA_BENCH_BUS:-}" ] && continue
    want_targets="$want_targets $t"
done
# Peers first, bench_bus on its own: a broken bench_bus must not keep the
# peers from running.
for t in $want_targets; do
    if ! cmake --build "$BUILD" -j2 --target "$t" >>"$BUILD_LOG" 2>&1; then
        grep -E 'error|Error' "$BUILD_LOG" | tail -n 10 >&2
        echo "run.sh: $t did not build (log: $BUILD_LOG)" >&2
        FAILURES=$((FAILURES + 1))
    fi
done
BUS=${LAHJA_BENCH_BUS:-$BUILD/bench/bench_bus}
PEERS=$BUILD/bench/peers
if [ ! -x "$BUS" ]; then
    echo "run.sh: no bench_bus ($BUS); lahja's rows are missing" >&2
    FAILURES=$((FAILURES + 1))
fi

# ----------------------------------------------------------- run folder
RUN=$(mktemp -d "${TMPDIR:-/tmp}/lahja-bench.XXXXXX") || exit 1
NATS_PID=""
IOX_PID=""
XHOSTS=0
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    [ "$XHOSTS" = 1 ] && hosts_down
    [ -n "$IOX_PID" ] && iox_stop
    if [ -n "$NATS_PID" ]; then
        kill "$NATS_PID" 2>/dev/null
        wait "$NATS_PID" 2>/dev/null
    fi
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nats-server on a port the kernel picks (listen 127.0.0.1:-1), allowed
# 1 MiB payloads, and patient with receivers that fall behind (they
# queue in their client instead of being cut off).
NATS_URL=""
if [ -x "$PEERS/peer_nats" ]; then
    if command -v nats-server >/dev/null; then
        cat >"$RUN/nats.conf" <<EOF
listen: 127.0.0.1:-1
max_payload: 2MB
max_pending: 2GB
write_deadline: "60s"
EOF
        nats-server -c "$RUN/nats.conf" >"$RUN/nats.log" 2>&1 &
        NATS_PID=$!
        for _ in $(seq 50); do
            port=$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$RUN/nats.log")
            [ -n "$port" ] && break
            sleep 0.1
        done
        if [ -n "$port" ] && kill -0 "$NATS_PID" 2>/dev/null; then
            NATS_URL=nats://127.0.0.1:$port
            echo "== nats-server on $NATS_URL" >&2
        else
            cat "$RUN/nats.log" >&2
            echo "run.sh: nats-server did not start; NATS is skipped" >&2
            FAILURES=$((FAILURES + 1))
        fi
    else
        echo "run.sh: no nats-server; NATS is skipped" >&2
    fi
fi

# ------------------------------------------------------------- iceoryx
# iceoryx's daemon, RouDi, owns the shared memory every iceoryx process
# maps; there is one per machine (fixed names: /tmp/roudi,
# /dev/shm/iceoryx_mgmt), so one already running makes ours abort and the
# rows are skipped.  Its pools are sized for the rows below: the loan of
# a chunk fails instead of blocking when a pool runs dry, so each size
# class holds receivers x queue (256, iceoryx's most) + spare.  It
# touches all of it at start, hence no pools for sizes not measured
# (the sweep has no iceoryx rows): about 0.35 GB.
IOX_SKIP=""
IOX_SEQ=0
IOX_FAN=4 # fan_out's receivers
# shellcheck disable=SC2317 # also run by the EXIT trap
iox_stop() {
    # RouDi 2.0.3 aborts when told to stop while it still has a process
    # registered that died (peer_driver's receivers _exit, its responder
    # is killed): it forgets them 1.5 s after their last heartbeat.  It
    # also sends SIGTERM to every process still registered.
    sleep 2
    kill -TERM "$IOX_PID" 2>/dev/null
    # It does not always exit on SIGTERM: after 10 s it is killed.
    local i=0
    while kill -0 "$IOX_PID" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$IOX_PID" 2>/dev/null
    wait "$IOX_PID" 2>/dev/null
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "run.sh: iox-roudi exited with $rc; removing its files" >&2
        tail -n 5 "$RUN/roudi.log" >&2
        rm -f /dev/shm/iceoryx_mgmt "/dev/shm/$(id -gn)" /tmp/roudi /tmp/roudi.lock /tmp/iox-unique-roudi.lock
    fi
    # What peer processes that ended with _exit or a signal leave behind
    # (their runtime names, see peer_iceoryx.c).
    rm -f /tmp/lahja-iox-*
    IOX_PID=""
}
# Starts RouDi with $RUN/roudi.toml and waits until it is ready; on
# failure sets IOX_SKIP and leaves IOX_PID empty.
iox_start() {
    : >"$RUN/roudi.log"
    iox-roudi -c "$RUN/roudi.toml" -l warning >"$RUN/roudi.log" 2>&1 &
    IOX_PID=$!
    for _ in $(seq 200); do
        grep -q 'RouDi is ready for clients' "$RUN/roudi.log" && break
        kill -0 "$IOX_PID" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q 'RouDi is ready for clients' "$RUN/roudi.log"; then
        echo "== iox-roudi (pid $IOX_PID), pools: $RUN/roudi.toml" >&2
        return
    fi
    cat "$RUN/roudi.log" >&2
    if kill -0 "$IOX_PID" 2>/dev/null; then
        IOX_SKIP="iox-roudi not ready within 20 s"
        kill -KILL "$IOX_PID"
        wait "$IOX_PID" 2>/dev/null
    else
        # most likely another RouDi holds the machine's one lock
        wait "$IOX_PID"
        IOX_SKIP="iox-roudi did not start (rc $?; another RouDi running?)"
    fi
    IOX_PID=""
    echo "run.sh: $IOX_SKIP; iceoryx is skipped" >&2
}
if [ ! -x "$PEERS/peer_iceoryx" ]; then
    IOX_SKIP="peer_iceoryx not built"
elif ! command -v iox-roudi >/dev/null; then
    IOX_SKIP="no iox-roudi (package iceoryx)"
else
    {
        printf '[general]\nversion = 1\n\n[[segment]]\n'
        # 64 B events (+ the peer's length and iceoryx's headers), the
        # fan-out's receivers; hello and end messages too.
        printf '\n[[segment.mempool]]\nsize = 128\ncount = %d\n' $(((IOX_FAN * 256 + 64) * 2))
        # requests and responses carry a header of their own
        printf '\n[[segment.mempool]]\nsize = 1024\ncount = 256\n'
        # 4 KiB events, one receiver
        printf '\n[[segment.mempool]]\nsize = 4352\ncount = %d\n' $((256 * 2 + 64))
        # 1 MiB events, one receiver
        printf '\n[[segment.mempool]]\nsize = 1049600\ncount = %d\n' $((256 + 16))
    } >"$RUN/roudi.toml"
    iox_start
fi

# ------------------------------------------------------ cross-host hosts
# Two hosts (tests/nats/hosts.sh), their servers set up like the local one
# above.  Only in network namespaces: the loopback fallback would measure
# nothing that crosses a link, so without them the rows are skipped.
HOSTS_SH=$PWD/tests/nats/hosts.sh
XHOST_SKIP=""
if [ ! -x "$PEERS/peer_nats" ] && [ ! -x "$BUILD/bench/bench_bus" ]; then
    XHOST_SKIP="neither peer_nats nor bench_bus was built"
elif ! command -v nats-server >/dev/null; then
    XHOST_SKIP="no nats-server"
elif [ "$(id -u)" -ne 0 ]; then
    XHOST_SKIP="not root: network namespaces need it"
else
    # shellcheck source=tests/nats/hosts.sh
    . "$HOSTS_SH"
    # shellcheck disable=SC2034 # read by hosts.sh
    HOSTS_CONF_EXTRA='max_payload: 2MB
max_pending: 2GB
write_deadline: "60s"'
    if hosts_up 2 2>"$RUN/hosts.err"; then
        if [ "$HOSTS_MODE" = netns ]; then
            XHOSTS=1
            echo "== cross-host: nats-servers on $HOSTS_URLS, each in a network namespace of its own" >&2
        else
            XHOST_SKIP="no network namespaces ($(sed -n 's/.*fallback: \([^)]*\)).*/\1/p' "$RUN/hosts.err"))"
            hosts_down
        fi
    else
        cat "$RUN/hosts.err" >&2
        echo "run.sh: the cross-host NATS servers did not come up" >&2
        FAILURES=$((FAILURES + 1))
        XHOST_SKIP="the hosts did not come up"
    fi
fi
[ -n "$XHOST_SKIP" ] && echo "cross-host rows skipped: $XHOST_SKIP" >&2

# ---------------------------------------------------------------- runner
RAW=$OUT/raw.txt
ERR=$OUT/stderr.txt
: >"$RAW"
: >"$ERR"
declare -A SKIPPED=()

# run <scen> <impl> <VAR=value>... -- <program> <args>...
# Runs one benchmark with PB_SCEN/PB_IMPL set and the label
# <scen>.<impl> as its last argument; a fresh socket folder $RUN/s.
run() {
    local scen=$1 impl=$2 label="$1.$2"
    shift 2
    local envs=(PB_SCEN="$scen" PB_IMPL="$impl" PB_ALARM="$TMO")
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local out rc lines try=1
    while :; do
        rm -rf "$RUN/s" && mkdir "$RUN/s"
        echo "== $label: $*" >>"$ERR"
        out=$(env "${envs[@]}" timeout -k 5 $((TMO + 15)) "$@" "$label" 2>>"$ERR")
        rc=$?
        lines=$(printf '%s\n' "$out" | grep -E '^(THR|LAT|SEEDS|MEM|MESH) ')
        [ $rc -eq 0 ] && [ -n "$lines" ] && break
        # iceoryx 2.0.3's RouDi loses a loan or a request now and then
        # (about one run in three in a full table here), and once it
        # has, it fails every run after: the run is taken again, once,
        # with a fresh RouDi (the failure is still counted and said).
        case $label in *.iceoryx*) ;; *) break ;; esac
        [ $try -eq 2 ] || [ -z "$IOX_PID" ] && break
        try=2
        IOX_RETRIED=$((IOX_RETRIED + 1))
        echo "run.sh: $label failed (rc $rc); restarting RouDi and running it again" | tee -a "$ERR" >&2
        echo "RETRIED label=$label rc=$rc" >>"$RAW"
        iox_stop
        iox_start
        [ -z "$IOX_PID" ] && break
    done
    if [ $rc -eq 0 ] && [ -n "$lines" ]; then
        printf '%s\n' "$lines" >>"$RAW"
        printf '  %s\n' "$lines" >&2
        case $label in *.iceoryx*) IOX_OK=$((IOX_OK + 1)) ;; esac
    else
        [ $rc -eq 0 ] && rc=no-output
        echo "FAILED label=$label rc=$rc" | tee -a "$RAW"
        # iceoryx's failures (after the second try) are marked in the
        # table and said, but fail the script only when none of its runs
        # worked (IOX_OK).
        case $label in
        *.iceoryx*) IOX_FAILED=$((IOX_FAILED + 1)) ;;
        *) FAILURES=$((FAILURES + 1)) ;;
        esac
    fi
}
IOX_FAILED=0
IOX_OK=0
IOX_RETRIED=0

skip() {
    [ -z "${SKIPPED[$1]:-}" ] && echo "  (skipped: $1, $2)" >&2
    SKIPPED[$1]=$2
}

# lahja_as <scen> <impl> <VAR=value>... -- <subcommand> <args>...
# (bench_bus gets the socket folder)
lahja_as() {
    local scen=$1 impl=$2
    shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    if [ ! -x "$BUS" ]; then skip "$scen.$impl" "no bench_bus"; return; fi
    run "$scen" "$impl" "${envs[@]}" -- "$BUS" "$@" "$RUN/s"
}

# lahja <scen> <subcommand> <args>...: default settings
lahja() {
    local scen=$1
    shift
    lahja_as "$scen" lahja -- "$@"
}

# lahja-poll: the same with busy polling (busy_poll_us = POLL_US)
POLL_US=50
lahja_poll() {
    local scen=$1
    shift
    lahja_as "$scen" lahja-poll$POLL_US LAHJA_BUSY_POLL_US=$POLL_US -- "$@"
}

# peer <scen> <impl> <transport> <VAR=value>... -- thr|lat <args>...
peer() {
    local scen=$1 impl=$2 tr=$3 addr
    shift 3
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    if [ ! -x "$PEERS/peer_$tr" ]; then skip "$scen.$impl" "peer_$tr not built"; return; fi
    case $tr in
    uds) addr=$RUN/s/sock ;;
    zmq | nng) addr=ipc://$RUN/s/sock ;;
    nats)
        if [ -z "$NATS_URL" ]; then skip "$scen.$impl" "no nats-server"; return; fi
        addr=$NATS_URL ;;
    iceoryx)
        if [ -z "$IOX_PID" ]; then skip "$scen.$impl" "$IOX_SKIP"; return; fi
        # A service instance per run: a port of a killed process lingers
        # in RouDi for a while and must not be matched.
        IOX_SEQ=$((IOX_SEQ + 1))
        addr=iox:${RUN##*/}-$scen-$IOX_SEQ ;;
    esac
    run "$scen" "$impl" "${envs[@]}" -- "$PEERS/peer_$tr" "$@" "$addr"
}

# One-to-one throughput, the implementations of the 64 B / 4 KiB scenarios.
one_to_one() {
    local scen=$1 n=$2 size=$3
    lahja "$scen" thr 1 "$n" "$size"
    peer "$scen" uds-unbuf uds PB_UDS_MODE=unbuf -- thr 1 "$n" "$size"
    peer "$scen" uds-batch uds PB_UDS_MODE=batch -- thr 1 "$n" "$size"
    peer "$scen" zmq-pushpull zmq PB_PROTO=pipeline -- thr 1 "$n" "$size"
    peer "$scen" zmq-pubsub-hwm0 zmq PB_PROTO=pubsub PB_ZMQ_HWM=0 -- thr 1 "$n" "$size"
    peer "$scen" nng-pair1 nng PB_PROTO=pair PB_NNG_BUF=128 -- thr 1 "$n" "$size"
    peer "$scen" nats nats -- thr 1 "$n" "$size"
    lahja_nats "$scen" thr 1 "$n" "$size"
    peer "$scen" iceoryx iceoryx -- thr 1 "$n" "$size"
}

# lahja-via-nats <scen> <subcommand> <args>...: lahja's endpoints on this
# host made to talk through the local nats-server (each joins it as a
# host of its own), which they never do by themselves: what the rule
# that same-host peers use their sockets saves.
lahja_nats() {
    local scen=$1
    shift
    if [ -z "$NATS_URL" ]; then skip "$scen.lahja-via-nats" "no nats-server"; return; fi
    lahja_as "$scen" lahja-via-nats LAHJA_BENCH_NATS="$NATS_URL" -- "$@"
}

fan_out() {
    local scen=fanout4-64B
    lahja $scen thr 4 "$N_FAN" 64
    peer $scen uds-unbuf uds PB_UDS_MODE=unbuf -- thr 4 "$N_FAN" 64
    peer $scen uds-batch uds PB_UDS_MODE=batch -- thr 4 "$N_FAN" 64
    peer $scen zmq-pubsub-hwm0 zmq PB_PROTO=pubsub PB_ZMQ_HWM=0 -- thr 4 "$N_FAN" 64
    # pair1 is nng's lossless protocol: one socket per receiver.  It moves
    # about 0.1 M events/s here, hence the smaller n.
    peer $scen nng-pair1x4 nng PB_PROTO=pair PB_NNG_BUF=128 -- thr 4 "$N_FAN_NNG" 64
    # pub0 with nng's largest buffers, for reference: it drops.
    peer $scen nng-pubsub-buf8192 nng PB_PROTO=pubsub PB_NNG_BUF=8192 -- thr 4 "$N_FAN" 64
    peer $scen nats nats -- thr 4 "$N_FAN" 64
    peer $scen iceoryx iceoryx -- thr $IOX_FAN "$N_FAN" 64
}

# Round trips and 1 MiB transfers depend on where the scheduler puts the
# two processes: on one CPU a wake-up is a context switch; across CPUs it
# wakes an idle CPU, which on a virtual machine costs tens of
# microseconds.  Left to itself the scheduler picks one or the other from
# run to run, so both are measured, pinned: PB_PIN=same|split.
request_response() {
    local pin=$1 scen=reqrep-64B-$1
    lahja_as $scen lahja PB_PIN="$pin" -- lat "$N_RT" 64
    lahja_as $scen lahja-poll$POLL_US PB_PIN="$pin" LAHJA_BUSY_POLL_US=$POLL_US -- lat "$N_RT" 64
    peer $scen uds-pingpong uds PB_PIN="$pin" -- lat "$N_RT" 64
    peer $scen zmq-reqrep zmq PB_PIN="$pin" -- lat "$N_RT" 64
    peer $scen nng-reqrep nng PB_PIN="$pin" -- lat "$N_RT" 64
    peer $scen nats-request nats PB_PIN="$pin" PB_NATS_ASAP=1 -- lat "$N_RT" 64
    lahja_nats $scen lat "$N_RT" 64
    peer $scen iceoryx-reqrep iceoryx PB_PIN="$pin" -- lat "$N_RT" 64
}

large_events() {
    local pin=$1 scen=1to1-1MiB-$1 size=1048576
    lahja_as $scen lahja PB_PIN="$pin" -- thr 1 "$N_1M" $size
    # Payloads made with lahja_event_loan: written in place, never copied.
    lahja_as $scen lahja-loan PB_PIN="$pin" LAHJA_BENCH_LOAN=1 -- thr 1 "$N_1M" $size
    peer $scen uds-unbuf uds PB_PIN="$pin" PB_UDS_MODE=unbuf -- thr 1 "$N_1M" $size
    peer $scen uds-batch uds PB_PIN="$pin" PB_UDS_MODE=batch -- thr 1 "$N_1M" $size
    peer $scen zmq-pushpull zmq PB_PIN="$pin" PB_PROTO=pipeline -- thr 1 "$N_1M" $size
    peer $scen nng-pair1 nng PB_PIN="$pin" PB_PROTO=pair PB_NNG_BUF=128 -- thr 1 "$N_1M" $size
    peer $scen iceoryx iceoryx PB_PIN="$pin" -- thr 1 "$N_1M" $size
    # iceoryx lets its sender run 256 chunks ahead (its queue's default
    # and most), 256 MiB that no cache holds; lahja lends 4 x high_water
    # (4 events of 1 MiB).  The same depth for both, for reference:
    peer $scen iceoryx-queue4 iceoryx PB_PIN="$pin" PB_IOX_QUEUE=4 -- thr 1 "$N_1M" $size
    # Beside lahja-loan: iceoryx's chunks written and read in place (only
    # the 16-byte header copied in and out, see peer_iceoryx.c).
    peer $scen iceoryx-inplace iceoryx PB_PIN="$pin" PB_IOX_INPLACE=1 -- thr 1 "$N_1M" $size
}

lahja_only() {
    lahja inflight64 inflight 64 "$N_INFLIGHT" 64
    lahja_poll inflight64 inflight 64 "$N_INFLIGHT" 64
    # The same, placed: what the scheduler chooses between.
    lahja_as inflight64-same lahja PB_PIN=same -- inflight 64 "$N_INFLIGHT" 64
    lahja_as inflight64-split lahja PB_PIN=split -- inflight 64 "$N_INFLIGHT" 64
    lahja seeds-stream seeds 3 10000
    lahja seeds-request seedsreq 3 1000
    lahja_poll seeds-request seedsreq 3 1000
    lahja memory mem
    local n
    for n in $MESH_SIZES; do lahja "mesh-$n" mesh "$n"; done
}

sweep() {
    local size n scen
    for size in $SWEEP_SIZES; do
        n=$((268435456 / size))
        n=$((n < 2000 ? 2000 : n > 1000000 ? 1000000 : n))
        n=$((n / SWEEP_DIV))
        scen=sweep-$size
        lahja "$scen" thr 1 $n "$size"
        peer "$scen" uds-unbuf uds PB_UDS_MODE=unbuf -- thr 1 $n "$size"
        peer "$scen" uds-batch uds PB_UDS_MODE=batch -- thr 1 $n "$size"
        peer "$scen" zmq-pushpull zmq PB_PROTO=pipeline -- thr 1 $n "$size"
        peer "$scen" nng-pair1 nng PB_PROTO=pair PB_NNG_BUF=128 -- thr 1 $n "$size"
        peer "$scen" nats nats -- thr 1 $n "$size"
    done
}

# ------------------------------------------------------------ cross-host
# on_host_cmd K: the words that run a program on host K (hosts.sh's
# hosts_exec in a fresh sh: the program keeps the pid, timeout's signal
# reaches it).
# shellcheck disable=SC2016 # expanded by that sh
on_host_cmd() { printf '%s\n' sh -c '. "$0"; hosts_exec "$@"' "$HOSTS_SH" "$1"; }

# xpeer <scen> <impl> <VAR=value>... -- thr|lat <args>...: peer_nats with
# the parent (publisher, requester) on host 1, connected to host 1's
# server, and its children (receivers, responder) on host 2, connected to
# host 2's server (PB_CHILD_NETNS, PB_CHILD_ADDR; see peer_driver.c).
xpeer() {
    local scen=$1 impl=$2
    shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    if [ "$XHOSTS" != 1 ]; then skip "$scen.$impl" "$XHOST_SKIP"; return; fi
    if [ ! -x "$PEERS/peer_nats" ]; then skip "$scen.$impl" "peer_nats not built"; return; fi
    local -a host1
    mapfile -t host1 < <(on_host_cmd 1)
    run "$scen" "$impl" "${envs[@]}" PB_CHILD_NETNS="$HOST_NETNS_2" PB_CHILD_ADDR="$HOST_URL_2" -- \
        "${host1[@]}" "$PEERS/peer_nats" "$@" "$HOST_URL_1"
}

# ---- lahja over NATS, cross-host: bench_bus thr and lat with every
# endpoint joined to the cluster as a host of its own (LAHJA_BENCH_NATS):
# the parent (publisher, requester) on host 1, connected to host 1's
# server; its children (receivers, responder) enter host 2
# (LAHJA_BENCH_CHILD_NETNS) and connect to host 2's server, as xpeer
# places peer_nats's.
# xlahja <scen> thr|lat <args>...
xlahja() {
    local scen=$1
    shift
    if [ "$XHOSTS" != 1 ]; then skip "$scen.lahja" "$XHOST_SKIP"; return; fi
    if [ ! -x "$BUS" ]; then skip "$scen.lahja" "no bench_bus"; return; fi
    run "$scen" lahja LAHJA_BENCH_NATS="$HOST_URL_1" LAHJA_BENCH_CHILD_NATS="$HOST_URL_2" \
        LAHJA_BENCH_CHILD_NETNS="$HOST_NETNS_2" -- "${host1[@]}" "$BUS" "$@" "$RUN/s"
}

# The cross-host rows, raw nats.c and lahja over NATS side by side.
cross_host() {
    local -a host1=()
    [ "$XHOSTS" = 1 ] && mapfile -t host1 < <(on_host_cmd 1)
    xlahja xhost-1to1-64B thr 1 "$N_X64" 64
    xpeer xhost-1to1-64B nats -- thr 1 "$N_X64" 64
    xlahja xhost-fanout4-64B thr 4 "$N_XFAN" 64
    xpeer xhost-fanout4-64B nats -- thr 4 "$N_XFAN" 64
    xlahja xhost-reqrep-64B lat "$N_XRT" 64
    xpeer xhost-reqrep-64B nats-request PB_NATS_ASAP=1 -- lat "$N_XRT" 64
}

T0=$(date +%s)
for rep in $(seq "$REPS"); do
    echo "== repetition $rep of $REPS" >&2
    one_to_one 1to1-64B "$N_64" 64
    one_to_one 1to1-4KiB "$N_4K" 4096
    fan_out
    request_response same
    request_response split
    large_events same
    large_events split
    lahja_only
    cross_host
    [ "$rep" -le "$SWEEP_REPS" ] && sweep
done
ELAPSED=$(($(date +%s) - T0))
[ -n "$IOX_PID" ] && iox_stop

# ----------------------------------------------------------------- table
version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
{
    echo "lahja bus benchmarks  $(date -u +%Y-%m-%dT%H:%MZ)  $([ $QUICK = 1 ] && echo "quick run" || echo "full run"):" \
        "$REPS repetition(s), sweep $SWEEP_REPS; measuring took ${ELAPSED} s"
    echo "host: $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)), Linux $(uname -r)," \
        "virt: $(systemd-detect-virt 2>/dev/null || echo unknown)"
    echo "peers: libzmq $(version libzmq3-dev), libnng $(version libnng-dev), libnats $(version libnats-dev)," \
        "nats-server $(version nats-server) on 127.0.0.1 (TCP, a broker)," \
        "iceoryx $(version libiceoryx-binding-c-dev) (shared memory, its RouDi daemon; copies in and out," \
        "iceoryx-inplace: its chunks written and read in place)"
    echo "bench_bus: $BUS"
} >"$OUT/table.txt"

awk -v medians="$OUT/medians.txt" -v sweepdat="$OUT/sweep.dat" -v poll_us="$POLL_US" \
    -v quick="$QUICK" -v py_events="$PY_SEEDS_EVENTS" -v py_reqs="$PY_SEEDS_REQS" '
function isnum(v) { return v ~ /^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$/ }
function sortn(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
}
# median, min, max of the values collected for label l, key k
function stat(l, k, what,   a, n) {
    if (!((l, k) in vals)) return ""
    n = split(vals[l, k], a, " "); sortn(a, n)
    if (what == "min") return a[1]
    if (what == "max") return a[n]
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function med(l, k) { return stat(l, k, "med") }
function commas(x,   s, neg) {
    s = sprintf("%.0f", x); neg = s ~ /^-/; if (neg) s = substr(s, 2)
    while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s)
    return (neg ? "-" : "") s
}
function si(x) {
    if (x >= 1e9) return sprintf("%.3gG", x / 1e9)
    if (x >= 1e6) return sprintf("%.3gM", x / 1e6)
    if (x >= 1e3) return sprintf("%.3gk", x / 1e3)
    return sprintf("%.3g", x)
}
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "n/a" : sprintf("%.2f", a / b) }
function fails(l,   f) {
    f = (l in failed) ? sprintf("  FAILED x%d", failed[l]) : ""
    return f ((l in retried) ? sprintf("  (x%d run again, fresh RouDi)", retried[l]) : "")
}
BEGIN {
    title["1to1-64B"] = "one-to-one, 64 B events"
    title["1to1-4KiB"] = "one-to-one, 4 KiB events"
    title["fanout4-64B"] = "fan-out to 4 receiving processes, 64 B events: all deliveries"
    title["reqrep-64B-same"] = "request/response, sequential round trips, 64 B: both processes on CPU 0"
    title["reqrep-64B-split"] = "request/response, sequential round trips, 64 B: one process per CPU"
    title["1to1-1MiB-same"] = "one-to-one, 1 MiB events: both processes on CPU 0"
    title["1to1-1MiB-split"] = "one-to-one, 1 MiB events: one process per CPU"
    title["xhost-1to1-64B"] = "cross-host (NATS route between two network namespaces), one-to-one, 64 B events"
    title["xhost-fanout4-64B"] = "cross-host (NATS route), fan-out to 4 receiving processes on the other host, 64 B"
    title["xhost-reqrep-64B"] = "cross-host (NATS route), request/response, sequential round trips, 64 B"
}
$1 == "RETRIED" { retried[substr($2, 7)]++; next }
$1 == "FAILED" {
    l = substr($2, 7); failed[l]++
    if (!(l in seen)) { seen[l] = 1; order[++nl] = l }
    next
}
$1 ~ /^(THR|LAT|SEEDS|MEM|MESH)$/ {
    l = ""
    for (i = 2; i <= NF; i++) if ($i ~ /^label=/) l = substr($i, 7)
    if (l == "") next
    if (!(l in seen)) { seen[l] = 1; order[++nl] = l }
    kind[l] = $1
    for (i = 2; i <= NF; i++) {
        eq = index($i, "="); if (!eq) continue
        k = substr($i, 1, eq - 1); v = substr($i, eq + 1)
        if (!isnum(v)) { str[l, k] = v; continue }
        if (!((l, k) in vals)) keys[l] = keys[l] " " k
        vals[l, k] = vals[l, k] " " v
    }
}
END {
    # Every label is <scenario>.<implementation>.
    print "# label key median min max count" > medians
    for (i = 1; i <= nl; i++) {
        l = order[i]; d = index(l, ".")
        s = substr(l, 1, d - 1); im = substr(l, d + 1)
        scen_of[l] = s; impl_of[l] = im
        if (!(s in sseen)) { sseen[s] = 1; sorder[++ns] = s }
        rows[s] = rows[s] " " l
        nk = split(keys[l], ks, " ")
        for (j = 1; j <= nk; j++)
            printf "%s %s %s %s %s %d\n", l, ks[j], med(l, ks[j]), stat(l, ks[j], "min"),
                stat(l, ks[j], "max"), split(vals[l, ks[j]], tmp, " ") > medians
    }
    print "Medians over the repetitions, [min - max] beside them.  Throughput counts events"
    print "delivered at the receivers: sum(delivered) / (last - first receipt), every"
    print "setting lossless unless marked.  lahja/impl: ratio of medians."

    for (si_ = 1; si_ <= ns; si_++) {
        s = sorder[si_]
        if (!(s in title)) continue
        nr = split(rows[s], r, " "); lab = s ".lahja"
        if (s ~ /^(xhost-)?reqrep-/) {
            printf "\n== %s  [%s, n=%s]\n", title[s], s, commas(med(r[1], "n"))
            printf "  %-20s %10s %-17s %9s %9s %14s  %s\n", "impl", "median us", "[min - max]",
                "p99 us", "mean us", "round trips/s", "lahja/impl (< 1: lahja faster)"
            for (j = 1; j <= nr; j++) {
                l = r[j]
                if (!((l, "med_us") in vals)) { printf "  %-20s %s\n", impl_of[l], "no figure" fails(l); continue }
                printf "  %-20s %10.1f %-17s %9.1f %9.1f %14s  %s%s\n", impl_of[l], med(l, "med_us"),
                    sprintf("[%.1f - %.1f]", stat(l, "med_us", "min"), stat(l, "med_us", "max")),
                    med(l, "p99_us"), med(l, "mean_us"), commas(med(l, "rate")),
                    ratio(med(lab, "med_us"), med(l, "med_us")), fails(l)
            }
            continue
        }
        printf "\n== %s  [%s, n=%s]\n", title[s], s, commas(med(r[1], "n"))
        printf "  %-20s %12s %-17s %9s %8s  %s\n", "impl", "events/s", "[min - max]", "MB/s",
            "deliv%", "lahja/impl"
        for (j = 1; j <= nr; j++) {
            l = r[j]
            if (!((l, "rate") in vals)) { printf "  %-20s %s\n", impl_of[l], "no figure" fails(l); continue }
            note = stat(l, "pct", "min") < 100 ? "  LOSSY" : ""
            if (med(l, "n") != med(r[1], "n")) note = note sprintf("  (n=%s)", commas(med(l, "n")))
            printf "  %-20s %12s %-17s %9.1f %8.2f  %s%s%s\n", impl_of[l], commas(med(l, "rate")),
                "[" si(stat(l, "rate", "min")) " - " si(stat(l, "rate", "max")) "]", med(l, "mbps"),
                stat(l, "pct", "min"), ratio(med(lab, "rate"), med(l, "rate")), note, fails(l)
        }
    }

    # lahja on its own: every numeric field, median.
    printf "\n== lahja on its own (every field: median over the repetitions)\n"
    for (si_ = 1; si_ <= ns; si_++) {
        s = sorder[si_]
        if ((s in title) || s ~ /^sweep-/) continue
        nr = split(rows[s], r, " ")
        for (j = 1; j <= nr; j++) {
            l = r[j]; line = ""
            nk = split(keys[l], ks, " ")
            for (k = 1; k <= nk; k++) {
                v = med(l, ks[k])
                line = line " " ks[k] "=" (v == int(v) ? v : sprintf("%.3g", v))
            }
            if (nk == 0) line = " no figure"
            printf "  %-15s %-12s%s%s\n", s, impl_of[l], line, fails(l)
        }
    }

    # The payload-size sweep: MB/s per implementation and size.
    nz = 0; nsw = 0
    for (si_ = 1; si_ <= ns; si_++) {
        s = sorder[si_]
        if (s !~ /^sweep-/) continue
        sizes[++nz] = substr(s, 7)
        nr = split(rows[s], r, " ")
        for (j = 1; j <= nr; j++) {
            im = impl_of[r[j]]
            if (!(im in swseen)) { swseen[im] = 1; swimpl[++nsw] = im }
        }
    }
    if (nz > 0) {
        printf "\n== one-to-one by payload size (sweep): MB/s, median\n  %8s", "size"
        for (j = 1; j <= nsw; j++) printf " %13s", swimpl[j]
        printf "\n"
        for (z = 1; z <= nz; z++) {
            printf "  %8s", sizes[z]
            for (j = 1; j <= nsw; j++) {
                v = med("sweep-" sizes[z] "." swimpl[j], "mbps")
                printf " %13s", v == "" ? "-" : sprintf("%.1f", v)
            }
            printf "\n"
        }
        printf "# one-to-one throughput by payload size; one block per implementation\n" > sweepdat
        printf "# columns: size mbps_median mbps_min mbps_max events_per_s_median\n" > sweepdat
        for (j = 1; j <= nsw; j++) {
            printf "\n\n# impl %s\n", swimpl[j] > sweepdat
            for (z = 1; z <= nz; z++) {
                l = "sweep-" sizes[z] "." swimpl[j]
                if ((l, "mbps") in vals)
                    printf "%s %s %s %s %s\n", sizes[z], med(l, "mbps"), stat(l, "mbps", "min"),
                        stat(l, "mbps", "max"), med(l, "rate") > sweepdat
            }
        }
    }

    # Targets, from the medians above.
    printf "\n== targets: ratios of this run'"'"'s medians (the figure / the yardstick)\n"
    if (quick)
        printf "  A smoke run (--quick): short runs, one repetition.  Its figures show that\n" \
               "  everything runs, not whether a target is met; \"met?\" and \"missed?\" say\n" \
               "  where the target would stand.  Run without --quick for a verdict.\n"
    printf "  Python lahja, the seeds'"'"' yardstick, is a constant measured on this machine:\n"
    printf "  %s events/s propagated, %s requests/s.\n", commas(py_events), commas(py_reqs)
    target("one-to-one 64 B events/s: lahja >= 2 x zmq-pushpull",
           ratio(med("1to1-64B.lahja", "rate"), med("1to1-64B.zmq-pushpull", "rate")), ">=", 2,
           "1to1-64B.lahja")
    target("one-to-one 64 B events/s: lahja >= 1 x uds-batch (shared memory)",
           ratio(med("1to1-64B.lahja", "rate"), med("1to1-64B.uds-batch", "rate")), ">=", 1,
           "1to1-64B.lahja")
    target("fan-out 1->4 deliveries/s: lahja >= 1 x uds-batch (shared memory)",
           ratio(med("fanout4-64B.lahja", "rate"), med("fanout4-64B.uds-batch", "rate")), ">=", 1,
           "fanout4-64B.lahja")
    for (pi = 1; pi <= 2; pi++) {
        pin = pi == 1 ? "same" : "split"
        where = pi == 1 ? "one CPU" : "two CPUs"
        a = med("1to1-1MiB-" pin ".uds-unbuf", "mbps"); b = med("1to1-1MiB-" pin ".uds-batch", "mbps")
        best = (a == "" || (b != "" && b + 0 > a + 0)) ? b : a
        target(sprintf("1 MiB events MB/s, %s, loaned: lahja >= 2 x uds (better of two)", where),
               ratio(med("1to1-1MiB-" pin ".lahja-loan", "mbps"), best), ">=", 2,
               "1to1-1MiB-" pin ".lahja-loan")
    }
    target("round trip median, one CPU: lahja <= 1.0 x uds ping-pong (shared memory)",
           ratio(med("reqrep-64B-same.lahja", "med_us"), med("reqrep-64B-same.uds-pingpong", "med_us")),
           "<=", 1.0, "")
    target("round trip median, two CPUs, default settings: lahja <= 0.5 x uds ping-pong",
           ratio(med("reqrep-64B-split.lahja", "med_us"), med("reqrep-64B-split.uds-pingpong", "med_us")),
           "<=", 0.5, "")
    v = med("inflight64.lahja", "rate")
    target("64 requests in flight: lahja >= 2,000,000 requests/s (shared memory)",
           v == "" ? "n/a" : sprintf("%.2f", v / 1e6), ">=", 2, "")
    target("one-to-one 64 B events/s: lahja >= 1 x iceoryx",
           ratio(med("1to1-64B.lahja", "rate"), med("1to1-64B.iceoryx", "rate")), ">=", 1,
           "1to1-64B.lahja")
    target("fan-out 1->4 deliveries/s: lahja >= 2 x zmq-pubsub-hwm0",
           ratio(med("fanout4-64B.lahja", "rate"), med("fanout4-64B.zmq-pubsub-hwm0", "rate")), ">=", 2,
           "fanout4-64B.lahja")
    pl = "lahja-poll" poll_us
    for (pi = 1; pi <= 2; pi++) {
        pin = pi == 1 ? "same" : "split"
        where = pi == 1 ? "one CPU" : "two CPUs"
        target(sprintf("round trip median, %s: lahja <= 1.1 x uds ping-pong", where),
               ratio(med("reqrep-64B-" pin ".lahja", "med_us"), med("reqrep-64B-" pin ".uds-pingpong", "med_us")),
               "<=", 1.1, "")
        target(sprintf("  the same with busy_poll_us=%d", poll_us),
               ratio(med("reqrep-64B-" pin "." pl, "med_us"), med("reqrep-64B-" pin ".uds-pingpong", "med_us")),
               "<=", 1.1, "")
    }
    v = med("inflight64.lahja", "rate")
    target("64 requests in flight: lahja >= 1,000,000 requests/s",
           v == "" ? "n/a" : sprintf("%.2f", v / 1e6), ">=", 1, "")
    v = med("inflight64." pl, "rate")
    target(sprintf("  the same with busy_poll_us=%d", poll_us),
           v == "" ? "n/a" : sprintf("%.2f", v / 1e6), ">=", 1, "")
    for (pi = 1; pi <= 2; pi++) {
        pin = pi == 1 ? "same" : "split"
        where = pi == 1 ? "one CPU" : "two CPUs"
        a = med("1to1-1MiB-" pin ".uds-unbuf", "mbps"); b = med("1to1-1MiB-" pin ".uds-batch", "mbps")
        best = (a == "" || (b != "" && b + 0 > a + 0)) ? b : a
        target(sprintf("1 MiB events MB/s, %s: lahja >= 0.8 x uds (better of two)", where),
               ratio(med("1to1-1MiB-" pin ".lahja", "mbps"), best), ">=", 0.8, "1to1-1MiB-" pin ".lahja")
    }
    for (pi = 1; pi <= 2; pi++) {
        pin = pi == 1 ? "same" : "split"
        where = pi == 1 ? "one CPU" : "two CPUs"
        target(sprintf("1 MiB events MB/s, %s: lahja >= 1 x iceoryx", where),
               ratio(med("1to1-1MiB-" pin ".lahja", "mbps"), med("1to1-1MiB-" pin ".iceoryx", "mbps")),
               ">=", 1, "1to1-1MiB-" pin ".lahja")
        target(sprintf("1 MiB events MB/s, %s: lahja x iceoryx-queue4", where),
               ratio(med("1to1-1MiB-" pin ".lahja", "mbps"), med("1to1-1MiB-" pin ".iceoryx-queue4", "mbps")),
               "info", 0, "")
        target(sprintf("1 MiB in place, %s: lahja-loan x iceoryx-inplace", where),
               ratio(med("1to1-1MiB-" pin ".lahja-loan", "rate"), med("1to1-1MiB-" pin ".iceoryx-inplace", "rate")),
               "info", 0, "")
    }
    v = med("seeds-stream.lahja", "propagated_rate")
    target(sprintf("seeds stream, propagated events/s: >= 100 x Python (%s/s)", commas(py_events)),
           v == "" ? "n/a" : sprintf("%.1f", v / py_events), ">=", 100, "")
    v = med("seeds-request.lahja", "rate")
    target(sprintf("seeds request mode (reported; no target): x Python (%s/s)", commas(py_reqs)),
           v == "" ? "n/a" : sprintf("%.1f", v / py_reqs), "info", 0, "")
    v = med("seeds-request." pl, "rate")
    target(sprintf("  the same with busy_poll_us=%d", poll_us),
           v == "" ? "n/a" : sprintf("%.1f", v / py_reqs), "info", 0, "")
    target("cross-host one-to-one 64 B events/s: lahja >= 0.8 x nats.c",
           ratio(med("xhost-1to1-64B.lahja", "rate"), med("xhost-1to1-64B.nats", "rate")), ">=", 0.8,
           "xhost-1to1-64B.lahja")
    target("cross-host fan-out 1->4 deliveries/s: lahja >= 0.8 x nats.c",
           ratio(med("xhost-fanout4-64B.lahja", "rate"), med("xhost-fanout4-64B.nats", "rate")), ">=", 0.8,
           "xhost-fanout4-64B.lahja")
    target("cross-host round trip median: lahja <= 1.2 x nats.c request",
           ratio(med("xhost-reqrep-64B.lahja", "med_us"), med("xhost-reqrep-64B.nats-request", "med_us")),
           "<=", 1.2, "")
    if (quick)
        printf "targets: no verdict from a smoke run (%d of %d would be met as it stands)\n", met, ntargets
    else
        printf "targets: %d of %d met with the default settings, %d of %d with busy polling where it is listed\n",
            met, ntargets, nbest, ntargets

    nf = 0
    for (l in failed) nf += failed[l]
    if (nf > 0) {
        printf "\nfailed runs (%d):", nf
        for (i = 1; i <= nl; i++) if (order[i] in failed) printf " %s x%d", order[i], failed[order[i]]
        printf "\n"
    }
}
# One target: PASS when value op bound holds (and, when lossless_label is
# given, that run delivered everything).
function target(what, value, op, bound, lossless_label,   ok, note, alt) {
    if (op == "info") {
        printf "  %-" (quick ? 7 : 4) "s  %-62s %7s\n", "info", what, value
        return
    }
    alt = what ~ /^  the same/ # the previous target, with another setting
    ok = value != "n/a" && (op == ">=" ? value + 0 >= bound : value + 0 <= bound)
    note = ""
    if (ok && lossless_label != "" && stat(lossless_label, "pct", "min") < 100) { ok = 0; note = "  (lost events)" }
    if (!alt) {
        ntargets++
        met += ok
        nbest += ok
        last_ok = ok
    } else if (ok && !last_ok) {
        nbest++
        last_ok = 1
    }
    printf "  %-" (quick ? 7 : 4) "s  %-62s %7s (%s %s)%s\n",
        quick ? (ok ? "met?" : "missed?") : (ok ? "PASS" : "FAIL"), what, value, op, bound, note
}
' "$RAW" >>"$OUT/table.txt"

# --------------------------------------------------------------- the plot
if [ -s "$OUT/sweep.dat" ] && command -v gnuplot >/dev/null; then
    impls=$(sed -n 's/^# impl //p' "$OUT/sweep.dat" | tr '\n' ' ')
    cat >"$OUT/throughput.gp" <<EOF
# Plots sweep.dat (written by bench/run.sh): one-to-one throughput by payload size.
set terminal pngcairo size 1400,560 font ",10"
set output "$OUT/throughput.png"
impls = "$impls"
set multiplot layout 1,2 title "one-to-one throughput by payload size, medians (bars: min-max); $(nproc) CPUs, $(uname -r)"
set logscale xy 2
set logscale y 10
set grid
set key top left
set xlabel "payload size (bytes)"
set xtics ("64" 64, "256" 256, "1K" 1024, "4K" 4096, "16K" 16384, "64K" 65536, "256K" 262144, "1M" 1048576)
set format y "%.0s%c"
set ylabel "MB/s (1e6 bytes)"
plot for [i=0:words(impls)-1] "$OUT/sweep.dat" index i using 1:2:3:4 with yerrorlines lw 2 title word(impls, i+1)
set ylabel "events/s"
set key top right
plot for [i=0:words(impls)-1] "$OUT/sweep.dat" index i using 1:5 with linespoints lw 2 title word(impls, i+1)
unset multiplot
EOF
    if ! gnuplot "$OUT/throughput.gp" 2>>"$ERR"; then
        echo "run.sh: gnuplot failed (see $ERR)" >&2
        FAILURES=$((FAILURES + 1))
    fi
fi

cat "$OUT/table.txt"
[ ${#SKIPPED[@]} -gt 0 ] && echo "skipped: ${!SKIPPED[*]}"
echo "results: $OUT (raw.txt, medians.txt, table.txt, sweep.dat, throughput.png)"
if [ $IOX_RETRIED -gt 0 ]; then
    echo "run.sh: $IOX_RETRIED iceoryx run(s) failed once and were run again with a fresh RouDi" >&2
fi
if [ $IOX_FAILED -gt 0 ]; then
    echo "run.sh: $IOX_FAILED iceoryx run(s) failed, $IOX_OK worked (its daemon's, marked in the table)" >&2
    [ $IOX_OK -eq 0 ] && FAILURES=$((FAILURES + IOX_FAILED))
fi
if [ $FAILURES -gt 0 ]; then
    echo "run.sh: $FAILURES failure(s)" >&2
    exit 1
fi
exit 0
