/* A small virtio-net driver for test kernels, on the virtio 1.x library (virtio.h): receiveq1
 * (queue 0, the device's v.vq) and transmitq1 (queue 1, v.xq[0]); no control queue. Every
 * frame carries the 12-byte struct virtio_net_hdr (VERSION_1 is always negotiated, so the
 * header includes num_buffers). Receive buffers are posted with or without
 * VIRTIO_NET_F_MRG_RXBUF; frames arrive by polling or by MSI-X interrupts (sti; hlt on the
 * queue vector, which both queues share). Written from the virtio 1.2 specification, 5.1. */
#ifndef GT_VNET_H
#define GT_VNET_H

#include "virtio.h"

#define VIRTIO_NET_F_CSUM           0
#define VIRTIO_NET_F_GUEST_CSUM     1
#define VIRTIO_NET_F_MTU            3
#define VIRTIO_NET_F_MAC            5
#define VIRTIO_NET_F_MRG_RXBUF      15
#define VIRTIO_NET_F_STATUS         16
#define VIRTIO_NET_F_CTRL_VQ        17
#define VIRTIO_NET_F_MQ             22
#define VIRTIO_NET_S_LINK_UP        1
#define VIRTIO_NET_S_ANNOUNCE       2
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE     0

struct virtio_net_hdr {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
    uint16_t num_buffers; /* rx: buffers this frame spans; tx: 0 */
} __attribute__((packed));
#define VNET_HDR_LEN 12

#define VNET_SLOT      2048                       /* bytes per tx slot: header + frame */
#define VNET_FRAME_MAX (VNET_SLOT - VNET_HDR_LEN) /* largest frame this driver sends or takes */
#define VNET_TX_SLOTS  128

/* vnet_recv() results below zero */
#define VNET_RX_RESET -1 /* the device set DEVICE_NEEDS_RESET */
#define VNET_RX_BAD   -2 /* a used entry this driver cannot accept (counted in rx_bad) */

struct vnet {
    struct vdev v; /* v.vq: receiveq1, v.xq[0]: transmitq1 */
    struct vq *rxq, *txq;
    uint8_t mac[6];
    uint16_t status, mtu, max_pairs;
    bool mrg;                       /* MRG_RXBUF negotiated */
    bool tx_split;                  /* send header and frame as two descriptors (default one) */
    bool no_rx_fill;                /* hostile tests: leave the receive queue to the caller */
    uint16_t rx_refill;             /* vnet_recv() reposts buffers once this many are free (0: always) */
    bool lenient_nb;                /* accept num_buffers 0 without MRG_RXBUF (QEMU 7.2 leaves it 0) */
    uint32_t rx_buf_len;            /* bytes per receive buffer, header included */
    uint8_t *rx_mem;                /* rxq->size buffers of rx_buf_len, by descriptor index */
    uint8_t *tx_mem;                /* VNET_TX_SLOTS slots of VNET_SLOT */
    struct virtio_net_hdr *tx_hdrs; /* tx_split: the headers, one per slot */
    uint8_t *frame;                 /* frames merged from several buffers are copied here */
    uint32_t tx_busy[(VNET_TX_SLOTS + 31) / 32];
    int16_t tx_slot_of_head[VQ_MAX];
    uint64_t want;                  /* the features asked for (vnet_restart() asks again) */
    struct virtio_net_hdr last_hdr; /* the header of the last frame received */
    uint32_t rx_frames, tx_frames, rx_merged, rx_bad, tx_done;
    uint64_t rx_bytes, tx_bytes;
    const char *bad_why; /* the last reason an rx entry was refused */
};

/* Finds every virtio-net function (1af4:1041, or 1af4:1000 with modern capabilities) in
 * devs; returns their indexes in idx (at most max). */
