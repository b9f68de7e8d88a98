/* A virtio device on the modern PCI transport (virtio 1.2, 4.1).
 *
 * virtio/pci.c owns the transport: the PCI function and its capabilities, feature
 * negotiation, device status and reset, queue registers, MSI-X and the doorbells. A device
 * (virtio/blk.c ...) fills in struct virtio_dev_ops and processes its queues on threads of its
 * own: a doorbell write signals the queue's kick eventfd in the kernel (ioeventfd), and
 * virtio_notify() raises the queue's MSI-X vector through an irqfd, so the fast path never
 * leaves the kernel on a vCPU thread. */
#ifndef KVMBOX_VIRTIO_H
#define KVMBOX_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/pci.h"
#include "virtio/queue.h"

struct dev_services;
struct virtio_dev;
struct st_writer;
struct st_section;

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER      2
#define VIRTIO_STATUS_DRIVER_OK   4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

#define VIRTIO_F_RING_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX     29
#define VIRTIO_F_VERSION_1          32

#define VIRTIO_MSI_NO_VECTOR 0xffff
#define VIRTIO_MAX_QUEUES    16

struct virtio_dev_ops {
    const char *name;
    /* Device-specific configuration space: reads and writes at OFF (bounds checked). */
    void (*config_read)(struct virtio_dev *vd, unsigned off, void *data, unsigned len);
    void (*config_write)(struct virtio_dev *vd, unsigned off, const void *data, unsigned len);
    /* DRIVER_OK was set: queues are live. */
    void (*start)(struct virtio_dev *vd);
    /* The device is being reset (by the driver or a guest reboot): stop taking requests and
     * return only when none is in flight any more. */
    void (*stop)(struct virtio_dev *vd);
    /* End of the VM: stop the device's threads, call virtio_pci_destroy(), free. */
    void (*destroy)(struct virtio_dev *vd);
    /* Saved state (optional; vmm/snapshot.h): the device's own fields, in the transport's
     * section. SAVE is called with the driver's DRIVER_OK hidden from the device's threads
     * and no chain being handled: it finishes requests in flight. LOAD runs before the
     * device is started again. */
    int (*save)(struct virtio_dev *vd, struct st_writer *w);
    int (*load)(struct virtio_dev *vd, const struct st_section *s, char *err, size_t errlen);
};

struct virtio_queue {
    pthread_mutex_t lock; /* the ring (pop, push, notify decisions) */
    struct virtq vq;
    uint16_t size, max_size;
    uint16_t vector;
    bool enabled;
    bool broken; /* a malformed ring: no more requests until reset */
    uint64_t desc, driver, device;
    int kick_fd; /* eventfd the doorbell signals */
};

struct virtio_msix {
    uint32_t addr_lo, addr_hi, data, ctrl;
    bool pending;
    int msi; /* vmm/irq.c MSI source */
};

struct virtio_dev {
    const struct dev_services *svc; /* what the device may ask of the VM */
    struct pci_func pci;
    const struct virtio_dev_ops *ops;
    void *priv;
    const char *name;
    uint16_t device_id;
    unsigned config_len;

    pthread_mutex_t lock; /* transport registers, MSI-X state */
    uint64_t host_features, guest_features;
    uint32_t dfselect, gfselect;
    uint8_t status, config_generation, isr;
    uint16_t queue_select, config_vector;
    unsigned nqueues;
    struct virtio_queue q[VIRTIO_MAX_QUEUES];
    unsigned nvectors;
    struct virtio_msix msix[VIRTIO_MAX_QUEUES + 1];
    bool msix_enabled, msix_masked;
    uint64_t bar_addr;
    bool bar_live;
    uint8_t msix_cap, pcicfg_cap; /* capability offsets in configuration space */
    bool registered;              /* the VM owns it: its teardown calls ops->destroy */
    unsigned errors_logged;
    bool save_stopped; /* a save stopped it (vmm/snapshot.h) */
};

/* Creates the transport for a device of virtio type DEVICE_ID with NQUEUES queues of up to
 * QUEUE_MAX entries, CONFIG_LEN bytes of device configuration and FEATURES (VERSION_1,
 * INDIRECT_DESC and EVENT_IDX are added). Registers the PCI function in the next slot of PCI
 * and the device with the VM through SVC (reset, teardown). On failure with vd->registered
 * set, the VM's teardown calls ops->destroy; otherwise nothing is left to undo. */
int virtio_pci_init(struct virtio_dev *vd, const struct dev_services *svc, struct pci_host *pci,
                    const char *name, uint16_t device_id, uint32_t pci_class, unsigned nqueues,
                    uint16_t queue_max, unsigned config_len, uint64_t features,
                    const struct virtio_dev_ops *ops, void *priv) __attribute__((warn_unused_result));
void virtio_pci_destroy(struct virtio_dev *vd);

/* Little-endian fields of configuration structures, LEN (1-8) bytes at OFF of B. */
static inline void virtio_put_le(uint8_t *b, unsigned off, uint64_t v, unsigned len)
{
    for (unsigned i = 0; i < len; i++)
        b[off + i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t virtio_get_le(const uint8_t *b, unsigned off, unsigned len)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < len; i++)
        v |= (uint64_t)b[off + i] << (8 * i);
    return v;
}

/* Whether the driver accepted feature BIT. */
static inline bool virtio_has(const struct virtio_dev *vd, unsigned bit)
{
    return (vd->guest_features >> bit) & 1;
}
/* Whether queues may be processed now (DRIVER_OK and not NEEDS_RESET). */
bool virtio_running(struct virtio_dev *vd);
/* Interrupts the driver for queue QI (MSI-X vector or INTx), honouring masks. */
void virtio_notify(struct virtio_dev *vd, unsigned qi);
/* The device configuration changed: a configuration interrupt. */
void virtio_config_changed(struct virtio_dev *vd);
/* A malformed ring or request: sets DEVICE_NEEDS_RESET and tells the driver (config
 * interrupt). The queue takes no more requests until the driver resets the device. WHY is
 * logged, at most VIRTIO_MAX_ERROR_LOGS times per device (a guest must not flood the log). */
void virtio_queue_error(struct virtio_dev *vd, unsigned qi, const char *why);
#define VIRTIO_MAX_ERROR_LOGS 10

#endif
