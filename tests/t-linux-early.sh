#!/bin/bash
# Linux early boot on kvmbox: Debian's cloud kernel, as a bzImage (64-bit boot protocol) and
# as vmlinux (PVH). The kernel's own messages must show the e820 map for --mem, the command
# line given, the ACPI tables kvmbox built and the number of CPUs configured. The check
# stops each boot as soon as it has what it needs (on an emulating host Linux never reaches
# init; these messages come within seconds for PVH, after decompression for bzImage).
set -u
cd "$(dirname "$0")/.."
KVMBOX=${KVMBOX:-build/kvmbox}
G=build/guest
if [ ! -c /dev/kvm ]; then
    echo "SKIP: linux early boot: no /dev/kvm on this host"
    exit 77
fi
if ! scripts/fetch-guest.sh "$G" >/dev/null 2>"${TMPDIR:-/tmp}/fetch-guest.err"; then
    echo "FAIL: linux early boot: cannot fetch the guest kernel: $(tail -1 "${TMPDIR:-/tmp}/fetch-guest.err")"
    exit 1
fi
T=$(mktemp -d /tmp/kvmbox-linux.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0

# boot NAME KERNEL MEM CPUS: runs until the patterns are all seen or WAIT seconds pass.
boot() {
    local name=$1 kernel=$2 mem=$3 cpus=$4 wait=150
    local cmdline="earlyprintk=ttyS0 console=ttyS0 kvmbox.test=$name"
    local log=$T/$name.log
    local start=$(date +%s.%N)
    "$KVMBOX" run --kernel "$kernel" --mem "$mem" --cpus "$cpus" --cmdline "$cmdline" \
        --timeout $((wait + 10)) </dev/null >"$log" 2>&1 &
    local pid=$!
    local need=("Command line: $cmdline" "ACPI: RSDP" "ACPI: XSDT" "ACPI: FACP" "ACPI: DSDT"
                "ACPI: APIC" "smpboot: Allowing $cpus CPUs" "BIOS-e820: \[mem 0x0000000000100000-")
    local i ok
    for ((i = 0; i < wait * 4; i++)); do
        ok=1
        for p in "${need[@]}"; do grep -q -- "$p" "$log" || { ok=0; break; }; done
        [ $ok = 1 ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.25
    done
    kill $pid 2>/dev/null
    wait $pid 2>/dev/null
    local secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    tr -d '\r' <"$log" >"$log.txt"
    log=$log.txt
    check() { # check DESCRIPTION PATTERN
        if grep -q -- "$2" "$log"; then echo "PASS: linux/$name: $1"; else echo "FAIL: linux/$name: $1 (not in the kernel's messages)"; fails=$((fails + 1)); fi
    }
    check "command line as given" "Command line: $cmdline\$"
    for t in RSDP XSDT FACP DSDT APIC; do check "ACPI $t table from kvmbox" "ACPI: $t 0x.*KVMBOX"; done
    check "$cpus CPUs found in the MADT" "smpboot: Allowing $cpus CPUs"
    local bytes
    case "$mem" in *G) bytes=$(( ${mem%G} << 30 )) ;; *) bytes=$(( ${mem%M} << 20 )) ;; esac
    local low_end=$(( bytes < 0xc0000000 ? bytes : 0xc0000000 ))
    check "e820 RAM from 1 MiB to $(printf '%#x' $low_end)" \
        "BIOS-e820: \[mem 0x0000000000100000-$(printf '0x%016x' $((low_end - 1)))\] usable"
    if [ $bytes -gt $((0xc0000000)) ]; then
        check "e820 RAM above 4 GiB" \
            "BIOS-e820: \[mem 0x0000000100000000-$(printf '0x%016x' $((0x100000000 + bytes - low_end - 1)))\] usable"
    fi
    echo "     linux/$name: messages seen after ${secs}s"
}

boot pvh-512M-2cpu "$G/vmlinux" 512M 2
boot pvh-4G-1cpu "$G/vmlinux" 4G 1
boot bzimage-512M-2cpu "$G/vmlinuz" 512M 2
[ $fails -eq 0 ]
