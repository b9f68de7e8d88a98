#!/bin/bash
# A Debian system booted from its disk through firmware: a root file system debootstrapped
# into a directory (minbase, the cloud kernel, systemd, Debian's own initramfs) and packed by
# mkfs.ext4 -d into the ext4 partition of an MBR disk with GRUB 2 (tests/fw-images.sh:
# fw_debian_rootfs_disk; no loop devices, no mounts). SeaBIOS boots GRUB, GRUB loads /vmlinuz
# and /initrd.img with root=/dev/vda1 console=ttyS0, the initramfs finds the virtio-blk disk,
# systemd starts a getty on the serial console:
#   - the console shows "kvmbox-guest login:" (and systemd-logind has started);
#   - the ACPI power button powers the system off: the VMM ends with status 0.
# QEMU (-M pc -accel tcg, SeaBIOS, virtio-blk) boots the same image, which proves the image
# itself; under QEMU the power button is the monitor's system_powerdown. kvmbox boots it
# daemonized (`kvmbox run --daemonize --disk`) and powers it off with `kvmbox shutdown`; that
# half needs a host whose KVM runs guests natively (scripts/host-native.sh): elsewhere Linux
# cannot get that far and it prints a SKIP line.
# The image is built once (debootstrap: root and Debian's mirror, minutes) and cached in
# build/guest/rootfs.img; each boot runs on a qcow2 overlay (QEMU: snapshot=on), so the
# cached image is never written. No mirror: a SKIP line, never a PASS.
# Waits follow the guest's progress (tests/lib/progress.sh): a boot is given up when the
# console is quiet and the VMM idle for QUIET s, or it computed CPU_QUIET CPU-seconds in
# silence; CAP s in all only catches a guest that runs for ever.
cd "$(dirname "$0")/.." || exit 1
FW_WHAT=linux-fw-rootfs
. tests/fw-run.sh
. tests/lib/progress.sh
QUIET=${ROOTFS_QUIET:-120} CPU_QUIET=${ROOTFS_CPU_QUIET:-600}
LIMITS=(--quiet "$QUIET" --cpu-quiet "$CPU_QUIET" --cap "$CAP")
IMG=build/guest/rootfs.img
PROMPT='kvmbox-guest login:'
LOGIND='Started .*(systemd-logind|User Login Management)'
# where a boot that went wrong stops for good: no need to wait for the console to go quiet
STUCK='^\(initramfs\) |Kernel panic - not syncing|You are in emergency mode|Give root password for maintenance|Press Enter for maintenance'

if [ $have_qemu = 0 ] && [ $native = 0 ]; then
    skip "no qemu-system-x86_64 to prove the image, and kvmbox cannot boot Linux this far here ($native_why)"
    exit 77
fi
if [ "$(id -u)" != 0 ] || ! command -v debootstrap >/dev/null || ! command -v chroot >/dev/null; then
    skip "building the Debian root file system needs root and debootstrap (scripts/deps.sh)"
    exit 77
fi
[ -s "$IMG" ] || echo "$FW_WHAT: building $IMG (debootstrap from $(fw_debian_mirror); minutes, once)"
t0=$SECONDS
fw_debian_rootfs_disk "$IMG" "$T/build.log"
case $? in
0) [ $((SECONDS - t0)) -gt 5 ] && echo "$FW_WHAT: built $IMG in $((SECONDS - t0)) s" ;;
3) skip "$(cat "$T/build.log"): no Debian root file system to boot"; exit 77 ;;
*) tail -5 "$T/build.log" | sed 's/^/    ! /'
   fail "could not build the Debian root file system image (debootstrap, mkfs.ext4 -d, GRUB)"
   exit 1 ;;
esac
IMG=$(readlink -f "$IMG")

# booted NAME LOG PID: waits for the login prompt and logind on LOG while PID runs.
booted() {
    local name=$1 log=$2 pid=$3 t=$SECONDS
    if ! wait_output --pid "$pid" "${LIMITS[@]}" "$log" "$PROMPT|$STUCK" 2>"$T/$name.wait" ||
       ! grep -aq "$PROMPT" "$log"; then
        local why stuck
        why=$(cat "$T/$name.wait")
        stuck=$(tr -d '\r' <"$log" | grep -aoE -m1 "$STUCK")
        fail "$name: no login prompt on the serial console after $((SECONDS - t)) s: ${why}${stuck:+the boot stopped at '$stuck'}"
        tr -d '\r' <"$log" | grep -av '^\s*$' | tail -6 | sed 's/^/    | /'
        return 1
    fi
    pass "$name: SeaBIOS -> GRUB -> Debian: '$PROMPT' on the serial console after $((SECONDS - t)) s"
    # the power button is systemd-logind's to handle: it must be listening before it is pressed
    if ! wait_output --pid "$pid" "${LIMITS[@]}" "$log" "$LOGIND" 2>"$T/$name.wait"; then
        fail "$name: systemd-logind did not start: $(cat "$T/$name.wait")"
        return 1
    fi
}

