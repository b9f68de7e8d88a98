#!/bin/bash
# qcow2 interoperability with Debian's qemu-img, both ways: images qemu-img makes (v2, v3,
# cluster sizes from 512 B to 2 MiB, compressed, backing chains, internal snapshots) read back
# through kvmbox exactly; images kvmbox writes pass `qemu-img check` and hold what
# `qemu-img compare`/qemu-io expect. Hostile images get a clear error, never a crash.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
B=$BUILD/tests/blkio
if ! command -v qemu-img >/dev/null; then
    echo "SKIP: img interop: qemu-img is not installed"
    exit 77
fi
T=$(mktemp -d /tmp/kvmbox-img.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "PASS: img: $*"; }
bad() { echo "FAIL: img: $*"; fails=$((fails + 1)); }
run() { # run DESCRIPTION CMD... (quiet on success)
    local d=$1
    shift
    if "$@" >"$T/out" 2>&1; then ok "$d"; else bad "$d: $(tail -3 "$T/out" | tr '\n' ' ')"; fi
}
clean() { qemu-img check "$1" >"$T/chk" 2>&1 && grep -q "No errors were found" "$T/chk"; }

# Content: random data, a compressible region, holes.
head -c 3M /dev/urandom >"$T/data.raw"
yes "kvmbox compressible line of text" | head -c 3M >>"$T/data.raw"
truncate -s 32M "$T/data.raw"
head -c 1M /dev/urandom | dd of="$T/data.raw" bs=1M seek=20 conv=notrunc status=none

# qemu-img writes, kvmbox reads.
for opts in "compat=0.10,cluster_size=512" "compat=0.10" "compat=1.1,cluster_size=4096" \
            "compat=1.1" "compat=1.1,cluster_size=2M" "compat=1.1,refcount_bits=1" "compat=1.1,refcount_bits=64"; do
    qemu-img convert -O qcow2 -o "$opts" "$T/data.raw" "$T/q.qcow2"
    run "qemu-img image ($opts) reads back identically" "$KVMBOX" img compare "$T/q.qcow2" "$T/data.raw"
done
qemu-img convert -c -O qcow2 "$T/data.raw" "$T/qc.qcow2"
run "qemu-img compressed image reads back identically" "$KVMBOX" img compare "$T/qc.qcow2" "$T/data.raw"
run "kvmbox convert of a compressed image to raw is exact" \
    bash -c "'$KVMBOX' img convert -O raw '$T/qc.qcow2' '$T/back.raw' && cmp '$T/back.raw' '$T/data.raw'"

# kvmbox writes, qemu-img checks and compares.
for opts in "compat=0.10" "compat=1.1,cluster_size=512" "compat=1.1" "compat=1.1,cluster_size=2M" "compat=1.1,refcount_bits=8"; do
    rm -f "$T/k.qcow2"
    if "$KVMBOX" img convert -O qcow2 -o "$opts" "$T/data.raw" "$T/k.qcow2" >"$T/out" 2>&1 && clean "$T/k.qcow2" &&
       qemu-img compare -q "$T/k.qcow2" "$T/data.raw"; then
        ok "kvmbox convert ($opts): qemu-img check clean, content identical"
    else
        bad "kvmbox convert ($opts): $(cat "$T/out" "$T/chk" | head -3 | tr '\n' ' ')"
    fi
done
"$KVMBOX" img convert -c -O qcow2 "$T/data.raw" "$T/kc.qcow2" >/dev/null 2>&1
if clean "$T/kc.qcow2" && qemu-img compare -q "$T/kc.qcow2" "$T/data.raw" &&
   [ "$(stat -c %s "$T/kc.qcow2")" -lt $((7 << 20)) ]; then
    ok "kvmbox convert -c: compressed ($(($(stat -c %s "$T/kc.qcow2") >> 10)) KiB for 7 MiB of data), clean, identical"
else
    bad "kvmbox convert -c: $(head -2 "$T/chk" | tr '\n' ' ')"
fi

# Partial writes, zeroes, discard on a kvmbox image; qemu-io reads what blkio wrote.
"$KVMBOX" img create -f qcow2 -o cluster_size=4096 "$T/w.qcow2" 64M >/dev/null
run "unaligned writes across clusters" "$B" "$T/w.qcow2" write 1000 300000 7
run "a write inside an allocated cluster" "$B" "$T/w.qcow2" write 5000 100 8
run "reads see both writes" bash -c "'$B' '$T/w.qcow2' read 1000 4000 7 && '$B' '$T/w.qcow2' read 5000 100 8 && '$B' '$T/w.qcow2' read 5100 200000 7"
run "qemu-io reads zeroes before the first write" qemu-io -c "read -P 0 0 1000" "$T/w.qcow2"
run "write-zeroes reads back as zeroes" bash -c "'$B' '$T/w.qcow2' zero 8192 65536 && '$B' '$T/w.qcow2' read 8192 65536 -1"
run "qemu-io agrees on the zeroed range" qemu-io -c "read -P 0 8192 65536" "$T/w.qcow2"
run "discard frees clusters and the image stays clean" bash -c "'$B' '$T/w.qcow2' discard 0 1048576 && qemu-img check '$T/w.qcow2' | grep -q 'No errors'"

