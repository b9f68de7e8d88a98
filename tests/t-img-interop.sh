#!/bin/bash
# qcow2 interoperability with Debian's qemu-img, both ways: images qemu-img makes (v2, v3,
# cluster sizes from 512 B to 2 MiB, compressed, backing chains, internal snapshots) read back
# through kvmbox exactly; images kvmbox writes pass `qemu-img check` and hold what
# `qemu-img compare`/qemu-io expect; info, map and compare say what qemu-img says.
# (Hostile images: t-img-hostile.sh; crashes: t-img-crash.sh.)
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KVMBOX=$(readlink -f "${KVMBOX:-$BUILD/kvmbox}")
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

# qemu-img writes, kvmbox reads: kvmbox's conversion to raw is byte-identical to qemu-img's.
same_raw() { # same_raw IMAGE: kvmbox and qemu-img convert it to the same raw bytes
    rm -f "$T/k.raw" "$T/q.raw"
    "$KVMBOX" img convert -O raw "$1" "$T/k.raw" && qemu-img convert -O raw "$1" "$T/q.raw" && cmp "$T/k.raw" "$T/q.raw"
}
for compat in 0.10 1.1; do
    for cs in 512 4096 65536 2M; do
        qemu-img convert -O qcow2 -o "compat=$compat,cluster_size=$cs" "$T/data.raw" "$T/q.qcow2"
        run "qemu-img image (compat=$compat, cluster_size=$cs) converts to the same raw bytes" same_raw "$T/q.qcow2"
        qemu-img convert -c -O qcow2 -o "compat=$compat,cluster_size=$cs" "$T/data.raw" "$T/qc.qcow2"
        run "qemu-img compressed image (compat=$compat, cluster_size=$cs) converts to the same raw bytes" same_raw "$T/qc.qcow2"
    done
done
for rb in 1 8 64; do
    qemu-img convert -O qcow2 -o "refcount_bits=$rb" "$T/data.raw" "$T/q.qcow2"
    run "qemu-img image (refcount_bits=$rb) converts to the same raw bytes" same_raw "$T/q.qcow2"
done
qemu-img convert -c -O qcow2 "$T/data.raw" "$T/qc.qcow2"
run "kvmbox img compare: a compressed qemu-img image equals its source" "$KVMBOX" img compare "$T/qc.qcow2" "$T/data.raw"
qemu-img create -q -f qcow2 "$T/z.qcow2" 8M
qemu-io -c "write -P 0x11 0 1M" -c "write -z 1M 1M" -c "write -P 0x22 3M 512" -c "discard 0 64k" "$T/z.qcow2" >/dev/null
run "qemu-io zero clusters, discards and sub-cluster writes read back the same" same_raw "$T/z.qcow2"

# kvmbox writes, qemu-img checks and compares.
for opts in "compat=0.10" "compat=0.10,cluster_size=4096" "compat=1.1,cluster_size=512" "compat=1.1" "compat=1.1,cluster_size=2M" \
            "compat=1.1,refcount_bits=1" "compat=1.1,refcount_bits=8" "compat=1.1,refcount_bits=64" "lazy_refcounts=on"; do
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

# What kvmbox img says, next to what qemu-img says about the same images.
same_output() { # same_output DESCRIPTION ARGS...: kvmbox img ARGS and qemu-img ARGS print the same, same status
    local d=$1
    shift
    (cd "$T" && "$KVMBOX" img "$@" >"$T/k.out" 2>&1; echo "status $?" >>"$T/k.out")
    (cd "$T" && qemu-img "$@" >"$T/q.out" 2>&1; echo "status $?" >>"$T/q.out")
    if cmp -s "$T/k.out" "$T/q.out"; then ok "$d"; else bad "$d: $(diff "$T/q.out" "$T/k.out" | head -4 | tr '\n' ' ')"; fi
}
# A plain image, a compressed one, one with zero clusters, a raw file, a three-level chain.
cp "$T/top.qcow2" "$T/top2.qcow2"
qemu-io -c "write -P 0x77 5M 128k" -c "write -z 6M 64k" "$T/top2.qcow2" >/dev/null
for img in qc.qcow2 z.qcow2 data.raw top2.qcow2 mid.qcow2; do
    # (qemu-img refuses the human map of a compressed image)
    [ $img = qc.qcow2 ] || same_output "map of $img (human) matches qemu-img" map "$img"
    same_output "map of $img (json) matches qemu-img" map --output json "$img"
