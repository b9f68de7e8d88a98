#!/bin/bash
# virtio-blk across a guest reset (guest-tests/virtio-reboot.c): the first boot leaves writes
# in flight and resets through 0xCF9; kvmbox rebuilds the KVM VM, and on the second boot the
# data written before the reset must be there and completions must raise MSI-X interrupts
# again (irqfds, MSI routes and ioeventfds registered on the new VM). Afterwards the qcow2
# image must be clean. KVMBOX_VMM=qemu runs the same kernel under QEMU TCG (validation).
# The VM runs until it ends, or prints nothing while its VMM uses no CPU for 120 s, or prints
# nothing while using 600 CPU-seconds, or for 1200 s in all (tests/lib/progress.sh).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
VMM=${KVMBOX_VMM:-kvmbox}
K=$BUILD/guest-tests/virtio-reboot.elf
if [ "$VMM" = kvmbox ] && [ ! -c /dev/kvm ]; then
    echo "SKIP: virtio-reboot: no /dev/kvm on this host"
    exit 77
fi
[ -f "$K" ] || { echo "FAIL: virtio-reboot: $K is not built"; exit 1; }
T=$(mktemp -d /tmp/kvmbox-vreboot.XXXXXX)
trap 'rm -rf "$T"' EXIT
. tests/lib/progress.sh
LIMITS=(--quiet 120 --cpu-quiet 600 --cap 1200)
fails=0
for fmt in raw qcow2; do
    qemu-img create -q -f "$fmt" "$T/d.$fmt" 4M
    if [ "$VMM" = kvmbox ]; then
        progress_run --name "virtio-reboot/$fmt" "${LIMITS[@]}" -- "$KVMBOX" run --kernel "$K" --mem 64M \
            --disk "$T/d.$fmt,format=$fmt,serial=rw0" </dev/null >"$T/out" 2>&1
    else
        progress_run --name "virtio-reboot/$fmt" "${LIMITS[@]}" -- qemu-system-x86_64 -accel tcg -M q35 -m 64M -nographic -no-user-config \
            -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$K" -serial stdio -monitor none \
            -display none -nodefaults -drive "file=$T/d.$fmt,if=none,id=d0,format=$fmt" \
            -device virtio-blk-pci,drive=d0,serial=rw0 </dev/null >"$T/out" 2>&1
    fi
    rc=$?
    if [ $rc -eq 1 ] && grep -q "SUMMARY: pass=5 fail=0" "$T/out" && ! grep -q "^FAIL" "$T/out" &&
       grep -q "boot 1: 16 writes in flight" "$T/out"; then
        echo "PASS: virtio-reboot/$fmt ($VMM): writes in flight at a reset, data and MSI-X interrupts after it"
    else
        echo "FAIL: virtio-reboot/$fmt ($VMM): status $rc"
        grep -E "FAIL|SUMMARY" "$T/out" | sed 's/^/    | /'
        fails=$((fails + 1))
    fi
    if [ "$fmt" = qcow2 ]; then
        if qemu-img check -q "$T/d.$fmt"; then echo "PASS: virtio-reboot/$fmt ($VMM): qemu-img check is clean"
        else echo "FAIL: virtio-reboot/$fmt ($VMM): qemu-img check reports problems"; fails=$((fails + 1)); fi
    fi
done
[ $fails -eq 0 ]
