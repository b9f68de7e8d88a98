/* virtio-blk throughput seen from the guest, for bench/blk-bench.sh: on the disk with
 * serial "rw0", in this order: sequential 1 MiB writes and reads at queue depth 32, random
 * 4 KiB writes and reads at depth 1 and 32. The guest never touches the data (every
 * request uses the same buffer), so the numbers are the VMM's.
 * Command line: secs=N per test (default 5), or ops=N requests per test; irq=0 to poll
 * instead of halting until the completion interrupt (default 1); only=NAME for one test.
 * Prints "BENCH-START name qd=Q" before and
 *   "BENCH name qd=Q ops=N bytes=B usec=U"
 * after each test (the host samples the VMM's CPU time at both), then the summary. Time
 * is the TSC, calibrated against the ACPI PM timer. */
#include "virtio.h"

#define MIB (1u << 20)

static struct pci_dev devs[PCI_MAX_DEVS];
static struct blk disk;
static uint8_t *buf;
static uint64_t tsc_hz;
static uint32_t rng = 0x2545f491;

static bool is_blk(const struct pci_dev *d)
{
    unsigned i;
    return blk_find(d, 1, &i, 1) == 1;
}

static uint32_t xorshift(void)
{
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    return rng;
}

static void calibrate(void)
{
    uint32_t p0 = pmtimer_read(), p;
    uint64_t t0 = rdtsc();
    do
        p = pmtimer_read();
    while (((p - p0) & 0xffffff) < 3579545 / 20); /* 50 ms */
    uint64_t t1 = rdtsc();
    tsc_hz = (t1 - t0) * 3579545 / ((p - p0) & 0xffffff);
}

struct bench {
    const char *name;
    uint32_t bytes;
    unsigned qd;
    bool write, seq;
};

static void run(const struct bench *t, uint64_t secs, uint64_t ops_limit)
{
    struct blk *b = &disk;
    uint32_t seg = b->size_max && b->size_max < t->bytes ? b->size_max & ~511u : t->bytes;
    uint32_t nseg = t->bytes / seg, max = b->seg_max ? b->seg_max : 1;
    if (nseg > max || nseg > BLK_MAX_SEGS)
        nseg = max < BLK_MAX_SEGS ? max : BLK_MAX_SEGS;
    uint32_t bytes = nseg * seg, sectors = bytes / 512;
    static struct vbuf segs[BLK_MAX_SEGS];
    for (uint32_t i = 0; i < nseg; i++)
        segs[i] = (struct vbuf){ (uintptr_t)buf + i * seg, seg, !t->write };
    uint32_t blocks = (uint32_t)(b->capacity / sectors); /* capacity < 2^41 bytes */
    uint64_t next = 0;
    unsigned qd = t->qd, inflight = 0;
    uint32_t done = 0, errors = 0, submitted = 0;
    bool stop = false;
    printf("BENCH-START %s qd=%u\n", t->name, qd);
    uint64_t t0 = rdtsc(), deadline = t0 + secs * tsc_hz;
    for (;;) {
        while (!stop && inflight < qd) {
            uint64_t sector;
            if (t->seq) {
                if (next + sectors > b->capacity)
                    next = 0;
                sector = next, next += sectors;
            } else {
                sector = (uint64_t)(uint32_t)(((uint64_t)xorshift() * blocks) >> 32) * sectors;
            }
            if (blk_submit(b, t->write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, sector, segs, nseg) < 0)
                break;
            inflight++, submitted++;
            if (ops_limit && submitted >= ops_limit)
                stop = true;
        }
        if (!inflight)
            break;
        virtio_kick(&b->v);
        int c = blk_complete(b, 5000000);
        if (c < 0) {
            fail("%s: completion failed (%d) after %u requests", t->name, c, done);
            blk_restart(b);
            return;
        }
        inflight--, done++;
        errors += b->slots[c].status != VIRTIO_BLK_S_OK;
        if (!ops_limit && rdtsc() >= deadline)
            stop = true;
    }
    uint64_t usec = (rdtsc() - t0) * 1000000 / tsc_hz;
    printf("BENCH %s qd=%u ops=%u bytes=%llu usec=%llu\n", t->name, qd, done,
           (unsigned long long)done * bytes, (unsigned long long)usec);
    check(!errors && done, "%s qd=%u: %u requests of %u bytes (%u segments), %u failed", t->name, qd, done,
          bytes, nseg, errors);
}

void test_main(void)
{
    static const struct bench tests[] = {
        { "seq-write-1M", MIB, 32, true, true },   { "seq-read-1M", MIB, 32, false, true },
        { "rand-write-4K", 4096, 1, true, false }, { "rand-write-4K", 4096, 32, true, false },
        { "rand-read-4K", 4096, 1, false, false }, { "rand-read-4K", 4096, 32, false, false },
    };
    uint64_t secs = arg_u64("secs", 5), ops = arg_u64("ops", 0);
    bool irq = arg_u64("irq", 1);
    char only[32];
    arg_str("only", only, sizeof(only), "");
    calibrate();
    virtio_irq_init();
    dma_reset();
    buf = dma_alloc(MIB, 4096);
    pci_ecam_init();
    unsigned n = pci_scan(devs, PCI_MAX_DEVS), idx[VIRTIO_MAX_DEVS];
    pci_relocate(devs, n, is_blk, 0xc0000000u, 0xe0000000u);
    unsigned nblk = blk_find(devs, n, idx, VIRTIO_MAX_DEVS);
    bool found = false;
    for (unsigned i = 0; i < nblk && !found; i++)
        found = !blk_open(&disk, &devs[idx[i]], i,
                          1ull << VIRTIO_F_INDIRECT_DESC | 1ull << VIRTIO_F_EVENT_IDX) &&
                !strncmp(disk.serial, "rw0", 4);
    if (!found || !buf || disk.capacity < 2048) {
        fail("no usable virtio-blk disk with serial rw0 (%u virtio-blk devices)", nblk);
        return;
    }
    virtio_set_irq(&disk.v, irq);
    printf("BENCH-INFO capacity=%u sectors, queue %u, seg_max %u, size_max %u, %s, TSC %u kHz, %s\n",
           (uint32_t)disk.capacity, disk.v.vq.size, disk.seg_max, disk.size_max,
           irq && disk.v.irq ? "interrupts" : "polling", (uint32_t)(tsc_hz / 1000),
           ops ? "fixed request count" : "fixed time");
    for (unsigned i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (!only[0] || !strncmp(only, tests[i].name, sizeof(only)))
            run(&tests[i], secs, ops);
    if (virtio_has(&disk.v, VIRTIO_BLK_F_FLUSH))
        check(blk_io(&disk, VIRTIO_BLK_T_FLUSH, 0, NULL, 0) == VIRTIO_BLK_S_OK, "final FLUSH");
}
