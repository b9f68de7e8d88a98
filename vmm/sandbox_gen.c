/* Build-time generator of the sandbox's seccomp programs (run by the Makefile, never part of
 * kvmbox): the allow-list of each thread class below is compiled with libseccomp into a
 * classic BPF program and printed as a C array (build/gen/sandbox_bpf.h), which
 * vmm/sandbox.c installs with seccomp(2). So no thread compiles a filter at run time, and
 * kvmbox does not load libseccomp at all (docs/security.md, docs/dependencies.md).
 *
 * What each class needs was read off the code paths it runs and checked by running every
 * test with the filters on; each entry says why it is there. A call outside the list traps
 * (SECCOMP_RET_TRAP): vmm/sandbox.c's SIGSYS handler names the thread class and the call. */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "vmm/sandbox.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct rule {
    int nr;
    int kind; /* 0: any arguments; 1: ioctl request in the class's list;
                          2: open read-only; 3: open read-only fails with EACCES;
                          4: ioctl TCGETS (isatty) */
};

#define ANY(name)         \
    {                     \
        SCMP_SYS(name), 0 \
    }

/* Every class: memory management (malloc, thread stacks, the sanitizers' allocator), locks,
 * time, signals delivered to us (the vCPU kick, SIGSYS itself), writing to eventfds and
 * pipes, and thread exit. */
static const struct rule common[] = {
    ANY(read),
    ANY(write),
    ANY(readv),
    ANY(writev), /* eventfds, pipes, logs */
    ANY(close),  /* fds the thread owns */
    ANY(futex),  /* mutexes, conds, rwlocks */
    ANY(mmap),
    ANY(munmap),
    ANY(mprotect),
    ANY(madvise), /* malloc arenas, stacks */
    ANY(mremap),
    ANY(brk), /* realloc, the main heap */
    ANY(exit),
    ANY(exit_group), /* thread and process exit */
    ANY(rt_sigreturn),
    ANY(rt_sigprocmask),
    ANY(sigaltstack),     /* handlers; ASan's stacks */
    ANY(restart_syscall), /* after a signal */
    ANY(clock_gettime),
    ANY(clock_nanosleep),
    ANY(nanosleep), /* timeouts, backoff */
    ANY(gettid),
    ANY(getpid),
    ANY(tgkill),      /* pthread_kill, abort */
    ANY(sched_yield), /* spin-then-wait locks */
    ANY(poll),
    ANY(ppoll), /* waits on eventfds */
    ANY(fstat),
    ANY(newfstatat),      /* stdio's first write */
    ANY(getrandom),       /* malloc's tcache keys */
    ANY(timerfd_settime), /* the balloon's statistics timer (API, vCPU or its thread) */
    /* glibc reads a file or two on its own the first time it needs them: the time zone
     * (RTC, though vm setup loads it first) and /proc/sys/vm/overcommit_memory (when malloc
     * first shrinks a thread's arena). Both cope with a failed open, so a read-only open
     * fails quietly; opening for writing is never allowed. */
    { SCMP_SYS(openat), 3 },
};

/* Only in the ThreadSanitizer build (sandbox_gen --tsan, make TSAN=1): what the TSan runtime
 * does inside a filtered thread when it reports a race. It re-reads /proc/self/maps with
 * open(2) to name the mappings in a report (a read-only open of any file: kind 2), reads
 * the time with the raw syscall and asks whether stderr is a terminal (to colour it). Its external symbolizer is started before any filter is
 * installed (vmm/sandbox.c), so reports need no fork, pipe or exec here. The normal and ASan
 * builds never get these. */
static const struct rule tsan_runtime[] = {
    { SCMP_SYS(open), 2 },
    { SCMP_SYS(openat), 2 }, /* /proc/self/maps */
    ANY(gettimeofday),       /* report timestamps */
    { SCMP_SYS(ioctl), 4 },  /* isatty(2): TCGETS */
};

static const struct rule vcpu[] = {
    { SCMP_SYS(ioctl), 1 }, /* KVM_RUN, and the irq/ioeventfd plumbing device models change */
};

