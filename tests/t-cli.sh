#!/bin/bash
# kvmbox's command line and bad input: every mistake gets one clear line on stderr and the
# documented status, never a crash or a hang. Also the embedding example.
set -u
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
GT=$BUILD/guest-tests
K=$GT/debug-exit.elf
T=$(mktemp -d /tmp/kvmbox-cli.XXXXXX)
BG=()
cleanup() {
    local p
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
. "$(dirname "$0")/lib/progress.sh"
fails=0

# expect NAME STATUS PATTERN -- CMD...: status must match and stderr must be one line
# containing PATTERN (for failures), with no sanitizer report. CMD is stopped if it prints
# nothing and uses no CPU for 60 s, or after 600 s (tests/lib/progress.sh): a hang, never a
# slow host.
expect() {
    local name=$1 want=$2 pat=$3
    shift 4
    progress_run --name "$name" --cpu-quiet 60 --watch "$T/err" -- "$@" >"$T/out" 2>"$T/err" </dev/null
    local rc=$?
    local lines
    lines=$(grep -c . "$T/err")
    if [ "$rc" != "$want" ]; then
        echo "FAIL: cli: $name: status $rc, expected $want; stderr: $(head -3 "$T/err")"
        fails=$((fails + 1))
    elif [ -n "$pat" ] && { ! grep -q -- "$pat" "$T/err" || [ "$lines" -ne 1 ]; }; then
        echo "FAIL: cli: $name: expected one line matching '$pat', got: $(cat "$T/err")"
        fails=$((fails + 1))
    else
        echo "PASS: cli: $name ($(head -1 "$T/err"))"
    fi
}

expect "version" 0 "" -- "$KVMBOX" --version
grep -q '^kvmbox [0-9]' "$T/out" || { echo "FAIL: cli: version output: $(cat "$T/out")"; fails=$((fails + 1)); }
expect "help" 0 "" -- "$KVMBOX" help
grep -q 'run' "$T/out" || { echo "FAIL: cli: help does not list run"; fails=$((fails + 1)); }
expect "no command" 2 "" -- "$KVMBOX"
expect "unknown command" 2 "" -- "$KVMBOX" frobnicate
expect "unknown option" 2 "unknown option '--frobnicate'" -- "$KVMBOX" run --kernel "$K" --frobnicate
expect "no kernel" 2 "no kernel given" -- "$KVMBOX" run --mem 64M
expect "missing kernel file" 2 "cannot open kernel" -- "$KVMBOX" run --kernel "$T/nope"
printf 'just some text\n' >"$T/text"
expect "not a kernel" 2 "is not a kernel kvmbox can boot" -- "$KVMBOX" run --kernel "$T/text"
: >"$T/empty"
expect "empty kernel" 2 "is empty" -- "$KVMBOX" run --kernel "$T/empty"
expect "directory as kernel" 2 "not a regular file" -- "$KVMBOX" run --kernel "$T"
expect "cpus 0" 2 "invalid value '0' for --cpus" -- "$KVMBOX" run --kernel "$K" --cpus 0
expect "cpus beyond KVM" 2 "more than this host's KVM allows" -- "$KVMBOX" run --kernel "$K" --cpus 4000
expect "mem beyond host" 2 "more than this host has" -- "$KVMBOX" run --kernel "$K" --mem 64T
expect "mem malformed" 2 "invalid value 'lots' for --mem" -- "$KVMBOX" run --kernel "$K" --mem lots
expect "mem bad option" 2 "overcommit=on|off" -- "$KVMBOX" run --kernel "$K" --mem 64M,overcommit=maybe
# A guest larger than the host (RAM and swap) runs when asked: its RAM is mapped lazily.
host_mib=$(awk '/^(MemTotal|SwapTotal):/ {s += $2} END {print int(s / 1024)}' /proc/meminfo)
expect "mem beyond host, overcommit=on" 43 "" -- "$KVMBOX" run --kernel "$K" --mem "$((host_mib + 1024))M,overcommit=on"
expect "mem too small" 2 "at least 8M" -- "$KVMBOX" run --kernel "$K" --mem 1M
head -c $((40 << 20)) /dev/zero >"$T/big.initrd"
expect "initrd does not fit" 2 "does not fit" -- "$KVMBOX" run --kernel "$K" --initrd "$T/big.initrd" --mem 32M
expect "timeout malformed" 2 "invalid value" -- "$KVMBOX" run --kernel "$K" --timeout soon

# Disks and NICs: each mistake is found before the guest starts.
expect "disk missing" 2 "No such file" -- "$KVMBOX" run --kernel "$K" --disk "$T/nope.img"
expect "disk bad format" 2 "format must be raw or qcow2" -- "$KVMBOX" run --kernel "$K" --disk "$T/text,format=vmdk"
expect "disk bad option" 2 "unknown option 'bogus'" -- "$KVMBOX" run --kernel "$K" --disk "$T/text,bogus=1"
printf 'QFI\xfb\0\0\0\3garbage' >"$T/bad.qcow2"
expect "disk corrupt qcow2" 2 "bad.qcow2" -- "$KVMBOX" run --kernel "$K" --disk "$T/bad.qcow2"
qemu-img create -q -f raw "$T/held.img" 1M
# The holder spins until it is killed below (or by cleanup).
"$KVMBOX" run --kernel "$GT/spin.elf" --mem 32M --disk "$T/held.img,format=raw" >/dev/null 2>&1 &
holder=$!
BG+=("$holder")
holds() { ls -l "/proc/$holder/fd" 2>/dev/null | grep -q held.img; }
poll_until 120 holds
expect "disk in use by another kvmbox" 2 "in use by another process" -- "$KVMBOX" run --kernel "$K" --disk "$T/held.img,format=raw"
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
expect "net malformed MAC" 2 "malformed MAC address" -- "$KVMBOX" run --kernel "$K" --net user,mac=52:54:zz:00:00:01
expect "net multicast MAC" 2 "malformed MAC address" -- "$KVMBOX" run --kernel "$K" --net user,mac=01:00:5e:00:00:01
expect "net unknown mode" 2 "unknown mode" -- "$KVMBOX" run --kernel "$K" --net vde
expect "net missing bridge" 2 "bridge kvmbox-nobr does not exist" -- "$KVMBOX" run --kernel "$K" --net bridge=kvmbox-nobr
expect "net missing tap" 2 "tap kvmbox-notap does not exist" -- "$KVMBOX" run --kernel "$K" --net tap,ifname=kvmbox-notap
expect "net not a bridge" 2 "lo is not a bridge" -- "$KVMBOX" run --kernel "$K" --net bridge=lo
# The listener holds its port until it is killed below (or by cleanup).
python3 -c 'import socket,time,sys; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(100000)' >"$T/port" &
listener=$!
BG+=("$listener")
poll_until 120 test -s "$T/port"
expect "net hostfwd port in use" 2 "Address already in use" -- "$KVMBOX" run --kernel "$K" --net "user,hostfwd=tcp::$(cat "$T/port")-:22"
kill "$listener" 2>/dev/null; wait "$listener" 2>/dev/null
expect "balloon bad value" 2 "expected on or off" -- "$KVMBOX" run --kernel "$K" --balloon maybe
expect "sandbox bad value" 2 "invalid value .maybe. for --sandbox" -- "$KVMBOX" run --kernel "$K" --sandbox maybe
expect "hugepages bad value" 2 "hugepages=on|off" -- "$KVMBOX" run --kernel "$K" --mem 64M,hugepages=maybe

if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    expect "no /dev/kvm" 4 "/dev/kvm does not exist" -- \
        unshare -m sh -c 'mount -t tmpfs none /dev && exec "$0" run --kernel "$1"' "$KVMBOX" "$K"
    if command -v setpriv >/dev/null && [ -e /dev/kvm ] && [ "$(stat -c %a /dev/kvm)" = 600 ]; then
        cp "$KVMBOX" "$T/kvmbox" && cp "$K" "$T/k.elf" && chmod 755 "$T" && chmod 644 "$T/k.elf"
        expect "no permission on /dev/kvm" 4 "no permission to open /dev/kvm" -- \
            setpriv --reuid=65534 --regid=65534 --clear-groups "$T/kvmbox" run --kernel "$T/k.elf"
    else
        echo "SKIP: cli: no permission on /dev/kvm: /dev/kvm is not root-only here"
    fi
else
    echo "SKIP: cli: no /dev/kvm and permission checks: need root and unshare"
fi

if [ -e /dev/kvm ]; then
    if gcc -m32 -nostdlib -static -Wl,-Ttext=0x100000 -Wl,--build-id=none \
        tests/guests/triple-fault.S -o "$T/tf.elf" 2>"$T/gcc.err"; then
        expect "triple fault names exit, rip and code" 4 "KVM_EXIT_SHUTDOWN.*rip 0x100013, code: 0f 0b" -- \
            "$KVMBOX" run --kernel "$T/tf.elf"
    else
        echo "FAIL: cli: cannot build tests/guests/triple-fault.S: $(head -2 "$T/gcc.err")"
        fails=$((fails + 1))
    fi
    expect "pvpanic ends kvmbox with status 6" 6 "guest panicked" -- \
        "$KVMBOX" run --kernel "$GT/panic.elf"
    # Ctrl-] on a terminal ends the VM (status 0) and gives the terminal back. The guest
    # prints a tick every 200 ms: 60 s without output, or 600 s in all, is a hang.
    out=$(python3 - "$KVMBOX" "$GT/ctl.elf" <<'PY'
import os, pty, select, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], ['kvmbox', 'run', '--kernel', sys.argv[2], '--mem', '64M'])
out, t0, last = b'', time.monotonic(), time.monotonic()
while time.monotonic() - last < 60 and time.monotonic() - t0 < 600:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try: out += os.read(fd, 4096)
        except OSError: break
        last = time.monotonic()
    if b'TICK 1' in out:
        os.write(fd, b'\x1d'); break
else:
    os.kill(pid, signal.SIGTERM)
    print('no TICK 1 from the guest:', out[-200:])
_, st = os.waitpid(pid, 0)
print('status', os.WEXITSTATUS(st) if os.WIFEXITED(st) else 'signal')
PY
)
    if [ "$out" = "status 0" ]; then echo "PASS: cli: Ctrl-] on a terminal ends the VM with status 0"
    else echo "FAIL: cli: Ctrl-] on a terminal: $out"; fails=$((fails + 1)); fi
    expect "debug-exit status" 43 "" -- "$KVMBOX" run --kernel "$K" --cmdline "code=21"
    expect "embedding example" 43 "" -- "$BUILD/examples/embed" "$K" "code=21"
    grep -q "embed: guest stopped" "$T/err" || { echo "FAIL: cli: embed did not report the stop"; fails=$((fails + 1)); }
else
    echo "SKIP: cli: running guests: no /dev/kvm on this host"
fi
[ $fails -eq 0 ]
