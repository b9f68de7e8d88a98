#!/usr/bin/env python3
"""The host side of bench/net-bench.sh for one backend, run inside the network namespace the
script made: runs guest-tests/net-bench.elf under kvmbox and QEMU (alternating, ROUNDS times
each), sinks the guest's transmitted datagrams, floods the guest during its rx tests, samples
each VMM's CPU time at the guest's BENCH-START/BENCH lines and prints a table.

  netbench.py BACKEND    BACKEND: bridge (kvmbox --net bridge=br0; QEMU -netdev tap on a tap
                         already on br0, TAP) or user (--net user / -netdev user with a hostfwd
                         for the flood)
Environment: KVMBOX, GT (the guest-tests directory), SECS, ROUNDS, TAP, IRQ, QEMU_ACCEL (kvm),
VHOST (1: QEMU's tap with vhost=on).
"""
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

env = os.environ
BACKEND = sys.argv[1]
KVMBOX, GT = env['KVMBOX'], env['GT']
SECS, ROUNDS, IRQ = int(env.get('SECS', '5')), int(env.get('ROUNDS', '2')), env.get('IRQ', '1')
TAP, ACCEL, VHOST = env.get('TAP', 'kvnb-tap0'), env.get('QEMU_ACCEL', 'kvm'), env.get('VHOST', '0') == '1'
QEMU = shutil.which('qemu-system-x86_64')
KERNEL = os.path.join(GT, 'net-bench.elf')
TCK = os.sysconf('SC_CLK_TCK')
TESTS = ['tx-1500', 'tx-64', 'rx-1500', 'rx-64']
PAYLOAD = {'rx-1500': 1472, 'rx-64': 18}
TIMEOUT = SECS * len(TESTS) + 120
MAC = '52:54:00:12:34:56'
if BACKEND == 'bridge':
    SINK, FLOOD, GUEST_ARGS = ('10.0.3.1', 5009), ('10.0.3.2', 5010), 'ip=10.0.3.2 peer=10.0.3.1 port=5009'
else:
    SINK, FLOOD, GUEST_ARGS = ('127.0.0.1', 5009), ('127.0.0.1', 6010), 'port=5009'
VCPU_THREAD = re.compile(r'^(vcpu\d+|CPU \d+/KVM)$')  # kvmbox's and QEMU's vCPU thread names


