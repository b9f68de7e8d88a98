#!/bin/bash
# Runs the guest tests of tests.list under kvmbox (default) or QEMU (TCG) and checks each
# one's exit status and report. Prints one PASS:/FAIL:/SKIP: line per test.
#   guest-tests/run.sh [--vmm kvmbox|qemu] [--build DIR] [name...]
set -u
cd "$(dirname "$0")/.."
VMM=kvmbox
BUILD=${BUILD:-build}
while [ $# -gt 0 ]; do
    case "$1" in
    --vmm) VMM=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    *) break ;;
    esac
done
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
. tests/lib/progress.sh
GT=$BUILD/guest-tests
ONLY=" $* "
T=$(mktemp -d /tmp/kvmbox-gt.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0

if [ "$VMM" = qemu ] && ! command -v qemu-system-x86_64 >/dev/null; then
    echo "SKIP: guest tests under QEMU: qemu-system-x86_64 is not installed"
    exit 77
fi
if [ "$VMM" = kvmbox ] && [ ! -c /dev/kvm ]; then
    echo "SKIP: guest tests under kvmbox: no /dev/kvm on this host"
    exit 77
fi

to_bytes() { # 64M / 4G -> bytes
    local n=${1%[MG]}
    case "$1" in *G) echo $((n << 30)) ;; *M) echo $((n << 20)) ;; *) echo "$1" ;; esac
}

# run_one NAME KERNEL QUIET CPUS MEM REBOOT INPUT CMDLINE -> sets rc, output in $T/out. The VM
# runs until it ends, or until it has gone QUIET s without printing while its VMM used no
# CPU, or printed nothing while the VMM used QUIET CPU-seconds, or ran 10 x QUIET s in all
# (tests/lib/progress.sh): a busy host makes a test slower, never a failure.
run_one() {
    local kernel=$GT/$2.elf quiet=$3 cpus=$4 mem=$5 reboot=$6 input=$7 cmdline=$8
    local cmd
    if [ "$VMM" = kvmbox ]; then
        cmd=("$KVMBOX" run --kernel "$kernel" --cpus "$cpus" --mem "$mem" --cmdline "$cmdline")
        [ "$reboot" = noreboot ] && cmd+=(--no-reboot)
    else
        cmd=(qemu-system-x86_64 -accel tcg -M q35 -m "$mem" -smp "$cpus" -nographic -no-reboot
             -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$kernel" -append "$cmdline"
             -serial stdio -monitor none -display none -nodefaults)
    fi
    rm -f "$T/in" "$T/out"
    mkfifo "$T/in"
    # The feeder keeps the console's pipe open while the VM runs; with an input, it sends it
    # once the guest says it is ready. It lives as long as the VM (killed below).
    if [ "$input" != - ]; then
        ( until grep -q READY-FOR-INPUT "$T/out" 2>/dev/null; do sleep 0.1; done
          printf '%s\n' "$input"
          exec sleep 1000000 ) >"$T/in" &
    else
        ( exec sleep 1000000 ) >"$T/in" &
    fi
    local feeder=$!
    progress_run --name "guest/$1 ($VMM)" --quiet "$quiet" --cpu-quiet "$quiet" --cap $((quiet * 10)) \
        -- "${cmd[@]}" <"$T/in" >"$T/out" 2>&1
    rc=$?
    kill "$feeder" 2>/dev/null
    wait "$feeder" 2>/dev/null
}

while read -r name kernel quiet status cpus mem reboot input cmdline; do
    case "$name" in ''|\#*) continue ;; esac
    [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $name "* ]] || continue
    if [ ! -f "$GT/$kernel.elf" ]; then
        echo "FAIL: guest/$name ($VMM): $GT/$kernel.elf is not built"
        fails=$((fails + 1))
        continue
    fi
    cmdline=${cmdline//@NOW@/$(date +%s)}
    cmdline=${cmdline//@MEM@/$(to_bytes "$mem")}
    cmdline=${cmdline//@CPUS@/$cpus}
    start=$(date +%s.%N)
    run_one "$name" "$kernel" "$quiet" "$cpus" "$mem" "$reboot" "$input" "$cmdline"
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    out=$(tr -d '\r' <"$T/out")
    why=""
    if [ "$rc" != "$status" ]; then
        why="exit status $rc, expected $status"
    elif grep -q '^FAIL:' <<<"$out"; then
        why="$(grep '^FAIL:' <<<"$out" | head -1)"
    elif [ "$status" = 1 ] && ! grep -qE '^SUMMARY: pass=[1-9][0-9]* fail=0$' <<<"$out"; then
        why="no passing SUMMARY line"
    elif [ "$status" != 1 ] && ! grep -q '^PASS:' <<<"$out"; then
        why="no PASS line before the VM ended"
    fi
    if [ -z "$why" ]; then
        echo "PASS: guest/$name ($VMM, ${secs}s)"
    else
        echo "$out" | grep -v "^PASS" | tail -15 | sed 's/^/    | /'
        echo "FAIL: guest/$name ($VMM): $why"
        fails=$((fails + 1))
    fi
done <guest-tests/tests.list
[ $fails -eq 0 ]
