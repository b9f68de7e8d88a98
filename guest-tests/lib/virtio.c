/* virtio 1.x over modern PCI, split virtqueues, and virtio-blk requests, for test kernels.
 * Written from the virtio 1.2 specification (4.1 PCI transport, 2.7 split virtqueues, 5.2
 * block device). Interrupts are counted per vector; waiting polls or halts. */
#include "virtio.h"

/* ---- memory and time ---- */

#define DMA_BASE 0x400000u

/* Ring memory for each device: the descriptor table (16-byte aligned, here a page), the used
 * ring (4-byte aligned) with room for avail_event after VQ_MAX entries, the avail ring. */
struct ring_mem {
    struct vring_desc desc[VQ_MAX] __attribute__((aligned(4096)));
    struct vring_used used __attribute__((aligned(4096)));
    uint16_t used_tail;
    struct vring_avail avail __attribute__((aligned(64)));
};
static struct ring_mem rings[VIRTIO_MAX_DEVS];
static struct ring_mem xrings[VIRTIO_MAX_DEVS][VIRTIO_MAX_XQ]; /* queues 1..nxq */

static uint32_t dma_next, dma_end;

uint64_t ram_end(void)
{
    uint64_t end = 0;
    for (unsigned i = 0; i < boot.nmem; i++) {
        uint64_t e = boot.mem[i].addr + boot.mem[i].size;
        if (boot.mem[i].type == 1 && e <= 0x100000000ull && e > end)
            end = e;
    }
    for (bool grew = true; grew;) {
        grew = false;
        for (unsigned i = 0; i < boot.nmem; i++)
            if (boot.mem[i].addr == end && boot.mem[i].size) {
                end += boot.mem[i].size;
                grew = true;
            }
    }
    return end;
}

void dma_reset(void)
{
    dma_next = DMA_BASE, dma_end = 0;
    for (unsigned i = 0; i < boot.nmem; i++) {
        const struct mem_range *r = &boot.mem[i];
        if (r->type == 1 && r->addr <= DMA_BASE && r->addr + r->size > DMA_BASE)
            dma_end = (uint32_t)(r->addr + r->size > 0xfffff000ull ? 0xfffff000ull : r->addr + r->size);
    }
    if ((uintptr_t)&rings[VIRTIO_MAX_DEVS] > DMA_BASE || (uintptr_t)&xrings[VIRTIO_MAX_DEVS] > DMA_BASE)
        /* the kernel image must end below */
        dma_end = 0;
}

void *dma_alloc(uint32_t size, uint32_t align)
{
    if (!dma_next)
        dma_reset();
    uint32_t at = (dma_next + align - 1) & ~(align - 1);
    if (!dma_end || at < dma_next || at + size < at || at + size > dma_end)
        return NULL;
    dma_next = at + size;
    return (void *)(uintptr_t)at;
}

uint64_t clock_us(void)
{
    static uint32_t last;
    static uint64_t ticks;
    static bool started;
    uint32_t now = pmtimer_read();
    if (started)
        ticks += (now - last) & 0xffffff;
    started = true;
    last = now;
    return (ticks * 18309) >> 16; /* 1e6 / 3579545 = 18308.7 / 65536, no 64-bit division */
}

/* ---- interrupts ---- */

volatile uint32_t irq_count[64];

#define HANDLER(n)               \
    static void on_vec_##n(void) \
    {                            \
        irq_count[n]++;          \
        lapic_eoi();             \
    }
HANDLER(0x30)
HANDLER(0x31)
HANDLER(0x32)
HANDLER(0x33)
HANDLER(0x34) HANDLER(0x35) HANDLER(0x36) HANDLER(0x37) HANDLER(0x3f)

    void virtio_irq_init(void)
{
    static const irq_handler h[8] = { on_vec_0x30, on_vec_0x31, on_vec_0x32, on_vec_0x33,
                                      on_vec_0x34, on_vec_0x35, on_vec_0x36, on_vec_0x37 };
    pic_disable();
    lapic_enable();
    for (unsigned i = 0; i < 2 * VIRTIO_MAX_DEVS; i++)
        idt_set((uint8_t)(VIRTIO_VEC_BASE + i), h[i]);
    idt_set(VIRTIO_VEC_TICK, on_vec_0x3f);
    mmio_write32(LAPIC_BASE + 0x3e0, 0x3);                          /* divide by 16 */
    mmio_write32(LAPIC_BASE + 0x320, VIRTIO_VEC_TICK | (1u << 17)); /* periodic */
    mmio_write32(LAPIC_BASE + 0x380, 625000);                       /* 10 ms at a 1 GHz bus */
}

