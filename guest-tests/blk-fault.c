/* What a guest sees when its disk goes wrong on the host, for tests/t-img-safety.sh. The
 * first virtio-blk disk gets these requests (command line, all optional):
 *   capacity=N            the disk must have N 512-byte sectors
 *   write=S len=B         one write of B bytes (default 65536) of a pattern at sector S...
 *   expect=ok|ioerr       ...that must complete with that status (default ok); with ok it is
 *                         read back and compared
 *   fill=1                instead: writes of B bytes from sector S on until one fails or the
 *                         disk ends; with expect=ioerr one must fail
 *   tail=1                the last sector: written, read back; a read past it: IOERR
 *   hold=SECS             then idle that long before the summary, so that the host can
 *                         look at the VM (kvmbox info) while it runs
 * Prints "CAPACITY n", "WRITE sector=S len=B status=X" per write that is reported, and
 * "AFTER read status=X" (a read of sector 0) after an expected error, "HOLDING" before it
 * idles; then the summary. */
#include "virtio.h"

static struct pci_dev devs[PCI_MAX_DEVS];
static struct blk disk;

static bool is_blk(const struct pci_dev *d)
{
    unsigned i;
    return blk_find(d, 1, &i, 1) == 1;
}

static void pattern(uint8_t *p, uint32_t len, uint64_t sector)
{
    for (uint32_t i = 0; i < len; i += 4)
        *(uint32_t *)(p + i) = (uint32_t)(sector + i / 512) * 0x9E3779B1u ^ i;
}

static bool open_disk(void)
{
    virtio_irq_init();
    dma_reset();
    pci_ecam_init();
    unsigned n = pci_scan(devs, PCI_MAX_DEVS), idx[VIRTIO_MAX_DEVS];
    pci_relocate(devs, n, is_blk, 0xc0000000u, 0xe0000000u);
    if (blk_find(devs, n, idx, VIRTIO_MAX_DEVS) < 1 || blk_open(&disk, &devs[idx[0]], 0, 0) < 0) {
        fail("no virtio-blk disk");
        return false;
    }
    printf("CAPACITY %u\n", (uint32_t)disk.capacity);
    return true;
}

/* One request, waiting as long as the host needs (blk_io waits 2 s: a host under load
 * can take longer to allocate and sync, and a timeout is not what these tests look for). */
static int io(uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
    struct vbuf d = { (uintptr_t)buf, len, type == VIRTIO_BLK_T_IN };
    int s = blk_submit(&disk, type, sector, &d, 1);
    if (s < 0)
        return BLK_STATUS_TIMEOUT;
    virtio_kick(&disk.v);
    int c = blk_complete(&disk, 120000000);
    return c < 0 ? c : c == s ? disk.slots[s].status : BLK_STATUS_BADID;
}

static const char *status_name(int st)
{
    return st == VIRTIO_BLK_S_OK       ? "ok"
           : st == VIRTIO_BLK_S_IOERR  ? "ioerr"
           : st == VIRTIO_BLK_S_UNSUPP ? "unsupp"
                                       : "none";
}

/* Writes and (when it must succeed) reads back. */
static void one_write(uint64_t sector, uint32_t len, bool want_ok, uint8_t *w, uint8_t *r)
{
    pattern(w, len, sector);
    int st = io(VIRTIO_BLK_T_OUT, sector, w, len);
    printf("WRITE sector=%u len=%u status=%s\n", (uint32_t)sector, len, status_name(st));
    if (!want_ok) {
        check(st == VIRTIO_BLK_S_IOERR, "the write at sector %u fails with IOERR (%s)", (uint32_t)sector,
              status_name(st));
        return;
    }
    check(st == VIRTIO_BLK_S_OK, "the write at sector %u succeeds (%s)", (uint32_t)sector, status_name(st));
    memset(r, 0, len);
    st = io(VIRTIO_BLK_T_IN, sector, r, len);
    check(st == VIRTIO_BLK_S_OK && !memcmp(w, r, len), "it reads back (%s)", status_name(st));
}

/* Writes from SECTOR on until a write fails or the disk ends. */
static void fill(uint64_t sector, uint32_t len, bool want_error, uint8_t *w)
{
    uint32_t per = len / 512;
    int st = VIRTIO_BLK_S_OK;
    for (; sector + per <= disk.capacity; sector += per) {
        pattern(w, len, sector);
        if ((st = io(VIRTIO_BLK_T_OUT, sector, w, len)) != VIRTIO_BLK_S_OK)
            break;
    }
    printf("WRITE sector=%u len=%u status=%s\n", (uint32_t)sector, len, status_name(st));
    check(want_error ? st == VIRTIO_BLK_S_IOERR : st == VIRTIO_BLK_S_OK, "filling the disk: %s at sector %u",
          status_name(st), (uint32_t)sector);
}

static void tail(uint8_t *w, uint8_t *r)
{
    uint64_t last = disk.capacity - 1;
    one_write(last, 512, true, w, r);
    int st = io(VIRTIO_BLK_T_IN, disk.capacity, r, 512);
    check(st == VIRTIO_BLK_S_IOERR, "a read past the last sector fails (%s)", status_name(st));
}

void test_main(void)
{
    if (!open_disk())
        finish();
    uint64_t want = arg_u64("capacity", 0), sector = arg_u64("write", ~0ull), len = arg_u64("len", 65536);
    char expect[8];
    arg_str("expect", expect, sizeof(expect), "ok");
    bool want_ok = strncmp(expect, "ioerr", 6) != 0;
    if (want)
        check(disk.capacity == want, "capacity %u sectors (expected %u)", (uint32_t)disk.capacity,
              (uint32_t)want);
    uint8_t *w = dma_alloc(1u << 20, 4096), *r = dma_alloc(1u << 20, 4096);
    if (!w || !r || len == 0 || len > (1u << 20) || len % 512) {
        fail("len=%u: a multiple of 512 up to 1 MiB", (uint32_t)len);
        finish();
    }
    if (arg_u64("tail", 0))
        tail(w, r);
    if (sector != ~0ull) {
        if (arg_u64("fill", 0))
            fill(sector, (uint32_t)len, !want_ok, w);
        else
            one_write(sector, (uint32_t)len, want_ok, w, r);
        if (!want_ok)
            printf("AFTER read status=%s\n", status_name(io(VIRTIO_BLK_T_IN, 0, r, 512)));
    }
    uint64_t hold = arg_u64("hold", 0);
    if (hold) {
        printf("HOLDING\n");
        uint64_t t0 = clock_us();
        while (clock_us() - t0 < hold * 1000000u)
            __asm__ volatile("sti; hlt; cli" ::: "memory");
    }
    finish();
}
