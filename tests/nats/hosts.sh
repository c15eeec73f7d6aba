# shellcheck shell=sh
# hosts.sh - "hosts" for the NATS tests and benchmarks, made on this
# machine: sourced by a POSIX shell (dash, bash), never run.
#
# Each host is a network namespace of its own (<uniq>-hK) with one
# address, 10.A.B.K/24, on a private link: a veth whose other end sits in
# a bridge inside a "switch" namespace (<uniq>-sw).  A and B come from the
# PID, so parallel runs use different subnets; nothing is added to the
# root namespace, whose routing stays as it was.  Every host runs one
# nats-server (client port 4222, cluster port 6222, monitor port 8222, on
# its own address; server_name hK), clustered with the others by routes.
#
#   hosts_up N          N = 2 or 3: make the hosts, start the servers, wait
#                       until every server reports N-1 routes (/routez).
#                       Exports HOST_URL_K (nats://ADDR:4222), HOSTS_URLS
#                       (all, comma-separated), HOSTS_MODE (netns or
#                       loopback), HOSTS_N, HOSTS_DIR (the run folder) and,
#                       in netns mode, HOST_NETNS_K (/run/netns/<name>).
#   on_host K cmd...    runs cmd in host K's network namespace and in a UTS
#                       namespace of its own whose hostname is <uniq>-hK,
#                       with LAHJA_HOST_ID=hK-<uniq> in its environment.
#                       `on_host K prog & pid=$!` gives prog's own pid: in
#                       a subshell (as a background job is) on_host execs,
#                       so no shell stays in between and killing $pid kills
#                       prog.  Hence, in a subshell, on_host must be the
#                       last command.  In the calling shell itself it runs
#                       cmd as a child and returns its status.
#   hosts_exec K cmd... the same, always by exec: for `sh -c '. hosts.sh;
#                       hosts_exec "$@"' hosts.sh K prog...` in a program
#                       started by the caller (the state is exported).
#   server_kill K       SIGKILLs host K's nats-server and waits for it.
#   server_start K      starts it again with the same configuration and
#                       waits until the routes of every running server are
#                       back.
#   host_cut K          takes host K's link down (its veth in the switch).
#   host_restore K      brings it up again; waits for the routes.
#   hosts_down          kills every server, deletes the namespaces, removes
#                       the run folder.  Idempotent; fine in an EXIT trap.
#
# Without root, or when namespaces cannot be made, the fallback runs the
# N servers on 127.0.0.1 with free ports picked here, clustered the same
# way; on_host then only sets LAHJA_HOST_ID (every process shares the
# host's network and hostname), host_cut SIGSTOPs the host's server and
# host_restore SIGCONTs it.  A line says which mode is used.
#
# Environment: HOSTS_WAIT_S (default 20) bounds every wait; HOSTS_CONF_EXTRA
# is added to every server's configuration (e.g. max_payload: 2MB);
# HOSTS_FORCE_LOOPBACK=1 picks the fallback.  Every wait that fails prints
# the servers' logs and returns non-zero.
# Internal names start with _h.

# The state, exported: a shell started by the caller may source this file
# again and use on_host or hosts_exec on the same hosts.
HOSTS_MODE=${HOSTS_MODE:-}
HOSTS_N=${HOSTS_N:-0}
HOSTS_DIR=${HOSTS_DIR:-}
HOSTS_UNIQ=${HOSTS_UNIQ:-}
HOSTS_NET=${HOSTS_NET:-}

_h_say() { echo "hosts: $*" >&2; }

# _h_addr K: host K's address
_h_addr() {
    if [ "$HOSTS_MODE" = netns ]; then echo "$HOSTS_NET.$1"; else echo 127.0.0.1; fi
}

# _h_port K KIND: client|cluster|http port of host K
_h_port() {
    if [ "$HOSTS_MODE" = netns ]; then
        case $2 in client) echo 4222 ;; cluster) echo 6222 ;; http) echo 8222 ;; esac
    else
        cat "$HOSTS_DIR/h$1.$2"
    fi
}

# _h_in K cmd...: runs cmd in host K's network namespace (netns mode)
_h_in() {
    _h_k=$1
    shift
    if [ "$HOSTS_MODE" = netns ]; then
        ip netns exec "$HOSTS_UNIQ-h$_h_k" "$@"
    else
        "$@"
    fi
}

_h_logs() {
    for _h_f in "$HOSTS_DIR"/h*.log; do
        [ -f "$_h_f" ] || continue
        echo "--- $_h_f (last 40 lines)" >&2
        tail -n 40 "$_h_f" >&2
    done
    return 0
}

