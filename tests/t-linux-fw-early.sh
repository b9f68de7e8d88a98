#!/bin/bash
# Linux through firmware: Debian's cloud kernel and the test initramfs (scripts/fetch-guest.sh)
# on an ext2 partition of an MBR disk, loaded by GRUB 2 (tests/fw-images.sh) that SeaBIOS
# booted. The same early-boot checks as tests/t-linux-early.sh, on the console as it streams:
#   - "Command line:" holds the command line GRUB was given;
#   - the e820 map (now SeaBIOS's): usable RAM adds up to --mem less at most 4 MiB of
#     firmware and legacy holes, none in the legacy or below-4-GiB MMIO holes;
#   - the ACPI tables RSDP, XSDT, FACP, DSDT, APIC are kvmbox's (OEM ID KVMBOX): the firmware
#     placed them through the table loader;
#   - "smpboot: Allowing 2 CPUs".
# The VM is stopped as soon as all was seen (Linux reaches no further on a host whose KVM
# emulates guest code). One run: GRUB reading 14 MB through the BIOS and the kernel
# decompressing itself take minutes there. The same disk also boots under QEMU TCG.
# Native hosts only: the CD is /dev/sr0 and mountable in the guest (direct kernel boot with
# --cdrom). A Debian root file system booted by GRUB to a login prompt: t-linux-fw-rootfs.sh.
cd "$(dirname "$0")/.." || exit 1
# On a host whose KVM emulates guest code, GRUB reads the 14 MB kernel for minutes and the
# kernel then decompresses itself for minutes more without a word on the console (measured:
# 174 s and 460 s under load; 12 minutes from start to the CPU line): the quiet limit must
# outlast that. (tests/run-all.sh's fixed 300 s per script is too short for this one there.)
FW_IDLE=${FW_IDLE:-900}
FW_CAP=${FW_CAP:-1800}
FW_WHAT=linux-fw-early
. tests/fw-run.sh
G=$BUILD/guest
[ -d "$G" ] || G=build/guest
# shellcheck disable=SC2034 # read by tests/linux-guest.sh
VMM=kvmbox
. tests/linux-guest.sh
# On an emulating host this one test takes 12 minutes or more, over a third of the CI budget,
# to show what t-firmware.sh (SeaBIOS -> GRUB -> a guest) and t-linux-early.sh (the same
# kernel, direct boot) show in two: there it runs only when asked (make check-slow).
if [ -z "${KVMBOX_SLOW_TESTS:-}" ] && ! why=$(scripts/host-native.sh); then
    echo "SKIP: $FW_WHAT: $why; Linux through GRUB takes 12+ minutes here: run it with make check-slow"
    exit 77
fi
linux_fetch_guest "$FW_WHAT" "$T/fetch.log" || exit 1
cmdline="earlyprintk=ttyS0 console=ttyS0 kvmbox.test=fw-early"
fw_grub_linux_disk "$T/linux.img" "$G/vmlinuz" "$G/initramfs.cpio.gz" "$cmdline" ||
    { fail "cannot build the GRUB disk"; exit 1; }
mem=512M cpus=2

# boot_until NAME PATTERN-FILE CMD...: runs CMD with its console in $T/NAME.log until every
# pattern (one per line) was seen, the console is quiet for IDLE s, or CAP s pass; then stops it.
boot_until() {
    local name=$1 pats=$2 log=$T/$1.log
    shift 2
    : >"$log"
    "$@" </dev/null >"$log" 2>"$T/$name.err" &
    local pid=$! t0=$SECONDS last=-1 quiet=0 size
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        local missing=0 p
        while IFS= read -r p; do grep -aqE -- "$p" "$log" || { missing=1; break; }; done <"$pats"
        [ $missing = 0 ] && break
        size=$(stat -c %s "$log")
        if [ "$size" != "$last" ]; then last=$size quiet=0; else quiet=$((quiet + 1)); fi
        [ $quiet -ge "$IDLE" ] && break
        [ $((SECONDS - t0)) -ge "$CAP" ] && break
    done
    secs=$((SECONDS - t0))
    kill "$pid" 2>/dev/null; sleep 1; kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    tr -d '\r' <"$log" >"$log.txt"
}

printf '%s\n' 'Command line: ' 'BIOS-e820: ' 'ACPI: APIC ' 'smpboot: Allowing [0-9]+ CPUs' >"$T/pats"

