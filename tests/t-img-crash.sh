#!/bin/bash
# Crash safety: a writer (tests/blkio workload: random writes, a flush every 8) is SIGKILLed
# at random moments, 20 times. Afterwards every write acknowledged before the last completed
# flush reads back through kvmbox and through qemu-img (where no later write overlaps it),
# `qemu-img check` finds no corruption (leaks are allowed), and `kvmbox img check -r leaks`
# removes the leaks.
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
    # Read back twice: through kvmbox and through qemu-img (an independent reader).
    if ! "$KVMBOX" img convert -O raw "$img" "$T/c.raw" >"$T/conv" 2>&1 || ! qemu-img convert -O raw "$img" "$T/q.raw" >>"$T/conv" 2>&1; then
        echo "FAIL: crash $i: the image cannot be read back: $(head -1 "$T/conv")"
        fails=$((fails + 1))
        continue
    fi
    verdict=$(python3 - "$T/log$i" "$i" "$T/c.raw" "$T/q.raw" <<'PY'
import sys
log, base, raws = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
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
datas = [open(r, 'rb').read() for r in raws]
checked = bad = 0
for i, off, ln in writes:
    if i > last_flush: break
    later = [(o, l) for j, o, l in started if j > i and o < off + ln and off < o + l]
    for k in range(0, ln, 509):            # sample bytes not overwritten later
        b = off + k
        if any(o <= b < o + l for o, l in later): continue
        checked += 1
        if any(d[b] != pat(base + i, b) for d in datas): bad += 1
print("ok" if bad == 0 else "bad", checked, bad, last_flush, len(writes))
PY
)
    set -- $verdict
    if [ "$1" = ok ]; then
        "$KVMBOX" img check -r leaks "$img" >/dev/null 2>&1
        if qemu-img check "$img" 2>&1 | grep -q "No errors were found"; then
            echo "PASS: crash $i: killed after $5 writes (last flush after write $4); $2 sampled bytes of flushed writes intact (read by kvmbox and qemu-img); leaks repaired"
        else
            echo "FAIL: crash $i: leaks remain after kvmbox img check -r leaks"
            fails=$((fails + 1))
        fi
    else
        echo "FAIL: crash $i: $3 of $2 sampled bytes of flushed writes are wrong"
        fails=$((fails + 1))
    fi
done

# Concurrent writers: `kvmbox img bench -w` at depth 8 allocating clusters from 8 threads,
# killed 5 times; the metadata must stay consistent (no corruption, leaks repairable).
for i in $(seq 1 5); do
    img=$T/b$i.qcow2
    "$KVMBOX" img create -q -f qcow2 -o cluster_size=$((4096 << (i % 3 * 2))) "$img" 256M
    "$KVMBOX" img bench -w -c 10000000 -d 8 -s $((4096 * i)) -S $((1048576 + 4096 * i)) --flush-interval 16 --pattern $i \
        "$img" >/dev/null 2>&1 &
    pid=$!
    sleep "0.$((RANDOM % 9 + 1))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    qemu-img check "$img" >"$T/chk" 2>&1
    rc=$?
    if [ $rc != 0 ] && [ $rc != 3 ]; then
        echo "FAIL: crash bench $i: qemu-img check status $rc: $(grep -m2 -i error "$T/chk")"
        fails=$((fails + 1))
    elif "$KVMBOX" img check -r leaks "$img" >/dev/null 2>&1 && qemu-img check -q "$img"; then
        echo "PASS: crash bench $i: 8 concurrent writers killed; no corruption, $(grep -o '^[0-9]* leaked' "$T/chk" || echo 'no leaked') clusters, repaired"
    else
        echo "FAIL: crash bench $i: leaks remain after kvmbox img check -r leaks"
        fails=$((fails + 1))
    fi
done
[ $fails -eq 0 ]
