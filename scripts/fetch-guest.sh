#!/bin/sh
# fetch-guest.sh [DIR]: kvmbox's default guest from Debian's packages, never installed into
# the host: the kernel of linux-image-cloud-amd64 (DIR/vmlinuz, and DIR/vmlinux for PVH) and a
# busybox-static initramfs with the virtio modules (DIR/initramfs.cpio.gz).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$top/build/guest}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -s "$dir/vmlinuz" ] && [ -s "$dir/vmlinux" ] && [ -s "$dir/initramfs.cpio.gz" ] &&
   [ "$dir/initramfs.cpio.gz" -nt "$top/guest/init" ]; then
    exit 0
fi
work=$(mktemp -d /tmp/kvmbox-guest.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
cd "$work"
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[^ ]*\)/\1/p' | head -1)
if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null
    pkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/.*Depends: \(linux-image-[^ ]*\)/\1/p' | head -1)
fi
[ -n "$pkg" ] || { echo "fetch-guest: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
echo "fetch-guest: downloading $pkg and busybox-static (apt-get download; nothing is installed)"
apt-get download "$pkg" busybox-static >/dev/null
dpkg -x linux-image-*.deb k
dpkg -x busybox-static_*.deb b
cp k/boot/vmlinuz-* "$dir/vmlinuz"
"$top/scripts/extract-vmlinux.sh" "$dir/vmlinuz" "$dir/vmlinux"
"$top/scripts/mkinitramfs.sh" b/bin/busybox k/lib/modules/* "$dir/initramfs.cpio.gz"
echo "$pkg" >"$dir/VERSION"
echo "fetch-guest: $dir/vmlinuz, vmlinux, initramfs.cpio.gz ($pkg)"
