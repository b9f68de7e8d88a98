#!/bin/sh
# Installs the Debian packages kvmbox needs to build and test, if any are missing.
# Build: gcc make pkg-config zlib1g-dev libjson-c-dev liburing-dev libslirp-dev check
# Tests: qemu-system-x86 qemu-utils (reference peers, never runtime dependencies),
#        acpica-tools (iasl disassembles our ACPI tables), clang + libclang-rt-14-dev (fuzzing),
#        cpio, xz-utils, zstd, lz4 (the Linux guest), iproute2, debootstrap (image benchmark content),
#        python3 (test helpers: tests/lib/progress.py bounds every wait, tests/net-helpers)
# Firmware boot: seabios; its test images: grub-pc-bin syslinux syslinux-common
#        isolinux xorriso mtools dosfstools e2fsprogs
set -eu
PKGS="gcc make pkg-config zlib1g-dev libjson-c-dev liburing-dev libseccomp-dev libslirp-dev check fio
      qemu-system-x86 qemu-utils acpica-tools clang libclang-rt-14-dev cpio xz-utils zstd
      iproute2 ca-certificates lz4 debootstrap python3
      seabios grub-pc-bin syslinux syslinux-common isolinux xorriso mtools dosfstools
      e2fsprogs"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "kvmbox: installing missing packages:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
