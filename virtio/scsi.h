/* virtio-scsi (virtio 1.2, 5.6) with one read-only CD-ROM: target 0, LUN 0. The guest sees
 * an MMC CD/DVD drive (Linux: /dev/sr0), and firmware boots it through El Torito. */
#ifndef KVMBOX_VIRTIO_SCSI_H
#define KVMBOX_VIRTIO_SCSI_H

#include <stddef.h>
#include <stdint.h>

struct vm;
struct kvmbox_cdrom;

/* Opens the image of CD (read-only, with a shared lock: a file another VM writes is refused),
 * checks that it is ISO 9660 and creates the controller in the next PCI slot. Returns 0 or a
 * negative errno with ERR naming the file and the problem. */
int vscsi_create(struct vm *vm, const struct kvmbox_cdrom *cd, unsigned index, char *err,
                 size_t errlen) __attribute__((warn_unused_result));

/* Whether the first BUFLEN bytes of an image hold an ISO 9660 volume descriptor at 32 KiB
 * (ECMA-119 8.1: type, then "CD001"). Pure, for unit tests. */
int iso9660_check(const uint8_t *buf, size_t buflen);
#define ISO9660_PROBE_LEN (32768 + 6)

#endif
