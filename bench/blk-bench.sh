#!/bin/bash
# virtio-blk benchmark (not a test): guest-tests/blk-bench.elf on the same image file under
# kvmbox and under QEMU (-accel kvm, q35, aio=io_uring), raw and qcow2, cache=none, side by
# side with the host's own throughput on the raw file (fio when installed, else dd with
# O_DIRECT, sequential 1M only). For each test: MB/s, IOPS and the VMM's CPU time per
# request (utime + stime of the VMM's threads other than the vCPUs, from /proc/PID/task, sampled when the
# guest prints BENCH-START and BENCH), then the kvmbox/QEMU ratios.
# Environment: KVMBOX, BUILD, SECS (per test, default 5), BENCH_SIZE (default 1G),
# PREALLOC (full or falloc, default full: reads hit written blocks), BENCH_DIR (default
# /var/tmp/kvmbox-blk-bench, on a file system with O_DIRECT; each run uses its own
# directory below it, removed at the end), FORMATS ("raw qcow2"),
# IRQ (1: the guest halts until the completion interrupt; 0: it polls), ROUNDS (alternating
# runs per VMM, the best of them is reported; default 2).
# Numbers vary with the host; on an emulating host (PVM) guest code is slow for both VMMs.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
export KVMBOX=${KVMBOX:-$BUILD/kvmbox}
export GT=$BUILD/guest-tests
export SECS=${SECS:-5} BENCH_SIZE=${BENCH_SIZE:-1G} PREALLOC=${PREALLOC:-full}
export BENCH_DIR=${BENCH_DIR:-/var/tmp/kvmbox-blk-bench} FORMATS=${FORMATS:-raw qcow2} IRQ=${IRQ:-1}
command -v qemu-img >/dev/null || { echo "blk-bench: qemu-img is not installed" >&2; exit 1; }
[ -x "$KVMBOX" ] || { echo "blk-bench: $KVMBOX is not built" >&2; exit 1; }
[ -f "$GT/blk-bench.elf" ] || { echo "blk-bench: $GT/blk-bench.elf is not built (make guest-tests)" >&2; exit 1; }
mkdir -p "$BENCH_DIR"

exec python3 - <<'PY'
import atexit, json, os, re, shutil, subprocess, sys, tempfile, threading, time

env = os.environ
KVMBOX, GT, SECS = env['KVMBOX'], env['GT'], int(env['SECS'])
SIZE, PREALLOC = env['BENCH_SIZE'], env['PREALLOC']
DIR = tempfile.mkdtemp(prefix='run.', dir=env['BENCH_DIR'])  # concurrent runs must not share images
atexit.register(shutil.rmtree, DIR, True)
FORMATS, IRQ = env['FORMATS'].split(), env['IRQ']
ROUNDS = int(env.get('ROUNDS', '2'))
QEMU = shutil.which('qemu-system-x86_64')
TCK = os.sysconf('SC_CLK_TCK')
KERNEL = os.path.join(GT, 'blk-bench.elf')
TESTS = [('seq-write-1M', 32), ('seq-read-1M', 32), ('rand-write-4K', 1), ('rand-write-4K', 32),
         ('rand-read-4K', 1), ('rand-read-4K', 32)]
TIMEOUT = SECS * len(TESTS) + 180


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def direct_io_ok(path):
    probe = os.path.join(path, '.direct')
    ok = sh('dd', 'if=/dev/zero', f'of={probe}', 'bs=4096', 'count=1', 'oflag=direct').returncode == 0
    if os.path.exists(probe):
        os.unlink(probe)
    return ok


CACHE = 'none' if direct_io_ok(DIR) else 'writeback'


def image(fmt):
    path = os.path.join(DIR, f'bench.{fmt}')
    if os.path.exists(path):
        os.unlink(path)
    r = sh('qemu-img', 'create', '-q', '-f', fmt, '-o', f'preallocation={PREALLOC}', path, SIZE)
    if r.returncode:
        sys.exit(f'blk-bench: qemu-img create {fmt}: {r.stderr.strip()}')
    return path


