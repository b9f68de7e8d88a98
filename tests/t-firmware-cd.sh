#!/bin/bash
# Firmware boot from a CD-ROM (virtio-scsi, El Torito) and the boot order: a GRUB El Torito
# CD (tests/fw-images.sh) and a GRUB disk, with --boot once=cdrom. The CD's kernel (the reset
# guest test) resets the machine; the next boot follows the normal order (disk first), whose
# kernel (debug-exit code=3) ends kvmbox with status 7. QEMU boots the same CD first.
cd "$(dirname "$0")/.." || exit 1
FW_WHAT=firmware-cd
. tests/fw-run.sh
fw_grub_disk "$T/grub-exit.img" "$GT/debug-exit.elf" "code=3" &&
fw_grub_iso "$T/grub-reset.iso" "$GT/reset.elf" "method=kbd" ||
    { fail "cannot build the boot images"; exit 1; }
case "$BUILD" in *asan*) ;; *)
    if [ $have_qemu = 1 ]; then
        run_qemu q-cd -cdrom "$T/grub-reset.iso"
        expect q-cd "qemu: GRUB El Torito CD -> reset guest test" 0 "PASS: resetting"
    fi ;;
esac
case "$BUILD" in
*asan*) # the sanitizers need the CD path once, not a second GRUB boot
    run_kvmbox cd --disk "$T/grub-exit.img,format=raw" --cdrom "$T/grub-reset.iso" --boot cdrom --no-reboot
    expect cd "--cdrom with --boot cdrom: the CD boots first" 0 "Booting from DVD/CD" "PASS: resetting" ;;
*)
    run_kvmbox once --disk "$T/grub-exit.img,format=raw" --cdrom "$T/grub-reset.iso" --boot once=cdrom
    expect once "--cdrom with --boot once=cdrom: the CD boots, resets, then the disk boots" 7 \
        "Booting from DVD/CD" "PASS: resetting" "Booting from Hard Disk" "code=3" ;;
esac
[ $fails -eq 0 ]
