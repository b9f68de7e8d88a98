#!/bin/bash
# make bench-img: kvmbox img against qemu-img on the same files, in one run (not a test).
#  - convert of a 2 GiB raw ext4 image with realistic content (a debootstrapped Debian root
#    file system, packed with mkfs.ext4 -d; a copy of the host's /usr when debootstrap is
#    unavailable): raw->qcow2, qcow2->raw, qcow2->qcow2 -c; cache=none on the target, the
#    page cache dropped before every run so the source is read from the disk both times
#  - bench: 4K reads and writes at queue depth 1 and 32 (scattered: step 1 MiB + 4 KiB, as
#    qemu-img bench has no random mode) and 1M sequential, on a fully allocated 1 GiB
#    qcow2, cache=none
# Every number is the best of REPS runs (3 by default): the host is shared and noisy.
# Environment: KVMBOX, BENCH_DIR (default /var/tmp/kvmbox-img-bench), REPS.
set -u
cd "$(dirname "$0")/.."
KVMBOX=$(readlink -f "${KVMBOX:-build/kvmbox}")
T=${BENCH_DIR:-/var/tmp/kvmbox-img-bench}
REPS=${REPS:-3}
command -v qemu-img >/dev/null || { echo "img-bench: qemu-img is not installed" >&2; exit 1; }
[ -x "$KVMBOX" ] || { echo "img-bench: $KVMBOX is not built" >&2; exit 1; }
mkdir -p "$T"

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

# The root file system: debootstrap when it works (needs root and Debian's mirror), else /usr.
make_content() {
    local root=$T/root
    rm -rf "$root"
    if command -v debootstrap >/dev/null &&
       debootstrap --variant=minbase --include=build-essential,python3,perl,git,vim-tiny,less,curl,openssh-client,iproute2,systemd-sysv \
           bookworm "$root" http://deb.debian.org/debian >"$T/debootstrap.log" 2>&1; then
        echo "a debootstrapped Debian 12 (minbase + build-essential, python3, git...)" >"$T/content.txt"
    else
        rm -rf "$root"
        mkdir -p "$root"
        cp -a /usr "$root/" 2>/dev/null
        echo "a copy of the host's /usr (debootstrap failed: see $T/debootstrap.log)" >"$T/content.txt"
    fi
    rm -f "$T/fs.raw"
    mkfs.ext4 -q -F -d "$root" "$T/fs.raw" 2G && rm -rf "$root"
}

secs() { date +%s.%N; }

# best CMD...: the smallest wall-clock time of REPS runs (caches dropped before each).
best() {
    local b="" s e t
    for _ in $(seq "$REPS"); do
        drop_caches
        s=$(secs)
        "$@" >/dev/null 2>"$T/err" || { echo "img-bench: failed: $* ($(head -1 "$T/err"))" >&2; echo "-"; return; }
        e=$(secs)
        t=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }')
        b=$(awk -v a="$b" -v t="$t" 'BEGIN { print (a == "" || t < a) ? t : a }')
    done
    echo "$b"
}

