#!/bin/bash
# Linux early boot: Debian's cloud kernel (scripts/fetch-guest.sh) booted by kvmbox as a
# bzImage (64-bit boot protocol) and as vmlinux (PVH entry), with 512M/2 CPUs and 4G/1 CPU (the
# second puts RAM above 4 GiB). The console is read as it streams and the VM is killed as soon
# as the kernel has printed what the checks need, so this passes on a host whose KVM emulates
# guest code (Linux gets through early boot there but never reaches init):
#   - "Command line:" is exactly the command line given;
#   - the e820 map: usable RAM adds up to --mem (less at most 2 MiB of firmware and legacy
#     holes), none in the legacy VGA/BIOS hole or the 4 GiB-below MMIO window, and RAM above
#     4 GiB when --mem does not fit below the PCI hole;
#   - "RAMDISK:" covers the initrd's size, page-rounded;
#   - the ACPI table lines for RSDP, XSDT, FACP, DSDT and APIC, and, under kvmbox, that they
#     are kvmbox's own (OEM ID KVMBOX);
#   - "smpboot: Allowing N CPUs" with N = --cpus.
# Each check prints PASS:/FAIL:, and each boot how long the kernel took to print it all.
#
# LINUX_EARLY_VMM=qemu runs the same checks against QEMU TCG (q35, SeaBIOS; its root table is
# an RSDT), to validate the checks themselves.
#
# Time limits follow the guest's progress (tests/lib/progress.sh), never a guess of this
# host's speed: a boot is given up when its console has printed nothing while the VMM used
# LINUX_EARLY_CPU_QUIET CPU-seconds (default 600: a bzImage decompresses its 14 MB payload
# in silence, about 120 CPU-s under an emulating KVM), or printed nothing and used no CPU for
# LINUX_EARLY_QUIET s (default 60: stuck), or after LINUX_EARLY_CAP s in all (default 1800).
# A busy host makes the boots slower, not failures.
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
VMM=${LINUX_EARLY_VMM:-kvmbox}
G=build/guest
QUIET=${LINUX_EARLY_QUIET:-60} CPU_QUIET=${LINUX_EARLY_CPU_QUIET:-600} CAP=${LINUX_EARLY_CAP:-1800}
T=$(mktemp -d /tmp/kvmbox-linux-early.XXXXXX)
trap 'rm -rf "$T"' EXIT
. tests/lib/progress.sh

case "$VMM" in
kvmbox)
    [ -c /dev/kvm ] || { echo "SKIP: linux early boot: no /dev/kvm on this host"; exit 77; }
    [ -x "$KVMBOX" ] || { echo "FAIL: linux early boot: $KVMBOX is not built"; exit 1; } ;;
qemu)
    command -v qemu-system-x86_64 >/dev/null ||
        { echo "SKIP: linux early boot (qemu): qemu-system-x86_64 is not installed"; exit 77; } ;;
*) echo "FAIL: linux early boot: LINUX_EARLY_VMM must be kvmbox or qemu, not $VMM"; exit 1 ;;
esac
. tests/linux-guest.sh
linux_fetch_guest "linux early boot" "$T/fetch.log" || exit 1
initrd=$G/initramfs.cpio.gz
initrd_bytes=$(stat -c %s "$initrd")
fails=0

pass() { echo "PASS: linux-early/$VMM/$name: $1"; }
fail() { echo "FAIL: linux-early/$VMM/$name: $1"; fails=$((fails + 1)); }
check() { if [ "$1" = ok ]; then pass "$2"; else fail "$2${1:+ ($1)}"; fi; }

bytes_of() { # bytes_of 512M|4G
    case "$1" in *G) echo $(( ${1%G} << 30 )) ;; *M) echo $(( ${1%M} << 20 )) ;; *) echo "$1" ;; esac
}

# start_vm KERNEL MEM CPUS CMDLINE LOG: the VM in the background under the progress limits,
# its console in LOG; the watchdog's pid in $vm_pid (a SIGTERM to it stops the VM).
start_vm() {
    local kernel=$1 mem=$2 cpus=$3 cmdline=$4 log=$5 cmd
    if [ "$VMM" = kvmbox ]; then
        cmd=("$KVMBOX" run --kernel "$kernel" --initrd "$initrd" --mem "$mem" --cpus "$cpus"
             --cmdline "$cmdline")
    else
        cmd=(qemu-system-x86_64 -accel tcg -M q35 -kernel "$kernel" -initrd "$initrd" -m "$mem"
             -smp "$cpus" -append "$cmdline" -nographic -serial stdio -monitor none -no-reboot)
    fi
    "$PROGRESS" run --name "$name" --quiet "$QUIET" --cpu-quiet "$CPU_QUIET" --cap "$CAP" \
        -- "${cmd[@]}" </dev/null >"$log" 2>&1 &
    vm_pid=$!
}

# e820_check MEM_BYTES LOG: "ok" or what is wrong with the usable ranges in LOG.
e820_check() {
    local mem=$1 log=$2
    grep -ao 'BIOS-e820: \[mem 0x[0-9a-f]*-0x[0-9a-f]*\] usable' "$log" | sort -u |
        sed 's/.*\[mem \(0x[0-9a-f]*\)-\(0x[0-9a-f]*\)\].*/\1 \2/' >"$T/usable"
    [ -s "$T/usable" ] || { echo "no usable e820 range printed"; return; }
    local s e total=0 high=0 bad=""
    while read -r s e; do
        s=$((s)) e=$((e + 1))
        total=$((total + e - s))
        [ $s -ge $((1 << 32)) ] && high=1
        # legacy VGA/option-ROM/BIOS area, and the LAPIC/IOAPIC/firmware window below 4 GiB
        if { [ $s -lt $((0x100000)) ] && [ $e -gt $((0xa0000)) ]; } ||
           { [ $s -lt $((1 << 32)) ] && [ $e -gt $((0xfec00000)) ]; }; then
            bad="$bad $(printf '%#x-%#x' $s $((e - 1)))"
        fi
    done <"$T/usable"
    if [ -n "$bad" ]; then echo "usable RAM in a hole:$bad"; return; fi
    if [ $total -gt "$mem" ] || [ $total -lt $((mem - (2 << 20))) ]; then
        echo "usable RAM adds up to $total bytes for --mem $mem"; return
    fi
    # QEMU q35 and kvmbox both put RAM past 2.75 GiB above 4 GiB.
    if [ "$mem" -gt $((0xb0000000)) ] && [ $high = 0 ]; then
        echo "no usable range above 4 GiB"; return
    fi
    echo ok
}

