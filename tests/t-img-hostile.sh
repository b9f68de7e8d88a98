#!/bin/bash
# Hostile images: a qemu-img-made qcow2 with its header, L1/L2 tables, refcount table and
# blocks or snapshot table corrupted (dd/printf). `kvmbox img info/check/convert` must print
# one clear line and exit non-zero where the damage is in what they read, and never crash.
# Damaged refcounts are found by check (2 corrupt, 3 leaks) and repaired by check -r.
# Runs with build/kvmbox and, when it exists, the ASan+UBSan build-asan/kvmbox.
set -u
cd "$(dirname "$0")/.."
command -v qemu-img >/dev/null || { echo "SKIP: img hostile: qemu-img is not installed"; exit 77; }
BINS=${KVMBOX:-build/kvmbox}
[ -z "${KVMBOX:-}" ] && [ -x build-asan/kvmbox ] && BINS="$BINS build-asan/kvmbox"
export ASAN_OPTIONS=exitcode=86 UBSAN_OPTIONS=exitcode=86:print_stacktrace=1 LSAN_OPTIONS=exitcode=86
T=$(mktemp -d /tmp/kvmbox-hostile.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "PASS: img hostile: $*"; }
bad() { echo "FAIL: img hostile: $*"; fails=$((fails + 1)); }

rd64() { od -An -tu8 --endian=big -j "$2" -N8 "$1" | tr -d ' '; }
rd32() { od -An -tu4 --endian=big -j "$2" -N4 "$1" | tr -d ' '; }
# wr FILE OFFSET HEXDIGITS: writes the bytes spelled by HEXDIGITS (big-endian) at OFFSET.
wr() { printf "$(sed 's/../\\x&/g' <<<"$3")" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
wr64() { wr "$1" "$2" "$(printf '%016x' "$3")"; }
wr32() { wr "$1" "$2" "$(printf '%08x' "$3")"; }

# The victim: 4 MiB of data in 64 KiB clusters (one L2 table), and a snapshot.
head -c 4M /dev/urandom >"$T/data.raw"
qemu-img convert -O qcow2 "$T/data.raw" "$T/base.qcow2"
qemu-img convert -O qcow2 "$T/data.raw" "$T/snap.qcow2"
qemu-img snapshot -c s1 "$T/snap.qcow2"
L1=$(rd64 "$T/base.qcow2" 40)
L2=$(($(rd64 "$T/base.qcow2" "$L1") & 0x00fffffffffffe00))
RCT=$(rd64 "$T/base.qcow2" 48)
RB=$(rd64 "$T/base.qcow2" "$RCT")
SNT=$(rd64 "$T/snap.qcow2" 64)
EOF_OFF=$(stat -c %s "$T/base.qcow2")

# run BIN NAME CMD...: runs one command on a damaged image; fails the case on a crash, a
# sanitizer report, or an error (status 1) that is not exactly one line on stderr.
# Sets $rc and $msg (the stderr line).
run() {
    local bin=$1 name=$2
    shift 2
    "$bin" img "$@" >"$T/out" 2>"$T/err"
    rc=$?
    msg=$(head -1 "$T/err")
    if [ $rc -ge 64 ] || grep -qE 'Sanitizer|runtime error|Segmentation' "$T/err"; then
        bad "$name ($bin img $1): crashed or sanitizer report (status $rc): $(grep -m1 -E 'ERROR|runtime error' "$T/err")"
        return 1
    fi
    if [ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -ne 1 ]; then
        bad "$name ($bin img $1): status $rc but $(wc -l <"$T/err") lines on stderr: $(head -3 "$T/err" | tr '\n' '|')"
        return 1
    fi
    return 0
}

# hostile BIN NAME EXPECT SRC OFFSET HEX: damage a copy of SRC, then info, check, convert.
# EXPECT: open - all three fail (status 1) with one line;
#         check - check reports it (status 1 or 2); info and convert just must not crash;
#         read - check reports it and convert fails with one line.
hostile() {
    local bin=$1 name=$2 expect=$3 img=$T/h-$2.qcow2
    cp "$4" "$img"
    wr "$img" "$5" "$6"
    run "$bin" "$name" info -f qcow2 "$img" || return
    local irc=$rc imsg=$msg
    run "$bin" "$name" check -f qcow2 "$img" || return
    local crc=$rc cmsg=$msg
    run "$bin" "$name" convert -f qcow2 -O raw "$img" "$T/out.raw" || return
    local vrc=$rc vmsg=$msg
    case $expect in
    open) [ $irc = 1 ] && [ $crc = 1 ] && [ $vrc = 1 ] ||
              { bad "$name: expected info/check/convert to fail, got $irc/$crc/$vrc"; return; }
          ok "$name: refused at open ($imsg)" ;;
    check) [ $crc = 1 ] || [ $crc = 2 ] || { bad "$name: check exited $crc, expected 1 or 2"; return; }
          ok "$name: check reports it (status $crc${cmsg:+: $cmsg}); info $irc, convert $vrc, no crash" ;;
    read) { [ $crc = 1 ] || [ $crc = 2 ]; } && [ $vrc = 1 ] ||
              { bad "$name: expected check to report and convert to fail, got check $crc, convert $vrc"; return; }
          ok "$name: convert fails ($vmsg); check status $crc" ;;
    esac
}

