/* virtio-net NICs on the network backends. */
#ifndef KVMBOX_VIRTIO_NET_H
#define KVMBOX_VIRTIO_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/kvmbox.h"

struct vm;
struct vnet;

/* What `kvmbox info` shows of a NIC: the link state and the frames each way (frames and
 * bytes the guest sent or received; dropped: a frame the backend or the guest could not
 * take, or one that met a link that is down). */
struct vnet_stats {
    bool link_up;
    uint64_t rx_frames, rx_bytes, rx_dropped, tx_frames, tx_bytes, tx_dropped;
};

/* Opens NIC's backend (a clear error for a missing bridge or tap, no permission, a port in
 * use) and puts a virtio-net device for it in the next PCI slot. */
int vnet_create(struct vm *vm, const struct kvmbox_nic *nic, unsigned index, char *err,
                size_t errlen) __attribute__((warn_unused_result));
/* Sets the link up or down, as pulling the cable would (virsh domif-setlink, QEMU's set_link):
 * the status field changes and the driver gets a configuration-change interrupt; while the
 * link is down, frames are dropped both ways. */
void vnet_set_link(struct vnet *n, bool up);
void vnet_get_stats(struct vnet *n, struct vnet_stats *st);

#endif
