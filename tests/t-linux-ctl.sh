#!/bin/bash
# The control plane with Debian's cloud kernel (scripts/fetch-guest.sh; /init starts busybox
# acpid on the ACPI power button and then a shell on the console), daemonized:
#   1. list shows it running, info --json its state and vCPUs;
#   2. a line typed through `kvmbox console` is run by the guest's shell (its result comes
#      back), and detaching leaves the guest running;
#   3. pause for 3 s and resume: the guest's CLOCK_MONOTONIC (/proc/uptime) does not leap
#      over the pause, and the guest keeps running;
#   4. shutdown presses the power button: the guest runs its power-button action and powers
#      off cleanly; shutdown and wait both report status 0, and the socket is gone.
# Needs a host whose KVM runs guests natively (scripts/host-native.sh decides at run time);
# elsewhere it prints one SKIP line with the reason and exits 77. LINUX_CTL_VMM=qemu runs the
# same guest steps under QEMU TCG (serial and HMP monitor on unix sockets: stop/cont,
# system_powerdown) to validate the guest side; list/info are kvmbox's own.
# Waits end on what they wait for (tests/lib/progress.sh): given up when the console has
# printed nothing for 120 s, or after 1200 s; never a guess of how fast the host is.
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
VMM=${LINUX_CTL_VMM:-kvmbox}
G=build/guest
. tests/linux-guest.sh
linux_need_host "linux control plane"
T=$(mktemp -d /tmp/kvmbox-linux-ctl.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
N=lctl$$
LOG=$T/run/$N.log
QPID=""
cleanup() {
    [ "$VMM" = kvmbox ] && "$KVMBOX" kill $N >/dev/null 2>&1
    [ -n "$QPID" ] && kill "$QPID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
. tests/lib/progress.sh
LIMITS=(--quiet 120 --cap 1200)
fails=0
ok() { echo "PASS: linux-ctl ($VMM): $*"; }
bad() { echo "FAIL: linux-ctl ($VMM): $*"; fails=$((fails + 1)); }
linux_fetch_guest "linux control plane" "$T/fetch.log" || exit 1
CMDLINE="console=ttyS0 kvmbox.shell=1"

# --- the VMM's side of each step ---
start() {
    mkdir -p "$T/run"
    if [ "$VMM" = kvmbox ]; then
        "$KVMBOX" run --daemonize --name $N --kernel "$G/vmlinuz" --initrd "$G/initramfs.cpio.gz" \
            --mem 512M --cpus 2 --cmdline "$CMDLINE" >"$T/start" 2>&1
    else
        qemu-system-x86_64 -accel tcg -M q35 -m 512M -smp 2 -kernel "$G/vmlinuz" \
            -initrd "$G/initramfs.cpio.gz" -append "$CMDLINE" -display none -nodefaults -no-user-config \
            -chardev "socket,id=s0,path=$T/serial,server=on,wait=off,logfile=$LOG" -serial chardev:s0 \
            -monitor "unix:$T/mon,server=on,wait=off" -no-reboot >"$T/start" 2>&1 &
        QPID=$!
    fi
}
# type_line LINE REGEX: types LINE on the console and prints what comes back, up to the first
# line matching REGEX (Python re), or until nothing more came for 60 s (600 s in all).
type_line() {
    if [ "$VMM" = kvmbox ]; then
        local pid
        printf '%s\n' "$1" | "$PROGRESS" run --name "console $N" -- "$KVMBOX" console $N >"$T/type.out" 2>/dev/null &
        pid=$!
        wait_output --pid "$pid" "$T/type.out" "$2" 2>/dev/null
        kill "$pid" 2>/dev/null
        wait "$pid"
        tr -d '\r' <"$T/type.out"
    else
        python3 - "$T/serial" "$1" "$2" <<'PY' | tr -d '\r'
import re, socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(0.2)
s.sendall(sys.argv[2].encode() + b"\n")
rx = re.compile(sys.argv[3], re.M)
out, t0 = b"", time.monotonic()
last = t0
while time.monotonic() - last < 60 and time.monotonic() - t0 < 600:
    if rx.search(out.decode(errors="replace").replace("\r", "")):
        break
    try:
        c = s.recv(4096)
    except socket.timeout:
        continue
    if not c:
        break
    out, last = out + c, time.monotonic()
sys.stdout.write(out.decode(errors="replace"))
PY
    fi
}
monitor() { # QEMU only
    python3 - "$T/mon" "$1" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(0.2)
s.sendall(sys.argv[2].encode() + b"\n"); time.sleep(0.5)
PY
}
pause() { if [ "$VMM" = kvmbox ]; then "$KVMBOX" pause $N; else monitor stop; fi; }
resume() { if [ "$VMM" = kvmbox ]; then "$KVMBOX" resume $N; else monitor cont; fi; }
UPTIME_RX='^[0-9]+\.[0-9]+ [0-9]+\.[0-9]+$'
uptime_now() { type_line "cat /proc/uptime" "$UPTIME_RX" | awk '/^[0-9]+\.[0-9]+ [0-9]+\.[0-9]+$/ { print $1; exit }'; }

start
if ! wait_output "${LIMITS[@]}" "$LOG" "KVMBOX-GUEST: shell"; then
    bad "the guest did not reach its shell: $(cat "$T/start"; tail -5 "$LOG" 2>/dev/null)"
    exit 1
fi
grep -aq "KVMBOX-GUEST: acpid: the power button shuts down" "$LOG" && ok "the guest listens to the power button (acpid)" ||
    bad "acpid did not start in the guest"

# 1. list, info
if [ "$VMM" = kvmbox ]; then
    grep -q "^$N *running *2 " <<<"$("$KVMBOX" list)" && ok "list shows it running with 2 vCPUs" ||
        bad "list: $("$KVMBOX" list)"
    python3 -c 'import json, sys; i = json.load(sys.stdin); sys.exit(not (i["state"] == "running" and i["cpus"] == 2))' \
        <<<"$("$KVMBOX" info $N --json)" && ok "info --json: running, 2 vCPUs" || bad "info: $("$KVMBOX" info $N)"
fi

# 2. the console reaches the guest's shell
out=$(type_line 'echo marker-$((6*7))' '^marker-42')
grep -q "^marker-42" <<<"$out" && ok "a line typed on the console is run by the guest's shell (marker-42)" ||
    bad "no answer from the guest's shell: $(tail -3 <<<"$out")"

# 3. pause/resume: no leap in the guest's monotonic clock (the pause lasts 3 s: not a limit)
u0=$(uptime_now) h0=$EPOCHREALTIME
pause
sleep 3
resume
u1=$(uptime_now) h1=$EPOCHREALTIME
if [ -n "$u0" ] && [ -n "$u1" ]; then
    verdict=$(awk -v u0="$u0" -v u1="$u1" -v h0="$h0" -v h1="$h1" \
        'BEGIN { g = u1 - u0; h = h1 - h0; printf "%s guest %.1f s while %.1f s passed on the host", (g < h - 2 ? "ok" : "bad"), g, h }')
    [ "${verdict%% *}" = ok ] && ok "pause 3 s: no leap: ${verdict#* }" || bad "pause: the guest's clock leapt: ${verdict#* }"
else
    bad "could not read the guest's uptime around the pause ('$u0', '$u1')"
fi

# 4. shutdown through the power button
if [ "$VMM" = kvmbox ]; then
    # The waiter must be blocked on its answer (in poll(), system call 7) before the VM ends.
    "$KVMBOX" wait $N >"$T/wait" 2>&1 &
    waiter=$!
    waiting() { local nr; read -r nr _ <"/proc/$waiter/syscall" 2>/dev/null && [ "$nr" = 7 ]; }
    poll_until 120 waiting
    out=$("$KVMBOX" shutdown $N --timeout 600 2>&1); rc=$?
    [ $rc = 0 ] && ok "shutdown: the guest powered off cleanly ($out)" || bad "shutdown: status $rc: $out"
    wait $waiter
    wst=$?
    [ $wst = 0 ] && ok "wait returned status 0" || bad "wait: status $wst: $(cat "$T/wait")"
    [ ! -e "$T/run/$N.sock" ] && ok "the control socket is gone" || bad "the control socket is still there"
else
    monitor system_powerdown
    if ! wait_exit "${LIMITS[@]}" "$QPID" "$LOG"; then
        bad "QEMU still runs after system_powerdown"
    else
        wait "$QPID"
        rc=$?
        QPID=""
        [ $rc = 0 ] && ok "system_powerdown: QEMU ended with status 0" || bad "QEMU ended with status $rc"
    fi
fi
grep -aq "KVMBOX-GUEST: power button: shutting down" "$LOG" && ok "the guest ran its power-button action" ||
    bad "the guest never saw the power button: $(tail -3 "$LOG")"
exit $((fails > 0))
