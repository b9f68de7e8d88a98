/* A small virtio 1.x driver for test kernels: the modern PCI transport (vendor capabilities,
 * common configuration, notifications, MSI-X), one split virtqueue per device (optionally
 * with indirect descriptors and EVENT_IDX), and virtio-blk requests on top. Waiting is by
 * polling or by interrupts (sti; hlt, woken by the completion's MSI-X message or a 100 Hz
 * LAPIC timer tick that bounds the wait). Also the DMA heap and a microsecond clock. */
#ifndef GT_VIRTIO_H
#define GT_VIRTIO_H

#include "gt.h"
#include "pci.h"

/* ---- memory and time ---- */
/* Guest RAM for buffers: from 4 MiB to the end of the e820 RAM entry that holds 4 MiB.
 * Never freed except by dma_reset(); returns NULL when it runs out. */
void *dma_alloc(uint32_t size, uint32_t align);
void dma_reset(void);
/* The end of guest RAM below 4 GiB: the end of the last e820 RAM entry, extended over the
 * entries that follow it without a gap (firmware keeps tables in reserved RAM at the top). */
uint64_t ram_end(void);
/* Microseconds from the PM timer; call at least every 4 s (it extends a 24-bit counter). */
uint64_t clock_us(void);
/* Full memory barrier (x86: a locked instruction; no SSE2 needed). */
static inline void mb(void)
{
    __asm__ volatile("lock; addl $0,(%%esp)" ::: "memory");
}

/* ---- interrupts ---- */
#define VIRTIO_VEC_BASE 0x30 /* device i: config 0x30 + 2i, queue 0x31 + 2i */
#define VIRTIO_VEC_TICK 0x3f /* LAPIC timer, wakes hlt so waits can time out */
extern volatile uint32_t irq_count[64];
/* Masks the 8259s, enables the LAPIC, installs the handlers and starts the tick. Call once. */
void virtio_irq_init(void);

/* ---- split virtqueues ---- */
#define VQ_MAX                     256
#define VRING_DESC_F_NEXT          1
#define VRING_DESC_F_WRITE         2
#define VRING_DESC_F_INDIRECT      4
#define VRING_AVAIL_F_NO_INTERRUPT 1
#define VRING_USED_F_NO_NOTIFY     1

struct vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};
struct vring_avail {
    uint16_t flags, idx, ring[VQ_MAX + 1]; /* ring[size] is used_event */
};
struct vring_used_elem {
    uint32_t id, len;
};
struct vring_used {
    uint16_t flags, idx;
    struct vring_used_elem ring[VQ_MAX]; /* after ring[size]: avail_event */
};

/* A buffer of a request: guest-physical address, length, device-writable or not. */
struct vbuf {
    uint64_t addr;
    uint32_t len;
    bool write;
};

struct vq {
    uint16_t size;
    volatile struct vring_desc *desc;
    volatile struct vring_avail *avail;
    volatile struct vring_used *used;
    uintptr_t notify; /* where the queue index is written to notify */
    uint16_t free_head, nfree;
    uint16_t avail_idx, used_idx; /* next avail entry to fill, next used entry to read */
    uint16_t kicked;              /* avail_idx at the last notification */
    uint16_t chain[VQ_MAX];       /* descriptors in the chain headed by this index */
    bool event_idx;
    uint16_t index; /* the queue's number: the value a notification writes */
};

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1     32
#define VIRTIO_S_ACKNOWLEDGE   1
#define VIRTIO_S_DRIVER        2
#define VIRTIO_S_DRIVER_OK     4
#define VIRTIO_S_FEATURES_OK   8
#define VIRTIO_S_NEEDS_RESET   0x40
#define VIRTIO_S_FAILED        0x80
#define VIRTIO_MAX_DEVS        4
#define VIRTIO_MAX_XQ          3 /* queues after queue 0 a device may use (virtio-net: tx; balloon: 3) */

/* Where the rings go instead of the driver's own memory (the hostile tests); 0 = default. */
struct vq_placement {
    uint64_t desc, driver, device;
};

