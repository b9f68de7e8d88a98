/* virtio-scsi (virtio 1.2, 5.6) with one read-only CD-ROM: target 0, LUN 0. The guest sees
 * an MMC CD/DVD drive (Linux: /dev/sr0), and firmware boots it through El Torito. */
#ifndef KVMBOX_VIRTIO_SCSI_H
#define KVMBOX_VIRTIO_SCSI_H

#include <stddef.h>
#include <stdint.h>

struct dev_services;
struct pci_host;
struct kvmbox_cdrom;

/* A CD-ROM as created, for `kvmbox info` and the firmware's boot order. */
struct vscsi_info {
    unsigned slot; /* PCI slot on bus 0 */
    uint64_t size; /* bytes of the image */
};

/* Opens the image of CD (read-only, with a shared lock: a file another VM writes is refused),
 * checks that it is ISO 9660 and creates the controller in the next PCI slot of PCI, filling
 * *OUT. Returns 0 or a negative errno with ERR naming the file and the problem. */
int vscsi_create(const struct dev_services *svc, struct pci_host *pci, const struct kvmbox_cdrom *cd,
                 unsigned index, struct vscsi_info *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Whether the first BUFLEN bytes of an image hold an ISO 9660 volume descriptor at 32 KiB
 * (ECMA-119 8.1: type, then "CD001"). Pure, for unit tests. */
int iso9660_check(const uint8_t *buf, size_t buflen);
#define ISO9660_PROBE_LEN (32768 + 6)

#endif
