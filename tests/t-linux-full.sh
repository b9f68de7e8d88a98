#!/bin/bash
# Linux full boot: Debian's cloud kernel with the busybox initramfs (scripts/fetch-guest.sh),
# as bzImage and as vmlinux (PVH), with 1, 2 and 4 vCPUs and 128M to 4G. Each boot must reach
# /init, which must load every virtio module and report (KVMBOX-GUEST line) the requested CPUs
# and a MemTotal plausible for --mem; then its `poweroff -f` must end kvmbox with status 0.
#
# Needs a host whose KVM runs guests natively (scripts/host-native.sh decides at run time);
# elsewhere it prints one SKIP line with the reason and exits 77. LINUX_FULL_VMM=qemu runs the
# same boots and checks under QEMU TCG instead (to validate the guest image and the checks on
# any host; not part of make check).
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
VMM=${LINUX_FULL_VMM:-kvmbox}
G=build/guest
. tests/linux-guest.sh
linux_need_host "linux full boot"
T=$(mktemp -d /tmp/kvmbox-linux-full.XXXXXX)
trap 'rm -rf "$T"' EXIT
linux_fetch_guest "linux full boot" "$T/fetch.log" || exit 1
. tests/lib/progress.sh
# A boot is given up when its console printed nothing while the VMM used no CPU for 120 s, or
# printed nothing while it used 600 CPU-seconds, or after LINUX_FULL_CAP s (default 1200) in all
# (tests/lib/progress.sh): never a guess of how fast the host is.
LIMITS=(--quiet 120 --cpu-quiet 600 --cap "${LINUX_FULL_CAP:-1200}")
fails=0

run_vm() { # run_vm KERNEL MEM CPUS: the VM's console in $T/out, its exit status returned
    local cmdline="console=ttyS0 kvmbox.test=full"
    if [ "$VMM" = kvmbox ]; then
        progress_run --name "linux-full" "${LIMITS[@]}" -- "$KVMBOX" run --kernel "$1" --initrd "$G/initramfs.cpio.gz" \
            --mem "$2" --cpus "$3" --cmdline "$cmdline" --no-reboot \
            </dev/null >"$T/out" 2>&1
    else
        progress_run --name "linux-full" "${LIMITS[@]}" -- qemu-system-x86_64 -accel tcg -M q35 -kernel "$1" \
            -initrd "$G/initramfs.cpio.gz" -m "$2" -smp "$3" -append "$cmdline" \
            -nographic -serial stdio -monitor none -no-reboot </dev/null >"$T/out" 2>&1
    fi
}

for cfg in "1 128M" "2 512M" "4 1G" "1 2G" "2 4G" "4 4G"; do
    # shellcheck disable=SC2086 # two words: intended splitting
    set -- $cfg
    cpus=$1 mem=$2
    case "$mem" in *G) kib=$(( ${mem%G} << 20 )) ;; *) kib=$(( ${mem%M} << 10 )) ;; esac
    # MemTotal leaves out the kernel image, reserved firmware ranges and the page structs
    # (1/64 of RAM): expect from --mem less 48 MiB and 1/16 up to --mem.
    min_kib=$((kib - (48 << 10) - kib / 16))
    for kernel in vmlinuz vmlinux; do
        name="$kernel-${cpus}cpu-$mem"
        t0=$EPOCHREALTIME
        run_vm "$G/$kernel" "$mem" "$cpus"
        rc=$?
        secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
        tr -d '\r' <"$T/out" >"$T/out.txt"
        line=$(grep -a -m1 -o 'KVMBOX-GUEST: cpus=.*' "$T/out.txt")
        mods=$(grep -a -m1 -o 'KVMBOX-GUEST: modules:.*' "$T/out.txt")
        got_cpus=$(sed -n 's/.*cpus=\([0-9]*\).*/\1/p' <<<"$line")
        got_kib=$(sed -n 's/.*memtotal_kb=\([0-9]*\).*/\1/p' <<<"$line")
        why=""
        [ -n "$line" ] || why="/init printed no KVMBOX-GUEST line"
        [ -z "$why" ] && [ "$got_cpus" != "$cpus" ] && why="guest saw $got_cpus CPUs"
        [ -z "$why" ] && { [ "$got_kib" -gt "$kib" ] || [ "$got_kib" -lt "$min_kib" ]; } &&
            why="MemTotal $got_kib KiB outside [$min_kib, $kib]"
        [ -z "$why" ] && [[ $mods == *failed:* || $mods != *virtio_pci* ]] && why="modules: '${mods:-none reported}'"
        [ -z "$why" ] && [ "$rc" != 0 ] && why="$VMM exited with status $rc, not 0 (poweroff)"
        if [ -z "$why" ]; then
            echo "PASS: linux-full/$VMM/$name: init saw $got_cpus CPUs and $got_kib KiB, modules loaded, poweroff ended $VMM with 0 (${secs}s)"
        else
            grep -av '^\s*$' "$T/out.txt" | tail -6 | sed 's/^/    | /'
            echo "FAIL: linux-full/$VMM/$name: $why (${secs}s)"
            fails=$((fails + 1))
        fi
    done
done
[ $fails -eq 0 ]