/* ---- transport ---- */

enum { /* common configuration (4.1.4.3) */
       CC_DF_SELECT = 0x00,
       CC_DF = 0x04,
       CC_GF_SELECT = 0x08,
       CC_GF = 0x0c,
       CC_MSIX = 0x10,
       CC_NUM_QUEUES = 0x12,
       CC_STATUS = 0x14,
       CC_GENERATION = 0x15,
       CC_Q_SELECT = 0x16,
       CC_Q_SIZE = 0x18,
       CC_Q_MSIX = 0x1a,
       CC_Q_ENABLE = 0x1c,
       CC_Q_NOTIFY_OFF = 0x1e,
       CC_Q_DESC = 0x20,
       CC_Q_DRIVER = 0x28,
       CC_Q_DEVICE = 0x30,
       CC_LEN = 0x38,
};
enum { CAP_COMMON = 1, CAP_NOTIFY = 2, CAP_ISR = 3, CAP_DEVICE = 4 };
#define NO_VECTOR 0xffff

static inline uint8_t rd8(uintptr_t a)
{
    return *(volatile uint8_t *)a;
}
static inline uint16_t rd16(uintptr_t a)
{
    return *(volatile uint16_t *)a;
}
static inline void wr8(uintptr_t a, uint8_t v)
{
    *(volatile uint8_t *)a = v;
}
static inline void wr16(uintptr_t a, uint16_t v)
{
    *(volatile uint16_t *)a = v;
}
static inline void wr64(uintptr_t a, uint64_t v)
{
    mmio_write32(a, (uint32_t)v), mmio_write32(a + 4, (uint32_t)(v >> 32));
}

uint16_t virtio_common16(const struct vdev *v, uint32_t off)
{
    return rd16(v->common + off);
}
void virtio_common_write16(const struct vdev *v, uint32_t off, uint16_t val)
{
    wr16(v->common + off, val);
}
uint8_t virtio_status(const struct vdev *v)
{
    return rd8(v->common + CC_STATUS);
}

int virtio_probe(struct vdev *v, struct pci_dev *p, unsigned index)
{
    *v = (struct vdev){ .pci = p, .index = index };
    if (index >= VIRTIO_MAX_DEVS)
        return -1;
    for (uint8_t c = pci_find_cap(p, PCI_CAP_VENDOR, 0); c; c = pci_find_cap(p, PCI_CAP_VENDOR, c)) {
        uint8_t type = pci_read8(p, c + 3), bar = pci_read8(p, c + 4);
        uint32_t off = pci_read32(p, c + 8), len = pci_read32(p, c + 12);
        if (bar > 5 || p->bar[bar].io || !p->bar[bar].size || off > p->bar[bar].size ||
            len > p->bar[bar].size - off)
            continue;
        uintptr_t a = (uintptr_t)(p->bar[bar].base + off);
        if (type == CAP_COMMON && !v->common && len >= CC_LEN)
            v->common = a;
        else if (type == CAP_NOTIFY && !v->notify_base)
            v->notify_base = a, v->notify_mult = pci_read32(p, c + 16), v->notify_len = len;
        else if (type == CAP_ISR && !v->isr)
            v->isr = a;
        else if (type == CAP_DEVICE && !v->devcfg)
            v->devcfg = a, v->devcfg_len = len;
    }
    if (!v->common || !v->notify_base || !v->devcfg) {
        printf("virtio %02x.%x: missing capabilities (common %x notify %x device %x)\n", p->dev, p->fn,
               v->common, v->notify_base, v->devcfg);
        return -1;
    }
    uint8_t m = pci_find_cap(p, PCI_CAP_MSIX, 0);
    if (m) {
        uint16_t ctl = pci_read16(p, m + 2);
        uint32_t tbl = pci_read32(p, m + 4);
        const struct pci_bar *b = &p->bar[tbl & 7];
        if ((tbl & 7) <= 5 && !b->io && b->size) {
            v->msix_cap = m, v->msix_n = (uint16_t)((ctl & 0x7ff) + 1);
            v->msix_table = (uintptr_t)(b->base + (tbl & ~7u));
        }
    }
    v->vec_cfg = (uint8_t)(VIRTIO_VEC_BASE + 2 * index), v->vec_q = (uint8_t)(v->vec_cfg + 1);
    return 0;
}

