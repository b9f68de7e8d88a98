# shellcheck shell=bash
# Sourced by tests/t-firmware.sh and bench/fw-bench.sh: bootable disk and CD images built
# offline from Debian packages (grub-pc-bin, syslinux, isolinux, xorriso, mtools,
# dosfstools, e2fsprogs), without loop devices, mounts or root: partitions are written into
# the image file at their offset, file systems are made from directories (mkfs.ext4 -d) or
# filled with mtools, and boot code is copied into place with dd.

FW_PART_START=2048                     # first partition at 1 MiB, as partitioners do
FW_GRUB=/usr/lib/grub/i386-pc
FW_SYSLINUX=/usr/lib/syslinux
FW_ISOLINUX=/usr/lib/ISOLINUX

# fw_images_missing: the tools that are not installed (empty when all are).
fw_images_missing() {
    local t m=""
    for t in grub-mkimage xorriso mkfs.ext4 mkfs.fat mcopy syslinux; do
        command -v "$t" >/dev/null 2>&1 || m="$m $t"
    done
    [ -f $FW_GRUB/boot.img ] || m="$m grub-pc-bin"
    [ -f $FW_ISOLINUX/isolinux.bin ] || m="$m isolinux"
    [ -f $FW_SYSLINUX/modules/bios/mboot.c32 ] || m="$m syslinux-common"
    echo "$m"
}

_fw_le32() {
    printf "\\$(printf %03o $(($1 & 255)))\\$(printf %03o $((($1 >> 8) & 255)))"
    printf "\\$(printf %03o $((($1 >> 16) & 255)))\\$(printf %03o $((($1 >> 24) & 255)))"
}

# fw_mbr FILE SIZE_MIB TYPE: a new image of SIZE_MIB with an MBR holding one bootable
# primary partition of TYPE (0x83 Linux, 0x0c FAT32 LBA) from 1 MiB to the end (LBA fields
# only; CHS says "beyond 8 GiB", as for any LBA-addressed partition).
fw_mbr() {
    local f=$1 mib=$2 type=$3
    rm -f "$f"
    truncate -s "${mib}M" "$f"
    { printf '\200\376\377\377'; printf "\\$(printf %03o "$type")"; printf '\376\377\377'
      _fw_le32 $FW_PART_START; _fw_le32 $(( (mib << 11) - FW_PART_START )); } |
        dd of="$f" bs=1 seek=446 conv=notrunc status=none
    printf '\125\252' | dd of="$f" bs=1 seek=510 conv=notrunc status=none
}

# fw_grub_core OUT FORMAT CONFIG MODULES...: a GRUB core image with CONFIG built in.
fw_grub_core() {
    local out=$1 format=$2 cfg=$3
    shift 3
    grub-mkimage -O "$format" -o "$out" -c "$cfg" -p /boot/grub "$@"
}

# The GRUB config that loads a multiboot kernel: serial console, no menu.
_fw_grub_mb_cfg() { # FILE ROOT KERNEL_PATH ARGS
    { echo "serial --unit=0 --speed=115200"
      echo "terminal_input serial"
      echo "terminal_output serial"
      [ -n "$2" ] && echo "set root=$2"
      echo "echo \"GRUB: loading the multiboot kernel\""
      echo "multiboot $3 $4"
      echo "boot"; } >"$1"
}

# fw_grub_disk OUT KERNEL ARGS: GRUB 2 on an MBR disk (boot.img in the MBR, core.img in the
# gap after it, as grub-install would place them) with an ext4 partition holding KERNEL,
# which GRUB starts with `multiboot KERNEL ARGS`. ext4 with 4 KiB blocks and no journal: GRUB
# reads it in fewer BIOS calls than 1 KiB-block ext2 (each call is slow under emulation).
fw_grub_disk() {
    local out=$1 kernel=$2 args=$3 d
    d=$(mktemp -d)
    mkdir -p "$d/root/boot"
    cp "$kernel" "$d/root/boot/kernel.elf"
    _fw_grub_mb_cfg "$d/early.cfg" "(hd0,msdos1)" /boot/kernel.elf "$args"
    fw_grub_disk_from "$out" "$d" 16 biosdisk part_msdos ext2 multiboot serial terminal echo boot
    rm -rf "$d"
}

