#!/bin/bash
# kvmbox snapshot end to end (docs/savestate.md, "Snapshots"). Guest: build/guest-tests/savestate.elf.
#  - a counting guest with a qcow2 disk: a full snapshot taken while it runs (it runs on), reverted
#    twice: both times it goes on at the same count; list, current, info and qemu-img agree;
#  - the disk guest (32 requests in flight) snapshotted mid-round, run to the end, then: the
#    disk-only snapshot reverted leaves the VM stopped and the image equal to the snapshot exported
#    by qemu-img; the full snapshot reverted runs the guest on from there and every round checks
#    out (disk and state belong together); delete frees the clusters (qemu-img check clean, the
#    snapshot gone from qemu-img snapshot -l, fewer allocated clusters);
#  - a stopped, defined VM: disk-only snapshots directly on its images; undefine refuses while it has
#    snapshots; a disk whose internal snapshot vanished is refused on revert, nothing changed;
#  - a raw disk refuses create with one line (status 2), --memory-only works with it;
#  - bad input: unknown VM, unknown snapshot, name in use, hostile names: one line, status 2.
set -u
cd "$(dirname "$0")/.."
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
K=$BUILD/guest-tests/savestate.elf
if [ ! -c /dev/kvm ]; then
    echo "SKIP: snapshot: no /dev/kvm on this host"
    exit 77
fi
if ! command -v qemu-img >/dev/null; then
    echo "SKIP: snapshot: qemu-img is not installed (the host-side oracle)"
    exit 77
fi
if [ ! -f "$K" ]; then
    echo "FAIL: snapshot: $K is not built (make guest-tests)"
    exit 1