void virtio_reset(struct vdev *v)
{
    wr8(v->common + CC_STATUS, 0);
    uint64_t start = clock_us();
    while (virtio_status(v) != 0 && clock_us() - start < 500000)
        pause();
}

static void set_status(struct vdev *v, uint8_t bits)
{
    wr8(v->common + CC_STATUS, (uint8_t)(virtio_status(v) | bits));
}

static void msix_setup(struct vdev *v)
{
    uint32_t addr = LAPIC_BASE | (lapic_id() << 12);
    uint8_t vec[2] = { v->vec_cfg, v->vec_q };
    for (unsigned i = 0; i < 2; i++) {
        uintptr_t e = v->msix_table + 16 * i;
        mmio_write32(e, addr), mmio_write32(e + 4, 0), mmio_write32(e + 8, vec[i]);
        mmio_write32(e + 12, 0); /* unmasked */
    }
    uint16_t ctl = pci_read16(v->pci, v->msix_cap + 2);
    pci_write16(v->pci, v->msix_cap + 2, (uint16_t)((ctl | 0x8000) & ~0x4000));
}

/* The field after the used ring's entries (EVENT_IDX): where the device says which avail
 * index it wants to be notified at. */
static volatile uint16_t *avail_event(uintptr_t used, uint16_t size)
{
    return (volatile uint16_t *)(used + 4 + 8u * size);
}

static void vq_init(struct vq *q, uint16_t size, struct ring_mem *r)
{
    *q = (struct vq){ .size = size, .desc = r->desc, .avail = &r->avail, .used = &r->used, .nfree = size };
    for (uint16_t i = 0; i < size; i++)
        r->desc[i].next = (uint16_t)(i + 1);
    r->avail.flags = 0, r->avail.idx = 0, r->avail.ring[size] = 0;
    r->used.flags = 0, r->used.idx = 0;
    *avail_event((uintptr_t)&r->used, size) = 0;
}

/* Selects queue idx, sizes it (at most VQ_MAX and v->queue_limit), places its rings (at, or
 * r), routes it to the queue vector and enables it. Returns 0 or -2. */
static int queue_setup(struct vdev *v, uint16_t idx, struct vq *q, struct ring_mem *r,
                       const struct vq_placement *at, bool msix)
{
    wr16(v->common + CC_Q_SELECT, idx);
    uint16_t max = rd16(v->common + CC_Q_SIZE), size = VQ_MAX;
    if (idx == 0)
        v->max_queue_size = max;
    if (!max)
        return -2;
    while (size > max || (v->queue_limit && size > v->queue_limit))
        size >>= 1;
    vq_init(q, size, r);
    q->index = idx;
    q->event_idx = virtio_has(v, VIRTIO_F_EVENT_IDX);
    wr16(v->common + CC_Q_SIZE, size);
    wr64(v->common + CC_Q_DESC, at && at->desc ? at->desc : (uintptr_t)r->desc);
    wr64(v->common + CC_Q_DRIVER, at && at->driver ? at->driver : (uintptr_t)&r->avail);
    wr64(v->common + CC_Q_DEVICE, at && at->device ? at->device : (uintptr_t)&r->used);
    if (msix) {
        wr16(v->common + CC_Q_MSIX, 1);
        if (rd16(v->common + CC_Q_MSIX) != 1)
            return -2;
    }
    uint64_t noff = (uint64_t)rd16(v->common + CC_Q_NOTIFY_OFF) * v->notify_mult;
    if (noff + 2 > v->notify_len)
        return -2;
    q->notify = v->notify_base + (uintptr_t)noff;
    wr16(v->common + CC_Q_ENABLE, 1);
    return 0;
}

