/* User-mode networking (--net user): libslirp's NAT, run by a helper process of its own
 * (kvmbox-slirp, net/slirp_helper.c). This backend starts the helper when the NIC is opened
 * (on the thread that builds the VM, before any sandbox), hands it the configuration and
 * waits for its answer (errors, and the host ports hostfwd bound), then passes frames both
 * ways over a SOCK_SEQPACKET socketpair, one frame a message (net/slirp_proto.h).
 *
 * So libslirp, a large C library that parses guest traffic, and GLib are not in kvmbox's
 * address space, and kvmbox loads no library at run time (it can be linked statically);
 * the NIC's thread only sends and receives on one socket (docs/security.md).
 *
 * The helper is looked for next to the running program (/proc/self/exe: `make install`
 * puts it next to kvmbox, and build/ has both), then in KVMBOX_HELPERDIR (the install's
 * bindir, fixed at build time), then in PATH. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/net.h"
#include "net/slirp_proto.h"
#include "common/util.h"

#ifndef KVMBOX_HELPERDIR
#define KVMBOX_HELPERDIR "/usr/local/bin"
#endif

#define REPLY_WAIT_MS 30000 /* the helper loads libslirp and GLib and binds the forwards */
#define MAX_LOG_LINES 50    /* from the helper, for the whole run: it may be compromised */
#define MAX_FRAME_IOV 256   /* segments of a guest frame (a virtqueue chain's maximum) */

struct net_slirp {
    struct net_backend nb;
    int fd;
    pid_t pid;
    bool gone;                      /* the helper's end closed: nothing more to poll */
    unsigned log_lines;             /* lines passed on from the helper */
    uint8_t msg[SLIRP_MSG_MAX + 1]; /* one more: a message that fills it is too long */
};

extern char **environ;

/* ---- the data path (the NIC's I/O thread) ----------------------------------------------- */

static void log_line(struct net_slirp *s, const char *line)
{
    if (s->nb.log && s->log_lines++ < MAX_LOG_LINES)
        s->nb.log(s->nb.log_opaque, line);
}

/* A guest frame to the helper, straight from the guest's buffers (the kernel copies it
 * once). Dropped when the helper is behind (the socket is full) or gone. */
static void slirp_send(struct net_backend *nb, const struct iovec *iov, int iovcnt)
{
    struct net_slirp *s = (struct net_slirp *)nb;
    if (s->gone || iovcnt < 1 || iovcnt > MAX_FRAME_IOV)
        return;
    uint8_t type = SLIRP_MSG_FRAME;
    struct iovec v[1 + MAX_FRAME_IOV];
    v[0] = (struct iovec){ &type, 1 };
    size_t len = 0;
    for (int i = 0; i < iovcnt; i++)
        v[1 + i] = iov[i], len += iov[i].iov_len;
    if (len < 14 || len > NET_MAX_FRAME)
        return;
    struct msghdr m = { .msg_iov = v, .msg_iovlen = (size_t)iovcnt + 1 };
    if (sendmsg(s->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        /* EAGAIN: the helper is behind; EPIPE: it is gone (poll sees the hang-up) */
    }
}

static int slirp_poll_fill(struct net_backend *nb, struct pollfd *pfd, int max, int *timeout_ms,
                           bool rx_ready)
{
    struct net_slirp *s = (struct net_slirp *)nb;
    if (s->gone || max < 1)
        return 0;
    /* Without room in the guest, frames wait in the socket (then the helper drops them);
     * a hang-up is reported anyway. */
    pfd[0] = (struct pollfd){ .fd = s->fd, .events = rx_ready ? POLLIN : 0 };
    return 1;
}

static void slirp_poll_handle(struct net_backend *nb, struct pollfd *pfd, int n)
{
    struct net_slirp *s = (struct net_slirp *)nb;
    if (n < 1 || !pfd[0].revents)
        return;
    for (int i = 0; i < 64; i++) {
        ssize_t len = recv(s->fd, s->msg, sizeof(s->msg) - 1, MSG_DONTWAIT);
        if (len < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!(pfd[0].revents & (POLLHUP | POLLERR)))
                return;
            len = 0; /* hung up with nothing left to read */
        }
        if (len <= 0) {
            s->gone = true;
            s->log_lines = 0; /* this line is always said */
            log_line(s, "user network: its helper process (" SLIRP_HELPER_NAME
                        ") has ended; the NIC has no network now");
            return;
        }
        if (s->msg[0] == SLIRP_MSG_FRAME && len >= 1 + 14 && (size_t)len < sizeof(s->msg) - 1) {
            if (!nb->deliver(nb->deliver_opaque, s->msg + 1, (size_t)len - 1))
                return; /* the guest has no room: the rest waits */
        } else if (s->msg[0] == SLIRP_MSG_LOG) {
            s->msg[len] = '\0';
            for (uint8_t *p = s->msg + 1; *p; p++) /* one line, printable */
                if (*p < 0x20 || *p == 0x7f)
                    *p = '?';
            log_line(s, (const char *)s->msg + 1);
        }
    }
}

