/* Split virtqueues (virtio 1.2, 2.7), read with the guest treated as hostile.
 *
 * The rings live in guest RAM the guest can change at any moment: every index and descriptor
 * is copied out once, checked, and only the copy is used. Rings are checked wholly inside
 * RAM when the queue goes live; each buffer of a chain is checked through gm_ptr; a chain
 * walk has a budget of the queue size, so loops and over-long chains end in an error. */
#ifndef KVMBOX_VIRTQ_H
#define KVMBOX_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>

struct guest_mem;

#define VIRTQ_DESC_F_NEXT          1
#define VIRTQ_DESC_F_WRITE         2
#define VIRTQ_DESC_F_INDIRECT      4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY     1
#define VIRTQ_MAX_SIZE             1024

/* Why a queue or a chain was refused: one reason each (returned negated). */
enum virtq_err {
    VQ_OK = 0,
    VQ_E_SIZE,            /* queue size 0, not a power of two, or above the maximum */
    VQ_E_RING_ADDR,       /* a ring is not wholly inside guest RAM */
    VQ_E_RING_ALIGN,      /* a ring is misaligned (desc 16, avail 2, used 4) */
    VQ_E_AVAIL_IDX,       /* the avail index ran more than a queue ahead */
    VQ_E_HEAD,            /* a head index outside the queue */
    VQ_E_NEXT,            /* a next index outside the queue (or the indirect table) */
    VQ_E_TOO_LONG,        /* chain longer than the queue: a loop, or abuse */
    VQ_E_BUF_ADDR,        /* a buffer not wholly inside guest RAM */
    VQ_E_INDIRECT_NESTED, /* an indirect descriptor inside an indirect table */
    VQ_E_INDIRECT_LEN,    /* indirect table length 0, not a multiple of 16, or too long */
    VQ_E_INDIRECT_ADDR,   /* indirect table not wholly inside guest RAM */
    VQ_E_INDIRECT_NEXT,   /* INDIRECT together with NEXT */
    VQ_E_ORDER,           /* a device-readable buffer after a device-writable one */
    VQ_E_MAX
};
const char *virtq_strerror(int err); /* accepts the negated value too */

struct virtq_seg {
    uint8_t *ptr; /* host pointer, valid for len bytes */
    uint32_t len;
    bool write; /* device-writable */
};

#define VIRTQ_CHAIN_MAX 256 /* segments a chain may carry (bounded by the queue size too) */

struct virtq_chain {
    uint16_t head;
    unsigned nseg;
    unsigned nread; /* segments 0..nread-1 are device-readable */
    struct virtq_seg seg[VIRTQ_CHAIN_MAX];
};

struct virtq {
    const struct guest_mem *gm;
    uint16_t size;
    bool live;
    bool event_idx;
    uint8_t *desc; /* host pointers, checked at setup */
    uint8_t *avail;
    uint8_t *used;
    uint16_t last_avail; /* next avail entry to take */
    uint16_t used_idx;   /* our copy of used->idx */
    uint16_t signalled;  /* used_idx when the driver was last interrupted */
    bool signalled_valid;
};

/* Checks and takes the rings at DESC/AVAIL/USED for a queue of SIZE entries (at most MAX).
 * Returns 0 or -enum virtq_err; on error the queue stays not live. */
int virtq_setup(struct virtq *q, const struct guest_mem *gm, uint16_t size, uint16_t max, uint64_t desc,
                uint64_t avail, uint64_t used, bool event_idx);
void virtq_reset(struct virtq *q);

/* Takes the next available chain. Returns 1 with C filled, 0 when the ring is empty, or
 * -enum virtq_err when the ring or the chain is malformed; C->head is then valid only for
 * errors after the head was read (VQ_E_HEAD and VQ_E_AVAIL_IDX leave it 0xffff). */
int virtq_pop(struct virtq *q, struct virtq_chain *c);
/* Rings on which virtq_pop returned 0: with EVENT_IDX, asks for a notification at the next
 * buffer; returns true when buffers arrived meanwhile (pop again). */
bool virtq_enable_notify(struct virtq *q);
/* Puts back the last N chains taken by virtq_pop (a received frame that did not fit). */
void virtq_unpop(struct virtq *q, uint16_t n);
/* Whether the driver has made buffers available that virtq_pop has not taken yet. */
bool virtq_has_avail(struct virtq *q);
/* Returns HEAD to the driver with LEN bytes written. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t len);
/* After pushes: whether the driver wants an interrupt now (EVENT_IDX or NO_INTERRUPT). */
bool virtq_should_notify(struct virtq *q);

#endif
