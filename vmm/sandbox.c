/* Per-thread seccomp sandbox, one allow-list per thread class (see sandbox.h). The lists
 * live in vmm/sandbox_gen.c, which compiles them into BPF programs with libseccomp at build
 * time; this file installs the program of a thread's class with seccomp(2), which costs a
 * few microseconds and no memory, where compiling it took 0.1-0.6 ms per thread.
 *
 * A call outside the list traps (SECCOMP_RET_TRAP) rather than killing silently: the SIGSYS
 * handler prints one line naming the thread class and the call's number, then ends the
 * process with the error status. Filters are per thread (no TSYNC), so the main thread, which
 * builds and rebuilds the machine, keeps everything it needs. */
#include "vmm/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "common/util.h"

#include "sandbox_bpf.h" /* build/gen: the programs vmm/sandbox_gen.c made */

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SANDBOX_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define SANDBOX_TSAN 1
#endif
#ifdef SANDBOX_TSAN
#include <sanitizer/common_interface_defs.h>
#endif

static const char *const class_names[SANDBOX_CLASSES] = {
    [SANDBOX_VCPU] = "vCPU",          [SANDBOX_API] = "API",
    [SANDBOX_CONSOLE] = "console",    [SANDBOX_BLK] = "virtio-blk I/O",
    [SANDBOX_NET] = "virtio-net I/O", [SANDBOX_BALLOON] = "virtio-balloon",
    [SANDBOX_SIGNAL] = "signal",      [SANDBOX_LOG] = "log",
};

static __thread int thread_class = -1;

const char *sandbox_class_name(enum sandbox_class cls)
{
    return cls < SANDBOX_CLASSES ? class_names[cls] : "?";
}

/* ---- the SIGSYS handler: async-signal-safe formatting only ---- */

static size_t put_str(char *buf, size_t at, size_t len, const char *s)
{
    while (*s && at + 1 < len)
        buf[at++] = *s++;
    return at;
}

static size_t put_uint(char *buf, size_t at, size_t len, unsigned v)
{
    char tmp[12];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < 11);
    while (n > 0 && at + 1 < len)
        buf[at++] = tmp[--n];
    return at;
}

static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)uc;
    char msg[256];
    size_t n = put_str(msg, 0, sizeof(msg), "kvmbox: the ");
    n = put_str(msg, n, sizeof(msg), thread_class >= 0 ? class_names[thread_class] : "?");
    n = put_str(msg, n, sizeof(msg), " thread made system call ");
    n = put_uint(msg, n, sizeof(msg), (unsigned)si->si_syscall);
    n = put_str(msg, n, sizeof(msg),
                ", which its seccomp sandbox forbids; stopping the VM "
                "(--sandbox off runs without it)\n");
    if (write(STDERR_FILENO, msg, n) < 0) {
        /* nothing more to do: we are stopping */
    }
    /* The raw call, not _exit(): a sanitizer's _exit interceptor may wait for a lock the
     * trapped thread holds (a ThreadSanitizer report in progress), and never return. */
    syscall(SYS_exit_group, KVMBOX_EXIT_FAILURE);
}

static pthread_once_t handler_once = PTHREAD_ONCE_INIT;

/* Once, before the first filter is installed. */
static void install_handler(void)
{
    struct sigaction sa = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSYS, &sa, NULL);
#ifdef SANDBOX_TSAN
    /* ThreadSanitizer build: with TSAN_OPTIONS=log_path=P (tests/run-all.sh), the report
     * file P.PID is opened on first use; this opens it now, while opening files is allowed. */
    (void)__sanitizer_get_report_path();
#endif
}

#ifdef SANDBOX_TSAN
/* ThreadSanitizer build only: start the runtime's symbolizer (a child process it talks to
 * over pipes) at process start, while there is one thread and no filter, so that a report
 * made later by a filtered thread needs no fork or exec (the filters allow only what is
 * left: vmm/sandbox_gen.c, tsan_runtime). Any libc address will do (labs: not intercepted);
 * the child gets /dev/null as stderr, or it would hold a daemon's log pipe open for ever. */
__attribute__((constructor)) static void tsan_start_symbolizer(void)
{
    int saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved >= 0 && null >= 0)
        dup2(null, STDERR_FILENO);
    char name[64];
    __sanitizer_symbolize_pc((void *)&labs, "%F", name, sizeof(name));
    if (saved >= 0 && null >= 0)
        dup2(saved, STDERR_FILENO);
    if (saved >= 0)
        close(saved);
    if (null >= 0)
        close(null);
}
#endif

int sandbox_enter(enum sandbox_class cls, bool on)
{
    if (cls >= SANDBOX_CLASSES)
        return -EINVAL;
    thread_class = (int)cls;
    if (!on)
        return 0;
    pthread_once(&handler_once, install_handler);
    /* No new privileges: required to install a filter without CAP_SYS_ADMIN, and a filtered
     * thread must not gain any through exec anyway. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &sandbox_bpf[cls]) < 0 ? -errno : 0;
}

void sandbox_selftest(enum sandbox_class cls)
{
    const char *want = getenv("KVMBOX_SANDBOX_SELFTEST");
    if (!want || thread_class != (int)cls || strcmp(want, class_names[cls]))
        return;
    /* A call no class needs: opening a file for writing. */
    int fd = open("/tmp/kvmbox-sandbox-selftest", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (fd >= 0)
        close(fd);
}
