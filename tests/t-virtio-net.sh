#!/bin/bash
# virtio-net end to end: the guest-tests/net-*.elf kernels against each backend, the host
# side played by tests/net-helpers/nethelp.py.
#   tests/t-virtio-net.sh [--vmm kvmbox|qemu] [scenario...]   (or KVMBOX_VMM=qemu: QEMU TCG)
# Scenarios (default all):
#   user        --net user with hostfwd (QEMU: -netdev user): DHCP (10.0.2.15, router
#               10.0.2.2, DNS 10.0.2.3), a DNS A query answered by a resolver this script runs
#               on 127.0.0.1 (resolv.conf bind-mounted in a mount namespace), UDP to an echo
#               server on the host's loopback, ARP/ping of the gateway, TCP SYN to a listening
#               and a closed host port; then hostfwd=udp echo through the guest and
#               hostfwd=tcp connections the guest accepts (greeting) or refuses (RST).
#               MRG_RXBUF with 512-byte buffers, MSI-X, EVENT_IDX.
#   user-nomrg  the same without MRG_RXBUF, polling, tx header in its own descriptor; no
#               serving.
#   bridge      --net bridge=BR (QEMU: a tap on BR): the guest pings the bridge's address with
#               every payload size 0..1472 (STEP) and sends UDP to an echo server there; the
#               host pings the guest with 42 sizes up to 1472; payloads checked both ways;
#               400 echo answers against a receive queue nobody reads (overrun, recovery);
#               then the host's side goes to MTU 9000 and sends 4028- and 9000-byte IP
#               packets: a device that announced MTU 1500 (VIRTIO_NET_F_MTU) must drop them,
#               and the NIC must still answer pings.
#               MRG_RXBUF with 256-byte buffers.
#   tap         --net tap,ifname=TAP on the same kind of bridge: the same checks, without
#               MRG_RXBUF, polling, EVENT_IDX, 64-entry queues, CSUM + GUEST_CSUM (checksum
#               offload both ways where the device offers it).
#   two-nics    a disk, then --net user, then --net bridge=BR: the bridge checks (fewer sizes)
#               through the second NIC, both NICs started, distinct MACs.
#   segment     two VMs on --net segment=A exchange 200 datagrams both ways, every byte
#               checked; a third on segment=B must see none of their frames (QEMU: -netdev
#               dgram pairs on 127.0.0.1).
#   reboot      net-reboot.elf with a disk and --net user: a reset through 0xCF9 with frames
#               in flight; on the second boot the NIC works again (same MAC and lease, MSI-X).
#   link        net-link.elf on --net user: the host takes the link down and up again while
#               the guest runs (kvmbox link NAME 0 down|up; QEMU: the monitor's set_link); the
#               guest sees each change by a configuration interrupt and its status field, and
#               gets no answers while the link is down; kvmbox's info shows the link and the
#               dropped frames, and a bad NIC or state is refused.
#   evil        net-evil.elf on --net user: malformed tx chains, hostile rx buffers, garbage
#               floods; the VMM stays up and the NIC answers after each case (QEMU: lenient=1).
# Everything runs in network namespaces this script creates (named kvnt<PID>-*), deleted on
# exit: nothing is sent anywhere but their loopbacks, bridges and taps. Needs root.
# Environment: BUILD, KVMBOX, STEP (ping size step for bridge/tap, default 1: every size),
# KEEP=1 (keep the VMs' outputs).
# No limit guesses the host's speed (tests/lib/progress.sh): a VM runs until it ends, or until
# neither it nor the host side (helper and probe logs) has printed anything for 120 s while
# the VMM used no CPU, or it printed nothing while using 600 CPU-seconds, or for 1800 s in
# all. The guests' own windows for the host or a peer to show up (serve_secs, listen_secs,
# wait_secs) are an hour: the host ends them (DONE, q) when it is done.
set -u
cd "$(dirname "$0")/.." || exit 1
VMM=${KVMBOX_VMM:-kvmbox}
if [ "${1:-}" = --vmm ]; then
    VMM=${2:-kvmbox}
    shift 2
