#!/bin/bash
# Crash safety: a writer (tests/blkio workload: random writes, a flush every 8) is SIGKILLed
# at random moments, 20 times. Afterwards every write acknowledged before the last completed
# flush reads back (where no later write overlaps it), `qemu-img check` finds no corruption
# (leaks are allowed), and `kvmbox img check -r leaks` removes the leaks.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
B=$BUILD/tests/blkio
command -v qemu-img >/dev/null || { echo "SKIP: img crash: qemu-img is not installed"; exit 77; }
T=$(mktemp -d /tmp/kvmbox-crash.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
for i in $(seq 1 20); do
    img=$T/c$i.qcow2
    case $((i % 3)) in
    0) "$KVMBOX" img create -f qcow2 "$img" 64M >/dev/null ;;
    1) "$KVMBOX" img create -f qcow2 -o cluster_size=4096 "$img" 64M >/dev/null ;;
    2) "$KVMBOX" img create -f qcow2 -o cluster_size=512 "$img" 16M >/dev/null ;;
    esac
    "$B" "$img" workload "$i" 100000 "$T/log$i" &
    pid=$!
    sleep "0.$((RANDOM % 9 + 1))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    if qemu-img check "$img" >"$T/chk" 2>&1 || [ $? = 3 ]; then :; else
        echo "FAIL: crash $i: qemu-img check reports corruption: $(grep -m2 -i error "$T/chk")"
        fails=$((fails + 1))
        continue
    fi
    "$KVMBOX" img convert -O raw "$img" "$T/c.raw" >/dev/null 2>&1
    verdict=$(python3 - "$T/log$i" "$T/c.raw" "$i" <<'PY'
import sys
log, raw, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
M = (1 << 64) - 1
def pat(seed, off):
    x = (((off >> 3) * 0x9e3779b97f4a7c15) ^ (seed * 0xbf58476d1ce4e5b9)) & M
    x ^= x >> 29
    return (x >> (8 * (off & 7))) & 0xff
writes, started, last_flush = [], [], -1
for line in open(log):
    p = line.split()
    if p[0] == 'W' and len(p) == 4: writes.append((int(p[1]), int(p[2]), int(p[3])))
    elif p[0] == 'S' and len(p) == 4: started.append((int(p[1]), int(p[2]), int(p[3])))
    elif p[0] == 'F' and len(p) == 2: last_flush = int(p[1])
data = open(raw, 'rb').read()
checked = bad = 0
for i, off, ln in writes:
    if i > last_flush: break
    later = [(o, l) for j, o, l in started if j > i and o < off + ln and off < o + l]
    for k in range(0, ln, 509):            # sample bytes not overwritten later
        b = off + k
        if any(o <= b < o + l for o, l in later): continue
        checked += 1
        if data[b] != pat(base + i, b): bad += 1
print("ok" if bad == 0 else "bad", checked, bad, last_flush, len(writes))
PY
)
    set -- $verdict
    if [ "$1" = ok ]; then
        "$KVMBOX" img check -r leaks "$img" >/dev/null 2>&1
        if qemu-img check "$img" 2>&1 | grep -q "No errors were found"; then
            echo "PASS: crash $i: killed after $5 writes (last flush after write $4); $2 sampled bytes of flushed writes intact; leaks repaired"
        else
            echo "FAIL: crash $i: leaks remain after kvmbox img check -r leaks"
            fails=$((fails + 1))
        fi
    else
        echo "FAIL: crash $i: $3 of $2 sampled bytes of flushed writes are wrong"
        fails=$((fails + 1))
    fi
done
[ $fails -eq 0 ]
