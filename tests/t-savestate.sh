#!/bin/bash
# kvmbox save / restore end to end (docs/savestate.md). Guest: build/guest-tests/savestate.elf.
#  - a counting guest saved and restored goes on at exactly the next count, with no leap of
#    its kvmclock beyond its own 100 ms step although the host kept it saved for 3 s;
#    restored --paused it stays paused until resumed;
#  - a virtio-blk guest writing and checking its disk with 32 requests in flight is saved
#    mid-round and restored: every round checks out and the image holds the last generation
#    in every sector; a disk changed after the save (touched, replaced by a copy with the same
#    mtime, written with its mtime set back) is refused;
#  - bad input: a missing, truncated, corrupt, foreign or other-version file, a name in use,
#    an existing save file: one line, status 2, nothing overwritten;
#  - a virtio-net guest (user-mode NAT) doing rounds of DHCP and ping is saved and restored
#    twice, under its own name (same MAC) and as a copy under another (a MAC of its own, which
#    the guest is told): every round goes through.
# Prints "INFO: ..." lines with restore timings (bench numbers come from bench/, not here).
set -u
cd "$(dirname "$0")/.."
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
K=$BUILD/guest-tests/savestate.elf
if [ ! -c /dev/kvm ]; then
    echo "SKIP: savestate: no /dev/kvm on this host"
    exit 77
fi
if [ ! -f "$K" ]; then
    echo "FAIL: savestate: $K is not built (make guest-tests)"
    exit 1
