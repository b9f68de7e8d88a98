# Sourced by tests/t-balloon.sh and tests/t-linux-balloon.sh (not a test by itself): one VM
# with a balloon under kvmbox (daemonized, driven with kvmbox balloon/info/console) or under
# QEMU TCG (virtio-balloon-pci,free-page-reporting=on, driven through the HMP monitor), with
# the same functions for both. The caller sets:
#   VMM (kvmbox|qemu) KVMBOX T (a temporary directory) TAG (for PASS/FAIL lines)
#   KERNEL, INITRD (may be empty), CMDLINE (may be empty), MEM (MiB)
# and gets: vm_start, info (kvmbox's `info --json` shape; under QEMU only pid, balloon.actual
# and balloon.stats), json EXPR, set_target MIB, send LINE, start_wait + end_status (sets st),
# rss_mib (of the VMM's process), wait_for PATTERN (in $LOG, the console), expect, ok, bad,
# cond, and $fails. The VM is named bal; cleanup runs at exit.
# No wait here guesses the host's speed (tests/lib/progress.sh): wait_for and end_status give
# up when the console has printed nothing while the VMM used no CPU for 120 s, or used 900
# CPU-seconds printing nothing, or after 3600 s.
# shellcheck shell=bash
export KVMBOX_RUNTIME_DIR=$T/run
N=bal
LOG=$T/run/$N.log
fails=0
SENDER="" WAITER="" PID=""
mkdir -p "$T/run"
. tests/lib/progress.sh
balloon_cleanup() {
    [ -n "$SENDER" ] && kill "$SENDER" 2>/dev/null
    if [ "$VMM" = kvmbox ]; then
        for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
        # A daemonized VMM's sanitizer reports land in its log: show them (tests/run-all.sh
        # counts them as failures).
        grep -h -E 'runtime error:|ERROR: (Address|Leak)Sanitizer' "$T"/run/*.log 2>/dev/null | head -5
    elif [ -s "$T/qemu.pid" ]; then
        kill "$(cat "$T/qemu.pid")" 2>/dev/null
    fi
    exec 3>&- 2>/dev/null
    rm -rf "$T"
}
trap balloon_cleanup EXIT
ok() { echo "PASS: $TAG ($VMM): $*"; }
bad() { echo "FAIL: $TAG ($VMM): $*"; fails=$((fails + 1)); }
cond() { eval "$1"; } # a compound condition for expect
expect() { # expect DESCRIPTION COND...
    local d=$1
    shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
LIMITS=(--quiet 120 --cpu-quiet 900 --cap 3600)
wait_for() { # wait_for PATTERN [COUNT]: COUNT lines (default 1) in the guest's console log match
    wait_output "${LIMITS[@]}" ${PID:+--pid "$PID"} --count "${2:-1}" "$LOG" "$1"
}
rss_mib() { awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/$PID/status" 2>/dev/null || echo 0; }
now_ms() { date +%s%3N; }
json() { # json EXPR: evaluates EXPR on the VM's info (i)
    python3 -c 'import json,sys; i=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$(info)" "$1"
}

if [ "$VMM" = kvmbox ]; then
    vm_start() {
        # --timeout: only against a VM outliving a script that was killed (cleanup ends it).
        "$KVMBOX" run --daemonize --name $N --kernel "$KERNEL" ${INITRD:+--initrd "$INITRD"} \
            ${CMDLINE:+--cmdline "$CMDLINE"} --mem "${MEM}M" --timeout 7200 >"$T/start.out" 2>&1 ||
            { cat "$T/start.out"; return 1; }
        "$KVMBOX" balloon $N --stats-interval 1 >"$T/si.out" 2>&1 || { cat "$T/si.out"; return 1; }
        PID=$(json 'i["pid"]')
    }
    info() { "$KVMBOX" info $N --json 2>/dev/null; }
    set_target() { "$KVMBOX" balloon $N "$1M"; }
    # send LINE: a console client that stays attached (its input goes to the guest once it
    # is) until the next send, the VM's end or cleanup: no guess of when it got there.
    send() {
        [ -n "$SENDER" ] && { kill "$SENDER" 2>/dev/null; wait "$SENDER"; }
        printf '%s\n' "$1" | "$PROGRESS" run --name "console $N" "${LIMITS[@]}" \
            -- "$KVMBOX" console $N >"$T/send.out" 2>&1 &
        SENDER=$!
    }
    # start_wait: a `kvmbox wait` client, returning once it is blocked waiting for the answer
    # (in poll(), system call 7), so that the VM cannot end unheard.
    waiting() { local nr; read -r nr _ <"/proc/$WAITER/syscall" 2>/dev/null && [ "$nr" = 7 ]; }
    start_wait() {
        "$KVMBOX" wait $N >"$T/wait.out" 2>&1 &
        WAITER=$!
        poll_until 120 waiting
    }
    end_status() { # sets st to the VM's exit status as `kvmbox wait` reports it, or empty
        st=
        wait_exit "${LIMITS[@]}" "$WAITER" "$LOG" || return
        wait "$WAITER"
        st=$?
    }
else
    mkfifo "$T/in"
    exec 3<>"$T/in"
    vm_start() {
        local extra=()
        [ -n "${INITRD:-}" ] && extra+=(-initrd "$INITRD")
        [ -n "${CMDLINE:-}" ] && extra+=(-append "$CMDLINE")
        qemu-system-x86_64 -accel tcg -M q35 -m "$MEM" -display none -no-user-config -nodefaults \
            -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$KERNEL" "${extra[@]}" -serial stdio \
            -monitor "unix:$T/mon,server,nowait" -pidfile "$T/qemu.pid" -no-reboot \
            -device virtio-balloon-pci,id=bal,free-page-reporting=on <&3 >"$LOG" 2>&1 &
        QPID=$!
        poll_until 120 eval '[ -S "$T/mon" ] && [ -s "$T/qemu.pid" ]'
        PID=$(cat "$T/qemu.pid")
        hmp "qom-set /machine/peripheral/bal guest-stats-polling-interval 1" >/dev/null
    }
    hmp() { # hmp COMMAND...: runs HMP commands, prints their output
        python3 - "$T/mon" "$@" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(60)
def rd():
    b = b''
    try:
        while not b.endswith(b'(qemu) '):
            c = s.recv(65536)
            if not c: break
            b += c
    except socket.timeout: pass
    return b.decode(errors='replace').replace('\r', '')
rd()
for c in sys.argv[2:]:
    s.sendall(c.encode() + b'\n')
    out = rd().split('\n')[1:]
    print('\n'.join(l for l in out if l.strip() and not l.startswith('(qemu)')))
PY
    }
    info() { # QEMU's balloon state in the shape of kvmbox's info
        local ib st
        ib=$(hmp "info balloon")
        st=$(hmp "qom-get /machine/peripheral/bal guest-stats")
        python3 -c '
import json, re, sys
actual = int(re.search(r"actual=(\d+)", sys.argv[1]).group(1)) << 20
s = json.loads(sys.argv[2])["stats"]
m = {"swap_in": "stat-swap-in", "swap_out": "stat-swap-out", "major_faults": "stat-major-faults",
     "minor_faults": "stat-minor-faults", "free": "stat-free-memory", "total": "stat-total-memory",
     "available": "stat-available-memory", "caches": "stat-disk-caches"}
print(json.dumps({"pid": 0, "balloon": {"actual": actual, "stats": {k: s[v] for k, v in m.items()}}}))' "$ib" "$st"
    }
    set_target() { hmp "balloon $1" >/dev/null; }
    send() { printf '%s\n' "$1" >&3; }
    start_wait() { :; }
    end_status() { # sets st to QEMU's exit status, or empty
        st=
        wait_exit "${LIMITS[@]}" "$QPID" "$LOG" || return
        wait "$QPID"
        st=$?
    }
fi