static const struct rule api[] = {
    ANY(epoll_wait),        ANY(epoll_pwait), ANY(epoll_ctl),               /* the server loop */
    ANY(accept4),           ANY(getsockopt),  ANY(geteuid),                 /* clients, SO_PEERCRED */
    ANY(recvfrom),          ANY(sendto),      ANY(recvmsg),   ANY(sendmsg), /* requests and replies */
    ANY(shutdown),                                                          /* console detach */
    { SCMP_SYS(ioctl), 1 }, /* KVM_GET/SET_CLOCK (pause), interrupts (power button, input) */
};

static const struct rule console[] = {
    { SCMP_SYS(ioctl), 1 }, /* the serial port's interrupt line */
};

static const struct rule blk[] = {
    ANY(io_uring_enter), /* mapped reads and writes */
    ANY(pread64),
    ANY(pwrite64),
    ANY(preadv),
    ANY(pwritev), /* the worker pool's I/O */
    ANY(preadv2),
    ANY(pwritev2),
    ANY(fsync),
    ANY(fdatasync),
    ANY(sync_file_range), /* FLUSH */
    ANY(fallocate),
    ANY(ftruncate),         /* DISCARD, WRITE_ZEROES, growth */
    ANY(lseek),             /* image size */
    { SCMP_SYS(ioctl), 1 }, /* completion interrupts without irqfd, INTx */
};

/* The NIC's thread: a tap (read, writev: common), a segment's datagram socket, or the socket
 * to the user network's helper process (libslirp runs there, under its own filter below):
 * it creates, binds or connects no socket. */
static const struct rule net[] = {
    ANY(sendto),
    ANY(recvfrom),           /* segment datagrams; frames from the user network's helper */
    ANY(sendmsg),            /* frames to the helper, from the guest's buffers */
    { SCMP_SYS(openat), 2 }, /* a segment lists its members' sockets to flood a frame */
    ANY(getdents64),         /* the segment's directory */
    { SCMP_SYS(ioctl), 1 },  /* interrupts without irqfd */
};

/* kvmbox-slirp, the user network's helper process (net/slirp_helper.c), once configured:
 * libslirp's poll loop and the NAT's host sockets. Not a thread class of kvmbox: a program
 * of its own (sandbox_gen --slirp-helper), the only one that may create sockets. */
static const struct rule slirp_helper[] = {
    ANY(socket),
    ANY(connect),
    ANY(bind),
    ANY(listen), /* the NAT's sockets (TCP, UDP, ICMP echo) */
    ANY(accept),
    ANY(accept4), /* hostfwd connections */
    ANY(setsockopt),
    ANY(getsockopt),
    ANY(getsockname),
    ANY(getpeername),
    ANY(shutdown),
    ANY(sendto),
    ANY(recvfrom),
    ANY(sendmsg),
    ANY(recvmsg),            /* frames with kvmbox, datagrams */
    ANY(fcntl),              /* non-blocking sockets */
    { SCMP_SYS(openat), 2 }, /* libslirp re-reads /etc/resolv.conf when it changes */
    ANY(stat),
    ANY(statx),             /* resolv.conf's mtime */
    { SCMP_SYS(ioctl), 1 }, /* FIONREAD, FIONBIO */
};

static const struct rule balloon[] = {
    { SCMP_SYS(ioctl), 1 }, /* interrupts without irqfd */
};

static const struct rule signal_waiter[] = {
    ANY(rt_sigtimedwait), /* sigwait(); sigtimedwait() between kicks while the VM is built */
};

/* The log writer works on two files it was given open (NAME.log and NAME.log.1) in a
 * directory it holds open: it never opens anything. */
static const struct rule log_writer[] = {
    ANY(renameat2), /* rotation: RENAME_EXCHANGE swaps NAME.log and NAME.log.1 */
    ANY(ftruncate), /* the file that becomes NAME.log starts empty */
    ANY(pread64),   /* rotation by copying, where the file system cannot exchange */
};

