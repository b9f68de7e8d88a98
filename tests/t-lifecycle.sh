#!/bin/bash
# A VM's life seen from the management verbs: what it leaves behind, what grows, what is
# remembered. Each check failed before its fix:
#   1. a daemon's NAME.log is bounded: with KVMBOX_LOG_MAX=1024 and more guest output than
#      that, NAME.log and NAME.log.1 each stay within the limit, hold whole lines and the
#      newest output, and NAME.log ends with the VM's exit ("kvmbox: VM NAME ended: ...");
#   2. `wait` and `info` on a VM that already ended give its exit status (kept in
#      NAME.status), also right after `kill`; starting the name again forgets it;
#   3. `start` of a VM that runs (with a disk) says "already running", not a lock conflict;
#   4. `kvmbox console` ends when its input does (</dev/null, a pipe), after the guest got
#      what was sent;
#   5. `hostfwd` with host port 0: info shows the port the kernel chose, and it listens;
#   6. a VM started with --api-sock elsewhere is in `list` and answers `info` by name;
#   7. a segment member socket left by a VM killed with SIGKILL is removed when the next VM
#      joins, and a VM that sends to it is not stopped by its sandbox (the virtio-net thread
#      used to call kill() and unlink(), which its filter forbids: status 4).
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
GT=$BUILD/guest-tests
K=$GT/ctl.elf
if [ ! -c /dev/kvm ]; then
    echo "SKIP: lifecycle: no /dev/kvm on this host"
    exit 77
fi
[ -f "$K" ] && [ -f "$GT/debug-exit.elf" ] && [ -f "$GT/net-segment.elf" ] ||
    { echo "FAIL: lifecycle: guest kernels are not built"; exit 1; }
