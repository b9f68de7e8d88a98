#!/bin/bash
# Firmware boot from disks (docs/firmware.md), with images built here offline from Debian
# packages (tests/fw-images.sh), each also booted by QEMU (-M pc -accel tcg) to prove the
# image itself:
#   - GRUB 2 on an MBR disk loads the acpi guest test (multiboot) with 2 vCPUs through
#     SeaBIOS: its PASS lines prove the ACPI tables came through the table loader and the
#     CPU count through fw_cfg;
#   - a disk with nothing bootable: SeaBIOS's "No bootable device" on the console, then status
#     8 and one line; bad firmware and CD images: one line, status 2;
#   - SYSLINUX (FAT disk) and ISOLINUX (hybrid ISO): under QEMU TCG, and under kvmbox only on
#     hosts that run guests natively (they stop on a 32-bit IRET that KVM's instruction
#     emulator cannot run).
# CD-ROM boot is tests/t-firmware-cd.sh; Linux through GRUB tests/t-linux-fw-early.sh.
cd "$(dirname "$0")/.." || exit 1
FW_WHAT=firmware
. tests/fw-run.sh
asan=0
case "$BUILD" in *asan*) asan=1 ;; esac

fw_grub_disk "$T/grub-acpi.img" "$GT/acpi.elf" "cpus=2" &&
fw_grub_iso "$T/grub-exit.iso" "$GT/debug-exit.elf" "code=4" &&
fw_syslinux_disk "$T/syslinux.img" "$GT/debug-exit.elf" "code=5" &&
fw_isolinux_iso "$T/isolinux.iso" "$GT/debug-exit.elf" "code=6" ||
    { fail "cannot build the boot images"; exit 1; }
truncate -s 16M "$T/empty.img"
pass "images built offline: GRUB disk and El Torito CD, SYSLINUX disk, ISOLINUX hybrid ISO"

# The images themselves, under QEMU (not again in the ASan pass: no kvmbox code runs).
if [ $have_qemu = 1 ] && [ $asan = 0 ]; then
    run_qemu q-grub -smp 2 -drive "file=$T/grub-acpi.img,format=raw,if=virtio"
    expect q-grub "qemu: GRUB disk -> acpi guest test" 1 "GRUB: loading" "SUMMARY: pass=" "fail=0"
    run_qemu q-syslinux -drive "file=$T/syslinux.img,format=raw,if=virtio"
    expect q-syslinux "qemu: SYSLINUX disk (mboot.c32) -> debug-exit" 11 "code=5"
    run_qemu q-isolinux -cdrom "$T/isolinux.iso"
    expect q-isolinux "qemu: ISOLINUX hybrid ISO as a CD -> debug-exit" 13 "code=6"
    run_qemu q-isohybrid -drive "file=$T/isolinux.iso,format=raw,if=virtio"
    expect q-isohybrid "qemu: ISOLINUX hybrid ISO as a disk -> debug-exit" 13 "code=6"
elif [ $have_qemu = 0 ]; then
    skip "qemu-system-x86_64 is not installed: the images are not cross-checked"
fi

# Bad input: one line, status 2.
bad() { # WHAT PATTERN ARGS...
    local what=$1 pat=$2 out st
    shift 2
    out=$("$KVMBOX" run "$@" --timeout 30 </dev/null 2>&1 >/dev/null)
    st=$?
    if [ $st = 2 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] && printf '%s' "$out" | grep -q "$pat"; then
        pass "$what: status 2, one line"
    else
        fail "$what: status $st, output: $out"
    fi
}
bad "missing firmware file" "cannot open the firmware" --firmware "$T/nope.bin" --disk "$T/empty.img,format=raw"
head -c 262144 /dev/zero >"$T/zero.bin"
bad "firmware without a reset vector" "not a BIOS image" --firmware "$T/zero.bin" --disk "$T/empty.img,format=raw"
head -c 1000 /dev/urandom >"$T/short.bin"
bad "firmware of a size no flash has" "not a BIOS image" --firmware "$T/short.bin" --disk "$T/empty.img,format=raw"
bad "--cdrom of a file that is not ISO 9660" "not an ISO 9660 image" --cdrom "$T/empty.img"
bad "--cdrom of a missing file" "cdrom" --cdrom "$T/nope.iso"
bad "--firmware uefi (OVMF needs an i440FX/Q35 chipset)" "i440FX or Q35" --firmware uefi --disk "$T/empty.img,format=raw"
bad "--kernel with --firmware" "exclude each other" --kernel "$GT/debug-exit.elf" --firmware bios
bad "--boot with an unknown device" "unknown device" --boot floppy --disk "$T/empty.img,format=raw"
bad "bootindex out of range" "bootindex" --disk "$T/empty.img,format=raw,bootindex=0"
# A VM that writes the ISO (as its disk) holds its write lock: another VM cannot use it as a CD.
cp "$T/grub-exit.iso" "$T/shared.iso"
"$KVMBOX" run --name "fw-writer-$$" --kernel "$GT/spin.elf" --disk "$T/shared.iso,format=raw" \
    --timeout 120 </dev/null >/dev/null 2>&1 &
writer=$!
bg_pids="$bg_pids $writer"
for _ in $(seq 100); do [ -S "$KVMBOX_RUNTIME_DIR/fw-writer-$$.sock" ] && break; sleep 0.2; done
bad "--cdrom of an image another VM writes" "in use by another process" --cdrom "$T/shared.iso"
kill "$writer" 2>/dev/null; wait "$writer" 2>/dev/null

run_kvmbox noboot --disk "$T/empty.img,format=raw" --no-reboot
if [ "$rc" = 8 ] && grep -aq "No bootable device" "$T/noboot.log" &&
   [ "$(wc -l <"$T/noboot.err")" = 1 ] && grep -q "no bootable device" "$T/noboot.err"; then
    pass "nothing bootable: the firmware says so on the console, status 8, one line (${secs}s)"
else
    fail "nothing bootable: status $rc, stderr: $(head -c 300 "$T/noboot.err")"
fi

run_kvmbox grub --disk "$T/grub-acpi.img,format=raw" --cpus 2 --mem 256M --no-reboot
expect grub "GRUB disk -> acpi guest test, 2 vCPUs (tables via the table loader)" 1 \
    "SeaBIOS" "GRUB: loading" "MADT has 2 enabled local APICs" "SUMMARY: pass=" "fail=0"

if [ $native = 1 ]; then
    run_kvmbox syslinux --disk "$T/syslinux.img,format=raw" --no-reboot
    expect syslinux "SYSLINUX disk (mboot.c32) -> debug-exit" 11 "code=5"
    run_kvmbox isolinux --cdrom "$T/isolinux.iso" --boot cdrom --no-reboot
    expect isolinux "ISOLINUX hybrid ISO, --cdrom --boot cdrom -> debug-exit" 13 "code=6"
else
    skip "SYSLINUX and ISOLINUX under kvmbox: they stop on a 32-bit IRET that this host's KVM instruction emulator cannot run ($native_why); QEMU TCG boots them above"
fi
[ $fails -eq 0 ]