# boot NAME KERNEL MEM CPUS: one boot and its checks.
boot() {
    name=$1
    local kernel=$2 mem=$3 cpus=$4
    local cmdline="earlyprintk=ttyS0 console=ttyS0 kvmbox.test=$name"
    local root=XSDT oem=KVMBOX
    [ "$VMM" = qemu ] && root=RSDT oem=""
    local -A need=(
        [cmdline]="Command line: " [e820]="BIOS-e820: " [ramdisk]="RAMDISK: \[mem "
        [RSDP]="ACPI: RSDP " [$root]="ACPI: $root " [FACP]="ACPI: FACP " [DSDT]="ACPI: DSDT "
        [APIC]="ACPI: APIC " [smp]="smpboot: Allowing [0-9]+ CPUs"
    )
    local log=$T/$name.log k missing secs rc
    : >"$log"
    local t0=$EPOCHREALTIME
    start_vm "$kernel" "$mem" "$cpus" "$cmdline" "$log"
    # Look at the console as it grows until every pattern was seen or the VM has ended (by
    # itself or by its progress limits).
    while [ ${#need[@]} -gt 0 ]; do
        kill -0 "$vm_pid" 2>/dev/null || break
        sleep 0.5
        for k in "${!need[@]}"; do
            tr -d '\r' <"$log" | grep -aqE -- "${need[$k]}" && unset "need[$k]"
        done
    done
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    missing="${!need[*]}"
    kill "$vm_pid" 2>/dev/null # SIGTERM to the VMM alone (SIGKILL 10 s later if need be)
    wait "$vm_pid"
    rc=$?
    tr -d '\r' <"$log" >"$log.txt" && mv "$log.txt" "$log"
    if [ -n "$missing" ]; then
        if grep -q '^progress: ' "$log"; then
            fail "boot: still missing [$missing] after ${secs}s: $(grep -m1 '^progress: ' "$log")"
        else
            fail "boot: $VMM exited with status $rc after ${secs}s, before printing [$missing]"
        fi
        grep -av '^\s*$' "$log" | tail -4 | sed 's/^/    | /'
    else
        pass "boot: early-boot messages complete after ${secs}s"
    fi

    local got
    got=$(grep -a -m1 -o 'Command line: .*' "$log")
    got=${got#Command line: }
    if [ "$got" = "$cmdline" ]; then check ok "command line as given"
    else check "got '${got:-nothing}'" "command line as given"; fi

    check "$(e820_check "$(bytes_of "$mem")" "$log")" "e820 usable RAM consistent with --mem $mem"

    local r rs re want
    r=$(grep -a -m1 -o 'RAMDISK: \[mem 0x[0-9a-f]*-0x[0-9a-f]*\]' "$log")
    want=$(( (initrd_bytes + 4095) / 4096 * 4096 ))
    if [ -n "$r" ]; then
        rs=${r#*mem } rs=${rs%-*} re=${r#*-} re=${re%]}
        if [ $((re - rs + 1)) -eq $want ]; then check ok "initrd reserved ($r, $initrd_bytes bytes)"
        else check "$r is $((re - rs + 1)) bytes, initrd rounds to $want" "initrd reserved"; fi
    else
        check "no RAMDISK line" "initrd reserved"
    fi

    local t
    for t in RSDP $root FACP DSDT APIC; do
        if [ -n "$oem" ]; then
            if grep -aq "ACPI: $t 0x[0-9A-F]* [0-9A-F]* (v[0-9]* $oem" "$log"; then check ok "ACPI $t ($oem)"
            else check "$(grep -a -m1 -o "ACPI: $t .*" "$log" || echo "not printed")" "ACPI $t ($oem)"; fi
        elif grep -aq "ACPI: $t 0x" "$log"; then check ok "ACPI $t"
        else check "not printed" "ACPI $t"; fi
    done

    got=$(grep -a -m1 -o 'smpboot: Allowing [0-9]* CPUs' "$log")
    if [ "$got" = "smpboot: Allowing $cpus CPUs" ]; then check ok "$cpus CPUs found (MADT)"
    else check "got '${got:-nothing}'" "$cpus CPUs found (MADT)"; fi
}

for cfg in "512M 2" "4G 1"; do
    # shellcheck disable=SC2086 # two words: intended splitting
    set -- $cfg
    boot "pvh-$1-$2cpu" "$G/vmlinux" "$1" "$2"
    # The bzImage first decompresses its 14 MB LZ4 payload: 45 s to 2 min through KVM's
    # emulator. Once is enough to prove the 64-bit boot protocol path; the 4 GiB layout is
    # the same e820 and ACPI code, covered by the PVH boot above (keeps CI within its time).
    if [ "$1" = 512M ] || [ "${LINUX_EARLY_ALL:-0}" = 1 ]; then
        boot "bzimage-$1-$2cpu" "$G/vmlinuz" "$1" "$2"
    fi
done
[ $fails -eq 0 ]