for bin in $BINS; do
    [ -x "$bin" ] || { bad "$bin is not built"; continue; }
    B=$T/base.qcow2
    echo "# $bin"
    # Header fields
    hostile "$bin" bad-magic open "$B" 0 00000000
    hostile "$bin" bad-version open "$B" 4 00000009
    hostile "$bin" cluster-bits-48 open "$B" 20 00000030
    hostile "$bin" cluster-bits-8 open "$B" 20 00000008
    hostile "$bin" encrypted open "$B" 32 00000001
    hostile "$bin" huge-l1 open "$B" 36 7fffffff
    hostile "$bin" l1-past-eof open "$B" 40 00007f0000000000
    hostile "$bin" l1-unaligned open "$B" 40 "$(printf '%016x' $((L1 + 8)))"
    hostile "$bin" rct-past-eof open "$B" 48 00007f0000000000
    hostile "$bin" rct-zero-clusters open "$B" 56 00000000
    hostile "$bin" rct-huge open "$B" 56 7fffffff
    hostile "$bin" unknown-incompat open "$B" 72 0000000000001000
    hostile "$bin" absurd-size open "$B" 24 7fffffffffffffff
    hostile "$bin" refcount-order-7 open "$B" 96 00000007
    hostile "$bin" header-length-huge open "$B" 100 00100000
    hostile "$bin" backing-name-past-cluster open "$B" 8 000000000000fff0000000ff
    hostile "$bin" snapshot-table-past-eof check "$B" 60 0000000100007f0000000000
    # Tables
    hostile "$bin" l1-entry-past-eof read "$B" "$L1" 80007f0000000000
    hostile "$bin" l1-entry-unaligned read "$B" "$L1" "$(printf '%016x' $((0x8000000000000000 | (L2 + 512))))"
    hostile "$bin" l2-entry-past-eof read "$B" "$L2" 80007f0000000000
    hostile "$bin" l2-entry-unaligned read "$B" "$L2" "$(printf '%016x' $((0x8000000000000000 | (L2 + 4096 + 512))))"
    hostile "$bin" l2-entry-is-the-refcount-table check "$B" "$L2" "$(printf '%016x' $((0x8000000000000000 | RCT)))"
    hostile "$bin" l2-entry-is-the-l1-table check "$B" "$L2" "$(printf '%016x' $((0x8000000000000000 | L1)))"
    hostile "$bin" l2-compressed-garbage read "$B" "$L2" 7fffffffffffffff
    hostile "$bin" rct-entry-zero check "$B" "$RCT" 0000000000000000
    hostile "$bin" rct-entry-past-eof check "$B" "$RCT" 00007f0000000000
    hostile "$bin" refcount-of-l1-zero check "$B" $((RB + 2 * L1 / 65536)) 0000
    hostile "$bin" snapshot-l1-past-eof check "$T/snap.qcow2" "$SNT" 00007f0000000000
    hostile "$bin" snapshot-table-garbage check "$T/snap.qcow2" "$SNT" ffffffffffffffffffffffffffffffff

    # Files that are not images at all.
    head -c 100 "$B" >"$T/trunc.qcow2"
    : >"$T/empty.qcow2"
    for f in trunc.qcow2 empty.qcow2 missing.qcow2; do
        run "$bin" "$f" info -f qcow2 "$T/$f" || continue
        [ $rc = 1 ] && ok "$f: one line, status 1 ($msg)" || bad "$f: status $rc"
    done
    run "$bin" directory info "$T" && { [ $rc = 1 ] && ok "a directory: one line ($msg)" || bad "a directory: status $rc"; }
    qemu-img create -q -f qcow2 -u -b loop2.qcow2 -F qcow2 "$T/loop.qcow2" 1M
    qemu-img create -q -f qcow2 -u -b loop.qcow2 -F qcow2 "$T/loop2.qcow2" 1M
    run "$bin" backing-loop convert -O raw "$T/loop.qcow2" "$T/out.raw" &&
        { [ $rc = 1 ] && ok "a backing loop: refused ($msg)" || bad "a backing loop: status $rc"; }
    qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 "$T/orphan.qcow2" 1M
    run "$bin" missing-backing convert -O raw "$T/orphan.qcow2" "$T/out.raw" &&
        { [ $rc = 1 ] && ok "a missing backing file: refused ($msg)" || bad "a missing backing file: status $rc"; }

    # Refcount damage that check finds and repairs (and qemu-img then agrees).
    cp "$B" "$T/leak.qcow2"
    truncate -s $((EOF_OFF + 65536)) "$T/leak.qcow2"
    wr "$T/leak.qcow2" $((RB + 2 * EOF_OFF / 65536)) 0001
    run "$bin" leak check "$T/leak.qcow2" && [ $rc = 3 ] && ok "a leaked cluster: check exits 3" || bad "leak: check status $rc"
    if run "$bin" leak check -r leaks "$T/leak.qcow2" && [ $rc = 0 ] && qemu-img check -q "$T/leak.qcow2"; then
        ok "check -r leaks repairs it; qemu-img check agrees"
    else
        bad "check -r leaks: status $rc: $(head -3 "$T/out" | tr '\n' ' ')"
    fi
    cp "$B" "$T/rc.qcow2"
    wr "$T/rc.qcow2" $((RB + 2 * L2 / 65536)) 0000
    run "$bin" refcount-zero check "$T/rc.qcow2" && [ $rc = 2 ] && ok "an in-use cluster with refcount 0: check exits 2 ($msg)" ||
        bad "refcount 0: check status $rc"
    if run "$bin" refcount-zero check -r all "$T/rc.qcow2" && [ $rc = 0 ] && qemu-img check -q "$T/rc.qcow2" &&
       qemu-img compare -q "$T/rc.qcow2" "$T/data.raw"; then
        ok "check -r all repairs it; qemu-img check is clean and the data is intact"
    else
        bad "check -r all: status $rc: $(head -3 "$T/out" | tr '\n' ' ') $msg"
    fi
done
[ $fails -eq 0 ]
