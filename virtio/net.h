/* virtio-net NICs on the network backends. */
#ifndef KVMBOX_VIRTIO_NET_H
#define KVMBOX_VIRTIO_NET_H

#include <stddef.h>

#include "include/kvmbox.h"

struct vm;

/* Opens NIC's backend (a clear error for a missing bridge or tap, no permission, a port in
 * use) and puts a virtio-net device for it in the next PCI slot. */
int vnet_create(struct vm *vm, const struct kvmbox_nic *nic, unsigned index, char *err,
                size_t errlen) __attribute__((warn_unused_result));

#endif