# _h_port_free P: nothing listens on TCP port P (any address)
_h_port_free() {
    _h_hex=$(printf ':%04X ' "$1")
    ! grep -q "$_h_hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

_h_conf() {
    _h_k=$1
    _h_a=$(_h_addr "$_h_k")
    _h_routes=""
    _h_j=1
    while [ "$_h_j" -le "$HOSTS_N" ]; do
        if [ "$_h_j" != "$_h_k" ]; then
            _h_routes="$_h_routes${_h_routes:+, }nats-route://$(_h_addr "$_h_j"):$(_h_port "$_h_j" cluster)"
        fi
        _h_j=$((_h_j + 1))
    done
    cat >"$HOSTS_DIR/h$_h_k.conf" <<EOF
server_name: h$_h_k
listen: $_h_a:$(_h_port "$_h_k" client)
http: $_h_a:$(_h_port "$_h_k" http)
cluster {
  name: $HOSTS_UNIQ
  listen: $_h_a:$(_h_port "$_h_k" cluster)
  routes: [ $_h_routes ]
}
${HOSTS_CONF_EXTRA:-}
EOF
}

# _h_launch K: starts host K's server in the background
_h_launch() {
    if [ "$HOSTS_MODE" = netns ]; then
        ip netns exec "$HOSTS_UNIQ-h$1" nats-server -c "$HOSTS_DIR/h$1.conf" >>"$HOSTS_DIR/h$1.log" 2>&1 &
    else
        nats-server -c "$HOSTS_DIR/h$1.conf" >>"$HOSTS_DIR/h$1.log" 2>&1 &
    fi
    echo $! >"$HOSTS_DIR/h$1.pid"
    rm -f "$HOSTS_DIR/h$1.down" "$HOSTS_DIR/h$1.cut"
}

# _h_routes K: host K's num_routes, empty when it does not answer
_h_routes() {
    _h_in "$1" curl -s -m 1 "http://$(_h_addr "$1"):$(_h_port "$1" http)/routez" 2>/dev/null |
        sed -n 's/.*"num_routes": *\([0-9]*\).*/\1/p'
}

# _h_wait_routes WHAT: until every running, connected server reports
# routes to all the other running, connected ones
_h_wait_routes() {
    _h_live=0
    _h_k=1
    while [ "$_h_k" -le "$HOSTS_N" ]; do
        [ -f "$HOSTS_DIR/h$_h_k.down" ] || [ -f "$HOSTS_DIR/h$_h_k.cut" ] || _h_live=$((_h_live + 1))
        _h_k=$((_h_k + 1))
    done
    _h_end=$(($(date +%s) + ${HOSTS_WAIT_S:-20}))
    while :; do
        _h_ok=1
        _h_state=""
        _h_k=1
        while [ "$_h_k" -le "$HOSTS_N" ]; do
            if [ ! -f "$HOSTS_DIR/h$_h_k.down" ] && [ ! -f "$HOSTS_DIR/h$_h_k.cut" ]; then
                if ! kill -0 "$(cat "$HOSTS_DIR/h$_h_k.pid")" 2>/dev/null; then
                    _h_say "$1: the nats-server of host $_h_k exited"
                    _h_logs
                    return 1
                fi
                _h_r=$(_h_routes "$_h_k")
                _h_state="$_h_state h$_h_k=${_h_r:-?}"
                [ "${_h_r:-x}" = $((_h_live - 1)) ] || _h_ok=0
            fi
            _h_k=$((_h_k + 1))
        done
        [ $_h_ok = 1 ] && return 0
        if [ "$(date +%s)" -ge "$_h_end" ]; then
            _h_say "$1: routes not formed within ${HOSTS_WAIT_S:-20} s (num_routes:$_h_state, want $((_h_live - 1)))"
            _h_logs
            return 1
        fi
        sleep 0.05
    done
}

# _h_reap PID: until PID is gone (or a zombie nobody else will reap)
_h_reap() {
    wait "$1" 2>/dev/null || :
    _h_end=$(($(date +%s) + ${HOSTS_WAIT_S:-20}))
    while kill -0 "$1" 2>/dev/null; do
        case $(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) in Z | "") return 0 ;; esac
        if [ "$(date +%s)" -ge "$_h_end" ]; then
            _h_say "process $1 did not exit"
            return 1
        fi
        sleep 0.05
    done
    return 0
}