fi
KVMBOX=$(realpath "$KVMBOX")
K=$(realpath "$K")
T=$(mktemp -d /tmp/kvmbox-snapshot.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
cleanup() {
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    [ "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "PASS: snapshot: $*"; }
bad() { echo "FAIL: snapshot: $*"; fails=$((fails + 1)); }
expect() { # expect DESCRIPTION CONDITION (a shell expression, evaluated)
    if eval "$2"; then ok "$1"; else bad "$1"; fi
}
. tests/lib/progress.sh
# refused DESC PATTERN CMD...: CMD fails with status 2 and exactly one line on stderr that
# contains PATTERN.
refused() {
    local d=$1 pat=$2 rc
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" = 2 ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q -- "$pat" "$T/err"; then
        ok "$d"
    else
        bad "$d (status $rc, stderr: $(head -c 300 "$T/err"))"
    fi
}
counts() { grep -a '^COUNT' "$1" | tr -d '\r' | sed 's/ ms=.*//'; }
# The internal snapshots qemu-img sees on image $1, one name a line, sorted.
img_snaps() { qemu-img snapshot -U -l "$1" | awk 'NR > 2 {print $2}' | sort; }
# Host clusters in use in qcow2 image $1 (refcount > 0), read from its refcount table (qcow2.txt):
# what deleting a snapshot frees (kvmbox does not punch holes, so the file's blocks do not say).
allocated() {
    python3 - "$1" <<'PYEOF'
import struct, sys
f = open(sys.argv[1], 'rb')
h = f.read(104)
cbits = struct.unpack_from('>I', h, 20)[0]
rt_off, rt_clusters = struct.unpack_from('>QI', h, 48)
order = struct.unpack_from('>I', h, 96)[0] if struct.unpack_from('>I', h, 4)[0] >= 3 else 4
cs, bits = 1 << cbits, 1 << order
f.seek(rt_off)
table = struct.unpack('>%dQ' % (rt_clusters * cs // 8), f.read(rt_clusters * cs))
used = 0
for e in table:
    off = e & 0x00fffffffffffe00
    if not off:
        continue
    f.seek(off)
    blk = int.from_bytes(f.read(cs), 'big')
    n = cs * 8 // bits
    used += sum(1 for i in range(n) if (blk >> (i * bits)) & ((1 << bits) - 1))
print(used)
PYEOF
}
# revert_and_count VM SNAP LOG N: reverts VM to SNAP and waits for N counts of the VM it runs;
# prints their numbers on one line. The VM that was running prints until it is killed, and its
# last log line ("... ended: ...") comes after all of that: the reverted VM's counts are the
# ones after it.
revert_and_count() {
    local vm=$1 snap=$2 log=$3 n=$4 ends before
    ends=$(grep -ac 'ended: ' "$log")
    "$KVMBOX" snapshot "$vm" revert "$snap" >"$T/out" 2>&1
    echo $? >"$T/rc"
    wait_output --count $((ends + 1)) "$log" 'ended: ' || return 1
    before=$(awk '/ended: / {e = c} /^COUNT/ {c++} END {print e + 0}' "$log")
    wait_output --count $((before + n)) "$log" '^COUNT [0-9]+ ms=' || return 1
    counts "$log" | sed -n "$((before + 1)),$((before + n))p" | cut -d' ' -f2 | tr '\n' ' '
}
gone() { poll_until 60 bash -c "! '$KVMBOX' info '$1' 2>/dev/null | grep -q running"; }

# --- a counting guest with a qcow2 disk: full snapshot, revert twice --------------------------
D=$T/c.qcow2
qemu-img create -q -f qcow2 "$D" 4M
LOG=$T/run/c1.log
"$KVMBOX" run --daemonize --name c1 --kernel "$K" --mem 64M --disk "$D,format=qcow2" >/dev/null
wait_output --count 3 "$LOG" '^COUNT [0-9]+ ms=' || bad "the counting guest did not start counting"
"$KVMBOX" snapshot c1 create s1 --description "three counts in" >"$T/out" 2>&1
rc=$?
expect "create on a running VM exits 0 ($(cat "$T/out"))" '[ $rc = 0 ]'
n=$(grep -c '^COUNT' "$LOG")
wait_output --count $((n + 2)) "$LOG" '^COUNT [0-9]+ ms=' || bad "the guest stopped counting after the snapshot"
expect "the VM runs on after the snapshot" '"$KVMBOX" info c1 | grep -q "State: *running"'
expect "the snapshot's state file is kept with the definition" '[ -s "$T/defs/c1.snapshots/s1.state" ] && [ -s "$T/defs/c1.snapshots/s1.json" ]'
expect "current names it" '[ "$("$KVMBOX" snapshot c1 current)" = s1 ]'
expect "list shows name, kind and description" '"$KVMBOX" snapshot c1 list | grep -q "s1 .* full .*three counts in"'
expect "info lists it" '"$KVMBOX" info c1 | grep -q "^Snapshots: 1: s1 (full, current)"'
first=()
for i in 1 2; do
    first[i]=$(revert_and_count c1 s1 "$LOG" 4) || bad "no output after revert $i"
    rc=$(cat "$T/rc")
    expect "revert $i exits 0 and the VM runs again (status $rc: $(tr "\n" " " <"$T/out"))" '[ $rc = 0 ]'
done
expect "reverting twice gives the same guest output ('${first[1]}' and '${first[2]}')" \
    '[ -n "${first[1]}" ] && [ "${first[1]}" = "${first[2]}" ]'
expect "the guest saw no clock leap across the reverts" "! grep -q '^LEAP' \"\$LOG\""

# --- kinds, list against qemu-img, delete on a running VM ---------------------------------------
"$KVMBOX" snapshot c1 create s2 --disk-only >/dev/null 2>&1 || bad "--disk-only create failed"
"$KVMBOX" snapshot c1 create s3 --memory-only >/dev/null 2>&1 || bad "--memory-only create failed"
"$KVMBOX" snapshot c1 create >"$T/out" 2>&1 || bad "create without a name failed"
stamp=$(sed -n 's/^snapshot \([0-9]*\) of c1 created.*/\1/p' "$T/out")
expect "create without a name names it after the time ($stamp)" \
    '[ -n "$stamp" ] && [ $((stamp - $(date +%s))) -le 0 ] && [ $(($(date +%s) - stamp)) -lt 600 ]'
expect "list shows the kinds" '"$KVMBOX" snapshot c1 list | grep -q "s2 .* disk" && "$KVMBOX" snapshot c1 list | grep -q "s3 .* memory"'
"$KVMBOX" snapshot c1 list >"$T/list"
awk 'NR > 2 && $5 != "memory" {print $1}' "$T/list" | sort >"$T/ours"
img_snaps "$D" >"$T/theirs"
expect "qemu-img snapshot -l lists the disk snapshots list shows ($(tr '\n' ' ' <"$T/theirs"))" \
    '[ -s "$T/ours" ] && cmp -s "$T/ours" "$T/theirs"'
"$KVMBOX" snapshot c1 delete s2 >/dev/null 2>&1
rc=$?
expect "delete on a running VM exits 0" '[ $rc = 0 ]'
expect "the running VM's image no longer has it" '! img_snaps "$D" | grep -qx s2'
"$KVMBOX" snapshot c1 delete s3 >/dev/null 2>&1 || bad "delete of a memory-only snapshot failed"
expect "a deleted snapshot's files are gone" '[ ! -e "$T/defs/c1.snapshots/s3.state" ] && [ ! -e "$T/defs/c1.snapshots/s3.json" ]'

# --- bad input --------------------------------------------------------------------------------------
refused "an unknown VM: status 2, one line" "no VM named" "$KVMBOX" snapshot nosuchvm create x
refused "an unknown snapshot: status 2, one line" "no snapshot named" "$KVMBOX" snapshot c1 revert nosuch
refused "delete of an unknown snapshot: status 2, one line" "no snapshot named" "$KVMBOX" snapshot c1 delete nosuch
refused "a name in use: status 2, one line" "already has a snapshot" "$KVMBOX" snapshot c1 create s1
for name in ../escape a/b .hidden "x y" "$(printf 'a%.0s' {1..70})"; do
    refused "hostile snapshot name '${name:0:20}': status 2, one line" "invalid snapshot name" \
        "$KVMBOX" snapshot c1 create "$name"
done
refused "a hostile name on revert: status 2" "invalid snapshot name" "$KVMBOX" snapshot c1 revert ../../c1
expect "nothing was created outside the snapshot directory" '[ ! -e "$T/defs/escape.json" ] && [ ! -e "$T/defs/escape.state" ]'
expect "the refused creates left the VM running and its disk snapshots as they were" \
    '"$KVMBOX" info c1 | grep -q "State: *running" && [ "$(img_snaps "$D" | wc -l)" = 2 ]'
"$KVMBOX" kill c1 >/dev/null 2>&1
gone c1
expect "kvmbox img snapshot -l sees the same snapshots" \
    '[ "$("$KVMBOX" img snapshot -l "$D" | awk "NR > 2 {print \$2}" | sort)" = "$(img_snaps "$D")" ]'

# --- the disk guest: revert after disk writes, full revert, delete frees clusters -------------------
D=$T/b.qcow2
qemu-img create -q -f qcow2 "$D" 2M
LOG=$T/run/b1.log
"$KVMBOX" run --daemonize --name b1 --kernel "$K" --mem 64M --disk "$D,format=qcow2,serial=rw0" \
    --cmdline "mode=blk rounds=4" >/dev/null
wait_output --quiet 120 "$LOG" '^ROUND 1 ok' || bad "the disk guest did not finish its first round"
# Requests are in flight all the time: both snapshots land in the middle of a round.
rounds_at=$(grep -c '^ROUND' "$LOG")
"$KVMBOX" snapshot b1 create bfull >/dev/null 2>"$T/err" || bad "full snapshot of the disk guest: $(cat "$T/err")"
"$KVMBOX" snapshot b1 create bdisk --disk-only >/dev/null 2>"$T/err" || bad "disk-only snapshot of the disk guest: $(cat "$T/err")"
ends=$(grep -c "ended: " "$LOG")
"$PROGRESS" run --quiet 180 --cap 1800 --watch "$LOG" -- "$KVMBOX" wait b1 >/dev/null 2>&1
rc=$?
# the daemon writes the last of NAME.log (and its "ended" line) after waiters hear
wait_output --count $((ends + 1)) "$LOG" "ended: " >/dev/null 2>&1
expect "the disk guest ran on to the end after the snapshots (status $rc)" \
    '[ "$rc" = 1 ] && grep -q "^SUMMARY: pass=1 fail=0" "$LOG"'
qemu-img convert -U -f qcow2 -O raw -l snapshot.name=bdisk "$D" "$T/bdisk.raw"
qemu-img convert -U -f qcow2 -O raw "$D" "$T/after.raw"
expect "the guest's writes changed the disk since the snapshot (so the next check can fail)" \
    '! cmp -s "$T/bdisk.raw" "$T/after.raw"'
"$KVMBOX" snapshot b1 revert bdisk >"$T/out" 2>&1
rc=$?
expect "revert to a disk-only snapshot exits 0 and leaves the VM stopped ($(cat "$T/out"))" \
    '[ $rc = 0 ] && ! "$KVMBOX" info b1 2>/dev/null | grep -q running'
expect "after revert the disk equals the snapshot (qemu-img compare)" \
    'qemu-img compare -q -f qcow2 -F raw "$D" "$T/bdisk.raw"'
expect "current follows the revert" '[ "$("$KVMBOX" snapshot b1 current)" = bdisk ]'
before=$(grep -c '^ROUND' "$LOG")
"$KVMBOX" snapshot b1 revert bfull >"$T/out" 2>&1
rc=$?
expect "revert to the full snapshot exits 0 ($(tr '\n' ' ' <"$T/out"))" '[ $rc = 0 ]'
ends=$(grep -c "ended: " "$LOG")
"$PROGRESS" run --quiet 180 --cap 1800 --watch "$LOG" -- "$KVMBOX" wait b1 >/dev/null 2>&1
rc=$?
# the daemon writes the last of NAME.log (and its "ended" line) after waiters hear
wait_output --count $((ends + 1)) "$LOG" "ended: " >/dev/null 2>&1
expect "the reverted disk guest finishes with every round checked (status $rc)" \
    '[ "$rc" = 1 ] && [ "$(grep -c "^SUMMARY: pass=1 fail=0" "$LOG")" = 2 ] && ! grep -q "^FAIL" "$LOG"'
after=$(($(grep -c '^ROUND' "$LOG") - before))
expect "it went on from the snapshot's round ($rounds_at of 4 rounds done before it, $after after the revert)" \
    '[ $after -ge 1 ] && [ $after -le $((4 - rounds_at)) ]'
a0=$(allocated "$D")
"$KVMBOX" snapshot b1 delete bdisk >/dev/null 2>&1 || bad "delete on a stopped VM failed"
"$KVMBOX" snapshot b1 delete bfull >/dev/null 2>&1 || bad "delete of the full snapshot failed"
a1=$(allocated "$D")
expect "qemu-img check finds the image clean after the deletes" 'qemu-img check -q "$D" >/dev/null 2>&1'
expect "qemu-img snapshot -l no longer lists them" '[ -z "$(img_snaps "$D")" ]'
expect "the deletes freed clusters ($a0 -> $a1 allocated)" '[ -n "$a1" ] && [ "$a1" -lt "$a0" ]'
expect "list is empty" '[ -z "$("$KVMBOX" snapshot b1 list --name)" ]'

# --- a stopped, defined VM ----------------------------------------------------------------------------
D=$T/s.qcow2
qemu-img create -q -f qcow2 "$D" 2M
printf '{ "name": "sv", "kernel": "%s", "mem": "64M", "disk": ["%s,format=qcow2"] }\n' "$K" "$D" >"$T/sv.json"
"$KVMBOX" define "$T/sv.json" >/dev/null
"$KVMBOX" snapshot sv create off1 >"$T/out" 2>&1
rc=$?
expect "create on a stopped VM takes a disk snapshot ($(cat "$T/out"))" \
    '[ $rc = 0 ] && "$KVMBOX" snapshot sv list | grep -q "off1 .* disk" && img_snaps "$D" | grep -qx off1'
expect "no state file for a stopped VM's snapshot" '[ ! -e "$T/defs/sv.snapshots/off1.state" ]'
refused "--memory-only on a stopped VM: status 2" "needs a running VM" "$KVMBOX" snapshot sv create m1 --memory-only
refused "undefine refuses a VM with snapshots" "delete them first" "$KVMBOX" undefine sv
qemu-img snapshot -d off1 "$D"
cp "$D" "$T/s.before"
refused "revert to a snapshot a disk no longer has: status 2" "no internal snapshot named off1" \
    "$KVMBOX" snapshot sv revert off1
expect "the refused revert changed nothing" 'cmp -s "$D" "$T/s.before"'
refused "delete of it: status 2" "no internal snapshot named off1" "$KVMBOX" snapshot sv delete off1
expect "the snapshot is still listed after the refused delete" '"$KVMBOX" snapshot sv list --name | grep -qx off1'

# --- a raw disk -----------------------------------------------------------------------------------------
R=$T/r.img
truncate -s 2M "$R"
LOG=$T/run/r1.log
"$KVMBOX" run --daemonize --name r1 --kernel "$K" --mem 64M --disk "$R,format=raw" >/dev/null
wait_output --count 3 "$LOG" '^COUNT [0-9]+ ms=' || bad "the raw-disk guest did not start counting"
refused "a raw disk refuses a whole-VM snapshot, naming it" "disk $R is raw" "$KVMBOX" snapshot r1 create x
refused "and a disk-only one" "disk $R is raw" "$KVMBOX" snapshot r1 create x --disk-only
"$KVMBOX" snapshot r1 create rm --memory-only >"$T/out" 2>&1
rc=$?
expect "--memory-only works with a raw disk ($(cat "$T/out"))" '[ $rc = 0 ]'
n=$(grep -c '^COUNT' "$LOG")
wait_output --count $((n + 2)) "$LOG" '^COUNT [0-9]+ ms=' || bad "the raw-disk guest stopped after the snapshot"
last=$(counts "$LOG" | tail -1 | cut -d' ' -f2)
back=$(revert_and_count r1 rm "$LOG" 2) || bad "no output after the memory-only revert"
rc=$(cat "$T/rc")
expect "revert to the memory-only snapshot exits 0 (status $rc: $(tr '\n' ' ' <"$T/out"))" '[ $rc = 0 ]'
back=${back%% *}
expect "the guest went back in time to the snapshot (count $last before, $back after)" \
    '[ -n "$back" ] && [ "$back" -lt "$last" ]'
"$KVMBOX" kill r1 >/dev/null 2>&1

echo "snapshot: $fails failed"
[ $fails = 0 ]
