#!/bin/sh
# mkinitramfs.sh BUSYBOX MODULES_DIR OUT: a busybox initramfs (cpio newc, gzip) whose /init is
# guest/init, with the virtio modules from MODULES_DIR (the unpacked kernel package's
# lib/modules/VERSION).
set -eu
busybox=$1 mods=$2 out=$3
root=$(mktemp -d /tmp/kvmbox-initramfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/lib/modules" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
cp "$(dirname "$0")/../guest/init" "$root/init"
for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
         failover net_failover virtio_net virtio_balloon; do
    f=$(find "$mods" -name "$m.ko*" | head -1)
    [ -n "$f" ] || continue
    case "$f" in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
    *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
done
(cd "$root" && find . | sort | cpio -o -H newc --quiet | gzip -9) >"$out.tmp"
mv "$out.tmp" "$out"