done
for img in z.qcow2 data.raw top2.qcow2 ov.qcow2; do
    same_output "info of $img matches qemu-img" info "$img"
done
same_output "info --backing-chain matches qemu-img" info --backing-chain top2.qcow2
json_same() { # json_same IMAGE: the fields both tools report agree
    "$KVMBOX" img info --output json --backing-chain "$1" >"$T/k.json" && qemu-img info --output json --backing-chain "$1" >"$T/q.json" &&
    python3 - "$T/k.json" "$T/q.json" <<'PY'
import json, sys
k, q = (json.load(open(f)) for f in sys.argv[1:3])
assert len(k) == len(q), (len(k), len(q))
for a, b in zip(k, q):
    for f in ("filename", "format", "virtual-size", "actual-size", "cluster-size", "dirty-flag", "backing-filename",
              "full-backing-filename", "backing-filename-format"):
        assert a.get(f) == b.get(f), (f, a.get(f), b.get(f))
    assert a.get("format-specific") == b.get("format-specific"), (a.get("format-specific"), b.get("format-specific"))
    sk = [(s["id"], s["name"], s["date-sec"], s["vm-state-size"]) for s in a.get("snapshots", [])]
    sq = [(s["id"], s["name"], s["date-sec"], s["vm-state-size"]) for s in b.get("snapshots", [])]
    assert sk == sq, (sk, sq)
PY
}
run "info --output json --backing-chain agrees with qemu-img (chain)" json_same "$T/top2.qcow2"
run "info --output json agrees with qemu-img (snapshots)" json_same "$T/s.qcow2"
for o in "compat=0.10" "lazy_refcounts=on,refcount_bits=8,cluster_size=4k" "refcount_bits=64,cluster_size=2M"; do
    "$KVMBOX" img create -q -f qcow2 -o "$o" "$T/c.qcow2" 100M
    run "create -o $o: qemu-img check is clean and info agrees" bash -c "qemu-img check -q '$T/c.qcow2' && $(declare -f json_same) && T='$T' KVMBOX='$KVMBOX' json_same '$T/c.qcow2'"
done
"$KVMBOX" img create -q -f qcow2 -b top2.qcow2 -F qcow2 "$T/c.qcow2"
run "create -b without a size takes the backing file's" bash -c "qemu-img info '$T/c.qcow2' | grep -q 'virtual size: 32 MiB' && qemu-img compare -q '$T/c.qcow2' '$T/top2.qcow2'"

cp "$T/data.raw" "$T/d2.raw"
printf 'X' | dd of="$T/d2.raw" bs=1 seek=5000000 conv=notrunc status=none
same_output "compare: identical images" compare qc.qcow2 data.raw
same_output "compare: the first differing offset" compare qc.qcow2 d2.raw
truncate -s 40M "$T/d2.raw"
same_output "compare: different sizes, the extra part differs" compare d2.raw qc.qcow2
cp "$T/data.raw" "$T/d3.raw"; truncate -s 40M "$T/d3.raw"
same_output "compare: different sizes, zero tail" compare qc.qcow2 d3.raw
same_output "compare -s: different sizes" compare -s qc.qcow2 d3.raw
run "compare: a missing file is status 2, as for qemu-img" bash -c "'$KVMBOX' img compare '$T/qc.qcow2' '$T/nonexistent.raw' 2>/dev/null; [ \$? = 2 ]"

