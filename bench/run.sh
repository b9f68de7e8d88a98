#!/bin/bash
# make bench: start-up time, memory and PIO exit cost of kvmbox against QEMU (microvm and
# q35, -accel kvm) on the same tiny bare-metal guest, in one run. Prints a table with ratios.
# Not a test: numbers vary with the host. Results are recorded in docs/benchmarks.md.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
RUNS=${RUNS:-30}
PIO_N=${PIO_N:-100000}
MARKER=KVMBOX-MARKER
GT=$BUILD/guest-tests
T=$(mktemp -d /tmp/kvmbox-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
gcc -O2 -o "$T/startmark" bench/startmark.c || exit 1
QEMU=$(command -v qemu-system-x86_64 || true)
QCPU="-cpu host,-arch-capabilities"

echo "kvmbox $($KVMBOX --version | cut -d' ' -f2), $(nproc) CPUs, kernel $(uname -r), $(date -u +%F)"
echo "guest: $GT/marker.elf (prints a marker, then debug-exit); $RUNS runs each; times in ms"
echo

declare -A MED
measure() { # measure NAME CMD...
    local name=$1
    shift
    if ! "$T/startmark" "$RUNS" "$MARKER" -- "$@" >"$T/$name" 2>"$T/$name.err"; then
        printf '%-14s failed: %s\n' "$name" "$(head -2 "$T/$name.err" | tr '\n' ' ')"
        return 1
    fi
    local m e r
    m=$(awk '/marker_ms/ {print $2" ("$3"-"$4")"}' "$T/$name")
    e=$(awk '/exit_ms/ {print $2" ("$3"-"$4")"}' "$T/$name")
    r=$(awk '/rss_kib/ {printf "%.1f", $2/1024}' "$T/$name")
    MED[$name.marker]=$(awk '/marker_ms/ {print $2}' "$T/$name")
    MED[$name.exit]=$(awk '/exit_ms/ {print $2}' "$T/$name")
    MED[$name.rss]=$r
    printf '%-14s %-24s %-24s %8s\n' "$name" "$m" "$e" "$r"
}

printf '%-14s %-24s %-24s %8s\n' "vmm" "start->marker med(min-max)" "start->exit med(min-max)" "RSS MiB"
measure kvmbox "$KVMBOX" run --kernel "$GT/marker.elf" --mem 64M
if [ -n "$QEMU" ]; then
    measure qemu-microvm "$QEMU" -M microvm -accel kvm $QCPU -m 64M -nodefaults -no-user-config \
        -nographic -serial stdio -monitor none -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -kernel "$GT/marker.elf"
    measure qemu-q35 "$QEMU" -M q35 -accel kvm $QCPU -m 64M -nodefaults -no-user-config \
        -nographic -serial stdio -monitor none -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -kernel "$GT/marker.elf"
fi

echo
echo "ratios (other / kvmbox, median):"
for q in qemu-microvm qemu-q35; do
    [ -n "${MED[$q.marker]:-}" ] || continue
    awk -v n="$q" -v a="${MED[kvmbox.marker]}" -v b="${MED[$q.marker]}" \
        -v c="${MED[kvmbox.exit]}" -v d="${MED[$q.exit]}" -v e="${MED[kvmbox.rss]}" -v f="${MED[$q.rss]}" \
        'BEGIN { printf "  %-14s marker %.1fx  exit %.1fx  RSS %.1fx\n", n, b/a, d/c, f/e }'
done

# Own memory: RSS minus the guest RAM the guest touched (guest RAM is the VMM's anonymous
# memory, so its touched pages count in RSS; with transparent huge pages one touch costs
# 2 MiB). Measured on a running VM (marker.elf halt=1) from /proc/PID/smaps: the guest RAM
# mapping is the one sized like --mem.
own_memory() { # own_memory NAME CMD...
    local name=$1
    shift
    "$@" </dev/null >"$T/own-$name" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do grep -q "$MARKER" "$T/own-$name" 2>/dev/null && break; sleep 0.05; done
    sleep 0.2
    local child
    child=$(pgrep -P "$pid" | head -1)
    awk -v memkb=65536 '
        /^[0-9a-f]+-[0-9a-f]+ / { inmap = 0 }
        /^Size:/ { size = $2; if (size >= memkb && size <= memkb + 4096) inmap = 1 }
        /^Rss:/ { total += $2; if (inmap) guest += $2 }
        END { printf "  %-14s RSS %6.2f MiB = guest RAM touched %5.2f MiB + own %5.2f MiB\n", n, total/1024, guest/1024, (total-guest)/1024 }
    ' n="$name" "/proc/${child:-$pid}/smaps" 2>/dev/null || echo "  $name: could not read smaps"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
echo
echo "memory of a running VM (64 MiB guest, halted after the marker):"
own_memory kvmbox "$KVMBOX" run --kernel "$GT/marker.elf" --mem 64M --cmdline halt=1
if [ -n "$QEMU" ]; then
    own_memory qemu-microvm "$QEMU" -M microvm -accel kvm $QCPU -m 64M -nodefaults -no-user-config \
        -nographic -serial stdio -monitor none -kernel "$GT/marker.elf" -append halt=1
fi

echo
echo "PIO exit round trip ($PIO_N writes to port 0x80 by $GT/pio.elf, minus the marker-only run):"
pio_cost() { # pio_cost NAME CMD...  -> us per exit
    local name=$1
    shift
    RUNS_SAVE=$RUNS
    "$T/startmark" 5 "$MARKER" -- "$@" >"$T/pio-$name" 2>/dev/null || { echo "  $name: failed"; return; }
    local full base
    full=$(awk '/exit_ms/ {print $2}' "$T/pio-$name")
    base=${MED[$name.exit]:-0}
    awk -v n="$name" -v f="$full" -v b="$base" -v c="$PIO_N" \
        'BEGIN { printf "  %-14s %.2f us per exit (%.0f ms total)\n", n, (f-b)*1000/c, f }'
}
pio_cost kvmbox "$KVMBOX" run --kernel "$GT/pio.elf" --mem 64M --cmdline "count=$PIO_N"
if [ -n "$QEMU" ]; then
    pio_cost qemu-microvm "$QEMU" -M microvm -accel kvm $QCPU -m 64M -nodefaults -no-user-config \
        -nographic -serial stdio -monitor none -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -kernel "$GT/pio.elf" -append "count=$PIO_N"
    pio_cost qemu-q35 "$QEMU" -M q35 -accel kvm $QCPU -m 64M -nodefaults -no-user-config \
        -nographic -serial stdio -monitor none -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -kernel "$GT/pio.elf" -append "count=$PIO_N"
fi
