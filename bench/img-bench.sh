#!/bin/bash
# make bench-img: kvmbox img against qemu-img on the same files, in one run.
#  - bench: 4K reads and writes at queue depth 1 and 32 (scattered: step 1 MiB + 4 KiB) and
#    1M sequential, on a fully allocated 1 GiB qcow2, cache=none
#  - convert of a 2 GiB image with realistic content (an ext4 file system filled from the
#    host's /usr/share and /usr/lib): raw->qcow2, qcow2->raw, qcow2 -c, cache=none
# Not a test; numbers go to docs/benchmarks.md.
set -u
cd "$(dirname "$0")/.."
KVMBOX=${KVMBOX:-build/kvmbox}
T=${BENCH_DIR:-/var/tmp/kvmbox-img-bench}
mkdir -p "$T"
command -v qemu-img >/dev/null || { echo "qemu-img is not installed"; exit 1; }

time_of() { # time_of CMD... -> seconds on stdout
    local s=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || echo "FAILED: $*" >&2
    awk -v s="$s" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }'
}

echo "kvmbox img vs qemu-img, $(date -u +%F), $(nproc) CPUs; files in $T"
if [ ! -s "$T/fs.raw" ]; then
    echo "building a 2 GiB ext4 image from /usr/share and /usr/lib..."
    truncate -s 2G "$T/fs.raw"
    mkdir -p "$T/root"
    cp -a /usr/share "$T/root/" 2>/dev/null
    du -sm "$T/root" | awk '$1 < 1500 {exit 1}' || cp -a /usr/lib "$T/root/lib" 2>/dev/null
    while [ "$(du -sm "$T/root" | cut -f1)" -gt 1700 ]; do rm -rf "$(find "$T/root/lib" -mindepth 1 -maxdepth 1 | head -1)"; done
    mkfs.ext4 -q -F -d "$T/root" "$T/fs.raw"
    rm -rf "$T/root"
fi
echo "content: $(du -m --apparent-size "$T/fs.raw" | cut -f1) MiB image, $(du -m "$T/fs.raw" | cut -f1) MiB allocated"
echo
printf '%-34s %10s %10s %8s\n' "convert (cache=none, seconds)" kvmbox qemu-img ratio
row() { printf '%-34s %10s %10s %8s\n' "$1" "$2" "$3" "$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2fx", b / a }')"; }
k=$(time_of "$KVMBOX" img convert -t none -O qcow2 "$T/fs.raw" "$T/k.qcow2")
q=$(time_of qemu-img convert -t none -O qcow2 "$T/fs.raw" "$T/q.qcow2")
row "raw -> qcow2" "$k" "$q"
k=$(time_of "$KVMBOX" img convert -t none -O raw "$T/q.qcow2" "$T/k.raw")
q=$(time_of qemu-img convert -t none -O raw "$T/q.qcow2" "$T/q.raw")
row "qcow2 -> raw" "$k" "$q"
k=$(time_of "$KVMBOX" img convert -t none -c -O qcow2 "$T/q.qcow2" "$T/kc.qcow2")
q=$(time_of qemu-img convert -t none -c -O qcow2 "$T/q.qcow2" "$T/qc.qcow2")
row "qcow2 -> qcow2 -c" "$k" "$q"
echo "  compressed sizes: kvmbox $(du -m "$T/kc.qcow2" | cut -f1) MiB, qemu-img $(du -m "$T/qc.qcow2" | cut -f1) MiB"
qemu-img compare -q "$T/kc.qcow2" "$T/fs.raw" && echo "  (kvmbox's outputs compare identical to the source)"

echo
printf '%-34s %10s %10s %8s\n' "bench (cache=none, seconds)" kvmbox qemu-img ratio
qemu-img create -q -f qcow2 "$T/b.qcow2" 1G
qemu-img bench -w -t none -c 1024 -s 1M -d 8 "$T/b.qcow2" >/dev/null # fully allocate
S=$((1048576 + 4096))
for spec in "4K read QD1|-c 20000 -d 1 -s 4K -S $S" "4K read QD32|-c 100000 -d 32 -s 4K -S $S" \
            "4K write QD1|-w -c 20000 -d 1 -s 4K -S $S" "4K write QD32|-w -c 100000 -d 32 -s 4K -S $S" \
            "1M sequential read|-c 2048 -d 8 -s 1M" "1M sequential write|-w -c 2048 -d 8 -s 1M"; do
    name=${spec%%|*} args=${spec#*|}
    k=$("$KVMBOX" img bench -t none $args "$T/b.qcow2" | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p')
    q=$(qemu-img bench -t none $args "$T/b.qcow2" 2>/dev/null | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p')
    row "$name" "$k" "$q"
done
echo "(ratio = qemu-img time / kvmbox time: above 1 means kvmbox is faster)"
