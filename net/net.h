/* Network backends behind virtio-net: user-mode NAT (libslirp, in a helper process), tap (an existing one, or a
 * new one on a bridge) and isolated segments. One struct net_ops each.
 *
 * A backend lives on its NIC's I/O thread: that thread polls the backend's fds together with
 * the NIC's doorbells, hands it the guest's frames (send) and takes received frames through
 * the deliver callback. Nothing here blocks: a frame that cannot be sent is dropped, as a
 * busy wire would. */
#ifndef KVMBOX_NET_H
#define KVMBOX_NET_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "include/kvmbox.h"

#define NET_HDR_LEN     12    /* struct virtio_net_hdr with num_buffers (virtio 1.x) */
#define NET_MAX_FRAME   65550 /* largest frame a backend passes (a 64 KiB TSO frame) */
#define NET_MAX_POLLFDS 64

struct net_backend;

struct net_ops {
    const char *name;
    /* A frame from the guest. With vnet_hdr the iovec starts with the 12-byte virtio-net
     * header (offloads pass through); otherwise it is the bare Ethernet frame. */
    void (*send)(struct net_backend *nb, const struct iovec *iov, int iovcnt);
    /* Adds the fds to poll to PFD (at most MAX) and may lower *TIMEOUT_MS (timers). RX_READY
     * says whether the guest has buffers for received frames (backends that can wait do not
     * read otherwise). Returns the number of fds added. */
    int (*poll_fill)(struct net_backend *nb, struct pollfd *pfd, int max, int *timeout_ms, bool rx_ready);
    /* After poll: handles PFD[0..N) (what poll_fill added), delivering received frames. */
    void (*poll_handle)(struct net_backend *nb, struct pollfd *pfd, int n);
    /* Offloads the guest accepts (tap only): VIRTIO_NET_F_GUEST_* feature bits. */
    void (*set_offload)(struct net_backend *nb, uint64_t guest_features);
    void (*destroy)(struct net_backend *nb);
};

struct net_backend {
    const struct net_ops *ops;
    bool vnet_hdr; /* frames carry the virtio-net header both ways */
    /* Received frame (with the header when vnet_hdr). Returns false when the guest had no
     * room (the frame is dropped; backends that can wait stop reading until RX_READY). */
    bool (*deliver)(void *opaque, const uint8_t *frame, size_t len);
    void *deliver_opaque;
    /* One line for the host's log (the NIC sets it; NULL: the line is dropped). Backends
     * rate-limit what a guest can trigger. The library never prints. */
    void (*log)(void *opaque, const char *line);
    void *log_opaque;
    char desc[160]; /* for `kvmbox info`: "user, hostfwd ...", "bridge br0 (tap kvmbox3)" */
};

/* Opens the backend NIC asks for. VM_NAME names the guest (DHCP host name, segment member);
 * RUNTIME_DIR holds segment sockets; SANDBOX: a helper process (user mode) enters its seccomp
 * sandbox (--sandbox). ERR gets one line naming what is wrong (a bridge or tap that does not
 * exist, no permission, a port already in use) before the guest starts. Called on the
 * thread that builds the VM, before the sandboxes. */
int net_backend_open(const struct kvmbox_nic *nic, const char *vm_name, const char *runtime_dir, bool sandbox,
                     struct net_backend **out, char *err, size_t errlen) __attribute__((warn_unused_result));

/* User mode: starts the helper process kvmbox-slirp (net/slirp.c says where it is looked for)
 * and waits for its answer; destroy() ends it. */
int net_slirp_open(const struct kvmbox_nic *nic, const char *vm_name, bool sandbox, struct net_backend **out,
                   char *err, size_t errlen);
int net_tap_open(const struct kvmbox_nic *nic, struct net_backend **out, char *err, size_t errlen);
int net_segment_open(const struct kvmbox_nic *nic, const char *vm_name, const char *runtime_dir,
                     struct net_backend **out, char *err, size_t errlen);

/* Copies the iovec into BUF (at most CAP bytes); returns the length, or -1 if it is larger. */
ssize_t net_gather(const struct iovec *iov, int iovcnt, uint8_t *buf, size_t cap);

/* A stable, locally administered unicast MAC for NIC INDEX of the VM called NAME. */
void net_default_mac(const char *name, unsigned index, uint8_t mac[6]);

#endif
