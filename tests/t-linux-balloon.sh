#!/bin/bash
# Linux's virtio_balloon driver against the balloon: Debian's cloud kernel with kvmbox's
# initramfs (scripts/fetch-guest.sh; /init loads virtio_balloon) plus a small script run as
# kvmbox.cmd. In a 1 GiB guest, measuring the VMM's RSS:
#   1. the guest fills 800 MiB of tmpfs and deletes it, with free page reporting held off
#      (page_reporting_order 11: no such order): the memory stays resident on the host;
#   2. a 256 MiB target: Linux inflates 196608 pages (balloon_inflate in /proc/vmstat) and
#      RSS drops by >= 700 MiB (the time it took is printed);
#   3. the statistics the VMM shows are Linux's (total = MemTotal, free ~ MemFree);
#   4. back to 1 GiB: Linux deflates and fills 700 MiB of tmpfs again;
#   5. reporting back on (the order Linux chose), the 700 MiB deleted: RSS drops by >= 600 MiB
#      with no balloon command (kvmbox: info's "reported" grows);
#   6. the guest powers off: status 0.
# Needs a host whose KVM runs guests natively (scripts/host-native.sh decides at run time);
# elsewhere it prints one SKIP line with the reason and exits 77. LINUX_BALLOON_VMM=qemu runs
# the same steps under QEMU TCG (virtio-balloon-pci, free-page-reporting=on, HMP `balloon`).
# No wait guesses the host's speed (tests/balloon-vmm.sh, tests/lib/progress.sh).
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
VMM=${LINUX_BALLOON_VMM:-kvmbox}
G=build/guest
. tests/linux-guest.sh
linux_need_host "linux balloon"
T=$(mktemp -d /tmp/kvmbox-linux-balloon.XXXXXX)
TAG=linux-balloon
linux_fetch_guest "linux balloon" "$T/fetch.log" || { rm -rf "$T"; exit 1; }

# The guest's side: an extra cpio appended to the initramfs (the kernel unpacks both).
mkdir -p "$T/x"
cat >"$T/x/balloon-test.sh" <<'GUEST'
#!/bin/sh
say() { echo "LB: $*"; }
mi() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
vs() { awk -v k="$1" '$1 == k { print $2 }' /proc/vmstat; }
meminfo() { say "MEMINFO total_kb=$(mi MemTotal) free_kb=$(mi MemFree) avail_kb=$(mi MemAvailable)"; }
waitline() { while read -r l; do [ "$l" = "$1" ] && return 0; done; return 1; }
ord=/sys/module/page_reporting/parameters/page_reporting_order
if [ ! -d /sys/bus/virtio/drivers/virtio_balloon ] || [ ! -w $ord ]; then
    say "FAIL: no virtio_balloon driver or no page_reporting_order parameter"
    exit 1
