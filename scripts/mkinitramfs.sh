#!/bin/sh
# mkinitramfs.sh BUSYBOX MODULES_DIR OUT: kvmbox's guest initramfs (cpio newc, gzip -9) at OUT.
#
#   /bin/busybox                   BUSYBOX (a static busybox; /init installs its applet links)
#   /init                          guest/init
#   /lib/modules/VER/...           the virtio modules below and whatever they depend on, copied
#                                  from MODULES_DIR (an unpacked kernel package's
#                                  lib/modules/VER), decompressed if the kernel ships them
#                                  compressed so that busybox insmod needs no decompressor
#   /lib/modules/VER/modules.dep   those modules' lines of MODULES_DIR/modules.dep, in load order
#   /lib/modules/VER/modules.load  the modules /init loads (it resolves modules.dep itself)
#
# A kernel package carries no modules.dep (depmod writes it when the package is installed), so
# when MODULES_DIR has none it is made there with BUSYBOX's depmod. Modules built into the
# kernel (modules.builtin) are skipped; a wanted module that is neither is an error, except the
# two virtio-pci helper libraries, which older kernels do not have.
set -eu
[ $# -eq 3 ] || { echo "usage: mkinitramfs.sh BUSYBOX MODULES_DIR OUT" >&2; exit 2; }
busybox=$1 mods=${2%/} out=$3
top=$(cd "$(dirname "$0")/.." && pwd)
WANT="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
      failover net_failover virtio_net virtio_balloon button evdev virtio_scsi sr_mod isofs"
OPTIONAL="virtio_pci_modern_dev virtio_pci_legacy_dev virtio_scsi sr_mod isofs"

ver=$(basename "$mods")
[ -d "$mods/kernel" ] || { echo "mkinitramfs: $mods is not a lib/modules/VERSION directory" >&2; exit 1; }
if [ ! -s "$mods/modules.dep" ]; then
    base=$(cd "$mods/../../.." && pwd)
    "$busybox" depmod -b "$base" "$ver"
fi

root=$(mktemp -d /tmp/kvmbox-initramfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/tmp" "$root/lib/modules/$ver"
cp "$busybox" "$root/bin/busybox"
cp "$top/guest/init" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox"

# dep_line NAME: NAME's line of modules.dep ("kernel/.../NAME.ko[.xz|.zst|.gz]: deps...").
dep_line() {
    grep -E "(^|/)$1\.ko(\.(xz|zst|gz))?:" "$mods/modules.dep" | head -1
}
strip_ko() { sed -E 's/\.ko(\.(xz|zst|gz))?( |$)/.ko\3/g'; }

# Depth-first over modules.dep: a module's dependencies are emitted before it, once each.
order=""
visit() { # visit NAME
    case " $order " in *" $1 "*) return 0 ;; esac
    line=$(dep_line "$1")
    if [ -z "$line" ]; then
        if grep -qE "(^|/)$1\.ko\$" "$mods/modules.builtin" 2>/dev/null; then
            builtin="$builtin $1"; return 0
        fi
        case " $OPTIONAL " in *" $1 "*) return 0 ;; esac
        echo "mkinitramfs: $1 is neither a module nor built into kernel $ver" >&2; exit 1
    fi
    # shellcheck disable=SC2046 # word splitting is wanted: one name per dependency
    for d in $(echo "${line#*:}" | tr ' ' '\n' | sed -E 's|.*/||; s/\.ko(\.(xz|zst|gz))?$//'); do
        visit "$d"
    done
    order="$order $1"
}
builtin=""
for m in $WANT; do visit "$m"; done

for m in $order; do
    line=$(dep_line "$m")
    src=${line%%:*}
    dst=$(echo "$src" | strip_ko)
    mkdir -p "$root/lib/modules/$ver/$(dirname "$dst")"
    case "$src" in
    *.ko.xz)  xz -dc "$mods/$src" ;;
    *.ko.zst) zstd -qdc "$mods/$src" ;;
    *.ko.gz)  gzip -dc "$mods/$src" ;;
    *)        cat "$mods/$src" ;;
    esac >"$root/lib/modules/$ver/$dst"
    echo "$line" | strip_ko >>"$root/lib/modules/$ver/modules.dep"
    echo "$m" >>"$root/lib/modules/$ver/modules.load"
done

tmp="$out.tmp.$$"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$tmp"
mv "$tmp" "$out"
echo "mkinitramfs: $out: $(stat -c %s "$out") bytes, kernel $ver, modules in load order:$order${builtin:+ (built in:$builtin)}"