/* The helper ends when its socket closes; it is killed too, so that the NIC's end never
 * waits on it, and reaped. */
static void slirp_destroy(struct net_backend *nb)
{
    struct net_slirp *s = (struct net_slirp *)nb;
    if (s->fd >= 0)
        close(s->fd);
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    free(s);
}

static const struct net_ops slirp_ops = {
    .name = "user",
    .send = slirp_send,
    .poll_fill = slirp_poll_fill,
    .poll_handle = slirp_poll_handle,
    .destroy = slirp_destroy,
};

/* ---- starting the helper (the thread that builds the VM) -------------------------------- */

static bool executable(const char *path)
{
    return access(path, X_OK) == 0;
}

/* The helper's path into PATH_OUT, or -ENOENT with the places looked at in ERR. */
static int find_helper(char *out, size_t len, char *err, size_t errlen)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(out, len, "%s/%s", self, SLIRP_HELPER_NAME);
            if (executable(out))
                return 0;
        }
    }
    snprintf(out, len, "%s/%s", KVMBOX_HELPERDIR, SLIRP_HELPER_NAME);
    if (executable(out))
        return 0;
    const char *path = getenv("PATH");
    for (const char *p = path; p && *p;) {
        const char *end = strchrnul(p, ':');
        if (end > p && *p == '/') { /* relative PATH entries are not trusted */
            snprintf(out, len, "%.*s/%s", (int)(end - p), p, SLIRP_HELPER_NAME);
            if (executable(out))
                return 0;
        }
        p = *end ? end + 1 : end;
    }
    return errf(err, errlen, -ENOENT,
                "user-mode networking (--net user) needs its helper %s, which is neither next to this "
                "program (%s), in %s nor in PATH",
                SLIRP_HELPER_NAME, n > 0 ? self : "?", KVMBOX_HELPERDIR);
}

/* Starts PATH with the socket SOCK as its fd 3, stdin and stdout on /dev/null, stderr shared,
 * nothing else open, every signal unblocked, in a process group of its own (a terminal's
 * Ctrl-C is for kvmbox, which ends the helper itself). posix_spawn (vfork-like): the VM's
 * memory is not copied or write-protected. */
