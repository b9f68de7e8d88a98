/* User-mode networking: libslirp (the NAT QEMU's -netdev user uses) on the NIC's I/O thread.
 * The guest network is 10.0.2.0/24: the host (and gateway) is 10.0.2.2, DNS 10.0.2.3, DHCP
 * hands out 10.0.2.15 on; 10.0.2.2 reaches the host's own loopback.
 *
 * libslirp is loaded when the first user-mode NIC is opened, not linked: it brings GLib and
 * PCRE2 with it (about 1 MiB resident and 0.3 ms of start-up in every run, docs/benchmarks.md),
 * which a VM without --net user never uses. Its header still declares the functions, so each
 * pointer below has the declared type. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <slirp/libslirp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/net.h"
#include "common/util.h"

#define MAX_TIMERS 16

struct slirp_timer {
    bool used, armed;
    int64_t expire_ms;
    SlirpTimerCb cb;
    void *cb_opaque;
};

struct net_slirp {
    struct net_backend nb;
    Slirp *slirp;
    struct slirp_timer timers[MAX_TIMERS];
    struct pollfd *pfd; /* during poll_fill: where slirp's fds go */
    int npfd, maxpfd;
    char hostname[64];
    unsigned guest_errors;
    uint8_t frame[NET_MAX_FRAME]; /* a guest frame gathered for libslirp (the NIC's thread) */
};

/* ---- loading libslirp ------------------------------------------------------------------ */

#define SLIRP_SONAME "libslirp.so.0"

static struct {
    __typeof__(&slirp_new) new_;
    __typeof__(&slirp_cleanup) cleanup;
    __typeof__(&slirp_input) input;
    __typeof__(&slirp_pollfds_fill) pollfds_fill;
    __typeof__(&slirp_pollfds_poll) pollfds_poll;
    __typeof__(&slirp_add_hostfwd) add_hostfwd;
    __typeof__(&slirp_connection_info) connection_info;
} lib;
static char lib_error[256];
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void *lib_sym(void *h, const char *name)
{
    void *p = dlsym(h, name);
    if (!p && !lib_error[0])
        snprintf(lib_error, sizeof(lib_error), "%s has no %s", SLIRP_SONAME, name);
    return p;
}

/* Once per process, from the thread that builds the VM (never a sandboxed one). RTLD_NOW:
 * every symbol of libslirp and GLib is bound here, none later on the NIC's thread. The
 * library stays loaded for the life of the process (GLib does not support unloading). */
static void lib_load(void)
{
    void *h = dlopen(SLIRP_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(lib_error, sizeof(lib_error), "%s", e ? e : SLIRP_SONAME ": cannot be loaded");
        return;
    }
    lib.new_ = lib_sym(h, "slirp_new");
    lib.cleanup = lib_sym(h, "slirp_cleanup");
    lib.input = lib_sym(h, "slirp_input");
    lib.pollfds_fill = lib_sym(h, "slirp_pollfds_fill");
    lib.pollfds_poll = lib_sym(h, "slirp_pollfds_poll");
    lib.add_hostfwd = lib_sym(h, "slirp_add_hostfwd");
    lib.connection_info = lib_sym(h, "slirp_connection_info");
}

static int64_t now_ms(void)
{
    return (int64_t)(monotonic_ns() / 1000000);
}

/* ---- callbacks libslirp calls -------------------------------------------------------- */

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
    struct net_slirp *s = opaque;
    s->nb.deliver(s->nb.deliver_opaque, buf, len); /* dropped when the guest has no room */
    return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
    struct net_slirp *s = opaque;
    if (s->guest_errors++ >= 10 || !s->nb.log) /* a guest must not flood the log */
        return;
    char line[512];
    snprintf(line, sizeof(line), "user network: %s", msg);
    s->nb.log(s->nb.log_opaque, line);
}

static int64_t cb_clock_get_ns(void *opaque)
{
    return (int64_t)monotonic_ns();
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
    struct net_slirp *s = opaque;
    for (int i = 0; i < MAX_TIMERS; i++)
        if (!s->timers[i].used) {
            s->timers[i] = (struct slirp_timer){ .used = true, .cb = cb, .cb_opaque = cb_opaque };
            return &s->timers[i];
        }
    return NULL;
}

static void cb_timer_free(void *timer, void *opaque)
{
    if (timer)
        *(struct slirp_timer *)timer = (struct slirp_timer){ 0 };
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
    struct slirp_timer *t = timer;
    if (t)
        t->armed = true, t->expire_ms = expire_ms;
}

static void cb_register_poll_fd(int fd, void *opaque)
{
}
static void cb_unregister_poll_fd(int fd, void *opaque)
{
}
static void cb_notify(void *opaque)
{
} /* the I/O thread polls slirp's fds every round */