# Backing chains: qemu-made chain read by kvmbox; kvmbox writes into an overlay.
qemu-img convert -O qcow2 "$T/data.raw" "$T/base.qcow2"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$T/mid.qcow2"
qemu-io -c "write -P 0xab 1M 64k" "$T/mid.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$T/top.qcow2"
qemu-img convert -O raw "$T/top.qcow2" "$T/chain.raw"
run "a three-level qemu-img chain (relative names) reads back identically" "$KVMBOX" img compare "$T/top.qcow2" "$T/chain.raw"
qemu-img create -q -f raw "$T/rawbase.img" 32M
qemu-io -f raw -c "write -P 0x5a 0 1M" "$T/rawbase.img" >/dev/null
"$KVMBOX" img create -f qcow2 -b rawbase.img -F raw "$T/ov.qcow2" >/dev/null
run "kvmbox overlay on a raw base: partial write copies the rest from the base" bash -c \
    "'$B' '$T/ov.qcow2' write 4096 100 9 && qemu-io -c 'read -P 0x5a 0 4096' -c 'read -P 0x5a 4196 61340' '$T/ov.qcow2' | grep -qv 'Pattern verification failed'"
run "the overlay passes qemu-img check" clean "$T/ov.qcow2"
run "the base is unchanged" qemu-io -f raw -c "read -P 0x5a 0 1M" "$T/rawbase.img"
run "info shows the backing file and format" bash -c "'$KVMBOX' img info --output json '$T/ov.qcow2' | grep -q '\"backing-filename-format\": \"raw\"'"

# Internal snapshots made by qemu-img: kvmbox writes copy shared clusters, the snapshot keeps
# its data, refcounts stay right.
qemu-img convert -O qcow2 "$T/data.raw" "$T/s.qcow2"
qemu-img snapshot -c snap1 "$T/s.qcow2"
run "writing over snapshot-shared clusters" "$B" "$T/s.qcow2" write 0 2000000 11
run "qemu-img check is clean after copy-on-write from a snapshot" clean "$T/s.qcow2"
qemu-img snapshot -a snap1 "$T/s.qcow2"
run "the snapshot still holds the original data" "$KVMBOX" img compare "$T/s.qcow2" "$T/data.raw"

# Snapshots kvmbox takes, qemu-img applies; and the reverse; delete keeps refcounts right.
"$KVMBOX" img convert -O qcow2 "$T/data.raw" "$T/ks.qcow2" >/dev/null
run "kvmbox img snapshot -c" "$KVMBOX" img snapshot -c one "$T/ks.qcow2"
run "qemu-img check clean after kvmbox's snapshot" clean "$T/ks.qcow2"
"$B" "$T/ks.qcow2" write 0 3000000 5 >/dev/null 2>&1
run "qemu-img lists kvmbox's snapshot" bash -c "qemu-img snapshot -l '$T/ks.qcow2' | grep -q ' one '"
run "qemu-img applies kvmbox's snapshot: the original data is back" bash -c \
    "qemu-img snapshot -a one '$T/ks.qcow2' && qemu-img compare -q '$T/ks.qcow2' '$T/data.raw'"
qemu-img convert -O qcow2 "$T/data.raw" "$T/qs.qcow2"
qemu-img snapshot -c qs "$T/qs.qcow2"
"$B" "$T/qs.qcow2" write 0 3000000 6 >/dev/null 2>&1
run "kvmbox lists qemu-img's snapshot" bash -c "'$KVMBOX' img snapshot -l '$T/qs.qcow2' | grep -q ' qs '"
run "kvmbox applies qemu-img's snapshot" bash -c \
    "'$KVMBOX' img snapshot -a qs '$T/qs.qcow2' && '$KVMBOX' img compare '$T/qs.qcow2' '$T/data.raw'"
run "qemu-img check clean after kvmbox applied it" clean "$T/qs.qcow2"
run "kvmbox deletes snapshots; refcounts stay right" bash -c \
    "'$KVMBOX' img snapshot -c two '$T/qs.qcow2' && '$KVMBOX' img snapshot -d qs '$T/qs.qcow2' && '$KVMBOX' img snapshot -d two '$T/qs.qcow2' && qemu-img check '$T/qs.qcow2' | grep -q 'No errors' && [ -z \"\$(qemu-img snapshot -l '$T/qs.qcow2')\" ]"

# commit, rebase (safe and -u), bench.
qemu-img convert -O qcow2 "$T/data.raw" "$T/cb.qcow2"
"$KVMBOX" img create -f qcow2 -b cb.qcow2 -F qcow2 "$T/co.qcow2" >/dev/null
qemu-io -c "write -P 0x33 100k 300k" -c "write -z 2M 64k" "$T/co.qcow2" >/dev/null
qemu-img convert -O raw "$T/co.qcow2" "$T/expect.raw"
run "commit: the backing file now holds the overlay's content" bash -c \
    "'$KVMBOX' img commit '$T/co.qcow2' && qemu-img compare -q '$T/cb.qcow2' '$T/expect.raw' && qemu-img check -q '$T/cb.qcow2'"