int virtio_start(struct vdev *v, uint64_t want, const struct vq_placement *at)
{
    virtio_reset(v);
    set_status(v, VIRTIO_S_ACKNOWLEDGE);
    set_status(v, VIRTIO_S_DRIVER);
    mmio_write32(v->common + CC_DF_SELECT, 0);
    uint64_t lo = mmio_read32(v->common + CC_DF);
    mmio_write32(v->common + CC_DF_SELECT, 1);
    v->offered = lo | (uint64_t)mmio_read32(v->common + CC_DF) << 32;
    v->features = v->offered & (want | 1ull << VIRTIO_F_VERSION_1);
    if (!virtio_has(v, VIRTIO_F_VERSION_1)) {
        set_status(v, VIRTIO_S_FAILED);
        return -1;
    }
    mmio_write32(v->common + CC_GF_SELECT, 0);
    mmio_write32(v->common + CC_GF, (uint32_t)v->features);
    mmio_write32(v->common + CC_GF_SELECT, 1);
    mmio_write32(v->common + CC_GF, (uint32_t)(v->features >> 32));
    set_status(v, VIRTIO_S_FEATURES_OK);
    if (!(virtio_status(v) & VIRTIO_S_FEATURES_OK)) {
        set_status(v, VIRTIO_S_FAILED);
        return -1;
    }
    bool msix = v->msix_n >= 2;
    if (msix) {
        msix_setup(v);
        wr16(v->common + CC_MSIX, 0);
        if (rd16(v->common + CC_MSIX) != 0)
            return -2;
    }
    v->num_queues = rd16(v->common + CC_NUM_QUEUES);
    int r = queue_setup(v, 0, &v->vq, &rings[v->index], at, msix);
    if (r)
        return r;
    for (unsigned k = 0; k < v->nxq && k < VIRTIO_MAX_XQ; k++) {
        r = queue_setup(v, (uint16_t)(k + 1), &v->xq[k], &xrings[v->index][k], NULL, msix);
        if (r)
            return r;
    }
    if (virtio_status(v) & VIRTIO_S_NEEDS_RESET)
        return -3;
    set_status(v, VIRTIO_S_DRIVER_OK);
    if (virtio_status(v) & VIRTIO_S_NEEDS_RESET)
        return -3;
    if (!msix)
        v->irq = false;
    return 0;
}

uint8_t virtio_cfg8(const struct vdev *v, uint32_t off)
{
    return off + 1 <= v->devcfg_len ? rd8(v->devcfg + off) : 0;
}

uint16_t virtio_cfg16(const struct vdev *v, uint32_t off)
{
    return off + 2 <= v->devcfg_len ? rd16(v->devcfg + off) : 0;
}

uint32_t virtio_cfg32(const struct vdev *v, uint32_t off)
{
    return off + 4 <= v->devcfg_len ? mmio_read32(v->devcfg + off) : 0;
}

uint64_t virtio_cfg64(const struct vdev *v, uint32_t off)
{
    if (off + 8 > v->devcfg_len)
        return 0;
    uint64_t val = 0;
    for (int tries = 0; tries < 10; tries++) {
        uint8_t gen = rd8(v->common + CC_GENERATION);
        val = mmio_read32(v->devcfg + off) | (uint64_t)mmio_read32(v->devcfg + off + 4) << 32;
        if (rd8(v->common + CC_GENERATION) == gen)
            break;
    }
    return val;
}

/* ---- split virtqueue ---- */

int vq_add(struct vq *q, const struct vbuf *b, unsigned n)
{
    if (!n || n > q->nfree)
        return -1;
    uint16_t head = q->free_head, i = head;
    for (unsigned k = 0; k < n; k++) {
        volatile struct vring_desc *d = &q->desc[i];
        uint16_t next = d->next; /* the free list link */
        d->addr = b[k].addr, d->len = b[k].len;
        d->flags = (uint16_t)((b[k].write ? VRING_DESC_F_WRITE : 0) | (k + 1 < n ? VRING_DESC_F_NEXT : 0));
        if (k + 1 < n)
            i = next;
        else
            q->free_head = next;
    }
    q->nfree = (uint16_t)(q->nfree - n);
    q->chain[head] = (uint16_t)n;
    return head;
}