def cpu_us(pid):
    """(all threads, threads other than the vCPUs): utime + stime in microseconds. On an
    emulating KVM the vCPU threads' time is mostly the guest's own."""
    total = io = 0
    for tid in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{tid}/comm') as f:
                vcpu = bool(VCPU_THREAD.match(f.read().strip()))
            with open(f'/proc/{pid}/task/{tid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        t = int(fields[11]) + int(fields[12])
        total += t
        io += 0 if vcpu else t
    return total * 1e6 / TCK, io * 1e6 / TCK


def sink(count, nbytes, ready):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(SINK)
    ready.set()
    while True:
        n = len(s.recv(65536))
        with count.get_lock():
            count.value += 1
        nbytes.value += n


def flood(payload, sent, stop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    data = bytes(range(256)) * 6
    data = data[:payload]
    n = 0
    while not stop.is_set():
        for _ in range(256):
            try:
                s.sendto(data, FLOOD)
                n += 1
            except (BlockingIOError, OSError):
                time.sleep(0.0001)
                break
        sent.value = n


def kvmbox_cmd():
    net = 'bridge=br0' if BACKEND == 'bridge' else f'user,hostfwd=udp:127.0.0.1:{FLOOD[1]}-:5010'
    return [KVMBOX, 'run', '--kernel', KERNEL, '--mem', '64M', '--timeout', str(TIMEOUT),
            '--cmdline', f'secs={SECS} irq={IRQ} {GUEST_ARGS}', '--net', f'{net},mac={MAC}']


def qemu_cmd():
    if BACKEND == 'bridge':
        netdev = f'tap,id=n0,ifname={TAP},script=no,downscript=no' + (',vhost=on' if VHOST else '')
    else:
        netdev = f'user,id=n0,hostfwd=udp:127.0.0.1:{FLOOD[1]}-:5010'
    accel = ['-accel', 'kvm', '-cpu', 'host,-arch-capabilities'] if ACCEL == 'kvm' else ['-accel', 'tcg']
    return [QEMU, '-name', 'bench,debug-threads=on', *accel, '-M', 'q35', '-m', '64M', '-nodefaults',
            '-no-user-config', '-nographic', '-serial', 'stdio', '-monitor', 'none', '-no-reboot',
            '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-kernel', KERNEL,
            '-append', f'secs={SECS} irq={IRQ} {GUEST_ARGS}',
            '-netdev', netdev, '-device', f'virtio-net-pci,netdev=n0,mac={MAC}']


def run_vm(cmd):
    """Runs one VMM; returns (exit status, {test: result}, output lines)."""
    count, nbytes, ready = mp.Value('Q', 0), mp.Value('Q', 0), mp.Event()
    sk = mp.Process(target=sink, args=(count, nbytes, ready), daemon=True)
    sk.start()
    ready.wait(5)
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    timer = threading.Timer(TIMEOUT, p.kill)
    timer.start()
    results, start, log, fl = {}, {}, [], None
    for raw in p.stdout:
        line = raw.decode(errors='replace').rstrip('\r\n')
        log.append(line)
        m = re.match(r'BENCH-START (\S+)', line)
        if m:
            name = m[1]
            if name in PAYLOAD:
                sent, stop = mp.Value('Q', 0), mp.Event()
                fl = (mp.Process(target=flood, args=(PAYLOAD[name], sent, stop), daemon=True), sent, stop)
                fl[0].start()
            start[name] = (cpu_us(p.pid), count.value, nbytes.value, time.monotonic())
            continue
        m = re.match(r'BENCH (\S+) frames=(\d+) bytes=(\d+) usec=(\d+)', line)
        if m and m[1] in start:
            name = m[1]
            (c_all, c_io), c0, b0, t0 = start[name]
            a, i = cpu_us(p.pid)
            r = dict(frames=int(m[2]), bytes=int(m[3]), usec=int(m[4]), cpu_all=a - c_all, cpu_io=i - c_io,
                     host_frames=count.value - c0, host_bytes=nbytes.value - b0, host_secs=time.monotonic() - t0)
            if fl and name in PAYLOAD:
                fl[2].set()
                fl[0].join(5)
                r['host_frames'] = fl[1].value
                fl = None
            results[name] = r
    rc = p.wait()
    timer.cancel()
    if fl:
        fl[2].set()
    sk.terminate()
    return rc, results, log


def cell(r):
    if not r or not r['usec'] or not r['frames']:
        return f"{'-':>8} {'-':>7} {'-':>7} {'-':>7} {'-':>7}"
    s = r['usec'] / 1e6
    host = r['host_frames'] / r['host_secs'] / 1e3 if r['host_secs'] else 0
    return (f"{r['frames'] / s / 1e3:8.1f} {r['bytes'] / s / 1e6:7.2f} {host:7.1f} "
            f"{r['cpu_io'] / r['frames']:7.2f} {r['cpu_all'] / r['frames']:7.2f}")


def ratio(a, b, f):
    try:
        return f'{f(a) / f(b):6.2f}x'
    except (TypeError, ZeroDivisionError, KeyError):
        return f"{'-':>7}"


def main():
    runs = {'kvmbox': {}, 'qemu': {}}
    plan = [(v, c) for _ in range(ROUNDS) for v, c in (('kvmbox', kvmbox_cmd()), ('qemu', qemu_cmd() if QEMU else None))]
    for vmm, cmd in plan:
        if not cmd:
            continue
        rc, res, log = run_vm(cmd)
        for name, r in res.items():
            best = runs[vmm].get(name)
            if not best or r['frames'] / max(r['usec'], 1) > best['frames'] / max(best['usec'], 1):
                runs[vmm][name] = r
        if rc != 1 or len(res) != len(TESTS):
            print(f'  {vmm} ({BACKEND}) failed: exit status {rc}, {len(res)} of {len(TESTS)} results')
            for line in log[-8:]:
                print(f'    | {line}')
    print(f"{BACKEND + ':':<8} {'test':<8} | {'kvmbox kpps':>11} {'MB/s':>7} {'host':>7} {'io-us':>7} {'all-us':>7} | "
          f"{'qemu kpps':>9} {'MB/s':>7} {'host':>7} {'io-us':>7} {'all-us':>7} | {'kpps k/q':>8} {'io k/q':>7}")
    pps = lambda r: r['frames'] / r['usec']
    io = lambda r: r['cpu_io'] / r['frames']
    for name in TESTS:
        k, q = runs['kvmbox'].get(name), runs['qemu'].get(name)
        print(f"{'':<8} {name:<8} | {cell(k):>43} | {cell(q):>41} | {ratio(k, q, pps):>8} {ratio(k, q, io):>7}")

if __name__ == '__main__':
    main()
