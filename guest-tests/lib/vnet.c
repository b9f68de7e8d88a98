/* virtio-net for test kernels: one receive and one transmit queue on the virtio 1.x library.
 * Written from the virtio 1.2 specification, 5.1 (network device).
 *
 * Receive buffers are single descriptors of rx_buf_len bytes; buffer i always belongs to
 * descriptor i, so a used entry's id names its buffer. Without MRG_RXBUF every frame comes in
 * one buffer (header + frame) and num_buffers must be 1; with it a frame may span several
 * used entries, the first of which carries the header and their count. Transmit slots hold
 * header + frame in one buffer (or, with tx_split, the header apart as its own descriptor). */
#include "vnet.h"

enum { /* struct virtio_net_config (5.1.4) */
       NCFG_MAC = 0,
       NCFG_STATUS = 6,
       NCFG_MAX_PAIRS = 8,
       NCFG_MTU = 10,
};
#define MERGE_MAX     65536u /* the most bytes a merged frame may have here */
#define RX_MIN_NO_MRG 1526u  /* the smallest buffer the spec asks for without MRG_RXBUF */

static struct {
    uint8_t *rx, *tx, *frame;
    struct virtio_net_hdr *hdrs;
    uint32_t rx_len;
} mem[VIRTIO_MAX_DEVS];

unsigned vnet_find(const struct pci_dev *devs, unsigned n, unsigned *idx, unsigned max)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n && k < max; i++) {
        const struct pci_dev *d = &devs[i];
        if (d->vendor == 0x1af4 &&
            (d->device == 0x1041 || (d->device == 0x1000 && pci_find_cap(d, PCI_CAP_VENDOR, 0))))
            idx[k++] = i;
    }
    return k;
}

void vnet_read_config(struct vnet *n)
{
    const struct vdev *v = &n->v;
    if (virtio_has(v, VIRTIO_NET_F_MAC)) {
        for (unsigned i = 0; i < 6; i++)
            n->mac[i] = virtio_cfg8(v, NCFG_MAC + i);
    } else { /* locally administered, unicast */
        static const uint8_t local[6] = { 0x02, 0x00, 0x00, 0x6b, 0x76, 0x00 };
        memcpy(n->mac, local, 6);
        n->mac[5] = (uint8_t)(v->index + 1);
    }
    n->status = virtio_has(v, VIRTIO_NET_F_STATUS) ? virtio_cfg16(v, NCFG_STATUS) : VIRTIO_NET_S_LINK_UP;
    n->max_pairs = virtio_has(v, VIRTIO_NET_F_MQ) ? virtio_cfg16(v, NCFG_MAX_PAIRS) : 1;
    n->mtu = virtio_has(v, VIRTIO_NET_F_MTU) ? virtio_cfg16(v, NCFG_MTU) : 1500;
}

void vnet_fill_rx(struct vnet *n)
{
    struct vq *q = n->rxq;
    bool added = false;
    while (q->nfree) {
        struct vbuf b = { (uintptr_t)(n->rx_mem + (uint32_t)q->free_head * n->rx_buf_len), n->rx_buf_len,
                          true };
        int head = vq_add(q, &b, 1);
        if (head < 0)
            break;
        vq_publish(q, (uint16_t)head);
        added = true;
    }
    if (added)
        vq_kick(q);
}

void vnet_set_irq(struct vnet *n, bool on)
{
    n->v.irq = on && n->v.msix_n >= 2;
    vq_arm(n->rxq, n->v.irq);
    vq_arm(n->txq, false);
}

int vnet_restart(struct vnet *n)
{
    n->v.nxq = 1;
    int r = virtio_start(&n->v, n->want, NULL);
    n->rxq = &n->v.vq, n->txq = &n->v.xq[0];
    memset(n->tx_busy, 0, sizeof(n->tx_busy));
    for (unsigned i = 0; i < VQ_MAX; i++)
        n->tx_slot_of_head[i] = -1;
    if (r)
        return r;
    n->mrg = virtio_has(&n->v, VIRTIO_NET_F_MRG_RXBUF);
    vnet_read_config(n);
    vnet_set_irq(n, n->v.irq);
    if (n->rx_mem && !n->no_rx_fill) /* not on the first start: vnet_open() sizes the buffers */
        vnet_fill_rx(n);
    return 0;
}

