/* Isolated L2 segments: VMs that name the same segment share an Ethernet, with no root, no
 * host interface and no daemon. Each member binds a unix datagram socket in
 * RUNTIME_DIR/segments/NAME/; a frame goes to the member that last sent from its destination
 * MAC, or to every other member when that is not known (broadcast, multicast, unknown
 * unicast), as a learning switch does. Frames reach members of the same directory only.
 * Sends never block: a member that does not keep up loses frames, the others do not notice. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/net.h"
#include "common/util.h"

#define MAX_PEERS 64
#define MAC_TABLE 64
#define RESCAN_NS 500000000ULL /* look for new members twice a second */

struct peer {
    char name[64]; /* file name in the segment directory */
};

struct mac_entry {
    uint8_t mac[6];
    char peer[64];
    bool used;
};

struct net_segment {
    struct net_backend nb;
    int fd;
    char dir[3072], self[64];
    struct peer peers[MAX_PEERS];
    int npeers;
    uint64_t last_scan;
    struct mac_entry macs[MAC_TABLE];
    unsigned mac_next;
    uint8_t frame[NET_MAX_FRAME];
};

static bool valid_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 64 || n[0] == '.')
        return false;
    for (const char *p = n; *p; p++)
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') &&
            *p != '-' && *p != '_' && *p != '.')
            return false;
    return true;
}

static int sock_addr(const struct net_segment *s, const char *name, struct sockaddr_un *a)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path, sizeof(a->sun_path), "%s/%s", s->dir, name);
    return n > 0 && (size_t)n < sizeof(a->sun_path) ? 0 : -ENAMETOOLONG;
}

/* A member socket nobody is bound to any more (its VM was killed before it could remove
 * it) refuses datagrams: ECONNREFUSED. Removed, if it is still the socket that refused. */
static void remove_if_stale(const struct sockaddr_un *a)
{
    struct stat before, after;
    if (lstat(a->sun_path, &before) < 0 || !S_ISSOCK(before.st_mode))
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    bool stale = connect(fd, (const struct sockaddr *)a, sizeof(*a)) < 0 && errno == ECONNREFUSED;
    close(fd);
    if (stale && lstat(a->sun_path, &after) == 0 && after.st_dev == before.st_dev &&
        after.st_ino == before.st_ino)
        unlink(a->sun_path);
}

/* Run when joining (on the thread that builds the VM): members of VMs that died are removed,
 * so they are neither flooded for ever nor left behind. The I/O thread only skips them: its
 * sandbox has no unlink. */
static void sweep(struct net_segment *s)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        struct sockaddr_un a;
        if (l > 5 && !strcmp(e->d_name + l - 5, ".sock") && sock_addr(s, e->d_name, &a) == 0)
            remove_if_stale(&a);
    }
    closedir(d);
}

static void scan(struct net_segment *s)
{
    s->npeers = 0;
    s->last_scan = monotonic_ns();
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && s->npeers < MAX_PEERS) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".sock") || !strcmp(e->d_name, s->self) ||
            l >= sizeof(s->peers[0].name))
            continue;
        memcpy(s->peers[s->npeers++].name, e->d_name, l + 1); /* l < sizeof(name): checked above */
    }
    closedir(d);
}

static bool send_to(struct net_segment *s, const char *name, const void *buf, size_t len)
{
    struct sockaddr_un a;
    if (sock_addr(s, name, &a) < 0)
        return false;
    if (sendto(s->fd, buf, len, MSG_DONTWAIT, (struct sockaddr *)&a, sizeof(a)) >= 0)
        return true;
    if (errno == ECONNREFUSED || errno == ENOENT)
        s->last_scan = 0; /* the membership changed (or a member died): rescan before the next frame */
    return false;         /* EAGAIN: that member is behind; its loss */
}

static const char *lookup_mac(struct net_segment *s, const uint8_t *mac)
{
    for (unsigned i = 0; i < MAC_TABLE; i++)
        if (s->macs[i].used && !memcmp(s->macs[i].mac, mac, 6))
            return s->macs[i].peer;
    return NULL;
}

static void learn(struct net_segment *s, const uint8_t *mac, const char *peer)
{
    if (mac[0] & 1)
        return; /* a multicast source is bogus: learn nothing from it */
    for (unsigned i = 0; i < MAC_TABLE; i++)
        if (s->macs[i].used && !memcmp(s->macs[i].mac, mac, 6)) {
            snprintf(s->macs[i].peer, sizeof(s->macs[i].peer), "%s", peer);
            return;
        }
    struct mac_entry *e = &s->macs[s->mac_next++ % MAC_TABLE];
    e->used = true;
    memcpy(e->mac, mac, 6);
    snprintf(e->peer, sizeof(e->peer), "%s", peer);
}

