/* kvmbox-slirp: the user-mode network (--net user) in a process of its own. kvmbox starts it
 * for each user-mode NIC with one end of a SOCK_SEQPACKET socketpair as fd 3 (the protocol
 * is net/slirp_proto.h) and passes it the guest's frames; it runs libslirp (the NAT QEMU's
 * -netdev user uses) and its poll loop, and passes back what libslirp sends the guest.
 *
 * Why a process: libslirp, a large C library that parses the guest's traffic, and GLib are
 * then outside kvmbox's address space (a bug in them reaches this process, not the VM's
 * memory or /dev/kvm), and kvmbox itself needs no dynamic loading and can be linked
 * statically (docs/security.md, docs/benchmarks.md).
 *
 * The guest network is 10.0.2.0/24: the host (and gateway) is 10.0.2.2, DNS 10.0.2.3, DHCP
 * hands out 10.0.2.15 on; 10.0.2.2 reaches the host's own loopback.
 *
 * Lifetime: the helper ends when kvmbox's end of the socket closes (kvmbox exits, is killed,
 * or destroys the NIC), whatever thread started it; kvmbox also kills and reaps it when the
 * NIC goes. Once configured it runs under its own seccomp filter (vmm/sandbox_gen.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <slirp/libslirp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "net/slirp_proto.h"

#include "slirp_helper_bpf.h" /* build/gen: the helper's seccomp program (vmm/sandbox_gen.c) */

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_TIMERS    16
#define MAX_POLLFDS   256
#define MAX_HOSTFWD   32
#define DESC_MAX      160 /* struct net_backend's desc */

struct timer {
    bool used, armed;
    int64_t expire_ms;
    SlirpTimerCb cb;
    void *cb_opaque;
};

static struct {
    int fd;
    Slirp *slirp;
    struct timer timers[MAX_TIMERS];
    struct pollfd pfd[1 + MAX_POLLFDS];
    int npfd;
    char hostname[64];
    bool sandbox;
    unsigned guest_errors;
    uint8_t msg[SLIRP_MSG_MAX + 1]; /* one more: a message that fills it is too long */
} h = { .fd = SLIRP_HELPER_FD, .sandbox = true };

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One message of TYPE with TEXT to kvmbox; never waits (a full socket drops it). */
static void send_text(char type, const char *text)
{
    struct iovec v[2] = { { &type, 1 }, { (void *)text, strlen(text) } };
    struct msghdr m = { .msg_iov = v, .msg_iovlen = 2 };
    if (sendmsg(h.fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        /* kvmbox is behind or gone: the line is lost */
    }
}

static void log_line(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    send_text(SLIRP_MSG_LOG, line);
}

/* ---- callbacks libslirp calls -------------------------------------------------------- */

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
    uint8_t type = SLIRP_MSG_FRAME;
    struct iovec v[2] = { { &type, 1 }, { (void *)buf, len } };
    struct msghdr m = { .msg_iov = v, .msg_iovlen = 2 };
    if (sendmsg(h.fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        /* EAGAIN: kvmbox's guest has no room and the socket is full: dropped */
    }
    return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
    if (h.guest_errors++ < 10) /* a guest must not flood the log */
        log_line("user network: %s", msg);
}

static int64_t cb_clock_get_ns(void *opaque)
{
    return now_ns();
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
    for (int i = 0; i < MAX_TIMERS; i++)
        if (!h.timers[i].used) {
            h.timers[i] = (struct timer){ .used = true, .cb = cb, .cb_opaque = cb_opaque };
            return &h.timers[i];
        }
    return NULL;
}

static void cb_timer_free(void *timer, void *opaque)
{
    if (timer)
        *(struct timer *)timer = (struct timer){ 0 };
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
    struct timer *t = timer;
    if (t)
        t->armed = true, t->expire_ms = expire_ms;
}

static void cb_nothing_fd(int fd, void *opaque)
{
} /* the loop asks libslirp for its fds every round */

static void cb_notify(void *opaque)
{
}

static const SlirpCb callbacks = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_get_ns,
    .timer_new = cb_timer_new,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_nothing_fd,
    .unregister_poll_fd = cb_nothing_fd,
    .notify = cb_notify,
};

/* ---- the poll loop --------------------------------------------------------------------- */

static int add_poll(int fd, int events, void *opaque)
{
    if (h.npfd == (int)ARRAY_SIZE(h.pfd))
        return -1;
    short ev = 0;
    if (events & SLIRP_POLL_IN)
        ev |= POLLIN;
    if (events & SLIRP_POLL_OUT)
        ev |= POLLOUT;
    if (events & SLIRP_POLL_PRI)
        ev |= POLLPRI;
    h.pfd[h.npfd] = (struct pollfd){ .fd = fd, .events = ev };
    return h.npfd++;
}