int vnet_open(struct vnet *n, struct pci_dev *p, unsigned index, uint64_t want, uint32_t rx_buf_len,
              uint16_t queue_limit)
{
    memset(n, 0, sizeof(*n));
    int r = virtio_probe(&n->v, p, index);
    if (r)
        return r;
    n->v.queue_limit = queue_limit;
    n->want = want | 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS | 1ull << VIRTIO_NET_F_MTU;
    r = vnet_restart(n);
    if (r)
        return r;
    if (!rx_buf_len)
        rx_buf_len = 2048;
    if (!n->mrg) {
        uint32_t need = (uint32_t)n->mtu + 14 + VNET_HDR_LEN;
        if (rx_buf_len < need)
            rx_buf_len = need;
        if (rx_buf_len < RX_MIN_NO_MRG)
            rx_buf_len = RX_MIN_NO_MRG;
    } else if (rx_buf_len < VNET_HDR_LEN) {
        rx_buf_len = VNET_HDR_LEN;
    }
    rx_buf_len = (rx_buf_len + 15) & ~15u;
    if (!mem[index].tx) {
        mem[index].tx = dma_alloc(VNET_TX_SLOTS * VNET_SLOT, 4096);
        mem[index].hdrs = dma_alloc(VNET_TX_SLOTS * sizeof(struct virtio_net_hdr), 64);
        mem[index].frame = dma_alloc(MERGE_MAX, 4096);
    }
    if (mem[index].rx_len < rx_buf_len) {
        mem[index].rx = dma_alloc(VQ_MAX * rx_buf_len, 4096);
        mem[index].rx_len = mem[index].rx ? rx_buf_len : 0;
    }
    if (!mem[index].tx || !mem[index].hdrs || !mem[index].frame || !mem[index].rx)
        return -4;
    n->rx_mem = mem[index].rx, n->tx_mem = mem[index].tx, n->tx_hdrs = mem[index].hdrs;
    n->frame = mem[index].frame, n->rx_buf_len = rx_buf_len;
    vnet_fill_rx(n);
    return 0;
}

/* ---- transmit ---- */

unsigned vnet_tx_reap(struct vnet *n)
{
    unsigned k = 0;
    for (;;) {
        int id = vq_pop(n->txq, NULL);
        if (id == -1)
            break;
        if (id < 0) {
            n->rx_bad++, n->bad_why = "tx used entry names no chain in flight";
            continue;
        }
        int s = n->tx_slot_of_head[id];
        if (s >= 0)
            n->tx_busy[s / 32] &= ~(1u << (s % 32));
        n->tx_slot_of_head[id] = -1;
        n->tx_done++, k++;
    }
    return k;
}

static int free_slot(const struct vnet *n)
{
    for (unsigned w = 0; w < VNET_TX_SLOTS / 32; w++)
        if (~n->tx_busy[w])
            return (int)(w * 32 + (unsigned)__builtin_ctz(~n->tx_busy[w]));
    return -1;
}

uint8_t *vnet_tx_alloc(struct vnet *n)
{
    vnet_tx_reap(n);
    uint64_t start = 0;
    int s;
    for (unsigned i = 0; (s = free_slot(n)) < 0 || !n->txq->nfree; i++) {
        if (i == 0)
            start = clock_us();
        pause();
        vnet_tx_reap(n);
        if ((i & 31) == 31 && (clock_us() - start > 1000000 || (virtio_status(&n->v) & VIRTIO_S_NEEDS_RESET)))
            return NULL;
    }
    n->tx_busy[s / 32] |= 1u << (s % 32);
    return n->tx_mem + (uint32_t)s * VNET_SLOT + VNET_HDR_LEN;
}