struct vdev {
    struct pci_dev *pci;
    unsigned index; /* picks the ring memory and the vectors */
    uintptr_t common, notify_base, isr, devcfg;
    uint32_t notify_mult, notify_len, devcfg_len;
    uint8_t msix_cap;
    uint16_t msix_n;
    uintptr_t msix_table;
    uint64_t offered, features;
    uint8_t vec_cfg, vec_q;
    uint16_t max_queue_size; /* what the device offers */
    uint16_t queue_limit;    /* 0, or the most entries the driver asks for */
    bool irq;                /* wait by interrupts rather than polling */
    struct vq vq;
    /* Queues 1..nxq (0: queue 0 only). The caller sets nxq after virtio_probe(); virtio_start()
     * sets them up like queue 0 (same size limit, rings in static memory) in xq[0..nxq-1],
     * all on the queue vector. num_queues: what the device reports. */
    unsigned nxq;
    struct vq xq[VIRTIO_MAX_XQ];
    uint16_t num_queues;
};

/* Finds the virtio capabilities (common, notify, ISR, device; memory BARs only, which must
 * already be assigned) and the MSI-X table of p. index < VIRTIO_MAX_DEVS. Returns 0, or -1
 * with the reason printed. */
int virtio_probe(struct vdev *v, struct pci_dev *p, unsigned index);
/* Resets the device, negotiates (VERSION_1 plus what the device offers of want), programs
 * MSI-X (config vector 0, queue vector 1), sets up queue 0 (at most VQ_MAX and queue_limit
 * entries, rings in static memory unless at says otherwise), then queues 1..v->nxq (their
 * rings always in static memory) and sets DRIVER_OK. Returns 0; -1 if VERSION_1 or
 * FEATURES_OK was refused, -2 for a queue or vector problem, -3 if the device asked for a
 * reset (DEVICE_NEEDS_RESET) during setup. */
int virtio_start(struct vdev *v, uint64_t want, const struct vq_placement *at);
/* Writes 0 to device_status and waits (bounded) until it reads 0. */
void virtio_reset(struct vdev *v);
uint8_t virtio_status(const struct vdev *v);
static inline bool virtio_has(const struct vdev *v, unsigned bit)
{
    return v->features >> bit & 1;
}
/* Device-specific configuration fields (read twice around config_generation for 64 bits). */
uint32_t virtio_cfg32(const struct vdev *v, uint32_t off);
uint16_t virtio_cfg16(const struct vdev *v, uint32_t off);
uint8_t virtio_cfg8(const struct vdev *v, uint32_t off);
uint64_t virtio_cfg64(const struct vdev *v, uint32_t off);
/* Common configuration registers by offset (the hostile tests poke them). */
uint16_t virtio_common16(const struct vdev *v, uint32_t off);
void virtio_common_write16(const struct vdev *v, uint32_t off, uint16_t val);

/* Chains n buffers into free descriptors; returns the head, or -1 if there are not enough.
 * The chain is not visible to the device until vq_publish(). */
int vq_add(struct vq *q, const struct vbuf *b, unsigned n);
/* The same through one descriptor that points at table (n entries, in DMA memory). */
int vq_add_indirect(struct vq *q, struct vring_desc *table, const struct vbuf *b, unsigned n);
/* Puts head into the avail ring (the index store comes after a barrier). */
void vq_publish(struct vq *q, uint16_t head);
/* Notifies the device of new avail entries unless it asked not to be (NO_NOTIFY/avail_event). */
void virtio_kick(struct vdev *v);
/* The same for any of the device's queues (virtio_kick(v) is vq_kick(&v->vq)). */
void vq_kick(struct vq *q);
/* Asks for an interrupt at the next used entry (irq) or for none: avail flags and used_event. */
void vq_arm(struct vq *q, bool irq);
/* Takes the next used entry: returns its id (its descriptors freed) or -1 if none. */
int vq_pop(struct vq *q, uint32_t *len);
static inline bool vq_pending(const struct vq *q)
{
    return q->used->idx != q->used_idx;
}
/* Frees every descriptor (only when nothing is in flight: after a reset or a rejected chain). */
void vq_reclaim_all(struct vq *q);
/* Waits up to timeout_us for a used entry: 1 when one is there, 0 on timeout, -1 if the
 * device set DEVICE_NEEDS_RESET. Polls, or halts between interrupts when v->irq. */