check_boot() { # NAME OEM
    local name=$1 oem=$2 log=$T/$1.log.txt miss="" p
    while IFS= read -r p; do grep -aqE -- "$p" "$log" || miss="$miss [$p]"; done <"$T/pats"
    if [ -n "$miss" ]; then
        fail "$name: GRUB -> Linux early boot: missing$miss after ${secs}s"
        grep -av '^\s*$' "$log" | tail -4 | sed 's/^/    | /'
        return
    fi
    pass "$name: SeaBIOS -> GRUB -> Linux early boot complete after ${secs}s"
    local got
    got=$(grep -a -m1 -o 'Command line: .*' "$log")
    case "$got" in *" $cmdline") pass "$name: command line from GRUB ($got)" ;;
    *) fail "$name: command line: got '$got'" ;; esac
    # usable e820 RAM: inside --mem, at most 4 MiB less, none in the holes
    local s e total=0 bad=""
    while read -r s e; do
        s=$((s)) e=$((e + 1)); total=$((total + e - s))
        if { [ $s -lt $((0x100000)) ] && [ $e -gt $((0xa0000)) ]; } ||
           { [ $s -lt $((1 << 32)) ] && [ $e -gt $((0xc0000000)) ]; }; then bad="$bad $s-$e"; fi
    done < <(grep -ao 'BIOS-e820: \[mem 0x[0-9a-f]*-0x[0-9a-f]*\] usable' "$log" | sort -u |
             sed 's/.*\[mem \(0x[0-9a-f]*\)-\(0x[0-9a-f]*\)\].*/\1 \2/')
    local want=$((512 << 20))
    if [ -z "$bad" ] && [ $total -le $want ] && [ $total -ge $((want - (4 << 20))) ]; then
        pass "$name: e820 (from the firmware): $total usable bytes for --mem $mem"
    else
        fail "$name: e820: $total usable bytes for --mem $mem${bad:+, in a hole:$bad}"
    fi
    local t
    if [ -n "$oem" ]; then
        for t in RSDP XSDT FACP DSDT APIC; do
            if grep -aq "ACPI: $t 0x[0-9A-F]* [0-9A-F]* (v[0-9]* $oem" "$log"; then
                pass "$name: ACPI $t is kvmbox's, placed by the firmware"
            else fail "$name: ACPI $t: $(grep -a -m1 -o "ACPI: $t .*" "$log" || echo "not printed")"; fi
        done
    fi
    got=$(grep -a -m1 -o 'smpboot: Allowing [0-9]* CPUs' "$log")
    if [ "$got" = "smpboot: Allowing $cpus CPUs" ]; then pass "$name: $cpus CPUs (MADT, fw_cfg)"
    else fail "$name: CPUs: got '${got:-nothing}'"; fi
}

if [ $have_qemu = 1 ]; then
    boot_until qemu "$T/pats" qemu-system-x86_64 -M pc -accel tcg -m $mem -smp $cpus -display none \
        -monitor none -serial stdio -no-reboot -drive "file=$T/linux.img,format=raw,if=virtio"
    check_boot qemu ""
fi
boot_until kvmbox "$T/pats" "$KVMBOX" run --name "fw-linux-$$" --disk "$T/linux.img,format=raw" \
    --mem $mem --cpus $cpus --no-reboot
check_boot kvmbox KVMBOX

if [ $native = 0 ]; then
    skip "the ISO as /dev/sr0 in a Linux guest, and a Debian root file system booted by GRUB to a login prompt and shut down: they need a host that runs guests natively ($native_why)"
else
    # /dev/sr0: the guest's init mounts the CD and lists it.
    fw_grub_iso "$T/cd.iso" "$GT/debug-exit.elf" "code=1"
    boot_until sr0 <(printf '%s\n' 'KVMBOX-GUEST: cmd exit=') "$KVMBOX" run --name "fw-sr0-$$" \
        --kernel "$G/vmlinuz" --initrd "$G/initramfs.cpio.gz" --cdrom "$T/cd.iso" --mem 512M \
        --cmdline "console=ttyS0 kvmbox.cmd=\"mkdir -p /mnt && mount -t iso9660 -o ro /dev/sr0 /mnt && ls /mnt/boot\""
    if grep -aq 'kernel.elf' "$T/sr0.log.txt" && grep -aq 'cmd exit=0' "$T/sr0.log.txt"; then
        pass "the ISO is /dev/sr0 in Linux and mounts (ISO 9660)"
    else
        fail "the ISO as /dev/sr0: $(grep -a 'KVMBOX-GUEST' "$T/sr0.log.txt" | tail -2)"
    fi
fi
[ $fails -eq 0 ]