# best_bench TOOL ARGS...: the smallest "Run completed in X seconds." of REPS runs.
best_bench() {
    local b="" t
    for _ in $(seq "$REPS"); do
        t=$("$@" 2>"$T/err" | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p')
        [ -n "$t" ] || { echo "img-bench: failed: $* ($(head -1 "$T/err"))" >&2; echo "-"; return; }
        b=$(awk -v a="$b" -v t="$t" 'BEGIN { print (a == "" || t < a) ? t : a }')
    done
    echo "$b"
}

row() {
    printf '%-30s %10s %10s %8s\n' "$1" "$2" "$3" \
        "$(awk -v k="$2" -v q="$3" 'BEGIN { if (k > 0 && q > 0) printf "%.2fx", q / k; else print "-" }')"
}

# convert_run TOOL ARGS... OUT: removes OUT first so every run creates it.
convert_run() {
    rm -f "${@: -1}"
    "$@"
}

[ -s "$T/fs.raw" ] && [ -s "$T/content.txt" ] || { echo "building the 2 GiB ext4 image..."; make_content; }
[ -s "$T/src.qcow2" ] || qemu-img convert -O qcow2 "$T/fs.raw" "$T/src.qcow2"

echo "kvmbox img vs qemu-img, $(date -u '+%F %H:%M UTC'), $(nproc) CPUs, $(uname -r), $(qemu-img --version | head -1)"
echo "files in $T ($(df -T "$T" | awk 'NR == 2 { print $2 }')); best of $REPS runs"
echo "content: $(cat "$T/content.txt"): $(du -m --apparent-size "$T/fs.raw" | cut -f1) MiB image, $(du -m "$T/fs.raw" | cut -f1) MiB allocated"
echo
printf '%-30s %10s %10s %8s\n' "convert -t none (seconds)" kvmbox qemu-img ratio
row "raw -> qcow2" "$(best convert_run "$KVMBOX" img convert -t none -O qcow2 "$T/fs.raw" "$T/k.qcow2")" \
    "$(best convert_run qemu-img convert -t none -O qcow2 "$T/fs.raw" "$T/q.qcow2")"
row "qcow2 -> raw" "$(best convert_run "$KVMBOX" img convert -t none -O raw "$T/src.qcow2" "$T/k.raw")" \
    "$(best convert_run qemu-img convert -t none -O raw "$T/src.qcow2" "$T/q.raw")"
row "qcow2 -> qcow2 -c" "$(best convert_run "$KVMBOX" img convert -t none -c -O qcow2 "$T/src.qcow2" "$T/kc.qcow2")" \
    "$(best convert_run qemu-img convert -t none -c -O qcow2 "$T/src.qcow2" "$T/qc.qcow2")"
echo "  output sizes (MiB allocated): qcow2 kvmbox $(du -m "$T/k.qcow2" | cut -f1), qemu-img $(du -m "$T/q.qcow2" | cut -f1);" \
     "raw kvmbox $(du -m "$T/k.raw" | cut -f1), qemu-img $(du -m "$T/q.raw" | cut -f1);" \
     "compressed kvmbox $(du -m "$T/kc.qcow2" | cut -f1), qemu-img $(du -m "$T/qc.qcow2" | cut -f1)"
if qemu-img compare -q "$T/k.qcow2" "$T/fs.raw" && cmp -s "$T/k.raw" "$T/fs.raw" && qemu-img compare -q "$T/kc.qcow2" "$T/fs.raw" &&
   qemu-img check -q "$T/k.qcow2" && qemu-img check -q "$T/kc.qcow2"; then
    echo "  kvmbox's three outputs hold exactly the source's content; qemu-img check finds them clean"
else
    echo "  WARNING: a kvmbox output differs from the source or fails qemu-img check"
fi
rm -f "$T/k.raw" "$T/q.raw" "$T/q.qcow2" "$T/qc.qcow2"

echo
printf '%-30s %10s %10s %8s\n' "bench -t none (seconds)" kvmbox qemu-img ratio
if [ ! -s "$T/b.qcow2" ]; then
    qemu-img create -q -f qcow2 "$T/b.qcow2" 1G
    qemu-img bench -w -t none -c 1024 -s 1M -d 8 "$T/b.qcow2" >/dev/null # allocate every cluster
fi
S=$((1048576 + 4096))
for spec in "4K read QD1|-c 20000 -d 1 -s 4K -S $S" "4K read QD32|-c 100000 -d 32 -s 4K -S $S" \
            "4K write QD1|-w -c 20000 -d 1 -s 4K -S $S" "4K write QD32|-w -c 100000 -d 32 -s 4K -S $S" \
            "1M sequential read QD8|-c 2048 -d 8 -s 1M" "1M sequential write QD8|-w -c 2048 -d 8 -s 1M"; do
    name=${spec%%|*} args=${spec#*|}
    # shellcheck disable=SC2086
    row "$name" "$(best_bench "$KVMBOX" img bench -t none $args "$T/b.qcow2")" \
        "$(best_bench qemu-img bench -t none $args "$T/b.qcow2")"
done
echo "(ratio = qemu-img time / kvmbox time: above 1 means kvmbox is faster)"
echo "command: REPS=$REPS BENCH_DIR=$T bench/img-bench.sh"
