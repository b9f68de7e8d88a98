#!/bin/bash
# Overcommit: four VMs whose memory adds up to more than the host's available memory
# (MemAvailable in /proc/meminfo; 8 GiB each, more if the host is larger) start side by
# side, daemonized, and each touches TOUCH_MIB (default 256) of its memory
# (guest-tests/touch.c) and reports it. All four must report while all four run; each
# VMM's RSS must reflect what its guest touched, not its --mem. Then they are killed.
# Waits end on the guests' progress (tests/lib/progress.sh): a guest touching its memory
# prints nothing but uses the CPU, so each may use 600 CPU-seconds before it reports.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
K=$BUILD/guest-tests/touch.elf
NVM=${NVM:-4}
TOUCH_MIB=${TOUCH_MIB:-256}
if [ ! -c /dev/kvm ]; then
    echo "SKIP: overcommit: no /dev/kvm on this host"
    exit 77
fi
[ -f "$K" ] || { echo "FAIL: overcommit: $K is not built"; exit 1; }
T=$(mktemp -d /tmp/kvmbox-overcommit.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run
cleanup() {
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    # A daemonized VMM's sanitizer reports land in its log (tests/run-all.sh counts them).
    grep -h -E 'runtime error:|ERROR: (Address|Leak)Sanitizer' "$T"/run/*.log 2>/dev/null | head -5
    rm -rf "$T"
}
trap cleanup EXIT
. tests/lib/progress.sh
fails=0
ok() { echo "PASS: overcommit: $*"; }
bad() { echo "FAIL: overcommit: $*"; fails=$((fails + 1)); }

avail_kib=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
total_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
# Per VM: 8 GiB, or more so that the sum exceeds MemAvailable by at least 1 GiB.
per_gib=$(( (avail_kib / 1048576 + 1 + NVM) / NVM ))
[ "$per_gib" -lt 8 ] && per_gib=8
sum_gib=$((per_gib * NVM))
echo "overcommit: host MemTotal $((total_kib / 1024)) MiB, MemAvailable $((avail_kib / 1024)) MiB, overcommit_memory $(cat /proc/sys/vm/overcommit_memory); $NVM VMs x ${per_gib} GiB = $sum_gib GiB"
if [ $((sum_gib * 1048576)) -le "$avail_kib" ]; then
    bad "the VMs' memory ($sum_gib GiB) does not exceed MemAvailable"
fi

started=0
for i in $(seq 1 "$NVM"); do
    # hold: the guest idles until it is killed below; --timeout only ends a VM that outlives
    # a killed script (cleanup ends them otherwise).
    if out=$("$KVMBOX" run --daemonize --name "oc$i" --kernel "$K" --mem "${per_gib}G" --timeout 7200 \
        --cmdline "touch=$TOUCH_MIB hold=7200" 2>&1); then
        started=$((started + 1))
    else
        bad "VM oc$i (--mem ${per_gib}G) does not start: $out"
    fi
done
[ "$started" = "$NVM" ] && ok "$NVM VMs of ${per_gib} GiB ($sum_gib GiB in all, host MemAvailable $((avail_kib / 1048576)) GiB) started side by side"

vm_pid() { "$KVMBOX" info "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' 2>/dev/null; }
reported=0
for i in $(seq 1 "$NVM"); do
    pid=$(vm_pid "oc$i")
    [ -n "$pid" ] && wait_output --pid "$pid" --quiet 120 --cpu-quiet 600 --cap 3600 "$T/run/oc$i.log" '^(TOUCHED|FAIL)'
done
reported=$(cat "$T"/run/oc*.log 2>/dev/null | grep -c "^TOUCHED")
running=$("$KVMBOX" list 2>/dev/null | grep -c "^oc[0-9]* *running")
if [ "$reported" = "$NVM" ] && [ "$running" = "$NVM" ]; then
    ok "all $NVM guests touched $TOUCH_MIB MiB each and reported, all $running still running"
else
    bad "$reported of $NVM guests reported, $running running"
fi
sum_rss=0
for i in $(seq 1 "$NVM"); do
    log=$T/run/oc$i.log
    pid=$(vm_pid "oc$i")
    rss=$(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/${pid:-0}/status" 2>/dev/null)
    rss=${rss:-0}
    sum_rss=$((sum_rss + rss))
    line=$(grep -E "^(TOUCHED|RAM)" "$log" 2>/dev/null | tr -d '\r' | tr '\n' ' ')
    if grep -q "^PASS: $TOUCH_MIB MiB touched and read back" "$log" 2>/dev/null &&
       [ "$rss" -ge "$TOUCH_MIB" ] && [ "$rss" -lt $((TOUCH_MIB + 256)) ]; then
        ok "oc$i: --mem ${per_gib}G, VMM RSS $rss MiB (between $TOUCH_MIB and $((TOUCH_MIB + 256))); guest: $line"
    else
        bad "oc$i: --mem ${per_gib}G, VMM RSS $rss MiB; guest: $line"
        grep -E "FAIL|SUMMARY" "$log" 2>/dev/null | sed 's/^/    | /'
    fi
done
echo "overcommit: $NVM x ${per_gib} GiB = $sum_gib GiB of guest memory on a host with $((avail_kib / 1024)) MiB available; resident in all: $sum_rss MiB"
killed=0
for i in $(seq 1 "$NVM"); do "$KVMBOX" kill "oc$i" >/dev/null 2>&1 && killed=$((killed + 1)); done
none_left() { left=$("$KVMBOX" list 2>/dev/null | grep -c "^oc"); [ "$left" = 0 ]; }
poll_until 120 none_left
if [ "$killed" = "$NVM" ] && [ "$left" = 0 ]; then ok "all $NVM killed, none left"; else bad "killed $killed, $left left"; fi
[ $fails = 0 ]
