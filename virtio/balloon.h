/* virtio-balloon: the host takes memory back from a guest that does not need it. */
#ifndef KVMBOX_VIRTIO_BALLOON_H
#define KVMBOX_VIRTIO_BALLOON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dev_services;
struct pci_host;
struct vballoon;

#define BALLOON_MIN_TARGET (32ULL << 20) /* the smallest guest memory a balloon asks for */

/* The guest's own figures (VIRTIO_BALLOON_S_*), -1 where the guest did not send one. */
struct balloon_stats {
    int64_t swap_in, swap_out, major_faults, minor_faults, free, total, available, caches;
    uint64_t age_ms; /* since the guest sent them; UINT64_MAX: never */
};

struct balloon_info {
    uint64_t target;         /* guest memory the host asks for, bytes */
    uint64_t actual;         /* guest memory the guest says it holds, bytes */
    uint64_t released;       /* bytes given back to the host by inflation and reports */
    uint64_t reported;       /* of which by free page reporting */
    unsigned stats_interval; /* seconds; 0: statistics are not polled */
    bool reporting;          /* the driver accepted free page reporting */
    struct balloon_stats stats;
};

/* The balloon device in the next PCI slot, with its I/O thread. ERR says why on failure. */
int vballoon_create(const struct dev_services *svc, struct pci_host *pci, struct vballoon **out, char *err,
                    size_t errlen) __attribute__((warn_unused_result));
/* Asks the guest to hold TARGET bytes. -ERANGE (with ERR) outside [BALLOON_MIN_TARGET,
 * guest memory]. */
int vballoon_set_target(struct vballoon *b, uint64_t target, char *err, size_t errlen);
/* Statistics every SECS seconds (0 stops them). */
void vballoon_set_stats_interval(struct vballoon *b, unsigned secs);
void vballoon_get_info(struct vballoon *b, struct balloon_info *info);

#endif
