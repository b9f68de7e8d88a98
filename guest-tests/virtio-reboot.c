/* virtio-blk across a guest reset. kvmbox rebuilds the KVM VM on a reset, so the MSI routes,
 * irqfds and ioeventfds must be registered again on the new one, the PCI BARs go back to
 * where kvmbox placed them and the device must come back reset.
 *
 * Boot 1 (sector 0 of rw0 does not hold the marker): writes the marker and a pattern, then
 * leaves 16 writes in flight and resets the machine through 0xCF9 at once: the device must
 * finish or drop them before the new machine starts. Boot 2 (the marker is there): reads the
 * pattern back, checks that completions raise MSI-X interrupts again and that the BARs can be
 * moved to new addresses and still answer, then ends through debug-exit. */
#include "virtio.h"

#define MARKER          0x544f4f4245524b56ull /* "VKREBOOT" */
#define PATTERN_FIRST   64
#define PATTERN_SECTORS 64

static struct pci_dev devs[PCI_MAX_DEVS];
static struct blk disk;
static uint8_t *buf;

static bool is_blk(const struct pci_dev *d)
{
    unsigned i;
    return blk_find(d, 1, &i, 1) == 1;
}

static void stamp(uint8_t *p, uint64_t sector)
{
    for (unsigned i = 0; i < 512; i += 8)
        *(uint64_t *)(void *)(p + i) = sector * 0x9E3779B97F4A7C15ull + i;
}

static bool stamped(const uint8_t *p, uint64_t sector)
{
    for (unsigned i = 0; i < 512; i += 8)
        if (*(const uint64_t *)(const void *)(p + i) != sector * 0x9E3779B97F4A7C15ull + i)
            return false;
    return true;
}

/* Each of 8 reads is submitted with interrupts requested, then the driver halts with
 * interrupts on. The completion's MSI-X message must be what ends the halt, or be pending
 * when the halt begins; either way the queue vector's handler runs. (A polled check alone
 * proves nothing here: under an emulating KVM, interrupts are only taken at a halt.) */
static void irq_probe(struct blk *b, const char *when)
{
    uint32_t irq0 = irq_count[b->v.vec_q], done = 0;
    for (unsigned i = 0; i < 8; i++) {
        b->v.vq.avail->flags = 0;
        b->v.vq.avail->ring[b->v.vq.size] = b->v.vq.used_idx; /* used_event, if EVENT_IDX */
        mb();
        struct vbuf d = { (uint32_t)(uintptr_t)buf, 512, true };
        if (blk_submit(b, VIRTIO_BLK_T_IN, PATTERN_FIRST + i, &d, 1) < 0)
            break;
        virtio_kick(&b->v);
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        int slot = blk_complete(b, 2000000);
        done += slot >= 0 && b->slots[slot].status == VIRTIO_BLK_S_OK;
    }
    uint32_t n = irq_count[b->v.vec_q] - irq0;
    check(done == 8 && n > 0, "%s: completions raise MSI-X interrupts (%u for %u reads)", when, n, done);
}

static void first_boot(struct blk *b)
{
    irq_probe(b, "boot 1");
    for (unsigned s = 0; s < PATTERN_SECTORS; s++)
        stamp(buf + 512 * s, PATTERN_FIRST + s);
    check(blk_io(b, VIRTIO_BLK_T_OUT, PATTERN_FIRST, buf, PATTERN_SECTORS * 512) == VIRTIO_BLK_S_OK,
          "boot 1: the pattern is written");
    memset(buf, 0, 512);
    *(uint64_t *)(void *)buf = MARKER;
    check(blk_io(b, VIRTIO_BLK_T_OUT, 0, buf, 512) == VIRTIO_BLK_S_OK &&
              blk_io(b, VIRTIO_BLK_T_FLUSH, 0, NULL, 0) == VIRTIO_BLK_S_OK,
          "boot 1: the marker is written and flushed");
    /* Writes in flight to sectors past the pattern, then a reset without waiting for them. */
    unsigned n = 0;
    for (unsigned i = 0; i < 16; i++) {
        struct vbuf d = { (uint32_t)(uintptr_t)(buf + 4096 + 4096 * i), 4096, false };
        n += blk_submit(b, VIRTIO_BLK_T_OUT, 1024 + 8 * i, &d, 1) >= 0;
    }
    virtio_kick(&b->v);
    printf("boot 1: %u writes in flight; resetting through 0xCF9\n", n);
    outb(0xcf9, 0x06);
    for (;;)
        hlt();
}

static void second_boot(struct blk *b)
{
    pass("boot 2: the marker written before the reset is there");
    int st = blk_io(b, VIRTIO_BLK_T_IN, PATTERN_FIRST, buf, PATTERN_SECTORS * 512);
    unsigned bad = 0;
    for (unsigned s = 0; s < PATTERN_SECTORS; s++)
        bad += !stamped(buf + 512 * s, PATTERN_FIRST + s);
    check(st == VIRTIO_BLK_S_OK && bad == 0, "boot 2: the pattern reads back (status %d, %u sectors wrong)",
          st, bad);
    irq_probe(b, "boot 2");
    /* Clear the marker so the image can be used again. */
    memset(buf, 0, 512);
    check(blk_io(b, VIRTIO_BLK_T_OUT, 0, buf, 512) == VIRTIO_BLK_S_OK, "boot 2: the marker is cleared");
}

void test_main(void)
{
    virtio_irq_init();
    dma_reset();
    buf = dma_alloc(128 * 1024, 4096);
    pci_ecam_init();
    pci_set_access(PCI_PORTS);
    unsigned ndevs = pci_scan(devs, PCI_MAX_DEVS), idx;
    if (blk_find(devs, ndevs, &idx, 1) != 1 || !buf) {
        fail("no virtio-blk device (or no buffer memory)");
        return;
    }
    /* kvmbox puts 64-bit BARs above 4 GiB, out of reach of this 32-bit guest: move them, on
     * each boot (a reset puts them back where kvmbox placed them). */
    int moved = pci_relocate(devs, ndevs, is_blk, 0xc0000000u, 0xe0000000u);
    check(moved > 0, "BARs of the virtio-blk device relocated (%d)", moved);
    struct blk *b = &disk;
    int r = blk_open(b, &devs[idx], 0, 0);
    if (r) {
        fail("the device does not start (%d)", r);
        return;
    }
    r = blk_io(b, VIRTIO_BLK_T_IN, 0, buf, 512);
    if (r != VIRTIO_BLK_S_OK) {
        fail("reading sector 0 (%d)", r);
        return;
    }
    if (*(uint64_t *)(void *)buf == MARKER)
        second_boot(b);
    else
        first_boot(b);
}