VCPU_THREAD = re.compile(r'^(vcpu\d+|CPU \d+/KVM)$')  # kvmbox's and QEMU's vCPU thread names


def cpu_us(pid):
    """utime + stime of the VMM's threads other than its vCPUs, in microseconds: on an
    emulating KVM the vCPU threads' time is mostly the guest's own, which is not the VMM's
    cost per request. Threads that ended are not counted (the I/O threads live throughout)."""
    total = 0
    for tid in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{tid}/comm') as f:
                if VCPU_THREAD.match(f.read().strip()):
                    continue
            with open(f'/proc/{pid}/task/{tid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total * 1e6 / TCK


def run_vm(cmd):
    """Runs a VMM; returns (exit status, {(test, qd): result}, output lines)."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    timer = threading.Timer(TIMEOUT, p.kill)
    timer.start()
    results, start, log = {}, {}, []
    for raw in p.stdout:
        line = raw.decode(errors='replace').rstrip('\r\n')
        log.append(line)
        m = re.match(r'BENCH-START (\S+) qd=(\d+)', line)
        if m:
            start[(m[1], int(m[2]))] = cpu_us(p.pid)
            continue
        m = re.match(r'BENCH (\S+) qd=(\d+) ops=(\d+) bytes=(\d+) usec=(\d+)', line)
        if m:
            key = (m[1], int(m[2]))
            results[key] = dict(ops=int(m[3]), bytes=int(m[4]), usec=int(m[5]),
                                cpu=cpu_us(p.pid) - start.get(key, 0))
    rc = p.wait()
    timer.cancel()
    # Children of the VMM may hold the image (and its lock) a moment longer: wait for the
    # whole process group before the next VMM opens the same file.
    for _ in range(100):
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    return rc, results, log


def kvmbox_cmd(img, fmt):
    return [KVMBOX, 'run', '--kernel', KERNEL, '--mem', '64M', '--timeout', str(TIMEOUT),
            '--cmdline', f'secs={SECS} irq={IRQ}', '--disk', f'{img},format={fmt},serial=rw0,cache={CACHE}' + env.get('KVMBOX_DISK_OPTS', '')]


def qemu_cmd(img, fmt):
    return [QEMU, '-name', 'bench,debug-threads=on', '-accel', 'kvm', '-cpu', 'host,-arch-capabilities', '-M', 'q35', '-m', '64M', '-nodefaults',
            '-no-user-config', '-nographic', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
            '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-kernel', KERNEL, '-append', f'secs={SECS} irq={IRQ}',
            '-drive', f'file={img},if=none,id=d0,format={fmt},cache={CACHE},aio=io_uring',
            '-device', 'virtio-blk-pci,drive=d0,serial=rw0']


def host_baseline(img):
    """The host's own numbers on the raw file: fio for all tests, else dd (sequential only)."""
    out = {}
    if shutil.which('fio'):
        for name, qd in TESTS:
            rw = {'seq-write-1M': 'write', 'seq-read-1M': 'read', 'rand-write-4K': 'randwrite',
                  'rand-read-4K': 'randread'}[name]
            bs = '1M' if name.startswith('seq') else '4k'
            r = sh('fio', '--name=b', f'--filename={img}', '--direct=1', '--ioengine=io_uring', f'--rw={rw}',
                   f'--bs={bs}', f'--iodepth={qd}', '--time_based', f'--runtime={SECS}', '--output-format=json')
            if r.returncode:
                continue
            job = json.loads(r.stdout)['jobs'][0]
            d = job['write' if 'write' in rw else 'read']
            ops = d['total_ios']
            cpu = (job['usr_cpu'] + job['sys_cpu']) / 100 * job['job_runtime'] * 1000
            out[(name, qd)] = dict(ops=ops, bytes=d['io_bytes'], usec=job['job_runtime'] * 1000, cpu=cpu)
        return out, 'fio (io_uring, O_DIRECT)'
    mib = os.path.getsize(img) >> 20
    for name, args in (('seq-write-1M', ['if=/dev/zero', f'of={img}', 'oflag=direct', 'conv=notrunc']),
                       ('seq-read-1M', [f'if={img}', 'of=/dev/null', 'iflag=direct'])):
        before = os.times()
        t0 = time.monotonic()
        r = sh('dd', 'bs=1M', f'count={mib}', *args)
        usec = (time.monotonic() - t0) * 1e6
        after = os.times()
        if r.returncode == 0:
            cpu = (after.children_user + after.children_system - before.children_user - before.children_system) * 1e6
            out[(name, 32)] = dict(ops=mib, bytes=mib << 20, usec=usec, cpu=cpu)
    return out, 'dd (O_DIRECT, sequential 1M at depth 1 only; install fio for the rest)'


def rate(r):
    if not r or not r['usec']:
        return None
    s = r['usec'] / 1e6
    return r['bytes'] / s / 1e6, r['ops'] / s, r['cpu'] / r['ops'] if r['ops'] else 0


def fmt_cell(r):
    x = rate(r)
    return f"{x[0]:9.1f} {x[1]:8.0f} {x[2]:8.1f}" if x else f"{'-':>9} {'-':>8} {'-':>8}"


def ratio(a, b, i):
    x, y = rate(a), rate(b)
    return f"{x[i] / y[i]:6.2f}x" if x and y and y[i] else f"{'-':>7}"


print(f"blk-bench: best of {ROUNDS} alternating runs per VMM, {SECS} s per test, {SIZE} images (preallocation={PREALLOC}) in {DIR}, cache={CACHE}, "
      f"guest {'waits by interrupts' if IRQ == '1' else 'polls'}; {os.cpu_count()} CPUs, "
      f"kernel {os.uname().release}, {time.strftime('%Y-%m-%d')}")
host, host_how = {}, ''
for fmt in FORMATS:
    img = image(fmt)
    if fmt == 'raw':
        host, host_how = host_baseline(img)
    # ROUNDS alternating runs of each VMM; each test keeps its best run (the host is shared
    # and noisy: the best of several is the most repeatable figure).
    runs = {'kvmbox': {}, 'qemu': {}}
    for rnd, (vmm, cmd) in enumerate(x for _ in range(ROUNDS) for x in
                                     (('kvmbox', kvmbox_cmd(img, fmt)), ('qemu', qemu_cmd(img, fmt) if QEMU else None))):
        if not cmd:
            if rnd < 2:
                print(f'  {vmm}: qemu-system-x86_64 is not installed')
            continue
        rc, res, log = run_vm(cmd)
        for key, r in res.items():
            best = runs[vmm].get(key)
            if not best or r['ops'] / max(r['usec'], 1) > best['ops'] / max(best['usec'], 1):
                runs[vmm][key] = r
        if rc != 1 or len(res) != len(TESTS):
            what = 'QEMU with -accel kvm' if vmm == 'qemu' else 'kvmbox'
            print(f'  {what} on {fmt} failed (exit status {rc}, {len(res)} of {len(TESTS)} results):')
            for line in log[-6:]:
                print(f'    | {line}')
    print()
    print(f"{fmt}: {'test':<14} {'qd':>3} | {'kvmbox MB/s':>11} {'IOPS':>8} {'cpu-us/op':>9} | "
          f"{'qemu MB/s':>9} {'IOPS':>8} {'cpu-us/op':>9} | {'MB/s k/q':>8} {'cpu k/q':>7}"
          + (f" | {'host MB/s':>9} {'IOPS':>8} {'cpu-us/op':>9}" if fmt == 'raw' else ''))
    for key in TESTS:
        k, q = runs['kvmbox'].get(key), runs['qemu'].get(key)
        line = f"{'':5} {key[0]:<14} {key[1]:>3} | {fmt_cell(k)}   | {fmt_cell(q)}   | {ratio(k, q, 0):>8} {ratio(k, q, 2):>7}"
        if fmt == 'raw':
            line += f" | {fmt_cell(host.get(key))}"
        print(line)
    os.unlink(img)
print()
print(f"host baseline: {host_how}; cpu-us/op is the user+system CPU time of the VMM's threads other "
      f"than its vCPUs per request (the host row: fio's), k/q = kvmbox / QEMU")
PY