int vq_add_indirect(struct vq *q, struct vring_desc *table, const struct vbuf *b, unsigned n)
{
    if (!n || !q->nfree)
        return -1;
    for (unsigned k = 0; k < n; k++) {
        table[k].addr = b[k].addr, table[k].len = b[k].len, table[k].next = (uint16_t)(k + 1);
        table[k].flags = (uint16_t)((b[k].write ? VRING_DESC_F_WRITE : 0) |
                                    (k + 1 < n ? VRING_DESC_F_NEXT : 0));
    }
    struct vbuf one = { (uintptr_t)table, (uint32_t)(n * sizeof(*table)), false };
    int head = vq_add(q, &one, 1);
    if (head >= 0)
        q->desc[head].flags = VRING_DESC_F_INDIRECT;
    return head;
}

void vq_publish(struct vq *q, uint16_t head)
{
    q->avail->ring[q->avail_idx & (q->size - 1)] = head;
    __asm__ volatile("" ::: "memory"); /* x86 keeps stores in order; the compiler must too */
    q->avail->idx = ++q->avail_idx;
}

void vq_kick(struct vq *q)
{
    mb(); /* the avail index must be visible before we read the device's suppression */
    bool need;
    if (q->event_idx) {
        uint16_t ev = *avail_event((uintptr_t)q->used, q->size);
        need = (uint16_t)(q->avail_idx - ev - 1) < (uint16_t)(q->avail_idx - q->kicked);
    } else {
        need = !(q->used->flags & VRING_USED_F_NO_NOTIFY);
    }
    q->kicked = q->avail_idx;
    if (need)
        wr16(q->notify, q->index);
}

void virtio_kick(struct vdev *v)
{
    vq_kick(&v->vq);
}

int vq_pop(struct vq *q, uint32_t *len)
{
    if (!vq_pending(q))
        return -1;
    __asm__ volatile("" ::: "memory");
    volatile struct vring_used_elem *e = &q->used->ring[q->used_idx & (q->size - 1)];
    uint32_t id = e->id;
    if (len)
        *len = e->len;
    q->used_idx++;
    if (id >= q->size || !q->chain[id])
        return -2;
    uint16_t last = (uint16_t)id;
    for (unsigned k = 1; k < q->chain[id]; k++)
        last = q->desc[last].next;
    q->desc[last].next = q->free_head;
    q->free_head = (uint16_t)id;
    q->nfree = (uint16_t)(q->nfree + q->chain[id]);
    q->chain[id] = 0;
    return (int)id;
}

void vq_reclaim_all(struct vq *q)
{
    for (uint16_t i = 0; i < q->size; i++)
        q->desc[i].next = (uint16_t)(i + 1), q->chain[i] = 0;
    q->free_head = 0, q->nfree = q->size;
    q->used_idx = q->used->idx;
}

void vq_arm(struct vq *q, bool irq)
{
    volatile uint16_t *used_event = &q->avail->ring[q->size];
    if (irq)
        q->avail->flags = 0, *used_event = q->used_idx;
    else
        q->avail->flags = VRING_AVAIL_F_NO_INTERRUPT, *used_event = (uint16_t)(q->used_idx - 1);
    mb();
}

/* Asks for an interrupt on the next used entry (irq) or for none (polling). */
static void arm(struct vdev *v)
{
    vq_arm(&v->vq, v->irq);
}

void virtio_set_irq(struct vdev *v, bool on)
{
    v->irq = on && v->msix_n >= 2;
    arm(v);
}