int virtio_wait(struct vdev *v, uint32_t timeout_us);
/* Switches between waiting by interrupts (asks the device for one per used entry: avail
 * flags 0, used_event = next entry) and polling (NO_INTERRUPT, used_event behind). Only with
 * MSI-X. */
void virtio_set_irq(struct vdev *v, bool on);
/* Lets an interrupt for vector vec be taken: halts with interrupts on (the tick bounds each
 * halt) until one has arrived or max_us passed. A device that completes during the notify
 * leaves its interrupts pending while the driver never halts, and under an emulating KVM a
 * pending interrupt is taken at a halt, not right after sti as on hardware. */
void irq_window(uint8_t vec, uint32_t max_us);

/* ---- virtio-blk ---- */
#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK           0
#define VIRTIO_BLK_S_IOERR        1
#define VIRTIO_BLK_S_UNSUPP       2
#define BLK_STATUS_TIMEOUT        -1
#define BLK_STATUS_RESET          -2
#define BLK_STATUS_BADID          -3 /* the used ring named a chain that was not in flight */
#define BLK_MAX_SEGS              256
#define BLK_MAX_SLOTS             32

struct blk_hdr {
    uint32_t type, reserved;
    uint64_t sector;
};
struct blk_range { /* DISCARD / WRITE_ZEROES segment */
    uint64_t sector;
    uint32_t num_sectors, flags;
};
/* One request in flight: its header, status byte and indirect table, in DMA memory. */
struct blk_slot {
    struct blk_hdr hdr;
    struct blk_range range;
    volatile uint8_t status;
    uint8_t pad[7];
    struct vring_desc table[BLK_MAX_SEGS + 2];
};

struct blk {
    struct vdev v;
    char serial[21];
    uint64_t capacity; /* 512-byte sectors */
    uint32_t blk_size, seg_max, size_max;
    uint32_t max_discard_sectors, max_discard_seg, discard_align;
    uint32_t max_wz_sectors, max_wz_seg;
    uint8_t wz_may_unmap;
    bool ro, use_indirect;
    struct blk_slot *slots; /* BLK_MAX_SLOTS of them */
    int head_slot[VQ_MAX];  /* which slot a chain head belongs to */
    uint32_t used_len[BLK_MAX_SLOTS];
    uint32_t slot_busy; /* bitmap */
    uint32_t completions;
};

/* Finds every virtio-blk function in devs (1af4:1042, or 1af4:1001 with modern
 * capabilities); returns their indexes in idx (at most max). */
unsigned blk_find(const struct pci_dev *devs, unsigned n, unsigned *idx, unsigned max);
/* Probes and starts a virtio-blk device with the features want (plus the blk features it
 * offers that this driver understands), reads its configuration and its GET_ID serial.
 * Returns 0 or a negative virtio_start()/virtio_probe() error. */
int blk_open(struct blk *b, struct pci_dev *p, unsigned index, uint64_t want);
/* The same with a queue of at most queue_size entries (a power of two; 0: the largest). */
int blk_open_queue(struct blk *b, struct pci_dev *p, unsigned index, uint64_t want, uint16_t queue_size);
/* Resets and restarts with the same features (after DEVICE_NEEDS_RESET). */
int blk_restart(struct blk *b);
/* Submits a request: header (type, sector), data buffers, status byte. Uses an indirect
 * table when b->use_indirect. Returns the slot, or -1 if no slot or descriptors are free.
 * The device is not notified: call virtio_kick(&b->v). */
int blk_submit(struct blk *b, uint32_t type, uint64_t sector, const struct vbuf *data, unsigned n);
/* Waits for the next completion; returns its slot (status in b->slots[slot].status), or
 * BLK_STATUS_TIMEOUT / BLK_STATUS_RESET / BLK_STATUS_BADID. */
int blk_complete(struct blk *b, uint32_t timeout_us);
/* One request start to finish (QD 1, 2 s timeout): returns its status byte or a negative
 * BLK_STATUS_*. */
int blk_io(struct blk *b, uint32_t type, uint64_t sector, void *buf, uint32_t len);
/* DISCARD or WRITE_ZEROES of one range (one segment). */
int blk_range_op(struct blk *b, uint32_t type, uint64_t sector, uint32_t count, uint32_t flags);

#endif
