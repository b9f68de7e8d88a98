#!/bin/bash
# Save and restore times (docs/savestate.md, docs/benchmarks.md), kvmbox against QEMU, for a
# 256 MiB and a 2 GiB guest that touched 64 MiB (guest-tests/savestate.elf mode=dots: it prints
# without pause, a few instructions apart):
#  1. kvmbox CLI: the time of `kvmbox save` (until the VM has ended), the state file's size and
#     blocks, then RUNS restores of that file: from starting `kvmbox restore` to the guest's
#     next output in its log, and the VM's RSS then; the same once with --prefault.
#  2. kvmbox library (bench/restorelib.c): kvmbox_vm_create from the state file to the guest's
#     first output, in one process (no process start, no daemonizing), RUNS times; then
#     LEAK_RUNS (default 100) restores of the 256 MiB file in a row: the process's RSS and open
#     fds after the first and after the last.
#  3. QEMU on the same guest (qemu-system-x86_64 -M q35 -accel kvm -cpu host,-arch-capabilities):
#     `stop` + `migrate "exec:cat > FILE"` over QMP (migration bandwidth unlimited, as libvirt
#     sets it for `virsh save`) until query-migrate says completed, then RUNS restores with
#     -incoming "exec:cat FILE" and, once loaded, `cont` (the saved VM was stopped, as virsh
#     save/restore do it): from starting QEMU to the guest's next output, and QEMU's RSS.
#  Then the ratios kvmbox/QEMU. Not a test: numbers vary with the host and its load.
# Environment: RUNS (default 10), MEMS (default "256M 2G"), LEAK_RUNS, SKIP_QEMU=1.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KVMBOX=$(realpath "${KVMBOX:-$BUILD/kvmbox}")
K=$(realpath "$BUILD/guest-tests/savestate.elf")
T=$(mktemp -d /tmp/kvmbox-svbench.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
trap '"$KVMBOX" kill bs >/dev/null 2>&1; rm -rf "$T"' EXIT
QEMU=$(command -v qemu-system-x86_64 || true)
[ -z "${SKIP_QEMU:-}" ] || QEMU=""
cc -O2 -D_GNU_SOURCE -Iinclude -o "$T/restorelib" bench/restorelib.c "$BUILD/libkvmbox.a" \
    -lz -ljson-c -luring -pthread || exit 1
echo "kvmbox $($KVMBOX --version | cut -d' ' -f2), $(nproc) CPUs, kernel $(uname -r), $(date -u '+%F %H:%M UTC')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$KVMBOX" "$K" "$T" "${RUNS:-10}" "${LEAK_RUNS:-100}" "$QEMU" ${MEMS:-256M 2G} <<'EOF'
import json, os, socket, subprocess, sys, time, statistics
kvmbox, kernel, tmp, runs, leak_runs, qemu, mems = (sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
                                                    int(sys.argv[5]), sys.argv[6], sys.argv[7:])
res = {}  # (mem, what) -> number, for the ratios
log = f"{tmp}/run/bs.log"

# The guest runs in mode=dots: it prints all the time, a few instructions apart, so "its next
# output" is the first byte it prints after a restore (a COUNT line would take ~20 ms of the
# guest's own emulated time here).
def size(path=None):
    try:
        return os.stat(path or log).st_size
    except FileNotFoundError:
        return 0

def ready(path=None):
    try:
        with open(path or log, 'rb') as f:
            return f.read().count(b'SAVESTATE-READY')
    except FileNotFoundError:
        return 0

def wait_until(cond, what, cap=300):
    end = time.monotonic() + cap
    while not cond():
        if time.monotonic() > end:
            sys.exit(f"no output: {what}")
        time.sleep(0.0002)

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

def mib(mem):
    return int(mem[:-1]) << (10 if mem[-1] == 'G' else 0)

print("\n1. kvmbox CLI (times in ms)")
for mem in mems:
    state = f"{tmp}/bs-{mem}.state"
    n = ready()
    t = time.monotonic()
    subprocess.run([kvmbox, 'run', '--daemonize', '--name', 'bs', '--kernel', kernel, '--mem', mem,
                    '--cmdline', 'mode=dots touch=64'], check=True, capture_output=True)
    wait_until(lambda: ready() > n, log)
    print(f"{mem}: for comparison, run --daemonize until the guest has touched 64 MiB: "
          f"{(time.monotonic() - t) * 1000:.0f} ms")
    n = size()
    wait_until(lambda: size() > n + 2000, log)
    t = time.monotonic()
    subprocess.run([kvmbox, 'save', 'bs', state], check=True, capture_output=True)
    save_ms = (time.monotonic() - t) * 1000
    gone()
    st = os.stat(state)
    print(f"{mem}: save {save_ms:.0f} ms; file {st.st_size >> 20} MiB, {st.st_blocks * 512 >> 20} MiB on disk")
    res[mem, 'save'] = save_ms
    for prefault in (False, True):
        times, rss = [], []
        for i in range(1 if prefault else runs):
            n = size()
            t = time.monotonic()
            subprocess.run([kvmbox, 'restore', state] + (['--prefault'] if prefault else []),
                           check=True, capture_output=True)
            wait_until(lambda: size() > n, log)
            times.append((time.monotonic() - t) * 1000)
            pid = vm_pid()
            rss.append(rss_mib(pid) if pid else 0)
            subprocess.run([kvmbox, 'kill', 'bs'], capture_output=True)
            gone()
        what = 'restore --prefault' if prefault else f'restore x{runs}'
        print(f"{mem}: {what}: to next guest output median {statistics.median(times):.1f} ms "
              f"(min {min(times):.1f}, max {max(times):.1f}); RSS then median {statistics.median(rss):.1f} MiB "
              f"(first {rss[0]:.1f}, last {rss[-1]:.1f})")
        if not prefault:
            res[mem, 'restore'] = statistics.median(times)
            res[mem, 'rss'] = statistics.median(rss)

print("\n2. kvmbox library: kvmbox_vm_create from the state file, in process (bench/restorelib.c)")
def restorelib(mem, n):
    out = subprocess.run([f"{tmp}/restorelib", kernel, str(mib(mem)), f"{tmp}/lib-{mem}.state", str(n)],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"restorelib failed: {out.stderr.strip()}")
    return {l.split()[0]: l.split()[1:] for l in out.stdout.splitlines()}
for mem in mems:
    r = restorelib(mem, runs)
    c, o = r['create_ms'], r['output_ms']
    print(f"{mem}: create {c[0]} ms (min {c[1]}, max {c[2]}); create to first guest output {o[0]} ms "
          f"(min {o[1]}, max {o[2]}); RSS while running {float(r['rss_at_output_kib'][0]) / 1024:.1f} MiB "
          f"above the process's")
    res[mem, 'lib'] = float(o[0])
r = restorelib(mems[0], leak_runs)
print(f"{mems[0]}: {leak_runs} restores in a row: open fds {r['fds'][0]} -> {r['fds'][1]}, RSS "
      f"{r['rss_kib'][0]} -> {r['rss_kib'][1]} KiB (after the first, after the last); create to first "
      f"output median {r['output_ms'][0]} ms")

if not qemu:
    print("\n3. QEMU: not installed (or SKIP_QEMU): no comparison")
    sys.exit(0)
print("\n3. QEMU, -M q35 -accel kvm -cpu host,-arch-capabilities (times in ms)")

class QMP:
    def __init__(self, path):
        end = time.monotonic() + 60
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.01)
        self.f = self.s.makefile('rw')
        self.f.readline()
        self.cmd('qmp_capabilities')
    def cmd(self, name, **args):
        self.f.write(json.dumps({'execute': name, 'arguments': args}) + '\n')
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if 'return' in r:
                return r['return']
            if 'error' in r:
                sys.exit(f"QMP {name}: {r['error']}")