run "convert of a backing chain to one qcow2 keeps the content" bash -c \
    "'$KVMBOX' img convert -O qcow2 '$T/top2.qcow2' '$T/flat.qcow2' && qemu-img check -q '$T/flat.qcow2' && qemu-img compare -q '$T/flat.qcow2' '$T/top2.qcow2'"
qemu-img create -q -f qcow2 "$T/n.qcow2" 8M
qemu-io -c "write -P 0xee 0 8M" "$T/n.qcow2" >/dev/null
run "convert -n into an image full of old data writes the zeroes too" bash -c \
    "'$KVMBOX' img convert -n -O qcow2 '$T/z.qcow2' '$T/n.qcow2' && qemu-img compare -q '$T/n.qcow2' '$T/z.qcow2' && qemu-img check -q '$T/n.qcow2'"
truncate -s 1G "$T/sparse.raw"
printf 'data' | dd of="$T/sparse.raw" bs=1 seek=500000000 conv=notrunc status=none
run "convert keeps a 1 GiB almost-empty image sparse (raw and qcow2 outputs)" bash -c \
    "'$KVMBOX' img convert -O raw '$T/sparse.raw' '$T/sp.raw' && '$KVMBOX' img convert -O qcow2 '$T/sparse.raw' '$T/sp.qcow2' &&
     [ \$(du -k '$T/sp.raw' | cut -f1) -le 64 ] && [ \$(du -k '$T/sp.qcow2' | cut -f1) -le 512 ] && qemu-img compare -q '$T/sp.qcow2' '$T/sparse.raw' && cmp '$T/sp.raw' '$T/sparse.raw'"

qemu-img convert -O qcow2 "$T/data.raw" "$T/r.qcow2"
run "resize +16M: qemu-img sees 48 MiB, clean, data kept" bash -c \
    "'$KVMBOX' img resize '$T/r.qcow2' +16M >/dev/null && qemu-img info '$T/r.qcow2' | grep -q '(50331648 bytes)' && qemu-img check -q '$T/r.qcow2' && qemu-img compare -q '$T/r.qcow2' '$T/data.raw'"
run "resize to a smaller size needs --shrink" bash -c "! '$KVMBOX' img resize '$T/r.qcow2' 16M 2>/dev/null"
head -c 16M "$T/data.raw" >"$T/d16.raw"
run "resize --shrink -32M: clean, the kept part intact" bash -c \
    "'$KVMBOX' img resize --shrink '$T/r.qcow2' -32M >/dev/null && qemu-img check -q '$T/r.qcow2' && qemu-img info '$T/r.qcow2' | grep -q '(16777216 bytes)' && qemu-img compare -q '$T/r.qcow2' '$T/d16.raw'"

cp "$T/top2.qcow2" "$T/self.qcow2"
run "convert refuses a target that is the source or one of its backing files (nothing truncated)" bash -c \
    "! '$KVMBOX' img convert -O qcow2 '$T/self.qcow2' '$T/self.qcow2' 2>/dev/null && ! '$KVMBOX' img convert -O raw '$T/top2.qcow2' '$T/base.qcow2' 2>/dev/null &&
     cmp -s '$T/self.qcow2' '$T/top2.qcow2' && qemu-img check -q '$T/base.qcow2' && qemu-img compare -q '$T/top.qcow2' '$T/chain.raw'"

# Locking: a second writer is refused with a clear message.
"$B" "$T/w.qcow2" workload 5 100000 "$T/wl.log" &
pid=$!
sleep 0.5
out=$("$B" "$T/w.qcow2" write 0 512 1 2>&1); rc=$?
kill $pid 2>/dev/null; wait $pid 2>/dev/null
if [ $rc != 0 ] && grep -q "in use by another process" <<<"$out"; then ok "a second writer is refused ($out)"; else bad "second writer: rc $rc: $out"; fi

[ $fails -eq 0 ]