fi
for d in /sys/bus/virtio/drivers/virtio_balloon/virtio*; do say "device ${d##*/} features $(cat "$d/features")"; done
rep=$(cat $ord)
echo 11 >$ord
say "page_reporting_order $rep -> $(cat $ord) (no reporting)"
mkdir -p /mnt/t && mount -t tmpfs -o size=960m tmpfs /mnt/t
dd if=/dev/zero of=/mnt/t/fill bs=1M count=800 2>/dev/null
say "filled $(du -m /mnt/t/fill | cut -f1) MiB"
rm /mnt/t/fill
meminfo
i0=$(vs balloon_inflate)
say READY-INFLATE
n=0
while [ $(($(vs balloon_inflate) - i0)) -lt 196608 ] && [ $n -lt 36000 ]; do sleep 0.1; n=$((n + 1)); done
say "INFLATED pages=$(($(vs balloon_inflate) - i0))"
d0=$(vs balloon_deflate)
n=0
while [ $(($(vs balloon_deflate) - d0)) -lt 196608 ] && [ $n -lt 7200 ]; do meminfo; sleep 0.5; n=$((n + 1)); done
say "DEFLATED pages=$(($(vs balloon_deflate) - d0))"
dd if=/dev/zero of=/mnt/t/again bs=1M count=700 2>/dev/null && say "USED-AGAIN mib=$(du -m /mnt/t/again | cut -f1)"
meminfo
echo "$rep" >$ord
say "page_reporting_order back to $(cat $ord)"
say READY-REPORT
waitline free
rm /mnt/t/again
say FREED
meminfo
waitline quit
say DONE
GUEST
chmod 755 "$T/x/balloon-test.sh"
(cd "$T/x" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$T/extra.cpio.gz"
cat "$G/initramfs.cpio.gz" "$T/extra.cpio.gz" >"$T/initrd"

KERNEL=$G/vmlinuz INITRD=$T/initrd CMDLINE="console=ttyS0 kvmbox.cmd=/balloon-test.sh" MEM=1024
# shellcheck source=tests/balloon-vmm.sh
. tests/balloon-vmm.sh
lb() { grep -a -o "^LB: $1.*" "$LOG" | tr -d '\r' | tail -1; }

if ! vm_start; then
    bad "the VM does not start"
    exit 1
fi
# 1. 800 MiB filled and freed, reporting off
if ! wait_for "LB: READY-INFLATE"; then
    bad "the guest never reached READY-INFLATE"
    grep -a -E "^(LB:|KVMBOX-GUEST)" "$LOG" | tr -d '\r' | tail -8 | sed 's/^/    | /'
    exit 1
fi
grep -a -E "^(LB:|KVMBOX-GUEST: modules)" "$LOG" | tr -d '\r' | sed 's/^/    guest| /'
rss1=$(rss_mib)
expect "after Linux filled and freed 800 MiB the VMM's RSS is $rss1 MiB (>= 800)" [ "$rss1" -ge 800 ]

# 2. inflate
t0=$(now_ms)
out=$(set_target 256 2>&1); rc=$?
expect "setting the target to 256M succeeds ($rc${out:+: $out})" [ $rc = 0 ]
rss2=$rss1
rss_down() { eval "$1=\$(rss_mib)"; [ $(($2 - ${!1})) -ge "$3" ]; } # rss_down VAR FROM MIB
poll_until 1200 rss_down rss2 "$rss1" 700
el=$(($(now_ms) - t0))
expect "RSS $rss1 -> $rss2 MiB (down $((rss1 - rss2)), >= 700) ${el} ms after the request" \
    [ $((rss1 - rss2)) -ge 700 ]
wait_for "LB: INFLATED"
expect "Linux inflated 196608 pages ($(lb INFLATED))" grep -q "LB: INFLATED pages=196608" "$LOG"
if [ "$VMM" = kvmbox ]; then
    expect "info: target and actual 256 MiB" \
        python3 -c 'import json,sys; b=json.loads(sys.argv[1])["balloon"]; sys.exit(not (b["target"]==256<<20 and b["actual"]==256<<20))' "$(info)"
else
    expect "info balloon: actual=256" [ "$(json 'i["balloon"]["actual"] >> 20')" = 256 ]
fi

# 3. statistics: Linux's, refreshed every second
sleep 3 # lets the statistics catch up with the inflation (not a limit)
inf=$(info)
wait_for "LB: MEMINFO" $(($(grep -c "LB: MEMINFO" "$LOG") + 1)) # the guest's figures after info's
mi=$(lb MEMINFO)
expect "the statistics are Linux's (info: $(python3 -c 'import json,sys; s=json.loads(sys.argv[1])["balloon"]["stats"]; print("total", s["total"], "free", s["free"], "available", s["available"])' "$inf"); guest: ${mi#LB: })" \
    python3 -c '
import json, re, sys
s = json.loads(sys.argv[1])["balloon"]["stats"]
g = {k: int(v) * 1024 for k, v in re.findall(r"(\w+)_kb=(\d+)", sys.argv[2])}
sys.exit(not (s["total"] == g["total"] and abs(s["free"] - g["free"]) <= g["total"] // 20 and s["swap_in"] == 0))' "$inf" "$mi"

# 4. deflate, memory used again
out=$(set_target 1024 2>&1); rc=$?
expect "setting the target back to 1G succeeds ($rc${out:+: $out})" [ $rc = 0 ]
wait_for "LB: READY-REPORT"
expect "Linux deflated 196608 pages ($(lb DEFLATED))" grep -q "LB: DEFLATED pages=196608" "$LOG"
expect "and used the memory again ($(lb USED-AGAIN))" grep -q "LB: USED-AGAIN mib=700" "$LOG"
rss3=$(rss_mib)
expect "RSS back up to $rss3 MiB (>= $((rss2 + 600)))" [ "$rss3" -ge $((rss2 + 600)) ]
if [ "$VMM" = kvmbox ]; then
    expect "info: actual back to 1 GiB" [ "$(json 'i["balloon"]["actual"]')" = $((1 << 30)) ]
    rep0=$(json 'i["balloon"]["reported"]')
fi

# 5. free page reporting, no balloon command
send free
wait_for "LB: FREED"
t0=$(now_ms)
rss4=$rss3
poll_until 1200 rss_down rss4 "$rss3" 600
el=$(($(now_ms) - t0))
expect "Linux freed 700 MiB and reported it: RSS $rss3 -> $rss4 MiB (down $((rss3 - rss4)), >= 600) in ${el} ms, no balloon command" \
    [ $((rss3 - rss4)) -ge 600 ]
if [ "$VMM" = kvmbox ]; then
    rep1=$(json 'i["balloon"]["reported"]')
    expect "info: reported grew by $(((rep1 - rep0) >> 20)) MiB (>= 600), target still 1 GiB" \
        cond "[ $((rep1 - rep0)) -ge $((600 << 20)) ] && [ $(json 'i["balloon"]["target"]') = $((1 << 30)) ]"
fi

# 6. poweroff
start_wait
send quit
end_status
# shellcheck disable=SC2016 # evaluated by cond
expect "the guest powers off (status ${st:-none}, 0 expected)" cond '[ "${st:-}" = 0 ] && grep -q "LB: DONE" "$LOG"'
grep -a "^LB: FAIL" "$LOG" | sed 's/^/    guest| /'
echo "linux-balloon ($VMM): RSS MiB: filled+freed $rss1, inflated to 256M $rss2, used again $rss3, after reporting $rss4"
[ $fails = 0 ]
