#!/bin/bash
# virtio-balloon end to end with guest-tests/balloon.c in a 1 GiB guest, measuring the VMM's
# resident memory (VmRSS of its process) at each step:
#   1. the guest touches 800 MiB: RSS >= 800 MiB;
#   2. `kvmbox balloon NAME 256M`: RSS drops by >= 700 MiB (how long it took is printed); the
#      guest sees the target (num_pages), inflates, and info shows target and actual 256 MiB;
#   3. the statistics info shows are the ones the guest sent (it refreshes them each time the
#      device returns the buffer, every second with --stats-interval 1);
#   4. back to 1G: the guest deflates, the pages read as zero and are usable (guest checks),
#      RSS grows back;
#   5. free page reporting: the guest touches 64 MiB more and reports it free: RSS drops by
#      ~64 MiB and info's "reported" grows, with no balloon command;
#   6. bad requests (above the memory, below the 32 MiB floor, a VM with --balloon off, no
#      such VM, a bad size) fail with a clear message and change nothing;
#   7. the guest ends with debug-exit status 1 (all its checks passed).
# KVMBOX_VMM=qemu runs the same kernel under QEMU TCG (virtio-balloon-pci with
# free-page-reporting=on, driven through the HMP monitor): validates the guest side; QEMU
# has no "reported" counter and clamps bad targets, so those checks are left out there.
# No check depends on how fast the host is: every wait ends on what it waits for, bounded by
# the guest's progress or a generous cap (tests/balloon-vmm.sh, tests/lib/progress.sh).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
VMM=${KVMBOX_VMM:-kvmbox}
K=$BUILD/guest-tests/balloon.elf
CTL=$BUILD/guest-tests/ctl.elf
if [ "$VMM" = kvmbox ] && [ ! -c /dev/kvm ]; then
    echo "SKIP: balloon: no /dev/kvm on this host"
    exit 77
fi
for f in "$K" "$CTL"; do [ -f "$f" ] || { echo "FAIL: balloon: $f is not built"; exit 1; }; done
T=$(mktemp -d /tmp/kvmbox-balloon.XXXXXX)
# wait=: the guest waits for each host command for up to an hour (default 120 s of its time).
TAG=balloon KERNEL=$K INITRD='' CMDLINE='wait=3600' MEM=1024
# shellcheck source=tests/balloon-vmm.sh
. tests/balloon-vmm.sh

if ! vm_start; then
    bad "the VM does not start"
    exit 1
fi

# 1. touched
if ! wait_for READY-INFLATE; then
    bad "the guest never reached READY-INFLATE"
    grep -E "FAIL|SUMMARY" "$LOG" | sed 's/^/    | /'
    exit 1
fi
grep -E "^(PASS|FAIL|BALLOON|TOUCHED)" "$LOG" | tr -d '\r' | sed 's/^/    guest| /'
rss1=$(rss_mib)
expect "after the guest touched 800 MiB the VMM's RSS is $rss1 MiB (>= 800)" [ "$rss1" -ge 800 ]

# 2. inflate to a 256 MiB target
t0=$(now_ms)
out=$(set_target 256 2>&1); rc=$?
expect "setting the target to 256M succeeds ($rc${out:+: $out})" [ $rc = 0 ]
rss2=$rss1
rss_down() { rss2=$(rss_mib); [ $((rss1 - rss2)) -ge "$1" ]; }
poll_until 600 rss_down 700
el=$(($(now_ms) - t0))
expect "RSS $rss1 -> $rss2 MiB (down $((rss1 - rss2)) MiB, >= 700) ${el} ms after the request" \
    [ $((rss1 - rss2)) -ge 700 ]
expect "the guest is told the new target (num_pages 196608)" wait_for "TARGET num_pages=196608"
wait_for "INFLATED pages=196608 actual=196608"
expect "the guest inflates 196608 pages ($(grep -o 'INFLATED.*' "$LOG" | tr -d '\r' | head -1))" \
    grep -q "INFLATED pages=196608 actual=196608" "$LOG"