# fw_grub_disk_from OUT DIR SIZE_MIB MODULES...: the disk of DIR/root with DIR/early.cfg.
fw_grub_disk_from() {
    local out=$1 d=$2 mib=$3
    shift 3
    fw_grub_core "$d/core.img" i386-pc "$d/early.cfg" "$@" || return 1
    fw_mbr "$out" "$mib" 0x83
    mkfs.ext4 -q -F -b 4096 -O ^has_journal -d "$d/root" -E offset=$((FW_PART_START * 512)) "$out" \
        $(( (mib << 10) - FW_PART_START / 2 ))k || return 1
    # boot.img's first 440 bytes (the partition table stays); core.img from sector 1: its
    # first sector (diskboot) holds the block list grub-mkimage filled in for that place.
    dd if=$FW_GRUB/boot.img of="$out" bs=440 count=1 conv=notrunc status=none
    [ "$(stat -c %s "$d/core.img")" -le $(( (FW_PART_START - 1) * 512 )) ] || return 1
    dd if="$d/core.img" of="$out" bs=512 seek=1 conv=notrunc status=none
}

# fw_grub_iso OUT KERNEL ARGS: an El Torito CD (no emulation) whose boot image is GRUB's
# i386-pc-eltorito core with the config built in; it loads KERNEL from the ISO 9660 tree.
fw_grub_iso() {
    local out=$1 kernel=$2 args=$3 d
    d=$(mktemp -d)
    mkdir -p "$d/root/boot"
    cp "$kernel" "$d/root/boot/kernel.elf"
    _fw_grub_mb_cfg "$d/early.cfg" "" /boot/kernel.elf "$args"
    fw_grub_core "$d/root/boot/eltorito.img" i386-pc-eltorito "$d/early.cfg" \
        biosdisk iso9660 multiboot serial terminal echo boot &&
    xorriso -as mkisofs -quiet -R -V KVMBOX_GRUB -b boot/eltorito.img -no-emul-boot \
        -boot-load-size 4 -boot-info-table -o "$out" "$d/root" 2>/dev/null
    local r=$?
    rm -rf "$d"
    return $r
}

_fw_syslinux_cfg() { # FILE ARGS
    printf 'SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT gt\nLABEL gt\n  KERNEL mboot.c32\n  APPEND kernel.elf %s\n' \
        "$2" >"$1"
}

# fw_syslinux_disk OUT KERNEL ARGS: SYSLINUX's MBR code and a FAT partition made by
# mkfs.fat, filled with mtools and made bootable by syslinux (the mtools installer works on
# the file), whose mboot.c32 starts KERNEL (multiboot) with ARGS.
fw_syslinux_disk() {
    local out=$1 kernel=$2 args=$3 d mib=32
    d=$(mktemp -d)
    _fw_syslinux_cfg "$d/syslinux.cfg" "$args"
    mkfs.fat -C "$d/fat.img" $(( (mib << 10) - FW_PART_START / 2 )) >/dev/null &&
    syslinux --install "$d/fat.img" &&
    MTOOLS_SKIP_CHECK=1 mcopy -i "$d/fat.img" "$d/syslinux.cfg" \
        $FW_SYSLINUX/modules/bios/mboot.c32 $FW_SYSLINUX/modules/bios/libcom32.c32 ::/ &&
    MTOOLS_SKIP_CHECK=1 mcopy -i "$d/fat.img" "$kernel" ::/kernel.elf || { rm -rf "$d"; return 1; }
    fw_mbr "$out" "$mib" 0x0c
    dd if="$d/fat.img" of="$out" bs=512 seek=$FW_PART_START conv=notrunc status=none
    dd if=$FW_SYSLINUX/mbr/mbr.bin of="$out" bs=440 count=1 conv=notrunc status=none
    rm -rf "$d"
}

