#!/bin/bash
# Linux full boot on kvmbox: Debian's cloud kernel with the busybox initramfs reaches init,
# sees the configured CPUs and memory, and its poweroff ends kvmbox with status 0; with 1, 2
# and 4 vCPUs and 128M to 4G. Needs a host whose KVM runs guests natively: elsewhere one SKIP
# line says why (detected by scripts/host-native.sh, never assumed).
set -u
cd "$(dirname "$0")/.."
KVMBOX=${KVMBOX:-build/kvmbox}
G=build/guest
if ! why=$(scripts/host-native.sh); then
    echo "SKIP: linux full boot: $why"
    exit 77
fi
scripts/fetch-guest.sh "$G" >/dev/null || { echo "FAIL: linux full boot: cannot fetch the guest"; exit 1; }
T=$(mktemp -d /tmp/kvmbox-linuxfull.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
for cfg in "1 128M" "2 512M" "4 1G" "2 4G"; do
    set -- $cfg
    cpus=$1 mem=$2
    case "$mem" in *G) kib=$(( ${mem%G} << 20 )) ;; *) kib=$(( ${mem%M} << 10 )) ;; esac
    for kernel in vmlinuz vmlinux; do
        name="$kernel-${cpus}cpu-$mem"
        timeout 120 "$KVMBOX" run --kernel "$G/$kernel" --initrd "$G/initramfs.cpio.gz" --mem "$mem" \
            --cpus "$cpus" --cmdline "console=ttyS0" --no-reboot --timeout 100 </dev/null >"$T/out" 2>&1
        rc=$?
        line=$(tr -d '\r' <"$T/out" | grep -a 'KVMBOX-GUEST: cpus=' | head -1)
        got_cpus=$(sed -n 's/.*cpus=\([0-9]*\).*/\1/p' <<<"$line")
        got_kb=$(sed -n 's/.*memtotal_kb=\([0-9]*\).*/\1/p' <<<"$line")
        # MemTotal excludes the kernel's own code and reserved memory: expect 75-100% of --mem.
        if [ "$rc" = 0 ] && [ "${got_cpus:-0}" = "$cpus" ] && [ "${got_kb:-0}" -le "$kib" ] &&
           [ "${got_kb:-0}" -ge $((kib * 3 / 4)) ]; then
            echo "PASS: linux/$name: init saw $got_cpus CPUs and $got_kb KiB, poweroff ended kvmbox with 0"
        else
            tail -5 "$T/out" | sed 's/^/    | /'
            echo "FAIL: linux/$name: status $rc, guest reported '${line:-nothing}'"
            fails=$((fails + 1))
        fi
    done
done
[ $fails -eq 0 ]
