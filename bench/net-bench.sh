#!/bin/bash
# virtio-net benchmark (not a test): guest-tests/net-bench.elf under kvmbox and under QEMU
# (-accel kvm, q35, virtio-net-pci, userspace virtio-net unless VHOST=1) with the same kind of
# backend, side by side:
#   bridge  a bridge br0 (10.0.3.1/24) in a network namespace; kvmbox --net bridge=br0 makes
#           its own tap, QEMU gets a tap already on br0 (-netdev tap);
#   user    the user-mode NAT (libslirp in both): the guest sends to 10.0.2.2, which is the
#           namespace's 127.0.0.1; the host floods the guest through hostfwd=udp.
# Per test (tx-1500, tx-64: the guest sends 1514- and 60-byte frames as fast as the queue takes
# them; rx-1500, rx-64: the host floods the guest with UDP from a Python sender): kpps and
# MB/s as the guest counts them, what the host side counted (kpps received by its sink for tx,
# sent by its flooder for rx), and the VMM's CPU time per frame in microseconds: io-us from
# its threads other than the vCPUs (the device work), all-us from all of them (on an emulating
# KVM the vCPU threads' time is mostly the guest's), sampled from /proc/PID/task at the guest's
# BENCH-START and BENCH lines; then the kvmbox/QEMU ratios. The best of ROUNDS alternating
# runs per VMM is shown.
# Environment: KVMBOX, BUILD, SECS (per test, default 5), ROUNDS (default 2), BACKENDS
# ("bridge user"), IRQ (1: the guest halts until rx interrupts, default; 0: it polls),
# QEMU_ACCEL (kvm, or tcg where KVM cannot run QEMU), VHOST (1: QEMU's tap uses vhost-net).
# Everything runs in network namespaces made here and deleted at the end; needs root.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
export KVMBOX=${KVMBOX:-$BUILD/kvmbox}
export GT=$BUILD/guest-tests
export SECS=${SECS:-5} ROUNDS=${ROUNDS:-2} IRQ=${IRQ:-1} QEMU_ACCEL=${QEMU_ACCEL:-kvm} VHOST=${VHOST:-0}
export TAP=kvnb-tap0
BACKENDS=${BACKENDS:-bridge user}
[ "$(id -u)" = 0 ] || { echo "net-bench: needs root (network namespaces)" >&2; exit 1; }
[ -x "$KVMBOX" ] || { echo "net-bench: $KVMBOX is not built" >&2; exit 1; }
[ -f "$GT/net-bench.elf" ] || { echo "net-bench: $GT/net-bench.elf is not built (make guest-tests)" >&2; exit 1; }
"$KVMBOX" run --help 2>&1 | grep -q -- '--net' || { echo "net-bench: $KVMBOX has no --net" >&2; exit 1; }

NSP=kvnb$$
NAMESPACES=()
cleanup() {
    local ns
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "net-bench: best of $ROUNDS alternating runs per VMM, $SECS s per test, guest rx by" \
    "$([ "$IRQ" = 1 ] && echo interrupts || echo polling); QEMU -accel $QEMU_ACCEL$([ "$VHOST" = 1 ] && echo ', vhost-net');" \
    "$(nproc) CPUs, kernel $(uname -r), $(date +%F)"
for backend in $BACKENDS; do
    ns=$NSP-$backend
    ip netns add "$ns" || exit 1
    NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up
    if [ "$backend" = bridge ]; then
        ip -n "$ns" link add br0 type bridge &&
            ip -n "$ns" addr add 10.0.3.1/24 dev br0 &&
            ip -n "$ns" link set br0 up &&
            ip -n "$ns" tuntap add "$TAP" mode tap &&
            ip -n "$ns" link set "$TAP" master br0 &&
            ip -n "$ns" link set "$TAP" up || exit 1
    fi
    echo
    ip netns exec "$ns" python3 tests/net-helpers/netbench.py "$backend"
    ip netns del "$ns"
done
echo
echo "kpps and MB/s: as the guest counted (MB/s of Ethernet frames); host: kpps its sink received (tx)"
echo "or its flooder sent (rx); io-us/all-us: VMM CPU microseconds per frame, threads other than"
echo "the vCPUs / all threads; k/q = kvmbox / QEMU (kpps; io-us)"