int vnet_send(struct vnet *n, uint8_t *p, uint32_t len, const struct virtio_net_hdr *hdr, bool kick)
{
    int s = (int)((uint32_t)(p - VNET_HDR_LEN - n->tx_mem) / VNET_SLOT);
    struct virtio_net_hdr *h = n->tx_split ? &n->tx_hdrs[s]
                                           : (struct virtio_net_hdr *)(void *)(p - VNET_HDR_LEN);
    if (hdr)
        *h = *hdr;
    else
        memset(h, 0, sizeof(*h));
    struct vbuf b[2];
    unsigned nb;
    if (n->tx_split) {
        b[0] = (struct vbuf){ (uintptr_t)h, VNET_HDR_LEN, false };
        b[1] = (struct vbuf){ (uintptr_t)p, len, false };
        nb = 2;
    } else {
        b[0] = (struct vbuf){ (uintptr_t)h, VNET_HDR_LEN + len, false };
        nb = 1;
    }
    int head = vq_add(n->txq, b, nb);
    if (head < 0) {
        n->tx_busy[s / 32] &= ~(1u << (s % 32));
        return -1;
    }
    n->tx_slot_of_head[head] = (int16_t)s;
    vq_publish(n->txq, (uint16_t)head);
    n->tx_frames++, n->tx_bytes += len;
    if (kick)
        vq_kick(n->txq);
    return 0;
}

int vnet_send_raw(struct vnet *n, const void *buf, uint32_t len, bool kick)
{
    struct vbuf b = { (uintptr_t)buf, len, false };
    int head = vq_add(n->txq, &b, 1);
    if (head < 0)
        return -1;
    n->tx_slot_of_head[head] = -1;
    vq_publish(n->txq, (uint16_t)head);
    n->tx_frames++, n->tx_bytes += len > VNET_HDR_LEN ? len - VNET_HDR_LEN : 0;
    if (kick)
        vq_kick(n->txq);
    return 0;
}

void vnet_kick_tx(struct vnet *n)
{
    vq_kick(n->txq);
}

bool vnet_tx_drain(struct vnet *n, uint32_t timeout_us)
{
    uint64_t start = clock_us();
    for (unsigned i = 0;; i++) {
        vnet_tx_reap(n);
        if (n->txq->nfree == n->txq->size)
            return true;
        pause();
        if ((i & 31) == 31 && clock_us() - start > timeout_us)
            return false;
    }
}

/* ---- receive ---- */

static int bad(struct vnet *n, const char *why)
{
    n->rx_bad++, n->bad_why = why;
    return VNET_RX_BAD;
}

/* The rest of a merged frame: nb - 1 more used entries, each a buffer without a header.
 * They may be published a moment after the first. */
static int merge(struct vnet *n, const uint8_t *first, uint32_t first_len, uint16_t nb, const uint8_t **frame)
{
    uint32_t total = first_len;
    memcpy(n->frame, first, first_len);
    for (unsigned k = 1; k < nb; k++) {
        uint64_t start = clock_us();
        uint32_t len;
        int id;
        for (unsigned i = 0; (id = vq_pop(n->rxq, &len)) == -1; i++) {
            pause();
            if ((i & 31) == 31 && clock_us() - start > 100000)
                return bad(n, "a merged frame's buffers never all arrived");
        }
        if (id < 0)
            return bad(n, "rx used entry names no buffer in flight");
        if (len > n->rx_buf_len)
            return bad(n, "rx used length beyond the buffer");
        if (total + len > MERGE_MAX)
            return bad(n, "merged frame longer than 64 KiB");
        memcpy(n->frame + total, n->rx_mem + (uint32_t)id * n->rx_buf_len, len);
        total += len;
    }
    n->rx_merged++;
    *frame = n->frame;
    return (int)total;
}