fi
SCENARIOS=${*:-user user-nomrg bridge tap two-nics segment reboot link evil}
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
GT=$BUILD/guest-tests
SERVE=3600
VM_LIMITS=(--quiet 120 --cpu-quiet 600 --cap 1800)
STEP=${STEP:-1}
HELP=tests/net-helpers/nethelp.py
NSP=kvnt$$
MAC=52:54:00:12:34:56
fails=0
# QEMU 7.2 leaves num_buffers 0 without MRG_RXBUF (the spec says 1): net_open_nic() accepts
# that with lenient=1.
LENIENT=""
NO_REBOOT=1 # QEMU: -no-reboot (the reboot scenario clears it)
VM_NAME=""  # kvmbox: --name (the link scenario sets it); QEMU: a monitor on $T/VM_NAME.mon

skip_all() {
    echo "SKIP: virtio-net ($VMM): $1"
    exit 77
}
[ "$(id -u)" = 0 ] || skip_all "needs root (network namespaces)"
for tool in ip python3 unshare; do
    command -v $tool >/dev/null || skip_all "$tool is not installed"
done
if [ "$VMM" = qemu ]; then
    command -v qemu-system-x86_64 >/dev/null || skip_all "qemu-system-x86_64 is not installed"
    LENIENT=lenient=1
else
    [ -c /dev/kvm ] || skip_all "no /dev/kvm on this host"
    "$KVMBOX" run --help 2>&1 | grep -q -- '--net' || skip_all "$KVMBOX has no --net"
fi
for k in net-user net-bridge net-segment net-evil net-link; do
    [ -f "$GT/$k.elf" ] || { echo "FAIL: virtio-net: $GT/$k.elf is not built (make guest-tests)"; exit 1; }
done

