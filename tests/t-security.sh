#!/bin/bash
# Local attackers: another user on the host, or something planted where kvmbox creates its
# files, must get neither the VM nor the user's files. Each check failed before its fix:
#   1. another user made the runtime directory first (/tmp/kvmbox-UID, used when
#      XDG_RUNTIME_DIR is unset: su, sudo -u, cron) and planted NAME.log -> a file of the
#      victim's and a listening NAME.sock: kvmbox refuses the directory, so guest output is
#      not appended to that file and console keystrokes do not reach the planted socket;
#      a directory kvmbox makes itself is 0700 and the victim's (own user, own /tmp and
#      /dev/kvm node in a private mount namespace; the victim is a uid of no one's);
#   2. a control socket served by another user (through a symlink in the runtime directory):
#      clients refuse to talk to it;
#   3. every verb refuses a VM name that is not a plain name (`info ../x/victim` removed
#      victim.sock outside the runtime directory; `start ../d` read any d.json; `clone
#      ../defs/a b` skipped the running check);
#   4. define does not follow a symlink planted at its temporary file; clone --linked does
#      not truncate a file at its new disk's name; --api-sock PATH removes nothing but a
#      stale socket;
#   5. stalled API clients (half a request each, in every slot) do not lock management out:
#      `kvmbox info` gets through, stallers are dropped after the request timeout, console
#      and wait clients are not, and console/wait clients cannot take the last slots;
#   6. a daemonized VM holds none of its caller's file descriptors;
#   7. SIGTERM and SIGINT end `kvmbox run` while its set-up blocks (a FIFO as the kernel:
#      open() waits for a writer), with status 128+n and no socket left; for --daemonize the
#      foreground command passes the signal on.
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
K=$BUILD/guest-tests/ctl.elf
DE=$BUILD/guest-tests/debug-exit.elf
if [ ! -c /dev/kvm ]; then
    echo "SKIP: security: no /dev/kvm on this host"
    exit 77
