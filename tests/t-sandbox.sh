#!/bin/bash
# The seccomp sandbox (vmm/sandbox.c):
#   1. a running VM: every thread but the main one runs under a seccomp filter (Seccomp: 2 in
#      /proc/PID/task/TID/status), and each class of thread is there: vCPUs, API, console,
#      virtio-blk queue and workers, virtio-net, virtio-balloon;
#   2. for each class, a forbidden call (KVMBOX_SANDBOX_SELFTEST=CLASS makes the thread open
#      a file for writing once its filter is on) stops the VM with status 4 and one line
#      naming the class and the call, and the call did not happen (the file is not there);
#   3. with --sandbox off the same call goes through (the file appears) and the guest runs
#      on: the check above can fail;
#   4. the user network's helper process (kvmbox-slirp): filtered, holding no fd of the VM's,
#      gone when the VM's process is killed; its forbidden call ends it (the VM runs on).
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
    # The user network's helper process (kvmbox-slirp): a child of the VM's, filtered too,
    # holding nothing of the VM's (no /dev/kvm, no guest memory, no disk) but its socket.
    hp=$(pgrep -P "$pid" -x kvmbox-slirp | head -1)
    if [ -z "$hp" ]; then
        bad "no kvmbox-slirp process under the VM's (--net user)"
    else
        hmode=$(awk '/^Seccomp:/ { print $2 }' /proc/"$hp"/status)
        [ "$hmode" = 2 ] && ok "the user network's helper (kvmbox-slirp) runs under its seccomp filter" ||
            bad "kvmbox-slirp's seccomp mode is '$hmode'"
        leaked=""
        for fd in /proc/"$hp"/fd/*; do
            n=$(basename "$fd") target=$(readlink "$fd")
            case $n:$target in
            0:/dev/null | 1:/dev/null | 2:* | 3:socket:*) ;;
            *:socket:*) ;; # libslirp's own (none before the guest talks)
            *) leaked="$leaked $n->$target" ;;
            esac
        done
        [ -z "$leaked" ] && ok "kvmbox-slirp holds only stdio and its socket (nothing of the VM's)" ||
            bad "kvmbox-slirp inherited:$leaked"
    fi
    # The filters let a working VM work: a reset rebuilds the vCPUs under new filters.
    "$KVMBOX" reset sb
    wait_output --count 2 "$T/run/sb.log" CTL-READY && ok "the guest reboots and runs on under the filters" ||
        bad "the guest did not come back after a reset: $(tail -3 "$T/run/sb.log")"
    # The helper ends with the VM's process, however it ends (here: SIGKILL).
    kill -9 "$pid"
    gone=0
    for _ in $(seq 1 300); do
        [ -n "$hp" ] && [ -d /proc/"$hp" ] && [ "$(awk '{ print $3 }' /proc/"$hp"/stat 2>/dev/null)" != Z ] ||
            { gone=1; break; }
        sleep 0.1
    done
    [ -n "$hp" ] && [ $gone = 1 ] && ok "kvmbox-slirp ends when the VM's process is killed" ||
        bad "kvmbox-slirp ${hp:-?} still runs 30 s after its VM was killed"
    rm -f "$T"/run/sb.*
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
# The helper's own filter: a forbidden call ends the helper, with a line in the VM's log; the
# VM runs on (without network), and the call did not happen.
rm -f "$MARK"
selftest "user network helper" "$T/st.err"
rc=$?
out=$(cat "$T/st.err")
if [ $rc = 143 ] && grep -q "its helper (kvmbox-slirp) made system call 257, which its seccomp sandbox forbids" <<<"$out" &&
    [ ! -e "$MARK" ]; then
    ok "user network helper: a forbidden call ends the helper and says so; the VM runs on"
else
    bad "user network helper: status $rc (want 143: the VM ran on), file made: $([ -e "$MARK" ] && echo yes || echo no), stderr: $(tail -2 <<<"$out")"
fi
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
