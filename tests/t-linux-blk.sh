#!/bin/bash
# Linux on virtio-blk: Debian's cloud kernel boots with root=/dev/vda on an ext4 image (raw,
# qcow2, and a qcow2 overlay over a raw base given no write access), and the image's
# /sbin/init writes files, records their checksums, syncs and powers off. Afterwards the host
# checks that `e2fsck -fn` is clean, that the files read back with the checksums the guest
# computed, that `qemu-img check` is clean for qcow2, and that the overlay's base is unchanged.
#
# Needs a host whose KVM runs guests natively (scripts/host-native.sh decides at run time);
# elsewhere it prints one SKIP line with the reason and exits 77. LINUX_BLK_VMM=qemu runs the
# same scenarios under QEMU TCG with virtio-blk-pci (validates the images and the checks).
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
VMM=${LINUX_BLK_VMM:-kvmbox}
G=build/guest
. tests/linux-guest.sh
linux_need_host "linux on virtio-blk"
for tool in mkfs.ext4 e2fsck debugfs qemu-img; do
    command -v "$tool" >/dev/null || { echo "FAIL: linux on virtio-blk: $tool is not installed"; exit 1; }
done
T=$(mktemp -d /tmp/kvmbox-linux-blk.XXXXXX)
trap 'chmod -R u+w "$T"; rm -rf "$T"' EXIT
linux_fetch_guest "linux on virtio-blk" "$T/fetch.log" || exit 1
. tests/lib/progress.sh
# A boot is given up when its console printed nothing while the VMM used no CPU for 120 s, or
# printed nothing while it used 600 CPU-seconds, or after LINUX_BLK_CAP s (default 1800) in all
# (tests/lib/progress.sh): never a guess of how fast the host is.
LIMITS=(--quiet 120 --cpu-quiet 600 --cap "${LINUX_BLK_CAP:-1800}")
fails=0
pass() { echo "PASS: linux-blk/$*"; }
fail() { echo "FAIL: linux-blk/$*"; fails=$((fails + 1)); }

# The root file system: a static busybox and an init that writes 16 files of 64 KiB to 1 MiB
# of random data, checksums them, syncs and powers off.
mkdir -p "$T/root/bin" "$T/root/sbin" "$T/root/proc" "$T/root/dev" "$T/root/data"
dpkg -x "$(ls "$G"/debs/busybox-static_*.deb | head -1)" "$T/bb"
cp "$T/bb/bin/busybox" "$T/root/bin/busybox"
cat >"$T/root/sbin/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
i=0
while [ $i -lt 16 ]; do
    dd if=/dev/urandom of=/data/f$i bs=64k count=$((i + 1)) 2>/dev/null
    i=$((i + 1))
done
(cd /data && md5sum f*) >/data/SUMS
sync
echo "ROOTFS-DONE $(wc -l </data/SUMS) files"
mount -o remount,ro /
poweroff -f
INIT
chmod +x "$T/root/sbin/init"
mkfs.ext4 -q -F -d "$T/root" "$T/base.raw" 128M >/dev/null || { echo "FAIL: linux-blk: mkfs.ext4"; exit 1; }

boot() { # boot NAME IMAGE FORMAT: runs the guest with IMAGE as /dev/vda; console in $T/NAME.out
    local cmdline="console=ttyS0 root=/dev/vda rw"
    if [ "$VMM" = kvmbox ]; then
        progress_run --name "linux-blk" "${LIMITS[@]}" -- "$KVMBOX" run --kernel "$G/vmlinuz" --initrd "$G/initramfs.cpio.gz" \
            --mem 512M --cpus 2 --cmdline "$cmdline" --no-reboot \
            --disk "$2,format=$3,serial=root" </dev/null >"$T/$1.out" 2>&1
    else
        progress_run --name "linux-blk" "${LIMITS[@]}" -- qemu-system-x86_64 -accel tcg -M q35 -m 512M -smp 2 -kernel "$G/vmlinuz" \
            -initrd "$G/initramfs.cpio.gz" -append "$cmdline" -nographic -serial stdio \
            -monitor none -no-reboot -drive "file=$2,if=none,id=d0,format=$3" \
            -device virtio-blk-pci,drive=d0,serial=root </dev/null >"$T/$1.out" 2>&1
    fi
}

# check NAME IMAGE FORMAT: the file system and the files the guest wrote.
check() {
    local name=$1 img=$2 fmt=$3 raw=$T/$1.check.raw
    if [ "$fmt" = qcow2 ]; then
        if qemu-img check -q "$img"; then pass "$name: qemu-img check is clean"
        else fail "$name: qemu-img check reports problems"; fi
        qemu-img convert -f qcow2 -O raw "$img" "$raw"
    else
        cp "$img" "$raw"
    fi
    if e2fsck -fn "$raw" >"$T/$name.fsck" 2>&1; then pass "$name: e2fsck -fn is clean"
    else fail "$name: e2fsck -fn: $(tail -3 "$T/$name.fsck" | tr '\n' ' ')"; fi
    rm -rf "$T/$name.files" && mkdir "$T/$name.files"
    debugfs -R "rdump /data $T/$name.files" "$raw" >/dev/null 2>&1
    if [ -s "$T/$name.files/data/SUMS" ] && [ "$(wc -l <"$T/$name.files/data/SUMS")" = 16 ] &&
       (cd "$T/$name.files/data" && md5sum -c --quiet SUMS); then
        pass "$name: the 16 files the guest wrote read back with its checksums"
    else
        fail "$name: the guest's files are missing or differ"
    fi
}

scenario() { # scenario NAME IMAGE FORMAT
    local t0=$EPOCHREALTIME
    boot "$1" "$2" "$3"
    local rc=$? secs
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ] && grep -q "ROOTFS-DONE 16 files" "$T/$1.out"; then
        pass "$1: booted from /dev/vda, wrote its files and powered off (${secs}s)"
    else
        fail "$1: status $rc after ${secs}s; console tail: $(tr -d '\r' <"$T/$1.out" | tail -4 | tr '\n' '|')"
    fi
    check "$@"
}

cp "$T/base.raw" "$T/disk.raw"
scenario raw "$T/disk.raw" raw
qemu-img convert -f raw -O qcow2 "$T/base.raw" "$T/disk.qcow2"
scenario qcow2 "$T/disk.qcow2" qcow2
sum_before=$(sha256sum <"$T/base.raw")
chmod a-w "$T/base.raw"
qemu-img create -q -f qcow2 -b base.raw -F raw "$T/overlay.qcow2"
scenario overlay "$T/overlay.qcow2" qcow2
if [ "$(sha256sum <"$T/base.raw")" = "$sum_before" ]; then pass "overlay: the base image is unchanged"
else fail "overlay: the base image changed"; fi

[ $fails -eq 0 ]