# fw_isolinux_iso OUT KERNEL ARGS: a hybrid ISO (ISOLINUX for El Torito, isohdpfx's MBR for
# disks) made by xorriso, whose mboot.c32 starts KERNEL with ARGS.
fw_isolinux_iso() {
    local out=$1 kernel=$2 args=$3 d
    d=$(mktemp -d)
    mkdir -p "$d/root/isolinux"
    cp $FW_ISOLINUX/isolinux.bin $FW_SYSLINUX/modules/bios/ldlinux.c32 \
        $FW_SYSLINUX/modules/bios/mboot.c32 $FW_SYSLINUX/modules/bios/libcom32.c32 "$d/root/isolinux/"
    cp "$kernel" "$d/root/isolinux/kernel.elf"
    _fw_syslinux_cfg "$d/root/isolinux/isolinux.cfg" "$args"
    xorriso -as mkisofs -quiet -R -V KVMBOX_ISOLINUX -isohybrid-mbr $FW_ISOLINUX/isohdpfx.bin \
        -c isolinux/boot.cat -b isolinux/isolinux.bin -no-emul-boot -boot-load-size 4 \
        -boot-info-table -o "$out" "$d/root" 2>/dev/null
    local r=$?
    rm -rf "$d"
    return $r
}

# fw_grub_linux_disk OUT VMLINUZ INITRD CMDLINE [ROOTDIR]: GRUB loading a Linux kernel and
# initrd from the disk's ext4 partition (with ROOTDIR's contents too, when given).
fw_grub_linux_disk() {
    local out=$1 vmlinuz=$2 initrd=$3 cmdline=$4 rootdir=${5:-} d mib
    d=$(mktemp -d)
    mkdir -p "$d/root/boot"
    [ -n "$rootdir" ] && cp -a "$rootdir/." "$d/root/"
    cp "$vmlinuz" "$d/root/boot/vmlinuz"
    [ -n "$initrd" ] && cp "$initrd" "$d/root/boot/initrd.img"
    { echo "serial --unit=0 --speed=115200"
      echo "terminal_input serial"
      echo "terminal_output serial"
      echo "set root=(hd0,msdos1)"
      echo "echo \"GRUB: loading Linux\""
      echo "linux /boot/vmlinuz $cmdline"
      [ -n "$initrd" ] && echo "initrd /boot/initrd.img"
      echo "boot"; } >"$d/early.cfg"
    mib=$(( $(du -sm "$d/root" | cut -f1) * 5 / 4 + 16 ))
    fw_grub_disk_from "$out" "$d" "$mib" biosdisk part_msdos ext2 linux serial terminal echo boot
    local r=$?
    rm -rf "$d"
    return $r
}

# fw_debian_mirror: the Debian mirror apt already uses here (its first deb line whose URI ends
# in /debian, from sources.list or a deb822 .sources file), else deb.debian.org.
fw_debian_mirror() {
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
            2>/dev/null | sed -n -e 's|^deb \(\[[^]]*\] \)\{0,1\}\(https\{0,1\}://[^ ]*/debian\)/\{0,1\} .*|\2|p' \
                             -e 's|^URIs: *\(https\{0,1\}://[^ ]*/debian\)/\{0,1\} *$|\1|p' | head -1)
    echo "${m:-http://deb.debian.org/debian}"
}