# powered_off NAME LOG: the guest's side of the power-off, as its console shows it.
powered_off() {
    if grep -aq 'reboot: Power down' "$2"; then
        pass "$1: the guest powered itself off (\"reboot: Power down\")"
    else
        fail "$1: the console never showed \"reboot: Power down\""
        tr -d '\r' <"$2" | grep -av '^\s*$' | tail -4 | sed 's/^/    | /'
    fi
}

if [ $have_qemu = 1 ]; then
    log=$T/qemu.log
    : >"$log"
    qemu-system-x86_64 -M pc -accel tcg -m 1G -display none -no-reboot \
        -serial "file:$log" -monitor "unix:$T/mon,server=on,wait=off" \
        -drive "file=$IMG,format=raw,if=virtio,snapshot=on" </dev/null >"$T/qemu.err" 2>&1 &
    qpid=$!
    bg_pids="$bg_pids $qpid"
    if booted qemu "$log" "$qpid"; then
        t=$SECONDS
        python3 - "$T/mon" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(0.2)
s.sendall(b"system_powerdown\n"); time.sleep(0.5)
PY
        if wait_exit "${LIMITS[@]}" "$qpid" "$log" 2>"$T/qemu.wait"; then
            wait "$qpid"
            rc=$?
            if [ $rc = 0 ]; then pass "qemu: system_powerdown: QEMU ended with status 0 after $((SECONDS - t)) s"
            else fail "qemu: ended with status $rc after system_powerdown: $(tail -2 "$T/qemu.err")"; fi
            powered_off qemu "$log"
        else
            fail "qemu: still running after system_powerdown: $(cat "$T/qemu.wait")"
        fi
    fi
    kill "$qpid" 2>/dev/null
fi

if [ $native = 0 ]; then
    skip "kvmbox: Debian booted from disk to a login prompt and kvmbox shutdown: needs a host that runs guests natively ($native_why); the image boots under QEMU above"
    [ $fails -eq 0 ]
    exit
fi

N=fw-rootfs-$$
log=$KVMBOX_RUNTIME_DIR/$N.log
trap '"$KVMBOX" kill $N >/dev/null 2>&1; cleanup' EXIT
"$KVMBOX" img create -q -f qcow2 -b "$IMG" -F raw "$T/overlay.qcow2" >"$T/img.err" 2>&1 ||
    { fail "kvmbox img create of the overlay: $(cat "$T/img.err")"; exit 1; }
# the whole boot in one console log: a rotation would hide earlier lines from the waits
if ! KVMBOX_LOG_MAX=16M "$KVMBOX" run --daemonize --name $N --disk "$T/overlay.qcow2,format=qcow2" --mem 1G --cpus 2 \
        >"$T/start.out" 2>"$T/start.err"; then
    fail "kvmbox run --daemonize: $(cat "$T/start.err")"
    exit 1
fi
kpid=$("$KVMBOX" info $N --json 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
[ -n "$kpid" ] || { fail "kvmbox info $N --json gives no pid: $("$KVMBOX" info $N 2>&1)"; exit 1; }
if booted kvmbox "$log" "$kpid"; then
    # The waiter must be blocked on its answer (in poll(), system call 7) before the VM ends.
    "$KVMBOX" wait $N >"$T/wait.out" 2>&1 &
    waiter=$!
    bg_pids="$bg_pids $waiter"
    waiting() { local nr; read -r nr _ <"/proc/$waiter/syscall" 2>/dev/null && [ "$nr" = 7 ]; }
    poll_until 120 waiting
    t=$SECONDS
    # kvmbox shutdown's own --timeout is only a backstop: the limit that counts is the
    # guest's progress while it shuts down (its console, the VM's CPU: wait_exit below).
    "$KVMBOX" shutdown $N --timeout "$CAP" >"$T/shutdown.out" 2>&1 &
    spid=$!
    bg_pids="$bg_pids $spid"
    if wait_exit "${LIMITS[@]}" "$kpid" "$log" 2>"$T/shutdown.wait"; then
        wait "$spid"
        rc=$?
        if [ $rc = 0 ]; then pass "kvmbox shutdown: status 0 after $((SECONDS - t)) s ($(cat "$T/shutdown.out"))"
        else fail "kvmbox shutdown: status $rc: $(cat "$T/shutdown.out")"; fi
        wait $waiter
        rc=$?
        if [ $rc = 0 ]; then pass "kvmbox wait: status 0 (the guest powered off)"
        else fail "kvmbox wait: status $rc: $(cat "$T/wait.out")"; fi
        powered_off kvmbox "$log"
    else
        fail "kvmbox shutdown: the guest did not power off: $(cat "$T/shutdown.wait")"
        kill "$spid" 2>/dev/null
    fi
fi
[ $fails -eq 0 ]
