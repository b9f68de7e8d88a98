#!/bin/bash
# virtio-blk end to end: guest-tests/virtio-blk.elf and virtio-evil.elf run against disk
# images made with qemu-img, then the host checks what the guest left behind.
#   tests/t-virtio-blk.sh [--vmm kvmbox|qemu]     (or KVMBOX_VMM=qemu: QEMU TCG, to validate)
# Scenarios: a raw disk; a qcow2 disk; a qcow2 overlay over a raw base (the base must not
# change); two rw disks (raw, qcow2) and a read-only qcow2 disk; the hostile-ring kernel on
# two disks. After each run: exit status 1 and a passing SUMMARY line; qemu-img check clean
# for every qcow2; every rw disk holds the final pattern documented at the top of
# guest-tests/virtio-blk.c (recomputed here in Python, qcow2 read through qemu-img convert);
# read-only images and the overlay's base have the same sha256 as before.
# DISK_MB (default 2) sizes the disks: on an emulating host guest code is slow.
# Each VM runs until it ends, or until it prints nothing while its VMM uses no CPU for
# QUIET s (default 120), or prints nothing while using 600 CPU-seconds, or for 1200 s in all
# (tests/lib/progress.sh): a busy host makes it slower, never a failure.
set -u
cd "$(dirname "$0")/.." || exit 1
VMM=${KVMBOX_VMM:-kvmbox}
[ "${1:-}" = --vmm ] && VMM=${2:-kvmbox}
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
GT=$BUILD/guest-tests
DISK_MB=${DISK_MB:-2}
MEM=64M
QUIET=${QUIET:-120}
T=$(mktemp -d /tmp/kvmbox-vblk.XXXXXX)
trap 'rm -rf "$T"' EXIT
. tests/lib/progress.sh
fails=0

for tool in qemu-img python3; do
    if ! command -v $tool >/dev/null; then
        echo "SKIP: virtio-blk: $tool is not installed"
        exit 77
    fi
done
if [ "$VMM" = qemu ] && ! command -v qemu-system-x86_64 >/dev/null; then
    echo "SKIP: virtio-blk (qemu): qemu-system-x86_64 is not installed"
    exit 77
fi
if [ "$VMM" = kvmbox ] && [ ! -c /dev/kvm ]; then
    echo "SKIP: virtio-blk (kvmbox): no /dev/kvm on this host"
    exit 77
fi
for k in virtio-blk virtio-evil; do
    if [ ! -f "$GT/$k.elf" ]; then
        echo "FAIL: virtio-blk: $GT/$k.elf is not built (make guest-tests)"
        exit 1
    fi
done

# O_DIRECT (cache=none) works only on some file systems (not tmpfs).
CACHE=writeback
dd if=/dev/zero of="$T/direct" bs=4096 count=1 oflag=direct status=none 2>/dev/null && CACHE=none
rm -f "$T/direct"

bad() { # bad NAME WHY
    echo "FAIL: virtio-blk/$1 ($VMM): $2"
    fails=$((fails + 1))
}