# The Debian root file system's recipe (its text is hashed: a changed recipe rebuilds the
# cached image). DIR/root is debootstrapped; DIR/early.cfg is GRUB's built-in config.
# minbase + the cloud kernel, systemd as init, udev, initramfs-tools; dbus for systemd-logind,
# which powers the system off when the ACPI power button is pressed (kvmbox shutdown, QEMU's
# system_powerdown). No network configuration and no services beyond Debian's defaults.
# Root has no password (a login on the serial console only; the image is a test image that
# never has a network). The initramfs is Debian's own (MODULES=most), which holds
# virtio_pci and virtio_blk: checked, not assumed.
_fw_rootfs_recipe() { # DIR SUITE MIRROR
    local d=$1 r=$1/root
    debootstrap --variant=minbase \
        --include=linux-image-cloud-amd64,systemd-sysv,udev,initramfs-tools,dbus \
        "$2" "$r" "$3" || return 1
    echo kvmbox-guest >"$r/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 kvmbox-guest\n' >"$r/etc/hosts"
    echo '/dev/vda1 / ext4 defaults 0 1' >"$r/etc/fstab"
    chroot "$r" passwd -d root >/dev/null || return 1
    # the .debs debootstrap kept: 100+ MB the image does not need
    rm -f "$r"/var/cache/apt/archives/*.deb
    [ -e "$r/vmlinuz" ] && [ -e "$r/initrd.img" ] || { echo "no /vmlinuz or /initrd.img" >&2; return 1; }
    local m
    for m in virtio_pci virtio_blk; do
        chroot "$r" lsinitramfs /initrd.img | grep -q "/$m\.ko\$" ||
            { echo "the initramfs lacks $m" >&2; return 1; }
    done
    { echo "serial --unit=0 --speed=115200"
      echo "terminal_input serial"
      echo "terminal_output serial"
      echo "set root=(hd0,msdos1)"
      echo "echo \"GRUB: loading Debian\""
      echo "linux /vmlinuz root=/dev/vda1 ro console=ttyS0 kvmbox.test=fw-rootfs"
      echo "initrd /initrd.img"
      echo "boot"; } >"$d/early.cfg"
}

# _fw_rm_tree DIR: removes a debootstrap work tree; a failed debootstrap can leave /proc and
# /sys mounted in it, so those are unmounted first and rm never leaves DIR's file system.
_fw_rm_tree() {
    local mp
    [ -d "$1" ] || return 0
    for mp in $(awk -v d="$(cd "$1" && pwd)/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r); do
        umount -l "$mp"
    done
    rm -rf --one-file-system "$1"
}

# fw_debian_rootfs_disk OUT LOG: a raw MBR disk whose ext4 partition holds a debootstrapped
# Debian root file system (made by mkfs.ext4 -d from the directory: no loop device, no mount)
# and GRUB 2 (boot.img + core.img, as fw_grub_disk_from) that boots its /vmlinuz and
# /initrd.img with root=/dev/vda1 console=ttyS0. Cached: OUT is kept with OUT.recipe (the
# recipe's hash) and only rebuilt when the recipe changes. debootstrap needs root and the
# Debian mirror, and takes minutes; its output goes to LOG. Status 0 when OUT is ready, 3
# when the mirror cannot be reached, 1 on any other failure (LOG says why). Concurrent
# callers are serialized on OUT.lock.
fw_debian_rootfs_disk() {
    local out=$1 log=$2 suite mirror sum d mib r lock
    suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    suite=${suite:-bookworm}
    sum=$( { declare -f _fw_rootfs_recipe fw_grub_disk_from fw_mbr; echo "$suite"; } | sha256sum | cut -c1-16)
    mkdir -p "$(dirname "$out")"
    exec {lock}>"$out.lock"
    flock "$lock"
    # what a build that was killed left (no other build runs: this one holds the lock)
    for d in "$(dirname "$out")"/rootfs-build.*; do _fw_rm_tree "$d"; done
    if [ -s "$out" ] && [ "$(cat "$out.recipe" 2>/dev/null)" = "$sum" ]; then
        exec {lock}>&-
        return 0
    fi
    mirror=$(fw_debian_mirror)
    if ! wget -q -T 30 -t 2 -O /dev/null "$mirror/dists/$suite/Release"; then
        echo "cannot reach the Debian mirror $mirror ($mirror/dists/$suite/Release)" >"$log"
        exec {lock}>&-
        return 3
    fi
    rm -f "$out" "$out.recipe"
    d=$(mktemp -d "$(dirname "$out")/rootfs-build.XXXXXX")
    r=1
    if _fw_rootfs_recipe "$d" "$suite" "$mirror" >"$log" 2>&1; then
        # room for the system's first boots (journal, logs): a quarter more, 256 MiB at least
        mib=$(du -sm "$d/root" | cut -f1)
        mib=$(( mib + (mib / 4 > 256 ? mib / 4 : 256) ))
        fw_grub_disk_from "$out.new" "$d" "$mib" biosdisk part_msdos ext2 linux serial terminal echo boot \
            >>"$log" 2>&1 && mv "$out.new" "$out" && echo "$sum" >"$out.recipe" && r=0
    fi
    rm -f "$out.new"
    _fw_rm_tree "$d"
    exec {lock}>&-
    return $r
}
