/* virtio-blk disks on the block layer. */
#ifndef KVMBOX_VIRTIO_BLK_H
#define KVMBOX_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/kvmbox.h"

struct dev_services;
struct pci_host;
struct vblk;

/* A disk as created, for `kvmbox info` and the firmware's boot order. */
struct vblk_info {
    char format[16];  /* as opened (probed or given) */
    unsigned slot;    /* PCI slot on bus 0 */
    uint64_t size;    /* bytes the guest sees */
    struct vblk *dev; /* for its run-time state */
};

/* Opens disk D (its image and backing chain, locked when writable) and puts a virtio-blk
 * device for it in the next PCI slot of PCI, filling *OUT. ERR gets one line naming the
 * disk and the problem. */
int vblk_create(const struct dev_services *svc, struct pci_host *pci, const struct kvmbox_disk *d,
                unsigned index, struct vblk_info *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* What the host may want to know of a disk at run time (`kvmbox info`). */
struct vblk_state {
    bool corrupt;       /* the image was found corrupt and fenced off */
    uint64_t io_errors; /* requests that failed on the host (EIO, ENOSPC...) */
};
void vblk_get_state(struct vblk *b, struct vblk_state *st);
/* The disk's open image, for whole-VM snapshots (vmm/vm_snapshot.c), which use it only with
 * the device stopped by its save (no request in flight). NULL when none is open. */
struct blk;
struct blk *vblk_image(struct vblk *b);

#endif
