#!/usr/bin/python3 -S
"""Time limits that follow progress, not this host's speed (the one mechanism for tests/).

A test must never fail because the host is busy, and must never hang CI. So no test guesses
how long something takes; it stops waiting when the thing it waits for has STOPPED MAKING
PROGRESS, with a generous overall cap as the last resort:

  progress.py run [LIMITS] [--watch FILE]... [--tree] [--name WHAT] -- CMD [ARG...]
      Runs CMD (stdin, stdout and stderr inherited) and returns its exit status. Progress is
      new output: the size of stdout when it is a regular file, and of every --watch FILE,
      changes. When a limit is reached: one line on stderr ("progress: WHAT: ..."), then
      SIGTERM to CMD only, once, and SIGKILL after --grace seconds if it is still there;
      status 124 (as timeout(1)). CMD is never sent SIGCONT and its process group is never
      signalled (LeakSanitizer's exit check can hang for ever when it is: see git log
      73b3da6). SIGTERM, SIGINT and SIGHUP sent to progress.py are passed on to CMD the
      same way. --tree: adopt CMD's daemonized descendants (PR_SET_CHILD_SUBREAPER), count
      their CPU time, and when CMD has ended, stop whatever of them is still running after
      --grace seconds (one line names them).

  progress.py wait [LIMITS] [--pid PID] [--count N] FILE REGEX
      Waits until at least N lines of FILE (default 1) match REGEX (Python re.search); 0
      when they do, 1 when a limit is reached or PID has ended first (one line on stderr
      says which). Progress is FILE growing, and with --cpu-quiet, PID using the CPU.
  progress.py wait [LIMITS] --pid PID FILE
      Waits until PID has ended (0), while FILE makes progress (1 on a limit).

LIMITS (seconds):
  --quiet N      fail when there was no progress for N s (default 60).
  --cpu-quiet C  also count CPU time as progress: a stretch without output may last until
                 the watched processes (run: CMD and its descendants; wait: --pid) have used
                 C CPU-seconds in it; only the seconds in which they used (almost) no CPU
                 count toward --quiet. For guests that compute in silence for long (a bzImage
                 decompressing itself under an emulating KVM): a busy host slows them down
                 but never makes them look idle, while a deadlocked VMM is idle at once and
                 a spinning one runs out of CPU budget.
  --cap N        fail after N s in any case (default 600).
  --grace N      run: seconds between SIGTERM and SIGKILL (default 10).

From bash, source tests/lib/progress.sh: progress_run, wait_output and poll_until.
"""
import errno
import os
import select
import signal
import stat
import sys
import time

CLK_TCK = os.sysconf('SC_CLK_TCK')
IDLE_CPU = 0.02      # a second in which the watched processes used less CPU than this is idle
TICK = 0.2           # how often sizes (and, once a second, CPU times) are sampled
PR_SET_CHILD_SUBREAPER = 36


def say(what, msg):
    sys.stderr.write(f'progress: {what}: {msg}\n')
    sys.stderr.flush()