static int spawn_helper(const char *path, int sock, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none;
    sigemptyset(&none);
    int r = posix_spawn_file_actions_init(&fa);
    if (r)
        return -r;
    r = posix_spawnattr_init(&at);
    if (r) {
        posix_spawn_file_actions_destroy(&fa);
        return -r;
    }
    r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    r = r ? r : posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    r = r ? r : posix_spawn_file_actions_adddup2(&fa, sock, SLIRP_HELPER_FD);
    r = r ? r : posix_spawn_file_actions_addclosefrom_np(&fa, SLIRP_HELPER_FD + 1);
    r = r ? r : posix_spawnattr_setsigmask(&at, &none);
    r = r ? r : posix_spawnattr_setpgroup(&at, 0);
    r = r ? r : posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    char *argv[] = { SLIRP_HELPER_NAME, NULL };
    r = r ? r : posix_spawn(pid, path, &fa, &at, argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return -r;
}

/* A value the helper takes on one line: no line breaks or other control characters (a rule
 * must not smuggle in a setting of its own). */
static bool one_line(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return false;
    return true;
}

/* The configuration: the guest's host name, whether the helper sandboxes itself, the rules. */
static int send_config(int fd, const struct kvmbox_nic *nic, const char *vm_name, bool sandbox, char *err,
                       size_t errlen)
{
    const char *host = vm_name && *vm_name && one_line(vm_name) ? vm_name : "kvmbox";
    char cfg[SLIRP_CONFIG_MAX];
    size_t n = (size_t)snprintf(cfg, sizeof(cfg), "%chostname %.63s\nsandbox %d\n", SLIRP_MSG_CONFIG, host,
                                sandbox ? 1 : 0);
    for (unsigned i = 0; i < nic->nhostfwd && n < sizeof(cfg); i++) {
        if (!one_line(nic->hostfwd[i]))
            return errf(err, errlen, -EINVAL, "hostfwd rule %u: control characters", i + 1);
        n += (size_t)snprintf(cfg + n, sizeof(cfg) - n, "hostfwd %s\n", nic->hostfwd[i]);
    }
    if (n >= sizeof(cfg))
        return errf(err, errlen, -E2BIG, "the hostfwd rules are too long");
    if (send(fd, cfg, n, MSG_NOSIGNAL) != (ssize_t)n)
        return errf(err, errlen, -errno, "user network: cannot configure its helper: %s", strerror(errno));
    return 0;
}

/* The helper's one answer: 0 and the backend's description, or its error. */
static int wait_reply(struct net_slirp *s, char *err, size_t errlen)
{
    struct pollfd p = { .fd = s->fd, .events = POLLIN };
    int r;
    while ((r = poll(&p, 1, REPLY_WAIT_MS)) < 0 && errno == EINTR)
        ;
    ssize_t len = r > 0 ? recv(s->fd, s->msg, sizeof(s->msg) - 1, MSG_DONTWAIT) : -1;
    if (len <= 0) {
        int status = 0;
        if (r == 0)
            return errf(err, errlen, -ETIMEDOUT, "user network: its helper %s did not answer in %d s",
                        SLIRP_HELPER_NAME, REPLY_WAIT_MS / 1000);
        /* It ended without a word: most likely libslirp could not be loaded (the dynamic
         * loader has said why on stderr). */
        pid_t pid = s->pid;
        s->pid = -1;
        if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 127)
            return errf(err, errlen, -ENOENT,
                        "user-mode networking (--net user) needs libslirp "
                        "(Debian: apt-get install libslirp0): its helper %s could not start",
                        SLIRP_HELPER_NAME);
        return errf(err, errlen, -EPROTO, "user network: its helper %s ended (status %d) without answering",
                    SLIRP_HELPER_NAME, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    s->msg[len] = '\0';
    for (uint8_t *c = s->msg + 1; *c; c++) /* one line, printable: it is shown to the user */
        if (*c < 0x20 || *c == 0x7f)
            *c = '?';
    int e = 0, off = 0;
    if (s->msg[0] != SLIRP_MSG_REPLY || sscanf((char *)s->msg + 1, "%d %n", &e, &off) != 1 || e < 0 ||
        e > 4095)
        return errf(err, errlen, -EPROTO, "user network: its helper %s answered something else",
                    SLIRP_HELPER_NAME);
    const char *text = (const char *)s->msg + 1 + off;
    if (e)
        return errf(err, errlen, -e, "%s", text);
    snprintf(s->nb.desc, sizeof(s->nb.desc), "%s", text);
    return 0;
}

int net_slirp_open(const struct kvmbox_nic *nic, const char *vm_name, bool sandbox, struct net_backend **out,
                   char *err, size_t errlen)
{
    char path[PATH_MAX + 64];
    int r = find_helper(path, sizeof(path), err, errlen);
    if (r < 0)
        return r;
    struct net_slirp *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->nb.ops = &slirp_ops;
    s->fd = -1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        r = -errno;
        free(s);
        return errf(err, errlen, r, "user network: socketpair: %s", strerror(-r));
    }
    s->fd = sv[0];
    int buf = SLIRP_SOCK_BUF;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    r = spawn_helper(path, sv[1], &s->pid);
    close(sv[1]);
    if (r < 0) {
        s->pid = -1;
        slirp_destroy(&s->nb);
        return errf(err, errlen, r, "user network: cannot start %s: %s", path, strerror(-r));
    }
    r = send_config(s->fd, nic, vm_name, sandbox, err, errlen);
    if (r < 0) {
        slirp_destroy(&s->nb);
        return r;
    }
    r = wait_reply(s, err, errlen);
    if (r < 0) {
        slirp_destroy(&s->nb);
        return r;
    }
    *out = &s->nb;
    return 0;
}
