#!/bin/bash
# The seccomp sandbox (vmm/sandbox.c):
#   1. a running VM: every thread but the main one runs under a seccomp filter (Seccomp: 2 in
#      /proc/PID/task/TID/status), and each class of thread is there: vCPUs, API, console,
#      virtio-blk queue and workers, virtio-net, virtio-balloon;
#   2. for each class, a forbidden call (KVMBOX_SANDBOX_SELFTEST=CLASS makes the thread open
#      a file for writing once its filter is on) stops the VM with status 4 and one line
#      naming the class and the call, and the call did not happen (the file is not there);
#   3. with --sandbox off the same call goes through (the file appears) and the guest runs
#      on: the check above can fail.
# No limit here guesses the host's speed: a VM that should have been stopped is declared
# running on once its guest has printed 25 ticks (5 s of its own time) after its threads all
# started; everything else waits on output (tests/lib/progress.sh).
# Classes: vCPU, API, console, virtio-blk I/O, virtio-net I/O, virtio-balloon, and the signal
# thread of `kvmbox run` (and a daemon's log writer, checked in 1 only: its own forbidden
# call would have nowhere to be reported).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
K=$BUILD/guest-tests/ctl.elf
if [ ! -c /dev/kvm ]; then
    echo "SKIP: sandbox: no /dev/kvm on this host"
    exit 77
fi
[ -f "$K" ] || { echo "FAIL: sandbox: $K is not built"; exit 1; }
T=$(mktemp -d /tmp/kvmbox-sandbox.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
MARK=/tmp/kvmbox-sandbox-selftest
cleanup() {
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    rm -rf "$T"
    rm -f "$MARK"
}
trap cleanup EXIT
. tests/lib/progress.sh
fails=0
ok() { echo "PASS: sandbox: $*"; }
bad() { echo "FAIL: sandbox: $*"; fails=$((fails + 1)); }
truncate -s 1M "$T/d.img"
DEV=(--disk "$T/d.img,format=raw" --net user --mem 64M --cpus 2)

# --- 1. the threads of a running VM and their filters ---
"$KVMBOX" run --daemonize --name sb --kernel "$K" "${DEV[@]}" >/dev/null 2>&1
pid=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])' <<<"$("$KVMBOX" info sb --json 2>/dev/null)" 2>/dev/null)
if [ -z "$pid" ]; then
    bad "the VM did not start"
else
    unfiltered="" filtered=0 names="" tsan=0
    # The ThreadSanitizer build's runtime starts threads of its own (unnamed: "kvmbox"), which
    # are not kvmbox's; every thread kvmbox starts has a name.
    grep -qa 'ThreadSanitizer' "$KVMBOX" && tsan=1
    for task in /proc/"$pid"/task/*; do
        comm=$(cat "$task/comm") mode=$(awk '/^Seccomp:/ { print $2 }' "$task/status")
        # KVM's own kernel worker (NX huge page recovery) is listed among the VM's tasks.
        case $comm in kvm-*) continue ;; esac
        if [ $tsan = 1 ] && [ "$comm" = kvmbox ] && [ "$(basename "$task")" != "$pid" ]; then
            names="$names (tsan)"
            continue
        fi
        names="$names $comm"
        if [ "$(basename "$task")" = "$pid" ]; then
            main_mode=$mode
        elif [ "$mode" = 2 ]; then
            filtered=$((filtered + 1))
        else
            unfiltered="$unfiltered $comm(mode $mode)"
        fi
    done
    if [ -z "$unfiltered" ] && [ "$filtered" -gt 0 ]; then
        ok "all $filtered threads but the main one are filtered:$names"
    else
        bad "threads without a filter:$unfiltered (threads:$names)"
    fi
    [ "${main_mode:-}" = 0 ] && ok "the main thread (which rebuilds the machine on reset) is not" ||
        bad "the main thread's seccomp mode is '${main_mode:-?}'"
    for want in vcpu0 vcpu1 api blk0-queue blk0-io0 net0 balloon signal log; do
        grep -qw "$want" <<<"$names" || bad "no thread named $want among:$names"
    done
    # The filters let a working VM work: a reset rebuilds the vCPUs under new filters.
    "$KVMBOX" reset sb
    wait_output --count 2 "$T/run/sb.log" CTL-READY && ok "the guest reboots and runs on under the filters" ||
        bad "the guest did not come back after a reset: $(tail -3 "$T/run/sb.log")"
    "$KVMBOX" kill sb >/dev/null 2>&1
fi

# selftest CLASS OUT [kvmbox run options...]: runs ctl.elf with KVMBOX_SANDBOX_SELFTEST=CLASS,
# its stderr in OUT and its console in OUT.console; returns its exit status. A VM still
# running when its guest has printed TICK 25 (every thread starts before the guest runs) is
# not going to be stopped by the call: it is stopped with SIGTERM (status 143).
selftest() {
    local class=$1 out=$2 pid
    shift 2
    KVMBOX_SANDBOX_SELFTEST=$class "$PROGRESS" run --name "selftest $class" \
        -- "$KVMBOX" run --kernel "$K" "${DEV[@]}" --name "st$$" "$@" < <(true) >"$out.console" 2>"$out" &
    pid=$!
    wait_output --pid "$pid" "$out.console" '^TICK 25 ' 2>/dev/null && kill "$pid" 2>/dev/null
    wait "$pid"
}

# --- 2. a forbidden call in each class stops the VM; 3. not without the sandbox ---
# stdin is an (empty) pipe, not /dev/null: with /dev/null kvmbox starts no console thread.
for class in vCPU API console "virtio-blk I/O" "virtio-net I/O" virtio-balloon signal; do
    rm -f "$MARK"
    selftest "$class" "$T/st.err"
    rc=$?
    out=$(cat "$T/st.err")
    if [ $rc = 4 ] && grep -q "the $class thread made system call 257, which its seccomp sandbox forbids" <<<"$out" &&
        [ ! -e "$MARK" ]; then
        ok "$class: a forbidden call (openat for writing) stops the VM with status 4 and says so"
    else
        bad "$class: status $rc (want 4), file made: $([ -e "$MARK" ] && echo yes || echo no), stderr: $(tail -2 <<<"$out")"
    fi
done
rm -f "$MARK"
selftest vCPU "$T/st.err" --sandbox off
rc=$?
out=$(cat "$T/st.err")
if [ $rc = 143 ] && [ -e "$MARK" ] && grep -q '^TICK 25 ' "$T/st.err.console"; then
    ok "--sandbox off: the same call goes through and the guest runs on (25 ticks, then SIGTERM)"
else
    bad "--sandbox off: status $rc (want 143 from SIGTERM after 25 ticks), file made: $([ -e "$MARK" ] && echo yes || echo no): $out"
fi
exit $((fails > 0))