def qemu_args(mem, log, qmp):
    return [qemu, '-M', 'q35', '-accel', 'kvm', '-cpu', 'host,-arch-capabilities', '-nodefaults',
            '-no-user-config', '-display', 'none', '-m', mem, '-serial', f'file:{log}',
            '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-kernel', kernel,
            '-append', 'mode=dots touch=64', '-qmp', f'unix:{qmp},server=on,wait=off']

def wait_size(log, n, p):
    last, seen = time.monotonic(), -1
    while True:
        c = size(log)
        if c >= n:
            return
        if c != seen:
            last, seen = time.monotonic(), c
        if time.monotonic() - last > 300 or p.poll() is not None:
            p.kill()
            sys.exit(f"QEMU: no progress in {log}: {p.stderr.read(500) if p.poll() is not None else ''}")
        time.sleep(0.0005)

def rss_of(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith('VmRSS'):
            return int(l.split()[1]) / 1024

for mem in mems:
    state, log, qmp = f"{tmp}/q-{mem}.state", f"{tmp}/q-{mem}.log", f"{tmp}/q.qmp"
    p = subprocess.Popen(qemu_args(mem, log, qmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    q = QMP(qmp)
    while not ready(log):
        wait_size(log, size(log) + 1, p)
    wait_size(log, size(log) + 2000, p)
    q.cmd('migrate-set-parameters', **{'max-bandwidth': 1 << 40})
    t = time.monotonic()
    q.cmd('stop')
    q.cmd('migrate', uri=f'exec:cat > {state}')
    while q.cmd('query-migrate').get('status') not in ('completed', 'failed'):
        time.sleep(0.001)
    save_ms = (time.monotonic() - t) * 1000
    status = q.cmd('query-migrate').get('status')
    q.cmd('quit')
    p.wait()
    if status != 'completed':
        sys.exit(f"QEMU: migration {status}")
    st = os.stat(state)
    print(f"{mem}: stop + migrate to file {save_ms:.0f} ms; file {st.st_size / 1048576:.1f} MiB")
    res[mem, 'qsave'] = save_ms
    times, rss = [], []
    for i in range(runs):
        rlog = f"{tmp}/q-{mem}-r.log"
        if os.path.exists(rlog):
            os.unlink(rlog)
        t = time.monotonic()
        p = subprocess.Popen(qemu_args(mem, rlog, qmp) + ['-incoming', f'exec:cat {state}'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The source was stopped (as virsh save does), so the loaded VM stays paused until
        # `cont`, which virsh restore sends once the incoming migration is done.
        q = QMP(qmp)
        while q.cmd('query-status').get('status') == 'inmigrate':
            time.sleep(0.0005)
        q.cmd('cont')
        wait_size(rlog, 1, p)
        times.append((time.monotonic() - t) * 1000)
        rss.append(rss_of(p.pid))
        p.kill()
        p.wait()
    print(f"{mem}: -incoming x{runs}: to next guest output median {statistics.median(times):.1f} ms "
          f"(min {min(times):.1f}, max {max(times):.1f}); RSS then median {statistics.median(rss):.1f} MiB")
    res[mem, 'qrestore'] = statistics.median(times)
    res[mem, 'qrss'] = statistics.median(rss)

print("\nkvmbox / QEMU (below 1: kvmbox takes less)")
for mem in mems:
    print(f"{mem}: save {res[mem, 'save'] / res[mem, 'qsave']:.2f}x; restore to next output (CLI) "
          f"{res[mem, 'restore'] / res[mem, 'qrestore']:.3f}x, (library) {res[mem, 'lib'] / res[mem, 'qrestore']:.3f}x; "
          f"RSS after restore {res[mem, 'rss'] / res[mem, 'qrss']:.3f}x")
EOF
