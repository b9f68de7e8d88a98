#!/bin/bash
# Save and restore times (docs/savestate.md, docs/benchmarks.md): for a 256 MiB and a 2 GiB
# guest that touched 64 MiB (guest-tests/savestate.c, printing without pause), the time of
# `kvmbox save` (until the VM has ended), the state file's size and blocks, then RUNS restores
# of that file: the time from starting `kvmbox restore` to the guest's next line in its log,
# and the VM's RSS then; the same once with --prefault. Not a test: numbers vary with the host
# and its load. Environment: RUNS (default 10), MEMS (default "256M 2G").
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KVMBOX=$(realpath "${KVMBOX:-$BUILD/kvmbox}")
K=$(realpath "$BUILD/guest-tests/savestate.elf")
T=$(mktemp -d /tmp/kvmbox-svbench.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
trap '"$KVMBOX" kill bs >/dev/null 2>&1; rm -rf "$T"' EXIT
echo "host: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$KVMBOX" "$K" "$T" "${RUNS:-10}" ${MEMS:-256M 2G} <<'EOF'
import json, os, subprocess, sys, time, statistics
kvmbox, kernel, tmp, runs, mems = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
log = f"{tmp}/run/bs.log"

def lines():
    try:
        with open(log, 'rb') as f:
            return f.read().count(b'\nCOUNT ')
    except FileNotFoundError:
        return 0

def wait_lines(n, cap=120):
    end = time.monotonic() + cap
    while lines() < n:
        if time.monotonic() > end:
            sys.exit(f"no output: {log}")
        time.sleep(0.0005)

def vm_pid():
    out = subprocess.run([kvmbox, 'info', 'bs', '--json'], capture_output=True, text=True).stdout
    try:
        return json.loads(out)['pid']
    except (ValueError, KeyError):
        return None

def rss_mib(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith('VmRSS'):
            return int(l.split()[1]) / 1024

def gone():
    end = time.monotonic() + 60
    while subprocess.run([kvmbox, 'info', 'bs'], capture_output=True, text=True).stdout.find('shut off') < 0:
        if time.monotonic() > end:
            sys.exit("the VM did not end")
        time.sleep(0.01)

for mem in mems:
    state = f"{tmp}/bs-{mem}.state"
    n = lines()
    t = time.monotonic()
    subprocess.run([kvmbox, 'run', '--daemonize', '--name', 'bs', '--kernel', kernel, '--mem', mem,
                    '--cmdline', 'touch=64 period=0'], check=True, capture_output=True)
    wait_lines(n + 1)
    print(f"{mem}: for comparison, run --daemonize to the first line (boot, touch 64 MiB): "
          f"{(time.monotonic() - t) * 1000:.0f} ms")
    wait_lines(lines() + 50)
    t = time.monotonic()
    subprocess.run([kvmbox, 'save', 'bs', state], check=True, capture_output=True)
    save_ms = (time.monotonic() - t) * 1000
    gone()
    st = os.stat(state)
    print(f"{mem}: save {save_ms:.0f} ms; file {st.st_size >> 20} MiB, {st.st_blocks * 512 >> 20} MiB on disk")
    for prefault in (False, True):
        times, rss = [], []
        for i in range(1 if prefault else runs):
            n = lines()
            t = time.monotonic()
            subprocess.run([kvmbox, 'restore', state] + (['--prefault'] if prefault else []),
                           check=True, capture_output=True)
            wait_lines(n + 1)
            times.append((time.monotonic() - t) * 1000)
            pid = vm_pid()
            rss.append(rss_mib(pid) if pid else 0)
            subprocess.run([kvmbox, 'kill', 'bs'], capture_output=True)
            gone()
        what = 'restore --prefault' if prefault else f'restore x{runs}'
        print(f"{mem}: {what}: to next guest line median {statistics.median(times):.1f} ms "
              f"(min {min(times):.1f}, max {max(times):.1f}); RSS then median {statistics.median(rss):.1f} MiB "
              f"(first {rss[0]:.1f}, last {rss[-1]:.1f})")
EOF