static const SlirpCb callbacks = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_get_ns,
    .timer_new = cb_timer_new,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_register_poll_fd,
    .unregister_poll_fd = cb_unregister_poll_fd,
    .notify = cb_notify,
};

/* ---- poll loop ------------------------------------------------------------------------- */

static int add_poll(int fd, int events, void *opaque)
{
    struct net_slirp *s = opaque;
    if (s->npfd == s->maxpfd)
        return -1;
    short ev = 0;
    if (events & SLIRP_POLL_IN)
        ev |= POLLIN;
    if (events & SLIRP_POLL_OUT)
        ev |= POLLOUT;
    if (events & SLIRP_POLL_PRI)
        ev |= POLLPRI;
    s->pfd[s->npfd] = (struct pollfd){ .fd = fd, .events = ev };
    return s->npfd++;
}

static int get_revents(int idx, void *opaque)
{
    struct net_slirp *s = opaque;
    if (idx < 0 || idx >= s->npfd)
        return 0;
    short r = s->pfd[idx].revents;
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

static int slirp_poll_fill(struct net_backend *nb, struct pollfd *pfd, int max, int *timeout_ms,
                           bool rx_ready)
{
    struct net_slirp *s = (struct net_slirp *)nb;
    s->pfd = pfd, s->npfd = 0, s->maxpfd = max;
    uint32_t t = *timeout_ms < 0 ? UINT32_MAX : (uint32_t)*timeout_ms;
    lib.pollfds_fill(s->slirp, &t, add_poll, s);
    int64_t now = now_ms();
    for (int i = 0; i < MAX_TIMERS; i++) {
        if (!s->timers[i].used || !s->timers[i].armed)
            continue;
        int64_t left = s->timers[i].expire_ms - now;
        if (left < 0)
            left = 0;
        if ((uint64_t)left < t)
            t = (uint32_t)left;
    }
    *timeout_ms = t == UINT32_MAX ? -1 : (int)t;
    return s->npfd;
}

static void slirp_poll_handle(struct net_backend *nb, struct pollfd *pfd, int n)
{
    struct net_slirp *s = (struct net_slirp *)nb;
    s->pfd = pfd, s->npfd = n;
    lib.pollfds_poll(s->slirp, 0, get_revents, s);
    int64_t now = now_ms();
    for (int i = 0; i < MAX_TIMERS; i++) {
        struct slirp_timer *t = &s->timers[i];
        if (t->used && t->armed && t->expire_ms <= now) {
            t->armed = false;
            t->cb(t->cb_opaque);
        }
    }
}

static void slirp_send(struct net_backend *nb, const struct iovec *iov, int iovcnt)
{
    struct net_slirp *s = (struct net_slirp *)nb;
    ssize_t len = net_gather(iov, iovcnt, s->frame, sizeof(s->frame));
    if (len >= 14)
        lib.input(s->slirp, s->frame, (int)len);
}

static void slirp_destroy(struct net_backend *nb)
{
    struct net_slirp *s = (struct net_slirp *)nb;
    if (s->slirp)
        lib.cleanup(s->slirp);
    free(s);
}

static const struct net_ops slirp_ops = {
    .name = "user",
    .send = slirp_send,
    .poll_fill = slirp_poll_fill,
    .poll_handle = slirp_poll_handle,
    .destroy = slirp_destroy,
};

/* The host ports of libslirp's forwarding sockets, by their fd. libslirp has no call that
 * returns the port a forward bound, but slirp_connection_info() (QEMU's "info usernet")
 * lists each forward's socket with its fd and its bound address, from getsockname:
 *   "  TCP[HOST_FORWARD]   5       127.0.0.1 43545       10.0.2.15    80     0     0"
 * Returns how many it found (at most MAX). */
static int forward_ports(struct net_slirp *s, bool udp, int *fds, unsigned *ports, int max)
{
    char *info = lib.connection_info(s->slirp);
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
static unsigned bound_port(struct net_slirp *s, bool udp, const int *old_fds, int nold)
{
    int fds[KVMBOX_MAX_HOSTFWD * 2 + 1];
    unsigned ports[KVMBOX_MAX_HOSTFWD * 2 + 1];
    int n = forward_ports(s, udp, fds, ports, (int)ARRAY_SIZE(fds));
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < nold && !seen; j++)
            seen = fds[i] == old_fds[j];
        if (!seen)
            return ports[i];
    }
    return 0;
}

/* "tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT", as QEMU writes it. The rule as it
 * took effect (HOSTPORT 0 replaced by the port the kernel chose) goes to ACTUAL. */