unsigned vnet_find(const struct pci_dev *devs, unsigned n, unsigned *idx, unsigned max);
/* Probes and starts p as device index (vectors, rings) with MAC, STATUS and MTU plus the
 * features in want (e.g. 1 << VIRTIO_NET_F_MRG_RXBUF), reads the configuration and fills
 * the receive queue with buffers of rx_buf_len bytes (0: 2048; without MRG_RXBUF at least
 * 1526 and MTU + 26). queue_limit: at most that many entries per queue (0: up to 256).
 * Returns 0, or a virtio_start()/virtio_probe() error, or -4 if buffers could not be
 * allocated. */
int vnet_open(struct vnet *n, struct pci_dev *p, unsigned index, uint64_t want, uint32_t rx_buf_len,
              uint16_t queue_limit);
/* Resets and starts again with the same features and buffers (after DEVICE_NEEDS_RESET or
 * a hostile test); the receive queue is refilled. Returns as virtio_start(). */
int vnet_restart(struct vnet *n);
/* Posts every free receive buffer and notifies. */
void vnet_fill_rx(struct vnet *n);

/* A free tx slot's frame area (VNET_FRAME_MAX bytes), reaping finished sends first and
 * waiting up to 1 s for one; NULL if none frees up (or the device asked for a reset). */
uint8_t *vnet_tx_alloc(struct vnet *n);
/* Sends len bytes of the frame at p (from vnet_tx_alloc()) with a zeroed header, or with hdr
 * when not NULL; kick=false leaves the notification to vnet_kick_tx(). Returns 0, -1 if
 * there are no free descriptors. The slot is freed when the device uses it. */
int vnet_send(struct vnet *n, uint8_t *p, uint32_t len, const struct virtio_net_hdr *hdr, bool kick);
/* Sends header + frame from caller memory (buf: a 12-byte header then the frame, len bytes
 * in all) without copying; buf must stay unchanged until used. Returns 0 or -1 (no
 * descriptors). */
int vnet_send_raw(struct vnet *n, const void *buf, uint32_t len, bool kick);
void vnet_kick_tx(struct vnet *n);
/* Takes every used tx entry; returns how many. */
unsigned vnet_tx_reap(struct vnet *n);
/* Waits up to timeout_us until every sent frame has been used; true if so. */
bool vnet_tx_drain(struct vnet *n, uint32_t timeout_us);

/* Receives one frame: *frame points at it (after the virtio header), valid until the next
 * vnet_recv(); returns its length, 0 on timeout, VNET_RX_RESET or VNET_RX_BAD. Halts between
 * interrupts when n->v.irq (see virtio_set_irq), else polls. timeout_us 0: just looks. */
int vnet_recv(struct vnet *n, const uint8_t **frame, uint32_t timeout_us);
/* Switches between waiting for rx by interrupts and polling (interrupts for tx are never
 * asked for). */
void vnet_set_irq(struct vnet *n, bool on);
/* Reads the configuration again (status may change: link up/down). */
void vnet_read_config(struct vnet *n);

/* For test kernels: on the first call scans PCI, moves the virtio-net BARs below 4 GiB and
 * sets up interrupts; then opens virtio-net device number which (0: the first) as device
 * index which, with the command line's options: mrg=0|1 (MRG_RXBUF, default 1), rxbuf=N
 * (bytes per rx buffer), qsize=N (queue size limit), irq=0|1 (wait by MSI-X, default 1),
 * split=1 (tx header as its own descriptor), csum=1 (CSUM + GUEST_CSUM), event_idx=1,
 * indirect=1 (INDIRECT_DESC), lenient=1 (accept num_buffers 0 without MRG_RXBUF, as QEMU
 * 7.2 gives it; the spec says 1).
 * Prints the NIC's configuration; returns 0, or -1 after a FAIL line. */
int vnet_setup(struct vnet *n, unsigned which);
/* The PCI functions vnet_setup() found (n of them), for kernels that use other devices. */
struct pci_dev *vnet_pci(unsigned *n);

#endif
