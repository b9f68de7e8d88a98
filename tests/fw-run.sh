# shellcheck shell=bash disable=SC2034 # its variables are for the scripts that source it
# Sourced by the tests/t-firmware*.sh scripts: temporary directory, PASS/FAIL/SKIP, and runs
# of kvmbox and QEMU whose time limit follows the guest's progress (no console output and no
# CPU used for FW_IDLE seconds, default 240); FW_CAP seconds in all (default 1500) only
# catches a guest that runs for ever (a busy host makes a boot slower, not quieter).
set -u
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
GT=$BUILD/guest-tests
IDLE=${FW_IDLE:-240}
CAP=${FW_CAP:-1500}
T=$(mktemp -d /tmp/kvmbox-firmware.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/cfg
mkdir -p "$KVMBOX_RUNTIME_DIR" "$KVMBOX_CONFIG_DIR"
bg_pids=""
cleanup() {
    local p
    for p in $bg_pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    # kvmbox's stderr went to files: show any sanitizer report, so tests/run-all.sh sees it
    cat "$T"/*.err 2>/dev/null | grep -E -A3 'runtime error:|ERROR: (Address|Leak)Sanitizer'
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
pass() { echo "PASS: $FW_WHAT: $1"; }
fail() { echo "FAIL: $FW_WHAT: $1"; fails=$((fails + 1)); }
skip() { echo "SKIP: $FW_WHAT: $1"; }

[ -c /dev/kvm ] || { skip "no /dev/kvm on this host"; exit 77; }
[ -x "$KVMBOX" ] || { fail "$KVMBOX is not built"; exit 1; }
. tests/fw-images.sh
missing=$(fw_images_missing)
[ -z "$missing" ] || { skip "missing tools:$missing (scripts/deps.sh installs them)"; exit 77; }
[ -f /usr/share/seabios/bios-256k.bin ] || { skip "no SeaBIOS (Debian package seabios)"; exit 77; }
have_qemu=0
command -v qemu-system-x86_64 >/dev/null && have_qemu=1
native_why=$(scripts/host-native.sh) && native=1 || native=0

# cpu_ticks PID: the CPU time PID has used (user + system, all threads), in clock ticks.
cpu_ticks() {
    local f
    read -r -a f <"/proc/$1/stat" 2>/dev/null || { echo 0; return; }
    # fields after "(comm)": the comm may hold spaces, so count from the end of the line
    local n=${#f[@]} i
    for ((i = 0; i < n; i++)); do [[ ${f[i]} == *')' ]] && break; done
    echo $((f[i + 12] + f[i + 13]))
}

# watch PID LOG: waits for PID while it makes progress: LOG grows or the VM uses CPU (a boot
# loader reading a disk through the BIOS runs for minutes on an emulating host without a
# word). Kills it after IDLE seconds with neither, or CAP in all. Sets $rc (the exit status,
# or "stalled" / "capped") and $secs.
watch() {
    local pid=$1 log=$2 t0=$SECONDS last=-1 size quiet=0 cpu lastcpu=-1
    rc=""
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        size=$(stat -c %s "$log" 2>/dev/null || echo 0)
        cpu=$(cpu_ticks "$pid")
        if [ "$size" != "$last" ] || [ "$cpu" != "$lastcpu" ]; then
            last=$size lastcpu=$cpu quiet=0
        else
            quiet=$((quiet + 1))
        fi
        if [ $quiet -ge "$IDLE" ]; then rc=stalled; break; fi
        if [ $((SECONDS - t0)) -ge "$CAP" ]; then rc=capped; break; fi
    done
    if [ -n "$rc" ]; then
        kill "$pid" 2>/dev/null; sleep 1; kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    else
        wait "$pid"; rc=$?
    fi
    secs=$((SECONDS - t0))
}

# run_kvmbox NAME ARGS...: kvmbox run with the console in $T/NAME.log (stderr in .err).
run_kvmbox() {
    local name=$1
    shift
    "$KVMBOX" run --name "fw-$name-$$" "$@" </dev/null >"$T/$name.log" 2>"$T/$name.err" &
    watch $! "$T/$name.log"
}

# run_qemu NAME ARGS...: QEMU TCG, i440FX with SeaBIOS, the debug-exit port, COM1 in the log.
run_qemu() {
    local name=$1
    shift
    qemu-system-x86_64 -M pc -accel tcg -m 256 -display none -monitor none -no-reboot \
        -serial "file:$T/$name.log" -device isa-debug-exit,iobase=0xf4,iosize=4 "$@" \
        </dev/null >"$T/$name.err" 2>&1 &
    watch $! "$T/$name.log"
}

# expect NAME WHAT STATUS TEXT...: the run ended with STATUS and its console shows each TEXT.
expect() {
    local name=$1 what=$2 want=$3 t bad=""
    shift 3
    for t in "$@"; do grep -aqF -- "$t" "$T/$name.log" || bad="$bad [$t]"; done
    if [ "$rc" = "$want" ] && [ -z "$bad" ]; then
        pass "$what (${secs}s)"
    else
        fail "$what: status $rc (want $want)${bad:+, console lacks$bad} after ${secs}s"
        tr -d '\r' <"$T/$name.log" | grep -av '^\s*$' | tail -4 | sed 's/^/    | /'
        tail -2 "$T/$name.err" | sed 's/^/    ! /'
    fi
}