static void seg_send(struct net_backend *nb, const struct iovec *iov, int iovcnt)
{
    struct net_segment *s = (struct net_segment *)nb;
    ssize_t len = net_gather(iov, iovcnt, s->frame, sizeof(s->frame));
    if (len < 14)
        return;
    if (monotonic_ns() - s->last_scan > RESCAN_NS)
        scan(s);
    const char *to = s->frame[0] & 1 ? NULL : lookup_mac(s, s->frame);
    if (to && send_to(s, to, s->frame, (size_t)len))
        return;
    for (int i = 0; i < s->npeers; i++)
        send_to(s, s->peers[i].name, s->frame, (size_t)len);
}

static int seg_poll_fill(struct net_backend *nb, struct pollfd *pfd, int max, int *timeout_ms, bool rx_ready)
{
    struct net_segment *s = (struct net_segment *)nb;
    if (!rx_ready || max < 1)
        return 0; /* datagrams wait in the socket; when it is full, senders drop */
    pfd[0] = (struct pollfd){ .fd = s->fd, .events = POLLIN };
    return 1;
}

static void seg_poll_handle(struct net_backend *nb, struct pollfd *pfd, int n)
{
    struct net_segment *s = (struct net_segment *)nb;
    if (n < 1 || !(pfd[0].revents & POLLIN))
        return;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_un from;
        socklen_t fl = sizeof(from);
        ssize_t len = recvfrom(s->fd, s->frame, sizeof(s->frame), MSG_DONTWAIT, (struct sockaddr *)&from,
                               &fl);
        if (len < 0)
            return;
        if (len < 14)
            continue;
        const char *slash = fl > offsetof(struct sockaddr_un, sun_path) ? strrchr(from.sun_path, '/') : NULL;
        if (slash)
            learn(s, s->frame + 6, slash + 1);
        if (!nb->deliver(nb->deliver_opaque, s->frame, (size_t)len))
            return;
    }
}

static void seg_destroy(struct net_backend *nb)
{
    struct net_segment *s = (struct net_segment *)nb;
    if (s->fd >= 0) {
        struct sockaddr_un a;
        if (sock_addr(s, s->self, &a) == 0)
            unlink(a.sun_path);
        close(s->fd);
        rmdir(s->dir); /* only when we were the last member */
    }
    free(s);
}

static const struct net_ops segment_ops = {
    .name = "segment",
    .send = seg_send,
    .poll_fill = seg_poll_fill,
    .poll_handle = seg_poll_handle,
    .destroy = seg_destroy,
};

static void default_runtime_dir(char *buf, size_t len)
{
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (geteuid() == 0)
        snprintf(buf, len, "/run/kvmbox");
    else if (x && *x)
        snprintf(buf, len, "%s/kvmbox", x);
    else
        snprintf(buf, len, "/tmp/kvmbox-%u", (unsigned)geteuid());
}

int net_segment_open(const struct kvmbox_nic *nic, const char *vm_name, const char *runtime_dir,
                     struct net_backend **out, char *err, size_t errlen)
{
    if (!valid_name(nic->name))
        return errf(err, errlen, -EINVAL, "segment name '%s': use letters, digits, '-', '_' and '.'",
                    nic->name);
    struct net_segment *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->nb.ops = &segment_ops;
    s->fd = -1;
    char rt[2048];
    if (runtime_dir)
        snprintf(rt, sizeof(rt), "%s", runtime_dir);
    else
        default_runtime_dir(rt, sizeof(rt));
    /* Each level must be ours alone (mode 0700): another user who made the runtime
     * directory first would see, and could send, the segment's frames. */
    char why[512], segs[2100];
    snprintf(segs, sizeof(segs), "%s/segments", rt);
    snprintf(s->dir, sizeof(s->dir), "%s/%s", segs, nic->name);
    int r = dir_make_private(rt, 077, why, sizeof(why));
    if (r == 0)
        r = dir_make_private(segs, 077, why, sizeof(why));
    if (r == 0)
        r = dir_make_private(s->dir, 077, why, sizeof(why));
    if (r < 0) {
        free(s);
        return errf(err, errlen, r, "segment %s: %s", nic->name, why);
    }
    sweep(s);
    static unsigned counter;
    snprintf(s->self, sizeof(s->self), "%ld.%u.sock", (long)getpid(),
             __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    struct sockaddr_un a;
    s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0 || sock_addr(s, s->self, &a) < 0) {
        r = s->fd < 0 ? -errno : -ENAMETOOLONG;
        seg_destroy(&s->nb);
        return errf(err, errlen, r, "segment %s: %s", nic->name, strerror(-r));
    }
    if (bind(s->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        r = -errno;
        close(s->fd);
        s->fd = -1;
        seg_destroy(&s->nb);
        return errf(err, errlen, r, "segment %s: cannot bind %s: %s", nic->name, a.sun_path, strerror(-r));
    }
    int buf = 4 << 20;
    setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    scan(s);
    snprintf(s->nb.desc, sizeof(s->nb.desc), "segment %s", nic->name);
    (void)vm_name;
    *out = &s->nb;
    return 0;
}