_h_netns_setup() {
    _h_sw="$HOSTS_UNIQ-sw"
    ip netns add "$_h_sw" 2>/dev/null || return 1
    : >"$HOSTS_DIR/netns"
    echo "$_h_sw" >>"$HOSTS_DIR/netns"
    ip -n "$_h_sw" link add br0 type bridge || return 1
    ip -n "$_h_sw" link set br0 up || return 1
    ip -n "$_h_sw" link set lo up || return 1
    _h_k=1
    while [ "$_h_k" -le "$HOSTS_N" ]; do
        _h_ns="$HOSTS_UNIQ-h$_h_k"
        ip netns add "$_h_ns" || return 1
        echo "$_h_ns" >>"$HOSTS_DIR/netns"
        ip -n "$_h_sw" link add "h$_h_k" type veth peer name eth0 netns "$_h_ns" || return 1
        ip -n "$_h_sw" link set "h$_h_k" master br0 up || return 1
        ip -n "$_h_ns" link set lo up || return 1
        ip -n "$_h_ns" addr add "$HOSTS_NET.$_h_k/24" dev eth0 || return 1
        ip -n "$_h_ns" link set eth0 up || return 1
        _h_k=$((_h_k + 1))
    done
    return 0
}

_h_netns_teardown() {
    [ -f "$HOSTS_DIR/netns" ] || return 0
    while read -r _h_ns; do
        ip netns del "$_h_ns" 2>/dev/null || :
    done <"$HOSTS_DIR/netns"
    rm -f "$HOSTS_DIR/netns"
    return 0
}

hosts_up() {
    case ${1:-} in 2 | 3) ;; *) _h_say "hosts_up: N must be 2 or 3"; return 2 ;; esac
    if [ -n "$HOSTS_DIR" ]; then _h_say "hosts_up: already up ($HOSTS_DIR)"; return 2; fi
    if ! command -v nats-server >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
        _h_say "hosts_up: needs nats-server and curl"
        return 2
    fi
    HOSTS_N=$1
    HOSTS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/lahja-hosts.XXXXXX") || return 1
    HOSTS_UNIQ="lh$$"
    HOSTS_NET="10.$((100 + ($$ / 256) % 150)).$(($$ % 256))"
    HOSTS_MODE=loopback
    _h_why=""
    if [ "${HOSTS_FORCE_LOOPBACK:-0}" = 1 ]; then
        _h_why="HOSTS_FORCE_LOOPBACK=1"
    elif [ "$(id -u)" != 0 ]; then
        _h_why="not root"
    elif ! command -v ip >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1; then
        _h_why="no ip or unshare"
    elif _h_netns_setup 2>"$HOSTS_DIR/netns.err"; then
        HOSTS_MODE=netns
    else
        _h_why="network namespaces cannot be made: $(head -n 1 "$HOSTS_DIR/netns.err")"
        _h_netns_teardown
    fi
    if [ $HOSTS_MODE = netns ]; then
        _h_say "mode netns: $HOSTS_N network namespaces $HOSTS_UNIQ-h1..h$HOSTS_N, $HOSTS_NET.0/24 through a bridge in $HOSTS_UNIQ-sw"
    else
        _h_say "mode loopback (fallback: $_h_why): $HOSTS_N servers on 127.0.0.1, one network and hostname for all;" \
            "host_cut is SIGSTOP of the server, so a link that is down (connections left hanging, not refused) is not shown"
        _h_try=0
        while :; do
            _h_base=$((20000 + ($$ * 7 + _h_try * 97) % 40000))
            _h_free=1
            _h_k=1
            while [ "$_h_k" -le "$HOSTS_N" ]; do
                for _h_p in $((_h_base + _h_k)) $((_h_base + 100 + _h_k)) $((_h_base + 200 + _h_k)); do
                    _h_port_free "$_h_p" || _h_free=0
                done
                _h_k=$((_h_k + 1))
            done
            [ $_h_free = 1 ] && break
            _h_try=$((_h_try + 1))
            if [ $_h_try -gt 50 ]; then _h_say "no free ports"; hosts_down; return 1; fi
        done
        _h_k=1
        while [ "$_h_k" -le "$HOSTS_N" ]; do
            echo $((_h_base + _h_k)) >"$HOSTS_DIR/h$_h_k.client"
            echo $((_h_base + 100 + _h_k)) >"$HOSTS_DIR/h$_h_k.cluster"
            echo $((_h_base + 200 + _h_k)) >"$HOSTS_DIR/h$_h_k.http"
            _h_k=$((_h_k + 1))
        done
    fi
    HOSTS_URLS=""
    _h_k=1
    while [ "$_h_k" -le "$HOSTS_N" ]; do
        _h_conf "$_h_k"
        _h_u="nats://$(_h_addr "$_h_k"):$(_h_port "$_h_k" client)"
        eval "HOST_URL_$_h_k=\$_h_u"
        export "HOST_URL_$_h_k"
        if [ $HOSTS_MODE = netns ]; then
            eval "HOST_NETNS_$_h_k=/run/netns/\$HOSTS_UNIQ-h\$_h_k"
            export "HOST_NETNS_$_h_k"
        fi
        HOSTS_URLS="$HOSTS_URLS${HOSTS_URLS:+,}$_h_u"
        _h_launch "$_h_k"
        _h_k=$((_h_k + 1))
    done
    export HOSTS_URLS HOSTS_MODE HOSTS_N HOSTS_DIR HOSTS_UNIQ HOSTS_NET
    if ! _h_wait_routes hosts_up; then
        hosts_down
        return 1
    fi
    return 0
}