static int get_revents(int idx, void *opaque)
{
    if (idx < 1 || idx >= h.npfd) /* 0 is kvmbox's socket, never libslirp's */
        return 0;
    short r = h.pfd[idx].revents;
    int out = 0;
    if (r & POLLIN)
        out |= SLIRP_POLL_IN;
    if (r & POLLOUT)
        out |= SLIRP_POLL_OUT;
    if (r & POLLPRI)
        out |= SLIRP_POLL_PRI;
    if (r & POLLERR)
        out |= SLIRP_POLL_ERR;
    if (r & POLLHUP)
        out |= SLIRP_POLL_HUP;
    return out;
}

/* Frames from kvmbox into libslirp. Returns false when kvmbox's end has closed. */
static bool take_frames(void)
{
    for (int i = 0; i < 64; i++) {
        ssize_t n = recv(h.fd, h.msg, sizeof(h.msg), MSG_DONTWAIT);
        if (n == 0)
            return false;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR;
        /* at least an Ethernet header; a message that fills the buffer was cut short */
        if (h.msg[0] == SLIRP_MSG_FRAME && n >= 1 + 14 && (size_t)n < sizeof(h.msg))
            slirp_input(h.slirp, h.msg + 1, (int)(n - 1));
    }
    return true;
}

static void run_timers(void)
{
    int64_t now = now_ns() / 1000000;
    for (int i = 0; i < MAX_TIMERS; i++) {
        struct timer *t = &h.timers[i];
        if (t->used && t->armed && t->expire_ms <= now) {
            t->armed = false;
            t->cb(t->cb_opaque);
        }
    }
}

static void loop(void)
{
    for (;;) {
        h.pfd[0] = (struct pollfd){ .fd = h.fd, .events = POLLIN };
        h.npfd = 1;
        uint32_t t = UINT32_MAX;
        slirp_pollfds_fill(h.slirp, &t, add_poll, NULL);
        int64_t now = now_ns() / 1000000;
        for (int i = 0; i < MAX_TIMERS; i++) {
            if (!h.timers[i].used || !h.timers[i].armed)
                continue;
            int64_t left = h.timers[i].expire_ms - now;
            if (left < (int64_t)t)
                t = left < 0 ? 0 : (uint32_t)left;
        }
        int r = poll(h.pfd, (nfds_t)h.npfd, t == UINT32_MAX ? -1 : (int)t);
        if (r < 0 && errno != EINTR)
            return;
        if (r < 0)
            continue;
        if (h.pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!take_frames())
                return; /* kvmbox has gone: so do we */
        }
        slirp_pollfds_poll(h.slirp, 0, get_revents, NULL);
        run_timers();
    }
}

/* ---- set-up: the configuration, hostfwd, the reply ----------------------------------- */

/* The host ports of libslirp's forwarding sockets, by their fd. libslirp has no call that
 * returns the port a forward bound, but slirp_connection_info() (QEMU's "info usernet")
 * lists each forward's socket with its fd and its bound address, from getsockname:
 *   "  TCP[HOST_FORWARD]   5       127.0.0.1 43545       10.0.2.15    80     0     0"
 * Returns how many it found (at most MAX). */
static int forward_ports(bool udp, int *fds, unsigned *ports, int max)
{
    char *info = slirp_connection_info(h.slirp);
    int n = 0;
    char *save = NULL;
    for (char *line = info ? strtok_r(info, "\n", &save) : NULL; line && n < max;
         line = strtok_r(NULL, "\n", &save)) {
        char proto[8], addr[64];
        int fd;
        unsigned port;
        if (sscanf(line, " %7[A-Z][HOST_FORWARD] %d %63s %u", proto, &fd, addr, &port) == 4 &&
            !strcmp(proto, udp ? "UDP" : "TCP"))
            fds[n] = fd, ports[n++] = port;
    }
    free(info); /* GLib's g_malloc is malloc (GLib >= 2.46) */
    return n;
}

/* With HOSTPORT 0 the kernel picks a free port: the one the forward that was just added
 * bound (the fd that was not there before). 0 if it cannot be told. */
static unsigned bound_port(bool udp, const int *old_fds, int nold)
{
    int fds[MAX_HOSTFWD * 2 + 1];
    unsigned ports[MAX_HOSTFWD * 2 + 1];
    int n = forward_ports(udp, fds, ports, (int)ARRAY_SIZE(fds));
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < nold && !seen; j++)
            seen = fds[i] == old_fds[j];
        if (!seen)
            return ports[i];
    }
    return 0;
}