T=$(mktemp -d /tmp/kvmbox-life.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
cleanup() {
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "PASS: lifecycle: $*"; }
bad() { echo "FAIL: lifecycle: $*"; fails=$((fails + 1)); }
expect() { # expect DESCRIPTION 'SHELL CONDITION' (evaluated here: may use && and $vars)
    if eval "$2"; then ok "$1"; else bad "$1"; fi
}
wait_for() { # wait_for FILE PATTERN SECONDS
    for _ in $(seq 1 $(($3 * 10))); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
jfield() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1" 2>/dev/null; }

# --- 1. the daemon's log is bounded ---
KVMBOX_LOG_MAX=1024 "$KVMBOX" run --daemonize --name lg --kernel "$K" --mem 64M >/dev/null
wait_for "$T/run/lg.log" CTL-READY 30
# About 3.6 KB of echoed lines: over three times the limit. The console ends when its input
# has reached the guest.
python3 -c 'import sys; sys.stdout.write("".join("L%03d %s\n" % (i, "x" * 24) for i in range(100)))' |
    timeout -k 5 120 "$KVMBOX" console lg >/dev/null 2>&1
wait_for "$T/run/lg.log" "ECHO: L099" 30 || wait_for "$T/run/lg.log.1" "ECHO: L099" 1
"$KVMBOX" kill lg >/dev/null
wait_for "$T/run/lg.log" "kvmbox: VM lg ended" 10 # written once the VM process has drained its output
s0=$(stat -c %s "$T/run/lg.log" 2>/dev/null) s1=$(stat -c %s "$T/run/lg.log.1" 2>/dev/null)
expect "NAME.log ($s0 bytes) and NAME.log.1 (${s1:-none}) stay within KVMBOX_LOG_MAX=1024" \
    '[ "${s0:-99999}" -le 1024 ] && [ "${s1:-0}" -gt 0 ] && [ "${s1:-99999}" -le 1024 ]'
expect "the newest output is kept and the oldest rotated away" \
    'cat "$T/run/lg.log.1" "$T/run/lg.log" | grep -q "ECHO: L099" && ! cat "$T/run/lg.log.1" "$T/run/lg.log" | grep -q "ECHO: L000"'
expect "rotation happens at line ends (NAME.log.1 ends with one)" '[ "$(tail -c 1 "$T/run/lg.log.1" | od -An -c | tr -d " ")" = "\n" ]'
last=$(tail -1 "$T/run/lg.log")
expect "the log's last line records the end ($last)" '[[ $last == "kvmbox: VM lg ended: killed through the API, status 137" ]]'

# --- 2. wait and info after the VM ended ---
"$KVMBOX" run --daemonize --name de --kernel "$GT/debug-exit.elf" --mem 64M >/dev/null
for _ in $(seq 100); do [ -e "$T/run/de.sock" ] || break; sleep 0.1; done
"$KVMBOX" wait de; rc=$?
expect "wait on a VM that already ended gives its status (43)" '[ $rc = 43 ]'
out=$("$KVMBOX" info de 2>&1); rc=$?
expect "info on it says shut off and the status ($(tr '\n' '|' <<<"$out"))" '[ $rc = 0 ] && grep -q "State: *shut off" <<<"$out" && grep -q "status 43" <<<"$out"'
expect "info --json has the status" '[ "$("$KVMBOX" info de --json | jfield status)" = 43 ]'
"$KVMBOX" run --daemonize --name de --kernel "$K" --mem 64M >/dev/null
expect "starting the name again forgets the last run" '[ "$("$KVMBOX" info de --json | jfield state)" = running ]'
"$KVMBOX" kill de >/dev/null
"$KVMBOX" wait de; rc=$?
expect "kill, then wait: 137" '[ $rc = 137 ]'
expect "list does not show the ended VM as running" '! "$KVMBOX" list | grep -q "^de "'

# --- 3. start of a running VM with a disk ---
truncate -s 1M "$T/d.img"
printf '{ "name": "dd", "kernel": "%s", "mem": "64M", "disk": ["%s,format=raw"] }\n' "$PWD/$K" "$T/d.img" >"$T/dd.json"
"$KVMBOX" define "$T/dd.json" >/dev/null
"$KVMBOX" start dd >/dev/null
out=$("$KVMBOX" start dd 2>&1); rc=$?
expect "start of a running VM says so ($out)" '[ $rc != 0 ] && grep -q "already running" <<<"$out" && ! grep -q -i "lock\|in use" <<<"$out"'
expect "and the VM runs on" '[ "$("$KVMBOX" info dd --json | jfield state)" = running ]'
"$KVMBOX" kill dd >/dev/null

# --- 4. console ends with its input ---
"$KVMBOX" run --daemonize --name co --kernel "$K" --mem 64M >/dev/null
wait_for "$T/run/co.log" CTL-READY 30
t0=$(date +%s%N)
timeout -k 5 20 "$KVMBOX" console co </dev/null >/dev/null 2>&1; rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
expect "console </dev/null ends by itself with status 0 (status $rc after $ms ms)" '[ $rc = 0 ] && [ $ms -lt 12000 ]'
printf 'hello-eof\n' | timeout -k 5 20 "$KVMBOX" console co >/dev/null 2>&1; rc=$?
expect "console with piped input ends when the pipe does (status $rc)" '[ $rc = 0 ]'
expect "and the guest got the input" 'wait_for "$T/run/co.log" "ECHO: hello-eof" 10'
"$KVMBOX" kill co >/dev/null

# --- 5. hostfwd with port 0 ---
"$KVMBOX" run --daemonize --name hf --kernel "$K" --mem 64M --net user,hostfwd=tcp::0-:22 >/dev/null
be=$("$KVMBOX" info hf --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["nics"][0]["backend"])')
port=$(sed -n 's/.*hostfwd tcp::\([0-9]*\)-:22.*/\1/p' <<<"$be")
expect "info shows the port hostfwd port 0 bound ($be)" '[ -n "$port" ] && [ "$port" != 0 ]'
expect "and it listens on 127.0.0.1:${port:-?}" 'python3 -c "import socket,sys; socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), 5)" "${port:-0}"'
"$KVMBOX" kill hf >/dev/null

# --- 6. --api-sock elsewhere is visible by name ---
mkdir -m 700 "$T/else"
"$KVMBOX" run --daemonize --name as1 --api-sock "$T/else/as1.sock" --kernel "$K" --mem 64M >/dev/null
expect "list shows a VM whose socket is elsewhere" '"$KVMBOX" list | grep -q "^as1 *running"'
expect "info reaches it by name" '[ "$("$KVMBOX" info as1 --json | jfield name)" = as1 ]'
"$KVMBOX" kill as1 >/dev/null
for _ in $(seq 50); do [ -e "$T/else/as1.sock" ] || [ -L "$T/run/as1.sock" ] || break; sleep 0.1; done
expect "after it ends neither its socket nor the name's link is left" '[ ! -e "$T/else/as1.sock" ] && [ ! -L "$T/run/as1.sock" ]'
out=$("$KVMBOX" run --daemonize --name as2 --api-sock "as2.sock" --kernel "$K" --mem 64M 2>&1)
expect "a relative --api-sock works too ($out)" '"$KVMBOX" info as2 >/dev/null 2>&1'
"$KVMBOX" kill as2 >/dev/null
rm -f as2.sock

# --- 7. stale segment members ---
SEG=seg$$
"$KVMBOX" run --daemonize --name sk --kernel "$K" --mem 64M --net "segment=$SEG" >/dev/null
pid=$("$KVMBOX" info sk --json | jfield pid)
kill -9 "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
stale=$(ls "$T/run/segments/$SEG" 2>/dev/null)
expect "a VM killed with SIGKILL leaves its member socket (${stale:-none})" '[ -n "$stale" ]'
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])' \
    "$T/run/segments/$SEG/1.0.sock" # named after a live pid: only asking the socket tells it is stale
out=$( (sleep 3; printf q) | timeout -k 5 60 "$KVMBOX" run --kernel "$GT/net-segment.elf" --mem 64M \
    --cmdline "role=quiet ip=10.0.4.3 peer=10.0.4.1 listen_secs=30" --net "segment=$SEG" 2>&1); rc=$?
expect "a VM that floods ARP to the dead members runs on (status $rc: $(grep -E 'quiet:|seccomp' <<<"$out" | head -2 | tr -d '\r' | tr '\n' '|'))" \
    '[ $rc = 1 ] && grep -q "0 from other MACs" <<<"$out"'
expect "the dead members were removed when it joined, and its own at its end" '[ ! -d "$T/run/segments/$SEG" ] || [ -z "$(ls "$T/run/segments/$SEG")" ]'
exit $((fails > 0))
