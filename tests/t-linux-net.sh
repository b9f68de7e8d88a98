#!/bin/bash
# Linux on virtio-net: Debian's cloud kernel (initramfs from scripts/fetch-guest.sh) with
# `--net user` gets its address by DHCP from the NAT and fetches a 1 MiB file over HTTP from
# a server on the host's loopback (reached as 10.0.2.2); the checksum the guest prints must
# be the file's. Everything runs in a network namespace of its own (loopback only).
#
# Needs a host whose KVM runs guests natively (scripts/host-native.sh decides at run time);
# elsewhere it prints one SKIP line with the reason and exits 77. LINUX_NET_VMM=qemu runs the
# same under QEMU TCG with -netdev user and virtio-net-pci (validates the guest and checks).
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
VMM=${LINUX_NET_VMM:-kvmbox}
G=build/guest
. tests/linux-guest.sh
linux_need_host "linux on virtio-net"
if [ -z "${KVMBOX_NETNS:-}" ]; then # run ourselves again in a fresh network namespace
    exec unshare -n env KVMBOX_NETNS=1 "$0" "$@"
fi
ip link set lo up
T=$(mktemp -d /tmp/kvmbox-linux-net.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$T"' EXIT
linux_fetch_guest "linux on virtio-net" "$T/fetch.log" || exit 1
. tests/lib/progress.sh
# A boot is given up when its console printed nothing while the VMM used no CPU for 120 s, or
# printed nothing while it used 600 CPU-seconds, or after LINUX_NET_CAP s (default 1800) in all
# (tests/lib/progress.sh): never a guess of how fast the host is.
LIMITS=(--quiet 120 --cpu-quiet 600 --cap "${LINUX_NET_CAP:-1800}")
mkdir "$T/www"
head -c 1048576 /dev/urandom >"$T/www/blob"
want=$(md5sum <"$T/www/blob" | cut -d' ' -f1)
port=18080
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$T/www" >"$T/http.log" 2>&1 &
listening() { ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; }
poll_until 120 listening
cmdline="console=ttyS0 kvmbox.dhcp=1 kvmbox.cmd=\"wget -q -O - http://10.0.2.2:$port/blob | md5sum\""
t0=$EPOCHREALTIME
if [ "$VMM" = kvmbox ]; then
    progress_run --name "linux-net" "${LIMITS[@]}" -- "$KVMBOX" run --kernel "$G/vmlinuz" --initrd "$G/initramfs.cpio.gz" \
        --mem 512M --cpus 2 --cmdline "$cmdline" --net user --no-reboot \
        </dev/null >"$T/out" 2>&1
else
    progress_run --name "linux-net" "${LIMITS[@]}" -- qemu-system-x86_64 -accel tcg -M q35 -m 512M -smp 2 -kernel "$G/vmlinuz" \
        -initrd "$G/initramfs.cpio.gz" -append "$cmdline" -nographic -serial stdio -monitor none \
        -no-reboot -netdev user,id=n0 -device virtio-net-pci,netdev=n0 </dev/null >"$T/out" 2>&1
fi
rc=$?
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
tr -d '\r' <"$T/out" >"$T/out.txt"
fails=0
if grep -q "KVMBOX-GUEST: dhcp eth0 10.0.2.15/24" "$T/out.txt"; then
    echo "PASS: linux-net ($VMM): eth0 got 10.0.2.15/24 by DHCP from the user-mode NAT"
else
    echo "FAIL: linux-net ($VMM): no DHCP lease: $(grep -a 'KVMBOX-GUEST' "$T/out.txt" | tr '\n' '|')"
    fails=$((fails + 1))
fi
if grep -q "^$want" "$T/out.txt" && grep -q '"GET /blob' "$T/http.log"; then
    echo "PASS: linux-net ($VMM): fetched 1 MiB over HTTP from the host's loopback, checksum $want (${secs}s)"
else
    echo "FAIL: linux-net ($VMM): status $rc; the guest did not print $want; tail: $(tail -4 "$T/out.txt" | tr '\n' '|')"
    fails=$((fails + 1))
fi
[ $fails -eq 0 ]
