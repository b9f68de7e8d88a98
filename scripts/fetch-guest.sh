#!/bin/sh
# fetch-guest.sh [DESTDIR]: kvmbox's default Linux guest, from Debian's packages, in DESTDIR
# (default build/guest):
#   vmlinuz            the bzImage of the kernel that linux-image-cloud-amd64 depends on
#   vmlinux            the same kernel as an ELF (PVH entry), by scripts/extract-vmlinux.sh
#   initramfs.cpio.gz  busybox-static + guest/init + virtio modules, by scripts/mkinitramfs.sh
#   VERSION            the kernel package's name and version
#   debs/              the downloaded .deb files (kept, so a changed /init needs no download)
# Nothing is installed into the host: the packages are fetched with `apt-get download` and
# unpacked with `dpkg -x` into a temporary directory. Idempotent: nothing is redone while the
# outputs are newer than their inputs (the .debs, guest/init and the two scripts) and the
# metapackage still depends on the same kernel package.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$top/build/guest}
mkdir -p "$dest/debs"
dest=$(cd "$dest" && pwd)
debs=$dest/debs
# make check runs test scripts side by side: the first to get here makes the guest, the others
# wait for it and then find it made.
exec 9>"$dest/.lock"
flock 9

# The kernel package the metapackage depends on, e.g. linux-image-6.1.0-56-cloud-amd64.
resolve() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1
}
pkg=$(resolve)
if [ -z "$pkg" ] && [ -s "$dest/VERSION" ]; then
    pkg=$(cut -d' ' -f1 "$dest/VERSION")   # no package lists here: keep what was fetched
fi
if [ -z "$pkg" ]; then
    echo "fetch-guest: apt-cache does not know linux-image-cloud-amd64; running apt-get update"
    apt-get update -qq
    pkg=$(resolve)
    [ -n "$pkg" ] || { echo "fetch-guest: cannot resolve linux-image-cloud-amd64 with apt-cache" >&2; exit 1; }
fi

# newer OUT IN...: OUT exists and is newer than every IN.
newer() {
    out=$1; shift
    [ -s "$out" ] || return 1
    # shellcheck disable=SC3013 # -nt: dash, busybox sh and bash all have it
    for i; do [ "$out" -nt "$i" ] || return 1; done
}

# first FILE...: the first of FILE... that exists (a glob that matched nothing stays unexpanded)
first() { for f; do [ -f "$f" ] && { echo "$f"; return 0; }; done; return 0; }
kdeb=$(first "$debs/${pkg}_"*.deb)
bdeb=$(first "$debs/busybox-static_"*.deb)
if [ -z "$kdeb" ] || [ -z "$bdeb" ]; then
    echo "fetch-guest: downloading $pkg and busybox-static (apt-get download; nothing is installed)"
    # apt's download sandbox user must be able to write there
    dl=$(mktemp -d /tmp/kvmbox-debs.XXXXXX)
    chmod 777 "$dl"
    (cd "$dl" && apt-get download -q "$pkg" busybox-static >/dev/null 2>"$dl/err") || {
        cat "$dl/err" >&2; rm -rf "$dl"; exit 1
    }
    rm -f "$debs"/*.deb
    mv "$dl"/*.deb "$debs/"
    rm -rf "$dl"
    kdeb=$(first "$debs/${pkg}_"*.deb)
    bdeb=$(first "$debs/busybox-static_"*.deb)
    [ -n "$kdeb" ] && [ -n "$bdeb" ] || { echo "fetch-guest: apt-get download left no .deb" >&2; exit 1; }
fi

if newer "$dest/vmlinuz" "$kdeb" &&
   newer "$dest/vmlinux" "$dest/vmlinuz" "$top/scripts/extract-vmlinux.sh" &&
   newer "$dest/initramfs.cpio.gz" "$kdeb" "$bdeb" "$top/guest/init" "$top/scripts/mkinitramfs.sh" &&
   [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$pkg $(dpkg-deb -f "$kdeb" Version)" ]; then
    exit 0
fi

work=$(mktemp -d /tmp/kvmbox-guest.XXXXXX)
trap 'rm -rf "$work"' EXIT
dpkg -x "$kdeb" "$work/k"
dpkg -x "$bdeb" "$work/b"
set -- "$work"/k/boot/vmlinuz-*
[ $# -eq 1 ] && [ -f "$1" ] || { echo "fetch-guest: $kdeb has no single boot/vmlinuz-*" >&2; exit 1; }
cp "$1" "$dest/vmlinuz.tmp" && mv "$dest/vmlinuz.tmp" "$dest/vmlinuz"
"$top/scripts/extract-vmlinux.sh" "$dest/vmlinuz" "$dest/vmlinux"
set -- "$work"/k/lib/modules/*
[ $# -eq 1 ] && [ -d "$1" ] || { echo "fetch-guest: $kdeb has no single lib/modules/VERSION" >&2; exit 1; }
"$top/scripts/mkinitramfs.sh" "$work/b/bin/busybox" "$1" "$dest/initramfs.cpio.gz"
echo "$pkg $(dpkg-deb -f "$kdeb" Version)" >"$dest/VERSION"
echo "fetch-guest: $dest: vmlinuz, vmlinux, initramfs.cpio.gz ($(cat "$dest/VERSION"))"