T=$(mktemp -d /tmp/kvmbox-vnet.XXXXXX)
. tests/lib/progress.sh
NAMESPACES=()
BG=()
cleanup() {
    local p ns
    for p in "${BG[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${BG[@]}"; do
        wait "$p" 2>/dev/null
    done
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
    if [ -n "${KEEP:-}" ]; then
        echo "outputs kept in $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "nameserver 127.0.0.1" >"$T/resolv.conf"
export KVMBOX_RUNTIME_DIR=$T/run

bad() { # bad NAME WHY
    echo "FAIL: virtio-net/$1 ($VMM): $2"
    fails=$((fails + 1))
}

new_ns() { # new_ns NAME: a namespace with its loopback up, named in NS
    NS=$NSP-$1
    ip netns add "$NS" || return 1
    NAMESPACES+=("$NS")
    ip -n "$NS" link set lo up
}

# in_ns NS CMD...: CMD inside NS with /etc/resolv.conf pointing at 127.0.0.1 (its own mount
# namespace), so libslirp's DNS forwarding asks our resolver.
in_ns() {
    local ns=$1
    shift
    # shellcheck disable=SC2016 # expanded by the inner sh
    ip netns exec "$ns" unshare -m --propagation private \
        sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/resolv.conf" "$@"
}

# vm_cmd KERNEL CMDLINE NET...: the VMM command line in array CMD. NET: user:HOSTFWDS
# (comma-separated hostfwd=... items) | tap:IFNAME | bridge:BR | segment:NAME:LPORT:RPORT
# (QEMU: a dgram netdev from 127.0.0.1:LPORT to RPORT); each optionally :mac=MAC at the end;
# or disk:PATH, a raw virtio-blk disk.
vm_cmd() {
    local kernel=$GT/$1.elf cmdline=$2 spec kind a b c mac n=0 mon=none
    [ -n "$VM_NAME" ] && mon="unix:$T/$VM_NAME.mon,server=on,wait=off"
    shift 2
    if [ "$VMM" = kvmbox ]; then
        CMD=("$KVMBOX" run --kernel "$kernel" --mem 64M --cmdline "$cmdline"
             ${VM_NAME:+--name "$VM_NAME"})
    else
        # shellcheck disable=SC2054 # the commas are QEMU's
        CMD=(qemu-system-x86_64 -accel tcg -M q35 -m 64M -nographic ${NO_REBOOT:+-no-reboot} -nodefaults -no-user-config
             -serial stdio -monitor "$mon" -display none -device isa-debug-exit,iobase=0xf4,iosize=4
             -kernel "$kernel" -append "$cmdline")
    fi
    for spec in "$@"; do
        if [ "${spec%%:*}" = disk ]; then
            if [ "$VMM" = kvmbox ]; then
                CMD+=(--disk "${spec#disk:},format=raw,serial=rw$n")
            else
                CMD+=(-drive "file=${spec#disk:},if=none,id=d$n,format=raw" -device "virtio-blk-pci,drive=d$n,serial=rw$n")
            fi
            n=$((n + 1))
            continue
        fi
        mac=${spec##*:mac=}
        [ "$mac" = "$spec" ] && mac=$MAC
        spec=${spec%:mac=*}
        kind=${spec%%:*} a="" b="" c=""
        if [ "$kind" = segment ]; then
            IFS=: read -r kind a b c <<<"$spec"
        elif [ "$kind" != "$spec" ]; then
            a=${spec#*:}
        fi
        if [ "$VMM" = kvmbox ]; then
            case $kind in
            user) CMD+=(--net "user${a:+,$a},mac=$mac") ;;
            tap) CMD+=(--net "tap,ifname=$a,mac=$mac") ;;
            bridge) CMD+=(--net "bridge=$a,mac=$mac") ;;
            segment) CMD+=(--net "segment=$a,mac=$mac") ;;
            esac
        else
            case $kind in
            user) CMD+=(-netdev "user,id=n$n${a:+,$a}") ;;
            tap | bridge) CMD+=(-netdev "tap,id=n$n,ifname=$a,script=no,downscript=no") ;;
            segment) CMD+=(-netdev "dgram,id=n$n,local.type=inet,local.host=127.0.0.1,local.port=$b,remote.type=inet,remote.host=127.0.0.1,remote.port=$c") ;;
            esac
            CMD+=(-device "virtio-net-pci,netdev=n$n,mac=$mac")
        fi
        n=$((n + 1))
    done
}

# start_vm NAME NS STDIN KERNEL CMDLINE NET...: runs the VM in the background under the
# progress limits (output in $T/NAME.out; what the host side prints counts as progress too,
# and so does what the VMs in WATCH print); its PID (the watchdog's) in VMPID.
WATCH=()
start_vm() {
    local name=$1 ns=$2 input=$3 w watch=()
    shift 3
    vm_cmd "$@"
    for w in "$T/helper.log" "$T/probe.out" "${WATCH[@]}"; do watch+=(--watch "$w"); done
    date +%s.%N >"$T/$name.start"
    in_ns "$ns" "$PROGRESS" run --name "virtio-net/$name" "${VM_LIMITS[@]}" "${watch[@]}" \
        -- "${CMD[@]}" <"$input" >"$T/$name.out" 2>&1 &
    VMPID=$!
    BG+=("$VMPID")
}

# wait_line NAME PATTERN PID: until the VM prints PATTERN (0) or ends or stops making
# progress (1).
wait_line() {
    wait_output --pid "$3" "${VM_LIMITS[@]}" "$T/$1.out" "$2"
}