static int fail(char *err, size_t errlen, int e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -e;
}

/* "tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT", as QEMU writes it. The rule as it
 * took effect (HOSTPORT 0 replaced by the port the kernel chose) goes to ACTUAL. */
static int add_hostfwd(const char *rule, char *actual, size_t actual_len, char *err, size_t errlen)
{
    char buf[256], haddr[64] = "", gaddr[64] = "";
    unsigned hport, gport;
    snprintf(buf, sizeof(buf), "%s", rule);
    bool udp = !strncmp(buf, "udp:", 4);
    if (!udp && strncmp(buf, "tcp:", 4))
        return fail(err, errlen, EINVAL, "hostfwd '%s': want tcp|udp:[ADDR]:HOSTPORT-[ADDR]:PORT", rule);
    char *hs = buf + 4, *dash = strchr(hs, '-');
    if (!dash)
        return fail(err, errlen, EINVAL, "hostfwd '%s': want tcp|udp:[ADDR]:HOSTPORT-[ADDR]:PORT", rule);
    *dash = '\0';
    char *g = dash + 1, *hc = strrchr(hs, ':'), *gc = strrchr(g, ':');
    char tail;
    if (!hc || !gc || sscanf(hc + 1, "%u%c", &hport, &tail) != 1 ||
        sscanf(gc + 1, "%u%c", &gport, &tail) != 1 || hport > 65535 || gport == 0 || gport > 65535)
        return fail(err, errlen, EINVAL, "hostfwd '%s': want tcp|udp:[ADDR]:HOSTPORT-[ADDR]:PORT", rule);
    snprintf(haddr, sizeof(haddr), "%.*s", (int)(hc - hs), hs);
    snprintf(gaddr, sizeof(gaddr), "%.*s", (int)(gc - g), g);
    /* Unlike QEMU (0.0.0.0), an empty host address means loopback: a forward is not opened
     * to the network unless asked for. Addresses are numbers: no name is looked up. */
    struct in_addr ha = { .s_addr = htonl(INADDR_LOOPBACK) }, ga;
    inet_pton(AF_INET, "10.0.2.15", &ga);
    if ((*haddr && inet_pton(AF_INET, haddr, &ha) != 1) || (*gaddr && inet_pton(AF_INET, gaddr, &ga) != 1))
        return fail(err, errlen, EINVAL, "hostfwd '%s': bad IPv4 address", rule);
    int old_fds[MAX_HOSTFWD * 2 + 1];
    unsigned old_ports[MAX_HOSTFWD * 2 + 1];
    int nold = hport ? 0 : forward_ports(udp, old_fds, old_ports, (int)ARRAY_SIZE(old_fds));
    errno = 0;
    if (slirp_add_hostfwd(h.slirp, udp, ha, (int)hport, ga, (int)gport) < 0) {
        int e = errno ? errno : EADDRINUSE;
        return fail(err, errlen, e, "hostfwd '%s': cannot listen on %s port %u: %s", rule,
                    udp ? "UDP" : "TCP", hport, strerror(e));
    }
    if (!hport && (hport = bound_port(udp, old_fds, nold)) == 0) {
        snprintf(actual, actual_len, "%s (port unknown)", rule);
        return 0;
    }
    snprintf(actual, actual_len, "%s:%s:%u-%s:%u", udp ? "udp" : "tcp", haddr, hport, gaddr, gport);
    return 0;
}

/* The configuration message: "KEY VALUE" lines. Hostfwd rules are applied in the order given
 * (after libslirp is started); DESC gets the backend's description. */
