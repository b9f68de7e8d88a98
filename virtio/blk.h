/* virtio-blk disks on the block layer. */
#ifndef KVMBOX_VIRTIO_BLK_H
#define KVMBOX_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/kvmbox.h"

struct vm;

/* Opens disk D (its image and backing chain, locked when writable) and puts a virtio-blk
 * device for it in the next PCI slot. ERR gets one line naming the disk and the problem. */
int vblk_create(struct vm *vm, const struct kvmbox_disk *d, unsigned index, char *err,
                size_t errlen) __attribute__((warn_unused_result));

struct vblk;
/* What the host may want to know of a disk at run time (`kvmbox info`). */
struct vblk_state {
    bool corrupt;              /* the image was found corrupt and fenced off */
    uint64_t io_errors;        /* requests that failed on the host (EIO, ENOSPC...) */
};
void vblk_get_state(struct vblk *b, struct vblk_state *st);

#endif
