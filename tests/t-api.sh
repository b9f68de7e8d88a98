#!/bin/bash
# The control plane end to end: named VMs, the API socket, virsh's everyday verbs,
# definitions and clones, and a hostile client. Guest: build/guest-tests/ctl.elf (ticks
# with its kvmclock time, echoes console lines, handles the ACPI power button).
set -u
cd "$(dirname "$0")/.."
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
K=$BUILD/guest-tests/ctl.elf
if [ ! -c /dev/kvm ]; then
    echo "SKIP: api: no /dev/kvm on this host"
    exit 77
fi
T=$(mktemp -d /tmp/kvmbox-api.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
cleanup() {
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "PASS: api: $*"; }
bad() { echo "FAIL: api: $*"; fails=$((fails + 1)); }
expect() { # expect DESCRIPTION COND...
    local d=$1
    shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
console_for() { # console_for NAME SECONDS [INPUT] -> output on stdout
    (if [ -n "${3:-}" ]; then sleep 0.3; printf '%s\n' "$3"; fi; sleep "$2") |
        timeout --foreground -k 5 $(($2 + 5)) "$KVMBOX" console "$1" 2>/dev/null | tr -d '\r'
}
wait_for() { # wait_for FILE PATTERN SECONDS
    for _ in $(seq 1 $(($3 * 10))); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

# --- start, list, info, name in use ---
out=$("$KVMBOX" run --daemonize --name a1 --kernel "$K" --mem 64M --cpus 2 2>&1)
expect "run --daemonize prints the name and returns" [ "$out" = a1 ]
expect "socket is 0600" [ "$(stat -c %a "$T/run/a1.sock")" = 600 ]
expect "list shows the VM running" grep -q "^a1 *running *2 *64 MiB" <<<"$("$KVMBOX" list)"
info=$("$KVMBOX" info a1 --json)
expect "info --json: name, state, vCPUs, memory, pid" python3 -c '
import json,sys; i=json.loads(sys.argv[1])
assert i["name"]=="a1" and i["state"]=="running" and i["cpus"]==2 and i["memory"]==64<<20 and i["pid"]>0' "$info"
out=$("$KVMBOX" run --daemonize --name a1 --kernel "$K" --mem 64M 2>&1); rc=$?
expect "a second VM with a name in use is refused ($out)" [ $rc = 2 ] && grep -q "already running" <<<"$out"
expect "the first VM is unaffected" grep -q running <<<"$("$KVMBOX" info a1)"

# --- console: replay of unseen output, input, detach/attach without loss ---
c1=$(console_for a1 2 hello)
expect "console replays output from boot (TICK 0) and echoes input" grep -q "^TICK 0 " <<<"$c1"
expect "console input reaches the guest" grep -q "^ECHO: hello" <<<"$c1"
sleep 1.5
c2=$(console_for a1 1)
last1=$(grep -o '^TICK [0-9]*' <<<"$c1" | tail -1 | cut -d' ' -f2)
first2=$(grep -o '^TICK [0-9]*' <<<"$c2" | head -1 | cut -d' ' -f2)
expect "nothing lost while detached (last tick $last1, next attach starts at $first2)" [ "$first2" = $((last1 + 1)) ]

# --- pause/resume: vCPUs stop; the guest clock does not leap ---
"$KVMBOX" pause a1
expect "info shows paused" grep -q "State: *paused" <<<"$("$KVMBOX" info a1)"
sleep 0.3
before=$(console_for a1 1 | grep -c '^TICK')
sleep 2
during=$(console_for a1 1 | grep -c '^TICK')
expect "no ticks while paused ($during)" [ "$during" = 0 ]
"$KVMBOX" resume a1
sleep 1
after=$(console_for a1 1)
expect "ticks again after resume" grep -q '^TICK' <<<"$after"
# Two consecutive ticks around the pause: kvmclock moved ~200 ms, not the 3+ s paused.
gap=$(grep '^TICK' "$T/run/a1.log" | tr -d '\r' | awk -F'kvmclock_ms=' '{ if (p != "") { d = $2 - p; if (d > m) m = d } p = $2 } END { print m }')
expect "largest kvmclock step between ticks is $gap ms (paused 3 s)" [ "${gap:-99999}" -lt 1000 ]

# --- reboot, reset ---
"$KVMBOX" reboot a1
for _ in $(seq 1 50); do grep -q '"reboots": 1' <<<"$("$KVMBOX" info a1 --json)" && break; sleep 0.1; done
expect "reboot: clean poweroff followed by a fresh boot" grep -q '"reboots": 1' <<<"$("$KVMBOX" info a1 --json)"
# The reset goes in once the rebooted guest is up (a reset during its boot would cut that boot
# short before it says CTL-READY, which is legitimate but not what this checks).
for _ in $(seq 1 50); do [ "$(grep -c CTL-READY "$T/run/a1.log")" -ge 2 ] && break; sleep 0.1; done
"$KVMBOX" reset a1
for _ in $(seq 1 50); do grep -q '"reboots": 2' <<<"$("$KVMBOX" info a1 --json)" && break; sleep 0.1; done
expect "reset reboots the guest" grep -q '"reboots": 2' <<<"$("$KVMBOX" info a1 --json)"
for _ in $(seq 1 50); do [ "$(grep -c CTL-READY "$T/run/a1.log")" -ge 3 ] && break; sleep 0.1; done
expect "the guest booted again after each (CTL-READY seen $(grep -c CTL-READY "$T/run/a1.log") times)" \
    [ "$(grep -c CTL-READY "$T/run/a1.log")" -ge 3 ]

# --- hostile clients ---
python3 - "$T/run/a1.sock" >"$T/hostile" 2>&1 <<'PY'
import socket, sys, time
p = sys.argv[1]
def req(data):
    s = socket.socket(socket.AF_UNIX); s.connect(p); s.sendall(data); s.settimeout(5)
    r = b''
    try:
        while not r.endswith(b'\n'):
            c = s.recv(65536)
            if not c: break
            r += c
    except Exception as e: r += str(e).encode()
    s.close(); return r.decode(errors='replace')
ok = True
for data, want in [(b'not json\n', 'malformed JSON'), (b'[1]\n', 'string member'),
                   (b'{"request":"frob"}\n', 'unknown request'), (b'{"request":5}\n', 'string member'),
                   (b'{"request":"info"} trailing\n', 'malformed JSON'), (b'x' * 70000, 'too long')]:
    r = req(data)
    if want not in r: print('unexpected reply to', data[:20], r); ok = False
many = []
for i in range(40):
    s = socket.socket(socket.AF_UNIX); s.connect(p); many.append(s)
time.sleep(0.3)
if b'too many clients' not in many[-1].recv(200): print('no refusal past 32 clients'); ok = False
for s in many: s.close()
s = socket.socket(socket.AF_UNIX); s.connect(p); s.sendall(b'{"requ'); s.close()  # gone mid-request
s = socket.socket(socket.AF_UNIX); s.connect(p); s.sendall(b'{"request":"in')      # stalls
if '"ok":true' not in req(b'{"request":"info"}\n'): print('VM stopped answering'); ok = False
s.close()
print('OK' if ok else 'BAD')
PY
expect "malformed, unknown, oversized, many, stalled and vanished clients get errors; the VM keeps answering" grep -q '^OK$' "$T/hostile"
grep -v '^OK$' "$T/hostile" | sed 's/^/    | /'
expect "the guest kept running through it" grep -q running <<<"$("$KVMBOX" info a1)"

# --- shutdown (power button honoured), wait returns the status ---
("$KVMBOX" wait a1; echo "wait-status $?") >"$T/wait" 2>&1 &
sleep 0.3
out=$("$KVMBOX" shutdown a1 --timeout 20); rc=$?
expect "shutdown: the guest powers off cleanly ($out)" [ $rc = 0 ] && grep -q "shut down" <<<"$out"
expect "the guest saw the power button" wait_for "$T/run/a1.log" "POWER-BUTTON" 5
wait
expect "wait returned the VM's exit status 0 ($(cat "$T/wait"))" grep -q "wait-status 0" "$T/wait"
expect "the socket is gone" [ ! -e "$T/run/a1.sock" ]

# --- a guest that ignores the button: timeout, then --force; kill ---
"$KVMBOX" run --daemonize --name a2 --kernel "$K" --mem 64M --cmdline pwrbtn=ignore >/dev/null
out=$("$KVMBOX" shutdown a2 --timeout 2 2>&1); rc=$?
expect "shutdown --timeout reports a guest that did not stop ($out)" [ $rc = 1 ] && grep -q "did not shut down" <<<"$out"
("$KVMBOX" wait a2; echo "wait-status $?") >"$T/wait2" 2>&1 &
sleep 0.3
out=$("$KVMBOX" shutdown a2 --timeout 1 --force 2>&1); rc=$?
wait
expect "shutdown --force kills it ($out)" [ $rc = 0 ] && grep -q killed <<<"$out"
expect "wait reports the kill as status 137" grep -q "wait-status 137" "$T/wait2"
out=$("$KVMBOX" info a2 2>&1); rc=$?
expect "a killed VM is gone: info shows it shut off, status 137 ($out)" grep -qz 'State: *shut off.*status 137' <<<"$out"

# --- stale socket of a VM that died ---
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$T/run/ghost.sock"
expect "a stale socket is not listed" bash -c "! '$KVMBOX' list | grep -q ghost"
expect "and is cleaned up" [ ! -e "$T/run/ghost.sock" ]
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$T/run/ghost.sock"
out=$("$KVMBOX" run --daemonize --name ghost --kernel "$K" --mem 64M 2>&1)
expect "a VM can take the name of a dead one" [ "$out" = ghost ]
"$KVMBOX" kill ghost >/dev/null

# --- definitions: define, list --all, start, dumpconfig, clone, undefine ---
cat >"$T/d1.json" <<JSON
{ "name": "d1", "kernel": "$PWD/$K", "mem": "64M", "cpus": 1, "cmdline": "pwrbtn=poweroff" }
JSON
expect "define" "$KVMBOX" define "$T/d1.json"
expect "list --all shows it shut off" grep -q "^d1 *shut off" <<<"$("$KVMBOX" list --all)"
out=$("$KVMBOX" start d1)
expect "start runs it in the background ($out)" grep -q running <<<"$("$KVMBOX" info d1)"
dc=$("$KVMBOX" dumpconfig d1)
expect "dumpconfig of the running VM has its settings and a UUID" python3 -c '
import json,sys; d=json.loads(sys.argv[1]); assert d["name"]=="d1" and d["mem"]=="64M" and len(d["uuid"])==36' "$dc"
out=$("$KVMBOX" clone d1 d2 2>&1); rc=$?
expect "clone of a running VM is refused ($out)" [ $rc = 1 ]
"$KVMBOX" shutdown d1 --timeout 20 >/dev/null
expect "clone" "$KVMBOX" clone d1 d2
d1=$("$KVMBOX" dumpconfig d1); d2=$("$KVMBOX" dumpconfig d2)
expect "the clone has a new name and UUID and the same machine" python3 -c '
import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2])
assert b["name"]=="d2" and b["uuid"]!=a["uuid"] and b["kernel"]==a["kernel"] and b["mem"]==a["mem"]' "$d1" "$d2"
# Clones with a disk and a NIC: a full copy and a linked overlay, each with its own MAC.
qemu-img create -q -f qcow2 "$T/src.qcow2" 8M
qemu-img create -q -f qcow2 "$T/ign.qcow2" 1M
cat >"$T/d3.json" <<JSON
{ "name": "d3", "kernel": "$PWD/$K", "mem": "64M", "cmdline": "pwrbtn=poweroff",
  "disk": ["$T/src.qcow2,serial=root"], "net": ["segment=apitest"] }
JSON
expect "define a VM with a disk and a NIC" "$KVMBOX" define "$T/d3.json"
expect "clone it (full copy)" "$KVMBOX" clone d3 d4
expect "clone it (linked)" "$KVMBOX" clone d3 d5 --linked
expect "the full clone's disk is a copy" [ -f "$T/d4-disk0.qcow2" ]
expect "the linked clone's disk is an overlay on the source" grep -q "backing file: $T/src.qcow2" \
    <<<"$(qemu-img info "$T/d5-disk0.qcow2")"
expect "the overlay has the source's size" grep -q "virtual size: 8 MiB" <<<"$(qemu-img info "$T/d5-disk0.qcow2")"
# The source is not started: a linked clone reads its image, which must not change under it
# (kvmbox, like QEMU, refuses a backing file that another process is writing).
"$KVMBOX" start d4 >/dev/null; "$KVMBOX" start d5 >/dev/null
i4=$("$KVMBOX" info d4 --json); i5=$("$KVMBOX" info d5 --json)
expect "the two clones run side by side with their own disks and MACs" python3 -c '
import json,sys
vms=[json.loads(a) for a in sys.argv[1:3]]
disks=[v["disks"][0]["path"] for v in vms]
macs=[v["nics"][0]["mac"] for v in vms]
assert len(set(disks))==2 and len(set(macs))==2, (disks, macs)' "$i4" "$i5"
out=$("$KVMBOX" start d3 2>&1); rc=$?
expect "the source cannot start while a linked clone reads its disk ($out)" [ $rc != 0 ] && grep -q "in use" <<<"$out"
expect "and the clones have UUIDs of their own" python3 -c '
import json,sys; u=[json.loads(a)["uuid"] for a in sys.argv[1:4]]; assert len(set(u))==3' \
    "$("$KVMBOX" dumpconfig d3)" "$("$KVMBOX" dumpconfig d4)" "$("$KVMBOX" dumpconfig d5)"
for v in d3 d4 d5; do "$KVMBOX" kill "$v" >/dev/null; "$KVMBOX" undefine "$v" >/dev/null; done
expect "the source image is still clean" qemu-img check -q "$T/src.qcow2"
echo '{ "name": "bad", "kernel": "x", "cpus": 0 }' >"$T/bad.json"
out=$("$KVMBOX" define "$T/bad.json" 2>&1); rc=$?
expect "define refuses an invalid definition ($out)" [ $rc = 1 ] && grep -q cpus <<<"$out"
expect "undefine" "$KVMBOX" undefine d2
expect "undefined VMs are gone from list --all" bash -c "! '$KVMBOX' list --all | grep -q '^d2 '"

# --- only the owner may connect ---
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && [ -x /usr/bin/python3 ]; then
    "$KVMBOX" run --daemonize --name a3 --kernel "$K" --mem 64M >/dev/null
    chmod 755 "$T" "$T/run"
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c '
import socket,sys
s=socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1]); print("connected")
except OSError as e: print("refused", e.errno)' "$T/run/a3.sock" 2>&1)
    expect "another user cannot connect ($out)" grep -q refused <<<"$out"
    "$KVMBOX" kill a3 >/dev/null
fi
[ $fails -eq 0 ]