void irq_window(uint8_t vec, uint32_t max_us)
{
    uint32_t before = irq_count[vec];
    uint64_t start = clock_us();
    while (irq_count[vec] == before && clock_us() - start < max_us)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

int virtio_wait(struct vdev *v, uint32_t timeout_us)
{
    struct vq *q = &v->vq;
    uint64_t start = clock_us();
    arm(v);
    for (unsigned n = 0;; n++) {
        if (vq_pending(q))
            return 1;
        if (v->irq)
            __asm__ volatile("sti; hlt; cli" ::: "memory"); /* sti's shadow covers hlt */
        else
            pause();
        if (v->irq || (n & 31) == 31) {
            if (vq_pending(q))
                return 1;
            if (virtio_status(v) & VIRTIO_S_NEEDS_RESET)
                return -1;
            if (clock_us() - start > timeout_us)
                return 0;
        }
    }
}

/* ---- virtio-blk ---- */

enum { /* struct virtio_blk_config (5.2.4) */
       BCFG_CAPACITY = 0,
       BCFG_SIZE_MAX = 8,
       BCFG_SEG_MAX = 12,
       BCFG_BLK_SIZE = 20,
       BCFG_MAX_DISCARD_SECTORS = 36,
       BCFG_MAX_DISCARD_SEG = 40,
       BCFG_DISCARD_ALIGN = 44,
       BCFG_MAX_WZ_SECTORS = 48,
       BCFG_MAX_WZ_SEG = 52,
       BCFG_WZ_MAY_UNMAP = 56,
};
#define BLK_FEATURES                                                                              \
    (1ull << VIRTIO_BLK_F_SIZE_MAX | 1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_RO |     \
     1ull << VIRTIO_BLK_F_BLK_SIZE | 1ull << VIRTIO_BLK_F_FLUSH | 1ull << VIRTIO_BLK_F_TOPOLOGY | \
     1ull << VIRTIO_BLK_F_DISCARD | 1ull << VIRTIO_BLK_F_WRITE_ZEROES)

static struct blk_slot *slot_mem[VIRTIO_MAX_DEVS];
static uint8_t *scratch_mem[VIRTIO_MAX_DEVS];
static uint64_t want_mem[VIRTIO_MAX_DEVS];

unsigned blk_find(const struct pci_dev *devs, unsigned n, unsigned *idx, unsigned max)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n && k < max; i++) {
        const struct pci_dev *d = &devs[i];
        if (d->vendor == 0x1af4 &&
            (d->device == 0x1042 || (d->device == 0x1001 && pci_find_cap(d, PCI_CAP_VENDOR, 0))))
            idx[k++] = i;
    }
    return k;
}

static void blk_read_config(struct blk *b)
{
    const struct vdev *v = &b->v;
    b->capacity = virtio_cfg64(v, BCFG_CAPACITY);
    b->ro = virtio_has(v, VIRTIO_BLK_F_RO);
    b->size_max = virtio_has(v, VIRTIO_BLK_F_SIZE_MAX) ? virtio_cfg32(v, BCFG_SIZE_MAX) : 0;
    b->seg_max = virtio_has(v, VIRTIO_BLK_F_SEG_MAX) ? virtio_cfg32(v, BCFG_SEG_MAX) : 0;
    b->blk_size = virtio_has(v, VIRTIO_BLK_F_BLK_SIZE) ? virtio_cfg32(v, BCFG_BLK_SIZE) : 512;
    if (virtio_has(v, VIRTIO_BLK_F_DISCARD)) {
        b->max_discard_sectors = virtio_cfg32(v, BCFG_MAX_DISCARD_SECTORS);
        b->max_discard_seg = virtio_cfg32(v, BCFG_MAX_DISCARD_SEG);
        b->discard_align = virtio_cfg32(v, BCFG_DISCARD_ALIGN);
    }
    if (virtio_has(v, VIRTIO_BLK_F_WRITE_ZEROES)) {
        b->max_wz_sectors = virtio_cfg32(v, BCFG_MAX_WZ_SECTORS);
        b->max_wz_seg = virtio_cfg32(v, BCFG_MAX_WZ_SEG);
        b->wz_may_unmap = virtio_cfg8(v, BCFG_WZ_MAY_UNMAP);
    }
}