static const struct {
    const struct rule *r;
    size_t n;
} lists[SANDBOX_CLASSES] = {
    [SANDBOX_VCPU] = { vcpu, ARRAY_SIZE(vcpu) },
    [SANDBOX_API] = { api, ARRAY_SIZE(api) },
    [SANDBOX_CONSOLE] = { console, ARRAY_SIZE(console) },
    [SANDBOX_BLK] = { blk, ARRAY_SIZE(blk) },
    [SANDBOX_NET] = { net, ARRAY_SIZE(net) },
    [SANDBOX_BALLOON] = { balloon, ARRAY_SIZE(balloon) },
    [SANDBOX_SIGNAL] = { signal_waiter, ARRAY_SIZE(signal_waiter) },
    [SANDBOX_LOG] = { log_writer, ARRAY_SIZE(log_writer) },
};

/* The ioctls each class may make. Interrupt injection (KVM_IRQ_LINE, KVM_SIGNAL_MSI) is open
 * to every device thread because any of them may complete a request. */
static const unsigned long vcpu_ioctls[] = {
    KVM_RUN,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_TRANSLATE, /* running; describing a fault */
    KVM_SET_GSI_ROUTING,
    KVM_IRQFD,
    KVM_IOEVENTFD, /* MSI-X tables, BAR moves */
    KVM_IRQ_LINE,
    KVM_SIGNAL_MSI, /* interrupts */
    TUNSETOFFLOAD,  /* virtio-net DRIVER_OK */
};
static const unsigned long api_ioctls[] = {
    KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_IRQ_LINE, KVM_SIGNAL_MSI, KVM_SET_GSI_ROUTING,
};
static const unsigned long irq_ioctls[] = { KVM_IRQ_LINE, KVM_SIGNAL_MSI };
static const unsigned long helper_ioctls[] = { FIONREAD, FIONBIO };

/* Not a class: the helper's program is built with this "class" (sandbox_gen --slirp-helper). */
#define HELPER_CLASS SANDBOX_CLASSES

static int add_ioctls(scmp_filter_ctx ctx, enum sandbox_class cls)
{
    const unsigned long *l;
    size_t n;
    switch ((int)cls) {
    case SANDBOX_VCPU: l = vcpu_ioctls, n = ARRAY_SIZE(vcpu_ioctls); break;
    case SANDBOX_API: l = api_ioctls, n = ARRAY_SIZE(api_ioctls); break;
    case HELPER_CLASS: l = helper_ioctls, n = ARRAY_SIZE(helper_ioctls); break;
    default: l = irq_ioctls, n = ARRAY_SIZE(irq_ioctls); break;
    }
    for (size_t i = 0; i < n; i++) {
        int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                 SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, l[i]));
        if (r < 0)
            return r;
    }
    return 0;
}

static int add_rules(scmp_filter_ctx ctx, const struct rule *rules, size_t n, enum sandbox_class cls,
                     bool *ioctls_done)
{
    for (size_t i = 0; i < n; i++) {
        int r = 0;
        if (rules[i].kind == 0)
            r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, rules[i].nr, 0);
        else if (rules[i].kind == 1 && !*ioctls_done)
            r = add_ioctls(ctx, cls), *ioctls_done = true;
        else if (rules[i].kind == 2 || (rules[i].kind == 3 && cls != SANDBOX_NET && (int)cls != HELPER_CLASS))
            r = seccomp_rule_add(ctx, rules[i].kind == 2 ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EACCES),
                                 rules[i].nr, 1,
                                 SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY));
        else if (rules[i].kind == 4)
            r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                 SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TCGETS));
        if (r < 0 && r != -EEXIST)
            return r;
    }
    return 0;
}

static const char *const symbols[SANDBOX_CLASSES] = {
    [SANDBOX_VCPU] = "vcpu",     [SANDBOX_API] = "api", [SANDBOX_CONSOLE] = "console",
    [SANDBOX_BLK] = "blk",       [SANDBOX_NET] = "net", [SANDBOX_BALLOON] = "balloon",
    [SANDBOX_SIGNAL] = "signal", [SANDBOX_LOG] = "log",
};

/* The BPF program of class CLS, as libseccomp builds it: the architecture check, then the
 * rules, with SECCOMP_RET_TRAP for everything else. Returns its length in instructions, or
 * a negative errno. */