# run_vm NAME KERNEL CMDLINE DISK... with DISK = path:format:serial[:ro[:cache]] (ro: "ro"
# or empty; cache: none or writeback, default none where O_DIRECT works). Output in
# $T/NAME.out; returns 0 if the guest ended with status 1 and a passing SUMMARY line.
run_vm() {
    local name=$1 kernel=$GT/$2.elf cmdline=$3
    shift 3
    local cmd n=0 spec path fmt serial ro cache
    if [ "$VMM" = kvmbox ]; then
        cmd=("$KVMBOX" run --kernel "$kernel" --mem "$MEM" --cmdline "$cmdline")
    else
        # shellcheck disable=SC2054 # the commas are QEMU's
        cmd=(qemu-system-x86_64 -accel tcg -M q35 -m "$MEM" -nographic -no-reboot -nodefaults
             -serial stdio -monitor none -display none -device isa-debug-exit,iobase=0xf4,iosize=4
             -kernel "$kernel" -append "$cmdline")
    fi
    for spec in "$@"; do
        IFS=: read -r path fmt serial ro cache <<<"$spec"
        cache=${cache:-$CACHE}
        if [ "$VMM" = kvmbox ]; then
            cmd+=(--disk "$path,format=$fmt,serial=$serial,cache=$cache${ro:+,readonly=on}")
        else
            cmd+=(-drive "file=$path,if=none,id=d$n,format=$fmt,cache=$cache,discard=unmap${ro:+,readonly=on}"
                  -device "virtio-blk-pci,drive=d$n,serial=$serial")
        fi
        n=$((n + 1))
    done
    local start rc secs out
    start=$(date +%s.%N)
    progress_run --name "virtio-blk/$name" --quiet "$QUIET" --cpu-quiet 600 --cap 1200 \
        -- "${cmd[@]}" </dev/null >"$T/$name.out" 2>&1
    rc=$?
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    out=$(tr -d '\r' <"$T/$name.out")
    local why=""
    if [ $rc -ne 1 ]; then
        why="exit status $rc, expected 1"
    elif grep -q '^FAIL:' <<<"$out"; then
        why=$(grep '^FAIL:' <<<"$out" | head -1)
    elif ! grep -qE '^SUMMARY: pass=[1-9][0-9]* fail=0$' <<<"$out"; then
        why="no passing SUMMARY line"
    fi
    if [ -n "$why" ]; then
        grep -v '^PASS' <<<"$out" | tail -15 | sed 's/^/    | /'
        bad "$name" "$why"
        return 1
    fi
    echo "PASS: virtio-blk/$name ($VMM, ${secs}s, $(grep -c '^PASS:' <<<"$out") guest checks)"
}

# The pattern checks, in one Python program:
#   fill-ro FILE SECTORS              write the read-only pattern
#   check-rw FILE SERIAL DISCARDED    compare with the final rw pattern (DISCARDED 0/1)
pattern() {
    python3 - "$@" <<'PY'
import struct, sys
M = (1 << 64) - 1
DISCARD, ZEROES, COUNT = 1024, 1536, 256

def fnv1a(s):
    h = 0xcbf29ce484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001b3) & M
    return h

def rw_sector(seed, s):
    v = ((s * 0x9E3779B97F4A7C15) & M) ^ seed
    return struct.pack('<Q', v) + b'\xa5' * 496 + struct.pack('<Q', v ^ M)

cmd = sys.argv[1]
if cmd == 'fill-ro':
    path, n = sys.argv[2], int(sys.argv[3])
    with open(path, 'wb') as f:
        for s in range(n):
            f.write(struct.pack('<Q', s ^ 0x5A5A5A5A5A5A5A5A) + b'\x5a' * 504)
    sys.exit(0)
path, serial, discarded = sys.argv[2], sys.argv[3], sys.argv[4] == '1'
data = open(path, 'rb').read()
seed = fnv1a(serial)
bad = []
for s in range(len(data) // 512):
    sec = data[512 * s:512 * s + 512]
    exp = rw_sector(seed, s)
    if ZEROES <= s < ZEROES + COUNT:
        ok = sec == bytes(512)
    elif DISCARD <= s < DISCARD + COUNT:
        ok = sec != exp if discarded else sec == exp
    else:
        ok = sec == exp
    if not ok:
        bad.append(s)
if bad:
    print(f'{len(bad)} of {len(data) // 512} sectors wrong, first {bad[:5]}')
    sys.exit(1)
print(f'{len(data) // 512} sectors as expected')
PY
}