int blk_restart(struct blk *b)
{
    int r = virtio_start(&b->v, want_mem[b->v.index], NULL);
    b->slot_busy = 0;
    b->use_indirect = b->use_indirect && virtio_has(&b->v, VIRTIO_F_INDIRECT_DESC);
    return r;
}

int blk_open(struct blk *b, struct pci_dev *p, unsigned index, uint64_t want)
{
    return blk_open_queue(b, p, index, want, 0);
}

int blk_open_queue(struct blk *b, struct pci_dev *p, unsigned index, uint64_t want, uint16_t queue_size)
{
    memset(b, 0, sizeof(*b));
    int r = virtio_probe(&b->v, p, index);
    if (r)
        return r;
    b->v.queue_limit = queue_size;
    if (!slot_mem[index]) {
        slot_mem[index] = dma_alloc(BLK_MAX_SLOTS * sizeof(struct blk_slot), 4096);
        scratch_mem[index] = dma_alloc(4096, 4096);
        if (!slot_mem[index] || !scratch_mem[index])
            return -2;
    }
    b->slots = slot_mem[index];
    want_mem[index] = want | BLK_FEATURES;
    b->use_indirect = want >> VIRTIO_F_INDIRECT_DESC & 1;
    r = blk_restart(b);
    if (r)
        return r;
    blk_read_config(b);
    uint8_t *id = scratch_mem[index];
    memset(id, 0, 21);
    r = blk_io(b, VIRTIO_BLK_T_GET_ID, 0, id, 20);
    if (r == VIRTIO_BLK_S_OK)
        memcpy(b->serial, id, 20);
    b->serial[20] = 0;
    return 0;
}

int blk_submit(struct blk *b, uint32_t type, uint64_t sector, const struct vbuf *data, unsigned n)
{
    static struct vbuf list[BLK_MAX_SEGS + 2];
    if (b->slot_busy == 0xffffffffu || n > BLK_MAX_SEGS)
        return -1;
    int s = __builtin_ctz(~b->slot_busy);
    struct blk_slot *sl = &b->slots[s];
    sl->hdr = (struct blk_hdr){ type, 0, sector };
    sl->status = 0xff;
    list[0] = (struct vbuf){ (uintptr_t)&sl->hdr, sizeof(sl->hdr), false };
    for (unsigned k = 0; k < n; k++)
        list[k + 1] = data[k];
    list[n + 1] = (struct vbuf){ (uintptr_t)&sl->status, 1, true };
    int head = b->use_indirect ? vq_add_indirect(&b->v.vq, sl->table, list, n + 2)
                               : vq_add(&b->v.vq, list, n + 2);
    if (head < 0)
        return -1;
    b->head_slot[head] = s;
    b->slot_busy |= 1u << s;
    vq_publish(&b->v.vq, (uint16_t)head);
    return s;
}

int blk_complete(struct blk *b, uint32_t timeout_us)
{
    for (;;) {
        uint32_t len;
        int id = vq_pop(&b->v.vq, &len);
        if (id >= 0) {
            int s = b->head_slot[id];
            b->slot_busy &= ~(1u << s);
            b->used_len[s] = len;
            b->completions++;
            return s;
        }
        if (id == -2)
            return BLK_STATUS_BADID;
        int w = virtio_wait(&b->v, timeout_us);
        if (w == 0)
            return BLK_STATUS_TIMEOUT;
        if (w < 0)
            return BLK_STATUS_RESET;
    }
}

int blk_io(struct blk *b, uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
    struct vbuf d = { (uintptr_t)buf, len, type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID };
    int s = blk_submit(b, type, sector, &d, len ? 1 : 0);
    if (s < 0)
        return BLK_STATUS_TIMEOUT;
    virtio_kick(&b->v);
    int c = blk_complete(b, 2000000);
    if (c < 0)
        return c;
    return c == s ? b->slots[s].status : BLK_STATUS_BADID;
}

int blk_range_op(struct blk *b, uint32_t type, uint64_t sector, uint32_t count, uint32_t flags)
{
    struct blk_range *r = (struct blk_range *)(scratch_mem[b->v.index] + 64);
    *r = (struct blk_range){ sector, count, flags };
    return blk_io(b, type, 0, r, sizeof(*r));
}
