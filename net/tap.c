/* tap backends: an existing tap device (tap,ifname=NAME), or a new tap kvmbox creates and
 * attaches to a bridge (bridge=BR) and that disappears with the process. Frames carry the
 * virtio-net header (IFF_VNET_HDR), so checksum and segmentation offloads pass through. */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/net.h"
#include "common/util.h"

/* virtio-net feature bits the tap offloads follow */
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN  9

struct net_tap {
    struct net_backend nb;
    int fd;
    char ifname[IFNAMSIZ];
    bool stalled; /* the guest had no room: wait for rx buffers */
    uint8_t frame[NET_MAX_FRAME];
};

static void tap_send(struct net_backend *nb, const struct iovec *iov, int iovcnt)
{
    struct net_tap *t = (struct net_tap *)nb;
    if (writev(t->fd, iov, iovcnt) < 0) {
        /* EAGAIN (the tap's queue is full) or an interface that is down: the frame is lost,
         * as on a busy wire */
    }
}

static int tap_poll_fill(struct net_backend *nb, struct pollfd *pfd, int max, int *timeout_ms, bool rx_ready)
{
    struct net_tap *t = (struct net_tap *)nb;
    if (!rx_ready || max < 1)
        return 0; /* frames wait in the tap's queue until the guest has buffers */
    pfd[0] = (struct pollfd){ .fd = t->fd, .events = POLLIN };
    return 1;
}

static void tap_poll_handle(struct net_backend *nb, struct pollfd *pfd, int n)
{
    struct net_tap *t = (struct net_tap *)nb;
    if (n < 1 || !(pfd[0].revents & POLLIN))
        return;
    /* A bounded batch, so the doorbells are not starved. */
    for (int i = 0; i < 64; i++) {
        ssize_t len = read(t->fd, t->frame, sizeof(t->frame));
        if (len <= 0)
            return;
        if (!nb->deliver(nb->deliver_opaque, t->frame, (size_t)len))
            return; /* the guest ran out of buffers: this frame is lost, the rest wait */
    }
}

static void tap_set_offload(struct net_backend *nb, uint64_t f)
{
    struct net_tap *t = (struct net_tap *)nb;
    unsigned off = 0;
    if (f >> VIRTIO_NET_F_GUEST_CSUM & 1) {
        off |= TUN_F_CSUM;
        if (f >> VIRTIO_NET_F_GUEST_TSO4 & 1)
            off |= TUN_F_TSO4;
        if (f >> VIRTIO_NET_F_GUEST_TSO6 & 1)
            off |= TUN_F_TSO6;
        if (f >> VIRTIO_NET_F_GUEST_ECN & 1)
            off |= TUN_F_TSO_ECN;
    }
    ioctl(t->fd, TUNSETOFFLOAD, off);
}

static void tap_destroy(struct net_backend *nb)
{
    struct net_tap *t = (struct net_tap *)nb;
    if (t->fd >= 0)
        close(t->fd); /* a tap kvmbox created is not persistent: it goes away here */
    free(t);
}

static const struct net_ops tap_ops = {
    .name = "tap",
    .send = tap_send,
    .poll_fill = tap_poll_fill,
    .poll_handle = tap_poll_handle,
    .set_offload = tap_set_offload,
    .destroy = tap_destroy,
};

static bool is_bridge(const char *name)
{
    char path[128];
    struct stat st;
    snprintf(path, sizeof(path), "/sys/class/net/%s/bridge", name);
    return stat(path, &st) == 0;
}

/* Brings IFNAME up and, with BRIDGE, enslaves it. */
static int attach(const char *ifname, const char *bridge, char *err, size_t errlen)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return errf(err, errlen, -errno, "socket: %s", strerror(errno));
    struct ifreq ifr = { 0 };
    int r = 0;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", bridge ? bridge : ifname);
    if (bridge) {
        ifr.ifr_ifindex = (int)if_nametoindex(ifname);
        if (ioctl(s, SIOCBRADDIF, &ifr) < 0)
            r = errf(err, errlen, -errno, "cannot add tap %s to bridge %s: %s", ifname, bridge,
                     strerror(errno));
    }
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (r == 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            r = errf(err, errlen, -errno, "cannot bring tap %s up: %s", ifname, strerror(errno));
    }
    close(s);
    return r;
}

int net_tap_open(const struct kvmbox_nic *nic, struct net_backend **out, char *err, size_t errlen)
{
    bool bridge = nic->mode == KVMBOX_NET_BRIDGE;
    if (bridge && !if_nametoindex(nic->name))
        return errf(err, errlen, -ENODEV, "bridge %s does not exist", nic->name);
    if (bridge && !is_bridge(nic->name))
        return errf(err, errlen, -EINVAL, "%s is not a bridge", nic->name);
    if (!bridge && !if_nametoindex(nic->name))
        return errf(err, errlen, -ENODEV,
                    "tap %s does not exist (create it with `ip tuntap add "
                    "%s mode tap`)",
                    nic->name, nic->name);
    struct net_tap *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->nb.ops = &tap_ops;
    t->nb.vnet_hdr = true;
    t->fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (t->fd < 0) {
        int e = errno;
        tap_destroy(&t->nb);
        return errf(err, errlen, -e, "cannot open /dev/net/tun: %s%s", strerror(e),
                    e == EACCES ? " (no permission for tap devices)" : "");
    }
    struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR };
    /* A new tap for a bridge gets the first free kvmboxN name. */
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", bridge ? "kvmbox%d" : nic->name);
    if (ioctl(t->fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        tap_destroy(&t->nb);
        if (e == EPERM || e == EACCES)
            return errf(err, errlen, -e,
                        "no permission to %s tap %s (needs CAP_NET_ADMIN, or a tap "
                        "owned by this user)",
                        bridge ? "create a" : "attach to", bridge ? "device" : nic->name);
        if (e == EBUSY)
            return errf(err, errlen, -e, "tap %s is in use by another process", nic->name);
        if (e == EINVAL && !bridge)
            return errf(err, errlen, -e, "%s is not a tap device", nic->name);
        return errf(err, errlen, -e, "TUNSETIFF %s: %s", bridge ? "kvmbox%d" : nic->name, strerror(e));
    }
    snprintf(t->ifname, sizeof(t->ifname), "%s", ifr.ifr_name);
    int hdr = NET_HDR_LEN;
    if (ioctl(t->fd, TUNSETVNETHDRSZ, &hdr) < 0) {
        int e = errno;
        tap_destroy(&t->nb);
        return errf(err, errlen, -e, "tap %s: TUNSETVNETHDRSZ: %s", nic->name, strerror(e));
    }
    ioctl(t->fd, TUNSETOFFLOAD, 0);
    int r = attach(t->ifname, bridge ? nic->name : NULL, err, errlen);
    if (r < 0) {
        tap_destroy(&t->nb);
        return r;
    }
    if (bridge)
        snprintf(t->nb.desc, sizeof(t->nb.desc), "bridge %s (tap %s)", nic->name, t->ifname);
    else
        snprintf(t->nb.desc, sizeof(t->nb.desc), "tap %s", t->ifname);
    *out = &t->nb;
    return 0;
}