static int add_hostfwd(struct net_slirp *s, const char *rule, char *actual, size_t actual_len, char *err,
                       size_t errlen)
{
    char buf[256], haddr[64] = "", gaddr[64] = "";
    unsigned hport, gport;
    snprintf(buf, sizeof(buf), "%s", rule);
    bool udp = !strncmp(buf, "udp:", 4);
    char *h = buf + 4, *dash = strchr(h, '-');
    if (!dash)
        return errf(err, errlen, -EINVAL, "hostfwd '%s': want tcp|udp:[ADDR]:HOSTPORT-[ADDR]:PORT", rule);
    *dash = '\0';
    char *g = dash + 1, *hc = strrchr(h, ':'), *gc = strrchr(g, ':');
    char tail;
    if (!hc || !gc || sscanf(hc + 1, "%u%c", &hport, &tail) != 1 ||
        sscanf(gc + 1, "%u%c", &gport, &tail) != 1 || hport > 65535 || gport == 0 || gport > 65535)
        return errf(err, errlen, -EINVAL, "hostfwd '%s': want tcp|udp:[ADDR]:HOSTPORT-[ADDR]:PORT", rule);
    snprintf(haddr, sizeof(haddr), "%.*s", (int)(hc - h), h);
    snprintf(gaddr, sizeof(gaddr), "%.*s", (int)(gc - g), g);
    /* Unlike QEMU (0.0.0.0), an empty host address means loopback: a forward is not opened
     * to the network unless asked for. */
    struct in_addr ha = { .s_addr = htonl(INADDR_LOOPBACK) }, ga;
    inet_pton(AF_INET, "10.0.2.15", &ga);
    if ((*haddr && inet_pton(AF_INET, haddr, &ha) != 1) || (*gaddr && inet_pton(AF_INET, gaddr, &ga) != 1))
        return errf(err, errlen, -EINVAL, "hostfwd '%s': bad IPv4 address", rule);
    int old_fds[KVMBOX_MAX_HOSTFWD * 2 + 1];
    unsigned old_ports[KVMBOX_MAX_HOSTFWD * 2 + 1];
    int nold = hport ? 0 : forward_ports(s, udp, old_fds, old_ports, (int)ARRAY_SIZE(old_fds));
    errno = 0;
    if (lib.add_hostfwd(s->slirp, udp, ha, (int)hport, ga, (int)gport) < 0) {
        int e = errno ? errno : EADDRINUSE;
        return errf(err, errlen, -e, "hostfwd '%s': cannot listen on %s port %u: %s", rule,
                    udp ? "UDP" : "TCP", hport, strerror(e));
    }
    if (!hport && (hport = bound_port(s, udp, old_fds, nold)) == 0) {
        snprintf(actual, actual_len, "%s (port unknown)", rule);
        return 0;
    }
    snprintf(actual, actual_len, "%s:%s:%u-%s:%u", udp ? "udp" : "tcp", haddr, hport, gaddr, gport);
    return 0;
}

int net_slirp_open(const struct kvmbox_nic *nic, const char *vm_name, struct net_backend **out, char *err,
                   size_t errlen)
{
    pthread_once(&lib_once, lib_load);
    if (lib_error[0])
        return errf(err, errlen, -ENOENT,
                    "user-mode networking (--net user) needs libslirp "
                    "(Debian: apt-get install libslirp0): %s",
                    lib_error);
    struct net_slirp *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->nb.ops = &slirp_ops;
    snprintf(s->hostname, sizeof(s->hostname), "%s", vm_name ? vm_name : "kvmbox");
    SlirpConfig c = {
        .version = 1, .in_enabled = true, .vhostname = s->hostname, .if_mtu = 1500, .if_mru = 1500
    };
    inet_pton(AF_INET, "10.0.2.0", &c.vnetwork);
    inet_pton(AF_INET, "255.255.255.0", &c.vnetmask);
    inet_pton(AF_INET, "10.0.2.2", &c.vhost);
    inet_pton(AF_INET, "10.0.2.15", &c.vdhcp_start);
    inet_pton(AF_INET, "10.0.2.3", &c.vnameserver);
    s->slirp = lib.new_(&c, &callbacks, s);
    if (!s->slirp) {
        free(s);
        return errf(err, errlen, -ENOMEM, "cannot start the user-mode network (libslirp)");
    }
    int n = snprintf(s->nb.desc, sizeof(s->nb.desc), "user (NAT 10.0.2.0/24)");
    for (unsigned i = 0; i < nic->nhostfwd; i++) {
        char actual[300];
        int r = add_hostfwd(s, nic->hostfwd[i], actual, sizeof(actual), err, errlen);
        if (r < 0) {
            slirp_destroy(&s->nb);
            return r;
        }
        if (n > 0 && (size_t)n < sizeof(s->nb.desc))
            n += snprintf(s->nb.desc + n, sizeof(s->nb.desc) - (size_t)n, ", hostfwd %s", actual);
    }
    *out = &s->nb;
    return 0;
}