# end_vm NAME PID: waits for the VM; 0 if it ended with status 1 and a passing SUMMARY.
end_vm() {
    local name=$1 rc out why="" secs
    wait "$2"
    rc=$?
    secs=$(awk -v s="$(cat "$T/$name.start")" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    out=$(tr -d '\r' <"$T/$name.out")
    if [ $rc -ne 1 ]; then
        why="exit status $rc, expected 1"
    elif grep -q '^FAIL:' <<<"$out"; then
        why=$(grep '^FAIL:' <<<"$out" | head -1)
    elif ! grep -qE '^SUMMARY: pass=[1-9][0-9]* fail=0$' <<<"$out"; then
        why="no passing SUMMARY line"
    fi
    if [ -n "$why" ]; then
        grep -v '^PASS' <<<"$out" | grep -v -E '^(SeaBIOS|iPXE|Press Ctrl-B|Booting from)' | tail -20 | sed 's/^/    | /'
        bad "$name" "$why"
        return 1
    fi
    echo "PASS: virtio-net/$name ($VMM, ${secs}s, $(grep -c '^PASS:' <<<"$out") guest checks)"
}

# probe NAME NS ARGS...: a nethelp.py check from inside NS; its ok:/FAILED: lines become
# PASS:/FAIL: lines. Its own waits are per packet (nethelp.py); the watchdog is for a hang.
probe() {
    local name=$1 ns=$2 line
    shift 2
    ip netns exec "$ns" "$PROGRESS" run --name "probe $1" --quiet 300 --cap 1800 \
        -- python3 "$HELP" "$@" >"$T/probe.out" 2>&1
    while IFS= read -r line; do
        case "$line" in
        ok:*) echo "PASS: virtio-net/$name ($VMM):${line#ok:}" ;;
        FAILED:*) bad "$name" "${line#FAILED: }" ;;
        *) echo "    | $line" ;;
        esac
    done <"$T/probe.out"
}

start_helper() { # start_helper NS ARGS...: nethelp.py serve in NS; waits until it is bound
    local ns=$1 i
    shift
    rm -f "$T/ready"
    ip netns exec "$ns" python3 "$HELP" serve --ready "$T/ready" "$@" >>"$T/helper.log" 2>&1 &
    HELPER=$!
    BG+=("$HELPER")
    poll_until 120 test -f "$T/ready"
}

