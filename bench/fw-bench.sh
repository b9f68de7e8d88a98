#!/bin/bash
# make bench-fw (part of make bench): firmware boot from a disk, kvmbox against QEMU -M pc and
# -M q35 (-accel kvm, SeaBIOS) on the same image: a GRUB 2 disk (tests/fw-images.sh) whose
# GRUB loads the marker guest test (multiboot). Two times per run, from just before the VMM
# starts: to the boot loader's first output ("GRUB" from boot.img, through the BIOS's
# console) and to the guest kernel's KVMBOX-MARKER. Median (min-max) of RUNS runs (default
# 10). Not a test: numbers vary with the host; docs/benchmarks.md records them.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
RUNS=${RUNS:-10}
CAP=${FW_BENCH_CAP:-600}
GT=$BUILD/guest-tests
T=$(mktemp -d /tmp/kvmbox-fw-bench.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/cfg
mkdir -p "$KVMBOX_RUNTIME_DIR" "$KVMBOX_CONFIG_DIR"
trap 'rm -rf "$T"' EXIT
. tests/fw-images.sh
missing=$(fw_images_missing)
[ -z "$missing" ] || { echo "fw-bench: missing tools:$missing (scripts/deps.sh)"; exit 1; }
fw_grub_disk "$T/disk.img" "$GT/marker.elf" "" || { echo "fw-bench: cannot build the disk"; exit 1; }
QEMU=$(command -v qemu-system-x86_64 || true)
QCPU="-cpu host,-arch-capabilities"

# one_run CMD...: prints "LOADER_MS MARKER_MS" (or "- -" when the marker did not come). The
# console is read a character at a time: boot.img's "GRUB " ends no line.
one_run() {
    local t0=$EPOCHREALTIME tl="" tm="" c tail="" deadline=$((SECONDS + CAP))
    exec {fd}< <(exec "$@" </dev/null 2>/dev/null)
    local pid=$!
    while [ $SECONDS -lt $deadline ] && IFS= read -r -N 1 -t $((deadline - SECONDS)) -u "$fd" c; do
        tail="$tail$c"
        [ ${#tail} -gt 16 ] && tail=${tail:1}
        [ -z "$tl" ] && [[ $tail == *GRUB* ]] && tl=$EPOCHREALTIME
        if [[ $tail == *KVMBOX-MARKER* ]]; then tm=$EPOCHREALTIME; break; fi
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    exec {fd}<&-
    [ -n "$tm" ] || { echo "- -"; return; }
    awk -v a="$t0" -v b="$tl" -v c="$tm" 'BEGIN { printf "%.0f %.0f\n", (b - a) * 1000, (c - a) * 1000 }'
}

stats() { # median (min-max) of the numbers on stdin
    sort -n | awk '{ v[NR] = $1 } END { if (!NR) { print "-"; exit }
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.0f (%.0f-%.0f)", m, v[1], v[NR] }'
}

declare -A MED
measure() { # NAME CMD...
    local name=$1 i
    shift
    : >"$T/$name"
    for ((i = 0; i < RUNS; i++)); do one_run "$@" >>"$T/$name"; done
    if grep -q -- - "$T/$name"; then
        printf '%-12s %s of %s runs did not reach the marker\n' "$name" "$(grep -c -- - "$T/$name")" "$RUNS"
        return
    fi
    local l m
    l=$(cut -d' ' -f1 "$T/$name" | stats)
    m=$(cut -d' ' -f2 "$T/$name" | stats)
    MED[$name]=${m%% *}
    printf '%-12s %-26s %-26s\n' "$name" "$l" "$m"
}

echo "firmware boot: GRUB 2 disk -> multiboot marker guest; SeaBIOS; $RUNS runs each; ms"
echo "kvmbox $($KVMBOX --version | cut -d' ' -f2), $(nproc) CPUs, kernel $(uname -r), $(date -u +%F)"
printf '%-12s %-26s %-26s\n' vmm "start->GRUB med(min-max)" "start->marker med(min-max)"
measure kvmbox "$KVMBOX" run --disk "$T/disk.img,format=raw" --mem 256M --no-reboot
if [ -n "$QEMU" ]; then
    for m in pc q35; do
        measure "qemu-$m" "$QEMU" -M $m -accel kvm $QCPU -m 256M -nodefaults -no-user-config \
            -nographic -serial stdio -monitor none -no-reboot \
            -device isa-debug-exit,iobase=0xf4,iosize=4 -drive "file=$T/disk.img,format=raw,if=virtio"
    done
    for m in pc q35; do
        [ -n "${MED[qemu-$m]:-}" ] && [ -n "${MED[kvmbox]:-}" ] &&
            awk -v n="qemu-$m" -v a="${MED[kvmbox]}" -v b="${MED[qemu-$m]}" \
                'BEGIN { printf "  %s / kvmbox (marker, median): %.2fx\n", n, b / a }'
    done
fi
