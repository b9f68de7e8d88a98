#!/bin/bash
# kvmbox save / restore of VMs with a CD-ROM and of VMs booted through firmware
# (docs/savestate.md).
# A CD-ROM (virtio-scsi), direct kernel boot: the guest (guest-tests/savestate.c mode=cd) locks
# the medium and reads it whole pass after pass, each pass begun with an unknown command whose
# sense data it fetches at the end; saved mid-pass and restored, every pass (before and after)
# has the image's checksum (computed here), the medium stays locked, the sense data survive.
# Firmware boot: SeaBIOS boots a GRUB El Torito CD (virtio-scsi) whose GRUB loads the counting guest
# (guest-tests/savestate.c) by multiboot. One boot, saved and restored four times:
#  0. right after it started (SeaBIOS's first steps, wherever this host's speed puts them);
#  1. inside SeaBIOS, at its first console line (it is reading fw_cfg: tables, boot order);
#  2. inside GRUB, once it says it is loading the kernel: GRUB then reads the kernel from the
#     CD through the BIOS, so after the restore the CD must read right for the kernel to run;
#  3. after the firmware handed over to the guest, which must go on at exactly the next count.
# Then a changed firmware file and a changed CD image are refused (one line, status 2), and
# with both put back the state restores again. Every wait follows the guest's progress: its
# console, and for the silent firmware the VM's CPU time (tests/lib/progress.sh).
set -u
cd "$(dirname "$0")/.."
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
K=$BUILD/guest-tests/savestate.elf
W=savestate-fw
[ -c /dev/kvm ] || { echo "SKIP: $W: no /dev/kvm on this host"; exit 77; }
[ -f "$K" ] || { echo "FAIL: $W: $K is not built (make guest-tests)"; exit 1; }
. tests/fw-images.sh
missing=$(fw_images_missing)
[ -z "$missing" ] || { echo "SKIP: $W: missing tools:$missing (scripts/deps.sh installs them)"; exit 77; }
[ -f /usr/share/seabios/bios-256k.bin ] || { echo "SKIP: $W: no SeaBIOS (Debian package seabios)"; exit 77; }
KVMBOX=$(realpath "$KVMBOX")
T=$(mktemp -d /tmp/kvmbox-savestate-fw.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
cleanup() {
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    # the daemons' stderr is in their logs: show any sanitizer report, so tests/run-all.sh sees it
    cat "$T"/run/*.log 2>/dev/null | grep -a -E -A3 'runtime error:|ERROR: (Address|Leak)Sanitizer'
    [ "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "PASS: $W: $*"; }
bad() { echo "FAIL: $W: $*"; fails=$((fails + 1)); }
expect() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
. tests/lib/progress.sh
refused() { # DESC WANT_RC PATTERN CMD...: status WANT_RC and one line on stderr with PATTERN
    local d=$1 want=$2 pat=$3 rc
    shift 3
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" = "$want" ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q -- "$pat" "$T/err"; then
        ok "$d ($(cat "$T/err"))"
    else
        bad "$d (status $rc, stderr: $(head -c 300 "$T/err"))"
    fi
}
vm_pid() { "$KVMBOX" info "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])'; }
# fw_wait NAME LOG [OPTION...] REGEX: wait_output for a VM booting through firmware, which is
# silent for long stretches: the VM's CPU time counts as progress too (a host busy with other
# work slows it down, never makes it look idle).
fw_wait() {
    local name=$1 log=$2 pid
    shift 2
    local re=${*: -1} opts=("${@:1:$#-1}")
    pid=$(vm_pid "$name") || return 1
    wait_output --pid "$pid" --cpu-quiet 900 --quiet 180 --cap 2400 "${opts[@]}" "$log" "$re"
}
last_count() { grep -ao '^COUNT [0-9]*' "$1" | tail -1 | cut -d' ' -f2; }

# --- a CD-ROM read pass after pass, saved mid-pass ------------------------------------------
mkdir -p "$T/cdroot"
head -c 600000 /dev/urandom >"$T/cdroot/data.bin"
xorriso -as mkisofs -quiet -R -o "$T/data.iso" "$T/cdroot" 2>/dev/null || { bad "cannot build the data CD"; exit 1; }
want=$(python3 - "$T/data.iso" <<'EOF'
import struct, sys
b = open(sys.argv[1], 'rb').read()
h = 0xcbf29ce484222325
for (w,) in struct.iter_unpack('<Q', b[:len(b) // 2048 * 2048]):
    h = ((h ^ w) * 0x100000001b3) & ((1 << 64) - 1)
print('%x' % h)
EOF
)
LOG=$T/run/cd.log
"$KVMBOX" run --daemonize --name cd --kernel "$K" --cdrom "$T/data.iso" --mem 64M --cmdline mode=cd >/dev/null ||
    bad "the CD guest did not start"
wait_output --count 2 "$LOG" '^CDPASS' || bad "the CD guest does not read its CD"
"$KVMBOX" save cd "$T/cd.state" >"$T/save.out" 2>&1
rc=$?
expect "save of a VM reading its CD exits 0 ($(head -c 200 "$T/save.out"))" '[ $rc = 0 ]'
wait_output "$LOG" 'ended: saved to' >/dev/null || bad "the log does not say the CD guest was saved"
n=$(grep -ac '^CDPASS' "$LOG")
"$KVMBOX" restore "$T/cd.state" >"$T/restore.out" 2>&1
rc=$?
expect "the CD guest is restored ($(head -c 200 "$T/restore.out"))" '[ $rc = 0 ]'
wait_output --count $((n + 3)) "$LOG" '^CDPASS' || bad "the restored CD guest stopped reading"
"$KVMBOX" kill cd >/dev/null 2>&1
poll_until 60 bash -c "[ ! -e '$T/run/cd.sock' ]"
first=$(grep -a '^CDPASS' "$LOG" | tr -d '\r' | sed -n "$((n + 1))p")
expect "the restored guest goes on at the next pass ($n, then '$first')" 'grep -q "^CDPASS $((n + 1)) " <<<"$first"'
passes=$(grep -a '^CDPASS' "$LOG" | tr -d '\r')
expect "every pass before and after the restore read the image right, locked, with its sense data ($(wc -l <<<"$passes") passes, sum $want)" \
    '[ -z "$(grep -v " sum=$want locked=1 sense=520\$" <<<"$passes")" ] && ! grep -aq "^FAIL" "$LOG"'

# --- firmware boot from a GRUB CD -------------------------------------------------------------
fw_grub_iso "$T/cd.iso" "$K" "period=100" || { bad "cannot build the GRUB CD"; exit 1; }
cp /usr/share/seabios/bios-256k.bin "$T/bios.bin"
NAME=fwcd
LOG=$T/run/$NAME.log
"$KVMBOX" run --daemonize --name $NAME --firmware "$T/bios.bin" --cdrom "$T/cd.iso" --boot cdrom \
    --mem 64M >/dev/null || { bad "the VM did not start"; exit 1; }

# save_restore WHAT: saves the VM to $T/WHAT.state and restores it; 0 when both worked.
save_restore() {
    local what=$1 rc
    "$KVMBOX" save $NAME "$T/$what.state" >"$T/save.out" 2>&1
    rc=$?
    expect "$what: save exits 0 ($(head -c 200 "$T/save.out"))" '[ $rc = 0 ]'
    [ $rc = 0 ] || return 1
    wait_output "$LOG" "ended: saved to $T/$what.state" >/dev/null || bad "$what: the log does not say the VM was saved"
    cp "$LOG" "$T/$what.before"
    "$KVMBOX" restore "$T/$what.state" >"$T/restore.out" 2>&1
    rc=$?
    expect "$what: restore exits 0 ($(head -c 200 "$T/restore.out"))" '[ $rc = 0 ]'
    [ $rc = 0 ]
}

# 0. at once: SeaBIOS's first steps (reading fw_cfg), wherever this host's speed put it
save_restore at-start &&
    expect "at-start: saved before the guest kernel ran" '! grep -aq "^SAVESTATE-READY" "$T/at-start.before"'
# 1. inside SeaBIOS
fw_wait $NAME "$LOG" 'SeaBIOS' || bad "SeaBIOS printed nothing"
save_restore in-seabios &&
    expect "in-seabios: saved before the guest kernel ran" '! grep -aq "^SAVESTATE-READY" "$T/in-seabios.before"'
# 2. inside GRUB, reading the kernel from the CD
fw_wait $NAME "$LOG" 'GRUB: loading the multiboot kernel' || bad "GRUB did not start after the restore in SeaBIOS"
save_restore in-grub &&
    expect "in-grub: saved before the kernel was loaded from the CD" '! grep -aq "^SAVESTATE-READY" "$T/in-grub.before"'
# 3. the guest kernel running
fw_wait $NAME "$LOG" --count 3 '^COUNT [0-9]+ ms=' || bad "the kernel GRUB loaded from the CD after the restore does not count"
expect "the kernel read from the CD after the restore in GRUB runs (multiboot, counting)" \
    'grep -aq "^SAVESTATE-READY mode=count" "$LOG" && ! grep -aq "^FAIL\|^LEAP" "$LOG"'
if save_restore in-guest; then
    n=$(last_count "$T/in-guest.before")
    before=$(grep -ac '^COUNT' "$T/in-guest.before")
    wait_output --count $((before + 3)) "$LOG" '^COUNT [0-9]+ ms=' || bad "the restored guest stopped counting"
    first=$(grep -a '^COUNT' "$LOG" | tr -d '\r' | sed -n "$((before + 1))p")
    expect "in-guest: the firmware-booted guest goes on at the next count ($n, then '$first')" \
        'grep -q "^COUNT $((n + 1)) ms=" <<<"$first"'
    expect "in-guest: no clock leap or step back" '! grep -aq "^LEAP\|^FAIL" "$LOG"'
fi
"$KVMBOX" kill $NAME >/dev/null 2>&1
# gone once its control socket is (its definition stays: info would still answer)
poll_until 60 bash -c "[ ! -e '$T/run/$NAME.sock' ]"

# A changed firmware file or CD image: refused, one line, status 2; put back, it restores.
cp "$T/bios.bin" "$T/bios.orig"
printf 'kvmbox' | dd of="$T/bios.bin" bs=1 seek=4096 conv=notrunc status=none
refused "a firmware file changed since the save is refused: status 2" 2 "firmware .* changed since" \
    "$KVMBOX" restore "$T/in-guest.state"
cp "$T/bios.orig" "$T/bios.bin"
m=$(python3 -c 'import os,sys; print(os.stat(sys.argv[1]).st_mtime_ns)' "$T/cd.iso")
touch "$T/cd.iso"
refused "a CD image changed since the save is refused: status 2" 2 "CD-ROM .* changed since" \
    "$KVMBOX" restore "$T/in-guest.state"
python3 -c 'import os,sys; m=int(sys.argv[2]); os.utime(sys.argv[1], ns=(m, m))' "$T/cd.iso" "$m"
expect "no VM was left behind by the refused restores" '! ls "$T"/run/*.sock >/dev/null 2>&1'
before=$(grep -ac '^COUNT' "$LOG")
"$KVMBOX" restore "$T/in-guest.state" >"$T/restore.out" 2>&1
rc=$?
expect "the same firmware (a copy of the file, same bytes) and CD: the state restores ($(head -c 200 "$T/restore.out"))" '[ $rc = 0 ]'
[ $rc = 0 ] && { wait_output --count $((before + 2)) "$LOG" '^COUNT [0-9]+ ms=' >/dev/null || bad "the guest restored again does not count"; }
"$KVMBOX" kill $NAME >/dev/null 2>&1

echo "$W: $fails failed"
[ $fails = 0 ]