stop() { # stop PID
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

user_common="mac=$MAC dns_name=kvmbox-test.example dns_expect=192.0.2.77 udp_host_port=7001 tcp_host_port=7002 tcp_host_closed=7003"

scenario_user() {
    local name=user ns
    if ! new_ns user; then
        bad $name "cannot create a network namespace"
        return
    fi
    ns=$NS
    : >"$T/helper.log"
    start_helper "$ns" --dns 127.0.0.1:53 --name kvmbox-test.example=192.0.2.77 --udp-echo 127.0.0.1:7001 \
        --tcp-listen 127.0.0.1:7002 --log "$T/helper.log" || { bad $name "the host helper did not start"; return; }
    start_vm $name "$ns" /dev/null net-user "$user_common rxbuf=512 irq=1 event_idx=1 udp_echo_port=9001 tcp_port=9002 \
tcp_rst_port=9003 udp_expect=4 tcp_expect=1 tcp_rst_expect=1 serve_secs=$SERVE" \
        "user:hostfwd=udp:127.0.0.1:8001-:9001,hostfwd=tcp:127.0.0.1:8002-:9002,hostfwd=tcp:127.0.0.1:8003-:9003"
    local vm=$VMPID
    if wait_line $name '^READY serve' "$vm"; then
        probe $name "$ns" udp-probe 127.0.0.1 8001 4
        probe $name "$ns" tcp-accept 127.0.0.1 8002
        probe $name "$ns" tcp-refuse 127.0.0.1 8003
        probe $name "$ns" send 127.0.0.1 8001 DONE
    fi
    end_vm $name "$vm"
    if grep -q 'dns: query for kvmbox-test.example .*answered' "$T/helper.log"; then
        echo "PASS: virtio-net/$name ($VMM): the guest's DNS query reached the resolver on 127.0.0.1 (resolv.conf)"
    else
        bad $name "the DNS query never reached the resolver on 127.0.0.1"
    fi
    stop "$HELPER"
    ip netns del "$ns"
}

scenario_user_nomrg() {
    local name=user-nomrg ns
    if ! new_ns nomrg; then
        bad $name "cannot create a network namespace"
        return
    fi
    ns=$NS
    start_helper "$ns" --dns 127.0.0.1:53 --name kvmbox-test.example=192.0.2.77 --udp-echo 127.0.0.1:7001 \
        --tcp-listen 127.0.0.1:7002 --log "$T/helper.log" || { bad $name "the host helper did not start"; return; }
    start_vm $name "$ns" /dev/null net-user "$user_common mrg=0 irq=0 split=1 $LENIENT" user
    end_vm $name "$VMPID"
    stop "$HELPER"
    ip netns del "$ns"
}

# bridge_ns NAME: a namespace (in NS) with bridge br0 at 10.0.3.1/24.
bridge_ns() {
    new_ns "$1" &&
        ip -n "$NS" link add br0 type bridge &&
        ip -n "$NS" addr add 10.0.3.1/24 dev br0 &&
        ip -n "$NS" link set br0 up
}

add_tap() { # add_tap NS IFNAME: a tap on br0
    ip -n "$1" tuntap add "$2" mode tap &&
        ip -n "$1" link set "$2" master br0 &&
        ip -n "$1" link set "$2" up
}

# scenario_l2 NAME KIND OPTIONS: the bridge checks through backend KIND (bridge or tap).
scenario_l2() {
    local name=$1 kind=$2 opts=$3 ns net sizes
    if [ ! -c /dev/net/tun ]; then
        echo "SKIP: virtio-net/$name ($VMM): no /dev/net/tun"
        return
    fi
    if ! bridge_ns "$name"; then
        bad "$name" "cannot set up the namespace's bridge"
        return
    fi
    ns=$NS
    start_helper "$ns" --udp-echo 10.0.3.1:7001 --log "$T/helper.log" || { bad "$name" "the helper did not start"; return; }
    if [ "$kind" = bridge ] && [ "$VMM" = kvmbox ]; then
        net=bridge:br0
    else
        add_tap "$ns" kvnt-tap0 || { bad "$name" "cannot create a tap"; return; }
        net=tap:kvnt-tap0
    fi
    sizes="$(seq 0 37 1472 | tr '\n' ' ')1471 1472"
    start_vm "$name" "$ns" /dev/null net-bridge "ip=10.0.3.2 peer=10.0.3.1 udp_port=7001 step=$STEP burst=400 \
ping_expect=42 done_port=9000 serve_secs=$SERVE $opts $LENIENT" "$net"
    local vm=$VMPID
    if wait_line "$name" '^READY serve' "$vm"; then
        # shellcheck disable=SC2086 # one argument per size
        probe "$name" "$ns" ping 10.0.3.2 $sizes
        # Jumbo frames toward the guest: our side of the link goes to MTU 9000, the guest's
        # stays 1500; a device that announced MTU 1500 must drop them. Then it still works.
        for port in $(ip -n "$ns" -o link show master br0 | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
            ip -n "$ns" link set "$port" mtu 9000
        done
        ip -n "$ns" link set br0 mtu 9000
        probe "$name" "$ns" blast 10.0.3.2 9001 4000 3
        probe "$name" "$ns" blast 10.0.3.2 9001 8972 3
        probe "$name" "$ns" ping 10.0.3.2 0 1472
        probe "$name" "$ns" send 10.0.3.2 9000 DONE
    fi
    end_vm "$name" "$vm"
    stop "$HELPER"
    ip netns del "$ns"
}

# Two NICs after a disk: user-mode NAT first, then a tap on the namespace's bridge; the
# bridge checks run through the second NIC (its own MSI-X vectors and BARs).
scenario_two_nics() {
    local name=two-nics ns vm sizes
    if [ ! -c /dev/net/tun ]; then
        echo "SKIP: virtio-net/$name ($VMM): no /dev/net/tun"
        return
    fi
    if ! bridge_ns two; then
        bad $name "cannot set up the namespace's bridge"
        return
    fi
    ns=$NS
    start_helper "$ns" --udp-echo 10.0.3.1:7001 --log "$T/helper.log" || { bad $name "the helper did not start"; return; }
    local net=bridge:br0
    if [ "$VMM" = qemu ]; then
        add_tap "$ns" kvnt-tap1 || { bad $name "cannot create a tap"; return; }
        net=tap:kvnt-tap1
    fi
    truncate -s 1M "$T/disk.img"
    start_vm $name "$ns" /dev/null net-bridge "nics=2 nic=1 ip=10.0.3.2 peer=10.0.3.1 udp_port=7001 step=61 \
ping_expect=5 serve_secs=$SERVE $LENIENT" "disk:$T/disk.img" "user:mac=52:54:00:12:34:57" "$net"
    vm=$VMPID
    sizes="0 1 100 1000 1472"
    if wait_line $name '^READY serve' "$vm"; then
        # shellcheck disable=SC2086 # one argument per size
        probe $name "$ns" ping 10.0.3.2 $sizes
        probe $name "$ns" send 10.0.3.2 9000 DONE
    fi
    end_vm $name "$vm"
    stop "$HELPER"
    ip netns del "$ns"
}

scenario_segment() {
    local name=segment ns a b q
    if ! new_ns seg; then
        bad $name "cannot create a network namespace"
        return
    fi
    ns=$NS
    mkfifo "$T/quiet.in"
    sleep 1000000 >"$T/quiet.in" & # holds the console open until stopped below
    local holder=$!
    BG+=("$holder")
    # It hears nothing (that is the check) while the other two talk: their output is its progress.
    WATCH=("$T/segment-send.out" "$T/segment-recv.out")
    start_vm segment-quiet "$ns" "$T/quiet.in" net-segment "role=quiet ip=10.0.4.3 peer=10.0.4.1 listen_secs=$SERVE" \
        "segment:$NSP-b:7103:7104:mac=52:54:00:00:04:03"
    WATCH=()
    q=$VMPID
    if ! wait_line segment-quiet '^READY quiet' "$q"; then
        end_vm segment-quiet "$q"
        stop "$holder"
        return
    fi
    start_vm segment-recv "$ns" /dev/null net-segment "role=recv ip=10.0.4.2 peer=10.0.4.1 count=200 wait_secs=$SERVE" \
        "segment:$NSP-a:7102:7101:mac=52:54:00:00:04:02"
    b=$VMPID
    start_vm segment-send "$ns" /dev/null net-segment "role=send ip=10.0.4.1 peer=10.0.4.2 count=200 wait_secs=$SERVE" \
        "segment:$NSP-a:7101:7102:mac=52:54:00:00:04:01"
    a=$VMPID
    end_vm segment-send "$a"
    end_vm segment-recv "$b"
    printf 'q' >"$T/quiet.in"
    end_vm segment-quiet "$q"
    stop "$holder"
    ip netns del "$ns"
}

# A guest reset (0xCF9) with frames in flight: on the second boot (a disk remembers) the NIC
# must work again, by MSI-X, with the same MAC and lease.
scenario_reboot() {
    local name=reboot ns
    if ! new_ns reboot; then
        bad $name "cannot create a network namespace"
        return
    fi
    ns=$NS
    truncate -s 1M "$T/reboot.img"
    NO_REBOOT="" start_vm $name "$ns" /dev/null net-reboot "irq=1 $LENIENT" "disk:$T/reboot.img" user
    if end_vm $name "$VMPID"; then
        if grep -q '^boot 1: [0-9]* frames sent without waiting; resetting' "$T/$name.out"; then
            echo "PASS: virtio-net/$name ($VMM): the first boot reset with frames in flight"
        else
            bad $name "the first boot did not reach the reset"
        fi
    fi
    ip netns del "$ns"
}

# set_link NAME up|down: the first NIC's link, through kvmbox's API or QEMU's monitor.
set_link() {
    if [ "$VMM" = kvmbox ]; then
        "$KVMBOX" link "$1" 0 "$2"
    else
        python3 - "$T/$1.mon" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"set_link n0 " + (b"on" if sys.argv[2] == "up" else b"off") + b"\n")
time.sleep(0.5)
s.close()
PY
    fi
}

nic_json() { # nic_json NAME FIELD: a field of the first NIC in kvmbox info --json
    "$KVMBOX" info "$1" --json | python3 -c 'import json, sys
n = json.load(sys.stdin)["nics"][0]
f = sys.argv[1].split(".")
print(n[f[0]] if len(f) == 1 else n[f[0]][f[1]])' "$2"
}

scenario_link() {
    local name=link ns vm=lnk$$ out rc
    if ! new_ns link; then
        bad $name "cannot create a network namespace"
        return
    fi
    ns=$NS
    VM_NAME=$vm start_vm $name "$ns" /dev/null net-link "irq=1 wait_secs=$SERVE $LENIENT" user
    if wait_line $name '^LINK-WAIT down' "$VMPID"; then
        if [ "$VMM" = kvmbox ]; then
            out=$("$KVMBOX" link $vm 3 down 2>&1); rc=$?
            if [ $rc = 1 ] && grep -q "no NIC 3" <<<"$out"; then
                echo "PASS: virtio-net/$name ($VMM): a NIC the VM does not have is refused: $out"
            else
                bad $name "link on NIC 3: status $rc, '$out'"
            fi
            out=$("$KVMBOX" link $vm 0 sideways 2>&1); rc=$?
            if [ $rc = 2 ] && grep -q "usage" <<<"$out"; then
                echo "PASS: virtio-net/$name ($VMM): a state other than up or down is refused (status 2)"
            else
                bad $name "link state 'sideways': status $rc, '$out'"
            fi
        fi
        set_link $vm down || bad $name "setting the link down failed"
        if wait_line $name '^LINK-WAIT up' "$VMPID"; then
            if [ "$VMM" = kvmbox ]; then
                local link drop
                link=$(nic_json $vm link) drop=$(nic_json $vm tx.dropped)
                if [ "$link" = down ] && [ "${drop:-0}" -ge 3 ]; then
                    echo "PASS: virtio-net/$name ($VMM): info shows link down and the guest's $drop frames dropped"
                else
                    bad $name "info while down: link '$link', tx dropped '$drop' (want down, >= 3)"
                fi
            fi
            # Up again by MAC this time (kvmbox), as virsh domif-setlink takes it.
            if [ "$VMM" = kvmbox ]; then
                "$KVMBOX" link $vm "$MAC" up || bad $name "setting the link up by MAC failed"
            else
                set_link $vm up
            fi
        fi
    fi
    if end_vm $name "$VMPID"; then
        :
    fi
    ip netns del "$ns"
}

scenario_evil() {
    local name=evil ns args="indirect=1 $LENIENT"
    if ! new_ns evil; then
        bad $name "cannot create a network namespace"
        return
    fi
    ns=$NS
    start_vm $name "$ns" /dev/null net-evil "$args" user
    end_vm $name "$VMPID"
    ip netns del "$ns"
}

for s in $SCENARIOS; do
    case $s in
    user | segment | reboot | link | evil) "scenario_$s" ;;
    user-nomrg) scenario_user_nomrg ;;
    two-nics) scenario_two_nics ;;
    bridge) scenario_l2 bridge bridge "rxbuf=256 irq=1" ;;
    tap) scenario_l2 tap tap "mrg=0 irq=0 event_idx=1 qsize=64 csum=1" ;;
    *) bad "$s" "unknown scenario" ;;
    esac
done
[ $fails -eq 0 ]