fi
[ -f "$K" ] && [ -f "$DE" ] || { echo "FAIL: security: guest kernels are not built"; exit 1; }
T=$(mktemp -d /tmp/kvmbox-sec.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
bgpids=()
cleanup() {
    for p in "${bgpids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "PASS: security: $*"; }
bad() { echo "FAIL: security: $*"; fails=$((fails + 1)); }
expect() { # expect DESCRIPTION 'SHELL CONDITION' (evaluated here, so it may use && and $vars)
    if eval "$2"; then ok "$1"; else bad "$1"; fi
}
pid_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' <<<"$("$KVMBOX" info "$1" --json 2>/dev/null)" 2>/dev/null; }
ROOT=0
PY=/usr/bin/python3 # not a shim in root's home: other users run it too
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && command -v unshare >/dev/null && [ -x $PY ]; then
    ROOT=1
else
    echo "SKIP: security: the checks with another user (1, 2) need root, setpriv, unshare and $PY"
fi
NOBODY=65534

# --- 1. a runtime directory another user made first ---
if [ $ROOT = 1 ]; then
    V=$((42000 + $$ % 1000)) # the victim: a uid of no one's
    cat >"$T/ns.sh" <<'NS'
# Runs in a private mount namespace: its own /tmp and a /dev/kvm node the victim may open.
set -u
KVMBOX=$1 K=$2 V=$3 NOBODY=$4 PY=$5
ok() { echo "PASS: security: $*"; }
bad() { echo "FAIL: security: $*"; }
maj=$(stat -c %t /dev/kvm) min=$(stat -c %T /dev/kvm)
mount -t tmpfs -o mode=1777 kvmbox-sec /tmp || { echo "SKIP: security: cannot mount a private /tmp"; exit 0; }
mkdir -m 755 /tmp/.dev && mknod -m 600 /tmp/.dev/kvm c $((0x$maj)) $((0x$min)) && chown "$V" /tmp/.dev/kvm &&
    mount --bind /tmp/.dev/kvm /dev/kvm || { echo "SKIP: security: cannot give the victim a /dev/kvm"; exit 0; }
as_victim() { env -i PATH=/usr/bin:/bin HOME=/tmp/vhome setpriv --reuid="$V" --regid="$V" --clear-groups timeout -k 3 30 "$@"; }
as_nobody() { setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$@"; }
mkdir -m 700 /tmp/vhome && echo "the victim's notes" >/tmp/vhome/notes && chown -R "$V:$V" /tmp/vhome
D=/tmp/kvmbox-$V
# The attacker: the directory, a symlink where v1.log goes, a listener where v2.sock goes.
as_nobody mkdir -m 777 "$D" /tmp/att
as_nobody ln -s /tmp/vhome/notes "$D/v1.log"
setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups "$PY" -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(8)
open(sys.argv[3], "w").close()
with open(sys.argv[2], "ab", buffering=0) as got:
    while True:
        c, _ = s.accept(); c.settimeout(3)
        try:
            while True:
                d = c.recv(4096)
                if not d: break
                got.write(d)
        except OSError: pass
' "$D/v2.sock" /tmp/att/got /tmp/att/ready &
lpid=$!
for _ in $(seq 50); do [ -e /tmp/att/ready ] && break; sleep 0.1; done
out=$(as_victim "$KVMBOX" run --daemonize --name v1 --kernel "$K" --mem 64M 2>&1); rc=$?
if [ $rc = 2 ] && grep -q "$D" <<<"$out" && grep -q "uid $NOBODY" <<<"$out"; then
    ok "a runtime directory another user made is refused ($out)"
else
    bad "run in another user's runtime directory: status $rc (want 2): $out"
    as_victim "$KVMBOX" kill v1 >/dev/null 2>&1
fi
sleep 0.5
if [ "$(cat /tmp/vhome/notes)" = "the victim's notes" ]; then
    ok "guest output did not go through the planted NAME.log symlink into the victim's file"
else
    bad "the victim's file was written through the planted symlink: $(head -c 200 /tmp/vhome/notes | tr -d '\r' | tr '\n' '|')"
fi
out=$(printf 'my-password\n' | as_victim "$KVMBOX" console v2 2>&1); rc=$?
sleep 0.5
if [ $rc != 0 ] && [ ! -s /tmp/att/got ]; then
    ok "console refuses it too: the planted socket got nothing (status $rc: $out)"
else
    bad "console in another user's runtime directory: status $rc; the attacker got: $(head -c 200 /tmp/att/got 2>/dev/null)"
fi
out=$(as_victim "$KVMBOX" list 2>&1); rc=$?
[ $rc = 1 ] && grep -q "$D" <<<"$out" && ok "list says why it cannot use the directory ($out)" ||
    bad "list in another user's runtime directory: status $rc: $out"
kill "$lpid" 2>/dev/null
wait "$lpid" 2>/dev/null
rm -rf "$D"
# A symlink to a directory of the victim's is refused as well (lstat, not stat).
mkdir -m 700 /tmp/vhome/rt && chown "$V:$V" /tmp/vhome/rt
as_nobody ln -s /tmp/vhome/rt "$D"
out=$(as_victim "$KVMBOX" list 2>&1); rc=$?
[ $rc = 1 ] && grep -q "symbolic link" <<<"$out" && ok "a symlink in its place is refused ($out)" ||
    bad "a symlinked runtime directory: status $rc: $out"
rm -f "$D"
# Nobody got there first: kvmbox makes it 0700, the victim's, and runs.
out=$(as_victim "$KVMBOX" run --daemonize --name v3 --kernel "$K" --mem 64M 2>&1); rc=$?
perm=$(stat -c '%a %u' "$D" 2>/dev/null)
if [ $rc = 0 ] && [ "$perm" = "700 $V" ] && [ "$(stat -c %u "$D/v3.log" 2>/dev/null)" = "$V" ]; then
    ok "a fresh runtime directory is 0700 and the victim's ($perm) and the VM runs"
else
    bad "fresh runtime directory: run status $rc ($out), directory '$perm'"
fi
as_victim "$KVMBOX" kill v3 >/dev/null 2>&1
NS
    chmod 755 "$T"
    unshare -m --propagation private bash "$T/ns.sh" "$(realpath "$KVMBOX")" "$(realpath "$K")" "$V" "$NOBODY" "$PY" >"$T/ns.out" 2>&1
    grep -E '^(PASS|FAIL|SKIP):' "$T/ns.out"
    fails=$((fails + $(grep -c '^FAIL:' "$T/ns.out")))
    grep -q -E '^(PASS|FAIL|SKIP):' "$T/ns.out" || bad "the namespace part printed no result: $(tail -5 "$T/ns.out")"
    chmod 700 "$T"
fi

# A runtime directory of one's own that others may only read is made private; one they may
# write to is refused (they could have planted anything).
mkdir -m 755 "$T/rt2"
KVMBOX_RUNTIME_DIR=$T/rt2 "$KVMBOX" list >/dev/null 2>&1; rc=$?
expect "a runtime directory of one's own with mode 0755 is made 0700 (status $rc)" '[ $rc = 0 ] && [ "$(stat -c %a "$T/rt2")" = 700 ]'
chmod 1777 "$T/rt2"
out=$(KVMBOX_RUNTIME_DIR=$T/rt2 "$KVMBOX" list 2>&1); rc=$?
expect "one writable by others is refused ($out)" '[ $rc = 1 ] && grep -q "writable by other users" <<<"$out"'

# --- 2. a control socket served by another user ---
if [ $ROOT = 1 ]; then
    mkdir -p "$T/run" "$T/pub" && chmod 700 "$T/run" && chmod 711 "$T" && chown "$NOBODY" "$T/pub"
    setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$PY" -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(8)
with open(sys.argv[2], "ab", buffering=0) as got:
    while True:
        c, _ = s.accept(); c.settimeout(2)
        try:
            d = c.recv(4096)
            if d: got.write(d)
            c.sendall(b"{\"ok\":true,\"info\":{\"name\":\"evil\",\"state\":\"running\"}}\n")
        except OSError: pass
' "$T/pub/evil.sock" "$T/pub/got" &
    bgpids+=($!)
    for _ in $(seq 50); do [ -S "$T/pub/evil.sock" ] && break; sleep 0.1; done
    ln -s "$T/pub/evil.sock" "$T/run/evil.sock"
    out=$(timeout -k 3 40 "$KVMBOX" info evil 2>&1); rc=$?
    sleep 0.3
    if [ $rc = 1 ] && grep -q "uid $NOBODY" <<<"$out" && [ ! -s "$T/pub/got" ]; then
        ok "a socket served by another user is refused before anything is sent ($out)"
    else
        bad "socket served by uid $NOBODY: status $rc ($out); it got: $(cat "$T/pub/got" 2>/dev/null)"
    fi
    rm -f "$T/run/evil.sock"
    chmod 700 "$T"
fi

# --- 3. names are checked wherever a path is made from one ---
mkdir -p "$T/x" "$T/defs2"
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$T/x/victim.sock"
out=$("$KVMBOX" info ../x/victim 2>&1); rc=$?
expect "info ../x/victim is refused as a name, status 2 ($out)" '[ $rc = 2 ] && grep -q "invalid VM name" <<<"$out"'
expect "and victim.sock outside the runtime directory is still there" '[ -S "$T/x/victim.sock" ]'
printf '{ "name": "d", "kernel": "%s", "mem": "64M" }\n' "$PWD/$DE" >"$T/defs2/d.json"
out=$("$KVMBOX" start ../defs2/d 2>&1); rc=$?
expect "start ../defs2/d does not read a definition outside the config directory ($out)" ' [ $rc = 2 ] && ! [ -e "$T/run/d.sock" ] && grep -q "invalid VM name" <<<"$out"'
printf '{ "name": "a", "kernel": "%s", "mem": "64M" }\n' "$PWD/$K" >"$T/a.json"
"$KVMBOX" define "$T/a.json" >/dev/null
"$KVMBOX" start a >/dev/null
out=$("$KVMBOX" clone ../defs/a b 2>&1); rc=$?
expect "clone ../defs/a of a running VM is refused ($out)" '[ $rc = 2 ] && [ ! -e "$T/defs/b.json" ]'
"$KVMBOX" kill a >/dev/null 2>&1
badnames=0
for cmd in "info ../a" "pause a/b" "resume .a" "reboot ../a" "reset ../a" "kill ../a" "wait ../a" \
    "shutdown ../a" "console ../a" "start ../a" "undefine ../defs/a" "dumpconfig ../defs/a" \
    "balloon ../a 128M" "link ../a 0 up" "clone a ../a" "clone ../a c" "snapshot ../a list" \
    "snapshot a/b create s" "snapshot ../defs/a revert s"; do
    out=$(timeout -k 3 10 "$KVMBOX" $cmd </dev/null 2>&1); rc=$?
    if [ $rc != 2 ] || ! grep -q "invalid VM name" <<<"$out"; then
        bad "kvmbox $cmd: status $rc (want 2 and 'invalid VM name'): $out"
        badnames=$((badnames + 1))
    fi
done
expect "every verb refuses a name with '/' or a leading '.' with status 2" '[ $badnames = 0 ]'
expect "the definition undefine ../defs/a named is still there" '[ -f "$T/defs/a.json" ]'

# --- 4. define and --api-sock remove or write only what is theirs ---
echo "precious" >"$T/precious"
ln -s "$T/precious" "$T/defs/d9.json.tmp"
printf '{ "name": "d9", "kernel": "%s", "mem": "64M" }\n' "$PWD/$DE" >"$T/d9.json"
out=$("$KVMBOX" define "$T/d9.json" 2>&1); rc=$?
expect "define with a symlink planted at d9.json.tmp succeeds ($out)" '[ $rc = 0 ]'
expect "and does not write through it" '[ "$(cat "$T/precious")" = precious ]'
expect "the definition is a regular file of its own" '[ -f "$T/defs/d9.json" ] && [ ! -L "$T/defs/d9.json" ]'
echo "precious too" >"$T/precious2"
out=$("$KVMBOX" run --kernel "$DE" --api-sock "$T/precious2" --timeout 10 </dev/null 2>&1 >/dev/null); rc=$?
expect "--api-sock naming a regular file is refused, status 2 ($out)" '[ $rc = 2 ] && grep -q "not a socket" <<<"$out"'
expect "and the file is untouched" '[ "$(cat "$T/precious2")" = "precious too" ]'
# clone --linked made its overlay with O_TRUNC over whatever had the new disk's name.
truncate -s 1M "$T/src.img"
printf '{ "name": "c1", "kernel": "%s", "mem": "64M", "disk": ["%s,format=raw"] }\n' "$PWD/$DE" "$T/src.img" >"$T/c1.json"
"$KVMBOX" define "$T/c1.json" >/dev/null
echo "an older disk" >"$T/c2-disk0.qcow2"
out=$("$KVMBOX" clone c1 c2 --linked 2>&1); rc=$?
expect "clone --linked refuses to overwrite a file at the new disk's name ($out)" '[ $rc = 1 ] && grep -q "already exists" <<<"$out"'
expect "and leaves it as it was" '[ "$(cat "$T/c2-disk0.qcow2")" = "an older disk" ] && [ ! -e "$T/defs/c2.json" ]'
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$T/stale.sock"
"$KVMBOX" run --kernel "$DE" --api-sock "$T/stale.sock" --timeout 10 </dev/null >/dev/null 2>"$T/err"; rc=$?
expect "--api-sock naming a stale socket takes it over (status $rc: $(head -1 "$T/err"))" '[ $rc = 43 ]'
expect "and removes it at the end" '[ ! -e "$T/stale.sock" ]'

# --- 5. stalled clients do not lock management out ---
"$KVMBOX" run --daemonize --name st --kernel "$K" --mem 64M >/dev/null
python3 - "$T/run/st.sock" "$KVMBOX" >"$T/stall" 2>&1 <<'PY'
import socket, subprocess, sys, time
p, kvmbox = sys.argv[1], sys.argv[2]
def conn(data):
    s = socket.socket(socket.AF_UNIX); s.connect(p)
    if data: s.sendall(data)
    return s
t0 = time.monotonic()
con = conn(b'{"request":"console"}\n')
wait = conn(b'{"request":"wait"}\n')
time.sleep(0.3)
stall = [conn(b'{"requ') for _ in range(30)]        # every other slot: half a request each
time.sleep(3.5)                                      # idle long enough to give way
r = subprocess.run([kvmbox, "info", "st"], capture_output=True, text=True, timeout=30)
print("info-status", r.returncode, r.stderr.strip())
# After the request timeout (10 s) the stallers are gone, the console and wait clients not.
con.settimeout(1); last_data = 0.0
deadline = t0 + 14
while time.monotonic() < deadline:
    try:
        d = con.recv(65536)
        if not d: break
        last_data = time.monotonic() - t0
    except socket.timeout: pass
print("console-last-data", round(last_data, 1))
wait.setblocking(False)
try:
    d = wait.recv(100); print("wait", "closed" if not d else "answered " + d.decode(errors="replace"))
except BlockingIOError: print("wait", "connected")
closed = 0
for s in stall:
    s.settimeout(0.2)
    try:
        d = s.recv(200)
        closed += 1 if (not d or b'no complete request' in d or b'idle' in d) else 0
    except socket.timeout: pass
    except OSError: closed += 1
print("stallers-closed", closed, "of", len(stall))
# Console and wait clients may not take the slots kept for requests.
for s in stall + [con, wait]: s.close()
time.sleep(0.3)
cons = []
refused = None
for i in range(40):
    s = conn(b'{"request":"console"}\n'); s.settimeout(3)
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c: break
        line += c
    if b'"ok":true' not in line: refused = (i, line.decode(errors="replace").strip()); break
    cons.append(s)
print("consoles-accepted", len(cons), refused[1] if refused else "(none refused)")
r = subprocess.run([kvmbox, "info", "st"], capture_output=True, text=True, timeout=30)
print("info-with-full-consoles", r.returncode, r.stderr.strip())
PY
sed 's/^/    | /' "$T/stall"
expect "kvmbox info gets through 30 stalled clients (and console, wait) in every slot" 'grep -q "^info-status 0" "$T/stall"'
expect "the stalled clients are dropped after the request timeout" 'grep -q "^stallers-closed 30 of 30" "$T/stall"'
cl=$(awk '/^console-last-data/ { print int($2) }' "$T/stall")
expect "an idle console client stays attached past the timeout (output at ${cl:-?} s)" '[ "${cl:-0}" -ge 11 ]'
expect "a waiting client stays connected past the timeout" 'grep -q "^wait connected" "$T/stall"'
expect "console and wait clients cannot take the last 4 slots" 'grep -q "^consoles-accepted 28 .*too many console" "$T/stall"'
expect "and requests still get through then" 'grep -q "^info-with-full-consoles 0" "$T/stall"'
"$KVMBOX" kill st >/dev/null 2>&1

# --- 6. the daemon holds none of its caller's descriptors ---
echo data >"$T/callers-file"
python3 - "$KVMBOX" "$K" "$T/callers-file" >"$T/fds" 2>&1 <<'PY'
import os, select, subprocess, sys
kvmbox, k, path = sys.argv[1:4]
r, w = os.pipe()
f = os.open(path, os.O_RDONLY)
p = subprocess.run([kvmbox, "run", "--daemonize", "--name", "fd", "--kernel", k, "--mem", "64M"],
                   pass_fds=(w, f), capture_output=True, text=True)
print("pipe-inode", os.fstat(w).st_ino)
os.close(w)
print("run", p.returncode, p.stdout.strip(), p.stderr.strip())
ready, _, _ = select.select([r], [], [], 10)
print("pipe", "eof" if ready and os.read(r, 100) == b"" else "held open")
PY
pid=$(pid_of fd)
pipe="pipe:[$(awk '/^pipe-inode/ { print $2 }' "$T/fds")]"
held=""
for f in /proc/"${pid:-none}"/fd/*; do
    l=$(readlink "$f" 2>/dev/null) || continue
    case $l in "$T/callers-file" | "$pipe") held="$held $(basename "$f")->$l" ;; esac
done
expect "the caller sees its pipe end once run --daemonize returns ($(head -1 "$T/fds"))" 'grep -q "^pipe eof" "$T/fds"'
expect "the daemon (pid ${pid:-?}) holds neither the caller's file nor its pipe:${held:- none}" '[ -n "$pid" ] && [ -z "$held" ]'
"$KVMBOX" kill fd >/dev/null 2>&1

# --- 7. signals during set-up ---
mkfifo "$T/kfifo"
stalled_run() { # stalled_run SIGNAL WANT NAME ARGS...: run stalls in set-up; SIGNAL ends it
    local sig=$1 want=$2 name=$3
    shift 3
    "$KVMBOX" run --name "$name" "$@" </dev/null >"$T/sig.out" 2>"$T/sig.err" &
    local pid=$! rc
    sleep 2 # stalled: still there, and the guest has not started (no output)
    if ! kill -0 $pid 2>/dev/null || [ -s "$T/sig.out" ]; then
        kill -9 $pid 2>/dev/null
        wait $pid
        echo "SKIP: security: set-up with $* did not stall (status $?: $(head -1 "$T/sig.err")), so SIG$sig during it is not tested"
        return
    fi
    kill -"$sig" $pid
    for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    if kill -0 $pid 2>/dev/null; then
        kill -9 $pid
        wait $pid 2>/dev/null
        bad "SIG$sig during set-up ($*) was ignored for 10 s"
        return
    fi
    wait $pid
    rc=$?
    if [ $rc = "$want" ] && [ ! -e "$T/run/$name.sock" ]; then
        ok "SIG$sig during set-up ($1 $2) ends run with status $rc and removes its socket"
    else
        bad "SIG$sig during set-up ($*): status $rc (want $want), socket left: $(ls "$T/run/$name.sock" 2>/dev/null)"
    fi
}
stalled_run TERM 143 sg1 --kernel "$T/kfifo" --mem 64M
stalled_run INT 130 sg2 --kernel "$T/kfifo" --mem 64M
# --daemonize: the foreground command passes the signal to the VM process.
"$KVMBOX" run --daemonize --name sg4-$$ --kernel "$T/kfifo" --mem 64M >/dev/null 2>"$T/sig.err" &
pid=$!
sleep 2
kill -TERM $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then
    kill -9 $pid
    bad "run --daemonize ignored SIGTERM during set-up for 10 s"
else
    wait $pid
    rc=$?
    sleep 0.5
    left=$(pgrep -f "name sg4-$$ " || true)
    [ $rc = 143 ] && [ -z "$left" ] && [ ! -e "$T/run/sg4-$$.sock" ] &&
        ok "run --daemonize: SIGTERM during set-up ends it (143), the VM process and its socket with it" ||
        bad "run --daemonize with SIGTERM during set-up: status $rc, processes left: '$left', socket: $(ls "$T/run/sg4-$$.sock" 2>/dev/null)"
    for p in $left; do kill -9 "$p"; done
fi
exit $((fails > 0))