# check_rw NAME IMG FORMAT SERIAL: the image holds SERIAL's final pattern.
check_rw() {
    local name=$1 img=$2 fmt=$3 serial=$4 raw=$2 msg discarded=0
    if [ "$fmt" = qcow2 ]; then
        if ! msg=$(qemu-img check -q "$img" 2>&1); then
            bad "$name" "qemu-img check $serial: $msg"
            return
        fi
        raw=$T/$serial.raw
        qemu-img convert -f qcow2 -O raw "$img" "$raw"
    fi
    grep -q "^DISCARDED serial=$serial " "$T/$name.out" && discarded=1
    if msg=$(pattern check-rw "$raw" "$serial" $discarded); then
        echo "PASS: virtio-blk/$name ($VMM): $serial ($fmt) holds the final pattern: $msg"
    else
        bad "$name" "$serial ($fmt) content: $msg"
    fi
}

# same_sha NAME FILE SHA WHAT
same_sha() {
    if [ "$(sha256sum <"$2")" = "$3" ]; then
        echo "PASS: virtio-blk/$1 ($VMM): $4 unchanged (sha256)"
    else
        bad "$1" "$4 changed"
    fi
}

SECTORS=$((DISK_MB * 2048))

# 1. raw
qemu-img create -q -f raw "$T/raw.img" "${DISK_MB}M"
run_vm raw virtio-blk "disks=1" "$T/raw.img:raw:rw0" && check_rw raw "$T/raw.img" raw rw0

# 2. qcow2 (cache=writeback)
qemu-img create -q -f qcow2 "$T/q.qcow2" "${DISK_MB}M"
run_vm qcow2 virtio-blk "disks=1" "$T/q.qcow2:qcow2:rw0::writeback" && check_rw qcow2 "$T/q.qcow2" qcow2 rw0

# 3. a qcow2 overlay over a raw base that must not change
pattern fill-ro "$T/base.raw" $SECTORS
chmod a-w "$T/base.raw"
base_sha=$(sha256sum <"$T/base.raw")
qemu-img create -q -f qcow2 -b "$T/base.raw" -F raw "$T/overlay.qcow2"
run_vm overlay virtio-blk "disks=1" "$T/overlay.qcow2:qcow2:rw0" && check_rw overlay "$T/overlay.qcow2" qcow2 rw0
same_sha overlay "$T/base.raw" "$base_sha" "the overlay's base"

# 4. two rw disks (raw with cache=writeback, qcow2) and a read-only qcow2 one
qemu-img create -q -f raw "$T/a.raw" "${DISK_MB}M"
qemu-img create -q -f qcow2 "$T/b.qcow2" "${DISK_MB}M"
pattern fill-ro "$T/ro.raw" $SECTORS
qemu-img convert -q -f raw -O qcow2 "$T/ro.raw" "$T/ro.qcow2"
ro_sha=$(sha256sum <"$T/ro.qcow2")
if run_vm three virtio-blk "disks=3" "$T/a.raw:raw:rw0::writeback" "$T/b.qcow2:qcow2:rw1" "$T/ro.qcow2:qcow2:ro0:ro"; then
    check_rw three "$T/a.raw" raw rw0
    check_rw three "$T/b.qcow2" qcow2 rw1
fi
same_sha three "$T/ro.qcow2" "$ro_sha" "the read-only disk"

# 5. hostile rings on rw0 while rw1 keeps working
qemu-img create -q -f raw "$T/e0.raw" "${DISK_MB}M"
qemu-img create -q -f qcow2 "$T/e1.qcow2" "${DISK_MB}M"
# QEMU completes DMA outside RAM with status OK; the kernel accepts that only with lenient=1.
evil_args=""
[ "$VMM" = qemu ] && evil_args="lenient=1"
if run_vm evil virtio-evil "$evil_args" "$T/e0.raw:raw:rw0" "$T/e1.qcow2:qcow2:rw1"; then
    if msg=$(qemu-img check -q "$T/e1.qcow2" 2>&1); then
        echo "PASS: virtio-blk/evil ($VMM): qemu-img check of rw1 clean"
    else
        bad evil "qemu-img check rw1: $msg"
    fi
fi

[ $fails -eq 0 ]
