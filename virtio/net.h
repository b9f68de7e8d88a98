/* virtio-net NICs on the network backends. */
#ifndef KVMBOX_VIRTIO_NET_H
#define KVMBOX_VIRTIO_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/kvmbox.h"

struct dev_services;
struct pci_host;
struct vnet;

/* What `kvmbox info` shows of a NIC: the link state and the frames each way (frames and
 * bytes the guest sent or received; dropped: a frame the backend or the guest could not
 * take, or one that met a link that is down). */
struct vnet_stats {
    bool link_up;
    uint64_t rx_frames, rx_bytes, rx_dropped, tx_frames, tx_bytes, tx_dropped;
};

/* Where the NIC lives: the VM's name (DHCP host name, default MAC, segment member) and the
 * directory of segment sockets. */
struct vnet_env {
    const char *vm_name;
    const char *runtime_dir;
    bool sandbox; /* a backend's helper process (user mode) sandboxes itself too */
};

/* A NIC as created, for `kvmbox info` and link control. */
struct vnet_info {
    uint8_t mac[6];
    unsigned slot;    /* PCI slot on bus 0 */
    char desc[160];   /* the backend, as `kvmbox info` shows it */
    struct vnet *dev; /* for link control and counters */
};

/* Opens NIC's backend (a clear error for a missing bridge or tap, no permission, a port in
 * use) and puts a virtio-net device for it in the next PCI slot of PCI, filling *OUT. */
int vnet_create(const struct dev_services *svc, struct pci_host *pci, const struct kvmbox_nic *nic,
                unsigned index, const struct vnet_env *env, struct vnet_info *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Sets the link up or down, as pulling the cable would (virsh domif-setlink, QEMU's set_link):
 * the status field changes and the driver gets a configuration-change interrupt; while the
 * link is down, frames are dropped both ways. */
void vnet_set_link(struct vnet *n, bool up);
void vnet_get_stats(struct vnet *n, struct vnet_stats *st);

#endif