qemu-img create -q -f raw "$T/nb.raw" 32M
run "safe rebase onto an empty base keeps the guest-visible content" bash -c \
    "'$KVMBOX' img rebase -b nb.raw -F raw '$T/co.qcow2' && qemu-img compare -q '$T/co.qcow2' '$T/expect.raw' && qemu-img info '$T/co.qcow2' | grep -q 'backing file: nb.raw'"
run "rebase -u only rewrites the name" bash -c \
    "'$KVMBOX' img rebase -u -b cb.qcow2 -F qcow2 '$T/co.qcow2' && qemu-img info '$T/co.qcow2' | grep -q 'backing file: cb.qcow2' && qemu-img check -q '$T/co.qcow2'"
run "bench reads and writes at depth 8" bash -c \
    "'$KVMBOX' img bench -c 4000 -d 8 '$T/cb.qcow2' | grep -q 'Run completed' && '$KVMBOX' img bench -w -c 4000 -d 8 -S 65536 '$T/cb.qcow2' | grep -q 'Run completed' && qemu-img check -q '$T/cb.qcow2'"

# A large write through 512-byte clusters grows the refcount table several times.
"$KVMBOX" img create -f qcow2 -o cluster_size=512 "$T/small.qcow2" 1M >/dev/null
"$KVMBOX" img resize "$T/small.qcow2" 48M >/dev/null
run "refcount table growth (512-byte clusters, 40 MiB written)" "$B" "$T/small.qcow2" write 0 41943040 3
run "it stays clean" clean "$T/small.qcow2"
run "and reads back" "$B" "$T/small.qcow2" read 0 41943040 3

# Locking: a second writer is refused with a clear message.
"$B" "$T/w.qcow2" workload 5 100000 "$T/wl.log" &
pid=$!
sleep 0.5
out=$("$B" "$T/w.qcow2" write 0 512 1 2>&1); rc=$?
kill $pid 2>/dev/null; wait $pid 2>/dev/null
if [ $rc != 0 ] && grep -q "in use by another process" <<<"$out"; then ok "a second writer is refused ($out)"; else bad "second writer: rc $rc: $out"; fi

# Hostile images: a clear error and a non-zero status, never a crash.
hostile() { # hostile NAME OFFSET HEXBYTES
    cp "$T/k.qcow2" "$T/h-$1.qcow2"
    printf "$3" | dd of="$T/h-$1.qcow2" bs=1 seek="$2" conv=notrunc status=none
    for cmd in "info" "check" "convert -O raw"; do
        out=$("$KVMBOX" img $cmd "$T/h-$1.qcow2" $([ "$cmd" = "convert -O raw" ] && echo "$T/h.raw") 2>&1)
        rc=$?
        if [ $rc -ge 128 ] || grep -qE 'runtime error|AddressSanitizer|Segmentation' <<<"$out"; then
            bad "hostile image ($1), img $cmd crashed: $(head -2 <<<"$out")"
            return
        fi
    done
    ok "hostile image ($1): no crash ($(head -1 <<<"$out"))"
}
hostile bad-magic 0 '\x00\x00\x00\x00'
hostile bad-version 4 '\x00\x00\x00\x09'
hostile huge-cluster-bits 20 '\x00\x00\x00\x30'
hostile encrypted 32 '\x00\x00\x00\x01'
hostile huge-l1 36 '\x7f\xff\xff\xff'
hostile l1-past-eof 40 '\x00\x00\x7f\x00\x00\x00\x00\x00'
hostile rct-past-eof 48 '\x00\x00\x7f\x00\x00\x00\x00\x00'
hostile unknown-incompat 72 '\x00\x00\x00\x00\x00\x00\x10\x00'
hostile absurd-size 24 '\x7f\xff\xff\xff\xff\xff\xff\xff'
l1=$(od -An -tx1 -j 40 -N8 "$T/k.qcow2" | tr -d ' ')
hostile l2-past-eof $((16#$l1)) '\x80\x00\x7f\x00\x00\x00\x00\x00'
head -c 100 "$T/k.qcow2" >"$T/trunc.qcow2"
out=$("$KVMBOX" img info "$T/trunc.qcow2" 2>&1); rc=$?
if [ $rc = 1 ] && [ "$(wc -l <<<"$out")" = 1 ]; then ok "truncated image: one clear line ($out)"; else bad "truncated image: rc $rc: $out"; fi
qemu-img create -q -f qcow2 -u -b loop2.qcow2 -F qcow2 "$T/loop.qcow2" 1M
qemu-img create -q -f qcow2 -u -b loop.qcow2 -F qcow2 "$T/loop2.qcow2" 1M
out=$("$KVMBOX" img info --backing-chain "$T/loop.qcow2" 2>&1); rc=$?
if [ $rc = 1 ] && grep -qi "loop\|deeper" <<<"$out"; then ok "backing loop: refused ($out)"; else bad "backing loop: rc $rc: $out"; fi
[ $fails -eq 0 ]