static int configure(char *text, char *desc, size_t desclen, char *err, size_t errlen)
{
    const char *rules[MAX_HOSTFWD];
    unsigned nrules = 0;
    char *save = NULL;
    snprintf(h.hostname, sizeof(h.hostname), "kvmbox");
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *val = strchr(line, ' ');
        if (!val)
            return fail(err, errlen, EPROTO, "user network helper: bad configuration line '%.60s'", line);
        *val++ = '\0';
        if (!strcmp(line, "hostname"))
            snprintf(h.hostname, sizeof(h.hostname), "%s", val);
        else if (!strcmp(line, "sandbox"))
            h.sandbox = strcmp(val, "0") != 0;
        else if (!strcmp(line, "hostfwd") && nrules < MAX_HOSTFWD)
            rules[nrules++] = val;
        else
            return fail(err, errlen, EPROTO, "user network helper: unknown configuration '%.60s'", line);
    }
    SlirpConfig c = {
        .version = 1, .in_enabled = true, .vhostname = h.hostname, .if_mtu = 1500, .if_mru = 1500
    };
    inet_pton(AF_INET, "10.0.2.0", &c.vnetwork);
    inet_pton(AF_INET, "255.255.255.0", &c.vnetmask);
    inet_pton(AF_INET, "10.0.2.2", &c.vhost);
    inet_pton(AF_INET, "10.0.2.15", &c.vdhcp_start);
    inet_pton(AF_INET, "10.0.2.3", &c.vnameserver);
    h.slirp = slirp_new(&c, &callbacks, NULL);
    if (!h.slirp)
        return fail(err, errlen, ENOMEM, "cannot start the user-mode network (libslirp)");
    int n = snprintf(desc, desclen, "user (NAT 10.0.2.0/24)");
    for (unsigned i = 0; i < nrules; i++) {
        char actual[300];
        int r = add_hostfwd(rules[i], actual, sizeof(actual), err, errlen);
        if (r < 0)
            return r;
        if (n > 0 && (size_t)n < desclen)
            n += snprintf(desc + n, desclen - (size_t)n, ", hostfwd %s", actual);
    }
    return 0;
}

/* ---- the sandbox ----------------------------------------------------------------------- */

static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
    /* async-signal-safe: a fixed text and the call's number, by hand */
    static const char head[] = "Luser network: its helper (" SLIRP_HELPER_NAME ") made system call ";
    static const char tail[] = ", which its seccomp sandbox forbids; the NIC has no network now";
    char msg[sizeof(head) + 12 + sizeof(tail)], num[12];
    size_t n = 0, k = 0;
    unsigned v = (unsigned)si->si_syscall;
    do
        num[k++] = (char)('0' + v % 10);
    while ((v /= 10) && k < sizeof(num));
    memcpy(msg, head, sizeof(head) - 1), n = sizeof(head) - 1;
    while (k)
        msg[n++] = num[--k];
    memcpy(msg + n, tail, sizeof(tail) - 1), n += sizeof(tail) - 1;
    if (write(h.fd, msg, n) < 0) {
        /* kvmbox is gone */
    }
    syscall(SYS_exit_group, 4);
}

static int enter_sandbox(void)
{
    struct sigaction sa = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &slirp_helper_bpf) < 0 ? -errno : 0;
}

/* tests/t-sandbox.sh: with KVMBOX_SANDBOX_SELFTEST naming the helper, a forbidden call. */
static void selftest(void)
{
    const char *want = getenv("KVMBOX_SANDBOX_SELFTEST");
    if (!want || strcmp(want, "user network helper"))
        return;
    int fd = open("/tmp/kvmbox-sandbox-selftest", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    if (fd >= 0)
        close(fd);
}

static void reply(int err, const char *text)
{
    char line[600];
    snprintf(line, sizeof(line), "%d %s", err, text);
    send_text(SLIRP_MSG_REPLY, line);
}

int main(int argc, char **argv)
{
    int type = 0;
    socklen_t tl = sizeof(type);
    if (argc != 1 || getsockopt(h.fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_SEQPACKET) {
        fprintf(stderr,
                "%s: kvmbox's user-mode network (--net user); kvmbox starts it, with its "
                "socket as fd %d\n",
                SLIRP_HELPER_NAME, SLIRP_HELPER_FD);
        return 2;
    }
    /* libslirp writes to sockets a peer may have closed: that is an error to it, not a signal */
    signal(SIGPIPE, SIG_IGN);
    char cfg[SLIRP_CONFIG_MAX + 2];
    ssize_t n = recv(h.fd, cfg, sizeof(cfg) - 1, 0); /* kvmbox sends it right after starting us */
    if (n <= 1 || cfg[0] != SLIRP_MSG_CONFIG || n >= (ssize_t)sizeof(cfg) - 1)
        return 2;
    cfg[n] = '\0';
    char desc[DESC_MAX], err[512];
    int r = configure(cfg + 1, desc, sizeof(desc), err, sizeof(err));
    if (r == 0 && h.sandbox && (r = enter_sandbox()) < 0)
        snprintf(err, sizeof(err), "user network helper: cannot enter its seccomp sandbox: %s", strerror(-r));
    if (r < 0) {
        reply(-r, err);
        return 1;
    }
    reply(0, desc);
    if (h.sandbox)
        selftest();
    loop();
    /* No slirp_cleanup(): the process ends, and with it every socket libslirp had. The raw
     * call: the sanitizers' exit handlers (LeakSanitizer starts a thread) are not in the
     * filter, and there is nothing left to flush. */
    syscall(SYS_exit_group, 0);
    return 0;
}