if [ "$VMM" = kvmbox ]; then
    expect "info: target 256 MiB, actual 256 MiB, released >= 768 MiB" \
        python3 -c 'import json,sys; b=json.loads(sys.argv[1])["balloon"]; sys.exit(not (b["target"]==256<<20 and b["actual"]==256<<20 and b["released"]>=768<<20))' "$(info)"
else
    expect "info balloon: actual=256" [ "$(json 'i["balloon"]["actual"] >> 20')" = 256 ]
fi

# 3. statistics: wait for three refreshes, then compare with what the guest sent. The guest
# prints STATS-SENT n after its kick and sends n+1 only once the device gave n back: when
# line n0+2 is out, the device has had buffer n0+1, sent after ts0, so the figures info shows
# are younger than now - ts0; and they are those of one of the last three lines once one more
# line is out after info (the line of the buffer the device holds may still be coming).
n0=$(grep -c STATS-SENT "$LOG") ts0=$(now_ms)
wait_for STATS-SENT $((n0 + 3))
inf=$(info)
since_ms=$(($(now_ms) - ts0))
wait_for STATS-SENT $(($(grep -c STATS-SENT "$LOG") + 1))
sent=$(grep -o 'STATS-SENT [0-9]* minor_faults=[0-9]* total=[0-9]*' "$LOG" | tail -3 | awk '{ print $3 "," $4 }' | tr '\n' ' ')
expect "the device returned the statistics buffer and the guest refreshed it ($(($(grep -c STATS-SENT "$LOG") - n0)) times in $(($(now_ms) - ts0)) ms at --stats-interval 1)" \
    [ "$(grep -c STATS-SENT "$LOG")" -ge $((n0 + 2)) ]
expect "the statistics in info are the ones the guest sent (info: $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["balloon"]["stats"])' "$inf"); guest's last: $sent)" \
    python3 -c '
import json, sys
s = json.loads(sys.argv[1])["balloon"]["stats"]
sent = [dict(kv.split("=") for kv in x.split(",")) for x in sys.argv[2].split()]
want = {"swap_in": 11, "swap_out": 22, "major_faults": 33, "free": 123456789 * 4096,
        "available": 98765432 * 4096, "caches": 4242 * 4096}
ok = all(s[k] == v for k, v in want.items())
ok = ok and any(s["minor_faults"] == int(d["minor_faults"]) and s["total"] == int(d["total"]) for d in sent)
sys.exit(not ok)' "$inf" "$sent"
if [ "$VMM" = kvmbox ]; then
    age=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["balloon"]["stats"]["age_ms"])' "$inf")
    expect "their age ($age ms) is at most the $since_ms ms since the device was sent them" \
        cond "[ $age -ge 0 ] && [ $age -le $since_ms ]"
fi

# 4. deflate back to the whole memory
out=$(set_target 1024 2>&1); rc=$?
expect "setting the target back to 1G succeeds ($rc${out:+: $out})" [ $rc = 0 ]
expect "the guest deflates to actual 0" wait_for "DEFLATED pages=196608 actual=0"
expect "the guest touched the region to report" wait_for READY-REPORT
grep -E "^(PASS|FAIL): (deflate|the [0-9]+ touched)" "$LOG" | tr -d '\r' | sed 's/^/    guest| /'
expect "the guest's checks after deflating pass (zeroes, untouched pages kept, usable again)" \
    [ "$(grep -cE '^PASS: (deflate|the [0-9]+ touched)' "$LOG")" = 4 ]
rss3=$(rss_mib)
expect "RSS back up to $rss3 MiB once the guest used the memory again (>= $((rss2 + 700)))" [ "$rss3" -ge $((rss2 + 700)) ]
if [ "$VMM" = kvmbox ]; then
    expect "info: actual back to 1 GiB" [ "$(json 'i["balloon"]["actual"]')" = $((1 << 30)) ]
    rep0=$(json 'i["balloon"]["reported"]')
    tgt0=$(json 'i["balloon"]["target"]')