static int build(enum sandbox_class cls, bool tsan, struct sock_filter *out, size_t max)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
    if (!ctx)
        return -ENOMEM;
    bool ioctls_done = false;
    /* The TSan rules go first: libseccomp refuses a second, conflicting rule for the same
     * call and arguments (openat's quiet EACCES in common), and the first one stays. */
    int r = tsan ? add_rules(ctx, tsan_runtime, ARRAY_SIZE(tsan_runtime), cls, &ioctls_done) : 0;
    if (r == 0)
        r = add_rules(ctx, common, ARRAY_SIZE(common), cls, &ioctls_done);
    if (r == 0 && (int)cls == HELPER_CLASS)
        r = add_rules(ctx, slirp_helper, ARRAY_SIZE(slirp_helper), cls, &ioctls_done);
    else if (r == 0)
        r = add_rules(ctx, lists[cls].r, lists[cls].n, cls, &ioctls_done);
    FILE *f = r == 0 ? tmpfile() : NULL;
    if (r == 0 && !f)
        r = -errno;
    if (r == 0)
        r = seccomp_export_bpf(ctx, fileno(f));
    seccomp_release(ctx);
    if (r < 0) {
        if (f)
            fclose(f);
        return r;
    }
    rewind(f);
    size_t n = fread(out, sizeof(*out), max, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    return n == 0 || more ? -EFBIG : (int)n;
}

/* sandbox_gen --slirp-helper [--tsan]: the helper process's program alone. */
static int print_helper(bool tsan)
{
    static struct sock_filter prog[BPF_MAXINSNS];
    int len = build((enum sandbox_class)HELPER_CLASS, tsan, prog, ARRAY_SIZE(prog));
    if (len < 0) {
        fprintf(stderr, "sandbox_gen: the slirp helper: %s\n", strerror(-len));
        return 1;
    }
    printf("static const struct sock_filter slirp_helper_insns[%d] = {\n", len);
    for (int i = 0; i < len; i++)
        printf("    { 0x%04x, %u, %u, 0x%08x },\n", prog[i].code, prog[i].jt, prog[i].jf, prog[i].k);
    printf("};\nstatic const struct sock_fprog slirp_helper_bpf = { %d, (struct sock_filter "
           "*)slirp_helper_insns "
           "};\n",
           len);
    return 0;
}

int main(int argc, char **argv)
{
    bool tsan = false, helper = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tsan"))
            tsan = true;
        else if (!strcmp(argv[i], "--slirp-helper"))
            helper = true;
        else {
            fprintf(stderr, "usage: sandbox_gen [--slirp-helper] [--tsan]\n");
            return 2;
        }
    }
    const struct scmp_version *v = seccomp_version();
    printf("/* Generated by vmm/sandbox_gen.c with libseccomp %u.%u.%u%s: do not edit. */\n", v->major,
           v->minor, v->micro, tsan ? ", with the TSan runtime's calls" : "");
    if (helper)
        return print_helper(tsan);
    static struct sock_filter prog[BPF_MAXINSNS];
    int len[SANDBOX_CLASSES];
    for (int cls = 0; cls < SANDBOX_CLASSES; cls++) {
        len[cls] = build((enum sandbox_class)cls, tsan, prog, ARRAY_SIZE(prog));
        if (len[cls] < 0) {
            fprintf(stderr, "sandbox_gen: class %s: %s\n", symbols[cls], strerror(-len[cls]));
            return 1;
        }
        printf("static const struct sock_filter sandbox_bpf_%s[%d] = {\n", symbols[cls], len[cls]);
        for (int i = 0; i < len[cls]; i++)
            printf("    { 0x%04x, %u, %u, 0x%08x },\n", prog[i].code, prog[i].jt, prog[i].jf, prog[i].k);
        printf("};\n");
    }
    printf("static const struct sock_fprog sandbox_bpf[SANDBOX_CLASSES] = {\n");
    for (int cls = 0; cls < SANDBOX_CLASSES; cls++)
        printf("    { %d, (struct sock_filter *)sandbox_bpf_%s },\n", len[cls], symbols[cls]);
    printf("};\n");
    return 0;
}