def proc_stat(pid):
    """(ppid, cpu seconds including reaped children) of a live process, or None."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f:
            s = f.read()
    except OSError:
        return None
    f = s[s.rindex(b')') + 2:].split()
    # fields after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15)
    return int(f[1]), sum(int(x) for x in f[11:15]) / CLK_TCK


def tree_cpu(root):
    """CPU seconds used by root's live descendants (root excluded), with what they reaped."""
    kids, cpu = {}, {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                kids.setdefault(st[0], []).append(int(d))
                cpu[int(d)] = st[1]
    total, todo = 0.0, list(kids.get(root, []))
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo.extend(kids.get(p, []))
    return total


def descendants(root):
    kids = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                kids.setdefault(st[0], []).append(int(d))
    out, todo = [], list(kids.get(root, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def comm(pid):
    try:
        with open(f'/proc/{pid}/comm') as f:
            return f.read().strip()
    except OSError:
        return '?'


class Progress:
    """The limits: call tick(sizes, cpu) about every TICK s; it returns why to stop, or None."""

    def __init__(self, a):
        self.a = a
        self.start = self.last = time.monotonic()
        self.sizes = None
        self.idle = 0.0          # seconds without output in which the CPU was not used either
        self.busy_cpu = 0.0      # CPU seconds used since the last output
        self.cpu = None
        self.cpu_at = self.start

    def tick(self, sizes, cpu_fn):
        now = time.monotonic()
        # Nothing to watch (stdout not a file, no --watch) and no CPU rule: only the cap applies.
        if sizes != self.sizes or (not sizes and self.a.cpu_quiet is None):
            self.sizes, self.idle, self.busy_cpu, self.last = sizes, 0.0, 0.0, now
        if self.a.cpu_quiet is None:
            self.idle = now - self.last
        elif now - self.cpu_at >= 1.0 or self.cpu is None:
            cpu = cpu_fn()
            if self.cpu is not None:
                used = max(0.0, cpu - self.cpu)
                if self.last < self.cpu_at:          # the whole interval was silent
                    self.busy_cpu += used
                    if used < IDLE_CPU * (now - self.cpu_at):
                        self.idle += now - self.cpu_at
            self.cpu, self.cpu_at = cpu, now
        if now - self.start >= self.a.cap:
            return f'still running after the overall cap of {self.a.cap:g} s'
        if self.idle >= self.a.quiet:
            return (f'no new output for {now - self.last:.0f} s'
                    + ('' if self.a.cpu_quiet is None else ' and no CPU used')
                    + f' (limit {self.a.quiet:g} s)')
        if self.a.cpu_quiet is not None and self.busy_cpu >= self.a.cpu_quiet:
            return (f'no new output while it used {self.busy_cpu:.0f} CPU-seconds '
                    f'(limit {self.a.cpu_quiet:g}; {now - self.last:.0f} s)')
        return None


def file_size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def run(a):
    cmd = a.cmd
    if not cmd:
        sys.exit('progress.py run: no command')
    what = a.name or os.path.basename(cmd[0])
    if a.tree:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    watch_fd1 = False
    try:
        watch_fd1 = stat.S_ISREG(os.fstat(1).st_mode)
    except OSError:
        pass
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    os.set_blocking(rfd, False)
    signal.set_wakeup_fd(wfd)
    got = []
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda n, f: got.append(n))
    signal.signal(signal.SIGCHLD, lambda n, f: None)
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE,
                  signal.SIGXFSZ):
            signal.signal(s, signal.SIG_DFL)   # Python ignores SIGPIPE; exec would keep that
        os.close(rfd)
        os.close(wfd)
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            sys.stderr.write(f'progress: {cmd[0]}: {e.strerror}\n')
            os._exit(127 if e.errno == errno.ENOENT else 126)
    p = Progress(a)
    status, stopped, term_at, sent = None, False, None, set()

    def sizes():
        s = [os.fstat(1).st_size] if watch_fd1 else []
        return s + [file_size(w) for w in a.watch]

    def reap():
        nonlocal status
        while True:
            try:
                r, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if r == 0:
                return
            if r == pid:
                status = os.waitstatus_to_exitcode(st)

    def term(sig, why=None):
        nonlocal term_at
        if why:
            say(what, why + '; stopping it')
        if sig not in sent and status is None:
            sent.add(sig)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if term_at is None:
            term_at = time.monotonic()

    while status is None:
        select.select([rfd], [], [], TICK)
        try:
            os.read(rfd, 512)
        except BlockingIOError:
            pass
        reap()
        if status is not None:
            break
        while got:
            term(got.pop(0))
        if term_at is None:
            why = p.tick(sizes(), lambda: tree_cpu(os.getpid()))
            if why:
                stopped = True
                term(signal.SIGTERM, why)
        elif time.monotonic() - term_at >= a.grace and signal.SIGKILL not in sent:
            say(what, f'still there {a.grace:g} s after the signal; SIGKILL')
            term(signal.SIGKILL)
    if a.tree:
        left_behind(a, what)
    if stopped:
        return 124
    return status if status >= 0 else 128 - status


def left_behind(a, what):
    """--tree: CMD has ended; stop the descendants it left (daemonized VMs), after a grace."""
    deadline = time.monotonic() + a.grace
    left = descendants(os.getpid())
    while left and time.monotonic() < deadline:
        time.sleep(TICK)
        reap_all()
        left = descendants(os.getpid())
    if not left:
        return
    say(what, 'left running when it ended, now stopped: '
        + ', '.join(f'{p} ({comm(p)})' for p in left))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for q in left:
            try:
                os.kill(q, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + a.grace
        while left and time.monotonic() < deadline:
            time.sleep(TICK)
            reap_all()
            left = descendants(os.getpid())
        if not left:
            return


def reap_all():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def alive(pid):
    """pid runs (a zombie no longer does)."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as f:
            s = f.read()
    except OSError:
        return False
    return s[s.rindex(b')') + 2:s.rindex(b')') + 3] not in (b'Z', b'X')


def wait(a):
    rx = None
    if a.regex is not None:
        import re
        rx = re.compile(a.regex)
    what = a.name or (f'waiting for /{a.regex}/ in {a.file}' if rx else
                      f'waiting for process {a.pid} to end (progress: {a.file})')
    p = Progress(a)
    pos, n, part = 0, 0, b''

    def pid_cpu():
        st = proc_stat(a.pid) if a.pid else None
        return st[1] if st else 0.0

    def matches(line):
        return rx.search(line.decode(errors='replace').rstrip('\r')) is not None

    while True:
        ended = a.pid is not None and not alive(a.pid)   # before reading: no last line missed
        try:
            with open(a.file, 'rb') as f:
                f.seek(pos)
                data = f.read()
        except OSError:
            data = b''
        if data:
            pos += len(data)
            lines = (part + data).split(b'\n')
            part = lines.pop()
            if rx:
                n += sum(1 for line in lines if matches(line))
        if rx and (n >= a.count or (part and matches(part) and n + 1 >= a.count)):
            return 0
        if ended:
            if not rx:
                return 0
            say(what, f'process {a.pid} ended first ({n} of {a.count} seen)')
            return 1
        why = p.tick([pos], pid_cpu)
        if why:
            say(what, why + (f' ({n} of {a.count} seen)' if rx else ''))
            return 1
        time.sleep(TICK)


class Args:
    """The command line (argparse would double the start-up time, paid on every call)."""
    NUM = ('quiet', 'cpu_quiet', 'cap', 'grace')

    def __init__(self, argv):
        if not argv or argv[0] not in ('run', 'wait'):
            usage()
        self.mode, argv = argv[0], argv[1:]
        self.quiet, self.cpu_quiet, self.cap, self.grace = 60.0, None, 600.0, 10.0
        self.name, self.pid, self.count, self.tree, self.watch = None, None, 1, False, []
        while argv and argv[0].startswith('--') and argv[0] != '--':
            opt, argv = argv[0][2:].replace('-', '_'), argv[1:]
            if opt == 'tree' and self.mode == 'run':
                self.tree = True
                continue
            if not argv:
                usage()
            val, argv = argv[0], argv[1:]
            try:
                if opt in self.NUM:
                    setattr(self, opt, float(val))
                elif opt == 'name':
                    self.name = val
                elif opt == 'watch' and self.mode == 'run':
                    self.watch.append(val)
                elif opt in ('pid', 'count') and self.mode == 'wait':
                    setattr(self, opt, int(val))
                else:
                    usage()
            except ValueError:
                usage()
        if argv[:1] == ['--']:
            argv = argv[1:]
        if self.mode == 'run':
            self.cmd = argv
        elif len(argv) == 2 or (len(argv) == 1 and self.pid):
            self.file, self.regex = argv[0], (argv[1] if len(argv) == 2 else None)
        else:
            usage()


def usage():
    sys.stderr.write(__doc__)
    sys.exit(2)


def main():
    a = Args(sys.argv[1:])
    sys.exit(run(a) if a.mode == 'run' else wait(a))


if __name__ == '__main__':
    main()