int vnet_recv(struct vnet *n, const uint8_t **frame, uint32_t timeout_us)
{
    if (!n->no_rx_fill && n->rxq->nfree >= n->rx_refill)
        vnet_fill_rx(n); /* the buffers the previous calls handed out are free again */
    uint64_t start = 0;
    uint32_t len;
    int id;
    for (unsigned i = 0; (id = vq_pop(n->rxq, &len)) == -1; i++) {
        if (i == 0) {
            if (!timeout_us)
                return 0;
            start = clock_us();
            vq_arm(n->rxq, n->v.irq);
            continue; /* look again: a frame may have come before the arming */
        }
        if (n->v.irq)
            __asm__ volatile("sti; hlt; cli" ::: "memory"); /* sti's shadow covers hlt */
        else
            pause();
        if (n->v.irq || (i & 31) == 31) {
            if (vq_pending(n->rxq))
                continue;
            if (virtio_status(&n->v) & VIRTIO_S_NEEDS_RESET)
                return VNET_RX_RESET;
            if (clock_us() - start > timeout_us)
                return 0;
        }
    }
    if (id < 0)
        return bad(n, "rx used entry names no buffer in flight");
    if (len < VNET_HDR_LEN)
        return bad(n, "rx used length shorter than the virtio-net header");
    if (len > n->rx_buf_len)
        return bad(n, "rx used length beyond the buffer");
    const uint8_t *buf = n->rx_mem + (uint32_t)id * n->rx_buf_len;
    memcpy(&n->last_hdr, buf, sizeof(n->last_hdr));
    uint16_t nb = n->last_hdr.num_buffers;
    int flen = (int)(len - VNET_HDR_LEN);
    if (!n->mrg && nb != 1 && !(nb == 0 && n->lenient_nb))
        bad(n, "num_buffers is not 1 without MRG_RXBUF"); /* counted; the frame is still taken */
    if (n->mrg && nb == 0)
        return bad(n, "num_buffers is 0");
    if (n->mrg && nb > 1) {
        if (nb > n->rxq->size)
            return bad(n, "num_buffers larger than the queue");
        flen = merge(n, buf + VNET_HDR_LEN, len - VNET_HDR_LEN, nb, frame);
        if (flen < 0)
            return flen;
    } else {
        *frame = buf + VNET_HDR_LEN;
    }
    n->rx_frames++, n->rx_bytes += (uint32_t)flen;
    return flen;
}

/* ---- test-kernel glue ---- */

static struct pci_dev net_devs[PCI_MAX_DEVS];

static bool is_vnet(const struct pci_dev *d)
{
    unsigned i;
    return vnet_find(d, 1, &i, 1) == 1;
}

static unsigned ndevs;

struct pci_dev *vnet_pci(unsigned *n)
{
    *n = ndevs;
    return net_devs;
}

int vnet_setup(struct vnet *n, unsigned which)
{
    static bool scanned;
    static unsigned nnics, idx[VIRTIO_MAX_DEVS];
    if (!scanned) {
        scanned = true;
        virtio_irq_init();
        dma_reset();
        pci_ecam_init();
        ndevs = pci_scan(net_devs, PCI_MAX_DEVS);
        /* kvmbox may put 64-bit BARs above 4 GiB, out of reach of a 32-bit guest: move them */
        if (pci_relocate(net_devs, ndevs, is_vnet, 0xc0000000u, 0xe0000000u) < 0)
            printf("note: relocating the virtio-net BARs failed\n");
        nnics = vnet_find(net_devs, ndevs, idx, VIRTIO_MAX_DEVS);
    }
    if (which >= nnics) {
        fail("no virtio-net device number %u (found %u)", which, nnics);
        return -1;
    }
    uint64_t want = arg_u64("mrg", 1) ? 1ull << VIRTIO_NET_F_MRG_RXBUF : 0;
    if (arg_u64("csum", 0))
        want |= 1ull << VIRTIO_NET_F_CSUM | 1ull << VIRTIO_NET_F_GUEST_CSUM;
    if (arg_u64("event_idx", 0))
        want |= 1ull << VIRTIO_F_EVENT_IDX;
    if (arg_u64("indirect", 0))
        want |= 1ull << VIRTIO_F_INDIRECT_DESC;
    int r = vnet_open(n, &net_devs[idx[which]], which, want, (uint32_t)arg_u64("rxbuf", 0),
                      (uint16_t)arg_u64("qsize", 0));
    if (r) {
        fail("virtio-net %u does not start (%d)", which, r);
        return -1;
    }
    n->tx_split = arg_u64("split", 0);
    n->lenient_nb = arg_u64("lenient", 0);
    vnet_set_irq(n, arg_u64("irq", 1));
    printf("NIC%u %02x:%02x:%02x:%02x:%02x:%02x pci %02x.%x status %x mtu %u queues rx %u tx %u (device %u) "
           "features %x:%x%s%s, rx buffers %u bytes, %s\n",
           which, n->mac[0], n->mac[1], n->mac[2], n->mac[3], n->mac[4], n->mac[5], net_devs[idx[which]].dev,
           net_devs[idx[which]].fn, n->status, n->mtu, n->rxq->size, n->txq->size, n->v.num_queues,
           (uint32_t)(n->v.features >> 32), (uint32_t)n->v.features, n->mrg ? " MRG_RXBUF" : "",
           n->tx_split ? ", tx split" : "", n->rx_buf_len, n->v.irq ? "interrupts" : "polling");
    return 0;
}