fi
KVMBOX=$(realpath "$KVMBOX")
T=$(mktemp -d /tmp/kvmbox-savestate.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
cleanup() {
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    [ "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "PASS: savestate: $*"; }
bad() { echo "FAIL: savestate: $*"; fails=$((fails + 1)); }
expect() { # expect DESCRIPTION CONDITION (a shell expression, evaluated)
    if eval "$2"; then ok "$1"; else bad "$1"; fi
}
. tests/lib/progress.sh
# refused DESC WANT_RC PATTERN CMD...: CMD fails with status WANT_RC and exactly one line on
# stderr that contains PATTERN.
refused() {
    local d=$1 want=$2 pat=$3 rc
    shift 3
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" = "$want" ] && [ "$(wc -l <"$T/err")" = 1 ] && grep -q -- "$pat" "$T/err"; then
        ok "$d"
    else
        bad "$d (status $rc, stderr: $(head -c 300 "$T/err"))"
    fi
}
last_count() { grep -o '^COUNT [0-9]*' "$1" | tail -1 | cut -d' ' -f2; }
# counts_follow LOG: the COUNT lines of LOG are 0, 1, 2... with none missing or repeated, once
# kvmbox's own "VM ... ended" lines are taken out and a line the save cut (kvmbox ends it with
# a newline before its own) is joined with its continuation after the restore: a save may
# fall inside the word COUNT, which a grep for '^COUNT' then misses.
counts_follow() {
    python3 - "$1" <<'PYEOF'
import re, sys
t = open(sys.argv[1], 'rb').read().decode('latin-1')
t = re.sub(r'(?<=[^\r\n])\nkvmbox: VM \S+ ended: [^\n]*\n', '', t)
t = re.sub(r'(?m)^kvmbox: VM \S+ ended: [^\n]*\n', '', t)
counts = [int(m) for m in re.findall(r'(?m)^COUNT (\d+) ms=', t)]
sys.exit(0 if counts and counts == list(range(len(counts))) else 1)
PYEOF
}
now_us() { echo "${EPOCHREALTIME/./}"; }

# --- a counting guest ----------------------------------------------------------------------
LOG=$T/run/c1.log
"$KVMBOX" run --daemonize --name c1 --kernel "$K" --mem 64M >/dev/null
wait_output --count 5 "$LOG" '^COUNT [0-9]+ ms=' || bad "the counting guest did not start counting"
"$KVMBOX" balloon c1 48M >/dev/null 2>&1 || bad "cannot set the balloon target"
"$KVMBOX" save c1 "$T/c1.state" >"$T/save.out" 2>&1
rc=$?
expect "save exits 0 and says where ($(cat "$T/save.out"))" '[ "$rc" = 0 ]'
expect "the saved VM has stopped ($(tr -d '\r' <"$T/save.out"))" '"$KVMBOX" info c1 | grep -q "shut off"'
# The daemon's last line comes after all its output: only then is the log complete.
if [ "$rc" != 0 ]; then
    echo "savestate: the first save failed; nothing else can be checked"
    exit 1
fi
wait_output "$LOG" 'ended: saved to' || bad "the log does not say the VM was saved"
n=$(last_count "$LOG")
before=$(grep -c '^COUNT' "$LOG")
sleep 3 # kept saved for a while: the guest's clock must not show it
t0=$(now_us)
out=$("$KVMBOX" restore "$T/c1.state" 2>&1)
rc=$?
expect "restore exits 0 and prints the name" '[ "$rc" = 0 ] && [ "$out" = c1 ]'
wait_output --count $((before + 1)) "$LOG" '^COUNT [0-9]+ ms=' || bad "no output after restore"
t1=$(now_us)
echo "INFO: savestate: restore command to the guest's next line: $(((t1 - t0) / 1000)) ms"
pid=$(pgrep -f -- "--name c1" | head -1)
[ -n "$pid" ] && echo "INFO: savestate: RSS after restore: $(awk '/VmRSS/ {print $2, $3}' "/proc/$pid/status")"
wait_output --count $((before + 5)) "$LOG" '^COUNT [0-9]+ ms=' || bad "the restored guest stopped counting"
first=$(grep '^COUNT' "$LOG" | tr -d '\r' | sed -n "$((before + 1))p")
expect "the restored guest goes on at the next count ($n, then '$first')" 'counts_follow "$LOG"'
ms_before=$(grep "^COUNT $n ms=" "$LOG" | tr -d '\r' | sed 's/.*ms=//')
ms_after=$(sed 's/.*ms=//' <<<"$first")
expect "kvmclock did not leap over the 3 s the VM was saved (${ms_before} ms -> ${ms_after} ms)" \
    '[ $((ms_after - ms_before)) -ge 0 ] && [ $((ms_after - ms_before)) -lt 2000 ]'
expect "the guest saw no clock leap or step back" "! grep -q '^LEAP' \"\$LOG\""
expect "the balloon keeps its target (48 MiB) across the restore" \
    '"$KVMBOX" info c1 --json | python3 -c "import json,sys; sys.exit(json.load(sys.stdin)[\"balloon\"][\"target\"] != 48 << 20)"'

# --- bad input ------------------------------------------------------------------------------
refused "restore under a name in use: status 2" 2 "already running" "$KVMBOX" restore "$T/c1.state"
echo keep >"$T/exists"
refused "save to an existing file: status 2" 2 "not overwritten" "$KVMBOX" save c1 "$T/exists"
expect "the existing file is unchanged" '[ "$(cat "$T/exists")" = keep ]'
refused "a missing file: status 2" 2 "No such file" "$KVMBOX" restore "$T/nothing"
head -c 20000 "$T/c1.state" >"$T/trunc"
refused "a truncated file: status 2, one line" 2 "truncated" "$KVMBOX" restore "$T/trunc" --name t1
cp "$T/c1.state" "$T/corrupt"
printf '\xff' | dd of="$T/corrupt" bs=1 seek=300 conv=notrunc status=none
refused "a corrupt section: status 2, one line" 2 "corrupt" "$KVMBOX" restore "$T/corrupt" --name t2
refused "a foreign file: status 2, one line" 2 "not a kvmbox saved-state file" \
    "$KVMBOX" restore "$K" --name t3
python3 - "$T/c1.state" "$T/v2" <<'EOF'
import sys, zlib, struct
b = bytearray(open(sys.argv[1], 'rb').read(4096))
b[8:12] = struct.pack('<I', 2)
b[60:64] = struct.pack('<I', zlib.crc32(bytes(b[:60])))
open(sys.argv[2], 'wb').write(b)
EOF
refused "another format version: status 2, one line" 2 "version 2" "$KVMBOX" restore "$T/v2" --name t4
# set_field FILE OUT SECTION FIELD OFFSET BYTES: OUT is FILE with BYTES (hex) written at OFFSET
# of FIELD of SECTION, the section's CRC fixed: a well-formed file with a hostile value.
set_field() {
    python3 - "$@" <<'PYEOF'
import struct, sys, zlib
src, out, sec, field, off, val = sys.argv[1:7]
b = bytearray(open(src, 'rb').read())
nsec = struct.unpack_from('<I', b, 40)[0]
p = 64
for _ in range(nsec):
    name = b[p:p + 16].rstrip(b'\0').decode()
    ln = struct.unpack_from('<I', b, p + 24)[0]
    q, end = p + 32, p + 32 + ln
    while q < end:
        nl = b[q]
        fn = b[q + 1:q + 1 + nl].decode()
        dl = struct.unpack_from('<I', b, q + 1 + nl)[0]
        if name == sec and fn == field:
            v = bytes.fromhex(val)
            d = q + 1 + nl + 4 + int(off)
            b[d:d + len(v)] = v
            struct.pack_into('<I', b, p + 28, zlib.crc32(bytes(b[p + 32:end])))
            open(out, 'wb').write(b)
            sys.exit(0)
        q += 1 + nl + 4 + dl
    p += 32 + ((ln + 7) & ~7)
sys.exit(f"no field {field} in {sec}")
PYEOF
}
# The balloon's queue 0: size (offset 24 of the saved queue) 0x4000, more than it has.
set_field "$T/c1.state" "$T/hostile1" virtio_balloon queues 24 0040 &&
    refused "a queue larger than the device's, checksums right: status 2" 2 "out of range" \
        "$KVMBOX" restore "$T/hostile1" --name h1
set_field "$T/c1.state" "$T/hostile2" virtio_balloon config_vector 0 3412 &&
    refused "an MSI-X vector the device has not, checksums right: status 2" 2 "vector" \
        "$KVMBOX" restore "$T/hostile2" --name h2
set_field "$T/c1.state" "$T/hostile4" vm cpus 0 07000000 &&
    refused "a vCPU count other than the definition's: status 2" 2 "vCPUs" \
        "$KVMBOX" restore "$T/hostile4" --name h4
# A CPU feature this host's KVM lacks, in the CPUID the guest was given (vCPU 0's "cpuid":
# kvm_cpuid_entry2 of 40 bytes: function, index, flags, eax, ebx, ecx, edx, padding): a bit
# clear in the saved leaf 7.0 EBX (or 1 ECX) is set, as a state saved on a bigger host would be.
if python3 - "$T/c1.state" >"$T/cpuid-at" <<'PYEOF'
import struct, sys
b = open(sys.argv[1], 'rb').read()
nsec, p = struct.unpack_from('<I', b, 40)[0], 64
for _ in range(nsec):
    name, inst = b[p:p + 16].rstrip(b'\0').decode(), struct.unpack_from('<I', b, p + 16)[0]
    ln = struct.unpack_from('<I', b, p + 24)[0]
    q, end = p + 32, p + 32 + ln
    while q < end:
        nl = b[q]
        fn = b[q + 1:q + 1 + nl].decode()
        dl = struct.unpack_from('<I', b, q + 1 + nl)[0]
        if name == 'vcpu' and inst == 0 and fn == 'cpuid':
            v = b[q + 1 + nl + 4:q + 1 + nl + 4 + dl]
            for want, reg in ((7, 4), (1, 5)):
                for e in range(dl // 40):
                    f, i = struct.unpack_from('<II', v, e * 40)
                    if f == want and i == 0:
                        word = struct.unpack_from('<I', v, e * 40 + reg * 4)[0]
                        for bit in range(30, -1, -1):
                            if not word >> bit & 1:
                                print(e * 40 + reg * 4, struct.pack('<I', word | 1 << bit).hex())
                                sys.exit(0)
            sys.exit(1)
        q += 1 + nl + 4 + dl
    p += 32 + ((ln + 7) & ~7)
sys.exit(1)
PYEOF
then
    read -r at hex <"$T/cpuid-at"
    set_field "$T/c1.state" "$T/hostile5" vcpu cpuid "$at" "$hex" &&
        refused "a CPU feature this host's KVM lacks in the saved CPUID: status 2" 2 "CPU features" \
            "$KVMBOX" restore "$T/hostile5" --name h5
else
    bad "the saved vCPU 0 has no CPUID table (or no clear feature bit in leaf 7.0 EBX or 1 ECX)"
fi
expect "no VM was left behind by the refused restores" '[ "$(ls "$T"/run/*.sock | wc -l)" = 1 ]'

# --- restore --paused ------------------------------------------------------------------------
"$KVMBOX" kill c1 >/dev/null 2>&1
poll_until 30 bash -c "! '$KVMBOX' info c1 >/dev/null 2>&1"
before=$(grep -c '^COUNT' "$LOG")
out=$("$KVMBOX" restore "$T/c1.state" --paused 2>&1)
expect "restore --paused: the VM is paused" '"$KVMBOX" info c1 | grep -qi paused'
"$KVMBOX" resume c1 >/dev/null
wait_output --count $((before + 2)) "$LOG" '^COUNT [0-9]+ ms=' || bad "no output after resume"
first=$(grep '^COUNT' "$LOG" | tr -d '\r' | sed -n "$((before + 1))p")
expect "resumed, it goes on at the next count again ('$first')" 'grep -q "^COUNT $((n + 1)) ms=" <<<"$first"'
"$KVMBOX" kill c1 >/dev/null 2>&1

# --- a restored VM that reboots starts on zeroed RAM, not the saved pages ----------------------------
LOG=$T/run/r1.log
"$KVMBOX" run --daemonize --name r1 --kernel "$K" --mem 64M --cmdline touch=1 >/dev/null
wait_output --count 2 "$LOG" '^COUNT [0-9]+ ms=' || bad "the reboot guest did not start counting"
"$KVMBOX" save r1 "$T/r1.state" >/dev/null 2>&1 && wait_output "$LOG" 'ended: saved to' >/dev/null 2>&1
"$KVMBOX" restore "$T/r1.state" >/dev/null 2>&1
wait_output --count 4 "$LOG" '^COUNT [0-9]+ ms=' || bad "the restored reboot guest does not count"
"$KVMBOX" reset r1 >/dev/null 2>&1
wait_output --count 2 "$LOG" '^SAVESTATE-READY' || bad "the restored VM did not boot again after a reset"
expect "after a reset the restored VM's RAM reads as zeroes ($(grep -a '^SAVESTATE-READY' "$LOG" | tr -d '\r' | tail -1))" \
    'grep -a "^SAVESTATE-READY" "$LOG" | tail -1 | grep -q "ram16=0"'
"$KVMBOX" kill r1 >/dev/null 2>&1

# --- a disk changed after the save ------------------------------------------------------------
# Each change is refused with one line. A disk cannot be put back as it was (any change of
# the file changes its change time), so each case saves its own VM with a scratch disk.
changed_disk() { # changed_disk WHAT PATTERN CHANGE: save a VM, run CHANGE on its disk $X, restore
    local what=$1 pat=$2 change=$3
    X=$T/scratch.raw
    rm -f "$X" "$T/d1.state" && truncate -s 1M "$X"
    LOG=$T/run/d1.log
    "$KVMBOX" run --daemonize --name d1 --kernel "$K" --mem 64M --disk "$X,format=raw" >/dev/null
    wait_output --count 2 "$LOG" '^COUNT [0-9]+ ms=' || bad "the scratch-disk guest did not start counting"
    "$KVMBOX" save d1 "$T/d1.state" >/dev/null 2>&1 && wait_output "$LOG" 'ended: saved to' >/dev/null 2>&1
    eval "$change"
    refused "a disk $what since the save is refused: status 2" 2 "$pat" "$KVMBOX" restore "$T/d1.state"
}
changed_disk "touched" "modification time" 'touch "$X"'
# the same bytes, size and mtime, but another file (cp -p; mv): a copy of another VM's disk
changed_disk "replaced by a copy with its mtime" "another file" 'cp -p "$X" "$X.new" && mv "$X.new" "$X"'
# written, its mtime set back (touch -r): the change time cannot be set back
changed_disk "written with its mtime set back" "change time" \
    'cp -p "$X" "$T/ref" && printf x | dd of="$X" bs=1 seek=4096 conv=notrunc status=none && touch -r "$T/ref" "$X"'
expect "no VM was left behind by the refused disk restores" '! "$KVMBOX" info d1 >/dev/null 2>&1'

# --- SMP: two application processors counting as fast as they can ---------------------------------
LOG=$T/run/m1.log
"$KVMBOX" run --daemonize --name m1 --kernel "$K" --mem 64M --cpus 3 --cmdline cpus=3 >/dev/null
wait_output --count 5 "$LOG" '^COUNT [0-9]+ ms=' || bad "the SMP guest did not start counting"
"$KVMBOX" save m1 "$T/m1.state" >/dev/null 2>&1
rc=$?
expect "save of a 3-vCPU guest with 2 busy vCPUs exits 0" '[ $rc = 0 ]'
wait_output "$LOG" 'ended: saved to' || bad "the log does not say the SMP VM was saved"
n=$(last_count "$LOG")
before=$(grep -c '^COUNT' "$LOG")
"$KVMBOX" restore "$T/m1.state" >/dev/null 2>&1
wait_output --count $((before + 5)) "$LOG" '^COUNT [0-9]+ ms=' || bad "the restored SMP guest stopped counting"
first=$(grep '^COUNT' "$LOG" | tr -d '\r' | sed -n "$((before + 1))p")
expect "the SMP guest goes on at the next count ($n, then '$first')" 'counts_follow "$LOG"'
expect "both application processors started and kept counting across the restore" \
    'grep -q "aps=2" "$LOG" && ! grep -q "^STALL\|^LEAP\|^FAIL" "$LOG"'
"$KVMBOX" kill m1 >/dev/null 2>&1

# --- virtio-net with user-mode networking across two restores ----------------------------------
# The net guest does rounds of a new DHCP lease and a ping to the gateway, each started by a
# byte the host sends to its console (step=1), so the saves fall between rounds whatever the
# host's speed. Saved after round 2 and restored under its own name it keeps its MAC; saved
# after round 4 and restored under another name (a copy), its device announces the MAC of
# that name, which the guest reads and takes for its next lease. Every round must go through
# and the guest must end with PASS. Each VM runs in a network namespace of its own (slirp's
# ping to the gateway goes to the host's loopback).
NK=$BUILD/guest-tests/net-user.elf
in_netns() { # in_netns CMD...: CMD in a new network namespace with only lo, up
    if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null; then
        unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
    else
        "$@"
    fi
}
mac_of() { "$KVMBOX" info "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["nics"][0]["mac"])'; }
rounds_in() { grep -a -c '^NETROUND [0-9]* ok' "$1"; }
go_on() { printf g | "$KVMBOX" console "$1" >/dev/null 2>&1; } # the guest's next round
# round NAME LOG K: lets NAME's guest do its round K (the one after those in LOG).
round() {
    go_on "$1"
    wait_output --quiet 120 --count "$3" "$2" '^NETROUND [0-9]+ ok' || bad "net: $1: round $3 did not go through"
}
save_net() { # save_net NAME FILE LOG
    "$KVMBOX" save "$1" "$2" >/dev/null 2>&1
    local rc=$?
    expect "net: save of $1 exits 0" '[ $rc = 0 ]'
    wait_output "$3" 'ended: saved to' >/dev/null 2>&1
}
if [ ! -f "$NK" ]; then
    bad "net: $NK is not built (make guest-tests)"
elif ! [ -x "$(dirname "$KVMBOX")/kvmbox-slirp" ] && ! command -v kvmbox-slirp >/dev/null; then
    echo "SKIP: savestate: virtio-net: kvmbox-slirp (user-mode networking) is not built"
else
    LOG=$T/run/n1.log
    in_netns "$KVMBOX" run --daemonize --name n1 --kernel "$NK" --mem 64M --net user \
        --cmdline "rounds=6 step=1 round_ms=0" >/dev/null 2>"$T/err" ||
        bad "net: the net guest did not start ($(head -c 200 "$T/err"))"
    wait_output --quiet 120 "$LOG" '^NETROUND 1 ok' || bad "net: the net guest's first round did not go through"
    round n1 "$LOG" 2
    mac1=$(mac_of n1)
    save_net n1 "$T/n1.state" "$LOG"
    in_netns "$KVMBOX" restore "$T/n1.state" >/dev/null 2>"$T/err"
    rc=$?
    expect "net: restored under its own name ($(head -c 200 "$T/err"))" '[ $rc = 0 ]'
    expect "net: under its own name it keeps its MAC ($mac1)" '[ "$(mac_of n1)" = "$mac1" ]'
    round n1 "$LOG" 3
    round n1 "$LOG" 4
    expect "net: the guest saw no MAC change under its own name" '! grep -a -q "^MAC now" "$LOG"'
    save_net n1 "$T/n1b.state" "$LOG"
    LOG2=$T/run/n2.log
    in_netns "$KVMBOX" restore "$T/n1b.state" --name n2 >/dev/null 2>"$T/err"
    rc=$?
    expect "net: restored as n2 ($(head -c 200 "$T/err"))" '[ $rc = 0 ]'
    mac2=$(mac_of n2)
    round n2 "$LOG2" 1
    go_on n2
    ends=$(grep -c "ended: " "$LOG2")
    "$PROGRESS" run --quiet 120 --cap 1800 --watch "$LOG2" -- "$KVMBOX" wait n2 >/dev/null 2>&1
    rc=$?
    # the daemon writes the last of NAME.log (and its "ended" line) after waiters hear
    wait_output --count $((ends + 1)) "$LOG2" "ended: " >/dev/null 2>&1
    expect "net: after the restores every round of DHCP and ping went through (rounds: $(rounds_in "$LOG") as n1, $(rounds_in "$LOG2") as n2; guest status $rc)" \
        '[ "$rc" = 1 ] && grep -a -q "^SUMMARY: pass=[0-9]* fail=0" "$LOG2" && [ "$(rounds_in "$LOG")" = 4 ] && [ "$(rounds_in "$LOG2")" = 2 ]'
    expect "net: the copy has a MAC of its own ($mac1 -> $mac2), and its guest was told (\"$(grep -a '^MAC now' "$LOG2" | tr -d '\r')\")" \
        '[ "$mac2" != "$mac1" ] && grep -a -q "^MAC now $mac2" "$LOG2"'
    expect "net: the copy went on from round 5" 'grep -a "^NETROUND" "$LOG2" | head -1 | grep -q "^NETROUND 5 ok"'
fi

# --- the embedding example: N copies of a saved VM ----------------------------------------------
if [ -x "$BUILD/examples/embed" ]; then
    out=$("$BUILD/examples/embed" --clones 3 "$K" period=50 2>&1)
    rc=$?
    expect "embed --clones 3: three copies count on, each with a MAC of its own ($(tr '\n' ';' <<<"$out" | head -c 300))" \
        '[ $rc = 0 ] && [ "$(grep -c "^copy-[0-2]: MAC .*next line: COUNT" <<<"$out")" = 3 ] &&
         [ "$(grep -o "MAC [0-9a-f:]*" <<<"$out" | sort -u | wc -l)" = 3 ]'
fi

# --- virtio-blk with requests in flight, raw and qcow2 -------------------------------------------
# blk_round_trip FORMAT: the disk guest saved mid-round and restored; the image checked after.
blk_round_trip() {
    local f=$1 name=b-$1 rc rounds
    LOG=$T/run/$name.log
    D=$T/disk.$f
    if [ "$f" = qcow2 ]; then qemu-img create -q -f qcow2 "$D" 2M; else truncate -s 2M "$D"; fi
    "$KVMBOX" run --daemonize --name "$name" --kernel "$K" --mem 64M --disk "$D,format=$f,serial=rw0" \
        --cmdline "mode=blk rounds=3" >/dev/null
    wait_output --quiet 120 "$LOG" '^ROUND 1 ok' || bad "$f: the disk guest did not finish its first round"
    # The guest keeps 32 requests in flight all the time: the save lands in the middle of them.
    "$KVMBOX" save "$name" "$T/$name.state" >/dev/null 2>&1
    rc=$?
    expect "$f: save of the disk guest exits 0" '[ $rc = 0 ]'
    wait_output "$LOG" 'ended: saved to' >/dev/null 2>&1
    rounds=$(grep -c '^ROUND' "$LOG")
    "$KVMBOX" restore "$T/$name.state" >/dev/null 2>"$T/err"
    rc=$?
    expect "$f: the disk guest is restored ($(head -c 200 "$T/err"))" '[ $rc = 0 ]'
    ends=$(grep -c "ended: " "$LOG")
    "$PROGRESS" run --quiet 180 --cap 1800 --watch "$LOG" -- "$KVMBOX" wait "$name" >/dev/null 2>&1
    rc=$?
    # the daemon writes the last of NAME.log (and its "ended" line) after waiters hear
    wait_output --count $((ends + 1)) "$LOG" "ended: " >/dev/null 2>&1
    expect "$f: after the restore every round checks out (guest exit status $rc, rounds before the save: $rounds)" \
        '[ "$rc" = 1 ] && grep -q "^SUMMARY: pass=1 fail=0" "$LOG"'
    expect "$f: the rounds went on after the restore" '[ "$(grep -c "^ROUND" "$LOG")" = 3 ]'
    if [ "$f" = qcow2 ]; then
        expect "$f: qemu-img check finds the image clean" 'qemu-img check -q "$D" >/dev/null 2>&1'
        qemu-img convert -f qcow2 -O raw "$D" "$T/flat.raw"
        D=$T/flat.raw
    fi
    python3 - "$D" <<'PYEOF' >"$T/check" 2>&1
import struct, sys
M, G, MASK = 0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93, (1 << 64) - 1
data = open(sys.argv[1], 'rb').read()
bad = 0
for s in range(len(data) // 512):
    v = (s * M + 3 * G) & MASK
    want = struct.pack('<Q', v) + bytes([3]) * 496 + struct.pack('<Q', v ^ MASK)
    if data[512 * s:512 * s + 512] != want:
        bad += 1
print(f"{len(data) // 512} sectors, {bad} wrong")
sys.exit(1 if bad or not data else 0)
PYEOF
    rc=$?
    expect "$f: every sector of the image holds the last generation ($(cat "$T/check"))" '[ $rc = 0 ]'
}
blk_round_trip raw
if command -v qemu-img >/dev/null; then
    blk_round_trip qcow2
else
    echo "SKIP: savestate: qcow2 disk: qemu-img is not installed"
fi

echo "savestate: $fails failed"
[ $fails = 0 ]