on_host() {
    _h_k=${1:?on_host: which host}
    shift
    if [ -z "$HOSTS_DIR" ]; then _h_say "on_host: no hosts (hosts_up first)"; return 2; fi
    if [ "$HOSTS_MODE" = netns ]; then
        # shellcheck disable=SC2016 # expanded by that sh
        set -- ip netns exec "$HOSTS_UNIQ-h$_h_k" unshare --uts sh -c \
            'echo "$0" >/proc/sys/kernel/hostname && exec "$@"' "$HOSTS_UNIQ-h$_h_k" "$@"
    fi
    # In a subshell (a background job, $(...)) exec: the program takes the
    # subshell's pid.  In the shell that sourced this, run it as a child.
    if [ "${_h_exec:-0}" = 1 ] || [ "$(exec sh -c 'echo $PPID')" != "$$" ]; then
        LAHJA_HOST_ID="h$_h_k-$HOSTS_UNIQ" exec "$@"
    fi
    LAHJA_HOST_ID="h$_h_k-$HOSTS_UNIQ" "$@"
}

hosts_exec() {
    _h_exec=1
    on_host "$@"
}

server_kill() {
    _h_pid=$(cat "$HOSTS_DIR/h$1.pid" 2>/dev/null) || { _h_say "server_kill: no host $1"; return 2; }
    kill -KILL "$_h_pid" 2>/dev/null || :
    : >"$HOSTS_DIR/h$1.down"
    _h_reap "$_h_pid"
}

server_start() {
    [ -f "$HOSTS_DIR/h$1.conf" ] || { _h_say "server_start: no host $1"; return 2; }
    _h_launch "$1"
    _h_wait_routes "server_start $1"
}

host_cut() {
    [ -f "$HOSTS_DIR/h$1.conf" ] || { _h_say "host_cut: no host $1"; return 2; }
    if [ "$HOSTS_MODE" = netns ]; then
        ip -n "$HOSTS_UNIQ-sw" link set "h$1" down || return 1
    else
        kill -STOP "$(cat "$HOSTS_DIR/h$1.pid")" || return 1
    fi
    : >"$HOSTS_DIR/h$1.cut"
}

host_restore() {
    [ -f "$HOSTS_DIR/h$1.conf" ] || { _h_say "host_restore: no host $1"; return 2; }
    if [ "$HOSTS_MODE" = netns ]; then
        ip -n "$HOSTS_UNIQ-sw" link set "h$1" up || return 1
    else
        kill -CONT "$(cat "$HOSTS_DIR/h$1.pid")" || return 1
    fi
    rm -f "$HOSTS_DIR/h$1.cut"
    _h_wait_routes "host_restore $1"
}

hosts_down() {
    [ -n "$HOSTS_DIR" ] || return 0
    # Never stopped half-way by the caller's set -e.
    case $- in *e*) _h_e=1; set +e ;; *) _h_e=0 ;; esac
    for _h_f in "$HOSTS_DIR"/h*.pid; do
        [ -f "$_h_f" ] || continue
        _h_pid=$(cat "$_h_f")
        kill -KILL "$_h_pid" 2>/dev/null && _h_reap "$_h_pid"
        rm -f "$_h_f"
    done
    _h_netns_teardown
    rm -rf "$HOSTS_DIR"
    HOSTS_DIR=""
    HOSTS_N=0
    [ "$_h_e" = 1 ] && set -e
    return 0
}