else
    expect "info balloon: actual=1024" [ "$(json 'i["balloon"]["actual"] >> 20')" = 1024 ]
fi

# 5. free page reporting, no balloon command (the device releases the pages before it gives
# the buffers back, so once the guest says REPORTED, RSS is down)
send report
wait_for REPORTED
expect "the guest reports 64 MiB free ($(grep -o 'REPORTED.*' "$LOG" | tr -d '\r' | head -1))" grep -q REPORTED "$LOG"
rss4=$(rss_mib)
expect "RSS $rss3 -> $rss4 MiB after the report (down $((rss3 - rss4)), >= 60)" [ $((rss3 - rss4)) -ge 60 ]
if [ "$VMM" = kvmbox ]; then
    rep1=$(json 'i["balloon"]["reported"]')
    expect "info: reported grew by $(((rep1 - rep0) >> 20)) MiB (64), target unchanged" \
        cond "[ $((rep1 - rep0)) = $((64 << 20)) ] && [ $(json 'i["balloon"]["target"]') = $tgt0 ]"
fi

# 6. bad requests (kvmbox only: QEMU clamps the target to its memory)
if [ "$VMM" = kvmbox ]; then
    ntarget=$(grep -c TARGET "$LOG")
    try() { # try DESCRIPTION PATTERN ARGS...: the command fails with a message matching PATTERN
        local d=$1 p=$2 out rc
        shift 2
        out=$("$KVMBOX" "$@" 2>&1); rc=$?
        out=${out%%$'\n'*}
        if [ $rc != 0 ] && grep -qiE -- "$p" <<<"$out"; then ok "$d: status $rc, \"$out\""
        else bad "$d: status $rc, \"$out\" (expected a failure matching /$p/)"; fi
    }
    try "a target above the guest's memory is refused" "more than the guest's memory" balloon $N 2G
    try "a target below the floor is refused" "below the floor" balloon $N 16M
    try "a target of 0 is refused" "below the floor|invalid|size" balloon $N 0
    try "a malformed size is refused" "size|invalid|usage" balloon $N 12Q
    try "no such VM" "no (running )?VM|not running|no such" balloon nosuchvm 256M
    "$KVMBOX" run --daemonize --name nob --kernel "$CTL" --mem 64M --balloon off >/dev/null 2>&1
    try "a VM with --balloon off" "balloon" balloon nob 32M
    expect "info of a VM with --balloon off shows no balloon" \
        python3 -c 'import json,sys; sys.exit(json.loads(sys.argv[1]).get("balloon") not in (None, {}))' \
        "$("$KVMBOX" info nob --json)"
    "$KVMBOX" kill nob >/dev/null 2>&1
    # Three more refreshes: the guest has looked at its target since (it does on every wake-up).
    wait_for STATS-SENT $(($(grep -c STATS-SENT "$LOG") + 3))
    tgt1=$(json 'i["balloon"]["target"]')
    expect "the refused requests changed nothing (target $((tgt1 >> 20)) MiB, no new TARGET line in the guest)" \
        cond "[ $tgt1 = $tgt0 ] && [ $(grep -c TARGET "$LOG") = $ntarget ]"
fi

# 7. the end
start_wait
send quit
end_status
summary=$(grep -o 'SUMMARY.*' "$LOG" | tr -d '\r')
# shellcheck disable=SC2016 # evaluated by cond
expect "the guest ends with status ${st:-none} (1: all its checks passed; $summary)" \
    cond '[ "${st:-}" = 1 ] && grep -q "SUMMARY: pass=[0-9]* fail=0" "$LOG"'
grep -E "^FAIL" "$LOG" | sed 's/^/    guest| /'
echo "balloon ($VMM): RSS MiB: touched $rss1, inflated to 256M $rss2 (${el} ms), deflated and reused $rss3, after reporting 64 MiB $rss4"
[ $fails = 0 ]
